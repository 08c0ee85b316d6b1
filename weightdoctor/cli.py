"""The Typer app: wires one module per command together. Importing it imports neither torch nor transformers.

The program itself is `weightdoctor.entry.main`, which runs plain `diff-keys` invocations without Typer.
"""

from __future__ import annotations

import typer

from weightdoctor import __version__
from weightdoctor.commands._group import LazyOneLineErrorsGroup


class _Commands(LazyOneLineErrorsGroup):
    """The commands, in the order `weightdoctor --help` lists them; a run imports and builds only its own."""

    lazy_commands = {
        "inspect": "weightdoctor.commands.inspect:inspect",
        "diff-keys": "weightdoctor.commands.diff_keys:diff_keys",
        "plan-devices": "weightdoctor.commands.plan_devices:plan_devices",
        "convert": "weightdoctor.commands.convert:convert",
        "shard": "weightdoctor.commands.shard:shard",
        "check-dtype": "weightdoctor.commands.check_dtype:check_dtype",
    }


app = typer.Typer(
    name="weightdoctor",
    help="A doctor for PyTorch and Hugging Face checkpoints: inspect, diff keys, plan devices, convert, "
    "shard and check dtypes without loading the model.\n\n"
    "Exit codes: 0 healthy, 1 findings at or above --fail-on (diff-keys: error unless given; or a failed --verify "
    "or --map check), 2 bad or unsafe input or usage. Every command takes --fail-on info|warn|error.",
    no_args_is_help=True,
    # `-h` as most tools take it (it said "No such option: -h"); every command inherits it from this context.
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Commands,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"weightdoctor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """weightdoctor: a command-line doctor for model checkpoints."""
