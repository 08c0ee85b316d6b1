"""Benchmark `diff-keys` (headers only) against a bare set difference and against loading the state dicts.

    python -m benchmarks.bench_diff_keys                 # everything; data under bench-data/diff-keys, deleted after
    python -m benchmarks.bench_diff_keys --skip-big      # only the key-set comparisons

1. Key sets: a 70B-class Llama key set (723 tensors, real Llama-2-70B shapes, bf16) and a 10,002-key one,
   written as sparse safetensors files (full header, data section a hole: nothing to read). Two pairs each:
   "near" (A lacks lm_head.weight) and "ddp" (every key of A has a `module.` prefix, so the rename search
   runs over all keys). diff-keys (open both with the shared reader + analysis) is timed against the bare
   baseline `set(safe_open(a).keys())` vs `set(safe_open(b).keys())` differences, in the same process;
   and the CLI (`python -m weightdoctor diff-keys A B --json`) against the baseline as `python -c`. A "floor"
   row times `json.loads` of both headers alone, the least any reader written in Python does before checking
   or comparing anything.
2. A >= 4 GB pair written by benchmarks/synth.py (float32 tensors of random data): diff-keys against
   loading both state dicts (`safetensors.torch.load_file`) and `load_state_dict(A, strict=False)` into a
   module holding B's tensors — what a training script does to find out the same thing; as fresh processes
   both with the files in the page cache and with both dropped from it before every run (`posix_fadvise`).

Prints medians of --reps repetitions, fresh processes included (the state-dict load: --big-reps), and the
ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.synth import TensorSpec, llama_specs, specs_for_size, write_safetensors
from weightdoctor.dtypes import CANONICAL_TO_SAFETENSORS, bits_per_element
from weightdoctor.units import format_bytes, parse_size

ROOT = Path(__file__).resolve().parent.parent


def write_sparse_safetensors(path: Path, specs: list[TensorSpec], dtype: str = "bfloat16") -> int:
    """A valid safetensors file whose data section is a hole (sparse): real header, no bytes written."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in specs:
        size = 1
        for dim in shape:
            size *= dim
        size = size * bits_per_element(dtype) // 8
        header[name] = {"dtype": CANONICAL_TO_SAFETENSORS[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + offset)
    return 8 + len(raw) + offset


# The baseline as a script of its own (imports safetensors only, as diff-keys on safetensors does).
BASELINE_SCRIPT = """
from safetensors import safe_open
with safe_open({a!r}, framework="np") as handle:
    keys_a = set(handle.keys())
with safe_open({b!r}, framework="np") as handle:
    keys_b = set(handle.keys())
print(len(keys_b - keys_a), len(keys_a - keys_b), len(keys_a & keys_b))
"""


LOAD_SCRIPT = """
from benchmarks.bench_diff_keys import load_state_dicts
from pathlib import Path
print(load_state_dicts(Path({a!r}), Path({b!r})))
"""


def baseline_keys(a: Path, b: Path) -> tuple[int, int, int]:
    from safetensors import safe_open

    with safe_open(str(a), framework="np") as handle:
        keys_a = set(handle.keys())
    with safe_open(str(b), framework="np") as handle:
        keys_b = set(handle.keys())
    return len(keys_b - keys_a), len(keys_a - keys_b), len(keys_a & keys_b)


def diff_keys_analysis(a: Path, b: Path) -> tuple[int, int, int]:
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.diff_keys import diff_checkpoints

    with open_checkpoint(a) as ca, open_checkpoint(b) as cb:
        report = diff_checkpoints(ca, cb)
    return len(report.missing), len(report.unexpected), report.matched


def parse_headers_only(a: Path, b: Path) -> int:
    """The floor of any reader written in Python: read both headers and `json.loads` them, nothing checked, no
    object built, the cyclic garbage collector paused as the shared reader pauses it (with it running, the parse
    alone measured 2.3x the baseline on the 10k-key pair). The safetensors library does the same parse, and its
    checks, in Rust."""
    from weightdoctor.gcpause import gc_paused

    count = 0
    for path in (a, b):
        with open(path, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            with gc_paused():
                count += len(json.loads(handle.read(size)))
    return count


def open_both(a: Path, b: Path) -> int:
    from weightdoctor.checkpoint import open_checkpoint

    with open_checkpoint(a) as ca, open_checkpoint(b) as cb:
        return len(ca.tensors) + len(cb.tensors)


def diff_keys_cli_inprocess(a: Path, b: Path) -> None:
    from weightdoctor.cli import app

    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        app(["diff-keys", str(a), str(b), "--json"])


def load_state_dicts(a: Path, b: Path) -> tuple[int, int]:
    import torch
    from safetensors.torch import load_file

    state_b = load_file(str(b))
    model = torch.nn.Module()
    for name, tensor in state_b.items():
        module = model
        *path, leaf = name.split(".")
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, torch.nn.Parameter(tensor, requires_grad=False))
    state_a = load_file(str(a))
    result = model.load_state_dict(state_a, strict=False)
    return len(result.missing_keys), len(result.unexpected_keys)


@dataclass(frozen=True)
class Timing:
    """Medians of wall-clock and CPU seconds (CPU time is less disturbed by other work on a shared machine)."""

    wall: float
    cpu: float


def timed(func: Callable[[], object], reps: int) -> tuple[Timing, object]:
    walls, cpus, value = [], [], None
    for _ in range(reps):
        start, cpu = time.perf_counter(), time.process_time()
        value = func()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return Timing(statistics.median(walls), statistics.median(cpus)), value


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def drop_from_page_cache(*paths: Path) -> None:
    """Evict the files' pages from the page cache (no root needed), so that the next read comes from the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # only clean pages can be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def subprocess_times(
    ours: list[str], baseline: list[str], reps: int, before: Callable[[], None] | None = None,
    without_site: bool = False,
) -> tuple[Timing, Timing]:
    """Fresh-process timings of two commands, run alternately so that both see the same machine load.

    `before` runs before every run of either command, untimed (e.g. `drop_from_page_cache`).
    `without_site` runs both interpreters with `-S` and the venv's site-packages on PYTHONPATH: the start-up of
    a regular (non-editable) install. The development venv's editable install makes `site` import setuptools'
    editable finder in every interpreter (~17 ms here, pathlib and importlib.util included), a fixed cost a
    user's `pip install weightdoctor` does not have; this row shows both sides without it.
    """
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    if without_site:
        env["PYTHONPATH"] += os.pathsep + sysconfig.get_paths()["purelib"]
        ours, baseline = [ours[0], "-S", *ours[1:]], [baseline[0], "-S", *baseline[1:]]
    samples: dict[int, tuple[list[float], list[float]]] = {0: ([], []), 1: ([], [])}
    for _ in range(reps):
        for which, args in enumerate((ours, baseline)):
            if before is not None:
                before()
            start, cpu = time.perf_counter(), _children_cpu()
            done = subprocess.run(args, check=False, capture_output=True, env=env, cwd=ROOT)
            samples[which][0].append(time.perf_counter() - start)
            samples[which][1].append(_children_cpu() - cpu)
            if done.returncode not in (0, 1):  # 1: diff-keys found what the pair holds; anything else is a failure
                raise RuntimeError(f"{' '.join(args[:4])} ... exited {done.returncode}: {done.stderr.decode()[-500:]}")
    ours_t, base_t = (Timing(statistics.median(w), statistics.median(c)) for w, c in samples.values())
    return ours_t, base_t


Row = tuple[str, str, Timing, Timing, str]


def fresh_process_rows(label: str, a: Path, b: Path, baseline_code: str, reps: int, baseline_names: tuple[str, str],
                       plain_start: bool) -> list[Row]:
    """`diff-keys A B --json` against `python -c baseline_code`, as fresh processes; again with `-S` both sides
    when `plain_start` (see `subprocess_times`)."""
    ours = [sys.executable, "-m", "weightdoctor", "diff-keys", str(a), str(b), "--json"]
    baseline = [sys.executable, "-c", baseline_code]
    rows: list[Row] = [(label, "CLI --json (fresh process)", *subprocess_times(ours, baseline, reps),
                        baseline_names[0])]
    if plain_start:
        rows.append((label, "CLI --json (fresh process, -S: no editable-install hook)",
                     *subprocess_times(ours, baseline, reps, without_site=True), baseline_names[1]))
    return rows


def plain_start_works() -> bool:
    """Whether `python -S` with the purelib folder on PYTHONPATH imports what both sides need (see the -S rows)."""
    env = {"PYTHONPATH": str(ROOT) + os.pathsep + sysconfig.get_paths()["purelib"], "PATH": "/usr/bin:/bin"}
    probe = "import safetensors, torch, typer, rich, weightdoctor.cli"
    return subprocess.run([sys.executable, "-S", "-c", probe], check=False, capture_output=True, env=env,
                          cwd=ROOT).returncode == 0


def key_set_pairs(out: Path) -> list[tuple[str, Path, Path, int]]:
    seventy = llama_specs(num_layers=80, hidden=8192, intermediate=28672, vocab=32000, kv_heads_ratio=8)
    ten_k = llama_specs(num_layers=1111, hidden=1024, intermediate=2816, vocab=32000)
    pairs = []
    for label, specs in (("70B-class", seventy), ("10k-key", ten_k)):
        b = out / f"{label}-b.safetensors"
        apparent = write_sparse_safetensors(b, specs)
        near = out / f"{label}-near.safetensors"
        write_sparse_safetensors(near, [s for s in specs if s[0] != "lm_head.weight"])
        ddp = out / f"{label}-ddp.safetensors"
        write_sparse_safetensors(ddp, [("module." + n, s) for n, s in specs])
        pairs += [(f"{label} ({len(specs)} keys) near", near, b, apparent),
                  (f"{label} ({len(specs)} keys) ddp", ddp, b, apparent)]
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-data" / "diff-keys")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--big-size", default="4.2GB", help="total size of the big pair (both files)")
    parser.add_argument("--big-reps", type=int, default=5)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    load_before = os.getloadavg()[0]
    plain_start = plain_start_works()
    if not plain_start:
        print("the -S rows are left out: this interpreter's packages are not all in its purelib folder",
              file=sys.stderr)
    try:
        for label, a, b, apparent in key_set_pairs(args.out):
            assert diff_keys_analysis(a, b)[:2] == baseline_keys(a, b)[:2]
            base, _ = timed(lambda a=a, b=b: baseline_keys(a, b), args.reps)
            ours, _ = timed(lambda a=a, b=b: diff_keys_analysis(a, b), args.reps)
            cli, _ = timed(lambda a=a, b=b: diff_keys_cli_inprocess(a, b), args.reps)
            reader, _ = timed(lambda a=a, b=b: open_both(a, b), args.reps)
            parse, _ = timed(lambda a=a, b=b: parse_headers_only(a, b), args.reps)
            rows.append((label, "floor: json.loads of both headers alone (no check, no structure)", parse, base,
                         "set difference of safe_open keys"))
            rows.append((label, "of which: the shared reader opening both", reader, base,
                         "set difference of safe_open keys"))
            rows.append((label, "reader + analysis (in-process)", ours, base, "set difference of safe_open keys"))
            rows.append((label, "CLI --json (in-process)", cli, base, "set difference of safe_open keys"))
            rows += fresh_process_rows(label, a, b, BASELINE_SCRIPT.format(a=str(a), b=str(b)), args.reps,
                                       ("same baseline in python -c", "same baseline in python -S -c"), plain_start)
            print(f"done: {label} (apparent size of B: {format_bytes(apparent)}, sparse)", file=sys.stderr)
        if not args.skip_big:
            half = parse_size(args.big_size) // 2
            specs = specs_for_size(half, 300)
            big_a, big_b = args.out / "big-a.safetensors", args.out / "big-b.safetensors"
            size_a = write_safetensors(big_a, specs, seed=1)
            size_b = write_safetensors(big_b, specs[:-1], seed=2)
            label = f"pair of 2 × {format_bytes(size_a)} (sum {format_bytes(size_a + size_b)})"
            print(f"written: {label}", file=sys.stderr)
            ours, found = timed(lambda: diff_keys_analysis(big_a, big_b), args.reps)
            loaded, counts = timed(lambda: load_state_dicts(big_a, big_b), args.big_reps)
            assert found[:2] == counts == (0, 1), (found, counts)  # both see the one unexpected key
            rows.append((label, "reader + analysis (in-process)", ours, loaded,
                         "load_file both + load_state_dict(strict=False)"))
            script = LOAD_SCRIPT.format(a=str(big_a), b=str(big_b))
            rows += fresh_process_rows(label, big_a, big_b, script, args.big_reps,
                                       ("the same load in python -c (torch import included)",
                                        "the same load in python -S -c"), plain_start)
            # The same, each run of either side starting with both files out of the page cache (as after a
            # reboot, or for checkpoints not read lately): what a headers-only reader saves on a real disk.
            cli_cold, loaded_cold = subprocess_times(
                [sys.executable, "-m", "weightdoctor", "diff-keys", str(big_a), str(big_b), "--json"],
                [sys.executable, "-c", script], args.big_reps, before=lambda: drop_from_page_cache(big_a, big_b))
            rows.append((label, "CLI --json (fresh process), cold page cache", cli_cold, loaded_cold,
                         "the same load in python -c, cold page cache"))
    finally:
        if not args.keep:
            shutil.rmtree(args.out, ignore_errors=True)

    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; load average {load_before:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end; medians of {args.reps} runs ({args.big_reps} for the state-dict load)")
    print()
    print("| pair | diff-keys measured as | diff-keys wall | baseline wall | wall ratio | diff-keys CPU | "
          "baseline CPU | CPU ratio | baseline |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for label, what, ours, base, base_name in rows:
        print(f"| {label} | {what} | {ours.wall * 1000:.1f} ms | {base.wall * 1000:.1f} ms | "
              f"{_ratio(ours.wall, base.wall)} | {ours.cpu * 1000:.1f} ms | {base.cpu * 1000:.1f} ms | "
              f"{_ratio(ours.cpu, base.cpu)} | {base_name} |")


def _ratio(ours: float, base: float) -> str:
    if ours <= 0 or base <= 0:
        return "-"
    return f"{ours / base:.2f}×" if ours / base >= 0.1 else f"{base / ours:.0f}× faster"


if __name__ == "__main__":
    main()
