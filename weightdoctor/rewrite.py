"""What `convert` and `shard` share: which tensors go out, under which names and dtypes, and how a set
of output files is written, verified and committed.

Planning is pure (names, dtypes, shapes, sizes); `write_outputs` streams one tensor at a time from the
reader into the writers, hashes each tensor as it goes out, re-reads the finished files through the
shared reader and compares the hashes before anything is renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from weightdoctor.checkpoint import Checkpoint, TensorInfo
from weightdoctor.checkpoint.reader import is_training_save, is_training_state, natural_order, original_release
from weightdoctor.dtypes import ALIASES, FLOATING, SIX_BIT, bits_per_element, is_dtype_placeholder, torch_shape
from weightdoctor.errors import OutputError, UsageError, WeightDoctorError, clip_middle, compile_user_regex
from weightdoctor.jsontext import parse_json
from weightdoctor.paths import entries_under, expand_user
from weightdoctor.renames import Rename, apply_renames, rename_all
from weightdoctor.wording import counted, plural

if TYPE_CHECKING:
    import torch

    from weightdoctor.writers.byte_copy import ByteRange

# Targets `--dtype` accepts (what users type -> canonical name).
CAST_TARGETS = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
# Dtypes `--dtype` converts; fp8/fp4 tensors are quantized weights with scales and are left alone.
CASTABLE = frozenset({"float16", "bfloat16", "float32", "float64"})
# A cast that turns this share of a tensor's non-zero values into zeros, or more, is refused: the line
# check-dtype draws for "unsafe" (its MASS_UNDERFLOW_SHARE), so what it calls unsafe convert does not cast.
FLUSH_SHARE_LIMIT = 0.01
# Files that hold weights (never copied beside converted weights: they would be stale).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".msgpack", ".gguf", ".onnx",
                   ".tflite")
# The file names of a Hugging Face save (single file or shards, and their index). A shard's numbers are of any width:
# huggingface_hub pads them to five digits (`-00001-of-00002`) and writes six past 99999 shards; other writers pad
# to six or not at all, and an old `model-000001-of-000002.safetensors` kept by --force was a stale shard.
HF_WEIGHT_FILE = re.compile(
    r"^(?:model|pytorch_model)(?:-\d+-of-\d+)?\.(?:safetensors|bin)(?:\.index\.json)?$"
)
# Any file of a weight set a loader reads by name: a stem (transformers', diffusers', PEFT's, diffusers' LoRAs',
# Mistral's, open_clip's), a variant (`model.fp16.safetensors`, `model.safetensors.index.fp16.json`,
# `diffusion_pytorch_model-00001-of-00002.fp16.safetensors`), a shard number, a format, an index.
_WEIGHT_SET_FILE = re.compile(
    r"(?P<stem>model|pytorch_model|diffusion_pytorch_model|adapter_model|pytorch_lora_weights|consolidated"
    r"|open_clip_model|open_clip_pytorch_model)"
    r"(?:\.(?P<variant>[^.-]+))?(?:-\d+-of-\d+)?(?:\.(?P<shard_variant>[^.-]+))?\.(?:safetensors|bin)"
    r"(?:\.index(?:\.(?P<index_variant>[^.]+))?\.json)?"
)
# Stems one loader reads as one set in either format: from_pretrained's model / pytorch_model, open_clip's two names.
_SAME_SET = {"pytorch_model": "model", "open_clip_pytorch_model": "open_clip_model"}
CHUNK_ELEMENTS = 1 << 24
# Write by copying bytes when nothing is cast (tests turn it off to compare with the torch path).
BYTE_COPY = True


class CastOverflow(UsageError):
    """A cast would turn finite values into inf or flush many values to zero (override: --allow-overflow)."""


def parse_dtype(text: str | None) -> str | None:
    """`fp16`, `bf16`, `fp32` (or torch's names) -> canonical name; None stays None.

    Raises:
        UsageError: anything else, with the accepted values.
    """
    if text is None:
        return None
    # `torch.bfloat16`, as from_pretrained's torch_dtype= is written and check-dtype --target takes it.
    typed = text.lower().removeprefix("torch.")
    name = CAST_TARGETS.get(typed) or ALIASES.get(typed)
    if name not in CAST_TARGETS.values():
        from weightdoctor.dtypes import quantization_hint

        raise UsageError(f"--dtype {text!r}: unknown dtype (choose fp16, bf16 or fp32)"
                         + quantization_hint(text, "convert and shard cast floating tensors only"))
    return name


def parse_metadata(items: list[str] | None) -> dict[str, str]:
    """`["k=v", ...]` -> dict; `format` is reserved (always "pt"), and `total_size` (an index's, computed).

    Raises:
        UsageError: an item without `=`, an empty key, `format` or `total_size`, or text that is not UTF-8.
    """
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--metadata {item!r}: expected KEY=VALUE")
        if re.search("[\ud800-\udfff]", item):
            # Bytes that are no UTF-8 on the command line (Python keeps them as lone surrogates): the safetensors
            # header could not be encoded, said as "unexpected UnicodeEncodeError" after the tensors were planned.
            raise UsageError(f"--metadata {item!r}: not UTF-8 text (the command line held bytes that are not); "
                             "a safetensors header holds UTF-8 only")
        if key.strip() == "format":
            raise UsageError("--metadata format=... is reserved: outputs say format=pt, or the source's own format")
        if key.strip() == "total_size":
            raise UsageError("--metadata total_size=... is reserved: an index's total_size is the bytes written")
        if key.strip() == "total_parameters":
            raise UsageError("--metadata total_parameters=... is reserved: an index's total_parameters is the "
                             "parameters written")
        result[key.strip()] = value
    return result


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the output.

    Attributes:
        source: its name in the source; `name`: its name in the output (after renames).
        source_dtype / dtype: stored dtype before and after the cast; `shape`; `nbytes` in the output.
        alias_of: (bin output only) output name of an earlier tensor whose storage this one shares.
    """

    source: str
    name: str
    source_dtype: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    source_file: str
    alias_of: str | None = None


@dataclass(frozen=True)
class DroppedAlias:
    """A tied tensor left out of a safetensors output: `name` shares storage with the kept `kept`."""

    name: str
    kept: str


@dataclass
class TensorSelection:
    """The tensors of an output, the aliases dropped, and what the cast does."""

    tensors: list[PlannedTensor]
    dropped: list[DroppedAlias] = field(default_factory=list)
    renamed: int = 0
    cast: dict[str, int] = field(default_factory=dict)  # "float32->float16" -> tensor count
    kept_fp32: list[str] = field(default_factory=list)
    # Of `kept_fp32`, those from_pretrained keeps in float32 at the target anyway (its class's _keep_in_fp32_modules).
    kept_fp32_by_class: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Output names the model built from config.json holds as buffers, not parameters (BART's final_logits_bias);
    # known only where the model was built (for its tied weights).
    model_buffers: frozenset[str] = frozenset()

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors if t.alias_of is None)

    @property
    def total_parameters(self) -> int:
        """Values written, tied tensors once, less the buffers: an index's `total_parameters`, which transformers 5
        records as `model.num_parameters()` (nn.Parameters only; a persistent buffer is saved but not counted).

        The buffers are those of the model built from config.json where one was built, and BatchNorm's running
        statistics by their names (torch registers them as buffers in every module that has them).

        Example:
            >>> TensorSelection([PlannedTensor("w", "bn.weight", "F32", "F32", (4,), 16, "f"),
            ...                  PlannedTensor("m", "bn.running_mean", "F32", "F32", (4,), 16, "f")]).total_parameters
            4
        """
        return sum(math.prod(t.shape) for t in self.tensors if t.alias_of is None
                   and t.name not in self.model_buffers and t.name.rpartition(".")[2] not in _BATCHNORM_BUFFERS)


# What torch's _NormBase registers as buffers under these names (BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm with
# track_running_stats): state-dict entries that from_pretrained loads but num_parameters() does not count.
_BATCHNORM_BUFFERS = frozenset({"running_mean", "running_var", "num_batches_tracked"})


# The task families whose class is tried, in this order, for a config that names no architecture: the heads
# that tie an output layer to the embeddings come first; the base model (no head) last.
_TIED_HEAD_MAPPINGS = ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
                       "MODEL_FOR_MASKED_LM_MAPPING_NAMES", "MODEL_FOR_PRETRAINING_MAPPING_NAMES",
                       "MODEL_MAPPING_NAMES")


def _tied_weights(checkpoint: Checkpoint) -> tuple[list[str], Ties | None, str | None]:
    """The model's tied-weight keys (regex patterns, as transformers matches them, whatever the config says), the
    ties from_pretrained makes for this config (None where transformers does not say), and why the model is not
    known (None when it is)."""
    if not checkpoint.config or "model_type" not in checkpoint.config:
        return [], None, "no config.json with a model_type"
    try:
        from transformers.modeling_utils import _get_tied_weight_keys

        model = _built_model(checkpoint)
        # transformers 5 expands the class's ties for this config in post_init: `tie_word_embeddings: false` leaves
        # the output embeddings out, and from_pretrained then loads them from the file, not from the input ones.
        retied = getattr(model, "all_tied_weights_keys", None)
        state_names = frozenset(model.state_dict())
        parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}
        ties = (Ties(dict(retied), state_names, state_names - parameters) if isinstance(retied, dict)
                else None)
        return _get_tied_weight_keys(model), ties, None
    except Exception as exc:  # an unknown architecture must not stop a conversion
        return [], None, f"the model could not be built from config.json ({type(exc).__name__})"


def _built_model(checkpoint: Checkpoint) -> Any:
    """The model config.json describes, on the meta device (its architecture's class, else the class of its type
    whose keys hold the checkpoint's names). Raises what building it raises."""
    from weightdoctor.meta_model import build_meta_model

    if checkpoint.config.get("architectures"):  # type: ignore[union-attr]
        return build_meta_model(checkpoint.config)  # type: ignore[arg-type]
    return _model_holding(checkpoint, build_meta_model)


def model_buffer_names(checkpoint: Checkpoint) -> frozenset[str]:
    """The names of the persistent buffers (saved, loaded, not parameters: BART's final_logits_bias) of the model
    config.json describes; empty where there is no transformers config or the model cannot be built.

    Asked only for an index's `total_parameters`, and only where `plan_tensors` did not build the model already (it
    does for tied tensors alone): a safetensors file holds no tied storage, so a Hub BART's index counted its
    final_logits_bias as parameters.
    """
    if not checkpoint.config or "model_type" not in checkpoint.config:
        return frozenset()
    try:
        model = _built_model(checkpoint)
    except Exception:  # noqa: BLE001 - an unknown architecture must not stop a conversion
        return frozenset()
    parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return frozenset(model.state_dict()) - parameters


@dataclass(frozen=True)
class Ties:
    """What from_pretrained does with a model's tensors for one config: `retied` target name -> the source name it
    is tied to (filled from it, not read from the file); `names` every tensor name of the model; `buffers` those of
    them that are persistent buffers, not parameters."""

    retied: dict[str, str]
    names: frozenset[str]
    buffers: frozenset[str] = frozenset()

    def not_retied(self, dropped: dict[str, str]) -> dict[str, str]:
        """The dropped aliases from_pretrained would not fill back: each of `dropped` (name -> name kept, as the
        output names them) that the model loads from the file, not tied (for this config) to a tensor of its own set.
        Left out of a safetensors file, it loaded as new random weights ("MISSING ... newly initialized").

        Example:
            >>> ties = Ties({}, frozenset({"lm_head.weight", "wte.weight"}))
            >>> ties.not_retied({"lm_head.weight": "wte.weight", "module.x": "module.y"})
            {'lm_head.weight': 'wte.weight'}
            >>> Ties({"lm_head.weight": "wte.weight"}, ties.names).not_retied({"lm_head.weight": "wte.weight"})
            {}
        """
        sets: dict[str, set[str]] = {}
        for name, kept in dropped.items():
            sets.setdefault(kept, {kept}).add(name)
        return {name: kept for name, kept in dropped.items()
                if name in self.names and self.retied.get(name) not in sets[kept]}


def _model_holding(checkpoint: Checkpoint, build: Callable[..., Any]) -> Any:
    """For a config without `architectures` (`BartConfig.save_pretrained` writes none): the model of its type
    whose keys hold every tensor name, as the class that saved it did. The base model (AutoModel's pick)
    ties `encoder.embed_tokens` to `shared` but knows no `lm_head`, so `lm_head.weight` would be kept over
    `model.shared.weight` by name order, and a BartModel loading the output would miss its embeddings.
    """
    from transformers.models.auto import modeling_auto

    model_type = checkpoint.config["model_type"]  # type: ignore[index]
    names = {t.name for t in checkpoint.tensors}
    tried: set[str] = set()
    best: tuple[int, Any] | None = None
    for mapping in _TIED_HEAD_MAPPINGS:
        name = getattr(modeling_auto, mapping, {}).get(model_type)
        if not isinstance(name, str) or name in tried:
            continue
        tried.add(name)
        try:
            model = build(checkpoint.config, name)
        except Exception:  # noqa: BLE001 - a head this config cannot build: try the next
            continue
        covered = len(names & set(model.state_dict()))
        if covered == len(names):
            return model
        if best is None or covered > best[0]:
            best = (covered, model)
    return best[1] if best is not None else build(checkpoint.config)


def _identical_sets(checkpoint: Checkpoint, group: list[str]) -> tuple[list[list[str]], list[str]]:
    """Split names that share storage into identical views (true aliases) and the rest.

    Told apart by the reader's `view_id` (storage, offset, shape, strides, dtype), as `alias_groups` and inspect
    tell them: the addresses of their views (`pickled_tensor`) differed for tied names of a torch zip the system
    would not map whole (each view then maps the bytes it reaches, anew), so convert wrote them as two copies
    ("share storage but are different views") of what inspect called one tensor."""
    areas: dict[tuple[str | None, str], list[str]] = {}
    for name in group:
        view_id = checkpoint.tensor_info(name).view_id
        areas.setdefault((view_id, "") if view_id is not None else (None, name), []).append(name)  # None: its own
    identical = [names for names in areas.values() if len(names) > 1]
    others = [names[0] for names in areas.values() if len(names) == 1]
    return identical, others


