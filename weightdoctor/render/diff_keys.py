"""Rich rendering of `DiffReport` for people: header, grouped tables, the suggested fix, value changes."""

from __future__ import annotations

import math
import re

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape as escape_markup
from rich.panel import Panel
from rich.table import Table

from weightdoctor.diff_keys import (
    ADAPTER_SAVES_WHOLE,
    DiffReport,
    KeyGroup,
    change_rank,
    reason_text,
    side_b_word,
)
from weightdoctor.errors import clip_message, current_typed_words
from weightdoctor.render.text import (
    BrokenAtSlashes,
    distinct_form,
    escape,
    hides_characters,
    printable,
    wrap_at_dots,
    wrapped_name,
)
from weightdoctor.wording import counted, plural

SEVERITY_STYLE = {"info": "cyan", "warn": "yellow", "error": "bold red"}
KIND_TITLES = {
    "missing": "Missing: in {b}, not in A (start from their init)",
    "unexpected": "Unexpected: in A, not in {b} (ignored when loading)",
    "mismatched": "Mismatched: same name, different shape",
    "dtype": "Dtype differences (A → {b})",
}


def _severity(severity: str) -> str:
    return f"[{SEVERITY_STYLE.get(severity, 'white')}]{severity}[/]"


def header(report: DiffReport) -> Table:
    side_b = side_b_word(report.mode)  # the header's B row names the model in --model-class mode
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # a path longer than the panel: folded, not cut with …
    # A path broken after a slash at the panel's width, not folded mid-name (`.../snapsho` / `ts/3c7b...`).
    table.add_row("A", BrokenAtSlashes(escape(report.source_a) + _revision(report.revision_a)
                                       + f"  [dim]{counted(report.total_a, 'key')}[/]"))
    table.add_row("B", BrokenAtSlashes(escape(report.source_b) + _revision(report.revision_b)
                                       + f"  [dim]{counted(report.total_b, 'key')}[/]"))
    if report.renames_applied:
        table.add_row("renames", escape(" ".join(report.renames_applied)))
    table.add_row("matched", f"[green]{report.matched:,}[/] of {counted(report.total_b, 'key')} of {side_b}")
    counts = (
        f"missing {len(report.missing):,} · unexpected {len(report.unexpected):,} · "
        f"mismatched {len(report.mismatched):,} · dtype differences {len(report.dtype_differences):,}"
    )
    table.add_row("differences", counts)
    verdict = (
        f"[green]A loads into {side_b} cleanly[/]" if report.worst_severity is None
        else f"worst severity: {_severity(report.worst_severity)}"
    )
    if report.from_pretrained_reads_a is False:  # the keys compared are not what from_pretrained(A) reads
        verdict = (f"what A holds loads into {side_b} cleanly" if report.worst_severity is None else verdict) + \
            "; [yellow]from_pretrained(A) itself does not read it as it is (see the note)[/]"

    table.add_row("verdict", verdict)
    return table


def _shown_key(group: KeyGroup, report: DiffReport) -> str:
    """The keys a row names: the group's pattern, or its one key where the pattern is also another kind's (one
    expert renumbered, `experts.9.w1` for `experts.2.w1`: `model.layers.*.experts.*.w1.weight` both missing and
    unexpected, which told nothing of which)."""
    if group.count == 1 and any(other.pattern == group.pattern and other.kind != group.kind
                                for other in report.groups):
        return group.example
    return group.pattern


