"""Benchmark: what the static pickle scan and `inspect --verify` cost, against baselines in the same run.

    python -m benchmarks.bench_security [--size 1GB] [--tensors 200] [--many 20000] [--repeat 5]

Checkpoints are generated under bench-data/ (git-ignored) when missing. Rows, each the median of
`--repeat` runs in this process (warm page cache):
- scan_file (weightdoctor's static scan) vs torch.serialization.get_unsafe_globals_in_checkpoint
  (torch's own static global listing, no memo/STACK_GLOBAL resolution) and vs torch.load(weights_only,
  mmap) (what reading the structure costs anyway);
- verify_crcs (every member's CRC-32) vs reading the file once with zlib.crc32 over 1 MiB chunks.
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

import torch

from benchmarks.synth import specs_for_size, write_bin
from benchmarks.timing import median_seconds
from weightdoctor.security import scan_file
from weightdoctor.security.archive import verify_crcs
from weightdoctor.units import format_bytes, parse_size

DATA = Path("bench-data")




def _read_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def _verify(path: Path) -> None:
    with open(path, "rb") as handle:
        report = verify_crcs(handle, path.stat().st_size)
    assert not report.mismatches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1GB")
    parser.add_argument("--tensors", type=int, default=200)
    parser.add_argument("--many", type=int, default=20000, help="tensor count of the many-small-tensors file")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    big = DATA / f"scan-big-{args.size}.bin"
    many = DATA / f"scan-many-{args.many}.bin"
    if not big.exists():
        write_bin(big, specs_for_size(parse_size(args.size), args.tensors))
    if not many.exists():
        write_bin(many, specs_for_size(args.many * 64, args.many))

    rows = []
    for path in (big, many):
        assert scan_file(path).verdict == "safe"
        scan = median_seconds(lambda p=path: scan_file(p), args.repeat)
        torch_scan = median_seconds(lambda p=path: torch.serialization.get_unsafe_globals_in_checkpoint(p), args.repeat)
        load = median_seconds(lambda p=path: torch.load(p, weights_only=True, mmap=True), args.repeat)
        rows.append((path.name, format_bytes(path.stat().st_size), "scan_file", scan,
                     "torch get_unsafe_globals", torch_scan))
        rows.append((path.name, format_bytes(path.stat().st_size), "scan_file", scan,
                     "torch.load(weights_only, mmap)", load))
        verify = median_seconds(lambda p=path: _verify(p), args.repeat)
        read = median_seconds(lambda p=path: _read_crc(p), args.repeat)
        rows.append((path.name, format_bytes(path.stat().st_size), "verify_crcs", verify, "read + crc32 of file", read))

    print(f"median of {args.repeat} runs, warm cache, torch {torch.__version__}")
    print("| file | size | measured | seconds | baseline | seconds | ratio |")
    print("|---|---|---|---:|---|---:|---:|")
    for name, size, what, value, base_name, base in rows:
        print(f"| {name} | {size} | {what} | {value:.4f} | {base_name} | {base:.4f} | {value / base:.2f}× |")


if __name__ == "__main__":
    main()
