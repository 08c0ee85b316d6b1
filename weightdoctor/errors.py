"""The project's exception types: the core raises these, the CLI maps them to one line and exit 2."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

# The longest message a line on stderr shows (`render.console.error` and `warn` cut it): text from a file (a
# tensor name of a megabyte, a shape of a million dimensions, a dtype of a megabyte) made error lines of 1-3 MB.
# The middle goes; what the line says at its end (what was refused, what to do) stays.
MAX_MESSAGE_CHARS = 4000


def clip_middle(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text`, or its beginning and end with a count of what was left out between them when it is longer than
    `limit` characters.

    Example:
        >>> clip_middle("a" * 30 + "b" * 30, 20)
        'aaaaaaaaaaaaaaa ... (40 characters left out) ... bbbbb'
    """
    if len(text) <= limit:
        return text
    head, tail = limit * 3 // 4, limit // 4
    return f"{text[:head]} ... ({len(text) - head - tail:,} characters left out) ... {text[len(text) - tail:]}"


# The words of the command line being run, set by the CLI where it has them (`typed_words`): the paths that
# `clip_message` leaves whole in the lines the consoles print. Read from sys.argv before, an in-process run
# (CliRunner, a caller's own Typer app) had its paths measured against the host process's arguments (pytest's).
_TYPED_WORDS: ContextVar[tuple[str, ...]] = ContextVar("weightdoctor_typed_words", default=())


@contextmanager
def typed_words(words: Iterable[str]) -> Iterator[None]:
    """Within the block, `current_typed_words()` gives `words`, the arguments of the command being run (the CLI sets
    them for the lines its consoles print); outside it, the words of any enclosing block, else none."""
    token = _TYPED_WORDS.set(tuple(words))
    try:
        yield
    finally:
        _TYPED_WORDS.reset(token)


def current_typed_words() -> tuple[str, ...]:
    """The arguments the command being run was given (`typed_words`); () outside a CLI run."""
    return _TYPED_WORDS.get()


def clip_message(text: str, limit: int = MAX_MESSAGE_CHARS, typed: Sequence[str] = ()) -> str:
    """`clip_middle` for a line that may print a command or Python call to paste: the paths the user typed
    (`typed`: the CLI passes the command line's words) and the folder they stand in, which that code repeats whole,
    do not count toward the limit, so that a command naming a long path is not cut in its middle, unrunnable; a line
    made long by text from a file (a tensor name of a megabyte) is still cut. Each folder name of those paths is
    left out of the count where the line holds it, however the path around it is quoted. Nothing global is read
    but the working folder: the process's own arguments (sys.argv) may belong to another program.

    Example:
        >>> deep = "/".join(["d" * 200] * 15) + "/w.npz"
        >>> line = f"{deep}: numpy.load({deep!r}) reads it; numpy.load({deep!r})['a'] is one array"
        >>> clip_message(line, 4000, [deep]) == line, "left out" in clip_middle(line, 4000)
        (True, True)
    """
    if len(text) <= limit:
        return text
    import os

    try:
        here = os.getcwd()
    except OSError:  # the folder was removed under the run: an error line must still print
        here = ""
    words = [*typed, here]
    # Long names only (a path's short names prove nothing), longest first: one inside another is not left out twice.
    names = sorted({name for word in words for name in re.split(r"[/\\]", word) if len(name) >= 16}, key=len,
                   reverse=True)
    measured = text
    for name in names:
        measured = measured.replace(name, "")
    return text if len(measured) <= limit else clip_middle(text, limit)


def clip_words(text: str, limit: int) -> str:
    """`text`, or as many of its first words as fit in `limit` characters and `…`, when it is longer: a library's
    message cut at a fixed length ended mid-word ("restart your runtime after installati").

    Example:
        >>> clip_words("requires the timm library but it was not found", 30), clip_words("short", 30)
        ('requires the timm library …', 'short')
        >>> clip_words("x" * 40, 10)  # one word longer than half the limit: cut where it must be, and marked
        'xxxxxxxxx…'
    """
    if len(text) <= limit:
        return text
    space = text.rfind(" ", 0, limit - 1)  # the words before it and " …" fit in `limit`
    if space >= limit // 2:
        return text[:space].rstrip() + " …"
    return text[:limit - 1] + "…"


