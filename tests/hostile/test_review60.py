"""Review 60 of review57: the shared `opcodes.FETCHED` marker and the special-name rule, attacked and checked for
false refusals.

review57 read the keys of a BUILD state made by `Counter({...})` or `Counter([...])`, but `Counter()` (a REDUCE with
no arguments, or NEWOBJ's `Counter.__new__`) stayed the one shared call result, whose keys SETITEM then set unseen:
`OrderedDict()` given the state `Counter()` + SETITEM `__deepcopy__` was called safe, and under
`torch.load(weights_only=True)` (and pickle.load) `copy.deepcopy` of the loaded state dict returned a Counter.
`collections.defaultdict()`, inert in a pickle of omegaconf containers, did the same under pickle.load.

Genuine files that share a call's result (a torch.Size, an OrderedDict of metadata, Counters, bytes, bytearrays,
numpy arrays sharing a dtype, tied weights, omegaconf containers with a resolver cache) stay safe, protocols 0-5 and
the legacy format.
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


_COUNTER = _global("collections", "Counter")
_FILL = _text("__deepcopy__") + _COUNTER + b"s"  # SETITEM: state["__deepcopy__"] = collections.Counter
# Each state: an empty mapping a call made, filled by SETITEM after the call.
_EMPTY_COUNTERS = {
    "reduce": _COUNTER + b")R" + _FILL,
    "newobj": _COUNTER + b")\x81" + _FILL,  # Counter.__new__(Counter)
    "fetched_again": _COUNTER + b")Rq\x000h\x00" + _FILL,  # BINPUT 0, POP, BINGET 0: the memo's reference
}


def _ordered_dict_built_from(state: bytes, before: bytes = b"") -> bytes:
    """`collections.OrderedDict()` and a BUILD of `state`: what torch.save writes for a state dict's attributes."""
    return b"\x80\x02" + before + _global("collections", "OrderedDict") + b")R" + state + b"b."


@pytest.mark.parametrize("case", sorted(_EMPTY_COUNTERS))
def test_an_empty_counter_filled_with_a_special_name_is_refused(tmp_path: Path, case: str) -> None:
    data = _ordered_dict_built_from(_EMPTY_COUNTERS[case])
    assert isinstance(copy.deepcopy(pickle.loads(data)), collections.Counter)  # what loading it does
    if case != "fetched_again":  # torch's weights_only loader reads these too (it has no POP)
        from torch import _weights_only_unpickler

        loaded = _weights_only_unpickler.Unpickler(io.BytesIO(data)).load()
        assert isinstance(copy.deepcopy(loaded), collections.Counter)
    report = scan_bytes(data)
    assert report.verdict == "suspicious", report.summary()
    assert "BUILD sets __deepcopy__ on an object through its state" in report.summary()
    path = tmp_path / "state.pt"
    path.write_bytes(data)
    line = one_error_line(run_cli("inspect", str(path)))
    assert "suspicious" in line and "BUILD sets __deepcopy__" in line


def test_a_defaultdict_filled_with_a_special_name_beside_omegaconf_is_refused() -> None:
    """defaultdict is inert only in a pickle of omegaconf containers (a resolver cache): there, one filled by SETITEM
    with __deepcopy__ and set as a state dict's attributes made copy.deepcopy return a Counter after pickle.load."""
    named = _global("omegaconf.dictconfig", "DictConfig") + b"0"  # named, then popped
    for made in (_global("collections", "defaultdict") + _global("builtins", "dict") + b"\x85R",
                 _global("collections", "defaultdict") + b")\x81"):
        data = _ordered_dict_built_from(made + _FILL, before=named)
        assert isinstance(copy.deepcopy(pickle.loads(data)), collections.Counter)
        report = scan_bytes(data)
        assert report.verdict == "suspicious", report.summary()
        assert "BUILD sets __deepcopy__ on an object through its state" in report.summary()
        assert "collections.defaultdict (inert" in report.summary()  # refused for the state, not for the name


