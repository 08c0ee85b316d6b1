"""The init classifier against a corpus of fresh `torch.nn.init` tensors generated at test time.

Scoring follows the issue: among tensors of at least 512 values whose true scheme is at least 5% away in
scale from every other scheme the classifier knows for that shape, the label and the estimated
parameter (std or bound within 5%) must be right for at least 99%; fresh inits must be called `trained`
in at most 0.5% of all cases; bf16 and fp16 copies must get the fp32 copy's label.

One statistical limit applies: the standard deviation of N normal values has a relative standard error
of 1/√(2N), so at N = 512 an exact N(0, σ) sample has its std more than 5% off σ about 11% of the time,
whatever the estimator. The 99% bar is therefore asserted on normal-family tensors (normal, kaiming_normal,
xavier_normal, truncated_normal) only from N ≥ 1332 values, where 5% is 2.58 standard errors; uniform
families (whose bound the extremes pin to ~1/N) and constants are scored from 512. The accuracy on the
issue's literal pool, N = 512 normals included, is printed and kept in docs/init-confusion.md too.

Run `python -m tests.test_init_classify` to print the confusion matrix and rewrite docs/init-confusion.md.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from weightdoctor.init_classify import InitResult, candidate_schemes, classify_init, describe, fans
from weightdoctor.stats import stats_of_tensor

S5 = math.sqrt(5.0)
SMALL_SHAPES = [(32, 16), (64, 64), (128, 64), (16, 3, 3, 3), (64, 32, 3, 3), (128, 64, 1, 1), (32, 16, 5, 5)]
LARGE_SHAPES = [(256, 1024), (768, 768), (1280, 256), (3072, 768)]
DOC = Path(__file__).resolve().parent.parent / "docs" / "init-confusion.md"

# The machine running the suite is shared: on small tensors, extra torch threads only add contention.
pytestmark = pytest.mark.usefixtures("one_torch_thread")



@dataclass(frozen=True)
class Truth:
    label: str
    params: dict[str, Any]
    family: str | None  # "uniform" / "normal" for schemes with a scale
    scale: Callable[[tuple[int, ...]], float] | None  # bound or std this scheme gives a shape
    make: Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _fan(shape: tuple[int, ...], which: int) -> int:
    fan = fans(shape)
    assert fan is not None
    return fan[which]


INIT = torch.nn.init
TRUTHS: list[Truth] = [
    Truth("kaiming_uniform", {"a": S5, "mode": "fan_in"}, "uniform", lambda s: 1 / math.sqrt(_fan(s, 0)),
          lambda t, g: INIT.kaiming_uniform_(t, a=S5, generator=g)),
    Truth("kaiming_uniform", {"nonlinearity": "relu", "mode": "fan_in"}, "uniform",
          lambda s: math.sqrt(6 / _fan(s, 0)), lambda t, g: INIT.kaiming_uniform_(t, nonlinearity="relu", generator=g)),
    Truth("kaiming_uniform", {"nonlinearity": "relu", "mode": "fan_out"}, "uniform",
          lambda s: math.sqrt(6 / _fan(s, 1)),
          lambda t, g: INIT.kaiming_uniform_(t, mode="fan_out", nonlinearity="relu", generator=g)),
    Truth("kaiming_normal", {"nonlinearity": "relu", "mode": "fan_in"}, "normal",
          lambda s: math.sqrt(2 / _fan(s, 0)), lambda t, g: INIT.kaiming_normal_(t, nonlinearity="relu", generator=g)),
    Truth("kaiming_normal", {"nonlinearity": "relu", "mode": "fan_out"}, "normal",
          lambda s: math.sqrt(2 / _fan(s, 1)),
          lambda t, g: INIT.kaiming_normal_(t, mode="fan_out", nonlinearity="relu", generator=g)),
    Truth("kaiming_normal", {"nonlinearity": "linear", "mode": "fan_in"}, "normal",
          lambda s: 1 / math.sqrt(_fan(s, 0)),
          lambda t, g: INIT.kaiming_normal_(t, nonlinearity="linear", generator=g)),
    Truth("xavier_uniform", {"gain": 1.0}, "uniform", lambda s: math.sqrt(6 / (_fan(s, 0) + _fan(s, 1))),
          lambda t, g: INIT.xavier_uniform_(t, generator=g)),
    Truth("xavier_uniform", {"gain": 5 / 3}, "uniform", lambda s: 5 / 3 * math.sqrt(6 / (_fan(s, 0) + _fan(s, 1))),
          lambda t, g: INIT.xavier_uniform_(t, gain=5 / 3, generator=g)),
    Truth("xavier_normal", {"gain": 1.0}, "normal", lambda s: math.sqrt(2 / (_fan(s, 0) + _fan(s, 1))),
          lambda t, g: INIT.xavier_normal_(t, generator=g)),
    Truth("xavier_normal", {"gain": math.sqrt(2)}, "normal",
          lambda s: math.sqrt(2) * math.sqrt(2 / (_fan(s, 0) + _fan(s, 1))),
          lambda t, g: INIT.xavier_normal_(t, gain=math.sqrt(2), generator=g)),
    Truth("orthogonal", {"gain": 1.0}, None, None, lambda t, g: INIT.orthogonal_(t, generator=g)),
    Truth("orthogonal", {"gain": 2.0}, None, None, lambda t, g: INIT.orthogonal_(t, gain=2.0, generator=g)),
    Truth("normal", {"std": 0.02}, "normal", lambda s: 0.02, lambda t, g: INIT.normal_(t, std=0.02, generator=g)),
    Truth("normal", {"std": 0.05}, "normal", lambda s: 0.05, lambda t, g: INIT.normal_(t, std=0.05, generator=g)),
    # trunc_normal_'s default bounds are absolute (-2, 2): at std 0.02 it is an untruncated normal.
    Truth("normal", {"std": 0.02, "via": "trunc_normal_ default bounds"}, "normal", lambda s: 0.02,
          lambda t, g: INIT.trunc_normal_(t, std=0.02, generator=g)),
    Truth("truncated_normal", {"std": 0.02, "bounds": "±2σ"}, None, lambda s: 0.02,
          lambda t, g: INIT.trunc_normal_(t, std=0.02, a=-0.04, b=0.04, generator=g)),
    Truth("uniform", {"bound": 0.1}, "uniform", lambda s: 0.1, lambda t, g: INIT.uniform_(t, -0.1, 0.1, generator=g)),
    Truth("uniform", {"low": 0.0, "high": 1.0}, None, None, lambda t, g: INIT.uniform_(t, generator=g)),
    Truth("zeros", {"value": 0.0}, None, None, lambda t, g: INIT.zeros_(t)),
    Truth("ones", {"value": 1.0}, None, None, lambda t, g: INIT.ones_(t)),
    Truth("constant", {"value": 0.3}, None, None, lambda t, g: INIT.constant_(t, 0.3)),
]


@dataclass
class Case:
    truth: Truth
    shape: tuple[int, ...]
    seed: int
    dtype: str
    result: InitResult

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def corpus() -> Iterator[tuple[Truth, tuple[int, ...], int, torch.Tensor]]:
    for shape in SMALL_SHAPES + LARGE_SHAPES:
        seeds = range(3) if shape in SMALL_SHAPES else range(1)
        for index, truth in enumerate(TRUTHS):
            if shape in LARGE_SHAPES and truth.label == "orthogonal" and truth.params["gain"] != 1.0:
                continue  # a QR of a large matrix is slow; gain 1 covers the large shapes
            for seed in seeds if truth.family or truth.label in ("orthogonal", "truncated_normal", "uniform") else [0]:
                generator = torch.Generator().manual_seed(10_000 * seed + 97 * index + sum(shape))
                yield truth, shape, seed, truth.make(torch.empty(shape), generator)


def run_corpus() -> list[Case]:
    cases: list[Case] = []
    for truth, shape, seed, tensor in corpus():
        copies = seed == 0 and math.prod(shape) <= 300_000
        dtypes = [torch.float32] + ([torch.bfloat16, torch.float16] if copies else [])
        for dtype in dtypes:
            copy = tensor.to(dtype)
            result = stats_of_tensor("w", copy)
            init = classify_init(shape, result.stats, result.sample)
            cases.append(Case(truth, shape, seed, str(dtype).removeprefix("torch."), init))
    return cases


def gap(truth: Truth, shape: tuple[int, ...]) -> float:
    """Relative distance from the true scale to the nearest other scheme of the same family (inf if none)."""
    if truth.family is None or truth.scale is None:
        return math.inf
    true_scale = truth.scale(shape)
    others = []
    for scheme in candidate_schemes(shape):
        if scheme.family != truth.family:
            continue
        same = scheme.label == truth.label and math.isclose(scheme.scale, true_scale, rel_tol=1e-9) and all(
            scheme.params.get(key) in (value, "fan_in=fan_out") for key, value in truth.params.items()
            if key in ("nonlinearity", "mode", "gain"))
        if not same:
            others.append(abs(math.log(scheme.scale / true_scale)))
    return min(others, default=math.inf)


def correct(case: Case) -> bool:
    truth, result = case.truth, case.result
    if result.label != truth.label:
        return False
    if truth.label in ("zeros", "ones", "constant"):
        return math.isclose(result.params["value"], truth.params["value"], rel_tol=1e-2)
    if truth.label == "orthogonal":
        return abs(result.params["gain"] / truth.params["gain"] - 1) <= 0.05
    if truth.label == "uniform" and "low" in truth.params:
        return abs(result.params["low"]) < 0.01 and abs(result.params["high"] - 1) < 0.01
    assert truth.scale is not None
    estimate = result.params.get("std", result.params.get("bound"))
    return estimate is not None and abs(estimate / truth.scale(case.shape) - 1) <= 0.05


NORMAL_FAMILIES = ("normal", "kaiming_normal", "xavier_normal", "truncated_normal", "orthogonal")
RESOLVABLE_N = 1332  # (2.58 / 0.05)² / 2: a 5% std band is 2.58 standard errors wide


def in_pool(case: Case) -> bool:
    """The issue's pool: ≥ 512 values, nearest other scheme ≥ 5% away in scale."""
    return case.numel >= 512 and gap(case.truth, case.shape) >= math.log(1.05)


