"""Printed advice, pasted, does what the run asked (lead, after regress8 and review75): a re-save for a file in a Hub
cache snapshot writes where the user stands, not into the cache (`inspect org/ts` suggested writing
model-state-dict.pt into huggingface_hub's snapshot folder, where no revision owns it); the base-model plan an
adapter suggests repeats the run's --strategy, --reserve and --training."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import one_error_line, run_cli
from tests.test_regress8 import torchscript_and_protocol1_repos


def _cache_listing(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*"))


def test_a_resave_pasted_for_a_cached_repo_writes_where_the_user_stands(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    script, legacy = torchscript_and_protocol1_repos(cache)
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


def test_the_base_plan_an_adapter_suggests_repeats_the_runs_workload(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """plan-devices on an adapter suggests planning its base: the command carried the devices and dtype, but not
    --reserve, --strategy or --training (review75 and regress8 noticed), so pasted it planned the base
    for other work than the user asked of the adapter."""
    import json
    import shlex

    from tests.test_user_mistakes11 import bert_lora_beside_its_base

    bert_lora_beside_its_base(tmp_path, "base model", "lora")
    monkeypatch.chdir(tmp_path)
    # (--kv-cache is refused on an adapter, which has no config.json to size it from)
    flags = ["--gpu", "1GB", "--strategy", "sequential", "--reserve", "100 MB", "--training"]
    planned = run_cli("plan-devices", "lora", *flags)
    assert planned.exit_code == 0, planned.stderr
    said = " ".join(planned.stderr.split())
    found = re.search(r"\(weightdoctor (plan-devices .*?)\) and add", said)
    assert found, said
    args = shlex.split(found.group(1))
    assert args == ["plan-devices", "base model", *flags], args
    base = run_cli(*args, "--json")
    assert base.exit_code in (0, 1), base.stderr
    data = json.loads(base.stdout)
    assert data["training"] is not None and data["strategy"] == "sequential", sorted(data)
