"""plan-devices names its source as typed in its errors: a Hub repo id not by its snapshot's path deep in the
cache, a relative folder not by its absolute path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.build import write_hub_cache
from tests.helpers import run_cli


@pytest.mark.parametrize("source", ["org/cfg", "org/cfg/sub"])
def test_nothing_to_plan_names_the_repo_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    files = tmp_path / "files"
    (files / "sub").mkdir(parents=True)
    config = json.dumps({"hidden_size": 32})  # no model_type, no weights: nothing to plan
    (files / "config.json").write_text(config)
    (files / "sub" / "config.json").write_text(config)
    cache = tmp_path / "cache"
    write_hub_cache(cache, "org/cfg", files)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("plan-devices", source, "--gpu", "1GB")
    assert result.exit_code == 2
    error = " ".join(result.stderr.split())
    assert error.startswith(f"error: {source}: nothing to plan"), error
    assert str(cache) not in error


@pytest.mark.parametrize("source", ["cfg", "./cfg/"])
def test_nothing_to_plan_names_a_local_folder_as_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str,
) -> None:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(json.dumps({"hidden_size": 32}))
    monkeypatch.chdir(tmp_path)
    result = run_cli("plan-devices", source, "--gpu", "1GB")
    assert result.exit_code == 2
    error = " ".join(result.stderr.split())
    assert error.startswith(f"error: {source}: nothing to plan"), error
