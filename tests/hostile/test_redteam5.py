"""Hostile inputs found by the fifth red-team round: each must exit 0 or 2 with one line naming the file, fast,
within bounded memory, and never write over its input.

Time limits are CPU seconds of this process (`time.process_time`), not wall-clock: they catch quadratic work
and walks of gigabytes, and a machine loaded by other jobs (which made the wall-clock limits fail) does not."""

from __future__ import annotations

import collections
import io
import json
import pickle
import struct
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import run_cli


def test_an_index_naming_tens_of_thousands_of_shards_is_read_in_linear_time(tmp_path: Path) -> None:
    """The index's shard names were collected into a list checked with `in`: 80,000 distinct names (a 2.5 MB
    index) took 26 s before the first shard was looked at. They are collected in a dict now."""
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {f"t{i}": f"s{i}.safetensors" for i in range(80_000)}}))
    started = time.process_time()
    result = run_cli("inspect", str(index))
    elapsed = time.process_time() - started
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {index}: shard 's0.safetensors' named by the index does not exist"]
    assert elapsed < 8, elapsed


def _long4(value: int) -> bytes:
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8b" + struct.pack("<I", len(data)) + data


def _binunicode8(text: bytes) -> bytes:
    return b"\x8d" + struct.pack("<Q", len(text)) + text


_RECONSTRUCT = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
PICKLED_VALUES_IN_MESSAGES = {
    # bytearray(n) with n of 4,816 digits: str(n) raised ValueError (Python's int-to-text limit)
    "integer of thousands of digits": (b"\x80\x02cbuiltins\nbytearray\n" + _long4((1 << 16_000) - 1) + b"\x85R.",
                                       "builtins.bytearray(<an integer of 16,000 bits>)"),
    # a shape tuple nested 200,000 deep: its repr raised RecursionError
    "tuple nested 200,000 deep": (_RECONSTRUCT + b")" + b"\x85" * 200_000 + b"C\x01b\x87R.", "shape ((((...),),),)"),
    # a shape of two million dimensions: a 6 MB error line
    "two million dimensions": (_RECONSTRUCT + b"(" + b"K\x01" * 2_000_000 + b"tC\x01b\x87R.",
                               "shape (1, 1, 1, 1, 1, 1, 1, 1, ...)"),
    # a shape that is ten megabytes of text: a 10 MB error line
    "ten megabytes of text": (b"\x80\x04" + _RECONSTRUCT[2:] + _binunicode8(b"A" * 10**7) + b"C\x01b\x87R.",
                              "shape 'AAAA"),
    # a STACK_GLOBAL naming a module of ten megabytes: a 10 MB error line
    "global of ten megabytes": (b"\x80\x04" + _binunicode8(b"x" * 10**7) + b"\x8c\x01y\x93)R.",
                                "... (9,999,802 more characters) (unknown, STACK_GLOBAL"),
}


@pytest.mark.parametrize("case", sorted(PICKLED_VALUES_IN_MESSAGES))
def test_pickled_values_in_a_refusal_are_shown_bounded(tmp_path: Path, case: str) -> None:
    """The refusal of a call to a safe global showed its argument with `repr`: a pickle chooses that value, and
    an integer of 5,000 digits or a tuple nested 200,000 deep made the refusal an `unexpected ValueError` /
    `RecursionError`; two million dimensions or 10 MB of text made a 6-10 MB error line, as did a global's name
    of 10 MB. Values are shown by a bounded repr now, and names cut."""
    body, expected = PICKLED_VALUES_IN_MESSAGES[case]
    path = tmp_path / "value.pkl"
    path.write_bytes(body)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: suspicious: "), lines[0][:300]
    assert expected in lines[0] and "unexpected" not in lines[0]
    assert len(lines[0]) < 1000, len(lines[0])


class _Storage:
    """A storage of `numel` floats, pickled as torch pickles one (a persistent id)."""

    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


