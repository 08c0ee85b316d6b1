"""Streamed per-tensor statistics: one tensor in memory at a time, plus the bounded samples the classifier needs.

Every floating tensor is read once. Moments are accumulated over chunks of at most `CHUNK` elements
(float64 combination of per-chunk float32 reductions), so a bf16 tensor is never copied to float32 whole.
Besides the summary numbers, each tensor yields a `TensorSample`: a fixed-size random sample of values,
a few whole rows and columns and a small random sub-matrix, enough for the init classifier
(`weightdoctor.init_classify`) without a second pass over the data.

With `sample=N` only N values per tensor are read (in blocks of `SAMPLE_BLOCK` consecutive elements at
deterministic random offsets), plus a few whole rows for the classifier.
"""

from __future__ import annotations

import hashlib
import math
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from weightdoctor.dtypes import FLOATING
from weightdoctor.errors import CorruptCheckpoint, UsageError

if TYPE_CHECKING:
    import torch

    from weightdoctor.checkpoint import Checkpoint, TensorInfo

MAX_LISTED = 32
EXACT_KURTOSIS_MAX = 1 << 20  # above this many values, excess kurtosis comes from a random sample
KURTOSIS_SAMPLE = 1 << 16
CHUNK = 1 << 24  # elements reduced at once: 64 MB of float32
CLASSIFIER_SAMPLE = 1 << 12  # values the classifier sees per tensor
ROW_BLOCK = 64  # whole rows read for norm spread and orthogonality
COL_BLOCK = 32  # whole columns (a strided gather, dearer than rows)
SUB_ROWS, SUB_COLS = 128, 256  # random sub-matrix for the top singular value
MAX_LINE = 8192  # longest row/column read whole; longer ones are sampled
SAMPLE_BLOCK = 64  # consecutive elements per block under --sample
# float8 kinds torch cannot reduce directly are widened first; the others below are readable as-is.
READABLE = FLOATING


@dataclass(frozen=True)
class TensorStats:
    """Summary statistics of one floating tensor (over all values, or over a sample when `sampled`).

    `mean`, `std`, `min`, `max`, `abs_max`, `zero_fraction` and `kurtosis` are over the finite values (NaN and
    inf are counted in `nan` / `inf`, not in `min` / `max`); `std` is the population standard deviation;
    `kurtosis` is the excess kurtosis (0 for a normal, -1.2 for a uniform distribution), over all values
    up to `EXACT_KURTOSIS_MAX` of them and from a `KURTOSIS_SAMPLE`-value random sample above (its standard
    error is then about √(24/65536) ≈ 0.02 for a normal tensor).
    """

    count: int
    mean: float
    std: float
    min: float
    max: float
    abs_max: float
    zero_fraction: float
    nan: int
    inf: int
    kurtosis: float
    sampled: bool = False
    zero_rows: int | None = None  # all-zero rows of the (shape[0], rest) matrix; None when not checked
    duplicate_rows: int | None = None  # rows equal to an earlier non-zero row
    duplicate_cols: int | None = None  # columns equal to an earlier non-zero column
    zero_cols: int | None = None  # all-zero columns of the (shape[0], rest) matrix (inputs nothing reads)
    zero_row_index: tuple[int, ...] = ()  # the first `MAX_LISTED` all-zero rows

    @property
    def finite_count(self) -> int:
        return self.count - self.nan - self.inf


@dataclass
class TensorSample:
    """Bounded views of one tensor for the classifier (float32, CPU).

    Attributes:
        values: up to `CLASSIFIER_SAMPLE` finite values drawn at random (all values when fewer; float64 for a
            float64 tensor).
        rows: up to `ROW_BLOCK` whole rows of the tensor seen as a matrix (shape[0], rest), or None.
        cols: up to `COL_BLOCK` whole columns, or None (not read under --sample).
        sub: a random sub-matrix (at most `SUB_ROWS` × `SUB_COLS`), or None for 1-D tensors.
        rows_complete / cols_complete: whether `rows` / `cols` hold entire rows / columns.
    """

    values: torch.Tensor
    rows: torch.Tensor | None = None
    cols: torch.Tensor | None = None
    sub: torch.Tensor | None = None
    rows_complete: bool = True
    cols_complete: bool = True


@dataclass
class StatsResult:
    """Statistics and classifier sample of one tensor."""

    info: TensorInfo
    stats: TensorStats
    sample: TensorSample = field(repr=False)


def seed_for(name: str) -> int:
    """Deterministic seed of a tensor's random draws: the same name always gives the same sample."""
    return zlib.crc32(name.encode("utf-8", "surrogatepass")) & 0x7FFFFFFF  # a pickle's key may hold a lone surrogate


def _as_float32(tensor: torch.Tensor) -> torch.Tensor:
    import torch

    if tensor.dtype == torch.float32:
        return tensor
    return tensor.to(torch.float32)


