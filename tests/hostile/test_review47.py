"""Review 47: every class read as inert, built only as genuine files build it.

Review 44 found that a name's being inert said nothing of how the pickle uses it (REDUCE of TrainingArguments ran
its __post_init__; BUILD on an OptimizerNames member rewrote it for the process), and fixed those classes. The other
inert classes kept every use: a BUILD on the imported class itself (setattr on transformers' OptimizerNames of
`_value2member_map_`) made every later OptimizerNames("adamw_torch") return SGD; a BUILD on a Lightning AttributeDict
called the item it held under `__setstate__` (its __getattr__ answers from its items), here accelerate's PartialState,
which initialized accelerate's process state; a BUILD on a pyannote Problem member rewrote its value; calls to
ModelCheckpoint, Namespace, omegaconf's containers and paths on what no pickler writes passed. Each file was called
safe: safe to torch.load(weights_only=False). `policy.INERT_CONSTRUCTION` now declares how a genuine file builds each.
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import fractions
import io
import json
import os
import pathlib
import pickle
import subprocess
import sys
import types
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import one_error_line, run_cli
from weightdoctor.security import scan_bytes, scan_file

_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, 2) + pickle.dumps(1001, 2) + pickle.dumps(
    {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}, 2)

# Lightning's AttributeDict.__getattr__ (lightning_fabric/utilities/data.py) and pyannote.audio's task enums
# (pyannote/audio/core/task.py), as fakes in a fresh process: neither library is installed here.
_FAKES = """
import enum, sys, types
for name in ("lightning_fabric", "lightning_fabric.utilities", "lightning_fabric.utilities.data", "pyannote",
             "pyannote.audio", "pyannote.audio.core", "pyannote.audio.core.task"):
    sys.modules[name] = types.ModuleType(name)
class AttributeDict(dict):
    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(key) from e
AttributeDict.__module__ = "lightning_fabric.utilities.data"
sys.modules["lightning_fabric.utilities.data"].AttributeDict = AttributeDict
class Problem(enum.Enum):
    BINARY_CLASSIFICATION = 0
    MONO_LABEL_CLASSIFICATION = 1
Problem.__module__ = "pyannote.audio.core.task"
sys.modules["pyannote.audio.core.task"].Problem = Problem
"""

_CHILD = _FAKES + """
import json, torch
import accelerate.state
from transformers.training_args import OptimizerNames
torch.load(sys.argv[1], weights_only=False)
print(json.dumps({"adamw_torch": OptimizerNames("adamw_torch").value,
                  "partial_state": bool(accelerate.state.PartialState._shared_state),
                  "mono_label": Problem.MONO_LABEL_CLASSIFICATION.value}))
