"""plan-devices on quantized checkpoints, round 4: config-only HIGGS and fbgemm_fp8 sources.

Found: a config.json alone of a HIGGS (2 / 3-bit) or fbgemm_fp8 model was planned dense at the floating dtype, "an
upper bound ... its config alone does not give their sizes", and a 4-bit HIGGS one at half a byte a weight with its
scales and tables left out, though transformers makes those quantizers' layers from the config alone
(`replace_with_higgs_linear`, `replace_with_fbgemm_fp8_linear`) and from_pretrained's planner counts what they hold:
a 2-bit HIGGS plan 3.3x the bytes from_pretrained places, an fbgemm_fp8 one 1.6x, and maps that offload what
from_pretrained keeps on the GPUs.

The oracles are transformers' own: the meta model prepared by its HIGGS / fbgemm_fp8 quantizer's `preprocess_model`
inside the model's default dtype, as from_pretrained prepares it (fbgemm_fp8's kernel lookup, which needs fbgemm_gpu,
stubbed: it is only fetched, not run), then `compute_module_sizes` and `_get_device_map`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.test_plan_quantized2 import _from_pretrained_map, _meta_model, _sizes, plan_matches_map
from tests.test_third_party_layouts27 import CONFIG

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def _config_only(folder: Path, config: dict[str, Any]) -> Path:
    """A folder holding config.json alone (a repo whose weights were not fetched, `--config-only` downloads)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _prepared(config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> torch.nn.Module:
    """The meta model as from_pretrained prepares it before it makes its map: transformers' quantizer for the config
    (pre-quantized) swaps in its layers inside the model's default dtype (`local_torch_dtype`)."""
    from transformers.integrations import fbgemm_fp8
    from transformers.quantizers.auto import AutoHfQuantizer, AutoQuantizationConfig

    # only looked up by replace_with_fbgemm_fp8_linear (for the forward), never called while the map is made
    monkeypatch.setattr(fbgemm_fp8, "get_quantize_fp8_per_row", lambda: None)
    model = _meta_model(config)
    dtype = _DTYPES[config["torch_dtype"]]
    quantizer = AutoHfQuantizer.from_config(AutoQuantizationConfig.from_dict(config["quantization_config"]),
                                            pre_quantized=True)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        quantizer.preprocess_model(model=model, dtype=dtype, device_map="auto", checkpoint_files=None)
    finally:
        torch.set_default_dtype(default)
    return model


def _module_bytes_match(data: dict[str, Any], sizes: dict[str, int]) -> None:
    """Each range of modules the report places holds the bytes transformers' planner counts for those modules."""
    ranges = [r for device in data["devices"] for r in device["ranges"]]
    assert ranges
    for placed in ranges:
        assert placed["bytes"] == sum(sizes[module] for module in placed["modules"]), placed


_HIGGS = {"quant_method": "higgs", "p": 2, "group_size": 64, "hadamard_size": 64}


@pytest.mark.parametrize(("bits", "skip"), [(2, ["lm_head"]), (3, ["lm_head"]), (4, ["lm_head"]), (2, None),
                                            (3, ["lm_head", "model.layers.1.mlp"])],
                         ids=["2bit", "3bit", "4bit", "2bit-default-skip", "3bit-layer-kept"])
def test_a_config_only_higgs_source_is_planned_as_its_quantizer_builds_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bits: int, skip: list[str] | None) -> None:
    """HiggsLinear's int16 weight [out x bits / 16, in], its scales [out, in / group] and two tables at fp16,
    for every Linear the quantizer converts: the plan's bytes, per-module bytes and map are `_get_device_map`'s over
    the model HIGGS' own preprocess makes. It was planned dense (2 / 3-bit), an upper bound, or at 0.5 byte a weight
    without the scales and tables (4-bit)."""
    quantization = _HIGGS | {"bits": bits} | ({"modules_to_not_convert": skip} if skip is not None else {})
    config = CONFIG | {"quantization_config": quantization}
    folder = _config_only(tmp_path / "higgs", config)
    model = _prepared(config, monkeypatch)
    sizes = _sizes(model)
    dense = _sizes(_meta_model(config))[""]
    assert sizes[""] < dense  # the layout does change what is planned
    budgets: dict[int | str, int] = {0: int(sizes[""] * 0.4), 1: int(sizes[""] * 0.4), "cpu": 10 * dense}
    expected = _from_pretrained_map(model, budgets)
    code, data = plan_matches_map(folder, budgets, expected, sizes)
    _module_bytes_match(data, sizes)
    # its quantizer refuses a map with the CPU in it (said as a finding, as with the weights beside the config)
    assert "cpu" in expected.values() and code == 1, data
    assert [f["code"] for f in data["findings"]] == ["quantizer-refuses-offload"], data["findings"]
    said = " ".join(" ".join(data["warnings"]).split())
    assert "upper bound" not in said and "scales and zero points not counted" not in said, said
    converted = sum(1 for module in model.modules() if type(module).__name__ == "HiggsLinear")
    assert (f"the {converted} quantized Linear layers of 15 are sized from its config as transformers' HiggsLinear "
            "holds them") in said, said


