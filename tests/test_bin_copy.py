"""The torch-free .bin writer (writers/bin_copy.py) against torch.save and torch.load, and through the CLI."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import REPO_ROOT, flip_a_bit_in_the_third_copy, run_cli, run_json
from tests.test_atomic_kill import _leftovers, _run_paused_and_kill, assert_refused_for_size
from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.checkpoint.pickle_static import load_static
from weightdoctor.writers import bin_copy, byte_copy
from weightdoctor.writers.bin_copy import pickle_state_dict_static, write_bin_by_copy
from weightdoctor.writers.bin_writer import BinSlot, pickle_state_dict
from weightdoctor.writers.byte_copy import ByteRange


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _every_dtype() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    sd: dict[str, torch.Tensor] = {
        "f64": torch.randn(3, 2, generator=gen, dtype=torch.float64),
        "f32": torch.randn(7, 5, generator=gen),
        "f16": torch.randn(4, generator=gen).half(),
        "bf16": torch.randn(2, 3, 4, generator=gen).bfloat16(),
        "i64": torch.arange(-5, 6, dtype=torch.int64),
        "i32": torch.arange(9, dtype=torch.int32),
        "i16": torch.arange(-3, 3, dtype=torch.int16),
        "i8": torch.arange(-4, 4, dtype=torch.int8),
        "u8": torch.arange(250, 256, dtype=torch.int64).to(torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "c64": torch.randn(3, generator=gen, dtype=torch.complex64),
        "c128": torch.randn(2, 2, generator=gen, dtype=torch.complex128),
        "u16": torch.arange(5, dtype=torch.int32).to(torch.uint16),
        "u32": torch.arange(5, dtype=torch.int64).to(torch.uint32),
        "u64": torch.arange(5, dtype=torch.int64).to(torch.uint64),
        "f8e4m3": torch.randn(6, generator=gen).to(torch.float8_e4m3fn),
        "f8e5m2": torch.randn(6, generator=gen).to(torch.float8_e5m2),
        "f8e4m3fnuz": torch.randn(6, generator=gen).to(torch.float8_e4m3fnuz),
        "f8e5m2fnuz": torch.randn(6, generator=gen).to(torch.float8_e5m2fnuz),
        "f8e8m0": torch.rand(6, generator=gen).to(torch.float8_e8m0fnu),
        "f4": torch.arange(6, dtype=torch.uint8).reshape(2, 3).view(torch.float4_e2m1fn_x2),
    }
    return sd


def _state_dicts() -> dict[str, tuple[dict[str, torch.Tensor], dict[str, str]]]:
    """name -> (state dict, alias name -> the name whose tensor it is)."""
    gen = torch.Generator().manual_seed(2)
    tied = {"wte": torch.randn(6, 4, generator=gen), "ln.bias": torch.zeros(4), "lm_head": None,
            "head2": None, "u16": torch.arange(3, dtype=torch.int32).to(torch.uint16), "u16_alias": None}
    tied["lm_head"] = tied["head2"] = tied["wte"]
    tied["u16_alias"] = tied["u16"]
    many = {f"layers.{i}.weight": torch.full((i % 5 + 1,), float(i)) for i in range(1100)}
    many.update({f"layers.{i}.tie": many[f"layers.{i}.weight"] for i in range(0, 1100, 97)})
    return {
        "every-dtype": (_every_dtype(), {}),
        "scalars": ({"a": torch.tensor(1.5), "b": torch.tensor(7, dtype=torch.int64),
                     "c": torch.tensor(True), "d": torch.tensor(2, dtype=torch.uint16)}, {}),
        "empty": ({"e0": torch.zeros(0), "e1": torch.zeros(3, 0, 2, dtype=torch.bfloat16),
                   "e2": torch.zeros(0, dtype=torch.float8_e4m3fn), "x": torch.ones(2)}, {}),
        "only-empty": ({"e": torch.zeros(0, 5)}, {}),
        "nothing": ({}, {}),
        "tied": ({k: v for k, v in tied.items() if v is not None},
                 {"lm_head": "wte", "head2": "wte", "u16_alias": "u16"}),
        "many-names": (many, {f"layers.{i}.tie": f"layers.{i}.weight" for i in range(0, 1100, 97)}),
        "unicode-names": ({"emb.词表": torch.ones(3), "ñ.weight": torch.zeros(2, 2), "🙂": torch.tensor(3)}, {}),
    }


def _raw(tensor: torch.Tensor) -> bytes:
    return tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""


def _write_from_raw(tmp_path: Path, sd: dict[str, torch.Tensor], aliases: dict[str, str]) -> tuple[Path, int]:
    """Lay each tensor's bytes out in a source file (in another order, with gaps) and write the .bin."""
    source = tmp_path / "source.raw"
    blob = bytearray(b"\xee" * 13)
    sources: dict[str, ByteRange] = {}
    for name in reversed(list(sd)):
        if name in aliases:
            continue
        data = _raw(sd[name])
        sources[name] = ByteRange(source, len(blob), len(data))
        blob += data + b"\xee" * 5
    source.write_bytes(bytes(blob))
    slots = [BinSlot(n, _name(t.dtype), tuple(t.shape), alias_of=aliases.get(n)) for n, t in sd.items()]
    out = tmp_path / "out.bin"
    compared = write_bin_by_copy(out, slots, sources)
    return out, compared