"""


def _legacy_torch_file(path: Path, payload: bytes) -> Path:
    """`payload` as the object pickle of a legacy torch.save file (what torch.load reads without a zip)."""
    path.write_bytes(_MAGIC + payload + pickle.dumps([], 2))
    return path


def _loaded_in_a_child(path: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE", "RANK", "WORLD_SIZE"))}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=300,
                          env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _text(value: str) -> bytes:
    data = value.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


_UNTOUCHED = {"adamw_torch": "adamw_torch", "partial_state": False, "mono_label": 1}


def test_a_build_on_an_imported_enum_class_is_not_safe(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    # BUILD (None, {"_value2member_map_": {"adamw_torch": OptimizerNames("sgd")}}) on the class itself.
    payload = (b"\x80\x02ctransformers.training_args\nOptimizerNames\nq\x00N}" + _text("_value2member_map_") + b"}"
               + _text("adamw_torch") + b"h\x00" + _text("sgd") + b"\x85Rss\x86b0}.")
    path = _legacy_torch_file(tmp_path / "training_args.bin", payload)
    assert _loaded_in_a_child(path) == {**_UNTOUCHED, "adamw_torch": "sgd"}  # what the scan called safe
    report = scan_file(path)
    assert report.verdict == "suspicious", report.summary()
    assert ("BUILD sets the attributes of transformers.training_args.OptimizerNames itself (the class or function the "
            "whole process shares)") in report.summary()
    line = one_error_line(run_cli("inspect", str(path)))
    assert "suspicious" in line and "OptimizerNames itself" in line and "nothing was unpickled" in line


def test_a_build_on_any_imported_global_is_refused() -> None:
    """Safe globals too: setattr on torch.Tensor (or a function's __defaults__) for the whole process."""
    for module, name in (("torch", "Tensor"), ("torch._utils", "_rebuild_tensor_v2"), ("argparse", "Namespace")):
        data = f"\x80\x02c{module}\n{name}\nN}}X\x01\x00\x00\x00aK\x01s\x86b.".encode("latin-1")
        report = scan_bytes(data)
        assert report.verdict == "suspicious", (name, report.summary())
        assert f"BUILD sets the attributes of {module}.{name} itself" in report.summary()


def test_a_build_on_a_lightning_attribute_dict_calls_its_setstate_item(tmp_path: Path) -> None:
    pytest.importorskip("accelerate.state")
    # AttributeDict() by NEWOBJ, {"__setstate__": PartialState}, then BUILD with the state True: PartialState(True).
    payload = (b"\x80\x02clightning_fabric.utilities.data\nAttributeDict\n)\x81" + _text("__setstate__")
               + b"caccelerate.state\nPartialState\ns\x88b.")
    path = _legacy_torch_file(tmp_path / "last.ckpt", payload)
    assert _loaded_in_a_child(path) == {**_UNTOUCHED, "partial_state": True}
    report = scan_file(path)
    assert report.verdict == "suspicious", report.summary()
    assert ("BUILD sets the state of a lightning_fabric.utilities.data.AttributeDict, which pickle never writes (it "
            "builds one by NEWOBJ and its items or value): an AttributeDict answers getattr from its items, so BUILD "
            "calls the item named __setstate__ with the state") in report.summary()


def test_a_build_on_a_pyannote_enum_member_is_not_safe(tmp_path: Path) -> None:
    payload = b"\x80\x02cpyannote.audio.core.task\nProblem\nK\x01\x85R}" + _text("_value_") + b"K\x00sb."
    path = _legacy_torch_file(tmp_path / "pytorch_model.bin", payload)
    assert _loaded_in_a_child(path) == {**_UNTOUCHED, "mono_label": 0}  # pyannote's own member, rewritten
    report = scan_file(path)
    assert report.verdict == "suspicious", report.summary()
    assert "BUILD sets the state of the enum member pyannote.audio.core.task.Problem(1)" in report.summary()
    # Called on anything but one int, or by NEWOBJ: not how pickle writes a member.
    for data in (b"\x80\x02cpyannote.audio.core.task\nProblem\nX\x01\x00\x00\x00a\x85R.",
                 b"\x80\x02cpyannote.audio.core.task\nResolution\nK\x01\x85\x81."):
        report = scan_bytes(data)
        assert report.verdict == "suspicious" and "pickle writes an enum member as" in report.summary(), data
    assert scan_bytes(b"\x80\x02cpyannote.audio.core.task\nProblem\nK\x01\x85R.").verdict == "safe"


@pytest.mark.parametrize(("module", "name", "args"), [
    ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint", "X\x03\x00\x00\x00s3:"),
    ("argparse", "Namespace", "K\x01"),
    ("omegaconf.dictconfig", "DictConfig", "}"),
    ("omegaconf.nodes", "AnyNode", "K\x01"),
    ("mmengine.logging.history_buffer", "HistoryBuffer", "]"),
    ("pyannote.audio.core.task", "Specifications", "K\x01"),
    ("uuid", "UUID", "X\x01\x00\x00\x001"),
])
def test_a_call_no_pickler_writes_is_refused(module: str, name: str, args: str) -> None:
    data = f"\x80\x02c{module}\n{name}\n{args}\x85R.".encode("latin-1")
    report = scan_bytes(data)
    assert report.verdict == "suspicious", report.summary()
    assert f"REDUCE calls {module}.{name}(" in report.summary()
    if name == "ModelCheckpoint":
        assert "a checkpoint names this class only" in report.summary()
        assert scan_bytes(f"\x80\x02c{module}\n{name}\n)\x81.".encode("latin-1")).verdict == "suspicious"
    else:
        assert "where pickle builds one by NEWOBJ" in report.summary()
        assert scan_bytes(f"\x80\x02c{module}\n{name}\n)\x81}}b.".encode("latin-1")).verdict == "safe"


def test_paths_are_called_on_text_and_never_built() -> None:
    assert scan_bytes(b"\x80\x02cpathlib\nPosixPath\nX\x01\x00\x00\x00/K\x01\x86R.").verdict == "suspicious"
    built = b"\x80\x02cpathlib\nPosixPath\nX\x01\x00\x00\x00/\x85RN}X\x04\x00\x00\x00_strX\x01\x00\x00\x00xs\x86b."
    report = scan_bytes(built)
    assert report.verdict == "suspicious"
    assert ("BUILD sets the state of a pathlib.PosixPath, which pickle never writes (it builds one by a call on its "
            "parts)") in report.summary()
    version = b"\x80\x02ctorch.torch_version\nTorchVersion\nX\x01\x00\x00\x002\x85\x81}b."
    assert "BUILD sets the state of a torch.torch_version.TorchVersion" in scan_bytes(version).summary()


def test_a_value_pickle_writes_as_a_call_alone_is_never_built() -> None:
    """Fraction keeps its numbers in __slots__: a BUILD of (None, {"_numerator": "x"}) made a Fraction of a string."""
    data = b"\x80\x02cfractions\nFraction\nK\x01K\x03\x86RN}X\n\x00\x00\x00_numeratorX\x01\x00\x00\x00xs\x86b."
    assert pickle.loads(data).numerator == "x"
    report = scan_bytes(data)
    assert report.verdict == "suspicious", report.summary()
    assert ("BUILD sets the state of a fractions.Fraction, which pickle never writes (it builds one by a call alone)"
            in report.summary())
    assert scan_bytes(pickle.dumps([fractions.Fraction(1, 3), decimal.Decimal("0.1")], protocol=2)).verdict == "safe"


def test_every_inert_class_declares_its_construction() -> None:
    from weightdoctor.security.policy import INERT_CONSTRUCTION, INERT_GLOBALS

    assert set(INERT_GLOBALS) <= set(INERT_CONSTRUCTION)


def test_genuine_pickles_of_each_inert_class_stay_safe(tmp_path: Path) -> None:
    omegaconf = pytest.importorskip("omegaconf")
    config = omegaconf.OmegaConf.create({"lr": 0.1, "layers": [1, "x", 2.5, True, b"b"], "run": {"dir": "${lr}"},
                                         "out": pathlib.Path("/runs/1"), "none": None})
    omegaconf.OmegaConf.set_readonly(config, True)
    values = {"cfg": config, "args": argparse.Namespace(lr=0.1), "ns": types.SimpleNamespace(a=1),
              "path": pathlib.PurePosixPath("/runs/1"), "here": pathlib.Path("."), "buffer": io.BytesIO(b"fp8"),
              "id": uuid.UUID(int=7), "torch": torch.__version__, "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
              "budget": datetime.timedelta(hours=1)}
    for protocol in (2, 4, 5):
        report = scan_bytes(pickle.dumps(values, protocol=protocol))
        assert report.verdict == "safe", (protocol, report.summary())
        path = tmp_path / f"run{protocol}.pt"
        torch.save({**values, "model": {"w": torch.ones(2)}}, path, pickle_protocol=protocol)
        report = scan_file(path)
        assert report.verdict == "safe", (protocol, report.summary())
