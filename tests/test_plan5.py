"""plan5: plan-devices' KV-cache share per GPU for hybrid, shared-KV and encoder-decoder models, and accelerate's
main device (`dispatch_model`: the first of a set of the map's GPUs) with more than 8 GPUs."""

from __future__ import annotations

import json
from pathlib import Path

import transformers

from tests.helpers import run_json


def _jamba(folder: Path) -> dict[str, int]:
    config = transformers.JambaConfig(
        num_hidden_layers=4, attn_layer_period=2, attn_layer_offset=1, hidden_size=256, num_attention_heads=4,
        num_key_value_heads=4, intermediate_size=512, vocab_size=1000, num_experts=2, expert_layer_period=2,
        expert_layer_offset=1, mamba_d_state=4, mamba_d_conv=2, mamba_expand=2)
    config.architectures = ["JambaForCausalLM"]
    config.save_pretrained(folder)
    # the two attention layers (1 and 3) on cuda:0, the two Mamba layers and the rest on cuda:1
    return {**dict.fromkeys(("model.embed_tokens", "model.final_layernorm", "lm_head"), 1),
            **{f"model.layers.{i}": 0 if i % 2 else 1 for i in range(4)}}


def _gemma3n(folder: Path) -> dict[str, int]:
    config = transformers.Gemma3nTextConfig(
        num_hidden_layers=6, num_kv_shared_layers=2, hidden_size=256, num_attention_heads=4, num_key_value_heads=4,
        head_dim=64, intermediate_size=512, vocab_size=1000, vocab_size_per_layer_input=1000,
        hidden_size_per_layer_input=16, layer_types=["full_attention"] * 6, activation_sparsity_pattern=[0.0] * 6,
        laurel_rank=8, altup_num_inputs=2)
    config.architectures = ["Gemma3nForCausalLM"]
    config.save_pretrained(folder)
    rest = ("embed_tokens", "norm", "rotary_emb", "embed_tokens_per_layer", "per_layer_model_projection",
            "per_layer_projection_norm", "altup_projections", "altup_unembed_projections", "per_layer_projection_scale",
            "per_layer_input_scale")
    # the four layers that cache keys and values on cuda:0, the two that reuse theirs (and the rest) on cuda:1
    return {**{f"model.{name}": 1 for name in rest}, "lm_head": 1,
            **{f"model.layers.{i}": 0 if i < 4 else 1 for i in range(6)}}


def _t5(folder: Path) -> dict[str, int]:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "d_model": 256, "d_kv": 64, "d_ff": 512,
        "num_layers": 4, "num_decoder_layers": 4, "num_heads": 4, "vocab_size": 1000, "n_positions": 2048}))
    # the decoder's blocks on cuda:0, the encoder's and the rest on cuda:1
    return {"shared": 1, "encoder": 1, "decoder.embed_tokens": 1, "decoder.block": 0, "decoder.final_layer_norm": 1,
            "decoder.dropout": 1, "lm_head": 1}


