"""Rendering of `inspect --stats`: the JSON merge into `inspect`'s object, Rich tables and histograms."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from weightdoctor.findings import Finding
from weightdoctor.health import StatsReport, TensorHealth, init_constant_vectors
from weightdoctor.render.json import to_jsonable
from weightdoctor.render.text import (
    MAX_SHOWN_NAME_CHARS,
    clip_middle,
    distinct_form,
    escape,
    longest_segment,
    printable,
    shown_name,
    wrapped_name,
)
from weightdoctor.wording import counted, non_finite_count, plural

SHORT_REASONS = {"ks": "shape", "row_spread": "row norms", "col_spread": "column norms", "top_singular": "spectrum",
                 "outliers": "outliers", "kurtosis": "tails"}
SEVERITY_STYLE = {"error": "bold red", "warn": "yellow", "info": "cyan"}
STATS_KEYS = ("count", "mean", "std", "min", "max", "abs_max", "zero_fraction", "nan", "inf", "kurtosis", "sampled",
              "zero_rows", "duplicate_rows", "duplicate_cols", "zero_cols")


def tensor_stats_json(item: TensorHealth) -> dict[str, Any]:
    return {key: getattr(item.stats, key) for key in STATS_KEYS}


def tensor_init_json(item: TensorHealth) -> dict[str, Any]:
    init = item.init
    expected = item.expected
    return {
        "label": init.label,
        "params": init.params,
        "candidates": init.candidates,
        "family": init.family,
        "reason": init.reason,
        "note": init.note,
        "description": init.describe(),
        "evidence": init.evidence,
        "expected": None if expected is None else {
            "label": expected.label, "params": expected.params, "source": expected.source,
            "confident": expected.confident, "zero_rows": list(expected.zero_rows),
            "description": expected.describe(),
        },
        "at_init": item.at_init,
    }


def merge_stats_json(inspect_json: dict[str, Any], report: StatsReport, histograms: set[str] | None = None) -> \
        dict[str, Any]:
    """Add `stats` and `init` to each entry of `tensors`, and `findings` and `weights` at the top level.

    Tensors without statistics (integer dtypes) get `stats: null` and `init: null`. `inspect_json` must be
    `to_jsonable` of the inspect report (JSON-ready already); it is filled in place and returned.
    """
    # `inspect_json` is already JSON-ready (`to_jsonable` of the inspect report, as both callers pass it): only what
    # is added here is converted, rather than the whole object again (for 100,000 tensors that second walk of every
    # row took longer than writing the text). `to_jsonable` of a JSON-ready value is that value.
    by_name = {item.name: item for item in report.tensors}
    by_name.update({alias: by_name[name] for alias, name in report.aliases.items() if name in by_name})
    for entry in inspect_json.get("tensors", []):
        item = by_name.get(entry["name"])
        entry["stats"] = None if item is None else to_jsonable(tensor_stats_json(item))
        entry["init"] = None if item is None else to_jsonable(tensor_init_json(item))
        if item is not None and histograms and item.name in histograms:
            entry["histogram"] = to_jsonable(item.histogram or None)  # null: no finite spread of values to draw
    inspect_json["findings"] = to_jsonable([
        {"severity": f.severity, "code": f.code, "tensor": f.tensor, "message": f.message, "hint": f.hint}
        for f in report.findings
    ])
    inspect_json["weights"] = to_jsonable({
        "sample": report.sample,
        "expected_from": report.expected_from,
        "model_class": report.model_class,
        "trained_share": report.trained_share,
        "state": report.state,
        "state_basis": report.state_basis,
        "skipped": report.skipped,
        "warnings": report.warnings,
        "pooled_spread": None if report.pooled is None else {
            "tensors": report.pooled.tensors, "values": report.pooled.values,
            "variance_ratio": report.pooled.variance_ratio, "z": report.pooled.z, "moved": report.pooled.moved},
        # What state_basis "constants" rests on: the vectors initialized to an exact constant, and how many left it.
        "constant_vectors": _constant_vectors_json(report),
    })
    return inspect_json


def _constant_vectors_json(report: StatsReport) -> dict[str, int] | None:
    vectors = init_constant_vectors(report.tensors)
    if not vectors:
        return None
    return {"vectors": len(vectors), "moved": sum(1 for item in vectors if item.at_init is False)}


def _num(value: float) -> str:
    return f"{value:.3g}" if value == value else "nan"


# Below these widths the tables' wrappable columns (names, inits, messages) would get fewer characters than this,
# and Rich then cut the numbers and codes to `…` (`100.…`, `checkpoint-at…`): each row is then told in lines of its
# own. A name column needs its longest dotted segment, an init column its longest word up to _MAX_WORD_COLUMN.
_MIN_TEXT_COLUMN = 8
_MAX_WORD_COLUMN = 14
_MIN_MESSAGE_COLUMN = 20


def _text_floor(cells: Iterable[str]) -> int:
    """The cells a column of prose (`normal(0, 0.02) (guess)`) should keep: its longest word, from
    _MIN_TEXT_COLUMN to _MAX_WORD_COLUMN (a longer word, a number with many digits, may fold)."""
    from rich.text import Text

    longest = max((cell_len(word) for cell in cells for word in Text.from_markup(cell).plain.split()), default=0)
    return max(_MIN_TEXT_COLUMN, min(longest, _MAX_WORD_COLUMN))


def _plain_len(markup: str) -> int:
    from rich.text import Text

    return max((Text.from_markup(line).cell_len for line in markup.split("\n")), default=0)


def _too_narrow(rows: list[tuple[str, ...]], headers: tuple[str, ...], fixed: tuple[int, ...],
                wrapped: dict[int, int], width: int) -> bool:
    """Whether a table of `rows` laid out in `width` columns would cut a cell of the `fixed` columns (numbers,
    codes) to `…`. Rich narrows the widest wrappable columns first, the fixed ones among them once the others are
    down to their width: each `wrapped` column (index: the fewest characters it should keep) has to keep that many,
    or the widest fixed column's width, whichever is more (or all of its own, when shorter): a minimum of 8 under
    a number column of 9 (`-0.000253`) cut the number to `-0.0002…` at 74 columns."""
    natural = [max(len(header), *(_plain_len(row[i]) for row in rows)) for i, header in enumerate(headers)]
    widest_fixed = max(natural[i] for i in fixed)
    needed = 1 + sum(3 + natural[i] for i in fixed) + sum(
        3 + min(natural[i], max(least, widest_fixed)) for i, least in wrapped.items())
    return needed > width


def _stacked_table(title: str, cells: list[str], caption: str | None = None) -> Table:
    """One cell per row, a rule between them: for a console too narrow for the columns. Each cell is already laid
    out in lines (a name broken after its dots, figures, prose that wraps between its words)."""
    # The console's width whole: as wide as its longest cell only, the title wrapped inside it ("(sample of 1,000" /
    # "values per tensor)").
    table = Table(title=title, title_justify="left", show_header=False, show_lines=True, caption=caption,
                  expand=True)
    table.add_column(overflow="fold")
    for cell in cells:
        table.add_row(cell)
    return table


def _text_widths(names: list[str], texts: list[list[str]], floors: list[int], room: int, header: str) -> list[int]:
    """The cells of a name column and of the prose columns beside it (`texts`, each column's cells) in `room`,
    what the other columns leave: the name keeps its longest dotted segment (narrower, a name is cut mid-word) and
    up to a third of the room, or more where the prose needs less; each prose column keeps its `floors`, and they
    share the rest, each up to its widest cell. The name column is never narrower than its `header` (names of a
    letter or two had it folded a letter a line, `n`/`a`/`m`/`e`). Given to Rich as fixed widths: left to share the
    room itself, Rich held the prose's longest word (`orthogonal(gain=0.1683))`) whole and drew the table past the
    console's edge."""
    natural = [max(_MIN_TEXT_COLUMN, *(_plain_len(cell) for cell in column)) for column in texts]
    longest = max(len(header), *(cell_len(name) for name in names))
    # The name a third of the room (more where the prose needs less), never less than its longest segment: the
    # prose, wrapped between words, folds a word only where its column is narrower than that word
    # (`initializer_rang` / `e` when the name took half of 100 columns).
    name_width = max(longest_segment(names), len(header), min(longest, max(room // 3, room - sum(natural))))
    rest = room - name_width
    # Water-filling: the narrowest prose column first takes what it needs up to an equal share of what is left, so
    # that a short column (`normal(0, 0.02)`) is whole beside a long one, which gets the rest.
    widths = list(floors)
    left = rest - sum(floors)
    for count, i in enumerate(sorted(range(len(natural)), key=natural.__getitem__)):
        extra = max(0, min(natural[i] - widths[i], left // (len(natural) - count)))
        widths[i] += extra
        left -= extra
    name_width = min(longest, name_width + left) if left > 0 else name_width
    return [name_width, *widths]


def init_table(report: StatsReport, limit: int | None, width: int | None = None) -> Table:
    """The statistics and init of each tensor: a row each, or a record each where `width` is too narrow for the
    row's numbers."""
    sampled = f" (sample of {counted(report.sample, 'value')} per tensor)" if report.sample else ""
    title = f"Weights: statistics and initialization{sampled}"
    headers = ("name", "mean", "std", "abs max", "zeros", "found", "expected at init")
    rows: list[tuple[str, ...]] = []
    for item in report.tensors if limit is None else report.tensors[:limit]:
        s = item.stats
        found = escape(item.init.describe())
        if item.init.label == "trained":
            why = [SHORT_REASONS[k] for k, v in item.init.evidence.items() if v > 1.0] or ["moved from its init"]
            found = f"[magenta]trained[/] [dim]({', '.join(why)})[/]"
        elif item.init.label == "undetermined" and (s.nan or s.inf):
            # The reason is the NaN and Inf count: said once, in red, naming only what is there (the row read
            # "undetermined (1 NaN and 0 Inf values) 1 NaN, 0 Inf").
            found = "undetermined"
        elif item.init.label == "undetermined":
            found = f"undetermined [dim]({escape(item.init.reason or '')})[/]"
        if item.init.note:
            found += f"; [green]{escape(item.init.note)}[/]"
        if s.nan or s.inf:
            found += f" [bold red]({non_finite_count(s.nan, s.inf)})[/]"
        expected = escape(item.expected.describe()) if item.expected is not None else "[dim]-[/]"
        if item.expected is not None and not item.expected.confident:
            expected += " [dim](guess)[/]"
        # An empty tensor (a zero-size dimension) has no values: its mean, std and share of zeros are none, not NaN
        # (the table said "nan ... nan%", as a tensor full of NaN would read).
        numbers = (_num(s.mean), _num(s.std), _num(s.abs_max), f"{s.zero_fraction:.1%}") if s.count else (
            ("[dim]-[/]",) * 4)
        rows.append((item.name, *numbers, found, expected))
    caption = None
    if limit is not None and len(report.tensors) > limit:
        caption = f"{len(report.tensors) - limit} more; use --all or --filter REGEX"
    names = [printable(distinct_form(clip_middle(row[0], MAX_SHOWN_NAME_CHARS))) for row in rows]
    # The name column keeps each name's longest dotted segment whole (`token_type_embeddings.`): at 80 columns it
    # got 10 cells and Rich cut names mid-word (`bert.embed` / `dings.Laye` / `rNorm.bias`). `found` and `expected`
    # keep a few words. Narrower than that, or than the figures need, each tensor is told in lines of its own.
    prose = {5: _text_floor(row[5] for row in rows), 6: _text_floor(row[6] for row in rows)}
    if width is not None and rows and _too_narrow(rows, headers, (1, 2, 3, 4),
                                                  {0: longest_segment(names), **prose}, width):
        cells = [f"[bold]{wrapped_name(row[0], width - 4)}[/]\n"
                 f"mean {row[1]} · std {row[2]} · abs max {row[3]} · zeros {row[4]}\n"
                 f"[dim]found[/] {row[5]}\n[dim]expected at init[/] {row[6]}" for row in rows]
        return _stacked_table(title, cells, caption)
    widths: list[int | None] = [None, None, None]
    if width is not None and rows:
        room = width - 22 - sum(max(len(headers[i]), *(_plain_len(row[i]) for row in rows)) for i in (1, 2, 3, 4))
        widths = list(_text_widths(names, [[row[5] for row in rows], [row[6] for row in rows]],
                                   [prose[5], prose[6]], room, headers[0]))
        rows = [(wrapped_name(row[0], widths[0], floor=1), *row[1:]) for row in rows]
    else:
        rows = [(shown_name(row[0]), *row[1:]) for row in rows]
    table = Table(title=title, title_justify="left", caption=caption)
    table.add_column("name", overflow="fold", width=widths[0])
    table.add_column("mean", justify="right")
    table.add_column("std", justify="right")
    table.add_column("abs max", justify="right")
    table.add_column("zeros", justify="right")
    table.add_column("found", overflow="fold", width=widths[1])
    table.add_column("expected at init", overflow="fold", width=widths[2])
    for row in rows:
        table.add_row(*row)
    return table


def hints_said_once(findings: list[Finding]) -> list[str | None]:
    """Each finding's hint as the table shows it: one that repeats, whole or as its start, a hint shown in full in
    an earlier row points there instead, with what it adds.

    A GPT-2 with a frozen block drew the same 480-character caveat under each of its six frozen matrices (190
    lines at 80 columns); --json keeps every hint whole.

    Example:
        >>> from weightdoctor.findings import Finding
        >>> caveat = "a layer frozen by mistake; check the training setup and the optimiser's parameter groups"
        >>> hints_said_once([Finding("warn", "untrained-tensor", "h.1.fc.weight", "m", caveat),
        ...                  Finding("warn", "untrained-tensor", "wpe.weight", "m", caveat + "; rows past ...")])
        ["a layer frozen by mistake; check the training setup and the optimiser's parameter groups", \
'as for h.1.fc.weight above; rows past ...']
    """
    shown: list[tuple[str, str]] = []  # (a hint shown in full, the row it is under)
    said: list[str | None] = []
    for finding in findings:
        hint = finding.hint
        earlier = next(((full, where) for full, where in shown if hint and hint.startswith(full)), None)
        pointer = None if earlier is None else f"as for {earlier[1]} above"
        if not hint or earlier is None or pointer is None or len(pointer) >= len(earlier[0]):
            if hint:
                # The row's name as shown (clipped, escapes for look-alikes), unescaped: the caller escapes the hint.
                shown.append((hint, distinct_form(clip_middle(finding.tensor, MAX_SHOWN_NAME_CHARS))
                              if finding.tensor else finding.code))
            said.append(hint)
        else:
            said.append(pointer + hint[len(earlier[0]):])
    return said


def findings_table(report: StatsReport, width: int | None = None) -> Table:
    """The findings: a row each, or a record each where `width` is too narrow for their codes and a message."""
    headers = ("severity", "code", "tensor", "what")
    findings = report.findings
    hints = hints_said_once(findings)
    tensors = [f.tensor or "(checkpoint)" for f in findings]
    whats = [escape(f.message) + (f"\n[dim]→ {escape(hint)}[/]" if hint else "") for f, hint in zip(findings, hints,
                                                                                                    strict=True)]
    severities = [f"[{SEVERITY_STYLE[f.severity]}]{f.severity}[/]" for f in findings]
    names = [printable(distinct_form(clip_middle(tensor, MAX_SHOWN_NAME_CHARS))) for tensor in tensors]
    rows = [(severity, f.code, shown_name(tensor), what)
            for severity, f, tensor, what in zip(severities, findings, tensors, whats, strict=True)]
    # The tensor column keeps each name's longest dotted segment whole, as the statistics table's name column does.
    if width is not None and rows and _too_narrow(rows, headers, (0, 1),
                                                  {2: longest_segment(names), 3: _MIN_MESSAGE_COLUMN}, width):
        # The severity and code first, as the table's columns read; a finding about the whole checkpoint names none.
        cells = [f"{severity} · {f.code}\n" + (f"[bold]{wrapped_name(f.tensor, width - 4)}[/]\n" if f.tensor else "")
                 + what for severity, f, what in zip(severities, findings, whats, strict=True)]
        return _stacked_table("Findings", cells)
    widths: list[int | None] = [None, None]
    if width is not None and rows:
        room = width - 13 - sum(max(len(headers[i]), *(_plain_len(row[i]) for row in rows)) for i in (0, 1))
        widths = list(_text_widths(names, [whats], [_MIN_MESSAGE_COLUMN], room, headers[2]))
        rows = [(severity, code, wrapped_name(tensor, widths[0], floor=1), what)
                for (severity, code, _, what), tensor in zip(rows, tensors, strict=True)]
    table = Table(title="Findings", title_justify="left")
    table.add_column("severity")
    table.add_column("code")
    table.add_column("tensor", overflow="fold", width=widths[0])
    table.add_column("what", overflow="fold", width=widths[1])
    for row in rows:
        table.add_row(*row)
    return table


def skipped_line(report: StatsReport, dtype_of: Mapping[str, str]) -> str | None:
    """What the statistics leave out, by dtype (`3 tensors not analysed (...): int64 ×2, complex64 ×1`), or None.

    Said, not left to the reader to find missing: a checkpoint of complex or integer tensors alone printed an empty
    table and "no findings"."""
    if not report.skipped:
        return None
    by_dtype = Counter(dtype_of.get(name, "unknown dtype") for name in report.skipped)
    kinds = ", ".join(f"{dtype} ×{count}" for dtype, count in by_dtype.most_common())
    return f"{counted(len(report.skipped), 'tensor')} not analysed (not floating point, or not decoded): {kinds}"


def render_stats(report: StatsReport, console: Console, limit: int | None = 50,
                 dtype_of: Mapping[str, str] | None = None) -> None:
    """Print the init table (or that there is nothing to put in it), what it leaves out, the checkpoint's state and
    the findings. `dtype_of`: each tensor's dtype, to say those left out by kind."""
    console.print()
    if report.tensors:
        console.print(init_table(report, limit, console.width))
    else:
        console.print("[bold]Weights: statistics and initialization[/]: no floating-point tensor to analyse")
    if (line := skipped_line(report, dtype_of or {})) is not None:
        console.print(f"[dim]{escape(line)}[/]")
    source = {"transformers": f"{report.model_class}'s own init rules (transformers, meta device)",
              "pytorch-defaults": "PyTorch defaults guessed from names and shapes"}[report.expected_from]
    share = "" if report.trained_share is None else f" ({report.trained_share:.1%} of matrix parameters moved)"
    if report.state_basis == "pooled" and report.pooled is not None and report.trained_share is not None:
        # trained_share counts the matrices that moved enough to tell alone; the state rests on the pool: both said,
        # so that "trained" beside 0.0% reads as what it is.
        # The matrices a frozen layer holds are left out of the pool (warned as untrained-tensor): its count is then
        # short of the matrices still fitting their inits, and says so.
        left_out = len(report.pooled.left_out)
        rest = "they" if report.trained_share == 0 and not left_out else \
            f"the {counted(report.pooled.tensors, 'matrix', 'matrices')} still fitting their inits" + (
                f" ({counted(left_out, 'frozen one', 'frozen ones')} left out)" if left_out else "")
        share = (f" ({report.trained_share:.1%} of matrix parameters moved enough to tell alone; pooled, {rest} "
                 f"hold {report.pooled.variance_ratio:.1%} of their inits' variance)")
    if report.state_basis == "constants" and report.trained_share is not None:
        vectors = init_constant_vectors(report.tensors)
        moved = sum(1 for item in vectors if item.at_init is False)
        # Not all of them where a layer was frozen: its own bias or norms stayed at their constants.
        share = (f" ({report.trained_share:.1%} of matrix parameters moved enough to tell alone; "
                 f"{'all' if moved == len(vectors) else f'{moved} of'} "
                 f"{counted(len(vectors), 'norm and bias vector', 'norm and bias vectors')} have left their init "
                 "constants)")
    # Two lines: as one, the model class's name put the break mid-phrase at 80, 100 and 120 columns alike.
    console.print(f"[bold]state:[/] {report.state}{share}")
    console.print(f"[bold]expected inits:[/] {escape(source)}")
    if report.findings:
        console.print(findings_table(report, console.width))
    else:
        console.print("[green]no findings[/]")


def render_histogram(item: TensorHealth, console: Console, width: int = 40) -> None:
    """A small text histogram of one tensor's values (from its classifier sample)."""
    hist = item.histogram
    shape = "×".join(map(str, item.shape))
    console.print(f"[bold]{shown_name(item.name)}[/] {shape} {item.dtype}: {escape(item.init.describe())}")
    if not hist:
        console.print("[dim](no spread of values to draw)[/]")
        return
    counts = hist["counts"]
    low, high = hist["low"], hist["high"]
    step = high / len(counts) - low / len(counts)  # (high − low) overflows for float64 ranges of ±1e308
    peak = max(counts) or 1
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right", style="dim")
    table.add_column()
    table.add_column(justify="right", style="dim")
    for i, count in enumerate(counts):
        bar = "█" * round(width * count / peak)
        table.add_row(f"{low + i * step:+.3e}", f"[cyan]{bar}[/]", str(count))
    console.print(table)
    drawn, count, finite = hist["n"], item.stats.count, item.stats.finite_count
    if drawn == count:
        console.print(f"[dim]all {counted(count, 'value')}[/]")
    elif drawn == finite:
        console.print(f"[dim]the {drawn:,} finite {plural(drawn, 'value')} of {count:,}[/]")
    else:
        console.print(f"[dim]{counted(drawn, 'value')} sampled of {count:,}[/]")
