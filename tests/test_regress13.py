"""Found comparing every command's output at f074c0af and at diffkeys5's merge (676df939).

diff-keys of a LoRA made with peft's target_parameters on one fused experts parameter (`mlp.experts.gate_up_proj`)
against a base of another expert width saved per expert: 513af7a5 made such a base's experts count as the fused
parameters transformers builds (E × 2·intermediate × hidden), but each factor was checked alone against any axis of
any parameter of the module. lora_B (2·intermediate × r·E, made for intermediate 8) "fit" the wider base, its 16
rows equal to the hidden size (gate_up_proj's in axis, down_proj's out axis): worst severity info, exit 0, "6 of
them in B with shapes that fit", where PeftModel.from_pretrained onto that base raises a size mismatch (f074c0af said
error, for another reason). Both factors now fit one parameter the same way round, and a base fused from per-expert
weights is read E × out × in, as transformers builds it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import run_json

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def _tiny_qwen3_moe(folder: Path, moe_intermediate_size: int) -> Any:
    """A Qwen3-MoE base as transformers 5 saves it: experts fused in memory, saved per expert."""
    torch.manual_seed(0)
    model = transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, moe_intermediate_size=moe_intermediate_size,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=8, num_experts=4,
        num_experts_per_tok=2, max_position_embeddings=64))
    model.save_pretrained(folder)
    return model


def test_a_gate_up_lora_for_narrower_experts_is_an_error_against_a_wider_base(tmp_path: Path) -> None:
    base = tmp_path / "base"
    model = _tiny_qwen3_moe(base, moe_intermediate_size=8)
    adapter = tmp_path / "adapter"
    peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj"],
                                               target_parameters=["mlp.experts.gate_up_proj"])).save_pretrained(adapter)
    wider = tmp_path / "wider"
    _tiny_qwen3_moe(wider, moe_intermediate_size=12)

    # What peft does with it: its own base takes it, the wider one refuses the experts' lora_B.
    peft.PeftModel.from_pretrained(transformers.Qwen3MoeForCausalLM.from_pretrained(base), str(adapter))
    with pytest.raises(RuntimeError, match=r"size mismatch for .*mlp\.experts\.lora_B"):
        peft.PeftModel.from_pretrained(transformers.Qwen3MoeForCausalLM.from_pretrained(wider), str(adapter))

    code, data = run_json("diff-keys", str(adapter), str(base))
    assert code == 0 and data["worst_severity"] == "info", data["groups"]

    code, data = run_json("diff-keys", str(adapter), str(wider))
    assert code == 1 and data["worst_severity"] == "error", data["groups"]
    errors = {key["name"]: key["detail"] for key in data["unexpected"] if key["severity"] == "error"}
    assert sorted(errors) == [f"base_model.model.model.layers.{layer}.mlp.experts.lora_{part}.weight"
                              for layer in (0, 1) for part in "AB"], errors
    assert all(f"fits none of B's parameters of model.layers.{name.split('.')[4]}.mlp.experts" in detail
               and "gate_up_proj (4×24×16)" in detail for name, detail in errors.items()), errors
    note = next(note for note in data["notes"] if note.startswith("A is a PEFT adapter"))
    assert "2 of them do not fit B's shapes" in note, note
    # q_proj, of one width in both, still fits.
    assert all(group["severity"] == "info" for group in data["groups"] if "q_proj" in group["pattern"])