@pytest.mark.filterwarnings("ignore:register_new_resolver")
def test_genuine_counters_and_defaultdicts_stay_safe(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("review60_twice", lambda x: 2 * int(x), use_cache=True, replace=True)
    config = OmegaConf.create({"model": {"lr": 0.1, "double": "${review60_twice:3}"}, "name": "x"})
    assert config.model.double == 6  # fills the resolver cache, a defaultdict(dict)
    hyper = {"config": config, "again": config, "counts": collections.Counter(a=2, b=1),
             "empty": collections.Counter(), "index": collections.defaultdict(list, {"k": [1]})}
    for protocol in range(6):
        path = tmp_path / f"hparams_p{protocol}.pt"
        torch.save(hyper, path, pickle_protocol=protocol)
        report = scan_file(path)
        assert report.verdict == "safe", (protocol, report.summary())


def _shared_call_results() -> dict[str, object]:
    """A checkpoint whose call results are referenced twice (the memo's GET fetches each again)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    model[1].weight = model[0].weight  # tied
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([1, 2])).sum().backward()
    optimizer.step()
    state = model.state_dict()
    again = collections.OrderedDict(state.items())
    again._metadata = state._metadata  # type: ignore[attr-defined]  # one _metadata, two parents
    size, metadata, counts = torch.Size([2, 3]), collections.OrderedDict(version=1), collections.Counter("aab")
    dtype = np.dtype("float32")
    arrays = [np.zeros(3, dtype), np.ones((2, 2), dtype), np.zeros(0, dtype), np.array([7], np.uint8)]
    values = {"sizes": [size, size, torch.zeros(2, 3).size()], "metadata": [metadata, metadata],
              "counts": [counts, counts], "bytes": [b"ab", b"ab", b"", b"", b"x", b"x"],
              "buffers": [bytearray(b"xy")] * 2 + [bytearray(), bytearray(), bytearray(b"q"), bytearray(b"q")],
              "sets": [{1, 2}] * 2, "frozen": [frozenset({1, 2})] * 2, "window": [collections.deque([1], 3)] * 2,
              "arrays": arrays + arrays, "dtypes": [dtype, dtype], "names": ["layer.weight"] * 3,
              "rng": [torch.get_rng_state(), np.random.RandomState(0).get_state()]}
    return {"state_dict": state, "again": again, "optimizer": optimizer.state_dict(), "values": values,
            "values_again": values}


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_genuine_files_fetching_call_results_again_stay_safe(tmp_path: Path, protocol: int) -> None:
    checkpoint = _shared_call_results()
    for zipped in (True, False):
        path = tmp_path / f"shared_p{protocol}_{'zip' if zipped else 'legacy'}.pt"
        torch.save(checkpoint, path, pickle_protocol=protocol, _use_new_zipfile_serialization=zipped)
        report = scan_file(path)
        assert report.verdict == "safe", (path.name, report.summary())
    plain = {key: value for key, value in checkpoint["values"].items() if key != "rng"}  # no tensor: pickle.dumps
    assert scan_bytes(pickle.dumps([plain, plain], protocol)).verdict == "safe"  # writes those by a torch call


class _DefaultDictOf:
    """Pickled as `collections.defaultdict(factory, items)`: items copied in by the call, which pickle never writes."""

    def __init__(self, factory: object, items: object) -> None:
        self.factory, self.items = factory, items

    def __reduce__(self) -> tuple[object, ...]:
        return (collections.defaultdict, (self.factory, self.items))


def test_a_defaultdict_given_items_to_copy_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """defaultdict is inert beside omegaconf containers (their resolver cache is defaultdict(dict)). Its items as a
    second argument are copied in: of a DictConfig, its ${oc.env:...} interpolations were resolved (the environment
    read into the loaded value); of one dict the memo fetched again, 1,000 calls (a 104 KB file) peaked pickle.loads
    at 311 MB. Both were called safe."""
    from omegaconf import OmegaConf

    config = OmegaConf.create({"secret": "${oc.env:REVIEW60_SECRET}", "steps": 1})
    data = pickle.dumps({"config": config, "copy": _DefaultDictOf(None, config)}, 2)
    monkeypatch.setenv("REVIEW60_SECRET", "hunter2")
    assert dict(pickle.loads(data)["copy"]) == {"secret": "hunter2", "steps": 1}  # what loading it does
    report = scan_bytes(data)
    assert report.verdict == "suspicious", report.summary()
    assert "REDUCE calls collections.defaultdict(None, " in report.summary()
    assert "a defaultdict's items are copied in from what follows its factory" in report.summary()

    keys = b"".join(b"J" + struct.pack("<i", i) + b"N" for i in range(10_000))
    call = _global("collections", "defaultdict") + _global("builtins", "dict") + b"h\x00\x86R"
    bomb = (b"\x80\x02" + _global("omegaconf.dictconfig", "DictConfig") + b"0](}(" + keys + b"uq\x00" + call * 1_000
            + b"e.")
    path = tmp_path / "copies.pkl"
    path.write_bytes(bomb)
    peak_kb = pickle_loads_peak_kb(path)
    assert len(bomb) < 110_000 and peak_kb > 200_000  # KB: more than 200 MB from a 104 KB file
    line = one_error_line(run_cli("inspect", str(path)))
    assert "suspicious" in line and "REDUCE calls collections.defaultdict(builtins.dict, " in line
    genuine = pickle.dumps({"config": config, "index": collections.defaultdict(list, {"k": [1]})}, 2)
    assert scan_bytes(genuine).verdict == "safe", scan_bytes(genuine).summary()


def _buffers_of_one_bytearray(size: int, calls: int, build: bool) -> bytes:
    """One bytearray (protocol 5's BYTEARRAY8) kept in the memo, then `calls` io.BytesIO made of it, each fetched
    again: `BytesIO(it)` (REDUCE) or, as pickle writes a BytesIO, NEWOBJ and a BUILD of `(it, 0, None)`."""
    source = b"\x96" + struct.pack("<Q", size) + bytes(size)
    one = (_global("_io", "BytesIO") + (b")\x81h\x00K\x00N\x87b" if build else b"h\x00\x85R"))
    return b"\x80\x05](" + source + b"q\x00" + one * calls + b"e."


@pytest.mark.parametrize("build", [False, True])
def test_io_buffers_made_of_one_bytearray_fetched_again_are_refused(tmp_path: Path, build: bool) -> None:
    """io.BytesIO copies a bytearray it is made of or given by BUILD: 1,000 of one 200 KB bytearray fetched again (a
    217 KB or 222 KB file) peaked pickle.loads at 236 MB, and the scan called it safe."""
    data = _buffers_of_one_bytearray(200_000, 1_000, build)
    path = tmp_path / "buffers.pkl"
    path.write_bytes(data)
    peak_kb = pickle_loads_peak_kb(path)
    assert len(data) < 225_000 and peak_kb > 150_000  # KB: more than 150 MB from a file of 222 KB at most
    report = scan_bytes(data)
    assert report.verdict == "suspicious", report.summary()
    said = "BUILD fills an io.BytesIO with a copy of bytes" if build else "REDUCE calls _io.BytesIO on bytes"
    assert f"{said} the pickle fetched again from its memo" in report.summary()
    line = one_error_line(run_cli("inspect", str(path)))
    assert "suspicious" in line and said in line


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_genuine_io_buffers_sharing_their_bytes_stay_safe(protocol: int) -> None:
    """Two BytesIO made of the same bytes pickle one bytes object (getvalue() returns it), fetched again for the
    second BUILD: what pickle writes, not refused."""
    value = bytes(range(100))
    buffers = [io.BytesIO(value), io.BytesIO(value), io.BytesIO(bytearray(b"xy")), io.BytesIO(), io.BytesIO()]
    data = pickle.dumps({"extra_state": buffers, "again": buffers}, protocol)
    report = scan_bytes(data)
    assert report.verdict == "safe", report.summary()
