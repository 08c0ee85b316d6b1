"""Advice printed for a file in a Hub cache snapshot writes where the user stands, not into the cache (regress8
noticed: a re-save pasted for `inspect org/ts` wrote model-state-dict.pt into huggingface_hub's snapshot folder,
beside the links to its blobs, where no revision owns it)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import one_error_line, run_cli


def _cached_repo(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    from fixtures.hub_cache import commit_of, write_snapshot

    return write_snapshot(cache, repo_id, commit_of(repo_id), files)


def _cache_listing(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*"))


def test_a_resave_pasted_for_a_cached_repo_writes_where_the_user_stands(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 3)), buffer)
    script = _cached_repo(cache, "org/ts", {"model.pt": buffer.getvalue()})
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buffer, pickle_protocol=1, _use_new_zipfile_serialization=False)
    legacy = _cached_repo(cache, "org/legacy", {"pytorch_model.bin": buffer.getvalue()})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(work)
    before = _cache_listing(cache)

    line = one_error_line(run_cli("inspect", "org/ts"))
    snippet = re.search(r"torch\.save\(torch\.jit\.load\('[^']*'\)\.state_dict\(\), '[^']*'\)", line)
    assert snippet, line
    assert snippet.group(0) == (f"torch.save(torch.jit.load({str(script / 'model.pt')!r}).state_dict(), "
                                "'model-state-dict.pt')"), line
    ran = subprocess.run([sys.executable, "-c", "import torch; " + snippet.group(0)], cwd=work,
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    saved = torch.load(work / "model-state-dict.pt", weights_only=True)
    assert set(saved) == {"weight", "bias"} and saved["weight"].shape == (3, 2)

    line = one_error_line(run_cli("inspect", "org/legacy"))
    assert "'pytorch_model-resaved.bin'" in line, line
    assert "-resaved" not in line.replace("'pytorch_model-resaved.bin'", ""), line
    # the same file named by its path in the cache, as typed
    line = one_error_line(run_cli("inspect", str(legacy / "pytorch_model.bin")))
    assert "'pytorch_model-resaved.bin'" in line and str(legacy / "pytorch_model-resaved.bin") not in line, line
    assert _cache_listing(cache) == before


def test_a_file_outside_a_cache_is_still_resaved_beside_itself(tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 3)), str(folder / "model.pt"))
    line = one_error_line(run_cli("inspect", str(folder / "model.pt")))
    assert f"{str(folder / 'model-state-dict.pt')!r})" in line, line
