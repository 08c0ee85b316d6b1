"""Quantized checkpoints' counts (inspect) and plans (plan-devices) that earlier sessions left open.

optimum-quanto int4 / int2: a WeightQBitsTensor groups its [out, in] weight into [out x in / group_size,
group_size] rows (axis 0), one `_scale` / `_shift` row per group, and its PackedTensor packs 8 / bits of those
rows into each uint8 row (`weight._data._data` once serialized; the padding rows dropped on unpacking). The
files here are packed as quanto packs them (written here from its packing rules; quanto is not installed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli, run_json


def quanto_pack(weight: torch.Tensor, bits: int, group_size: int | None) -> dict[str, torch.Tensor]:
    """A Linear weight as quanto's WeightQBitsTensor.save_to_state_dict stores it (axis 0, affine)."""
    grouped = weight if group_size is None else weight.reshape(-1, group_size)
    levels = 2**bits - 1
    low, high = grouped.amin(dim=1, keepdim=True), grouped.amax(dim=1, keepdim=True)
    scale = ((high - low) / levels).clamp(min=1e-6)
    values = ((grouped - low) / scale).round().clamp(0, levels).to(torch.uint8)
    per = 8 // bits
    rows = -(-values.shape[0] // per)
    packed = torch.zeros(rows, values.shape[1], dtype=torch.uint8)
    for i in range(per):  # quanto's pack_weights: the i-th slice of `rows` rows shifted by bits x i
        part = values[i * rows:(i + 1) * rows]
        packed[: part.shape[0]] |= part << (bits * i)
    return {"_data._data": packed, "_scale": scale.half(), "_shift": (-low / scale).half()}


def quanto_unpack(packed: torch.Tensor, bits: int, rows: int) -> torch.Tensor:
    """quanto's PackedTensor.unpack: each slice back, then the padding rows dropped (its size's first dim)."""
    per = 8 // bits
    parts = [(packed >> (bits * i)) & (2**bits - 1) for i in range(per)]
    return torch.cat(parts)[:rows]


# (out, in, group size): grouped by 128, an odd number of groups (padding rows for int4 and int2), ungrouped.
LAYERS = {"model.layers.0.mlp.up_proj": (50, 128, 128), "model.layers.0.mlp.down_proj": (64, 256, 128),
          "model.layers.0.self_attn.q_proj": (6, 64, None)}


def write_quanto(folder: Path, bits: int, config: bool) -> tuple[int, dict[str, int]]:
    """A quanto checkpoint: its Linear layers packed at `bits`, a norm and embeddings in fp16. Returns the
    parameters the original model had and each layer's weight numel as quanto's own unpacking yields it."""
    folder.mkdir()
    torch.manual_seed(0)
    tensors = {"model.embed_tokens.weight": torch.randn(32, 64).half(), "model.norm.weight": torch.ones(64).half()}
    original = sum(t.numel() for t in tensors.values())
    unpacked: dict[str, int] = {}
    for name, (out, inp, group) in LAYERS.items():
        weight = torch.randn(out, inp)
        original += weight.numel()
        parts = quanto_pack(weight, bits, group)
        rows = parts["_scale"].shape[0]
        unpacked[name] = quanto_unpack(parts["_data._data"], bits, rows).numel()
        tensors |= {f"{name}.weight.{key}": value for key, value in parts.items()}
        tensors[f"{name}.input_scale"] = torch.ones(()).half()  # QModuleMixin's activation scales
        tensors[f"{name}.output_scale"] = torch.ones(()).half()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    settings: dict[str, object] = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
    if config:
        settings["quantization_config"] = {"quant_method": "quanto", "weights": f"int{bits}", "activations": None}
    (folder / "config.json").write_text(json.dumps(settings))
    return original, unpacked


def _node(tree: list[dict], path: str) -> dict:
    """The module-tree node whose dotted path (the names of the nodes down to it, joined) is `path`."""
    for node in tree:
        if path == node["name"]:
            return node
        if path.startswith(node["name"] + "."):
            return _node(node["children"], path[len(node["name"]) + 1:])
    raise AssertionError(f"{path} not in {[n['name'] for n in tree]}")


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("config", [True, False])
def test_quanto_int4_and_int2_layers_count_the_weights_quanto_unpacks(tmp_path: Path, bits: int,
                                                                     config: bool) -> None:
    """The packed `weight._data._data` counted as its stored bytes (a half or a quarter of the weights), and
    without a quantization_config (quanto's own save) the checkpoint was not seen as quantized at all: its
    scales and shifts counted as parameters."""
    folder = tmp_path / f"quanto-int{bits}"
    original, unpacked = write_quanto(folder, bits, config)
    assert unpacked == {name: out * inp for name, (out, inp, _) in LAYERS.items()}  # the oracle is sound
    code, data = run_json("inspect", str(folder), "--json")
    assert code == 0, data
    quantized = data["quantized"]
    assert quantized["parameters"] == original, quantized
    assert quantized["packed_tensors"] == len(LAYERS) and quantized["side_tensors"] >= 2 * len(LAYERS)
    assert quantized["method"] == ("quanto" if config else "quanto-like (no quantization_config)")
    for name, numel in unpacked.items():
        node = _node(data["module_tree"], name + ".weight")
        assert node["num_params"] == numel, (name, node)


# GPTQ / AWQ MoE checkpoints ------------------------------------------------------------------------------------
H, INTER, EXPERTS, GROUP = 64, 128, 2, 32


def _quantized_linear(method: str, name: str, inputs: int, outputs: int) -> dict[str, torch.Tensor]:
    """One Linear as AutoGPTQ / GPTQModel (qweight [in/8, out], g_idx) or AutoAWQ (qweight [in, out/8]) store it."""
    half = torch.float16
    if method == "gptq":
        return {f"{name}.qweight": torch.zeros(inputs // 8, outputs, dtype=torch.int32),
                f"{name}.qzeros": torch.zeros(inputs // GROUP, outputs // 8, dtype=torch.int32),
                f"{name}.scales": torch.ones(inputs // GROUP, outputs, dtype=half),
                f"{name}.g_idx": torch.arange(inputs, dtype=torch.int32) // GROUP}
    return {f"{name}.qweight": torch.zeros(inputs, outputs // 8, dtype=torch.int32),
            f"{name}.qzeros": torch.zeros(inputs // GROUP, outputs // 8, dtype=torch.int32),
            f"{name}.scales": torch.ones(inputs // GROUP, outputs, dtype=half)}


def write_quantized_moe(folder: Path, model_type: str, method: str) -> dict[str, torch.Tensor]:
    """A one-layer Mixtral (`block_sparse_moe.experts.N.w1/w2/w3`) or Qwen2-MoE (`mlp.experts.N.gate_proj`, a
    shared expert) quantized by GPTQ or AWQ, its experts one quantized Linear each, as those tools save them."""
    folder.mkdir()
    config: dict[str, object] = {
        "model_type": model_type, "hidden_size": H, "intermediate_size": INTER, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 128, "torch_dtype": "float16",
        "tie_word_embeddings": False,
        "quantization_config": {"quant_method": method, "bits": 4, "group_size": GROUP, "desc_act": False,
                                "sym": True, **({"version": "gemm", "zero_point": True} if method == "awq" else {})}}
    tensors = {"model.embed_tokens.weight": torch.zeros(128, H).half(), "lm_head.weight": torch.zeros(128, H).half(),
               "model.norm.weight": torch.ones(H).half(), "model.layers.0.input_layernorm.weight": torch.ones(H).half(),
               "model.layers.0.post_attention_layernorm.weight": torch.ones(H).half()}
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        tensors |= _quantized_linear(method, f"model.layers.0.self_attn.{proj}", H, H)
    if model_type == "mixtral":
        config |= {"architectures": ["MixtralForCausalLM"], "num_local_experts": EXPERTS, "num_experts_per_tok": 1}
        moe = "model.layers.0.block_sparse_moe"
        tensors[f"{moe}.gate.weight"] = torch.zeros(EXPERTS, H).half()
        for expert in range(EXPERTS):
            for proj, (inputs, outputs) in {"w1": (H, INTER), "w2": (INTER, H), "w3": (H, INTER)}.items():
                tensors |= _quantized_linear(method, f"{moe}.experts.{expert}.{proj}", inputs, outputs)
    else:
        config |= {"architectures": ["Qwen2MoeForCausalLM"], "num_experts": EXPERTS, "num_experts_per_tok": 1,
                   "moe_intermediate_size": INTER, "shared_expert_intermediate_size": INTER, "decoder_sparse_step": 1}
        moe = "model.layers.0.mlp"
        tensors[f"{moe}.gate.weight"] = torch.zeros(EXPERTS, H).half()
        tensors[f"{moe}.shared_expert_gate.weight"] = torch.zeros(1, H).half()
        for expert in [*range(EXPERTS), None]:
            prefix = f"{moe}.shared_expert" if expert is None else f"{moe}.experts.{expert}"
            shapes = {"gate_proj": (H, INTER), "up_proj": (H, INTER), "down_proj": (INTER, H)}
            for proj, (inputs, outputs) in shapes.items():
                tensors |= _quantized_linear(method, f"{prefix}.{proj}", inputs, outputs)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return tensors


def transformers_loading_info(folder: Path, tmp_path: Path) -> dict[str, set[str]]:
    """transformers' own from_pretrained (CPU) of the same files without the quantization_config: GPTQ's and AWQ's
    quantizers (which need optimum / gptqmodel, not installed) change no key handling, as asserted below; they
    only swap the nn.Linear layers for quantized ones."""
    import transformers
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizer_awq import AwqQuantizer
    from transformers.quantizers.quantizer_gptq import GptqHfQuantizer

    # the key-handling hooks of the installed transformers (5.17 has no serialized_names / get_load_operations)
    hooks = [hook for hook in ("get_load_operations", "update_weight_conversions", "get_weight_conversions")
             if hasattr(HfQuantizer, hook)]
    assert "update_weight_conversions" in hooks
    for quantizer in (GptqHfQuantizer, AwqQuantizer):
        assert getattr(quantizer, "serialized_names", {}) == {}, quantizer
        assert all(getattr(quantizer, hook) is getattr(HfQuantizer, hook) for hook in hooks), (quantizer, hooks)
    plain = tmp_path / "unquantized"
    plain.mkdir()
    config = json.loads((folder / "config.json").read_text())
    del config["quantization_config"]
    (plain / "config.json").write_text(json.dumps(config))
    (plain / "model.safetensors").symlink_to(folder / "model.safetensors")
    _, info = transformers.AutoModelForCausalLM.from_pretrained(plain, output_loading_info=True)
    return {key: set(value) for key, value in info.items() if isinstance(value, (set, list))}


@pytest.mark.parametrize(("model_type", "method"), [("mixtral", "gptq"), ("qwen2_moe", "gptq"), ("mixtral", "awq")])
def test_gptq_and_awq_moe_experts_transformers_cannot_load_are_refused_not_planned(
        tmp_path: Path, model_type: str, method: str) -> None:
    """transformers 5 builds these experts fused (3-D `experts.gate_up_proj`) and GPTQ / AWQ replace nn.Linear
    layers only: the per-expert `qweight`s are unexpected keys and the fused experts missing. plan-devices planned
    the experts unquantized (exit 0, "an upper bound"), a map for a load that yields a model with random experts."""
    folder = tmp_path / f"{model_type}-{method}"
    tensors = write_quantized_moe(folder, model_type, method)
    info = transformers_loading_info(folder, tmp_path)
    experts = {name for name in tensors if ".experts." in name}
    reported = {name.replace(".block_sparse_moe.", ".mlp.") for name in experts}  # transformers 5's rename
    assert reported <= info["unexpected_keys"], reported - info["unexpected_keys"]
    assert {"model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.down_proj"} \
        <= info["missing_keys"], info["missing_keys"]

    result = run_cli("plan-devices", str(folder), "--gpu", "24GB", "--json")
    assert result.exit_code == 2, result.stdout
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    said = " ".join(result.stderr.split())
    assert str(folder) in said and f"this {method.upper()} checkpoint stores its MoE experts" in said, said
    fused = r"builds \w+'s experts fused \(model\.layers\.0\.mlp\.experts\.(gate_up|down)_proj, 3-D\)"
    assert f"({len(experts):,} tensors, e.g. " in said and re.search(fused, said), said
    assert "no device map to plan" in said and result.stdout == ""
