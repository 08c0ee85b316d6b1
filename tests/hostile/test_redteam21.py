"""Red team, round 21: files that torch.load reads in another way than the scanner walked them."""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers import run_cli
from weightdoctor.security.scan import scan_file


class _TouchesAFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.system, (f"touch '{self.path}'",)


def _v7_header(name: bytes, size: int) -> bytes:
    """A pre-POSIX (V7) tar header: no "ustar" magic at byte 257, only a checksum tarfile checks."""
    block = bytearray(512)
    block[0:len(name)] = name
    block[100:108], block[108:116], block[116:124] = b"0000644\0", b"0000000\0", b"0000000\0"
    block[124:136], block[136:148] = b"%011o\0" % size, b"00000000000\0"
    block[148:156], block[156:157] = b" " * 8, b"0"
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _v7_tar_that_opens_a_pickle(path: Path, sentinel: Path) -> None:
    """A V7 tar whose member "storages" (which torch's legacy tar loader unpickles first) runs a shell command, and
    whose first member's name opens a pickle: BINBYTES of everything up to the file's last byte, a STOP."""
    payload = pickle.dumps(_TouchesAFile(sentinel), protocol=2)
    body = _v7_header(b"storages", len(payload)) + payload + b"\0" * (-len(payload) % 512) + b"\0" * 1024
    length = 512 + len(body) - 5
    path.write_bytes(_v7_header(b"B" + struct.pack("<I", length), 0) + body + b".")


def test_a_tar_without_the_ustar_magic_is_scanned_as_the_tar_torch_load_reads(tmp_path: Path) -> None:
    # Before: the scan walked the file as one pickle of a bytes object and said "its pickle is safe (static scan:
    # no globals)"; torch.load(weights_only=False) opened it as its legacy tar and ran the command.
    path, sentinel = tmp_path / "model.pt", tmp_path / "PAYLOAD_RAN"
    _v7_tar_that_opens_a_pickle(path, sentinel)
    assert pickle.loads(path.read_bytes())[:4] == b"\0" * 4  # what the scanner saw: a pickle of a bytes value

    report = scan_file(path)
    assert report.container == "pytorch-tar"
    assert report.verdict == "dangerous", report.summary()
    assert [g.qualified for g in report.globals] == ["posix.system"]

    result = run_cli("inspect", str(path))
    assert result.exit_code == 2
    assert "dangerous" in result.stderr and "system" in result.stderr and "is safe" not in result.stderr
    assert not sentinel.exists()

    # The payload is live: torch.load without weights_only reads the tar and runs it (in a child interpreter).
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"],
                   capture_output=True, timeout=120)
    assert sentinel.exists()


def test_a_pickle_whose_first_block_is_no_tar_header_is_still_walked_as_a_pickle(tmp_path: Path) -> None:
    # A plain pickle of 600 bytes (longer than a tar block) is read as the pickle it is.
    path = tmp_path / "state.pkl"
    path.write_bytes(pickle.dumps({"name": "x" * 600}, protocol=2))
    report = scan_file(path)
    assert report.container == "pickle" and report.verdict == "safe", report.summary()
