"""Benchmark: `weightdoctor inspect` against a bare `safe_open` of the same files, and `.bin` peak RSS.

    python -m benchmarks.bench_inspect [--data bench-data/inspect] [--repeats 7] [--keep]

Targets (issue "foundation"): inspect of safetensors within 3x a bare Python process that opens the file
with `safe_open(framework="np")` and reads every key's shape; the 4 GB case within 20% of a 40 MB one
with the same number of tensors; inspect of a 1 GB `.bin` under 300 MB + the size of its pickle.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import zipfile
from pathlib import Path

from benchmarks.timing import REPO_ROOT, Measurement, median_of, python_cmd, weightdoctor_cmd
from weightdoctor.units import format_bytes

BASELINE = """
import sys, glob, os
from safetensors import safe_open
target = sys.argv[1]
files = sorted(glob.glob(os.path.join(target, '*.safetensors'))) if os.path.isdir(target) else [target]
for path in files:
    with safe_open(path, framework='np') as f:
        shapes = [f.get_slice(k).get_shape() for k in f.keys()]
"""


def generate(data: Path, tensors: int) -> dict[str, Path]:
    """Write the checkpoints in child processes, so that this process stays small.

    (Linux reports a child's peak RSS including what its parent held at fork time, so a parent that had
    built a 1 GB state dict would inflate every measurement.)
    """
    data.mkdir(parents=True, exist_ok=True)
    specs = {
        "40 MB safetensors": ("small.safetensors", ["--size", "40MB", "--tensors", str(tensors), "--fill", "zeros"]),
        "4 GB safetensors": ("large.safetensors", ["--size", "4GB", "--tensors", str(tensors), "--fill", "zeros"]),
        "4 GB sharded": (
            "large-sharded",
            [
                "--size",
                "4GB",
                "--tensors",
                str(tensors),
                "--format",
                "sharded",
                "--shard-size",
                "1GB",
                "--fill",
                "zeros",
            ],
        ),
        "1 GB .bin": ("large.bin", ["--size", "1GB", "--tensors", "200", "--format", "bin"]),
    }
    paths: dict[str, Path] = {}
    for label, (name, flags) in specs.items():
        paths[label] = data / name
        if not paths[label].exists():
            subprocess.run(python_cmd("-m", "benchmarks.synth", str(paths[label]), *flags), check=True, cwd=REPO_ROOT)
    return paths


def pickle_size(path: Path) -> int:
    with zipfile.ZipFile(path) as archive:
        return sum(i.file_size for i in archive.infolist() if i.filename.endswith(".pkl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("bench-data/inspect"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tensors", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoints")
    args = parser.parse_args()
    paths = generate(args.data, args.tensors)

    rows: list[tuple[str, Measurement, Measurement]] = []
    for label in ("40 MB safetensors", "4 GB safetensors", "4 GB sharded"):
        path = str(paths[label])
        # Warm the page cache for both sides alike, then alternate so that noise hits both.
        median_of(python_cmd("-c", BASELINE, path), 1)
        baseline = median_of(python_cmd("-c", BASELINE, path), args.repeats)
        inspect = median_of(weightdoctor_cmd("inspect", path, "--json"), args.repeats)
        rows.append((label, baseline, inspect))

    print(f"machine: {platform.node()} {platform.machine()}, Python {platform.python_version()}")
    print(f"medians of {args.repeats} runs; a fresh process each run")
    print()
    print("| checkpoint | safe_open baseline | weightdoctor inspect --json | ratio | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    for label, baseline, inspect in rows:
        ratio = inspect.wall_s / baseline.wall_s
        print(
            f"| {label} ({args.tensors} tensors) | {baseline.wall_s:.3f} s | {inspect.wall_s:.3f} s | "
            f"{ratio:.2f}x | <= 3x: {'yes' if ratio <= 3 else 'NO'} |"
        )
    small, large = rows[0][2].wall_s, rows[1][2].wall_s
    growth = large / small
    print()
    print(f"4 GB vs 40 MB inspect time: {growth:.2f}x (target within 20%: {'yes' if growth <= 1.2 else 'NO'})")

    bin_path = paths["1 GB .bin"]
    bin_run = median_of(weightdoctor_cmd("inspect", str(bin_path), "--json"), max(3, args.repeats // 2))
    budget = 300 * 10**6 + pickle_size(bin_path)
    print(
        f"1 GB .bin ({format_bytes(bin_path.stat().st_size)}): inspect {bin_run.wall_s:.2f} s, peak RSS "
        f"{format_bytes(bin_run.max_rss_bytes)} (target < 300 MB + pickle {format_bytes(pickle_size(bin_path))} "
        f"= {format_bytes(budget)}: {'yes' if bin_run.max_rss_bytes < budget else 'NO'})"
    )
    if not args.keep:
        shutil.rmtree(args.data, ignore_errors=True)


if __name__ == "__main__":
    main()
