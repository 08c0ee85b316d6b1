"""C-level shortcuts of the reader and of the diff held to the plain code they replace, on crafted inputs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightdoctor.checkpoint.safetensors_format import _parse_header
from weightdoctor.diff_keys import (
    _DIFFUSERS_EVIDENCE,
    _LDM_EVIDENCE,
    KeySpec,
    _collapse_all,
    _frozen_peft_copies,
    _sd_single_file_layout,
    _sides,
    build_report,
    collapse_indices,
    raw_diff,
)
from weightdoctor.errors import CorruptCheckpoint
from weightdoctor.renames import Rename, rename_all

names = st.lists(st.sampled_from(["a", "b", "c", "d", "e.0", "e.1"]), max_size=8)


@settings(max_examples=300, deadline=2000, derandomize=True)
@given(list_a=names, list_b=names, as_dicts=st.booleans())
def test_raw_diff_is_the_set_arithmetic_in_order(list_a: list[str], list_b: list[str], as_dicts: bool) -> None:
    set_a, set_b = set(list_a), set(list_b)
    args = (dict.fromkeys(list_a), dict.fromkeys(list_b)) if as_dicts else (list_a, list_b)
    expected_a, expected_b = (list(dict.fromkeys(list_a)), list(dict.fromkeys(list_b))) if as_dicts else args
    diff = raw_diff(*args)
    assert diff.missing == [n for n in expected_b if n not in set_a]
    assert diff.unexpected == [n for n in expected_a if n not in set_b]
    assert diff.common == [n for n in expected_b if n in set_a]


@pytest.mark.parametrize("body", [
    b'{"a": ', b'{"a": {"dtype": "F32"', b'{"a": "x', b'{"a": 1,}', b'{"a": 1} x', b'{"a": -}', b'{',
])
@pytest.mark.parametrize("padding", [0, 1, 7])
def test_a_bad_header_is_named_where_its_text_ends_without_the_padding(body: bytes, padding: int) -> None:
    # json.loads reads the padded text first; its error would count the padding, so the message is the one
    # of the text without it, as before.
    try:
        json.loads(body.decode().rstrip(" "))
    except ValueError as exc:
        expected = f"header is not valid JSON ({exc})"
    with pytest.raises(CorruptCheckpoint) as caught:
        _parse_header(body + b" " * padding, "m.safetensors", 0)
    assert str(caught.value) == expected


def _spec(name: str, dtype: str, shape: tuple[int, ...] = (2,)) -> KeySpec:
    return KeySpec(name, shape, dtype)


def test_dtype_rows_skip_a_common_name_one_side_lacks() -> None:
    specs_a = {"x": _spec("x", "float32"), "y": _spec("y", "bfloat16"), "z": _spec("z", "float16")}
    specs_b = {"x": _spec("x", "float16"), "y": _spec("y", "bfloat16"), "z": _spec("z", "float16")}
    report = build_report(specs_a, specs_b, [], [], [], ["x", "y", "z"], [], source_a="A", source_b="B",
                          mode="checkpoints")
    assert [(d.name, d.dtype_a, d.dtype_b) for d in report.dtype_differences] == [("x", "float32", "float16")]
    # A common name one side lacks (not from raw_diff) is skipped, as before, and the others still compared.
    report = build_report(specs_a, specs_b, [], [], [], ["w", "x", "y"], [], source_a="A", source_b="B",
                          mode="checkpoints")
    assert [d.name for d in report.dtype_differences] == ["x"]
    assert report.matched == 3


# Digits of other scripts (Arabic-Indic, fullwidth) are \\d to the non-ASCII patterns only.
parts = st.sampled_from(["0", "12", "\u0661\u0662", "\uff11", "a", "layers", "x1", ""])


@settings(max_examples=300, deadline=2000, derandomize=True)
@given(keys=st.lists(st.lists(parts, min_size=1, max_size=4).map(".".join), max_size=8))
def test_collapse_all_equals_collapse_indices_ascii_or_not(keys: list[str]) -> None:
    assert _collapse_all(keys) == [collapse_indices(key) for key in keys]


def _frozen_reference(names: list[str]) -> set[str]:
    saved = {name.split(".modules_to_save.", 1)[0] for name in names if ".modules_to_save." in f".{name}"}
    return {name for name in names if ".original_module." in f".{name}"
            and f".{name}".split(".original_module.", 1)[0][1:] in saved}


@settings(max_examples=300, deadline=2000, derandomize=True)
@given(keys=st.lists(st.lists(st.sampled_from(["c", "modules_to_save", "original_module", "default", "w"]),
                              min_size=1, max_size=4).map(".".join), max_size=6))
def test_frozen_peft_copies_with_the_substring_shortcut(keys: list[str]) -> None:
    assert _frozen_peft_copies(keys) == _frozen_reference(keys)


@pytest.mark.parametrize(("names", "rename"), [
    (["module.a", "module.b.c"], Rename(r"^module\.", "")),  # every name has the prefix: the bulk path
    (["module.a", "b"], Rename(r"^module\.", "")),
    (["a", "b.c"], Rename("^", "model.")),
    (["module.a", "module.b"], Rename(r"^(?!(?:module)\.)", "x.")),
    ([], Rename(r"^module\.", "")),
])
def test_rename_all_equals_rename_apply(names: list[str], rename: Rename) -> None:
    assert rename_all(names, [rename]) == [rename.apply(name) for name in names]


@pytest.mark.parametrize(("unexpected", "missing"), [
    (["model.diffusion_model.input_blocks.0.0.weight"], ["down_blocks.0.resnets.0.conv1.weight"]),
    (["unet.down_blocks.0.x"], ["first_stage_model.encoder.conv_in.weight"]),
    (["model.diffusion_model.x"], ["down_blocks.0.x"]),  # words present, evidence not: no layout
    (["a.first_stage_model.encoder.w"], ["mid_block.w"]),  # LDM evidence is anchored at the start
    (["model.layers.0.w"], ["module.model.layers.0.w"]),
])
def test_sd_layout_shortcut_finds_what_the_regexes_find(unexpected: list[str], missing: list[str]) -> None:
    whys, note = _sd_single_file_layout(unexpected, missing)
    assert bool(note) == (_sides(unexpected, missing, _LDM_EVIDENCE, _DIFFUSERS_EVIDENCE) is not None)


@pytest.mark.parametrize(("raw", "refused"), [
    (b'{"a\\ud800":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}', True),  # an escape: backslash present
    (b'{"a\\u00e9":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}', False),
    (b'{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}', False),  # no backslash: the regex is skipped
])
def test_lone_surrogate_escapes_are_still_found(raw: bytes, refused: bool) -> None:
    if refused:
        with pytest.raises(CorruptCheckpoint, match="unpaired UTF-16 surrogate"):
            _parse_header(raw, "m.safetensors", 0)
    else:
        assert len(_parse_header(raw, "m.safetensors", 0)[1]) == 1