def _id_record(archive: zipfile.ZipFile) -> str:
    return next(n for n in archive.namelist() if n.endswith("/.data/serialization_id"))


def test_the_dtype_tables_are_torchs() -> None:
    legacy = {_name(d): name for d, name in torch.storage._dtype_to_storage_type_map().items()
              if not _name(d).startswith(("qint", "quint"))}
    assert legacy == bin_copy.LEGACY_STORAGE_TYPES
    new = {_name(d) for d in torch.storage._new_dtypes()}
    assert new >= bin_copy.V3_DTYPES
    # The rest of torch's v3 dtypes are sub-byte "bits" types and the pairs of halves, complex32 and (torch 2.14 on)
    # bcomplex32, which convert writes through torch's own writer.
    assert all(n.startswith("bits") or n in ("complex32", "bcomplex32") for n in new - bin_copy.V3_DTYPES)
    assert torch.serialization._get_storage_alignment() == bin_copy.STORAGE_ALIGNMENT


@pytest.mark.parametrize("case", list(_state_dicts()))
def test_the_archive_is_torch_saves_record_for_record_and_byte_for_byte(tmp_path: Path, case: str) -> None:
    sd, aliases = _state_dicts()[case]
    out, compared = _write_from_raw(tmp_path, sd, aliases)
    assert compared == len(sd)
    reference = io.BytesIO()
    torch.save(sd, reference)
    ours, theirs = zipfile.ZipFile(out), zipfile.ZipFile(reference)
    assert ours.namelist() == theirs.namelist()
    assert ours.testzip() is None  # every CRC right
    id_name = _id_record(theirs)
    for record in theirs.namelist():
        if record != id_name:
            assert ours.read(record) == theirs.read(record), record
    # Even the serialization id torch derives from its C++ record-name set and the CRCs: byte for byte.
    assert ours.read(id_name) == theirs.read(id_name)
    assert out.read_bytes() == reference.getvalue()

    loaded = torch.load(out, weights_only=True)
    assert list(loaded) == list(sd)
    for name, tensor in sd.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape
        assert _raw(loaded[name]) == _raw(tensor), name
    for alias, owner in aliases.items():
        assert loaded[alias].data_ptr() == loaded[owner].data_ptr()
    # weightdoctor's own reader takes its torch-free path on it (a regular archive) and finds the bytes.
    static = load_static(out)
    with open(out, "rb") as handle:
        for name, tensor in sd.items():
            found = static[name].byte_range()
            if found is None and tensor.numel() == 0 and 0 in tensor.shape[1:]:
                continue  # the reader does not take (3, 0, 2) for contiguous (torch does): no bytes anyway
            assert found is not None, name
            handle.seek(found[0])
            assert handle.read(found[1]) == _raw(tensor), name


def test_data_pkl_without_torch_equals_the_torch_pickler() -> None:
    for sd, aliases in _state_dicts().values():
        slots = [BinSlot(n, _name(t.dtype), tuple(t.shape), alias_of=aliases.get(n)) for n, t in sd.items()]
        assert pickle_state_dict_static(slots) == pickle_state_dict(slots)


def test_bad_inputs_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    source = tmp_path / "s.raw"
    source.write_bytes(b"\0" * 64)
    out = tmp_path / "o.bin"
    with pytest.raises(ValueError, match="dtype qint8 cannot be written without torch"):
        write_bin_by_copy(out, [BinSlot("q", "qint8", (4,))], {"q": ByteRange(source, 0, 4)})
    with pytest.raises(ValueError, match="'b' aliases 'a', which does not come before it"):
        write_bin_by_copy(out, [BinSlot("b", "float32", (1,), alias_of="a"), BinSlot("a", "float32", (1,))],
                          {"a": ByteRange(source, 0, 4)})
    with pytest.raises(ValueError, match="'a': 8 source bytes, 4 needed"):
        write_bin_by_copy(out, [BinSlot("a", "float32", (1,))], {"a": ByteRange(source, 0, 8)})
    assert not out.exists()


