"""plan-devices analysis: the map equals what from_pretrained / accelerate compute, and the numbers around it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from fixtures.plan_devices import (
    FP8_QUANTIZATION,
    PUBLISHED_PARAMS,
    build_plain_torch_model,
    config_folder,
    from_pretrained_device_map,
    load_with_device_map,
)
from weightdoctor.errors import UsageError
from weightdoctor.findings import Finding
from weightdoctor.plan_devices import (
    PlanRequest,
    build_planned_model,
    classify,
    estimate_kv_cache,
    estimate_training,
    module_ranges,
    normalize_dtype,
    open_plan_source,
    parse_device_value,
    plan_devices,
    verdict_exit_code,
)

GB = 10**9


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("configs")
    return {name: config_folder(name, out) for name in PUBLISHED_PARAMS}


@pytest.fixture(scope="module")
def planned_big(big: dict[str, Path]) -> dict[str, object]:
    return {name: build_planned_model(open_plan_source(str(folder))) for name, folder in big.items()}


def _memory(gpus: list[int], cpu: int | None) -> dict[int | str, int]:
    memory: dict[int | str, int] = dict(enumerate(gpus))
    if cpu is not None:
        memory["cpu"] = cpu
    return memory


# ------------------------------------------------------------------------------------ the oracle: from_pretrained


@pytest.mark.parametrize(
    ("name", "strategy", "gpus", "cpu"),
    [
        ("mistral-7b", "auto", [8 * GB, 8 * GB], 64 * GB),
        ("mistral-7b", "sequential", [6 * GB], 4 * GB),
        ("llama-2-70b", "balanced_low_0", [24 * GB] * 4, 80 * GB),
        ("llama-2-70b", "auto", [80 * GB, 80 * GB], None),
        ("mixtral-8x7b", "balanced", [40 * GB, 40 * GB, 40 * GB], 10 * GB),
        ("mixtral-8x7b", "sequential", [24 * GB], 200 * GB),
    ],
)
def test_big_config_maps_equal_from_pretrained(big, planned_big, name, strategy, gpus, cpu) -> None:
    expected = from_pretrained_device_map(big[name], strategy, _memory(gpus, cpu))
    report = plan_devices(planned_big[name], PlanRequest(gpus=gpus, cpu=cpu, strategy=strategy, disk=True))
    assert report.device_map == expected
    assert list(report.device_map) == list(expected)  # same order, module for module
    assert report.num_params == PUBLISHED_PARAMS[name]
    assert len(set(expected.values())) > 1  # the cases do split the model


def test_dtype_and_reserve_match_from_pretrained(big) -> None:
    folder = big["mistral-7b"]
    planned = build_planned_model(open_plan_source(str(folder)), "fp32")
    assert next(planned.model.parameters()).dtype == torch.float32
    report = plan_devices(planned, PlanRequest(gpus=[20 * GB, 20 * GB], cpu=100 * GB, reserve=2 * 2**30))
    expected = from_pretrained_device_map(
        folder, "auto", _memory([20 * GB - 2 * 2**30, 20 * GB - 2 * 2**30], 100 * GB), dtype=torch.float32
    )
    assert report.device_map == expected
    assert report.weights_bytes == 4 * PUBLISHED_PARAMS["mistral-7b"]
    reserve = [h for h in report.devices[0].held_back if h.reason == "reserve"]
    assert reserve and reserve[0].bytes == 2 * 2**30


@pytest.mark.parametrize("strategy", ["auto", "balanced", "balanced_low_0", "sequential"])
@pytest.mark.parametrize("fixture", ["bert", "gpt2"])
def test_fixture_maps_equal_from_pretrained_with_gpu_budgets(fx, fixture, strategy) -> None:
    folder = fx[fixture]
    planned = build_planned_model(open_plan_source(str(folder)))
    gpus, cpu = [60_000, 60_000, 80_000], 100_000
    expected = from_pretrained_device_map(folder, strategy, _memory(gpus, cpu))
    report = plan_devices(planned, PlanRequest(gpus=gpus, cpu=cpu, strategy=strategy, disk=True))
    assert report.device_map == expected
    assert sum(d.used_bytes for d in report.devices) == report.weights_bytes + report.buffers_bytes


def test_fixture_cpu_disk_map_equals_loaded_model(fx, tmp_path) -> None:
    """With CPU and disk budgets from_pretrained runs to the end here: compare with the loaded model's map."""
    folder = fx["gpt2"]
    planned = build_planned_model(open_plan_source(str(folder)))
    report = plan_devices(planned, PlanRequest(gpus=[], cpu=60_000, disk=True, strategy="auto"))
    model = load_with_device_map(folder, "auto", tmp_path / "offload", max_memory={"cpu": 60_000})
    assert report.device_map == model.hf_device_map
    assert report.verdict == "needs-disk-offload"
    assert report.offload.disk_bytes > 0


def test_written_map_loads_through_from_pretrained(fx, tmp_path) -> None:
    """The planned map, as JSON, loads a model split between CPU and disk that computes what the plain one does."""
    from weightdoctor.render.plan_devices import write_device_map

    folder = fx["bert"]
    report = plan_devices(build_planned_model(open_plan_source(str(folder))),
                          PlanRequest(gpus=[], cpu=50_000, disk=True))
    assert {"cpu", "disk"} <= set(report.device_map.values())
    write_device_map(report.device_map, tmp_path / "map.json")
    device_map = json.loads((tmp_path / "map.json").read_text())
    model = load_with_device_map(folder, device_map, tmp_path / "offload")
    assert model.hf_device_map == report.device_map
    plain = load_with_device_map(folder, None, tmp_path / "unused")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, plain(ids).logits)


