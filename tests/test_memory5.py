"""memory5: memory the guard and the peak had left out: the batches of small tensors of diff-keys --values and
check-dtype (float copies of 1M values alive together, ~80 to 150 MiB), a .bin's view spread over a larger storage
(mapped from its first element to its last), and the float copies of check-dtype and inspect --stats at the edge of
a data limit. Peaks and limits are measured in a child process, as tests/test_memory3.py and test_memory4.py do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import PEAK_RISE_CHILD, REPO_ROOT

MIB = 1 << 20


# A child that imports what the commands use, then limits its data (RLIMIT_DATA) to `room` bytes past what it holds
# (the first argument), and runs `weightdoctor` with the rest. Every weightdoctor module is imported first: the
# commands import most of theirs when they run (inspect --stats: stats, health, diff_keys...), ~23 MiB of VmData
# compiled without a __pycache__ (review 83), which came out of the room; the 56 MiB one left 33.00 MB, under the
# 33.55 MB tensor the guard must admit (the test failed on main, as it did when diff_keys.py grew).
_DATA_LIMITED = """
import importlib, pkgutil, resource, sys
import torch, weightdoctor, weightdoctor.cli
from weightdoctor.entry import main
for module in pkgutil.walk_packages(weightdoctor.__path__, "weightdoctor."):
    importlib.import_module(module.name)
held = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmData:"))
resource.setrlimit(resource.RLIMIT_DATA, (held + int(sys.argv[1]), resource.RLIM_INFINITY))
sys.argv = ["weightdoctor"] + sys.argv[2:]
main()
"""


def _child(code: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=300)


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stderr)
    return lines[0]


def _small_pairs(folder: Path, pairs: int, values: int) -> tuple[Path, Path]:
    """Two safetensors files of `pairs` float32 tensors of `values` values each, B = A + 0.01, seeded."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(5)
    a = {f"layer.{i}.weight": torch.randn(values, generator=generator) for i in range(pairs)}
    save_file(a, str(folder / "a.safetensors"))
    save_file({name: tensor + 0.01 for name, tensor in a.items()}, str(folder / "b.safetensors"))
    return folder / "a.safetensors", folder / "b.safetensors"


def test_diff_keys_values_of_many_small_pairs_holds_little_more_than_one_pair(tmp_path: Path) -> None:
    """Small float pairs are compared in batches; a batch of 1M values had ~10 float64 temporaries of all of them
    alive together: diff-keys --values of 2,000 pairs of 1,024 float32 values (16 MiB in all, 8 KiB a pair) raised
    the peak resident set by 103 MiB (93 MiB of it anonymous memory, measured). Batches of 32K values: 16 MiB."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("no /proc/self/clear_refs to reset the peak resident set with")
    a, b = _small_pairs(tmp_path, 2000, 1024)
    done = _child(PEAK_RISE_CHILD, "diff-keys", a, b, "--values", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["values"]) == 2000 and not any(row["identical"] for row in report["values"])
    assert all(abs(row["max_abs_diff"] - 0.01) < 1e-5 for row in report["values"])
    rise = int(done.stderr.strip().splitlines()[-1].removeprefix("peak rise MiB "))
    assert rise < 60, rise


def test_batches_give_the_figures_of_one_pair_at_a_time() -> None:
    """The smaller batches change no figure: each pair's row is the one `compare_pair` gives it alone."""
    from weightdoctor.diff_keys import BATCH_ELEMENTS, compare_pair, compare_values

    generator = torch.Generator().manual_seed(9)
    pairs = [(f"l.{i}.w", torch.randn(700 + i, generator=generator), torch.randn(700 + i, generator=generator))
             for i in range(120)]
    assert sum(a.numel() for _, a, _ in pairs) > 2 * BATCH_ELEMENTS  # several batches
    rows, _ = compare_values(iter(pairs))
    assert rows == [compare_pair(name, a, b)[0] for name, a, b in pairs]


def _column_slice_bin(path: Path, rows: int, columns: int, kept: int) -> torch.Tensor:
    """A .bin whose `w` is the first `kept` columns of a rows x columns float32 tensor, saved as torch.save saves
    a view (its whole storage, the view's strides); the view, seeded."""
    whole = torch.randn(rows, columns, generator=torch.Generator().manual_seed(6))
    view = whole[:, :kept]
    torch.save({"w": view, "b": torch.ones(4)}, path)
    return view


def test_a_view_spread_over_a_larger_storage_is_refused_naming_it_under_a_data_limit(tmp_path: Path) -> None:
    """A .bin's `w` is 256 columns (4 MiB) of a 4096 x 6144 tensor whose storage (96 MiB) torch.save wrote whole:
    reading it maps its storage from its first element to its last (the whole file's map was refused first).
    Under `ulimit -d` with 64 MiB of room, the guard counted the 4 MiB and the map failed: "cannot write the
    output: the system refused the memory to copy or verify it" (convert), "cannot read or write: [Errno 12] Cannot
    allocate memory" (inspect --stats, check-dtype), of no tensor. It is refused first, naming it and the map."""
    path = tmp_path / "slice.bin"
    _column_slice_bin(path, 4096, 6144, 256)
    for command in (["convert", path, "-o", tmp_path / "out.bin"], ["inspect", path, "--stats"],
                    ["check-dtype", path]):
        line = _one_line(_child(_DATA_LIMITED, str(64 * MIB), *command))
        assert line.startswith(f"error: {path}: tensor 'w' (4.19 MB) is a view spread over 100.64 MB of its "
                               "storage, all of it mapped to read it, more than the "), (command, line)
        assert "left under this process's data limit (ulimit -d: " in line and line.endswith("nothing was read")
    assert not (tmp_path / "out.bin").exists()


