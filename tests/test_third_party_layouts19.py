"""Round 19 of real third-party layouts: what transformers 5's save_pretrained writes and reads.

Each test builds its files here (tiny, seeded) in the layout transformers writes or reads, and holds
weightdoctor to what transformers itself does with them.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_json

HIDDEN, INTERMEDIATE, VOCAB = 32, 64, 96
LINEARS = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (16, HIDDEN), "self_attn.v_proj": (16, HIDDEN),
           "self_attn.o_proj": (HIDDEN, HIDDEN), "mlp.gate_proj": (INTERMEDIATE, HIDDEN),
           "mlp.up_proj": (INTERMEDIATE, HIDDEN), "mlp.down_proj": (HIDDEN, INTERMEDIATE)}


def _llama_config(**extra: object) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
            "intermediate_size": INTERMEDIATE, "num_attention_heads": 2, "num_key_value_heads": 1,
            "num_hidden_layers": 1, "vocab_size": VOCAB, "dtype": "float16", "tie_word_embeddings": False, **extra}


def _dense_rest() -> dict[str, torch.Tensor]:
    return {"model.embed_tokens.weight": torch.randn(VOCAB, HIDDEN).half(),
            "lm_head.weight": torch.randn(VOCAB, HIDDEN).half(),
            "model.norm.weight": torch.ones(HIDDEN).half(),
            "model.layers.0.input_layernorm.weight": torch.ones(HIDDEN).half(),
            "model.layers.0.post_attention_layernorm.weight": torch.ones(HIDDEN).half()}


def _gptq_folder(folder: Path, method: str) -> Path:
    """A GPTQ (or AWQ) 4-bit Llama as AutoGPTQ / AutoAWQ save it: int32 `qweight` / `qzeros`, fp16 `scales`."""
    torch.manual_seed(0)
    tensors = _dense_rest()
    group = 16
    for name, (rows, cols) in LINEARS.items():
        prefix = f"model.layers.0.{name}."
        if method == "gptq":
            tensors[prefix + "qweight"] = torch.randint(0, 2**31 - 1, (cols // 8, rows), dtype=torch.int32)
            tensors[prefix + "g_idx"] = torch.arange(cols, dtype=torch.int32) // group
        else:
            tensors[prefix + "qweight"] = torch.randint(0, 2**31 - 1, (cols, rows // 8), dtype=torch.int32)
        tensors[prefix + "qzeros"] = torch.randint(0, 2**31 - 1, (cols // group, rows // 8), dtype=torch.int32)
        tensors[prefix + "scales"] = torch.rand(cols // group, rows).half()
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    quantization = {"quant_method": method, "bits": 4, "group_size": group}
    quantization.update({"desc_act": False, "sym": True} if method == "gptq"
                        else {"zero_point": True, "version": "gemm"})
    (folder / "config.json").write_text(json.dumps(_llama_config(quantization_config=quantization)))
    return folder


def _bnb4_folder(folder: Path) -> Path:
    """A bitsandbytes nf4 Llama as save_pretrained writes it: packed uint8 `weight` [n*k/2, 1] with its state."""
    torch.manual_seed(0)
    tensors = _dense_rest()
    for name, (rows, cols) in LINEARS.items():
        prefix = f"model.layers.0.{name}.weight"
        state = json.dumps({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [rows, cols]}).encode()
        tensors[prefix] = torch.randint(0, 255, (rows * cols // 2, 1), dtype=torch.uint8)
        tensors[prefix + ".absmax"] = torch.rand(rows * cols // 64)
        tensors[prefix + ".quant_map"] = torch.rand(16)
        tensors[prefix + ".quant_state.bitsandbytes__nf4"] = torch.tensor(list(state), dtype=torch.uint8)
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(_llama_config(quantization_config={
        "quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_compute_dtype": "float16"})))
    return folder


@pytest.mark.parametrize(("method", "package", "said"), [
    ("gptq", "optimum", "Loading a GPTQ quantized model requires optimum"),
    ("awq", "gptqmodel", "Loading an AWQ quantized model requires gptqmodel"),
    ("bitsandbytes", "bitsandbytes", "4-bit quantization requires bitsandbytes"),
])
def test_diff_keys_model_class_says_from_pretrained_raises_without_the_quantizers_package(
        tmp_path: Path, method: str, package: str, said: str) -> None:
    """A GPTQ / AWQ / bitsandbytes checkpoint's config, none of their packages installed: transformers'
    quantizer raises ImportError in validate_environment, before from_pretrained loads a weight. diff-keys
    --model-class listed the packed tensors and scales (info) and never said the load cannot start here; only
    compressed-tensors had that note. The note now comes from transformers' own quantizer, in its words."""
    pytest.importorskip("transformers")
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    import transformers

    folder = _bnb4_folder(tmp_path / "m") if method == "bitsandbytes" else _gptq_folder(tmp_path / "m", method)
    with pytest.raises(ImportError, match=said):  # the oracle: what from_pretrained does here
        transformers.LlamaForCausalLM.from_pretrained(folder)
    code, data = run_json("diff-keys", str(folder), "--model-class", "LlamaForCausalLM")
    assert code == 0, data
    notes = [n for n in data["notes"] if n.startswith("from_pretrained raises ImportError here before it loads")]
    assert len(notes) == 1 and said in notes[0], data["notes"]
    # The keys are still compared as the quantizer reads them: side tensors unexpected, reason quantization.
    assert data["unexpected"] and {u["reason"] for u in data["unexpected"]} == {"quantization"}


