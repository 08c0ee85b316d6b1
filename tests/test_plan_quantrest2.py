"""quantrest2: plan-devices' dtype advice for the float32 rest of an int8 / int4 model, what round quantrest left.

Found, each through the CLI on the tiny seeded Llama of tests/test_plan_quantrest (float32, 361.79 KB):
- planned at fp32 on a GPU too small for `--dtype int4` with its rest at float32 (as from_pretrained(dtype="auto")
  builds it since quantrest) but large enough with the rest at float16, the suggestions offered no dtype at all
  (only a larger GPU): no flag plans int4 with a float16 rest, and no rung said it. The rung is now offered as the
  from_pretrained call that loads it so, which the tests here run (bitsandbytes' Linear classes stood in for).
- a checkpoint its config quantizes (bitsandbytes 4-bit) saved at float32 that offloads, but fits with its rest at
  float16, got no word that dtype=torch.float16 fits it (the unquantized --dtype int4 plan gets that hint).

The oracles are transformers' own: from_pretrained run up to the map it computes (`from_pretrained_device_map`),
and for the pre-quantized checkpoint its Bnb4Bit quantizer over the meta model with `_get_device_map`, as
tests/test_plan_quantized4 checks it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import run_json
from tests.test_plan_quantrest import _from_pretrained, _llama, fake_bitsandbytes  # noqa: F401 - a fixture

_HALF_REST = "dtype-float16-rest"


class _Stop(Exception):
    """Raised once from_pretrained has computed its map."""


def _run_printed_call(call: str) -> tuple[dict[str, int | str], set[torch.dtype]]:
    """Run the printed line of Python as it is, up to the map from_pretrained computes: (the map, the dtypes of the
    floating parameters of the model it built)."""
    import transformers.modeling_utils as modeling_utils

    seen: dict[str, Any] = {}
    original = modeling_utils._get_device_map

    def record(model: Any, *args: Any, **kwargs: Any) -> Any:
        seen["map"] = original(model, *args, **kwargs)
        seen["dtypes"] = {p.dtype for p in model.parameters() if p.is_floating_point()}
        raise _Stop

    modeling_utils._get_device_map = record
    try:
        with pytest.raises(_Stop):
            exec(call, {})  # noqa: S102 - the line the report tells the user to paste
    finally:
        modeling_utils._get_device_map = original
    return seen["map"], seen["dtypes"]


def _on_gpu(placed: dict[str, int | str]) -> bool:
    return set(placed.values()) == {0}


def test_int4_with_a_float16_rest_is_offered_as_a_call_that_fits(
        tmp_path: Path, fake_bitsandbytes: None) -> None:  # noqa: F811
    """A float32 model planned at fp32: where neither `--dtype int8` nor `--dtype int4` fits the GPU (their rest at
    float32, as from_pretrained builds it) but int8 or int4 with the rest at float16 does, as from_pretrained given
    dtype=torch.float16 places it, the suggestions offer that rung (the first that fits, int8 before int4) as a
    from_pretrained call; run as printed it places every module on the GPU. Nowhere else is it offered."""
    folder = _llama(tmp_path / "m", torch.float32)
    _, sizes, _ = _from_pretrained(folder, 4, {0: 10**9})
    offered = []
    for share in (0.55, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.6):
        gpu = int(sizes[""] * share)
        budgets: dict[int | str, int] = {0: gpu, "cpu": 10**9}
        fits = {(bits, half): _on_gpu(_from_pretrained(folder, bits, budgets,
                                                       dtype=torch.float16 if half else None)[0])
                for bits in (8, 4) for half in (False, True)}
        code, data = run_json("plan-devices", str(folder), "--gpu", f"{gpu}B", "--cpu", "1GB")
        assert data["dtype"] == "fp32" and data["verdict"] != "fits-on-gpus", (share, data["verdict"])
        rungs = [s for s in data["suggestions"] if s["change"] in ("dtype", _HALF_REST)]
        # int8 with a float16 rest is offered before int4 with a float32 rest where both fit (plan84)
        expected = None if fits[(8, False)] else "int8" if fits[(8, True)] else \
            "int4" if fits[(4, True)] and not fits[(4, False)] else None
        half = [s for s in rungs if s["change"] == _HALF_REST]
        assert [s["dtype"] for s in half] == ([expected] if expected else []), (share, rungs, fits)
        if not half:
            continue
        [rung] = half
        assert rung["verdict"] == "fits-on-gpus" and rung["gpus"] == [gpu]
        call = rung["description"].split("load it so: ", 1)[1]
        placed, dtypes = _run_printed_call(call)
        assert _on_gpu(placed) and dtypes == {torch.float16}, (share, placed, dtypes)
        offered.append(rung["dtype"])
        # the same rung in the text report, the call printed whole on its line
        from tests.helpers import run_cli

        result = run_cli("plan-devices", str(folder), "--gpu", f"{gpu}B", "--cpu", "1GB")
        assert call in result.stdout.replace("\n", ""), result.stdout
    assert "int4" in offered, offered


def test_a_plan_that_fits_at_int4_keeps_the_plain_rung(tmp_path: Path) -> None:
    """Where `--dtype int4` fits as it is planned (rest at float32), the rung is `--dtype int4` itself, and no
    int4 float16-rest call is offered beside it (since plan84 an int8 one that fits is offered before it)."""
    folder = _llama(tmp_path / "m", torch.float32)
    code, data = run_json("plan-devices", str(folder), "--gpu", "140KB", "--cpu", "1GB")
    rungs = [(s["change"], s["dtype"]) for s in data["suggestions"] if s["change"] in ("dtype", _HALF_REST)]
    code, int4 = run_json("plan-devices", str(folder), "--gpu", "140KB", "--cpu", "1GB", "--dtype", "int4")
    assert int4["verdict"] == "fits-on-gpus" and rungs == [(_HALF_REST, "int8"), ("dtype", "int4")], rungs


def _prequantized_oracle(folder: Path, dtype: torch.dtype, budgets: dict[int | str, int],
                         quantized: set[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, int | str]:
    """The map transformers' Bnb4Bit quantizer and planner compute for the bnb 4-bit checkpoint built at `dtype`
    (from_pretrained(dtype="auto") of a float32 config: float32; given dtype=torch.float16: float16)."""
    from transformers.integrations.accelerate import _get_device_map
    from transformers.quantizers.auto import AutoHfQuantizer, AutoQuantizationConfig

    from tests.test_plan_quantized4 import _meta_model_at

    config = json.loads((folder / "config.json").read_text())
    model = _meta_model_at(config, dtype)
    quantizer = AutoHfQuantizer.from_config(AutoQuantizationConfig.from_dict(config["quantization_config"]),
                                            pre_quantized=True)
    assert quantizer.update_dtype(torch.float16) == torch.float16  # what dtype=torch.float16 then builds
    monkeypatch.setattr(quantizer, "param_needs_quantization",
                        lambda model, name, **kwargs: name.removesuffix(".weight") in quantized
                        and name.endswith(".weight"))
    monkeypatch.setattr(quantizer, "validate_environment", lambda *args, **kwargs: None)
    return dict(_get_device_map(model, "auto", dict(budgets), quantizer))


def test_a_float32_bnb4_checkpoint_is_told_that_float16_fits_where_it_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bitsandbytes 4-bit checkpoint saved at float32 is planned with its rest at float32; where that offloads
    and transformers' quantizer and planner place every module on the GPU with the model built at float16, a
    warning says that dtype=torch.float16 fits it (it said nothing); where it fits already, or does not fit at
    float16 either, nothing is said. The map itself is from_pretrained's."""
    from tests.test_plan_quantized4 import _float32_quantized

    folder, quantized = _float32_quantized(tmp_path / "bnb4", "bnb4")
    said = set()
    for gpu in (60_000, 80_000, 100_000, 115_000, 140_000):
        budgets: dict[int | str, int] = {0: gpu, "cpu": 10**9}
        auto = _prequantized_oracle(folder, torch.float32, budgets, quantized, monkeypatch)
        half = _prequantized_oracle(folder, torch.float16, budgets, quantized, monkeypatch)
        code, data = run_json("plan-devices", str(folder), "--gpu", f"{gpu}B", "--cpu", "1GB")
        assert data["dtype"] == "int4" and data["device_map"] == auto, (gpu, data["device_map"], auto)
        hints = [w for w in data["warnings"] if "passing dtype=torch.float16" in w]
        claims = bool(hints)
        assert claims == (not _on_gpu(auto) and _on_gpu(half)), (gpu, auto, half, hints)
        if claims:
            assert "is planned at float32" in hints[0] and "the model then fits on the GPUs" in hints[0], hints
        said.add(claims)
    assert said == {True, False}


