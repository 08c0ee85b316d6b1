"""The reader's fast header path (used by diff-keys and every structure-only command) against the slow one.

`_checked_entries_fast` checks a safetensors header column by column and builds the `TensorInfo`s in
bulk; `_checked_entries` checks entry by entry and names the first bad one. Whatever the header, they
must reach the same verdict and, when it is accepted, the same tensors.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightdoctor.checkpoint.model import TensorInfo, tensor_infos
from weightdoctor.checkpoint.safetensors_format import (
    _check_names,
    _checked_entries,
    _checked_entries_fast,
    _colons_prove_no_duplicates,
    _may_hide_duplicates,
    read_header,
)
from weightdoctor.errors import CorruptCheckpoint

SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1, "BOOL": 1, "F64": 8, "F4": 0.5, "F6_E2M3": 0.75}


def _slow_verdict(header: dict[str, Any], data_size: int) -> list[TensorInfo] | str:
    try:
        return _checked_entries(header, "x.safetensors", data_size)
    except CorruptCheckpoint as exc:
        return str(exc)


def _assert_same(header: dict[str, Any], data_size: int) -> None:
    slow = _slow_verdict(header, data_size)
    fast = _checked_entries_fast(header, "x.safetensors", data_size)
    if isinstance(slow, str):
        assert fast is None, slow
    else:
        assert fast == slow
        assert [(t.num_params, t.nbytes, t.storage_id) for t in fast] == [
            (t.num_params, t.nbytes, t.storage_id) for t in slow]


scalars = st.none() | st.booleans() | st.integers(-3, 2**66) | st.floats(allow_nan=False) | st.text(max_size=4)
odd_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6)


@st.composite
def headers(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    """Mostly consistent headers (contiguous offsets, right sizes) with a few things bent out of shape."""
    count = draw(st.integers(0, 6))
    clean = draw(st.booleans())  # half the headers are valid, so that both verdicts are well exercised
    header: dict[str, Any] = {}
    offset = 0
    for i in range(count):
        if clean:
            dtype = draw(st.sampled_from(list(SIZES)))
            shape: Any = draw(st.lists(st.integers(0, 4), max_size=3))
            numel = 1
            for dim in shape:
                numel *= dim
            nbytes = int(numel * SIZES[dtype])
            if dtype == "F4" and numel % 2:
                shape, nbytes = [*shape, 2], numel  # whole bytes only
            header[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            continue
        dtype = draw(st.sampled_from([*SIZES, "XX", 3, ["F32"], None]))
        shape = draw(st.lists(st.integers(0, 4), max_size=3) | st.lists(odd_values, max_size=2) | odd_values)
        numel = 1
        for dim in shape if isinstance(shape, list) else []:
            numel *= dim if type(dim) is int and dim >= 0 else 1
        nbytes = int(numel * SIZES.get(dtype, 4)) if isinstance(dtype, str) else 4  # type: ignore[call-overload]
        skew = draw(st.sampled_from([0, 0, 0, 0, 1, -1, -offset - 1]))
        begin, end = offset, offset + nbytes + skew
        offsets: Any = draw(st.sampled_from(["ok", "ok", "ok", "ok", "swap", "short", "bool", "float", "odd"]))
        offsets = {"ok": [begin, end], "swap": [end, begin], "short": [begin], "bool": [False, end],
                   "float": [float(begin), end], "odd": draw(odd_values)}[offsets]
        entry: Any = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
        drop = draw(st.sampled_from([None, None, None, None, None, "dtype", "shape", "data_offsets", "all"]))
        if drop == "all":
            entry = draw(odd_values)
        elif drop is not None:
            del entry[drop]
        header[f"t{i}"] = entry
        offset = max(offset, end)
    if count > 1 and draw(st.booleans()):  # entries listed out of file order are fine
        header = dict(reversed(list(header.items())))
    return header, max(offset + draw(st.sampled_from([0, 0, 0, 1, -1])), 0)


@settings(max_examples=400, deadline=2000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=headers())
def test_fast_checks_reach_the_same_verdict_as_the_slow_ones(case: tuple[dict[str, Any], int]) -> None:
    header, data_size = case
    _assert_same(header, data_size)


@pytest.mark.parametrize(
    ("header", "data_size"),
    [
        ({}, 0),
        ({}, 4),
        ({"a": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}, 4),  # a scalar
        ({"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},
          "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 4),  # empty tensor at the start
        # [0,4) and an empty tensor at 2: sorted starts and ends line up, but 2 lies inside [0,4).
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
          "b": {"dtype": "F32", "shape": [0], "data_offsets": [2, 2]}}, 4),
        ({"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, 4),  # bool is not a dim
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, True * 4]}}, 4),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1}}, 4),  # extra keys ignored
        ({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 1]}}, 1),  # four-bit packing
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
          "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 8),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
          "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 4),  # overlap
        ({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 4]}}, 4),
    ],
)
def test_fast_checks_on_edge_cases(header: dict[str, Any], data_size: int) -> None:
    _assert_same(header, data_size)


def test_bulk_tensor_infos_equal_the_constructed_ones() -> None:
    built = tensor_infos(["w", "b"], [(2, 3), ()], ["bfloat16", "float4_e2m1fn_x2"], "m.safetensors",
                         [(0, 12), (12, 13)], [6, 1], [12, 0])
    assert built[0] == TensorInfo("w", (2, 3), "bfloat16", "m.safetensors", (0, 12))
    assert built[0].nbytes == 12 and built[0].num_params == 6 and built[0].storage_id is None
    assert hash(built[0]) == hash(TensorInfo("w", (2, 3), "bfloat16", "m.safetensors", (0, 12)))
    with pytest.raises(AttributeError):
        built[1].name = "x"  # type: ignore[misc]  # still frozen


def test_read_header_of_a_real_file_goes_through_the_fast_path(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    tensors = {f"layer.{i}.weight": torch.zeros(i + 1, 3, dtype=torch.bfloat16) for i in range(5)}
    tensors["scale"] = torch.tensor(1.0)
    save_file(tensors, str(path))
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size])
    header.pop("__metadata__", None)
    data_size = len(raw) - 8 - size
    fast = _checked_entries_fast(header, "m.safetensors", data_size)
    assert fast is not None
    assert read_header(path, "m.safetensors").tensors == fast
    assert {t.name: t.shape for t in fast} == {k: tuple(v.shape) for k, v in tensors.items()}
    assert {t.dtype for t in fast} == {"bfloat16", "float32"}


def _names_verdict(header: dict[str, Any], raw: bytes | None) -> str | None:
    try:
        _check_names(header, raw.decode() if raw is not None else None)
    except CorruptCheckpoint as exc:
        return str(exc)
    return None


name_chars = st.sampled_from(["a", ".", "/", "\\", "\x00", "\n", "\x1f", "\x7f", "é", "\u2028", '"', " ", "0"])


@settings(max_examples=400, deadline=2000, derandomize=True)
@given(names=st.lists(st.lists(name_chars, max_size=4).map("".join), max_size=5),
       metadata=st.none() | st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
       ascii_only=st.booleans())
def test_name_checks_skipped_on_a_plain_text_reach_the_regex_verdict(
    names: list[str], metadata: dict[str, str] | None, ascii_only: bool,
) -> None:
    # The JSON text as a writer would produce it: escapes for control characters and backslashes, "/" and
    # DEL either way. Skipping the regex on a text without backslash, slash or DEL must never accept more.
    header: dict[str, Any] = {name: {} for name in names}
    document = {**({"__metadata__": metadata} if metadata is not None else {}), **header}
    raw = json.dumps(document, ensure_ascii=ascii_only).encode()
    assert json.loads(raw) == document
    assert _names_verdict(header, raw) == _names_verdict(header, None)


def _has_duplicates(raw: bytes) -> bool:
    """Whether any object of the JSON text gives a key twice (the reader refuses some of those, reads others)."""
    repeated = False

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeated
        repeated = repeated or len({key for key, _ in pairs}) < len(pairs)
        return dict(pairs)

    json.loads(raw, object_pairs_hook=hook)
    return repeated


# A colon in a key or string now and then (it makes the colon count differ from the key count).
json_keys = st.integers(0, 15).flatmap(lambda pick: st.sampled_from(["x:y", ":"]) if pick == 0 else st.text(
    "abcd", min_size=1, max_size=2) | st.sampled_from(["dtype", "shape", "data_offsets", "__metadata__"]))
json_leaves = st.none() | st.integers(-2, 9) | st.integers(0, 15).map(lambda pick: "a:b" if pick == 0 else "F32")
json_values = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=3)
                           | st.lists(st.tuples(json_keys, inner), max_size=3), max_leaves=8)
# Mostly entry-like objects (a key may repeat), sometimes anything.
entry_like = st.lists(st.tuples(json_keys, json_leaves | st.lists(json_leaves, max_size=2)), min_size=1, max_size=4)
json_entries = st.integers(0, 7).flatmap(lambda pick: json_values if pick == 0 else entry_like)


def _write(value: Any, draw: st.DrawFn) -> str:
    """JSON text of `value`, where a list of (key, value) pairs is an object that may repeat keys; spaces
    are drawn around colons (one before a colon hides it from a count of '":', which this test catches)."""
    if isinstance(value, list) and value and all(isinstance(item, tuple) for item in value):
        pairs = [json.dumps(key) + draw(st.sampled_from(["", " "])) + ":" + draw(st.sampled_from(["", " "]))
                 + _write(item, draw) for key, item in value]
        return "{" + ",".join(pairs) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_write(item, draw) for item in value) + "]"
    return json.dumps(value)


@settings(max_examples=600, deadline=2000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), top=st.lists(st.tuples(json_keys, json_entries), max_size=5))
def test_colons_prove_no_duplicates_only_when_there_are_none(data: st.DataObject, top: list[Any]) -> None:
    # The colon proof may only clear a text that holds no repeated key at any depth: the slow re-parse
    # must then find none either.
    raw = ("{" + ",".join(json.dumps(key) + ":" + _write(value, data.draw) for key, value in top) + "}").encode()
    if _colons_prove_no_duplicates(raw.decode(), json.loads(raw)):
        assert not _has_duplicates(raw), raw


@pytest.mark.parametrize("raw", [
    b'{"a":{"dtype":"F32","dtype" :"F16","shape":[],"data_offsets":[0,4]}}',  # a space hides one '":'
    b'{"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"a" : {"dtype":"F32","shape":[],"data_offsets":[0,4]}}',
    b'{"__metadata__":{"k":"v","k":"w"},"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}',
    b'{"__metadata__":{"k:":"v"},"a":{"dtype":"F32","dtype":"F32","shape":[],"data_offsets":[0,4]}}',
])
def test_repeated_keys_are_never_cleared(raw: bytes) -> None:
    assert _has_duplicates(raw)
    assert not _colons_prove_no_duplicates(raw.decode(), json.loads(raw))


def test_a_plain_header_is_cleared_by_its_colons() -> None:
    raw = b'{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    assert raw.count(b":") == 2 + 1 + 3
    assert _colons_prove_no_duplicates(raw.decode(), json.loads(raw))
    assert not _may_hide_duplicates(raw.decode(), json.loads(raw))