def test_plain_torch_model_equals_accelerate_dispatch(tmp_path) -> None:
    """Without a config the tree comes from tensor names; accelerate's own dispatch computes the same map.

    The tree keeps each numbered block (`1`..`4`, Sequential blocks in the real model) whole: accelerate is told
    the same of the real model's blocks.
    """
    from accelerate import load_checkpoint_and_dispatch

    model, path = build_plain_torch_model(tmp_path)
    planned = build_planned_model(open_plan_source(str(path)))
    assert planned.built_from == "tensors"
    report = plan_devices(planned, PlanRequest(gpus=[], cpu=12_000, disk=True, strategy="auto"))
    assert report.no_split == ["NumberedBlock"]
    dispatched = load_checkpoint_and_dispatch(model, str(path), device_map="auto", max_memory={"cpu": 12_000},
                                              offload_folder=str(tmp_path / "offload"),
                                              no_split_module_classes=["Sequential"])
    # The real model also has parameter-less modules (ReLU) the tensors cannot show: compare each parameter's device.
    ours = {n: _device_of(n, report.device_map) for n, _ in model.named_parameters()}
    theirs = {n: _device_of(n, dispatched.hf_device_map) for n, _ in model.named_parameters()}
    assert ours == theirs and len(set(ours.values())) == 2
    assert report.placement.startswith("accelerate")


def _device_of(name: str, device_map: dict[str, int | str]) -> int | str:
    parts = name.split(".")
    return next(device_map[".".join(parts[:i])] for i in range(len(parts), -1, -1) if ".".join(parts[:i]) in device_map)


def test_tensor_tree_keeps_shared_storage_tied(fx) -> None:
    planned = build_planned_model(open_plan_source(str(fx["files"] / "gpt2-tied.bin")))
    tree = planned.model
    assert tree.get_parameter("lm_head.weight") is tree.get_parameter("transformer.wte.weight")
    report = plan_devices(planned, PlanRequest(gpus=[20_000, 200_000], cpu=10**6))
    owner = {k: v for k, v in report.device_map.items() if k in ("lm_head", "transformer.wte", "transformer", "")}
    assert len(set(owner.values())) == 1


# ------------------------------------------------------------------------------------ verdicts and explanations


def test_offload_plan_explains_held_back_bytes(planned_big) -> None:
    report = plan_devices(planned_big["llama-2-70b"], PlanRequest(gpus=[24 * GB, 24 * GB], cpu=200 * GB))
    assert report.verdict == "needs-cpu-offload"
    gpu0 = report.devices[0]
    assert gpu0.device == "cuda:0" and gpu0.capacity_bytes == 24 * GB
    reasons = {h.reason: h for h in gpu0.held_back}
    # q,o: 8192x8192 each; k,v: 8192x1024 each; 3 MLP matrices; two norms: all at 2 bytes.
    layer_bytes = 2 * (2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192)
    assert reasons["largest-layer"].bytes == layer_bytes
    assert "model.layers" in reasons["largest-layer"].detail
    assert sum(h.bytes for h in gpu0.held_back) == gpu0.capacity_bytes - gpu0.used_bytes
    # the offloaded rotary embedding's inv_freq and original_inv_freq buffers (64 float32 each: 512 B), which
    # accelerate keeps on the GPU, not streamed (plan84)
    assert report.offload.buffers_on_gpu_bytes == 512
    assert report.offload.bytes_per_token == report.offload.cpu_bytes - 512 > 0
    ranges = [r.label for r in report.devices[0].ranges]
    assert ranges[0] == "model.embed_tokens" and ranges[1].startswith("model.layers.0–")
    changes = {s.change: s for s in report.suggestions}
    assert changes["dtype"].dtype == "int4"  # 70B at int8 (~69 GB) cannot fit 48 GB; at int4 it does
    assert changes["gpus"].gpus == [24 * GB] * 6  # 138 GB of fp16 weights need six 24 GB GPUs
    assert verdict_exit_code(report.verdict, "offload") == 1 and verdict_exit_code(report.verdict, "no-fit") == 0


def test_balanced_cap_is_explained(planned_big) -> None:
    report = plan_devices(planned_big["mistral-7b"], PlanRequest(gpus=[80 * GB, 80 * GB], cpu=None))
    assert report.verdict == "fits-on-gpus" and not report.suggestions
    first = report.devices[0]
    assert first.budget_bytes < 80 * GB
    cap = [h for h in first.held_back if h.reason == "balanced-cap"]
    assert cap and cap[0].bytes == 80 * GB - first.budget_bytes
    assert report.devices[1].used_bytes > 0  # balanced: both GPUs hold layers


def test_no_cpu_budget_means_disk_and_no_fit_without_disk(planned_big) -> None:
    report = plan_devices(planned_big["mistral-7b"], PlanRequest(gpus=[8 * GB], cpu=None))
    assert "disk" in report.device_map.values() and "cpu" not in report.device_map.values()
    assert report.verdict == "does-not-fit"
    assert verdict_exit_code(report.verdict, "no-fit") == 1
    assert any(s.change == "disk" and s.verdict == "needs-disk-offload" for s in report.suggestions)
    # int8 would need 7.5 GB (fp16 embeddings and lm_head) of the 7.2 GB bitsandbytes leaves of 8 GB: int4 fits
    assert [s.dtype for s in report.suggestions if s.change == "dtype"] == ["int4"]


def test_int8_counts_quantized_linear_weights(planned_big, big) -> None:
    planned = build_planned_model(open_plan_source(str(big["mistral-7b"])), "int8")
    report = plan_devices(planned, PlanRequest(gpus=[80 * GB], cpu=None))
    embed = 32000 * 4096
    linear = PUBLISHED_PARAMS["mistral-7b"] - 2 * embed - 4096 * (2 * 32 + 1)
    # bitsandbytes keeps lm_head (the output embeddings) and norms/embeddings in fp16; Linear weights 1 byte
    assert report.weights_bytes == linear + 2 * (2 * embed + 4096 * 65)
    assert report.devices[0].budget_bytes == int(80 * GB * 0.9)


