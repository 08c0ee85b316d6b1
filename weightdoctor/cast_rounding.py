"""diff-keys --values: whether a changed tensor differs from the other side by a cast's rounding alone."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from weightdoctor.diff_keys import _PLAIN_FLOATS, VALUE_CHUNK, ValueDiff, _first_names, _pieces

if TYPE_CHECKING:
    import torch


# Two checkpoints of one model whose values differ by a cast alone (an fp16 file with one tensor saved through
# bfloat16 and back, bf16 and fp16 copies of one fp32 model) showed a change per tensor, ‖A−B‖/‖B‖ ~ 0.002, and
# nothing said it was rounding, not training. The dtypes a cast may round to, the coarser mantissa first.
# Each with its precision in bits (the implicit one included) and its smallest step (a subnormal's).
_ROUNDING_DTYPES = {"bfloat16": (8, 2.0 ** -133), "float16": (11, 2.0 ** -24)}
_PRECISION = {"torch.float64": (53, 2.0 ** -1074), "torch.float32": (24, 2.0 ** -149),
              "torch.float16": (11, 2.0 ** -24), "torch.bfloat16": (8, 2.0 ** -133)}


def cast_rounding(a: torch.Tensor, b: torch.Tensor, chunk: int = VALUE_CHUNK) -> str | None:
    """How a changed tensor is the other one rounded by a cast: "A is B rounded to bfloat16" where every value of A
    is a bfloat16 value (whatever dtype A then stores it in) within half a bfloat16 step of B's fp32 one, as B's
    cast to bfloat16 is, or within one step of B's float16 one, as a bfloat16 cast of the fp32 weights B is the
    float16 cast of; "B is A rounded to float16" the
    other way; None otherwise (a trained change fails on its first piece: one more look at it, not a pass over it).

    Example:
        >>> import torch
        >>> b = torch.tensor([1.001, 2.003, 3.0007], dtype=torch.float16)
        >>> cast_rounding(b.to(torch.bfloat16).to(torch.float16), b)
        'A is B rounded to bfloat16'
        >>> cast_rounding(b + 1, b) is None
        True
    """
    import torch

    if a.shape != b.shape or a.numel() == 0 or not {str(a.dtype), str(b.dtype)} <= {
            f"torch.{name}" for name in _PLAIN_FLOATS}:
        return None

    def rounded(stored: torch.Tensor, other: torch.Tensor, low: torch.dtype, bits: int, tiniest: float) -> bool:
        # Every stored value is one of `low`'s (on its grid) and within a step of the other's (half of one where the
        # other is fp32, rounded once): the two sides are casts of the same weights, whether A is B's cast or both
        # are casts of one fp32 original (then a value rounds twice on one side, and an exact comparison with B's
        # cast misses it by one step).
        on_grid = stored.to(low)
        if bool(((on_grid == other.to(low)) & (on_grid.to(stored.dtype) == stored)).all()):
            # The common case, one side the other's cast (a bf16 conversion of fp32 weights): equal after rounding
            # the other side once is within half a step, so the float64 pass below would say yes; it cost
            # seconds per 100 MB (regress 13: diff-keys --values of a 104 MB fp32 / bf16 pair, +3 to +15 s).
            return True
        wide, grid, near = stored.to(torch.float64), on_grid.to(torch.float64), other.to(torch.float64)
        both_nan = torch.isnan(wide) & torch.isnan(near)
        if not bool(((wide == grid) | both_nan).all()):
            return False
        exponent = torch.frexp(near.to(torch.float32)).exponent

        def step_of(precision: int, smallest: float) -> torch.Tensor:
            return torch.ldexp(torch.ones_like(near), exponent - precision).clamp(min=smallest)

        if once_from(other, low):
            # `other` holds values finer than any rounding dtype (fp32 weights): a cast rounds each once, to the
            # nearest, within half of `low`'s step (ties included), and half of the stored dtype's more where that
            # rounds it again (float16's subnormals, below 6e-5, hold a bfloat16 value coarser), and half a float32
            # step where a float64 side went through float32. A full step let a bf16 run that moved values by one
            # step read as a cast (review 84).
            bound = step_of(bits, tiniest) / 2
            if stored.dtype != low:
                bound = bound + step_of(*_PRECISION[str(stored.dtype)]) / 2
            if other.dtype == torch.float64:
                bound = bound + step_of(*_PRECISION["torch.float32"]) / 2
        else:
            # Both sides rounded (bf16 and fp16 copies of one fp32 model): a value rounds twice on one side, within
            # one step of `low` at the value, or of either side's own dtype where that is coarser (float16's
            # subnormals, below 6e-5, round a bfloat16 value once more when it is stored as float16).
            bound = torch.zeros_like(near)
            for precision, smallest in ((bits, tiniest), _PRECISION[str(stored.dtype)], _PRECISION[str(other.dtype)]):
                bound = torch.maximum(bound, step_of(precision, smallest))
        return bool((((wide - near).abs() <= bound) | (wide == near) | both_nan).all())

    def once_from(other: torch.Tensor, low: torch.dtype) -> bool:
        # float32 / float64 values not all on another rounding dtype's grid (an fp16 copy kept as float32 is one
        # rounding already, and a bf16 cast of its original is two roundings from it).
        if str(other.dtype) not in ("torch.float32", "torch.float64"):
            return False
        flat = other.reshape(-1)
        for name in _ROUNDING_DTYPES:
            if getattr(torch, name) == low:
                continue
            # fp32 weights leave that grid within their first values: the whole piece is read only where they do not.
            for values in (flat[:4096], flat):
                if not bool(((values.to(getattr(torch, name)).to(other.dtype) == values) | torch.isnan(values)).all()):
                    break
            else:
                return False
        return True

    def varied(tensor: torch.Tensor) -> bool:
        # A side of one value (a LayerNorm's init ones, zeros) is on every grid: against it a trained drift under
        # one step read as a cast (a fine-tuned BERT's LayerNorm weights against the untrained model's ones).
        first = next(_pieces(tensor, tensor, chunk))[0][:1]
        return any(not bool((piece == first).all()) for piece, _ in _pieces(tensor, tensor, chunk))

    def pieces() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return _pieces(a, b, chunk)

    for low_name in _ROUNDING_DTYPES:
        low = getattr(torch, low_name)
        bits, tiniest = _ROUNDING_DTYPES[low_name]
        if varied(a) and all(rounded(piece_a, piece_b, low, bits, tiniest) for piece_a, piece_b in pieces()):
            return f"A is B rounded to {low_name}"
        if varied(b) and all(rounded(piece_b, piece_a, low, bits, tiniest) for piece_a, piece_b in pieces()):
            return f"B is A rounded to {low_name}"
    return None


def cast_rounding_note(rows: Sequence[ValueDiff]) -> str:
    """What --values says of the changed tensors that differ by a cast's rounding alone, or "".

    Example:
        >>> rows = [ValueDiff("w", False, 1e-4, 2e-3, "float16", "float16", "A is B rounded to bfloat16"),
        ...         ValueDiff("v", True, 0.0, 0.0, "float16", "float16")]
        >>> print(cast_rounding_note(rows)[:68])
        1 of the 1 changed tensors differ by a cast's rounding alone: A is B
    """
    changed = [row for row in rows if not row.identical]
    rounded = [row for row in changed if row.rounded_to]
    if not rounded:
        return ""
    said: dict[str, list[str]] = {}
    for row in rounded:
        said.setdefault(row.rounded_to or "", []).append(row.name)
    ways = "; ".join(f"{way} ({_first_names(names)})" for way, names in said.items())
    rest = (": every change between them is a cast's" if len(rounded) == len(changed) else
            f"; the other {len(changed) - len(rounded)} changed otherwise")
    return (f"{len(rounded)} of the {len(changed)} changed tensors differ by a cast's rounding alone: {ways}; each "
            "value of the rounded side is one of that dtype's, within a rounding of the other side's (a save "
            f"through that dtype and back, or both cast from one fp32 original), not training{rest}")
