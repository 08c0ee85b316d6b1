"""The quick slice of scripts/kv_cache_sweep.py: plan-devices --kv-cache against the cache transformers fills."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_quick_sweep_equals_the_cache_transformers_fills() -> None:
    """GPT-2, Llama, Mistral (sliding window), Gemma-2 (alternating; its config also without layer_types, as
    published), DeepSeek-V3 (latent attention), T5 (decoder self-attention), Mamba (no KV cache) and Jamba
    (attention every other layer): the estimate equals the bytes of the keys and values the default cache holds,
    and those of a StaticCache (every decoder-only one); its state_bytes those of the conv and SSM states."""
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "kv_cache_sweep.py"), "--quick"], cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, check=False, timeout=300)
    summary = re.search(r"architectures: (\d+)  cases: (\d+)  equal: (\d+)  different: (\d+)  errors: (\d+)",
                        done.stdout)
    assert summary is not None, done.stdout[-2000:] + done.stderr[-2000:]
    archs, cases, equal, different, errors = map(int, summary.groups())
    assert (different, errors) == (0, 0), "\n".join(line for line in done.stdout.splitlines() if "equal" not in line)
    assert (archs, cases, equal) == (8, 17, 17) and done.returncode == 0
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if "/fp32/" in line}
    # 2 sequences x 13 tokens x 4 bytes x 2 KV heads x 16 x 2 (keys, values): 2 full layers, 2 keeping 8 tokens
    assert "21504 B (4 layers)" in rows["gemma2/legacy/fp32/b2/s13"].split("equal")[0]
    assert "6656 B (2 layers)" in rows["jamba/fp32/b2/s13"]  # the 2 attention layers of 4
    assert "0 B (0 layers)" in rows["mamba/fp32/b2/s13"]
    # recurrent states, measured and sized alike: Mamba's 3 layers x 2 sequences x 64 channels x (a conv window of
    # 4 + an SSM state of 8) x 4 bytes; Jamba's 2 Mamba layers of 4 the same way
    assert rows["mamba/fp32/b2/s13"].count("+ state 18432 B") == 2
    assert rows["jamba/fp32/b2/s13"].count("+ state 12288 B") == 2
    assert "4992 B (4 layers)" in rows["deepseek_v3/fp32/b2/s13"]  # 4 layers x (8 + 4) values x 4 bytes x 2 x 13
    # a StaticCache of max_cache_len S allocates the whole window: the same figure, with no token added
    assert rows["gemma2/fp32/b2/s13/static"].split()[1] == "21504"
