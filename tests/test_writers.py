"""The writers against the libraries' own readers and writers: safetensors, torch.save, atomic commits."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from weightdoctor.errors import OutputError
from weightdoctor.writers.atomic import StagingDir, atomic_file, remove_stale_siblings
from weightdoctor.writers.bin_writer import BinSlot, BinWriter
from weightdoctor.writers.safetensors_writer import SafetensorsWriter, TensorSlot


def _mixed_state_dict() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "z.weight": torch.randn(7, 5, generator=gen),
        "a.bias": torch.randn(5, generator=gen).to(torch.bfloat16),
        "half": torch.randn(3, 3, generator=gen).half(),
        "ids": torch.arange(11, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "u8": torch.arange(4, dtype=torch.uint8),
        "u16": torch.arange(4, dtype=torch.int32).to(torch.uint16),
        "fp8": torch.randn(6, generator=gen).to(torch.float8_e4m3fn),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4),
    }


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _write_safetensors(path: Path, sd: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> None:
    slots = [TensorSlot(n, _name(t.dtype), tuple(t.shape)) for n, t in sd.items()]
    with SafetensorsWriter(path, slots, metadata) as writer:
        for slot in writer.order:
            writer.write(slot.name, sd[slot.name])


def test_safetensors_writer_matches_the_library_byte_for_byte(tmp_path: Path) -> None:
    sd = _mixed_state_dict()
    _write_safetensors(tmp_path / "one.safetensors", sd, {"format": "pt"})
    # One metadata key: the library keeps metadata in a hash map, so the order of several keys varies.
    assert (tmp_path / "one.safetensors").read_bytes() == save(sd, metadata={"format": "pt"})
    _write_safetensors(tmp_path / "x.safetensors", sd, {"format": "pt", "k": "v"})
    loaded = load_file(tmp_path / "x.safetensors")
    assert set(loaded) == set(sd)
    for name, tensor in sd.items():
        assert loaded[name].dtype == tensor.dtype
        assert torch.equal(loaded[name].reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8))
    with safe_open(tmp_path / "x.safetensors", framework="pt") as handle:
        assert handle.metadata() == {"format": "pt", "k": "v"}


def test_safetensors_writer_refuses_wrong_order_shape_and_short_files(tmp_path: Path) -> None:
    slots = [TensorSlot("a", "float32", (2,)), TensorSlot("b", "float32", (3,))]
    with pytest.raises(ValueError, match="expected tensor 'a' next"), SafetensorsWriter(tmp_path / "1", slots) as w:
        w.write("b", torch.zeros(3))
    with pytest.raises(ValueError, match=r"expected float32\(2,\)"), SafetensorsWriter(tmp_path / "2", slots) as w:
        w.write("a", torch.zeros(3))
    writer = SafetensorsWriter(tmp_path / "3", slots)
    writer.write("a", torch.zeros(2))
    with pytest.raises(ValueError, match="only 1 of 2 tensors"):
        writer.close()


def test_bin_writer_matches_torch_save_record_for_record(tmp_path: Path) -> None:
    sd = _mixed_state_dict()
    sd["tied"] = sd["z.weight"]
    slots = [BinSlot(n, _name(t.dtype), tuple(t.shape), alias_of="z.weight" if n == "tied" else None)
             for n, t in sd.items()]
    with BinWriter(tmp_path / "x.bin", slots) as writer:
        for slot in writer.order:
            writer.write(slot.name, sd[slot.name])
    assert "tied" in writer.digests and writer.digests["tied"] == writer.digests["z.weight"]
    reference = io.BytesIO()
    torch.save(sd, reference)
    ours, theirs = zipfile.ZipFile(tmp_path / "x.bin"), zipfile.ZipFile(reference)
    assert ours.namelist() == theirs.namelist()
    assert ours.testzip() is None  # every CRC right
    for record in theirs.namelist():
        assert ours.read(record) == theirs.read(record), record
    assert (tmp_path / "x.bin").read_bytes() == reference.getvalue()
    loaded = torch.load(tmp_path / "x.bin", weights_only=True)
    for name, tensor in sd.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name].reshape(-1).view(torch.uint8),
                                                                   tensor.reshape(-1).view(torch.uint8))
    assert loaded["tied"].data_ptr() == loaded["z.weight"].data_ptr()


def test_bin_writer_stores_only_a_views_own_elements(tmp_path: Path) -> None:
    base = torch.arange(20, dtype=torch.float32)
    view = base[5:9]
    with BinWriter(tmp_path / "v.bin", [BinSlot("v", "float32", (4,))]) as writer:
        writer.write("v", view)
    loaded = torch.load(tmp_path / "v.bin", weights_only=True)["v"]
    assert loaded.tolist() == [5.0, 6.0, 7.0, 8.0]
    assert loaded.untyped_storage().nbytes() == 16


def test_atomic_file_commits_whole_or_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_file(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_file(dest) as tmp:
        tmp.write_bytes(b"whole")
    assert dest.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    with pytest.raises(OutputError, match="output exists; pass --force"), atomic_file(dest) as tmp:
        pass
    with atomic_file(dest, replace=True) as tmp:
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new"


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dest = tmp_path / "model.safetensors"
    dead = tmp_path / ".model.safetensors.wdtmp-999999999-abcd1234"
    alive = tmp_path / f".model.safetensors.wdtmp-{os.getpid()}-abcd1234"
    other = tmp_path / ".other.safetensors.wdtmp-999999999-abcd1234"
    for path in (dead, alive, other):
        path.write_bytes(b"x")
    assert remove_stale_siblings(dest) == [dead]
    assert alive.exists() and other.exists() and not dead.exists()


def test_staging_dir_swaps_in_keeps_unrelated_files_and_drops_old_weights_last(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "model-00001-of-00002.safetensors").write_bytes(b"old1")
    (dest / "model.safetensors.index.json").write_text("{}")
    (dest / "notes.txt").write_text("mine")
    (dest / "logs").mkdir()
    (dest / "logs" / "run.txt").write_text("log")
    with pytest.raises(OutputError, match="output exists"), StagingDir(dest):
        pass
    with pytest.raises(RuntimeError), StagingDir(dest, replace=True) as stage:
        (stage.path / "model.safetensors").write_bytes(b"new")
        raise RuntimeError("fail before commit")
    assert sorted(p.name for p in dest.iterdir()) == ["logs", "model-00001-of-00002.safetensors",
                                                      "model.safetensors.index.json", "notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with StagingDir(dest, replace=True, drop_old=lambda n: n.startswith("model")) as stage:
        (stage.path / "model.safetensors").write_bytes(b"new")
        stage.commit()
    assert sorted(p.name for p in dest.iterdir()) == ["logs", "model.safetensors", "notes.txt"]
    assert (dest / "logs" / "run.txt").read_text() == "log" and (dest / "notes.txt").read_text() == "mine"
    assert stage.dropped == ["model-00001-of-00002.safetensors", "model.safetensors.index.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_pages_of_memory_mapped_tensors_are_given_back_and_values_kept(tmp_path: Path) -> None:
    from weightdoctor.writers.memory import release_file_pages

    torch.save({"a": torch.randn(4_000_000), "b": torch.randn(10)}, tmp_path / "m.bin")
    mapped = torch.load(tmp_path / "m.bin", mmap=True, weights_only=True)["a"]

    def resident_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6

    total = float(mapped.sum())
    touched = resident_mb()
    assert release_file_pages(mapped) is True
    assert resident_mb() < touched - 10  # 16 MB of pages given back
    assert float(mapped.sum()) == total  # read again from the file
    anonymous = torch.randn(4_000_000)
    assert release_file_pages(anonymous) is False and float(anonymous.sum()) != 0.0


@pytest.mark.parametrize("target", ["float16", "bfloat16"])
def test_cast_counts_equal_the_direct_masks(target: str) -> None:
    from weightdoctor.rewrite import cast_tensor

    torch.manual_seed(0)
    values = torch.randn(10_000) * torch.logspace(-45, 39, 10_000).clamp(max=3.0e38)
    values[::97] = 0.0
    values[1::101] = -0.0
    values[2::103] = float("inf")
    values[3::107] = float("nan")
    values[4::109] = -3.4e38  # beyond bfloat16 max (3.39e38) too
    out, problem = cast_tensor(values, "w", target)
    dst = values.to(getattr(torch, target))
    assert torch.equal(out.view(torch.int16), dst.view(torch.int16))
    overflow = int((torch.isfinite(values) & ~torch.isfinite(dst)).sum())
    nonzero = int((torch.isfinite(values) & (values != 0)).sum())  # as check-dtype's nonzero_finite
    flushed = int(((values != 0) & (dst == 0)).sum())
    assert problem is not None
    assert (problem.overflow, problem.flushed, problem.nonzero) == (overflow, flushed, nonzero)
    assert overflow > 0 and flushed > 0


@pytest.mark.parametrize(("output", "point"), [("out.safetensors", "before-rename"), ("out", "before-swap")])
def test_an_output_that_appears_meanwhile_is_not_replaced(
    fx: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str, point: str,
) -> None:
    """Two runs to one output without --force: the one that commits second fails instead of replacing."""
    from tests.helpers import run_cli
    from weightdoctor.writers import hooks

    dest = tmp_path / output

    def other_run_commits(at: str) -> None:
        if at == point:  # another process wrote the same output since this one checked
            if dest.suffix:
                dest.write_bytes(b"the other run's output")
            else:
                dest.mkdir()
                (dest / "model.safetensors").write_bytes(b"the other run's output")

    monkeypatch.setattr(hooks, "reached", other_run_commits)
    result = run_cli("convert", str(fx["bert"] / "model.safetensors" if dest.suffix else fx["bert"]), "-o", str(dest))
    assert result.exit_code == 2 and "output appeared while this one was written" in result.stderr, result.stderr
    kept = dest if dest.suffix else dest / "model.safetensors"
    assert kept.read_bytes() == b"the other run's output"
    assert sorted(p.name for p in tmp_path.iterdir()) == [output]  # no temp or staging left


def test_a_ctrl_c_after_the_commit_says_the_output_is_whole(
    fx: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.helpers import run_cli
    from weightdoctor.writers import hooks

    def interrupt(at: str) -> None:
        if at == "after-swap":
            raise KeyboardInterrupt

    monkeypatch.setattr(hooks, "reached", interrupt)
    result = run_cli("convert", str(fx["bert"]), "-o", str(tmp_path / "out"))
    assert result.exit_code == 130
    assert result.stderr.strip() == f"error: interrupted after {tmp_path / 'out'} was written whole"
    assert (tmp_path / "out" / "model.safetensors").exists()
