"""Fix list 15: repeated options compared as their type reads them, safe user regexes no longer refused, convert /
shard `--json` warnings at the top level, NVFP4 labelled float4, reader's variant helper public, check-dtype's
reason for a tensor it could not read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import REPO_ROOT, run_cli, run_json

EXAMPLE = REPO_ROOT / "fixtures" / "example"


# 1. `--sample 5 --sample 05`: the same number, refused as "given twice" because the strings differ.

def test_an_option_given_twice_with_values_its_type_reads_alike_runs(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"a.weight": torch.arange(8, dtype=torch.float32)}, path)
    code, data = run_json("check-dtype", str(path), "--sample", "5", "--sample", "05")
    assert code == 0 and data is not None, data
    assert data["sample"]["values_per_tensor"] == 5, data["sample"]
    # Values that differ once read are still refused, naming both as typed.
    result = run_cli("check-dtype", str(path), "--sample", "5", "--sample", "6")
    assert result.exit_code == 2 and result.stdout == ""
    assert "--sample is given twice ('5', then '6')" in result.stderr, result.stderr
    # The same bad value twice: Click's own refusal of the value, not a word about the repetition.
    bad = run_cli("check-dtype", str(path), "--sample", "x", "--sample", "x")
    assert bad.exit_code == 2 and "Invalid value for '--sample': 'x' is not a valid int" in bad.stderr, bad.stderr


# 2. Safe user regexes refused by the backtracking bound.

@pytest.mark.parametrize("pattern", [r"(?i)(\w+\.)+", r".{0,20}layers.{0,20}attn.{0,20}proj",
                                     r"(?i)layers\.(\d+\.)+self_attn"])
def test_a_safe_pattern_with_counted_repeats_or_ignorecase_runs(tmp_path: Path, pattern: str) -> None:
    import re
    import time

    path = tmp_path / "m.safetensors"
    names = ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight", "lm_head.weight"]
    save_file({name: torch.zeros(2) for name in names}, path)
    code, data = run_json("inspect", str(path), "--filter", pattern, "--all")
    assert code == 0 and data["filter"] == pattern, data
    assert [t["name"] for t in data["tensors"]] == [n for n in sorted(names) if re.search(pattern, n)]
    # What the bound guards against stays fast for these: names of 10,000 characters.
    compiled = re.compile(pattern)
    # CPU time, with room: a busy machine stretches wall time; exponential backtracking would take hours.
    started = time.process_time()
    for name in ("layers." * 1400, "a" * 10_000, "attn" * 2500 + "!"):
        compiled.search(name)
    assert time.process_time() - started < 5.0


@pytest.mark.parametrize("pattern", ["a{0,40}" * 6 + "x", ".{0,20}" * 5 + "x", r"(?i)(\w+k)+$", r"(?i)(a+A)+$"])
def test_patterns_of_many_ways_are_still_refused(pattern: str) -> None:
    from weightdoctor.errors import UsageError
    from weightdoctor.quantized import refuse_unbounded_regex

    with pytest.raises(UsageError, match="ways on one tensor name|more than one way"):
        refuse_unbounded_regex("--filter", pattern)


# 3. convert / shard --json: the warnings at the top level, as the other commands put them.

@pytest.mark.parametrize("command", [["convert"], ["shard", "--max", "1KB"]])
def test_convert_and_shard_json_carry_warnings_at_the_top_level(tmp_path: Path, command: list[str]) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    save_file({"a.weight": torch.ones(2, 2)}, folder / "model.safetensors")
    torch.save({"a.weight": torch.ones(2, 2)}, folder / "pytorch_model.bin")
    result = run_cli(command[0], str(folder), *command[1:], "-o", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data["warnings"], list) and data["warnings"] == data["plan"]["warnings"]
    assert any("pytorch_model.bin is ignored" in warning for warning in data["warnings"]), data["warnings"]
    assert "warning: pytorch_model.bin is ignored" in result.stderr


# 4. NVFP4 (4-bit floats, e2m1) was labelled int4.

_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
          "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 1, "vocab_size": 128,
          "dtype": "bfloat16", "tie_word_embeddings": False}


def _compressed_tensors_4bit(kind: str) -> dict[str, object]:
    """llm-compressor's NVFP4 scheme (`type: float`, 16-value groups, FP8 scales) or its W4A16 (`type: int`)."""
    return {"quant_method": "compressed-tensors", "quantization_status": "compressed", "ignore": ["lm_head"],
            "format": "nvfp4-pack-quantized" if kind == "float" else "pack-quantized",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                "num_bits": 4, "type": kind, "symmetric": True, "strategy": "tensor_group", "group_size": 16}}}}


