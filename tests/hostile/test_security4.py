"""Security 4: a DeepSpeed run's training_args.bin, special methods set through BUILD, bare memo blobs in bytes values.

A Trainer run with `deepspeed=` keeps transformers' HfTrainerDeepSpeedConfig and accelerate's DeepSpeedPlugin in its
TrainingArguments (training_args.py's __post_init__), and its training_args.bin was called suspicious for them, though
each is pickled as the other Trainer classes are: NEWOBJ and a BUILD of its __dict__ (plain data). deepspeed is not
installed here, so the objects are built as their pickles lay them out: object.__new__ of the real class and its
__dict__ as the classes' __init__ fill it (the config dict, ZeRO stage, offload flag, torch dtype, mismatches; the
plugin's dataclass fields, the config, `_selected` and `dschf`).

A BUILD whose state sets `__deepcopy__` (or any `__name__`) puts it in the instance's __dict__, where copy.deepcopy and
pickle find it before the class's: torch's weights_only loader builds such an OrderedDict, and copy.deepcopy of the
loaded state dict returned what the file chose. A bytes value of no PROTO and no import (b"Nr\\x00\\x00\\x00\\x01.", a
protocol 1 pickle of a memo index 2**24) was never scanned, and pickle.loads of it takes 262 MB.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import io
import json
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import one_error_line, pickle_loads_peak_kb, run_canary_child, run_cli
from weightdoctor.security import scan_bytes, scan_file

_DS_CONFIG = {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "none"}}, "bf16": {"enabled": True},
              "fp16": {"enabled": False}, "train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 1,
              "gradient_clipping": 1.0, "steps_per_print": float("inf")}


def _built_as_pickled(cls: type, fields: dict[str, Any]) -> Any:
    """An instance as pickle lays it out (NEWOBJ, then a BUILD of its __dict__): deepspeed is not installed, so the
    classes' __init__ (which checks for it) cannot run here."""
    made = object.__new__(cls)
    made.__dict__.update(fields)
    return made


