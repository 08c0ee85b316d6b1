"""Review of the TransformerEngine `_extra_state` / inert io.BytesIO change and of the third-party layouts merged
with it: what `inspect` says of the non-tensor entries it folds, and of a file torch's own loader refuses."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from tests.helpers import run_cli, run_json
from weightdoctor.render.inspect import folded_entries


def _flat(text: str) -> str:
    """A Rich table's text with its borders and line breaks gone (a cell wraps wherever the width falls)."""
    return "".join(text.replace("│", "").split())


def test_an_entry_alone_in_its_fold_keeps_its_own_name() -> None:
    entries = [f"layers.{i}.attn._extra_state (NoneType: None)" for i in range(8)] + ["layers.5.gate (int: 3)"]
    folded = folded_entries(entries)
    assert folded == ["layers.*.attn._extra_state (NoneType: None) ×8", "layers.5.gate (int: 3)"]


def test_entries_whose_descriptions_differ_are_not_folded_together() -> None:
    entries = [f"opt.{i} (bytes of {1024 * (1 + i % 2):,} bytes)" for i in range(8)]
    assert folded_entries(entries) == ["opt.* (bytes of 1,024 bytes) ×4", "opt.* (bytes of 2,048 bytes) ×4"]


def test_inspect_names_the_layer_of_a_lone_non_tensor_entry(tmp_path: Path) -> None:
    """A Megatron-style state dict with an `_extra_state` in every layer and one odd entry in layer 7: the row
    said `layers.*.mlp._extra_state (int: 3)`, as if every layer held one."""
    torch.manual_seed(0)
    state: dict[str, object] = {}
    for i in range(10):
        state[f"layers.{i}.attn.weight"] = torch.randn(2, 2)
        state[f"layers.{i}.attn._extra_state"] = io.BytesIO(b"fp8")
    state["layers.7.mlp._extra_state"] = 3
    path = tmp_path / "model_optim_rng.pt"
    torch.save({"model": state, "iteration": 1}, path)

    code, report = run_json("inspect", str(path))
    assert code == 0, report
    assert "layers.7.mlp._extra_state (int: 3)" in report["skipped_entries"]
    human = run_cli("inspect", str(path))
    assert human.exit_code == 0, human.stderr
    row = _flat(human.stdout.split("non-tensor entries", 1)[1].split("security", 1)[0])
    assert "layers.*.attn._extra_state(_io.BytesIO,readasinertdata)×10" in row, row
    assert "layers.7.mlp._extra_state(int:3)" in row, row
    assert "layers.*.mlp" not in row, row

