"""diff-keys' fast paths give exactly what the plain code gives: renames as string operations, index
collapsing over joined names, the suggested renames of a large prefixed pair, and the `--json` text."""

from __future__ import annotations

import math
import re
from collections import Counter
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightdoctor.diff_keys import (
    DiffReport,
    DtypeDifference,
    KeyGroup,
    KeyIssue,
    KeySpec,
    Mismatch,
    ValueDiff,
    _collapse_all,
    _complete_strips,
    _escape,
    _explained_by_renames,
    _leading_splits,
    collapse_indices,
    diff_specs,
    group_issues,
    key_issues,
    rename_reason,
    suggest_renames,
)
from weightdoctor.findings import SEVERITIES
from weightdoctor.renames import Rename, apply_renames, literal_prefix, rename_all, strip_prefix
from weightdoctor.render.diff_keys_json import report_json
from weightdoctor.render.json import dumps_reference as dumps

FAST = settings(max_examples=300, deadline=2000, derandomize=True)

components = st.sampled_from(["module", "model", "bert", "lm_head", "cls", "0", "12", "a=b", "x\\y", "w", "",
                              "é", "٣", "layer", "weight", "(?!", "*", "a|b", "%s", '"'])
names = st.lists(components, min_size=1, max_size=5).map(".".join)


@st.composite
def prefix_renames(draw: st.DrawFn) -> Rename:
    """Renames of the shapes diff-keys suggests, plus near misses that only the regex may apply."""
    old = draw(st.lists(components, max_size=2).map(lambda parts: "".join(p + "." for p in parts)))
    new = draw(st.lists(components, max_size=2).map(lambda parts: "".join(p + "." for p in parts)))
    escaped = re.escape(old).replace("=", "\\x3d") if draw(st.booleans()) else re.escape(old)
    pattern = "^" + escaped
    if draw(st.booleans()):
        heads = draw(st.lists(components, min_size=1, max_size=2))
        pattern = f"^(?!(?:{'|'.join(re.escape(h) for h in heads)})\\.)" + escaped
    replacement = new.replace("\\", "\\\\")
    odd = draw(st.sampled_from([None, None, None, "unanchored", "class", "group"]))
    if odd == "unanchored":
        pattern = pattern.lstrip("^")
    elif odd == "class":
        pattern += "[0-9]"
    elif odd == "group":
        pattern, replacement = pattern + "(x)?", replacement + "\\g<0>"
    return Rename(pattern, replacement)


@FAST
@given(renames=st.lists(prefix_renames(), min_size=1, max_size=3), keys=st.lists(names, max_size=12))
def test_rename_all_applies_renames_as_the_regex_does(renames: list[Rename], keys: list[str]) -> None:
    expected = []
    for key in keys:
        for rename in renames:
            key = rename.apply(key)
        expected.append(key)
    assert rename_all(keys, renames) == expected


def test_literal_prefix_recognises_only_plain_prefixes() -> None:
    assert literal_prefix(Rename(r"^module\.", "")) == ("module.", "", ())
    assert literal_prefix(Rename("^", "model.")) == ("", "model.", ())
    assert literal_prefix(Rename(r"^(?!(?:lm_head|cls)\.)", "model.")) == ("", "model.", ("lm_head.", "cls."))
    assert literal_prefix(Rename(r"^a\x3db\.", "")) == ("a=b.", "", ())
    assert literal_prefix(Rename(r"^x\\y\.", "z\\\\")) == ("x\\y.", "z\\", ())
    for pattern, replacement in [(r"module\.", ""), (r"^a.b", ""), (r"^(a)", r"\1"), (r"^a", r"\n"),
                                 (r"^(?!(?:a|b)\.)c\.|d", ""), (r"^(?!(?:a)\.)(?!(?:b)\.)c", "")]:
        assert literal_prefix(Rename(pattern, replacement)) is None


def test_apply_renames_still_names_a_collision() -> None:
    with pytest.raises(Exception, match="renames map both 'module.w' and 'w' to 'w'"):
        apply_renames(["module.w", "w"], [Rename(r"^module\.", "")])


@FAST
@given(keys=st.lists(names | st.text(max_size=8), max_size=12))
def test_collapse_all_equals_collapse_indices(keys: list[str]) -> None:
    assert _collapse_all(keys) == [collapse_indices(key) for key in keys]


