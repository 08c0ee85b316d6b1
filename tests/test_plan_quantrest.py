"""quantrest: what `plan-devices --dtype int8 / int4` plans for the unquantized rest of a checkpoint.

Found: `--dtype int8|int4` of an unquantized checkpoint built the rest (embeddings, norms, lm_head, biases) at
float16, the rule older transformers releases had. transformers 5.25's from_pretrained defaults to dtype="auto" and
its bitsandbytes quantizers leave that dtype alone (`HfQuantizer.update_dtype` returns what it is given), so
`from_pretrained(path, quantization_config=BitsAndBytesConfig(load_in_4bit=True), device_map="auto")` of a float32
checkpoint holds the rest at float32: the plan counted half its bytes, placed modules on GPUs that from_pretrained
offloads, estimated the KV cache at half its size, and the dtype ladder offered an int8 that does not fit.

The oracle is transformers' own from_pretrained, run up to the device map it computes (`from_pretrained_device_map`).
bitsandbytes needs CUDA and is not installed here, so a stand-in module gives its two Linear classes: transformers'
own code then resolves the dtype, swaps the Linear layers (`replace_with_bnb_linear`), sizes each parameter
(`Bnb4BitHfQuantizer.param_element_size`), keeps its 10% headroom and places the model. The bytes of the rest are
also counted here by hand from the weight file.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from fixtures.plan_devices import from_pretrained_device_map
from tests.helpers import run_json
from tests.test_plan_quantized4 import float32_cache_bytes

_QUANTIZED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _llama(folder: Path, dtype: torch.dtype) -> Path:
    """The tiny Llama of tests/test_third_party_layouts27 saved at `dtype`, its config saying so."""
    from safetensors.torch import save_file

    from tests.test_third_party_layouts27 import CONFIG, _llama_state_dict

    folder.mkdir(parents=True)
    save_file({name: tensor.to(dtype).contiguous() for name, tensor in _llama_state_dict().items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(CONFIG | {"torch_dtype": str(dtype).removeprefix("torch.")}))
    return folder


def _hand_counted(folder: Path, quantized_size: float, rest_size: int) -> tuple[int, int]:
    """(bytes of the quantized Linear weights, bytes of the rest) counted from the weight file's shapes: every
    attention and MLP projection at `quantized_size` a weight, everything else (embeddings, norms, the output
    embeddings bitsandbytes leaves alone) at `rest_size`."""
    from safetensors import safe_open

    quantized = rest = 0
    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        for name in handle.keys():  # noqa: SIM118 - safe_open is no mapping
            numel = handle.get_slice(name).get_shape()
            count = 1
            for size in numel:
                count *= size
            if name.endswith(tuple(f"{proj}.weight" for proj in _QUANTIZED)):
                quantized += int(count * quantized_size)
            else:
                rest += count * rest_size
    return quantized, rest


@pytest.fixture
def fake_bitsandbytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in for the bitsandbytes package: its Linear4bit / Linear8bitLt as plain nn.Linear subclasses (on the
    meta device they are shapes, which is all the planner sees of them), and the availability checks passed."""
    import transformers.integrations as integrations
    import transformers.integrations.bitsandbytes as bnb_integration
    import transformers.quantizers.quantizer_bnb_4bit as bnb4
    import transformers.quantizers.quantizer_bnb_8bit as bnb8

    class Linear4bit(torch.nn.Linear):
        def __init__(self, in_features: int, out_features: int, bias: bool = True, compute_dtype: Any = None,
                     **_: Any) -> None:
            super().__init__(in_features, out_features, bias)

    class Linear8bitLt(torch.nn.Linear):
        def __init__(self, in_features: int, out_features: int, bias: bool = True, **_: Any) -> None:
            super().__init__(in_features, out_features, bias)

    package = types.ModuleType("bitsandbytes")
    nn = types.ModuleType("bitsandbytes.nn")
    nn.Linear4bit, nn.Linear8bitLt = Linear4bit, Linear8bitLt  # type: ignore[attr-defined]
    package.nn = nn  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bitsandbytes", package)
    monkeypatch.setitem(sys.modules, "bitsandbytes.nn", nn)
    monkeypatch.setattr(bnb_integration, "bnb", package, raising=False)
    monkeypatch.setattr(bnb4, "is_bitsandbytes_available", lambda *args: True)
    monkeypatch.setattr(bnb8, "is_bitsandbytes_available", lambda *args: True)
    monkeypatch.setattr(integrations, "validate_bnb_backend_availability", lambda **kwargs: True)


