"""Red team 30: what the scanner's amplification bounds (security5) still let a small file cost its reader.

A mapping the pickle fetched again from its memo is one object, however many keys point at it: a 42 KB file of
1,000-key dicts nested three deep, each key the one dict below (10^9 paths, 3,000 distinct entries), is safe to
unpickle (pickle.loads and torch.load(weights_only=True) share it, measured 18 MB peak) and the scanner called it
safe, but `find_state_dict`'s breadth-first search for the weights walked every path: `weightdoctor inspect` (and
`--stats`, `convert`) ran past 60 s (killed there). It now searches each mapping once: 0.5 s, the usual "no state
dict" error line.
"""

from __future__ import annotations

import struct
import time
import zipfile
from pathlib import Path

import torch

from tests.helpers import run_subprocess
from weightdoctor.security import scan_file


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


def _in_a_torch_zip(tmp_path: Path, name: str, data_pkl: bytes) -> Path:
    """A torch.save archive whose data.pkl is `data_pkl` (stored, as torch writes its records)."""
    source, target = tmp_path / f"{name}_source.pt", tmp_path / f"{name}.pt"
    torch.save({}, source)
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as out:
        for info in archive.infolist():
            out.writestr(info.filename.replace(f"{name}_source/", f"{name}/"),
                         data_pkl if info.filename.endswith("data.pkl") else archive.read(info.filename))
    return target


def test_dicts_shared_by_every_key_of_the_level_above_are_searched_once(tmp_path: Path) -> None:
    path = _in_a_torch_zip(tmp_path, "nested", _nested_dicts(1_000, 3))
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
