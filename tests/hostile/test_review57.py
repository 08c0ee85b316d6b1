"""Review 57 of security4: the memo-list rule and the special-name rule, each evaded by another container.

security4 refused a list or tuple the pickle fetched again from its memo and handed to set / frozenset / deque /
Counter / OrderedDict, call after call. Any other container fetched again did the same and was called safe: a dict
(set and Counter iterate its keys), a set, frozenset or deque a call made (every call's result was one shared
object, so a GET of one was not told apart), a text (set of its characters), bytes (bytearray copies them), a list
handed to torch.Size. A 72 KB file of one 10,000-key dict and 1,000 set calls on it peaks `pickle.loads` at 719 MB.

security4 also refused a BUILD whose state dict sets `__deepcopy__`, but read the keys of dicts the pickle built
literally only: the same state made by Counter({...}) or Counter([...]), by a dict subclass NEWOBJ built and SETITEMS
filled (Lightning's AttributeDict), or keyed by a text subclass a call made (numpy.str_, equal to the name it holds)
was called safe, and copy.deepcopy of the loaded state dict returned what the file chose.
"""

from __future__ import annotations

import collections
import copy
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import one_error_line, pickle_loads_peak_kb, run_cli
from weightdoctor.security import scan_bytes, scan_file


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


_INTS = b"".join(b"J" + struct.pack("<i", i) for i in range(10_000))
_KEYS = b"".join(b"J" + struct.pack("<i", i) + b"N" for i in range(10_000))
# Each source pushes one container and keeps it as memo entry 0.
_SOURCES = {
    "dict": (b"}(" + _KEYS + b"u", "a dict"),
    "set_result": (_global("__builtin__", "set") + b"](" + _INTS + b"e\x85R", "what a call returned"),
    "frozenset_result": (_global("__builtin__", "frozenset") + b"](" + _INTS + b"e\x85R", "what a call returned"),
    "deque_result": (_global("collections", "deque") + b"](" + _INTS + b"e\x85R", "what a call returned"),
    "text": (_text("".join(chr(0x4E00 + i) for i in range(10_000))), "a text"),
}


def _copies(source: bytes, callee: tuple[str, str], calls: int, protocol: int = 2) -> bytes:
    """`source` kept in the memo (entry 0), then `calls` calls of `callee` on it, each fetched again by a GET, the
    results kept in a list (no POP: what torch's loader reads too)."""
    put = b"r" + struct.pack("<I", 0)
    body = (b"h\x01j" + struct.pack("<I", 0) + b"\x85R") * calls
    return (bytes([0x80, protocol]) + b"](" + source + put + _global(*callee) + b"r\x01\x00\x00\x00" + body
            + b"e.")


@pytest.mark.parametrize("case", [("dict", ("__builtin__", "set")), ("dict", ("collections", "Counter")),
                                  ("set_result", ("__builtin__", "set")),
                                  ("frozenset_result", ("collections", "Counter")),
                                  ("deque_result", ("__builtin__", "set")), ("text", ("__builtin__", "set"))])
def test_any_container_fetched_again_and_copied_call_after_call_is_refused(
        tmp_path: Path, case: tuple[str, tuple[str, str]]) -> None:
    source, callee = case
    data = _copies(_SOURCES[source][0], callee, 1_000)
    if case == ("dict", ("__builtin__", "set")):  # measured: what one such file costs its loader
        path = tmp_path / "copies.pkl"
        path.write_bytes(data)
        peak_kb = pickle_loads_peak_kb(path)
        assert len(data) < 75_000 and peak_kb > 400_000  # KB: more than 400 MB from a 72 KB file
        line = one_error_line(run_cli("inspect", str(path)))
        assert "suspicious" in line and "REDUCE calls __builtin__.set on a dict the pickle fetched again" in line
    report = scan_bytes(data)
    assert report.verdict == "suspicious", report.summary()
    assert (f"REDUCE calls {'.'.join(callee)} on {_SOURCES[source][1]} the pickle fetched again from its memo: "
            "each call copies every item it holds") in report.summary()


