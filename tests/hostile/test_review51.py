"""Review 51: security3's protocol 0/1 reading of copyreg._reconstructor, attacked.

security3 reads `copy_reg._reconstructor` and its bases (`object`, `dict`, `__builtin__.unicode`) as inert where every
use of them is a genuine reconstruction of an inert class. INST imports a global and calls it in one opcode, without
pushing it, so its use was never counted: beside a genuine TorchVersion, `INST __builtin__ unicode` with (data,
"punycode", "ignore") was safe, and a 200 KB file of it took torch.load(weights_only=False) 22 s of decoding. The same
built-ins are read as inert beside omegaconf containers (its metadata names them as values), where any call of them
was safe too: `builtins.dict(<a DictConfig>)` resolved its `${oc.env:NAME}` interpolations while the file loaded,
reading the environment into the loaded value.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import one_error_line, run_cli
from weightdoctor.security import scan_bytes


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _reconstruct(cls: tuple[str, str], base: tuple[str, str], state: bytes = b"N") -> bytes:
    """A protocol 0 REDUCE of copy_reg._reconstructor(cls, base, state), as pickle writes one."""
    return _global("copy_reg", "_reconstructor") + b"(" + _global(*cls) + _global(*base) + state + b"tR"


_TORCH_VERSION = _reconstruct(("torch.torch_version", "TorchVersion"), ("__builtin__", "unicode"), b"V2.5.0\n")
_NAMESPACE = _reconstruct(("argparse", "Namespace"), ("__builtin__", "object"))

# What a child process's pickle.load made of a file: the value under "note", as text.
_CHILD = """
import json, pickle, sys
with open(sys.argv[1], "rb") as handle:
    value = pickle.load(handle)
print(json.dumps({"note": str(value["note"])}))
"""


def _child(path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=300,
                          check=True, env={**os.environ, **(env or {})})
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_inst_of_a_reconstructor_base_runs_and_is_not_read_as_inert(tmp_path: Path) -> None:
    """INST __builtin__ unicode beside a genuine TorchVersion: str(data, codec, errors) of the file's choosing."""
    path = tmp_path / "model.pkl"
    path.write_bytes(b"(dp0\nVversion\n" + _TORCH_VERSION + b"sVnote\n(C\x05bcd-a" + b"Vpunycode\nVignore\n"
                     + b"i__builtin__\nunicode\ns.")
    # The canary: the codec the file names ran while it loaded (punycode's "bcd-a" is "bcda" with U+0080 inserted).
    assert _child(path) == {"note": "\x80bcd"}
    report = scan_bytes(path.read_bytes())
    safety = {g.qualified: g.safety for g in report.globals}
    assert safety["__builtin__.unicode"] == "unknown" and safety["copy_reg._reconstructor"] == "inert"
    assert report.verdict == "suspicious", report.summary()
    assert "INST calls builtins.str(b'bcd-a', 'punycode', 'ignore'): a checkpoint names this type as a value" in \
        report.summary()
    line = one_error_line(run_cli("inspect", str(path)))
    assert line.startswith(f"error: {path}: suspicious: ") and "nothing was unpickled" in line
    assert "__builtin__.unicode (unknown, GLOBAL in pickle 1" in line and "INST calls builtins.str(" in line


@pytest.mark.parametrize(("inst", "called"), [
    (b"(i__builtin__\nobject\n", "__builtin__.object"),
    (b"(I1\ni__builtin__\ndict\n", "__builtin__.dict"),
])
def test_a_base_imported_by_inst_is_never_vouched_for(inst: bytes, called: str) -> None:
    """Each base stays what `classify` says once INST imports it: INST uses it for something other than a
    reconstruction, whatever it builds."""
    attribute_dict = _reconstruct(("lightning_fabric.utilities.data", "AttributeDict"), ("__builtin__", "dict"), b"(d")
    data = b"(dp0\nVa\n" + _NAMESPACE + b"sVd\n" + attribute_dict + b"sVnote\n" + inst + b"s."
    report = scan_bytes(data)
    safety = {g.qualified: g.safety for g in report.globals}
    assert safety[called] in ("dangerous", "unknown"), report.summary()
    assert report.verdict != "safe"
    # and without the INST, the same reconstructions are read as inert
    genuine = scan_bytes(b"(dp0\nVa\n" + _NAMESPACE + b"sVd\n" + attribute_dict + b"s.")
    assert genuine.verdict == "safe", genuine.summary()


