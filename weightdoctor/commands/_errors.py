"""The one place where exceptions become a message on stderr and an exit code.

Importing this module imports no Typer: the fast path (`weightdoctor.commands._fast`) reports failures with
`report_failure` exactly as the Typer commands do.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

from weightdoctor.errors import WeightDoctorError, clip_words
from weightdoctor.wording import reflow_help

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


def debugging(debug: bool) -> bool:
    """Whether failures show their traceback: `--debug`, or WEIGHTDOCTOR_DEBUG=1."""
    return debug or os.environ.get("WEIGHTDOCTOR_DEBUG") == "1"


_interrupted = False
# Set once a line has said that memory was refused: the run then exits without the interpreter's teardown, which
# has no room to run either (`weightdoctor.entry`).
memory_refused = False


def record_interrupts() -> None:
    """Make Ctrl-C raise KeyboardInterrupt as Python's own handler does, and remember that it came.

    An interrupt that lands inside a library's import (numpy's, under transformers) can be swallowed there and
    resurface as another error: numpy half-imported then recursed ("unexpected RecursionError", exit 2).
    `report_failure` reads the record and says "interrupted", exit 130, whatever the error became.
    """
    import signal

    def handler(signum: int, frame: Any) -> None:
        global _interrupted
        _interrupted = True
        signal.default_int_handler(signum, frame)

    # Ctrl-C set to be ignored (a background job of a script) stays ignored; off the main thread nothing changes.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, handler)


def report_failure(exc: KeyboardInterrupt | Exception, debug: bool, where: str | None = None) -> int:
    """Print the one line that says what went wrong and return the exit code (2; 130 on Ctrl-C): `_report_failure`'s,
    or, where saying it was refused memory too, the plainest line, written straight to stderr.

    Naming the limit that refused memory reads a file (private_map_limits), and the line is rendered by Rich: with
    no room left (plan-devices under `ulimit -d` with 48 MiB of room, its transformers import refused), that raised
    MemoryError in turn, a traceback and exit 1 (read as findings) (mem8).
    """
    global memory_refused
    memory_refused = _is_memory_refusal(exc)
    try:
        return _report_failure(exc, debug, where)
    except (MemoryError, OSError, SystemError) as failed:
        # Importing the console module is refused too: under `ulimit -v` with the room spent, the import system's
        # listing of weightdoctor/render (OSError ENOMEM), a traceback and exit 1 (diff-keys --model-class with a
        # 650 MiB limit, mem9), or its unmarshalling (SystemError, plan-devices with 766 MiB). Any other OSError
        # here is stderr itself failing: the exit code still says it.
        if isinstance(failed, SystemError) and not refused_without_saying(failed):
            raise
        if not isinstance(failed, OSError) or failed.errno == errno.ENOMEM:
            memory_refused = True
            write_memory_refusal(exc, where)
        return 130 if isinstance(exc, KeyboardInterrupt) or _interrupted else 2


def refused_without_saying(exc: BaseException) -> bool:
    """Whether `exc` is CPython's SystemError "error return without exception set" while a memory limit is set on
    this process: a C function (an import's unmarshalling) refused memory that returned without saying so."""
    return (isinstance(exc, SystemError) and "error return without exception set" in str(exc)
            and _limits_set() != "")


def _is_memory_refusal(exc: BaseException) -> bool:
    """Whether `exc` says the system refused memory: a MemoryError, or an OSError ENOMEM."""
    return isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM)


def memory_refusal_line(exc: BaseException | None, where: str | None = None) -> str:
    """The plainest line that says memory was refused, built from what needs no import and little memory: the
    source, the library whose import was refused (from the traceback) and the limit set on this process.

    Example:
        >>> memory_refusal_line(None, "model")  # doctest: +SKIP
        'error: model: out of memory (Cannot allocate memory); ulimit -v is 750 MiB'
    """
    loading = _library(exc) if exc is not None else None
    return (f"error: {f'{where}: ' if where else ''}out of memory"
            + (f" loading {loading}" if loading else "") + f" (Cannot allocate memory){_limits_set()}\n")


def write_memory_refusal(exc: BaseException | None, where: str | None = None) -> None:
    """Write `memory_refusal_line` straight to stderr (file descriptor 2): no Rich, no new import. Where even that
    line cannot be built, a fixed one is written."""
    try:
        line = memory_refusal_line(exc, where).encode(errors="replace")
    except (MemoryError, OSError, ValueError):
        line = b"error: out of memory (Cannot allocate memory)\n"
    with contextlib.suppress(OSError):
        os.write(2, line)


def _limits_set() -> str:
    """"; ulimit -v is 750 MiB" (and the data limit, `ulimit -d`, where set) for the limits of this process that
    refuse memory; "" where none is set or none can be read. `resource` is imported with the interpreter's
    startup on Linux (no file to read), so this works with the room spent."""
    try:
        import resource

        said = [f"ulimit {flag} is {soft >> 20} MiB"
                for flag, which in (("-v", resource.RLIMIT_AS), ("-d", resource.RLIMIT_DATA))
                if (soft := resource.getrlimit(which)[0]) not in (resource.RLIM_INFINITY, 0)]
    except (ImportError, OSError, ValueError, MemoryError):
        return ""
    return f"; {' and '.join(said)}" if said else ""