def test_a_protocol_4_frozenset_bytes_and_a_size_fetched_again_are_refused() -> None:
    frozen = b"\x80\x04(" + _INTS + b"\x91"  # FROZENSET opcode
    data = frozen + b"\x94" + b"".join(b"\x8c\x08builtins\x94\x8c\x03set\x94\x93h\x00\x85R" for _ in range(3)) + b"."
    report = scan_bytes(data)
    assert "REDUCE calls builtins.set on what a call returned the pickle fetched again" in report.summary()
    data = _copies(b"C\xff" + bytes(range(255)), ("__builtin__", "bytearray"), 3)  # SHORT_BINBYTES
    assert "REDUCE calls __builtin__.bytearray on bytes the pickle fetched again" in scan_bytes(data).summary()
    data = _copies(b"(" + _INTS + b"l", ("torch", "Size"), 3)
    assert "REDUCE calls torch.Size on a list the pickle fetched again" in scan_bytes(data).summary()


def test_genuine_files_sharing_containers_stay_safe(tmp_path: Path) -> None:
    """What pickle writes for shared values: set, frozenset, deque, Counter, bytearray and torch.Size each get a
    container made for them alone; a list, text or dict shared by two entries is fetched again and handed to no
    call. Dunder-like keys in a plain dict of the data are data."""
    shared = [1, 2, 3]
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    model[1].weight = model[0].weight  # tied
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([1, 2])).sum().backward()
    optimizer.step()
    hparams = {"layers": shared, "again": shared, "pair": (shared, shared), "tags": {"ab", "cd"},
               "frozen": frozenset(shared), "window": collections.deque(shared, maxlen=5), "cut": slice(0, 10, 2),
               "count": collections.Counter("aab"), "counters": [collections.Counter(a=1), collections.Counter(a=1)],
               "__version__": "1.0", "__metadata__": {"__format__": "pt"}, "names": ["layer.weight"] * 3,
               "buffers": [bytearray(b"a"), bytearray(b"a"), bytearray(b"xy")], "sizes": [torch.Size([2, 3])] * 2,
               "note": b"error rate: parameters p1234567\n r\x00\x00\x01\x00"}
    state = model.state_dict()
    checkpoint = {"state_dict": state, "again": state, "optimizer": optimizer.state_dict(), "hyper_parameters": hparams}
    for protocol in (2, 4):
        path = tmp_path / f"last_p{protocol}.ckpt"
        torch.save(checkpoint, path, pickle_protocol=protocol)
        report = scan_file(path)
        assert report.verdict == "safe", report.summary()
        result = run_cli("inspect", str(path))
        assert result.exit_code == 0 and "suspicious" not in result.stdout + result.stderr, result.stderr
        assert scan_bytes(pickle.dumps(hparams, protocol)).verdict == "safe"


def _ordered_dict_built_from(state: bytes) -> bytes:
    """`collections.OrderedDict()` and a BUILD of `state`: what torch.save writes for a state dict's attributes."""
    return b"\x80\x02" + _global("collections", "OrderedDict") + b")R" + state + b"b."


_COUNTER = _global("collections", "Counter")
_SPECIAL_STATES = {
    "counter_of_dict": _COUNTER + b"}(" + _text("__deepcopy__") + _COUNTER + b"u\x85R",
    "counter_of_list": _COUNTER + b"]" + _text("__deepcopy__") + b"a\x85R",
    "attribute_dict": (_global("lightning_fabric.utilities.data", "AttributeDict") + b")\x81" + _text("__deepcopy__")
                       + _COUNTER + b"s"),
    # protocols 0 and 1 write an AttributeDict as _reconstructor(AttributeDict, dict, its items), dict(items) copied in
    "reconstructed_attribute_dict": (_global("copy_reg", "_reconstructor") + b"("
                                     + _global("pytorch_lightning.utilities.parsing", "AttributeDict")
                                     + _global("__builtin__", "dict") + b"}" + _text("__deepcopy__") + _COUNTER
                                     + b"stR"),
}


@pytest.mark.parametrize("case", sorted(_SPECIAL_STATES))
def test_a_special_name_set_through_a_counter_or_a_dict_subclass_is_refused(case: str) -> None:
    data = _ordered_dict_built_from(_SPECIAL_STATES[case])
    if case == "counter_of_dict":  # what loading it does: copy.deepcopy of the state dict answers as the file chose
        assert isinstance(copy.deepcopy(pickle.loads(data)), collections.Counter)
        from torch import _weights_only_unpickler

        loaded = _weights_only_unpickler.Unpickler(io.BytesIO(data)).load()
        assert isinstance(copy.deepcopy(loaded), collections.Counter)
    report = scan_bytes(data)
    assert report.verdict == "suspicious", report.summary()
    assert "BUILD sets __deepcopy__ on an object through its state" in report.summary()


