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

from tests.helpers import peft_adapter_on_grouped_convs, peft_refuses_grouped_conv, run_json


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
    # A size mismatch, or (a depthwise conv's rank; 0.22: OFT on a grouped conv, NotImplementedError) peft refuses it.
    except (RuntimeError, ValueError, NotImplementedError):
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


class _Grouped(torch.nn.Module):
    """A grouped convolution (ResNeXt's, groups=4), a depthwise one (ConvNeXt's) and an nn.MultiheadAttention,
    `hidden` wide."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.grp = torch.nn.Conv2d(hidden, 2 * hidden, 3, groups=4)
        self.dw = torch.nn.Conv2d(hidden, hidden, 3, groups=hidden)
        self.mha = torch.nn.MultiheadAttention(hidden, 4)


def _grouped(path: Path, hidden: int) -> torch.nn.Module:
    torch.manual_seed(0)
    base = _Grouped(hidden)
    save_file({name: tensor.contiguous() for name, tensor in base.state_dict().items()}, str(path))
    return base


@pytest.mark.parametrize("targets", [["grp"], ["dw"], ["mha"]], ids=["grouped", "depthwise", "multihead"])
def test_a_lora_on_a_grouped_conv_or_multihead_attention_fits_its_base(tmp_path: Path, targets: list[str]) -> None:
    """peft's lora_A on a grouped convolution reads all its input channels (8×32×3×3 on a 64×8×3×3 weight with
    groups=4) and its lora_B holds rank / groups: diff-keys said "8×32×3×3 does not fit grp.weight (64×8×3×3 in B):
    an adapter for another model size" and "LoRA (rank 2/8)". On an nn.MultiheadAttention peft adapts the packed
    in_proj_weight under the module's own name (`mha.lora_A.weight`): "targets mha, which B does not have". Each
    loads with PeftModel.from_pretrained; the same adapter on a 48-wide base does not, and is still an error."""
    from peft import LoraConfig, get_peft_model

    folder = tmp_path / "adapter"
    rank = 32 if targets == ["dw"] else 8  # peft needs a rank divisible by the groups
    get_peft_model(_grouped(tmp_path / "made-for.safetensors", 32), LoraConfig(
        r=rank, target_modules=targets)).save_pretrained(str(folder))
    assert _loads(folder, _grouped(tmp_path / "same.safetensors", 32))
    code, data = run_json("diff-keys", str(folder), str(tmp_path / "same.safetensors"))
    assert code == 0 and data["worst_severity"] == "info", [e for e in data["unexpected"] if e["severity"] != "info"]
    note = next(n for n in data["notes"] if n.startswith("A is a PEFT adapter"))
    assert f"LoRA (rank {rank}) on " in note and "with shapes that fit;" in note, note
    assert not _loads(folder, _grouped(tmp_path / "wider.safetensors", 48))
    code, data = run_json("diff-keys", str(folder), str(tmp_path / "wider.safetensors"))
    assert code == 1 and data["worst_severity"] == "error", data["unexpected"]
    note = next(n for n in data["notes"] if n.startswith("A is a PEFT adapter"))
    assert "does not fit B's shapes" in note or "do not fit B's shapes" in note, note


def _other_methods() -> dict[str, Any]:
    import peft

    return {
        "GLoRA": lambda: peft.GloraConfig(target_modules=["q", "up"]),
        "OSF": lambda: peft.OSFConfig(target_modules=["q", "up"]),
        "PVeRA": lambda: peft.PveraConfig(target_modules=["q", "up"]),
    }


@pytest.mark.parametrize("method", list(_other_methods()))
def test_an_adapter_of_a_peft_method_not_known_here_is_named_as_one(tmp_path: Path, method: str) -> None:
    """peft 0.21 has ~20 methods past the ones diff-keys names (GLoRA's
    glora_A.Xd, OSF's osf_svd_params.U_low, PVeRA's pvera_lambda_b and its shared base_model.pvera_A): such an
    adapter against its own base was "unknown" for every tensor of both sides, worst severity error, though
    PeftModel.from_pretrained loads it. Each tensor on a module of B is now that method's, its shapes said to be
    not compared, and B's weights are the base's."""
    adapter = _adapter(tmp_path, _other_methods()[method]())
    assert _loads(adapter, _base(tmp_path / "same.safetensors", 32))
    code, data = run_json("diff-keys", str(adapter), str(tmp_path / "same.safetensors"))
    assert code == 0 and data["worst_severity"] == "info", [
        e for e in data["unexpected"] + data["missing"] if e["severity"] != "info"]
    assert all(e["reason"] == "adapter" for e in data["unexpected"]), data["unexpected"]
    assert all(e["reason"] == "adapter-base" for e in data["missing"]), data["missing"]
    note = next(n for n in data["notes"] if n.startswith("A is a PEFT adapter"))
    assert "on 2 modules, 2 of them in B (shapes not compared: " in note, note
    assert "tensors are of a PEFT method not known here, so an adapter for another size of the model is not " \
        "caught)" in note, note


def test_a_model_under_a_base_model_prefix_is_still_a_rename(tmp_path: Path) -> None:
    """Names under `base_model.` alone (a model saved under that prefix, no adapter) are not taken for a PEFT
    method's shared tensors: they stay a rename of B's."""
    torch.manual_seed(0)
    tensors = {"embed_tokens.weight": torch.randn(50, 32), "layer_0.q_proj.weight": torch.randn(32, 32)}
    save_file(tensors, str(tmp_path / "bare.safetensors"))
    prefixed = {f"base_model.{name}": tensor for name, tensor in tensors.items()}
    save_file(prefixed, str(tmp_path / "prefixed.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "prefixed.safetensors"), str(tmp_path / "bare.safetensors"))
    assert {e["reason"] for e in data["unexpected"]} == {"renamed"}, data["unexpected"]
    assert not any(n.startswith("A is a PEFT adapter") for n in data["notes"]), data["notes"]


class _Experts(torch.nn.Module):
    """Fused MoE experts as transformers 5 and gpt-oss keep them: bare 3-D parameters, no nn.Linear per expert."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.gate_up_proj = torch.nn.Parameter(torch.randn(4, 2 * hidden, hidden))
        self.down_proj = torch.nn.Parameter(torch.randn(4, hidden, 2 * hidden))


