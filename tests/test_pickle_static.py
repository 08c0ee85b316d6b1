"""The torch-free zip reader (`checkpoint.pickle_static`) against torch.load itself.

For every kind of tensor a state dict holds, the stand-ins must give torch's own names, dtypes, shapes,
strides, storage sharing and values; whatever the reader does not model must go to torch.load.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path

import pytest
import torch

from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.checkpoint.pickle_static import NeedsTorch, StaticTensor, load_static


def _flatten(obj: object, prefix: str = "") -> dict[str, object]:
    if isinstance(obj, dict):
        out: dict[str, object] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, value in enumerate(obj):
            out.update(_flatten(value, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): obj}


def _assert_same_as_torch(path: Path) -> int:
    """Compare the stand-ins with what torch.load gives; returns the number of tensors compared."""
    static = _flatten(load_static(path))
    # torch's weights_only loader reads protocol 2 only; these files are the test's own.
    real = _flatten(torch.load(path, weights_only=False, mmap=True))
    assert static.keys() == real.keys()
    storages: dict[str, int] = {}
    compared = 0
    for name, expected in real.items():
        got = static[name]
        if not isinstance(expected, torch.Tensor):
            assert got == expected, name
            continue
        assert isinstance(got, StaticTensor), name
        tensor = got.to_torch()
        assert tensor.dtype == expected.dtype, name
        assert tensor.shape == expected.shape and tensor.stride() == expected.stride(), name
        assert tensor.storage_offset() == expected.storage_offset(), name
        assert torch.equal(tensor, expected) or (tensor.isnan() == expected.isnan()).all(), name
        # Tensors share a record exactly when torch gives them one storage.
        ptr = expected.untyped_storage().data_ptr()
        if expected.untyped_storage().nbytes():
            assert storages.setdefault(got.storage.key, ptr) == ptr, name
        byte_range = got.byte_range()
        assert (byte_range is not None) == expected.is_contiguous(), name
        if byte_range is not None and expected.numel():
            offset, length = byte_range
            with open(path, "rb") as handle:
                handle.seek(offset)
                raw = handle.read(length)
            assert raw == expected.contiguous().view(-1).view(torch.uint8).numpy().tobytes(), name
        compared += 1
    return compared


def _varied_state_dict() -> dict[str, object]:
    torch.manual_seed(0)
    base = torch.randn(6, 8)
    tied = torch.randn(10, 4)
    return {
        "f32": torch.randn(3, 5),
        "f16": torch.randn(4, 4).half(),
        "bf16": torch.randn(2, 7).bfloat16(),
        "f64": torch.randn(3).double(),
        "i64": torch.arange(12).reshape(3, 4),
        "i32": torch.arange(5, dtype=torch.int32),
        "i16": torch.arange(5, dtype=torch.int16),
        "i8": torch.arange(-3, 3, dtype=torch.int8),
        "u8": torch.arange(7, dtype=torch.uint8),
        "u16": torch.arange(7).to(torch.uint16),
        "u32": torch.arange(7).to(torch.uint32),
        "bool": torch.tensor([True, False, True]),
        "c64": torch.randn(3, dtype=torch.complex64),
        "fp8": torch.randn(4, 4).to(torch.float8_e4m3fn),
        "fp8b": torch.randn(4, 4).to(torch.float8_e5m2),
        "scalar": torch.tensor(3.5),
        "empty": torch.empty(0, 4),
        "param": torch.nn.Parameter(torch.randn(2, 2)),
        "tied.a": tied,
        "tied.b": tied,
        "row_slice": base[2:4],
        "transposed": base.t(),
        "column": base[:, 1],
        "nan": torch.tensor([float("nan"), 1.0, float("inf")]),
    }


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_varied_tensors_equal_torch_load(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "varied.bin"
    torch.save(_varied_state_dict(), path, pickle_protocol=protocol)
    assert _assert_same_as_torch(path) == len(_varied_state_dict())


def test_nested_training_checkpoint_equals_torch_load(tmp_path: Path) -> None:
    path = tmp_path / "train.pt"
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    torch.save({"epoch": 3, "step": 12.5, "tag": "x", "none": None, "ok": True, "list": [1, (2, 3)],
                "model_state_dict": model.state_dict(),
                "ordered": collections.OrderedDict(w=torch.ones(2))}, path)
    assert _assert_same_as_torch(path) == len(model.state_dict()) + 1


def test_fixture_checkpoints_equal_torch_load(fx: dict[str, Path]) -> None:
    files = [fx["files"] / "bert.bin", fx["files"] / "gpt2-tied.bin",
             *sorted(fx["bert-bin"].glob("*.bin")), *sorted(fx["gpt2-bin"].glob("*.bin"))]
    assert sum(_assert_same_as_torch(path) for path in files) > 100


def test_reader_gives_the_same_structure_and_values_either_way(fx: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "varied.bin"
    torch.save(_varied_state_dict(), path)
    static = open_checkpoint(path)
    from weightdoctor.checkpoint import pytorch_format

    monkeypatch.setattr(pytorch_format, "load_static", lambda p: (_ for _ in ()).throw(NeedsTorch("test")))
    loaded = open_checkpoint(path)
    assert [(t.name, t.shape, t.dtype, t.nbytes) for t in static.tensors] == \
           [(t.name, t.shape, t.dtype, t.nbytes) for t in loaded.tensors]
    assert sorted(map(sorted, static.shared_groups())) == sorted(map(sorted, loaded.shared_groups())) == \
           [["column", "row_slice", "transposed"], ["tied.a", "tied.b"]]
    for info in static.tensors:
        a, b = static.load_tensor(info.name), loaded.load_tensor(info.name)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a.float().nan_to_num(), b.float().nan_to_num()) if a.is_floating_point() \
            else torch.equal(a, b)


def _pickle_into_archive(tmp_path: Path, payload: bytes) -> Path:
    """A torch.save archive whose data.pkl is replaced (the zip rewritten record by record)."""
    import zipfile

    source = tmp_path / "source.bin"
    torch.save({"w": torch.ones(2)}, source)
    target = tmp_path / "edited.bin"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = payload if info.filename.endswith("data.pkl") else src.read(info)
            dst.writestr(info.filename, data)
    return target


@pytest.mark.parametrize("kind", ["numpy", "quantized", "global"])
def test_what_it_does_not_model_goes_to_torch(tmp_path: Path, kind: str) -> None:
    if kind == "numpy":
        import numpy

        path = tmp_path / "np.bin"
        torch.save({"w": torch.ones(2), "arr": numpy.arange(3)}, path)
    elif kind == "quantized":
        path = tmp_path / "q.bin"
        torch.save({"q": torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8)}, path)
    else:
        # A global the stand-in unpickler does not know: refused without being imported.
        payload = b"\x80\x02cos\nsystem\nq\x00."
        path = _pickle_into_archive(tmp_path, payload)
    with pytest.raises(NeedsTorch):
        load_static(path)


def test_irregular_archives_go_to_torch(tmp_path: Path) -> None:
    # A compressed storage record cannot be viewed in place.
    import zipfile

    source = tmp_path / "source.bin"
    torch.save({"w": torch.zeros(1000)}, source)
    target = tmp_path / "deflated.bin"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            method = zipfile.ZIP_DEFLATED if "/data/" in info.filename else zipfile.ZIP_STORED
            dst.writestr(info.filename, src.read(info), compress_type=method)
    with pytest.raises(NeedsTorch, match="compressed"):
        load_static(target)


def test_a_view_beyond_its_storage_goes_to_torch(tmp_path: Path) -> None:
    import io

    class Ref:
        pass

    # data.pkl claiming 10 elements from a 2-element storage.
    source = tmp_path / "source.bin"
    torch.save({"w": torch.ones(2)}, source)
    buffer = io.BytesIO()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return ("storage", torch.FloatStorage, "0", "cpu", 2) if isinstance(obj, Ref) else None

    class Rebuild:
        def __reduce__(self) -> tuple[object, tuple[object, ...]]:
            return torch._utils._rebuild_tensor_v2, (Ref(), 0, (10,), (1,), False, collections.OrderedDict())

    Pickler(buffer, protocol=2).dump({"w": Rebuild()})
    path = _pickle_into_archive(tmp_path, buffer.getvalue())
    with pytest.raises(NeedsTorch, match="beyond its storage"):
        load_static(path)


def _resize_record_in_central_directory(path: Path, record: str, delta: int) -> None:
    """Change the sizes the central directory gives for `record` (the local header keeps the true ones)."""
    import struct

    raw = bytearray(path.read_bytes())
    position = raw.find(b"PK\x01\x02")
    while position >= 0:
        name_length = struct.unpack_from("<H", raw, position + 28)[0]
        if raw[position + 46:position + 46 + name_length].decode().endswith(record):
            compressed, size = struct.unpack_from("<II", raw, position + 20)
            struct.pack_into("<II", raw, position + 20, compressed + delta, size + delta)
            path.write_bytes(bytes(raw))
            return
        position = raw.find(b"PK\x01\x02", position + 4)
    raise AssertionError(f"no {record} in the central directory")


@pytest.mark.parametrize("delta", [-4, 4])
def test_a_record_of_the_wrong_size_is_a_damaged_file_as_torch_load_says(tmp_path: Path, delta: int) -> None:
    """torch.load refuses a storage record whose size differs from the storage's; so does the reader
    (only torch.load(mmap=True) reads it regardless, which is why the torch path cannot be the judge)."""
    from typer.testing import CliRunner

    from weightdoctor.cli import app

    path = tmp_path / "model.pt"
    torch.save({"w": torch.arange(16, dtype=torch.float32), "b": torch.ones(4)}, path)
    _resize_record_in_central_directory(path, "data/0", delta)
    with pytest.raises(RuntimeError, match="does not match expected size"):
        torch.load(path, weights_only=True)
    result = CliRunner().invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2, result.output
    assert f"storage record data/0 holds {64 + delta} bytes" in result.output
    assert "16 x 4 = 64 bytes" in result.output
    assert "Traceback" not in result.output


def test_a_record_of_the_wrong_size_is_refused_on_the_torch_path_too(tmp_path: Path) -> None:
    """A numpy scalar beside the tensor sends the file to torch.load(mmap=True), which reads a short record
    regardless (whatever bytes follow it); the record sizes are checked there as well."""
    import zipfile

    import numpy as np

    from weightdoctor.errors import CorruptCheckpoint

    source = tmp_path / "src.pt"
    torch.save({"step": np.float64(3.0), "w": torch.arange(4.0)}, source)
    damaged = tmp_path / "short.pt"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(damaged, "w", zipfile.ZIP_STORED) as out:
        for info in original.infolist():
            data = original.read(info)
            out.writestr(info.filename, data[:8] if info.filename.endswith("data/0") else data)
    with pytest.raises(NeedsTorch):
        load_static(damaged)  # the numpy scalar: not modelled here
    with pytest.raises(CorruptCheckpoint, match=r"storage record data/0 holds 8 bytes.*4 x 4 = 16 bytes"):
        open_checkpoint(damaged)
