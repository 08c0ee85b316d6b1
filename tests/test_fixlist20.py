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

    assert _cast([449.0, 1e5], torch.float8_e4m3fn) == [448.0, 448.0]
    assert cast_behaviour("fp8_e4m3").startswith("beyond ±448 → ±448 (saturates)")
    assert cast_behaviour("fp64").startswith("beyond ±1.79769e+308 → ±inf (overflows)")
