"""Security 5: the scanner's amplification rules, seen whole: what a few-KB pickle of allowed names copies at load.

A BUILD copies every item of its state into the object it builds (an instance's __dict__, an object array's data),
and a state the memo fetched again is copied again: one 10,000-key dict as the state of 1,000 OrderedDicts (a 133 KB
file) took torch.load(weights_only=True) 204 MB more and was called safe. accelerate's PartialState (a Borg: every
instance shares one __dict__) pickles its 9 fields once and fetches them again for each other instance, so the rule
is a bound on the entries such BUILDs copy (65,536 besides one per byte walked), not a refusal of the GET. The same
bound counts torch's _rebuild_parameter_with_state (setattr of each item of its state: 1,000 Parameters of one
10,000-key state, 200 KB, +206 MB) and a Counter(text)'s characters; a BUILD state that is a call's result (a tensor
view of a million rows of two, 1.6 KB) made torch's weights_only loader peak at 2,041 MB and is refused.

`set`, `Counter`, `torch.Size` and `bytearray` of a tensor iterate it: each element becomes a Python tensor, and a
view of one stored byte as a million elements (a 1.7 KB file) took torch.load(weights_only=True) 675 MB more. pickle
writes what such a call copies as a literal made for it (protocol 2's bytearray(_codecs.encode(text)) aside).

torch's device rebuilds convert the array or tensor they are given, and numpy's `_frombuffer` over bytes makes a
read-only array weightdoctor's reader copies: one array or buffer the memo fetched again for call after call made
`weightdoctor inspect` peak at 1,029 MB (100 calls, 1.0 MB file) and 540 MB (300 calls, 1.0 MB), called safe.

A bytes value in a checkpoint is never unpickled by torch.load of the file holding it (weights_only or not): no
allowlisted rebuild runs pickle on bytes (numpy refuses an object array's data that is not a list), so a blob with
no PROTO byte naming an unknown module stays read, and the module stays unimported.
"""

from __future__ import annotations

import collections
import pickle
import pickletools
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers import (
    PEAK_KB_EXPRESSION,
    one_error_line,
    pickle_loads_peak_kb,
    run_canary_child,
    run_cli,
    torch_zip_with_data_pkl,
)
from weightdoctor.security import scan_bytes, scan_file

# The canary of a memory bomb: the child's own peak resident memory (KB) after it read the file.
_PEAK = ("", f'{{"peak_kb": {PEAK_KB_EXPRESSION}}}')


def _long_binput(index: int) -> bytes:
    return b"r" + struct.pack("<I", index)


def _long_binget(index: int) -> bytes:
    return b"j" + struct.pack("<I", index)


def _text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _shared_state(keys: int, uses: int) -> bytes:
    """A protocol 2 list of `uses` OrderedDicts, each given one `keys`-key dict as its BUILD state (written once,
    fetched again from the memo for every other one)."""
    out = [b"\x80\x02]", _long_binput(0), b"(", b"ccollections\nOrderedDict\n", _long_binput(1), b")R", b"}",
           _long_binput(2), b"("]
    out += [_text(f"k{i:05d}") + b"N" for i in range(keys)]
    out.append(b"ub")
    for _ in range(uses - 1):
        out += [_long_binget(1), b")R", _long_binget(2), b"b"]
    out.append(b"e.")
    return b"".join(out)


