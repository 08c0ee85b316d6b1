"""The quick subset of scripts/diff_keys_sweep.py: diff-keys --model-class against from_pretrained's own report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_sweep_equals_from_pretrained_on_every_case() -> None:
    """Six architectures (Llama, GPT-2, BERT, T5, ViT, Mixtral): head into base and back, DDP / compile prefixes;
    the three key sets of each case equal from_pretrained's, and the CLI's --json equals the Python API's."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "diff_keys_sweep.py"), "--quick"], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=False, timeout=300)
    summary = re.search(r"cases: (\d+)  equal: (\d+)  different: (\d+)  errors: (\d+)", done.stdout)
    assert summary is not None, done.stdout[-2000:] + done.stderr[-2000:]
    cases, equal, different, errors = map(int, summary.groups())
    assert (different, errors) == (0, 0), "\n".join(line for line in done.stdout.splitlines() if "equal" not in line)
    assert cases == equal >= 40
    assert "/cli " in done.stdout  # the CLI was compared too
    assert done.returncode == 0