def test_a_type_omegaconf_names_called_beside_its_containers_is_refused(tmp_path: Path) -> None:
    """builtins.dict called on a DictConfig: omegaconf's pickles name dict as a value and never call it."""
    omegaconf = pytest.importorskip("omegaconf")
    config = pickle.dumps(omegaconf.OmegaConf.create({"lr": 0.1, "home": "${oc.env:REVIEW51_CANARY}"}), 2)
    assert config[:2] == b"\x80\x02" and config[-1:] == b"."
    path = tmp_path / "model.pkl"
    # {"note": dict(<the DictConfig>)}, in protocol 2 opcodes
    path.write_bytes(b"\x80\x02}X\x04\x00\x00\x00note" + _global("__builtin__", "dict") + config[2:-1] + b"\x85Rs.")
    # The canary: the environment variable the config names is read into the loaded value.
    assert _child(path, {"REVIEW51_CANARY": "read-from-env"}) == {"note": "{'lr': 0.1, 'home': 'read-from-env'}"}
    report = scan_bytes(path.read_bytes())
    assert report.verdict == "suspicious", report.summary()
    assert "REDUCE calls builtins.dict(" in report.summary()
    assert "dict of a DictConfig resolves its ${oc.env:...} interpolations" in report.summary()
    line = one_error_line(run_cli("inspect", str(path)))
    assert "suspicious: " in line and "REDUCE calls builtins.dict(" in line and "nothing was unpickled" in line
    # str(data, "punycode"), the same way
    punycode = (b"\x80\x02}(X\x01\x00\x00\x00k" + _global("omegaconf.dictconfig", "DictConfig") + b"X\x01\x00\x00\x00x"
                + _global("__builtin__", "str") + b"C\x03abcX\x08\x00\x00\x00punycode\x86Ru.")
    assert "REDUCE calls builtins.str(b'abc', 'punycode')" in scan_bytes(punycode).summary()
    # the genuine config, in every protocol, stays safe
    for protocol in range(6):
        assert scan_bytes(pickle.dumps(omegaconf.OmegaConf.create({"lr": 0.1, "n": {"l": [1, "a"]}}),
                                       protocol)).verdict == "safe", protocol


def test_memo_gets_after_a_reconstruction_name_cost_the_scan_at_most_an_item_a_byte() -> None:
    """Once copy_reg._reconstructor (or a base) is pushed, every memo GET is looked into: GETs of a 63-int tuple (2M
    in a 6 MB file) took the scan 60 s where the same file without the name took 5.5 s."""
    import time

    gets = b"(" + b"K\x01" * 62 + b"tq\x01" + b"h\x010" * 300_000 + b"N."
    timings = []
    for head in (b"", _global("copy_reg", "_reconstructor") + b"0"):
        started = time.perf_counter()
        report = scan_bytes(b"\x80\x02" + head + gets)
        timings.append(time.perf_counter() - started)
    assert report.verdict == "dangerous" and "copy_reg._reconstructor (dangerous" in report.summary()
    assert timings[1] < 3 * timings[0] + 0.5, timings


def test_a_protocol_1_torch_save_of_many_tensors_beside_a_namespace_stays_safe(tmp_path: Path) -> None:
    import argparse

    import torch

    path = tmp_path / "checkpoint.pt"
    weights = {f"layer{i}.weight": torch.full((2,), float(i)) for i in range(3000)}
    torch.save({"args": argparse.Namespace(arch="transformer", lr=[0.1]), "model": weights}, path, pickle_protocol=1)
    result = run_cli("inspect", str(path), "--key", "model", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["security"]["verdict"] == "safe" and data["num_tensors"] == 3000


_NESTED_CHILD = """
import json, pickle, sys, torch
blob = torch.load(sys.argv[1], weights_only=True)["blob"]
print(json.dumps({"note": str(pickle.loads(blob)["note"])}))
"""


def test_a_bytes_value_holding_a_pickle_of_inert_names_that_misuses_them_is_refused(tmp_path: Path) -> None:
    """A bytes value's pickle was refused only for the names it imports: one of safe and inert names whose calls or
    BUILDs the scan refuses (dict of a DictConfig, Fraction of an exponent, a slot state setting __class__) made the
    outer file safe, and the code that unpickles the value ran them."""
    omegaconf = pytest.importorskip("omegaconf")
    import torch

    config = pickle.dumps(omegaconf.OmegaConf.create({"home": "${oc.env:REVIEW51_CANARY}"}), 2)
    reads_env = (b"\x80\x02}X\x04\x00\x00\x00note" + _global("__builtin__", "dict") + config[2:-1] + b"\x85Rs.")
    path = tmp_path / "state.pt"
    torch.save({"w": torch.ones(2), "blob": reads_env}, path)
    # The canary: the checkpoint's own loader, pickle.loads(ckpt["blob"]), reads the environment variable.
    done = subprocess.run([sys.executable, "-c", _NESTED_CHILD, str(path)], capture_output=True, text=True,
                          timeout=300, check=True, env={**os.environ, "REVIEW51_CANARY": "read-from-env"})
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"note": "{'home': 'read-from-env'}"}
    line = one_error_line(run_cli("inspect", str(path)))
    assert line.startswith(f"error: {path}: suspicious: the bytes value at blob holds a pickle that, at byte "), line
    assert "REDUCE calls builtins.dict(" in line and "the outer file's own globals are safe" in line
    fraction = b"\x80\x02" + _global("fractions", "Fraction") + b"X\x0a\x00\x00\x001e10000000\x85R."
    slot_class = (_NAMESPACE + b"(N(dV__class__\n" + _global("pytorch_lightning.callbacks.model_checkpoint",
                                                              "ModelCheckpoint") + b"stb.")
    # junk after the STOP, which pickle.loads never reads, made the protocol 0 pickle one that does not parse
    for blob, words in ((fraction, "REDUCE calls fractions.Fraction('1e10000000',)"),
                        (slot_class, "BUILD sets the state of a argparse.Namespace to a pair"),
                        (slot_class + b"cjunk\nname\n)", "BUILD sets the state of a argparse.Namespace to a pair")):
        torch.save({"w": torch.ones(2), "blob": blob}, path)
        line = one_error_line(run_cli("inspect", str(path)))
        assert "suspicious: the bytes value at blob holds a pickle that, at byte " in line and words in line, line
    # genuine values stay readable: a pickled Namespace (protocols 0 and 2), text that only looks like opcodes
    import argparse

    for blob in (pickle.dumps({"args": argparse.Namespace(lr=0.1)}, 0), pickle.dumps(argparse.Namespace(a=1), 2),
                 b"c'est la vie\ni\n(p9999999\n", b"\x80\x02 not a pickle c i"):
        torch.save({"w": torch.ones(2), "blob": blob}, path)
        result = run_cli("inspect", str(path), "--json")
        assert result.exit_code == 0, (blob, result.stderr)
        assert json.loads(result.stdout)["num_tensors"] == 1


