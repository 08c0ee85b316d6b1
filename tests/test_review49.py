"""Review 49: review47's construction table, tried with states and arguments a genuine file never writes.

A BUILD on an argparse.Namespace (or any class built by NEWOBJ and a BUILD of its fields) of a (dict, slot state)
pair sets each slot attribute by setattr: {"__class__": X} turned the Namespace into an instance of X, any class the
pickle names (ModelCheckpoint, which a file only names), and the scan called it safe. A defaultdict whose factory is an
inert class (accelerate's PartialState) in an omegaconf pickle was called safe; the factory runs on each missing key
after the load. Genuine files (real Namespace, omegaconf, TrainingArguments pickles, protocols 2 to 5) stay safe.
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from weightdoctor.security import scan_bytes, scan_file


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


@pytest.mark.parametrize("target", [("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
                                    ("accelerate.state", "PartialState")])
def test_slot_state_setting_class_of_namespace_is_refused(target: tuple[str, str]) -> None:
    # Namespace.__new__(Namespace); BUILD (None, {"__class__": target}); pickle.loads returns a `target` instance.
    data = (b"\x80\x02" + _global("argparse", "Namespace") + b")\x81N}" + _text("__class__") + _global(*target)
            + b"s\x86b.")
    report = scan_bytes(data)
    assert report.verdict == "suspicious"
    assert any("sets the state of a argparse.Namespace to a pair" in p.message and "__class__" in p.message
               for p in report.problems), report.summary()


@pytest.mark.parametrize("factory", [("accelerate.state", "PartialState"), ("argparse", "Namespace"),
                                     ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint")])
def test_defaultdict_of_an_inert_class_is_refused(factory: tuple[str, str]) -> None:
    context = _global("omegaconf.dictconfig", "DictConfig") + b")\x81}b0"  # omegaconf makes defaultdict inert
    data = b"\x80\x02" + context + _global("collections", "defaultdict") + _global(*factory) + b"\x85R."
    report = scan_bytes(data)
    assert report.verdict == "suspicious"
    assert any(f"defaultdict whose factory is {'.'.join(factory)}" in p.message for p in report.problems), \
        report.summary()


def test_defaultdict_of_dict_beside_omegaconf_stays_safe() -> None:
    context = _global("omegaconf.dictconfig", "DictConfig") + b")\x81}b0"
    for factory in (("builtins", "dict"), ("__builtin__", "list")):
        data = b"\x80\x02" + context + _global("collections", "defaultdict") + _global(*factory) + b"\x85R."
        assert scan_bytes(data).verdict == "safe", factory


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_genuine_configuration_pickles_stay_safe(protocol: int) -> None:
    from transformers import TrainingArguments

    config = OmegaConf.create({"model": {"dim": 4, "layers": [1, {"x": "${model.dim}"}]}, "lr": 0.1})
    arguments = TrainingArguments(output_dir=tempfile.mkdtemp(), report_to=[])
    hparams = {"args": argparse.Namespace(lr=0.1, name="run"), "cfg": config, "ta": arguments}
    report = scan_bytes(pickle.dumps({"state_dict": {"w": torch.zeros(2).tolist()}, "hp": hparams}, protocol))
    assert report.verdict == "safe", report.summary()


def test_slot_state_returned_by_a_call_is_refused() -> None:
    # In an omegaconf pickle builtins.tuple keeps any call: tuple([None, {"__class__": PartialState}]) as the state.
    context = _global("omegaconf.dictconfig", "DictConfig") + b")\x81}b0"
    state = (_global("builtins", "tuple") + b"](N}" + _text("__class__") + _global("accelerate.state", "PartialState")
             + b"se\x85R")
    report = scan_bytes(b"\x80\x02" + context + _global("argparse", "Namespace") + b")\x81" + state + b"b.")
    assert report.verdict == "suspicious"
    assert any("sets the state of a argparse.Namespace to the result of a call" in p.message
               for p in report.problems), report.summary()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_a_state_dict_memoized_and_shared_stays_safe(protocol: int) -> None:
    # Two Namespaces whose BUILD states are the one memoized dict (BINGET of it): PartialState's shared __dict__.
    shared = {"lr": 0.1}
    first, second = argparse.Namespace(), argparse.Namespace()
    first.__dict__ = shared
    second.__dict__ = shared
    data = pickle.dumps([first, second], protocol)
    assert scan_bytes(data).verdict == "safe", scan_bytes(data).summary()


@pytest.mark.parametrize("filled_after", [False, True])
def test_backward_hooks_holding_an_inert_class_are_refused(tmp_path: Path, filled_after: bool) -> None:
    # torch._utils._rebuild_parameter(data, True, OrderedDict({0: PartialState})): torch.load sets the hooks, and
    # autograd calls PartialState(grad) on backward. Filled inline, or after the call through the memo's reference.
    hook = b"K\x00" + _global("accelerate.state", "PartialState") + b"s"
    hooks = _global("collections", "OrderedDict") + b")Rq\x01" + (b"" if filled_after else hook)
    tensor = _global("torch", "zeros") + b"K\x02\x85R"  # stands for the tensor (a call the scan reads as data)
    call = _global("torch._utils", "_rebuild_parameter") + tensor + b"\x88" + hooks + b"\x87R"
    data = b"\x80\x02" + call + (b"h\x01" + hook + b"0" if filled_after else b"") + b"."
    report = scan_bytes(data)
    assert report.verdict == "suspicious", report.summary()
    assert any("_rebuild_parameter sets a tensor's backward hooks to a dict that holds items" in p.message
               for p in report.problems), report.summary()


def test_genuine_parameters_and_tensors_keep_their_empty_hooks_safe(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    module = torch.nn.Linear(3, 2)
    torch.save({"module": module.state_dict(), "param": torch.nn.Parameter(torch.ones(2)),
                "hp": argparse.Namespace(lr=0.1)}, path)
    for protocol in (2, 4, 5):
        legacy = tmp_path / f"legacy{protocol}.pt"
        torch.save({"w": torch.ones(2), "p": torch.nn.Parameter(torch.ones(2))}, legacy,
                   _use_new_zipfile_serialization=False, pickle_protocol=protocol)
        assert scan_file(legacy).verdict == "safe", scan_file(legacy).summary()
    assert scan_file(path).verdict == "safe", scan_file(path).summary()
