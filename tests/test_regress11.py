"""Regressions found comparing every command's output at 897dd212 and at redteam36's merge (5f6c1e56), each fixed here.

plan-devices of an MXFP4 (GPT-OSS) checkpoint: quantacct2 (57a85439) plans its experts as the Mxfp4GptOssExperts
from_pretrained swaps in, uint8 tensors of two FP4 weights a byte. The bytes planned became right (172,448 for
316,832), but the parameter count the plan prints ("dtype bf16 · 109K parameters", JSON num_params) was taken from
those uint8 tensors' element count: 109,264 where the model has 158,416 weights, and 897dd212 said 158,416. The
packed experts count two weights a byte again, as BitNet's packed BitLinear weight already counts its in x out.
"""
from __future__ import annotations

from pathlib import Path

from tests.helpers import run_cli, run_json
from tests.test_plan_quantized2 import _meta_model
from tests.test_plan_quantized4 import _GPT_OSS, _gpt_oss_mxfp4


def test_an_mxfp4_plan_counts_the_parameters_of_the_model_not_the_bytes_of_its_packed_experts(tmp_path: Path) -> None:
    folder = _gpt_oss_mxfp4(tmp_path / "gpt-oss", {"quant_method": "mxfp4"})
    dense = _meta_model(_GPT_OSS)  # the same config unquantized: the model's weights, as many
    expected = sum(parameter.numel() for parameter in dense.parameters())
    code, data = run_json("plan-devices", str(folder), "--gpu", "24GB")
    assert code == 0, data
    assert data["num_params"] == expected, (data["num_params"], expected)
    # the bytes stay those of the packed experts (four bits a weight): fewer than the dense bf16 model's
    dense_bytes = sum(parameter.numel() * 2 for parameter in dense.parameters())
    assert data["weights_bytes"] < dense_bytes * 0.6, (data["weights_bytes"], dense_bytes)

    shown = run_cli("plan-devices", str(folder), "--gpu", "24GB")
    assert shown.exit_code == 0, shown.stderr
    from weightdoctor.units import format_count

    assert f"dtype bf16 · {format_count(expected)} parameters ·" in shown.stdout, shown.stdout
