"""Red team, round 20: the pickle scanner's own cost. A hostile file may cost a few times what the largest genuine
checkpoint does, no more. Measured on torch 2.13: a state dict's pickle keeps 8 memo entries and walks 31 opcodes a
tensor (1,000,000 tensors: 8M entries, 31M opcodes, legacy or zip alike), Adam's state 20 entries a parameter.

Each test counts work (values scanned) or peak memory (tracemalloc); none times a run."""

from __future__ import annotations

import io
import pickle
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import record_calls, run_cli, run_json
from weightdoctor.security.opcodes import walk_pickle


class _RunsAShellCommand:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.system, ("echo the payload ran",)


def test_a_pickle_of_many_memo_entries_is_walked_in_bounded_memory() -> None:
    # One value then 300,000 MEMOIZE opcodes (300 KB): the memo was a dict of int keys, ~70 bytes an entry
    # (21 MB here; 10^7 entries in a 10 MB .pkl or .npy held 0.8 GB). As a list it is 8 bytes an entry.
    count = 300_000
    data = b"\x80\x04N" + b"\x94" * count + b"h\x00\x86."
    tracemalloc.start()
    try:
        walk = walk_pickle(io.BytesIO(data), len(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert walk.error is None and walk.value == (None, None), (walk.error, walk.value)
    assert peak < 6 * 10**6, f"{peak:,} bytes to walk {count:,} memo entries"


def test_memo_entries_written_out_of_order_read_back_as_pickle_reads_them() -> None:
    # PUT 2, PUT 0, MEMOIZE (the third entry: index 2 again, as C pickle counts), GET 2, GET 0, PUT 1, GET 1, then
    # a tuple memoized and read back: indices past the list's end wait in a dict and join it once it reaches them.
    data = b"\x80\x02Nq\x02X\x01\x00\x00\x00aq\x00\x8c\x01b\x94h\x02h\x00q\x01h\x01\x87\x94h\x03."
    walk = walk_pickle(io.BytesIO(data), len(data))
    assert walk.error is None and walk.value == pickle.loads(data) == ("b", "a", "a")
    unread = b"\x80\x02N\x94h\x05."
    assert walk_pickle(io.BytesIO(unread), len(unread)).error == "memo entry 5 is read before it is written"
    negative = b"(N\x94g-1\n."  # protocol 0's GET takes any decimal: -1 is no entry (not the list's last)
    assert walk_pickle(io.BytesIO(negative), len(negative)).error == "memo entry -1 is read before it is written"


def test_the_restricted_unpickler_holds_many_memo_entries_in_bounded_memory() -> None:
    # The pure-Python unpickler (plain .pkl files, and what torch's weights_only loader cannot read) kept its memo
    # in a dict: 300,000 MEMOIZE opcodes took 21 MB (10^7 in a 10 MB .pkl: 1 GB). It reads the memo back as pickle
    # does, and a missing entry is stdlib's error.
    from weightdoctor.checkpoint.pytorch_format import RestrictedPickle

    count = 300_000
    data = b"\x80\x04N" + b"\x94" * count + b"h\x00q\x05h\x05\x87."
    tracemalloc.start()
    try:
        value = RestrictedPickle.load(io.BytesIO(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert value == pickle.loads(data) == (None, None, None)
    assert peak < 6 * 10**6, f"{peak:,} bytes to unpickle {count:,} memo entries"
    with pytest.raises(pickle.UnpicklingError, match="Memo value not found at index 7"):
        RestrictedPickle.load(io.BytesIO(b"\x80\x02N\x94h\x07."))


def _counting_scan_bytes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    from weightdoctor.security import scan

    return record_calls(monkeypatch, scan, "scan_bytes")


def _many_bytes_values(extra: dict[str, Any]) -> dict[str, Any]:
    # 1,000 bytes values that hold no importing opcode byte (c, i, 0x82-0x84, 0x93), and 1,000 equal values (each
    # its own object, so the pickle and the walk see 1,000) that could start a protocol 0 GLOBAL.
    plain = [bytes([1 + k % 90, 2 + k // 90, 0x80]) for k in range(1000)]
    same = [bytes(bytearray(b"cnot\na global")) for _ in range(1000)]
    return {"model_state_dict": {"fc.weight": torch.zeros(2, 2)}, "plain": plain, "same": same, **extra}


def test_bytes_values_that_cannot_import_or_repeat_one_judged_are_not_each_scanned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every bytes value was scanned, ~10 us each however short: 10^6 small values took 30 s. One that holds no byte
    # of an importing opcode names no global, and one equal to a value judged already is judged alike.
    scanned = _counting_scan_bytes(monkeypatch)
    good = tmp_path / "state.pt"
    torch.save(_many_bytes_values({}), good)
    code, report = run_json("inspect", str(good))
    assert code == 0, report
    assert report["security"]["verdict"] == "safe" and [t["name"] for t in report["tensors"]] == ["fc.weight"]
    assert scanned == [b"cnot\na global"], f"{len(scanned):,} bytes values scanned"


def test_a_code_running_pickle_among_many_skipped_bytes_values_is_still_refused(tmp_path: Path) -> None:
    bad = tmp_path / "state.pt"
    torch.save(_many_bytes_values({"model": pickle.dumps(_RunsAShellCommand(), protocol=0)}), bad)
    result = run_cli("inspect", str(bad))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and result.stdout == "" and len(lines) == 1, (result.stdout, result.stderr)
    assert lines[0].startswith(f"error: {bad}: dangerous: the bytes value at model holds a pickle that names "
                               "posix.system"), lines[0]
