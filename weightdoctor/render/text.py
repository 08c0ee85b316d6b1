"""`escape`: text from a checkpoint (tensor names, metadata, config values) made safe to print in Rich markup.

Rich's own `escape` guards its markup only. A pickle's keys and a safetensors `__metadata__` are arbitrary
strings: an escape sequence in one (`\x1b]0;...\x07` sets the terminal title, `\x1b[2J` clears the screen)
would reach the terminal, and bidirectional overrides would make a name read differently from what it is.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from rich.cells import cell_len, chop_cells
from rich.markup import escape as escape_markup
from rich.text import Text

from weightdoctor.errors import clip_middle

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions
    from rich.measure import Measurement

# C0 and C1 control characters, DEL, zero-width characters, line and paragraph separators (str.splitlines and
# many viewers break lines there: a name would read as two lines), bidirectional controls and Unicode tags.
# Then what a terminal draws as nothing or as a plain space (red team 38): the soft hyphen, the combining grapheme
# joiner, Hangul and Khmer fillers, variation selectors, Mongolian separators, the no-break and other non-ASCII
# spaces. `a\u00a0b` showed as `a b` and `a\u00adb` as `ab`, two other names a checkpoint can hold beside them.
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2069\ufeff"
    "\U000e0000-\U000e007f"
    "\u00a0\u00ad\u034f\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f\u2000-\u200a\u202f\u205f\u2800"
    "\u3000\u3164\ufe00-\ufe0f\uffa0\ufff9-\ufffb\U000e0100-\U000e01ef]")


def hides_characters(text: str) -> bool:
    """Whether `text` holds a character `printable` writes as an escape whatever the console: a control, an
    invisible or a space-like one."""
    return _UNPRINTABLE.search(text) is not None


def printable(text: str) -> str:
    """`text` with each control or invisible character written as its Python escape (`\\x1b`, `\\u202e`), and
    each character stdout cannot encode (an ASCII or latin-1 console) too.

    The last is what the console's error handler (`weightdoctor.entry`) would write anyway, but done here, before
    Rich measures the cell: the handler writes the reports' own glyphs as ASCII (`×` as `x`), which would show a
    name `a×b` as `axb`, another name, and a table sized for one character would shift by the escape's width.

    Example:
        >>> printable("evil\\x1b[2J")
        'evil\\\\x1b[2J'
    """
    if _UNPRINTABLE.search(text):
        text = _UNPRINTABLE.sub(_code, text)
    if text.isascii():
        return text
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return "".join(char if _encodes(char, encoding) else _code_point(ord(char)) for char in text)
    except LookupError:
        pass
    return text


@functools.lru_cache(maxsize=4096)
def _encodes(char: str, encoding: str) -> bool:
    try:
        char.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def _code(match: re.Match[str]) -> str:
    return _code_point(ord(match.group()))


def _code_point(point: int) -> str:
    """A character as its Python escape; a byte of a file name that is not UTF-8 (which Python reads as a lone
    surrogate, U+DC80 to U+DCFF) as that byte, `\\xff`, as `ls` and bash's $'...' write it: `\\udcff` named a file
    that no one could type."""
    if 0xDC80 <= point <= 0xDCFF:
        point -= 0xDC00
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}" if point < 0x10000 else f"\\U{point:08x}"


# A `[` that starts no tag (`[0-3]`, `[!0]`: a tag starts with a letter, #, / or @) right after a backslash.
# Rich turns every backslash-bracket of plain text into a bare `[`, tag or not, while its `escape` doubles only
# the backslashes before a tag: a regex quoted in a message (`layer\.\[0\-3\]`) lost a backslash, and read as
# another expression.
_BACKSLASH_BEFORE_NON_TAG = re.compile(r"(?<=\\)\[(?![a-z#/@][^[]*?])")


def escape(text: str) -> str:
    """`printable(text)`, escaped for Rich markup: what every render module uses for text it did not write."""
    return _BACKSLASH_BEFORE_NON_TAG.sub(r"\\[", escape_markup(printable(text)))


_DOTTED_SEGMENT = re.compile(r"[^.]*\.|[^.]+$")


def wrap_at_dots(text: str, width: int) -> list[str]:
    """`text` as lines of at most `width` screen cells, broken after a dot where it can be (a tensor name then
    reads segment by segment, `...attention.output.dense.` / `bias`, not `...dense.bia` / `s`). Cells, not
    characters: a CJK character takes two, so a line counted in characters would overflow and Rich would cut it.

    Example:
        >>> wrap_at_dots("encoder.layer.0.attention.output.dense.bias", 24)
        ['encoder.layer.0.', 'attention.output.dense.', 'bias']
        >>> wrap_at_dots("编码器.层.0.注意力.权重", 10)
        ['编码器.层.', '0.注意力.', '权重']
    """
    if width < 1 or cell_len(text) <= width:
        return [text]
    lines: list[str] = []
    line, used = "", 0
    for part in _DOTTED_SEGMENT.findall(text):
        cells = cell_len(part)
        if used + cells > width and line:
            lines.append(line)
            line, used = "", 0
        if cells > width:  # one segment longer than a line: cut it
            *full, part = chop_cells(part, width)
            lines.extend(full)
            cells = cell_len(part)
        line += part
        used += cells
    if line:
        lines.append(line)
    return lines


def longest_segment(names: Iterable[str]) -> int:
    """The screen cells of the longest dotted segment among `names` (what `wrap_at_dots` keeps whole on a line):
    the fewest a name column can have without cutting a name mid-word.

    Example:
        >>> longest_segment(["bert.embeddings.token_type_embeddings.weight", "classifier.bias"])
        22
    """
    return max((cell_len(part) for name in names for part in _DOTTED_SEGMENT.findall(name)), default=0)


# What a table row or a line shows of one tensor or module name: its beginning and end, with a count of what was
# left out between them (`--json` keeps it whole). Real names are a few hundred characters at most; a safetensors
# header of 90 names of a megabyte each (94 MB, each under the reader's bound of one name) printed 71 MB in 72 s
# (inspect) and 182 MB in 170 s (inspect --stats).
MAX_SHOWN_NAME_CHARS = 1000


def shown_name(name: str) -> str:
    """`name` clipped to `MAX_SHOWN_NAME_CHARS` (see `clip_middle`) and escaped: a tensor or module name on screen.

    Example:
        >>> shown_name("a[b]"), len(shown_name("x" * 5000))
        ('a\\\\[b]', 1037)
    """
    return escape(distinct_form(clip_middle(name, MAX_SHOWN_NAME_CHARS)))


def distinct_form(name: str) -> str:
    """`name` with its combining marks written as escapes (`cafe\\u0301`) where it is not in Unicode form NFC, so that
    it does not show as the NFC name it looks like (`café`, U+00E9): safetensors and pickles keep a key's code points
    as written, and `café.weight` and `cafe\u0301.weight` are two keys that load_state_dict matches only to
    themselves. A name in NFC (every name torch or transformers writes) is returned unchanged; names only, not paths:
    macOS hands out file names in NFD.

    Example:
        >>> distinct_form("cafe\u0301.weight"), distinct_form("caf\u00e9.weight")
        ('cafe\\\\u0301.weight', 'café.weight')
    """
    if name.isascii():
        return name
    import unicodedata

    if unicodedata.is_normalized("NFC", name):
        return name
    return "".join(_code_point(ord(char)) if _changed_by_nfc(char) else char for char in name)


def _changed_by_nfc(char: str) -> bool:
    """Whether `char`, in a name not in NFC, is one NFC would change or join to its neighbour: a combining mark; a
    character NFC replaces on its own (the Angstrom sign U+212B for U+00C5, the CJK compatibility ideographs U+F900
    to U+FAFF for their unified twins, which draw alike); a conjoining Hangul jamo (an NFD syllable, U+1112 U+1161
    U+11AB, draws as the NFC one, U+D55C). Each showed as its NFC lookalike (review 83)."""
    import unicodedata

    point = ord(char)
    return (unicodedata.combining(char) != 0 or unicodedata.normalize("NFC", char) != char
            or 0x1100 <= point <= 0x11FF or 0xA960 <= point <= 0xA97F or 0xD7B0 <= point <= 0xD7FF)


def wrapped_name(name: str, width: int | None, floor: int = 16) -> str:
    """`name` clipped (`shown_name`) and made printable, broken after dots to fit `width` (see `wrap_at_dots`) when
    `width` is at least `floor`, and escaped for markup as one text: Rich's tags span lines, so lines escaped one by
    one would let `[red.` / `x]` (or `[/b.` / `x]`) become a tag across the break, and a line ending in a backslash
    would show it doubled."""
    text = printable(distinct_form(clip_middle(name, MAX_SHOWN_NAME_CHARS)))
    if width is not None and width >= floor:
        text = "\n".join(wrap_at_dots(text, width))
    return escape_markup(text)


# What one summary line shows of a list from the file (metadata, shared names, other entries): a safetensors header
# of 10 MB of metadata took 38 s to lay out and printed 17 MB; `--json` keeps every item.
MAX_LISTED_CHARS = 2000


def listed(items: Iterable[str], separator: str = ", ", limit: int = MAX_LISTED_CHARS) -> str:
    """`items` made printable and joined by `separator`, stopping at about `limit` characters (an item cut short
    ends in `…`) with the count of items left out; escaped for markup as one text (see `wrapped_name`).

    Example:
        >>> listed(["a", "b", "c" * 30, "d"], limit=12)
        'a, b, cccccc… and 1 more'
    """
    shown: list[str] = []
    used = count = 0
    cut = False
    for count, item in enumerate(items, 1):  # noqa: B007 - the count is what is left
        if used >= limit:
            continue
        text = printable(item[: limit - used + 1])
        if len(text) > limit - used:
            text, cut = text[: limit - used] + "…", True
        shown.append(text)
        used += len(text) + len(separator)
        if cut:
            used = limit
    left = count - len(shown)
    return escape_markup(separator.join(shown) + (f" and {left:,} more" if left else ""))


# A word with the spaces after it, and a piece of a word a line may end after: up to and including a slash.
_WORD = re.compile(r" *[^ ]+ *| +")
_PATH_PIECE = re.compile(r"[^/]*/|[^/]+$")


class BrokenAtSlashes:
    """A panel's line that names a path (`source  org/name → /home/.../snapshots/3c7b...`), broken at the width
    Rich gives it after a space or a slash, where Rich's fold broke it anywhere (`.../snapsho` / `ts/3c7b...`).
    A piece longer than the width (a folder of 100 characters) is cut there, as fold does. `markup`: Rich markup,
    its pieces from the checkpoint or the command line already escaped (`escape`); its styles are kept.

    Example:
        >>> from rich.console import Console
        >>> console = Console(width=24, color_system=None)
        >>> with console.capture() as out:
        ...     console.print(BrokenAtSlashes("hub/models--org--name/snapshots/3c7baf2a"))
        >>> out.get().splitlines()
        ['hub/models--org--name/', 'snapshots/3c7baf2a']
    """

    def __init__(self, markup: str) -> None:
        # emoji=False as the consoles have it (render/console.py): a folder named `x:smile:y` is not `x😄y`.
        self.text = Text.from_markup(markup, emoji=False)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        from rich.measure import Measurement

        pieces = [piece for word in _WORD.findall(self.text.plain) for piece in _PATH_PIECE.findall(word)] or [""]
        return Measurement(min(max(cell_len(piece.rstrip(" ")) for piece in pieces), options.max_width),
                           cell_len(self.text.plain))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        width = max(options.max_width, 1)
        offsets: list[int] = []
        at, used = 0, 0

        def place(piece: str) -> None:
            nonlocal at, used
            if used and used + cell_len(piece.rstrip(" ")) > width:
                offsets.append(at)
                used = 0
            at += len(piece)
            used += cell_len(piece)

        # As Rich wraps: a word at a time, a word that fits on a line of its own never broken (a path after
        # `source →` goes whole onto the next line); only a word longer than a line is broken, after its slashes.
        for word in _WORD.findall(self.text.plain):
            if cell_len(word.rstrip(" ")) <= width:
                place(word)
                continue
            for piece in _PATH_PIECE.findall(word):
                for chunk in chop_cells(piece, width) if cell_len(piece.rstrip(" ")) > width else [piece]:
                    place(chunk)
        for line in self.text.divide(offsets):
            line.rstrip()
            yield line