def test_without_verify_nothing_is_compared_but_the_crcs_are_right(tmp_path: Path) -> None:
    sd = _every_dtype()
    source = tmp_path / "src.safetensors"
    # (safetensors has no complex128 nor fnuz types; the reader gives F4 tensors their safetensors shape)
    save_file({k: v for k, v in sd.items() if k not in ("c128", "f8e4m3fnuz", "f8e5m2fnuz", "f4")}, source)
    checkpoint = open_checkpoint(source)
    names = [t.name for t in checkpoint.tensors]
    sources = {n: ByteRange(*checkpoint.byte_range(n)) for n in names}  # type: ignore[misc]
    slots = [BinSlot(t.name, t.dtype, t.shape) for t in checkpoint.tensors]
    assert write_bin_by_copy(tmp_path / "o.bin", slots, sources, verify=False) == 0
    assert zipfile.ZipFile(tmp_path / "o.bin").testzip() is None
    loaded = torch.load(tmp_path / "o.bin", weights_only=True)
    assert all(_raw(loaded[n]) == _raw(sd[n]) for n in names)


def test_the_module_does_not_import_torch() -> None:
    code = ("import sys, weightdoctor.writers.bin_copy, weightdoctor.rewrite; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, check=True)
    assert result.stdout.strip() == "[]"


def test_convert_safetensors_to_bin_copies_bytes_without_torch(fx: dict[str, Path], tmp_path: Path) -> None:
    """The whole CLI run (plan, write, verify) on a safetensors source imports no torch at all."""
    out = tmp_path / "m.bin"
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom weightdoctor.cli import app\n"
            f"r = CliRunner().invoke(app, ['convert', {str(fx['bert'] / 'model.safetensors')!r}, '-o', {str(out)!r}])\n"
            "print(r.exit_code, 'torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"})
    assert result.stdout.split() == ["0", "False"], result.stderr
    original = load_file(fx["bert"] / "model.safetensors")
    back = torch.load(out, weights_only=True)
    assert list(back) == list(original) or sorted(back) == sorted(original)
    assert all(torch.equal(back[k], original[k]) for k in original)


def test_round_trip_safetensors_bin_safetensors_is_bitwise(fx: dict[str, Path], tmp_path: Path) -> None:
    source = fx["bert"] / "model.safetensors"
    code, data = run_json("convert", source, "-o", tmp_path / "a.bin")
    assert code == 0 and data["write"]["verified"] is True
    assert data["write"]["tensors_verified"] == data["plan"]["num_tensors"]
    result = run_cli("convert", tmp_path / "a.bin", "-o", tmp_path / "b.safetensors")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "b.safetensors").read_bytes() == source.read_bytes()


