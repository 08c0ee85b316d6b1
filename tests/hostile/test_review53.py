"""review53: a torch zip whose two central directories (miniz's, where the zip64 locator points; Python 3.11
zipfile's, the zip64 record just before the locator) list one local header with another compression method, size
or CRC. perf16's raw view skips the records zipfile holds; neither it nor the view before it compared their fields,
so torch.load inflated a tensor record that inspect and convert read as stored values (convert wrote those and called
them "byte for byte equal to the source"), and `inspect` said safe, exit 0."""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import run_cli

torch = pytest.importorskip("torch")


def _saved() -> bytes:
    generator = torch.Generator().manual_seed(53)
    buffer = io.BytesIO()
    torch.save({"w": torch.randn(4, 4, generator=generator), "b": torch.zeros(4)}, buffer)
    return buffer.getvalue()


def _split(data: bytes) -> tuple[bytearray, list[bytearray]]:
    """The bytes before the central directory, and its entries (a plain zip without comment)."""
    end = data.rfind(b"PK\x05\x06")
    count, _size, offset = struct.unpack_from("<HII", data, end + 10)
    entries, position = [], offset
    for _ in range(count):
        lengths = struct.unpack_from("<HHH", data, position + 28)
        length = 46 + sum(lengths)
        entries.append(bytearray(data[position:position + length]))
        position += length
    return bytearray(data[:offset]), entries


def _name(entry: bytearray) -> str:
    return entry[46:46 + struct.unpack_from("<H", entry, 28)[0]].decode()


def _two_directories(local: bytes, zipfile_view: list[bytearray], torch_view: list[bytearray]) -> bytes:
    """Python's zipfile reads the zip64 end record just before the locator; miniz reads the one it points at."""
    torch_cd, zipfile_cd = b"".join(torch_view), b"".join(zipfile_view)
    torch_record_at = len(local) + len(torch_cd)
    torch_record = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(torch_view), len(torch_view),
                               len(torch_cd), len(local))
    zipfile_cd_at = torch_record_at + len(torch_record)
    zipfile_record = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(zipfile_view), len(zipfile_view),
                                 len(zipfile_cd), zipfile_cd_at)
    locator = struct.pack("<IIQI", 0x07064B50, 0, torch_record_at, 1)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(local) + torch_cd + torch_record + zipfile_cd + zipfile_record + locator + end


