"""GGUF files, the second round: `inspect --verify` checks a GGUF's data layout (GGUF carries no checksum);
check-dtype's memory figures count quantized tensors dequantized, as inspect's memory table and
from_pretrained(gguf_file=) do; the "quantized values not read" note is information in plain inspect, a warning where
values are read."""

from __future__ import annotations

from pathlib import Path

from fixtures.gguf_files import STRING, UNREAD_KINDS, Tensor, llama_metadata, tiny_llama_gguf, write_gguf
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
    assert "1 file checked, all as their headers say" in result.stdout
    assert "zip CRCs" not in result.stdout and "0 members checked" not in result.stdout


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
    assert found.startswith("gap.gguf: 96 data bytes in 1 gap between tensors") and "128-224" in found


def test_verify_accepts_a_last_tensor_without_its_padding(tmp_path: Path) -> None:
    # A writer may stop at the last tensor's end, unpadded: nothing is unaccounted for.
    tensors = [Tensor("a.weight", [8], "F32", bytes(32)), Tensor("b.weight", [5], "F32", bytes(20))]
    path = write_gguf(tmp_path / "short.gguf", llama_metadata(tokens=4), tensors)
    path.write_bytes(path.read_bytes()[:-12])  # the writer's 12 padding bytes after b's 20
    code, report = run_json("inspect", "--verify", str(path))
    assert code == 0 and report["verify"]["layout_mismatches"] == []


def test_check_dtype_memory_counts_quantized_tensors_as_inspect_does(tmp_path: Path) -> None:
    path, _ = tiny_llama_gguf(tmp_path / "tiny.Q8_1.gguf", kinds=UNREAD_KINDS)
    inspected = json_report("inspect", str(path))
    checked = json_report("check-dtype", str(path))
    unread = [t for t in inspected["tensors"] if t["dtype"] in ("Q8_1", "Q8_K")]
    stored, params = sum(t["nbytes"] for t in unread), inspected["num_params"] - sum(t["num_params"] for t in unread)
    # Every other parameter at the target's width; the Q8_1 / Q8_K ones, which nothing dequantizes (gguf8: they
    # were counted as floats), at their stored bytes.
    assert inspected["memory"]["fp32"] == checked["memory_bytes"]["fp32"] == stored + params * 4
    assert inspected["memory"]["fp16"] == checked["memory_bytes"]["fp16"] == stored + params * 2
    assert checked["targets"]["bf16"]["memory_bytes"] == stored + params * 2
    assert checked["memory_bytes"]["stored"] == inspected["total_bytes"]  # the packed blocks as stored
    reasons = {row["name"]: row["reason"] for row in checked["skipped"]}
    assert reasons["blk.0.attn_q.weight"].startswith("a quantized GGUF type: its values are not read")
    result = run_subprocess("check-dtype", str(path), env={"COLUMNS": "400"})
    assert result.returncode == 0, result.stderr
    assert "10 left as they are (10 quantized GGUF tensors, not read)" in result.stdout
    assert "memory, Q8_1 and Q8_K ones as stored (nothing dequantizes them): stored 1.16 MB  fp32 1.68 MB" \
        in result.stdout


def test_the_quantized_note_is_information_in_inspect_and_a_warning_where_values_are_read(tmp_path: Path) -> None:
    decoded, _ = tiny_llama_gguf(tmp_path / "tiny.Q4_K_M.gguf")
    plain = run_subprocess("inspect", str(decoded), env={"COLUMNS": "400"})
    assert plain.returncode == 0 and "warning" not in plain.stderr, plain.stderr
    assert "Q4_K, Q6_K, Q8_0 tensors are read dequantized to float32, as ggml computes them" in plain.stdout
    path, _ = tiny_llama_gguf(tmp_path / "tiny.Q8_1.gguf", kinds=UNREAD_KINDS)
    plain = run_subprocess("inspect", str(path), env={"COLUMNS": "400"})
    assert plain.returncode == 0 and "warning" not in plain.stderr, plain.stderr
    assert "Q8_1, Q8_K tensors are described from the header, their values not decoded" in plain.stdout
    # The memory table counts them as the floats they load as, and says so (check-dtype's figures agree).
    assert "Memory for the weights, dequantized" in plain.stdout
    for command in (["inspect", "--stats"], ["check-dtype"]):
        result = run_subprocess(*command, str(path), env={"COLUMNS": "400"})
        assert result.returncode == 0, result.stderr
        assert "warning: tiny.Q8_1.gguf: GGUF tensors of quantized ggml types (Q8_1, Q8_K)" \
            in result.stderr
    stats = json_report("inspect", "--stats", str(path))
    assert any("quantized ggml types" in w for w in stats["warnings"])
    # A GGUF of plain floats has nothing to say.
    floats, _ = tiny_llama_gguf(tmp_path / "tiny.F32.gguf", quantized=False)
    assert json_report("inspect", str(floats))["gguf"]["values_note"] is None


