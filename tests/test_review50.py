"""review50: fixlist24's leftovers (quantization_config naming no quantizer, 4.30 bitsandbytes saves, unit families
in plan-devices' findings and warnings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import copy_example, json_report, run_cli


def _with_quantization_config(tmp_path: Path, value: Any, **extra: Any) -> Path:
    folder = copy_example(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = value
    config.update(extra)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _json(*args: str) -> dict[str, Any]:
    return json_report(*args)


@pytest.mark.parametrize("value", [{"bits": 4}, {"bits": 4, "group_size": 128, "sym": True},
                                   {"quant_method": None, "bits": 8}])
def test_a_quantization_config_naming_no_quantizer_is_said_and_not_planned_as_int4(tmp_path: Path, value: Any) -> None:
    """`{"bits": 4}` beside plain fp32 weights was read as "unknown" 4-bit quantization and planned as int4 ("fits"),
    said of nothing; from_pretrained raises ValueError (no quant_method) on it, as on `{}`."""
    transformers = pytest.importorskip("transformers")
    folder = _with_quantization_config(tmp_path, value)
    with pytest.raises(ValueError, match="quant_method"):  # the oracle: the installed transformers refuses it
        transformers.AutoModel.from_pretrained(str(folder))
    words = "quantization_config names no quant_method"
    inspected = _json("inspect", str(folder))
    assert inspected["quantized"] is None
    assert any(words in warning and "from_pretrained refuses it" in warning for warning in inspected["warnings"])
    planned = _json("plan-devices", str(folder), "--gpu", "1GB")
    assert planned["dtype"] == "fp32"
    assert any(words in warning for warning in planned["warnings"]), planned["warnings"]
    assert not any("the config quantizes the weights" in warning for warning in planned["warnings"])


def _mlx_checkpoint(folder: Path, config: dict[str, Any]) -> Path:
    folder.mkdir()
    mlx = {"model.layers.0.q_proj.weight": torch.zeros(96, 64 // 8, dtype=torch.uint32),
           "model.layers.0.q_proj.scales": torch.zeros(96, 1, dtype=torch.float16),
           "model.layers.0.q_proj.biases": torch.zeros(96, 1, dtype=torch.float16),
           "model.norm.weight": torch.zeros(64, dtype=torch.float16)}
    save_file(mlx, folder / "model.safetensors", metadata={"format": "mlx"})
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", **config}))
    return folder


@pytest.mark.parametrize("keys", [("quantization", "quantization_config"), ("quantization_config",)])
def test_mlx_lms_quantization_config_copy_stays_mlx_and_is_not_told_to_be_deleted(
        tmp_path: Path, keys: tuple[str, ...]) -> None:
    """mlx-lm writes `quantization` and a `quantization_config` copy, neither with a quant_method: still read as
    mlx-lm's 4-bit (its own words say transformers cannot load it), not told "delete the entry"."""
    settings = {"group_size": 64, "bits": 4, "mode": "affine"}
    folder = _mlx_checkpoint(tmp_path / "mlx", dict.fromkeys(keys, settings))
    inspected = _json("inspect", str(folder))
    assert inspected["quantized"]["method"] == "mlx" and inspected["quantized"]["bits"] == 4
    assert inspected["quantized"]["parameters"] == 96 * 64 + 64
    assert not any("quant_method" in warning for warning in inspected["warnings"]), inspected["warnings"]


_BNB_430 = {"load_in_8bit": True, "load_in_4bit": False, "llm_int8_threshold": 6.0, "llm_int8_skip_modules": None,
            "llm_int8_enable_fp32_cpu_offload": False, "llm_int8_has_fp16_weight": False,
            "bnb_4bit_quant_type": "fp4", "bnb_4bit_use_double_quant": False, "bnb_4bit_compute_dtype": "float32"}


def test_a_transformers_430_bitsandbytes_config_without_quant_method_is_bitsandbytes(tmp_path: Path) -> None:
    """transformers 4.30 saved BitsAndBytesConfig without quant_method; transformers still reads load_in_8bit as
    bitsandbytes 8-bit. It was said "unknown" quantization and planned at fp32 (3x the int8 weights' memory)."""
    transformers = pytest.importorskip("transformers")
    from transformers.quantizers.auto import AutoQuantizationConfig

    read = AutoQuantizationConfig.from_dict(dict(_BNB_430))  # the oracle
    assert isinstance(read, transformers.BitsAndBytesConfig) and read.load_in_8bit
    folder = _with_quantization_config(tmp_path, _BNB_430)
    inspected = _json("inspect", str(folder))
    assert inspected["quantized"]["method"] == "bitsandbytes 8-bit" and inspected["quantized"]["bits"] == 8
    assert not any("quant_method" in warning for warning in inspected["warnings"])
    planned = _json("plan-devices", str(folder), "--gpu", "1GB")
    assert planned["dtype"] == "int8"
    assert any("(bitsandbytes 8-bit): planned as int8" in warning for warning in planned["warnings"])