def test_a_view_of_a_larger_storage_converts_to_its_own_bytes(tmp_path: Path) -> None:
    """With room for the map, the output holds the view's values alone (4 MiB), not the storage torch.save kept
    (96 MiB): in a .bin, and in a safetensors file."""
    from safetensors.torch import load_file

    path = tmp_path / "slice.bin"
    view = _column_slice_bin(path, 4096, 6144, 256)
    for output in (tmp_path / "out.bin", tmp_path / "out.safetensors"):
        done = _child(_DATA_LIMITED, str(192 * MIB), "convert", path, "-o", output, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["write"]["verified"] is True
        assert output.stat().st_size < 5 * MIB
        loaded = (load_file(str(output)) if output.suffix == ".safetensors"
                  else torch.load(output, weights_only=True))
        assert torch.equal(loaded["w"], view)
        assert loaded["w"].untyped_storage().nbytes() == view.numel() * 4


def _bf16_safetensors(path: Path, rows: int, columns: int) -> Path:
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(8)
    save_file({"w": torch.randn(rows, columns, generator=generator).to(torch.bfloat16)}, str(path))
    return path


def test_the_float32_working_copy_of_inspect_stats_is_refused_naming_the_tensor(tmp_path: Path) -> None:
    """inspect --stats widens a bf16 tensor into a float32 buffer of up to 16M values (twice the tensor): the guard
    admitted the 33.55 MB tensor and the buffer died in torch's allocator under `ulimit -d` with 48 to 96 MiB of
    room, "out of memory: torch could not allocate 67.11 MB (Cannot allocate memory)", of no tensor (measured; the
    same under `ulimit -v`). It is refused first, naming the tensor and the buffer."""
    path = _bf16_safetensors(tmp_path / "bf.safetensors", 4096, 4096)
    line = _one_line(_child(_DATA_LIMITED, str(56 * MIB), "inspect", path, "--stats"))
    assert line.startswith(f"error: {path}: tensor 'w' (33.55 MB, bfloat16): its float32 working copy (67.11 MB) "
                           "is made in memory beside it, more than the "), line
    assert "left under this process's data limit (ulimit -d: " in line
    assert line.endswith("no statistics were computed; --sample N reads N values of each tensor instead"), line


def test_a_buffer_torch_could_not_allocate_names_the_tensor_it_was_for(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """check-dtype casts a tensor a chunk at a time (~6 float copies of a 1M-value chunk): under `ulimit -d` or `-v`
    with 48 to 96 MiB of room for a 33.55 MB bf16 tensor the line was "out of memory: torch could not allocate
    4.19 MB (Cannot allocate memory); this process's data limit, ulimit -d, is set", of no tensor (measured). It
    names the tensor whose buffer it was. (The refusal is simulated here: torch's allocator's own words.)"""
    from tests.helpers import run_cli
    from weightdoctor import check_dtype

    path = _bf16_safetensors(tmp_path / "bf.safetensors", 64, 64)

    def refused(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 4194304 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(check_dtype, "BATCH_TENSOR_ELEMENTS", 16)  # cast alone, not in a batch of small tensors
    monkeypatch.setattr(check_dtype, "cast_counts", refused)
    result = run_cli("check-dtype", str(path))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {path}: out of memory: torch could not allocate 4.19 MB (Cannot allocate "
                               "memory) for tensor 'w' (8.19 KB, bfloat16)"), lines[0]


def test_check_dtype_of_many_small_tensors_holds_little_more_than_one_batch(tmp_path: Path) -> None:
    """check-dtype casts small tensors in batches; a batch of 1M values had its float copies of all of them alive
    together: 2,000 float64 tensors of 1,024 values (16 MiB in all) raised the peak resident set by 173 MiB (float32
    ones: 93 to 134 MiB), measured. Batches of 32K values: 27 to 28 MiB."""
    from safetensors.torch import save_file

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("no /proc/self/clear_refs to reset the peak resident set with")
    generator = torch.Generator().manual_seed(5)
    path = tmp_path / "f64.safetensors"
    save_file({f"layer.{i}.weight": torch.randn(1024, generator=generator, dtype=torch.float64) for i in range(2000)},
              str(path))
    done = _child(PEAK_RISE_CHILD, "check-dtype", path, "--json")
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert report["targets"]["bf16"]["tensors_checked"] == 2000, report["targets"].keys()
    rise = int(done.stderr.strip().splitlines()[-1].removeprefix("peak rise MiB "))
    assert rise < 100, rise
