"""plan-devices on quantized checkpoints, round 4: config-only HIGGS and fbgemm_fp8 sources.

Found: a config.json alone of a HIGGS (2 / 3-bit) or fbgemm_fp8 model was planned dense at the floating dtype, "an
upper bound ... its config alone does not give their sizes", and a 4-bit HIGGS one at half a byte a weight with its
scales and tables left out, though transformers makes those quantizers' layers from the config alone
(`replace_with_higgs_linear`, `replace_with_fbgemm_fp8_linear`) and from_pretrained's planner counts what they hold:
a 2-bit HIGGS plan 3.3x the bytes from_pretrained places, an fbgemm_fp8 one 1.6x, and maps that offload what
from_pretrained keeps on the GPUs.

The oracles are transformers' own: the meta model prepared by its HIGGS / fbgemm_fp8 quantizer's `preprocess_model`
inside the model's default dtype, as from_pretrained prepares it (fbgemm_fp8's kernel lookup, which needs fbgemm_gpu,
stubbed: it is only fetched, not run), then `compute_module_sizes` and `_get_device_map`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import run_json
from tests.test_plan_quantized2 import (
    _from_pretrained_map,
    _meta_model,
    _sizes,
    plan_matches_map,
    prepared_by_quantizer,
)
from tests.test_third_party_layouts27 import CONFIG

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def _config_only(folder: Path, config: dict[str, Any]) -> Path:
    """A folder holding config.json alone (a repo whose weights were not fetched, `--config-only` downloads)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _prepared(config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> torch.nn.Module:
    """The meta model as from_pretrained prepares it before it makes its map: transformers' quantizer for the config
    (pre-quantized) swaps in its layers inside the model's default dtype (`local_torch_dtype`)."""
    from transformers.integrations import fbgemm_fp8

    # only looked up by replace_with_fbgemm_fp8_linear (for the forward), never called while the map is made
    monkeypatch.setattr(fbgemm_fp8, "get_quantize_fp8_per_row", lambda: None)
    return prepared_by_quantizer(config, _DTYPES)


def _module_bytes_match(data: dict[str, Any], sizes: dict[str, int]) -> None:
    """Each range of modules the report places holds the bytes transformers' planner counts for those modules."""
    ranges = [r for device in data["devices"] for r in device["ranges"]]
    assert ranges
    for placed in ranges:
        assert placed["bytes"] == sum(sizes[module] for module in placed["modules"]), placed


_HIGGS = {"quant_method": "higgs", "p": 2, "group_size": 64, "hadamard_size": 64}


@pytest.mark.parametrize(("bits", "skip"), [(2, ["lm_head"]), (3, ["lm_head"]), (4, ["lm_head"]), (2, None),
                                            (3, ["lm_head", "model.layers.1.mlp"])],
                         ids=["2bit", "3bit", "4bit", "2bit-default-skip", "3bit-layer-kept"])
def test_a_config_only_higgs_source_is_planned_as_its_quantizer_builds_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bits: int, skip: list[str] | None) -> None:
    """HiggsLinear's int16 weight [out x bits / 16, in], its scales [out, in / group] and two tables at fp16,
    for every Linear the quantizer converts: the plan's bytes, per-module bytes and map are `_get_device_map`'s over
    the model HIGGS' own preprocess makes. It was planned dense (2 / 3-bit), an upper bound, or at 0.5 byte a weight
    without the scales and tables (4-bit)."""
    quantization = _HIGGS | {"bits": bits} | ({"modules_to_not_convert": skip} if skip is not None else {})
    config = CONFIG | {"quantization_config": quantization}
    folder = _config_only(tmp_path / "higgs", config)
    model = _prepared(config, monkeypatch)
    sizes = _sizes(model)
    dense = _sizes(_meta_model(config))[""]
    assert sizes[""] < dense  # the layout does change what is planned
    budgets: dict[int | str, int] = {0: int(sizes[""] * 0.4), 1: int(sizes[""] * 0.4), "cpu": 10 * dense}
    expected = _from_pretrained_map(model, budgets)
    code, data = plan_matches_map(folder, budgets, expected, sizes)
    _module_bytes_match(data, sizes)
    # its quantizer refuses a map with the CPU in it (said as a finding, as with the weights beside the config)
    assert "cpu" in expected.values() and code == 1, data
    assert [f["code"] for f in data["findings"]] == ["quantizer-refuses-offload"], data["findings"]
    said = " ".join(" ".join(data["warnings"]).split())
    assert "upper bound" not in said and "scales and zero points not counted" not in said, said
    converted = sum(1 for module in model.modules() if type(module).__name__ == "HiggsLinear")
    assert (f"the {converted} quantized Linear layers of 15 are sized from its config as transformers' HiggsLinear "
            "holds them") in said, said


