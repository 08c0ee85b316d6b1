"""Hostile GGUF headers: every count, length and offset is checked against the file before anything is read or
allocated; each is refused in one line naming the file and what is wrong (exit 2, stdout empty, no traceback)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from fixtures.gguf_files import ARRAY, FLOAT32, STRING, UINT32, Tensor, gguf_string, write_gguf
from tests.helpers import refused_line, run_cli


def _refused(path: Path, *words: str) -> str:
    """The one line `inspect` prints for a refused file; each of `words` in it."""
    for extra in ((), ("--json",)):
        line = refused_line(path, "inspect", str(path), *extra, words=words)
    return line


def _header(version: int = 3, tensors: int = 0, kvs: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensors, kvs)


_META = {"general.architecture": (STRING, "llama")}


def test_a_tensor_count_of_2_to_the_63_is_refused_before_any_loop(tmp_path: Path) -> None:
    path = tmp_path / "count.gguf"
    path.write_bytes(_header(tensors=1 << 63) + bytes(64))
    _refused(path, "9,223,372,036,854,775,808 tensors cannot fit in the 64 bytes left")


def test_a_metadata_count_past_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kv.gguf"
    path.write_bytes(_header(kvs=(1 << 64) - 1) + bytes(100))
    _refused(path, "metadata entries cannot fit in the 100 bytes left")


def test_a_string_length_past_the_end_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "string.gguf"
    path.write_bytes(_header(kvs=1) + struct.pack("<Q", 1 << 40) + b"general.name")
    _refused(path, "metadata key 0 (1,099,511,627,776 bytes long)", "past the end of the file")


def test_a_string_value_past_the_end_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "value.gguf"
    path.write_bytes(_header(kvs=1) + gguf_string("general.name") + struct.pack("<IQ", STRING, 1 << 50) + b"x" * 40)
    _refused(path, "the string value of 'general.name'", "past the end of the file")


def test_an_array_whose_elements_cannot_fit_is_refused(tmp_path: Path) -> None:
    for element, said in ((UINT32, "uint32 values of"), (STRING, "elements of")):
        path = tmp_path / f"array{element}.gguf"
        path.write_bytes(_header(kvs=1) + gguf_string("tokenizer.ggml.tokens")
                         + struct.pack("<IIQ", ARRAY, element, 1 << 61) + bytes(64))
        _refused(path, f"the 2,305,843,009,213,693,952 {said} 'tokenizer.ggml.tokens'", "past the end of the file")


def test_arrays_nested_too_deep_are_refused(tmp_path: Path) -> None:
    nested = b"".join(struct.pack("<IQ", ARRAY, 1) for _ in range(50)) + struct.pack("<IQ", UINT32, 0)
    path = tmp_path / "nested.gguf"
    path.write_bytes(_header(kvs=1) + gguf_string("a") + struct.pack("<I", ARRAY) + nested)
    _refused(path, "nests arrays more than 8 deep")


@pytest.mark.parametrize("value_type", [13, 1 << 31])
def test_an_unknown_value_type_is_refused(tmp_path: Path, value_type: int) -> None:
    path = tmp_path / "type.gguf"
    path.write_bytes(_header(kvs=1) + gguf_string("general.name") + struct.pack("<I", value_type) + bytes(16))
    _refused(path, f"metadata key 'general.name' has value type {value_type}, which GGUF does not define")


def test_an_unknown_or_removed_ggml_type_is_refused(tmp_path: Path) -> None:
    for type_id, said in ((99, "a type this reader does not know"), (4, "Q4_2, a type ggml removed")):
        path = write_gguf(tmp_path / f"ggml{type_id}.gguf", _META, [Tensor("w", [32, 2], "F32", type_id=type_id)])
        _refused(path, f"tensor 'w' has ggml type {type_id} ({said}", "known: BF16, F16, F32")


def test_a_misaligned_data_offset_is_refused(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "misaligned.gguf", _META,
                      [Tensor("a", [8], "F32"), Tensor("b", [8], "F32", offset=16)])
    _refused(path, "tensor 'b' starts at data offset 16, not a multiple of the alignment 32")


def test_an_alignment_that_is_no_power_of_two_is_refused(tmp_path: Path) -> None:
    for alignment in (0, 24):
        path = write_gguf(tmp_path / f"align{alignment}.gguf",
                          {**_META, "general.alignment": (UINT32, alignment)}, [Tensor("a", [8], "F32")])
        _refused(path, f"general.alignment is {alignment}, not a power of two")


def test_a_version_1_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "old.gguf"
    # Version 1 counted with uint32s: its tensor and key counts are 4 bytes each.
    path.write_bytes(b"GGUF" + struct.pack("<III", 1, 0, 0) + bytes(32))
    _refused(path, "a GGUF version 1 file", "convert_hf_to_gguf.py")


def test_a_big_endian_or_unknown_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.gguf"
    path.write_bytes(b"GGUF" + struct.pack(">IQQ", 3, 0, 0) + bytes(32))
    _refused(path, "a big-endian GGUF (version 3 byte-swapped)")
    path = tmp_path / "future.gguf"
    path.write_bytes(_header(version=7) + bytes(32))
    _refused(path, "GGUF version 7, which no GGUF reader knows")


def test_a_truncated_data_section_is_refused(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "cut.gguf", _META, [Tensor("a", [64, 64], "F32")])
    path.write_bytes(path.read_bytes()[:-100])
    _refused(path, "tensor 'a' spans data bytes 0 to 16,384, past the end of the file's data section", "truncated")


def test_a_header_cut_short_is_refused(tmp_path: Path) -> None:
    whole = write_gguf(tmp_path / "whole.gguf", _META, [Tensor("a", [64], "F32")]).read_bytes()
    for cut in (10, 30, 45, 60, 70):
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(whole[:cut])
        line = _refused(path, "GGUF header: ")
        said = ("shorter than GGUF's 24-byte header",) if cut < 24 else ("past the end of the file", "cannot fit")
        assert any(words in line for words in said), line


def test_dimension_and_shape_problems_are_refused(tmp_path: Path) -> None:
    cases = [
        ([1, 1, 1, 1, 2], "F32", "has 5 dimensions (ggml allows at most 4)"),
        ([1 << 40, 1 << 40], "F32", "has dimensions [1099511627776, 1099511627776], more elements than ggml's int64"),
        ([100, 2], "Q4_K", "has 100 values a row, not a multiple of Q4_K's block of 256"),
    ]
    for index, (dims, kind, said) in enumerate(cases):
        path = write_gguf(tmp_path / f"dims{index}.gguf", _META, [Tensor("w", dims, kind, data=b"")])
        _refused(path, f"tensor 'w' {said}")


def test_duplicate_names_and_overlapping_tensors_are_refused(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "twice.gguf", _META, [Tensor("w", [8], "F32"), Tensor("w", [8], "F32")])
    _refused(path, "tensor 'w' appears twice")
    path = write_gguf(tmp_path / "overlap.gguf", _META,
                      [Tensor("a", [64], "F32"), Tensor("b", [64], "F32", offset=128)])
    _refused(path, "tensors 'a' and 'b' overlap")
    path = tmp_path / "keys.gguf"
    path.write_bytes(_header(kvs=2) + (gguf_string("k") + struct.pack("<IB", 0, 1)) * 2 + bytes(32))
    _refused(path, "metadata key 'k' appears twice")


def test_a_huge_tensor_name_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "name.gguf"
    path.write_bytes(_header(tensors=1) + struct.pack("<Q", 1 << 62) + bytes(64))
    _refused(path, "tensor 0's name is 4,611,686,018,427,387,904 bytes long")


def test_a_file_shorter_than_the_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00\x00")
    _refused(path, "shorter than GGUF's 24-byte header")


def test_non_finite_metadata_floats_stay_valid_json(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "nan.gguf", {**_META, "llama.rope.freq_base": (FLOAT32, float("nan")),
                                              "x.scale": (FLOAT32, float("inf"))}, [Tensor("a", [8], "F32")])
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout, parse_constant=lambda word: pytest.fail(f"{word} in --json"))
    assert data["gguf"]["metadata"]["llama.rope.freq_base"] == "nan"
    assert data["gguf"]["metadata"]["x.scale"] == "inf"


def test_a_string_past_the_end_deep_in_a_large_array_is_refused(tmp_path: Path) -> None:
    """The array's strings are stepped over by their lengths, a window at a time: one claiming 2**40 bytes after
    100,000 good ones is refused as the first ones would be."""
    good = b"".join(gguf_string(f"tok{i}") for i in range(100_000))
    path = tmp_path / "deep.gguf"
    path.write_bytes(_header(kvs=1) + gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", ARRAY, STRING, 100_001)
                     + good + struct.pack("<Q", 1 << 40) + b"x" * 64)
    _refused(path, "string 100,000 of 'tokenizer.ggml.tokens' (1,099,511,627,776 bytes long)",
             "past the end of the file")


def test_counts_the_file_can_hold_but_no_model_has_are_refused(tmp_path: Path) -> None:
    """Within the file's bytes, yet each a Python object or a loop step: 200,001 tensor entries of 24 bytes (a 1 GB
    file could hold 44 million: some 10 GB of TensorInfos), 200,001 metadata entries, an array of 4,000,001 strings
    or of 100,001 arrays."""
    path = tmp_path / "tensors.gguf"
    path.write_bytes(_header(tensors=200_001) + bytes(24 * 200_001))
    _refused(path, "200,001 tensors, more than the 200,000 read")
    path = tmp_path / "keys.gguf"
    path.write_bytes(_header(kvs=200_001) + bytes(13 * 200_001))
    _refused(path, "200,001 metadata entries, more than the 200,000 read")
    path = tmp_path / "strings.gguf"
    path.write_bytes(_header(kvs=1) + gguf_string("tokenizer.ggml.tokens")
                     + struct.pack("<IIQ", ARRAY, STRING, 4_000_001) + bytes(8 * 4_000_001))
    _refused(path, "metadata array 'tokenizer.ggml.tokens' holds 4,000,001 strings, more than 4,000,000")
    path = tmp_path / "arrays.gguf"
    path.write_bytes(_header(kvs=1) + gguf_string("a") + struct.pack("<IIQ", ARRAY, ARRAY, 100_001)
                     + struct.pack("<IQ", UINT32, 0) * 100_001)
    _refused(path, "metadata array 'a' holds 100,001 arrays, more than 100,000")
