"""Benchmark `convert` and `shard` on a >= 2 GB synthetic checkpoint against `cp` of the same bytes and
the usual Python paths (torch.load + safetensors.torch.save_file; huggingface_hub.save_torch_state_dict).

    python -m benchmarks.bench_convert --size 2GB --tensors 300 --repeat 3

Every command runs in its own process; wall time and that process's peak RSS (wait4) are recorded, and
the median over --repeat runs is printed with its ratio to `cp` measured in the same invocation (and to
`cp` + `sync FILE`, since weightdoctor fsyncs what it writes). Between runs the output is deleted and
the file system synced, untimed. The
data lives under bench-data/ and is deleted at the end (--keep to keep it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench-data" / "convert"

USUAL_BIN_TO_ST = """
import sys, torch
from safetensors.torch import save_file
sd = torch.load(sys.argv[1], weights_only=True, mmap=False)
save_file(sd, sys.argv[2], metadata={"format": "pt"})
"""
USUAL_HUB_SHARD = """
import sys
from safetensors.torch import load_file
from huggingface_hub import save_torch_state_dict
save_torch_state_dict(load_file(sys.argv[1]), sys.argv[2], max_shard_size=sys.argv[3])
"""


def run(cmd: list[str]) -> tuple[float, int]:
    """Run `cmd`; return (wall seconds, peak RSS in bytes of that process)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="2GB")
    parser.add_argument("--tensors", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--shard", default="500MB")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    # The parent stays small (no torch import): a child started from it would count the parent's
    # memory in its own peak RSS.
    from weightdoctor.units import format_bytes

    DATA.mkdir(parents=True, exist_ok=True)
    st, binf = DATA / "src.safetensors", DATA / "src.bin"
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for path, fmt in ((st, "safetensors"), (binf, "bin")):
        if not path.exists():
            subprocess.run([py, "-m", "benchmarks.synth", str(path), "--size", args.size, "--tensors",
                            str(args.tensors), "--format", fmt], check=True, env=env, stdout=subprocess.DEVNULL)
    with open(st, "rb") as handle:
        header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
    offsets = [v["data_offsets"] for k, v in header.items() if k != "__metadata__"]
    largest = max(end - begin for begin, end in offsets)
    wd = [py, "-m", "weightdoctor"]
    out = DATA / "out"

    cases: list[tuple[str, str, list[str]]] = [
        ("cp (safetensors bytes)", "cp", ["cp", str(st), str(out)]),
        ("cp + sync", "cp", ["sh", "-c", f"cp {st} {out} && sync {out}"]),
        ("convert .bin -> .safetensors", "bin", [*wd, "convert", str(binf), "-o", str(out)]),
        ("  convert, --no-verify", "bin", [*wd, "convert", str(binf), "-o", str(out), "--no-verify"]),
        ("torch.load + save_file", "bin", [py, "-c", USUAL_BIN_TO_ST, str(binf), str(out)]),
        (f"shard .safetensors --max {args.shard}", "st", [*wd, "shard", str(st), "--max", args.shard, "-o", str(out)]),
        ("  shard, --no-verify", "st", [*wd, "shard", str(st), "--max", args.shard, "-o", str(out), "--no-verify"]),
        ("hub save_torch_state_dict", "st", [py, "-c", USUAL_HUB_SHARD, str(st), str(out), args.shard]),
        ("convert .safetensors -> .bin", "st", [*wd, "convert", str(st), "-o", str(out), "--to", "bin"]),
        ("shard .safetensors --format bin", "st",
         [*wd, "shard", str(st), "--max", args.shard, "--format", "bin", "-o", str(out)]),
        ("convert .safetensors, renamed", "st", [*wd, "convert", str(st), "-o", str(out), "--strip-prefix", "model."]),
        (f"shard .bin --max {args.shard}", "bin", [*wd, "shard", str(binf), "--max", args.shard, "-o", str(out)]),
        ("convert .bin --dtype bf16 (a cast)", "bin", [*wd, "convert", str(binf), "-o", str(out), "--dtype", "bf16"]),
    ]
    results: dict[str, list[tuple[float, int]]] = {name: [] for name, _, _ in cases}
    for _ in range(args.repeat):
        for name, _, cmd in cases:
            if "hub" in name or "shard" in name:
                out.mkdir(exist_ok=True)  # huggingface_hub writes into an existing folder
                if "shard" in name:
                    shutil.rmtree(out)
            results[name].append(run(cmd))
            if out.is_dir():
                shutil.rmtree(out)
            else:
                out.unlink(missing_ok=True)
            # The file system here is mounted with online discard: deleting 2 GB issues discards that
            # stall whichever writer comes next. Let them finish, untimed, so no case pays for another.
            os.sync()
            time.sleep(3)

    base = statistics.median(w for w, _ in results[cases[0][0]])
    base_sync = statistics.median(w for w, _ in results[cases[1][0]])
    print(f"source: {format_bytes(st.stat().st_size)} safetensors / {format_bytes(binf.stat().st_size)} .bin, "
          f"{len(offsets)} tensors, largest {format_bytes(largest)}; median of {args.repeat} runs each")
    print(f"{'case':38} {'wall s':>8} {'÷ cp':>6} {'÷ cp+sync':>10} {'peak RSS':>10} {'RSS - largest':>14}")
    for name, _, _ in cases:
        wall = statistics.median(w for w, _ in results[name])
        rss = statistics.median(r for _, r in results[name])
        print(f"{name:38} {wall:8.2f} {wall / base:6.2f} {wall / base_sync:10.2f} {format_bytes(rss):>10} "
              f"{format_bytes(rss - largest):>14}")
    if not args.keep:
        shutil.rmtree(DATA)


if __name__ == "__main__":
    main()
