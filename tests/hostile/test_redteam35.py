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
3. The free-space check counted tensor bytes and side files' bytes, not the headers nor the file system's blocks: on
   a 64 KiB tmpfs a model folder of 40 KiB of weights and 9 side files of 2 bytes (9 pages of 4 KiB) was said to go
   ahead, and the write failed "no space left on the device"; a --force cast needing 20,480 bytes of data with 20,480
   free did the same (its header took a sixth page). Now a lower bound of each file's header records and whole blocks
   is counted too; the figure said stays the data's, with the blocks' added where they alone do not fit.

Not tried: a non-root user's --force onto a folder holding another user's 0600 file (carried over by hard link, refused
under protected_hardlinks, then copied, which fails): the venv cannot be run as `nobody` here.
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
from tests.test_review77 import _dry_then_real, _source


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


# --- 3. a small file system: headers and whole blocks -------------------------------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 64 KiB (16 pages of 4 KiB) mounted for the test; skipped where mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def _forty_kib_model(folder: Path, side_files: int) -> dict[str, torch.Tensor]:
    """A model folder whose one tensor holds 40 KiB of float32 data (10 pages), and `side_files` JSON files of 2
    bytes (a page each on a tmpfs)."""
    torch.manual_seed(3535)
    tensors = {"w": torch.randn(10 * 1024)}
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors")
    for number in range(side_files):
        (folder / f"extra{number}.json").write_text("{}")
    return tensors


def test_side_files_that_fit_by_bytes_but_not_by_blocks_are_foreseen(tmp_path: Path, small_tmpfs: Path) -> None:
    _forty_kib_model(tmp_path / "src", side_files=9)
    out = small_tmpfs / "out"
    foreseen, written = _dry_then_real("convert", str(tmp_path / "src"), "-o", str(out))
    assert foreseen == written.replace("nothing was written", "nothing would be written")
    assert foreseen == (f"{out}: not enough free disk space: the output needs at least 40.98 KB (40,978 bytes), 81,920 "
                        "bytes with its headers and the file system's blocks of 4,096 bytes, and "
                        f"{small_tmpfs} has 65.54 KB (65,536 bytes) free: nothing would be written")
    assert list(small_tmpfs.iterdir()) == []


def test_a_cast_whose_data_is_exactly_the_free_space_is_foreseen(tmp_path: Path, small_tmpfs: Path) -> None:
    tensors = _forty_kib_model(tmp_path / "src", side_files=0)
    source = str(tmp_path / "src" / "model.safetensors")
    # One file of 40 KiB and its header: 11 of the 16 pages, and 20,480 bytes left, the fp16 cast's data exactly.
    first = small_tmpfs / "model.safetensors"
    assert run_cli("convert", source, "-o", str(first)).exit_code == 0
    assert torch.equal(load_file(first)["w"], tensors["w"])
    assert os.statvfs(small_tmpfs).f_bavail * os.statvfs(small_tmpfs).f_frsize == 20_480
    foreseen, written = _dry_then_real("convert", source, "-o", str(first), "--dtype", "fp16", "--force")
    assert foreseen == written.replace("nothing was written", "nothing would be written")
    assert "needs at least 20.48 KB (20,480 bytes), 24,576 bytes with its headers" in foreseen
    assert torch.equal(load_file(first)["w"], tensors["w"])  # the earlier output, as it was
    assert [p.name for p in small_tmpfs.iterdir()] == ["model.safetensors"]
    # A cast that fits by its blocks is still written: 5,120 values in fp16 and a header take 3 of the 5 pages left.
    half = tmp_path / "half.safetensors"
    save_file({"w": tensors["w"][:5120].clone()}, half)
    args = ["convert", str(half), "-o", str(small_tmpfs / "half.safetensors"), "--dtype", "fp16"]
    clear = run_cli(*args, "--dry-run", "--json")
    assert clear.exit_code == 0 and json.loads(clear.stdout)["would_refuse"] is None
    assert run_cli(*args).exit_code == 0
    assert torch.equal(load_file(small_tmpfs / "half.safetensors")["w"], tensors["w"][:5120].half())
