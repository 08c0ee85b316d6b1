"""Review of fix list 11 (review14): user regexes with a repeated group that matches one way, `--revision v1/` on the
config-only paths, an FP8 KV-cache scheme alone, the FP8 label from the tensors, the dtype "auto" warning's words
and sub-configs without model_type, ONNX external data files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.helpers import run_cli, run_json


@pytest.fixture
def long_named(tmp_path: Path) -> Path:
    """A Llama-like checkpoint with one 5,000-character name, a run of word characters and dots that makes a
    catastrophic pattern backtrack for hours."""
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "long.safetensors"
    save_file({"model.layers.0.self_attn.q_proj.weight": torch.zeros(2), "model.layers.0.mlp.up_proj.weight":
               torch.zeros(2), "model.norm.weight": torch.zeros(2), "ab." * 1666 + "x": torch.zeros(2)}, path)
    return path


@pytest.mark.parametrize(("pattern", "names"), [
    (r"layers\.(\d+\.)+self", ["model.layers.0.self_attn.q_proj.weight"]),
    (r"^(\w+\.)*norm\.weight$", ["model.norm.weight"]),
    (r"^(?:\w+\.){4}q_proj", ["model.layers.0.self_attn.q_proj.weight"]),
    (r"(self_attn|mlp)+\.", ["model.layers.0.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight"]),
    (r"([a-z]+_)+proj", ["model.layers.0.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight"]),
    (r"(\.\d+)+\.mlp", ["model.layers.0.mlp.up_proj.weight"]),
])
def test_a_repeated_group_that_matches_one_way_is_not_refused(long_named: Path, pattern: str,
                                                              names: list[str]) -> None:
    """`--filter 'layers\\.(\\d+\\.)+'`, `'(\\w+\\.)*weight'`, `'(self_attn|mlp)+'` were refused as "a repeat inside a
    repeat" that "can backtrack for hours", the refusal itself suggesting `[\\d.]+ for (\\d+\\.)+`: each iteration of
    such a group matches one way (the inner repeat ends at a character it cannot take, the alternatives start
    differently), so it backtracks polynomially. They run, fast even over a 5,000-character name."""
    start = time.perf_counter()
    code, data = run_json("inspect", long_named, "--filter", pattern)
    assert time.perf_counter() - start < 10
    assert code == 0, pattern
    assert sorted(t["name"] for t in data["tensors"]) == names


def test_a_rename_with_a_repeated_group_runs(tmp_path: Path) -> None:
    """`diff-keys --rename '^(\\w+\\.){2}=...'` (drop the first two levels) was refused before it ran."""
    import torch
    from safetensors.torch import save_file

    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({"module.model.norm.weight": torch.zeros(2)}, a)
    save_file({"norm.weight": torch.zeros(2)}, b)
    code, data = run_json("diff-keys", a, b, "--rename", r"^(\w+\.){2}=")
    assert code == 0, data
    assert (data["matched"], data["missing"], data["unexpected"]) == (1, [], [])


@pytest.mark.parametrize("pattern", [
    r"(a+)+$", r"(\w+\.?)+$", r"(a|aa)+$", r"(ab|abab)+$", r"(\d{1,2})+$", r"(\w+[._])+$",
    r"(.*\.)+x$",
])
def test_a_repeated_group_that_can_match_several_ways_is_still_refused(long_named: Path, pattern: str) -> None:
    """The refusal stays for what backtracks exponentially (or is not proven not to), and says what is wrong in
    words that fit the pattern: `(a|aa)+` holds no "repeat inside a repeat"."""
    result = run_cli("inspect", long_named, "--filter", pattern)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip().endswith(
        f"--filter {pattern!r}: a repeat of a group that can match the same text more than one way (as (a+)+ or "
        "(a|aa)+ can), or a backreference, can backtrack for hours over one long tensor name, and Python's re cannot "
        "be stopped: not run; end each inner repeat with a character it cannot take ((\\w+\\.)+ runs) or use a "
        "character class ([\\w.]+ for (\\w+\\.?)+)")


LLAMA = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 64, "architectures": ["LlamaForCausalLM"],
         "dtype": "float32"}


def test_a_revision_with_a_trailing_slash_reads_a_config_only_repo_id(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`--revision v1/` was stripped for open_checkpoint's sources only: plan-devices of a repo id (resolved
    config-only) and diff-keys' `--config org/name` still said "revision 'v1/' of 'org/m' is not ... in the Hugging
    Face cache". Both read v1 now, as `--revision v1` does."""
    import torch
    from safetensors.torch import save_file

    from fixtures.hub_cache import commit_of, write_snapshot

    write_snapshot(tmp_path, "org/m", commit_of("old"),
                   {"config.json": json.dumps({**LLAMA, "num_hidden_layers": 2}).encode()}, refs=("v1",))
    write_snapshot(tmp_path, "org/m", commit_of("new"), {"config.json": json.dumps(LLAMA).encode()})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plans = {rev: run_json("plan-devices", "org/m", "--gpu", "1GB", *(["--revision", rev] if rev else []))
             for rev in ("v1/", "v1", None)}
    assert plans["v1/"][0] == 0 and plans["v1/"][1]["num_params"] == plans["v1"][1]["num_params"]
    assert plans["v1"][1]["num_params"] > plans[None][1]["num_params"]  # two layers at v1, one at main
    weights = tmp_path / "sd.safetensors"
    save_file({"model.norm.weight": torch.zeros(16)}, weights)
    diffs = {rev: run_json("diff-keys", weights, "--model-class", "LlamaForCausalLM", "--config", "org/m",
                           "--revision", rev) for rev in ("v1/", "v1")}
    assert diffs["v1/"][0] == 1 and diffs["v1/"][1]["total_b"] == diffs["v1"][1]["total_b"]
    assert diffs["v1"][1]["total_b"] == 21  # LlamaForCausalLM's keys at v1's two layers


