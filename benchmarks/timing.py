"""Measuring for the benchmarks: wall time and peak RSS of a child process, and the median time of a call."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    max_rss_bytes: int


def run_measured(cmd: Sequence[str], env: dict[str, str] | None = None) -> Measurement:
    """Run `cmd` to completion; return its wall time and peak RSS (from wait4, so the child's own)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=full_env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        raise RuntimeError(f"{' '.join(cmd)} failed: {stderr[-500:]}")
    if proc.stderr:
        proc.stderr.close()
    return Measurement(wall, usage.ru_maxrss * 1024)


def median_of(cmd: Sequence[str], repeats: int, env: dict[str, str] | None = None) -> Measurement:
    """Median wall time and the largest peak RSS over `repeats` runs."""
    runs = [run_measured(cmd, env) for _ in range(repeats)]
    return Measurement(statistics.median(r.wall_s for r in runs), max(r.max_rss_bytes for r in runs))


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


def weightdoctor_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "weightdoctor", *args]


def median_seconds(func: Callable[[], object], reps: int) -> float:
    """The median wall time of `reps` calls of `func` in this process."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
