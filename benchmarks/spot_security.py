"""Spot measurements quoted in docs/security.md, re-run on demand (not timed tests).

    python -m benchmarks.spot_security            # prints a Markdown table; data under a temp folder

1. A safetensors header of 1.6 M entries (~95 MB): how long weightdoctor takes to refuse it (MAX_TENSORS,
   counted before parsing) against `json.loads` of the same header.
2. A 1.2 MB torch archive whose data.pkl member deflates to 1.2 GiB: peak RSS of `inspect` (a fresh process)
   while it refuses the member.
3. The static pickle scan of a torch.save of 20,000 tensors: the size of its data.pkl and the scan's time.
"""

from __future__ import annotations

import json
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path


def _header_case(folder: Path) -> tuple[str, str]:
    entries = 1_350_000  # what fits under the 100 MB header limit, so that the tensor count refuses it
    header = {str(i): {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i in range(entries)}
    raw = json.dumps(header, separators=(",", ":")).encode()
    path = folder / "many.safetensors"
    with path.open("wb") as out:
        out.write(struct.pack("<Q", len(raw)))
        out.write(raw)
        out.truncate(8 + len(raw) + 4 * entries)
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.errors import WeightDoctorError

    start = time.perf_counter()
    why = "not refused"
    try:
        open_checkpoint(str(path))
    except WeightDoctorError as exc:
        why = str(exc).split(": ", 1)[-1][:100]
    refused = time.perf_counter() - start
    start = time.perf_counter()
    json.loads(raw)
    parsed = time.perf_counter() - start
    return (f"header of {entries:,} entries ({len(raw) / 1e6:.0f} MB)",
            f"refused in {refused:.2f} s ({why}); `json.loads` of it {parsed:.1f} s")


def _bomb_case(folder: Path) -> tuple[str, str]:
    import torch

    source = folder / "small.pt"
    torch.save({"w": torch.zeros(2)}, source)
    bomb = folder / "bomb.pt"
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(bomb, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("data.pkl"):
                data = data + b"\x00" * (1200 * 2**20)  # trailing bytes: 1.2 GiB inflated
                zout.writestr(item.filename, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
            else:
                zout.writestr(item, data)
    code = ("import resource, subprocess, sys\n"
            f"p = subprocess.run([sys.executable, '-m', 'weightdoctor', 'inspect', {str(bomb)!r}], "
            "capture_output=True, text=True)\n"
            "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.stderr.strip()[:160])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 2)
    return (f"{bomb.stat().st_size / 1e6:.1f} MB archive, data.pkl inflating to 1.2 GiB",
            f"exit {out[0]}, peak RSS {int(out[1]) / 1024:.0f} MB: {out[2].strip()}")


def _scan_case(folder: Path) -> tuple[str, str]:
    import torch

    from weightdoctor.security import scan_file

    path = folder / "many.bin"
    torch.save({f"layers.{i}.weight": torch.zeros(1) for i in range(20_000)}, path)
    with zipfile.ZipFile(path) as archive:
        pickle_bytes = next(i.file_size for i in archive.infolist() if i.filename.endswith("data.pkl"))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        scan_file(path)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return (f"torch.save of 20,000 tensors: data.pkl {pickle_bytes / 1e6:.1f} MB",
            f"scan median of 3: {median:.2f} s ({median / pickle_bytes * 1e6:.2f} µs per byte)")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [case(Path(tmp)) for case in (_header_case, _bomb_case, _scan_case)]
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; Python {sys.version.split()[0]}; "
          f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB\n")
    print("| case | measured |\n|---|---|")
    for case, measured in rows:
        print(f"| {case} | {measured} |")


if __name__ == "__main__":
    main()
