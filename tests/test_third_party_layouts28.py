"""A twenty-eighth round: LoRA files and training checkpoints no earlier round covered, run through the six commands:
diffusers' first LoRA layout (unet.save_attn_procs' attention-processor pairs, `processor.to_q_lora.down.weight`).

diffusers is not installed here: its first LoRA layout is reproduced from its own code: LoRAAttnProcessor's
LoRALinearLayer pairs (`down` rank × in, `up` out × rank, started at zero; to_k / to_v of a cross-attention read the
cross_attention_dim), AttnProcsLayers' state dict keyed by the processor's name, saved by save_attn_procs with
torch.save as pytorch_lora_weights.bin under no component's prefix, later by save_lora_weights under `unet.`; what
its loaders do with it, from src/diffusers/utils/state_dict_utils.py (KEYS_TO_ALWAYS_REPLACE drops `.processor.`,
UNET_TO_DIFFUSERS renames `.to_q_lora.down` to `.to_q.lora_A`, `.to_out_lora.up` to `.to_out.0.lora_B`) and
src/diffusers/loaders/peft.py (load_lora_adapter keeps every key where none is under its prefix, and converts keys
whose first holds no `lora_A`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.helpers import run_json

_ATTENTIONS = ("down_blocks.0.attentions.0", "mid_block.attentions.0", "up_blocks.1.attentions.0")


def _attn_procs_lora(hidden: int = 32, cross: int = 24, rank: int = 4) -> dict[str, torch.Tensor]:
    """A UNet's LoRAAttnProcessor pairs as AttnProcsLayers' state dict names them (no component prefix)."""
    generator = torch.Generator().manual_seed(28)
    state = {}
    for block in _ATTENTIONS:
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out"):
                width_in = cross if attn == "attn2" and proj in ("to_k", "to_v") else hidden
                name = f"{block}.transformer_blocks.0.{attn}.processor.{proj}_lora"
                state[f"{name}.down.weight"] = torch.randn(rank, width_in, generator=generator) / rank
                state[f"{name}.up.weight"] = torch.randn(hidden, rank, generator=generator) * 0.01
    return state


def _unet(folder: Path, hidden: int = 32, cross: int = 24) -> None:
    """The attention projections of a diffusers UNet2DConditionModel folder (to_out is a ModuleList: to_out.0)."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for block in _ATTENTIONS:
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out.0"):
                width_in = cross if attn == "attn2" and proj in ("to_k", "to_v") else hidden
                state[f"{block}.transformer_blocks.0.{attn}.{proj}.weight"] = torch.randn(
                    hidden, width_in, generator=generator)
            state[f"{block}.transformer_blocks.0.{attn}.to_out.0.bias"] = torch.zeros(hidden)
    folder.mkdir()
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel",
                                                    "_diffusers_version": "0.14.0", "cross_attention_dim": cross}))


def test_a_lora_in_diffusers_first_layout_is_checked_against_the_unet_it_adapts(tmp_path: Path) -> None:
    """save_attn_procs' pytorch_lora_weights.bin against the UNet it was trained on: every key of both read "unknown:
    no known cause: these weights will not load", 48 + 30 errors, though load_lora_weights loads it. Each pair is
    checked, under the name diffusers' loader gives it, against the projection it adapts; the same file saved under
    `unet.` (save_lora_weights) alike."""
    lora = tmp_path / "lora" / "pytorch_lora_weights.bin"
    lora.parent.mkdir()
    state = _attn_procs_lora()
    torch.save(state, lora)
    prefixed = tmp_path / "pytorch_lora_weights.safetensors"
    save_file({f"unet.{name}": value for name, value in state.items()}, str(prefixed))
    unet = tmp_path / "unet"
    _unet(unet)
    for source, prefix in ((lora, ""), (prefixed, "unet.")):
        code, data = run_json("diff-keys", str(source), str(unet))
        assert code == 0 and data["worst_severity"] == "info", data
        details = {issue["name"]: (issue["reason"], issue["detail"]) for issue in data["unexpected"]}
        assert len(details) == 48
        assert details[f"{prefix}mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora.down.weight"] \
            == ("adapter", "LoRA on mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight")
        assert details[f"{prefix}up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight"] \
            == ("adapter", "LoRA on up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0.weight")
        assert {issue["reason"] for issue in data["missing"]} == {"adapter-base"}
        note = next(note for note in data["notes"] if note.startswith("A is a LoRA in diffusers' layout (its first"))
        assert "24 module(s) of the pipeline's unet (B), 24 of them in B with shapes that fit" in note
        assert "load_lora_weights(adapter)" in note and "PeftModel" not in note
        assert ("under no component's prefix, are the UNet's" in note) == (prefix == "")


def test_a_lora_in_diffusers_first_layout_for_another_unet_says_it_does_not_fit(tmp_path: Path) -> None:
    """The check is a real one: against a UNet of another width each pair is an error naming the shapes."""
    lora = tmp_path / "pytorch_lora_weights.bin"
    torch.save(_attn_procs_lora(), lora)
    narrow = tmp_path / "unet-narrow"
    _unet(narrow, hidden=16)
    code, data = run_json("diff-keys", str(lora), str(narrow))
    assert code == 1 and data["worst_severity"] == "error"
    details = {issue["name"]: issue["detail"] for issue in data["unexpected"]}
    assert details["down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight"] == (
        "4×32 does not fit down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight (16×16 in B): an "
        "adapter for another model size")


def test_plan_devices_names_a_lora_in_diffusers_first_layout_as_one(tmp_path: Path) -> None:
    """plan-devices planned the unprefixed pytorch_lora_weights.bin as a model that "fits on the GPUs", without a
    word of the UNet it is applied to (the same LoRA under `unet.` had the add-on warning)."""
    lora = tmp_path / "pytorch_lora_weights.bin"
    torch.save(_attn_procs_lora(), lora)
    code, data = run_json("plan-devices", str(lora), "--gpu", "8GB")
    assert code == 0, data
    assert any(warning.startswith("this is a LoRA in diffusers' layout: only its own weights are planned")
               for warning in data["warnings"]), data["warnings"]

