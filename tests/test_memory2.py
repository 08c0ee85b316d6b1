"""memory2: bounded memory on every read path. Files that claim huge tensors are built cheaply (sparse files: the
holes read as zeros and take no disk); a small machine is simulated by the memory guard's own reading
(`available_memory`, patched) or, in a child process, by an address-space limit (RLIMIT_AS)."""

from __future__ import annotations

import collections
import io
import json
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import (
    REPO_ROOT,
    one_error_line,
    redirect_proc_reads,
    run_cli,
    run_json,
    write_sparse_float_safetensors,
)
from weightdoctor.checkpoint import safetensors_format


class _Storage:
    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


class _Tensor:
    """Pickles as torch.save pickles a float32 tensor of `storage` (all of it, 1-D, or the view `shape`, `stride`
    from its element 1), without any data."""

    def __init__(self, storage: _Storage, view: tuple[tuple[int, ...], tuple[int, ...]] | None = None) -> None:
        self.storage, self.view = storage, view or ((storage.numel,), (1,))

    def __reduce_ex__(self, protocol: Any) -> Any:
        offset = 1 if self.view[1] != (1,) else 0  # a view starts past its storage's first element
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, offset, *self.view, False, collections.OrderedDict()))


def _data_pickle(storages: list[_Storage], legacy: bool,
                 view: tuple[tuple[int, ...], tuple[int, ...]] | None = None) -> bytes:
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=2)

    def persistent_id(value: Any) -> Any:
        if isinstance(value, _Storage):
            pid = ("storage", torch.FloatStorage, value.key, "cpu", value.numel)
            return (*pid, None) if legacy else pid
        return None

    pickler.persistent_id = persistent_id  # type: ignore[method-assign]
    pickler.dump(collections.OrderedDict((f"{'ab'[i]}.weight", _Tensor(s, view if i == 0 else None))
                                         for i, s in enumerate(storages)))
    return out.getvalue()


