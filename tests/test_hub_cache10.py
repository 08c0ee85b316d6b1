"""Hub sources against huggingface_hub's own answers: `hf download --local-dir` folders, typed repo ids
(`datasets/org/name`, `hf://` URIs, Hub web addresses) and the cache layouts behind them, all built in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from fixtures.hub_cache import commit_of
from tests.helpers import run_cli


def _one_line(text: str) -> str:
    return " ".join(text.split())  # the console wraps long lines at its width


def test_a_local_dir_download_cut_short_is_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `hf download org/x --local-dir x` moves each file into place once whole; cut short in model.safetensors, the
    # folder holds config.json and .cache/huggingface/download/<hash>.<etag>.incomplete. The error said only
    # "folder holds no weight file", as for a folder that never had weights.
    from huggingface_hub._local_folder import get_local_download_paths, read_download_metadata, write_download_metadata

    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    write_download_metadata(folder, "config.json", commit_of("x"), "etag-of-config")
    get_local_download_paths(folder, "model.safetensors").incomplete_path("a" * 64).write_bytes(b"partial")
    assert read_download_metadata(folder, "model.safetensors") is None  # huggingface_hub: not downloaded
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2 and result.stdout == ""
    line = _one_line(result.stderr)
    assert line.startswith(f"error: {folder}: folder holds no weight file")
    assert "it holds 1 unfinished download of `hf download --local-dir` (.cache/huggingface/download/*.incomplete)" \
        in line and "run that download again" in line


def test_a_whole_local_dir_download_reads_its_top_and_warns_of_nothing(tmp_path: Path) -> None:
    from huggingface_hub._local_folder import write_download_metadata

    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(save({"a": torch.zeros(2)}))
    write_download_metadata(folder, "model.safetensors", commit_of("x"), "etag")
    result = run_cli("inspect", str(folder), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["warnings"] == [] and data["resolved_path"] == str(folder)