def _over_budget(*args: str) -> tuple[str, str]:
    """(the over-budget finding's line as printed, its --json message) of a plan of the example BERT on one GPU."""
    printed = run_cli("plan-devices", *args)
    line = next(line for line in printed.stdout.splitlines() if "over-budget" in line)
    finding = next(f for f in _json("plan-devices", *args)["findings"] if f["code"] == "over-budget")
    return line, finding["message"]


def test_a_maps_over_budget_finding_speaks_the_units_the_gpu_was_typed_in(tmp_path: Path) -> None:
    """`--gpu 300KiB --map` printed `cuda:0 ... 1.06 MiB of 300.00 KiB` above `cuda:0 holds 1.11 MB, over its
    307.20 KB budget`: two figures for each size in one report."""
    folder = copy_example(tmp_path)
    (tmp_path / "map.json").write_text(json.dumps({"": 0}))
    args = (str(folder), "--gpu", "300KiB", "--cpu", "2MiB", "--map", str(tmp_path / "map.json"))
    line, message = _over_budget(*args)
    assert "cuda:0 holds 1.06 MiB, over its 300.00 KiB budget" in line
    assert message == "cuda:0 holds 1.06 MiB, over its 300.00 KiB budget"
    decimal = _over_budget(str(folder), "--gpu", "300KB", "--map", str(tmp_path / "map.json"))[1]
    assert decimal == "cuda:0 holds 1.11 MB, over its 300.00 KB budget"


def test_an_over_budget_finding_rounded_to_the_same_size_says_the_bytes(tmp_path: Path) -> None:
    """A map one byte over its GPU's size read `cuda:0 holds 1.11 MB, over its 1.11 MB budget`."""
    folder = copy_example(tmp_path)
    (tmp_path / "map.json").write_text(json.dumps({"": 0}))
    used = next(d["used_bytes"] for d in _json("plan-devices", str(folder), "--gpu", "1GB", "--map",
                                                str(tmp_path / "map.json"))["devices"] if d["device"] == "cuda:0")
    message = _over_budget(str(folder), "--gpu", f"{used - 1}B", "--map", str(tmp_path / "map.json"))[1]
    assert message == f"cuda:0 holds {used:,} bytes, over its {used - 1:,}-byte budget"


def test_a_size_typed_in_bytes_takes_neither_unit_family(tmp_path: Path) -> None:
    """`--gpu 300KiB --cpu 2097152B` (bytes, as much binary as decimal) printed the whole report in decimal units,
    the GPU in both (`307.20 KB (300.00 KiB)`), as if the sizes had been typed in both families."""
    folder = copy_example(tmp_path)
    printed = run_cli("plan-devices", str(folder), "--gpu", "300KiB", "--cpu", "2097152B").stdout
    assert "0 B of 300.00 KiB" in printed and "of 2.00 MiB" in printed
    assert " KB" not in printed and " MB" not in printed.replace("GB/s", "")


def test_a_text_configs_quantization_config_problem_says_it_is_the_text_configs() -> None:
    """from_pretrained reads `config.quantization_config or text_config.quantization_config`: a LLaVA's text config's
    `{}` or `{"bits": 4}` is what it refuses (checked: get_hf_quantizer raises ValueError), and the warning said
    "config.json's quantization_config" of a top level that has none; a top-level `{}` beside a text config without
    one is no problem (get_hf_quantizer: no quantizer)."""
    from weightdoctor.quantized import config_quantization_problem, config_quantization_settings

    text = {"model_type": "llama"}
    for value, words in (({}, "is empty ({})"), ({"bits": 4}, "names no quant_method ({'bits': 4})")):
        config = {"model_type": "llava", "text_config": {**text, "quantization_config": value}}
        problem = config_quantization_problem(config) or ""
        expected = f"config.json's text config's quantization_config {words}: from_pretrained refuses"
        assert problem.startswith(expected), problem
        assert config_quantization_settings(config) is None
    assert config_quantization_problem({"model_type": "llava", "quantization_config": {}, "text_config": text}) is None


