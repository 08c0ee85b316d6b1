"""The `weightdoctor` program: the fast path for plain runs, else the Typer app (`weightdoctor.cli`).

Importing this module imports neither Typer nor anything heavy.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import sys


def main() -> None:
    from weightdoctor.commands._errors import record_interrupts
    from weightdoctor.commands._fast import parse_fast, run_fast

    record_interrupts()
    _refuse_closed_streams()
    _tolerate_lone_surrogates()
    _refuse_deleted_cwd()
    _bound_columns()
    # transformers' own log lines (a config's `bos_token_id` outside a tiny test vocabulary, deprecations)
    # are about its internals, not the checkpoint: weightdoctor says what matters itself. A user's own
    # TRANSFORMERS_VERBOSITY still wins.
    if not os.environ.get("TRANSFORMERS_VERBOSITY"):
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    try:
        fast = parse_fast(sys.argv[1:])
        if fast is None:
            _run_app()
            return
        if not fast[1].get("values"):
            # A headers-only run keeps nearly everything it allocates until the `os._exit` below, so each
            # collection of the cyclic garbage collector walks 100,000s of live objects and frees none
            # (~5 ms of a 10,000-key diff); reference counting still frees the rest. A --values run, which
            # reads tensors (and imports torch), keeps the collector.
            gc.disable()
        from weightdoctor.errors import typed_words

        with typed_words(sys.argv[1:]):  # the paths a line printed names whole (errors.clip_message)
            code = run_fast(*fast)
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        exit_on_closed_pipe()
    # Everything is written and the fast path leaves nothing to clean up (no threads, temporary files or
    # atexit work): skip the interpreter's teardown, which frees every object of a large diff one by one
    # (~5 ms of a 50 ms run, more for 10,000s of keys).
    os._exit(code)


def _run_app() -> None:
    """Run the Typer app (it exits), so that memory refused outside a command's own error handling ends in one line
    and exit 2, as it does inside.

    Under `ulimit -v` a little above what importing torch needs (mem9, measured with diff-keys --model-class and
    plan-devices of a tiny model): importing the app, or Typer's handling of what a command raised, was refused
    memory too, and the run ended in "Error in sys.excepthook" and a traceback, exit 1 (read as findings); after
    a refusal had been said, the interpreter's teardown (atexit callbacks, with no room to run) added "Exception
    ignored in atexit callback" lines. A refusal said, the run exits at once, as the fast path always does.
    """
    from weightdoctor.commands import _errors

    try:
        from weightdoctor.cli import app

        app()
    except SystemExit as done:
        if _errors.memory_refused:
            _exit_now(done.code if isinstance(done.code, int) else 2)
        raise
    except (MemoryError, OSError, SystemError) as exc:
        if isinstance(exc, OSError) and exc.errno != errno.ENOMEM or (
                isinstance(exc, SystemError) and not _errors.refused_without_saying(exc)):
            raise
        _errors.write_memory_refusal(exc)
        _exit_now(2)


def _exit_now(code: int) -> None:
    """Flush what was written and exit with `code` without the interpreter's teardown."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, MemoryError):
            stream.flush()
    os._exit(code)


# What the reports' own glyphs become on a console that cannot encode them (PYTHONIOENCODING=ascii, a latin-1
# locale). One character for those that sit in table cells (×, ·, ‖), so the columns stay aligned (each took six
# as `\u00d7`); a readable pair in running text (`->`, `+-`), where a panel's right border may then shift.
_ASCII_GLYPHS = {
    "\u00d7": "x", "\u2192": "->", "\u00b7": "-", "\u2016": "|", "\u2212": "-", "\u2013": "-", "\u2014": "-",
    "\u2026": "...", "\u2248": "~=", "\u2261": "=", "\u0394": "d", "\u2588": "#", "\u2591": ".", "\u2022": "*",
    "\u00b1": "+-", "\u2265": ">=", "\u2264": "<=", "\u221a": "sqrt", "\u00b2": "^2", "\u00b5": "u",
}
_ERRORS = "weightdoctor-ascii"


