"""The reader's parsers, found by the ninth red-team round: torch zip archives, legacy torch pickles and the
pickles inside them, built by hand where torch.save would never write them. Each must exit 0 with a truthful
report or 2 with one line naming the file and what is wrong; never a traceback, a hang or gigabytes of memory."""

from __future__ import annotations

import io
import pickle
import resource
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

from tests.helpers import REPO_ROOT, run_cli


def _one_line_exit_2(*args: str | Path, expected: str) -> str:
    result = run_cli(*map(str, args))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stdout[:300], result.stderr)
    assert len(lines) == 1 and expected in lines[0] and "unexpected" not in lines[0], result.stderr
    assert not result.stdout.strip()
    return lines[0]


def _records(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        return [(name, archive.read(name)) for name in archive.namelist()]


def _rewrite(path: Path, records: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in records:
            archive.writestr(name, data)
    return path


def test_a_memo_index_of_hundreds_of_millions_is_refused_before_it_is_allocated(tmp_path: Path) -> None:
    """A LONG_BINPUT of index 3e8 in a 400-byte data.pkl: the torch-free reader's C unpickler grew its memo array to
    6e8 entries and filled it, 4.6 GB of memory for `inspect`, before reading a single tensor (2**32 - 1 asked for
    68 GB). No pickler numbers a memo entry past the bytes before it: the scanner says so and nothing is unpickled.
    torch.load(weights_only=True), whose unpickler keeps a dict, reads the file; pickle.load would not."""
    source = tmp_path / "plain.bin"
    torch.save({"w": torch.arange(4.0)}, source)
    records = _records(source)
    name, data = next((n, d) for n, d in records if n.endswith("/data.pkl"))
    first_put = data.index(b"q\x00")  # the BINPUT after the pickle's first global
    crafted = data[:first_put] + b"r" + struct.pack("<I", 300_000_000) + data[first_put:]
    path = _rewrite(tmp_path / "memo.bin", [(n, crafted if n == name else d) for n, d in records])
    code = (
        "import resource, sys\n"
        "from weightdoctor.cli import app\n"
        "try:\n"
        "    app(['inspect', sys.argv[1], '--json'])\n"
        "except SystemExit as exit:\n"
        "    print('exit', exit.code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT, env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)))
    words = proc.stdout.split()
    assert words[:2] == ["exit", "2"], (proc.stdout, proc.stderr[-2000:])
    assert int(words[2]) < 1000  # megabytes
    assert "memo index 300,000,000" in proc.stderr and "suspicious" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert torch.load(path, weights_only=True)["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_memo_indexes_of_real_pickles_are_not_flagged(tmp_path: Path) -> None:
    """The bound is no pickler's numbering: every protocol's own memo, and a plain pickle's, still pass."""
    from weightdoctor.security import scan_bytes

    state = {f"layer.{i}.weight": torch.ones(2) for i in range(300)}
    for protocol in range(6):
        buffer = io.BytesIO()
        torch.save(state, buffer, pickle_protocol=protocol, _use_new_zipfile_serialization=False)
        assert scan_bytes(buffer.getvalue()).verdict == "safe", protocol
        assert scan_bytes(pickle.dumps([[i] for i in range(1000)], protocol=protocol)).verdict == "safe"


def _with_comment(path: Path, comment: bytes, out: Path) -> Path:
    """`path`, a zip, with `comment` as its end record's comment (bytes no zip writer checks)."""
    data = path.read_bytes()
    end = data.rfind(b"PK\x05\x06")
    out.write_bytes(data[:end + 20] + struct.pack("<H", len(comment)) + comment)
    return out


def test_a_second_archive_in_the_zip_comment_is_not_read_in_place_of_the_first(tmp_path: Path) -> None:
    """torch.save's archive of two tensors, its comment holding another torch.save archive: Python's zipfile takes
    the last end record, the hidden archive's, and moves its offsets to where that archive lies; miniz takes them as
    written and refuses the file. inspect listed the hidden archive's one tensor, exit 0, as the checkpoint's."""
    torch.save({"a": torch.arange(4.0), "b": torch.ones(2, 3)}, tmp_path / "outer.bin")
    torch.save({"hidden": torch.zeros(3)}, tmp_path / "hidden.bin")
    path = _with_comment(tmp_path / "outer.bin", (tmp_path / "hidden.bin").read_bytes(), tmp_path / "comment.bin")
    joined = tmp_path / "joined.bin"
    joined.write_bytes((tmp_path / "outer.bin").read_bytes() + (tmp_path / "hidden.bin").read_bytes())
    for crafted in (path, joined):
        with zipfile.ZipFile(crafted) as archive:
            assert any(name.startswith("hidden/") for name in archive.namelist())  # what zipfile shows
        try:
            torch.load(crafted, weights_only=True)
        except RuntimeError as exc:
            assert "invalid header or archive is corrupted" in str(exc)
        else:
            raise AssertionError("torch.load read the file")
        line = _one_line_exit_2("inspect", crafted, "--json", expected=crafted.name)
        assert "different contents to different readers" in line and "torch.load refuses the file" in line, line
    # A comment of text, as zip tools write one, changes nothing.
    plain = _with_comment(tmp_path / "outer.bin", b"written by hand", tmp_path / "text-comment.bin")
    result = run_cli("inspect", str(plain), "--json")
    assert result.exit_code == 0, result.stderr
    assert '"num_tensors": 2' in result.stdout
