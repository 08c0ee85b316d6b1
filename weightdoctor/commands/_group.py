"""The root command group: Click's usage errors become one line on stderr and exit 2, like every other error."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer._click import exceptions as click_exceptions  # Typer vendors Click; these are what it raises
from typer.core import TyperGroup


def usage_line(exc: click_exceptions.UsageError) -> str:
    """`error: weightdoctor inspect: Invalid value for '--sample': ... (see --help)`, on one line."""
    where = exc.ctx.command_path if exc.ctx is not None else "weightdoctor"
    message = " ".join(exc.format_message().split())
    return f"error: {where}: {message} (see {where} --help)"


class OneLineErrorsGroup(TyperGroup):
    """A TyperGroup whose bad-usage errors (missing argument, bad option value, unknown option) print one
    line instead of Typer's multi-line usage panel. Help (including a bare `weightdoctor`) is unchanged."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_exceptions.NoArgsIsHelpError as exc:
            from typer import rich_utils

            rich_utils.rich_format_error(exc)  # the help text, as Typer shows it
            sys.exit(exc.exit_code)
        except click_exceptions.UsageError as exc:
            typer.echo(usage_line(exc), err=True)
            sys.exit(2)
        except click_exceptions.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        # Without standalone mode Click returns the exit code of a typer.Exit, or the command's result.
        sys.exit(result if isinstance(result, int) else 0)
