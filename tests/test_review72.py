"""review72: checks of fixlist27 and fixlist28.

- A plain GPT-2 LoRA saved by peft, its wrapper renamed away (`--rename '^base_model\\.model\\.='`), against a
  GPT2Model was still "a LoRA in diffusers' layout ... of the pipeline's transformer", to load with
  load_lora_weights (fixlist28 settled it for AdaLoRA only): peft's adapter_config.json (its peft_type) beside A
  says it is a PEFT adapter, and it gets the same note as without the rename.
- A saved PEFT adapter as A against the whole PEFT-wrapped model it was saved from as B
  (`get_peft_model(...).state_dict()`; fixlist27 covered only the other way round): a LoRA's note said "none of its
  modules is in B: it was made for another model, and PeftModel.from_pretrained(B, adapter) raises", an IA3's said
  nothing, and B's own adapter tensors were "a weight of the base model" (adapter-base). The note now says B is a
  whole PEFT-wrapped model holding those modules under `.base_layer.`, and B's adapter tensors are told as such.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch

from fixtures.build import build_gpt2
from tests.helpers import run_json
from tests.test_fixlist28 import gpt2_and_backbone


def test_a_gpt2_lora_renamed_out_of_peft_s_wrapper_is_named_a_peft_adapter_by_its_adapter_config(
        tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    gpt2, backbone = gpt2_and_backbone(tmp_path)
    adapter = tmp_path / "lora"
    get_peft_model(gpt2, LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True)).save_pretrained(adapter)
    code, report = run_json("diff-keys", adapter, backbone, "--rename", r"^base_model\.model\.=")
    assert code == 1, report
    note = report["notes"][0]
    assert note.startswith("A is a PEFT adapter: LoRA (rank 4) on 2 modules, 0 of them in B"), note
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


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_an_adapter_against_the_whole_peft_wrapped_model_it_was_saved_from_is_not_for_another_model(
        tmp_path: Path, method: str) -> None:
    from peft import IA3Config, LoraConfig, get_peft_model

    torch.manual_seed(4)
    config = (LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True) if method == "lora" else
              IA3Config(target_modules=["c_attn", "mlp.c_proj"], feedforward_modules=["mlp.c_proj"],
                        fan_in_fan_out=True))
    wrapped = get_peft_model(build_gpt2(), config)
    whole = tmp_path / "wrapped.pt"
    torch.save(wrapped.state_dict(), whole)
    adapter = tmp_path / "adapter"
    wrapped.save_pretrained(adapter)
    modules = 2 if method == "lora" else 4

    code, report = run_json("diff-keys", adapter, whole)
    assert code == 1, report
    note = report["notes"][0]
    assert "made for another model" not in note and "raises" not in note, note
    assert (f"but {modules} of them are B's adapted layers (e.g. "
            "base_model.model.transformer.h.0.attn.c_attn.base_layer.weight): B is a whole PEFT-wrapped model") in note
    rows = {row["name"]: row for row in report["missing"]}
    own = rows["base_model.model.transformer.h.0.attn.c_attn." + ("lora_A.default.weight" if method == "lora"
                                                                   else "ia3_l.default")]
    assert (own["reason"], own["severity"]) == ("adapter", "info"), own
    assert own["detail"] == "a tensor of the adapter in B, a whole PEFT-wrapped model", own
    assert rows["base_model.model.transformer.wte.weight"]["reason"] == "adapter-base", rows
    details = [row["detail"] for row in report["unexpected"]]
    assert len(details) == 4, details
    assert all(detail.startswith("on transformer.h.") and detail.endswith(
        ", which B holds wrapped by an adapter of its own (.base_layer.), not as a base model's layer")
        for detail in details), details


def test_a_model_of_another_width_against_a_lora_is_not_called_the_model_it_adapts(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(4)
    adapter = tmp_path / "lora"  # of GPT-2 with n_embd 32
    lora = LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True)
    get_peft_model(build_gpt2(), lora).save_pretrained(adapter)
    narrow = tmp_path / "narrow.pt"
    torch.manual_seed(0)
    torch.save(GPT2LMHeadModel(GPT2Config(vocab_size=99, n_embd=16, n_layer=2, n_head=2, n_positions=64)).state_dict(),
               narrow)
    code, report = run_json("diff-keys", narrow, adapter)
    assert code == 1, report
    note = report["notes"][0]
    assert note.startswith("B is a PEFT adapter and A a model with its modules, but of another size: none of the "
                           "adapter's tensors fits A's shapes: diff-keys loads A into B"), note
    assert "the model it adapts" not in note, note
    assert {row["reason"] for row in report["missing"] + report["unexpected"]} == {"swapped-sides"}, report
    # The command it gives says the same from the adapter's side.
    _, swapped = run_json("diff-keys", adapter, narrow)
    assert "it was made for another size of the model" in swapped["notes"][0], swapped["notes"]
    # Of the width the LoRA was made for, it is still the model it adapts.
    wide = tmp_path / "wide.pt"
    torch.save(build_gpt2().state_dict(), wide)
    _, report = run_json("diff-keys", wide, adapter)
    assert report["notes"][0].startswith("B is a PEFT adapter and A the model it adapts: "), report["notes"]


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod."])
def test_a_whole_peft_wrapped_model_saved_through_ddp_against_its_adapter_says_what_the_pair_is(
        tmp_path: Path, prefix: str) -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(4)
    wrapped = get_peft_model(build_gpt2(), LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True))
    whole = tmp_path / "wrapped.pt"
    torch.save({prefix + k: v for k, v in wrapped.state_dict().items()}, whole)
    adapter = tmp_path / "adapter"
    wrapped.save_pretrained(adapter)

    code, report = run_json("diff-keys", whole, adapter)
    assert code == 1, report
    note = report["notes"][0]
    assert note.startswith(f"A is a whole PEFT-wrapped model (saved through a training wrapper, DDP, torch.compile, "
                           f"...: '{prefix}' before every key), the base with its adapter in it, and B a saved PEFT "
                           "adapter: 29 weights of A's are the base's (4 adapted layers under .base_layer.)"), note
    rows = report["missing"] + report["unexpected"]
    assert not any(row["reason"] == "unknown" for row in rows), rows
    assert {row["reason"] for row in rows if "lora_" not in row["name"]} == {"adapter-base"}, rows
    assert {(row["reason"], row["severity"]) for row in rows if "lora_" in row["name"]} == {("adapter", "error")}
    flags = shlex.split(note.split("map its adapter tensors with ", 1)[1].split(");", 1)[0])
    assert flags[0] == "--rename" and len(flags) == 4, flags
    _, fixed = run_json("diff-keys", whole, adapter, *flags)
    assert fixed["worst_severity"] == "info", fixed
