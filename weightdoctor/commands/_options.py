"""Options shared by several commands, defined once as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

import typer

SourceArg = Annotated[
    str,
    typer.Argument(
        help="A checkpoint: a .safetensors/.bin/.pt file, a model folder, an index JSON, or a Hub repo id.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback when something fails.")]
RevisionOpt = Annotated[
    str | None, typer.Option("--revision", help="Hub revision (branch, tag or commit) for a repo id.")
]
KeyOpt = Annotated[
    str | None,
    typer.Option("--key", help="Dotted path of the state dict inside a training checkpoint (e.g. model.module; a "
                                "number picks an item of a list: 0)."),
]
FilterOpt = Annotated[
    str | None, typer.Option("--filter", help="Regular expression: only tensors whose name matches.")
]


# Words other tools take after `-o`/`--output` as the report's format (kubectl's `-o json`, `-o yaml`, `-o table`): here
# `-o` names the file written, and `-o json` wrote the weights (or the device map) to a file named `json`.
OUTPUT_FORMAT_WORDS = ("json", "yaml", "yml", "table", "text")


def output_format_word(value: str) -> str:
    """The report format `value` names when it is a bare format word (`json`, `.json`, ` YAML`), else "".

    Example:
        >>> [output_format_word(v) for v in ("JSON", "table", "./json", "m.json")]
        ['json', 'table', '', '']
    """
    word = value.strip().lower().lstrip(".")
    return word if word in OUTPUT_FORMAT_WORDS else ""


def output_format_hint(value: str, wanted: str = "a file or folder name") -> str:
    """What to say when `-o`/`--output` is given a format word, not a file: how that format is asked for here, and how
    to name a file so anyway; "" when `value` is a file name.

    Example:
        >>> output_format_hint("yaml")  # doctest: +NORMALIZE_WHITESPACE
        "'yaml' is an output format, not a file name: weightdoctor prints tables, or one JSON object with --json
        (no YAML); give a file or folder name (-o ./yaml for that name)"
    """
    word = output_format_word(value)
    if not word:
        return ""
    if word == "json":
        asked = "--json prints the report as one JSON object on stdout"
    elif word in ("table", "text"):
        asked = "weightdoctor prints its report as text tables by default (--json for one JSON object)"
    else:
        asked = "weightdoctor prints tables, or one JSON object with --json (no YAML)"
    return (f"{value!r} is an output format, not a file name: {asked}; give {wanted} (-o ./{value.strip()} for that "
            "name)")


def check_count(option: str, value: int | None, least: int, what: str) -> None:
    """Refuse a number option below `least` in one line, the same for every command (`--sample 0`).

    Example:
        >>> check_count("--sample", 0, 1, "values")
        Traceback (most recent call last):
        weightdoctor.errors.UsageError: --sample must be a positive number of values, not 0

    Raises:
        UsageError: `value` is given and below `least`.
    """
    if value is None or value >= least:
        return
    from weightdoctor.errors import UsageError

    wanted = "a positive number of" if least == 1 else f"{least} or more"
    raise UsageError(f"{option} must be {wanted} {what}, not {value}")


def check_regex(option: str, pattern: str) -> None:
    """Fail before any file is read when `pattern`, given to `option`, is no regular expression, or one whose
    backtracking over a long tensor name has no bound (`refuse_unbounded_regex`).

    Raises:
        UsageError: naming the option and the text, as `--keep-fp32` and `--rename` do.
    """
    from weightdoctor.errors import compile_user_regex

    compile_user_regex(option, pattern)
    from weightdoctor.quantized import refuse_unbounded_regex

    refuse_unbounded_regex(option, pattern)
