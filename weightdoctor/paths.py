"""Paths as the user typed them."""

from __future__ import annotations

import os
import re
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
    refuse_foreign_output(text)
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
        quoted = shlex.quote(word)
        # shlex leaves a `,` bare; at a word's end (a folder `run,`) it read as the prose's comma after the command,
        # and the command shown apart from its note (render/diff_keys.py) ended there: quoted, it is the word's.
        return f"'{word}'" if quoted == word and word.endswith(",") else quoted
    quoted = []
    for char in word:
        if not char.isprintable():
            # A lone surrogate is a byte of a file name that is not UTF-8 (os.fsencode gives that byte back).
            raw = char.encode("utf-8", "surrogateescape" if "\udc80" <= char <= "\udcff" else "surrogatepass")
            quoted.append("".join(f"\\x{byte:02x}" for byte in raw))
        else:
            quoted.append("\\" + char if char in "\\'" else char)
    return "$'" + "".join(quoted) + "'"


def fresh_sibling(path: Path, mark: str) -> Path:
    """A path beside `path` that nothing is at yet, for a command a message prints to write into: `path`'s name with
    `mark` added (`run` -> `run.fp32`), numbered where that is taken (`run.fp32-2`). A path named `.` or `..` is
    named by its own name (`../run.fp32`): `.` has no name to add to. A placeholder (`OUTDIR`) pasted made a folder
    of that name where the user stood.

    Example:
        >>> fresh_sibling(Path("/nonexistent/run"), ".fp32")
        PosixPath('/nonexistent/run.fp32')
    """
    if path.name in ("", ".", ".."):
        path = Path(os.path.normpath(path / ".." / path.resolve().name))
    if not path.name:  # the root folder: nothing beside it
        path = path / "weights"
    candidate, number = path.with_name(path.name + mark), 2
    while os.path.lexists(candidate):
        candidate, number = path.with_name(f"{path.name}{mark}-{number}"), number + 1
    return candidate


def refuse_foreign_output(text: str) -> None:
    """Refuse an output path written for another shell or system, which would be made here under a literal name:
    `-o 'C:\\models\\m'` (a file or folder named `C:\\models\\m` in the working directory), `-o 'out\\m.bin'`
    beside a folder `out`, `-o '$HOME/m'` in single quotes (a folder named `$HOME`). A `$NAME` folder that exists
    as such is the user's own and is written into.

    Raises:
        UsageError: naming the path, what it would have made, and the path meant where it is known.
    """
    from weightdoctor.errors import UsageError

    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme:
        # `-o s3://bucket/model`, `-o hf://org/name`: made here as the folders `s3:/bucket/model` (pathlib folds `//`).
        local = f": give the path itself: {shell_word(text[len('file://'):])}" \
            if scheme.group(1).lower() == "file" else ""
        raise UsageError(f"{text}: a URL, which would be written here as the folders {scheme.group(1)}:/...; outputs "
                         f"are written to local paths only{local}; nothing written")
    if re.match(r"[A-Za-z]:[\\/]", text) and not exists(expand_user(text[:2])):
        # `C:/models/m` too (Python on Windows takes it): a folder `C:` was made here. One that exists is the user's.
        how = ("folders are separated by / (under WSL, C:\\ is /mnt/c/)" if text[2] == "\\" else
               f"there are no drive letters here (under WSL, {text[:2]}/ is /mnt/{text[0].lower()}/)")
        raise UsageError(f"{text}: a Windows path, which would be written here as a file or folder of that literal "
                         f"name (nothing written): {how}")
    # A file or folder of that literal name is the user's own (an earlier output, replaced with --force), as a `C:`
    # or `$NAME` folder is: refused, `a\\b` beside a folder `a` could not be named at all.
    if "\\" in text and not (exists(expand_user(text)) or exists(expand_user(text), link=True)):
        slashed = text.replace("\\", "/")
        if "/" in slashed.rstrip("/") and expand_user(slashed.rstrip("/")).parent.is_dir():
            raise UsageError(f"{text}: \\ does not separate folders here, / does: did you mean {slashed}? (nothing "
                             "written)")
    variable = unexpanded_variable(text)
    if variable is None:
        return
    # The path up to the part that holds the variable: a file or folder of that literal name there is the user's.
    parts = text.split("/")
    at = next(i for i, part in enumerate(parts) if unexpanded_variable(part))
    literal = expand_user("/".join(parts[:at + 1]))
    if exists(literal) or exists(literal, link=True):
        return
    expanded = os.path.expandvars(text)
    meant = f": did you mean {expanded}?" if expanded != text else " (and it is not set here either)"
    raise UsageError(f"{text}: {variable} was not expanded (the shell replaces it only outside single quotes), so a "
                     f"file or folder named {parts[at]} would be made; nothing written{meant}")


