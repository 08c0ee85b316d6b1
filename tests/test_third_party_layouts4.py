"""A fourth round of checkpoints as other tools write them: CTranslate2's model.bin (faster-whisper), ExLlamaV2,
quanto, EETQ, HQQ, AQLM and torchao quants, diffusers fp16 variants, Megatron-LM and NeMo 2.0 saves, OLMo step
folders, sharding corner cases (shards in a subfolder, a partial download beside a complete index, shards without
an index), axolotl adapters beside the base config, ComfyUI fp8 files, TRL value heads."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli


def _ct2_string(text: str) -> bytes:
    return struct.pack("H", len(text) + 1) + text.encode() + b"\0"


def _faster_whisper(folder: Path, spec: str = "WhisperSpec") -> None:
    """A faster-whisper repo as ct2-transformers-converter writes it: model.bin in CTranslate2's own format (binary
    version, spec name, revision, then name / rank / dims / type id / byte count / bytes per variable, then
    aliases), its config.json (alignment heads, suppress ids: no model_type), vocabulary.json, tokenizer.json."""
    folder.mkdir()
    variables = [("encoder/conv1/weight", torch.ones(8, 4, 3, dtype=torch.float16), 4),
                 ("decoder/embeddings/weight", torch.ones(16, 8, dtype=torch.float16), 4),
                 ("decoder/layer_0/self_attention/linear_0/weight", torch.ones(24, 8, dtype=torch.int8), 1)]
    blob = struct.pack("I", 6) + _ct2_string(spec) + struct.pack("I", 3) + struct.pack("I", len(variables))
    for name, value, type_id in variables:
        blob += _ct2_string(name) + struct.pack("B", value.dim()) + b"".join(struct.pack("I", d) for d in value.shape)
        data = value.numpy().tobytes()
        blob += struct.pack("B", type_id) + struct.pack("I", len(data)) + data
    blob += struct.pack("I", 1) + _ct2_string("decoder/projection/weight") + _ct2_string("decoder/embeddings/weight")
    (folder / "model.bin").write_bytes(blob)
    (folder / "config.json").write_text(json.dumps({
        "alignment_heads": [[2, 3]], "lang_ids": [50259], "suppress_ids": [1, 2], "suppress_ids_begin": [220],
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "decoder_start_token": "<|startoftranscript|>", "add_source_bos": False, "add_source_eos": False,
        "layer_norm_epsilon": None}, indent=2, sort_keys=True))
    (folder / "vocabulary.json").write_text(json.dumps(["<|endoftext|>", "a"]))
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))


@pytest.mark.parametrize("spec", ["WhisperSpec", "TransformerDecoderModelSpec"])
def test_a_ctranslate2_model_bin_is_named_not_called_a_broken_pickle(tmp_path: Path, spec: str) -> None:
    """faster-whisper's model.bin (and any ct2-*-converter output) is CTranslate2's binary format. Every command said
    "not a safetensors file nor a PyTorch pickle (zip or legacy)", which reads as a damaged download."""
    folder = tmp_path / "faster-whisper-large-v3"
    _faster_whisper(folder, spec)
    for args in (["inspect", str(folder)], ["inspect", str(folder / "model.bin")], ["convert", str(folder), "-o",
                 str(tmp_path / "out")], ["plan-devices", str(folder), "--gpu", "24GB"], ["check-dtype", str(folder)]):
        result = run_cli(*args)
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert f"a CTranslate2 model ({spec};" in message and "nor a PyTorch pickle" not in message, message
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def _llama_config(**extra: object) -> dict[str, object]:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
            "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 1, "vocab_size": 128,
            "torch_dtype": "float16", "tie_word_embeddings": False, **extra}


def _exl2_llama(folder: Path) -> None:
    """A one-layer Llama as ExLlamaV2's convert.py -cf writes it: output.safetensors (no index, not model.*) with
    each Linear as q_weight (int32, [packed rows, out]), q_scale (int32), q_scale_max (fp16), q_invperm (int16, one
    per input feature) and q_groups (int16 bits / row pairs); config.json gains quantization_config exl2 with a
    fractional `bits`; measurement.json beside it."""
    from safetensors.torch import save_file

    folder.mkdir()
    shapes = {"self_attn.q_proj": (64, 64), "self_attn.k_proj": (64, 64), "self_attn.v_proj": (64, 64),
              "self_attn.o_proj": (64, 64), "mlp.gate_proj": (128, 64), "mlp.up_proj": (128, 64),
              "mlp.down_proj": (64, 128)}
    tensors = {"model.embed_tokens.weight": torch.randn(128, 64).half(), "lm_head.weight": torch.randn(128, 64).half()}
    for norm in ("model.norm", "model.layers.0.input_layernorm", "model.layers.0.post_attention_layernorm"):
        tensors[norm + ".weight"] = torch.ones(64).half()
    for module, (out, inp) in shapes.items():
        base = f"model.layers.0.{module}."
        tensors |= {base + "q_weight": torch.zeros(inp * 4 // 32, out, dtype=torch.int32),
                    base + "q_scale": torch.zeros(inp // 32 * 4 // 32, out, dtype=torch.int32),
                    base + "q_scale_max": torch.full((inp // 32,), 0.02).half(),
                    base + "q_invperm": torch.arange(inp, dtype=torch.int16),
                    base + "q_groups": torch.tensor([4, 0], dtype=torch.int16)}
    save_file(tensors, str(folder / "output.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(_llama_config(quantization_config={
        "quant_method": "exl2", "version": "0.2.3", "bits": 4.0, "head_bits": 6,
        "calibration": {"rows": 115, "length": 2048, "dataset": "(default)"}})))
    (folder / "measurement.json").write_text(json.dumps({"measurement": {}, "last_module_idx": 1}))


def test_an_exl2_checkpoint_counts_its_weights_and_is_not_planned_as_transformers_loads(tmp_path: Path) -> None:
    """ExLlamaV2's EXL2 quants. inspect said "exl2: 22,814 parameters once unpacked; 0 packed tensor(s)" (the stored
    int32 counted as weights); plan-devices planned a clean fp16 load, diff-keys --model-class called every tensor
    "unknown: will not load" under a note that the model is quantized on load. transformers has no exl2 quantizer:
    it skips the quantization_config and builds the model unquantized, its weights not in the checkpoint. convert
    --dtype bf16 cast the fp16 q_scale_max the kernels read."""
    from safetensors import safe_open

    folder = tmp_path / "Llama-3-8B-exl2-4.0bpw"
    _exl2_llama(folder)
    result = run_cli("inspect", str(folder), "--json")
    quantized = json.loads(result.stdout)["quantized"]
    assert quantized == {"method": "exl2", "bits": None, "packed_tensors": 7, "side_tensors": 28,
                         "parameters": 128 * 64 + 128 * 64 + 3 * 64 + 4 * 64 * 64 + 3 * 128 * 64}, quantized

    for args in (["plan-devices", str(folder), "--gpu", "24GB"], ["diff-keys", str(folder), "--model-class",
                                                                   "LlamaForCausalLM"]):
        result = run_cli(*args)
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2 and "quant_method 'exl2' is not one transformers has a quantizer for" in message
        assert "builds the model unquantized" in message and "exllamav2" in message, message
    result = run_cli("plan-devices", str(folder), "--gpu", "24GB", "--dtype", "fp16")
    assert result.exit_code == 0 and "planned as the unquantized model at fp16" in " ".join(result.stderr.split())

    result = run_cli("convert", str(folder), "-o", str(tmp_path / "bf16"), "--dtype", "bf16")
    assert result.exit_code == 0, result.stderr
    with safe_open(str(tmp_path / "bf16" / "output.safetensors"), "pt") as f:
        assert f.get_slice("model.layers.0.mlp.up_proj.q_scale_max").get_dtype() == "F16"
        assert f.get_slice("model.norm.weight").get_dtype() == "BF16"


_LINEARS = {"self_attn.q_proj": (64, 64), "self_attn.k_proj": (64, 64), "self_attn.v_proj": (64, 64),
            "self_attn.o_proj": (64, 64), "mlp.gate_proj": (128, 64), "mlp.up_proj": (128, 64),
            "mlp.down_proj": (64, 128)}
# The one-layer Llama's parameters: embeddings and head, three norms, the seven Linears.
_LLAMA_PARAMETERS = 2 * 128 * 64 + 3 * 64 + sum(out * inp for out, inp in _LINEARS.values())


def _quantized_layer(method: str, out: int, inp: int) -> dict[str, torch.Tensor]:
    """One Linear's tensors as each quantizer's transformers integration stores them."""
    if method == "quanto":  # optimum-quanto qint8: WeightQBytesTensor's _data / _scale, the layer's I/O scales
        return {"weight._data": torch.ones(out, inp, dtype=torch.int8), "weight._scale": torch.ones(out, 1).half(),
                "input_scale": torch.ones(()).half(), "output_scale": torch.ones(()).half()}
    if method == "eetq":  # EetqLinear: int8 weight [in, out], fp16 weight_scales
        return {"weight": torch.ones(inp, out, dtype=torch.int8), "weight_scales": torch.ones(out).half()}
    if method == "hqq":  # HQQLinear.state_dict: 4bit_u8 W_q, scale / zero per group of 64, its meta as tensors
        groups = out * inp // 64
        return {"W_q": torch.zeros(groups // 2, 64, dtype=torch.uint8), "scale": torch.ones(groups, 1).half(),
                "zero": torch.ones(groups, 1).half(), "shape": torch.tensor([out, inp]), "nbits": torch.tensor(4),
                "group_size": torch.tensor(64), "axis": torch.tensor(1), "channel_wise": torch.tensor(True),
                "optimize": torch.tensor(True), "round_zero": torch.tensor(False), "offload_meta": torch.tensor(False)}
    # AQLM 1x16: int16 codes [out, in / 8, 1] into an fp16 codebook of 8-wide vectors, fp16 scales per row
    return {"codes": torch.zeros(out, inp // 8, 1, dtype=torch.int16), "codebooks": torch.randn(1, 64, 1, 8).half(),
            "scales": torch.ones(out, 1, 1, 1).half()}

def _quantized_llama(folder: Path, method: str) -> Path:
    """A one-layer Llama folder whose Linear layers are stored as `method` saves them, with its quantization_config."""
    from safetensors.torch import save_file

    folder.mkdir()
    tensors = {"model.embed_tokens.weight": torch.randn(128, 64).half(), "lm_head.weight": torch.randn(128, 64).half()}
    for norm in ("model.norm", "model.layers.0.input_layernorm", "model.layers.0.post_attention_layernorm"):
        tensors[norm + ".weight"] = torch.ones(64).half()
    for module, (out, inp) in _LINEARS.items():
        tensors |= {f"model.layers.0.{module}.{k}": v for k, v in _quantized_layer(method, out, inp).items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(_llama_config(quantization_config=_QUANTIZATION_CONFIGS[method])))
    return folder



_QUANTIZATION_CONFIGS: dict[str, dict[str, object]] = {
    "quanto": {"quant_method": "quanto", "weights": "int8", "activations": None, "modules_to_not_convert": None},
    "eetq": {"quant_method": "eetq", "weights": "int8", "modules_to_not_convert": ["lm_head"]},
    "hqq": {"quant_method": "hqq", "skip_modules": ["lm_head"], "quant_config": {"weight_quant_params": {
        "nbits": 4, "channel_wise": True, "group_size": 64, "optimize": True, "round_zero": True, "axis": 1,
        "view_as_float": False}, "scale_quant_params": None, "zero_quant_params": None, "offload_meta": False}},
    "aqlm": {"quant_method": "aqlm", "in_group_size": 8, "out_group_size": 1, "num_codebooks": 1,
             "nbits_per_codebook": 16, "linear_weights_not_to_quantize": ["model.embed_tokens.weight",
                                                                          "lm_head.weight"]},
}


@pytest.mark.parametrize(("method", "side", "planned"), [("quanto", 21, "int8"), ("eetq", 7, "int8"),
                                                          ("hqq", 14, "fp16"), ("aqlm", 14, "fp16")])
def test_quanto_eetq_hqq_and_aqlm_checkpoints_count_and_plan_their_weights(
        tmp_path: Path, method: str, side: int, planned: str) -> None:
    """Models saved by transformers with QuantoConfig, EetqConfig, HqqConfig, or AQLM's own quantizer. inspect
    counted stored values as the parameters once unpacked (AQLM's int16 codes an eighth of its weights, HQQ's
    packed bytes half, the scales as weights), check-dtype would cast their fp16 scales, and plan-devices planned
    every one as the fp16 model without a word."""

    folder = _quantized_llama(tmp_path / f"llama-{method}", method)

    quantized = json.loads(run_cli("inspect", str(folder), "--json").stdout)["quantized"]
    assert quantized["parameters"] == _LLAMA_PARAMETERS and quantized["side_tensors"] >= side, quantized
    skipped = json.loads(run_cli("check-dtype", str(folder), "--json").stdout)["skipped"]
    kept = [s["name"] for s in skipped if s["reason"].startswith("a quantizer's scale or state")]
    assert len(kept) == side and "model.norm.weight" not in kept, skipped

    result = run_cli("plan-devices", str(folder), "--gpu", "24GB")
    assert result.exit_code == 0, result.stderr
    out, err = " ".join(result.stdout.split()), " ".join(result.stderr.split())
    assert f"dtype {planned} ·" in out, out
    if method == "hqq":
        # transformers' HQQ quantizer keeps nn.Linear until the weights load: its planner counts them dense, so
        # does the plan (tests/test_plan_quantized2.py checks the map)
        assert "the config quantizes the weights (hqq, 4-bit): planned at the floating dtype, as transformers' " \
               "planner sizes it" in err, err
    elif planned == "fp16":
        # AQLM's layers at their stored codes, codebooks and scales, as transformers' planner sizes aqlm's
        # QuantizedLinear (tests/test_plan_quantized2.py checks the bytes and map); no longer an upper bound
        assert "the config quantizes the weights (aqlm): the 7 quantized Linear layers of 8 are sized at the bytes " \
               "the checkpoint stores for them" in err, err
        assert "upper bound" not in err
    else:
        assert f"planned as {planned}" in err and "sized at the bytes the checkpoint stores" in err, err
        assert "bitsandbytes keeps 10%" not in out, out


def test_a_diffusers_fp16_variant_plan_says_diffusers_loads_float32_by_default(tmp_path: Path) -> None:
    """A pipeline cloned with its fp16 variant only (unet/diffusion_pytorch_model.fp16.safetensors): plan-devices
    on unet/ planned it at fp16 without a word, while diffusers' from_pretrained loads in float32 unless given
    torch_dtype (check-dtype says so): the default load takes twice the memory planned."""
    from safetensors.torch import save_file

    unet = tmp_path / "stable-diffusion-v1-5" / "unet"
    unet.mkdir(parents=True)
    (unet.parent / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}))
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel",
                                                  "_diffusers_version": "0.30.0", "in_channels": 4}))
    save_file({"conv_in.weight": torch.randn(32, 4, 3, 3).half(), "conv_in.bias": torch.zeros(32).half(),
               "conv_out.weight": torch.randn(4, 32, 3, 3).half()}, unet / "diffusion_pytorch_model.fp16.safetensors")
    result = run_cli("plan-devices", str(unet), "--gpu", "8GB")
    assert result.exit_code == 0, result.stderr
    err = " ".join(result.stderr.split())
    assert "a diffusers UNet2DConditionModel: its from_pretrained loads in float32 unless given torch_dtype" in err
    assert "torch_dtype=torch.float16" in err and "--dtype fp32 plans the default" in err, err
    assert "dtype fp16 ·" in " ".join(result.stdout.split())
    result = run_cli("plan-devices", str(unet), "--gpu", "8GB", "--dtype", "fp32")
    assert result.exit_code == 0 and "loads in float32 unless" not in result.stderr, result.stderr


def _megatron_save(root: Path, ranks: int) -> Path:
    """A Megatron-LM legacy save: latest_checkpointed_iteration.txt beside iter_0001000/mp_rank_0N/model_optim_rng.pt,
    each {"args": Namespace, "checkpoint_version": 3.0, "iteration", "model": {"language_model": {"embedding":
    {"word_embeddings": {"weight"}, ...}, "encoder": {flat names}, "output_layer": {"weight"}}}, "rng_state", ...}."""
    import argparse

    root.mkdir()
    (root / "latest_checkpointed_iteration.txt").write_text("1000")
    for rank in range(ranks):
        folder = root / "iter_0001000" / f"mp_rank_{rank:02d}"
        folder.mkdir(parents=True)
        torch.save({
            "args": argparse.Namespace(num_layers=1, hidden_size=8, tensor_model_parallel_size=ranks),
            "checkpoint_version": 3.0, "iteration": 1000,
            "model": {"language_model": {
                "embedding": {"word_embeddings": {"weight": torch.zeros(50 // ranks, 8)},
                              "position_embeddings": {"weight": torch.zeros(16, 8)}},
                "encoder": {"layers.0.input_norm.weight": torch.ones(8),
                            "layers.0.self_attention.query_key_value.weight": torch.zeros(24 // ranks, 8),
                            "final_norm.weight": torch.ones(8)},
                "output_layer": {"weight": torch.zeros(50 // ranks, 8)}}},
            "rng_state": [{"torch_rng_state": torch.zeros(4, dtype=torch.uint8)}],
            "opt_param_scheduler": {"max_lr": 1e-4, "num_steps": 1000}}, folder / "model_optim_rng.pt")
    return root


def test_a_megatron_lm_checkpoint_is_read_whole_and_its_save_folder_points_at_it(tmp_path: Path) -> None:
    """Megatron-LM's model_optim_rng.pt nests model.language_model.{embedding, encoder, output_layer}. Only the
    encoder was read: convert wrote a model without its embeddings or output layer (a warning said so), and the
    plan left them out. The save folder itself said only "folder holds no weight file"."""
    from safetensors.torch import load_file

    root = _megatron_save(tmp_path / "gpt-345m", ranks=1)
    path = root / "iter_0001000" / "mp_rank_00" / "model_optim_rng.pt"
    result = run_cli("inspect", str(path), "--json")
    data = json.loads(result.stdout)
    assert data["nested_key"] == "model.language_model" and data["num_tensors"] == 6, data
    assert {"embedding.word_embeddings.weight", "encoder.layers.0.self_attention.query_key_value.weight",
            "output_layer.weight"} <= {t["name"] for t in data["tensors"]}
    assert any("a Megatron-LM checkpoint: model.language_model's embedding, encoder and output_layer are read "
               "together" in w for w in data["warnings"]), data["warnings"]
    assert not any("beside the state dict are not read" in w or "model-parallel ranks" in w
                   for w in data["warnings"]), data["warnings"]

    result = run_cli("convert", str(path), "-o", str(tmp_path / "gpt.safetensors"))
    assert result.exit_code == 0, result.stderr
    assert len(load_file(tmp_path / "gpt.safetensors")) == 6

    result = run_cli("inspect", str(root))
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "a Megatron-LM save folder: its latest_checkpointed_iteration.txt names " \
        f"iter_0001000/, whose weights are in {path}" in message, message


def test_one_rank_of_a_tensor_parallel_megatron_checkpoint_says_it_is_one(tmp_path: Path) -> None:
    """mp_rank_00/ of a checkpoint saved with tensor parallelism holds slices of the split weights: converted
    alone it is not the model, and nothing said so."""
    root = _megatron_save(tmp_path / "gpt-tp2", ranks=2)
    result = run_cli("convert", str(root / "iter_0001000" / "mp_rank_00"), "-o", str(tmp_path / "rank0"))
    assert result.exit_code == 0, result.stderr
    message = " ".join(result.stderr.split())
    assert "mp_rank_00 is one of 2 model-parallel ranks (mp_rank_00 to mp_rank_01)" in message, message
    assert "tools/checkpoint/convert.py" in message


def test_an_olmo_unsharded_checkpoint_folder_reads_its_model_pt(tmp_path: Path) -> None:
    """OLMo's trainer saves step1000-unsharded/ as model.pt, optim.pt and train.pt beside config.yaml: every command
    said "folder holds several weight files and no index (model.pt, optim.pt, train.pt); name one"."""
    folder = tmp_path / "step1000-unsharded"
    folder.mkdir()
    torch.save({"transformer.wte.weight": torch.zeros(50, 8), "transformer.blocks.0.ff_out.weight": torch.zeros(8, 16),
                "transformer.blocks.0.att_proj.weight": torch.zeros(24, 8)}, folder / "model.pt")
    torch.save({"state": {0: {"exp_avg": torch.zeros(50, 8)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
               folder / "optim.pt")
    torch.save({"global_step": 1000, "global_train_tokens_seen": 4_000_000, "rng": {"torch": torch.zeros(4)}},
               folder / "train.pt")
    (folder / "config.yaml").write_text("run_name: OLMo-1B\nmodel:\n  d_model: 8\n  n_layers: 1\n")
    result = run_cli("inspect", str(folder), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["num_tensors"] == 3 and [f["path"] for f in data["files"]] == ["model.pt"], data
    result = run_cli("convert", str(folder), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.stderr
    assert "optim.pt (training state, not part of the model)" in " ".join(result.stderr.split())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.yaml", "model.safetensors"]


def _llama_shards(folder: Path, shard_names: list[str]) -> dict[str, str]:
    """The one-layer Llama (bf16) split over `shard_names` in order (written as named); its weight_map."""
    from safetensors.torch import save_file

    tensors = {"model.embed_tokens.weight": torch.randn(128, 64), "lm_head.weight": torch.randn(128, 64),
               "model.norm.weight": torch.ones(64)}
    tensors |= {f"model.layers.0.{module}.weight": torch.randn(out, inp) for module, (out, inp) in _LINEARS.items()}
    names = sorted(tensors)
    per = -(-len(names) // len(shard_names))
    weight_map: dict[str, str] = {}
    for number, shard in enumerate(shard_names):
        part = {name: tensors[name].bfloat16() for name in names[number * per:(number + 1) * per]}
        (folder / shard).parent.mkdir(parents=True, exist_ok=True)
        if shard.endswith(".bin"):
            torch.save(part, folder / shard)
        else:
            save_file(part, str(folder / shard), metadata={"format": "pt"})
        weight_map |= {name: shard for name in part}
    (folder / "config.json").write_text(json.dumps(_llama_config(torch_dtype="bfloat16")))
    return weight_map


def test_converting_shards_an_index_keeps_in_a_subfolder_does_not_copy_them_too(tmp_path: Path) -> None:
    """An index whose weight_map names shards in a subfolder (`weights/model-00001-of-00002.safetensors`): convert
    wrote the new shards and copied the old ones beside them as "side files", the weights twice over."""
    folder = tmp_path / "repo"
    folder.mkdir()
    weight_map = _llama_shards(folder, ["weights/model-00001-of-00002.safetensors",
                                        "weights/model-00002-of-00002.safetensors"])
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    for command in (["convert", str(folder), "-o", str(tmp_path / "converted")],
                    ["shard", str(folder), "--max", "20KB", "-o", str(tmp_path / "sharded")]):
        result = run_cli(*command)
        assert result.exit_code == 0, result.stderr
        out = Path(command[-1])
        assert not (out / "weights").exists(), sorted(str(p.relative_to(out)) for p in out.rglob("*"))
        assert "weights/model-00001" not in result.stdout, result.stdout


def test_a_partly_downloaded_safetensors_index_names_the_complete_bin_index_beside_it(tmp_path: Path) -> None:
    """A repo with both model.safetensors.index.json and pytorch_model.bin.index.json, downloaded with only some
    .safetensors shards: the error named the missing shard, not the complete .bin set beside it."""
    folder = tmp_path / "repo"
    folder.mkdir()
    bins = _llama_shards(folder, ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"])
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": bins}))
    safetensors = _llama_shards(folder, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": safetensors}))
    (folder / "model-00002-of-00002.safetensors").unlink()
    result = run_cli("inspect", str(folder))
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "'model-00002-of-00002.safetensors' named by the index does not exist; " \
        "pytorch_model.bin.index.json beside it has all 2 of its shards here: name it" in message
    assert "use_safetensors=False" in message, message
    result = run_cli("inspect", str(folder / "pytorch_model.bin.index.json"), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["num_tensors"] == 10


def test_shards_without_their_index_are_named_as_such(tmp_path: Path) -> None:
    """model-00001-of-00002.safetensors and model-00002-of-00002.safetensors with no index (a download of the
    .safetensors files only): "several weight files and no index; name one", as if they were unrelated files."""
    folder = tmp_path / "repo"
    folder.mkdir()
    _llama_shards(folder, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
    result = run_cli("plan-devices", str(folder), "--gpu", "8GB")
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "folder holds the 2 shards of one checkpoint (model-00001-of-00002.safetensors " \
        "to model-00002-of-00002.safetensors) but not their index (model.safetensors.index.json" in message, message


def test_an_axolotl_adapter_folder_with_the_base_config_says_what_was_planned(tmp_path: Path) -> None:
    """axolotl (and unsloth, and Trainer with PEFT) save the base model's config.json beside adapter_model and
    adapter_config (here with modules_to_save). plan-devices built the full model from that config.json and said
    "only its own weights are planned, not the base model": the opposite of what it planned."""
    from safetensors.torch import save_file

    folder = tmp_path / "lora-out"
    folder.mkdir()
    tensors = {f"base_model.model.model.layers.0.self_attn.{m}.lora_{ab}.weight": torch.zeros(8, 64).bfloat16()
               if ab == "A" else torch.zeros(64, 8).bfloat16() for m in ("q_proj", "v_proj") for ab in "AB"}
    tensors |= {"base_model.model.model.embed_tokens.weight": torch.zeros(128, 64).bfloat16(),
                "base_model.model.lm_head.weight": torch.zeros(128, 64).bfloat16()}
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "base_model_name_or_path": "NousResearch/Llama-2-7b-hf", "r": 8, "lora_alpha": 16,
        "target_modules": ["q_proj", "v_proj"], "modules_to_save": ["embed_tokens", "lm_head"],
        "task_type": "CAUSAL_LM"}))
    (folder / "config.json").write_text(json.dumps(_llama_config(torch_dtype="bfloat16")))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 100, "log_history": []}))
    result = run_cli("plan-devices", str(folder), "--gpu", "8GB")
    assert result.exit_code == 0, result.stderr
    err, out = " ".join(result.stderr.split()), " ".join(result.stdout.split())
    assert "LlamaForCausalLM (built from config" in out and f"{_LLAMA_PARAMETERS / 1000:.1f}K parameters" in out, out
    assert "only its own weights are planned" not in err, err
    assert "a PEFT adapter (LoRA) beside a config.json: planned is the model that config describes (model_type " \
        "'llama', built at full size), as PeftModel.from_pretrained loads the adapter onto " \
        "NousResearch/Llama-2-7b-hf; add the adapter's own size" in err, err


def test_a_nemo2_checkpoint_folder_names_its_megatron_weights_and_the_export(tmp_path: Path) -> None:
    """NeMo 2.0 saves context/ (io.json, model.yaml, the tokenizer) beside weights/, a Megatron-Core torch_dist
    checkpoint (DCP shards, common.pt, metadata.json). The folder was called FSDP's sharded state dict, to merge
    with `accelerate merge-weights`, and then pointed at weights/ as a folder of weights."""
    import warnings

    import torch.distributed.checkpoint as dcp

    root = tmp_path / "llama3_8b_nemo2"
    (root / "context" / "nemo_tokenizer").mkdir(parents=True)
    (root / "context" / "io.json").write_text(json.dumps({"root": {"type": "ref", "key": "trainer_context_1"}}))
    (root / "context" / "model.yaml").write_text("_target_: nemo.collections.llm.gpt.model.llama.LlamaModel\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"module.decoder.layers.self_attention.linear_qkv.weight": torch.ones(1, 24, 8)},
                 checkpoint_id=str(root / "weights"))
    torch.save({"optimizer": {}}, root / "weights" / "common.pt")
    (root / "weights" / "metadata.json").write_text(json.dumps({"sharded_backend": "torch_dist",
                                                                 "common_backend": "torch"}))
    result = run_cli("inspect", str(root))
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "a NeMo 2.0 checkpoint: the model's weights are in weights/, a Megatron-Core " \
        "torch_dist checkpoint" in message and "llm.export_ckpt" in message, message
    assert "FSDP" not in message and "accelerate merge-weights" not in message and "point at one" not in message


def _torchao_llama(folder: Path) -> None:
    """A one-layer Llama as transformers saves a TorchAoConfig model to safetensors: each quantized Linear's
    Float8Tensor flattened into `_weight_qdata` (float8, the weight's shape) and `_weight_scale` (float32), the
    subclass named per weight in the header's metadata."""
    from safetensors.torch import save_file

    folder.mkdir()
    tensors = {"model.embed_tokens.weight": torch.randn(128, 64).bfloat16(),
               "lm_head.weight": torch.randn(128, 64).bfloat16()}
    for norm in ("model.norm", "model.layers.0.input_layernorm", "model.layers.0.post_attention_layernorm"):
        tensors[norm + ".weight"] = torch.ones(64).bfloat16()
    metadata = {"format": "pt"}
    for module, (out, inp) in _LINEARS.items():
        base = f"model.layers.0.{module}."
        tensors |= {base + "_weight_qdata": torch.zeros(out, inp).to(torch.float8_e4m3fn),
                    base + "_weight_scale": torch.ones(out, 1)}
        metadata[base + "weight"] = json.dumps({"_type": "Float8Tensor", "_data": {}})
    save_file(tensors, str(folder / "model.safetensors"), metadata=metadata)
    (folder / "config.json").write_text(json.dumps(_llama_config(torch_dtype="bfloat16", quantization_config={
        "quant_method": "torchao", "quant_type": {"default": {"_type": "Float8WeightOnlyConfig", "_data": {}}}})))


def test_a_torchao_safetensors_checkpoint_is_read_as_its_quantizer_stores_it(tmp_path: Path) -> None:
    """transformers' torchao safetensors: diff-keys --model-class suggested `--rename _weight_qdata=weight` as an
    error (the quantizer reads those names itself), inspect counted the scales as parameters, and convert --dtype
    bf16 cast the float32 scales the Float8Tensor is rebuilt with."""
    from safetensors import safe_open

    folder = tmp_path / "Llama-torchao-float8"
    _torchao_llama(folder)
    quantized = json.loads(run_cli("inspect", str(folder), "--json").stdout)["quantized"]
    assert quantized["parameters"] == _LLAMA_PARAMETERS and quantized["side_tensors"] == 7, quantized

    result = run_cli("diff-keys", str(folder), "--model-class", "LlamaForCausalLM", "--json")
    data = json.loads(result.stdout)
    rows = data["missing"] + data["unexpected"]
    assert rows and {(r["reason"], r["severity"]) for r in rows} == {("quantization", "info")}, rows
    assert not data["suggested_renames"] and "--rename" not in result.stdout

    result = run_cli("convert", str(folder), "-o", str(tmp_path / "bf16"), "--dtype", "bf16")
    assert result.exit_code == 0, result.stderr
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), "pt") as f:
        assert f.get_slice("model.layers.0.mlp.up_proj._weight_scale").get_dtype() == "F32"


