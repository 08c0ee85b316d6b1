"""Round 13 of speed work on diff-keys: each fast path gives exactly what the plain code gave.

- The rename search (`_suggest_renames`) picks the keys a rename changes as three lists in step, with C-level
  loops, and keeps the final names it computes: held to the search as it was (copied below) on generated key sets
  (DDP, torch.compile, PEFT and Lightning prefixes, component renames, legacy names, spared heads, dropped and
  resized keys), and its final names and longest name to `rename_all`'s, rename by rename.
- `_collides` without a merged copy when a rename changes every key: held to the merged copy.
- `diff_checkpoints` tells "is any key unknown" from the report's groups: held to the pass over every key.
- The reader's per-file checks (long names, the ema_pytorch state, a TRL value head) run over one list of names:
  held to the per-entry passes they replace, and the words a user reads are unchanged.

Nothing here is timed: benchmarks/bench_diff_keys.py and docs/bench-diff-keys.md.
"""

from __future__ import annotations

import json
import random
import re
import struct
from collections.abc import Mapping, Sequence
from itertools import compress, filterfalse, repeat
from operator import eq, not_
from pathlib import Path

import pytest

from tests.helpers import run_json
from weightdoctor.checkpoint import open_checkpoint, reader
from weightdoctor.diff_keys import (
    KeySpec,
    Rename,
    SuggestedRename,
    _candidate_renames,
    _collides,
    _complete_strips,
    _escape,
    _frozen_peft_copies,
    _head_words,
    _other_head,
    _simpler,
    _suggest_renames,
    diff_specs,
    suggest_renames,
)
from weightdoctor.renames import rename_all


def _collides_before(current: Mapping[str, str], proposal: Mapping[str, str]) -> bool:
    merged = {**current, **proposal}
    return len(set(merged.values())) != len(merged)


def _gains_before(
    changed: Sequence[tuple[str, str, str]], shapes_a: Mapping[str, tuple[int, ...]],
    shapes_b: Mapping[str, tuple[int, ...]], ok: set[str],
) -> int | None:
    if not changed:
        return 0
    keys, names, renamed = zip(*changed, strict=True)
    if any(map(shapes_b.__contains__, names)) or not ok.isdisjoint(keys):
        return None
    return sum(map(eq, map(shapes_b.get, renamed), map(tuple, map(shapes_a.__getitem__, keys))))