FP8 = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "tensor", "dynamic": False}


@pytest.mark.parametrize(("quantization", "what"), [
    ({"config_groups": {}, "kv_cache_scheme": FP8}, "the KV cache"),
    ({"kv_cache_scheme": FP8}, "the KV cache"),
    ({"config_groups": {"group_0": {"targets": ["Linear"], "weights": None, "input_activations": FP8}}},
     "activations"),
])
def test_an_fp8_kv_cache_scheme_alone_is_not_said_to_pack_the_weights(
        tmp_path: Path, quantization: dict[str, object], what: str) -> None:
    """A compressed-tensors config with an FP8 `kv_cache_scheme` and no weight scheme (llm-compressor's KV-cache
    recipe) was planned with "the config quantizes the weights (compressed-tensors): planned at the floating dtype,
    which over-sizes the Linear weights its quantizer keeps packed; the plan is an upper bound": no weight is
    quantized, none is packed, and the plan is the dense one. It is neither int8 nor float8_e4m3fn."""
    folder = tmp_path / "kv"
    folder.mkdir()
    config = {**LLAMA, "dtype": "bfloat16", "quantization_config": {
        "quant_method": "compressed-tensors", "quantization_status": "compressed", "format": "float-quantized",
        **quantization}}
    (folder / "config.json").write_text(json.dumps(config))
    code, data = run_json("plan-devices", folder, "--gpu", "1GB")
    assert code == 0 and data["dtype"] == "bf16"
    assert not [line for line in data["warnings"] if "upper bound" in line or "packed" in line]
    assert (f"the config's compressed-tensors quantization_config quantizes {what} only, not the weights: the model "
            "holds them dense, planned at the floating dtype") in data["warnings"]
    (folder / "config.json").write_text(json.dumps({**LLAMA, "dtype": "bfloat16"}))
    assert run_json("plan-devices", folder, "--gpu", "1GB")[1]["weights_bytes"] == data["weights_bytes"]