def _llama(layers: int, prefix: str = "") -> dict[str, KeySpec]:
    specs = {}
    for i in range(layers):
        for part, shape in [("self_attn.q_proj", (8, 8)), ("self_attn.k_proj", (4, 8)), ("mlp.up_proj", (16, 8)),
                            ("input_layernorm", (8,))]:
            name = f"{prefix}model.layers.{i}.{part}.weight"
            specs[name] = KeySpec(name, shape, "bfloat16")
    for name, shape in [("model.embed_tokens.weight", (32, 8)), ("lm_head.weight", (32, 8)),
                        ("model.norm.weight", (8,))]:
            specs[prefix + name] = KeySpec(prefix + name, shape, "bfloat16")
    return specs


@pytest.mark.parametrize(
    ("a_prefix", "b_prefix", "expected"),
    [("module.", "", [r"^module\.="]), ("_orig_mod.", "", [r"^_orig_mod\.="]), ("", "module.", ["^=module."]),
     ("module.", "_orig_mod.", [r"^module\.=_orig_mod."])],
)
def test_large_prefixed_pair_gets_the_single_prefix_rename(a_prefix: str, b_prefix: str, expected: list[str]) -> None:
    """3,000 keys: the bound skips every other candidate; the answer is the same one rename as on small pairs."""
    a, b = _llama(750, a_prefix), _llama(750, b_prefix)
    report = diff_specs(a, b)
    assert [f"{s.pattern}={s.replacement}" for s in report.suggested_renames] == expected
    assert report.suggested_renames[0].matches_gained == len(b)
    assert report.matched_after_renames == len(b)
    assert {i.reason for i in report.unexpected} == {"wrapper-prefix"}
    small = diff_specs(_llama(2, a_prefix), _llama(2, b_prefix))
    assert [(s.pattern, s.replacement) for s in small.suggested_renames] == [
        (s.pattern, s.replacement) for s in report.suggested_renames]


def test_large_pair_spares_the_head_when_adding_a_prefix() -> None:
    """A bare base model into a task model: `model.` added to everything but the head keys."""
    a = {n.removeprefix("model."): s._replace(name=n.removeprefix("model.")) for n, s in _llama(300).items()}
    b = {"model." + n if n != "lm_head.weight" else n: s for n, s in a.items()}
    report = diff_specs(a, b)
    assert [(s.pattern, s.replacement) for s in report.suggested_renames] == [(r"^(?!(?:lm_head)\.)", "model.")]
    assert report.matched_after_renames == len(b)


@st.composite
def prefixed_pairs(draw: st.DrawFn) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """B's keys, and A: most of them under a prefix (some already matching, some reshaped), plus strays."""
    keys_b = draw(st.lists(names, min_size=1, max_size=10, unique=True))
    shapes_b = {name: (draw(st.integers(1, 3)),) for name in keys_b}
    prefix = draw(st.sampled_from(["module.", "module.model.", "a=b.", "model.", "_orig_mod.module."]))
    shapes_a: dict[str, tuple[int, ...]] = {}
    for name, shape in shapes_b.items():
        form = draw(st.sampled_from(["prefixed", "prefixed", "prefixed", "same", "reshaped", "dropped"]))
        if form == "prefixed":
            shapes_a[prefix + name] = shape
        elif form == "same":
            shapes_a[name] = shape
        elif form == "reshaped":
            shapes_a[prefix + name] = (shape[0] + 1,)
    for name in draw(st.lists(names, max_size=3)):
        shapes_a.setdefault(draw(st.sampled_from(["", prefix])) + name, (2,))
    if draw(st.booleans()):  # B also holds the keys under another prefix, some shapes only there
        for name in keys_b:
            shapes_b.setdefault("enc." + name, (draw(st.integers(1, 3)),))
    if draw(st.booleans()):  # a key that A and B both hold under the prefix: stripping it unmatches it
        shapes_a[prefix + "kept"] = shapes_b[prefix + "kept"] = (1,)
    return shapes_a, shapes_b


@FAST
@given(pair=prefixed_pairs())
def test_complete_strip_shortcut_suggests_what_the_full_search_suggests(
        pair: tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]) -> None:
    """The shortcut that stops at a prefix strip matching every unmatched key changes no suggestion."""
    shapes_a, shapes_b = pair
    fast = suggest_renames(shapes_a, shapes_b)
    with patch("weightdoctor.diff_keys._complete_strips", return_value=[]):
        full = suggest_renames(shapes_a, shapes_b)
    assert fast == full


@FAST
@given(pair=prefixed_pairs(), ok=st.lists(names, max_size=3))
def test_counting_gains_in_bulk_suggests_what_the_key_by_key_loop_suggests(
        pair: tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]], ok: list[str]) -> None:
    shapes_a, shapes_b = pair
    already_ok = {name for name in shapes_a if name.split(".")[-1] in ok}
    fast = suggest_renames(shapes_a, shapes_b, already_ok)
    with patch("weightdoctor.diff_keys._gains_if_none_lost", return_value=None):
        plain = suggest_renames(shapes_a, shapes_b, already_ok)
    assert fast == plain


def _complete_strips_by_votes(unmatched: list[str], targets: set[str]) -> list[Rename]:
    """`_complete_strips` as it was: every sampled name votes for its leading prefixes that leave a target."""
    votes = Counter(prefix for name in unmatched for prefix, rest in _leading_splits(name)
                    if prefix and rest in targets)
    renames = [strip_prefix(old) if "=" not in old else Rename("^" + _escape(old), "")
               for old, count in votes.items() if count == len(unmatched)]
    return sorted(renames, key=lambda rename: (len(rename.pattern), rename.pattern))


@FAST
@given(unmatched=st.lists(names, max_size=8), targets=st.sets(names, max_size=8),
       prefix=st.sampled_from(["", "module.", "a=b.", "module.model.", "x.y.z.w."]))
def test_complete_strips_equal_the_vote_count(unmatched: list[str], targets: set[str], prefix: str) -> None:
    unmatched = [prefix + name for name in unmatched]
    targets |= {name[len(prefix):] for name in unmatched[::2]}
    literals: dict[Rename, tuple[str, str, tuple[str, ...]]] = {}
    strips = _complete_strips(unmatched, targets, literals)
    assert strips == _complete_strips_by_votes(unmatched, targets)
    assert all(literal_prefix(rename) == literals[rename] for rename in strips)


def test_a_strip_that_matches_only_some_keys_leaves_the_choice_to_the_full_search() -> None:
    """Stripping `module.` matches x only (y's shape differs); `module.` -> `enc.` matches both and wins."""
    a = {"module.x": (2,), "module.y": (3,)}
    b = {"x": (2,), "y": (2,), "enc.x": (2,), "enc.y": (3,)}
    [suggestion] = suggest_renames(a, b)
    assert (suggestion.pattern, suggestion.replacement, suggestion.matches_gained) == (r"^module\.", "enc.", 2)


def test_complete_strip_shortcut_is_taken_for_a_ddp_prefix() -> None:
    """`module.` on every key: one rename, found by the shortcut (the full search is never entered)."""
    a = {"module." + n: s.shape for n, s in _llama(40).items()}
    b = {n: s.shape for n, s in _llama(40).items()}
    with patch("weightdoctor.diff_keys._candidate_renames", side_effect=AssertionError("full search")):
        [suggestion] = suggest_renames(a, b)
    assert (suggestion.pattern, suggestion.replacement, suggestion.matches_gained) == (r"^module\.", "", len(b))


def _report_with(names_a: list[str], names_b: list[str]) -> DiffReport:
    a = {n: KeySpec(n, (2,), "float32") for n in names_a}
    b = {n: KeySpec(n, (2,) if i % 7 else (3,), "bfloat16" if i % 5 == 0 else "float32")
         for i, n in enumerate(names_b)}
    return diff_specs(a, b)


@pytest.mark.parametrize("odd", ['quote"d', "back\\slash", "per%cent %s", "uni\u00e9\u4e2d", "ctl\x01",
                                 "\ue000rows:missing\ue000", "line\nbreak", "tab\t"])
