"""`escape`: text from a checkpoint (tensor names, metadata, config values) made safe to print in Rich markup.

Rich's own `escape` guards its markup only. A pickle's keys and a safetensors `__metadata__` are arbitrary
strings: an escape sequence in one (`\x1b]0;...\x07` sets the terminal title, `\x1b[2J` clears the screen)
would reach the terminal, and bidirectional overrides would make a name read differently from what it is.
"""

from __future__ import annotations

import re

from rich.markup import escape as escape_markup

# C0 and C1 control characters, DEL, zero-width characters, line and paragraph separators (str.splitlines and
# many viewers break lines there: a name would read as two lines), bidirectional controls and Unicode tags.
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2069\ufeff"
    "\U000e0000-\U000e007f]")


def printable(text: str) -> str:
    """`text` with each control or invisible character written as its Python escape (`\\x1b`, `\\u202e`).

    Example:
        >>> printable("evil\\x1b[2J")
        'evil\\\\x1b[2J'
    """
    return _UNPRINTABLE.sub(_code, text) if _UNPRINTABLE.search(text) else text


def _code(match: re.Match[str]) -> str:
    point = ord(match.group())
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}" if point < 0x10000 else f"\\U{point:08x}"


def escape(text: str) -> str:
    """`printable(text)`, escaped for Rich markup: what every render module uses for text it did not write."""
    return escape_markup(printable(text))


_DOTTED_SEGMENT = re.compile(r"[^.]*\.|[^.]+$")


def wrap_at_dots(text: str, width: int) -> list[str]:
    """`text` as lines of at most `width` characters, broken after a dot where it can be (a tensor name then
    reads segment by segment, `...attention.output.dense.` / `bias`, not `...dense.bia` / `s`).

    Example:
        >>> wrap_at_dots("encoder.layer.0.attention.output.dense.bias", 24)
        ['encoder.layer.0.', 'attention.output.dense.', 'bias']
    """
    if width < 1 or len(text) <= width:
        return [text]
    lines: list[str] = []
    line = ""
    for part in _DOTTED_SEGMENT.findall(text):
        if len(line) + len(part) > width and line:
            lines.append(line)
            line = ""
        while len(part) > width:  # one segment longer than a line: cut it
            lines.append(part[:width])
            part = part[width:]
        line += part
    if line:
        lines.append(line)
    return lines


def wrapped_name(name: str, width: int | None, floor: int = 16) -> str:
    """`name` made printable, broken after dots to fit `width` (see `wrap_at_dots`) when `width` is at least
    `floor`, and escaped for markup as one text: Rich's tags span lines, so lines escaped one by one would let
    `[red.` / `x]` (or `[/b.` / `x]`) become a tag across the break, and a line ending in a backslash would show
    it doubled."""
    text = printable(name)
    if width is not None and width >= floor:
        text = "\n".join(wrap_at_dots(text, width))
    return escape_markup(text)
