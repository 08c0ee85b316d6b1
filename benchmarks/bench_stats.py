"""Benchmark `inspect --stats` against a plain torch loop computing min/max/mean/std of every tensor.

Both run as fresh subprocesses, alternating, on the same synthetic checkpoint (benchmarks/synth.py), so
imports and page cache are alike; the table gives medians over `--repeat` runs and the ratio. The peak
RSS of each `inspect --stats` run comes from wait4 and is compared with the issue's bound,
3 × the largest tensor + 300 MB.

    python -m benchmarks.bench_stats --size 2.2GB --tensors 100 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

from weightdoctor.units import format_bytes

ROOT = Path(__file__).resolve().parent.parent
BASELINE = """
import sys, torch
from safetensors import safe_open
with safe_open(sys.argv[1], framework="pt") as handle:
    for name in handle.keys():
        t = handle.get_tensor(name)
        if t.is_floating_point():
            (float(t.min()), float(t.max()), float(t.mean()), float(t.std()))
"""


def run(command: list[str], threads: int | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed: {process.stderr.read().decode() if process.stderr else ''}")
    return elapsed, usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="2.2GB")
    parser.add_argument("--tensors", type=int, default=100)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT / "bench-data")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for both runs (default: torch's)")
    args = parser.parse_args()

    # The parent never imports torch: a child's peak RSS (ru_maxrss) starts from its parent's at fork.
    path = args.data / f"stats-{args.size}-{args.tensors}-{args.dtype}.safetensors"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "benchmarks.synth", str(path), "--size", args.size, "--tensors",
                        str(args.tensors), "--format", "safetensors", "--dtype", args.dtype],
                       check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    entries = [v for k, v in header.items() if k != "__metadata__"]
    file_size = path.stat().st_size
    largest = max(end - begin for begin, end in (e["data_offsets"] for e in entries))
    first_shape = tuple(entries[0]["shape"])
    stats_cmd = [sys.executable, "-m", "weightdoctor", "inspect", str(path), "--stats", "--json"]
    base_cmd = [sys.executable, "-c", BASELINE, str(path)]
    run(base_cmd, args.threads)  # warm the page cache
    stats_times, base_times, peaks = [], [], []
    for _ in range(args.repeat):
        elapsed, _ = run(base_cmd, args.threads)
        base_times.append(elapsed)
        elapsed, peak = run(stats_cmd, args.threads)
        stats_times.append(elapsed)
        peaks.append(peak)
    stats_median, base_median = statistics.median(stats_times), statistics.median(base_times)
    bound = 3 * largest + 300 * 1024**2
    print(f"# bench_stats  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {platform.node()}  "
          f"{os.cpu_count()} CPUs  torch {version('torch')}  "
          f"OMP_NUM_THREADS={args.threads or 'default'}  load average {os.getloadavg()[0]:.1f}")
    print(f"checkpoint: {path.name}, {format_bytes(file_size)}, {len(entries)} tensors of {first_shape} "
          f"{args.dtype}, largest tensor {format_bytes(largest)}")
    print()
    print("| run | median s | runs (s) |")
    print("|---|---:|---|")
    print(f"| plain torch loop (safetensors safe_open; min, max, mean, std) | {base_median:.2f} | "
          f"{', '.join(f'{t:.2f}' for t in base_times)} |")
    print(f"| weightdoctor inspect --stats --json | {stats_median:.2f} | "
          f"{', '.join(f'{t:.2f}' for t in stats_times)} |")
    print()
    print(f"ratio inspect --stats / plain loop: {stats_median / base_median:.2f}× (target ≤ 2×)")
    print(f"peak RSS of inspect --stats: median {format_bytes(int(statistics.median(peaks)))}, max "
          f"{format_bytes(max(peaks))}; bound 3 × largest tensor + 300 MB = {format_bytes(bound)}")


if __name__ == "__main__":
    main()
