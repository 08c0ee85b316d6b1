"""review67: a quick review of ux16 (the KV cache's per-token product), thirdparty25 (peft method names, a numeric
quant_method) and regress4 (the config key bound on objects transformers builds as configs). The per-token product
multiplied out, but for Falcon and GPT-BigCode (StarCoder) its KV heads were the query heads: those configs write
no `num_key_value_heads`, and transformers keeps one head for `multi_query` (num_kv_heads for Falcon-40B's new
decoder architecture); and a latent cache (DeepSeek-V3.2) whose indexer keys happened to double its bytes read as
'2 (keys and values)'."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import json_report, run_cli

# Each sized as transformers' own cache holds it (checked by a forward pass of the model at 128 tokens, bfloat16:
# 8,192 / 16,384 / 8,192 bytes, half the float32 figures below).
CASES = {
    "falcon-7b": ({"model_type": "falcon", "architectures": ["FalconForCausalLM"], "num_hidden_layers": 2,
                   "num_attention_heads": 8, "hidden_size": 64, "multi_query": True,
                   "new_decoder_architecture": False, "vocab_size": 100}, 1),
    "falcon-40b": ({"model_type": "falcon", "architectures": ["FalconForCausalLM"], "num_hidden_layers": 2,
                    "num_attention_heads": 8, "num_kv_heads": 2, "hidden_size": 64,
                    "new_decoder_architecture": True, "vocab_size": 100}, 2),
    "starcoder": ({"model_type": "gpt_bigcode", "architectures": ["GPTBigCodeForCausalLM"], "n_layer": 2,
                   "n_head": 8, "n_embd": 64, "vocab_size": 100}, 1),  # multi_query: true by default
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_multi_query_kv_heads_are_those_transformers_caches(tmp_path: Path, name: str) -> None:
    """falcon-7b's cache was sized with 71 KV heads (its query heads), 71 times what transformers keeps; the line
    said '8 KV heads' for this 8-head Falcon and StarCoder."""
    from transformers.models.falcon import modeling_falcon

    config, kv_heads = CASES[name]
    if name == "falcon-40b" and not hasattr(modeling_falcon, "repeat_kv"):
        # transformers 5.17 broadcasts the 2 KV groups to the 8 heads before caching them (measured there: 8 heads
        # x 128 tokens x 8 values, 131,072 bytes at float32)
        kv_heads = 8
    (tmp_path / "config.json").write_text(json.dumps(config))
    args = ("plan-devices", tmp_path / "config.json", "--gpu", "8GB", "--kv-cache", "--seq-len", "128")
    kv = json_report(*args)["kv_cache"]
    assert (kv["num_kv_heads"], kv["head_dim"], kv["dtype"]) == (kv_heads, 8, "float32"), kv
    assert kv["bytes_per_token"] == 2 * 2 * kv_heads * 8 * 4, kv
    assert kv["total_bytes"] == kv["bytes_per_token"] * 128, kv
    result = run_cli(*args)
    text = " ".join(result.stdout.split())
    head = "1 KV head" if kv_heads == 1 else f"{kv_heads} KV heads"
    assert f"2 (keys and values) x 2 layers x {head} x 8 values a head x 4 bytes (float32)" in text, text


def test_falcon_without_multi_query_keeps_a_head_per_query_head(tmp_path: Path) -> None:
    """multi_query false (and no new decoder architecture): every query head has its key and value (a guard on
    the fix, which held before it)."""
    config = {**CASES["falcon-7b"][0], "multi_query": False}
    (tmp_path / "config.json").write_text(json.dumps(config))
    kv = json_report("plan-devices", tmp_path / "config.json", "--gpu", "8GB", "--kv-cache",
                     "--seq-len", "16")["kv_cache"]
    assert kv["num_kv_heads"] == 8, kv


DEEPSEEK_V32 = {"model_type": "deepseek_v32", "architectures": ["DeepseekV32ForCausalLM"], "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 4, "hidden_size": 64, "intermediate_size": 128,
                "moe_intermediate_size": 32, "kv_lora_rank": 16, "q_lora_rank": 16, "qk_rope_head_dim": 8,
                "qk_nope_head_dim": 8, "v_head_dim": 8, "n_routed_experts": 4, "num_experts_per_tok": 2,
                "first_k_dense_replace": 1, "vocab_size": 100, "n_group": 1, "topk_group": 1, "index_n_heads": 2,
                "index_topk": 4}


def test_a_latent_cache_is_never_said_as_keys_and_values(tmp_path: Path) -> None:
    """DeepSeek-V3.2 caches a latent (kv_lora_rank + qk_rope_head_dim = 24 values) and its indexer's key per layer
    and token; with index_head_dim 24 the bytes came to 2 x the latent's, and the line read '2 (keys and values) x
    2 layers x 1 KV head x 24 values a head x 2 bytes': a latent is no keys and values."""
    (tmp_path / "config.json").write_text(json.dumps({**DEEPSEEK_V32, "index_head_dim": 24}))
    args = ("plan-devices", tmp_path / "config.json", "--gpu", "8GB", "--kv-cache", "--seq-len", "128", "--dtype",
            "bf16")
    from transformers.cache_utils import DYNAMIC_LAYER_TYPE_MAPPING

    kv = json_report(*args)["kv_cache"]
    assert set(kv) == {"batch", "seq_len", "num_layers", "num_kv_heads", "head_dim", "dtype", "bytes_per_token",
                       "total_bytes", "gpu_free_bytes", "fits_on_gpus", "note", "state_bytes", "cross_attention_bytes",
                       "encoder_seq_len"}, kv
    text = " ".join(run_cli(*args).stdout.split())
    if "deepseek_sparse_attention" in DYNAMIC_LAYER_TYPE_MAPPING:
        # transformers 5.17 caches no latent there, but each of the 4 heads' key (16) and value (8): 2 layers x
        # (4 x 24 + 24 indexer values) x 2 bytes, said as what it is
        assert (kv["bytes_per_token"], kv["total_bytes"]) == (480, 480 * 128), kv
        assert "(480 B/token: 2 layers x 4 KV heads x 24 values a head at bfloat16; transformers 5.17" in text, text
        assert "caches this sparse attention's keys and values expanded per head, not the latent" in text, text
        return
    # 2 layers x (24 latent + 24 indexer values) x 2 bytes
    assert (kv["bytes_per_token"], kv["total_bytes"]) == (192, 192 * 128), kv
    assert "keys and values" not in text, text
    assert "(192 B/token: 2 layers x 1 KV head x 24 values a head at bfloat16; multi-head latent attention" in text, \
        text
