"""plan-devices on checkpoints their config quantizes with a quantizer other than bitsandbytes (GPTQ, AWQ).

from_pretrained replaces each quantized Linear with the quantizer's layer (GPTQ: `qweight`, `qzeros`, `scales`,
`g_idx` buffers) before it computes the device map, and GPTQ's quantizer keeps no headroom in the budgets
(`adjust_max_memory` is the base class's). The plan was bitsandbytes' (int4 weights, scales and zero points left
out, 10% of every budget kept free). The oracle here is transformers' own `_get_device_map` run on the model with
its Linear layers replaced by modules holding the checkpoint's quantized tensors as buffers (what optimum's
`convert_model` does; optimum and gptqmodel are not installed here).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli, run_json

HIDDEN, INTERMEDIATE, LAYERS, VOCAB, GROUP = 256, 512, 3, 1000, 128


def write_gptq_llama(folder: Path) -> dict[str, torch.Tensor]:
    """A 4-bit GPTQ Llama as AutoGPTQ / GPTQModel save it: packed int32 `qweight` (in/8 x out), `qzeros`, fp16
    `scales` per group of 128 inputs, `g_idx`; embeddings, norms and lm_head in fp16."""
    folder.mkdir(parents=True)
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": HIDDEN,
              "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS, "num_attention_heads": 4,
              "num_key_value_heads": 4, "vocab_size": VOCAB, "torch_dtype": "float16", "tie_word_embeddings": False,
              "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": GROUP, "desc_act": False,
                                      "sym": True}}
    (folder / "config.json").write_text(json.dumps(config))
    half = torch.float16
    tensors = {"model.embed_tokens.weight": torch.zeros(VOCAB, HIDDEN, dtype=half),
               "lm_head.weight": torch.zeros(VOCAB, HIDDEN, dtype=half),
               "model.norm.weight": torch.ones(HIDDEN, dtype=half)}

    def quantized(name: str, inputs: int, outputs: int) -> None:
        tensors[f"{name}.qweight"] = torch.zeros(inputs // 8, outputs, dtype=torch.int32)
        tensors[f"{name}.qzeros"] = torch.zeros(inputs // GROUP, outputs // 8, dtype=torch.int32)
        tensors[f"{name}.scales"] = torch.zeros(inputs // GROUP, outputs, dtype=half)
        tensors[f"{name}.g_idx"] = torch.zeros(inputs, dtype=torch.int32)

    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            quantized(f"{prefix}.self_attn.{proj}", HIDDEN, HIDDEN)
        quantized(f"{prefix}.mlp.gate_proj", HIDDEN, INTERMEDIATE)
        quantized(f"{prefix}.mlp.up_proj", HIDDEN, INTERMEDIATE)
        quantized(f"{prefix}.mlp.down_proj", INTERMEDIATE, HIDDEN)
        tensors[f"{prefix}.input_layernorm.weight"] = torch.ones(HIDDEN, dtype=half)
        tensors[f"{prefix}.post_attention_layernorm.weight"] = torch.ones(HIDDEN, dtype=half)
    save_file(tensors, folder / "model.safetensors")
    return tensors


class QuantLinearStandIn(torch.nn.Module):
    """What a GPTQ QuantLinear holds, as buffers of the checkpoint's shapes and dtypes (on the meta device)."""

    def __init__(self, stored: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for name, tensor in stored.items():
            self.register_buffer(name, torch.empty(tensor.shape, dtype=tensor.dtype, device="meta"))


def transformers_map(folder: Path, tensors: dict[str, torch.Tensor], max_memory: dict[int | str, int]
                     ) -> dict[str, int | str]:
    """transformers' `_get_device_map` ("auto", GPTQ's quantizer: no budget adjustment, element sizes as stored)
    on the model from_pretrained builds, its Linear layers replaced as optimum's convert_model replaces them."""
    import transformers
    from transformers.integrations.accelerate import _get_device_map

    config = transformers.AutoConfig.from_pretrained(folder)
    config.quantization_config = None
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config).to(torch.float16)
    for name, module in list(model.named_modules()):
        if type(module) is torch.nn.Linear and f"{name}.qweight" in tensors:
            stored = {key.rpartition(".")[2]: value for key, value in tensors.items()
                      if key.rpartition(".")[0] == name}
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, QuantLinearStandIn(stored))
    return dict(_get_device_map(model, "auto", dict(max_memory), None))


