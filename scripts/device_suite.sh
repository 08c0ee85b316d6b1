#!/usr/bin/env bash
# One run on the lent GPU machine (15 minutes of device time, start-up included), from the repository root of a
# copy of the tree, with the machine's own Python (no pip install; see ../shared/DEVICE.md). Two things at once
# on its 16 cores, each with its own time limit, everything written under $OUT:
#   1. the whole test suite with CUDA visible (the branches that only run on a GPU included: fine-grained FP8
#      kept packed, `--local` reading a real GPU), split into $SHARDS pytest processes by file, balanced by the
#      seconds docs/device/file-seconds.txt gives each file (the last run's $OUT/file-seconds.txt, kept);
#   2. scripts/gpu_sweep.py: plan-devices against real from_pretrained(device_map=...) loads on cuda:0, the FP8
#      checkpoints first.
# Test-only packages the machine lacks (pytest, hypothesis, peft, omegaconf, psutil) travel in .devlib/ (made
# by `pip install --target .devlib --no-deps --python-version 3.12 --platform manylinux2014_x86_64
# --only-binary=:all: pytest pluggy iniconfig pygments hypothesis sortedcontainers psutil peft omegaconf`, listed in
# .git/info/exclude, carried by the run) and come after the machine's own site-packages on sys.path.
# A shard still running at $LIMIT seconds gets SIGINT, so pytest prints its summary of what failed so far.
set -u
OUT=${OUT:-/tmp/device-out}
SHARDS=${SHARDS:-11}
LIMIT=${LIMIT:-300}
WORK=$(mktemp -d)
mkdir -p "$OUT"
# The child interpreters tests start (sys.executable -c ...) must see .devlib too: the 1st run's children lacked
# omegaconf ("No module named 'omegaconf'"). A sitecustomize appends it, after the machine's own site-packages.
mkdir -p "$WORK/devsite"
printf 'import sys\nsys.path.append(%s)\n' "'$PWD/.devlib'" > "$WORK/devsite/sitecustomize.py"
export PYTHONPATH=$PWD:$WORK/devsite HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
{
    date -u; nproc; uptime; nvidia-smi -L; python -V
    python -c "import torch, transformers, accelerate, safetensors, huggingface_hub, typer; \
print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, \
'safetensors', safetensors.__version__, 'huggingface_hub', huggingface_hub.__version__, 'typer', typer.__version__); \
print('cuda', torch.cuda.is_available(), torch.cuda.get_device_capability(0))"
    python -c "import sys; sys.path.append('$PWD/.devlib'); import pytest, hypothesis, peft, omegaconf, psutil; \
print('pytest', pytest.__file__, 'peft', peft.__version__, peft.__file__)"
} > "$OUT/environment.txt" 2>&1

timeout "$LIMIT" python scripts/gpu_sweep.py --models "${SWEEP_MODELS:-fp8-llama,fp8-qwen3,t5,opt,llama}" --jobs "${JOBS:-4}" \
    --report "$OUT/gpu-sweep.md" > "$WORK/gpu-sweep.log" 2>&1 &
sweep=$!

python - "$SHARDS" "$WORK" <<'PY'
import pathlib, sys
shards, work = int(sys.argv[1]), pathlib.Path(sys.argv[2])
# Seconds per test file from an earlier run here (docs/device/file-seconds.txt, "SECONDS PATH" lines), where known;
# else the file's size stands in for its run time (at the median seconds per byte of the files timed).
timed = {}
known = pathlib.Path("docs/device/file-seconds.txt")
if known.exists():
    for line in known.read_text().splitlines():
        seconds, _, name = line.strip().partition(" ")
        try:
            timed[name] = float(seconds)
        except ValueError:  # a blank or hand-edited line: that file's size stands in
            continue
files = sorted(pathlib.Path("tests").rglob("test_*.py"))
rates = sorted(timed[str(p)] / p.stat().st_size for p in files if str(p) in timed and timed[str(p)] > 0)
rate = rates[len(rates) // 2] if rates else 1.0
cost = {str(p): timed.get(str(p), p.stat().st_size * rate) for p in files}
loads = [[0.0, []] for _ in range(shards)]
for name in sorted(cost, key=lambda n: -cost[n]):  # the costliest first, onto the lightest shard
    lightest = min(loads, key=lambda load: load[0])
    lightest[0] += cost[name]
    lightest[1].append(name)
for index, (_, names) in enumerate(loads):  # in path order: pytest 9.1 loses a folder's conftest fixtures when
    # another folder's file comes between two of its files (pytest-dev/pytest#14971, #14997; 9.2 reads them right)
    (work / f"shard-{index}.txt").write_text("\n".join(sorted(names)))
PY
pids=()
for ((i = 0; i < SHARDS; i++)); do
    timeout -s INT -k 20 "$LIMIT" python -c "
import sys
sys.path.append('$PWD/.devlib')
import pytest
files = open('$WORK/shard-$i.txt').read().split()
sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-rfEs', '--tb=short', '--junitxml=$WORK/shard-$i.xml', *files]))
" > "$WORK/shard-$i.log" 2>&1 &
    pids+=($!)
done
for ((i = 0; i < SHARDS; i++)); do
    wait "${pids[$i]}"
    echo "shard $i exit $?" >> "$WORK/shard-$i.log"
done
wait "$sweep"
echo "gpu_sweep exit $?" >> "$WORK/gpu-sweep.log"

for ((i = 0; i < SHARDS; i++)); do echo "===== shard $i"; cat "$WORK/shard-$i.log"; done > "$OUT/suite.log"
grep -hE "^(FAILED|ERROR) |^[0-9]+ (passed|failed)|passed|^shard [0-9]+ exit" "$WORK"/shard-*.log > "$OUT/suite-summary.txt"
grep -v "^Writing\|^Loading\|^\[transformers\]" "$WORK/gpu-sweep.log" | tail -80 > "$OUT/gpu-sweep.log"
# Seconds per test file, for the next run's shards (keep it as docs/device/file-seconds.txt).
python - "$WORK" > "$OUT/file-seconds.txt" <<'PY'
import collections, pathlib, sys, xml.etree.ElementTree as ET
seconds = collections.Counter()
for xml in pathlib.Path(sys.argv[1]).glob("shard-*.xml"):
    for case in ET.parse(xml).iter("testcase"):
        path = case.get("classname", "").split(".")
        while path and not pathlib.Path("/".join(path) + ".py").exists():
            path.pop()
        if path:
            seconds["/".join(path) + ".py"] += float(case.get("time", 0))
for name, total in sorted(seconds.items()):
    print(f"{total:.2f} {name}")
PY
cat "$OUT/suite-summary.txt"; tail -3 "$OUT/gpu-sweep.log"
