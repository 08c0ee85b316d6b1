"""Hostile inputs found by the third sweep (zip-level tricks, index and config attacks, filesystem hostility, names):
each must exit 2 with one line naming the file and what is wrong, fast, and never give wrong values."""

from __future__ import annotations

import io
import math
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import run_cli


def _one_line_exit_2(*args: str, expected: str) -> str:
    result = run_cli(*args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stdout[:300], result.stderr)
    assert len(lines) == 1 and expected in lines[0] and "unexpected" not in lines[0], result.stderr
    assert not result.stdout.strip()
    return lines[0]


def _rezip(path: Path, state: dict[str, torch.Tensor], compression: int = zipfile.ZIP_STORED,
           replace: dict[str, bytes] | None = None) -> Path:
    """A torch.save archive of `state` written again by `zipfile` (`zip -r` does the same), with `compression` and
    the records whose name ends in a key of `replace` given other contents."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", compression=compression) as target:
        for info in source.infolist():
            data = next((new for end, new in (replace or {}).items() if info.filename.endswith(end)),
                        source.read(info))
            target.writestr(info.filename, data)
    return path


def test_a_deflated_archive_is_not_read_as_garbage(tmp_path: Path) -> None:
    """torch.load reads an archive whose records are deflated, but torch.load(mmap=True), the loader used for what
    the torch-free reader leaves, hands out the compressed bytes as values: --stats reported -1.8e20 for arange(6)
    and convert wrote those values (its check re-read the same wrong bytes). Refused, with the way out."""
    path = _rezip(tmp_path / "deflated.bin", {"a.weight": torch.arange(6.0).reshape(2, 3)}, zipfile.ZIP_DEFLATED)
    assert torch.load(path, weights_only=True)["a.weight"].tolist() == [[0, 1, 2], [3, 4, 5]]
    expected = "storage record archive/data/0 is compressed (deflate)"
    for args in (["inspect", str(path), "--stats"], ["check-dtype", str(path)],
                 ["convert", str(path), "-o", str(tmp_path / "out.safetensors")]):
        line = _one_line_exit_2(*args, expected=expected)
        assert "re-save" in line and str(path) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deflated.bin"]


def test_a_stored_archive_rewritten_by_zipfile_still_reads(tmp_path: Path) -> None:
    """The control: the same archive stored (not deflated) is read, with its values."""
    path = _rezip(tmp_path / "stored.bin", {"a.weight": torch.arange(6.0).reshape(2, 3)})
    result = run_cli("convert", str(path), "-o", str(tmp_path / "out.safetensors"))
    assert result.exit_code == 0, result.stderr
    from safetensors.torch import load_file

    assert load_file(tmp_path / "out.safetensors")["a.weight"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_a_byteorder_record_of_ten_kilobytes(tmp_path: Path) -> None:
    """The torch-free reader read at most 16 bytes of it and let the reader's ValueError out: 'unexpected
    ValueError: decompresses to more than 16 bytes'. It is not "little": torch's reader decides (and refuses it)."""
    path = _rezip(tmp_path / "order.bin", {"a": torch.ones(2)}, replace={"/byteorder": b"\xff" * 10_000})
    _one_line_exit_2("inspect", str(path), expected="torch cannot read the file")


def _index_folder(folder: Path, shard: str) -> Path:
    """A two-shard folder whose index puts 'a' in `shard` (made by the caller) and 'b' in a real shard."""
    import json

    import numpy
    from safetensors.numpy import save_file

    folder.mkdir()
    save_file({"b": numpy.ones(2, numpy.float32)}, folder / "model-00002-of-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": shard, "b": "model-00002-of-00002.safetensors"}}))
    return folder


@pytest.mark.parametrize("kind, expected", [
    ("fifo", "named by the index is not a regular file (a FIFO)"),
    ("device", "named by the index is not a regular file (a device)"),
    ("folder", "named by the index is not a regular file (a folder)"),
    ("dangling", "named by the index is a link to "),
    ("nul", "named by the index is not a file name (it holds a NUL character)"),
    ("long", "named by the index is too long a name for this system to open"),
])
def test_an_index_shard_that_is_no_regular_file_is_said(tmp_path: Path, kind: str, expected: str) -> None:
    """A FIFO, /dev/zero or a folder was reported as "does not exist"; a 5,000-character name was 'cannot read or
    write: [Errno 36] File name too long', a line naming neither the index nor the shard."""
    import os

    name = {"nul": "a\x00.safetensors", "long": "x" * 5000 + ".safetensors"}.get(kind, "a.safetensors")
    folder = _index_folder(tmp_path / "model", name)
    if kind == "fifo":
        os.mkfifo(folder / name)
    elif kind == "device":
        (folder / name).symlink_to("/dev/zero")
    elif kind == "folder":
        (folder / name).mkdir()
    elif kind == "dangling":
        (folder / name).symlink_to(tmp_path / "gone.safetensors")
    line = _one_line_exit_2("inspect", str(folder), expected=expected)
    assert "model.safetensors.index.json" in line


