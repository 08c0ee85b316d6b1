"""review56: fixlist25's packed-weights refusal, single-file family names and side-tensor writers on real layouts
(AutoGPTQ's / AutoAWQ's settings files beside a config.json without quantization_config, a model's own float
`qweight`, Flux LoRAs in ComfyUI's and XLabs' layouts, ComfyUI saves of LTX-Video / Wan / AuraFlow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from fixtures.build import build_bert
from tests.helpers import json_report, run_cli, run_json, write_quantized_bert

QUANTIZED = ("attention.self.query", "attention.self.value", "intermediate.dense")


def _gptq_bert(folder: Path) -> Path:
    """A seeded tiny BERT with three layers' weights GPTQ-packed (qweight / qzeros / scales / g_idx), as AutoGPTQ
    saved TheBloke's 2023 repos: config.json with no quantization_config."""
    return write_quantized_bert(folder, QUANTIZED)


def _line(result: Any) -> str:
    return " ".join(result.stderr.split())


# 1. the settings file beside ------------------------------------------------------------------------------------

def test_autogptq_quantize_config_json_is_named_with_the_quantization_config_it_gives(tmp_path: Path) -> None:
    """TheBloke's older GPTQ repos keep their settings in quantize_config.json (AutoGPTQ's from_quantized reads it),
    config.json none: the refusal said "quant_method gptq or awq, bits, group_size" as if they were unknown."""
    transformers = pytest.importorskip("transformers")
    folder = _gptq_bert(tmp_path / "thebloke")
    (folder / "quantize_config.json").write_text(json.dumps(
        {"bits": 4, "group_size": 128, "damp_percent": 0.01, "desc_act": False, "sym": True, "true_sequential": True,
         "model_name_or_path": None, "model_file_base_name": "model"}))
    # from_pretrained does not read quantize_config.json: the packed layers are still missing and unexpected keys.
    _, info = transformers.BertForSequenceClassification.from_pretrained(str(folder), output_loading_info=True)
    assert "bert.encoder.layer.0.attention.self.query.qweight" in info["unexpected_keys"]
    result = run_cli("plan-devices", str(folder), "--gpu", "1GB", "--model-class", "BertForSequenceClassification")
    assert result.exit_code == 2 and not result.stdout
    line = _line(result)
    assert ("quantize_config.json beside it holds the GPTQ settings, which AutoGPTQ's / GPTQModel's from_quantized "
            "reads and from_pretrained does not: add them to config.json as its quantization_config "
            '({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": false, "sym": true})') in line, line
    assert "gptq or awq" not in line
    inspected = json_report("inspect", str(folder))
    assert any("quantize_config.json beside it holds the GPTQ settings" in w for w in inspected["warnings"])


def test_autoawq_quant_config_json_is_named_with_transformers_keys(tmp_path: Path) -> None:
    folder = _gptq_bert(tmp_path / "awq")
    (folder / "quant_config.json").write_text(json.dumps(
        {"zero_point": True, "q_group_size": 128, "w_bit": 4, "version": "GEMM"}))
    result = run_cli("plan-devices", str(folder), "--gpu", "1GB", "--model-class", "BertForSequenceClassification")
    assert result.exit_code == 2
    assert ("quant_config.json beside it holds the AWQ settings, which AutoAWQ's from_quantized reads and "
            'from_pretrained does not: add them to config.json as its quantization_config ({"quant_method": "awq", '
            '"bits": 4, "group_size": 128, "zero_point": true, "version": "GEMM"})') in _line(result), _line(result)