def test_a_config_only_higgs_source_the_quantizer_cannot_build_stays_an_upper_bound(tmp_path: Path) -> None:
    """A group size (HiggsConfig's default, 256) that does not divide the layers' 64 inputs (HiggsLinear asserts it:
    from_pretrained raises): no layer is sized from the config, the plan stays the dense upper bound it was."""
    config = CONFIG | {"quantization_config": _HIGGS | {"bits": 2, "group_size": 256}}
    folder = _config_only(tmp_path / "higgs", config)
    from tests.helpers import run_json

    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and data["weights_bytes"] + data["buffers_bytes"] == _sizes(_meta_model(config))[""], data
    said = " ".join(" ".join(data["warnings"]).split())
    assert said.endswith("over-sizes the Linear weights its quantizer keeps packed; the plan is an upper bound"), said
    assert "sized from its config" not in said, said


@pytest.mark.parametrize("skip", [["lm_head"], ["lm_head", "model.layers.0.self_attn"], None],
                         ids=["lm_head", "attention-kept", "default-skip"])
def test_a_config_only_fbgemm_fp8_source_is_planned_as_its_quantizer_builds_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skip: list[str] | None) -> None:
    """FbgemmFp8Linear's float8 weight, float32 weight_scale [out, 1], input_scale_ub [1] and float32 bias, for
    every Linear the quantizer converts (attention biases on): the plan is `_get_device_map`'s over the model
    fbgemm_fp8's own preprocess makes. It was planned dense at bf16, "an upper bound"."""
    quantization = {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0}
    quantization |= {"modules_to_not_convert": skip} if skip is not None else {}
    config = CONFIG | {"torch_dtype": "bfloat16", "attention_bias": True, "quantization_config": quantization}
    folder = _config_only(tmp_path / "fbgemm", config)
    model = _prepared(config, monkeypatch)
    sizes = _sizes(model)
    dense = _sizes(_meta_model(config))[""]
    assert sizes[""] < dense
    budgets: dict[int | str, int] = {0: int(sizes[""] * 0.4), 1: int(sizes[""] * 0.4), "cpu": 10 * dense}
    expected = _from_pretrained_map(model, budgets)
    code, data = plan_matches_map(folder, budgets, expected, sizes)
    _module_bytes_match(data, sizes)
    assert code == 0 and "cpu" in expected.values() and data["findings"] == [], data
    said = " ".join(" ".join(data["warnings"]).split())
    assert "upper bound" not in said, said
    converted = sum(1 for module in model.modules() if type(module).__name__ == "FbgemmFp8Linear")
    assert (f"the {converted} quantized Linear layers of 15 are sized from its config as transformers' "
            "FbgemmFp8Linear holds them") in said, said