def test_a_hybrid_shared_kv_or_encoder_decoder_cache_is_held_to_the_gpu_its_caching_layers_run_on(
        tmp_path: Path) -> None:
    """Hybrid (Jamba), shared-KV (Gemma 3n) and encoder-decoder (T5) caches were compared in total only: their
    attention / caching / decoder layers mapped to a cuda:0 without room for their keys and values were said to
    "fit in the ... the GPUs have left in all". transformers keeps each layer's keys and values on its own GPU
    (`DynamicLayer.lazy_initialization`), a Mamba layer's states too, and a shared-KV layer caches nothing."""
    cases = (
        # model, cuda:0 size, layers on cuda:0, of, its share, the whole cache, left there
        (_jamba, "10MB", 2, 4, "8.39 MB", "8.41 MB", "5.80 MB"),
        (_gemma3n, "20MB", 4, 6, "16.78 MB", "16.78 MB", "14.64 MB"),
        (_t5, "20MB", 4, 4, "16.78 MB", "16.78 MB", "13.70 MB"),
    )
    for make, gpu0, runs, of, share, whole, left in cases:
        folder = tmp_path / make.__name__
        mapping = make(folder)
        (tmp_path / "map.json").write_text(json.dumps(mapping))
        # plan6: T5's decoder layers also hold the cross-attention keys and values (as many encoder positions as
        # --seq-len), as much again as their self-attention: its 16.78 MB at 4,096 tokens was the self-attention alone
        seq_len = "2048" if make is _t5 else "4096"
        code, planned = run_json("plan-devices", str(folder), "--gpu", gpu0, "--gpu", "40MB", "--dtype", "fp16",
                                 "--kv-cache", "--seq-len", seq_len, "--map", str(tmp_path / "map.json"))
        kv = planned["kv_cache"]
        assert code == 0 and kv["total_bytes"] + (kv["state_bytes"] or 0) <= kv["gpu_free_bytes"], (make, kv)
        assert kv["fits_on_gpus"] is False, (make, kv)
        assert (f"KV cache: cuda:0 runs {runs} of the {of} layers, so it holds {share} of the {whole} cache, with "
                f"{left} left: it does not fit there") in " ".join(planned["warnings"]), (make, planned["warnings"])
        # Every layer on the roomy GPU: it fits, and nothing is said.
        (tmp_path / "map.json").write_text(json.dumps({"": 1}))
        code, roomy = run_json("plan-devices", str(folder), "--gpu", gpu0, "--gpu", "40MB", "--dtype", "fp16",
                               "--kv-cache", "--seq-len", seq_len, "--map", str(tmp_path / "map.json"))
        assert code == 0 and roomy["kv_cache"]["fits_on_gpus"] is True, (make, roomy["kv_cache"])
        assert not any(w.startswith("KV cache") for w in roomy["warnings"]), (make, roomy["warnings"])


LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 8,
         "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 688, "vocab_size": 1000,
         "max_position_embeddings": 2048}


def _dispatch_main_device(config: dict[str, object], mapping: dict[str, int | str]) -> object:
    """The main device accelerate's own dispatch_model picks for `mapping` (caught where it hooks the model up)."""
    import accelerate.big_modeling

    from weightdoctor.meta_model import build_meta_model

    class Picked(Exception):
        pass

    def catch(model: object, execution_device: dict[str, object], **_: object) -> None:
        raise Picked(execution_device[""])

    original = accelerate.big_modeling.attach_align_device_hook_on_blocks
    accelerate.big_modeling.attach_align_device_hook_on_blocks = catch  # type: ignore[assignment]
    try:
        accelerate.big_modeling.dispatch_model(build_meta_model(config), mapping)
    except Picked as picked:
        return picked.args[0]
    finally:
        accelerate.big_modeling.attach_align_device_hook_on_blocks = original
    raise AssertionError("dispatch_model hooked nothing up")


def test_offloaded_layers_run_on_the_gpu_accelerate_takes_first_from_a_set_not_the_lowest_numbered(
        tmp_path: Path) -> None:
    """With 10 GPUs, a map on cuda:1 and cuda:8 (and the CPU) runs its offloaded layers on cuda:8: accelerate's
    dispatch_model takes `list(set of the map's GPUs)[0]`, and 8 comes first in a set of 8 slots. plan-devices took
    the lowest-numbered, cuda:1: it counted the offloaded layers' keys and values there, said the cache fit where
    cuda:8 had 16.32 MB left for 16.78 MB, and said the offloaded weights are copied to cuda:1."""
    from tests.helpers import run_cli

    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA))
    mapping: dict[str, int | str] = {
        "model.embed_tokens": 1, **{f"model.layers.{i}": 1 if i < 4 else "cpu" if i < 6 else 8 for i in range(8)},
        "model.norm": 8, "model.rotary_emb": 8, "lm_head": 8}
    assert _dispatch_main_device(LLAMA, mapping) == 8
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    for eighth, fits in (("20MB", False), ("40MB", True)):
        gpus = [arg for size in ["10MB", "40MB", *["10MB"] * 6, eighth, "10MB"] for arg in ("--gpu", size)]
        args = ("plan-devices", str(folder), *gpus, "--cpu", "1GB", "--dtype", "fp16", "--kv-cache", "--seq-len",
                "4096", "--map", str(tmp_path / "map.json"))
        code, planned = run_json(*args)
        kv = planned["kv_cache"]
        assert code == 0 and planned["verdict"] == "needs-cpu-offload" and kv["fits_on_gpus"] is fits, (eighth, kv)
        warning = " ".join(w for w in planned["warnings"] if w.startswith("KV cache"))
        if fits:
            assert warning == "", warning
            text = " ".join(run_cli(*args).output.split())
            assert "3.16 MB of weights are offloaded and copied to cuda:8 as each module runs" in text, text
        else:
            assert ("KV cache: cuda:8 runs 4 of the 8 layers (2 offloaded: they run on accelerate's main device, the "
                    "first GPU dispatch_model takes from a set of the map's GPUs: cuda:8), so it holds 16.78 MB of the "
                    "33.55 MB cache, with 16.32 MB left: it does not fit there") in warning, warning