def test_one_dict_set_as_the_state_of_object_after_object_is_refused(tmp_path: Path) -> None:
    data = _shared_state(10_000, 1_000)
    plain = tmp_path / "shared_state.pkl"
    plain.write_bytes(data)
    assert len(data) < 140_000 and pickle_loads_peak_kb(plain) > 150_000  # measured: 133 KB -> 216 MB
    archive = torch_zip_with_data_pkl(tmp_path, "shared_state", data)
    small = torch.load(torch_zip_with_data_pkl(tmp_path, "small", _shared_state(10, 3)), weights_only=True)
    assert len(small) == 3 and len(vars(small[-1])) == 10  # names torch's weights_only loader allows: it loads
    for path in (plain, archive):
        report = scan_file(path)
        assert report.verdict == "suspicious", report.summary()
        assert "BUILD copies 190,000 entries into objects from states the pickle fetched again" in report.summary()
        line = one_error_line(run_cli("inspect", str(path)))
        assert ": suspicious: " in line and "each one copies every item of its state into the object" in line
    # The canary: the peak memory of what reads the file. torch.load(weights_only=False) copies the state 1,000
    # times; weightdoctor refuses it before anything is unpickled.
    torch_peak = run_canary_child(*_PEAK, "torch", archive)["peak_kb"]
    ours = run_canary_child(*_PEAK, "weightdoctor", archive)["peak_kb"]
    assert torch_peak - ours > 100_000, (torch_peak, ours)


def test_a_state_shared_within_the_bound_stays_safe_and_past_it_is_refused() -> None:
    """The bound is 65,536 copied entries besides one per byte walked: 100 keys shared 100 times (9,900 copies) is
    far within it; 2,000 keys shared 200 times (398,000 copies from a 27 KB pickle) is not."""
    assert scan_bytes(_shared_state(100, 100)).verdict == "safe"
    report = scan_bytes(_shared_state(2_000, 200))
    assert report.verdict == "suspicious" and "BUILD copies" in report.summary()


def test_accelerates_shared_partial_state_stays_safe(tmp_path: Path) -> None:
    """PartialState is a Borg: its instances share one __dict__, which pickle writes once and fetches again for the
    BUILD of every other instance (here three, beside a Trainer's TrainingArguments that holds one)."""
    transformers = pytest.importorskip("transformers")
    accelerate_state = pytest.importorskip("accelerate.state")
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "run"), report_to=[], use_cpu=True)
    assert args.device.type == "cpu"  # sets args.distributed_state, a PartialState
    states = [accelerate_state.PartialState() for _ in range(3)]
    assert vars(states[0]) is vars(states[1])
    for protocol in (0, 2, 4):
        data = pickle.dumps([*states, args], protocol=protocol)
        refetched = [op.name for op, _, _ in pickletools.genops(data)]
        assert refetched.count("BUILD") >= 4
        assert scan_bytes(data).verdict == "safe", scan_bytes(data).summary()
        path = tmp_path / f"borg_p{protocol}.bin"
        torch.save([*states, args], path, pickle_protocol=protocol)
        report = scan_file(path)
        assert report.verdict == "safe", report.summary()


def test_one_state_set_on_parameter_after_parameter_is_refused(tmp_path: Path) -> None:
    """torch's _rebuild_parameter_with_state setattrs each item of its state on the Parameter (as BUILD updates a
    __dict__): one 10,000-key dict fetched again for 1,000 Parameters (a 200 KB file) took
    torch.load(weights_only=True) 206 MB more (431 MB against 225 MB for two Parameters of 10 keys)."""
    weights = torch.zeros(2)
    shared = {f"k{i:05d}": None for i in range(10_000)}
    path = tmp_path / "parameters.pt"
    torch.save([_Call(torch._utils._rebuild_parameter_with_state, weights, False, collections.OrderedDict(), shared)
                for _ in range(1_000)], path)
    assert path.stat().st_size < 210_000
    report = scan_file(path)
    assert report.verdict == "suspicious", report.summary()
    assert "torch._utils._rebuild_parameter_with_state copies 240,000 entries into objects" in report.summary()
    torch_peak = run_canary_child(*_PEAK, "torch", path)["peak_kb"]
    ours = run_canary_child(*_PEAK, "weightdoctor", path)["peak_kb"]
    assert torch_peak - ours > 100_000, (torch_peak, ours)
    genuine = tmp_path / "genuine_parameters.pt"
    torch.save([_Call(torch._utils._rebuild_parameter_with_state, torch.zeros(2), False, collections.OrderedDict(),
                      {"tp_split": i, "note": "x"}) for i in range(200)], genuine)
    assert scan_file(genuine).verdict == "safe"