@pytest.mark.parametrize("gpus", [[600_000], [1_100_000], [1_400_000, 700_000], [1_500_000, 400_000]])
def test_a_gptq_plan_is_transformers_map_over_its_stored_layers(tmp_path: Path, gpus: list[int]) -> None:
    """Budgets on which the old plan differed (all but the first): 10% kept back, and int4 weights without their
    scales, put the layers elsewhere than transformers does; on a grid of 39 budgets, 11 differed before, none now."""
    folder = tmp_path / "gptq"
    tensors = write_gptq_llama(folder)
    args = [arg for size in gpus for arg in ("--gpu", f"{size}B")]
    code, data = run_json("plan-devices", str(folder), *args, "--cpu", "1GB", "--json")
    assert code in (0, 1), data
    expected = transformers_map(folder, tensors, {**dict(enumerate(gpus)), "cpu": 10**9})
    assert data["device_map"] == expected
    stored = sum(t.numel() * t.element_size() for t in tensors.values())
    assert data["weights_bytes"] + data["buffers_bytes"] - 128 * 2 == stored  # but the rotary inv_freq buffer
    warnings = " ".join(data["warnings"])
    # 21 quantized layers, and lm_head, which GPTQ leaves in fp16 (it was counted among the quantized: "22 of 22").
    assert "packed weights, scales, zero points: 21 of 22); 1 other (lm_head) stored unquantized, at its stored " \
        "size" in warnings and "keeps no headroom" in warnings
    assert not any(d.get("held_back") and any(h["reason"] == "quantizer-headroom" for h in d["held_back"])
                   for d in data["devices"])


def test_a_gptq_checkpoint_whose_names_carry_another_prefix_says_so(tmp_path: Path) -> None:
    """Names under another prefix (`base_model.model.`) match no Linear layer of the model: the layers keep the
    4-bit size, and the warning said the source held no quantized tensors, which it does."""
    folder = tmp_path / "gptq"
    tensors = write_gptq_llama(folder)
    save_file({f"base_model.model.{name}": tensor for name, tensor in tensors.items()}, folder / "model.safetensors")
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB", "--json")
    assert code == 0, data
    warnings = " ".join(data["warnings"])
    assert "none of the checkpoint's 93 tensor names is under a Linear layer" in warnings
    assert "holds no quantized tensors" not in warnings


def test_gptq_experts_the_model_builds_fused_are_refused(tmp_path: Path) -> None:
    """A GPTQ Mixtral stores each expert as its own quantized Linear (`experts.0.w1.qweight`); transformers 5 builds
    the experts fused (3-D tensors) and GPTQ replaces nn.Linear layers only, so from_pretrained leaves the experts
    at their init: no plan (it was planned at fp16, "an upper bound"; tests/test_quantized9.py holds the oracle)."""
    folder = tmp_path / "gptq-moe"
    tensors = write_gptq_llama(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="mixtral", architectures=["MixtralForCausalLM"], num_local_experts=2)
    (folder / "config.json").write_text(json.dumps(config))
    experts = {}
    for name, tensor in tensors.items():
        if ".mlp." in name:
            for expert, proj in ((0, "w1"), (1, "w1")):
                moved = name.replace(".mlp.gate_proj.", f".block_sparse_moe.experts.{expert}.{proj}.")
                if moved != name:
                    experts[moved] = tensor.clone()
        else:
            experts[name] = tensor
    save_file(experts, folder / "model.safetensors")
    result = run_cli("plan-devices", str(folder), "--gpu", "1GB", "--json")
    assert result.exit_code == 2 and not result.stdout, result.stdout
    said = " ".join(result.stderr.split())
    assert f"stores its MoE experts as quantized Linear layers ({LAYERS * 2 * 4:,} tensors" in said, said