def _widen_to_float32(tensor: torch.Tensor) -> torch.Tensor:
    """float32, except float64 values, which stay float64 (statistics of values float32 cannot hold)."""
    import torch

    return tensor if tensor.dtype == torch.float64 else _as_float32(tensor)


_SCRATCH: dict[str, torch.Tensor] = {}


def _scratch(shape: tuple[int, ...], slot: str) -> torch.Tensor:
    """A reused float32 work buffer (at most `CHUNK` elements per slot), so blocks cost no page faults."""
    import torch

    numel = math.prod(shape)
    buffer = _SCRATCH.get(slot)
    if buffer is None or buffer.numel() < numel:
        buffer = torch.empty(numel, dtype=torch.float32)
        _SCRATCH[slot] = buffer
    return buffer[:numel].view(shape)


def _blocks(matrix: torch.Tensor) -> Iterator[torch.Tensor]:
    """float32 row blocks of a (rows, cols) matrix, each at most about `CHUNK` elements.

    A float32 matrix yields views; other dtypes are widened into a reused buffer, valid until the next block.
    """
    import torch

    rows, cols = matrix.shape
    step = max(1, CHUNK // max(cols, 1))
    for start in range(0, rows, step):
        block = matrix[start : start + step]
        if block.dtype == torch.float32:
            yield block
        else:
            yield _scratch(tuple(block.shape), "widen").copy_(block)


def _tail_blocks(flat: torch.Tensor) -> Iterator[torch.Tensor]:
    """`CHUNK`-sized float32 pieces of a 1-D tensor whose length is not a multiple of `CHUNK`."""
    for start in range(0, flat.numel(), CHUNK):
        yield from _blocks(flat[start : start + CHUNK].reshape(1, -1))


def _equal_lines(matrix: torch.Tensor, keys: torch.Tensor, skip: torch.Tensor, by_row: bool) -> int:
    """Lines (rows or columns) exactly equal to an earlier one, among lines whose random projections
    (`keys`) nearly agree; lines flagged in `skip` (all zero) are ignored."""
    import torch

    candidates = (~skip & torch.isfinite(keys)).nonzero().flatten()
    if candidates.numel() < 2:
        return 0
    if matrix.is_floating_point() and matrix.element_size() == 1:
        # fp8 has no arithmetic in torch (`+ 0.0` raises): lines are compared by their bytes.
        matrix = matrix.view(torch.uint8)
    order = candidates[keys[candidates].argsort()]
    sorted_keys = keys[order]
    scale = float(sorted_keys.abs().max()) or 1.0
    close = (sorted_keys[1:] - sorted_keys[:-1]).abs() <= 1e-6 * scale
    if not bool(close.any()):
        return 0
    groups: list[list[int]] = []
    for position in close.nonzero().flatten().tolist():
        if groups and groups[-1][-1] == position:
            groups[-1].append(position + 1)
        else:
            groups.append([position, position + 1])
    duplicates = 0
    for group in groups:
        # Lines are told apart by a digest of their bytes, then confirmed equal: linear in the group's size.
        # (One dominant column makes every projection nearly agree, so a group can hold every line.)
        members = order[group].sort().values.tolist()
        first_with: dict[bytes, int] = {}  # digest -> index of the first line with it (no copy kept)
        for index in members:
            line = matrix[index] if by_row else matrix[:, index]
            # `+ 0.0` turns -0.0 into 0.0, which torch.equal holds equal: such lines share a digest too.
            digest = hashlib.blake2b((line + 0.0).contiguous().view(torch.uint8).numpy(), digest_size=16).digest()
            first = first_with.setdefault(digest, index)
            if first != index and torch.equal(line, matrix[first] if by_row else matrix[:, first]):
                duplicates += 1
    return duplicates


MIN_LINE = 4  # rows / columns shorter than this are not checked for duplicates
# float8 values of a normal weight carry ~4-6 bits each: four of them repeat by chance among a few thousand
# rows, sixteen (~80 bits) do not.
MIN_LINE_1_BYTE = 16
SUM_PIECE = 1 << 14  # float32 sums over at most this many values, added in float64 (measured: 6e-10 relative)
HUGE = 1e16  # above this, SUM_PIECE squares (of values up to twice it, once centred) can overflow float32


def _sum_and_squares(values: torch.Tensor, peak: float) -> tuple[float, float]:
    """(Σx, Σx²) of a 1-D float32 block of finite values whose largest magnitude is `peak`.

    One float32 dot over 16M values drifts by ~1e-4 and a square above 1.8e19 overflows; pieces of
    `SUM_PIECE` values added in float64 are exact to ~1e-9, and huge values go through float64 whole.
    """
    import torch

    if peak > HUGE:
        wide = values.double()
        return float(wide.sum()), float(torch.dot(wide, wide))
    total = squares = 0.0
    for piece in values.split(SUM_PIECE):
        total += float(piece.sum())
        squares += float(torch.dot(piece, piece))
    return total, squares


def _sample_kurtosis(flat: torch.Tensor, count: int, has_nonfinite: bool) -> float:
    """Excess kurtosis from `KURTOSIS_SAMPLE` values at deterministic random places (float64)."""
    import torch

    generator = torch.Generator().manual_seed(count)
    index = torch.randint(0, count, (KURTOSIS_SAMPLE,), generator=generator)
    values = flat[index].double()
    if has_nonfinite:
        values = values[torch.isfinite(values)]
    if values.numel() < 4:
        return float("nan")
    centred = values - values.mean()
    m2 = float(centred.square().mean())
    return float(centred.pow(4).mean()) / (m2 * m2) - 3.0 if m2 > 0 else float("nan")


def _float64_figures(flat: torch.Tensor) -> dict[str, float | int]:
    """The moments, extremes and counts of a 1-D float64 tensor, reduced in float64.

    The float32 passes would turn values beyond ±3.4e38 into inf (a finite tensor reported as Inf, an error
    finding) and merge values closer than float32's resolution (a spread reported as a constant). Values are
    scaled by a power of two (exact) so that the largest is below 1: neither sums nor squares can overflow,
    nor squares of tiny values underflow. Kurtosis is exact here (float64 tensors are rare and this is cheap).
    """
    import torch

    step = 1 << 20  # float64 pieces of 8 MB: the temporaries of a pass (masks, scaled, centred, squares) stay small
    n = nans = infs = nonzero = 0
    low, high = math.inf, -math.inf
    for start in range(0, flat.numel(), step):
        piece = flat[start : start + step]
        finite = torch.isfinite(piece)
        finite_count = int(finite.sum())
        block_nans = int(torch.isnan(piece).sum())
        nans += block_nans
        infs += piece.numel() - finite_count - block_nans
        if finite_count < piece.numel():
            piece = piece[finite]
        if piece.numel():
            lo, hi = torch.aminmax(piece)
            low, high = min(low, float(lo)), max(high, float(hi))
            n += piece.numel()
            nonzero += int(torch.count_nonzero(piece))
    if n == 0:
        nan_value = float("nan")
        return {"mean": nan_value, "std": nan_value, "min": nan_value, "max": nan_value, "abs_max": nan_value,
                "zero_fraction": nan_value, "nan": nans, "inf": infs, "kurtosis": nan_value}
    peak = max(abs(low), abs(high))
    exponent = -math.frexp(peak)[1] if peak > 0 else 0
    # Two factors: 2**exponent alone overflows for subnormal peaks (exponent up to 1075).
    up_a, up_b = math.ldexp(1.0, exponent // 2), math.ldexp(1.0, exponent - exponent // 2)

    def scaled() -> Iterator[torch.Tensor]:
        for start in range(0, flat.numel(), step):
            piece = flat[start : start + step]
            if nans or infs:
                piece = piece[torch.isfinite(piece)]
            yield piece * up_a * up_b

    mean_scaled = sum(float(piece.sum()) for piece in scaled()) / n
    m1 = m2 = m3 = m4 = 0.0
    for piece in scaled():
        centred = piece - mean_scaled
        squares = centred * centred
        m1 += float(centred.sum())
        m2 += float(squares.sum())
        m3 += float((squares * centred).sum())
        m4 += float(torch.dot(squares, squares))
    shift = m1 / n
    variance = max(m2 / n - shift * shift, 0.0)
    if variance > 0:
        fourth = m4 / n - 4 * shift * m3 / n + 6 * shift * shift * m2 / n - 3 * shift ** 4
        kurtosis = fourth / (variance * variance) - 3.0
    else:
        kurtosis = float("nan")
    return {
        "mean": math.ldexp(mean_scaled + shift, -exponent),
        "std": math.ldexp(math.sqrt(variance), -exponent),
        "min": low,
        "max": high,
        "abs_max": peak,
        "zero_fraction": (n - nonzero) / n,
        "nan": nans,
        "inf": infs,
        "kurtosis": kurtosis,
    }


def summarize_values(flat: torch.Tensor, sampled: bool = False, shape: tuple[int, ...] | None = None) -> TensorStats:
    """Statistics of a floating tensor (see `_summarize_narrowed`); a float64 tensor's figures are its own.

    The row and column checks of a float64 tensor still come from its float32 blocks, but compare the stored
    values exactly.
    """
    import torch

    stats = _summarize_narrowed(flat, sampled, shape)
    if flat.dtype == torch.float64 and flat.numel():
        stats = replace(stats, **_float64_figures(flat))
    return stats


def _summarize_narrowed(flat: torch.Tensor, sampled: bool = False,
                        shape: tuple[int, ...] | None = None) -> TensorStats:
    """Statistics of a floating tensor, reduced block by block in two passes (mean, then central moments).

    With a `shape` of two or more dimensions (and not `sampled`), the tensor is also seen as a
    (shape[0], rest) matrix: all-zero rows and rows or columns that repeat another are counted, from
    random projections of every row and column (candidates are then compared exactly).

    Example:
        >>> import torch
        >>> s = summarize_values(torch.tensor([0.0, 1.0, float("nan"), 3.0]))
        >>> (s.count, s.nan, round(s.mean, 6), round(s.zero_fraction, 6))
        (4, 1, 1.333333, 0.333333)
    """
    import torch

    if flat.numel() == 0:
        # A tensor with a 0-sized dimension has no values: every statistic is undefined.
        nan_value = float("nan")
        return TensorStats(0, nan_value, nan_value, nan_value, nan_value, nan_value, nan_value, 0, 0, nan_value,
                           sampled)
    matrix_shape = _matrix_shape(shape) if shape is not None and not sampled else None
    if matrix_shape is not None and matrix_shape[1] > CHUNK:
        matrix_shape = None
    matrix = flat.reshape(matrix_shape) if matrix_shape is not None else flat.reshape(1, -1)
    flat_blocks = matrix_shape is None
    count = int(flat.numel())
    n = nans = infs = nonzero = 0
    total = squares = 0.0
    low, high = math.inf, -math.inf
    row_keys: list[torch.Tensor] = []
    col_keys: torch.Tensor | None = None
    if not flat_blocks:
        generator = torch.Generator().manual_seed(12345)
        row_probe = torch.randn(matrix.shape[1], generator=generator)
        col_probe = torch.randn(matrix.shape[0], generator=generator)
        col_keys = torch.zeros(matrix.shape[1])

    def blocks() -> Iterator[torch.Tensor]:
        if not flat_blocks:
            yield from _blocks(matrix)
        elif count % min(count, CHUNK) == 0:
            yield from _blocks(flat.reshape(-1, min(count, CHUNK)))
        else:  # a long 1-D tensor whose length is no multiple of CHUNK
            yield from _tail_blocks(flat)

    row_start = 0
    for block in blocks():
        lo, hi = torch.aminmax(block)
        values = block.reshape(-1)
        if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
            finite = torch.isfinite(values)
            block_nans = int(torch.isnan(values).sum())
            nans += block_nans
            infs += int((~finite).sum()) - block_nans
            values = values[finite]
            if values.numel():
                lo, hi = torch.aminmax(values)
        if values.numel():
            low, high = min(low, float(lo)), max(high, float(hi))
            n += values.numel()
            # Up to EXACT_KURTOSIS_MAX values everything is reduced in float64 (cheap at that size).
            block_total, block_squares = _sum_and_squares(
                values, math.inf if count <= EXACT_KURTOSIS_MAX else max(abs(float(lo)), abs(float(hi))))
            total += block_total
            squares += block_squares
            nonzero += int(torch.count_nonzero(values))
        if not flat_blocks:
            row_keys.append(block @ row_probe)
            assert col_keys is not None
            col_keys += col_probe[row_start : row_start + block.shape[0]] @ block
            row_start += block.shape[0]
    if n == 0:
        nan_value = float("nan")
        return TensorStats(count, nan_value, nan_value, nan_value, nan_value, nan_value, nan_value, nans, infs,
                           nan_value, sampled)
    peak = max(abs(low), abs(high))
    mean = total / n
    exact_kurtosis = n <= EXACT_KURTOSIS_MAX
    if mean * mean <= 1e-4 * squares / n and not exact_kurtosis:
        # No cancellation to fear: E[x²] − mean² is exact to ~1e-8 here, and saves a pass.
        variance = max(squares / n - mean * mean, 0.0)
        kurtosis = _sample_kurtosis(flat, count, nans + infs > 0)
    else:
        # Centred on the float32 value of the first pass's mean; Σ(x − m) corrects both the mean (a float32
        # total of values around 1000 with a spread of 0.001 is off by a tenth of that spread) and Σ(x − m)².
        wide_pass = peak > HUGE or exact_kurtosis
        centre = mean if wide_pass else float(torch.tensor(mean, dtype=torch.float32))
        m1 = m2 = m3 = m4 = 0.0
        for block in blocks():
            values = block.reshape(-1)
            if nans or infs:
                values = values[torch.isfinite(values)]
            if wide_pass:
                centred = values.double() - centre
            else:
                widened = _SCRATCH.get("widen")
                if block.dtype != flat.dtype and widened is not None and values.data_ptr() == widened.data_ptr():
                    centred = values.sub_(centre)  # already a private copy
                else:
                    centred = torch.sub(values, centre, out=_scratch(tuple(values.shape), "centre"))
            piece_sum, piece_squares = _sum_and_squares(centred, 0.0) if centred.dtype == torch.float32 else (
                float(centred.sum()), float(torch.dot(centred, centred)))
            m1 += piece_sum
            m2 += piece_squares
            if exact_kurtosis:  # at most EXACT_KURTOSIS_MAX values: float64 is cheap
                wide = centred.double()
                cubes = wide * wide * wide
                m3 += float(cubes.sum())
                m4 += float(torch.dot(cubes, wide))
        shift = m1 / n
        mean = centre + shift
        variance = max(m2 / n - shift * shift, 0.0)
        if exact_kurtosis and variance > 0:
            # The fourth moment about the corrected mean, from the moments about `centre`.
            fourth = m4 / n - 4 * shift * m3 / n + 6 * shift * shift * m2 / n - 3 * shift ** 4
            kurtosis = fourth / (variance * variance) - 3.0
        elif exact_kurtosis:
            kurtosis = float("nan")
        else:
            kurtosis = _sample_kurtosis(flat, count, nans + infs > 0)
    zero_rows = duplicate_rows = duplicate_cols = zero_col_count = None
    zero_index: list[int] = []
    if not flat_blocks:
        assert col_keys is not None
        keys = torch.cat(row_keys)
        # A zero row projects to exactly 0; other rows almost never do. Candidates are checked exactly.
        dead = torch.zeros(matrix.shape[0], dtype=torch.bool)
        for row in (keys == 0).nonzero().flatten().tolist():
            # `!= 0`, not count_nonzero: torch has no count_nonzero for float8 on CPU (an FP8 checkpoint's zero
            # row raised NotImplementedError); the same verdict (NaN is nonzero, -0.0 zero).
            dead[row] = not bool((matrix[row] != 0).any())
        zero_rows = int(dead.sum())
        zero_index = dead.nonzero().flatten()[:MAX_LISTED].tolist()
        zero_cols = torch.zeros(matrix.shape[1], dtype=torch.bool)
        for col in (col_keys == 0).nonzero().flatten().tolist():
            zero_cols[col] = not bool((matrix[:, col] != 0).any())
        zero_col_count = int(zero_cols.sum())
        if variance > 0:
            # Short lines repeat by chance (single bf16 values do, all the time): only lines of at least
            # MIN_LINE values are compared; the others stay None ("not checked").
            min_line = MIN_LINE_1_BYTE if matrix.element_size() == 1 else MIN_LINE
            if matrix.shape[1] >= min_line:
                duplicate_rows = _equal_lines(matrix, keys, dead, by_row=True)
            if matrix.shape[0] >= min_line:
                duplicate_cols = _equal_lines(matrix, col_keys, zero_cols, by_row=False)
    return TensorStats(
        count=count,
        mean=mean,
        std=math.sqrt(variance),
        min=low,
        max=high,
        abs_max=max(abs(low), abs(high)),
        zero_fraction=(n - nonzero) / n,
        nan=nans,
        inf=infs,
        kurtosis=kurtosis,
        sampled=sampled,
        zero_rows=zero_rows,
        duplicate_rows=duplicate_rows,
        duplicate_cols=duplicate_cols,
        zero_cols=zero_col_count,
        zero_row_index=tuple(zero_index),
    )


class _Lines:
    """Reads element ranges of one tensor: from memory, or straight from the file under --sample."""

    def __init__(self, checkpoint: Checkpoint, info: TensorInfo, whole: torch.Tensor | None) -> None:
        self.info = info
        self.whole = whole.reshape(-1) if whole is not None else None
        self.checkpoint = checkpoint
        self._lazy: torch.Tensor | None = None
        self._strided: torch.Tensor | None = None  # a pickle's view that is not contiguous, read by index
        self._file: tuple[str, int, int] | None = None  # path, byte offset of element 0, itemsize
        self._identity: tuple[int, int, int, int] | None = None  # the file's when its structure was read
        self._gather: Callable[[torch.Tensor], torch.Tensor] | None = None  # reads a strided view's elements
        if whole is None:
            import torch

            header = checkpoint.safetensors_header(info.file)
            # One contiguous run of its file (safetensors; most torch zip tensors): read in place, by range.
            found = checkpoint.byte_range(info.name) if header is None else None
            # Read by offset: a file replaced since its structure was read is refused, not read at the old offsets.
            self._identity = checkpoint.structure_identity(info.file)
            if header is not None and info.data_offsets is not None:
                itemsize = torch.empty((), dtype=getattr(torch, info.dtype)).element_size()
                path = str(checkpoint.file_path(info.file))
                self._file = (path, header.data_start + info.data_offsets[0], itemsize)
            elif found is not None:
                itemsize = torch.empty((), dtype=getattr(torch, info.dtype)).element_size()
                self._file = (str(found[0]), found[1], itemsize)
            elif header is None and (gather := checkpoint.element_reader(info.name)) is not None:
                # A strided view of a torch zip read without torch: its elements are read from the file by
                # position, not from a map of it (a file cut short meanwhile raised SIGBUS there), and no map is made.
                self._gather = gather
            elif header is None and (tensor := checkpoint.pickled_tensor(info.name)).is_contiguous():
                # A view of the file's map torch.load made (indexing touches only the pages it needs), or the
                # values it read (a legacy file): not copied, so not refused for its size.
                self._lazy = tensor.reshape(-1)
            elif header is None:
                # A strided view (a transposed weight): reshape(-1) would copy it whole, which the memory guard
                # refused for the whole tensor's size under --sample; its elements are indexed in place instead.
                self._strided = tensor
            else:
                self._lazy = checkpoint.load_tensor(info.name).reshape(-1)

    def _at(self, index: torch.Tensor) -> torch.Tensor:
        """The elements at `index` (C-order positions, any shape) of the strided view, without copying the rest."""
        from weightdoctor.checkpoint.reader import unravel_positions

        if self._gather is not None:
            return self._gather(index)
        assert self._strided is not None
        return self._strided[unravel_positions(index, tuple(self._strided.shape))]

    def values_at(self, index: torch.Tensor) -> torch.Tensor:
        """The elements at `index` (C-order positions, any shape) as float32, reading only those: the sampled
        columns of a long row (a row of 2**31 float32 values read whole took 8.6 GB and 70 s under --sample)."""
        import torch

        if self.whole is not None:
            return _as_float32(self.whole[index])
        if self._lazy is not None:
            return _as_float32(self._lazy[index])
        if self._strided is not None or self._gather is not None:
            return _as_float32(self._at(index))
        assert self._file is not None
        from weightdoctor.checkpoint.safetensors_format import read_values_at

        path, base, _ = self._file
        return _as_float32(read_values_at(path, base, getattr(torch, self.info.dtype), self.info.name, index,
                                          self._identity))

    def read(self, start: int, count: int, keep_float64: bool = False) -> torch.Tensor:
        """Elements [start, start+count) as float32 (float64 ones kept as they are with `keep_float64`)."""
        import torch

        narrow = _as_float32 if not keep_float64 else _widen_to_float32
        if self.whole is not None:
            return narrow(self.whole[start : start + count])
        if self._lazy is not None:
            return narrow(self._lazy[start : start + count])
        if self._strided is not None or self._gather is not None:
            return narrow(self._at(torch.arange(start, start + count)))
        assert self._file is not None
        path, base, itemsize = self._file
        buffer = bytearray(count * itemsize)
        fd = os.open(path, os.O_RDONLY)
        try:
            found = os.fstat(fd)
            if self._identity is not None and (found.st_dev, found.st_ino, found.st_size,
                                               found.st_mtime_ns) != self._identity:
                raise CorruptCheckpoint(
                    f"the file changed since its header was read (size or modification time); reading tensor "
                    f"{self.info.name!r} from it could mix old and new contents", path=path)
            # One read returns at most 2 GiB - 4 KiB on Linux: a longer run is read in turns until the file ends.
            view = memoryview(buffer)
            got = 0
            while got < len(buffer) and (step := os.preadv(fd, [view[got:]], base + start * itemsize + got)):
                got += step
        finally:
            os.close(fd)
        if got != len(buffer):
            raise CorruptCheckpoint(f"file ended while reading tensor {self.info.name!r}", path=path)
        return narrow(torch.frombuffer(buffer, dtype=getattr(torch, self.info.dtype)))

    def read_many(self, starts: list[int], count: int, keep_float64: bool = False) -> torch.Tensor:
        """Concatenate `count` elements from each start (a (len(starts), count) float32 tensor; float64 with
        `keep_float64` when the tensor is float64)."""
        import torch

        if not starts:
            return torch.empty((0, count))
        if self.whole is not None or self._lazy is not None:
            source = self.whole if self.whole is not None else self._lazy
            assert source is not None
            index = torch.tensor(starts).unsqueeze(1) + torch.arange(count).unsqueeze(0)
            return (_as_float32 if not keep_float64 else _widen_to_float32)(source[index])
        if self._strided is not None or self._gather is not None:
            index = torch.tensor(starts).unsqueeze(1) + torch.arange(count).unsqueeze(0)
            return (_as_float32 if not keep_float64 else _widen_to_float32)(self._at(index))
        return torch.stack([self.read(s, count, keep_float64) for s in starts])


def _pick(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """k distinct sorted indices out of range(n) (all of them when k >= n)."""
    import torch

    if k >= n:
        return torch.arange(n)
    if n <= 4 * k:
        return torch.randperm(n, generator=generator)[:k].sort().values
    drawn = torch.unique(torch.randint(0, n, (k + k // 4 + 16,), generator=generator))
    if drawn.numel() > k:
        drawn = drawn[torch.randperm(drawn.numel(), generator=generator)[:k]].sort().values
    return drawn


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int] | None:
    if len(shape) < 2:
        return None
    rows = shape[0]
    cols = math.prod(shape[1:])
    return (rows, cols) if rows >= 1 and cols >= 1 else None


def gather_sample(lines: _Lines, info: TensorInfo, whole: bool) -> TensorSample:
    """The classifier's bounded views of a tensor; `whole` tells whether all values are in memory."""
    import torch

    generator = torch.Generator().manual_seed(seed_for(info.name))
    n = info.num_params
    if whole and lines.whole is not None:
        flat = lines.whole
        index = _pick(n, CLASSIFIER_SAMPLE, generator)
        # float64 values stay float64: narrowed, those beyond ±3.4e38 would be dropped as inf.
        values = _widen_to_float32(flat[index] if index.numel() < n else flat)
    else:
        block = min(SAMPLE_BLOCK, n)
        slots = _pick(max(n // block, 1), max(1, CLASSIFIER_SAMPLE // block), generator)
        values = lines.read_many((slots * block).tolist(), block, keep_float64=True).reshape(-1)
    values = values[torch.isfinite(values)].clone()
    shape = _matrix_shape(info.shape)
    if shape is None:
        return TensorSample(values=values)
    rows, cols = shape
    row_index = _pick(rows, ROW_BLOCK, generator).tolist()
    if cols <= MAX_LINE and lines.whole is not None:
        row_block = _as_float32(lines.whole.reshape(rows, cols)[torch.tensor(row_index)])
        rows_complete = True
    elif cols <= MAX_LINE:
        row_block = lines.read_many([r * cols for r in row_index], cols)
        rows_complete = True
    else:
        col_index = _pick(cols, MAX_LINE, generator)
        # Only the sampled columns: a GGUF row of 2**33 values (a sparse file) read whole made 69 GB of int64
        # positions before a value was decoded, and a safetensors row of 2**31 float32 values 8.6 GB.
        row_block = torch.stack([lines.values_at(r * cols + col_index) for r in row_index])
        rows_complete = False
    col_block: torch.Tensor | None = None
    cols_complete = True
    sub: torch.Tensor | None = None
    if whole and lines.whole is not None:
        matrix = lines.whole.reshape(rows, cols)
        col_index = _pick(cols, COL_BLOCK, generator)
        if rows <= MAX_LINE:
            col_block = _as_float32(matrix.T[col_index])
        else:
            col_block = _as_float32(matrix.T[col_index][:, _pick(rows, MAX_LINE, generator)])
            cols_complete = False
    sub = row_block[:, _pick(row_block.shape[1], SUB_COLS, generator)] if row_block.shape[0] > 1 else None
    return TensorSample(values=values, rows=row_block, cols=col_block, sub=sub,
                        rows_complete=rows_complete, cols_complete=cols_complete)


def _read_whole(checkpoint: Checkpoint, info: TensorInfo) -> torch.Tensor:
    """One tensor's values. Safetensors data is read straight into an uninitialized tensor (the reader's
    zero-filled buffer costs a memset of the whole tensor); everything else goes through the reader."""
    import torch

    header = checkpoint.safetensors_header(info.file)
    dtype = getattr(torch, info.dtype, None)
    if header is None or info.data_offsets is None or dtype is None or info.num_params == 0 \
            or info.dtype == "float4_e2m1fn_x2":
        return checkpoint.load_tensor(info.name)
    begin, end = info.data_offsets
    path = str(checkpoint.file_path(info.file))
    from weightdoctor.checkpoint.safetensors_format import require_memory_for

    require_memory_for(path, info, end - begin, hint="; --sample N reads N values of each tensor instead")
    raw = torch.empty(end - begin, dtype=torch.uint8)
    view = memoryview(raw.numpy())
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < len(view):
            got = os.preadv(fd, [view[done:]], header.data_start + begin + done)
            if got == 0:
                raise CorruptCheckpoint(
                    f"file ended while reading tensor {info.name!r} (truncated or changed while reading)", path=path)
            done += got
    finally:
        os.close(fd)
    return raw.view(dtype).reshape(info.shape)


def _require_widening_buffer(checkpoint: Checkpoint, info: TensorInfo, flat: torch.Tensor) -> None:
    """Refuse, before it is made, the float32 buffer a tensor of another dtype is widened into (`_scratch`: up to
    `CHUNK` values, 4 bytes each, twice a bf16 tensor of up to 16M values) where it is more memory than is left:
    the guard admitted the tensor, and the buffer died in torch's allocator ("out of memory: torch could not
    allocate 67.11 MB", of no tensor: inspect --stats of a 33.55 MB bf16 tensor under `ulimit -d` with 48 to 96
    MiB of room, measured). None is asked where the buffer made for an earlier tensor is large enough."""
    import torch

    if flat.dtype == torch.float32 or not flat.numel():
        return
    needed = min(flat.numel(), CHUNK)
    held = _SCRATCH.get("widen")
    if held is not None and held.numel() >= needed:
        return
    from weightdoctor.checkpoint.safetensors_format import require_memory
    from weightdoctor.units import format_bytes

    require_memory(checkpoint.file_path(info.file),
                   f"tensor {info.name!r} ({format_bytes(info.nbytes)}, {info.dtype}): its float32 working copy",
                   needed * 4, "; --sample N reads N values of each tensor instead",
                   done="is made in memory beside it: no statistics were computed")


def tensor_stats(checkpoint: Checkpoint, info: TensorInfo, sample: int | None = None) -> StatsResult:
    """Read one floating tensor and compute its statistics and classifier sample.

    Args:
        checkpoint: the opened checkpoint.
        info: the tensor (must be floating: `info.is_floating`).
        sample: read only this many values (in blocks at deterministic random offsets); None reads all.
    """
    dequantized = checkpoint.load_dequantized(info.name) if checkpoint.torch_ao_quantized(info.name) else None
    if sample is not None and sample < info.num_params:
        # A torch.ao quantized tensor is sampled from its dequantized copy: its integers alone are not the weights.
        lines = _Lines(checkpoint, info, dequantized)
        import torch

        generator = torch.Generator().manual_seed(seed_for(info.name) ^ 0x5A5A)
        block = SAMPLE_BLOCK
        # Aligned, non-overlapping blocks, so that no value is read twice.
        slots = _pick(max(info.num_params // block, 1), -(-sample // block), generator)
        values = lines.read_many((slots * block).tolist(), min(block, info.num_params),
                                 keep_float64=True).reshape(-1)[:sample]
        stats = summarize_values(values, sampled=True)
        return StatsResult(info, stats, gather_sample(lines, info, whole=False))
    # reshape(-1) copies a strided view (a transposed weight of a .bin) whole: made once, and shared by the lines
    # and the statistics (each made its own, two copies of the tensor alive together).
    whole = dequantized if dequantized is not None else _read_whole(checkpoint, info)
    if not whole.is_contiguous() and whole.dim() > 1:
        from weightdoctor.checkpoint.safetensors_format import require_memory

        # The copy is memory of its own beside the view read (a map of its file): the guard admitted the view, and
        # the copy died in torch's allocator under `ulimit -d` ("DefaultCPUAllocator: can't allocate memory", of no
        # file or tensor).
        require_memory(checkpoint.file_path(info.file), f"tensor {info.name!r}", whole.numel() * whole.element_size(),
                       "; --sample N reads N values of each tensor instead",
                       done="is strided (a view saved so) and copied whole in memory: nothing was read")
    flat = whole.reshape(-1)
    del whole
    _require_widening_buffer(checkpoint, info, flat)
    lines = _Lines(checkpoint, info, flat)
    stats = summarize_values(flat, shape=tuple(info.shape))
    return StatsResult(info, stats, gather_sample(lines, info, whole=True))


def floating_tensors(checkpoint: Checkpoint, names: list[str] | None = None) -> list[TensorInfo]:
    """The tensors statistics are computed for: floating dtypes torch can widen to float32, torch.ao
    quantized tensors (listed as their integers), whose values are read dequantized (`tensor_stats`), and a
    GGUF's quantized blocks of the types read dequantized to float32 (`gguf_format.DEQUANTIZED_TYPES`)."""
    import torch

    from weightdoctor.checkpoint.gguf_format import DEQUANTIZED_TYPES

    chosen = checkpoint.tensors if names is None else [checkpoint.tensor_info(n) for n in names]
    return [t for t in chosen if (t.dtype in READABLE and hasattr(torch, t.dtype))
            or checkpoint.torch_ao_quantized(t.name) is not None
            or (t.dtype in DEQUANTIZED_TYPES and checkpoint.gguf_header(t.file) is not None)]


def iter_stats(
    checkpoint: Checkpoint,
    infos: list[TensorInfo],
    sample: int | None = None,
    advance: Callable[[int], None] | None = None,
) -> Iterator[StatsResult]:
    """Yield `StatsResult` for each tensor in turn, holding one tensor's values at a time.

    Raises:
        UsageError: `sample` is not a positive number.
    """
    if sample is not None and sample < 1:
        raise UsageError(f"--sample must be a positive number of values, not {sample}")
    from weightdoctor.checkpoint.safetensors_format import working_on

    for info in infos:
        with working_on(info):
            result = tensor_stats(checkpoint, info, sample)
        if advance is not None:
            advance(1)
        yield result


def stats_of_tensor(name: str, tensor: torch.Tensor) -> StatsResult:
    """Statistics and classifier sample of an in-memory tensor (the same code path as a checkpoint's).

    Example:
        >>> import torch
        >>> stats_of_tensor("w", torch.ones(4, 4)).stats.mean
        1.0
    """
    from weightdoctor.checkpoint import TensorInfo
    from weightdoctor.dtypes import canonical_dtype

    info = TensorInfo(name, tuple(tensor.shape), canonical_dtype(str(tensor.dtype)), "")
    flat = tensor.reshape(-1)  # one copy of a strided tensor, shared (as in `tensor_stats`)
    lines = _Lines(None, info, flat)  # type: ignore[arg-type]
    stats = summarize_values(flat, shape=tuple(info.shape))
    return StatsResult(info, stats, gather_sample(lines, info, whole=True))
