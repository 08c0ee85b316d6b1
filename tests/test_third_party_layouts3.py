"""Still more checkpoints as other libraries write them: BasicSR's params / params_ema, IP-Adapter's two state
dicts, mlx-lm's quantized weights, folders of TensorFlow / Flax / ONNX weights only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, run_json


def _sr_state(shift: float = 0.0) -> dict[str, torch.Tensor]:
    """RRDBNet's names, as BasicSR's archs save them (a few of them)."""
    return {"conv_first.weight": torch.full((8, 3, 3, 3), 0.1 + shift), "conv_first.bias": torch.zeros(8),
            "body.0.rdb1.conv1.weight": torch.full((8, 8, 3, 3), 0.2 + shift),
            "conv_last.weight": torch.ones(3, 8, 3, 3)}


def test_a_basicsr_checkpoint_reads_the_ema_weights_its_inference_loads(tmp_path: Path) -> None:
    """BasicSR (Real-ESRGAN, GFPGAN) saves {"params": ..., "params_ema": ...}; RealESRGANer loads params_ema when it
    is there. `params` was read, so convert wrote the training weights, not the ones the released model runs."""
    from safetensors.torch import load_file

    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params": _sr_state(), "params_ema": _sr_state(0.5)}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "params_ema", data
    assert data["other_entries"] == ["params (a state dict of 4 tensors: pick it with --key)"]
    assert any("params_ema is read" in w and "--key params" in w for w in data["warnings"]), data["warnings"]

    result = run_cli("convert", str(path), "-o", str(tmp_path / "x4.safetensors"))
    assert result.exit_code == 0, result.stderr
    assert "only the state dict at 'params_ema' is written" in " ".join(result.stderr.split())
    back = load_file(tmp_path / "x4.safetensors")
    assert torch.equal(back["conv_first.weight"], _sr_state(0.5)["conv_first.weight"])

    code, data = run_json("inspect", str(path), "--key", "params")
    assert code == 0 and data["nested_key"] == "params" and not data["warnings"], data


def test_an_ip_adapter_bin_is_read_whole_under_the_names_its_safetensors_has(tmp_path: Path) -> None:
    """IP-Adapter's .bin is {"image_proj": sd, "ip_adapter": sd}, both loaded by diffusers' load_ip_adapter. Only
    image_proj was read (as "a training checkpoint"): convert wrote half an adapter, plan-devices planned half."""
    from safetensors.torch import load_file

    image_proj = {"proj.weight": torch.randn(64, 16), "proj.bias": torch.zeros(64), "norm.weight": torch.ones(16),
                  "norm.bias": torch.zeros(16)}
    ip_adapter = {"1.to_k_ip.weight": torch.randn(32, 16), "1.to_v_ip.weight": torch.randn(32, 16),
                  "3.to_k_ip.weight": torch.randn(32, 16), "3.to_v_ip.weight": torch.randn(32, 16)}
    path = tmp_path / "ip-adapter_sd15.bin"
    torch.save({"image_proj": image_proj, "ip_adapter": ip_adapter}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] is None and data["num_tensors"] == 8, data
    names = {t["name"] for t in data["tensors"]}
    assert {"image_proj.proj.weight", "ip_adapter.1.to_k_ip.weight"} <= names, names
    assert any("an IP-Adapter file" in w and "read together" in w for w in data["warnings"]), data["warnings"]

    result = run_cli("convert", str(path), "-o", str(tmp_path / "ip-adapter_sd15.safetensors"))
    assert result.exit_code == 0 and "only the state dict" not in result.stderr, result.stderr
    back = load_file(tmp_path / "ip-adapter_sd15.safetensors")
    expected = {**{f"image_proj.{k}": v for k, v in image_proj.items()},
                **{f"ip_adapter.{k}": v for k, v in ip_adapter.items()}}
    assert back.keys() == expected.keys() and all(torch.equal(back[k], v) for k, v in expected.items())

    code, data = run_json("inspect", str(path), "--key", "ip_adapter")
    assert code == 0 and data["nested_key"] == "ip_adapter" and data["num_tensors"] == 4, data


def _mlx_llama(folder: Path, both_keys: bool) -> None:
    """A one-layer Llama as mlx_lm.convert(quantize=True) writes it: each Linear and the embedding as a uint32
    `weight` (8 values of 4 bits each) with float16 `scales` and `biases` per group of 64; config.json names the
    bits under `quantization` (newer mlx-lm copies them to `quantization_config`, without a quant_method)."""
    from safetensors.torch import save_file

    hidden, inner, vocab = 64, 128, 100
    tensors: dict[str, torch.Tensor] = {"model.norm.weight": torch.ones(hidden, dtype=torch.float16),
                                        "model.layers.0.input_layernorm.weight": torch.ones(hidden).half(),
                                        "model.layers.0.post_attention_layernorm.weight": torch.ones(hidden).half()}
    layers = {"model.embed_tokens": (vocab, hidden), "lm_head": (vocab, hidden),
              **{f"model.layers.0.self_attn.{p}": (hidden, hidden) for p in ("q_proj", "k_proj", "v_proj", "o_proj")},
              "model.layers.0.mlp.gate_proj": (inner, hidden), "model.layers.0.mlp.up_proj": (inner, hidden),
              "model.layers.0.mlp.down_proj": (hidden, inner)}
    for name, (rows, cols) in layers.items():
        tensors[f"{name}.weight"] = torch.zeros(rows, cols // 8, dtype=torch.uint32)
        tensors[f"{name}.scales"] = torch.full((rows, cols // 64), 0.01, dtype=torch.float16)
        tensors[f"{name}.biases"] = torch.zeros(rows, cols // 64, dtype=torch.float16)
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "mlx"})
    quantization = {"group_size": 64, "bits": 4}
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": inner, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 4,
              "vocab_size": vocab, "torch_dtype": "float16", "tie_word_embeddings": False,
              "quantization": quantization, **({"quantization_config": quantization} if both_keys else {})}
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("both_keys", [True, False])
def test_an_mlx_quantized_checkpoint_is_not_planned_or_diffed_as_transformers_loads(
        tmp_path: Path, both_keys: bool) -> None:
    """transformers has no quantizer for mlx-lm's packing. plan-devices planned it as int4 "by the unknown
    quantizer" (or, with `quantization` alone, as the fp16 model: three times its bytes); diff-keys --model-class
    called each packed weight "packed by the unknown quantizer" and its biases "unknown: will not load"."""
    folder = tmp_path / "Llama-4bit-mlx"
    _mlx_llama(folder, both_keys)
    for args in (("plan-devices", str(folder), "--gpu", "1GB"),
                 ("diff-keys", str(folder), "--model-class", "LlamaForCausalLM")):
        result = run_cli(*args)
        line = " ".join(result.stderr.split())
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "an mlx-lm 4-bit, group size 64 checkpoint" in line and "transformers has no quantizer" in line, line
        assert "mlx_lm.load" in line and "unknown" not in line, line

    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB", "--dtype", "bf16")
    assert code == 0 and data["dtype"] == "bf16", data
    assert any("planned as the unquantized model at bf16" in w for w in data["warnings"]), data["warnings"]

    result = run_cli("check-dtype", str(folder))
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "an mlx-lm 4-bit, group size 64 checkpoint: stored float16 beside config float16 is by design" in text
    assert "quant_method=unknown" not in text

    code, data = run_json("diff-keys", str(folder), str(folder))
    assert code == 0, data


@pytest.mark.parametrize("weights", ["tf_model.h5", "flax_model.msgpack", "onnx/model.onnx", "bert-Q8_0.gguf"])
def test_a_folder_of_tensorflow_flax_or_onnx_weights_is_not_planned_as_loadable(tmp_path: Path, weights: str) -> None:
    """A repo cloned with its TensorFlow, Flax or ONNX (Optimum's onnx/) weights only: plan-devices planned the
    config's model without a word, though from_pretrained finds no PyTorch weights there and raises; inspect
    did not name the onnx/ export at all."""
    folder = tmp_path / "bert"
    (folder / weights).parent.mkdir(parents=True, exist_ok=True)
    (folder / weights).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(56) if weights.endswith(".h5") else b"\x81\xa6params")
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 37, "vocab_size": 99}))
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0, data
    warning = next((w for w in data["warnings"] if weights in w), "")
    assert "(not PyTorch): from_pretrained(folder) finds no model.safetensors or pytorch_model.bin" in warning, data
    assert "read from config.json alone" in warning
    # transformers reads a GGUF file it is given by name (gguf_file=), dequantized.
    assert ("gguf_file='bert-Q8_0.gguf'" in warning) is weights.endswith(".gguf"), warning

    result = run_cli("inspect", str(folder))
    said = "GGUF (llama.cpp), read when named" if weights.endswith(".gguf") else "which weightdoctor does not read"
    assert result.exit_code == 2 and f"it holds {weights}, {said}" in result.stderr

    (folder / weights).unlink()
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and not any("not PyTorch" in w for w in data["warnings"]), data


def test_a_mamba_ssm_checkpoint_names_its_config_as_mamba_ssms(tmp_path: Path) -> None:
    """state-spaces/mamba-* as mamba_ssm saves it: pytorch_model.bin beside its own config.json (d_model, n_layer,
    ssm_cfg; no model_type). diff-keys --model-class said only "config.json has no model_type", and check-dtype that
    "dtype='auto' goes by the weights", a transformers rule mamba_ssm's loader does not follow."""
    folder = tmp_path / "mamba-130m"
    folder.mkdir()
    d, inner = 16, 32
    torch.save({"backbone.embedding.weight": torch.randn(100, d),
                "backbone.layers.0.mixer.A_log": torch.randn(inner, 4),
                "backbone.layers.0.mixer.D": torch.ones(inner),
                "backbone.layers.0.mixer.in_proj.weight": torch.randn(2 * inner, d),
                "backbone.layers.0.mixer.out_proj.weight": torch.randn(d, inner),
                "backbone.layers.0.norm.weight": torch.ones(d), "backbone.norm_f.weight": torch.ones(d),
                "lm_head.weight": torch.randn(100, d)}, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({
        "d_model": d, "n_layer": 1, "vocab_size": 100, "ssm_cfg": {}, "rms_norm": True, "residual_in_fp32": True,
        "fused_add_norm": True, "pad_vocab_size_multiple": 8}))
    result = run_cli("diff-keys", str(folder), "--model-class", "MambaForCausalLM")
    line = " ".join(result.stderr.split())
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "config.json is mamba_ssm's own config (d_model, n_layer, ssm_cfg)" in line, line
    assert "convert_mamba_ssm_checkpoint_to_pytorch" in line and "model_type 'mamba'" in line, line

    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and any("mamba_ssm's own config, not a transformers one" in w for w in data["warnings"]), data

    result = run_cli("check-dtype", str(folder))
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "mamba_ssm's own config (no dtype field): MambaLMHeadModel.from_pretrained builds the model in float32" \
        in text, text
    assert "dtype='auto' goes by the weights" not in text


def test_a_torchscript_clip_archive_is_said_to_be_code_not_called_dangerous(tmp_path: Path) -> None:
    """OpenAI CLIP's ViT-B-32.pt is a torch.jit.save archive. The refusal led with "dangerous:" and every scripted
    class and list builder its pickles name (torch.jit._pickle.build_intlist, "dangerous"), the one thing that
    matters (it is compiled code torch.jit.load runs; save its state_dict to read it) last."""

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln_1 = torch.nn.LayerNorm(8)
            self.mlp = torch.nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mlp(self.ln_1(x))

    path = tmp_path / "ViT-B-32.pt"
    torch.jit.save(torch.jit.script(Block()), str(path))
    for command in ("inspect", "convert"):
        result = run_cli(command, str(path), *(("-o", str(tmp_path / "out.safetensors")) if command == "convert"
                                              else ()))
        line = " ".join(result.stderr.split())
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "this is a TorchScript archive, torch.jit.save" in line and "nothing was unpickled" in line, line
        assert "compiled TorchScript code" in line and "torch.jit.load runs" in line, line
        assert f"torch.jit.load({str(path)!r}).state_dict()" in line and "dangerous" not in line, line


def test_a_textual_inversion_embedding_is_not_called_a_training_checkpoint(tmp_path: Path) -> None:
    """An A1111 / SD-scripts embedding keeps its vectors under string_to_param["*"] beside name and step: inspect
    said "state dict at string_to_param (a training checkpoint)"."""
    path = tmp_path / "mystyle.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.randn(4, 768)}, "name": "mystyle",
                "step": 3000, "sd_checkpoint": "a9263745", "sd_checkpoint_name": "v1-5-pruned-emaonly"}, path)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "state dict at string_to_param (a textual-inversion embedding" in text, text
    assert "a training checkpoint" not in text

    torch.save({"epoch": 3, "model": {"w": torch.zeros(2)}}, tmp_path / "last.pt")
    text = " ".join(run_cli("inspect", str(tmp_path / "last.pt")).stdout.replace("│", " ").split())
    assert "state dict at model (a training checkpoint)" in text, text


