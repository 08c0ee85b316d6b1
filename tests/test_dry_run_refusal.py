"""`convert --dry-run` / `shard --dry-run` say when the write itself would be refused.

A dry run printed its plan and exited 0 whatever was in the way: `convert m.bin -o out.safetensors --dry-run` onto an
existing output, then the same without --dry-run, exit 2 ("output exists; pass --force"). A CI step that checks a
release with --dry-run first passed, and the real step failed. The dry run now reports the refusal the write would
make (`would_refuse` in --json, a line under the plan in text) and exits 1, --fail-on or not; each case below is also
written for real, and the dry run's line must be the one the write prints."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli


def _bin(path: Path) -> Path:
    torch.manual_seed(0)
    torch.save({"encoder.weight": torch.randn(8, 8), "encoder.bias": torch.randn(8)}, path)
    return path


def as_written(line: str) -> str:
    """The line a refused write printed, as a dry run foresees it."""
    return (line.removeprefix("error: ").removesuffix("; nothing was left behind")
            .removesuffix(", and nothing was left behind").replace("nothing was written", "nothing would be written"))


def dry_then_real(*args: str) -> tuple[dict, str]:
    """The dry run's --json report, then the one error line of the same command run for real (which must fail)."""
    dry = run_cli(*args, "--dry-run", "--json")
    assert dry.exit_code == 1, dry.stderr or dry.stdout
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True and report["write"] is None
    real = run_cli(*args)
    assert real.exit_code == 2 and real.stdout == ""
    lines = real.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return report, lines[0]


def test_convert_onto_an_existing_file_is_foreseen_and_left_as_it_was(tmp_path: Path) -> None:
    source = _bin(tmp_path / "m.bin")
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"an earlier output")
    report, line = dry_then_real("convert", str(source), "-o", str(out))
    assert report["would_refuse"] == f"{out}: output exists; pass --force to replace it" == as_written(line)
    assert out.read_bytes() == b"an earlier output"
    # With --force the write goes ahead, and the dry run says nothing is in the way.
    forced = run_cli("convert", str(source), "-o", str(out), "--dry-run", "--force", "--json")
    assert forced.exit_code == 0 and json.loads(forced.stdout)["would_refuse"] is None
    assert out.read_bytes() == b"an earlier output"


def test_convert_into_a_missing_folder_is_foreseen(tmp_path: Path) -> None:
    source = _bin(tmp_path / "m.bin")
    out = tmp_path / "nowhere" / "out.safetensors"
    report, line = dry_then_real("convert", str(source), "-o", str(out))
    assert report["would_refuse"] == as_written(line)
    assert "the output folder does not exist (create it first: mkdir -p " in report["would_refuse"]
    assert not out.parent.exists()


def test_shard_onto_a_model_folder_or_a_file_is_foreseen(tmp_path: Path) -> None:
    source = _bin(tmp_path / "m.bin")
    folder = tmp_path / "release"
    folder.mkdir()
    save_file({"x": torch.zeros(2)}, folder / "model.safetensors")
    report, line = dry_then_real("shard", str(source), "--max", "200B", "-o", str(folder))
    assert report["would_refuse"] == as_written(line)
    assert report["would_refuse"].startswith(f"{folder}: output exists; pass --force to replace it")
    assert "model.safetensors" in report["would_refuse"]  # which folder it is, before --force is typed
    assert [p.name for p in folder.iterdir()] == ["model.safetensors"]

    a_file = tmp_path / "shards"
    a_file.write_text("not a folder")
    report, line = dry_then_real("shard", str(source), "--max", "200B", "-o", str(a_file))
    assert report["would_refuse"] == f"{a_file}: output exists and is not a folder" == as_written(line)
    # --force replaces an earlier output, never a file with a folder: still refused.
    forced = run_cli("shard", str(source), "--max", "200B", "-o", str(a_file), "--dry-run", "--force", "--json")
    assert forced.exit_code == 1 and json.loads(forced.stdout)["would_refuse"] == report["would_refuse"]


class _Usage(NamedTuple):
    total: int
    used: int
    free: int


def test_too_little_disk_space_is_foreseen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(real(path).total, real(path).used, 100))
    source = _bin(tmp_path / "m.bin")
    for command in (["convert", str(source), "-o", str(tmp_path / "out.safetensors")],
                    ["shard", str(source), "--max", "200B", "-o", str(tmp_path / "shards")]):
        report, line = dry_then_real(*command)
        assert report["would_refuse"] == as_written(line)
        assert "not enough free disk space" in report["would_refuse"]
        assert "nothing would be written" in report["would_refuse"]


def test_a_dry_run_with_nothing_in_the_way_is_healthy_and_says_so_in_text(tmp_path: Path) -> None:
    source = _bin(tmp_path / "m.bin")
    out = tmp_path / "out.safetensors"
    clear = run_cli("convert", str(source), "-o", str(out), "--dry-run", "--fail-on", "info")
    assert clear.exit_code == 0, clear.stdout
    assert "nothing (dry run)" in clear.stdout and "refused" not in clear.stdout
    out.write_bytes(b"x")
    blocked = run_cli("convert", str(source), "-o", str(out), "--dry-run")
    assert blocked.exit_code == 1
    assert f"the write would be refused: {out}: output exists; pass --force to replace it\n" in blocked.stdout
    assert not os.path.exists(str(out) + ".tmp")
