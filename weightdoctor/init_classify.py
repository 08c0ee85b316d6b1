"""Which initialization a tensor matches, with its parameters, or whether it has moved away ("trained").

The classifier works in three steps, on the bounded views gathered by `weightdoctor.stats`:

1. Family: uniform, normal or symmetrically truncated normal, chosen by maximum likelihood with a BIC
   penalty (the support comes from the exact extremes of the whole tensor).
2. Drift: a tensor is `trained` when the best family still does not fit (a tie-aware Kolmogorov-Smirnov
   distance on the sample), when its rows or columns have unequal norms beyond what i.i.d. values give,
   when the top singular value of a random sub-matrix stands above the random-matrix bulk edge
   σ(√r + √c), or when the extremes / kurtosis are beyond what the family produces for this many values.
3. Scheme: the fitted scale (bound or std) is compared with every named scheme for this shape, with
   fan-in and fan-out computed by `torch.nn.init` itself. When several schemes predict a scale the data
   cannot tell apart, the label is `ambiguous` and all of them are listed.

Vocabulary: zeros, ones, constant, normal, truncated_normal, uniform, xavier_uniform, xavier_normal,
kaiming_uniform, kaiming_normal, orthogonal, trained, undetermined (plus `ambiguous`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from weightdoctor.stats import TensorSample, TensorStats

LABELS = (
    "zeros", "ones", "constant", "normal", "truncated_normal", "uniform", "xavier_uniform", "xavier_normal",
    "kaiming_uniform", "kaiming_normal", "orthogonal", "trained", "undetermined", "ambiguous",
)
MIN_VALUES = 64  # below this, too few values to tell a distribution
MIN_DISTINCT = 8  # fewer distinct values (a low-precision grid at a tiny scale) tell no distribution either
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINIEST = 1.401298464324817e-45  # the smallest float32 subnormal
SQRT5 = math.sqrt(5.0)
# Gains of torch.nn.init.calculate_gain for the nonlinearities people initialize for.
# (name, a, gain): leaky_relu with a=0 is relu; a=√5 is PyTorch's nn.Linear / nn.Conv default.
KAIMING_UNIFORM_GAINS: tuple[tuple[str, float | None, float], ...] = (
    ("leaky_relu", SQRT5, math.sqrt(2.0 / 6.0)),
    ("relu", 0.0, math.sqrt(2.0)),
    ("linear", None, 1.0),
    ("tanh", None, 5.0 / 3.0),
    ("selu", None, 0.75),
)
# kaiming_normal_ with a=√5 is not something people do; leaving it out avoids a false collision with
# normal(0, 0.02) on 768-wide matrices.
KAIMING_NORMAL_GAINS = KAIMING_UNIFORM_GAINS[1:]
XAVIER_GAINS: tuple[tuple[str, float], ...] = (
    ("linear", 1.0), ("relu", math.sqrt(2.0)), ("tanh", 5.0 / 3.0), ("selu", 0.75),
)
COMMON_STDS = (0.02, 1.0)  # Hugging Face's usual initializer_range; torch's normal_ / nn.Embedding default
KS_LIMIT = 2.1  # √n · D beyond which the family does not fit (about α = 2e-4 for a simple KS test)
SPREAD_LIMIT = 1.9  # robust row-norm spread over the i.i.d. expectation
TRUNCATION_EVIDENCE = 8.0  # nats of log-likelihood the truncated normal must gain over the simpler families
# A normal tensor would have put this many values beyond the cut its extremes show, and has none: truncated
# whatever the sample's likelihood says (a normal has no such gap with probability e^-20).
TRUNCATION_EXTREMES = 20.0
OUTLIER_MARGIN = 1.5  # σ beyond the expected maximum of n normal values


@dataclass(frozen=True)
class Scheme:
    """A named initialization and the scale it predicts for one shape.

    `scale` is the bound for uniform schemes and the standard deviation for normal ones.
    """

    label: str
    family: str  # "uniform" or "normal"
    scale: float
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return describe(self.label, self.params)


@dataclass
class InitResult:
    """What a tensor's values match.

    Attributes:
        label: one word of `LABELS`.
        params: estimated parameters (`mean`, `std`, `bound`, `gain`, `value`, ...) and the named
            scheme's settings (`mode`, `nonlinearity`, `a`).
        candidates: the schemes that fit equally well (only for `ambiguous`).
        family: the fitted distribution family ("uniform", "normal", "truncated_normal") when one was fitted.
        reason: why `trained` or `undetermined`.
        note: remarks such as "= initializer_range".
        evidence: the drift statistics, each as a ratio to its limit's reference (for --debug and JSON).
        named: the values match a named scheme's scale for this shape (kaiming, xavier, a common std), not
            only a distribution family (a trained tensor may keep the shape of one, never by chance the scale).
    """

    label: str
    params: dict[str, Any] = field(default_factory=dict)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    family: str | None = None
    reason: str | None = None
    note: str | None = None
    evidence: dict[str, float] = field(default_factory=dict)
    named: bool = False

    def describe(self) -> str:
        if self.label == "ambiguous":
            return "ambiguous: " + " | ".join(describe(c["label"], c["params"]) for c in self.candidates)
        return describe(self.label, self.params)


def _num(value: float) -> str:
    return f"{value:.4g}"


def describe(label: str, params: dict[str, Any]) -> str:
    """A short human form of a label and its parameters, e.g. `kaiming_uniform(a=√5, fan_in) U(±0.0442)`."""
    if label in ("zeros", "ones", "trained", "undetermined"):
        return label
    if label == "constant":
        return f"constant({_num(params['value'])})"
    if label == "normal":
        return f"normal({_num(params.get('mean', 0.0))}, {_num(params['std'])})"
    if label == "truncated_normal":
        return (f"truncated_normal({_num(params.get('mean', 0.0))}, {_num(params['std'])}, "
                f"[{_num(params['a'])}, {_num(params['b'])}])")
    if label == "uniform":
        if "bound" in params:
            return f"uniform(±{_num(params['bound'])})"
        return f"uniform({_num(params['low'])}, {_num(params['high'])})"
    if label == "orthogonal":
        return f"orthogonal(gain={_num(params['gain'])})"
    scale = f"U(±{_num(params['bound'])})" if "bound" in params else f"N(0, {_num(params['std'])})"
    if label.startswith("xavier"):
        return f"{label}(gain={_num(params['gain'])}) {scale}"
    if label.startswith("kaiming"):
        a = params.get("a")
        first = "a=√5" if a is not None and abs(a - SQRT5) < 1e-9 else params.get("nonlinearity", "")
        return f"{label}({first}, {params.get('mode', 'fan_in')}) {scale}"
    return label


def fans(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(fan_in, fan_out) exactly as `torch.nn.init` computes them; None for tensors under 2-D."""
    import torch

    if len(shape) < 2:
        return None
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape, device="meta"))
    return int(fan_in), int(fan_out)


