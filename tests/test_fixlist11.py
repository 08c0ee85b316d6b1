"""Fix list 11: a sub-config's dtype "auto", FP8 labels, --revision with a trailing slash, next steps for ONNX and
Keras files, hostile user regexes, check-dtype --sample totals, GPTQModel's `dynamic` overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_cli, run_json

# Tiny configs: built on the meta device, no weights needed.
LLAMA = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 64}
CLIP_VISION = {"model_type": "clip_vision_model", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
               "num_attention_heads": 2, "image_size": 32, "patch_size": 16}


def _llava(tmp_path: Path, text_dtype: str) -> Path:
    folder = tmp_path / f"llava-{text_dtype}"
    folder.mkdir()
    config = {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"], "dtype": "float32",
              "text_config": {**LLAMA, "dtype": text_dtype}, "vision_config": CLIP_VISION}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_sub_config_dtype_of_auto_is_planned_like_a_top_level_one(tmp_path: Path) -> None:
    """llava's `text_config.dtype: "auto"` was refused in one line (exit 2: "config.json cannot build a 'llava'
    config"), or planned from the tensors, while the same value at the top level was planned from the config with a
    warning. Both are now planned from the config, each warning saying truthfully what from_pretrained does: a
    real dtype given to it replaces a top-level "auto", nothing saves a sub-config's."""
    import torch
    import transformers

    folder = _llava(tmp_path, "auto")
    # The claims, checked against the installed transformers.
    with pytest.raises(AttributeError, match="has no attribute 'auto'"):
        transformers.AutoConfig.from_pretrained(folder, dtype=torch.float32)
    code, data = run_json("plan-devices", folder / "config.json", "--gpu", "1GB")
    assert code == 0 and data["built_from"] == "config"
    assert data["model_class"] == "LlavaForConditionalGeneration" and data["dtype"] == "fp32"
    auto = [line for line in data["warnings"] if '"auto"' in line]
    assert auto == [
        'config.json sets "text_config.dtype": "auto", which transformers ' + transformers.__version__
        + " cannot read: AutoConfig.from_pretrained and from_pretrained raise AttributeError (module 'torch' has no "
        "attribute 'auto') whatever dtype they are given; planned at fp32 (no weights were read; --dtype plans "
        "another); set \"text_config.dtype\" to the weights' dtype in config.json (or remove it) to load it"]
    # The plan is the model once the field is fixed.
    fixed = _llava(tmp_path, "float32")
    same = run_json("plan-devices", fixed / "config.json", "--gpu", "1GB")[1]
    assert (same["num_params"], same["weights_bytes"]) == (data["num_params"], data["weights_bytes"])
    assert not [line for line in same["warnings"] if '"auto"' in line]


def test_a_top_level_dtype_auto_loads_when_from_pretrained_is_given_a_dtype(tmp_path: Path) -> None:
    """The top-level warning said from_pretrained raises "whatever dtype it is given": transformers 5.25 loads such
    a checkpoint with dtype=torch.float32 (the argument replaces the field)."""
    import torch
    import transformers
    from safetensors.torch import save_file

    folder = tmp_path / "top"
    folder.mkdir()
    config = transformers.LlamaConfig(**{k: v for k, v in LLAMA.items() if k != "model_type"})
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({**LLAMA, "architectures": ["LlamaForCausalLM"],
                                                    "dtype": "auto"}))
    with pytest.raises(AttributeError, match="has no attribute 'auto'"):
        transformers.AutoModelForCausalLM.from_pretrained(folder)
    assert transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).dtype == torch.float32
    code, data = run_json("plan-devices", folder, "--gpu", "1GB")
    assert code == 0 and data["dtype"] == "fp32"
    auto = [line for line in data["warnings"] if '"auto"' in line]
    assert len(auto) == 1 and "whatever dtype" not in auto[0]
    assert "unless they are given a real dtype (dtype=torch.float32 replaces the field)" in auto[0]


