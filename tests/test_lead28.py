"""The lead's fixes of the twenty-eighth session.

plan-devices' `gpu-size` suggestion: a model just too big for the GPUs given is told the least `--gpu` of the same
count that holds it, checked against from_pretrained's own device map at that size and one unit below.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.plan_devices import config_folder, from_pretrained_device_map
from tests.helpers import json_report, run_subprocess
from weightdoctor.plan_devices import PlanRequest, build_planned_model, open_plan_source, plan_devices

GB = 10**9
MB = 10**6


@pytest.fixture(scope="module")
def mistral(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return config_folder("mistral-7b", tmp_path_factory.mktemp("configs"))


def _on_gpus_only(device_map: dict[str, int | str]) -> bool:
    return all(not isinstance(device, str) for device in device_map.values())


@pytest.mark.parametrize("count, size", [(1, 12 * GB), (2, 7 * GB), (3, 4 * GB)])
def test_gpu_size_suggestion_is_the_least_that_from_pretrained_fits(mistral: Path, count: int, size: int) -> None:
    planned = build_planned_model(open_plan_source(str(mistral)), "bf16")
    report = plan_devices(planned, PlanRequest(gpus=[size] * count, cpu=100 * GB))
    assert report.verdict == "needs-cpu-offload"
    (suggestion,) = [s for s in report.suggestions if s.change == "gpu-size"]
    fits = suggestion.gpus[0]
    assert suggestion.gpus == [fits] * count and fits % GB == 0 and fits > size
    assert suggestion.verdict == "fits-on-gpus" and suggestion.dtype == "bf16"
    assert suggestion.description.startswith(f"--gpu {fits // GB}GB" + (f" for each of the {count} GPUs (instead of"
                                                                         if count > 1 else " (instead of"))
    import torch

    # transformers' own planner: every module on a GPU at the size suggested, something off them one GB below
    at = from_pretrained_device_map(mistral, "auto", {**dict.fromkeys(range(count), fits), "cpu": 100 * GB},
                                    dtype=torch.bfloat16)
    below = from_pretrained_device_map(mistral, "auto", {**dict.fromkeys(range(count), fits - GB), "cpu": 100 * GB},
                                       dtype=torch.bfloat16)
    assert _on_gpus_only(at) and not _on_gpus_only(below)


def test_gpu_size_suggestion_in_the_cli_text_and_json(mistral: Path) -> None:
    args = ["plan-devices", str(mistral), "--gpu", "6GiB", "--gpu", "6GiB", "--dtype", "bf16"]
    report = json_report(*args)
    (suggestion,) = [s for s in report["suggestions"] if s["change"] == "gpu-size"]
    typed = suggestion["description"].split()[1]
    assert typed.endswith("GiB") and suggestion["gpus"] == [int(typed[:-3]) * 2**30] * 2  # binary, as typed
    again = json_report("plan-devices", str(mistral), "--gpu", typed, "--gpu", typed, "--dtype", "bf16")
    assert again["verdict"] == "fits-on-gpus"
    less = f"{int(typed[:-3]) - 1}GiB"
    assert json_report("plan-devices", str(mistral), "--gpu", less, "--gpu", less, "--dtype", "bf16")["verdict"] \
        != "fits-on-gpus"
    text = run_subprocess(*args, env={"COLUMNS": "200"})
    assert f"smallest change: --gpu {typed} for each of the 2 GPUs (instead of 6.00 GiB) at bf16" in text.stdout


def test_gpu_size_suggestion_for_a_small_model_is_in_smaller_units(tmp_path: Path) -> None:
    """A test-sized model rounded up to a whole GB would be told thousands of times what it needs."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=64, n_head=2, vocab_size=500, n_positions=64)).save_pretrained(
        tmp_path / "gpt2")
    planned = build_planned_model(open_plan_source(str(tmp_path / "gpt2")))
    total = sum(p.numel() * p.element_size() for p in planned.model.parameters())
    report = plan_devices(planned, PlanRequest(gpus=[total // 3] * 2, cpu=10 * GB))
    (suggestion,) = [s for s in report.suggestions if s.change == "gpu-size"]
    size = suggestion.gpus[0]
    assert size % 1000 == 0 and size < total and f"--gpu {size // 1000}KB for each of the 2 GPUs" \
        in suggestion.description
    assert plan_devices(planned, PlanRequest(gpus=[size] * 2, cpu=10 * GB)).verdict == "fits-on-gpus"
    assert plan_devices(planned, PlanRequest(gpus=[size - 1000] * 2, cpu=10 * GB)).verdict != "fits-on-gpus"


def test_no_gpu_size_suggestion_for_mixed_gpus_or_a_fit(mistral: Path) -> None:
    planned = build_planned_model(open_plan_source(str(mistral)), "bf16")
    mixed = plan_devices(planned, PlanRequest(gpus=[4 * GB, 6 * GB], cpu=100 * GB))
    assert mixed.verdict == "needs-cpu-offload"
    assert not [s for s in mixed.suggestions if s.change == "gpu-size"]
    fits = plan_devices(planned, PlanRequest(gpus=[20 * GB], cpu=100 * GB))
    assert fits.verdict == "fits-on-gpus" and fits.suggestions == []


def test_gpu_size_suggestion_at_a_bitsandbytes_dtype_counts_its_headroom(tmp_path: Path) -> None:
    """bitsandbytes keeps 10% of each GPU back: Llama-2-70B at int4 (~35 GB) does not fit one GPU of its own size
    plus a GB, so the search goes past it (it offered nothing)."""
    planned = build_planned_model(open_plan_source(str(config_folder("llama-2-70b", tmp_path))), "int4")
    report = plan_devices(planned, PlanRequest(gpus=[20 * GB], cpu=None))
    (suggestion,) = [s for s in report.suggestions if s.change == "gpu-size"]
    size = suggestion.gpus[0]
    assert suggestion.description == f"--gpu {size // GB}GB (instead of 20.00 GB) at int4"
    assert plan_devices(planned, PlanRequest(gpus=[size], cpu=None)).verdict == "fits-on-gpus"
    assert plan_devices(planned, PlanRequest(gpus=[size - GB], cpu=None)).verdict != "fits-on-gpus"
