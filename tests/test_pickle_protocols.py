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
