"""Fix list 15: repeated options compared as their type reads them, safe user regexes no longer refused, convert /
shard `--json` warnings at the top level, NVFP4 labelled float4, reader's variant helper public, check-dtype's
reason for a tensor it could not read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import REPO_ROOT, run_cli, run_json

EXAMPLE = REPO_ROOT / "fixtures" / "example"


# 1. `--sample 5 --sample 05`: the same number, refused as "given twice" because the strings differ.

def test_an_option_given_twice_with_values_its_type_reads_alike_runs(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"a.weight": torch.arange(8, dtype=torch.float32)}, path)
    code, data = run_json("check-dtype", str(path), "--sample", "5", "--sample", "05")
    assert code == 0 and data is not None, data
    assert data["sample"]["values_per_tensor"] == 5, data["sample"]
    # Values that differ once read are still refused, naming both as typed.
    result = run_cli("check-dtype", str(path), "--sample", "5", "--sample", "6")
    assert result.exit_code == 2 and result.stdout == ""
    assert "--sample is given twice ('5', then '6')" in result.stderr, result.stderr
    # The same bad value twice: Click's own refusal of the value, not a word about the repetition.
    bad = run_cli("check-dtype", str(path), "--sample", "x", "--sample", "x")
    assert bad.exit_code == 2 and "Invalid value for '--sample': 'x' is not a valid int" in bad.stderr, bad.stderr
