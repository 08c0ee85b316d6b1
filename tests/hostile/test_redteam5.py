"""Hostile inputs found by the fifth red-team round: each must exit 0 or 2 with one line naming the file, fast,
within bounded memory, and never write over its input."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.helpers import run_cli


def test_an_index_naming_tens_of_thousands_of_shards_is_read_in_linear_time(tmp_path: Path) -> None:
    """The index's shard names were collected into a list checked with `in`: 80,000 distinct names (a 2.5 MB
    index) took 26 s before the first shard was looked at. They are collected in a dict now."""
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {f"t{i}": f"s{i}.safetensors" for i in range(80_000)}}))
    started = time.perf_counter()
    result = run_cli("inspect", str(index))
    elapsed = time.perf_counter() - started
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {index}: shard 's0.safetensors' named by the index does not exist"]
    assert elapsed < 8, elapsed
