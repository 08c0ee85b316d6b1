"""Review of the memory guard (memory2) and a disk-space check before convert and shard write.

Inputs are sparse files (holes: no disk taken), so nothing here writes more than a few MB: the free space is patched
where a test needs a small disk, and a child process whose file-size limit (RLIMIT_FSIZE) is 64 MB runs the one test
that uses the real free space, so that a broken check could not fill the disk."""

from __future__ import annotations

import collections
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import REPO_ROOT, one_error_line, run_cli, run_json
from weightdoctor import rewrite

_Usage = collections.namedtuple("_Usage", "total used free")


def _sparse_safetensors(path: Path, *counts: int) -> Path:
    """A safetensors file of float32 tensors a.weight, b.weight, ... of `counts` elements, their data a hole."""
    header, at = {}, 0
    for index, count in enumerate(counts):
        header[f"{'abcdefgh'[index]}.weight"] = {"dtype": "F32", "shape": [count], "data_offsets": [at, at + 4 * count]}
        at += 4 * count
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(raw)) + raw)
        out.truncate(8 + len(raw) + at)
    return path


@pytest.fixture
def one_mb_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk with 1,000,000 bytes free, as the output's folder reports it."""
    real = shutil.disk_usage

    def small(path: str | os.PathLike[str]) -> _Usage:
        found = real(path)
        return _Usage(found.total, found.used, 1_000_000)

    monkeypatch.setattr(shutil, "disk_usage", small)


def test_convert_larger_than_the_free_space_is_refused_before_writing(tmp_path: Path, one_mb_free: None) -> None:
    """convert of a checkpoint of 8 MB onto a disk of 1 MB free began writing, and failed late ("no space left on
    the device") after filling the disk. Refused first, in one line naming the output, the bytes needed and free."""
    source = _sparse_safetensors(tmp_path / "m.safetensors", 1 << 20, 1 << 20)
    out = tmp_path / "out" / "m.safetensors"
    out.parent.mkdir()
    result = run_cli("convert", str(source), "-o", str(out))
    assert one_error_line(result) == (
        f"error: {out}: not enough free disk space: the output needs at least 8.39 MB (8,388,608 bytes) and "
        f"{out.parent} has 1.00 MB (1,000,000 bytes) free: nothing was written")
    assert list(out.parent.iterdir()) == []


def test_shard_larger_than_the_free_space_is_refused_before_writing(tmp_path: Path, one_mb_free: None) -> None:
    source = _sparse_safetensors(tmp_path / "m.safetensors", 1 << 20, 1 << 20)
    out = tmp_path / "shards"
    result = run_cli("shard", str(source), "-o", str(out), "--max", "5MB")
    assert one_error_line(result) == (
        f"error: {out}: not enough free disk space: the output needs at least 8.39 MB (8,388,608 bytes) and "
        f"{tmp_path} has 1.00 MB (1,000,000 bytes) free: nothing was written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_a_dry_run_warns_that_the_write_would_not_fit(tmp_path: Path, one_mb_free: None) -> None:
    source = _sparse_safetensors(tmp_path / "m.safetensors", 1 << 20, 1 << 20)
    out = tmp_path / "shards"
    code, report = run_json("shard", str(source), "-o", str(out), "--max", "5MB", "--dry-run")
    assert code == 0
    assert (f"{out}: not enough free disk space: the output needs at least 8.39 MB (8,388,608 bytes) and {tmp_path} "
            "has 1.00 MB (1,000,000 bytes) free: the write would be refused") in report["warnings"]
    result = run_cli("convert", str(source), "-o", str(tmp_path / "c.bin"), "--dry-run")
    assert result.exit_code == 0
    assert "c.bin: not enough free disk space: the output needs at least 8.39 MB" in result.stderr
    assert not out.exists() and not (tmp_path / "c.bin").exists()


def test_an_output_that_fits_is_written_without_a_warning(tmp_path: Path) -> None:
    source = _sparse_safetensors(tmp_path / "m.safetensors", 1000, 24)
    result = run_cli("convert", str(source), "-o", str(tmp_path / "c.safetensors"))
    assert result.exit_code == 0, result.stderr
    assert "disk space" not in result.stderr
    assert (tmp_path / "c.safetensors").stat().st_size > 4096


def test_a_sparse_side_file_counts_its_blocks_not_its_size(tmp_path: Path) -> None:
    """A model folder's README.md of 1 TB that takes no disk is copied with its holes (`copy_side_file`): the check
    counts what it takes, not its size, and does not refuse the folder."""
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"w": torch.arange(6.0)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text("{}")
    with open(folder / "README.md", "wb") as readme:
        readme.truncate(1 << 40)
    assert rewrite.bytes_to_write([], [rewrite.SideFile(folder / "README.md", "README.md")]) < 1 << 20
    code, report = run_json("convert", str(folder), "-o", str(tmp_path / "out"), "--dry-run")
    assert code == 0
    assert not [w for w in report["warnings"] if "disk space" in w]


def test_a_sparse_input_larger_than_the_real_disk_is_refused(tmp_path: Path) -> None:
    """The figures of the report: a sparse input (no disk taken) whose tensors, written out in full, take more than
    the disk's real free space. Run in a child limited to files of 64 MB: a check that let it through fails there
    at 64 MB (EFBIG) instead of filling the disk."""
    free = shutil.disk_usage(tmp_path).free
    count = (free + (1 << 40)) // 8  # two tensors of float32: free + 1 TiB in all
    source = _sparse_safetensors(tmp_path / "m.safetensors", count, count)
    out = tmp_path / "m-copy.safetensors"
    code = (f"import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, ({64 << 20}, {64 << 20})); "
            "from weightdoctor.entry import main; sys.argv = ['weightdoctor'] + sys.argv[1:]; main()")
    for args in (["convert", str(source), "-o", str(out)],
                 ["shard", str(source), "-o", str(tmp_path / "shards"), "--max", "100GB"]):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                              cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "not enough free disk space: the output needs at least" in lines[0], done.stderr
        assert f"({8 * count:,} bytes)" in lines[0] and "free: nothing was written" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
