"""regress5: what 2026-12-06's later merges (4e76980..c4750ba) changed, compared command by command on tiny seeded
checkpoints. No regression was found; these pin two changes the comparison checked against an outside reference, so
that a later merge cannot undo them unseen:

- plan-devices --kv-cache of a config that writes no head_dim reads the one its config class keeps (GemmaConfig's
  256, Qwen3Config's 128), as transformers' attention layers do (kvkeys); 4e76980 took hidden_size / heads (16 here),
  16 and 8 times too small. Each figure is checked against the cache transformers fills in a forward pass.
- check-dtype's batches of small tensors went from 1M to 32K values (memory5): the report, byte for byte, does not
  depend on the batch size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import json_report, run_cli
from tests.test_kvkeys import SEQ, _cache_bytes

NO_HEAD_DIM: dict[str, dict[str, Any]] = {
    "gemma": {"model_type": "gemma", "architectures": ["GemmaForCausalLM"], "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 1, "hidden_size": 64, "intermediate_size": 64,
              "vocab_size": 100},
    "qwen3": {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 64, "intermediate_size": 64,
              "vocab_size": 100},
}


@pytest.mark.parametrize(("name", "head_dim"), [("gemma", 256), ("qwen3", 128)])
def test_kv_cache_of_a_config_without_head_dim_is_the_cache_transformers_fills(
        tmp_path: Path, name: str, head_dim: int) -> None:
    config = NO_HEAD_DIM[name]
    (tmp_path / "config.json").write_text(json.dumps(config))
    kv = json_report("plan-devices", tmp_path / "config.json", "--gpu", "8GB", "--kv-cache", "--seq-len", str(SEQ),
                     "--dtype", "fp32")["kv_cache"]
    assert kv["head_dim"] == head_dim, kv
    assert kv["total_bytes"] == _cache_bytes(config), kv
    text = run_cli("plan-devices", tmp_path / "config.json", "--gpu", "8GB", "--kv-cache", "--seq-len", str(SEQ),
                   "--dtype", "fp32").stdout
    assert f"x {head_dim} values a head x 4 bytes (float32)" in text, text


def test_check_dtype_report_does_not_depend_on_its_batch_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """300 small tensors of 1,024 values over twelve orders of magnitude (fp16 overflows some, flushes others), a NaN
    among them: 9 batches of 32K values give the report 1 batch of 1M gave."""
    import torch
    from safetensors.torch import save_file

    from weightdoctor import check_dtype

    generator = torch.Generator().manual_seed(5)
    tensors = {f"layers.{i}.weight": torch.randn(1024, generator=generator) * 10.0 ** (i % 12 - 6) for i in range(300)}
    tensors["layers.7.weight"][3] = float("nan")
    path = tmp_path / "many.safetensors"
    save_file(tensors, str(path))
    args = ("check-dtype", str(path), "--target", "fp16,bf16,fp8_e4m3", "--worst", "20", "--json")
    assert check_dtype.BATCH_ELEMENTS < 300 * 1024 // 4  # several batches
    small = run_cli(*args)
    monkeypatch.setattr(check_dtype, "BATCH_ELEMENTS", 1 << 20)
    whole = run_cli(*args)
    assert (small.exit_code, small.stdout) == (whole.exit_code, whole.stdout)
    fp16 = json.loads(small.stdout)["targets"]["fp16"]
    assert fp16["tensors_checked"] == 300 and fp16["verdict"] == "unsafe" and fp16["overflow"] > 0, fp16
