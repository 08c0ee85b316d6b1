"""Rendering a device plan for people (Rich), and writing the device_map JSON that from_pretrained accepts."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from weightdoctor.errors import OutputError
from weightdoctor.plan_devices import DeviceUse, PlanReport, device_name, main_gpus
from weightdoctor.render.text import escape
from weightdoctor.units import binary_family, format_bytes, format_count, unit_family
from weightdoctor.wording import counted, plural

# Assumed transfer rates for the per-token slowdown line (stated in the output as assumptions, not measured).
HOST_TO_GPU_BYTES_PER_S = 25e9  # PCIe 4.0 x16, in practice
DISK_BYTES_PER_S = 3e9  # a fast NVMe SSD
BAR_WIDTH = 30
VERDICT_TEXT = {
    "fits-on-gpus": ("[bold green]fits on the GPUs[/]", "every module is on a GPU"),
    "fits-on-cpu": ("[bold yellow]fits on the CPU[/]", "no GPU was given: the model runs on the CPU"),
    "needs-cpu-offload": ("[bold yellow]needs CPU offload[/]", "some modules stay in RAM and are streamed to the GPU"),
    "needs-disk-offload": ("[bold red]needs disk offload[/]", "some modules are read from disk at every forward pass"),
    "does-not-fit": ("[bold red]does not fit[/]", "the budgets given cannot hold the model"),
}


def _gpus_given(report: PlanReport) -> bool:
    """Whether the plan was given a GPU (`--gpu`, or one `--local` found)."""
    return any(device.device.startswith("cuda") for device in report.devices)


def write_device_map(device_map: dict[str, int | str], path: str | os.PathLike[str], *, force: bool = False) -> None:
    """Write `device_map` as JSON, whole or not at all (a synced temporary sibling renamed into place).

    An existing file is replaced when it is a device map (the same command run again) or with `force`: another
    file there (a config, weights, notes) is someone's, and `--output` given by mistake would have destroyed it.

    Raises:
        OutputError: the folder does not exist or cannot be written, or the file there is not a device map.
    """
    from weightdoctor.writers.atomic import atomic_file, output_error, refuse_special

    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        is_folder = folder.is_dir()
    except OSError as exc:  # inside a folder that cannot be entered: "permission denied: [Errno 13] ..." of no output
        raise output_error(exc, target) from exc
    if not is_folder:
        from weightdoctor.paths import shell_word

        # A file where a folder should be (`--output notes.txt/map.json`): the folder is not missing, and
        # `mkdir -p` would fail; said as convert and shard say it.
        if any(part.exists() and not part.is_dir() for part in (folder, *folder.parents)):
            import errno

            raise output_error(OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)), target)
        make = shell_word(str(folder), argument=True)
        how = f" (create it first: mkdir -p {make})" if not folder.exists() else ""
        raise OutputError(f"the output folder does not exist{how}", path=str(target))
    refuse_special(target)  # a device, FIFO or folder is never replaced, --force or not: said first
    replace = force or is_device_map_file(target)
    if not replace and os.path.isfile(target) and not os.path.islink(target):
        raise OutputError("output exists and is not a device map (a JSON object of module names to devices): "
                          "pass --force to replace it", path=str(target))
    with atomic_file(target, replace=replace) as tmp:
        tmp.write_text(json.dumps(device_map, indent=2) + "\n", encoding="utf-8")


# A device map of 100,000 modules is a few MB; a file much larger is not one.
_MAX_DEVICE_MAP_BYTES = 64 << 20


def is_device_map_file(path: Path) -> bool:
    """Whether `path` is a regular file holding a device map: a JSON object whose values are devices (an int, or
    a device name: "cpu", "disk", "cuda:0", ...). False for anything else (a tokenizer's special_tokens_map.json
    maps names to strings too), a link included (it is not followed)."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > _MAX_DEVICE_MAP_BYTES:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and all(
        (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or (isinstance(v, str) and _DEVICE.fullmatch(v))
        for v in data.values())


