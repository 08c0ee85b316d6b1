"""What the oracle sweeps in scripts/ share: quiet libraries, the table of cases.

Imported as `from sweep_common import ...`: a script's own folder is on sys.path when it runs.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence


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
