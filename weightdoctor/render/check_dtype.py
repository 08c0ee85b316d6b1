"""Rich rendering of `CheckDtypeReport`: summary panel, per-target table, worst tensors, recommendation."""

from __future__ import annotations

import re

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape as escape_markup
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from weightdoctor.check_dtype import (
    DTYPE_PLACEHOLDER_SKIP,
    CheckDtypeReport,
    TargetReport,
    TensorCast,
    share_text,
    verdict_rank,
)
from weightdoctor.render.text import BrokenAtSlashes, escape, wrapped_name
from weightdoctor.units import format_bytes, format_count
from weightdoctor.wording import counted, plural

VERDICT_STYLE = {"safe": "green", "lossy": "yellow", "unsafe": "bold red"}


def _verdict(verdict: str) -> str:
    return f"[{VERDICT_STYLE[verdict]}]{verdict}[/]"


def _count(value: int) -> str:
    return f"{value:,}" if value else "[dim]0[/]"


def summary_table(report: CheckDtypeReport) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # a path longer than the panel: folded, not cut with …
    # The arrow outside escape(): it escapes what the console cannot encode, our glyphs too (render/text.py).
    source = escape(report.source) + ("" if report.source == report.resolved_path
                                      else f" → {escape(report.resolved_path)}")
    table.add_row("source", BrokenAtSlashes(source))
    table.add_row("format", report.format)
    stored = ", ".join(
        f"{dtype}: {counted(c.num_tensors, 'tensor')}, {format_count(c.num_params)} {plural(c.num_params, 'param')}, "
        f"{format_bytes(c.bytes)}"
        for dtype, c in report.stored_dtypes.items()
    )
    table.add_row("stored", escape(stored) or "-")
    if report.mixed_storage:
        table.add_row("mixed storage", "[yellow]yes[/]: floating tensors are stored in more than one dtype")
    table.add_row("config dtype", escape(report.config_torch_dtype or "-"))
    status = report.config_agreement.status
    style = "green" if status == "agrees" else ("dim" if status in ("no-config", "not-set", "quantized") else "yellow")
    table.add_row("agreement", f"[{style}]{escape(report.config_agreement.message)}[/]")
    checked = counted(report.tensors_checked, "floating tensor")
    if report.filter:
        checked += f" matching /{escape(report.filter)}/"
    rows = next(iter(report.targets.values())).tensors if report.targets else []
    if dequantized := getattr(report, "quantized_dequantized", 0):
        checked += f" ({dequantized} of them quantized GGUF tensors, read dequantized to float32 as ggml decodes them)"
    if unread := sum(not row.read for row in rows):
        checked += f", {unread} not read (their dtype casts exactly to every target)"
    # fairseq's `_float_tensor` is cast like any float (not "left as it is"), only its uninitialized value unchecked.
    placeholders = sum(t.reason == DTYPE_PLACEHOLDER_SKIP for t in report.skipped)
    if left := len(report.skipped) - placeholders:
        # A quantizer's floating scales are skipped too: "not floating" was said of GPTQ's fp16 scales.
        side = sum(t.reason.startswith("a quantizer's") for t in report.skipped)
        # A GGUF's Q4_K is no integer: floats once dequantized, its blocks not decoded here.
        gguf = sum(t.reason.startswith("a quantized GGUF type") for t in report.skipped)
        plain = left - side - gguf
        parts = [f"{plain} not floating"] if plain else []
        parts += [f"{side} quantizer {plural(side, 'scale or state', 'scales or states')}"] if side else []
        parts += [f"{gguf} quantized GGUF {plural(gguf, 'tensor')}, not read"] if gguf else []
        checked += f"; {left} left as they are ({', '.join(parts)})"
    if placeholders:
        checked += (f"; {placeholders} not checked: fairseq's dtype placeholder `_float_tensor`, uninitialized "
                    "memory the model never reads")
    table.add_row("checked", checked)
    if report.sample is not None:
        table.add_row("sample", f"[magenta]{escape(report.sample.note)}[/]")
    table.add_row("targets", ", ".join(f"{name} {_verdict(t.verdict)}" for name, t in report.targets.items()))
    return table


_TARGET_HEADERS = ("target", "verdict", "tensors", "overflow", "clamped", "underflow", "subnormal", "changed",
                   "max rel")


