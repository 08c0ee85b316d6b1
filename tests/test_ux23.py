"""ux23: words that name the wrong thing.

- `diff-keys A --model-class C` compares A with a model built on the meta device, which its header names; its
  reasons, details, legend and notes, written for two checkpoints, said "B" (`a head B lacks is dropped`, `not used
  by B, dropped`, `120×32 in B`, `matched 39 of 41 keys of B`). They now name the model, in Rich and in JSON, and
  two checkpoints still say B.
- convert's warnings wrote `->` (`dtype: float32 -> float16`, `enc.dense.kernel -> enc.dense.weight`) where its cast
  row and the other commands write `→`.
- A pickle nested past `opcodes.MAX_OPEN_CONTAINERS` read "the pickle cannot be parsed (...)"; it is refused there,
  worded as the other bounds are (what it holds, more than the bound, why).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from fixtures.diff_pairs import Pair, build_pairs, build_peft_adapter, tiny_llama
from tests.helpers import run_cli
from weightdoctor.security import opcodes

# B as a word of a sentence: not a letter of a key (lora_B), a formula (‖A−B‖) or a `diff-keys A B` argument.
_SIDE_B = re.compile(r"(?<![\w.\-/−|‖`'])(?<!as )(?<!A )(?<!\d )B(?![\w\-−|‖`]|\.\w| A\b)")

# Pairs that provoke many reasons: task heads both ways, DDP and torch.compile prefixes, tied weights, legacy
# gamma/beta, stale position_ids and attention-mask buffers, vocabulary, position and label resizes, a PEFT LoRA.
_PAIRS = ("base-into-head", "head-into-base", "ddp-prefix", "compile-prefix", "vocab-resized", "positions-resized",
          "num-labels", "lora-peft", "legacy-gamma-beta", "gpt2-tied", "gpt2-bin-tied", "stale-buffers-gpt2",
          "stale-buffers-bert", "roberta-mlm-into-base", "gpt2-base-into-lm", "gpt2-lm-into-base")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pair]:
    return build_pairs(tmp_path_factory.mktemp("ux23_pairs"))


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real PEFT LoRA and its bases (own, wider, one layer), and a 2-layer Llama against a 1-layer one."""
    out = tmp_path_factory.mktemp("ux23_adapters")
    folders = build_peft_adapter(out)
    tiny_llama(0, layers=3).save_pretrained(out / "deeper")
    return {**folders, "deeper": out / "deeper"}


def _sentences(data: dict) -> list[str]:
    """Every sentence of a diff-keys JSON report a person reads: notes, warnings, each key's detail."""
    rows = [*data["missing"], *data["unexpected"], *data["mismatched"]]
    return [*data["notes"], *data["warnings"], *(row["detail"] for row in rows)]


def _said_b(texts: list[str]) -> list[str]:
    return [text for text in texts if _SIDE_B.search(text)]


def _rich_lines(result_stdout: str) -> list[str]:
    """The Rich report's lines but the header's `B` row, which names the class built."""
    return [line for line in result_stdout.splitlines() if not re.match(r"^│ B\s", line)]


def _model_class_runs(pairs: dict[str, Pair], adapters: dict[str, Path]) -> list[tuple[str, list[str]]]:
    runs = [(name, [str(pairs[name].a), "--model-class", pairs[name].model_class, "--config", str(pairs[name].b)])
            for name in _PAIRS]
    for base in ("base", "wider", "shallower"):  # a LoRA that fits, one of another width, one of another depth
        runs.append((f"peft-{base}", [str(adapters["adapter"]), "--model-class", "LlamaForCausalLM", "--config",
                                      str(adapters[base])]))
    # Another depth both ways: layer-count ("the model has 2 layers under model.layers").
    runs.append(("deeper-into-shallow", [str(adapters["deeper"]), "--model-class", "LlamaForCausalLM", "--config",
                                         str(adapters["base"])]))
    runs.append(("shallow-into-deeper", [str(adapters["base"]), "--model-class", "LlamaForCausalLM", "--config",
                                         str(adapters["deeper"])]))
    return runs


def test_no_sentence_of_a_model_class_report_says_b(pairs: dict[str, Pair], adapters: dict[str, Path]) -> None:
    said: dict[str, list[str]] = {}
    reasons: set[str] = set()
    for name, args in _model_class_runs(pairs, adapters):
        result = run_cli("diff-keys", *args, "--json")
        assert result.exit_code in (0, 1), (name, result.stderr)
        data = json.loads(result.stdout)
        assert data["mode"] == "model-class" and data["source_b"].endswith("(meta device)")
        reasons |= {row["reason"] for row in [*data["missing"], *data["unexpected"], *data["mismatched"]]}
        if found := _said_b(_sentences(data)):
            said[f"{name} --json"] = found
        result = run_cli("diff-keys", *args, "--all")
        if found := _said_b(_rich_lines(result.stdout) + result.stderr.splitlines()):
            said[name] = found
    assert not said, said
    # The runs did provoke what the sentences are about (a test that met no reason would prove nothing).
    assert {"task-head", "wrapper-prefix", "vocab-size", "position-length", "head-size", "adapter",
            "adapter-base", "layer-count"} <= reasons, reasons