def _suggest_renames_before(
    shapes_a: Mapping[str, tuple[int, ...]],
    shapes_b: Mapping[str, tuple[int, ...]],
    already_ok: set[str] | None = None,
    max_renames: int = 6,
) -> list[SuggestedRename]:
    """`suggest_renames` as it was before round 13 (verbatim but for the names it calls)."""
    ok = already_ok or set()
    current: dict[str, str] = {name: name for name in shapes_a}
    chosen: list[SuggestedRename] = []
    # PEFT's modules_to_save keeps the module as it was (`classifier.original_module.*`, frozen) beside the copy
    # that trained (`classifier.modules_to_save.default.*`), which merge_and_unload keeps: the frozen copy
    # matching B is no evidence, or the simpler rename onto it would hand back the untrained head.
    frozen = _frozen_peft_copies(shapes_a)

    # Prefix renames as plain strings (old prefix, new prefix, prefixes spared): same result as the regex.
    literals: dict[Rename, tuple[str, str, tuple[str, ...]]] = {}

    def changes(rename: Rename) -> list[tuple[str, str, str]]:
        """(key of A, its current name, its name after `rename`) for every key `rename` changes."""
        literal = literals.get(rename)
        if literal is None:
            sub = re.compile(rename.pattern).sub  # as Rename.apply does, compiled once
            replacement = rename.replacement
            return [(name, new, renamed) for name, new in current.items()
                    if (renamed := sub(replacement, new, count=1)) != new]
        old_prefix, new_prefix, spared = literal
        if old_prefix == new_prefix:
            return []  # every name it touches keeps its name
        cut = len(old_prefix)
        return [(name, new, new_prefix + new[cut:]) for name, new in current.items()
                if new.startswith(old_prefix) and not (spared and new.startswith(spared))]

    def evaluate(rename: Rename) -> tuple[int, list[str], dict[str, str]]:
        """(matches gained, keys it would unmatch, old -> new for the keys it changes)."""
        gained, lost = 0, []
        literal = literals.get(rename)
        # A prefix rename between prefixes that hold no head word cannot move a key to another head.
        heads_unchanged = literal is not None and not any(
            (prefix and not prefix.endswith(".")) or _head_words(prefix) for prefix in literal[:2])
        changed = changes(rename)
        proposal = {name: renamed for name, _, renamed in changed}
        if heads_unchanged and not frozen and (
                gains := _gains_before(changed, shapes_a, shapes_b, ok)) is not None:
            return gains, lost, proposal
        for name, new, renamed in changed:
            if name in frozen:
                continue
            if new in shapes_b or name in ok:  # matched before
                if renamed not in shapes_b:
                    lost.append(name)
            # One head moved onto another (`pooler.dense` -> `cls.predictions.transform.dense`) is a lookalike,
            # not evidence: heads differ between tasks by design.
            elif shapes_b.get(renamed) == tuple(shapes_a[name]) and (  # same name and shape as B's
                    heads_unchanged or not _other_head(new, renamed)):
                gained += 1
        return gained, lost, proposal

    for _ in range(max_renames):
        # The keys whose current name is none of B's (and not already counted as matched), in order.
        unmatched = list(compress(current, map(not_, map(shapes_b.__contains__, current.values()))))
        if ok:
            unmatched = list(filterfalse(ok.__contains__, unmatched))
        if not unmatched:
            break
        taken = set(current.values())
        targets = set(filterfalse(taken.__contains__, shapes_b))  # B's names no key has, in B's order
        if not targets:
            break
        best: tuple[int, Rename, dict[str, str]] | None = None
        unmatched_names = list(map(current.__getitem__, unmatched))
        # A prefix strip that matches every unmatched key, unmatches none and maps no two keys to one name
        # cannot be beaten: no rename gains more, and none is simpler (it adds nothing; the simplest such
        # strip is tried first). Found, it spares building the index of every target that ranks the other
        # candidates (a DDP `module.` on 10,000 keys: half the search). A strip that would unmatch keys
        # could have a simpler sparing variant: then the full search decides.
        for rename in _complete_strips(unmatched_names, targets, literals):
            gained, lost, proposal = evaluate(rename)
            if lost:
                break
            if gained == len(unmatched) and not _collides_before(current, proposal):
                best = (gained, rename, proposal)
                break
        # Prefix and legacy renames first; only when none helps, rename or drop one component.
        for structural in (False, True) if best is None else ():
            candidates = _candidate_renames(unmatched_names, targets, structural=structural, literals=literals)
            for candidate in candidates:
                rename = candidate
                if best is not None:
                    # A rename gains at most the unmatched keys it matches: skip those that cannot beat the
                    # best so far (their spared variants below have longer patterns, so they cannot either).
                    literal = literals.get(rename)
                    if literal is not None:
                        bound = sum(map(str.startswith, unmatched_names, repeat(literal[0])))
                    else:
                        bound = sum(1 for _ in filter(re.compile(rename.pattern).search, unmatched_names))
                    if bound < best[0] or (bound == best[0] and not _simpler(rename, best[1])):
                        continue
                gained, lost, proposal = evaluate(rename)
                if lost and rename.pattern.startswith("^") and not rename.pattern.startswith("^(?!"):
                    # Spare the keys it would break: `^(?!lm_head\.)` -> `model.` leaves `lm_head.weight` alone.
                    heads = sorted({current[n].split(".", 1)[0] for n in lost})
                    if len(heads) <= 4:
                        spared = "|".join(_escape(h) for h in heads)
                        literal = literals.get(rename)
                        rename = Rename(f"^(?!(?:{spared})\\.)" + rename.pattern[1:], rename.replacement)
                        if literal is not None:
                            literals[rename] = (literal[0], literal[1], tuple(h + "." for h in heads))
                        gained, lost, proposal = evaluate(rename)
                if lost or gained == 0 or _collides_before(current, proposal):
                    continue
                if best is None or gained > best[0] or (
                    gained == best[0] and _simpler(rename, best[1])
                ):
                    best = (gained, rename, proposal)
            if best is not None:
                break
        if best is None:
            break
        gained, rename, proposal = best
        current.update(proposal)
        chosen.append(SuggestedRename(rename.pattern, rename.replacement, rename.as_flag(), gained))
    return chosen