def test_a_speechbrain_checkpoint_folder_names_its_modules_and_its_text_files(tmp_path: Path) -> None:
    """SpeechBrain's Checkpointer writes CKPT+<time>/ with one <name>.ckpt per recoverable: torch.save files for
    the modules, YAML for the Brain, a number for the epoch counter. The folder was "several weight files and no
    index (brain.ckpt, counter.ckpt, model.ckpt, normalizer.ckpt)": text files called weights, SpeechBrain unnamed."""
    folder = tmp_path / "CKPT+2024-05-01+10-00-00+00"
    folder.mkdir()
    torch.save(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)).state_dict(), folder / "model.ckpt")
    torch.save({"count": 10, "glob_mean": torch.zeros(80), "glob_std": torch.ones(80)}, folder / "normalizer.ckpt")
    torch.save({"state": {}, "param_groups": [{"lr": 1.0, "params": [0, 1, 2, 3]}]}, folder / "optimizer.ckpt")
    (folder / "brain.ckpt").write_text("avg_train_loss: 0.5\nstep: 100\noptimizer_step: 100\n")
    (folder / "counter.ckpt").write_text("5")
    (folder / "CKPT.yaml").write_text("# yamllint disable\nWER: 12.3\nend-of-epoch: true\nunixtime: 1714557600.0\n")
    for command in ("inspect", "plan-devices"):
        result = run_cli(command, str(folder), *(("--gpu", "1GB") if command == "plan-devices" else ()))
        line = " ".join(result.stderr.split())
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "a SpeechBrain checkpoint folder (CKPT.yaml)" in line, line
        assert "(model.ckpt, normalizer.ckpt)" in line and "brain.ckpt, counter.ckpt are text" in line, line
        assert f"e.g. {folder.name}/model.ckpt" in line and "several weight files" not in line, line
    code, data = run_json("inspect", str(folder / "model.ckpt"))
    assert code == 0 and data["num_tensors"] == 4, data