def choose_aliases(
    checkpoint: Checkpoint, tied_patterns: list[str]
) -> tuple[dict[str, str], list[list[str]]]:
    """Decide which names of each set of aliased tensors are dropped: dropped name -> kept name.

    Names the model declares as tied (transformers' `_tied_weights_keys`, matched with `re.search` as
    `remove_tied_weights_from_state_dict` does) are dropped first; among the rest the first name in sorted order
    is kept, as huggingface_hub's `_remove_duplicate_names` keeps it of names that are one view (whether or not
    the view covers its whole storage). Views of one storage that are not identical (slices, overlapping views)
    are not aliases: they are written as separate copies and returned as the second value so that the caller can
    say so.
    """
    dropped: dict[str, str] = {}
    copies: list[list[str]] = []
    for group in checkpoint.shared_groups():
        identical, others = _identical_sets(checkpoint, group)
        if others and (identical or len(others) > 1):
            copies.append(sorted(others + [n for names in identical for n in names]))
        for names in identical:
            discard = {n for n in names if any(re.search(p, n) for p in tied_patterns)}
            keep = sorted(set(names) - discard or names)[0]
            for name in sorted(names):
                if name != keep:
                    dropped[name] = keep
    return dropped, copies


def _refuse_what_safetensors_cannot_store(checkpoint: Checkpoint, tensors: list[PlannedTensor]) -> None:
    """Refuse, before anything is written, tensors of a dtype safetensors has no name for (complex128, complex32,
    torch's bits types): the writer said "safetensors cannot store tensor 'w' of dtype complex128", naming no file.

    Raises:
        OutputError: naming the file that holds the first such tensor, each dtype, and that a .bin keeps them.
    """
    from weightdoctor.dtypes import CANONICAL_TO_SAFETENSORS

    refused = [t for t in tensors if t.dtype not in CANONICAL_TO_SAFETENSORS]
    if not refused:
        return
    shown = ", ".join(f"{t.source} ({t.dtype})" for t in refused[:3])
    more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
    raise OutputError(f"safetensors has no dtype for {counted(len(refused), 'tensor', grouped=False)}: {shown}{more}; "
                      "nothing was written (a .bin output, -o NAME.bin or --to bin, keeps them as torch.save does)",
                      path=str(checkpoint.file_path(refused[0].source_file)))


def _refuse_what_torch_cannot_hold(checkpoint: Checkpoint, tensors: list[PlannedTensor]) -> None:
    """Refuse, before anything is written, tensors of a dtype the installed torch lacks (torch 2.14's bcomplex32
    under torch 2.13): the .bin writer pickles torch's dtype, and the error named no file.

    Raises:
        UnsupportedEnvironment: naming the file that holds the first such tensor and the torch release that has it.
    """
    from weightdoctor.dtypes import LATER_TORCH_DTYPES, SIX_BIT, torch_dtype

    for tensor in tensors:
        # Only a dtype some supported torch lacks is looked up: a safetensors source is copied without torch.
        for dtype in dict.fromkeys(d for d in (tensor.source_dtype, tensor.dtype)
                                   if d in LATER_TORCH_DTYPES or d in SIX_BIT):
            try:
                torch_dtype(dtype)
            except WeightDoctorError as error:
                error.message = f"tensor {tensor.source!r}: {error.message}"
                error.path = str(checkpoint.file_path(tensor.source_file))
                raise


def _target_dtype(info: TensorInfo, dtype: str | None, keep_fp32: re.Pattern[str] | None) -> str:
    if info.dtype not in CASTABLE:
        return info.dtype
    if keep_fp32 is not None and keep_fp32.search(info.name):
        return "float32"
    return dtype or info.dtype


def _refuse_renames_that_match_nothing(names: list[str], renames: list[Rename]) -> None:
    """A rename that changes no name (a typo in `--strip-prefix`) would write the checkpoint as it was, exit 0."""
    current = names
    for rename in renames:
        renamed = rename_all(current, [rename])
        if renamed == current:
            # The names' first parts show the prefix meant (`model.` for `module.`) without another command.
            heads: dict[str, int] = {}
            for name in current:
                head = name.split(".", 1)[0] + ("." if "." in name else "")
                heads[head] = heads.get(head, 0) + 1
            shown = ", ".join(f"{head!r} ({count})" for head, count in list(heads.items())[:5])
            more = ", ..." if len(heads) > 5 else ""
            raise UsageError(f"the rename {rename.as_flag()} changes no tensor name (from --strip-prefix, --rename or "
                             f"--add-prefix): nothing was written; the names start with {shown}{more}")
        _refuse_a_prefix_cut_before_its_dot(current, renamed, rename)
        current = renamed


def _refuse_a_prefix_cut_before_its_dot(before: list[str], after: list[str], rename: Rename) -> None:
    """`--strip-prefix module` (for `module.`) wrote names such as `.encoder.weight`, which no model loads,
    and exited 0: refused, with the prefix meant."""
    from weightdoctor.renames import literal_prefix

    literal = literal_prefix(rename)
    if literal is None or literal[1] != "" or not literal[0] or literal[0].endswith("."):
        return
    cut = [new for old, new in zip(before, after, strict=True) if new != old]
    if cut and all(name.startswith(".") for name in cut):
        raise UsageError(f"stripping the prefix {literal[0]!r} leaves {counted(len(cut), 'tensor name')} starting "
                         f"with '.' ({cut[0]!r}): nothing was written; did you mean --strip-prefix "
                         f"{literal[0] + '.'!r}?")


def _refuse_unreadable_names(new_names: dict[str, str], source: str) -> None:
    """Refuse, before anything is written, output names a safetensors reader refuses (see
    `checkpoint.safetensors_format.check_tensor_name`): a pickle's keys may be any string."""
    from weightdoctor.checkpoint.safetensors_format import check_tensor_name
    from weightdoctor.errors import CorruptCheckpoint

    for old, new in new_names.items():
        try:
            check_tensor_name(new)
        except CorruptCheckpoint as exc:
            renamed = f" (renamed from {old!r})" if old != new else ""
            raise UsageError(
                f"{exc}{renamed}: a safetensors output could not be read back; rename it with --rename, "
                "or keep a pickle with --to bin",
                path=source,
            ) from exc


def plan_tensors(
    checkpoint: Checkpoint,
    *,
    dtype: str | None = None,
    keep_fp32: str | None = None,
    renames: list[Rename] | None = None,
    fmt: str = "safetensors",
) -> TensorSelection:
    """Plan the output tensors of a checkpoint: aliases, renames and casts; reads no tensor values
    except to tell aliased storages apart (pickles only, already memory-mapped).

    Example:
        >>> selection = plan_tensors(open_checkpoint("gpt2.bin"), dtype="float16")  # doctest: +SKIP
        >>> [d.name for d in selection.dropped]  # doctest: +SKIP
        ['lm_head.weight']

    Raises:
        UsageError: a bad `--keep-fp32` regex, or renames that give two tensors one name.
    """
    if keep_fp32 and not dtype:
        # Alone it would only upcast what it matches (fp16 to fp32) and downcast float64: not what "keep" says.
        raise UsageError("--keep-fp32 keeps the tensors it matches in fp32 while --dtype casts the others: "
                         "give --dtype too")
    keep = compile_user_regex("--keep-fp32", keep_fp32) if keep_fp32 else None
    if keep_fp32:
        from weightdoctor.quantized import refuse_unbounded_regex

        refuse_unbounded_regex("--keep-fp32", keep_fp32)
    selection = TensorSelection(tensors=[])
    dropped: dict[str, str] = {}
    if checkpoint.shared_groups():
        patterns, ties, why_not = _tied_weights(checkpoint)
        if ties is not None:
            selection.model_buffers = ties.buffers
        dropped, copies = choose_aliases(checkpoint, patterns)
        if fmt == "safetensors" and ties is not None and dropped:
            # Judged under the names the output has (`--rename '^module\.='` of a DDP checkpoint).
            both = sorted(set(dropped) | set(dropped.values()))
            renamed = dict(zip(both, rename_all(both, list(renames or [])), strict=True))
            left_out = ties.not_retied({renamed[name]: renamed[kept] for name, kept in dropped.items()})
            untied = {name: kept for name, kept in dropped.items() if renamed[name] in left_out}
        else:
            untied = {}
        if untied:
            # A .bin keeps every name (as views of one storage); a safetensors file keeps a copy of each of these.
            dropped = {name: kept for name, kept in dropped.items() if name not in untied}
            pairs = ", ".join(f"{name} = {kept}" for name, kept in sorted(untied.items())[:3])
            more = f" and {len(untied) - 3} more" if len(untied) > 3 else ""
            selection.warnings.append(
                f"{pairs}{more} share storage in the source, but config.json does not tie "
                f"{'them' if len(untied) > 1 else 'it'} (from_pretrained would load "
                f"{'them' if len(untied) > 1 else 'it'} as new random weights if left out): "
                "each is written as its own copy")
        if dropped and why_not and fmt == "safetensors":  # a .bin keeps every name: nothing was chosen
            selection.warnings.append(
                f"tied weights chosen by name order, since {why_not}: kept "
                + ", ".join(sorted({v for v in dropped.values()}))
            )
        for names in copies:
            selection.warnings.append(
                f"{', '.join(names)} share storage but are different views; each is written as its own copy"
            )
    aliased_to: dict[str, str] = {}
    if fmt == "bin":
        # A .bin keeps every name, sharing one storage as torch.save does; the storage belongs to the
        # name that comes first, which the writer must meet before its aliases.
        order = {t.name: i for i, t in enumerate(checkpoint.tensors)}
        sets: dict[str, set[str]] = {}
        for name, kept in dropped.items():
            sets.setdefault(kept, {kept}).add(name)
        for names in sets.values():
            owner = min(names, key=order.__getitem__)
            aliased_to.update({n: owner for n in names if n != owner})
    names = [t.name for t in checkpoint.tensors if fmt == "bin" or t.name not in dropped]
    _refuse_renames_that_match_nothing(names, list(renames or []))
    # Renamed over every name, dropped aliases too, so that a rename onto an alias's name is refused as two names
    # made one: `--rename '^q$=head.weight'` beside tied `head.weight` = `emb.weight` wrote q under the name the
    # metadata records as `head.weight -> emb.weight` (a .bin, which keeps every name, refused it already).
    every_new = apply_renames([t.name for t in checkpoint.tensors], list(renames or []))
    new_names = {name: every_new[name] for name in names}
    if fmt == "safetensors":
        _refuse_unreadable_names(new_names, checkpoint.source)
    selection.renamed = sum(old != new for old, new in new_names.items())
    # A Flax kernel renamed to a PyTorch `.weight` (`--rename kernel=weight` on a Flax file) keeps its values: a
    # Dense kernel is [in, out], the transpose of nn.Linear's weight, so the square ones loaded transposed without an
    # error, and the output (under PyTorch's names, the source's `format` kept) said nothing of it.
    # Flax's only where the file says so: its format "flax", or Flax's other names (a LayerNorm's `.scale`, an
    # Embed's `.embedding`) beside the kernels and no PyTorch `.weight` at all; a PyTorch module's own `kernel`
    # parameter (beside a Mimi-style layer scale's `.scale`) is no transpose.
    kernels = [t.name for t in checkpoint.tensors if renames and t.name.endswith(".kernel") and len(t.shape) >= 2
               and new_names.get(t.name, "").endswith(".weight")]
    if kernels and (checkpoint.metadata or {}).get("format") != "flax" and (
            any(t.name.endswith(".weight") for t in checkpoint.tensors)
            or not any(t.name.endswith((".scale", ".embedding")) for t in checkpoint.tensors)):
        kernels = []
    if kernels:
        selection.warnings.append(
            f"{counted(len(kernels), 'Flax kernel')} renamed to PyTorch's .weight (e.g. {kernels[0]} → "
            f"{new_names[kernels[0]]}) {plural(len(kernels), 'keeps its', 'keep their')} values: a Flax Dense "
            "kernel is [in, out], the transpose of nn.Linear's [out, in] weight (a Conv kernel is (*kernel, in, "
            "out)), and a rename transposes nothing, so the square ones load transposed without an error; convert "
            "the model with transformers 4 (from_pretrained(..., from_flax=True), then save_pretrained)")
    from weightdoctor.quantized import quantizer_side_tensors

    # A quantizer's scales and states are read as stored (bitsandbytes' absmax, GPTQ's scales, FP8's
    # weight_scale_inv): cast, they change what every quantized weight dequantizes to.
    side = quantizer_side_tensors(checkpoint.tensors, checkpoint.config) if dtype else set()
    kept_side: list[str] = []
    # Tied names are one storage with one dtype: --keep-fp32 on any of them (lm_head of GPT-2's
    # lm_head ≡ wte) keeps the storage in fp32, whichever name is written (safetensors) or owns it (.bin).
    tied: dict[str, set[str]] = {}
    for name, kept in dropped.items():
        tied.setdefault(kept, {kept}).add(name)
    kept_tied: set[str] = set()
    for names in tied.values():
        matched = sorted(n for n in names if keep is not None and keep.search(n))
        if matched and len(matched) < len(names):
            kept_tied |= names
            selection.warnings.append(
                f"--keep-fp32 {keep_fp32!r} matches {', '.join(matched)}, one storage with "
                f"{', '.join(sorted(names - set(matched)))}: the storage is kept in fp32 under every name")
    for info in checkpoint.tensors:
        if info.name not in new_names:
            continue
        target = _target_dtype(info, dtype, keep)
        if info.name in kept_tied and info.dtype in CASTABLE:
            target = "float32"
        if info.name in side and target != info.dtype:
            target = info.dtype
            kept_side.append(info.name)
        if keep is not None and (keep.search(info.name) or info.name in kept_tied) and info.dtype in CASTABLE:
            selection.kept_fp32.append(info.name)
        if target != info.dtype:
            key = f"{info.dtype}->{target}"
            selection.cast[key] = selection.cast.get(key, 0) + 1
        nbytes = info.num_params * bits_per_element(target) // 8
        alias = aliased_to.get(info.name)
        selection.tensors.append(
            PlannedTensor(
                source=info.name, name=new_names[info.name], source_dtype=info.dtype, dtype=target,
                shape=torch_shape(info.shape, info.dtype), nbytes=nbytes, source_file=info.file,
                alias_of=new_names[alias] if alias else None,
            )
        )
    if fmt == "bin":
        selection.tensors += _recorded_alias_tensors(checkpoint, selection, renames)
    if dtype and not any(selection.cast.values()):
        # `--dtype fp16` of a model saved in float16 wrote a copy and said nothing, as if it had cast it.
        floating = [info for info in checkpoint.tensors if info.dtype in CASTABLE]
        kept = set(selection.kept_fp32)
        held = ", ".join(sorted({info.dtype for info in checkpoint.tensors}))
        if not floating:
            why = f"the checkpoint holds no floating tensor ({held})"
        elif all(info.name in kept for info in floating):
            why = "--keep-fp32 matches every floating one"
        else:
            why = f"the floating ones are {dtype} already" + (
                " (those --keep-fp32 matches stay float32)" if kept else "")
        selection.warnings.append(f"--dtype {dtype} casts no tensor: {why}, and the output holds them as the "
                                  "source does")
    if fmt == "safetensors":
        _refuse_what_safetensors_cannot_store(checkpoint, selection.tensors)
    else:
        _refuse_what_torch_cannot_hold(checkpoint, selection.tensors)
    if kept_side:
        selection.warnings.append(
            f"--dtype {dtype}: {counted(len(kept_side), 'quantizer scale/state tensor')} kept as stored "
            f"({', '.join(kept_side[:3])}{', ...' if len(kept_side) > 3 else ''}): the quantized weights are read "
            "with them as they are")
    if dtype and selection.cast:
        from weightdoctor.quantized import quantization_of

        method = (quantization_of(checkpoint.config) or ("", None))[0]
        if method == "awq" and dtype in ("bfloat16", "bf16"):
            # transformers' AwqQuantizer.update_dtype: bf16 with a GPU present is cast back to float16.
            selection.warnings.append(
                "--dtype bfloat16 on an AWQ checkpoint: its CUDA kernels take no bf16, so from_pretrained on a GPU "
                "loads it in float16 anyway (transformers casts it back and warns)")
        elif method in _QUANTIZER_DTYPES and _FULL_DTYPE.get(dtype, dtype) not in _QUANTIZER_DTYPES[method][1]:
            name, allowed, refused = _QUANTIZER_DTYPES[method]
            shown = " or ".join(allowed)
            # from_pretrained's dtype="auto" is config.json's, which follows the cast, and goes to the quantizer's
            # update_dtype: SpQR's and HIGGS' raise ValueError, fbgemm_fp8's and FP-Quant's replace it.
            selection.warnings.append(
                f"--dtype {_FULL_DTYPE.get(dtype, dtype)} on {name} checkpoint: transformers' quantizer for it takes "
                f"{shown} only, and from_pretrained hands it the dtype config.json names (a converted folder's "
                "follows the cast): "
                + (f"it raises ValueError, so such a folder does not load unless given dtype=torch.{allowed[0]} "
                   f"(--dtype {_SHORT_DTYPE[allowed[0]]} keeps it loadable)" if refused else
                   f"it runs the model in {shown} anyway (with a warning), so the cast only changes the values"))
    if fmt == "safetensors":
        # Under the output's names, as the metadata records them: `--rename '^module\.='` on a DDP T5 recorded
        # `module.lm_head.weight -> module.shared.weight`, names the written file does not hold.
        def renamed(name: str) -> str:
            for rename in renames or []:
                name = rename.apply(name)
            return name

        selection.dropped = sorted((DroppedAlias(renamed(name), new_names[kept]) for name, kept in dropped.items()),
                                   key=lambda d: d.name)
    if dtype and not selection.cast and not any(t.dtype in FLOATING for t in checkpoint.tensors):
        selection.warnings.append(f"--dtype {dtype}: the checkpoint has no floating tensors to cast")
    if keep is not None and not selection.kept_fp32:
        # A typo (`layernorm` for `LayerNorm`) would otherwise cast everything without a word.
        selection.warnings.append(f"--keep-fp32 {keep_fp32!r} matches no floating tensor: nothing is kept in fp32")
    if dtype and (selection.cast or selection.kept_fp32):
        kept_at_load, declared = kept_by_class_at_load(checkpoint, dtype)
        selection.kept_fp32_by_class = sorted(set(selection.kept_fp32) & kept_at_load)
        if (kept_note := cast_of_kept_at_load_note(selection, dtype, keep_fp32, kept_at_load,
                                                   declared)) is not None:
            selection.warnings.append(kept_note)
    return selection


