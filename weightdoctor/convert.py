"""`weightdoctor convert`'s analysis: plan a format/dtype/name conversion, then run it.

`plan_convert` is pure planning (names, dtypes, sizes, files); `run_convert` streams the tensors
through the writers, verifies what was written and commits it atomically (see `weightdoctor.rewrite`).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from weightdoctor.checkpoint import Checkpoint
from weightdoctor.errors import UsageError, clip_middle
from weightdoctor.paths import expand_output
from weightdoctor.renames import Rename
from weightdoctor.rewrite import (
    DroppedAlias,
    OutputFile,
    SideFile,
    TensorSelection,
    WriteResult,
    bytes_to_write,
    check_not_input,
    default_index_name,
    default_output_name,
    disk_shortfall,
    dry_run_refusal,
    hub_cache_output_note,
    meta_release_note,
    nemo_weights_note,
    pickles_copied_note,
    plan_tensors,
    refuse_names_too_long,
    side_files,
    single_file_of_index,
    with_config_dtype,
    write_plan,
)
from weightdoctor.wording import counted, plural

FORMATS = ("safetensors", "bin")
# What people call the pickle format (its file suffixes, torch.save's library): `--to pt` is `--to bin`.
_PICKLE_NAMES = ("pt", "pth", "ckpt", "pkl", "pickle", "torch", "pytorch", "pytorch_model")


def format_choice(option: str, value: str) -> str:
    """The one line refusing an unknown `--to` / `--format`, with the format meant (`SAFETENSORS`, `safetensor`,
    `.bin`, `pt`: torch.save's format is written as .bin)."""
    from weightdoctor.dtypes import ALIASES
    from weightdoctor.errors import did_you_mean
    from weightdoctor.rewrite import CAST_TARGETS

    typed = value.strip().lower().lstrip(".")
    hint = "; did you mean 'bin'?" if typed in _PICKLE_NAMES else did_you_mean(typed, FORMATS)
    if (CAST_TARGETS.get(typed) or ALIASES.get(typed)) in CAST_TARGETS.values():
        # `convert --to fp16`: the format option given the dtype meant (`--dtype fp16` casts, the file format stays).
        hint = f"; {value.strip()} is a dtype: --dtype {value.strip()} casts to it"
    elif typed == "json":
        # `--format json` asks for the report as JSON (other tools' spelling); the weights are never written as JSON.
        hint = "; weights are not written as JSON: --json prints the report as one JSON object on stdout"
    return f"{option} {value!r}: choose one of {', '.join(FORMATS)}{hint}"


@dataclass
class ConvertPlan:
    """What `convert` will write.

    Attributes:
        source / output: as given; `format`: "safetensors" or "bin"; `single_file`: output is one file
            (else a folder with the converted weight files, an index if the source had one, and copies).
        files: each output file with its tensor names and size; `index`: the index file name or None.
        num_tensors / total_bytes: of the output; `dtype`: the cast target (None: dtypes kept).
        cast: "float32->float16" -> number of tensors; `kept_fp32`: tensors kept in fp32 by --keep-fp32.
        renamed: tensors whose name changed; `renames`: the renames as flags.
        dropped_aliases: tied tensors left out of a safetensors output, each with the name kept.
        copied: side files copied beside the weights; `metadata`: safetensors metadata written.
    """

    source: str
    output: str
    format: str
    single_file: bool
    files: list[OutputFile]
    index: str | None
    num_tensors: int
    total_bytes: int
    dtype: str | None
    cast: dict[str, int]
    kept_fp32: list[str]
    renamed: int
    renames: list[str]
    dropped_aliases: list[DroppedAlias]
    copied: list[str]
    metadata: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    _selection: TensorSelection | None = field(default=None, repr=False)
    _copy_paths: list[SideFile] = field(default_factory=list, repr=False)


@dataclass
class ConvertResult:
    """A finished conversion: the plan and what was written (`write`), or `write` None for a dry run."""

    plan: ConvertPlan
    write: WriteResult | None
    dry_run: bool
    # With --dry-run: why the write would be refused (`PATH: why`, as the write would say it), None when it would
    # go ahead (and always without --dry-run, where a refused write is exit 2).
    would_refuse: str | None = None
    # The plan's warnings again, at the top level where inspect, diff-keys, check-dtype and plan-devices put
    # theirs, so that one `jq .warnings` reads every command's; `plan.warnings` stays as it was.
    warnings: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.warnings = self.plan.warnings


def _format_for(output: Path, to: str | None, single_file: bool) -> str:
    suffix = output.suffix.lower()
    implied = {".safetensors": "safetensors", ".bin": "bin", ".pt": "bin", ".pth": "bin"}.get(suffix)
    if to is not None:
        if to.strip().lower() not in FORMATS:
            raise UsageError(format_choice("--to", to))
        to = to.strip().lower()  # `--to SAFETENSORS`, as every choice is read whatever its case
        if single_file and implied is not None and implied != to:
            # Both choices are the user's to make: the line names the output each would write.
            renamed = output.with_suffix(".bin" if to == "bin" else ".safetensors")
            raise UsageError(f"--to {to} but the output name ends in {suffix}: name it {renamed} to write {to}, or "
                             f"leave out --to to write {implied}, as the name says")
        return to
    return implied if single_file and implied else "safetensors"


def output_metadata(fmt: str, one_file: bool, dropped: list[DroppedAlias], extra: dict[str, str],
                    source: str | None = None) -> dict[str, str]:
    """The safetensors metadata of each output file: format=pt, then (in a single file, as
    huggingface_hub's save_torch_state_dict records them) each dropped alias -> the name kept, then
    `extra` (the source's own metadata, then --metadata). A sharded output records the aliases in its index
    instead. `source`: the checkpoint, named by an error.

    Raises:
        UsageError: more entries than a safetensors header weightdoctor reads may hold (`MAX_METADATA_ENTRIES`): the
            output would not read back.
    """
    if fmt != "safetensors":
        return dict(extra)
    from weightdoctor.checkpoint.safetensors_format import MAX_METADATA_ENTRIES

    aliases = {d.name: d.kept for d in dropped} if one_file else {}
    written = {"format": "pt", **aliases, **extra}
    if len(written) > MAX_METADATA_ENTRIES:
        added = len(written) - len(extra)
        ours = counted(added, "entry", "entries")
        raise UsageError(
            f"the output's safetensors metadata would hold {len(written):,} entries (the source's own and --metadata, "
            f"{ours} more of weightdoctor's), more than the {MAX_METADATA_ENTRIES:,} a header it reads back may hold; "
            "nothing was written", path=source)
    return written


def source_metadata(checkpoint: Checkpoint, fmt: str, renames: list[Rename] | None) -> tuple[dict[str, str], str]:
    """The source's safetensors metadata to carry into the output (training settings, `modelspec.*`, the
    aliases huggingface_hub recorded: what a library reading the file may need), and a warning when it is
    lost (a .bin holds no metadata). Names of the source's tensors in it follow `renames`.

    Example:
        >>> source_metadata(open_checkpoint("lora.safetensors"), "bin", None)[1]  # doctest: +SKIP
        "a .bin file holds no metadata: the source's ss_network_alpha, ss_network_dim are not written"
    """
    # A value past MAX_METADATA_VALUE_CHARS is kept cut by the reader: the output gets it whole (read again).
    source = (checkpoint.whole_metadata() if fmt == "safetensors" else checkpoint.metadata) or {}
    carried = {k: v for k, v in source.items() if k != "format"}
    framework = source.get("format", "")
    said = ""
    if framework not in ("pt", ""):
        # The source's `format` is kept where it is another framework's ("flax", "mlx", PaddleNLP's "np"): convert
        # and shard never transpose a tensor by it, so the layout stays that framework's, and transformers 4's
        # from_pretrained goes by this key (it converts a "flax" file on load). Written as "pt", a Flax file was
        # said to be PyTorch's.
        if fmt == "safetensors":
            carried = {"format": framework, **carried}
        else:  # every loader takes a .bin's tensors as PyTorch's
            said = (f"a .bin file holds no metadata: the source's format {clip_middle(repr(framework), 200)} is not "
                    "written, and a .bin's tensors are taken as PyTorch's, names and layout as they are; keep "
                    "the .safetensors")
    if not carried:
        return {}, said
    if fmt != "safetensors":
        # sorted: the safetensors library keeps metadata in a hash map, its order varies
        names = {t.name for t in checkpoint.tensors}
        # huggingface_hub's records of a tied tensor it left out ({dropped name: the name kept}) are written into the
        # .bin as tensors, one storage with the kept one, as torch.save writes a tied state dict (plan_tensors).
        aliases = sorted(k for k, v in carried.items() if v in names and k not in names)
        keys = sorted(k for k in carried if k not in aliases)
        if not keys:
            return {}, said
        listed = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        lost = f"the source's {listed} {'is' if len(keys) == 1 else 'are'} not written"
        return {}, f"{said}; {lost}" if said else f"a .bin file holds no metadata: {lost}"
    if renames:
        # Only huggingface_hub's alias records ({dropped shared tensor: the tensor kept}) name tensors; a
        # setting such as `ss_network_dim` or a path in a value is not a tensor name and is left as it is.
        names = {t.name for t in checkpoint.tensors}
        aliases = {k: v for k, v in carried.items() if v in names}
        renamed = {k: v for k, v in carried.items() if k not in aliases}
        for key, value in aliases.items():
            new_key = _renamed(key, renames)
            # A renamed alias that would replace another entry keeps its old name instead of dropping one.
            renamed[key if new_key in renamed or new_key in carried and new_key != key else new_key] = \
                _renamed(value, renames)
        carried = renamed
    return carried, ""


# Metadata that records a hash of the tensor data (kohya-ss sd-scripts' `sshs_model_hash` / `sshs_legacy_hash`, the
# SAI model spec's `modelspec.hash_sha256`): AUTOMATIC1111 and Forge take a LoRA's hash from `sshs_model_hash` for
# the infotext that CivitAI matches resources by. After a cast the data is other bytes: the record would name a
# file that no longer exists, so it is not carried (the tools compute the hash of the file when it is absent).
DATA_HASH_KEYS = ("sshs_model_hash", "sshs_legacy_hash", "modelspec.hash_sha256")


def drop_stale_hashes(carried: dict[str, str], cast: dict[str, int], changed: str = "") -> tuple[dict[str, str], str]:
    """`carried` without the records of the source's data hash when `cast` (or what `changed` says, e.g. "the
    renames reorder") changes the data, and a warning naming them; unchanged when nothing changes it.

    kohya's sshs_model_hash / sshs_legacy_hash hash the bytes after the header: the tensors' data in file order,
    which a rename can reorder (the writer lays tensors out by name) and a split divides among the shards.

    Example:
        >>> drop_stale_hashes({"sshs_model_hash": "ab12", "ss_network_dim": "4"}, {"float32->float16": 6})[0]
        {'ss_network_dim': '4'}
    """
    stale = [key for key in DATA_HASH_KEYS if key in carried]
    why = "the cast changes" if any(cast.values()) else changed
    if not stale or not why:
        return carried, ""
    return {k: v for k, v in carried.items() if k not in stale}, (
        f"the source's {', '.join(stale)} {'is a hash' if len(stale) == 1 else 'are hashes'} of its tensor data, "
        f"which {why}: not carried (a stale one would misname the file in A1111 / CivitAI; they hash "
        "the file when it is absent)")


def data_changes(selection: TensorSelection, single_output: bool) -> str:
    """What, besides a cast, makes the output's tensor data differ from the source's bytes ("" when nothing does):
    renamed tensors (laid out anew by name), aliases dropped, a split into several files."""
    if selection.renamed:
        return "the renames may reorder"
    if selection.dropped:
        return "dropping the aliases changes"
    return "" if single_output else "the split divides among the shards"


def flat_parts_warning(checkpoint: Checkpoint, names: Sequence[str] | None = None) -> str | None:
    """What to say when a file the reader read together from parts (a StyleTTS 2 / Kokoro model's modules, an
    OpenNMT-py model and its generator) is written flat, which those files' own loaders cannot read; None otherwise.

    The reader's note is what marks them: a flat `generator.*` alone is any GAN's. `names`: the names written (after
    --rename / --strip-prefix; the checkpoint's own without them). StyleTTS 2 trains its modules inside
    DataParallel, and its saves (Kokoro's release file too) keep `module.` in each module's names: KModel and
    StyleTTS 2's inference strip it as they load a module that refuses it (`k[7:]`), which no reader of one flat
    state dict does.
    """
    if checkpoint.format == "safetensors":
        return None
    notes = checkpoint.warnings
    if any("a StyleTTS 2 / Kokoro model: its" in note for note in notes):
        written = [t.name for t in checkpoint.tensors] if names is None else names
        wrapped = sorted({name.split(".", 1)[0] for name in written if _STYLETTS2_WRAPPED.match(name)})
        what = ("a StyleTTS 2 / Kokoro model's modules written flat (bert.*, decoder.*, ...): KModel and StyleTTS "
                "2's load_checkpoint torch.load a .pth of one state dict per module ({'bert': {...}, ...})")
        if wrapped:
            shown = ", ".join(f"{part}.module.*" for part in wrapped[:3]) + (", ..." if len(wrapped) > 3 else "")
            return (f"{what} and cannot load what is written; the names also keep DataParallel's `module.` "
                    f"({shown}), which KModel and StyleTTS 2's inference strip as they load each module, and no "
                    "reader of one state dict does: add --rename '^([^.]+)\\.module\\.=\\1.' to drop it")
    elif any("an OpenNMT-py checkpoint: model and generator" in note for note in notes):
        what = ("an OpenNMT-py model written flat with its generator (generator.*): OpenNMT-py and CTranslate2's "
                "ct2-opennmt-py-converter torch.load a .pt of {'model': ..., 'generator': ..., 'vocab': ..., "
                "'opt': ...}")
    else:
        return None
    return f"{what} and cannot load what is written; it serves tools that read one state dict, not those loaders"


# A flat StyleTTS 2 name whose module's own state dict kept DataParallel's wrapper: `bert.module.encoder...`.
_STYLETTS2_WRAPPED = re.compile(r"^[^.]+\.module\.")


def nested_only_warning(checkpoint: Checkpoint) -> str:
    """What a training checkpoint's output leaves out, by name: whisper's `dims` (the model's shape, which
    whisper.load_model needs), a `global_step`, an optimizer.

    Example (openai-whisper's {"dims": ..., "model_state_dict": ...}):
        >>> nested_only_warning(open_checkpoint("tiny.pt"))  # doctest: +SKIP
        "only the state dict at 'model_state_dict' is written, not the checkpoint's other entries (dims)"
    """
    names = [entry.split(" (")[0] for entry in checkpoint.other_entries]
    if not names:
        # `{"model": state_dict}` alone (fairseq2's model.pt): nothing is left out, only the wrapper, and "(not
        # optimizer or other entries)" named entries the file does not have.
        key = checkpoint.nested_key or ""
        path = "".join(f"[{part!r}]" for part in key.split("."))  # `state.model` is checkpoint['state']['model']
        # "a loader that reads checkpoint['model'] reads the output's names directly" read as if such a loader
        # still worked: on the output it raises KeyError ('model'), it must read the names at the top level.
        top = key.split(".")[0]
        return (f"the state dict at {key!r} is written unwrapped, at the top level (the checkpoint holds nothing "
                f"beside it): the output has no {top!r} key, so a loader that reads checkpoint{path} must read the "
                "output's names directly")
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    # Another whole state dict beside the one written (timm's state_dict_ema beside state_dict, an EMA copy a
    # validation with --use-ema loads) was one of "and 1 more": dropped without a word that it holds weights.
    # Only a whole one, as many tensors as half the written one's at least: Lightning's averaging_state (its
    # n_averaged count, "a state dict of 1 tensor") is no model to write.
    others = [(entry.split(" (")[0], entry.split("a state dict of ", 1)[1].split(":")[0])
              for entry in checkpoint.other_entries if "(a state dict of " in entry]
    others = [(name, tensors) for name, tensors in others
              if int(tensors.split()[0].replace(",", "")) * 2 >= len(checkpoint.tensors)]
    beside = "; ".join(f"{name} is another state dict ({tensors}), not written: --key {shlex.quote(name)} writes it "
                       "instead" for name, tensors in others[:3])
    return (f"only the state dict at {checkpoint.nested_key!r} is written, not the checkpoint's other entries "
            f"({shown})" + (f"; {beside}" if beside else ""))


def same_set_beside(out: Path, inputs: frozenset[Path] = frozenset()) -> list[str]:
    """The other files of `out`'s weight set already in its folder (`weight_set`: its stem and variant, single or
    sharded, either format), sorted; [] when `out` is named like no weight set or its folder cannot be listed.
    Files that are `inputs` (resolved paths) are left out: the checkpoint being converted is no earlier save, and
    `convert m/pytorch_model.bin -o m/` (the README's "into that existing folder") was warned that its own input
    was one, to be replaced with a --force that refuses the input folder.

    A single file written into a folder that holds an earlier save's shards and index (`-o
    unet/diffusion_pytorch_model.safetensors`) is not what diffusers loads: it reads the index first.
    """
    from weightdoctor.rewrite import weight_set

    mine = weight_set(out.name)
    if mine is None:
        return []
    try:
        with os.scandir(out.parent if str(out.parent) else ".") as entries:
            found = [e.name for e in entries if e.name != out.name and weight_set(e.name) == mine]
    except OSError:
        return []
    return sorted(name for name in found if _resolved(out.parent / name) not in inputs)


def _resolved(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a link loop
        return None


def _renamed(name: str, renames: list[Rename]) -> str:
    for rename in renames:
        name = rename.apply(name)
    return name


def plan_convert(
    checkpoint: Checkpoint,
    output: str | Path,
    *,
    to: str | None = None,
    dtype: str | None = None,
    keep_fp32: str | None = None,
    renames: list[Rename] | None = None,
    metadata: dict[str, str] | None = None,
) -> ConvertPlan:
    """Plan the conversion of `checkpoint` to `output` without writing anything.

    A single weight file (or training checkpoint), or any source with an output named like a weight file
    (`-o merged.safetensors`: shards merged), converts to one file; otherwise a model folder, an index or a
    repo id converts to a folder holding each weight file converted (shards stay shards) and copies of
    the other files (config, tokenizer).

    Example:
        >>> plan = plan_convert(open_checkpoint("gpt2/pytorch_model.bin"), "out/model.safetensors")  # doctest: +SKIP
        >>> plan.format, [d.name for d in plan.dropped_aliases]  # doctest: +SKIP
        ('safetensors', ['lm_head.weight'])

    Raises:
        UsageError: bad --to / --keep-fp32 / renames; OutputError: the output is the input.
    """
    out = expand_output(output)  # as a source is: a quoted "~/x" must not become a folder named ~
    # A folder converts to a folder, unless the output is named like a weight file (`-o model.safetensors`):
    # then its weights are written there, as the name asks (a sharded model's shards merged into that one file,
    # rather than a folder named like a file that every reader of the name then fails on).
    named_like_file = out.suffix.lower() in {".safetensors", ".bin", ".pt", ".pth"}
    from_folder = checkpoint.path.is_dir()
    single_file = named_like_file or not (from_folder or checkpoint.sharded)
    fmt = _format_for(out, to, single_file)
    if single_file and str(output).endswith(("/", os.sep)):
        # `-o out/`: a folder, as `cp model.ckpt out/` reads it; Path() drops the slash, and a file named `out` was
        # written. The file goes inside, under the name convert gives a folder's weight file.
        source = next((f.relpath for f in checkpoint.files if f.role == "weights"), checkpoint.path.name)
        out = out / default_output_name(source, fmt, dtype)
    check_not_input(checkpoint, out)
    unnamed = single_file and not named_like_file and not str(output).endswith(("/", os.sep))
    selection = plan_tensors(checkpoint, dtype=dtype, keep_fp32=keep_fp32, renames=renames, fmt=fmt)
    warnings = list(checkpoint.warnings) + selection.warnings
    if checkpoint.skipped_entries:
        skipped = len(checkpoint.skipped_entries)
        warnings.append(f"{counted(skipped, 'non-tensor entry', 'non-tensor entries', grouped=False)} "
                        f"of the state dict {plural(skipped, 'is', 'are')} not written: "
                        + ", ".join(checkpoint.skipped_entries[:3]))
    if single_file and checkpoint.sharded:
        shards = sum(f.role == "weights" for f in checkpoint.files)
        warnings.append(f"merging the {shards} shards into one file, {out.name}; config and tokenizer files are not "
                        "copied (name a folder as the output to convert shard by shard, with a new index, or use "
                        "`weightdoctor shard` to choose the shard size)")
    elif single_file and from_folder:
        warnings.append(f"writing the weights alone to {out.name}; config and tokenizer files are not copied "
                        "(name a folder as the output to convert the whole model folder)")
    if unnamed:
        # `-o conv`: one file named without an extension, which no loader looks for (from_pretrained reads
        # model.safetensors, load_file any name but a user then has to know what it holds).
        suffix = ".safetensors" if fmt == "safetensors" else ".bin"
        warnings.append(f"{out.name} has no weight-file extension: it is written as one {fmt} file of that name; "
                        f"name it {out.name}{suffix} (or end -o with / for a folder holding it)")
    if checkpoint.nested_key:
        warnings.append(nested_only_warning(checkpoint))
    if (in_cache := hub_cache_output_note(out)) is not None:
        warnings.append(in_cache)
    inputs = frozenset(p for item in checkpoint.files if (p := _resolved(item.path)) is not None)
    if single_file and (beside := same_set_beside(out, inputs)):
        shown = ", ".join(beside[:3]) + (f" and {len(beside) - 3} more" if len(beside) > 3 else "")
        index = any(name.endswith(".json") for name in beside)
        why = " (diffusers' from_pretrained reads an index before the single file)" if index else ""
        warnings.append(f"{out.parent} also holds {shown}, of the same weight set as {out.name} (an earlier save): "
                        f"a loader may read them instead of it or beside it{why}; remove them, or convert the model "
                        "folder with --force, which replaces the whole set")
    carried, lost = source_metadata(checkpoint, fmt, renames)
    if lost:
        warnings.append(lost)
    carried, stale = drop_stale_hashes(carried, selection.cast, data_changes(selection, single_output=True))
    if stale:
        warnings.append(stale)
    user_metadata = {**carried, **(metadata or {})}
    by_file: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    # One output name per source file, not per tensor: the name is a function of the file alone, and working it
    # out (Path, regular expressions) for each of 92k tensors took a second.
    output_names: dict[str, str] = {}
    index_file = next((f for f in checkpoint.files if f.role == "index"), None) if checkpoint.sharded else None
    # A shard must not take the name of its index's single file: a safetensors index naming pytorch_model.bin as a
    # shard wrote model.safetensors beside model.safetensors.index.json, which from_pretrained (and the
    # verification) reads alone, the other shards' tensors missing.
    single = single_file_of_index(default_index_name(index_file.relpath, fmt, dtype)) if index_file else None
    for tensor in selection.tensors:
        if single_file:
            name = out.name
        elif tensor.source_file in output_names:
            name = output_names[tensor.source_file]
        else:
            name = default_output_name(tensor.source_file, fmt, dtype)
            if name == single:
                stem, _, rest = name.partition(".")
                name = f"{stem}-shard.{rest}"
            output_names[tensor.source_file] = name
        by_file.setdefault(name, []).append(tensor.name)
        sizes[name] = sizes.get(name, 0) + (tensor.nbytes if tensor.alias_of is None else 0)
    if not by_file:
        by_file[out.name if single_file else default_output_name("model.safetensors", fmt)] = []
    files = [OutputFile(name, names, sizes.get(name, 0)) for name, names in by_file.items()]
    index = None
    if not single_file and index_file is not None:
        index = default_index_name(index_file.relpath, fmt, dtype)
    if not single_file:
        refuse_names_too_long(out, [f.filename for f in files] + ([index] if index else []))
    names = [t.name for t in selection.tensors]
    if fmt == "bin" and names and {n.split(".", 1)[0] for n in names} == {"image_proj", "ip_adapter"}:
        # diffusers' load_ip_adapter splits a .safetensors by these prefixes, but takes a .bin as it loads: there
        # it indexes state_dict["image_proj"] and ["ip_adapter"], and raises on flat names.
        warnings.append("an IP-Adapter written flat (image_proj.*, ip_adapter.*) to a .bin: diffusers' "
                        "load_ip_adapter reads a .bin as {'image_proj': ..., 'ip_adapter': ...} and raises on these "
                        "names; keep the .safetensors, which it reads flat")
    elif fmt == "bin" and names and {n.split(".", 1)[0] for n in names} == {"id_encoder", "lora_weights"}:
        # PhotoMaker's load_photomaker_adapter does the same: prefixes split in a .safetensors, a .bin indexed.
        warnings.append("a PhotoMaker adapter written flat (id_encoder.*, lora_weights.*) to a .bin: "
                        "load_photomaker_adapter reads a .bin as {'id_encoder': ..., 'lora_weights': ...} and raises "
                        "on these names; keep the .safetensors, which it reads flat")
    flat = flat_parts_warning(checkpoint, names) if names else None
    if flat:
        warnings.append(flat)
    if fmt == "bin" and metadata and index is None:  # a sharded output keeps it in its index
        warnings.append("a .bin file holds no metadata: --metadata is ignored")
    if not single_file:
        from weightdoctor.load_simulation import from_pretrained_skips_warning

        if (skipped := from_pretrained_skips_warning(checkpoint)) is not None:
            # A file keeps its stem (`hf_model_0001_0.pt` -> `hf_model_0001_0.safetensors`, as diffusers' and
            # open_clip's names must), so the output folder fails from_pretrained as the input does. Not renamed
            # here: under Meta's names (`consolidated.safetensors`) a model.safetensors would load as random weights.
            plain = "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"
            written = [f.filename for f in files]
            fix = (f"rename it to {plain} where its tensors are under transformers' names (torchtune's hf_model_*), "
                   "else load and save it with save_pretrained" if len(written) == 1 and index is None
                   else "save it with save_pretrained")
            warnings.append(f"{skipped}; the output keeps the name ({', '.join(written[:3])}"
                            f"{', ...' if len(written) > 3 else ''}), which it does not look for either: {fix}")
    folder = checkpoint.path if checkpoint.path.is_dir() else checkpoint.path.parent
    weights = [f.path for f in checkpoint.files if f.role != "config"]
    copy_paths, left_out = ([], []) if single_file else side_files(folder, weights, output=out)
    if left_out:
        warnings.append("not copied: " + ", ".join(left_out))
    typed = checkpoint.source if checkpoint.path.is_dir() else os.path.dirname(checkpoint.source) or "."
    pickle_note = pickles_copied_note(copy_paths, fmt, folder, typed, str(out))
    if pickle_note:
        warnings.append(pickle_note)
    if not single_file and fmt != "bin" or single_file and out.name != "pytorch_model.bin":
        from weightdoctor.shard import VOCOS_LOADS, vocos_model

        if vocos_model(checkpoint):
            # The folder converts to model.safetensors beside config.yaml: a Vocos folder Vocos cannot load.
            warnings.append(f"a Vocos vocoder (config.yaml's vocos classes): {VOCOS_LOADS}, so it cannot load "
                            f"{', '.join(f.filename for f in files[:3])}: keep pytorch_model.bin beside config.yaml "
                            "for it (convert --to bin to a folder writes it so)")
    if (nemo := nemo_weights_note(checkpoint, [f.filename for f in files])) is not None:
        warnings.append(nemo)
    if (meta := meta_release_note(checkpoint, [f.filename for f in files])) is not None:
        warnings.append(meta)
    copy_paths, config_note = with_config_dtype(copy_paths, dtype, len(selection.kept_fp32),
                                                  len(selection.kept_fp32_by_class))
    if config_note:
        warnings.append(config_note)

    # Said in a --dry-run too (a write refuses it before writing anything: `write_outputs`).
    shortfall = disk_shortfall(out, bytes_to_write(files, copy_paths), files=files, copy_files=copy_paths)
    if shortfall is not None:
        warnings.append(f"{out}: {shortfall}: the write would be refused")
    return ConvertPlan(
        source=checkpoint.source,
        output=str(out),
        format=fmt,
        single_file=single_file,
        files=files,
        index=index,
        num_tensors=len(selection.tensors),
        total_bytes=selection.total_bytes,
        dtype=dtype,
        cast=selection.cast,
        kept_fp32=selection.kept_fp32,
        renamed=selection.renamed,
        renames=[r.as_flag() for r in renames or []],
        dropped_aliases=selection.dropped,
        copied=[p.relpath for p in copy_paths],
        metadata=output_metadata(fmt, single_file or index is None, selection.dropped, user_metadata,
                                 checkpoint.source),
        warnings=warnings,
        _selection=selection,
        _copy_paths=copy_paths,
    )


def dry_run_convert(plan: ConvertPlan, *, force: bool = False, checkpoint: Checkpoint | None = None) -> ConvertResult:
    """What `run_convert(plan, force=force)` would do, writing nothing: the plan, and in `would_refuse` why the
    write would be refused before writing anything (see `weightdoctor.rewrite.dry_run_refusal`), or None."""
    refusal = dry_run_refusal(plan, plan.files, single_file=plan.single_file, force=force, checkpoint=checkpoint)
    return ConvertResult(plan=plan, write=None, dry_run=True, would_refuse=refusal)


def run_convert(
    checkpoint: Checkpoint,
    plan: ConvertPlan,
    *,
    force: bool = False,
    verify: bool = True,
    allow_overflow: bool = False,
    advance: Callable[[int], None] = lambda n: None,
) -> ConvertResult:
    """Write what `plan` describes: streamed, verified (unless `verify` is False) and committed atomically.

    Raises:
        CastOverflow, OutputError (see `weightdoctor.rewrite.write_outputs`).
    """
    written = write_plan(
        checkpoint, plan, plan.files, single_file=plan.single_file, force=force, verify=verify,
        allow_overflow=allow_overflow, advance=advance,
    )
    return ConvertResult(plan=plan, write=written, dry_run=False)
