"""floor1: weightdoctor at the lowest releases pyproject.toml accepts (typer 0.15.4 on Click 8.1, transformers 5.1.0).

The whole suite and every command were run in a venv of those floors (see the report of branch floor1). What failed
there and was fixed is emulated here on the newest releases CI runs: Typer without a vendored Click, a Click without
NoArgsIsHelpError, transformers 5.1's `rename_source_key(..., prefix, ...)` and its LoadStateDictInfo without
`skipped_pp_keys`.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                          timeout=120)


def test_the_cli_imports_on_a_typer_that_does_not_vendor_click() -> None:
    """Typer before its vendored Click (0.15: `typer._click` does not exist) runs on the Click package: importing
    the CLI failed with `ModuleNotFoundError: No module named 'typer._click'` on every command, --help included.
    (The newest Typer cannot run a command with its own Click hidden, so the import and Click's errors are checked.)"""
    pytest.importorskip("click")
    code = """
import sys
import typer  # noqa: F401 - imported first: typer itself keeps its own Click
sys.modules["typer._click"] = None  # what `from typer._click import ...` meets on Typer 0.15
import click
from weightdoctor.commands import _group
assert _group.click_core is click.core and _group.click_exceptions is click.exceptions, _group.click_core
print(_group.usage_line(click.exceptions.UsageError("Missing argument 'SOURCE'."), "weightdoctor inspect"))
"""
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("error: weightdoctor inspect: Missing argument 'SOURCE'. (see weightdoctor "
                                     "inspect --help)"), result.stdout


def test_a_usage_error_is_one_line_on_a_click_without_no_args_is_help_error(tmp_path: Path) -> None:
    """Click 8.1 (what pip installs with Typer 0.15.4) has no NoArgsIsHelpError: evaluating `except
    click_exceptions.NoArgsIsHelpError` raised AttributeError, so every usage error (`plan-devices m --kv-cache 128`)
    ended in a traceback and exit 1 instead of its one line and exit 2."""
    code = f"""
import sys
from weightdoctor.commands import _group
del _group.click_exceptions.NoArgsIsHelpError  # as Click 8.1 has it
import importlib
importlib.reload(_group)
import weightdoctor.cli
importlib.reload(weightdoctor.cli)
sys.argv = ["weightdoctor", "plan-devices", {str(tmp_path)!r}, "--kv-cache", "128"]
weightdoctor.cli.app()
"""
    result = _run(code)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    assert re.fullmatch(r"error: weightdoctor plan-devices: Got unexpected extra argument\S* \(128\) \(see "
                        r"weightdoctor plan-devices --help\)", result.stderr.strip()), result.stderr


@dataclasses.dataclass
class _LoadStateDictInfo51:
    """transformers 5.1's LoadStateDictInfo: no `skipped_pp_keys` field."""

    missing_keys: set[str]
    unexpected_keys: set[str]
    mismatched_keys: set[tuple[str, tuple[int], tuple[int]]]
    error_msgs: list[str]
    conversion_errors: dict[str, str]

    def missing_and_mismatched(self) -> set[str]:
        return self.missing_keys | {k[0] for k in self.mismatched_keys}


def _simulate_bert(key_mapping: dict[str, str] | None) -> Any:
    from fixtures.build import build_bert
    from weightdoctor.load_simulation import simulate_from_pretrained
    from weightdoctor.meta_model import build_meta_model

    bert = build_bert()
    shapes = {name: tuple(tensor.shape) for name, tensor in bert.state_dict().items()}
    shapes["bert.pooler.dense.weight"] = (32, 31)  # one mismatched shape
    del shapes["classifier.bias"]  # one missing key
    model = build_meta_model(bert.config.to_dict(), "BertForSequenceClassification")
    return simulate_from_pretrained(model, shapes, key_mapping=key_mapping)


def test_model_class_simulation_runs_on_transformers_5_1s_loading_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers 5.1 names rename_source_key's fourth parameter `prefix` (later `base_model_prefix`) and its
    LoadStateDictInfo has no `skipped_pp_keys`: diff-keys --model-class stopped on `unexpected TypeError:
    LoadStateDictInfo.__init__() got an unexpected keyword argument 'skipped_pp_keys'`, and a key_mapping that moves
    a key the model has (the fallback lookup) on `unexpected keyword argument 'base_model_prefix'`."""
    import transformers.core_model_loading as loading
    import transformers.utils.loading_report as report

    key_mapping = {r"^bert\.pooler\.": "bert.pooling."}  # moves model keys away: the fallback lookup runs
    newest = _simulate_bert(key_mapping)
    rename = loading.rename_source_key
    calls: list[str] = []

    def rename_source_key_51(source_key: str, weight_renamings: Any, weight_converters: Any, prefix: str | None = None,
                             meta_state_dict: dict[str, Any] | None = None) -> Any:
        calls.append(source_key)
        return rename(source_key, weight_renamings, weight_converters, prefix, meta_state_dict)

    assert "base_model_prefix" not in inspect.signature(rename_source_key_51).parameters
    monkeypatch.setattr(loading, "rename_source_key", rename_source_key_51)
    monkeypatch.setattr(report, "LoadStateDictInfo", _LoadStateDictInfo51)
    old = _simulate_bert(key_mapping)
    assert calls.count("bert.pooler.dense.weight") == 2  # looked up again without the renamings
    assert (old.missing, old.unexpected, old.mismatched) == (newest.missing, newest.unexpected, newest.mismatched)
    assert old.missing == {"classifier.bias"}
    assert {key for key, *_ in old.mismatched} == {"bert.pooler.dense.weight"}


def test_pyprojects_floors_are_the_ones_the_readme_states() -> None:
    """The floors measured (README's Versions line says which ran the suite) and pyproject's are the same."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = dict(re.match(r"([A-Za-z0-9_-]+)>=([0-9.]+)", spec).groups() for spec in declared)  # type: ignore[union-attr]
    readme = (REPO_ROOT / "README.md").read_text()
    stated = re.search(r"Lowest versions[^\n]*\n(?:[^\n]+\n)*", readme)
    assert stated is not None, "README has no 'Lowest versions' sentence"
    for package in ("transformers", "accelerate", "huggingface_hub", "typer", "safetensors", "rich", "numpy"):
        assert f"{package} {floors[package]}" in " ".join(stated.group(0).split()), (package, floors[package])
