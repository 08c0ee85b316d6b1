"""memory3: the limits the memory guard had left out (a data limit, ulimit -d; a cgroup's swap limit). Limits are
simulated as test_memory2's are: the guard's own reads of /proc and /sys patched, or a child process given the limit
(setrlimit). Large tensors are sparse files (holes read as zeros, no disk)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO_ROOT, one_error_line, run_cli, write_sparse_float_safetensors
from weightdoctor.checkpoint import safetensors_format


def _files_read(monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> None:
    """The memory guard's reads of /proc and /sys give `files` (path -> text); any other of them is absent."""
    def redirected(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str) and file.startswith(("/proc/", "/sys/")):
            if file not in files:
                raise FileNotFoundError(file)
            return io.StringIO(files[file])
        return open(file, *args, **kwargs)  # noqa: SIM115

    monkeypatch.setattr(safetensors_format, "open", redirected, raising=False)


def _child(code: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=300)


# A child that imports what the commands use, then limits its data (RLIMIT_DATA) to 64 MiB past what it holds.
_DATA_LIMITED = """
import resource, sys
import torch, weightdoctor.cli
from weightdoctor.entry import main
held = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmData:"))
resource.setrlimit(resource.RLIMIT_DATA, (held + (64 << 20), resource.RLIM_INFINITY))
sys.argv = ["weightdoctor"] + sys.argv[1:]
main()
"""


@pytest.mark.parametrize("command", [["check-dtype"], ["inspect", "--stats"]])
def test_a_data_limit_bounds_what_is_available(tmp_path: Path, command: list[str]) -> None:
    """Under `ulimit -d` (RLIMIT_DATA, which bounds every private writable map since Linux 4.7, so each large
    buffer), a 268 MB tensor passed the guard (the machine had the memory) and its buffer was refused:
    "error: out of memory: MemoryError" (of no file), or torch's "DefaultCPUAllocator: can't allocate memory".
    It is refused first, in one line naming the tensor and the limit."""
    path = write_sparse_float_safetensors(tmp_path / "m.safetensors", 4, 64 << 20)
    done = _child(_DATA_LIMITED, [command[0], str(path), *command[1:]])
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert line.splitlines() == [line]
    assert line.startswith(f"error: {path}: tensor 'b.weight' (268.44 MB) is read whole into memory, more than the ")
    assert "left under this process's data limit (ulimit -d: " in line
    assert "in private writable memory already): nothing was read" in line


def test_a_data_limit_is_measured_against_the_data_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """The room under RLIMIT_DATA is the limit less VmData; a kernel booted with ignore_rlimit_data only warns
    past it, and the limit is then no bound."""
    import resource

    real = resource.getrlimit
    monkeypatch.setattr(resource, "getrlimit", lambda which: (
        (8 << 20, resource.RLIM_INFINITY) if which == resource.RLIMIT_DATA else real(which)))
    files = {"/proc/meminfo": "MemAvailable: 64000000 kB\n", "/proc/self/status": "VmSize: 100 kB\nVmData: 1024 kB\n"}
    _files_read(monkeypatch, files)
    if real(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY:
        pytest.skip("this process has an address-space limit of its own")
    assert safetensors_format.available_memory() == (8 << 20) - (1 << 20)
    assert safetensors_format._limit_words() == (
        "left under this process's data limit (ulimit -d: 8.39 MB, 1.05 MB of it in private writable memory "
        "already)")
    _files_read(monkeypatch, {**files, "/sys/module/kernel/parameters/ignore_rlimit_data": "Y\n"})
    assert safetensors_format.available_memory() == 64000000 * 1024


def test_a_map_torch_load_is_refused_under_a_data_limit_names_that_limit(tmp_path: Path) -> None:
    """torch.load(mmap=True) maps a file privately and writably: under `ulimit -d` 4 GiB above what the process
    holds, an 8.59 GB .bin it reads (here: big-endian) was said refused for "its memory and swap, or this process's
    address-space limit, ulimit -v", with neither the cause (on a machine with the memory, and no ulimit -v)."""
    from tests.test_memory2 import _sparse_bin

    path = _sparse_bin(tmp_path / "m.bin", 4, 1 << 31, byteorder="big")
    done = _child(_DATA_LIMITED.replace("64 << 20", "4 << 30"), ["inspect", str(path)])
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"error: {path}: torch.load(mmap=True), which reads this file (weightdoctor's own reader does not model "
        "it), maps all of it (8.59 GB) and the system refused the map (more than it commits: its memory and swap, "
        "or this process's data limit, ulimit -d): nothing was read")


