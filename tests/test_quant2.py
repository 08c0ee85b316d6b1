"""quant2: a quantization_config kept in a composite model's text config (LLaVA's `text_config`), read by every
command as from_pretrained reads it (`get_hf_quantizer`: the top level's, else `get_text_config(decoder=True)`'s)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import fp8_block_state_dict, json_report, run_cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FP8 = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}


def _llava(folder: Path, *, text_quantization: dict[str, Any] | None = None,
           top_quantization: dict[str, Any] | None = None) -> Path:
    """A tiny seeded LLaVA (Llama text model, CLIP vision tower); with `text_quantization`, its text model's
    Linear weights in FineGrainedFP8's layout (float8_e4m3fn, [128, 128] block scales as `weight_scale_inv`) and
    the settings in `text_config.quantization_config` only, as some composite checkpoints keep them."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    text = transformers.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=1,
                                    num_attention_heads=4, num_key_value_heads=4, vocab_size=256,
                                    tie_word_embeddings=False)
    vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=32, patch_size=16, projection_dim=32)
    config = transformers.LlavaConfig(text_config=text, vision_config=vision, image_token_index=255,
                                      vision_feature_layer=-1)
    state_dict = transformers.LlavaForConditionalGeneration(config).state_dict()
    stored = fp8_block_state_dict(state_dict, lambda name: text_quantization is not None and name.startswith(
        "model.language_model.layers.") and name.endswith("proj.weight"))
    saved = config.to_dict() | {"torch_dtype": "bfloat16"}
    saved["text_config"]["torch_dtype"] = "bfloat16"
    if text_quantization is not None:
        saved["text_config"]["quantization_config"] = text_quantization
    if top_quantization is not None:
        saved["quantization_config"] = top_quantization
    folder.mkdir()
    save_file(stored, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(saved))
    return folder


def _json(*args: str) -> dict[str, Any]:
    return json_report(*args)


def _transformers_reads(config: dict[str, Any]) -> Any:
    """What transformers' get_hf_quantizer reads from this config.json dict once built: the top level's
    quantization_config, or where it is unset its text config's (`get_text_config(decoder=True)`)."""
    from transformers import AutoConfig

    built = AutoConfig.for_model(**config)
    found = getattr(built, "quantization_config", None) or getattr(built.get_text_config(decoder=True),
                                                                   "quantization_config", None)
    return found.to_dict() if hasattr(found, "to_dict") else found


@pytest.mark.parametrize("config", [
    {"model_type": "llava", "text_config": {"model_type": "llama", "quantization_config": FP8}},
    {"model_type": "llava", "quantization_config": {"quant_method": "gptq", "bits": 4},
     "text_config": {"model_type": "llama", "quantization_config": FP8}},
    {"model_type": "qwen2_vl", "text_config": {"model_type": "qwen2_vl_text",
                                               "quantization_config": {"quant_method": "bitsandbytes",
                                                                       "load_in_4bit": True}}},
    {"model_type": "gemma3", "text_config": {"model_type": "gemma3_text", "quantization_config": FP8}},
    {"model_type": "mllama", "text_config": {"model_type": "mllama_text_model", "quantization_config": FP8}},
    {"model_type": "qwen2_5_omni", "thinker_config": {"model_type": "qwen2_5_omni_thinker", "text_config": {
        "model_type": "qwen2_5_omni_text", "quantization_config": FP8}}},
    {"model_type": "llava", "vision_config": {"model_type": "clip_vision_model", "quantization_config": FP8}},
    {"model_type": "llama", "quantization_config": FP8},
], ids=["llava-text", "llava-top-wins", "qwen2-vl-bnb", "gemma3", "mllama", "qwen2.5-omni-thinker",
        "llava-vision-not-read", "llama-top"])
def test_the_config_quantization_is_read_where_transformers_reads_it(config: dict[str, Any]) -> None:
    """The oracle is transformers itself: the config built from the dict, read as get_hf_quantizer reads it."""
    from weightdoctor.quantized import config_quantization_settings

    oracle = _transformers_reads(config)
    found = config_quantization_settings(config)
    if oracle is None:
        assert found is None
    else:
        assert found is not None and found["quant_method"] == oracle["quant_method"]
        assert {key: found[key] for key in found if key in oracle} == {
            key: oracle[key] for key in found if key in oracle}


