"""`weightdoctor convert`: another format, dtype or key names; streamed, verified, atomic."""

from __future__ import annotations

from typing import Annotated

import typer

from weightdoctor.commands._errors import handle_errors
from weightdoctor.commands._options import DebugOpt, JsonOpt, KeyOpt, RevisionOpt, SourceArg
from weightdoctor.commands._write_options import (
    AddPrefixOpt,
    AllowOverflowOpt,
    DryRunOpt,
    DtypeOpt,
    ForceOpt,
    KeepFp32Opt,
    MetadataOpt,
    NoVerifyOpt,
    OutputOpt,
    RenameOpt,
    StripPrefixOpt,
    WriteFailOnOpt,
    build_renames,
    refuse_overflow_without_cast,
    terminate_as_interrupt,
)


@handle_errors
def convert(
    source: SourceArg,
    output: OutputOpt,
    to: Annotated[
        str | None, typer.Option("--to", help="safetensors or bin (default: from the output name, else safetensors).")
    ] = None,
    dtype: DtypeOpt = None,
    keep_fp32: KeepFp32Opt = None,
    allow_overflow: AllowOverflowOpt = False,
    strip_prefix: StripPrefixOpt = None,
    add_prefix: AddPrefixOpt = None,
    rename: RenameOpt = None,
    metadata: MetadataOpt = None,
    force: ForceOpt = False,
    no_verify: NoVerifyOpt = False,
    dry_run: DryRunOpt = False,
    key: KeyOpt = None,
    revision: RevisionOpt = None,
    json_output: JsonOpt = False,
    fail_on: WriteFailOnOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Convert a checkpoint: .bin/.pt/.pth -> .safetensors (or back with --to bin), cast, rename.

    A file converts to a file; a model folder converts every weight file and copies config and
    tokenizer files. Tied tensors keep one copy. Every tensor written is re-read and compared with the
    source (--no-verify skips it); the output appears whole or not at all, and the input is never touched.

    Exit codes: 0 written (and verified); 1 written, with a warning printed and --fail-on info or warn, or a
    --dry-run that finds the write would be refused; 2 unsafe or unreadable input, bad usage, or an output that
    cannot be written (nothing half-written is left).
    """
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.convert import dry_run_convert, plan_convert, run_convert
    from weightdoctor.errors import choose
    from weightdoctor.findings import SEVERITIES, writer_exit_code
    from weightdoctor.render import console
    from weightdoctor.rewrite import parse_dtype, parse_metadata

    if fail_on is not None:
        fail_on = choose("--fail-on", fail_on, SEVERITIES)
    target = parse_dtype(dtype)
    refuse_overflow_without_cast(allow_overflow, target)
    extra = parse_metadata(metadata)
    renames = build_renames(strip_prefix, rename, add_prefix)
    with open_checkpoint(source, revision=revision, key=key, gguf_refused_by="convert") as checkpoint:
        plan = plan_convert(checkpoint, output, to=to, dtype=target, keep_fp32=keep_fp32, renames=renames,
                            metadata=extra)
        if dry_run:
            result = dry_run_convert(plan, force=force, checkpoint=checkpoint)
        else:
            with terminate_as_interrupt(), console.progress(plan.total_bytes, "converting") as advance:
                result = run_convert(checkpoint, plan, force=force, verify=not no_verify,
                                     allow_overflow=allow_overflow, advance=advance)
    # Warnings come once the plan is carried out, so that a failure is reported on one line alone.
    for warning in plan.warnings:
        console.warn(warning)
    if json_output:
        from weightdoctor.render.json import print_json

        print_json(result)
    else:
        from weightdoctor.render.convert import render_convert

        render_convert(result, console.stdout)
    # A dry run that finds the write would be refused is a check that failed (as `plan-devices --map`): exit 1
    # without --fail-on too.
    if result.would_refuse or writer_exit_code(plan.warnings, fail_on):
        raise typer.Exit(1)