_MACHINE_WITH_SWAP = {"/proc/meminfo": "MemTotal: 4096 kB\nMemAvailable: 2048 kB\nSwapTotal: 8192 kB\n"
                                       "SwapFree: 8192 kB\n"}


def test_a_cgroup_without_swap_is_not_given_the_machines_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a cgroup v2 container with `memory.swap.max` 0 (and no memory limit: a Kubernetes BestEffort pod on a node
    with swap), the machine's 8 MiB of free swap were counted: a 4 MiB tensor passed the guard with 2 MiB of memory
    available, and the OOM killer ended the process. Only the memory is available to it."""
    _files_read(monkeypatch, {**_MACHINE_WITH_SWAP, "/proc/self/cgroup": "0::/box\n",
                              "/sys/fs/cgroup/box/memory.max": "max\n", "/sys/fs/cgroup/box/memory.swap.max": "0\n",
                              "/sys/fs/cgroup/box/memory.swap.current": "0\n"})
    assert safetensors_format.available_memory() == 2048 * 1024
    path = write_sparse_float_safetensors(tmp_path / "m.safetensors", 4, 1 << 20)
    refused = run_cli("check-dtype", str(path))
    assert refused.exit_code == 2
    assert one_error_line(refused) == (
        f"error: {path}: tensor 'b.weight' (4.19 MB) is read whole into memory, more than the 2.10 MB this machine "
        "has available to this process (its available memory, and 0 B of its 8.39 MB of free swap under the cgroup "
        "swap limit /sys/fs/cgroup/box/memory.swap.max: 0 B, less the swap it uses): nothing was read")


def test_the_swap_limit_of_a_cgroup_above_this_one_counts_less_what_it_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slice's swap limit of 4 MiB, 1 MiB of it used, leaves 3 MiB of the machine's 8 MiB of free swap; its own
    cgroup's "max" none."""
    _files_read(monkeypatch, {**_MACHINE_WITH_SWAP, "/proc/self/cgroup": "0::/slice/job\n",
                              "/sys/fs/cgroup/slice/job/memory.swap.max": "max\n",
                              "/sys/fs/cgroup/slice/job/memory.swap.current": "0\n",
                              "/sys/fs/cgroup/slice/memory.swap.max": f"{4 << 20}\n",
                              "/sys/fs/cgroup/slice/memory.swap.current": f"{1 << 20}\n"})
    assert safetensors_format.available_memory() == (2048 << 10) + (3 << 20)


def test_a_v1_cgroup_whose_memsw_limit_allows_no_swap_is_not_given_the_machines_swap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """cgroup v1: memory and swap together (`memory.memsw.limit_in_bytes`) at the memory limit, 8 MiB, leaves no
    swap; the machine's 2 MiB of memory and 8 MiB of free swap were taken for 7 MiB (the cgroup's room)."""
    _files_read(monkeypatch, {**_MACHINE_WITH_SWAP, "/proc/self/cgroup": "4:memory:/box\n",
                              "/sys/fs/cgroup/memory/box/memory.limit_in_bytes": f"{8 << 20}\n",
                              "/sys/fs/cgroup/memory/box/memory.usage_in_bytes": f"{1 << 20}\n",
                              "/sys/fs/cgroup/memory/box/memory.memsw.limit_in_bytes": f"{8 << 20}\n",
                              "/sys/fs/cgroup/memory/box/memory.memsw.usage_in_bytes": f"{1 << 20}\n",
                              "/sys/fs/cgroup/memory/box/memory.stat": "cache 0\n"})
    assert safetensors_format.available_memory() == 2048 << 10
    assert "memory.memsw.limit_in_bytes: 8.39 MB of memory and swap together" in safetensors_format._limit_words()


def test_a_cgroup_whose_swap_limit_is_above_the_free_swap_keeps_the_machines_figure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _files_read(monkeypatch, {**_MACHINE_WITH_SWAP, "/proc/self/cgroup": "0::/box\n",
                              "/sys/fs/cgroup/box/memory.swap.max": f"{64 << 20}\n",
                              "/sys/fs/cgroup/box/memory.swap.current": "0\n"})
    assert safetensors_format.available_memory() == (2048 + 8192) << 10
    assert safetensors_format._limit_words() == "this machine has available"
