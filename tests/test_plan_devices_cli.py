"""`weightdoctor plan-devices` through the CLI: tables, JSON keys, --output, --map, --local, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fixtures.plan_devices import CONFIGS, from_pretrained_device_map, load_with_device_map
from tests.helpers import run_cli, run_json

LLAMA_70B = CONFIGS / "llama-2-70b" / "config.json"


def test_70b_table_shows_ranges_offload_verdict_and_why() -> None:
    result = run_cli("plan-devices", LLAMA_70B, "--gpu", "24GB", "--gpu", "24GB", "--cpu", "200GB")
    assert result.exit_code == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "LlamaForCausalLM" in out and "dtype fp16" in out and "69.0B parameters" in out
    assert "model.layers.0–11 → cuda:0" in out and "model.layers.12–25 → cuda:1" in out
    assert "model.layers.26–79 → cpu" in out and "OFFLOAD" in out
    assert "needs CPU offload" in out and "moved to the GPU for every generated token" in out
    assert "largest-layer: the planner always keeps room on the first GPU for the largest layer" in out
    assert "(model.layers.13, 1.71 GB)" in out  # kept while it tries model.layers.12, as the planner counts it
    assert "smallest change: --dtype int4" in out and "4 more 24.00 GB GPUs" in out
    assert result.stderr == ""
    failing = run_cli("plan-devices", LLAMA_70B, "--gpu", "24GB", "--gpu", "24GB", "--cpu", "200GB",
                      "--fail-on", "offload")
    assert failing.exit_code == 1 and "needs CPU offload" in failing.stdout
    assert run_cli("plan-devices", LLAMA_70B, "--gpu", "24GB", "--cpu", "200GB", "--fail-on", "no-fit").exit_code == 0


def test_json_keys_and_map_equal_from_pretrained(fx: dict[str, Path]) -> None:
    code, data = run_json("plan-devices", fx["gpt2"], "--gpu", "60KB", "--gpu", "60KB", "--cpu", "100KB",
                          "--strategy", "balanced")
    assert code == 0
    for key in ("device_map", "devices", "dtype", "verdict", "weights_bytes", "offload", "suggestions", "no_split"):
        assert key in data
    assert data["device_map"] == from_pretrained_device_map(
        fx["gpt2"], "balanced", {0: 60_000, 1: 60_000, "cpu": 100_000}
    )
    assert data["dtype"] == "fp32" and data["no_split"] == ["GPT2Block"]
    first = data["devices"][0]
    assert first["device"] == "cuda:0" and first["capacity_bytes"] == 60_000
    assert first["used_bytes"] == sum(r["bytes"] for r in first["ranges"])
    assert data["verdict"] in ("needs-cpu-offload", "needs-disk-offload", "does-not-fit")


def test_output_json_loads_through_from_pretrained(fx: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "device_map.json"
    result = run_cli("plan-devices", fx["bert"], "--cpu", "50KB", "--disk", "--output", target)
    assert result.exit_code == 0 and f"wrote the device map to {target}" in result.stderr
    assert "needs disk offload" in " ".join(result.stdout.split())
    device_map = json.loads(target.read_text())
    assert set(device_map.values()) == {"cpu", "disk"}
    model = load_with_device_map(fx["bert"], device_map, tmp_path / "offload")
    assert model.hf_device_map == device_map
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("kept", ['{"bos_token": "<s>", "eos_token": "</s>"}', "notes\n", '{"a": 0, "b": true}'])
def test_output_never_replaces_a_file_that_is_not_a_device_map_without_force(
        fx: dict[str, Path], tmp_path: Path, kept: str) -> None:
    """`--output` replaced whatever file had the name (a tokenizer's special_tokens_map.json, notes, another
    model's config) with the map, exit 0; now only an earlier device map, or any file with --force."""
    target = tmp_path / "special_tokens_map.json"
    target.write_text(kept)
    result = run_cli("plan-devices", fx["bert"], "--gpu", "1GB", "--output", target)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == (f"error: {target}: output exists and is not a device map (a JSON object of module "
                                     "names to devices): pass --force to replace it")
    assert target.read_text() == kept
    forced = run_cli("plan-devices", fx["bert"], "--gpu", "1GB", "--output", target, "--force")
    assert forced.exit_code == 0 and json.loads(target.read_text()) == {"": 0}
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_output_replaces_the_device_map_an_earlier_run_wrote(fx: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "device_map.json"
    assert run_cli("plan-devices", fx["bert"], "--gpu", "1GB", "--output", target).exit_code == 0
    assert json.loads(target.read_text()) == {"": 0}
    again = run_cli("plan-devices", fx["bert"], "--cpu", "50KB", "--disk", "--output", target)
    assert again.exit_code == 0, again.stderr
    assert set(json.loads(target.read_text()).values()) == {"cpu", "disk"}
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_manual_map_valid_and_invalid(fx: dict[str, Path], tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"transformer.wte": "cuda:0", "lm_head": 0, "transformer.wpe": 0,
                                "transformer.h": "cpu", "transformer.ln_f": "cpu"}))
    code, data = run_json("plan-devices", fx["gpt2"], "--gpu", "1MB", "--cpu", "1MB", "--map", good)
    assert code == 0 and data["manual_map"] is True and data["findings"] == []
    assert data["device_map"]["transformer.wte"] == 0 and data["verdict"] == "needs-cpu-offload"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"transformer.wte": 0, "lm_head": "cpu", "transformer.h": "cpu", "nope": "cpu"}))
    result = run_cli("plan-devices", fx["gpt2"], "--gpu", "1MB", "--cpu", "1MB", "--map", bad)
    assert result.exit_code == 1
    out = " ".join(result.stdout.split())
    assert "tied-split" in out and "unknown-module: 'nope'" in out and "not-covered" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpu", "24XB"], "cannot parse size '24XB'"),
        (["--gpu", "1GB", "--strategy", "greedy"], "--strategy 'greedy': choose one of"),
        ([], "no devices"),
        (["--local", "--gpu", "1GB"], "--local"),
        (["--gpu", "1GB", "--fail-on", "sometimes"], "--fail-on 'sometimes': choose one of info, warn, error, offload"),
        (["--gpu", "1GB", "--dtype", "fp4"], "unknown dtype 'fp4'"),
        (["--gpu", "1GB", "--dtype", "fp8"], "--dtype fp8 plans a checkpoint quantized with"),
        (["--gpu", "1GB", "--no-split", "Nope"], "'Nope' is no module class"),
        (["--gpu", "1GB", "--seq-len", "5"], "--kv-cache"),
    ],
)
def test_bad_input_exits_2_with_one_line(fx: dict[str, Path], args: list[str], message: str) -> None:
    result = run_cli("plan-devices", fx["bert"], *args)
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1 and result.stdout == ""


