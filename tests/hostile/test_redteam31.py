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
and a `__metadata__` of more than 200,000 entries after; convert and shard refuse, before writing, an output whose
metadata would pass that bound (the source's 200,000 and format=pt: written whole, then "does not read back"). Names
under the reader's bound of 1,048,576 characters were printed whole: 90 names of a megabyte (a 94 MB header) took
inspect 72 s and 629 MiB to print 71 MB, inspect --stats 170 s, 997 MiB and 182 MB. A name on screen is now clipped
to 1,000 characters (inspect 3.7 s, 75 KB; --stats 27 s, 190 KB, of which 17 s are the init and findings rules'
regular expressions over the whole names, left as they are; --json keeps the names whole, 4.7 s). An index or a
config.json was parsed whole up to its 100 MB bound: 3,000,000 `{}` in a 9 MB index raised inspect and check-dtype
252 MiB, an index `metadata` of 5,000,000 entries (59 MB) 600-706 MiB in every command; one of more than 2,000,000
values and members is now refused before it is parsed (28 MiB, under 4 s). A safetensors shape's dims were bounded by
nothing but the 100 MB header: 5,000,000 dims of 1 (10 MB) took convert 17 s and 503 MiB, inspect 15.5 s and 444 MiB;
a header of more than 3,000,001 values and members (200,000 tensors of 8 dims and a full __metadata__) is now
refused before it is parsed (26 MiB, under 2 s); at 2,999,990 dims convert took 15.6 s and 302 MiB, inspect 6.7 s.
check-dtype joined the unsafe tensors' names into one `--keep-fp32` expression and compiled it: 20 names of a megabyte
(21 MB) took it 33.7 s and 1,919 MiB to print a 20 MB command; past 100,000 characters none is suggested (3.7 s,
69 MiB).
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
    # redteam42: a value past 1 MiB (this one is 9.7 MB) is kept cut in its middle, its start and end as they are.
    kept = json.loads(result.stdout)["metadata"]["ss_tag_frequency"]
    assert len(embedded) > len(kept) > 1 << 20, len(kept)
    assert kept[:100_000] == embedded[:100_000] and kept[-100_000:] == embedded[-100_000:]


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


def _long_names(path: Path, count: int, length: int, value: bytes = b"\0" * 4) -> list[str]:
    """A safetensors file of `count` one-float tensors (each float32 `value`) named `layer<i>.` and `length` more
    characters."""
    names = [f"layer{i}." + "w" * length for i in range(count)]
    header = {name: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i, name in enumerate(names)}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + value * count)
    return names


@pytest.mark.parametrize("command", [["inspect"], ["inspect", "--stats", "--all"], ["diff-keys", "{B}", "--values"],
                                     ["shard", "--single", "-o", "{OUT}"]])
def test_names_of_hundreds_of_kilobytes_are_clipped_on_screen(tmp_path: Path, command: list[str]) -> None:
    """Each name is under the reader's bound of 1,048,576 characters, and was printed whole, in the table, the module
    tree, the stats and findings rows, diff-keys' value rows and shard's first → last: 90 names of a megabyte (a
    94 MB header) took inspect 72 s to print 71 MB, inspect --stats 170 s and 182 MB. A name on screen is its
    beginning and end and a count of what was left out; --json keeps it whole."""
    source = tmp_path / "m.safetensors"
    names = _long_names(source, 3, 200_000)
    other = tmp_path / "b.safetensors"
    _long_names(other, 3, 200_000, struct.pack("<f", 1.0))
    args = [part.replace("{B}", str(other)).replace("{OUT}", str(tmp_path / "out")) for part in command[1:]]
    result = run_cli(command[0], str(source), *args)
    assert result.exit_code in (0, 1), result.stderr
    assert len(result.stdout) < 40_000, len(result.stdout)
    assert "characters left out" in result.stdout
    assert "layer0." in result.stdout and "wwwww" in result.stdout
    if command[0] == "inspect":
        whole = run_cli("inspect", str(source), "--json")
        assert [row["name"] for row in json.loads(whole.stdout)["tensors"]] == names


