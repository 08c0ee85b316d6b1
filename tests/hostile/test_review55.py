"""Review 55: genuine files that review51's scan of bytes values and of memo GETs refused.

review51 scans every bytes value that starts like a pickle (b"\\x80" then a protocol byte) and refuses what the scan
finds in it, and bounds the items memo GETs are looked into to one a byte walked. Binary data (int16 samples, a
protobuf whose first field is 16, 32, ...) can start like a pickle: a BINPUT on an empty stack, or a BINPUT 213, was
refused as a memo "built to exhaust memory" (0.0 GB), though pickle.loads fails on those bytes at once, setting
nothing aside. A protocol 0/1 pickle of a Namespace beside a tuple shared 3,000 times (each GET 2 bytes, 11 items)
passed the bound, and its Namespace's globals were read as dangerous. Both files were read at 0885af9.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import struct
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli
from weightdoctor.security import scan_bytes
from weightdoctor.security.opcodes import walk_pickle

# int16 samples whose little-endian bytes start like a pickle: 896 is b"\x80\x03", then BINPUT on an empty stack;
# 640 is b"\x80\x02", then BININT1 5 and BINPUT 213. No byte of an opcode that imports follows.
_SAMPLES = {"empty_stack": [896, -3215, 0x00EA, 1234, -20, 300],
            "small_index": [640, 0x054B, -10895, 1234, -20, 300]}


def _samples(values: list[int]) -> bytes:
    return struct.pack(f"<{len(values)}h", *values)


@pytest.mark.parametrize("case", sorted(_SAMPLES))
def test_binary_samples_that_start_like_a_pickle_are_read(tmp_path: Path, case: str) -> None:
    data = _samples(_SAMPLES[case])
    assert data[:1] == b"\x80" and data[1] <= 5 and not any(op in data for op in (b"c", b"i", b"\x93", b"\x82"))
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(data)  # no pickle: its loader fails before it sets anything aside
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.arange(4, dtype=torch.float32)}, "audio": data}, path)
    result = run_cli("inspect", str(path), "--key", "state_dict", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["num_tensors"] == 1 and report["security"]["verdict"] == "safe"
    assert "memo index" not in result.stdout + result.stderr


def test_a_memo_index_that_sets_aside_memory_is_still_reported() -> None:
    """The same two bytes with a value pushed first and a LONG_BINPUT of 2**24 (268 MB set aside) stay refused."""
    hostile = b"\x80\x04Nr" + struct.pack("<I", 2**24) + b"."
    walk = walk_pickle(io.BytesIO(hostile), len(hostile))
    assert any("memo index 16,777,216" in message and "0.3 GB" in message for _, message in walk.problems)
    crafted = b"\x80\x04r" + struct.pack("<I", 2**24) + b"."
    empty = walk_pickle(io.BytesIO(crafted), len(crafted))
    assert not empty.problems and empty.error is not None  # stack underflow, as pickle.loads meets it


@pytest.mark.parametrize("protocol", [0, 1])
@pytest.mark.parametrize("shared", ["tuple", "list"])
def test_a_namespace_beside_a_shared_tuple_or_list_stays_inert(tmp_path: Path, protocol: int, shared: str) -> None:
    shape = tuple(range(10)) if shared == "tuple" else list(range(20))
    value = {"args": argparse.Namespace(lr=0.1, layers=[1, 2]), "shapes": [shape] * 3000}
    report = scan_bytes(pickle.dumps(value, protocol=protocol))
    assert report.verdict == "safe", report.summary()
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "trainer": pickle.dumps(value, protocol=protocol)}, path)
    result = run_cli("inspect", str(path), "--key", "state_dict", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["security"]["verdict"] == "safe"


def test_a_list_changed_after_it_was_counted_is_counted_again() -> None:
    """What counting keeps for a shared list is dropped when the list changes: _reconstructor appended to a list
    already got back once is counted at each later GET of the list, as it was before the counting was kept."""
    data = (b"\x80\x02ccopy_reg\n_reconstructor\nq\x00"  # pushed: 1
            b"]q\x01h\x010"  # an empty list, got back: nothing in it
            b"h\x00a"  # _reconstructor got back (2) and appended to the list
            b"h\x010h\x010.")  # the list got back twice: 4
    walk = walk_pickle(io.BytesIO(data), len(data))
    assert walk.error is None and walk.pushed["copy_reg._reconstructor"] == 4, walk.pushed
