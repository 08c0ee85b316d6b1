"""A twenty-fourth round: adapter families and diffusion single files as their own save code writes them: PEFT's
VeRA, OFT, BOFT, HRA, LN-tuning and IA3 adapters (peft 0.21's save_pretrained, a folder and its bare
adapter_model.safetensors) against a base of their own size and of another, ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_json


def _base(path: Path, hidden: int) -> torch.nn.Module:
    """A small model of the module kinds PEFT adapts (an embedding, a square Linear, a Linear twice as wide out, a
    LayerNorm, a 3×3 Conv2d), each as wide as `hidden` says, seeded, saved as a safetensors file at `path`."""
    torch.manual_seed(0)
    base = torch.nn.ModuleDict({
        "embed": torch.nn.Embedding(32, hidden), "q": torch.nn.Linear(hidden, hidden),
        "v": torch.nn.Linear(hidden, 2 * hidden), "norm": torch.nn.LayerNorm(hidden),
        "conv": torch.nn.Conv2d(hidden // 4, hidden, 3)})
    save_file({name: tensor.contiguous() for name, tensor in base.state_dict().items()}, str(path))
    return base


def _configs() -> dict[str, Any]:
    import peft

    return {
        "VeRA": peft.VeraConfig(r=4, target_modules=["q", "v"], save_projection=True),
        "OFT": peft.OFTConfig(r=0, oft_block_size=4, target_modules=["q", "v", "conv", "embed"]),
        "BOFT": peft.BOFTConfig(boft_block_size=4, target_modules=["q", "v", "conv"]),
        "HRA": peft.HRAConfig(r=4, target_modules=["q", "v", "conv"]),
        "LN tuning": peft.LNTuningConfig(target_modules=["norm"]),
        "IA3": peft.IA3Config(target_modules=["q", "v", "conv"], feedforward_modules=["v", "conv"]),
    }


def _adapter(tmp_path: Path, method: str) -> Path:
    from peft import get_peft_model

    folder = tmp_path / method.replace(" ", "-")
    get_peft_model(_base(tmp_path / "made-for.safetensors", 32), _configs()[method]).save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("bare", [False, True], ids=["folder", "bare-file"])
@pytest.mark.parametrize("method", list(_configs()))
def test_a_peft_adapter_for_another_model_size_is_caught_by_its_shapes(tmp_path: Path, method: str, bare: bool) -> None:
    """A VeRA / OFT / BOFT / HRA / LN-tuning adapter made for a 32-wide model, against a 16-wide one, was "info:
    VeRA on q.weight ... shapes not compared: VeRA tensors are not shaped as the weights they adapt", worst severity
    info, though PeftModel.from_pretrained raises a size mismatch on it: their tensors are sized by the layer's widths
    (one scale per output feature, blocks that tile the input, the norm's copy), which are compared now. A
    feedforward IA3 vector (1 × in) was checked as if it could be either width: 1×32 passed against a 32×16 layer."""
    adapter = _adapter(tmp_path, method)
    source = adapter / "adapter_model.safetensors" if bare else adapter
    _base(tmp_path / "same.safetensors", 32)
    code, data = run_json("diff-keys", str(source), str(tmp_path / "same.safetensors"))
    assert code == 0 and data["worst_severity"] == "info", [e for e in data["unexpected"] if e["severity"] != "info"]
    note = next(n for n in data["notes"] if n.startswith("A is a PEFT adapter"))
    assert " of them in B with shapes that fit;" in note and "not compared" not in note, note
    _base(tmp_path / "smaller.safetensors", 16)
    code, data = run_json("diff-keys", str(source), str(tmp_path / "smaller.safetensors"))
    assert code == 1 and data["worst_severity"] == "error", data["unexpected"]
    errors = [e for e in data["unexpected"] if e["severity"] == "error"]
    assert errors and all(e["detail"].endswith("an adapter for another model size") or "another model size" in
                          e["detail"] for e in errors), errors
    note = next(n for n in data["notes"] if n.startswith("A is a PEFT adapter"))
    assert " 0 of them in B with shapes that fit" in note, note


def test_each_misfit_says_which_width_disagrees(tmp_path: Path) -> None:
    """The detail names the width the adapter was made for and the layer's in B."""
    _base(tmp_path / "smaller.safetensors", 16)
    details = {}
    for method in ("VeRA", "OFT", "BOFT", "LN tuning", "IA3"):
        _, data = run_json("diff-keys", str(_adapter(tmp_path, method)), str(tmp_path / "smaller.safetensors"))
        details.update({e["name"]: e["detail"] for e in data["unexpected"]})
    assert details["base_model.model.q.vera_lambda_b"] == (
        "VeRA on q: vera_lambda_b 32 scales 32 output features, q.weight (16×16 in B) writes 16: an adapter for "
        "another model size")
    assert details["base_model.vera_A"].startswith(
        "VeRA's shared projection vera_A (4×32) spans 32 input features, the widest layer it adapts in B has 16")
    assert details["base_model.model.q.oft_R.weight"] == (
        "OFT on q: oft_R.weight 8×6 (8 blocks of 4) rotates 32 input features, q.weight (16×16 in B) reads 16: an "
        "adapter for another model size")
    assert details["base_model.model.v.boft_s"].startswith(
        "BOFT on v: boft_s 64×1 scales 64 output features, v.weight (32×16 in B) writes 32")
    assert details["base_model.model.norm.ln_tuning_layers.weight"].startswith(
        "LN tuning on norm: ln_tuning_layers.weight 32, norm.weight (16 in B): LN tuning copies the norm whole")
    assert details["base_model.model.v.ia3_l"] == (
        "1×32 does not fit v.weight (32×16 in B): it scales 32 input features (a feedforward module's), B's layer "
        "reads 16: an adapter for another model size")


def test_fourierft_still_says_its_shapes_are_not_compared(tmp_path: Path) -> None:
    """FourierFT's spectrum (n_frequency values) is not sized by the layer: the note keeps saying so."""
    import peft
    from peft import get_peft_model

    adapter = tmp_path / "fourierft"
    config = peft.FourierFTConfig(n_frequency=16, target_modules=["q", "v"])
    get_peft_model(_base(tmp_path / "base.safetensors", 32), config).save_pretrained(str(adapter))
    _base(tmp_path / "smaller.safetensors", 16)
    code, data = run_json("diff-keys", str(adapter), str(tmp_path / "smaller.safetensors"))
    note = next(n for n in data["notes"] if n.startswith("A is a PEFT adapter"))
    assert code == 0 and "(shapes not compared: FourierFT tensors are not shaped as the weights" in note, note
