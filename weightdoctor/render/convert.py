"""Rich output for `convert` and `shard`: the plan, what was written, and how it was verified."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from weightdoctor.render.text import escape, shown_name
from weightdoctor.units import format_bytes, size_unit, unit_family
from weightdoctor.wording import counted


def _common_rows(plan: object) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    cast = plan.cast
    if cast:
        rows.append(("cast", _Ours(", ".join(f"{k.replace('->', ' → ')}: {counted(v, 'tensor', grouped=False)}"
                                             for k, v in cast.items()))))
    kept = plan.kept_fp32
    if kept:
        rows.append(("kept fp32", f"{counted(len(kept), 'tensor', grouped=False)} "
                                  f"({', '.join(kept[:3])}{', …' if len(kept) > 3 else ''})"))
    if plan.renamed:
        rows.append(("renamed", counted(plan.renamed, "tensor", grouped=False)))  # type: ignore[attr-defined]
    dropped = plan.dropped_aliases
    if dropped:
        rows.append(("tied", "; ".join(f"dropped {d.name} (kept {d.kept})" for d in dropped)))
    copied = plan.copied
    if copied:
        rows.append(("copied", ", ".join(copied)))
    return rows


def _written_rows(result: object) -> list[tuple[str, str]]:
    write = result.write
    if write is None:
        return [("written", "nothing (dry run)")]
    how = "byte for byte equal to the source" if write.method == "copy" else "sha256 equal to the source"
    if getattr(result.plan, "cast", None):  # type: ignore[attr-defined]
        # A cast tensor's bytes are not the source's: the hash checked is the one taken as the cast bytes were
        # written ("equal to the source" read as if the cast had lost nothing).
        how = "sha256 equal to the cast bytes written"
    rows = [("verified", f"{counted(write.tensors_verified, 'tensor', grouped=False)} re-read, {how}" if write.verified
             else "skipped (--no-verify)")]
    if write.lost:
        listed = "; ".join(write.lost[:5]) + (f"; and {len(write.lost) - 5} more" if len(write.lost) > 5 else "")
        rows.append(("lost", f"--allow-overflow: the cast lost values in {counted(len(write.lost), 'tensor')}: "
                             f"{listed}"))
    if write.replaced:
        rows.append(("replaced", ", ".join(write.replaced)))
    if write.carried_over:
        rows.append(("kept", ", ".join(write.carried_over)))
    rows.append(("time", f"{write.seconds:.2f} s"))
    return rows


class _Ours(str):
    """A row's text written here whole (dtype names, arrows), markup-safe as it is: escape() would write its
    glyphs as escapes on an ASCII console, where they are meant to read as ASCII (weightdoctor.entry)."""


def _panel(console: Console, title: str, rows: list[tuple[str, str]]) -> None:
    """`title`: markup, its pieces from the checkpoint already escaped; each row's value escaped here."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value if isinstance(value, _Ours) else escape(value))
    console.print(f"[bold]{title}[/]")
    console.print(table)


def _print_refusal(result: object, console: Console) -> None:
    """A dry run's `would_refuse`, on a line of its own: a table cell crops a long path in its middle."""
    refusal = getattr(result, "would_refuse", None)
    if refusal:
        console.print(f"[bold red]the write would be refused:[/] {escape(refusal)}", soft_wrap=True)


def render_convert(result: object, console: Console) -> None:
    """Print a ConvertResult for people."""
    plan = result.plan  # type: ignore[attr-defined]
    verb = "would convert" if result.dry_run else "converted"  # type: ignore[attr-defined]
    rows = [
        ("format", plan.format + (" (one file)" if plan.single_file else " (folder)")),
        ("tensors", f"{plan.num_tensors} ({format_bytes(plan.total_bytes)})"),
        *_common_rows(plan),
    ]
    for item in plan.files:
        rows.append(("file", f"{item.filename}  {format_bytes(item.nbytes)}, "
                            f"{counted(len(item.tensors), 'tensor', grouped=False)}"))
    if plan.index:
        rows.append(("index", plan.index))
    rows += _written_rows(result)
    _panel(console, f"{verb} {escape(str(plan.source))} → {escape(str(plan.output))}", rows)
    _print_refusal(result, console)


def render_shard(result: object, console: Console) -> None:
    """Print a ShardResult for people: the shard table, then what was written."""
    plan = result.plan  # type: ignore[attr-defined]
    # Sizes in the family --max was typed in: a `507.14 KB` shard under `--max 500KiB` (512,000 bytes) read as one
    # over the limit.
    binary = plan.units == "binary"
    if plan.max_bytes is None:
        limit = "none: one file (--max 0 / --single)"
    else:
        # A number without a unit (`--max 1e5`) is bytes: "(decimal units)" named a unit that was not typed.
        # `--max 500000B` is bytes too, in neither family's unit: it was "(decimal units)".
        read_as = (f" ({plan.units} units)" if unit_family(plan.max_text or "") else
                   "" if size_unit(plan.max_text or "") else " (no unit: bytes)")
        limit = f"{plan.max_text} = {counted(plan.max_bytes, 'byte')}{read_as}"
    verb = "would write" if result.dry_run else "wrote"  # type: ignore[attr-defined]
    rows = [
        ("format", plan.format),
        ("max shard", limit),
        ("tensors", f"{plan.num_tensors} ({format_bytes(plan.total_bytes, binary)}) in "
                    f"{counted(len(plan.shards), 'file')}"),
        *_common_rows(plan),
    ]
    if plan.index:
        rows.append(("index", plan.index))
    _panel(console, f"{verb} {escape(str(plan.source))} → {escape(str(plan.output))}", rows)
    _print_shard_lines(plan.shards, binary, console)
    _panel(console, "", _written_rows(result))
    _print_refusal(result, console)


def _print_shard_lines(shards: list, binary: bool, console: Console) -> None:
    """Each shard's name, size, tensor count and first → last tensor, as plain aligned lines rather than a table:
    names are long and must not be cut or folded. Piped (grep, a log, a script) each shard stays one line, as
    plan-devices' lines do. In a terminal narrower than a line, each shard's first and last tensors go on lines of
    their own under it (`  first`, `  → last`): a line of 158 characters was wrapped by the terminal at 80, in the
    middle of a tensor name. A name is never broken, so a grep for one still finds it whole."""
    sizes = [format_bytes(item.size_bytes, binary) + (" (> max)" if item.oversized else "") for item in shards]
    name_width = max([len(item.filename) for item in shards] + [5])
    size_width = max(map(len, [*sizes, "size"]))
    head = f"{'shard':<{name_width}}  {'size':>{size_width}}  {'tensors':>7}"
    lines = [(f"{escape(item.filename):<{name_width}}  {size:>{size_width}}  {item.num_tensors:>7}",
              shown_name(item.first or ""), shown_name(item.last or ""))
             for item, size in zip(shards, sizes, strict=True)]
    one_line = not console.is_terminal or all(
        Text.from_markup(f"{fields}  {first} → {last}", emoji=False).cell_len <= console.width
        for fields, first, last in lines)
    console.print(f"[bold]{head}  first → last[/]", soft_wrap=True)
    for fields, first, last in lines:
        if one_line:
            console.print(f"{fields}  {first} → {last}", soft_wrap=True)
        else:
            console.print(f"{fields}\n  {first}\n  → {last}", soft_wrap=True)