def _quantized_folder(tmp_path: Path, name: str, quantization: dict[str, object]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    config = {**LLAMA, "architectures": ["LlamaForCausalLM"], "dtype": "bfloat16",
              "quantization_config": quantization}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _compressed_tensors_8bit(kind: str) -> dict[str, object]:
    return {"quant_method": "compressed-tensors", "quantization_status": "compressed", "ignore": ["lm_head"],
            "format": "float-quantized" if kind == "float" else "int-quantized",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                "num_bits": 8, "type": kind, "symmetric": True, "strategy": "channel"}}}}


@pytest.mark.parametrize(("name", "quantization", "how"), [
    ("ct-fp8", _compressed_tensors_8bit("float"), "compressed-tensors, 8-bit"),
    ("quanto-fp8", {"quant_method": "quanto", "weights": "float8", "activations": None}, "quanto, 8-bit"),
])
def test_fp8_quantized_checkpoints_are_labelled_float8_not_int8(
        tmp_path: Path, name: str, quantization: dict[str, object], how: str) -> None:
    """FP8 compressed-tensors (float-quantized) and optimum-quanto float8 weights were labelled int8 in the dtype
    line, the JSON `dtype` and the warning (their one byte a weight was right): they are float8_e4m3fn."""
    code, data = run_json("plan-devices", _quantized_folder(tmp_path, name, quantization), "--gpu", "1GB")
    assert code == 0 and data["dtype"] == "float8_e4m3fn"
    assert f"the config quantizes the weights ({how}): planned as float8_e4m3fn; --dtype overrides" \
        in data["warnings"]
    assert not [line for line in data["warnings"] if "int8" in line]
    human = run_cli("plan-devices", _quantized_folder(tmp_path, name + "-again", quantization), "--gpu", "1GB")
    assert "  dtype float8_e4m3fn · " in human.stdout
    # The bytes are an int8 checkpoint's: one byte a weight.
    int8 = _quantized_folder(tmp_path, name + "-int8", _compressed_tensors_8bit("int"))
    code, same = run_json("plan-devices", int8, "--gpu", "1GB")
    assert same["dtype"] == "int8" and same["weights_bytes"] == data["weights_bytes"]
    assert "the config quantizes the weights (compressed-tensors, 8-bit): planned as int8; --dtype overrides" \
        in same["warnings"]


