"""Fresh and moved tensors of bounded init rules: `trunc_normal_` cut at ±2σ and ±3σ (ModernBERT, BLT,
ESMFold) and an asymmetric `uniform_` (Funnel): fresh ones are at init whatever their size, moved ones not."""

from __future__ import annotations

import math

import pytest
import torch

from weightdoctor.expected_init import ExpectedInit, _truncated_spread, from_call
from weightdoctor.health import TensorHealth, _tensor_health
from weightdoctor.init_classify import classify_init
from weightdoctor.stats import stats_of_tensor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STD = 0.02


def _rule(shape: tuple[int, ...], cut: float) -> ExpectedInit:
    return from_call("trunc_normal_", {"mean": 0.0, "std": STD, "a": -cut * STD, "b": cut * STD}, shape, "test")


def _fresh(shape: tuple[int, ...], cut: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.init.trunc_normal_(torch.empty(shape), std=STD, a=-cut * STD, b=cut * STD, generator=generator)


def _health(values: torch.Tensor, want: ExpectedInit) -> TensorHealth:
    return _tensor_health(stats_of_tensor("w", values), want, STD)


def test_the_fitted_spread_of_a_truncated_normal_is_the_spread_of_every_value() -> None:
    """σ and the cut k were solved from the RMS of the 4,096-value sample: their spread σ·k·ratio(k) was
    off the tensor's own by about 1%, while the tolerance for 500k values is 1%."""
    for seed in range(5):
        values = _fresh((1024, 512), 2.0, seed)
        result = stats_of_tensor("w", values)
        found = classify_init(tuple(values.shape), result.stats, result.sample, STD)
        assert found.label == "truncated_normal", found.describe()
        spread = _truncated_spread(found.params)
        assert spread is not None and abs(spread / float(values.double().std()) - 1) < 2e-3, (seed, spread)


def test_fresh_truncated_normals_at_2_sigma_are_at_init() -> None:
    """With the sample's spread, 6 of these 40 fresh (512, 128) tensors were called trained."""
    want = _rule((512, 128), 2.0)
    wrong = [seed for seed in range(40) if not _health(_fresh((512, 128), 2.0, seed), want).at_init]
    assert not wrong


def test_a_big_fresh_truncated_normal_at_3_sigma_is_truncated_not_trained() -> None:
    """A cut at ±3σ gains too little likelihood on 4,096 values to be fitted, so 2M values were judged as a
    normal, and their light tails (excess kurtosis -0.17) as training. The whole tensor's extremes prove
    the cut: a normal of that size puts thousands of values beyond it."""
    values = _fresh((2048, 1024), 3.0, 0)
    result = stats_of_tensor("w", values)
    found = classify_init(tuple(values.shape), result.stats, result.sample, STD)
    assert found.label == "truncated_normal", (found.describe(), found.reason)
    assert abs(found.params["k"] - 3.0) < 0.05


def test_a_fresh_normal_is_not_mistaken_for_a_truncated_one() -> None:
    """The other way round: a plain normal's extremes fall where its size puts them, so it stays normal."""
    for seed in range(5):
        values = torch.randn(2048, 1024, generator=torch.Generator().manual_seed(seed)) * STD
        result = stats_of_tensor("w", values)
        found = classify_init(tuple(values.shape), result.stats, result.sample, STD)
        assert found.family == "normal" and found.label != "trained", found.describe()


@pytest.mark.parametrize("shape", [(32, 16), (64, 64), (128, 64)])
def test_small_fresh_truncated_normals_at_3_sigma_are_at_init(shape: tuple[int, int]) -> None:
    """Too few values to show a ±3σ cut: they fit a plain normal, which is still their rule at its spread
    (every one of these was called trained: the family differed from the rule's)."""
    want = _rule(shape, 3.0)
    wrong = [seed for seed in range(30) if not _health(_fresh(shape, 3.0, seed), want).at_init]
    assert not wrong


@pytest.mark.parametrize("shape", [(256, 64), (512, 128)])
def test_values_beyond_the_cut_of_a_truncated_init_are_not_at_init(shape: tuple[int, int]) -> None:
    """Noise of 20% of the std added, then the std brought back to the rule's: the spread matches, but values
    now lie beyond the ±2σ cut, which the init never produces (half of these were called at init)."""
    want = _rule(shape, 2.0)
    still = []
    for seed in range(10):
        generator = torch.Generator().manual_seed(1000 + seed)  # not the init's own stream
        values = _fresh(shape, 2.0, seed)
        moved = (values + torch.randn(shape, generator=generator) * 0.2 * STD) / math.sqrt(1.04)
        if _health(moved, want).at_init:
            still.append(seed)
    assert not still


@pytest.mark.parametrize("shape", [(4, 16), (64, 64)])
def test_fresh_asymmetric_uniforms_are_at_init_and_shifted_ones_are_not(shape: tuple[int, int]) -> None:
    """Funnel's r_w_bias is uniform_(0, initializer_range): no symmetric bound to compare, so a fresh one was
    never said to be at init (None), and 64 values fitted as a normal were called trained."""
    want = from_call("uniform_", {"a": 0.0, "b": 0.1}, shape, "test")
    fresh = [_health(torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 0.1, want).at_init
             for seed in range(100)]
    assert fresh.count(True) == 100, fresh
    shifted = [_health(torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 0.1 + 0.03, want).at_init
               for seed in range(100)]
    assert not any(shifted)
