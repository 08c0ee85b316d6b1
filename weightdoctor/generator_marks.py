"""The marks PyTorch's CPU generator leaves on the values `normal_` draws in float32, which any update erases.

On the CPU, `Tensor.normal_` (ATen's `normal_fill`, what `torch.nn.init.normal_` and transformers' `_init_weights`
call) draws 16 uniforms u = k / 2^24 at a time and turns them into 16 normals by Box-Muller, in pairs:
x_j = mean + std·r·cos θ and x_{j+8} = mean + std·r·sin θ, with θ = 2π·u_{j+8}. So the angle of each pair,
atan2(x_{j+8} − mean, x_j − mean), lies on a grid of 2^24 steps around the circle, up to float32 rounding: where θ is
small (below `MARK_ANGLE`) float32 keeps it within a fifth of a step (AVX2 computes θ itself in float32, so larger
angles blur). Values that moved by any optimiser step, or were drawn on a GPU or by another library, sit anywhere
between two steps: a mean distance of a quarter step. A float32 matrix whose pairs still sit on the grid is bit for
bit as `normal_` drew it; one whose pairs do not was drawn elsewhere or has moved, which alone says neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

GRID_STEPS = 1 << 24  # float32 uniforms: 24 random bits
MARK_ANGLE = 0.5  # radians: below it a float32 θ keeps the grid (mean distance 0.02-0.05 of a step, measured)
# The mean distance to the grid of pairs off it: uniform on [0, 0.5] steps, mean 1/4, standard deviation 1/√48.
OFF_GRID_MEAN = 0.25
OFF_GRID_STD = 1 / math.sqrt(48)
# Marks present: the pairs' mean distance this many standard errors below a quarter step, over at least MIN_PAIRS
# pairs: values off the grid reach it with a chance of 3e-7 at most (the normal tail; less for few pairs, whose
# mean is bounded below by 0). A fresh 16 × 32 Llama k_proj holds 17-25 such pairs (z 6-7), a 64 × 32 matrix
# 59-95 (z 12-15).
MARK_SIGMAS = 5.0
MIN_PAIRS = 16
# A pair this far from the grid (in steps) is off it: drawn pairs under MARK_ANGLE stay within 0.22 (AVX2; measured
# on 65,536 draws), so no more than one in a hundred may lie beyond, and a matrix part of which moved (a position
# table whose rows past the sequences trained on got no gradient) does not read as still drawn.
OFF_GRID = 0.3
OFF_GRID_SHARE = 0.01
# Marks gone: at least MIN_GONE_PAIRS pairs (as drawn, they would stand 8 standard errors or more below a quarter
# step) whose mean distance is within GONE_SIGMAS of it.
MIN_GONE_PAIRS = 32
GONE_SIGMAS = 3.0
BLOCK = 16  # values `normal_fill` turns into normals together


@dataclass(frozen=True)
class GeneratorMarks:
    """How close the pairs of a float32 matrix's values sit to the angle grid of PyTorch's CPU `normal_`.

    Attributes:
        pairs: the pairs judged (those whose angle is under `MARK_ANGLE`).
        distance: their mean distance to the grid, in grid steps (about 0.25 off it, 0.02-0.05 as drawn).
        z: how many standard errors below a quarter step that mean is.
        off_grid: the pairs farther than `OFF_GRID` from it.
    """

    pairs: int
    distance: float
    z: float
    off_grid: int = 0

    @property
    def present(self) -> bool:
        """The values are still bit for bit as PyTorch's CPU `normal_` drew them."""
        return self.pairs >= MIN_PAIRS and self.z >= MARK_SIGMAS and self.off_grid <= OFF_GRID_SHARE * self.pairs

    @property
    def gone(self) -> bool:
        """Enough pairs to show the marks, and none shown: drawn elsewhere, or moved since."""
        return self.pairs >= MIN_GONE_PAIRS and self.z < GONE_SIGMAS


def normal_marks(rows: torch.Tensor) -> GeneratorMarks | None:
    """Judge whole rows of a float32 matrix (row length a multiple of 16, so that each row starts a block of
    `normal_fill`) against the angle grid of PyTorch's CPU `normal_` (`GeneratorMarks`); None where the rows cannot
    tell (another length, or no pair under `MARK_ANGLE`).

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> drawn = torch.empty(64, 32).normal_(0.0, 0.02)
        >>> normal_marks(drawn).present, normal_marks(drawn + 1e-4 * torch.randn(64, 32)).present
        (True, False)

    Only for an init of mean 0: beside a mean of 0.5, float32 rounds x_j to 3e-8, which blurs the angle of an
    offset of std·r = 0.02 far beyond a step.

    Args:
        rows: whole rows of the matrix, as stored (float32 values, unchanged).

    Returns:
        The marks, or None.
    """
    import torch

    if rows.dim() != 2 or rows.shape[1] % BLOCK or rows.numel() < BLOCK:
        return None
    blocks = rows.double().reshape(-1, 2, BLOCK // 2)
    theta = torch.atan2(blocks[:, 1, :], blocks[:, 0, :]).reshape(-1)
    theta = theta[(theta >= 0) & (theta < MARK_ANGLE)]
    pairs = int(theta.numel())
    if not pairs:
        return None
    steps = theta * (GRID_STEPS / (2 * math.pi))
    distances = (steps - steps.round()).abs()
    distance = float(distances.mean())
    return GeneratorMarks(pairs, distance, (OFF_GRID_MEAN - distance) * math.sqrt(pairs) / OFF_GRID_STD,
                          int((distances > OFF_GRID).sum()))