def test_report_json_is_byte_identical_to_the_generic_json(odd: str) -> None:
    names_b = [f"encoder.layer.{i}.{odd}.weight" for i in range(80)] + [f"head.{i}" for i in range(40)]
    names_a = [f"module.{n}" for n in names_b[:60]] + names_b[60:100] + [f"{odd}.{i}" for i in range(50)]
    report = _report_with(names_a, names_b)
    assert len(report.missing) >= 32 and len(report.unexpected) >= 32 and report.dtype_differences
    report.values = [ValueDiff(f"w{i}", i % 2 == 0, float(i) / 3, [math.nan, math.inf, 0.5][i % 3], "float32",
                               "bfloat16") for i in range(40)]
    report.notes = [odd] * 40
    assert report_json(report) == dumps(report)


@pytest.mark.parametrize("odd", ['quote"d', "per%cent %s", "uni\u00e9\u4e2d", "ctl\x01"])
def test_report_json_writes_constant_columns_once_byte_identically(odd: str) -> None:
    # Every key explained by one rename (reason, severity and detail the same in every row), and rows
    # that are all alike (no column varies): the template-folding paths of `_rows_text`.
    names_b = [f"encoder.layer.{i}.{odd}.weight" for i in range(80)]
    report = _report_with([f"module.{n}" for n in names_b], names_b)
    assert {(i.reason, i.severity, i.detail) for i in report.missing + report.unexpected} == {
        ("wrapper-prefix", "error", "--rename '^module\\.='")}
    report.values = [ValueDiff(odd, True, 0.0, 0.0, "float32", "float32")] * 40
    report.layers_changed_most = []
    assert report_json(report) == dumps(report)


def test_report_json_on_small_and_empty_reports() -> None:
    report = _report_with(["a", "b"], ["a", "c"])
    assert report_json(report) == dumps(report)
    empty = _report_with([], [])
    assert report_json(empty) == dumps(empty)


def _groups_plain(report: DiffReport, max_groups_per_reason: int = 6) -> list[KeyGroup]:
    """`group_issues` as it was before it counted a kind with one reason and severity by pattern alone."""
    kinds = ["missing"] * len(report.missing) + ["unexpected"] * len(report.unexpected)
    kinds += ["mismatched"] * len(report.mismatched) + ["dtype"] * len(report.dtype_differences)
    keyed = [*report.missing, *report.unexpected, *report.mismatched]
    names = [k.name for k in keyed] + [d.name for d in report.dtype_differences]
    reasons = [k.reason for k in keyed] + [f"{d.dtype_a}→{d.dtype_b}" for d in report.dtype_differences]
    severities = [k.severity for k in keyed] + [d.severity for d in report.dtype_differences]
    keys = list(zip(kinds, reasons, severities, map(collapse_indices, names), strict=True))
    counts = Counter(keys)
    examples = dict(zip(reversed(keys), reversed(names), strict=True))
    buckets: dict[tuple[str, str, str], dict[str, tuple[int, str]]] = {}
    for key in dict.fromkeys(keys):
        buckets.setdefault(key[:3], {})[key[3]] = (counts[key], examples[key])
    groups: list[KeyGroup] = []
    for (kind, reason, severity), by_pattern in buckets.items():
        if len(by_pattern) > max_groups_per_reason:
            longest = max(p.count(".") + 1 for p in by_pattern)
            for depth in range(longest - 1, 0, -1):
                merged: dict[str, tuple[int, str]] = {}
                for pattern, (count, example) in by_pattern.items():
                    parts = pattern.split(".")
                    key = ".".join(parts[:depth]) + ".*" if len(parts) > depth else pattern
                    total, first = merged.get(key, (0, example))
                    merged[key] = (total + count, first)
                if len(merged) <= max_groups_per_reason or depth == 1:
                    by_pattern = merged
                    break
        groups += [KeyGroup(kind, p, count, reason, severity, example) for p, (count, example) in by_pattern.items()]
    return groups


@FAST
@given(missing=st.lists(st.tuples(names, st.sampled_from(["renamed", "wrapper-prefix"]), st.sampled_from(SEVERITIES)),
                        max_size=20),
       unexpected=st.lists(st.tuples(names, st.sampled_from(["renamed", "unknown"]), st.sampled_from(["error"])),
                           max_size=20),
       mismatched=st.lists(names, max_size=4), dtypes=st.lists(names, max_size=4))
