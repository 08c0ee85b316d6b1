"""diff-keys --model-class notes on a training checkpoint: the fix they suggest works when pasted."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fixtures.build import build_bert, write_hub_cache
from tests.helpers import REPO_ROOT, run_json


def _training_folder(folder: Path, file_name: str) -> None:
    """A model folder whose weights are a training checkpoint ({"state_dict": ..., "epoch": 3})."""
    model = build_bert()
    folder.mkdir(parents=True)
    model.config.save_pretrained(folder)
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, folder / file_name)


def _suggested_command(notes: list[str]) -> str:
    (note,) = [n for n in notes if "training checkpoint" in n]
    return "weightdoctor convert " + note.split("(weightdoctor convert ", 1)[1].split(", a folder", 1)[0]


@pytest.mark.parametrize(("file_name", "where", "source"), [
    ("checkpoint.pt", ".", "m"),  # a file name from_pretrained does not look for, too
    ("pytorch_model.bin", ".", "./m/"),
    ("pytorch_model.bin", "m", "."),  # run inside the folder
    ("pytorch_model.bin", ".", "org/m"),  # a repo id: into a folder with its config, not a bare file
])
def test_training_checkpoint_note_suggests_a_convert_that_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file_name: str, where: str, source: str,
) -> None:
    from transformers import BertForSequenceClassification

    _training_folder(tmp_path / "m", file_name)
    if source == "org/m":
        monkeypatch.setenv("HF_HUB_CACHE", str(write_hub_cache(tmp_path / "cache", source, tmp_path / "m")
                                               .parents[2]))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        (tmp_path / "m").rename(tmp_path / "gone")  # only the cache holds it
    monkeypatch.chdir(tmp_path / where)
    code, data = run_json("diff-keys", source, "--model-class", "BertForSequenceClassification")
    assert code == 0
    # Renaming a training checkpoint to pytorch_model.bin does not make it loadable: no note may say so.
    assert not any("rename it so" in note for note in data["notes"]), data["notes"]
    command = _suggested_command(data["notes"])
    output = (Path.cwd() / shlex.split(command)[4]).resolve()  # weightdoctor convert SOURCE -o OUTPUT ...
    assert not output.is_relative_to((tmp_path / "m").resolve())  # beside the source, not inside it
    # Pasted into a shell, as is.
    pasted = command.replace("weightdoctor ", f"{shlex.quote(sys.executable)} -m weightdoctor ")
    done = subprocess.run(pasted, shell=True, cwd=Path.cwd(), capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr
    _, info = BertForSequenceClassification.from_pretrained(output, output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"]) == (set(), set())
