"""Review 33: the merges of fixlist19 and thirdparty17 (bounded subfolder listing, the wrapper-prefix warning, the
verdict said of a file with no weights)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tests.helpers import run_cli


def _one_error_line(result: Any) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and result.stdout == "" and len(lines) == 1, (result.stdout, result.stderr)
    return " ".join(lines[0].split())


def test_a_trainer_output_dir_of_1500_saves_still_names_its_latest(tmp_path: Path) -> None:
    """A Trainer output_dir saved every 500 steps 1,500 times (checkpoint-500 ... checkpoint-750000): the subfolder
    bound looked into the first 1,000 names in string order, where checkpoint-750000 sorts late, and the refusal
    pointed at checkpoint-549500 as "the highest-numbered, the run's latest save"."""
    run = tmp_path / "output_dir"
    run.mkdir()
    (run / "config.json").write_text('{"model_type": "llama"}')
    weights = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(weights))
    for index in range(1, 1501):
        save = run / f"checkpoint-{500 * index}"
        save.mkdir()
        os.link(weights, save / "model.safetensors")
    line = _one_error_line(run_cli("inspect", str(run)))
    assert line.endswith(f"point at one, e.g. {run / 'checkpoint-750000'} (the highest-numbered, the run's latest "
                         "save)"), line
