"""Security 3: protocol 0/1 construction of inert classes, OrderedDict called on a class, EXT opcodes.

Pickle's protocols 0 and 1 (torch.save(..., pickle_protocol=0 or 1), Python 2's files) write an object without a
__reduce__ of its own as REDUCE of copyreg._reconstructor(cls, object, None) and a BUILD of its fields: a Trainer's
training_args.bin and a fairseq Namespace saved so were called dangerous (copyreg and `object` are dangerous names),
though the object is built as NEWOBJ builds it. _reconstructor(cls, base, state) runs base.__new__(cls, state) and
base.__init__(obj, state): on any other base, a constructor of the pickle's choice (accelerate's PartialState
initialized its process state under torch.load(weights_only=False)). It is now read only as genuine files call it,
for an inert class on its own base, and only where the pickle uses it and its bases for nothing else.
OrderedDict(<enum class>) was safe: no pickler writes it, and it iterates the class while the file loads. A pickle of
EXT opcodes only was suspicious with no word of why.
"""

from __future__ import annotations

import argparse
import collections
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers import one_error_line, run_canary_child, run_cli
from weightdoctor.security import scan_bytes, scan_file


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _child(mode: str, path: Path) -> dict[str, Any]:
    # What a child process did: whether accelerate's PartialState was initialized (its shared state filled) after it
    # ran torch.load(weights_only=False) or weightdoctor's inspect on the file.
    return run_canary_child('import accelerate.state',
                            '{"partial_state": bool(accelerate.state.PartialState._shared_state)}', mode, path)


@pytest.mark.parametrize("protocol", [0, 1])
def test_a_training_args_bin_saved_with_protocol_0_or_1_is_read_as_inert(tmp_path: Path, protocol: int) -> None:
    transformers = pytest.importorskip("transformers")
    path = tmp_path / "training_args.bin"
    torch.save(transformers.TrainingArguments(output_dir=str(tmp_path / "run"), report_to=[], use_cpu=True), path,
               pickle_protocol=protocol)
    assert b"copy_reg\n_reconstructor" in path.read_bytes()
    report = scan_file(path)
    assert report.verdict == "safe", report.summary()
    safety = {g.qualified: g.safety for g in report.globals}
    assert safety["copy_reg._reconstructor"] == safety["__builtin__.object"] == "inert"
    line = one_error_line(run_cli("inspect", str(path)))
    assert "no model weights: the file holds a Trainer's TrainingArguments" in line
    assert "dangerous" not in line and "suspicious" not in line


