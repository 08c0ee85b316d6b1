"""Round 10 of speed work: many small tensors cast, compared and summarized together (check-dtype, diff-keys
--values, inspect --stats --json). The outputs on a few-thousand-tensor file are held to references computed here
with torch alone, and the batched paths to the one-tensor-at-a-time functions they stand in for, value for value
(byte-identical output is what the speed-up must keep). Nothing here is timed: benchmarks/bench_many_tensors.py."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli
from weightdoctor.check_dtype import cast_counts, cast_counts_batch
from weightdoctor.diff_keys import compare_pair, compare_pairs_batch
from weightdoctor.render.json import to_jsonable

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# Sizes from one value to past the batch limit (16,384), so that batched and one-at-a-time tensors interleave.
SIZES = (1, 3, 8, 64, 257, 4096, 20000)


def _values(index: int, generator: torch.Generator) -> torch.Tensor:
    """Seeded values of many kinds: tiny, huge (beyond fp16), NaN, ±inf, zeros; float64 before the cast."""
    size = SIZES[index % len(SIZES)] if index % 41 else 0
    scale = (1e-9, 1e-6, 1.0, 300.0, 1e5, 1e39)[(index // 7) % 6]
    values = torch.randn(size, generator=generator, dtype=torch.float64) * scale
    if size and index % 13 == 0:
        values[0] = math.nan
    if size and index % 17 == 0:
        values[-1] = math.inf if index % 2 else -math.inf
    if size > 2 and index % 5 == 0:
        values[1] = 0.0
    if size > 3 and index % 23 == 0:
        values[2] = 65519.0  # rounds up past fp16's largest finite value
    return values


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """2,500 tensors, most of a few values, in four float dtypes (float64 only in the first 1,000)."""
    generator = torch.Generator().manual_seed(10)
    tensors = {}
    for index in range(2500):
        dtype = DTYPES[index % 4] if index < 1000 else DTYPES[index % 3]
        tensors[f"model.layers.{index // 25}.block{index % 25}.weight"] = _values(index, generator).to(dtype)
    tensors["model.position_ids"] = torch.arange(7)
    path = tmp_path_factory.mktemp("perf10") / "many.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def _json(*args: str) -> Any:
    result = run_cli(*args, "--json")
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def _reference_cast(values: torch.Tensor, target: torch.dtype) -> dict[str, int]:
    """What a cast does, counted straight from torch's `.to(target)`, in float64, value by value."""
    x = values.reshape(-1).to(torch.float64)
    y = values.reshape(-1).to(target).to(torch.float64)
    finite_x, finite_y = torch.isfinite(x), torch.isfinite(y)
    info = torch.finfo(target)
    return {
        "values": x.numel(),
        "nan": int(torch.isnan(x).sum()),
        "inf": int(torch.isinf(x).sum()),
        "overflow": int((finite_x & ~finite_y).sum()),
        "saturated": int((finite_x & finite_y & (x.abs() > info.max)).sum()),
        "underflow": int(((x != 0) & finite_x & (y == 0)).sum()),
        "subnormal": int(((y != 0) & (y.abs() < info.smallest_normal)).sum()),
        "changed": int(((y != x) & ~(torch.isnan(x) & torch.isnan(y))).sum()),
    }


