"""health82: what health81 left in inspect --stats's trained / initialization verdict, on real tiny checkpoints.

Faults: a trained share of exactly 10% read "mixed" (1 - 0.9 is 0.0999… in floats).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import run_cli

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stats_json(path: Path, *extra: str) -> dict[str, Any]:
    result = run_cli("inspect", str(path), "--stats", "--json", *extra)
    assert result.exit_code in (0, 1), result.stderr
    return json.loads(result.stdout)


def _codes(report: dict[str, Any]) -> list[str]:
    return sorted(f["code"] for f in report["findings"])


def test_a_trained_share_of_exactly_ten_percent_is_initialization(tmp_path: Path) -> None:
    """A fresh one-layer Llama (vocabulary 96: 15,360 matrix parameters) whose q_proj and k_proj (1,536 of them,
    exactly 10%) were scaled ×5: "at initialization" is 90% or more of the matrix parameters at init, but the
    comparison `share > 1 - 0.9` held (0.1 > 0.0999…) and the model read "mixed" with untrained-tensor warnings."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32,
                                      tie_word_embeddings=False)
    folder = tmp_path / "llama"
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tensors = load_file(folder / "model.safetensors")
    scaled = ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight")
    for name in scaled:
        tensors[name] = tensors[name] * 5
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    report = _stats_json(folder)
    matrices = {t["name"]: t for t in report["tensors"] if len(t["shape"]) >= 2}
    moved = sorted(n for n, t in matrices.items() if t["init"]["at_init"] is False)
    total = sum(t["stats"]["count"] for t in matrices.values())
    assert moved == sorted(scaled) and total == 15360
    assert sum(matrices[n]["stats"]["count"] for n in moved) * 10 == total
    assert report["weights"]["trained_share"] == 0.1
    assert report["weights"]["state"] == "initialization" and _codes(report) == ["checkpoint-at-init"]
    assert report["findings"][0]["message"].startswith("90% of the matrix parameters still match their initialization")