def test_inspect_reads_fp8_settings_kept_in_the_text_config(tmp_path: Path) -> None:
    """LLaVA with FP8 in `text_config.quantization_config` only: inspect said `quantized: null` (it read the top
    level only); it now reports the fp8 quantization as it does for the same settings at the top level."""
    folder = _llava(tmp_path / "text", text_quantization=FP8)
    top = _llava(tmp_path / "top", text_quantization=FP8)
    config = json.loads((top / "config.json").read_text())
    config["quantization_config"] = config["text_config"].pop("quantization_config")
    (top / "config.json").write_text(json.dumps(config))
    report = _json("inspect", str(folder))
    assert report["quantized"] is not None and report["quantized"]["method"] == "fp8"
    assert report["quantized"]["side_tensors"] == 7
    assert report["quantized"] == _json("inspect", str(top))["quantized"]
    assert _json("inspect", str(_llava(tmp_path / "plain")))["quantized"] is None


def test_check_dtype_calls_text_config_quantization_by_design(tmp_path: Path) -> None:
    """check-dtype called the float8 weights and float32 scales beside a bfloat16 config "mixed storage" that
    from_pretrained casts to bfloat16; the FP8 quantizer keeps them, which it now says."""
    report = _json("check-dtype", str(_llava(tmp_path / "text", text_quantization=FP8)))
    agreement = report["config_agreement"]
    assert agreement["status"] == "quantized", agreement
    assert "quant_method=fp8" in agreement["message"]


def test_convert_keeps_fp8_scales_of_a_text_config_quantization_as_stored(tmp_path: Path) -> None:
    """convert --dtype fp16 cast the FP8 block scales (`weight_scale_inv`, float32) to float16, changing what
    every FP8 weight dequantizes to; with the settings read from `text_config` they are kept as stored."""
    from safetensors import safe_open

    folder = _llava(tmp_path / "text", text_quantization=FP8)
    out = tmp_path / "out"
    result = run_cli("convert", str(folder), "-o", str(out), "--dtype", "fp16")
    assert result.exit_code == 0, result.stderr or result.stdout
    assert "7 quantizer scale/state tensors kept as stored" in result.stderr + result.stdout
    with safe_open(str(out / "model.safetensors"), "pt") as written:
        scale = written.get_tensor("model.language_model.layers.0.self_attn.q_proj.weight_scale_inv")
        assert scale.dtype == torch.float32
        assert written.get_tensor("model.language_model.embed_tokens.weight").dtype == torch.float16


def test_plan_devices_plans_a_text_config_fp8_checkpoint_as_a_top_level_one(tmp_path: Path) -> None:
    """plan-devices planned it as a dense bf16 model without the quantizer's note, and refused --dtype fp8 ("this
    one is not" fine-grained FP8); it now plans it as the same settings at the top level."""
    folder = _llava(tmp_path / "text", text_quantization=FP8)
    top = _llava(tmp_path / "top", top_quantization=FP8, text_quantization=FP8)
    config = json.loads((top / "config.json").read_text())
    del config["text_config"]["quantization_config"]
    (top / "config.json").write_text(json.dumps(config))
    args = ("--gpu", "1GiB", "--model-class", "LlavaForConditionalGeneration")
    plan = _json("plan-devices", str(folder), *args)
    assert any(w.startswith("the config quantizes the weights (fp8)") for w in plan["warnings"]), plan["warnings"]
    fp8 = _json("plan-devices", str(folder), *args, "--dtype", "fp8")
    fp8_top = _json("plan-devices", str(top), *args, "--dtype", "fp8")
    assert fp8["dtype"] == "fp8"
    assert (fp8["weights_bytes"], fp8["num_params"]) == (fp8_top["weights_bytes"], fp8_top["num_params"])
    assert fp8["weights_bytes"] < _json("plan-devices", str(_llava(tmp_path / "plain")), *args)["weights_bytes"]
    # transformers as the oracle: the model built on the meta device from the config as it reads it (the text
    # config's quantization_config), prepared by its FP8 quantizer as on an FP8 GPU, and its memory footprint.
    import copy

    from transformers.quantizers.auto import AutoHfQuantizer

    config = transformers.AutoConfig.from_pretrained(str(folder))
    settings = config.get_text_config(decoder=True).quantization_config
    default = torch.get_default_dtype()
    try:  # as from_pretrained builds and prepares it: the default dtype set to the model's
        torch.set_default_dtype(torch.bfloat16)
        with torch.device("meta"):
            model = transformers.LlavaForConditionalGeneration(copy.deepcopy(config))
            AutoHfQuantizer.from_config(settings, pre_quantized=True).preprocess_model(
                model=model, dtype=torch.bfloat16, device_map="auto", checkpoint_files=None)
    finally:
        torch.set_default_dtype(default)
    assert fp8["weights_bytes"] + fp8["buffers_bytes"] == model.get_memory_footprint()
    assert fp8["num_params"] == sum(p.numel() for p in model.parameters())


