"""The lead's checks of the twenty-sixth session: BART-family generation heads' `final_logits_bias`."""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, run_json, run_subprocess


def _seq2seq_pair(tmp_path: Path, family: str) -> tuple[Path, Path]:
    """A base model and its ForConditionalGeneration, saved by transformers from one tiny seeded config."""
    import transformers

    config_class, base_class, head_class = {
        "bart": ("BartConfig", "BartModel", "BartForConditionalGeneration"),
        "pegasus": ("PegasusConfig", "PegasusModel", "PegasusForConditionalGeneration"),
    }[family]
    config = getattr(transformers, config_class)(
        vocab_size=96, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)
    torch.manual_seed(0)
    base, head = tmp_path / f"{family} base", tmp_path / f"{family} head"
    getattr(transformers, base_class)(config).save_pretrained(base)
    getattr(transformers, head_class)(config).save_pretrained(head)
    return base, head


@pytest.mark.parametrize("family", ["bart", "pegasus"])
def test_a_base_against_its_generation_head_calls_final_logits_bias_the_heads_not_unknown(
        tmp_path: Path, family: str) -> None:
    """BartModel against BartForConditionalGeneration called `final_logits_bias` "unknown: these weights will not
    load", severity error (exit 1), where from_pretrained of the base into the head class reports nothing missing:
    the head's output bias is a buffer the model builds as zeros."""
    import transformers

    base, head = _seq2seq_pair(tmp_path, family)
    head_class = json.loads((head / "config.json").read_text())["architectures"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, info = getattr(transformers, head_class).from_pretrained(base, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]  # the oracle: nothing to report
    assert torch.count_nonzero(model.final_logits_bias) == 0  # what it starts at

    code, data = run_json("diff-keys", str(base), str(head))
    assert code == 0, data
    row = next(row for row in data["missing"] if row["name"] == "final_logits_bias")
    assert (row["reason"], row["severity"]) == ("task-head", "info")
    assert "zeros" in row["detail"]
    assert {row["reason"] for row in data["missing"] + data["unexpected"]} == {"task-head", "base-model-prefix"}

    # The other way round, the head's bias is dropped by the base model, as any head B lacks: from_pretrained
    # reports it unexpected and loads.
    base_class = json.loads((base / "config.json").read_text())["architectures"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, info = getattr(transformers, base_class).from_pretrained(head, output_loading_info=True)
    assert set(info["unexpected_keys"]) == {"final_logits_bias"} and not info["missing_keys"]
    code, data = run_json("diff-keys", str(head), str(base))
    assert code == 0, data
    row = next(row for row in data["unexpected"] if row["name"] == "final_logits_bias")
    assert (row["reason"], row["severity"], row["detail"]) == ("task-head", "info", "not used by B, dropped")
    code, data = run_json("diff-keys", str(head), "--model-class", base_class)
    assert code == 0, data
    assert [(row["name"], row["reason"], row["severity"]) for row in data["unexpected"]] == [
        ("final_logits_bias", "task-head", "info")]
    assert not data["missing"]


def test_an_unrelated_bias_buffer_is_still_unknown(tmp_path: Path) -> None:
    """The rule is the name's own: a `logits_bias` elsewhere stays an error."""
    from safetensors.torch import save_file

    save_file({"encoder.weight": torch.ones(2, 2)}, str(tmp_path / "a.safetensors"))
    save_file({"encoder.weight": torch.ones(2, 2), "decoder.logits_bias": torch.zeros(1, 4)},
              str(tmp_path / "b.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"))
    assert code == 1
    assert [(row["name"], row["reason"]) for row in data["missing"]] == [("decoder.logits_bias", "unknown")]


def test_a_seq_cls_lora_says_which_of_its_modules_to_save_the_file_holds(tmp_path: Path) -> None:
    """peft writes a SEQ_CLS adapter's modules_to_save as ["classifier", "score"] (0.22: "pre_classifier" too)
    whatever the model has; inspect said "saves classifier, score whole" of a BERT LoRA whose file holds the classifier
    alone."""
    import peft
    import transformers
    from safetensors import safe_open

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32, num_labels=3)
    model = peft.get_peft_model(transformers.BertForSequenceClassification(config),
                                peft.LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"]))
    model.save_pretrained(tmp_path / "lora")
    listed = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["modules_to_save"]
    assert {"classifier", "score"} <= set(listed)  # as peft writes it (0.22 adds "pre_classifier")
    with safe_open(str(tmp_path / "lora" / "adapter_model.safetensors"), "pt") as handle:
        names = handle.keys()
    whole = sorted(name for name in names if "lora_" not in name)
    assert whole == ["base_model.model.classifier.bias", "base_model.model.classifier.weight"]

    code, data = run_json("inspect", str(tmp_path / "lora"))
    assert code == 0
    assert data["adapter"]["modules_to_save"] == listed  # the config's field as it is
    assert data["adapter"]["modules_saved"] == ["classifier"]
    text = " ".join(run_cli("inspect", str(tmp_path / "lora")).stdout.split())
    assert "saves classifier whole" in text and "score" not in text


def test_a_long_message_prints_where_the_folder_was_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """clip_message reads the current folder to leave its name out of the count: with that folder removed under the
    run, os.getcwd() raised FileNotFoundError inside the error line itself."""
    from weightdoctor.errors import clip_message

    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    long_path = "/data/" + "x" * 5000 + "/w.npz"
    text = f"{long_path}: numpy.load({long_path!r}) reads it"
    assert clip_message(text, 4000, [long_path]) == text
    assert "left out" in clip_message("y" * 5000, 4000, [])


def test_the_peft_call_for_a_repo_id_adapter_reads_the_revision_compared(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """diff-keys ADAPTER BASE with the adapter a repo id read at --revision v2: the note's
    `peft.PeftModel.from_pretrained(..., 'org/lora')` dropped the revision and, pasted, loaded main's factors."""
    from safetensors.torch import load_file, save

    from fixtures.diff_pairs import build_peft_adapter
    from fixtures.hub_cache import commit_of, write_snapshot
    from tests.test_advice_runs2 import _CHECK_LOADED, _calls, _exec_python

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft: save_embedding_layers set for embed_tokens
        folders = build_peft_adapter(tmp_path / "made")
    adapter = folders["adapter"]
    config = (adapter / "adapter_config.json").read_bytes()
    factors = load_file(adapter / "adapter_model.safetensors")
    cache = tmp_path / "hub"
    write_snapshot(cache, "org/lora", commit_of("v2"), {"adapter_model.safetensors": save(factors),
                                                        "adapter_config.json": config}, refs=("v2",))
    zeros = {name: torch.zeros_like(tensor) for name, tensor in factors.items()}
    write_snapshot(cache, "org/lora", commit_of("main"), {"adapter_model.safetensors": save(zeros),
                                                          "adapter_config.json": config})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    done = run_subprocess("diff-keys", "org/lora", "made/base", "--revision", "v2", "--json", cwd=tmp_path,
                          env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    assert done.returncode in (0, 1), done.stderr
    note = next(note for note in json.loads(done.stdout)["notes"] if "peft.PeftModel.from_pretrained(" in note)
    [call] = _calls(note, "peft.PeftModel.from_pretrained")
    assert "revision='v2'" in ast.unparse(call), note
    saved = tmp_path / "v2.safetensors"
    saved.write_bytes(save(factors))
    printed = _exec_python(f"model = {ast.unparse(call)}" + _CHECK_LOADED.format(saved=str(saved)), tmp_path)
    assert printed.split()[1:3] == ["True", "True"], printed  # v2's factors loaded, not main's zeros
