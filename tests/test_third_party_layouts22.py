"""A twenty-second round: image, audio and LoRA ecosystems as their own save code writes them: sentence-transformers'
first folders (the model in 0_Transformer/ beside a config.json of the library's own), original Stable Diffusion
checkpoints saved with LitEma's copy of the UNet, ..."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import one_error_line, run_cli, run_json


def _old_sentence_transformers(root: Path) -> None:
    """A sentence-transformers 0.x save (SentenceTransformer.save): each module in its own numbered folder, the
    transformer's config.json and pytorch_model.bin in 0_Transformer/, modules.json naming the folders, and at the
    root a config.json of the library's own, holding only its version."""
    torch.manual_seed(0)
    transformer = root / "0_Transformer"
    transformer.mkdir(parents=True)
    (root / "1_Pooling").mkdir()
    (root / "2_Dense").mkdir()
    hidden = 16
    (transformer / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertModel"], "vocab_size": 50, "hidden_size": hidden,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 32}))
    torch.save({"embeddings.word_embeddings.weight": torch.randn(50, hidden),
                "encoder.layer.0.output.dense.weight": torch.randn(hidden, 32)}, transformer / "pytorch_model.bin")
    (transformer / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": hidden,
                                                                 "pooling_mode_mean_tokens": True}))
    (root / "2_Dense" / "config.json").write_text(json.dumps({"in_features": hidden, "out_features": 8, "bias": True}))
    torch.save({"linear.weight": torch.randn(8, hidden), "linear.bias": torch.zeros(8)},
               root / "2_Dense" / "pytorch_model.bin")
    (root / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    (root / "config.json").write_text(json.dumps({"__version__": "0.3.9"}))


def test_plan_devices_names_the_subfolders_of_an_old_sentence_transformers_folder(tmp_path: Path) -> None:
    """plan-devices took the root's config.json ({"__version__": ...}) for a model config to plan from and said only
    "nothing to plan: the checkpoint holds no tensors and its config.json has no model_type", where inspect and the
    others name the subfolders that hold the weights: it names them too, and the one it names is planned."""
    root = tmp_path / "bert-base-nli-mean-tokens"
    _old_sentence_transformers(root)
    for command in (("plan-devices", str(root), "--gpu", "1GB"), ("inspect", str(root))):
        result = run_cli(*command)
        line = one_error_line(result)
        assert result.exit_code == 2 and result.stdout == "", (command, result.stdout)
        assert "nothing to plan" not in line, line
        assert "weights are in subfolders (0_Transformer/, 2_Dense/): point at one, e.g. " in line, line
        assert line.endswith(str(root / "0_Transformer")), line
    code, data = run_json("plan-devices", str(root / "0_Transformer"), "--gpu", "1GB")
    assert code == 0 and data["model_class"] == "BertModel", data