def candidate_schemes(shape: tuple[int, ...], initializer_range: float | None = None) -> list[Scheme]:
    """Every named scheme this classifier knows, with the scale each predicts for `shape`.

    Example:
        >>> [s.describe() for s in candidate_schemes((1280, 256)) if s.family == "uniform"][:1]
        ['kaiming_uniform(a=√5, fan_in) U(±0.0625)']
    """
    schemes: list[Scheme] = []
    stds = {initializer_range} if initializer_range else set()
    stds |= set(COMMON_STDS)
    for std in sorted(stds):
        schemes.append(Scheme("normal", "normal", std, {"mean": 0.0, "std": std}))
    fan = fans(shape)
    if fan is None or min(fan) == 0:
        return schemes
    fan_in, fan_out = fan
    modes = [("fan_in", fan_in)] + ([("fan_out", fan_out)] if fan_out != fan_in else [])
    for nonlinearity, a, gain in KAIMING_UNIFORM_GAINS:
        for mode, value in modes:
            bound = gain * math.sqrt(3.0 / value)
            params = {"bound": bound, "gain": gain, "mode": mode if fan_in != fan_out else "fan_in=fan_out",
                      "nonlinearity": nonlinearity, "a": a}
            schemes.append(Scheme("kaiming_uniform", "uniform", bound, params))
    for nonlinearity, a, gain in KAIMING_NORMAL_GAINS:
        for mode, value in modes:
            std = gain / math.sqrt(value)
            params = {"std": std, "gain": gain, "mode": mode if fan_in != fan_out else "fan_in=fan_out",
                      "nonlinearity": nonlinearity, "a": a}
            schemes.append(Scheme("kaiming_normal", "normal", std, params))
    for nonlinearity, gain in XAVIER_GAINS:
        bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
        std = gain * math.sqrt(2.0 / (fan_in + fan_out))
        schemes.append(Scheme("xavier_uniform", "uniform", bound, {"bound": bound, "gain": gain,
                                                                    "nonlinearity": nonlinearity}))
        schemes.append(Scheme("xavier_normal", "normal", std, {"std": std, "gain": gain,
                                                                "nonlinearity": nonlinearity}))
    return schemes