def test_the_smallest_cast_does_not_call_an_equally_exact_one_worse(tmp_path: Path) -> None:
    """An FP8 checkpoint (DeepSeek-V3's layout: float8_e4m3fn weights, float32 weight_scale_inv) casts exactly to
    both fp16 and bf16, yet the recommendation said "fp16 (same size as bf16, whose max relative error is larger)"."""
    from safetensors.torch import save_file

    folder = tmp_path / "fp8"
    folder.mkdir()
    save_file({"model.layers.0.mlp.down_proj.weight": torch.randn(64, 128).to(torch.float8_e4m3fn),
               "model.layers.0.mlp.down_proj.weight_scale_inv": torch.rand(1, 1),
               "model.norm.weight": torch.ones(64, dtype=torch.bfloat16)}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "torch_dtype": "bfloat16",
        "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                "weight_block_size": [128, 128]}}))
    code, data = run_json("check-dtype", str(folder))
    assert code == 0 and data["targets"]["fp16"]["verdict"] == data["targets"]["bf16"]["verdict"] == "safe", data
    [line] = [x for x in data["recommendation"]["lines"] if x.startswith("smallest plain cast")]
    assert line.endswith("fp16; bf16, the same size, does as well here"), line

    save_file({"w": torch.randn(64, 64, dtype=torch.float16)}, tmp_path / "half.safetensors")
    code, data = run_json("check-dtype", str(tmp_path / "half.safetensors"))
    [line] = [x for x in data["recommendation"]["lines"] if x.startswith("smallest plain cast")]
    assert line.endswith("fp16; bf16, the same size, has a larger max relative error"), line


def test_an_ip_adapter_written_flat_to_a_bin_is_warned_about(tmp_path: Path) -> None:
    """diffusers' load_ip_adapter splits a .safetensors IP-Adapter by its image_proj. / ip_adapter. prefixes but
    indexes a .bin's state_dict["image_proj"]: convert --to bin wrote the flat names without a word."""
    from safetensors.torch import save_file

    save_file({"image_proj.proj.weight": torch.randn(64, 16), "image_proj.norm.weight": torch.ones(16),
               "ip_adapter.1.to_k_ip.weight": torch.randn(32, 16), "ip_adapter.1.to_v_ip.weight": torch.randn(32, 16)},
              tmp_path / "ip-adapter_sd15.safetensors")
    result = run_cli("convert", str(tmp_path / "ip-adapter_sd15.safetensors"), "-o", str(tmp_path / "ip.bin"))
    line = " ".join(result.stderr.split())
    assert result.exit_code == 0, result.stderr
    assert "an IP-Adapter written flat (image_proj.*, ip_adapter.*) to a .bin" in line, line
    assert "keep the .safetensors" in line, line
    result = run_cli("convert", str(tmp_path / "ip.bin"), "-o", str(tmp_path / "back.safetensors"))
    assert result.exit_code == 0 and "IP-Adapter written flat" not in result.stderr, result.stderr


def test_model_class_on_a_mistral_native_folder_says_what_its_params_json_is(tmp_path: Path) -> None:
    """Mistral's own release: consolidated.safetensors beside params.json and tekken.json, no config.json.
    diff-keys --model-class said only "pass --config", as if a config.json beside those names would do."""
    from safetensors.torch import save_file

    folder = tmp_path / "Mistral-Nemo-Instruct-2407"
    folder.mkdir()
    save_file({"tok_embeddings.weight": torch.zeros(100, 32, dtype=torch.bfloat16),
               "layers.0.attention.wq.weight": torch.zeros(32, 32, dtype=torch.bfloat16),
               "norm.weight": torch.ones(32, dtype=torch.bfloat16),
               "output.weight": torch.zeros(100, 32, dtype=torch.bfloat16)}, folder / "consolidated.safetensors")
    (folder / "params.json").write_text(json.dumps({"dim": 32, "n_layers": 1, "head_dim": 8, "hidden_dim": 64,
                                                    "n_heads": 4, "n_kv_heads": 2, "norm_eps": 1e-5,
                                                    "vocab_size": 100, "rope_theta": 1e6}))
    (folder / "tekken.json").write_text("{}")
    result = run_cli("diff-keys", str(folder), "--model-class", "MistralForCausalLM")
    line = " ".join(result.stderr.split())
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "pass --config; its params.json is Meta's / Mistral's own format" in line, line
    assert "convert_mistral_weights_to_hf.py" in line, line

    (folder / "params.json").unlink()
    result = run_cli("diff-keys", str(folder), "--model-class", "MistralForCausalLM")
    assert result.exit_code == 2 and "params.json" not in result.stderr, result.stderr


def test_shards_of_an_ip_adapter_say_its_loaders_read_one_file(tmp_path: Path) -> None:
    """IP-Adapter loaders (diffusers' load_ip_adapter, ComfyUI) take one weight file: shard split it into
    model-*.safetensors with nothing said, as it says for LoRAs and single-file Stable Diffusion checkpoints."""
    path = tmp_path / "ip-adapter-plus_sd15.bin"
    torch.save({"image_proj": {"latents": torch.randn(1, 16, 64), "proj_in.weight": torch.randn(64, 64)},
                "ip_adapter": {"1.to_k_ip.weight": torch.randn(64, 64), "1.to_v_ip.weight": torch.randn(64, 64)}},
               path)
    result = run_cli("shard", str(path), "--max", "20KB", "-o", str(tmp_path / "shards"))
    line = " ".join(result.stderr.split())
    assert result.exit_code == 0, result.stderr
    assert "an IP-Adapter is loaded from one file (diffusers' load_ip_adapter, ComfyUI's IPAdapter nodes)" in line
    assert "from_single_file" not in line, line
    code, data = run_json("shard", str(path), "--single", "-o", str(tmp_path / "one"))
    assert code == 0 and not any("IP-Adapter is loaded" in w for w in data["plan"]["warnings"]), data


def test_casting_an_awq_checkpoint_to_bf16_says_transformers_loads_it_in_fp16(tmp_path: Path) -> None:
    """AutoAWQ's checkpoints (qweight, qzeros, fp16 scales; quant_method "awq"): transformers' AwqQuantizer casts a
    bf16 dtype back to float16 when a GPU is present, so convert --dtype bf16 wrote a config nobody loads as such."""
    from safetensors.torch import save_file

    folder = tmp_path / "llama-awq"
    folder.mkdir()
    layer = "model.layers.0.self_attn.q_proj"
    save_file({f"{layer}.qweight": torch.zeros(64, 8, dtype=torch.int32),
               f"{layer}.qzeros": torch.zeros(2, 8, dtype=torch.int32),
               f"{layer}.scales": torch.ones(2, 64, dtype=torch.float16),
               "model.norm.weight": torch.ones(64, dtype=torch.float16)}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "torch_dtype": "float16",
        "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": True,
                                "version": "gemm"}}))
    code, data = run_json("convert", str(folder), "-o", str(tmp_path / "bf16"), "--dtype", "bf16")
    assert code == 0, data
    assert any("on an AWQ checkpoint: its CUDA kernels take no bf16" in w and "float16 anyway" in w
               for w in data["plan"]["warnings"]), data["plan"]["warnings"]
    code, data = run_json("convert", str(folder), "-o", str(tmp_path / "fp32"), "--dtype", "fp32")
    assert code == 0 and not any("AWQ" in w for w in data["plan"]["warnings"]), data["plan"]["warnings"]


