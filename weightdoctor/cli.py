"""The Typer app: wires one module per command together. Importing it imports neither torch nor transformers."""

from __future__ import annotations

import os
import sys

import typer

from weightdoctor import __version__
from weightdoctor.commands import check_dtype as check_dtype_command
from weightdoctor.commands import convert as convert_command
from weightdoctor.commands import diff_keys as diff_keys_command
from weightdoctor.commands import inspect as inspect_command
from weightdoctor.commands import plan_devices as plan_devices_command
from weightdoctor.commands import shard as shard_command
from weightdoctor.commands._group import OneLineErrorsGroup

app = typer.Typer(
    name="weightdoctor",
    help="A doctor for PyTorch and Hugging Face checkpoints: inspect, diff keys, plan devices, convert, "
    "shard and check dtypes without loading the model.\n\n"
    "Exit codes: 0 healthy, 1 findings at or above --fail-on, 2 bad or unsafe input or usage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineErrorsGroup,
)

app.command("inspect")(inspect_command.inspect)
app.command("diff-keys")(diff_keys_command.diff_keys)
app.command("plan-devices")(plan_devices_command.plan_devices)
app.command("convert")(convert_command.convert)
app.command("shard")(shard_command.shard)
app.command("check-dtype")(check_dtype_command.check_dtype)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"weightdoctor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """weightdoctor: a command-line doctor for model checkpoints."""


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        _exit_on_closed_pipe()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _exit_on_closed_pipe()


def _exit_on_closed_pipe() -> None:
    """The reader of stdout went away (`weightdoctor ... | head`): stop quietly, as Unix tools do (128 + SIGPIPE).

    Python would otherwise print an error while flushing stdout at exit; stdout is pointed at /dev/null first.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os._exit(141)
