"""Review of the tesec / ux14 / docsjson merges: hostile `_extra_state` tensors that TransformerEngine's
set_extra_state would `pickle.loads` but the scan let through, and the output-side changes around them."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli, run_json
from weightdoctor.security.extra_state import pickle_loads_problem
from weightdoctor.security.scan import scan_bytes

# A protocol 0 pickle that calls os.system (only ever written here, never unpickled).
SHELL = b"cposix\nsystem\n(S'echo the extra state ran'\ntR."


class _RunsAShellCommand:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, ("echo the extra state ran",)


def _hostile_state() -> bytes:
    return pickle.dumps({"extra_fp8_variables": {"x": _RunsAShellCommand()}})


def _as(data: bytes, dtype: torch.dtype, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """The bytes as a tensor of `dtype` (padded with zeros past the pickle's STOP, which pickle.loads never
    reads), reshaped: what TE's `pickle.loads(state.detach().cpu().numpy().tobytes())` reads back whole."""
    size = torch.empty((), dtype=dtype).element_size()
    padded = data + b"\0" * (-len(data) % (size * 2))
    tensor = torch.frombuffer(bytearray(padded), dtype=torch.uint8).view(dtype).clone()
    return tensor.reshape(shape) if shape is not None else tensor


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize(("dtype", "two_d"), [(torch.float32, False), (torch.uint8, True), (torch.int64, True),
                                              (torch.float16, False)])
def test_an_extra_state_pickle_in_any_numpy_dtype_or_shape_is_refused(tmp_path: Path, suffix: str,
                                                                      dtype: torch.dtype, two_d: bool) -> None:
    """TE's set_extra_state reads `state.detach().cpu().numpy().tobytes()`: any dtype numpy holds and any shape
    give it the same bytes, so a float32 or 2-D `_extra_state` ran its pickle while the scan (1-D uint8 / int8
    only) said safe."""
    extra = _as(_hostile_state(), dtype)
    if two_d:
        extra = extra.reshape(2, -1)
    assert extra.numpy().tobytes().startswith(_hostile_state())  # what TE reads
    state = {"decoder.layers.0.linear_fc1.weight": torch.ones(2, 2), "decoder.layers.0.linear_fc1._extra_state": extra}
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and result.stdout == "", result.stdout
    dtype_name = str(dtype).removeprefix("torch.")
    assert result.stderr.startswith(f"error: {path}: dangerous: the {dtype_name} tensor "
                                    "decoder.layers.0.linear_fc1._extra_state holds a pickle that names posix.system"
                                    ), result.stderr


def test_a_bfloat16_extra_state_is_not_read_as_a_pickle(tmp_path: Path) -> None:
    """numpy has no bfloat16: TE's `.numpy()` raises before any pickle.loads, so its bytes are not judged."""
    path = tmp_path / "model.safetensors"
    save_file({"m._extra_state": _as(_hostile_state(), torch.bfloat16), "m.weight": torch.ones(2)}, path)
    code, report = run_json("inspect", str(path))
    assert code == 0 and report["security"]["verdict"] == "safe", report


def _mutated_bytearray_call(safe: bytes, hostile: bytes) -> bytes:
    """`torch.storage._load_from_bytes(bytearray(safe))`, the bytearray rewritten to `hostile` by SETITEMS (which
    pickle.loads runs as `ba[i] = v`) between its literal and the call."""
    out = b"\x80\x05ctorch.storage\n_load_from_bytes\n\x96" + struct.pack("<Q", len(safe)) + safe + b"("
    for index, (was, now) in enumerate(zip(safe, hostile, strict=True)):
        if was != now:
            out += b"J" + struct.pack("<i", index) + b"J" + struct.pack("<i", now)
    return out + b"u\x85R."


def test_a_load_from_bytes_argument_rewritten_after_its_literal_is_refused() -> None:
    """The scan judged the bytearray's literal (a harmless pickle of a string), while pickle.loads hands
    _load_from_bytes, and so torch.load(weights_only=False), the bytes SETITEMS wrote over it."""
    safe = next(blob for k in range(len(SHELL)) if len(blob := pickle.dumps("A" * k, protocol=2)) == len(SHELL))
    assert not scan_bytes(safe).unsafe and scan_bytes(SHELL).unsafe
    data = _mutated_bytearray_call(safe, SHELL)

    class Recorder(pickle.Unpickler):  # what the real unpickler passes to the call, with the call replaced
        def find_class(self, module: str, name: str) -> Any:
            assert (module, name) == ("torch.storage", "_load_from_bytes")
            return bytes

    import io

    assert Recorder(io.BytesIO(data)).load() == SHELL
    problem = pickle_loads_problem(data)
    assert problem is not None and problem[0] == "dangerous", problem
    assert "torch.storage._load_from_bytes" in problem[1]
    # The literal bytes a genuine state holds are still accepted.
    assert pickle_loads_problem(pickle.dumps({"scale": torch.ones(2)})) is None


