"""plan84: plan-devices, what round quantrest2 left.

Found through the CLI on tiny seeded transformers checkpoints:
- the buffers of offloaded modules (BART's final_logits_bias, BERT's position_ids) were counted in the bytes
  streamed for every generated token; accelerate's hooks (offload_buffers=False, from_pretrained's default) move
  them to the execution device once, when the model is dispatched, and load none of them per step. They are now
  left out of bytes_per_token and said apart (offload.buffers_on_gpu_bytes).
- the decoder's cross-attention key / value projections of an EncoderDecoderModel with a GPT-2 decoder
  (`crossattention.c_attn`) or a BERT decoder (`crossattention.self.key` / `.value`) were said per token; generate()
  runs them once per input (their outputs cached), as T5's and BART's.

The oracle is accelerate itself: the model loaded, dispatched by accelerate's dispatch_model on the map planned,
and the bytes its hooks load counted while generate() makes 3 and 6 tokens.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import run_cli, run_json
from tests.test_plan_quantrest import fake_bitsandbytes  # noqa: F401 - a fixture


def _encoder_decoder(folder: Path, decoder: str, tied: bool = False) -> Path:
    """A tiny seeded float32 EncoderDecoderModel: a BERT encoder and a GPT-2 or BERT decoder with cross-attention,
    its decoder's output embeddings untied (a tied pair used by two modules is loaded by each hook: plan85's case,
    `tied`)."""
    import transformers

    torch.manual_seed(0)
    encoder = transformers.BertConfig(vocab_size=64, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                      intermediate_size=256, max_position_embeddings=64)
    if decoder == "gpt2":
        decoding: Any = transformers.GPT2Config(vocab_size=64, n_embd=64, n_layer=3, n_head=4, n_positions=64,
                                                add_cross_attention=True, is_decoder=True, tie_word_embeddings=tied)
    else:
        decoding = transformers.BertConfig(vocab_size=64, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                           intermediate_size=256, max_position_embeddings=64, is_decoder=True,
                                           add_cross_attention=True, tie_word_embeddings=tied)
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoding)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 1, 0, 63
    model = transformers.EncoderDecoderModel(config=config)
    model.generation_config.decoder_start_token_id, model.generation_config.pad_token_id = 1, 0
    model.save_pretrained(folder)
    return folder


def _bart(folder: Path) -> Path:
    """A tiny seeded float32 BART (its final_logits_bias a buffer), saved."""
    import transformers

    torch.manual_seed(0)
    config = transformers.BartConfig(vocab_size=64, d_model=64, encoder_layers=3, decoder_layers=3,
                                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=256,
                                     decoder_ffn_dim=256, max_position_embeddings=64,
                                     architectures=["BartForConditionalGeneration"])
    transformers.BartForConditionalGeneration(config).save_pretrained(folder)
    return folder


def _load(folder: Path) -> Any:
    import transformers

    config = json.loads((folder / "config.json").read_text())
    return getattr(transformers, config["architectures"][0]).from_pretrained(folder).eval()


def _dispatched(folder: Path, device_map: dict[str, int | str], tmp_path: Path) -> Any:
    """The model dispatched by accelerate on the map planned, as from_pretrained dispatches it
    (offload_buffers=False), its GPU entries run on the CPU here (the main device): its "cpu" entries served from
    the model's own tensors in CPU RAM, as dispatch_model extracts them from model.state_dict() where the main device
    is a GPU (so that its `tied_params_map`, keyed by their data pointers, works as there), its "disk" entries from
    files. Each offloaded module's weights are loaded each time it runs, as they are copied to the GPU."""
    from accelerate import dispatch_model
    from accelerate.utils import extract_submodules_state_dict, offload_state_dict

    model = _load(folder)
    state = model.state_dict()

    def entries(where: str) -> dict[str, Any]:
        names = [name for name, device in device_map.items() if device == where]
        return dict(state) if "" in names else extract_submodules_state_dict(state, names)

    in_ram, on_disk = entries("cpu"), entries("disk")
    offload_dir = tempfile.mkdtemp(dir=tmp_path)
    offload_state_dict(offload_dir, on_disk)  # its index.json, even empty: dispatch_model then reads it, not writes
    # main_device="cpu" offloads only "disk" entries: both kinds are marked so, the weights map serves each
    offloaded = {name: "cpu" if isinstance(where, int) else "disk" for name, where in device_map.items()}
    return dispatch_model(model, offloaded, main_device="cpu", state_dict=in_ram, offload_dir=offload_dir,
                          offload_buffers=False)