def _config_folder(tmp_path: Path, name: str, quantization: dict[str, object]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**_LLAMA, "quantization_config": quantization}))
    return folder


def test_an_nvfp4_checkpoint_is_planned_as_float4_not_int4(tmp_path: Path) -> None:
    nvfp4 = _config_folder(tmp_path, "nvfp4", _compressed_tensors_4bit("float"))
    code, data = run_json("plan-devices", str(nvfp4), "--gpu", "1GB")
    assert code == 0 and data["dtype"] == "float4_e2m1fn_x2", data["dtype"]
    assert ("the config quantizes the weights (compressed-tensors, 4-bit): planned as float4_e2m1fn_x2; --dtype "
            "overrides") in data["warnings"], data["warnings"]
    assert not [line for line in data["warnings"] if "int4" in line], data["warnings"]
    human = run_cli("plan-devices", str(nvfp4), "--gpu", "1GB")
    assert "  dtype float4_e2m1fn_x2 · " in human.stdout, human.stdout
    # --dtype bf16 sizes the dense weights, and says what the load keeps them packed as.
    code, dense = run_json("plan-devices", str(nvfp4), "--gpu", "1GB", "--dtype", "bf16")
    said = next(line for line in dense["warnings"] if line.startswith("--dtype bf16 on a pre-quantized checkpoint"))
    assert "keeps them packed (float4_e2m1fn_x2; " in said and said.endswith(
        "without --dtype it is planned as float4_e2m1fn_x2, as it loads"), said
    # The sizes are an int4 checkpoint's; integer 4-bit weights keep their int4 label.
    int4 = _config_folder(tmp_path, "w4a16", _compressed_tensors_4bit("int"))
    code, same = run_json("plan-devices", str(int4), "--gpu", "1GB")
    assert same["dtype"] == "int4" and same["weights_bytes"] == data["weights_bytes"], same


@pytest.mark.parametrize(("quantization", "label"), [
    ({"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16}, "float4_e2m1fn_x2"),
    ({"quant_method": "modelopt", "quant_algo": "FP8"}, "float8_e4m3fn"),
    ({"quant_method": "modelopt", "quant_algo": "W4A16_AWQ", "group_size": 128}, None),
    ({"quant_method": "compressed-tensors", "config_groups": {
        "attn": {"weights": {"num_bits": 8, "type": "float"}}, "mlp": {"weights": {"num_bits": 4, "type": "float"}}}},
     None),
])
def test_the_float_label_of_modelopt_and_mixed_recipes(quantization: dict[str, object], label: str | None) -> None:
    from weightdoctor.plan_devices import quantized_float_label

    assert quantized_float_label({**_LLAMA, "quantization_config": quantization}) == label


# 5. plan-devices (and load_simulation behind it) imported the reader's private helpers.

def test_no_module_outside_the_readers_imports_a_private_reader_helper() -> None:
    import ast

    private = []
    for path in sorted((REPO_ROOT / "weightdoctor").rglob("*.py")):
        if path.parent.name == "checkpoint":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "weightdoctor.checkpoint.reader":
                private += [f"{path.name}: {alias.name}" for alias in node.names if alias.name.startswith("_")]
    assert private == []


def test_the_public_variant_and_weight_file_helpers(tmp_path: Path) -> None:
    from weightdoctor.checkpoint.reader import variant_of, weight_files_in

    assert [variant_of(name) for name in ("model.fp16.safetensors", "model.safetensors.index.ema.json",
                                          "model.safetensors", "pytorch_model.bin")] == ["fp16", "ema", None, None]
    for name in ("model.safetensors", "pytorch_model.bin", "optimizer.pt", "config.json"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in weight_files_in(tmp_path)] == ["model.safetensors", "pytorch_model.bin"]


def test_an_fp8_checkpoint_planned_dense_says_it_loads_as_float8_not_int8(tmp_path: Path) -> None:
    fp8 = _config_folder(tmp_path, "fp8", {
        "quant_method": "compressed-tensors", "quantization_status": "compressed", "format": "float-quantized",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "float"}}}})
    code, data = run_json("plan-devices", str(fp8), "--gpu", "1GB", "--dtype", "bf16")
    said = next(line for line in data["warnings"] if line.startswith("--dtype bf16 on a pre-quantized checkpoint"))
    assert "keeps them packed (float8_e4m3fn; " in said and "int8" not in said, said
