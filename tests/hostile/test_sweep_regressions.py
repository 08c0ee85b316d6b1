"""Hostile inputs found by a sweep of every command: each must exit 2 with one line, fast, allocating little."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli


def _one_line_exit_2(*args: str, expected: str) -> None:
    result = run_cli(*args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stdout[:300], result.stderr)
    assert len(lines) == 1 and expected in lines[0] and "unexpected" not in lines[0], result.stderr


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("command", [["inspect"], ["inspect", "--stats"], ["check-dtype"], ["convert", "-o"]])
def test_an_expanded_tensor_is_not_materialized(tmp_path: Path, legacy: bool, command: list[str]) -> None:
    """A 1 KB file holding `torch.ones(1).expand(10**11)`: 400 GB of values over one stored float."""
    path = tmp_path / "expanded.bin"
    torch.save({"w": torch.ones(1).expand(10**11)}, path, _use_new_zipfile_serialization=not legacy)
    args = [*command, str(path)] if command[-1] != "-o" else [command[0], str(path), "-o", str(tmp_path / "o.st")]
    started = time.monotonic()
    _one_line_exit_2(*args, expected="'w' is a view of 400,000,000,000 bytes over a storage of 4")
    assert time.monotonic() - started < 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expanded.bin"]


def test_small_expanded_views_still_read(tmp_path: Path) -> None:
    path = tmp_path / "small.bin"
    torch.save({"position_ids": torch.arange(4).expand(1, 4), "b": torch.ones(4, 1).expand(4, 1000)}, path)
    result = run_cli("inspect", str(path), "--stats", "--json")
    assert result.exit_code == 0, result.stderr