def test_the_model_is_named_where_b_was(pairs: dict[str, Pair], adapters: dict[str, Path]) -> None:
    pair = pairs["head-into-base"]
    result = run_cli("diff-keys", pair.a, "--model-class", pair.model_class, "--config", pair.b)
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "B BertModel (meta device)" in text  # the header's B row names the class built
    assert "of 39 keys of the model" in text and "keys of B" not in text
    assert "a head the model lacks is dropped" in text and "not used by the model, dropped" in text
    result = run_cli("diff-keys", pairs["identical"].a, "--model-class", "BertForSequenceClassification")
    assert "A loads into the model cleanly" in " ".join(result.stdout.replace("│", " ").split())

    result = run_cli("diff-keys", pairs["vocab-resized"].a, "--model-class", "BertForSequenceClassification",
                     "--config", pairs["vocab-resized"].b, "--json")
    data = json.loads(result.stdout)
    assert data["mismatched"][0]["detail"] == "99×32 in A, 120×32 in the model"
    note = next(note for note in data["notes"] if note.startswith("the vocabulary differs"))
    assert "(99 tokens in A, 120 in the model)" in note and "or resize the model first" in note, note

    result = run_cli("diff-keys", adapters["adapter"], "--model-class", "LlamaForCausalLM", "--config",
                     adapters["base"], "--json")
    notes = json.loads(result.stdout)["notes"]
    assert any("PEFT adapter: LoRA (rank 4) on 5 modules, 5 of them in the model" in note for note in notes), notes


def test_two_checkpoints_still_say_b(pairs: dict[str, Pair]) -> None:
    pair = pairs["head-into-base"]
    result = run_cli("diff-keys", pair.a, pair.b)
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "of 39 keys of B" in text and "a head B lacks is dropped" in text and "not used by B, dropped" in text
    result = run_cli("diff-keys", pairs["vocab-resized"].a, pairs["vocab-resized"].b, "--json")
    data = json.loads(result.stdout)
    assert data["mode"] == "checkpoints" and data["mismatched"][0]["detail"] == "99×32 in A, 120×32 in B"
    assert any("(99 tokens in A, 120 in B)" in note and "resize B's model first" in note for note in data["notes"])


def test_b_is_renamed_as_a_word_only() -> None:
    from weightdoctor.diff_keys import name_side_b, reason_text

    said = name_side_b("B's config names 3 labels; not used by B, dropped. B is an adapter", "the model")
    assert said == "the model's config names 3 labels; not used by the model, dropped. The model is an adapter"
    # A key's letter, a formula's, a byte count's unit, and the `diff-keys A B` arguments a note gives stay.
    kept = ("lora_B.weight", "x.B.weight", "B_proj", "‖A−B‖/‖B‖", "|A−B|", "512 B", "diff-keys B A",
            "diff-keys A B", "the adapter as A and its base model as B)", "`B`")
    for text in kept:
        assert name_side_b(text, "the model") == text, text
    assert name_side_b("resize B's model first", "the model") == "resize the model first"
    assert name_side_b("B's model.layers.1", "the model") == "the model's model.layers.1"
    assert name_side_b("not used by B", "B") == "not used by B"
    assert reason_text("task-head").endswith("a head B lacks is dropped")
    assert reason_text("task-head", side_b="the model").endswith("a head the model lacks is dropped")


def test_convert_warnings_write_the_arrow_the_other_commands_write(tmp_path: Path) -> None:
    from fixtures.build import build_bert

    source = tmp_path / "bert"
    build_bert().save_pretrained(source)
    result = run_cli("convert", source, "-o", tmp_path / "half", "--dtype", "float16")
    assert result.exit_code == 0, result.stderr
    assert "config.json follows the cast: dtype: float32 → float16" in result.stderr, result.stderr
    assert "->" not in result.stderr + result.stdout
    # The Flax kernel rename's warning (convert --rename on a file in Flax's layout) writes the same arrow.
    from safetensors.torch import save_file

    flax = {"enc.dense.kernel": torch.zeros(4, 3), "enc.ln.scale": torch.ones(4)}
    save_file(flax, str(tmp_path / "flax.safetensors"),
              metadata={"format": "flax"})
    result = run_cli("convert", tmp_path / "flax.safetensors", "-o", tmp_path / "renamed.safetensors",
                     "--rename", "kernel=weight")
    assert result.exit_code == 0, result.stderr
    warning = next(line for line in result.stderr.splitlines() if "Flax kernel" in line)
    assert "(e.g. enc.dense.kernel → enc.dense.weight)" in warning, warning


def _nested_lists(levels: int) -> bytes:
    """{"w": [[[...]]]}, `levels` lists deep, as pickle writes nested lists."""
    return b"\x80\x02}X\x01\x00\x00\x00w" + b"]" * levels + b"a" * (levels - 1) + b"s."


def test_a_pickle_nested_too_deep_is_refused_in_the_words_of_the_other_bounds(tmp_path: Path) -> None:
    deep = tmp_path / "deep.pkl"
    deep.write_bytes(_nested_lists(2 * opcodes.MAX_OPEN_CONTAINERS))  # checked as the stack doubles
    colliding = tmp_path / "colliding.pt"
    torch.save({"w": torch.zeros(2), "d": {i * (2**61 - 1): 0 for i in range(1, 3_001)}}, colliding)
    lines = {}
    for path in (deep, colliding):
        result = run_cli("inspect", path)
        assert result.exit_code == 2, result.stdout
        [lines[path.name]] = result.stderr.strip().splitlines()
    line = lines["deep.pkl"]
    assert "cannot be parsed" not in line, line
    assert re.search(r": suspicious: deep\.pkl:pickle 1 at byte [0-9,]+: [0-9,]+ containers and marks wait on its "
                     r"stack at once \(values nested about that deep\), more than the 100,000 any checkpoint's pickle "
                     r"holds \(genuine ones hold at most 57\): ", line), line
    assert "refused there, not walked further; found before it: no globals" in line, line
    # The other bound's refusal has the same shape: what the pickle does, "more than the" bound, then why.
    assert re.search(r": suspicious: .* at byte [0-9,]+: its dicts or sets compare keys [0-9,]+ times with keys of "
                     r"the same hash, more than the [0-9,]+ bytes before it hold: ", lines["colliding.pt"])
