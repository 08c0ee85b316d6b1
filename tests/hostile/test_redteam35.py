"""Red team 35: hostile file systems against convert / shard and their `--dry-run` (`would_refuse`).

What held (measured, not all pinned here): outputs that are a hard link or a symbolic link to the input file or to its
folder (refused alike by the dry run and the write, --force or not); trailing `/` and `//`, `out/.`, `//abs/path`;
outputs named with 255 bytes exactly (file and folder, again with --force) and 256 (refused alike); NFC / NFD and
case-only twins (distinct names on ext4); an existing folder output holding a folder named like a shard or the index,
a FIFO named config.json, a FIFO or a socket beside, read-only (0444) files, an immutable or append-only file or
subfolder (--force: refused alike); RLIMIT_FSIZE of 100 B to 2 MB in a child for every writer (file too large, no
temporary or staging left); two writes to one output at once (one wins, the other says "output appeared ... pass
--force"; two --force writes leave one whole set); an output that appears while another run is paused before its
rename.

What did not, each fixed here (in weightdoctor/writers/atomic.py and rewrite.py):
1. `..` in `-o` was undone lexically (os.path.abspath) by the dry run and the free-space check, where the kernel walks
   it: `-o missing/../out.safetensors` and `-o notes.txt/../out` were said to go ahead and then refused (exit 2), and
   `-o link/../out` was checked beside the link where the write lands beside the link's target.
2. An append-only output folder (chattr +a): convert wrote the file, then failed to remove its temporary
   ("error: permission denied: [Errno 1] Operation not permitted: '.../.out.safetensors.wdtmp-...'", exit 2, the
   temporary left beside the output); shard left its staging folder of whole shards, saying "nothing was left behind";
   the dry run said both would go ahead. An immutable folder was foreseen as "permission denied" where the write says
   "operation not permitted".

Not fixed: the free-space check counts tensor bytes and side files' bytes, not the safetensors / zip headers, the index,
nor the file system's block rounding. On a 64 KiB tmpfs a model folder of 40 KiB of weights and 9 side files of 2 bytes
(9 pages of 4 KiB) was said to go ahead by the dry run, and the write failed "no space left on the device" (nothing
left behind); a --force cast needing 20,480 bytes of data with 20,480 free did the same (its header took a sixth page).
Counting headers changes the "needs at least N bytes" figures older tests pin. Not tried: a non-root user's --force
onto a folder holding another user's 0600 file (carried over by hard link, refused under protected_hardlinks, then
copied, which fails): the venv cannot be run as `nobody` here.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import run_cli


def _source(folder: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(35)
    tensors = {"encoder.weight": torch.randn(16, 16), "encoder.bias": torch.randn(16),
               "head.weight": torch.randn(4, 16)}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "model.safetensors")
    return tensors


def _dry_then_real(*args: str) -> tuple[str, str]:
    """The dry run's would_refuse (it must exit 1), then the real write's one error line (exit 2), as foreseen."""
    dry = run_cli(*args, "--dry-run", "--json")
    assert dry.exit_code == 1, dry.stderr or dry.stdout
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True and report["write"] is None
    real = run_cli(*args)
    assert real.exit_code == 2 and real.stdout == "", real.stderr
    lines = real.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return report["would_refuse"], (lines[0].removeprefix("error: ").removesuffix("; nothing was left behind")
                                    .removesuffix(", and nothing was left behind"))


def _siblings(folder: Path) -> list[str]:
    """Temporary files and staging folders of the writers anywhere under `folder`."""
    return [name for _, folders, files in os.walk(folder) for name in folders + files
            if any(mark in name for mark in (".wdtmp-", ".wdstage-", ".wdold-"))]


def _chattr(path: Path, flag: str) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True)


@pytest.fixture
def chattr_works(tmp_path: Path) -> Iterator[list[Path]]:
    """The paths a test flagged with chattr (cleared after it); the test is skipped where chattr cannot set +i (not
    root, or a file system without inode flags)."""
    probe = tmp_path / "probe"
    probe.write_text("x")
    try:
        _chattr(probe, "+i")
        _chattr(probe, "-i")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("chattr +i does not work here (needs root and a file system with inode flags)")
    flagged: list[Path] = []
    yield flagged
    for path in flagged:
        subprocess.run(["chattr", "-i", "-a", str(path)], capture_output=True)


# --- 1. `..` walked as the kernel walks it ------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["convert", "shard"])
def test_dot_dot_after_a_missing_folder_or_a_file_is_foreseen_as_the_write_refuses_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    _source(tmp_path / "src")
    (tmp_path / "notes.txt").write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    args = [command, str(tmp_path / "src" / "model.safetensors"), *(["--max", "300B"] if command == "shard" else [])]
    name = "out.safetensors" if command == "convert" else "out"
    foreseen, written = _dry_then_real(*args, "-o", f"notes.txt/../{name}")
    assert foreseen == written == f"notes.txt/../{name}: cannot write the output: a part of the output's path is a " \
                                  "file, not a folder"
    if command == "convert":  # a single file's folder is not made: `missing/..` is not there for the kernel
        foreseen, written = _dry_then_real(*args, "-o", f"missing/../{name}")
        assert foreseen == written
        assert "the output folder does not exist (create it first: mkdir -p missing/..)" in foreseen
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "src"]
    assert (tmp_path / "notes.txt").read_text() == "not a folder"


@pytest.mark.parametrize("command", ["convert", "shard"])
def test_dot_dot_after_a_link_is_checked_where_the_write_lands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                chattr_works: list[Path], command: str) -> None:
    tensors = _source(tmp_path / "src")
    (tmp_path / "far" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "far" / "sub")
    monkeypatch.chdir(tmp_path)
    args = [command, str(tmp_path / "src" / "model.safetensors"), *(["--max", "300B"] if command == "shard" else [])]
    name = "out.safetensors" if command == "convert" else "out"
    # `link/..` is far/ for the kernel: the write lands there, not beside `link`.
    _chattr(tmp_path / "far", "+i")
    chattr_works.append(tmp_path / "far")
    foreseen, written = _dry_then_real(*args, "-o", f"link/../{name}")
    assert foreseen == written
    assert foreseen == (f"link/../{name}: cannot write the output: operation not permitted: the folder "
                        f"{tmp_path / 'far'} is immutable (chattr +i)")
    _chattr(tmp_path / "far", "-i")
    clear = run_cli(*args, "-o", f"link/../{name}", "--dry-run", "--json")
    assert clear.exit_code == 0 and json.loads(clear.stdout)["would_refuse"] is None
    assert run_cli(*args, "-o", f"link/../{name}").exit_code == 0
    written_to = tmp_path / "far" / name
    read = load_file(written_to) if command == "convert" else {
        k: v for shard in sorted(written_to.glob("*.safetensors")) for k, v in load_file(shard).items()}
    assert read.keys() == tensors.keys() and all(torch.equal(read[k], tensors[k]) for k in tensors)
    assert not (tmp_path / name).exists() and _siblings(tmp_path) == []


# --- 2. append-only and immutable folders -------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["convert", "convert-bin", "shard", "shard-bin", "convert-folder"])
def test_an_append_only_folder_is_refused_before_anything_is_written(tmp_path: Path, chattr_works: list[Path],
                                                                     command: str) -> None:
    _source(tmp_path / "src")
    (tmp_path / "src" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "kept.txt").write_text("an earlier line")
    _chattr(folder, "+a")
    chattr_works.append(folder)
    weights = str(tmp_path / "src" / "model.safetensors")
    out, args = {
        "convert": (folder / "out.safetensors", ["convert", weights]),
        "convert-bin": (folder / "out.bin", ["convert", weights, "--dtype", "fp16"]),
        "shard": (folder / "out", ["shard", weights, "--max", "300B"]),
        "shard-bin": (folder / "out", ["shard", weights, "--max", "300B", "--format", "bin"]),
        "convert-folder": (folder / "out", ["convert", str(tmp_path / "src")]),
    }[command]
    foreseen, written = _dry_then_real(*args, "-o", str(out))
    assert foreseen == written == (f"{out}: cannot write the output: the folder {folder} is append-only (chattr +a): "
                                   "what is written in it can be neither renamed into place nor removed")
    assert sorted(p.name for p in folder.iterdir()) == ["kept.txt"]  # no output, no temporary, no staging folder
    assert (folder / "kept.txt").read_text() == "an earlier line"
    # Folders this run makes below it are not append-only: a write into one goes ahead.
    deeper = folder / "runs" / out.name
    if out.suffix:
        deeper.parent.mkdir()  # a single file's folder is not made by the write (as `cp` does not make it)
    assert run_cli(*args, "-o", str(deeper), "--dry-run").exit_code == 0
    done = run_cli(*args, "-o", str(deeper))
    assert done.exit_code == 0, done.stderr
    assert _siblings(folder) == [] and deeper.exists()


@pytest.mark.parametrize("command", ["convert", "shard"])
def test_an_immutable_folder_is_foreseen_with_the_writes_own_words(tmp_path: Path, chattr_works: list[Path],
                                                                   command: str) -> None:
    _source(tmp_path / "src")
    folder = tmp_path / "frozen"
    folder.mkdir()
    _chattr(folder, "+i")
    chattr_works.append(folder)
    weights = str(tmp_path / "src" / "model.safetensors")
    out = folder / ("out.safetensors" if command == "convert" else "out")
    args = ["convert", weights] if command == "convert" else ["shard", weights, "--max", "300B"]
    foreseen, written = _dry_then_real(*args, "-o", str(out))
    assert foreseen == written == (f"{out}: cannot write the output: operation not permitted: the folder {folder} is "
                                   "immutable (chattr +i)")
    assert list(folder.iterdir()) == []
