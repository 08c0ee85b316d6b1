"""The `weightdoctor` program: the fast path for plain runs, else the Typer app (`weightdoctor.cli`).

Importing this module imports neither Typer nor anything heavy.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys


def main() -> None:
    from weightdoctor.commands._fast import parse_fast, run_fast

    _tolerate_lone_surrogates()
    # transformers' own log lines (a config's `bos_token_id` outside a tiny test vocabulary, deprecations)
    # are about its internals, not the checkpoint: weightdoctor says what matters itself. A user's own
    # TRANSFORMERS_VERBOSITY still wins.
    if not os.environ.get("TRANSFORMERS_VERBOSITY"):
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    try:
        fast = parse_fast(sys.argv[1:])
        if fast is None:
            from weightdoctor.cli import app

            app()  # exits
            return
        if not fast[1].get("values"):
            # A headers-only run keeps nearly everything it allocates until the `os._exit` below, so each
            # collection of the cyclic garbage collector walks 100,000s of live objects and frees none
            # (~5 ms of a 10,000-key diff); reference counting still frees the rest. A --values run, which
            # reads tensors (and imports torch), keeps the collector.
            gc.disable()
        code = run_fast(*fast)
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        _exit_on_closed_pipe()
    # Everything is written and the fast path leaves nothing to clean up (no threads, temporary files or
    # atexit work): skip the interpreter's teardown, which frees every object of a large diff one by one
    # (~5 ms of a 50 ms run, more for 10,000s of keys).
    os._exit(code)


def _tolerate_lone_surrogates() -> None:
    """Write a lone surrogate as its `\\udcff` escape instead of failing with UnicodeEncodeError.

    Text read from a checkpoint (a config's `"model_type": "\\ud800"`, a tensor name, a file name's
    non-UTF-8 byte) may hold one; a report must still print, and JSON escapes them itself (render/json.py).
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            # A stream that cannot change (closed, or not a text stream of its own) is left as it is.
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")


def _exit_on_closed_pipe() -> None:
    """The reader of stdout went away (`weightdoctor ... | head`): stop quietly, as Unix tools do (128 + SIGPIPE).

    Python would otherwise print an error while flushing stdout at exit; stdout is pointed at /dev/null first.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os._exit(141)
