"""A fifth round of checkpoints as other tools write them: Accelerate's save_state with several models, peft's IA3
adapters, DeepSpeed universal checkpoints, timm's train.py output folders, sentence-transformers' Dense modules."""

from __future__ import annotations

import json
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


def _ia3_adapter(folder: Path, trained: bool) -> None:
    """peft's IA3Config on GPT-2 (target c_attn and mlp.c_proj, the latter a feedforward module): one `ia3_l` vector
    per target, (out, 1) on attention, (1, in) on a feedforward module, initialized to ones (init_ia3_weights)."""
    from safetensors.torch import save_file

    folder.mkdir()
    torch.manual_seed(0)
    weights = {}
    for layer in range(2):
        for module, shape in (("attn.c_attn", (96, 1)), ("mlp.c_proj", (1, 128))):
            value = torch.ones(shape) + (0.05 * torch.randn(shape) if trained else 0)
            weights[f"base_model.model.transformer.h.{layer}.{module}.ia3_l"] = value
    save_file(weights, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps({
        "auto_mapping": None, "base_model_name_or_path": "openai-community/gpt2", "fan_in_fan_out": True,
        "feedforward_modules": ["mlp.c_proj"], "inference_mode": True, "init_ia3_weights": True,
        "modules_to_save": None, "peft_type": "IA3", "peft_version": "0.13.2", "revision": None,
        "target_modules": ["mlp.c_proj", "c_attn"], "task_type": "CAUSAL_LM"}, indent=2))


def test_an_ia3_adapter_at_its_initialization_is_named_as_one(tmp_path: Path) -> None:
    """peft starts every IA3 vector at ones (scaling by 1 changes nothing). inspect --stats said of each "every value
    is 1 where variation is expected: a constant weight never breaks symmetry", as of a broken layer, and nothing
    of the adapter as a whole."""
    _ia3_adapter(tmp_path / "ia3", trained=False)
    code, data = run_json("inspect", str(tmp_path / "ia3"), "--stats")
    assert code == 0, data
    findings = [f for f in data["findings"] if f["tensor"] is not None]
    assert len(findings) == 4 and all(f["tensor"].endswith(".ia3_l") for f in findings), findings
    for finding in findings:
        assert "where variation is expected" not in finding["message"] and "symmetry" not in finding["hint"], finding
        assert "an IA3 adapter still at its initialization" in finding["hint"], finding
    # Trained, the vectors vary about 1: nothing to say of them.
    _ia3_adapter(tmp_path / "ia3-trained", trained=True)
    code, data = run_json("inspect", str(tmp_path / "ia3-trained"), "--stats")
    assert code == 0 and not [f for f in data["findings"] if f["code"] == "constant"], data["findings"]
