"""What the oracle sweeps in scripts/ share: quiet libraries, the table of cases.

Imported as `from sweep_common import ...`: a script's own folder is on sys.path when it runs.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def quiet_libraries() -> None:
    """Silence warnings, logging and transformers' progress bars: a sweep prints one line per case, nothing else."""
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[int | None]) -> None:
    """One line per row, columns padded: a width of None is the column's widest cell (the case names)."""
    sizes = [w if w is not None else max([len(headers[i]), *(len(r[i]) for r in rows)]) for i, w in enumerate(widths)]
    for cells in [headers, *rows]:
        print("  ".join(f"{cell:<{size}}" for cell, size in zip(cells[:-1], sizes, strict=False)) + "  " + cells[-1])


def only_these(parser: argparse.ArgumentParser, cases: Mapping[str, T], only: Sequence[str] | None) -> dict[str, T]:
    """The cases `--only` names, in the order given (all of them without `--only`); an unknown name is a usage
    error that lists the known ones."""
    if not only:
        return dict(cases)
    unknown = [name for name in only if name not in cases]
    if unknown:
        parser.error(f"unknown architecture(s) {', '.join(unknown)}: {', '.join(cases)}")
    return {name: cases[name] for name in only}


def unique_nbytes(tensors: Mapping[str, torch.Tensor]) -> int:
    """Tensor bytes with a storage shared by several names counted once (huggingface_hub's total_size)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for tensor in tensors.values():
        key = (tensor.untyped_storage().data_ptr(), tensor.nbytes)
        if key not in seen:
            seen.add(key)
            total += tensor.nbytes
    return total


def summary(counts: Mapping[str, int], architectures: int | None = None, started: float | None = None) -> int:
    """Print the closing line of an equal / different / error sweep; its exit status: 1 on any difference or error.

    `architectures`, `started` (a `time.monotonic()` reading): said too when given."""
    total = counts["equal"] + counts["different"] + counts["error"]
    head = f"architectures: {architectures}  " if architectures is not None else ""
    tail = f"  ({time.monotonic() - started:.0f} s)" if started is not None else ""
    print(f"\n{head}cases: {total}  equal: {counts['equal']}  different: {counts['different']}  "
          f"errors: {counts['error']}{tail}")
    return 0 if counts["different"] == counts["error"] == 0 else 1
