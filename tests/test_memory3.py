"""memory3: the limits the memory guard had left out (a data limit, ulimit -d; a cgroup's swap limit), and the peak of
diff-keys --values. Limits are simulated as test_memory2's are: the guard's own reads of /proc and /sys patched, or a
child process given the limit (setrlimit). Large tensors are sparse files (holes read as zeros, no disk)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    PEAK_RISE_CHILD,
    REPO_ROOT,
    one_error_line,
    redirect_proc_reads,
    run_cli,
    write_sparse_float_safetensors,
)
from weightdoctor.checkpoint import safetensors_format
from weightdoctor.diff_keys import compare_pair


def _files_read(monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> None:
    redirect_proc_reads(monkeypatch, files)


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




def test_diff_keys_values_holds_one_pair_and_little_more(tmp_path: Path) -> None:
    """diff-keys --values said its memory was one tensor pair, and compared it in float64 chunks of 4M values:
    about seven float64 temporaries of a chunk alive at once, ~220 MB more than the pair (two 32 MB tensors, 61 MiB,
    here: the peak rose by 248 MiB). The chunks are 256K values now: the peak rises by the pair, ~10 MiB that any
    --values run takes (of two 64K-value tensors too) and ~17 MiB (measured: 88 to 94 MiB)."""
    a = write_sparse_float_safetensors(tmp_path / "a.safetensors", 8 << 20)
    b = write_sparse_float_safetensors(tmp_path / "b.safetensors", 8 << 20)
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("no /proc/self/clear_refs to reset the peak resident set with")
    done = _child(PEAK_RISE_CHILD, ["diff-keys", str(a), str(b), "--values", "--json"])
    assert done.returncode == 0, done.stderr
    assert '"identical": true' in done.stdout
    rise = int(done.stderr.strip().splitlines()[-1].removeprefix("peak rise MiB "))
    pair = 2 * 32 * 10**6 >> 20
    assert pair <= rise < pair + 48, rise


def _reference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """max |A−B| and ‖A−B‖/‖B‖ computed exactly (fractions), rounded once at the end."""
    xs = [Fraction(float(x)) for x in a.reshape(-1).tolist()]
    ys = [Fraction(float(y)) for y in b.reshape(-1).tolist()]
    largest = max(abs(x - y) for x, y in zip(xs, ys, strict=True))
    diff_sq = sum((x - y) ** 2 for x, y in zip(xs, ys, strict=True))
    ref_sq = sum(y * y for y in ys)
    return float(largest), math.sqrt(diff_sq / ref_sq)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64,
                                   torch.float8_e4m3fn, torch.int8, torch.int32, torch.int64])
def test_values_compared_in_many_chunks_keep_their_precision(dtype: torch.dtype) -> None:
    """Smaller chunks mean more chunk sums: added exactly rounded, the relative change is the exact one to a few
    units in the last place, in every dtype, and the largest difference exact."""
    generator = torch.Generator().manual_seed(11)
    base = torch.randn(3000, generator=generator, dtype=torch.float64) * 40
    a = base.to(dtype) if dtype.is_floating_point else base.round().to(dtype)
    b = (base * 1.01 + 0.5).to(dtype) if dtype.is_floating_point else (base * 1.01 + 0.5).round().to(dtype)
    largest, rel = _reference(a, b)
    for chunk in (128, 1 << 18):
        diff = compare_pair("w", a, b, chunk)[0]
        assert not diff.identical
        assert diff.max_abs_diff == largest, chunk
        assert math.isclose(diff.rel_change, rel, rel_tol=4e-16, abs_tol=0.0), (chunk, diff.rel_change, rel)


def test_complex_values_compared_from_their_real_view_keep_their_figures() -> None:
    """A complex pair was cast whole to complex128 (4x a complex32 tensor, 2x a complex64 one) before its chunks:
    now its (real, imaginary) view is cast chunk by chunk, to the same figures."""
    generator = torch.Generator().manual_seed(5)
    a = torch.randn(2000, dtype=torch.complex64, generator=generator)
    b = a + 1e-3 * torch.randn(2000, dtype=torch.complex64, generator=generator)
    largest, rel = _reference(torch.view_as_real(a), torch.view_as_real(b))
    diff = compare_pair("w", a, b, 256)[0]
    assert diff.max_abs_diff == largest
    assert math.isclose(diff.rel_change, rel, rel_tol=4e-16)



# A child that compares a strided (transposed) float32 pair and a float4 pair of 32 MiB each, and prints by how much
# each comparison raised its peak resident set, in MiB.
_PIECES_PEAK = """
import torch
from weightdoctor.diff_keys import compare_pair
def status(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))
def rise(a, b):
    compare_pair("w", a[:2], b[:2])
    with open("/proc/self/clear_refs", "w") as reset:
        reset.write("5")
    start = status("VmRSS")
    compare_pair("w", a, b)
    return (status("VmHWM") - start) // 1024