# ---------------------------------------------------------------------------------------------- families


def _phi(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _Phi(z: float) -> float:  # noqa: N802 - the usual name of the normal CDF
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _truncation_ratio(k: float) -> float:
    """std / half-width of a normal truncated symmetrically at ±kσ."""
    mass = 2.0 * _Phi(k) - 1.0
    return math.sqrt(max(1.0 - 2.0 * k * _phi(k) / mass, 0.0)) / k


def solve_truncation(ratio: float) -> float | None:
    """k such that a ±kσ-truncated normal has std / half-width = `ratio`; None if no such k."""
    if not 0.0 < ratio < 1.0 / math.sqrt(3.0):
        return None
    lo, hi = 1e-3, 40.0
    if _truncation_ratio(lo) <= ratio:
        return None
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if _truncation_ratio(mid) > ratio:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class FamilyFit:
    """The best of the three families, by BIC."""

    family: str
    loglik: dict[str, float]  # mean log-likelihood per value, BIC-penalised, per family
    mean: float
    std: float  # for truncated_normal: σ of the underlying normal
    low: float
    high: float
    k: float | None = None  # truncation point in σ (truncated_normal)


def fit_family(values: torch.Tensor, stats: TensorStats) -> FamilyFit:
    """Uniform vs normal vs symmetric truncated normal, by penalised likelihood on `values`.

    The support of the bounded families is the exact range of the tensor (or of the values when the
    statistics were sampled).
    """
    n = values.numel()
    low = min(stats.min, float(values.min()))
    high = max(stats.max, float(values.max()))
    x = values.double()
    penalty = math.log(n) / (2.0 * n)
    mean, std = stats.mean, stats.std
    if stats.sampled and n > stats.finite_count:
        # Under --sample 512 the statistics hold 512 values and the classifier's sample up to 4,096: a σ off by
        # ±3% against a KS test that resolves ±2% read a fresh GPT-2 projection (normal(0, 0.01)) as "fits no init
        # family". The larger set fits its own mean and σ.
        mean, std = float(x.mean()), float(x.std(unbiased=False))
    scores: dict[str, float] = {}
    if std > 0:
        z2 = float(((x - mean) / std).square().mean())
        scores["normal"] = -0.5 * math.log(2 * math.pi * std * std) - 0.5 * z2 - 2 * penalty
    width = high - low
    if width > 0:
        scores["uniform"] = -math.log(width) - 2 * penalty
    mid, half = 0.5 * (low + high), 0.5 * width
    # The cut in σ comes from the spread of every value (the statistics), not of the sample: k and σ of a
    # sample of 4,096 are off by a percent, more than a big fresh tensor's std may differ from its rule's.
    k = solve_truncation(math.sqrt(std * std + (mean - mid) ** 2) / half) if half > 0 else None
    sigma = half / k if k else 0.0
    if k is not None and sigma > 0:
        z2 = float(((x - mid) / sigma).square().mean())
        scores["truncated_normal"] = (-0.5 * math.log(2 * math.pi * sigma * sigma) - 0.5 * z2
                                      - math.log(2 * _Phi(k) - 1) - 3 * penalty)
    family = max(scores, key=lambda f: scores[f])
    others = [scores[f] for f in scores if f != "truncated_normal"]
    if family == "truncated_normal" and others and (scores[family] - max(others)) * n < TRUNCATION_EVIDENCE:
        # The truncated normal has one parameter more: ask for a likelihood ratio worth it (about α = 1e-4).
        family = max((f for f in scores if f != "truncated_normal"), key=lambda f: scores[f])
    if "truncated_normal" in scores and "normal" in scores and k is not None:
        # A normal sample has no value beyond ±kσ with probability exp(-2·N·Q(k)); unless that is
        # unlikely, the "truncation" is just where the largest values happened to fall.
        beyond = 2.0 * stats.finite_count * _Phi(-k)  # values a normal of this size puts beyond ±kσ
        if family == "truncated_normal" and beyond < -math.log(1e-3):
            family = "normal"
        elif family == "normal" and beyond > TRUNCATION_EXTREMES:
            # The reverse: a cut at ±3σ barely shows in 4,096 values, but the whole tensor's extremes do;
            # judged as a normal, its light tails (excess kurtosis -0.17) would read as drift.
            family = "truncated_normal"
    if family == "truncated_normal":
        return FamilyFit(family, scores, mid, sigma, low, high, k)
    return FamilyFit(family, scores, mean, std, low, high)


def family_cdf(fit: FamilyFit, x: torch.Tensor) -> torch.Tensor:
    """The fitted family's CDF at `x` (float64)."""
    import torch

    if fit.family == "uniform":
        return ((x - fit.low) / (fit.high - fit.low)).clamp(0.0, 1.0)
    if fit.family == "normal":
        return torch.special.ndtr((x - fit.mean) / fit.std)
    assert fit.k is not None
    lower = _Phi(-fit.k)
    return ((torch.special.ndtr((x - fit.mean) / fit.std) - lower) / (1.0 - 2.0 * lower)).clamp(0.0, 1.0)


def ks_distance(values: torch.Tensor, fit: FamilyFit) -> float:
    """Kolmogorov-Smirnov distance between the values and the fitted CDF, with ties (low precision) handled.

    Tied values were rounded onto a grid: each stands for the cell of values that round to it, so the steps of
    the empirical CDF are compared with the family's CDF at the cells' edges (midway to the next value seen).
    Compared at the grid point itself, a float8 copy of a 0.01-scale init (a few dozen values, 5% of them on
    each) missed the CDF by half a step everywhere and "fit no init family".
    """
    import torch

    x, _ = values.double().sort()
    unique, counts = torch.unique_consecutive(x, return_counts=True)
    upper = counts.cumsum(0).double() / x.numel()
    lower = upper - counts.double() / x.numel()
    if unique.numel() < x.numel() and unique.numel() >= 2:
        edges = (unique[1:] + unique[:-1]) / 2
        low_edges = torch.cat([unique[:1] - (edges[:1] - unique[:1]), edges])
        high_edges = torch.cat([edges, unique[-1:] + (unique[-1:] - edges[-1:])])
        return float(torch.maximum((family_cdf(fit, low_edges) - lower).abs(),
                                   (upper - family_cdf(fit, high_edges)).abs()).max())
    cdf = family_cdf(fit, unique)
    return float(torch.maximum((cdf - lower).abs(), (upper - cdf).abs()).max())


FAMILY_KURTOSIS = {"normal": 0.0, "uniform": -1.2}


def _family_kurtosis(fit: FamilyFit) -> float:
    if fit.family in FAMILY_KURTOSIS:
        return FAMILY_KURTOSIS[fit.family]
    assert fit.k is not None
    k = fit.k
    mass = 2 * _Phi(k) - 1
    m2 = 1 - 2 * k * _phi(k) / mass
    m4 = 3 - (2 * k**3 * _phi(k) + 6 * k * _phi(k)) / mass
    return m4 / (m2 * m2) - 3


def _robust_spread(lines: torch.Tensor) -> float:
    """Interquartile spread of the squared norms of `lines`, relative to their median (≈ CV for normal)."""
    import torch

    q = lines.double().square().sum(dim=1)
    median = float(q.median())
    if median <= 0:
        return math.inf
    quartiles = torch.quantile(q, torch.tensor([0.25, 0.75], dtype=torch.float64))
    return float(quartiles[1] - quartiles[0]) / 1.349 / median


def top_singular_value(matrix: torch.Tensor, steps: int = 25) -> float:
    """Largest singular value by power iteration (seeded; never above the true value, exact for a spike)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    vector = torch.randn(matrix.shape[1], generator=generator, dtype=matrix.dtype)
    value = 0.0
    for _ in range(steps):
        image = matrix @ vector
        vector = matrix.T @ image
        norm = float(vector.norm())
        if norm == 0:
            return 0.0
        vector /= norm
        value = math.sqrt(norm)
    return value


def drift_tests(values: torch.Tensor, stats: TensorStats, sample: TensorSample, fit: FamilyFit) -> dict[str, float]:
    """Each drift statistic divided by its limit: a value above 1 means "moved away from any init".

    Keys: `ks` (family fit), `row_spread` / `col_spread` (norm spread), `top_singular` (spike above the
    bulk edge), `outliers` (extremes beyond the family), `kurtosis` (tails, for the normal family).
    """

    evidence: dict[str, float] = {}
    n = values.numel()
    evidence["ks"] = ks_distance(values, fit) * math.sqrt(n) / KS_LIMIT
    kurt = _family_kurtosis(fit)
    for key, lines in (("row_spread", sample.rows), ("col_spread", sample.cols)):
        if lines is None or lines.shape[0] < 16 or lines.shape[1] < 8:
            continue
        expected = math.sqrt(max(kurt + 2.0, 0.05) / lines.shape[1])
        # The spread of k quartiles is itself noisy: allow for it on top of the limit.
        noise = 1.0 + 2.5 / math.sqrt(lines.shape[0])
        evidence[key] = _robust_spread(lines) / (expected * SPREAD_LIMIT * noise)
    sub = sample.sub
    if sub is not None and min(sub.shape) >= 8:
        centred = sub - sub.mean()
        rms = float(centred.double().square().mean().sqrt())
        if rms > 0:
            top = top_singular_value(centred)
            rows, cols = sub.shape
            edge = rms * (math.sqrt(rows) + math.sqrt(cols))
            limit = 1.0 + 3.0 * min(rows, cols) ** (-2.0 / 3.0)
            evidence["top_singular"] = top / edge / limit
    if fit.family == "normal" and stats.std > 0:
        count = stats.finite_count
        z = max(stats.max - stats.mean, stats.mean - stats.min) / stats.std
        evidence["outliers"] = z / (math.sqrt(2.0 * math.log(2.0 * count)) + OUTLIER_MARGIN)
        if math.isfinite(stats.kurtosis):
            evidence["kurtosis"] = abs(stats.kurtosis) / (8.0 * math.sqrt(24.0 / count) + 0.1)
    return evidence


_DRIFT_WORDS = {
    "ks": "the value distribution fits no init family",
    "row_spread": "row norms vary more than random init gives",
    "col_spread": "column norms vary more than random init gives",
    "top_singular": "top singular value stands above the random-matrix bulk edge",
    "outliers": "extreme values far beyond a normal init",
    "kurtosis": "heavier tails than a normal init",
}


def _orthogonal_gain(sample: TensorSample, shape: tuple[int, int]) -> float | None:
    """The gain when the rows (wide matrix) or columns (tall) are orthogonal with equal norms, else None."""
    import torch

    rows, cols = shape
    lines = sample.rows if rows <= cols else sample.cols
    complete = sample.rows_complete if rows <= cols else sample.cols_complete
    if lines is None or not complete or lines.shape[0] < 2 or lines.shape[1] < 8:
        return None
    norms = lines.square().sum(dim=1)
    if float(norms.std() / norms.mean()) > 0.02:
        return None  # orthogonal lines all have the same norm; i.i.d. ones differ by about √(2/length)
    gram = lines.double() @ lines.double().T
    diag = gram.diagonal()
    if float(diag.min()) <= 0:
        return None
    normed = gram / torch.sqrt(diag.unsqueeze(0) * diag.unsqueeze(1))
    off = normed - torch.eye(lines.shape[0], dtype=torch.float64)
    rms = float(off.square().sum() / max(lines.shape[0] * (lines.shape[0] - 1), 1)) ** 0.5
    spread = float(diag.std() / diag.mean()) if lines.shape[0] > 1 else 0.0
    # i.i.d. lines have rms ≈ 1/√length; orthogonal ones only rounding error.
    if rms * math.sqrt(lines.shape[1]) < 0.2 and spread < 0.02:
        return float(diag.mean().sqrt())
    return None


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int] | None:
    if len(shape) < 2:
        return None
    return shape[0], math.prod(shape[1:])


def _match(
    family: str, estimate: float, se: float, schemes: list[Scheme]
) -> tuple[list[Scheme], float]:
    """Schemes of `family` consistent with the estimated scale: the best alone when it clearly wins.

    Returns (schemes, their distance in standard errors). Several schemes mean the data cannot tell them
    apart: their likelihood ratio to the best is below 20.
    """
    scored = sorted(
        ((abs(math.log(estimate / s.scale)) / se, s) for s in schemes if s.family == family and s.scale > 0),
        key=lambda pair: pair[0],
    )
    if not scored or scored[0][0] > 4.0:
        return [], scored[0][0] if scored else math.inf
    best = scored[0][0]
    close = [s for d, s in scored if d <= 4.0 and 0.5 * (d * d - best * best) < math.log(20.0)]
    # Merge schemes that predict the same scale and label with different settings (fan_in=fan_out etc.).
    unique: list[Scheme] = []
    for scheme in close:
        if not any(u.label == scheme.label and abs(u.scale / scheme.scale - 1) < 1e-9 and
                   u.params.get("nonlinearity") == scheme.params.get("nonlinearity") for u in unique):
            unique.append(scheme)
    return unique, best


def _named(label: str, params: dict[str, Any], estimate: dict[str, float]) -> dict[str, Any]:
    merged = {**params, **estimate}
    return {k: v for k, v in merged.items() if v is not None}


def classify_init(
    shape: tuple[int, ...],
    stats: TensorStats,
    sample: TensorSample,
    initializer_range: float | None = None,
    expected_constant: float | None = None,
    dequantized_from: str | None = None,
) -> InitResult:
    """Say which initialization a tensor's values match, or that it has trained.

    Example:
        >>> import torch
        >>> from weightdoctor.stats import TensorSample, summarize_values
        >>> w = torch.nn.init.kaiming_uniform_(torch.empty(512, 256), a=5 ** 0.5)
        >>> classify_init(w.shape, summarize_values(w.flatten()), TensorSample(w.flatten(), rows=w[:128])).label
        'kaiming_uniform'

    Args:
        shape: the tensor's shape (fan-in/fan-out come from it).
        stats: its statistics (`weightdoctor.stats.summarize_values`).
        sample: the bounded views gathered by `weightdoctor.stats.gather_sample`.
        initializer_range: the config's `initializer_range`, to name a match after it.
        expected_constant: the value the tensor held at initialization when that was a constant
            (norm weights 1, biases 0): any spread then means it has trained.
        dequantized_from: the ggml block type (Q4_0, Q4_K, ...) the values were dequantized from. Their values lie
            on each block's few levels, which no continuous family fits: the distribution test (Kolmogorov-Smirnov)
            is not held against them (a Q4_0 copy of a normal(0, 0.02) init failed it in 4 of 10 matrices, and was
            called trained); the row, column, singular-value, outlier and tail tests still are.
    """
    count = stats.count
    if count == 0:
        return InitResult("undetermined", reason="empty tensor")
    if stats.nan or stats.inf:
        return InitResult("undetermined", reason=f"{stats.nan} NaN and {stats.inf} Inf values")
    if stats.min == stats.max:
        value = stats.min
        if value == 0:
            return InitResult("zeros", {"value": 0.0})
        if value == 1:
            return InitResult("ones", {"value": 1.0})
        return InitResult("constant", {"value": value})
    if not FLOAT32_TINIEST <= stats.abs_max <= FLOAT32_MAX:
        # Only a float64 tensor holds these; no init scheme gives them, and the fits' moments would overflow
        # (or, for values of 1e-200, underflow to a zero variance).
        return InitResult("undetermined", {"mean": stats.mean, "std": stats.std},
                          reason=f"values outside the float32 range (abs max {stats.abs_max:.4g})")
    if expected_constant is not None:
        return InitResult(
            "trained", {"mean": stats.mean, "std": stats.std},
            reason=f"initialized to the constant {expected_constant:g}; the values now spread "
                   f"(mean {stats.mean:.4g}, std {stats.std:.4g})",
        )
    values = sample.values
    if count < MIN_VALUES or values.numel() < MIN_VALUES:
        return InitResult("undetermined", {"mean": stats.mean, "std": stats.std},
                          reason=f"too few values ({count}) to tell a distribution")
    distinct = int(values.unique().numel())
    if distinct < MIN_DISTINCT:
        # A float8 copy of a 0.001-scale init rounds to 0 and ±1, 2 steps of its grid: no family's shape shows.
        return InitResult("undetermined", {"mean": stats.mean, "std": stats.std},
                          reason=f"only {distinct} distinct values: too coarse a grid to tell a distribution")
    fit = fit_family(values, stats)
    evidence = drift_tests(values, stats, sample, fit)
    failed = [key for key, ratio in evidence.items() if ratio > 1.0 and not (dequantized_from and key == "ks")]
    matrix = _matrix_shape(shape)
    gain = _orthogonal_gain(sample, matrix) if matrix is not None and fit.family == "normal" else None
    if gain is not None:
        # Orthogonal rows have equal norms by construction; only the row tests could object, and they
        # would be wrong here.
        return InitResult("orthogonal", {"gain": gain}, family="normal", evidence=evidence, named=True)
    if failed:
        reasons = "; ".join(_DRIFT_WORDS[key] for key in failed)
        return InitResult("trained", {"mean": stats.mean, "std": stats.std}, family=fit.family,
                          reason=reasons, evidence=evidence)
    n_eff = min(count, values.numel()) if stats.sampled else count
    schemes = candidate_schemes(shape, initializer_range)
    mean_ok = abs(fit.mean) <= 5.0 * max(fit.std, 1e-30) / math.sqrt(n_eff) + 1e-3 * fit.std
    note = None
    if fit.family == "uniform":
        bound = max(abs(fit.low), abs(fit.high)) * (n_eff + 1) / n_eff
        symmetric = abs(fit.low + fit.high) <= 0.02 * (fit.high - fit.low)
        if not symmetric:
            return InitResult("uniform", {"low": fit.low, "high": fit.high}, family="uniform", evidence=evidence)
        se = max(2.0 / n_eff, 0.002)  # the maximum pins the bound; low precision dtypes round it
        matches, _ = _match("uniform", bound, se, schemes)
        estimate = {"bound": bound}
    elif fit.family == "truncated_normal":
        params = {"mean": fit.mean, "std": fit.std, "a": fit.low, "b": fit.high, "k": fit.k}
        if initializer_range and abs(fit.std / initializer_range - 1) < 0.05:
            note = f"std ≈ initializer_range ({initializer_range:g})"
        return InitResult("truncated_normal", params, family=fit.family, evidence=evidence, note=note,
                          named=note is not None)
    else:
        se = math.sqrt(max(stats.kurtosis + 2.0, 0.5) / (4.0 * n_eff))
        matches, _ = _match("normal", fit.std, se, schemes) if mean_ok else ([], math.inf)
        estimate = {"mean": fit.mean, "std": fit.std}
    if not matches or not mean_ok:
        label = fit.family
        params = estimate if fit.family == "normal" else {"bound": estimate["bound"]}
        return InitResult(label, params, family=fit.family, evidence=evidence, note=note)
    if initializer_range and any(m.label == "normal" and m.scale == initializer_range for m in matches):
        note = f"normal(0, {initializer_range:g}) = initializer_range"
    if len(matches) == 1:
        only = matches[0]
        params = _named(only.label, only.params, estimate)
        return InitResult(only.label, params, family=fit.family, evidence=evidence, note=note, named=True)
    candidates = [{"label": m.label, "params": _named(m.label, m.params, {})} for m in matches]
    return InitResult("ambiguous", dict(estimate), candidates=candidates, family=fit.family,
                      evidence=evidence, note=note or "schemes predict the same scale for this shape", named=True)
