"""plan-devices against the map from_pretrained computes, on what scripts/plan_sweep.py does not cover.

Architectures the sweep leaves out (MoE seq2seq, MoE decoders with strict fp32 gates, hybrids, vision backbones,
multimodal models whose `_no_split_modules` gather their sub-models' classes, a `_no_placement_params` model),
every strategy, budgets that force CPU and disk offload; sizes typed in mixed units; `_keep_in_fp32_modules`
at fp16 / bf16; a config.json planned without its weights. The oracle is the real `from_pretrained`, stopped
right after its `_get_device_map` (`fixtures.plan_devices.from_pretrained_device_map`).
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from fixtures.plan_devices import from_pretrained_device_map
from tests.helpers import run_json

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
HALF = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _llama() -> dict[str, Any]:
    return {"vocab_size": 256, "hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 128,
            "intermediate_size": 128, "num_hidden_layers": 4, "num_key_value_heads": 2}


def _vision() -> dict[str, Any]:
    return {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": 32, "patch_size": 8}


def _configs() -> dict[str, tuple[Callable[[], Any], str, str]]:
    """name -> (tiny config, dtype saved, the --dtype planned beside the default)."""
    import transformers as T

    t5ish = {"vocab_size": 256, "d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_decoder_layers": 2,
             "num_heads": 4}
    bartish = {"vocab_size": 256, "d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
               "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128,
               "max_position_embeddings": 64}
    return {
        "switch": (lambda: T.SwitchTransformersConfig(
            **t5ish, num_experts=4, encoder_sparse_step=1, decoder_sparse_step=1,
            architectures=["SwitchTransformersForConditionalGeneration"]), "fp32", "fp16"),
        "nllb_moe": (lambda: T.NllbMoeConfig(**bartish, num_experts=4, expert_capacity=8,
                                             architectures=["NllbMoeForConditionalGeneration"]), "fp32", "bf16"),
        "qwen3_moe": (lambda: T.Qwen3MoeConfig(**_llama(), num_experts=4, num_experts_per_tok=2,
                                               moe_intermediate_size=64, head_dim=16,
                                               architectures=["Qwen3MoeForCausalLM"]), "bf16", "fp32"),
        # gate.weight and e_score_correction_bias: _keep_in_fp32_modules_strict
        "deepseek_v3": (lambda: T.DeepseekV3Config(
            **_llama(), n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, first_k_dense_replace=1,
            n_group=1, topk_group=1, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
            v_head_dim=16, architectures=["DeepseekV3ForCausalLM"]), "bf16", "fp16"),
        "jamba": (lambda: T.JambaConfig(**_llama(), num_experts=2, expert_layer_period=2, expert_layer_offset=1,
                                        attn_layer_period=2, attn_layer_offset=1, mamba_d_state=8, mamba_dt_rank=8,
                                        use_mamba_kernels=False, architectures=["JambaForCausalLM"]), "bf16", "fp16"),
        # its norms: _keep_in_fp32_modules at fp16
        "gpt_oss": (lambda: T.GptOssConfig(**_llama(), num_local_experts=4, num_experts_per_tok=2, head_dim=16,
                                           layer_types=["sliding_attention", "full_attention"] * 2,
                                           architectures=["GptOssForCausalLM"]), "bf16", "fp16"),
        "swin": (lambda: T.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                                      window_size=4, architectures=["SwinForImageClassification"]), "fp32", "bf16"),
        # query_tokens and the Q-Former: _keep_in_fp32_modules at fp16; OPT's tied head
        "blip2": (lambda: T.Blip2Config(
            vision_config=_vision(), num_query_tokens=4, architectures=["Blip2ForConditionalGeneration"],
            qformer_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                            "intermediate_size": 64, "encoder_hidden_size": 32},
            text_config=T.OPTConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2, ffn_dim=128,
                                    num_attention_heads=4, max_position_embeddings=64,
                                    word_embed_proj_dim=64).to_dict()), "fp32", "fp16"),
        "gemma3": (lambda: T.Gemma3Config(
            vision_config=T.SiglipVisionConfig(**_vision()).to_dict(),
            text_config=T.Gemma3TextConfig(**_llama(), head_dim=16).to_dict(), mm_tokens_per_image=4,
            image_token_index=250, boi_token_index=251, eoi_token_index=252,
            architectures=["Gemma3ForConditionalGeneration"]), "bf16", "fp16"),
        "idefics3": (lambda: T.Idefics3Config(
            vision_config=_vision(), text_config=T.LlamaConfig(**_llama()).to_dict(), image_token_id=250,
            scale_factor=2, architectures=["Idefics3ForConditionalGeneration"]), "fp32", "bf16"),
        "vit_gpt2": (lambda: T.VisionEncoderDecoderConfig.from_encoder_decoder_configs(
            T.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                        image_size=32, patch_size=8),
            T.GPT2Config(vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=64, add_cross_attention=True,
                         is_decoder=True), architectures=["VisionEncoderDecoderModel"]), "fp32", "fp16"),
        "fsmt": (lambda: T.FSMTConfig(src_vocab_size=256, tgt_vocab_size=256, d_model=64, encoder_layers=2,
                                      decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                                      encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64,
                                      langs=["en", "de"], architectures=["FSMTForConditionalGeneration"]),
                 "fp32", "fp16"),
    }


def _save(make: Callable[[], Any], saved: str, folder: Path) -> Path:
    import transformers

    config = make()
    torch.manual_seed(0)
    model = getattr(transformers, config.architectures[0])(config).to(HALF[saved])
    model.save_pretrained(folder)
    data = json.loads((folder / "config.json").read_text())
    data["dtype"] = str(HALF[saved]).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(data))
    return folder


def _oracle_bytes(folder: Path, dtype: torch.dtype) -> int:
    """The model's size as from_pretrained's planner counts it, on the model built as from_pretrained builds it
    (its own init contexts), so the budgets do not move with a weightdoctor bug."""
    import transformers
    from transformers.integrations.accelerate import compute_module_sizes
    from transformers.utils.generic import ContextManagers

    config = transformers.AutoConfig.from_pretrained(folder)
    cls = getattr(transformers, config.architectures[0])
    # as from_pretrained calls it: transformers 5.25 passes the config too, 5.17's takes none
    with_config = {"config": config} if "config" in inspect.signature(cls.get_init_context).parameters else {}
    with ContextManagers(cls.get_init_context(dtype, False, False, False, **with_config)):
        model = cls(copy.deepcopy(config))
    return int(compute_module_sizes(model)[0][""])


def _budgets(total: int) -> list[tuple[list[int], int | None]]:
    # GPUs + CPU; GPUs + CPU + disk; GPUs + disk (no CPU budget); CPU + disk only: each forces some offload
    return [([total // 2], 10**10), ([total // 4, total // 4], total // 4), ([total // 3, total // 4], None),
            ([], total // 2)]


@pytest.mark.parametrize("name", list(_configs()))
def test_new_architectures_every_strategy_and_offload_budget_equal_from_pretrained(
    name: str, tmp_path: Path
) -> None:
    from weightdoctor.plan_devices import PlanRequest, build_planned_model, open_plan_source, plan_devices

    make, saved, other = _configs()[name]
    folder = _save(make, saved, tmp_path / name)
    compared = 0
    for dtype in (None, other):
        torch_dtype = HALF[dtype or saved]
        with open_plan_source(str(folder)) as checkpoint:
            planned = build_planned_model(checkpoint, dtype)
        assert planned.dtype == (dtype or saved)
        total = _oracle_bytes(folder, torch_dtype)
        for strategy in STRATEGIES:
            for gpus, cpu in _budgets(total):
                memory: dict[int | str, int] = {**dict(enumerate(gpus)), **({"cpu": cpu} if cpu else {})}
                expected = from_pretrained_device_map(folder, strategy, memory, dtype=torch_dtype)
                request = PlanRequest(gpus=gpus, cpu=cpu, strategy=strategy, disk=True, suggest=False)
                got = plan_devices(planned, request).device_map
                assert got == expected, (name, dtype, strategy, gpus, cpu)
                compared += 1
    assert compared == 2 * len(STRATEGIES) * 4


def test_sizes_in_mixed_units_and_reserve_equal_from_pretrained_given_the_same_strings(tmp_path: Path) -> None:
    import transformers as T

    folder = _save(lambda: T.LlamaConfig(**_llama(), architectures=["LlamaForCausalLM"]), "bf16", tmp_path / "m")
    cases = [  # (strategy, --gpu sizes, --cpu, max_memory as from_pretrained is given it)
        ("auto", ["150KiB", "0.12MB"], "1GiB", {0: "150KiB", 1: "0.12MB", "cpu": "1GiB"}),
        ("balanced", ["1.5e5", "150000"], "2GB", {0: 150000, 1: 150000, "cpu": "2GB"}),
        ("balanced_low_0", ["100KiB", "50KiB", "150KiB"], "1e3MB", {0: "100KiB", 1: "50KiB", 2: "150KiB",
                                                                    "cpu": "1e3MB"}),
        ("sequential", ["90KB", "0.2MiB"], "0.1MiB", {0: "90KB", 1: "0.2MiB", "cpu": "0.1MiB"}),
    ]
    for strategy, gpus, cpu, memory in cases:
        args = [a for g in gpus for a in ("--gpu", g)]
        code, data = run_json("plan-devices", folder, "--strategy", strategy, "--disk", "--cpu", cpu, *args)
        assert code == 0 and data["device_map"] == from_pretrained_device_map(folder, strategy, memory), strategy
        assert {d for d in data["device_map"].values()} & {"cpu", "disk"}  # the budgets force offload
    # --reserve: each GPU handed to the planner as its size less the reserve, in whatever units each is typed
    code, data = run_json("plan-devices", folder, "--gpu", "0.25MiB", "--gpu", "250KB", "--reserve", "50KiB",
                          "--cpu", "1GB")
    assert code == 0 and data["reserve_bytes"] == 51200
    assert data["device_map"] == from_pretrained_device_map(folder, "auto", {0: "200KiB", 1: 250000 - 51200,
                                                                             "cpu": "1GB"})


@pytest.mark.parametrize(("arch", "dtype"), [("t5", "fp16"), ("deepseek_v3", "bf16")])
def test_keep_in_fp32_modules_count_at_the_requested_dtype_as_from_pretrained_plans_them(
    arch: str, dtype: str, tmp_path: Path
) -> None:
    """from_pretrained (v5) computes its map on the model built at the requested dtype and casts the modules its
    `_keep_in_fp32_modules` (`_strict`) name to float32 only as it loads them: planning those at fp32 bytes would
    give another map. Tensors the model itself builds in fp32 (DeepSeek-V3's gate) count at fp32 in both."""
    import transformers as T

    from weightdoctor.plan_devices import PlanRequest, build_planned_model, open_plan_source, plan_devices

    if arch == "t5":
        make: Callable[[], Any] = lambda: T.T5Config(  # noqa: E731 - one line per case
            vocab_size=64, d_model=64, d_kv=16, d_ff=512, num_layers=3, num_decoder_layers=3, num_heads=4,
            architectures=["T5ForConditionalGeneration"])
    else:
        make = _configs()["deepseek_v3"][0]
    folder = _save(make, "fp32", tmp_path / arch)
    total = _oracle_bytes(folder, HALF[dtype])
    memory: dict[int | str, int] = {0: total // 3, 1: total // 3, "cpu": 10**10}
    expected = from_pretrained_device_map(folder, "sequential", memory, dtype=HALF[dtype])
    code, data = run_json("plan-devices", folder, "--dtype", dtype, "--strategy", "sequential",
                          "--gpu", str(total // 3), "--gpu", str(total // 3), "--cpu", "10GB")
    assert code == 0 and data["device_map"] == expected
    with open_plan_source(str(folder)) as checkpoint:
        planned = build_planned_model(checkpoint, dtype)
    plan = planned.model._get_dtype_plan(HALF[dtype])
    upcast = [n for n, p in planned.model.named_parameters()
              if any(key in n for key in plan) and p.dtype == HALF[dtype]]
    if arch == "t5":
        # the six wo weights, at fp16 in the plan, named in the warning with the bytes a load adds
        assert len(upcast) == 6 and data["weights_bytes"] == total
        [warning] = [w for w in data["warnings"] if "_keep_in_fp32_modules" in w]
        assert "keeps 6 tensors of wo in float32 at fp16" in warning
        # counted at fp32 instead, they move the map: the plan would disagree with from_pretrained
        for name in upcast:
            module = planned.model.get_submodule(name.rsplit(".", 1)[0])
            module.weight = torch.nn.Parameter(torch.empty_like(module.weight, dtype=torch.float32))
        request = PlanRequest(gpus=[total // 3, total // 3], cpu=10**10, strategy="sequential", suggest=False)
        assert plan_devices(planned, request).device_map != expected
    else:
        # the strict gates are built in fp32 already: counted so by both, and nothing is left to warn about.
        # transformers 5.25 keeps gate.weight strictly in fp32; 5.17 names only e_score_correction_bias, and
        # builds the gate at the requested dtype (its map still equalled from_pretrained's above)
        gates = {n: p.dtype for n, p in planned.model.named_parameters() if n.endswith("mlp.gate.weight")}
        assert gates and not upcast
        assert all(kind == (torch.float32 if any(key in n for key in plan) else HALF[dtype])
                   for n, kind in gates.items()), (plan, gates)
        assert not [w for w in data["warnings"] if "_keep_in_fp32_modules" in w]


def test_no_placement_params_escape_is_planned_as_from_pretrained_and_the_escaped_table_counted(
    tmp_path: Path
) -> None:
    """Qwen4-Exp's `_no_placement_params`: a decoder layer too big for the next GPU is placed without its n-gram
    table, which no map entry then covers (and the map is not merged)."""
    import transformers as T

    from weightdoctor.plan_devices import PlanRequest, build_planned_model, open_plan_source, plan_devices

    config = T.Qwen4ExpTextConfig(
        vocab_size=256, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
        linear_num_value_heads=4, moe_intermediate_size=32, shared_expert_intermediate_size=32, num_experts=4,
        num_experts_per_tok=2, hc_count=2, hc_lowrank=8, ple_layer_ids=[1, 3], ple_embed_dim=32,
        ngram_vocab_size_base=1000, make_ngram_vocab_size_divisible_by=8, split_ngram_parts=4, heads_per_ngram=2,
        indexer_n_heads=2, indexer_kv_heads=1, indexer_head_dim=16, indexer_budget=16, indexer_compress_ratio=4,
        eos_token_id=2, bos_token_id=1, pad_token_id=0, architectures=["Qwen4ExpForCausalLM"])
    torch.manual_seed(0)
    T.Qwen4ExpForCausalLM(config).save_pretrained(tmp_path / "q4")
    folder = tmp_path / "q4"
    memory: dict[int | str, int] = {0: 300_000, 1: 300_000, 2: 300_000, "cpu": 10**10}
    expected = from_pretrained_device_map(folder, "sequential", memory)
    with open_plan_source(str(folder)) as checkpoint:
        planned = build_planned_model(checkpoint)
    report = plan_devices(planned, PlanRequest(gpus=[300_000] * 3, cpu=10**10, strategy="sequential",
                                               suggest=False))
    assert report.device_map == expected
    escaped = "model.layers.0.ple.ple_embedding.ngram_embedding.weight"
    assert report.unplaced == {escaped: "cpu"}
    assert "model.layers.0.ple.key_proj.weight" in expected  # the layer's other tensors placed one by one
    table = planned.model.get_parameter(escaped)
    cpu = next(d for d in report.devices if d.key == "cpu")
    assert any(r.label == f"{escaped} (in no map entry)" and r.bytes == table.numel() * 4 for r in cpu.ranges)


def test_a_config_json_without_dtype_beside_half_precision_weights_is_warned(tmp_path: Path) -> None:
    """A config.json without dtype, given as the source beside its bf16 weights, was planned at fp32 in silence:
    twice the bytes from_pretrained(dtype="auto") of that folder loads, and another map."""
    import transformers as T

    torch.manual_seed(0)
    model = T.LlamaForCausalLM(T.LlamaConfig(**_llama(), architectures=["LlamaForCausalLM"])).to(torch.bfloat16)
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    del config["dtype"]
    (folder / "config.json").write_text(json.dumps(config))
    memory: dict[int | str, int] = {0: 200_000, 1: 200_000, "cpu": 10**10}
    expected = from_pretrained_device_map(folder, "auto", memory)
    sizes = ["--gpu", "200000", "--gpu", "200000", "--cpu", "10GB"]
    code, data = run_json("plan-devices", folder, *sizes)
    assert code == 0 and data["dtype"] == "bf16" and data["device_map"] == expected
    assert not [w for w in data["warnings"] if "names no dtype" in w]
    code, data = run_json("plan-devices", folder / "config.json", *sizes)
    assert code == 0 and data["dtype"] == "fp32" and data["device_map"] != expected
    [warning] = [w for w in data["warnings"] if "names no dtype" in w]
    assert warning.startswith("config.json names no dtype and no weights were read: planned at fp32")
    assert "--dtype bf16 or fp16 plans that" in warning
    assert warning.endswith("its folder holds the weights (model.safetensors): give the folder as SOURCE to plan "
                            "at their dtype")
    code, data = run_json("plan-devices", folder / "config.json", "--dtype", "bf16", *sizes)
    assert code == 0 and data["device_map"] == expected and not [w for w in data["warnings"] if "no dtype" in w]
    # a config alone (a repo fetched for its config): warned, without a folder to point at
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "config.json").write_text(json.dumps(config))
    code, data = run_json("plan-devices", alone, *sizes)
    [warning] = [w for w in data["warnings"] if "names no dtype" in w]
    assert code == 0 and data["dtype"] == "fp32" and "its folder holds" not in warning
    # a config that names its dtype says enough
    (alone / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    code, data = run_json("plan-devices", alone, *sizes)
    assert code == 0 and data["dtype"] == "bf16" and not [w for w in data["warnings"] if "no dtype" in w]


@pytest.mark.parametrize(("strategy", "gpus", "cpu"), [
    ("auto", ["8GB"], "0GB"),  # a CPU budget of 0: everything past the GPU to disk
    ("balanced", ["1KiB", "8GB"], "20GB"),  # a first GPU too small for any layer
    ("balanced_low_0", ["1KiB", "8GB", "8GB"], "20GB"),
    ("balanced_low_0", ["8GB", "1KiB"], None),  # no CPU budget: the rest to disk
    ("auto", ["1KiB", "1KiB"], "1KiB"),  # nothing fits anywhere: all on disk
    ("balanced", ["20GB", "20GB"], None),  # room to spare: balanced over both
    ("sequential", [], "1KiB"),
])
def test_extreme_budgets_on_a_published_config_equal_from_pretrained(
    strategy: str, gpus: list[str], cpu: str | None, tmp_path: Path
) -> None:
    from fixtures.plan_devices import config_folder

    folder = config_folder("mistral-7b", tmp_path)
    memory: dict[int | str, int | str] = {**dict(enumerate(gpus)), **({"cpu": cpu} if cpu else {})}
    args = [a for g in gpus for a in ("--gpu", g)] + (["--cpu", cpu] if cpu else [])
    code, data = run_json("plan-devices", folder, "--strategy", strategy, "--disk", *args)
    assert code == 0 and data["device_map"] == from_pretrained_device_map(folder, strategy, memory)
    where = set(data["device_map"].values())
    assert data["verdict"] == ("needs-disk-offload" if "disk" in where else "fits-on-cpu" if not gpus else
                               "needs-cpu-offload" if "cpu" in where else "fits-on-gpus")


@pytest.mark.parametrize(("strategy", "gpu_shares", "ram_share"), [
    ("auto", [1.05], 0.33), ("balanced", [1.05], 0.33), ("balanced_low_0", [1.05], 0.33),  # a GPU with < 10% to spare
    ("sequential", [1.05], 0.33),
    ("auto", [0.525, 0.525], 0.33), ("balanced_low_0", [0.35, 0.7], 0.33),  # several GPUs: none is scaled
    ("sequential", [0.3], 1.0),  # RAM for the rest with < 10% to spare: the real load offloads to disk
])
def test_local_plans_as_from_pretrained_without_max_memory_on_the_same_machine(
    strategy: str, gpu_shares: list[float], ram_share: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--local read the machine and planned on 100% of it; from_pretrained(device_map=...) without max_memory
    plans on 90% of the RAM and, balancing over a lone GPU, 90% of it: a model --local said fits on the GPU
    was offloaded by the real load."""
    import transformers as T
    import transformers.integrations.accelerate as hf_accelerate

    from weightdoctor import plan_devices as wd

    folder = _save(lambda: T.LlamaConfig(**_llama(), architectures=["LlamaForCausalLM"]), "bf16", tmp_path / "m")
    total = _oracle_bytes(folder, torch.bfloat16)
    gpus = [int(total * share) for share in gpu_shares]
    ram = int(total * ram_share)
    machine: dict[int | str, int] = {**dict(enumerate(gpus)), "cpu": ram}
    reads = hf_accelerate.accelerate_max_memory

    def accelerate_reads_this_machine(max_memory: Any = None) -> Any:
        return dict(machine) if max_memory is None else reads(max_memory)

    monkeypatch.setattr(hf_accelerate, "accelerate_max_memory", accelerate_reads_this_machine)
    expected = from_pretrained_device_map(folder, strategy, None)  # type: ignore[arg-type]
    monkeypatch.setattr(wd, "read_local_devices", lambda: wd.LocalDevices(gpus, ["Fake GPU"] * len(gpus), ram, True,
                                                                          "bf16", False))
    code, data = run_json("plan-devices", folder, "--local", "--strategy", strategy, "--disk")
    assert code == 0 and data["dtype"] == "bf16" and data["device_map"] == expected
    devices = {d["key"]: d for d in data["devices"]}
    assert devices["cpu"]["capacity_bytes"] == ram and devices[0]["capacity_bytes"] == gpus[0]
    kept = {k: [h for h in d["held_back"] if h["reason"] == "unset-max-memory"] for k, d in devices.items()}
    assert kept["cpu"] == [] or kept["cpu"][0]["bytes"] <= ram - int(ram * 0.9)
    if ram_share == 1.0:
        assert "disk" in set(expected.values()) and kept["cpu"][0]["bytes"] == ram - int(ram * 0.9)
        assert "90% of the RAM available" in kept["cpu"][0]["detail"] and data["verdict"] == "needs-disk-offload"
    if len(gpus) == 1 and strategy != "sequential":
        # the lone GPU's 10%: named, and the reasons still add up to what it leaves free
        assert "cpu" in set(expected.values()) and kept[0][0]["bytes"] == gpus[0] - int(gpus[0] * 0.9)
        assert "90% of the free memory of a lone GPU" in kept[0][0]["detail"]
        assert sum(h["bytes"] for h in devices[0]["held_back"]) == gpus[0] - devices[0]["used_bytes"]
        assert data["verdict"] == "needs-cpu-offload"
    else:
        assert all(not kept[k] for k in devices if isinstance(k, int))
