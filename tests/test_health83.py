"""health83: a layer frozen by mistake in a briefly trained model, and T5 after 300 AdamW steps, in inspect --stats.

Faults: GPT-2 after 8 AdamW steps with one block's mlp.c_fc frozen (requires_grad=False) warned "untrained-tensor"
on the two c_attn matrices that trained as much as their siblings, beside the frozen one, and the one frozen warning
did not say what told it apart; T5 after 300 AdamW steps kept 31 untrained-tensor warnings on matrices that had all
trained (its 0.18-wide inits beside steps of 1e-3 keep each matrix's spread, and T5 has no bias to tell). Now a
matrix at init is read with its own bias, or, without one, its block's norms: still exactly at their init constants
while the others moved, it got no update (warned, saying so); moved, it got updates too little to tell alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import run_cli

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gpt2() -> Any:
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4,
                                                                n_positions=32))


def _t5() -> Any:
    torch.manual_seed(0)
    return transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0,
        pad_token_id=0))


def _adamw_steps(model: Any, steps: int, frozen: str | None = None) -> Any:
    """`steps` AdamW steps at lr 1e-3 on one batch of 4 × 12 tokens, the parameters under `frozen` left out."""
    torch.manual_seed(1)
    ids = torch.randint(3, 100, (4, 12))
    for name, parameter in model.named_parameters():
        if frozen is not None and name.startswith(frozen):
            parameter.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    return model


def _stats_json(path: Path) -> dict[str, Any]:
    result = run_cli("inspect", str(path), "--stats", "--json")
    assert result.exit_code in (0, 1), result.stderr
    return json.loads(result.stdout)


def _untrained(report: dict[str, Any]) -> dict[str, str]:
    return {f["tensor"]: f["message"] for f in report["findings"] if f["code"] == "untrained-tensor"}


def _moved(folder: Path, fresh: dict[str, torch.Tensor], name: str) -> bool:
    return not torch.equal(load_file(folder / "model.safetensors")[name], fresh[name])


def test_gpt2_with_one_mlp_frozen_warns_that_layer_alone(tmp_path: Path) -> None:
    """8 AdamW steps, transformer.h.1.mlp.c_fc frozen: the oracle (the fresh model's bytes) says c_fc's weight and
    bias are bit-identical to the fresh ones and every other matrix moved. The checkpoint read "trained" with only
    an info (the frozen matrix was pooled with five that moved together, and its bias got a norm-at-init info:
    "fine if this parameter gets no gradient"). Now the frozen matrix is warned, with what tells it: its bias
    still exactly zeros (while the 17 other vectors moved)."""
    fresh_folder = tmp_path / "fresh"
    _gpt2().save_pretrained(fresh_folder)
    fresh = load_file(fresh_folder / "model.safetensors")
    folder = tmp_path / "frozen"
    _adamw_steps(_gpt2(), 8, "transformer.h.1.mlp.c_fc.").save_pretrained(folder)
    frozen = "transformer.h.1.mlp.c_fc.weight"
    assert not _moved(folder, fresh, frozen) and not _moved(folder, fresh, "transformer.h.1.mlp.c_fc.bias")
    assert all(_moved(folder, fresh, n) for n in fresh if not n.startswith("transformer.h.1.mlp.c_fc.")
               and not n.endswith(".attn.bias"))
    report = _stats_json(folder)
    assert report["weights"]["state"] == "trained"
    warned = _untrained(report)
    assert list(warned) == [frozen], warned
    assert warned[frozen].endswith("matrix parameters have trained; so does its bias transformer.h.1.mlp.c_fc.bias "
                                   "(exactly zeros, as at initialization)")
    # The frozen bias is said in its matrix's warning, not in a norm-at-init of its own.
    assert not [f for f in report["findings"] if f["tensor"] == "transformer.h.1.mlp.c_fc.bias"]
    assert sorted(f["code"] for f in report["findings"]) == ["briefly-trained", "untrained-tensor"]
    assert report["weights"]["constant_vectors"] == {"vectors": 18, "moved": 17}


def test_t5_after_300_adamw_steps_reads_trained_and_a_frozen_block_is_named(tmp_path: Path) -> None:
    """T5 after 300 AdamW steps: 30 untrained-tensor warnings on matrices the oracle says all moved; now only the
    shared embedding table keeps one (nothing in the file tells whether it got updates: it has no bias and no
    block). With encoder.block.1 frozen, its six matrices are warned and say why (both its layer norms still at
    ones while the 10 others moved); it read "trained" with two norm-at-init infos and no warning (the frozen
    matrices were pooled with the others, which moved together). The shared table, which trained more in that
    run, is told trained alone. The fresh T5 still reads initialization."""
    fresh_folder = tmp_path / "fresh"
    _t5().save_pretrained(fresh_folder)
    fresh = load_file(fresh_folder / "model.safetensors")
    fresh_report = _stats_json(fresh_folder)
    assert fresh_report["weights"]["state"] == "initialization"
    assert [f["code"] for f in fresh_report["findings"]] == ["checkpoint-at-init"]

    folder = tmp_path / "trained"
    _adamw_steps(_t5(), 300).save_pretrained(folder)
    report = _stats_json(folder)
    matrices = [t["name"] for t in report["tensors"] if len(t["shape"]) >= 2]
    assert all(_moved(folder, fresh, n) for n in matrices)
    assert report["weights"]["state"] == "trained" and report["weights"]["state_basis"] == "constants"
    assert list(_untrained(report)) == ["shared.weight"], _untrained(report)
    info = " ".join(f["message"] for f in report["findings"] if f["code"] == "briefly-trained")
    assert "matrices without a bias still look like their initialization, but the norms of their blocks all moved" \
        in info

    frozen_folder = tmp_path / "frozen"
    _adamw_steps(_t5(), 300, "encoder.block.1.").save_pretrained(frozen_folder)
    frozen_report = _stats_json(frozen_folder)
    block = {n for n in matrices if n.startswith("encoder.block.1.")}
    assert len(block) == 6 and not any(_moved(frozen_folder, fresh, n) for n in block)
    warned = _untrained(frozen_report)
    assert set(warned) == block, warned
    assert all(warned[n].endswith("; so do all 2 norm and bias vectors of its block encoder.block.1.* (exactly at "
                                  "their init constants) while 10 elsewhere moved")
               for n in block)
    assert frozen_report["weights"]["state"] == "trained"
    assert frozen_report["weights"]["constant_vectors"] == {"vectors": 12, "moved": 10}
    # The frozen layer norms are said in the block's warnings, not in norm-at-init infos of their own.
    assert not [f for f in frozen_report["findings"] if f["code"] == "norm-at-init"]


def test_t5_after_8_steps_with_a_frozen_block_is_trained_and_names_the_block(tmp_path: Path) -> None:
    """T5 after 8 AdamW steps with encoder.block.1 frozen: no matrix moved enough to tell, alone or pooled, and
    10 of its 12 norm scales left their ones; "trained" rested on all of them moving, so the checkpoint read
    "initialization ... has not been trained". Now it is trained (state_basis "constants", on most of them moving)
    and the frozen block's six matrices are warned, each saying that both its norms stayed at ones."""
    fresh_folder = tmp_path / "fresh"
    _t5().save_pretrained(fresh_folder)
    fresh = load_file(fresh_folder / "model.safetensors")
    folder = tmp_path / "frozen"
    _adamw_steps(_t5(), 8, "encoder.block.1.").save_pretrained(folder)
    report = _stats_json(folder)
    block = {t["name"] for t in report["tensors"] if len(t["shape"]) >= 2 and t["name"].startswith("encoder.block.1.")}
    assert len(block) == 6 and not any(_moved(folder, fresh, n) for n in block)
    weights = report["weights"]
    assert weights["state"] == "trained" and weights["state_basis"] == "constants", report["findings"]
    assert weights["trained_share"] == 0.0 and weights["constant_vectors"] == {"vectors": 12, "moved": 10}
    warned = _untrained(report)
    assert set(warned) == block, warned
    assert all(m.endswith("in a checkpoint that has trained; so do all 2 norm and bias vectors of its block "
                          "encoder.block.1.* (exactly at their init constants) while 10 elsewhere moved: this layer "
                          "got no update") for m in warned.values())
    info = [f["message"] for f in report["findings"] if f["code"] == "briefly-trained"]
    assert len(info) == 1 and info[0].startswith("the checkpoint has been trained, but only a little: 10 of the 12 "
                                                 "norm scales and biases that start at exact ones have moved")
    text = " ".join(run_cli("inspect", str(folder), "--stats").stdout.split())
    assert "state: trained (0.0% of matrix parameters moved enough to tell alone; 10 of 12 norm and bias vectors " \
        "have left their init constants)" in text
