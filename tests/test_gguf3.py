"""GGUF files, the third round: advice that transformers contradicts. plan-devices says a GGUF plan with disk
loads only as device_map="auto" with offload_folder= (transformers' GGUF quantizer raises on a device map dict naming
disk) and refuses `--dtype int8` / `int4` (a bitsandbytes quantization_config, which transformers refuses beside
gguf_file=); check-dtype's verdicts on a quantized GGUF say they cover only the F32 / F16 / BF16 tensors read, and how
many were not (`quantized_not_read`)."""

from __future__ import annotations

import json
from pathlib import Path

from fixtures.gguf_files import UNREAD_KINDS, tiny_llama_gguf
from tests.helpers import run_cli, run_json


def _gguf_quantizer_refusal(device_map: dict[str, int | str]) -> str:
    """What transformers' own GGUF quantizer raises on `device_map` (from_pretrained(gguf_file=) calls it first)."""
    from transformers.quantizers.quantizer_gguf import GgufHfQuantizer
    from transformers.utils.quantization_config import GgufConfig

    try:
        GgufHfQuantizer(GgufConfig(gguf_file="model.gguf")).update_device_map(device_map)
    except RuntimeError as exc:
        return str(exc)
    raise AssertionError("transformers' GGUF quantizer took a device map naming disk")


def _bitsandbytes_beside_gguf_refusal(flag: str) -> str:
    """What transformers' get_hf_quantizer raises on a BitsAndBytesConfig beside gguf_file=."""
    from transformers import BitsAndBytesConfig, LlamaConfig
    from transformers.quantizers.auto import get_hf_quantizer

    try:
        get_hf_quantizer(LlamaConfig(), BitsAndBytesConfig(**{flag: True}), None, True, {}, gguf_file="model.gguf")
    except ValueError as exc:
        return str(exc)
    raise AssertionError("transformers took bitsandbytes beside gguf_file=")


def test_a_gguf_plan_needing_disk_warns_that_it_loads_only_with_device_map_auto_and_an_offload_folder(
        tmp_path: Path) -> None:
    """transformers' GGUF quantizer refuses a device_map dict naming disk, but device_map="auto" reaches it as the
    string "auto": the map it then makes, with disk, loads given offload_folder= (measured with transformers 5.25)."""
    path, _ = tiny_llama_gguf(tmp_path / "tiny.Q4_K_M.gguf")
    # 1 MB of GPU for a model of 8.89 MB at float32: the rest goes to disk, as asked
    code, report = run_json("plan-devices", str(path), "--gpu", "1MB", "--disk")
    [finding] = [f for f in report["findings"] if f["code"] == "gguf-refuses-disk"]
    assert code == 0 and report["verdict"] == "needs-disk-offload"
    assert "disk" in report["device_map"].values()
    assert finding["severity"] == "warn" and "gguf_file='tiny.Q4_K_M.gguf'" in finding["message"]
    assert 'device_map="auto") loads this plan only given offload_folder=' in finding["message"]
    # transformers' own words, as its GGUF quantizer raises them on the map passed as a dict
    quoted = finding["message"].split('RuntimeError: "')[1].split('"')[0]
    assert quoted.startswith("One or more modules is configured to be mapped to disk")
    assert quoted == _gguf_quantizer_refusal(report["device_map"])
    # ... and the string "auto" passes it: the map with disk is made after it has looked
    from transformers.quantizers.quantizer_gguf import GgufHfQuantizer
    from transformers.utils.quantization_config import GgufConfig

    assert GgufHfQuantizer(GgufConfig(gguf_file="model.gguf")).update_device_map("auto") == "auto"

    # Without --disk the planner still sends the rest there ("not placed"): the finding is a warning, not an error.
    code, report = run_json("plan-devices", str(path), "--gpu", "1MB")
    assert code == 0 and report["verdict"] == "does-not-fit"
    assert [(f["code"], f["severity"]) for f in report["findings"]] == [("gguf-refuses-disk", "warn")]
    changes = [s["change"] for s in report["suggestions"]]
    assert "cpu" in changes and "disk" in changes

    # A GPU and CPU plan names no disk: no finding, the load it plans is one transformers makes.
    code, report = run_json("plan-devices", str(path), "--gpu", "1MB", "--cpu", "1GB")
    assert code == 0 and report["verdict"] == "needs-cpu-offload" and report["findings"] == []


def test_a_hand_written_map_with_disk_for_a_gguf_is_refused_as_transformers_does(tmp_path: Path) -> None:
    path, _ = tiny_llama_gguf(tmp_path / "tiny.gguf")
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"model.embed_tokens": 0, "model.layers": "cpu", "model.norm": "cpu",
                                   "model.rotary_emb": "cpu", "lm_head": "disk"}))
    code, report = run_json("plan-devices", str(path), "--gpu", "1GB", "--cpu", "1GB", "--disk", "--map", str(mapping))
    assert code == 1 and report["verdict"] == "does-not-fit"
    assert "gguf-refuses-disk" in [f["code"] for f in report["findings"]]


