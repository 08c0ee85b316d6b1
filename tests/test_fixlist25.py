"""fixlist25: wording and planning leftovers (an empty quant_method, packed weights with no quantizer named, unit
families of typed sizes, single-file diffusion families, the KV-cache sentence, side tensors' detail)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from fixtures.build import build_gpt2
from tests.helpers import copy_example, json_report, run_cli, run_json, write_quantized_bert

QUANTIZED = ("attention.self.query", "attention.self.value", "intermediate.dense")


def _config(folder: Path, **changes: Any) -> Path:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _bert_quantized(folder: Path, how: str, quantization_config: Any = None) -> Path:
    """A seeded tiny BERT re-saved as GPTQ packs it (qweight / qzeros / scales / g_idx in place of `weight`) or as
    bitsandbytes 8-bit stores it (int8 weight + SCB + weight_format), with `quantization_config` (None: none)."""
    return write_quantized_bert(folder, QUANTIZED, how, quantization_config)


# 1. quant_method "" -------------------------------------------------------------------------------------------------

def test_an_empty_quant_method_is_said_to_be_skipped_as_transformers_skips_it(tmp_path: Path) -> None:
    """`{"quant_method": ""}` was read as "unknown" quantization (inspect: "quantized unknown: ... once unpacked",
    plan-devices: "the config quantizes the weights (unknown)"). transformers logs "Unknown quantization type, got "
    and loads plain float weights as they are (the oracle below): said so, as for any name it has no quantizer for."""
    transformers = pytest.importorskip("transformers")
    folder = _config(copy_example(tmp_path), quantization_config={"quant_method": ""})
    model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(folder), output_loading_info=True)
    assert getattr(model, "hf_quantizer", None) is None and not info["missing_keys"] and not info["unexpected_keys"]
    words = "quant_method '' (an empty string), which transformers has no quantizer for: from_pretrained skips it"
    inspected = json_report("inspect", str(folder))
    assert inspected["quantized"] is None
    assert any(words in w for w in inspected["warnings"]), inspected["warnings"]
    planned = json_report("plan-devices", str(folder), "--gpu", "1GB")
    assert planned["dtype"] == "fp32" and not any("(unknown)" in w for w in planned["warnings"]), planned["warnings"]
    assert any(words in w for w in planned["warnings"])


def test_packed_weights_beside_an_empty_quant_method_are_refused_as_an_unknown_method_is(tmp_path: Path) -> None:
    folder = _bert_quantized(tmp_path / "gptq", "gptq", {"quant_method": ""})
    result = run_cli("plan-devices", str(folder), "--gpu", "1GB")
    assert result.exit_code == 2 and not result.stdout
    words = "quant_method '' (an empty string) is not one transformers has a quantizer for"
    assert words in " ".join(result.stderr.split())
    # inspect said "quantized unknown" and nothing of the load plan-devices and diff-keys refuse.
    inspected = json_report("inspect", str(folder))
    assert inspected["quantized"]["method"] == "'' (an empty quant_method)"
    assert any(words in w and "builds the model unquantized" in w for w in inspected["warnings"]), inspected
    planned = json_report("plan-devices", str(folder), "--gpu", "1GB", "--dtype", "fp16")
    assert [w for w in planned["warnings"] if words in w] == [
        w for w in planned["warnings"] if w.startswith("planned as the unquantized model at fp16")], planned


# 2. packed weights, no quantizer named -------------------------------------------------------------------------

@pytest.mark.parametrize(("quantization_config", "how"), [
    (None, "config.json has no quantization_config: from_pretrained builds the model unquantized, leaves these "
           "layers' weights at their init"),
    ({"bits": 4, "group_size": 128}, "config.json's quantization_config names no quant_method: from_pretrained "
                                     "refuses it"),
])
def test_gptq_packed_weights_with_no_quantizer_named_are_not_planned_as_dense_fp32(
        tmp_path: Path, quantization_config: Any, how: str) -> None:
    """GPTQ-packed layers under a config.json naming no quantizer were planned as the dense fp32 model (no word at
    all without a quantization_config), a load that fails or leaves those layers at their init (the oracle below).
    plan-devices refuses as for a method transformers lacks; inspect and diff-keys say the same line."""
    transformers = pytest.importorskip("transformers")
    folder = _bert_quantized(tmp_path / "gptq", "gptq", quantization_config)
    if quantization_config is None:
        _, info = transformers.BertForSequenceClassification.from_pretrained(str(folder), output_loading_info=True)
        assert "bert.encoder.layer.0.attention.self.query.weight" in info["missing_keys"]
        assert "bert.encoder.layer.0.attention.self.query.qweight" in info["unexpected_keys"]
    said = "6 layers hold GPTQ/AWQ-packed weights (bert.encoder.layer.0.attention.self.query.qweight"
    result = run_cli("plan-devices", str(folder), "--gpu", "1GB", "--model-class", "BertForSequenceClassification")
    assert result.exit_code == 2 and not result.stdout, result.stdout
    line = " ".join(result.stderr.split())
    assert said in line and how in line and "--dtype plans the unquantized model" in line, line
    planned = json_report("plan-devices", str(folder), "--gpu", "1GB", "--dtype", "fp16")
    assert planned["dtype"] == "fp16"
    assert [w for w in planned["warnings"] if said in w][0].startswith("planned as the unquantized model at fp16")
    if quantization_config is None:  # a quantization_config naming no quant_method has its own line already
        inspected = json_report("inspect", str(folder))
        assert any(said in w and how in w for w in inspected["warnings"]), inspected["warnings"]
        diffed = json_report("diff-keys", str(folder), "--model-class", "BertForSequenceClassification")
        assert any(w.startswith("A: " + said) for w in diffed["warnings"]), diffed["warnings"]


def test_gptq_packed_weights_with_their_quantizer_named_are_planned_as_before(tmp_path: Path) -> None:
    folder = _bert_quantized(tmp_path / "gptq", "gptq", {"quant_method": "gptq", "bits": 4, "group_size": 128})
    planned = json_report("plan-devices", str(folder), "--gpu", "1GB", "--model-class",
                          "BertForSequenceClassification")
    assert planned["dtype"] == "int4" and not any("GPTQ/AWQ-packed" in w for w in planned["warnings"])


# 3. sizes echoed in the family they were typed in ---------------------------------------------------------------

def test_local_reserve_in_binary_units_is_said_back_in_binary_units(tmp_path: Path) -> None:
    """`--local --reserve 1GiB` said "reserve 1.07 GB per GPU" and the RAM in GB: --local's devices were left out of
    the typed sizes, and --reserve with them."""
    folder = copy_example(tmp_path)
    result = run_cli("plan-devices", str(folder), "--local", "--reserve", "1GiB")
    assert result.exit_code in (0, 1), result.stderr
    assert "reserve 1.00 GiB per GPU" in result.stdout and "1.07 GB" not in result.stdout, result.stdout
    assert "RAM available" in result.stdout and " GB;" not in result.stdout.split("RAM available")[1].split("\n")[0]


def test_a_shard_limit_in_bytes_is_not_called_decimal(tmp_path: Path) -> None:
    folder = copy_example(tmp_path)
    result = run_cli("shard", str(folder), "-o", str(tmp_path / "out"), "--max", "50000B", "--dry-run")
    assert result.exit_code == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("max shard"))
    assert "50000B = 50,000 bytes" in line and "decimal" not in line, line
    result = run_cli("shard", str(folder), "-o", str(tmp_path / "out"), "--max", "50KiB", "--dry-run")
    assert "50KiB = 51,200 bytes (binary units)" in result.stdout


# 4. single-file diffusion families -----------------------------------------------------------------------------

def _dit(prefix: str, hunyuan: bool) -> dict[str, torch.Tensor]:
    """Flux's (or, `hunyuan`, HunyuanVideo's as ComfyUI names it: Flux's img_attn.qkv, a text-token refiner and a
    3-D conv patch embedder) double and single blocks, under `prefix`."""
    torch.manual_seed(0)
    weights = {"img_in.weight": torch.randn(16, 8), "txt_in.weight": torch.randn(16, 8),
               "final_layer.linear.weight": torch.randn(8, 16)}
    if hunyuan:
        weights = {"img_in.proj.weight": torch.randn(16, 4, 1, 2, 2),
                   "txt_in.input_embedder.weight": torch.randn(16, 8),
                   "txt_in.individual_token_refiner.blocks.0.self_attn_qkv.weight": torch.randn(48, 16)}
    for i in range(2):
        weights[f"double_blocks.{i}.img_attn.qkv.weight"] = torch.randn(48, 16)
        weights[f"double_blocks.{i}.txt_attn.qkv.weight"] = torch.randn(48, 16)
        weights[f"single_blocks.{i}.linear1.weight"] = torch.randn(112, 16)
    return {prefix + k: v for k, v in weights.items()}


@pytest.mark.parametrize(("prefix", "hunyuan", "kind"), [
    ("model.diffusion_model.", False, "a single-file Flux checkpoint"),
    ("model.diffusion_model.", True, "a single-file HunyuanVideo checkpoint"),
    ("", True, "an original-layout HunyuanVideo checkpoint"),
    ("", False, "an original-layout Flux checkpoint"),
])
def test_shard_names_the_single_file_family(tmp_path: Path, prefix: str, hunyuan: bool, kind: str) -> None:
    """ComfyUI's Flux file (model.diffusion_model.double_blocks...) was "a single-file Stable Diffusion checkpoint",
    loaded by "AUTOMATIC1111, ...", and a HunyuanVideo one named as Flux's (img_attn.qkv) called Flux."""
    source = tmp_path / "model.safetensors"
    weights = _dit(prefix, hunyuan)
    if prefix:  # ComfyUI's all-in-one file: the VAE beside the transformer
        weights["vae.decoder.conv_in.weight"] = torch.randn(8, 4, 3, 3)
    save_file(weights, str(source))
    code, data = run_json("shard", str(source), "-o", str(tmp_path / "out"), "--max", "10KB")
    assert code == 0, data
    said = [w for w in data["plan"]["warnings"] if "is loaded from one file" in w]
    assert len(said) == 1 and said[0].startswith(f"{kind} is loaded from one file (ComfyUI, diffusers' "
                                                 "from_single_file)"), data["plan"]["warnings"]