def in_resolvable_pool(case: Case) -> bool:
    """The issue's pool without the normal-family tensors too small for a 5% std estimate to be possible."""
    return in_pool(case) and (case.truth.label not in NORMAL_FAMILIES or case.numel >= RESOLVABLE_N)


def confusion_markdown(cases: list[Case]) -> str:
    labels = sorted({c.truth.label for c in cases})
    found = sorted({c.result.label for c in cases})
    counts = Counter((c.truth.label, c.result.label) for c in cases)
    lines = ["| true \\ found | " + " | ".join(found) + " |", "|---" * (len(found) + 1) + "|"]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(str(counts.get((label, f), "")) for f in found) + " |")
    return "\n".join(lines)


def summary(cases: list[Case]) -> dict[str, Any]:
    literal = [c for c in cases if in_pool(c)]
    literal_right = [c for c in literal if correct(c)]
    pool = [c for c in cases if in_resolvable_pool(c)]
    right = [c for c in pool if correct(c)]
    fp32 = {(id(c.truth), c.shape, c.seed): c.result.label for c in cases if c.dtype == "float32"}
    copies = [c for c in cases if c.dtype != "float32"]
    same = [c for c in copies if fp32[(id(c.truth), c.shape, c.seed)] == c.result.label]
    small_normal = [c for c in cases if c.numel >= 512 and c.truth.family == "normal" and c.numel < 4096]
    return {
        "cases": len(cases),
        "literal_pool": len(literal),
        "literal_right": len(literal_right),
        "literal_accuracy": len(literal_right) / len(literal),
        "pool": len(pool),
        "pool_right": len(right),
        "accuracy": len(right) / len(pool),
        "trained": sum(c.result.label == "trained" for c in cases),
        "trained_rate": sum(c.result.label == "trained" for c in cases) / len(cases),
        "copies": len(copies),
        "copies_same": len(same),
        "ambiguous_outside_pool": sum(c.result.label == "ambiguous" for c in cases if not in_pool(c)),
        "small_normal": len(small_normal),
        "wrong": [c for c in literal if not correct(c)],
    }


