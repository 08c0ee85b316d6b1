"""Round 13 of the red team: torch zips whose records lie about where their bytes are, and the commands weightdoctor
prints for the user to paste (the re-check line of diff-keys, check-dtype's convert), for files whose names a shell
reads differently. Each command must exit 0 with a truthful report or 2 with one line naming the file; a printed
command must run, pasted into bash, as the command it names."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import REPO_ROOT, run_cli


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


def _paste(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`command` as a user pastes it into bash in `cwd`, `weightdoctor` on the PATH being this checkout's."""
    shim = cwd.parent / "bin"
    shim.mkdir(exist_ok=True)
    (shim / "weightdoctor").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m weightdoctor "$@"\n')
    (shim / "weightdoctor").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, env=env, timeout=120,
                          check=False)


@pytest.mark.parametrize(("name_a", "name_b"), [("-a.safetensors", "b.safetensors"),
                                                ("a.safetensors", "new\nline $(touch CANARY).safetensors"),
                                                ("a\u202e.safetensors", "b\t.safetensors")])
def test_the_re_check_line_pasted_into_bash_reads_the_same_two_files(tmp_path: Path, name_a: str, name_b: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """diff-keys' re-check line quoted its sources with shlex.quote alone: a source typed after `--` that starts with
    a dash (`-a.safetensors`) was read by the pasted command as an option (`No such option: -a`), and a newline or
    an invisible character in a name, which the report prints as an escape (`\\x0a`), was pasted inside single
    quotes as those four characters: another file. Both now paste as the same file (`./-a...`, `$'new\\x0aline'`);
    the suggested renames and the Python snippet, run as printed, still match every key."""
    folder = tmp_path / "work"
    folder.mkdir()
    names = ["enc.0.weight", "enc.1.weight", "head.weight"]
    hostile = "$(touch CANARY)`touch CANARY`'\"x=y."
    save_file({hostile + n: torch.ones(2) for n in names}, str(folder / name_a))
    save_file({n: torch.ones(2) for n in names}, str(folder / name_b))
    monkeypatch.chdir(folder)
    monkeypatch.setenv("COLUMNS", "400")
    result = run_cli("diff-keys", "--", name_a, name_b)
    lines = [line for line in result.stdout.splitlines() if "re-check with: " in line]
    assert result.exit_code in (0, 1) and len(lines) == 1, result.stdout + result.stderr
    pasted = _paste(lines[0].split("re-check with: ", 1)[1] + " --json", folder)
    assert pasted.returncode in (0, 1), pasted.stderr
    report = json.loads(pasted.stdout)
    assert (report["source_a"], report["source_b"]) == ((f"./{name_a}" if name_a.startswith("-") else name_a), name_b)
    assert report["matched"] == 3 and not report["missing"] and not report["unexpected"], report
    assert sorted(os.listdir(folder)) == sorted([name_a, name_b])  # no canary: nothing the shell ran
    snippet = result.stdout[result.stdout.index("import re"):]
    scope: dict = {"state_dict": {hostile + n: None for n in names}}
    exec(snippet, scope)  # noqa: S102 - the snippet printed to be pasted into training code
    assert sorted(scope["state_dict"]) == sorted(names)


@pytest.mark.parametrize("folder_name", ["-m", "x\ny", "tab\tand\u200bzero-width"])
def test_check_dtypes_convert_command_pasted_into_bash_converts_that_folder(tmp_path: Path, folder_name: str,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """check-dtype's `convert ... --keep-fp32` for a folder `-m` (typed after `--`) printed `convert -m -o ...`,
    which pasted was `No such option: -m`; for a folder whose name holds a newline or a tab it printed
    `'x\\x0ay'`, which bash reads as another folder. The command printed now converts that very folder."""
    work = tmp_path / "work"
    (work / folder_name).mkdir(parents=True)
    save_file({"a.weight": torch.tensor([1e-9, 70000.0, 1.0]), "b.weight": torch.ones(3)},
              str(work / folder_name / "model.safetensors"))
    monkeypatch.chdir(work)
    monkeypatch.setenv("COLUMNS", "400")  # the report's line whole: the command is copied from the terminal
    result = run_cli("check-dtype", "--", folder_name)
    assert result.exit_code in (0, 1), result.stderr
    commands = re.findall(r"^(weightdoctor convert .*)$", result.stdout, re.M)  # on a line of its own (ux14)
    assert len(commands) == 1, result.stdout
    command = commands[0]
    pasted = _paste(command, work)
    assert pasted.returncode == 0, (command, pasted.stderr)
    written = work / f"{folder_name}-fp16" / "model.safetensors"
    assert written.is_file(), (command, os.listdir(work))
    from safetensors import safe_open

    with safe_open(str(written), "pt") as handle:
        assert handle.get_tensor("a.weight").dtype == torch.float32  # kept, as --keep-fp32 asks
        assert handle.get_tensor("b.weight").dtype == torch.float16


def _raw_safetensors(path: Path, header: bytes, data: bytes = bytes(16)) -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


ENTRY = b'{"dtype":"F32","shape":[4],"data_offsets":[0,16]}'


@pytest.mark.parametrize(("header", "expected"), [
    (b'{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16],"dtype":"F64"}}', "tensor 'a' gives its 'dtype' twice"),
    (b'{"__metadata__":{"format":"pt"},"__metadata__":{"x":"y"},"a":' + ENTRY + b"}",
     "header gives __metadata__ twice"),
    (b'{"a":' + ENTRY + b',"a":' + ENTRY + b"}", "header lists tensor 'a' twice"),
])
def test_a_key_given_twice_is_named_where_it_is(tmp_path: Path, header: bytes, expected: str) -> None:
    """Any key given twice anywhere in a safetensors header was refused as `header lists tensor 'dtype' twice`: a
    field of tensor a's entry, or __metadata__ itself, was called a tensor that does not exist."""
    line = _one_error_line(run_cli("inspect", str(_raw_safetensors(tmp_path / "model.safetensors", header))))
    assert line.endswith(f"model.safetensors: {expected}"), line


def test_a_metadata_key_given_twice_is_read_as_the_library_reads_it(tmp_path: Path) -> None:
    """A key given twice inside __metadata__: the safetensors library reads the file (keeping the last value), and so
    did weightdoctor, unless anything sent the header down the slow duplicate check (here the word "dtype" as a
    metadata value), which refused it as `header lists tensor 'format' twice`. Read alike now, whatever the path."""
    from safetensors import safe_open

    path = _raw_safetensors(tmp_path / "model.safetensors",
                            b'{"__metadata__":{"format":"pt","format":"pt","note":"dtype"},"a":' + ENTRY + b"}")
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata() == {"format": "pt", "note": "dtype"}
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["metadata"] == {"format": "pt", "note": "dtype"} and report["num_tensors"] == 1


def _zip64_counting(path: Path, entries: int) -> Path:
    """A torch.save zip (torch writes the zip64 end records) whose zip64 end record counts `entries` entries."""
    torch.save({"w": torch.ones(4, 4), "b": torch.zeros(4)}, path)
    data = bytearray(path.read_bytes())
    at = data.rfind(b"PK\x06\x06")
    assert at > 0
    struct.pack_into("<QQ", data, at + 24, entries, entries)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("entries", [9, 10**6])
@pytest.mark.parametrize("command", [["inspect"], ["convert", "-o"]])
def test_a_zip64_end_record_counting_entries_the_directory_lacks_is_what_torch_refuses(
        tmp_path: Path, entries: int, command: list[str]) -> None:
    """The zip64 end record is what miniz (torch.load's reader) goes by: counting more entries than the central
    directory holds, torch.load refuses the file ('archive is corrupted'). Python's zipfile counts nothing, so the
    torch-free reader listed the 8 records, inspect called the file healthy (exit 0) and convert wrote it out. The
    count that disagrees is now an irregularity the torch-free reader leaves to torch.load."""
    path = _zip64_counting(tmp_path / "model.bin", entries)
    output = tmp_path / "out.safetensors"
    line = _one_error_line(run_cli(command[0], str(path), *([command[1], str(output)] if command[1:] else [])))
    assert "model.bin: torch cannot read the file" in line and "corrupted" in line, line
    assert not output.exists()


def test_a_zip64_end_record_counting_fewer_entries_is_read_and_said(tmp_path: Path) -> None:
    """Counting fewer entries (7 of 8), torch.load reads the first 7 and loads: so does inspect, with a note."""
    result = run_cli("inspect", str(_zip64_counting(tmp_path / "model.bin", 7)), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["num_tensors"] == 2 and report["num_params"] == 20
    assert any("the end record counts 7 entries" in note and "holds 8" in note for note in report["security"]["notes"])


@pytest.mark.parametrize(("args", "typed", "meant"), [
    (["inspect", "\u2014json", "{model}"], "\u2014json", "--json"),
    (["inspect", "{model}", "\u2013-filter", "a"], "\u2013-filter", "--filter"),
    (["convert", "{model}", "\u2212o", "{out}"], "\u2212o", "-o"),
    (["diff-keys", "{model}", "{model}", "\u2014json"], "\u2014json", "--json"),
])
def test_an_option_typed_with_a_typographic_dash_is_named_as_the_option_meant(tmp_path: Path, args: list[str],
                                                                             typed: str, meant: str) -> None:
    """`inspect —json model.safetensors` (--json turned into an em dash by the page it was copied from) was told
    `inspect reads one checkpoint, not 2 (a shell glob?)`, and `convert m −o out` that --output was missing: Click
    took the dashed word for a source. The word is named now, with its dash and the option meant."""
    model = tmp_path / "model.safetensors"
    save_file({"a": torch.ones(2)}, str(model))
    out = tmp_path / "out.safetensors"
    line = _one_error_line(run_cli(*[arg.format(model=model, out=out) for arg in args]))
    assert f"{typed!r} starts with" in line and f"type {meant} " in line, line
    assert "shell glob" not in line and "Missing option" not in line
    assert not out.exists()


@pytest.mark.parametrize(("pattern", "reason"), [("(" * 5000, "groups nested too deeply for Python's re to read"),
                                                 ("(" * 600 + "a" + ")" * 600, "nested too deeply"),
                                                 ("a{4294967295}", "the repetition number is too large")])
@pytest.mark.parametrize(("option", "command"), [
    ("--filter", ["inspect", "{model}", "--filter", "{pattern}"]),
    ("--filter", ["check-dtype", "{model}", "--filter", "{pattern}"]),
    ("--hist", ["inspect", "{model}", "--stats", "--hist", "{pattern}"]),
    ("--keep-fp32", ["convert", "{model}", "-o", "{out}", "--dtype", "fp16", "--keep-fp32", "{pattern}"]),
    ("--rename", ["convert", "{model}", "-o", "{out}", "--rename", "{pattern}=x"]),
    ("--rename", ["diff-keys", "{model}", "{model}", "--rename", "{pattern}=x"]),
])
def test_a_regex_pythons_re_cannot_compile_is_named_with_its_option(tmp_path: Path, pattern: str, reason: str,
                                                                   option: str, command: list[str]) -> None:
    """Groups nested thousands deep overflow the recursive parser of Python's re (RecursionError), and a count past
    its limit raises OverflowError: neither is re.error, and every user regex option ended its command with
    'unexpected RecursionError' / 'unexpected OverflowError'. Both are a bad regular expression, named with the
    option that gave it."""
    model = tmp_path / "model.safetensors"
    save_file({"a.weight": torch.ones(2)}, str(model))
    out = tmp_path / "out.safetensors"
    line = _one_error_line(run_cli(*[arg.format(model=model, out=out, pattern=pattern) for arg in command]))
    assert line.startswith(f"error: {option} '") and "bad regular expression" in line and reason in line, line
    assert "unexpected" not in line and not out.exists()


def test_a_model_class_plan_devices_cannot_build_is_said_to_be_unused(tmp_path: Path) -> None:
    """plan-devices --model-class on weights without a transformers config.json planned from the tensor names and
    dropped the class without a word (a misspelt class too): the plan read as the class's. A warning says so."""
    model = tmp_path / "model.safetensors"
    save_file({"layer.0.weight": torch.ones(4, 4)}, str(model))
    result = run_cli("plan-devices", str(model), "--gpu", "1GB", "--model-class", "BertModelx", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    said = "--model-class BertModelx is not used: there is no config.json"
    assert any(warning.startswith(said) for warning in report["warnings"]), report["warnings"]


@pytest.mark.parametrize("offset", [2**63 + 5, 2**64 - 1, "past the end"])
@pytest.mark.parametrize("command", [["inspect"], ["convert", "-o"]])
def test_a_zip64_locator_pointing_past_the_file_is_what_torch_refuses(tmp_path: Path, offset: int | str,
                                                                      command: list[str]) -> None:
    """The zip64 end locator gives where the zip64 end record lies. Past 2**63 the reader's seek raised ('unexpected
    ValueError: cannot fit int into an offset-sized integer', or 'cannot read or write: Invalid argument'); past the
    end of the file, torch.load refuses the archive ('not a ZIP archive') while the torch-free reader ignored the
    locator and read the file as healthy (exit 0, and convert wrote it). Both are left to torch.load now."""
    path = tmp_path / "model.bin"
    torch.save({"w": torch.ones(4, 4)}, path)
    data = bytearray(path.read_bytes())
    locator = data.rfind(b"PK\x06\x07")
    struct.pack_into("<Q", data, locator + 8, len(data) + 100 if offset == "past the end" else offset)
    path.write_bytes(data)
    output = tmp_path / "out.safetensors"
    line = _one_error_line(run_cli(command[0], str(path), *([command[1], str(output)] if command[1:] else [])))
    assert "model.bin: torch cannot read the file" in line and "not a ZIP archive" in line, line
    assert not output.exists()


def test_an_io_error_naming_no_file_is_said_of_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An OSError that carries no file name (EIO from a failing disk, EINVAL from a seek a crafted offset sent past
    2**63) was said as `cannot read or write: [Errno 5] Input/output error`, naming no file; the source read is
    named now, as every other error line names its file."""
    from weightdoctor.checkpoint import safetensors_format

    model = tmp_path / "model.safetensors"
    save_file({"a": torch.ones(2)}, str(model))

    def failing_disk(path: Path, relpath: str) -> object:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(safetensors_format, "read_header", failing_disk)
    line = _one_error_line(run_cli("inspect", str(model)))
    assert line == f"error: {model}: cannot read or write: [Errno 5] Input/output error", line


def test_a_shard_whose_index_name_would_pass_255_bytes_is_read(tmp_path: Path) -> None:
    """`name-1-of-2.safetensors` read alone: the hint looks for `name.safetensors.index.json` beside it, 4 bytes longer
    (`.index.json` against `-1-of-2`), and a shard named near the 255-byte limit made that look-up raise: the shard
    itself was refused with 'cannot read or write: [Errno 36] File name too long'. It is read, with the hint."""
    shard = tmp_path / ("a" * 234 + "-1-of-2.safetensors")
    save_file({"a": torch.ones(2)}, str(shard))
    result = run_cli("inspect", str(shard), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["num_tensors"] == 1
    # `-1-of-2` is not the Hub's five-digit spelling and no index is beside it: no shard hint (review19), and no
    # trace of the failed look-up either.
    assert not any("too long" in warning or "Errno" in warning for warning in report["warnings"])


@pytest.mark.parametrize("size", ["1e400GB", "9" * 400 + "MB"])
def test_a_size_past_floats_range_is_said_too_large(size: str) -> None:
    """A size whose number is past float's range (1e400, 400 nines) was refused as 'a size is a finite number of
    bytes, not negative': a positive number, written out in full, read as if it were infinite or negative."""
    from weightdoctor.errors import UsageError
    from weightdoctor.units import parse_size

    with pytest.raises(UsageError) as refused:
        parse_size(size)
    assert "the number is too large for a size" in str(refused.value) and "negative" not in str(refused.value)
