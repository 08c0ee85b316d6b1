"""fixext: random bytes values (digests, packed data) that parse whole as an EXT import by chance.

`torch.save` of 50,000 random 24-byte values beside text refused the file: one value was EXT4, a 4-byte code and
STOP (b"\\x84\\x98\\xe9N\\xa7. ..."), which `pickle.loads` only returns or refuses ("unregistered extension code"),
running nothing. A bytes value whose pickle calls, builds or NEWOBJs what an EXT opcode imported, or that starts
with PROTO, is still refused."""

from __future__ import annotations

import copyreg
import pickle
import random
from pathlib import Path

import pytest
import torch

from tests.helpers import one_error_line, run_cli, run_json

# The value of the 100,000-entry file that was refused (key.84389 of random.Random(0)'s draws), and short forms of
# EXT1 / EXT2 / EXT4 that random bytes make as readily: kept in the memo, fetched, dropped.
_GENUINE = [b"\x84\x98\xe9N\xa7. \t'\xb04\x9a\x11\xe3\x07\x05\xd8\xf1S\x07dX\xa7p",
            b"\x82\xe5.\x11\x9a\xc0\x7f\x03\xfe",
            b"\x83\xd5\xdf.\xfb\xe7\x86jr0\x90\xb3HX~,",
            b"N\x84\xc6f\xd5\x8d0.m{b",
            b"\x82\x01q\x00h\x000.\xaa\xbb",
            b"(\x83\x01\x02\x84\x01\x02\x03\x041N.\x10"]


def _save(path: Path, value: bytes) -> Path:
    rng = random.Random(7)
    state = {"weight": torch.ones(2, 2), **{f"digest.{i}": rng.randbytes(24) for i in range(20)}, "blob": value}
    torch.save(state, path)
    return path


@pytest.mark.parametrize("value", _GENUINE)
def test_random_bytes_that_parse_as_an_unused_extension_import_are_read(tmp_path: Path, value: bytes) -> None:
    # What its loader meets: no code is registered (or the code is not positive), and nothing runs.
    with pytest.raises((ValueError, pickle.UnpicklingError), match="unregistered extension code|code <= 0"):
        pickle.loads(value)
    code, data = run_json("inspect", str(_save(tmp_path / "model.pt", value)))
    assert code == 0, data
    assert [t["name"] for t in data["tensors"]] == ["weight"], data


@pytest.mark.parametrize("pickled", [
    b"\x82\x01)R.",  # REDUCE calls it
    b"\x82\x01}b.",  # BUILD on it
    b"\x82\x01)\x81.",  # NEWOBJ on it as a class
    b"(\x82\x01o.",  # OBJ
    b"\x82\x01q\x00N0h\x00)R.",  # called once fetched from the memo
    b"}\x82\x01Ns.",  # a dict key: hashed
    b"]\x82\x01a.",  # appended: kept, and a list holding it counts as a use
    b"\x82\x01N\x86.",  # in a tuple
    b"\x82\x012)R0.",  # a DUP of it called
])
def test_an_extension_import_the_pickle_uses_is_still_refused(tmp_path: Path, pickled: bytes) -> None:
    line = one_error_line(run_cli("inspect", str(_save(tmp_path / "model.pt", pickled))))
    assert "suspicious: the bytes value at blob holds a pickle that, at byte" in line, line
    assert "imports the global registered under code 1 in copyreg's extension registry" in line, line
    assert "pickle.loads(ckpt[...])" in line, line


def test_a_registered_extension_is_only_imported_when_returned() -> None:
    """Returned alone, a registered code's global is imported and handed back; called, it runs."""
    copyreg.add_extension("builtins", "print", 1)
    try:
        assert pickle.loads(b"\x82\x01.") is print
        assert pickle.loads(b"\x82\x01)R.") is None  # print() ran
    finally:
        copyreg.remove_extension("builtins", "print", 1)


def test_bytes_that_start_with_proto_are_refused_whatever_the_extension_import_does(tmp_path: Path) -> None:
    line = one_error_line(run_cli("inspect", str(_save(tmp_path / "model.pt", b"\x80\x02\x84\x98\xe9N\xa7."))))
    assert "suspicious: the bytes value at blob holds a pickle that names <extension registry>." in line, line
