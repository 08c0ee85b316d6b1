"""perfcheck2: the io.BytesIO walk every pickle checkpoint gets (`_buffers_in`) builds no path for a tensor.

Measured on 2026-12-05 (docs/bench-many-tensors.md): the walk built a dotted path string for each of a state dict's
100,000 tensors only to skip the tensor when it was popped, 136 ms a 100,000-tensor legacy `.bin`; tensors are now
left out before their path is made (15 ms). What the walk finds, and where it says it is, is unchanged.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli
from weightdoctor.checkpoint import pytorch_format
from weightdoctor.checkpoint.pytorch_format import load_pickle


class _RunsAShellCommand:
    """Pickled as a call to os.system (never unpickled here: the test only writes it)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, ("echo the nested pickle ran",)


def _state(count: int, buffer: bytes) -> dict[str, object]:
    generator = torch.Generator().manual_seed(0)
    layers: dict[str, object] = {f"layers.{i}.fc1.weight": torch.randn(4, generator=generator) for i in range(count)}
    layers["layers.3.fc1._extra_state"] = io.BytesIO(buffer)
    # Tensors inside lists and tuples too: the walk enters both.
    return {"model": layers, "iteration": 7, "extra": [torch.ones(2), ("x", torch.zeros(1), io.BytesIO(buffer))]}


@pytest.mark.parametrize("legacy", [False, True])
def test_the_buffer_walk_names_no_tensor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, legacy: bool) -> None:
    """Each path the walk builds is one of a value that is no tensor and may hold a buffer: 200 tensors, and only the
    texts of the dicts' other keys whose values are containers or bytes are made (before: one per tensor, 200 more)."""
    path = tmp_path / "model.pt"
    torch.save(_state(200, pickle.dumps({"scale": 1.0})), path, _use_new_zipfile_serialization=not legacy)
    named: list[str] = []
    walking: list[bool] = []  # _key_text's calls made by the walk only (a refusal elsewhere names keys too)
    walked: list[list[tuple[str, bytes, bool]]] = []
    key_text, buffers_in = pytorch_format._key_text, pytorch_format._buffers_in

    def counting(key: object) -> str:
        if walking:
            named.append(str(key))
        return key_text(key)

    def recording(obj: object) -> list[tuple[str, bytes, bool]]:
        walking.append(True)
        try:
            walked.append(buffers_in(obj))
        finally:
            walking.clear()
        return walked[-1]

    monkeypatch.setattr(pytorch_format, "_key_text", counting)
    monkeypatch.setattr(pytorch_format, "_buffers_in", recording)
    contents = load_pickle(path, "pytorch-legacy" if legacy else "pytorch-zip")
    assert len(contents.state_dict) == 200, list(contents.state_dict)[:5]
    assert len(walked) == 1
    found = walked[0]
    # "iteration" (an int) is no longer named either: the walk leaves out values that cannot hold a buffer (redteam44)
    assert sorted(named) == ["extra", "layers.3.fc1._extra_state", "model"], named
    assert [(where, data) for where, data, _ in found] == [
        ("extra.1.2", pickle.dumps({"scale": 1.0})), ("model.layers.3.fc1._extra_state", pickle.dumps({"scale": 1.0}))]


def test_a_hostile_buffer_among_many_tensors_is_still_refused(tmp_path: Path) -> None:
    """The refusal the walk leads to is the one it gave, naming the buffer's place, in a list as in a dict."""
    path = tmp_path / "model.pt"
    torch.save(_state(50, pickle.dumps(_RunsAShellCommand())), path)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and result.stdout == "", result.stdout
    assert result.stderr.startswith(f"error: {path}: dangerous: the io.BytesIO at extra.1.2 holds a pickle that "
                                    "names posix.system"), result.stderr
