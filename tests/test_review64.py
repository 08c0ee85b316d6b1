"""Review of thirdparty24's PEFT shape checks: adapters that peft 0.21's get_peft_model(...).save_pretrained writes
for a base of the right size, which PeftModel.from_pretrained loads onto that base, are not called misfits by
diff-keys (a convolution with a kh × kw kernel, kh != kw, under OFT / BOFT / HRA; LN tuning on a BatchNorm, whose
running statistics it saves; RandLoRA's per-module projections and SHiRA's indices)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_json


class _ConvNet(torch.nn.Module):
    """A small net of the layers these tests adapt, `hidden` wide: a Linear, a 3 × 5 Conv2d (kh != kw), a
    BatchNorm2d."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.q = torch.nn.Linear(hidden, hidden)
        self.up = torch.nn.Linear(hidden, 3 * hidden)
        self.conv = torch.nn.Conv2d(8, hidden, (3, 5))
        self.bn = torch.nn.BatchNorm2d(hidden)


def _base(path: Path, hidden: int) -> torch.nn.Module:
    """The net, seeded, saved as a safetensors file at `path`."""
    torch.manual_seed(0)
    base = _ConvNet(hidden)
    save_file({name: tensor.contiguous() for name, tensor in base.state_dict().items()}, str(path))
    return base


def _adapter(tmp_path: Path, config: Any, hidden: int = 32) -> Path:
    from peft import get_peft_model

    folder = tmp_path / "adapter"
    get_peft_model(_base(tmp_path / "made-for.safetensors", hidden), config).save_pretrained(str(folder))
    return folder


def _loads(adapter: Path, base: torch.nn.Module) -> bool:
    from peft import PeftModel

    try:
        PeftModel.from_pretrained(base, str(adapter))
    except RuntimeError:
        return False
    return True


def _configs() -> dict[str, Any]:
    import peft

    return {
        "OFT": peft.OFTConfig(r=0, oft_block_size=4, target_modules=["conv", "q"]),
        "BOFT": peft.BOFTConfig(boft_block_size=4, target_modules=["conv", "q"]),
        "HRA": peft.HRAConfig(r=4, target_modules=["conv", "q"]),
        "LN tuning on a BatchNorm": peft.LNTuningConfig(target_modules=["bn"]),
        "RandLoRA": peft.RandLoraConfig(r=4, target_modules=["q", "up"]),
        "SHiRA": peft.ShiraConfig(r=4, target_modules=["q", "up"]),
    }


@pytest.mark.parametrize("method", list(_configs()))
def test_a_peft_adapter_against_its_own_base_is_no_misfit(tmp_path: Path, method: str) -> None:
    """peft sizes OFT's, BOFT's and HRA's Conv2d input as in × kh × kh (kernel_size[0] twice): on a 3 × 5 kernel
    oft_R.weight 18×6 rotates 72 features, and diff-keys said "rotates 72 input features, conv.weight (32×8×3×5 in
    B) reads 120: an adapter for another model size", an error, though PeftModel.from_pretrained loads it. LN tuning
    on a BatchNorm saves its running_mean / running_var / num_batches_tracked, and RandLoRA each module's
    randlora_A / randlora_B, SHiRA its shira_indices: each was "saved for bn.ln_tuning_layers.running_mean (...),
    which B does not have", an error."""
    adapter = _adapter(tmp_path, _configs()[method])
    base = _base(tmp_path / "same.safetensors", 32)
    assert _loads(adapter, base)  # the oracle: peft loads it onto this base
    for source in (adapter, adapter / "adapter_model.safetensors"):
        code, data = run_json("diff-keys", str(source), str(tmp_path / "same.safetensors"))
        assert code == 0 and data["worst_severity"] == "info", [
            e for e in data["unexpected"] + data["missing"] if e["severity"] != "info"]
        note = next(n for n in data["notes"] if n.startswith("A is a PEFT adapter"))
        assert "does not fit" not in note and "do not fit" not in note, note
        assert all(e["reason"] == "adapter-base" for e in data["missing"]), data["missing"]


@pytest.mark.parametrize("method", ["OFT", "BOFT", "HRA", "LN tuning on a BatchNorm"])
def test_the_same_adapters_for_another_size_are_still_caught(tmp_path: Path, method: str) -> None:
    """The widths peft reads off a kh × kw kernel and a BatchNorm's statistics do not let an adapter for another
    model size pass: PeftModel.from_pretrained raises on a 48-wide base, and diff-keys says it is an error."""
    adapter = _adapter(tmp_path, _configs()[method])
    assert not _loads(adapter, _base(tmp_path / "wider.safetensors", 48))
    code, data = run_json("diff-keys", str(adapter), str(tmp_path / "wider.safetensors"))
    assert code == 1 and data["worst_severity"] == "error"
    errors = [e["detail"] for e in data["unexpected"] if e["severity"] == "error"]
    assert errors and all("another model size" in detail for detail in errors), errors
