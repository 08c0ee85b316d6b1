"""JSON output: every result dataclass becomes plain JSON through `to_jsonable`."""

from __future__ import annotations

import codecs
import dataclasses
import json
import math
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Any


def to_jsonable(value: Any) -> Any:
    """Convert dataclasses, paths, tuples and sets into JSON-ready values (private `_fields` dropped).

    Non-finite floats become the strings "nan", "inf" and "-inf", since JSON has no such numbers.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.name.startswith("_") and f.metadata.get("json", True)
        }
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [to_jsonable(v) for v in items]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return to_jsonable(value.item())
    return value


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """JSON text that encodes to valid UTF-8: a lone surrogate (a file name's non-UTF-8 byte, as Python
    decodes it) is written as its `\\udcXX` escape, which JSON allows, instead of a raw byte on stdout."""
    if text.isascii():
        return text
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


_NON_ASCII = re.compile("[^\x00-\x7f]")


def _json_escape(match: re.Match[str]) -> str:
    point = ord(match.group())
    if point < 0x10000:
        return f"\\u{point:04x}"
    point -= 0x10000  # JSON writes a character beyond the BMP as a surrogate pair
    return f"\\u{0xD800 + (point >> 10):04x}\\u{0xDC00 + (point & 0x3FF):04x}"


def for_encoding(text: str, encoding: str | None) -> str:
    """JSON `text` as a stream in `encoding` can write it whole: unchanged when it can (UTF-8, the usual
    case, costs no copy), else with every non-ASCII character as its `\\uXXXX` escape, which any JSON
    reader decodes to the same string. Without this, `PYTHONIOENCODING=ascii` or a latin-1 console
    (whose stdout writes `\\xe8` for `è`, see `weightdoctor.entry`) would print JSON no parser accepts.

    Example:
        >>> for_encoding('{"name": "modèl"}', "ascii")
        '{"name": "mod\\\\u00e8l"}'
    """
    if text.isascii():
        return text
    try:
        if codecs.lookup(encoding or "utf-8").name == "utf-8":
            return text
        text.encode(encoding or "utf-8")
        return text
    except (LookupError, UnicodeEncodeError):
        return _NON_ASCII.sub(_json_escape, text)


def dumps(value: Any) -> str:
    return valid_text(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False))


def write_json_text(text: str) -> None:
    """Write JSON text and a newline to stdout, escaped where stdout's encoding cannot hold a character."""
    sys.stdout.write(for_encoding(text, getattr(sys.stdout, "encoding", None)))
    sys.stdout.write("\n")  # not `text + "\n"`: a copy of megabytes for a large report
    sys.stdout.flush()


def print_json(value: Any) -> None:
    """Write `value` as JSON to stdout (plain print: no Rich wrapping or colour in machine output)."""
    write_json_text(dumps(value))
