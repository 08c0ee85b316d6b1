"""A config's `transformers_weights`: transformers 5 reads the file it names in place of model.safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

from tests.helpers import run_cli, run_json


def _folder(tmp_path: Path, name: str, *, decoy: bool = True) -> tuple[Path, BertModel]:
    """A tiny BERT saved by save_pretrained, its weights moved to `name` and named by the config; with `decoy`,
    a model.safetensors of one unrelated tensor beside them (what the usual file order would read)."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    model = BertModel(config)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    weights = folder / name
    weights.parent.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").rename(weights)
    if decoy:
        save_file({"decoy.weight": torch.zeros(3)}, folder / "model.safetensors")
    data = json.loads((folder / "config.json").read_text())
    data["transformers_weights"] = name
    (folder / "config.json").write_text(json.dumps(data))
    return folder, model


@pytest.mark.parametrize("name", ["custom.safetensors", "weights/bert.safetensors"])
def test_the_named_file_is_read_as_from_pretrained_reads_it(tmp_path: Path, name: str) -> None:
    folder, model = _folder(tmp_path, name)
    _, info = BertModel.from_pretrained(folder, output_loading_info=True)  # the oracle: it reads the named file
    assert not info["missing_keys"] and not info["unexpected_keys"]

    code, data = run_json("inspect", str(folder))
    assert code == 0, data
    assert data["num_tensors"] == len(model.state_dict()) and "decoy.weight" not in {t["name"] for t in data["tensors"]}
    assert any(f"config.json names {name} as transformers_weights" in w and "model.safetensors beside it ignored" in w
               for w in data["warnings"]), data["warnings"]

    code, diff = run_json("diff-keys", str(folder), "--model-class", "BertModel")
    assert code == 0, diff
    assert diff["missing"] == [] and diff["unexpected"] == [] and diff["matched"] == len(model.state_dict())
    assert diff["from_pretrained_reads_a"] is True


def test_without_the_key_the_usual_file_is_read(tmp_path: Path) -> None:
    folder, _ = _folder(tmp_path, "custom.safetensors")
    data = json.loads((folder / "config.json").read_text())
    del data["transformers_weights"]
    (folder / "config.json").write_text(json.dumps(data))
    code, inspected = run_json("inspect", str(folder))
    assert code == 0 and [t["name"] for t in inspected["tensors"]] == ["decoy.weight"]


@pytest.mark.parametrize(("name", "words"), [
    ("../outside.safetensors", "outside the model folder"),
    ("custom.bin", "neither a safetensors file nor a safetensors index"),
])
def test_names_from_pretrained_refuses_are_refused(tmp_path: Path, name: str, words: str) -> None:
    folder, _ = _folder(tmp_path, "custom.safetensors")
    data = json.loads((folder / "config.json").read_text())
    data["transformers_weights"] = name
    (folder / "config.json").write_text(json.dumps(data))
    save_file({"w": torch.ones(2)}, tmp_path / "outside.safetensors")
    torch.save({"w": torch.ones(2)}, folder / "custom.bin")
    with pytest.raises(ValueError):  # the oracle refuses both
        BertModel.from_pretrained(folder)
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "config.json" in lines[0] and words in lines[0] and "Traceback" not in result.output


def test_a_named_file_the_folder_lacks(tmp_path: Path) -> None:
    folder, _ = _folder(tmp_path, "custom.safetensors")
    (folder / "custom.safetensors").unlink()
    with pytest.raises(OSError):  # the oracle: it opens the named file and no other
        BertModel.from_pretrained(folder)
    result = run_cli("diff-keys", str(folder), "--model-class", "BertModel")
    assert result.exit_code == 2
    assert "transformers_weights names custom.safetensors, which the folder lacks" in result.output
