"""compatload: diff-keys, plan-devices and inspect under an older transformers 5 (5.17, the lent GPU machine's) and
on a machine with CUDA, where the suite on an H100 found them failing.

transformers 5.17's quantizers have no `get_load_operations` (diff-keys --model-class crashed on every FP8
checkpoint), its config classes validate `architectures` before weightdoctor could say how to write it, and on a
machine with CUDA its BitNet quantizer refuses a device map that offloads. CI runs 5.25 on CPUs only: each case is
emulated here (5.17's API shape, CUDA) with monkeypatch, and the real thing was run under 5.17 as well.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.helpers import fp8_block_state_dict, one_error_line, run_cli, run_json

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 128, "intermediate_size": 256,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 256,
         "max_position_embeddings": 64, "tie_word_embeddings": False}


def _fp8_llama(folder: Path, **quantization: Any) -> Path:
    """A seeded two-layer Llama whose attention and MLP weights are in FineGrainedFP8's layout (float8_e4m3fn,
    [128, 128] block scales as `weight_scale_inv`), with `quantization` over its quantization_config."""
    from safetensors.torch import save_file

    config = {**LLAMA, "torch_dtype": "bfloat16",
              "quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic",
                                      "weight_block_size": [128, 128], **quantization}}
    torch.manual_seed(0)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{k: v for k, v in LLAMA.items()
                                                                          if k != "model_type"}))
    dense = {name: torch.randn(tensor.shape) for name, tensor in model.state_dict().items()}
    tensors = fp8_block_state_dict(dense, lambda name: name.endswith("proj.weight"))
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _quantizers_of_transformers_5_17(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give transformers' FineGrainedFP8 quantizer 5.17's API: no `get_load_operations` (added later), and a
    `get_weight_conversions` that returns, as 5.17's does, the one converter that dequantizes a pre-quantized
    checkpoint where `dequantize` is set (its `update_weight_conversions` appends it). The converter's source
    patterns are this transformers' (5.17 writes `weight$`, which a 5.25 WeightConverter reads as a key name)."""
    from transformers.core_model_loading import WeightConverter
    from transformers.integrations.finegrained_fp8 import Fp8Dequantize
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizer_finegrained_fp8 import FineGrainedFP8HfQuantizer

    def get_weight_conversions(self: Any) -> list[Any]:
        if self.pre_quantized and self.quantization_config.dequantize:
            sources = getattr(self, "serialized_names", {}).get("weight") or ["weight$", "weight_scale_inv",
                                                                               "activation_scale"]
            return [WeightConverter(source_patterns=list(sources),
                                    target_patterns="weight", operations=[Fp8Dequantize(self)])]
        return []

    monkeypatch.delattr(FineGrainedFP8HfQuantizer, "get_load_operations", raising=False)
    monkeypatch.delattr(HfQuantizer, "get_load_operations", raising=False)
    monkeypatch.setattr(FineGrainedFP8HfQuantizer, "get_weight_conversions", get_weight_conversions)
    monkeypatch.setattr(FineGrainedFP8HfQuantizer, "update_weight_conversions",
                        lambda self, conversions, *model: list(conversions) + self.get_weight_conversions())