@pytest.mark.parametrize("method", ["quanto", "hqq", "aqlm", "eetq"])
def test_diff_keys_against_the_model_reads_these_quantizers_names_as_theirs(tmp_path: Path, method: str) -> None:
    """HQQ's meta tensors (nbits, group_size, shape, ...) beside W_q, AQLM's codes / codebooks, quanto's
    weight._data / weight._scale, EETQ's weight_scales were "unknown: will not load" errors against the model
    their quantization_config builds."""

    folder = _quantized_llama(tmp_path / method, method)
    data = json.loads(run_cli("diff-keys", str(folder), "--model-class", "LlamaForCausalLM", "--json").stdout)
    rows = data["missing"] + data["unexpected"] + data["mismatched"]
    assert {(r["severity"]) for r in rows} == {"info"}, [r for r in rows if r["severity"] != "info"]


def test_exl2_shards_without_an_index_are_named_as_exllamav2_reads_them(tmp_path: Path) -> None:
    """ExLlamaV2 splits a large quant into output-00001-of-0000N.safetensors and writes no index (it reads every
    .safetensors of the folder): the folder was "several weight files and no index; name one"."""
    from safetensors.torch import load_file, save_file

    whole = tmp_path / "whole"
    _exl2_llama(whole)
    tensors = load_file(whole / "output.safetensors")
    folder = tmp_path / "Llama-3-70B-exl2"
    folder.mkdir()
    names = sorted(tensors)
    save_file({n: tensors[n] for n in names[:20]}, str(folder / "output-00001-of-00002.safetensors"))
    save_file({n: tensors[n] for n in names[20:]}, str(folder / "output-00002-of-00002.safetensors"))
    (folder / "config.json").write_text((whole / "config.json").read_text())
    result = run_cli("inspect", str(folder))
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "an ExLlamaV2 (EXL2) checkpoint in 2 shards (output-00001-of-00002." \
        "safetensors to output-00002-of-00002.safetensors), which exllamav2 reads without an index" in message, message


