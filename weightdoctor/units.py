"""Byte sizes: parsing the size strings users type and formatting byte counts for people."""

from __future__ import annotations

import re

from weightdoctor.errors import UsageError

_DECIMAL = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15}
_BINARY = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "PIB": 2**50}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Parse a size such as `"24GB"`, `"200MiB"` or `"1.5 TB"` into bytes.

    Decimal units (KB, MB, GB, TB) are powers of 1000 and binary units (KiB, MiB, GiB, TiB) powers of
    1024, as accelerate and huggingface_hub read them. A bare number is bytes.

    Example:
        >>> parse_size("200MB"), parse_size("200MiB")
        (200000000, 209715200)

    Raises:
        UsageError: the text is not a number followed by a known unit; the message quotes it.
    """
    if isinstance(text, int):
        if text < 0:
            raise UsageError(f"size must not be negative: {text}")
        return text
    match = _SIZE_RE.match(text)
    if not match:
        raise UsageError(f"cannot parse size {text!r}: expected a number and a unit such as 200MB or 2GiB")
    number, unit = float(match.group(1)), match.group(2).upper()
    if unit in _DECIMAL:
        factor = _DECIMAL[unit]
    elif unit in _BINARY:
        factor = _BINARY[unit]
    elif unit in {"K", "M", "G", "T"}:
        factor = _DECIMAL[unit + "B"]
    else:
        raise UsageError(
            f"cannot parse size {text!r}: unknown unit {match.group(2)!r} "
            "(decimal: KB MB GB TB; binary: KiB MiB GiB TiB)"
        )
    return int(round(number * factor))


def size_is_binary(text: str) -> bool:
    """True when a size string uses a binary unit (KiB, MiB, ...), for messages that say which was used."""
    match = _SIZE_RE.match(text)
    return bool(match) and match.group(2).upper() in _BINARY


def format_bytes(num_bytes: int | float, binary: bool = False) -> str:
    """Format a byte count for people: `format_bytes(1_500_000)` is `"1.50 MB"`."""
    base = 1024.0 if binary else 1000.0
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"] if binary else ["B", "KB", "MB", "GB", "TB", "PB"]
    value = float(num_bytes)
    for unit in units:
        if abs(value) < base or unit == units[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= base
    raise AssertionError("unreachable")


def format_count(count: int) -> str:
    """Format a parameter count for people: 110_000_000 -> "110.0M"."""
    for factor, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if abs(count) >= factor:
            return f"{count / factor:.1f}{suffix}"
    return str(count)