def _bytes_loaded(folder: Path, device_map: dict[str, int | str], new_tokens: int, tmp_path: Path,
                  causal: bool = False, inputs: dict[str, Any] | None = None) -> int:
    """The bytes accelerate's hooks copy to the execution device while generate() makes `new_tokens` tokens: each
    tensor a hook's pre_forward sets on it from its weights map, its stored size, but for a tied tensor whose copy
    is already there (a twin placed on the main device, or loaded by an enclosing module's hook: the check
    set_module_tensor_to_device makes against `tied_params_map`, which then reuses that copy). `causal`: a
    decoder-only model, whose output holds the prompt before the new tokens. `inputs`: generate()'s inputs where
    they are no token ids (Pix2Struct's flattened_patches)."""
    import accelerate.hooks as hooks
    from accelerate.utils.modeling import normalize_device

    model = _dispatched(folder, device_map, tmp_path)
    loaded = [0]
    original = hooks.set_module_tensor_to_device

    def counting(module: Any, name: str, device: Any, value: Any = None, tied_params_map: Any = None,
                 **kwargs: Any) -> Any:
        if value is not None and str(device) != "meta":
            owner, _, leaf = name.rpartition(".")
            held = getattr(module.get_submodule(owner), leaf)
            there = tied_params_map is not None and any(
                normalize_device(device) in tied_params_map.get(tensor.data_ptr(), {}) for tensor in (value, held))
            if not there:
                loaded[0] += value.numel() * value.element_size()
        return original(module, name, device, value=value, tied_params_map=tied_params_map, **kwargs)

    hooks.set_module_tensor_to_device = counting
    try:
        with torch.no_grad():
            out = model.generate(**(inputs or {"inputs": torch.tensor([[5, 6, 7, 8, 2]])}),
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, num_beams=1,
                                 **({"pad_token_id": 0} if causal else {}))
    finally:
        hooks.set_module_tensor_to_device = original
    if causal:
        assert out.shape[1] == 5 + new_tokens, out.shape
    else:
        assert out.shape[1] - (1 if out.shape[1] > new_tokens else 0) == new_tokens, out.shape
    return loaded[0]


def _offloaded_buffers(folder: Path, device_map: dict[str, int | str]) -> dict[str, int]:
    """{name: bytes} of the model's buffers whose map entry is "cpu"."""
    found = {}
    for name, buffer in _load(folder).named_buffers():
        owner = max((key for key in device_map if key == "" or name == key or name.startswith(f"{key}.")),
                    key=len, default=None)
        if owner is not None and device_map[owner] == "cpu":
            found[name] = buffer.numel() * buffer.element_size()
    return found


def _split_plan(folder: Path, share: float) -> tuple[dict[str, Any], list[str]]:
    """The JSON plan of `folder` on a GPU of `share` of its bytes and 1 GB of CPU, and the args that gave it."""
    code, whole = run_json("plan-devices", str(folder), "--gpu", "1GB")
    args = ["plan-devices", str(folder), "--gpu", f"{int((whole['weights_bytes'] + whole['buffers_bytes']) * share)}B",
            "--cpu", "1GB"]
    code, data = run_json(*args)
    return data, args