def test_an_index_shard_that_is_missing_still_says_so(tmp_path: Path) -> None:
    folder = _index_folder(tmp_path / "model", "a.safetensors")
    _one_line_exit_2("inspect", str(folder), expected="shard 'a.safetensors' named by the index does not exist")


def _bert_folder(folder: Path, **config: object) -> Path:
    import json

    import numpy
    from safetensors.numpy import save_file

    folder.mkdir()
    save_file({"embeddings.word_embeddings.weight": numpy.ones((4, 2), numpy.float32)}, folder / "model.safetensors")
    bert = {"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 100}
    (folder / "config.json").write_text(json.dumps({**bert, **config}))
    return folder


def test_a_config_naming_a_class_that_is_no_model_constructs_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    """`architectures` comes from an untrusted config.json, and any class transformers exports was constructed with
    the config as its argument: TextStreamer was built (and failed on .eval), Trainer and TextGenerationPipeline ran
    their __init__ until they tripped, PreTrainedModel itself built an empty model that the planner choked on."""
    import json

    import transformers

    built: list[object] = []
    original = transformers.TextStreamer.__init__

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(args)
        original(self, *args, **kwargs)

    monkeypatch.setattr(transformers.TextStreamer, "__init__", spy)
    folder = _bert_folder(tmp_path / "model", architectures=["TextStreamer"])
    result = run_cli("plan-devices", str(folder), "--gpu", "1GB", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert any("transformers' 'TextStreamer' is not a model class (a subclass of PreTrainedModel)" in warning
               for warning in report["warnings"]), report["warnings"]
    assert "tensors" in report["built_from"]
    _one_line_exit_2("diff-keys", str(folder), "--model-class", "TextStreamer",
                     expected="transformers' 'TextStreamer' is not a model class")
    _one_line_exit_2("diff-keys", str(folder), "--model-class", "PreTrainedModel",
                     expected="transformers' 'PreTrainedModel' is not a model class")
    assert built == []


def test_a_quantization_config_that_is_a_list(tmp_path: Path) -> None:
    """diff-keys --model-class read it with vars(): 'unexpected TypeError: vars() argument must have __dict__
    attribute'. No quantizer can be told from it."""
    folder = _bert_folder(tmp_path / "model", quantization_config=[1, 2])
    result = run_cli("diff-keys", str(folder), "--model-class", "BertModel", "--json")
    assert result.exit_code == 1, result.stderr
    assert "unexpected" not in result.stderr


def _safetensors_with_names(path: Path, names: list[str]) -> Path:
    """A safetensors file of one float per name, its header written by hand (the library takes any name)."""
    import json
    import struct

    header = json.dumps({name: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
                         for i, name in enumerate(names)}).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * (4 * len(names)))
    return path


def test_a_name_of_thirty_thousand_segments(tmp_path: Path) -> None:
    """A 120 KB name `seg.seg.....w` was an unexpected RecursionError in inspect's module tree; plan-devices built
    1.8 GB of prefixes in 30 s before its own RecursionError. The tree keeps the rest of the path as one module;
    plan-devices refuses the name at once."""
    import json

    path = _safetensors_with_names(tmp_path / "deep.safetensors", [".".join(["seg"] * 30_000), "b"])
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    tree = json.loads(result.stdout)["module_tree"]
    assert tree[0]["num_params"] == 1 and tree[0]["name"].startswith("seg.seg.")
    depth, node = 0, tree[0]
    while node["children"]:
        depth, node = depth + 1, node["children"][0]
    assert depth < 64 and node["name"].endswith("seg.seg")  # the rest of the path is one module name
    assert run_cli("inspect", str(path)).exit_code == 0
    started = time.monotonic()
    _one_line_exit_2("plan-devices", str(path), "--gpu", "1GB", expected="nests 29,999 modules (the limit is 64)")
    assert time.monotonic() - started < 20


def test_a_name_of_forty_megabytes_is_refused(tmp_path: Path) -> None:
    """`inspect` laid a 40 MB name out in its table for over two minutes (1.6 GB and growing)."""
    path = _safetensors_with_names(tmp_path / "long.safetensors", ["a." * 20_000_000 + "w"])
    started = time.monotonic()
    _one_line_exit_2("inspect", str(path), expected="is 40,000,001 characters long (the limit is 1,048,576)")
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("separator", ["\u2028", "\u2029"])
def test_line_and_paragraph_separators_in_names_are_escaped(tmp_path: Path, separator: str) -> None:
    """They reached the terminal raw: str.splitlines and many viewers break a line there, so one name read as two."""
    path = _safetensors_with_names(tmp_path / "sep.safetensors", [f"a{separator}fake", "b"])
    result = run_cli("inspect", str(path))
    assert result.exit_code == 0, result.stderr
    assert separator not in result.stdout
    assert f"a\\u{ord(separator):04x}fake" in result.stdout


@pytest.mark.parametrize("command", [["convert"], ["shard", "--max", "1KB"], ["plan-devices", "--gpu", "1GB"]])
def test_an_output_that_is_a_loop_of_links(tmp_path: Path, command: list[str]) -> None:
    """pathlib's resolve raised RuntimeError('Symlink loop from ...'): an unexpected error line naming the input."""
    path = tmp_path / "model.bin"
    torch.save({"a": torch.ones(2)}, path)
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    flag = "--output" if command[0] == "plan-devices" else "-o"
    line = _one_line_exit_2(command[0], str(path), *command[1:], flag, str(tmp_path / "loop1"),
                            expected="output is a symbolic link that does not resolve")
    assert "loop1" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop1", "loop2", "model.bin"]


def test_a_zip_checkpoint_cut_short_before_its_values_are_read(tmp_path: Path) -> None:
    """The torch-free reader maps the file on the first value read: a file truncated between listing and reading
    gave frombuffer's 'unexpected ValueError: requested buffer length ... must not be greater than actual buffer
    length'. (Read whole, its values are read by os.preadv since red team 37: see docs/security.md.)"""
    import os

    from weightdoctor.checkpoint.reader import open_checkpoint
    from weightdoctor.errors import CorruptCheckpoint

    path = tmp_path / "model.bin"
    torch.save({"a": torch.ones(64), "b": torch.ones(4096)}, path)
    checkpoint = open_checkpoint(str(path))
    os.truncate(path, 2000)
    # Red team 37: read by os.preadv now, which says where in the record the file ends (2,000 is inside data/1).
    with pytest.raises(CorruptCheckpoint, match=r"file ended at byte 2,000, inside the bytes of storage data/1 "
                                                r"\(the record ends at .*truncated") as info:
        checkpoint.load_tensor("b")
    assert info.value.path == str(path)


@pytest.mark.parametrize("shape, refused", [([2**40, 2**40, 0], True), ([2**61, 8, 0], True),
                                            ([0, 2**40, 2**40], False), ([2**63 - 1, 2, 0], False)])
def test_an_empty_shape_whose_dimensions_overflow_as_the_library_multiplies_them(
        tmp_path: Path, shape: list[int], refused: bool) -> None:
    """The safetensors library multiplies dimensions in order in 64 bits and refuses [2**40, 2**40, 0]; this
    reader took it (an empty tensor), and plan-devices then failed in torch: 'unexpected RuntimeError: Storage size
    calculation overflowed'. The same verdict as the library, by both the fast and the slow header checks."""
    import json
    import struct

    from safetensors import safe_open

    header = json.dumps({"a": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]},
                         "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "empty.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 4)
    try:
        with safe_open(str(path), "np"):
            library_refuses = False
    except Exception:  # noqa: BLE001 - the library's own error type
        library_refuses = True
    assert library_refuses == refused
    if refused:
        _one_line_exit_2("plan-devices", str(path), "--gpu", "1GB", expected="the product of its dimensions passes")
        _one_line_exit_2("inspect", str(path), expected="the product of its dimensions passes 2**64 - 1")
    elif shape[0] == 0 and math.prod(shape[1:]) > 2**63 - 1:
        # The library opens it, but the first dimension's stride passes 2**63 - 1: torch cannot make the tensor and
        # load_file fails on it; refused when read since redteam43 (before, the value commands failed in torch).
        _one_line_exit_2("inspect", str(path), expected="Stride calculation overflowed")
    else:
        assert run_cli("inspect", str(path)).exit_code == 0