# 2. no packed weights, no refusal -------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["float", "alone"])
def test_a_qweight_that_is_not_packed_is_planned(tmp_path: Path, how: str) -> None:
    """A model's own float `qweight` (or an int32 one with no qzeros or scales beside) was refused: "1 layer(s) hold
    GPTQ/AWQ-packed weights (encoder.0.qweight, beside its qzeros, scales)", which the file does not hold."""
    torch.manual_seed(0)
    tensors = {"encoder.0.weight": torch.randn(8, 8),
               "encoder.0.qweight": torch.randn(8, 8) if how == "float" else torch.zeros(1, 8, dtype=torch.int32)}
    folder = tmp_path / how
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "custom"}))
    code, planned = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and not any("packed" in w for w in planned["warnings"]), planned
    assert planned["dtype"] == "fp32"
    inspected = json_report("inspect", str(folder))
    assert not any("GPTQ/AWQ-packed" in w for w in inspected["warnings"]), inspected["warnings"]


# 3. single-file families ----------------------------------------------------------------------------------------

def _file(path: Path, names: dict[str, tuple[int, ...]]) -> Path:
    torch.manual_seed(0)
    save_file({name: torch.randn(*shape) for name, shape in names.items()}, str(path))
    return path


def _shard_warning(tmp_path: Path, path: Path) -> str:
    code, data = run_json("shard", str(path), "-o", str(tmp_path / "out"), "--max", "100B", "--dry-run")
    assert code in (0, 1), data
    return next(w for w in data["warnings"] if "is loaded from one file" in w)


@pytest.mark.parametrize("names", [
    {f"diffusion_model.{b}.lora_{m}.weight": (4, 4) for b in ("double_blocks.0.img_attn.qkv", "single_blocks.0.linear1")
     for m in "AB"},
    {f"{b}.processor.proj_lora{n}.{m}.weight": (4, 4) for b, n in (("double_blocks.0", "1"), ("single_blocks.0", ""))
     for m in ("down", "up")},
], ids=["comfyui", "xlabs"])
def test_a_flux_lora_is_not_called_a_flux_checkpoint(tmp_path: Path, names: dict[str, tuple[int, ...]]) -> None:
    """A Flux LoRA under `diffusion_model.` was "a single-file Flux checkpoint" (diffusers' from_single_file), XLabs'
    "an original-layout Flux checkpoint"; plan-devices planned its few KB as the model."""
    path = _file(tmp_path / "lora.safetensors", names)
    warning = _shard_warning(tmp_path, path)
    assert warning.startswith("a LoRA in a diffusion transformer's original layout is loaded from one file "
                              "(ComfyUI's LoRA loaders, diffusers' load_lora_weights)"), warning
    planned = json_report("plan-devices", str(path), "--gpu", "1GB")
    assert any(w.startswith("this is a LoRA in a diffusion transformer's original layout: only its own weights are "
                            "planned") for w in planned["warnings"]), planned["warnings"]


@pytest.mark.parametrize("names", [
    {"model.diffusion_model.transformer_blocks.0.attn1.to_q.weight": (8, 8),
     "model.diffusion_model.patchify_proj.weight": (8, 8), "vae.decoder.conv_in.conv.weight": (4, 4, 3, 3, 3)},
    {"model.diffusion_model.blocks.0.self_attn.q.weight": (8, 8),
     "model.diffusion_model.patch_embedding.weight": (8, 4, 1, 2, 2)},
    {"model.diffusion_model.double_layers.0.attn.w1q.weight": (8, 8),
     "model.diffusion_model.single_layers.0.attn.w1q.weight": (8, 8)},
], ids=["ltx-video", "wan-comfyui", "auraflow-comfyui"])
def test_a_diffusion_transformer_under_model_diffusion_model_is_not_stable_diffusion(
        tmp_path: Path, names: dict[str, tuple[int, ...]]) -> None:
    """LTX-Video's release and ComfyUI's saves of Wan or AuraFlow keep their transformer under
    `model.diffusion_model.`: each was "a single-file Stable Diffusion checkpoint" (AUTOMATIC1111, ...)."""
    warning = _shard_warning(tmp_path, _file(tmp_path / "model.safetensors", names))
    assert warning.startswith("a single-file diffusion checkpoint is loaded from one file (ComfyUI; diffusers' "
                              "from_single_file for the families it converts)"), warning


