"""fixlist28: three diff-keys left-outs.

- A new task head's LayerNorm / RMSNorm weight and bias (RoBERTa's `lm_head.layer_norm`, BERT's
  `cls.predictions.transform.LayerNorm`) were "new, initialised at random" / "initialised by the model": the model's
  _init_weights sets them to ones and zeros, which is what from_pretrained leaves.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers import run_json


def test_a_new_heads_layer_norm_is_said_to_start_at_ones_and_zeros_as_from_pretrained_leaves_it(
        tmp_path: Path) -> None:
    import transformers
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaModel

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=40)
    RobertaModel(config).save_pretrained(tmp_path / "base")
    RobertaForMaskedLM(config).save_pretrained(tmp_path / "mlm")
    loaded, info = RobertaForMaskedLM.from_pretrained(tmp_path / "base", output_loading_info=True)
    state = loaded.state_dict()
    assert {"lm_head.layer_norm.weight", "lm_head.layer_norm.bias"} <= set(info["missing_keys"])
    assert torch.equal(state["lm_head.layer_norm.weight"], torch.ones(16))
    assert torch.equal(state["lm_head.layer_norm.bias"], torch.zeros(16))

    code, report = run_json("diff-keys", tmp_path / "base", tmp_path / "mlm")
    assert code in (0, 1), report
    detail = {row["name"]: row["detail"] for row in report["missing"]}
    assert detail["lm_head.layer_norm.weight"] == "new, set to ones by the model (a LayerNorm's scale), not random"
    assert detail["lm_head.layer_norm.bias"] == "new, set to zeros by the model (a norm's shift), not random"
    # The head's Linear keeps its words: a weight drawn at random, a bias set by the model.
    assert detail["lm_head.dense.weight"] == "new, initialised at random"
    assert detail["lm_head.dense.bias"] == "new, initialised by the model"


def test_berts_new_prediction_head_layer_norm_is_said_to_start_at_ones_and_zeros(tmp_path: Path) -> None:
    import transformers
    from transformers import BertConfig, BertForMaskedLM, BertModel

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=40)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "base")
    BertForMaskedLM(config).save_pretrained(tmp_path / "mlm")
    loaded = BertForMaskedLM.from_pretrained(tmp_path / "base")
    assert torch.equal(loaded.state_dict()["cls.predictions.transform.LayerNorm.weight"], torch.ones(16))
    code, report = run_json("diff-keys", tmp_path / "base", tmp_path / "mlm")
    assert code in (0, 1), report
    detail = {row["name"]: row["detail"] for row in report["missing"]}
    assert detail["cls.predictions.transform.LayerNorm.weight"] == \
        "new, set to ones by the model (a LayerNorm's scale), not random"
    assert detail["cls.predictions.transform.LayerNorm.bias"] == \
        "new, set to zeros by the model (a norm's shift), not random"
    assert detail["cls.predictions.transform.dense.weight"] == "new, initialised at random"
