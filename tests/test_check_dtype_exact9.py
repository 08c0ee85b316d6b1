"""check-dtype does not read a tensor whose stored dtype casts exactly to every target (fp8 weights to fp16 / bf16).

The rule (`casts_exactly`) is derived from the formats; these tests check it against torch's own casts over every
bit pattern of the fp8 and 16-bit dtypes, and on real files that the figures match those of a real cast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli, run_json
from weightdoctor.check_dtype import TARGETS, cast_counts, casts_exactly
from weightdoctor.checkpoint import Checkpoint
from weightdoctor.dtypes import FLOATING

# Every floating dtype this torch has: the stored kinds (fp8 fnuz, e8m0, fp4 included) and every target.
DTYPES = sorted({d for d in [*FLOATING, *TARGETS.values()] if isinstance(getattr(torch, d, None), torch.dtype)})
PATTERN_INT = {8: torch.uint8, 16: torch.int16}


def _bits(dtype: str) -> int | None:
    try:
        return torch.finfo(getattr(torch, dtype)).bits
    except TypeError:
        return None


def _every_value(dtype: str) -> torch.Tensor:
    """All 2^bits bit patterns of an 8- or 16-bit dtype, as that dtype."""
    bits = _bits(dtype)
    assert bits in PATTERN_INT
    return torch.arange(2 ** bits, dtype=torch.int64).to(PATTERN_INT[bits]).view(getattr(torch, dtype))


def _violations(stored: str, target: str) -> list[str]:
    """What torch's cast of every `stored` value to `target` does that an exact, normal-or-zero cast would not."""
    x = _every_value(stored)
    wide = x.to(torch.float64)
    y = x.to(getattr(torch, target)).to(torch.float64)
    nan_x, nan_y = torch.isnan(wide), torch.isnan(y)
    problems = []
    if bool((nan_x != nan_y).any()):
        problems.append("NaN not kept")
    same = (wide == y) | (nan_x & nan_y)
    if not bool(same.all()):
        problems.append(f"{int((~same).sum())} value(s) changed")
    finite = torch.isfinite(y)
    small = finite & (y != 0) & (y.abs() < torch.finfo(getattr(torch, target)).smallest_normal)
    if bool(small.any()):
        problems.append(f"{int(small.sum())} subnormal")
    return problems


SMALL = [d for d in DTYPES if _bits(d) in PATTERN_INT]
PAIRS = [(s, t) for s in SMALL for t in DTYPES]


def test_the_pairs_are_what_the_formats_say() -> None:
    accepted = {(s, t) for s, t in PAIRS if casts_exactly(s, t)}
    # fp8 checkpoints' default targets; fp16 → fp32; e5m2's subnormals are not fp16 normals.
    assert {("float8_e4m3fn", "float16"), ("float8_e4m3fn", "bfloat16"), ("float8_e4m3fn", "float32"),
            ("float16", "float32"), ("bfloat16", "float64"), ("float8_e5m2", "bfloat16")} <= accepted
    rejected = {("bfloat16", "bfloat16"), ("float16", "float16"), ("float8_e5m2", "float16"),
                ("bfloat16", "float32"), ("bfloat16", "float16"), ("float16", "bfloat16")}
    if hasattr(torch, "float8_e5m2fnuz"):
        # torch.finfo(float8_e5m2fnuz).eps is 0.125 (torch 2.13), as if it had 3 mantissa bits: e4m3 does not fit.
        rejected.add(("float8_e4m3fn", "float8_e5m2fnuz"))
    assert not rejected & accepted
    assert not casts_exactly("float4_e2m1fn_x2", "float32")  # no finfo: read, never assumed


