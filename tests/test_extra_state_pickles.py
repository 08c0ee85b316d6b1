"""TransformerEngine 1.x and later keep each module's FP8 state as `<module>._extra_state`, a 1-D uint8 tensor of
`pickle.dumps(state)`, and its set_extra_state `pickle.loads` the tensor's bytes when the model loads the state
dict. A code-running pickle in such a tensor left a .pt (whose own pickle is clean) and a .safetensors (which holds
no pickle) called safe, by every command."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import run_cli, run_json
from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.errors import UnsafePickle
from weightdoctor.security.extra_state import pickle_loads_problem

TE_NOTE = "(TransformerEngine's set_extra_state pickle.loads an _extra_state tensor's bytes when the model loads"


class _RunsAShellCommand:
    """Pickled as a call to os.system (never unpickled here: the tests only write it)."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, ("echo the extra state ran",)


class _TorchLoadsBytes:
    """Pickled as torch.storage._load_from_bytes(<bytes>), as plain pickle writes a tensor's storage."""

    def __init__(self, inner: bytes) -> None:
        self.inner = inner

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return torch.storage._load_from_bytes, (self.inner,)


def _te_tensor(state: object, dtype: torch.dtype = torch.uint8, protocol: int | None = None) -> torch.Tensor:
    """What TransformerEngine's get_extra_state returns since 1.x: the state pickled into a uint8 tensor."""
    return torch.frombuffer(bytearray(pickle.dumps(state, protocol=protocol)), dtype=torch.uint8).view(dtype)


def _genuine_state() -> dict[str, Any]:
    """A TE module's FP8 state: CPU tensors of scales and amax histories, and its plain picklable FP8 variables."""
    return {"forward": {"scale_fwd": torch.ones(3), "amax_history_fwd": torch.zeros(16, 3),
                        "extra_fp8_variables": {"num_gemms": 1, "fp8_checkpoint": True, "fp8_max_fwd": 448.0,
                                                "name": "linear_fc1", "recipe_margin": (0, 1)}},
            "backward": {"scale_bwd": torch.ones(2), "amax_history_bwd": torch.zeros(16, 2),
                         "extra_fp8_variables": {"num_gemms": 1}}}


def _state_dict(extra: torch.Tensor) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"decoder.layers.0.mlp.linear_fc1.weight": torch.randn(8, 4),
            "decoder.layers.0.mlp.linear_fc1._extra_state": extra,
            "decoder.layers.0.mlp.linear_fc2.weight": torch.randn(4, 8),
            "decoder.layers.0.mlp.linear_fc2._extra_state": _te_tensor(_genuine_state())}


