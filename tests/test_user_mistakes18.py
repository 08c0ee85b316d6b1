"""Round 18 of the common mistakes users make: an ML engineer's bad day with device plans and casts.

Checked against the libraries themselves on tiny seeded models of recent architectures (transformers 5.25): no fault
found this round, so these are oracle tests that keep it so.
- plan-devices' device map equals accelerate's `infer_auto_device_map` run on the model built on the meta device
  (its `_no_split_modules`, `get_balanced_memory` for the balanced strategies) for budgets that fit, just fit, just do
  not fit, need CPU offload and need disk offload, at fp32 and bf16: Qwen3 (tied embeddings), Qwen3-MoE, and Jamba
  (two no-split classes, Mamba and attention layers).
- its advice for a budget that does not fit ("N more GPUs", "--cpu", "--disk"), pasted, gives the plan it promised;
- its weight bytes at --dtype bf16 / fp16 keep Dots1's `_keep_in_fp32_modules_strict` (router gates) in fp32, as
  from_pretrained(dtype=...) does on a real load;
- check-dtype's overflow / clamped / flushed-to-zero / subnormal / changed counts equal what `tensor.to(float16 /
  bfloat16)` does, counted here, for an fp32 and a bf16 checkpoint; its pasted convert --keep-fp32 command writes
  exactly the tensors it names in fp32 and the others cast;
- convert --dtype bf16 then from_pretrained(dtype="auto") loads bf16 weights equal to the model's cast, nothing
  missing; shard --max then from_pretrained loads weights equal to the original, nothing missing.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import json_report, run_cli

_COMMON = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, head_dim=8, max_position_embeddings=64)


def _config(kind: str) -> Any:
    import transformers

    if kind == "qwen3":
        return transformers.Qwen3Config(**_COMMON, tie_word_embeddings=True)
    if kind == "qwen3_moe":
        return transformers.Qwen3MoeConfig(**_COMMON, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16)
    if kind == "jamba":
        return transformers.JambaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=2, num_experts=2,
                                        expert_layer_period=2, attn_layer_period=2, attn_layer_offset=1,
                                        mamba_d_state=8, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    raise AssertionError(kind)


def _save(kind: str, folder: Path) -> Any:
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(_config(kind)).eval()
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module", params=["qwen3", "qwen3_moe", "jamba"])
def saved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp(request.param) / request.param
    _save(request.param, folder)
    return request.param, folder


def _accelerate_map(folder: Path, dtype: Any, max_memory: dict[Any, int], strategy: str) -> dict[str, Any]:
    """What from_pretrained(device_map=strategy, max_memory=...) places, computed by accelerate on the meta model."""
    import torch
    import transformers
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    config = transformers.AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    no_split = list(model._no_split_modules)
    budgets = dict(max_memory) if strategy == "sequential" else get_balanced_memory(
        model, max_memory=dict(max_memory), no_split_module_classes=no_split)
    return dict(infer_auto_device_map(model, max_memory=budgets, no_split_module_classes=no_split))


def _weights_bytes(folder: Path, dtype: Any) -> int:
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    return sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.mark.parametrize("dtype_name", ["fp32", "bf16"])
@pytest.mark.parametrize("share, cpu", [(0.3, 0), (0.3, 10_000_000), (0.55, 0), (1.0, 0), (1.05, 0)])
@pytest.mark.parametrize("strategy", ["sequential", "auto"])
def test_the_plan_is_accelerates_map_of_the_meta_model(saved: tuple[str, Path], dtype_name: str, share: float,
                                                       cpu: int, strategy: str) -> None:
    import torch

    _, folder = saved
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    gpu = int(_weights_bytes(folder, dtype) * share)
    expected = _accelerate_map(folder, dtype, {0: gpu, 1: gpu, "cpu": cpu}, strategy)
    cpu_args = ["--cpu", f"{cpu}B"] if cpu else []
    report = json_report("plan-devices", str(folder), "--gpu", f"{gpu}B", "--gpu", f"{gpu}B", *cpu_args, "--disk",
                         "--strategy", strategy, "--dtype", dtype_name)
    assert report["device_map"] == expected
    on_disk = any(device == "disk" for device in expected.values())
    on_cpu = any(device == "cpu" for device in expected.values())
    assert report["verdict"] == ("needs-disk-offload" if on_disk else "needs-cpu-offload" if on_cpu
                                 else "fits-on-gpus"), report["verdict"]


def test_the_advice_for_a_budget_that_does_not_fit_gives_the_plan_it_promised(saved: tuple[str, Path]) -> None:
    kind, folder = saved
    gpu = int(_weights_bytes(folder, __import__("torch").float32) * 0.4)
    report = json_report("plan-devices", str(folder), "--gpu", f"{gpu}B", "--dtype", "fp32")
    assert report["verdict"] == "does-not-fit"
    text = run_cli("plan-devices", str(folder), "--gpu", f"{gpu}B", "--dtype", "fp32").stdout
    more = [line for line in text.splitlines() if "more" in line and "GPU" in line]
    assert more, text
    words = more[0].split("smallest change:")[1].split()
    extra, in_all = int(words[0]), int(words[words.index("in") - 1].lstrip("("))
    assert in_all == extra + 1
    pasted = json_report("plan-devices", str(folder), *(["--gpu", f"{gpu}B"] * in_all), "--dtype", "fp32")
    assert pasted["verdict"] == "fits-on-gpus", (kind, pasted["device_map"])
    fewer = json_report("plan-devices", str(folder), *(["--gpu", f"{gpu}B"] * (in_all - 1)), "--dtype", "fp32")
    assert fewer["verdict"] == "does-not-fit"
    assert json_report("plan-devices", str(folder), "--gpu", f"{gpu}B", "--dtype", "fp32", "--cpu", "1GB")[
        "verdict"] == "needs-cpu-offload"
    assert json_report("plan-devices", str(folder), "--gpu", f"{gpu}B", "--dtype", "fp32", "--disk")[
        "verdict"] == "needs-disk-offload"


@pytest.mark.parametrize("dtype_name", ["bf16", "fp16"])
def test_router_gates_kept_in_fp32_are_counted_as_a_real_load_keeps_them(dtype_name: str, tmp_path: Path) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.Dots1Config(vocab_size=256, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                                      num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                      n_routed_experts=8, num_experts_per_tok=2, first_k_dense_replace=1,
                                      n_shared_experts=1, n_group=2, topk_group=1)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "dots1")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "dots1", dtype=dtype)
    kept = [name for name, p in loaded.named_parameters() if p.dtype == torch.float32]
    assert kept and all(name.endswith("mlp.gate.weight") for name in kept)
    report = json_report("plan-devices", str(tmp_path / "dots1"), "--dtype", dtype_name, "--gpu", "1GB")
    assert report["weights_bytes"] == sum(p.numel() * p.element_size() for p in loaded.parameters())


def _own_cast_counts(tensor: Any, target: Any) -> dict[str, int]:
    import torch

    cast = tensor.to(target)
    wide, back = tensor.double(), cast.double()
    finite = torch.isfinite(wide)
    largest = torch.finfo(target).max
    return {
        "overflow": int((torch.isinf(back) & finite).sum()),
        "saturated": int(((back.abs() == largest) & finite & (wide.abs() > largest)).sum()),
        "underflow": int(((back == 0) & (wide != 0)).sum()),
        "subnormal": int(((back != 0) & (back.abs() < torch.finfo(target).smallest_normal)).sum()),
        "changed": int(((back != wide) & ~torch.isnan(wide)).sum()),
    }


@pytest.mark.parametrize("stored", ["fp32", "bf16"])
def test_check_dtype_counts_are_what_the_cast_does(stored: str, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(18)
    tensors = {
        "spread": torch.randn(4096, generator=generator) * torch.logspace(-44, 38, 4096) / 1e34,
        "edges": torch.tensor([65504.0, 65519.0, 65520.0, -65536.0, 6e-8, 2.9e-8, 3.0e-8, 5.96e-8, 1e-40, 0.0]),
        "plain": torch.randn(64, 64, generator=generator),
    }
    tensors["spread"][::97] = torch.randn(43, generator=generator) * 1e5
    storage = {"fp32": torch.float32, "bf16": torch.bfloat16}[stored]
    tensors = {name: t.to(storage).contiguous() for name, t in tensors.items()}
    source = tmp_path / "weights.safetensors"
    save_file(tensors, str(source))
    report = json_report("check-dtype", str(source), "--target", "fp16,bf16")
    for target_name, target in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        per_tensor = {entry["name"]: entry for entry in report["targets"][target_name]["tensors"]}
        totals = dict.fromkeys(("overflow", "saturated", "underflow", "subnormal", "changed"), 0)
        for name, tensor in tensors.items():
            counted = _own_cast_counts(tensor, target)
            said = {key: per_tensor[name][key] for key in counted}
            assert said == counted, (target_name, name)
            for key, value in counted.items():
                totals[key] += value
        assert {key: report["targets"][target_name][key] for key in totals} == totals


def test_the_pasted_keep_fp32_convert_keeps_exactly_the_tensors_it_names(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    generator = torch.Generator().manual_seed(3)
    tensors = {"big": torch.randn(512, generator=generator) * 40000,
               "tiny": torch.randn(512, generator=generator) * 1e-9,
               "plain": torch.randn(512, generator=generator)}
    save_file(tensors, str(tmp_path / "w.safetensors"))
    monkeypatch.chdir(tmp_path)
    text = run_cli("check-dtype", "w.safetensors").stdout
    commands = [line for line in text.splitlines() if line.startswith("weightdoctor convert") and "fp16" in line]
    assert commands, text
    words = shlex.split(commands[0])
    assert run_cli(*words[1:]).exit_code == 0
    written = load_file(str(tmp_path / words[words.index("-o") + 1]))
    assert {name: str(t.dtype) for name, t in written.items()} == {
        "big": "torch.float32", "tiny": "torch.float32", "plain": "torch.float16"}
    for name, tensor in tensors.items():
        assert torch.equal(written[name], tensor.to(written[name].dtype))


def test_convert_to_bf16_and_shard_load_back_equal(tmp_path: Path) -> None:
    import torch
    import transformers

    model = _save("qwen3", tmp_path / "qwen3")
    assert run_cli("convert", str(tmp_path / "qwen3"), "-o", str(tmp_path / "bf16"), "--dtype", "bf16").exit_code == 0
    assert run_cli("shard", str(tmp_path / "qwen3"), "-o", str(tmp_path / "sharded"), "--max", "20KB").exit_code == 0
    assert len(list((tmp_path / "sharded").glob("model-*-of-*.safetensors"))) > 4
    original = model.state_dict()
    for folder, dtype in (("bf16", torch.bfloat16), ("sharded", torch.float32)):
        loaded, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / folder, dtype="auto",
                                                                          output_loading_info=True)
        assert not any(info.values()), (folder, info)
        assert loaded.dtype == dtype
        state = loaded.state_dict()
        assert state.keys() == original.keys()
        assert all(torch.equal(state[name], original[name].to(dtype)) for name in original), folder