@pytest.mark.parametrize("decoder", ["gpt2", "bert"])
def test_cross_attention_keys_and_values_of_gpt2_and_bert_decoders_are_said_once_per_input(
        tmp_path: Path, decoder: str) -> None:
    """An EncoderDecoderModel (BERT encoder, GPT-2 or BERT decoder) with its decoder offloaded: the bytes its hooks
    load in generate() for 3 and 6 tokens split into per input + tokens x per token, and the report's two figures
    are those (the decoder's cross-attention c_attn / self.key / self.value were said per token: 99.84 KB too many
    per token, as many too few per input)."""
    folder = _encoder_decoder(tmp_path / decoder, decoder)
    data, args = _split_plan(folder, 0.35)
    placed = data["device_map"]
    assert placed.get("decoder") == "cpu" and "cpu" in {where for name, where in placed.items()
                                                        if name.startswith("encoder")}, placed
    three = _bytes_loaded(folder, placed, 3, tmp_path)
    six = _bytes_loaded(folder, placed, 6, tmp_path)
    per_token = (six - three) // 3
    per_input = three - 3 * per_token
    off = data["offload"]
    buffers = sum(_offloaded_buffers(folder, placed).values())
    assert (off["per_input_cpu_bytes"], off["bytes_per_token"], off["buffers_on_gpu_bytes"]) == \
        (per_input, per_token, buffers), (off, per_input, per_token, buffers)
    assert off["cpu_bytes"] == per_input + per_token + buffers
    from weightdoctor.units import format_bytes

    text = run_cli(*args).stdout
    [line] = [line for line in text.replace("\n ", " ").splitlines() if line.startswith("offload:")]
    assert f"{format_bytes(per_input)} (the encoder's" in line, line
    assert f"{format_bytes(per_token)} (the rest) for every generated token" in line, line


def test_offloaded_buffers_are_kept_on_the_gpu_not_streamed_per_token(tmp_path: Path) -> None:
    """BART with its decoder (and final_logits_bias, a buffer of the top module, on the CPU with lm_head) offloaded:
    accelerate's dispatch leaves every offloaded parameter on the meta device (loaded per call) and moves every
    buffer of the offloaded modules to the execution device once; the hooks load no buffer in generate(). The
    report's per-token bytes are what the hooks load, and the buffers are said apart, on the first GPU (they were
    counted per token)."""
    folder = _bart(tmp_path / "bart")
    data, args = _split_plan(folder, 0.35)
    placed = data["device_map"]
    buffers = _offloaded_buffers(folder, placed)
    assert "final_logits_bias" in buffers, (placed, buffers)
    model = _dispatched(folder, placed, tmp_path)
    kept = dict(model.named_buffers())
    # where accelerate put them: materialized on the execution device (the CPU stands in for the GPU here), while
    # the parameters of the same offloaded modules wait on the meta device to be loaded at each call
    assert all(kept[name].device.type != "meta" for name in buffers), {n: kept[n].device for n in buffers}
    offloaded = [name for name, where in placed.items() if where == "cpu" and name != "final_logits_bias"]
    params = [p for name, p in model.named_parameters() if any(name.startswith(f"{key}.") for key in offloaded)]
    assert params and all(p.device.type == "meta" for p in params)
    three = _bytes_loaded(folder, placed, 3, tmp_path)
    six = _bytes_loaded(folder, placed, 6, tmp_path)
    per_token = (six - three) // 3
    per_input = three - 3 * per_token
    off = data["offload"]
    assert (off["per_input_cpu_bytes"], off["bytes_per_token"], off["buffers_on_gpu_bytes"]) == \
        (per_input, per_token, sum(buffers.values())), (off, per_input, per_token, buffers)
    assert off["cpu_bytes"] == per_input + per_token + sum(buffers.values())
    from weightdoctor.units import format_bytes

    text = run_cli(*args).stdout.replace("\n ", " ")
    [line] = [line for line in text.splitlines() if line.startswith("offload:")]
    assert f"{format_bytes(per_token)} (the rest) for every generated token" in line, line
    assert f"besides, {format_bytes(sum(buffers.values()))} of buffers of the offloaded modules" in line, line


def test_a_map_on_the_cpu_alone_keeps_no_buffer_on_a_gpu(tmp_path: Path) -> None:
    """A map that names no GPU runs on the CPU (accelerate's main device): no buffer is said to sit on a GPU."""
    folder = _bart(tmp_path / "bart")
    code, data = run_json("plan-devices", str(folder), "--gpu", "1KB", "--cpu", "1GB")
    assert set(data["device_map"].values()) == {"cpu"}, data["device_map"]
    assert data["offload"]["buffers_on_gpu_bytes"] == 0


# --- the int8 / int4 rungs with a float16 rest ----------------------------------------------------------------------

_HALF_REST = "dtype-float16-rest"