def test_shard_names_an_sdxl_single_file_sdxl(tmp_path: Path) -> None:
    source = tmp_path / "sdxl.safetensors"
    torch.manual_seed(0)
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3),
               "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": torch.randn(600),
               "conditioner.embedders.1.model.ln_final.weight": torch.randn(600),
               "first_stage_model.decoder.conv_in.weight": torch.randn(8, 4, 3, 3)}, str(source))
    code, data = run_json("shard", str(source), "-o", str(tmp_path / "out"), "--max", "4KB")
    assert code == 0, data
    assert any(w.startswith("a single-file SDXL checkpoint is loaded from one file") for w in data["plan"]["warnings"])


# 5. the KV-cache sentence ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gpt2")
    build_gpt2().save_pretrained(folder)
    return folder


def _kv_line(*args: str) -> str:
    result = run_cli("plan-devices", *args, "--kv-cache")
    assert result.exit_code in (0, 1), result.stderr
    return " ".join(next(line for line in result.stdout.splitlines() if line.startswith("KV cache")).split())


def test_kv_cache_without_a_gpu_is_not_said_to_miss_the_gpus(gpt2: Path) -> None:
    """--cpu alone said "does not fit in the 0 B the GPUs have left": no GPU was given."""
    line = _kv_line(str(gpt2), "--cpu", "1GB")
    assert line.endswith("no GPU was given: it is kept in CPU RAM with the model"), line
    assert "0 B" not in line