# `$HOME`, `${MODEL_DIR}`: a shell variable, as a shell writes one.
_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def unexpanded_variable(text: str) -> str | None:
    """The shell variable `text` holds as typed (`'$HOME/m'` in single quotes, a path read from a file or a
    config), which the shell would have replaced; None when it holds none.

    Example:
        >>> unexpanded_variable("$HOME/m"), unexpanded_variable("${MODEL}/x"), unexpanded_variable("a$1")
        ('$HOME', '${MODEL}', None)
    """
    found = _VARIABLE.search(text)
    return found.group(0) if found else None


def variable_hint(text: str) -> str:
    """For a path that does not exist because a shell variable in it was never expanded: the path meant where it
    exists, else what happened; "" when `text` holds no variable.

    Example:
        >>> variable_hint("$NO_SUCH_VARIABLE_HERE/m").split(":")[0]
        '; $NO_SUCH_VARIABLE_HERE was not expanded (it is not set here either)'
    """
    variable = unexpanded_variable(text)
    if variable is None:
        return ""
    why = "the shell replaces it only outside single quotes"
    expanded = os.path.expandvars(text)
    if expanded == text:
        return f"; {variable} was not expanded (it is not set here either): {why}"
    if exists(expand_user(expanded)):
        return f"; did you mean {expanded}? ({variable} was not expanded: {why})"
    return f"; {variable} was not expanded: {why} (and {expanded} does not exist either)"


def unicode_form_hint(text: str) -> str:
    """For a path that does not exist as typed but does with its accented letters composed (NFC) or decomposed (NFD),
    as a name copied from macOS or a web page may be written: that path; else "".

    The two forms look the same on screen, and Linux file systems hold a name's bytes as written.
    """
    if text.isascii():
        return ""
    import unicodedata

    for form in ("NFC", "NFD"):
        other = unicodedata.normalize(form, text)
        if other != text and exists(expand_user(other)):
            return (f"; the same name exists with its accented letters written in Unicode form {form}, which looks "
                    f"the same: did you mean {other!r}?")
    return ""


def too_long(text: str) -> str | None:
    """Why the system cannot open `text` at all, whether or not it exists: a name past NAME_MAX (255 bytes on
    Linux) or a path past PATH_MAX (4,096), for which it answers ENAMETOOLONG; None for a path of a length it takes.

    A folder that exists deeper than PATH_MAX was said to be "no such file or directory".

    Example:
        >>> too_long("a" * 300)
        'a name on the path is 300 bytes long, past the limit of 255 bytes a file name may have'
    """
    encoded = os.fsencode(text)
    name_max, path_max = _limit("PC_NAME_MAX", 255), _limit("PC_PATH_MAX", 4096)
    longest = max(len(part) for part in encoded.split(b"/"))
    if longest > name_max:
        return f"a name on the path is {longest:,} bytes long, past the limit of {name_max} bytes a file name may have"
    if len(encoded) >= path_max:
        return (f"the path is {len(encoded):,} bytes long, past the system's limit of {path_max - 1:,} (PATH_MAX): "
                "cd into a folder on the way and give the rest of the path from there")
    return None


def _limit(name: str, default: int) -> int:
    try:
        return os.pathconf("/", name)
    except (OSError, ValueError):
        return default


def denied(name: str) -> str:
    """The one line for a path the system refused with EACCES: the folder on the way that cannot be entered, the
    folder that cannot be listed or the file that cannot be read, where this user's permissions say which; the path
    itself otherwise. "permission denied: [Errno 13] Permission denied: 'model/latest'" named a file that does not
    exist, looked for inside a folder that could not be entered.

    Example:
        >>> denied("/nonexistent/model.safetensors")
        '/nonexistent/model.safetensors: permission denied'
    """
    path = Path(name)
    if os.geteuid() != 0:  # root passes these checks: what refused it is not a permission bit
        for folder in [*reversed(path.parents), path]:
            if str(folder) != "." and os.path.isdir(folder) and not os.access(folder, os.X_OK):
                return f"{folder}: permission denied: this folder cannot be entered (no search permission)"
        if os.path.isdir(path) and not os.access(path, os.R_OK):
            return f"{path}: permission denied: this folder cannot be listed (no read permission)"
        if os.path.exists(path) and not os.access(path, os.R_OK):
            return f"{path}: permission denied: this file cannot be read (no read permission)"
    return f"{path}: permission denied"


def entries_under(folder: Path) -> list[Path]:
    """Every entry below `folder` (files, folders, links), sorted, as `sorted(folder.rglob("*"))` lists them: links
    to folders are listed, not entered, and a folder that cannot be listed adds nothing. Walked without recursion:
    rglob (and os.walk) recurse once per level, and a folder nested 1,500 deep (a tarball's, or a Hub cache's
    refs/) ended in "unexpected RecursionError".

    Example:
        >>> entries_under(Path("no-such-folder-here"))
        []
    """
    found: list[Path] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as listing:
                entries = list(listing)
        except OSError:
            continue
        for entry in entries:
            path = current / entry.name
            found.append(path)
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(path)
            except OSError:
                pass
    return sorted(found)