def _sparse_bin(path: Path, *counts: int, byteorder: str = "little",
                view: tuple[tuple[int, ...], tuple[int, ...]] | None = None) -> Path:
    """A torch zip (torch.save's format) of float32 tensors a.weight, b.weight of `counts` elements, their storage
    records holes of the file (zeros), aligned to 64 bytes as torch writes them. `byteorder` "big": a file
    weightdoctor's own reader leaves to torch.load(mmap=True). `view`: a.weight is that (shape, stride) view of its
    storage, which then holds 0, 1, 2, ... (written, not a hole)."""
    storages = [_Storage(str(i), n) for i, n in enumerate(counts)]
    with open(path, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", _data_pickle(storages, legacy=False, view=view))
        archive.writestr("archive/byteorder", byteorder)
        for storage in storages:
            info = zipfile.ZipInfo(f"archive/data/{storage.key}")
            pad = -(raw.tell() + 30 + len(info.filename) + 20 + 4) % 64  # 20: the zip64 extra field
            info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
            with archive.open(info, "w", force_zip64=True) as record:
                if view is not None and storage.key == "0":
                    raw.write(torch.arange(storage.numel, dtype=torch.float32).numpy().tobytes())
                else:
                    raw.seek(storage.numel * 4, 1)
                record._file_size = record._compress_size = storage.numel * 4  # type: ignore[attr-defined]
        archive.writestr("archive/version", "3\n")
    return path


def _sparse_legacy(path: Path, *counts: int) -> Path:
    """A legacy (non-zip) torch.save of float32 tensors a.weight, b.weight of `counts` elements, records sparse."""
    storages = [_Storage(str(i), n) for i, n in enumerate(counts)]
    with open(path, "wb") as out:
        info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
        for part in (0x1950A86A20F9469CFC6C, 1001, info):
            out.write(pickle.dumps(part, protocol=2))
        out.write(_data_pickle(storages, legacy=True))
        out.write(pickle.dumps([s.key for s in storages], protocol=2))
        for storage in storages:
            out.write(struct.pack("<q", storage.numel))
            out.seek(storage.numel * 4, 1)
        out.truncate(out.tell())
    return path


_sparse_safetensors = write_sparse_float_safetensors


@pytest.fixture
def one_mb_available(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with 1 MiB of memory available, as the memory guard reads it."""
    monkeypatch.setattr(safetensors_format, "available_memory", lambda: 1 << 20)


def _limited(args: list[str], limit: int = 16 << 30) -> subprocess.CompletedProcess[str]:
    """`weightdoctor ARGS` in a child process whose address space is limited to `limit` bytes."""
    code = (f"import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
            "from weightdoctor.entry import main; sys.argv = ['weightdoctor'] + sys.argv[1:]; main()")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)


def test_a_bin_larger_than_the_system_can_map_still_has_its_small_tensors_read(tmp_path: Path) -> None:
    """A .bin larger than the memory the system commits could not be mapped whole: every value read failed with
    "cannot read or write: [Errno 12] Cannot allocate memory" (of no tensor), a small one too. Its tensors are
    mapped one by one then; the one too large for memory is refused in one line naming it."""
    path = _sparse_bin(tmp_path / "big.bin", 4, 1 << 34)  # 64 GiB of float32, past a 16 GiB address space
    sampled = _limited(["inspect", str(path), "--sample", "100", "--json"])
    assert sampled.returncode == 0, sampled.stderr
    assert [t["name"] for t in json.loads(sampled.stdout)["tensors"]] == ["a.weight", "b.weight"]
    checked = _limited(["check-dtype", str(path), "--sample", "100", "--json"])
    assert checked.returncode == 0, checked.stderr
    assert {t["name"]: t["values"] for t in json.loads(checked.stdout)["targets"]["fp16"]["tensors"]} == \
        {"a.weight": 4, "b.weight": 100}
    whole = _limited(["check-dtype", str(path)])
    assert whole.returncode == 2
    assert whole.stderr.strip().splitlines() == [whole.stderr.strip()]
    assert whole.stderr.startswith(f"error: {path}: tensor 'b.weight' (68.72 GB) is read whole into memory, more "
                                   "than the ")
    assert "Cannot allocate" not in whole.stderr


def test_a_small_tensor_of_a_bin_too_large_to_map_whole_is_read(tmp_path: Path) -> None:
    """Mapped alone, a strided view (a transpose, from an element past its storage's first) has its own values."""
    path = _sparse_bin(tmp_path / "big.bin", 7, 1 << 34, view=((2, 3), (1, 2)))
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30)); "
            "from weightdoctor.checkpoint.reader import open_checkpoint; "
            f"print(open_checkpoint({str(path)!r}).load_tensor('a.weight').tolist())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(torch.arange(7.0).as_strided((2, 3), (1, 2), 1).tolist())


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_check_dtype_sample_reads_only_the_sampled_values(tmp_path: Path, one_mb_available: None,
                                                         kind: str) -> None:
    """check-dtype --sample read every tensor whole before sampling it: a tensor larger than memory was refused
    (or, unguarded, read whole) though 1,000 of its values were all it needed."""
    make = _sparse_safetensors if kind == "safetensors" else _sparse_bin
    path = make(tmp_path / f"m.{kind}", 4, 1 << 20)  # b.weight: 4 MiB, more than the 1 MiB available
    code, report = run_json("check-dtype", str(path), "--sample", "1000")
    assert code == 0, report
    assert {t["name"]: t["values"] for t in report["targets"]["fp16"]["tensors"]} == {"a.weight": 4,
                                                                                       "b.weight": 1000}
    refused = run_cli("check-dtype", str(path))
    assert refused.exit_code == 2
    assert one_error_line(refused) == (
        f"error: {path}: tensor 'b.weight' (4.19 MB) is read whole into memory, more than the 1.05 MB this "
        "machine has available: nothing was read")


def test_a_sample_read_in_place_gives_the_values_a_whole_read_sampled(tmp_path: Path) -> None:
    """The values read one by one at the sampled positions are those the whole tensor gave there: the same
    counts, in every format and for a strided (transposed) view of a .bin."""
    generator = torch.Generator().manual_seed(7)
    weights = {"a.weight": torch.randn(300, 70, generator=generator) * 3e4,
               "b.weight": (torch.randn(50, 40, generator=generator) * 1e-6).t().contiguous()}
    save_file(weights, tmp_path / "m.safetensors")
    torch.save(weights, tmp_path / "m.bin")
    torch.save({"a.weight": weights["a.weight"], "b.weight": weights["b.weight"].t().contiguous().t()},
               tmp_path / "strided.bin")
    reports = []
    for name in ("m.safetensors", "m.bin", "strided.bin"):
        code, report = run_json("check-dtype", str(tmp_path / name), "--sample", "500")
        assert code in (0, 1), report
        reports.append([{k: v for k, v in t.items() if k != "name"} | {"name": t["name"]}
                        for t in report["targets"]["fp16"]["tensors"]])
    assert reports[0] == reports[1] == reports[2]
    # And the whole tensors, sampled as before (values[sample_indices(...)]): the same counts.
    from weightdoctor.check_dtype import cast_counts, sample_indices

    for tensor in reports[0]:
        values = weights[tensor["name"]].reshape(-1)
        picked = values[sample_indices(values.numel(), 500, tensor["name"])]
        counts = cast_counts(picked, [torch.float16], 1 << 20)[0]
        assert (counts.overflow, counts.underflow) == (tensor["overflow"], tensor["underflow"])


def test_a_bin_tensor_larger_than_memory_is_refused_before_it_is_read(tmp_path: Path,
                                                                     one_mb_available: None) -> None:
    """A torch zip's tensor was handed out as a view of the file's map and read whole by whoever used it (a copy
    or a cast of all of it), with no check: only safetensors reads were guarded."""
    path = _sparse_bin(tmp_path / "m.bin", 4, 1 << 20)
    for args in (["check-dtype", str(path)], ["inspect", str(path), "--stats"],
                 ["diff-keys", str(path), str(path), "--values"]):
        refused = run_cli(*args)
        assert refused.exit_code == 2, args
        assert one_error_line(refused) == (
            f"error: {path}: tensor 'b.weight' (4.19 MB) is read whole into memory, more than the 1.05 MB this "
            "machine has available: nothing was read"), args


@pytest.mark.parametrize("command", [
    ["inspect"], ["inspect", "--stats"], ["check-dtype", "--sample", "10"], ["convert", "-o", "{out}/c.safetensors"],
    ["shard", "--single", "-o", "{out}/shards"], ["plan-devices", "--cpu", "10GB"]])
def test_a_legacy_torch_file_larger_than_memory_is_refused_before_torch_reads_it(
        tmp_path: Path, one_mb_available: None, command: list[str]) -> None:
    """torch.load reads every storage of a legacy (non-zip) torch.save file at once, before a tensor is looked at:
    it was not guarded (a file larger than memory: torch's allocator error, of no file; or the process killed)."""
    path = _sparse_legacy(tmp_path / "m.pt", 4, 1 << 20)
    args = [command[0], str(path), *(a.format(out=tmp_path) for a in command[1:])]
    refused = run_cli(*args)
    assert refused.exit_code == 2
    assert one_error_line(refused) == (
        f"error: {path}: this legacy torch.save file (not a zip archive: torch.load reads all of its storages at "
        f"once) ({path.stat().st_size / 1e6:.2f} MB) is read whole into memory, more than the 1.05 MB this machine "
        "has available: nothing was read; torch.save writes a zip archive since torch 1.6, whose tensors are read "
        "one at a time: re-saved so, on a machine with the memory, it can be read here")
    assert not (tmp_path / "c.safetensors").exists() and not (tmp_path / "shards").exists()


def test_a_legacy_file_claiming_a_terabyte_is_refused_in_one_line(tmp_path: Path) -> None:
    path = _sparse_legacy(tmp_path / "huge.pt", 4, 1 << 38)
    refused = _limited(["inspect", str(path)])
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: {path}: this legacy torch.save file (not a zip archive: torch.load "
                                     "reads all of its storages at once) (1.10 TB) is read whole into memory")
    assert "alloc" not in refused.stderr and "Traceback" not in refused.stderr


def test_a_legacy_file_that_fits_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "small.pt"
    torch.save({"w": torch.arange(6.0)}, path, _use_new_zipfile_serialization=False)
    code, report = run_json("inspect", str(path), "--stats")
    assert code == 0
    assert [(t["name"], t["stats"]["max"]) for t in report["tensors"]] == [("w", 5.0)]


def _files_read(monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> None:
    redirect_proc_reads(monkeypatch, files)


def test_free_swap_counts_as_available(monkeypatch: pytest.MonkeyPatch) -> None:
    """MemAvailable leaves out swap: a read that fits in memory and swap together (slow, but done) was refused."""
    _files_read(monkeypatch, {"/proc/meminfo": "MemTotal: 4096 kB\nMemAvailable: 2048 kB\nSwapTotal: 8192 kB\n"
                                               "SwapFree: 1024 kB\n"})
    assert safetensors_format.available_memory() == 3072 * 1024


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_a_cgroup_limit_bounds_what_is_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 version: str) -> None:
    """In a container whose cgroup allows 1 MiB, the machine's MemAvailable (here 64 GB) was taken for what the
    process could have: a 4 MiB tensor was read, and the kernel's OOM killer ended the process at the limit."""
    if version == "v2":
        cgroup = {"/proc/self/cgroup": "0::/box\n", "/sys/fs/cgroup/box/memory.max": "1048576\n",
                  "/sys/fs/cgroup/box/memory.current": "600000\n",
                  "/sys/fs/cgroup/box/memory.stat": "anon 400000\nfile 200000\ninactive_file 100000\n"}
    else:
        cgroup = {"/proc/self/cgroup": "4:memory:/box\n3:cpu:/box\n",
                  "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
                  "/sys/fs/cgroup/memory/box/memory.limit_in_bytes": "1048576\n",
                  "/sys/fs/cgroup/memory/box/memory.usage_in_bytes": "600000\n",
                  "/sys/fs/cgroup/memory/box/memory.stat": "cache 200000\ntotal_inactive_file 100000\n"}
    _files_read(monkeypatch, {"/proc/meminfo": "MemAvailable: 64000000 kB\n", **cgroup})
    assert safetensors_format.available_memory() == 1048576 - (600000 - 100000)
    limit_file = ("/sys/fs/cgroup/box/memory.max" if version == "v2"
                  else "/sys/fs/cgroup/memory/box/memory.limit_in_bytes")
    path = _sparse_safetensors(tmp_path / "m.safetensors", 4, 1 << 20)
    refused = run_cli("check-dtype", str(path))
    assert refused.exit_code == 2
    assert one_error_line(refused) == (
        f"error: {path}: tensor 'b.weight' (4.19 MB) is read whole into memory, more than the 548.58 KB left under "
        f"this process's cgroup memory limit ({limit_file}: 1.05 MB, less what the cgroup uses): nothing was read")


def test_an_address_space_limit_bounds_what_is_available(tmp_path: Path) -> None:
    """Under `ulimit -v 4 GiB` an 8 GiB tensor of a .bin (less than the machine's MemAvailable) passed the guard and
    its map was refused: "cannot read or write: [Errno 12]", of no tensor. It is refused in one line naming it."""
    path = _sparse_bin(tmp_path / "m.bin", 4, 1 << 31)
    refused = _limited(["check-dtype", str(path)], limit=4 << 30)
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: {path}: tensor 'b.weight' (8.59 GB) is read whole into memory, more "
                                     "than the "), refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_a_safetensors_file_the_library_cannot_map_is_refused_naming_it(tmp_path: Path) -> None:
    """The safetensors library maps the whole file to validate it: past the address-space limit its MemoryError
    was "error: out of memory: Cannot allocate memory (os error 12)", of no file."""
    path = _sparse_safetensors(tmp_path / "m.safetensors", 4, 1 << 31)
    refused = _limited(["check-dtype", str(path)], limit=4 << 30)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"error: {path}: the safetensors library maps the whole file (8.59 GB) to validate it, and the system "
        "refused the map (more than this process may map: its address-space limit, ulimit -v): nothing was read")