@pytest.mark.parametrize(("embedder", "family"), [("cond_stage_model.transformer.x.weight", "Stable Diffusion"),
                                                 ("conditioner.embedders.1.model.x.weight", "SDXL")])
def test_stable_diffusion_unets_are_named_as_before(tmp_path: Path, embedder: str, family: str) -> None:
    names = {"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3), embedder: (8, 8),
             "first_stage_model.encoder.conv_in.weight": (8, 3, 3, 3)}
    warning = _shard_warning(tmp_path, _file(tmp_path / "sd.safetensors", names))
    assert warning.startswith(f"a single-file {family} checkpoint is loaded from one file (AUTOMATIC1111"), warning


# 4. which quantizer writes a side tensor ------------------------------------------------------------------------

def test_side_tensor_writers_name_the_quantizers_that_write_them(tmp_path: Path) -> None:
    """`g_idx` was "written by GPTQ or AWQ" (AutoAWQ writes none); `weight_scale` "an FP8 quantizer", which
    compressed-tensors' int4 pack-quantized layers (weight_packed beside weight_scale) are not."""
    diffed = json_report("diff-keys", str(_gptq_bert(tmp_path / "gptq")), "--model-class",
                         "BertForSequenceClassification")
    details = {i["name"].rsplit(".", 1)[1]: i["detail"] for i in diffed["unexpected"]}
    assert details["g_idx"].startswith("written by GPTQ (its group index per input column: AWQ writes none)")
    assert details["qzeros"].startswith("written by GPTQ or AWQ beside")
    from weightdoctor.diff_keys import side_tensor_detail

    assert side_tensor_detail("model.layers.0.mlp.down_proj.weight_scale", "unexpected").startswith(
        "written by compressed-tensors (llm-compressor, int4 or FP8) or an FP8 quantizer")


# 5. the KV cache on GPUs of different sizes ---------------------------------------------------------------------

def _tiny_llama(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "intermediate_size": 688,
        "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 8, "vocab_size": 1000,
        "torch_dtype": "float16", "max_position_embeddings": 2048, "rms_norm_eps": 1e-5}))
    return folder


def test_a_kv_cache_the_gpus_hold_in_all_but_one_gpu_not_its_share_does_not_fit(tmp_path: Path) -> None:
    """`--gpu 10MB --gpu 40MB`: 'auto' puts 4 of the 8 layers on each GPU, and their caches stay there; the cache
    (16.78 MB) "fits in the 36.32 MB the GPUs have left in all" while cuda:0 has 3.16 MB for its 8.39 MB half."""
    folder = _tiny_llama(tmp_path / "llama")
    args = ("plan-devices", str(folder), "--gpu", "10MB", "--gpu", "40MB", "--dtype", "fp16", "--kv-cache")
    code, planned = run_json(*args)
    on_first = [m for m, d in planned["device_map"].items() if m.startswith("model.layers.") and d == 0]
    assert code == 0 and len(on_first) == 4, planned["device_map"]
    kv = planned["kv_cache"]
    assert kv["total_bytes"] <= kv["gpu_free_bytes"] and kv["fits_on_gpus"] is False, kv
    assert ("KV cache: cuda:0 runs 4 of the 8 layers, so it holds 8.39 MB of the 16.78 MB cache, with 3.16 MB "
            "left: it does not fit there") in " ".join(planned["warnings"]), planned["warnings"]
    text = " ".join(run_cli(*args).stdout.split())
    assert ("does not fit on the GPUs: they have 36.32 MB left in all, but each layer's share stays on that layer's "
            "GPU, and one has too little left") in text, text
    code, even = run_json("plan-devices", str(folder), "--gpu", "40MB", "--gpu", "40MB", "--dtype", "fp16",
                          "--kv-cache")
    assert even["kv_cache"]["fits_on_gpus"] is True and not any(w.startswith("KV cache") for w in even["warnings"])