class _Moe(torch.nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.experts = _Experts(hidden)
        self.router = torch.nn.Linear(hidden, 4)


def _moe(path: Path, hidden: int) -> torch.nn.Module:
    torch.manual_seed(0)
    base = _Moe(hidden)
    save_file({name: tensor.contiguous() for name, tensor in base.state_dict().items()}, str(path))
    return base


def test_a_lora_on_fused_experts_by_target_parameters_fits_its_base(tmp_path: Path) -> None:
    """peft's target_parameters (the recipe for gpt-oss' experts) wraps bare parameters: `experts.lora_A.weight`
    ((r·experts) × in) for the last one, `experts.base_layer.lora_A.weight` for the one before, and B holds
    experts.gate_up_proj / down_proj, no experts.weight. Against its own base every pair was "targets experts, which
    B does not have: the adapter's weights for it are dropped", an error; PeftModel.from_pretrained loads it."""
    from peft import LoraConfig, get_peft_model

    folder = tmp_path / "adapter"
    get_peft_model(_moe(tmp_path / "made-for.safetensors", 32), LoraConfig(
        r=4, target_modules=["router"], target_parameters=["experts.gate_up_proj", "experts.down_proj"])
    ).save_pretrained(str(folder))
    assert _loads(folder, _moe(tmp_path / "same.safetensors", 32))
    code, data = run_json("diff-keys", str(folder), str(tmp_path / "same.safetensors"))
    assert code == 0 and data["worst_severity"] == "info", [e for e in data["unexpected"] if e["severity"] != "info"]
    details = {e["name"]: e["detail"] for e in data["unexpected"]}
    assert details["base_model.model.experts.base_layer.lora_A.weight"].startswith("LoRA on experts."), details
    note = next(n for n in data["notes"] if n.startswith("A is a PEFT adapter"))
    assert note.startswith("A is a PEFT adapter: LoRA (rank 4) on 2 modules, 2 of them in B with shapes that fit;")
    assert not _loads(folder, _moe(tmp_path / "wider.safetensors", 48))
    code, data = run_json("diff-keys", str(folder), str(tmp_path / "wider.safetensors"))
    assert code == 1 and data["worst_severity"] == "error"
    errors = {e["name"]: e["detail"] for e in data["unexpected"] if e["severity"] == "error"}
    assert all("fits none of B's parameters of experts (experts." in errors[f"base_model.model.experts.{wrap}lora_{f}"
                                                                          ".weight"]
               for wrap in ("", "base_layer.") for f in "AB"), errors
    note = next(n for n in data["notes"] if n.startswith("A is a PEFT adapter"))
    assert "; 2 of them do not fit B's shapes" in note, note  # the experts and the router


def test_an_oft_on_a_depthwise_conv_fits_its_base(tmp_path: Path) -> None:
    """peft's OFT on a depthwise convolution (32×1×3×3, groups=32) rotates all 32 input channels × 3 × 3: its
    oft_R.weight 72×6 was "rotates 288 input features, dw.weight (32×1×3×3 in B) reads 9", an error, though
    PeftModel.from_pretrained (0.21) loads it; 0.22 refuses OFT on any grouped convolution, a warning that says so.
    A 48-wide base still refuses it and is still an error."""
    from peft import OFTConfig

    folder = peft_adapter_on_grouped_convs(_grouped(tmp_path / "made-for.safetensors", 32), OFTConfig(
        r=0, oft_block_size=4, target_modules=["dw"]), tmp_path / "adapter")
    assert _loads(folder, _grouped(tmp_path / "same.safetensors", 32)) == (not peft_refuses_grouped_conv())
    code, data = run_json("diff-keys", str(folder), str(tmp_path / "same.safetensors"))
    assert code == 0 and data["worst_severity"] == "warn", [e for e in data["unexpected"] if e["severity"] != "info"]
    dw = next(e for e in data["unexpected"] if e["name"].endswith("dw.oft_R.weight"))
    assert dw["detail"].endswith("; PeftModel.from_pretrained onto B raises with peft 0.22 and later "
                                 "(NotImplementedError: OFT does not support Conv2d layers with groups > 1); peft 0.21 "
                                 "loads it"), dw
    assert not _loads(folder, _grouped(tmp_path / "wider.safetensors", 48))
    code, data = run_json("diff-keys", str(folder), str(tmp_path / "wider.safetensors"))
    assert code == 1 and "an adapter for another model size" in data["unexpected"][0]["detail"], data["unexpected"]


class _Embedder(torch.nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, hidden)
        self.q = torch.nn.Linear(hidden, hidden)


def _embedder(path: Path, hidden: int) -> torch.nn.Module:
    torch.manual_seed(0)
    base = _Embedder(hidden)
    save_file({name: tensor.contiguous() for name, tensor in base.state_dict().items()}, str(path))
    return base


def test_trainable_tokens_for_another_width_are_caught(tmp_path: Path) -> None:
    """peft's trainable tokens (TrainableTokensConfig, LoRA's trainable_token_indices) save one row per token, as
    wide as the embedding (`embed.token_adapter.trainable_tokens_delta`, 2×32): against a 48-wide base, which
    PeftModel.from_pretrained refuses (size mismatch), diff-keys said "info", its shapes not compared."""
    from peft import TrainableTokensConfig, get_peft_model

    folder = tmp_path / "adapter"
    get_peft_model(_embedder(tmp_path / "made-for.safetensors", 32), TrainableTokensConfig(
        target_modules=["embed"], token_indices=[1, 3])).save_pretrained(str(folder))
    assert _loads(folder, _embedder(tmp_path / "same.safetensors", 32))
    code, data = run_json("diff-keys", str(folder), str(tmp_path / "same.safetensors"))
    assert code == 0 and data["worst_severity"] == "info", data["unexpected"]
    note = next(n for n in data["notes"] if n.startswith("A is a PEFT adapter"))
    assert "1 of them in B with shapes that fit;" in note, note
    assert not _loads(folder, _embedder(tmp_path / "wider.safetensors", 48))
    code, data = run_json("diff-keys", str(folder), str(tmp_path / "wider.safetensors"))
    assert code == 1 and data["worst_severity"] == "error", data["unexpected"]
    assert "holds 32-wide token rows, embed.weight (50×48 in B) embeds 48 wide: an adapter for another model " \
        "size" in data["unexpected"][0]["detail"], data["unexpected"]
