"""The one place where exceptions become a message on stderr and an exit code."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from weightdoctor.errors import WeightDoctorError

F = TypeVar("F", bound=Callable[..., Any])

# Exceptions that are not ours but still mean "bad input or usage": type -> prefix of the message.
FOREIGN_ERRORS: tuple[tuple[type[BaseException], str], ...] = (
    (re.error, "bad regular expression"),
    (PermissionError, "permission denied"),
    (FileNotFoundError, "file not found"),
    (IsADirectoryError, "is a directory"),
    (OSError, "cannot read or write"),
    (MemoryError, "out of memory"),
)


def _console() -> Any:
    # Imported on failure only: the happy `--json` path does not need Rich.
    from weightdoctor.render import console

    return console


def handle_errors(command: F) -> F:
    """Wrap a command so that every failure prints one line and exits 2 (130 on Ctrl-C).

    With `--debug` (or WEIGHTDOCTOR_DEBUG=1) the exception propagates and its traceback is shown.
    """
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug")) or os.environ.get("WEIGHTDOCTOR_DEBUG") == "1"
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit, BrokenPipeError):
            raise  # a closed stdout is handled by `cli.main` (exit 141, nothing printed)
        except KeyboardInterrupt:
            _console().error("interrupted")
            raise typer.Exit(130) from None
        except WeightDoctorError as exc:
            if debug:
                raise
            _console().error(exc.one_line())
            raise typer.Exit(exc.exit_code) from None
        except Exception as exc:
            if debug:
                raise
            prefix = next((text for kind, text in FOREIGN_ERRORS if isinstance(exc, kind)), None)
            detail = " ".join(str(exc).split())[:300] or type(exc).__name__
            if prefix is None:
                _console().error(f"unexpected {type(exc).__name__}: {detail} (run with --debug for the traceback)")
            else:
                _console().error(f"{prefix}: {detail}")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
