"""The quick slice of scripts/diff_pairs_sweep.py: diff-keys A B and --values against torch, per workflow pair."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PAIRS = ("base->head", "tuned-head->base", "trained", "fp16", "bf16", "bin", "ddp", "compile", "vocab+8", "lora",
         "sharded")


def test_quick_sweep_agrees_with_torch_on_every_pair() -> None:
    """Llama, GPT-2, BERT, GPT-NeoX, Mixtral x 11 pairs (GPT-2 and BERT also with twice the positions): key sets
    equal load_state_dict's, the suggested renames re-check and load strictly after convert, values equal torch's
    float64 figures, and the CLI's --json equals the in-process run."""
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "diff_pairs_sweep.py"), "--quick"],
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True,
                          text=True, check=False, timeout=300)
    summary = re.search(r"cases: (\d+)  equal: (\d+)  different: (\d+)  errors: (\d+)  checks: (\d+)", done.stdout)
    assert summary is not None, done.stdout[-2000:] + done.stderr[-2000:]
    cases, equal, different, errors, checks = map(int, summary.groups())
    assert (different, errors) == (0, 0), "\n".join(line for line in done.stdout.splitlines() if "equal" not in line)
    assert cases == equal == 57 and checks > 5000
    lines = {line.split()[0].removesuffix("/cli"): line for line in done.stdout.splitlines()[1:] if "/" in line}
    for arch in ("llama", "gpt2", "bert", "gpt_neox", "mixtral"):
        assert {f"{arch}/{pair}" for pair in PAIRS} <= set(lines), arch
    assert {"gpt2/positions*2", "bert/positions*2"} <= set(lines)
    # The shapes torch refuses, the tied keys only a .bin stores, the layers training changed
    assert lines["llama/vocab+8"].split()[1] == "0/0/2" and lines["gpt2/bin"].split()[1:3] == ["0/1/0", "tied:1"]
    assert " ch9 " in lines["llama/trained"]
    # GPT-NeoX's and Mixtral's saved names are not the model's: torch's load into the model counts otherwise
    assert "model" in lines["mixtral/lora"] and "model" in lines["gpt_neox/ddp"]
    assert "/cli " in done.stdout
    assert done.returncode == 0
