"""review43: diff-keys --model-class's dequantizing quantizer (fixlist23) checked against from_pretrained itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import fp8_block_state_dict, run_cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# On a GPU from_pretrained keeps FP8 weights quantized; the dequantized load is the one without a GPU.
needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="from_pretrained dequantizes only without a GPU")
needs_no_mps = pytest.mark.skipif(torch.backends.mps.is_available(), reason="with MPS, Metal's weights stay packed")


def _tiny_llama() -> tuple[Any, dict[str, Any]]:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=4, vocab_size=256,
                                      tie_word_embeddings=False)
    return config, transformers.LlamaForCausalLM(config).state_dict()


def _save(folder: Path, state_dict: dict[str, Any], config: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    folder.mkdir()
    save_file(state_dict, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _diff_keys(folder: Path) -> dict[str, Any]:
    result = run_cli("diff-keys", str(folder), "--model-class", "AutoModelForCausalLM", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _metal_llama(tmp_path: Path) -> Path:
    """transformers' Metal affine layout (MetalLinear): each projection's weight packed 8 4-bit values to a uint32,
    its `scales` and `qbiases` one per group of 64 inputs."""
    config, state_dict = _tiny_llama()
    packed: dict[str, Any] = {}
    for name, tensor in state_dict.items():
        if name.startswith("model.layers.") and name.endswith("proj.weight"):
            rows, cols = tensor.shape
            packed[name] = torch.randint(0, 2**31 - 1, (rows, cols // 8), dtype=torch.int32).view(torch.uint32)
            packed[name.removesuffix("weight") + "scales"] = torch.ones(rows, cols // 64, dtype=torch.bfloat16)
            packed[name.removesuffix("weight") + "qbiases"] = torch.zeros(rows, cols // 64, dtype=torch.bfloat16)
        else:
            packed[name] = tensor.to(torch.bfloat16).contiguous()
    return _save(tmp_path / "metal", packed, config.to_dict() | {
        "torch_dtype": "bfloat16", "quantization_config": {"quant_method": "metal", "bits": 4, "group_size": 64}})


@needs_no_mps
def test_a_metal_checkpoint_is_not_said_to_load_dequantized_where_from_pretrained_fails_on_mps(
        tmp_path: Path) -> None:
    """Metal (`quant_method: metal`) without an Apple GPU: its quantizer sets dequantize but still maps the model
    to "mps", and from_pretrained fails copying the first weight there (RuntimeError, "not linked with support for
    mps devices" on this Linux torch). diff-keys said it dequantizes here and loads every key, nothing missing or
    unexpected. It now says the load fails on 'mps' and sorts the packed weights, scales and qbiases as the
    quantizer's (qbiases were an unknown error)."""
    folder = _metal_llama(tmp_path)
    with pytest.raises(Exception, match="mps"):
        transformers.AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    report = _diff_keys(folder)
    notes = " ".join(report["notes"])
    assert "dequantizes on this machine" not in notes, notes
    assert "its quantizer maps the model to 'mps', which this machine's torch has no device for" in notes, notes
    unexpected = {entry["name"]: (entry["reason"], entry["severity"]) for entry in report["unexpected"]}
    assert unexpected["model.layers.0.self_attn.q_proj.qbiases"] == ("quantization", "info")
    assert unexpected["model.layers.0.self_attn.q_proj.scales"] == ("quantization", "info")
    assert len(unexpected) == 14 and report["missing"] == []


def test_a_device_torch_lacks_is_named_and_the_cpu_is_not() -> None:
    from weightdoctor.quantized import unusable_device

    assert unusable_device({"": "cpu"}) is None and unusable_device(None) is None
    assert unusable_device({"": "meta", "lm_head": "disk"}) is None
    if not torch.backends.mps.is_available():
        assert unusable_device({"model": "cpu", "lm_head": "mps"}) == "mps"


@needs_no_gpu
def test_an_fp8_embedding_from_modules_to_convert_is_compared_as_the_quantizer_builds_it(tmp_path: Path) -> None:
    """FineGrainedFP8 with `modules_to_convert: ["embed_tokens"]`: preprocess_model swaps the embedding for
    FP8Embedding even while it dequantizes the Linear layers, and from_pretrained reports its `weight_scale`
    missing. diff-keys read B's keys before that swap and reported nothing missing."""
    config, state_dict = _tiny_llama()
    stored = fp8_block_state_dict(state_dict, lambda name: (name.startswith("model.layers.") and name.endswith(
        "proj.weight")) or name == "model.embed_tokens.weight")
    folder = _save(tmp_path / "fp8-embedding", stored, config.to_dict() | {"torch_dtype": "bfloat16",
                   "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128],
                                           "modules_to_convert": ["embed_tokens"]}})
    _, info = transformers.AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    report = _diff_keys(folder)
    assert sorted(entry["name"] for entry in report["missing"]) == sorted(info["missing_keys"]) == [
        "model.embed_tokens.weight_scale"]
    assert [entry["name"] for entry in report["unexpected"]] == sorted(info["unexpected_keys"]) == []
    assert "fp8 quantization, which from_pretrained dequantizes on this machine" in " ".join(report["notes"])


@needs_no_gpu
def test_a_config_that_sets_dequantize_is_not_said_to_fall_back_for_want_of_a_gpu(tmp_path: Path) -> None:
    """FP8 with `dequantize: true` in its quantization_config: from_pretrained dequantizes on any machine, as the
    config asks. The note said the quantizer falls back to it for want of a GPU or kernels on this machine."""
    config, state_dict = _tiny_llama()
    stored = fp8_block_state_dict(state_dict, lambda name: name.startswith("model.layers.") and name.endswith(
        "proj.weight"))
    folder = _save(tmp_path / "fp8-dequantize", stored, config.to_dict() | {"torch_dtype": "bfloat16",
                   "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128],
                                           "dequantize": True}})
    _, info = transformers.AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    report = _diff_keys(folder)
    assert report["missing"] == report["unexpected"] == report["mismatched"] == []
    notes = " ".join(report["notes"])
    assert "dequantizes on any machine (its quantization_config sets dequantize: true)" in notes, notes
    assert "falls back" not in notes, notes
