"""A thirty-fourth round: what round 33 left, then third-party files no earlier round covered.

peft's LoraConfig fields that narrow or widen what a LoRA adapts (layers_to_transform, alpha_pattern,
trainable_token_indices) are written by peft itself (get_peft_model, save_pretrained) on a tiny Llama.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT
from tests.helpers import run_cli, run_json, run_subprocess


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
    text = run_subprocess("inspect", str(adapter), env={"COLUMNS": "400"}).stdout
    assert re.search(r"LoRA r=4 alpha=8 \(alpha=32 where alpha_pattern names 1 pattern\) on (v_proj, q_proj|q_proj, "
                     r"v_proj) in layer 1; trains 3 token embeddings \(trainable_token_indices\) —", text), text

    # Two layers named by layers_pattern, written as peft writes an int layers_to_transform too.
    other = tmp_path / "lora-two"
    get_peft_model(_tiny_llama(tmp_path / "base2"), LoraConfig(
        r=2, target_modules=["q_proj"], layers_to_transform=[0, 2], layers_pattern="layers")).save_pretrained(other)
    code, data = run_json("inspect", str(other))
    assert code == 0 and data["adapter"]["layers_to_transform"] == [0, 2] and data["adapter"]["layers_pattern"] in (
        "layers", ["layers"])
    text = run_subprocess("inspect", str(other), env={"COLUMNS": "400"}).stdout
    assert "LoRA r=2 alpha=8 on q_proj in layers 0, 2 (under layers) —" in text, text
    # A plain LoRA says none of it.
    plain = tmp_path / "lora-plain"
    get_peft_model(_tiny_llama(tmp_path / "base3"), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(plain)
    code, data = run_json("inspect", str(plain))
    assert code == 0 and not {"layers_to_transform", "alpha_pattern", "trainable_token_count"} & set(data["adapter"])
    text = run_subprocess("inspect", str(plain), env={"COLUMNS": "400"}).stdout
    assert "LoRA r=2 alpha=8 on q_proj —" in text, text


def test_inspect_says_what_exclude_modules_leaves_out_and_rslora_scaling(tmp_path: Path) -> None:
    """exclude_modules (a regex leaving layer 0 out) and use_rslora (the update scaled by alpha/√r, not alpha/r): the
    line said "LoRA r=4 alpha=8 on v_proj, q_proj" for both, as for a plain LoRA on every layer."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    excluded = tmp_path / "excluded"
    get_peft_model(_tiny_llama(tmp_path / "base"), LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], exclude_modules=r".*layers\.0\..*")).save_pretrained(excluded)
    assert not any(".layers.0." in name for name in load_file(excluded / "adapter_model.safetensors"))
    code, data = run_json("inspect", str(excluded))
    assert code == 0 and data["adapter"]["exclude_modules"] == r".*layers\.0\..*" and "use_rslora" not in data[
        "adapter"]
    text = run_subprocess("inspect", str(excluded), env={"COLUMNS": "400"}).stdout
    assert re.search(r"LoRA r=4 alpha=8 on (v_proj, q_proj|q_proj, v_proj) except \.\*layers\\\.0\\\.\.\* —",
                     text), text

    stabilised = tmp_path / "rslora"
    get_peft_model(_tiny_llama(tmp_path / "base2"), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj"], use_rslora=True, use_dora=True)).save_pretrained(stabilised)
    code, data = run_json("inspect", str(stabilised))
    assert code == 0 and data["adapter"]["use_rslora"] is True and "exclude_modules" not in data["adapter"]
    text = run_subprocess("inspect", str(stabilised), env={"COLUMNS": "400"}).stdout
    assert "LoRA (DoRA, rsLoRA: scaled by alpha/√r) r=4 alpha=8 on q_proj —" in text, text


def test_pyyaml_which_vocos_detection_reads_is_a_declared_dependency() -> None:
    """vocos_config parses config.yaml with PyYAML (a Vocos vocoder's folder is told by it); pyproject.toml did not
    declare it, relying on transformers requiring it. It is declared at transformers' own floor."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "pyyaml>=5.1" in [spec.lower() for spec in declared], declared
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    assert "PyYAML 5.1" in readme


def _randomized_lora(model: torch.nn.Module, config: object, folder: Path, seed: int = 5) -> dict[str, torch.Tensor]:
    """get_peft_model + save_pretrained, every LoRA factor random (peft starts lora_B at zeros, which any load
    matches), and the factors as saved."""
    from peft import get_peft_model
    from safetensors.torch import load_file

    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    peft_model.save_pretrained(folder)
    return load_file(folder / "adapter_model.safetensors")


def _pasted_call_loads(note: str, saved: dict[str, torch.Tensor]) -> None:
    """The PeftModel.from_pretrained line diff-keys prints, run as a user pastes it: every saved factor lands."""
    snippet = note[note.index("import peft, transformers; "):note.index(", or merge it")]
    namespace: dict[str, object] = {}
    exec(snippet, namespace)  # noqa: S102 - the line the note prints, run as a user pastes it
    loaded = dict(namespace["model"].named_parameters())  # type: ignore[attr-defined]
    for name, tensor in saved.items():
        assert torch.equal(loaded[name.replace(".weight", ".default.weight")], tensor), name


def test_a_lora_fits_a_nemotron_h_base_whose_saved_names_transformers_renames(tmp_path: Path) -> None:
    """Nemotron-H saves `backbone.layers.N.mixer.*` and its experts one module each (`mixer.experts.N.up_proj`, no
    gate); transformers 5 loads them as `model.layers.N.mixer.*` and stacks each projection
    (`mixer.experts.up_proj`): conversion_mapping.py's nemotron_h entry. A LoRA made on the loaded model (q_proj and
    the experts' target_parameters) against its own base folder was "targets model.layers.1.mixer.q_proj, which B
    does not have: the adapter's weights for it are dropped" for every module, worst severity error, and the note
    said PeftModel.from_pretrained loads none of A's factors; it loads them all."""
    import transformers
    from peft import LoraConfig
    from safetensors.torch import load_file

    torch.manual_seed(0)
    config = transformers.NemotronHConfig(
        vocab_size=128, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        intermediate_size=48, mamba_num_heads=4, mamba_head_dim=16, ssm_state_size=8, n_groups=1, chunk_size=8,
        max_position_embeddings=64, layers_block_type=["mamba", "attention", "moe"], n_routed_experts=2,
        num_experts_per_tok=1, moe_intermediate_size=16, moe_shared_expert_intermediate_size=16,
        architectures=["NemotronHForCausalLM"])
    model = transformers.NemotronHForCausalLM(config)
    base = tmp_path / "nemotron"
    model.save_pretrained(base)
    stored = load_file(base / "model.safetensors")
    assert "backbone.layers.2.mixer.experts.1.up_proj.weight" in stored and not any(
        name.startswith("model.") for name in stored)
    adapter = tmp_path / "nemotron-lora"
    saved = _randomized_lora(model, LoraConfig(r=2, target_modules=["q_proj"], target_parameters=[
        "mixer.experts.up_proj", "mixer.experts.down_proj"]), adapter)
    assert "base_model.model.model.layers.1.mixer.q_proj.lora_A.weight" in saved and len(saved) == 6, sorted(saved)

    code, data = run_json("diff-keys", str(adapter), str(base))
    assert code == 0 and data["worst_severity"] == "info", data["groups"]
    note = next(note for note in data["notes"] if note.startswith("A is a PEFT adapter"))
    assert "LoRA (rank 2) on 2 modules, 2 of them in B with shapes that fit" in note, note
    assert ("B's keys are compared as from_pretrained names them: transformers' conversion mapping for its model "
            "renames 25 of them on load (backbone.embeddings.weight as model.embeddings.weight)") in note, note
    # B's own weights keep the names B stores them under.
    assert any(group["pattern"].startswith("backbone.layers.") and group["reason"] == "adapter-base"
               for group in data["groups"]), data["groups"]
    _pasted_call_loads(note, saved)


def test_a_lora_fits_a_granite_moe_base_whose_fused_experts_transformers_renames(tmp_path: Path) -> None:
    """GraniteMoE saves its experts fused under other names (`block_sparse_moe.input_linear.weight`,
    `output_linear.weight`), which transformers 5 loads as `block_sparse_moe.experts.gate_up_proj` / `down_proj`
    (conversion_mapping.py's granitemoe renames): a LoRA on those parameters was "targets
    model.layers.0.block_sparse_moe.experts, which B does not have", an error."""
    import transformers
    from peft import LoraConfig
    from safetensors.torch import load_file

    torch.manual_seed(0)
    config = transformers.GraniteMoeConfig(vocab_size=64, hidden_size=16, intermediate_size=8, num_hidden_layers=2,
                                           num_attention_heads=2, num_key_value_heads=1, num_local_experts=4,
                                           num_experts_per_tok=2, max_position_embeddings=64)
    model = transformers.GraniteMoeForCausalLM(config)
    base = tmp_path / "granite"
    model.save_pretrained(base)
    assert "model.layers.0.block_sparse_moe.input_linear.weight" in load_file(base / "model.safetensors")
    adapter = tmp_path / "granite-lora"
    saved = _randomized_lora(model, LoraConfig(r=2, target_modules=["q_proj"], target_parameters=[
        "block_sparse_moe.experts.gate_up_proj", "block_sparse_moe.experts.down_proj"]), adapter)

    code, data = run_json("diff-keys", str(adapter), str(base))
    assert code == 0 and data["worst_severity"] == "info", data["groups"]
    note = next(note for note in data["notes"] if note.startswith("A is a PEFT adapter"))
    assert "LoRA (rank 2) on 4 modules, 4 of them in B with shapes that fit" in note, note
    assert "(model.layers.0.block_sparse_moe.input_linear.weight as model.layers.0.block_sparse_moe.experts." \
           "gate_up_proj)" in note, note
    _pasted_call_loads(note, saved)

    # Against a base of another expert width the experts' factors are still errors: the loaded names fit nothing.
    config.intermediate_size = 12
    other = tmp_path / "granite-wider"
    transformers.GraniteMoeForCausalLM(config).save_pretrained(other)
    code, data = run_json("diff-keys", str(adapter), str(other))
    assert code == 1 and data["worst_severity"] == "error"
    assert any("block_sparse_moe.experts" in group["pattern"] and group["severity"] == "error"
               for group in data["groups"]), data["groups"]


_MLM = "sentence_transformers.sparse_encoder.models.MLMTransformer"
_SPLADE = "sentence_transformers.sparse_encoder.models.SpladePooling"


def _splade_router(root: Path) -> None:
    """An asymmetric SPLADE SparseEncoder as sentence-transformers v5 lays out a Router (modules.json: one Router
    at path ""; router_config.json's types / structure naming each route's module folders; each MLMTransformer a
    BertForMaskedLM folder, each SpladePooling a config.json alone): the layout xpmir's SpladeLoaderMixin
    (_write_asymmetric) writes for sentence-transformers, read with the search tool."""
    import json

    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(vocab_size=96, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    for route in ("query", "document"):
        BertForMaskedLM(config).save_pretrained(root / f"{route}_0_MLMTransformer")
        (root / f"{route}_0_MLMTransformer" / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": 256, "do_lower_case": False}))
        (root / f"{route}_1_SpladePooling").mkdir()
        (root / f"{route}_1_SpladePooling" / "config.json").write_text(json.dumps(
            {"pooling_strategy": "max", "activation_function": "relu", "word_embedding_dimension": 96}))
    (root / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Router"}]))
    (root / "router_config.json").write_text(json.dumps({
        "types": {"query_0_MLMTransformer": _MLM, "query_1_SpladePooling": _SPLADE,
                  "document_0_MLMTransformer": _MLM, "document_1_SpladePooling": _SPLADE},
        "structure": {"query": ["query_0_MLMTransformer", "query_1_SpladePooling"],
                      "document": ["document_0_MLMTransformer", "document_1_SpladePooling"]},
        "parameters": {"default_route": "document", "allow_empty_key": True}}))
    (root / "config_sentence_transformers.json").write_text(json.dumps({"model_type": "SparseEncoder"}))


def test_a_sentence_transformers_router_folder_says_to_convert_each_route(tmp_path: Path) -> None:
    """convert of a Router SparseEncoder's folder was refused with "weights are in subfolders (...): point at one",
    and converting one route's folder writes that route alone, no model sentence-transformers loads. The line says
    the Router, and the steps it gives (each route converted to its name in the output, the rest copied) write the
    whole model in fp16."""
    import shutil

    from safetensors.torch import load_file

    root = tmp_path / "splade-router"
    _splade_router(root)
    result = run_cli("convert", str(root), "-o", str(tmp_path / "out"), "--dtype", "fp16")
    assert result.exit_code == 2 and result.stdout == ""
    line = " ".join(result.stderr.split())
    assert "a sentence-transformers Router (router_config.json): each route's module keeps its own weights, in " \
           "document_0_MLMTransformer/, query_0_MLMTransformer/: point at one, e.g. " \
           f"{root / 'document_0_MLMTransformer'}; to convert or shard the model, write each of them to the same " \
           "name in the output folder and copy modules.json, router_config.json and the other files and folders " \
           "beside them" in line, line
    # The steps, as said: each route's module converted to its own name, everything else copied.
    out = tmp_path / "out"
    out.mkdir()
    for route in ("query_0_MLMTransformer", "document_0_MLMTransformer"):
        converted = run_cli("convert", str(root / route), "-o", str(out / route), "--dtype", "fp16")
        assert converted.exit_code == 0, converted.stderr
    for entry in root.iterdir():
        if not (out / entry.name).exists():
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, out / entry.name)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in root.iterdir())
    for route in ("query_0_MLMTransformer", "document_0_MLMTransformer"):
        before, after = load_file(root / route / "model.safetensors"), load_file(out / route / "model.safetensors")
        assert set(after) == set(before) and all(t.dtype == torch.float16 for t in after.values())
        assert all(torch.equal(after[name], before[name].half()) for name in before)
    # A folder of subfolders that is no Router keeps the plain line.
    (root / "router_config.json").unlink()
    line = " ".join(run_cli("inspect", str(root)).stderr.split())
    assert "Router" not in line and "weights are in subfolders (document_0_MLMTransformer/, " \
                                   "query_0_MLMTransformer/): point at one" in line, line
