"""check-dtype's analysis: counts equal torch's own `.to(dtype)`, verdicts, regexes, config agreement, --local."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from fixtures.dtype_fixtures import PLANTED, build_dtype_fixtures, planted_state_dict
from weightdoctor.check_dtype import (
    TARGETS,
    CastCounts,
    cast_behaviour,
    cast_counts,
    check_dtype,
    keep_fp32_regex,
    parse_targets,
    resolve_auto_dtype,
    sample_indices,
    tensor_verdict,
)
from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.errors import UsageError
from weightdoctor.render.check_dtype import render_check_dtype

FP8 = [t for t in ("fp8_e4m3", "fp8_e5m2") if hasattr(torch, TARGETS[t])]


def reference(stored: torch.Tensor, target: torch.dtype) -> dict[str, Any]:
    """The same quantities, computed the obvious way: one whole-tensor `.to()`, float64 masks."""
    info = torch.finfo(target)
    x = stored.reshape(-1).to(torch.float64)
    y = stored.reshape(-1).to(target).to(torch.float64)
    fx, fy = torch.isfinite(x), torch.isfinite(y)
    keep = fx & (x != 0) & fy
    rel = ((y - x).abs() / x.abs())[keep]
    return {
        "overflow": int((fx & ~fy).sum()),
        "saturated": int((fx & fy & (x.abs() > info.max)).sum()),
        "underflow": int((fx & (x != 0) & (y == 0)).sum()),
        "subnormal": int(((y != 0) & (y.abs() < info.smallest_normal)).sum()),
        "changed": int((~((y == x) | (torch.isnan(x) & torch.isnan(y)))).sum()),
        "nan": int(torch.isnan(x).sum()),
        "inf": int(torch.isinf(x).sum()),
        "max_rel_error": float(rel.max()) if rel.numel() else 0.0,
        "mean_rel_error": float(rel.mean()) if rel.numel() else 0.0,
    }


def assert_matches(counts: CastCounts, ref: dict[str, Any]) -> None:
    got = {k: getattr(counts, k) for k in ("overflow", "saturated", "underflow", "subnormal", "changed", "nan", "inf")}
    assert got == {k: ref[k] for k in got}
    assert counts.max_rel_error == pytest.approx(ref["max_rel_error"], rel=1e-6, abs=1e-12)
    assert counts.mean_rel_error == pytest.approx(ref["mean_rel_error"], rel=1e-6, abs=1e-12)


def wild_tensor(seed: int, n: int = 10_007) -> torch.Tensor:
    """Magnitudes from 1e-45 to 1e6, both signs, zeros, and a few NaN/inf in some chunks only."""
    g = torch.Generator().manual_seed(seed)
    magnitude = torch.pow(10.0, torch.rand(n, generator=g, dtype=torch.float64) * 51 - 45)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    x = (magnitude * sign).to(torch.float32)
    x[torch.rand(n, generator=g) < 0.02] = 0.0
    x[torch.randint(0, n, (3,), generator=g)] = float("nan")
    x[torch.randint(0, n, (2,), generator=g)] = float("inf")
    x[torch.randint(0, n, (2,), generator=g)] = -float("inf")
    x[: n // 3] = torch.randn(n // 3, generator=g) * 0.02  # a clean first chunk or two
    return x


@pytest.mark.parametrize("source", ["float32", "float16", "bfloat16", "float64"])
@pytest.mark.parametrize("seed", [0, 1])
def test_counts_equal_torch_on_random_tensors(source: str, seed: int) -> None:
    stored = wild_tensor(seed).to(getattr(torch, source))
    names = ["fp16", "bf16", "fp32", *FP8]
    dtypes = [getattr(torch, TARGETS[n]) for n in names]
    for counts, dtype in zip(cast_counts(stored, dtypes, chunk_elements=1000), dtypes, strict=True):
        assert counts.values == stored.numel()
        assert_matches(counts, reference(stored, dtype))


def test_counts_equal_torch_on_planted_state_dict() -> None:
    for name, tensor in planted_state_dict().items():
        if not tensor.is_floating_point():
            continue
        dtypes = [getattr(torch, TARGETS[n]) for n in ["fp16", "bf16", *FP8]]
        for counts, dtype in zip(cast_counts(tensor, dtypes, chunk_elements=100), dtypes, strict=True):
            assert_matches(counts, reference(tensor, dtype)), name


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=1, max_size=300),
    source=st.sampled_from(["float32", "float16", "bfloat16"]),
    chunk=st.integers(min_value=1, max_value=64),
)
def test_counts_equal_torch_on_any_values(values: list[float], source: str, chunk: int) -> None:
    stored = torch.tensor(values, dtype=torch.float32).to(getattr(torch, source))
    dtypes = [getattr(torch, TARGETS[n]) for n in ["fp16", "bf16", "fp32", *FP8]]
    for counts, dtype in zip(cast_counts(stored, dtypes, chunk_elements=chunk), dtypes, strict=True):
        assert_matches(counts, reference(stored, dtype))


@pytest.mark.parametrize(
    "value, target, expected",
    [
        (70000.0, "fp16", {"overflow": 1, "underflow": 0, "changed": 1}),
        (70000.0, "bf16", {"overflow": 0, "underflow": 0, "changed": 1}),  # 70144 in bf16
        (1e-8, "fp16", {"overflow": 0, "underflow": 1, "subnormal": 0}),
        (1e-8, "bf16", {"underflow": 0, "subnormal": 0, "changed": 1}),
        (1e-38, "fp16", {"underflow": 1}),
        (1e-38, "bf16", {"underflow": 0, "subnormal": 1}),
        (-65504.0, "fp16", {"overflow": 0, "saturated": 0, "changed": 0}),
        (-65504.0, "bf16", {"overflow": 0, "changed": 1}),  # -65536 in bf16
        (float("nan"), "fp16", {"overflow": 0, "underflow": 0, "changed": 0, "nan": 1}),
        (float("nan"), "bf16", {"overflow": 0, "underflow": 0, "changed": 0, "nan": 1}),
        (float("inf"), "fp16", {"overflow": 0, "changed": 0, "inf": 1}),
    ],
)
def test_planted_values(value: float, target: str, expected: dict[str, int]) -> None:
    counts, = cast_counts(torch.tensor([value, 0.5, 0.0]), [getattr(torch, TARGETS[target])])
    assert {k: getattr(counts, k) for k in expected} == expected


@pytest.mark.skipif(not FP8, reason="this torch has no float8 dtypes")
def test_fp8_beyond_max_is_reported_as_torch_does_it() -> None:
    x = torch.tensor([1e5, -2e5, 448.0, 1.0])
    for name in FP8:
        dtype = getattr(torch, TARGETS[name])
        out = x.to(dtype).float()
        counts, = cast_counts(x, [dtype])
        became_finite = int(torch.isfinite(out[:2]).sum())
        assert counts.saturated == became_finite and counts.overflow == 2 - became_finite
        behaviour = cast_behaviour(name)
        assert ("saturates" in behaviour) == (became_finite == 2)
        verdict, reason = tensor_verdict(counts, torch.finfo(dtype).eps)
        assert verdict == "unsafe"


def test_verdicts() -> None:
    exact, = cast_counts(torch.tensor([0.5, 1.0, -2.0, 0.0]), [torch.float16])
    assert tensor_verdict(exact, 2**-10)[0] == "safe"
    rounded, = cast_counts(torch.tensor([0.1, 1.0]), [torch.float16])
    assert tensor_verdict(rounded, 2**-10)[0] == "lossy"
    over, = cast_counts(torch.tensor([7e4, 1.0]), [torch.float16])
    assert tensor_verdict(over, 2**-10) == ("unsafe", "1 finite value becomes inf/NaN")
    mass, = cast_counts(torch.full((100,), 1e-9), [torch.float16])
    assert tensor_verdict(mass, 2**-10)[0] == "unsafe" and "flushed to zero" in tensor_verdict(mass, 2**-10)[1]
    # One flushed value among 1000 non-zero ones is below the mass-underflow share: lossy, not unsafe.
    few = torch.full((1000,), 0.25)
    few[0] = 1e-9
    little, = cast_counts(few, [torch.float16])
    assert little.underflow == 1 and tensor_verdict(little, 2**-10)[0] == "lossy"


def test_sample_is_deterministic_and_exact_on_its_indices() -> None:
    x = wild_tensor(3, 50_000)
    a = sample_indices(x.numel(), 777, "w")
    assert torch.equal(a, sample_indices(x.numel(), 777, "w"))
    assert not torch.equal(a, sample_indices(x.numel(), 777, "other"))
    assert a.numel() == 777 and int(a.max()) < x.numel()
    counts, = cast_counts(x[a], [torch.float16])
    assert counts.values == 777
    assert_matches(counts, reference(x[a], torch.float16))


def test_keep_fp32_regex_matches_exactly_the_offenders() -> None:
    names = list(planted_state_dict())
    offenders = ["blocks.0.big.weight", "blocks.1.big.weight", "stack.0.norm.weight", "stack.1.norm.weight",
                 "planted.overflow.weight"]
    regex = keep_fp32_regex(offenders, names)
    assert regex is not None
    assert {n for n in names if re.search(regex, n)} == set(offenders)
    assert r"stack\.\d+\.norm\.weight" in regex  # every stack.N.norm is an offender: collapsed
    assert r"blocks\.\d+" not in regex  # blocks.2.big.weight is clean: listed one by one
    assert keep_fp32_regex([], names) is None


def test_parse_targets() -> None:
    assert parse_targets(None) == ["fp16", "bf16"]
    assert parse_targets(None, ["bfloat16", "int64"]) == ["fp16", "bf16", "fp32"]
    assert parse_targets("half, BF16,fp16") == ["fp16", "bf16"]
    assert parse_targets("all")[:2] == ["fp16", "bf16"] and "fp32" in parse_targets("all")
    with pytest.raises(UsageError, match="unknown target dtype 'fp7'"):
        parse_targets("fp16,fp7")


@pytest.fixture(scope="module")
def dfx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_dtype_fixtures(tmp_path_factory.mktemp("dtype-fixtures"))


def test_check_dtype_on_planted_checkpoint(dfx: dict[str, Path]) -> None:
    targets = ["fp16", "bf16", *FP8]
    with open_checkpoint(dfx["planted"]) as ckpt:
        report = check_dtype(ckpt, targets, chunk_elements=333)
    state = planted_state_dict()
    floating = {k: v for k, v in state.items() if v.is_floating_point()}
    for name in targets:
        dtype = getattr(torch, TARGETS[name])
        refs = {k: reference(v, dtype) for k, v in floating.items()}
        target = report.targets[name]
        assert target.overflow == sum(r["overflow"] for r in refs.values())
        assert target.underflow == sum(r["underflow"] for r in refs.values())
        assert target.subnormal == sum(r["subnormal"] for r in refs.values())
        assert target.max_rel_error == pytest.approx(max(r["max_rel_error"] for r in refs.values()), rel=1e-6)
        for row in target.tensors:
            assert (row.overflow, row.underflow, row.changed) == (
                refs[row.name]["overflow"], refs[row.name]["underflow"], refs[row.name]["changed"])
    fp16 = report.targets["fp16"]
    unsafe = {t.name for t in fp16.tensors if t.verdict == "unsafe"}
    assert unsafe == {"planted.overflow.weight", "blocks.0.big.weight", "blocks.1.big.weight",
                      "stack.0.norm.weight", "stack.1.norm.weight", "planted.mass_underflow.weight"}
    assert fp16.verdict == "unsafe" and report.targets["bf16"].verdict == "lossy"
    beyond_fp16 = {n for n, (_, v) in PLANTED.items() if math.isfinite(v) and abs(v) > 65520}
    assert {t.name for t in fp16.tensors if t.overflow} == beyond_fp16
    assert fp16.keep_fp32 and {n for n in state if re.search(fp16.keep_fp32, n)} == unsafe
    # memory: 12,608 floating params (incl. the fp16 one), 64 int64 values kept at 8 bytes each
    n_float = sum(v.numel() for v in floating.values())
    assert fp16.memory_bytes == n_float * 2 + 64 * 8
    assert fp16.keep_fp32_memory_bytes == fp16.memory_bytes + sum(state[n].numel() for n in unsafe) * 2
    assert report.mixed_storage and report.stored_dtypes["float16"].num_tensors == 1
    assert [s.name for s in report.skipped] == ["position_ids"]
    rec = report.recommendation
    assert "fp16" in rec.commands and "--dtype fp16 --keep-fp32" in rec.commands["fp16"]
    assert rec.best == "bf16"
    assert any(line.startswith("fp16 is unsafe: overflows in 5 tensors") for line in rec.lines)


def test_pickle_source_gives_the_same_counts(dfx: dict[str, Path]) -> None:
    with open_checkpoint(dfx["planted"]) as a, open_checkpoint(dfx["planted-bin"]) as b:
        ra, rb = check_dtype(a, ["fp16"]), check_dtype(b, ["fp16"])
    assert sorted((t.name, t.overflow, t.underflow, t.changed) for t in ra.targets["fp16"].tensors) == \
        sorted((t.name, t.overflow, t.underflow, t.changed) for t in rb.targets["fp16"].tensors)
    assert ra.targets["fp16"].keep_fp32 == rb.targets["fp16"].keep_fp32


@pytest.mark.parametrize(
    "name, status, words",
    [
        ("bert-bf16-says-fp16", "differs", ["stored bfloat16 but config says float16", "silent re-cast"]),
        ("bert-fp32-says-bf16", "differs", ["stored float32 but config says bfloat16", "2.0×"]),
        ("bert-bf16-no-dtype", "not-set", ["sets no torch_dtype"]),
        ("planted", "mixed", ["mixed storage",
                              "but 1 tensor is stored as float16; from_pretrained(dtype='auto') casts it"]),
    ],
)
def test_config_agreement(dfx: dict[str, Path], name: str, status: str, words: list[str]) -> None:
    with open_checkpoint(dfx[name]) as ckpt:
        report = check_dtype(ckpt, ["bf16"])
    assert report.config_agreement.status == status
    for word in words:
        assert word in report.config_agreement.message


@pytest.mark.parametrize(
    "name", ["bert-bf16-says-fp16", "bert-fp32-says-bf16", "bert-bf16-no-dtype", "bert-sharded-index-dtype"]
)
def test_auto_dtype_equals_from_pretrained(dfx: dict[str, Path], name: str) -> None:
    from transformers import BertForSequenceClassification

    with open_checkpoint(dfx[name]) as ckpt:
        auto = resolve_auto_dtype(ckpt)
    model = BertForSequenceClassification.from_pretrained(dfx[name], dtype="auto")
    assert auto.dtype == str(model.dtype).removeprefix("torch.")
    expected = {"bert-bf16-says-fp16": "float16", "bert-fp32-says-bf16": "bfloat16", "bert-bf16-no-dtype": "bfloat16",
                "bert-sharded-index-dtype": "float16"}
    assert auto.dtype == expected[name]


def test_local_without_cuda(dfx: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with open_checkpoint(dfx["bert-bf16-says-fp16"]) as ckpt:
        report = check_dtype(ckpt, ["fp16"], local=True)
    assert report.local is not None
    assert report.local.cuda_available is False and report.local.devices == []
    assert any("no CUDA device" in n for n in report.local.notes)
    assert report.local.auto_dtype.dtype == "float16"


def test_local_with_fake_gpus(dfx: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 from torch.cuda.is_bf16_supported() on each device; fp8 from capability ≥ 8.9."""
    from contextlib import contextmanager
    from types import SimpleNamespace

    caps = {0: (7, 5), 1: (8, 0), 2: (9, 0)}
    current = {"index": 0}

    @contextmanager
    def device(index: int):  # type: ignore[no-untyped-def]
        previous, current["index"] = current["index"], index
        yield
        current["index"] = previous

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: caps[i])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"Fake GPU {i}")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=(i + 1) * 2**30))
    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: caps[current["index"]] >= (8, 0))
    with open_checkpoint(dfx["bert-bf16-no-dtype"]) as ckpt:
        report = check_dtype(ckpt, ["fp16"], local=True)
    local = report.local
    assert local is not None and local.cuda_available
    assert [(d.name, d.capability, d.bf16, d.fp8) for d in local.devices] == [
        ("Fake GPU 0", "7.5", False, False), ("Fake GPU 1", "8.0", True, False), ("Fake GPU 2", "9.0", True, True)]
    assert local.auto_dtype.dtype == "bfloat16"
    assert any("not every GPU here supports it" in n for n in local.notes)
    out = io.StringIO()
    render_check_dtype(report, Console(file=out, width=160, force_terminal=False))
    text = out.getvalue()
    assert "cuda:2" in text and "Fake GPU 2, compute capability 9.0" in text and "fp8 yes" in text