def test_the_module_tree_of_a_gptq_checkpoint_counts_its_unpacked_weights(tmp_path: Path) -> None:
    """AutoGPTQ / GPTQModel store each Linear as qweight (int32, 8 values each), qzeros, fp16 scales and g_idx.
    inspect's summary said "54.0K parameters once unpacked" while its module tree below counted the stored int32s
    plus scales and g_idx as parameters: q_proj 720 where the layer holds 64 × 64 = 4096 weights."""
    from safetensors.torch import save_file

    folder = tmp_path / "llama-gptq"
    folder.mkdir()
    hidden, group = 64, 32
    tensors = {"model.norm.weight": torch.ones(hidden, dtype=torch.float16)}
    for proj in ("q_proj", "k_proj"):
        base = f"model.layers.0.self_attn.{proj}"
        tensors[f"{base}.qweight"] = torch.zeros(hidden // 8, hidden, dtype=torch.int32)
        tensors[f"{base}.qzeros"] = torch.zeros(hidden // group, hidden // 8, dtype=torch.int32)
        tensors[f"{base}.scales"] = torch.ones(hidden // group, hidden, dtype=torch.float16)
        tensors[f"{base}.g_idx"] = torch.arange(hidden, dtype=torch.int32) // group
    save_file(tensors, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "torch_dtype": "float16",
        "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": False}}))
    code, data = run_json("inspect", str(folder))
    assert code == 0 and data["quantized"]["parameters"] == 2 * hidden * hidden + hidden, data["quantized"]

    def find(nodes: list[dict], name: str) -> dict:
        for node in nodes:
            if node["name"] == name:
                return node
            found = find(node.get("children") or [], name)
            if found:
                return found
        return {}

    assert find(data["module_tree"], "q_proj")["num_params"] == hidden * hidden, data["module_tree"]
    result = run_cli("inspect", str(tmp_path / "llama-gptq"))
    assert "modules 8.3K parameters once unpacked" in result.stdout, result.stdout