def test_main_gpus_is_what_dispatch_model_takes_for_every_pair_of_up_to_12_gpus() -> None:
    """`main_gpus` against accelerate's dispatch_model itself, for each pair of GPUs of 12 in either map order:
    the GPU dispatch_model picks is among those said, and is the one said where only one is."""
    from weightdoctor.plan_devices import main_gpus

    picks: dict[tuple[int, int], object] = {}
    for first in range(12):
        for second in range(12):
            if first == second:
                continue
            mapping: dict[str, int | str] = {"model.embed_tokens": first, "model.layers": "cpu", "model.norm": second,
                                             "model.rotary_emb": second, "lm_head": second}
            said = main_gpus(mapping)
            picked = _dispatch_main_device({**LLAMA, "num_hidden_layers": 1}, mapping)
            assert picked in said and (len(said) > 1 or said == [picked]), (mapping, said, picked)
            if max(first, second) < 8:  # below the set's 8 slots: the lowest-numbered, whatever the order
                assert said == [min(first, second)], (mapping, said)
            picks[(first, second)] = picked
    # cuda:3 and cuda:11 share a slot: the map's order decides, so either is said
    assert picks[(3, 11)] == 3 and picks[(11, 3)] == 11 and picks[(1, 8)] == picks[(8, 1)] == 8


def test_an_offloaded_maps_main_device_that_varies_from_run_to_run_is_said_so(tmp_path: Path) -> None:
    """A map naming the CPU, then cuda:3, then cuda:11 runs its offloaded layers on cuda:3 or cuda:11, as the hash
    of "cpu" (it changes from run to run) lays out the set dispatch_model takes the first of: "copied to cuda:3"
    alone was a guess. (review63: a map naming cuda:3 before the CPU runs them on cuda:3 in every run.)"""
    from tests.helpers import run_cli

    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA))
    mapping: dict[str, int | str] = {
        "model.embed_tokens": "cpu", **{f"model.layers.{i}": 3 if i < 4 else "cpu" if i < 6 else 11 for i in range(8)},
        "model.norm": 11, "model.rotary_emb": 11, "lm_head": 11}
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    gpus = [arg for size in ["10MB"] * 3 + ["40MB"] + ["10MB"] * 7 + ["40MB"] for arg in ("--gpu", size)]
    result = run_cli("plan-devices", str(folder), *gpus, "--cpu", "1GB", "--dtype", "fp16", "--kv-cache",
                     "--seq-len", "4096", "--map", str(tmp_path / "map.json"))
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and ("3.68 MB of weights are offloaded and copied to cuda:3 or cuda:11 (whichever "
                                      "accelerate's dispatch_model takes first from a set of the map's GPUs, from "
                                      "run to run) as each module runs") in text, text