def _write(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file(state, path)  # a converted Megatron-LM / NeMo checkpoint keeps the byte tensors
    else:
        torch.save({"model": state, "iteration": 10}, path)
    return path


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_genuine_transformer_engine_state_reads_as_safe(tmp_path: Path, suffix: str) -> None:
    extra = _te_tensor(_genuine_state())
    path = _write(_state_dict(extra), tmp_path / f"model{suffix}")
    code, report = run_json("inspect", str(path))
    assert code == 0, report
    assert report["security"]["verdict"] == "safe"
    assert {t["name"]: t["dtype"] for t in report["tensors"] if "_extra_state" in t["name"]} == {
        "decoder.layers.0.mlp.linear_fc1._extra_state": "uint8",
        "decoder.layers.0.mlp.linear_fc2._extra_state": "uint8"}
    assert not any("_extra_state" in warning for warning in report["warnings"]), report["warnings"]
    out = tmp_path / "out.safetensors"
    result = run_cli("convert", str(path), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert torch.equal(load_file(out)["decoder.layers.0.mlp.linear_fc1._extra_state"], extra)


def _commands(path: Path, other: Path, out: Path) -> list[tuple[str, ...]]:
    return [("inspect", str(path)), ("inspect", str(path), "--json"),
            ("convert", str(path), "-o", str(out)),
            ("diff-keys", str(other), str(path)), ("diff-keys", str(path), str(other), "--json"),
            ("check-dtype", str(path)), ("plan-devices", str(path), "--gpu", "1GB")]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_code_running_pickle_in_an_extra_state_tensor_is_refused_by_every_command(tmp_path: Path,
                                                                                     suffix: str) -> None:
    hostile = _genuine_state()
    hostile["forward"]["extra_fp8_variables"]["x"] = _RunsAShellCommand()
    bad = _write(_state_dict(_te_tensor(hostile)), tmp_path / f"bad{suffix}")
    good = _write(_state_dict(_te_tensor(_genuine_state())), tmp_path / f"good{suffix}")
    out = tmp_path / "out.safetensors"
    for command in _commands(bad, good, out):
        result = run_cli(*command)
        assert result.exit_code == 2 and result.stdout == "", (command, result.stdout)
        assert result.stderr.startswith(f"error: {bad}: dangerous: the uint8 tensor "
                                        "decoder.layers.0.mlp.linear_fc1._extra_state holds a pickle that names "
                                        f"posix.system {TE_NOTE}"), (command, result.stderr)
        assert "\n" not in result.stderr.strip(), result.stderr
    assert not out.exists()


def test_a_legacy_torch_save_and_an_int8_tensor_are_read_and_refused_alike(tmp_path: Path) -> None:
    """A legacy-format file's tensors come from torch.load (no byte run to read); an int8 view of the same bytes is
    what pickle.loads reads all the same."""
    path = tmp_path / "legacy.pt"
    torch.save(_state_dict(_te_tensor({"x": _RunsAShellCommand()}, dtype=torch.int8)), path,
               _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafePickle, match=r"the int8 tensor decoder\.layers\.0\.mlp\.linear_fc1\._extra_state "
                                           r"holds a pickle that names posix\.system") as caught:
        open_checkpoint(path)
    assert caught.value.path == str(path)


def test_a_protocol_0_pickle_and_one_hidden_in_a_nested_torch_load_are_refused(tmp_path: Path) -> None:
    """pickle.loads reads any protocol, not only those that start with PROTO; and the `_load_from_bytes` every
    tensor's storage is pickled with torch.loads its bytes (weights_only=False): they are scanned too."""
    text = _write(_state_dict(_te_tensor({"x": _RunsAShellCommand()}, protocol=0)), tmp_path / "p0.safetensors")
    with pytest.raises(UnsafePickle, match="names posix.system"):
        open_checkpoint(text)
    nested = _TorchLoadsBytes(pickle.dumps(_RunsAShellCommand(), protocol=2))
    path = _write(_state_dict(_te_tensor({"scale_fwd": torch.ones(2), "x": nested})), tmp_path / "nested.safetensors")
    with pytest.raises(UnsafePickle, match=r"whose torch\.storage\._load_from_bytes torch\.loads bytes that are not "
                                           r"safe \(dangerous: posix\.system"):
        open_checkpoint(path)


def test_a_uint8_extra_state_that_is_no_pickle_reads_fine(tmp_path: Path) -> None:
    """Bytes that are not a pickle (pickle.loads fails on them having imported nothing) are not refused, nor is a
    tensor of another dtype or shape under that name."""
    state = {"a._extra_state": torch.arange(256, dtype=torch.uint8).flip(0),  # starts 0xff: no pickle opcode
             "b._extra_state": torch.frombuffer(bytearray(b"fp8 scaling state, not pickled"), dtype=torch.uint8),
             "c._extra_state": torch.zeros(0, dtype=torch.uint8),  # TE's "no FP8 state"
             "d._extra_state": torch.full((4, 4), 0x80, dtype=torch.uint8),  # 2-D: not TE's byte tensor
             "e.weight": torch.ones(2)}
    path = _write(state, tmp_path / "model.safetensors")
    code, report = run_json("inspect", str(path))
    assert code == 0, report
    assert report["security"]["verdict"] == "safe" and len(report["tensors"]) == 5
    assert not any("_extra_state" in warning for warning in report["warnings"]), report["warnings"]
    assert pickle_loads_problem(bytes(state["b._extra_state"].numpy())) is None


def test_a_pickle_no_pickler_writes_is_refused_as_suspicious() -> None:
    """Bytes that start with PROTO but do not parse: a state TE would hand to pickle.loads, not vouched for."""
    assert pickle_loads_problem(b"\x80\x04\x95garbage") == (
        "suspicious", "starts like a pickle but cannot be parsed (not enough data in stream to read uint8)")
    assert pickle_loads_problem(pickle.dumps(_genuine_state())) is None
    # A global the policy does not know is suspicious, as in any pickle; so is a call making a gigabyte nothing fills.
    assert pickle_loads_problem(b"\x80\x02cmy_te_plugin\nRecipe\n)R.") == (
        "suspicious", "holds a pickle that names my_te_plugin.Recipe")
    assert pickle_loads_problem(b"\x80\x02cbuiltins\nbytearray\nJ\x00\x00\x00@\x85R.") == (
        "suspicious", "holds a pickle that, at byte 28, REDUCE calls builtins.bytearray(1073741824): a buffer sized "
        "by a number, which no pickled value needs")


def test_a_100_mb_extra_state_pickle_is_not_read_whole_and_not_vouched_for(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A pickle still running past the bytes read was a warning ("not checked"), with the verdict `safe` and exit 0
    under --fail-on warn: padding a hostile pickle's tail past the bound passed a CI gate. No TransformerEngine state
    comes near the bound, so it is refused as suspicious, after reading only its first bytes."""
    long_pickle = pickle.dumps(b"x" * (100 << 20), protocol=4)
    big = torch.frombuffer(bytearray(long_pickle), dtype=torch.uint8)
    path = _write({"layers.0.fc1._extra_state": big, "layers.0.fc1.weight": torch.ones(2, 2)},
                  tmp_path / "model.safetensors")
    del big, long_pickle
    from weightdoctor.checkpoint import safetensors_format

    read: list[int] = []
    real = safetensors_format.read_tensor_bytes

    def counting(*args: Any) -> bytearray:
        data = real(*args)
        read.append(len(data))
        return data

    monkeypatch.setattr(safetensors_format, "read_tensor_bytes", counting)
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 2 and result.stdout == "", result.stdout
    assert read == []  # not read whole (only its first 16 MiB, as a byte run)
    line = " ".join(result.stderr.split())
    assert line.startswith(f"error: {path}: suspicious: the uint8 tensor layers.0.fc1._extra_state holds a pickle "
                           "that runs past the first 16,777,216 bytes weightdoctor scans of one"), line
    assert "what the rest imports is not known" in line, line
    # Bytes that start like a pickle and stop parsing at once are refused at any size, as below the bound.
    head = torch.zeros(100 << 20, dtype=torch.uint8)
    head[:2] = torch.tensor([0x80, 0x04], dtype=torch.uint8)
    _write({"layers.0.fc1._extra_state": head}, tmp_path / "junk.safetensors")
    result = run_cli("inspect", str(tmp_path / "junk.safetensors"))
    assert result.exit_code == 2 and "starts like a pickle but cannot be parsed" in result.stderr, result.stderr


def test_nothing_is_read_without_an_extra_state_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from weightdoctor.security import extra_state

    def fail(*_: Any) -> None:
        raise AssertionError("scanned a tensor that is no _extra_state")

    monkeypatch.setattr(extra_state, "pickle_loads_problem", fail)
    path = _write({"layers.0.extra_state": _te_tensor({"x": _RunsAShellCommand()}), "w": torch.ones(2)},
                  tmp_path / "model.safetensors")
    assert open_checkpoint(path).security.verdict == "safe"


def test_headers_read_on_the_hub_are_not_downloaded_to_be_checked(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_hub_online import FakeHub

    folder = tmp_path / "repo"
    folder.mkdir()
    _write(_state_dict(_te_tensor({"x": _RunsAShellCommand()})), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    hub = FakeHub(folder, tmp_path / "downloads")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub

    for name in ("list_repo_files", "get_safetensors_metadata", "get_paths_info"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, lambda self, *a, _n=name, **k: getattr(hub, _n)(*a, **k))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    monkeypatch.setattr("weightdoctor.checkpoint.hub.hub_unreachable", lambda: None)

    checkpoint = open_checkpoint("someone/te-model", structure_only=True)
    assert not [name for name in hub.downloads if name.endswith(".safetensors")]
    assert ("2 _extra_state byte tensors (decoder.layers.0.mlp.linear_fc1._extra_state, ...) not checked for a "
            "pickle: only the Hub's headers were read") in " ".join(checkpoint.warnings)
    # A value read from it downloads the file, which is then scanned before any value is returned.
    with pytest.raises(UnsafePickle, match="linear_fc1._extra_state holds a pickle that names posix.system"):
        checkpoint.load_tensor("decoder.layers.0.mlp.linear_fc1.weight")
    # Once the weights are downloaded (what convert, check-dtype, shard read), they are scanned and refused.
    with pytest.raises(UnsafePickle, match="linear_fc1._extra_state holds a pickle that names posix.system"):
        open_checkpoint("someone/te-model")