def _from_pretrained(folder: Path, bits: int, max_memory: dict[int | str, int],
                     dtype: torch.dtype | None = None) -> tuple[dict[str, int | str], dict[str, int], set[torch.dtype]]:
    """(the map, transformers' own bytes of each module, the dtypes of the floating parameters) of
    `from_pretrained(folder, quantization_config=BitsAndBytesConfig(load_in_<bits>bit=True), device_map="auto",
    max_memory=...)`, with `dtype=` where given (else its default, "auto"). llm_int8_enable_fp32_cpu_offload is set
    so that the quantizer's check of the finished map (it refuses CPU or disk beside a GPU otherwise) lets it be
    recorded; with device_map="auto" (no dict) it changes nothing else."""
    import transformers.modeling_utils as modeling_utils
    from transformers import BitsAndBytesConfig
    from transformers.integrations.accelerate import compute_module_sizes

    seen: dict[str, Any] = {}
    original = modeling_utils._get_device_map

    def record(model: Any, device_map: Any, memory: Any, hf_quantizer: Any, *args: Any, **kwargs: Any) -> Any:
        seen["sizes"] = {name: int(size) for name, size in compute_module_sizes(model, hf_quantizer)[0].items()}
        seen["dtypes"] = {p.dtype for p in model.parameters() if p.is_floating_point()}
        return original(model, device_map, memory, hf_quantizer, *args, **kwargs)

    config = BitsAndBytesConfig(**{f"load_in_{bits}bit": True}, llm_int8_enable_fp32_cpu_offload=True)
    extra = {"dtype": dtype} if dtype is not None else {}
    modeling_utils._get_device_map = record
    try:
        placed = from_pretrained_device_map(folder, "auto", max_memory, quantization_config=config, **extra)
    finally:
        modeling_utils._get_device_map = original
    return placed, seen["sizes"], seen["dtypes"]


def _plan(folder: Path, dtype: str, max_memory: dict[int | str, int], *extra: str) -> tuple[int, dict[str, Any]]:
    gpus = [arg for key in sorted(k for k in max_memory if isinstance(k, int))
            for arg in ("--gpu", f"{max_memory[key]}B")]
    cpu = ["--cpu", f"{max_memory['cpu']}B"] if "cpu" in max_memory else []
    return run_json("plan-devices", str(folder), *gpus, *cpu, "--dtype", dtype, *extra)


@pytest.mark.parametrize(("stored", "bits"), [(torch.float32, 4), (torch.float32, 8), (torch.bfloat16, 4)],
                         ids=["float32-int4", "float32-int8", "bfloat16-int4"])
def test_the_rest_is_planned_at_the_dtype_from_pretrained_builds_it_at(
        tmp_path: Path, fake_bitsandbytes: None, stored: torch.dtype, bits: int) -> None:
    """`--dtype int4 / int8` counts the rest at the checkpoint's own dtype (float32 stays float32, bf16 stays bf16),
    as from_pretrained with a BitsAndBytesConfig builds it: the bytes match a count by hand and transformers' own,
    and the maps and each device's bytes match from_pretrained's on budgets that split the model over two GPUs and
    the CPU. The float32 checkpoint's rest was counted at 2 bytes, its map placed so."""
    folder = _llama(tmp_path / "m", stored)
    dtype = f"int{bits}"
    quantized, rest = _hand_counted(folder, 0.5 if bits == 4 else 1.0, stored.itemsize)
    code, whole = _plan(folder, dtype, {0: 10**9})
    assert code == 0 and whole["dtype"] == dtype
    assert whole["weights_bytes"] == quantized + rest, (whole["weights_bytes"], quantized, rest)
    _, sizes, dtypes = _from_pretrained(folder, bits, {0: 10**9})
    assert dtypes == {stored}
    assert whole["weights_bytes"] + whole["buffers_bytes"] == sizes[""], (whole["weights_bytes"], sizes[""])
    total = sizes[""]
    splits = 0
    for first, second in ((0.15, 0.5), (0.5, 0.5), (0.45, 0.7), (0.7, 0.45), (0.8, 0.3)):
        budgets: dict[int | str, int] = {0: int(total * first / 0.9), 1: int(total * second / 0.9), "cpu": 10**9}
        expected, _, _ = _from_pretrained(folder, bits, budgets)
        code, data = _plan(folder, dtype, budgets)
        placed = {key: (int(value) if str(value).isdigit() else value) for key, value in data["device_map"].items()}
        assert placed == expected, (budgets, placed, expected)
        used = {device["key"]: device["used_bytes"] for device in data["devices"]}
        for key in (0, 1, "cpu"):
            assert used[key] == sum(sizes[module] for module, where in expected.items() if where == key), key
        splits += len(set(expected.values())) > 1
    assert splits >= 3


