"""Red team, round 23: where the scanner and torch.load read different bytes, or read the same bytes differently."""

from __future__ import annotations

import io
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers import run_cli
from weightdoctor.security.scan import scan_bytes, scan_file


def _no_proto_system_call(sentinel: Path) -> bytes:
    """A pickle of protocol 4 opcodes without PROTO that calls posix.system through STACK_GLOBAL: carving, which
    looks for PROTO or a GLOBAL line, does not find it."""
    command = f"touch '{sentinel}'".encode()
    return b"\x8c\x05posix\x8c\x06system\x93\x8c" + bytes([len(command)]) + command + b"\x85R."


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _storage_record(args: object) -> bytes:
    """One record of a legacy tar's "storages": its pickled arguments, an int64 count, one float."""
    return pickle.dumps(args, protocol=2) + struct.pack("<q", 1) + struct.pack("<f", 1.0)


def _torch_load_runs(path: Path, sentinel: Path) -> bool:
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"],
                   capture_output=True, timeout=120)
    return sentinel.exists()


def _legacy_tar(layout: str, sentinel: Path) -> list[tuple[str, bytes]]:
    payload = _no_proto_system_call(sentinel)
    views = pickle.dumps([], protocol=2)
    if layout == "a negative count":  # range(-1) reads no record: the next pickle is the views pickle
        return [("storages", b"I-1\n." + payload)]
    if layout == "a count of True":  # range(True) is one record
        return [("storages", pickle.dumps(True, protocol=2) + _storage_record((0, "cpu", torch.FloatStorage))
                 + payload)]
    if layout == "arguments in a list":  # `key, location, storage_type = args` unpacks a list as a tuple
        return [("storages", pickle.dumps(1, protocol=2) + _storage_record([0, "cpu", torch.FloatStorage]) + payload)]
    # "tensors": its count True, then the record's pickle that torch.load unpickles
    return [("storages", pickle.dumps(1, protocol=2) + _storage_record((0, "cpu", torch.FloatStorage)) + views),
            ("tensors", pickle.dumps(True, protocol=2) + payload)]


@pytest.mark.parametrize("layout", ["a negative count", "a count of True", "arguments in a list",
                                    "a tensors count of True"])
def test_a_legacy_tar_record_layout_torch_follows_is_followed_by_the_scan(tmp_path: Path, layout: str) -> None:
    # Before: the record walk stopped in silence at a count that is a bool or negative, or at arguments in a list,
    # and carving does not see a pickle without PROTO: "safe" (inspect: "not a safetensors file nor a PyTorch
    # pickle"), while torch.load(weights_only=False) read on and ran posix.system.
    path, sentinel = tmp_path / "model.pth", tmp_path / "PAYLOAD_RAN"
    _tar(path, _legacy_tar(layout, sentinel))

    report = scan_file(path)
    assert report.container == "pytorch-tar"
    assert report.verdict == "dangerous", report.summary()
    assert {g.qualified for g in report.globals if g.safety != "safe"} == {"posix.system"}
    for command in (["inspect", str(path)], ["convert", str(path), "-o", str(tmp_path / "out.safetensors")]):
        result = run_cli(*command)
        assert result.exit_code == 2, result.output
        assert "dangerous: posix.system" in result.stderr and "nor a PyTorch pickle" not in result.stderr
    assert not sentinel.exists() and not (tmp_path / "out.safetensors").exists()
    assert _torch_load_runs(path, sentinel)  # the payload is live


def test_a_legacy_tar_record_the_scan_cannot_follow_is_said_not_called_safe(tmp_path: Path) -> None:
    # A record's arguments as the keys of a dict: torch unpacks them (0, "cpu", torch.FloatStorage) and reads on;
    # the walk cannot know them, and the pickle after the storage's bytes has no PROTO for carving to find.
    path, sentinel = tmp_path / "model.pth", tmp_path / "PAYLOAD_RAN"
    args = {0: None, "cpu": None, torch.FloatStorage: None}
    _tar(path, [("storages", pickle.dumps(1, protocol=2) + _storage_record(args) + _no_proto_system_call(sentinel))])

    report = scan_file(path)
    assert report.verdict == "suspicious", report.summary()
    assert [p.message for p in report.problems] == [
        "a record's arguments are built by the pickle, not literal values the scan can read: the scan cannot follow "
        "its records past byte 50, where torch.load's legacy tar loader reads on and unpickles what it finds"]
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and "suspicious: storages at byte 50" in result.stderr, result.stderr
    assert not sentinel.exists()
    assert _torch_load_runs(path, sentinel)