def group_table(kind: str, groups: list[KeyGroup], report: DiffReport, show_all: bool,
                width: int | None = None) -> Table:
    b_name = side_b_word(report.mode)
    title = KIND_TITLES[kind].format(b=b_name)
    # The weights of B an adapter saves whole (modules_to_save) are missing under B's names too: the adapter's copy
    # replaces them on load, so they start from no init either ("start from their init; adapter-base: ..." was said
    # of an adapter whose only other missing keys were its base's).
    saved_whole = kind == "missing" and all(detail.startswith(ADAPTER_SAVES_WHOLE)
                                            for _, reason, _, detail in _rows(report, kind) if reason == "adapter")
    if kind == "missing" and groups and all(g.reason == "adapter-base" for g in groups):
        # An adapter against its base: its loader (PeftModel.from_pretrained, load_lora_weights) takes these from the
        # base, as the reasons' legend says, where "start from their init" said they would be left at random.
        title = title.replace("(start from their init)", "(the base supplies them)")
    elif kind == "missing" and groups and all(
            g.reason == "adapter-base" or (g.reason == "adapter" and saved_whole) for g in groups):
        title = title.replace("(start from their init)",
                              "(the base supplies them; the adapter, the ones it saves whole)")
    elif kind == "missing" and any(g.reason == "adapter-base" for g in groups):
        title = title.replace("(start from their init)", "(start from their init; adapter-base: from the base)")
    if kind == "missing" and any(g.reason == "expert-numbering" for g in groups):
        # Stacked from A's experts by their order, not their numbers (or not at all, where a projection lacks one):
        # "start from their init" said they would be left at random.
        says = "filled from A's experts out of order, or from_pretrained raises: see each row"
        title = title.replace("(start from their init)", f"({says})" if all(
            g.reason == "expert-numbering" for g in groups) else f"(start from their init; expert-numbering: {says})")
    table = Table(title=title, title_justify="left", show_lines=False)
    # At the console's width, keys break after a dot (`...attention.` / `self.query.lora_A.weight`) and the detail
    # keeps its longest word (a --rename flag) whole, rather than either being cut mid-word by Rich's fold.
    rows = [(_shown_key(g, report), str(g.count), g.reason, g.severity) for g in groups] if not show_all else \
        [(name, "", reason, severity) for name, reason, severity, _ in _rows(report, kind)]
    keys_width = detail_width = None
    if width and rows:
        fixed = sum(max(len(header), *(len(r[i]) for r in rows))
                    for i, header in ((1, "×"), (2, "reason"), (3, "severity")))
        room = width - fixed - 16  # 6 borders, 10 spaces of padding: what keys and detail share
        words = [w for d in _details(report, kind).values() for w in d.split()]
        detail_floor = min(max(map(cell_len, words), default=6), 32, room // 2)
        keys_width = min(max(cell_len(r[0]) for r in rows), room - detail_floor)
        detail_width = max(room - keys_width, detail_floor)
        longest_word = min(max(map(cell_len, words), default=0), 32)
        # The keys' column holds their longest dotted segment whole (up to 32 cells), at least _KEYS_FLOOR.
        segment = min(max(cell_len(part) for r in rows for part in r[0].split(".")) + 1, 32)
        # The detail keeps up to a third of the room (no more than its longest text) where the keys still hold
        # their longest segment: given only its longest word, "not used by B, dropped" took four lines of 7 cells
        # beside 39 cells of keys.
        longest_detail = max(map(cell_len, _details(report, kind).values()), default=0) + 5  # 5: "e.g. "
        share = min(longest_detail, room // 3, room - max(_KEYS_FLOOR, segment))
        if share > (detail_width or 0):
            keys_width = min(max(cell_len(r[0]) for r in rows), room - share)
            detail_width = room - keys_width
        if keys_width < min(max(_KEYS_FLOOR, segment), max(cell_len(r[0]) for r in rows)) \
                or detail_floor < min(longest_word, _KEYS_FLOOR) \
                or room < 0:
            return _stacked_groups(table.title or "", kind, groups, report, show_all, width)
    table.add_column("keys", overflow="fold")
    table.add_column("×", justify="right")
    table.add_column("reason")
    table.add_column("severity")
    table.add_column("detail", overflow="fold", max_width=detail_width)
    details = _details(report, kind)
    said = ""
    for group in groups:
        if show_all:
            continue
        pattern = _wrapped(_shown_key(group, report), keys_width)
        detail = details.get(group.example, "")
        if group.count > 1 and detail and not detail.startswith("--rename"):
            detail = f"e.g. {detail}"
        shown, said = _said_once(detail, said)
        table.add_row(pattern, str(group.count) if group.count > 1 else "", group.reason,
                      _severity(group.severity), shown if shown is not None else _wrapped_words(detail, detail_width))
    if show_all:
        for name, reason, severity, detail in _rows(report, kind):
            shown, said = _said_once(detail, said)
            table.add_row(_wrapped(name, keys_width), "", reason, _severity(severity),
                          shown if shown is not None else _wrapped_words(detail, detail_width))
    return table


# What a row says in place of the rename the row above it gave: a prefix's groups (`bert.embeddings.*`,
# `bert.encoder.layer.*`, `bert.pooler.*`) all take the one flag, and at 80 columns `--rename '^=bert.'` took two
# lines in each of them, the keys no easier to tell apart for it.
SAME_RENAME = "same rename"


def _said_once(detail: str, said: str) -> tuple[str | None, str]:
    """The detail cell to show in place of `detail` where it repeats the rename flag the row above gave (`said`),
    else None; and the rename now said."""
    if not detail.startswith("--rename"):
        return None, ""
    if detail == said:
        return f"[dim]{SAME_RENAME}[/]", said
    return None, detail


# Below this many cells for the keys (wrapped_name's floor), or for a detail word (its longest if shorter), the
# columns cannot sit side by side without Rich cutting names mid-segment (`bert.embedd` / `ings.LayerN`), words
# (`initialize` / `d`) and the reason and severity themselves (`unkno…`): each group is told in lines of its own.
_KEYS_FLOOR = 16


def _stacked_groups(title: str, kind: str, groups: list[KeyGroup], report: DiffReport, show_all: bool,
                    width: int) -> Table:
    """`group_table` for a very narrow console: per group, its keys (broken after dots), then its reason,
    severity and count on one line, then the detail, wrapped between words."""
    table = Table(title=title, title_justify="left", show_header=False, show_lines=True)
    table.add_column(overflow="fold")
    inner = width - 4  # two borders, two spaces of padding
    details = _details(report, kind)
    if show_all:
        rows = [(name, 1, reason, severity, detail) for name, reason, severity, detail in _rows(report, kind)]
    else:
        rows = []
        for group in groups:
            detail = details.get(group.example, "")
            if group.count > 1 and detail and not detail.startswith("--rename"):
                detail = f"e.g. {detail}"
            rows.append((_shown_key(group, report), group.count, group.reason, group.severity, detail))
    said = ""
    for key, count, reason, severity, detail in rows:
        figures = f"{reason} · {_severity(severity)}" + (f" · ×{count}" if count > 1 else "")
        cell = f"{wrapped_name(key, inner)}\n{figures}"
        shown, said = _said_once(detail, said)
        if detail:
            cell += f"\n{shown if shown is not None else _wrapped_words(detail, inner)}"
        table.add_row(cell)
    return table


def _wrapped_words(text: str, width: int | None) -> str:
    """`text` escaped for markup, each word longer than `width` (a tensor name in a detail) broken after dots."""
    if "--rename" not in text:
        # A name in it shows as its key column does (`cafe\u0301.*`, not `café.*`); a flag stays as written, to be
        # copied: re.sub's replacement takes no `\u` escape.
        text = distinct_form(text)
    if width is None or width < 16 or cell_len(text) <= width:
        return escape(text)
    text = printable(text)  # escaped once, whole: a tag can span words and lines (`[red` / `x]`)
    return escape_markup(" ".join("\n".join(wrap_at_dots(word, width)) if cell_len(word) > width else word
                                  for word in text.split(" ")))


def _wrapped(name: str, width: int | None) -> str:
    """`name` escaped for markup, broken after dots to fit `width` (see `wrap_at_dots`)."""
    return wrapped_name(name, width)


def _rows(report: DiffReport, kind: str) -> list[tuple[str, str, str, str]]:
    if kind == "missing":
        return [(i.name, i.reason, i.severity, i.detail) for i in report.missing]
    if kind == "unexpected":
        return [(i.name, i.reason, i.severity, i.detail) for i in report.unexpected]
    if kind == "mismatched":
        return [(m.name, m.reason, m.severity, m.detail) for m in report.mismatched]
    return [(d.name, f"{d.dtype_a}→{d.dtype_b}", d.severity, "") for d in report.dtype_differences]


def _details(report: DiffReport, kind: str) -> dict[str, str]:
    return {name: detail for name, _, _, detail in _rows(report, kind)}


def reasons_legend(report: DiffReport) -> Table | None:
    used = list(dict.fromkeys(g.reason for g in report.groups if g.kind != "dtype"))
    if not used:
        return None
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(style="dim")
    for reason in used:
        table.add_row(reason, reason_text(reason, report.notes, side_b_word(report.mode)))
    return table


def print_fix(report: DiffReport, console: Console) -> None:
    """The suggested fix under a rule, not in a panel: its flags, its re-check command and its Python snippet are
    copied from the terminal into a shell or into training code, and a panel's borders came along with them, as did
    the line breaks Rich put into a long command to fit it (soft wrapping leaves breaking to the terminal)."""
    if not report.suggested_renames:
        return
    flags = " ".join(r.flag for r in report.suggested_renames)
    console.rule("[bold]suggested fix[/]", align="left")
    console.print(f"[bold]{escape(flags)}[/]", soft_wrap=True)
    if distinct_form(flags) != flags or hides_characters(flags):
        # `--rename '^café\.=café.'` of an NFD key to its NFC form read as a rename of a name to itself.
        console.print("[dim]its two sides differ in Unicode form or in characters a terminal does not show, not in "
                      "how they look: copy it as it is (the Python snippet writes them with escapes)[/]",
                      soft_wrap=True)
    if report.matched_after_renames is not None:
        console.print(
            f"[dim]with these renames {report.matched_after_renames:,} of {counted(report.total_b, 'key')} "
            f"{plural(report.matched_after_renames, 'matches', 'match')} (now {report.matched:,}); re-check "
            f"with:[/] weightdoctor diff-keys {_recheck(report)} "
            f"{escape(' '.join([*report.renames_applied, flags]))}", soft_wrap=True, highlight=False)
    if report.convert_args and report.matched_after_renames == report.total_b \
            and any(group.reason == "wrapper-prefix" for group in report.groups) \
            and all(group.reason in ("wrapper-prefix", "tied-weight") for group in report.groups):
        # Only a wrapper's prefix (DDP's module., torch.compile's _orig_mod.) stood between A and B: a renamed copy
        # of A loads as it is, where the flags alone said how to re-check and the snippet how to rename in code.
        # An output layer tied to the embeddings, which torch.save keeps under both names (a DDP GPT-2's
        # module.lm_head.weight), is re-tied on load: the copy loads all the same.
        console.print(f"[dim]or write a renamed copy of A once:[/] weightdoctor convert "
                      f"{escape(' '.join([report.convert_args, *report.renames_applied, flags]))}",
                      soft_wrap=True, highlight=False)
    if report.python_snippet:
        console.print()
        console.print(report.python_snippet, soft_wrap=True, highlight=False, markup=False)


def _recheck(report: DiffReport) -> str:
    if report.recheck_args:
        return escape(report.recheck_args)
    from weightdoctor.paths import shell_word

    # Quoted: a path with a space ("train ckpt.pt") pasted unquoted was read as two arguments.
    if report.mode == "model-class":
        return f"{escape(shell_word(report.source_a, argument=True))} --model-class {report.model_class}"
    return f"{escape(shell_word(report.source_a, argument=True))} {escape(shell_word(report.source_b, argument=True))}"


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "inf"
    if math.isnan(value):
        return "nan"
    return f"{value:.3g}"


def _name_width(width: int | None, other_cells: list[list[str]]) -> int | None:
    """The cells a table's first column (a tensor or layer name) has at the console's `width` beside columns whose
    header and cells are `other_cells` (each column's widest text), or None where no width is known."""
    if width is None:
        return None
    borders_and_padding = 3 * len(other_cells) + 4  # a border and two spaces a column, one border to close
    return width - borders_and_padding - sum(max(map(cell_len, column)) for column in other_cells)


def values_tables(report: DiffReport, show_all: bool, width: int | None = None) -> list[Table]:
    """The values tables; at the console's `width`, tensor and layer names break after a dot (Rich's fold cut
    `...intermediate.dense.bi` / `as` and `...output.Laye` / `rNorm.bias` at 80 columns)."""
    if report.values is None:
        return []
    identical = sum(1 for v in report.values if v.identical)
    table = Table(
        title=f"Values: {identical:,} of {len(report.values):,} "
              f"common {plural(len(report.values), 'tensor')} identical", title_justify="left"
    )
    table.add_column("tensor", overflow="fold")
    table.add_column("max |A−B|", justify="right")
    table.add_column("‖A−B‖/‖B‖", justify="right")
    table.add_column("dtypes")
    # Most changed first, as the layers are ranked (`change_rank`): a NaN change before all, the infinite ones of a
    # tensor all zeros in B after the finite ones, by their max |A−B|. A NaN key would leave sorted() with no order at
    # all: an overflowed tensor landed mid-table.
    changed = sorted((v for v in report.values if not v.identical),
                     key=lambda v: change_rank(v.rel_change, v.max_abs_diff))
    rows = [(row.name, _fmt(row.max_abs_diff), _fmt(row.rel_change),
             row.dtype_a if row.dtype_a == row.dtype_b else f"{row.dtype_a}→{row.dtype_b}")
            for row in (changed if show_all else changed[:20])]
    names_width = _name_width(width, [[header, *(row[i] for row in rows)]
                                      for i, header in ((1, "max |A−B|"), (2, "‖A−B‖/‖B‖"), (3, "dtypes"))])
    for name, max_abs, rel, dtypes in rows:
        table.add_row(wrapped_name(name, names_width), max_abs, rel, dtypes)
    if not show_all and len(changed) > 20:
        table.caption = f"{len(changed) - 20} more changed tensors; use --all"
    tables = [table]
    if report.layers_changed_most:
        layers = Table(title="Layers changed most", title_justify="left")
        layers.add_column("layer", overflow="fold")
        layers.add_column("tensors", justify="right")
        # The tensors table's quantity over the layer's tensors together: one name for it, ‖A−B‖/‖B‖.
        layers.add_column("‖A−B‖/‖B‖", justify="right")
        # The size of a change whose ‖A−B‖/‖B‖ is inf (B all zeros there), by which those layers are ranked.
        layers.add_column("max |A−B|", justify="right")
        figures = [(str(layer.tensors), "identical" if layer.identical else _fmt(layer.rel_change),
                    "0" if layer.identical else _fmt(layer.max_abs_diff))
                   for layer in report.layers_changed_most]
        layers_width = _name_width(width, [["tensors", *(f[0] for f in figures)],
                                           ["‖A−B‖/‖B‖", *(f[1] for f in figures)],
                                           ["max |A−B|", *(f[2] for f in figures)]])
        for layer, (tensors, rel, max_abs) in zip(report.layers_changed_most, figures, strict=True):
            layers.add_row(wrapped_name(layer.layer, layers_width), tensors, rel, max_abs)
        tables.append(layers)
    return tables


def render_diff_keys(report: DiffReport, console: Console, show_all: bool = False) -> None:
    """Print the report: header, grouped missing / unexpected / mismatched / dtype tables, fix, values."""
    console.print(Panel(header(report), title="[bold]weightdoctor diff-keys[/]", title_align="left"))
    for kind in ("missing", "unexpected", "mismatched", "dtype"):
        groups = [g for g in report.groups if g.kind == kind]
        if groups:
            console.print(group_table(kind, groups, report, show_all, console.width))
    legend = reasons_legend(report)
    if legend is not None:
        console.print(Panel(legend, title="reasons", title_align="left"))
    print_fix(report, console)
    for table in values_tables(report, show_all, console.width):
        console.print(table)
    for note in report.notes:
        text, commands = _commands_out(note)
        # Cut as an error or warning line is: a note quotes the file's own text (a model_type of a megabyte, twice).
        console.print(f"[dim]note: {escape(clip_message(text, typed=current_typed_words()))}[/]")
        for command in commands:  # whole, on a line of its own: wrapped in the note, a convert pasted as two lines
            console.print(escape(command), soft_wrap=True, highlight=False)


# Where a command a note gives starts; it ends at the note's end or at a `,` `;` or `)` outside its quotes (its
# words are shell-quoted, so none of these ends a word of its own).
# A conversion script an installed library ships, run as a module (weightdoctor.converters), is one too.
_COMMAND = re.compile(r"\bweightdoctor (?:convert|diff-keys|check-dtype|plan-devices|shard|inspect) "
                      r"|\bpython -m (?:transformers|diffusers)\.[\w.]+ ")
# Where a Python call a note gives to paste starts (the PeftModel.from_pretrained that loads an adapter onto B, its
# paths as Python literals), with the imports before it that make it run pasted into a fresh interpreter; it ends at
# its closing parenthesis. Folded into the note at the terminal's width, a newline fell inside a path's literal:
# pasted, a SyntaxError.
_CALL = re.compile(r"\b(?:import [\w., ]+; (?:\w+ = )?)?peft\.PeftModel\.from_pretrained\(")


def _end_of_command(note: str, at: int) -> int:
    """Where the command starting before `at` ends: the first `,` `;` or `)` outside its quotes, or the note's end."""
    quote = ""
    while at < len(note):
        char = note[at]
        if quote:
            if char == "\\" and quote != "'":  # an escaped character inside $'...' or "..."
                at += 1
            elif char == quote[-1]:
                quote = ""
        elif note.startswith("$'", at):
            quote, at = "$'", at + 1
        elif char in "'\"":
            quote = char
        elif char in ");" or (char == "," and note[at + 1:at + 2] in ("", " ")):
            return at
        at += 1
    return len(note)


def _end_of_call(note: str, at: int) -> int:
    """Just past the parenthesis that closes the call whose `(` is before `at` (Python's quotes: a `'` or `"` string
    literal, with backslash escapes), or the note's end."""
    depth, quote = 1, ""
    while at < len(note):
        char = note[at]
        if quote:
            if char == "\\":
                at += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return at + 1
        at += 1
    return len(note)


def _commands_out(note: str) -> tuple[str, list[str]]:
    """`note` with each command it gives said as "the command below" (each Python call to paste, "the call below"),
    and those commands and calls in order.

    Example:
        >>> _commands_out("write it first (weightdoctor convert 'a b.pt' -o m.safetensors)")
        ('write it first (the command below)', ["weightdoctor convert 'a b.pt' -o m.safetensors"])
        >>> note, calls = _commands_out("load it with import peft, transformers; model = peft.PeftModel.from_"
        ...                             "pretrained(transformers.AutoModel.from_pretrained('b (1)'), 'a'), or merge it")
        >>> note, calls[0][:60]
        ('load it with the call below, or merge it', 'import peft, transformers; model = peft.PeftModel.from_pretr')
    """
    commands: list[str] = []
    while True:
        found = min((match for match in (_COMMAND.search(note), _CALL.search(note)) if match is not None),
                    key=lambda match: match.start(), default=None)
        if found is None:
            return note, commands
        if found.re is _CALL:
            end, said = _end_of_call(note, found.end()), "the call below"
        else:
            end, said = _end_of_command(note, found.end()), "the command below"
        commands.append(note[found.start():end].rstrip())
        note = f"{note[:found.start()]}{said}{note[end:]}"


def _revision(revision: str | None) -> str:
    return f" [dim](revision {escape(revision)})[/]" if revision else ""