def test_plain_float_weights_under_a_quant_method_transformers_lacks_load_as_they_are(tmp_path: Path) -> None:
    """transformers skips a quant_method it has no quantizer for ("Unknown quantization type") and loads the model
    unquantized: plain fp32 weights under `{"quant_method": "foo", "bits": 4}` load as stored. inspect said them
    "foo" 4-bit quantized; plan-devices and diff-keys refused them as weights "this checkpoint does not hold (they
    start from their init)"."""
    transformers = pytest.importorskip("transformers")
    folder = _with_quantization_config(tmp_path, {"quant_method": "foo", "bits": 4})
    model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(folder), output_loading_info=True)  # the oracle: loads, unquantized, every weight from the file
    assert getattr(model, "hf_quantizer", None) is None and not info["missing_keys"] and not info["unexpected_keys"]
    words = "names quant_method 'foo', which transformers has no quantizer for: from_pretrained skips it"
    inspected = _json("inspect", str(folder))
    assert inspected["quantized"] is None
    assert any(words in warning for warning in inspected["warnings"]), inspected["warnings"]
    planned = _json("plan-devices", str(folder), "--gpu", "1GB")
    assert planned["dtype"] == "fp32" and planned["verdict"] == "fits-on-gpus"
    diffed = _json("diff-keys", str(folder), "--model-class", "BertForSequenceClassification")
    assert diffed["matched"] == diffed["total_b"] and not diffed["missing"] and not diffed["unexpected"]
    assert not any("foo quantization" in note for note in diffed["notes"]), diffed["notes"]


def test_packed_weights_under_a_quant_method_transformers_lacks_are_still_refused(tmp_path: Path) -> None:
    """The same config beside packed int32 weights: those do not load into the unquantized model; still refused."""
    folder = _with_quantization_config(tmp_path, {"quant_method": "foo", "bits": 4})
    save_file({"bert.encoder.layer.0.attention.self.query.qweight": torch.zeros(4, 32, dtype=torch.int32),
               "bert.encoder.layer.0.attention.self.query.scales": torch.ones(1, 32, dtype=torch.float16)},
              folder / "model.safetensors")
    result = run_cli("plan-devices", str(folder), "--gpu", "1GB")
    assert result.exit_code == 2 and "quant_method 'foo' is not one transformers has a quantizer for" in result.stderr
    inspected = _json("inspect", str(folder))
    assert inspected["quantized"]["method"] == "foo"
    assert not any("plain float weights" in warning for warning in inspected["warnings"])


def test_the_quantizers_named_without_importing_transformers_are_the_installed_ones() -> None:
    """`skipped_quantizer` tells a quant_method transformers has without importing it (seconds, for inspect): the
    names must be the installed transformers' own."""
    pytest.importorskip("transformers")
    from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING

    from weightdoctor.quantized import _TRANSFORMERS_QUANTIZERS

    assert set(AUTO_QUANTIZATION_CONFIG_MAPPING) == _TRANSFORMERS_QUANTIZERS


def test_the_models_own_warnings_speak_the_units_the_gpu_was_typed_in(tmp_path: Path) -> None:
    """`--dtype fp16` on a pre-quantized checkpoint with `--gpu 300KiB`: "the checkpoint stores 1.11 MB" under a
    report in KiB and MiB (the warnings made while the model is built, before the plan)."""
    folder = _with_quantization_config(tmp_path, {"quant_method": "bitsandbytes", "load_in_8bit": True})
    stored = (folder / "model.safetensors").stat().st_size
    planned = _json("plan-devices", str(folder), "--dtype", "fp16", "--gpu", "300KiB")
    warning = next(w for w in planned["warnings"] if "on a pre-quantized checkpoint" in w)
    from weightdoctor.units import format_bytes

    tensors = sum(t["nbytes"] for t in _json("inspect", str(folder), "--all")["tensors"])
    assert tensors <= stored and f"the checkpoint stores {format_bytes(tensors, True)};" in warning, warning
    assert "MiB" in format_bytes(tensors, True)


def test_packed_weights_beside_a_config_naming_no_quantizer_keep_its_bits(tmp_path: Path) -> None:
    """A GPTQ quantize_config.json copied into config.json (`{"bits": 4, ...}`, no quant_method): from_pretrained
    refuses it, said; the packed qweights are counted at its 4 bits (8 values an int32), and named as found by
    their names, with the config that names no quantizer (it was "unknown")."""
    folder = tmp_path / "gptq"
    folder.mkdir()
    save_file({"model.layers.0.q_proj.qweight": torch.zeros(8, 64, dtype=torch.int32),
               "model.layers.0.q_proj.qzeros": torch.zeros(1, 8, dtype=torch.int32),
               "model.layers.0.q_proj.scales": torch.ones(1, 64, dtype=torch.float16),
               "model.norm.weight": torch.zeros(64, dtype=torch.float16)}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": {
        "bits": 4, "group_size": 128, "desc_act": False}}))
    inspected = _json("inspect", str(folder))
    assert inspected["quantized"] == {"method": "gptq-like (its quantization_config names no quant_method)",
                                      "bits": 4, "packed_tensors": 1, "side_tensors": 2,
                                      "parameters": 8 * 64 * 8 + 64}
    assert any("names no quant_method" in warning for warning in inspected["warnings"])
