"""Red team, round 23: where the scanner and torch.load read different bytes, or read the same bytes differently."""

from __future__ import annotations

import io
import pickle
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli
from weightdoctor.security.scan import scan_file


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
