"""A DeepSeek-V3-class many-tensor checkpoint, cheaply: sparse safetensors shards, a real-looking index and config.

Names, shapes and dtypes are DeepSeek-V3's (and R1's): F8_E4M3 projection weights, each with its F32
`weight_scale_inv` of 128x128 block scales, BF16 norms, embeddings and router, F32 router bias, 3 dense layers
then MoE layers of 256 routed experts plus a shared one, and the multi-token-prediction layer (`model.layers.61`)
the released checkpoint carries. At full scale that is 91,991 tensors over 163 shards, as its
model.safetensors.index.json maps. Every shard has a full header; its data section is a hole (truncate), so
the whole ~690 GB checkpoint costs a few MB of disk and seconds to write. Pure Python (no torch), so tests can
build a scaled-down one (`layers=5, experts=8`) in tmp_path.

    python -m benchmarks.deepseek_synth bench-data/deepseek-v3            # full scale
    python -m benchmarks.deepseek_synth /tmp/ds --layers 5 --experts 8 --shards 6
"""

from __future__ import annotations

import argparse
import json
import math
import struct
from pathlib import Path

HIDDEN = 7168
VOCAB = 129280
BLOCK = 128  # weight_block_size [128, 128] of the fp8 quantization
DTYPE_BYTES = {"F8_E4M3": 1, "BF16": 2, "F32": 4}

Spec = tuple[str, tuple[int, ...], str]


def _fp8(name: str, rows: int, cols: int) -> list[Spec]:
    """An fp8 weight and its block scales, as DeepSeek's checkpoint stores each quantized Linear."""
    scale = (name.removesuffix(".weight") + ".weight_scale_inv", (math.ceil(rows / BLOCK), math.ceil(cols / BLOCK)))
    return [(name, (rows, cols), "F8_E4M3"), (scale[0], scale[1], "F32")]


def _layer(i: int, dense_layers: int, experts: int) -> list[Spec]:
    p = f"model.layers.{i}."
    specs: list[Spec] = [
        (p + "input_layernorm.weight", (HIDDEN,), "BF16"),
        (p + "post_attention_layernorm.weight", (HIDDEN,), "BF16"),
        (p + "self_attn.q_a_layernorm.weight", (1536,), "BF16"),
        (p + "self_attn.kv_a_layernorm.weight", (512,), "BF16"),
        *_fp8(p + "self_attn.q_a_proj.weight", 1536, HIDDEN),
        *_fp8(p + "self_attn.q_b_proj.weight", 128 * 192, 1536),
        *_fp8(p + "self_attn.kv_a_proj_with_mqa.weight", 512 + 64, HIDDEN),
        *_fp8(p + "self_attn.kv_b_proj.weight", 128 * (128 + 128), 512),
        *_fp8(p + "self_attn.o_proj.weight", HIDDEN, 128 * 128),
    ]
    if i < dense_layers:
        return specs + [
            *_fp8(p + "mlp.gate_proj.weight", 18432, HIDDEN),
            *_fp8(p + "mlp.up_proj.weight", 18432, HIDDEN),
            *_fp8(p + "mlp.down_proj.weight", HIDDEN, 18432),
        ]
    specs += [(p + "mlp.gate.weight", (experts, HIDDEN), "BF16"),
              (p + "mlp.gate.e_score_correction_bias", (experts,), "F32")]
    for e in [*(f"experts.{j}." for j in range(experts)), "shared_experts."]:
        specs += [
            *_fp8(p + f"mlp.{e}gate_proj.weight", 2048, HIDDEN),
            *_fp8(p + f"mlp.{e}up_proj.weight", 2048, HIDDEN),
            *_fp8(p + f"mlp.{e}down_proj.weight", HIDDEN, 2048),
        ]
    return specs


