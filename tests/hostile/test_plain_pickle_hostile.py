"""Hostile and odd plain pickles (pickle.dump files, Detectron2 style) and torch.save files that use only the
globals torch calls safe in ways no weights file does: each is read correctly or refused in one line."""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers import run_cli, run_json
from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.checkpoint.pytorch_format import RestrictedPickle
from weightdoctor.security import scan_bytes


class Reduce:
    """Pickles as `func(*args)` (then BUILD with `state` when given): any call a hostile file can write."""

    def __init__(self, func: Any, args: tuple, state: Any = None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self) -> tuple:
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _write(path: Path, value: Any, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    return path


def _one_line_refusal(path: Path, *words: str) -> str:
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2, result.stdout
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def test_shared_and_cyclic_containers_cost_their_size(tmp_path: Path) -> None:
    """Forty levels of one dict named twice (2^40 paths) and a list holding itself: read at once, arrays
    named twice stay one tensor."""
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    dag: dict[str, Any] = {"leaf": weight}
    for _ in range(40):
        dag = {"a": dag, "b": dag}
    loop: list[Any] = []
    loop.append(loop)
    model = {"w": weight, "tied": weight, "b": np.ones(2, np.float32)}
    path = _write(tmp_path / "model_final.pkl", {"model": model, "dag": dag, "loop": loop})
    checkpoint = open_checkpoint(path)
    assert sorted(t.name for t in checkpoint.tensors) == ["b", "tied", "w"]
    assert checkpoint.load_tensor("w").tolist() == weight.tolist()
    assert sorted(map(sorted, checkpoint.alias_groups())) == [["tied", "w"]]


def test_long_values_beside_the_weights_are_described_by_size(tmp_path: Path) -> None:
    path = _write(tmp_path / "model_final.pkl", {
        "model": {"w": np.ones(2, np.float32)}, "blob": b"x" * 5_000_000, "text": "y" * 100, "tag": "v1"})
    code, data = run_json("inspect", path)
    assert code == 0
    assert data["other_entries"] == ["blob (bytes of 5,000,000 bytes)", "text (str of 100 characters)",
                                     "tag (str: 'v1')"]


@pytest.mark.parametrize("case", ["ndarray", "reconstruct-unfilled", "bytearray-size", "bytes-size", "from-type",
                                  "legacy-tensor"])
def test_calls_that_make_unfilled_or_huge_memory_are_refused(tmp_path: Path, case: str) -> None:
    """Safe globals called as no weights file calls them: `numpy.ndarray((n,), dtype)` and `_reconstruct`
    without BUILD give memory nothing fills (bytes of this process, written out by convert), `bytearray(n)`
    allocates n bytes from a 10-byte number, `_rebuild_from_type_v2` calls whatever it is given."""
    reconstruct = np._core.multiarray._reconstruct
    value = {
        "ndarray": Reduce(np.ndarray, ((1000,), np.dtype("f4"))),
        "reconstruct-unfilled": Reduce(reconstruct, (np.ndarray, (1000,), b"b")),
        "bytearray-size": Reduce(bytearray, (1 << 40,)),
        "bytes-size": Reduce(bytes, (1 << 40,)),
        "from-type": Reduce(torch._tensor._rebuild_from_type_v2, (np.ndarray, torch.Tensor, ((8,), "f4"), {})),
        "legacy-tensor": Reduce(torch.FloatTensor, (1000,)),
    }[case]
    data = pickle.dumps({"model": {"w": value, "b": np.ones(2, np.float32)}}, protocol=4)
    report = scan_bytes(data)
    assert report.verdict == "suspicious" and any(" calls " in p.message for p in report.problems), report
    path = tmp_path / "model_final.pkl"
    path.write_bytes(data)
    _one_line_refusal(path, "calls")
    # The unpickler refuses the same calls by itself (the second line of defence, without the scan).
    with pytest.raises(pickle.UnpicklingError, match="refused: the pickle"):
        RestrictedPickle.load(io.BytesIO(data))


def test_a_torch_save_file_calling_a_storage_type_is_refused(tmp_path: Path) -> None:
    """torch's own weights_only loader allows `torch.FloatStorage(n)` (uninitialized memory); the scan does not."""
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(2), "x": Reduce(torch.FloatStorage, (1 << 20,))}, path)
    _one_line_refusal(path, "torch.FloatStorage directly")


def test_ordinary_arrays_tensors_and_buffers_still_pass() -> None:
    """The rules refuse nothing real pickles write: numpy's own array reduction, scalars, bytearrays, bytes."""
    for protocol in (0, 2, 4, 5):
        data = pickle.dumps({"a": np.ones(3, np.float32), "e": np.zeros(0, np.float32), "s": np.float32(2),
                             "buf": bytearray(b"xy"), "raw": b""},
                            protocol=protocol)
        report = scan_bytes(data)
        assert report.verdict == "safe", (protocol, report.summary())
        loaded = RestrictedPickle.load(io.BytesIO(data))
        assert loaded["a"].tolist() == [1, 1, 1] and loaded["buf"] == bytearray(b"xy") and loaded["raw"] == b""


