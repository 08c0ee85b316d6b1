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
# (the first argument), and runs `weightdoctor` with the rest.
_DATA_LIMITED = """
import resource, sys
import torch, weightdoctor.cli
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


@pytest.mark.parametrize("room", [12 * MIB, 20 * MIB])
def test_a_copy_refused_memory_says_so_not_that_the_disk_failed(tmp_path: Path, room: int) -> None:
    """With no room for an 8 MiB chunk's map (20 MiB), the line said "cannot write the output: Cannot allocate
    memory", as if the disk had refused the output; with none for the verifying thread's stack (12 MiB), it was
    "unexpected RuntimeError: can't start new thread". Both say the memory was refused, and which limit is set."""
    source = _safetensors_of(tmp_path / "m.safetensors", 1, 1024)
    line = _one_line(_data_limited(room, "convert", source, "-o", tmp_path / "out.safetensors"))
    assert line.startswith(f"error: {tmp_path / 'out.safetensors'}: cannot write the output: the system refused the "
                           "memory to copy or verify it (Cannot allocate memory): this process's data limit, "
                           "ulimit -d, is set; nothing was left behind"), line
    assert not (tmp_path / "out.safetensors").exists()