def target_table(report: CheckDtypeReport, width: int | None = None) -> Table:
    """One row per target; where that is wider than `width`, one row per measure and a column per target."""
    title = "What each cast does (tensors affected: unsafe / lossy of checked)"
    rows = [
        (name, _verdict(t.verdict), f"{t.tensors_unsafe}/{t.tensors_lossy} of {t.tensors_checked}",
         _count(t.overflow), _count(t.saturated), _count(t.underflow), _count(t.subnormal),
         share_text(t.changed_share), f"{t.max_rel_error:.3g}")
        for name, t in report.targets.items()
    ]
    # Each column: its widest cell (the verdict without its markup) or header, 1 space each side, 1 border.
    needed = 1 + sum(3 + max(len(header), *(_shown_len(r[i]) for r in rows))
                     for i, header in enumerate(_TARGET_HEADERS)) if rows else 0
    if width is not None and needed > width:  # a narrow console: no number is cut to `…`
        # The title wraps to the table's width: three narrow columns cut it into two lines, the second beginning
        # mid-phrase ("unsafe / lossy of checked)"). The key to the tensors row goes under the table instead.
        table = Table(title="What each cast does", title_justify="left",
                      caption="tensors: unsafe / lossy of checked", caption_justify="left")
        table.add_column("", overflow="fold")
        for row in rows:  # folded, never cut to `…`: fp8_e4m3 and fp8_e5m2 must stay apart
            table.add_column(row[0], justify="right", overflow="fold")
        for i, header in enumerate(_TARGET_HEADERS[1:], start=1):
            table.add_row(header, *(row[i] for row in rows))
        return table
    table = Table(title=title, title_justify="left")
    for header in _TARGET_HEADERS:
        table.add_column(header, justify="left" if header in ("target", "verdict") else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def behaviour_table(report: CheckDtypeReport) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for name, t in report.targets.items():
        table.add_row(f"{name} .to()", escape_markup(t.torch_behaviour))  # our words and numbers: its ± stays ±
    return table


def _shown_len(cell: str) -> int:
    """The width a cell takes once its markup (`[dim]0[/]`) is rendered."""
    return cell_len(Text.from_markup(cell).plain)


def _worst_key(row: TensorCast) -> tuple[int, int, int, float]:
    return (verdict_rank(row.verdict), row.overflow + row.saturated, row.underflow, row.max_rel_error)


def worst_tensors(name: str, target: TargetReport, limit: int, width: int | None = None) -> Table | None:
    """The `limit` worst tensors for one target; at the console's `width`, names break after a dot."""
    rows = sorted((r for r in target.tensors if r.verdict != "safe"), key=_worst_key, reverse=True)[:limit]
    if not rows:
        return None
    stored = {r.dtype for r in rows}
    one_dtype = len(stored) == 1  # then said once, in the title, and its column left out
    title = f"Worst tensors for {name}" + (f" (stored {next(iter(stored))})" if one_dtype else "")
    table = Table(title=title, title_justify="left")
    cells = [(row.dtype, row.verdict, _count(row.overflow + row.saturated), _count(row.underflow),
              f"{row.max_rel_error:.3g}") for row in rows]
    headers = ("stored", "verdict", "out of range", "underflow", "max rel err")
    shown = range(1, 5) if one_dtype else range(5)
    name_width = why_width = 0
    if width is not None:
        # What the other columns take (1 space each side and a border) leaves `room` for the name and `why`;
        # when that is tight, headers wrap between their words (`out of` / `range`).
        room = width - 7 - sum(max(len(headers[i]), *(_shown_len(c[i]) for c in cells)) + 3 for i in shown)
        if room < 40:
            headers = ("stored", "verdict", "out of\nrange", "under-\nflow", "max rel\nerr")
            room = width - 7 - sum(max(*map(len, headers[i].split("\n")), *(_shown_len(c[i]) for c in cells)) + 3
                                   for i in shown)
        # The name column holds each name's longest dotted segment whole (`post_attention_layernorm.`, up to 32
        # cells): narrower, it was cut mid-word (`post_attention_la` / `yernorm.weight`) while `why`, prose that
        # wraps between its words, kept 17 cells. `why` keeps its longest word (8 to 14 cells).
        segment = min(max(cell_len(part) for row in rows for part in _DOTTED.findall(row.name)), 32)
        why_floor = max(8, min(max(cell_len(word) for row in rows for word in row.reason.split()), 14))
        if room < max(_SIDE_BY_SIDE, segment + why_floor):
            return _stacked_worst(title, rows, cells, width)
        longest = max(cell_len(row.name) for row in rows)
        # Half the room (`why` keeps room for a few words), or the longest segment where that is more.
        name_width = min(longest, max(segment, room - 24, room // 2), room - why_floor)
        why_width = room - name_width
    table.add_column("tensor", overflow="fold")
    for i in shown:
        table.add_column(headers[i], justify="left" if i < 2 else "right")
    table.add_column("why", overflow="fold", max_width=why_width or None)
    for row, cell in zip(rows, cells, strict=True):
        values = [_verdict(cell[i]) if i == 1 else cell[i] for i in shown]
        table.add_row(wrapped_name(row.name, name_width), *values, escape(row.reason))
    return table


_DOTTED = re.compile(r"[^.]*\.|[^.]+$")  # a name's segments, each with its dot (what wrap_at_dots keeps whole)

# Below this many cells for the name and `why` together, they cannot sit side by side without Rich cutting
# words (`value(s` / `)`) and names to a few characters: each tensor is then told in lines of its own.
_SIDE_BY_SIDE = 32


def _stacked_worst(title: str, rows: list[TensorCast], cells: list[tuple[str, ...]], width: int) -> Table:
    """The worst tensors for a very narrow console: per tensor, its name (broken after dots), its figures on one
    line, and why, wrapped between words."""
    table = Table(title=title, title_justify="left", show_header=False, show_lines=True)
    table.add_column(overflow="fold")
    for row, (dtype, verdict, out_of_range, underflow, max_rel) in zip(rows, cells, strict=True):
        figures = (f"{_verdict(verdict)} · out of range {out_of_range} · underflow {underflow} · "
                   f"max rel err {max_rel}" + (f" · stored {dtype}" if len({r.dtype for r in rows}) > 1 else ""))
        table.add_row(f"[bold]{wrapped_name(row.name, width - 4)}[/]\n{figures}\n{escape(row.reason)}")
    return table


def local_table(report: CheckDtypeReport) -> Table | None:
    local = report.local
    if local is None:
        return None
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    if not local.devices:
        table.add_row("GPU", "no CUDA device")
    for gpu in local.devices:
        table.add_row(
            f"cuda:{gpu.index}",
            f"{escape(gpu.name)}, compute capability {gpu.capability}, {format_bytes(gpu.total_memory_bytes)}; "
            f"bf16 {'[green]yes[/]' if gpu.bf16 else '[red]no[/]'}, "
            f"fp8 {'[green]yes[/]' if gpu.fp8 else '[red]no[/]'} (needs ≥ 8.9)",
        )
    if local.cpu_capability:
        table.add_row("CPU", f"torch kernels: {escape(local.cpu_capability)}")
    auto = local.auto_dtype
    table.add_row('dtype="auto"', f"[bold]{escape(auto.dtype or 'unresolved')}[/] ({escape(auto.reason)})")
    for note in local.notes:
        table.add_row("note", escape(note))
    return table


def render_check_dtype(report: CheckDtypeReport, console: Console, worst: int = 5) -> None:
    """Print the summary, the per-target table, the worst tensors, the recommendation and the limits."""
    console.print(Panel(summary_table(report), title="[bold]weightdoctor check-dtype[/]", title_align="left"))
    console.print(target_table(report, console.width))
    console.print(Panel(behaviour_table(report), title="what torch's .to() does here (measured)", title_align="left"))
    for name, target in report.targets.items():
        table = worst_tensors(name, target, worst, console.width)
        if table is not None:
            console.print(table)
    local = local_table(report)
    if local is not None:
        console.print(Panel(local, title="this machine (--local)", title_align="left"))
    memory = "  ".join(f"{name} {format_bytes(value)}" for name, value in report.recommendation.memory_bytes.items())
    commands = report.recommendation.commands
    body = "\n".join(f"• {escape(_without_commands(line, commands))}" for line in report.recommendation.lines)
    # A GGUF's stored bytes are its packed blocks; every other figure is what from_pretrained(gguf_file=) holds.
    from weightdoctor.checkpoint.gguf_format import is_dequantized_dtype, is_unread_dtype

    dtypes = set(report.tensor_dtypes.values())
    label = "memory"
    if any(is_dequantized_dtype(dtype) for dtype in dtypes):
        label += ", with quantized GGUF tensors counted dequantized as from_pretrained(gguf_file=) loads them"
    if unread := sorted(dtype for dtype in dtypes if is_unread_dtype(dtype)):
        # Q8_1 / Q8_K: no loader dequantizes them (`gguf_format.UNREAD_TYPES_WORDS`), so `memory_at` keeps them.
        label += f", {' and '.join(unread)} ones as stored (nothing dequantizes them)"
    body += f"\n[dim]{label}: {memory}[/]\n[dim]{escape(report.limits)}[/]"
    console.print(Panel(body, title="recommendation", title_align="left"))
    print_commands(commands, console)


def _without_commands(line: str, commands: dict[str, str]) -> str:
    """`line` with each suggested command it quotes named instead (`print_commands` prints them whole)."""
    for command in commands.values():
        line = line.replace(f"`{command}`", "the convert command below")
    return line


def print_commands(commands: dict[str, str], console: Console) -> None:
    """Each suggested `convert` on a line of its own, after the panel: inside it, Rich broke a long command (its
    --keep-fp32 regex mid-word) to fit the border, and what was copied from the terminal did not run. Soft
    wrapping leaves the breaking to the terminal, whose copy gives the line back whole."""
    for name, command in commands.items():
        console.print(f"[dim]to write {name}, the unsafe tensors kept in fp32:[/]", soft_wrap=True)
        console.print(escape(command), soft_wrap=True, highlight=False)