def test_the_kv_cache_of_a_float32_int4_plan_is_float32(tmp_path: Path) -> None:
    """A float32 model quantized by bitsandbytes computes, and caches keys and values, at float32 (its rest's dtype,
    which feeds every Linear): the estimate was at float16, half the bytes. The oracle: the cache a real float32 tiny
    Llama of that config fills for 64 tokens; a bf16 checkpoint's stays bfloat16, half that."""
    folder = _llama(tmp_path / "f32", torch.float32)
    config = json.loads((folder / "config.json").read_text())
    cached = float32_cache_bytes(config, 64)
    code, data = _plan(folder, "int4", {0: 10**9}, "--kv-cache", "--seq-len", "64")
    assert code == 0 and data["kv_cache"]["dtype"] == "float32", data["kv_cache"]
    assert data["kv_cache"]["total_bytes"] == cached, (data["kv_cache"], cached)
    half = _llama(tmp_path / "bf16", torch.bfloat16)
    code, data = _plan(half, "int8", {0: 10**9}, "--kv-cache", "--seq-len", "64")
    assert code == 0 and data["kv_cache"]["dtype"] == "bfloat16" and data["kv_cache"]["total_bytes"] == cached // 2


def test_the_int8_rung_of_a_float32_plan_is_offered_where_from_pretrained_fits_it(
        tmp_path: Path, fake_bitsandbytes: None) -> None:
    """The dtype ladder of a float32 model planned at fp32 offers `--dtype int8` only on a GPU where
    from_pretrained with BitsAndBytesConfig(load_in_8bit=True) places every module: its rung counted the rest at
    float16, so it was offered on GPUs too small for the float32 rest (from_pretrained sends modules to the CPU)."""
    folder = _llama(tmp_path / "m", torch.float32)
    _, sizes, _ = _from_pretrained(folder, 8, {0: 10**9})
    seen = set()
    total = sizes[""]
    for share in (0.7, 0.8, 0.9, 1.0, 1.05, 1.1, 1.15, 1.2):  # all below the bf16 model: no float rung fits
        gpu = int(total * share)
        expected, _, _ = _from_pretrained(folder, 8, {0: gpu, "cpu": 10**9})
        code, data = run_json("plan-devices", str(folder), "--gpu", f"{gpu}B", "--cpu", "1GB")
        assert data["dtype"] == "fp32" and data["verdict"] != "fits-on-gpus", (share, data["verdict"])
        rungs = [s["dtype"] for s in data["suggestions"] if s["change"] == "dtype"]
        fits = set(expected.values()) == {0}
        assert ("int8" in rungs) == fits, (share, rungs, expected)
        seen.add(fits)
    assert seen == {True, False}


