"""Property-based fuzzing: whatever the bytes, the reader and the scanner raise only WeightDoctorError, fast.

Safetensors headers, pickle opcode streams (random, built from real opcodes, and mutations of a real
torch save) and index JSON. Each example must finish within the hypothesis deadline.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickletools
import struct
import tempfile
from pathlib import Path

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
