"""perf15: the memory guard measures the memory available (/proc/meminfo, the cgroup's files, /proc/self/status:
near a millisecond) once for many small reads, not before each tensor, and refuses exactly what it refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import one_error_line, run_cli, run_json
from weightdoctor.checkpoint import safetensors_format
from weightdoctor.errors import UnsupportedEnvironment


class Machine:
    """A simulated machine's memory, as the guard's measure reads it: `room` bytes free, `measures` counted."""

    def __init__(self, room: int) -> None:
        self.room, self.measures = room, 0

    def __call__(self) -> int:
        self.measures += 1
        return self.room


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Machine:
    simulated = Machine(1 << 30)
    monkeypatch.setattr(safetensors_format, "available_memory", simulated)
    # A measure's age never runs out here: what is tested is what makes the guard measure again, on any machine's
    # speed (a loaded one takes seconds for inspect --stats of 2,000 tensors).
    monkeypatch.setattr(safetensors_format, "_ROOM_RECHECK_SECONDS", 3600.0, raising=False)
    getattr(safetensors_format, "forget_memory_room", lambda: None)()  # (absent before perf15: nothing to forget)
    return simulated


def _many(path: Path, count: int) -> Path:
    generator = torch.Generator().manual_seed(15)
    save_file({f"layers.{i}.weight": torch.randn(8, generator=generator) for i in range(count)}, str(path))
    return path


def test_inspect_stats_measures_memory_once_for_many_small_tensors(tmp_path: Path, machine: Machine) -> None:
    """inspect --stats of 2,000 tensors measured the memory available 2,000 times (near a millisecond each: 7 s of
    CPU for bench_regress' 10,000-tensor file, where reading the tensors took 5 s)."""
    path = _many(tmp_path / "m.safetensors", 2000)
    code, report = run_json("inspect", str(path), "--stats")
    assert code in (0, 1), report
    assert len(report["tensors"]) == 2000
    assert machine.measures == 1


def test_a_read_past_a_quarter_of_the_last_measure_measures_again(machine: Machine) -> None:
    """Memory that dropped since the last measure is seen by any read larger than a quarter of what that measure
    left; the refusal names what the new measure found."""
    info = safetensors_format.TensorInfo(name="w", dtype="float32", shape=(1,), file="m.safetensors")
    safetensors_format.require_memory_for("m.safetensors", info, 1 << 20)
    safetensors_format.require_memory_for("m.safetensors", info, 1 << 20)
    assert machine.measures == 1
    machine.room = 100 << 20  # another process took most of it
    safetensors_format.require_memory_for("m.safetensors", info, 1 << 20)  # a small read: the measure reused
    assert machine.measures == 1
    with pytest.raises(UnsupportedEnvironment) as refused:
        safetensors_format.require_memory_for("m.safetensors", info, 300 << 20)
    assert machine.measures == 2
    assert str(refused.value).startswith("tensor 'w' (314.57 MB) is read whole into memory, more than the "
                                         "104.86 MB this machine has available")


def test_reads_admitted_on_one_measure_are_charged_to_it(machine: Machine) -> None:
    """Small reads, each under a quarter of the room, do not add up past it on one measure: each is charged (as if
    none were freed), and once what is left is under four times the next read, memory is measured again."""
    machine.room = 64 << 20
    for _ in range(40):  # 40 reads of 4 MiB: 160 MiB on a machine with 64 MiB
        safetensors_format.require_memory("m.bin", "a tensor", 4 << 20)
    assert machine.measures >= 40 * 4 // 64


def test_a_measure_over_a_second_old_is_not_reused(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even the smallest read measures again once the last measure is a second old."""
    import time

    safetensors_format.require_memory("m.bin", "a tensor", 1)
    clock = time.monotonic() + 1.5
    monkeypatch.setattr(time, "monotonic", lambda: clock)
    monkeypatch.setattr(safetensors_format, "_ROOM_RECHECK_SECONDS", 1.0)
    safetensors_format.require_memory("m.bin", "a tensor", 1)
    assert machine.measures == 2


def test_each_command_measures_afresh(tmp_path: Path, machine: Machine) -> None:
    """Two commands in one process: memory that dropped between them is measured by the second's first read,
    though that read is small against the first command's measure."""
    path = tmp_path / "m.safetensors"
    save_file({"a.weight": torch.zeros(4), "b.weight": torch.zeros(1 << 20)}, str(path))  # b: 4 MiB
    code, _report = run_json("inspect", str(path), "--stats")
    assert code in (0, 1)
    machine.room = 1 << 20
    refused = run_cli("inspect", str(path), "--stats")
    assert refused.exit_code == 2
    assert one_error_line(refused).startswith(
        f"error: {path}: tensor 'b.weight' (4.19 MB) is read whole into memory, more than the 1.05 MB this machine "
        "has available: nothing was read")
