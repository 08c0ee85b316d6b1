"""compatkv: `plan-devices --kv-cache` under transformers 5.17 (the lent GPU machine's), whose cache API differs from
5.25's, each difference emulated here on the installed transformers with monkeypatch:

* 5.17's `get_layer_types_and_kwargs` leaves Gemma 3n's last `num_kv_shared_layers` out of its list (5.25 names
  them "dummy"): the list no longer matched the layers, the config was read instead, and the shared layers were
  counted (25.17 MB where both versions' caches hold 16.78 MB);
* 5.17 names DeepSeek-V3.2's layers "deepseek_sparse_attention" and caches their keys and values expanded per head
  (measured there: 18,304 bytes for the cache below, where 5.25 holds the latent's 4,160): the estimate was 0;
* 5.17 names the layers of a model that do not attend "moe" / "mlp" (5.25: "dummy");
* 5.17's Mamba output names its cache `cache_params` (5.25: `cache`): the recurrent states went unsized.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from tests.helpers import run_json
from weightdoctor.plan_devices import estimate_kv_cache


def _as_517(real: Any, names: dict[str, str] | None = None) -> Any:
    """transformers 5.17's shape of `get_layer_types_and_kwargs`: one dict of kwargs for all layers, the last
    num_kv_shared_layers left out of the list, and its older names of some kinds (`names`)."""

    def older(config: Any) -> tuple[list[str], dict[str, Any]]:
        kinds, per_layer = real(config)
        if isinstance(per_layer, dict):  # transformers 5.17 itself: nothing to emulate
            return kinds, per_layer
        merged: dict[str, Any] = {}
        for kwargs in per_layer:
            merged.update(kwargs)
        shared = getattr(config, "num_kv_shared_layers", None) or 0
        kinds = list(kinds)[: len(kinds) - shared]
        return [(names or {}).get(kind, kind) for kind in kinds], merged

    return older


def _gemma3n() -> dict[str, Any]:
    import transformers

    return transformers.Gemma3nTextConfig(
        vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, sliding_window=8, num_kv_shared_layers=2,
        max_position_embeddings=64).to_dict()


def test_gemma3n_shared_layers_left_out_of_the_list_cache_nothing_as_when_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Measured under both versions (a seeded Gemma3nForCausalLM, 6 tokens, fp32): the cache holds 2 layers' keys
    and values, 3,072 bytes; 5.17's list of 2 kinds for 4 layers sized 4 layers (6,144)."""
    import transformers.cache_utils as cache_utils

    config = _gemma3n()
    newer = estimate_kv_cache(config, "fp32", batch=1, seq_len=6)
    (tmp_path / "config.json").write_text(json.dumps(config))
    args = ("plan-devices", str(tmp_path / "config.json"), "--gpu", "1GB", "--kv-cache", "--seq-len", "6",
            "--dtype", "fp32")
    code, newer_json = run_json(*args)
    monkeypatch.setattr(cache_utils, "get_layer_types_and_kwargs", _as_517(cache_utils.get_layer_types_and_kwargs))
    older = estimate_kv_cache(config, "fp32", batch=1, seq_len=6)
    assert (older.num_layers, older.total_bytes) == (newer.num_layers, newer.total_bytes) == (2, 2 * 2 * 2 * 16 * 4 * 6)
    assert older._layer_bytes == newer._layer_bytes == (1536, 1536, 0, 0)
    assert "2 of 4 layers cache nothing" in (older.note or "")
    code_older, older_json = run_json(*args)
    assert code == code_older == 0 and older_json["kv_cache"] == newer_json["kv_cache"], older_json["kv_cache"]


def _deepseek_v32() -> dict[str, Any]:
    import transformers

    return transformers.DeepseekV32Config(
        vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=64, moe_intermediate_size=16, kv_lora_rank=8, q_lora_rank=12,
        qk_rope_head_dim=4, qk_nope_head_dim=6, v_head_dim=10, n_routed_experts=4, num_experts_per_tok=2,
        first_k_dense_replace=1, n_group=1, topk_group=1, index_topk=4, index_head_dim=8, index_n_heads=2).to_dict()


