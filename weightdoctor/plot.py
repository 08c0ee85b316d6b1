"""`inspect --stats --plot PATH`: weight histograms and the std of each kind of weight across depth.

matplotlib is an optional extra (`pip install 'weightdoctor[plot]'`); it is imported only here.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from weightdoctor.errors import OutputError, UsageError
from weightdoctor.health import StatsReport, TensorHealth, depth_profile
from weightdoctor.paths import expand_output

MAX_PANELS = 12
FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def pick_tensors(report: StatsReport, selected: bool) -> list[TensorHealth]:
    """Tensors to draw: all of `report` when they were selected by --filter, else one of each kind."""
    drawable = [t for t in report.tensors if t.histogram]
    if selected:
        return drawable[:MAX_PANELS]
    chosen: list[TensorHealth] = []
    kinds: set[str] = set()
    from weightdoctor.health import LAYER_INDEX

    for item in sorted(drawable, key=lambda t: -t.stats.count):
        kind = LAYER_INDEX.sub(".{i}.", item.name)
        if kind not in kinds and len(item.shape) >= 2:
            kinds.add(kind)
            chosen.append(item)
        if len(chosen) == MAX_PANELS:
            break
    return sorted(chosen, key=lambda t: report.tensors.index(t))


def write_plot(report: StatsReport, path: str, selected: bool, inputs: list[Path] | None = None) -> Path:
    """Draw histograms and the depth profile into `path` (written whole, or not at all).

    Raises:
        UsageError: matplotlib is missing, the suffix is not an image format, or `path` is an input file.
        OutputError: the file could not be written.
    """
    target = expand_output(path)
    if target.suffix.lower() not in FORMATS:
        raise UsageError(f"--plot {path}: give a file name ending in {', '.join(FORMATS)}")
    from weightdoctor.writers.atomic import refuse_special, resolve_output

    # A loop of links (`--plot x.png` with x.png -> y.png -> x.png) is said as the output's fault, not the source's
    # ("unexpected RuntimeError: Symlink loop", blamed on the checkpoint, where pathlib raised it).
    if inputs and any(resolve_output(target, shown=path) == p.resolve() for p in inputs):
        raise UsageError(f"--plot {path} would overwrite an input file")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UsageError("--plot needs matplotlib: pip install 'weightdoctor[plot]'") from exc

    tensors = pick_tensors(report, selected)
    profile = depth_profile(report)
    columns = 3
    hist_rows = math.ceil(len(tensors) / columns) if tensors else 0
    rows = hist_rows + (1 if profile else 0)
    if rows == 0:
        raise UsageError("--plot: no floating tensor with varying values to draw")
    figure = plt.figure(figsize=(5 * columns, 3.2 * rows), constrained_layout=True)
    grid = figure.add_gridspec(rows, columns)
    for index, item in enumerate(tensors):
        axes = figure.add_subplot(grid[index // columns, index % columns])
        hist = item.histogram
        # A float64 range of ±1e308 has no finite width: it is drawn in units of its largest magnitude.
        unit = 1.0 if math.isfinite(hist["high"] - hist["low"]) else max(abs(hist["low"]), abs(hist["high"]))
        low, high = hist["low"] / unit, hist["high"] / unit
        width = (high - low) / len(hist["counts"])
        edges = [low + i * width for i in range(len(hist["counts"]))]
        axes.bar(edges, hist["counts"], width=width, align="edge", color="#4477aa")
        axes.set_title(f"{item.name}\n{item.init.describe()}", fontsize=8)
        if unit != 1.0:
            axes.set_xlabel(f"× {unit:.3g}", fontsize=7)
        axes.tick_params(labelsize=7)
    if profile:
        axes = figure.add_subplot(grid[rows - 1, :])
        for kind, points in sorted(profile.items()):
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=kind)
        axes.set_xlabel("layer")
        axes.set_ylabel("std")
        axes.set_yscale("log")
        axes.set_title("std of each kind of weight across depth")
        axes.legend(fontsize=6, ncol=2)
    refuse_special(target)
    try:
        # A part of the path that is a file (`--plot notes.txt/x.png`), or a folder that cannot be entered, failed
        # here with "cannot read or write: [Errno 20] Not a directory: '.../.weightdoctor-bkph2xln.png'", naming a
        # temporary file the user never typed and not --plot.
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".weightdoctor-", suffix=target.suffix, dir=target.parent)
    except OSError as exc:
        plt.close(figure)
        through_a_file = isinstance(exc, (NotADirectoryError, FileExistsError))
        reason = "a part of its path is a file, not a folder" if through_a_file else exc.strerror or str(exc)
        raise OutputError(f"--plot: cannot write the plot: {reason}", path=path) from exc
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=110)
        os.replace(temporary, target)
    except OSError as exc:
        raise OutputError(f"cannot write the plot: {exc.strerror or exc}", path=str(target)) from exc
    finally:
        plt.close(figure)
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target