def test_meta_tensors_are_listed_and_their_values_refused(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save({"a.weight": torch.empty(4, 4, device="meta"), "b.weight": torch.ones(3)}, path)
    code, data = run_json("inspect", path)
    assert code == 0 and [t["shape"] for t in data["tensors"]] == [[4, 4], [3]]
    assert any("1 tensor on the meta device (a.weight)" in w for w in data["warnings"]), data["warnings"]
    for command in (["inspect", "--stats"], ["check-dtype"], ["convert", "-o", str(tmp_path / "o.safetensors")]):
        result = run_cli(command[0], str(path), *command[1:])
        assert result.exit_code == 2, (command, result.stdout)
        assert "'a.weight' is on the meta device" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o.safetensors").exists()


def test_an_ordered_dict_state_that_hides_its_items_is_refused(tmp_path: Path) -> None:
    """BUILD may give an OrderedDict attributes (torch's `_metadata`), not an `items` that hides its tensors."""
    hidden = Reduce(collections.OrderedDict, ([("w", np.ones(2, np.float32))],), (None, {"items": []}))
    _one_line_refusal(_write(tmp_path / "slots.pkl", {"model": hidden}), "refused BUILD on OrderedDict")
    as_dict = Reduce(collections.OrderedDict, ([("w", np.ones(2, np.float32))],), {"keys": 1})
    _one_line_refusal(_write(tmp_path / "dict.pkl", {"model": as_dict}), "refused BUILD on OrderedDict")
    # torch's weights_only loader updates the dict's __dict__ with any state: caught after loading.
    state = collections.OrderedDict(w=torch.ones(2))
    state.items = collections.OrderedDict  # type: ignore[method-assign]
    torch.save(state, tmp_path / "torch.bin")
    _one_line_refusal(tmp_path / "torch.bin", "hide its own methods")
    # A state dict's real attribute is still read.
    real = collections.OrderedDict(w=torch.ones(2))
    real._metadata = {"": {"version": 1}}  # type: ignore[attr-defined]
    torch.save(real, tmp_path / "real.bin")
    assert [t.name for t in open_checkpoint(tmp_path / "real.bin").tensors] == ["w"]


def test_a_second_pickle_after_the_first_is_reported(tmp_path: Path) -> None:
    """pickle.load reads the first pickle only: weights hidden in a second one would be invisible."""
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": np.ones(2, np.float32)}}, protocol=2)
                     + pickle.dumps({"model": {"v": np.ones(2, np.float32)}}, protocol=2))
    _one_line_refusal(path, "follow the end of the checkpoint, holding a pickle")


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_old_protocol_plain_pickles_with_empty_arrays_are_read(tmp_path: Path, protocol: int) -> None:
    """Protocols 0 and 1 have no PROTO opcode to recognise; protocols 0-2 write an empty array's data as `bytes()`."""
    model = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "empty": np.zeros(0, np.float32),
             "steps": np.arange(3)}
    path = _write(tmp_path / "model_final.pkl", {"model": model, "step": 3}, protocol)
    code, data = run_json("inspect", path)
    assert code == 0, data
    assert {t["name"]: t["shape"] for t in data["tensors"]} == {"w": [2, 3], "empty": [0], "steps": [3]}
    assert data["security"]["verdict"] == "safe" and data["other_entries"] == ["step (int: 3)"]
    assert open_checkpoint(path).load_tensor("w").tolist() == model["w"].tolist()


def test_a_nested_key_with_dots_is_not_listed_beside_itself(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save({"model.ema": {"w": torch.ones(2), "b": torch.zeros(2)}, "epoch": 4}, path)
    code, data = run_json("inspect", path)
    assert code == 0 and data["nested_key"] == "model.ema"
    assert data["other_entries"] == ["epoch (int: 4)"]


def test_saved_parameters_read_without_autograd_warnings(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.nn.Parameter(torch.randn(8, 8)), "b": torch.nn.Parameter(torch.zeros(8))}, path)
    assert not open_checkpoint(path).load_tensor("w").requires_grad
    for command in (["inspect", "--stats"], ["check-dtype"], ["diff-keys", str(path), "--values"],
                    ["convert", "-o", str(tmp_path / "w.safetensors")]):
        result = run_cli(command[0], str(path), *command[1:])
        assert result.exit_code in (0, 1), (command, result.stderr)
        assert "Warning" not in result.stderr and "requires_grad" not in result.stderr, result.stderr


def test_out_of_band_buffers_and_malformed_streams_are_corrupt_not_unsafe(tmp_path: Path) -> None:
    """A malformed stream is a damaged file (CorruptCheckpoint), not a refused one; protocol 5's out-of-band
    buffers (kept outside the file by a buffer_callback) are said so."""
    buffers: list[Any] = []
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": np.ones(4, np.float32)}}, protocol=5,
                                  buffer_callback=buffers.append))
    assert buffers
    message = _one_line_refusal(path, "out-of-band buffers", "the file alone does not hold the data")
    assert "suspicious" not in message and "dangerous" not in message


def test_a_torchscript_archive_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    _one_line_refusal(path, "this is a TorchScript archive, torch.jit.save", "nothing was unpickled")
