"""Round 13 of the red team: torch zips whose records lie about where their bytes are, and the commands weightdoctor
prints for the user to paste (the re-check line of diff-keys, check-dtype's convert), for files whose names a shell
reads differently. Each command must exit 0 with a truthful report or 2 with one line naming the file; a printed
command must run, pasted into bash, as the command it names."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli


def _one_error_line(result: object) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]  # type: ignore[attr-defined]
    assert result.exit_code == 2 and len(lines) == 1, result.stderr  # type: ignore[attr-defined]
    return lines[0]


def _poisoned(path: Path, record: str, where: str, field: int, value: int) -> Path:
    """A torch.save zip whose `record` has the 16-bit `field` of its local header (`where` "local") or of its central
    directory entry ("central") set to `value`: local 28, its extra field's length, which moves the record's bytes
    past the end of the file; central 10, its compression method."""
    torch.save({"w": torch.ones(3)}, path)
    data = bytearray(path.read_bytes())
    signature, length_at, name_at = (b"PK\x03\x04", 26, 30) if where == "local" else (b"PK\x01\x02", 28, 46)
    at = data.find(signature)
    while at >= 0:
        (length,) = struct.unpack_from("<H", data, at + length_at)
        if data[at + name_at:at + name_at + length].endswith(record.encode()):
            struct.pack_into("<H", data, at + field, value)
        at = data.find(signature, at + 1)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("record", "where", "field", "value"), [
    ("/version", "local", 28, 0xFFFF), ("/byteorder", "local", 28, 0xFFFF), ("/version", "central", 10, 0xFFFF)])
@pytest.mark.parametrize("command", [["inspect"], ["check-dtype"], ["convert", "-o", "out.safetensors"]])
def test_a_record_the_torch_free_reader_cannot_read_is_left_to_torch(tmp_path: Path, record: str, where: str,
                                                                      field: int, value: int, command: list[str]
                                                                      ) -> None:
    """A version or byteorder record whose local header puts its bytes past the end of the file (or names a
    compression method no reader knows): the torch-free reader's refusal (`data ends 2 bytes early`) escaped it as a
    ValueError and every command ended with 'unexpected ValueError'. Such a record is now left to torch.load, whose
    reader names the record it cannot read."""
    path = _poisoned(tmp_path / "model.bin", record, where, field, value)
    args = [*command[:1], str(path), *command[1:]]
    if command[0] == "convert":
        args[-1] = str(tmp_path / "out.safetensors")
    line = _one_error_line(run_cli(*args))
    assert "unexpected" not in line and "model.bin" in line, line
    assert "torch cannot read the file" in line and record.strip("/") in line, line
    assert not (tmp_path / "out.safetensors").exists()