def test_a_revision_with_a_trailing_slash_reads_a_repo_id_as_it_reads_its_cache_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--revision main/` (a shell's completion of refs/main) read a Hub cache folder at refs/main but, for the
    repo id, said "revision 'main/' of 'org/moving' is not ... in the Hugging Face cache". A git ref never ends in
    "/": both read `main` now, and the JSON names the revision so."""
    import torch
    from safetensors.torch import save

    from fixtures.hub_cache import commit_of, write_snapshot

    old, new = commit_of("old"), commit_of("new")
    weights = {"model.safetensors": save({"a": torch.zeros(2)})}
    write_snapshot(tmp_path, "org/moving", old, weights, refs=("v1",))
    write_snapshot(tmp_path, "org/moving", new, weights, refs=("main",))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    for args, revision, commit in ((["org/moving", "--revision", "main/"], "main", new),
                                   (["org/moving", "--revision", "v1/"], "v1", old),
                                   ([str(tmp_path / "models--org--moving"), "--revision", "v1/"], None, old)):
        result = run_cli("inspect", *args, "--json")
        assert result.exit_code == 0, result.stderr
        data = json.loads(result.stdout)
        assert (data["revision"], data["commit"]) == (revision, commit), args
    # A revision that is nothing but slashes is still no revision: the usual one line.
    result = run_cli("inspect", "org/moving", "--revision", "/", "--json")
    assert result.exit_code == 2 and "revision '/' of 'org/moving'" in result.stderr


@pytest.mark.parametrize(("name", "head", "kind", "step"), [
    ("model.onnx", b"\x08\x07\x12\x07pytorch", "an ONNX model",
     "; the onnx package reads its weights (import onnx, onnx.numpy_helper; {{t.name: onnx.numpy_helper.to_array(t) "
     "for t in onnx.load({path}).graph.initializer}})"),
    ("tf_model.h5", b"\x89HDF\r\n\x1a\n" + bytes(64), "an HDF5 file (Keras / TensorFlow .h5 weights)",
     "; import h5py; h5py.File({path}) holds its arrays by layer (visititems walks them), and "
     "safetensors.numpy.save_file writes them to read here; a transformers TensorFlow model's tf_model.h5 converts "
     "with transformers 4's from_pretrained(folder, from_tf=True) (TensorFlow installed; transformers 5 ignores "
     "from_tf)"),
    ("model.weights.h5", b"\x89HDF\r\n\x1a\n" + bytes(64), "an HDF5 file (Keras / TensorFlow .h5 weights)",
     "; import h5py; h5py.File({path}) holds its arrays by layer"),
])
def test_onnx_and_keras_files_are_refused_with_a_next_step(
        tmp_path: Path, name: str, head: bytes, kind: str, step: str) -> None:
    """`.onnx` and Keras / TF `.h5` files were refused with no next step ("this is an ONNX model; weightdoctor
    reads safetensors and PyTorch (torch.save) checkpoints only"). The step named is one that exists: the onnx
    package's initializers, h5py's datasets, transformers 4's from_tf (transformers 5 drops the argument unread)."""
    path = tmp_path / name
    path.write_bytes(head)
    result = run_cli("inspect", path)
    assert result.exit_code == 2 and result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line
    assert line.startswith(f"error: {path}: this is {kind}; weightdoctor reads safetensors and PyTorch "
                           f"(torch.save) checkpoints only{step.format(path=repr(str(path)))}")


def test_transformers_5_ignores_from_tf() -> None:
    """The claim the .h5 step makes of the installed transformers: from_pretrained pops from_tf unread."""
    import inspect

    import transformers
    from transformers import modeling_utils

    assert transformers.__version__.startswith("5.")
    assert '"from_tf", "from_flax"' in inspect.getsource(modeling_utils.PreTrainedModel.from_pretrained)


@pytest.fixture
def long_named(tmp_path: Path) -> Path:
    """Three tensors, one named by a 5,000-letter run: `(a+)+$` over it backtracks for hours."""
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "long.safetensors"
    save_file({"a" * 5000 + ".weight": torch.zeros(2), "model.layers.0.mlp.weight": torch.zeros(2),
               "model.norm.weight": torch.zeros(2)}, path)
    return path


UNBOUNDED = ("a repeat of a group that can match the same text more than one way (as (a+)+ or (a|aa)+ can), or a "
             "backreference, can backtrack for hours over one long tensor name, and Python's re cannot be stopped: "
             "not run; end each inner repeat with a character it cannot take ((\\w+\\.)+ runs) or use a character "
             "class ([\\w.]+ for (\\w+\\.?)+)")


@pytest.mark.parametrize("args", [
    ("inspect", "{src}", "--filter", "(a+)+$"),
    ("check-dtype", "{src}", "--filter", "(.+)+_never$"),
    ("inspect", "{src}", "--stats", "--hist", "(a|aa)+$"),
    ("convert", "{src}", "-o", "{out}", "--dtype", "fp16", "--keep-fp32", "(\\w+\\.?)+$#"),
    ("diff-keys", "{src}", "{src}", "--rename", "(a+)+$=x"),
])
def test_a_user_regex_without_a_backtracking_bound_is_refused_before_it_runs(
        long_named: Path, tmp_path: Path, args: tuple[str, ...]) -> None:
    """A catastrophic user pattern ran over every tensor name: `--filter '(a+)+$'` over a 5,000-letter name did not
    return in 20 s (Python's re cannot be interrupted). quantized.py's bound on config regexes now refuses it in one
    line, before any name is matched; --keep-fp32 and --rename alike."""
    import time

    argv = [a.format(src=long_named, out=tmp_path / "out.safetensors") for a in args]
    start = time.perf_counter()
    result = run_cli(*argv)
    assert time.perf_counter() - start < 10
    option, pattern = argv[-2], argv[-1].removesuffix("=x")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip().endswith(f"{option} {pattern!r}: {UNBOUNDED}")
    assert "\n" not in result.stderr.strip()
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize(("pattern", "names"), [
    (r"layers\.\d+\.mlp", ["model.layers.0.mlp.weight"]),
    ("norm|mlp", ["model.layers.0.mlp.weight", "model.norm.weight"]),
    (r"(q|k|v)_proj|norm\.weight$", ["model.norm.weight"]),
    (r".*layers.*mlp.*weight", ["model.layers.0.mlp.weight"]),
    (r"(?i)^MODEL\.", ["model.layers.0.mlp.weight", "model.norm.weight"]),
])
def test_normal_filters_still_run_over_a_long_name(long_named: Path, pattern: str, names: list[str]) -> None:
    """Patterns of bounded backtracking, the usual ones, select as before."""
    code, data = run_json("inspect", long_named, "--filter", pattern)
    assert code == 0
    assert sorted(t["name"] for t in data["tensors"]) == names


@pytest.mark.parametrize("sample", [None, "16"])
def test_check_dtype_totals_mean_rel_error_is_over_the_values_read(tmp_path: Path, sample: str | None) -> None:
    """A float8_e4m3fn tensor casts exactly to fp16 and is not read (`read: false`), yet the totals' mean_rel_error
    counted its values as measured non-zero values of error 0: beside one fp32 tensor of as many values, the mean
    came out half of what was measured. It is now the mean over the values read, the fp32 tensor's own."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path / "mixed.safetensors"
    save_file({"exact": (torch.rand(64) + 0.5).to(torch.float8_e4m3fn),
               "lossy": torch.rand(64, dtype=torch.float64).float() + 0.5}, path)
    code, data = run_json("check-dtype", path, "--target", "fp16", *(["--sample", sample] if sample else []))
    assert code == 0
    fp16 = data["targets"]["fp16"]
    rows = {row["name"]: row for row in fp16["tensors"]}
    assert rows["exact"]["read"] is False and rows["lossy"]["read"] is True
    measured = rows["lossy"]["mean_rel_error"]
    assert measured > 0
    assert fp16["mean_rel_error"] == pytest.approx(measured, rel=1e-9)
    # The other totals keep counting the tensor not read: its values are cast exactly, none changed.
    assert fp16["values"] == rows["exact"]["values"] + rows["lossy"]["values"]
    assert fp16["changed"] == rows["lossy"]["changed"]


def _gptq_dynamic(folder: Path, dynamic: dict[str, object]) -> int:
    """A 2-layer GPTQ Llama at 4 bits whose `dynamic` keeps attention at 8 bits and layer 1's MLP unquantized
    (fp16 `weight`), as GPTQModel saves such a recipe; returns the model's parameter count."""
    import torch
    from safetensors.torch import save_file

    hidden, inter, vocab, group = 256, 512, 64, 128
    folder.mkdir()
    config = {**LLAMA, "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": vocab,
              "architectures": ["LlamaForCausalLM"], "torch_dtype": "float16", "tie_word_embeddings": False,
              "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": False,
                                      "sym": True, "dynamic": dynamic}}
    (folder / "config.json").write_text(json.dumps(config))
    half = torch.float16
    tensors = {"model.embed_tokens.weight": torch.zeros(vocab, hidden, dtype=half),
               "lm_head.weight": torch.zeros(vocab, hidden, dtype=half),
               "model.norm.weight": torch.ones(hidden, dtype=half)}
    params = 2 * vocab * hidden + hidden

    def linear(name: str, inputs: int, outputs: int, bits: int | None) -> None:
        if bits is None:
            tensors[f"{name}.weight"] = torch.zeros(outputs, inputs, dtype=half)
            return
        tensors[f"{name}.qweight"] = torch.zeros(inputs * bits // 32, outputs, dtype=torch.int32)
        tensors[f"{name}.qzeros"] = torch.zeros(inputs // group, outputs * bits // 32, dtype=torch.int32)
        tensors[f"{name}.scales"] = torch.zeros(inputs // group, outputs, dtype=half)
        tensors[f"{name}.g_idx"] = torch.zeros(inputs, dtype=torch.int32)

    for layer in range(2):
        prefix = f"model.layers.{layer}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            linear(f"{prefix}.self_attn.{proj}", hidden, hidden, 8)
        mlp_bits = None if layer == 1 else 4
        linear(f"{prefix}.mlp.gate_proj", hidden, inter, mlp_bits)
        linear(f"{prefix}.mlp.up_proj", hidden, inter, mlp_bits)
        linear(f"{prefix}.mlp.down_proj", inter, hidden, mlp_bits)
        tensors[f"{prefix}.input_layernorm.weight"] = torch.ones(hidden, dtype=half)
        tensors[f"{prefix}.post_attention_layernorm.weight"] = torch.ones(hidden, dtype=half)
        params += 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden
    save_file(tensors, folder / "model.safetensors")
    return params


DYNAMIC = {r"-:model\.layers\.1\.mlp\..*": {}, r".*\.self_attn\..*": {"bits": 8, "group_size": 128}}


def test_gptqmodel_dynamic_bits_are_counted_per_layer_by_inspect(tmp_path: Path) -> None:
    """inspect counted every qweight at the top-level 4 bits: attention stored at 8 bits by a `dynamic` override
    (4 values an int32, not 8) came out as twice its parameters. Each layer now takes the first pattern that
    matches it, as GPTQModel reads them; a pattern with no backtracking bound leaves the count unknown."""
    params = _gptq_dynamic(tmp_path / "dyn", DYNAMIC)
    code, data = run_json("inspect", tmp_path / "dyn")
    assert code == 0
    assert data["quantized"]["method"] == "gptq" and data["quantized"]["parameters"] == params
    hostile = _gptq_dynamic(tmp_path / "hostile", {"(a+)+$": {"bits": 8}, **DYNAMIC})
    assert hostile == params
    code, data = run_json("inspect", tmp_path / "hostile")
    assert code == 0 and data["quantized"]["parameters"] is None


def test_plan_devices_warns_that_transformers_ignores_gptqmodel_dynamic(tmp_path: Path) -> None:
    """transformers 5.25's GPTQConfig drops `dynamic` (checked below), so from_pretrained builds every Linear of the
    blocks at 4 bits; the plan said nothing of the overrides it does not apply."""
    from transformers import GPTQConfig

    assert "dynamic" not in GPTQConfig.from_dict(
        {"quant_method": "gptq", "bits": 4, "dynamic": DYNAMIC}).to_dict_optimum()
    _gptq_dynamic(tmp_path / "dyn", DYNAMIC)
    code, data = run_json("plan-devices", tmp_path / "dyn", "--gpu", "1GB")
    assert code == 0 and data["dtype"] == "int4"
    import transformers

    assert ("quantization_config.dynamic holds GPTQModel's per-module overrides (2 patterns, 1 leaving modules "
            f"unquantized with '-:'), which transformers {transformers.__version__} does not read (its GPTQConfig "
            "drops `dynamic`): from_pretrained builds every Linear of the blocks at the top-level 4 bits, unlike "
            "what the checkpoint stores for the modules they name; GPTQModel's loader and vLLM honour them"
            ) in data["warnings"]
    _gptq_dynamic(tmp_path / "plain", {})
    assert not [line for line in run_json("plan-devices", tmp_path / "plain", "--gpu", "1GB")[1]["warnings"]
                if "dynamic" in line]
