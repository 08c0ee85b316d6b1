"""`check-dtype`'s analysis: what casting every floating tensor to fp16 / bf16 / fp8 / fp32 would do.

The casts are real: each tensor is streamed from the reader, cast with torch's own `.to(dtype)` in
bounded chunks, and the result compared with the stored values. Nothing here prints or exits.
"""

from __future__ import annotations

import functools
import math
import pickle
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightdoctor.checkpoint import Checkpoint, TensorInfo
from weightdoctor.checkpoint.model import unique_tensors
from weightdoctor.dtypes import FLOATING, bits_per_element, is_dtype_placeholder, quantization_hint
from weightdoctor.errors import UsageError
from weightdoctor.paths import expand_user, shell_word
from weightdoctor.wording import counted, plural

if TYPE_CHECKING:
    import torch

# Target names users type (and the keys of the JSON `targets` object) -> torch dtype attribute.
TARGETS: dict[str, str] = {
    "fp16": "float16",
    "bf16": "bfloat16",
    "fp32": "float32",
    "fp64": "float64",
    "fp8_e4m3": "float8_e4m3fn",
    "fp8_e5m2": "float8_e5m2",
    "fp8_e4m3fnuz": "float8_e4m3fnuz",
    "fp8_e5m2fnuz": "float8_e5m2fnuz",
}
TARGET_ALIASES: dict[str, str] = {
    "float16": "fp16", "half": "fp16", "f16": "fp16",
    "bfloat16": "bf16",
    "float32": "fp32", "float": "fp32", "f32": "fp32",
    "float64": "fp64", "double": "fp64",
    "fp8": "fp8_e4m3", "float8_e4m3fn": "fp8_e4m3", "e4m3": "fp8_e4m3",
    "float8_e5m2": "fp8_e5m2", "e5m2": "fp8_e5m2",
    "float8_e4m3fnuz": "fp8_e4m3fnuz", "float8_e5m2fnuz": "fp8_e5m2fnuz",
}
DEFAULT_TARGETS: tuple[str, ...] = ("fp16", "bf16")
# `--target all`: every target this torch has (the fnuz variants only on request).
ALL_TARGETS: tuple[str, ...] = ("fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp32")
# Stored dtypes that a dtype cast does not touch, with the reason said in the output.
NOT_CAST: dict[str, str] = {
    "float8_e8m0fnu": "an exponent-only scale format (MX block scales), not weights to cast",
    "float4_e2m1fn_x2": "packed fp4 pairs, which torch cannot cast element by element",
    "float6_e2m3fn": "a six-bit MX float no torch dtype holds: not read, not cast",
    "float6_e3m2fn": "a six-bit MX float no torch dtype holds: not read, not cast",
}
VERDICTS: tuple[str, ...] = ("safe", "lossy", "unsafe")
# Why fairseq's `_float_tensor` (dtypes.is_dtype_placeholder) is not checked.
DTYPE_PLACEHOLDER_SKIP = ("fairseq's dtype placeholder (SinusoidalPositionalEmbedding's torch.FloatTensor(1)): one "
                          "uninitialized value the model never reads, only its dtype; convert casts it unchecked")


# A tensor whose cast flushes at least this share of its non-zero values to zero is unsafe.
MASS_UNDERFLOW_SHARE = 0.01
CHUNK_ELEMENTS = 1 << 20
SAMPLE_SEED = 0
LIMITS = (
    "Weights alone cannot tell whether activations, attention scores or gradients overflow fp16 at "
    "inference or in training; only running the model on real inputs shows that."
)


# The severity each verdict weighs against `--fail-on info|warn|error`, the levels every command takes: rounding is a
# loss the cast makes (warn), an overflow, clamp, lost inf or mass underflow changes what the model computes (error).
# No verdict is info, so `--fail-on info` fails where `warn` does.
VERDICT_SEVERITY: dict[str, str | None] = {"safe": None, "lossy": "warn", "unsafe": "error"}
# Every `--fail-on` check-dtype takes: the shared severities, then its own verdict words (kept as they were).
FAIL_ON_CHOICES: tuple[str, ...] = ("info", "warn", "error", "unsafe", "lossy")


def verdict_rank(verdict: str) -> int:
    """Order of severity: safe 0, lossy 1, unsafe 2."""
    return VERDICTS.index(verdict)


def verdict_reaches(verdict: str, fail_on: str) -> bool:
    """Whether a target's `verdict` is at or above `fail_on`: a verdict word (lossy, unsafe) or a severity.

    Example:
        >>> verdict_reaches("lossy", "warn"), verdict_reaches("lossy", "error"), verdict_reaches("lossy", "lossy")
        (True, False, True)
    """
    from weightdoctor.findings import SEVERITIES, severity_reaches

    if fail_on in SEVERITIES:
        return severity_reaches(VERDICT_SEVERITY[verdict], fail_on)
    return verdict_rank(verdict) >= verdict_rank(fail_on)


def parse_targets(text: str | None, stored: Iterable[str] = ()) -> list[str]:
    """Turn `--target fp16,bf16` (or `all`, or None for the default) into target names.

    The default is fp16 and bf16, plus fp32 when some floating tensor is stored in other than 32 bits: below (the
    cast back up, exact), or above: a float64 checkpoint's first cast is to fp32, which halves it and may round.

    Example:
        >>> parse_targets("half,bf16")
        ['fp16', 'bf16']
        >>> parse_targets(None, ["float64"])
        ['fp16', 'bf16', 'fp32']

    Raises:
        UsageError: an unknown name, or a dtype this torch does not have.
    """
    import torch

    if text is None or not text.strip():
        names = list(DEFAULT_TARGETS)
        if any(d in FLOATING and d not in NOT_CAST and bits_per_element(d) != 32 for d in stored):
            names.append("fp32")
        return names
    names = []
    for raw in text.split(","):
        item = raw.strip().lower().removeprefix("torch.")
        if not item:
            continue
        if item == "all":
            chosen = [t for t in ALL_TARGETS if getattr(torch, TARGETS[t], None) is not None]
        else:
            short = TARGET_ALIASES.get(item, item)
            if short not in TARGETS:
                raise UsageError(f"unknown target dtype {raw.strip()!r} (choose from {', '.join(TARGETS)}, or all)"
                                 + quantization_hint(item, "check-dtype simulates casts only"))
            if getattr(torch, TARGETS[short], None) is None:
                raise UsageError(
                    f"this torch ({torch.__version__}) has no {TARGETS[short]}, so {short} cannot be checked"
                )
            chosen = [short]
        names += [t for t in chosen if t not in names]
    if not names:
        raise UsageError(f"--target {text!r} names no dtype")
    return names


@dataclass
class CastCounts:
    """What a cast did to a run of values; counts add up over chunks and tensors.

    Attributes:
        values: values compared (all of them, or the sample).
        zeros: values that were exactly zero before the cast.
        nan / inf: non-finite values before the cast.
        overflow: finite values the cast turned into inf or NaN.
        saturated: finite values beyond the target's largest finite value that came out finite
            (clamped to ±max: rounding just above max, or a saturating fp8 cast).
        saturated_max_rel_error: the largest relative error among the saturated values.
        inf_lost: ±inf values the cast does not keep as the same inf (float8_e4m3fn makes them ±448, the fnuz
            formats NaN): not rounding, a mask's -inf that stops masking. inf_to_nan: those of them that became NaN.
        underflow: non-zero finite values the cast turned into zero.
        subnormal: values that came out non-zero but below the target's smallest normal number.
        changed: values not equal after the cast (NaN stays NaN and counts as equal).
        max_rel_error / rel_error_sum: |cast − x| / |x| over finite non-zero x whose cast is finite.
    """

    values: int = 0
    zeros: int = 0
    nan: int = 0
    inf: int = 0
    overflow: int = 0
    saturated: int = 0
    saturated_max_rel_error: float = 0.0
    inf_lost: int = 0
    inf_to_nan: int = 0
    underflow: int = 0
    subnormal: int = 0
    changed: int = 0
    max_rel_error: float = 0.0
    rel_error_sum: float = 0.0
    # Values counted without being read (a tensor whose dtype casts exactly to every target): their zeros, NaN and
    # inf are not known, so the mean relative error, over what was measured, leaves them out.
    unread: int = 0

    @property
    def nonzero_finite(self) -> int:
        return self.values - self.zeros - self.nan - self.inf

    @property
    def rel_error_count(self) -> int:
        return self.nonzero_finite - self.overflow - self.unread

    @property
    def mean_rel_error(self) -> float:
        count = self.rel_error_count
        return self.rel_error_sum / count if count > 0 else 0.0

    def add(self, other: CastCounts) -> None:
        # Spelled out rather than a getattr / setattr loop: this runs once per tensor and target.
        self.values += other.values
        self.zeros += other.zeros
        self.nan += other.nan
        self.inf += other.inf
        self.overflow += other.overflow
        self.saturated += other.saturated
        self.inf_lost += other.inf_lost
        self.inf_to_nan += other.inf_to_nan
        self.underflow += other.underflow
        self.subnormal += other.subnormal
        self.changed += other.changed
        self.unread += other.unread
        self.rel_error_sum += other.rel_error_sum
        self.max_rel_error = max(self.max_rel_error, other.max_rel_error)
        self.saturated_max_rel_error = max(self.saturated_max_rel_error, other.saturated_max_rel_error)


def _wide_dtype(dtype: torch.dtype, targets: list[torch.dtype]) -> torch.dtype:
    """The dtype in which the stored values and their casts are compared exactly (fp32 unless fp64 is involved)."""
    import torch

    return torch.float64 if torch.float64 in (dtype, *targets) else torch.float32


def cast_counts(
    values: torch.Tensor, targets: list[torch.dtype], chunk_elements: int = CHUNK_ELEMENTS
) -> list[CastCounts]:
    """Cast `values` to each target with torch's own `.to(dtype)`, chunk by chunk, and count what changed.

    Memory stays at a few chunks whatever the tensor's size. Counts are exact (they are torch's
    results, compared element by element); only `rel_error_sum` is a floating-point sum.

    Example:
        >>> import torch
        >>> c, = cast_counts(torch.tensor([70000.0, 1e-8, 1.0]), [torch.float16])
        >>> c.overflow, c.underflow, c.changed
        (1, 1, 2)

    Args:
        values: a floating tensor in its stored dtype (any shape; CPU).
        targets: torch dtypes to cast to.
        chunk_elements: values cast at once.

    Returns:
        One `CastCounts` per target, in order.
    """
    import torch

    wide = _wide_dtype(values.dtype, targets)
    infos = [torch.finfo(t) for t in targets]
    results = [CastCounts() for _ in targets]
    for src in _pieces(values, chunk_elements):
        x = src if src.dtype == wide else src.to(wide)
        absx = x.abs()
        n = x.numel()
        zeros_x = int(torch.count_nonzero(absx == 0))
        amax = float(absx.max())
        finite_x: torch.Tensor | None = None
        nan_x = inf_x = 0
        if amax != amax or amax == float("inf"):  # NaN or inf somewhere in the chunk
            finite_x = torch.isfinite(x)
            nan_x = int(torch.count_nonzero(torch.isnan(x)))
            inf_x = int(torch.count_nonzero(torch.isinf(x)))
            amax = float(torch.where(finite_x, absx, 0).max())
        for target, info, total in zip(targets, infos, results, strict=True):
            counts = CastCounts(values=n, zeros=zeros_x, nan=nan_x, inf=inf_x)
            yb = src.to(target).to(wide)
            ay = yb.abs()
            zeros_y = int(torch.count_nonzero(ay == 0))
            # Zeros stay zeros and nothing non-finite becomes zero, so the new zeros are the underflow.
            counts.underflow = zeros_y - zeros_x
            counts.subnormal = int(torch.count_nonzero(ay < info.smallest_normal)) - zeros_y
            changed = int(torch.count_nonzero(yb != x))
            if nan_x:
                changed -= int(torch.count_nonzero(torch.isnan(x) & torch.isnan(yb)))
            counts.changed = changed
            err = (yb - x).abs_().div_(absx)
            if finite_x is not None or amax > info.max:
                fx = finite_x if finite_x is not None else torch.ones_like(x, dtype=torch.bool)
                finite_y = torch.isfinite(yb)
                counts.overflow = int(torch.count_nonzero(fx & ~finite_y))
                beyond = fx & finite_y & (absx > info.max)
                counts.saturated = int(torch.count_nonzero(beyond))
                if counts.saturated:
                    counts.saturated_max_rel_error = float(err[beyond].max())
                if inf_x:
                    inf_in = torch.isinf(x)
                    counts.inf_lost = int(torch.count_nonzero(inf_in & (yb != x)))
                    counts.inf_to_nan = int(torch.count_nonzero(inf_in & torch.isnan(yb)))
            # 0/0 (zeros), inf (overflow) and NaN (non-finite inputs) are outside the relative error.
            torch.nan_to_num_(err, nan=0.0, posinf=0.0, neginf=0.0)
            counts.max_rel_error = float(err.max()) if n else 0.0
            # torch sums floats by cascade (error ~log2(n)·eps); chunk totals add up in a Python float.
            counts.rel_error_sum = float(err.sum())
            total.add(counts)
    return results


def _pieces(values: torch.Tensor, chunk: int) -> Iterator[torch.Tensor]:
    """1-D pieces of at most `chunk` values of a tensor, in row-major order, cut where `values.reshape(-1)` would
    be: views of a contiguous (or 1-D) tensor, else copies of one piece each (`reshape(-1)` of a strided view, a
    transposed weight of a .bin, copied it whole: the peak of check-dtype on a 300 MB one rose 262 MiB more than
    on its contiguous twin, measured). The cuts matter: a chunk's relative errors are summed in float32, so pieces
    of whole rows gave a transposed tensor another `mean_rel_error` than its contiguous copy's."""
    total = values.numel()
    if values.dim() <= 1 or values.is_contiguous():
        flat = values.reshape(-1)
        for start in range(0, total, chunk):
            yield flat[start:start + chunk]
        return
    for start in range(0, total, chunk):
        yield _flat_range(values, start, min(start + chunk, total))


def _flat_range(values: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """`values.reshape(-1)[start:stop]` (stop > start), copying no more of a strided tensor than the rows (along
    its first dimension) that hold that range, where a row is shorter than the range, else the range itself."""
    import torch

    if values.dim() <= 1 or values.is_contiguous():
        return values.reshape(-1)[start:stop]
    row = math.prod(values.shape[1:])
    first, last = start // row, (stop - 1) // row
    if row <= stop - start:  # the rows holding the range: at most two rows more than it
        return values[first:last + 1].reshape(-1)[start - first * row:stop - first * row]
    # A row longer than the range: the range lies within one row or across two.
    parts = [_flat_range(values[index], max(start - index * row, 0), min(stop - index * row, row))
             for index in range(first, last + 1)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


# Tensors up to this many values are cast together (`cast_counts_batch`): for a checkpoint of 100,000 tiny
# tensors the ~20 torch calls per tensor and target, not the values, were the time.
BATCH_TENSOR_ELEMENTS = 1 << 14
# Values of a batch: the float copies of all of them (the widened values, each target's cast back, its error,
# masks) are alive together. At 1M values check-dtype of 2,000 float32 tensors of 1,024 values (8 MiB in all)
# raised its peak resident set by 93 to 134 MiB; at 32K values, 27 MiB, and it took 1.25 s, not 2.0 to 2.6 s
# (measured on two busy cores: 32K values is torch's grain size, so each call runs on one thread, with no wait on
# its thread pool; at 64K values diff-keys' batches took 9 s where 1M took 1.2 s).
BATCH_ELEMENTS = 1 << 15


def cast_counts_batch(flats: list[torch.Tensor], targets: list[torch.dtype]) -> list[list[CastCounts]]:
    """`cast_counts` of each of `flats` (1-D, one stored dtype, each 1..`BATCH_TENSOR_ELEMENTS` values), cast at once.

    Gives the same numbers as `cast_counts(flat, targets)` for each: the counts are sums of the same element-wise
    comparisons taken per tensor (prefix sums of int64), the maxima are maxima, and each tensor's `rel_error_sum`
    is torch's own sum over that tensor's slice, as `cast_counts` sums a tensor that fits in one chunk.

    Returns:
        For each tensor of `flats`, in order, one `CastCounts` per target.
    """
    import torch

    lengths = [flat.numel() for flat in flats]
    src = torch.cat(flats)
    wide = _wide_dtype(src.dtype, targets)
    x = src if src.dtype == wide else src.to(wide)
    absx = x.abs()
    bounds = [0]
    for length in lengths:
        bounds.append(bounds[-1] + length)
    ends = torch.tensor(bounds[1:])
    starts = torch.tensor(bounds[:-1])
    segment = torch.repeat_interleave(torch.arange(len(flats)), torch.tensor(lengths))

    def per_tensor(mask: torch.Tensor) -> list[int]:
        prefix = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(mask, 0, dtype=torch.int64)])
        return (prefix[ends] - prefix[starts]).tolist()

    def per_tensor_max(values: torch.Tensor) -> list[float]:
        # Every value is >= 0 here, so 0 is a neutral start.
        top = torch.zeros(len(flats), dtype=values.dtype)
        return top.scatter_reduce_(0, segment, values, "amax", include_self=True).tolist()

    zeros_x = per_tensor(absx == 0)
    nan_mask = torch.isnan(x)
    nan_x = per_tensor(nan_mask)
    inf_mask = torch.isinf(x)
    inf_x = per_tensor(inf_mask)
    finite_x = torch.isfinite(x)
    results: list[list[CastCounts]] = [[] for _ in flats]
    for target in targets:
        info = torch.finfo(target)
        yb = src.to(target).to(wide)
        ay = yb.abs()
        zeros_y = per_tensor(ay == 0)
        below_normal = per_tensor(ay < info.smallest_normal)
        changed = per_tensor(yb != x)
        nan_kept = per_tensor(nan_mask & torch.isnan(yb))
        err = (yb - x).abs_().div_(absx)
        # `cast_counts` counts these only where a value is non-finite or beyond the target's range; elsewhere
        # they are 0 all the same (a finite value within ±max casts to a finite one), so they are counted always.
        finite_y = torch.isfinite(yb)
        overflow = per_tensor(finite_x & ~finite_y)
        beyond = finite_x & finite_y & (absx > info.max)
        saturated = per_tensor(beyond)
        inf_lost = per_tensor(inf_mask & (yb != x)) if any(inf_x) else [0] * len(flats)
        inf_to_nan = per_tensor(inf_mask & torch.isnan(yb)) if any(inf_x) else [0] * len(flats)
        saturated_max = per_tensor_max(torch.where(beyond, err, 0)) if any(saturated) else [0.0] * len(flats)
        torch.nan_to_num_(err, nan=0.0, posinf=0.0, neginf=0.0)
        max_err = per_tensor_max(err)
        sums = torch.stack([piece.sum() for piece in torch.split(err, lengths)]).tolist()
        for i, row in enumerate(results):
            row.append(CastCounts(
                values=lengths[i], zeros=zeros_x[i], nan=nan_x[i], inf=inf_x[i], overflow=overflow[i],
                saturated=saturated[i], saturated_max_rel_error=saturated_max[i] if saturated[i] else 0.0,
                inf_lost=inf_lost[i], inf_to_nan=inf_to_nan[i],
                underflow=zeros_y[i] - zeros_x[i], subnormal=below_normal[i] - zeros_y[i],
                changed=changed[i] - nan_kept[i], max_rel_error=max_err[i], rel_error_sum=sums[i],
            ))
    return results


def _mantissa_bits(dtype: torch.dtype) -> int:
    """Explicit mantissa bits of `dtype`, measured with torch's own cast: the largest k for which 1 + 2^-k is held.

    Measured rather than read from `torch.finfo(dtype).eps`, which torch 2.13 gets wrong for float8_e5m2fnuz
    (0.125, where its 2 mantissa bits make 0.25): a target's mantissa taken too wide would pass a lossy cast.
    """
    import torch

    probes = torch.tensor([1.0 + 2.0 ** -k for k in range(1, 53)], dtype=torch.float64)
    held = probes.to(dtype).to(torch.float64) == probes
    return int(held.long().cumprod(0).sum())  # the run of exact probes from k = 1


def _non_finite_kept(stored: torch.dtype, target: torch.dtype) -> bool:
    """Whether the cast turns each of `stored`'s inf / NaN into the same inf / NaN: nothing `changed` or overflowed.

    Measured on the values `stored` makes of ±inf and NaN (float8_e4m3fn has no inf: NaN all three).
    """
    import torch

    specials = torch.tensor([float("inf"), float("-inf"), float("nan")], dtype=torch.float64).to(stored)
    before = specials.to(torch.float64)
    after = specials.to(target).to(torch.float64)
    return bool(torch.all((before == after) | (torch.isnan(before) & torch.isnan(after))))


@functools.cache
def casts_exactly(stored: str, target: str) -> bool:
    """Whether every value `stored` can hold casts to `target` exactly, as a normal number or zero.

    Then the counts of such a cast are known without reading the tensor: nothing overflows, clamps,
    underflows, turns subnormal or changes. Derived from the two formats, never from a list of pairs:
    `stored`'s mantissa fits in `target`'s, its largest value is within `target`'s largest, its smallest
    non-zero value (the smallest subnormal, smallest normal · 2^-mantissa) is at least `target`'s smallest
    normal, and inf / NaN stay inf / NaN. A same-dtype "cast" never qualifies (its subnormals stay subnormal),
    nor does float8_e5m2 → float16 (e5m2's subnormals are fp16 subnormals); a dtype torch cannot describe
    (packed fp4) is read.

    Example:
        >>> casts_exactly("float8_e4m3fn", "float16"), casts_exactly("bfloat16", "float32")
        (True, False)

    Args:
        stored / target: torch dtype names ("float8_e4m3fn", "bfloat16").
    """
    import torch

    source, dest = getattr(torch, stored, None), getattr(torch, target, None)
    if source is None or dest is None:
        return False
    try:
        source_info, dest_info = torch.finfo(source), torch.finfo(dest)
        source_mantissa, dest_mantissa = _mantissa_bits(source), _mantissa_bits(dest)
        kept = _non_finite_kept(source, dest)
    except (TypeError, RuntimeError):  # a dtype without finfo or casts (float4_e2m1fn_x2): read it
        return False
    smallest_nonzero = float(source_info.smallest_normal) * 2.0 ** -source_mantissa
    return (source_mantissa <= dest_mantissa and float(source_info.max) <= float(dest_info.max)
            and smallest_nonzero >= float(dest_info.smallest_normal) and kept)


def sample_indices(numel: int, count: int, name: str, seed: int = SAMPLE_SEED) -> torch.Tensor:
    """`count` positions in a flattened tensor, drawn uniformly with replacement.

    The generator is seeded from `seed` and the tensor's name, so a tensor gets the same sample in
    every run, whichever other tensors are checked.
    """
    import torch

    generator = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
    return torch.randint(numel, (count,), generator=generator)


def cast_behaviour(target: str) -> str:
    """What torch's `.to(target)` does here with values beyond its range, inf and NaN (measured, not assumed).

    Where the cast overflows, the values between the largest finite value and the smallest one that overflows
    round to ±max (fp16: above 65504 and below 65520): both bounds are measured with torch's own cast.

    Example:
        >>> cast_behaviour("fp16")
        'beyond ±65504 → ±65504 below ±65520, ±inf from ±65520 (overflows); inf → inf; NaN → NaN'
    """
    import torch

    dtype = getattr(torch, TARGETS[target])
    top = torch.finfo(dtype).max
    wide = torch.tensor([top * 4, -top * 4, float("inf"), float("nan")], dtype=torch.float64)
    probe_dtype = torch.float32 if top * 4 < torch.finfo(torch.float32).max else torch.float64
    probe = wide.to(probe_dtype) if probe_dtype == torch.float32 else wide
    out = probe.to(dtype).to(torch.float64).tolist()

    def word(value: float) -> str:
        return "NaN" if value != value else _number(value)

    beyond = "NaN" if out[0] != out[0] else f"±{_number(abs(out[0]))}"
    how = "saturates" if abs(out[0]) == top else ("overflows" if out[0] != out[0] or abs(out[0]) == float("inf")
                                                   else "rounds")
    tail = f"inf → {word(out[2])}; NaN → {word(out[3])}"
    threshold = _overflow_threshold(dtype, top, probe_dtype) if how == "overflows" else None
    if threshold is None:
        return f"beyond ±{_number(top)} → {beyond} ({how}); {tail}"
    low, high = _distinct_numbers(top, threshold)
    return f"beyond ±{low} → ±{low} below ±{high}, {beyond} from ±{high} (overflows); {tail}"


def _overflow_threshold(dtype: torch.dtype, top: float, probe_dtype: torch.dtype) -> float | None:
    """The smallest magnitude above `top` (in `probe_dtype`) that torch's cast to `dtype` makes non-finite, where
    every magnitude between comes out as `top`; None where no such bound exists below 4 × top (nothing finite is
    beyond a float64's max) or a value between comes out otherwise."""
    import torch

    def cast(value: float) -> float:
        return float(torch.tensor([value], dtype=probe_dtype).to(dtype).to(torch.float64)[0])

    def probed(value: float) -> float:
        return float(torch.tensor([value], dtype=probe_dtype)[0])

    low, high = top, probed(top * 4)
    if not math.isfinite(high) or math.isfinite(cast(high)):
        return None
    while True:  # bisection over the probe dtype's values: at most its bit width steps
        middle = probed(low + (high - low) / 2)
        if middle in (low, high):
            break
        if math.isfinite(cast(middle)):
            low = middle
        else:
            high = middle
    return high if low == top or cast(low) == top else None


def _distinct_numbers(first: float, second: float) -> tuple[str, str]:
    """`first` and `second` written with the fewest significant digits (6 at least) that tell them apart."""
    for digits in range(6, 18):
        a, b = f"{first:.{digits}g}", f"{second:.{digits}g}"
        if a != b:
            return a, b
    return repr(first), repr(second)


def _cast_of_inf(target: str) -> str:
    """What torch's cast to `target` makes of +inf, in words ("448", "NaN", "inf")."""
    import torch

    value = float(torch.tensor([float("inf")]).to(getattr(torch, TARGETS[target])).to(torch.float64)[0])
    return "NaN" if value != value else f"±{_number(value)}"


def _number(value: float) -> str:
    return f"{value:.6g}"


@dataclass
class TensorCast:
    """What a cast to one target does to one tensor."""

    name: str
    dtype: str
    verdict: str
    values: int
    overflow: int
    saturated: int
    underflow: int
    subnormal: int
    changed: int
    max_rel_error: float
    mean_rel_error: float
    nan: int | None  # None: not measured (the tensor was not read)
    inf: int | None
    reason: str
    # False where the stored dtype casts exactly to every target (`casts_exactly`): its counts follow from the
    # dtypes, so the tensor was never loaded.
    read: bool = True
    # ±inf values the cast did not keep as inf (float8_e4m3fn: ±448; the fnuz formats: NaN).
    inf_lost: int = 0


def tensor_verdict(counts: CastCounts, eps: float) -> tuple[str, str]:
    """(verdict, reason) for one tensor: unsafe on overflow, clamping, an inf not kept or mass underflow; lossy on
    rounding."""
    reasons = []
    if counts.overflow:
        reasons.append(f"{counted(counts.overflow, 'finite value')} {plural(counts.overflow, 'becomes', 'become')} "
                       "inf/NaN")
    if counts.saturated and counts.saturated_max_rel_error > eps:
        reasons.append(f"{counted(counts.saturated, 'value')} beyond the range clamped to ±max")
    if counts.inf_to_nan:
        reasons.append(f"{counted(counts.inf_to_nan, 'inf value')} {plural(counts.inf_to_nan, 'becomes', 'become')} "
                       "NaN")
    if counts.inf_lost - counts.inf_to_nan:
        finite = counts.inf_lost - counts.inf_to_nan
        reasons.append(f"{counted(finite, 'inf value')} {plural(finite, 'becomes', 'become')} finite (±max)")
    nonzero = counts.nonzero_finite
    if counts.underflow and nonzero and counts.underflow / nonzero >= MASS_UNDERFLOW_SHARE:
        reasons.append(f"{counts.underflow / nonzero:.1%} of non-zero values flushed to zero")
    if reasons:
        return "unsafe", "; ".join(reasons)
    if counts.changed:
        parts = [f"{counted(counts.changed, 'value')} rounded"]
        if counts.underflow:
            parts.append(f"{counts.underflow:,} flushed to zero")
        if counts.subnormal:
            parts.append(f"{counts.subnormal:,} subnormal")
        return "lossy", ", ".join(parts)
    return "safe", "every value exactly representable"


@dataclass
class TargetReport:
    """A cast of the whole checkpoint to one target dtype."""

    dtype: str
    verdict: str
    tensors_checked: int
    tensors_unsafe: int
    tensors_lossy: int
    values: int
    overflow: int
    saturated: int
    underflow: int
    subnormal: int
    changed: int
    changed_share: float
    max_rel_error: float
    mean_rel_error: float
    max_finite: float
    smallest_normal: float
    torch_behaviour: str
    memory_bytes: int
    keep_fp32: str | None
    keep_fp32_memory_bytes: int | None
    tensors: list[TensorCast]
    # Unsafe tensors that fp32 cannot hold either (float64 values beyond its range): --keep-fp32 cannot
    # save them, so they are left out of `keep_fp32` and no convert command is suggested.
    unsafe_in_fp32: list[str] = field(default_factory=list)
    # The tensors from_pretrained(dtype=<this target>) loads in float32 all the same (its class's
    # `_keep_in_fp32_modules`, `_keep_in_fp32_modules_strict`), at any verdict; None where not asked: no config.json
    # transformers can build, or a target other than fp16/bf16.
    kept_fp32_at_load: list[str] | None = None
    # The weights' bytes at that from_pretrained load: the kept tensors at 4 bytes, the rest at the target's; None
    # where it keeps none.
    kept_fp32_at_load_memory_bytes: int | None = None


@dataclass
class DtypeCount:
    num_tensors: int
    num_params: int
    bytes: int


@dataclass
class ConfigAgreement:
    """Whether the stored dtypes agree with `config.json`'s dtype, and what a mismatch costs."""

    status: str  # "agrees", "differs", "mixed", "no-config", "not-set", "quantized"
    message: str


@dataclass
class SkippedTensor:
    name: str
    dtype: str
    reason: str


@dataclass
class GpuInfo:
    index: int
    name: str
    capability: str
    total_memory_bytes: int
    bf16: bool
    fp8: bool


@dataclass
class AutoDtype:
    """The dtype `from_pretrained(dtype="auto")` would load the weights in, and why."""

    dtype: str | None
    reason: str


@dataclass
class LocalReport:
    """`--local`: this machine's GPUs and what transformers' `dtype="auto"` resolves to."""

    cuda_available: bool
    devices: list[GpuInfo]
    cpu_capability: str | None
    auto_dtype: AutoDtype
    notes: list[str]


@dataclass
class Recommendation:
    """What to do: one line per target, a best choice, and `convert` commands with their memory."""

    text: str
    best: str | None
    lines: list[str]
    commands: dict[str, str]
    memory_bytes: dict[str, int]


@dataclass
class SampleInfo:
    values_per_tensor: int
    seed: int
    note: str


@dataclass
class CheckDtypeReport:
    """Everything `weightdoctor check-dtype` shows."""

    source: str
    resolved_path: str
    format: str
    stored_dtypes: dict[str, DtypeCount]
    mixed_storage: bool
    config_torch_dtype: str | None
    config_agreement: ConfigAgreement
    tensor_dtypes: dict[str, str]
    targets: dict[str, TargetReport]
    recommendation: Recommendation
    limits: str
    sample: SampleInfo | None
    filter: str | None
    tensors_checked: int
    # A GGUF's quantized tensors (Q4_K, Q8_0, ...): floats once loaded, their values not read, so no target's verdict
    # covers them (0 for any other file).
    quantized_not_read: int
    skipped: list[SkippedTensor]
    memory_bytes: dict[str, int]
    local: LocalReport | None
    warnings: list[str] = field(default_factory=list)
    # A GGUF's quantized tensors whose values were read dequantized to float32, as ggml decodes them (Q8_0, Q4_K, ...):
    # their verdicts are of casting those values (0 for any other file).
    quantized_dequantized: int = 0


def config_dtype(config: dict[str, Any] | None) -> str | None:
    """The dtype `config.json` declares, read as transformers reads it (`dtype` first, then `torch_dtype`); cut in its
    middle past 200 characters (no dtype's name is near that long): a torch_dtype of a megabyte was echoed whole in
    check-dtype --json's `config_torch_dtype` and again in each message quoting it."""
    from weightdoctor.errors import clip_middle

    if not config:
        return None
    for key in ("dtype", "torch_dtype"):
        value = config.get(key)
        if value is not None:
            return clip_middle(value.removeprefix("torch.") if isinstance(value, str) else str(value), 200)
    return None


def _is_castable(info: TensorInfo) -> bool:
    return info.dtype in FLOATING and info.dtype not in NOT_CAST


def memory_at(tensors: list[TensorInfo], bytes_per_value: float, keep_fp32: set[str] | None = None) -> int:
    """Bytes of the weights as `convert --dtype` writes them: every tensor it casts at `bytes_per_value`
    (those in `keep_fp32` at 4), the others (integers, fp8, fp4 and MX scales, which it leaves) as stored.

    A GGUF's quantized tensors (Q4_K, ...) count at `bytes_per_value` too: from_pretrained(gguf_file=, dtype=)
    dequantizes them to that dtype (transformers' load_gguf_checkpoint), as inspect's memory table counts them.
    Its Q8_1 / Q8_K tensors, which no loader dequantizes (`gguf_format.UNREAD_TYPES_WORDS`), count as stored."""
    from weightdoctor.checkpoint.gguf_format import is_dequantized_dtype
    from weightdoctor.rewrite import CASTABLE

    total = 0.0
    for info in unique_tensors(tensors):
        if info.dtype not in CASTABLE and not is_dequantized_dtype(info.dtype):
            total += info.nbytes
        elif keep_fp32 and info.name in keep_fp32:
            total += info.num_params * 4
        else:
            total += info.num_params * bytes_per_value
    return int(total)


def stored_dtype_counts(tensors: list[TensorInfo]) -> dict[str, DtypeCount]:
    counts: dict[str, DtypeCount] = {}
    for info in unique_tensors(tensors):  # tied weights once
        entry = counts.setdefault(info.dtype, DtypeCount(0, 0, 0))
        entry.num_tensors += 1
        entry.num_params += info.num_params
        entry.bytes += info.nbytes
    return dict(sorted(counts.items(), key=lambda kv: -kv[1].num_params))


def config_agreement(
    declared: str | None, tensors: list[TensorInfo], config: dict[str, Any] | None
) -> ConfigAgreement:
    """Compare the stored floating dtypes with the config's dtype and say what a mismatch costs."""
    from weightdoctor.units import format_bytes

    floating = stored_dtype_counts([t for t in tensors if _is_castable(t)])
    stored = list(floating)
    if config is None:
        return ConfigAgreement("no-config", "no config.json beside the weights: nothing to compare")
    if declared is None and isinstance(config.get("_class_name"), str):
        # diffusers' configs carry no dtype, and its from_pretrained loads in float32 unless given torch_dtype
        # (load_model_dict_into_meta: `dtype = dtype or torch.float32`): fp16 weights are up-cast at load.
        low = [d for d in stored if d != "float32"]
        cost = (f": the {', '.join(low)} weights are up-cast at load (more memory); pass torch_dtype="
                f"torch.{low[0]} to keep them" if low else "")
        return ConfigAgreement(
            "not-set", f"a diffusers {config['_class_name']} config (no dtype field): diffusers' from_pretrained "
            f"loads in float32 unless given torch_dtype{cost}")
    if declared is None and isinstance(config.get("architecture"), str) and not config.get("model_type"):
        return ConfigAgreement("not-set", f"a timm {config['architecture']} config (no dtype field): timm builds "
                               "the model in float32 and load_state_dict copies the weights into it")
    if declared is None and not config.get("model_type") and {"in_features", "out_features",
                                                                "activation_function"} <= config.keys():
        # sentence-transformers' Dense module (2_Dense/config.json): Dense.load builds the layer from these keys in
        # torch's default float32 and load_state_dict copies the weights in.
        low = [d for d in stored if d != "float32"]
        cost = f": the {', '.join(low)} weights are up-cast at load" if low else ""
        return ConfigAgreement("not-set", "a sentence-transformers Dense config (no dtype field): "
                               "sentence-transformers builds the layer in float32 and load_state_dict copies the "
                               f"weights into it{cost}")
    if declared is None and not config.get("model_type") and "frozen" in config and set(config) <= {"frozen", "path"} \
            and [t.name for t in tensors] == ["weight"]:
        # sentence-transformers' SparseStaticEmbedding (a Router's query_0_SparseStaticEmbedding/: config.json
        # {"frozen": ...}, one `weight` per vocabulary token): its load builds the weight as torch.ones (float32)
        # and load_torch_weights copies the file's into it; "dtype='auto' goes by the weights" is from_pretrained's.
        low = [d for d in stored if d != "float32"]
        cost = f": the {', '.join(low)} weights are up-cast at load" if low else ""
        return ConfigAgreement("not-set", "a sentence-transformers SparseStaticEmbedding config (no dtype field): "
                               "SparseStaticEmbedding.load builds its weight in float32 and load_state_dict copies "
                               f"the weights into it{cost}")
    from weightdoctor.meta_model import is_kokoro_config, is_mamba_ssm_config

    if declared is None and is_kokoro_config(config):
        # KModel builds the model in torch's default float32 and load_state_dict copies each module's weights in: no
        # from_pretrained, no dtype='auto' ("dtype='auto' goes by the weights" was said of it).
        low = [d for d in stored if d != "float32"]
        cost = f": the {', '.join(low)} weights are up-cast at load" if low else ""
        return ConfigAgreement("not-set", "Kokoro's own config (no dtype field): KModel builds the model in float32 "
                               f"and load_state_dict copies the weights into it{cost}")

    if declared is None and is_mamba_ssm_config(config):
        # mamba_ssm's MambaLMHeadModel(config, dtype=None) is built in torch's default dtype, and load_state_dict
        # copies the weights into it.
        return ConfigAgreement("not-set", "mamba_ssm's own config (no dtype field): MambaLMHeadModel.from_pretrained "
                               "builds the model in float32 unless given dtype=, and copies the weights into it")
    if declared is None:
        return ConfigAgreement("not-set", "config.json sets no torch_dtype/dtype: dtype='auto' goes by the weights")
    from weightdoctor.quantized import config_quantization_settings, mlx_quantization, skipped_quantizer

    mlx = mlx_quantization(tensors, config)
    if mlx is not None:
        return ConfigAgreement(
            "quantized", f"an {mlx} checkpoint: stored {', '.join(stored) or 'no floating'} beside config {declared} "
            "is by design (transformers has no quantizer for it: mlx_lm.load reads it)")
    quant = config_quantization_settings(config)
    # Plain float weights beside a quant_method transformers has no quantizer for ("evil", 5): from_pretrained skips
    # the quantization_config and loads them as any float checkpoint, so the dtypes are compared as for one.
    if quant is not None and skipped_quantizer(config, tensors) is None:
        method = quant.get("quant_method", "unknown")
        return ConfigAgreement(
            "quantized",
            f"quantized checkpoint (quant_method={method}): stored {', '.join(stored) or 'no floating'} "
            f"beside config {declared} is by design",
        )
    if not stored:
        return ConfigAgreement("agrees", f"config says {declared}; no floating tensors")
    if stored == [declared]:
        return ConfigAgreement("agrees", f"stored {declared}, as config.json says")
    declared_bits = bits_per_element(declared) if declared in FLOATING else None
    if declared in stored:
        # "1 tensor is stored as float16": a "(3 tensor(s))" nested a parenthesis in a parenthesis.
        counts = {d: floating[d].num_tensors for d in stored if d != declared}
        others = " and ".join(f"{counted(n, 'tensor')} {plural(n, 'is', 'are')} stored as {d}"
                              for d, n in counts.items())
        return ConfigAgreement(
            "mixed", f"mixed storage: config says {declared}, but {others}; from_pretrained(dtype='auto') casts "
            f"{plural(sum(counts.values()), 'it', 'them')} to {declared} at load",
        )
    main = stored[0]
    if declared_bits is None:
        return ConfigAgreement("differs", f"config says {declared!r}, which is not a floating dtype torch loads")
    stored_bytes = sum(c.bytes for c in floating.values())
    needed = sum(c.num_params for c in floating.values()) * declared_bits // 8
    if needed < stored_bytes:
        return ConfigAgreement(
            "differs",
            f"stored {', '.join(stored)} but config says {declared}: {format_bytes(stored_bytes)} on disk and "
            f"download where {format_bytes(needed)} would do ({stored_bytes / needed:.1f}×); "
            f"from_pretrained(dtype='auto') casts to {declared} at load",
        )
    if needed > stored_bytes:
        return ConfigAgreement(
            "differs",
            f"stored {main} but config says {declared}: from_pretrained(dtype='auto') up-casts at load, "
            f"{format_bytes(needed)} in memory for {format_bytes(stored_bytes)} on disk",
        )
    return ConfigAgreement(
        "differs",
        f"stored {main} but config says {declared}: a silent re-cast at load by from_pretrained(dtype='auto'); "
        f"target {_short(declared)} below shows what that does to the values",
    )


def share_text(share: float) -> str:
    """A share for people: "98.7%", "0.005%" (never a misleading "0.0%" for a non-zero share)."""
    if share == 0 or share >= 0.001:
        return f"{share:.1%}"
    return f"{share * 100:.2g}%"


def _short(dtype: str) -> str:
    return next((short for short, name in TARGETS.items() if name == dtype), dtype)


# The longest `--keep-fp32` expression check-dtype suggests: Linux passes no argument longer than 131,072 bytes
# (MAX_ARG_STRLEN), so a longer one is no command to paste. Twenty unsafe tensors named by a megabyte each (a 21 MB
# file) made a 20 MB expression, compiled to test every name: check-dtype took 34 s and 1.9 GB and printed 20 MB.
MAX_KEEP_FP32_REGEX_CHARS = 100_000


def keep_fp32_regex(offenders: Iterable[str], all_names: Iterable[str]) -> str | None:
    """A regular expression matching exactly the `offenders` among `all_names` (for `--keep-fp32`); None where there
    are none, or where it would be longer than `MAX_KEEP_FP32_REGEX_CHARS`.

    Layer indices are collapsed to `\\d+` where every tensor the collapsed pattern matches is an
    offender, so the expression stays short for deep models without catching anything else.

    Example:
        >>> keep_fp32_regex(["h.0.ln.weight", "h.1.ln.weight"], ["h.0.ln.weight", "h.1.ln.weight", "h.0.w"])
        '^(?:h\\\\.\\\\d+\\\\.ln\\\\.weight)$'
    """
    offender_list = list(dict.fromkeys(offenders))
    if not offender_list:
        return None
    groups: dict[tuple[str, ...], list[str]] = {}
    for name in offender_list:
        pieces = tuple(re.split(r"(?<=\.)\d+(?=\.|$)", name))
        groups.setdefault(pieces, []).append(name)
    # Each group's text but its layer indices is in the expression however it collapses: past the bound, nothing is
    # compiled. (The offenders' whole names were summed: 3,000 experts' down_proj, 144,000 characters, were refused
    # an expression of 60.)
    if sum(len(piece) for pieces in groups for piece in pieces) > MAX_KEEP_FP32_REGEX_CHARS:
        return None
    offender_set = set(offender_list)
    names = list(all_names)
    parts: list[str] = []
    for pieces, members in groups.items():
        if len(members) > 1 and len(pieces) > 1:
            pattern = r"\d+".join(re.escape(p) for p in pieces)
            compiled = re.compile(pattern)
            if all(n in offender_set for n in names if compiled.fullmatch(n)):
                parts.append(pattern)
                continue
        parts += [re.escape(m) for m in members]
    regex = "^(?:" + "|".join(sorted(parts)) + ")$"
    return regex if len(regex) <= MAX_KEEP_FP32_REGEX_CHARS else None


def _names(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _output_name(source: str, target: str) -> str:
    """Where the suggested `convert` writes: beside the source, named after it and the target; for a Hub repo id
    (`org/name`, `org/pipe/unet`), a folder named after the model in the working directory (`org/name-fp16`
    would create a folder `org/` there)."""
    path = Path(source)
    if not expand_user(path).exists() and not source.startswith((".", "/", "~")):
        return f"{source.rstrip('/').rsplit('/', 1)[-1]}-{target}"
    if path.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt"):
        return str(path.with_name(f"{path.stem}-{target}.safetensors"))
    if re.search(r"\.index(\.[^./]+)?\.json$", path.name):
        # An index stands for its model folder, which convert writes whole: a folder beside it, not inside it.
        folder = path.parent
        if str(folder) in ("", "."):
            return str(Path("..") / f"{Path.cwd().name}-{target}")
        return f"{folder}-{target}"
    if path.name in ("", ".", ".."):
        # `check-dtype .` in the model's folder: '.-fp16' was a hidden folder inside the very folder converted.
        import os

        return os.path.normpath(os.path.join(source, "..", f"{expand_user(path).resolve().name}-{target}"))
    return f"{source.rstrip('/')}-{target}"


def recommend(
    source: str,
    targets: dict[str, TargetReport],
    memory: dict[str, int],
    declared: str | None,
    name_filter: str | None = None,
    sample: int | None = None,
    quantized: bool = False,
    has_config: bool = False,
    revision: str | None = None,
    key: str | None = None,
    quantized_not_read: int = 0,
    quantized_dequantized: int = 0,
) -> Recommendation:
    """Turn the per-target results into sentences and `convert` commands a person can run.

    `has_config`: a config.json beside the weights (a transformers model), whose `from_pretrained` loads every
    tensor at one dtype: the fp32 ones a `--keep-fp32` kept included. `revision` and `key`: the Hub revision and
    the state dict inside a training checkpoint that were read; the commands read the same. `quantized_not_read`:
    a GGUF's quantized tensors (Q8_1, ...), whose values were not read though they load as floats: each verdict
    says it covers the tensors read alone. `quantized_dequantized`: a GGUF's quantized tensors (Q4_K, ...) read as
    the float32 values ggml decodes: said once, since their verdicts are of those values.
    """
    from weightdoctor.units import format_bytes

    lines: list[str] = []
    read = next(iter(targets.values())).tensors_checked if targets else 0
    # "fp16 is safe: every value is exactly representable" was said of a Q4_K_M file's few F32/F16 norms and
    # embedding, its quantized matrices unread: what dequantizing them gives was never checked.
    not_read = (f"{counted(quantized_not_read, 'quantized GGUF tensor')} not read" if quantized_not_read else "")
    if quantized_dequantized:
        lines.append(f"{counted(quantized_dequantized, 'quantized GGUF tensor')} checked as their values "
                     "dequantized to float32, as ggml decodes them: each verdict says what casting those values "
                     "gives (from_pretrained(gguf_file=, dtype=) dequantizes them to the dtype asked for; the "
                     "quantization's own error is not counted)")
    if quantized_not_read:
        from weightdoctor.checkpoint.gguf_format import UNREAD_TYPES_WORDS

        lines.append(f"the verdicts cover only the {counted(read, 'tensor')} read: {not_read}, whose blocks "
                     f"weightdoctor does not decode; {UNREAD_TYPES_WORDS}")
    if quantized:
        lines.append("quantized checkpoint: these casts take the stored values as they are, without their scales")
    if name_filter:
        lines.append(f"only tensors matching /{name_filter}/ were checked: run without --filter before converting")
    if sample is not None:
        lines.append(
            f"only {counted(sample, 'value')} per tensor {plural(sample, 'was', 'were')} "
            "checked: a value outside the sample can still overflow, "
            "so run without --sample before converting"
        )
    commands: dict[str, str] = {}
    for name, report in targets.items():
        mem = format_bytes(report.memory_bytes)
        if report.tensors_checked == 0:
            lines.append(f"{name}: no floating tensors to cast")
            continue
        if report.verdict == "safe":
            # The size as a clause of its own: a "(553.35 KB)" after the line's own parenthesis read as "(…) (…)".
            lines.append(f"{name} is safe for the {counted(read, 'tensor')} read: every value read is exactly "
                         f"representable; {not_read}; size {mem}" if quantized_not_read else
                         f"{name} is safe: every value is exactly representable; size {mem}")
        elif report.verdict == "lossy":
            tiny = [f"{counted(report.underflow, 'tiny value')} flushed to zero"] if report.underflow else []
            # Subnormal in the target (fewer significant bits), whether or not they were already in the source.
            tiny += [f"{report.subnormal:,} {plural(report.subnormal, 'becomes', 'become')} subnormal in {name}, "
                     "with fewer significant bits"
                     ] if report.subnormal else []
            extra = f"; {', '.join(tiny)}" if tiny else ""
            extra += f"; of the {counted(read, 'tensor')} read, {not_read}" if quantized_not_read else ""
            lines.append(
                f"{name} loses precision only: max relative error {report.max_rel_error:.3g}, "
                f"{share_text(report.changed_share)} of values rounded{extra}; size {mem}"
            )
        else:
            problems = []
            over = [t for t in report.tensors if t.overflow]
            sat = [t for t in report.tensors if t.verdict == "unsafe" and t.saturated and not t.overflow]
            lost = [t for t in report.tensors if t.verdict == "unsafe" and t.inf_lost and not t.overflow
                    and not t.saturated]
            under = [t for t in report.tensors if t.verdict == "unsafe" and not t.overflow and not t.saturated
                     and not t.inf_lost]
            if over:
                problems.append(f"overflows in {counted(len(over), 'tensor')} ({counted(report.overflow, 'value')} → "
                                "inf/NaN)")
            if sat:
                problems.append(f"clamps values beyond ±{_number(report.max_finite)} in {counted(len(sat), 'tensor')}")
            if lost:
                problems.append(f"turns ±inf into {_cast_of_inf(name)} in {counted(len(lost), 'tensor')} "
                                f"({counted(sum(t.inf_lost for t in lost), 'value')})")
            if under:
                problems.append(f"flushes ≥{MASS_UNDERFLOW_SHARE:.0%} of the values to zero in "
                                f"{counted(len(under), 'tensor')}")
            line = f"{name} is unsafe: {'; '.join(problems)}"
            # from_pretrained keeps these in float32 at this dtype: its load does not hit what the cast does to them.
            kept_at_load = set(report.kept_fp32_at_load or ())
            kept_unsafe = [t.name for t in report.tensors if t.verdict == "unsafe" and t.name in kept_at_load]
            unsafe_tensors = [t for t in report.tensors if t.verdict == "unsafe"]
            # A file `convert --keep-fp32` already wrote: the unsafe tensors stored in float32, every other one at
            # the target. The same convert again (to '<name>-fp16-fp16') would change nothing: say it is done.
            others = [t for t in report.tensors if t.verdict != "unsafe"]
            # Some tensor at the target is needed: a file whose every tensor is unsafe fp32 has not been converted.
            already_kept = bool(report.keep_fp32) and bool(unsafe_tensors) and bool(others) and all(
                t.dtype == "float32" for t in unsafe_tensors) and all(t.dtype == TARGETS[name] for t in others)
            if already_kept:
                line += (f": this file already keeps {plural(len(unsafe_tensors), 'it', 'them')} in fp32 and every "
                         f"other tensor in {name} (what `convert --dtype {name} --keep-fp32` writes): nothing "
                         "to convert")
                if has_config:
                    line += (f"; from_pretrained loads every tensor as {name} all the same (only its class's "
                             "_keep_in_fp32_modules stay fp32)")
            elif report.keep_fp32 and name in ("fp16", "bf16"):
                output = _output_name(source, name)
                command = (
                    f"weightdoctor convert {shell_word(source, argument=True)} -o {shell_word(output)} "
                    f"--dtype {name} --keep-fp32 {shell_word(report.keep_fp32)}"
                    + (f" --revision {shell_word(revision)}" if revision else "")
                    + (f" --key {shell_word(key)}" if key else "")
                )
                commands[name] = command
                kept = report.keep_fp32_memory_bytes or 0
                # In bytes where rounding says the two alike: a few scalars kept (a mask constant, a scale) read
                # "69.96 KB instead of 69.96 KB".
                kept_text, instead = format_bytes(kept), mem
                if kept_text == instead and kept != report.memory_bytes:
                    kept_text, instead = f"{kept:,} bytes", f"{report.memory_bytes:,} bytes"
                line += (
                    f": keep them in fp32 (`{command}`), {kept_text} instead of {instead}"
                )
                if has_config and kept_unsafe:
                    line += (f"; that file is for loaders that keep each tensor's dtype: from_pretrained loads every "
                             f"tensor as {name} all the same, except the {len(kept_unsafe)} unsafe "
                             f"{plural(len(kept_unsafe), 'one', 'ones')} its class "
                             f"keeps in fp32 (_keep_in_fp32_modules): {_names(kept_unsafe)}")
                elif has_config:
                    # Measured: the kept tensors come back as `name` from from_pretrained, overflowing as before.
                    line += (f"; that file is for loaders that keep each tensor's dtype: from_pretrained loads every "
                             f"tensor as {name} all the same (only its class's _keep_in_fp32_modules stay fp32)")
            elif name in ("fp16", "bf16") and report.tensors_unsafe and not report.unsafe_in_fp32:
                line += (f"; no --keep-fp32 expression is suggested: one matching the unsafe tensors' names would be "
                         f"longer than {MAX_KEEP_FP32_REGEX_CHARS:,} characters (a shell passes at most 131,072 bytes "
                         "in one argument)")
            elif report.unsafe_in_fp32:
                listed = ", ".join(report.unsafe_in_fp32[:3]) + (" ..." if len(report.unsafe_in_fp32) > 3 else "")
                line += (f"; {len(report.unsafe_in_fp32)} of them ({listed}) hold float64 values that fp32 "
                         "cannot hold either: --keep-fp32 cannot save them, they need float64 or rescaling")
            elif name.startswith("fp8"):
                line += "; a plain cast will not do: fp8 checkpoints carry per-tensor or per-block scales"
            lines.append(line)
            if declared is not None and TARGETS.get(name) == declared:
                says = f"config.json says {declared}: from_pretrained(dtype='auto') loads these weights as {declared}"
                unsafe = [t.name for t in report.tensors if t.verdict == "unsafe"]
                if kept_unsafe and len(kept_unsafe) == len(unsafe):
                    lines.append(f"{says} but keeps the {len(unsafe)} unsafe {plural(len(unsafe), 'tensor')} in "
                                 "float32 "
                                 "(_keep_in_fp32_modules): it does not hit this")
                elif kept_unsafe:
                    lines.append(f"{says} and hits this in {len(unsafe) - len(kept_unsafe)} of the {len(unsafe)} "
                                 f"unsafe {plural(len(unsafe), 'tensor')}; its class keeps {_names(kept_unsafe)} in "
                                 "float32 "
                                 "(_keep_in_fp32_modules)")
                else:
                    lines.append(f"{says} and hits exactly this")
        if has_config and report.kept_fp32_at_load:
            lines.append(kept_at_load_line(name, report))
    usable = [
        (n, r) for n, r in targets.items()
        if r.verdict != "unsafe" and r.tensors_checked and TARGETS[n] not in ("float32", "float64")
    ]
    best = None
    if usable:
        usable.sort(key=lambda item: (item[1].memory_bytes, verdict_rank(item[1].verdict), item[1].max_rel_error))
        best = usable[0][0]
        first = usable[0][1]
        same_size = [(n, r) for n, r in usable[1:] if r.memory_bytes == first.memory_bytes]
        # Of the casts as small: those that lose more, and those no worse, which the sort put second only by order
        # (an fp8 or fp16 checkpoint casts exactly to both fp16 and bf16: neither error is larger).
        larger = [n for n, r in same_size if r.max_rel_error > first.max_rel_error]
        worse = [f"{n}, {r.verdict}" for n, r in same_size if n not in larger
                 and verdict_rank(r.verdict) > verdict_rank(first.verdict)]
        equal = [n for n, r in same_size if n not in larger and verdict_rank(r.verdict) <= verdict_rank(first.verdict)]
        # Plain clauses after the choice: "bf16 (same size as fp16, whose …)" then "(of the tensors read; …)"
        # stacked two parentheses on one line.
        said = ([f"{', '.join(larger)}, the same size, {plural(len(larger), 'has', 'have')} a larger max relative "
                 "error"] if larger else []) + (
            [f"{'; '.join(worse)}, the same size"] if worse else []) + (
            [f"{', '.join(equal)}, the same size, {'does' if len(equal) == 1 else 'do'} as well here"] if equal else [])
        tail = "".join(f"; {clause}" for clause in said)
        lines.append(f"smallest plain cast without overflow or mass underflow: {best}"
                     + (f" for the tensors read ({not_read})" if quantized_not_read else "") + tail)
    text = "\n".join(lines)
    return Recommendation(text=text, best=best, lines=lines, commands=commands, memory_bytes=memory)


def resolve_auto_dtype(checkpoint: Checkpoint) -> AutoDtype:
    """Ask transformers which dtype `from_pretrained(..., dtype="auto")` would load this checkpoint in.

    Calls transformers' own resolver (`modeling_utils._get_dtype`, 5.x) with a config carrying the
    checkpoint's `dtype`/`torch_dtype` and the weight files transformers would read (sorted shards,
    the index's metadata), so the answer follows transformers' rule: the config's dtype, else the index
    metadata's, else the first floating (non-fp8) tensor of the first weight file.
    """
    import torch

    from weightdoctor.checkpoint.reader import read_json
    from weightdoctor.errors import WeightDoctorError

    try:
        from transformers.configuration_utils import PreTrainedConfig
        from transformers.modeling_utils import _get_dtype
    except ImportError as exc:  # pragma: no cover - depends on the installed transformers
        return AutoDtype(None, f"cannot ask transformers: {exc}")
    config = checkpoint.config or {}
    kwargs = {k: config[k] for k in ("dtype", "torch_dtype") if config.get(k) is not None}
    try:
        hf_config = PreTrainedConfig(**kwargs)
    except Exception as exc:
        return AutoDtype(None, f"transformers rejects config dtype {config_dtype(config)!r}: {exc}")
    weight_files = sorted(str(f.path) for f in checkpoint.weight_files) if checkpoint.sharded else [
        str(f.path) for f in checkpoint.weight_files
    ]
    sharded_metadata = None
    if checkpoint.sharded:
        index = next((f for f in checkpoint.files if f.role == "index"), None)
        try:
            # Read with the reader's bounds (size, depth, entries): the file is read again here and may have
            # changed since the reader's pass. Only its metadata's "dtype" is passed on: all transformers'
            # resolver reads of it (the reader allows any metadata; a copy of it all was made before).
            data = read_json(index.path) if index else {}
        except WeightDoctorError as exc:
            return AutoDtype(None, f"cannot read {index.path.name if index else 'the index'} again: {exc}")
        metadata = data.get("metadata") if isinstance(data, dict) else None
        sharded_metadata = {"dtype": metadata["dtype"]} if isinstance(metadata, dict) and "dtype" in metadata else {}
    if weight_files and not _little_endian_or_not_zip(Path(weight_files[0])):
        # transformers reads it with torch.load(map_location="meta"), which crashes the process (SIGSEGV, torch
        # 2.13) byte-swapping a storage that has no data.
        return AutoDtype(None, f"{Path(weight_files[0]).name} is a big-endian torch.save archive, which transformers' "
                               "dtype resolver cannot read safely")
    try:
        import warnings

        with warnings.catch_warnings():
            # torch's notices while transformers reads the first file ("Detected pickle protocol 4" on a plain
            # pickle) are about torch's loader, not the checkpoint: not shown.
            warnings.simplefilter("ignore")
            _, dtype = _get_dtype(
                "auto", weight_files or None, hf_config, sharded_metadata, None, weights_only=True
            )
    except pickle.UnpicklingError as exc:
        # torch's refusal is paragraphs of advice (ANSI bold, "re-running with weights_only=False will likely
        # succeed") for a file inspect calls safe: an inert global (TransformerEngine's io.BytesIO, a fairseq
        # Namespace) that torch's loader refuses. Its one line of reason, as the reader gives it.
        from weightdoctor.checkpoint.pytorch_format import _weights_only_message

        return AutoDtype(None, f"transformers cannot resolve dtype='auto' here: {_weights_only_message(exc)} "
                               "(from_pretrained reads the file with that loader and fails the same way)")
    except Exception as exc:
        return AutoDtype(None, f"transformers cannot resolve dtype='auto' here: {type(exc).__name__}: {exc}")
    name = str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) else str(dtype)
    if hf_config_declared := config_dtype(config):
        reason = f"config.json {'dtype' if config.get('dtype') is not None else 'torch_dtype'} = {hf_config_declared}"
    elif sharded_metadata and "dtype" in sharded_metadata:
        reason = "the index's metadata.dtype"
    else:
        first = Path(weight_files[0]).name if weight_files else "?"
        reason = f"no dtype in config.json: the first floating tensor of {first}"
    if checkpoint.config is None:
        reason += " (no config.json: from_pretrained itself needs one)"
    return AutoDtype(name, reason)


def _little_endian_or_not_zip(path: Path) -> bool:
    """False for a torch zip archive whose `byteorder` record says anything but "little"."""
    if path.suffix == ".safetensors":
        return True
    from weightdoctor.security import archive as zip_archive

    try:
        with open(path, "rb") as handle:
            layout = zip_archive.read_layout(handle, path.stat().st_size)
            records = [m for m in layout.members if m.name.rpartition("/")[2].lower() == "byteorder"]  # torch: any case
            return all(zip_archive.read_member(handle, m, 16).strip() == b"little" for m in records)
    except (ValueError, OSError):
        return True  # not a zip archive: no byteorder record


def local_report(checkpoint: Checkpoint) -> LocalReport:
    """This machine's CUDA devices (bf16: `torch.cuda.is_bf16_supported()`, fp8: capability ≥ 8.9)."""
    import torch

    devices: list[GpuInfo] = []
    notes: list[str] = []
    available = bool(torch.cuda.is_available())
    if available:
        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            with torch.cuda.device(index):
                bf16 = bool(torch.cuda.is_bf16_supported())
            props = torch.cuda.get_device_properties(index)
            devices.append(GpuInfo(
                index=index, name=str(torch.cuda.get_device_name(index)), capability=f"{major}.{minor}",
                total_memory_bytes=int(getattr(props, "total_memory", 0)), bf16=bf16, fp8=(major, minor) >= (8, 9),
            ))
    else:
        notes.append("no CUDA device: from_pretrained would load on the CPU")
    try:
        cpu_capability = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # pragma: no cover - older torch
        cpu_capability = None
    auto = resolve_auto_dtype(checkpoint)
    if auto.dtype == "bfloat16" and devices and not all(d.bf16 for d in devices):
        notes.append("dtype='auto' gives bfloat16 but not every GPU here supports it natively: fp16 or fp32 there")
    if auto.dtype and auto.dtype.startswith("float8") and devices and not all(d.fp8 for d in devices):
        notes.append("fp8 weights need compute capability ≥ 8.9 for fp8 matmuls")
    return LocalReport(available, devices, cpu_capability, auto, notes)


def select_tensors(checkpoint: Checkpoint, name_filter: str | None) -> tuple[list[TensorInfo], list[SkippedTensor]]:
    """The tensors a cast would touch (matching `name_filter`), and the others with the reason they are left."""
    pattern = re.compile(name_filter) if name_filter else None
    # A tensor saved under several names (tied weights in a pickle) is cast once, as its safetensors form holds
    # it; the filter picks names first, so a tied name it matches still selects the tensor.
    selected = unique_tensors([t for t in checkpoint.tensors if pattern is None or pattern.search(t.name)])
    if pattern is not None and not selected:
        from weightdoctor.structure import raise_no_match

        raise_no_match(name_filter, checkpoint.tensors)
    from weightdoctor.quantized import quantizer_side_tensors

    side = quantizer_side_tensors(checkpoint.tensors, checkpoint.config)
    from weightdoctor.checkpoint.gguf_format import is_dequantized_dtype, is_quantized_dtype

    def checked(info: TensorInfo) -> bool:
        # A GGUF's Q8_0, Q4_K, ...: cast as the float32 values ggml decodes from its blocks.
        return _is_castable(info) or is_dequantized_dtype(info.dtype)

    skipped = [
        SkippedTensor(t.name, t.dtype, _GGUF_QUANTIZED_SKIP if is_quantized_dtype(t.dtype)
                      else NOT_CAST.get(t.dtype, "not floating: a dtype cast leaves it as is"))
        for t in selected if not checked(t)
    ] + [SkippedTensor(t.name, t.dtype, "a quantizer's scale or state: convert keeps it as stored")
         for t in selected if checked(t) and t.name in side
    ] + [SkippedTensor(t.name, t.dtype, DTYPE_PLACEHOLDER_SKIP)
         for t in selected if checked(t) and t.name not in side and is_dtype_placeholder(t.name, t.num_params)]
    return [t for t in selected
            if checked(t) and t.name not in side and not is_dtype_placeholder(t.name, t.num_params)], skipped


# Why a GGUF's quantized tensor is skipped: its values are blocks that neither weightdoctor nor gguf-py decodes.
_GGUF_QUANTIZED_SKIP = ("a quantized GGUF type: its values are not read (weightdoctor decodes every type a "
                        "llama.cpp file type stores, not the Q8_1 / Q8_K intermediates of ggml's dot products, which "
                        "transformers' from_pretrained(gguf_file=) cannot load either; the memory figures count it "
                        "as floats)")


def check_dtype(
    checkpoint: Checkpoint,
    targets: list[str],
    *,
    sample: int | None = None,
    name_filter: str | None = None,
    local: bool = False,
    seed: int = SAMPLE_SEED,
    chunk_elements: int = CHUNK_ELEMENTS,
    on_tensor: Callable[[int], None] | None = None,
) -> CheckDtypeReport:
    """Simulate casting every floating tensor of `checkpoint` to each target and judge the result.

    Example:
        >>> with open_checkpoint("model.safetensors") as ckpt:  # doctest: +SKIP
        ...     report = check_dtype(ckpt, ["fp16", "bf16"])
        >>> report.targets["fp16"].verdict  # doctest: +SKIP
        'lossy'

    Args:
        checkpoint: an opened checkpoint; tensors are loaded one at a time.
        targets: target names (see `parse_targets`).
        sample: check this many values per tensor (drawn with a fixed seed) instead of all of them.
        name_filter: regular expression; only tensors whose name matches are cast.
        local: add this machine's GPU support and transformers' `dtype="auto"` resolution.
        seed: seed of the sample.
        chunk_elements: values cast at once (bounds memory).
        on_tensor: called with 1 after each tensor (a progress bar).

    Raises:
        UsageError: a bad `sample` or target; reader errors for unreadable tensors.
    """
    import torch

    from weightdoctor.checkpoint.safetensors_format import working_on

    if sample is not None and sample <= 0:
        raise UsageError(f"--sample must be a positive number of values, not {sample}")
    for name in targets:
        if name not in TARGETS:
            raise UsageError(f"unknown target {name!r}")
    castable, skipped = select_tensors(checkpoint, name_filter)
    from weightdoctor.checkpoint.gguf_format import DEQUANTIZED_TYPES

    target_dtypes = [getattr(torch, TARGETS[n]) for n in targets]
    # A float64 tensor that a narrower target cannot hold would be kept in fp32 by --keep-fp32: whether fp32
    # holds it is measured in the same pass (unless fp32 is a target already).
    fp32_too = torch.float32 not in target_dtypes and any(d.itemsize < 4 for d in target_dtypes)
    unsafe_in_fp32: set[str] = set()
    totals = {n: CastCounts() for n in targets}
    per_tensor: dict[str, list[TensorCast]] = {n: [] for n in targets}
    eps = {n: float(torch.finfo(d).eps) for n, d in zip(targets, target_dtypes, strict=True)}
    warnings = [*checkpoint.warnings, *checkpoint.value_warnings]  # values are read: the unread ones are said
    checked = 0

    def record(info: TensorInfo, counts_list: list[CastCounts], extra: bool) -> None:
        nonlocal checked
        if extra and tensor_verdict(counts_list.pop(), float(torch.finfo(torch.float32).eps))[0] == "unsafe":
            unsafe_in_fp32.add(info.name)
        for name, counts in zip(targets, counts_list, strict=True):
            verdict, reason = tensor_verdict(counts, eps[name])
            per_tensor[name].append(TensorCast(
                name=info.name, dtype=info.dtype, verdict=verdict, values=counts.values, overflow=counts.overflow,
                saturated=counts.saturated, underflow=counts.underflow, subnormal=counts.subnormal,
                changed=counts.changed, max_rel_error=counts.max_rel_error, mean_rel_error=counts.mean_rel_error,
                nan=counts.nan, inf=counts.inf, reason=reason, inf_lost=counts.inf_lost,
            ))
            totals[name].add(counts)
            if name == "fp32" and verdict == "unsafe":
                unsafe_in_fp32.add(info.name)
        checked += 1
        if on_tensor is not None:
            on_tensor(1)

    # Small tensors of one stored dtype wait here and are cast together; they are recorded in the checkpoint's
    # order all the same, since the batch is flushed before any other tensor is recorded.
    pending: list[tuple[TensorInfo, torch.Tensor]] = []
    pending_elements = 0

    def flush() -> None:
        nonlocal pending_elements
        if not pending:
            return
        extra = [torch.float32] if fp32_too and pending[0][0].dtype == "float64" else []
        batch = cast_counts_batch([values for _, values in pending], target_dtypes + extra)
        for (info, _), counts_list in zip(pending, batch, strict=True):
            record(info, counts_list, bool(extra))
        pending.clear()
        pending_elements = 0

    for info in castable:
        extra_names = ["float32"] if fp32_too and info.dtype == "float64" else []
        if all(casts_exactly(info.dtype, t) for t in [*(TARGETS[n] for n in targets), *extra_names]):
            flush()
            # Every value this dtype can hold casts exactly to each target: nothing to read (an fp8 checkpoint's
            # weights, hundreds of GB, against fp16 / bf16 / fp32). With --sample it counts as many values as a
            # read tensor would, so the totals' shares weigh each tensor as before. What a read refuses (a meta
            # tensor, overlapping views) is refused all the same.
            checkpoint.check_readable(info.name)
            counted_values = info.num_params if sample is None else min(info.num_params, sample)
            for name in targets:
                per_tensor[name].append(TensorCast(
                    name=info.name, dtype=info.dtype, verdict="safe", values=counted_values, overflow=0,
                    saturated=0, underflow=0, subnormal=0, changed=0, max_rel_error=0.0, mean_rel_error=0.0,
                    nan=None, inf=None, reason=f"every {info.dtype} value is exactly representable (not read)",
                    read=False,
                ))
                totals[name].add(CastCounts(values=counted_values, unread=counted_values))
            checked += 1
            if on_tensor is not None:
                on_tensor(1)
            continue
        # A GGUF's quantized blocks are read as the float32 values ggml decodes (`gguf_quants`).
        torch_dtype = torch.float32 if info.dtype in DEQUANTIZED_TYPES else getattr(torch, info.dtype, None)
        if torch_dtype is None or not torch_dtype.is_floating_point:
            skipped.append(SkippedTensor(info.name, info.dtype, "this torch cannot cast it"))
            continue
        if sample is not None and info.num_params > sample and info.dtype != "float4_e2m1fn_x2":
            # Only the sampled values are read (the sample exists to be cheap: a tensor larger than memory too).
            tensor = checkpoint.load_values(info.name, sample_indices(info.num_params, sample, info.name, seed))
            values = tensor
        else:
            with working_on(info):
                tensor = checkpoint.load_tensor(info.name)
            # A large strided view is cast a piece at a time (`cast_counts`), not flattened whole first.
            whole = (tensor.numel() > min(BATCH_TENSOR_ELEMENTS, chunk_elements)
                     and (sample is None or tensor.numel() <= sample))
            values = tensor if whole else tensor.reshape(-1)
            if sample is not None and values.numel() > sample:
                values = values[sample_indices(values.numel(), sample, info.name, seed)]
        numel = values.numel()
        if 0 < numel <= min(BATCH_TENSOR_ELEMENTS, chunk_elements):
            if pending and (pending[0][1].dtype != values.dtype or pending_elements + numel > BATCH_ELEMENTS):
                flush()
            # A copy (16,384 values at most): a view would keep its file's memory map, and the descriptor a map
            # holds, open until the flush (hundreds of .bin shards then ran out of descriptors).
            pending.append((info, values.clone()))
            pending_elements += numel
            del tensor, values
            continue
        flush()
        extra = [torch.float32] if fp32_too and info.dtype == "float64" else []
        with working_on(info):
            counts_list = cast_counts(values, target_dtypes + extra, chunk_elements)
        del tensor, values
        record(info, counts_list, bool(extra))
    flush()

    all_names = [t.name for t in checkpoint.tensors]
    reports: dict[str, TargetReport] = {}
    for name, dtype in zip(targets, target_dtypes, strict=True):
        rows = per_tensor[name]
        total = totals[name]
        finfo = torch.finfo(dtype)
        bytes_per_value = bits_per_element(TARGETS[name]) / 8
        offenders = [r.name for r in rows if r.verdict == "unsafe"]
        beyond_fp32 = sorted(n for n in offenders if n in unsafe_in_fp32) if TARGETS[name] != "float32" else []
        # Keeping in fp32 is no remedy for a cast to fp32 itself, nor for values fp32 cannot hold.
        fixable = offenders and not beyond_fp32 and TARGETS[name] != "float32"
        regex = keep_fp32_regex(offenders, all_names) if fixable else None
        verdict = max((r.verdict for r in rows), key=verdict_rank, default="safe")
        reports[name] = TargetReport(
            dtype=TARGETS[name],
            verdict=verdict,
            tensors_checked=len(rows),
            tensors_unsafe=sum(r.verdict == "unsafe" for r in rows),
            tensors_lossy=sum(r.verdict == "lossy" for r in rows),
            values=total.values,
            overflow=total.overflow,
            saturated=total.saturated,
            underflow=total.underflow,
            subnormal=total.subnormal,
            changed=total.changed,
            changed_share=total.changed / total.values if total.values else 0.0,
            max_rel_error=total.max_rel_error,
            mean_rel_error=total.mean_rel_error,
            max_finite=float(finfo.max),
            smallest_normal=float(finfo.smallest_normal),
            torch_behaviour=cast_behaviour(name),
            memory_bytes=memory_at(checkpoint.tensors, bytes_per_value),
            keep_fp32=regex,
            # What the suggested `--keep-fp32 REGEX` keeps: every name it matches, not only the offenders.
            keep_fp32_memory_bytes=memory_at(
                checkpoint.tensors, bytes_per_value, {n for n in all_names if re.search(regex, n)}) if regex else None,
            tensors=rows,
            unsafe_in_fp32=beyond_fp32,
        )

    # At every verdict: a lossy fp16 cast of T5 does not round the `wo` its from_pretrained(dtype=float16) keeps.
    halves = [n for n in ("fp16", "bf16") if n in reports and reports[n].tensors_checked]
    for name, kept in kept_fp32_at_load(checkpoint, halves).items():
        reports[name].kept_fp32_at_load = kept
        reports[name].kept_fp32_at_load_memory_bytes = memory_at(
            checkpoint.tensors, bits_per_element(TARGETS[name]) / 8, set(kept)) if kept else None
    declared = config_dtype(checkpoint.config)
    stored = stored_dtype_counts(checkpoint.tensors)
    floating_stored = [d for d in stored if _is_castable_dtype(d)]
    memory = {"stored": memory_at_stored(checkpoint.tensors)}
    for name in dict.fromkeys(["fp32", "bf16", "fp16", "fp8_e4m3", *targets]):
        if getattr(torch, TARGETS[name], None) is not None:
            memory[name] = memory_at(checkpoint.tensors, bits_per_element(TARGETS[name]) / 8)
    agreement = config_agreement(declared, checkpoint.tensors, checkpoint.config)
    quantized_not_read = sum(t.reason == _GGUF_QUANTIZED_SKIP for t in skipped)
    quantized_dequantized = sum(t.dtype in DEQUANTIZED_TYPES for t in castable)
    sample_info = None
    if sample is not None:
        sample_info = SampleInfo(
            values_per_tensor=sample, seed=seed,
            note=f"sampled: at most {counted(sample, 'value')} per tensor, "
                 f"drawn uniformly with replacement (seed {seed}); "
            "the tensors cast are still read whole, only the casts are bounded",
        )
    return CheckDtypeReport(
        source=checkpoint.source,
        resolved_path=str(checkpoint.path),
        format=checkpoint.format,
        stored_dtypes=stored,
        mixed_storage=len(floating_stored) > 1,
        config_torch_dtype=declared,
        config_agreement=agreement,
        tensor_dtypes={t.name: t.dtype for t in checkpoint.tensors},
        targets=reports,
        recommendation=recommend(checkpoint.source, reports, memory, declared, name_filter, sample, agreement.status
                                 == "quantized", has_config=checkpoint.config is not None,
                                 revision=checkpoint.revision, key=checkpoint.nested_key,
                                 quantized_not_read=quantized_not_read,
                                 quantized_dequantized=quantized_dequantized),
        limits=LIMITS,
        sample=sample_info,
        filter=name_filter,
        tensors_checked=checked,
        quantized_not_read=quantized_not_read,
        skipped=skipped,
        memory_bytes=memory,
        local=local_report(checkpoint) if local else None,
        warnings=warnings,
        quantized_dequantized=quantized_dequantized,
    )


def kept_fp32_at_load(checkpoint: Checkpoint, targets: Iterable[str]) -> dict[str, list[str]]:
    """The tensors `from_pretrained(SRC, dtype=<target>)` keeps in float32, for each of `targets` (fp16, bf16).

    transformers casts every tensor to the requested dtype except those its class's dtype plan names
    (`_keep_in_fp32_modules` at fp16, T5's `wo`; `_keep_in_fp32_modules_strict` at fp16 and bf16), matched
    against each tensor's name as its loader matches them. The class is built on the meta device from
    `config.json`; a checkpoint without one, or whose config transformers cannot build, gets no entry.

    Example:
        >>> kept_fp32_at_load(t5_checkpoint, ["fp16", "bf16"])  # doctest: +SKIP
        {'fp16': ['encoder.block.0.layer.1.DenseReluDense.wo.weight', ...], 'bf16': []}
    """
    return {target: kept for target, (kept, _) in kept_fp32_at_load_by_plan(checkpoint, targets).items()}


def kept_fp32_at_load_by_plan(checkpoint: Checkpoint,
                              targets: Iterable[str]) -> dict[str, tuple[list[str], list[str]]]:
    """As `kept_fp32_at_load`, each target's tensors with the class's dtype plan for it: the module names its
    `_keep_in_fp32_modules` lists declare (BLIP-2 over T5's `qformer`, `query_tokens`, `wo`), to name what is kept
    as the model's code names it, not by the last names of the tensors under them.

    Example:
        >>> kept_fp32_at_load_by_plan(t5_checkpoint, ["fp16"])  # doctest: +SKIP
        {'fp16': (['encoder.block.0.layer.1.DenseReluDense.wo.weight', ...], ['wo'])}
    """
    wanted = [t for t in targets if t in ("fp16", "bf16")]
    if checkpoint.config is None or not wanted:
        return {}
    from weightdoctor.modeling_source import fp32_modules_plan, keeps_modules_in_fp32

    if keeps_modules_in_fp32(checkpoint.config) is False:
        # Its modeling code sets no _keep_in_fp32_modules: the plan is empty, known without importing transformers
        # and building the model (seconds, now asked at every verdict).
        return {t: ([], []) for t in wanted}
    plans: dict[str, list[str]]
    if (read := fp32_modules_plan(checkpoint.config)) is not None:
        # The lists are literals its modeling code declares (T5's `wo`): read, not built. Importing transformers and
        # building the model took 3 to 15 s of a convert that otherwise takes half a second. As `_get_dtype_plan`:
        # the plain list at float16 only, the strict one at float16 and bfloat16.
        keep, strict = read
        plans = {t: list(dict.fromkeys([*(keep if t == "fp16" else ()), *strict])) for t in wanted}
    else:
        import torch

        try:
            from weightdoctor.meta_model import build_meta_model

            model = build_meta_model(checkpoint.config)
            plans = {t: list(model._get_dtype_plan(getattr(torch, TARGETS[t]))) for t in wanted}
        except Exception:  # not a config transformers builds (diffusers, timm, a foreign class): nothing to say
            return {}
    kept: dict[str, tuple[list[str], list[str]]] = {}
    for target, plan in plans.items():
        pattern = _glob_alternation(plan) if plan else None
        kept[target] = (sorted(t.name for t in checkpoint.tensors
                               if pattern is not None and _is_castable(t) and pattern.search(t.name)), sorted(plan))
    return kept


def _glob_alternation(globs: list[str]) -> re.Pattern[str]:
    """The pattern transformers' loader matches a dtype plan's names with (`core_model_loading.build_glob_alternation`:
    each name a branch, `*` any text, searched anywhere in a tensor's name), without importing it."""
    return re.compile("|".join(f"(?:{glob.replace('*', '.*')})" for glob in globs))


def kept_at_load_line(name: str, report: TargetReport) -> str:
    """What from_pretrained(dtype=<name>) does differently from the plain cast: the tensors its class keeps in
    float32 (T5's `wo` at fp16) are not cast, whatever the verdict, and are counted out of it here.

    Example:
        >>> kept_at_load_line("fp16", t5_fp16_report)  # doctest: +SKIP
        "from_pretrained(dtype=torch.float16) keeps 4 tensors in float32 (its class's
        _keep_in_fp32_modules: wo): 4 of the 35 lossy ones load unchanged; ..."
    """
    from weightdoctor.units import format_bytes

    kept = set(report.kept_fp32_at_load or ())
    modules = sorted({n.rsplit(".", 2)[-2] if n.count(".") >= 1 else n for n in kept})
    listed = ", ".join(modules[:4]) + (f" and {len(modules) - 4} more" if len(modules) > 4 else "")
    strict = "_keep_in_fp32_modules_strict" if name == "bf16" else "_keep_in_fp32_modules"
    parts = []
    for verdict in ("unsafe", "lossy"):
        of = [t.name for t in report.tensors if t.verdict == verdict]
        hit = sum(n in kept for n in of)
        if hit:
            parts.append(f"{hit} of the {len(of)} {verdict} ones")
    spared = f": {' and '.join(parts)} load unchanged" if parts else ""
    at_load = report.kept_fp32_at_load_memory_bytes
    memory = (f"; the weights take {format_bytes(at_load)} at that load, not {format_bytes(report.memory_bytes)}"
              if at_load is not None and at_load != report.memory_bytes else "")
    return (f"from_pretrained(dtype=torch.{TARGETS[name]}) keeps {counted(len(kept), 'tensor')} in float32 "
            f"(its class's {strict}: {listed}){spared}{memory}")


def _is_castable_dtype(dtype: str) -> bool:
    return dtype in FLOATING and dtype not in NOT_CAST


def memory_at_stored(tensors: list[TensorInfo]) -> int:
    """Bytes of the weights as stored (shared storage once)."""
    return sum(info.nbytes for info in unique_tensors(tensors))
