"""plan-devices --kv-cache of a Nemotron-H config as transformers saves it: the class derives num_hidden_layers from
layers_block_type (a property it does not save), and writes time_step_limit's Infinity as {"__float__": "Infinity"},
which its strict fields refuse unless decoded as from_pretrained decodes it. The cache was refused: "config has no
num_hidden_layers / num_attention_heads / hidden_size; cannot size a KV cache". Figures checked against the cache a
forward fills (scripts/kv_cache_sweep.py --only nemotron_h: 5 of 5 equal)."""

from __future__ import annotations

import json
from pathlib import Path

import transformers

from tests.helpers import run_json

BLOCKS = ["mamba", "attention", "mamba", "moe", "attention"]


def _saved(folder: Path) -> Path:
    config = transformers.NemotronHConfig(
        vocab_size=128, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        intermediate_size=48, mamba_num_heads=4, mamba_head_dim=16, ssm_state_size=8, n_groups=1, chunk_size=8,
        max_position_embeddings=64, layers_block_type=BLOCKS, n_routed_experts=2, num_experts_per_tok=1,
        moe_intermediate_size=16, architectures=["NemotronHForCausalLM"])
    config.save_pretrained(folder)
    return folder / "config.json"


def test_a_saved_nemotron_h_config_is_sized_with_its_derived_layer_count(tmp_path: Path) -> None:
    path = _saved(tmp_path / "nemotron")
    saved = json.loads(path.read_text())
    assert "num_hidden_layers" not in saved and {"__float__": "Infinity"} in saved["time_step_limit"]
    code, planned = run_json("plan-devices", str(path), "--gpu", "8GB", "--dtype", "fp32", "--kv-cache",
                             "--batch", "2", "--seq-len", "13")
    kv = planned["kv_cache"]
    # its two attention layers: keys and values of 2 heads of 8, fp32, 2 sequences of 13 tokens (a forward's cache
    # holds 6,656 bytes, and 13,312 bytes of Mamba state)
    assert code == 0 and kv["total_bytes"] == 2 * 2 * 2 * 8 * 4 * 2 * 13 == 6656, kv
    assert (kv["num_layers"], kv["num_kv_heads"], kv["head_dim"]) == (2, 2, 8), kv
    assert kv["state_bytes"] == 13312, kv
    assert kv["note"].startswith("1 of 5 layers caches nothing"), kv["note"]
    assert "2 of 5 layers keep a recurrent state of fixed size per sequence" in kv["note"], kv["note"]


def test_the_config_keys_read_a_tagged_infinity_as_from_pretrained_does(tmp_path: Path) -> None:
    from weightdoctor.plan_devices import _ConfigKeys

    saved = json.loads(_saved(tmp_path / "nemotron").read_text())
    keys = _ConfigKeys(saved)
    assert keys.built is not None and keys.built.time_step_limit[1] == float("inf")
    assert keys.derived("num_hidden_layers") == len(BLOCKS)
    assert keys.derived("hidden_size") is None  # a plain field, not one the class derives