# A script's own class named Module (`__torch__.Module`, as libtorch's OutputArchive names its one class), whose
# `__setstate__` torch.jit.load runs; scripted in a child interpreter, as a second `__torch__.Module` scripted in this
# one would be renamed by TorchScript (and rename the next test's).
_SCRIPTED_MODULE = """
import sys
import torch


class Module(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        print("SETSTATE_RAN")
        self.w = state[0]
        self.training = state[1]


torch.jit.save(torch.jit.script(Module()), sys.argv[1])
"""


def test_a_torchscript_archive_with_a_decoy_code_folder_is_not_said_to_hold_no_code(tmp_path: Path) -> None:
    # Before: the first name ending in /code/__torch__.py was read, a decoy folder's copy without methods listed
    # ahead of the archive's own, and inspect said "a TorchScript archive of named tensors and no code" of a file
    # whose __setstate__ torch.jit.load runs (it reads the folder of the first record).
    real, path = tmp_path / "real.pt", tmp_path / "model.pt"
    (tmp_path / "script.py").write_text(_SCRIPTED_MODULE)  # TorchScript compiles from the class's source file
    subprocess.run([sys.executable, str(tmp_path / "script.py"), str(real)], check=True, timeout=120)
    with zipfile.ZipFile(real) as source, zipfile.ZipFile(path, "w") as target:
        for index, info in enumerate(source.infolist()):
            target.writestr(info, source.read(info))
            if index == 0:
                target.writestr("decoy/code/__torch__.py", 'class Module(Module):\n  __parameters__ = ["w", ]\n')
    ran = subprocess.run([sys.executable, "-c", f"import torch; torch.jit.load({str(path)!r})"],
                         capture_output=True, text=True, timeout=120)
    assert "SETSTATE_RAN" in ran.stdout, ran.stderr  # torch.jit.load compiles and runs the archive's own code

    for source in (real, path):
        result = run_cli("inspect", str(source))
        said = " ".join(result.stderr.split())
        assert result.exit_code == 2, said
        assert "compiled TorchScript code (its classes __torch__.Module) that torch.jit.load runs" in said, said
        assert "no code" not in said, said


def _archive_of_torchscript_code(path: Path, sentinel: Path) -> None:
    """A zip torch.load hands to torch.jit.load (it holds constants.pkl) whose data.pkl names only collections.Counter,
    safe to Python's unpickler, which TorchScript's unpickler compiles from the archive's code/collections.py: its
    __setstate__ calls torch.save, which writes a file where the archive says."""
    code = ("class Counter:\n  x : int\n  def __getstate__(self) -> int:\n    return self.x\n"
            f"  def __setstate__(self, state: int) -> None:\n    torch.save(state, {str(sentinel)!r})\n"
            "    self.x = state\n")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02ccollections\nCounter\n)\x81K\x05b.")
        archive.writestr("archive/constants.pkl", b"\x80\x02).")
        archive.writestr("archive/code/collections.py", code)
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/byteorder", "little")


@pytest.mark.parametrize("command", [["inspect"], ["check-dtype"], ["plan-devices", "--gpu", "1GB"], ["diff-keys", "A"],
                                     ["convert", "-o", "OUT"]])
