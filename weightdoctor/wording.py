"""Wording: counts in messages ("1 tensor", "2 tensors", never "1 tensors"; "1 row is"), and command help text."""

from __future__ import annotations


def plural(count: float, singular: str, plural_form: str | None = None) -> str:
    """The word that fits `count`: `singular` for exactly 1, else `plural_form` (default: `singular` + "s").

    Verbs pick their form the same way: `plural(n, "is", "are")`.

    Example:
        >>> plural(1, "tensor"), plural(0, "tensor"), plural(3, "entry", "entries"), plural(1, "is", "are")
        ('tensor', 'tensors', 'entries', 'is')
    """
    if count == 1:
        return singular
    return plural_form if plural_form is not None else singular + "s"


def counted(count: int, singular: str, plural_form: str | None = None, *, grouped: bool = True) -> str:
    """`count` and the noun that fits it; `grouped`: with thousands separators ("1,024"), as most messages write
    counts (byte counts in damaged-file messages are written bare, to be compared with a hex dump).

    Example:
        >>> counted(1, "tensor"), counted(1024, "value"), counted(1024, "byte", grouped=False)
        ('1 tensor', '1,024 values', '1024 bytes')
    """
    return f"{count:,} {plural(count, singular, plural_form)}" if grouped else \
        f"{count} {plural(count, singular, plural_form)}"


def non_finite_count(nan: int, inf: int) -> str:
    """The NaN and Inf among a tensor's values, naming only those present ("1 NaN", "3 Inf", "2 NaN and 1 Inf").

    Example:
        >>> non_finite_count(1, 0), non_finite_count(0, 3), non_finite_count(2, 1)
        ('1 NaN', '3 Inf', '2 NaN and 1 Inf')
    """
    parts = [f"{nan:,} NaN"] * bool(nan) + [f"{inf:,} Inf"] * bool(inf)
    return " and ".join(parts) or "no NaN or Inf"


def reflow_help(text: str | None) -> str | None:
    r"""A command's docstring with each sentence that runs on to the next line joined into one line.

    Typer's help keeps every line break of a docstring, so a docstring wrapped at 110 columns printed ragged in an
    80-column terminal ("... a memory map for PyTorch pickles, which" / "are first scanned ..."). A line that ends
    a sentence (`.`, `:`, `!`, `?`) still ends its line, and blank lines still separate paragraphs.

    Example:
        >>> reflow_help("Convert a file.\n\nA file converts to a file; a folder\nto a folder.\nTied tensors stay.")
        'Convert a file.\n\nA file converts to a file; a folder to a folder.\nTied tensors stay.'
    """
    if not text:
        return text
    lines = text.strip("\n").split("\n")
    joined: list[str] = []
    for line in lines:
        previous = joined[-1].rstrip() if joined else ""
        if previous and line.strip() and not previous.endswith((".", ":", "!", "?")):
            joined[-1] = f"{previous} {line.strip()}"
        else:
            joined.append(line)
    return "\n".join(joined)