class _View:
    """A tensor of any offset, size and stride, pickled as torch's `_rebuild_tensor_v2` call."""

    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.args = (storage, offset, size, stride)

    def __reduce__(self) -> tuple[Any, ...]:
        return torch._utils._rebuild_tensor_v2, (*self.args, False, collections.OrderedDict())


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel) if isinstance(obj, _Storage) else None


def _torch_zip(path: Path, state: dict[str, Any], records: dict[str, bytes]) -> Path:
    """A torch.save-like zip archive whose data.pkl pickles `state` (of `_View`s) and holds `records`."""
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump(state)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/byteorder", "little")
        for key, data in records.items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", "3\n")
    return path


@pytest.mark.parametrize(("offset", "size", "stride"), [
    (2**63, (0,), (1,)),  # an empty view at an offset past int64
    (0, (1,), (2**70,)),  # one element, a stride past int64
    (0, (0,), (2**70,)),  # an empty view, a stride past int64
], ids=["offset", "stride", "empty-stride"])
@pytest.mark.parametrize("command", [["inspect", "--stats"], ["check-dtype"]], ids=lambda c: c[0])
def test_a_view_whose_offset_or_stride_passes_64_bits(tmp_path: Path, offset: int, size: tuple[int, ...],
                                                      stride: tuple[int, ...], command: list[str]) -> None:
    """The torch-free reader let an empty or single-element view through with an offset or stride beyond int64
    (its extent is within the storage); reading its values then failed in `as_strided`: `unexpected ValueError:
    Overflow when unpacking long long` / `unexpected TypeError`, with a C++ stack in the line. torch's loader
    decides now, as for other views it cannot make, and says so."""
    path = _torch_zip(tmp_path / "view.bin", {"w": _View(_Storage("0", 4), offset, size, stride)},
                      {"0": bytes(16)})
    result = run_cli(command[0], str(path), *command[1:])
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: torch cannot read the file: "), lines
    assert "unexpected" not in lines[0] and "Overflow when unpacking long long" in lines[0]


def _safetensors(path: Path, header: dict[str, Any], data: bytes = bytes(4)) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


_ENTRY = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
LONG_MESSAGES = {
    "shape of a million dimensions": ({"a": {**_ENTRY, "shape": [1] * 1_000_000 + [-1]}}, "1, 1, -1]"),
    "a million offsets": ({"a": {**_ENTRY, "data_offsets": [0] * 1_000_000}}, "0, 0, 0]"),
    "dtype of a megabyte": ({"a": {**_ENTRY, "dtype": "X" * 1_000_000}}, "XXX'"),
    "name of a megabyte": ({"n" * (1 << 20): {**_ENTRY, "dtype": "X"}}, "nnn' has unknown dtype 'X'"),
}


@pytest.mark.parametrize("case", sorted(LONG_MESSAGES))
def test_an_error_line_quoting_the_file_is_bounded(tmp_path: Path, case: str) -> None:
    """Error lines quote what the file holds: a shape of a million dimensions or a million offsets made a 3 MB line,
    a dtype or a tensor name of a megabyte a 1 MB one. A line keeps its first 3,000 and last 1,000 characters."""
    header, end = LONG_MESSAGES[case]
    path = _safetensors(tmp_path / "long.safetensors", header)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: tensor '"), lines[0][:200]
    assert len(lines[0]) < 4200 and "characters left out) ..." in lines[0]
    assert lines[0].endswith(end), lines[0][-100:]


def test_a_warning_quoting_a_name_of_a_megabyte_is_bounded(tmp_path: Path) -> None:
    """Warnings quote names too: a shard holding a tensor of a 1 MB name that the index does not list."""
    long_name = "w" * (1 << 20)
    _safetensors(tmp_path / "a.safetensors", {"a": _ENTRY, long_name: {**_ENTRY, "data_offsets": [4, 8]}}, bytes(8))
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {"a": "a.safetensors"}}))
    result = run_cli("inspect", str(index))
    assert result.exit_code == 0
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: a.safetensors holds 'www")
    assert warnings[0].endswith("www', which the index does not list") and len(warnings[0]) < 4200


