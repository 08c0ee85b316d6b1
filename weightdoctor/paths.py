"""Paths as the user typed them."""

from __future__ import annotations

import os
from pathlib import Path


def expand_user(path: str | os.PathLike[str]) -> Path:
    """`~/x` and `~alice/x` expanded as a shell would; a `~name` of no known user is kept as typed.

    pathlib's own expansion raises RuntimeError for an unknown user (`~nouser/x`), which reached the user as
    "unexpected RuntimeError"; `os.path.expanduser` leaves such a path alone, so it is then named as missing.

    Example:
        >>> str(expand_user("~no-such-user-here/x"))
        '~no-such-user-here/x'
    """
    return Path(os.path.expanduser(os.fspath(path)))
