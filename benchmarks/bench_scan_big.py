"""Benchmark: the pickle scan and the zip reader on big files (`inspect`, `inspect --stats`, `convert`).

    python -m benchmarks.bench_scan_big [--repeat 5] [--only NAME] [--profile NAME:COMMAND] [--before DIR]

Five files are written under bench-data/scan-big/ (git-ignored) once, seeded:
- zip-1m.bin: a raw zip of 1,000,000 empty stored records `archive/data/N` and no data.pkl (redteam12's shape;
  refused with exit 2, after the whole directory is read);
- legacy-50k.bin: torch.save of 50,000 tensors of 4 float32 values, `_use_new_zipfile_serialization=False`;
- zip-50k.bin: the same dict in torch's zip format;
- optimizer.pt: `torch.optim.Adam(...).state_dict()` for 5,000 parameters of 8 values, one step taken;
- strings-100k.bin: torch.save of a dict of 100,000 distinct values, half str, half bytes (b"blob:" and 24 seeded
  random bytes).

Each command runs as a fresh process (`python -m weightdoctor ...`, stdout and stderr to a file), timed with
time.perf_counter (wall), the child's CPU time (user + system) and peak RSS (both from `os.wait4`); the table gives
medians of --repeat runs (the largest peak), the garbage collector left as the commands set it. With --before DIR (a
`git archive REV weightdoctor | tar -x -C DIR` tree) the same commands run from DIR too, alternated run by run so
both see the same machine load, and the table says whether the two outputs were byte-identical (convert's
"seconds" aside).
--profile NAME:COMMAND (e.g. `zip-50k:inspect`) runs that one command under cProfile in this process instead and
prints the top 25 functions by cumulative and by internal time.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fixtures.zips import write_many_entry_zip

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench-data" / "scan-big"


def write_files() -> dict[str, Path]:
    """Write the five files once (seeded) and return them by name."""
    import torch

    DATA.mkdir(parents=True, exist_ok=True)
    # One folder each: what inspect says of a file names the weight files beside it.
    files = {name: DATA / name / f"{name}{'.pt' if name == 'optimizer' else '.bin'}"
             for name in ("zip-1m", "legacy-50k", "zip-50k", "optimizer", "strings-100k")}
    for path in files.values():
        path.parent.mkdir(exist_ok=True)
    if not files["zip-1m"].exists():
        write_many_entry_zip(files["zip-1m"], 1_000_000)
    generator = torch.Generator().manual_seed(0)
    if not files["legacy-50k"].exists() or not files["zip-50k"].exists():
        tensors = {f"layer.{i}.weight": torch.randn(4, generator=generator) for i in range(50_000)}
        torch.save(tensors, files["legacy-50k"], _use_new_zipfile_serialization=False)
        torch.save(tensors, files["zip-50k"])
    if not files["optimizer"].exists():
        params = [torch.nn.Parameter(torch.randn(8, generator=generator)) for _ in range(5_000)]
        optimizer = torch.optim.Adam(params, lr=1e-3)
        for param in params:
            param.grad = torch.randn(8, generator=generator)
        optimizer.step()
        torch.save(optimizer.state_dict(), files["optimizer"])
    if not files["strings-100k"].exists():
        rng = random.Random(0)
        values: dict[str, object] = {}
        for i in range(100_000):
            # The bytes start with a tag: random bytes from 0x84 on (EXT4) are refused as a pickle, 1 value in 256.
            values[f"key.{i}"] = (f"text value {i} {rng.random()}" if i % 2 == 0
                                  else b"blob:" + bytes(rng.getrandbits(8) for _ in range(24)))
        torch.save(values, files["strings-100k"])
    return files


def command_args(name: str, path: Path, scratch: Path) -> dict[str, list[str]]:
    """The commands measured on one file."""
    out = scratch / f"{name}.safetensors"
    return {
        "inspect": ["inspect", str(path), "--json"],
        "inspect --stats": ["inspect", str(path), "--stats", "--json"],
        "convert": ["convert", str(path), "-o", str(out), "--json"],
    }


def run_once(tree: Path, args: list[str], scratch: Path) -> tuple[float, float, int, bytes, float]:
    """One fresh `python -m weightdoctor ARGS` from `tree`: wall s, CPU s, exit code, stdout+stderr, peak RSS MB."""
    for leftover in scratch.glob("*.safetensors"):
        leftover.unlink()
    env = dict(os.environ, PYTHONPATH=str(tree))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "weightdoctor", *args], env=env, stdout=out, stderr=err,
                                 cwd=scratch)
        _pid, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        # convert's --json reports its own run time ("seconds"), which differs from run to run.
        output = re.sub(rb'"seconds": [0-9.e-]+', b'"seconds": S', out.read()) + b"\n--stderr--\n" + err.read()
    return wall, usage.ru_utime + usage.ru_stime, child.returncode, output, usage.ru_maxrss / 1024


def profile(spec: str, files: dict[str, Path]) -> None:
    """Run one NAME:COMMAND in this process under cProfile and print where the time went."""
    import cProfile
    import pstats

    from typer.testing import CliRunner

    from weightdoctor.cli import app

    name, command = spec.split(":", 1)
    with tempfile.TemporaryDirectory() as scratch:
        args = command_args(name, files[name], Path(scratch))[command]
        profiler = cProfile.Profile()
        profiler.enable()
        result = CliRunner().invoke(app, args)
        profiler.disable()
    print(f"exit {result.exit_code}")
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", action="append", help="a file name (zip-1m, legacy-50k, ...), or NAME:COMMAND")
    parser.add_argument("--profile", help="NAME:COMMAND to run once under cProfile")
    parser.add_argument("--before", type=Path, help="a tree holding the code before the change")
    parser.add_argument("--outputs", type=Path, help="a folder to keep each command's first output in, per tree")
    args = parser.parse_args()
    files = write_files()
    if args.profile:
        profile(args.profile, files)
        return
    trees = [("after", ROOT)] + ([("before", args.before)] if args.before else [])
    print(f"load average at start: {os.getloadavg()[0]:.1f}; medians of {args.repeat} fresh processes")
    print("| file | command | " + " | ".join(f"{label}: wall s / CPU s / peak MB" for label, _ in trees)
          + (" | same output |" if args.before else " |"))
    print("|---|---|" + "---|" * len(trees) + ("---|" if args.before else ""))
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        for name, path in files.items():
            for command, cmd in command_args(name, path, scratch).items():
                if args.only and name not in args.only and f"{name}:{command}" not in args.only:
                    continue
                runs: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in trees}
                peaks: dict[str, list[float]] = {label: [] for label, _ in trees}
                outputs: dict[str, set[bytes]] = {label: set() for label, _ in trees}
                codes: dict[str, set[int]] = {label: set() for label, _ in trees}
                for _ in range(args.repeat):
                    for label, tree in trees:
                        wall, cpu, code, output, peak = run_once(tree, cmd, scratch)
                        runs[label].append((wall, cpu))
                        peaks[label].append(peak)
                        outputs[label].add(output)
                        if args.outputs:
                            args.outputs.mkdir(parents=True, exist_ok=True)
                            kept = args.outputs / f"{label}-{name}-{command.replace(' ', '')}.txt"
                            if not kept.exists():
                                kept.write_bytes(output)
                        codes[label].add(code)
                cells = [f"{statistics.median(w for w, _ in runs[label]):.2f} / "
                         f"{statistics.median(c for _, c in runs[label]):.2f} / {max(peaks[label]):.0f} "
                         f"(exit {sorted(codes[label])})" for label, _ in trees]
                same = ""
                if args.before:
                    same = " | yes" if outputs["after"] == outputs["before"] and len(outputs["after"]) == 1 else " | NO"
                print(f"| {path.name} | {command} | " + " | ".join(cells) + same + " |", flush=True)


if __name__ == "__main__":
    main()
