"""review80: plan-devices after the gpu-size suggestion and quantacct2's quantized sizing.

Found: a checkpoint its config quantizes (bitsandbytes 4-bit, float32 config) was planned with its unquantized rest at
float32 without --dtype (from_pretrained(dtype="auto")'s dtype), but at float16 with `--dtype int4`, the very load the
config names: the same checkpoint, two plans 1.5x apart, and a KV cache at half its bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import run_json
from tests.test_plan_quantized4 import _float32_quantized


def test_dtype_int4_of_a_4bit_config_plans_what_the_default_plans(tmp_path: Path) -> None:
    """`--dtype int4` of a bitsandbytes 4-bit checkpoint whose config is float32 builds the rest at float32, as the
    plan without --dtype does (from_pretrained keeps the config's quantizer and dtype="auto"): the same bytes, the
    same map, and a float32 KV cache, checked against the cache a real float32 tiny Llama of that config fills."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder, _ = _float32_quantized(tmp_path / "bnb4", "bnb4")
    code, default = run_json("plan-devices", str(folder), "--gpu", "1GB", "--kv-cache", "--seq-len", "64")
    assert code == 0 and default["dtype"] == "int4"
    code, asked = run_json("plan-devices", str(folder), "--gpu", "1GB", "--dtype", "int4", "--kv-cache",
                           "--seq-len", "64")
    assert code == 0 and asked["dtype"] == "int4"
    assert asked["weights_bytes"] == default["weights_bytes"], (asked["weights_bytes"], default["weights_bytes"])
    assert asked["device_map"] == default["device_map"]
    assert [d["used_bytes"] for d in asked["devices"]] == [d["used_bytes"] for d in default["devices"]]
    # The embeddings and lm_head (never quantized) at 4 bytes an element, not 2.
    config = json.loads((folder / "config.json").read_text())
    embeddings = 2 * config["vocab_size"] * config["hidden_size"] * 4
    assert asked["weights_bytes"] > embeddings
    settings = {k: v for k, v in config.items() if k not in ("quantization_config", "model_type", "torch_dtype")}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(config["model_type"], **settings),
                                             dtype=torch.float32)
    with torch.no_grad():
        cache = model(torch.zeros(1, 64, dtype=torch.long), use_cache=True).past_key_values
    cached = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    assert asked["kv_cache"]["dtype"] == "float32" and asked["kv_cache"]["total_bytes"] == cached, asked["kv_cache"]


def test_dtype_int8_of_a_4bit_config_stays_the_float16_what_if(tmp_path: Path) -> None:
    """--dtype int8 of a 4-bit config is no load the config names (a what-if, warned): it keeps the documented
    float16 rest, smaller per element than the float32 default's rest."""
    folder, _ = _float32_quantized(tmp_path / "bnb4", "bnb4")
    code, asked = run_json("plan-devices", str(folder), "--gpu", "1GB", "--dtype", "int8", "--kv-cache",
                           "--seq-len", "64")
    assert code == 0 and asked["dtype"] == "int8" and asked["kv_cache"]["dtype"] == "float16", asked["kv_cache"]
