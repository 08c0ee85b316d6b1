"""Fix list 20: check-dtype and plan-devices held to what torch, accelerate and transformers really do.

check-dtype's line on what `.to()` does beyond a target's range said fp16 sends everything beyond ±65504 to ±inf,
while torch rounds 65504 < |x| < 65520 to ±65504 (the same table counted those values as clamped, not overflowed).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_json

# Targets whose cast overflows beyond a rounding margin, with exactly printed bounds (fp16, fp8 e5m2 and the fnuz
# formats): (target, torch dtype, explicit mantissa bits).
OVERFLOWING = [("fp16", torch.float16, 10), ("fp8_e5m2", torch.float8_e5m2, 2),
               ("fp8_e4m3fnuz", torch.float8_e4m3fnuz, 3), ("fp8_e5m2fnuz", torch.float8_e5m2fnuz, 2)]


def _cast(values: list[float], dtype: torch.dtype) -> list[float]:
    return torch.tensor(values, dtype=torch.float32).to(dtype).to(torch.float64).tolist()


@pytest.mark.parametrize(("target", "dtype", "mantissa"), OVERFLOWING)
def test_what_to_does_beyond_the_range_is_said_as_torch_casts_the_values_just_above_max(
    target: str, dtype: torch.dtype, mantissa: int, tmp_path: Path
) -> None:
    top = torch.finfo(dtype).max
    inside = top * (1 + 2.0 ** -(mantissa + 2))  # above max by less than half its spacing
    path = tmp_path / "w.safetensors"
    # max, a value a little above it, and 4 × max (all fp32); the counts say what torch's cast did to each
    save_file({"w": torch.tensor([top, inside, top * 4, 1.0])}, str(path))
    code, data = run_json("check-dtype", path, "--target", target)
    assert code == 0
    report = data["targets"][target]
    said = report["torch_behaviour"]
    match = re.match(r"beyond ±(\S+) → ±(\S+) below ±(\S+), (\S+) from ±(\S+) \(overflows\); ", said)
    assert match, said
    low, rounded, high, beyond, start = match.groups()
    assert float(low) == float(rounded) == top and high == start
    threshold = float(high)
    below = float(torch.nextafter(torch.tensor(threshold, dtype=torch.float32), torch.tensor(0.0)))
    # torch's own cast: the bound is where it stops rounding to max, and what it gives from there is what is said
    assert _cast([below, (top + below) / 2], dtype) == [top, top]
    [at] = _cast([threshold], dtype)
    assert not torch.isfinite(torch.tensor(at)) and beyond == ("NaN" if at != at else "±inf")
    # `inside` lies within the rounding margin: clamped to max, not overflowed, as the line now says
    assert top < inside < threshold and _cast([inside], dtype) == [top]
    assert report["saturated"] == 1 and report["overflow"] == 1


def test_fp16_line_names_65520_and_the_values_below_it_stay_finite(tmp_path: Path) -> None:
    """The example the line is read for: 65519 comes back as 65504 from torch, 65520 as inf."""
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.tensor([65504.0, 65505.0, 65519.0, 65520.0, 70000.0])}, str(path))
    code, data = run_json("check-dtype", path, "--target", "fp16")
    fp16 = data["targets"]["fp16"]
    assert code == 0 and _cast([65505.0, 65519.0, 65520.0], torch.float16) == [65504.0, 65504.0, float("inf")]
    assert fp16["torch_behaviour"] == "beyond ±65504 → ±65504 below ±65520, ±inf from ±65520 (overflows); inf → inf; " \
        "NaN → NaN"
    assert "beyond ±65504 → ±inf" not in fp16["torch_behaviour"]
    assert (fp16["overflow"], fp16["saturated"]) == (2, 2)


def test_a_saturating_cast_and_float64_are_said_as_before() -> None:
    from weightdoctor.check_dtype import cast_behaviour

    said = cast_behaviour("fp8_e4m3")
    if _cast([1e5], torch.float8_e4m3fn) == [448.0]:  # torch 2.13 saturates the float8 cast
        assert _cast([449.0, 1e5], torch.float8_e4m3fn) == [448.0, 448.0]
        assert said.startswith("beyond ±448 → ±448 (saturates)"), said
    else:  # torch 2.11 gives NaN past a bound above 448: said as the overflowing casts are, with torch's bound
        match = re.match(r"beyond ±448 → ±448 below ±(\S+), NaN from ±(\S+) \(overflows\); ", said)
        assert match and match.group(1) == match.group(2), said
        bound = float(match.group(1))
        below = float(torch.nextafter(torch.tensor(bound, dtype=torch.float32), torch.tensor(0.0)))
        [at] = _cast([bound], torch.float8_e4m3fn)
        assert _cast([449.0, below], torch.float8_e4m3fn) == [448.0, 448.0] and at != at, (said, at)
    assert cast_behaviour("fp64").startswith("beyond ±1.79769e+308 → ±inf (overflows)")


def _t5_folder(out: Path) -> Path:
    """A tiny T5 whose block 0 of each stack is larger than the others (its relative_attention_bias)."""
    import transformers as T

    config = T.T5Config(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=3, num_decoder_layers=3,
                        num_heads=4, architectures=["T5ForConditionalGeneration"])
    torch.manual_seed(0)
    T.T5ForConditionalGeneration(config).save_pretrained(out)
    return out


def test_why_a_device_stays_free_is_the_room_the_planner_kept_when_its_next_module_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planner (transformers' infer_auto_device_map, as accelerate's) keeps room on the first GPU and on the CPU for
    the largest layer still to place *besides the module it is trying*: trying decoder.block.0, it keeps the size of
    decoder.block.1. plan-devices named decoder.block.0 itself (512 bytes larger: its relative_attention_bias), so its
    next-module-too-big bytes were not the room the planner said it had. The oracle is the planner's own verbose
    account ("Not enough space on D to put M (space available A, ...)")."""
    import contextlib
    import io

    import transformers.integrations.accelerate as hf_accelerate

    from weightdoctor.plan_devices import PlanRequest, build_planned_model, open_plan_source, plan_devices

    folder = _t5_folder(tmp_path / "t5")
    real = hf_accelerate.infer_auto_device_map

    def verbose(*args: object, **kwargs: object) -> object:
        return real(*args, **{**kwargs, "verbose": True})  # type: ignore[arg-type]

    monkeypatch.setattr(hf_accelerate, "infer_auto_device_map", verbose)
    with open_plan_source(str(folder)) as checkpoint:
        planned = build_planned_model(checkpoint)
    block0 = sum(p.numel() * 4 for p in planned.model.decoder.block[0].parameters())
    block1 = sum(p.numel() * 4 for p in planned.model.decoder.block[1].parameters())
    assert block0 - block1 == 4 * 32 * 4  # heads × buckets × fp32
    compared = 0
    # (GPUs, CPU, the module the planner fails to put on the CPU, the layer it keeps room for meanwhile)
    for gpus, cpu, failing, kept_for in [([504234, 302540], 378176, "decoder.block.0", "decoder.block.1"),
                                         ([], 378176, "encoder.block.0", "decoder.block.0"),
                                         ([], 300000, "shared", "decoder.block.0")]:
        said = io.StringIO()
        with contextlib.redirect_stdout(said):
            report = plan_devices(planned, PlanRequest(gpus=gpus, cpu=cpu, disk=True, suggest=False))
        last: dict[str, tuple[str, int]] = {}
        for found in re.finditer(r"Not enough space on (\S+) to put (\S+) \(space available (-?\d+)", said.getvalue()):
            last[found.group(1)] = (found.group(2), int(found.group(3)))
        cpu_use = next(d for d in report.devices if d.key == "cpu")
        assert last["cpu"][0] == failing
        reasons = {h.reason: h for h in cpu_use.held_back}
        assert reasons["next-module-too-big"].bytes == last["cpu"][1]
        assert f"the next module, {failing} (" in reasons["next-module-too-big"].detail
        kept = planned.model.get_submodule(kept_for)
        assert reasons["largest-layer"].bytes == sum(p.numel() * 4 for p in kept.parameters())
        assert f"({kept_for}, " in reasons["largest-layer"].detail
        assert sum(h.bytes for h in cpu_use.held_back) == cpu - cpu_use.used_bytes
        compared += 1
    assert compared == 3


