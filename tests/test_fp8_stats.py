"""`inspect --stats` on float8 weights with an all-zero row or column: torch has no `count_nonzero` for float8 on
CPU, and the dead-row check used it (found by regress2 on an FP8 checkpoint: "unexpected NotImplementedError:
"nonzero_count_cpu" not implemented for 'Float8_e4m3fn'", exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_json


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_float8_weights_with_a_zero_row_and_column_are_summarised(tmp_path: Path, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    weight = torch.randn(64, 48)
    weight[3] = 0.0
    weight[:, 5] = 0.0
    path = tmp_path / "fp8.safetensors"
    save_file({"layer.weight": weight.to(dtype), "layer.weight_scale_inv": torch.ones(1, 1)}, path)
    code, data = run_json("inspect", str(path), "--stats")
    assert code == 0, data
    found = {(f["code"], f["tensor"]) for f in data["findings"]}
    # The same verdicts a float32 copy gets: one dead row, one dead column.
    assert {("dead-rows", "layer.weight"), ("dead-columns", "layer.weight")} <= found, found
    dead = next(f for f in data["findings"] if f["code"] == "dead-rows")
    assert "1 of 64 rows" in dead["message"], dead