def _deflated_tensor_record() -> bytes:
    """Record archive/data/0 (w) holds a deflate stream of 16 sevens, padded to its 64 bytes: zipfile's directory
    says stored (the stream's bytes are the values), miniz's says deflated (torch.load inflates the sevens)."""
    local, entries = _split(_saved())
    index = next(i for i, e in enumerate(entries) if _name(e) == "archive/data/0")
    header = struct.unpack_from("<I", entries[index], 42)[0]
    data_at = header + 30 + sum(struct.unpack_from("<HH", local, header + 26))
    size = struct.unpack_from("<I", entries[index], 24)[0]
    sevens = torch.full((size // 4,), 7.0).numpy().tobytes()
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = deflater.compress(sevens) + deflater.flush()
    stored = stream + b"\0" * (size - len(stream))
    local[data_at:data_at + size] = stored
    struct.pack_into("<I", local, header + 14, zlib.crc32(stored))
    zipfile_view = [bytearray(e) for e in entries]
    struct.pack_into("<I", zipfile_view[index], 16, zlib.crc32(stored))
    torch_view = [bytearray(e) for e in entries]
    struct.pack_into("<H", torch_view[index], 10, 8)
    struct.pack_into("<I", torch_view[index], 16, zlib.crc32(sevens))
    return _two_directories(local, zipfile_view, torch_view)


def _pickle_record_changed(change: Callable[[bytearray], None]) -> bytes:
    local, entries = _split(_saved())
    torch_view = [bytearray(e) for e in entries]
    change(next(e for e in torch_view if _name(e) == "archive/data.pkl"))
    return _two_directories(local, entries, torch_view)


def test_a_tensor_record_torch_inflates_and_zipfile_reads_stored_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "two-readings.pt"
    path.write_bytes(_deflated_tensor_record())
    # the premise: torch.load reads other values than the stored bytes inspect and convert read
    assert torch.load(path, weights_only=True)["w"].flatten().tolist() == [7.0] * 16
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 2, result.stdout
    assert str(path) in result.stderr and "Traceback" not in result.stderr
    assert "'archive/data/0': compression method 8 where zipfile reads 0" in result.stderr
    assert "shows different contents to different readers" in result.stderr
    output = tmp_path / "out.safetensors"
    converted = run_cli("convert", str(path), "-o", str(output))
    assert converted.exit_code == 2 and not output.exists()
    assert "compression method 8 where zipfile reads 0" in converted.stderr


def _size(entry: bytearray) -> None:
    size = struct.unpack_from("<I", entry, 24)[0]
    struct.pack_into("<II", entry, 20, size + 8, size + 8)


def _crc(entry: bytearray) -> None:
    struct.pack_into("<I", entry, 16, 0x12345678)


@pytest.mark.parametrize(("change", "words"), [
    (_size, "compressed size {size:,} where zipfile reads {was:,}; size {size:,} where zipfile reads {was:,}"),
    (_crc, "CRC-32 12345678 where zipfile reads"),
])
def test_data_pkl_read_with_other_sizes_or_crc_is_refused(tmp_path: Path, change: Callable[[bytearray], None],
                                                          words: str) -> None:
    path = tmp_path / "two-readings.pt"
    path.write_bytes(_pickle_record_changed(change))
    was = next(struct.unpack_from("<I", e, 24)[0] for e in _split(_saved())[1] if _name(e) == "archive/data.pkl")
    report = run_cli("inspect", str(path), "--json")
    assert report.exit_code == 2 and report.stdout.strip() == "" and "Traceback" not in report.stderr
    assert f"'archive/data.pkl': {words.format(size=was + 8, was=was)}" in report.stderr
    assert "the central directory PyTorch reads gives 1 member" in report.stderr


def test_two_directories_that_agree_stay_healthy(tmp_path: Path) -> None:
    # the control: the same two-directory layout, both listing the records alike, is read as before
    local, entries = _split(_saved())
    path = tmp_path / "agreeing.pt"
    path.write_bytes(_two_directories(local, entries, [bytearray(e) for e in entries]))
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["security"]["verdict"] == "safe" and report["num_tensors"] == 2
    assert torch.load(path, weights_only=True)["b"].tolist() == [0.0] * 4


def test_dequantize_memo_gives_requires_grad_as_the_grad_mode_of_each_call() -> None:
    # perf16's memo key held the inputs' requires_grad but not the grad mode: a result recorded under no_grad (which
    # does not require grad) was handed back under enable_grad, where transformers' own op gives one that does.
    fp8 = pytest.importorskip("transformers.integrations.finegrained_fp8")
    from weightdoctor.load_simulation import MetaDequantizeMemo

    memo = MetaDequantizeMemo()
    op = fp8.Fp8Dequantize(None)
    memo.attach(type("Converter", (), {"operations": [op]})())
    weight = torch.empty((256, 384), device="meta").requires_grad_()
    scales = torch.empty((2, 3), device="meta")
    with torch.no_grad():
        assert not op._dequantize_one(weight, scales).requires_grad
    with torch.enable_grad():
        expected = fp8.Fp8Dequantize(None)._dequantize_one(weight, scales)
        got = op._dequantize_one(weight, scales)
    assert expected.requires_grad and got.requires_grad
    assert (got.shape, got.stride(), got.dtype) == (expected.shape, expected.stride(), expected.dtype)
    # inputs that do not require grad are still memoized: one run for two calls
    plain = torch.empty((256, 384), device="meta")
    calls = memo.calls
    with torch.enable_grad():
        first, second = (op._dequantize_one(plain, scales) for _ in range(2))
    assert memo.calls == calls + 1 and not first.requires_grad and not second.requires_grad
