"""review72: checks of fixlist27 and fixlist28.

- A plain GPT-2 LoRA saved by peft, its wrapper renamed away (`--rename '^base_model\\.model\\.='`), against a
  GPT2Model was still "a LoRA in diffusers' layout ... of the pipeline's transformer", to load with
  load_lora_weights (fixlist28 settled it for AdaLoRA only): peft's adapter_config.json (its peft_type) beside A
  says it is a PEFT adapter, and it gets the same note as without the rename.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fixtures.build import build_gpt2
from tests.helpers import run_json


def test_a_gpt2_lora_renamed_out_of_peft_s_wrapper_is_named_a_peft_adapter_by_its_adapter_config(
        tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    gpt2 = build_gpt2()
    backbone = tmp_path / "gpt2model.pt"  # GPT2Model's keys: GPT2LMHeadModel's without `transformer.`
    torch.save({k.removeprefix("transformer."): v for k, v in gpt2.state_dict().items()
                if k.startswith("transformer.")}, backbone)
    torch.manual_seed(4)
    adapter = tmp_path / "lora"
    get_peft_model(gpt2, LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True)).save_pretrained(adapter)
    code, report = run_json("diff-keys", adapter, backbone, "--rename", r"^base_model\.model\.=")
    assert code == 1, report
    note = report["notes"][0]
    assert note.startswith("A is a PEFT adapter: LoRA (rank 4) on 2 module(s), 0 of them in B"), note
    assert "diffusers" not in note and "load_lora_weights" not in note and "pipeline" not in note, note
    assert {row["reason"] for row in report["unexpected"]} == {"adapter"}, report["unexpected"]
    _, plain = run_json("diff-keys", adapter, backbone)
    assert plain["notes"][0] == note, plain["notes"]

    # The same tensors with no adapter_config.json beside them keep the diffusers reading (a diffusers LoRA of a
    # pipeline's transformer is saved without one).
    bare = tmp_path / "bare"
    bare.mkdir()
    (adapter / "adapter_model.safetensors").rename(bare / "adapter_model.safetensors")
    _, report = run_json("diff-keys", bare, backbone, "--rename", r"^base_model\.model\.=")
    assert report["notes"][0].startswith("A is a LoRA in diffusers' layout"), report["notes"]
