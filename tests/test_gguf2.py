"""GGUF files, the second round: `inspect --verify` checks a GGUF's data layout (GGUF carries no checksum);
check-dtype's memory figures count quantized tensors dequantized, as inspect's memory table and
from_pretrained(gguf_file=) do; the "quantized values not read" note is information in plain inspect, a warning where
values are read."""

from __future__ import annotations

from pathlib import Path

from fixtures.gguf_files import Tensor, llama_metadata, tiny_llama_gguf, write_gguf
from tests.helpers import json_report, run_json, run_subprocess


def test_verify_checks_a_gguf_layout_and_says_what_it_checked(tmp_path: Path) -> None:
    path, _ = tiny_llama_gguf(tmp_path / "tiny.Q4_K_M.gguf")
    code, report = run_json("inspect", "--verify", str(path))
    verify = report["verify"]
    assert code == 0 and verify["files_checked"] == 1 and verify["layout_mismatches"] == []
    [note] = verify["notes"]
    assert "GGUF carries no checksum" in note and "14 tensors' data lie inside the file" in note
    assert "fill its data section to the end" in note
    result = run_subprocess("inspect", "--verify", str(path), env={"COLUMNS": "400"})
    assert result.returncode == 0, result.stderr
    assert "1 file(s) checked, all as their headers say" in result.stdout
    assert "zip CRCs" not in result.stdout and "0 member(s) checked" not in result.stdout


def test_verify_finds_bytes_appended_after_the_last_tensor(tmp_path: Path) -> None:
    path, _ = tiny_llama_gguf(tmp_path / "tiny.gguf", quantized=False)
    size = path.stat().st_size
    with open(path, "ab") as handle:
        handle.write(b"PK\x03\x04" + bytes(96))  # a payload appended: 100 bytes no tensor holds
    code, report = run_json("inspect", "--verify", str(path))
    [found] = report["verify"]["layout_mismatches"]
    assert code == 1
    assert found.startswith("tiny.gguf: 100 bytes after the last tensor's data")
    assert f"the file has {size + 100:,}" in found
    # Without --verify the file reads as before: the loaders ignore what follows the data.
    assert run_json("inspect", str(path))[0] == 0


def test_verify_finds_a_gap_between_tensors_that_no_tensor_holds(tmp_path: Path) -> None:
    # Two 128-byte F32 tensors, the second placed 96 bytes past the first's end (alignment 32: no padding needed).
    tensors = [Tensor("a.weight", [32], "F32", bytes(128), offset=0),
               Tensor("b.weight", [32], "F32", bytes(128), offset=224)]
    path = write_gguf(tmp_path / "gap.gguf", llama_metadata(tokens=4), tensors)
    with open(path, "ab") as handle:
        handle.write(bytes(96))  # the file's end reaches the second tensor's: only the gap is unaccounted for
    code, report = run_json("inspect", "--verify", str(path))
    [found] = report["verify"]["layout_mismatches"]
    assert code == 1
    assert found.startswith("gap.gguf: 96 data bytes in 1 gap(s) between tensors") and "128-224" in found


def test_verify_accepts_a_last_tensor_without_its_padding(tmp_path: Path) -> None:
    # A writer may stop at the last tensor's end, unpadded: nothing is unaccounted for.
    tensors = [Tensor("a.weight", [8], "F32", bytes(32)), Tensor("b.weight", [5], "F32", bytes(20))]
    path = write_gguf(tmp_path / "short.gguf", llama_metadata(tokens=4), tensors)
    path.write_bytes(path.read_bytes()[:-12])  # the writer's 12 padding bytes after b's 20
    code, report = run_json("inspect", "--verify", str(path))
    assert code == 0 and report["verify"]["layout_mismatches"] == []


def test_check_dtype_memory_counts_quantized_tensors_dequantized_as_inspect_does(tmp_path: Path) -> None:
    path, _ = tiny_llama_gguf(tmp_path / "tiny.Q4_K_M.gguf")
    inspected = json_report("inspect", str(path))
    checked = json_report("check-dtype", str(path))
    params = inspected["num_params"]
    # Every parameter at the target's width, the Q4_K / Q6_K / Q8_0 ones included (floats once loaded).
    assert inspected["memory"]["fp32"] == checked["memory_bytes"]["fp32"] == params * 4
    assert inspected["memory"]["fp16"] == checked["memory_bytes"]["fp16"] == params * 2
    assert checked["targets"]["bf16"]["memory_bytes"] == params * 2
    assert checked["memory_bytes"]["stored"] == inspected["total_bytes"]  # the packed blocks as stored
    reasons = {row["name"]: row["reason"] for row in checked["skipped"]}
    assert reasons["blk.0.attn_q.weight"].startswith("a quantized GGUF type: its values are not read")
    result = run_subprocess("check-dtype", str(path), env={"COLUMNS": "400"})
    assert result.returncode == 0, result.stderr
    assert "10 left as they are (10 quantized GGUF tensor(s), not read)" in result.stdout
    assert "memory (quantized GGUF tensors counted dequantized, as from_pretrained(gguf_file=) loads them): " \
           "stored 892.42 KB  fp32 3.12 MB" in result.stdout


def test_the_quantized_note_is_information_in_inspect_and_a_warning_where_values_are_read(tmp_path: Path) -> None:
    path, _ = tiny_llama_gguf(tmp_path / "tiny.Q4_K_M.gguf")
    plain = run_subprocess("inspect", str(path), env={"COLUMNS": "400"})
    assert plain.returncode == 0 and "warning" not in plain.stderr, plain.stderr
    assert "Q4_K, Q6_K, Q8_0 tensors are described from the header, their values not decoded" in plain.stdout
    for command in (["inspect", "--stats"], ["check-dtype"]):
        result = run_subprocess(*command, str(path), env={"COLUMNS": "400"})
        assert result.returncode == 0, result.stderr
        assert "warning: tiny.Q4_K_M.gguf: GGUF tensors of quantized ggml types (Q4_K, Q6_K, Q8_0)" in result.stderr
    stats = json_report("inspect", "--stats", str(path))
    assert any("quantized ggml types" in w for w in stats["warnings"])
    # A GGUF of plain floats has nothing to say.
    floats, _ = tiny_llama_gguf(tmp_path / "tiny.F32.gguf", quantized=False)
    assert json_report("inspect", str(floats))["gguf"]["values_note"] is None
