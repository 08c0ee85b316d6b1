"""floor1: weightdoctor at the lowest releases pyproject.toml accepts (typer 0.20 on Click 8.4, transformers 5.17,
huggingface_hub 1.18, accelerate 1.15, numpy 1.26).

Every command, and the suite's files that exercise the dependencies, were run in venvs of those floors (and of lower
ones first: typer 0.15.4 on Click 8.1). What failed there and was fixed is emulated here on the newest releases CI
runs: Typer without a vendored Click, a Click without NoArgsIsHelpError (8.1, which only a forced install puts beside
huggingface_hub 1.18 now), numpy 1.x's pickled dtype flags. Where an older release lacked what weightdoctor needs, the
floor was raised instead (pyproject.toml says which API); the last test keeps README's statement of the floors equal
to pyproject's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                          timeout=120)


def test_the_cli_imports_on_a_typer_that_does_not_vendor_click() -> None:
    """Typer before its vendored Click (0.15.4, 0.20, 0.24 have no `typer._click`) runs on the Click package: importing
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
    """Click 8.1 (what pip installed with Typer 0.15.4) has no NoArgsIsHelpError: evaluating `except
    click_exceptions.NoArgsIsHelpError` raised AttributeError, so every usage error (`plan-devices m --kv-cache 128`)
    ended in a traceback and exit 1 instead of its one line and exit 2."""
    code = f"""
import sys
from weightdoctor.commands import _group
if hasattr(_group.click_exceptions, "NoArgsIsHelpError"):
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


def test_a_bare_run_exits_2_with_the_help_on_a_click_that_prints_it_itself() -> None:
    """Click 8.1 answers a bare `weightdoctor` (no_args_is_help) by printing the help and exiting 0 itself, where
    Click 8.2+ raises NoArgsIsHelpError and the run exits 2, as every usage error does: the exit code depended on
    Click's release."""
    pytest.importorskip("typer._click")  # the emulation patches Typer's vendored Click
    code = """
import sys
from typer._click import exceptions
del exceptions.NoArgsIsHelpError
from weightdoctor.commands import _group
import weightdoctor.cli

def as_click_81(ctx):  # what Click 8.1's Group.parse_args does for no arguments: echo the help, ctx.exit()
    print(ctx.get_help())
    ctx.exit()

exceptions.NoArgsIsHelpError = as_click_81  # raised by Typer's group as `_click.exceptions.NoArgsIsHelpError(ctx)`
sys.argv = ["weightdoctor"]
weightdoctor.cli.app()
"""
    result = _run(code)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stdout[-300:])
    assert "Usage: weightdoctor [OPTIONS] COMMAND [ARGS]..." in result.stdout and "plan-devices" in result.stdout


def _aligned_struct_pickle(flags: int) -> bytes:
    """A pickle of an aligned structured numpy dtype whose BUILD state carries `flags`, as numpy 1.26 writes it
    (-112: its flags 0x90 as a signed char; numpy 2 writes 144)."""
    import pickle

    np = pytest.importorskip("numpy")
    dtype = np.dtype([("a", "i1"), ("b", "f8")], align=True)
    constructor, args, state = dtype.__reduce__()

    class AsNumpy126:
        def __reduce__(self) -> tuple[object, ...]:
            return constructor, args, (*state[:7], flags)

    return pickle.dumps({"aligned": AsNumpy126()}, protocol=2)


def test_an_aligned_struct_dtype_pickled_by_numpy_1_is_not_suspicious() -> None:
    """numpy 1.26 (numpy's floor) pickles the flags of `np.dtype([...], align=True)` as -112: the scan called every
    such pickle suspicious ("BUILD sets the flags of a structured or subarray numpy.dtype to -112 (-0x70)"), and
    inspect refused the file (exit 2). A negative value with a flag no fields have (-92: 0xa4 as a char, pointer
    and getitem flags) is still refused."""
    import pickle

    from weightdoctor.security.scan import scan_bytes

    written = _aligned_struct_pickle(-112)
    assert pickle.loads(written)["aligned"].names == ("a", "b")  # numpy reads it
    report = scan_bytes(written)
    assert report.verdict == "safe" and report.problems == [], report.summary()
    hostile = scan_bytes(_aligned_struct_pickle(-92))
    assert hostile.verdict != "safe" and "to -92 (-0x5c)" in hostile.summary(), hostile.summary()


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
