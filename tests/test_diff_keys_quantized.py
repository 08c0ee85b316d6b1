"""`diff-keys --model-class` on quantized checkpoints and against the config's dtype.

The checkpoints are a real tiny BERT (fixtures.build) re-saved the way quantizers store it: bitsandbytes
8-bit (int8 weights + `SCB` + `weight_format`), bitsandbytes 4-bit (packed uint8 weights + `absmax`,
`quant_map`, `quant_state.*`) and GPTQ (`qweight` / `qzeros` / `scales` / `g_idx` instead of `weight`),
each with and without the `quantization_config` that tells transformers to expect them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fixtures.build import build_bert
from tests.helpers import run_json
from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.load_simulation import diff_checkpoint_against_model, quantization_method

QUANTIZED_MODULES = ("attention.self.query", "attention.self.value", "intermediate.dense")
BNB_8BIT = {"quant_method": "bitsandbytes", "load_in_8bit": True, "load_in_4bit": False}
BNB_4BIT = {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
            "bnb_4bit_quant_type": "nf4"}
GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128}


def _quantized(name: str) -> bool:
    return name.endswith(".weight") and any(f".{m}.weight" in name for m in QUANTIZED_MODULES)


def _save(folder: Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def bert() -> tuple[dict[str, torch.Tensor], dict]:
    model = build_bert()
    return {k: v.clone() for k, v in model.state_dict().items()}, model.config.to_dict()


def _bnb_8bit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in state.items():
        if _quantized(name):
            scale = value.abs().amax(dim=1).clamp(min=1e-8)
            out[name] = torch.round(value / scale[:, None] * 127).to(torch.int8)
            out[name[: -len("weight")] + "SCB"] = scale * 127
            out[name[: -len("weight")] + "weight_format"] = torch.tensor(0, dtype=torch.uint8)
        else:
            out[name] = value
    return out


def _bnb_4bit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in state.items():
        if _quantized(name):
            out[name] = torch.zeros((value.numel() + 1) // 2, 1, dtype=torch.uint8)
            out[name + ".absmax"] = torch.ones(value.numel() // 64)
            out[name + ".quant_map"] = torch.linspace(-1, 1, 16)
            out[name + ".quant_state.bitsandbytes__nf4"] = torch.zeros(40, dtype=torch.uint8)
        else:
            out[name] = value
    return out


def _gptq(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in state.items():
        if _quantized(name):
            stem = name[: -len("weight")]
            rows, cols = value.shape
            out[stem + "qweight"] = torch.zeros(cols // 8, rows, dtype=torch.int32)
            out[stem + "qzeros"] = torch.zeros(1, rows // 8, dtype=torch.int32)
            out[stem + "scales"] = torch.ones(1, rows, dtype=torch.float16)
            out[stem + "g_idx"] = torch.zeros(cols, dtype=torch.int32)
        else:
            out[name] = value
    return out


def _report(folder: Path):  # type: ignore[no-untyped-def]
    with open_checkpoint(folder) as checkpoint:
        return diff_checkpoint_against_model(checkpoint, "BertForSequenceClassification")


def test_quantization_method_in_words() -> None:
    assert quantization_method(None) is None
    assert quantization_method(BNB_8BIT) == "bitsandbytes 8-bit"
    assert quantization_method(BNB_4BIT) == "bitsandbytes 4-bit"
    assert quantization_method(GPTQ) == "gptq"
    assert quantization_method({"bits": 4}) == "unknown"


def test_bnb_8bit_side_tensors_and_int8_weights_are_expected_with_a_quantization_config(
    tmp_path: Path, bert: tuple[dict[str, torch.Tensor], dict]
) -> None:
    state, config = bert
    folder = _save(tmp_path / "bnb8", _bnb_8bit(state), {**config, "quantization_config": BNB_8BIT})
    report = _report(folder)
    side = [i for i in report.unexpected if i.name.endswith((".SCB", ".weight_format"))]
    assert len(side) == 2 * 2 * len(QUANTIZED_MODULES)  # two layers, two side tensors per module
    assert {(i.reason, i.severity) for i in side} == {("quantization", "info")}
    assert all("bitsandbytes 8-bit quantizer" in i.detail for i in side)
    assert not [i for i in report.unexpected if i.reason == "unknown"]
    int8 = [d for d in report.dtype_differences if d.dtype_a == "int8"]
    assert len(int8) == 2 * len(QUANTIZED_MODULES) and {d.severity for d in int8} == {"info"}
    assert not report.mismatched and not report.missing
    assert report.worst_severity == "info"
    assert any("bitsandbytes 8-bit quantization" in note for note in report.notes)


def test_the_same_checkpoint_without_quantization_config_warns(
    tmp_path: Path, bert: tuple[dict[str, torch.Tensor], dict]
) -> None:
    state, config = bert
    folder = _save(tmp_path / "bnb8-plain", _bnb_8bit(state), config)
    report = _report(folder)
    side = [i for i in report.unexpected if i.name.endswith((".SCB", ".weight_format"))]
    assert side and {(i.reason, i.severity) for i in side} == {("quantization", "warn")}
    assert all(i.detail.startswith("written by bitsandbytes 8-bit") for i in side)
    int8 = [d for d in report.dtype_differences if d.dtype_a == "int8"]
    assert len(int8) == 2 * len(QUANTIZED_MODULES) and {d.severity for d in int8} == {"warn"}
    assert report.worst_severity == "warn"


def test_bnb_4bit_packed_weights_are_not_shape_errors(
    tmp_path: Path, bert: tuple[dict[str, torch.Tensor], dict]
) -> None:
    state, config = bert
    folder = _save(tmp_path / "bnb4", _bnb_4bit(state), {**config, "quantization_config": BNB_4BIT})
    report = _report(folder)
    assert len(report.mismatched) == 2 * len(QUANTIZED_MODULES)
    assert {(m.reason, m.severity) for m in report.mismatched} == {("quantization", "info")}
    assert all("bitsandbytes 4-bit quantizer" in m.detail and m.shape_a[1] == 1 for m in report.mismatched)
    side = [i for i in report.unexpected if ".weight." in i.name]
    assert len(side) == 3 * 2 * len(QUANTIZED_MODULES)
    assert {(i.reason, i.severity) for i in side} == {("quantization", "info")}
    assert report.worst_severity == "info"
    # Without the config, the packed weights are what they look like: wrong shapes.
    plain = _report(_save(tmp_path / "bnb4-plain", _bnb_4bit(state), config))
    assert "quantization" not in {m.reason for m in plain.mismatched}
    assert plain.worst_severity == "error"


def test_gptq_missing_weights_are_explained_by_their_qweight(
    tmp_path: Path, bert: tuple[dict[str, torch.Tensor], dict]
) -> None:
    state, config = bert
    folder = _save(tmp_path / "gptq", _gptq(state), {**config, "quantization_config": GPTQ})
    report = _report(folder)
    assert len(report.missing) == 2 * len(QUANTIZED_MODULES)
    for issue in report.missing:
        assert (issue.reason, issue.severity) == ("quantization", "info")
        assert issue.detail.startswith(f"stored quantized as {issue.name[: -len('weight')]}qweight")
    assert {i.reason for i in report.unexpected} == {"quantization"}
    # Without the quantization_config nothing unpacks them: still an error, now saying where the weight is.
    plain = _report(_save(tmp_path / "gptq-plain", _gptq(state), config))
    assert {(i.reason, i.severity) for i in plain.missing} == {("quantization", "error")}
    assert all("A stores it quantized as" in i.detail for i in plain.missing)


def _loaded_dtypes(folder: Path) -> dict[str, str]:
    """What from_pretrained really gives each state-dict key (the oracle)."""
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(folder)
    return {k: str(v.dtype).removeprefix("torch.") for k, v in model.state_dict().items()}


@pytest.mark.parametrize("config_dtype", ["float32", "float16", None])
def test_dtype_differences_equal_the_casts_from_pretrained_makes(
    tmp_path: Path, bert: tuple[dict[str, torch.Tensor], dict], config_dtype: str | None
) -> None:
    state, config = bert
    halved = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
    folder = _save(tmp_path / "bf16", halved, {**config, "dtype": config_dtype})
    report = _report(folder)
    loaded = _loaded_dtypes(folder)
    cast = {k for k, v in halved.items() if str(v.dtype).removeprefix("torch.") != loaded[k]}
    assert {d.name for d in report.dtype_differences} == cast
    assert all((d.dtype_a, d.dtype_b) == ("bfloat16", loaded[d.name]) for d in report.dtype_differences)
    assert {d.severity for d in report.dtype_differences} <= {"info"}
    assert bool(cast) == (config_dtype is not None)  # with no dtype in the config, the checkpoint's is kept


def test_cli_json_on_a_quantized_checkpoint(tmp_path: Path, bert: tuple[dict[str, torch.Tensor], dict]) -> None:
    state, config = bert
    folder = _save(tmp_path / "bnb8-cli", _bnb_8bit(state), {**config, "quantization_config": BNB_8BIT})
    code, data = run_json("diff-keys", folder, "--model-class", "BertForSequenceClassification")
    assert code == 0
    assert {i["reason"] for i in data["unexpected"]} == {"quantization"}
    assert {d["dtype_a"] for d in data["dtype_differences"]} == {"int8"}
