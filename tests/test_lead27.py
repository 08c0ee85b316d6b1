"""Fixes made by the lead in the twenty-seventh session, each with the fault it shows (one test per fault)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import run_cli


def test_a_checkpoint_of_only_a_wrapped_state_dict_is_not_said_to_leave_entries_out(tmp_path: Path) -> None:
    """`{"model": state_dict}` and nothing else (fairseq2's model.pt, many training scripts): convert and shard
    warned "(not optimizer or other entries)", entries the file does not have. They say the state dict is written
    unwrapped, and the path a loader read it at; a checkpoint with other entries still names them."""
    torch.manual_seed(0)
    weights = {"encoder.weight": torch.randn(4, 4)}
    for wrapped, path in [({"model": weights}, "checkpoint['model']"),
                          ({"state": {"model": weights}}, "checkpoint['state']['model']")]:
        source = tmp_path / "wrapped.pt"
        torch.save(wrapped, source)
        for command, extra in [("convert", ["-o", str(tmp_path / "out.safetensors")]),
                               ("shard", ["--single", "-o", str(tmp_path / "shards")])]:
            result = run_cli(command, str(source), *extra, "--dry-run", "--json")
            assert result.exit_code == 0, result.stderr
            warnings = json.loads(result.stdout)["warnings"]
            assert len(warnings) == 1 and "optimizer" not in warnings[0], warnings
            assert "written unwrapped, at the top level (the checkpoint holds nothing beside it)" in warnings[0]
            assert f"a loader that reads {path} must read the output's names directly" in warnings[0]
    torch.save({"model": weights, "optimizer": {"lr": 0.1}}, tmp_path / "train.pt")
    result = run_cli("convert", str(tmp_path / "train.pt"), "-o", str(tmp_path / "o.safetensors"), "--dry-run",
                     "--json")
    assert "not the checkpoint's other entries (optimizer)" in json.loads(result.stdout)["warnings"][0]
