"""review80: plan-devices after the gpu-size suggestion and quantacct2's quantized sizing.

Found: a checkpoint its config quantizes (bitsandbytes 4-bit, float32 config) was planned with its unquantized rest at
float32 without --dtype (from_pretrained(dtype="auto")'s dtype), but at float16 with `--dtype int4`, the very load the
config names: the same checkpoint, two plans 1.5x apart, and a KV cache at half its bytes.

Found (older, in the dtype ladder the suggestions share): a float32 model's int8 / int4 candidate was counted with
its rest at float32 where `--dtype int8` plans it at float16, so "the smallest change" skipped int8 for int4 on
GPUs that `--dtype int8` fits. (Since quantrest both are at float32, as from_pretrained builds it; the test below
checks that the rung and the `--dtype int8` plan agree.)
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_json
from tests.test_plan_quantized4 import _float32_quantized, float32_cache_bytes


def test_dtype_int4_of_a_4bit_config_plans_what_the_default_plans(tmp_path: Path) -> None:
    """`--dtype int4` of a bitsandbytes 4-bit checkpoint whose config is float32 builds the rest at float32, as the
    plan without --dtype does (from_pretrained keeps the config's quantizer and dtype="auto"): the same bytes, the
    same map, and a float32 KV cache, checked against the cache a real float32 tiny Llama of that config fills."""
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
    cached = float32_cache_bytes(config, 64)
    assert asked["kv_cache"]["dtype"] == "float32" and asked["kv_cache"]["total_bytes"] == cached, asked["kv_cache"]


def test_dtype_int8_of_a_4bit_config_keeps_the_float32_rest(tmp_path: Path) -> None:
    """--dtype int8 of a 4-bit config is no load the config names (a what-if): its rest, like every int8 / int4
    plan's, is at the dtype from_pretrained(dtype="auto") builds the model at, float32 here (quantrest: it was the
    float16 older transformers forced), and so is its KV cache."""
    folder, _ = _float32_quantized(tmp_path / "bnb4", "bnb4")
    code, asked = run_json("plan-devices", str(folder), "--gpu", "1GB", "--dtype", "int8", "--kv-cache",
                           "--seq-len", "64")
    assert code == 0 and asked["dtype"] == "int8" and asked["kv_cache"]["dtype"] == "float32", asked["kv_cache"]


def test_the_int8_rung_of_a_float32_model_is_counted_as_dtype_int8_plans_it(tmp_path: Path) -> None:
    """The smallest dtype change of a float32 model is the first rung that `--dtype` fits: its int8 candidate was
    counted with the unquantized rest at float32, while `--dtype int8` built it at float16 (before quantrest, which
    builds both at float32), so the suggestion
    skipped to int4 on GPUs where `--dtype int8` fits. Each size is checked against the `--dtype int8` plan."""
    from tests.test_third_party_layouts27 import CONFIG

    folder = tmp_path / "f32"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG | {"torch_dtype": "float32"}))
    _, at_int8 = run_json("plan-devices", str(folder), "--gpu", "1GB", "--dtype", "int8")
    least = -(-at_int8["weights_bytes"] * 10 // 9) // 1000  # the bnb budget keeps 10% free: about this many KB
    seen = set()
    for kb in range(least - 2, least + 8):
        _, asked = run_json("plan-devices", str(folder), "--gpu", f"{kb}KB", "--dtype", "int8")
        _, default = run_json("plan-devices", str(folder), "--gpu", f"{kb}KB")
        assert default["dtype"] == "fp32" and default["verdict"] != "fits-on-gpus"
        rung = next((s["dtype"] for s in default["suggestions"] if s["change"] == "dtype"), None)
        int8_fits = asked["verdict"] == "fits-on-gpus"
        assert (rung == "int8") == int8_fits, (kb, rung, asked["verdict"])
        seen.add(int8_fits)
    assert seen == {True, False}
