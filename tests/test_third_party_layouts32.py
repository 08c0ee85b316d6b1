"""A thirty-second round: what round 31 left, then third-party files no earlier round covered.

open_clip's training checkpoints (epoch_N.pt) against open_clip's own unprefixed weights (open_clip_model.safetensors):
open_clip is not installed; the file is written as its training's main.py saves it (`{"epoch", "name", "state_dict":
the DDP model's state dict, every name `module.`-prefixed, "optimizer", "scaler"}`) and read as its
factory.load_state_dict reads it (`state_dict`, then `{k[7:]: v ...}` when the first name starts with `module`).

Stable Audio Open (stable-audio-tools): not installed; its repo's model.safetensors beside model_config.json
(`"model_type": "diffusion_cond"`, `sample_rate`, `audio_channels`, `sample_size`, `model`), which
stable_audio_tools/models/pretrained.py's get_pretrained_model downloads and models/factory.py's
create_model_from_config builds the model from (its README; Stability-AI/stable-audio-tools' pretrained.py read with
the search tool).

descript-audio-codec (DAC): not installed; weights.pth is written as audiotools' BaseModel.save(path, package=False)
writes it (`{"state_dict": self.state_dict(), "metadata": {"kwargs": the constructor's arguments}}`), the layers named
by nn.Sequential position (dac/model/dac.py: Encoder.block = [WNConv1d, EncoderBlock x4, Snake1d, WNConv1d],
EncoderBlock.block = [ResidualUnit x3, Snake1d, WNConv1d], ResidualUnit.block = [Snake1d, WNConv1d, Snake1d, WNConv1d],
Decoder.model = [WNConv1d, DecoderBlock x4, Snake1d, WNConv1d, Tanh], DecoderBlock.block = [Snake1d,
WNConvTranspose1d, ResidualUnit x3]), every conv under torch's weight_norm (weight_g / weight_v). The tensors are
transformers 5.25's own DacModel's under weight_norm, renamed back by the inverse of transformers'
models/dac/convert_dac_checkpoint.py's MAPPING (read with the search tool: huggingface/transformers), which is what it
converts; B is that DacModel saved by save_pretrained (weight norm folded: one plain weight per conv).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import run_json


def _open_clip_state(seed: int) -> dict[str, torch.Tensor]:
    """A few of open_clip's CLIP names (its own layout, as create_model builds it)."""
    generator = torch.Generator().manual_seed(seed)
    return {"positional_embedding": torch.randn(5, 16, generator=generator), "logit_scale": torch.tensor(4.6052),
            "text_projection": torch.randn(16, 8, generator=generator),
            "visual.conv1.weight": torch.randn(16, 3, 4, 4, generator=generator),
            "visual.proj": torch.randn(16, 8, generator=generator),
            "token_embedding.weight": torch.randn(50, 16, generator=generator), "ln_final.weight": torch.ones(16)}


