"""JSON output: every result dataclass becomes plain JSON through `to_jsonable`."""

from __future__ import annotations

import codecs
import dataclasses
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any

_PASSED_AS_IS = frozenset({str, int, bool, type(None)})


def to_jsonable(value: Any) -> Any:
    """Convert dataclasses, paths, tuples and sets into JSON-ready values (private `_fields` dropped).

    Non-finite floats become the strings "nan", "inf" and "-inf", since JSON has no such numbers.
    Values of the exact built-in scalar types are answered before the general checks: a report of 100,000
    tensors holds millions of them (a test holds this to the plain chain of checks).
    """
    kind = type(value)
    if kind in _PASSED_AS_IS:
        return value
    if kind is float:
        return value if math.isfinite(value) else _non_finite(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: _item(getattr(value, name)) for name in _json_fields(type(value))}
    if isinstance(value, dict):
        return {(key if type(key) is str else str(key)): _item(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [_item(item) for item in items]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return _non_finite(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return to_jsonable(value.item())
    return value


def _item(value: Any) -> Any:
    """`to_jsonable(value)`, without the call for a value of an exact type written as it is."""
    return value if type(value) in _PASSED_AS_IS else to_jsonable(value)


def _non_finite(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


# Lone surrogates, and the C1 control characters, which JSON need not escape (only U+0000-U+001F) but a terminal
# reads: U+009B is CSI, so a tensor name `e\x9b31m` turned `--json` output red, as ESC [ would.
_RAW_IN_JSON_NOT_ON_A_TERMINAL = re.compile("[\ud800-\udfff\x80-\x9f]")
_C1_IN_UTF8 = re.compile(rb"\xc2[\x80-\x9f]")


def valid_text(text: str) -> str:
    """JSON text that encodes to valid UTF-8 and holds no control character a terminal obeys: a lone surrogate
    (a file name's non-UTF-8 byte, as Python decodes it) and a C1 control are written as their `\\uXXXX` escape,
    which JSON allows and decodes to the same string, instead of raw bytes on stdout."""
    if text.isascii():
        return text
    try:
        # Encoding fails exactly where a lone surrogate is, and a C1 control encodes as \xc2 then \x80-\x9f: both
        # tests run in C, ~20x faster than the regular expression over tens of MB of report (check-dtype's 50,000
        # rows each hold a "±").
        if _C1_IN_UTF8.search(text.encode("utf-8")) is None:
            return text
    except UnicodeEncodeError:
        pass
    return _RAW_IN_JSON_NOT_ON_A_TERMINAL.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


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


class _NotPlain(Exception):
    """A value `dumps` does not model exactly: the caller takes the slow, reference path."""


_ENCODE_STR = json.encoder.encode_basestring  # the C function where available (ensure_ascii=False)
_INDENT = "  "
_FIELDS_CACHE: dict[type, tuple[str, ...]] = {}


def _json_fields(cls: type) -> tuple[str, ...]:
    """The field names `to_jsonable` writes for dataclass type `cls`, in order (cached per class)."""
    names = _FIELDS_CACHE.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls)
                      if not f.name.startswith("_") and f.metadata.get("json", True))
        _FIELDS_CACHE[cls] = names
    return names


def _scalar(value: Any) -> str | None:
    """JSON text of a value of an exact built-in scalar type, as `json.dumps(to_jsonable(value))` writes it;
    None for anything else."""
    kind = type(value)
    if kind is str:
        return _ENCODE_STR(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        if value != value:
            return '"nan"'
        if value in (math.inf, -math.inf):
            return '"inf"' if value > 0 else '"-inf"'
        return float.__repr__(value)
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    return None


_PLAIN_SCALARS = frozenset({str, int, float, bool, type(None)})
_FLAT_ENCODERS: dict[int, Callable[[Any], str]] = {}


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _flat_encoder(level: int) -> Callable[[Any], str]:
    """The C encoder for a flat dict or list whose items sit at depth `level + 1`: its item separator carries the
    newline and the indent. Built on `json.encoder.c_make_encoder` when that takes the arguments it took up to
    now (checked on a sample), else on `JSONEncoder.encode` (the same text, a little slower)."""
    encode = _FLAT_ENCODERS.get(level)
    if encode is None:
        item_separator = ",\n" + _INDENT * (level + 1)
        encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(item_separator, ": ")).encode
        make = getattr(json.encoder, "c_make_encoder", None)
        if make is not None:
            try:
                iterencode = make(None, _refuse, _ENCODE_STR, None, ": ", item_separator, False, False, False)
                sample = {"a": [1, -0.0, 1e300, None, True, "é\"\n"], "b": 2}
                if "".join(iterencode(sample, 0)) == encode(sample) and _refuses_nan(iterencode):
                    encode = partial(_joined, iterencode)
            except (TypeError, ValueError):
                pass
        _FLAT_ENCODERS[level] = encode
    return encode


def _refuses_nan(iterencode: Callable[[Any, int], Iterable[str]]) -> bool:
    """Whether the encoder refuses a NaN (as built, allow_nan=False): `_write_flat` relies on it to leave NaNs to
    the path that writes them as strings."""
    try:
        "".join(iterencode([math.nan], 0))
    except ValueError:
        return True
    return False


def _joined(iterencode: Callable[[Any, int], Iterable[str]], value: Any) -> str:
    return "".join(iterencode(value, 0))


def _write_flat(value: dict[str, Any] | list[Any], values: Iterable[Any], level: int, out: list[str]) -> bool:
    """Write a non-empty dict or list whose `values` are all exact built-in scalars in one C call; False (nothing
    written) when one is not, or is a NaN or an infinity (which to_jsonable writes as strings)."""
    if not set(map(type, values)) <= _PLAIN_SCALARS:
        return False
    try:
        text = _flat_encoder(level)(value)
    except ValueError:
        return False
    out.append(f"{text[0]}\n{_INDENT * (level + 1)}{text[1:-1]}\n{_INDENT * level}{text[-1]}")
    return True


def _write_items(keys: Sequence[str], values: Sequence[Any], level: int, out: list[str]) -> None:
    """Write an object of `keys` (all distinct) and `values` at depth `level`."""
    if not keys:
        out.append("{}")
        return
    if _write_flat(dict(zip(keys, values, strict=True)), values, level, out):
        return
    inner = "\n" + _INDENT * (level + 1)
    separator = "," + inner
    out.append("{" + inner)
    scalar, encode_str = _scalar, _ENCODE_STR
    for index, (key, item) in enumerate(zip(keys, values, strict=True)):
        if index:
            out.append(separator)
        text = scalar(item)
        if text is not None:
            out.append(f"{encode_str(key)}: {text}")
        else:
            out.append(f"{encode_str(key)}: ")
            _write(item, level + 1, out)
    out.append("\n" + _INDENT * level + "}")


def _write_list(items: Sequence[Any], level: int, out: list[str]) -> None:
    """Write an array of `items` at depth `level`."""
    if not items:
        out.append("[]")
        return
    if _write_flat(list(items), items, level, out):
        return
    inner = "\n" + _INDENT * (level + 1)
    separator = "," + inner
    out.append("[" + inner)
    scalar = _scalar
    for index, item in enumerate(items):
        if index:
            out.append(separator)
        text = scalar(item)
        if text is not None:
            out.append(text)
        else:
            _write(item, level + 1, out)
    out.append("\n" + _INDENT * level + "]")


def _write(value: Any, level: int, out: list[str]) -> None:
    """Append `value`'s JSON text at depth `level`, as `json.dumps(to_jsonable(value), indent=2,
    ensure_ascii=False)` writes it, to `out`."""
    text = _scalar(value)
    if text is not None:
        out.append(text)
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _json_fields(type(value))
        _write_items(names, [getattr(value, name) for name in names], level, out)
        return
    if isinstance(value, dict):
        keys = list(value)
        if not all(type(key) is str for key in keys):
            keys = [str(key) for key in keys]
            if len(set(keys)) != len(keys):  # to_jsonable's dict keeps one of the keys that print alike
                raise _NotPlain
        _write_items(keys, list(value.values()), level, out)
        return
    if isinstance(value, (list, tuple, set, frozenset)):
        _write_list(sorted(value) if isinstance(value, (set, frozenset)) else value, level, out)
        return
    if isinstance(value, Path):
        out.append(_ENCODE_STR(str(value)))
        return
    if isinstance(value, (Enum, float)) or hasattr(value, "item"):
        # Rare (an enum's value, a float subclass, a numpy or torch scalar): as to_jsonable does, then encode.
        plain = to_jsonable(value)
        if isinstance(plain, float) and not math.isfinite(plain):
            raise _NotPlain  # an enum's NaN: to_jsonable hands it on as it is, and json.dumps writes NaN
        text = _scalar(plain)
        if text is None:
            raise _NotPlain
        out.append(text)
        return
    raise _NotPlain  # json.dumps decides (a str or int subclass is written, anything else is a TypeError)


def dumps(value: Any) -> str:
    """`value` as indented JSON text (two spaces), exactly `json.dumps(to_jsonable(value), indent=2,
    ensure_ascii=False)` run through `valid_text`.

    The standard library's indenting encoder is pure Python (only the compact one is C): a report of 100,000
    tensors took seconds in it and in `to_jsonable`'s copy. This walks the value once, writes each flat object
    or array (a tensor's row, a shape) with the C encoder and the rest with the C string encoder, and joins the
    pieces once. Values it does not model (a str or int subclass, keys that print alike) take the reference
    path. A test holds the two to the same text.
    """
    out = _pieces(value)
    return dumps_reference(value) if out is None else valid_text("".join(out))


def _pieces(value: Any) -> list[str] | None:
    """The pieces of `dumps`'s text before `valid_text`, in order; None where it takes the reference path."""
    out: list[str] = []
    try:
        _write(value, 0, out)
    except _NotPlain:
        return None
    return out


def dumps_reference(value: Any) -> str:
    """The reference for `dumps`: the standard library's encoder over `to_jsonable`'s copy."""
    return valid_text(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False))


def write_json_text(text: str) -> None:
    """Write JSON text and a newline to stdout, escaped where stdout's encoding cannot hold a character."""
    try:
        sys.stdout.write(for_encoding(text, getattr(sys.stdout, "encoding", None)))
        sys.stdout.write("\n")  # not `text + "\n"`: a copy of megabytes for a large report
        sys.stdout.flush()
    except BrokenPipeError:
        raise  # the reader went away: exit 141, quietly (`weightdoctor.entry`)
    except OSError as exc:
        from weightdoctor.writers.atomic import report_error

        raise report_error(exc) from exc


_CHUNK_CHARS = 1 << 20  # what `print_json` writes at a time (about 1 MiB of text)


def print_json(value: Any) -> None:
    """Write `value` as JSON to stdout (plain print: no Rich wrapping or colour in machine output): the text of
    `write_json_text(dumps(value))`, byte for byte.

    To a UTF-8 stdout (the usual case) the pieces `dumps` would join are written about 1 MiB at a time, each
    through `valid_text` (which escapes character by character, so a piece at a time gives the same text):
    the whole text was a third copy of the report besides the pieces and the bytes stdout encoded it to (about
    115 MiB each for `inspect --stats --json` of 100,000 tensors). Any other encoding escapes every non-ASCII
    character or none, a choice made on the whole text (`for_encoding`), so it still gets the whole text."""
    encoding = getattr(sys.stdout, "encoding", None)
    try:
        utf8 = codecs.lookup(encoding or "utf-8").name == "utf-8"
    except LookupError:
        utf8 = False
    if not utf8:
        write_json_text(dumps(value))
        return
    out = _pieces(value)
    if out is None:
        write_json_text(dumps_reference(value))
        return
    out.reverse()  # popped from the end: each piece is let go once written
    try:
        while out:
            size, chunk = 0, []
            while out and size < _CHUNK_CHARS:
                piece = out.pop()
                size += len(piece)
                chunk.append(piece)
            sys.stdout.write(valid_text("".join(chunk)))
        sys.stdout.write("\n")
        sys.stdout.flush()
    except BrokenPipeError:
        raise  # the reader went away: exit 141, quietly (`weightdoctor.entry`)
    except OSError as exc:
        from weightdoctor.writers.atomic import report_error

        raise report_error(exc) from exc
