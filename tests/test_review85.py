"""review85: what a hostile review of the session's merges (GGUF reading, plan-devices' onloaded weights, diff-keys'
changed_projections) found wrong, each case failing before its fix."""

from __future__ import annotations

from pathlib import Path

from fixtures.gguf_files import ARRAY, STRING, UINT32, Tensor, llama_metadata, write_gguf
from tests.helpers import json_report, run_cli


def test_gguf_tensors_aliasing_one_run_around_empty_tensors_are_refused_as_overlapping(tmp_path: Path) -> None:
    """Only neighbours in offset order were compared, and an empty tensor between two at the same offset hid their
    overlap: 200 tensors of 256 KB each, all at data offset 0 of a 280 KB file, read as 13,107,200 parameters (every
    --stats read going over the same bytes again). Now refused as the overlap it is."""
    tensors = []
    for index in range(200):
        data = bytes(1024 * 64 * 4) if index == 0 else b""
        tensors.append(Tensor(f"big{index}.weight", [1024, 64], "F32", data=data, offset=0))
        tensors.append(Tensor(f"empty{index}", [0], "F32", data=b"", offset=0))
    path = write_gguf(tmp_path / "alias.gguf", {"general.architecture": (STRING, "llama")}, tensors)
    assert path.stat().st_size < 300_000
    for extra in ((), ("--json",)):
        result = run_cli("inspect", str(path), *extra)
        assert result.exit_code == 2, result.stdout
        assert result.stdout == "" and "Traceback" not in result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line == (f"error: {path}: GGUF header: tensors 'big0.weight' and 'big1.weight' overlap (data bytes "
                        "0-262,144 and 0-262,144)"), line


def test_gguf_empty_tensors_at_any_offset_beside_real_ones_are_still_read(tmp_path: Path) -> None:
    """The other side of the fix: an empty tensor sharing an offset with a real one holds no bytes and is no
    overlap (ggml writes them so)."""
    tensors = [Tensor("a.weight", [32, 2], "F32", data=bytes(256), offset=0), Tensor("empty", [0], "F32", data=b"",
                                                                                    offset=0),
               Tensor("b.weight", [32, 2], "F32", data=bytes(256), offset=256)]
    path = write_gguf(tmp_path / "empty.gguf", {"general.architecture": (STRING, "llama")}, tensors)
    report = json_report("inspect", str(path))
    assert [(t["name"], t["shape"]) for t in report["tensors"]] == [("a.weight", [2, 32]), ("empty", [0]),
                                                                   ("b.weight", [2, 32])]


def test_gguf_summary_fields_give_an_array_as_the_metadata_does(tmp_path: Path) -> None:
    """A summary field whose key holds an array (general.name, ARCH.embedding_length of an odd file) came out of
    --json under the dataclass's field names ({"element_type": ...}), where the same key in `metadata` is
    {"array": ..., "count": ..., "first": ...} as the docs say."""
    metadata = {**llama_metadata(tokens=4), "general.name": (ARRAY, (STRING, ["x", "y"])),
                "llama.embedding_length": (ARRAY, (UINT32, [1, 2, 3, 4]))}
    path = write_gguf(tmp_path / "odd.gguf", metadata, [Tensor("a.weight", [32, 2], "F32")])
    gguf = json_report("inspect", str(path))["gguf"]
    assert gguf["name"] == gguf["metadata"]["general.name"] == {"array": "string", "count": 2, "first": ["x", "y"]}
    assert gguf["hidden_size"] == gguf["metadata"]["llama.embedding_length"] == {"array": "uint32", "count": 4,
                                                                                  "first": [1, 2, 3]}
