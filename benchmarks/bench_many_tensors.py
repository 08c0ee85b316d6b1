"""Benchmark every structure command on a DeepSeek-V3-class checkpoint (91,991 tensors, 163 shards), before/after.

    python -m benchmarks.bench_many_tensors --before /tmp/base          # /tmp/base: `git archive REV weightdoctor`
    python -m benchmarks.bench_many_tensors --layers 6 --experts 32     # smaller, quicker
    python -m benchmarks.bench_many_tensors --before /tmp/base --small 20000   # N tiny tensors instead (round 10)

The checkpoint (benchmarks/deepseek_synth.py: sparse shards, real names, shapes and dtypes, index and config)
is written under bench-data/ once. Each command runs as a fresh process (`python -m weightdoctor ...`), the
"before" tree and this one alternately so both see the same machine load; the table gives the medians of
--reps runs and whether stdout was byte-identical (the check that a speed-up changed no output).
check-dtype reads every tensor it checks whole (even with --sample), so it runs on one dense layer only.

--small N measures the per-tensor overhead instead: N tensors of 4 to 64 float32 / bfloat16 values (seeded), written
once as safetensors, as a torch zip .bin (a few changed) and as a legacy (non-zip) .bin; the commands that read
every value (check-dtype, inspect --stats, diff-keys --values) and the legacy reader, shard and convert on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.deepseek_synth import write_deepseek_v3

ROOT = Path(__file__).resolve().parent.parent


def commands(folder: Path, scratch: Path) -> list[tuple[str, list[str]]]:
    gpus = [arg for _ in range(8) for arg in ("--gpu", "80GB")]
    src = str(folder)
    return [
        ("inspect", ["inspect", src]),
        ("inspect --json", ["inspect", src, "--json"]),
        ("diff-keys A A --json", ["diff-keys", src, src, "--json"]),
        ("diff-keys A --model-class", ["diff-keys", src, "--model-class", "DeepseekV3ForCausalLM", "--json"]),
        ("plan-devices --gpu 80GB x8", ["plan-devices", src, *gpus]),
        ("plan-devices --gpu 80GB x8 --json", ["plan-devices", src, *gpus, "--json"]),
        ("shard --dry-run --max 5GB", ["shard", src, "--dry-run", "--max", "5GB", "--output", str(scratch / "s")]),
        ("convert --dry-run --json", ["convert", src, "--dry-run", "--json", "--output", str(scratch / "c")]),
        ("check-dtype --sample 64 (layer 1)",
         ["check-dtype", src, "--sample", "64", "--filter", r"^model\.layers\.1\.", "--json"]),
    ]


def write_small(folder: Path, count: int) -> None:
    """`count` tiny seeded tensors as model.safetensors, changed.bin (zip; every 7th tensor changed) and legacy.bin."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for index in range(count):
        values = torch.randn(4 << (index % 5), generator=generator)
        tensors[f"model.layers.{index // 10}.p{index % 10}.weight"] = values if index % 3 else values.bfloat16()
    save_file(tensors, str(folder / "model.safetensors"))
    torch.save(tensors, folder / "legacy.bin", _use_new_zipfile_serialization=False)
    changed = {name: t * 1.001 if i % 7 == 0 else t for i, (name, t) in enumerate(tensors.items())}
    torch.save(changed, folder / "changed.bin")


def small_commands(folder: Path, scratch: Path) -> list[tuple[str, list[str]]]:
    st, legacy, changed = str(folder / "model.safetensors"), str(folder / "legacy.bin"), str(folder / "changed.bin")
    return [
        ("check-dtype --json", ["check-dtype", st, "--json"]),
        ("inspect --stats --json", ["inspect", st, "--stats", "--json"]),
        ("diff-keys --values --json (st vs zip)", ["diff-keys", st, changed, "--values", "--json"]),
        ("inspect legacy .bin --json", ["inspect", legacy, "--json"]),
        ("shard --dry-run --max 1MB", ["shard", st, "--dry-run", "--max", "1MB", "--output", str(scratch / "s")]),
        ("convert legacy .bin --dry-run --json",
         ["convert", legacy, "--dry-run", "--json", "--output", str(scratch / "c")]),
    ]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(tree: Path, args: list[str]) -> tuple[float, float, bytes, int]:
    """Wall and CPU seconds (the child's user + system: less disturbed by other work on a shared machine)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
    start, cpu = time.perf_counter(), _children_cpu()
    # Run from the tree itself: `-m` puts the working directory first on sys.path, ahead of PYTHONPATH.
    done = subprocess.run([sys.executable, "-m", "weightdoctor", *args], capture_output=True, env=env, cwd=tree,
                          check=False)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{tree}: {' '.join(args[:3])} exited {done.returncode}: {done.stderr.decode()[-400:]}")
    return wall, cpu, done.stdout, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="a tree holding the baseline's weightdoctor/ package")
    parser.add_argument("--layers", type=int, default=61)
    parser.add_argument("--experts", type=int, default=256)
    parser.add_argument("--shards", type=int, default=163)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", help="run only the commands whose label contains this")
    parser.add_argument("--small", type=int, help="N tiny tensors instead of the DeepSeek-V3 checkpoint")
    args = parser.parse_args()

    scratch = ROOT / "bench-data" / "many-tensors-out"
    if args.small:
        folder = ROOT / "bench-data" / f"small-tensors-{args.small}"
        if not (folder / "changed.bin").exists():
            write_small(folder, args.small)
        count, shards, todo = args.small, 1, small_commands(folder, scratch)
    else:
        folder = ROOT / "bench-data" / f"deepseek-v3-{args.layers}x{args.experts}-{args.shards}shards"
        if not (folder / "model.safetensors.index.json").exists():
            write_deepseek_v3(folder, args.layers, args.experts, args.shards)
        count = len(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"])
        shards, todo = args.shards, commands(folder, scratch)
    trees = ([("before", args.before)] if args.before else []) + [("after", ROOT)]
    print(f"{count} tensors, {shards} shards; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", file=sys.stderr)
    head = ("| command | " + " | ".join(f"{name} wall (s) | {name} CPU (s)" for name, _ in trees)
            + (" | CPU speed-up | same stdout |" if args.before else " |"))
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for label, argv in todo:
        if args.only and args.only not in label:
            continue
        walls: dict[str, list[float]] = {name: [] for name, _ in trees}
        cpus: dict[str, list[float]] = {name: [] for name, _ in trees}
        outputs: dict[str, tuple[bytes, int]] = {}
        for _ in range(args.reps):
            for name, tree in trees:
                wall, cpu, out, code = run_once(tree, argv)
                walls[name].append(wall)
                cpus[name].append(cpu)
                outputs[name] = (out, code)
        wall_m = [statistics.median(walls[name]) for name, _ in trees]
        cpu_m = [statistics.median(cpus[name]) for name, _ in trees]
        row = f"| `{label}` | " + " | ".join(f"{w:.2f} | {c:.2f}" for w, c in zip(wall_m, cpu_m, strict=True))
        if args.before:
            same = "yes" if outputs["before"] == outputs["after"] else "NO"
            row += f" | {cpu_m[0] / cpu_m[1]:.2f}x | {same} |"
        else:
            row += " |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