def test_check_dtype_does_not_call_a_gptq_checkpoints_fp16_scales_not_floating(tmp_path: Path) -> None:
    """check-dtype leaves a quantizer's scales as stored, rightly, but counted them among the tensors "left as they
    are (not floating)": GPTQ's scales are float16."""
    from safetensors.torch import save_file

    folder = tmp_path / "gptq"
    folder.mkdir()
    base = "model.layers.0.self_attn.q_proj"
    save_file({f"{base}.qweight": torch.zeros(8, 64, dtype=torch.int32),
               f"{base}.qzeros": torch.zeros(2, 8, dtype=torch.int32),
               f"{base}.scales": torch.ones(2, 64, dtype=torch.float16),
               f"{base}.g_idx": torch.zeros(64, dtype=torch.int32),
               "model.norm.weight": torch.ones(64, dtype=torch.float16)}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "torch_dtype": "float16",
        "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 32}}))
    result = run_cli("check-dtype", str(folder))
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "1 floating tensor; 4 left as they are (3 not floating, 1 quantizer scale or state)" in text, text


def test_a_torchao_quantized_bin_says_what_its_unknown_classes_are(tmp_path: Path) -> None:
    """transformers' TorchAoConfig models saved as pytorch_model.bin pickle each quantized weight as its torchao
    tensor subclass. The refusal named "torchao.dtypes.affine_quantized_tensor.AffineQuantizedTensor (unknown)" and
    nothing else: neither what it is nor what loads it. Written in a child interpreter with a stand-in torchao
    (not installed here) whose class has the real one's module and name."""
    import subprocess
    import sys

    package = tmp_path / "fake" / "torchao" / "dtypes"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "affine_quantized_tensor.py").write_text(
        "import torch\n\n\nclass AffineQuantizedTensor(torch.Tensor):\n    pass\n")
    folder = tmp_path / "llama-int4wo"
    folder.mkdir()
    script = ("import torch\nfrom torchao.dtypes.affine_quantized_tensor import AffineQuantizedTensor\n"
              "weight = torch.randn(4, 4).as_subclass(AffineQuantizedTensor)\n"
              f"torch.save({{'model.layers.0.self_attn.q_proj.weight': weight, 'model.norm.weight': torch.ones(4)}}, "
              f"{str(folder / 'pytorch_model.bin')!r})\n")
    subprocess.run([sys.executable, "-c", script], check=True, env={"PYTHONPATH": str(tmp_path / "fake")})
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": {
        "quant_method": "torchao", "quant_type": {"default": {"_type": "Int4WeightOnlyConfig", "_version": 2,
                                                              "_data": {"group_size": 128}}}}}))
    result = run_cli("inspect", str(folder))
    line = " ".join(result.stderr.split())
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "torchao.dtypes.affine_quantized_tensor.AffineQuantizedTensor" in line and "nothing was unpickled" in line
    assert "these are torchao quantized tensors, each pickled as its torchao tensor subclass" in line, line
    assert "quant_method torchao" in line, line


