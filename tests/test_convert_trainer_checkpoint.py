"""A Trainer's checkpoint-N/ converted or sharded: the output is a model, so its training state stays behind, the
progress file (trainer_state.json) included: copied alone, it made the output look like a checkpoint to resume,
with the optimizer and scheduler it names gone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO_ROOT, run_json


@pytest.mark.parametrize("command", [["convert", "--dtype", "fp16"], ["shard", "--max", "200KB"]])
def test_a_trainer_checkpoints_state_is_left_out_of_a_converted_model(tmp_path: Path, command: list[str]) -> None:
    import shutil

    checkpoint = tmp_path / "checkpoint-500"
    shutil.copytree(REPO_ROOT / "fixtures" / "example", checkpoint)
    torch.save({"state": {}, "param_groups": []}, checkpoint / "optimizer.pt")
    torch.save({"last_epoch": 500}, checkpoint / "scheduler.pt")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 500, "log_history": []}))
    out = tmp_path / "out"
    code, data = run_json(command[0], str(checkpoint), "-o", str(out), *command[1:])
    assert code == 0, data
    written = {p.name for p in out.iterdir()}
    assert "config.json" in written
    assert not written & {"trainer_state.json", "optimizer.pt", "scheduler.pt"}, written
    warnings = " ".join(data["plan"]["warnings"])
    assert "trainer_state.json (Trainer's progress, training state" in warnings, warnings
    assert "optimizer.pt (training state" in warnings and "scheduler.pt (training state" in warnings, warnings
