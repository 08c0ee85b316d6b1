"""A fifth round of checkpoints as other tools write them: Accelerate's save_state with several models, peft's IA3
adapters, DeepSpeed universal checkpoints, timm's train.py output folders, sentence-transformers' Dense modules."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers import run_cli, run_json


def _accelerate_state(folder: Path, safe: bool = True) -> None:
    """accelerator.save_state(folder) after prepare(generator, discriminator, optimizers): one weight file per model,
    the first under transformers' name, the i-th with `_i` before the suffix (save_accelerator_state's
    `weights_name.replace(".", f"_{i}.")`), then optimizer.bin, optimizer_1.bin, random_states_0.pkl."""
    from safetensors.torch import save_file

    folder.mkdir()
    torch.manual_seed(0)
    generator = {"0.weight": torch.randn(16, 8), "0.bias": torch.zeros(16), "1.weight": torch.randn(4, 16)}
    discriminator = {"0.weight": torch.randn(32, 4), "0.bias": torch.zeros(32), "1.weight": torch.randn(1, 32),
                     "1.bias": torch.zeros(1)}
    for i, weights in enumerate((generator, discriminator)):
        if safe:
            save_file(weights, str(folder / ("model.safetensors" if i == 0 else f"model_{i}.safetensors")),
                      metadata={"format": "pt"})
        else:
            torch.save(weights, folder / ("pytorch_model.bin" if i == 0 else f"pytorch_model_{i}.bin"))
        torch.save({"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
                   folder / ("optimizer.bin" if i == 0 else f"optimizer_{i}.bin"))
    torch.save({"step": 1, "random_state": (3, (1, 2), None), "torch_manual_seed": torch.zeros(8, dtype=torch.uint8)},
               folder / "random_states_0.pkl")


def test_an_accelerate_state_with_two_models_names_the_second_models_file(tmp_path: Path) -> None:
    """A GAN's save_state folder holds model.safetensors (the generator) and model_1.safetensors (the
    discriminator). Every command read the first alone and said nothing of the second, as if the folder held one
    model."""
    for safe, second in ((True, "model_1.safetensors"), (False, "pytorch_model_1.bin")):
        folder = tmp_path / f"gan-{safe}"
        _accelerate_state(folder, safe)
        code, data = run_json("inspect", str(folder))
        assert code == 0 and data["num_tensors"] == 3, data
        said = [w for w in data["warnings"] if second in w]
        assert len(said) == 1 and "save_state" in said[0] and "name one to read it" in said[0], data["warnings"]
        result = run_cli("check-dtype", str(folder))
        assert second in " ".join(result.stderr.split()), result.stderr
        # Named, the second model is read.
        code, data = run_json("inspect", str(folder / second))
        assert code == 0 and data["num_tensors"] == 4 and data["warnings"] == [], data
