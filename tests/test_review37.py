"""Review of the day's merged changes (review37): each test fails before its fix."""

from __future__ import annotations

import pickle
import re
import shlex
import warnings
from pathlib import Path

import torch

from tests.helpers import run_cli


def test_the_merge_weights_command_for_an_fsdp_folder_is_pasteable(tmp_path: Path) -> None:
    """Accelerate's FSDP save_state folder under a path with a space: the `accelerate merge-weights FOLDER OUTDIR`
    the error prints left the folder bare (`root two/run/pytorch_model_fsdp_0` pasted as two words), where the
    subfolder a folder's error says to point at was shell-quoted (cb1a95b: as every command a message prints)."""
    import torch.distributed.checkpoint as dcp

    folder = tmp_path / "root two" / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no process group: DCP says it saves from one process
        dcp.save({"model": {"w": torch.ones(2, 2)}}, checkpoint_id=str(folder / "pytorch_model_fsdp_0"))
    torch.save({"last_epoch": 1}, folder / "scheduler.bin")
    (folder / "random_states_0.pkl").write_bytes(pickle.dumps({"step": 1}))
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2 and result.stdout == ""
    line = " ".join(result.stderr.split())
    command = re.search(r"accelerate merge-weights (.*) OUTDIR writes", line)
    assert command is not None, line
    assert shlex.split(command.group(1)) == [str(folder / "pytorch_model_fsdp_0")], line