def test_int8_quantizes_what_bitsandbytes_would(fx) -> None:
    from weightdoctor.plan_devices import _bnb_quantized_weights

    gpt2 = build_planned_model(open_plan_source(str(fx["gpt2"])), "int8").model
    names = _bnb_quantized_weights(gpt2)
    assert "transformer.h.0.attn.c_attn.weight" in names  # GPT-2's Conv1D is quantized too
    assert "lm_head.weight" not in names and "transformer.wte.weight" not in names
    assert not any(n.endswith(".bias") or "ln_" in n for n in names)


def test_no_split_override_and_unknown_class(planned_big) -> None:
    planned = planned_big["mistral-7b"]
    report = plan_devices(planned, PlanRequest(gpus=[1 * GB], cpu=100 * GB, no_split=["MistralMLP"]))
    assert report.no_split == ["MistralMLP"]
    assert any(k.startswith("model.layers.0.") for k in report.device_map)  # a decoder layer was split
    with pytest.raises(UsageError, match="NoSuchLayer"):
        plan_devices(planned, PlanRequest(gpus=[GB], cpu=GB, no_split=["NoSuchLayer"]))


def test_manual_map_checks(fx) -> None:
    planned = build_planned_model(open_plan_source(str(fx["gpt2"])))
    good = {"transformer.wte": 0, "lm_head": 0, "transformer.wpe": 0, "transformer.h": "cpu",
            "transformer.ln_f": "cpu"}
    report = plan_devices(planned, PlanRequest(gpus=[10**6], cpu=10**6, manual_map=good))
    assert report.findings == [] and report.verdict == "needs-cpu-offload"
    bad = {"transformer.wte": 0, "lm_head": "cpu", "transformer.h": "cpu", "transformer.h.0": 0,
           "transformer.nope": 1}
    report = plan_devices(planned, PlanRequest(gpus=[1000], cpu=10**6, manual_map=bad))
    codes = {f.code for f in report.findings}
    assert codes == {"unknown-module", "covered-twice", "not-covered", "no-budget", "over-budget", "tied-split"}
    not_covered = next(f for f in report.findings if f.code == "not-covered")
    assert "transformer.wpe.weight" in not_covered.message and "transformer.ln_f" in not_covered.message
    assert verdict_exit_code(report.verdict, None, report.findings) == 1


# ------------------------------------------------------------------------------------ estimates and helpers


def _cache_bytes(model_class: type, config: object, input_ids: torch.Tensor,
                 fields: tuple[str, ...] = ("keys", "values")) -> int:
    """Bytes of the tensors transformers' own cache holds (per layer: `fields`, where a layer has them) after one
    forward of a seeded model over `input_ids`: the oracle of the KV-cache estimate."""
    torch.manual_seed(0)
    model = model_class(config).eval()
    with torch.no_grad():
        cache = model(input_ids, use_cache=True).past_key_values
    return sum(t.numel() * t.element_size() for layer in cache.layers
               for t in (getattr(layer, name, None) for name in fields) if t is not None)


def test_kv_cache_llama_70b() -> None:
    config = json.loads((Path("fixtures/configs/llama-2-70b/config.json")).read_text())
    kv = estimate_kv_cache(config, "fp16", batch=2, seq_len=4096)
    assert kv.bytes_per_token == 2 * 80 * 8 * 128 * 2  # 320 KiB per token: GQA with 8 KV heads
    assert kv.total_bytes == kv.bytes_per_token * 2 * 4096
    mistral = json.loads((Path("fixtures/configs/mistral-7b/config.json")).read_text())
    windowed = estimate_kv_cache(mistral, "bf16", batch=1, seq_len=32768)
    assert windowed.total_bytes == 2 * 32 * 8 * 128 * 2 * 4096 and "4096" in (windowed.note or "")
    with pytest.raises(UsageError):
        estimate_kv_cache(None, "fp16", 1, 1)


def test_kv_cache_of_an_encoder_decoder_counts_the_decoder() -> None:
    """BART / Whisper / Marian spell the decoder's sizes decoder_layers and decoder_attention_heads; the Hub's
    configs also carry num_hidden_layers = encoder_layers (distil-whisper: 32 encoder layers, 2 decoder layers).
    The cache was refused without num_hidden_layers, and sized on the encoder's layers with it."""
    distil_whisper = {"model_type": "whisper", "is_encoder_decoder": True, "d_model": 1280, "encoder_layers": 32,
                      "decoder_layers": 2, "encoder_attention_heads": 20, "decoder_attention_heads": 20,
                      "num_hidden_layers": 32, "max_target_positions": 448}
    kv = estimate_kv_cache(distil_whisper, "fp16", batch=1, seq_len=448)
    assert (kv.num_layers, kv.num_kv_heads, kv.head_dim) == (2, 20, 64)
    assert kv.total_bytes == 2 * 2 * 20 * 64 * 2 * 448
    assert "cross-attention" in (kv.note or "")
    bart = {k: v for k, v in distil_whisper.items() if k != "num_hidden_layers"}
    assert estimate_kv_cache(bart, "fp16", batch=1, seq_len=448).total_bytes == kv.total_bytes


