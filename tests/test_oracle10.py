"""diff-keys and plan-devices against transformers on the architectures oracle10 added to the sweeps.

Each case runs the quick subset of scripts/diff_keys_sweep.py or scripts/plan_sweep.py on one architecture whose
loading rules are its own: experts merged by a WeightConverter (Qwen3-Next, PhiMoE, GraniteMoe's fused
input_linear), a multimodal checkpoint saved under the legacy names `_checkpoint_conversion_mapping` renames
(Qwen2.5-VL's `visual.` / `model.layers`), a text model tied to a multimodal head (Llama4), Mamba2 / Zamba's
shared blocks, XLNet's untied `lm_loss`, MobileBERT's and RemBERT's output embeddings of another width.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # the scripts import fixtures/ from the checkout


def _sweep(script: str, *args: str) -> tuple[int, int, int, int, str]:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--quick", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, check=False, timeout=300)
    summary = re.search(r"cases: (\d+)  equal: (\d+)  different: (\d+)  errors: (\d+)", done.stdout)
    assert summary is not None, done.stdout[-2000:] + done.stderr[-2000:]
    cases, equal, different, errors = map(int, summary.groups())
    return cases, equal, different, errors, done.stdout


@pytest.mark.parametrize("names", [("qwen3_next", "phimoe"), ("qwen2_5_vl", "xlnet"), ("mobilebert", "rembert")])
def test_diff_keys_equals_from_pretrained_on_new_architectures(names: tuple[str, ...]) -> None:
    # head into base and back, DDP's `module.` and torch.compile's `_orig_mod.` prefixes, a base under `module.`
    # into the head: each case's missing / unexpected / mismatched sets equal from_pretrained's
    cases, equal, different, errors, out = _sweep("diff_keys_sweep.py", "--no-cli", "--only", *names)
    assert (different, errors) == (0, 0), "\n".join(line for line in out.splitlines() if "equal" not in line)
    assert cases == equal >= 5 * len(names)
    for name in names:
        assert f"{name}/head-into-base:" in out and f"{name}/ddp-base-into-head:" in out


def test_plan_devices_equals_from_pretrained_on_new_architectures() -> None:
    # auto and sequential, one GPU + CPU and two GPUs + disk: the device_map equals from_pretrained's
    cases, equal, different, errors, out = _sweep("plan_sweep.py", "--only", "granitemoe", "llama4", "zamba")
    assert (different, errors) == (0, 0), "\n".join(line for line in out.splitlines() if "equal" not in line)
    assert cases == equal >= 12
    assert "llama4[" in out and "zamba[" in out