_DEVICE = re.compile(r"(?:cpu|disk|meta|mps|cuda|xpu|npu|mlu|hpu|musa|sdaa)(?::\d+)?")


def _bar(used: int, capacity: int | None) -> str:
    if not capacity:
        return "[dim]" + "·" * BAR_WIDTH + "[/]"
    filled = min(BAR_WIDTH, round(BAR_WIDTH * used / capacity))
    colour = "red" if used > capacity else "green"
    return f"[{colour}]" + "█" * filled + "[/]" + "[dim]" + "░" * (BAR_WIDTH - filled) + "[/]"


def _both(num_bytes: int, binary: bool, typed: str | None) -> str:
    """A size the user typed, in the report's units, and in the units it was typed in too where those are the other
    family (`--gpu 300KiB --cpu 2GB`: `307.20 KB (300.00 KiB)`)."""
    said = format_bytes(num_bytes, binary)
    if typed is not None and unit_family(typed) == ("decimal" if binary else "binary"):
        said += f" ({format_bytes(num_bytes, not binary)})"
    return said


def _device_lines(device: DeviceUse, offloading: bool, report: PlanReport, binary: bool = False,
                  typed: str | None = None) -> list[str]:
    def size(num_bytes: int) -> str:
        return format_bytes(num_bytes, binary)

    capacity = "unlimited" if device.capacity_bytes is None else _both(device.capacity_bytes, binary, typed)
    name = device.device
    spill = offloading and device.device in ("cpu", "disk") and device.used_bytes > 0
    style = "bold red" if spill else "bold"
    used = f"{size(device.used_bytes)} of {capacity}" + (" [bold red]OFFLOAD[/]" if spill else "")
    # tied tensors loaded on another device, which dispatch_model copies here beside what the map counts
    copies = sum(item.tied_copy_bytes for item in device.ranges)
    if copies:
        used += f" [yellow](+ {size(copies)} of tied copies accelerate adds here)[/]"
    if device.device == "disk" and not report.disk_allowed:
        # "164 KB of nothing (no --disk) OFFLOAD" read as an offload planned to a disk of no size: what is left
        # over has nowhere to go, and the plan does not fit.
        used = (f"[bold red]{size(device.used_bytes)} left over with nowhere to go: disk offload is off "
                "(--disk allows it); does not fit[/]" if device.used_bytes
                else "0 B (disk offload is off; --disk allows it)")
        style = "bold red" if device.used_bytes else "bold"
    # A string is one line, never cut (a module range, easy to grep); a (head, body) pair is an explanation whose
    # body is wrapped under itself (`print_hanging`).
    bar = _bar(device.used_bytes, device.capacity_bytes)
    lines: list[str | tuple[str, str]] = [f"[{style}]{name:<7}[/] {bar} {used}"]
    if device.budget_bytes is not None and device.capacity_bytes is not None \
            and device.budget_bytes < device.capacity_bytes and not report.manual_map:
        lines.append(f"         [dim]planner budget {size(device.budget_bytes)}[/]")
    # Without --disk what is left over goes nowhere: `→ disk` under "nowhere to go" read as placed on a disk.
    unplaced = device.device == "disk" and not report.disk_allowed
    # The map's entries that are no module of the model hold nothing: each is an `unknown-module` finding, and
    # listed here too they were one Rich line each (80,000 entries of a --map for another model: 26 s of printing).
    unknown = {f.tensor for f in report.findings if f.code == "unknown-module"}
    left_out = [item for item in device.ranges if item.bytes == 0 and set(item.modules) <= unknown]
    if len(left_out) > MAX_FINDINGS_SHOWN_PER_CODE:
        ranges = [item for item in device.ranges if not (item.bytes == 0 and set(item.modules) <= unknown)]
    else:
        left_out, ranges = [], device.ranges
    for item in ranges:
        arrow = "[red]→[/]" if spill else "→"
        where = "[red]not placed[/]" if unplaced else f"{arrow} {name}"
        # a tied head's 0 B read as an empty module: its weight is the tensor counted under another name
        tied = (f"  [dim](tied to {escape(', '.join(item.tied_to))}: shares its storage, counted there)[/]"
                if item.tied_to else "")
        if item.tied_copy_bytes:
            # the tensor is loaded on another device: dispatch_model keeps a copy of it on this GPU for good
            tied = (f"  [dim](tied to {escape(', '.join(item.tied_to))}, counted there: accelerate keeps a "
                    f"{size(item.tied_copy_bytes)} copy of it here, not in this figure)[/]")
        lines.append(f"         {escape(item.label):<40} {where}  {size(item.bytes):>10}{tied}")
    if left_out:
        entries = sum(len(item.modules) for item in left_out)
        lines.append(f"         [dim]and {entries:,} entries of the map that are no module of the model "
                     "(unknown-module below; --json lists them)[/]")
    if device.held_back:
        gap = sum(h.bytes for h in device.held_back)
        lines.append(f"         [cyan]why {size(gap)} of {name} stays free:[/]")
        for held in device.held_back:
            lines.append((f"           {size(held.bytes):>10}  ", f"{held.reason}: {escape(held.detail)}"))
    return lines


