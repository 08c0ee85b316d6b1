"""`weightdoctor plan-devices`: where every module lands on given GPUs, CPU and disk, before loading."""

from __future__ import annotations

from typing import Annotated

import typer

from weightdoctor.commands._errors import handle_errors
from weightdoctor.commands._options import DebugOpt, JsonOpt, KeyOpt, RevisionOpt, output_format_hint
from weightdoctor.paths import expand_output

SIZES_HELP = (
    "Sizes: 24GB is decimal (24x10^9 bytes), 24GiB binary (24x2^30), truncated to whole bytes, as accelerate and "
    "huggingface_hub read them; 24Gb (bits to accelerate) is refused."
)


# The most GPUs a plan is made for: more than any one process sees, and the placement stays within seconds.
MAX_GPUS = 1024


@handle_errors
def plan_devices(
    source: Annotated[
        str,
        typer.Argument(
            help="A checkpoint (file, folder, index, repo id) or just a config: config.json, or a folder or repo id "
            "holding one. A 70B model is planned from its config alone.",
            show_default=False,
        ),
    ],
    gpu: Annotated[
        list[str] | None,
        typer.Option("--gpu", help="Memory of one GPU (repeat for each GPU: --gpu 24GB --gpu 24GB). " + SIZES_HELP),
    ] = None,
    cpu: Annotated[
        str | None,
        typer.Option("--cpu", help="Host RAM the model may use. Without it nothing is planned on the CPU."),
    ] = None,
    disk: Annotated[bool, typer.Option("--disk", help="Allow offloading to disk (an offload folder).")] = False,
    strategy: Annotated[
        str,
        typer.Option("--strategy", help="device_map strategy: auto, balanced, balanced_low_0 or sequential."),
    ] = "auto",
    dtype: Annotated[
        str | None,
        typer.Option("--dtype", help="fp64, fp32, fp16, bf16, int8 or int4 (bitsandbytes), or fp8 for a "
                     "fine-grained FP8 checkpoint kept in FP8 (GPUs of compute capability 8.9+). Default: what "
                     "from_pretrained(dtype='auto') picks (config, then checkpoint); with --local, bf16/fp16/fp32."),
    ] = None,
    no_split: Annotated[
        list[str] | None,
        typer.Option("--no-split", help="Module class never split across devices (repeatable). "
                     "Default: the model's _no_split_modules."),
    ] = None,
    reserve: Annotated[
        str,
        typer.Option("--reserve", help="Memory kept free on each GPU (activations, CUDA context), e.g. 2GiB."),
    ] = "0",
    manual_map: Annotated[
        str | None,
        typer.Option("--map", help="Check this hand-written device map JSON instead of computing one "
                     "(not with --strategy, --no-split or --reserve)."),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Write the device_map JSON that from_pretrained(device_map=...) accepts "
                     "(replaces an earlier device map; any other file only with --force)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Let --output replace an existing file that is not a device map.")
    ] = False,
    local: Annotated[
        bool,
        typer.Option("--local", help="Use this machine's devices: free memory of each visible GPU, available RAM."),
    ] = False,
    kv_cache: Annotated[
        bool, typer.Option("--kv-cache", help="Estimate the KV cache for --batch x --seq-len.")
    ] = False,
    batch: Annotated[int, typer.Option("--batch", help="Sequences in the KV-cache estimate.")] = 1,
    seq_len: Annotated[
        int | None, typer.Option(
            "--seq-len", help="Tokens per sequence (default: the context length the config class reads, e.g. "
            "max_position_embeddings; Whisper: max_target_positions).")
    ] = None,
    training: Annotated[
        bool, typer.Option("--training", help="Adam training estimate, as `accelerate estimate-memory` reports it.")
    ] = False,
    model_class: Annotated[
        str | None, typer.Option("--model-class", help="transformers class to build instead of the config's.")
    ] = None,
    fail_on: Annotated[
        str | None,
        typer.Option("--fail-on", help="Exit 1 when the plan reaches this level: info (anything not on the GPUs, "
                     "a plan on the CPU alone included), warn (offload to CPU or disk), error (does not fit, or an "
                     "error finding); offload is info's old name, no-fit error's."),
    ] = None,
    json_output: JsonOpt = False,
    revision: RevisionOpt = None,
    key: KeyOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Plan where every module lands on your GPUs, CPU and disk, as from_pretrained(device_map=...) would.

    The map comes from transformers' own placement code, run on the model built on the meta device (nothing loaded).

    Shows each device's modules as ranges, and what spills to CPU or disk with the bytes it moves per token.

    Gives a verdict, the smallest change that fits, and why a device holds less than its budget, in numbers.

    Exit codes: 0 planned; 1 the verdict or a finding reaches --fail-on (CPU-only plan info, offload warn, no fit
    error), or an invalid --map; 2 bad input.
    """
    from weightdoctor.checkpoint.model_parts import part_of_model, reading_each_part_once
    from weightdoctor.errors import UsageError, choose
    from weightdoctor.plan_devices import (
        FAIL_ON_CHOICES,
        STRATEGIES,
        PlanRequest,
        build_planned_model,
        caches_per_token,
        context_length,
        load_manual_map,
        local_dtype,
        model_part_plan,
        normalize_dtype,
        open_plan_source,
        read_local_devices,
        verdict_exit_code,
    )
    from weightdoctor.plan_devices import (
        plan_devices as run_plan,
    )
    from weightdoctor.units import (
        binary_family,
        parse_size,
        refuse_beyond_any_device,
        refuse_max_memory_value,
        refuse_size_list,
        refuse_unitless_size,
    )

    if fail_on is not None:
        fail_on = choose("--fail-on", fail_on, FAIL_ON_CHOICES)
    strategy = choose("--strategy", strategy, STRATEGIES)  # checked here too: with --map no placement runs to check it
    if manual_map is not None:
        # A hand-written map is checked as written, against the full --gpu/--cpu sizes: these would be ignored.
        shaping = [flag for flag, given in (("--strategy", strategy != "auto"), ("--no-split", bool(no_split)),
                                            ("--reserve", parse_size(reserve, "--reserve") != 0)) if given]
        if shaping:
            raise UsageError(f"{', '.join(shaping)} shape{'s' if len(shaping) == 1 else ''} a computed plan; "
                             "--map is checked as written: drop one or the other")
    if dtype is not None:
        # Checked before reading: `--dtype ""` (an unset variable) was taken as "not given", as convert refuses it.
        normalize_dtype(dtype)
    if model_class is not None and not model_class.strip():
        # `--model-class ""` (an unset variable) was taken as "no class given": the config's class was planned.
        raise UsageError("--model-class is empty: give a transformers class, e.g. LlamaForCausalLM")
    if local and (gpu or cpu):
        raise UsageError("--local reads this machine's devices; do not combine it with --gpu or --cpu")
    if (batch != 1 or seq_len is not None) and not kv_cache:
        raise UsageError("--batch and --seq-len size the KV cache: add --kv-cache")
    # Checked before the model is built: `--seq-len 0` was read as "not given" (the config's length was used), and
    # a negative --batch was refused only once the model had been built.
    if batch < 1:
        raise UsageError(f"--batch {batch}: the KV cache needs at least 1 sequence")
    if seq_len is not None and seq_len < 1:
        raise UsageError(f"--seq-len {seq_len}: the KV cache needs at least 1 token")
    if gpu is not None and len(gpu) > MAX_GPUS:
        # The placement is quadratic in the devices: 5,000 `--gpu` took 25 s, the most a command line holds hours.
        raise UsageError(f"{len(gpu):,} --gpu options: plan for at most {MAX_GPUS:,} GPUs (one per --gpu)")
    for option, given in [("--gpu", g) for g in gpu or []] + ([("--cpu", cpu)] if cpu is not None else []):
        refuse_max_memory_value(option, given)
        if option == "--gpu":
            refuse_size_list(option, given)
        refuse_unitless_size(option, given)
    gpus = [refuse_beyond_any_device("--gpu", g) for g in gpu or []]
    if 0 in gpus:
        # `--gpu 0` reads like "use GPU 0"; a GPU that holds nothing plans nothing on it.
        raise UsageError("--gpu takes the memory of one GPU (e.g. 24GB, 80GiB), not a device index; 0 bytes "
                         "would hold nothing")
    cpu_bytes = refuse_beyond_any_device("--cpu", cpu) if cpu is not None else None
    reserve_bytes = refuse_beyond_any_device("--reserve", reserve)
    local_info = None
    if local:
        local_info = read_local_devices()
        gpus = list(local_info.gpu_free_bytes)
        cpu_bytes = local_info.cpu_available_bytes
    if not gpus and cpu_bytes is None:
        raise UsageError("no devices: give --gpu SIZE (repeatable) and/or --cpu SIZE, or --local")
    # The sizes typed, by device, so the report speaks the user's units (`--gpu 1.7GiB`: GiB, not GB).
    # With --local the devices are measured, but --reserve is still typed: `--local --reserve 1GiB` said 1.07 GB.
    typed = {
        **{f"cuda:{index}": text for index, text in enumerate(gpu or [])},
        **({"cpu": cpu} if cpu is not None and local_info is None else {}),
        **({"reserve": reserve} if reserve_bytes else {})}
    # as typed: --local's dtype is read below
    flags = device_flags(gpu, cpu, local, disk, dtype, strategy=strategy, reserve=reserve if reserve_bytes else "0",
                         kv_cache=kv_cache, batch=batch, seq_len=seq_len, training=training)
    mapping = load_manual_map(manual_map) if manual_map is not None else None
    target = None
    if output in ("", "-"):
        # "" is the current folder to the file system (an unset `--output "$MAP"`); "-" made a file named "-".
        raise UsageError(f"--output {output!r}: give a file name (--json prints the plan on stdout)")
    if output is not None and output.strip().lower() in ("json", ".json"):
        # `-o json` (other tools' way to ask for JSON output) wrote the device map to a file named `json`.
        raise UsageError(f"--output {output!r}: give a file name, e.g. device_map.json (--json prints the plan on "
                         "stdout)")
    if output is not None and output_format_hint(output):
        # `-o yaml`, `-o table`: a report format too, written as a device map named `yaml`.
        raise UsageError(f"--output {output_format_hint(output, 'a file name, e.g. device_map.json')}")
    if output is not None:
        from pathlib import Path

        from weightdoctor.writers.atomic import is_one_of, resolve_output

        target = resolve_output(expand_output(output), output)
        inputs = [Path(p).resolve() for p in (source, manual_map) if p is not None]
        if any(target == p or (p.is_dir() and p in target.parents and target.name == "config.json") for p in inputs):
            raise UsageError(f"--output {output} would overwrite an input; choose another file")

    # One of fairseq's model-parallel parts: its siblings are read once, for the reader's warning and the plan both.
    with reading_each_part_once(), open_plan_source(source, revision=revision, key=key) as checkpoint:
        if output is not None and target in {f.path.resolve() for f in checkpoint.files}:
            # A folder's weight files, shards or index (its config.json is refused above, before reading).
            raise UsageError(f"--output {output} would overwrite an input; choose another file")
        if target is not None and is_one_of(target, [f.path for f in checkpoint.files] + inputs):
            # The same file under another path (a bind mount of the input folder): the map replaced the weights.
            raise UsageError(f"--output {output} would overwrite an input (the same file under another path); "
                             "choose another file")
        if local_info is not None and dtype is None:
            dtype = local_dtype(local_info, checkpoint.config)
        planned = build_planned_model(checkpoint, dtype, model_class, binary_family(typed.values()), flags)
        # One of fairseq's model-parallel parts: planned as the part it is, and said to be one (was planned and
        # headed as if it were the model).
        part = part_of_model([f.path for f in checkpoint.files if f.role == "weights"],
                             {t.name: tuple(t.shape) for t in checkpoint.tensors}) if checkpoint.files and \
            "model_part-" in checkpoint.files[0].path.name else None
    kv = None
    length_source = None
    if kv_cache:
        # Without --seq-len, the decoder's context length as its config class reads it (Whisper's
        # max_target_positions, GPT-2's n_positions, MPT's max_seq_len, LlamaConfig's default 2048, ...).
        # A pure Mamba / Mamba-2 stack keeps a fixed-size state whatever the length: none is needed, nor looked up.
        length, length_source = (seq_len, None) if seq_len is not None else (None, None) if (
            planned.config and not caches_per_token(planned.config)) else context_length(
            planned.config or {}, path=checkpoint.source)
        kv = (batch, length)
    request = PlanRequest(gpus=gpus, cpu=cpu_bytes, disk=disk, strategy=strategy, no_split=no_split or None,
                          reserve=reserve_bytes, manual_map=mapping, kv_cache=kv, kv_length_source=length_source,
                          training=training, unset_max_memory=local, binary_units=binary_family(typed.values()),
                          revision=revision)
    report = run_plan(planned, request, source=source)
    if part is not None:
        report.model_part = model_part_plan(report, part)
    if local_info is not None:
        report.local = {"gpu_free_bytes": local_info.gpu_free_bytes, "gpu_names": local_info.gpu_names,
                        "cpu_available_bytes": local_info.cpu_available_bytes,
                        "bf16_supported": local_info.bf16_supported, "dtype": local_dtype(local_info, planned.config),
                        "keeps_fp8": local_info.keeps_fp8}
    if output is not None:
        from weightdoctor.render.plan_devices import write_device_map

        write_device_map(report.device_map, output, force=force)
    if json_output:
        from weightdoctor.render.json import print_json

        print_json(report)
    else:
        from weightdoctor.render import console
        from weightdoctor.render.plan_devices import render_plan

        render_plan(report, console.stdout, typed)
        for warning in report.warnings:
            console.warn(warning)
        if output is not None:
            console.stderr.print(f"wrote the device map to {output}", soft_wrap=True, markup=False)
    code = verdict_exit_code(report.verdict, fail_on, report.findings)
    if code:
        raise typer.Exit(code)


def device_flags(gpu: list[str] | None, cpu: str | None, local: bool, disk: bool, dtype: str | None, *,
                 strategy: str = "auto", reserve: str = "0", kv_cache: bool = False, batch: int = 1,
                 seq_len: int | None = None, training: bool = False) -> str:
    """The devices, dtype and workload of a run as typed, each word quoted for a shell: what a command it suggests
    (plan an adapter's base model) repeats, so that it plans on the same machine for the same work (--reserve,
    --strategy, the KV cache and --training were left out: the base was planned without them).

    Example:
        >>> device_flags(["24GB", "24GB"], "64 GB", False, True, "bf16")
        "--gpu 24GB --gpu 24GB --cpu '64 GB' --disk --dtype bf16"
        >>> device_flags(["24GB"], None, False, False, None, reserve="2GiB", kv_cache=True, seq_len=4096)
        '--gpu 24GB --reserve 2GiB --kv-cache --seq-len 4096'
    """
    from weightdoctor.paths import shell_word

    words = ["--local"] if local else [f"--gpu {shell_word(size)}" for size in gpu or []]
    words += [f"--cpu {shell_word(cpu)}"] if cpu is not None and not local else []
    words += ["--disk"] if disk else []
    words += [f"--dtype {shell_word(dtype)}"] if dtype is not None else []
    words += [f"--strategy {shell_word(strategy)}"] if strategy != "auto" else []
    words += [f"--reserve {shell_word(reserve)}"] if reserve.strip() not in ("0", "") else []
    words += ["--kv-cache"] if kv_cache else []
    words += [f"--batch {batch}"] if kv_cache and batch != 1 else []
    words += [f"--seq-len {seq_len}"] if kv_cache and seq_len is not None else []
    words += ["--training"] if training else []
    return " ".join(words)
