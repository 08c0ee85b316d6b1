"""health85: a lone bias-less matrix frozen in a trained block, and an embedding that trained beside a frozen layer.

Faults: Llama and T5 after 8 AdamW steps with one mlp or attention matrix frozen (requires_grad=False), and T5
after 300 steps with one mlp matrix frozen, read "trained" with no warning: the frozen matrix has no bias, and its
block's norms moved (a norm moves whatever the one matrix after it does), so it was counted among the matrices that
"got updates too little to tell". GPT-2 after 5 AdamW steps with one mlp or attention layer frozen warned
untrained-tensor on its wte, which had trained. Now a float32 matrix with a normal init is also read by the marks
PyTorch's CPU normal_ leaves on its values (weightdoctor.generator_marks): pairs of values on a grid of 2^24 angles,
which any update erases. A matrix still carrying them while others moved got no update (warned); beside such
matrices, one that lost them got updates. Wording: "each matrix alone still fits its initialization" reads "each
matrix still looks like its initialization one by one, but taken together" (ux19's wording), and a matrix said to
have got no update no longer carries the short-run hedge in its hint.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import run_cli

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from health80_sweep import build  # noqa: E402  (the sweep's seeded tiny models and batch)
from health83_frozen_sweep import train  # noqa: E402  (AdamW at lr 1e-3, the parameters under a prefix frozen)


def _saved(folder: Path, kind: str, steps: int, frozen: str | None = None) -> dict[str, torch.Tensor]:
    """`kind` (scripts/health80_sweep.py's tiny seeded model) after `steps` AdamW steps at lr 1e-3 on one batch of
    4 × 12 tokens, the parameters under `frozen` left out, saved to `folder`; returns the fresh model's tensors, the
    oracle of what moved."""
    model, batch = build(kind)
    fresh = {name: value.detach().clone() for name, value in model.state_dict().items()}
    if steps:
        train(model, batch, steps, frozen)
    model.save_pretrained(folder)
    return fresh


def _stats_json(path: Path) -> dict[str, Any]:
    result = run_cli("inspect", str(path), "--stats", "--json")
    assert result.exit_code in (0, 1), result.stderr
    return json.loads(result.stdout)


def _untrained(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["tensor"]: f for f in report["findings"] if f["code"] == "untrained-tensor"}


def _unmoved_matrices(folder: Path, fresh: dict[str, torch.Tensor]) -> set[str]:
    """The saved matrices bit for bit as the fresh model drew them (the oracle)."""
    saved = load_file(folder / "model.safetensors")
    return {name for name, value in saved.items()
            if value.dim() >= 2 and name in fresh and torch.equal(value, fresh[name])}


_MARKS = "its values are still exactly as PyTorch's normal_ drew them"


# -- the marks themselves -----------------------------------------------------------------------------------------


def test_normal_draws_carry_the_marks_and_any_update_erases_them() -> None:
    from weightdoctor.generator_marks import normal_marks

    torch.manual_seed(3)
    drawn = torch.empty(16, 32).normal_(0.0, 0.02)  # Llama's smallest matrix here: a 16 × 32 k_proj
    marks = normal_marks(drawn)
    assert marks is not None and marks.present and not marks.gone, marks
    # One AdamW step at lr 1e-3 moves a value by about 1e-3: far beyond a grid step.
    moved = normal_marks(drawn + 1e-6 * torch.randn(16, 32))
    assert moved is not None and not moved.present, moved
    # Drawn another way (in float64, as a GPU's or numpy's generator gives values off this grid): no marks, and
    # with this many pairs, clearly none.
    elsewhere = normal_marks((torch.randn(64, 32, dtype=torch.float64) * 0.02).float())
    assert elsewhere is not None and elsewhere.gone and not elsewhere.present, elsewhere
    # Rows whose length is not a multiple of 16 do not start normal_'s blocks of 16: not judged.
    assert normal_marks(torch.empty(8, 24).normal_()) is None


def test_a_fresh_draw_of_every_kind_reads_marked_and_a_trained_one_does_not(tmp_path: Path) -> None:
    """Every normal-init matrix of the fresh models carries the marks; after 8 steps none does (each moved)."""
    from weightdoctor.generator_marks import normal_marks

    for kind in ("llama", "t5"):
        fresh = _saved(tmp_path / kind, kind, 8)
        saved = load_file(tmp_path / kind / "model.safetensors")
        for name, value in fresh.items():
            if value.dim() != 2 or name not in saved or name.endswith("relative_attention_bias.weight"):
                continue
            drawn, now = normal_marks(value), normal_marks(saved[name])
            assert drawn is not None and drawn.present, (name, drawn)
            assert now is not None and not now.present, (name, now)


# -- gap 1: a lone bias-less matrix frozen in a trained block ------------------------------------------------------


@pytest.mark.parametrize(("kind", "steps", "frozen"), [
    ("llama", 8, "model.layers.1.mlp.up_proj."),
    ("llama", 8, "model.layers.0.self_attn.v_proj."),
    ("t5", 8, "encoder.block.1.layer.1.DenseReluDense.wi."),
    ("t5", 8, "decoder.block.0.layer.0.SelfAttention.q."),
    ("t5", 300, "encoder.block.1.layer.1.DenseReluDense.wi."),
])
def test_a_lone_frozen_matrix_without_a_bias_is_warned(tmp_path: Path, kind: str, steps: int, frozen: str) -> None:
    """Read "trained" with no warning (the frozen matrix was said to have got updates, its block's norms having
    moved); now it alone is warned, saying what tells it."""
    fresh = _saved(tmp_path, kind, steps, frozen)
    unmoved = _unmoved_matrices(tmp_path, fresh)
    assert unmoved == {frozen + "weight"}, unmoved
    report = _stats_json(tmp_path)
    assert report["weights"]["state"] == "trained"
    warned = _untrained(report)
    assert frozen + "weight" in warned, report["findings"]
    finding = warned[frozen + "weight"]
    # Ending with ": this layer got no update" where the state rests on the pool or the constants.
    assert f"{_MARKS} (their pairs sit on its grid of 2^24 angles, which any update erases) while others moved" \
        in finding["message"], finding["message"]
    assert "too little to see" not in finding["hint"] and finding["hint"].startswith(
        "a head saved before fine-tuning, a layer frozen by mistake (requires_grad=False")
    # Nothing else warned where nothing else stayed (T5's shared table after 300 steps has no evidence either
    # way: see test_t5_shared_table_after_300_steps_keeps_its_warning).
    assert set(warned) - {frozen + "weight", "shared.weight"} == set(), sorted(warned)
    # Frozen, it is not pooled with the others as one that "trained too".
    pooled = report["weights"]["pooled_spread"]
    assert pooled is None or frozen + "weight" not in json.dumps(pooled)


# -- gap 2: an embedding that trained beside a frozen layer -------------------------------------------------------


@pytest.mark.parametrize("frozen", ["transformer.h.1.mlp.c_fc.", "transformer.h.0.attn.c_attn."])
def test_gpt2_wte_beside_a_frozen_layer_is_told_trained_by_its_lost_marks(tmp_path: Path, frozen: str) -> None:
    """GPT-2, 5 AdamW steps, one layer frozen: wte (tied, no bias, no block) moved ~5e-3 on a 0.02 init and was
    warned untrained-tensor beside the frozen layer. The frozen matrix still carries normal_'s marks; wte lost them."""
    fresh = _saved(tmp_path, "gpt2", 5, frozen)
    assert "transformer.wte.weight" not in _unmoved_matrices(tmp_path, fresh)
    report = _stats_json(tmp_path)
    warned = _untrained(report)
    assert "transformer.wte.weight" not in warned, warned
    assert frozen + "weight" in warned
    info = " ".join(f["message"] for f in report["findings"] if f["code"] == "briefly-trained")
    assert ("1 matrix (transformer.wte.weight) still looks like its initialization, but its values no longer sit on "
            "the grid of angles PyTorch's normal_ draws on, where others of this checkpoint still do, so it did get "
            "small updates") in info, info


def test_gpt2_wte_after_5_steps_with_nothing_frozen_is_still_warned(tmp_path: Path) -> None:
    """Left as it was: with nothing frozen, no matrix keeps normal_'s marks, so their loss tells nothing (a matrix
    drawn on a GPU carries none either), and wte has neither bias nor block."""
    _saved(tmp_path, "gpt2", 5)
    assert "transformer.wte.weight" in _untrained(_stats_json(tmp_path))


# -- wording ------------------------------------------------------------------------------------------------------


def test_the_pooled_state_reads_plainly(tmp_path: Path) -> None:
    """Llama after 5 AdamW steps: no matrix tells alone, pooled they do."""
    _saved(tmp_path, "llama", 5)
    report = _stats_json(tmp_path)
    weights = report["weights"]
    info = [f["message"] for f in report["findings"] if f["code"] == "briefly-trained"]
    assert len(info) == 1, info
    if weights["state_basis"] == "pooled":
        assert info[0].startswith("the checkpoint has been trained, but only a little (a few steps, or a small "
                                  "learning rate): each matrix still looks like its initialization one by one, but "
                                  "taken together the "), info
    else:
        assert weights["state_basis"] == "constants" and info[0].startswith(
            "the checkpoint has been trained, but only a little: "), info
        assert "The matrices still look like their initialization, one by one and taken together (" in info[0], info
    assert "alone still fit" not in info[0]