def print_hanging(console: Console, head: str, body: str) -> None:
    """Print `head` (markup) then `body` (markup) wrapped at words to the console's width, the lines after the first
    indented to where `body` starts.

    Example: `print_hanging(console, "offload: ", "60.42 GB in CPU RAM, ...")` at 40 columns prints
    "offload: 60.42 GB in CPU RAM, 0 B on" then "         disk: ..." under it.
    """
    from rich.text import Text

    lead = Text.from_markup(head)
    # A head as wide as the console leaves the body no room: it then starts a line of its own, unindented.
    indent = lead.cell_len if lead.cell_len <= console.width // 2 else 0
    lines = Text.from_markup(body).wrap(console, max(console.width - indent, 20))
    if not indent:
        console.print(lead, soft_wrap=True)
    for i, line in enumerate(lines):
        line.rstrip()
        console.print(Text.assemble(lead if i == 0 and indent else " " * indent, line), soft_wrap=True)


# A --map written for another model (or a hostile one: 100 MB holds 8,000,000 entries) gives one `unknown-module` per
# entry: 80,000 of them took 43 s to print, one Rich line each (0.5 ms); a 2,000,000-entry map ran past 10 minutes.
MAX_FINDINGS_SHOWN_PER_CODE = 20


def render_plan(report: PlanReport, console: Console, typed_sizes: Mapping[str, str] | None = None) -> None:
    """Print the plan: header, one bar per device with its module ranges, offload, totals, verdict, fixes.

    `typed_sizes` maps a device (`cuda:0`, `cpu`) to the size the user typed for it: where every one typed with a
    unit is in binary units (`--gpu 1.7GiB`), the report's sizes are too (`1.70 GiB`, not `1.83 GB`); a device
    typed in the other family than the rest has its size said in both.
    """
    typed_sizes = typed_sizes or {}
    binary = binary_family(typed_sizes.values())

    def size(num_bytes: int) -> str:
        return format_bytes(num_bytes, binary)

    def p(text: str = "") -> None:
        console.print(text, soft_wrap=True)  # one line per item, never cut: easy to grep

    def explain(head: str, body: str) -> None:
        # Sentences, not items: printed whole on one line they ran past 80 columns (the offload line was 300
        # characters) and a terminal broke them mid-word; there they are wrapped at words under their own start.
        # Piped (grep, a log, a script) each stays one line, as every other line of the plan.
        if console.is_terminal:
            print_hanging(console, head, body)
        else:
            p(head + body)
    explain(f"[bold]{escape(report.source)}[/]  ", f"{escape(report.model_class)} (built from {report.built_from} "
            "on the meta device)")
    p(f"  dtype {report.dtype} · {format_count(report.num_params)} {plural(report.num_params, 'parameter')} · weights "
      f"{size(report.weights_bytes)}" + (f" + buffers {size(report.buffers_bytes)}"
                                                 if report.buffers_bytes else ""))
    if report.model_part is not None:
        part = report.model_part
        explain("  [bold]one part:[/] ", f"{escape(part.file)} is part {part.rank} of {part.parts} tensor-parallel "
                f"parts of one fairseq model: this plan is that part's alone, what each of the {part.parts} GPUs of "
                f"fairseq's --model-parallel-size {part.parts} loads; merged, the model is "
                f"{format_count(part.merged_params)} {plural(part.merged_params, 'parameter')}, weights "
                f"{size(part.merged_weights_bytes)} at this dtype (plan the merged state dict for one device map)")
    if report.manual_map:
        p("  placement: your --map, checked")
    else:
        explain("  placement: ", f"{escape(report.placement)} · strategy {report.strategy} · no-split "
                f"{escape(', '.join(report.no_split) or '(none)')}"
                + (f" · reserve {_both(report.reserve_bytes, binary, typed_sizes.get('reserve'))} per GPU"
                   if report.reserve_bytes else ""))
    if report.local:
        names = ", ".join(report.local["gpu_names"]) or "no CUDA GPU"
        explain("  --local: ", f"{escape(names)}; RAM available {size(report.local['cpu_available_bytes'])}; "
                f"bf16 {'supported' if report.local['bf16_supported'] else 'not supported'}")
    p()
    offloading = any(d.device.startswith("cuda") for d in report.devices)
    for device in report.devices:
        for line in _device_lines(device, offloading, report, binary, typed_sizes.get(device.device)):
            p(line) if isinstance(line, str) else explain(*line)
    p()
    off = report.offload
    if off.bytes_per_token is None:
        # from_pretrained raises on this map (the error below says why): no figure of what it would stream
        if off.cpu_bytes + off.disk_bytes:
            explain("[bold red]offload:[/] ", f"{size(off.cpu_bytes)} in CPU RAM, {size(off.disk_bytes)} on disk in "
                    "the map: nothing is streamed, since from_pretrained cannot run this map (see the error)")
    # a tied twin offloaded beside one on the GPU (a tied-split map) streams though the map counts it on the GPU
    elif off.cpu_bytes + off.disk_bytes + (off.tied_reloaded_per_token_bytes or 0) \
            + (off.tied_reloaded_per_input_bytes or 0) + (off.repeated_calls_per_token_bytes or 0):
        # Without --disk what the disk line holds is placed nowhere (the plan does not fit): it is neither on a disk
        # nor streamed to the GPU, so only the CPU's share is timed.
        on_disk = off.disk_bytes if report.disk_allowed else 0
        streamed = off.cpu_bytes + on_disk
        # A language model streams the offloaded weights once per generated token; any other (an encoder, a UNet
        # or VAE, a vision model) once per forward pass: per image, per denoising step.
        step, unit = (("generated token", "token") if generates_tokens(report.model_class)
                      else ("forward pass", "pass"))
        where = (f"{size(off.disk_bytes)} on disk" if report.disk_allowed or not off.disk_bytes
                 else f"{size(off.disk_bytes)} not placed (disk offload is off; --disk allows it)")
        # A generating encoder-decoder (T5, BART, Whisper) runs its encoder (and its decoder's cross-attention key /
        # value projections) once per input and the rest of its decoder once per token: those offloaded weights are
        # streamed once per input, not per token.
        tied_input = off.tied_reloaded_per_input_bytes if step == "generated token" else 0
        encoder_cpu = off.per_input_cpu_bytes - off.tied_reloaded_per_input_bytes if step == "generated token" else 0
        encoder_disk = off.per_input_disk_bytes if step == "generated token" and report.disk_allowed else 0
        # The offloaded modules' buffers accelerate moves to the GPU once (offload_buffers=False) are not streamed:
        # taken from the CPU's share first (they are a few KB to MB; the split by device is not kept).
        kept = off.buffers_on_gpu_bytes if not _runs_on_cpu(report) else 0
        kept_cpu = min(kept, off.cpu_bytes - encoder_cpu)
        kept_disk = min(kept - kept_cpu, on_disk - encoder_disk)
        per_step_cpu, per_step_disk = off.cpu_bytes - encoder_cpu - kept_cpu, on_disk - encoder_disk - kept_disk
        streamed -= kept_cpu + kept_disk
        # A tied tensor the map counts in CPU RAM whose twin sits on the main GPU: accelerate uses the GPU's copy
        twin_on_gpu = off.tied_on_gpu_bytes if not _runs_on_cpu(report) else 0
        per_step_cpu -= twin_on_gpu
        streamed -= twin_on_gpu
        # A tied tensor held by two offloaded modules is loaded by each one's hook (timed as from CPU RAM)
        tied_step = off.tied_reloaded_per_token_bytes + (off.tied_reloaded_per_input_bytes - tied_input)
        per_step_cpu += tied_step
        # A module its layer calls twice a step is loaded at each call (timed as from CPU RAM)
        repeated = off.repeated_calls_per_token_bytes if not _runs_on_cpu(report) else 0
        per_step_cpu += repeated
        streamed += repeated
        # ... but one loaded on another GPU is copied from there, GPU to GPU: not timed as from the host
        from_gpu = off.tied_from_gpu_per_token_bytes if not _runs_on_cpu(report) else 0
        per_step_cpu -= from_gpu
        encoder_cpu += tied_input
        streamed += tied_step
        per_step = per_step_cpu + per_step_disk

        def timed(cpu_part: int, disk_part: int, per: str) -> str:
            seconds = cpu_part / HOST_TO_GPU_BYTES_PER_S + disk_part / DISK_BYTES_PER_S
            return f"≥ {_format_seconds(seconds)}/{per}"

        rates = "at an assumed 25 GB/s host→GPU and 3 GB/s disk"
        if encoder_cpu + encoder_disk:
            moved = (f": {size(encoder_cpu + encoder_disk)} (the encoder's, and the decoder's cross-attention keys "
                     f"and values) moved to the GPU once per input ({timed(encoder_cpu, encoder_disk, 'input')}), "
                     f"and {size(per_step)} (the rest) for every {step} "
                     f"({timed(per_step_cpu, per_step_disk, unit)}) {rates}")
        else:
            moved = (f": {size(streamed)} moved to the GPU for every {step} "
                     f"({timed(per_step_cpu, per_step_disk, unit)} {rates})" if streamed else "")
        if kept_cpu + kept_disk:
            moved += (f"; besides, {size(kept_cpu + kept_disk)} of buffers of the offloaded modules, which "
                      "accelerate moves to the first GPU once and keeps there (offload_buffers=False): on that GPU, "
                      "not counted there in the map")
        if twin_on_gpu:
            moved += (f"; {size(twin_on_gpu)} of tied weights counted in CPU RAM are not moved: accelerate uses "
                      "their twin's copy on the GPU")
        if repeated:
            moved += (f"; of that, {size(repeated)} is modules their layer calls more than once a {step}, whose "
                      "hooks load them at each call")
        if from_gpu:
            moved += (f"; of that, {size(from_gpu)} is tied weights copied from the GPU their twin is loaded on (GPU "
                      "to GPU, not timed), not from CPU RAM")
        if (streamed or kept) and _runs_on_cpu(report):
            # accelerate's main_device is "cpu" for a map of "cpu" and "disk" alone: nothing goes to a GPU
            moved = ": the map names no GPU, so the model runs on the CPU and nothing is moved to a GPU"
        explain("[bold red]offload:[/] ", f"{size(off.cpu_bytes)} in CPU RAM, {where}{moved}")
    if report.kv_cache is not None:
        kv = report.kv_cache
        fit = "[green]fits[/]" if kv.fits_on_gpus else "[red]does not fit[/]"
        state = (f"recurrent state {size(kv.state_bytes)} for the batch (conv and SSM / linear-attention "
                 "states, fixed per sequence)") if kv.state_bytes else ""
        room = _kv_room(report, fit, size)
        if not kv.num_layers:
            tokens = "any length" if kv.seq_len is None else counted(kv.seq_len, 'token', grouped=False)
            explain("KV cache: ", f"none for batch {kv.batch} x {tokens}"
                    + (f" ({escape(kv.note)})" if kv.note else "") + (f"; {state}; {room}" if state else ""))
        else:
            # The note (a sliding window, a latent cache) says why the total is not per-token x tokens: it goes in
            # the same parentheses, not after the room ("... (see the warning) (sliding-window layers ...)").
            explain("KV cache: ", f"{size(kv.total_bytes)} for batch {kv.batch} "
                    f"x {counted(kv.seq_len, 'token', grouped=False)} "
                    f"({size(kv.bytes_per_token)}/token: {_kv_per_token(kv)}"
                    + (f"; [dim]{escape(kv.note)}[/]" if kv.note else "") + ")"
                    + (f", plus {_kv_cross(kv, size)}" if kv.cross_attention_bytes else "")
                    + (f", plus {state}" if state else "") + f"; {room}")
    if report.training is not None:
        tr = report.training
        if tr.accelerate_estimate_bytes is None:
            p(f"training (Adam): {escape(tr.note or 'not available')}")
        else:
            explain(f"training (Adam, {tr.mixed_precision}): ", "accelerate estimate-memory reports "
                    f"{size(tr.accelerate_estimate_bytes)}; weights {size(tr.model_bytes or 0)} + gradients "
                    f"{size(tr.gradients_bytes or 0)} + two moments {size(tr.optimizer_bytes or 0)} = "
                    f"{size(tr.total_bytes or 0)}")
    shown: dict[str, int] = {}
    for finding in report.findings:
        shown[finding.code] = shown.get(finding.code, 0) + 1
        if shown[finding.code] <= MAX_FINDINGS_SHOWN_PER_CODE:
            explain(f"[red]{finding.severity}[/] {finding.code}: ", escape(finding.message))
    for code, count in shown.items():
        if count > MAX_FINDINGS_SHOWN_PER_CODE:
            severity = next(f.severity for f in report.findings if f.code == code)
            p(f"[red]{severity}[/] {code}: and {count - MAX_FINDINGS_SHOWN_PER_CODE:,} more like these "
              "(--json lists every one)")
    text, why = VERDICT_TEXT[report.verdict]
    if report.verdict == "fits-on-cpu" and report.local is not None:
        why = "--local found no GPU on this machine: the model runs on the CPU"  # none was given, none was seen
    elif report.verdict in ("needs-cpu-offload", "needs-disk-offload") and _runs_on_cpu(report):
        why = "no module is placed on the GPUs given: the model runs on the CPU, nothing streamed to a GPU"
    elif report.verdict == "does-not-fit" and any(f.code == "quantizer-refuses-offload" for f in report.findings):
        # A --map puts modules on cpu or disk by hand, whatever the GPUs hold: the planner only when they are full.
        # With no GPU given the map is the CPU's (and disk's) alone: no GPU was too small.
        why = ("your --map places modules on cpu or disk, which its quantizer refuses here" if report.manual_map
               else "the GPUs given cannot hold the model, and its quantizer refuses to offload the rest here"
               if _gpus_given(report) else
               "no GPU was given, and its quantizer refuses a map of the CPU (or disk) here: see the error above")
    elif report.verdict == "does-not-fit" and report.offload.bytes_per_token is None:
        # a map from_pretrained raises on (a tied twin on disk beside one elsewhere, GGUF's refusal of disk)
        why = "from_pretrained cannot run this map: see the error above"
    if report.model_part is not None:
        why += f"; part {report.model_part.rank} of {report.model_part.parts} only"
    explain("verdict: ", f"{text} [dim]({why})[/]")
    for suggestion in report.suggestions:
        explain("  smallest change: ", escape(suggestion.description))
    if report.verdict not in ("fits-on-gpus", "fits-on-cpu") and not report.suggestions and not report.manual_map \
            and (_gpus_given(report) or not any(f.code == "quantizer-refuses-offload" for f in report.findings)):
        # (no GPU given and a quantizer that refuses the CPU: a GPU is what it needs, no size of one was tried)
        p("  [dim]no lower dtype or extra GPU of that size (up to 64) fits[/]")


# Bytes of one cached value, by the dtype names the KV estimate gives.
_KV_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1,
                "int8": 1, "uint8": 1}


def _kv_per_token(kv: Any) -> str:
    """The per-token figure as a product a reader can check: "2 (keys and values) x 32 layers x 8 KV heads x 128
    values a head x 2 bytes (bfloat16)" where it multiplies out to `bytes_per_token`; else (a latent cache, an
    indexer's key, layers that cache nothing) the factors without the keys-and-values 2, head_dim with its unit
    ("x 128" alone read as a count of nothing). A latent cache never has the keys-and-values 2, even where its
    indexer's keys happen to double the bytes.

    Example:
        >>> from types import SimpleNamespace as K
        >>> _kv_per_token(K(num_layers=2, num_kv_heads=1, head_dim=4, dtype="float16", bytes_per_token=32))
        '2 (keys and values) x 2 layers x 1 KV head x 4 values a head x 2 bytes (float16)'
        >>> _kv_per_token(K(num_layers=2, num_kv_heads=1, head_dim=4, dtype="float16", bytes_per_token=16))
        '2 layers x 1 KV head x 4 values a head at float16'
    """
    factors = (f"{counted(kv.num_layers, 'layer', grouped=False)} x {kv.num_kv_heads} KV "
               f"{plural(kv.num_kv_heads, 'head')} x {counted(kv.head_dim, 'value', grouped=False)} a head")
    itemsize = _KV_ITEMSIZE.get(kv.dtype)
    keys_and_values = not getattr(kv, "_latent", False)  # a latent cache whose indexer keys made up the 2
    if keys_and_values and itemsize and kv.bytes_per_token == 2 * kv.num_layers * kv.num_kv_heads * kv.head_dim \
            * itemsize:
        return f"2 (keys and values) x {factors} x {counted(itemsize, 'byte', grouped=False)} ({kv.dtype})"
    return f"{factors} at {kv.dtype}"


def _kv_cross(kv: Any, size: Any) -> str:
    """An encoder-decoder's cross-attention cache as a product a reader can check: "cross-attention 3.07 MB
    (2.05 KB/encoder position x 1500 positions x batch 1)" (the per-position figure is the decoder layers' keys and
    values of one encoder position; see the note for where the positions come from).

    Example:
        >>> from types import SimpleNamespace as K
        >>> _kv_cross(K(cross_attention_bytes=6000, encoder_seq_len=1500, batch=2), lambda n: f"{n} B")
        'cross-attention 6000 B (2 B/encoder position x 1500 positions x batch 2)'
    """
    per_position = kv.cross_attention_bytes // (kv.encoder_seq_len * kv.batch)
    return (f"cross-attention {size(kv.cross_attention_bytes)} ({size(per_position)}/encoder position x "
            f"{counted(kv.encoder_seq_len, 'position', grouped=False)} x batch {kv.batch})")


def _runs_on_cpu(report: PlanReport) -> bool:
    """Whether GPUs were given and the map names none of them: accelerate's dispatch_model then runs the model on
    the CPU (its main_device "cpu"; a map of "cpu" alone is moved there whole), and streams nothing to a GPU."""
    return (any(d.device.startswith("cuda") for d in report.devices)
            and not any(isinstance(device, int) for device in report.device_map.values()))