def _deepspeed_training_args(tmp_path: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from accelerate.utils.dataclasses import DeepSpeedPlugin
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, HfTrainerDeepSpeedConfig

    args = transformers.TrainingArguments(output_dir=str(tmp_path / "run"), report_to=[], use_cpu=True)
    config = copy.deepcopy(_DS_CONFIG)
    hf = _built_as_pickled(HfTrainerDeepSpeedConfig, {"config": config, "_stage": 2, "_offload": False,
                                                      "_dtype": torch.bfloat16, "mismatches": []})
    dschf = _built_as_pickled(HfDeepSpeedConfig, {"config": copy.deepcopy(config), "_stage": 2, "_offload": False})
    plugin = _built_as_pickled(DeepSpeedPlugin, {f.name: f.default for f in dataclasses.fields(DeepSpeedPlugin)})
    plugin.__dict__.update(hf_ds_config=hf, deepspeed_config=config, _selected=True, dschf=dschf)
    args.__dict__.update(deepspeed="ds_config.json", hf_deepspeed_config=hf, deepspeed_plugin=plugin)
    return args


@pytest.mark.parametrize("protocol", [2, 0])
def test_a_deepspeed_runs_training_args_bin_is_read_as_inert(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "training_args.bin"
    torch.save(_deepspeed_training_args(tmp_path), path, pickle_protocol=protocol)
    report = scan_file(path)
    assert report.verdict == "safe", report.summary()
    safety = {g.qualified: g.safety for g in report.globals}
    for name in ("accelerate.utils.dataclasses.DeepSpeedPlugin",
                 "transformers.integrations.deepspeed.HfTrainerDeepSpeedConfig",
                 "transformers.integrations.deepspeed.HfDeepSpeedConfig"):
        assert safety[name] == "inert", safety
    line = one_error_line(run_cli("inspect", str(path)))
    assert "no model weights: the file holds a Trainer's TrainingArguments" in line
    assert "its pickle is safe" in line and "suspicious" not in line and "dangerous" not in line


def _child(mode: str, path: Path) -> dict[str, Any]:
    # What a child process did: whether transformers' module-level weakref to a DeepSpeed config was set
    # (HfDeepSpeedConfig's __init__ sets it first thing) after torch.load(weights_only=False) or weightdoctor's inspect
    # of the file.
    return run_canary_child('import transformers.integrations.deepspeed as ds',
                            '{"weakref_set": ds._hf_deepspeed_config_weak_ref is not None}', mode, path)


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def test_a_deepspeed_config_called_is_refused_before_it_runs(tmp_path: Path) -> None:
    """HfDeepSpeedConfig(config) sets transformers' module-level weakref and reads the JSON file a path names; pickle
    builds one by NEWOBJ alone, so a REDUCE of it is refused, and nothing runs."""
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    hostile = tmp_path / "training_args.bin"
    hostile.write_bytes(b"(dp0\nVargs\np1\n" + _global("transformers.integrations.deepspeed", "HfDeepSpeedConfig")
                        + b"(Vds_config.json\ntRs.")
    assert _child("torch", hostile) == {"weakref_set": True}  # the canary: what loading the file does
    line = one_error_line(run_cli("inspect", str(hostile)))
    assert ("calls transformers.integrations.deepspeed.HfDeepSpeedConfig('ds_config.json',): that runs its "
            "__init__") in line
    assert "DeepSpeed's configs read the JSON file a path names" in line
    assert _child("weightdoctor", hostile) == {"weakref_set": False}


def test_a_deepspeed_plugin_given_a_slot_state_is_refused() -> None:
    """A slot state sets attributes one by one (setattr): DeepSpeedPlugin's `selected` property, or `__class__`."""
    pytest.importorskip("accelerate")
    data = (b"\x80\x02" + _global("accelerate.utils.dataclasses", "DeepSpeedPlugin") + b")\x81"
            + b"N}X\t\x00\x00\x00__class__" + _global("argparse", "Namespace") + b"s\x86b.")
    report = scan_bytes(data)
    assert report.verdict == "suspicious"
    assert "sets the state of a accelerate.utils.dataclasses.DeepSpeedPlugin to a pair" in report.summary()


def _state_dict_with(name: str) -> collections.OrderedDict[str, torch.Tensor]:
    state = collections.OrderedDict(w=torch.arange(4, dtype=torch.float32))
    state.__dict__[name] = collections.Counter  # a global torch's weights_only loader allows
    return state


def test_an_ordered_dict_built_with_a_special_method_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save(_state_dict_with("__deepcopy__"), path)
    loaded = torch.load(path, weights_only=True)  # torch sets it: copy.deepcopy then returns what the file chose
    assert isinstance(copy.deepcopy(loaded), collections.Counter)
    report = scan_file(path)
    assert report.verdict == "suspicious", report.summary()
    assert ("BUILD sets __deepcopy__ on an object through its state: copy.deepcopy, copy.copy and pickle (a re-save) "
            "look it up on the instance before its class and call it") in report.summary()
    line = one_error_line(run_cli("inspect", str(path)))
    assert "suspicious" in line and "BUILD sets __deepcopy__" in line and "nothing was unpickled" in line
    genuine = tmp_path / "genuine.bin"
    state = collections.OrderedDict(w=torch.arange(4, dtype=torch.float32))
    state._metadata = {"": {"version": 1}}  # type: ignore[attr-defined]  # what torch's state_dict() keeps
    torch.save(state, genuine)
    assert scan_file(genuine).verdict == "safe"


@pytest.mark.parametrize("name", ["__reduce_ex__", "__getattr__", "__class__", "__copy__"])
def test_special_names_in_any_builds_state_are_refused(name: str) -> None:
    """In a Namespace's __dict__ (protocols 2 and 0: SETITEMS and SETITEM), and in a Parameter's state, which
    torch's _rebuild_parameter_with_state sets attribute by attribute."""
    import argparse

    # Set under a name of the same length, then renamed in the bytes: pickle.dumps itself calls an instance's own
    # __reduce_ex__ (what a re-save of the loaded object does).
    placeholder = "__Q" + name[3:]
    namespace = argparse.Namespace(lr=0.1)
    namespace.__dict__[placeholder] = 1
    for protocol in (2, 0):
        data = pickle.dumps({"args": namespace}, protocol).replace(placeholder.encode(), name.encode())
        report = scan_bytes(data)
        assert report.verdict == "suspicious" and f"BUILD sets {name} on an object" in report.summary(), protocol
    assert scan_bytes(pickle.dumps({"args": argparse.Namespace(lr=0.1, __doc=1)}, 2)).verdict == "safe"
    parameter = torch.nn.Parameter(torch.zeros(2))
    parameter.__dict__[placeholder] = 1
    buffer = io.BytesIO()
    torch.save({"p": parameter}, buffer)
    path_report = scan_bytes(buffer.getvalue().replace(placeholder.encode(), name.encode()))
    assert path_report.verdict == "suspicious", path_report.summary()
    assert f"torch._utils._rebuild_parameter_with_state sets {name} on a tensor" in path_report.summary()


_MEMO_BLOBS = {
    "long_binput": b"Nr" + struct.pack("<I", 2**24) + b".",
    "put": b"Np16777216\n.",
    "put_underscores": b"Np 16_777_216\n.",
}


@pytest.mark.parametrize("case", sorted(_MEMO_BLOBS))
def test_a_bare_memo_blob_in_a_bytes_value_is_refused(tmp_path: Path, case: str) -> None:
    blob = _MEMO_BLOBS[case]
    assert blob[:1] != b"\x80" and not any(op in blob for op in (b"c", b"i", b"\x93", b"\x82"))
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.arange(4, dtype=torch.float32)}, "blob": blob}, path)
    line = one_error_line(run_cli("inspect", str(path), "--key", "state_dict"))
    assert f"error: {path}: suspicious: the bytes value at blob holds a pickle that, at byte 1, memo index " in line
    assert "16,777,216" in line and "set aside 0.3 GB" in line


