"""Options shared by the two commands that write (`convert`, `shard`)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from weightdoctor.renames import Rename


def _not_empty(value: str) -> str:
    """`-o ""` is the current folder to the file system, and almost always an unset variable (`-o "$OUT"`): with
    `--force`, the earlier weights of wherever the command ran would be replaced."""
    if value == "":
        raise typer.BadParameter("is empty; give a file or folder (`-o .` for the current folder)")
    if value == "-":
        # Read by most tools as stdout; here it made a file or folder named "-" beside the command.
        raise typer.BadParameter("is '-', which here would be a file named '-', not stdout; give a file or folder "
                                 "name (`-o ./-` for that name)")
    from weightdoctor.commands._options import output_format_hint

    # `-o json` (kubectl's way to ask for JSON) wrote the weights to a file named `json`. A name that is already there
    # is the user's (`-o table --force` replacing the output folder of an earlier run): it was refused, and a script
    # that wrote there worked no more; its "output exists" line, or --force, says the rest.
    hint = output_format_hint(value)
    if hint and not os.path.lexists(value):
        raise typer.BadParameter(hint)
    return value


OutputOpt = Annotated[
    str, typer.Option("--output", "-o", help="Where to write (refused if it exists, unless --force).",
                      callback=_not_empty)
]
# The level every command takes: convert and shard weigh each warning they print (a file not copied, a loader that
# cannot read the output, a name kept apart, ...) as `warn`; a write they cannot do is exit 2, and a --dry-run
# that foresees it exit 1 (an error, whatever the level).
WriteFailOnOpt = Annotated[
    str | None,
    typer.Option("--fail-on", help="Exit 1 (once written, or planned with --dry-run) when a warning was printed and "
                 "this is info or warn; "
                 "error fails only a --dry-run whose write would be refused, as any level does (a failed write is "
                 "exit 2).", show_default=False),
]
DtypeOpt = Annotated[
    str | None, typer.Option("--dtype", help="Cast floating tensors to fp16, bf16 or fp32 (integer/bool untouched).")
]
KeepFp32Opt = Annotated[
    str | None,
    typer.Option("--keep-fp32", metavar="REGEX", help="With --dtype: keep tensors whose name matches in fp32."),
]
AllowOverflowOpt = Annotated[
    bool,
    typer.Option("--allow-overflow", help="With --dtype: cast even where finite values become inf or many become 0."),
]
# Repeatable, applied in the order given: as single options, `--strip-prefix module. --strip-prefix model.` kept the
# last one only, without a word.
StripPrefixOpt = Annotated[list[str] | None, typer.Option(
    "--strip-prefix", help="Remove this prefix from every name (repeatable, in order).")]
AddPrefixOpt = Annotated[list[str] | None, typer.Option(
    "--add-prefix", help="Put this prefix before every name (repeatable, in order).")]
RenameOpt = Annotated[
    list[str] | None,
    typer.Option("--rename", metavar="REGEX=REPL", help="Rename keys (first match, re.sub syntax); repeatable."),
]
MetadataOpt = Annotated[
    list[str] | None, typer.Option("--metadata", metavar="KEY=VALUE", help="Extra safetensors metadata; repeatable.")
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Replace an existing output (never the input; old files go last).")
]
NoVerifyOpt = Annotated[
    bool, typer.Option("--no-verify", help="Skip re-reading the output and comparing every tensor with the source.")
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan and write nothing.")]


def build_renames(strip_prefix: list[str] | str | None, renames: list[str] | None,
                  add_prefix: list[str] | str | None) -> list[Rename]:
    """Each --strip-prefix in order first, then each --rename in order, then each --add-prefix in order."""
    from weightdoctor.renames import add_prefix as add
    from weightdoctor.renames import parse_rename
    from weightdoctor.renames import strip_prefix as strip

    strips = [strip_prefix] if isinstance(strip_prefix, str) else strip_prefix or []
    adds = [add_prefix] if isinstance(add_prefix, str) else add_prefix or []
    result = [strip(prefix) for prefix in strips if prefix]
    result += [parse_rename(spec) for spec in renames or []]
    result += [add(prefix) for prefix in adds if prefix]
    return result


def refuse_overflow_without_cast(allow_overflow: bool, dtype: str | None) -> None:
    """`--allow-overflow` only loosens what `--dtype` refuses: alone it would be ignored, so it is refused."""
    if allow_overflow and dtype is None:
        from weightdoctor.errors import UsageError

        raise UsageError("--allow-overflow lets --dtype cast values it cannot hold: give --dtype too")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Let SIGTERM and SIGHUP (the terminal or SSH session closed) unwind like Ctrl-C, so that temp files are
    removed on the way out."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous: dict[int, Any] = {}
    try:
        for number in (signal.SIGTERM, signal.SIGHUP):
            # A signal set to be ignored stays ignored: `nohup weightdoctor convert ... &` survives the logout.
            if signal.getsignal(number) is signal.SIG_IGN:
                continue
            previous[number] = signal.signal(number, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
