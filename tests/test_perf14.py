"""Round 14 of speed work on diff-keys (the DDP path): each fast path gives exactly what the plain code gave.

- `adapter_fit` answers "no adapter" from the names' folded word text (`_word_text`, which `foreign_layout` builds
  anyway) when it holds none of the words it looks for: held to the search over the names joined.
- `expert_layout` tests `.experts.` on the same two texts (and across the seam of the names joined end to end):
  held to the test on the names joined.
- `key_issues` repeats the fields of one reason shared by every key instead of transposing 10,000 equal tuples.
- The rename search stops after a prefix strip that matched every unmatched key: the next step found none and
  stopped anyway; held to the search as it was (tests/test_perf13.py keeps a copy).

Nothing here is timed: benchmarks/bench_diff_keys.py and docs/bench-diff-keys.md.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from benchmarks.bench_diff_keys import write_sparse_safetensors
from tests.helpers import run_json
from tests.test_perf13 import _pairs, _suggest_renames_before
from weightdoctor.diff_keys import (
    _ADAPTER_WORDS_FOLDED,
    _PEFT_TUNER_WORD,
    KeyIssue,
    KeySpec,
    _suggest_renames,
    _word_text,
    adapter_fit,
    expert_layout,
    foreign_layout,
    key_issues,
)

# Pieces of names that the adapter and expert checks look for, with digits that fold onto theirs (`ia2_l` and
# `c5a_kernel` read as `ia3_l` and `c3a_kernel` once folded) and near misses.
_PIECES = ("lora_A", "lora_B", "lora_magnitude_vector", "ia3_l", "ia2_l", "c3a_kernel", "c5a_kernel", "vera_lambda_b",
           "oft_r", "boft_R", "hada_w1_a", "lokr_w1", "ln_tuning_layers", "fourierft_spectrum", "hra_u", "miss_block",
           "bone_block", "randlora_lambda", "vblora_logits_A", "shira_weight", "road_theta", "trainable_tokens_delta",
           "adapters", "loras", "experts", "expert", "xperts", "loraA", "q_proj", "weight", "bias", "0", "1", "17")


def _names(rng: random.Random, count: int) -> list[str]:
    names = []
    for _ in range(count):
        parts = [rng.choice(("model", "base_model", "module", "encoder", "h"))]
        parts += [rng.choice(_PIECES) if rng.random() < 0.3 else
                  rng.choice(("layers", "mlp", "attn", str(rng.randrange(40)))) for _ in range(rng.randrange(0, 5))]
        parts.append(rng.choice(("weight", "bias", "lora_A.weight", "experts.0.w1.weight", "experts.gate_up_proj")))
        names.append(".".join(parts))
    return list(dict.fromkeys(names))


def _specs(names: list[str], rng: random.Random) -> dict[str, KeySpec]:
    return {name: KeySpec(name, (rng.choice((4, 8)), rng.choice((4, 8))), "float32") for name in names}


@pytest.mark.parametrize("seed", range(6))
def test_adapter_fit_with_the_word_text_equals_the_search_of_the_joined_names(seed: int) -> None:
    """The same whys and note on 150 generated pairs, adapters and lookalikes among them."""
    rng = random.Random(seed)
    answered = 0
    for _ in range(150):
        unexpected, missing = _names(rng, rng.randrange(0, 30)), _names(rng, rng.randrange(0, 30))
        specs_a, specs_b = _specs(unexpected, rng), _specs(missing, rng)
        text = _word_text(unexpected)
        expected = adapter_fit(specs_a, specs_b, unexpected, missing)
        assert adapter_fit(specs_a, specs_b, unexpected, missing, text) == expected
        answered += not any(map(text.__contains__, _ADAPTER_WORDS_FOLDED))
    assert answered  # the shortcut was taken


def test_a_word_folded_onto_an_adapter_word_falls_back_to_the_names() -> None:
    """`.ia2_l` folds onto `.ia3_l` and `.c5a_kernel` onto `.c3a_kernel`: the text cannot tell them apart, so the
    names themselves decide, as before (neither is an adapter's)."""
    for name in ("m.q.ia2_l.weight", "m.q.c5a_kernel"):
        text = _word_text([name])
        assert any(map(text.__contains__, _ADAPTER_WORDS_FOLDED))
        assert _PEFT_TUNER_WORD.search(name) is None
        specs = {name: KeySpec(name, (4, 4), "float32")}
        b = {"m.q.weight": KeySpec("m.q.weight", (4, 4), "float32")}
        assert adapter_fit(specs, b, [name], list(b), text) == adapter_fit(specs, b, [name], list(b)) == ({}, "")
    # A real IA3 adapter is still found through the text.
    specs = {"base_model.model.q.ia3_l": KeySpec("base_model.model.q.ia3_l", (4, 1), "float32")}
    b = {"q.weight": KeySpec("q.weight", (4, 4), "float32")}
    whys, _ = adapter_fit(specs, b, list(specs), list(b), _word_text(list(specs)))
    assert whys == adapter_fit(specs, b, list(specs), list(b))[0] and whys


@pytest.mark.parametrize("seed", range(4))
def test_expert_layout_with_the_word_texts_equals_the_joined_names(seed: int) -> None:
    rng = random.Random(100 + seed)
    found = 0
    for _ in range(150):
        unexpected, missing = _names(rng, rng.randrange(0, 20)), _names(rng, rng.randrange(0, 20))
        texts = (_word_text(unexpected), _word_text(missing))
        expected = expert_layout(unexpected, missing)
        assert expert_layout(unexpected, missing, None, texts) == expected
        assert foreign_layout(unexpected, missing, texts) == foreign_layout(unexpected, missing)
        found += bool(expected[0])
    assert found  # some pairs are expert layouts


def test_expert_word_across_the_seam_of_the_joined_names() -> None:
    """The plain test joins A's names and B's end to end: `a.` + `experts.gate_up_proj` reads `.experts.` across
    the seam, and the layout check runs (and finds top-level experts, which no name's own `.experts.` shows). The
    texts give the same answer."""
    unexpected, missing = ["experts.0.w1.weight", "a."], ["experts.gate_up_proj"]
    texts = (_word_text(unexpected), _word_text(missing))
    assert ".experts." not in texts[0] and ".experts." not in texts[1]
    whys, note = expert_layout(unexpected, missing, None, texts)
    assert (whys, note) == expert_layout(unexpected, missing)
    assert whys["experts.0.w1.weight"][0] == "expert-layout" and "fused per projection" in note


@pytest.mark.parametrize("seed", range(3))
def test_key_issues_equal_one_instance_per_key(seed: int) -> None:
    rng = random.Random(seed)
    whys_pool = [("wrapper-prefix", "error", "--rename '^module\\.='"), ("unknown", "error", ""),
                 ("buffer", "info", "re-created")]
    for _ in range(100):
        names = [f"k{i}" for i in range(rng.randrange(0, 40))]
        if rng.random() < 0.5:  # one reason for all, as equal tuples or as one tuple
            why = rng.choice(whys_pool)
            whys = [tuple(why) if rng.random() < 0.5 else why for _ in names]
        else:
            whys = [rng.choice(whys_pool) for _ in names]
        assert key_issues(names, whys) == [KeyIssue(name, *why) for name, why in zip(names, whys, strict=True)]
    with pytest.raises(ValueError, match="2 names for 1 reasons"):
        key_issues(["a", "b"], [("unknown", "error", "")])


@pytest.mark.parametrize("seed", range(6))
def test_rename_search_stopping_after_a_complete_strip_equals_the_search_as_it_was(seed: int) -> None:
    """Generated pairs, each also with every key of A under DDP's `module.` (one more step for the search):
    the same renames as the search as it was, and once it stops, no key of A is left unmatched."""
    for a, b in _pairs(200 + seed, 40):
        wrapped = {"module." + name: shape for name, shape in a.items()}
        for shapes_a, shapes_b in ((a, b), (b, a), (wrapped, b), ({"module." + n: s for n, s in b.items()}, b)):
            chosen, final, _ = _suggest_renames(shapes_a, shapes_b)
            assert chosen == _suggest_renames_before(shapes_a, shapes_b, None)
    wrapped = {f"module.layers.{i}.w": (4,) for i in range(50)}
    chosen, final, _ = _suggest_renames(wrapped, {f"layers.{i}.w": (4,) for i in range(50)})
    assert [s.flag for s in chosen] == ["--rename '^module\\.='"]
    assert set(final.values()) == {f"layers.{i}.w" for i in range(50)}


def test_ddp_pair_through_the_cli(tmp_path: Path) -> None:
    """A 300-key pair whose A has `module.` on every key: every key explained by the one rename, in the JSON."""
    specs = [(f"model.layers.{i}.{part}", (8, 8)) for i in range(60)
             for part in ("q.weight", "k.weight", "v.weight", "o.weight", "norm.weight")]
    write_sparse_safetensors(tmp_path / "b.safetensors", specs)
    write_sparse_safetensors(tmp_path / "a.safetensors", [("module." + name, shape) for name, shape in specs])
    code, data = run_json("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--json")
    assert code == 1
    assert [r["flag"] for r in data["suggested_renames"]] == ["--rename '^module\\.='"]
    assert data["matched_after_renames"] == 300
    assert {(k["reason"], k["severity"]) for k in data["missing"] + data["unexpected"]} == {("wrapper-prefix", "error")}
    assert [k["name"] for k in data["unexpected"]] == ["module." + name for name, _ in specs]
    parts = ("q.weight", "k.weight", "v.weight", "o.weight", "norm.weight")
    assert [(g["kind"], g["pattern"], g["count"]) for g in data["groups"]] == [
        *(("missing", f"model.layers.*.{part}", 60) for part in parts),
        *(("unexpected", f"module.model.layers.*.{part}", 60) for part in parts)]
