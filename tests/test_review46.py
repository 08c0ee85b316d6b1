"""Review of the memory guard (memory2) and a disk-space check before convert and shard write.

Inputs are sparse files (holes: no disk taken), so nothing here writes more than a few MB: the free space is patched
where a test needs a small disk, and a child process whose file-size limit (RLIMIT_FSIZE) is 64 MB runs the one test
that uses the real free space, so that a broken check could not fill the disk."""

from __future__ import annotations

import collections
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

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
from weightdoctor import rewrite
from weightdoctor.checkpoint import safetensors_format

_Usage = collections.namedtuple("_Usage", "total used free")


_sparse_safetensors = write_sparse_float_safetensors


@pytest.fixture
def one_mb_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk with 1,000,000 bytes free, as the output's folder reports it."""
    real = shutil.disk_usage

    def small(path: str | os.PathLike[str]) -> _Usage:
        found = real(path)
        return _Usage(found.total, found.used, 1_000_000)

    monkeypatch.setattr(shutil, "disk_usage", small)


def test_convert_larger_than_the_free_space_is_refused_before_writing(tmp_path: Path, one_mb_free: None) -> None:
    """convert of a checkpoint of 8 MB onto a disk of 1 MB free began writing, and failed late ("no space left on
    the device") after filling the disk. Refused first, in one line naming the output, the bytes needed and free."""
    source = _sparse_safetensors(tmp_path / "m.safetensors", 1 << 20, 1 << 20)
    out = tmp_path / "out" / "m.safetensors"
    out.parent.mkdir()
    result = run_cli("convert", str(source), "-o", str(out))
    assert one_error_line(result) == (
        f"error: {out}: not enough free disk space: the output needs at least 8.39 MB (8,388,608 bytes) and "
        f"{out.parent} has 1.00 MB (1,000,000 bytes) free: nothing was written")
    assert list(out.parent.iterdir()) == []