def _t5(folder: Path, dtype: torch.dtype) -> Path:
    """A tiny seeded T5 (its class keeps `wo` in float32: `_keep_in_fp32_modules`) saved at `dtype`."""
    import transformers

    config = transformers.T5Config(vocab_size=64, d_model=64, d_kv=16, d_ff=512, num_layers=3, num_decoder_layers=3,
                                   num_heads=4, architectures=["T5ForConditionalGeneration"])
    torch.manual_seed(0)
    transformers.T5ForConditionalGeneration(config).to(dtype).save_pretrained(folder)
    return folder


def _t5_from_pretrained(folder: Path, bits: int) -> tuple[dict[str, int | str], dict[str, int], dict[str, Any]]:
    """(map, transformers' bytes of each module, {name: dtype it loads at} of each weight the dtype plan upcasts and
    the quantizer leaves unquantized) of from_pretrained with BitsAndBytesConfig(load_in_<bits>bit=True)."""
    import transformers.modeling_utils as modeling_utils
    from transformers import BitsAndBytesConfig
    from transformers.core_model_loading import build_glob_alternation
    from transformers.integrations.accelerate import compute_module_sizes

    from fixtures.plan_devices import from_pretrained_device_map

    seen: dict[str, Any] = {}
    original = modeling_utils._get_device_map

    def record(model: Any, device_map: Any, memory: Any, hf_quantizer: Any, *args: Any, **kwargs: Any) -> Any:
        seen["sizes"] = {name: int(size) for name, size in compute_module_sizes(model, hf_quantizer)[0].items()}
        built = next(p.dtype for p in model.parameters() if p.is_floating_point())
        plan = model._get_dtype_plan(built)  # what from_pretrained loads each matching weight at
        upcast: dict[str, Any] = {}
        if plan:
            pattern, by_group, _ = build_glob_alternation(list(plan))
            for name, param in model.named_parameters():
                found = pattern.search(name)
                module = model.get_submodule(name.rpartition(".")[0])
                if found and type(module) is torch.nn.Linear and param.dtype != plan[by_group[found.lastgroup]]:
                    upcast[name] = (param.numel(), param.element_size(), plan[by_group[found.lastgroup]])
        seen["upcast"] = upcast
        return original(model, device_map, memory, hf_quantizer, *args, **kwargs)

    modeling_utils._get_device_map = record
    try:
        placed = from_pretrained_device_map(folder, "auto", {0: 10**9}, quantization_config=BitsAndBytesConfig(
            **{f"load_in_{bits}bit": True}))
    finally:
        modeling_utils._get_device_map = original
    return placed, seen["sizes"], seen["upcast"]