def test_dtype_float16_is_said_to_fit_only_where_from_pretrained_then_fits(
        tmp_path: Path, fake_bitsandbytes: None) -> None:
    """The warning names the float32 rest and its bytes (counted by hand) on every --dtype int4 plan of a float32
    checkpoint; where the plan offloads, it says dtype=torch.float16 would fit the model on the GPU only where
    from_pretrained given dtype=torch.float16 too places every module there."""
    folder = _llama(tmp_path / "m", torch.float32)
    _, rest = _hand_counted(folder, 0.5, 4)
    _, sizes, _ = _from_pretrained(folder, 4, {0: 10**9})
    _, half_sizes, half_dtypes = _from_pretrained(folder, 4, {0: 10**9}, dtype=torch.float16)
    assert half_dtypes == {torch.float16} and half_sizes[""] < sizes[""]
    said_fits = set()
    for share in (0.6, 0.75, 0.85, 0.95, 1.05, 1.2, 1.5):
        gpu = int(sizes[""] * share)
        auto, _, _ = _from_pretrained(folder, 4, {0: gpu, "cpu": 10**9})
        half, _, _ = _from_pretrained(folder, 4, {0: gpu, "cpu": 10**9}, dtype=torch.float16)
        code, data = _plan(folder, "int4", {0: gpu, "cpu": 10**9})
        rest_said = [w for w in data["warnings"] if "the unquantized rest" in w]
        assert len(rest_said) == 1, data["warnings"]
        from weightdoctor.units import format_bytes

        assert "is planned at float32" in rest_said[0] and format_bytes(rest) in rest_said[0], rest_said
        claims = "dtype=torch.float16" in rest_said[0]
        assert claims == (set(auto.values()) != {0} and set(half.values()) == {0}), (share, auto, half, rest_said)
        said_fits.add(claims)
    assert said_fits == {True, False}


def test_a_bf16_checkpoint_gets_no_rest_warning(tmp_path: Path) -> None:
    """A bf16 checkpoint's rest is 16-bit already, as older releases planned it: nothing to say."""
    folder = _llama(tmp_path / "m", torch.bfloat16)
    code, data = _plan(folder, "int4", {0: 10**9})
    assert code == 0 and not [w for w in data["warnings"] if "unquantized rest" in w], data["warnings"]


def test_a_config_without_dtype_says_the_rest_is_at_torchs_default(tmp_path: Path) -> None:
    """A config.json alone that names no dtype: the int8 plan's rest is at float32 (torch's default, as the plan
    without --dtype is), and the warning says that from_pretrained takes the weights' dtype instead."""
    from tests.test_third_party_layouts27 import CONFIG

    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({k: v for k, v in CONFIG.items() if k != "torch_dtype"}))
    weights = _llama(tmp_path / "f32", torch.float32)
    _, rest = _hand_counted(weights, 1.0, 4)
    quantized, _ = _hand_counted(weights, 1.0, 4)
    code, data = _plan(folder, "int8", {0: 10**9})
    assert code == 0 and data["weights_bytes"] == quantized + rest
    assert any("no weights were read: the unquantized rest of this int8 plan" in w for w in data["warnings"])
    assert any("torch's default: nothing read says the checkpoint's dtype" in w for w in data["warnings"])


def test_the_gpu_size_suggested_for_an_int4_plan_is_the_least_from_pretrained_fits(
        tmp_path: Path, fake_bitsandbytes: None) -> None:
    """`--gpu SIZE` suggested for a `--dtype int4` plan of a float32 checkpoint (whole KB here) is the least size
    on which from_pretrained with BitsAndBytesConfig(load_in_4bit=True) places every module on the GPU: counted with
    the rest at float16, it was a size from_pretrained offloads on."""
    folder = _llama(tmp_path / "m", torch.float32)
    _, sizes, _ = _from_pretrained(folder, 4, {0: 10**9})
    code, data = _plan(folder, "int4", {0: sizes[""] // 2, "cpu": 10**9})
    assert data["verdict"] != "fits-on-gpus"
    [suggested] = [s for s in data["suggestions"] if s["change"] == "gpu-size"]
    gpu = suggested["gpus"][0]
    assert gpu % 1000 == 0, suggested
    fits, _, _ = _from_pretrained(folder, 4, {0: gpu, "cpu": 10**9})
    short, _, _ = _from_pretrained(folder, 4, {0: gpu - 1000, "cpu": 10**9})
    assert set(fits.values()) == {0} and set(short.values()) != {0}, (gpu, fits, short)