def test_bad_map_file_and_missing_source(fx: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = run_cli("plan-devices", fx["bert"], "--gpu", "1GB", "--map", broken)
    assert result.exit_code == 2 and "broken.json: not valid JSON" in result.stderr
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"bert": "tpu"}))
    result = run_cli("plan-devices", fx["bert"], "--gpu", "1GB", "--map", odd)
    assert result.exit_code == 2 and "'tpu' is not a device" in result.stderr
    result = run_cli("plan-devices", tmp_path / "missing", "--gpu", "1GB")
    assert result.exit_code == 2 and "missing" in result.stderr
    result = run_cli("plan-devices", fx["bert"], "--gpu", "1GB", "--output", fx["bert"] / "config.json")
    assert result.exit_code == 2 and "overwrite an input" in result.stderr


def test_local_on_this_machine_and_with_simulated_gpus(fx: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil
    import torch

    code, data = run_json("plan-devices", fx["bert"], "--local")
    assert code == 0
    if not torch.cuda.is_available():
        assert data["local"]["gpu_free_bytes"] == [] and data["dtype"] == "fp32"
        assert data["verdict"] == "fits-on-cpu" and set(data["device_map"].values()) == {"cpu"}
    available = psutil.virtual_memory().available
    assert abs(data["local"]["cpu_available_bytes"] - available) < 0.25 * available

    # What --local reads from CUDA, checked with the CUDA calls answered by a stand-in (no GPU here).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: ([30_000, 70_000][i], 80_000))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"Fake GPU {i}")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *device: (7, 5))
    code, data = run_json("plan-devices", fx["bert"], "--local")
    assert data["local"]["gpu_free_bytes"] == [30_000, 70_000] and data["local"]["gpu_names"][1] == "Fake GPU 1"
    assert data["dtype"] == "fp16"  # no bf16 on this GPU: the careful choice is fp16
    assert [d["capacity_bytes"] for d in data["devices"][:2]] == [30_000, 70_000]
    assert data["local"]["keeps_fp8"] is False


def test_local_plans_an_fp8_checkpoint_as_transformers_loads_it_there(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """--local on a GPU of compute capability 8.9+ plans a fine-grained FP8 checkpoint in FP8 (transformers keeps
    it so there); below, at the dtype a careful user picks (transformers dequantizes it)."""
    import torch

    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 1000, "hidden_size": 256,
              "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4, "dtype": "bfloat16",
              "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (80 * 10**9, 80 * 10**9))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "Fake H100")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    for capability, dtype in (((9, 0), "fp8"), ((8, 0), "bf16")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *device, c=capability: c)
        code, data = run_json("plan-devices", str(tmp_path), "--local")
        assert code == 0 and data["dtype"] == dtype and data["local"]["dtype"] == dtype
        assert data["local"]["keeps_fp8"] is (dtype == "fp8")


def test_kv_cache_training_and_tensor_source(fx: dict[str, Path]) -> None:
    code, data = run_json("plan-devices", LLAMA_70B, "--gpu", "80GB", "--gpu", "80GB", "--kv-cache", "--batch", "4",
                          "--seq-len", "4096", "--training", "--dtype", "bf16")
    assert code == 0 and data["verdict"] == "fits-on-gpus" and data["dtype"] == "bf16"
    assert data["kv_cache"]["total_bytes"] == 2 * 80 * 8 * 128 * 2 * 4 * 4096
    assert data["training"]["accelerate_estimate_bytes"] == 2 * data["training"]["fp32_model_bytes"]
    result = run_cli("plan-devices", LLAMA_70B, "--gpu", "80GB", "--gpu", "80GB", "--kv-cache", "--training")
    out = " ".join(result.stdout.split())
    assert "KV cache: 1.34 GB for batch 1 x 4096 tokens" in out and "accelerate estimate-memory reports" in out
    code, data = run_json("plan-devices", fx["files"] / "bert.safetensors", "--cpu", "1GB")
    assert code == 0 and data["built_from"] == "tensors" and data["device_map"] == {"": "cpu"}


def test_kv_cache_of_whisper_and_llava_from_their_own_configs(tmp_path: Path) -> None:
    """Whisper keeps its decoder length in max_target_positions, LLaVA its language model's sizes and length in
    text_config: --kv-cache was refused on both without --seq-len (and on Whisper even with it)."""
    import transformers

    whisper = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(
        vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=40, decoder_ffn_dim=40, num_mel_bins=16, pad_token_id=1,
        bos_token_id=2, eos_token_id=3, decoder_start_token_id=4, max_source_positions=32, max_target_positions=24))
    whisper.save_pretrained(tmp_path / "whisper")
    code, data = run_json("plan-devices", tmp_path / "whisper", "--gpu", "1GB", "--kv-cache")
    assert code == 0, data
    assert (data["kv_cache"]["seq_len"], data["kv_cache"]["num_layers"]) == (24, 1)
    assert data["kv_cache"]["total_bytes"] == 2 * 1 * 2 * 16 * 4 * 24
    llava = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "intermediate_size": 40, "image_size": 32, "patch_size": 8},
        text_config={"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "intermediate_size": 48, "vocab_size": 120,
                     "max_position_embeddings": 40}, image_token_index=99))
    llava.save_pretrained(tmp_path / "llava")
    code, data = run_json("plan-devices", tmp_path / "llava", "--gpu", "1GB", "--kv-cache")
    assert code == 0, data
    assert data["kv_cache"]["seq_len"] == 40 and data["kv_cache"]["total_bytes"] == 2 * 2 * 1 * 16 * 4 * 40