def test_a_counter_of_text_as_a_shared_state_counts_its_characters(tmp_path: Path) -> None:
    """Counter(text) makes a key of each character: 10,000 distinct ones, the state of 1,000 OrderedDicts (a 43 KB
    file) peaked pickle.loads at 216 MB, and its keys were counted as none."""
    text = "".join(chr(0x4E00 + i) for i in range(10_000)).encode()
    out = [b"\x80\x02]", _long_binput(0), b"(ccollections\nOrderedDict\n", _long_binput(1), b")R",
           b"ccollections\nCounter\nX", struct.pack("<I", len(text)), text, b"\x85R", _long_binput(2), b"b"]
    out += [_long_binget(1) + b")R" + _long_binget(2) + b"b"] * 999
    path = tmp_path / "counter_state.pkl"
    path.write_bytes(b"".join(out) + b"e.")
    assert path.stat().st_size < 45_000 and pickle_loads_peak_kb(path) > 150_000
    report = scan_file(path)
    assert report.verdict == "suspicious" and "BUILD copies 100,000 entries" in report.summary(), report.summary()


def test_a_tensor_as_a_build_state_is_refused(tmp_path: Path) -> None:
    """torch's weights_only loader runs `OrderedDict.__dict__.update(state)` whatever the state: a view of one stored
    float as 500,000 rows of two makes 500,000 entries, each key a 0-d tensor (1e6 rows, a 1.6 KB file: 2,041 MB)."""
    view = torch.zeros(1).expand(500_000, 2)
    path = tmp_path / "tensor_state.pt"
    torch.save({"w": _Built(collections.OrderedDict, view)}, path)
    assert path.stat().st_size < 2_000
    report = scan_file(path)
    assert report.verdict == "suspicious", report.summary()
    assert "BUILD sets the state of an object to what a call returned (a tensor, an array)" in report.summary()
    # pickle.load refuses a state that is not a dict; torch's weights_only loader takes it. The full loader's peak is
    # held to a plain file's (importing torch alone peaked at 225 MB here, 500 MB with CUDA on the GPU machine)
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2)}, plain)
    baseline = run_canary_child(*_PEAK, "torch", plain)["peak_kb"]
    assert run_canary_child(*_PEAK, "torch", path)["peak_kb"] - baseline < 100_000, baseline
    torch_peak = _weights_only_peak_kb(path)
    ours = run_canary_child(*_PEAK, "weightdoctor", path)["peak_kb"]
    assert torch_peak - ours > 300_000, (torch_peak, ours)


def _weights_only_peak_kb(path: Path) -> int:
    """The peak resident memory (KB) of a fresh process that runs torch.load(path, weights_only=True)."""
    code = f"import sys, torch; torch.load(sys.argv[1], weights_only=True); print({PEAK_KB_EXPRESSION})"
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True,
                          timeout=300)
    return int(done.stdout)


class _Built:
    """Pickles as `cls()` and a BUILD of `state`."""

    def __init__(self, cls: type, state: Any) -> None:
        self.cls, self.state = cls, state

    def __reduce__(self) -> tuple[Any, tuple[()], Any]:
        return self.cls, (), self.state


class _Call:
    """Pickles as `callee(*args)`."""

    def __init__(self, callee: Any, *args: Any) -> None:
        self.callee, self.args = callee, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.callee, self.args