def test_an_archive_torch_load_hands_to_torch_jit_load_is_not_called_safe(tmp_path: Path, command: list[str]) -> None:
    # Before: the scan said safe (collections.Counter is on torch's weights_only list) and every command went on to
    # torch.load(weights_only=True), which refused it with torch's own advice to rerun with weights_only=False: that
    # dispatches to torch.jit.load, which compiled the archive's Counter and ran its __setstate__ (a file written).
    path, sentinel = tmp_path / "model.pt", tmp_path / "PAYLOAD_RAN"
    _archive_of_torchscript_code(path, sentinel)
    report = scan_file(path)
    assert report.verdict == "suspicious", report.summary()
    assert [p.message for p in report.problems] == [
        "torch.load hands an archive holding constants.pkl to torch.jit.load, whose unpickler takes "
        "collections.Counter not from Python but as TorchScript classes compiled from the archive's own code/ folder, "
        "and runs their __setstate__ as it loads"]

    args = [str(path) if part == "A" else str(tmp_path / "out") if part == "OUT" else part for part in command]
    result = run_cli(command[0], str(path), *args[1:])
    said = " ".join(result.stderr.split())
    assert result.exit_code == 2, said
    assert "suspicious" in said and "torch.jit.load, whose unpickler takes collections.Counter" in said, said
    assert "weights_only" not in said and "Warning" not in said, said
    assert not sentinel.exists() and not (tmp_path / "out").exists()
    if command == ["inspect"]:
        subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"],
                       capture_output=True, timeout=120)
        assert sentinel.exists()  # the payload is live


def _dtype_state_pickle(flags: int) -> bytes:
    """{"w": numpy.core.multiarray.scalar(dtype, b"AAAAAAAA")} where dtype is numpy.dtype("V8", False, True) whose
    BUILD state sets `flags`: only globals torch's documentation allowlists (numpy.dtype, scalar)."""
    return (b"\x80\x02}q\x00X\x01\x00\x00\x00wcnumpy.core.multiarray\nscalar\ncnumpy\ndtype\n"
            b"X\x02\x00\x00\x00V8\x89\x88\x87R(K\x03X\x01\x00\x00\x00|NNNK\x08K\x01K" + bytes([flags])
            + b"tbC\x08AAAAAAAA\x86Rs.")


def test_a_numpy_dtype_whose_state_sets_flags_numpy_does_not_give_it_is_refused(tmp_path: Path) -> None:
    # Before: the scan said safe, and inspect and check-dtype died of a segmentation fault in their own restricted
    # unpickler (exit 139, no error line), as pickle.load and torch.load(weights_only=False) do: numpy trusts the
    # flags of a dtype's state (NPY_USE_GETITEM, 0x20, on 8 void bytes) for how it reads memory.
    path = tmp_path / "model.pkl"
    path.write_bytes(_dtype_state_pickle(0x20))
    crashed = subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(path)!r}, 'rb'))"],
                             capture_output=True, timeout=120)
    assert crashed.returncode == -11  # SIGSEGV

    report = scan_file(path)
    assert report.verdict == "suspicious", report.summary()
    assert [p.message for p in report.problems] == [
        "BUILD sets the flags of numpy.dtype V8 to 32 (0x20), where numpy gives it 0 (0x0): flags numpy trusts for "
        "how it reads memory"]
    # The same flags set on a dtype made by its numpy.dtypes class, or a state that is a call's result.
    by_class = _dtype_state_pickle(0x20).replace(b"cnumpy\ndtype\nX\x02\x00\x00\x00V8\x89\x88\x87R",
                                                 b"cnumpy.dtypes\nFloat64DType\n)\x81")
    assert [p.message for p in scan_bytes(by_class).problems] == [
        "BUILD sets the flags of numpy.dtypes.Float64DType to 32 (0x20), where numpy gives it 0 (0x0): flags numpy "
        "trusts for how it reads memory"]
    called = b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00V8\x89\x88\x87Rccollections\nOrderedDict\n)Rb."
    assert [p.message for p in scan_bytes(called).problems] == [
        "BUILD sets the state of a numpy.dtype to the result of a call, which the scan cannot judge"]
    for command in (["inspect"], ["check-dtype"]):
        result = subprocess.run([sys.executable, "-m", "weightdoctor", *command, str(path)], capture_output=True,
                                text=True, timeout=120, cwd=Path(__file__).parents[2])
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "BUILD sets the flags of numpy.dtype V8 to 32" in result.stderr


