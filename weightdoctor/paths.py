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


def exists(path: Path, *, link: bool = False) -> bool:
    """Path.exists (Path.is_symlink with `link`), False for a name the file system cannot hold: a source typed as a
    Hub address (`hf://org/` and 5,000 letters) was looked up as a local path first, and pathlib raised
    ENAMETOOLONG ("cannot read or write") before the text was read as the address it is."""
    import errno

    try:
        return path.is_symlink() if link else path.exists()
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return False
        raise


def expand_output(path: str | os.PathLike[str]) -> Path:
    """`expand_user` for a path to write: a leading `~name` of no known user is refused rather than kept.

    Kept as typed, `-o ~alcie/model` (a typo) would be written under a folder named `~alcie` in the working
    directory, or asked to be made with `mkdir -p '~alcie'`; as a source it is only named as missing.

    Raises:
        UsageError: the path starts with `~name` and no user of this machine has that name.
    """
    expanded = expand_user(path)
    text = os.fspath(path)
    if text.startswith("~") and os.fspath(expanded) == text:
        from weightdoctor.errors import UsageError

        user = text[1:].split(os.sep, 1)[0]
        if not user:  # `~` or `~/x`: no HOME, and this process's user has no home in the password database
            raise UsageError(f"{text}: ~ cannot be expanded (HOME is not set and this user has no home directory "
                             "listed), nothing written; give the output's full path")
        raise UsageError(f"{text}: ~{user} names no user of this machine, so it cannot be expanded (nothing written); "
                         "give the output's full path")
    return expanded


def shell_word(word: str, *, argument: bool = False) -> str:
    """`word` as one word a shell reads back exactly, for a command a message prints to be pasted (bash and zsh, the
    shells people paste into, and any sh of POSIX.1-2024, which added `$'...'`).

    `shlex.quote` alone fell short twice. A control or invisible character inside its single quotes (a newline in a
    file name) is printed as an escape (`\\x0a`, render/text.py), which single quotes keep as four characters: the
    pasted command named another file; such a word is written in `$'...'` quotes, each of those characters as the
    `\\xHH` escapes of its bytes. And a positional `argument` that starts with `-` (a folder `-m`, typed after `--`)
    was read as an option by the command pasted: it is written `./-m`, the same file.

    Example:
        >>> shell_word("train ckpt.pt"), shell_word("-m", argument=True), shell_word("a\\nb")
        ("'train ckpt.pt'", './-m', "$'a\\\\x0ab'")
    """
    import shlex

    if argument and word.startswith("-"):
        word = "./" + word
    if word.isprintable():
        return shlex.quote(word)
    quoted = []
    for char in word:
        if not char.isprintable():
            # A lone surrogate is a byte of a file name that is not UTF-8 (os.fsencode gives that byte back).
            raw = char.encode("utf-8", "surrogateescape" if "\udc80" <= char <= "\udcff" else "surrogatepass")
            quoted.append("".join(f"\\x{byte:02x}" for byte in raw))
        else:
            quoted.append("\\" + char if char in "\\'" else char)
    return "$'" + "".join(quoted) + "'"