@pytest.mark.parametrize(("names", "refused"), [
    (["__class__", "b.w"], "'__class__'"),  # a parameter name nn.Module has as an attribute
    (["a.cuda.x", "b.w"], "'a.cuda.x'"),  # a module name nn.Module has as a method
])
def test_a_tensor_name_no_module_can_have_names_the_file(tmp_path: Path, names: list[str], refused: str) -> None:
    """plan-devices refused a tensor name that collides with an `nn.Module` attribute in a line that named no file
    (`error: tensor name '__class__' cannot be a module path (...)`), unlike every other refusal of a name."""
    path = _safetensors(tmp_path / "names.safetensors",
                        {name: {**_ENTRY, "data_offsets": [4 * i, 4 * i + 4]} for i, name in enumerate(names)},
                        bytes(4 * len(names)))
    result = run_cli("plan-devices", str(path), "--gpu", "1GB")
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: tensor name {refused} cannot be a module path")


def _zip_listing_one_record(body: bytes, names: int, deflate: bool) -> bytes:
    """A zip of one local record holding `body`, listed `names` times in its central directory under other names
    (`archive/data.pkl`, `archive/x1.pkl`, ...): every entry points at the same bytes."""
    data = zlib.compress(body, 9)[2:-4] if deflate else body
    method, crc, first = (8 if deflate else 0), zlib.crc32(body), b"archive/data.pkl"
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data), len(body), len(first),
                        0) + first + data
    central = b""
    for i in range(names):
        name = first if i == 0 else f"archive/x{i}.pkl".encode()
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(data),
                               len(body), len(name), 0, 0, 0, 0, 0, 0) + name
    return local + central + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, names, names, len(central), len(local), 0)


_SLOW_PICKLE = b"\x80\x02" + b"K\x000" * (1 << 20) + b"N."  # 3 MB of BININT1 + POP: a second's walk


@pytest.mark.parametrize(("names", "deflate", "expected"), [
    (20, False, "archive/x1.pkl at byte 0: shares its bytes with the record 'archive/data.pkl'"),
    (1, True, "archive/data.pkl at byte 0: its pickles inflate to more than "),
    (20, True, "archive/data.pkl at byte 0: its pickles inflate to more than "),
], ids=["stored-listed-20-times", "deflated-bomb", "deflated-listed-20-times"])
def test_a_zip_whose_pickles_are_read_many_times_over_is_refused_fast(tmp_path: Path, names: int, deflate: bool,
                                                                       expected: str) -> None:
    """The scanner walked each record the central directory lists: one 3 MB pickle listed 20 times took 13 s from
    a 4 KB file (deflated), and each further 60-byte entry 0.6 s more; a deflated data.pkl inflating 1,000 times
    (20 KB to 20 MB) took 11 s. Records sharing a local header are walked once (the others are a problem), and the
    pickles of an archive may inflate to at most 64 times the file: both are suspicious, and nothing is loaded."""
    path = tmp_path / "bomb.bin"
    path.write_bytes(_zip_listing_one_record(_SLOW_PICKLE, names, deflate))
    started = time.process_time()
    result = run_cli("inspect", str(path))
    elapsed = time.process_time() - started
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: suspicious: "), lines
    assert expected in lines[0]
    assert elapsed < 3, elapsed


def test_a_deflated_data_pkl_that_compresses_as_real_ones_do_still_reads(tmp_path: Path) -> None:
    """The control: a torch.save archive zipped again with deflate (its data.pkl shrinks about 5 times) still reads."""
    buffer = io.BytesIO()
    torch.save({f"layer.{i}.weight": torch.ones(2) for i in range(500)}, buffer)
    path = tmp_path / "rezipped.bin"
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info),
                            zipfile.ZIP_DEFLATED if info.filename.endswith(".pkl") else zipfile.ZIP_STORED)
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["security"]["verdict"] == "safe"


