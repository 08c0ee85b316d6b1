"""A thirty-fourth round: what round 33 left, then third-party files no earlier round covered.

peft's LoraConfig fields that narrow or widen what a LoRA adapts (layers_to_transform, alpha_pattern,
trainable_token_indices) are written by peft itself (get_peft_model, save_pretrained) on a tiny Llama.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import REPO_ROOT
from tests.helpers import run_cli, run_json


def _tiny_llama(folder: Path) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=64)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    return model


def test_inspect_says_the_layers_alphas_and_tokens_a_lora_config_sets(tmp_path: Path) -> None:
    """A LoRA on q_proj and v_proj of layer 1 alone (layers_to_transform=[1]), v_proj's alpha 32 (alpha_pattern),
    three token rows trained (trainable_token_indices): inspect said "LoRA r=4 alpha=8 on v_proj, q_proj", as if
    every layer's were adapted with alpha 8 and nothing else trained."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    model = _tiny_llama(tmp_path / "base")
    adapter = tmp_path / "lora"
    get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], layers_to_transform=[1],
                                     alpha_pattern={"v_proj": 32}, trainable_token_indices=[3, 5, 7])
                   ).save_pretrained(adapter)
    saved = load_file(adapter / "adapter_model.safetensors")
    assert {name.split(".")[4] for name in saved if ".layers." in name} == {"1"}, sorted(saved)
    assert saved["base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"].shape == (3, 16)

    code, data = run_json("inspect", str(adapter))
    assert code == 0
    assert data["adapter"]["layers_to_transform"] == [1] and "layers_pattern" not in data["adapter"]
    assert data["adapter"]["alpha_pattern"] == {"v_proj": 32} and data["adapter"]["trainable_token_count"] == 3
    text = run_cli("inspect", str(adapter), runner=CliRunner(env={"COLUMNS": "400"})).stdout
    assert re.search(r"LoRA r=4 alpha=8 \(alpha=32 where alpha_pattern names 1 pattern\) on (v_proj, q_proj|q_proj, "
                     r"v_proj) in layer 1; trains 3 token embeddings \(trainable_token_indices\) —", text), text

    # Two layers named by layers_pattern, written as peft writes an int layers_to_transform too.
    other = tmp_path / "lora-two"
    get_peft_model(_tiny_llama(tmp_path / "base2"), LoraConfig(
        r=2, target_modules=["q_proj"], layers_to_transform=[0, 2], layers_pattern="layers")).save_pretrained(other)
    code, data = run_json("inspect", str(other))
    assert code == 0 and data["adapter"]["layers_to_transform"] == [0, 2] and data["adapter"]["layers_pattern"] in (
        "layers", ["layers"])
    text = run_cli("inspect", str(other), runner=CliRunner(env={"COLUMNS": "400"})).stdout
    assert "LoRA r=2 alpha=8 on q_proj in layers 0, 2 (under layers) —" in text, text
    # A plain LoRA says none of it.
    plain = tmp_path / "lora-plain"
    get_peft_model(_tiny_llama(tmp_path / "base3"), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(plain)
    code, data = run_json("inspect", str(plain))
    assert code == 0 and not {"layers_to_transform", "alpha_pattern", "trainable_token_count"} & set(data["adapter"])
    text = run_cli("inspect", str(plain), runner=CliRunner(env={"COLUMNS": "400"})).stdout
    assert "LoRA r=2 alpha=8 on q_proj —" in text, text


def test_pyyaml_which_vocos_detection_reads_is_a_declared_dependency() -> None:
    """vocos_config parses config.yaml with PyYAML (a Vocos vocoder's folder is told by it); pyproject.toml did not
    declare it, relying on transformers requiring it. It is declared at transformers' own floor."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "pyyaml>=5.1" in [spec.lower() for spec in declared], declared
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    assert "PyYAML 5.1" in readme
