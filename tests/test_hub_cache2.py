"""Repo ids read through Hub cache layouts written as huggingface_hub writes them (round 2 of the cache review)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch
from safetensors.torch import save
from typer.testing import Result

from fixtures.hub_cache import commit_of, write_snapshot
from tests.helpers import run_cli

CONFIG = b'{"model_type": "bert", "hidden_size": 4}'


def _line(result: Result) -> str:
    return " ".join(result.stderr.split())  # the console wraps long lines at its width


def _pasted(line: str) -> list[str]:
    """The first command a message quotes in backticks, as a shell splits it."""
    return shlex.split(line.split("`")[1])


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.mark.parametrize("revision", [None, "v1.0"])
def test_a_pipeline_folder_not_downloaded_is_not_said_missing_from_the_repo(offline: Path,
                                                                           revision: str | None) -> None:
    # `hf download org/pipe --include "unet/*"` caches one folder of the pipeline; `org/pipe/vae` offline said
    # "org/pipe has no folder vae", of the repo, which has it, and not how to fetch it.
    write_snapshot(offline, "org/pipe", commit_of("pipe"), {
        "model_index.json": b"{}", "unet/config.json": b"{}",
        "unet/diffusion_pytorch_model.safetensors": save({"u": torch.zeros(2)})}, refs=(revision or "main",))
    result = run_cli("inspect", "org/pipe/vae", "--json", *(["--revision", revision] if revision else []))
    assert result.exit_code == 2 and result.stdout == ""
    line = _line(result)
    assert "org/pipe has no folder vae in its cached snapshot" in line, line
    assert "the Hub cannot be reached (HF_HUB_OFFLINE is set)" in line
    assert _pasted(line) == ["hf", "download", "org/pipe", "--include", "vae/*",
                             *(["--revision", revision] if revision else [])]