def _list_a_record_again(raw: bytes, suffix: bytes, copies: int) -> bytes:
    """A zip (`raw`, no zip64) whose central directory lists its record ending in `suffix` `copies` more times, under
    names `<name>d0`, `<name>d1`, ...: all at the same local header."""
    end = raw.rfind(b"PK\x05\x06")
    count, size, offset = struct.unpack_from("<HII", raw, end + 10)
    central, position, entry = raw[offset:offset + size], 0, b""
    while position < len(central):
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", central, position + 28)
        if central[position + 46:position + 46 + name_len].endswith(suffix):
            entry = central[position:position + 46 + name_len]
        position += 46 + name_len + extra_len + comment_len
    name = entry[46:]
    copies_bytes = b""
    for i in range(copies):
        fields = bytearray(entry[:46])
        alias = name + f"d{i}".encode()
        struct.pack_into("<HHH", fields, 28, len(alias), 0, 0)
        copies_bytes += bytes(fields) + alias
    central += copies_bytes
    record = bytearray(raw[end:end + 22])
    struct.pack_into("<HHI", record, 8, count + copies, count + copies, len(central))
    return raw[:offset] + central + bytes(record)


def test_verify_reads_a_record_listed_thousands_of_times_once(tmp_path: Path, monkeypatch: Any) -> None:
    """`inspect --verify` recomputed the CRC of every entry of the central directory: a 10 MB record listed 3,000
    times more (60 bytes each) made it read 30 GB (9 s; 20,000 entries, a minute). Each run of bytes is read once,
    and every entry still counts as checked."""
    from weightdoctor.security import archive

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(250_000)}, buffer)
    path = tmp_path / "listed.bin"
    path.write_bytes(_list_a_record_again(buffer.getvalue(), b"data/0", 3000))
    reads = {"n": 0}
    real = archive.iter_member_chunks

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(archive, "iter_member_chunks", counted)
    result = run_cli("inspect", str(path), "--verify", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)["verify"]
    assert report["members_checked"] > 3000 and report["mismatches"] == []
    assert reads["n"] < 20, reads


@pytest.mark.parametrize("command", [["convert", "--dtype", "fp16"], ["shard", "--single"]], ids=lambda c: c[0])
def test_side_files_that_are_no_regular_files_are_named_as_not_copied(tmp_path: Path, command: list[str]) -> None:
    """A model folder's `tokenizer.json` that is a FIFO, a link to /dev/zero, or a FIFO in a subfolder was left out of
    the output without a word (the output then lacked its tokenizer). Each is named in the `not copied` warning."""
    import os

    folder = tmp_path / "model"
    folder.mkdir()
    _safetensors(folder / "model.safetensors", {"a": _ENTRY})
    (folder / "config.json").write_text('{"model_type": "bert"}')
    os.mkfifo(folder / "tokenizer.json")
    os.symlink("/dev/zero", folder / "vocab.txt")
    (folder / "1_Pooling").mkdir()
    os.mkfifo(folder / "1_Pooling" / "config.json")
    output = tmp_path / "out"
    result = run_cli(command[0], str(folder), "-o", str(output), *command[1:])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        "warning: not copied: 1_Pooling/config.json (a FIFO, not a regular file), tokenizer.json (a FIFO, not a "
        "regular file), vocab.txt (a device, not a regular file)"]
    assert sorted(p.name for p in output.iterdir()) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize("name", ["model.safetensors.index.json", "config.json"])
def test_an_index_or_config_of_gigabytes_is_refused_unread(tmp_path: Path, name: str) -> None:
    """An index or config.json was read whole and parsed whatever its size: a sparse file of 1 GB (nothing on disk)
    took 2 GB of memory before `not valid JSON`, one of 20 GB would take 40. Over 100 MB (the safetensors header
    limit) is refused unread."""
    folder = tmp_path / "model"
    folder.mkdir()
    if name == "config.json":
        _safetensors(folder / "model.safetensors", {"a": _ENTRY})
    big = folder / name
    with open(big, "wb") as handle:
        handle.truncate(1 << 30)
    started = time.process_time()
    result = run_cli("inspect", str(folder))
    assert time.process_time() - started < 5
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: {big}: is 1,073,741,824 bytes, more than any index or config holds (the limit is 100,000,000); "
        "not read"]


