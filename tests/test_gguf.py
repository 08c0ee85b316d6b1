"""GGUF files (llama.cpp) read header-only by `inspect`: shapes as PyTorch gives them, ggml types with their exact
bytes, the metadata as the config section; F32 / F16 values read for --stats and check-dtype; the commands that do not
take a GGUF refuse it in one line saying what reads it."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from fixtures.gguf_files import (
    ARRAY,
    FLOAT32,
    STRING,
    UINT32,
    UNREAD_KINDS,
    Tensor,
    llama_metadata,
    tiny_llama_gguf,
    write_gguf,
)
from tests.helpers import json_report, run_cli, run_subprocess


def test_inspect_reports_shapes_types_bytes_and_metadata(tmp_path: Path) -> None:
    path, _ = tiny_llama_gguf(tmp_path / "tiny.Q4_K_M.gguf")
    report = json_report("inspect", str(path))
    assert report["format"] == "gguf"
    rows = {row["name"]: row for row in report["tensors"]}
    # GGUF stores ne = [256, 128] (innermost first): PyTorch's [128, 256], nn.Linear(256, 128).weight.
    assert rows["blk.0.attn_k.weight"]["shape"] == [128, 256]
    assert rows["token_embd.weight"]["shape"] == [1000, 256] and rows["token_embd.weight"]["dtype"] == "float16"
    # Exact bytes from the block sizes: Q4_K is 144 bytes per 256 weights, Q6_K 210, Q8_0 34 per 32.
    assert rows["blk.0.attn_q.weight"]["dtype"] == "Q4_K" and rows["blk.0.attn_q.weight"]["nbytes"] == 256 * 144
    assert rows["blk.0.attn_v.weight"]["nbytes"] == 128 * 210
    assert rows["blk.0.ffn_down.weight"]["nbytes"] == 256 * 256 // 32 * 34
    assert report["num_params"] == 1000 * 256 + 2 * (256 + 2 * 256 * 256 + 2 * 128 * 256 + 256 * 256) + 256
    assert report["total_bytes"] == sum(row["nbytes"] for row in rows.values())
    gguf = report["gguf"]
    assert (gguf["version"], gguf["architecture"], gguf["name"]) == (3, "llama", "Tiny Llama")
    assert (gguf["hidden_size"], gguf["num_layers"], gguf["num_heads"], gguf["num_kv_heads"]) == (256, 2, 4, 2)
    assert gguf["context_length"] == 4096 and gguf["vocab_size"] == 1000
    q4k = 2 * (256 * 256 + 128 * 256 + 256 * 256)  # attn_q, attn_k, attn_output of each layer
    assert gguf["tensor_types"]["Q4_K"] == {"tensors": 6, "parameters": q4k, "bytes": q4k // 256 * 144,
                                            "bits_per_weight": 4.5}
    assert gguf["tensor_types"]["Q6_K"]["bits_per_weight"] == 6.5625
    assert gguf["bits_per_weight"] == round(report["total_bytes"] * 8 / report["num_params"], 4)
    # A large array is counted, never listed whole.
    assert gguf["metadata"]["tokenizer.ggml.tokens"] == {"array": "string", "count": 1000,
                                                         "first": ["tok0", "tok1", "tok2"]}
    assert gguf["metadata"]["general.file_type"] == 15
    assert "tok999" not in json.dumps(report)
    assert report["security"]["verdict"] == "safe" and report["security"]["notes"] == []
    # Information in the GGUF summary, not a warning: most GGUF files are quantized (test_gguf2 has the warning).
    assert not [w for w in report["warnings"] if "quantized ggml types" in w]
    assert gguf["values_note"].startswith("Q4_K, Q6_K, Q8_0 tensors are read dequantized to float32")


def test_inspect_text_shows_the_gguf_metadata_panel(tmp_path: Path) -> None:
    path, _ = tiny_llama_gguf(tmp_path / "tiny.gguf")
    result = run_subprocess("inspect", str(path), env={"COLUMNS": "400"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "GGUF metadata" in out and "GGUF v3, tensor data aligned to 32 bytes" in out
    assert "Q4_K: 6 tensors, 327.7K params, 4.5 bits/weight" in out
    assert "[1,000 string: 'tok0', 'tok1', 'tok2', ...]" in out and "tok999" not in out
    assert "safe (GGUF: no pickle, no code)" in out
    assert "│ blk.0.attn_k.weight" in out and "128×256" in out


def test_stats_and_check_dtype_read_plain_values_only(tmp_path: Path) -> None:
    path, values = tiny_llama_gguf(tmp_path / "tiny.gguf", seed=3, kinds=UNREAD_KINDS)
    report = json_report("inspect", str(path), "--stats")
    stats = {row["name"]: row["stats"] for row in report["tensors"]}
    embedding = values["token_embd.weight"].astype(np.float64)
    assert stats["token_embd.weight"]["count"] == embedding.size
    assert stats["token_embd.weight"]["mean"] == pytest.approx(embedding.mean(), rel=1e-4, abs=1e-9)
    assert stats["token_embd.weight"]["std"] == pytest.approx(embedding.std(), rel=1e-4)
    assert stats["token_embd.weight"]["max"] == pytest.approx(float(embedding.max()))
    assert stats["blk.0.attn_q.weight"] is None  # Q8_1: not read, and said so
    assert any("quantized ggml types" in w and "not read" in w for w in report["warnings"])
    dtype = json_report("check-dtype", str(path))
    assert dtype["targets"]["fp16"]["verdict"] == "safe", dtype["targets"]["fp16"]


def test_sampled_stats_read_values_at_their_offsets(tmp_path: Path) -> None:
    path, values = tiny_llama_gguf(tmp_path / "plain.gguf", seed=5, quantized=False)
    report = json_report("inspect", str(path), "--stats", "--sample", "100000")
    stats = {row["name"]: row["stats"] for row in report["tensors"]}
    for name in ("blk.1.attn_k.weight", "blk.0.ffn_down.weight"):
        array = values[name].astype(np.float64)
        assert stats[name]["count"] == array.size  # a sample larger than the tensor reads it whole
        assert stats[name]["abs_max"] == pytest.approx(float(np.abs(array).max()))


def test_load_tensor_gives_the_pytorch_layout(tmp_path: Path) -> None:
    """Values come back in C order under the reversed shape: element [r, c] is row r of the matrix numpy wrote."""
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.errors import UnsupportedFormat

    path, values = tiny_llama_gguf(tmp_path / "tiny.gguf", seed=1)
    with open_checkpoint(str(path)) as checkpoint:
        tensor = checkpoint.load_tensor("token_embd.weight")
        assert tuple(tensor.shape) == (1000, 256) and str(tensor.dtype) == "torch.float16"
        assert np.array_equal(tensor.numpy(), values["token_embd.weight"])
        # Q4_K blocks of zero bytes (d = 0): dequantized to float32 zeros in the PyTorch shape.
        dequantized = checkpoint.load_tensor("blk.0.attn_k.weight")
        assert tuple(dequantized.shape) == (128, 256) and str(dequantized.dtype) == "torch.float32"
        assert not dequantized.any()
    unread, _ = tiny_llama_gguf(tmp_path / "unread.gguf", seed=1, kinds=UNREAD_KINDS)
    refused = "is Q8_1, a quantized ggml type weightdoctor does not decode.*gguf_file="
    with open_checkpoint(str(unread)) as checkpoint, pytest.raises(UnsupportedFormat, match=refused):
        checkpoint.load_tensor("blk.0.attn_q.weight")


def test_diff_keys_compares_two_ggufs_and_the_values_it_can_read(tmp_path: Path) -> None:
    quantized, _ = tiny_llama_gguf(tmp_path / "q.gguf", kinds=UNREAD_KINDS)
    plain, _ = tiny_llama_gguf(tmp_path / "f32.gguf", quantized=False)
    report = json_report("diff-keys", str(quantized), str(plain))
    assert report["matched"] == report["total_a"] == report["total_b"] == 14
    assert report["missing"] == [] and report["unexpected"] == []
    reasons = {group["example"]: group["reason"] for group in report["groups"] if group["kind"] == "dtype"}
    assert reasons["blk.0.attn_q.weight"] == "Q8_1→float32" and reasons["blk.0.attn_v.weight"] == "Q8_K→float32"
    # --values compares what both sides hold as plain values (F16 / F32) and says what it left out.
    values = json_report("diff-keys", str(quantized), str(plain), "--values")
    compared = {row["name"]: row for row in values["values"]}
    assert set(compared) == {"token_embd.weight", "blk.0.attn_norm.weight", "blk.1.attn_norm.weight",
                             "output_norm.weight"}, sorted(compared)
    assert compared["token_embd.weight"]["identical"] and compared["output_norm.weight"]["identical"]
    [said] = [w for w in values["warnings"] if "not compared" in w]
    assert said.startswith("10 tensors of quantized GGUF (ggml) types not compared (blk.0.attn_q.weight, ...)"), said
    other, _ = tiny_llama_gguf(tmp_path / "other.gguf", seed=9, quantized=False)
    moved = {row["name"]: row for row in json_report("diff-keys", str(plain), str(other), "--values")["values"]}
    assert len(moved) == 14 and not moved["blk.0.attn_q.weight"]["identical"], moved["blk.0.attn_q.weight"]
    assert moved["output_norm.weight"]["identical"]  # ones on both sides


@pytest.mark.parametrize("command", [["convert", "-o", "OUT/out.safetensors"],
                                     ["shard", "-o", "OUT/sharded", "--single"]])
def test_commands_that_do_not_take_a_gguf_say_what_does(tmp_path: Path, command: list[str]) -> None:
    path, _ = tiny_llama_gguf(tmp_path / "plain.gguf", quantized=False)
    (tmp_path / "OUT").mkdir()
    args = [word.replace("OUT", str(tmp_path / "OUT")) for word in command]
    result = run_cli(args[0], str(path), *args[1:])
    assert result.exit_code == 2 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert f"{path}: a GGUF file (llama.cpp): {args[0]}" in line or f"plain.gguf: a GGUF file (llama.cpp): {args[0]}" \
        in line, line
    assert "gguf_file='plain.gguf'" in line and "weightdoctor inspect reads its structure" in line
    assert list((tmp_path / "OUT").iterdir()) == []


def test_a_folder_holding_only_a_gguf_names_the_file_to_inspect(tmp_path: Path) -> None:
    folder = tmp_path / "TinyLlama-GGUF"
    folder.mkdir()
    tiny_llama_gguf(folder / "tiny.Q4_K_M.gguf")
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2
    assert f"read when named: weightdoctor inspect '{folder / 'tiny.Q4_K_M.gguf'}' shows its tensors" in result.stderr
    assert "does not read (not PyTorch)" not in result.stderr


def test_other_value_types_alignment_and_bf16(tmp_path: Path) -> None:
    """general.alignment 64 moves the data section; every scalar type and nested arrays parse; BF16 values read."""
    import torch

    values = torch.linspace(-2, 2, 64, dtype=torch.bfloat16)
    raw = values.view(torch.int16).numpy().tobytes()
    metadata = {
        "general.architecture": (STRING, "qwen2"),
        "general.alignment": (UINT32, 64),
        "qwen2.context_length": (UINT32, 32768),
        "a.u8": (0, 7), "a.i8": (1, -7), "a.u16": (2, 700), "a.i16": (3, -700), "a.i32": (5, -70000),
        "a.bool": (7, True), "a.u64": (10, 2**40), "a.i64": (11, -(2**40)), "a.f64": (12, 0.25),
        "a.f32": (FLOAT32, 1.5),
        "a.nested": (ARRAY, (ARRAY, [(UINT32, [1, 2]), (STRING, ["x"])])),
        "tokenizer.chat_template": (STRING, "{% for m in messages %}{{ m.content }}{% endfor %}"),
    }
    path = write_gguf(tmp_path / "bf16.gguf", metadata,
                      [Tensor("w", [16, 4], "BF16", raw), Tensor("b", [3], "F32", struct.pack("<3f", 1, 2, 3))],
                      alignment=64)
    report = json_report("inspect", str(path))
    [note] = report["security"]["notes"]
    assert note.startswith("tokenizer.chat_template: Jinja text") and "CVE-2024-34359" in note, note
    meta = report["gguf"]["metadata"]
    assert (meta["a.u8"], meta["a.i8"], meta["a.u16"], meta["a.i16"], meta["a.i32"]) == (7, -7, 700, -700, -70000)
    assert (meta["a.bool"], meta["a.u64"], meta["a.i64"], meta["a.f64"], meta["a.f32"]) == (
        True, 2**40, -(2**40), 0.25, 1.5)
    assert meta["a.nested"] == {"array": "array", "count": 2, "first": ["[2 uint32: 1, 2]", "[1 string: 'x']"]}
    assert report["gguf"]["alignment"] == 64 and report["gguf"]["context_length"] == 32768
    from weightdoctor.checkpoint import open_checkpoint

    with open_checkpoint(str(path)) as checkpoint:
        assert torch.equal(checkpoint.load_tensor("w"), values.reshape(4, 16))
        assert checkpoint.load_tensor("b").tolist() == [1.0, 2.0, 3.0]


def test_a_split_gguf_part_is_read_and_said_to_be_a_part(tmp_path: Path) -> None:
    metadata = {**llama_metadata(tokens=10), "split.no": (2, 0), "split.count": (2, 2),
                "split.tensors.count": (5, 2)}
    # Renamed from gguf-split's `m-00001-of-00002.gguf`: its other part cannot be found by name, so it is read alone
    # (a part under its own name is read with its set: test_gguf5).
    path = write_gguf(tmp_path / "m-first.gguf", metadata, [Tensor("token_embd.weight", [64, 10])])
    report = json_report("inspect", str(path))
    [note] = [w for w in report["warnings"] if "split GGUF" in w]
    assert "part 1 of 2 of a split GGUF" in note and "its own 1 tensor only" in note
    assert "llama-gguf-split --merge" in note, note


def test_the_ggml_type_table_matches_ggml(tmp_path: Path) -> None:
    """Block and type sizes as ggml.c's type traits give them (from the block structs: Q4_K = 2 halves, 12 bytes of
    scales and 128 of quants per 256)."""
    from weightdoctor.checkpoint.gguf_format import GGML_TYPES_BY_NAME

    expected = {"F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22),
                "Q5_1": (32, 24), "Q8_0": (32, 34), "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144),
                "Q5_K": (256, 176), "Q6_K": (256, 210), "Q8_K": (256, 292), "IQ4_NL": (32, 18),
                "IQ4_XS": (256, 136), "IQ2_XXS": (256, 66), "MXFP4": (32, 17), "TQ2_0": (256, 66)}
    for name, sizes in expected.items():
        found = GGML_TYPES_BY_NAME[name]
        assert (found.block_size, found.type_size) == sizes, name
    assert GGML_TYPES_BY_NAME["Q4_K"].bits_per_weight == 4.5


def test_a_tokenizer_larger_than_the_read_window_is_counted_and_what_follows_it_read(tmp_path: Path) -> None:
    """300,000 strings of varied lengths (several MB, past the 1 MiB window the header is read by) are stepped over
    by their lengths; the key and the tensors after them come out whole."""
    from weightdoctor.checkpoint.gguf_format import read_header

    tokens = [("t" * (i % 37)) + str(i) for i in range(300_000)]
    metadata = {**llama_metadata(tokens=3), "tokenizer.ggml.tokens": (ARRAY, (STRING, tokens)),
                "after.tokens": (UINT32, 123456789)}
    path = write_gguf(tmp_path / "big-vocab.gguf", metadata, [Tensor("output.weight", [64, 300_000 // 1000])])
    assert path.stat().st_size > 3 << 20
    header = read_header(path, path.name)
    summary = header.metadata["tokenizer.ggml.tokens"]
    assert (summary.count, summary.first) == (300_000, tokens[:3])
    assert header.metadata["after.tokens"] == 123456789
    [info] = header.tensors
    assert (info.name, info.shape, info.nbytes) == ("output.weight", (300, 64), 300 * 64 * 4)


def test_a_hub_repo_of_a_gguf_names_a_file_the_printed_command_reads(tmp_path: Path) -> None:
    """A cached repo holding one GGUF: the line names the snapshot's file to inspect (quoted, so that it is not
    rewritten as `org/name/file.gguf`, which names a folder of the repo), and that command reads it."""
    import shlex

    from fixtures.hub_cache import commit_of, write_snapshot

    data = tiny_llama_gguf(tmp_path / "tiny.gguf")[0].read_bytes()
    cache = tmp_path / "hub"
    write_snapshot(cache, "org/tiny-gguf", commit_of("main"), {"tiny.Q4_K_M.gguf": data})
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "COLUMNS": "400"}
    refused = run_subprocess("inspect", "org/tiny-gguf", env=env, cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    command = refused.stderr.split("read when named: weightdoctor ", 1)[1].split(" shows its tensors", 1)[0]
    words = shlex.split(command)
    assert words[0] == "inspect" and words[1].endswith("/tiny.Q4_K_M.gguf"), words
    done = run_subprocess(*words, "--json", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["gguf"]["architecture"] == "llama"