def test_diff_keys_model_class_fp8_on_cpu_has_no_raise_note(tmp_path: Path) -> None:
    """transformers loads a block-wise FP8 checkpoint on CPU (dequantized): no 'raises' note there."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    tensors = _dense_rest()
    for name, (rows, cols) in LINEARS.items():
        prefix = f"model.layers.0.{name}."
        tensors[prefix + "weight"] = torch.randn(rows, cols).to(torch.float8_e4m3fn)
        tensors[prefix + "weight_scale_inv"] = torch.rand(rows // 16, cols // 16)
    folder = tmp_path / "fp8"
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(_llama_config(quantization_config={
        "quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [16, 16]})))
    transformers.LlamaForCausalLM.from_pretrained(folder)  # loads here
    code, data = run_json("diff-keys", str(folder), "--model-class", "LlamaForCausalLM")
    assert code == 0 and not [n for n in data["notes"] if "raises" in n], data["notes"]


def _self_attention_cache_bytes(model: torch.nn.Module, tokens: int, **inputs: torch.Tensor) -> int:
    """Bytes of the decoder self-attention keys and values transformers' cache holds after one forward."""
    with torch.no_grad():
        out = model(decoder_input_ids=torch.ones(1, tokens, dtype=torch.long), use_cache=True, **inputs)
    cache = out.past_key_values
    cache = getattr(cache, "self_attention_cache", cache)
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


def _composite_config(transformers: Any, kind: str) -> Any:
    """A tiny composite encoder-decoder config: bert2bert (EncoderDecoderConfig), or ViT with a GPT-2 ("vit-gpt2") or
    TrOCR ("trocr") decoder (VisionEncoderDecoderConfig); the decoder has 3 layers, 4 heads, hidden 32, 24 positions,
    the encoder other sizes (so that reading its values would show)."""
    bert = {"vocab_size": 64, "intermediate_size": 32, "max_position_embeddings": 24}
    if kind == "bert2bert":
        encoder = transformers.BertConfig(**bert, hidden_size=24, num_hidden_layers=1, num_attention_heads=2)
        decoder = transformers.BertConfig(**bert, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                          is_decoder=True, add_cross_attention=True)
        return transformers.EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    encoder = transformers.ViTConfig(hidden_size=24, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, image_size=28, patch_size=14)
    decoder = (transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=3, n_head=4, n_positions=24,
                                       is_decoder=True, add_cross_attention=True) if kind == "vit-gpt2" else
               transformers.TrOCRConfig(vocab_size=64, d_model=32, decoder_layers=3, decoder_attention_heads=4,
                                        decoder_ffn_dim=32, max_position_embeddings=24,
                                        cross_attention_hidden_size=24))
    return transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)