def _half_rest_call(data: dict[str, Any]) -> str:
    [rung] = [s for s in data["suggestions"] if s["change"] == _HALF_REST]
    return str(rung["description"].split("load it so: ", 1)[1])


def test_int8_with_a_float16_rest_is_offered_before_int4_with_a_float32_rest(
        tmp_path: Path, fake_bitsandbytes: None) -> None:  # noqa: F811
    """A float32 Llama planned at fp32 on GPUs where `--dtype int4` fits (its rest at float32) but `--dtype int8`
    does not: where int8 with its rest at float16 fits too, as from_pretrained places it, that call is offered
    first (8-bit weights and a float16 rest lose less than 4-bit ones), then `--dtype int4`; the call, run as
    printed, places every module on the GPU at float16. Where it does not fit, only `--dtype int4` is offered (it
    was offered alone everywhere)."""
    from tests.test_plan_quantrest import _from_pretrained, _llama
    from tests.test_plan_quantrest2 import _run_printed_call

    folder = _llama(tmp_path / "m", torch.float32)
    seen = set()
    for kb in (110, 120, 135, 150, 160):
        gpu = kb * 1000
        budgets: dict[int | str, int] = {0: gpu, "cpu": 10**9}
        fits = {(bits, half): set(_from_pretrained(folder, bits, budgets, dtype=torch.float16 if half else None)[0]
                                  .values()) == {0} for bits in (8, 4) for half in (False, True)}
        code, data = run_json("plan-devices", str(folder), "--gpu", f"{gpu}B", "--cpu", "1GB")
        rungs = [(s["change"], s["dtype"]) for s in data["suggestions"] if s["change"] in ("dtype", _HALF_REST)]
        if fits[(8, False)]:
            expected = [("dtype", "int8")]
        elif fits[(4, False)]:
            expected = ([(_HALF_REST, "int8")] if fits[(8, True)] else []) + [("dtype", "int4")]
        else:
            expected = [(_HALF_REST, "int8" if fits[(8, True)] else "int4")] if fits[(4, True)] else []
        assert rungs == expected, (kb, rungs, fits)
        seen.add(tuple(rungs))
        if (_HALF_REST, "int8") in rungs and ("dtype", "int4") in rungs:
            placed, dtypes = _run_printed_call(_half_rest_call(data))
            assert set(placed.values()) == {0} and dtypes == {torch.float16}, (kb, placed, dtypes)
    assert ((_HALF_REST, "int8"), ("dtype", "int4")) in seen and (("dtype", "int8"),) in seen, seen


def test_the_float16_rest_call_loads_the_map_planned_with_no_split(
        tmp_path: Path, fake_bitsandbytes: None) -> None:  # noqa: F811
    """Planned with --no-split LlamaMLP on two GPUs, the offered call gave device_map="auto" and budgets, which
    from_pretrained plans with the model's own _no_split_modules (whole decoder layers): it now gives the map
    planned, which from_pretrained then loads as it is, every module on a GPU, a decoder layer split at its MLP."""
    from tests.test_plan_quantrest import _llama
    from tests.test_plan_quantrest2 import _run_printed_call

    folder = _llama(tmp_path / "m", torch.float32)
    code, data = run_json("plan-devices", str(folder), "--gpu", "60KB", "--gpu", "60KB", "--cpu", "1GB",
                          "--no-split", "LlamaMLP")
    placed, dtypes = _run_printed_call(_half_rest_call(data))
    assert set(placed.values()) <= {0, 1} and dtypes == {torch.float16}, placed
    assert "model.layers.0.mlp" in placed and "model.layers.0" not in placed, placed


