"""plan-devices on quantized checkpoints, round 3: torchao (int4 / int8 weight-only, float8), fbgemm_fp8 with biases,
compressed-tensors (W4A16, W4A16_ASYM, FP8, NVFP4), config-only SpQR / VPTQ.

Found: a torchao checkpoint (transformers' TorchAoConfig, safetensors flattened as `_weight_qdata` / `_weight_scale`)
was planned dense at bf16, "an upper bound", where from_pretrained's planner sizes each Linear weight its torchao
quantizer quantizes at `quantized_element_size` (0.5 byte for a 4-bit config, 1 for the others) and keeps 10% of every
budget free: 2.6x (int4) / 1.7x the bytes, and a map that offloads what from_pretrained keeps on the GPUs.
fbgemm_fp8's FbgemmFp8Linear holds a float32 bias and input_scale_ub the plan counted at bf16 / not at all. An
asymmetric W4A16 layer's packed `weight_zero_point` was counted at its stored bytes, where the module compressed-tensors
builds holds it unpacked (one int8 a scale). A config.json alone of an SpQR model was planned dense, though its
`shapes` give every layer's tensors.

The oracles are transformers' own: `_get_device_map` with its TorchAoHfQuantizer (torchao, not installed here, stubbed
only for the names the quantizer imports: the config class, whose name is what sizes the weights, and FqnToConfig), a
meta model holding transformers' own FbgemmFp8Linear layers, the stored tensors (with the zero point as compressed-
tensors 0.20.1 holds it, measured with its CompressedTensorsHfQuantizer; that check reruns where it is installed), and
SpQR's config shapes at create_placehodler's dtypes.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_json
from tests.test_plan_quantized2 import _from_pretrained_map, _meta_model, _sizes, plan_matches_map
from tests.test_third_party_layouts27 import CONFIG, _llama_state_dict

# torchao's config class, the tensor subclass it saves, and what transformers' quantizer sizes a weight at
_TORCHAO = {"int4": ("Int4WeightOnlyConfig", "Int4Tensor"), "int8": ("Int8WeightOnlyConfig", "Int8Tensor"),
            "float8": ("Float8WeightOnlyConfig", "Float8Tensor")}


def _torchao(folder: Path, kind: str, extra: dict[str, Any] | None = None) -> Path:
    """A tiny Llama as transformers 5.25 saves a TorchAoConfig model to safetensors (`flatten_tensor_state_dict`):
    each quantized Linear's tensor subclass flattened into `_weight_qdata` beside its `_weight_scale` (and
    `_weight_zero_point`), the subclass named per weight in the header's metadata; lm_head and the rest bf16.
    Int4Tensor: uint8 qdata [out, in / 2] with bf16 scale / zero point [in / 32, out]; Int8Tensor: int8 [out, in]
    with a bf16 scale [out]; Float8Tensor: float8_e4m3fn [out, in] with a float32 scale [out, 1]."""
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(53)
    config_class, subclass = _TORCHAO[kind]
    tensors: dict[str, torch.Tensor] = {}
    metadata = {"format": "pt"}
    for name, weight in _llama_state_dict().items():
        if weight.dim() != 2 or "embed_tokens" in name or name.startswith("lm_head"):
            tensors[name] = weight.bfloat16()
            continue
        base = name.removesuffix("weight")
        out_features, in_features = weight.shape
        if kind == "int4":
            parts = {"_weight_qdata": torch.randint(0, 256, (out_features, in_features // 2), dtype=torch.uint8,
                                                    generator=generator),
                     "_weight_scale": torch.rand(in_features // 32, out_features, generator=generator).bfloat16(),
                     "_weight_zero_point": torch.rand(in_features // 32, out_features,
                                                      generator=generator).bfloat16()}
        elif kind == "int8":
            parts = {"_weight_qdata": torch.randint(-128, 128, (out_features, in_features), dtype=torch.int8,
                                                    generator=generator),
                     "_weight_scale": torch.rand(out_features, generator=generator).bfloat16()}
        else:
            parts = {"_weight_qdata": weight.float().to(torch.float8_e4m3fn),
                     "_weight_scale": torch.rand(out_features, 1, generator=generator)}
        tensors |= {base + leaf: value for leaf, value in parts.items()}
        metadata[name] = json.dumps({"_type": subclass, "_data": {}})
    save_file(tensors, str(folder / "model.safetensors"), metadata=metadata)
    (folder / "config.json").write_text(json.dumps(CONFIG | {"torch_dtype": "bfloat16", "quantization_config": {
        "quant_method": "torchao", "quant_type": {"default": {"_type": config_class, "_version": 2, "_data": {}}},
        **(extra or {})}}))
    return folder


def _torchao_quantizer(monkeypatch: pytest.MonkeyPatch, config: dict[str, Any]) -> Any:
    """transformers' own TorchAoHfQuantizer for `config`, pre-quantized, as from_pretrained makes it: torchao is not
    installed, so its config class is stood in for by an empty class of the same name (the quantizer reads only
    the name) and `torchao.quantization` by the two names `param_needs_quantization` imports."""
    from transformers.quantizers import quantizer_torchao

    stub = types.ModuleType("torchao.quantization")
    stub.FqnToConfig = type("FqnToConfig", (), {})  # type: ignore[attr-defined]
    stub.fqn_matches_fqn_config = lambda *args: False  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchao", types.ModuleType("torchao"))
    monkeypatch.setitem(sys.modules, "torchao.quantization", stub)
    monkeypatch.setattr(quantizer_torchao, "is_torchao_available", lambda: True)
    settings = config["quantization_config"]
    quant_type = type(settings["quant_type"]["default"]["_type"], (), {})()
    quantization_config = types.SimpleNamespace(
        quant_type=quant_type, modules_to_not_convert=settings.get("modules_to_not_convert"),
        include_input_output_embeddings=settings.get("include_input_output_embeddings", False))
    quantizer = quantizer_torchao.TorchAoHfQuantizer(quantization_config, pre_quantized=True)
    return quantizer


@pytest.mark.parametrize("extra", [{}, {"modules_to_not_convert": ["model.layers.1"]},
                                   {"include_input_output_embeddings": True}],
                         ids=["default", "not-convert", "embeddings"])
@pytest.mark.parametrize("kind", list(_TORCHAO))
def test_torchao_is_planned_as_its_quantizer_sizes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
                                                      extra: dict[str, Any]) -> None:
    """The plan's bytes, per-module sizes and device map are transformers' `_get_device_map` with its torchao
    quantizer: each weight it quantizes at 0.5 byte (int4) or 1 (int8, float8), the rest at bf16, 10% of every
    budget kept free. It was planned dense at bf16 as an upper bound, with more offloaded than from_pretrained."""
    from transformers.integrations.accelerate import compute_module_sizes

    folder = _torchao(tmp_path / kind, kind, extra)
    config = json.loads((folder / "config.json").read_text())
    model = _meta_model(config)
    quantizer = _torchao_quantizer(monkeypatch, config)
    quantizer._process_model_before_weight_loading(model)
    sizes = {name: int(size) for name, size in compute_module_sizes(model, quantizer)[0].items()}
    dense = _sizes(model)[""]
    assert sizes[""] < dense  # the layout does change what is planned
    budgets: dict[int | str, int] = {0: int(sizes[""] * 0.45), 1: int(sizes[""] * 0.45), "cpu": 10 * dense}
    from transformers.integrations.accelerate import _get_device_map

    expected = dict(_get_device_map(model, "auto", dict(budgets), quantizer))
    code, data = plan_matches_map(folder, budgets, expected, sizes)
    assert code == 0 and "cpu" in expected.values(), (code, expected)
    assert data["dtype"] == {"int4": "int4", "int8": "int8", "float8": "float8_e4m3fn"}[kind], data["dtype"]
    said = " ".join(" ".join(data["warnings"]).split())
    assert "upper bound" not in said, said
    # inspect: the weights the qdata stand for (the dense model's count), the bytes the file holds
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as stored:
        names = list(stored.keys())  # safe_open is no mapping: its names are keys()
        stored_bytes = sum(stored.get_tensor(name).nbytes for name in names)
    code, inspected = run_json("inspect", str(folder))
    assert inspected["quantized"]["parameters"] == sum(p.numel() for p in model.parameters()), inspected["quantized"]
    assert inspected["total_bytes"] == stored_bytes, (inspected["total_bytes"], stored_bytes)
    quantized = sum(1 for name, module in model.named_modules()
                    if quantizer.param_needs_quantization(model, f"{name}.weight") and hasattr(module, "weight"))
    size = "0.5" if kind == "int4" else "1"
    assert (f"{quantized} Linear weights planned at {4 if kind == 'int4' else 8} bits ({size} byte a weight), as "
            "transformers' planner sizes the weights its torchao quantizer quantizes "
            f"({_TORCHAO[kind][0]}; their scales and zero points not counted") in said, said


def test_torchao_disk_offload_is_refused_as_from_pretrained_refuses_it(tmp_path: Path) -> None:
    """transformers' torchao quantizer raises on a pre-quantized checkpoint's map with disk beside other devices:
    the plan says so (a finding, no disk offload offered) where it offered the disk."""
    folder = _torchao(tmp_path / "int8", "int8")
    code, data = run_json("plan-devices", str(folder), "--gpu", "60KB", "--cpu", "45KB", "--disk")
    assert "disk" in data["device_map"].values() and 0 in data["device_map"].values(), data["device_map"]
    assert code == 1 and [f["code"] for f in data["findings"]] == ["quantizer-refuses-offload"], data["findings"]
    assert ("transformers' torchao quantizer refuses a device map holding disk beside other devices (ValueError: "
            "\"You are attempting to perform disk offload with a pre-quantized torchao model") in data["findings"][0][
        "message"], data["findings"][0]
    assert not [s for s in data["suggestions"] if s["change"] == "disk"], data["suggestions"]
    # the GPUs and the CPU together: taken (its validate_environment only notes the CPU offload)
    code, data = run_json("plan-devices", str(folder), "--gpu", "60KB", "--cpu", "1GB")
    assert "cpu" in data["device_map"].values() and data["findings"] == [] and code == 0, data


def _fbgemm_with_bias(folder: Path) -> Path:
    """A Llama with attention biases as FbgemmFp8HfQuantizer saves it: each Linear but lm_head a float8_e4m3fn
    `weight` beside a float32 `weight_scale` [out, 1] and (q/k/v/o) a float32 `bias`; `input_scale_ub`, a
    non-persistent buffer, is not saved."""
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(61)
    tensors: dict[str, torch.Tensor] = {}
    for name, weight in _llama_state_dict().items():
        if weight.dim() != 2 or "embed_tokens" in name or name.startswith("lm_head"):
            tensors[name] = weight.bfloat16()
            continue
        base = name.removesuffix(".weight")
        scale = weight.float().abs().amax(dim=1, keepdim=True) / 448
        tensors |= {name: (weight.float() / scale).to(torch.float8_e4m3fn), base + ".weight_scale": scale}
        if ".self_attn." in name:
            tensors[base + ".bias"] = torch.randn(weight.shape[0], generator=generator)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(CONFIG | {
        "torch_dtype": "bfloat16", "attention_bias": True, "quantization_config": {
            "quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0, "modules_to_not_convert": ["lm_head"]}}))
    return folder


def test_fbgemm_fp8_layers_are_planned_at_their_float32_bias_and_scales(tmp_path: Path) -> None:
    """FbgemmFp8Linear holds a float32 bias, weight_scale and input_scale_ub whatever the model's dtype: the plan's
    per-module bytes and map are those of transformers' `_get_device_map` over a meta model with its own
    FbgemmFp8Linear layers (the biases were counted at bf16, the unsaved input_scale_ub not at all)."""
    from transformers.integrations.fbgemm_fp8 import FbgemmFp8Linear

    folder = _fbgemm_with_bias(tmp_path / "fbgemm")
    config = json.loads((folder / "config.json").read_text())
    model = _meta_model(config)
    for name, module in list(model.named_modules()):
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            parent, _, child = name.rpartition(".")
            with torch.device("meta"):
                setattr(model.get_submodule(parent), child,
                        FbgemmFp8Linear(module.in_features, module.out_features, module.bias is not None))
    sizes = _sizes(model)
    budgets: dict[int | str, int] = {0: int(sizes[""] * 0.4), 1: int(sizes[""] * 0.4), "cpu": 10 * sizes[""]}
    expected = _from_pretrained_map(model, budgets)
    code, data = plan_matches_map(folder, budgets, expected, sizes)
    assert code == 0 and "cpu" in expected.values(), data
    said = " ".join(" ".join(data["warnings"]).split())
    assert "its FbgemmFp8Linear layers hold their weight_scale, input_scale_ub and bias in float32" in said, said


_CT_HIDDEN, _CT_INTER = 128, 256  # compressed-tensors' group size 128 needs inputs of 128 and more


def _compressed_tensors(folder: Path, scheme: str) -> Path:
    """A tiny Llama as llm-compressor saves it (compressed-tensors 0.20.1's layouts, read from its own output):
    W4A16 / W4A16_ASYM pack-quantized (`weight_packed` int32 [out, in / 8], bf16 `weight_scale` [out, in / 128],
    `weight_shape` int64 [2]; asymmetric adds `weight_zero_point` int32 [out / 8, in / 128], packed like the
    weights), FP8 float-quantized (a float8_e4m3fn `weight`, bf16 per-tensor `weight_scale` and `input_scale`),
    NVFP4 (`weight_packed` uint8 [out, in / 2], float8 `weight_scale` [out, in / 16], float32 `weight_global_scale`
    and `input_global_scale`); lm_head ignored."""
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(71)
    config = CONFIG | {"hidden_size": _CT_HIDDEN, "intermediate_size": _CT_INTER, "torch_dtype": "bfloat16"}
    model = _meta_model(config)
    tensors: dict[str, torch.Tensor] = {}
    for name, parameter in model.named_parameters():
        module = name.rpartition(".")[0]
        if not isinstance(model.get_submodule(module), torch.nn.Linear) or module == "lm_head":
            tensors[name] = torch.randn(parameter.shape, generator=generator).bfloat16()
            continue
        out_features, in_features = parameter.shape
        groups = in_features // 128
        if scheme.startswith("W4A16"):
            tensors |= {module + ".weight_packed": torch.randint(-2**31, 2**31 - 1, (out_features, in_features // 8),
                                                                 dtype=torch.int32, generator=generator),
                        module + ".weight_scale": torch.rand(out_features, groups, generator=generator).bfloat16(),
                        module + ".weight_shape": torch.tensor([out_features, in_features])}
            if scheme.endswith("ASYM"):
                tensors[module + ".weight_zero_point"] = torch.randint(
                    -2**31, 2**31 - 1, (out_features // 8, groups), dtype=torch.int32, generator=generator)
        elif scheme == "FP8":
            tensors |= {module + ".weight": torch.randn(out_features, in_features).to(torch.float8_e4m3fn),
                        module + ".weight_scale": torch.rand(1).bfloat16(),
                        module + ".input_scale": torch.rand(1).bfloat16()}
        else:
            tensors |= {module + ".weight_packed": torch.randint(0, 256, (out_features, in_features // 2),
                                                                 dtype=torch.uint8, generator=generator),
                        module + ".weight_scale": torch.rand(out_features, in_features // 16).to(torch.float8_e4m3fn),
                        module + ".weight_global_scale": torch.rand(1), module + ".input_global_scale": torch.rand(1)}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    weights = {"W4A16": {"num_bits": 4, "type": "int", "symmetric": True, "group_size": 128, "strategy": "group"},
               "W4A16_ASYM": {"num_bits": 4, "type": "int", "symmetric": False, "group_size": 128,
                              "strategy": "group"},
               "FP8": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "tensor"},
               "NVFP4": {"num_bits": 4, "type": "float", "symmetric": True, "group_size": 16,
                         "strategy": "tensor_group"}}[scheme]
    inputs = ({"num_bits": 8, "type": "float", "symmetric": True, "strategy": "tensor", "dynamic": False}
              if scheme == "FP8" else {"num_bits": 4, "type": "float", "symmetric": True, "group_size": 16,
                                       "strategy": "tensor_group", "dynamic": "local"} if scheme == "NVFP4" else None)
    form = {"FP8": "float-quantized", "NVFP4": "nvfp4-pack-quantized"}.get(scheme, "pack-quantized")
    (folder / "config.json").write_text(json.dumps(config | {"quantization_config": {
        "quant_method": "compressed-tensors", "format": form, "quantization_status": "compressed",
        "ignore": ["lm_head"], "config_groups": {"group_0": {
            "targets": ["Linear"], "weights": weights, "input_activations": inputs, "format": form}}}}))
    return folder


def _compressed_tensors_held(folder: Path) -> dict[str, int]:
    """{layer: bytes its compressed-tensors module holds while from_pretrained makes its map}: the stored tensors
    (bias aside), but a packed `weight_zero_point`, held unpacked as one int8 per `weight_scale` entry (what
    compressed-tensors 0.20.1's apply_quantization_config + compress_model build on the meta model: measured)."""
    from safetensors import safe_open

    held: dict[str, int] = {}
    with safe_open(str(folder / "model.safetensors"), "pt") as stored:
        names = list(stored.keys())
        layers = {name.rpartition(".")[0] for name in names if name.endswith((".weight_scale", ".weight_packed"))}
        for name in names:
            layer, _, leaf = name.rpartition(".")
            if layer not in layers:
                continue
            tensor = stored.get_tensor(name)
            size = tensor.numel() * tensor.element_size()
            if leaf == "weight_zero_point":
                size = stored.get_tensor(layer + ".weight_scale").numel()
            held[layer] = held.get(layer, 0) + size
    return held


@pytest.mark.parametrize("scheme", ["W4A16", "W4A16_ASYM", "FP8", "NVFP4"])
def test_compressed_tensors_layers_are_planned_at_what_their_modules_hold(tmp_path: Path, scheme: str) -> None:
    """Each quantized Linear is planned at what compressed-tensors' module holds while the map is made, the rest at
    bf16, no headroom; an asymmetric W4A16 layer's zero points unpacked (int8 at the scales' shape), which were
    planned at their packed stored bytes (half as many, 1,152 bytes short on this model)."""
    folder = _compressed_tensors(tmp_path / scheme, scheme)
    config = json.loads((folder / "config.json").read_text())
    model = _meta_model(config)
    held = _compressed_tensors_held(folder)
    for layer, size in held.items():  # the oracle: each layer replaced by a module holding its bytes
        parent, _, child = layer.rpartition(".")
        setattr(model.get_submodule(parent), child, _Bytes(size))
    sizes = _sizes(model)
    budgets: dict[int | str, int] = {0: int(sizes[""] * 0.4), 1: int(sizes[""] * 0.4), "cpu": 10 * sizes[""]}
    expected = _from_pretrained_map(model, budgets)
    code, data = plan_matches_map(folder, budgets, expected, sizes)
    assert code == 0 and "cpu" in expected.values(), data


class _Bytes(torch.nn.Module):
    """A stand-in layer holding `size` bytes (one meta uint8 buffer)."""

    def __init__(self, size: int):
        super().__init__()
        self.register_buffer("held", torch.empty(size, dtype=torch.uint8, device="meta"))


@pytest.mark.parametrize("scheme", ["W4A16", "W4A16_ASYM", "FP8", "NVFP4"])
def test_compressed_tensors_matches_its_quantizer_where_installed(tmp_path: Path, scheme: str) -> None:
    """Where compressed-tensors is installed: the plan's total is what transformers' own CompressedTensorsHfQuantizer
    builds on the meta model (preprocess_model) and its planner counts."""
    pytest.importorskip("compressed_tensors")
    from transformers.integrations.accelerate import compute_module_sizes
    from transformers.quantizers.auto import AutoHfQuantizer, AutoQuantizationConfig

    folder = _compressed_tensors(tmp_path / scheme, scheme)
    config = json.loads((folder / "config.json").read_text())
    model = _meta_model(config)
    quantizer = AutoHfQuantizer.from_config(AutoQuantizationConfig.from_dict(config["quantization_config"]),
                                            pre_quantized=True)
    quantizer.validate_environment(device_map="auto")
    with torch.device("meta"):
        quantizer.preprocess_model(model=model, dtype=torch.bfloat16, device_map="auto", checkpoint_files=None)
    total = int(compute_module_sizes(model, quantizer)[0][""])
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and data["weights_bytes"] + data["buffers_bytes"] == total, (data["weights_bytes"], total)


def test_a_config_only_spqr_source_is_planned_from_its_config_shapes(tmp_path: Path) -> None:
    """SpQRConfig.shapes gives each layer's element counts, and transformers builds spqr_quant's QuantizedLinear from
    them (create_placehodler: int64 dense_weights, int32 row_offsets / col_vals / in_perm): a config.json alone is
    planned as the folder with its weights, where it was planned dense at fp16 as "an upper bound" (2.3x)."""
    from tests.test_plan_quantized2 import _HeldLayer
    from tests.test_third_party_layouts27 import _spqr

    folder = _spqr(tmp_path / "spqr")
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "config.json").write_text((folder / "config.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    model = _meta_model(config)  # the oracle: each layer holding the tensors create_placehodler makes
    dtypes = {"dense_weights": torch.int64, "row_offsets": torch.int32, "col_vals": torch.int32,
              "in_perm": torch.int32}
    layers: dict[str, dict[str, tuple[tuple[int, ...], torch.dtype]]] = {}
    for key, count in config["quantization_config"]["shapes"].items():
        layer, _, leaf = key.removesuffix(".shape").rpartition(".")
        layers.setdefault(layer, {})[leaf] = ((count,), dtypes[leaf])
    for layer, held in layers.items():
        parent, _, child = layer.rpartition(".")
        setattr(model.get_submodule(parent), child, _HeldLayer(held))
    sizes = _sizes(model)
    budgets: dict[int | str, int] = {0: int(sizes[""] * 0.4), 1: int(sizes[""] * 0.4), "cpu": 10 * sizes[""]}
    expected = _from_pretrained_map(model, budgets)
    for source in (alone, folder):
        code, data = run_json("plan-devices", str(source), "--gpu", f"{budgets[0]}B", "--gpu", f"{budgets[1]}B",
                              "--cpu", f"{budgets['cpu']}B")
        assert code == 0 and data["weights_bytes"] + data["buffers_bytes"] == sizes[""], data
        placed = {key: (int(value) if str(value).isdigit() else value) for key, value in data["device_map"].items()}
        assert placed == expected, (source, placed, expected)
    said = " ".join(" ".join(data["warnings"]).split())
    assert "upper bound" not in said and "sized at the bytes the checkpoint stores for them" in said, said
    code, data = run_json("plan-devices", str(alone), "--gpu", "1GB")
    said = " ".join(" ".join(data["warnings"]).split())
    assert "upper bound" not in said and "are sized from the shapes its config gives (SpQRConfig.shapes" in said, said


def test_a_config_only_vptq_source_says_plainly_its_plan_is_a_bound(tmp_path: Path) -> None:
    """VPTQ's VQuantLinear works its tensors' shapes out in the vptq package from settings the config gives only in
    part: a config alone is planned dense, and the warning says why it is only a bound."""
    from tests.test_third_party_layouts27 import _vptq

    folder = _vptq(tmp_path / "vptq")
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "config.json").write_text((folder / "config.json").read_text())
    model = _meta_model(json.loads((folder / "config.json").read_text()))
    code, data = run_json("plan-devices", str(alone), "--gpu", "1GB")
    assert code == 0 and data["weights_bytes"] + data["buffers_bytes"] == _sizes(model)[""], data
    assert ("the config quantizes the weights (vptq): planned at the floating dtype, which over-sizes the Linear "
            "weights its quantizer keeps packed; the plan is an upper bound: no weights were read to size its packed "
            "layers from, and its config alone does not give their sizes") in data["warnings"], data["warnings"]