@pytest.mark.parametrize("kind", ["bert2bert", "vit-gpt2", "trocr"])
def test_plan_devices_kv_cache_of_a_composite_encoder_decoder_is_its_decoders(tmp_path: Path, kind: str) -> None:
    """EncoderDecoderModel (bert2bert) and VisionEncoderDecoderModel (ViT-GPT2 captioning, TrOCR) keep each half's
    config under `encoder` / `decoder`: plan-devices --kv-cache refused them ("needs --seq-len", then "config has no
    num_hidden_layers / num_attention_heads / hidden_size"). It now sizes the decoder's self-attention cache, to the
    byte of what transformers' cache holds after a forward of that many tokens (the encoder sized differently, so
    reading its values would show), and says the cross-attention cache comes on top."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = _composite_config(transformers, kind)
    if kind == "bert2bert":
        model = transformers.EncoderDecoderModel(config=config)
        inputs = {"input_ids": torch.ones(1, 5, dtype=torch.long)}
    else:
        model = transformers.VisionEncoderDecoderModel(config=config)
        inputs = {"pixel_values": torch.randn(1, 3, 28, 28)}
    model.eval()
    folder = tmp_path / kind
    model.save_pretrained(folder)
    expected = _self_attention_cache_bytes(model, 24, **inputs)  # the oracle: 24 = the decoder's max positions
    code, data = run_json("plan-devices", str(folder), "--kv-cache", "--gpu", "1GB", "--dtype", "fp32")
    assert code == 0, data
    kv = data["kv_cache"]
    assert (kv["seq_len"], kv["num_layers"], kv["num_kv_heads"], kv["head_dim"]) == (24, 3, 4, 8)
    assert kv["total_bytes"] == expected == 3 * 2 * 4 * 8 * 24 * 4
    # plan6: the cross-attention cache is counted too, at the decoder's heads: per encoder position, what
    # transformers' cross_attention_cache holds after the forward; for as many encoder positions as the decoder's
    # tokens where the encoder's length depends on its input (BERT's), for the ViT encoder's own (review71: its
    # 2 x 2 patches and CLS token for its 28 x 28 image_size, whatever the text's length; it was 24 here)
    with torch.no_grad():
        cross = model(decoder_input_ids=torch.ones(1, 2, dtype=torch.long), use_cache=True,
                      **inputs).past_key_values.cross_attention_cache
    positions = cross.layers[0].keys.shape[-2]
    measured = sum(t.numel() * t.element_size() for layer in cross.layers for t in (layer.keys, layer.values))
    if kind == "bert2bert":
        assert (kv["encoder_seq_len"], kv["cross_attention_bytes"] // 24) == (24, measured // positions), kv
        assert "cross-attention keys and values, each decoder layer's, are counted apart for 24 encoder tokens" \
            in kv["note"], kv
    else:
        assert (positions, kv["encoder_seq_len"], kv["cross_attention_bytes"]) == (5, 5, measured), kv
        assert "counted apart for 5 encoder positions, what its ViTModel outputs for an image of its image_size, " \
            "28 x 28 pixels" in kv["note"], kv


@pytest.mark.parametrize("kind", ["bert2bert", "trocr", "vit-gpt2"])
def test_inspect_config_summary_of_a_composite_encoder_decoder_reads_its_decoder(tmp_path: Path, kind: str) -> None:
    """A VisionEncoderDecoderModel / EncoderDecoderModel config.json keeps its halves under `encoder` / `decoder`:
    inspect's config panel showed model_type and architectures only (hidden_size, layers, heads, vocab_size all
    null). It now reads the decoder, the text side, as it reads LLaVA's text_config, with TrOCR's
    decoder_layers / decoder_attention_heads read as transformers' attribute_map reads them."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = _composite_config(transformers, kind)
    folder = tmp_path / kind
    folder.mkdir()
    config.save_pretrained(folder)
    save_file({"decoder.lm_head.weight": torch.zeros(4, 4)}, folder / "model.safetensors")
    built = transformers.AutoConfig.from_pretrained(folder).decoder  # the oracle: transformers' own reading
    code, data = run_json("inspect", str(folder))
    assert code == 0, data
    summary = data["config_summary"]
    assert summary["model_type"] == config.model_type
    assert (summary["hidden_size"], summary["num_layers"], summary["num_heads"], summary["vocab_size"]) == (
        built.hidden_size, built.num_hidden_layers, built.num_attention_heads, built.vocab_size) == (32, 3, 4, 64)