def test_the_byte_copy_and_the_torch_path_write_the_same_file(
    fx: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from weightdoctor import rewrite

    for source in (fx["bert"] / "model.safetensors", fx["files"] / "gpt2-tied.bin"):
        assert run_cli("convert", source, "-o", tmp_path / "copied.bin").exit_code == 0
        with monkeypatch.context() as patch:
            patch.setattr(rewrite, "BYTE_COPY", False)
            assert run_cli("convert", source, "-o", tmp_path / "torch.bin").exit_code == 0
        assert (tmp_path / "copied.bin").read_bytes() == (tmp_path / "torch.bin").read_bytes()
        for path in tmp_path.iterdir():
            path.unlink()


def test_tied_bin_to_bin_by_copy_keeps_one_storage_and_counts_aliases(fx: dict[str, Path], tmp_path: Path) -> None:
    source = fx["files"] / "gpt2-tied.bin"
    code, data = run_json("convert", source, "-o", tmp_path / "t.bin")
    assert code == 0 and data["write"]["tensors_verified"] == data["plan"]["num_tensors"]
    original = torch.load(source, weights_only=True)
    back = torch.load(tmp_path / "t.bin", weights_only=True)
    assert list(back) == list(original) and all(torch.equal(back[k], original[k]) for k in original)
    assert back["lm_head.weight"].data_ptr() == back["transformer.wte.weight"].data_ptr()
    assert len(zipfile.ZipFile(tmp_path / "t.bin").namelist()) == len(zipfile.ZipFile(source).namelist())


def test_shard_format_bin_by_copy_keeps_aliases_with_their_tensor(fx: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "shards"
    code, data = run_json("shard", fx["gpt2-bin"], "--max", "30KB", "--format", "bin", "-o", out)
    assert code == 0 and data["write"]["tensors_verified"] == data["plan"]["num_tensors"]
    merged: dict[str, torch.Tensor] = {}
    for path in sorted(out.glob("pytorch_model-*.bin")):
        assert zipfile.ZipFile(path).testzip() is None
        merged.update(torch.load(path, weights_only=True))
    original = torch.load(fx["gpt2-bin"] / "pytorch_model.bin", weights_only=True)
    assert merged.keys() == original.keys() and all(torch.equal(merged[k], original[k]) for k in original)
    assert merged["lm_head.weight"].data_ptr() == merged["transformer.wte.weight"].data_ptr()


def test_a_flipped_byte_is_caught_and_nothing_is_left(
    fx: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = flip_a_bit_in_the_third_copy(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("convert", fx["bert"] / "model.safetensors", "-o", out / "x.bin")
    assert result.exit_code == 2
    assert "verification failed: the bytes of" in result.stderr and "differ from the source" in result.stderr
    assert list(out.iterdir()) == []
    calls["n"] = 0
    result = run_cli("convert", fx["bert"] / "model.safetensors", "-o", out / "x.bin", "--no-verify")
    assert result.exit_code == 0 and "skipped (--no-verify)" in result.stdout
    # Unverified, the flipped bit is written, but the archive is still consistent (CRCs of what is there).
    assert zipfile.ZipFile(out / "x.bin").testzip() is None


@pytest.mark.parametrize("point", ["after-header", "tensor-2", "before-verify"])
def test_killed_while_writing_a_bin_leaves_no_output(fx: dict[str, Path], tmp_path: Path, point: str) -> None:
    source = fx["bert"] / "model.safetensors"
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dest = out_dir / "pytorch_model.bin"
    _run_paused_and_kill(["convert", source, "-o", dest], tmp_path, point)
    assert not dest.exists() and len(_leftovers(out_dir)) == 1
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before


def test_a_full_disk_while_writing_a_bin_exits_2_and_leaves_nothing(fx: dict[str, Path], tmp_path: Path) -> None:
    for args in (["convert", fx["bert"] / "model.safetensors", "-o", tmp_path / "model.bin"],
                 ["shard", fx["bert"], "--max", "20KB", "--format", "bin", "-o", tmp_path / "shards"]):
        assert_refused_for_size(args, tmp_path)


@pytest.mark.skipif(not os.environ.get("WEIGHTDOCTOR_BIG_TESTS"), reason="writes 8.6 GB; set WEIGHTDOCTOR_BIG_TESTS=1")
def test_zip64_records_beyond_4_gib_are_written_as_torch_writes_them(tmp_path: Path) -> None:
    sd = {"big": torch.ones(2**32, dtype=torch.uint8), "small": torch.arange(10, dtype=torch.float32),
          "e": torch.zeros(0)}
    torch.save(sd, tmp_path / "ref.bin")
    source = tmp_path / "src.raw"
    with open(source, "wb") as handle:
        handle.write(sd["big"].numpy().data)
        handle.write(_raw(sd["small"]))
    del sd
    slots = [BinSlot("big", "uint8", (2**32,)), BinSlot("small", "float32", (10,)), BinSlot("e", "float32", (0,))]
    sources = {"big": ByteRange(source, 0, 2**32), "small": ByteRange(source, 2**32, 40),
               "e": ByteRange(source, 0, 0)}
    source_size = source.stat().st_size
    write_bin_by_copy(tmp_path / "ours.bin", slots, sources, archive_name="ref")
    source.unlink()
    assert source_size == 2**32 + 40
    ours, theirs = zipfile.ZipFile(tmp_path / "ours.bin"), zipfile.ZipFile(tmp_path / "ref.bin")
    assert [(i.filename, i.header_offset, i.file_size) for i in ours.infolist()] == \
        [(i.filename, i.header_offset, i.file_size) for i in theirs.infolist()]
    assert (tmp_path / "ours.bin").stat().st_size == (tmp_path / "ref.bin").stat().st_size
    with open(tmp_path / "ours.bin", "rb") as a, open(tmp_path / "ref.bin", "rb") as b:
        while chunk := a.read(64 << 20):
            assert chunk == b.read(len(chunk))  # byte for byte, serialization id included


@pytest.mark.parametrize("libdeflate", [True, False])
def test_crc32_at_equals_zlibs_in_one_go_and_in_chunks(monkeypatch: pytest.MonkeyPatch, libdeflate: bool) -> None:
    import ctypes

    if not libdeflate:
        monkeypatch.setattr(byte_copy, "_LIBDEFLATE_CRC32", None)
    data = bytearray(os.urandom(3 << 20) + b"abc")
    address = ctypes.addressof((ctypes.c_char * len(data)).from_buffer(data))
    assert byte_copy.crc32_at(address, len(data)) == zlib.crc32(data)
    value = 0
    for start in range(0, len(data), 1 << 20):
        value = byte_copy.crc32_at(address + start, min(1 << 20, len(data) - start), value)
    assert value == zlib.crc32(data)
