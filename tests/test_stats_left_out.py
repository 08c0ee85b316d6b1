"""`inspect --stats` says which tensors it has no statistics for, and keeps the name column's header whole.

A checkpoint of complex or integer tensors alone printed an empty statistics table and "no findings"; beside floating
ones they were left out without a word. Names of a letter or two had the column's header folded a letter a line.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from tests.helpers import run_cli


def _mixed(path: Path, *, floating: bool = True) -> Path:
    torch.manual_seed(0)
    tensors = {"c": torch.randn(4, 4, dtype=torch.complex64), "i": torch.arange(4),
               "b": torch.ones(3, dtype=torch.bool)}
    if floating:
        tensors["w"] = torch.randn(4, 4)
    save_file(tensors, str(path))
    return path


def test_tensors_without_statistics_are_counted_by_dtype(tmp_path: Path) -> None:
    result = run_cli("inspect", _mixed(tmp_path / "m.safetensors"), "--stats", runner=CliRunner(env={"COLUMNS": "120"}))
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "3 tensors not analysed (not floating point, or not decoded):" in out
    for kind in ("int64 ×1", "complex64 ×1", "bool ×1"):
        assert kind in out
    assert "│ w " in result.stdout  # the floating tensor keeps its row


def test_a_checkpoint_with_no_floating_tensor_says_so_instead_of_an_empty_table(tmp_path: Path) -> None:
    result = run_cli("inspect", _mixed(tmp_path / "m.safetensors", floating=False), "--stats",
                     runner=CliRunner(env={"COLUMNS": "120"}))
    assert result.exit_code == 0, result.output
    assert "no floating-point tensor to analyse" in result.stdout
    assert "┃ mean" not in result.stdout  # no table without rows
    assert "3 tensors not analysed" in " ".join(result.stdout.split())


def test_the_name_header_stays_whole_beside_one_letter_names(tmp_path: Path) -> None:
    result = run_cli("inspect", _mixed(tmp_path / "m.safetensors"), "--stats", runner=CliRunner(env={"COLUMNS": "80"}))
    assert result.exit_code == 0, result.output
    stats = result.stdout[result.stdout.index("Weights: statistics"):]
    assert "┃ name" in stats
    assert "┃ n " not in stats


def test_json_lists_the_same_tensors_as_skipped(tmp_path: Path) -> None:
    import json

    result = run_cli("inspect", _mixed(tmp_path / "m.safetensors"), "--stats", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert sorted(report["weights"]["skipped"]) == ["b", "c", "i"]
