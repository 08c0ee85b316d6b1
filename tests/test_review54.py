"""review54: the memory guard under a soft data limit of 0 (ulimit -S -d 0, Linux's rule for Valgrind), and
check-dtype's figures on a strided tensor (a transpose saved so in a .bin) against its contiguous copy's."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO_ROOT, run_json
from weightdoctor.check_dtype import _pieces, cast_counts
from weightdoctor.checkpoint import safetensors_format
from weightdoctor.errors import UnsupportedEnvironment

# A child whose soft data limit (RLIMIT_DATA) is 0, its hard limit left as it was: since Linux 4.7 a private
# writable map is then refused only past the hard limit (the kernel's workaround for Valgrind, which sets it so).
_SOFT_DATA_ZERO = """
import resource, sys
import torch, weightdoctor.cli
from weightdoctor.entry import main
resource.setrlimit(resource.RLIMIT_DATA, (0, resource.getrlimit(resource.RLIMIT_DATA)[1]))
sys.argv = ["weightdoctor"] + sys.argv[1:]
main()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's data limit")
def test_a_soft_data_limit_of_zero_refuses_nothing_the_hard_limit_allows(tmp_path: Path) -> None:
    """`ulimit -S -d 0` with no hard limit: the reads ran (the kernel holds maps to the hard limit then) but the
    guard refused every tensor: "tensor 'w' (4.00 KB) is read whole into memory, more than the 0 B left under
    this process's data limit (ulimit -d: 0 B, ...)". A tensor that fits is read."""
    if resource.getrlimit(resource.RLIMIT_DATA)[1] != resource.RLIM_INFINITY:
        pytest.skip("a hard data limit is set here")
    path = tmp_path / "m.bin"
    torch.save({"w": torch.arange(1024, dtype=torch.float32).reshape(32, 32)}, path)
    done = subprocess.run([sys.executable, "-c", _SOFT_DATA_ZERO, "inspect", str(path), "--stats", "--json"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert "data limit" not in done.stderr
    assert done.returncode == 0, done.stderr
    stats = {row["name"]: row for row in json.loads(done.stdout)["tensors"]}["w"]["stats"]
    assert stats["mean"] == pytest.approx(511.5)


def test_the_data_limit_a_soft_zero_stands_for_is_the_hard_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard's figure and the words of a refused map follow the kernel's rule: a soft limit of 0 is the hard
    limit (none where that is unlimited), any other soft limit is itself."""
    limits = {resource.RLIMIT_AS: (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
              resource.RLIMIT_DATA: (0, resource.RLIM_INFINITY)}
    real = resource.getrlimit  # the stack limit too, which the thread cap reads (5b1e263): KeyError 3 without it
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits[which] if which in limits else real(which))
    monkeypatch.setattr(safetensors_format, "_rlimit_data_ignored", lambda: False)
    assert safetensors_format._process_limit_rooms() == []
    assert safetensors_format.private_map_limits() == []
    limits[resource.RLIMIT_DATA] = (0, 8 << 30)
    rooms = safetensors_format._process_limit_rooms()
    assert len(rooms) == 1 and "ulimit -d: 8.59 GB" in rooms[0][1]
    assert safetensors_format.private_map_limits() == ["this process's data limit, ulimit -d"]
    limits[resource.RLIMIT_DATA] = (1 << 30, 8 << 30)
    assert "ulimit -d: 1.07 GB" in safetensors_format._process_limit_rooms()[0][1]


@pytest.mark.parametrize("make", [lambda m: m.t(), lambda m: m[:, 1:-1:2], lambda m: m[:1].expand(300, -1),
                                  lambda m: m.reshape(30, 10, 40).permute(1, 2, 0)])
@pytest.mark.parametrize("chunk", [7, 64, 400, 1000, 5000])
def test_a_strided_tensor_is_cut_where_its_contiguous_copy_is(make: object, chunk: int) -> None:
    """Pieces of whole rows gave a transposed tensor chunk boundaries of its own: its float32 sums of relative
    errors, so its `mean_rel_error`, differed from its contiguous copy's. The pieces are now the same values,
    cut at the same places, and the counts are equal to the last bit."""
    g = torch.Generator().manual_seed(54)
    values = make(torch.randn(300, 40, generator=g) * 1e-2)  # type: ignore[operator]
    twin = values.contiguous()
    got, want = list(_pieces(values, chunk)), list(_pieces(twin, chunk))
    assert [p.numel() for p in got] == [p.numel() for p in want]
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    for strided, contiguous in zip(cast_counts(values, [torch.float16, torch.bfloat16], chunk),
                                   cast_counts(twin, [torch.float16, torch.bfloat16], chunk), strict=True):
        assert strided == contiguous


def test_check_dtype_of_a_transposed_bin_tensor_equals_its_contiguous_copy(tmp_path: Path) -> None:
    """check-dtype --json of a .bin whose weight is saved transposed (here 1.2M values: more than a chunk of
    2**20) gave another `mean_rel_error` than its contiguous copy (on a 3000x2000 one, fp16:
    0.00018107165945937056 against 0.00018107166422774463); the JSON is now the same, byte for byte, but for the
    file's name."""
    g = torch.Generator().manual_seed(54)
    weight = torch.randn(1500, 800, generator=g) * 0.02
    weight[3, 5] = 1e5
    torch.save({"w": weight.t()}, tmp_path / "strided.bin")
    torch.save({"w": weight.t().contiguous()}, tmp_path / "contig.bin")
    reports = []
    for name in ("strided", "contig"):
        code, report = run_json("check-dtype", str(tmp_path / f"{name}.bin"))
        assert code in (0, 1)
        reports.append(json.dumps(report).replace(name, "FILE"))
    assert reports[0] == reports[1]
    assert '"mean_rel_error"' in reports[0]


def _data_limit_room(room: int) -> object:
    """A measure of the memory available that says the data limit (ulimit -d) leaves `room` bytes."""
    def measure() -> int:
        safetensors_format._LIMIT_SAID.words = ("left under this process's data limit (ulimit -d: 1.00 GB, 900.00 MB "
                                                "of it in private writable memory already)")
        return room

    return measure


def test_a_tensor_of_a_bin_read_whole_is_charged_once_what_it_allocates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .bin is mapped whole, privately, on its first tensor's read: the map counts in full in VmData. Its second
    tensor's pages lie in that map, read at no more data, but the guard charged them again (measured: inspect
    --stats of a .bin of two 200 MB tensors under ulimit -d 768 MB said "tensor 'b' (200.00 MB) is read whole into
    memory, more than the 127.56 MB left under this process's data limit"; before memory3 it ran, peak RSS 639
    MiB). The data limit is simulated (the real one is too near the run's own temporaries to test steadily)."""
    from weightdoctor.checkpoint.reader import open_checkpoint

    path = tmp_path / "two.bin"
    torch.save({"a": torch.full((64, 64), 0.5), "b": torch.full((64, 64), 2.0)}, path)
    checkpoint = open_checkpoint(str(path))
    monkeypatch.setattr(safetensors_format, "available_memory", _data_limit_room(1 << 20))
    safetensors_format.forget_memory_room()
    assert float(checkpoint.load_tensor("a").mean()) == 0.5
    # Red team 37: a tensor read whole is read by os.preadv into memory of its own (a file cut short during a read
    # of the map's pages died of SIGBUS), so the file is not mapped whole by it and nothing is charged twice: each
    # read is charged the 16 KB it allocates, once, and refused where that much is not left.
    archive = next(iter(checkpoint._pickles.values())).state_dict["b"].storage.archive
    assert not archive.mapped_whole
    monkeypatch.setattr(safetensors_format, "available_memory", _data_limit_room(64 * 64 * 4))
    safetensors_format.forget_memory_room()
    assert float(checkpoint.load_tensor("b").mean()) == 2.0
    monkeypatch.setattr(safetensors_format, "available_memory", _data_limit_room(100))
    safetensors_format.forget_memory_room()
    with pytest.raises(UnsupportedEnvironment, match="data limit"):
        checkpoint.load_tensor("b")
    safetensors_format.forget_memory_room()


def test_a_data_limit_still_refuses_a_tensor_not_mapped_yet(tmp_path: Path) -> None:
    """What `mapped` spares is the charge the map took already: a read not in such a map is refused by the data
    limit as before, and a mapped one still by the machine's memory."""
    from weightdoctor.checkpoint.safetensors_format import require_memory
    from weightdoctor.errors import UnsupportedEnvironment

    words = "left under this process's data limit (ulimit -d: 1.00 GB, ...)"

    def measure() -> int:
        safetensors_format._LIMIT_SAID.words = words
        return 1000

    original = safetensors_format.available_memory
    safetensors_format.available_memory = measure  # type: ignore[assignment]
    try:
        safetensors_format.forget_memory_room()
        with pytest.raises(UnsupportedEnvironment, match="data limit"):
            require_memory(tmp_path / "m.bin", "tensor 'w'", 2000)
        safetensors_format.forget_memory_room()
        room = safetensors_format._room_beside_process_limits()
        if room is not None and room > 2000:
            require_memory(tmp_path / "m.bin", "tensor 'w'", 2000, mapped=True)
        with pytest.raises(UnsupportedEnvironment, match="this machine has available|cgroup"):
            require_memory(tmp_path / "m.bin", "tensor 'w'", 1 << 62, mapped=True)
    finally:
        safetensors_format.available_memory = original  # type: ignore[assignment]
        safetensors_format.forget_memory_room()