def test_plan_devices_gguf_quantization_config_beside_safetensors_is_dense_not_an_upper_bound(tmp_path: Path) -> None:
    """A config.json kept from a model loaded from a .gguf (`quantization_config: {quant_method: gguf}`) beside
    plain safetensors: transformers' GGUF quantizer packs only what it reads from a .gguf file, so
    from_pretrained(folder) builds plain Linear layers at the stored dtype. plan-devices warned that the plan
    over-sizes "the Linear weights its quantizer keeps packed" and is an upper bound; it is exact."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    tensors = _dense_rest()
    for name, (rows, cols) in LINEARS.items():
        tensors[f"model.layers.0.{name}.weight"] = torch.randn(rows, cols).half()
    folder = tmp_path / "from-gguf"
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(_llama_config(quantization_config={
        "quant_method": "gguf", "gguf_file": "model-Q4_K_M.gguf", "dequantize": False})))
    model = transformers.LlamaForCausalLM.from_pretrained(folder)  # the oracle: what loading builds
    linear = model.model.layers[0].mlp.gate_proj
    assert type(linear) is torch.nn.Linear and linear.weight.dtype == torch.float16
    stored = sum(t.numel() * t.element_size() for t in tensors.values())
    assert sum(p.numel() * p.element_size() for p in model.parameters()) == stored
    loaded = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])  # + rotary inv_freq
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and data["dtype"] == "fp16", data
    said = " ".join(data["warnings"])
    assert "upper bound" not in said and "keeps packed" not in said, said
    assert "packs only weights read from a .gguf file" in said and "loads them dense" in said, said
    assert data["devices"][0]["used_bytes"] == loaded, data["devices"][0]


def test_plan_devices_remote_architecture_of_a_known_model_type_plans_the_class_auto_builds(tmp_path: Path) -> None:
    """mosaicml/mpt-7b's config: model_type "mpt" (transformers has it) but architectures ["MPTForCausalLM"], its
    remote code's class (auto_map). AutoModelForCausalLM.from_pretrained without trust_remote_code builds
    transformers' MptForCausalLM and places its MptBlocks whole; plan-devices said "transformers has no model
    class 'MPTForCausalLM'" and planned a tree of tensor names instead. It now plans MptForCausalLM, to the
    device map transformers computes, says why, and never touches the remote code."""
    transformers = pytest.importorskip("transformers")
    from fixtures.plan_devices import from_pretrained_device_map

    torch.manual_seed(0)
    config = transformers.MptConfig(vocab_size=VOCAB, d_model=HIDDEN, n_heads=2, n_layers=4, max_seq_len=32)
    folder = tmp_path / "mpt-7b"
    transformers.MptForCausalLM(config).save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    saved["architectures"] = ["MPTForCausalLM"]
    saved["auto_map"] = {"AutoConfig": "configuration_mpt.MPTConfig",
                         "AutoModelForCausalLM": "modeling_mpt.MPTForCausalLM"}
    (folder / "config.json").write_text(json.dumps(saved))
    ran = tmp_path / "remote-code-ran"
    for module in ("configuration_mpt", "modeling_mpt"):
        (folder / f"{module}.py").write_text(f"open({str(ran)!r}, 'w').write('{module}')\n")
    gpus = [12_000, 12_000]
    expected = from_pretrained_device_map(folder, "auto", {0: gpus[0], 1: gpus[1], "cpu": 10**9},
                                          model_class=transformers.AutoModelForCausalLM)
    code, data = run_json("plan-devices", str(folder), "--gpu", "12000B", "--gpu", "12000B", "--cpu", "1GB")
    assert code == 0, data
    assert data["model_class"] == "MptForCausalLM"
    assert data["device_map"] == expected
    said = " ".join(data["warnings"])
    assert "MPTForCausalLM is no transformers class" in said and "AutoModelForCausalLM.from_pretrained" in said
    assert not ran.exists()


def test_check_dtype_kept_fp32_at_load_for_a_remote_architecture_of_a_known_type(tmp_path: Path) -> None:
    """A T5 whose config names a remote-code class (architectures ["MyT5ForConditionalGeneration"], auto_map):
    AutoModelForSeq2SeqLM.from_pretrained(dtype=float16) builds T5ForConditionalGeneration and keeps its `wo`
    weights in float32 (_keep_in_fp32_modules). check-dtype's kept_fp32_at_load was null (the class could not be
    built by that name), so an fp16 overflow in `wo` read as one the load hits; it now lists what the load keeps."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2))
    with torch.no_grad():
        model.encoder.block[0].layer[1].DenseReluDense.wo.weight[0, 0] = 1e6  # overflows fp16
    folder = tmp_path / "t5-remote"
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["MyT5ForConditionalGeneration"]
    config["auto_map"] = {"AutoModelForSeq2SeqLM": "modeling_my_t5.MyT5ForConditionalGeneration"}
    (folder / "config.json").write_text(json.dumps(config))
    loaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=torch.float16)  # the oracle
    expected = sorted(n for n, p in loaded.named_parameters() if p.dtype == torch.float32)
    assert expected and all(".wo." in n for n in expected)
    code, data = run_json("check-dtype", str(folder), "--target", "fp16")
    assert code == 0, data
    assert data["targets"]["fp16"]["kept_fp32_at_load"] == expected