# ---------------------------------------------------------------------------------------------------------------
# Generated key sets: a model's keys (B) and a copy of them as a training script may have saved them (A).

_HEADS = ("lm_head", "classifier", "score", "pooler")


def _model_keys(rng: random.Random) -> dict[str, tuple[int, ...]]:
    base = rng.choice(["model", "transformer", "bert", ""])
    layer = rng.choice(["layers", "h", "layer", "blocks"])
    attn = rng.choice(["self_attn", "attention", "attn"])
    hidden = rng.choice([4, 6, 8])
    keys: dict[str, tuple[int, ...]] = {}
    lead = f"{base}." if base else ""
    keys[f"{lead}embed_tokens.weight"] = (32, hidden)
    for i in range(rng.randrange(1, 14)):
        for part, shape in ((f"{attn}.q_proj.weight", (hidden, hidden)),
                            (f"{attn}.k_proj.weight", (hidden, hidden)),
                            ("mlp.up_proj.weight", (2 * hidden, hidden)),
                            ("mlp.down_proj.weight", (hidden, 2 * hidden)),
                            ("input_layernorm.weight", (hidden,)), ("input_layernorm.bias", (hidden,))):
            if rng.random() < 0.9:
                keys[f"{lead}{layer}.{i}.{part}"] = shape
    keys[f"{lead}norm.weight"] = (hidden,)
    for head in rng.sample(_HEADS, rng.randrange(0, 3)):
        keys[f"{head}.weight"] = (rng.choice([2, 3, 32]), hidden)
    return keys


