"""fixlist28: three diff-keys left-outs.

- A new task head's LayerNorm / RMSNorm weight and bias (RoBERTa's `lm_head.layer_norm`, BERT's
  `cls.predictions.transform.LayerNorm`) were "new, initialized at random" / "initialized by the model": the model's
  _init_weights sets them to ones and zeros, which is what from_pretrained leaves.
- `diff-keys DDP_BASE LORA` (a base saved through DDP, `module.` before every key, as A; its peft LoRA as B) gave
  "unknown" errors with no note, where the unprefixed base gets `swapped-sides`: the adapter's modules are A's
  under the wrapper's prefix, and the command the note gives strips it first (pasted as it is, it works).
- A GPT-2 AdaLoRA with peft's wrapper renamed away (`--rename '^base_model\\.model\\.='`) against a GPT2Model was "a
  LoRA in diffusers' layout ... of the pipeline's transformer", to load with load_lora_weights: GPT-2's
  `transformer.` is no pipeline component, and diffusers has no AdaLoRA (its lora_E). It is a PEFT adapter.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch

from fixtures.build import build_gpt2
from tests.helpers import run_cli, run_json


def test_a_new_heads_layer_norm_is_said_to_start_at_ones_and_zeros_as_from_pretrained_leaves_it(
        tmp_path: Path) -> None:
    import transformers
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaModel

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=40)
    RobertaModel(config).save_pretrained(tmp_path / "base")
    RobertaForMaskedLM(config).save_pretrained(tmp_path / "mlm")
    loaded, info = RobertaForMaskedLM.from_pretrained(tmp_path / "base", output_loading_info=True)
    state = loaded.state_dict()
    assert {"lm_head.layer_norm.weight", "lm_head.layer_norm.bias"} <= set(info["missing_keys"])
    assert torch.equal(state["lm_head.layer_norm.weight"], torch.ones(16))
    assert torch.equal(state["lm_head.layer_norm.bias"], torch.zeros(16))

    code, report = run_json("diff-keys", tmp_path / "base", tmp_path / "mlm")
    assert code in (0, 1), report
    detail = {row["name"]: row["detail"] for row in report["missing"]}
    assert detail["lm_head.layer_norm.weight"] == "new, set to ones by the model (a LayerNorm's scale), not random"
    assert detail["lm_head.layer_norm.bias"] == "new, set to zeros by the model (a norm's shift), not random"
    # The head's Linear keeps its words: a weight drawn at random, a bias set by the model.
    assert detail["lm_head.dense.weight"] == "new, initialized at random"
    assert detail["lm_head.dense.bias"] == "new, initialized by the model"


def test_berts_new_prediction_head_layer_norm_is_said_to_start_at_ones_and_zeros(tmp_path: Path) -> None:
    import transformers
    from transformers import BertConfig, BertForMaskedLM, BertModel

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=40)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "base")
    BertForMaskedLM(config).save_pretrained(tmp_path / "mlm")
    loaded = BertForMaskedLM.from_pretrained(tmp_path / "base")
    assert torch.equal(loaded.state_dict()["cls.predictions.transform.LayerNorm.weight"], torch.ones(16))
    code, report = run_json("diff-keys", tmp_path / "base", tmp_path / "mlm")
    assert code in (0, 1), report
    detail = {row["name"]: row["detail"] for row in report["missing"]}
    assert detail["cls.predictions.transform.LayerNorm.weight"] == \
        "new, set to ones by the model (a LayerNorm's scale), not random"
    assert detail["cls.predictions.transform.LayerNorm.bias"] == \
        "new, set to zeros by the model (a norm's shift), not random"
    assert detail["cls.predictions.transform.dense.weight"] == "new, initialized at random"


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod."])
def test_a_base_saved_through_a_wrapper_against_its_lora_is_told_the_sides_are_swapped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    from peft import LoraConfig, get_peft_model

    gpt2 = build_gpt2()
    base = tmp_path / "wrapped.pt"
    torch.save({f"{prefix}{k}": v for k, v in gpt2.state_dict().items()}, base)
    plain = tmp_path / "plain.pt"
    torch.save(gpt2.state_dict(), plain)
    torch.manual_seed(4)
    adapter = tmp_path / "lora"
    get_peft_model(gpt2, LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True)).save_pretrained(adapter)

    code, report = run_json("diff-keys", base, adapter)
    assert code == 1, report
    rows = report["missing"] + report["unexpected"]
    assert {row["reason"] for row in rows} == {"swapped-sides"}, rows
    note = report["notes"][0]
    assert note.startswith("B is a PEFT adapter and A the model it adapts, saved through a training wrapper "
                           f"(DDP, torch.compile, ...: '{prefix}' before every key)"), note
    assert "no key of the adapter was checked against A" in note, note
    # The steps, pasted in a shell in one folder, write A without the prefix and check the adapter against it.
    steps = note.split("to check it, ", 1)[1]
    convert = shlex.split(steps.split("(", 2)[2].rsplit("), then ", 1)[0])
    check = shlex.split(steps.rsplit("then run ", 1)[1])
    assert convert[:2] == ["weightdoctor", "convert"] and check[:2] == ["weightdoctor", "diff-keys"], steps
    monkeypatch.chdir(tmp_path)
    assert run_cli(*convert[1:]).exit_code == 0
    fixed = json.loads(run_cli(*check[1:], "--json").stdout)
    assert fixed["worst_severity"] == "info", fixed["notes"]
    assert "2 of them in B with shapes that fit" in fixed["notes"][0], fixed["notes"]

    # The base without a prefix keeps its note and command.
    code, report = run_json("diff-keys", plain, adapter)
    assert code == 1, report
    assert report["notes"][0].startswith("B is a PEFT adapter and A the model it adapts: "), report["notes"]
    assert report["notes"][0].endswith(f"to check it, run weightdoctor diff-keys {adapter} {plain}"), report["notes"]


def gpt2_and_backbone(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    """A tiny GPT-2 LM and its GPT2Model's state dict saved alone (GPT2LMHeadModel's keys without `transformer.`);
    torch seeded after, for the adapter made next."""
    gpt2 = build_gpt2()
    backbone = tmp_path / "gpt2model.pt"
    torch.save({k.removeprefix("transformer."): v for k, v in gpt2.state_dict().items()
                if k.startswith("transformer.")}, backbone)
    torch.manual_seed(4)
    return gpt2, backbone


def test_a_gpt2_adalora_renamed_out_of_peft_s_wrapper_is_named_a_peft_adalora_not_a_diffusers_lora(
        tmp_path: Path) -> None:
    from peft import AdaLoraConfig, get_peft_model

    gpt2, backbone = gpt2_and_backbone(tmp_path)
    adapter = tmp_path / "adalora"
    get_peft_model(gpt2, AdaLoraConfig(r=4, init_r=4, target_modules=["c_attn"], fan_in_fan_out=True,
                                       total_step=10)).save_pretrained(adapter)
    code, report = run_json("diff-keys", adapter, backbone, "--rename", r"^base_model\.model\.=")
    assert code == 1, report
    note = report["notes"][0]
    assert note.startswith("A is a PEFT adapter: AdaLoRA (rank 4) on 2 modules"), note
    assert "diffusers" not in note and "load_lora_weights" not in note and "pipeline" not in note, note
    assert "load it with peft's PeftModel.from_pretrained, given " in note, note  # no config: in words
    # The same note as without the rename: the rename changes the names compared, not what A is.
    _, plain = run_json("diff-keys", adapter, backbone)
    assert plain["notes"][0] == note, plain["notes"]
