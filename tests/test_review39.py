"""Review 39 of the writer and scanner merges (redteam 22 and 23): what `--force` may delete, what the scanner
refuses of genuine files."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tests.helpers import run_json


def test_force_writing_a_variant_keeps_the_plain_weights_beside_it(tmp_path: Path) -> None:
    """A Hub-style folder holds the fp32 weights (`model.safetensors`) and a bf16 variant; an fp16 variant converted
    into it with --force deleted the fp32 `model.safetensors` and `pytorch_model.bin` (plain transformers names),
    while the bf16 variant was kept: both are other variants of the same weights, which the user keeps."""
    torch.manual_seed(39)
    source = tmp_path / "fp16"
    source.mkdir()
    half = {"a.weight": torch.randn(4, 4).half(), "b.weight": torch.randn(8).half()}
    save_file(half, source / "model.fp16.safetensors")
    dest = tmp_path / "repo"
    dest.mkdir()
    full = {"a.weight": torch.randn(4, 4), "b.weight": torch.randn(8)}
    save_file(full, dest / "model.safetensors")
    save_file(full, dest / "model.bf16.safetensors")
    torch.save(full, dest / "pytorch_model.bin")
    (dest / "model.fp16.safetensors").write_bytes(b"an earlier fp16 save")

    code, report = run_json("convert", str(source), "-o", str(dest), "--force")
    assert code == 0, report
    assert report["write"]["replaced"] == []
    assert sorted(report["write"]["carried_over"]) == ["model.bf16.safetensors", "model.safetensors",
                                                       "pytorch_model.bin"]
    assert sorted(p.name for p in dest.iterdir()) == ["model.bf16.safetensors", "model.fp16.safetensors",
                                                     "model.safetensors", "pytorch_model.bin"]
    assert torch.equal(load_file(dest / "model.safetensors")["a.weight"], full["a.weight"])
    assert torch.equal(load_file(dest / "model.fp16.safetensors")["a.weight"], half["a.weight"])


def test_converting_a_file_into_its_own_folder_does_not_call_the_input_an_earlier_save(tmp_path: Path) -> None:
    """`convert m/pytorch_model.bin -o m/` (the README's "into that existing folder", under its converted name) was
    warned that m holds pytorch_model.bin, "an earlier save" of model.safetensors's set, to be replaced by converting
    the model folder with --force (which refuses the input's folder). An earlier save beside it is still named."""
    torch.manual_seed(7)
    folder = tmp_path / "m"
    folder.mkdir()
    torch.save({"a.weight": torch.randn(3, 3), "b.bias": torch.randn(3)}, folder / "pytorch_model.bin")

    code, report = run_json("convert", str(folder / "pytorch_model.bin"), "-o", f"{folder}/")
    assert code == 0, report
    assert (folder / "model.safetensors").is_file() and (folder / "pytorch_model.bin").is_file()
    assert not [w for w in report["warnings"] if "earlier save" in w], report["warnings"]

    (folder / "model-00001-of-00002.safetensors").write_bytes(b"an earlier sharded save")
    code, report = run_json("convert", str(folder / "pytorch_model.bin"), "-o", f"{folder}/", "--force")
    assert code == 0, report
    [warning] = [w for w in report["warnings"] if "earlier save" in w]
    assert "also holds model-00001-of-00002.safetensors, of the same weight set as model.safetensors" in warning
    assert "pytorch_model.bin" not in warning


def test_force_writing_an_adapter_keeps_the_base_model_weights_in_the_folder(tmp_path: Path) -> None:
    """A PEFT adapter (adapter_model.bin) converted with --force into a folder that also holds the base model's
    weights deleted model.safetensors and pytorch_model.bin ("replaced"): plain transformers names were dropped
    whatever set was written. Only the adapter's own earlier save is replaced."""
    torch.manual_seed(11)
    source = tmp_path / "adapter"
    source.mkdir()
    lora = {"base_model.model.q.lora_A.weight": torch.randn(2, 4)}
    torch.save(lora, source / "adapter_model.bin")
    (source / "adapter_config.json").write_text('{"peft_type": "LORA", "base_model_name_or_path": "base"}')
    dest = tmp_path / "merged"
    dest.mkdir()
    base = {"q.weight": torch.randn(4, 4)}
    save_file(base, dest / "model.safetensors")
    torch.save(base, dest / "pytorch_model.bin")
    save_file({"base_model.model.q.lora_A.weight": torch.zeros(2, 4)}, dest / "adapter_model.safetensors")

    code, report = run_json("convert", str(source), "-o", str(dest), "--force")
    assert code == 0, report
    assert sorted(report["write"]["carried_over"]) == ["model.safetensors", "pytorch_model.bin"]
    assert torch.equal(load_file(dest / "model.safetensors")["q.weight"], base["q.weight"])
    assert torch.equal(load_file(dest / "adapter_model.safetensors")["base_model.model.q.lora_A.weight"],
                       lora["base_model.model.q.lora_A.weight"])