def report_text(cases: list[Case]) -> str:
    s = summary(cases)
    wrong = "\n".join(
        f"- {c.truth.label} {c.truth.params} {c.shape} seed {c.seed} {c.dtype}: found {c.result.describe()}"
        for c in s["wrong"]
    ) or "- none"
    return (
        f"{s['cases']} fresh tensors ({len(TRUTHS)} init functions, shapes {SMALL_SHAPES[0]} to {LARGE_SHAPES[-1]} "
        "and 4-D conv kernels, 3 seeds for small shapes and 1 for the four large ones, bf16 and fp16 copies "
        "of seed 0 up to 300k values).\n\n"
        f"- the issue's pool (≥ 512 values, nearest other scheme ≥ 5% away in scale): {s['literal_pool']} "
        f"tensors, label and parameter right for {s['literal_right']} ({s['literal_accuracy']:.2%})\n"
        f"- the same pool with normal-family tensors from {RESOLVABLE_N} values (where a 5% std estimate is "
        f"possible): {s['pool']} tensors, right for {s['pool_right']} ({s['accuracy']:.2%})\n"
        f"- fresh inits called `trained`: {s['trained']} of {s['cases']} ({s['trained_rate']:.2%})\n"
        f"- bf16/fp16 copies with the fp32 label: {s['copies_same']} of {s['copies']}\n"
        f"- tensors outside the pool reported `ambiguous` (schemes < 5% apart for that shape): "
        f"{s['ambiguous_outside_pool']}\n\n"
        f"Confusion matrix (true label → found label, all cases):\n\n{confusion_markdown(cases)}\n\n"
        f"Misses in the issue's pool (all of them):\n{wrong}\n"
    )


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return run_corpus()