def test_a_config_only_higgs_source_the_quantizer_cannot_build_stays_an_upper_bound(tmp_path: Path) -> None:
    """A group size (HiggsConfig's default, 256) that does not divide the layers' 64 inputs (HiggsLinear asserts it:
    from_pretrained raises): no layer is sized from the config, the plan stays the dense upper bound it was."""
    config = CONFIG | {"quantization_config": _HIGGS | {"bits": 2, "group_size": 256}}
    folder = _config_only(tmp_path / "higgs", config)
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and data["weights_bytes"] + data["buffers_bytes"] == _sizes(_meta_model(config))[""], data
    said = " ".join(" ".join(data["warnings"]).split())
    assert said.endswith("over-sizes the Linear weights its quantizer keeps packed; the plan is an upper bound"), said
    assert "sized from its config" not in said, said


@pytest.mark.parametrize("skip", [["lm_head"], ["lm_head", "model.layers.0.self_attn"], None],
                         ids=["lm_head", "attention-kept", "default-skip"])
def test_a_config_only_fbgemm_fp8_source_is_planned_as_its_quantizer_builds_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skip: list[str] | None) -> None:
    """FbgemmFp8Linear's float8 weight, float32 weight_scale [out, 1], input_scale_ub [1] and float32 bias, for
    every Linear the quantizer converts (attention biases on): the plan is `_get_device_map`'s over the model
    fbgemm_fp8's own preprocess makes. It was planned dense at bf16, "an upper bound"."""
    quantization = {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0}
    quantization |= {"modules_to_not_convert": skip} if skip is not None else {}
    config = CONFIG | {"torch_dtype": "bfloat16", "attention_bias": True, "quantization_config": quantization}
    folder = _config_only(tmp_path / "fbgemm", config)
    model = _prepared(config, monkeypatch)
    sizes = _sizes(model)
    dense = _sizes(_meta_model(config))[""]
    assert sizes[""] < dense
    budgets: dict[int | str, int] = {0: int(sizes[""] * 0.4), 1: int(sizes[""] * 0.4), "cpu": 10 * dense}
    expected = _from_pretrained_map(model, budgets)
    code, data = plan_matches_map(folder, budgets, expected, sizes)
    _module_bytes_match(data, sizes)
    assert code == 0 and "cpu" in expected.values() and data["findings"] == [], data
    said = " ".join(" ".join(data["warnings"]).split())
    assert "upper bound" not in said, said
    converted = sum(1 for module in model.modules() if type(module).__name__ == "FbgemmFp8Linear")
    assert (f"the {converted} quantized Linear layers of 15 are sized from its config as transformers' "
            "FbgemmFp8Linear holds them") in said, said


_MOE = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 64,
        "intermediate_size": 128, "moe_intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2, "vocab_size": 256,
        "max_position_embeddings": 64, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
_INT4 = {"_type": "Int4WeightOnlyConfig", "_version": 2, "_data": {}}
_INT8 = {"_type": "Int8WeightOnlyConfig", "_version": 2, "_data": {}}


def _fqn_quantizer(monkeypatch: pytest.MonkeyPatch, config: dict[str, Any]) -> Any:
    """transformers' own TorchAoHfQuantizer for a (Module)FqnToConfig, pre-quantized, as from_pretrained makes it:
    torchao is not installed, so `torchao.quantization` is stood in for by FqnToConfig (a class of that name
    holding the config's `fqn_to_config`) and torchao's `fqn_matches_fqn_config` (an exact key, or a `re:` key
    fully matching), the two names its `param_needs_quantization` imports."""
    import re
    import sys
    import types

    from transformers.quantizers import quantizer_torchao

    class FqnToConfig:
        def __init__(self, fqn_to_config: dict[str, Any]) -> None:
            self.fqn_to_config = fqn_to_config

    def fqn_matches_fqn_config(fqn: str, fqn_config: FqnToConfig) -> bool:
        return fqn in fqn_config.fqn_to_config or any(
            key.startswith("re:") and re.fullmatch(key[3:], fqn) for key in fqn_config.fqn_to_config)

    stub = types.ModuleType("torchao.quantization")
    stub.FqnToConfig = FqnToConfig  # type: ignore[attr-defined]
    stub.fqn_matches_fqn_config = fqn_matches_fqn_config  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchao", types.ModuleType("torchao"))
    monkeypatch.setitem(sys.modules, "torchao.quantization", stub)
    monkeypatch.setattr(quantizer_torchao, "is_torchao_available", lambda: True)
    settings = config["quantization_config"]
    data = settings["quant_type"]["default"]["_data"]
    quantization_config = types.SimpleNamespace(
        quant_type=FqnToConfig(data.get("fqn_to_config") or data["module_fqn_to_config"]),
        modules_to_not_convert=settings.get("modules_to_not_convert"),
        include_input_output_embeddings=settings.get("include_input_output_embeddings", False))
    return quantizer_torchao.TorchAoHfQuantizer(quantization_config, pre_quantized=True)


