"""`weightdoctor diff-keys`: what loading A into a model shaped like B reports, why, and the fix."""

from __future__ import annotations

from typing import Annotated

import typer

from weightdoctor.commands._errors import handle_errors
from weightdoctor.commands._options import DebugOpt, JsonOpt, KeyOpt, RevisionOpt

FAIL_ON_CHOICES = ("info", "warn", "error")


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
            "e.g. --rename 'module\\.='.",
        ),
    ] = None,
    values: Annotated[
        bool,
        typer.Option("--values", help="Also compare the values of every common tensor, one pair at a time."),
    ] = False,
    fail_on: Annotated[
        str, typer.Option("--fail-on", help="Exit 1 when a difference has this severity or worse: info, warn, error.")
    ] = "error",
    show_all: Annotated[bool, typer.Option("--all", help="List every key instead of grouping layer indices.")] = False,
    json_output: JsonOpt = False,
    key: KeyOpt = None,
    revision: RevisionOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Diff the keys of checkpoint A against checkpoint B (or a transformers class), with reasons and a fix.

    Direction: load A into a model shaped like B.
    Missing = in B, not in A; unexpected = in A, not in B; mismatched = same name, different shape.
    Reads headers only unless --values.
    """
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.diff_keys import exit_code
    from weightdoctor.errors import UsageError
    from weightdoctor.renames import parse_rename

    if fail_on not in FAIL_ON_CHOICES:
        raise UsageError(f"--fail-on {fail_on!r}: choose one of {', '.join(FAIL_ON_CHOICES)}")
    if (source_b is None) == (model_class is None):
        raise UsageError("give either a second checkpoint B or --model-class CLASS (not both, not neither)")
    if model_class is None and (config is not None or num_labels is not None):
        raise UsageError("--config and --num-labels only apply with --model-class")
    if values and model_class is not None:
        raise UsageError("--values compares two checkpoints; it cannot be used with --model-class")
    parsed = [parse_rename(spec) for spec in renames or []]

    with open_checkpoint(source_a, revision=revision, key=key) as checkpoint_a:
        if model_class is not None:
            from weightdoctor.load_simulation import diff_checkpoint_against_model

            report = diff_checkpoint_against_model(
                checkpoint_a, model_class, config=config, num_labels=num_labels, renames=parsed, revision=revision
            )
        else:
            from weightdoctor.diff_keys import diff_checkpoints

            assert source_b is not None
            with open_checkpoint(source_b, revision=revision) as checkpoint_b:
                report = diff_checkpoints(checkpoint_a, checkpoint_b, parsed)
                if values:
                    from weightdoctor.diff_keys import compare_values, value_pairs
                    from weightdoctor.render.console import progress

                    with progress(report.matched, "comparing values") as advance:
                        rows, layers = compare_values(value_pairs(checkpoint_a, checkpoint_b, report, parsed, advance))
                    report.values, report.layers_changed_most = rows, layers

    code = exit_code(report, fail_on)
    if json_output:
        import sys

        from weightdoctor.gcpause import gc_paused
        from weightdoctor.render.diff_keys_json import report_json

        with gc_paused():
            text = report_json(report)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    else:
        from weightdoctor.render.console import stdout
        from weightdoctor.render.diff_keys import render_diff_keys

        render_diff_keys(report, stdout, show_all=show_all)
    if code:
        raise typer.Exit(code)
