"""`weightdoctor diff-keys`: what loading A into a model shaped like B reports, why, and the fix."""

from __future__ import annotations

from typing import Annotated

import typer

from weightdoctor.commands._errors import handle_errors
from weightdoctor.commands._options import DebugOpt, JsonOpt, RevisionOpt


@handle_errors
def diff_keys(
    source_a: Annotated[
        str,
        typer.Argument(
            metavar="A", show_default=False,
            help="The checkpoint to load: a .safetensors/.bin/.pt file, a model folder, an index JSON, or a repo id.",
        ),
    ],
    source_b: Annotated[
        str | None,
        typer.Argument(
            metavar="[B]", show_default=False,
            help="The checkpoint whose keys A is loaded into (omit with --model-class).",
        ),
    ] = None,
    model_class: Annotated[
        str | None,
        typer.Option(
            "--model-class",
            help="Compare A with this transformers class built on the meta device "
            "(e.g. BertForSequenceClassification): reports what from_pretrained(A) would.",
        ),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option("--config", help="config.json, model folder or repo id for --model-class (default: A's config)."),
    ] = None,
    num_labels: Annotated[
        int | None, typer.Option("--num-labels", help="With --model-class: the number of labels of the task head.")
    ] = None,
    renames: Annotated[
        list[str] | None,
        typer.Option(
            "--rename",
            metavar="REGEX=REPL",
            help="Rename A's keys before comparing (re.sub, first match; repeatable, applied in order), "
            "e.g. --rename '^module\\.=' (the ^ keeps a 'submodule.' whole).",
        ),
    ] = None,
    values: Annotated[
        bool,
        typer.Option("--values", help="Also compare the values of every common tensor, one pair at a time: "
                                      "max |A−B| and ‖A−B‖/‖B‖ per tensor, and ‖A−B‖/‖B‖ per layer."),
    ] = False,
    fail_on: Annotated[
        str, typer.Option("--fail-on", help="Exit 1 when a difference has this severity or worse: info, warn, error.")
    ] = "error",
    show_all: Annotated[bool, typer.Option("--all", help="List every key instead of grouping layer indices.")] = False,
    json_output: JsonOpt = False,
    key: Annotated[
        str | None,
        typer.Option("--key", help="Dotted path of A's state dict inside a training checkpoint (e.g. model.module; a "
                                   "number picks an item of a list: 0)."),
    ] = None,
    revision: RevisionOpt = None,
    revision_b: Annotated[
        str | None,
        typer.Option("--revision-b", help="Hub revision for B when it is not A's (--revision applies to both "
                     "otherwise): compare two revisions of one repo."),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Diff the keys of checkpoint A against checkpoint B (or a transformers class), with reasons and a fix.

    Direction: load A into a model shaped like B.
    Missing = in B, not in A; unexpected = in A, not in B; mismatched = same name, different shape.
    Reads headers only unless --values.

    Exit codes: 0 A loads into B with nothing at or above --fail-on (default error); 1 otherwise; 2 unsafe or
    unreadable input, or bad usage.
    """
    from weightdoctor.commands._diff_keys_run import run_diff_keys

    code = run_diff_keys(
        source_a, source_b, model_class=model_class, config=config, num_labels=num_labels, renames=renames,
        values=values, fail_on=fail_on, show_all=show_all, json_output=json_output, key=key, revision=revision,
        revision_b=revision_b,
    )
    if code:
        raise typer.Exit(code)
