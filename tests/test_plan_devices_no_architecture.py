"""plan-devices on a config.json with no `architectures`: the --model-class its warning suggests works when pasted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import run_json

TEXT = dict(model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
VISION = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=37, num_hidden_layers=1,
              num_attention_heads=2, image_size=16, patch_size=8)


@pytest.mark.parametrize("config", [
    {**TEXT},  # a decoder: AutoModelForCausalLM
    {"model_type": "llava", "text_config": TEXT, "vision_config": VISION, "image_token_index": 3},  # no CausalLM
], ids=["llama", "llava"])
def test_suggested_model_class_plans_the_head(tmp_path: Path, config: dict) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    code, bare = run_json("plan-devices", tmp_path, "--gpu", "1GB")
    assert code == 0
    (warning,) = [w for w in bare["warnings"] if "names no architecture" in w]
    (suggested,) = re.findall(r"with (Auto\w+)\)", warning)
    code, headed = run_json("plan-devices", tmp_path, "--gpu", "1GB", "--model-class", suggested)
    assert code == 0, headed
    assert headed["num_params"] > bare["num_params"]  # the head the bare plan left out