_ITERATED_CHILD = """
import pathlib, pickle, sys
import transformers.trainer_utils as utils
meta = type(utils.IntervalStrategy)
iterate = meta.__iter__
def watched(cls):  # the canary: a file written when the enum class is iterated
    pathlib.Path(sys.argv[2]).write_text(cls.__name__)
    return iterate(cls)
meta.__iter__ = watched
try:
    pickle.loads(pathlib.Path(sys.argv[1]).read_bytes())
except ValueError:
    pass
"""


def test_a_pair_replaced_by_setitem_on_the_list_ordered_dict_reads_is_seen(tmp_path: Path) -> None:
    """SETITEM works on a list (list[0] = value): OrderedDict([["k", "v"]]) had its pair replaced by an enum class
    the walk never saw, and OrderedDict iterated the class while the file loaded, from a pickle called safe."""
    pytest.importorskip("transformers")
    data = (b"\x80\x02" + _global("collections", "OrderedDict") + b"](](X\x01\x00\x00\x00kX\x01\x00\x00\x00veeK\x00"
            + _global("transformers.trainer_utils", "IntervalStrategy") + b"s\x85R.")
    path, canary = tmp_path / "model.pkl", tmp_path / "iterated"
    path.write_bytes(data)
    subprocess.run([sys.executable, "-c", _ITERATED_CHILD, str(path), str(canary)], check=True, timeout=300)
    assert canary.read_text() == "IntervalStrategy"
    report = scan_bytes(data)
    assert report.verdict == "suspicious", report.summary()
    assert ("REDUCE calls collections.OrderedDict on a list whose item 0 is transformers.trainer_utils."
            "IntervalStrategy, not a [key, value] pair") in report.summary()
    # a key the walk cannot read leaves the list unknown; a pair set in place of a pair is what it was
    unknown_key = data.replace(b"K\x00", _global("torch", "Size") + b")\x85R")
    assert "calls collections.OrderedDict on a list whose item 1 is <opaque>" in scan_bytes(unknown_key).summary()
    replaced = data.replace(_global("transformers.trainer_utils", "IntervalStrategy"),
                            b"]" + b"(X\x01\x00\x00\x00aX\x01\x00\x00\x00be")
    assert scan_bytes(replaced).verdict == "safe"
    assert pickle.loads(replaced) == {"a": "b"}


# tracemalloc, not ru_maxrss: the peak resident size moved by 0 MB in one run of the full suite (the pages the memo
# takes need not all be resident), while the memo's allocation is traced the same every time.
_MEMORY_CHILD = """
import pickle, sys, torch, tracemalloc
blob = torch.load(sys.argv[1], weights_only=True)["blob"]
tracemalloc.start()
pickle.loads(blob)
print(tracemalloc.get_traced_memory()[1] // 2**20)
"""


def test_a_bytes_value_pickle_that_imports_nothing_is_still_scanned(tmp_path: Path) -> None:
    """Values with no import opcode byte were never scanned: a 9-byte pickle whose LONG_BINPUT index is 2**24 imports
    nothing, and the checkpoint's pickle.loads of it set aside hundreds of MB (2**32 - 1: 64 GB)."""
    import torch

    blob = b"\x80\x02Nr" + (1 << 24).to_bytes(4, "little") + b"."
    path = tmp_path / "state.pt"
    torch.save({"w": torch.ones(2), "blob": blob}, path)
    done = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(path)], capture_output=True, text=True,
                          timeout=300, check=True)
    assert int(done.stdout.strip().splitlines()[-1]) > 100  # the canary: MB the load took
    line = one_error_line(run_cli("inspect", str(path)))
    assert line.startswith(f"error: {path}: suspicious: the bytes value at blob holds a pickle that, at byte 3, memo "
                           "index 16,777,216, a number no pickler reaches this early"), line