def _saved_as(rng: random.Random, keys: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """B's keys with one to three of the changes saving code makes (a wrapper's prefix, a base prefix stripped or
    added, a component renamed, legacy names, keys dropped or resized, LoRA pairs, PEFT's modules_to_save)."""
    items = list(keys.items())
    for _ in range(rng.randrange(1, 4)):
        change = rng.randrange(12)
        if change == 0:
            items = [("module." + n, s) for n, s in items]
        elif change == 1:
            items = [("_orig_mod." + n, s) for n, s in items]
        elif change == 2:
            items = [("base_model.model." + n, s) for n, s in items]
        elif change == 3:  # a base prefix stripped from the body, the heads kept
            items = [(n.split(".", 1)[1] if "." in n and not n.startswith(_HEADS) else n, s) for n, s in items]
        elif change == 4:  # a base prefix added to the body only (the head spared)
            items = [(n if n.startswith(_HEADS) else "model." + n, s) for n, s in items]
        elif change == 5:
            old, new = rng.choice([("q_proj", "query"), ("self_attn", "attention"), ("mlp", "ffn"), ("h", "layers")])
            items = [(re.sub(rf"(?<![^.]){old}(?![^.])", new, n), s) for n, s in items]
        elif change == 6:
            items = [(n.replace("layernorm.weight", "layernorm.gamma").replace("layernorm.bias", "layernorm.beta"), s)
                     for n, s in items]
        elif change == 7:
            items = [(n, s) for n, s in items if rng.random() < 0.8]
        elif change == 8:
            items = [(n, tuple(d + 1 for d in s) if rng.random() < 0.2 else s) for n, s in items]
        elif change == 9:
            items += [(n.replace(".weight", ".lora_A.weight"), (2, s[-1])) for n, s in items if "q_proj" in n]
        elif change == 10:
            items = [(n.replace("lm_head.", "lm_head.original_module.") if n.startswith("lm_head.") else n, s)
                     for n, s in items] + [("lm_head.modules_to_save.default.weight", s)
                                           for n, s in items if n == "lm_head.weight"]
        else:  # "model." prefix for everything but one head, as Lightning's wrapper on a spared head
            items = [("model." + n if rng.random() < 0.95 else n, s) for n, s in items]
    return dict(items)


def _pairs(seed: int, count: int) -> list[tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        b = _model_keys(rng)
        pairs.append((_saved_as(rng, b), b))
    return pairs


@pytest.mark.parametrize("seed", range(8))
def test_rename_search_equals_the_search_as_it_was(seed: int) -> None:
    """The same renames, flags and gains as before, on 60 generated pairs each way round, with and without keys
    counted as matched already; the final names are rename_all's, and the longest name its steps' longest."""
    searched = 0
    for a, b in _pairs(seed, 60):
        for shapes_a, shapes_b in ((a, b), (b, a)):
            for ok in (None, set(list(shapes_a)[::7])):
                chosen, final, longest = _suggest_renames(shapes_a, shapes_b, ok)
                assert chosen == _suggest_renames_before(shapes_a, shapes_b, ok)
                assert chosen == suggest_renames(shapes_a, shapes_b, ok)
                steps = [Rename(s.pattern, s.replacement) for s in chosen]
                assert list(final) == list(shapes_a)
                assert list(final.values()) == rename_all(list(shapes_a), steps)
                stages = [list(shapes_a)]
                for step in steps:
                    stages.append(rename_all(stages[-1], [step]))
                assert longest == max(len(name) for stage in stages for name in stage)
                searched += bool(chosen)
    assert searched > 100  # most pairs need a rename: the search ran, not only its early exits


def test_rename_search_on_the_benchmark_shapes() -> None:
    """A DDP `module.` on every key of 10,000 (the bench's pair), and the same with a few keys spared."""
    b = {f"model.layers.{i // 9}.p{i % 9}.weight": (i % 5 + 1, 4) for i in range(10_000)}
    b["lm_head.weight"] = (32, 4)
    for a in ({"module." + n: s for n, s in b.items()},
              {("module." + n if i % 1000 else n): s for i, (n, s) in enumerate(b.items())}):
        chosen, final, _ = _suggest_renames(a, b)
        assert chosen == _suggest_renames_before(a, b)
        assert list(final.values()) == rename_all(list(a), [Rename(s.pattern, s.replacement) for s in chosen])
    assert chosen[0].flag == "--rename '^module\\.='"


def test_collides_equals_the_merged_copy() -> None:
    rng = random.Random(13)
    for _ in range(500):
        current = {f"k{i}": rng.choice("abcdefgh") + str(i % 3) for i in range(rng.randrange(0, 8))}
        picked = [k for k in current if rng.random() < 0.7] if rng.random() < 0.5 else list(current)
        proposal = {k: rng.choice("abcdefgh") + rng.choice("012") for k in picked}
        assert _collides(current, proposal) == _collides_before(current, proposal)


@pytest.mark.parametrize("seed", range(3))
def test_unknown_from_groups_equals_the_pass_over_every_key(seed: int) -> None:
    """`diff_checkpoints` asks whether any missing or unexpected key is unknown: its groups tell the same."""
    told = 0
    for a, b in _pairs(100 + seed, 40):
        specs_a = {n: KeySpec(n, s, "float32") for n, s in a.items()}
        specs_b = {n: KeySpec(n, s, "float32") for n, s in b.items()}
        report = diff_specs(specs_a, specs_b)
        by_keys = "unknown" in [i.reason for i in report.missing] or "unknown" in [i.reason for i in report.unexpected]
        by_groups = any(g.reason == "unknown" and g.kind in ("missing", "unexpected") for g in report.groups)
        assert by_groups == by_keys
        told += by_keys
    assert told  # both answers occur


def test_matched_after_renames_counts_the_renamed_keys() -> None:
    """`matched_after_renames`, taken from the search's own final names, counts what rename_all's names match."""
    for a, b in _pairs(7, 80):
        specs_a = {n: KeySpec(n, s, "float32") for n, s in a.items()}
        specs_b = {n: KeySpec(n, s, "float32") for n, s in b.items()}
        report = diff_specs(specs_a, specs_b)
        if not report.suggested_renames:
            assert report.matched_after_renames is None
            continue
        fixed = rename_all(list(a), [Rename(s.pattern, s.replacement) for s in report.suggested_renames])
        assert report.matched_after_renames == sum(b.get(new) == a[old] for old, new in zip(a, fixed, strict=True))


# ---------------------------------------------------------------------------------------------------------------
# The reader's per-file checks over one list of names.


def _write(path: Path, names: list[str]) -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    for i, name in enumerate(names):
        header[name] = {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * (4 * len(names)))


def _ema_note_before(names: list[str]) -> bool:
    if len(names) < 3 or not any(name == "initted" for name in names):
        return False
    rest = set(names) - {"initted", "step"}
    return "step" in names and all(name.startswith("ema_model.") for name in rest)


@pytest.mark.parametrize("seed", range(4))
def test_reader_notes_equal_the_per_entry_passes(tmp_path: Path, seed: int) -> None:
    """The ema_pytorch note and the TRL value-head warning, on generated files, are said exactly when the old
    per-entry tests said them, in the same words."""
    rng = random.Random(seed)
    said = {"ema": 0, "v_head": 0}
    for case in range(25):
        pool = ["initted", "step", "ema_model.w", "ema_model.b", "online_model.w", "v_head.summary.weight",
                "v_head.summary.bias", "model.embed.weight", "transformer.wte.weight", "lm_head.weight", "x.v_head.w"]
        names = rng.sample(pool, rng.randrange(1, len(pool)))
        if rng.random() < 0.4:  # an ema_pytorch state, maybe with one name too many
            names = ["initted", "step", "ema_model.w", "ema_model.b", *rng.sample(pool, rng.randrange(0, 2))]
        names = list(dict.fromkeys(names))
        path = tmp_path / f"c{case}.safetensors"
        _write(path, names)
        code, report = run_json("inspect", str(path), "--json")
        assert code == 0, report
        text = json.dumps(report)
        ema = _ema_note_before(names)
        assert ("an ema_pytorch EMA's state (initted and step" in text) == ema, names
        value_head = sorted(n for n in names if n.startswith("v_head."))
        trl = bool(value_head) and any(n.startswith(("transformer.", "model.", "lm_head.")) for n in names)
        assert (f"a TRL value head ({', '.join(value_head[:2])}) beside the language model" in text) == trl, names
        said["ema"] += ema
        said["v_head"] += trl
    assert all(said.values())


def test_a_long_name_among_short_ones_is_refused_naming_the_first(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The long-name check as one max over the names: the first name over the limit is named, in file order."""
    monkeypatch.setattr(reader, "MAX_NAME_CHARS", 40)
    path = tmp_path / "long.safetensors"
    names = ["a.w", "b" * 41, "c" * 50, "d.w"]
    _write(path, names)
    from weightdoctor.errors import CorruptCheckpoint

    with pytest.raises(CorruptCheckpoint) as caught:
        open_checkpoint(path)
    assert caught.value.message.startswith(f"tensor name {'b' * 41!r}... is 41 characters long (the limit is 40)")
    _write(path, ["a.w", "b" * 40])
    with open_checkpoint(path) as checkpoint:
        assert [t.name for t in checkpoint.tensors] == ["a.w", "b" * 40]