def _tiny_llama_config(quantization: dict[str, Any]) -> Any:
    config = transformers.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=4, vocab_size=256,
                                      tie_word_embeddings=False, torch_dtype="bfloat16")
    config.quantization_config = quantization
    return config


def _save_quantized(folder: Path, state_dict: dict[str, Any], config: Any) -> Path:
    from safetensors.torch import save_file

    folder.mkdir()
    save_file(state_dict, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    return folder


def _from_pretrained_reports(folder: Path) -> dict[str, Any]:
    _, info = transformers.AutoModelForCausalLM.from_pretrained(str(folder), output_loading_info=True)
    return {key: sorted(info[key]) for key in ("missing_keys", "unexpected_keys", "mismatched_keys")}


def _packed_bitnet(folder: Path) -> Path:
    """BitNet's offline layout (BitLinear): each projection's ternary weight packed 4 values to a uint8 (a quarter
    of the rows), a bfloat16 `weight_scale` beside it; the rest in bfloat16."""
    config = _tiny_llama_config({"quant_method": "bitnet", "linear_class": "bitlinear",
                                 "quantization_mode": "offline"})
    torch.manual_seed(0)
    state_dict = transformers.LlamaForCausalLM(_tiny_llama_config({})).state_dict()
    packed: dict[str, Any] = {}
    for name, tensor in state_dict.items():
        if name.startswith("model.layers.") and name.endswith("proj.weight"):
            rows, cols = tensor.shape
            packed[name] = torch.randint(0, 255, (rows // 4, cols), dtype=torch.uint8)
            packed[name.removesuffix("weight") + "weight_scale"] = torch.ones(1, dtype=torch.bfloat16)
        else:
            packed[name] = tensor.to(torch.bfloat16).contiguous()
    return _save_quantized(folder, packed, config)


def _as_the_quantizer_holds_it(folder: Path, quantization: dict[str, Any]) -> Path:
    """A checkpoint of the tensors the quantizer's own modules hold (its preprocess_model on a meta Llama, as
    from_pretrained runs it), seeded: what a save of a model quantized by it stores."""
    import copy

    from transformers.quantizers.auto import get_hf_quantizer

    config = _tiny_llama_config(quantization)
    quantizer, _, device_map = get_hf_quantizer(copy.deepcopy(config), None, None, True, {})
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(copy.deepcopy(config))
    quantizer.preprocess_model(model=model, dtype=quantizer.update_dtype(torch.bfloat16), device_map=device_map,
                               checkpoint_files=None)
    torch.manual_seed(0)
    state_dict = {name: torch.randn(tensor.shape).to(torch.bfloat16) if tensor.dtype.is_floating_point
                  else torch.zeros(tensor.shape, dtype=tensor.dtype) for name, tensor in model.state_dict().items()}
    return _save_quantized(folder, state_dict, config)


def _diff_keys(folder: Path) -> dict[str, Any]:
    return _json("diff-keys", str(folder), "--model-class", "AutoModelForCausalLM")


def test_diff_keys_compares_a_packed_bitnet_checkpoint_as_its_working_quantizer_builds_the_model(
        tmp_path: Path) -> None:
    """BitNet's quantizer works on a CPU and swaps every Linear for a BitLinear holding the packed uint8 weight and
    its weight_scale: from_pretrained reports nothing, where diff-keys compared against the unquantized model and
    listed 7 mismatched weights and 7 unexpected scales."""
    folder = _packed_bitnet(tmp_path / "bitnet")
    assert _from_pretrained_reports(folder) == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    report = _diff_keys(folder)
    assert (report["missing"], report["unexpected"], report["mismatched"]) == ([], [], [])
    assert report["matched"] == report["total_a"] == report["total_b"] == 19
    assert report["dtype_differences"] == []
    assert any("bitnet quantization, whose quantizer loads it on this machine as it is stored" in note
               and "BitLinear" in note for note in report["notes"]), report["notes"]


@pytest.mark.parametrize("quantization", [{"quant_method": "gemma", "num_bits": 4},
                                          {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                           "quantization_mode": "offline"}], ids=["gemma", "bitnet-autobitlinear"])
def test_diff_keys_agrees_with_from_pretrained_where_the_quantizer_works_here(
        tmp_path: Path, quantization: dict[str, Any]) -> None:
    """The rule is general: any pre-quantized checkpoint whose quantizer accepts this machine is compared with the
    model its preprocess_model builds (Gemma's QuantizedLinear: weight, weight_scale, activation scales)."""
    folder = _as_the_quantizer_holds_it(tmp_path / "q", quantization)
    oracle = _from_pretrained_reports(folder)
    report = _diff_keys(folder)
    found = {"missing_keys": sorted(report["missing"]),
             "unexpected_keys": sorted(row["name"] for row in report["unexpected"]),
             "mismatched_keys": sorted(row["name"] for row in report["mismatched"])}
    assert found == {key: sorted(oracle[key]) for key in oracle} == {
        "missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    assert report["matched"] == report["total_b"]


def test_diff_keys_says_from_pretrained_fails_for_sinq_without_its_package(tmp_path: Path) -> None:
    """transformers 5.25's `is_sinq_available()` returns a tuple, always truthy, so SINQ's quantizer accepts a
    machine without the `sinq` package and from_pretrained raises "No module named 'sinq'" as it prepares the
    model; diff-keys gave no note. It now says so (checked against from_pretrained where sinq is missing)."""
    import importlib.util

    if importlib.util.find_spec("sinq") is not None:
        pytest.skip("the sinq package is installed here")
    config = _tiny_llama_config({"quant_method": "sinq", "nbits": 4, "group_size": 64})
    torch.manual_seed(0)
    state_dict = {name: tensor.to(torch.bfloat16).contiguous()
                  for name, tensor in transformers.LlamaForCausalLM(_tiny_llama_config({})).state_dict().items()}
    folder = _save_quantized(tmp_path / "sinq", state_dict, config)
    with pytest.raises(ModuleNotFoundError, match="sinq"):
        transformers.AutoModelForCausalLM.from_pretrained(str(folder))
    notes = " ".join(_diff_keys(folder)["notes"])
    assert "from_pretrained raises ModuleNotFoundError here before it loads a weight" in notes, notes
    assert "No module named 'sinq'" in notes


def test_plan_devices_sizes_a_text_config_bitsandbytes_checkpoint_with_its_quantizer_headroom(tmp_path: Path) -> None:
    """bitsandbytes 4-bit in `text_config`: plan-devices planned a dense bf16 model (567,872 bytes) on the whole
    GPU; it now plans int4 within the budget the quantizer's own `adjust_max_memory` leaves, as at the top level."""
    from transformers.quantizers.auto import AutoHfQuantizer

    settings = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    args = ("--gpu", "1GiB", "--model-class", "LlavaForConditionalGeneration")
    text = _json("plan-devices", str(_llava(tmp_path / "text", text_quantization=settings)), *args)
    top = _json("plan-devices", str(_llava(tmp_path / "top", top_quantization=settings)), *args)
    assert text["dtype"] == "int4"
    assert any("bitsandbytes 4-bit" in w for w in text["warnings"]), text["warnings"]
    assert (text["weights_bytes"], text["devices"]) == (top["weights_bytes"], top["devices"])
    config = transformers.AutoConfig.from_pretrained(str(tmp_path / "text"))
    quantizer = AutoHfQuantizer.from_config(config.get_text_config(decoder=True).quantization_config,
                                            pre_quantized=True)
    assert text["devices"][0]["budget_bytes"] == int(quantizer.adjust_max_memory({0: 2**30})[0])
