"""diff-keys of a PEFT prompt-learning adapter (prompt, prefix tuning) against its base model, saved by peft itself:
its one `prompt_embeddings` was an unknown key and every base weight an unknown missing one (exit 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import run_json

peft = pytest.importorskip("peft")


def _llama(hidden: int = 16):  # type: ignore[no-untyped-def]
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=hidden, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prompt-adapters")
    _llama().save_pretrained(root / "base")
    # A config each: get_peft_model writes the model's sizes into the one it is given.
    prompt = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    peft.get_peft_model(_llama(), prompt).save_pretrained(root / "prompt")
    prefix = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)
    peft.get_peft_model(_llama(), prefix).save_pretrained(root / "prefix")
    # Made for a model twice as wide: it does not fit this base.
    wider = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    peft.get_peft_model(_llama(hidden=32), wider).save_pretrained(root / "wider")
    return root


def test_a_prompt_tuning_adapter_is_an_adapter_that_stores_no_base_weights(saved: Path) -> None:
    code, report = run_json("diff-keys", str(saved / "prompt"), str(saved / "base"))
    assert code == 0
    [key] = report["unexpected"]
    assert (key["name"], key["reason"], key["severity"]) == ("prompt_embeddings", "adapter", "info")
    assert key["detail"] == "4 virtual tokens of width 16, the width of B's model.embed_tokens.weight"
    assert {(m["reason"], m["severity"]) for m in report["missing"]} == {("adapter-base", "info")}
    assert len(report["missing"]) == 21
    assert any("PEFT prompt-learning adapter (4 virtual tokens)" in note for note in report["notes"])


def test_a_prefix_tuning_adapter_holds_a_key_and_value_prefix_per_layer(saved: Path) -> None:
    code, report = run_json("diff-keys", str(saved / "prefix"), str(saved / "base"))
    assert code == 0
    [key] = report["unexpected"]
    assert key["severity"] == "info"
    # 2 layers x (key + value) x width 16 = 64 values a virtual token.
    assert key["detail"] == ("3 virtual tokens, 64 values each: prefix tuning's key and value prefixes for B's 2 "
                             "layers, 16 wide")
    assert {(m["reason"], m["severity"]) for m in report["missing"]} == {("adapter-base", "info")}


def test_a_prefix_tuning_adapter_of_a_grouped_query_model_fits(tmp_path: Path) -> None:
    # peft sizes the prefixes by the key/value width: 2 layers x 2 x 8 (1 of 2 heads' width 16) = 32.
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "base")
    prefix = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)
    peft.get_peft_model(LlamaForCausalLM(config), prefix).save_pretrained(tmp_path / "prefix")
    code, report = run_json("diff-keys", str(tmp_path / "prefix"), str(tmp_path / "base"))
    assert code == 0 and report["unexpected"][0]["detail"].endswith("for B's 2 layers, 8 wide")


def test_a_prompt_adapter_made_for_another_width_is_an_error(saved: Path) -> None:
    code, report = run_json("diff-keys", str(saved / "wider"), str(saved / "base"))
    assert code == 1
    [key] = report["unexpected"]
    assert key["severity"] == "error"
    assert key["detail"] == ("4 virtual tokens of width 32, but B's model.embed_tokens.weight is 16 wide and its 2 "
                             "layers take no prefix of that width: an adapter for another model")
    # Not loadable, so the base weights are not explained away as the adapter's base.
    assert {m["reason"] for m in report["missing"]} != {"adapter-base"}
