"""Review 44: a Trainer's training_args.bin, read as inert, and the calls a pickle can make to what it names.

The policy read TrainingArguments, AcceleratorConfig, accelerate's PartialState and the enums of their fields as
inert, whatever the pickle did with them, and called such a file safe: safe to torch.load(weights_only=False). A
Trainer writes each dataclass as NEWOBJ (cls.__new__, no __init__) and a BUILD of its fields, each enum as
Enum(value). A pickle that calls TrainingArguments itself (REDUCE, 418 bytes) runs its __post_init__: it built
accelerate's PartialState (under torchrun's environment, torch.distributed's process group was initialized), and with
fsdp set it wrote FSDP_CPU_RAM_EFFICIENT_LOADING into os.environ; REDUCE of PartialState(True), 43 bytes, initialized
accelerate's process state the same way. A BUILD on an enum member (OptimizerNames("adamw_torch") then
{"_value_": "sgd"}) rewrote transformers' own member for the whole process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import pickletools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import one_error_line, run_cli
from weightdoctor.security import scan_bytes, scan_file

transformers = pytest.importorskip("transformers")
accelerate_state = pytest.importorskip("accelerate.state")

_CHILD = """
import json, os, sys, torch
import accelerate.state
before = dict(os.environ)
torch.load(sys.argv[1], weights_only=False)
print(json.dumps({"env": {k: v for k, v in os.environ.items() if before.get(k) != v and k.startswith("FSDP")},
                  "partial_state": bool(accelerate.state.PartialState._shared_state)}))
"""


class _Calls:
    """Pickles as `callee(*args)`: the REDUCE a hostile file writes."""

    def __init__(self, callee: Any, *args: Any) -> None:
        self.callee, self.args = callee, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.callee, self.args)


def _training_arguments_call(**chosen: Any) -> _Calls:
    """TrainingArguments(*fields) as a REDUCE: its fields' defaults in order, `chosen` in their places (positional,
    since REDUCE passes no keywords), up to the last one chosen. Nothing is constructed here."""
    fields = [f for f in dataclasses.fields(transformers.TrainingArguments) if f.init]
    names = [f.name for f in fields]
    values = [f.default if f.default is not dataclasses.MISSING else
              f.default_factory() if f.default_factory is not dataclasses.MISSING else None for f in fields]
    for name, value in chosen.items():
        values[names.index(name)] = value
    return _Calls(transformers.TrainingArguments, *values[:max(names.index(n) for n in chosen) + 1])


def _loaded_in_a_child(path: Path) -> dict[str, Any]:
    """What torch.load(path, weights_only=False) did to a fresh process: the FSDP variables it set in os.environ,
    and whether accelerate's PartialState was initialized."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FSDP", "ACCELERATE", "RANK", "WORLD_SIZE"))}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=300,
                          env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_pickle_calling_training_arguments_is_not_safe(tmp_path: Path) -> None:
    hostile = tmp_path / "training_args.bin"
    torch.save(_training_arguments_call(output_dir="x", use_cpu=True, fsdp="full_shard"), hostile)
    # What the scan used to call safe: torch.load(weights_only=False) ran __post_init__ in a fresh process.
    effect = _loaded_in_a_child(hostile)
    assert effect == {"env": {"FSDP_CPU_RAM_EFFICIENT_LOADING": "false"}, "partial_state": True}
    report = scan_file(hostile)
    assert report.verdict == "suspicious", report.summary()
    assert "REDUCE calls transformers.training_args.TrainingArguments('x', 8," in report.summary()
    line = one_error_line(run_cli("inspect", str(hostile)))
    assert "suspicious" in line and "that runs its __init__" in line and "nothing was unpickled" in line


def test_a_pickle_calling_partial_state_is_not_safe(tmp_path: Path) -> None:
    hostile = tmp_path / "training_args.bin"
    torch.save(_Calls(accelerate_state.PartialState, True), hostile)
    assert _loaded_in_a_child(hostile)["partial_state"] is True
    report = scan_file(hostile)
    assert report.verdict == "suspicious"
    assert "REDUCE calls accelerate.state.PartialState(True,): that runs its __init__" in report.summary()