def test_kv_cache_beside_offloaded_weights_says_they_share_the_room(gpt2: Path) -> None:
    """With every module offloaded it "fits in the 31.00 KB the GPUs have left", the room the offloaded weights are
    copied through as they run.

    review59: that map is {"": "cpu"}, which accelerate's dispatch_model moves to the CPU whole (one device, no
    hooks): nothing is copied to a GPU, and the cache is made on the CPU. The sentence says so now."""
    line = _kv_line(str(gpt2), "--gpu", "30KB", "--gpu", "1KB", "--cpu", "1GB", "--seq-len", "8")
    assert line.endswith("the map runs no module on a GPU: the model runs on the CPU, and its cache is kept in CPU "
                         "RAM with it, not on the GPUs given"), line


def test_kv_cache_larger_than_the_gpu_says_so(gpt2: Path) -> None:
    line = _kv_line(str(gpt2), "--gpu", "1GB", "--seq-len", "10000000")
    assert line.endswith("does not fit in the 999.88 MB the GPU has left (it is larger than the GPU, 1.00 GB)"), line


def test_kv_cache_with_no_gpu_memory_left_says_none_is_left(gpt2: Path) -> None:
    # The 122,752 bytes the plan puts on the GPU fill one of exactly that much.
    line = _kv_line(str(gpt2), "--gpu", "122752B", "--cpu", "1GB")
    assert "does not fit: the GPU has no memory left" in line and "0 B" not in line, line


