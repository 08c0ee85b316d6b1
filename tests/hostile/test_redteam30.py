"""Red team 30: what the scanner's amplification bounds (security5) still let a small file cost its reader.

A mapping the pickle fetched again from its memo is one object, however many keys point at it: a 42 KB file of
1,000-key dicts nested three deep, each key the one dict below (10^9 paths, 3,000 distinct entries), is safe to
unpickle (pickle.loads and torch.load(weights_only=True) share it, measured 18 MB peak) and the scanner called it
safe, but `find_state_dict`'s breadth-first search for the weights walked every path: `weightdoctor inspect` (and
`--stats`, `convert`) ran past 60 s (killed there). It now searches each mapping once: 0.5 s, the usual "no state
dict" error line.

Ints, floats and tuples hash as the file chooses (hash(n) == hash(n + 2**61 - 1)): 60,000 int keys of one hash in one
dict (a 779 KB pickle) took pickle.loads 30 s, every insertion comparing with every key before it, and the scanner
(0.14 s) called it safe. The scanner now counts those comparisons (65,536 besides one per byte walked) in dicts, sets,
frozensets, OrderedDicts and Counters of every protocol, and refuses past them.
"""

from __future__ import annotations

import collections
import pickle
import re
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import one_error_line, run_cli, run_subprocess, torch_zip_with_data_pkl
from weightdoctor.security import scan_bytes, scan_file


def _binput(index: int) -> bytes:
    return b"r" + struct.pack("<I", index)


def _binget(index: int) -> bytes:
    return b"j" + struct.pack("<I", index)


def _text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _nested_dicts(keys: int, depth: int) -> bytes:
    """A protocol 2 pickle of `depth` levels of `keys`-key dicts: every key of a level holds the one dict below it
    (written once, fetched again from the memo), the deepest an empty dict."""
    out = [b"\x80\x02}", _binput(0)]
    for level in range(1, depth + 1):
        out += [b"}", _binput(level), b"("]
        for i in range(keys):
            out += [_text(f"k{i}"), _binget(level - 1)]
        out.append(b"u")
    out.append(b".")
    return b"".join(out)


def test_dicts_shared_by_every_key_of_the_level_above_are_searched_once(tmp_path: Path) -> None:
    path = torch_zip_with_data_pkl(tmp_path, "nested", _nested_dicts(1_000, 3))
    assert path.stat().st_size < 50_000
    loaded = torch.load(path, weights_only=True)
    assert loaded["k0"] is loaded["k999"] and loaded["k0"]["k5"] is loaded["k7"]["k5"]  # shared, not copied
    assert scan_file(path).verdict == "safe"
    for command in (["inspect"], ["inspect", "--stats"], ["convert", "-o", str(tmp_path / "out.safetensors")]):
        start = time.monotonic()
        # A subprocess with a timeout: before the fix the search took minutes (killed here at 30 s).
        done = run_subprocess(command[0], str(path), *command[1:], timeout=30)
        assert time.monotonic() - start < 20
        assert done.returncode == 2 and done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: no state dict")
        assert "k0 (dict, 1000 entries)" in lines[0] and "pick one with --key" in lines[0]
    assert not (tmp_path / "out.safetensors").exists()


_ONE_HASH = [i * (2**61 - 1) for i in range(1, 3_001)]  # hash() of each is 0


@pytest.mark.parametrize("protocol", range(6))
@pytest.mark.parametrize("made", [dict.fromkeys, set, frozenset, collections.OrderedDict.fromkeys, collections.Counter,
                                  lambda keys: dict.fromkeys((key, 0) for key in keys)])
def test_keys_chosen_to_share_one_hash_are_refused(made: Any, protocol: int) -> None:
    report = scan_bytes(pickle.dumps(made(_ONE_HASH), protocol=protocol))
    assert report.verdict == "suspicious", report.summary()
    # Refused once past the bound (a batch of 1,000 SETITEMS or ADDITEMS at a time, one key at a time at protocol 0).
    assert re.search(r"compare keys [0-9,]{6,} times with keys of the same hash", report.summary())


def test_a_torch_file_of_colliding_keys_is_refused_by_inspect(tmp_path: Path) -> None:
    data = b"\x80\x02}q\x00(" + b"".join(_long1(key) + b"N" for key in _ONE_HASH) + b"u."
    path = torch_zip_with_data_pkl(tmp_path, "collide", data)
    assert scan_file(path).verdict == "suspicious"
    line = one_error_line(run_cli("inspect", str(path)))
    assert ": suspicious: " in line and "with keys of the same hash" in line


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_genuine_int_and_tuple_keys_stay_safe(protocol: int) -> None:
    """An optimizer's state keyed 0..N, -1 beside -2 (one shared hash), floats and (layer, head) tuples."""
    genuine = {"state": {i: {"step": i} for i in range(20_000)}, "odd": {-1: 0, -2: 1, 0.5: 2, 1.5: 3},
               "heads": {(layer, head): 0 for layer in range(48) for head in range(64)}, "ids": set(range(10_000))}
    assert scan_bytes(pickle.dumps(genuine, protocol=protocol)).verdict == "safe"


def _long1(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw
