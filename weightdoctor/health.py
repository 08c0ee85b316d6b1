"""Weight health: statistics, init table and findings for a checkpoint, in one streamed pass.

`analyze_weights` reads each floating tensor once (`weightdoctor.stats`), classifies its initialization
(`weightdoctor.init_classify`), compares it with what was expected at initialization
(`weightdoctor.expected_init`) and turns what is wrong into `Finding`s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from weightdoctor.dtypes import is_dtype_placeholder
from weightdoctor.expected_init import GLORA_ZERO_FACTOR as _GLORA_ZERO_FACTOR
from weightdoctor.expected_init import HRA_VECTORS as _HRA_VECTORS
from weightdoctor.expected_init import IA3_VECTOR as _IA3_VECTOR
from weightdoctor.expected_init import LORA_ZERO_INIT as _LORA_ZERO_INIT
from weightdoctor.expected_init import LYCORIS_RESCALE as _LYCORIS_RESCALE
from weightdoctor.expected_init import LYCORIS_ROTATION as _LYCORIS_ROTATION
from weightdoctor.expected_init import PRODUCT_ADAPTER_FACTOR as _PRODUCT_ADAPTER_FACTOR
from weightdoctor.expected_init import ROTATION_ADAPTER as _ROTATION_ADAPTER
from weightdoctor.expected_init import ROTATION_ADAPTER_SCALE as _ROTATION_ADAPTER_SCALE
from weightdoctor.expected_init import ZERO_CONV_INIT as _ZERO_CONV_INIT
from weightdoctor.expected_init import ExpectedInit, matches_expected, reconcile
from weightdoctor.findings import Finding
from weightdoctor.generator_marks import GeneratorMarks, normal_marks
from weightdoctor.init_classify import FLOAT32_MAX, MIN_VALUES, InitResult, classify_init
from weightdoctor.stats import StatsResult, TensorStats
from weightdoctor.wording import counted, non_finite_count, plural

if TYPE_CHECKING:
    from weightdoctor.checkpoint import Checkpoint

FP16_MAX = 65504.0
# The smallest magnitude float16 rounds to inf: values between 65504 and this round down to 65504 (clamped).
FP16_OVERFLOW = 65520.0
HIST_BINS = 40
TRAINED_SHARE = 0.5  # share of matrix parameters that must have trained for "the checkpoint has trained"
INIT_SHARE = 0.9  # share of matrix parameters at init for "the whole checkpoint is still at initialization"
OUTLIER_SIGMAS = 25.0
# Matrices each at their init, pooled: a sum of squares this many standard deviations from the inits' and more
# than POOLED_SLACK of it away (the inits' rules are exact for fresh models, but a percent of slack keeps a big
# fresh model's rounding or an init rule's detail from reading as training) has moved.
POOLED_SIGMAS = 4.0
POOLED_SLACK = 0.02
# Vectors initialized to an exact constant that must all have moved for "trained" on their evidence alone: one is
# a single norm, which a model that never calls it leaves at its ones.
MIN_CONSTANT_VECTORS = 2
# Tensors whose farthest value is judged against the others' std (`spike_of`): from 8 values (fewer leave the
# others' std too rough) up to where the whole std can itself reach OUTLIER_SIGMAS (√(n−1) > 25 from 627 on).
SPIKE_VALUES = (8, 626)
# A spike this many standard deviations of the others out. Not OUTLIER_SIGMAS: the whole-std rule, seen against
# the others, tolerates a single spike up to 25/√(1 − 625/n) of their σ (58σ at 768 values, 163σ at 640), and
# trained norm scales have outlier dimensions tens of σ out by design. A corrupted write (1e4 among 0.02-scale
# values) stands ~10^5σ out; healthy tensors of 8-626 values reached 6.7σ at most (720 of them: 10 architectures
# fresh, after 5 Adam steps, and cast to float8; scripts/health80_sweep.py).
SPIKE_SIGMAS = 100.0
# A learned position table (GPT-2's wpe, BERT's position_embeddings): the rows past the longest sequence trained on
# get no gradient and stay exactly at their init, so the warning may be right about most of it (GPT-2 trained on
# 12 tokens of 32 positions: 20 rows bit-identical to the fresh model's).
_POSITION_TABLE = re.compile(r"(^|\.)(wpe|position_embeddings?|pos_embed(ding)?s?|embed_positions)\.weight$")
_UNTRAINED_HINT = ("a head saved before fine-tuning, a layer frozen by mistake, or a short run at a small learning "
                   "rate that moved it too little to see; check the training setup")
_FROZEN_HINT = ("a head saved before fine-tuning, a layer frozen by mistake (requires_grad=False, or left out of the "
                "optimiser's parameter groups) or one the loss never reaches; check the training setup")
_POSITION_ROWS_NOTE = ("; in a position table the rows past the longest sequence trained on get no gradient at all "
                       "and stay exactly at their init: fine if the model is only used on sequences that short")
# Statistics of activations, not weights: a BatchNorm's running variance is heavy-tailed by nature.
_RUNNING_STATISTICS = ("running_mean", "running_var")
# A matrix whose root mean square is this many times the one its (certain) init gave it has blown up: training
# moves weights by a few times their init scale (BERT, GPT-2, Llama: 1-5×; learned relative-position tables, the
# widest, ~100×), and fp16-overflow only speaks from an abs max of 65520 on (~10^6× a 0.02 init).
EXPLODED_RATIO = 1000.0
_EXPLODE_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})  # not fp8: scaled to its range by design
# The pass is bound by memory and disk, not arithmetic. With several torch threads every reduction waits
# for its slowest thread, which on a shared machine is often descheduled: measured on a loaded 2-core VM,
# 2 threads made the whole pass about 4× slower than 1 (docs/bench-inspect-stats.md). So it runs on one.
STATS_THREADS = 1  # |x - mean| / std beyond which values are "extreme outliers"
_BOUNDED = frozenset({"uniform", "truncated_normal"})  # bounded fitted families, not named schemes
INIT_LABELS = frozenset({"zeros", "ones", "constant", "normal", "truncated_normal", "uniform", "xavier_uniform",
                         "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal", "ambiguous"})


@dataclass(frozen=True)
class Spike:
    """A small tensor's value farthest from its median, against the others.

    Attributes:
        value: that value.
        sigmas: its distance from the others' mean in the others' std; None where the others are all equal.
        others: the value every other one holds, where they are all equal; else None.
    """

    value: float
    sigmas: float | None
    others: float | None

    @property
    def extreme(self) -> bool:
        """Beyond SPIKE_SIGMAS of the others' spread, or, beside others all equal to c ≠ 0, beyond
        SPIKE_SIGMAS·|c| from it (a norm of ones holding a 1e4; a trained 1.005 is no spike)."""
        if self.sigmas is not None:
            return self.sigmas > SPIKE_SIGMAS
        return self.others is not None and self.others != 0 and \
            abs(self.value - self.others) > SPIKE_SIGMAS * abs(self.others)


@dataclass
class TensorHealth:
    """One tensor's statistics, found and expected initialization."""

    name: str
    shape: list[int]
    dtype: str
    stats: TensorStats
    init: InitResult
    expected: ExpectedInit | None
    at_init: bool | None  # still matches its (expected) initialization; None when it cannot be said
    histogram: dict[str, Any] = field(default_factory=dict, metadata={"json": False})
    # A small tensor's value farthest from its median, against the others (`spike_of`); None when not judged.
    spike: Spike | None = field(default=None, metadata={"json": False})
    # A float32 matrix with a certain normal init: how its values sit on the grid PyTorch's CPU normal_ draws on
    # (`generator_marks`); None when not judged.
    marks: GeneratorMarks | None = field(default=None, metadata={"json": False})


@dataclass(frozen=True)
class PooledSpread:
    """The matrices still at their (certain) random init, pooled: their values' spread against the init's.

    One matrix of 1,024 values tells its std to ±2%, and five Adam steps at lr 1e-3 widen a 0.02 init by ~3%:
    alone, each still fits its init. Pooled, their sum of squares is a χ²-like sum the inits predict exactly.

    Attributes:
        tensors: how many matrices were pooled.
        values: how many values.
        variance_ratio: their mean square, each value over its init's mean square (1.0: as their inits give).
        z: that excess in standard deviations of the sum under the inits (its sign says wider or narrower).
        names: the matrices pooled.
        left_out: the matrices at their init left out because their bias or block's norms say they got no update
            (`update_evidence`): frozen, bit for bit at their init, they would dilute the others' movement, and
            "they have trained too" would count them.
    """

    tensors: int
    values: int
    variance_ratio: float
    z: float
    names: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()

    @property
    def moved(self) -> bool:
        """The values have spread away from their inits by more than chance (and than slack in the rules)."""
        return abs(self.z) > POOLED_SIGMAS and abs(self.variance_ratio - 1.0) > POOLED_SLACK


@dataclass
class StatsReport:
    """Everything `inspect --stats` adds to `inspect`.

    Attributes:
        tensors: one entry per floating tensor analysed.
        findings: what is wrong, most severe first.
        sample: values read per tensor (None: all of them).
        expected_from: "transformers" (the model's own init rules) or "pytorch-defaults" (guessed).
        model_class: the class whose init rules were used.
        trained_share: share of matrix parameters (2-D and up) that moved from initialization enough to tell
            matrix by matrix (`at_init` false); the matrices pooled can tell more (`pooled`, `state_basis`).
        state: "trained", "initialization", "mixed" or "unknown".
        state_basis: what `state` rests on: "tensors" (the trained share alone), "pooled" (the matrices still at
            their init, pooled, moved: trained although the share alone would read otherwise), "constants" (every
            vector initialized to an exact constant, norms' ones and biases' zeros, has left it: trained although
            the matrices, alone and pooled, would read otherwise), None ("unknown").
        skipped: tensors without statistics (integer or unreadable dtypes).
        warnings: things worth knowing that are not findings.
        aliases: names of a tensor saved under several names (tied weights in a pickle) -> the name it was
            analysed under: one tensor, analysed, counted and reported once.
        pooled: the matrices still at a known random init, pooled (`pooled_spread`), or None.
    """

    tensors: list[TensorHealth]
    findings: list[Finding]
    sample: int | None
    expected_from: str
    model_class: str | None
    trained_share: float | None
    state: str
    skipped: list[str]
    warnings: list[str]
    aliases: dict[str, str] = field(default_factory=dict)
    pooled: PooledSpread | None = None
    state_basis: str | None = None


def _histogram(values: Any, low: float, high: float) -> dict[str, Any]:
    import torch

    if values.numel() == 0 or not (math.isfinite(low) and math.isfinite(high)) or low == high:
        return {}
    # A float64 tensor's sample and range stay float64: its bounds may lie beyond float32's, and their
    # difference beyond float64's (1e308 − −1e308); binned scaled by a power of two (exact) below 1.
    # Only scaled down: 2**1074 for a subnormal range does not exist, and a tiny range overflows nothing.
    exponent = min(0, -math.frexp(max(abs(low), abs(high)))[1])
    scale = math.ldexp(1.0, exponent)
    wide = values.double() * scale
    counts = torch.histc(wide, bins=HIST_BINS, min=low * scale, max=high * scale)
    return {"low": low, "high": high, "counts": [int(c) for c in counts.tolist()], "n": int(values.numel())}


def spike_of(values: Any) -> Spike | None:
    """The value farthest from the median, measured against the others' mean and std (`Spike`).

    With the spike inside the std, n values reach at most √(n−1) σ: `extreme-outliers` (25σ) could never fire
    on 626 values or fewer (a norm's 32 ones with one 1e4 among them read 5.6σ). Left out of its own std, a spike
    stands where it is. None outside the sizes that need it (SPIKE_VALUES).

    Example:
        >>> import torch
        >>> round(spike_of(torch.tensor([1.0, -1.0] * 8 + [101.0])).sigmas)
        101
        >>> spike_of(torch.tensor([1.0] * 31 + [1e4])).extreme, spike_of(torch.tensor([1.0] * 31 + [1.005])).extreme
        (True, False)
    """
    import torch

    count = int(values.numel())
    if not SPIKE_VALUES[0] <= count <= SPIKE_VALUES[1]:
        return None
    wide = values.double()
    # Scaled down by a power of two (exact): ±1e308 in float64 would overflow the differences and the std.
    scale = math.ldexp(1.0, min(0, -math.frexp(float(wide.abs().max()))[1]))
    scaled = wide * scale
    index = int((scaled - scaled.median()).abs().argmax())
    others = torch.cat([scaled[:index], scaled[index + 1:]])
    spread = float(others.std(unbiased=False))
    value = float(wide[index])
    if not math.isfinite(spread):
        return None
    if spread > 0:
        return Spike(value, abs(float(scaled[index]) - float(others.mean())) / spread, None)
    return Spike(value, None, float(others[0]) / scale)


def _initializer_range(config: dict[str, Any] | None) -> float | None:
    """The config's initializer_range (or init_std), where it is a positive finite number, else None.

    Example:
        >>> _initializer_range({"initializer_range": 0.02}), _initializer_range({"initializer_range": float("inf")})
        (0.02, None)
    """
    if not config:
        return None
    for source in (config, config.get("text_config") or {}):
        for key in ("initializer_range", "init_std"):
            value = source.get(key) if isinstance(source, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                # Infinity (json reads the literal) made the init match's log-ratio a "math domain error", an integer
                # of 400 digits an OverflowError: inspect --stats stopped with "unexpected"
                number = float(value) if value < 1e300 else math.inf
                if math.isfinite(number):
                    return number
    return None




def _tensor_findings(item: TensorHealth) -> list[Finding]:
    s, name = item.stats, item.name
    found: list[Finding] = []
    if is_dtype_placeholder(name, math.prod(item.shape)):
        return found  # uninitialized memory kept for its dtype: a NaN or 1e30 there is no weight gone wrong
    matrix = len(item.shape) >= 2
    if s.inf and not s.nan and "mask" in name.rsplit(".", 1)[-1].lower():
        # An attention mask buffer (CLIP's causal `attn_mask`) holds -inf where attention may not look, by design.
        found.append(Finding("info", "mask-inf", name,
                             f"{counted(s.inf, 'Inf value')} out of {s.count:,} in a mask buffer",
                             "expected for an additive attention mask; no action needed"))
        return found  # its finite part (zeros where attention may look) is no weight to judge either
    if s.nan or s.inf:
        found.append(Finding("error", "nan-inf", name,
                             f"{non_finite_count(s.nan, s.inf)} among {counted(s.count, 'value')}",
                             "find the step that diverged; this tensor cannot be used as is"))
    if s.finite_count == 0:
        return found
    expected_constant = item.expected is not None and item.expected.label in ("zeros", "ones", "constant")
    if (not matrix and s.finite_count > 1 and s.min == 0 == s.max and not (s.nan or s.inf)
            and item.expected is not None and item.expected.confident and item.expected.label == "ones"):
        # A norm's scale (or a gate) at zero multiplies its layer's output to zero: the all-zero matrix's fault on a
        # vector, which the matrix-only check let through (a zeroed RMSNorm weight read as "trained").
        found.append(Finding("error", "all-zero", name, "every value is zero where the model initializes it to ones",
                             "a zero scale passes nothing on (only a bias, if any): it was zeroed, or its values "
                             "were lost on save"))
        return found
    # min and max are over the finite values: with Inf or NaN beside zeros the matrix is not all zero.
    # A LoRA's B half is expected at zero, and still is: its adapter changes nothing, said as before.
    lora_zero = _LORA_ZERO_INIT.search(name) is not None
    zero_conv = _ZERO_CONV_INIT.search(name) is not None
    rotation = _ROTATION_ADAPTER.search(name) is not None
    lycoris_rotation = _LYCORIS_ROTATION.match(name) is not None
    glora = _GLORA_ZERO_FACTOR.match(name) is not None
    # MiCA's lora_A, AdaLoRA's lora_E, the zero factors of other peft methods (`peft_method_init`): where peft starts
    # them, by the adapter's config (each was "a layer that was never initialized", or with its zero expected, no
    # finding at all).
    peft_zero = (item.expected is not None and item.expected.confident and item.expected.label == "zeros"
                 and any(said in item.expected.source for said in ("init_lora_weights=", "AdaLoRA", "peft's",
                                                                   "AdaMSS")))
    if matrix and s.min == 0 == s.max and (lora_zero or zero_conv or rotation or lycoris_rotation or glora or peft_zero
                                           or not expected_constant) and not (s.nan or s.inf):
        if lycoris_rotation or glora:
            found.append(Finding("error", "all-zero", name, "the whole weight matrix is zero", (
                "a LyCORIS / kohya OFT adapter still at its initialization (both start their rotation blocks at "
                "zero, the identity rotation): it leaves the base weights as they are" if lycoris_rotation else
                "a LyCORIS GLoRA factor still at its initialization (LyCORIS starts a2 and b2 at zero): its term of "
                "the update W·a1·a2 + b1·b2 adds nothing") + "; saved before training, or its updates were lost"))
        elif rotation:
            found.append(Finding("error", "all-zero", name, "the whole weight matrix is zero",
                                 "an OFT / BOFT adapter still at its initialization (peft starts its rotation "
                                 "parameters at zero, the identity rotation): it leaves the base weights as they "
                                 "are; saved before training, or its updates were lost"))
        elif _PRODUCT_ADAPTER_FACTOR.search(name):
            # A LoHa / LoKr factor: one of them starts at zero, which one depends on the trainer (peft's hada_w2_b was
            # called "a layer that was never initialized", as kohya's lora_up once was).
            found.append(Finding("error", "all-zero", name, "the whole weight matrix is zero",
                                 "a LoHa / LoKr adapter still at its initialization (LyCORIS and peft start one "
                                 "factor of the product at zero): it changes nothing; saved before training, or its "
                                 "updates were lost"))
        elif item.expected is not None and "derived_from" in item.expected.params:
            found.append(Finding("error", "all-zero", name, "the whole weight matrix is zero",
                                 f"{item.expected.source} starts it from {item.expected.params['derived_from']}, "
                                 "never at zero: it was zeroed, or its values were lost on save"))
        elif peft_zero and item.expected is not None:
            found.append(Finding("error", "all-zero", name, "the whole weight matrix is zero",
                                 f"a PEFT adapter still at its initialization ({item.expected.source}): it changes "
                                 "nothing; saved before training, or its updates were lost"))
        elif zero_conv:
            found.append(Finding("error", "all-zero", name, "the whole weight matrix is zero",
                                 "a ControlNet (or ControlNet-LLLite) zero convolution still at its initialization "
                                 "(it starts at zero so that the control adds nothing before training): it changes "
                                 "nothing; saved before training, or its updates were lost"))
        elif lora_zero:
            # The adapter is where it began (a kohya LoRA's lora_up read as "never initialized" sent users to
            # look for a broken layer).
            found.append(Finding("error", "all-zero", name, "the whole weight matrix is zero",
                                 "a LoRA adapter still at its initialization (peft's lora_B, lora_embedding_A on "
                                 "an embedding, and kohya's lora_up start at zero): "
                                 "it changes nothing; saved before training, or its updates were lost"))
        else:
            found.append(Finding("error", "all-zero", name, "the whole weight matrix is zero",
                                 "a layer that was never initialized or was zeroed; it passes nothing on"))
        return found
    confident_spread = item.expected is not None and item.expected.confident and s.min != 0
    if s.min == s.max == 1 and _IA3_VECTOR.search(name):
        # Ones are where peft's IA3 starts (init_ia3_weights), not a layer that failed to break symmetry.
        found.append(Finding("warn", "constant", name, "every value is 1",
                             "an IA3 adapter still at its initialization (peft starts ia3_l at ones): it scales "
                             "nothing; saved before training, or its updates were lost"))
        return found
    if s.min == s.max == 1 and _LYCORIS_RESCALE.match(name):
        found.append(Finding("warn", "constant", name, "every value is 1",
                             "a LyCORIS OFT / BOFT adapter's rescale still at its initialization (LyCORIS starts it "
                             "at ones): it scales nothing; saved before training, or its updates were lost"))
        return found
    if s.min == s.max == 1 and _ROTATION_ADAPTER_SCALE.search(name):
        found.append(Finding("warn", "constant", name, "every value is 1",
                             "an OFT / BOFT adapter's scale still at its initialization (peft starts it at ones): it "
                             "scales nothing; saved before training, or its updates were lost"))
        return found
    # One value (a (1, 1) FP8 scale) cannot vary: it is no constant that failed to break symmetry.
    if s.min == s.max and s.finite_count > 1 and not expected_constant and (matrix or confident_spread):
        found.append(Finding("warn", "constant", name, f"every value is {s.min:g} where variation is expected",
                             "a constant weight never breaks symmetry; check how it was produced"))
        return found
    if expected_constant and item.expected is not None and s.min == s.max == item.expected.params.get("value"):
        return found  # exactly the constant the model initializes it to: no rows or columns to judge
    # A table the model computes (a confident `other` rule: sinusoids or Mamba's A_log = log(1..N) copied in, eye_,
    # dirac_) is zero and repeats where its formula is (log 1 = 0 in every row, a sinusoid's slowest columns in
    # fp16): no dead unit, no symmetry left unbroken.
    computed = item.expected is not None and item.expected.confident and item.expected.label == "other" \
        and "derived_from" not in item.expected.params
    if s.zero_rows and not computed:
        padding = set(item.expected.zero_rows) if item.expected is not None else set()
        dead = [i for i in s.zero_row_index if i not in padding]
        unlisted = s.zero_rows - len(s.zero_row_index)
        count = len(dead) + max(unlisted, 0)
        guessed_embedding = item.expected is not None and not item.expected.confident and \
            item.expected.label == "normal" and s.zero_rows == 1
        if count and not guessed_embedding:  # one zero row of an embedding is its padding row
            shown = ", ".join(map(str, dead[:8])) + (" …" if count > 8 else "")
            found.append(Finding("warn", "dead-rows", name,
                                 f"{count} of {counted(item.shape[0], 'row', grouped=False)} "
                                 f"{plural(count, 'is', 'are')} all zero (dead {plural(count, 'unit')}: {shown})",
                                 "these units output nothing; check pruning or an init that skipped them"))
    if s.zero_cols and len(item.shape) == 2 and s.zero_cols < item.shape[1] and not computed:
        # A column of a Linear weight is one input: all zero, nothing this layer computes reads it (a unit
        # of the layer before that died, or pruning). Conv kernels are left out: masked convolutions zero
        # kernel positions by design.
        found.append(Finding("warn", "dead-columns", name,
                             f"{s.zero_cols} of {counted(item.shape[1], 'column', grouped=False)} "
                             f"{plural(s.zero_cols, 'is', 'are')} all zero "
                             f"({plural(s.zero_cols, 'an input', 'inputs')} this layer ignores)",
                             "check pruning, or the unit of the layer before that feeds them"))
    if s.duplicate_rows and not computed:
        found.append(Finding("warn", "duplicate-rows", name,
                             f"{counted(s.duplicate_rows, 'row')} {plural(s.duplicate_rows, 'repeats', 'repeat')} "
                             "another row exactly "
                             "(symmetry never broken)",
                             "rows that start equal get equal gradients and never diverge; re-initialize randomly"))
    if computed:
        pass
    elif s.duplicate_cols and _HRA_VECTORS.search(name):
        # Every vector twice is where peft starts; fewer repeats, pairs that did not move while the others did.
        whole = len(item.shape) == 2 and s.duplicate_cols * 2 == item.shape[1]
        found.append(Finding("warn", "duplicate-columns", name,
                             f"{counted(s.duplicate_cols, 'column')} {plural(s.duplicate_cols, 'repeats', 'repeat')} "
                             "another column exactly",
                             ("an HRA adapter still at its initialization" if whole
                              else "HRA Householder vectors still paired as at initialization")
                             + " (peft starts each Householder vector twice, so that each pair of reflections "
                             "cancels: the identity)" + (": it changes nothing; saved before training, or its "
                                                         "updates were lost" if whole else "")))
    elif s.duplicate_cols:
        found.append(Finding("warn", "duplicate-columns", name,
                             f"{counted(s.duplicate_cols, 'column')} {plural(s.duplicate_cols, 'repeats', 'repeat')} "
                             "another column exactly "
                             "(symmetry never broken)",
                             "re-initialize randomly"))
    outliers = False
    if s.std > 0:
        z = max(s.max - s.mean, s.mean - s.min) / s.std
        outliers = z > OUTLIER_SIGMAS
        if outliers:
            found.append(Finding("warn", "extreme-outliers", name,
                                 f"values reach {z:.0f} standard deviations from the mean (abs max {s.abs_max:.4g})",
                                 "check for a diverging unit or a corrupted write (or weight decay / pruning that left "
                                 "a few weights standing)"))
        elif item.spike is not None and item.spike.extreme:
            outliers = True
            spike = item.spike
            found.append(Finding("warn", "extreme-outliers", name,
                                 f"one value stands {spike.sigmas:,.0f} standard deviations of the other "
                                 f"{s.finite_count - 1:,} from their mean (abs max {s.abs_max:.4g})"
                                 if spike.sigmas is not None else
                                 f"one value is {spike.value:.4g} where the other {s.finite_count - 1:,} are all "
                                 f"{spike.others:g}",
                                 "check for a diverging unit or a corrupted write"))
    # A few values thousands of σ out inflate the root mean square on their own: that is the outliers' finding,
    # not a matrix that grew as a whole.
    exploded = None if outliers else _exploded_ratio(item)
    if exploded is not None:
        assert item.expected is not None
        found.append(Finding("warn", "exploding-norm", name,
                             f"root mean square {_rms(s):.4g} is {exploded:,.0f}× that of its initialization "
                             f"{item.expected.describe()}",
                             "weights this far from their init scale have diverged (a learning rate too high, no "
                             "gradient clipping) or were scaled on save; compare with an earlier checkpoint "
                             "(diff-keys --values)"))
    if item.dtype not in ("float16",) and s.abs_max >= FP16_OVERFLOW:
        found.append(Finding("warn", "fp16-overflow", name,
                             f"abs max {s.abs_max:.6g} is beyond the fp16 range (±65504): cast to fp16 it becomes inf",
                             "this tensor overflows in fp16; see `weightdoctor check-dtype`"))
    return found


def _rms(stats: TensorStats) -> float:
    """√(mean² + std²) of the finite values, without squaring values float64 cannot square."""
    return math.hypot(stats.mean, stats.std)


def _expected_rms(expected: ExpectedInit) -> float | None:
    """The root mean square of values drawn by `expected` (a certain random init), or None where it has none.

    Example:
        >>> _expected_rms(ExpectedInit("normal", {"mean": 0.0, "std": 0.02}, "", True))
        0.02
        >>> round(_expected_rms(ExpectedInit("uniform", {"bound": 3 ** 0.5}, "", True)), 12)
        1.0
    """
    if not expected.confident or expected.label in ("zeros", "ones", "constant", "other", "orthogonal"):
        return None
    std, bound = expected.params.get("std"), expected.params.get("bound")
    if isinstance(std, (int, float)) and std > 0:
        return math.hypot(float(expected.params.get("mean", 0.0)), float(std))
    if isinstance(bound, (int, float)) and bound > 0:
        return float(bound) / math.sqrt(3.0)
    return None


def _exploded_ratio(item: TensorHealth) -> float | None:
    """How many times its init's root mean square a matrix's is, where that is `EXPLODED_RATIO` or more, else None."""
    s = item.stats
    if (len(item.shape) < 2 or item.expected is None or item.dtype not in _EXPLODE_DTYPES
            or "derived_from" in item.expected.params or not s.finite_count):
        return None
    want = _expected_rms(item.expected)
    if want is None:
        return None
    ratio = _rms(s) / want
    # NaN compares False; inf (a root mean square beyond float64's range) is kept
    return ratio if ratio >= EXPLODED_RATIO else None


def _truncated_square_moments(params: dict[str, Any]) -> tuple[float, float] | None:
    """E x² of a normal(mean, std) cut at [a, b] (torch's absolute bounds), and Var x² / (E x²)², or None.

    From the cut standard normal's moments m_k = (k−1)·m_{k−2} − (β^{k−1}φ(β) − α^{k−1}φ(α)) / Z (ModernBERT's
    matrices are cut at ±2σ: E z² 0.774 and Var z² / (E z²)² 1.37, not a normal's 1 and 2).

    Example:
        >>> [round(v, 4) for v in _truncated_square_moments({"mean": 0.0, "std": 1.0, "a": -2.0, "b": 2.0})]
        [0.7737, 1.3655]
    """
    mean, std, low, high = (params.get(k) for k in ("mean", "std", "a", "b"))
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (mean, std, low, high)) or not std > 0:
        return None
    alpha, beta = (low - mean) / std, (high - mean) / std
    mass = 0.5 * (math.erf(beta / math.sqrt(2)) - math.erf(alpha / math.sqrt(2)))
    if not beta > alpha or mass < 1e-12:
        return None

    def tail(k: int) -> float:  # (β^k φ(β) − α^k φ(α)) / Z, a bound at infinity adding nothing
        return sum(sign * (z ** k * math.exp(-z * z / 2) / math.sqrt(2 * math.pi) if math.isfinite(z) else 0.0)
                   for sign, z in ((1, beta), (-1, alpha))) / mass

    m1 = -tail(0)
    m2 = 1 - tail(1)
    m3 = 2 * m1 - tail(2)
    m4 = 3 * m2 - tail(3)
    # x = mean + std·z: its second and fourth moments.
    second = mean ** 2 + 2 * mean * std * m1 + std ** 2 * m2
    fourth = (mean ** 4 + 4 * mean ** 3 * std * m1 + 6 * mean ** 2 * std ** 2 * m2 + 4 * mean * std ** 3 * m3
              + std ** 4 * m4)
    if not second > 0:
        return None
    return second, (fourth - second * second) / (second * second)