def test_diff_keys_model_class_says_why_a_gptq_moe_checkpoints_experts_do_not_load(tmp_path: Path) -> None:
    """A GPTQ Qwen2-MoE as GPTQModel writes it: each expert a quantized Linear (`experts.0.gate_proj.qweight`).
    transformers 5 builds the experts fused (`experts.gate_up_proj`, 3-D) and its GPTQ quantizer replaces
    nn.Linear layers only. plan-devices refused it, saying so; diff-keys --model-class listed the fused experts
    as missing with reason "unknown" ("no known cause") beside the qweights as quantizer side tensors (info),
    and never said why. It now carries the same explanation as a note."""
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = transformers.Qwen2MoeForCausalLM(transformers.Qwen2MoeConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
        shared_expert_intermediate_size=32))
    folder = tmp_path / "qwen2-moe-gptq"
    model.save_pretrained(folder)  # per-expert Linear weights, as checkpoints on the Hub store them
    stored = {}
    for path in folder.glob("*.safetensors"):
        stored.update(load_file(path))
        path.unlink()
    quantized = {}
    for name, tensor in stored.items():
        if name.endswith("_proj.weight"):
            rows, cols = tensor.shape
            prefix = name.removesuffix(".weight")
            quantized[prefix + ".qweight"] = torch.randint(0, 2**31 - 1, (cols // 8, rows), dtype=torch.int32)
            quantized[prefix + ".qzeros"] = torch.randint(0, 2**31 - 1, (cols // 16, rows // 8), dtype=torch.int32)
            quantized[prefix + ".scales"] = torch.rand(cols // 16, rows).half()
        else:
            quantized[name] = tensor.half()
    save_file(quantized, folder / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 16, "desc_act": False}
    (folder / "config.json").write_text(json.dumps(config))
    assert "model.layers.0.mlp.experts.0.gate_proj.qweight" in quantized
    code, data = run_json("diff-keys", str(folder), "--model-class", "Qwen2MoeForCausalLM")
    missing = {item["name"] for item in data["missing"]}
    assert {"model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.down_proj"} <= missing
    notes = [n for n in data["notes"] if "stores its MoE experts as quantized Linear layers" in n]
    assert len(notes) == 1 and "replaces nn.Linear layers only" in notes[0], data["notes"]
    assert "experts fused (model.layers.0.mlp.experts." in notes[0]
    refused = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert refused == (2, None)  # the same finding, where no device map can be planned


def test_inspect_warns_that_a_folders_auto_map_code_runs_with_trust_remote_code(tmp_path: Path) -> None:
    """A trust_remote_code repo: config.json's auto_map names modeling_*.py beside safetensors weights. inspect's
    security line said "safe (safetensors: no pickle, no code)" and nothing else, while
    from_pretrained(trust_remote_code=True) imports and runs those files. It now warns, naming them (and one of
    another repo, `org/repo--module.Class`), and still runs none of them."""
    torch.manual_seed(0)
    folder = tmp_path / "custom"
    folder.mkdir()
    save_file(_dense_rest(), folder / "model.safetensors", metadata={"format": "pt"})
    ran = tmp_path / "ran"
    (folder / "modeling_custom.py").write_text(f"open({str(ran)!r}, 'w').write('ran')\n")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "custom", "architectures": ["CustomForCausalLM"],
        "auto_map": {"AutoConfig": "org/base--configuration_base.BaseConfig",
                     "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM",
                     "AutoTokenizer": ["tokenization_custom.CustomTokenizer", None]}}))
    code, data = run_json("inspect", str(folder))
    assert code == 0 and data["security"]["verdict"] == "safe", data
    warning = next(w for w in data["warnings"] if "auto_map" in w)
    assert "modeling_custom.py in this folder" in warning
    assert "tokenization_custom.py, not in this folder" in warning and "configuration_base.py of org/base" in warning
    assert "trust_remote_code=True) imports and runs it" in warning
    assert not ran.exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    save_file(_dense_rest(), plain / "model.safetensors", metadata={"format": "pt"})
    (plain / "config.json").write_text(json.dumps(_llama_config()))
    assert not [w for w in run_json("inspect", str(plain))[1]["warnings"] if "auto_map" in w]
