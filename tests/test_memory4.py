"""memory4: what the memory guard had not counted under a process's own limits (a data limit, `ulimit -d`): the
copy of a strided tensor (a transpose a .bin holds as such) that inspect --stats makes beside the view it read,
and the whole-file private maps verification made of a convert's or shard's source. Each case runs in a child
process given the limit past what it holds once the commands are imported, on files of a few MiB."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO_ROOT
from weightdoctor.checkpoint.reader import unravel_positions

# A child that imports what the commands use, then limits its data (RLIMIT_DATA) to `room` bytes past what it holds
# (the first argument), and runs `weightdoctor` with the rest. Every weightdoctor module (and the rich and safetensors
# modules the commands import lazily) is imported before the limit: imported after it, each was compiled from source
# under the limit where no .pyc was written (PYTHONDONTWRITEBYTECODE=1, as in CI), so the room the command had moved
# with the state of __pycache__ (redteam39).
_DATA_LIMITED = """
import importlib, pkgutil, resource, sys
import torch, weightdoctor, weightdoctor.cli
for module in pkgutil.walk_packages(weightdoctor.__path__, "weightdoctor."):
    importlib.import_module(module.name)
import rich.console, rich.live, rich.progress, rich.table, safetensors.torch
from weightdoctor.entry import main
held = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmData:"))
resource.setrlimit(resource.RLIMIT_DATA, (held + int(sys.argv[1]), resource.RLIM_INFINITY))
sys.argv = ["weightdoctor"] + sys.argv[2:]
main()
"""

MIB = 1 << 20


def _data_limited(room: int, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _DATA_LIMITED, str(room), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=300)


def _transposed_bin(path: Path, rows: int, columns: int) -> Path:
    """A .bin whose `w` is saved transposed (a strided view of its storage), seeded."""
    values = torch.randn(rows, columns, generator=torch.Generator().manual_seed(4))
    torch.save({"w": values.t()}, path)
    return path


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stderr)
    return lines[0]


def test_the_copy_of_a_strided_tensor_is_refused_before_it_is_made(tmp_path: Path) -> None:
    """inspect --stats copies a strided tensor whole (reshape(-1)) beside the view of the file it read: under
    `ulimit -d` with room for the view (32 MiB) and not for both, the guard admitted the view and the copy died in
    torch's allocator, "unexpected RuntimeError: [enforce fail at alloc_cpu.cpp:127] ... DefaultCPUAllocator:
    can't allocate memory: you tried to allocate 33554432 bytes", of no tensor. It is refused first, naming it."""
    path = _transposed_bin(tmp_path / "t.bin", 2048, 4096)
    line = _one_line(_data_limited(64 * MIB, "inspect", path, "--stats"))
    assert line.startswith(f"error: {path}: tensor 'w' (33.55 MB) is strided (a view saved so) and copied whole in "
                           "memory, more than the "), line
    assert "left under this process's data limit (ulimit -d: " in line
    assert line.endswith("nothing was read; --sample N reads N values of each tensor instead")


def test_a_sample_of_a_strided_tensor_is_read_under_a_data_limit(tmp_path: Path) -> None:
    """--sample reads a strided tensor's values in place, by position: under the same limit it died in
    torch.unravel_index's first call, which imports torch.fx and sympy (tens of MB): "error: out of memory:
    MemoryError", of no file (or "unexpected SystemError: error return without exception set")."""
    path = _transposed_bin(tmp_path / "t.bin", 2048, 4096)
    sampled = _data_limited(64 * MIB, "inspect", path, "--stats", "--sample", "1000", "--json")
    assert sampled.returncode == 0, sampled.stderr
    stats = json.loads(sampled.stdout)["tensors"][0]["stats"]
    assert stats["count"] == 1000 and stats["sampled"] is True and 0.9 < stats["std"] < 1.1


def test_positions_unravel_as_torch_unravels_them() -> None:
    generator = torch.Generator().manual_seed(7)
    for shape in [(3, 4), (2, 3, 5), (7,), (1, 1, 9), (4, 1, 2, 3)]:
        positions = torch.randint(0, math.prod(shape), (64,), generator=generator)
        ours = unravel_positions(positions, shape)
        assert [part.tolist() for part in ours] == [part.tolist() for part in torch.unravel_index(positions, shape)]


def _safetensors_of(path: Path, tensors: int, rows: int) -> Path:
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(5)
    save_file({f"l{i}.weight": torch.randn(rows, 4096, generator=generator) for i in range(tensors)}, str(path))
    return path


@pytest.mark.parametrize("command", [["convert", "-o", "{tmp}/out.safetensors"],
                                     ["shard", "-o", "{tmp}/out/", "--max", "20MB"]])