def test_kv_cache_of_gpt2_defaults_to_its_n_positions(fx: dict[str, Path]) -> None:
    """GPT-2's config.json says n_positions, not max_position_embeddings: --kv-cache was refused without --seq-len."""
    config = json.loads((fx["gpt2"] / "config.json").read_text())
    assert "max_position_embeddings" not in config
    code, data = run_json("plan-devices", fx["gpt2"], "--gpu", "1GB", "--kv-cache")
    assert code == 0, data
    assert data["kv_cache"]["seq_len"] == config["n_positions"]


def test_repo_id_from_cache_and_help(hub_env: Path) -> None:
    code, data = run_json("plan-devices", "weightdoctor-tests/tiny-bert", "--gpu", "1GB")
    assert code == 0 and data["model_class"] == "BertForSequenceClassification" and data["device_map"] == {"": 0}
    help_text = " ".join(run_cli("plan-devices", "--help").stdout.split())
    assert "decimal" in help_text and "binary" in help_text


def test_cli_help_does_not_import_torch() -> None:
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT

    code = ("import sys; from weightdoctor.cli import app; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                         env={"PYTHONPATH": str(REPO_ROOT), "PATH": ""}).stdout
    assert out.strip() == "False False"


def test_hostile_sources_exit_2(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    cases = {
        "unknown-type": {"model_type": "no-such-model"},
        "no-type": {"hidden_size": 4},
        "bad-values": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": "wide",
                       "num_hidden_layers": 2},
    }
    for name, config in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        result = run_cli("plan-devices", folder, "--gpu", "1GB")
        assert result.exit_code == 2, (name, result.stdout)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    clash = tmp_path / "clash.safetensors"
    save_file({"a.b": torch.zeros(2), "a.b.c": torch.zeros(2)}, str(clash))
    result = run_cli("plan-devices", clash, "--gpu", "1GB")
    assert result.exit_code == 2 and "'a.b'" in result.stderr
    reserved = tmp_path / "reserved.safetensors"
    save_file({"block.forward": torch.zeros(2)}, str(reserved))
    result = run_cli("plan-devices", reserved, "--gpu", "1GB")
    assert result.exit_code == 2 and "block.forward" in result.stderr


def test_model_class_and_sharded_source(fx: dict[str, Path]) -> None:
    code, data = run_json("plan-devices", fx["bert-sharded"], "--gpu", "1GB", "--model-class",
                          "BertForQuestionAnswering")
    assert code == 0 and data["model_class"] == "BertForQuestionAnswering"
    code, data = run_json("plan-devices", fx["gpt2"], "--gpu", "1GB")
    # tied lm_head counted once: the weights equal the checkpoint's (which stores the tied tensor once)
    from weightdoctor.checkpoint import open_checkpoint

    with open_checkpoint(fx["gpt2"]) as checkpoint:
        stored = checkpoint.total_bytes
    assert data["weights_bytes"] == stored


def test_real_process_exit_codes_and_streams(fx: dict[str, Path]) -> None:
    from tests.helpers import run_subprocess

    proc = run_subprocess("plan-devices", fx["bert"], "--cpu", "50KB", "--json", "--fail-on", "no-fit")
    assert proc.returncode == 1 and json.loads(proc.stdout)["verdict"] == "does-not-fit"
    assert proc.stderr == ""  # accelerate's own warnings are kept out of the way
    proc = run_subprocess("plan-devices", fx["bert"], "--gpu", "1GB", "--fail-on", "offload")
    assert proc.returncode == 0 and "fits on the GPUs" in proc.stdout
    proc = run_subprocess("plan-devices", fx["bert"], "--gpu", "lots")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: invalid value for '--gpu': cannot parse size 'lots'")


def test_a_config_asking_for_absurdly_many_layers_is_refused_at_once(tmp_path: Path) -> None:
    """A 200-byte config with 10^6 layers never finished building; now one line, for both commands."""
    config = {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 1_000_000, "num_attention_heads": 1,
              "intermediate_size": 64, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = run_cli("plan-devices", str(tmp_path / "config.json"), "--gpu", "1GB")
    assert result.exit_code == 2 and "asks for 1,000,000 layers (num_hidden_layers)" in result.stderr
    weights = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.ones(1)}, str(weights))
    result = run_cli("diff-keys", str(weights), "--model-class", "BertModel", "--config", str(tmp_path))
    assert result.exit_code == 2 and "asks for 1,000,000 layers" in result.stderr
    nested = {"model_type": "t5", "d_model": 8, "num_layers": 2, "num_decoder_layers": 5000, "vocab_size": 10}
    (tmp_path / "config.json").write_text(json.dumps(nested))
    result = run_cli("plan-devices", str(tmp_path / "config.json"), "--gpu", "1GB")
    assert result.exit_code == 2 and "asks for 5,000 layers (num_decoder_layers)" in result.stderr


