"""Small helpers for tests: running the CLI in-process with stdout and stderr kept apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from weightdoctor.cli import app

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, runner: CliRunner | None = None) -> Result:
    """Run `weightdoctor ARGS` in-process; `result.stdout` and `result.stderr` are separate."""
    return (runner or CliRunner()).invoke(app, [str(a) for a in args], catch_exceptions=False)


def run_json(*args: str) -> tuple[int, Any]:
    result = run_cli(*args, "--json")
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None


def run_subprocess(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run `python -m weightdoctor ARGS` in a fresh interpreter (for import and exit-code checks)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "weightdoctor", *map(str, args)],
        capture_output=True, text=True, env=full_env, cwd=kwargs.pop("cwd", REPO_ROOT), **kwargs,
    )
