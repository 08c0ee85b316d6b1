"""`weightdoctor check-dtype`: what FP16 / BF16 / FP8 would do to these weights."""

from __future__ import annotations

from typing import Annotated

import typer

from weightdoctor.commands._errors import handle_errors
from weightdoctor.commands._options import DebugOpt, FilterOpt, JsonOpt, KeyOpt, RevisionOpt, SourceArg

# Repeatable as well as comma-separated: `--target fp16 --target bf16` kept only bf16 (Click's last value wins).
TargetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        help="Dtypes to check, comma-separated or repeated: fp16, bf16, fp32, fp8_e4m3, fp8_e5m2 (where torch has "
        "them), or all. Default: fp16,bf16 (plus fp32 for a source stored in other than 32 bits: fp16, bf16, fp8, "
        "float64).",
        show_default=False,
    ),
]
FailOnOpt = Annotated[
    str | None,
    typer.Option("--fail-on", help="Exit 1 when a target's verdict reaches this level: info or warn (lossy or "
                 "unsafe), error (unsafe); or the verdicts by name: lossy, unsafe.",
                 show_default=False),
]
SampleOpt = Annotated[
    int | None,
    typer.Option("--sample", help="Check N values per tensor (deterministic seed) instead of every value.",
                 show_default=False),
]
LocalOpt = Annotated[
    bool,
    typer.Option("--local", help="Add this machine's GPU support (bf16, fp8) and the dtype from_pretrained's "
                 "dtype='auto' would pick."),
]
WorstOpt = Annotated[int, typer.Option("--worst", help="Tensors listed per target in the worst-tensors table.")]


@handle_errors
def check_dtype(
    source: SourceArg,
    target: TargetOpt = None,
    fail_on: FailOnOpt = None,
    sample: SampleOpt = None,
    local: LocalOpt = False,
    json_output: JsonOpt = False,
    name_filter: FilterOpt = None,
    worst: WorstOpt = 5,
    key: KeyOpt = None,
    revision: RevisionOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Simulate casting every floating tensor to fp16 / bf16 / fp8 and say what overflows, underflows or rounds.

    The casts are torch's own `.to(dtype)`, done tensor by tensor in bounded chunks. Verdicts: safe
    (every value exact), lossy (rounding only), unsafe (overflow, clamping, an inf not kept as inf, or ≥1% of a
    tensor's non-zero values flushed to zero).

    Exit codes: 0 no target's verdict at or above --fail-on (always, without it; lossy is warn, unsafe error);
    1 one is; 2 unsafe or unreadable input, or bad usage.
    """
    from weightdoctor.check_dtype import FAIL_ON_CHOICES, parse_targets, select_tensors, verdict_reaches
    from weightdoctor.check_dtype import check_dtype as analyse
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.errors import choose
    from weightdoctor.render import console

    if fail_on is not None:
        fail_on = choose("--fail-on", fail_on, FAIL_ON_CHOICES)
    from weightdoctor.commands._options import check_count

    check_count("--sample", sample, 1, "values")
    check_count("--worst", worst, 0, "tensors")
    if name_filter is not None:
        from weightdoctor.commands._options import check_regex

        check_regex("--filter", name_filter)
    target_text = ",".join(target) if target else None
    if target_text is not None:
        parse_targets(target_text)  # a bad target fails before the checkpoint is opened
    with open_checkpoint(source, revision=revision, key=key) as checkpoint:
        targets = parse_targets(target_text, (t.dtype for t in checkpoint.tensors))
        total = len(select_tensors(checkpoint, name_filter)[0])
        with console.progress(total, "casting", enabled=not json_output) as advance:
            report = analyse(checkpoint, targets, sample=sample, name_filter=name_filter, local=local,
                             on_tensor=advance)
    if json_output:
        from weightdoctor.render.json import print_json

        print_json(report)
    else:
        from weightdoctor.render.check_dtype import render_check_dtype

        render_check_dtype(report, console.stdout, worst=worst)
        for warning in report.warnings:
            console.warn(warning)
    if fail_on is not None and any(verdict_reaches(t.verdict, fail_on) for t in report.targets.values()):
        raise typer.Exit(1)