def _llama_as_safetensors_and_gguf(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny seeded LlamaForCausalLM saved by save_pretrained, and the same weights as llama.cpp names them in a GGUF
    whose metadata gives its config (F32 tensors, GGUF's dimensions innermost first)."""
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from fixtures.gguf_files import ARRAY, FLOAT32, UINT32

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    folder = tmp_path / "hf"
    model.save_pretrained(folder)
    parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    renamed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
               "lm_head.weight": "output.weight"}
    tensors = []
    for name, value in model.state_dict().items():
        gguf_name = renamed.get(name)
        if gguf_name is None:
            _, _, layer, rest = name.split(".", 3)
            module, _, leaf = rest.rpartition(".")
            gguf_name = f"blk.{layer}.{parts[module]}.{leaf}"
        array = value.numpy().astype(np.float32)
        tensors.append(Tensor(gguf_name, list(reversed(array.shape)), "F32", array.tobytes()))
    metadata = {
        "general.architecture": (STRING, "llama"), "general.name": (STRING, "tiny"),
        "llama.context_length": (UINT32, 512), "llama.embedding_length": (UINT32, 64),
        "llama.block_count": (UINT32, 3), "llama.feed_forward_length": (UINT32, 160),
        "llama.attention.head_count": (UINT32, 4), "llama.attention.head_count_kv": (UINT32, 2),
        "llama.attention.layer_norm_rms_epsilon": (FLOAT32, 1e-5), "llama.rope.freq_base": (FLOAT32, 10000.0),
        "tokenizer.ggml.model": (STRING, "llama"),
        "tokenizer.ggml.tokens": (ARRAY, (STRING, [f"t{i}" for i in range(320)])),
    }
    return folder, write_gguf(tmp_path / "tiny.F32.gguf", metadata, tensors)


def test_plan_devices_plans_a_gguf_as_the_same_model_saved_as_safetensors(tmp_path: Path) -> None:
    folder, gguf = _llama_as_safetensors_and_gguf(tmp_path)
    for dtype in ([], ["--dtype", "fp16"]):
        budget = ["--gpu", "300KB", "--cpu", "1GB", *dtype]
        code_st, from_safetensors = run_json("plan-devices", str(folder), *budget)
        code_gguf, from_gguf = run_json("plan-devices", str(gguf), *budget)
        assert code_st == code_gguf == 0
        for key in ("model_class", "dtype", "num_params", "weights_bytes", "buffers_bytes", "no_split", "device_map",
                    "devices", "verdict", "offload"):
            assert from_gguf[key] == from_safetensors[key], key
        assert from_gguf["model_class"] == "LlamaForCausalLM" and from_gguf["built_from"] == "config"
        assert len(set(from_gguf["device_map"].values())) == 2  # split over the GPU and the CPU: a real plan
        [said] = [w for w in from_gguf["warnings"] if "a GGUF file, planned as from_pretrained" in w]
        assert "gguf_file='tiny.F32.gguf'" in said and "at float32 unless --dtype" in said
    assert from_gguf["dtype"] == "fp16"


def test_plan_devices_still_refuses_a_gguf_architecture_transformers_does_not_load(tmp_path: Path) -> None:
    metadata = llama_metadata(tokens=8)
    metadata = {key.replace("llama.", "mamba9."): value for key, value in metadata.items()}
    metadata["general.architecture"] = (metadata["general.architecture"][0], "mamba9")
    path = write_gguf(tmp_path / "odd.gguf", metadata, [Tensor("a.weight", [32], "F32")])
    result = run_subprocess("plan-devices", str(path), "--gpu", "1GB")
    assert result.returncode == 2 and result.stdout == ""
    assert "does not take architecture 'mamba9'" in result.stderr and "Traceback" not in result.stderr


def test_the_gguf_config_is_what_transformers_load_gguf_checkpoint_builds(tmp_path: Path, monkeypatch) -> None:
    """transformers' own config code as the oracle: load_gguf_checkpoint run over a stand-in for the gguf package's
    GGUFReader (fields and tensor names, read from the file by weightdoctor's reader)."""
    import sys
    import types

    from transformers import modeling_gguf_pytorch_utils

    from weightdoctor.checkpoint.gguf_config import transformers_config
    from weightdoctor.checkpoint.gguf_format import ArraySummary, read_header

    _, gguf = _llama_as_safetensors_and_gguf(tmp_path)
    mistral = write_gguf(tmp_path / "mistral.gguf", {**llama_metadata(tokens=8), "general.name": (STRING, "mistral")},
                         [Tensor("token_embd.weight", [64, 8], "F32")])
    for path in (gguf, mistral):
        header = read_header(path, path.name)

        class Field:
            def __init__(self, value: object) -> None:
                if isinstance(value, ArraySummary):  # a count: transformers reads the tokens as a list
                    self.parts, self.data, self.types = [[0]] * value.count, list(range(value.count)), [9, 0]
                elif isinstance(value, str):
                    self.parts, self.data, self.types = [list(value.encode())], [0], [8]
                elif isinstance(value, float):
                    self.parts, self.data, self.types = [[value]], [0], [6]
                else:
                    self.parts, self.data, self.types = [[value]], [0], [4]

        reader = types.SimpleNamespace(fields={k: Field(v) for k, v in header.metadata.items()},
                                       tensors=[types.SimpleNamespace(name=t.name) for t in header.tensors])
        fake = types.ModuleType("gguf")
        fake.GGUFReader = lambda _path, reader=reader: reader  # type: ignore[attr-defined]
        fake.dequantize = None  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "gguf", fake)
        monkeypatch.setattr(modeling_gguf_pytorch_utils, "is_gguf_available", lambda *a: True)
        expected = modeling_gguf_pytorch_utils.load_gguf_checkpoint(str(path))["config"]
        assert transformers_config(header).config == expected
    assert expected["model_type"] == "mistral"  # general.name "mistral": transformers' rename