def test_a_suggestion_the_planner_cannot_place_does_not_sink_the_plan(tmp_path: Path) -> None:
    """transformers' planner raises IndexError for the int8 re-plan of this tiny ALBERT on tiny budgets; the
    fp16 plan asked for (which from_pretrained computes) is still reported, without that suggestion."""
    from transformers import AlbertConfig, AlbertForMaskedLM

    torch.manual_seed(0)
    config = AlbertConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=64, embedding_size=16)
    AlbertForMaskedLM(config).save_pretrained(tmp_path)
    code, data = run_json("plan-devices", tmp_path, "--gpu", "20KB", "--cpu", "30KB", "--dtype", "fp16")
    assert code in (0, 1), data
    assert data["device_map"]


def test_a_config_asking_for_absurdly_many_experts_is_refused_at_once(tmp_path: Path) -> None:
    config = {"model_type": "switch_transformers", "d_model": 8, "d_ff": 8, "num_layers": 2,
              "num_decoder_layers": 2, "num_heads": 1, "d_kv": 8, "vocab_size": 16, "num_experts": 20_000}
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = run_cli("plan-devices", str(tmp_path / "config.json"), "--gpu", "1GB")
    assert result.exit_code == 2 and "asks for 20,000 experts (num_experts)" in result.stderr


