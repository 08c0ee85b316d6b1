"""regress3: what 2026-12-06's merges (5f67c22..65291cb) changed that nobody meant to, each checked on a tiny
seeded checkpoint built here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fixtures.build import build_bert
from tests.helpers import json_report, write_quantized_bert

QUANTIZED = ("attention.self.query", "attention.self.value")


def _packed_bert(folder: Path, quantization_config: dict[str, Any] | None) -> Path:
    """A seeded tiny BERT whose query / value weights are GPTQ-packed (qweight / qzeros / scales / g_idx), its
    config.json holding `quantization_config` where one is given."""
    return write_quantized_bert(folder, QUANTIZED, "gptq", quantization_config)


def _side_details(report: dict[str, Any]) -> dict[str, str]:
    return {key["name"]: key["detail"] for key in report["unexpected"] if key["reason"] == "quantization"}


def test_side_tensors_of_a_checkpoint_whose_config_names_its_quantizer_are_not_said_to_lack_one(
        tmp_path: Path) -> None:
    """e3e31a0 named the quantizer of a side tensor 'where no quantization_config names it', but diff-keys of two
    checkpoints never passes B's quantizer to the classifier, so a GPTQ save whose config.json names gptq, against
    its unquantized base, was told 'no quantization_config names that quantizer ... add that quantizer's
    quantization_config to config.json': the file has it."""
    gptq = _packed_bert(tmp_path / "gptq", {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False})
    base = tmp_path / "base"
    build_bert().save_pretrained(base)
    details = _side_details(json_report("diff-keys", str(gptq), str(base)))
    assert details and set(details) >= {"bert.encoder.layer.0.attention.self.query.qzeros",
                                        "bert.encoder.layer.0.attention.self.query.scales"}
    for name, detail in details.items():
        assert "no quantization_config names" not in detail, (name, detail)
        assert "add that quantizer's quantization_config" not in detail, (name, detail)
        assert "A's config.json names the gptq quantizer, B's names none" in detail, (name, detail)
    # B quantized another way: both are named.
    bnb = tmp_path / "bnb"
    build_bert().save_pretrained(bnb)
    config = json.loads((bnb / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    (bnb / "config.json").write_text(json.dumps(config))
    details = _side_details(json_report("diff-keys", str(gptq), str(bnb)))
    assert details and all("A's config.json names the gptq quantizer, B's the bitsandbytes 8-bit one" in detail
                           for detail in details.values()), details


def test_side_tensors_with_no_quantization_config_still_name_the_fix(tmp_path: Path) -> None:
    """The case e3e31a0 meant keeps its words: no quantization_config in A's config.json."""
    packed = _packed_bert(tmp_path / "packed", None)
    base = tmp_path / "base"
    build_bert().save_pretrained(base)
    details = _side_details(json_report("diff-keys", str(packed), str(base)))
    assert details and all("no quantization_config names that quantizer" in detail for detail in details.values())