@pytest.mark.parametrize("size", [4, 40_000])  # cast with others in one batch, and alone in chunks
def test_an_inf_the_cast_does_not_keep_makes_the_tensor_unsafe_as_torch_casts_it(size: int, tmp_path: Path) -> None:
    """torch casts ±inf to ±448 in float8_e4m3fn (it saturates) and to NaN in the fnuz formats: an attention mask's
    -inf stops masking. check-dtype called that "2 value(s) rounded", verdict lossy."""
    mask = torch.zeros(size)
    mask[0], mask[1], mask[2] = float("-inf"), float("inf"), 1.0
    path = tmp_path / "m.safetensors"
    save_file({"mask": mask, "plain": torch.tensor([0.5, 1.0])}, str(path))
    code, data = run_json("check-dtype", path, "--target", "fp8_e4m3,fp8_e4m3fnuz,fp16")
    assert code == 0
    for target, dtype in (("fp8_e4m3", torch.float8_e4m3fn), ("fp8_e4m3fnuz", torch.float8_e4m3fnuz),
                          ("fp16", torch.float16)):
        cast = mask.to(dtype).to(torch.float32)
        lost = int((torch.isinf(mask) & (cast != mask)).sum())
        became_nan = int((torch.isinf(mask) & torch.isnan(cast)).sum())
        report = data["targets"][target]
        row = next(t for t in report["tensors"] if t["name"] == "mask")
        advice = data["recommendation"]["text"]
        assert row["inf_lost"] == lost and row["inf"] == 2 and row["overflow"] == 0
        if not lost:  # fp16 keeps ±inf
            assert row["verdict"] == "safe" and report["verdict"] == "safe"
            continue
        assert lost == 2 and row["verdict"] == "unsafe" and report["verdict"] == "unsafe"
        assert "rounded" not in row["reason"]
        if became_nan:
            assert row["reason"] == "2 inf values become NaN"
            assert f"{target} is unsafe: turns ±inf into NaN in 1 tensor (2 values)" in advice
        else:
            assert cast[:2].tolist() == [-448.0, 448.0]
            assert row["reason"] == "2 inf values become finite (±max)"
            assert f"{target} is unsafe: turns ±inf into ±448 in 1 tensor (2 values)" in advice