@pytest.mark.parametrize("name", ["model.safetensors.index.json", "config.json"])
def test_an_index_or_config_of_millions_of_tiny_values_is_refused_before_it_is_parsed(tmp_path: Path, name: str,
                                                                                      monkeypatch: pytest.MonkeyPatch
                                                                                      ) -> None:
    """Any JSON up to 100 MB was parsed whole: 3,000,000 `{}` in a 9 MB index's metadata raised inspect and
    check-dtype 252 MiB (some 2.8 GB at 100 MB). It is refused in one line naming the file, before json parses it."""
    import json as json_module

    from safetensors.torch import save_file
    from torch import ones

    folder = tmp_path / "m"
    folder.mkdir()
    save_file({"a.weight": ones(2)}, folder / "model-00001-of-00001.safetensors")
    index = {"metadata": {"total_size": 8}, "weight_map": {"a.weight": "model-00001-of-00001.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text('{"model_type": "bert"}')
    padding = ",".join(["{}"] * 2_100_000)
    text = (folder / name).read_text()
    (folder / name).write_text(text[:-1] + f', "x": [{padding}]}}')
    real_loads = json_module.loads

    def loads(text: str | bytes, *args: object, **kwargs: object) -> object:
        assert len(text) < 1_000_000, "the large JSON was parsed"
        return real_loads(text, *args, **kwargs)

    monkeypatch.setattr(json_module, "loads", loads)
    result = run_cli("inspect", str(folder))
    line = one_error_line(result)
    assert str(folder / name) in line
    assert "JSON values and members (the limit is 2,000,000)" in line and "not read" in line


def test_an_index_of_a_million_names_is_still_read(tmp_path: Path) -> None:
    """The bound of 2,000,000 JSON values and members leaves an index of a million tensors to the reader's own
    checks (here: the names no shard holds)."""
    from safetensors.torch import save_file
    from torch import ones

    folder = tmp_path / "m"
    folder.mkdir()
    save_file({"a.weight": ones(2)}, folder / "s.safetensors")
    weight_map = {f"n{i}": "s.safetensors" for i in range(1_000_000)} | {"a.weight": "s.safetensors"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    line = one_error_line(run_cli("inspect", str(folder)))
    assert "1,000,000 tensors listed in the index are in no shard" in line


def _one_tensor_of_dims(path: Path, dims: int) -> Path:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1] * dims, "data_offsets": [0, 4]}}).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    return path


def test_a_shape_of_millions_of_dims_is_refused_before_the_header_is_parsed(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A shape of 5,000,000 dims of 1 (a 10 MB header) took convert 17 s and 503 MiB, inspect 15 s: no bound counted
    a shape's dims, and a 100 MB header holds ten times as many. Refused in one line, before json parses it."""
    import weightdoctor.checkpoint.safetensors_format as safetensors_format

    path = _one_tensor_of_dims(tmp_path / "d.safetensors", 3_500_000)

    def no_parse(text: str) -> object:
        raise AssertionError("the header was parsed")

    monkeypatch.setattr(safetensors_format, "parse_json", no_parse)
    line = one_error_line(run_cli("convert", str(path), "-o", str(tmp_path / "o.bin")))
    assert str(path) in line and "JSON values and members (the limit is 3,000,001)" in line
    assert not (tmp_path / "o.bin").exists()


def test_a_shape_of_a_hundred_thousand_dims_is_still_read(tmp_path: Path) -> None:
    path = _one_tensor_of_dims(tmp_path / "d.safetensors", 100_000)
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["tensors"][0]["shape"] == [1] * 100_000


def test_unsafe_tensors_of_names_too_long_for_one_argument_get_no_keep_fp32_command(tmp_path: Path) -> None:
    """check-dtype joins the unsafe tensors' names into the `--keep-fp32` expression of the convert command it prints,
    and compiled it to test every name: 20 unsafe tensors named by a megabyte each (a 21 MB file) took it 34 s and
    1.9 GB, and printed a 20 MB command no shell passes (an argument holds at most 131,072 bytes). Past 100,000
    characters no command is suggested, and the recommendation says why."""
    path = tmp_path / "o.safetensors"
    names = [f"l{i}." + "w" * 40_000 for i in range(3)]
    header = {name: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i, name in enumerate(names)}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + struct.pack("<f", 1e6) * 3)
    result = run_cli("check-dtype", str(path), "--target", "fp16")
    assert result.exit_code == 0, result.stderr
    flat = " ".join(result.stdout.replace("│", " ").split())
    assert "fp16 is unsafe: overflows in 3 tensors" in flat
    assert "no --keep-fp32 expression is suggested" in flat and "longer than 100,000 characters" in flat
    assert "weightdoctor convert" not in result.stdout
    assert len(result.stdout) < 40_000
    report = json.loads(run_cli("check-dtype", str(path), "--target", "fp16", "--json").stdout)
    assert report["targets"]["fp16"]["keep_fp32"] is None