@pytest.mark.parametrize("callee", [set, collections.Counter, torch.Size, bytearray])
def test_a_copying_call_on_a_tensor_is_refused(tmp_path: Path, callee: Any) -> None:
    view = torch.zeros(1, dtype=torch.uint8).expand(1_000_000)  # one stored byte, a million elements
    path = tmp_path / "iterated.pt"
    torch.save({"w": _Call(callee, view)}, path)
    assert path.stat().st_size < 2_000
    report = scan_file(path)
    assert report.verdict == "suspicious", report.summary()
    assert "on what a call returned (a tensor, a set, a Counter): it iterates it item by item" in report.summary()
    line = one_error_line(run_cli("inspect", str(path)))
    assert ": suspicious: " in line and "a tensor's elements become one Python tensor each" in line
    if callee is set:  # the canary, once: torch.load builds a million tensors; weightdoctor refuses first
        torch_peak = run_canary_child(*_PEAK, "torch", path)["peak_kb"]
        ours = run_canary_child(*_PEAK, "weightdoctor", path)["peak_kb"]
        assert torch_peak - ours > 300_000, (torch_peak, ours)


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_containers_pickle_writes_as_calls_stay_safe(tmp_path: Path, protocol: int) -> None:
    """bytearray(_codecs.encode(text, "latin1")) is how protocol 2 writes a bytearray: a call on a call's result that
    copies the text the file holds once."""
    value = {"w": torch.ones(2), "bytes": b"xyz" * 10, "buffer": bytearray(b"abc" * 10), "set": {1, 2, 3},
             "counter": collections.Counter("hello"), "size": torch.Size([2, 3]), "frozen": frozenset({4, 5})}
    path = tmp_path / f"values_p{protocol}.pt"
    torch.save(value, path, pickle_protocol=protocol)
    report = scan_file(path)
    assert report.verdict == "safe", report.summary()


def _object_arrays(arrays: int, items: int) -> bytes:
    """A protocol 3 dict of `arrays` object arrays, each _reconstruct(ndarray, (0,), b"b") and a BUILD whose data is
    one `items`-item list, written once and fetched again from the memo."""
    out = [b"\x80\x03cnumpy.core.multiarray\n_reconstruct\n", _long_binput(1), b"cnumpy\nndarray\n", _long_binput(2),
           b"cnumpy\ndtype\n", _long_binput(3), b"000", b"](", b"N" * items, b"e", _long_binput(4), b"0",
           _long_binget(3), _text("O8"), b"\x89\x88\x87R", _long_binput(5),
           b"(K\x03X\x01\x00\x00\x00|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb", b"0}(" ]
    for i in range(arrays):
        out += [_text(f"a{i}"), _long_binget(1), _long_binget(2), b"K\x00\x85C\x01b\x87R(K\x01",
                b"J" + struct.pack("<i", items) + b"\x85", _long_binget(5), b"\x89", _long_binget(4), b"tb"]
    out.append(b"u.")
    return b"".join(out)


def test_an_object_array_built_again_from_one_list_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "object_arrays.pkl"
    path.write_bytes(_object_arrays(1_000, 100_000))
    assert path.stat().st_size < 160_000 and pickle_loads_peak_kb(path) > 400_000  # measured: 152 KB -> 809 MB
    small = pickle.loads(_object_arrays(3, 10))  # what the file is: object arrays whose data is the one list
    assert len(small) == 3 and small["a0"].dtype == object and small["a0"].shape == (10,)
    report = scan_file(path)
    assert report.verdict == "suspicious", report.summary()
    assert "an object array's data" in report.summary()
    assert ": suspicious: " in one_error_line(run_cli("inspect", str(path)))


def test_genuine_numpy_arrays_stay_safe(tmp_path: Path) -> None:
    """numpy writes each array's data (an object array's list, a buffer) for that array alone; arrays sharing a dtype
    fetch the dtype again, which is no copy."""
    rng = np.random.default_rng(0)
    values = {"objects": np.array([1, "a", None] * 50, dtype=object),
              "more_objects": np.array([{"k": 1}] * 20, dtype=object),
              **{f"f{i}": rng.standard_normal(64).astype(np.float32) for i in range(20)},
              "view": np.arange(100, dtype=np.int64)[10:50]}
    values["same"] = values["f0"]  # one array twice: fetched again whole, not its buffer
    for protocol in (2, 3, 4, 5):
        data = pickle.dumps(values, protocol=protocol)
        assert scan_bytes(data).verdict == "safe", (protocol, scan_bytes(data).summary())