def test_renderer_shows_everything(dfx: dict[str, Path]) -> None:
    with open_checkpoint(dfx["planted"]) as ckpt:
        report = check_dtype(ckpt, ["fp16", "bf16"], sample=100)
    out = io.StringIO()
    render_check_dtype(report, Console(file=out, width=200, force_terminal=False), worst=3)
    text = out.getvalue()
    for expected in ("weightdoctor check-dtype", "What each cast does", "Worst tensors for fp16", "recommendation",
                     "fp16 is unsafe", "--keep-fp32", "Weights alone cannot tell", "sampled: at most 100 values",
                     "beyond ±65504 → ±65504 below ±65520, ±inf from ±65520 (overflows)", "mixed storage"):
        assert expected in text, expected
    assert text.count("│ stack.") <= 3  # --worst 3


def test_sample_bounds_values(dfx: dict[str, Path]) -> None:
    with open_checkpoint(dfx["planted"]) as ckpt:
        full = check_dtype(ckpt, ["fp16"])
        a = check_dtype(ckpt, ["fp16"], sample=50)
        b = check_dtype(ckpt, ["fp16"], sample=50)
    assert all(t.values == min(50, f.values) for t, f in zip(a.targets["fp16"].tensors, full.targets["fp16"].tensors,
                                                             strict=True))
    assert [t.changed for t in a.targets["fp16"].tensors] == [t.changed for t in b.targets["fp16"].tensors]
    assert a.sample is not None and "seed 0" in a.sample.note
    with pytest.raises(UsageError):
        check_dtype(open_checkpoint(dfx["planted"]), ["fp16"], sample=0)