@pytest.mark.parametrize("bits", [8, 4])
def test_keep_in_fp32_modules_of_a_float16_t5_at_int8_int4_are_said(
        tmp_path: Path, fake_bitsandbytes: None, bits: int) -> None:  # noqa: F811
    """A float16 T5 planned at --dtype int8 / int4: bitsandbytes leaves its `wo` Linear layers unquantized
    (`_keep_in_fp32_modules` are among the modules not converted), counted at float16 in the map, and from_pretrained
    loads them in float32 (its dtype plan at float16): the plan's bytes are from_pretrained's, and the warning the
    fp16 plan gives now says so with the bytes the load adds (it said nothing)."""
    from weightdoctor.units import format_bytes

    folder = _t5(tmp_path / "t5", torch.float16)
    placed, sizes, upcast = _t5_from_pretrained(folder, bits)
    assert len(upcast) == 6 and all(size == 2 and kind == torch.float32 for _, size, kind in upcast.values())
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB", "--dtype", f"int{bits}")
    assert code == 0 and data["weights_bytes"] + data["buffers_bytes"] == sizes[""], (data["weights_bytes"], sizes)
    extra = sum(numel * 2 for numel, _, _ in upcast.values())  # float16 -> float32: as much again
    [said] = [w for w in data["warnings"] if "_keep_in_fp32_modules" in w]
    assert f"keeps 6 tensors of wo in float32 at int{bits}" in said and format_bytes(extra) in said, said


def test_a_bfloat16_t5_at_int8_keeps_wo_at_bfloat16_unwarned(tmp_path: Path, fake_bitsandbytes: None) -> None:  # noqa: F811
    """At bfloat16 transformers 5.25 upcasts only `_keep_in_fp32_modules_strict` (T5 has none): `wo` stays
    unquantized at bfloat16, counted so by both planners, and nothing is said."""
    folder = _t5(tmp_path / "t5", torch.bfloat16)
    _, sizes, upcast = _t5_from_pretrained(folder, 8)
    assert upcast == {}
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB", "--dtype", "int8")
    assert code == 0 and data["weights_bytes"] + data["buffers_bytes"] == sizes[""]
    assert not [w for w in data["warnings"] if "_keep_in_fp32_modules" in w], data["warnings"]