LIST_DEPTH_CONFIGS = {
    "swin depths": ({"model_type": "swin", "architectures": ["SwinModel"], "depths": [1100], "num_heads": [1]},
                    "config.json lists 1,100 layers in all (depths)"),
    "funnel block_sizes": ({"model_type": "funnel", "architectures": ["FunnelModel"], "block_sizes": [600, 500],
                            "block_repeats": [1, 1]}, "config.json lists 1,100 layers in all (block_sizes)"),
    "wav2vec2 conv_dim": ({"model_type": "wav2vec2", "architectures": ["Wav2Vec2Model"], "conv_dim": [8] * 1100,
                           "conv_kernel": [2] * 1100, "conv_stride": [1] * 1100, "num_feat_extract_layers": 1100},
                          "config.json lists 1,100 entries, one per layer (conv_dim)"),
}


@pytest.mark.parametrize("case", sorted(LIST_DEPTH_CONFIGS))
def test_a_config_asking_for_thousands_of_layers_through_a_list_builds_nothing(tmp_path: Path, case: str) -> None:
    """plan-devices refused `num_hidden_layers: 10000` but not the same depth given as a list: `{"depths": [20000]}`
    (Swin) or `{"block_sizes": [20000]}` (Funnel) built for over 90 s from a 150-byte config, ConvNeXt's for 78 s
    before failing, and 5,000 `conv_dim` entries built 5,000 conv layers. Stage lists count by their sum, other
    lists of numbers by their length (one entry per layer)."""
    config, expected = LIST_DEPTH_CONFIGS[case]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = run_cli("plan-devices", str(path), "--gpu", "1GB")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: {expected}; weightdoctor builds models of up to 1,024 layers"]


def test_a_config_listing_thousands_of_tokens_still_builds(tmp_path: Path) -> None:
    """The control: Whisper's `suppress_tokens` and the like list tokens, not layers."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "whisper", "architectures": ["WhisperModel"], "encoder_layers": 1,
                                "decoder_layers": 1, "d_model": 8, "encoder_attention_heads": 1,
                                "decoder_attention_heads": 1, "encoder_ffn_dim": 8, "decoder_ffn_dim": 8,
                                "suppress_tokens": list(range(3000)), "begin_suppress_tokens": list(range(2000))}))
    result = run_cli("plan-devices", str(path), "--gpu", "1GB")
    assert result.exit_code == 0, result.stderr


SMALL_CONFIGS_OF_HUGE_MODELS = {
    "albert inner_group_num": (
        {"model_type": "albert", "architectures": ["AlbertModel"], "inner_group_num": 9000, "hidden_size": 8,
         "embedding_size": 8, "intermediate_size": 8, "num_attention_heads": 1},
        "AlbertModel from this config.json registers more than 100,000 modules and tensors"),
    "musicgen num_codebooks": (
        {"model_type": "musicgen_decoder", "architectures": ["MusicgenForCausalLM"], "num_codebooks": 5000,
         "num_hidden_layers": 1, "hidden_size": 8, "ffn_dim": 8, "num_attention_heads": 1},
        "MusicgenForCausalLM from this config.json puts more than 4,096 modules side by side in one ModuleList"),
}


@pytest.mark.parametrize("case", sorted(SMALL_CONFIGS_OF_HUGE_MODELS))
def test_a_config_making_tens_of_thousands_of_modules_otherwise_is_refused(tmp_path: Path, case: str) -> None:
    """The layer limit knows some keys; models make modules from others: ALBERT's `inner_group_num` or
    `num_hidden_groups`, Mimi's `num_quantizers`, MusicGen's `num_codebooks`. At 20,000 each planned for over a
    minute (and `inspect --stats` took 36 s). A build is stopped when it registers more than 100,000 modules and
    tensors (the largest real model, Switch-C-2048, about 87,000) or puts more than 4,096 modules in one (as a tree
    of names is refused)."""
    config, expected = SMALL_CONFIGS_OF_HUGE_MODELS[case]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = run_cli("plan-devices", str(path), "--gpu", "1GB")
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: {expected}"), lines