def test_the_float16_rest_call_loads_the_revision_planned(
        tmp_path: Path, fake_bitsandbytes: None, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """A repo id planned at --revision v2 (the tiny Llama; main holds a larger one): the offered call named no
    revision and, pasted, loaded main's model, which does not fit. It now passes revision="v2" and loads what was
    planned, every module on the GPU; an `hf://org/llama@v2` source is given as its repo id and revision."""
    import huggingface_hub.constants as hub_constants

    from fixtures.hub_cache import commit_of, write_snapshot
    from tests.test_plan_quantrest import _llama
    from tests.test_plan_quantrest2 import _run_printed_call

    small = _llama(tmp_path / "small", torch.float32)
    config = json.loads((small / "config.json").read_text())
    large = tmp_path / "large"
    import transformers

    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**(config | {"intermediate_size": 4 * config[
        "intermediate_size"]}))).save_pretrained(large)
    cache = tmp_path / "hub"
    for folder, revision in ((small, "v2"), (large, "main")):
        write_snapshot(cache, "org/llama", commit_of(revision), {path.name: path.read_bytes()
                                                                  for path in folder.iterdir()}, refs=(revision,))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    for source, extra in (("org/llama", ["--revision", "v2"]), ("hf://org/llama@v2", [])):
        code, data = run_json("plan-devices", source, "--gpu", "100KB", "--cpu", "1GB", *extra)
        call = _half_rest_call(data)
        assert 'from_pretrained("org/llama", revision="v2",' in call, call
        placed, dtypes = _run_printed_call(call)
        assert set(placed.values()) == {0} and dtypes == {torch.float16}, (source, placed)
    # main's model, loaded so, does not fit (bitsandbytes refuses its map): the revision makes the call load the plan
    with pytest.raises(ValueError, match="dispatched on the CPU or the disk"):
        _run_printed_call(call.replace(', revision="v2"', ""))


# --- a float32 GPTQ checkpoint's float16 hint ----------------------------------------------------------------------


def test_a_float32_gptq_checkpoint_is_told_that_float16_fits_where_transformers_places_it_so(tmp_path: Path) -> None:
    """A GPTQ checkpoint saved at float32 (its lm_head left unquantized, stored float32): planned with its rest at
    float32, where it offloads and the model transformers builds at float16 (GPTQ's QuantLinear layers at their
    stored bytes) fits the GPU, as its planner places it, a warning says dtype=torch.float16 fits, with the rest's
    bytes at float32 and float16 as that model counts them. The lm_head was kept at its stored float32 bytes in the
    float16 plan: no hint at 85 KB, where it fits, and the text named lm_head among the rest without counting it
    (34.05 KB said for 66.82 KB)."""
    from tests.test_plan_quantized2 import _HeldLayer, _stored_layers
    from tests.test_plan_quantized4 import _float32_quantized, _from_pretrained_map, _meta_model_at, _sizes
    from weightdoctor.units import format_bytes

    folder, quantized = _float32_quantized(tmp_path / "gptq", "gptq")
    config = json.loads((folder / "config.json").read_text())

    def built(dtype: torch.dtype) -> torch.nn.Module:
        model = _meta_model_at(config, dtype)
        for layer, tensors in _stored_layers(folder).items():
            parent, _, child = layer.rpartition(".")
            setattr(model.get_submodule(parent), child, _HeldLayer(tensors))
        return model

    at32, at16 = built(torch.float32), built(torch.float16)
    rest = {dtype: sum(p.numel() * p.element_size() for name, p in model.named_parameters()
                       if name.rpartition(".")[0] not in quantized and p.is_floating_point())
            for dtype, model in ((torch.float32, at32), (torch.float16, at16))}
    said = set()
    for kb in (70, 85, 100, 115):
        budgets: dict[int | str, int] = {0: kb * 1000, "cpu": 10**9}
        auto = dict(_from_pretrained_map(at32, budgets))
        half = dict(_from_pretrained_map(at16, budgets))
        code, data = run_json("plan-devices", str(folder), "--gpu", f"{kb}KB", "--cpu", "1GB")
        assert data["dtype"] == "int4" and data["device_map"] == auto, (kb, data["device_map"], auto)
        hints = [w for w in data["warnings"] if "passing dtype=torch.float16" in w]
        fits_half = set(half.values()) == {0} and set(auto.values()) != {0}
        assert bool(hints) == fits_half, (kb, auto, half, hints)
        if hints:
            assert f"lm_head, biases: {format_bytes(rest[torch.float32])})" in hints[0], hints
            assert f"holds it in {format_bytes(rest[torch.float16])}" in hints[0], hints
        said.add(bool(hints))
    assert said == {True, False}
    assert _sizes(at16)[""] < _sizes(at32)[""]