def recorded_aliases(checkpoint: Checkpoint) -> dict[str, str]:
    """The tied tensors a safetensors source records and does not store ({left-out name: the name stored}, as
    huggingface_hub's `save_torch_state_dict` and convert write them in the metadata): GPT-2's
    `{"lm_head.weight": "transformer.wte.weight"}`."""
    names = {t.name for t in checkpoint.tensors}
    return {key: value for key, value in sorted((checkpoint.metadata or {}).items())
            if key != "format" and value in names and key not in names}


def config_tied_aliases(checkpoint: Checkpoint) -> dict[str, str]:
    """The tensors the model of config.json ties to a stored tensor and the source does not store ({tied name: the
    name stored}): transformers 5's save_pretrained writes GPT-2's model.safetensors without `lm_head.weight` and
    T5's with `shared.weight` alone, and records no alias in the metadata. Read from the model built on the meta
    device (its `all_tied_weights_keys` for this config: `tie_word_embeddings: false` ties no head); empty without a
    transformers config, or where the model cannot be built.

    Example:
        >>> config_tied_aliases(open_checkpoint("gpt2/model.safetensors"))  # doctest: +SKIP
        {'lm_head.weight': 'transformer.wte.weight'}
    """
    if not checkpoint.config or "model_type" not in checkpoint.config:
        return {}
    from weightdoctor.modeling_source import tied_weights_from_text

    names = {t.name for t in checkpoint.tensors}
    # Read from the modeling code's text where it answers (GPT-2's lm_head, a BertForSequenceClassification's none):
    # importing torch and transformers and building the model took 11 s of a 0.8 s conversion of GPT-2.
    retied = tied_weights_from_text(checkpoint.config)
    if retied is None:
        _, ties, _ = _tied_weights(checkpoint)
        if ties is None:
            return {}
        retied = {name: kept for name, kept in ties.retied.items() if name in ties.names}
    return {name: kept for name, kept in sorted(retied.items())
            if isinstance(kept, str) and name not in names and kept in names}


def _recorded_alias_tensors(checkpoint: Checkpoint, selection: TensorSelection,
                            renames: list[Rename] | None) -> list[PlannedTensor]:
    """The tied names a safetensors source records (`recorded_aliases`) or its config.json ties and it does not store
    (`config_tied_aliases`), for a .bin output: each one more name of the stored tensor's storage, as torch.save
    writes `model.state_dict()` of a tied model (GPT-2's `lm_head.weight`, T5's `encoder.embed_tokens.weight`; no
    byte more). Left out, `model.load_state_dict(torch.load(path))` (strict, as older libraries load a .bin) failed
    on the missing key. After every stored tensor, so that the storage's owner comes first; a name a rename gives to
    another tensor is left out, and said."""
    by_source = {t.source: t for t in selection.tensors}
    taken = {t.name for t in selection.tensors}
    aliases: list[PlannedTensor] = []
    clashes: list[str] = []
    for name, kept in {**config_tied_aliases(checkpoint), **recorded_aliases(checkpoint)}.items():
        owner = by_source.get(kept)
        if owner is None:
            continue
        new_name = apply_renames([name], list(renames or []))[name]
        if new_name in taken:
            clashes.append(new_name)
            continue
        taken.add(new_name)
        aliases.append(replace(owner, name=new_name, alias_of=owner.alias_of or owner.name))
    if clashes:
        selection.warnings.append(
            f"the source's record{'s' if len(clashes) > 1 else ''} of tied {plural(len(clashes), 'tensor')} "
            f"{', '.join(clashes[:3])}{' and more' if len(clashes) > 3 else ''} "
            f"{plural(len(clashes), 'is', 'are')} not written: the renamed tensors already take "
            f"{plural(len(clashes), 'that name', 'those names')}")
    return aliases


def kept_by_class_at_load(checkpoint: Checkpoint, dtype: str) -> tuple[set[str], list[str]]:
    """The source's tensors `from_pretrained(dtype=<dtype>)` keeps in float32 (its class's `_keep_in_fp32_modules`,
    T5's `wo` at float16), with the module names those lists declare (`["wo"]`); empty for other targets, and where
    no config.json builds the class."""
    short = _SHORT_DTYPE.get(_FULL_DTYPE.get(dtype, dtype))
    if short not in ("fp16", "bf16") or checkpoint.config is None:
        return set(), []
    from weightdoctor.check_dtype import kept_fp32_at_load_by_plan

    kept, declared = kept_fp32_at_load_by_plan(checkpoint, [short]).get(short, ([], []))
    return set(kept), declared


def keep_fp32_regex_for(names: list[str], castable: list[str],
                        declared: Sequence[str] = ()) -> tuple[str | None, list[str]]:
    """A `--keep-fp32` expression that matches exactly `names` among the `castable` tensor names: their modules'
    last names (`\\.wo\\.` for T5's `...DenseReluDense.wo.weight`) where that matches no other, else their first
    segments (`^(?:qformer|query_tokens)(?:\\.|$)`, BLIP-2's), else the `declared` module names (the class's
    `_keep_in_fp32_modules`) as whole segments anywhere (BLIP-2 over T5's `qformer`, `query_tokens` and `wo`), else
    the names themselves; None where that would be longer than a shell word should be. With it, the modules it names
    (`wo`; `qformer`, `query_tokens`), to be said: the `declared` ones that hold some of `names` where given.

    Example:
        >>> keep_fp32_regex_for(["a.wo.weight", "b.wo.weight"], ["a.wo.weight", "b.wo.weight", "a.wi.weight"])
        ('\\\\.wo\\\\.', ['wo'])
    """
    wanted = set(names)
    modules = sorted({name.rsplit(".", 2)[-2] for name in names if name.count(".") >= 1})
    candidates: list[tuple[str, list[str]]] = []
    if modules:
        inner = "|".join(re.escape(module) for module in modules)
        candidates.append((r"\." + (inner if len(modules) == 1 else f"(?:{inner})") + r"\.", modules))
    # A whole submodule kept (BLIP-2's `qformer`, its `query_tokens` parameter): by the names' first segments.
    tops = sorted({name.split(".", 1)[0] for name in names})
    inner = "|".join(re.escape(top) for top in tops)
    candidates.append(("^" + (inner if len(tops) == 1 else f"(?:{inner})") + r"(?:\.|$)", tops))
    # A composite's lists, its parts kept whole and a module deep in another part (BLIP-2 over T5: the qformer,
    # query_tokens, the language model's wo): neither one last name nor one first segment holds them all.
    holding = sorted(module for module in set(declared) if re.fullmatch(r"[A-Za-z0-9_]+", module)
                     and any(re.search(rf"(?:^|\.){re.escape(module)}(?:\.|$)", name) for name in wanted))
    if holding:
        inner = "|".join(re.escape(module) for module in holding)
        candidates.append((r"(?:^|\.)" + (inner if len(holding) == 1 else f"(?:{inner})") + r"(?:\.|$)", holding))
    candidates.append(("^(?:" + "|".join(re.escape(name) for name in sorted(wanted)) + ")$", holding or modules))
    for candidate, named in candidates:
        pattern = re.compile(candidate)
        if {name for name in castable if pattern.search(name)} == wanted and len(candidate) <= 2_000:
            return candidate, named
    return None, modules


def cast_of_kept_at_load_note(selection: TensorSelection, dtype: str, keep_fp32: str | None,
                              kept_at_load: set[str], declared: Sequence[str] = ()) -> str | None:
    """The warning for a cast to fp16 / bf16 of the tensors the model's class keeps in float32 at that dtype (T5's
    `wo`, its `_keep_in_fp32_modules`): `from_pretrained(dtype=torch.float16)` leaves them float32, and its
    `save_pretrained` writes them so; the plain cast rounds them to float16, which from_pretrained then loads up-cast,
    the rounding kept. It names the `--keep-fp32` that writes them as save_pretrained does. None where the class
    keeps nothing in float32 (most), where no config.json builds it, or where --keep-fp32 already keeps them.
    `kept_at_load`, `declared`: what `kept_by_class_at_load` gives (the names kept, the module names declared).

    Example:
        >>> kept, declared = kept_by_class_at_load(t5, "float16")  # doctest: +SKIP
        >>> cast_of_kept_at_load_note(selection, "float16", None, kept, declared)  # doctest: +SKIP
        "--dtype float16 casts 4 tensors that from_pretrained(dtype=torch.float16) keeps in float32 ..."
    """
    target = _FULL_DTYPE.get(dtype, dtype)
    short = _SHORT_DTYPE.get(target)
    if not kept_at_load:
        return None
    # Rounded by this cast: written at the target, from a dtype wider than it (a float16 source loses nothing more).
    planned = {t.source: t for t in selection.tensors}
    rounded = sorted(name for name in kept_at_load if (t := planned.get(name)) is not None and t.dtype == target
                     and t.source_dtype in ("float32", "float64"))
    if not rounded:
        return None
    castable = [t.source for t in selection.tensors if t.source_dtype in CASTABLE]
    regex, modules = keep_fp32_regex_for(rounded, castable, declared)
    # Said as the class declares them, matched as transformers' loader matches them (anywhere in a name): a
    # composite's lists read "qformer, query_tokens, wo", not the last names of the tensors under them.
    modules = sorted(module for module in set(declared)
                     if any(re.search(module.replace("*", ".*"), name) for name in rounded)) or modules
    listed = ", ".join(modules[:4]) + (f" and {len(modules) - 4} more" if len(modules) > 4 else "")
    strict = "_keep_in_fp32_modules_strict" if short == "bf16" else "_keep_in_fp32_modules"
    note = (f"--dtype {target} casts {counted(len(rounded), 'tensor')} that from_pretrained(dtype=torch.{target}) "
            f"keeps in float32 (its class's {strict}: {listed}), as its save_pretrained writes them; here they are "
            f"written in {target}, and from_pretrained loads them back up-cast to float32 with the {target} rounding "
            "kept")
    if regex is None:
        return note
    from weightdoctor.paths import shell_word

    both = regex if not keep_fp32 else f"(?:{keep_fp32})|{regex}"
    return (f"{note}: to write them in float32 as save_pretrained does, run this command again with "
            f"--keep-fp32 {shell_word(both)}" + (" in place of yours" if keep_fp32 else "") + " (and --force)")