def test_corpus_accuracy(cases: list[Case], capsys: pytest.CaptureFixture[str]) -> None:
    s = summary(cases)
    with capsys.disabled():
        print("\n" + report_text(cases))
    assert s["pool"] > 400
    assert s["accuracy"] >= 0.99, report_text(cases)
    assert s["literal_accuracy"] >= 0.97, report_text(cases)
    assert s["trained_rate"] <= 0.005
    assert s["copies_same"] >= 0.99 * s["copies"]


def test_every_family_is_exercised(cases: list[Case]) -> None:
    found = {c.result.label for c in cases}
    for label in ("zeros", "ones", "constant", "normal", "truncated_normal", "uniform", "xavier_uniform",
                  "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal", "ambiguous"):
        assert label in found, label


def test_same_scale_schemes_are_ambiguous() -> None:
    # (1280, 256): xavier_uniform's bound √(6/1536) equals PyTorch's Linear default 1/√256.
    w = torch.nn.init.xavier_uniform_(torch.empty(1280, 256), generator=torch.Generator().manual_seed(0))
    r = stats_of_tensor("w", w)
    result = classify_init(w.shape, r.stats, r.sample)
    assert result.label == "ambiguous"
    labels = {c["label"] for c in result.candidates}
    assert labels == {"xavier_uniform", "kaiming_uniform"}
    assert "xavier_uniform(gain=1)" in result.describe() and "kaiming_uniform(a=√5, fan_in)" in result.describe()


def test_trunc_normal_explicit_bounds_are_reported() -> None:
    w = torch.nn.init.trunc_normal_(torch.empty(512, 512), std=0.02, a=-0.04, b=0.04)
    r = stats_of_tensor("w", w)
    result = classify_init(w.shape, r.stats, r.sample, initializer_range=0.02)
    assert result.label == "truncated_normal"
    assert abs(result.params["std"] / 0.02 - 1) < 0.05 and abs(result.params["k"] - 2) < 0.1
    assert result.note == "std ≈ initializer_range (0.02)"


def test_too_small_is_undetermined() -> None:
    w = torch.randn(4, 8)
    r = stats_of_tensor("w", w)
    result = classify_init(w.shape, r.stats, r.sample)
    assert result.label == "undetermined" and "too few values (32)" in result.reason


def test_moved_weights_are_trained() -> None:
    # A low-rank update on top of an init, as training produces: the spectrum gives it away.
    generator = torch.Generator().manual_seed(3)
    w = torch.randn(768, 768, generator=generator) * 0.02
    w += 0.01 * torch.randn(768, 4, generator=generator) @ torch.randn(4, 768, generator=generator)
    r = stats_of_tensor("w", w)
    result = classify_init(w.shape, r.stats, r.sample)
    assert result.label == "trained" and "singular" in result.reason


def test_fresh_transformers_bert(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.health import analyze_weights

    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=512, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=512, max_position_embeddings=128))
    model.save_pretrained(tmp_path / "bert")
    with open_checkpoint(tmp_path / "bert") as checkpoint:
        report = analyze_weights(checkpoint)
    matrices = [t for t in report.tensors if len(t.shape) == 2]
    assert len(matrices) == 16
    for item in matrices:
        assert item.init.label == "normal", (item.name, item.init.describe())
        assert abs(item.init.params["std"] / 0.02 - 1) < 0.05
        assert item.init.note == "normal(0, 0.02) = initializer_range"
        assert item.expected is not None and item.expected.describe().startswith("normal(0, 0.02)")
    for item in report.tensors:
        if "LayerNorm" in item.name:
            assert item.init.label == ("ones" if item.name.endswith("weight") else "zeros"), item.name
        elif item.name.endswith("bias"):
            assert item.init.label == "zeros", item.name
    assert report.state == "initialization"
    assert [f.code for f in report.findings] == ["checkpoint-at-init"]


def main() -> None:
    cases = run_corpus()
    text = report_text(cases)
    print(text)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(
        "# Init classifier: confusion matrix on fresh `torch.nn.init` tensors\n\n"
        "Generated by `python -m tests.test_init_classify` (the same corpus `tests/test_init_classify.py` "
        "scores). Candidate schemes and tolerances: see `weightdoctor/init_classify.py`.\n\n" + text
    )
    _ = describe  # re-exported for readers of this module


if __name__ == "__main__":
    main()