def test_deepseek_v32_sparse_attention_of_517_is_sized_as_its_expanded_keys_and_values(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers 5.17's DeepSeek-V3.2 caches, per layer and token, each of the 4 heads' key (qk_nope_head_dim 6 +
    qk_rope_head_dim 4) and value (v_head_dim 10), and the indexer's key (8): measured there for this config, 2 x 13
    tokens, fp32, 2 x (4 x 20 + 8) x 4 x 2 x 13 = 18,304 bytes. The estimate was 0 ("no layer attends")."""
    import transformers.cache_utils as cache_utils

    config = _deepseek_v32()
    latent = estimate_kv_cache(config, "fp32", batch=2, seq_len=13)
    monkeypatch.setattr(cache_utils, "get_layer_types_and_kwargs", _as_517(
        cache_utils.get_layer_types_and_kwargs, {"indexed_attention": "deepseek_sparse_attention"}))
    kv = estimate_kv_cache(config, "fp32", batch=2, seq_len=13)
    assert (kv.num_layers, kv.num_kv_heads, kv.head_dim, kv._latent) == (2, 4, 20, False), kv
    assert kv.total_bytes == 18304 and kv.bytes_per_token == 2 * (4 * 20 + 8) * 4, kv
    assert kv._layer_bytes == (9152, 9152)
    assert ("caches this sparse attention's keys and values expanded per head, not the latent: 4 heads x "
            "(qk_nope_head_dim + qk_rope_head_dim = 10 key values + v_head_dim = 10 values = 20 a head) per layer "
            "and token; plus the indexer's key of each token, index_head_dim = 8 values per layer") in (kv.note or "")
    # the same config under 5.25's names keeps the latent (2 x (8 + 4 + 8) x 4 x 2 x 13)
    if "indexed_attention" in cache_utils.DYNAMIC_LAYER_TYPE_MAPPING:
        assert (latent.total_bytes, latent._latent) == (4160, True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    code, data = run_json("plan-devices", str(tmp_path / "config.json"), "--gpu", "1GB", "--kv-cache",
                          "--seq-len", "13", "--batch", "2", "--dtype", "fp32")
    assert code == 0 and (data["kv_cache"]["total_bytes"], data["kv_cache"]["num_kv_heads"]) == (18304, 4), data


def test_layers_517_names_moe_cache_nothing_as_5_25s_dummy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer that does not attend ("moe" in layer_types): 5.25 lays it out as "dummy", 5.17 keeps "moe" (an empty
    LinearAttentionLayer); both cache nothing there, and the estimate says so under either."""
    import transformers.cache_utils as cache_utils

    config = {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "hidden_size": 32, "intermediate_size": 48, "vocab_size": 64, "layer_types": ["full_attention", "moe"]}
    newer = estimate_kv_cache(config, "fp16", batch=1, seq_len=10)
    monkeypatch.setattr(cache_utils, "get_layer_types_and_kwargs", _as_517(
        cache_utils.get_layer_types_and_kwargs, {"dummy": "moe"}))
    older = estimate_kv_cache(config, "fp16", batch=1, seq_len=10)
    assert (older.num_layers, older.total_bytes, older._layer_bytes) == (newer.num_layers, newer.total_bytes,
                                                                         newer._layer_bytes) == (1, 640, (640, 0))
    assert older.note == newer.note and "1 of 2 layers caches nothing" in (older.note or "")


class _OutputAs517(torch.nn.Module):
    """A model whose output is transformers 5.17's MambaCausalLMOutput: its cache named `cache_params` alone."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **kwargs: Any) -> SimpleNamespace:
        output = self.model(**kwargs)
        return SimpleNamespace(logits=output.logits,
                               cache_params=output["cache"] if "cache" in output else output["cache_params"])


def test_mamba_states_are_read_from_517s_cache_params(monkeypatch: pytest.MonkeyPatch) -> None:
    """3 layers x 2 sequences x 64 channels x (conv window 4 + SSM state 8) x 4 bytes = 18,432 at fp32, under 5.25
    and (measured) 5.17; with the cache named `cache_params` the states were "(not counted)", state_bytes None."""
    import transformers

    import weightdoctor.meta_model as meta_model

    config = transformers.MambaConfig(vocab_size=64, hidden_size=32, state_size=8, num_hidden_layers=3, expand=2,
                                      conv_kernel=4, architectures=["MambaForCausalLM"]).to_dict()
    real = meta_model.build_meta_model
    monkeypatch.setattr(meta_model, "build_meta_model", lambda *a, **k: _OutputAs517(real(*a, **k)))
    kv = estimate_kv_cache(config, "fp32", batch=2, seq_len=None)
    assert (kv.state_bytes, kv.total_bytes) == (18432, 0), kv
    assert "not counted" not in (kv.note or "") and "all 3 layers keep a recurrent state" in (kv.note or "")


def test_falcon_new_decoder_architecture_caches_every_head_where_transformers_broadcasts_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Falcon-40B's layout (new_decoder_architecture, 2 KV groups for 4 heads): transformers 5.25 caches the 2
    groups (3 layers x 2 x 2 heads x 8 x 4 bytes x 2 x 5 tokens = 3,840 B), 5.17 broadcasts them to the 4 heads
    before its cache update and caches 7,680 B (measured by scripts/kv_cache_sweep.py there). The estimate measures
    which on a one-token meta run of the installed Falcon: here it equals the cache a real forward fills; where that
    run fails, a modeling module without `repeat_kv` (5.17's) is read as caching every head."""
    import torch
    import transformers
    from transformers.models.falcon import modeling_falcon

    from weightdoctor import plan_devices

    config = transformers.FalconConfig(vocab_size=128, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                       new_decoder_architecture=True, num_kv_heads=2)
    torch.manual_seed(0)
    with torch.no_grad():
        out = transformers.FalconForCausalLM(config).eval()(input_ids=torch.randint(0, 100, (2, 5)), use_cache=True)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    filled = sum(layer.keys.numel() * 4 + layer.values.numel() * 4 for layer in cache.layers)
    plan_devices._falcon_caches_every_head.cache_clear()
    kv = estimate_kv_cache(config.to_dict(), "fp32", batch=2, seq_len=5)
    assert kv.total_bytes == filled and filled in (3840, 7680), (kv, filled)
    assert kv.num_kv_heads == cache.layers[0].keys.shape[1]
    # the fallback: no meta run (a Falcon that cannot run so), a module without repeat_kv
    monkeypatch.setattr(transformers, "FalconForCausalLM", None)
    monkeypatch.delattr(modeling_falcon, "repeat_kv", raising=False)
    plan_devices._falcon_caches_every_head.cache_clear()
    try:
        kv = estimate_kv_cache(config.to_dict(), "fp32", batch=2, seq_len=5)
        assert (kv.num_kv_heads, kv.total_bytes) == (4, 7680), kv
    finally:
        plan_devices._falcon_caches_every_head.cache_clear()


def test_recurrent_gemma_without_layer_types_caches_its_attention_blocks_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers 5.17's RecurrentGemmaConfig has no layer_types (its layers_block_type reads "recurrent" /
    "attention"), and get_layer_types_and_kwargs lays all 3 layers out as sliding attention; its model fills the
    attention block's keys and values alone (640 B for 2 x 5 tokens at fp32) and keeps 2,048 B of states in the
    recurrent blocks, as 5.25 does (measured by scripts/kv_cache_sweep.py under both): 1,920 B and no state were
    said."""
    import transformers
    import transformers.cache_utils as cache_utils

    from weightdoctor import plan_devices

    config = transformers.RecurrentGemmaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=1, lru_width=32, attention_window_size=8, conv1d_width=4,
        block_types=["recurrent", "recurrent", "attention"]).to_dict()
    newer = estimate_kv_cache(config, "fp32", batch=2, seq_len=5)
    config_class = transformers.RecurrentGemmaConfig
    real_kinds = plan_devices._decoder_layer_kinds

    def kinds_as_517(config: dict[str, Any], layers: int) -> Any:
        # 5.17's config class and cache API where the layer kinds are read (the model is still built by 5.25's)
        with pytest.MonkeyPatch.context() as patch:
            if "layer_types" in getattr(config_class, "attribute_map", {}):
                patch.setattr(config_class, "attribute_map", {"sliding_window": "attention_window_size"})
                patch.setattr(config_class, "layers_block_type",
                              property(lambda self: (self.block_types * 100)[: self.num_hidden_layers]))
            patch.setattr(cache_utils, "get_layer_types_and_kwargs",
                          _as_517(cache_utils.get_layer_types_and_kwargs))
            return real_kinds(config, layers)

    monkeypatch.setattr(plan_devices, "_decoder_layer_kinds", kinds_as_517)
    older = estimate_kv_cache(config, "fp32", batch=2, seq_len=5)
    measured = (640, 2048, (0, 0, 640))
    assert (older.total_bytes, older.state_bytes, older._layer_bytes) == measured, older
    assert (newer.total_bytes, newer.state_bytes, newer._layer_bytes) == measured, newer
    assert older.note == newer.note == "2 of 3 layers keep a recurrent state of fixed size per sequence instead of " \
                                       "keys and values"