def test_no_int8_or_int4_suggested_for_a_gguf(tmp_path: Path) -> None:
    path, _ = tiny_llama_gguf(tmp_path / "tiny.gguf")
    # 4 MB of GPU: a float32 plan does not fit; int8 would, and was the first change offered
    code, report = run_json("plan-devices", str(path), "--gpu", "4MB", "--dtype", "fp32")
    assert code == 0 and report["verdict"] == "does-not-fit" and report["suggestions"]
    assert not [s for s in report["suggestions"] if s["dtype"] in ("int8", "int4")]
    assert [s for s in report["suggestions"] if s["change"] == "gpus"]  # the other changes stay


def test_dtype_int8_or_int4_for_a_gguf_is_refused_in_one_line(tmp_path: Path) -> None:
    path, _ = tiny_llama_gguf(tmp_path / "tiny.Q4_K_M.gguf")
    for dtype, flag in (("int8", "load_in_8bit=True"), ("int4", "load_in_4bit=True"), ("bnb4", None)):
        result = run_cli("plan-devices", str(path), "--gpu", "10MB", "--dtype", dtype)
        if flag is None:  # not a dtype at all: refused as before
            assert result.exit_code == 2
            continue
        assert result.exit_code == 2 and result.stdout == "", result.stdout
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"error: {path}: --dtype {dtype} plans a bitsandbytes load")
        assert f"BitsAndBytesConfig({flag})" in line and "gguf_file='tiny.Q4_K_M.gguf'" in line
        quoted = line.split('ValueError: "')[1].split('"')[0]
        assert _bitsandbytes_beside_gguf_refusal(flag.split("=")[0]).startswith(quoted)
        assert "Traceback" not in result.stderr
    # the float dtypes plan as before
    assert run_json("plan-devices", str(path), "--gpu", "10MB", "--dtype", "bf16")[0] == 0


def test_check_dtype_on_a_quantized_gguf_says_what_its_verdicts_cover(tmp_path: Path) -> None:
    path, _ = tiny_llama_gguf(tmp_path / "tiny.Q8_1.gguf", kinds=UNREAD_KINDS)
    code, report = run_json("check-dtype", str(path))
    assert code == 0
    # 4 F32 / F16 tensors read (the norms and the embedding); 10 Q8_1 / Q8_K matrices not
    assert report["tensors_checked"] == 4 and report["quantized_not_read"] == 10
    assert report["quantized_dequantized"] == 0
    lines = report["recommendation"]["lines"]
    assert not [line for line in lines if "is safe: every value is exactly representable" in line]
    assert lines[0].startswith("the verdicts cover only the 4 tensors read: 10 quantized GGUF tensors not read")
    [fp16] = [line for line in lines if line.startswith("fp16 ")]
    assert fp16.startswith("fp16 is safe for the 4 tensors read: every value read is exactly representable; "
                           "10 quantized GGUF tensors not read")
    [bf16] = [line for line in lines if line.startswith("bf16 ")]
    assert "of the 4 tensors read, 10 quantized GGUF tensors not read" in bf16
    [best] = [line for line in lines if line.startswith("smallest plain cast")]
    assert " for the tensors read (10 quantized GGUF tensors not read)" in best, best


def test_check_dtype_on_a_gguf_read_whole_says_nothing_of_unread_tensors(tmp_path: Path) -> None:
    path, _ = tiny_llama_gguf(tmp_path / "tiny.F32.gguf", quantized=False)
    code, report = run_json("check-dtype", str(path))
    assert code == 0 and report["quantized_not_read"] == 0 and report["tensors_checked"] == 14
    assert not [line for line in report["recommendation"]["lines"] if "not read" in line]
    [fp32] = [line for line in report["recommendation"]["lines"] if line.startswith("fp32 ")]
    assert fp32.startswith("fp32 is safe: every value is exactly representable")


def test_dtype_fp8_for_a_gguf_offers_only_the_float_dtypes_a_gguf_plans_at(tmp_path: Path) -> None:
    """--dtype fp8 of a GGUF is refused as of any checkpoint not quantized with fine-grained FP8; its hint named
    int8 and int4, which a GGUF refuses in turn (above)."""
    path, _ = tiny_llama_gguf(tmp_path / "tiny.Q4_K_M.gguf")
    result = run_cli("plan-devices", str(path), "--gpu", "10MB", "--dtype", "fp8")
    assert result.exit_code == 2 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: --dtype fp8 plans a checkpoint quantized with transformers' fine-grained")
    assert line.endswith("use fp32, bf16 or fp16"), line
    assert "int8" not in line and "int4" not in line