# 6. side tensors' detail ---------------------------------------------------------------------------------------

def test_side_tensors_with_no_quantization_config_say_which_quantizer_wrote_them(tmp_path: Path) -> None:
    """bitsandbytes' SCB and weight_format beside int8 weights, no quantization_config: their detail was ""."""
    folder = _bert_quantized(tmp_path / "bnb8", "bnb8")
    diffed = json_report("diff-keys", str(folder), "--model-class", "BertForSequenceClassification")
    side = [i for i in diffed["unexpected"] if i["name"].endswith((".SCB", ".weight_format"))]
    assert side and all(i["detail"].startswith("written by bitsandbytes 8-bit (LLM.int8) beside its quantized "
                                               "weight; no quantization_config names that quantizer") for i in side)
    assert all("add that quantizer's quantization_config to config.json" in i["detail"] for i in side)
    gptq = _bert_quantized(tmp_path / "gptq", "gptq")
    diffed = json_report("diff-keys", str(gptq), "--model-class", "BertForSequenceClassification")
    qweight = next(i for i in diffed["unexpected"] if i["name"].endswith(".qweight"))
    assert qweight["detail"].startswith("written by GPTQ or AWQ as the quantized weight"), qweight


def test_diff_keys_names_the_original_transformer_family(tmp_path: Path) -> None:
    """The note for an original-layout transformer against diffusers' named "Flux or HunyuanVideo ...; SD3" for any
    of them, and offered FluxTransformer2DModel.from_single_file to a HunyuanVideo file."""
    torch.manual_seed(0)
    diffusers = {f"transformer_blocks.{i}.attn.to_q.weight": torch.randn(16, 16) for i in range(2)}
    diffusers.update({f"single_transformer_blocks.{i}.attn.to_q.weight": torch.randn(16, 16) for i in range(2)})
    save_file(diffusers, str(tmp_path / "diffusers.safetensors"))
    for hunyuan, family, model_class in ((True, "Tencent's HunyuanVideo", "HunyuanVideoTransformer3DModel"),
                                         (False, "Black Forest Labs' Flux", "FluxTransformer2DModel")):
        source = tmp_path / f"original-{hunyuan}.safetensors"
        save_file(_dit("", hunyuan), str(source))
        code, data = run_json("diff-keys", str(source), str(tmp_path / "diffusers.safetensors"))
        assert code == 1, data
        note = next(n for n in data["notes"] if n.startswith("A is a diffusion transformer"))
        assert f"original single-file layout ({family}:" in note and f"({model_class}.from_single_file)" in note
        assert ("Flux" in note) != hunyuan and "SD3" not in note, note