# A line break and the blanks around it; other runs of blanks are kept, since a quoted path or a command line to be
# pasted (`inspect 'a  b.pt'`) says what it says with every space.
_LINE_BREAK = re.compile(r"\s*[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]\s*")


def on_one_line(text: str) -> str:
    r"""`text` with each line break (and the blanks around it) made one space; other spaces kept as they are.

    Example:
        >>> on_one_line("no such file:\n    inspect 'a  b.pt'\n")
        "no such file: inspect 'a  b.pt'"
    """
    return _LINE_BREAK.sub(" ", text).strip()


def closest(wanted: str, candidates: Iterable[str], *, key: Callable[[str], str] = str.lower, n: int = 1,
            cutoff: float = 0.6) -> list[str]:
    """The candidates spelled closest to `wanted`, best first, compared through `key` (case aside by default):
    the one equal to it under `key` alone, else up to `n` that difflib finds at `cutoff` or above.

    Example:
        >>> closest("bertmodel", ["BertModel", "BertConfig"]), closest("zzz", ["info"])
        (['BertModel'], [])
    """
    import difflib

    by_key = {key(candidate): candidate for candidate in candidates}
    wanted = key(wanted)
    if wanted in by_key:
        return [by_key[wanted]]
    return [by_key[match] for match in difflib.get_close_matches(wanted, list(by_key), n=n, cutoff=cutoff)]


def did_you_mean(value: str, choices: tuple[str, ...] | list[str]) -> str:
    """`"; did you mean 'warn'?"` for a choice mistyped (`warning`, `Auto`, `balanced-low-0`), else "".

    Example:
        >>> did_you_mean("warning", ("info", "warn", "error")), did_you_mean("zzz", ("info",))
        ("; did you mean 'warn'?", '')
    """
    close = closest(value, choices, key=lambda text: text.strip().lower().replace("-", "_"))
    return f"; did you mean {close[0]!r}?" if close else ""


def choose(option: str, value: str, choices: tuple[str, ...]) -> str:
    """The one of `choices` that `value` names, case and surrounding spaces aside (`--fail-on WARN`, `--strategy
    Balanced`, as `--dtype FP16` was always read); every choice option refuses anything else in one message.

    Example:
        >>> choose("--fail-on", "WARN", ("info", "warn", "error"))
        'warn'

    Raises:
        UsageError: `"--fail-on 'warning': choose one of info, warn, error; did you mean 'warn'?"`.
    """
    typed = value.strip().lower()
    match = next((choice for choice in choices if choice.lower() == typed), None)
    if match is None:
        raise UsageError(f"{option} {value!r}: choose one of {', '.join(choices)}{did_you_mean(value, choices)}")
    return match