def _kv_room(report: PlanReport, fit: str, size: Any) -> str:
    """Where the KV cache goes, in words true of the plan: "fits in the 999.88 MB the GPU has left" said "the 0 B
    the GPUs have left" where no GPU was given, and "fits" in the room of GPUs that hold no layer at all, where the
    offloaded weights are streamed through the first of them as each runs."""
    kv = report.kv_cache
    assert kv is not None
    gpus = [d for d in report.devices if d.device.startswith("cuda")]
    if not gpus:
        return "no GPU was given: it is kept in CPU RAM with the model"
    if _runs_on_cpu(report):
        # accelerate's main_device is "cpu" for a map of "cpu" and "disk" alone: the model runs there, its cache too
        # ("fits in the 80.00 MB the GPUs have left in all" was said of GPUs the map does not use).
        return ("the map runs no module on a GPU: the model runs on the CPU, and its cache is kept in CPU RAM with "
                "it, not on the GPUs given")
    what = "the GPU has" if len(gpus) == 1 else "the GPUs have"
    room = (f"{fit} in the {size(kv.gpu_free_bytes)} {what} left" + ("" if len(gpus) == 1 else " in all")
            if kv.gpu_free_bytes else f"[red]does not fit[/]: {what} no memory left")
    needed = kv.held_bytes
    if not kv.fits_on_gpus and len(gpus) > 1 and needed <= kv.gpu_free_bytes:
        # The room left in all holds it, one GPU not its layers' share (the plan's warning names it): "does not fit
        # in the 20.52 GB the GPUs have left in all" read as a sum gone wrong.
        room = (f"{fit} on the GPUs: they have {size(kv.gpu_free_bytes)} left in all, but each layer's share stays "
                "on that layer's GPU, and one has too little left (see the warning)")
    largest = max((d.capacity_bytes or 0) for d in gpus)
    if needed > largest:
        room += f" (it is larger than any GPU given, {size(largest)})" if len(gpus) > 1 else \
            f" (it is larger than the GPU, {size(largest)})"
    offloaded = report.offload.cpu_bytes + report.offload.disk_bytes
    if offloaded and kv.fits_on_gpus:
        # accelerate runs each offloaded module on the first GPU, copying its weights there as it runs: that room
        # is not the cache's alone.
        # accelerate's main_device (dispatch_model: the first of the set of the map's GPUs, see `main_gpus`: not
        # the lowest-numbered with a GPU from cuda:8 on), not cuda:0 where cuda:0 holds nothing.
        candidates = main_gpus(report.device_map)
        first = " or ".join(device_name(gpu) for gpu in candidates) if candidates else gpus[0].device
        if len(candidates) > 1:
            first += (" (whichever accelerate's dispatch_model takes first from a set of the map's GPUs, from run "
                      "to run)")
        room += (f"; {size(offloaded)} of weights are offloaded and copied to {first} as each module "
                 "runs, in the same room")
    return room


# Class-name endings of transformers' generating heads (causal and seq2seq LMs, vision- and speech-to-text).
_GENERATING_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration", "ForSeq2SeqLM", "ForVision2Seq",
                     "ForImageTextToText", "ForSpeechSeq2Seq", "ForTextToSpeech", "ForTextToWaveform",
                     # Generating classes named otherwise (their can_generate() is true): opus-mt's MarianMTModel,
                     # TrOCR's and Donut's VisionEncoderDecoderModel, bert2bert's EncoderDecoderModel, Speech- too.
                     "MarianMTModel", "EncoderDecoderModel", "RagTokenForGeneration", "ModelWithLMHead")


def _format_seconds(seconds: float) -> str:
    """`2.42 s`, `34 ms`, `34 µs`: a small offload would otherwise read `0.00 s`, as if it cost nothing."""
    if seconds >= 0.1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def generates_tokens(model_class: str) -> bool:
    """Whether a model of this class runs once per generated token (what "per token" figures assume).

    Example:
        >>> generates_tokens("LlamaForCausalLM"), generates_tokens("UNet2DConditionModel")
        (True, False)
    """
    return model_class.endswith(_GENERATING_HEADS)
