"""`parse_json`: `json.loads` for text from files nobody vouches for (headers, indexes, configs)."""

from __future__ import annotations

import json
import re
from typing import Any

# json.loads' error for an integer longer than sys.get_int_max_str_digits() allows.
_TOO_MANY_DIGITS = re.compile(r"Exceeds the limit \((?P<limit>\d+) digits\).*?value has (?P<has>\d+) digits")

# Deeper values are refused where asked: whatever later walks a config (its JSON rendering, transformers)
# recurses, and Python's recursion limit stops such walks at a few hundred levels.
MAX_DEPTH = 64


# What an index or config JSON may hold, values and object members together: each is a Python object json.loads keeps
# (an empty object 64 bytes, a string some 50 and more), and a 9 MB index.json of 3,000,000 `{}` raised every command
# 252 MiB (100 MB: some 2.8 GB). A DeepSeek-V3 index lists 91,991 tensors; an index of a million, 1,000,001.
MAX_JSON_ENTRIES = 2_000_000


class TooManyEntries(ValueError):
    """A JSON text of more than `MAX_JSON_ENTRIES` values and members, refused before it is parsed."""


def refuse_too_many_entries(text: str | bytes, limit: int = MAX_JSON_ENTRIES, *, curly: int | None = None) -> None:
    """Raise TooManyEntries when `text` may hold more than `limit` values and object members.

    Every value or member but the outermost is the first of its array or object, or follows a comma: their count is
    at most one more than the text's commas, `[` and `{` (a comma or bracket inside a string counts too, so the bound
    is from above). A text shorter than `limit` characters cannot pass it and is not counted. `curly`: the text's
    count of `{` where the caller has it (the safetensors reader counts them for its own bound), not counted again.

    Example:
        >>> try:
        ...     refuse_too_many_entries('[{}, {}]', limit=3)
        ... except TooManyEntries as exc:
        ...     print(exc)
        it holds up to 5 JSON values and members (the limit is 3)
    """
    if len(text) <= limit:
        return
    comma, square, brace = (",", "[", "{") if isinstance(text, str) else (b",", b"[", b"{")
    if curly is None:
        curly = text.count(brace)  # type: ignore[arg-type]
    count = 1 + text.count(comma) + text.count(square) + curly  # type: ignore[arg-type]
    if count > limit:
        raise TooManyEntries(f"it holds up to {count:,} JSON values and members (the limit is {limit:,})")


def parse_json(text: str | bytes, max_depth: int | None = None, max_entries: int | None = None) -> Any:
    """`json.loads(text)`, failing on hostile text with a `ValueError` only.

    `json.loads` already raises ValueError for malformed text (`JSONDecodeError`) and for an integer past
    Python's digit limit; deep nesting (`[[[[...`) raises RecursionError instead, turned into ValueError here.
    With `max_depth`, nesting deeper than that is a ValueError too; with `max_entries`, a text that may hold more
    values and members than that is `TooManyEntries` (a ValueError), before it is parsed.

    Example:
        >>> parse_json('{"a": [1]}')
        {'a': [1]}
    """
    if max_entries is not None:
        refuse_too_many_entries(text, max_entries)
    if isinstance(text, str) and text[:1] == "\ufeff":
        # json.loads refuses it in words for a programmer ("Unexpected UTF-8 BOM (decode using utf-8-sig)"); the
        # file's readers (transformers, PEFT) read it with json.loads too.
        raise ValueError("it starts with a byte-order mark (BOM), which JSON readers refuse (Python's json and so "
                         "transformers' from_pretrained); save it as UTF-8 without a BOM")
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None
    except ValueError as exc:
        # Python's own wording ends "use sys.set_int_max_str_digits() to increase the limit": advice for a
        # programmer, not for someone whose file holds such a number. Said in the file's terms instead.
        digits = _TOO_MANY_DIGITS.search(str(exc))
        if digits is None:
            raise
        raise ValueError(f"an integer of {int(digits['has']):,} digits; at most {int(digits['limit']):,} are read"
                         ) from None
    if max_depth is not None and _deeper_than(value, max_depth):
        raise ValueError(f"nested more than {max_depth} levels deep")
    return value


_CONTAINERS = frozenset((dict, list))  # the containers json.loads makes (exactly these types, no subclasses)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests containers more than `limit` levels deep (iteratively: no recursion).

    Each level keeps its containers only, and a container of scalars is passed over at C speed: listing every
    value of each level took 2.6 s and 64 MB over a config.json's list of 8,000,000 numbers.

    Example:
        >>> _deeper_than({"a": [[1]]}, 2), _deeper_than({"a": [[1]]}, 3)
        (True, False)
    """
    level: list[Any] = [value] if type(value) in _CONTAINERS else []
    for _ in range(limit):
        deeper: list[Any] = []
        for item in level:
            children = item.values() if type(item) is dict else item
            if not _CONTAINERS.isdisjoint(map(type, children)):
                deeper.extend(child for child in children if type(child) in _CONTAINERS)
        if not deeper:
            return False
        level = deeper
    return bool(level)


# The longest string of a config.json a --json report echoes: a genuine value (a model type, an architecture, a dtype,
# an auto_map entry) is a few dozen characters, and a 50 MB model_type (config strings are read up to 100 MB) was
# echoed whole, twice (`config` and `config_summary`): a 112 MB inspect --json. Longer ones are cut in their middle by
# `clip_middle`, which says in the string itself how many characters it left out; the report lists where.
MAX_ECHOED_CHARS = 10_000


def clip_long_strings(value: Any, where: str, clipped: list[str], limit: int = MAX_ECHOED_CHARS) -> Any:
    """`value` (a config read by `parse_json`: at most `MAX_DEPTH` deep) with each string longer than `limit`
    characters, key or value, cut by `clip_middle`; the JSON path of each cut one (`where` its own) is appended to
    `clipped`. The value itself is returned where nothing in it was cut (no copy of a config that needs none).

    Example:
        >>> cut: list[str] = []
        >>> clip_long_strings({"model_type": "x" * 30, "n": 1}, "config", cut, limit=20)["model_type"]
        'xxxxxxxxxxxxxxx ... (10 characters left out) ... xxxxx'
        >>> cut
        ['config.model_type']
    """
    from weightdoctor.errors import clip_middle

    if isinstance(value, str):
        if len(value) <= limit:
            return value
        clipped.append(where)
        return clip_middle(value, limit)
    if isinstance(value, list):
        before = len(clipped)
        items = [clip_long_strings(item, f"{where}[{index}]", clipped, limit) for index, item in enumerate(value)]
        return items if len(clipped) > before else value
    if isinstance(value, dict):
        before = len(clipped)
        members = {}
        for key, item in value.items():
            shown_key = clip_long_strings(key, f"{where} (a key)", clipped, limit) if type(key) is str else key
            members[shown_key] = clip_long_strings(item, f"{where}.{shown_key}", clipped, limit)
        return members if len(clipped) > before else value
    return value