generator = torch.Generator().manual_seed(1)
a, b = (torch.randn(2048, 4096, generator=generator).t() for _ in range(2))
codes = [torch.randint(0, 256, (32 << 20,), dtype=torch.uint8, generator=generator) for _ in range(2)]
print(rise(a, b), rise(*(c.view(torch.float4_e2m1fn_x2) for c in codes)))
"""


def test_a_strided_or_float4_pair_is_compared_a_piece_at_a_time() -> None:
    """A transposed pair (a .bin's saved view) was copied whole by reshape(-1) before its chunks, and a float4 pair
    decoded whole through int64 table indices (16 bytes a byte): comparing two 32 MiB tensors raised the peak by 239
    and 383 MiB. Each piece is copied or decoded alone now."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("no /proc/self/clear_refs to reset the peak resident set with")
    done = _child(_PIECES_PEAK, [])
    assert done.returncode == 0, done.stderr
    strided, float4 = map(int, done.stdout.split())
    assert strided < 40 and float4 < 40, (strided, float4)


@pytest.mark.parametrize("chunk", [4, 16, 1 << 18])
def test_pieces_of_a_strided_pair_give_the_figures_of_its_contiguous_copy(chunk: int) -> None:
    generator = torch.Generator().manual_seed(2)
    a = torch.randn(7, 5, 3, generator=generator).permute(2, 0, 1)
    b = (a.contiguous() * 1.5 + 0.25).permute(0, 2, 1).contiguous().permute(0, 2, 1)  # strided another way
    b[1, 3, 2] = math.nan
    a[1, 3, 2] = math.nan  # a NaN on both sides is no change
    largest, rel = _reference(torch.nan_to_num(a, nan=0.0), torch.nan_to_num(b, nan=0.0))
    diff = compare_pair("w", a, b, chunk)[0]
    assert not diff.identical and diff.max_abs_diff == largest
    assert math.isclose(diff.rel_change, rel, rel_tol=4e-16)
    assert compare_pair("w", a, a.contiguous(), chunk)[0].identical


@pytest.mark.parametrize("chunk", [6, 1 << 18])
def test_float4_decoded_a_piece_at_a_time_gives_the_exact_figures(chunk: int) -> None:
    generator = torch.Generator().manual_seed(3)
    codes = [torch.randint(0, 256, (40, 9), dtype=torch.uint8, generator=generator) for _ in range(2)]
    a, b = (c.view(torch.float4_e2m1fn_x2) for c in codes)
    table = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=torch.float64)
    values = [torch.stack([table[(c & 15).long()], table[(c >> 4).long()]], -1) for c in codes]
    largest, rel = _reference(*values)
    for pair in ((a, b), (a.t(), b.t())):
        diff = compare_pair("w", *pair, chunk)[0]
        assert diff.max_abs_diff == largest
        assert math.isclose(diff.rel_change, rel, rel_tol=4e-16)


def _peak_rise(args: list[str]) -> int:
    """By how many MiB `weightdoctor ARGS` raised its peak resident set, once torch and the commands were imported."""
    done = _child(PEAK_RISE_CHILD, args)
    return int(done.stderr.strip().splitlines()[-1].removeprefix("peak rise MiB "))


@pytest.mark.parametrize(("command", "copies"), [(["inspect", "--stats"], 1), (["check-dtype"], 0)])
def test_a_strided_tensor_is_not_copied_whole_twice_or_at_all(tmp_path: Path, command: list[str],
                                                              copies: int) -> None:
    """A .bin holding a transposed view: inspect --stats copied it whole twice (one copy for the statistics, one for
    the classifier's sample lines, alive together), check-dtype once (flattened before its chunks). Measured on a
    64 MiB tensor, the peak rose 117 and 79 MiB more than for its contiguous twin (the file's pages read count in
    both); now 52 MiB (one copy, shared) and 17 MiB (a chunk copied at a time)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("no /proc/self/clear_refs to reset the peak resident set with")
    generator = torch.Generator().manual_seed(4)
    values = torch.randn(2048, 8192, generator=generator)  # 64 MiB
    torch.save({"w": values}, tmp_path / "plain.bin")
    torch.save({"w": values.t()}, tmp_path / "strided.bin")
    plain_report, strided_report = (run_cli(command[0], str(tmp_path / name), *command[1:], "--json").stdout
                                    for name in ("plain.bin", "strided.bin"))
    assert '"w"' in strided_report
    if command[0] == "check-dtype":  # the same values, in another order: the same counts
        counts = [{k: t[k] for k in ("values", "overflow", "underflow", "changed")}
                  for t in (json.loads(r)["targets"]["fp16"]["tensors"][0] for r in (plain_report, strided_report))]
        assert counts[0] == counts[1] and counts[0]["values"] == 1 << 24
    plain, strided = (_peak_rise([command[0], str(tmp_path / name), *command[1:], "--json"])
                      for name in ("plain.bin", "strided.bin"))
    assert strided - plain < 64 * copies + 32, (plain, strided)
