"""fixlist27: small left-outs.

- plan-devices --kv-cache without --seq-len on a pure Mamba / Mamba-2 config was refused ("needs --seq-len: config.json
  writes no context length ... MambaConfig keeps none"), though no layer caches anything per token: it is now sized
  for any length, and says so; a hybrid (Jamba) still takes its context length.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import json_report, run_cli


def _state_bytes(cache: Any) -> int:
    """Bytes of the conv and SSM states transformers' cache holds after a real forward (each layer keeps them in
    dicts of tensors)."""
    total = 0
    for layer in cache.layers:
        for name in ("conv_states", "recurrent_states"):
            held = getattr(layer, name, None)
            for tensor in (held.values() if isinstance(held, dict) else [held]):
                if isinstance(tensor, torch.Tensor):
                    total += tensor.numel() * tensor.element_size()
    return total


@pytest.mark.parametrize("kind", ["mamba", "mamba2"])
def test_kv_cache_of_a_pure_state_space_model_needs_no_seq_len(tmp_path: Path, kind: str) -> None:
    import transformers

    torch.manual_seed(0)
    if kind == "mamba":
        config = transformers.MambaConfig(vocab_size=64, hidden_size=32, state_size=8, num_hidden_layers=3,
                                          expand=2, conv_kernel=4, architectures=["MambaForCausalLM"])
        model = transformers.MambaForCausalLM(config).eval()
    else:
        config = transformers.Mamba2Config(vocab_size=64, hidden_size=32, state_size=8, num_hidden_layers=2,
                                           num_heads=4, head_dim=16, n_groups=1, expand=2,
                                           architectures=["Mamba2ForCausalLM"])
        model = transformers.Mamba2ForCausalLM(config).eval()
    # the oracle: the states transformers' cache holds for 2 sequences, the same after 3 tokens as after 9
    with torch.no_grad():
        held = {length: _state_bytes(model(input_ids=torch.randint(0, 64, (2, length)), use_cache=True)
                                     .cache) for length in (3, 9)}
    assert held[3] == held[9] > 0, held
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    args = ("plan-devices", str(tmp_path / "config.json"), "--gpu", "1GB", "--kv-cache", "--batch", "2",
            "--dtype", "fp32")
    kv = json_report(*args)["kv_cache"]
    assert kv["seq_len"] is None and kv["total_bytes"] == 0 and kv["state_bytes"] == held[3], kv
    assert kv["fits_on_gpus"] is True
    assert "no --seq-len is needed" in kv["note"], kv
    result = run_cli(*args)
    text = " ".join(result.stdout.split())
    assert result.exit_code == 0, result.stderr
    assert "KV cache: none for batch 2 x any length (no KV cache:" in text, text
    assert "needs --seq-len" not in result.stderr
    # --seq-len still given: as before, for that length
    kv = json_report(*args, "--seq-len", "7")["kv_cache"]
    assert kv["seq_len"] == 7 and kv["state_bytes"] == held[3] and "no --seq-len" not in kv["note"], kv


def test_kv_cache_of_a_hybrid_still_takes_a_length(tmp_path: Path) -> None:
    """Jamba's attention layer caches per token: its length is still its context length (JambaConfig's 262,144)."""
    import transformers

    config = transformers.JambaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=48, attn_layer_period=2,
                                      attn_layer_offset=1, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2,
                                      num_experts=1, max_position_embeddings=1000, architectures=["JambaForCausalLM"])
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    kv = json_report("plan-devices", str(tmp_path / "config.json"), "--gpu", "1GB", "--kv-cache",
                     "--dtype", "fp32")["kv_cache"]
    # 1 attention layer x 2 (keys, values) x 2 KV heads x 8 values x 4 bytes x 1,000 tokens
    assert kv["seq_len"] == 1000 and kv["total_bytes"] == 128 * 1000 and "--seq-len" not in kv["note"], kv


def test_estimate_without_a_length_is_refused_where_a_layer_attends() -> None:
    from weightdoctor.errors import UsageError
    from weightdoctor.plan_devices import caches_per_token, estimate_kv_cache

    llama = {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "hidden_size": 32}
    assert caches_per_token(llama)
    with pytest.raises(UsageError, match="needs --seq-len"):
        estimate_kv_cache(llama, "fp16", 1, None)
