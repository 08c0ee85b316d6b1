"""`inspect --stats --sample` on a tensor of very long rows reads only the sampled columns of each row.

A safetensors row longer than stats.MAX_LINE was read whole, then cut to the sampled columns: a [2, 2**31] float32
tensor (a sparse file) took 8.6 GB and 70 s, then failed "file ended while reading tensor 'w'", as one `preadv`
returns at most 2 GiB - 4 KiB and the rest of the row was taken for the end of the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli
from weightdoctor import stats
from weightdoctor.checkpoint import open_checkpoint


def _wide(path: Path) -> Path:
    torch.manual_seed(0)
    save_file({"w": torch.randn(4, stats.MAX_LINE * 3) * 0.02}, str(path))
    return path


def test_a_long_row_is_read_at_its_sampled_columns_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _wide(tmp_path / "wide.safetensors")
    longest: list[int] = []
    real_read = stats._Lines.read

    def read(self: stats._Lines, start: int, count: int, keep_float64: bool = False) -> torch.Tensor:
        longest.append(count)
        return real_read(self, start, count, keep_float64)

    monkeypatch.setattr(stats._Lines, "read", read)
    with open_checkpoint(path) as checkpoint:
        info = checkpoint.tensor_info("w")
        sample = stats.gather_sample(stats._Lines(checkpoint, info, None), info, whole=False)
        whole = checkpoint.load_tensor("w")
    assert max(longest, default=0) < info.shape[1]  # no row read whole
    assert sample.rows is not None and tuple(sample.rows.shape) == (4, stats.MAX_LINE)
    assert not sample.rows_complete
    # The values are those of the row, at the columns sampled: each sampled row is a subset of its row's values.
    for r in range(4):
        assert torch.isin(sample.rows[r], whole[r]).all()


def test_a_run_longer_than_one_read_returns_is_read_in_turns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _wide(tmp_path / "wide.safetensors")
    real_preadv = os.preadv

    def short_preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        # As Linux caps one read at 2 GiB - 4 KiB: here at 1,000 bytes.
        return real_preadv(fd, [memoryview(buffers[0])[:1000]], offset)

    with open_checkpoint(path) as checkpoint:
        info = checkpoint.tensor_info("w")
        lines = stats._Lines(checkpoint, info, None)
        monkeypatch.setattr(os, "preadv", short_preadv)
        values = lines.read(5, 3000)
        monkeypatch.undo()
        whole = checkpoint.load_tensor("w").reshape(-1)
    assert torch.equal(values, whole[5:3005])


def test_sample_statistics_of_wide_tensors_are_unchanged(tmp_path: Path) -> None:
    path = _wide(tmp_path / "wide.safetensors")
    result = run_cli("inspect", path, "--stats", "--sample", "5000", "--json")
    assert result.exit_code in (0, 1), result.output
    row = json.loads(result.stdout)["tensors"][0]
    assert row["stats"]["sampled"] and row["init"]["label"] in ("normal", "trained", "undetermined")