def test_check_dtype_counts_every_tensor_as_torch_does(many: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, tensors = many
    report = _json("check-dtype", str(path), "--target", "fp16,bf16,fp8_e4m3")
    floating = {name: t for name, t in tensors.items() if t.is_floating_point()}
    assert report["tensors_checked"] == len(floating) == 2500
    assert [s["name"] for s in report["skipped"]] == ["model.position_ids"]
    for short, target in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp8_e4m3", torch.float8_e4m3fn)):
        rows = report["targets"][short]["tensors"]
        assert sorted(r["name"] for r in rows) == sorted(floating)
        totals = dict.fromkeys(("values", "overflow", "saturated", "underflow", "subnormal", "changed"), 0)
        for row in rows:
            expected = _reference_cast(floating[row["name"]], target)
            assert {key: row[key] for key in expected} == expected, (short, row["name"])
            for key in totals:
                totals[key] += expected[key]
        assert {key: report["targets"][short][key] for key in totals} == totals
    # Something of each kind happened, so the comparisons above were not all of zeros.
    fp16 = report["targets"]["fp16"]
    assert fp16["overflow"] and fp16["underflow"] and fp16["subnormal"] and fp16["verdict"] == "unsafe"
    assert report["targets"]["fp8_e4m3"]["saturated"]


def test_check_dtype_relative_errors_match_torch(many: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, tensors = many
    rows = _json("check-dtype", str(path), "--target", "fp16", "--filter", r"\.block1[0-9]\.")["targets"]["fp16"]
    for row in rows["tensors"]:
        values = tensors[row["name"]].reshape(-1)
        wide = torch.float64 if values.dtype == torch.float64 else torch.float32
        x, y = values.to(wide), values.to(torch.float16).to(wide)
        keep = torch.isfinite(x) & (x != 0) & torch.isfinite(y)
        errors = ((y - x).abs() / x.abs())[keep].to(torch.float64)
        expected_max = float(errors.max()) if errors.numel() else 0.0
        expected_mean = float(errors.sum() / errors.numel()) if errors.numel() else 0.0
        assert row["max_rel_error"] == pytest.approx(expected_max, rel=1e-6, abs=1e-12), row["name"]
        assert row["mean_rel_error"] == pytest.approx(expected_mean, rel=1e-4, abs=1e-12), row["name"]


def test_batched_casts_equal_one_tensor_at_a_time(many: tuple[Path, dict[str, torch.Tensor]]) -> None:
    """The batch gives each tensor exactly `cast_counts`' numbers (its float sums too: same slice, same sum)."""
    _, tensors = many
    targets = [torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float32]
    for dtype in DTYPES:
        flats = [t.reshape(-1) for t in tensors.values()
                 if t.dtype == dtype and 0 < t.numel() <= 1 << 14]
        assert len(flats) > 100
        batched = cast_counts_batch(flats, targets)
        assert batched == [cast_counts(flat, targets) for flat in flats]


def _reference_diff(a: torch.Tensor, b: torch.Tensor) -> tuple[bool, float, float]:
    """(identical, max |A−B|, ‖A−B‖/‖B‖) in float64, NaN on both sides and equal infinities counted as equal; ‖B‖
    leaves out the NaNs and infinities that are the same in A (they did not change; docs/commands/diff-keys.md)."""
    x, y = a.reshape(-1).to(torch.float64), b.reshape(-1).to(torch.float64)
    same = (x == y) | (torch.isnan(x) & torch.isnan(y))
    delta = torch.where(same, 0.0, x - y)
    if bool(same.all()):
        return True, 0.0, 0.0
    largest = float(delta.abs().max())
    norm_b = float(torch.linalg.vector_norm(torch.where(same & ~torch.isfinite(y), 0.0, y)))
    rel = math.inf if norm_b == 0 else float(torch.linalg.vector_norm(delta)) / norm_b
    return False, largest, rel


def _same_number(got: Any, expected: float) -> bool:
    if isinstance(got, str):  # JSON writes NaN and infinities as strings
        return got == ("nan" if math.isnan(expected) else ("inf" if expected > 0 else "-inf"))
    return got == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_diff_keys_values_match_torch(many: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path) -> None:
    path, tensors = many
    generator = torch.Generator().manual_seed(11)
    changed = {}
    for index, (name, tensor) in enumerate(tensors.items()):
        if index % 3 == 1 and tensor.is_floating_point() and tensor.numel():
            tensor = tensor + (torch.randn(tensor.shape, generator=generator) * 1e-2).to(tensor.dtype)
        elif index % 3 == 2 and tensor.is_floating_point():
            tensor = tensor.to(torch.float32)  # same values, another dtype
        if index % 11 == 4 and tensor.is_floating_point() and tensor.numel():
            tensor = tensor.clone()
            tensor.view(-1)[0] = math.nan  # NaN on B's side only: a change of unknown size
        changed[name] = tensor
    other = tmp_path / "other.bin"
    torch.save(changed, other)
    report = _json("diff-keys", str(path), str(other), "--values")
    rows = report["values"]
    assert sorted(r["name"] for r in rows) == sorted(tensors)
    kinds = set()
    for row in rows:
        identical, largest, rel = _reference_diff(tensors[row["name"]], changed[row["name"]])
        assert row["identical"] is identical, row["name"]
        assert _same_number(row["max_abs_diff"], largest), (row["name"], row["max_abs_diff"], largest)
        assert _same_number(row["rel_change"], rel), (row["name"], row["rel_change"], rel)
        kinds.add((identical, row["max_abs_diff"] == "nan", row["rel_change"] == "inf"))
    assert {(True, False, False), (False, False, False), (False, True, False)} <= kinds


def _outcome(row: Any) -> str:
    """A comparable text of `compare_pair`'s result (NaN is not equal to itself)."""
    return repr(row)


def test_batched_pairs_equal_one_pair_at_a_time(many: tuple[Path, dict[str, torch.Tensor]]) -> None:
    _, tensors = many
    generator = torch.Generator().manual_seed(12)
    pairs = []
    for name, tensor in tensors.items():
        if not (tensor.is_floating_point() and 0 < tensor.numel() <= 1 << 14):
            continue
        other = tensor.to(torch.float64)
        if len(pairs) % 4 == 1:
            other = other + torch.randn(other.shape, generator=generator, dtype=torch.float64)
        elif len(pairs) % 4 == 2:
            other = torch.zeros_like(other)
        elif len(pairs) % 4 == 3:
            other = other * 1e200  # squares past float64's range: the scaled ratio
        pairs.append((name, tensor, other.to(DTYPES[len(pairs) % 4])))
    assert len(pairs) > 2000
    batched = compare_pairs_batch(pairs)
    assert [_outcome(r) for r in batched] == [_outcome(compare_pair(*pair)) for pair in pairs]


def test_inspect_stats_json_is_json_ready_and_counts_as_torch(tmp_path: Path) -> None:
    """merge_stats_json no longer converts the whole report a second time: what it adds is converted, so the
    object is still JSON-ready (NaN as "nan"), and its statistics are torch's."""
    generator = torch.Generator().manual_seed(13)
    tensors = {}
    for index in range(1500):
        values = torch.randn(6, generator=generator)
        if index % 7 == 0:
            values[0] = math.nan
        tensors[f"encoder.layer.{index}.weight"] = values if index % 5 else values.to(torch.bfloat16)
    path = tmp_path / "stats.safetensors"
    save_file(tensors, str(path))
    result = run_cli("inspect", str(path), "--stats", "--json")
    assert "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    assert to_jsonable(report) == report
    rows = {row["name"]: row for row in report["tensors"]}
    assert len(rows) == 1500
    for name, values in tensors.items():
        stats = rows[name]["stats"]
        wide = values.to(torch.float64)
        finite = wide[torch.isfinite(wide)]
        assert stats["nan"] == int(torch.isnan(wide).sum()), name
        assert stats["max"] == pytest.approx(float(finite.max()), rel=1e-6), name
        assert stats["min"] == pytest.approx(float(finite.min()), rel=1e-6), name


def test_valid_text_escapes_lone_surrogates_only() -> None:
    """valid_text now asks the UTF-8 encoder whether a lone surrogate is there before its regular expression."""
    from weightdoctor.render.json import valid_text

    assert valid_text('{"a": "modèl ±"}') == '{"a": "modèl ±"}'
    assert valid_text('{"a": "x\udcffy ±"}') == '{"a": "x\\udcffy ±"}'
    assert valid_text("\ud83d\ude00") == "\\ud83d\\ude00"  # two lone surrogates in a str, not a pair


def test_compare_values_holds_small_pairs_up_to_the_batch_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small pairs are held to be compared together, never more than BATCH_ELEMENTS values of them, and held as
    copies: the tensors read (views of a file's memory map) are let go at once, so no file stays open."""
    import gc
    import weakref

    from weightdoctor import diff_keys

    monkeypatch.setattr(diff_keys, "BATCH_ELEMENTS", 1000)
    batch_sizes: list[int] = []
    real_batch = diff_keys.compare_pairs_batch

    def counted(pending: list) -> Any:
        batch_sizes.append(sum(a.numel() for _, a, _ in pending))
        return real_batch(pending)

    monkeypatch.setattr(diff_keys, "compare_pairs_batch", counted)
    alive: list[weakref.ref] = []
    peak = 0

    def pairs() -> Any:
        nonlocal peak
        for index in range(400):
            gc.collect()
            peak = max(peak, sum(ref() is not None for ref in alive))
            a, b = torch.randn(30), torch.randn(30)
            alive.extend([weakref.ref(a), weakref.ref(b)])
            yield f"layers.{index}.w", a, b
            del a, b

    rows, _ = diff_keys.compare_values(pairs())
    assert len(rows) == 400 and not any(row.identical for row in rows)
    assert max(batch_sizes) <= 1000 and min(batch_sizes[:-1]) >= 900  # batches did form, within the bound
    assert peak <= 2  # the pair being yielded only: the batch holds copies