def test_group_issues_equals_the_plain_grouping(
    missing: list[tuple[str, str, str]], unexpected: list[tuple[str, str, str]], mismatched: list[str],
    dtypes: list[str],
) -> None:
    report = _report_with([], [])
    report.missing = [KeyIssue(n, r, s, "") for n, r, s in missing]
    report.unexpected = [KeyIssue(n, r, s, "") for n, r, s in unexpected]
    report.mismatched = [Mismatch(n, [1], [2], "shape", "error") for n in mismatched]
    report.dtype_differences = [DtypeDifference(n, "float32", "bfloat16", "warn") for n in dtypes]
    assert group_issues(report) == _groups_plain(report)
    assert group_issues(report, 2) == _groups_plain(report, 2)


def _explained_plain(unexpected: list[str], renames: list[Rename], names_b: set[str]) -> dict[str, tuple]:
    """The plain loop `build_report` used before `_explained_by_renames`: one key and one step at a time."""
    by_rename: dict[str, tuple] = {}
    whys = [(*rename_reason(r), r.as_flag()) for r in renames]
    for old in unexpected:
        new = old
        for rename, why in zip(renames, whys, strict=True):
            step = rename.apply(new)
            if step != new:
                by_rename.setdefault(old, why)
            new = step
        if old in by_rename and new in names_b:
            by_rename[new] = by_rename[old]
        else:
            by_rename.pop(old, None)
    return by_rename


@FAST
@given(renames=st.lists(prefix_renames(), max_size=3), keys_a=st.lists(names, max_size=12, unique=True),
       keys_b=st.lists(names, max_size=12, unique=True))
def test_explained_by_renames_equals_the_plain_loop(renames: list[Rename], keys_a: list[str],
                                                    keys_b: list[str]) -> None:
    keys_b = list(dict.fromkeys(keys_b + rename_all(keys_a, renames)[::2]))  # some keys land on B's
    unexpected = [k for k in keys_a if k not in keys_b]
    specs_b = {n: KeySpec(n, (1,), "float32") for n in keys_b}
    expected = _explained_plain(unexpected, renames, set(keys_b))
    assert _explained_by_renames(unexpected, renames, specs_b) == expected


def test_explained_by_renames_names_the_first_rename_that_moved_each_key() -> None:
    renames = [Rename(r"^module\.", ""), Rename(r"LayerNorm\.gamma", "LayerNorm.weight")]
    unexpected = ["module.a.LayerNorm.gamma", "module.b.weight", "c.LayerNorm.gamma", "module.gone"]
    specs_b = {n: KeySpec(n, (1,), "float32") for n in ["a.LayerNorm.weight", "b.weight", "c.LayerNorm.weight"]}
    found = _explained_by_renames(unexpected, renames, specs_b)
    assert found == _explained_plain(unexpected, renames, set(specs_b))
    assert {name: why[0] for name, why in found.items()} == {
        "module.a.LayerNorm.gamma": "wrapper-prefix", "a.LayerNorm.weight": "wrapper-prefix",
        "module.b.weight": "wrapper-prefix", "b.weight": "wrapper-prefix",
        "c.LayerNorm.gamma": "legacy-name", "c.LayerNorm.weight": "legacy-name"}


@FAST
@given(rows=st.lists(st.tuples(names, st.text(max_size=4), st.sampled_from(SEVERITIES), st.text(max_size=4)),
                     max_size=20))
def test_key_issues_equal_those_built_one_by_one(rows: list[tuple[str, str, str, str]]) -> None:
    built = key_issues([r[0] for r in rows], [r[1:] for r in rows])
    expected = [KeyIssue(*r) for r in rows]
    assert built == expected
    assert [hash(i) for i in built] == [hash(i) for i in expected]
    assert [repr(i) for i in built] == [repr(i) for i in expected]
    assert all(type(i) is KeyIssue for i in built)
    if built:
        with pytest.raises(AttributeError):
            built[0].name = "x"  # type: ignore[misc]


def test_key_issues_refuses_unequal_columns() -> None:
    with pytest.raises(ValueError, match="2 names for 1 reasons"):
        key_issues(["a", "b"], [("unknown", "error", "")])