# The dtypes transformers' quantizers take (their update_dtype), and whether another one raises (True) or is
# replaced (False): transformers 5.25's quantizer_spqr.py, quantizer_higgs.py, quantizer_fbgemm_fp8.py and
# quantizer_fp_quant.py.
_QUANTIZER_DTYPES: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "spqr": ("an SpQR", ("float16",), True), "higgs": ("a HIGGS", ("float16", "bfloat16"), True),
    "fbgemm_fp8": ("an fbgemm_fp8", ("bfloat16",), False), "fp_quant": ("an FP-Quant", ("bfloat16",), False)}
_FULL_DTYPE = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32", "half": "float16"}
_SHORT_DTYPE = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}


# ---------------------------------------------------------------------------------------------------
# Casting


@dataclass(frozen=True)
class CastProblem:
    """What a cast would do to one tensor: finite values that become inf, non-zero values that become 0."""

    tensor: str
    target: str
    overflow: int
    flushed: int
    nonzero: int

    @property
    def flushed_share(self) -> float:
        return self.flushed / self.nonzero if self.nonzero else 0.0

    def describe(self) -> str:
        parts = []
        if self.overflow:
            parts.append(f"{counted(self.overflow, 'value')} {plural(self.overflow, 'becomes', 'become')} inf")
        if self.flushed_share >= FLUSH_SHARE_LIMIT:
            parts.append(f"{self.flushed_share:.1%} of non-zero values become 0")
        return f"{self.tensor} ({', '.join(parts)})"


def cast_tensor(tensor: torch.Tensor, name: str, target: str) -> tuple[torch.Tensor, CastProblem | None]:
    """Cast a floating tensor and report what the cast lost, counted in chunks to bound memory."""
    import torch

    dtype = getattr(torch, target)
    out = tensor.to(dtype)
    if bits_per_element(target) >= bits_per_element(str(tensor.dtype)) and target != "float16":
        return out, None
    if is_dtype_placeholder(name, tensor.numel()):
        # fairseq's `_float_tensor`: uninitialized memory kept for its dtype, lost or not by the cast alike.
        return out, None
    flat_src, flat_out = tensor.reshape(-1), out.reshape(-1)
    overflow = flushed = nonzero = 0
    # A cast keeps inf as inf, NaN as NaN and zero as zero, so "finite that became inf" is the infs of the
    # output less those of the source, and "non-zero that became zero" the zeros of the output less those
    # of the source: one mask at a time instead of six.
    for start in range(0, flat_src.numel(), CHUNK_ELEMENTS):
        src = flat_src[start:start + CHUNK_ELEMENTS]
        dst = flat_out[start:start + CHUNK_ELEMENTS]
        # count_nonzero, not .sum(): summing a bool mask first copies it to int64 (8 bytes per value).
        src_inf = int(torch.count_nonzero(torch.isinf(src)))
        overflow += int(torch.count_nonzero(torch.isinf(dst))) - src_inf
        src_zeros = src.numel() - int(torch.count_nonzero(src))
        # The share is of non-zero *finite* values, as check-dtype counts it (CastCounts.nonzero_finite): NaN and
        # inf cannot be flushed, and counting them would let a tensor full of NaN dilute a mass underflow.
        nonzero += src.numel() - src_zeros - src_inf - int(torch.count_nonzero(torch.isnan(src)))
        flushed += int(dst.numel() - torch.count_nonzero(dst)) - src_zeros
    problem = CastProblem(name, target, overflow, flushed, nonzero)
    if overflow or problem.flushed_share >= FLUSH_SHARE_LIMIT:
        return out, problem
    return out, None


# ---------------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class OutputFile:
    """One file of an output set: its name, the output names of its tensors (plan order; left out of
    JSON, which gives the count and the first and last name), and its bytes of tensor data."""

    filename: str
    tensors: list[str] = field(metadata={"json": False})
    nbytes: int
    num_tensors: int = field(init=False)
    first: str | None = field(init=False)
    last: str | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_tensors", len(self.tensors))
        object.__setattr__(self, "first", self.tensors[0] if self.tensors else None)
        object.__setattr__(self, "last", self.tensors[-1] if self.tensors else None)


@dataclass
class WriteResult:
    """What was written: files with their sizes, verification, what the swap replaced and carried over."""

    files: list[dict[str, object]]
    verified: bool
    tensors_verified: int
    seconds: float
    replaced: list[str] = field(default_factory=list)
    carried_over: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    # With --allow-overflow: each tensor the cast lost values in, as the refusal would have named it.
    lost: list[str] = field(default_factory=list)
    # "copy": tensor bytes copied in the kernel and compared byte for byte with the source as they went;
    # "torch": tensors loaded one at a time (a cast, a non-contiguous view, ...), sha256 compared.
    method: str = "torch"


@dataclass(frozen=True)
class SideFile:
    """A file of a model folder copied beside converted weights: where it is, and its path in the output.

    `content`, when given, is written instead of the file's bytes (a config.json whose dtype follows a cast).
    """

    path: Path
    relpath: str
    content: bytes | None = None


_CONFIG_DTYPE_KEYS = ("dtype", "torch_dtype")  # transformers 5 writes the first, 4.x the second


def _set_dtype_keys(node: object, dtype: str, where: str) -> list[str]:
    """Set every dtype key in a parsed config (at any depth) to `dtype`; what changed, as `key: old → new`."""
    changed: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _CONFIG_DTYPE_KEYS and isinstance(value, str):
                if value != dtype:
                    node[key] = dtype
                    changed.append(f"{where}{key}: {value} → {dtype}")
            else:
                changed += _set_dtype_keys(value, dtype, f"{where}{key}.")
    return changed


def _has_dtype_key(node: object) -> bool:
    if isinstance(node, dict):
        return any(key in _CONFIG_DTYPE_KEYS or _has_dtype_key(value) for key, value in node.items())
    return False