def test_a_bin_torch_loads_past_what_the_system_maps_is_refused_as_such(tmp_path: Path) -> None:
    """A .bin weightdoctor's reader leaves to torch.load(mmap=True) (here: a big-endian one) larger than the system
    maps was "torch cannot read the file: unable to mmap ... Cannot allocate memory (12)", as if it were damaged."""
    path = _sparse_bin(tmp_path / "m.bin", 4, 1 << 31, byteorder="big")
    refused = _limited(["inspect", str(path)], limit=4 << 30)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"error: {path}: torch.load(mmap=True), which reads this file (weightdoctor's own reader does not model it), "
        "maps all of it (8.59 GB) and the system refused the map (more than it commits: its memory and swap, or "
        "this process's address-space limit, ulimit -v): nothing was read")


def test_a_sample_of_a_tensor_torch_load_mapped_is_not_refused_for_its_size(tmp_path: Path,
                                                                            one_mb_available: None) -> None:
    """A .bin weightdoctor's reader leaves to torch.load(mmap=True) (here for the set it holds) has its tensors as
    views of torch's map: --sample reads 1,000 values of one, and is not refused for the whole tensor's size."""
    path = tmp_path / "m.bin"
    generator = torch.Generator().manual_seed(3)
    torch.save({"a.weight": torch.randn(400_000, generator=generator), "step": {1, 2}}, path)
    code, report = run_json("inspect", str(path), "--sample", "1000")
    assert code == 0, report
    assert [(t["name"], t["stats"]["count"], t["stats"]["sampled"]) for t in report["tensors"]] == \
        [("a.weight", 1000, True)]
    refused = run_cli("inspect", str(path), "--stats")
    assert refused.exit_code == 2
    assert one_error_line(refused) == (
        f"error: {path}: tensor 'a.weight' (1.60 MB) is read whole into memory, more than the 1.05 MB this "
        "machine has available: nothing was read")