@pytest.mark.parametrize(("stored", "target"), PAIRS, ids=[f"{s}-{t}" for s, t in PAIRS])
def test_every_bit_pattern_agrees_with_the_rule(stored: str, target: str) -> None:
    """An accepted pair casts all 256 / 65536 values exactly and never subnormal; a rejected one does not."""
    try:
        problems = _violations(stored, target)
    except (RuntimeError, TypeError) as exc:  # torch has no such cast: then the rule must not accept it
        assert not casts_exactly(stored, target), exc
        return
    if casts_exactly(stored, target):
        assert problems == []
        # The counts check-dtype would have measured are the ones it now writes without reading.
        finite = _every_value(stored)
        counts, = cast_counts(finite, [getattr(torch, target)])
        assert (counts.overflow, counts.saturated, counts.underflow, counts.subnormal, counts.changed,
                counts.max_rel_error) == (0, 0, 0, 0, 0, 0.0)
    else:
        assert problems, "the rule rejects a cast that is exact: tighten casts_exactly"


def test_fp32_to_fp64_on_extremes() -> None:
    assert casts_exactly("float32", "float64") and not casts_exactly("float64", "float32")
    info = torch.finfo(torch.float32)
    x = torch.tensor([info.max, -info.max, info.smallest_normal, info.smallest_normal * info.eps, 1 + info.eps,
                      float("inf"), float("-inf"), float("nan"), 0.0, -0.0], dtype=torch.float32)
    x = torch.cat([x, torch.randint(-2**31, 2**31 - 1, (100_000,), generator=torch.Generator().manual_seed(0),
                                    dtype=torch.int64).to(torch.int32).view(torch.float32)])
    counts, = cast_counts(x, [torch.float64])
    assert (counts.overflow, counts.underflow, counts.subnormal, counts.changed) == (0, 0, 0, 0)


def _loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    loaded: list[str] = []
    original = Checkpoint.load_tensor

    def counting(self: Checkpoint, name: str) -> torch.Tensor:
        loaded.append(name)
        return original(self, name)

    monkeypatch.setattr(Checkpoint, "load_tensor", counting)
    return loaded


def _rows(data: dict[str, Any], target: str) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in data["targets"][target]["tensors"]}


@pytest.fixture()
def fp8_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    weights = (torch.randn(64, 32, generator=generator) * 100)
    weights[0, :4] = torch.tensor([float("nan"), 1e-3, 0.0, -448.0])  # a NaN, a subnormal e4m3, zero, the max
    state = {
        "layers.0.mlp.weight": weights.to(torch.float8_e4m3fn),
        "layers.0.mlp.weight_scale_inv": torch.rand(2, 1, generator=generator) * 1e-6,
        "layers.1.attn.weight": (torch.randn(16, 32, generator=generator) * 3).to(torch.float8_e4m3fn),
        "layers.1.attn.weight_scale_inv": torch.tensor([[70000.0]]),
    }
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    return path, state


def test_fp8_weights_are_not_read_and_their_scales_are(
        fp8_file: tuple[Path, dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch) -> None:
    path, state = fp8_file
    loaded = _loads(monkeypatch)
    code, data = run_json("check-dtype", str(path))
    assert code == 0
    assert sorted(loaded) == ["layers.0.mlp.weight_scale_inv", "layers.1.attn.weight_scale_inv"]
    assert list(data["targets"]) == ["fp16", "bf16", "fp32"]
    for target, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)):
        rows = _rows(data, target)
        for name in ("layers.0.mlp.weight", "layers.1.attn.weight"):
            row = rows[name]
            assert (row["read"], row["verdict"], row["nan"], row["inf"]) == (False, "safe", None, None)
            assert row["values"] == state[name].numel()
            # The figures a real cast gives, NaN aside (not measured: the tensor was not read).
            measured, = cast_counts(state[name], [dtype])
            assert [row[k] for k in ("overflow", "saturated", "underflow", "subnormal", "changed", "max_rel_error",
                                     "mean_rel_error")] == [
                measured.overflow, measured.saturated, measured.underflow, measured.subnormal, measured.changed,
                measured.max_rel_error, measured.mean_rel_error] == [0, 0, 0, 0, 0, 0.0, 0.0]
        for name in ("layers.0.mlp.weight_scale_inv", "layers.1.attn.weight_scale_inv"):
            assert rows[name]["read"] is True and rows[name]["nan"] == 0 and rows[name]["inf"] == 0
    # The scales are what a cast hurts: 1e-6 flushes in fp16, 70000 overflows it.
    fp16 = _rows(data, "fp16")
    assert fp16["layers.1.attn.weight_scale_inv"]["overflow"] == 1
    assert fp16["layers.0.mlp.weight_scale_inv"]["verdict"] in ("lossy", "unsafe")
    assert data["targets"]["fp16"]["verdict"] == "unsafe" and data["tensors_checked"] == 4

    text = run_cli("check-dtype", str(path), "--target", "bf16").stdout
    assert "4 floating tensors, 2 not read (their dtype casts exactly to every target)" in " ".join(
        line.strip(" │") for line in text.splitlines())


