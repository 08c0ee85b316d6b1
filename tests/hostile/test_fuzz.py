"""Property-based fuzzing: whatever the bytes, the reader and the scanner raise only WeightDoctorError, fast.

Safetensors headers, pickle opcode streams (random, built from real opcodes, and mutations of a real
torch save) and index JSON. Each example must finish within the hypothesis deadline.
"""

from __future__ import annotations

import collections
import contextlib
import decimal
import functools
import io
import json
import operator
import os
import pathlib
import pickle
import pickletools
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.errors import WeightDoctorError
from weightdoctor.security import scan_bytes, scan_file

FUZZ = settings(max_examples=120, deadline=3000, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)
OPCODES = [op for op in pickletools.opcodes]


def _open_or_own_error(path: Path) -> None:
    try:
        checkpoint = open_checkpoint(path)
    except WeightDoctorError:
        return
    for info in checkpoint.tensors[:4]:
        with contextlib.suppress(WeightDoctorError):
            checkpoint.load_tensor(info.name)


def _real_save() -> bytes:
    buffer = io.BytesIO()
    torch.save({"a.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.zeros(2)}, buffer)
    return buffer.getvalue()


REAL_ZIP = _real_save()
_LEGACY = io.BytesIO()
torch.save({"w": torch.ones(3)}, _LEGACY, _use_new_zipfile_serialization=False)
REAL_LEGACY = _LEGACY.getvalue()

json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
                | st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
tensor_entry = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "XX", ""]),
    "shape": st.lists(st.integers(-2, 2**40), max_size=4),
    "data_offsets": st.lists(st.integers(-5, 2**40), max_size=3),
}) | json_values


@FUZZ
@given(header=st.dictionaries(st.text(max_size=8), tensor_entry, max_size=6), data=st.binary(max_size=64),
       lie=st.integers(-4, 4), pad=st.sampled_from([b"", b" ", b"  \n", b"\x00"]))
def test_safetensors_headers(header: dict, data: bytes, lie: int, pad: bytes) -> None:  # type: ignore[type-arg]
    raw = json.dumps(header).encode() + pad
    size = max(0, len(raw) + lie)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.safetensors"
        path.write_bytes(struct.pack("<Q", size) + raw + data)
        _open_or_own_error(path)