def test_bitsandbytes_side_tensors_are_one_line_naming_the_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "bnb4.safetensors"
    save_file({"layer.weight": torch.zeros(8, 1, dtype=torch.uint8), "layer.weight.absmax": torch.ones(2),
               "layer.weight.quant_state.bitsandbytes__nf4": torch.zeros(4, dtype=torch.uint8)}, str(path))
    result = run_cli("plan-devices", str(path), "--gpu", "1GB", "--cpu", "2GB")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert str(path) in line and "bitsandbytes quantization side tensors" in line


@pytest.mark.parametrize(("quantization", "dtype"), [
    ({"quant_method": "gptq", "bits": 4, "group_size": 128}, "int4"),
    ({"quant_method": "bitsandbytes", "load_in_8bit": True}, "int8"),
])
def test_a_quantized_config_is_planned_at_its_bits(tmp_path: Path, quantization: dict, dtype: str) -> None:
    """A GPTQ / bitsandbytes checkpoint keeps its Linear weights in 4 / 8 bits on the GPU: planning it at the
    config's float dtype would claim four times the memory."""
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 1000, "hidden_size": 256,
              "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4, "dtype": "float16",
              "quantization_config": quantization}
    (tmp_path / "config.json").write_text(json.dumps(config))
    code, data = run_json("plan-devices", str(tmp_path), "--gpu", "100GB")
    assert code == 0 and data["dtype"] == dtype
    assert any(f"planned as {dtype}" in w for w in data["warnings"])
    code, full = run_json("plan-devices", str(tmp_path), "--gpu", "100GB", "--dtype", "fp16")
    assert full["dtype"] == "fp16" and full["weights_bytes"] > data["weights_bytes"]
    # Not bitsandbytes: no 10% headroom (GPTQ's quantizer keeps none), and a config alone has no quantized
    # tensors to size the layers from, which is said.
    gptq = quantization["quant_method"] == "gptq"
    assert any("keeps no headroom" in w for w in data["warnings"]) is gptq
    assert any("the source holds no quantized tensors to size them from" in w for w in data["warnings"]) is gptq