def _report_failure(exc: KeyboardInterrupt | Exception, debug: bool, where: str | None = None) -> int:
    """Print the one line that says what went wrong and return the exit code (2; 130 on Ctrl-C).

    When `debug`, the traceback is printed first (the exit code stays what it would be: a traceback is not
    a finding). `where` (the source being read) is named in a line about an unexpected error, which knows
    no file of its own.
    """
    if isinstance(exc, KeyboardInterrupt) or _interrupted:
        import sys

        atomic = sys.modules.get("weightdoctor.writers.atomic")
        done = list(getattr(atomic, "COMMITTED", []))
        # Late enough, the output was already renamed into place whole: saying only "interrupted" would
        # suggest that nothing was written.
        _console().error("interrupted" + (f" after {', '.join(map(str, done))} was written whole" if done else ""))
        return 130
    if debugging(debug):
        import sys
        import traceback

        # stderr full (`2>/dev/full`): the traceback is lost as the error line is (render.console), not the exit
        # code, which the OSError from here turned into 1 (read as findings).
        with contextlib.suppress(OSError):
            traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, WeightDoctorError):
        _console().error(exc.one_line() + _next_step(exc))
        return exc.exit_code
    if isinstance(exc, PermissionError) and exc.errno == errno.EACCES and isinstance(exc.filename, str):
        from weightdoctor.paths import denied

        _console().error(denied(exc.filename))
        return 2
    if isinstance(exc, OSError) and exc.errno == errno.ENOMEM and exc.filename is not None:
        # The system refused memory to a call on a file or folder (opendir's buffer, under `ulimit -d`, while the
        # output's stage was read for its verification): "cannot read or write: [Errno 12] Cannot allocate memory:
        # '.out.wdstage-1-ab'" named the unfinished output, of no source, as if its disk had failed (mem8).
        refused = MemoryError("Cannot allocate memory")
        for name in ("weightdoctor_source", "weightdoctor_tensor"):  # what the reader and `working_on` said of it
            if hasattr(exc, name):
                setattr(refused, name, getattr(exc, name))
        exc = refused
    if _import_refused_memory(exc):
        refused = MemoryError().with_traceback(exc.__traceback__)  # the traceback names the library (`_library`)
        for name in ("weightdoctor_source", "weightdoctor_tensor"):
            if hasattr(exc, name):
                setattr(refused, name, getattr(exc, name))
        exc = refused
    prefix = next((text for kind, text in FOREIGN_ERRORS if isinstance(exc, kind)), None)
    detail = clip_words(" ".join(str(exc).split()), 300) or type(exc).__name__
    if prefix is None and isinstance(exc, ImportError):
        # Not the checkpoint's fault, so not said of it: a library that is missing or broken, or that cannot be
        # mapped into memory under a limit (`ulimit -v` on a shared machine: "failed to map segment").
        memory = any(text in detail for text in ("failed to map segment", "annot allocate memory"))
        _console().error(f"cannot import {_library(exc) or exc.name or 'a library weightdoctor needs'}: {detail}"
                         + (" (a memory limit, such as ulimit -v, leaves too little to load it)" if memory else ""))
        return 2
    if prefix is None and isinstance(exc, RuntimeError) and (refused := _memory_refused(detail)) is not None:
        # torch's allocator refused a buffer no guard had measured (a small one, once a limit's room was spent), or a
        # thread's stack (a private writable map: Rich's progress refresh, a worker) was refused: memory, said as
        # such, not "unexpected RuntimeError: [enforce fail at alloc_cpu.cpp:127] ..." / "can't start new thread".
        from weightdoctor.checkpoint.safetensors_format import private_map_limits

        where = getattr(exc, "weightdoctor_source", where)
        limits = private_map_limits()
        # The tensor whose buffer it was, where a command was working on one (`working_on`).
        tensor = getattr(exc, "weightdoctor_tensor", None)
        _console().error(f"{where}: " * bool(where) + f"out of memory: {refused} (Cannot allocate memory)"
                         + (f" for {tensor}" if tensor else "")
                         + (f"; {' and '.join(limits)}, {'are' if len(limits) > 1 else 'is'} set" if limits else ""))
        return 2
    if prefix is None:
        where = getattr(exc, "weightdoctor_source", where)  # set by the reader: the source that failed
        reading = f"{where}: " if where else ""
        _console().error(f"{reading}unexpected {type(exc).__name__}: {detail} (run with --debug for the traceback)")
    else:
        if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.filename is None):
            # An I/O error of a read that names no file (EIO on a failing disk, EINVAL from a seek), or Python
            # refused memory (an import or a small object once a limit's room was spent, a whole .bin's map held):
            # the line said "cannot read or write: [Errno 5] Input/output error" / "out of memory: MemoryError", of
            # no file.
            where = getattr(exc, "weightdoctor_source", where)
            prefix = f"{where}: {prefix}" if where else prefix
        tensor = getattr(exc, "weightdoctor_tensor", None)  # a MemoryError while working on one (`working_on`)
        limits: list[str] = []
        if isinstance(exc, MemoryError) and (loading := _library(exc)) is not None:
            # Refused while a library was imported (transformers' modules under `ulimit -v`, mem9): what was being
            # loaded, which "out of memory: MemoryError" left to the traceback.
            detail += f" loading {loading}"
        if isinstance(exc, MemoryError):
            from weightdoctor.checkpoint.safetensors_format import private_map_limits

            limits = private_map_limits()  # as for torch's allocator above: the limit that may have refused it
        _console().error(f"{prefix}: {detail}" + (f" (for {tensor})" if tensor else "")
                         + (f"; {' and '.join(limits)}, {'are' if len(limits) > 1 else 'is'} set" if limits else ""))
    return 2