def test_an_fp8_config_planned_from_its_tensors_is_labelled_as_its_warning_says(tmp_path: Path) -> None:
    """Where the model could not be built from an FP8 compressed-tensors config (a model_type transformers does not
    know), the plan from the tensors said "planned as float8_e4m3fn" in one warning, then "dtype int8" in the JSON
    and the dtype line, and "int8 is planned for transformers models only": one label now, float8_e4m3fn."""
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "fp8"
    folder.mkdir()
    quantization = {"quant_method": "compressed-tensors", "quantization_status": "compressed",
                    "format": "float-quantized", "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                        "num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel"}}}}
    (folder / "config.json").write_text(json.dumps({"model_type": "nosuchmodel", "dtype": "bfloat16",
                                                    "quantization_config": quantization}))
    save_file({"layers.0.proj.weight": torch.zeros(8, 8).to(torch.float8_e4m3fn),
               "layers.0.proj.weight_scale": torch.ones(8, 1)}, folder / "model.safetensors")
    code, data = run_json("plan-devices", folder, "--gpu", "1GB")
    assert code == 0 and data["built_from"] == "tensors"
    assert data["dtype"] == "float8_e4m3fn" and data["weights_bytes"] == 64 + 8 * 4
    assert "float8_e4m3fn is planned for transformers models only; the tensors keep their own dtypes" \
        in data["warnings"]
    assert not [line for line in data["warnings"] if "int8" in line]
    assert "  dtype float8_e4m3fn · " in run_cli("plan-devices", folder, "--gpu", "1GB").stdout


def test_the_dtype_auto_warning_says_autoconfig_loads_with_a_dtype_and_lists_fields_with_and(tmp_path: Path) -> None:
    """The top-level warning said "AutoConfig.from_pretrained and from_pretrained raise AttributeError ... unless
    from_pretrained is given a real dtype", as if AutoConfig raised whatever it is given: given dtype=, it loads
    too (checked below). Several fields were listed "a", "b", "c" with no "and"."""
    import torch
    import transformers

    folder = tmp_path / "top"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**LLAMA, "dtype": "auto"}))
    with pytest.raises(AttributeError, match="has no attribute 'auto'"):
        transformers.AutoConfig.from_pretrained(folder)
    assert transformers.AutoConfig.from_pretrained(folder, dtype=torch.float16).dtype == torch.float16
    code, data = run_json("plan-devices", folder / "config.json", "--gpu", "1GB")
    assert code == 0
    assert [line for line in data["warnings"] if '"auto"' in line][0].split(" cannot read: ")[1].startswith(
        "AutoConfig.from_pretrained and from_pretrained raise AttributeError (module 'torch' has no attribute "
        "'auto') unless they are given a real dtype, which replaces the field; planned at fp32")
    clip = {"model_type": "clip_vision_model", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "image_size": 32, "patch_size": 16, "dtype": "auto"}
    llava = {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"], "torch_dtype": "auto",
             "text_config": {**LLAMA, "dtype": None, "torch_dtype": "auto"}, "vision_config": clip}
    (folder / "config.json").write_text(json.dumps(llava))
    code, data = run_json("plan-devices", folder / "config.json", "--gpu", "1GB")
    assert code == 0 and data["model_class"] == "LlavaForConditionalGeneration"
    line = [line for line in data["warnings"] if '"auto"' in line][0]
    assert line.startswith('config.json sets "torch_dtype": "auto", "text_config.torch_dtype": "auto" and '
                           '"vision_config.dtype": "auto", which transformers ')
    assert line.endswith("whatever dtype they are given; planned at fp32 (no weights were read; --dtype plans "
                         'another); set "torch_dtype", "text_config.torch_dtype" and "vision_config.dtype" to the '
                         "weights' dtype in config.json (or remove them) to load it")


def test_a_sub_config_without_model_type_whose_dtype_is_auto_is_planned(tmp_path: Path) -> None:
    """A hand-written llava `text_config` without `model_type` (LlavaConfig builds it as llama's all the same) and
    `"dtype": "auto"` was refused ("config.json cannot build a 'llava' config (AttributeError: module 'torch' has no
    attribute 'auto')"), while the same sub-config with a model_type was planned with the fix named."""
    import torch
    import transformers

    folder = tmp_path / "llava"
    folder.mkdir()
    text = {k: v for k, v in LLAMA.items() if k not in ("model_type", "architectures")} | {"dtype": "auto"}
    clip = {"model_type": "clip_vision_model", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "image_size": 32, "patch_size": 16}
    config = {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"], "dtype": "float32",
              "text_config": text, "vision_config": clip}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(AttributeError, match="has no attribute 'auto'"):
        transformers.AutoConfig.from_pretrained(folder, dtype=torch.float32)
    code, data = run_json("plan-devices", folder / "config.json", "--gpu", "1GB")
    assert code == 0 and data["built_from"] == "config"
    line = [line for line in data["warnings"] if '"auto"' in line]
    assert len(line) == 1 and line[0].startswith('config.json sets "text_config.dtype": "auto", which transformers ')
    assert 'set "text_config.dtype" to the weights\' dtype in config.json (or remove it) to load it' in line[0]
    del text["dtype"]
    (folder / "config.json").write_text(json.dumps(config))
    fixed = run_json("plan-devices", folder / "config.json", "--gpu", "1GB")[1]
    assert (fixed["num_params"], fixed["weights_bytes"]) == (data["num_params"], data["weights_bytes"])


@pytest.mark.parametrize("name", ["model.onnx_data", "model.onnx.data"])
def test_an_onnx_external_data_file_is_named_with_its_next_step(tmp_path: Path, name: str) -> None:
    """An ONNX export over 2 GB keeps its weights beside model.onnx, in model.onnx_data (Optimum) or model.onnx.data
    (torch.onnx.export): given that file, inspect said "not a safetensors file nor a PyTorch pickle (zip or
    legacy)", while model.onnx itself got the next step."""
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * 4)
    result = run_cli("inspect", path)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        f"error: {path}: this is an ONNX model's external data (the raw tensor bytes its .onnx file locates by "
        "offset); weightdoctor reads safetensors and PyTorch (torch.save) checkpoints only; onnx.load of the .onnx "
        "file beside it reads them as that model's initializers (onnx.numpy_helper.to_array of each tensor in "
        "onnx.load(path).graph.initializer)")
