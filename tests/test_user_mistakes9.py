"""Round 9 of the common mistakes users make, and the one line weightdoctor answers each with.

Covers: a misspelled --model-class (the close name is suggested).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, run_cli

EXAMPLE = REPO_ROOT / "fixtures" / "example"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A copy of the tiny BERT model folder (config.json + model.safetensors)."""
    folder = tmp_path / "bert"
    shutil.copytree(EXAMPLE, folder)
    return folder


@pytest.mark.parametrize(("typed", "meant"), [
    ("BertForSequenceClasification", "'BertForSequenceClassification'"),
    ("bertforsequenceclassification", "'BertForSequenceClassification'"),
    ("transformers.BertModel", "'BertModel'"),
])
def test_misspelled_model_class_names_the_close_one(model: Path, typed: str, meant: str) -> None:
    result = run_cli("diff-keys", model, "--model-class", typed)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line
    assert f"no model class {typed!r}; did you mean {meant}" in line