@FUZZ
@given(raw=st.binary(max_size=300))
def test_safetensors_random_bytes(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.safetensors"
        path.write_bytes(struct.pack("<Q", len(raw)) + raw)
        _open_or_own_error(path)


def _encode_op(op: pickletools.OpcodeInfo, draw: st.DrawFn) -> bytes:
    code = op.code.encode("latin-1")
    arg = op.arg
    if arg is None:
        return code
    n = arg.n
    if n > 0:
        return code + draw(st.binary(min_size=n, max_size=n))
    if n == pickletools.UP_TO_NEWLINE:
        text = draw(st.sampled_from(["os\nsystem", "builtins\neval", "torch._utils\n_rebuild_tensor_v2",
                                     "'abc'", "I1", "12", "0.5", "x"]))
        return code + text.encode() + b"\n"
    if n == pickletools.TAKEN_FROM_ARGUMENT1:
        body = draw(st.binary(max_size=20))
        return code + bytes([len(body)]) + body
    if n == pickletools.TAKEN_FROM_ARGUMENT4:
        body = draw(st.binary(max_size=20))
        return code + struct.pack("<I", draw(st.sampled_from([len(body), 2**31, 0]))) + body
    if n == pickletools.TAKEN_FROM_ARGUMENT4U:
        body = draw(st.binary(max_size=20))
        return code + struct.pack("<I", len(body)) + body
    if n == pickletools.TAKEN_FROM_ARGUMENT8U:
        body = draw(st.binary(max_size=20))
        return code + struct.pack("<Q", draw(st.sampled_from([len(body), 2**62]))) + body
    return code


@st.composite
def opcode_streams(draw: st.DrawFn) -> bytes:
    ops = draw(st.lists(st.sampled_from(OPCODES), max_size=30))
    body = b"".join(_encode_op(op, draw) for op in ops)
    head = draw(st.sampled_from([b"", b"\x80\x02", b"\x80\x04", b"\x80\x05"]))
    return head + body + draw(st.sampled_from([b".", b"", b".\x80\x02N."]))


@FUZZ
@given(stream=opcode_streams())
def test_pickle_opcode_streams(stream: bytes) -> None:
    report = scan_bytes(stream)
    assert report.verdict in ("safe", "suspicious", "dangerous")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.pkl"
        path.write_bytes(stream)
        _open_or_own_error(path)


@FUZZ
@given(raw=st.binary(max_size=400))
def test_pickle_random_bytes(raw: bytes) -> None:
    scan_bytes(raw)
    scan_bytes(b"\x80\x02" + raw)


@FUZZ
@given(base=st.sampled_from([REAL_ZIP, REAL_LEGACY]),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.integers(0, 10**6))
def test_mutated_real_saves(base: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(base)
    for position, value in flips:
        data[position % len(data)] = value
    data = data[: max(1, len(data) - cut % 64)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.bin"
        path.write_bytes(bytes(data))
        report = scan_file(path)
        assert report.verdict in ("safe", "suspicious", "dangerous")
        _open_or_own_error(path)


@FUZZ
@given(index=json_values | st.fixed_dictionaries({
    "metadata": json_values | st.fixed_dictionaries({"total_size": json_scalars}),
    "weight_map": st.dictionaries(st.text(max_size=8), st.sampled_from(
        ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "../x.safetensors", "/etc/passwd",
         "", ".", "missing.safetensors", "config.json", "model.safetensors.index.json"]) | json_scalars, max_size=5),
}))
def test_index_json(index: object) -> None:
    import numpy
    from safetensors.numpy import save_file

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        save_file({"a": numpy.zeros(2, numpy.float32)}, root / "model-00001-of-00002.safetensors")
        save_file({"b": numpy.zeros(3, numpy.float32)}, root / "model-00002-of-00002.safetensors")
        (root / "config.json").write_text('{"model_type": "bert"}')
        index_path = root / "model.safetensors.index.json"
        index_path.write_text(json.dumps(index))
        _open_or_own_error(index_path)
        _open_or_own_error(root)


class _Stub:
    """Whatever a recorded import resolves to: accepts every call, stores nothing, runs nothing."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> _Stub:
        return _Stub()

    def __setstate__(self, state: object) -> None:
        pass

    def append(self, item: object) -> None:
        pass

    def extend(self, items: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass

    def add(self, item: object) -> None:
        pass


class _RecordingUnpickler(pickle.Unpickler):
    """Python's own unpickler, with every import recorded and replaced by a stub."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.imports: list[tuple[str, str]] = []

    def find_class(self, module: str, name: str) -> type:
        self.imports.append((module, name))
        return _Stub

    def persistent_load(self, pid: object) -> object:
        return None


def _real_imports(data: bytes) -> list[tuple[str, str]]:
    """Every import Python's unpickler makes, pickle after pickle, until the data ends or it fails."""
    unpickler = _RecordingUnpickler(data)
    for _ in range(8):
        try:
            unpickler.load()
        except Exception:  # noqa: BLE001 - any failure ends the stream, as it would for a real load
            break
    return unpickler.imports


@FUZZ
@given(stream=opcode_streams())
def test_scanner_sees_every_import_pythons_unpickler_makes(stream: bytes) -> None:
    """Differential: whatever Python's own unpickler would import, the static scan names (or refuses)."""
    report = scan_bytes(stream)
    named = {(g.module, g.name) for g in report.globals}
    unresolved = any(g.module.startswith("<") for g in report.globals)
    for module, name in _real_imports(stream):
        assert (module, name) in named or unresolved or report.problems, (module, name, report.summary())
    if report.verdict == "safe":
        assert all((m, n) in named for m, n in _real_imports(stream))


_GLOBAL_VALUES = [os.system, eval, exec, getattr, collections.OrderedDict, functools.partial, operator.attrgetter,
                  pathlib.PurePosixPath, subprocess.Popen, decimal.Decimal, torch.float16, torch.Size]
python_values = st.recursive(
    json_scalars | st.binary(max_size=8) | st.sampled_from(_GLOBAL_VALUES) | st.frozensets(st.integers(), max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3) | st.builds(bytearray, st.binary(max_size=6)),
    max_leaves=25,
)


@FUZZ
@given(value=python_values, protocol=st.integers(0, 5), shared=st.booleans())
def test_scanner_names_exactly_what_pickle_imports(value: object, protocol: int, shared: bool) -> None:
    """Real pickles of every protocol, globals shared through the memo: the scan names exactly the imports."""
    obj = [value, value, {"again": value}] if shared else value
    data = pickle.dumps(obj, protocol=protocol)
    report = scan_bytes(data)
    assert not report.problems, report.problems
    assert {(g.module, g.name) for g in report.globals} == set(_real_imports(data))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    entries=st.lists(
        st.tuples(
            st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F64", "X9", 3]),
            st.lists(st.integers(min_value=-1, max_value=5), max_size=3),
            st.sampled_from([0, 0, 0, 1, -1, 2]),  # mostly consistent, so that both verdicts are exercised
        ),
        max_size=4,
    ),
    extra=st.sampled_from([0, 0, 0, 1, -1, 8]),
)
def test_our_header_checks_are_at_least_the_librarys(
    tmp_path_factory: Any, entries: list, extra: int  # type: ignore[type-arg]
) -> None:
    """Whatever our parser accepts, the safetensors library accepts too (so structure-only commands may
    rely on our parser, and the library's validation can wait until values are read)."""
    import json as _json
    import math as _math
    import struct as _struct

    from safetensors import safe_open

    from weightdoctor.checkpoint.safetensors_format import read_header
    from weightdoctor.errors import WeightDoctorError

    sizes = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1, "BOOL": 1, "F64": 8}
    header, offset = {}, 0
    for i, (dtype, shape, skew) in enumerate(entries):
        numel = _math.prod(shape) if all(d >= 0 for d in shape) else 1
        nbytes = numel * sizes.get(dtype, 4) if isinstance(dtype, str) else 4
        header[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + max(nbytes + skew, 0)]}
        offset += max(nbytes + skew, 0)
    raw = _json.dumps(header).encode()
    path = tmp_path_factory.mktemp("lib") / "x.safetensors"
    path.write_bytes(_struct.pack("<Q", len(raw)) + raw + b"\0" * max(offset + extra, 0))
    try:
        read_header(path, path.name)
    except WeightDoctorError:
        return
    with safe_open(str(path), framework="np") as handle:  # must not raise
        assert sorted(handle.keys()) == sorted(header)
