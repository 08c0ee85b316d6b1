"""Red team 31: hostile input outside the pickle scanner, handed over as a checkpoint folder or a Hub repo.

What held (measured on this shared two-core machine, each command a fresh process; peak = rise of the resident set
once torch and the commands were imported, tests/helpers.PEAK_RISE_CHILD; not all pinned here): tensor names,
`__metadata__` keys and values, shard file names, folder names and config.json values holding Rich markup
(`[link=https:evil]`, `[bold red]CRITICAL`, `[/]`), terminal escapes (CSI, OSC title and hyperlink), newlines,
carriage returns, U+202E and U+200B were printed as text by inspect (--stats, --hist), check-dtype, diff-keys
(--values), plan-devices, convert and shard (safetensors refuses control characters and `/` in names, a pickle's
names are shown escaped); a shape of 100,000 dims of 1 (each command under 7 s, 103 MiB); 1,000,000 tensors of
1-byte data (a 67 MB header: refused in one line, 63 MiB); an index listing 1,000,000 names under one shard (refused
in one line, 245 MiB, 3 s); a .bin under a shard's .safetensors name (warned, converted to real safetensors); a
shard that is a folder, a FIFO, /dev/zero, or the index itself (refused in one line); a `__metadata__` of one 99 MB
value (at most 479 MiB, 6.5 s); a Hub snapshot that is a file, a blob linked to itself, a snapshot linked out of the
cache (said), repo ids with `..` or `.` parts; convert / shard under RLIMIT_FSIZE of 1 MB (nothing left behind, the
input unchanged), an output inside the input folder, the input itself, or the input file (refused).

What did not: a `__metadata__` of millions of tiny entries. The header's bound of 200,000 tensors counted its JSON
objects, and metadata entries are none: a 74 MB file of 5,000,000 entries `"i": ""` was parsed whole, then again
by the safetensors library (which keeps them in Rust and in Python): check-dtype and convert rose 2,062 / 2,056 MiB
(19 s for convert), plan-devices 1,288, inspect --json 1,051, inspect 681. It is now refused before it is parsed,
and a `__metadata__` of more than 200,000 entries after.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tests.helpers import one_error_line, run_cli


def _safetensors_with_metadata(path: Path, metadata: dict[str, str]) -> Path:
    """One float32 tensor of 2 zeros and `metadata`, written as the library writes a header (padded to 8)."""
    header = {"__metadata__": metadata, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 8)
    return path


@pytest.mark.parametrize("command", [["inspect"], ["check-dtype"], ["plan-devices", "--gpu", "1GB"]])
def test_a_metadata_of_millions_of_entries_is_refused_before_it_is_parsed(tmp_path: Path, command: list[str],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000,000 entries (26 MB) took check-dtype 800+ MiB: each was a dict entry of ours and two of the library's.
    The header is refused in one line naming the file, before json parses it."""
    import weightdoctor.checkpoint.safetensors_format as safetensors_format

    path = _safetensors_with_metadata(tmp_path / "m.safetensors", {f"{i:x}": "" for i in range(2_000_000)})

    def no_parse(text: str) -> object:
        raise AssertionError("the header was parsed")

    monkeypatch.setattr(safetensors_format, "parse_json", no_parse)
    result = run_cli(command[0], str(path), *command[1:])
    assert result.exit_code == 2, result.stdout
    line = one_error_line(result)
    assert str(path) in line
    assert "200,000" in line and "__metadata__" in line


def test_a_metadata_past_the_entry_bound_is_refused_after_the_parse(tmp_path: Path) -> None:
    """250,000 entries pass the count of strings (a header could hold 200,000 tensors) and are refused once read."""
    path = _safetensors_with_metadata(tmp_path / "m.safetensors", {f"{i:x}": "" for i in range(250_000)})
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 2, result.stdout
    line = one_error_line(result)
    assert str(path) in line and "__metadata__ holds 250,000 entries (the limit is 200,000)" in line


def test_a_metadata_at_the_bound_and_long_values_are_read(tmp_path: Path) -> None:
    """200,000 entries, and a few entries of long values holding escaped quotes (an embedded JSON text, as kohya's
    LoRA metadata holds), are read as before: their strings are not counted as entries."""
    path = _safetensors_with_metadata(tmp_path / "m.safetensors", {f"{i:x}": "" for i in range(200_000)})
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["metadata"]) == 200_000
    embedded = json.dumps({f"tag{i}": i for i in range(400_000)})
    path = _safetensors_with_metadata(tmp_path / "k.safetensors", {"ss_tag_frequency": embedded, "format": "pt"})
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["metadata"]["ss_tag_frequency"] == embedded


@pytest.mark.parametrize("command", [["convert"], ["shard", "--single"]])
def test_a_source_whose_metadata_would_pass_the_bound_in_the_output_is_refused_before_writing(
        tmp_path: Path, command: list[str]) -> None:
    """A source of 200,000 metadata entries reads; its safetensors output adds format=pt, 200,001 entries: convert
    wrote the whole output, then removed it, "the written output does not read back". It is refused before any
    write, in one line saying why, and --dry-run says so too."""
    source = _safetensors_with_metadata(tmp_path / "m.safetensors", {f"{i:x}": "" for i in range(200_000)})
    output = tmp_path / "out"
    for dry in ([], ["--dry-run"]):
        result = run_cli(command[0], str(source), "-o", str(output), *command[1:], *dry)
        line = one_error_line(result)
        assert str(source) in line
        assert "metadata would hold 200,001 entries" in line and "nothing was written" in line
        assert "does not read back:" not in line
        assert not output.exists()