def test_kv_cache_of_multi_head_latent_attention_is_what_transformers_caches() -> None:
    """DeepSeek-V3 caches its compressed latent (kv_lora_rank + qk_rope_head_dim per layer and token); the
    estimate was 2 x heads x hidden/heads, 25x the cache of the published config."""
    import transformers

    config = transformers.DeepseekV3Config(
        vocab_size=64, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=8, q_lora_rank=None, qk_rope_head_dim=4,
        qk_nope_head_dim=8, v_head_dim=8, n_routed_experts=4, num_experts_per_tok=2, first_k_dense_replace=1,
        n_group=1, topk_group=1, max_position_embeddings=64)
    measured = _cache_bytes(transformers.DeepseekV3ForCausalLM, config, torch.randint(0, 64, (2, 10)))
    kv = estimate_kv_cache(config.to_dict(), "fp32", batch=2, seq_len=10)
    assert kv.total_bytes == measured and "latent" in (kv.note or "")
    published = {"num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128, "hidden_size": 7168,
                 "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128}  # its config
    assert estimate_kv_cache(published, "bf16", batch=1, seq_len=4096).total_bytes == 61 * 576 * 2 * 4096


def test_training_estimate_matches_accelerate(fx) -> None:
    """`accelerate estimate-memory` sizes the fp32 model (calculate_maximum_sizes), then estimate_training_usage."""
    from accelerate.commands.estimate import estimate_training_usage
    from accelerate.utils import calculate_maximum_sizes

    fp32_model = build_planned_model(open_plan_source(str(fx["bert"])), "fp32").model
    total, _ = calculate_maximum_sizes(fp32_model)
    planned = build_planned_model(open_plan_source(str(fx["bert"])), "bf16")
    estimate = estimate_training(planned.model, "bf16")
    assert estimate.fp32_model_bytes == total
    assert estimate.accelerate_estimate_bytes == max(estimate_training_usage(total, "bfloat16").values())
    assert estimate.accelerate_estimate_bytes == 2 * total  # two fp32 moments are the largest part
    fp32 = estimate_training(fp32_model, "fp32")
    assert fp32.accelerate_estimate_bytes == 4 * total
    assert estimate_training(planned.model, "int8").accelerate_estimate_bytes is None
    assert estimate.total_bytes == estimate.model_bytes + estimate.gradients_bytes + estimate.optimizer_bytes


def test_small_helpers() -> None:
    assert normalize_dtype("bfloat16") == "bf16"
    with pytest.raises(UsageError, match="fp4"):
        normalize_dtype("fp4")
    assert [parse_device_value(v) for v in (0, "1", "cuda:2", "CPU", "disk")] == [0, 1, 2, "cpu", "disk"]
    with pytest.raises(UsageError):
        parse_device_value("tpu")
    ranges = module_ranges({"a": 0, "m.layers.0": 0, "m.layers.1": 0, "m.layers.2": "cpu", "m.layers.3": "cpu",
                            "m.layers.5": "cpu"}, {"m.layers.0": 5, "m.layers.1": 7})
    assert [(r.label, r.device, r.bytes) for r in ranges] == [
        ("a", "cuda:0", 0), ("m.layers.0–1", "cuda:0", 12), ("m.layers.2–3", "cpu", 0), ("m.layers.5", "cpu", 0)
    ]
    assert classify({"a": 0}, True, False) == "fits-on-gpus"
    assert classify({"a": 0, "b": "disk"}, True, False) == "does-not-fit"
    assert classify({"a": "cpu"}, False, False) == "fits-on-cpu"
    assert verdict_exit_code("fits-on-gpus", "offload") == 0
    assert verdict_exit_code("fits-on-gpus", None, [Finding("error", "x", None, "m")]) == 1
    with pytest.raises(UsageError, match="no devices"):
        plan_devices(object(), PlanRequest(gpus=[], cpu=None))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ renderer (canned result)


def test_renderer_and_json_of_a_canned_report() -> None:
    import io

    from rich.console import Console

    from weightdoctor.plan_devices import DeviceUse, HeldBack, ModuleRange, Offload, PlanReport, Suggestion
    from weightdoctor.render.json import to_jsonable
    from weightdoctor.render.plan_devices import render_plan

    report = PlanReport(
        source="m", model_class="ToyForCausalLM", built_from="config", placement="p", strategy="auto",
        dtype="bf16", num_params=1_500_000_000, weights_bytes=3 * GB, buffers_bytes=0, no_split=["ToyLayer"],
        reserve_bytes=0, device_map={"model.layers.0": 0, "model.layers.1": 0, "model.layers.2": "cpu"},
        devices=[
            DeviceUse("cuda:0", 0, 2 * GB, 2 * GB, 2 * GB - 10**8,
                      [ModuleRange("model.layers.0–1", "cuda:0", ["model.layers.0", "model.layers.1"],
                                   2 * GB - 10**8)],
                      [HeldBack("largest-layer", 10**8, "room for model.layers.2")]),
            DeviceUse("cpu", "cpu", 8 * GB, 8 * GB, GB + 10**8,
                      [ModuleRange("model.layers.2", "cpu", ["model.layers.2"], GB + 10**8)]),
        ],
        verdict="needs-cpu-offload", offload=Offload(GB + 10**8, 0, GB + 10**8),
        suggestions=[Suggestion("gpus", "1 more 2.00 GB GPU (2 in all) at bf16", "bf16", [2 * GB] * 2,
                                "fits-on-gpus")],
    )
    buffer = io.StringIO()
    render_plan(report, Console(file=buffer, width=100, color_system=None))
    text = buffer.getvalue()
    assert "model.layers.0–1" in text and "→ cuda:0" in text and "OFFLOAD" in text
    assert "why 100.00 MB of cuda:0 stays free" in text and "largest-layer: room for model.layers.2" in text
    assert "1.10 GB moved to the GPU for every generated token" in text
    assert "needs CPU offload" in text and "smallest change: 1 more 2.00 GB GPU" in text
    data = to_jsonable(report)
    assert data["devices"][0] == {**data["devices"][0], "device": "cuda:0", "capacity_bytes": 2 * GB,
                                  "used_bytes": 2 * GB - 10**8}
    assert data["device_map"]["model.layers.2"] == "cpu" and data["offload"]["bytes_per_token"] == GB + 10**8


@pytest.mark.parametrize("source", ["bert", "files/bert.safetensors"])
def test_lower_float_dtype_suggestion_is_replanned(fx, source) -> None:
    path = fx["bert"] if source == "bert" else fx["files"] / "bert.safetensors"
    planned = build_planned_model(open_plan_source(str(path)))
    assert planned.dtype == "fp32"
    report = plan_devices(planned, PlanRequest(gpus=[60_000], cpu=10**6))
    assert report.verdict == "needs-cpu-offload"
    dtype_fix = next(s for s in report.suggestions if s.change == "dtype")
    assert dtype_fix.dtype == "bf16"
    # the suggestion is what planning at that dtype really gives
    at_bf16 = build_planned_model(open_plan_source(str(path)), "bf16")
    again = plan_devices(at_bf16, PlanRequest(gpus=[60_000], cpu=10**6))
    assert again.verdict == "fits-on-gpus"


def test_sizes_parse_as_accelerate_parses_them() -> None:
    from accelerate.utils import convert_file_size_to_int

    from weightdoctor.units import parse_size

    for text in ("24GB", "24GiB", "200MB", "512MiB", "1.5GB", "80KB", "3KiB"):
        assert parse_size(text) == convert_file_size_to_int(text), text


# ------------------------------------------------------------------------ fine-grained FP8 (DeepSeek-V3, Qwen3-FP8)


@pytest.fixture(scope="module")
def fp8_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import DeepseekV3Config, LlamaConfig

    from fixtures.plan_devices import fp8_checkpoint

    out = tmp_path_factory.mktemp("fp8")
    return {
        "llama": fp8_checkpoint(LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                                            num_attention_heads=4, num_key_value_heads=2, vocab_size=1000),
                                out / "llama"),
        # MoE experts, multi-head latent attention: FP8Experts and FP8Linear both swapped in.
        "deepseek_v3": fp8_checkpoint(DeepseekV3Config(
            hidden_size=256, intermediate_size=512, moe_intermediate_size=256, n_routed_experts=4,
            num_experts_per_tok=2, n_group=1, topk_group=1, num_hidden_layers=3, first_k_dense_replace=1,
            num_attention_heads=4, num_key_value_heads=4, vocab_size=1000, q_lora_rank=128, kv_lora_rank=128,
            qk_rope_head_dim=32, qk_nope_head_dim=32, v_head_dim=64), out / "deepseek_v3"),
    }


