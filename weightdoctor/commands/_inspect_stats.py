"""The `inspect --stats` path of the inspect command: one streamed analysis, then the renderers."""

from __future__ import annotations

import re

import typer

from weightdoctor.commands._options import check_regex
from weightdoctor.errors import UsageError


def inspect_with_stats(
    source: str,
    revision: str | None,
    key: str | None,
    name_filter: str | None,
    json_output: bool,
    depth: int,
    limit: int | None,
    sample: int | None,
    fail_on: str | None,
    plot: str | None,
    hist: str | None,
    verify: bool = False,
) -> None:
    """Run `inspect` plus the weight analysis and print both; exit 1 when a finding reaches `fail_on`."""
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.findings import exit_code_for
    from weightdoctor.health import analyze_weights
    from weightdoctor.render import console
    from weightdoctor.structure import inspect_checkpoint

    pattern = re.compile(name_filter) if name_filter else None
    with open_checkpoint(source, revision=revision, key=key) as checkpoint:
        report = inspect_checkpoint(checkpoint, name_filter)
        report.warnings += checkpoint.value_warnings  # --stats reads values: the tensors it cannot read are said
        if verify:
            from weightdoctor.security.verify import verify_checkpoint

            report.verify = verify_checkpoint(checkpoint)
        names = [t.name for t in checkpoint.tensors if pattern is None or pattern.search(t.name)]
        hist_names = _hist_names(hist, [t.name for t in checkpoint.tensors]) if hist else []
        if hist_names and pattern is not None:
            names += [n for n in hist_names if n not in set(names)]
        with console.progress(len(names), "reading tensors") as advance:
            weights = analyze_weights(checkpoint, names, sample, advance)
        inputs = [f.path for f in checkpoint.files]
    if plot is not None:
        from weightdoctor.plot import write_plot

        written = write_plot(weights, plot, selected=pattern is not None, inputs=inputs)
        console.stderr.print(f"plot written to {written}")
    code = exit_code_for(weights.findings, fail_on)
    verified = getattr(report, "verify", None)
    if verified is not None and not verified.ok:
        code = 1  # --verify found a CRC mismatch
    if json_output:
        from weightdoctor.render.json import print_json, to_jsonable
        from weightdoctor.render.stats import merge_stats_json

        # The report and the per-tensor results are let go once their JSON-ready form is built (only `code` is
        # needed after): for many small tensors they were held beside it, and the text, while it was written.
        plain = to_jsonable(report)
        del report
        plain = merge_stats_json(plain, weights, set(hist_names))
        del weights
        print_json(plain)
    else:
        from weightdoctor.render.inspect import render_inspect
        from weightdoctor.render.stats import render_histogram, render_stats

        render_inspect(report, console.stdout, max_depth=depth, limit=limit)
        skipped = set(weights.skipped)
        render_stats(weights, console.stdout, limit=limit,
                     dtype_of={t.name: t.dtype for t in checkpoint.tensors if t.name in skipped})
        by_name = {t.name: t for t in weights.tensors}
        for name in hist_names:
            if name in by_name:
                console.stdout.print()
                render_histogram(by_name[name], console.stdout)
        for warning in [*report.warnings, *weights.warnings]:
            console.warn(warning)
    if code:
        raise typer.Exit(code)


def _hist_names(hist: str, names: list[str]) -> list[str]:
    """`--hist` as an exact name, else as a regular expression (at most 8 tensors)."""
    if hist in names:
        return [hist]
    check_regex("--hist", hist)
    pattern = re.compile(hist)
    hits = [n for n in names if pattern.search(n)]
    if not hits:
        raise UsageError(f"--hist {hist!r}: no tensor has that name or matches it")
    return hits[:8]
