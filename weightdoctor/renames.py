"""Key renames: the `--rename REGEX=REPL` syntax shared by `diff-keys` (which suggests them) and `convert`."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from weightdoctor.errors import UsageError


@dataclass(frozen=True)
class Rename:
    """Replace the first match of `pattern` in a key with `replacement` (Python `re.sub` syntax)."""

    pattern: str
    replacement: str

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise UsageError(f"--rename {self.pattern!r}: bad regular expression ({exc})") from exc

    def apply(self, name: str) -> str:
        return re.sub(self.pattern, self.replacement, name, count=1)

    def as_flag(self) -> str:
        """The command-line flag that reproduces this rename, quoted for a POSIX shell."""
        return f"--rename {shlex.quote(f'{self.pattern}={self.replacement}')}"


def parse_rename(spec: str) -> Rename:
    """Parse `REGEX=REPL` (split at the first `=` not preceded by a backslash).

    Example:
        >>> parse_rename(r"module\\.=")
        Rename(pattern='module\\\\.', replacement='')
    """
    match = re.match(r"^((?:[^=\\]|\\.)*)=(.*)$", spec, flags=re.DOTALL)
    if not match or not match.group(1):
        raise UsageError(f"--rename {spec!r}: expected REGEX=REPLACEMENT, e.g. 'module\\.=' or '^=model.'")
    return Rename(match.group(1).replace("\\=", "="), match.group(2))


def strip_prefix(prefix: str) -> Rename:
    return Rename("^" + re.escape(prefix), "")


def add_prefix(prefix: str) -> Rename:
    return Rename("^", prefix.replace("\\", "\\\\"))


def apply_renames(names: Iterable[str], renames: list[Rename]) -> dict[str, str]:
    """Map each name through every rename in order; return old -> new.

    Raises:
        UsageError: two keys would get the same new name (the message names both).
    """
    result: dict[str, str] = {}
    taken: dict[str, str] = {}
    for name in names:
        new = name
        for rename in renames:
            new = rename.apply(new)
        if new in taken:
            raise UsageError(f"renames map both {taken[new]!r} and {name!r} to {new!r}")
        taken[new] = name
        result[name] = new
    return result


def python_snippet(renames: list[Rename]) -> str:
    """A snippet users paste into training code to apply the same renames to a state dict."""
    lines = ["import re", "", "def rename(key: str) -> str:"]
    for rename in renames:
        lines.append(f"    key = re.sub({rename.pattern!r}, {rename.replacement!r}, key, count=1)")
    lines += ["    return key", "", "state_dict = {rename(k): v for k, v in state_dict.items()}"]
    return "\n".join(lines)
