"""health82: what health81 left in inspect --stats's trained / initialization verdict, on real tiny checkpoints.

Faults: a T5 after 5 Adam steps read "initialization ... has not been trained" though every norm scale had left its
ones, a GPT-2 after 4 Adam steps "mixed" with untrained-tensor warnings on matrices whose own bias had left zero (the
vectors initialized to exact constants were not read as evidence), and a trained share of exactly 10% read "mixed"
(1 - 0.9 is 0.0999… in floats).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import run_cli
from tests.test_health81 import _codes, _stats_json

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def _t5() -> Any:
    torch.manual_seed(0)
    return transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0,
        pad_token_id=0))


def _gpt2() -> Any:
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4,
                                                                n_positions=32))


def _adam_steps(model: Any, steps: int) -> Any:
    torch.manual_seed(1)
    ids = torch.randint(3, 100, (4, 12))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    return model


def _constants(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The 1-D tensors the model initializes to exact ones or zeros (the oracle reads their files)."""
    return {t["name"]: t for t in report["tensors"] if len(t["shape"]) == 1 and t["init"]["expected"] is not None
            and t["init"]["expected"]["label"] in ("zeros", "ones") and t["init"]["expected"]["confident"]}


def test_t5_whose_norms_all_moved_is_trained_not_initialization(tmp_path: Path) -> None:
    """T5 after 5 Adam steps at lr 1e-3: each matrix, and all of them pooled, still fit their inits (0.18-wide
    beside steps of 1e-3), and the checkpoint read "initialization ... has not been trained", though every one of
    its 12 norm scales had left its ones (the oracle below). Now "trained", `state_basis` "constants", with one
    info finding that says what it rests on; the fresh T5, and the fresh one saved after `model.half()` (ones stay
    exact), stay at initialization."""
    fresh_folder = tmp_path / "fresh"
    _t5().save_pretrained(fresh_folder)
    fresh = _stats_json(fresh_folder)
    assert fresh["weights"]["state"] == "initialization" and _codes(fresh) == ["checkpoint-at-init"]
    assert fresh["weights"]["constant_vectors"] == {"vectors": 12, "moved": 0}
    _t5().half().save_pretrained(tmp_path / "half")
    half = _stats_json(tmp_path / "half")
    assert half["weights"]["state"] == "initialization" and _codes(half) == ["checkpoint-at-init"]
    folder = tmp_path / "trained"
    _adam_steps(_t5(), 5).save_pretrained(folder)
    report = _stats_json(folder)
    tensors = load_file(folder / "model.safetensors")
    norms = _constants(report)
    assert len(norms) == 12 and all(not torch.equal(tensors[n], torch.ones_like(tensors[n])) for n in norms)
    weights = report["weights"]
    assert weights["trained_share"] == 0.0 and weights["pooled_spread"]["moved"] is False
    assert weights["state"] == "trained" and weights["state_basis"] == "constants", report["findings"]
    assert weights["constant_vectors"] == {"vectors": 12, "moved": 12}
    assert _codes(report) == ["briefly-trained"]
    message = report["findings"][0]["message"]
    assert message.startswith("the checkpoint has been trained, but only a little: all 12 norm scales and biases "
                              "that start at exact ones have moved")
    assert "still look like their initialization, one by one and taken together " \
        f"({weights['pooled_spread']['variance_ratio']:.1%}" in message
    text = " ".join(run_cli("inspect", str(folder), "--stats").stdout.split())
    assert "state: trained (0.0% of matrix parameters moved enough to tell alone; all 12 norm and bias vectors " \
        "have left their init constants)" in text


def test_gpt2_whose_biases_moved_is_trained_not_mixed(tmp_path: Path) -> None:
    """GPT-2 after 4 Adam steps: its 0.01-scale projections trained alone (28.4%), its eight 0.02-scale matrices
    did not, even pooled (2.7σ), and the model read "mixed" with eight untrained-tensor warnings, though all 18
    of its norm and bias vectors had left their ones and zeros. Now "trained" (state_basis "constants"); the six
    matrices whose own bias moved got updates and are said in the info finding, not warned about; the two tables
    without a bias (wte, wpe) keep their warning."""
    folder = tmp_path / "trained"
    _adam_steps(_gpt2(), 4).save_pretrained(folder)
    fresh_folder = tmp_path / "fresh"
    _gpt2().save_pretrained(fresh_folder)
    report = _stats_json(folder)
    tensors, fresh = load_file(folder / "model.safetensors"), load_file(fresh_folder / "model.safetensors")
    vectors = _constants(report)
    assert len(vectors) == 18 and all(not torch.equal(tensors[n], fresh[n]) for n in vectors)
    weights = report["weights"]
    assert weights["state"] == "trained" and weights["state_basis"] == "constants"
    assert 0.1 < weights["trained_share"] < 0.5 and not weights["pooled_spread"]["moved"]
    at_init = [t["name"] for t in report["tensors"] if len(t["shape"]) >= 2 and t["init"]["at_init"]]
    with_bias = [n for n in at_init if n.removesuffix("weight") + "bias" in vectors]
    assert len(with_bias) == 6 and all(not torch.equal(tensors[n], fresh[n]) for n in with_bias)
    assert sorted(f["tensor"] for f in report["findings"] if f["code"] == "untrained-tensor") == \
        sorted(set(at_init) - set(with_bias)) == ["transformer.wpe.weight", "transformer.wte.weight"]
    info = [f["message"] for f in report["findings"] if f["code"] == "briefly-trained"]
    assert len(info) == 1 and info[0].startswith(
        "the checkpoint has trained: all 18 norm scales and biases that start at exact ones or zeros have moved, "
        f"and {weights['trained_share']:.1%} of the checkpoint's matrix parameters have clearly trained")
    assert info[0].endswith("6 matrices still look like their initialization, but their biases moved, so they did "
                            "get small updates")
    fresh_report = _stats_json(fresh_folder)
    assert fresh_report["weights"]["state"] == "initialization" and _codes(fresh_report) == ["checkpoint-at-init"]
    assert math.isclose(fresh_report["weights"]["trained_share"], 0.0)
