"""compressed-tensors (llm-compressor / vLLM) checkpoints across the commands.

The files are written here in the layouts compressed-tensors' compressors write (it is not installed): its
sparsity compressors store a Linear's `weight` as `<layer>.compressed` (the kept values), `<layer>.bitmask` (uint8,
one bit per dense value, little bit order: [rows, ceil(cols / 8)]), `<layer>.shape` and, unstructured,
`<layer>.row_offsets`; `.weight` is dropped from the names.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy
import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_json

HIDDEN, INTERMEDIATE, VOCAB = 64, 128, 256
LINEARS = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (32, HIDDEN), "self_attn.v_proj": (32, HIDDEN),
           "self_attn.o_proj": (HIDDEN, HIDDEN), "mlp.gate_proj": (INTERMEDIATE, HIDDEN),
           "mlp.up_proj": (INTERMEDIATE, HIDDEN), "mlp.down_proj": (HIDDEN, INTERMEDIATE)}
# Embedding, lm_head, final norm, two layer norms and the Linear weights of one Llama layer, once dense.
DENSE = 2 * VOCAB * HIDDEN + 3 * HIDDEN + sum(o * i for o, i in LINEARS.values())


def _config(quantization: dict) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
            "intermediate_size": INTERMEDIATE, "num_attention_heads": 4, "num_key_value_heads": 2,
            "num_hidden_layers": 1, "vocab_size": VOCAB, "torch_dtype": "bfloat16", "tie_word_embeddings": False,
            "quantization_config": quantization}


def _dense_rest() -> dict[str, torch.Tensor]:
    return {"model.embed_tokens.weight": torch.randn(VOCAB, HIDDEN).bfloat16() * 0.02,
            "lm_head.weight": torch.randn(VOCAB, HIDDEN).bfloat16() * 0.02,
            "model.norm.weight": torch.ones(HIDDEN).bfloat16(),
            "model.layers.0.input_layernorm.weight": torch.ones(HIDDEN).bfloat16(),
            "model.layers.0.post_attention_layernorm.weight": torch.ones(HIDDEN).bfloat16()}


def _sparse(weight: torch.Tensor, two_four: bool) -> dict[str, torch.Tensor]:
    """A dense weight as the sparse-24-bitmask / sparse-bitmask compressors store it (names without `.weight`)."""
    if two_four:  # keep the two largest magnitudes of every four
        groups = weight.reshape(-1, 4)
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, groups.abs().topk(2, dim=1).indices, True)
        mask = mask.reshape(weight.shape)
    else:
        mask = weight.abs() > weight.abs().median()
    bits = torch.from_numpy(numpy.packbits(mask.numpy(), axis=-1, bitorder="little"))
    stored = {"shape": torch.tensor(list(weight.shape)), "bitmask": bits}
    if two_four:
        stored["shape"] = stored["shape"].reshape(-1, 1)
        stored["compressed"] = weight[mask].reshape(weight.shape[0], weight.shape[1] // 2)
    else:
        counts = mask.sum(dim=1)
        stored["compressed"] = weight[mask]
        stored["row_offsets"] = torch.cumsum(counts, 0) - counts
    return stored


def _sparse_checkpoint(folder: Path, two_four: bool) -> Path:
    torch.manual_seed(0)
    tensors = _dense_rest()
    for name, shape in LINEARS.items():
        weight = (torch.randn(*shape) * 0.02).bfloat16()
        for leaf, value in _sparse(weight, two_four).items():
            tensors[f"model.layers.0.{name}.{leaf}"] = value
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    sparsity = {"format": "sparse-24-bitmask" if two_four else "sparse-bitmask",
                "sparsity_structure": "2:4" if two_four else "unstructured", "targets": ["Linear"],
                "ignore": ["lm_head"], "global_sparsity": 0.45}
    (folder / "config.json").write_text(json.dumps(_config({
        "quant_method": "compressed-tensors", "format": "dense", "quantization_status": None, "config_groups": {},
        "sparsity_config": sparsity})))
    return folder


@pytest.mark.parametrize("two_four", [True, False], ids=["sparse-24-bitmask", "sparse-bitmask"])
def test_sparse_bitmask_layers_count_their_dense_weights(tmp_path: Path, two_four: bool) -> None:
    """A 2:4 sparse checkpoint's `compressed` holds half of each Linear's values and its `bitmask` / `shape` are
    the compressor's bookkeeping: inspect counted them all as parameters (56,014 for 69,824 dense, none packed,
    none side), as if the model were smaller by a fifth."""
    folder = _sparse_checkpoint(tmp_path / "sparse", two_four)
    code, data = run_json("inspect", str(folder))
    assert code == 0, data
    summary = data["quantized"]
    assert summary["method"] == "compressed-tensors"
    assert summary["parameters"] == DENSE, summary
    assert summary["packed_tensors"] == len(LINEARS)
    # bitmask and shape per layer, and the unstructured format's row offsets.
    assert summary["side_tensors"] == len(LINEARS) * (2 if two_four else 3)
    assert data["memory"]["bf16"] == DENSE * 2


@pytest.mark.skipif(importlib.util.find_spec("compressed_tensors") is not None,
                    reason="the compressed-tensors package is installed here")
def test_diff_keys_says_from_pretrained_needs_the_compressed_tensors_package(tmp_path: Path) -> None:
    """transformers' CompressedTensorsConfig imports compressed-tensors as it reads the config: without the
    package from_pretrained raises ImportError before it loads a weight. diff-keys --model-class reported the
    keys as the quantizer reads them and never said the load cannot start here."""
    torch.manual_seed(0)
    tensors = _dense_rest()
    for name, (rows, cols) in LINEARS.items():
        prefix = f"model.layers.0.{name}."
        tensors[prefix + "weight_packed"] = torch.randint(-2**31, 2**31 - 1, (rows, cols // 8), dtype=torch.int32)
        tensors[prefix + "weight_shape"] = torch.tensor([rows, cols])
        tensors[prefix + "weight_scale"] = (torch.rand(rows, cols // 32) * 0.01).bfloat16()
    folder = tmp_path / "w4a16"
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    group = {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "symmetric": True,
                                                "strategy": "group", "group_size": 32}}
    (folder / "config.json").write_text(json.dumps(_config({
        "quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
        "config_groups": {"group_0": group}, "ignore": ["lm_head"]})))
    code, data = run_json("diff-keys", str(folder), "--model-class", "LlamaForCausalLM")
    assert code in (0, 1), data
    notes = [n for n in data["notes"] if "compressed-tensors" in n and "pip install" in n]
    assert notes and "from_pretrained raises ImportError" in notes[0], data["notes"]
    # The packed layout itself is still read: 4-bit, the dense count from weight_packed.
    assert run_json("inspect", str(folder))[1]["quantized"]["parameters"] == DENSE


@pytest.mark.parametrize("per_group", [False, True], ids=["config-format", "group-format"])
def test_marlin_24_layers_count_their_dense_weights_and_convert_keeps_their_fp16_scales(
        tmp_path: Path, per_group: bool) -> None:
    """format "marlin-24" keeps two values of four, then packs eight 4-bit ones in each int32
    ([in / 32, out x 2] once tiled), beside `scale_packed` (fp16, what the Marlin kernel reads) and `meta` (int16
    2:4 indexes). inspect counted half of each Linear and the scales and indexes as parameters; convert --dtype
    bf16 cast `scale_packed` like a weight."""
    from safetensors import safe_open

    torch.manual_seed(0)
    tensors = _dense_rest()
    for name, (rows, cols) in LINEARS.items():
        prefix = f"model.layers.0.{name}."
        tensors[prefix + "weight_packed"] = torch.randint(-2**31, 2**31 - 1, (cols // 32, rows * 2), dtype=torch.int32)
        tensors[prefix + "scale_packed"] = (torch.rand(1, rows) * 0.01).half()
        tensors[prefix + "meta"] = torch.randint(-2**15, 2**15 - 1, (cols // 32, rows * 2), dtype=torch.int16)
    folder = tmp_path / "marlin24"
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    group = {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "symmetric": True,
                                                "strategy": "channel"}}
    if per_group:  # newer compressed-tensors: the format of each group, "mixed-precision" for the config
        group["format"] = "marlin-24"
    (folder / "config.json").write_text(json.dumps(_config({
        "quant_method": "compressed-tensors", "format": "mixed-precision" if per_group else "marlin-24",
        "quantization_status": "compressed",
        "config_groups": {"group_0": group}, "ignore": ["lm_head"],
        "sparsity_config": {"format": "dense", "sparsity_structure": "2:4", "targets": ["Linear"]}})))
    code, data = run_json("inspect", str(folder))
    assert code == 0, data
    summary = data["quantized"]
    assert (summary["parameters"], summary["packed_tensors"], summary["side_tensors"]) == (
        DENSE, len(LINEARS), 2 * len(LINEARS)), summary

    out = tmp_path / "bf16"
    code, data = run_json("convert", str(folder), "-o", str(out), "--dtype", "bf16")
    assert code == 0, data
    with safe_open(out / "model.safetensors", "pt") as written:
        assert written.get_slice("model.layers.0.mlp.up_proj.scale_packed").get_dtype() == "F16"
        assert written.get_slice("model.layers.0.mlp.up_proj.meta").get_dtype() == "I16"


def mixed_recipe_tensors() -> dict[str, torch.Tensor]:
    """A pack-quantized Llama layer as a mixed recipe stores it: attention at 8 bits, the MLP at 4 (seeded)."""
    torch.manual_seed(0)
    tensors = _dense_rest()
    for name, (rows, cols) in LINEARS.items():
        prefix = f"model.layers.0.{name}."
        bits = 8 if name.startswith("self_attn") else 4
        tensors[prefix + "weight_packed"] = torch.randint(-2**31, 2**31 - 1, (rows, cols * bits // 32),
                                                          dtype=torch.int32)
        tensors[prefix + "weight_shape"] = torch.tensor([rows, cols])
        tensors[prefix + "weight_scale"] = (torch.rand(rows, 1) * 0.01).bfloat16()
    return tensors


def test_a_mixed_bits_recipe_counts_each_packed_layer_at_its_own_groups_bits(tmp_path: Path) -> None:
    """llm-compressor's mixed recipes quantize attention at 8 bits and the MLP at 4, one config group each,
    both pack-quantized (32 / bits values an int32). Every `weight_packed` was counted at the first group's
    bits: the MLP at 8, half its weights."""
    tensors = mixed_recipe_tensors()
    folder = tmp_path / "mixed"
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})

    def group(bits: int, pattern: str) -> dict:
        return {"targets": [pattern], "format": "pack-quantized",
                "weights": {"num_bits": bits, "type": "int", "symmetric": True, "strategy": "channel"}}

    (folder / "config.json").write_text(json.dumps(_config({
        "quant_method": "compressed-tensors", "format": "mixed-precision", "quantization_status": "compressed",
        "config_groups": {"group_0": group(8, "re:.*self_attn.*"), "group_1": group(4, "re:.*mlp.*")},
        "ignore": ["lm_head"]})))
    code, data = run_json("inspect", str(folder))
    assert code == 0, data
    assert data["quantized"]["parameters"] == DENSE, data["quantized"]
    # A layer two groups claim at different bits, by the same kind of target, is not guessed.
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"]["config_groups"]["group_1"]["targets"] = ["re:.*proj.*"]
    (folder / "config.json").write_text(json.dumps(config))
    assert run_json("inspect", str(folder))[1]["quantized"]["parameters"] is None


def test_plan_devices_does_not_call_a_sparse_only_plan_an_upper_bound(tmp_path: Path) -> None:
    """A compressed-tensors config with a sparsity_config and no quantized group: the model's Linear weights are
    dense at the floating dtype, so the dense plan is the size. plan-devices warned that it over-sized "the Linear
    weights its quantizer keeps packed" and called the plan an upper bound."""
    folder = _sparse_checkpoint(tmp_path / "sparse", two_four=True)
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0, data
    assert (data["dtype"], data["weights_bytes"]) == ("bf16", DENSE * 2)
    assert not [w for w in data["warnings"] if "upper bound" in w], data["warnings"]
    assert any("only sparsifies the weights (sparse-24-bitmask)" in w for w in data["warnings"]), data["warnings"]
