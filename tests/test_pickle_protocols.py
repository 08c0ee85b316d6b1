"""Pickles of protocol 3-5 (torch.save(pickle_protocol=N)) load through the restricted fallback."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
import torch

from tests.helpers import run_json
from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.checkpoint.pytorch_format import RestrictedPickle


@pytest.mark.parametrize("protocol", [3, 4, 5])
@pytest.mark.parametrize("zip_format", [True, False])
def test_higher_protocols_load(tmp_path: Path, protocol: int, zip_format: bool) -> None:
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.bfloat16)}
    path = tmp_path / f"p{protocol}.pt"
    torch.save(state, path, pickle_protocol=protocol, _use_new_zipfile_serialization=zip_format)
    ckpt = open_checkpoint(path)
    assert ckpt.format == ("pytorch-zip" if zip_format else "pytorch-legacy")
    assert all(torch.equal(ckpt.load_tensor(k), v) for k, v in state.items())
    code, data = run_json("inspect", path)
    assert code == 0 and data["num_params"] == 8 and data["security"]["verdict"] == "safe"


class _Payload:
    def __reduce__(self) -> tuple:
        import os

        return (os.system, ("echo should-not-run",))


def test_restricted_unpickler_refuses_code_even_without_the_scan() -> None:
    data = pickle.dumps({"x": _Payload()}, protocol=4)
    with pytest.raises(pickle.UnpicklingError, match="refused to import"):
        RestrictedPickle.load(io.BytesIO(data))
    assert RestrictedPickle.load(io.BytesIO(pickle.dumps({"a": 1}, protocol=5))) == {"a": 1}


def _model_zoo_pickle(path: Path, protocol: int) -> dict[str, object]:
    """A Detectron2 model-zoo style file: `pickle.dump` of numpy arrays under "model", beside metadata."""
    import numpy as np

    rng = np.random.default_rng(0)
    model = {
        "backbone.stem.conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "backbone.stem.conv1.norm.bias": rng.standard_normal(4).astype(np.float16),
        "roi_heads.cls_score.bias": np.zeros(5, np.float64),
        "proposal.transposed": np.arange(6, dtype=np.int32).reshape(2, 3).T,  # not contiguous
        "stem.num_batches_tracked": np.array(7, np.int64),  # 0-d
        "mask": np.array([True, False]),
    }
    with open(path, "wb") as handle:
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, handle,
                    protocol=protocol)
    return model


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_plain_pickle_of_numpy_arrays_is_read_and_converted(tmp_path: Path, protocol: int) -> None:
    import numpy as np
    from safetensors.numpy import load_file

    path = tmp_path / "model_final.pkl"
    model = _model_zoo_pickle(path, protocol)
    code, data = run_json("inspect", path)
    assert code == 0, data
    rows = {row["name"]: (row["shape"], row["dtype"]) for row in data["tensors"]}
    assert rows == {name: (list(value.shape), str(value.dtype)) for name, value in model.items()}
    assert data["nested_key"] == "model"
    assert any("plain Python pickle (pickle.dump), not a torch.save file" in w for w in data["warnings"])
    code, _ = run_json("convert", path, "-o", tmp_path / "model.safetensors")
    assert code == 0
    written = load_file(str(tmp_path / "model.safetensors"))
    assert written.keys() == model.keys()
    for name, value in model.items():
        assert written[name].shape == value.shape and written[name].dtype == value.dtype
        assert np.array_equal(written[name], value)


def test_a_truncated_plain_pickle_is_one_line(tmp_path: Path) -> None:
    from tests.helpers import run_cli

    path = tmp_path / "model_final.pkl"
    _model_zoo_pickle(path, 4)
    path.write_bytes(path.read_bytes()[:-40])
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2, result.stderr


def test_big_endian_and_read_only_arrays_of_a_plain_pickle(tmp_path: Path) -> None:
    """Protocol 5 keeps a big-endian array's byte order (torch reads native order only) and makes read-only
    arrays over the pickle's bytes: both become ordinary tensors with the same values, no warning."""
    import numpy as np

    path = tmp_path / "weights.pkl"
    values = np.arange(6, dtype=">f4").reshape(2, 3)
    with open(path, "wb") as handle:
        pickle.dump({"model": {"big": values, "small": np.arange(3, dtype="<i8")}}, handle, protocol=5)
    checkpoint = open_checkpoint(path)
    big = checkpoint.load_tensor("big")
    assert big.dtype == torch.float32 and big.tolist() == values.astype("<f4").tolist()
    assert checkpoint.load_tensor("small").tolist() == [0, 1, 2]
    from tests.helpers import run_cli

    result = run_cli("inspect", str(path))
    assert result.exit_code == 0 and "not writable" not in result.stderr and "Traceback" not in result.stderr


def test_a_tensor_state_that_writes_through_a_property_is_refused(tmp_path: Path) -> None:
    """`_rebuild_from_type_v2(..., state={"real": 65})` over a tensor made from the interpreter's shared b"\\x00"
    would write into that object for the whole process; the restricted unpickler refuses such a state."""
    import numpy as np
    import torch._tensor
    import torch._utils

    from weightdoctor.errors import UnsafePickle

    class Reduce:
        def __init__(self, func: object, args: tuple) -> None:
            self.func, self.args = func, args

        def __reduce__(self) -> tuple:
            return self.func, self.args

    array = Reduce(np._core.numeric._frombuffer, (b"\x00", np.dtype("u1"), (1,), "C"))
    tensor = Reduce(torch._tensor._rebuild_from_type_v2, (
        torch._utils._rebuild_device_tensor_from_numpy, torch.Tensor, (array, torch.uint8, "cpu", False),
        {"real": 65}))
    path = tmp_path / "singleton.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": tensor}}, protocol=4))
    with pytest.raises(UnsafePickle, match="refused a tensor state that sets"):
        open_checkpoint(path)
    assert bytes([0]) == b"\x00"
