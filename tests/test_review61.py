"""review61: an EXT import is let through only where the first pickle of a bytes value keeps, drops or returns it.

fixext dropped every EXT problem of a bytes value whose first pickle uses no EXT import
(`opcodes.extension_import_used` reads that pickle alone). A value that is a legacy torch.save stream (its first
pickle, written with no PROTO, returns torch's magic number) has `torch.load(io.BytesIO(value), weights_only=False)`
read three pickles more: an EXT import its data pickle calls ran there, and the file was called readable."""

from __future__ import annotations

import copyreg
import io
import pickle
import tarfile
from pathlib import Path

import pytest
import torch
from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

from tests.helpers import one_error_line, run_cli, run_json

_SYS_INFO = {"protocol_version": PROTOCOL_VERSION, "little_endian": True,
             "type_sizes": {"short": 2, "int": 4, "long": 8}}


def _legacy_stream(data_pickle: bytes) -> bytes:
    """A legacy torch.save stream whose first pickle has no PROTO (the value does not start like a pickle)."""
    first = pickle.dumps(MAGIC_NUMBER, protocol=2)[2:]
    assert first[:1] != b"\x80"
    return (first + pickle.dumps(PROTOCOL_VERSION, protocol=2) + pickle.dumps(_SYS_INFO, protocol=2) + data_pickle
            + pickle.dumps([], protocol=2))


def _save(path: Path, value: bytes) -> Path:
    torch.save({"weight": torch.ones(2, 2), "blob": value}, path)
    return path


def _registered_hook() -> dict[str, int]:
    _registered_hook.calls += 1  # type: ignore[attr-defined]
    return {}


def test_an_extension_import_called_in_a_later_pickle_torch_load_reads_is_refused(tmp_path: Path) -> None:
    value = _legacy_stream(b"\x82\x01)R.")  # the data pickle: EXT1 code 1, called by REDUCE
    # What its loader does where a code is registered: the data pickle's EXT import is called.
    _registered_hook.calls = 0  # type: ignore[attr-defined]
    globals()["_r61_hook"] = _registered_hook
    copyreg.add_extension(__name__, "_r61_hook", 1)
    try:
        torch.load(io.BytesIO(value), weights_only=False)
    finally:
        copyreg.remove_extension(__name__, "_r61_hook", 1)
    assert _registered_hook.calls == 1  # type: ignore[attr-defined]
    line = one_error_line(run_cli("inspect", str(_save(tmp_path / "model.pt", value))))
    assert "suspicious: the bytes value at blob holds a pickle that, at byte" in line, line
    assert "EXT1 imports the global registered under code 1" in line, line


@pytest.mark.parametrize("value", [
    b"\x82\x01q\x00h\x000.\xaa\xbb",  # fixext's: memoized, fetched, popped, the first returned
    b"\x84\x98\xe9N\xa7. \t'\xb04",  # EXT4 and STOP, then random bytes pickle.loads never reads
])
def test_an_unused_extension_import_in_the_first_pickle_is_still_read(tmp_path: Path, value: bytes) -> None:
    code, data = run_json("inspect", str(_save(tmp_path / "model.pt", value)))
    assert code == 0, data
    assert [t["name"] for t in data["tensors"]] == ["weight"], data


def test_a_later_pickle_that_does_not_parse_leaves_the_data_pickle_judged(tmp_path: Path) -> None:
    # The storage keys' pickle is junk: torch.load runs the data pickle's call before it fails there.
    value = _legacy_stream(b"\x82\x01)R.")[:-len(pickle.dumps([], protocol=2))] + b"\xff"
    _registered_hook.calls = 0  # type: ignore[attr-defined]
    globals()["_r61_hook"] = _registered_hook
    copyreg.add_extension(__name__, "_r61_hook", 1)
    try:
        with pytest.raises(pickle.UnpicklingError):
            torch.load(io.BytesIO(value), weights_only=False)
    finally:
        copyreg.remove_extension(__name__, "_r61_hook", 1)
    assert _registered_hook.calls == 1  # type: ignore[attr-defined]
    line = one_error_line(run_cli("inspect", str(_save(tmp_path / "model.pt", value))))
    assert "holds a pickle that, at byte 135, EXT1 imports the global registered under code 1" in line, line


def test_text_that_does_not_parse_as_a_pickle_is_still_read(tmp_path: Path) -> None:
    # Protocol 0 look-alikes: an EXT byte in text whose first pickle does not parse to a STOP.
    code, data = run_json("inspect", str(_save(tmp_path / "model.pt", "caf\u00e9 \x82 notes".encode("latin-1"))))
    assert code == 0, data
    assert [t["name"] for t in data["tensors"]] == ["weight"], data


def _tar_stream(data_pickle: bytes) -> bytes:
    """torch's oldest format (a tar of storages, tensors and pickle) whose first member is named `N.`: its header
    parses as a pickle (None, STOP) that uses no EXT import."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("N.", b""), ("storages", pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2)),
                           ("tensors", pickle.dumps(0, protocol=2)), ("pickle", data_pickle)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_an_extension_import_called_in_a_tar_member_is_refused(tmp_path: Path) -> None:
    # torch.load reads a tar from a real file only (io.BytesIO goes to the pickle path): a loader that writes the
    # value out and torch.loads it runs the tar's pickle member.
    value = _tar_stream(b"\x82\x01)R.")
    (tmp_path / "blob.pt").write_bytes(value)
    _registered_hook.calls = 0  # type: ignore[attr-defined]
    globals()["_r61_hook"] = _registered_hook
    copyreg.add_extension(__name__, "_r61_hook", 1)
    try:
        torch.load(tmp_path / "blob.pt", weights_only=False)
    finally:
        copyreg.remove_extension(__name__, "_r61_hook", 1)
    assert _registered_hook.calls == 1  # type: ignore[attr-defined]
    line = one_error_line(run_cli("inspect", str(_save(tmp_path / "model.pt", value))))
    assert "EXT1 imports the global registered under code 1" in line, line