def with_config_dtype(
    files: list[SideFile], dtype: str | None, kept_fp32: int = 0, kept_by_class: int = 0,
) -> tuple[list[SideFile], str | None]:
    """`files` with config.json's dtype set to the cast target, as `save_pretrained` writes it; and a note.

    Left as it was, `from_pretrained(dtype="auto")` would load bf16 weights back as float32. Only keys the
    config already has are changed (at any depth: multimodal configs nest a text and a vision config), except
    that a transformers config (`model_type`) with no dtype key gets `dtype` when `kept_fp32` tensors stay
    float32 (dtype="auto" would otherwise follow the first floating tensor, which can be a kept one);
    a config that is not a JSON object is copied untouched. The note also names weight files that are
    copied uncast (other modules' weights in subfolders), and, when `kept_fp32` tensors stay in float32 beside a
    config, that `from_pretrained` loads them at the config's dtype all the same, except the `kept_by_class` of them
    its class keeps in float32 (T5's `wo` at float16, kept with `--keep-fp32 '\\.wo\\.'`: nothing to say of those).
    """
    if dtype is None:
        return files, None
    out: list[SideFile] = []
    note = None
    # Weights of other modules (a sentence-transformers `2_Dense/model.safetensors`) are copied, not cast.
    uncast = [side.relpath for side in files if side.relpath.lower().endswith(WEIGHT_SUFFIXES)
              and _holds_tensors(side.path)]
    for side in files:
        if side.relpath != "config.json":
            out.append(side)
            continue
        try:
            config = parse_json(side.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            out.append(side)
            continue
        changed = _set_dtype_keys(config, dtype, "")
        if kept_fp32 and isinstance(config, dict) and "model_type" in config and not _has_dtype_key(config):
            # No dtype: from_pretrained(dtype="auto") would go by the first floating tensor of the weights, which a
            # kept float32 one can be, and load the whole model in float32. save_pretrained writes `dtype` always.
            config["dtype"] = dtype
            changed.append(f"dtype: (not set) → {dtype}")
        if changed:
            note = "config.json follows the cast: " + ", ".join(changed)
            out.append(SideFile(side.path, side.relpath, (json.dumps(config, indent=2) + "\n").encode()))
        else:
            out.append(side)
    if uncast:
        listed = ", ".join(uncast[:4]) + (f" and {len(uncast) - 4} more" if len(uncast) > 4 else "")
        uncast_note = f"copied as they are, not cast to {dtype}: {listed} (convert them on their own)"
        note = f"{note}; {uncast_note}" if note else uncast_note
    loaded_cast = kept_fp32 - kept_by_class
    if loaded_cast > 0 and any(side.relpath == "config.json" for side in files):
        # Measured with transformers 5: from_pretrained(dtype="auto") loads a kept fp32 norm as bfloat16, and
        # dtype=torch.float32 loads everything in float32; only a class's _keep_in_fp32_modules stay float32.
        # Counted as parts of the whole: "the 12 kept in float32 included, except the 4 its class keeps" of 16
        # kept read as 4 taken out of 12 (review 84).
        of_them = (f"{loaded_cast} of the {kept_fp32} kept in float32 included (it keeps the other {kept_by_class} "
                   "in float32: its class's _keep_in_fp32_modules)" if kept_by_class else
                   f"the {kept_fp32} kept in float32 included, except the modules its class keeps in float32 "
                   "(_keep_in_fp32_modules)")
        those = f"those {loaded_cast}" if kept_by_class else "they"
        kept_note = (f"--keep-fp32: from_pretrained loads every tensor at one dtype ({dtype} with dtype=\"auto\"), "
                     f"{of_them}; {those} stay float32 for loaders that keep each tensor's own dtype "
                     "(safetensors' load_file, load_state_dict(..., assign=True))")
        note = f"{note}; {kept_note}" if note else kept_note
    return out, note


def pickles_copied_note(files: list[SideFile], fmt: str, folder: Path | None, source: str | None = None,
                        output: str | None = None) -> str | None:
    """A warning where a conversion to safetensors copies PyTorch pickles as they are (a sentence-transformers
    `2_Dense/pytorch_model.bin`, copied with its module folder): the output was called safetensors and still held a
    pickle, with nothing said unless a --dtype was given. None where there is none, or the output is .bin.

    `source` (the source folder as the user named it, else `folder`) and `output` (the output folder as named) make
    the command that converts the first such folder over its copy, at the end of the line to be pasted whole:
    `-o ...` pasted wrote a folder named `...` where the user stood, the copy in the output left a pickle.

    Example:
        >>> note = pickles_copied_note([SideFile(Path("m/2_Dense/pytorch_model.bin"), "2_Dense/pytorch_model.bin")],
        ...                            "safetensors", Path("m"), None, "out m")
        >>> note.split("; ")[1]
        "convert it on its own, over its copy: weightdoctor convert m/2_Dense -o 'out m/2_Dense' --force"
    """
    from weightdoctor.checkpoint.reader import PICKLE_SUFFIXES

    if fmt != "safetensors":
        return None
    pickles = [side.relpath for side in files if side.relpath.lower().endswith(PICKLE_SUFFIXES)
               and not is_training_state(Path(side.relpath).name) and _pickle_file(side.path)]
    if not pickles:
        return None
    listed = ", ".join(pickles[:4]) + (f" and {len(pickles) - 4} more" if len(pickles) > 4 else "")
    first = Path(pickles[0]).parent
    if folder is None or output is None or first == Path("."):
        return f"copied as they are, still PyTorch pickles: {listed} (convert each on its own)"
    from weightdoctor.paths import expand_user, shell_word

    # As typed where it names this folder (not a repo id or a Hub cache folder, read at its snapshot).
    typed = source is not None and _same_folder(expand_user(source), folder)
    named = os.path.join(source, first) if typed and source is not None else str(folder / first)
    command = (f"weightdoctor convert {shell_word(named, argument=True)} -o "
               f"{shell_word(os.path.join(output, first), argument=True)} --force")
    each = ("convert each on its own, the first over its copy" if len(pickles) > 1
            else "convert it on its own, over its copy")
    return f"copied as they are, still PyTorch pickles: {listed}; {each}: {command}"



def _same_folder(one: Path, other: Path) -> bool:
    try:
        return one.is_dir() and one.samefile(other)
    except OSError:
        return False


NEMO_WEIGHTS = "model_weights.ckpt"  # the one name NeMo's SaveRestoreConnector reads weights from


def nemo_weights_note(checkpoint: Checkpoint, written: list[str]) -> str | None:
    """A warning where the weights read are an extracted NeMo model's (model_config.yaml beside model_weights.ckpt,
    a `.nemo` untarred) and the output does not keep that name: NeMo's restore_from reads model_weights.ckpt alone,
    with torch.load, in the .nemo tar and in an extracted folder (SaveRestoreConnector.model_extracted_dir) alike, so
    a model_weights.safetensors (or shards and an index) written there was never read by NeMo, and nothing said so.
    None otherwise.

    Example:
        >>> nemo_weights_note(open_checkpoint("asr/"), ["model_weights.safetensors"])  # doctest: +SKIP
        "an extracted NeMo model (model_config.yaml beside model_weights.ckpt): NeMo's restore_from ..."
    """
    read = [f.path for f in checkpoint.files if f.role == "weights"]
    if len(read) != 1 or read[0].name != NEMO_WEIGHTS or not (read[0].parent / "model_config.yaml").is_file():
        return None
    if NEMO_WEIGHTS in written:
        return None
    shown = ", ".join(written[:3]) + (f" and {len(written) - 3} more" if len(written) > 3 else "")
    return (f"an extracted NeMo model (model_config.yaml beside {NEMO_WEIGHTS}): NeMo's restore_from reads "
            f"{NEMO_WEIGHTS} alone, with torch.load, from a .nemo or its extracted folder, and cannot load {shown}; "
            f"keep {NEMO_WEIGHTS} for NeMo")


def meta_release_note(checkpoint: Checkpoint, written: list[str]) -> str | None:
    """A warning where the weights read are Meta's original release (consolidated.NN.pth beside params.json, Llama's
    original/ folder) and the output is not .pth files: Meta's llama code loads the folder's *.pth, and transformers'
    convert_llama_weights_to_hf.py its consolidated.NN.pth, both with torch.load, so consolidated.00.safetensors (or
    shards) written beside params.json was read by neither, and nothing said so. None otherwise.

    Example:
        >>> meta_release_note(open_checkpoint("llama3/original"), ["consolidated.00.safetensors"])  # doctest: +SKIP
        "Meta's original format (consolidated.00.pth with params.json): Meta's llama code reads ..."
    """
    read = [f.path for f in checkpoint.files if f.role == "weights"]
    if not read or not all(re.fullmatch(r"consolidated\.\d+\.pth", path.name) for path in read) \
            or not (read[0].parent / "params.json").is_file() or all(name.endswith(".pth") for name in written):
        return None
    shown = ", ".join(written[:3]) + (f" and {len(written) - 3} more" if len(written) > 3 else "")
    repo = read[0].parent.parent
    beside = (f" (the transformers files in {repo.name or repo}/ are the safetensors copy)"
              if (repo / "config.json").is_file() else "")
    return (f"Meta's original format ({read[0].name} with params.json): Meta's llama code reads the folder's *.pth "
            "files and transformers' convert_llama_weights_to_hf.py its consolidated.NN.pth, both with torch.load, "
            f"not {shown}; keep the .pth files for them{beside}")


def _pickle_file(path: Path) -> bool:
    """Whether a `.bin` (or other pickle-named) file is a pickle (torch.save's zip or legacy format) of no other
    format: not an OpenVINO IR's openvino_model.bin, a Core ML package's weights/weight.bin, a GGML file, nor a
    file of bytes no format names (a Wav2Vec2ProcessorWithLM's KenLM language_model/5gram.bin, said to be 'still
    PyTorch pickles'). Reads its first 32 bytes; True when it cannot be read (said as named)."""
    from weightdoctor.checkpoint import foreign
    from weightdoctor.checkpoint.pytorch_format import detect_pickle_format

    try:
        with open(path, "rb") as handle:
            prefix = handle.read(32)
    except OSError:
        return True
    return detect_pickle_format(prefix) is not None and foreign.identify(path, prefix) is None


def _holds_tensors(path: Path) -> bool:
    """Whether a weight-named file copied beside converted weights is one weightdoctor could convert (a pickle or
    a safetensors file), so that 'not cast, convert them on their own' is true of it; True when it cannot be read."""
    from weightdoctor.checkpoint.safetensors_format import looks_like_safetensors

    if not path.name.lower().endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl")):
        return True  # .safetensors, and other formats' names (.h5, .onnx): said as named, as before
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(32)
    except OSError:
        return True
    return looks_like_safetensors(prefix) or _pickle_file(path)


def side_files(
    folder: Path | None, converted: list[Path] | None = None, output: Path | None = None,
) -> tuple[list[SideFile], list[str]]:
    """What of a model folder to copy beside converted weights, and what is left out (with why).

    Copied: config, tokenizer, README, hidden files such as `.gitattributes`, and subfolders whole
    (sentence-transformers' `1_Pooling/`, extra modules' own weights) with symlinks followed (a Hub
    snapshot is made of them). Left out: the converted weight files and indexes themselves, weight files
    of other formats at the top (`tf_model.h5`, `flax_model.msgpack`, `model.onnx`, a second copy in
    another format: they are not converted, and would no longer match after renames or casts), training
    state (a Trainer's `optimizer.pt`, `scheduler.pt`, `rng_state.pth`, `training_args.bin`, and beside them its
    progress in `trainer_state.json`), hidden folders
    (`.git`, `.cache`), and `output` itself when it lies inside `folder` (`shard m -o m/shards`
    run twice would otherwise copy the first run's shards into the second's, one level deeper each time); with
    such an output, also every subfolder holding weight files at its top (`convert m -o m/st2` copied an
    earlier `m/st` whole, and the next run both, nested).
    Links are followed only where they stay inside the folder or, in a Hub snapshot, the repo's `blobs/`
    (`_links_inside`): a folder from a git clone or a tarball may hold `tokenizer.json -> ~/.ssh/id_rsa`, and the
    output is what gets uploaded.
    """
    from weightdoctor.checkpoint import foreign

    if folder is None or not folder.is_dir():
        return [], []
    mine = {p.resolve() for p in converted or []} | {p.absolute() for p in converted or []}
    target = output.resolve() if output is not None else None
    output_inside = target is not None and folder.resolve() in target.parents
    inside = _links_inside(folder)
    root = folder.resolve()

    def real(item: Path) -> Path:
        # An entry of the folder's top that is no link is itself in the resolved folder: one lstat, where resolve()
        # takes one per part of the path, three times over per file (10 s for a folder of 100,000 files).
        return _realpath(item) if item.is_symlink() else root / item.name

    def is_output(path: Path, resolved: Path | None = None) -> bool:
        resolved = _realpath(path) if resolved is None else resolved
        return target is not None and resolved.is_relative_to(target)  # the output, or in it

    copies: list[SideFile] = []
    left_out: list[str] = []
    saves: list[str] = []
    # A checkpoint to resume from: optimizer, scheduler or RNG state beside the weights (training_args.bin alone is
    # what Trainer.save_model writes into a final model's folder too, as save_state writes trainer_state.json).
    resumable = re.fullmatch(r"checkpoint-\d+", folder.resolve().name) is not None or any(
        is_training_state(p.name) and not p.name.startswith("training_args") for p in folder.iterdir())
    for item in sorted(folder.iterdir(), key=lambda entry: entry.name):  # by name: the order of Paths, faster
        name = item.name
        resolved = real(item)
        if is_output(item, resolved):
            continue
        if item.is_dir():
            if name.startswith("."):
                left_out.append(f"{name}/ (hidden folder)")
                continue
            if item.is_symlink():  # a Hub snapshot links files, never folders; `up -> ..` would copy its siblings
                left_out.append(f"{name}/ (a link to a folder)")
                continue
            if name.endswith(WEIGHT_SUFFIXES) or name.endswith(".index.json"):
                # Copied, it took the name of an output shard or index: the write failed with "File exists" or
                # "Is a directory", which said nothing of this folder.
                left_out.append(f"{name}/ (a folder named like a weight file or index)")
                continue
            if is_training_save(item):
                # A Trainer's output_dir keeps its checkpoint-N/ saves beside the final model (DeepSpeed its
                # global_stepN/): each a checkpoint to resume from, optimizer and RNG state and pickled arguments
                # included. Copied whole, the output of `convert output_dir` held every save of the run, several
                # times the model's size, and the pickles the conversion was run to leave behind.
                saves.append(name)  # one entry for them all: a run keeps hundreds
                continue
            if (native := original_release(item)) is not None and not any(
                    m.is_relative_to(item.absolute()) or m.is_relative_to(resolved) for m in mine):
                # Llama 3's original/ (consolidated.00.pth beside params.json): the same weights again, in Meta's
                # layout, 16 GB for an 8B model. Copied whole, a conversion to safetensors held that pickle, stale
                # after a cast or a rename, where Mistral's consolidated.safetensors at the top was left out.
                kind = native.split(":")[0]
                left_out.append(f"{name}/ ({kind}: the weights again in another layout, not converted)")
                continue
            if output_inside and _holds_weight_files(item):
                # No mark tells an earlier output (or a Trainer's checkpoint-N/) from a module's own weights
                # (sentence-transformers' 2_Dense/): inside the model folder, copying either nests copies on every
                # run, so both are left out, by name; an output elsewhere copies them.
                left_out.append(f"{name}/ (holds weight files, as an earlier output does: not copied into an output "
                                "inside the model folder; write the output elsewhere to copy it)")
                continue
            too_deep = False
            for sub in entries_under(item):
                parts = sub.relative_to(folder).parts
                if len(parts) > SIDE_FILE_DEPTH:
                    # No model keeps its files this deep; copied, the output's folders were made, synced and
                    # removed level by level, and past 1,000 levels Python's recursion ended the write.
                    too_deep = True
                    continue
                special = _special_kind(sub)
                if special is not None and not any(part.startswith(".") for part in parts[:-1]):
                    left_out.append(f"{'/'.join(parts)} ({special}, not a regular file)")
                    continue
                if sub.is_symlink() and not sub.exists() and not any(part.startswith(".") for part in parts[:-1]):
                    left_out.append(f"{'/'.join(parts)} ({_broken_link(sub)})")  # was dropped without a word
                    continue
                if sub.is_file() and not any(part.startswith(".") for part in parts[:-1]) and not is_output(sub):
                    if sub.absolute() in mine or _realpath(sub) in mine:
                        continue  # a shard the index names in a subfolder (`weights/model-00001-of-00002...`)
                    if not inside(sub):
                        left_out.append(f"{'/'.join(parts)} (a link to a file outside the model folder)")
                        continue
                    copies.append(SideFile(sub, "/".join(parts)))
            if too_deep:
                left_out.append(f"{name}/ (its files nested past {SIDE_FILE_DEPTH} folders deep)")
            continue
        if item.is_symlink() and not item.exists():
            left_out.append(f"{name} ({_broken_link(item)})")
            continue
        if item.absolute() in mine or resolved in mine:
            # Before the links' test: converted weights linked from elsewhere (a shared store) were said to be "not
            # copied: a link to a file outside the model folder", as if part of the model had been dropped.
            continue
        if item.is_file() and item.is_symlink() and not inside(item):  # no link is in the folder itself
            left_out.append(f"{name} (a link to a file outside the model folder)")
            continue
        special = _special_kind(item)
        if special is not None:
            # A FIFO would block the copy, a device never end it; skipped silently, a `tokenizer.json` that is one
            # was missing from the output with no word said.
            left_out.append(f"{name} ({special}, not a regular file)")
            continue
        if not item.is_file() or item.absolute() in mine or resolved in mine:
            continue
        if is_training_state(name):
            # Trainer's checkpoint-N/: optimizer.pt, scheduler.pt, rng_state.pth, training_args.bin.
            left_out.append(f"{name} (training state, not part of the model)")
            continue
        if name == "trainer_state.json" and resumable:
            # Trainer's progress (global step, log history): copied without the optimizer and scheduler, it made the
            # output look like a checkpoint to resume from, which would restart them from scratch at that step.
            left_out.append(f"{name} (Trainer's progress, training state like the optimizer's: the output is a "
                            "model, not a checkpoint to resume from)")
            continue
        if name.endswith(WEIGHT_SUFFIXES) or name.endswith(".index.json") or (
                foreign.is_foreign_weight_name(name) and not foreign.arrays_not_weights(item)):
            # rust_model.ot, weights.npz, model.onnx_data (whose model.onnx is left out) too: stale once cast.
            left_out.append(f"{name} ({OTHER_WEIGHTS})")
            continue
        copies.append(SideFile(item, name))
    left_out = _shard_sets_once(left_out)
    if any(entry.startswith(OPEN_CLIP_NAMES["safetensors"] + " (") or entry.startswith(OPEN_CLIP_NAMES["bin"] + " (")
           for entry in left_out) and not any(Path(p).name in OPEN_CLIP_NAMES.values() for p in mine):
        # A timm CLIP tower's folder: its own model.safetensors converted, open_clip's copy left out. Copied alone,
        # open_clip_config.json made the output look like an open_clip folder that open_clip could not load.
        left_out += [f"{side.relpath} (open_clip's config: its weights, open_clip's own copy, are not converted "
                     "here; convert that copy on its own, this config beside it, for open_clip)"
                     for side in copies if side.relpath == "open_clip_config.json"]
        copies = [side for side in copies if side.relpath != "open_clip_config.json"]
    if any(name.startswith("global_step") for name in saves):
        # DeepSpeed's `latest` (the tag its load_checkpoint resumes from) and zero_to_fp32.py (which gathers the
        # weights from the tag's folder) belong with its global_stepN/ folders: copied without them, the output held
        # a `latest` naming a folder it lacks and a script with nothing to gather.
        ds_files = {"latest": "DeepSpeed's pointer to the step to resume from",
                    "zero_to_fp32.py": "DeepSpeed's script that gathers the weights of a step"}
        left_out += [f"{side.relpath} ({ds_files[side.relpath]}: left out with the global_step folders)"
                     for side in copies if side.relpath in ds_files]
        copies = [side for side in copies if side.relpath not in ds_files]
    if saves:
        saves.sort(key=natural_order)
        shown = ", ".join(f"{name}/" for name in saves[:6]) + (f" and {len(saves) - 6} more" if len(saves) > 6 else "")
        left_out.append(f"{shown} ({'saves' if len(saves) > 1 else 'a save'} to resume training from, not part of "
                        "this model; convert one on its own)")
    return copies, left_out


OTHER_WEIGHTS = "weights in another file or format, not converted"
_LEFT_OUT_SHARD = re.compile(r"(.+)-(\d+)-of-(\d+)(\.\w+) \(" + re.escape(OTHER_WEIGHTS) + r"\)")


def _shard_sets_once(left_out: list[str]) -> list[str]:
    """`left_out` with the shards of one set left out as weights of another format said in one entry: Mistral
    Large's repos keep consolidated-00001-of-00051.safetensors ... beside the transformers shards, and each of the
    51 was named with the same reason, in one line of 5,000 characters.

    Example:
        >>> _shard_sets_once([f"c-0000{i}-of-00003.safetensors ({OTHER_WEIGHTS})" for i in (1, 2, 3)])[0][:72]
        'c-00001-of-00003.safetensors to c-00003-of-00003.safetensors (3 shards: '
    """
    sets: dict[tuple[str, str, str], list[str]] = {}
    for entry in left_out:
        if (match := _LEFT_OUT_SHARD.fullmatch(entry)) is not None:
            sets.setdefault((match[1], match[3], match[4]), []).append(entry.split(" (", 1)[0])
    out: list[str] = []
    for entry in left_out:
        match = _LEFT_OUT_SHARD.fullmatch(entry)
        names = sets.get((match[1], match[3], match[4]), []) if match is not None else []
        if len(names) < 2:
            out.append(entry)
        elif entry.startswith(names[0] + " ("):
            out.append(f"{names[0]} to {names[-1]} ({len(names)} shards: {OTHER_WEIGHTS})")
    return out


def _holds_weight_files(folder: Path) -> bool:
    """Whether `folder`'s top holds a weight file or an index (`model.safetensors`, `pytorch_model.bin.index.json`)."""
    try:
        return any(item.name.endswith(WEIGHT_SUFFIXES) or item.name.endswith(".index.json") for item in folder.iterdir()
                   if item.is_file())
    except OSError:
        return False


def _special_kind(path: Path) -> str | None:
    """What `path` is when it exists (through links) but is neither a regular file nor a folder: "a FIFO", "a
    device", "a socket"; None otherwise."""
    import stat

    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a special file")


SIDE_FILE_DEPTH = 32  # folders below the model folder; a sentence-transformers module's files are 2 deep


def _broken_link(link: Path) -> str:
    """Why a link that leads to no file is not copied: a loop of links (`a -> b`, `b -> a`), or a missing file."""
    try:
        os.stat(link)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a loop of links, leading back to itself"
    return "a link to a missing file: an unfinished or deleted download"


def _realpath(path: Path) -> Path:
    """`path` with its links followed, as Path.resolve() follows them, but a loop of links answered with the path
    itself (resolve() raises RuntimeError on one: `convert` of a folder holding `a -> b`, `b -> a` ended in
    "unexpected RuntimeError")."""
    return Path(os.path.realpath(path))


def _links_inside(folder: Path) -> Callable[[Path], bool]:
    """A test of whether a path of `folder` resolves inside it, or inside the `blobs/` of the Hub repo whose
    snapshot holds `folder` (`models--org--name/snapshots/<commit>/unet/config.json -> ../../../blobs/<hash>`).

    Example:
        >>> _links_inside(Path("/tmp"))(Path("/tmp/x"))
        True
    """
    root = folder.resolve()
    roots = [root]
    for ancestor in (root, *root.parents):
        if ancestor.parent.name == "snapshots":
            roots.append(ancestor.parent.parent / "blobs")
            break

    def inside(path: Path) -> bool:
        resolved = _realpath(path)
        return any(resolved == r or r in resolved.parents for r in roots)

    return inside


def _slots(plan: list[PlannedTensor], fmt: str) -> list:
    from weightdoctor.writers.bin_writer import BinSlot
    from weightdoctor.writers.safetensors_writer import TensorSlot

    if fmt == "bin":
        return [BinSlot(t.name, t.dtype, t.shape, alias_of=t.alias_of) for t in plan]
    return [TensorSlot(t.name, t.dtype, t.shape) for t in plan]


def _write_one(
    checkpoint: Checkpoint,
    path: Path,
    plan: list[PlannedTensor],
    fmt: str,
    metadata: dict[str, str] | None,
    allow_overflow: bool,
    problems: list[CastProblem],
    advance: Callable[[int], None],
    counter: list[int],
) -> dict[str, str]:
    """Stream the tensors of one output file; returns output name -> sha256 of the bytes written."""
    from weightdoctor.writers import hooks
    from weightdoctor.writers.bin_writer import BinWriter
    from weightdoctor.writers.memory import release_file_pages, release_heap
    from weightdoctor.writers.safetensors_writer import SafetensorsWriter

    by_name = {t.name: t for t in plan}
    # Pickles are memory-mapped by the reader: their pages are given back once each tensor is written.
    mapped_files = {f.relpath for f in checkpoint.weight_files if f.format == "pytorch-zip"}
    slots = _slots(plan, fmt)
    writer = BinWriter(path, slots) if fmt == "bin" else SafetensorsWriter(path, slots, metadata)
    with writer:
        for slot in writer.order:
            planned = by_name[slot.name]
            hooks.reached(f"tensor-{counter[0]}")
            counter[0] += 1
            if fmt == "safetensors" and planned.source_dtype in SIX_BIT:
                # No torch dtype holds six-bit floats (only safetensors names them, and nothing casts them): their
                # bytes are copied as they are.
                writer.write_bytes(slot.name, checkpoint.raw_tensor_bytes(planned.source))
                advance(planned.nbytes)
                continue
            source = tensor = checkpoint.load_tensor(planned.source)
            if planned.dtype != planned.source_dtype:
                from weightdoctor.checkpoint.safetensors_format import require_memory

                # The cast is a copy beside the source's values (a legacy file's are all in memory already).
                require_memory(checkpoint.file_path(planned.source_file),
                               f"tensor {planned.source!r} cast to {planned.dtype}", planned.nbytes,
                               done="is made in memory: nothing was written")
                tensor, problem = cast_tensor(source, planned.source, planned.dtype)
                if problem is not None:
                    # A .bin keeps tied names as views of this storage: they lose the same values, named too.
                    tied = [t.source for t in plan if t.alias_of == planned.name]
                    if tied:
                        problem = replace(problem, tensor=f"{problem.tensor} (and {', '.join(tied)}: one storage)")
                    problems.append(problem)  # with --allow-overflow: written all the same, and said
            if not problems or allow_overflow:
                if fmt == "bin" and not tensor.is_contiguous():
                    from weightdoctor.checkpoint.safetensors_format import require_memory

                    # A .bin's record is the tensor's bytes in row-major order: a strided tensor (a transpose saved
                    # so) is copied whole, beside the view read (a safetensors output is written a piece at a
                    # time); the copy died in torch's allocator under `ulimit -d`, "unexpected RuntimeError".
                    require_memory(checkpoint.file_path(planned.source_file), f"tensor {planned.source!r}",
                                   planned.nbytes, "; a .safetensors output is written without that copy",
                                   done="is strided (a view saved so) and copied whole in memory to be written: "
                                        "nothing was written")
                writer.write(slot.name, tensor)
                advance(planned.nbytes)
            # Otherwise every remaining tensor is still checked (so that all are named), but not written.
            if planned.source_file in mapped_files:
                release_file_pages(source)
            del tensor, source
            release_heap()
        # Once every value is read (each file once: a stat per tensor of 92k was a cost for nothing more).
        for relpath in dict.fromkeys(t.source_file for t in plan):
            checkpoint.check_unchanged(relpath)
        if problems and not allow_overflow:
            raise _overflow_error(problems, checkpoint)
    return writer.digests


def _overflow_error(problems: list[CastProblem], checkpoint: Checkpoint) -> CastOverflow:
    # Tensors --keep-fp32 matched are cast to float32, the others to --dtype: the message is about --dtype's
    # target, and a problem of the other says its own.
    targets = [p.target for p in problems]
    target = next((t for t in targets if t != "float32"), targets[0])
    short = {"float16": "fp16", "bfloat16": "bf16"}.get(target, target)
    names = "; ".join(p.describe() + ("" if p.target == target else f" in {p.target}") for p in problems[:5])
    if len(problems) > 5:
        names += f"; and {len(problems) - 5} more"
    # Keeping in float32 saves only what float32 holds: not offered when float32 is what lost the values.
    keep = "keep them with --keep-fp32 REGEX, " if any(t != "float32" for t in targets) else ""
    from weightdoctor.paths import shell_word

    # Quoted and with the --revision read, as pasted: `check-dtype my model` read a folder 'my' and failed.
    check = f"weightdoctor check-dtype {shell_word(checkpoint.source, argument=True)} --target {short}" + (
        f" --revision {shell_word(checkpoint.revision)}" if checkpoint.revision else "")
    return CastOverflow(
        f"casting to {target} would lose values in {counted(len(problems), 'tensor')}: {names}. Nothing was written. "
        f"See `{check}`, {keep}or pass --allow-overflow",
        path=str(checkpoint.path),
    )


def digest_range(path: Path, start: int, length: int, chunk: int = 8 << 20) -> str:
    """sha256 of `length` bytes of a file from `start`, read in chunks into one reused buffer."""
    import hashlib
    import os

    digest = hashlib.sha256()
    buffer = bytearray(min(chunk, max(length, 1)))
    view = memoryview(buffer)
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < length:
            got = os.preadv(fd, [view[: min(len(buffer), length - done)]], start + done)
            if got == 0:
                raise OutputError("verification failed: the file ends early", path=str(path))
            digest.update(view[:got])
            done += got
    finally:
        os.close(fd)
    return digest.hexdigest()


def byte_sources(
    checkpoint: Checkpoint, selection: TensorSelection, fmt: str = "safetensors"
) -> dict[str, ByteRange] | None:
    """Each output tensor's bytes in the source, when the whole output can be written by copying bytes:
    no tensor is cast and each lies in one run of its file (safetensors, regular torch zip checkpoints).
    An alias (bin output) has no bytes of its own: it has no entry, and the tensor it aliases has one.
    None otherwise: the tensors then go through torch one at a time."""
    from weightdoctor.writers.bin_copy import can_write
    from weightdoctor.writers.byte_copy import ByteRange

    if not BYTE_COPY:
        return None
    sources: dict[str, ByteRange] = {}
    identities: dict[str, tuple[int, int, int, int] | None] = {}
    for planned in selection.tensors:
        if planned.alias_of is not None:
            if fmt != "bin":
                return None
            continue
        if planned.dtype != planned.source_dtype or (fmt == "bin" and not can_write(planned.dtype)):
            return None
        found = checkpoint.byte_range(planned.source)
        if found is None or found[2] != planned.nbytes:
            return None
        if planned.source_file not in identities:
            identities[planned.source_file] = checkpoint.structure_identity(planned.source_file)
        sources[planned.name] = ByteRange(*found, identity=identities[planned.source_file])
    return sources


def _open_written(path: Path, expected: dict[str, tuple[str, tuple[int, ...], str | None]]) -> Checkpoint:
    """Open a written output through the shared reader and check its names, dtypes and shapes."""
    from weightdoctor.checkpoint import open_checkpoint

    try:
        written = open_checkpoint(path)
    except WeightDoctorError as exc:
        raise OutputError(f"the written output does not read back: {exc.message}", path=str(path)) from exc
    names = {t.name for t in written.tensors}
    missing = sorted(set(expected) - names)
    extra = sorted(names - set(expected))
    if missing or extra:
        raise OutputError(f"verification failed: missing {missing[:3]}, unexpected {extra[:3]}", path=str(path))
    for info in written.tensors:
        dtype, shape, _ = expected[info.name]
        if info.dtype != dtype or torch_shape(info.shape, info.dtype) != shape:
            raise OutputError(
                f"verification failed: {info.name!r} reads back as {info.dtype}{list(info.shape)}, "
                f"expected {dtype}{list(shape)}",
                path=str(path),
            )
    return written


def verify_output(path: Path, expected: dict[str, tuple[str, tuple[int, ...], str | None]]) -> int:
    """Re-read an output (file or folder) through the shared reader and compare every tensor.

    The reader parses and validates the headers (and the index); each tensor's bytes are then re-read
    from disk (safetensors: the byte range its header gives, in chunks; pickles: the tensor torch loads)
    and hashed, two tensors at a time.

    `expected` maps output name -> (dtype, shape, sha256 of the bytes meant to be written); a None
    digest means the bytes were already compared with the source as they were copied
    (`writers.byte_copy`): only names, dtypes and shapes are checked then.
    Returns the number of tensors whose bytes were compared here.

    Raises:
        OutputError: a tensor is missing, extra, of another dtype or shape, or its bytes differ.
    """
    import struct

    from weightdoctor.writers.memory import release_file_pages
    from weightdoctor.writers.safetensors_writer import hash_pool, tensor_digest

    with _open_written(path, expected) as written:
        to_hash = [info for info in written.tensors if expected[info.name][2] is not None]
        if not to_hash:
            return 0
        data_start: dict[str, int] = {}
        for item in written.weight_files:
            if item.format == "safetensors":
                with open(item.path, "rb") as handle:
                    data_start[item.relpath] = 8 + struct.unpack("<Q", handle.read(8))[0]

        def digest(info: TensorInfo) -> str:
            if info.file in data_start and info.data_offsets is not None:
                begin, end = info.data_offsets
                return digest_range(written.file_path(info.file), data_start[info.file] + begin, end - begin)
            tensor = written.load_tensor(info.name)
            try:
                return tensor_digest(tensor)
            finally:
                release_file_pages(tensor)

        for info, got in zip(to_hash, hash_pool().map(digest, to_hash), strict=True):
            if got != expected[info.name][2]:
                raise OutputError(f"verification failed: the bytes of {info.name!r} differ from the source", str(path))
    return len(to_hash)


def copy_side_file(source: Path, target: Path) -> None:
    """Copy a side file as `shutil.copyfile` does, except that the holes of a sparse file stay holes (as `cp`
    keeps them): a model folder's `README.md` of 1 TB that takes no disk (`truncate -s 1T`) was written out in
    full, a terabyte of zeros, before the copy could end.

    Raises:
        OSError: reading or writing fails.
    """
    from weightdoctor.writers.byte_copy import copy_range

    with open(source, "rb") as src, open(target, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                data = os.lseek(src.fileno(), offset, os.SEEK_DATA)
                end = os.lseek(src.fileno(), data, os.SEEK_HOLE)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break  # nothing but a hole from `offset` on
                if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                data, end = offset, size  # a file system that does not say where its holes are
            try:
                copy_range(src.fileno(), dst.fileno(), data, data, min(end, size) - data)
            except WeightDoctorError as exc:  # cut short while copied
                exc.path = exc.path or str(source)
                raise
            offset = end
        os.ftruncate(dst.fileno(), size)


def write_index(path: Path, files: list[OutputFile], metadata: dict[str, object]) -> None:
    """Write a Hugging Face index (`weight_map` sorted, as transformers writes it)."""
    weight_map = {name: f.filename for f in files for name in f.tensors}
    content = json.dumps({"metadata": metadata, "weight_map": weight_map}, indent=2, sort_keys=True) + "\n"
    path.write_text(content, encoding="utf-8")


def bytes_to_write(files: list[OutputFile], copy_files: list[SideFile]) -> int:
    """The bytes an output set takes on disk at the least: its tensors' data, written in full whatever holes the
    input has (a sparse input of 1 TB that takes no disk is 1 TB written), and the side files copied (their
    allocated blocks alone: `copy_side_file` keeps a sparse file's holes).

    Example:
        >>> bytes_to_write([OutputFile("model.safetensors", ["w"], 4096)], [SideFile(Path("c"), "c.json", b"{}")])
        4098
    """
    total = sum(item.nbytes for item in files)
    for side in copy_files:
        if side.content is not None:
            total += len(side.content)
            continue
        try:
            found = os.stat(side.path)
        except OSError:
            continue  # its copy fails, and says so
        total += min(found.st_size, found.st_blocks * 512)
    return total


# What a weight file holds beside each tensor's data, at the least: its name and a few bytes of record (a safetensors
# header entry takes 50 bytes and the name; a torch zip a record, a pickle entry and the name); and its header's size.
_RECORD_BYTES = 24
_HEADER_BYTES = 8


def bytes_on_disk(files: list[OutputFile], copy_files: list[SideFile], block: int) -> int:
    """The bytes an output set takes on a file system of `block`-byte blocks, at the least: `bytes_to_write`'s,
    with each file's header records (a lower bound) and each file rounded up to whole blocks. On a small tmpfs a
    folder of nine 2-byte side files takes nine pages of 4 KiB, and a cast whose data was exactly the free space did
    not fit its header: the dry run said both would go ahead, and the write failed with "no space left".

    Example:
        >>> bytes_on_disk([OutputFile("model.safetensors", ["w"], 4096)], [SideFile(Path("c"), "c.json", b"{}")], 4096)
        12288
    """
    def whole_blocks(size: int) -> int:
        return -(-size // max(block, 1)) * max(block, 1)

    total = sum(whole_blocks(item.nbytes + _HEADER_BYTES + sum(_RECORD_BYTES + len(name.encode("utf-8", "replace"))
                                                                 for name in item.tensors)) for item in files)
    for side in copy_files:
        if side.content is not None:
            total += whole_blocks(len(side.content))
            continue
        try:
            found = os.stat(side.path)
        except OSError:
            continue  # its copy fails, and says so
        total += whole_blocks(min(found.st_size, found.st_blocks * 512))
    return total


def disk_shortfall(dest: Path, needed: int, *, files: list[OutputFile] | None = None,
                   copy_files: list[SideFile] | None = None) -> str | None:
    """Words saying that the file system an output is written to has less free space than `needed` bytes, or None
    (enough, or the free space is unknown). The output is written beside `dest` (a temporary sibling file, or a
    staging sibling folder) and takes its space before the old output, if any, is removed.

    Example:
        >>> disk_shortfall(Path("/out/model.safetensors"), 0) is None
        True
    """
    from weightdoctor.units import format_bytes
    from weightdoctor.writers.atomic import first_existing, named, shown_folder

    # `-o a/b/out`: the first folder that exists is where the rest is made (`-o link/../out`: beside the link's
    # target, whose disk was not the one measured).
    folder = shown_folder(first_existing(named(dest).parent))
    try:
        free = shutil.disk_usage(folder).free
        block = os.statvfs(folder).f_frsize if files is not None or copy_files is not None else 1
    except OSError:
        return None
    on_disk = bytes_on_disk(files or [], copy_files or [], block) if block > 1 else 0
    if max(needed, on_disk) <= free:
        return None
    # The data alone fits: the headers and the file system's blocks are what does not (said, or the figures read as
    # if they fit).
    blocks = (f", {on_disk:,} bytes with its headers and the file system's blocks of {block:,} bytes,"
              if needed <= free else "")
    return (f"not enough free disk space: the output needs at least {format_bytes(needed)} ({needed:,} bytes)"
            f"{blocks} and {folder} has {format_bytes(free)} ({free:,} bytes) free")


def write_outputs(
    checkpoint: Checkpoint,
    selection: TensorSelection,
    files: list[OutputFile],
    *,
    dest: Path,
    fmt: str,
    single_file: bool,
    index_name: str | None,
    metadata: dict[str, str],
    copy_files: list[SideFile],
    force: bool = False,
    verify: bool = True,
    allow_overflow: bool = False,
    advance: Callable[[int], None] = lambda n: None,
) -> WriteResult:
    """Write, verify and commit an output set (one file, or a folder of shards + index + side files).

    A single file is written to a temp sibling and renamed; a folder is built in a staging sibling (the
    index written last) and swapped in whole. Earlier weight files in the destination are deleted only
    after the swap; its other files are kept. On any error or Ctrl-C nothing half-written remains.

    Raises:
        CastOverflow: a cast would lose values (unless `allow_overflow`); nothing is written.
        OutputError: the destination exists (without `force`), cannot be written, fails verification, or its
            file system has less free space than the output takes (`disk_shortfall`): nothing is written.
    """
    from weightdoctor.writers import hooks
    from weightdoctor.writers.atomic import COMMITTED, StagingDir, atomic_file, output_error

    # Before anything is written: a write larger than the disk's free space failed late, after filling it (2 GB of a
    # 1.1 TB output written onto a disk of 73 GB free, then "no space left on the device").
    # (A single file's missing folder is refused by `atomic_file` first: "create it first", which is what to do.)
    refuse_unreadable_tensors(checkpoint, selection)  # a tensor with no values is said as such, not as disk space
    if (shortfall := _shortfall(dest, files, copy_files, single_file)) is not None:
        raise OutputError(f"{shortfall}: nothing was written", path=str(dest))
    COMMITTED.clear()  # what this write commits (see `report_failure` on a late Ctrl-C)
    started = time.perf_counter()
    by_name = {t.name: t for t in selection.tensors}
    problems: list[CastProblem] = []
    counter = [0]
    file_metadata = {"format": "pt", **metadata} if fmt == "safetensors" else None
    digests: dict[str, str] = {}
    result = WriteResult(files=[], verified=False, tensors_verified=0, seconds=0.0)
    # Nothing cast and every tensor one run of bytes: copied in the kernel and compared while copying.
    sources = byte_sources(checkpoint, selection, fmt)
    compared = [0]
    result.method = "copy" if sources is not None else "torch"

    def next_tensor(name: str) -> None:
        hooks.reached(f"tensor-{counter[0]}")
        counter[0] += 1

    def write_file(path: Path, out: OutputFile) -> None:
        from weightdoctor.writers.bin_copy import write_bin_by_copy
        from weightdoctor.writers.byte_copy import write_safetensors_by_copy
        from weightdoctor.writers.safetensors_writer import TensorSlot

        plan = [by_name[n] for n in out.tensors]
        try:
            if sources is not None and fmt == "bin":
                compared[0] += write_bin_by_copy(
                    path, _slots(plan, fmt), sources, verify=verify, on_tensor=next_tensor, advance=advance
                )
            elif sources is not None:
                compared[0] += write_safetensors_by_copy(
                    path, [TensorSlot(t.name, t.dtype, t.shape) for t in plan], sources, file_metadata,
                    verify=verify, on_tensor=next_tensor, advance=advance,
                )
            else:
                digests.update(
                    _write_one(checkpoint, path, plan, fmt, file_metadata, allow_overflow, problems, advance, counter)
                )
        except OSError as exc:
            raise output_error(exc, dest) from exc
        result.files.append({"filename": out.filename, "size_bytes": path.stat().st_size,
                             "num_tensors": len(out.tensors)})

    def verify_written(path: Path) -> int:
        expected = {t.name: (t.dtype, t.shape, digests.get(t.name) if sources is None else None)
                    for t in selection.tensors}
        return verify_output(path, expected) + compared[0]

    if single_file:
        with atomic_file(dest, replace=force) as tmp, _named_as_output(tmp, dest):
            write_file(tmp, files[0])
            hooks.reached("before-verify")
            if verify:
                result.tensors_verified = verify_written(tmp)
                result.verified = True
    else:
        written_sets = {weight_set(name) for name in [f.filename for f in files] + [index_name or ""]} - {None}

        def drop_old(name: str) -> bool:
            old = weight_set(name)
            if old in written_sets:
                return True
            # Another set than those written is one the user keeps: another variant of them (`model.safetensors`, the
            # fp32 weights, beside a new `model.fp16.safetensors`, as a bf16 variant is kept), or a base model's
            # `model.safetensors` beside a PEFT adapter written (both were deleted as plain transformers names).
            # Those names go only where what is written is named like no set a loader reads.
            if old is not None and written_sets:
                return False
            return bool(HF_WEIGHT_FILE.match(name))

        with StagingDir(dest, replace=force, drop_old=drop_old) as stage, _named_as_output(stage.path, dest):
            for out in files:
                write_file(stage.path / out.filename, out)
            try:
                for item in copy_files:
                    target = stage.path / item.relpath
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if item.content is not None:
                        target.write_bytes(item.content)
                    else:
                        copy_side_file(item.path, target)
                    result.copied.append(item.relpath)
                hooks.reached("before-index")
                if index_name is not None:
                    index_metadata: dict[str, object] = {d.name: d.kept for d in selection.dropped}
                    # The shards' "format" (pt, or the source's own) is theirs: save_pretrained's index has none.
                    index_metadata.update((k, v) for k, v in metadata.items() if k != "format")
                    # Last: a source file's own `total_size` / `total_parameters` record (or any carried one) never
                    # replaces them (a header's "5", a string, stood in the index for 180,000 parameters written).
                    index_metadata["total_size"] = selection.total_bytes
                    if not selection.model_buffers:
                        selection.model_buffers = model_buffer_names(checkpoint)
                    index_metadata["total_parameters"] = selection.total_parameters
                    write_index(stage.path / index_name, files, index_metadata)
            except OSError as exc:
                raise output_error(exc, dest) from exc
            hooks.reached("before-verify")
            if verify:
                result.tensors_verified = verify_written(stage.path)
                result.verified = True
            stage.commit()
            # Files of the earlier save that the new one does not have (deleted only now, after the swap).
            result.replaced = [n for n in stage.dropped if not (dest / n).exists()]
            result.carried_over = stage.carried
    result.lost = [p.describe() for p in problems]
    result.seconds = time.perf_counter() - started
    return result


@contextlib.contextmanager
def _named_as_output(staged: Path, dest: Path) -> Iterator[None]:
    """Have an error raised while writing or verifying under `staged` (the hidden temporary file or staging folder
    an output is built in) name the output asked for instead: `out/model-00001-of-00004.safetensors: verification
    failed`, not `.out.wdstage-16755-a921a5ef/model-00001-of-00004.safetensors`, a name that is gone once the error
    is read (the staging is removed, the earlier output left as it was).
    """
    try:
        yield
    except WeightDoctorError as exc:
        if exc.path is not None:
            path = Path(exc.path)
            if path == staged or staged in path.parents:
                exc.path = str(dest if path == staged else dest / path.relative_to(staged))
                if "nothing" not in exc.message:
                    exc.message += "; nothing was written"
        if str(staged) in exc.message:
            exc.message = exc.message.replace(str(staged), str(dest))
            exc.args = (exc.message, *exc.args[1:])
        raise


def weight_set(name: str) -> tuple[str, str | None] | None:
    """The weight set a file named `name` belongs to, as (stem, variant), or None for a name no loader reads as
    weights: the shards, single file and index of one save, in either format, are one set.

    An earlier save in a folder replaced with --force is dropped by it: diffusers' from_pretrained reads an index
    before the single file, so an old `diffusion_pytorch_model.safetensors.index.json` and its shards, kept beside a
    new `diffusion_pytorch_model.safetensors`, were what loaded (and what weightdoctor then read); transformers'
    reads `model.fp16.safetensors` before the fp16 index of new shards.

    Example:
        >>> weight_set("diffusion_pytorch_model-00001-of-00002.safetensors"), weight_set("pytorch_model.fp16.bin")
        (('diffusion_pytorch_model', None), ('model', 'fp16'))
        >>> weight_set("model.safetensors.index.fp16.json"), weight_set("README.md")
        (('model', 'fp16'), None)
    """
    match = _WEIGHT_SET_FILE.fullmatch(name)
    if match is None:
        return None
    variant = match["variant"] or match["shard_variant"] or match["index_variant"]
    return _SAME_SET.get(match["stem"], match["stem"]), variant


def check_not_input(checkpoint: Checkpoint, dest: Path) -> None:
    """Refuse an output that is, or would replace, any file of the input (even with --force).

    Raises:
        OutputError: `dest` is an input file, the input's folder, or a folder holding an input file.
    """
    from weightdoctor.writers.atomic import resolve_output

    target = expand_user(dest).absolute()
    resolved = resolve_output(target, str(dest))
    for item in checkpoint.files:
        # abspath, not absolute(): `shard ../src -o .` gave `/run/../src/model.safetensors`, whose lexical parents
        # hold `/run` (the output) and refused a folder the input is not in.
        for candidate in {Path(os.path.abspath(item.path)), item.path.resolve()}:
            if candidate in (target, resolved) or target in candidate.parents or resolved in candidate.parents:
                raise OutputError("output would overwrite the input; choose another path", path=str(dest))
    if checkpoint.path.is_dir() and checkpoint.path.resolve() in (target, resolved):
        raise OutputError("output is the input folder; choose another path", path=str(dest))
    _refuse_the_input_under_another_name(checkpoint, dest, target)
    from weightdoctor.writers.atomic import named, stale_siblings

    # What a killed run for this output left (`.model.safetensors.wdtmp-PID-TOKEN`, a `.out.wdstage-...` folder of
    # whole shards) is removed before writing: read as the input, to salvage it, it was deleted unread.
    inputs = {p for item in checkpoint.files for p in (item.path.absolute(), item.path.resolve())}
    for stale in stale_siblings(named(target)):
        for candidate in {stale.absolute(), stale.resolve()}:
            if any(candidate == p or candidate in p.parents for p in inputs):
                raise OutputError(f"the input {stale.name!r} is what an earlier, killed run for this output left, "
                                  "and would be removed before writing: rename it first", path=str(dest))


def hub_cache_output_note(dest: Path) -> str | None:
    """What to say of an output inside a Hugging Face Hub cache (a repo's `snapshots/<commit>/` or `blobs/`, under
    any cache folder), None elsewhere. A snapshot's files are links to its blobs, written by huggingface_hub:
    `from_pretrained("org/name")` reads a file written there as the repo's own, at that commit, and `hf cache`'s
    scan and delete do not know it.

    Example:
        >>> hub_cache_output_note(Path("/c/hub/models--org--m/snapshots/0a1b/model.safetensors")).split(":")[1][:36]
        " from_pretrained('org/m') would read"
        >>> hub_cache_output_note(Path("out/model.safetensors")) is None
        True
    """
    target = expand_user(dest).absolute()
    for folder in (target, *target.parents):
        parent = folder.parent
        if parent.name in ("snapshots", "blobs") and parent.parent.name.startswith(("models--", "datasets--",
                                                                                     "spaces--")):
            repo = parent.parent.name.split("--", 1)[1].replace("--", "/")
            return (f"{dest} is inside the Hugging Face Hub cache ({parent.parent}): from_pretrained({repo!r}) "
                    "would read what is written there as the repo's own files, and huggingface_hub's cache tools "
                    "(hf cache scan / delete) do not know them; write it outside the cache")
    return None


def refuse_names_too_long(dest: Path, names: list[str]) -> None:
    """Refuse a folder output whose file names, made from the source's (a shard's `-00001-of-00003` added to a
    dtype variant's, a `.pt` that becomes `.safetensors`), would pass the 255 bytes a name may have: the write
    failed late with "a name on the output's path is too long", of the output folder, whose name was not the one.

    Example:
        >>> refuse_names_too_long(Path("out"), ["model.safetensors"]) is None
        True

    Raises:
        OutputError: a name in `names` is longer than NAME_MAX; nothing is written.
    """
    # The limit of the file system the output goes to (eCryptfs takes 143 bytes, some network file systems fewer),
    # read at the nearest folder of its path that is there: the root's, asked before, is another file system's.
    folder = Path(os.path.abspath(expand_user(dest)))
    while not os.path.isdir(folder) and folder != folder.parent:
        folder = folder.parent
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    for name in names:
        size = len(os.fsencode(name))
        if size > name_max:
            raise OutputError(f"cannot write {clip_middle(name, 80)}: its name, made from the source's file name, "
                              f"would be {size:,} bytes long, past the limit of {name_max} bytes a file name may "
                              "have; give the source file a shorter name", path=str(dest))


def _refuse_the_input_under_another_name(checkpoint: Checkpoint, dest: Path, target: Path) -> None:
    """Refuse an output that is an input file or folder by device and inode, whatever its path: a bind mount of the
    input folder (or a hard link of an input file) passed the path comparison, and `--force` then put the output in
    the input's place (`convert model.safetensors -o /mnt/alias/model.safetensors --dtype fp16 --force` left no
    fp32 weights), or swapped the input folder out and deleted its weight files.

    Raises:
        OutputError: `dest` is an input file, the input folder, or a folder holding an input file.
    """
    try:
        taken = os.stat(target)
    except OSError:
        return  # nothing there yet (or nothing that can be looked at): it cannot be an input
    mine = (taken.st_dev, taken.st_ino)
    seen: set[Path] = set()  # the files of one folder share their parents: each is looked at once
    for item in checkpoint.files:
        path = item.path.resolve()
        for candidate in (path, *path.parents):
            if candidate in seen:
                break
            seen.add(candidate)
            try:
                found = os.stat(candidate)
            except OSError:
                continue
            if (found.st_dev, found.st_ino) == mine:
                raise OutputError("output would overwrite the input (the same file or folder under another path); "
                                  "choose another path", path=str(dest))


# diffusers' dtype variants (`diffusion_pytorch_model.fp16.safetensors`): the name says what the file holds.
_VARIANT = re.compile(r"(?P<stem>.+)\.(?:fp16|bf16|fp32)(?P<rest>(?:-\d+-of-\d+)?\.[A-Za-z]+)")
_VARIANT_OF_DTYPE = {"float16": ".fp16", "bfloat16": ".bf16"}


# open_clip's Hub and `local-dir:` loader looks for these two names only (open_clip/constants.py: HF_WEIGHTS_NAME,
# HF_SAFE_WEIGHTS_NAME); `open_clip_pytorch_model.safetensors` would be found by nothing.
OPEN_CLIP_NAMES = {"safetensors": "open_clip_model.safetensors", "bin": "open_clip_pytorch_model.bin"}


def default_output_name(source_file: str, fmt: str, dtype: str | None = None) -> str:
    """The output name of a converted weight file: `pytorch_model-00001-of-00002.bin` ->
    `model-00001-of-00002.safetensors`, `model.safetensors` -> `pytorch_model.bin`, `x.pt` -> `x.safetensors`,
    open_clip's `open_clip_pytorch_model.bin` <-> `open_clip_model.safetensors`.
    Cast to `dtype`, a diffusers dtype variant follows it: `x.fp16.safetensors` -> `x.bf16.safetensors`
    (bfloat16), `x.safetensors` (float32 and others: the plain name diffusers reads without a variant)."""
    name = Path(source_file).name
    if dtype is not None and (variant := _VARIANT.fullmatch(name)):
        name = variant["stem"] + _VARIANT_OF_DTYPE.get(dtype, "") + variant["rest"]
    # transformers' names, a variant's too (`pytorch_model.fp16.bin` <-> `model.fp16.safetensors`, which
    # from_pretrained(variant="fp16") reads); diffusers keeps one stem for both formats.
    if name in OPEN_CLIP_NAMES.values():
        return OPEN_CLIP_NAMES[fmt]
    if fmt == "safetensors":
        match = re.fullmatch(r"pytorch_model((?:\.[^.]+)?(?:-\d+-of-\d+)?)\.bin", name)
        if match:
            return f"model{match.group(1)}.safetensors"
        return Path(name).stem + ".safetensors"
    match = re.fullmatch(r"model((?:\.[^.]+)?(?:-\d+-of-\d+)?)\.safetensors", name)
    if match:
        return f"pytorch_model{match.group(1)}.bin"
    return Path(name).stem + ".bin"


_INDEX_VARIANT = re.compile(r"(?P<stem>.+)\.(?P<ext>safetensors|bin)\.index\.(?P<variant>[^.]+)\.json")


def single_file_of_index(index_name: str) -> str:
    """The single weight file an index stands beside, which loaders read instead of it when both are there.

    Example:
        >>> single_file_of_index("model.safetensors.index.json")
        'model.safetensors'
        >>> single_file_of_index("model.safetensors.index.fp16.json")
        'model.fp16.safetensors'
    """
    if match := _INDEX_VARIANT.fullmatch(index_name):
        return f"{match['stem']}.{match['variant']}.{match['ext']}"
    return index_name.removesuffix(".index.json")


def default_index_name(source_index: str, fmt: str, dtype: str | None = None) -> str:
    """The output name of a converted index: `pytorch_model.bin.index.json` -> `model.safetensors.index.json`.
    A sharded variant's index keeps its variant where transformers and diffusers look for it
    (`model.safetensors.index.fp16.json`), renamed by a cast as its shards are."""
    name = Path(source_index).name
    sharded_variant = _INDEX_VARIANT.fullmatch(name)
    if sharded_variant is None:
        return default_output_name(name.removesuffix(".index.json"), fmt) + ".index.json"
    plain = default_output_name(f"{sharded_variant['stem']}.{sharded_variant['ext']}", fmt)
    variant = sharded_variant["variant"]
    if dtype is not None and variant in ("fp16", "bf16", "fp32"):
        variant = _VARIANT_OF_DTYPE.get(dtype, "").lstrip(".")
    return f"{plain}.index.{variant}.json" if variant else f"{plain}.index.json"


_KNOWN_VARIANT = re.compile(r"(?:model|pytorch_model|diffusion_pytorch_model)(?:\.(?P<file>[^.-]+)(?:-\d+-of-\d+)?"
                            r"\.(?:safetensors|bin)|\.(?:safetensors|bin)\.index\.(?P<index>[^.]+)\.json)")


def output_variant(source_name: str, dtype: str | None = None) -> str | None:
    """The variant that output named like `source_name` (a transformers or diffusers weight file or index) keeps:
    its own (`model.fp16-00001-of-00002.safetensors`, `model.safetensors.index.fp16.json` -> "fp16"), renamed by a
    cast as `default_output_name` renames it (None for a cast to fp32); None for a plain name.

    Example:
        >>> output_variant("model.safetensors.index.fp16.json"), output_variant("model.fp16.bin", "bfloat16")
        ('fp16', 'bf16')
    """
    match = _KNOWN_VARIANT.fullmatch(Path(source_name).name)
    variant = match and (match["file"] or match["index"])
    if variant and dtype is not None and variant in ("fp16", "bf16", "fp32"):
        variant = _VARIANT_OF_DTYPE.get(dtype, "").lstrip(".")
    return variant or None


class PlannedOutput(Protocol):
    """What `convert` and `shard` plans share: where and how to write a selection of tensors."""

    output: str
    format: str
    index: str | None
    metadata: dict[str, str]
    _selection: TensorSelection | None
    _copy_paths: list[SideFile]


def _shortfall(dest: Path, files: list[OutputFile], copy_files: list[SideFile], single_file: bool) -> str | None:
    """`disk_shortfall` for the output at `dest` (None for a single file whose folder does not exist: the write
    refuses that first, with "create it first")."""
    from weightdoctor.writers.atomic import named

    if single_file and not os.path.isdir(named(dest).parent):
        return None
    return disk_shortfall(dest, bytes_to_write(files, copy_files), files=files, copy_files=copy_files)


def refuse_unreadable_tensors(checkpoint: Checkpoint, selection: TensorSelection) -> None:
    """Refuse, before anything is written, a tensor of `selection` with no values to read (a meta tensor, a view
    whose strides repeat far more values than its storage holds), as `write_outputs` does and `--dry-run` foresees.

    Raises:
        CorruptCheckpoint: naming the file and the tensor.
    """
    for tensor in selection.tensors:
        checkpoint.refuse_unreadable(tensor.source)


def dry_run_refusal(plan: PlannedOutput, files: list[OutputFile], *, single_file: bool, force: bool,
                    checkpoint: Checkpoint | None = None) -> str | None:
    """Why writing `plan` would be refused before anything is written, as the one line the write would print
    (`PATH: why`), or None when it would go ahead: what `--dry-run` reports in place of writing (too little disk
    space; an output that exists without --force, or that no write replaces; a folder that is missing or not
    writable). What only the write itself meets (a cast that overflows, a disk filled meanwhile) is not foreseen.

    Raises:
        CorruptCheckpoint: given `checkpoint`, a planned tensor of it has no values to read: the write refuses
            that input (exit 2) before anything else, and so does the dry run, with the same line.
    """
    from weightdoctor.writers.atomic import write_refusal

    if checkpoint is not None and plan._selection is not None:
        # `convert meta.pt --dry-run` said "would convert" (exit 0) where the write is refused as bad input.
        refuse_unreadable_tensors(checkpoint, plan._selection)
    dest = Path(plan.output)
    if (shortfall := _shortfall(dest, files, plan._copy_paths, single_file)) is not None:
        return f"{dest}: {shortfall}: nothing would be written"
    return write_refusal(dest, folder=not single_file, replace=force)


def write_plan(
    checkpoint: Checkpoint,
    plan: PlannedOutput,
    files: list[OutputFile],
    *,
    single_file: bool,
    force: bool = False,
    verify: bool = True,
    allow_overflow: bool = False,
    advance: Callable[[int], None] = lambda n: None,
) -> WriteResult:
    """`write_outputs` for a convert or shard plan."""
    assert plan._selection is not None
    return write_outputs(
        checkpoint,
        plan._selection,
        files,
        dest=Path(plan.output),
        fmt=plan.format,
        single_file=single_file,
        index_name=plan.index,
        metadata=plan.metadata,  # its "format": pt, or the source's own (convert.source_metadata)
        copy_files=plan._copy_paths,
        force=force,
        verify=verify,
        allow_overflow=allow_overflow,
        advance=advance,
    )
