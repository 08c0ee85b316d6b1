"""kvkeys: plan-devices --kv-cache reads a config's sizes the way transformers' config class reads them, through
its `attribute_map` and derived attributes. DBRX (`n_layers` / `n_heads` / `d_model`, KV heads in
`attn_config.kv_n_heads`), MPT (`n_layers` / `n_heads` / `d_model`) and Moonshine (`decoder_num_*`) were refused
("config has no num_hidden_layers / num_attention_heads / hidden_size"); a Mixtral config without
`num_key_value_heads` was sized with its query heads though MixtralConfig keeps its default 8; JetMoe's head_dim (its
`kv_channels`) was taken as hidden_size / heads; a Falcon config writing `n_head` was sized with it though
FalconConfig ignores it (its default 71 stands). Each figure is checked against the cache transformers fills in a
forward pass of the same tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import json_report, run_cli

SEQ = 5

CASES: dict[str, dict[str, Any]] = {
    "dbrx": {"model_type": "dbrx", "architectures": ["DbrxForCausalLM"], "n_layers": 2, "n_heads": 4, "d_model": 32,
             "vocab_size": 100, "attn_config": {"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0},
             "ffn_config": {"ffn_hidden_size": 32, "moe_num_experts": 2, "moe_top_k": 1}},
    "jetmoe": {"model_type": "jetmoe", "architectures": ["JetMoeForCausalLM"], "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 32, "kv_channels": 16,
               "num_local_experts": 2, "num_experts_per_tok": 1, "intermediate_size": 32, "vocab_size": 100},
    "mpt": {"model_type": "mpt", "architectures": ["MptForCausalLM"], "n_layers": 2, "n_heads": 4, "d_model": 32,
            "vocab_size": 100},
    "mixtral": {"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "num_hidden_layers": 2,
                "num_attention_heads": 16, "hidden_size": 128, "intermediate_size": 64, "num_local_experts": 2,
                "num_experts_per_tok": 1, "vocab_size": 100},
    "moonshine": {"model_type": "moonshine", "architectures": ["MoonshineForConditionalGeneration"],
                  "encoder_num_hidden_layers": 1, "decoder_num_hidden_layers": 2, "encoder_num_attention_heads": 4,
                  "decoder_num_attention_heads": 4, "hidden_size": 32,
                  "intermediate_size": 64, "vocab_size": 100},
}
# (KV heads, head_dim) transformers' cache holds for each. Moonshine's encoder and decoder heads are equal here, as in
# its checkpoints: transformers 5.25's encoder layers write their head counts over the config's decoder_num_* (its
# attribute_map), so a decoder with other head counts caches the encoder's.
EXPECTED = {"dbrx": (2, 8), "jetmoe": (2, 16), "mpt": (4, 8), "mixtral": (8, 8), "moonshine": (4, 8)}


def _cache_bytes(config: dict[str, Any]) -> int:
    """Bytes of keys and values transformers' cache holds (self-attention) after a forward of SEQ tokens, float32."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    torch.manual_seed(0)
    built = AutoConfig.for_model(**config)
    ids = torch.zeros(1, SEQ, dtype=torch.long)
    with torch.no_grad():
        if config["model_type"] == "moonshine":
            out = AutoModel.from_config(built).eval()(input_values=torch.zeros(1, 2000), decoder_input_ids=ids,
                                                      use_cache=True)
        else:
            out = AutoModelForCausalLM.from_config(built).eval()(input_ids=ids, use_cache=True)
    cache = getattr(out.past_key_values, "self_attention_cache", out.past_key_values)
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


@pytest.mark.parametrize("name", sorted(CASES))
def test_kv_cache_reads_keys_as_transformers_config_class(tmp_path: Path, name: str) -> None:
    """DBRX, MPT and Moonshine were refused ("config has no num_hidden_layers ..."); Mixtral was sized with 16 KV
    heads (its query heads), twice the 8 MixtralConfig keeps by default; JetMoe with head_dim 8 (hidden_size /
    heads), half the 16 of its kv_channels, which JetMoeConfig's attribute_map reads as head_dim."""
    config = CASES[name]
    (tmp_path / "config.json").write_text(json.dumps(config))
    kv = json_report("plan-devices", tmp_path / "config.json", "--gpu", "8GB", "--kv-cache", "--seq-len", str(SEQ),
                     "--dtype", "fp32")["kv_cache"]
    assert (kv["num_layers"], kv["num_kv_heads"], kv["head_dim"]) == (2, *EXPECTED[name]), kv
    assert kv["total_bytes"] == _cache_bytes(config), kv


def test_falcon_n_head_is_not_read_where_transformers_ignores_it(tmp_path: Path) -> None:
    """A Falcon config writing `n_head` 8 (no num_attention_heads) was sized with 8 heads of 71 values; FalconConfig
    ignores n_head and builds 71 heads of 8. The refusal now says so, on one line, exit 2."""
    config = {"model_type": "falcon", "architectures": ["FalconForCausalLM"], "num_hidden_layers": 2, "n_head": 8,
              "hidden_size": 568, "vocab_size": 100}  # 568 = 71 x 8: transformers builds this model
    (tmp_path / "config.json").write_text(json.dumps(config))
    from transformers import FalconConfig

    assert FalconConfig(n_head=8).num_attention_heads == 71  # what the refusal says, as transformers builds it
    result = run_cli("plan-devices", tmp_path / "config.json", "--gpu", "8GB", "--kv-cache", "--seq-len", "5", "--json")
    assert result.exit_code == 2, result.stdout
    assert "config has no num_attention_heads that transformers' FalconConfig reads" in result.stderr
    assert "ignores the n_head written and keeps its default num_attention_heads 71" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_legacy_spellings_still_read_for_a_model_type_transformers_does_not_know(tmp_path: Path) -> None:
    """A config of a model type outside transformers' CONFIG_MAPPING keeps being read by its common spellings."""
    config = {"model_type": "kvkeys-own", "n_layer": 2, "n_head": 4, "n_embd": 32}
    from weightdoctor.plan_devices import estimate_kv_cache

    estimate = estimate_kv_cache(config, "fp32", 1, SEQ)
    assert (estimate.num_kv_heads, estimate.head_dim, estimate.total_bytes) == (4, 8, 2 * 2 * 4 * 8 * 4 * SEQ)


def test_a_config_asking_for_a_billion_layers_is_refused_before_its_class_is_built(tmp_path: Path) -> None:
    """Reading the sizes through transformers' config class built Qwen3Config with num_hidden_layers 10^9, whose
    __init__ makes a `layer_types` entry per layer: plan-devices --kv-cache never finished (killed at 60 s), where it
    had refused the layer count in one line before kvkeys. The class is not built for such a config."""
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT

    config = {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "num_hidden_layers": 10**9,
              "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 8,
              "intermediate_size": 8, "max_position_embeddings": 128}
    import torch
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(json.dumps(config))
    # With weights beside it the plan is made from the tensors (no model of 10^9 layers is built); the KV estimate
    # then read the config through its class.
    save_file({"model.embed_tokens.weight": torch.zeros(8, 4)}, str(tmp_path / "model.safetensors"))
    done = subprocess.run([sys.executable, "-m", "weightdoctor", "plan-devices", str(tmp_path), "--gpu", "1GB",
                           "--kv-cache", "--seq-len", "128"], capture_output=True, text=True, timeout=60,
                          cwd=REPO_ROOT)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == ("error: config.json asks for 1,000,000,000 decoder layers; weightdoctor sizes the KV cache of "
                         "up to 1,024 layers"), lines
