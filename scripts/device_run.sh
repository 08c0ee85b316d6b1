#!/usr/bin/env bash
# One run on the lent GPU machine (15 minutes of device time for a whole issue, start-up included), from the
# repository root of a copy of the tree, with the machine's own Python (no pip install; see ../shared/DEVICE.md):
#   1. scripts/gpu_check.py: plan-devices against a real from_pretrained(device_map=...) on cuda:0;
#   2. the diff-keys benchmark (issue 4) on a quiet 16-core machine, the 4 GB pair included;
#   3. diff-keys' oracle tests (missing / unexpected / mismatched against from_pretrained) under that
#      machine's transformers, when pytest is there.
# Every step has its own time limit and writes under $OUT; a failing step does not stop the next.
set -u
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
export PYTHONPATH=.
export HF_HUB_OFFLINE=1
{
    date -u
    nproc
    uptime
    nvidia-smi -L
    python -V
    python -c "import torch, transformers, accelerate, safetensors, huggingface_hub, typer, rich; \
print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, \
'safetensors', safetensors.__version__, 'huggingface_hub', huggingface_hub.__version__, 'typer', typer.__version__)"
    python -c "import pytest; print('pytest', pytest.__version__)" || echo "no pytest"
} > "$OUT/environment.txt" 2>&1

echo "== gpu_check"
timeout 150 python scripts/gpu_check.py --report "$OUT/gpu-check-plan-devices.md" > "$OUT/gpu-check.log" 2>&1
echo "gpu_check exit $?" | tee -a "$OUT/gpu-check.log"

echo "== bench_diff_keys"
timeout 300 python -m benchmarks.bench_diff_keys --reps 9 --big-reps 3 \
    > "$OUT/bench-diff-keys.md" 2> "$OUT/bench-diff-keys.err"
echo "bench exit $?" | tee -a "$OUT/bench-diff-keys.err"
rm -rf bench-data

echo "== oracle tests"
if python -c "import pytest" 2> /dev/null; then
    timeout 120 python -m pytest -q -x -p no:cacheprovider tests/test_diff_keys.py > "$OUT/oracle-tests.log" 2>&1
    echo "pytest exit $?" | tee -a "$OUT/oracle-tests.log"
fi
tail -3 "$OUT/gpu-check.log" "$OUT/bench-diff-keys.err" "$OUT/oracle-tests.log" 2> /dev/null