def test_planning_a_comfyui_fp8_checkpoint_says_its_weights_are_stored_in_fp8(tmp_path: Path) -> None:
    """flux1-dev-fp8.safetensors (ComfyUI's layout: model.diffusion_model.* in float8_e4m3fn, no config): planned
    at fp32 without a word, four times the file's size, as if its weights were stored so."""
    from safetensors.torch import save_file

    path = tmp_path / "flux1-dev-fp8.safetensors"
    save_file({"model.diffusion_model.double_blocks.0.img_attn.qkv.weight": torch.zeros(192, 64).to(
        torch.float8_e4m3fn), "model.diffusion_model.img_in.weight": torch.zeros(64, 64).to(torch.float8_e4m3fn)},
        str(path))
    result = run_cli("plan-devices", str(path), "--gpu", "1GB")
    assert result.exit_code == 0, result.stderr
    err = " ".join(result.stderr.split())
    assert "2 tensors (100% of the parameters) are stored in float8_e4m3fn: planned at fp32" in err, err
    assert "--dtype bf16 plans the usual compute dtype" in err


def test_a_trl_value_head_beside_the_language_model_is_named(tmp_path: Path) -> None:
    """TRL's AutoModelForCausalLMWithValueHead.save_pretrained writes the LM's weights plus v_head.summary.* in one
    pytorch_model.bin: inspect listed them as any weights, and nothing said from_pretrained of GPT2LMHeadModel drops
    the head a PPO / reward run trained."""
    folder = tmp_path / "ppo-gpt2"
    folder.mkdir()
    wte = torch.randn(100, 32)
    torch.save({"transformer.wte.weight": wte, "transformer.wpe.weight": torch.randn(16, 32),
                "transformer.ln_f.weight": torch.ones(32), "transformer.ln_f.bias": torch.zeros(32),
                "lm_head.weight": wte, "v_head.summary.weight": torch.randn(1, 32),
                "v_head.summary.bias": torch.zeros(1)}, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
                                                    "n_embd": 32, "n_head": 2, "n_layer": 0, "vocab_size": 100}))
    data = json.loads(run_cli("inspect", str(folder), "--json").stdout)
    assert any(w.startswith("a TRL value head (v_head.summary.bias, v_head.summary.weight) beside the language "
                            "model: TRL's AutoModelForCausalLMWithValueHead loads it") for w in data["warnings"]), data
