"""Counts in messages: "1 tensor", "2 tensors", never "1 tensors" (and the verb that agrees: "1 row is")."""

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
