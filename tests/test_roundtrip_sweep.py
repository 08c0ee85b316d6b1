"""The round-trip oracle sweep (scripts/roundtrip_sweep.py --quick) on a few architectures with tied or shared
embeddings: convert and shard outputs load through from_pretrained with the original's tensors, and --json
tells what was written."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO_ROOT


def test_quick_roundtrip_sweep_passes_on_tied_and_encoder_decoder_models() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/roundtrip_sweep.py", "--quick", "--only", "gpt2", "t5", "bart", "llama"],
        capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=300,
    )
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert summary.startswith("cases: 28  passed: 28  failed: 0  errors: 0"), summary