@pytest.mark.parametrize(("kind", "fqn_to_config"), [
    # the experts' 3-D tensors by a parameter pattern, the attention by a module pattern
    ("FqnToConfig", {r"re:model\.layers\.\d+\.mlp\.experts\.(gate_up|down)_proj": _INT4,
                     r"re:model\.layers\.\d+\.self_attn\.[qkvo]_proj": _INT8}),
    # the experts module by its exact name (both its tensors), the rest by _default
    ("FqnToConfig", {"model.layers.0.mlp.experts": _INT8, "model.layers.1.mlp.experts.down_proj": _INT8,
                     "_default": _INT8}),
    # ModuleFqnToConfig, its old name, saved with module_fqn_to_config
    ("ModuleFqnToConfig", {r"re:.*\.experts": _INT4}),
], ids=["parameter-patterns", "exact-names-default", "module-fqn"])
def test_torchao_fqn_to_config_naming_fused_experts_is_sized_as_its_quantizer_sizes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, fqn_to_config: dict[str, Any]) -> None:
    """A torchao FqnToConfig names what it quantizes, fused MoE experts' 3-D gate_up_proj / down_proj (no nn.Linear)
    among them: transformers' torchao quantizer counts every tensor whose name or whose module's name it names at
    its element size (one byte: the class name FqnToConfig gives no 4), beside every Linear weight, and keeps 10% of
    every budget. The experts were counted at bf16, as if the config named only Linear layers."""
    from transformers.integrations.accelerate import _get_device_map, compute_module_sizes

    field = "fqn_to_config" if kind == "FqnToConfig" else "module_fqn_to_config"
    config = _MOE | {"quantization_config": {"quant_method": "torchao", "quant_type": {"default": {
        "_type": kind, "_version": 1, "_data": {field: fqn_to_config}}}}}
    folder = _config_only(tmp_path / "moe", config)
    model = _meta_model(config)
    quantizer = _fqn_quantizer(monkeypatch, config)
    quantizer._process_model_before_weight_loading(model)
    sizes = {name: int(size) for name, size in compute_module_sizes(model, quantizer)[0].items()}
    experts = [name for name, _ in model.named_parameters() if ".experts." in name]
    assert any(quantizer.param_needs_quantization(model, name) for name in experts)  # what the case is about
    budgets: dict[int | str, int] = {0: int(sizes[""] * 0.45), 1: int(sizes[""] * 0.45), "cpu": 10 * sizes[""]}
    # transformers 5.25 itself raises here (ValueError: not enough values to unpack): placing model.rotary_emb
    # alone, its planner asks the quantizer of the buffer `inv_freq`, a name without a dot its FqnToConfig branch
    # splits. The map it would make is asked for with that one question answered as for any unnamed tensor.
    with pytest.raises(ValueError, match="not enough values to unpack"):
        _get_device_map(model, "auto", dict(budgets), quantizer)
    needs = quantizer.param_needs_quantization
    monkeypatch.setattr(quantizer, "param_needs_quantization",
                        lambda model, name, **kwargs: "." in name and needs(model, name, **kwargs))
    expected = dict(_get_device_map(model, "auto", dict(budgets), quantizer))
    code, data = plan_matches_map(folder, budgets, expected, sizes)
    _module_bytes_match(data, sizes)
    assert code == 0 and "cpu" in expected.values() and data["dtype"] == "int8", (code, expected, data["dtype"])
    said = " ".join(" ".join(data["warnings"]).split())
    others = sorted(name for name, _ in [*model.named_parameters(), *model.named_buffers()]
                    if quantizer.param_needs_quantization(model, name)
                    and not (name.endswith(".weight") and isinstance(model.get_submodule(name[:-7]), torch.nn.Linear)))
    assert f"and {len(others)} other tensors its {kind} names ({others[0]}, {others[1]}, ...) planned at 8 bits" \
        in said, said
    # from_pretrained raised on this map above (model.rotary_emb placed alone): said
    assert expected["model.rotary_emb"] in (0, 1, "cpu")
    assert ("from_pretrained(device_map=\"auto\") raises on this model in transformers 5.25.0 (ValueError: not "
            "enough values to unpack): placing model.rotary_emb alone") in said, said
    # the whole model on one GPU: its planner places `model` whole, whose buffers' names hold dots; nothing said
    code, roomy = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and roomy["device_map"] == {"": 0}, roomy["device_map"]
    assert not any("not enough values to unpack" in w for w in roomy["warnings"]), roomy["warnings"]


