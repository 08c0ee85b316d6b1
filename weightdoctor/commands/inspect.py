"""`weightdoctor inspect`: what is in a checkpoint."""

from __future__ import annotations

from typing import Annotated

import typer

from weightdoctor.commands._errors import handle_errors
from weightdoctor.commands._options import DebugOpt, FilterOpt, JsonOpt, KeyOpt, RevisionOpt, SourceArg

# `inspect --stats` options; --sample, --fail-on, --plot and --hist imply --stats. Numbers are checked in the command
# rather than by Click's `min=`, whose "is not in the range x>=1" differed from check-dtype's line for the same
# `--sample 0`.
StatsOpt = Annotated[bool, typer.Option("--stats", help="Read every value: statistics, init table, findings "
                                "(implied by --sample, --fail-on, --plot and --hist).")]
SampleOpt = Annotated[
    int | None, typer.Option("--sample", help="Read only N values per tensor (deterministic random sample).",
                             show_default=False),
]
StatsFailOnOpt = Annotated[
    str | None, typer.Option("--fail-on", help="Exit 1 when a finding reaches this severity: info, warn or error.",
                             show_default=False),
]
PlotOpt = Annotated[
    str | None, typer.Option("--plot", help="Write histograms and std-across-depth to this image (needs "
                             "matplotlib: pip install 'weightdoctor\\[plot]').", show_default=False),
]
HistOpt = Annotated[
    str | None, typer.Option("--hist", help="Print a histogram of this tensor (a name or a regular expression).",
                             show_default=False),
]


@handle_errors
def inspect(
    source: SourceArg,
    json_output: JsonOpt = False,
    name_filter: FilterOpt = None,
    key: KeyOpt = None,
    revision: RevisionOpt = None,
    depth: Annotated[int, typer.Option("--depth", help="Levels of the module tree to show.")] = 4,
    show_all: Annotated[bool, typer.Option("--all", help="List every tensor (default: the first 50).")] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Recompute the CRC-32 of every zip member, and the sha256 prefix a "
                                            "torch.hub download's name carries (resnet50-0676ba61.pth); exit 1 on "
                                            "a mismatch.")
    ] = False,
    stats: StatsOpt = False,
    sample: SampleOpt = None,
    fail_on: StatsFailOnOpt = None,
    plot: PlotOpt = None,
    hist: HistOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Show what a checkpoint holds: tensors, parameters, bytes, dtypes, module tree and config.

    Reads headers only for safetensors (no tensor data), and a memory map for PyTorch pickles, which
    are first scanned statically: a pickle that imports anything unsafe is refused (exit 2).
    With --stats, every value is read once, one tensor at a time: statistics, how each tensor was
    initialized (and what its model expected), whether it has trained, and what is wrong with it.

    Exit codes: 0 read; 1 a finding at or above --fail-on (with --stats), or --verify found a mismatch or an
    unreadable member; 2 unsafe or unreadable input, or bad usage.
    """
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.render import console
    from weightdoctor.structure import inspect_checkpoint

    if name_filter is not None:
        from weightdoctor.commands._options import check_regex

        check_regex("--filter", name_filter)
    from weightdoctor.commands._options import check_count

    check_count("--sample", sample, 1, "values")
    check_count("--depth", depth, 0, "levels")
    if fail_on is not None:
        from weightdoctor.errors import choose
        from weightdoctor.findings import SEVERITIES

        fail_on = choose("--fail-on", fail_on, SEVERITIES)
    if hist == "":
        # Taken as "not given" below (`if hist`): every value was read for --stats and no histogram printed.
        from weightdoctor.errors import UsageError

        raise UsageError("--hist is empty: give a tensor name or a regular expression (at most 8 tensors are shown)")
    if stats or sample is not None or fail_on is not None or plot is not None or hist is not None:
        from weightdoctor.commands._inspect_stats import inspect_with_stats

        inspect_with_stats(source, revision, key, name_filter, json_output, depth,
                           None if show_all or name_filter else 50, sample, fail_on, plot, hist, verify)
        return
    with open_checkpoint(source, revision=revision, key=key, structure_only=True) as checkpoint:
        report = inspect_checkpoint(checkpoint, name_filter)
        if verify:
            from weightdoctor.security.verify import verify_checkpoint

            report.verify = verify_checkpoint(checkpoint)
    if json_output:
        from weightdoctor.render.json import print_json

        print_json(report)
        _exit_if_verify_failed(report)
        return
    from weightdoctor.render.inspect import render_inspect

    render_inspect(report, console.stdout, max_depth=depth, limit=None if show_all or name_filter else 50)
    for warning in report.warnings:
        console.warn(warning)
    _exit_if_verify_failed(report)


def _exit_if_verify_failed(report: object) -> None:
    """`--verify` found a CRC or sha256 mismatch or an unreadable member: exit 1 after the report is printed."""
    verify = getattr(report, "verify", None)
    if verify is not None and not verify.ok:
        raise typer.Exit(1)
