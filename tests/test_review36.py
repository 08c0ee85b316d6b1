"""Review 36: the scans of data a loader unpickles later (TE `_extra_state`, io.BytesIO buffers, DCP shards)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from tests.helpers import RunsAShellCommand, one_error_line, run_cli


def _torch_saved(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class _BufferBuiltByACall:
    """An io.BytesIO pickled as the call `io.BytesIO(payload)` (REDUCE), not as pickle writes one (its state)."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return io.BytesIO, (self.payload,)


def test_a_bytesio_built_from_its_argument_holding_a_hostile_archive_is_refused(tmp_path: Path) -> None:
    # TE before 1.x torch.loads the buffer: built by the call, it holds the archive that calls os.system.
    payload = _torch_saved({"scale": RunsAShellCommand()})
    path = tmp_path / "model.pt"
    torch.save({"layer.weight": torch.ones(2), "layer._extra_state": _BufferBuiltByACall(payload)}, path)
    loaded = torch.load(path, weights_only=False)["layer._extra_state"]
    assert isinstance(loaded, io.BytesIO) and loaded.getvalue() == payload  # what TE would torch.load
    line = one_error_line(run_cli("inspect", str(path)))
    assert "dangerous: the io.BytesIO at layer._extra_state holds a pickle that names posix.system" in line, line


def test_a_bytesio_built_from_its_argument_holding_plain_data_is_read(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"layer.weight": torch.ones(2),
                "layer._extra_state": _BufferBuiltByACall(_torch_saved({"scale": torch.ones(1)}))}, path)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 0, result.stderr
    assert "layer.weight" in result.stdout