def test_shard_larger_than_the_free_space_is_refused_before_writing(tmp_path: Path, one_mb_free: None) -> None:
    source = _sparse_safetensors(tmp_path / "m.safetensors", 1 << 20, 1 << 20)
    out = tmp_path / "shards"
    result = run_cli("shard", str(source), "-o", str(out), "--max", "5MB")
    assert one_error_line(result) == (
        f"error: {out}: not enough free disk space: the output needs at least 8.39 MB (8,388,608 bytes) and "
        f"{tmp_path} has 1.00 MB (1,000,000 bytes) free: nothing was written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_a_dry_run_warns_that_the_write_would_not_fit(tmp_path: Path, one_mb_free: None) -> None:
    source = _sparse_safetensors(tmp_path / "m.safetensors", 1 << 20, 1 << 20)
    out = tmp_path / "shards"
    code, report = run_json("shard", str(source), "-o", str(out), "--max", "5MB", "--dry-run")
    assert code == 1  # the dry run foresees the refusal (test_dry_run_refusal.py): exit 1, and `would_refuse` says it
    assert report["would_refuse"].startswith(f"{out}: not enough free disk space: ")
    assert (f"{out}: not enough free disk space: the output needs at least 8.39 MB (8,388,608 bytes) and {tmp_path} "
            "has 1.00 MB (1,000,000 bytes) free: the write would be refused") in report["warnings"]
    result = run_cli("convert", str(source), "-o", str(tmp_path / "c.bin"), "--dry-run")
    assert result.exit_code == 1
    assert "c.bin: not enough free disk space: the output needs at least 8.39 MB" in result.stderr
    assert not out.exists() and not (tmp_path / "c.bin").exists()


def test_an_output_that_fits_is_written_without_a_warning(tmp_path: Path) -> None:
    source = _sparse_safetensors(tmp_path / "m.safetensors", 1000, 24)
    result = run_cli("convert", str(source), "-o", str(tmp_path / "c.safetensors"))
    assert result.exit_code == 0, result.stderr
    assert "disk space" not in result.stderr
    assert (tmp_path / "c.safetensors").stat().st_size > 4096


def test_a_sparse_side_file_counts_its_blocks_not_its_size(tmp_path: Path) -> None:
    """A model folder's README.md of 1 TB that takes no disk is copied with its holes (`copy_side_file`): the check
    counts what it takes, not its size, and does not refuse the folder."""
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"w": torch.arange(6.0)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text("{}")
    with open(folder / "README.md", "wb") as readme:
        readme.truncate(1 << 40)
    assert rewrite.bytes_to_write([], [rewrite.SideFile(folder / "README.md", "README.md")]) < 1 << 20
    code, report = run_json("convert", str(folder), "-o", str(tmp_path / "out"), "--dry-run")
    assert code == 0
    assert not [w for w in report["warnings"] if "disk space" in w]


def test_a_sparse_input_larger_than_the_real_disk_is_refused(tmp_path: Path) -> None:
    """The figures of the report: a sparse input (no disk taken) whose tensors, written out in full, take more than
    the disk's real free space. Run in a child limited to files of 64 MB: a check that let it through fails there
    at 64 MB (EFBIG) instead of filling the disk."""
    free = shutil.disk_usage(tmp_path).free
    count = (free + (1 << 40)) // 8  # two tensors of float32: free + 1 TiB in all
    source = _sparse_safetensors(tmp_path / "m.safetensors", count, count)
    out = tmp_path / "m-copy.safetensors"
    code = (f"import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, ({64 << 20}, {64 << 20})); "
            "from weightdoctor.entry import main; sys.argv = ['weightdoctor'] + sys.argv[1:]; main()")
    for args in (["convert", str(source), "-o", str(out)],
                 ["shard", str(source), "-o", str(tmp_path / "shards"), "--max", "100GB"]):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                              cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "not enough free disk space: the output needs at least" in lines[0], done.stderr
        assert f"({8 * count:,} bytes)" in lines[0] and "free: nothing was written" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


# The memory guard ------------------------------------------------------------------------------------------------


def _files_read(monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> None:
    redirect_proc_reads(monkeypatch, files)


def test_a_refusal_under_a_cgroup_limit_names_that_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a container's limit the refusal said "548.58 KB this machine has available" of a machine with 64 GB
    available: a user looked for the memory on the machine, not at the container's limit."""
    _files_read(monkeypatch, {
        "/proc/meminfo": "MemAvailable: 64000000 kB\n", "/proc/self/cgroup": "0::/box\n",
        "/sys/fs/cgroup/box/memory.max": "1048576\n", "/sys/fs/cgroup/box/memory.current": "600000\n",
        "/sys/fs/cgroup/box/memory.stat": "anon 500000\nfile 100000\ninactive_file 100000\n"})
    path = _sparse_safetensors(tmp_path / "m.safetensors", 4, 1 << 20)
    refused = run_cli("check-dtype", str(path))
    assert one_error_line(refused) == (
        f"error: {path}: tensor 'b.weight' (4.19 MB) is read whole into memory, more than the 548.58 KB left under "
        "this process's cgroup memory limit (/sys/fs/cgroup/box/memory.max: 1.05 MB, less what the cgroup uses): "
        "nothing was read")


def test_the_limit_of_a_cgroup_above_this_one_bounds_what_is_available(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A process in /slice/job, its own cgroup without a limit ("max") and its parent's of 1 MiB (a systemd slice's
    MemoryMax, a Kubernetes pod's): the parent's limit was not read, a 4 MB tensor passed the guard, and the
    kernel's OOM killer would end the process at the parent's limit."""
    _files_read(monkeypatch, {
        "/proc/meminfo": "MemAvailable: 64000000 kB\n", "/proc/self/cgroup": "0::/slice/job\n",
        "/sys/fs/cgroup/slice/job/memory.max": "max\n", "/sys/fs/cgroup/slice/job/memory.current": "1000\n",
        "/sys/fs/cgroup/slice/job/memory.stat": "anon 1000\n",
        "/sys/fs/cgroup/slice/memory.max": "1048576\n", "/sys/fs/cgroup/slice/memory.current": "48576\n",
        "/sys/fs/cgroup/slice/memory.stat": "anon 48576\n"})
    assert safetensors_format.available_memory() == 1_000_000
    path = _sparse_safetensors(tmp_path / "m.safetensors", 4, 1 << 20)
    refused = run_cli("check-dtype", str(path))
    assert "more than the 1.00 MB left under this process's cgroup memory limit (/sys/fs/cgroup/slice/memory.max: " \
        "1.05 MB, less what the cgroup uses): nothing was read" in one_error_line(refused)


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_a_cgroups_active_page_cache_counts_as_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         version: str) -> None:
    """A cgroup of 8 MiB whose usage is mostly the page cache of files read (active: read twice, as a checkpoint's
    pages are): the kernel reclaims that cache before it kills anything, as MemAvailable counts it, but only the
    inactive part was counted free, and a 4 MB tensor that fits was refused."""
    if version == "v2":
        cgroup = {"/proc/self/cgroup": "0::/box\n", "/sys/fs/cgroup/box/memory.max": "8388608\n",
                  "/sys/fs/cgroup/box/memory.current": "8000000\n",
                  "/sys/fs/cgroup/box/memory.stat": "anon 1000000\nfile 7000000\nactive_file 6000000\n"
                                                    "inactive_file 1000000\n"}
    else:
        cgroup = {"/proc/self/cgroup": "4:memory:/box\n",
                  "/sys/fs/cgroup/memory/box/memory.limit_in_bytes": "8388608\n",
                  "/sys/fs/cgroup/memory/box/memory.usage_in_bytes": "8000000\n",
                  "/sys/fs/cgroup/memory/box/memory.stat": "cache 7000000\ntotal_active_file 6000000\n"
                                                           "total_inactive_file 1000000\n"}
    _files_read(monkeypatch, {"/proc/meminfo": "MemAvailable: 64000000 kB\n", **cgroup})
    assert safetensors_format.available_memory() == 8388608 - 1_000_000
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.linspace(-1, 1, 1 << 20)}, str(path))
    code, report = run_json("check-dtype", str(path))
    assert code == 0, report
    assert report["targets"]["fp16"]["values"] == 1 << 20


def test_a_refusal_under_ulimit_v_names_that_limit(tmp_path: Path) -> None:
    """Under `ulimit -v 4 GiB` an 8 GB tensor was refused as "more than the N this machine has available", of a
    machine with more: the limit is the process's address space, and the line says so."""
    path = tmp_path / "m.safetensors"
    _sparse_safetensors(path, 4, 1 << 31)
    limit = 4 << 30
    code = (f"import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
            "from weightdoctor.checkpoint import safetensors_format as s; "
            "s.validate_with_library = lambda *a, **k: None; "  # the library's own map of 8 GB is refused first
            "from weightdoctor.entry import main; sys.argv = ['weightdoctor'] + sys.argv[1:]; main()")
    done = subprocess.run([sys.executable, "-c", code, "check-dtype", str(path)], capture_output=True, text=True,
                          timeout=300, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert line.startswith(f"error: {path}: tensor 'b.weight' (8.59 GB) is read whole into memory, more than the ")
    assert "left under this process's address-space limit (ulimit -v: 4.29 GB, " in line
    assert "mapped already): nothing was read" in line and "this machine has available" not in line


def test_a_legacy_files_tensor_already_in_memory_is_not_refused(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A legacy torch.save file is read whole by torch.load (guarded against the memory available before it): its
    tensors are then in memory. check-dtype asked the memory of each tensor again, of what torch.load left
    available, and refused a tensor that was there. Here 10 MB is available before torch.load, 1 MB after."""
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.linspace(-1, 1, 400_000)}, path, _use_new_zipfile_serialization=False)
    answers = iter([10_000_000])
    monkeypatch.setattr(safetensors_format, "available_memory", lambda: next(answers, 1_000_000))
    code, report = run_json("check-dtype", str(path))
    assert code == 0, report
    assert report["targets"]["fp16"]["values"] == 400_000
    # A torch zip's tensor is a view of the file's map, not yet read: still refused for its size.
    zipped = tmp_path / "zip.bin"
    torch.save({"w": torch.linspace(-1, 1, 400_000)}, zipped)
    monkeypatch.setattr(safetensors_format, "available_memory", lambda: 1_000_000)
    assert "tensor 'w' (1.60 MB) is read whole into memory, more than the 1.00 MB this machine has available" in \
        one_error_line(run_cli("check-dtype", str(zipped)))


# The sampled values ----------------------------------------------------------------------------------------------


def _equal_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.contiguous().view(torch.uint8),
                                                                      b.contiguous().view(torch.uint8))


def _varied(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=generator) > 0.5
    if not dtype.is_floating_point:
        return torch.randint(-100, 100, shape, generator=generator).to(dtype)
    return (torch.randn(shape, generator=generator) * 3).to(dtype)


_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2, torch.int8,
           torch.int32, torch.int64, torch.bool, torch.float64]


@pytest.mark.parametrize("spans", ["one span", "many spans"])
@pytest.mark.parametrize("kind", ["safetensors", "zip", "legacy"])
def test_load_values_gives_the_values_a_whole_read_sampled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           kind: str, spans: str) -> None:
    """`load_values` (what check-dtype --sample and inspect --sample now read) against the whole tensor indexed at
    the same positions, as they read before: bit for bit, of every dtype, of strided and offset views; positions
    read in one span (a tensor of up to 16 MiB) or, as of a larger tensor, in spans of sorted positions (here
    spans of at most 256 bytes, positions 64 bytes apart read apart)."""
    from weightdoctor.check_dtype import sample_indices
    from weightdoctor.checkpoint import open_checkpoint

    if spans == "many spans":
        monkeypatch.setattr(safetensors_format, "_SPAN_WHOLE", 0)
        monkeypatch.setattr(safetensors_format, "_SPAN_WINDOW", 256)
        monkeypatch.setattr(safetensors_format, "_SPAN_GAP", 64)

    # torch's legacy format holds no float8 storage (refused: `_legacy_untyped_storage`).
    tensors = {f"t{i}": _varied(dtype, (37, 29), i) for i, dtype in enumerate(_DTYPES)
               if kind != "legacy" or dtype.itemsize > 1 or not dtype.is_floating_point}
    if kind != "safetensors":
        base = _varied(torch.float32, (64, 48), 99)
        tensors["transposed"] = base.t()  # strided, of a storage shared with the next two
        tensors["offset"] = base[5:40, 3:30]  # from past the storage's first element, rows strided
        tensors["row"] = base[7]  # contiguous, offset
        tensors["every_third"] = _varied(torch.bfloat16, (3000,), 7)[1::3]
    path = tmp_path / ("m.safetensors" if kind == "safetensors" else "m.bin")
    if kind == "safetensors":
        save_file(tensors, str(path))
    else:
        torch.save(tensors, path, _use_new_zipfile_serialization=kind == "zip")
    with open_checkpoint(str(path)) as checkpoint:
        for name, expected in tensors.items():
            indices = sample_indices(expected.numel(), 500, name)
            got = checkpoint.load_values(name, indices)
            assert _equal_bits(got, expected.reshape(-1)[indices]), name
            assert _equal_bits(got, checkpoint.load_tensor(name).reshape(-1)[indices]), name
        # Repeated positions, an unsorted few, and none.
        for indices in (torch.tensor([5, 5, 0, 1000, 5, 999]), torch.tensor([], dtype=torch.int64)):
            got = checkpoint.load_values("t0", indices)
            assert _equal_bits(got, tensors["t0"].reshape(-1)[indices])


def test_inspect_samples_a_strided_view_of_a_pickle_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .bin's transposed weight (a strided view of its storage) under --sample was copied whole, and so refused
    for the whole tensor's size on a machine with less memory (check-dtype --sample read it). It is indexed in
    place, and its sampled statistics are those of the same values stored contiguous."""
    weight = torch.randn(700, 600, generator=torch.Generator().manual_seed(5))
    strided, contiguous = tmp_path / "strided.bin", tmp_path / "contiguous.bin"
    torch.save({"w": weight.t()}, strided)
    torch.save({"w": weight.t().contiguous()}, contiguous)
    expected = run_json("inspect", str(contiguous), "--sample", "1000")[1]["tensors"]
    monkeypatch.setattr(safetensors_format, "available_memory", lambda: 1 << 20)
    code, report = run_json("inspect", str(strided), "--sample", "1000")
    assert code == 0, report
    assert [{k: v for k, v in t.items() if k != "file"} for t in report["tensors"]] == \
        [{k: v for k, v in t.items() if k != "file"} for t in expected]
    assert report["tensors"][0]["stats"]["count"] == 1000 and report["tensors"][0]["init"]["label"] == "normal"


def test_a_missing_output_folder_is_said_before_the_free_space(tmp_path: Path, one_mb_free: None) -> None:
    """`-o newdir/m.safetensors`: the folder is not made (as `cp` does not); that is what to fix first, and the line
    says it, not the free space of the folder above."""
    source = _sparse_safetensors(tmp_path / "m.safetensors", 1 << 20, 1 << 20)
    out = tmp_path / "newdir" / "m.safetensors"
    line = one_error_line(run_cli("convert", str(source), "-o", str(out)))
    assert line.startswith(f"error: {out}: cannot write the output: the output folder does not exist"), line


def _a_file_and_its_replacement(tmp_path: Path, kind: str, first: dict[str, torch.Tensor],
                                other: dict[str, torch.Tensor]) -> tuple[Path, Path]:
    """m.safetensors / m.bin holding `first`, and n.* holding `other`, to be moved over it mid-read."""
    suffix = ".safetensors" if kind == "safetensors" else ".bin"
    path, newer = tmp_path / f"m{suffix}", tmp_path / f"n{suffix}"
    for target, tensors in ((path, first), (newer, other)):
        if kind == "safetensors":
            save_file(tensors, str(target))
        else:
            torch.save(tensors, target)
    return path, newer


@pytest.mark.parametrize("kind", ["safetensors", "zip"])
def test_a_sample_of_a_file_replaced_since_it_was_listed_is_refused(tmp_path: Path, kind: str) -> None:
    """`load_values` reads a torch zip's sampled values by offset, without the map that checks the file is the one
    its records were listed from: a .bin replaced in between (a download finishing, a save over it) had its values
    read at the old file's offsets, as if they were the tensor's."""
    from weightdoctor.check_dtype import sample_indices
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.errors import CorruptCheckpoint

    first = {"w": torch.arange(4096.0)}
    path, newer = _a_file_and_its_replacement(tmp_path, kind, first, {"w": -torch.arange(4096.0), "x": torch.zeros(8)})
    with open_checkpoint(str(path)) as checkpoint:
        indices = sample_indices(4096, 100, "w")
        assert torch.equal(checkpoint.load_values("w", indices), first["w"][indices])
        os.replace(newer, path)
        with pytest.raises(CorruptCheckpoint, match="changed since"):
            checkpoint.load_values("w", indices)


@pytest.mark.parametrize("kind", ["safetensors", "zip"])
def test_inspect_sample_of_a_file_replaced_since_it_was_listed_is_refused(tmp_path: Path, kind: str) -> None:
    """inspect --sample reads a tensor's blocks by offset (`_Lines`): of a file replaced since its structure was read,
    the new file's bytes at the old offsets were summarised as the tensor's."""
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.errors import CorruptCheckpoint
    from weightdoctor.stats import tensor_stats

    path, newer = _a_file_and_its_replacement(tmp_path, kind, {"w": torch.ones(64, 512)},
                                              {"w": torch.full((64, 512), 7.0), "x": torch.zeros(8)})
    with open_checkpoint(str(path)) as checkpoint:
        info = checkpoint.tensor_info("w")
        assert tensor_stats(checkpoint, info, sample=1000).stats.max == 1.0
        os.replace(newer, path)
        with pytest.raises(CorruptCheckpoint, match="changed since"):
            tensor_stats(checkpoint, info, sample=1000)


def test_a_dense_sample_is_read_in_one_span_not_one_read_per_value(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """check-dtype --sample 200000 of tensors of a million values made one read per sampled position: 181,000 reads
    of each tensor, 45 s for 40 tensors where reading them whole took 11 s. Positions close together are read in one
    span (a tensor of up to 16 MiB: one read), the values the same."""
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(1 << 20, generator=torch.Generator().manual_seed(3))}, str(path))
    reads = [0]
    real = os.preadv

    def counted(fd: int, buffers: list[object], offset: int) -> int:
        reads[0] += 1
        return real(fd, buffers, offset)  # type: ignore[arg-type]

    monkeypatch.setattr(safetensors_format.os, "preadv", counted)
    code, report = run_json("check-dtype", str(path), "--sample", "200000")
    assert code in (0, 1), report
    assert report["targets"]["fp16"]["values"] == 200_000
    assert reads[0] <= 2


def test_a_cast_of_a_legacy_files_tensor_past_the_memory_left_is_refused(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A legacy file's tensors are in memory once torch.load read them, and `load_tensor` no longer asks their
    memory again; a cast's copy is new memory all the same: convert --dtype refuses it in one line, naming the
    tensor, where it is more than what is left (2 MB before torch.load here, 500 KB after), and writes nothing.
    Without a cast the same file converts. (2 MB, not more: a measure that leaves four times a read's size is
    reused for it, perf15, and 10 MB less the 1.6 MB file would admit the 800 KB copy without measuring again.)"""
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.linspace(-1, 1, 400_000)}, path, _use_new_zipfile_serialization=False)
    answers = iter([2_000_000])
    monkeypatch.setattr(safetensors_format, "available_memory", lambda: next(answers, 500_000))
    out = tmp_path / "out.safetensors"
    assert one_error_line(run_cli("convert", str(path), "-o", str(out), "--dtype", "fp16")) == (
        f"error: {path}: tensor 'w' cast to float16 (800.00 KB) is made in memory, more than the 500.00 KB this "
        "machine has available: nothing was written")
    assert not out.exists()
    answers = iter([10_000_000])
    result = run_cli("convert", str(path), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert "verified" in result.stdout and out.is_file()