class _StateDictReduce:
    """Pickled as `OrderedDict()` and a BUILD of `state`, as torch.save writes a state dict with attributes."""

    def __init__(self, state: dict[object, object]) -> None:
        self.state = state

    def __reduce__(self) -> tuple[object, ...]:
        return (collections.OrderedDict, (), self.state)


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_special_name_as_a_text_subclass_a_call_made_is_refused(protocol: int) -> None:
    data = pickle.dumps(_StateDictReduce({np.str_("__deepcopy__"): collections.Counter}), protocol)
    assert isinstance(copy.deepcopy(pickle.loads(data)), collections.Counter)  # numpy.str_ equals the name
    report = scan_bytes(data)
    assert report.verdict == "suspicious", report.summary()
    assert "BUILD sets a name a call made (a text subclass such as numpy.str_" in report.summary()
    genuine = pickle.dumps(_StateDictReduce({"_metadata": {"": {"version": 1}}}), protocol)
    assert scan_bytes(genuine).verdict == "safe"


def test_reconstructor_handed_a_text_fetched_again_is_refused(tmp_path: Path) -> None:
    """copyreg._reconstructor(TorchVersion, str, text) copies the text (str.__new__): a 100,000-character text kept
    in the memo and handed to 1,000 such calls (a 188 KB file, every name inert) peaks pickle.loads at 313 MB."""
    text = _text("x" * 100_000)
    call = (_global("copy_reg", "_reconstructor") + b"(" + _global("torch.torch_version", "TorchVersion")
            + _global("__builtin__", "unicode") + b"j\x00\x00\x00\x00tR")
    data = b"\x80\x02](" + text + b"r\x00\x00\x00\x00" + call * 1_000 + b"e."
    report = scan_bytes(data)
    assert report.verdict == "suspicious", report.summary()
    assert "REDUCE calls copy_reg._reconstructor on a text the pickle fetched again from its memo" in report.summary()
    version = torch.torch_version.TorchVersion("2.5.1+cpu")
    for protocol in (0, 1):  # what protocols 0 and 1 write: str(version), a text made for each call
        other = torch.torch_version.TorchVersion("2.5.1+cpu")
        genuine = pickle.dumps({"torch": version, "again": version, "other": other,
                                "names": ["2.5.1+cpu", "2.5.1+cpu"]}, protocol)
        assert scan_bytes(genuine).verdict == "safe", scan_bytes(genuine).summary()


def test_bytes_made_call_after_call_from_one_value_fetched_again_are_refused() -> None:
    """bytes(list) and _codecs.encode(text, "latin1") copy what they are given: one 10,000-character text and
    20,000 encode calls on it (a 410 KB file) peaked pickle.loads at 203 MB; pickle writes a text made for each."""
    text = _text("x" * 10_000)
    encode = (b"\x80\x02](" + text + b"r\x00\x00\x00\x00" + _global("_codecs", "encode") + b"r\x01\x00\x00\x00"
              + b"h\x01j\x00\x00\x00\x00X\x06\x00\x00\x00latin1\x86R" * 3 + b"e.")
    assert "REDUCE calls _codecs.encode on a text the pickle fetched again" in scan_bytes(encode).summary()
    ints = b"(" + b"".join(b"K" + bytes([i % 256]) for i in range(10_000)) + b"l"
    assert "REDUCE calls __builtin__.bytes on a list the pickle fetched again" in scan_bytes(
        _copies(ints, ("__builtin__", "bytes"), 3)).summary()
    shared = b"ab"
    values = {"a": shared, "b": shared, "c": b"ab", "d": b"a", "e": b"a", "f": b"", "g": b"", "h": bytearray(b"ab")}
    for protocol in range(5):  # the same bytes twice is fetched again whole; equal ones get a text each
        assert scan_bytes(pickle.dumps(values, protocol)).verdict == "safe", protocol
