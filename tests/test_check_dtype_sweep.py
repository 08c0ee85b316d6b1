"""The check-dtype oracle sweep (scripts/check_dtype_sweep.py --quick): a tied-embedding LM, T5 (`wo` kept in fp32
by from_pretrained), a BatchNorm model and an MoE whose loader renames its experts, each saved as safetensors, as
.bin, under a float16 config and as a training checkpoint read with --key, held to torch's casts,
from_pretrained's loads and the convert check-dtype suggests."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.helpers import REPO_ROOT


def test_quick_check_dtype_sweep_agrees_with_torch_transformers_and_convert() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/check_dtype_sweep.py", "--quick"],
        capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-1].startswith("cases: 16  passed: 16  failed: 0  errors: 0"), lines[-1]
    rows = {line.split()[0]: line for line in lines if re.match(r"[\w-]+/[\w-]+ ", line)}
    assert sorted(rows) == sorted(f"{arch}/{form}" for arch in ("llama-tied", "t5", "resnet", "qwen2_moe")
                                  for form in ("st", "bin", "cfg-fp16", "ckpt-ema"))
    for name, row in rows.items():
        # every planted model: 70000 and 65520 overflow fp16, fp8_e4m3 clamps beyond 448; bf16 only rounds, but
        # for the 3.4e38 planted under the float16 config
        bf16 = "unsafe" if name.endswith("/cfg-fp16") else "lossy"
        assert re.search(rf"\s\d+\s+unsafe {bf16} unsafe\s+ok", row), row
        kept_note = "unsafe at fp16, kept fp32 by from_pretrained and said so: " \
                    "encoder.block.0.layer.1.DenseReluDense.wo.weight"
        assert (kept_note in row) == (name.startswith("t5/") and not name.endswith("/ckpt-ema")), row
    checks = dict(re.findall(r"([a-zA-Z/0-9 _-]+?) ([\d,]+)(?:,|$)", lines[-2].removeprefix("checks: ")))
    counts = {k.strip(): int(v.replace(",", "")) for k, v in checks.items()}
    # each case: 5 targets judged, 2 --fail-on exits, a plain convert for fp16 and for bf16 and the suggested one
    # where unsafe, both outputs loaded; the float16-config line measured once per architecture
    assert counts["target verdicts"] == 80 and counts["exit codes"] == 24 and counts["plain converts"] == 24
    assert counts["outputs loaded"] == 24 and counts["auto dtypes"] == 12 and counts["kept fp32 at load"] == 12
    assert counts["keep_fp32 regexes"] == 20 and counts["entry points"] == 12
    # the training checkpoint checked with --key ema: the suggested convert wrote the EMA weights
    assert counts["training checkpoint outputs"] == 4
    assert counts["config dtype claims"] == 4 and counts["tensor figures"] > 2000
