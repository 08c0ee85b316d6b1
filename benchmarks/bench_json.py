"""Benchmark the `--json` writer: `render.json.dumps` against its reference on large real reports.

    python -m benchmarks.bench_json [--tensors 100000] [--reps 5]

Builds one safetensors file of N tiny float32 tensors (under bench-data/json, deleted after), makes the
`inspect` and `check-dtype` reports of it in this process, then times, alternately and in the same process,
`dumps` (the walk of the report with flat rows written by the C encoder) and `dumps_reference`
(`json.dumps(to_jsonable(report), indent=2)`, the standard library's pure-Python indenting encoder). Both texts
are checked equal. Prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

from benchmarks.timing import median_seconds

ROOT = Path(__file__).resolve().parent.parent




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tensors", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-data" / "json")
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file

    from weightdoctor.check_dtype import check_dtype
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.render.json import dumps, dumps_reference
    from weightdoctor.structure import inspect_checkpoint

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"tiny-{args.tensors}.safetensors"
    try:
        generator = torch.Generator().manual_seed(0)
        save_file({f"layer.{i}.weight": torch.randn(4, generator=generator) for i in range(args.tensors)}, path)
        with open_checkpoint(path) as checkpoint:
            reports = {"inspect": inspect_checkpoint(checkpoint),
                       "check-dtype": check_dtype(checkpoint, ["fp16", "bf16"])}
        load = os.getloadavg()[0]
        print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}; load average {load:.1f}; {args.tensors:,} tensors; "
              f"medians of {args.reps} runs\n")
        print("| report | JSON size | dumps (fast) | dumps_reference | ratio |")
        print("|---|---:|---:|---:|---:|")
        for name, report in reports.items():
            text = dumps(report)
            if text != dumps_reference(report):
                raise SystemExit(f"{name}: the two texts differ")
            fast = median_seconds(lambda report=report: dumps(report), args.reps)
            reference = median_seconds(lambda report=report: dumps_reference(report), args.reps)
            print(f"| {name} | {len(text) / 1e6:.1f} MB | {fast:.2f} s | {reference:.2f} s | "
                  f"{reference / fast:.2f}× faster |")
    finally:
        shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