def _bnb_bert(folder: Path, bits: int) -> Path:
    """A seeded tiny BERT whose query / value / intermediate weights are saved as bitsandbytes saves them, 4-bit
    (packed uint8 [n*k/2, 1] + absmax, quant_map, quant_state.bitsandbytes__nf4) or 8-bit (int8 + SCB), and a
    config.json with no quantization_config."""
    import torch
    from safetensors.torch import save_file

    from fixtures.build import build_bert

    model = build_bert()
    tensors = {}
    for name, value in model.state_dict().items():
        if not (name.endswith(".weight") and any(f".{m}.weight" in name for m in
                                                  ("attention.self.query", "attention.self.value",
                                                   "intermediate.dense"))):
            tensors[name] = value.contiguous()
        elif bits == 4:
            state = json.dumps({"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": list(value.shape)})
            tensors |= {name: torch.zeros((value.numel() + 1) // 2, 1, dtype=torch.uint8),
                        name + ".absmax": torch.ones(value.numel() // 64),
                        name + ".quant_map": torch.linspace(-1, 1, 16),
                        name + ".quant_state.bitsandbytes__nf4": torch.tensor(list(state.encode()), dtype=torch.uint8)}
        else:
            scale = value.abs().amax(dim=1).clamp(min=1e-8)
            tensors[name] = torch.round(value / scale[:, None] * 127).to(torch.int8)
            tensors[name[: -len("weight")] + "SCB"] = scale * 127
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(model.config.to_dict()))
    return folder


def test_bitsandbytes_weights_under_a_config_without_quantization_config_are_not_planned_as_dense_fp32(
        tmp_path: Path) -> None:
    """bitsandbytes 4-bit / 8-bit weights under a config.json with no quantization_config were planned as the dense
    fp32 model without a word. from_pretrained (the oracle below) refuses the 4-bit packed shapes and loads the
    8-bit integers as float weights: plan-devices refuses as for GPTQ / AWQ (fixlist25), or warns with --dtype."""
    import pytest
    import torch

    from tests.helpers import run_cli

    four, eight = _bnb_bert(tmp_path / "bnb4", 4), _bnb_bert(tmp_path / "bnb8", 8)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        transformers.BertModel.from_pretrained(str(four))
    model, info = transformers.BertModel.from_pretrained(str(eight), output_loading_info=True)
    assert any(key.endswith("attention.self.query.SCB") for key in info["unexpected_keys"])
    assert torch.equal(model.encoder.layer[0].attention.self.query.weight.detach(),
                       model.encoder.layer[0].attention.self.query.weight.detach().round())
    cases = (
        (four, "6 layers hold bitsandbytes 4-bit-packed weights (bert.encoder.layer.0.attention.self.query.weight, "
               "beside its absmax, quant_map and quant_state), but config.json has no quantization_config: "
               "from_pretrained builds the model unquantized, and the packed weights' shapes are not the layers' "
               "(RuntimeError: ignore_mismatched_sizes is False): it loads nothing; the quantizer's "
               "quantization_config (quant_method bitsandbytes, load_in_4bit true, bnb_4bit_quant_type nf4)"),
        (eight, "6 layers hold bitsandbytes 8-bit weights (bert.encoder.layer.0.attention.self.query.weight, "
                "beside its SCB), but config.json has no quantization_config: from_pretrained builds the model "
                "unquantized and copies the int8 values (up to 127) into these layers' float weights as they are, "
                "dropping their SCB scales (unexpected keys): not the model's weights; the quantizer's "
                "quantization_config (quant_method bitsandbytes, load_in_8bit true)"),
    )
    for folder, said in cases:
        result = run_cli("plan-devices", str(folder), "--gpu", "1GB")
        assert result.exit_code == 2 and not result.stdout, result.stdout
        line = " ".join(result.stderr.split())
        assert said in line and str(folder) in line and "--dtype plans the unquantized model" in line, line
        code, planned = run_json("plan-devices", str(folder), "--gpu", "1GB", "--dtype", "fp16")
        assert code == 0 and planned["dtype"] == "fp16"
        assert any(w.startswith("planned as the unquantized model at fp16: " + said) for w in planned["warnings"])


def test_a_bitnet_checkpoint_is_placed_as_its_quantizers_bitlinear_layers_are(tmp_path: Path) -> None:
    """BitNet checkpoints were planned as the dense bf16 model ("an upper bound"), without the 10% of every budget
    its quantizer keeps: a placement from_pretrained does not make. transformers swaps in BitLinear layers (a uint8
    weight [out / 4, in] and a weight_scale) before it computes the map; its own _get_device_map on the model so
    prepared, with the quantizer, is the oracle."""
    import torch
    from transformers.integrations.accelerate import _get_device_map

    from tests.test_compat_load import _bitnet_llama

    folder = tmp_path / "bitnet"
    model, quantizer = _bitnet_llama(folder)
    for strategy in ("sequential", "balanced"):
        budgets = {0: 1_000_000, 1: 1_000_000, "cpu": 100_000_000}
        try:
            expected = _get_device_map(model, strategy, dict(budgets), quantizer)
        except ValueError as refused:
            # Where CUDA is available, _get_device_map hands the map it made to BitNet's validate_environment,
            # which refuses one holding cpu: from_pretrained raises, and plan-devices says so (an error finding).
            assert torch.cuda.is_available() and "CPU or disk device" in str(refused), refused
            expected = None
        code, planned = run_json("plan-devices", str(folder), "--gpu", "1000000B", "--gpu", "1000000B", "--cpu",
                                 "100000000B", "--strategy", strategy)
        if expected is None:
            assert (code, planned["verdict"]) == (1, "does-not-fit"), planned
            [finding] = planned["findings"]
            assert finding["code"] == "quantizer-refuses-offload" and "CPU or disk device" in finding["message"]
            assert "cpu" in planned["device_map"].values()
        else:
            assert code == 0, planned
            assert "cpu" in expected.values()  # the GPUs are full: where each module goes is what counts
            assert planned["device_map"] == expected, (strategy, planned["device_map"], expected)
        assert planned["weights_bytes"] + planned["buffers_bytes"] == model.get_memory_footprint()
        assert any("planned with the 28 BitLinear layers transformers' BitNet quantizer swaps in" in w
                   for w in planned["warnings"]), planned["warnings"]
        assert not any("upper bound" in w for w in planned["warnings"]), planned["warnings"]
        # and the map holds cpu: BitNetHfQuantizer.validate_environment refuses it where CUDA is available, said
        # of the GPU machine planned where this one has none (where it has, the finding above says it)
        said = any(w.startswith("transformers' BitNet quantizer refuses a device map holding cpu or disk")
                   for w in planned["warnings"])
        assert said == (expected is not None), planned["warnings"]
    code, roomy = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and roomy["device_map"] == {"": 0}
    assert not any("BitNet quantizer refuses" in w for w in roomy["warnings"]), roomy["warnings"]


def test_the_bnb_warning_names_only_the_skip_entries_that_keep_a_layer_of_the_planned_class(tmp_path: Path) -> None:
    """An Unsloth skip list naming a vision tower and projector (its vision repos' lists) on a text-only Llama was
    said as "the modules its llm_int8_skip_modules names (lm_head, model.layers.1.mlp, vision_tower,
    multi_modal_projector) at their floating dtype": the class has no such modules, and nothing is kept for them
    (transformers' should_convert_module matches no layer name with them; the plan's bytes are those of the list
    without them)."""
    from transformers.quantizers.quantizers_utils import should_convert_module

    from tests.test_third_party_layouts23 import _unsloth_dynamic_4bit
    from weightdoctor.meta_model import build_meta_model

    skip = ["lm_head", "model.layers.1.mlp", "vision_tower", "multi_modal_projector"]
    folder, held = _unsloth_dynamic_4bit(tmp_path / "unsloth", skip)
    names = [name for name, _ in build_meta_model(json.loads((folder / "config.json").read_text())).named_modules()]
    assert [entry for entry in skip if any(not should_convert_module(n, [entry]) for n in names if n)] == skip[:2]
    code, plan = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and plan["dtype"] == "int4" and plan["weights_bytes"] == held == 139904, plan
    [said] = [w for w in plan["warnings"] if "llm_int8_skip_modules" in w]
    assert ("the modules its llm_int8_skip_modules names (lm_head, model.layers.1.mlp) at their floating dtype, as "
            "the quantizer leaves them; vision_tower, multi_modal_projector in llm_int8_skip_modules name no Linear "
            "layer of LlamaForCausalLM: nothing is kept unquantized for them") in said, said
