"""Rich rendering of `CheckDtypeReport`: summary panel, per-target table, worst tensors, recommendation."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from weightdoctor.check_dtype import CheckDtypeReport, TargetReport, TensorCast, share_text, verdict_rank
from weightdoctor.render.text import escape
from weightdoctor.units import format_bytes, format_count

VERDICT_STYLE = {"safe": "green", "lossy": "yellow", "unsafe": "bold red"}


def _verdict(verdict: str) -> str:
    return f"[{VERDICT_STYLE[verdict]}]{verdict}[/]"


def _count(value: int) -> str:
    return f"{value:,}" if value else "[dim]0[/]"


def summary_table(report: CheckDtypeReport) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    source = report.source if report.source == report.resolved_path else f"{report.source} → {report.resolved_path}"
    table.add_row("source", escape(source))
    table.add_row("format", report.format)
    stored = ", ".join(
        f"{dtype}: {c.num_tensors} tensor(s), {format_count(c.num_params)} params, {format_bytes(c.bytes)}"
        for dtype, c in report.stored_dtypes.items()
    )
    table.add_row("stored", escape(stored) or "-")
    if report.mixed_storage:
        table.add_row("mixed storage", "[yellow]yes[/]: floating tensors are stored in more than one dtype")
    table.add_row("config dtype", escape(report.config_torch_dtype or "-"))
    status = report.config_agreement.status
    style = "green" if status == "agrees" else ("dim" if status in ("no-config", "not-set", "quantized") else "yellow")
    table.add_row("agreement", f"[{style}]{escape(report.config_agreement.message)}[/]")
    checked = f"{report.tensors_checked} floating tensor(s)"
    if report.filter:
        checked += f" matching /{escape(report.filter)}/"
    if report.skipped:
        checked += f"; {len(report.skipped)} left as they are (not floating)"
    table.add_row("checked", checked)
    if report.sample is not None:
        table.add_row("sample", f"[magenta]{escape(report.sample.note)}[/]")
    table.add_row("targets", ", ".join(f"{name} {_verdict(t.verdict)}" for name, t in report.targets.items()))
    return table


def target_table(report: CheckDtypeReport) -> Table:
    table = Table(title="What each cast does (tensors affected: unsafe / lossy of checked)", title_justify="left")
    for header in ("target", "verdict", "tensors", "overflow", "clamped", "underflow", "subnormal", "changed",
                   "max rel"):
        table.add_column(header, justify="left" if header in ("target", "verdict") else "right", no_wrap=True)
    for name, t in report.targets.items():
        affected = f"{t.tensors_unsafe}/{t.tensors_lossy} of {t.tensors_checked}"
        table.add_row(
            name, _verdict(t.verdict), affected, _count(t.overflow), _count(t.saturated), _count(t.underflow),
            _count(t.subnormal), share_text(t.changed_share), f"{t.max_rel_error:.3g}",
        )
    return table


def behaviour_table(report: CheckDtypeReport) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for name, t in report.targets.items():
        table.add_row(f"{name} .to()", escape(t.torch_behaviour))
    return table


def _worst_key(row: TensorCast) -> tuple[int, int, int, float]:
    return (verdict_rank(row.verdict), row.overflow + row.saturated, row.underflow, row.max_rel_error)


def worst_tensors(name: str, target: TargetReport, limit: int) -> Table | None:
    rows = sorted((r for r in target.tensors if r.verdict != "safe"), key=_worst_key, reverse=True)[:limit]
    if not rows:
        return None
    table = Table(title=f"Worst tensors for {name}", title_justify="left")
    table.add_column("tensor", overflow="fold")
    table.add_column("stored")
    table.add_column("verdict")
    table.add_column("out of range", justify="right")
    table.add_column("underflow", justify="right")
    table.add_column("max rel err", justify="right")
    table.add_column("why", overflow="fold")
    for row in rows:
        table.add_row(
            escape(row.name), row.dtype, _verdict(row.verdict), _count(row.overflow + row.saturated),
            _count(row.underflow), f"{row.max_rel_error:.3g}", escape(row.reason),
        )
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
    console.print(target_table(report))
    console.print(Panel(behaviour_table(report), title="what torch's .to() does here (measured)", title_align="left"))
    for name, target in report.targets.items():
        table = worst_tensors(name, target, worst)
        if table is not None:
            console.print(table)
    local = local_table(report)
    if local is not None:
        console.print(Panel(local, title="this machine (--local)", title_align="left"))
    memory = "  ".join(f"{name} {format_bytes(value)}" for name, value in report.recommendation.memory_bytes.items())
    body = "\n".join(f"• {escape(line)}" for line in report.recommendation.lines)
    body += f"\n[dim]memory: {memory}[/]\n[dim]{escape(report.limits)}[/]"
    console.print(Panel(body, title="recommendation", title_align="left"))