def test_sample_and_filter_keep_working(
        fp8_file: tuple[Path, dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch) -> None:
    path, state = fp8_file
    loaded = _loads(monkeypatch)
    code, data = run_json("check-dtype", str(path), "--sample", "10")
    assert code == 0 and len(loaded) == 2
    rows = _rows(data, "fp16")
    # Not read, yet counted as the 10 values a read tensor gives: the totals' shares weigh every tensor alike.
    assert rows["layers.0.mlp.weight"]["values"] == 10 and rows["layers.0.mlp.weight"]["read"] is False
    assert data["targets"]["fp16"]["values"] == sum(row["values"] for row in rows.values())
    assert rows["layers.0.mlp.weight_scale_inv"]["values"] == 2  # smaller than the sample: all of it
    assert data["sample"]["values_per_tensor"] == 10

    loaded.clear()
    code, data = run_json("check-dtype", str(path), "--filter", r"attn\.weight$", "--target", "fp16")
    assert code == 0 and loaded == [] and data["tensors_checked"] == 1
    assert [(r["name"], r["read"]) for r in data["targets"]["fp16"]["tensors"]] == [("layers.1.attn.weight", False)]

    # A target the fp8 values do not all fit exactly (e5m2: one mantissa bit fewer): read, and measured.
    code, data = run_json("check-dtype", str(path), "--filter", r"attn\.weight$", "--target", "fp16,fp8_e5m2")
    assert loaded == ["layers.1.attn.weight"]
    assert _rows(data, "fp8_e5m2")["layers.1.attn.weight"]["read"] is True
    assert _rows(data, "fp16")["layers.1.attn.weight"]["read"] is True


@pytest.mark.parametrize(("stored", "exact_target", "inexact_target"), [
    (torch.float16, "fp32", None),  # the default targets include fp16 itself: read
    (torch.bfloat16, "fp64", "fp32"),  # bf16's subnormals are fp32 subnormals: read for fp32
])
def test_half_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stored: torch.dtype, exact_target: str,
                          inexact_target: str | None) -> None:
    values = torch.randn(40, 8, generator=torch.Generator().manual_seed(1))
    values[0, :3] = torch.tensor([torch.finfo(stored).smallest_normal / 4, float("inf"), float("nan")])
    path = tmp_path / "model.safetensors"
    save_file({"w": values.to(stored)}, str(path))
    loaded = _loads(monkeypatch)

    code, data = run_json("check-dtype", str(path), "--target", exact_target)
    assert code == 0 and loaded == []
    row = _rows(data, exact_target)["w"]
    assert (row["read"], row["verdict"], row["subnormal"], row["values"], row["nan"]) == (False, "safe", 0, 320, None)

    code, data = run_json("check-dtype", str(path))
    assert loaded == ["w"]
    assert all(_rows(data, t)["w"]["read"] for t in data["targets"])
    assert _rows(data, "fp16" if stored == torch.float16 else "bf16")["w"]["subnormal"] == 1  # same dtype: measured
    if inexact_target:
        loaded.clear()
        code, data = run_json("check-dtype", str(path), "--target", inexact_target)
        assert loaded == ["w"]
        row = _rows(data, inexact_target)["w"]
        assert (row["read"], row["subnormal"], row["nan"], row["inf"]) == (True, 1, 1, 1)
