"""Benchmark `check-dtype` (two targets) against plain torch loops doing the same casts and counts.

    python -m benchmarks.bench_check_dtype [--size 2.2GB] [--tensors 40] [--repeat 3] [--keep]

Writes a synthetic float32 safetensors checkpoint under bench-data/ (deleted afterwards unless --keep),
then runs, alternately and each in a fresh process: `weightdoctor check-dtype --target fp16,bf16 --json`,
the same with `--sample 100000`, and two baselines that read every tensor with safetensors and cast it
with torch's `.to()` to both targets, counting overflow, saturation, underflow, subnormals, changed
values and max/mean relative error: "plain loop" on whole tensors, "plain loop, chunked" on 1M-value
slices. Wall time and peak RSS (ru_maxrss of the child) are reported as medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BASELINE = r'''
import sys, torch
from safetensors import safe_open
path, chunk = sys.argv[1], int(sys.argv[2])
targets = [torch.float16, torch.bfloat16]
totals = {t: [0, 0, 0, 0, 0, 0.0, 0.0, 0] for t in targets}
with safe_open(path, framework="pt") as f:
    for key in f.keys():
        t = f.get_tensor(key).reshape(-1)
        step = chunk or t.numel()
        for start in range(0, t.numel(), step):
            x = t[start:start + step].float()
            fx = torch.isfinite(x)
            for dt in targets:
                info = torch.finfo(dt)
                y = x.to(dt).float()
                fy = torch.isfinite(y)
                keep = fx & (x != 0) & fy
                rel = ((y - x).abs() / x.abs())[keep]
                acc = totals[dt]
                acc[0] += int((fx & ~fy).sum())
                acc[1] += int((fx & fy & (x.abs() > info.max)).sum())
                acc[2] += int((fx & (x != 0) & (y == 0)).sum())
                acc[3] += int(((y != 0) & (y.abs() < info.smallest_normal)).sum())
                acc[4] += int((y != x).sum())
                acc[5] = max(acc[5], float(rel.max()) if rel.numel() else 0.0)
                acc[6] += float(rel.sum(dtype=torch.float64))
                acc[7] += rel.numel()
for dt, acc in totals.items():
    print(dt, acc[:5], acc[5], acc[6] / max(acc[7], 1))
'''


def _spawn_rss(cmd: list[str]) -> tuple[float, float, str]:
    """Run `cmd` in a child; return (wall seconds, the child's own peak RSS in MB from os.wait4, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.dup2(out_w, 1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.chdir(REPO)
        os.execvpe(cmd[0], cmd, env)
    os.close(out_w)
    chunks = []
    while data := os.read(out_r, 1 << 16):
        chunks.append(data)
    os.close(out_r)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd[:5])} exited {code}")
    return wall, usage.ru_maxrss / 1024, b"".join(chunks).decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="2.2GB")
    parser.add_argument("--tensors", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep bench-data/ afterwards")
    parser.add_argument("--chunked-baseline", action="store_true", help="also time the plain loop on 1M-value chunks")
    args = parser.parse_args()

    import torch

    from benchmarks.synth import specs_for_size, write_safetensors
    from weightdoctor.units import format_bytes, parse_size

    data_dir = REPO / "bench-data" / "check-dtype"
    path = data_dir / "model.safetensors"
    specs = specs_for_size(parse_size(args.size), args.tensors)
    largest = max(int(torch.Size(shape).numel()) * 4 for _, shape in specs)
    try:
        if not path.exists():
            t0 = time.perf_counter()
            size = write_safetensors(path, specs)
            print(f"wrote {path} ({format_bytes(size)}, {len(specs)} tensors) in {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr)
        size = path.stat().st_size
        py = sys.executable
        runs = {
            "weightdoctor check-dtype --target fp16,bf16": [py, "-m", "weightdoctor", "check-dtype", str(path),
                                                            "--target", "fp16,bf16", "--json"],
            "plain torch loop (whole tensors)": [py, "-c", BASELINE, str(path), "0"],
            "weightdoctor check-dtype ... --sample 100000": [py, "-m", "weightdoctor", "check-dtype", str(path),
                                                              "--target", "fp16,bf16", "--json", "--sample", "100000"],
        }
        if args.chunked_baseline:
            runs["plain torch loop (1M-value chunks)"] = [py, "-c", BASELINE, str(path), str(1 << 20)]
        # One warm-up read so that every run finds the file in the page cache.
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass
        times: dict[str, list[float]] = {k: [] for k in runs}
        rss: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.repeat):
            for label, cmd in runs.items():
                wall, peak, _ = _spawn_rss(cmd)
                times[label].append(wall)
                rss[label].append(peak)
        base = statistics.median(times["plain torch loop (whole tensors)"])
        budget = 3 * largest / 1e6 + 300
        print(f"check-dtype benchmark: {format_bytes(size)} float32 safetensors, {len(specs)} tensors, "
              f"largest tensor {format_bytes(largest)}; torch {torch.__version__}; {os.cpu_count()} CPU(s); "
              f"median of {args.repeat} runs each, alternating")
        print(f"{'run':48} {'median s':>9} {'runs (s)':>24} {'÷ plain':>8} {'peak RSS MB':>12}")
        for label in runs:
            med = statistics.median(times[label])
            each = ", ".join(f"{t:.1f}" for t in times[label])
            print(f"{label:48} {med:9.2f} {each:>24} {med / base:8.2f} {statistics.median(rss[label]):12.0f}")
        print(f"targets: check-dtype ≤ 1.5 × plain loop; peak RSS ≤ 3 × largest tensor + 300 MB = {budget:.0f} MB")
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
