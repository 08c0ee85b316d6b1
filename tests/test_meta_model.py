"""Building models on the meta device from fixture configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weightdoctor.errors import UsageError
from weightdoctor.meta_model import build_meta_model


def test_meta_models_tie_and_allocate_nothing(fx: dict[str, Path]) -> None:
    gpt2 = build_meta_model(json.loads((fx["gpt2"] / "config.json").read_text()))
    assert type(gpt2).__name__ == "GPT2LMHeadModel"
    assert all(p.device.type == "meta" for p in gpt2.parameters())
    assert gpt2.lm_head.weight is gpt2.transformer.wte.weight
    bert = build_meta_model(json.loads((fx["bert"] / "config.json").read_text()), "BertForQuestionAnswering")
    assert "qa_outputs.weight" in bert.state_dict()


def test_meta_model_errors() -> None:
    with pytest.raises(UsageError, match="model_type"):
        build_meta_model({"hidden_size": 3})
    with pytest.raises(UsageError, match="NoSuchModel"):
        build_meta_model({"model_type": "bert"}, "NoSuchModel")


def test_unknown_model_type_is_one_short_line() -> None:
    with pytest.raises(UsageError) as info:
        build_meta_model({"model_type": "no-such-arch"})
    assert "no-such-arch" in info.value.message and len(info.value.message) < 120


def test_a_config_without_architectures_builds_the_first_of_several_automodel_classes() -> None:
    """AutoModel maps funnel to (FunnelModel, FunnelBaseModel): without `architectures`, the first, as
    AutoModel.from_pretrained picks it; with them, the one they name."""
    config = {"model_type": "funnel", "vocab_size": 50, "block_sizes": [1, 1], "d_model": 16, "n_head": 2,
              "d_head": 8, "d_inner": 32}
    assert type(build_meta_model(config)).__name__ == "FunnelModel"
    assert type(build_meta_model({**config, "architectures": ["FunnelBaseModel"]})).__name__ == "FunnelBaseModel"