def test_numpy_values_as_numpy_pickles_them_keep_their_dtype_states_unflagged() -> None:
    values = {
        "f4": np.ones(3, "f4"), "be": np.ones(2, ">f8"), "U": np.array(["ab", "c"]), "O": np.array([1, "a"], object),
        "M": np.array(["2020-01-01"], "M8[s]"), "struct": np.zeros(2, [("a", "f4"), ("b", "O")]),
        "aligned": np.zeros(2, np.dtype([("a", "i1"), ("b", "f8")], align=True)), "sub": np.zeros(2, "(2,3)f4"),
        "nested": np.zeros(1, [("a", [("x", "f4"), ("y", "(2,)i4")]), ("o", "O", (2,))]), "V": np.zeros(2, "V8"),
        "scalars": [np.float32(1.5), np.str_("x"), np.void(b"abcd"), np.datetime64("2020"), np.dtype("O")],
    }
    for protocol in (2, 3, 4, 5):
        for name, value in values.items():
            report = scan_bytes(pickle.dumps({name: value}, protocol=protocol))
            assert report.verdict == "safe" and report.problems == [], (protocol, name, report.summary())
    assert scan_bytes(_dtype_state_pickle(0)).verdict == "safe"  # the same file with the flags numpy gives V8


_EXPORT = """
import struct
import sys

import torch

model = torch.nn.Linear(2, 2)
with torch.no_grad():  # a weight whose raw bytes open like a pickle (PROTO 2): tensor data, not a pickle
    model.weight[0, 0] = struct.unpack("<f", b"\\x80\\x02\\x00\\x3f")[0]
torch.export.save(torch.export.export(model, (torch.ones(1, 2),)), sys.argv[1])
"""


class _RunsACommand:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.system, (f"touch '{self.sentinel}'",)


def test_a_torch_export_archive_whose_sample_inputs_run_code_is_not_called_safe(tmp_path: Path) -> None:
    # Before: a .pt2's data/ folder was skipped as torch.save's raw storage records, and the scan said safe of an
    # archive whose data/sample_inputs/model.pt calls posix.system, which torch.export.load (the loader inspect names)
    # unpickles with weights_only=False once weights_only=True refuses it.
    genuine, path, sentinel = tmp_path / "genuine.pt2", tmp_path / "model.pt2", tmp_path / "PAYLOAD_RAN"
    subprocess.run([sys.executable, "-c", _EXPORT, str(genuine)], check=True, timeout=300, capture_output=True)
    with zipfile.ZipFile(genuine) as archive:
        weight = next(n for n in archive.namelist() if n.endswith("data/weights/weight_0"))
        assert archive.read(weight)[:2] == b"\x80\x02"
    report = scan_file(genuine)
    assert report.verdict == "safe" and report.problems == [], report.summary()
    said = " ".join(run_cli("inspect", str(genuine)).stderr.split())
    assert "a torch.export archive (torch.export.save, .pt2)" in said, said

    inputs = io.BytesIO()
    torch.save(((_RunsACommand(sentinel),), {}), inputs)
    with zipfile.ZipFile(genuine) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            hostile = info.filename.endswith("data/sample_inputs/model.pt")
            target.writestr(info, inputs.getvalue() if hostile else source.read(info))
    report = scan_file(path)
    assert report.verdict == "dangerous", report.summary()
    assert [(g.qualified, g.member) for g in report.globals if g.safety != "safe"] == [
        ("posix.system", "genuine/data/sample_inputs/model.pt > archive/data.pkl")]
    result = run_cli("inspect", str(path))
    said = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "dangerous: posix.system" in said and "torch.export.load" not in said, said
    assert not sentinel.exists()
    subprocess.run([sys.executable, "-c", f"import torch; torch.export.load({str(path)!r})"], capture_output=True,
                   timeout=300)
    assert sentinel.exists()  # the payload is live
