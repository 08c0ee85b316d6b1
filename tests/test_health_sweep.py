"""The health sweep (scripts/health_sweep.py) on one small slice: real training, every verdict right."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO_ROOT


def test_health_sweep_slice_is_all_right() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/health_sweep.py", "--quick", "--models", "gpt2", "bert",
         "--regimes", "fresh", "frozen", "fresh-head", "--dtypes", "bf16", "--steps", "60"],
        capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=300,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert any(" frozen bf16 " in line and "matrix/init" in line and line.startswith("ok") for line in lines)
    assert lines[-1].startswith("groups: ") and "exit codes: 6, right 6" in lines[-1], lines[-1]