def _seq2seq(folder: Path, kind: str) -> Path:
    """A tiny seeded float32 T5 or BART, saved."""
    import transformers

    torch.manual_seed(0)
    if kind == "t5":
        config = transformers.T5Config(vocab_size=64, d_model=64, d_kv=16, d_ff=512, num_layers=3,
                                       num_decoder_layers=3, num_heads=4, decoder_start_token_id=0,
                                       architectures=["T5ForConditionalGeneration"])
        model: Any = transformers.T5ForConditionalGeneration(config)
    else:
        config = transformers.BartConfig(vocab_size=64, d_model=64, encoder_layers=3, decoder_layers=3,
                                         encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=256,
                                         decoder_ffn_dim=256, max_position_embeddings=64,
                                         architectures=["BartForConditionalGeneration"])
        model = transformers.BartForConditionalGeneration(config)
    model.save_pretrained(folder)
    return folder


def _bytes_streamed(folder: Path, device_map: dict[str, int | str], new_tokens: int, tmp_path: Path) -> int:
    """The bytes accelerate's hooks copy to the execution device while generate() makes `new_tokens` tokens, on the
    map planned: for each call of a hook, only the tensors its pre_forward loads (plan84's measure). It counted every
    stored weight under the hook's prefix, too much for a hook on a module with parameters of its own and children
    (each child has its own hook) (plan85)."""
    from tests.test_plan84 import _bytes_loaded

    return _bytes_loaded(folder, device_map, new_tokens, tmp_path)


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_an_encoder_decoders_offload_is_said_per_input_and_per_token_as_accelerate_streams_it(
        tmp_path: Path, kind: str) -> None:
    """An encoder-decoder that generates, with layers of both its encoder and its decoder offloaded: accelerate's
    hooks stream the encoder's offloaded weights (and the decoder's cross-attention key / value projections, whose
    outputs the cache keeps) once per input and the rest of the decoder's once per generated token. Measured by
    counting the bytes the hooks load in generate() for 3 and 6 new tokens (bytes = per input + tokens x per
    token): the report said all 919.68 KB "for every generated token"."""
    folder = _seq2seq(tmp_path / kind, kind)
    code, whole = run_json("plan-devices", str(folder), "--gpu", "1GB")
    total = whole["weights_bytes"] + whole["buffers_bytes"]
    code, data = run_json("plan-devices", str(folder), "--gpu", f"{int(total * 0.35)}B", "--cpu", "1GB")
    placed = data["device_map"]
    offloaded = [name for name, where in placed.items() if where == "cpu"]
    assert any("encoder" in name for name in offloaded) and any("decoder" in name for name in offloaded), placed
    three = _bytes_streamed(folder, placed, 3, tmp_path)
    six = _bytes_streamed(folder, placed, 6, tmp_path)
    per_token = (six - three) // 3
    per_input = three - 3 * per_token
    off = data["offload"]
    # Buffers of offloaded modules (BART's final_logits_bias) accelerate keeps on the execution device
    # (offload_buffers=False, from_pretrained's default): the hooks load none of them, and since plan84 the report
    # says them apart, not per token.
    buffers = _offloaded_buffer_bytes(folder, placed)
    assert (off.get("per_input_cpu_bytes", 0), off["bytes_per_token"], off["buffers_on_gpu_bytes"]) == \
        (per_input, per_token, buffers), (off, per_input, per_token, buffers)
    assert per_input > 0 and off["cpu_bytes"] == per_input + per_token + buffers
    from tests.helpers import run_cli
    from weightdoctor.units import format_bytes

    text = run_cli("plan-devices", str(folder), "--gpu", f"{int(total * 0.35)}B", "--cpu", "1GB").stdout
    [line] = [line for line in text.replace("\n ", " ").splitlines() if line.startswith("offload:")]
    assert f"{format_bytes(per_input)} (the encoder's" in line and "once per input" in line, line
    assert f"{format_bytes(per_token)} (the rest) for every generated token" in line, line


def _offloaded_buffer_bytes(folder: Path, device_map: dict[str, int | str]) -> int:
    """The bytes of the model's buffers whose map entry is "cpu"."""
    import transformers

    config = json.loads((folder / "config.json").read_text())
    model = getattr(transformers, config["architectures"][0]).from_pretrained(folder)
    found = 0
    for name, buffer in model.named_buffers():
        owner = max((key for key in device_map if key == "" or name == key or name.startswith(f"{key}.")),
                    key=len, default=None)
        if owner is not None and device_map[owner] == "cpu":
            found += buffer.numel() * buffer.element_size()
    return found
