"""plan87: plan-devices, what round plan86 left.

5. The per-token figure of a generating encoder-decoder split its decoder's cross-attention key / value projections
   out (once per input) where generate() caches, as the config built from config.json says. from_pretrained gives
   the model the folder's generation_config.json where there is one, whole: a use_cache it sets wins, and one it
   leaves out is generate()'s default, True, whatever config.json says. It is read now.

The oracle is accelerate itself, as in tests/test_plan84: the model loaded by from_pretrained from the folder,
dispatched by dispatch_model on the map, and the bytes its hooks copy while generate() makes 3 and 6 tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_json
from tests.test_plan84 import _bart, _bytes_loaded
from tests.test_plan86 import _pix2struct


def _measured(folder: Path, placed: dict[str, Any], tmp_path: Path, inputs: dict[str, Any] | None = None
              ) -> tuple[int, int]:
    """(per input, per token) as accelerate's hooks copy them in generate()."""
    three = _bytes_loaded(folder, placed, 3, tmp_path, inputs=inputs)
    six = _bytes_loaded(folder, placed, 6, tmp_path, inputs=inputs)
    per_token = (six - three) // 3
    return three - 3 * per_token, per_token


def _set_generation_use_cache(folder: Path, use_cache: bool | None) -> None:
    """generation_config.json's use_cache set to `use_cache`, or taken out (None); config.json left as it is."""
    path = folder / "generation_config.json"
    saved = json.loads(path.read_text())
    saved.pop("use_cache", None)
    if use_cache is not None:
        saved["use_cache"] = use_cache
    path.write_text(json.dumps(saved))


@pytest.mark.parametrize("kind", ["bart-no-cache", "pix2struct-default-cache"])
def test_generation_config_json_decides_whether_cross_attention_keys_are_cached(tmp_path: Path, kind: str) -> None:
    """BART (config.json use_cache true) whose generation_config.json says use_cache false: generate() keeps no
    cache, and its offloaded decoder projects the encoder's states at every token; the report said those
    projections once per input. Pix2Struct whose text_config says use_cache false (its default) with a
    generation_config.json that sets none: generate() caches (its default), and they run once per input; the report
    said them per token. Both now follow generation_config.json, as from_pretrained loads it."""
    inputs = None
    if kind == "bart-no-cache":
        folder = _bart(tmp_path / kind)
        _set_generation_use_cache(folder, False)
    else:
        folder, inputs = _pix2struct(tmp_path / kind, use_cache=False)
        _set_generation_use_cache(folder, None)
    code, whole = run_json("plan-devices", str(folder), "--gpu", "1GB")
    total = whole["weights_bytes"] + whole["buffers_bytes"]
    code, data = run_json("plan-devices", str(folder), "--gpu", f"{int(total * 0.3)}B", "--cpu", "1GB")
    placed = data["device_map"]
    assert any(where == "cpu" and "decoder" in name for name, where in placed.items()), placed
    per_input, per_token = _measured(folder, placed, tmp_path, inputs)
    off = data["offload"]
    assert (off["per_input_cpu_bytes"], off["bytes_per_token"]) == (per_input, per_token), (off, per_input, per_token)
