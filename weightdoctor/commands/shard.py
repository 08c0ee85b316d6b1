"""`weightdoctor shard`: split (or merge) into Hugging Face shards; streamed, verified, atomic."""

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
def shard(
    source: SourceArg,
    output: OutputOpt,
    max_size: Annotated[
        str | None,
        typer.Option("--max", help="Largest shard: 200MB (decimal), 200MiB (binary); 0 merges into one file. "
                                    "Required unless --single."),
    ] = None,
    single: Annotated[bool, typer.Option("--single", help="Merge into one file (same as --max 0).")] = False,
    fmt: Annotated[str, typer.Option("--format", help="safetensors or bin (pytorch_model-….bin).")] = "safetensors",
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
    """Write a checkpoint as Hugging Face shards (model-0000i-of-0000N.safetensors + index) in OUTPUT.

    Splits as huggingface_hub does (a tensor larger than --max gets a shard of its own); re-shards an
    already sharded source; --max 0 or --single merges into one file. Config and tokenizer files of a
    model folder are copied beside the shards. The folder is built aside and swapped in whole.

    Exit codes: 0 written (and verified); 1 written, with a warning printed and --fail-on info or warn, or a
    --dry-run that finds the write would be refused; 2 unsafe or unreadable input, bad usage, or an output that
    cannot be written (nothing half-written is left).
    """
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.errors import UsageError, choose
    from weightdoctor.findings import SEVERITIES, writer_exit_code
    from weightdoctor.render import console
    from weightdoctor.rewrite import parse_dtype, parse_metadata
    from weightdoctor.shard import dry_run_shard, plan_shard, run_shard

    if single and max_size not in (None, "0"):
        raise UsageError("--single and --max disagree; give one of them")
    if max_size is None and not single:
        raise UsageError("give --max SIZE (e.g. 200MB, 2GiB) or --single")
    if fail_on is not None:
        fail_on = choose("--fail-on", fail_on, SEVERITIES)
    target = parse_dtype(dtype)
    refuse_overflow_without_cast(allow_overflow, target)
    extra = parse_metadata(metadata)
    renames = build_renames(strip_prefix, rename, add_prefix)
    from weightdoctor.units import parse_size, refuse_unitless_size

    if max_size is not None:
        # `--max 10` meant 10GB and wrote one shard per tensor (of 10 bytes each), as plan-devices refuses `--gpu 10`.
        refuse_unitless_size("--max", max_size)
        parse_size(max_size, "--max")  # a bad size is refused before the checkpoint is read
    with open_checkpoint(source, revision=revision, key=key, gguf_refused_by="shard") as checkpoint:
        plan = plan_shard(checkpoint, output, max_size=None if single else max_size, fmt=fmt, dtype=target,
                          keep_fp32=keep_fp32, renames=renames, metadata=extra, key=key)
        if dry_run:
            result = dry_run_shard(plan, force=force, checkpoint=checkpoint)
        else:
            with terminate_as_interrupt(), console.progress(plan.total_bytes, "sharding") as advance:
                result = run_shard(checkpoint, plan, force=force, verify=not no_verify,
                                   allow_overflow=allow_overflow, advance=advance)
    # Warnings come once the plan is carried out, so that a failure is reported on one line alone.
    for warning in plan.warnings:
        console.warn(warning)
    if json_output:
        from weightdoctor.render.json import print_json

        print_json(result)
    else:
        from weightdoctor.render.convert import render_shard

        render_shard(result, console.stdout)
    # A dry run that finds the write would be refused is a check that failed (as `plan-devices --map`): exit 1
    # without --fail-on too.
    if result.would_refuse or writer_exit_code(plan.warnings, fail_on):
        raise typer.Exit(1)
