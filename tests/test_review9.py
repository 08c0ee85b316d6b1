"""Review 9: bugs found reviewing the branches merged since 4ec7108 (each test failed before its fix)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import run_cli


def test_one_universal_parameter_is_named_in_the_singular_possessive(tmp_path: Path) -> None:
    """A DeepSpeed universal checkpoint of one parameter read "its 1 parameter' fp32 values" (the singular lost its
    possessive 's when the count wording was made to agree)."""
    zero = tmp_path / "zero"
    (zero / "embed.weight").mkdir(parents=True)
    torch.save({"param": torch.zeros(2)}, zero / "embed.weight" / "fp32.pt")
    result = run_cli("inspect", zero)
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert "its 1 parameter's fp32 values are in" in text
    assert "parameter' " not in text

    (zero / "head.weight").mkdir()
    torch.save({"param": torch.zeros(2)}, zero / "head.weight" / "fp32.pt")
    text = " ".join(run_cli("inspect", zero).stderr.split())
    assert "its 2 parameters' fp32 values are in" in text


def test_model_class_naming_a_class_whose_backend_is_missing_is_refused_in_one_line(tmp_path: Path) -> None:
    """--model-class with a config.json without model_type looked up the class's config_class before checking it
    is a model class: a transformers placeholder for a missing backend (a feature extractor needing torchaudio)
    raised its ImportError, reported as an unexpected error, where a config with model_type says it is no model
    class."""
    import transformers
    from safetensors.torch import save_file

    dummy = next((name for name in ("MusicgenMelodyFeatureExtractor", "GraniteSpeechFeatureExtractor")
                  if _raises_on_attribute(getattr(transformers, name, None))), None)
    if dummy is None:  # every optional backend installed: no placeholder class to name
        import pytest

        pytest.skip("no transformers placeholder class in this environment")
    folder = tmp_path / "old-bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"hidden_size": 16, "num_hidden_layers": 1,
                                                    "num_attention_heads": 2, "intermediate_size": 32,
                                                    "vocab_size": 30}))
    save_file({"embeddings.word_embeddings.weight": torch.zeros(30, 16)}, folder / "model.safetensors")
    result = run_cli("diff-keys", folder, "--model-class", dummy)
    assert result.exit_code == 2
    assert "unexpected" not in result.stderr
    assert "ImportError" not in result.stderr
    assert "no model_type" in result.stderr or "not a model class" in result.stderr


def _raises_on_attribute(cls: object) -> bool:
    try:
        getattr(cls, "config_class", None)
    except ImportError:
        return True
    return False


def test_a_folder_of_several_paddle_checkpoints_says_each_is_one(tmp_path: Path) -> None:
    """A folder holding two paddle.save files said "it holds a.pdparams, b.pdparams, a PaddlePaddle checkpoint", a
    list whose last item read as a third thing; the one-file wording stays."""
    import pickle

    import numpy as np

    folder = tmp_path / "paddle"
    folder.mkdir()
    for name in ("model_state.pdparams", "ema.pdparams"):
        with open(folder / name, "wb") as handle:
            pickle.dump({"linear.weight": np.ones((3, 2), dtype=np.float32)}, handle, protocol=4)
    result = run_cli("inspect", folder)
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert "it holds ema.pdparams, model_state.pdparams, each a PaddlePaddle checkpoint (paddle.save" in text

    (folder / "ema.pdparams").unlink()
    text = " ".join(run_cli("inspect", folder).stderr.split())
    assert "it holds model_state.pdparams, a PaddlePaddle checkpoint (paddle.save, not PyTorch), read when" in text


def test_a_legacy_torch_save_of_pickle_protocol_0_or_1_is_named_as_one(tmp_path: Path) -> None:
    """torch.save(pickle_protocol=0 or 1, _use_new_zipfile_serialization=False) writes no PROTO opcode: the file was
    refused as "not a safetensors file nor a PyTorch pickle", though it is one (torch.load(weights_only=False) reads
    protocol 1). Protocol 2 and the zip format stay read."""
    state = {"w": torch.ones(2, 3)}
    for protocol in (0, 1):
        path = tmp_path / f"p{protocol}.pt"
        torch.save(state, path, pickle_protocol=protocol, _use_new_zipfile_serialization=False)
        result = run_cli("inspect", path)
        assert result.exit_code == 2
        text = " ".join(result.stderr.split())
        assert f"p{protocol}.pt: a legacy-format (non-zip) torch.save file pickled with protocol 0 or 1" in text
        assert "not a PyTorch pickle" not in text
    path = tmp_path / "p2.pt"
    torch.save(state, path, pickle_protocol=2, _use_new_zipfile_serialization=False)
    result = run_cli("inspect", path, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["num_tensors"] == 1


def test_a_legacy_file_of_bare_untyped_storages_is_not_said_to_hold_tensors(tmp_path: Path) -> None:
    """A legacy torch.save of untyped storages (no tensor in it) was refused as "holding tensors of a dtype without a
    storage class"; it holds storages. A uint16 tensor's file still names its dtype."""
    path = tmp_path / "storages.pt"
    torch.save({"s": torch.zeros(3).untyped_storage()}, path, _use_new_zipfile_serialization=False)
    result = run_cli("inspect", path)
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert "torch.save file holding untyped storages (torch.UntypedStorage), whose storages torch reads only" in text
    assert "holding tensors" not in text

    path = tmp_path / "u16.pt"
    torch.save({"u": torch.zeros(3, dtype=torch.uint16)}, path, _use_new_zipfile_serialization=False)
    text = " ".join(run_cli("inspect", path).stderr.split())
    assert "torch.save file holding uint16 tensors, whose storages" in text


def test_an_abstract_pretrained_model_class_is_refused_in_one_line(tmp_path: Path) -> None:
    """--model-class BertPreTrainedModel (the base of BERT's models, which builds no layer) ended in "unexpected
    AttributeError: ... all_tied_weights_keys" (diff-keys) or "_get_device_map fails on these budgets ... try other
    --gpu" (plan-devices)."""
    from safetensors.torch import save_file

    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1,
                                                    "num_attention_heads": 2, "intermediate_size": 32,
                                                    "vocab_size": 30}))
    save_file({"embeddings.word_embeddings.weight": torch.zeros(30, 16)}, folder / "model.safetensors")
    for args in (("diff-keys", folder), ("plan-devices", folder, "--gpu", "1GB")):
        result = run_cli(*args, "--model-class", "BertPreTrainedModel")
        assert result.exit_code == 2
        text = " ".join(result.stderr.split())
        assert "transformers' BertPreTrainedModel builds no layers" in text
        assert "AttributeError" not in text
    result = run_cli("diff-keys", folder, "--model-class", "BertModel", "--json")
    assert json.loads(result.stdout)["matched"] == 1
