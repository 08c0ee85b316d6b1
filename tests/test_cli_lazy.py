"""The root command group builds only the command it runs, and behaves exactly like one that builds all six."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.helpers import REPO_ROOT
from weightdoctor.cli import _Commands, app
from weightdoctor.commands._group import OneLineErrorsGroup

COMMAND_MODULES = {name: spec.partition(":")[0] for name, spec in _Commands.lazy_commands.items()}


def _eager_app() -> typer.Typer:
    """The same app as weightdoctor.cli's, with every command registered (and built) up front, as before."""
    eager = typer.Typer(name=app.info.name, help=app.info.help, no_args_is_help=True, add_completion=False,
                        pretty_exceptions_enable=False, cls=OneLineErrorsGroup,
                        context_settings=app.info.context_settings)
    for name, spec in _Commands.lazy_commands.items():
        module_name, _, function_name = spec.partition(":")
        eager.command(name)(getattr(importlib.import_module(module_name), function_name))
    eager.callback()(app.registered_callback.callback)  # type: ignore[union-attr]
    return eager


ARGS = [
    [], ["--help"], ["--version"], ["--versio"], ["nosuch"], ["diff-kyes", "a", "b"], ["--version", "inspect"],
    *([name, "--help"] for name in _Commands.lazy_commands),
    *([name] for name in _Commands.lazy_commands),
    ["diff-keys", "--bogus", "a", "b"], ["diff-keys", "--fail-on", "bad", "a", "b"], ["inspect", "--sample", "0", "x"],
    ["diff-keys", "missing-a.safetensors", "missing-b.safetensors", "--json"],
]


@pytest.mark.parametrize("args", ARGS, ids=[" ".join(a) or "(none)" for a in ARGS])
def test_lazy_group_answers_as_the_eager_one(args: list[str]) -> None:
    runner = CliRunner()
    lazy = runner.invoke(app, args, prog_name="weightdoctor", terminal_width=100)
    eager = runner.invoke(_eager_app(), args, prog_name="weightdoctor", terminal_width=100)
    assert (lazy.exit_code, lazy.stdout, lazy.stderr) == (eager.exit_code, eager.stdout, eager.stderr)
    assert lazy.stdout or lazy.stderr


def test_root_help_lists_the_six_commands_with_their_one_line_help() -> None:
    result = CliRunner().invoke(app, ["--help"], prog_name="weightdoctor", terminal_width=200)
    assert result.exit_code == 0
    listed = [line.strip("│ ").split()[0] for line in result.stdout.splitlines()
              if line.strip("│ ").split()[:1] and line.strip("│ ").split()[0] in COMMAND_MODULES]
    assert listed == list(COMMAND_MODULES)
    assert "Diff the keys of checkpoint A against checkpoint B" in result.stdout


@pytest.mark.parametrize(("extra", "loaded"), [
    # Plain arguments take the fast path: no Typer, no command module.
    (["--json"], []),
    # `--fail-on=error` is left to Click: Typer builds the diff-keys command only.
    (["--json", "--fail-on=error"], ["typer", "weightdoctor.commands.diff_keys"]),
])
def test_a_run_imports_only_its_own_command(tmp_path: Path, extra: list[str], loaded: list[str]) -> None:
    """`diff-keys --json` in a fresh process: no other command module, and nothing heavy, is imported."""
    import numpy as np
    from safetensors.numpy import save_file

    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({"module.w": np.zeros(2, np.float32)}, str(a))
    save_file({"w": np.zeros(2, np.float32)}, str(b))
    watched = ["typer", *COMMAND_MODULES.values(), "torch", "transformers", "accelerate", "numpy", "rich",
               "huggingface_hub"]
    code = (
        "import os, sys\n"
        "os._exit = sys.exit  # the fast path ends with os._exit: see what was imported before it\n"
        "from weightdoctor.entry import main\n"
        f"sys.argv = ['weightdoctor', 'diff-keys', {str(a)!r}, {str(b)!r}, *{extra!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        f"    loaded = [m for m in {watched!r} if m in sys.modules]\n"
        "    print('EXIT', exc.code, 'LOADED', loaded, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                            env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert f"EXIT 1 LOADED {loaded!r}" in result.stderr, result.stderr
    assert json.loads(result.stdout)["suggested_renames"][0]["flag"] == "--rename '^module\\.='"