def test_a_pickled_empty_tensor_whose_sizes_overflow(tmp_path: Path) -> None:
    """A data.pkl giving a tensor the size (2**40, 2**40, 0), which torch cannot make ("numel: integer
    multiplication overflow"): the torch-free reader listed it as empty, and plan-devices, check-dtype and --stats
    then failed inside torch with unexpected RuntimeErrors. torch's loader now decides, as for other such files."""
    buffer = io.BytesIO()
    torch.save({"a": torch.empty(3, 5, 0), "b": torch.ones(2)}, buffer)
    big = b"\x8a\x06\x00\x00\x00\x00\x00\x01"  # LONG1 2**40
    path = tmp_path / "overflow.bin"
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("data.pkl"):
                assert b"K\x03K\x05K\x00\x87" in data
                data = data.replace(b"K\x03K\x05K\x00\x87", big + big + b"K\x00\x87", 1)
            target.writestr(info.filename, data)
    for args in (["inspect"], ["plan-devices", "--gpu", "1GB"], ["check-dtype"]):
        _one_line_exit_2(args[0], str(path), *args[1:], expected="numel: integer multiplication overflow")


def test_a_config_listing_a_million_architectures(tmp_path: Path) -> None:
    """inspect's config panel laid all of them out: over two minutes for a 17 MB list. The panel shows the start
    and says how long the value is; --json keeps it whole."""
    import json

    folder = _bert_folder(tmp_path / "model", architectures=[f"BertModel{i}" for i in range(1_000_000)])
    started = time.monotonic()
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 0, result.stderr
    assert time.monotonic() - started < 20
    assert "BertModel0," in result.stdout and "(16,888,888" in result.stdout and "BertModel999999" not in result.stdout
    listed = json.loads(run_cli("inspect", str(folder), "--json").stdout)
    assert len(listed["config_summary"]["architectures"]) == 1_000_000