@contextmanager
def re_deprecations_refused() -> Iterator[None]:
    """Raise the DeprecationWarning `re` gives for what Python 3.12 refuses (as 3.12's re.error says it), and keep
    quiet its FutureWarning for a pattern a later Python may read otherwise (`[[]`: "Possible nested set"): the
    pattern means today what the user wrote, and the warning was two more lines on stderr beside the answer."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def compile_user_regex(option: str, pattern: str) -> re.Pattern[str]:
    """`re.compile(pattern)` for a regular expression the user gave to `option`.

    re refuses some with neither re.error nor a message a user reads as one: groups nested thousands deep
    (`((((...`) overflow its recursive parser (RecursionError), and a count past its limit (`a{4294967295}`)
    raises OverflowError; each ended a command with 'unexpected RecursionError'.

    Example:
        >>> compile_user_regex("-f", "a{4294967295}")
        Traceback (most recent call last):
        weightdoctor.errors.UsageError: -f 'a{4294967295}': bad regular expression (the repetition number is too large)

    Python 3.12's re refuses what 3.11's took with a DeprecationWarning, which no user sees (a group reference of
    other digits than ASCII ones, `(?(١)a|b)`): refused here on every Python, with 3.12's words.

    Raises:
        UsageError: naming the option and the pattern, and what is wrong with it.
    """
    try:
        with re_deprecations_refused():
            return re.compile(pattern)
    except (re.error, DeprecationWarning) as exc:
        reason = str(exc)
    except RecursionError:
        reason = "groups nested too deeply for Python's re to read"
    except OverflowError as exc:  # "the repetition number is too large"
        reason = str(exc)
    raise UsageError(f"{option} {pattern!r}: bad regular expression ({reason})" + glob_hint(pattern))


def glob_hint(pattern: str) -> str:
    """For a shell glob given where a regular expression is expected (`*LayerNorm*`, which re refuses: "nothing to
    repeat"), the expression meant; else "".

    Example:
        >>> glob_hint("*LayerNorm*"), glob_hint("[0")
        ("; a regular expression, not a shell glob: write 'LayerNorm'", '')
    """
    if "*" not in pattern and "?" not in pattern:
        return ""
    if any(char in pattern for char in _REGEX_ONLY):
        # Written in regex syntax (a group, an alternation, an escape, an anchor): a mistake in the regex, which
        # "not a shell glob: write '^\\(.<name>x\\)$'" only hid.
        return ""
    import re

    # A search matches anywhere: stars at the ends mean nothing; inside, `*` is `.*`, `?` is `.`, a dot is literal,
    # and a glob's `[0-3]` (`[!0]`) is a regex's `[0-3]` (`[^0]`).
    core = pattern.strip("*")
    meant = "".join(re.escape(part) if kind is None else kind for part, kind in _glob_parts(core))
    if core and not pattern.endswith("*"):
        meant += "$"
    if core and not pattern.startswith("*"):
        meant = "^" + meant
    return f"; a regular expression, not a shell glob: write '{meant}'" if core else ""


# Characters a shell glob does not use and a regular expression does.
_REGEX_ONLY = frozenset("()|+{}\\^$")


def _glob_parts(glob: str) -> list[tuple[str, str | None]]:
    """`glob` as (text, its regex) pairs: None for literal text, which the caller escapes."""
    parts: list[tuple[str, str | None]] = []
    i = 0
    while i < len(glob):
        char = glob[i]
        # `[]x]`, `[!]x]`: a ] first in the class (after a `!`) belongs to it
        end = glob.find("]", i + 2 + (glob[i + 1:i + 2] == "!")) if char == "[" else -1
        if char == "*":
            parts.append((char, ".*"))
        elif char == "?":
            parts.append((char, "."))
        elif end != -1:
            inner = glob[i + 1:end]
            parts.append((glob[i:end + 1], "[" + ("^" + inner[1:] if inner.startswith("!") else inner) + "]"))
            i = end
        else:
            parts.append((char, None))
        i += 1
    return parts


class WeightDoctorError(Exception):
    """Base class of every error weightdoctor reports to a user.

    The message is one line that says what is wrong; `path`, when known, names the file it is about.
    The CLI prints `error: <path>: <message>` and exits with `exit_code`.
    """

    exit_code: int = 2

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def one_line(self) -> str:
        text = on_one_line(self.message)
        return f"{self.path}: {text}" if self.path else text


class SourceNotFound(WeightDoctorError):
    """The source is neither an existing path nor a repo id found in the cache or on the Hub."""


class UnsupportedFormat(WeightDoctorError):
    """The file exists but is not a checkpoint format weightdoctor reads."""


class CorruptCheckpoint(WeightDoctorError):
    """The file claims a known format but its bytes are inconsistent (truncated, bad header, ...)."""


class UnsafePickle(WeightDoctorError):
    """A pickle imports something that could run code; nothing was unpickled."""


class UnsupportedEnvironment(WeightDoctorError):
    """The installed libraries cannot do this safely (torch older than the version weightdoctor requires)."""


class InvalidIndex(CorruptCheckpoint):
    """A sharded checkpoint's index JSON is inconsistent with its shards."""


class UsageError(WeightDoctorError):
    """A flag value or combination that cannot be honoured (bad size string, unknown dtype, ...)."""


class OutputError(WeightDoctorError):
    """An output could not be written; nothing half-written was left behind."""