def test_bytes_values_that_hold_the_memo_opcodes_letters_are_read(tmp_path: Path) -> None:
    """Text and binary that merely hold an r or a p (a tokenizer's pieces, float samples) are no pickle that parses to
    its STOP: read, as before."""
    values = {"text": b"prompt: rare words\nreply 12345678\n.", "floats": struct.pack("<4f", 1.5, -2.25, 3e8, 7.0),
              "memo": b"Nr\x05\x00\x00\x00."}  # a small index: what a pickler writes
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.arange(4, dtype=torch.float32)}, **values}, path)
    result = run_cli("inspect", str(path), "--key", "state_dict", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["num_tensors"] == 1 and report["security"]["verdict"] == "safe"


def _hyperparameters() -> dict[str, Any]:
    """What a Lightning module's save_hyperparameters() or a script's config may keep: plain values only."""
    return {"lr": 1e-3, "target_modules": frozenset({"q_proj", "v_proj"}), "crop": slice(0, 224, 2),
            "recent_losses": collections.deque([0.5, 0.25, 0.125], maxlen=100), "empty": frozenset(),
            "unbounded": collections.deque(["a"])}


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_frozenset_slice_and_deque_are_read_as_the_values_they_are(tmp_path: Path, protocol: int) -> None:
    from weightdoctor.checkpoint.pytorch_format import RestrictedPickle

    hparams = _hyperparameters()
    data = pickle.dumps(hparams, protocol)
    assert scan_bytes(data).verdict == "safe", scan_bytes(data).summary()
    assert RestrictedPickle.load(io.BytesIO(data)) == hparams
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.arange(4, dtype=torch.float32)}, "hyper_parameters": hparams,
                "blob": pickle.dumps(hparams, protocol)}, path, pickle_protocol=min(protocol, 2) or 2)
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["num_tensors"] == 1 and report["security"]["verdict"] == "safe"


@pytest.mark.parametrize(("data", "words"), [
    # frozenset and deque of what is no list: each iterates it while the file loads
    (_global("__builtin__", "frozenset") + b"(" + _global("transformers.training_args", "OptimizerNames") + b"tR.",
     "calls builtins.frozenset(transformers.training_args.OptimizerNames,): pickle writes one as frozenset(list"),
    (_global("collections", "deque") + b"(S'abc'\nI3\nI4\ntR.", "calls collections.deque('abc', 3, 4)"),
    (_global("collections", "deque") + b"((lI1\nI2\ntR.", "calls collections.deque([], 1, 2)"),
    # range stays unknown: three numbers that set() or Counter() would turn into memory without bound
    (_global("__builtin__", "set") + b"(" + _global("__builtin__", "xrange") + b"(I1000000000000\ntRtR.",
     "__builtin__.xrange (unknown"),
])
def test_plain_values_called_as_no_pickler_writes_them_are_refused(data: bytes, words: str) -> None:
    report = scan_bytes(data)
    assert report.verdict == "suspicious", report.summary()
    assert words in report.summary(), report.summary()


def _copies(callee: tuple[str, str], calls: int) -> bytes:
    """One list of 10,000 ints kept in the memo, then `calls` calls of `callee` on it, each fetched again by a GET."""
    items = b"".join(b"J" + struct.pack("<i", i) for i in range(10_000))
    body = b"h\x01j\x00\x00\x00\x00\x85R" * calls
    return (b"\x80\x02]r\x00\x00\x00\x00(" + items + b"e0" + _global(*callee) + b"r\x01\x00\x00\x000(" + body
            + b"l.")


@pytest.mark.parametrize("callee", [("__builtin__", "set"), ("__builtin__", "frozenset"), ("collections", "deque"),
                                    ("collections", "Counter")])
def test_a_shared_list_copied_call_after_call_is_refused(tmp_path: Path, callee: tuple[str, str]) -> None:
    data = _copies(callee, 1_000)
    if callee == ("__builtin__", "set"):  # measured: what one such file costs its loader (a 59 KB file)
        path = tmp_path / "copies.pkl"
        path.write_bytes(data)
        peak_kb = pickle_loads_peak_kb(path)
        assert len(data) < 60_000 and peak_kb > 400_000  # KB: more than 400 MB
    report = scan_bytes(data)
    assert report.verdict == "suspicious", report.summary()
    assert f"REDUCE calls {'.'.join(callee)} on a list the pickle fetched again from its memo" in report.summary()
    shared = [1, 2, 3]  # a genuine list shared by two entries is fetched again, and is read
    genuine = pickle.dumps({"a": shared, "b": shared, "s": {1, 2}, "f": frozenset(shared)}, 2)
    assert scan_bytes(genuine).verdict == "safe"
