"""The two consoles: data to stdout, progress, warnings and hints to stderr."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from weightdoctor.errors import clip_message, current_typed_words
from weightdoctor.render.text import escape


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # Rich exits 1 here, which this tool's callers read as "findings": stop as Unix tools do instead.
        self.quiet = True
        raise BrokenPipeError

    def _write_buffer(self) -> None:
        try:
            super()._write_buffer()
        except BrokenPipeError:
            raise
        except OSError as exc:
            # stdout on a full disk or `> /dev/full`: said of stdout, not as an unnamed "cannot read or write".
            from weightdoctor.writers.atomic import report_error

            raise report_error(exc) from exc


class _ErrorConsole(Console):
    def _write_buffer(self) -> None:
        try:
            super()._write_buffer()
        except OSError:
            # stderr on a full disk (`2>>log`, `2>/dev/full`) or its reader gone: the warning or error line is lost,
            # never the report on stdout or the exit code. Raised, it ended the run with exit 1 (read as findings),
            # a --json report unwritten and an error's exit 2 lost; Rich's own broken-pipe handling exited 1 too.
            del self._buffer[:]


# Below this many columns Rich drops a report's text (COLUMNS=0 printed nothing at all and exited 0, COLUMNS=1 only
# the panel corners): the report is laid out this wide instead, and the terminal wraps its lines.
MIN_WIDTH = 40
# Past this many a panel, drawn as wide as the terminal, is mostly padding (COLUMNS=100000 printed 3 MB for three
# tensors): the report is laid out this wide.
MAX_WIDTH = 1000

# emoji=False: a tensor name, a folder name or a server's reply quoted as it reads (`x:smile:y` printed `x😄y`).
stdout = _Console(highlight=False, soft_wrap=False, emoji=False)
stderr = _ErrorConsole(stderr=True, highlight=False, emoji=False)
for _console in (stdout, stderr):
    if not MIN_WIDTH <= _console.width <= MAX_WIDTH:
        _console.width = min(max(_console.width, MIN_WIDTH), MAX_WIDTH)


def error(message: str) -> None:
    # clip_message: a command or snippet naming a long path typed stays whole (cut in its middle, not runnable); the
    # words typed are those the CLI was given for this run (errors.typed_words).
    stderr.print(f"[bold red]error:[/] {escape(clip_message(message, typed=current_typed_words()))}", markup=True,
                 highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    stderr.print(f"[yellow]warning:[/] {escape(clip_message(message, typed=current_typed_words()))}", markup=True,
                 soft_wrap=True)


_REDRAWS_PER_SECOND = 10  # as Rich's refresh thread redraws a progress bar


@contextmanager
def progress(total: int, description: str, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A Rich progress bar on stderr; yields `advance(n)`. Silent when stderr is not a terminal."""
    if not enabled or not stderr.is_terminal:
        yield lambda n=1: None
        return
    # auto_refresh=False: Rich's refresh thread, started by `Thread.start()`, waited forever where its first frame was
    # refused under `ulimit -d` (mem8); the bar is redrawn on the calling thread as it advances, at most
    # `_REDRAWS_PER_SECOND` times a second.
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=stderr, transient=True, auto_refresh=False,
    ) as bar:
        task = bar.add_task(description, total=total)
        drawn = time.monotonic()

        def advance(n: int = 1) -> None:
            nonlocal drawn
            bar.advance(task, n)
            if time.monotonic() - drawn >= 1 / _REDRAWS_PER_SECOND:
                drawn = time.monotonic()
                bar.refresh()

        yield advance
