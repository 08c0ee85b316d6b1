"""Key renames: the `--rename REGEX=REPL` syntax shared by `diff-keys` (which suggests them) and `convert`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import getitem, ne

from weightdoctor.errors import UsageError, clip_words, compile_user_regex, re_deprecations_refused

# The longest name a rename may make: the reader's limit for a name read from a file (checkpoint/reader.py
# MAX_NAME_CHARS; a test holds them equal). 24 `--rename '(.*)=\1\1'` doubled every name 2**24 times: 6 GB and
# minutes before the first line of the report.
MAX_NAME_CHARS = 1 << 20


def _refuse_long(rename: Rename, longest: int) -> None:
    if longest > MAX_NAME_CHARS:
        raise UsageError(f"{clip_words(rename.as_flag(), 200)} makes a name of {longest:,} characters (the limit is "
                         f"{MAX_NAME_CHARS:,}): no model names a tensor so")


@dataclass(frozen=True)
class Rename:
    """Replace the first match of `pattern` in a key with `replacement` (Python `re.sub` syntax)."""

    pattern: str
    replacement: str

    def __post_init__(self) -> None:
        compile_user_regex("--rename", self.pattern)

    def apply(self, name: str) -> str:
        renamed = re.sub(self.pattern, self.replacement, name, count=1)
        _refuse_long(self, len(renamed))
        return renamed

    def as_flag(self) -> str:
        """The command-line flag that reproduces this rename, quoted for a POSIX shell."""
        # parse_rename splits at the first `=` not after a backslash and unescapes `\=`: a `=` of the pattern
        # goes back escaped, or the flag would split there (`a=b` -> pattern `a`, replacement `=b=...`).
        pattern = self.pattern.replace("=", "\\=")
        from weightdoctor.paths import shell_word

        return f"--rename {shell_word(f'{pattern}={self.replacement}')}"


def parse_rename(spec: str) -> Rename:
    """Parse `REGEX=REPL` (split at the first `=` not preceded by a backslash).

    Example:
        >>> parse_rename(r"module\\.=")
        Rename(pattern='module\\\\.', replacement='')
    """
    match = re.match(r"^((?:[^=\\]|\\.)*)=(.*)$", spec, flags=re.DOTALL)
    if not match or not match.group(1):
        raise UsageError(f"--rename {spec!r}: expected REGEX=REPLACEMENT, e.g. 'module\\.=' or '^=model.'")
    rename = Rename(match.group(1).replace("\\=", "="), match.group(2))
    try:
        with re_deprecations_refused():
            compiled = re.compile(rename.pattern)
        # The replacement's group references are checked only where a name matches: check them now, against
        # the pattern. `sub` parses its template before it searches, even an empty string (every Python from 3.8:
        # 3.12 renamed the private parser that was called here, and a bad group reached the user as "unexpected
        # IndexError", seen on a GPU machine's Python 3.12).
        # Python 3.11 takes with a DeprecationWarning (unseen) a group reference 3.12 refuses (`\g<١>`, `\g< 1>`):
        # refused on every Python, or the rename and the Python snippet it prints fail where users run 3.12.
        with re_deprecations_refused():
            compiled.sub(rename.replacement, "")
    except (re.error, IndexError, DeprecationWarning) as exc:
        raise UsageError(f"--rename {spec!r}: {exc}") from exc
    from weightdoctor.quantized import refuse_unbounded_regex

    refuse_unbounded_regex("--rename", rename.pattern)  # the user's patterns; the built-in ones are not parsed here
    return rename


def strip_prefix(prefix: str) -> Rename:
    return Rename("^" + re.escape(prefix), "")


def add_prefix(prefix: str) -> Rename:
    return Rename("^", prefix.replace("\\", "\\\\"))


_ESCAPED = re.compile(r"\\(x3d|.)", flags=re.DOTALL)
_SPARING = re.compile(r"\^\(\?!\(\?:(.*?)\)\\\.\)")


def _unescape(text: str) -> str:
    """Undo `re.escape` (and the `\\x3d` spelling of `=` that `--rename` suggestions use)."""
    return _ESCAPED.sub(lambda m: "=" if m.group(1) == "x3d" else m.group(1), text)


def _escaped(text: str) -> tuple[str, str]:
    return re.escape(text), re.escape(text).replace("=", "\\x3d")


def literal_prefix(rename: Rename) -> tuple[str, str, tuple[str, ...]] | None:
    """`(old, new, spared)` when `rename` replaces the literal prefix `old` with `new`, leaving names that
    start with one of `spared` alone; None for any other regex.

    This is the plain-string form of the prefix renames `diff-keys` suggests (`^module\\.` -> "",
    `^` -> "model.", `^(?!(?:lm_head)\\.)` -> "model."): `old` is accepted only when escaping it gives
    back the pattern exactly, and `new` only when the replacement has no escapes but doubled backslashes,
    so the string form renames every key exactly as the regex does.

    Example:
        >>> literal_prefix(Rename(r"^module\\.", ""))
        ('module.', '', ())
        >>> literal_prefix(Rename(r"module\\.", "")) is None  # not anchored: matches anywhere
        True
    """
    pattern = rename.pattern
    if not pattern.startswith("^"):
        return None
    spared: tuple[str, ...] = ()
    rest = pattern[1:]
    sparing = _SPARING.match(pattern)
    if sparing is not None:
        heads = [_unescape(h) for h in sparing.group(1).split("|")]
        rest = pattern[sparing.end():]
        rebuilt = "|".join(re.escape(h) for h in heads)
        if sparing.group(1) not in (rebuilt, rebuilt.replace("=", "\\x3d")):
            return None
        spared = tuple(h + "." for h in heads)
    old = _unescape(rest)
    if rest not in _escaped(old):
        return None
    new = rename.replacement.replace("\\\\", "\\")
    if new.replace("\\", "\\\\") != rename.replacement:
        return None  # an escape or a group reference: only the regex knows
    return old, new, spared


def _one_at_most(prefixes: dict[str, str]) -> bool:
    """Whether prefix renames (old -> new) applied in any order change each name by one of them at most, the
    one whose old prefix the name has: no old prefix starts another, no new prefix starts an old one or starts
    with one (a renamed name then matches no other of them).

    Example:
        >>> _one_at_most({"l.0.": "l.16.", "l.1.": "l.17."}), _one_at_most({"l.0.": "l.1.", "l.1.": "l.2."})
        (True, False)
    """
    if len(set(prefixes.values())) != len(prefixes):
        return False
    # Sorted, a string that starts another comes before it, and so do all between them: a scan forward from
    # each string while the next ones start with it finds every such pair (and stops at the first).
    words = sorted([*((old, 0) for old in prefixes), *((new, 1) for new in prefixes.values())])
    for index, (word, kind) in enumerate(words):
        for other, other_kind in words[index + 1:]:
            if not other.startswith(word):
                break
            if kind == 0 or other_kind == 0:
                return False
    return True


def _prefix_runs(renames: list[Rename]) -> Iterator[tuple[list[Rename], dict[str, str] | None]]:
    """`renames` cut into runs, in order: `(run, old prefix -> new prefix)` for a run of two or more prefix
    renames (`literal_prefix`, sparing no name) that `_one_at_most` lets apply all at once, else
    `([rename], None)` a rename. A renumbered block's one rename a layer (`^model\\.layers\\.0\\.=model.layers.16.`,
    ...) is such a run: one lookup a name, not one test a name and a rename.
    """
    run: list[Rename] = []
    prefixes: dict[str, str] = {}

    def flush() -> Iterator[tuple[list[Rename], dict[str, str] | None]]:
        if len(run) > 1 and len(prefixes) == len(run) and _one_at_most(prefixes):
            yield list(run), dict(prefixes)
        else:
            yield from (([rename], None) for rename in run)
        run.clear()
        prefixes.clear()

    for rename in renames:
        literal = literal_prefix(rename)
        if literal is None or literal[2] or not literal[0]:
            yield from flush()
            yield [rename], None
            continue
        run.append(rename)
        prefixes[literal[0]] = literal[1]
    yield from flush()


def rename_all(names: Iterable[str], renames: Iterable[Rename]) -> list[str]:
    """Each name through every rename in order, as `Rename.apply` would, for many names at once.

    Prefix renames (see `literal_prefix`) are applied as string operations, others as one compiled regex.
    """
    result = list(names)
    for run, prefixes in _prefix_runs(list(renames)):
        if prefixes is not None:
            lengths = sorted({len(old) for old in prefixes})
            renamed = []
            for name in result:
                for length in lengths:
                    new = prefixes.get(name[:length])
                    if new is not None:
                        name = new + name[length:]
                        break
                renamed.append(name)
            result = renamed
            _refuse_long(run[-1], max(map(len, result), default=0))
            continue
        (rename,) = run
        literal = literal_prefix(rename)
        if literal is None:
            sub = re.compile(rename.pattern).sub
            replacement = rename.replacement
            result = [sub(replacement, name, count=1) for name in result]
            _refuse_long(rename, max(map(len, result), default=0))
            continue
        old, new, spared = literal
        cut = len(old)
        if not spared and all(map(str.startswith, result, repeat(old))):
            # Every name has the prefix (a DDP `module.` on 10,000s of keys): C-level loops, no test per name.
            tails = map(getitem, result, repeat(slice(cut, None)))
            result = list(map(new.__add__, tails)) if new else list(tails)
        else:
            result = [new + name[cut:] if name.startswith(old) and not (spared and name.startswith(spared))
                      else name for name in result]
        _refuse_long(rename, max(map(len, result), default=0))
    return result


def rename_steps(names: Iterable[str], renames: Sequence[Rename]) -> tuple[list[str], list[int]]:
    """`rename_all(names, renames)`, with, for each name, the index in `renames` of the first rename that changes
    it (-1 for none): what one `rename_all` a rename, compared step by step, gives, without a pass over every
    name for each of a renumbered block's hundreds of renames.

    Example:
        >>> rename_steps(["a.0.w", "b"], [Rename("^b", "c"), Rename("^a\\.0\\.", "a.9."), Rename("^a\\.1\\.", "a.8.")])
        (['a.9.w', 'c'], [1, 0])
    """
    result = list(names)
    first = [-1] * len(result)
    position = 0
    for run, prefixes in _prefix_runs(list(renames)):
        if prefixes is None:
            renamed = rename_all(result, run)
            for index in compress(range(len(result)), map(ne, renamed, result)):
                if first[index] < 0:
                    first[index] = position
        else:
            step_of = {old: position + offset for offset, old in enumerate(prefixes)}
            lengths = sorted({len(old) for old in prefixes})
            renamed = list(result)
            for index, name in enumerate(result):
                for length in lengths:
                    new = prefixes.get(name[:length])
                    if new is not None:
                        renamed[index] = new + name[length:]
                        if first[index] < 0 and renamed[index] != name:
                            first[index] = step_of[name[:length]]
                        break
            _refuse_long(run[-1], max(map(len, renamed), default=0))
        result = renamed
        position += len(run)
    return result, first


def apply_renames(names: Iterable[str], renames: list[Rename]) -> dict[str, str]:
    """Map each name through every rename in order; return old -> new.

    Raises:
        UsageError: two keys would get the same new name (the message names both).
    """
    old_names = list(names)
    new_names = rename_all(old_names, renames)
    result = dict(zip(old_names, new_names, strict=True))
    if len(set(new_names)) != len(result):
        taken: dict[str, str] = {}
        for name, new in zip(old_names, new_names, strict=True):
            if new in taken:
                raise UsageError(f"renames map both {taken[new]!r} and {name!r} to {new!r}")
            taken[new] = name
    return result


def _literal(text: str) -> str:
    """`text` as a Python string literal that reads as only itself: `repr` where it is ASCII, or in Unicode form NFC
    with nothing a terminal hides; else `ascii` (red team 38): `re.sub('^café\\\\.', 'café.', ...)` of an NFD key to
    its NFC form read as a rename of a name to itself, and a no-break space as a space."""
    if text.isascii():
        return repr(text)
    import unicodedata

    # Imported here, past the ASCII case: render.text imports Rich, which diff-keys --json's fast path never loads.
    from weightdoctor.render.text import hides_characters

    if unicodedata.is_normalized("NFKC", text) and not hides_characters(text) \
            and text.translate(LOOKALIKE_LATIN) == text:
        return repr(text)
    # Also a compatibility form ('ﬁ', NFKC's 'fi') or a letter drawn as a Latin one (Cyrillic 'а'): redteam39,
    # `re.sub('attention', 'аttention', key)` read as a rename of a name to itself.
    return ascii(text)


# Letters of other scripts drawn as a Latin one in the fonts terminals use (Unicode's confusables.txt, the ones a
# name of code is likely to hold): NFKC folds compatibility forms (the ligature U+FB01 'ﬁ', fullwidth 'ａ') but
# leaves these, as they are letters of their own.
LOOKALIKE_LATIN = str.maketrans(
    "аеорсухіјѕԁԛԝһӏАВЕКМНОРСТХІЈЅ"  # Cyrillic
    "αοϲνρτυχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ"  # Greek
    "ı",
    "aeopcyxijsdqwhlABEKMHOPCTXIJS"
    "aocvptuxABEZHIKMNOPTYX"
    "i",
)


def python_snippet(renames: list[Rename]) -> str:
    """A snippet users paste into training code to apply the same renames to a state dict."""
    lines = ["import re", "", "def rename(key: str) -> str:"]
    for rename in renames:
        lines.append(f"    key = re.sub({_literal(rename.pattern)}, {_literal(rename.replacement)}, key, count=1)")
    lines += ["    return key", "", "state_dict = {rename(k): v for k, v in state_dict.items()}"]
    return "\n".join(lines)