def _ascii_fallback(error: UnicodeError) -> tuple[str, int]:
    """The codec error handler behind `_tolerate_lone_surrogates`: the reports' glyphs as ASCII, anything else
    (text read from a checkpoint) as its backslash escape, so a name is never shown as another name."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start:error.end]
    return "".join(_ASCII_GLYPHS.get(char) or char.encode("ascii", "backslashreplace").decode("ascii")
                   for char in text), error.end


def _tolerate_lone_surrogates() -> None:
    """Write what the console cannot encode instead of failing with UnicodeEncodeError: a lone surrogate as its
    `\\udcff` escape, the reports' glyphs (×, →, ±) as ASCII on an ASCII or latin-1 console.

    Text read from a checkpoint (a config's `"model_type": "\\ud800"`, a tensor name, a file name's
    non-UTF-8 byte) may hold one; a report must still print, and JSON escapes them itself (render/json.py).
    """
    import codecs

    codecs.register_error(_ERRORS, _ascii_fallback)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            # A stream that cannot change (closed, or not a text stream of its own) is left as it is.
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors=_ERRORS)


def _bound_columns() -> None:
    """`COLUMNS=0` made Rich lay every report (and Typer its `--help`) out 0 columns wide: nothing printed, exit 0;
    `COLUMNS=1` printed panel corners only. A width under `render.console.MIN_WIDTH` (kept in step by a test) is
    raised to it before either reads the variable; the terminal wraps the longer lines. `COLUMNS=100000` drew
    every panel 100,000 columns wide, 3 MB of padding for a 3-tensor report: a width past `MAX_WIDTH` is lowered
    to it."""
    columns = os.environ.get("COLUMNS", "")
    if not (columns.isascii() and columns.isdigit()):
        return
    width = min(max(int(columns[:8]) if len(columns) <= 8 else _MAX_WIDTH, _MIN_WIDTH), _MAX_WIDTH)
    if str(width) != columns:
        os.environ["COLUMNS"] = str(width)


# weightdoctor.render.console's MIN_WIDTH and MAX_WIDTH, not imported: Rich is not needed on the fast path.
_MIN_WIDTH = 40
_MAX_WIDTH = 1000


def _refuse_closed_streams() -> None:
    """Started with stdout or stderr closed (`weightdoctor ... >&-`, a daemon without descriptors), Python sets
    `sys.stdout` / `sys.stderr` to None: the first line written raised AttributeError, which left an uncaught
    traceback and exit 1 (read as "findings") on the fast path, an "unexpected AttributeError" elsewhere.

    A closed stderr is pointed at /dev/null (an error line is lost, its exit code is not); with stdout closed the
    report has nowhere to go: one line on stderr and exit 2, before anything is read.
    """
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 -- lives as long as the process
    if sys.stdout is None:
        sys.stderr.write("error: stdout is closed: the report has nowhere to go (redirect it, e.g. >/dev/null)\n")
        sys.stderr.flush()
        os._exit(2)


def _refuse_deleted_cwd() -> None:
    """Run from a folder that was deleted (another shell's `rm -rf`, a checkout switched under it), every relative
    path failed with "file not found: [Errno 2] No such file or directory", naming no file, and importing torch
    killed the process ("Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so"). One line and exit 2 instead, as
    git does, before anything is read; `--help` and `--version` still answer.
    """
    if any(arg in ("-h", "--help", "--version") for arg in sys.argv[1:]):
        return
    try:
        os.getcwd()
    except FileNotFoundError:
        if _no_relative_path(sys.argv[1:]):
            # `inspect /abs/model`: nothing typed is read against the folder that is gone, so the run goes on from
            # / (where torch's import works again). A relative word would be looked up there instead: refused below.
            with contextlib.suppress(OSError):
                os.chdir("/")
                return
        # The shell's $PWD names it, where it is the folder that is gone (not one left over from a parent shell).
        shown = os.environ.get("PWD", "")
        named = f"{shown}: " if shown.startswith("/") and not os.path.isdir(shown) else ""
        with contextlib.suppress(OSError):  # stderr full or closed by its reader: the exit code still says it
            sys.stderr.write(f"error: {named}the current folder no longer exists (it was deleted or moved): cd into "
                             "an existing folder and run the command again; nothing was read or written\n")
            sys.stderr.flush()
        os._exit(2)


def _no_relative_path(args: list[str]) -> bool:
    """Whether no word of `args` can be a relative path: the command's name, options (a value attached to one,
    `--output=/x` or `-o/x`, absolute) and absolute paths only. An option's value given as the next word
    (`--dtype bf16`) is not told apart from a relative path here, so it counts as one.

    Example:
        >>> _no_relative_path(["inspect", "/m", "--json"]), _no_relative_path(["convert", "/m", "-o", "out"])
        (True, False)
    """
    command_seen = options_done = False
    for arg in args:
        if not options_done and arg == "--":
            options_done = True
        elif not options_done and arg.startswith("--"):
            _, has_value, value = arg.partition("=")
            if has_value and not _absolute(value):
                return False
        elif not options_done and arg.startswith("-") and len(arg) > 1:
            if len(arg) > 2 and not _absolute(arg[2:]):
                return False
        elif not command_seen and not options_done and arg and "/" not in arg:
            command_seen = True
        elif not _absolute(arg):
            return False
    return True


def _absolute(word: str) -> bool:
    """Whether `word` names an absolute path once `~` is expanded: a HOME that is relative (`HOME=relhome`) or a
    `~name` of no known user leaves a relative path, which from / was `/relhome/x`: an output written under /."""
    return os.path.isabs(os.path.expanduser(word))


def exit_on_closed_pipe() -> None:
    """The reader of stdout went away (`weightdoctor ... | head`): stop quietly, as Unix tools do (128 + SIGPIPE).

    Python would otherwise print an error while flushing stdout at exit; stdout is pointed at /dev/null first.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os._exit(141)