def test_verification_maps_a_chunk_at_a_time_under_a_data_limit(tmp_path: Path, command: list[str]) -> None:
    """Verification mapped each source file whole, privately, which counts in full against `ulimit -d`: a 50 MB
    .safetensors with 64 MiB of room was "cannot write the output: Cannot allocate memory; nothing was left
    behind" (measured: convert and shard of a 600 MB file under `ulimit -d 600000`, 614 MB with ~230 MB held after
    the imports). Each 8 MiB chunk of both files is mapped alone now, and the copy is verified."""
    source = _safetensors_of(tmp_path / "m.safetensors", 3, 1024)
    words = [word.format(tmp=tmp_path) for word in command[1:]]
    done = _data_limited(64 * MIB, command[0], source, *words, "--json")
    assert done.returncode == 0, done.stderr
    written = json.loads(done.stdout)["write"]
    assert written["verified"] is True and written["tensors_verified"] == 3, written


# redteam41's comparer reads 1 MiB chunks into a buffer instead of mapping 8 MiB ones: the copy now fits in 12 and
# 20 MiB of room (exit 0, measured). mem8's comparer compares on the writing thread where its own thread cannot be had
# (no 8 MiB stack): the copy fits in 1, 2 and 4 MiB too (exit 0, measured); with none and 256 KiB (and 512 KiB) the
# refusal is still said as such, but not every time: the heap the interpreter already holds free varies from run to
# run, and one run of four (a busy machine) copied in 256 KiB. A limit below what the process holds (1 and 8 MiB
# below) refuses every new mapping, the copy's first buffer among them.
@pytest.mark.parametrize("room", [-MIB, -8 * MIB])
def test_a_copy_refused_memory_says_so_not_that_the_disk_failed(tmp_path: Path, room: int) -> None:
    """With no room for an 8 MiB chunk's map (20 MiB), the line said "cannot write the output: Cannot allocate
    memory", as if the disk had refused the output; with none for the verifying thread's stack (12 MiB), it was
    "unexpected RuntimeError: can't start new thread". Both say the memory was refused, and which limit is set."""
    source = _safetensors_of(tmp_path / "m.safetensors", 1, 1024)
    done = _data_limited(room, "convert", source, "-o", tmp_path / "out.safetensors")
    if done.returncode == 0:
        # The copy's buffers came from heap the imports had left free (glibc reuses it once its dynamic mmap threshold
        # has grown; which imports free what moves from one change of the modules to the next): then the copy is
        # made, whole and verified, with no new memory, which is right.
        assert "verified  1 tensor re-read, byte for byte equal to the source" in done.stdout, done.stdout
        from safetensors.torch import load_file

        written, read = load_file(str(tmp_path / "out.safetensors")), load_file(str(source))
        assert written.keys() == read.keys() and all(torch.equal(written[k], read[k]) for k in read)
        return
    line = _one_line(done)
    assert line.startswith(f"error: {tmp_path / 'out.safetensors'}: cannot write the output: the system refused the "
                           "memory to copy or verify it (Cannot allocate memory): this process's data limit, "
                           "ulimit -d, is set; nothing was left behind"), line
    assert not (tmp_path / "out.safetensors").exists()