def test_an_fp8_config_says_which_gpus_the_plan_is_for(tmp_path: Path) -> None:
    """Fine-grained FP8 (DeepSeek-V3, Qwen3-FP8): transformers dequantizes it to bf16 below compute capability 8.9
    and keeps it in FP8 from there on. The default plan is the bf16 one and says so; --dtype fp8 plans the other
    (from a config alone, too), about half the Linear weights' size."""
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 1000, "hidden_size": 256,
              "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4, "dtype": "bfloat16",
              "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    code, data = run_json("plan-devices", str(tmp_path), "--gpu", "100GB")
    assert code == 0 and data["dtype"] == "bf16"
    assert any("(fp8): planned at bf16" in w and "--dtype fp8 plans that" in w for w in data["warnings"])
    code, fp8 = run_json("plan-devices", str(tmp_path), "--gpu", "100GB", "--dtype", "fp8")
    assert code == 0 and fp8["dtype"] == "fp8"
    assert any("compute capability 8.9 and above" in w for w in fp8["warnings"])
    # Per layer, q/k/v/o (256 x 256) and gate/up/down (256 x 512) go from 2 bytes an element to 1, and gain float32
    # scales of 128 x 128 blocks: 4 x 2 x 2 and 3 x 4 x 2 of them.
    saved_per_layer = (4 * 256 * 256 + 3 * 256 * 512) - 4 * (4 * 2 * 2 + 3 * 4 * 2)
    assert data["weights_bytes"] - fp8["weights_bytes"] == 2 * saved_per_layer