def _import_refused_memory(exc: BaseException) -> bool:
    """Whether `exc` is CPython's SystemError "error return without exception set" from a library's import under a
    memory limit: a C function of the import (unmarshalling a module's code) that was refused memory and returned
    without saying so. diff-keys --model-class under `ulimit -d` with 28 MiB of data room past torch's import, its
    transformers import reaching sympy, said "unexpected SystemError: error return without exception set" (mem9).
    Without a limit set, or outside an import, it stays unexpected: it would then say nothing of memory."""
    if not isinstance(exc, SystemError) or "error return without exception set" not in str(exc):
        return False
    if _library(exc) is None:
        return False
    from weightdoctor.checkpoint.safetensors_format import private_map_limits

    return bool(private_map_limits())  # ulimit -v, and ulimit -d where the kernel heeds it


# torch's CPU allocator refusing a buffer: "DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes".
_ALLOCATOR_REFUSED = re.compile(r"DefaultCPUAllocator: can't allocate memory: you tried to allocate (\d+) bytes")


def _memory_refused(detail: str) -> str | None:
    """What a RuntimeError's `detail` says the system refused for memory ("torch could not allocate 4.19 MB", "a new
    thread's stack could not be made"), or None for any other RuntimeError."""
    if (found := _ALLOCATOR_REFUSED.search(detail)) is not None:
        from weightdoctor.units import format_bytes

        return f"torch could not allocate {format_bytes(int(found[1]))}"
    if detail.startswith("can't start new thread"):
        return "a new thread's stack could not be made"
    return None


def _next_step(exc: WeightDoctorError) -> str:
    """What to do about a refused pickle that no hint of its own explains (`dangerous: posix.system ...; nothing
    was unpickled` said what was found, and nothing of what to do next); "" for any other error."""
    from weightdoctor.errors import UnsafePickle

    if not isinstance(exc, UnsafePickle) or not exc.message.endswith("nothing was unpickled"):
        return ""  # a layout the reader recognised ends in its own way to the weights
    if exc.message.startswith("dangerous"):
        return (": do not torch.load it (unpickling runs what it names); ask its source for a .safetensors file "
                "(see docs/security.md)")
    return (": torch.load it only if you trust its source (unpickling runs what it names), or ask for a "
            ".safetensors file (see docs/security.md)")


def _library(exc: BaseException) -> str | None:
    """The installed package an import failed in (`torch`, where the ImportError names only `_C`): the first frame
    of the traceback under site-packages."""
    traceback = exc.__traceback__
    while traceback is not None:
        parts = traceback.tb_frame.f_code.co_filename.replace(os.sep, "/").split("/site-packages/", 1)
        if len(parts) == 2:
            return parts[1].split("/", 1)[0].removesuffix(".py")
        traceback = traceback.tb_next
    return None


def _source(kwargs: dict[str, Any]) -> str | None:
    """The checkpoint a command was reading: its first source argument."""
    value = kwargs.get("source", kwargs.get("source_a"))
    return value if isinstance(value, str) else None


def handle_errors(command: F) -> F:
    """Wrap a Typer command so that every failure prints one line and exits 2 (130 on Ctrl-C).

    With `--debug` (or WEIGHTDOCTOR_DEBUG=1) the traceback is shown too; the exit code is the same.
    """
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import typer  # already imported: this wraps Typer commands

        from weightdoctor.security.archive import command_cache

        try:
            with command_cache():  # each zip's central directory parsed once per command, not once per check
                return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit, BrokenPipeError):
            raise  # a closed stdout is handled by `weightdoctor.entry.main` (exit 141, nothing printed)
        except (KeyboardInterrupt, Exception) as exc:
            raise typer.Exit(report_failure(exc, bool(kwargs.get("debug")), _source(kwargs))) from None

    # Typer prints a docstring's line breaks as they are: joined here, `--help` is not ragged at 80 columns.
    wrapper.__doc__ = reflow_help(command.__doc__)
    return wrapper  # type: ignore[return-value]
