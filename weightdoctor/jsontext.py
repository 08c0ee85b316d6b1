"""`parse_json`: `json.loads` for text from files nobody vouches for (headers, indexes, configs)."""

from __future__ import annotations

import json
from typing import Any


def parse_json(text: str | bytes) -> Any:
    """`json.loads(text)`, failing on hostile text with a `ValueError` only.

    `json.loads` already raises ValueError for malformed text (`JSONDecodeError`) and for an integer past
    Python's digit limit; deep nesting (`[[[[...`) raises RecursionError instead, turned into ValueError here.

    Example:
        >>> parse_json('{"a": [1]}')
        {'a': [1]}
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None