def deepseek_v3_specs(layers: int = 61, experts: int = 256, dense_layers: int = 3, mtp: bool = True) -> list[Spec]:
    """Every tensor of a DeepSeek-V3 checkpoint (91,991 at the defaults), in the index's layer order."""
    specs: list[Spec] = [("model.embed_tokens.weight", (VOCAB, HIDDEN), "BF16")]
    for i in range(layers):
        specs += _layer(i, dense_layers, experts)
    specs += [("model.norm.weight", (HIDDEN,), "BF16"), ("lm_head.weight", (VOCAB, HIDDEN), "BF16")]
    if mtp:  # the multi-token-prediction layer: a full MoE layer plus its own embedding, norms and head
        p = f"model.layers.{layers}."
        specs += _layer(layers, dense_layers, experts) + [
            (p + "enorm.weight", (HIDDEN,), "BF16"),
            (p + "hnorm.weight", (HIDDEN,), "BF16"),
            (p + "eh_proj.weight", (HIDDEN, 2 * HIDDEN), "BF16"),
            (p + "embed_tokens.weight", (VOCAB, HIDDEN), "BF16"),
            (p + "shared_head.norm.weight", (HIDDEN,), "BF16"),
            (p + "shared_head.head.weight", (VOCAB, HIDDEN), "BF16"),
        ]
    return specs


def _nbytes(spec: Spec) -> int:
    return math.prod(spec[1]) * DTYPE_BYTES[spec[2]]


def write_sparse_shard(path: Path, specs: list[Spec]) -> int:
    """A valid safetensors file whose data section is a hole: the real header, no tensor bytes written."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, dtype in specs:
        size = _nbytes((name, shape, dtype))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + offset)
    return offset


def config(layers: int, experts: int, dense_layers: int, mtp: bool) -> dict[str, object]:
    """DeepSeek-V3's config.json, with the layer and expert counts given."""
    return {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "hidden_size": HIDDEN, "intermediate_size": 18432, "moe_intermediate_size": 2048,
        "num_hidden_layers": layers, "num_nextn_predict_layers": 1 if mtp else 0,
        "first_k_dense_replace": dense_layers, "n_routed_experts": experts, "n_shared_experts": 1,
        "num_experts_per_tok": min(8, experts), "n_group": 8 if experts % 8 == 0 else 1,
        "topk_group": 4 if experts % 8 == 0 else 1, "moe_layer_freq": 1, "norm_topk_prob": True,
        "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "topk_method": "noaux_tc",
        "num_attention_heads": 128, "num_key_value_heads": 128, "q_lora_rank": 1536, "kv_lora_rank": 512,
        "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "vocab_size": VOCAB,
        "max_position_embeddings": 163840, "rms_norm_eps": 1e-06, "rope_theta": 10000, "hidden_act": "silu",
        "attention_bias": False, "attention_dropout": 0.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "bos_token_id": 0, "eos_token_id": 1, "initializer_range": 0.02, "use_cache": True,
        "rope_scaling": {"type": "yarn", "factor": 40, "beta_fast": 32, "beta_slow": 1, "mscale": 1.0,
                         "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096},
        "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                "weight_block_size": [BLOCK, BLOCK]},
        "transformers_version": "4.46.3",
    }


def write_deepseek_v3(
    folder: Path, layers: int = 61, experts: int = 256, shards: int = 163, dense_layers: int = 3, mtp: bool = True
) -> int:
    """Write the checkpoint (shards, index, config.json) into `folder`; return its tensor count.

    Tensors go to shards in order, about equal tensor counts each, as DeepSeek's own split does (a layer
    spans shard boundaries).
    """
    specs = deepseek_v3_specs(layers, experts, dense_layers, mtp)
    folder.mkdir(parents=True, exist_ok=True)
    per_shard = math.ceil(len(specs) / shards)
    weight_map: dict[str, str] = {}
    total = 0
    for k in range(shards):
        chunk = specs[k * per_shard:(k + 1) * per_shard]
        name = f"model-{k + 1:05d}-of-{shards:06d}.safetensors"
        total += write_sparse_shard(folder / name, chunk)
        weight_map.update((spec[0], name) for spec in chunk)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (folder / "config.json").write_text(json.dumps(config(layers, experts, dense_layers, mtp), indent=2))
    return len(specs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--layers", type=int, default=61)
    parser.add_argument("--experts", type=int, default=256)
    parser.add_argument("--shards", type=int, default=163)
    args = parser.parse_args()
    print(write_deepseek_v3(args.folder, args.layers, args.experts, args.shards), "tensors")


if __name__ == "__main__":
    main()