def test_no_float_checkpoint_is_safe(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"ids": torch.arange(10)}, str(tmp_path / "ids.safetensors"))
    with open_checkpoint(tmp_path / "ids.safetensors") as ckpt:
        report = check_dtype(ckpt, ["fp16"])
    assert report.targets["fp16"].verdict == "safe" and report.tensors_checked == 0
    assert report.targets["fp16"].memory_bytes == 80 and not math.isnan(report.targets["fp16"].mean_rel_error)


@pytest.mark.skipif(not FP8, reason="this torch has no float8 dtypes")
def test_quantized_checkpoint(tmp_path: Path) -> None:
    import json

    from safetensors.torch import save_file

    weight = (torch.randn(16, 16) * 100).to(torch.float8_e4m3fn)
    save_file({"w.weight": weight, "w.weight_scale_inv": torch.tensor([0.01]), "norm.weight": torch.ones(16,
              dtype=torch.bfloat16)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "x", "torch_dtype": "bfloat16", "quantization_config": {"quant_method": "fp8"}}))
    with open_checkpoint(tmp_path) as ckpt:
        report = check_dtype(ckpt, ["bf16", "fp16"])
    assert report.config_agreement.status == "quantized" and "quant_method=fp8" in report.config_agreement.message
    assert report.mixed_storage
    assert any("without their scales" in line for line in report.recommendation.lines)
    # e4m3 values fit bf16 exactly: the raw cast itself is lossless
    bf16 = {t.name: t for t in report.targets["bf16"].tensors}
    assert bf16["w.weight"].verdict == "safe" and bf16["w.weight"].changed == 0