def test_a_peft_adapter_is_planned_with_a_warning_that_its_base_is_not(tmp_path: Path) -> None:
    """plan-devices on a LoRA folder plans a few KB of adapter weights: without a word, "fits" reads as the
    fine-tuned model fitting; the warning names the base to plan."""
    from safetensors.torch import save_file

    save_file({f"base_model.model.model.layers.{i}.self_attn.q_proj.lora_{ab}.weight": torch.zeros(4, 4)
               for i in range(2) for ab in "AB"}, str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": "org/base-7b", "r": 4, "target_modules": ["q_proj"]}))
    code, data = run_json("plan-devices", tmp_path, "--cpu", "1MB")
    assert code == 0 and data["weights_bytes"] == 4 * 64
    assert data["warnings"][0] == (
        "this is a PEFT adapter (LoRA): only its own weights are planned, not the base model "
        "PeftModel.from_pretrained loads it onto; plan the base (weightdoctor plan-devices org/base-7b --cpu 1MB) "
        "and add the adapter's size")


_SMALL_LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 1000, "hidden_size": 256,
                "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4, "dtype": "bfloat16"}


@pytest.mark.parametrize("quantization", [
    {"quant_method": "fp8", "weight_block_size": [128, 128], "dequantize": True},
    {"quant_method": "mxfp4"},
])
def test_no_bitsandbytes_suggestion_for_any_prequantized_config(tmp_path: Path, quantization: dict) -> None:
    """from_pretrained raises on a BitsAndBytesConfig beside a checkpoint's own quantization_config of another kind
    (merge_quantization_configs); the ladder skipped bitsandbytes only for GPTQ-like and kept-FP8 configs, and
    suggested `--dtype int8` for an FP8 checkpoint with dequantize: true or an MXFP4 one."""
    (tmp_path / "config.json").write_text(json.dumps({**_SMALL_LLAMA, "quantization_config": quantization}))
    code, data = run_json("plan-devices", str(tmp_path), "--gpu", "3MB", "--cpu", "1GB")
    assert data["dtype"] == "bf16" and data["verdict"] == "needs-cpu-offload"
    # only more GPUs, or larger ones, at bf16
    assert [(s["change"], s["dtype"]) for s in data["suggestions"]] == [("gpus", "bf16"), ("gpu-size", "bf16")]


def test_fp8_dequantize_true_is_planned_as_loaded_and_refuses_dtype_fp8(tmp_path: Path) -> None:
    """`dequantize: true` makes transformers dequantize an FP8 checkpoint on every GPU: the bf16 plan is exact (not
    'an upper bound'), and --dtype fp8 says why it does not apply (it said the checkpoint was not FP8 at all and
    offered bitsandbytes' int8 and int4)."""
    quantization = {"quant_method": "fp8", "weight_block_size": [128, 128], "dequantize": True}
    (tmp_path / "config.json").write_text(json.dumps({**_SMALL_LLAMA, "quantization_config": quantization}))
    code, data = run_json("plan-devices", str(tmp_path), "--gpu", "1GB")
    assert code == 0 and data["dtype"] == "bf16"
    assert any("dequantize: true" in w and "on every device" in w for w in data["warnings"])
    result = run_cli("plan-devices", str(tmp_path), "--gpu", "1GB", "--dtype", "fp8")
    assert result.exit_code == 2 and "sets dequantize: true" in result.stderr and "int8" not in result.stderr
    mxfp4 = {**_SMALL_LLAMA, "quantization_config": {"quant_method": "mxfp4"}}
    (tmp_path / "config.json").write_text(json.dumps(mxfp4))
    result = run_cli("plan-devices", str(tmp_path), "--gpu", "1GB", "--dtype", "fp8")
    assert result.exit_code == 2 and "plan it without --dtype" in result.stderr and "int8" not in result.stderr


def test_an_fp8_checkpoint_planned_at_fp32_is_offered_bf16(tmp_path: Path) -> None:
    """The bitsandbytes rungs are left out for a pre-quantized checkpoint, not the float ones: fp32 -> bf16 loads
    an FP8 checkpoint as well (the whole ladder was dropped)."""
    quantization = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    (tmp_path / "config.json").write_text(json.dumps({**_SMALL_LLAMA, "quantization_config": quantization}))
    code, data = run_json("plan-devices", str(tmp_path), "--gpu", "5MB", "--cpu", "1GB", "--dtype", "fp32")
    assert data["verdict"] == "needs-cpu-offload"
    assert [s["dtype"] for s in data["suggestions"] if s["change"] == "dtype"] == ["fp8", "bf16"]


def test_a_refused_fp8_quantization_config_does_not_fail_the_default_plan(tmp_path: Path) -> None:
    """A weight_block_size transformers' quantizer refuses: the bf16 plan failed with the quantizer's error, but only
    where it did not fit (the --dtype fp8 suggestion built the FP8 model); it no longer depends on --gpu."""
    quantization = {"quant_method": "fp8", "weight_block_size": [-1, 128]}
    (tmp_path / "config.json").write_text(json.dumps({**_SMALL_LLAMA, "quantization_config": quantization}))
    for gpu in ("1GB", "1MB"):
        code, data = run_json("plan-devices", str(tmp_path), "--gpu", gpu, "--cpu", "1GB")
        assert code == 0 and data["dtype"] == "bf16" and all(s["dtype"] != "fp8" for s in data["suggestions"])
    result = run_cli("plan-devices", str(tmp_path), "--gpu", "1GB", "--dtype", "fp8")
    assert result.exit_code == 2 and "weight_block_size must be a tuple of two positive integers" in result.stderr


@pytest.mark.parametrize("quantization", [{"quant_method": "fp8", "weight_block_size": [128, 128]},
                                          {"quant_method": "gptq", "bits": 4}])
def test_bitsandbytes_asked_on_a_prequantized_checkpoint_is_warned_about(tmp_path: Path, quantization: dict) -> None:
    """--dtype int8 on an FP8 or GPTQ checkpoint planned bitsandbytes' int8 without a word, though from_pretrained
    raises on a BitsAndBytesConfig beside the checkpoint's own quantization_config."""
    (tmp_path / "config.json").write_text(json.dumps({**_SMALL_LLAMA, "quantization_config": quantization}))
    code, data = run_json("plan-devices", str(tmp_path), "--gpu", "1GB", "--dtype", "int8")
    assert code == 0 and data["dtype"] == "int8"
    assert any(f"already quantized ({quantization['quant_method']})" in w and "refuses" in w
               for w in data["warnings"])


def test_kv_cache_of_a_state_space_model_is_none_and_says_why(tmp_path: Path) -> None:
    """Mamba keeps a fixed-size recurrent state, no keys and values: --kv-cache was refused ("config has no
    num_hidden_layers / num_attention_heads / hidden_size"), exit 2, though its config has all it needs."""
    import transformers

    transformers.MambaConfig(vocab_size=64, hidden_size=32, state_size=8, num_hidden_layers=3,
                             architectures=["MambaForCausalLM"]).save_pretrained(tmp_path / "mamba")
    code, data = run_json("plan-devices", tmp_path / "mamba", "--gpu", "1GB", "--kv-cache", "--seq-len", "4096")
    assert code == 0, data
    kv = data["kv_cache"]
    assert (kv["total_bytes"], kv["num_layers"], kv["fits_on_gpus"]) == (0, 0, True)
    assert kv["note"].startswith("no KV cache: all 3 layers keep a recurrent state")
    result = run_cli("plan-devices", tmp_path / "mamba", "--gpu", "1GB", "--kv-cache", "--seq-len", "4096")
    out = " ".join(result.stdout.split())
    assert result.exit_code == 0 and "KV cache: none for batch 1 x 4096 tokens (no KV cache: all 3 layers" in out


def test_kv_cache_sizes_the_recurrent_states_of_mamba_and_hybrids(tmp_path: Path) -> None:
    """The conv and SSM states a Mamba or hybrid model keeps per sequence were named "(not counted)"; they are sized
    as `state_bytes` (apart from the keys and values), part of the fit, and shown. Mamba here: 3 layers x 2
    sequences x 64 channels x (a conv window of 4 + an SSM state of 8) x 4 bytes = 18,432 at fp32; at bf16 the conv
    window follows the dtype and transformers keeps the SSM state in float32: 3,072 + 12,288 = 15,360."""
    import transformers

    transformers.MambaConfig(vocab_size=64, hidden_size=32, state_size=8, num_hidden_layers=3, expand=2,
                             conv_kernel=4, architectures=["MambaForCausalLM"]).save_pretrained(tmp_path / "mamba")
    code, data = run_json("plan-devices", tmp_path / "mamba", "--gpu", "1GB", "--kv-cache", "--batch", "2",
                          "--seq-len", "5", "--dtype", "fp32")
    assert code == 0 and data["kv_cache"]["state_bytes"] == 18432 and data["kv_cache"]["total_bytes"] == 0
    assert "not counted" not in data["kv_cache"]["note"]
    code, data = run_json("plan-devices", tmp_path / "mamba", "--gpu", "1GB", "--kv-cache", "--batch", "2",
                          "--seq-len", "5", "--dtype", "bf16")
    assert data["kv_cache"]["state_bytes"] == 15360
    # at fp64 every state is float64 (transformers' own run in float64 holds 36,864 bytes)
    code, data = run_json("plan-devices", tmp_path / "mamba", "--gpu", "1GB", "--kv-cache", "--batch", "2",
                          "--seq-len", "5", "--dtype", "fp64")
    assert data["kv_cache"]["state_bytes"] == 36864
    # the fit counts the states: a batch whose states alone pass what the GPU has left does not fit
    code, data = run_json("plan-devices", tmp_path / "mamba", "--gpu", "2MB", "--kv-cache", "--batch", "256",
                          "--seq-len", "5", "--dtype", "fp32")
    kv = data["kv_cache"]
    assert kv["state_bytes"] == 128 * 18432 and kv["state_bytes"] > kv["gpu_free_bytes"] and not kv["fits_on_gpus"]
    result = run_cli("plan-devices", tmp_path / "mamba", "--gpu", "1GB", "--kv-cache", "--batch", "2", "--seq-len",
                     "5", "--dtype", "fp32")
    out = " ".join(result.stdout.split())
    assert "KV cache: none for batch 2 x 5 tokens" in out and "recurrent state 18.43 KB for the batch" in out
    assert "fits in the" in out


def test_a_config_of_an_unknown_model_type_is_not_said_to_have_none(tmp_path: Path) -> None:
    """Planned from the tensors because transformers cannot build its model_type: the no-split warning said the
    config had "no model_type", which it has."""
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "totally_new_arch", "hidden_size": 64}))
    save_file({f"model.layers.{i}.w": torch.ones(64, 64) for i in range(3)}, tmp_path / "model.safetensors")
    result = run_cli("plan-devices", str(tmp_path), "--gpu", "1GB")
    assert result.exit_code == 0, result.stderr
    err = " ".join(result.stderr.split())
    assert "does not know model_type 'totally_new_arch'" in err and "no model_type" not in err
    assert "config.json (model_type 'totally_new_arch', which the model could not be built from) does not say" in err


def test_a_map_that_is_a_folder_or_missing_is_named_as_the_map(tmp_path: Path) -> None:
    """`--map FOLDER` printed "is a directory: [Errno 21] Is a directory: ..." without naming the option."""
    import transformers

    transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                             num_attention_heads=4, architectures=["LlamaForCausalLM"]).save_pretrained(tmp_path / "m")
    for given, said in ((tmp_path, "--map names a folder, not a device map JSON file"),
                        (tmp_path / "nope.json", "--map: no such file")):
        result = run_cli("plan-devices", str(tmp_path / "m"), "--gpu", "1GB", "--map", str(given))
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and lines == [f"error: {given}: {said}"], result.stderr