def test_diff_keys_rates_an_open_clip_training_checkpoints_ddp_prefix_a_warning(tmp_path: Path) -> None:
    """diff-keys rated the `module.` of open_clip's own epoch_N.pt against open_clip's unprefixed weights a
    wrapper-prefix error (exit 1), where open_clip's loader strips it itself (inspect said so since round 31)."""
    from safetensors.torch import save_file

    state = _open_clip_state(9)
    path = tmp_path / "epoch_32.pt"
    torch.save({"epoch": 32, "name": "2024_05_01-10_00_00-model_ViT-B-32-lr_0.0005-b_256-j_8-p_amp",
                "state_dict": {f"module.{name}": tensor for name, tensor in state.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.0, "params": []}]},
                "scaler": {"scale": 65536.0}}, path)
    save_file(state, tmp_path / "open_clip_model.safetensors")
    code, data = run_json("diff-keys", str(path), str(tmp_path / "open_clip_model.safetensors"))
    assert data["matched"] == 0 and len(data["missing"]) == len(state) == len(data["unexpected"]), data
    rows = data["missing"] + data["unexpected"]
    assert {(row["reason"], row["severity"]) for row in rows} == {("wrapper-prefix", "warn")}, rows
    assert all("open_clip's loader strips module." in row["detail"] for row in rows), rows
    said = [note for note in data["notes"] if note.startswith("A is an open_clip training checkpoint")]
    assert len(said) == 1 and f"{len(state)} keys differ from B only by module." in said[0] \
        and "factory.load_state_dict strips itself" in said[0] and "--rename '^module\\.='" in said[0], data["notes"]
    assert code == 0 and data["worst_severity"] == "warn", data
    # The rename is still offered, for another loader.
    assert [r["flag"] for r in data["suggested_renames"]] == ["--rename '^module\\.='"], data["suggested_renames"]
    # A DDP save of another model keeps the error: no loader of its own strips the prefix.
    other, plain = tmp_path / "other.pt", tmp_path / "plain.pt"
    torch.save({"state_dict": {"module.encoder.weight": torch.ones(2, 2), "module.logit_scale": torch.ones(())}}, other)
    torch.save({"encoder.weight": torch.ones(2, 2), "logit_scale": torch.ones(())}, plain)
    code, data = run_json("diff-keys", str(other), str(plain))
    assert code == 1 and {row["severity"] for row in data["missing"]} == {"error"}, data
    assert not any("open_clip" in note for note in data["notes"]), data["notes"]


def _stable_audio_folder(folder: Path, config: dict[str, object]) -> Path:
    from safetensors.torch import save_file

    folder.mkdir()
    generator = torch.Generator().manual_seed(11)
    save_file({"model.model.transformer.project_in.weight": torch.randn(32, 64, generator=generator),
               "model.model.transformer.layers.0.self_attn.to_qkv.weight": torch.randn(96, 32, generator=generator),
               "pretransform.model.encoder.layers.0.weight_v": torch.randn(16, 2, 7, generator=generator),
               "conditioner.conditioners.prompt.model.shared.weight": torch.randn(100, 32, generator=generator)},
              folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "model_config.json").write_text(json.dumps(config))
    return folder


def test_stable_audio_model_config_is_described_by_inspect_and_plan_devices(tmp_path: Path) -> None:
    """inspect said nothing of Stable Audio Open's model_config.json and plan-devices said only "no config.json":
    stable-audio-tools' own config, which its get_pretrained_model / create_model_from_config read."""
    folder = _stable_audio_folder(tmp_path / "stable-audio-open-1.0", {
        "model_type": "diffusion_cond", "sample_size": 2097152, "sample_rate": 44100, "audio_channels": 2,
        "model": {"pretransform": {"type": "autoencoder"}, "diffusion": {"type": "dit"}, "io_channels": 64}})
    code, data = run_json("inspect", str(folder))
    said = [w for w in data["warnings"] if w.startswith("model_config.json beside the weights")]
    assert code == 0 and data["config"] is None and len(said) == 1, data["warnings"]
    assert "stable-audio-tools' own config (model_type 'diffusion_cond', 44,100 Hz, 2 channel(s), 2,097,152 " \
        "samples a clip)" in said[0] and "create_model_from_config" in said[0], said
    # The file named, not the folder: the config beside it is found all the same.
    code, data = run_json("inspect", str(folder / "model.safetensors"))
    assert code == 0 and any("stable-audio-tools' own config" in w for w in data["warnings"]), data["warnings"]
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    said = [w for w in data["warnings"] if w.startswith("no config.json")]
    assert code == 0 and len(said) == 1 and said[0].startswith(
        "no config.json (model_config.json beside the weights is stable-audio-tools' own config (model_type "
        "'diffusion_cond'"), data["warnings"]
    # Another library's model_config.json (no stable-audio-tools model_type) is not called one.
    other = _stable_audio_folder(tmp_path / "other", {"model_type": "bert", "hidden_size": 32})
    code, data = run_json("inspect", str(other))
    assert code == 0 and not any("stable-audio" in w for w in data["warnings"]), data["warnings"]
    code, data = run_json("plan-devices", str(other), "--gpu", "1GB")
    assert code == 0 and not any("stable-audio" in w for w in data["warnings"]), data["warnings"]