def _device_rebuilds(tmp_path: Path, calls: int, shared: bool) -> Path:
    one = np.zeros(1_000_000, np.uint8)
    arrays = [one if shared else np.zeros(10_000, np.uint8) for _ in range(calls)]
    path = tmp_path / f"device_{calls}_{shared}.pt"
    torch.save({f"w{i}": _Call(torch._utils._rebuild_device_tensor_from_numpy, array, torch.float64, "cpu", False)
                for i, array in enumerate(arrays)}, path, pickle_protocol=2)
    return path


def test_a_device_rebuild_of_one_array_fetched_again_is_refused(tmp_path: Path) -> None:
    path = _device_rebuilds(tmp_path, 100, shared=True)
    assert path.stat().st_size < 1_100_000
    report = scan_file(path)
    assert report.verdict == "suspicious", report.summary()
    assert ("REDUCE calls torch._utils._rebuild_device_tensor_from_numpy on an array or tensor the pickle fetched "
            "again from its memo: each call converts it") in report.summary()
    # The canary: torch.load converts the array 100 times (800 MB of float64); weightdoctor refuses first.
    torch_peak = run_canary_child(*_PEAK, "torch", path)["peak_kb"]
    ours = run_canary_child(*_PEAK, "weightdoctor", path)["peak_kb"]
    assert torch_peak - ours > 400_000, (torch_peak, ours)
    assert scan_file(_device_rebuilds(tmp_path, 20, shared=False)).verdict == "safe"


def _frombuffer_calls(calls: int, size: int) -> bytes:
    """A protocol 5 dict of `calls` arrays, each numpy's _frombuffer(buffer, dtype, shape, order) over one bytes
    value written once and fetched again."""
    out = [b"\x80\x05cnumpy.core.numeric\n_frombuffer\n", _long_binput(1), b"0",
           b"B" + struct.pack("<I", size) + b"\x00" * size, _long_binput(2), b"0",
           b"cnumpy\ndtype\n", _text("u1"), b"\x89\x88\x87R", _long_binput(3), b"0}("]
    for i in range(calls):
        out += [_text(f"a{i}"), _long_binget(1), b"(", _long_binget(2), _long_binget(3),
                b"J" + struct.pack("<i", size) + b"\x85", _text("C"), b"tR"]
    out.append(b"u.")
    return b"".join(out)


def test_a_buffer_fetched_again_for_frombuffer_is_refused(tmp_path: Path) -> None:
    small = pickle.loads(_frombuffer_calls(3, 10))
    assert len(small) == 3 and not small["a0"].flags.writeable  # read-only: weightdoctor's reader copies each
    data = _frombuffer_calls(300, 1_000_000)
    path = tmp_path / "buffers.pkl"
    path.write_bytes(data)
    report = scan_file(path)
    assert report.verdict == "suspicious", report.summary()
    assert "_frombuffer on a buffer the pickle fetched again from its memo" in report.summary()
    line = one_error_line(run_cli("inspect", str(path)))
    assert ": suspicious: " in line and "weightdoctor's reader copies each one into a tensor" in line


def test_a_bytes_blob_naming_an_unknown_module_is_never_unpickled_by_torch_load(tmp_path: Path) -> None:
    """A bytes value of no PROTO byte that names a global neither dangerous nor known (protocol 0 text) is read, as
    binary data that parses so by chance is: torch.load of the file holding it, weights_only or not, unpickles no
    bytes value, and weightdoctor neither. The module named (`this`, which prints on import) stays unimported."""
    blob = b"cthis\ns\n."
    assert pickle.loads(blob)  # what a loader that unpickled the value would do: import `this`
    path = tmp_path / "blob.pt"
    torch.save({"w": torch.ones(2), "blob": blob}, path)
    assert scan_file(path).verdict == "safe"
    probe = ("import sys", '{"imported": "this" in sys.modules}')
    assert run_canary_child(*probe, "torch", path) == {"imported": False}
    assert run_canary_child(*probe, "weightdoctor", path) == {"imported": False}