def test_an_mmengine_checkpoint_reads_its_message_hub_as_inert_data(tmp_path: Path) -> None:
    """mmengine's Runner (MMDetection, MMPretrain 3.x) saves `message_hub` beside `state_dict`: its log_scalars map
    each name to a HistoryBuffer (numpy history arrays). The whole checkpoint was refused, "suspicious:
    mmengine.logging.history_buffer.HistoryBuffer (unknown)", as torch.load(weights_only=True) refuses it. Written in
    a child interpreter with mmengine's class as it is (a plain class, pickled by its __dict__); mmengine is not
    installed here, and the reader must not need it."""
    import subprocess
    import sys

    package = tmp_path / "fake" / "mmengine" / "logging"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "history_buffer.py").write_text(
        "import numpy as np\n\n\nclass HistoryBuffer:\n    _statistics_methods: dict = dict()\n\n"
        "    def __init__(self, log_history=[], count_history=[], max_length=1000000):\n"
        "        self.max_length = max_length\n        self._log_history = np.array(log_history)\n"
        "        self._count_history = np.array(count_history)\n")
    path = tmp_path / "epoch_12.pth"
    script = (
        "import torch\nfrom mmengine.logging.history_buffer import HistoryBuffer\n"
        "torch.save({'meta': {'epoch': 12, 'iter': 3000, 'mmengine_version': '0.10.3', 'seed': 42,\n"
        "                     'dataset_meta': {'classes': ('person', 'car')}, 'experiment_name': 'rtmdet_tiny'},\n"
        "            'state_dict': {'backbone.stem.0.conv.weight': torch.randn(8, 3, 3, 3),\n"
        "                           'bbox_head.rtm_cls.0.weight': torch.randn(2, 8, 1, 1)},\n"
        "            'message_hub': {'log_scalars': {'train/loss': HistoryBuffer([0.5, 0.4], [1, 1]),\n"
        "                                            'train/lr': HistoryBuffer([0.01], [1])},\n"
        "                            'runtime_info': {'epoch': 12, 'iter': 3000}, 'resumed_keys': {'epoch': True}},\n"
        "            'optimizer': {'state': {}, 'param_groups': [{'lr': 0.01, 'params': [0, 1]}]},\n"
        f"            'param_schedulers': [{{'last_epoch': 12}}]}}, {str(path)!r})\n")
    subprocess.run([sys.executable, "-c", script], check=True, env={"PYTHONPATH": str(tmp_path / "fake")})
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "state_dict" and data["num_tensors"] == 2, data
    assert "message_hub (dict, 3 entries)" in data["other_entries"], data["other_entries"]
    inert = [g for g in data["security"]["globals"] if g["safety"] == "inert"]
    assert [f"{g['module']}.{g['name']}" for g in inert] == ["mmengine.logging.history_buffer.HistoryBuffer"], inert
    code, data = run_json("convert", str(path), "-o", str(tmp_path / "rtmdet.safetensors"))
    assert code == 0, data


def test_an_mlx_config_alone_is_not_planned_and_other_quantization_keys_are_left_alone(tmp_path: Path) -> None:
    """plan-devices on an mlx-community repo fetches its config.json alone: its `quantization` says mlx-lm as
    surely as the packed weights do. A `quantization` entry without bits or group size is not mlx-lm's."""
    _mlx_llama(tmp_path / "full", both_keys=False)
    folder = tmp_path / "config-only"
    folder.mkdir()
    (folder / "config.json").write_text((tmp_path / "full" / "config.json").read_text())
    result = run_cli("plan-devices", str(folder), "--gpu", "1GB")
    assert result.exit_code == 2 and "an mlx-lm 4-bit, group size 64 checkpoint" in result.stderr, result.stderr

    config = json.loads((folder / "config.json").read_text())
    config["quantization"] = {"kv_cache": "fp8"}
    (folder / "config.json").write_text(json.dumps(config))
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and data["dtype"] == "fp16", data