@pytest.mark.parametrize("protocol", [0, 1])
def test_a_fairseq_style_namespace_pickled_with_protocol_0_or_1_is_read(tmp_path: Path, protocol: int) -> None:
    args = argparse.Namespace(arch="transformer", lr=[0.0005], max_tokens=4096)
    weights = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    plain = tmp_path / "model.pkl"
    with open(plain, "wb") as handle:
        pickle.dump({"args": args, "w": weights.numpy()}, handle, protocol)
    result = run_cli("inspect", str(plain), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["security"]["verdict"] == "safe" and data["num_tensors"] == 1
    assert "dangerous" not in result.stderr
    if protocol == 1:  # torch.load itself cannot read a protocol 0 torch.save of tensors (its ids are text)
        saved = tmp_path / "checkpoint.pt"
        torch.save({"args": args, "model": {"w": weights}}, saved, pickle_protocol=protocol)
        result = run_cli("inspect", str(saved), "--key", "model", "--json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["num_tensors"] == 1


@pytest.mark.parametrize("protocol", [0, 1])
def test_torch_version_saved_with_protocol_0_or_1_is_read(tmp_path: Path, protocol: int) -> None:
    """pyannote.audio records torch.__version__, a str subclass: protocols 0 and 1 write it as
    _reconstructor(TorchVersion, __builtin__.unicode, text), Python 2's name of str (which was called unknown)."""
    weights = torch.arange(4, dtype=torch.float32)
    path = tmp_path / "model.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"versions": {"torch": torch.__version__}, "w": weights.numpy()}, handle, protocol)
    assert b"__builtin__\nunicode" in path.read_bytes()
    report = scan_file(path)
    assert report.verdict == "safe", report.summary()
    assert {g.qualified: g.safety for g in report.globals}["__builtin__.unicode"] == "inert"
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["num_tensors"] == 1, result.stderr


def test_a_protocol_0_torch_save_of_tensors_is_said_to_be_unreadable_by_torch_too(tmp_path: Path) -> None:
    """Its storage references are PERSID text: torch.load refuses it whatever weights_only says, and weightdoctor
    said only that its fallback loader failed (AssertionError: saved_id must be a tuple, got str)."""
    path = tmp_path / "model.pt"
    torch.save(collections.OrderedDict(w=torch.ones(2, 2)), path, pickle_protocol=0)
    with pytest.raises(AssertionError, match="saved_id must be a tuple"):
        torch.load(path, weights_only=False)
    line = one_error_line(run_cli("inspect", str(path)))
    assert line == (f"error: {path}: a torch.save file pickled with protocol 0 (torch.save(..., pickle_protocol=0)): "
                    "its storage references were written as text, which torch.load refuses, weights_only or not "
                    "(saved_id must be a tuple); torch.save the tensors again with the default protocol and point "
                    "weightdoctor at that file")


def _reconstruct(cls: tuple[str, str], base: tuple[str, str], state: bytes = b"N") -> bytes:
    """A protocol 0 REDUCE of copy_reg._reconstructor(cls, base, state)."""
    return _global("copy_reg", "_reconstructor") + b"(" + _global(*cls) + _global(*base) + state + b"tR"


def test_a_reconstructor_on_an_inert_class_as_base_is_dangerous_and_never_runs(tmp_path: Path) -> None:
    """_reconstructor(PartialState, PartialState, True) runs PartialState.__init__(obj, True), which initialized
    accelerate's process state (torch.distributed's process group under torchrun's environment)."""
    pytest.importorskip("accelerate")
    hostile = tmp_path / "training_args.bin"
    state = ("accelerate.state", "PartialState")
    hostile.write_bytes(b"(dp0\nVargs\np1\n" + _reconstruct(state, state, b"I01\n") + b"s.")
    assert _child("torch", hostile) == {"partial_state": True}  # the canary: what the file does when loaded
    report = scan_file(hostile)
    assert report.verdict == "dangerous", report.summary()
    assert ("REDUCE calls copyreg._reconstructor to build accelerate.state.PartialState on "
            "accelerate.state.PartialState with state True, where pickle writes it on builtins.object with state "
            "None") in report.summary()
    line = one_error_line(run_cli("inspect", str(hostile)))
    assert line.startswith(f"error: {hostile}: dangerous: copy_reg._reconstructor") and "nothing was unpickled" in line
    assert _child("weightdoctor", hostile) == {"partial_state": False}


@pytest.mark.parametrize(("data", "words"), [
    # used as pickled (Namespace on object), and kept besides in the loaded value
    (b"(dp0\nVa\n" + _global("copy_reg", "_reconstructor") + b"p1\n(" + _global("argparse", "Namespace")
     + _global("__builtin__", "object") + b"NtRsVf\ng1\ns.", "copy_reg._reconstructor (dangerous"),
    # an enum, a class only named, a dict subclass on object: none is built so by a pickler
    (_reconstruct(("transformers.training_args", "OptimizerNames"), ("__builtin__", "object")) + b".",
     "not a class read as inert data built from its fields"),
    (_reconstruct(("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"), ("__builtin__", "object"))
     + b".", "not a class read as inert data built from its fields"),
    (_reconstruct(("lightning_fabric.utilities.data", "AttributeDict"), ("__builtin__", "object")) + b".",
     "where pickle writes it on builtins.dict with its items (a dict)"),
    # the right base with a state it never gets
    (_reconstruct(("argparse", "Namespace"), ("__builtin__", "object"), b"I1\n") + b".",
     "with state 1, where pickle writes it on builtins.object with state None"),
    # a slot state pair on what it builds sets __class__ (as review49 found for NEWOBJ)
    (_reconstruct(("argparse", "Namespace"), ("__builtin__", "object")) + b"(N(dVx\nI1\nstb.",
     "sets the state of a argparse.Namespace to a pair"),
    # INST of _reconstructor: a call no pickler writes
    (b"(" + _global("argparse", "Namespace") + _global("__builtin__", "object") + b"Nicopy_reg\n_reconstructor\n.",
     "calls copyreg._reconstructor"),
    # the base fetched again inside a list too large to look into
    (b"(lp0\n" + b"I0\na" * 70 + _global("__builtin__", "object") + b"a0" + _reconstruct(
        ("argparse", "Namespace"), ("__builtin__", "object")) + b"0g0\n.", "__builtin__.object (dangerous"),
])
def test_reconstructor_uses_no_genuine_file_makes_stay_refused(data: bytes, words: str) -> None:
    report = scan_bytes(data)
    assert report.verdict in ("dangerous", "suspicious") and report.unsafe, report.summary()
    assert words in report.summary(), report.summary()
    if "sets the state" in words:  # the call itself is genuine: its BUILD is what is refused
        assert report.verdict == "suspicious"
    else:
        assert any(g.safety == "dangerous" for g in report.globals if g.name in ("_reconstructor", "object"))


def test_the_reconstructor_stand_in_builds_stand_ins_only() -> None:
    from weightdoctor.checkpoint.inert import inert_class, inert_reconstructor

    namespace, obj, dct = (inert_class(n) for n in ("argparse.Namespace", "__builtin__.object", "__builtin__.dict"))
    assert repr(inert_reconstructor(namespace, obj, None)) == "<argparse.Namespace, read as inert data>"
    attribute_dict = inert_class("lightning_fabric.utilities.data.AttributeDict")
    assert dict(inert_reconstructor(attribute_dict, dct, {"lr": 0.1})) == {"lr": 0.1}
    for cls, base, state in ((argparse.Namespace, obj, None), (namespace, object, None), (namespace, obj, 1),
                             (namespace, dct, "x"), (namespace, inert_class("accelerate.state.PartialState"), None)):
        with pytest.raises(pickle.UnpicklingError, match="builds an inert stand-in on object, dict or str only"):
            inert_reconstructor(cls, base, state)


def test_an_ordered_dict_built_on_a_class_is_suspicious_and_genuine_ones_stay_safe(tmp_path: Path) -> None:
    hostile = (b"\x80\x02" + _global("collections", "OrderedDict") + _global("transformers.trainer_utils",
               "IntervalStrategy") + b"\x85R.")
    report = scan_bytes(hostile)
    assert report.verdict == "suspicious", report.summary()
    assert ("REDUCE calls collections.OrderedDict on transformers.trainer_utils.IntervalStrategy: pickle writes an "
            "OrderedDict as OrderedDict() and its items") in report.summary()
    for protocol in (0, 2, 4):
        assert scan_bytes(pickle.dumps(collections.OrderedDict(a=1, b=[2]), protocol)).verdict == "safe"
    # Python 2's OrderedDict.__reduce__: OrderedDict([[key, value], ...])
    assert scan_bytes(b"ccollections\nOrderedDict\n((lp0\n(lp1\nS'a'\naI1\naatRp2\n.").verdict == "safe"
    path = tmp_path / "model.pt"
    torch.save(collections.OrderedDict(w=torch.ones(2, 2)), path)
    assert scan_file(path).verdict == "safe"


@pytest.mark.parametrize("opcode", [b"\x82\x01", b"\x83\x00\x01", b"\x84\x00\x00\x01\x00"])
def test_an_extension_code_is_suspicious_and_says_why(tmp_path: Path, opcode: bytes) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x02" + opcode + b")R.")
    line = one_error_line(run_cli("inspect", str(path)))
    assert "suspicious: <extension registry>." in line and "nothing was unpickled" in line
    assert "copyreg's extension registry of the process that loads the file, which Python leaves empty" in line


def test_numpy_generators_and_zoneinfo_keep_their_verdicts() -> None:
    """What rng_state.pth holds (numpy's legacy RandomState tuple, a bit generator's state dict) is plain data and
    safe; numpy's Generator objects (Cython constructors by name) stay unknown; a ZoneInfo pickles as
    getattr(ZoneInfo, "_unpickle"), and builtins.getattr is dangerous; datetime's own timezone is inert."""
    import datetime
    import zoneinfo

    assert scan_bytes(pickle.dumps({"numpy": np.random.get_state(),
                                    "pcg64": np.random.default_rng(0).bit_generator.state}, 2)).verdict == "safe"
    assert scan_bytes(pickle.dumps(np.random.default_rng(0), 2)).verdict == "suspicious"
    zoned = scan_bytes(pickle.dumps(datetime.datetime(2024, 1, 1, tzinfo=zoneinfo.ZoneInfo("UTC")), 2))
    assert zoned.verdict == "dangerous" and "__builtin__.getattr (dangerous" in zoned.summary()
    fixed = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    assert scan_bytes(pickle.dumps(fixed, 2)).verdict == "safe"
