"""Hostile GGUF files, the second round: a GGUF's metadata is now a config that plan-devices builds a model from, and
its data section is what inspect --verify checks; each hostile file is refused in one line (exit 2, stdout empty,
no traceback) or reported, never a hang, a traceback or a false verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.gguf_files import STRING, UINT32, UINT64, Tensor, llama_metadata, write_gguf
from tests.helpers import refused_line, run_json


def _plan_refused(path: Path, *words: str) -> str:
    return refused_line(path, "plan-devices", str(path), "--gpu", "1GB", words=words)


@pytest.mark.parametrize(("key", "value", "words"), [
    # A model no memory holds, asked for by four bytes of metadata: refused before any layer is built.
    ("llama.block_count", (UINT32, 4_000_000_000), ["the config its GGUF metadata gives asks for 4,000,000,000 "
                                                    "layers"]),
    ("llama.attention.head_count", (UINT32, 0), ["the config its GGUF metadata gives cannot build a 'llama' config",
                                                 "ZeroDivisionError"]),
    ("llama.embedding_length", (STRING, "big"), ["hidden_size", "expected int, got str"]),
    ("llama.vocab_size", (UINT64, 2 ** 62), ["transformers cannot build LlamaForCausalLM"]),
])
def test_a_gguf_config_no_model_can_have_is_refused_by_plan_devices(tmp_path: Path, key: str, value: tuple,
                                                                     words: list[str]) -> None:
    path = write_gguf(tmp_path / "hostile.gguf", {**llama_metadata(tokens=8), key: value},
                      [Tensor("a.weight", [32], "F32")])
    _plan_refused(path, *words)


def test_an_architecture_that_is_no_string_is_refused_by_plan_devices(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "arch.gguf", {**llama_metadata(tokens=8), "general.architecture": (UINT32, 7)},
                      [Tensor("a.weight", [32], "F32")])
    _plan_refused(path, "its metadata names no general.architecture", "weightdoctor inspect reads")


def test_a_long_array_a_config_field_comes_from_is_refused_not_guessed(tmp_path: Path) -> None:
    # Per-layer head counts as an array (OpenELM's and LFM2's GGUFs do so): weightdoctor keeps 3 elements of an
    # array, and a config built from those three would be another model.
    from fixtures.gguf_files import ARRAY

    metadata = {**llama_metadata(tokens=8), "llama.attention.head_count": (ARRAY, (UINT32, [4] * 12))}
    path = write_gguf(tmp_path / "array.gguf", metadata, [Tensor("a.weight", [32], "F32")])
    _plan_refused(path, "num_attention_heads comes from the metadata array 'llama.attention.head_count' "
                        "(12 elements)")


def test_verify_sees_no_gap_at_zero_size_tensors_or_a_file_of_no_tensor(tmp_path: Path) -> None:
    # Empty tensors at offset 0 beside real ones: no bytes, so no gap and no overlap.
    tensors = [Tensor("a.weight", [32], "F32"), Tensor("empty.weight", [0], "F32", b"", offset=0),
               Tensor("b.weight", [8], "F32")]
    path = write_gguf(tmp_path / "empty.gguf", llama_metadata(tokens=4), tensors)
    code, report = run_json("inspect", "--verify", str(path))
    assert code == 0 and report["verify"]["layout_mismatches"] == [], report["verify"]
    bare = write_gguf(tmp_path / "bare.gguf", llama_metadata(tokens=4), [])
    code, report = run_json("inspect", "--verify", str(bare))
    assert code == 0 and report["verify"]["layout_mismatches"] == []
    with open(bare, "ab") as handle:
        handle.write(b"\x7fELF" + bytes(60))  # a header of no tensor, and 64 bytes after it
    code, report = run_json("inspect", "--verify", str(bare))
    assert code == 1 and report["verify"]["layout_mismatches"] == ["bare.gguf: 64 bytes after a header that lists "
                                                                   "no tensor"]


def test_verify_reports_a_hole_of_a_gigabyte_without_reading_it(tmp_path: Path) -> None:
    # A sparse file: the second tensor 1 GiB into the data section. Only the header is read; the hole is counted.
    tensors = [Tensor("a.weight", [8], "F32", bytes(32), offset=0), Tensor("b.weight", [8], "F32", bytes(32),
                                                                            offset=1 << 30)]
    path = write_gguf(tmp_path / "hole.gguf", llama_metadata(tokens=4), tensors)
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size - 32 + (1 << 30))  # b's bytes now lie at data byte 1 GiB, a hole before them
    code, report = run_json("inspect", "--verify", str(path))
    [found] = report["verify"]["layout_mismatches"]
    assert code == 1 and found.startswith(f"hole.gguf: {(1 << 30) - 32:,} data bytes in 1 gap between tensors")


def test_plan_devices_of_a_fifo_named_gguf_is_refused_without_waiting(tmp_path: Path) -> None:
    # plan-devices looks at a file's first bytes for GGUF's magic: a FIFO's open would wait for a writer forever.
    import os

    from tests.helpers import run_subprocess

    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    result = run_subprocess("plan-devices", str(fifo), "--gpu", "1GB", timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert "not a regular file (a FIFO)" in result.stderr