@pytest.mark.parametrize("version, expected", [(b"999", "version 999, but the maximum supported version"),
                                               (b"abc", "Couldn't parse the version abc"),
                                               (b"-1", "version -1, but the minimum supported version")])
def test_a_version_record_torch_does_not_support(tmp_path: Path, version: bytes, expected: str) -> None:
    """torch.load refuses these; the torch-free reader only checked that a version record exists, and read (and
    converted) the file as today's format."""
    path = _rezip(tmp_path / "version.bin", {"a": torch.ones(2)}, replace={"/version": version})
    _one_line_exit_2("convert", str(path), "-o", str(tmp_path / "out.safetensors"), expected=expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["version.bin"]


def test_a_version_record_with_a_newline_still_reads(tmp_path: Path) -> None:
    path = _rezip(tmp_path / "version.bin", {"a": torch.ones(2)}, replace={"/version": b"3\n"})
    assert run_cli("inspect", str(path), "--stats").exit_code == 0


@pytest.mark.parametrize("rename, expected", [
    (lambda name: name, "file in archive is not in a subdirectory archive/: ../../etc/evil"),
    (lambda name: "a/b/" + name, "hasRecord(\"version\")"),
])
def test_records_outside_the_archive_folder(tmp_path: Path, rename: Any, expected: str) -> None:
    """torch's reader refuses a record outside the first record's folder, and an archive nested a folder deeper;
    the torch-free reader read (and converted) both."""
    buffer = io.BytesIO()
    torch.save({"a": torch.ones(2)}, buffer)
    path = tmp_path / "odd.bin"
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            target.writestr(rename(info.filename), source.read(info))
        if rename("x") == "x":
            target.writestr("../../etc/evil", b"")
    _one_line_exit_2("convert", str(path), "-o", str(tmp_path / "out.safetensors"), expected=expected)


def test_a_stored_data_pkl_whose_central_directory_sizes_disagree(tmp_path: Path) -> None:
    """The central directory gives data.pkl (stored) an uncompressed size of 3 beside its real compressed size:
    torch's reader calls the archive corrupted, the torch-free reader read it."""
    import struct

    buffer = io.BytesIO()
    torch.save({"a": torch.ones(2)}, buffer)
    raw = bytearray(buffer.getvalue())
    at = raw.find(b"PK\x01\x02")
    while at >= 0:
        length = struct.unpack_from("<H", raw, at + 28)[0]
        if bytes(raw[at + 46:at + 46 + length]).endswith(b"data.pkl"):
            struct.pack_into("<I", raw, at + 24, 3)  # uncompressed size
        at = raw.find(b"PK\x01\x02", at + 4)
    path = tmp_path / "sizes.bin"
    path.write_bytes(bytes(raw))
    _one_line_exit_2("inspect", str(path), expected="archive is corrupted")
