"""Faults found reviewing the merges since 41f2f545 (review78), one test per fault."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tests.helpers import run_cli


def _made_command(line: str) -> str:
    """The `mkdir -p ...` a refusal line prints to paste."""
    command = line.split("(create it first: ", 1)[1].rsplit(")", 1)[0]
    assert shlex.split(command)[:2] == ["mkdir", "-p"], line
    return command


def test_an_output_under_a_link_to_a_link_to_nothing_names_the_folder_at_the_end(tmp_path: Path) -> None:
    """`runs` -> `scratch` -> `/mnt/big/runs` (not mounted yet): the write said "a link to .../scratch, which does
    not exist (create it first: mkdir -p .../scratch)"; `scratch` is a link, and `mkdir -p` of it fails pasted ("File
    exists"). It names the folder the links end at; the printed command, run, lets the same write go through."""
    torch.manual_seed(0)
    source = tmp_path / "m.bin"
    weights = {"w": torch.randn(3, 3)}
    torch.save(weights, source)
    (tmp_path / "scratch").symlink_to(tmp_path / "big" / "runs")
    (tmp_path / "runs").symlink_to("scratch")
    out = tmp_path / "runs" / "x.safetensors"
    result = run_cli("convert", str(source), "-o", str(out))
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert f"a link to {tmp_path / 'big' / 'runs'}, which does not exist" in line, line
    command = _made_command(line)
    subprocess.run(command, shell=True, check=True, capture_output=True)
    assert run_cli("convert", str(source), "-o", str(out)).exit_code == 0
    assert torch.equal(load_file(tmp_path / "big" / "runs" / "x.safetensors")["w"], weights["w"])


def test_a_file_output_folders_below_a_link_to_nothing_are_in_the_folder_to_make(tmp_path: Path) -> None:
    """`-o runs/exp1/x.safetensors` where `runs` links to nothing: the command printed made the link's target only,
    and the write then failed again ("the output folder does not exist"), as a single file's folder is not made."""
    torch.manual_seed(0)
    source = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(2, 5)}, source)
    (tmp_path / "runs").symlink_to(tmp_path / "scratch")
    out = tmp_path / "runs" / "exp1" / "x.bin"
    for extra in ([], ["--dry-run"]):
        result = run_cli("convert", str(source), "-o", str(out), *extra)
        assert result.exit_code == (1 if extra else 2)
        line = result.stderr.strip() if not extra else result.stdout.strip().splitlines()[-1]
        assert f"mkdir -p {tmp_path / 'scratch' / 'exp1'})" in line, line
    subprocess.run(_made_command(line), shell=True, check=True, capture_output=True)
    assert run_cli("convert", str(source), "-o", str(out)).exit_code == 0
    assert (tmp_path / "scratch" / "exp1" / "x.bin").is_file()


def test_a_folder_output_under_a_link_to_nothing_is_not_said_to_be_under_a_file(tmp_path: Path) -> None:
    """`shard -o runs/sharded` where `runs` links to nothing: the write and its dry run said "a part of the output's
    path is a file, not a folder", of a link (StagingDir meets it as ENOTDIR). Both name the link and the folder to
    make, and the printed command lets the write go through."""
    torch.manual_seed(0)
    source = tmp_path / "m.safetensors"
    save_file({"a": torch.randn(4, 4), "b": torch.randn(4)}, source)
    (tmp_path / "runs").symlink_to(tmp_path / "scratch")
    out = tmp_path / "runs" / "sharded"
    for extra in ([], ["--dry-run"]):
        result = run_cli("shard", str(source), "--max", "1MB", "-o", str(out), *extra)
        assert result.exit_code == (1 if extra else 2)
        line = result.stderr.strip() if not extra else result.stdout.strip().splitlines()[-1]
        assert "is a file, not a folder" not in line, line
        assert f"under {tmp_path / 'runs'}, a link to {tmp_path / 'scratch'}, which does not exist" in line, line
    subprocess.run(_made_command(line), shell=True, check=True, capture_output=True)
    assert run_cli("shard", str(source), "--max", "1MB", "-o", str(out)).exit_code == 0
    assert (tmp_path / "scratch" / "sharded" / "model.safetensors").is_file()
