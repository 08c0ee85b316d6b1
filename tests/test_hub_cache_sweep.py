"""The Hub cache oracle sweep (scripts/hub_cache_sweep.py --quick): every layout agrees with huggingface_hub and
transformers (~10 s: one oracle process for the default cache, one per environment case)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_quick_hub_cache_sweep_agrees_with_huggingface_hub() -> None:
    done = subprocess.run([sys.executable, "scripts/hub_cache_sweep.py", "--quick"], capture_output=True, text=True,
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = re.search(r"(\d+) layouts, (\d+) checks, (\d+) agree, 0 mismatch", done.stdout)
    assert summary is not None, done.stdout[-500:]
    layouts, checks, agree = map(int, summary.groups())
    assert layouts >= 20 and checks == agree >= 40
    # Both ends of the contract were exercised: loads that must match, and failures that must be one line.
    assert " loads model.safetensors.index.json" in done.stdout and " fails " in done.stdout