def pooled_spread(items: list[TensorHealth], frozen: frozenset[str] = frozenset()) -> PooledSpread | None:
    """Pool the matrices that each still match a certain random init (normal or uniform, known scale), but those
    named in `frozen` (their bias or block's norms say they got no update: `update_evidence`).

    Example:
        >>> pooled_spread([]) is None
        True
    """
    observed = expected = variance = 0.0
    tensors = values = 0
    names: list[str] = []
    left_out: list[str] = []
    for item in items:
        want, s = item.expected, item.stats
        if (len(item.shape) < 2 or not item.at_init or want is None or not want.confident
                or item.dtype not in _EXPLODE_DTYPES or s.nan or s.inf or "derived_from" in want.params
                or "structure" in want.params or want.label == "orthogonal" or (s.sampled and want.zero_rows)):
            continue
        # The padding rows the model zeroes after its init hold no draw of it. Under --sample the values read are
        # whole aligned blocks, none twice: at init, independent draws of it all the same (a sum of squares of
        # fewer values, so a wider noise, which the z accounts for); only how many of them fell in a zeroed row is
        # unknown, so such a matrix is left out there.
        zeroed = len(want.zero_rows) * (s.count // item.shape[0] if item.shape[0] else 0)
        draws = s.finite_count - zeroed
        std, bound = want.params.get("std"), want.params.get("bound")
        mean = float(want.params.get("mean", 0.0))
        # Each value's square over its init's mean square: a 0.02 init and T5's 0.18 one weigh alike per value
        # (Adam moves every weight by about its learning rate, whatever its scale: the narrow ones tell most).
        moments = _truncated_square_moments(want.params) if want.label == "truncated_normal" else None
        if want.label == "truncated_normal":
            if moments is None:
                continue
            square, spread = moments
        elif isinstance(std, (int, float)) and std > 0:
            square = mean * mean + std * std
            spread = (2 * std ** 4 + 4 * mean * mean * std * std) / (square * square)
        elif isinstance(bound, (int, float)) and bound > 0 and not mean:
            square, spread = bound * bound / 3, 0.8  # E x² of U(±bound), and Var x² / (E x²)²
        else:
            continue
        if draws < MIN_VALUES:
            continue
        if item.name in frozen:
            left_out.append(item.name)
            continue
        observed += s.finite_count * (s.std * s.std + s.mean * s.mean) / square
        expected += draws
        variance += draws * spread
        tensors, values = tensors + 1, values + draws
        names.append(item.name)
    if not tensors or expected <= 0 or variance <= 0:
        return None
    return PooledSpread(tensors, values, observed / expected, (observed - expected) / math.sqrt(variance),
                        tuple(names), tuple(left_out))


def _value_range(stats: TensorStats) -> tuple[float, float] | None:
    """(min, max) of the values read, or None when they include NaN or Inf (or there are none)."""
    if stats.nan or stats.inf or not stats.finite_count:
        return None
    return stats.min, stats.max


def _still_at_init(item: TensorHealth) -> bool | None:
    expected = item.expected
    if expected is not None and expected.confident and expected.label == "other":
        # A table the model computes (Whisper's sinusoids, copy_) fits no distribution: "trained" would be the
        # classifier's guess, so it is left out of the trained share.
        return None
    if (expected is not None and expected.confident and expected.label in ("zeros", "ones", "constant")
            and item.init.label != "undetermined" and item.stats.count >= 2):
        # A norm's ones or a bias's zeros: exactly the constant or not, whatever the number of values.
        return matches_expected(item.init, expected, item.stats.finite_count, _value_range(item.stats))
    if item.init.label in ("undetermined",) or item.stats.finite_count < MIN_VALUES:
        return None
    if item.init.label == "trained":
        return False
    if expected is not None and expected.confident:
        return matches_expected(item.init, expected, item.stats.finite_count, _value_range(item.stats))
    if expected is not None and not item.init.named and item.init.label in _BOUNDED:
        # The expected init is a guess (PyTorch's defaults for the shape) and the values fit a bounded family
        # at no named scheme's scale: a uniform init whose plateau training has widened and softened keeps
        # a bounded shape. Only at the guessed init's scale is it still at init (U(±0.18) never reaches
        # 0.34). A plain normal at an unnamed scale is left to the label: custom inits (GPT-2's
        # 0.02/√(2·layers) projections) are normal at any scale.
        verdict = matches_expected(item.init, expected, item.stats.finite_count, _value_range(item.stats))
        if verdict is not None:
            return verdict
    return item.init.label in INIT_LABELS


def init_constant_vectors(items: list[TensorHealth]) -> list[TensorHealth]:
    """The vectors the model initializes to an exact constant (norm scales at ones, biases at zeros, Gemma's
    zero-centred norms at zeros), judged: `at_init` says whether each still holds it exactly.

    An optimiser step moves every parameter that got a gradient off its constant (Adam by about its learning rate,
    whatever the scale), and float16 / bfloat16 / float8 keep ones and zeros exact: where all of them moved, the
    checkpoint was trained, however little its matrices' spread tells.
    """
    return [item for item in items
            if len(item.shape) == 1 and item.expected is not None and item.expected.confident
            and item.expected.label in ("zeros", "ones", "constant") and item.stats.count >= 2
            and item.at_init is not None]


def _constants_moved(vectors: list[TensorHealth]) -> bool:
    """All of (at least two) init-constant vectors have left their constant: one left at it (a norm that gets no
    gradient) and the evidence is no longer whole, so it is not used."""
    return len(vectors) >= MIN_CONSTANT_VECTORS and all(item.at_init is False for item in vectors)


def _constants_said(vectors: list[TensorHealth]) -> str:
    labels = sorted({item.expected.label for item in vectors if item.expected is not None})
    moved = sum(1 for item in vectors if item.at_init is False)
    # Said as what they are (norm scales and biases), not "vectors the model initializes to exact …" first.
    return (f"{'all' if moved == len(vectors) else f'{moved} of the'} {len(vectors):,} norm scales and biases "
            f"that start at exact {' or '.join(labels)} have moved")


def _updated_said(names: set[str], evidence: dict[str, UpdateEvidence]) -> str:
    """"6 matrices still look like their initialization, but their biases moved, so they did get small updates"
    (and / or: sit in blocks whose norms all moved), a sentence of its own: up to `_NAMED_UPDATED` of them named,
    so that the reader can find them in the table above.

    Example:
        >>> _updated_said({"fc.weight"}, {"fc.weight": UpdateEvidence(False, "its bias fc.bias moved")})
        '1 matrix (fc.weight) still looks like its initialization, but its bias moved, so it did get small updates'
    """
    by_bias = sorted(name for name in names if evidence[name].reason.startswith("its bias"))
    by_marks = sorted(name for name in names if evidence[name].reason.startswith(_LOST_MARKS))
    by_norms = sorted(names - set(by_bias) - set(by_marks))

    def which(group: list[str]) -> str:
        return counted(len(group), "matrix", "matrices") + (
            f" ({', '.join(group)})" if len(group) <= _NAMED_UPDATED else "")

    parts = ([f"{which(by_bias)} still {plural(len(by_bias), 'looks like its', 'look like their')} initialization, "
              f"but {plural(len(by_bias), 'its bias', 'their biases')} moved, so "
              f"{plural(len(by_bias), 'it', 'they')} did get small updates"] if by_bias else [])
    if by_norms:
        looks = plural(len(by_norms), 'looks like its', 'look like their')
        parts.append(f"{which(by_norms)} without a bias still {looks} initialization, but the norms of "
                     f"{plural(len(by_norms), 'its block', 'their blocks')} all moved, so "
                     f"{plural(len(by_norms), 'it', 'they')} likely got small updates too")
    if by_marks:
        parts.append(f"{which(by_marks)} still {plural(len(by_marks), 'looks like its', 'look like their')} "
                     f"initialization, but {plural(len(by_marks), 'its', 'their')} values no longer sit on the grid "
                     "of angles PyTorch's normal_ draws on, where others of this checkpoint still do, so "
                     f"{plural(len(by_marks), 'it', 'they')} did get small updates")
    return ". ".join(parts)


# How many matrices `_updated_said` names; more are counted only.
_NAMED_UPDATED = 3


def _left_out_said(pooled: PooledSpread) -> str:
    """". The 6 matrices that got no update (untrained-tensor) are not counted here" where the pool left frozen ones
    out (`PooledSpread.left_out`), else "": the pool's count then reads against the matrices still at their init.

    Example:
        >>> _left_out_said(PooledSpread(2, 2048, 1.1, 5.0, ("a.weight", "b.weight"), ("c.weight",)))
        '. The 1 matrix that got no update (untrained-tensor) is not counted here'
    """
    count = len(pooled.left_out)
    if not count:
        return ""
    return (f". The {counted(count, 'matrix', 'matrices')} that got no update (untrained-tensor) "
            f"{plural(count, 'is', 'are')} not counted here")


def _frozen_finding(item: TensorHealth, said: UpdateEvidence, beside: str) -> Finding:
    """The untrained-tensor warning on a matrix at init whose bias or block's norms say it got no update."""
    return Finding(
        "warn", "untrained-tensor", item.name,
        f"still matches its initialization {item.expected.describe() if item.expected is not None else ''} "
        f"(found {item.init.describe()}) {beside}; {said.reason}: this layer got no update", _FROZEN_HINT)


def _frozen_findings(matrices: list[TensorHealth], evidence: dict[str, UpdateEvidence], folded: set[str],
                     beside: str) -> list[Finding]:
    """The frozen matrices' warnings where the checkpoint's state rests on the pool or on its constants; the
    vectors they name are added to `folded`."""
    found = []
    for item in matrices:
        said = evidence.get(item.name)
        if item.at_init and said is not None and said.frozen:
            folded.update(said.vectors)
            found.append(_frozen_finding(item, said, beside))
    return found


_BLOCK_INDEX = re.compile(r"\.(\d+)\.")  # a layer's index in its name (`h.3.`, `block.0.`): the first one is its block


@dataclass(frozen=True)
class UpdateEvidence:
    """What a matrix still at its init keeps or lost beside its own bias or its block's norms.

    Attributes:
        frozen: True where they say it got no update (its bias, or every norm and bias of its block, still exactly
            at the init constant while other such vectors moved), False where they say it got updates (its bias moved,
            or its block's norms all moved in a checkpoint most of whose matrices cannot be told alone).
        reason: that evidence, in words, for the finding.
        vectors: the vectors named in it (said there, not in findings of their own).
    """

    frozen: bool
    reason: str
    vectors: tuple[str, ...] = ()


def _block_of(name: str) -> str | None:
    """The block prefix of a tensor's name, up to its first layer index: `encoder.block.0.` for T5's
    `encoder.block.0.layer.1.DenseReluDense.wi.weight`; None outside numbered layers (embedding tables)."""
    match = _BLOCK_INDEX.search(name)
    return None if match is None else name[: match.end()]


def update_evidence(matrices: list[TensorHealth], vectors: list[TensorHealth],
                    share: float) -> dict[str, UpdateEvidence]:
    """For each matrix still at its init, what the vectors initialized to exact constants say of its updates.

    An optimiser step moves every parameter that got a gradient off its exact constant (Adam by about its learning
    rate), so beside vectors that moved, one still at its constant got none. A Linear's bias gets a gradient
    whenever its weight does: a matrix at init whose bias moved was updated, too little to tell from its spread
    alone; one whose bias stayed while others moved was frozen (requires_grad=False) or never reached. A matrix
    without a bias (T5, Llama) is read with its block: every norm and bias of the block at its constant while
    others moved, the block was frozen; all of them moved, the block got gradients, and the matrix is counted as
    updated only where it cannot be told from its siblings: in a checkpoint most of whose matrix parameters
    (TRAINED_SHARE) stayed within their inits' noise (T5 after 300 AdamW steps: 0.18-wide inits beside steps of
    1e-3), or where no matrix of its kind in another block moved enough to tell alone. A norm moves even when
    the matrix after it is frozen, so a lone frozen matrix in a trained block is not told this way.

    Example:
        >>> update_evidence([], [], 0.0)
        {}
    """
    moved = [v for v in vectors if v.at_init is False]
    by_name = {v.name: v for v in vectors}
    told = {m.name for m in matrices if m.at_init is False}
    kinds_told = {_BLOCK_INDEX.sub(".{i}.", name, count=1) for name in told}
    found: dict[str, UpdateEvidence] = {}
    # Others got updates (vectors off their constants, or matrices told alone): a matrix whose values are still
    # exactly as PyTorch's generator drew them got none, whatever its bias or block's norms did (a norm moves even
    # when the one matrix after it is frozen: Llama with one mlp matrix frozen read "the norms of its block moved").
    others_moved = len(moved) >= MIN_CONSTANT_VECTORS or bool(told)
    # Matrices still bit for bit as PyTorch's CPU normal_ drew them say where this checkpoint's inits came from: beside
    # them, a matrix of the same kind of init whose values lost those marks got updates (GPT-2 after 5 AdamW steps
    # with one mlp frozen: its wte moved too little to tell by its spread, and was warned beside the frozen c_fc).
    drawn_here = [m.name for m in matrices if m.at_init and m.marks is not None and m.marks.present]
    for matrix in matrices:
        if not matrix.at_init:
            continue
        bias = by_name.get(matrix.name.removesuffix("weight") + "bias") if matrix.name.endswith(".weight") else None
        marked = others_moved and matrix.marks is not None and matrix.marks.present
        if bias is not None and bias.expected is not None:
            if bias.at_init is False and marked:
                found[matrix.name] = _marks_evidence(matrix)
            elif bias.at_init is False:
                found[matrix.name] = UpdateEvidence(False, f"its bias {bias.name} moved")
            elif len(moved) >= MIN_CONSTANT_VECTORS:
                found[matrix.name] = UpdateEvidence(
                    True, f"its bias {bias.name} is still exactly {bias.expected.label}, as at initialization, while "
                    f"{len(moved)} of the {counted(len(vectors), 'vector')} the model initializes to exact constants "
                    "moved", (bias.name,))
            continue
        block = _block_of(matrix.name)
        own = [v for v in vectors if block is not None and v.name.startswith(block)]
        lost = bool(drawn_here) and matrix.marks is not None and matrix.marks.gone
        if not own:
            if marked:  # an embedding table or a head: no block to read it with
                found[matrix.name] = _marks_evidence(matrix)
            elif lost:
                found[matrix.name] = _lost_marks_evidence(drawn_here)
            continue
        elsewhere = [v for v in moved if not v.name.startswith(block or "")]
        if all(v.at_init for v in own) and len(elsewhere) >= MIN_CONSTANT_VECTORS:
            found[matrix.name] = UpdateEvidence(
                True, f"so do all {counted(len(own), 'norm and bias vector', 'norm and bias vectors')} of its block "
                f"{block}* (exactly at their init constants) while {len(elsewhere)} elsewhere moved",
                tuple(v.name for v in own))
        elif marked:
            found[matrix.name] = _marks_evidence(matrix)
        elif all(v.at_init is False for v in own) and (
                share < TRAINED_SHARE or _BLOCK_INDEX.sub(".{i}.", matrix.name, count=1) not in kinds_told):
            found[matrix.name] = UpdateEvidence(False, f"the norms of its block {block}* all moved")
        elif lost:
            found[matrix.name] = _lost_marks_evidence(drawn_here)
    return found


_LOST_MARKS = "its values no longer sit"


def _lost_marks_evidence(drawn_here: list[str]) -> UpdateEvidence:
    """A matrix whose values lost the marks of PyTorch's CPU normal_ that others of the checkpoint keep: updated."""
    return UpdateEvidence(
        False, f"{_LOST_MARKS} on the grid of angles PyTorch's normal_ draws on, where "
        f"{counted(len(drawn_here), 'matrix', 'matrices')} of this checkpoint still "
        f"{plural(len(drawn_here), 'sits', 'sit')}")


def _marks_evidence(matrix: TensorHealth) -> UpdateEvidence:
    """A matrix whose values still carry the marks of PyTorch's CPU normal_ (`generator_marks`): frozen."""
    assert matrix.marks is not None
    return UpdateEvidence(
        True, "its values are still exactly as PyTorch's normal_ drew them (their pairs sit on its grid of 2^24 "
        "angles, which any update erases) while others moved")


# The hint of a matrix that trained too little to tell alone.
_EARLY_STEPS_HINT = "expected early in training: the optimiser's steps are still small beside a matrix's initial spread"


def _checkpoint_findings(items: list[TensorHealth], selected: bool = False
                         ) -> tuple[list[Finding], float | None, str, str | None, PooledSpread | None]:
    """Findings about the checkpoint as a whole: untrained tensors in a trained model, all at init.

    `selected`: only the tensors `--filter` chose were read, so the findings speak of them, not the checkpoint.
    The matrices at their init are pooled (`pooled_spread`): where they have moved together, a checkpoint
    whose matrices each still fit their init has trained (briefly) all the same, and beside matrices that trained,
    those still at their init that moved together are no "layer that never trained". Those whose bias or block's
    norms say they got no update (`update_evidence`: frozen) are left out of the pool: they are warned as frozen,
    and pooled they would read "trained too" beside that warning (T5 with encoder.block.1 frozen: its 6 matrices
    among the 30 "that have trained too").
    The vectors initialized to exact constants (`init_constant_vectors`): where every one of them moved, the
    checkpoint has trained whatever its matrices' spread says (T5 after 300 AdamW steps: weight decay and
    random-sign updates keep a matrix's variance), and a matrix whose own bias moved got updates.
    Returns the findings, the trained share, the state, what the state rests on (`StatsReport.state_basis`) and
    the pool.
    """
    matrices = [i for i in items if len(i.shape) >= 2 and i.at_init is not None
                and i.init.label not in ("zeros", "ones", "constant")]
    total = sum(i.stats.count for i in matrices)
    trained = sum(i.stats.count for i in matrices if i.at_init is False)
    share = trained / total if total else 0.0
    vectors = init_constant_vectors(items)
    evidence = update_evidence(matrices, vectors, share)
    pooled = pooled_spread(items, frozenset(name for name, said in evidence.items() if said.frozen))
    if not total:
        return [], None, "unknown", None, pooled
    constants_moved = _constants_moved(vectors)
    moved_vectors = {item.name for item in vectors if item.at_init is False}
    # Most of them moved, the rest still exactly at their constants: trained, with a layer frozen (its bias or its
    # block's norms stayed). A majority, so that a fresh model with a few constants its init rules mispredict does
    # not read as trained.
    constants_mostly = constants_moved or (len(moved_vectors) >= MIN_CONSTANT_VECTORS
                                           and 2 * len(moved_vectors) > len(vectors))
    constants = {item.name: item for item in items
                 if len(item.shape) == 1 and item.expected is not None and item.at_init
                 and item.expected.label in ("zeros", "ones") and item.stats.count >= 2}
    folded: set[str] = set()  # the vectors said in a matrix's finding
    findings: list[Finding] = []
    # In exact fractions: 1 - 0.9 is 0.0999… in floats, so a share of exactly 10% read "mixed", not "initialization".
    if Fraction(trained, total) > 1 - Fraction(str(INIT_SHARE)):
        # Trained, or mixed (a large layer left at init can hold most of the parameters): either way the
        # tensors still at init beside trained ones are the "layer that never trained".
        state, basis = ("trained" if share >= TRAINED_SHARE else "mixed"), "tensors"
        # The share is of the tensors read: with --filter, of the selection, not of the checkpoint.
        of_what = "the selected tensors'" if selected else "the checkpoint's"
        # GPT-2 after 5 Adam steps: its 0.01-scale projections moved enough to tell alone, its 0.02-scale matrices
        # (every row moved, by up to 5e-3) did not, and each read "still matches its initialization" in a "mixed"
        # model. The pool holds exactly the matrices still at a certain random init: where they moved together,
        # they trained too, only too little to tell one by one.
        moved_together = set(pooled.names) if pooled is not None and pooled.moved else set()
        # The frozen matrices are left out of the pool and warned below: beside them, every other matrix at its init
        # moved together, so the checkpoint trained (a frozen layer, said as such, is not "mixed").
        frozen = {name for name, said in evidence.items() if said.frozen}
        if state == "mixed" and moved_together and not any(item.at_init and item.name not in moved_together
                                                           and item.name not in frozen for item in matrices):
            state, basis = "trained", "pooled"
        # A matrix whose own bias left its init constant got updates (a bias's gradient is the sum of its layer's
        # output gradients, the weight's that times its inputs): it moved, too little to tell alone. A bias-less
        # one in a block whose norms all moved, in a checkpoint most of whose matrices cannot be told alone, too.
        updated = {name for name, said in evidence.items() if not said.frozen}
        said_updated = False
        if state == "mixed" and constants_mostly:
            # CLIP after 300 AdamW steps: 27 matrices moved 3-34% of their init's root mean square, at its
            # variance; every norm and bias of the model moved off its init constant.
            state, basis, said_updated = "trained", "constants", True
            findings.append(Finding(
                "info", "briefly-trained", None,
                # Short sentences, the conclusion first: one sentence of nested clauses was hard to read.
                f"the checkpoint has trained: {_constants_said(vectors)}, and {share:.1%} of {of_what} matrix "
                "parameters have clearly trained"
                + (f". {_updated_said(updated, evidence)}" if updated else ""),
                "expected early in training, or with weight decay at a small learning rate: both leave a "
                "matrix's spread where its initialization put it"))
        if moved_together and pooled is not None:
            findings.append(Finding(
                "info", "briefly-trained", None,
                f"{counted(pooled.tensors, 'matrix', 'matrices')} still "
                f"{plural(pooled.tensors, 'looks like its', 'look like their')} initialization one by one, but "
                f"{plural(pooled.tensors, 'it has', 'taken together they have')} trained too: "
                f"{plural(pooled.tensors, 'its', 'their')} {counted(pooled.values, 'value')} hold "
                f"{pooled.variance_ratio:.1%} of the variance their initialization gives, {abs(pooled.z):.1f} "
                f"standard deviations {'above' if pooled.z > 0 else 'below'} it. Beside them, {share:.1%} of "
                f"{of_what} matrix parameters have clearly trained{_left_out_said(pooled)}",
                _EARLY_STEPS_HINT))
        unsaid = updated - moved_together
        if unsaid and not said_updated:
            findings.append(Finding(
                "info", "briefly-trained", None,
                _updated_said(unsaid, evidence), _EARLY_STEPS_HINT))
        # Beside them, what the pool could not tell: said in each warning, so that it claims no more than that.
        pooled_note = "" if pooled is None or pooled.moved else (
            f"; pooled, the {counted(pooled.tensors, 'matrix', 'matrices')} still at a known random init hold "
            f"{pooled.variance_ratio:.1%} of the variance their inits give ({abs(pooled.z):.2f} standard "
            f"deviations {'above' if pooled.z > 0 else 'below'} it): too little to tell they moved")
        # The bias of a layer whose weight never trained (a classifier head left at init) is that layer's finding:
        # it gets a gradient whenever the weight does, so "norm-at-init: fine if this parameter gets no gradient"
        # beside the weight's warning said the opposite of it.
        for item in matrices:
            said = evidence.get(item.name)
            if not item.at_init or item.name in updated or (said is None and item.name in moved_together):
                continue
            # Frozen (its bias or its block's norms still at their constants while others moved): warned, pooled
            # or not (a frozen c_fc pooled with five matrices that moved together read "trained" with an info).
            bias = constants.get(item.name.removesuffix("weight") + "bias") if item.name.endswith(
                ".weight") else None
            also = ""
            if bias is not None and bias.expected is not None:
                folded.add(bias.name)
                also = f"; so does its bias {bias.name} (exactly {bias.expected.label}, as at initialization)"
            elif said is not None:
                folded.update(said.vectors)
                also = f"; {said.reason}"
            # A matrix its bias, block or generator marks say got no update is frozen: said without the short-run
            # hedge, which would contradict that. The pool's figures follow the hint, not inside it: matrices in and
            # out of the pool then share the hint word for word, and the table says it once
            # (render/stats.hints_said_once).
            findings.append(Finding(
                "warn", "untrained-tensor", item.name,
                f"still matches its initialization "
                f"{item.expected.describe() if item.expected is not None else ''} (found {item.init.describe()}) "
                f"while {share:.1%} of {of_what} matrix parameters have trained{also}",
                (_FROZEN_HINT if said is not None and said.frozen else _UNTRAINED_HINT)
                + (pooled_note if item.name in (pooled.names if pooled is not None else ()) else "")
                + (_POSITION_ROWS_NOTE if _POSITION_TABLE.search(item.name) else "")))
    elif pooled is not None and pooled.moved:
        # Five Adam steps at lr 1e-3 leave each tiny matrix within its init's noise (the checkpoint read
        # "initialization ... has not been trained"), but not all of them together.
        state, basis = "trained", "pooled"
        of_what = "the selected tensors" if selected else "the checkpoint"
        findings.append(Finding(
            "info", "briefly-trained", None,
            f"{of_what} {'have' if selected else 'has'} been trained, but only a little (a few steps, or a small "
            "learning rate): each matrix still looks like its initialization one by one, but taken together the "
            f"{counted(pooled.values, 'value')} of the {counted(pooled.tensors, 'matrix', 'matrices')} with a known "
            f"random init hold {pooled.variance_ratio:.1%} of the variance their initialization gives, "
            f"{abs(pooled.z):.1f} standard deviations {'above' if pooled.z > 0 else 'below'} it"
            f"{_left_out_said(pooled)}",
            "expected for a checkpoint saved early in training; if it should have trained longer, check the "
            "learning rate and the number of steps"))
        findings += _frozen_findings(matrices, evidence, folded, "in a checkpoint that has trained")
    elif constants_mostly:
        # T5 after 5 Adam steps (or 300 AdamW steps): its matrices each and pooled still fit their inits (a 0.18
        # init beside steps of 1e-3), but its 12 norm scales all left their ones. Where a layer was frozen, its own
        # bias or its block's norms stayed: the rest moved all the same.
        state, basis = "trained", "constants"
        of_what = "the selected tensors" if selected else "the checkpoint"
        pooled_said = "" if pooled is None else (
            f", one by one and taken together ({pooled.variance_ratio:.1%} of the variance their initialization "
            f"gives, {abs(pooled.z):.2f} standard deviations {'above' if pooled.z > 0 else 'below'} it"
            f"{'; the matrices that got no update left out' if pooled.left_out else ''})")
        findings.append(Finding(
            "info", "briefly-trained", None,
            f"{of_what} {'have' if selected else 'has'} been trained, but only a little: "
            f"{_constants_said(vectors)}. The matrices still look like their initialization{pooled_said}: a few "
            "steps, a small learning rate or weight decay leave a matrix's spread where its initialization put it",
            "expected for a checkpoint saved early in training; if it should have trained longer, check the "
            "learning rate and the number of steps"))
        findings += _frozen_findings(matrices, evidence, folded, "in a checkpoint that has trained")
    else:
        state, basis = "initialization", "tensors"
        # A few optimiser steps at a small learning rate can stay within the inits' noise, even pooled (T5's wide
        # inits): said, rather than "has not been trained" as a certainty.
        if selected:  # a frozen block picked by --filter is no untrained checkpoint
            message = (f"{1 - share:.0%} of the selected tensors' matrix parameters still match their "
                       "initialization: these tensors have not been trained (or too little to tell)")
        else:
            message = (f"{1 - share:.0%} of the matrix parameters still match their initialization: this "
                       "checkpoint has not been trained (or too little to tell)")
        findings.append(Finding("warn", "checkpoint-at-init", None, message,
                                "were the weights saved before training, or is this the wrong file?"))
    if state != "initialization":
        for item in constants.values():
            if item.name not in folded and item.expected is not None:
                findings.append(Finding(
                    "info", "norm-at-init", item.name,
                    f"exactly {item.expected.label} as at initialization, in an otherwise trained model",
                    "fine if this parameter gets no gradient; otherwise it was frozen or never trained"))
    return findings, share, state, basis, pooled


def _tensor_health(result: StatsResult, want: ExpectedInit | None, initializer_range: float | None) -> TensorHealth:
    """Classify one tensor's values against what it held at initialization."""
    info, stats = result.info, result.stats
    constant = want.params["value"] if want is not None and want.confident and want.label in (
        "zeros", "ones", "constant") else None
    from weightdoctor.checkpoint.gguf_format import is_quantized_dtype

    # A GGUF's Q4_0, Q4_K, ...: values dequantized from blocks of a few levels each (`gguf_quants`).
    init = classify_init(tuple(info.shape), stats, result.sample, initializer_range, constant,
                         dequantized_from=info.dtype if is_quantized_dtype(info.dtype) else None)
    init = reconcile(init, want, stats.finite_count, result.sample.values, _value_range(stats))
    if want is not None and "derived_from" in want.params and not (stats.nan or stats.inf):
        # PiSSA / OLoRA start both LoRA halves from the base model's weights: off the default inits from the first
        # step, so "trained" (or a normal init) read from the adapter alone would be a guess.
        init = InitResult("undetermined", {"mean": stats.mean, "std": stats.std},
                          reason=f"{want.describe()}: not judged from the adapter alone")
    # TinyLoRA's SVD factors and projection never train; its vector under init_weights=false starts at whatever
    # torch.empty left (NaN bit patterns too, which the nan-inf finding says): neither has an init to hold the values
    # against.
    unjudged = want is not None and ("uninitialized" in want.params or "frozen" in want.params and not (
        stats.nan or stats.inf))
    if want is not None and unjudged:
        why = ("a buffer peft never trains: nothing to judge" if "frozen" in want.params else
               "no initial values to compare with: whether it trained is not judged from the adapter alone")
        init = InitResult("undetermined", {"mean": stats.mean, "std": stats.std},
                          reason=f"{want.describe()} ({want.source}): {why}")
    structured: bool | None = None
    if want is not None and "structure" in want.params and not (stats.nan or stats.inf):
        # peft's "orthogonal" / NoRA halves fit no named init, untouched or not: their structure tells.
        from weightdoctor.expected_init import structural_init

        init, structured = structural_init(want, tuple(info.shape), info.dtype, result.sample.rows,
                                           result.sample.cols, result.sample.cols_complete)
    item = TensorHealth(info.name, list(info.shape), info.dtype, stats, init, want, None,
                        _histogram(result.sample.values, stats.min, stats.max))
    if (not stats.sampled and result.sample.values.numel() == stats.finite_count
            and not info.name.endswith(_RUNNING_STATISTICS)):
        item.spike = spike_of(result.sample.values)
    item.at_init = structured if want is not None and "structure" in want.params else _still_at_init(item)
    rows = result.sample.rows
    if (info.dtype == "float32" and item.at_init and want is not None and want.confident and want.label == "normal"
            and not want.params.get("mean") and rows is not None and result.sample.rows_complete
            and not (stats.nan or stats.inf)):
        item.marks = normal_marks(rows)
    return item


def analyze_weights(
    checkpoint: Checkpoint,
    names: list[str] | None = None,
    sample: int | None = None,
    advance: Callable[[int], None] | None = None,
) -> StatsReport:
    """Statistics, init table and findings for the floating tensors of a checkpoint, one tensor at a time.

    Example:
        >>> from weightdoctor.checkpoint import open_checkpoint
        >>> with open_checkpoint("fixtures/example") as ckpt:                       # doctest: +SKIP
        ...     report = analyze_weights(ckpt)
        >>> report.state, [f.code for f in report.findings]                        # doctest: +SKIP
        ('initialization', ['checkpoint-at-init'])

    Args:
        checkpoint: the opened checkpoint.
        names: the tensors to analyse (None: all).
        sample: read this many values per tensor instead of all.
        advance: called with 1 after each tensor (a progress bar).
    """
    from weightdoctor.expected_init import expected_inits
    from weightdoctor.findings import severity_rank
    from weightdoctor.stats import floating_tensors, iter_stats

    chosen = checkpoint.tensors if names is None else [checkpoint.tensor_info(n) for n in names]
    from weightdoctor.checkpoint.model import unique_tensors

    every_floating = floating_tensors(checkpoint, [t.name for t in chosen])
    floating = unique_tensors(every_floating)  # tied weights: one tensor, whatever its number of names
    analysed_as = {t.view_id: t.name for t in floating if t.view_id is not None}
    aliases = {t.name: analysed_as[t.view_id] for t in every_floating
               if t.view_id is not None and analysed_as[t.view_id] != t.name}
    floating_names = {t.name for t in every_floating}
    skipped = [t.name for t in chosen if t.name not in floating_names]
    expected = expected_inits(checkpoint.tensors, checkpoint.config)
    from weightdoctor.expected_init import DATA_DERIVED_LORA_INIT, peft_lora_init, peft_method_init
    from weightdoctor.structure import lora_init_setting, peft_adapter_config

    lora_init = lora_init_setting(checkpoint)
    for info in checkpoint.tensors if lora_init else ():
        if (want := peft_lora_init(lora_init, info)) is not None:
            expected.by_name[info.name] = want
    adapter = peft_adapter_config(checkpoint)
    for info in checkpoint.tensors if adapter is not None and adapter.get("peft_type") != "ADALORA" else ():
        # TinyLoRA's buffers and vector, a prompt learner's embeddings, Llama-Adapter's gate, trainable tokens.
        if (want := peft_method_init(adapter, info)) is not None:
            expected.by_name[info.name] = want
    initializer_range = _initializer_range(checkpoint.config)
    items: list[TensorHealth] = []
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(STATS_THREADS)
    try:
        results = iter_stats(checkpoint, floating, sample, advance)
        items = [_tensor_health(result, expected.by_name.get(result.info.name), initializer_range)
                 for result in results]
    finally:
        torch.set_num_threads(threads)
    from weightdoctor.quantized import quantizer_side_tensors

    # A quantizer's per-channel scales repeat and stay put by design: no health findings, not in the share.
    side = quantizer_side_tensors(checkpoint.tensors, checkpoint.config)
    for item in items:
        if item.name in side:
            item.at_init = None
    findings = [f for item in items if item.name not in side for f in _tensor_findings(item)]
    selected = names is not None and len({t.name for t in chosen}) < len(checkpoint.tensors)
    # The side tensors' at_init is None: out of the share and the pool alike.
    whole, share, state, basis, pooled = _checkpoint_findings(items, selected)
    findings += whole
    findings.sort(key=lambda f: -severity_rank(f.severity))
    warnings = [expected.warning] if expected.warning else []
    if (note := _dequantized_note(checkpoint, items)) is not None:
        warnings.append(note)
    from weightdoctor.checkpoint.gguf_format import DEQUANTIZED_TYPES

    if dequantized := sorted({item.dtype for item in items if item.dtype in DEQUANTIZED_TYPES}):
        warnings.append(f"the {', '.join(dequantized)} tensors' statistics are of their values dequantized to "
                        "float32, as ggml decodes them: the quantized model's values, whose zeros and repeats "
                        "include each block's few levels; their distribution is not tested against an init's "
                        "shape (a grid of levels fits no continuous family), their rows, columns and tails are")
    scheme = "pissa" if lora_init and lora_init.startswith("pissa_niter_") else lora_init
    if scheme in DATA_DERIVED_LORA_INIT and any(item.expected is not None and "derived_from" in item.expected.params
                                                for item in items):
        warnings.append(f'adapter_config.json says init_lora_weights="{lora_init}": peft sets these LoRA halves '
                        "from the base model (not at random, not at zero), so whether they trained is not judged "
                        "from the adapter alone; compare it with the adapter saved at initialization "
                        "(diff-keys --values) to tell")
    return StatsReport(items, findings, sample, expected.method, expected.model_class, share, state, skipped,
                       warnings, aliases, pooled, basis)


def _dequantized_note(checkpoint: Checkpoint, items: list[TensorHealth]) -> str | None:
    """Which figures are of torch.ao quantized tensors, read dequantized: their rows say int8 (the dtype stored)."""
    schemes = {item.name: scheme for item in items if (scheme := checkpoint.torch_ao_quantized(item.name))}
    if not schemes:
        return None
    shown = ", ".join(list(schemes)[:3]) + (f" and {len(schemes) - 3:,} more" if len(schemes) > 3 else "")
    return (f"the statistics of {counted(len(schemes), 'torch.ao quantized tensor')} ({shown}: "
            f"{', '.join(sorted(set(schemes.values())))}) are of their values dequantized with the scales and zero "
            "points stored in each tensor (torch's .dequantize(), float32), not of the integers stored")


LAYER_INDEX = re.compile(r"\.(\d+)\.")


def depth_profile(report: StatsReport) -> dict[str, list[tuple[int, float]]]:
    """Std of each kind of weight across layer depth: `layers.{i}.mlp.up_proj.weight` -> [(i, std), ...].

    Only matrices of kinds that occur in at least two layers, and stds float32 holds: a float64 layer's 1e298
    leaves its log axis no room (matplotlib's margins overflow past 1e308, and the axis is drawn empty).
    """
    kinds: dict[str, list[tuple[int, float]]] = {}
    for item in report.tensors:
        match = LAYER_INDEX.search(item.name)
        if match is None or len(item.shape) < 2 or not (math.isfinite(item.stats.std)
                                                        and item.stats.std <= FLOAT32_MAX):
            continue
        kind = item.name[: match.start()] + ".{i}." + item.name[match.end():]
        kinds.setdefault(kind, []).append((int(match.group(1)), item.stats.std))
    return {k: sorted(v) for k, v in kinds.items() if len(v) >= 2}
