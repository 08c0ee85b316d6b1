"""`diff-keys --json`: the text `render.json.dumps(report)` writes, built fast for diffs of 10,000s of keys.

A diff of two large checkpoints lists every missing and unexpected key. Through the generic path
(`to_jsonable` then `json.dumps(indent=2)`, whose indenting encoder is pure Python) 20,000 keys take
longer to print than to diff. Here every long list of flat rows (dataclasses whose fields are strings,
ints, bools or None: `KeyIssue`, `KeyGroup`, `DtypeDifference`) is written with one `%`-template per
row, and everything else goes through the generic path; the text is the same, byte for byte (a test
holds it to that).
"""

from __future__ import annotations

import dataclasses
import json
from json.encoder import encode_basestring
from operator import attrgetter
from typing import Any

from weightdoctor.render.json import dumps, to_jsonable, valid_text

INDENT = "  "
# Lists shorter than this go through the generic path: the template costs more than it saves.
MIN_ROWS = 32


def _scalar(value: object) -> str | None:
    """JSON text for a str, int, bool or None (exact types only), as json.dumps writes it; else None."""
    kind = type(value)
    if kind is str:
        return encode_basestring(value)  # type: ignore[arg-type]
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)  # type: ignore[arg-type]
    if value is None:
        return "null"
    return None


def _json_field_names(kind: type) -> list[str]:
    """The fields `to_jsonable` writes for a dataclass type, in its order."""
    return [f.name for f in dataclasses.fields(kind) if not f.name.startswith("_") and f.metadata.get("json", True)]


def _rows_text(rows: list[Any], level: int) -> list[str] | None:
    """A list of same-type flat dataclasses as indented JSON at nesting `level`, in pieces to be joined (the
    caller joins them with the rest of the document once: megabytes of text are not copied twice); None
    when not flat."""
    kind = type(rows[0])
    if not dataclasses.is_dataclass(kind) or set(map(type, rows)) != {kind}:
        return None
    names = _json_field_names(kind)
    if not names:
        return None
    inner = "\n" + INDENT * (level + 2)
    # The row template, cut at the columns whose value varies from row to row: a column with one value in
    # every row (a diff's reason, severity and detail when one rename explains every key) is written into
    # the template once instead of once per row.
    pieces: list[str] = []
    varying: list[list[str]] = []
    literal = "{"
    for index, name in enumerate(names):
        literal += ("," if index else "") + inner + encode_basestring(name) + ": "
        column = list(map(attrgetter(name), rows))
        kinds = set(map(type, column))
        encoded: list[str | None]
        if kinds == {str}:
            distinct = set(column)  # as many distinct values as the encoded column: one encoding per str
            if len(distinct) == 1:
                literal += encode_basestring(column[0])
                continue
            if len(distinct) * 4 < len(column):  # a reason or severity column: encode each value once
                known = {value: encode_basestring(value) for value in distinct}
                encoded = list(map(known.__getitem__, column))
            else:
                encoded = list(map(encode_basestring, column))  # the C encoder json.dumps uses
        else:
            encoded = list(map(int.__repr__, column)) if kinds == {int} else list(map(_scalar, column))
            if None in encoded:
                return None
            if len(set(encoded)) == 1:
                literal += encoded[0]  # type: ignore[operator]
                continue
        pieces.append(literal)
        varying.append(encoded)  # type: ignore[arg-type]
        literal = ""
    pieces.append(literal + "\n" + INDENT * (level + 1) + "}")
    separator = ",\n" + INDENT * (level + 1)
    if len(varying) == 1:
        # One varying column (the key names): every row is head + value + tail, so the rows are one join.
        head, tail = pieces
        body = (tail + separator + head).join(varying[0])
    else:
        head, tail = "", ""
        template = "%s".join(piece.replace("%", "%%") for piece in pieces)
        body = separator.join([template % row for row in zip(*varying, strict=True)] if varying
                              else [template % ()] * len(rows))
    return ["[\n" + INDENT * (level + 1) + head, body, tail + "\n" + INDENT * level + "]"]


def report_json(report: Any) -> str:
    """The same text as `render.json.dumps(report)` for a top-level dataclass such as `DiffReport`."""
    if not dataclasses.is_dataclass(report) or isinstance(report, type):
        return dumps(report)
    data: dict[str, Any] = {}
    rendered: dict[str, list[str]] = {}
    for name in _json_field_names(type(report)):
        value = getattr(report, name)
        text = _rows_text(value, 1) if type(value) is list and len(value) >= MIN_ROWS else None
        if text is None:
            data[name] = to_jsonable(value)
        else:
            # A placeholder string that json.dumps writes as it is; swapped for the rendered list below.
            placeholder = f"\ue000rows:{name}\ue000"
            data[name] = placeholder
            rendered[encode_basestring(placeholder)] = text
    out = json.dumps(data, indent=2, ensure_ascii=False)
    if any(out.count(p) != 1 or any(p in text for parts in rendered.values() for text in parts) for p in rendered):
        return dumps(report)  # a placeholder also appears in some value: do it the slow way
    # Cut at the placeholders (in field order, each there once) and join: replacing them one after the other
    # would copy the growing text each time, as wide (2-byte) characters while a placeholder is left in it.
    pieces: list[str] = []
    rest = out
    for placeholder, parts in rendered.items():
        head, _, rest = rest.partition(placeholder)
        pieces += (head, *parts)
    pieces.append(rest)
    return valid_text("".join(pieces))