def test_a_strided_tensor_converts_to_safetensors_a_piece_at_a_time(tmp_path: Path) -> None:
    """convert of a .bin holding a transpose copied it whole (`reshape(-1)`) beside the view of the file it read:
    with 112 MiB of data room, a 64 MiB one died in torch's allocator, "unexpected RuntimeError: [enforce fail at
    alloc_cpu.cpp:127] ... DefaultCPUAllocator: can't allocate memory". It is written 4 MiB at a time now. (A
    96 MiB one in 160 MiB of room here: the process's own data moves by ~20 MiB from run to run, measured, and the
    whole copy beside the view would need 192 MiB.)"""
    from safetensors.torch import load_file

    path = _transposed_bin(tmp_path / "t.bin", 6144, 4096)
    output = tmp_path / "out.safetensors"
    done = _data_limited(160 * MIB, "convert", path, "-o", output, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["write"]["verified"] is True
    expected = torch.randn(6144, 4096, generator=torch.Generator().manual_seed(4)).t()
    assert torch.equal(load_file(str(output))["w"], expected)


def test_a_strided_tensor_a_bin_output_copies_whole_is_refused_first(tmp_path: Path) -> None:
    """A .bin output stores the tensor's bytes in row-major order, copied whole: under the same limit that copy
    died in torch's allocator; it is refused first, in one line naming the tensor and the way without the copy."""
    path = _transposed_bin(tmp_path / "t.bin", 4096, 4096)
    line = _one_line(_data_limited(112 * MIB, "convert", path, "-o", tmp_path / "out.bin"))
    assert line.startswith(f"error: {path}: tensor 'w' (67.11 MB) is strided (a view saved so) and copied whole in "
                           "memory to be written, more than the "), line
    assert line.endswith("nothing was written; a .safetensors output is written without that copy")
    assert not (tmp_path / "out.bin").exists()


def test_pieces_of_a_strided_tensor_are_its_row_major_bytes() -> None:
    from weightdoctor.writers.safetensors_writer import contiguous_pieces

    generator = torch.Generator().manual_seed(8)
    for shape, order in [((30, 40), (1, 0)), ((5, 6, 7), (2, 0, 1)), ((3, 1000), (1, 0)), ((4, 5, 6), (0, 2, 1))]:
        tensor = torch.randn(*shape, generator=generator).permute(*order)
        for most in (4, 64, 1000, 1 << 20):
            pieces = list(contiguous_pieces(tensor, most))
            assert all(piece.is_contiguous() for piece in pieces)
            assert torch.equal(torch.cat([piece.reshape(-1) for piece in pieces]), tensor.reshape(-1))
            # Each piece holds at most `most` bytes, or one row of the last dimension (copied whole).
            assert all(piece.nbytes <= max(most, tensor.shape[-1] * 4) for piece in pieces)
    every_other = torch.randn(100, generator=generator)[::2]
    assert torch.equal(torch.cat(list(contiguous_pieces(every_other, 16))), every_other)


def test_a_buffer_torchs_allocator_refuses_is_said_as_memory(tmp_path: Path) -> None:
    """With a data room the whole-file map of a 32 MiB strided .bin nearly fills, a 4 MiB piece was refused by
    torch's allocator: "unexpected RuntimeError: [enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator:
    can't allocate memory: you tried to allocate 4194304 bytes ... (run with --debug for the traceback)". Which
    allocation the room runs out at moves with the run (the process's own data moves by ~20 MiB): in one whole-suite
    run it was a thread's stack, "unexpected RuntimeError: can't start new thread"; both are said as memory."""
    path = _transposed_bin(tmp_path / "t.bin", 2048, 4096)
    # 52 MiB, not 64: with the commands' modules imported before the limit (~22 MiB, measured) the room is past
    # them; at 64 MiB the copy is made (measured: refused at 48 and 56 MiB, made at 64).
    line = _one_line(_data_limited(52 * MIB, "convert", path, "-o", tmp_path / "out.safetensors"))
    assert line.startswith((f"error: {path}: out of memory: torch could not allocate ",
                            f"error: {path}: out of memory: a new thread's stack could not be made")), line
    assert line.endswith(" (Cannot allocate memory); this process's data limit, ulimit -d, is set")


def test_torchs_threads_are_started_before_a_limits_room_is_spent(tmp_path: Path) -> None:
    """torch starts its OpenMP worker on its first parallel operation: once a 64 MiB tensor's map had taken most
    of an 80 MiB data room, libgomp could not make the thread's stack and ended the process, "libgomp: Thread
    creation failed: Resource temporarily unavailable", exit code 1 (a finding, for check-dtype). The thread is
    started where the guard first measures a process limit, so that its stack is counted; a buffer refused later
    is one line, exit 2."""
    path = _transposed_bin(tmp_path / "t.bin", 4096, 4096)
    # Where the room runs out moves by a few MiB with the run (measured: at 80 MiB in one, 88 MiB in another, when
    # the modules were imported under the limit). With them imported first: the map refused up to 72 MiB, a 4 MiB
    # buffer at 80 and 88, the command done at 96 (measured), so the rooms are 16 MiB lower than they were.
    for room in (60, 68, 76, 84):
        line = _one_line(_data_limited(room * MIB, "check-dtype", path))
        assert line.startswith(f"error: {path}: ") and "memory" in line, line
        assert "libgomp" not in line and "unexpected" not in line, line


def test_under_an_address_space_limit_torchs_thread_takes_no_arena_of_its_own() -> None:
    """Started by the guard under `ulimit -v`, torch's worker thread costs its stack alone (8 MiB), not a malloc
    arena of 64 MiB more of address space (measured: 72 MiB a thread)."""
    code = """
import resource, torch
from weightdoctor.checkpoint import safetensors_format
torch.set_num_threads(2)
size = lambda: next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:"))
count = lambda: next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("Threads:"))
resource.setrlimit(resource.RLIMIT_AS, (size() * 1024 + (1 << 30), resource.RLIM_INFINITY))
before, threads = size(), count()
safetensors_format.available_memory()
print(size() - before, torch.get_num_threads(), threads, count())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=120)
    grown_kb, wanted, before, after = map(int, done.stdout.split())
    assert wanted == 2 and after == before + 1, (done.stdout, done.stderr)  # the worker started by the measure
    assert 4 * 1024 < grown_kb < 16 * 1024, grown_kb  # its stack, and no arena


def test_a_thread_the_system_refuses_is_said_as_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread's stack refused under a data limit reached the user as "unexpected RuntimeError: can't start new
    thread" (seen in a whole-suite run of the test above); it is memory, said in one line, exit 2."""
    from weightdoctor.commands import _errors
    from weightdoctor.render import console

    said: list[str] = []
    monkeypatch.setattr(console, "error", said.append)
    assert _errors.report_failure(RuntimeError("can't start new thread"), debug=False, where="t.bin") == 2
    assert len(said) == 1 and said[0].startswith("t.bin: out of memory: a new thread's stack could not be made "
                                                 "(Cannot allocate memory)"), said
    assert "unexpected" not in said[0]