def _float32_quantized(folder: Path, layout: str) -> tuple[Path, set[str]]:
    """The tiny Llama saved float32 (config torch_dtype float32, as many a user's own quantized save is) with every
    Linear but lm_head quantized in `layout`: "bnb4" as bitsandbytes saves nf4 with double quant (a uint8 weight
    [out x in / 2, 1] beside its uint8 absmax, nested_absmax, nested_quant_map, quant_map and quant_state), "bnb8"
    (an int8 weight beside SCB and weight_format), "gptq" (int32 qweight / qzeros, fp16 scales, int32 g_idx with
    desc_act). Returns the folder and the names of the quantized Linear layers."""
    from safetensors.torch import save_file

    from tests.test_third_party_layouts27 import _llama_state_dict

    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(97)
    tensors: dict[str, torch.Tensor] = {}
    quantized: set[str] = set()
    for name, weight in _llama_state_dict().items():
        if weight.dim() != 2 or "embed_tokens" in name or name.startswith("lm_head"):
            tensors[name] = weight.float()
            continue
        layer = name.removesuffix(".weight")
        quantized.add(layer)
        out_features, in_features = weight.shape
        if layout == "bnb4":
            state = json.dumps({"quant_type": "nf4", "blocksize": 64, "dtype": "float32",
                                "shape": [out_features, in_features], "nested_blocksize": 256,
                                "nested_offset": 0.01}).encode()
            tensors |= {name: torch.randint(0, 256, (out_features * in_features // 2, 1), dtype=torch.uint8,
                                            generator=generator),
                        name + ".absmax": torch.randint(0, 256, (out_features * in_features // 64,),
                                                        dtype=torch.uint8, generator=generator),
                        name + ".nested_absmax": torch.rand(1, generator=generator),
                        name + ".nested_quant_map": torch.rand(256, generator=generator),
                        name + ".quant_map": torch.rand(16, generator=generator),
                        name + ".quant_state.bitsandbytes__nf4": torch.tensor(list(state), dtype=torch.uint8)}
        elif layout == "bnb8":
            scale = weight.float().abs().amax(dim=1).clamp(min=1e-8)
            tensors |= {name: torch.round(weight.float() / scale[:, None] * 127).to(torch.int8),
                        layer + ".SCB": scale * 127, layer + ".weight_format": torch.tensor(0, dtype=torch.uint8)}
        else:
            tensors |= {
                layer + ".qweight": torch.randint(-2**31, 2**31 - 1, (in_features // 8, out_features),
                                                  dtype=torch.int32, generator=generator),
                layer + ".qzeros": torch.randint(-2**31, 2**31 - 1, (in_features // 32, out_features // 8),
                                                 dtype=torch.int32, generator=generator),
                layer + ".scales": torch.rand(in_features // 32, out_features, generator=generator).half(),
                layer + ".g_idx": torch.randperm(in_features, generator=generator).int() // 32}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    quantization = {
        "bnb4": {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                 "bnb_4bit_use_double_quant": True, "bnb_4bit_quant_storage": "uint8",
                 "bnb_4bit_compute_dtype": "float32"},
        "bnb8": {"quant_method": "bitsandbytes", "load_in_8bit": True},
        "gptq": {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": True, "sym": True}}[layout]
    (folder / "config.json").write_text(json.dumps(CONFIG | {"torch_dtype": "float32",
                                                             "quantization_config": quantization}))
    return folder, quantized


def _meta_model_at(config: dict[str, Any], dtype: torch.dtype) -> torch.nn.Module:
    """The model from_pretrained builds from `config` at `dtype`, on the meta device."""
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = {k: v for k, v in config.items() if k not in ("quantization_config", "model_type", "torch_dtype")}
    built = AutoConfig.for_model(config["model_type"], **settings)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(built, dtype=dtype)


@pytest.mark.parametrize("layout", ["bnb4", "bnb8"])
def test_a_float32_bitsandbytes_checkpoint_keeps_its_rest_at_float32(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    """from_pretrained(dtype="auto") builds a float32 config's model at float32 (bitsandbytes' quantizers take any
    dtype: no update_dtype of their own), so the embeddings, lm_head and norms are float32 beside the packed
    Linear weights. The plan built every int4 / int8 model at float16: a float32 bnb checkpoint's rest half-sized
    (103,040 bytes planned for a 4-bit model whose planner counts 169,216), and more on the GPUs than fit.

    The oracle: transformers' own Bnb4Bit / Bnb8Bit quantizer (its quantized_element_size and the 10% of every budget
    its adjust_max_memory keeps) over the float32 meta model, the weights it quantizes being those the checkpoint
    stores packed (bitsandbytes is not installed: its isinstance check and environment check are stood in for)."""
    from transformers.integrations.accelerate import _get_device_map, compute_module_sizes
    from transformers.quantizers.auto import AutoHfQuantizer, AutoQuantizationConfig

    folder, quantized = _float32_quantized(tmp_path / layout, layout)
    config = json.loads((folder / "config.json").read_text())
    model = _meta_model_at(config, torch.float32)
    quantizer = AutoHfQuantizer.from_config(AutoQuantizationConfig.from_dict(config["quantization_config"]),
                                            pre_quantized=True)
    monkeypatch.setattr(quantizer, "param_needs_quantization",
                        lambda model, name, **kwargs: name.removesuffix(".weight") in quantized
                        and name.endswith(".weight"))
    monkeypatch.setattr(quantizer, "validate_environment", lambda *args, **kwargs: None)
    sizes = {name: int(size) for name, size in compute_module_sizes(model, quantizer)[0].items()}
    # independently: the stored packed weights' bytes and every float32 tensor's (the quantization state aside)
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as stored:
        held = sum(stored.get_tensor(name).nbytes for name in stored.keys()  # noqa: SIM118 (no mapping)
                   if name.endswith(".weight") and (name.removesuffix(".weight") in quantized
                                                    or stored.get_slice(name).get_dtype() == "F32"))
    buffers = sum(buffer.numel() * buffer.element_size() for buffer in model.buffers())  # the rotary inv_freq
    assert sizes[""] == held + buffers, (sizes[""], held, buffers)
    budgets: dict[int | str, int] = {0: int(sizes[""] * 0.45), 1: int(sizes[""] * 0.45), "cpu": 10 * sizes[""]}
    expected = dict(_get_device_map(model, "auto", dict(budgets), quantizer))
    code, data = plan_matches_map(folder, budgets, expected, sizes)
    _module_bytes_match(data, sizes)
    assert "cpu" in expected.values() and data["dtype"] == ("int4" if layout == "bnb4" else "int8"), data


def test_a_float32_gptq_checkpoint_keeps_its_rest_at_float32(tmp_path: Path) -> None:
    """GPTQ's quantizer keeps a float32 config's dtype (update_dtype only suggests float16): the embeddings, lm_head
    and norms at float32, each quantized layer at what its QuantLinear holds (the stored qweight, qzeros, scales and
    g_idx, desc_act's permuted g_idx included), no headroom. The rest was planned at float16."""
    from tests.test_plan_quantized2 import _HeldLayer, _stored_layers

    folder, quantized = _float32_quantized(tmp_path / "gptq", "gptq")
    config = json.loads((folder / "config.json").read_text())
    model = _meta_model_at(config, torch.float32)
    layers = _stored_layers(folder)
    assert set(layers) == quantized
    for layer, tensors in layers.items():
        parent, _, child = layer.rpartition(".")
        setattr(model.get_submodule(parent), child, _HeldLayer(tensors))
    sizes = _sizes(model)
    budgets: dict[int | str, int] = {0: int(sizes[""] * 0.4), 1: int(sizes[""] * 0.4), "cpu": 10 * sizes[""]}
    expected = _from_pretrained_map(model, budgets)
    code, data = plan_matches_map(folder, budgets, expected, sizes)
    _module_bytes_match(data, sizes)
    assert code == 0 and "cpu" in expected.values() and data["dtype"] == "int4", data


_GPT_OSS = {"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": 64,
            "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "num_local_experts": 4, "num_experts_per_tok": 2, "vocab_size": 256,
            "max_position_embeddings": 64, "torch_dtype": "bfloat16", "tie_word_embeddings": False,
            "layer_types": ["sliding_attention", "full_attention"]}
# openai/gpt-oss-20b's: what its MXFP4 quantizer leaves at bf16
_GPT_OSS_SKIP = ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]


def _gpt_oss_mxfp4(folder: Path, quantization: dict[str, Any]) -> Path:
    """A tiny GPT-OSS as openai/gpt-oss-* store it: each layer's experts as `gate_up_proj_blocks` uint8 [experts,
    2 x intermediate, hidden / 32, 16] with `gate_up_proj_scales` uint8 [experts, 2 x intermediate, hidden / 32]
    (`down_proj_*` alike) and bf16 biases; the rest bf16 (attention sinks, router)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    config = _GPT_OSS | {"quantization_config": quantization}
    generator = torch.Generator().manual_seed(41)
    tensors: dict[str, torch.Tensor] = {}
    for name, parameter in _meta_model(config).named_parameters():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            experts, rows = parameter.shape[0], parameter.shape[2]  # stored [experts, out, in / 32, 16]
            width = parameter.shape[1]
            tensors[name + "_blocks"] = torch.randint(0, 256, (experts, rows, width // 32, 16), dtype=torch.uint8,
                                                      generator=generator)
            tensors[name + "_scales"] = torch.randint(100, 140, (experts, rows, width // 32), dtype=torch.uint8,
                                                      generator=generator)
        else:
            tensors[name] = torch.randn(parameter.shape, generator=generator).bfloat16()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _mxfp4_prepared(config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[torch.nn.Module, Any]:
    """The meta model as transformers' own Mxfp4HfQuantizer prepares it (its preprocess_model in the model's default
    dtype), the hub's triton kernels it fetches for the forward stood in for (no network), and the quantizer."""
    from transformers.integrations import hub_kernels
    from transformers.quantizers.auto import AutoHfQuantizer, AutoQuantizationConfig

    monkeypatch.setattr(hub_kernels, "get_kernel", lambda *args, **kwargs: None)
    model = _meta_model(config)
    quantizer = AutoHfQuantizer.from_config(AutoQuantizationConfig.from_dict(config["quantization_config"]),
                                            pre_quantized=True)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        quantizer.preprocess_model(model=model, dtype=torch.bfloat16, device_map="auto", checkpoint_files=None)
    finally:
        torch.set_default_dtype(default)
    return model, quantizer


@pytest.mark.parametrize("skip", [_GPT_OSS_SKIP, ["model.layers.1.mlp.experts", *_GPT_OSS_SKIP]],
                         ids=["gpt-oss", "layer-1-kept"])
def test_an_mxfp4_gpt_oss_is_planned_with_the_experts_its_quantizer_swaps_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skip: list[str]) -> None:
    """MXFP4's quantizer swaps each GptOssMLP's experts for Mxfp4GptOssExperts (uint8 gate_up_proj / down_proj, two
    FP4 values a byte, float32 biases) before from_pretrained makes its map: the plan's bytes, per-module bytes and
    map are `_get_device_map`'s over the model it prepares. It was planned with the dense bf16 experts, "an upper
    bound" (316,832 bytes of weights here for 172,448)."""
    from transformers.integrations.accelerate import _get_device_map

    quantization = {"quant_method": "mxfp4", "modules_to_not_convert": skip}
    folder = _gpt_oss_mxfp4(tmp_path / "gpt-oss", quantization)
    config = json.loads((folder / "config.json").read_text())
    model, quantizer = _mxfp4_prepared(config, monkeypatch)
    swapped = sum(1 for module in model.modules() if type(module).__name__ == "Mxfp4GptOssExperts")
    assert swapped == (2 if skip == _GPT_OSS_SKIP else 1)
    sizes = _sizes(model)
    dense = _sizes(_meta_model(config))[""]
    assert sizes[""] < dense
    budgets: dict[int | str, int] = {0: int(sizes[""] * 0.45), 1: int(sizes[""] * 0.45), "cpu": 10 * dense}
    expected = dict(_get_device_map(model, "auto", dict(budgets), quantizer))
    code, data = plan_matches_map(folder, budgets, expected, sizes)
    _module_bytes_match(data, sizes)
    assert code == 0 and "cpu" in expected.values(), data
    said = " ".join(" ".join(data["warnings"]).split())
    assert "upper bound" not in said, said
    assert (f"the experts of {swapped} MLP layer{'s' if swapped > 1 else ''} are planned as transformers' "
            "Mxfp4GptOssExperts holds them") in said, said
    # --dtype bf16: the dequantized experts, as transformers holds them without triton and kernels
    code, dequantized = run_json("plan-devices", str(folder), "--gpu", "1GB", "--dtype", "bf16")
    assert code == 0 and dequantized["weights_bytes"] + dequantized["buffers_bytes"] == dense, dequantized


def test_an_mxfp4_config_that_dequantizes_is_planned_dense_without_an_upper_bound(tmp_path: Path) -> None:
    """`dequantize: true`: its quantizer swaps in nothing (replace_with_mxfp4_linear returns the model as it is) and
    the experts load at bf16, which the plan is; it was said to be "an upper bound" over-sizing 4-bit weights."""
    folder = _gpt_oss_mxfp4(tmp_path / "gpt-oss", {"quant_method": "mxfp4", "dequantize": True})
    config = json.loads((folder / "config.json").read_text())
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and data["weights_bytes"] + data["buffers_bytes"] == _sizes(_meta_model(config))[""], data
    said = " ".join(" ".join(data["warnings"]).split())
    assert "upper bound" not in said, said
    assert ("the config quantizes the weights (mxfp4) with dequantize: true: transformers dequantizes the experts on "
            "every device, to the floating dtype planned here") in said, said


def _eetq(folder: Path, torch_dtype: str, with_weights: bool) -> Path:
    """A Llama with attention biases as EETQ saves it (EetqLinear's state dict): each Linear but lm_head an int8
    `weight` [in, out] beside float16 `weight_scales` [out] and (q/k/v/o) a float16 `bias`; the rest at
    `torch_dtype`. `with_weights` False: config.json alone."""
    from safetensors.torch import save_file

    from tests.test_third_party_layouts27 import _llama_state_dict

    folder.mkdir(parents=True)
    rest = _DTYPES[torch_dtype]
    generator = torch.Generator().manual_seed(43)
    tensors: dict[str, torch.Tensor] = {}
    for name, weight in _llama_state_dict().items():
        if weight.dim() != 2 or "embed_tokens" in name or name.startswith("lm_head"):
            tensors[name] = weight.to(rest)
            continue
        layer = name.removesuffix(".weight")
        tensors |= {name: torch.randint(-128, 128, weight.shape[::-1], dtype=torch.int8, generator=generator),
                    layer + ".weight_scales": torch.rand(weight.shape[0], generator=generator).half()}
        if ".self_attn." in name:
            tensors[layer + ".bias"] = torch.randn(weight.shape[0], generator=generator).half()
    if with_weights:
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(CONFIG | {
        "torch_dtype": torch_dtype, "attention_bias": True,
        "quantization_config": {"quant_method": "eetq", "weights": "int8", "modules_to_not_convert": ["lm_head"]}}))
    return folder


@pytest.mark.parametrize(("torch_dtype", "with_weights"), [("float16", False), ("float32", True),
                                                           ("float32", False)],
                         ids=["fp16-config-only", "fp32", "fp32-config-only"])
def test_eetq_is_planned_as_its_eetq_linear_layers_hold_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           torch_dtype: str, with_weights: bool) -> None:
    """EetqLinear holds an int8 weight, float16 weight_scales and a float16 bias whatever the model's dtype: the
    plan is `_get_device_map`'s over the model transformers' own EETQ quantizer prepares (its hub kernel lookup
    stood in for). A config alone was planned at one byte a weight without the scales; a float32 model's rest at
    float16 and its EETQ biases at float32."""
    from transformers.integrations import hub_kernels
    from transformers.quantizers.auto import AutoHfQuantizer, AutoQuantizationConfig

    folder = _eetq(tmp_path / "eetq", torch_dtype, with_weights)
    config = json.loads((folder / "config.json").read_text())
    monkeypatch.setattr(hub_kernels, "get_kernel", lambda *args, **kwargs: None)
    model = _meta_model_at(config, _DTYPES[torch_dtype])
    quantizer = AutoHfQuantizer.from_config(AutoQuantizationConfig.from_dict(config["quantization_config"]),
                                            pre_quantized=True)
    quantizer.preprocess_model(model=model, dtype=_DTYPES[torch_dtype], device_map="auto", checkpoint_files=None)
    assert sum(1 for module in model.modules() if type(module).__name__ == "EetqLinear") == 14
    sizes = _sizes(model)
    budgets: dict[int | str, int] = {0: int(sizes[""] * 0.4), 1: int(sizes[""] * 0.4), "cpu": 10 * sizes[""]}
    expected = _from_pretrained_map(model, budgets)
    code, data = plan_matches_map(folder, budgets, expected, sizes)
    _module_bytes_match(data, sizes)
    assert code == 0 and "cpu" in expected.values() and data["dtype"] == "int8", data
    said = " ".join(" ".join(data["warnings"]).split())
    assert "scales and zero points not counted" not in said, said


def test_a_block_wise_fp8_checkpoint_at_dtype_fp8_is_planned_at_its_stored_bytes(tmp_path: Path) -> None:
    """Oracle only (no fault found): a DeepSeek-V3-style fine-grained FP8 checkpoint (float8_e4m3fn weights, float32
    `weight_scale_inv` [out / 128, in / 128] blocks, lm_head bf16) planned with --dtype fp8: every placed range of
    modules holds the bytes the checkpoint stores under it (plus the rotary buffers), as FP8Linear holds them, and
    the whole is those bytes."""
    import math

    from safetensors import safe_open
    from safetensors.torch import save_file

    from tests.test_third_party_layouts27 import _llama_state_dict

    folder = tmp_path / "fp8"
    folder.mkdir()
    tensors: dict[str, torch.Tensor] = {}
    for name, weight in _llama_state_dict().items():
        if weight.dim() != 2 or "embed_tokens" in name or name.startswith("lm_head"):
            tensors[name] = weight.bfloat16()
            continue
        out_features, in_features = weight.shape
        tensors |= {name: weight.float().to(torch.float8_e4m3fn),
                    name + "_scale_inv": torch.rand(math.ceil(out_features / 128), math.ceil(in_features / 128))}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = CONFIG | {"torch_dtype": "bfloat16", "quantization_config": {
        "quant_method": "fp8", "weight_block_size": [128, 128], "activation_scheme": "dynamic",
        "modules_to_not_convert": ["lm_head"]}}
    (folder / "config.json").write_text(json.dumps(config))
    buffers = {name: buffer.numel() * buffer.element_size()
               for name, buffer in _meta_model(config).named_buffers()}
    with safe_open(str(folder / "model.safetensors"), "pt") as stored:
        held = {name: stored.get_tensor(name).nbytes for name in stored.keys()}  # noqa: SIM118 (no mapping)
    held |= buffers
    code, data = run_json("plan-devices", str(folder), "--dtype", "fp8", "--gpu", f"{sum(held.values()) // 2}B",
                          "--gpu", f"{sum(held.values()) // 2}B", "--cpu", "1GB")
    assert data["dtype"] == "fp8" and data["weights_bytes"] + data["buffers_bytes"] == sum(held.values()), data
    ranges = [r for device in data["devices"] for r in device["ranges"]]
    assert len(ranges) > 2
    for placed in ranges:
        assert placed["bytes"] == sum(size for name, size in held.items()
                                      if any(name.startswith(module + ".") for module in placed["modules"])), placed


@pytest.mark.parametrize("layout", ["bnb4", "bnb8", "gptq", "eetq", "mxfp4"])
def test_inspect_counts_the_weights_the_quantized_tensors_stand_for(tmp_path: Path, layout: str) -> None:
    """Oracle only (no fault found): inspect's quantized parameter count is the dense model's (what the packed
    weights, experts' blocks and int8 weights stand for) and its total bytes what the file stores, for the layouts
    above."""
    from safetensors import safe_open

    if layout == "eetq":
        folder = _eetq(tmp_path / layout, "float16", True)
    elif layout == "mxfp4":
        folder = _gpt_oss_mxfp4(tmp_path / layout, {"quant_method": "mxfp4", "modules_to_not_convert": _GPT_OSS_SKIP})
    else:
        folder, _ = _float32_quantized(tmp_path / layout, layout)
    config = json.loads((folder / "config.json").read_text())
    dense = sum(p.numel() for p in _meta_model_at(config, torch.float32).parameters())
    with safe_open(str(folder / "model.safetensors"), "pt") as stored:
        stored_bytes = sum(stored.get_tensor(name).nbytes for name in stored.keys())  # noqa: SIM118 (no mapping)
    code, data = run_json("inspect", str(folder))
    assert code == 0 and data["quantized"]["parameters"] == dense, (data["quantized"], dense)
    assert data["total_bytes"] == stored_bytes, (data["total_bytes"], stored_bytes)


def float32_cache_bytes(config: dict[str, Any], tokens: int) -> int:
    """The bytes of keys and values a real float32 model of `config` (its quantization left out) fills for `tokens`
    tokens: the oracle of --kv-cache for a float32 quantized model."""
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = {k: v for k, v in config.items() if k not in ("quantization_config", "model_type", "torch_dtype")}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(config["model_type"], **settings),
                                             dtype=torch.float32)
    with torch.no_grad():
        cache = model(torch.zeros(1, tokens, dtype=torch.long), use_cache=True).past_key_values
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


def test_a_float32_quantized_model_caches_keys_and_values_in_float32(tmp_path: Path) -> None:
    """The KV cache of a bnb 4-bit model whose config is float32 is float32: from_pretrained builds it at float32
    and its attention caches at that dtype. It was estimated at float16 (half the bytes), as every int4 / int8 plan
    was. The oracle: the cache a real tiny float32 Llama of that config fills for 64 tokens."""
    folder, _ = _float32_quantized(tmp_path / "bnb4", "bnb4")
    cached = float32_cache_bytes(json.loads((folder / "config.json").read_text()), 64)
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB", "--kv-cache", "--seq-len", "64")
    assert code == 0 and data["kv_cache"]["dtype"] == "float32", data["kv_cache"]
    assert data["kv_cache"]["total_bytes"] == cached, (data["kv_cache"], cached)
