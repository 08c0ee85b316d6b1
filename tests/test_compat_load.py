"""compatload: diff-keys, plan-devices and inspect under an older transformers 5 (5.17, the lent GPU machine's) and
on a machine with CUDA, where the suite on an H100 found them failing.

transformers 5.17's quantizers have no `get_load_operations` (diff-keys --model-class crashed on every FP8
checkpoint), its config classes validate `architectures` before weightdoctor could say how to write it, and on a
machine with CUDA its BitNet quantizer refuses a device map that offloads. CI runs 5.25 on CPUs only: each case is
emulated here (5.17's API shape, CUDA) with monkeypatch, and the real thing was run under 5.17 as well.
"""

from __future__ import annotations

import copy
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


def _bitnet_llama(folder: Path) -> tuple[Any, Any]:
    """A seeded four-layer BitNet Llama (BitLinear: packed uint8 weights and their scales), saved as transformers'
    BitNet quantizer lays it out; the meta model that quantizer prepared, and the quantizer."""
    from safetensors.torch import save_file
    from transformers.quantizers.auto import get_hf_quantizer

    config = transformers.LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=4, vocab_size=1000,
                                      tie_word_embeddings=False, torch_dtype="bfloat16")
    config.architectures = ["LlamaForCausalLM"]
    config.quantization_config = {"quant_method": "bitnet", "linear_class": "bitlinear",
                                  "quantization_mode": "offline"}
    quantizer, _, _ = get_hf_quantizer(copy.deepcopy(config), None, None, True, {})
    default = torch.get_default_dtype()
    try:  # as from_pretrained builds and prepares it: the default dtype set to the model's
        torch.set_default_dtype(torch.bfloat16)
        with torch.device("meta"):
            model = transformers.LlamaForCausalLM(copy.deepcopy(config))
        quantizer.preprocess_model(model=model, dtype=torch.bfloat16, device_map="sequential", checkpoint_files=None)
    finally:
        torch.set_default_dtype(default)
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    tensors = {name: torch.randn(t.shape).to(t.dtype) if t.dtype.is_floating_point
               else torch.zeros(t.shape, dtype=t.dtype) for name, t in model.state_dict().items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    return model, quantizer


def test_a_bitnet_plan_that_offloads_is_refused_on_a_machine_with_cuda(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With CUDA, from_pretrained's _get_device_map hands its map to BitNet's validate_environment, which raises
    on one holding cpu or disk; plan-devices planned that offload all the same ("needs CPU offload", exit 0, and a
    --cpu suggestion for the disk case), a map no load on that machine makes. It is now an error finding, the
    verdict does-not-fit; without CUDA the answer is the plan, as before."""
    from transformers.integrations.accelerate import _get_device_map

    folder = tmp_path / "bitnet"
    model, quantizer = _bitnet_llama(folder)
    gpus = ("--gpu", "1000000B", "--gpu", "1000000B")
    code, without_cuda = run_json("plan-devices", str(folder), *gpus, "--cpu", "100000000B")
    if not torch.cuda.is_available():
        assert (code, without_cuda["verdict"], without_cuda["findings"]) == (0, "needs-cpu-offload", [])
        assert any(w.startswith("transformers' BitNet quantizer refuses a device map holding cpu or disk on a "
                                "machine with a GPU") for w in without_cuda["warnings"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (1_000_000, 80 * 10**9))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *device: (9, 0))
    with pytest.raises(ValueError, match="CPU or disk device"):  # the oracle: transformers' own placement
        _get_device_map(model, "sequential", {0: 1_000_000, 1: 1_000_000, "cpu": 100_000_000}, quantizer)
    code, planned = run_json("plan-devices", str(folder), *gpus, "--cpu", "100000000B")
    assert (code, planned["verdict"]) == (1, "does-not-fit"), planned
    assert planned["device_map"] == without_cuda["device_map"]  # the map it refuses, as from_pretrained made it
    [finding] = planned["findings"]
    assert (finding["severity"], finding["code"]) == ("error", "quantizer-refuses-offload")
    assert finding["message"].startswith(
        "from_pretrained raises on this map here: CUDA is available, and transformers' BitNet quantizer refuses a "
        "device map holding cpu or disk (ValueError: \"You are attempting to load a BitNet model with a "
        "device_map that contains a CPU or disk device\")")
    assert not any("refuses a device map" in w for w in planned["warnings"])
    assert all(s["change"] not in ("cpu", "disk") for s in planned["suggestions"])
    # The GPU alone, the rest on disk: "--cpu" and "--disk" were offered; both are refused the same way here.
    code, alone = run_json("plan-devices", str(folder), "--gpu", "1000000B")
    assert (code, alone["verdict"], [f["code"] for f in alone["findings"]]) == (
        1, "does-not-fit", ["quantizer-refuses-offload"])
    assert [s["change"] for s in alone["suggestions"] if s["change"] in ("cpu", "disk")] == []
    human = run_cli("plan-devices", str(folder), "--gpu", "1000000B")
    said = " ".join(human.stdout.split())
    assert "error quantizer-refuses-offload: from_pretrained raises on this map here" in said, said
    assert ("verdict: does not fit (the GPUs given cannot hold the model, and its quantizer refuses to offload "
            "the rest here)") in said
    # All on the GPUs it loads: no finding.
    code, roomy = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert (code, roomy["verdict"], roomy["findings"], roomy["device_map"]) == (0, "fits-on-gpus", [], {"": 0})