@pytest.mark.parametrize("name", ["llama", "deepseek_v3"])
@pytest.mark.parametrize("dtype", ["fp8", None])
@pytest.mark.parametrize("strategy", ["auto", "sequential"])
def test_fp8_checkpoint_maps_equal_from_pretrained(fp8_folders, name, dtype, strategy) -> None:
    """--dtype fp8: the map from_pretrained computes on GPUs of compute capability 9.0 (its FP8 quantizer keeps the
    weights); the default: the map it computes where it dequantizes them (a CPU-only machine, GPUs below 8.9)."""
    from fixtures.plan_devices import (
        from_pretrained_device_map_on_fp8_gpus,
        from_pretrained_device_map_where_fp8_is_dequantized,
    )

    folder = fp8_folders[name]
    with open_plan_source(str(folder)) as checkpoint:
        planned = build_planned_model(checkpoint, dtype)
    assert planned.dtype == (dtype or "bf16")
    total = sum(p.numel() * p.element_size() for p in planned.model.parameters())
    assert any(p.dtype == torch.float8_e4m3fn for p in planned.model.parameters()) == (dtype == "fp8")
    for gpus in ([total // 3, total // 3], [total // 2, total // 4, total // 4]):
        memory = _memory(gpus, 10 * GB)
        oracle = (from_pretrained_device_map_on_fp8_gpus if dtype == "fp8"
                  else from_pretrained_device_map_where_fp8_is_dequantized)
        expected = oracle(folder, strategy, memory)
        report = plan_devices(planned, PlanRequest(gpus=gpus, cpu=10 * GB, strategy=strategy))
        assert report.device_map == expected
    if dtype is None:
        assert any("--dtype fp8 plans that" in w for w in planned.warnings)


@pytest.fixture(scope="module")
def fp8_moe_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny FP8 MoE checkpoints of the architectures scripts/fp8_sweep.py sweeps (the MoE ones, as they ship)."""
    from transformers import Glm4MoeConfig, MixtralConfig, Qwen2MoeConfig, Qwen3MoeConfig

    from fixtures.plan_devices import fp8_checkpoint

    out = tmp_path_factory.mktemp("fp8_moe")
    common = {"vocab_size": 1000, "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
              "num_hidden_layers": 4, "intermediate_size": 512}
    moe = {"moe_intermediate_size": 256, "num_experts_per_tok": 2}
    return {
        # a dense first layer (mlp_only_layers) among FP8Experts layers
        "qwen3_moe": fp8_checkpoint(Qwen3MoeConfig(**common, **moe, head_dim=64, num_experts=4,
                                                   mlp_only_layers=[0]), out / "qwen3_moe"),
        # q/k/v biases (bf16 beside FP8Linear weights) and a shared expert
        "qwen2_moe": fp8_checkpoint(Qwen2MoeConfig(**common, **moe, num_experts=4,
                                                   shared_expert_intermediate_size=256), out / "qwen2_moe"),
        # modules_to_not_convert: the router and the first layer's attention stay bf16
        "mixtral-skip": fp8_checkpoint(MixtralConfig(**common, num_local_experts=4, num_experts_per_tok=2),
                                       out / "mixtral", {**FP8_QUANTIZATION, "modules_to_not_convert": [
                                           "lm_head", "model.layers.0.self_attn", "mlp.gate"]}),
        "glm4_moe-tied": fp8_checkpoint(Glm4MoeConfig(**common, **moe, head_dim=64, n_routed_experts=4, n_group=1,
                                                      topk_group=1, first_k_dense_replace=1,
                                                      tie_word_embeddings=True), out / "glm4_moe"),
    }


@pytest.mark.parametrize(("name", "strategy", "split", "cpu"), [
    ("qwen3_moe", "balanced", (2, 4, 4), 10 * GB),
    ("qwen2_moe", "balanced_low_0", (2, 2, 2, 2), 10 * GB),
    ("mixtral-skip", "auto", (3, 4), None),  # no CPU budget: disk
    ("glm4_moe-tied", "sequential", (2, 2), 10 * GB),
])
def test_fp8_moe_maps_equal_from_pretrained(fp8_moe_folders, name, strategy, split, cpu) -> None:
    """MoE FP8 checkpoints, --dtype fp8 and the default, against from_pretrained's maps (scripts/fp8_sweep.py
    sweeps 19 architectures this way); budgets are fractions (1/n) of the planned size."""
    from fixtures.plan_devices import (
        from_pretrained_device_map_on_fp8_gpus,
        from_pretrained_device_map_where_fp8_is_dequantized,
    )

    folder = fp8_moe_folders[name]
    for dtype, oracle in (("fp8", from_pretrained_device_map_on_fp8_gpus),
                          (None, from_pretrained_device_map_where_fp8_is_dequantized)):
        with open_plan_source(str(folder)) as checkpoint:
            planned = build_planned_model(checkpoint, dtype)
        total = sum(p.numel() * p.element_size() for p in planned.model.parameters())
        gpus = [total // n for n in split]
        expected = oracle(folder, strategy, _memory(gpus, cpu))
        report = plan_devices(planned, PlanRequest(gpus=gpus, cpu=cpu, disk=True, strategy=strategy))
        assert report.device_map == expected, dtype
        assert len(set(expected.values())) > 1, dtype  # the case does split the model


def test_fp8_is_suggested_for_an_fp8_checkpoint_and_refused_for_others(fp8_folders, fx) -> None:
    """Planned dequantized, an FP8 checkpoint that fits only in FP8 gets `--dtype fp8` as its smallest change (not
    bitsandbytes' int8, which transformers refuses on a pre-quantized checkpoint); --dtype fp8 on a checkpoint of
    another kind is a usage error."""
    with open_plan_source(str(fp8_folders["llama"])) as checkpoint:
        planned = build_planned_model(checkpoint)
        fp8 = build_planned_model(checkpoint, "fp8")
    fp8_total = sum(p.numel() * p.element_size() for p in fp8.model.parameters())
    report = plan_devices(planned, PlanRequest(gpus=[fp8_total * 3 // 4] * 2, cpu=10 * GB))
    assert report.verdict != "fits-on-gpus"
    assert [(s.change, s.dtype) for s in report.suggestions if s.change == "dtype"] == [("dtype", "fp8")]
    assert "compute capability 8.9" in report.suggestions[0].description
    with open_plan_source(str(fx["gpt2"])) as checkpoint, pytest.raises(UsageError, match="fine-grained FP8"):
        build_planned_model(checkpoint, "fp8")


def test_fp8_plans_leave_transformers_fp8_experts_class_as_it_was(tmp_path) -> None:
    """transformers' FP8 quantizer wraps `FP8Experts.__init__` (use_experts_implementation, in place) once per MoE
    layer it converts: planned again and again in one process, an MoE model's FP8 plan failed with RecursionError
    after a few hundred layers (and its `--dtype fp8` suggestion vanished). Each plan leaves the class as it was."""
    from transformers import Qwen3MoeConfig
    from transformers.integrations.finegrained_fp8 import FP8Experts

    from fixtures.plan_devices import fp8_checkpoint

    folder = fp8_checkpoint(Qwen3MoeConfig(vocab_size=1000, hidden_size=128, num_attention_heads=2,
                                           num_key_value_heads=1, head_dim=64, intermediate_size=256,
                                           moe_intermediate_size=128, num_experts=2, num_experts_per_tok=1,
                                           num_hidden_layers=4), tmp_path / "qwen3_moe")
    before = dict(vars(FP8Experts))
    for _ in range(3):
        with open_plan_source(str(folder)) as checkpoint:
            planned = build_planned_model(checkpoint, "fp8")
        assert dict(vars(FP8Experts)) == before
    assert any(p.dtype == torch.float8_e4m3fn for p in planned.model.parameters())


def test_fp8_linear_biases_are_planned_at_bf16_as_from_pretrained_makes_them(tmp_path) -> None:
    """FP8Linear makes its bias with torch.empty (the default dtype): from_pretrained runs the FP8 quantizer inside
    its init contexts (default dtype bf16), so the biases of Qwen2's or GLM-4's q/k/v projections are bf16 there.
    Planned at float32, the layers came out larger and the maps differed (balanced_low_0, sequential)."""
    from transformers import Qwen2Config

    from fixtures.plan_devices import fp8_checkpoint, from_pretrained_device_map_on_fp8_gpus

    folder = fp8_checkpoint(Qwen2Config(vocab_size=1000, hidden_size=256, intermediate_size=512,
                                        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2),
                            tmp_path / "qwen2")
    with open_plan_source(str(folder)) as checkpoint:
        planned = build_planned_model(checkpoint, "fp8")
    biases = {name: p.dtype for name, p in planned.model.named_parameters() if name.endswith("proj.bias")}
    assert biases and set(biases.values()) == {torch.bfloat16}
    total = sum(p.numel() * p.element_size() for p in planned.model.parameters())
    for strategy, gpus in (("sequential", [total] * 2), ("balanced_low_0", [total // 2] * 4)):
        expected = from_pretrained_device_map_on_fp8_gpus(folder, strategy, _memory(gpus, 10 * GB))
        report = plan_devices(planned, PlanRequest(gpus=gpus, cpu=10 * GB, strategy=strategy))
        assert report.device_map == expected, strategy


def test_fp8_plan_keeps_the_configs_dtype_for_the_unquantized_rest(tmp_path) -> None:
    """transformers' FP8 quantizer does not change the model's dtype: an FP8 checkpoint whose config names float32
    keeps its embeddings, norms and scales-free rest at float32 on FP8 GPUs (from_pretrained's dtype="auto").
    --dtype fp8 planned them at bf16 (half their size), so every map differed."""
    from transformers import LlamaConfig

    from fixtures.plan_devices import fp8_checkpoint, from_pretrained_device_map_on_fp8_gpus

    folder = fp8_checkpoint(LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512,
                                        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2),
                            tmp_path / "llama", dtype=torch.float32)
    with open_plan_source(str(folder)) as checkpoint:
        planned = build_planned_model(checkpoint, "fp8")
    assert planned.model.model.embed_tokens.weight.dtype == torch.float32
    assert planned.model.model.layers[0].mlp.up_proj.weight.dtype == torch.float8_e4m3fn
    total = sum(p.numel() * p.element_size() for p in planned.model.parameters())
    for strategy, gpus in (("auto", [total // 2] * 3), ("sequential", [total * 2 // 3] * 2)):
        expected = from_pretrained_device_map_on_fp8_gpus(folder, strategy, _memory(gpus, 10 * GB))
        report = plan_devices(planned, PlanRequest(gpus=gpus, cpu=10 * GB, strategy=strategy))
        assert report.device_map == expected, strategy
    with open_plan_source(str(folder)) as checkpoint:  # dequantized: to the config's dtype as well
        assert any("(fp8): planned at fp32" in w for w in build_planned_model(checkpoint).warnings)
    kv = {dtype: plan_devices(build_planned_model(open_plan_source(str(folder)), dtype),
                              PlanRequest(gpus=[GB], cpu=None, kv_cache=(2, 64))).kv_cache for dtype in ("fp8", None)}
    assert kv["fp8"].total_bytes == kv[None].total_bytes  # keys and values at float32 as well


@pytest.mark.parametrize("dequantize", [False, True])
def test_fp8_embedding_tables_stay_fp8_where_the_rest_is_dequantized(tmp_path, dequantize) -> None:
    """`modules_to_convert` names embedding tables transformers' FP8 quantizer swaps for FP8Embedding even where it
    dequantizes the rest (CPU, GPUs below 8.9, `dequantize: true`): the default plan built them at bf16, twice
    their size, and its maps differed from from_pretrained's."""
    from transformers import LlamaConfig

    from fixtures.plan_devices import fp8_checkpoint, from_pretrained_device_map_where_fp8_is_dequantized

    quantization = {**FP8_QUANTIZATION, "modules_to_convert": ["embed_tokens"], "dequantize": dequantize}
    folder = fp8_checkpoint(LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512,
                                        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2),
                            tmp_path / "llama", quantization)
    with open_plan_source(str(folder)) as checkpoint:
        planned = build_planned_model(checkpoint)
    assert planned.dtype == "bf16"
    assert planned.model.model.embed_tokens.weight.dtype == torch.float8_e4m3fn
    assert planned.model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    total = sum(p.numel() * p.element_size() for p in planned.model.parameters())
    for strategy, gpus in (("auto", [total * 2 // 3] * 2), ("sequential", [total] * 2)):
        expected = from_pretrained_device_map_where_fp8_is_dequantized(folder, strategy, _memory(gpus, 10 * GB))
        report = plan_devices(planned, PlanRequest(gpus=gpus, cpu=10 * GB, strategy=strategy))
        assert report.device_map == expected, strategy


def test_kv_cache_windows_the_layers_transformers_windows_in_a_config_without_layer_types() -> None:
    """Published Gemma-2 / Cohere2 / Qwen2 configs predate `layer_types`: transformers derives the sliding layers
    from the other fields (Gemma-2: every other layer; Qwen2: none without use_sliding_window), the estimate
    windowed every layer that had a sliding_window (found by scripts/kv_cache_sweep.py)."""
    gemma2_9b = {"model_type": "gemma2", "num_hidden_layers": 42, "num_attention_heads": 16, "num_key_value_heads": 8,
                 "head_dim": 256, "hidden_size": 3584, "sliding_window": 4096}  # its config.json, the sizes
    kv = estimate_kv_cache(gemma2_9b, "bf16", batch=1, seq_len=8192)
    per_token_layer = 2 * 8 * 256 * 2
    assert kv.total_bytes == 21 * per_token_layer * 8192 + 21 * per_token_layer * 4096
    assert "21 of 42 layers" in (kv.note or "")
    qwen25 = {"model_type": "qwen2", "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
              "hidden_size": 896, "sliding_window": 32768, "use_sliding_window": False, "max_window_layers": 21}
    kv = estimate_kv_cache(qwen25, "bf16", batch=1, seq_len=65536)
    assert kv.total_bytes == 24 * 2 * 2 * 64 * 2 * 65536 and kv.note is None


def test_kv_cache_of_state_space_models_and_hybrids_counts_the_attention_layers() -> None:
    """Jamba caches keys and values in its attention layers only; the Mamba layers keep a recurrent state of
    fixed size. The estimate counted every layer as attention (2x on this Jamba), and refused Mamba."""
    import transformers

    config = transformers.JambaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, num_experts=2, num_experts_per_tok=1, expert_layer_period=2, expert_layer_offset=1,
        attn_layer_period=2, attn_layer_offset=1, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2)
    measured = _cache_bytes(transformers.JambaForCausalLM, config, torch.randint(0, 64, (2, 10)))
    kv = estimate_kv_cache(config.to_dict(), "fp32", batch=2, seq_len=10)
    assert kv.total_bytes == measured == 2 * 2 * 2 * 8 * 4 * 2 * 10 and kv.num_layers == 2
    assert "2 of 4 layers keep a recurrent state" in (kv.note or "")
    mamba = transformers.MambaConfig(vocab_size=64, hidden_size=32, state_size=8, num_hidden_layers=3).to_dict()
    kv = estimate_kv_cache(mamba, "bf16", batch=1, seq_len=4096)
    assert (kv.total_bytes, kv.num_layers) == (0, 0) and "no KV cache" in (kv.note or "")


def test_kv_cache_leaves_out_the_layers_that_share_an_earlier_layers_cache() -> None:
    """Gemma-3n's last num_kv_shared_layers reuse the keys and values of earlier layers: transformers gives them
    no cache (its "dummy" layers). The estimate counted them (4 layers, not 2, here)."""
    import transformers

    config = transformers.Gemma3nTextConfig(
        vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, sliding_window=8, num_kv_shared_layers=2, max_position_embeddings=64)
    kv = estimate_kv_cache(config.to_dict(), "fp32", batch=1, seq_len=6)
    assert (kv.num_layers, kv.total_bytes) == (2, 2 * 2 * 2 * 16 * 4 * 6)
    assert "2 of 4 layers cache nothing" in (kv.note or "")


def test_kv_cache_of_chunked_attention_keeps_at_most_a_chunk() -> None:
    """Llama 4's chunked layers (attention_chunk_size; three of every four) keep at most a chunk, as sliding
    layers keep a window (transformers gives both a DynamicSlidingWindowLayer): they were counted whole."""
    import transformers

    config = transformers.Llama4TextConfig(
        vocab_size=128, hidden_size=32, intermediate_size=48, intermediate_size_mlp=48, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, attention_chunk_size=8, num_local_experts=2)
    kv = estimate_kv_cache(config.to_dict(), "bf16", batch=1, seq_len=13)
    assert kv.total_bytes == 2 * 2 * 8 * 2 * (3 * 8 + 13) and "(3 of 4 layers) keep at most 8 tokens" in kv.note


def test_kv_cache_of_deepseek_v32_counts_its_indexer_keys() -> None:
    """DeepSeek-V3.2's sparse attention caches, beside the latent, its indexer's key of every token
    (index_head_dim values per layer): left out, the estimate was 60 % of this cache."""
    import transformers

    config = transformers.DeepseekV32Config(
        vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=64, moe_intermediate_size=16, kv_lora_rank=8, q_lora_rank=12,
        qk_rope_head_dim=4, qk_nope_head_dim=8, v_head_dim=8, n_routed_experts=4, num_experts_per_tok=2,
        first_k_dense_replace=1, n_group=1, topk_group=1, index_topk=4, index_head_dim=8, index_n_heads=2)
    from transformers.cache_utils import DYNAMIC_LAYER_TYPE_MAPPING

    measured = _cache_bytes(transformers.DeepseekV32ForCausalLM, config, torch.randint(4, 100, (2, 13)),
                            ("keys", "values", "indexer_keys"))
    kv = estimate_kv_cache(config.to_dict(), "fp32", batch=2, seq_len=13)
    # per layer and token: the latent (8 + 4) and the indexer's key (8); transformers 5.17 (whose layers are
    # "deepseek_sparse_attention") caches the keys (8 + 4) and values (8) of each of the 4 heads instead of the latent
    per_layer = 4 * (8 + 4 + 8) + 8 if "deepseek_sparse_attention" in DYNAMIC_LAYER_TYPE_MAPPING else 8 + 4 + 8
    assert kv.total_bytes == measured == 2 * per_layer * 4 * 2 * 13 and "index_head_dim = 8" in (kv.note or "")


def test_kv_cache_of_zamba_reads_its_attention_head_dim() -> None:
    """Zamba's shared attention runs on the hidden state concatenated with the embeddings: its heads are
    attention_head_dim = 2 x hidden_size / heads wide, which the estimate took as hidden_size / heads (half)."""
    import transformers

    config = transformers.ZambaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=12, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=64, mamba_d_state=8, n_mamba_heads=2, mamba_expand=2)
    measured = _cache_bytes(transformers.ZambaForCausalLM, config, torch.randint(4, 100, (2, 13)))
    kv = estimate_kv_cache(config.to_dict(), "fp32", batch=2, seq_len=13)
    assert (kv.num_layers, kv.head_dim) == (2, 16) and kv.total_bytes == measured == 2 * 2 * 4 * 16 * 4 * 2 * 13


def test_offload_per_step_is_said_per_token_for_a_language_model_and_per_pass_otherwise(tmp_path: Path) -> None:
    """Offloaded weights are streamed once per forward pass: a generated token for an LM, an image or a denoising
    step for a UNet, VAE or classifier, which have no tokens to generate."""
    from tests.helpers import run_cli

    config = {"model_type": "bert", "architectures": ["BertForSequenceClassification"], "hidden_size": 256,
              "num_hidden_layers": 8, "num_attention_heads": 4, "intermediate_size": 1024, "vocab_size": 30522}
    (tmp_path / "config.json").write_text(json.dumps(config))
    # review59: 20MB held no module (its embeddings alone are 31 MB): that map, {"": "cpu"}, runs on the CPU and
    # streams nothing; 40MB holds the embeddings and streams the rest.
    result = run_cli("plan-devices", str(tmp_path), "--gpu", "40MB", "--cpu", "1GB")
    out = " ".join(result.stdout.split())
    assert result.exit_code == 0 and "offload:" in out, out
    assert "moved to the GPU for every forward pass" in out and "s/pass" in out and "token" not in out
    llama = run_cli("plan-devices", "fixtures/configs/llama-2-70b", "--gpu", "24GB", "--cpu", "200GB")
    assert "moved to the GPU for every generated token" in " ".join(llama.stdout.split())


def test_a_small_offload_time_is_said_in_its_own_unit_not_as_zero_seconds(tmp_path: Path) -> None:
    """~1.5 MB offloaded at 25 GB/s is ~60 µs per token; `≥ 0.00 s/token` read as if the offload cost nothing."""
    from tests.helpers import run_cli, run_subprocess

    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 1000}
    (tmp_path / "config.json").write_text(json.dumps(config))
    # review59: 300KB held no module ({"": "cpu"} runs on the CPU and streams nothing); 600KB holds some
    args = ("plan-devices", str(tmp_path), "--gpu", "600KB", "--cpu", "1GB")
    out = " ".join(run_cli(*args).stdout.split())
    assert "0.00 s" not in out
    match = re.search(r"≥ ([\d.]+) µs/token", out)
    assert match and 10 < float(match.group(1)) < 200, out
    # An ASCII console gets `us`, not an escape.
    ascii_out = run_subprocess(*args, env={"PYTHONIOENCODING": "ascii", "COLUMNS": "200"}).stdout
    assert re.search(r">= [\d.]+ us/token", ascii_out) and "\\xb5" not in ascii_out, ascii_out