@pytest.mark.parametrize("protocol", [0, 2])
def test_every_call_that_runs_init_is_refused_and_new_alone_is_not(protocol: int) -> None:
    """REDUCE with no arguments runs __init__ as well; INST / OBJ with arguments call the class, without them only
    __new__ (as NEWOBJ does, which the Trainer's own file uses)."""
    from transformers.trainer_pt_utils import AcceleratorConfig

    for callee in (transformers.TrainingArguments, AcceleratorConfig, accelerate_state.PartialState):
        name = f"{callee.__module__}.{callee.__qualname__}"
        report = scan_bytes(pickle.dumps({"args": _Calls(callee)}, protocol=protocol))
        assert report.verdict == "suspicious" and f"REDUCE calls {name}()" in report.summary(), report.summary()
        module, _, qualname = name.rpartition(".")
        inst = f"(I1\ni{module}\n{qualname}\n.".encode()
        assert scan_bytes(inst).verdict == "suspicious"
        assert f"INST calls {name}(1,)" in scan_bytes(inst).summary()
        assert scan_bytes(f"(i{module}\n{qualname}\n.".encode()).verdict == "safe"
        newobj = f"\x80\x02c{module}\n{qualname}\n)\x81}}b.".encode("latin-1")
        assert scan_bytes(newobj).verdict == "safe", scan_bytes(newobj).summary()


def test_an_enum_is_called_on_one_string_and_its_member_never_built() -> None:
    from transformers.training_args import OptimizerNames

    build = (b"\x80\x02ctransformers.training_args\nOptimizerNames\nX\x0b\x00\x00\x00adamw_torch\x85R"
             b"}X\x07\x00\x00\x00_value_X\x03\x00\x00\x00sgdsb.")
    report = scan_bytes(build)
    assert report.verdict == "suspicious"
    assert ("BUILD sets the state of the enum member transformers.training_args.OptimizerNames('adamw_torch')"
            in report.summary())
    for args in ((1,), ("adamw_torch", "A B"), ()):
        report = scan_bytes(pickle.dumps(_Calls(OptimizerNames, *args), protocol=2))
        assert report.verdict == "suspicious", args
        assert "pickle writes an enum member as transformers.training_args.OptimizerNames(value)" in report.summary()
    assert scan_bytes(pickle.dumps([OptimizerNames.ADAMW_TORCH, OptimizerNames.SGD], protocol=2)).verdict == "safe"


def test_copyreg_reconstructors_of_training_arguments_stay_dangerous() -> None:
    """copyreg.__newobj__ and __newobj_ex__ reach __new__ with chosen arguments, and _reconstructor on any base but
    object runs that base's __new__ and __init__: dangerous whatever they build, as before. (_reconstructor(cls,
    object, None), object.__new__(cls) alone, is how protocols 0 and 1 write a TrainingArguments: security3 reads it
    as inert, see tests/hostile/test_security3.py.)"""
    for name, base in (("_reconstructor", "dict"), ("__newobj__", "object"), ("__newobj_ex__", "object")):
        data = (f"\x80\x02ccopyreg\n{name}\nctransformers.training_args\nTrainingArguments\n"
                f"cbuiltins\n{base}\nN\x87R.").encode("latin-1")
        assert scan_bytes(data).verdict == "dangerous", name


def test_a_genuine_training_args_bin_stays_safe_and_reads(tmp_path: Path) -> None:
    path = tmp_path / "training_args.bin"
    torch.save(transformers.TrainingArguments(output_dir=str(tmp_path / "run"), report_to=[], use_cpu=True,
                                              disable_tqdm=True, debug="underflow_overflow",
                                              fsdp="full_shard offload"), path)
    report = scan_file(path)
    assert report.verdict == "safe", report.summary()
    line = one_error_line(run_cli("inspect", str(path)))
    assert "no model weights: the file holds a Trainer's TrainingArguments" in line
    assert "suspicious" not in line


def test_newobj_ex_with_keywords_runs_no_init_and_stays_safe() -> None:
    """NEWOBJ_EX passes its keywords to cls.__new__ alone (object.__new__, which drops them): the object is empty,
    __post_init__ never ran (no PartialState, no FSDP variable), which is why the rule lets NEWOBJ through."""
    import copyreg

    class _NewEx:
        def __reduce_ex__(self, protocol: int) -> tuple[Any, ...]:
            chosen = {"output_dir": "x", "fsdp": "full_shard", "use_cpu": True}
            return (copyreg.__newobj_ex__, (transformers.TrainingArguments, (), chosen), {})

    data = pickle.dumps(_NewEx(), protocol=4)
    assert "NEWOBJ_EX" in {op.name for op, _, _ in pickletools.genops(data)}
    assert scan_bytes(data).verdict == "safe"
    before = dict(accelerate_state.PartialState._shared_state)
    loaded = pickle.loads(data)
    assert type(loaded) is transformers.TrainingArguments and vars(loaded) == {}
    assert accelerate_state.PartialState._shared_state == before
