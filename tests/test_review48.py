"""review48: the quant2 merge (a composite model's text-config quantization_config; diff-keys --model-class prepared
by any quantizer transformers accepts here), tried with tiny seeded configs and checkpoints."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.test_quant2 import FP8, _json, _llava

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

GEMMA = {"quant_method": "gemma", "num_bits": 4}


def _llama_config(quantization: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 128,
            "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
            "vocab_size": 256, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
            "quantization_config": quantization, **extra}


def test_gemma_preparation_of_the_meta_model_allocates_no_memory() -> None:
    """Gemma's quantizer works on a CPU, and its preprocess_model ran outside from_pretrained's init contexts:
    its QuantizedLinear made every packed weight and scale in CPU memory (diff-keys of a 70B-class config with 2
    layers took 1.2 GiB and 29 s, 8 layers 70 s). from_pretrained prepares the model on the meta device."""
    from weightdoctor.load_simulation import prepare_for_quantizer
    from weightdoctor.meta_model import build_meta_model

    model = build_meta_model(_llama_config(GEMMA), "LlamaForCausalLM")
    assert type(prepare_for_quantizer(model)).__name__ == "GemmaQuantizer"
    assert any(name.endswith("q_proj.weight_scale") for name, _ in model.named_parameters())
    held = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()]
            if tensor.device.type != "meta"]
    assert held == []


def test_diff_keys_reads_a_quantizers_new_biases_at_the_dtype_from_pretrained_gives_them(tmp_path: Path) -> None:
    """Gemma's QuantizedLinear makes its bias at torch's default dtype, which from_pretrained sets to the model's
    (bf16) as it prepares the model: diff-keys prepared it at float32 and reported every stored bf16 bias as a
    dtype difference from_pretrained does not make."""
    from safetensors.torch import save_file
    from transformers.modeling_utils import local_torch_dtype
    from transformers.quantizers.auto import get_hf_quantizer

    settings = _llama_config(GEMMA, mlp_bias=True, attention_bias=True)
    config = transformers.LlamaConfig.from_dict(settings)
    quantizer, _, device_map = get_hf_quantizer(copy.deepcopy(config), None, None, True, {})
    with torch.device("meta"), local_torch_dtype(torch.bfloat16):  # as from_pretrained builds and prepares it
        model = transformers.LlamaForCausalLM(copy.deepcopy(config))
        quantizer.preprocess_model(model=model, dtype=torch.bfloat16, device_map=device_map, checkpoint_files=None)
    torch.manual_seed(0)
    state_dict = {name: torch.randn(tensor.shape).to(tensor.dtype) if tensor.dtype.is_floating_point
                  else torch.zeros(tensor.shape, dtype=tensor.dtype) for name, tensor in model.state_dict().items()}
    folder = tmp_path / "gemma"
    folder.mkdir()
    save_file(state_dict, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(settings))
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).state_dict()
    assert loaded["model.layers.0.mlp.up_proj.bias"].dtype == torch.bfloat16  # the oracle: kept as stored
    report = _json("diff-keys", str(folder), "--model-class", "AutoModelForCausalLM")
    assert (report["missing"], report["unexpected"], report["mismatched"]) == ([], [], [])
    assert report["dtype_differences"] == []


def test_diff_keys_names_the_text_configs_quantization_under_an_empty_top_level_one(tmp_path: Path) -> None:
    """`"quantization_config": {}` at the top and FP8 in `text_config`: from_pretrained reads the text config's
    (`top or text`), and so did inspect and plan-devices, but diff-keys said "the config asks for unknown
    quantization"; it now names fp8, as with no top-level one."""
    folder = _llava(tmp_path / "llava", text_quantization=FP8)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {}
    (folder / "config.json").write_text(json.dumps(config))
    built = transformers.AutoConfig.from_pretrained(str(folder))
    assert not built.quantization_config
    assert built.get_text_config(decoder=True).quantization_config["quant_method"] == "fp8"
    notes = " ".join(_json("diff-keys", str(folder), "--model-class", "LlavaForConditionalGeneration")["notes"])
    # As this machine's transformers loads it: its quantizer's environment check (in get_hf_quantizer) keeps the
    # fp8 weights on a GPU of compute capability 8.9 or above (the H100 run), and dequantizes them elsewhere.
    from transformers.quantizers.auto import get_hf_quantizer

    quantizer, _, _ = get_hf_quantizer(copy.deepcopy(built), None, None, True, {})
    said = ("which from_pretrained dequantizes on this machine" if quantizer.quantization_config.dequantize
            else "whose quantizer loads it on this machine as it is stored")
    assert f"the config asks for fp8 quantization, {said}" in notes, notes
    assert "unknown quantization" not in notes


def test_diff_keys_names_a_regex_error_of_the_quantizers_preparation_by_its_module(tmp_path: Path) -> None:
    """Gemma's `module_quant_configs` patterns are compiled as its quantizer prepares the model: a bad one raises
    re.error, which the note called "from_pretrained raises error here"; it now says re.error."""
    folder = _llava(tmp_path / "llava", text_quantization=FP8)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["quantization_config"] = {**GEMMA, "module_quant_configs": {"(": {}}}
    (folder / "config.json").write_text(json.dumps(config))
    import re

    with pytest.raises(re.error, match="unterminated subpattern"):  # the oracle
        transformers.LlavaForConditionalGeneration.from_pretrained(str(folder))
    notes = " ".join(_json("diff-keys", str(folder), "--model-class", "LlavaForConditionalGeneration")["notes"])
    assert "from_pretrained raises re.error here before it loads a weight, as its GemmaQuantizer prepares" in notes, \
        notes
    assert "unterminated subpattern" in notes