def test_diff_keys_on_an_fp8_checkpoint_with_the_quantizers_of_transformers_5_17(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On transformers 5.17, diff-keys --model-class on any FP8 checkpoint ended "unexpected AttributeError:
    'FineGrainedFP8HfQuantizer' object has no attribute 'get_load_operations'" (DeepSeek-V3's too: nothing on
    stdout). 5.17 dequantizes with the converters its get_weight_conversions returns: the scales merge into their
    weights, and the report says so, as on 5.25."""
    from weightdoctor.load_simulation import dequantizes

    folder = _fp8_llama(tmp_path / "fp8", dequantize=True)  # dequantized on any machine, GPU or not
    _quantizers_of_transformers_5_17(monkeypatch)
    code, report = run_json("diff-keys", str(folder), "--model-class", "LlamaForCausalLM")
    assert code == 0, report
    assert (report["missing"], report["unexpected"], report["mismatched"]) == ([], [], [])
    notes = " ".join(report["notes"])
    assert ("the config asks for fp8 quantization, which from_pretrained dequantizes on any machine (its "
            "quantization_config sets dequantize: true): each weight loads with its scales merged into it") in notes
    # The question asked of a 5.17 quantizer: does one of its converters dequantize? compressed-tensors' of 5.17
    # decompresses after the load (no such converter), FP8's as it loads.
    after_the_load = SimpleNamespace(quantization_config=SimpleNamespace(dequantize=True),
                                     get_weight_conversions=lambda: [])
    assert not dequantizes(after_the_load)
    assert not dequantizes(SimpleNamespace(quantization_config=SimpleNamespace(dequantize=False)))


def _strict_architectures_of_transformers_5_17(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make AutoConfig.for_model refuse an `architectures` that is no list of strings before anything else, as
    5.17's strict config classes do (5.25's build it)."""
    from huggingface_hub.errors import StrictDataclassFieldValidationError

    real = transformers.AutoConfig.for_model

    def for_model(model_type: str, *args: Any, **kwargs: Any) -> Any:
        names = kwargs.get("architectures")
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise StrictDataclassFieldValidationError(field="architectures", cause=TypeError(
                f"Field 'architectures' with value {names!r} doesn't match any type in (list[str], NoneType)"))
        return real(model_type, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "for_model", staticmethod(for_model))


@pytest.mark.parametrize(("value", "fix"), [("LlamaForCausalLM", 'write it as a list, ["LlamaForCausalLM"]'),
                                            ({"a": 1}, "write it as a list of class names")])
def test_architectures_a_strict_transformers_refuses_get_weightdoctors_advice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: Any, fix: str) -> None:
    """On transformers 5.17 a config.json with `"architectures": "LlamaForCausalLM"` was "cannot build a 'llama'
    config (StrictDataclassFieldValidationError: Validation error for field 'architectures': ...)" in every command,
    where 5.25 users read how to write it. The advice comes first on both; there, --model-class does not help (the
    config itself is refused), so it is not offered."""
    from safetensors.torch import save_file

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**LLAMA, "architectures": value}))
    torch.manual_seed(0)
    save_file({"model.embed_tokens.weight": torch.randn(256, 128)}, str(folder / "model.safetensors"))
    _strict_architectures_of_transformers_5_17(monkeypatch)
    said = (f"config.json's architectures is {json.dumps(value)}, not a list of model class names; nothing was built "
            f"from it: {fix} (transformers {transformers.__version__} builds no config from it, whatever the model "
            "class)")
    for args in (("plan-devices", folder / "config.json", "--gpu", "1GB"),
                 ("plan-devices", folder / "config.json", "--gpu", "1GB", "--model-class", "LlamaForCausalLM"),
                 ("diff-keys", folder, "--model-class", "LlamaForCausalLM")):
        named = folder / "config.json" if args[0] == "plan-devices" else folder
        assert one_error_line(run_cli(*args)) == f"error: {named}: {said}"
    result = run_cli("inspect", folder, "--stats")
    assert result.exit_code == 0, result.stderr
    assert said[:150] in " ".join(result.stderr.split())


def architectures_advice_end(value: Any) -> str:
    """How weightdoctor's advice on an `architectures` that is no list of names ends with this transformers: where
    its config classes build a config holding it (5.25), --model-class is offered for plan-devices; where they
    refuse it (5.17's strict dataclasses), no model class helps."""
    try:
        transformers.LlamaConfig(architectures=value)
    except Exception:  # noqa: BLE001 - whatever a strict config class raises
        return f"(transformers {transformers.__version__} builds no config from it, whatever the model class)"
    return "(plan-devices: or pass --model-class CLASS)"