# 6. the cost of telling an EXL2 checkpoint's quant_method ---------------------------------------------------------

def test_reading_an_exl2_checkpoint_does_not_import_transformers(tmp_path: Path) -> None:
    """fixlist25's line for quantized tensors beside a quant_method transformers lacks imported transformers to ask
    (5.8 s measured) in every `inspect` of an EXL2 repo, which read in 0.56 s before; the installed version's list
    (test_review50 holds it to transformers' own) answers without it."""
    import subprocess
    import sys
    from importlib import metadata

    if not metadata.version("transformers").startswith("5.25."):
        pytest.skip("the listed quantizers are transformers 5.25's")
    folder = tmp_path / "exl2"
    folder.mkdir()
    save_file({"model.layers.0.mlp.q_weight": torch.zeros(4, 8, dtype=torch.int32),
               "model.layers.0.mlp.q_invperm": torch.zeros(32, dtype=torch.int16),
               "model.layers.0.mlp.q_scale": torch.zeros(1, 8, dtype=torch.int32),
               "model.embed_tokens.weight": torch.zeros(4, 4, dtype=torch.float16)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": {
        "quant_method": "exl2", "bits": 4.0}}))
    code = ("import sys; from weightdoctor.checkpoint import open_checkpoint; "
            f"c = open_checkpoint({str(folder)!r}); print(' | '.join(w for w in c.warnings if 'exl2' in w)); "
            "print('transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, check=True)
    said, imported = done.stdout.strip().splitlines()
    assert "quant_method 'exl2' is not one transformers has a quantizer for" in said, said
    assert imported == "False", done.stdout


def test_compressed_tensors_settings_under_their_older_name_are_named(tmp_path: Path) -> None:
    """compressed-tensors' older saves keep their settings in config.json's `compression_config`: the refusal said
    "config.json has no quantization_config ... the quantizer's quantization_config (quant_method compressed-tensors,
    bits, group_size)", as if there were none to copy."""
    transformers = pytest.importorskip("transformers")
    model = build_bert()
    tensors: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        if name.endswith(".weight") and any(f".{m}.weight" in name for m in QUANTIZED):
            rows, cols = value.shape
            tensors[name + "_packed"] = torch.zeros(rows, cols // 8, dtype=torch.int32)
            tensors[name + "_scale"] = torch.ones(rows, cols // 16, dtype=torch.float16)
            tensors[name + "_shape"] = torch.tensor([rows, cols])
        else:
            tensors[name] = value.contiguous()
    folder = tmp_path / "ct"
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"))
    config = model.config.to_dict()
    config["compression_config"] = {"quant_method": "sparseml", "format": "pack-quantized", "config_groups": {}}
    (folder / "config.json").write_text(json.dumps(config))
    _, info = transformers.BertForSequenceClassification.from_pretrained(str(folder), output_loading_info=True)
    assert "bert.encoder.layer.0.attention.self.query.weight_packed" in info["unexpected_keys"]  # not read
    result = run_cli("plan-devices", str(folder), "--gpu", "1GB", "--model-class", "BertForSequenceClassification")
    assert result.exit_code == 2
    assert ("its settings are in config.json's compression_config, compressed-tensors' older name, which "
            "transformers does not read: rename it quantization_config, its quant_method 'sparseml' made "
            "'compressed-tensors' to load them quantized") in _line(result), _line(result)


def test_offloaded_weights_are_said_to_run_on_the_lowest_numbered_gpu_of_the_map(tmp_path: Path) -> None:
    """accelerate runs offloaded modules on the map's lowest-numbered GPU (dispatch_model's main_device): with
    cuda:0 too small for any module the sentence said they were "copied to cuda:0", which holds nothing."""
    folder = _tiny_llama(tmp_path / "llama")
    args = ("plan-devices", str(folder), "--gpu", "100KB", "--gpu", "5MB", "--cpu", "1GB", "--dtype", "fp16",
            "--kv-cache", "--seq-len", "64")
    code, planned = run_json(*args)
    assert 0 not in planned["device_map"].values() and "cpu" in planned["device_map"].values(), planned
    text = " ".join(run_cli(*args).stdout.split())
    assert "10.01 MB of weights are offloaded and copied to cuda:1 as each module runs" in text, text


def test_a_hand_written_maps_unsized_gpu_is_not_said_to_lack_room_for_its_cache(tmp_path: Path) -> None:
    """A --map placing layers on cuda:1, which no --gpu sizes (its own error says so), got no room at all: "cuda:1
    ... with 0 B left: it does not fit there" is not known."""
    folder = _tiny_llama(tmp_path / "llama")
    mapping = {"model.embed_tokens": 0, "model.norm": 0, "model.rotary_emb": 0, "lm_head": 0,
               **{f"model.layers.{i}": 0 if i < 4 else 1 for i in range(8)}}
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    code, planned = run_json("plan-devices", str(folder), "--gpu", "40MB", "--dtype", "fp16", "--kv-cache",
                             "--map", str(tmp_path / "map.json"))
    assert any("cuda:1" in json.dumps(f) for f in planned["findings"]), planned["findings"]
    assert not any(w.startswith("KV cache: cuda:1") for w in planned["warnings"]), planned["warnings"]


def test_a_models_own_scales_are_not_said_to_be_a_quantizers(tmp_path: Path) -> None:
    """A plain model's float `norm.scales` / `attn.scale` that B lacks was "written by a quantizer (GPTQ, AWQ, ...)
    beside its quantized weight ... add that quantizer's quantization_config": there is no quantized weight. GPTQ's
    own `scales`, beside its `qweight`, still names its writers."""
    torch.manual_seed(0)
    save_file({"blocks.0.attn.weight": torch.randn(8, 8), "blocks.0.norm.scales": torch.ones(8),
               "blocks.0.attn.scale": torch.ones(1)}, str(tmp_path / "a.safetensors"))
    save_file({"blocks.0.attn.weight": torch.randn(8, 8)}, str(tmp_path / "b.safetensors"))
    diffed = json_report("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"))
    details = {i["name"]: i["detail"] for i in diffed["unexpected"]}
    assert set(details) == {"blocks.0.norm.scales", "blocks.0.attn.scale"}, details
    for detail in details.values():
        assert detail.startswith("named as quantizers name their scales and zeros, but no quantized weight of its "
                                 "layer is beside it") and "written by" not in detail, detail
    gptq = json_report("diff-keys", str(_gptq_bert(tmp_path / "gptq")), "--model-class",
                       "BertForSequenceClassification")
    scales = [i["detail"] for i in gptq["unexpected"] if i["name"].endswith(".scales")]
    assert scales and all(d.startswith("written by a quantizer (GPTQ, AWQ, mlx-lm") for d in scales), scales


def test_offloaded_weights_run_on_the_lowest_numbered_gpu_whatever_the_maps_order(tmp_path: Path) -> None:
    """A hand-written map whose first entry is on cuda:1: dispatch_model's main_device is `list(set of GPUs)[0]`,
    cuda:0, where the offloaded layers run and keep their cache (it was said to be the map's first, cuda:1)."""
    folder = _tiny_llama(tmp_path / "llama")
    mapping = {"model.embed_tokens": 1, **{f"model.layers.{i}": 0 if i < 4 else "cpu" for i in range(8)},
               "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    result = run_cli("plan-devices", str(folder), "--gpu", "40MB", "--gpu", "40MB", "--cpu", "1GB", "--dtype", "fp16",
                     "--kv-cache", "--seq-len", "64", "--map", str(tmp_path / "map.json"))
    text = " ".join(result.stdout.split())
    assert "of weights are offloaded and copied to cuda:0 as each module runs" in text, text