def test_a_hostile_pickle_padded_past_the_size_bound_is_refused(tmp_path: Path) -> None:
    """pickle.loads stops at the first STOP: zeros after it made the tensor 17 MiB, past the bound, and the file
    read as safe with one warning (exit 0 under --fail-on warn, a CI gate passed it)."""
    padded = _as(_hostile_state() + b"\0" * (17 << 20), torch.uint8)
    path = tmp_path / "model.safetensors"
    save_file({"m._extra_state": padded, "m.weight": torch.ones(2)}, path)
    result = run_cli("inspect", str(path), "--fail-on", "warn")
    assert result.exit_code == 2 and result.stdout == "", result.stdout
    assert result.stderr.startswith(f"error: {path}: dangerous: the uint8 tensor m._extra_state holds a pickle that "
                                    "names posix.system"), result.stderr


def test_a_large_extra_state_whose_first_pickle_is_safe_is_checked(tmp_path: Path) -> None:
    """A safe pickle that stops within the bytes read is judged whole: no 'not checked' warning."""
    padded = _as(pickle.dumps({"scale": 1.0}) + b"\0" * (17 << 20), torch.uint8)
    path = tmp_path / "model.safetensors"
    save_file({"m._extra_state": padded, "m.weight": torch.ones(2)}, path)
    code, report = run_json("inspect", str(path))
    assert code == 0 and report["security"]["verdict"] == "safe", report
    assert not any("_extra_state" in warning for warning in report["warnings"]), report["warnings"]


def test_a_pickle_behind_a_text_line_longer_than_the_scanner_reads_is_refused(tmp_path: Path) -> None:
    """The walk reads text lines up to 1 MiB; a protocol 0 string one byte longer stopped it ('no newline found'),
    and bytes not starting with PROTO that stop parsing were left alone, while pickle.loads reads the line whole
    and goes on to the os.system call after it."""
    data = b"S'" + b"A" * (1 << 20) + b"'\n0" + SHELL
    problem = pickle_loads_problem(data)
    assert problem is not None and problem[0] == "suspicious", problem
    assert "line" in problem[1] and "1,048,576" in problem[1], problem
    # Bytes that are no pickle and end without a newline are still left alone.
    assert pickle_loads_problem(b"S'not a pickle") is None
    path = tmp_path / "model.safetensors"
    save_file({"m._extra_state": _as(data, torch.uint8), "m.weight": torch.ones(2)}, path)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and result.stdout == "", result.stdout
    assert result.stderr.startswith(f"error: {path}: suspicious: the uint8 tensor m._extra_state holds "), result.stderr


@pytest.mark.parametrize("legacy", [False, True])
def test_an_extra_state_pickle_in_an_entry_beside_the_state_dict_read_is_refused(tmp_path: Path,
                                                                                 legacy: bool) -> None:
    """Megatron-core's virtual-pipeline save keeps `model0`, `model1`, ... (one model chunk each, all loaded by
    Megatron's load_checkpoint), a trainer its EMA beside `model`: only the state dict read was scanned, so an
    os.system pickle in model1's `_extra_state` left the file safe."""
    genuine = _as(pickle.dumps({"extra_fp8_variables": {"num_gemms": 1}}), torch.uint8)
    chunk = {"decoder.layers.0.linear_fc1.weight": torch.ones(2, 2),
             "decoder.layers.0.linear_fc1._extra_state": genuine}
    hostile = {**chunk, "decoder.layers.0.linear_fc1._extra_state": _as(_hostile_state(), torch.uint8)}
    path = tmp_path / "model_optim_rng.pt"
    torch.save({"model0": chunk, "model1": hostile, "iteration": 10, "checkpoint_version": 3.0}, path,
               _use_new_zipfile_serialization=not legacy)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and result.stdout == "", result.stdout
    assert result.stderr.startswith(f"error: {path}: dangerous: the uint8 tensor "
                                    "model1.decoder.layers.0.linear_fc1._extra_state holds a pickle that names "
                                    "posix.system"), result.stderr
    # The same file with a genuine state in both chunks (each its own tensors, so both are read) reads as before.
    torch.save({"model0": chunk, "model1": {name: value.clone() for name, value in chunk.items()}, "iteration": 10},
               path, _use_new_zipfile_serialization=not legacy)
    code, report = run_json("inspect", str(path))
    assert code == 0 and report["security"]["verdict"] == "safe", report
