"""Reading pickle-based PyTorch files (`.bin`, `.pt`, `.pth`, `.ckpt`): zip and legacy formats.

Every pickle is first scanned statically (`weightdoctor.security`): a dangerous or unknown global, or a
pickle that cannot be parsed, stops here with `UnsafePickle` and nothing is unpickled. Only then is
the structure read: a regular zip archive by `pickle_static`, without torch (stand-ins that know each
tensor's dtype, shape and bytes; values memory-mapped when asked for); anything that reader does not
model by `torch.load(weights_only=True, mmap=True)`. Either way listing tensors copies no data. The
legacy (pre-1.6, non-zip) format cannot be memory-mapped and is read whole. Training checkpoints that
nest the weights are searched for their state dict.
"""

from __future__ import annotations

import collections
import itertools
import pickle
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightdoctor.checkpoint.inert import InertObject, stand_in
from weightdoctor.checkpoint.model import TensorInfo
from weightdoctor.checkpoint.pickle_static import NeedsTorch, StaticTensor, load_static, mapped_stand_ins
from weightdoctor.dtypes import canonical_dtype, values_shape
from weightdoctor.errors import (
    CorruptCheckpoint,
    UnsafePickle,
    UnsupportedEnvironment,
    UnsupportedFormat,
    UsageError,
    clip_middle,
    clip_words,
)
from weightdoctor.gcpause import gc_paused
from weightdoctor.paths import shell_word
from weightdoctor.wording import counted, plural

if TYPE_CHECKING:
    import torch

    from weightdoctor.security import ScanProblem, ScanReport

# The first torch whose weights_only loader has no known escape (see docs/security.md).
MIN_TORCH = (2, 10)

ZIP_MAGIC = b"PK\x03\x04"
# Keys under which training scripts commonly store the weights, most specific first. BasicSR (Real-ESRGAN, GFPGAN,
# SwinIR, CodeFormer) saves `{"params": ..., "params_ema": ...}` and its inference loads `params_ema` when present.
STATE_DICT_KEYS = (
    "state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params_ema", "params",
    "model_ema", "ema", "ema_state_dict", "generator", "student", "teacher",
)
# Nested entries that hold tensors but are never the model's weights.
NOT_WEIGHTS = re.compile(r"optim|scheduler|scaler|sched|rng|lr_", re.IGNORECASE)
# A view may repeat values of its storage (stride 0: `torch.ones(1).expand(n)` saves one value), but reading its
# values materializes every one: beyond this many bytes more than the file stores for it, it is refused, so that a
# 1 KB file cannot make --stats, check-dtype or convert allocate or walk gigabytes.
MAX_EXPANDED_BYTES = 256 * 2**20


@dataclass
class PickleContents:
    """What a pickle-based file holds once its state dict is found."""

    state_dict: dict[str, Any]  # torch tensors, or `StaticTensor` stand-ins when read without torch
    nested_key: str | None
    other_entries: list[str] = field(default_factory=list)
    skipped_entries: list[str] = field(default_factory=list)
    # The string keys of those entries, described (`version` -> "int: 2"): from_pretrained reads them as keys.
    non_tensor_keys: dict[str, str] = field(default_factory=dict)
    security: ScanReport | None = None
    notes: list[str] = field(default_factory=list)  # how the file was read, when that is worth saying
    # Tensors under a module's `_extra_state` name outside the state dict read (`model1.<...>._extra_state` of a
    # virtual-pipeline save, an EMA beside `model`), by their path: loaded too, so TE unpickles them too.
    extra_states_beside: dict[str, Any] = field(default_factory=dict)
    # (st_dev, st_ino, st_size, st_mtime_ns) of a torch zip that torch.load(mmap=True) read (its tensors view its
    # map of the whole file), when it mapped it; None where the torch-free reader or a whole read gave the values.
    mapped_identity: tuple[int, int, int, int] | None = None
    # fairscale FSDP's local_metadata_dict saved beside flat parameters (metaseq's `shard_metadata`, fairseq's
    # `fsdp_metadata`): each parameter flattened, by its full name, with its shape before flattening.
    fsdp_unflattened: dict[str, tuple[int, ...]] | None = None


def fsdp_unflattened_shapes(obj: Any) -> dict[str, tuple[int, ...]] | None:
    """The parameters a fairscale FSDP shard's flat parameters hold, by full name, with their shapes before
    flattening: from the local_metadata_dict metaseq's Trainer saves under `shard_metadata` and fairseq's under
    `fsdp_metadata` (`param_metadata`: per wrapped module its `fsdp_path` and, per flat parameter, the `names` and
    `shapes` of what it flattens). None where the file holds no such metadata, or it is not laid out so.

    Example:
        >>> fsdp_unflattened_shapes({"shard_metadata": {"param_metadata": [{"fsdp_path": "decoder.layers.0",
        ...     "params": {"flat_param_0": {"names": ["fc1.weight"], "shapes": [(8, 4)], "numels": [32]}}}]}})
        {'decoder.layers.0.fc1.weight': (8, 4)}
    """
    if not isinstance(obj, Mapping):
        return None
    metadata = next((obj[key] for key in ("shard_metadata", "fsdp_metadata") if isinstance(obj.get(key), Mapping)),
                    None)
    modules = metadata.get("param_metadata") if metadata is not None else None
    if not isinstance(modules, list):
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for module in modules:
        if not isinstance(module, Mapping) or not isinstance(module.get("params"), Mapping):
            return None
        path = module.get("fsdp_path") or ""
        for flat in module["params"].values():
            names, sizes = (flat.get("names"), flat.get("shapes")) if isinstance(flat, Mapping) else (None, None)
            if not isinstance(names, list) or not isinstance(sizes, list) or len(names) != len(sizes):
                return None
            for name, size in zip(names, sizes, strict=True):
                try:
                    shape = tuple(int(extent) for extent in size)
                except (TypeError, ValueError):
                    return None
                shapes[f"{path}.{name}" if path and isinstance(path, str) else str(name)] = shape
    return shapes or None


def detect_pickle_format(prefix: bytes) -> str | None:
    """Return "pytorch-zip", "pytorch-legacy" or None from a file's first bytes."""
    if prefix.startswith(ZIP_MAGIC):
        return "pytorch-zip"
    # Legacy torch.save output starts with a pickled magic number, protocol 2.
    if prefix[:1] == b"\x80" and prefix[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pytorch-legacy"
    return None


# The most characters of one name a note quotes from the file (an entry's key, a module path).
_NOTE_NAME_CHARS = 200


def _lightning_weight_averaging(obj: Any) -> bool:
    """Whether `obj` is a Lightning checkpoint saved with its WeightAveraging callback: `current_model_state` (the
    trained weights) and `averaging_state` beside `state_dict` (the average) and `pytorch-lightning_version`.

    Example:
        >>> _lightning_weight_averaging({"pytorch-lightning_version": "2.5.2", "state_dict": {}, "averaging_state": {},
        ...                              "current_model_state": {}})
        True
    """
    return isinstance(obj, Mapping) and "pytorch-lightning_version" in obj and all(
        isinstance(obj.get(name), Mapping) for name in ("state_dict", "current_model_state", "averaging_state"))


def _mmengine_swapped_ema(obj: Any) -> bool:
    """Whether `obj` is an MMEngine checkpoint (MMDetection 3, MMPretrain, MMPose 1, ...: `meta`, `state_dict`,
    `message_hub`) saved with EMAHook: its before_save_checkpoint writes `ema_state_dict` (the EMA model's
    state_dict: `steps`, then `module.<name>`) and then swaps every `module.<name>` value with `state_dict[<name>]`,
    "so that we can directly load the averaged model weights for deployment". `state_dict` then holds the averaged
    weights and `ema_state_dict`, despite its name, the weights as trained.

    Example:
        >>> _mmengine_swapped_ema({"meta": {}, "state_dict": {"w": 1}, "ema_state_dict": {"steps": 2, "module.w": 3}})
        True
    """
    if not isinstance(obj, Mapping) or "meta" not in obj:
        return False
    state, ema = obj.get("state_dict"), obj.get("ema_state_dict")
    if not isinstance(state, Mapping) or not isinstance(ema, Mapping) or "steps" not in ema:
        return False
    swapped = [name for name in ema if name != "steps"]
    return bool(swapped) and all(isinstance(name, str) and name.startswith("module.") and name[7:] in state
                                 for name in swapped)


def _describe(value: Any) -> str:
    if isinstance(value, InertObject):
        return f"{type(value).__module__}.{type(value).__qualname__}, read as inert data"
    if isinstance(value, Mapping):
        tensors = sum(map(is_tensor, value.values()))
        if tensors and _is_state_dict(value):
            return f"a state dict of {counted(tensors, 'tensor', grouped=False)}: pick it with --key"
        return f"dict, {counted(len(value), 'entry', 'entries', grouped=False)}"
    if isinstance(value, (list, tuple, set, frozenset)):
        return f"{type(value).__name__}, {counted(len(value), 'item', grouped=False)}"
    if isinstance(value, (str, bytes, bytearray)):
        # Never the repr of a long one: a pickle can hold a string or buffer of gigabytes.
        if len(value) <= 40:
            return f"{type(value).__name__}: {value!r}"
        return f"{type(value).__name__} of {counted(len(value), 'character' if isinstance(value, str) else 'byte')}"
    if is_tensor(value):
        return f"tensor {list(value.shape)} {canonical_dtype(str(value.dtype))}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{type(value).__module__.split('.')[0]} array {list(value.shape)} {value.dtype}"
    nbytes = getattr(value, "nbytes", None)
    if callable(nbytes) and type(value).__name__.endswith("Storage"):
        return f"{type(value).__name__} of {counted(nbytes(), 'byte')}"  # a storage's repr lists every element
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"int of {value.bit_length():,} bits"  # repr() refuses past 4,300 digits; too long to show anyway
    try:
        text = repr(value)
    except Exception:  # a value the pickle made whose repr fails: its type says enough
        return type(value).__name__
    return f"{type(value).__name__}: {text[:40]}" if len(text) <= 40 else type(value).__name__


def is_tensor(value: Any) -> bool:
    """A torch tensor, or the stand-in the torch-free reader gives (torch is not imported for this)."""
    if isinstance(value, StaticTensor):
        return True
    torch = sys.modules.get("torch")  # no torch imported: no torch tensor can exist
    return torch is not None and isinstance(value, torch.Tensor)


def as_tensor(value: Any, name: str = "") -> torch.Tensor:
    """The torch tensor of a state-dict value (a stand-in is mapped from the file on first use).

    Raises:
        CorruptCheckpoint: the tensor has no values to read (saved on the meta device), or its strides repeat
            far more values than its storage holds (`MAX_EXPANDED_BYTES`).
    """
    refuse_unreadable(value, name)
    return value.to_torch() if isinstance(value, StaticTensor) else value


def refuse_unreadable(value: Any, name: str = "") -> None:
    """Raise what `as_tensor` raises for this value, without reading it: a caller that knows a tensor's counts
    from its dtype alone (check-dtype's exact casts) still refuses what a read would.

    Raises:
        CorruptCheckpoint: as `as_tensor`.
    """
    if isinstance(value, StaticTensor):
        # Checked where values are read (--stats, --values, check-dtype, convert, shard), not where the
        # structure is listed: inspect and plan-devices describe such a view as torch.load would.
        _refuse_expanded(name, value.numel * value.itemsize, value.storage.nbytes)
        return
    if value.is_meta:
        raise CorruptCheckpoint(f"tensor {name!r} is on the meta device: the file holds its shape and dtype but no "
                                "values (saved from a model that was never materialised)")
    if value.is_quantized:
        # Listed as its integer values (`tensor_infos`), never read as them: written out or cast, they would lose
        # the scale and zero point that give them meaning.
        raise UnsupportedFormat(f"tensor {name!r} is a {str(value.dtype).removeprefix('torch.')} quantized tensor "
                                f"(torch.ao.quantization): its values are not read here (save it with "
                                f"{_DEQUANTIZE_ALL})")
    _refuse_expanded(name, value.numel() * value.element_size(), value.untyped_storage().nbytes())


def value_layout(value: Any) -> tuple[str, tuple[int, ...], int]:
    """(dtype name, shape, bytes) of a tensor or its torch-free stand-in, torch's `torch.` prefix left out."""
    if isinstance(value, StaticTensor):
        return value.dtype, tuple(value.shape), value.numel * value.itemsize
    return str(value.dtype).removeprefix("torch."), tuple(value.shape), value.numel() * value.element_size()


def byte_range(value: Any) -> tuple[int, int] | None:
    """(file offset, length) of a state-dict value's bytes when read without torch and contiguous."""
    return value.byte_range() if isinstance(value, StaticTensor) else None


def _tensor_share(mapping: Mapping[Any, Any]) -> float:
    """The share of tensors among a mapping's values, its modules' `_extra_state` entries left out of the count:
    nn.Module.get_extra_state puts one beside each module's tensors, whatever the module returns (TransformerEngine's
    FP8 state, an io.BytesIO or None, in every Linear of a Megatron-LM / NeMo model: a third of the entries)."""
    if not mapping:
        return 0.0
    count = sum(is_tensor(v) for v in mapping.values())
    extra = sum(type(k) is str and k.endswith("_extra_state") and (k == "_extra_state" or k.endswith("._extra_state"))
                and not is_tensor(v) for k, v in mapping.items())
    return count / (len(mapping) - extra) if len(mapping) > extra else 0.0


def _is_state_dict(value: Any) -> bool:
    # A few non-tensor values (`_extra_state`, version ints) are tolerated.
    return isinstance(value, Mapping) and _tensor_share(value) >= 0.9


# Where a file of training state leaves the weights, said of no folder in particular (see `_weights_beside`).
_WHERE_THE_WEIGHTS_ARE = (
    "A training checkpoint keeps the model's weights beside it (Trainer: model.safetensors or pytorch_model.bin in the "
    "same checkpoint-N folder; torchtune: its hf_model_*, meta_model_* or torchtune_model_* files, or the epoch_N/ "
    "folder): point weightdoctor at that file or at the folder")


def _fairseq2_state_beside(path: Path) -> str | None:
    from weightdoctor.checkpoint.foreign import fairseq2_state_beside

    return fairseq2_state_beside(path)


def _weights_beside(path: Path) -> str | None:
    """Where the weights beside a file of training state are, in words, or None where its folder holds none: a
    Trainer's checkpoint-N/ of a PEFT run keeps adapter_model.safetensors, which the words said of every folder
    ("model.safetensors or pytorch_model.bin") did not name."""
    from weightdoctor.checkpoint.reader import _pasteable, _subfolders_with_weights, weight_files_in

    # fairseq2's step_N/optimizer/pp_PP/tp_TT/sdp_SS.pt: the same ranks' model state is step_N/model/pp_PP/tp_TT/
    # sdp_SS.pt (fairseq2/checkpoint/manager.py), three folders from here; the Trainer's and torchtune's places were
    # named instead.
    ranks = path.parts[-4:]
    if len(ranks) == 4 and ranks[0] == "optimizer" and ranks[1].startswith("pp_") and ranks[2].startswith("tp_") \
            and ranks[3].startswith("sdp_"):
        model = path.parents[3].joinpath("model", *ranks[1:])
        try:
            found = model.is_file()
        except OSError:
            found = False
        if found:
            return (f"fairseq2 saved the model's state dict of the same ranks as model/{'/'.join(ranks[1:])} beside "
                    f"optimizer/: point weightdoctor at {_pasteable(model)}")
    try:
        beside = [p.name for p in weight_files_in(path.parent) if p.name != path.name]
        # ColossalAI saves the optimizer (optimizer/) and the model (modeling/) in folders side by side: only an
        # optimizer's own folder is looked beside, not any folder that holds a stray optimizer.pt.
        apart = path.parent.name.startswith("optim") or path.name.startswith("pytorch_optim")
        siblings = [] if beside or not apart else [name for name in _subfolders_with_weights(path.parent.parent)
                                                   if name != path.parent.name]
    except OSError:
        return None
    if siblings:
        shown = ", ".join(f"{name}/" for name in siblings[:3]) + (", ..." if len(siblings) > 3 else "")
        return (f"The weights are in a folder beside this one ({shown}): point weightdoctor at "
                f"{_pasteable(path.parent.parent / siblings[0])}")
    if not beside:
        return None
    shown = ", ".join(beside[:3]) + (f" and {len(beside) - 3} more" if len(beside) > 3 else "")
    return (f"The weights beside it: {shown}: point weightdoctor at {_pasteable(path.parent / beside[0])} or at the "
            "folder")


def find_state_dict(obj: Any, key: str | None = None) -> tuple[Mapping[str, Any], str | None]:
    """Locate the weights inside what `torch.load` returned.

    Example:
        >>> import torch
        >>> find_state_dict({"epoch": 3, "model_state_dict": {"w": torch.zeros(2)}})
        ({'w': tensor([0., 0.])}, 'model_state_dict')

    Args:
        obj: the loaded object.
        key: an explicit dotted path (`"model.module"`); each step may itself contain dots.

    Returns:
        The state dict and the dotted path where it was found (None at the top level).

    Raises:
        UsageError: `key` does not name a mapping of tensors.
        CorruptCheckpoint: no mapping of tensors can be found.
    """
    if key is not None:
        return _follow_key(obj, key), key
    parts = _parts_of_one_model(obj)
    if parts is not None:
        return parts, None
    styletts = _styletts2_modules(obj)
    if styletts is not None:
        return styletts
    opennmt = _opennmt_model(obj)
    if opennmt is not None:
        return opennmt, None
    hqq = hqq_save_quantized(obj)
    if hqq is not None:
        return hqq, None
    megatron = _megatron_language_model(obj)
    if megatron is not None:
        return megatron, _MEGATRON_KEY
    chunks = _megatron_virtual_chunks(obj)
    if chunks:
        # Virtual pipeline: the first chunk's language model, whole; the note says the others are not read.
        return chunks[0][1], f"{chunks[0][0]}.language_model"
    best = _audiocraft_best_state(obj)
    if best is not None:
        return obj[best]["model"], f"{best}.model"
    if _k_diffusion_ema(obj):
        return obj["model_ema"], "model_ema"
    if _super_gradients_ema(obj):
        return obj["ema_net"], "ema_net"
    if _rt_detr_ema(obj):
        return obj["ema"]["module"], "ema.module"
    if _dit_ema(obj):
        return obj["ema"], "ema"
    if _stylegan2_g_ema(obj):
        return obj["g_ema"], "g_ema"
    if _self_distillation_teacher(obj):
        return obj["teacher"], "teacher"
    if _ema_pytorch_beside_model(obj):
        return obj["ema_model_state_dict"], "ema_model_state_dict"
    # A Trainer's training_args.bin is read as an inert stand-in, itself an empty mapping: before the test below,
    # which took it for a state dict of 0 tensors (inspect showed 0 parameters, convert wrote an empty file).
    kind = training_state_kind(obj) if isinstance(obj, InertObject) else None
    if kind is None and (_is_state_dict(obj) or (isinstance(obj, Mapping) and not obj)):
        return obj, None  # an empty dict is a state dict of 0 tensors, as a safetensors file may hold
    kind = kind or training_state_kind(obj)
    if kind is not None:
        # Before the search: an optimizer keyed by parameter name holds a mapping of tensors per parameter
        # (`state.<name>`: step, exp_avg, exp_avg_sq), and a Trainer's RNG states a tensor at the top (`cpu`).
        raise CorruptCheckpoint(f"no model weights: the file holds {kind}. {_WHERE_THE_WEIGHTS_ARE}")
    # Breadth-first, trying the usual keys first at each level. A mapping the pickle fetched again from its memo is
    # one object reached by many paths: searched (and judged) once, at the first and shallowest, so that a few-KB
    # file of 1,000-key dicts nested three deep, each key the one dict below, is not a search of 10^9 paths (it
    # kept `inspect` busy past a minute, called safe by the scanner).
    queue: collections.deque[tuple[Any, tuple[str, ...]]] = collections.deque([(obj, ())])
    queued = {id(obj)}
    judged: dict[int, bool] = {}
    while queue:
        current, path = queue.popleft()
        if not isinstance(current, Mapping):
            continue
        names = [k for k in current if isinstance(k, str)]
        ordered = [k for k in STATE_DICT_KEYS if k in current] + [k for k in names if k not in STATE_DICT_KEYS]
        for name in ordered:
            if NOT_WEIGHTS.search(name):
                continue
            value = current[name]
            if id(value) not in judged:
                judged[id(value)] = _is_state_dict(value)
            if judged[id(value)]:
                return value, ".".join(path + (name,))
        for name in ordered:
            value = current[name]
            if (not NOT_WEIGHTS.search(name) and isinstance(value, Mapping) and len(path) < 4
                    and id(value) not in queued):
                queued.add(id(value))
                queue.append((value, path + (name,)))
    if isinstance(obj, Mapping) and any(isinstance(k, str) and is_tensor(v) for k, v in obj.items()):
        # No nested state dict, but tensors beside a few other values at the top (`{"w": ..., "epoch": 3}`):
        # those tensors are the weights; the other entries are reported as such.
        return obj, None
    hypernetwork = _a1111_hypernetwork(obj)
    if hypernetwork:
        raise UnsupportedFormat(hypernetwork)
    top = ", ".join(f"{_key_text(k)} ({_describe(v)})" for k, v in list(obj.items())[:8]) \
        if isinstance(obj, Mapping) else ""
    # `torch.save([model.state_dict()])`, an ensemble's list of state dicts: `--key N` reads one (_follow_key).
    listed = (next((i for i, item in enumerate(obj[:64]) if _is_state_dict(item)), None)
              if isinstance(obj, (list, tuple)) else None)
    pick = f"; item {listed} is a state dict: pick it with --key {listed}" if listed is not None else ""
    raise CorruptCheckpoint(
        "no state dict (a mapping of names to tensors) found"
        + (f"; top-level entries: {top}; pick one with --key" if top else f"; the file holds {_what(obj)}{pick}")
    )


def _a1111_hypernetwork(obj: Any) -> str:
    """What to say of an AUTOMATIC1111 hypernetwork .pt, or "" when `obj` is none.

    A1111's Hypernetwork.save writes its layers keyed by the attention width they act on, an int (`{768: [key
    network's state dict, value network's], ...}`), beside `layer_structure`, `activation_func` and the training
    step: no one state dict. It was refused as "no state dict found ... pick one with --key", which named neither
    the format nor the --key that reads a network.
    """
    if not (isinstance(obj, Mapping) and "layer_structure" in obj):
        return ""
    widths = [k for k, v in obj.items() if isinstance(k, int) and not isinstance(k, bool)
              and isinstance(v, (list, tuple)) and any(_is_state_dict(item) for item in v)]
    if not widths:
        return ""
    structure = obj["layer_structure"]
    # An untrusted file's value: quoted only when it is the short list of numbers A1111 writes.
    # Short numbers only: repr() of an int past 4,300 digits raises ValueError.
    shown = (f" (layer_structure {list(structure)!r})" if isinstance(structure, (list, tuple)) and len(structure) <= 8
             and all(isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) < 1e16 for x in structure)
             else "")
    widths.sort()
    # A hostile file may hold 20,000 widths (a 4,000-character line): a few, and a count of the rest.
    listed = ", ".join(map(_key_text, widths[:6])) + (f", and {len(widths) - 6:,} more" if len(widths) > 6 else "")
    # Only a width --key can take (digits, as _follow_key reads them) is offered, at a list index holding a state dict.
    typeable = next((k for k in widths if 0 <= k < 10 ** 20), None)
    index = (next(i for i, item in enumerate(obj[typeable]) if _is_state_dict(item)) if typeable is not None
             else None)
    return (f"an AUTOMATIC1111 hypernetwork{shown}: no one state dict but, "
            f"for each attention width ({listed}), the small networks applied to "
            "the attention's key and value, which A1111's and ComfyUI's hypernetwork loaders read from this .pt as it "
            "is" + (f"; --key {typeable}.{index} reads one of them" if typeable is not None else ""))


def _decimal(text: str) -> bool:
    """Whether `text` is ASCII digits, which `--key` reads as an int: str.isdigit() is true of '²' (int() refuses it:
    'unexpected ValueError') and of '١', which int() read as 1."""
    return text.isascii() and text.isdigit()


class _JoinedNames(dict[str, Any]):
    """A state dict joined from a file's nested entries (`<module>.<name>`), each name said where it came from: a
    name reached twice is refused. A genuine file never joins two entries to one name; a hostile one (HQQ module `a`'s
    `b.c` beside module `a.b`'s `c`, a layer's meta holding its own `W_q`, the keys 1 and "1") had one silently
    replace the other: inspect described a tensor the loader never puts there and counted the file one tensor short.
    """

    def __init__(self, what: str, writer: str) -> None:
        super().__init__()
        self.what, self.writer = what, writer
        self.origins: dict[str, str] = {}

    def put(self, name: str, value: Any, module: str, *keys: Any) -> None:
        """Add `value` as `name`, found under `keys` in `module`'s entry."""
        path = " / ".join(clip_middle(repr(_key_text(key)), 100) for key in keys)
        origin = f"entry {path} of module {clip_middle(repr(module), 100)}"
        if name in self:
            raise CorruptCheckpoint(
                f"{self.what}: {self.origins[name]} and {origin} are both read as {clip_middle(repr(name), 200)} "
                f"(`<module>.<name>`): one would hide the other; not a file {self.writer} writes")
        self[name] = value
        self.origins[name] = origin


def _key_text(key: Any) -> str:
    """A top-level key as a refusal names it. A pickle may key a dict by an int of any size, which str() refuses past
    4,300 digits (ValueError, and the command ended in 'unexpected ValueError'); a tuple holding one, too."""
    if isinstance(key, int) and not isinstance(key, bool) and key.bit_length() > 128:
        return f"<int of {key.bit_length():,} bits>"
    try:
        return str(key)
    except ValueError:
        return f"<{type(key).__name__} too long to show>"


# Files whose weights are state dicts side by side, all of them loaded: IP-Adapter's .bin (and InstantID's, FaceID's)
# `{"image_proj": ..., "ip_adapter": ...}`, which its .safetensors stores flat as `image_proj.*` and `ip_adapter.*`
# (diffusers' load_ip_adapter reads either); PhotoMaker's photomaker-v1.bin `{"id_encoder": ..., "lora_weights": ...}`,
# which its load_photomaker_adapter (PhotoMaker's pipeline, diffusers') reads from a .safetensors by the same prefixes.
_IP_ADAPTER_PARTS = ("image_proj", "ip_adapter")
_PHOTOMAKER_PARTS = ("id_encoder", "lora_weights")
# What each such file is, and what reads its parts flat: said when they are read together.
_ONE_MODEL_KINDS = {
    frozenset(_IP_ADAPTER_PARTS): ("an IP-Adapter file", "diffusers' load_ip_adapter"),
    frozenset(_PHOTOMAKER_PARTS): ("a PhotoMaker adapter (its ID encoder and the LoRA it applies to the SDXL U-Net)",
                                   "load_photomaker_adapter"),
}
_ONE_MODEL_PARTS = tuple(_ONE_MODEL_KINDS)


def _parts_of_one_model(obj: Any) -> dict[str, Any] | None:
    """The state dicts of a file that splits one model over several (see `_ONE_MODEL_PARTS`), as one state dict
    named `<part>.<name>`; None for any other file."""
    if not isinstance(obj, Mapping) or frozenset(obj) not in _ONE_MODEL_PARTS:
        return None
    if not all(_is_state_dict(value) and value for value in obj.values()):
        return None
    return {f"{part}.{name}": value for part, state in obj.items() for name, value in state.items()}


# StyleTTS 2 saves one state dict per module, `{"net": {"bert": ..., "bert_encoder": ..., "predictor": ...,
# "decoder": ..., "text_encoder": ..., "style_encoder": ..., "diffusion": ..., "mpd": ..., ...}, "optimizer": ...,
# "epoch": ...}`, and Kokoro's release file (kokoro-v1_0.pth) holds its five of them at the top; StyleTTS 2's
# load_checkpoint and inference, and Kokoro's KModel, load each into the module of its name. Read alone, the first one
# (`bert`) was "the state dict": a 82M-parameter voice model counted as its 6M-parameter text encoder.
_STYLETTS2_PARTS = frozenset({"bert", "bert_encoder", "predictor", "decoder", "text_encoder"})


def _styletts2_net(obj: Any) -> tuple[Mapping[str, Any], str | None] | None:
    """StyleTTS 2's (or Kokoro's) mapping of module name to state dict, and where it is (None: `obj` itself, or
    "net"); None for any other file."""
    if not isinstance(obj, Mapping):
        return None
    for net, where in ((obj, None), (obj.get("net"), "net")):
        if (isinstance(net, Mapping) and all(part in net for part in _STYLETTS2_PARTS)
                and all(isinstance(name, str) and _is_state_dict(state) for name, state in net.items())):
            return net, where
    return None


def _styletts2_modules(obj: Any) -> tuple[dict[str, Any], str | None] | None:
    """A StyleTTS 2 / Kokoro file's module state dicts as one, named `<module>.<name>`, and where they were."""
    found = _styletts2_net(obj)
    if found is None:
        return None
    net, where = found
    joined = _JoinedNames("a StyleTTS 2 / Kokoro file of one state dict per module", "StyleTTS 2")
    for part, state in net.items():
        for name, value in state.items():
            joined.put(f"{part}.{_key_text(name)}", value, part, name)
    return dict(joined), where


def _opennmt_model(obj: Any) -> dict[str, Any] | None:
    """An OpenNMT-py checkpoint's whole model, or None for any other file.

    OpenNMT-py's ModelSaver writes `{"model": ..., "generator": ..., "vocab": ..., "opt": ..., "optim": ...}`: the
    model's state dict without its generator (the output projection onto the target vocabulary, often the largest
    matrix), which it saves apart, and its loader (and CTranslate2's converter) puts back as `generator.*`. Read
    alone, `model` missed it and offered `--key generator`, which reads the projection alone.
    """
    if not (isinstance(obj, Mapping) and "opt" in obj and "vocab" in obj):
        return None
    model, generator = obj.get("model"), obj.get("generator")
    if not (_is_state_dict(model) and model and _is_state_dict(generator) and generator):
        return None
    if any(isinstance(name, str) and name.startswith("generator.") for name in model):
        return None  # saved whole already
    return {**model, **{f"generator.{_key_text(name)}": value for name, value in generator.items()}}


def hqq_save_quantized(obj: Any) -> dict[str, Any] | None:
    """HQQ's own qmodel.pt as one state dict named `<module>.<name>`, or None for any other file.

    hqq's save_quantized (hqq/models/base.py, serialize_weights) torch.saves `{module name: module.state_dict()}`,
    where an HQQLinear's state dict is `{"W_q": packed integers, "meta": {"scale", "zero" or "zero_q" and
    "meta_zero", "shape", "nbits", "group_size", "axis", "packing", ...}, "bias"}` (hqq 0.1), or those meta data
    beside W_q (hqq 0.2: `{"W_q", "nbits", "shape", "scale", "zero", ..., "bias", "offload_meta"}`): read as a
    training checkpoint,
    its first module's dict was taken for the state dict (`model.embed_tokens`: one tensor of the model) and every
    quantized layer listed among the other entries. Its meta data is named as transformers' HQQ integration names it
    (`q_proj.scale`, `q_proj.nbits`: the HQQLinear's own keys beside `W_q`), a nested meta (the quantized zero's
    `meta_zero`) under its key (`q_proj.meta_zero.scale`).
    """
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(name, str) and isinstance(state, Mapping) and not is_tensor(state)
            for name, state in obj.items()):
        return None
    # hqq before 0.2 kept the meta data in one "meta" dict; hqq 0.2's HQQLinear.state_dict (its serialize_weights
    # turns encoded_state_dict off) lays it out flat beside W_q ("nbits", "shape", "scale", "zero", ...,
    # "offload_meta"), as transformers' HQQ integration names it.
    if not any(is_tensor(state.get("W_q")) and (isinstance(state.get("meta"), Mapping) or "nbits" in state)
               for state in obj.values()):
        return None
    flat = _JoinedNames("HQQ's qmodel.pt (save_quantized's {module name: state dict})", "hqq's save_quantized")

    def walk(value: Mapping[Any, Any], prefix: str, depth: int, module: str, keys: tuple[Any, ...]) -> None:
        for name, item in value.items():
            if isinstance(item, Mapping) and not is_tensor(item) and depth < 3:
                walk(item, f"{prefix}{_key_text(name)}.", depth + 1, module, (*keys, name))
            else:
                flat.put(f"{prefix}{_key_text(name)}", item, module, *keys, name)

    for module, state in obj.items():
        # The module named "" is the model itself (hqq quantized a bare nn.Linear): its keys are named as its
        # state_dict names them, `W_q`, `scale`, not `.W_q`, and as hqq's load finds them (named_modules() gives the
        # root as "").
        prefix = f"{module}." if module else ""
        for name, value in state.items():
            if name == "meta" and isinstance(value, Mapping) and is_tensor(state.get("W_q")):
                walk(value, prefix, 0, module, (name,))
            elif isinstance(value, Mapping) and not is_tensor(value):
                walk(value, f"{prefix}{_key_text(name)}.", 1, module, (name,))
            else:
                flat.put(f"{prefix}{_key_text(name)}", value, module, name)
    return dict(flat)


# Megatron-LM's legacy (non-distributed) model_optim_rng.pt: `model.language_model` holds one dict per part, nested
# by module path (`embedding.word_embeddings.weight`), that Megatron's load_state_dict and the conversion scripts of
# transformers and NeMo read together.
_MEGATRON_PARTS = frozenset({"embedding", "encoder", "decoder", "transformer", "output_layer", "pooler", "lm_head"})
_MEGATRON_KEY = "model.language_model"


def _audiocraft_best_state(obj: Any) -> str | None:
    """In an audiocraft solver checkpoint (checkpoint.th: `model` beside `best_state`, `xp.cfg`, `optimizer`), the
    entry whose `model` audiocraft's export writes to a release: `fsdp_best_state` when FSDP filled it, else
    `best_state` (audiocraft.utils.export's export_lm and export_encodec); None for any other file."""
    if not isinstance(obj, Mapping) or "xp.cfg" not in obj or not _is_state_dict(obj.get("model")):
        return None
    for entry in ("fsdp_best_state", "best_state"):
        value = obj.get(entry)
        if isinstance(value, Mapping) and _is_state_dict(value.get("model")) and value["model"]:
            return entry
    return None


def _k_diffusion_ema(obj: Any) -> bool:
    """Whether `obj` is a k-diffusion training checkpoint (train.py's `{"model", "model_ema", "opt", "sched",
    "ema_sched", "epoch", "step", ...}`) with a non-empty `model_ema`: the EMA weights that k-diffusion's sampling,
    demos and convert_for_inference.py load (`ckpt["model_ema"]`), not `model`, the raw training
    weights that resuming alone reads. `ema_sched` is k-diffusion's own key: a plain {model, model_ema} (DeiT,
    ConvNeXt), whose own tools load `model` by default, is not taken for one."""
    if not isinstance(obj, Mapping) or "ema_sched" not in obj:
        return False
    ema = obj.get("model_ema")
    return _is_state_dict(obj.get("model")) and _is_state_dict(ema) and bool(ema)


def _averaged_entry_note(obj: Any, nested_key: str | None) -> str | None:
    """The note for a training checkpoint whose averaged (EMA) entry was read, as its library's own loader reads it,
    or None: (the entry read, what recognises the library's checkpoint, what the note says after "<entry> is read").
    """
    for entry, recognised, library, said in (
            ("model_ema", _k_diffusion_ema, "a k-diffusion training checkpoint",
             "the EMA weights that k-diffusion's sampling loads and its convert_for_inference.py writes to a slim "
             "checkpoint; --key model reads the raw training weights beside them"),
            ("ema_net", _super_gradients_ema, "a SuperGradients training checkpoint (YOLO-NAS, ...)",
             "the EMA weights SuperGradients' models.get(checkpoint_path=...) loads when the file holds them; "
             "--key net reads the raw training weights beside them"),
            ("ema.module", _rt_detr_ema, "an RT-DETR / D-FINE / DEIM training checkpoint",
             "the EMA weights their export (tools/export_onnx.py) and inference load whenever the file holds ema; "
             "--key model reads the raw training weights beside them"),
            ("ema", _dit_ema, "a DiT / SiT / Latte training checkpoint (train.py's model, ema, opt)",
             "the EMA weights their sampling loads (find_model takes checkpoint['ema'] whenever the file holds "
             "it); --key model reads the raw training weights beside them"),
            ("g_ema", _stylegan2_g_ema, "a StyleGAN2 (stylegan2-pytorch) training checkpoint",
             "the averaged generator its generate.py and projector.py load (checkpoint['g_ema']); --key g reads "
             "the raw generator, --key d the discriminator")):
        if nested_key == entry and recognised(obj):
            return f"{library}: {entry} is read, {said}"
    return None


# The file SuperGradients' Trainer writes with average_best_models (Trainer.average_model_checkpoint_filename).
_SUPER_GRADIENTS_AVERAGE = "average_model.pth"


def _super_gradients_ema(obj: Any) -> bool:
    """Whether `obj` is a SuperGradients training checkpoint (YOLO-NAS and the other models of Deci's trainer:
    ckpt_best.pth, ckpt_latest.pth, ckpt_epoch_N.pth, Trainer._save_checkpoint's `{"net", "acc", "epoch", "metrics",
    "packages", "optimizer_state_dict", "ema_net", ...}`) with a non-empty `ema_net`: SuperGradients'
    models.get(checkpoint_path=...) loads `ema_net` whenever the file holds one (load_ema_as_net), not `net`, the raw
    training weights that resuming reads. `net` came first in the key search and was read, silently."""
    if not isinstance(obj, Mapping) or not {"acc", "epoch"} <= set(obj):
        return False
    ema = obj.get("ema_net")
    return _is_state_dict(obj.get("net")) and _is_state_dict(ema) and bool(ema)


def _rt_detr_ema(obj: Any) -> bool:
    """Whether `obj` is a training checkpoint of RT-DETR's solver (RT-DETR, RT-DETRv2, and D-FINE and DEIM, which grew
    from it: BaseSolver.state_dict's `{"date", "last_epoch", "model", "ema", "optimizer", "lr_scheduler", ...}`, the
    EMA as ModelEMA.state_dict's `{"module", "updates", "warmups"}`) with a non-empty `ema.module`: their export
    (tools/export_onnx.py), inference and fine-tuning (load_tuning_state) read `state["ema"]["module"]` whenever the
    file holds `ema`, not `model`, the raw training weights that resuming reads beside it. `model` came first in the
    key search and was read, silently, the EMA shown as "ema (dict, 3 entries)"."""
    if not isinstance(obj, Mapping) or "last_epoch" not in obj or not _is_state_dict(obj.get("model")):
        return False
    ema = obj.get("ema")
    if not isinstance(ema, Mapping) or "updates" not in ema:
        return False
    module = ema.get("module")
    return _is_state_dict(module) and bool(module)


def _dit_ema(obj: Any) -> bool:
    """Whether `obj` is a training checkpoint of DiT's train.py or of the repos grown from it (SiT, Latte,
    LightningDiT: `{"model", "ema", "opt", "args"}`, the EMA a deepcopy of the model, so of the very same names) with
    a non-empty `ema`: their sampling (download.py's find_model: `checkpoint["ema"]` whenever the file holds it) loads
    the EMA, not `model`, the raw training weights that resuming reads. `opt` is their own name for the optimizer's
    state; without it a `{model, ema}` keeps the key search's order."""
    if not isinstance(obj, Mapping) or "opt" not in obj:
        return False
    model, ema = obj.get("model"), obj.get("ema")
    return _is_state_dict(model) and _is_state_dict(ema) and bool(ema) and set(ema) == set(model)


def _stylegan2_g_ema(obj: Any) -> bool:
    """Whether `obj` is a training checkpoint of rosinality's stylegan2-pytorch or of the repos grown from it (its
    train.py's `{"g", "d", "g_ema", "g_optim", "d_optim", "args", ...}`, g_ema the generator's running average, of
    the very same names) with a non-empty `g_ema`: its generate.py, projector.py and the models built on it (GFPGAN's
    and pSp's StyleGAN2 decoders) load `checkpoint["g_ema"]`, not `g`, the raw generator that the key search came to
    first and read, silently."""
    if not isinstance(obj, Mapping) or not _is_state_dict(obj.get("d")):
        return False
    raw, ema = obj.get("g"), obj.get("g_ema")
    return _is_state_dict(raw) and _is_state_dict(ema) and bool(ema) and set(ema) == set(raw)


def _fairseq_ema(obj: Any) -> str | None:
    """The note for a fairseq training checkpoint saved with --store-ema (Trainer.state_dict: the EMA model's state
    dict in `extra_state["ema"]`, its float32 copy in `extra_state["ema_fp32_params"]` with --ema-fp32), or None. The
    EMA's tensors were left unsaid ("extra_state (dict, 4 entries)"), while fairseq's own evaluation of the EMA reads
    them, not `model`: checkpoint_utils.load_ema_from_checkpoint puts extra_state['ema'] under 'model'."""
    if not isinstance(obj, Mapping) or "optimizer_history" not in obj or not _is_state_dict(obj.get("model")):
        return None
    extra = obj.get("extra_state")
    ema = extra.get("ema") if isinstance(extra, Mapping) else None
    if not _is_state_dict(ema) or not ema:
        return None
    decay = _fairseq_ema_decay(obj)
    fp32 = extra.get("ema_fp32_params")
    beside = ("; extra_state.ema_fp32_params is its float32 copy (--ema-fp32), which resuming restores and "
              "--key extra_state.ema_fp32_params reads" if _is_state_dict(fp32) and fp32 else "")
    return ("a fairseq training checkpoint saved with --store-ema: model is read, the raw training weights that "
            "fairseq-generate and load_model_ensemble load; extra_state.ema beside it holds the EMA model's "
            f"{counted(len(ema), 'tensor')}{f' (ema_decay {decay})' if decay else ''}, which fairseq's "
            "checkpoint_utils.load_ema_from_checkpoint(path) puts under 'model' to evaluate or release it "
            f"(torch.save of what it returns writes that file), and --key extra_state.ema reads here{beside}")


def _fairseq_ema_decay(obj: Mapping[Any, Any]) -> str:
    """The EMA decay a fairseq checkpoint's cfg (`cfg.ema.ema_decay`) or args (`ema_decay`) names, "" when none."""
    cfg = obj.get("cfg")
    ema_cfg = cfg.get("ema") if isinstance(cfg, Mapping) else None
    if isinstance(ema_cfg, Mapping):
        decay = ema_cfg.get("ema_decay")
    else:
        # fairseq 0.10's argparse.Namespace, read as an inert stand-in that keeps its attributes as its pickled state.
        args = getattr(obj.get("args"), "__dict__", {})
        state = args.get("_inert_state", args)
        decay = state.get("ema_decay") if isinstance(state, Mapping) else None
    return repr(decay) if isinstance(decay, float) else ""


# torch.optim.swa_utils.AveragedModel.state_dict(): its count of models averaged, then the averaged model's names
# under its `module`.
_AVERAGED_COUNT = "n_averaged"
# torchvision's references/classification/train.py (and detection's, segmentation's) save
# {"model", "optimizer", "lr_scheduler", "epoch", "args", "model_ema" (--model-ema), "scaler" (--amp)}.
_TORCHVISION_REFERENCE_KEYS = frozenset({"model", "optimizer", "lr_scheduler", "epoch", "args"})


def _averaged_model_beside(obj: Any) -> str | None:
    """The note for a training checkpoint whose `model` has an averaged copy beside it kept by torch.optim.swa_utils'
    AveragedModel (an EMA or SWA: `n_averaged` and the model's own names under `module.`), as torchvision's reference
    training scripts save `model_ema`; None otherwise. It was "model_ema (a state dict of N tensors: pick it with
    --key)", nothing said of what it is or that its names load under another prefix."""
    if not isinstance(obj, Mapping) or not _is_state_dict(obj.get("model")):
        return None
    names = {name for name in obj["model"] if isinstance(name, str)}
    for entry, value in obj.items():
        if entry == "model" or not isinstance(entry, str) or not isinstance(value, Mapping) \
                or _AVERAGED_COUNT not in value:
            continue
        averaged = {name.removeprefix("module.") for name in value if isinstance(name, str) and name != _AVERAGED_COUNT}
        if not averaged or averaged != names or any(isinstance(name, str) and name != _AVERAGED_COUNT
                                                    and not name.startswith("module.") for name in value):
            continue
        reference = set(obj) >= _TORCHVISION_REFERENCE_KEYS
        who = ("a torchvision reference-scripts checkpoint (references/*/train.py: model, optimizer, lr_scheduler, "
               "epoch, args)" if reference else "a training checkpoint")
        evaluated = f"; its --test-only with --model-ema evaluates {entry}" if reference else ""
        return (f"{who} with an averaged copy of the model: model is read, the raw training weights; {entry} "
                "beside it is torch.optim.swa_utils.AveragedModel's state dict (an EMA or SWA average: n_averaged, "
                f"the count of models averaged, then the model's names under module.){evaluated}; --key {entry} "
                "reads it, and it loads into the model without n_averaged and with module. stripped "
                f"({{k.removeprefix('module.'): v for k, v in checkpoint[{entry!r}].items() if k != 'n_averaged'}})")
    return None


def _icefall_model_avg(obj: Any) -> bool:
    """Whether `obj` is an icefall (k2) training checkpoint with its running average (icefall/checkpoint.py's
    save_checkpoint: `{"model", "optimizer", "scheduler", "grad_scaler", "sampler", "model_avg", **params}`, params
    holding `batch_idx_train`): model_avg was "a state dict of N tensors: pick it with --key" and nothing said that
    icefall's decode.py / export.py (--use-averaged-model, their default) load neither entry alone."""
    return (isinstance(obj, Mapping) and {"grad_scaler", "sampler", "batch_idx_train"} <= set(obj)
            and _is_state_dict(obj.get("model")) and _is_state_dict(obj.get("model_avg")) and bool(obj["model_avg"])
            and set(obj["model_avg"]) == set(obj["model"]))


def _timm_ema(obj: Any) -> bool:
    """Whether `obj` is what timm's CheckpointSaver saves with a model EMA (train.py --model-ema: `epoch`, `arch`,
    `optimizer`, `version`, `state_dict` and `state_dict_ema`). state_dict_ema was "a state dict of N tensors: pick it
    with --key", nothing said of its being the EMA timm's validate.py --use-ema evaluates."""
    return (isinstance(obj, Mapping) and {"epoch", "arch", "version"} <= set(obj)
            and _is_state_dict(obj.get("state_dict")) and _is_state_dict(obj.get("state_dict_ema"))
            and bool(obj["state_dict_ema"]))


def _gan_vocoder_discriminators(obj: Any) -> bool:
    """Whether `obj` is the training state HiFi-GAN's train.py (and BigVGAN's, and the vocoders grown from them) saves
    as do_<step> beside g_<step>: the discriminators (`mpd` with `msd` or `mrd`, or one `discriminator`), both
    optimizers, `steps` and `epoch`, and no generator. Its first state dict, a discriminator, was read as the
    checkpoint's weights without a word, where their inference loads `generator` from the g_<step> file."""
    return (isinstance(obj, Mapping) and {"optim_g", "optim_d", "steps"} <= set(obj) and "generator" not in obj
            and any(_is_state_dict(obj.get(name)) for name in ("mpd", "msd", "mrd", "discriminator")))


def _ema_pytorch_beside_model(obj: Any) -> bool:
    """Whether `obj` keeps an ema_pytorch EMA's state (`initted`, `step`, then the averaged model as `ema_model.*`)
    under `ema_model_state_dict` beside the raw `model_state_dict`: F5-TTS's trainer saves so, and its inference
    (load_checkpoint, use_ema=True by default) loads the EMA, not `model_state_dict`, which resuming alone reads."""
    if not isinstance(obj, Mapping) or not _is_state_dict(obj.get("model_state_dict")):
        return False
    ema = obj.get("ema_model_state_dict")
    if not _is_state_dict(ema) or not {"initted", "step"} <= set(ema):
        return False
    # F5-TTS' trainer keeps the averaged model alone (include_online_model=False), a CFM whose backbone (DiT, UNetT,
    # MMDiT) ends in transformer.proj_out. lucidrains' e2-tts-pytorch, whose trainer F5-TTS' grew from, saves the very
    # same dict, but its E2TTS has no proj_out and its one loader (resuming) reads model_state_dict; and an EMA saved
    # with ema_pytorch's default include_online_model=True holds the raw weights again as online_model.*.
    averaged = [name for name in ema if name not in ("initted", "step")]
    return all(isinstance(name, str) and name.startswith("ema_model.") for name in averaged) and any(
        name.startswith("ema_model.transformer.proj_out.") for name in averaged)


def _voice_model_note(obj: Any) -> str | None:
    """What to say of a voice model saved as its weights beside the settings that build it, or None: RVC's
    (`{"weight", "config": a list, "info", "sr", "f0", "version"}`) and GPT-SoVITS' SoVITS .pth and GPT .ckpt
    (`{"weight", "config": a dict, "info"}`). Without it the file was "a training checkpoint", which it is not."""
    if not isinstance(obj, Mapping) or not _is_state_dict(obj.get("weight")) or "info" not in obj:
        return None
    if isinstance(obj.get("config"), list) and "sr" in obj and "f0" in obj:
        version = obj.get("version", "v1")
        settings = ", ".join(f"{name} {obj[name]!r}" for name in ("version", "sr", "f0") if name in obj)
        shown = version if isinstance(version, str) and len(version) <= 8 else "v1"
        return (f"an RVC voice model (Retrieval-based-Voice-Conversion's save of a trained voice, {settings[:120]}): "
                f"RVC's WebUI and its forks load weight, strict=False, into the {shown} synthesizer that config, "
                "version and f0 pick; the released weights, not a training checkpoint (RVC trains from G_*.pth / "
                "D_*.pth); the added_*.index beside it is a faiss index, read apart")
    if set(obj) == {"weight", "config", "info"} and isinstance(obj["config"], Mapping):
        if all(isinstance(name, str) and name.startswith("model.") for name in obj["weight"]):
            return ("a GPT-SoVITS GPT (text-to-semantic) model: GPT-SoVITS' inference loads weight into the "
                    "Text2SemanticLightningModule that config builds; the released weights, not a training checkpoint")
        return ("a GPT-SoVITS SoVITS model: GPT-SoVITS' inference (load_sovits_new) loads weight, strict=False, "
                "into the SynthesizerTrn that config builds; the released weights, not a training checkpoint")
    return None


def _composer_state(obj: Any) -> Mapping[str, Any] | None:
    """The `state` of a MosaicML Composer checkpoint (its Trainer's save, `ep1-ba3-rank0.pt`, `latest-rank0.pt`):
    {"state": {"model", "optimizers", "timestamp", "rank_zero_seed", "integrations", ...}, "rng": [...]}, the
    timestamp and seed being Composer's own state; None for anything else."""
    if not isinstance(obj, Mapping) or not isinstance(state := obj.get("state"), Mapping):
        return None
    return state if _is_state_dict(state.get("model")) and {"timestamp", "rank_zero_seed"} <= set(state) else None


def _composer_note(state: Mapping[str, Any], names: Any, path: Path | None = None) -> str:
    """What a Composer checkpoint is, and what writes its model for from_pretrained when it wraps a transformers one
    (HuggingFaceModel: the weights under `model.`, the transformers config in state.integrations.huggingface)."""
    integrations = state.get("integrations")
    huggingface = integrations.get("huggingface") if isinstance(integrations, Mapping) else None
    prefixed = bool(names) and all(isinstance(name, str) and name.startswith("model.") for name in names)
    note = ("a MosaicML Composer checkpoint (its Trainer's save: state.model beside state.optimizers, "
            "state.timestamp and rng): state.model is read")
    if isinstance(huggingface, Mapping) and isinstance(model := huggingface.get("model"), Mapping):
        # composer.models.write_huggingface_pretrained_from_composer_checkpoint: the config and tokenizer from
        # state.integrations.huggingface, state.model with model. consumed, torch.save'd as pytorch_model.bin
        # (a PEFT model's LoRA weights alone as adapter_model.bin, beside its adapter config).
        weights = "adapter_model.bin" if "peft_config" in model else "pytorch_model.bin"
        # The checkpoint as named and a folder beside it (where the user stands for a Hub cache file):
        # `(PATH, OUT)` pasted was a NameError.
        if path is not None:
            from weightdoctor.checkpoint.hub import written_beside

            out = str(written_beside(path, f"{path.stem}-hf"))
            export = (f"import composer.models; "
                      f"composer.models.write_huggingface_pretrained_from_composer_checkpoint({str(path)!r}, "
                      f"{out!r}) writes its config.json, tokenizer and {weights} (model. stripped) for "
                      f"from_pretrained({out!r})")
        else:
            export = (f"Composer's composer.models.write_huggingface_pretrained_from_composer_checkpoint, given the "
                      f"checkpoint's path and a folder to write, writes its config.json, tokenizer and {weights} "
                      "(model. stripped) for from_pretrained of that folder")
        return (note + ", a transformers model wrapped by Composer's HuggingFaceModel"
                + (" (its names start with model.)" if prefixed else "") + ": " + export
                + (f"; {_stripped_command(path)} writes these weights under the same names"
                   if prefixed else ""))
    # The ComposerModel is the user's own class, which no line printed here can name: said in words.
    return note + ("; Composer's Trainer, given its ComposerModel and load_path="
                   + (repr(str(path)) if path is not None else "the checkpoint's path")
                   + ", loads it back into that model")


def _pyannote_note(obj: Any, path: Path | None = None) -> str | None:
    """What a pyannote.audio checkpoint is (its Model.on_save_checkpoint adds checkpoint["pyannote.audio"]: the
    versions, the architecture's module and class, the task's specifications) and what loads it (`path`, the file
    as named: `Model.from_pretrained(PATH)` pasted was a NameError); None otherwise."""
    entry = obj.get("pyannote.audio") if isinstance(obj, Mapping) else None
    if not isinstance(entry, Mapping) or not isinstance(architecture := entry.get("architecture"), Mapping):
        return None
    module, name = architecture.get("module"), architecture.get("class")
    versions = entry.get("versions")
    version = versions.get("pyannote.audio") if isinstance(versions, Mapping) else None
    # Strings the file gives, cut: a module or version string of a megabyte was quoted whole (2 MB of --json).
    model = (clip_middle(f"{module}.{name}", _NOTE_NAME_CHARS) if isinstance(module, str) and isinstance(name, str)
             else "its model")
    saved = f", saved by pyannote.audio {clip_middle(version, 40)}" if isinstance(version, str) else ""
    return (f"a pyannote.audio checkpoint (a Lightning checkpoint of {model}{saved}): state_dict is read; "
            + (f"import pyannote.audio; pyannote.audio.Model.from_pretrained({str(path)!r})" if path is not None
               else "pyannote.audio's Model.from_pretrained, given the checkpoint's path,")
            + " loads it, rebuilding "
            "that class from the checkpoint's own architecture and hyper_parameters")


def _scripted_methods(path: Path) -> bool:
    """Whether a TorchScript archive's top-level code (`<archive>/code/__torch__.py`) defines a method: a scripted
    class named `Module` (`class Module(nn.Module)` in a script's __main__) is `__torch__.Module` too, with its
    forward, where libtorch's OutputArchive defines none. True when the code cannot be read (said as code).

    `<archive>` is the folder of the archive's first record, as torch's reader names it, and the name is matched in
    any case, as miniz finds it: the first name ending in `/code/__torch__.py` was read before, and a second folder's
    copy without methods, listed ahead of the one torch.jit.load compiles, had a `__setstate__` that runs on load
    said to be "no code"."""
    import zlib

    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            prefix = infos[0].filename.partition("/")[0] if infos else ""
            wanted = f"{prefix}/code/__torch__.py".lower()
            members = [info for info in infos if info.filename.lower() == wanted]  # each copy of a name listed twice
            if not members:
                return True
            texts = []
            for member in members:
                with archive.open(member) as handle:
                    texts.append(handle.read(1 << 20).decode("utf-8", "replace"))  # at most 1 MB inflated each
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, NotImplementedError, EOFError, RuntimeError,
            zlib.error):
        return True
    return any(re.search(r"^\s+def \w", text, re.MULTILINE) is not None for text in texts)


def _self_distillation_teacher(obj: Any) -> bool:
    """Whether `obj` is a DINO or iBOT training checkpoint (main_dino.py's `{"student", "teacher", "optimizer",
    "epoch", "args", "dino_loss"}`, iBOT's `ibot_loss`) with a non-empty `teacher`: the weights their evaluation
    (eval_linear.py, eval_knn.py: `--checkpoint_key teacher` by default) and their released backbones come from.
    `student` came first in the key search and was read, silently. The loss's own state dict (its `center` buffer)
    marks a self-distillation run: a knowledge-distillation checkpoint of a student and a teacher, whose product is
    the student, has none and keeps the key search's order. The teacher is the student's own copy (its EMA), so its
    names are the student's, `module.` (DistributedDataParallel, on one side only) aside; iBOT's student alone holds
    `masked_embed`. A distillation run whose loss keeps a state dict has a teacher of other names: its student is
    read, as before this rule."""
    if not isinstance(obj, Mapping):
        return False
    losses = [k for k, v in obj.items() if isinstance(k, str) and k.endswith("_loss") and isinstance(v, Mapping)]
    student, teacher = obj.get("student"), obj.get("teacher")
    if not (losses and _is_state_dict(student) and _is_state_dict(teacher) and teacher):
        return False
    student_names = {name.removeprefix("module.") for name in student if isinstance(name, str)}
    return all(isinstance(name, str) and name.removeprefix("module.") in student_names for name in teacher)


def _megatron_language_model(obj: Any) -> dict[str, Any] | None:
    """Megatron-LM's `model.language_model` flattened to its modules' names (`encoder.layers.0.<...>.weight`), or None
    for any other file."""
    model = obj.get("model") if isinstance(obj, Mapping) else None
    language = model.get("language_model") if isinstance(model, Mapping) else None
    return _megatron_flat(language, min_parts=2)


def _megatron_virtual_chunks(obj: Any) -> list[tuple[str, dict[str, Any]]]:
    """Megatron-LM's virtual-pipeline save (`model0`, `model1`, ... in place of `model`, one model chunk each, its
    layers a slice of the pipeline stage's): each chunk's `language_model` flattened, in order; [] for any other
    file. A middle chunk holds the encoder alone, so one part suffices where the numbered keys say what it is."""
    if not isinstance(obj, Mapping) or "model" in obj or "model0" not in obj:
        return []
    chunks = []
    for index in range(len(obj)):
        entry = obj.get(f"model{index}")
        if entry is None:
            break
        flat = _megatron_flat(entry.get("language_model") if isinstance(entry, Mapping) else None, min_parts=1)
        if flat is None:
            return []
        chunks.append((f"model{index}", flat))
    return chunks if len(chunks) >= 2 else []


def _megatron_layers(flat: Mapping[str, Any]) -> int:
    """How many transformer layers a flattened Megatron language model holds (distinct `layers.N` indices)."""
    return len({m.group(1) for name in flat if (m := re.search(r"(?:^|\.)layers\.(\d+)\.", name))})


def _megatron_flat(language: Any, min_parts: int) -> dict[str, Any] | None:
    """A Megatron-LM `language_model` mapping (one dict per part) flattened to its modules' names, or None when it
    is no such mapping or fewer than `min_parts` of its parts hold tensors."""
    if not isinstance(language, Mapping) or not language or not set(language) <= _MEGATRON_PARTS:
        return None
    if not all(isinstance(part, Mapping) for part in language.values()):
        return None
    flat: dict[str, Any] = {}

    def walk(value: Mapping[Any, Any], prefix: str, depth: int) -> None:
        for name, item in value.items():
            if isinstance(item, Mapping) and depth < 6 and not is_tensor(item):
                walk(item, f"{prefix}{name}.", depth + 1)
            else:
                flat[f"{prefix}{name}"] = item

    walk(language, "", 0)
    tensors = sum(1 for value in flat.values() if is_tensor(value))
    parts_with_tensors = sum(1 for part in language.values() if _count_tensors(part, set()))
    return flat if parts_with_tensors >= min_parts and tensors >= 0.9 * len(flat) else None


# What torch.optim's optimizers keep per parameter (Adam / AdamW, SGD, RMSprop, Adagrad, Adadelta, Adamax).
_OPTIMIZER_STATE_KEYS = frozenset({"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg",
                                   "sum", "acc_delta", "exp_inf", "grad_avg"})
_RNG_KEYS = frozenset({"python", "numpy", "cpu", "cuda", "mps", "xpu", "npu", "hpu", "mlu", "musa", "xla"})


def training_state_kind(obj: Any) -> str | None:
    """What a file of training state holds, in words, or None: an optimizer's, a learning-rate scheduler's or a
    gradient scaler's state dict, or the random-number generator states a Trainer (`rng_state.pth`) or
    Accelerate (`random_states_0.pkl`) saves."""
    from weightdoctor.security.policy import TRAINING_ARGUMENTS

    if isinstance(obj, InertObject) and f"{type(obj).__module__}.{type(obj).__qualname__}" in TRAINING_ARGUMENTS:
        trainer, what = ("TRL trainer", "its TrainingArguments, ") if type(obj).__module__.startswith("trl.") \
            else ("Trainer", "")
        return (f"a {trainer}'s {type(obj).__qualname__} ({what}training_args.bin: the run's settings, read as inert "
                "data, never imported)")
    if isinstance(obj, (list, tuple)) and obj and all(
            isinstance(group, Mapping) and isinstance(group.get("params"), (list, tuple)) and "lr" in group
            for group in obj[:64]):
        return ("an optimizer's param_groups alone (learning rate and settings of each group, its parameters by "
                "number: ColossalAI's pytorch_optim_group.bin, beside the pytorch_optim-0000N.bin states)")
    if not isinstance(obj, Mapping):
        return None
    if obj and all(isinstance(k, int) and not isinstance(k, bool) for k in obj) and all(
            isinstance(state, Mapping) and state and all(isinstance(name, str) for name in state)
            and not set(state).isdisjoint(_OPTIMIZER_STATE_KEYS) for state in list(obj.values())[:64]):
        # torch.optim's `state` without its `param_groups`: ColossalAI's booster.save_optimizer(shard=True) writes
        # it in pytorch_optim-0000N.bin shards, read with pytorch_optim.bin.index.json; it was "no state dict ...
        # 0 (a state dict of 3 tensors: pick it with --key)", as if each parameter's Adam state were a model.
        return ("an optimizer's per-parameter states keyed by parameter number, without its param_groups "
                "(ColossalAI's pytorch_optim-0000N.bin shards; booster.save_model writes the model apart, as in a "
                "modeling/ folder beside optimizer/)")
    keys = {k for k in obj if isinstance(k, str)}
    if {"state", "param_groups"} <= keys and isinstance(obj["param_groups"], (list, tuple)):
        return "an optimizer's state dict (torch.optim: `state` and `param_groups`, e.g. a Trainer's optimizer.pt)"
    if "last_epoch" in keys and keys & {"base_lrs", "_step_count", "_last_lr"}:
        return "a learning-rate scheduler's state dict (e.g. a Trainer's scheduler.pt)"
    if {"scale", "growth_factor", "backoff_factor"} <= keys:
        return "a gradient scaler's state dict (torch.amp.GradScaler, e.g. a Trainer's scaler.pt)"
    if keys == set(obj) and "python" in keys and keys <= _RNG_KEYS:
        return f"random-number generator states ({', '.join(map(str, obj))}: a Trainer's rng_state.pth)"
    if {"random_state", "numpy_random_seed", "torch_manual_seed"} <= keys:
        return "random-number generator states (Accelerate's random_states_N.pkl)"
    if {"seed", "epochs_run", "total_epochs"} <= keys:
        # torchtune's recipe state (training.SEED_KEY, EPOCHS_KEY, TOTAL_EPOCHS_KEY, OPT_KEY): what a recipe
        # resumes from; its checkpointer writes the model's weights to files of their own.
        return "torchtune's recipe state (seed, epochs_run, total_epochs, the optimizer: its recipe_state.pt)"
    return None


def _scan_words(report: ScanReport, path: Path) -> str:
    """The static scan's verdict of a file read but refused, in words (only a file whose scan passed is read).

    Example:
        >>> _scan_words(scan_file(Path("mel_stats.pth")), Path("mel_stats.pth"))  # doctest: +SKIP
        "its pickle is safe (static scan: 3 globals torch's weights_only loader allows): torch.load('mel_stats.pth',
        weights_only=True) reads it"
    """
    from weightdoctor.security.policy import PLAIN_VALUE_FORMS

    inert = sorted({g.qualified for g in report.globals if g.safety == "inert"})
    # numpy's rebuilds are safe, but torch's weights_only loader allows none of them by default: a numpy array file
    # was said to be read by the advice below, which then failed on numpy._core.multiarray._reconstruct.
    numpy = sorted({g.qualified for g in report.globals if g.module.split(".")[0] == "numpy"} - set(inert))
    # frozenset, slice and deque (policy.PLAIN_VALUE_TYPES) are read as they are, but torch's loader refuses them.
    plain = sorted({g.qualified for g in report.globals if g.qualified in PLAIN_VALUE_FORMS} - set(inert))
    count = len({g.qualified for g in report.globals}) - len(inert) - len(numpy) - len(plain)
    parts = [f"{counted(count, 'global')} torch's weights_only loader allows"] if count else []
    if numpy:
        listed = ", ".join(numpy[:4]) + (", ..." if len(numpy) > 4 else "")
        parts.append(f"{counted(len(numpy), 'numpy global')} ({listed})")
    if plain:
        parts.append(f"{', '.join(plain)}: plain Python values")
    if inert:
        shown = ", ".join(inert[:4]) + (f" and {len(inert) - 4} more" if len(inert) > 4 else "")
        parts.append(f"{shown} read as inert data, never imported")
    said = f"its pickle is safe (static scan: {', and '.join(parts) or 'no globals'})"
    if report.container == "pickle":
        return said  # a plain pickle.dump file: torch.load reads no such file, whatever it names
    refused = [f"{'that' if len(inert) == 1 else 'those'}"] if inert else []
    if numpy:
        refused.append("numpy's globals (unless torch.serialization.safe_globals allows them)")
    if plain:
        refused.append(f"{', '.join(plain)}")
    if report.protocol >= 3:
        # torch's restricted loader implements protocol 2's opcodes: protocol 4's FRAME stops it, and protocol 3's
        # bytes opcodes (a protocol 3 pickle without bytes it reads).
        refused.append(f"its pickle protocol {report.protocol} (torch's restricted loader reads protocol 2's opcodes)")
    if not refused:
        return f"{said}: torch.load({str(path)!r}, weights_only=True) reads it"
    verb = "may refuse" if report.protocol == 3 and len(refused) == 1 else "refuses"
    return f"{said}, but torch.load({str(path)!r}, weights_only=True) {verb} it for {' and for '.join(refused)}"


def _what(obj: Any) -> str:
    """What a whole file holds when it is no mapping: `a single tensor [5056] uint8`, `a list, 3 items`."""
    return f"a single {_describe(obj)}" if is_tensor(obj) else f"a {_describe(obj)}"


def _follow_key(obj: Any, key: str) -> Mapping[str, Any]:
    current, rest = obj, key
    while rest:
        if isinstance(current, (list, tuple)):
            # `optimizer_states.0`: an index into a list, as Lightning keeps one entry per optimizer.
            head, _, tail = rest.partition(".")
            # Digits past 4,300 are no index, and int() refuses them (ValueError): compared by length first. ASCII
            # digits only: str.isdigit() is true of '²', which int() refuses too.
            if not _decimal(head) or len(head) > 20 or int(head) >= len(current):
                raise UsageError(f"--key {key!r}: {head!r} is not an index of a {type(current).__name__} of "
                                 f"{counted(len(current), 'item')}")
            current, rest = current[int(head)], tail
            continue
        if not isinstance(current, Mapping):
            raise UsageError(f"--key {key!r}: {type(current).__name__} has no entries")
        # Longest matching prefix first, since a key may itself contain dots. The entries are matched against the
        # key, not every dotted prefix of the key looked up: that joined each prefix anew, and a --key of 60,000
        # segments took 11 s before saying that its first one was no entry.
        matches = [k for k in current
                   if type(k) is str and rest.startswith(k) and (len(rest) == len(k) or rest[len(k)] == ".")]
        if matches:
            candidate = max(matches, key=len)
            current, rest = current[candidate], rest[len(candidate) + 1:]
            continue
        head, _, tail = rest.partition(".")
        # An int key (A1111's hypernetworks: {320: [...], 640: [...], "name": ...}) typed as digits; never
        # a bool key, which compares equal to 0 and 1.
        number = int(head) if _decimal(head) and len(head) <= 20 else None
        found = next((k for k in current if type(k) is int and k == number), None)
        if found is not None:
            current, rest = current[found], tail
            continue
        available = ", ".join(_key_text(k) for k in list(current)[:10])
        raise UsageError(f"--key {key!r}: no entry {head!r} (entries: {available})")
    # `--key model.language_model` (or a virtual pipeline's `model1.language_model`): the parts read together, as
    # the default does; named alone, that dict of dicts was refused as no mapping of tensors.
    megatron = _megatron_flat(current, min_parts=1) if not _is_state_dict(current) else None
    if megatron is not None:
        return megatron
    # `--key net` of a StyleTTS 2 checkpoint: its modules read together, as the default reads them.
    styletts = _styletts2_modules(current) if not _is_state_dict(current) else None
    if styletts is not None and styletts[1] is None:
        return styletts[0]
    if not _is_state_dict(current):
        kind = training_state_kind(current)
        if kind is not None:  # `--key optimizer_states.0` of a Lightning checkpoint: say what it is
            raise UsageError(f"--key {key!r} names {kind}, not model weights (a mapping of names to tensors)")
        raise UsageError(f"--key {key!r} does not name a mapping of tensors ({_describe(current)})")
    return current


def _weights_only_message(exc: Exception) -> str:
    text = str(exc)
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if match:
        return f"torch's weights_only loader refuses to unpickle {match.group(1)}; the file holds more than weights"
    # torch wraps the real reason in paragraphs of advice; keep the reason.
    reason = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = reason.group(1) if reason else (lines[0] if lines else type(exc).__name__)
    return f"torch's weights_only loader refuses the pickle: {clip_words(first.strip(), 200)}"


def check_torch_version(version: str | None = None) -> None:
    """Refuse to unpickle with a torch whose `weights_only` loader has known escapes (before 2.10).

    Raises:
        UnsupportedEnvironment: the installed torch is older than `MIN_TORCH`.
    """
    if version is None:
        import torch

        version = torch.__version__
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None or (int(match.group(1)), int(match.group(2))) < MIN_TORCH:
        raise UnsupportedEnvironment(
            f"torch {version} is installed; reading pickles needs torch >= {MIN_TORCH[0]}.{MIN_TORCH[1]}, whose "
            "weights_only loader has no known escape (pip install -U torch)"
        )


def _identity(path: Path) -> tuple[int, int, int, int]:
    stat = path.stat()
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def scan_or_refuse(path: Path, label: str | None = None) -> ScanReport:
    """Scan a pickle-based file statically; raise `UnsafePickle` unless its verdict is "safe".

    Raises:
        UnsafePickle: a dangerous or unknown global, or a pickle the scanner cannot parse.
    """
    from weightdoctor.security import scan_file
    from weightdoctor.security.policy import TRAINING_ARGUMENTS

    report = scan_file(path, label)
    if report.unsafe and (scripted := _torchscript_only(report, path)) is not None:
        raise UnsafePickle(scripted)
    if report.unsafe:
        hint = ""
        if any(g.module.startswith(("__torch__", "torch.jit")) for g in report.globals):
            # Not malware: the pickle of a scripted module names its compiled classes and TorchScript helpers.
            hint = (" (this is a TorchScript archive, torch.jit.save: load it with torch.jit.load, which runs its "
                    "code, only if you trust it, and save model.state_dict() to read the weights here)")
        elif any(g.module.startswith("transformers.training_args") or g.name.endswith("TrainingArguments")
                 or g.qualified in TRAINING_ARGUMENTS for g in report.globals):
            # Trainer saves its arguments object whole beside each checkpoint: settings, not weights.
            hint = (" (this is a Trainer's training_args.bin: its TrainingArguments object, pickled, not weights; "
                    "the model's weights are in model.safetensors or pytorch_model.bin beside it)")
        elif not any(g.module == "ultralytics" or g.module.startswith("ultralytics.") for g in report.globals) \
                and any(g.module in ("models.yolo", "models.common") for g in report.globals):
            # YOLOv5's .pt (github.com/ultralytics/yolov5 train.py: {"model", "ema", "updates", "optimizer", "opt",
            # "git", "date"}) pickles classes of that repo's top-level `models` package; the ultralytics package
            # refuses it ("not forwards compatible with YOLOv8"), so YOLO(path) is no way to its weights.
            hint = (" (this is a YOLOv5 checkpoint, saved by github.com/ultralytics/yolov5: the model is pickled whole "
                    "as that repo's models.yolo classes, which the ultralytics package refuses to load; where you "
                    "trust the file, in a clone of ultralytics/yolov5 (its models package importable), import torch; "
                    f"torch.save({_trusted_load(path, 'model')}.float().state_dict(), "
                    f"{str(state_dict_name(path))!r}) writes the weights to read here)")
        elif any(g.module == "ultralytics" or g.module.startswith("ultralytics.") for g in report.globals):
            # Ultralytics' .pt: {"model": the DetectionModel pickled whole, "ema", "optimizer",
            # "train_args", ...}; its classes run on load, so only ultralytics itself reads it.
            hint = (" (this is an Ultralytics YOLO checkpoint: the model is pickled whole beside ema, optimizer and "
                    "train_args; where you trust the file, with ultralytics installed, import torch; from ultralytics "
                    f"import YOLO; torch.save(YOLO({str(path)!r}).model.state_dict(), "
                    f"{str(state_dict_name(path))!r}) writes the weights to read here)")
        elif any(g.module.split(".")[0] == "demucs" for g in report.globals):
            # Demucs' .th files (demucs.states.serialize_model + save_with_checksum, `<name>-<sha8>.th`): the model
            # class itself under 'klass' beside its args and its state dict under 'state'. Said bare, the refusal
            # named an unknown global and no way to the weights.
            hint = (" (this is a Demucs model package: the model's class under 'klass', its constructor's args and "
                    "kwargs, its state dict under 'state'; where you trust the file, with demucs installed, import "
                    f"torch; torch.save({_trusted_load(path, 'state')}, "
                    f"{str(state_dict_name(path))!r}) writes that state dict to read here (demucs' load_model "
                    "builds the model from the package))")
        elif any(g.module.split(".")[0] == "fastai" for g in report.globals if g.safety != "safe"):
            # fastai's learn.export() torch.saves the whole Learner (model, loss function, the data loaders'
            # transforms) as export.pkl; load_learner unpickles it with fastai's classes. The generic whole-model
            # hint named neither the Learner nor load_learner, the one way fastai users have to its weights.
            hint = (" (this is a fastai Learner exported with learn.export(): the whole Learner pickled, its model "
                    "beside the loss function and the data transforms, as fastai's classes; where you trust the file, "
                    "with fastai installed, import torch; from fastai.learner import load_learner; torch.save("
                    f"load_learner({str(path)!r}).model.state_dict(), {str(state_dict_name(path))!r}) writes the "
                    "state dict to read here (learn.save() writes it as models/<name>.pth, {'model', 'opt'}, which "
                    "weightdoctor reads))")
        elif (pyg := [g for g in report.globals if g.safety != "safe"]) and all(
                g.module == "torch_geometric.data" or g.module.startswith("torch_geometric.data.") for g in pyg):
            # PyG's InMemoryDataset.process() saves its collated graphs as processed/data.pt ((data, slices), or
            # (data.to_dict(), slices, Data) since 2.4): a torch.save file of the data set, named "suspicious" with no
            # word that it is graphs, not weights.
            hint = (" (this is a PyTorch Geometric data file, what InMemoryDataset saves as processed/data.pt: the "
                    "data set's graphs, as torch_geometric.data classes and their slices, not a model's weights; "
                    "a PyG model's weights are what torch.save(model.state_dict()) writes)")
        elif any(g.module.split(".")[0] == "torchao" for g in report.globals if g.safety != "safe"):
            # transformers' TorchAoConfig checkpoints saved as .bin: each quantized weight pickled as its torchao
            # tensor subclass (AffineQuantizedTensor, Int4Tensor, ...), which only torchao's classes rebuild.
            hint = (" (these are torchao quantized tensors, each pickled as its torchao tensor subclass: only torchao "
                    "rebuilds them, and weightdoctor reads no tensor subclass; from_pretrained loads such a "
                    "checkpoint with torchao installed (its config.json's quantization_config: quant_method "
                    "torchao))")
        elif any(g.module.startswith(("torch.distributed.tensor", "torch.distributed._shard.sharded_tensor"))
                 for g in report.globals if g.safety != "safe"):
            # torch.save(model.state_dict()) on one rank of an FSDP2 (fully_shard), FSDP SHARDED_STATE_DICT or
            # tensor-parallel run: DTensors (or ShardedTensors), this rank's shards and the mesh they came from.
            from weightdoctor.structure import FSDP_FULL_STATE_DICT_SAVE

            hint = (" (these are DTensors or ShardedTensors, what model.state_dict() returns under FSDP2's "
                    "fully_shard, FSDP's SHARDED_STATE_DICT or tensor parallelism: each rank's file holds its own "
                    "shards, and weightdoctor reads no tensor subclass; save the whole weights instead, "
                    f"{FSDP_FULL_STATE_DICT_SAVE})")
        elif any(g.module.split(".")[0] == "flair" for g in report.globals if g.safety != "safe"):
            # flair's Model.save (SequenceTagger, TextClassifier: final-model.pt, best-model.pt, a flair Hub repo's
            # pytorch_model.bin) torch.saves a dict: the state dict under 'state_dict' beside flair's own objects
            # (the label Dictionary; whole embeddings in flair < 0.12), which only flair's classes rebuild. The
            # generic whole-model hint, or none at all, named neither flair nor where its weights are.
            hint = (" (this is a flair model, what flair's Model.save writes: the state dict under 'state_dict' "
                    "beside flair's own objects (the label Dictionary, the embeddings), pickled by class; where you "
                    "trust the file, with flair installed, import torch; torch.save("
                    f"{_trusted_load(path, 'state_dict')}, {str(state_dict_name(path))!r}) "
                    "writes that state dict to read here (flair's Model.load builds the model from the file))")
        elif any(g.module == "joblib.numpy_pickle" for g in report.globals):
            # joblib.dump (scikit-learn models, SetFit's model_head.pkl) writes each numpy array's raw bytes into
            # the pickle stream after a NumpyArrayWrapper, so the scan stops there as at damage: the file was
            # called unparseable with no word of joblib, nor that what it holds are objects, not weights.
            classes = sorted({g.qualified for g in report.globals if g.safety != "safe"
                              and not g.module.startswith(("joblib.", "numpy"))})
            shown = f" ({', '.join(classes[:3])}{', ...' if len(classes) > 3 else ''})" if classes else ""
            hint = (" (this is a joblib.dump file, as scikit-learn models and SetFit's model_head.pkl are saved: "
                    "joblib writes each numpy array's bytes inside the pickle stream, which is why the scan stops "
                    f"at them; its objects{shown} are pickled by class, and joblib.load builds them by running "
                    "their code: load it only if you trust it, with the library that defines them installed; it "
                    "holds no state dict to read here)")
        elif any(g.module.startswith(("torch.nn.modules", "transformers.models")) for g in report.globals):
            # torch.save(model) pickles the classes themselves; only a state dict is data. Who has the file and not
            # the model object (a downloaded .pt) needs the way from one to the other, as the YOLO hints give it.
            custom = sorted({g.qualified for g in report.globals if g.safety not in ("safe", "dangerous")
                             and not g.module.startswith(("torch.", "transformers.", "collections"))})
            code = (f"the code that defines its classes ({custom[0]}{', ...' if len(custom) > 1 else ''}) importable"
                    if custom else "the library that defines its classes installed")
            hint = (" (this looks like a whole pickled model, torch.save(model): the model's classes are pickled by "
                    "name and only their code rebuilds it; its owner can save model.state_dict() instead, and where "
                    f"you trust the file, with {code}, import torch; obj = {_trusted_load(path)}; model = obj if "
                    "isinstance(obj, torch.nn.Module) else next(v for v in obj.values() if isinstance(v, "
                    f"torch.nn.Module)); torch.save(model.state_dict(), {str(state_dict_name(path))!r}) rebuilds the "
                    "model (from its entry where a dict holds it) and writes its weights to read here)")
        dangerous = sorted({g.qualified for g in report.globals if g.safety == "dangerous"
                            # joblib's array wrapper is what the joblib hint is about, not something beside it
                            and not (g.qualified == "joblib.numpy_pickle.NumpyArrayWrapper" and "joblib" in hint)})
        if hint and dangerous:
            # The ways to the weights above are for a file that is what it looks like: one that also named
            # posix.system was told to be loaded with weights_only=False, which calls it, and no word of it.
            shown = f"{dangerous[0]}{f' and {len(dangerous) - 1} more' if len(dangerous) > 1 else ''}"
            hint = (f"{hint[:-1]}; beware: it also names {shown}, which unpickling may call (torch.load with "
                    "weights_only=False, or any loader of it): load it only if you know why that is there)")
        raise UnsafePickle(f"{report.summary()}; nothing was unpickled{hint}")
    return report


def _torchscript_only(report: ScanReport, path: Path) -> str | None:
    """What to say of a TorchScript archive (torch.jit.save: OpenAI CLIP's .pt files) whose pickles name nothing but
    its scripted classes (`__torch__.*`) and TorchScript's list builders (`torch.jit._pickle.*`); None for any other
    file, a TorchScript archive with another global among them included, which the scan's verdict then names."""
    flagged = [g for g in report.globals if g.safety != "safe"]
    if not flagged or report.problems or not all(
            g.module == "__torch__" or g.module.startswith("__torch__.") or g.module == "torch.jit._pickle"
            for g in flagged):
        return None
    classes = sorted({g.qualified for g in flagged if g.module.split(".")[0] == "__torch__"})
    if classes == ["__torch__.Module"] and not _scripted_methods(path):
        # libtorch's torch::serialize::OutputArchive names its module __torch__.Module and registers each tensor
        # as a parameter of it, with no code: what tch's VarStore::save writes (rust-bert's rust_model.ot).
        return ("this is a TorchScript archive of named tensors and no code (libtorch's torch::serialize::"
                "OutputArchive, as tch's VarStore::save writes rust-bert's rust_model.ot), not a torch.save state "
                f"dict, so nothing was unpickled; where you trust the file, {_jit_resave(path)} writes its "
                "tensors to read here (a Hub repo's model.safetensors or "
                "pytorch_model.bin beside it holds the same model under transformers' names)")
    shown = ", ".join(classes[:3]) + (f" and {len(classes) - 3} more" if len(classes) > 3 else "")
    return ("this is a TorchScript archive, torch.jit.save: the model is compiled TorchScript code (its classes "
            f"{shown or 'none'}) that torch.jit.load runs, not a state dict, so nothing was unpickled; where you trust "
            f"the file, {_jit_resave(path)} writes the weights to read here")


def _jit_resave(path: Path) -> str:
    """The Python that writes a TorchScript archive's tensors as a torch.save state dict beside it, the file named as
    the user named it: `torch.jit.load(path)` pasted was a NameError.

    Example:
        >>> _jit_resave(Path("exports/model.pt"))
        "import torch; torch.save(torch.jit.load('exports/model.pt').state_dict(), 'exports/model-state-dict.pt')"
    """
    from weightdoctor.checkpoint.hub import written_beside

    written = written_beside(path, f"{path.stem}-state-dict.pt")
    return f"import torch; torch.save(torch.jit.load({str(path)!r}).state_dict(), {str(written)!r})"


def _inert_safe_globals(report: ScanReport) -> list[Any]:
    """The inert stand-ins (see `checkpoint.inert`) for the configuration objects the scan found, under their
    names, as torch's `safe_globals` takes them: torch's loader builds the stand-in, never the real class."""
    from weightdoctor.security.policy import normalised_names

    # Under each name torch's loader may look it up: `__builtin__.dict` of a protocol-2 pickle as `builtins.dict`.
    stand_ins = {name: stand_in(name) for name in _inert_names(report)}
    return [(stand_ins[name], form) for name in sorted(stand_ins) for form in normalised_names(name)]


def _plain_safe_globals(report: ScanReport) -> list[Any]:
    """frozenset, slice and deque (`policy.PLAIN_VALUE_TYPES`) where the scan found them, the real types under each
    name torch's loader may look them up by: the scan judged every call of them (`policy.call_problem`)."""
    from weightdoctor.security.policy import PLAIN_VALUE_FORMS, normalised_names

    types = {"builtins.frozenset": frozenset, "builtins.slice": slice, "collections.deque": collections.deque}
    found = {g.qualified for g in report.globals if g.qualified in PLAIN_VALUE_FORMS}
    return [(types[form], form) for form in sorted({f for name in found for f in normalised_names(name)})
            if form in types]


def _numpy_safe_globals(report: ScanReport) -> list[Any]:
    """The numpy rebuilds the scan found (all classified safe), as torch's `safe_globals` wants them."""
    names = {g.qualified for g in report.globals if g.module.split(".")[0] == "numpy"}
    if not names:
        return []
    import numpy

    core = getattr(numpy, "_core", None) or numpy.core
    known: dict[str, Any] = {
        "numpy.ndarray": numpy.ndarray,
        "numpy.dtype": numpy.dtype,
        "numpy.core.multiarray._reconstruct": core.multiarray._reconstruct,
        "numpy._core.multiarray._reconstruct": core.multiarray._reconstruct,
        "numpy.core.multiarray.scalar": core.multiarray.scalar,
        "numpy._core.multiarray.scalar": core.multiarray.scalar,
    }
    # Building a numpy dtype makes an instance of its numpy.dtypes class, which torch checks too.
    dtypes_module = getattr(numpy, "dtypes", None)
    if "numpy.dtype" in names and dtypes_module is not None:
        names |= {f"numpy.dtypes.{n}" for n in dir(dtypes_module) if n.endswith("DType") and n[0].isupper()}
    known["numpy._core.numeric._frombuffer"] = core.numeric._frombuffer
    known["numpy.core.numeric._frombuffer"] = core.numeric._frombuffer
    result: list[Any] = []
    for name in sorted(names):
        if name in known:
            result.append((known[name], name))
        elif name.startswith("numpy.dtypes."):
            cls = getattr(getattr(numpy, "dtypes", None), name.rsplit(".", 1)[1], None)
            if isinstance(cls, type):
                result.append((cls, name))
    return result


def _buildable(target: Any) -> bool:
    """Whether BUILD may set the state of `target`: only values the pickle itself made (arrays, dtypes,
    tensors, ordered dicts). Never a global it imported: BUILD on `torch._utils._rebuild_tensor_v2` could set
    its `__defaults__` and change how every later file in this process is read."""
    import collections

    import torch

    # An inert stand-in's `__setstate__` only keeps the state for display (see checkpoint/inert.py).
    allowed: tuple[type, ...] = (collections.OrderedDict, torch.Tensor, InertObject)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        allowed += (numpy.ndarray, numpy.dtype, numpy.generic)
    return isinstance(target, allowed) and not isinstance(target, type)


class RefusedByPolicy(pickle.UnpicklingError):
    """The restricted unpickler refused what the pickle asked for (a global, a call, a BUILD): a security
    finding, unlike the UnpicklingError of a malformed stream."""


class _RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """An unpickler that resolves only the globals the scan policy calls safe (what weights_only allows),
    and lets BUILD set the state of the values the pickle made, never of an imported global.

    The pure-Python unpickler, since the C one offers no hook on BUILD; only files torch's weights_only
    loader cannot read (non-standard pickles) come here.
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: Any, inert: frozenset[str] = frozenset(), **kwargs: Any) -> None:
        from weightdoctor.security.opcodes import CompactMemo

        super().__init__(file, **kwargs)
        # The pure-Python unpickler's memo is a dict, ~100 bytes an entry: 10^7 MEMOIZE opcodes (a 10 MB .pkl) took
        # 1 GB. The same memo in a list takes 8 bytes an entry (see CompactMemo for what genuine files need).
        self.memo = CompactMemo()
        # Globals the scan read as inert in this file's context (`policy.inert_in_context`), besides INERT ones.
        self._inert = inert
        # id of each object find_class returned -> its name, and the object, kept so that its id stays its own
        self._globals: dict[int, tuple[str, Any]] = {}

    def find_class(self, module: str, name: str) -> Any:
        from weightdoctor.security.policy import INERT, SAFE, classify

        safety = classify(module, name)
        if safety == INERT or f"{module}.{name}" in self._inert:  # a configuration object: its stand-in
            found = stand_in(f"{module}.{name}")
            self._globals[id(found)] = (f"{module}.{name}", found)
            return found
        if safety != SAFE:
            raise RefusedByPolicy(f"refused to import {module}.{name}: not a global a weights file needs")
        found = super().find_class(module, name)
        guard = _GUARDED.get(f"{module}.{name}")
        result = found if guard is None else guard(found)
        self._globals[id(result)] = (f"{module}.{name}", result)
        return result

    def _name_of(self, value: Any) -> str | None:
        entry = self._globals.get(id(value))
        return entry[0] if entry is not None and entry[1] is value else None

    def _check_call(self, func: Any, args: Any, opcode: str) -> None:
        """The scan's rules for calls (see `policy.call_problem`), again on the real objects."""
        from weightdoctor.security.policy import WATCHED_CALLS, call_problem

        name = self._name_of(func)
        if name is None or name not in WATCHED_CALLS:
            return
        problem = call_problem(name, tuple(args) if isinstance(args, (tuple, list)) else args, self._name_of, opcode)
        if problem is not None:
            raise RefusedByPolicy(f"refused: the pickle {problem}")

    def load_reduce(self) -> None:
        self._check_call(self.stack[-2] if len(self.stack) >= 2 else None, self.stack[-1] if self.stack else (),
                         "REDUCE")
        super().load_reduce()

    def load_newobj(self) -> None:
        self._check_call(self.stack[-2] if len(self.stack) >= 2 else None, self.stack[-1] if self.stack else (),
                         "NEWOBJ")
        super().load_newobj()

    def load_newobj_ex(self) -> None:
        self._check_call(self.stack[-3] if len(self.stack) >= 3 else None, self.stack[-2] if self.stack else (),
                         "NEWOBJ_EX")
        super().load_newobj_ex()

    def _instantiate(self, klass: Any, args: Any) -> Any:  # OBJ and INST
        self._check_call(klass, args, "OBJ")  # INST and OBJ alike: __new__ alone when args is empty
        return super()._instantiate(klass, args)

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def load_build(self) -> None:
        target = self.stack[-2] if len(self.stack) >= 2 else None
        if not _buildable(target):
            raise RefusedByPolicy(
                f"refused BUILD on {type(target).__name__}: a weights file sets the state of arrays and tensors only"
            )
        if isinstance(target, collections.OrderedDict):
            _check_dict_state(self.stack[-1])
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    # Item and element opcodes act on the containers they are meant for only (as torch's weights_only loader
    # allows): a SETITEM on a tensor made over a bytes object the interpreter shares would write into it.
    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        _container(self.stack[-1], dict, "SETITEM")[key] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = _container(self.stack[-1], dict, "SETITEMS")
        for index in range(0, len(items), 2):
            target[items[index]] = items[index + 1]

    def load_append(self) -> None:
        value = self.stack.pop()
        _container(self.stack[-1], list, "APPEND").append(value)

    def load_appends(self) -> None:
        items = self.pop_mark()
        _container(self.stack[-1], list, "APPENDS").extend(items)

    def load_additems(self) -> None:
        items = self.pop_mark()
        _container(self.stack[-1], set, "ADDITEMS").update(items)

    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.APPEND[0]] = load_append
    dispatch[pickle.APPENDS[0]] = load_appends
    dispatch[pickle.ADDITEMS[0]] = load_additems


def _check_dict_state(state: Any) -> None:
    """An ordered dict's BUILD state may add attributes (torch's `_metadata`), never shadow its methods: an
    instance attribute `items` or `keys` would hide the tensors it holds from every reader, and a special name that
    OrderedDict leaves to object or dict (`__deepcopy__`, `__getattr__`) would answer copy.deepcopy of it."""
    from weightdoctor.security.opcodes import dunder_key

    parts = state if isinstance(state, tuple) else (state,)
    for part in parts:
        if part is None or (isinstance(part, dict) and not part):
            continue
        if (not isinstance(part, dict) or isinstance(state, tuple)
                or any(not isinstance(k, str) or hasattr(collections.OrderedDict, k) or dunder_key(k) for k in part)):
            raise RefusedByPolicy(
                "refused BUILD on OrderedDict: its state sets "
                f"{sorted(map(str, part))[:3] if isinstance(part, dict) else type(part).__name__}, which would "
                "hide or replace what the dict holds (a state dict's own state is its `_metadata` only)"
            )


_NO_PART = object()  # `_buffers_in`'s push: a value kept at its parent's place (a dict key may be None)


def _buffers_in(obj: Any) -> list[tuple[str, bytes, bool]]:
    """The bytes each inert io.BytesIO in `obj` holds (its pickled state's first item), and each bytes value that
    starts like a pickle or a zip, with where it sits (`decoder.layers.0.mlp._extra_state`) and whether it is a
    BytesIO; each object visited once, tensors not entered."""
    found: list[tuple[str, bytes, bool]] = []
    # Marked when pushed, not when popped: a list of ten million references to one dict (a 20 MB data.pkl of
    # BINGETs) pushed ten million (value, place) pairs before the first was popped, 1.5 GB and 45 s.
    seen: set[int] = {id(obj)}
    stack: list[tuple[Any, str]] = [] if is_tensor(obj) else [(obj, "")]

    def push(item: Any, where: str, part: Any = _NO_PART, index: bool = False) -> None:
        """Stack `item` at `where.part` (a dict's key, or a list's index, made text only then), unless seen or a
        tensor."""
        if id(item) not in seen and not is_tensor(item):
            seen.add(id(item))
            text = None if part is _NO_PART else str(part) if index else _key_text(part)
            stack.append((item, where if text is None else _joined(where, text)))

    while stack:
        value, where = stack.pop()
        if isinstance(value, InertObject) and type(value).__qualname__ == "BytesIO":
            # Its bytes come from its pickled state (`__setstate__`, as pickle writes a BytesIO) or, built by a call
            # (`io.BytesIO(b"...")` through REDUCE), from its first argument: that buffer went unscanned, and
            # TE's torch.load of it ran the os.system its archive named.
            for held in (value.__dict__.get("_inert_state"), value.__dict__.get("_inert_args")):
                data = held[0] if isinstance(held, tuple) and held else None
                if isinstance(data, (bytes, bytearray)) and data:
                    found.append((where or "the top level", bytes(data), True))
        elif isinstance(value, (bytes, bytearray)) and value:
            # A bytes value that is a pickle or a torch.save archive: its loader's `pickle.loads(ckpt["model"])`
            # or `torch.load(io.BytesIO(...))` runs it (ad hoc training states keep a pickled model so). One of
            # protocol 0 or 1 has no PROTO to start it, so every bytes value is walked; where it does not start
            # like a pickle or a zip only dangerous names refuse it (a tokenizer's proto or text read as a pickle
            # names nonsense globals, never os.system).
            found.append((where or "the top level", bytes(value), False))
        elif isinstance(value, InertObject):
            # An inert object's pickled arguments, state and items (an argparse.Namespace's attributes) are what
            # its loader gets back as plain values too: `pickle.loads(args.blobs[0])` runs a pickle kept there.
            extra = value.__dict__
            for part in (extra.get("_inert_args"), extra.get("_inert_state"), extra.get("_inert_items")):
                if part is not None:
                    push(part, where)
        # Tensors and values seen already are left out before their path is built: a string per tensor, which the
        # pop then skipped.
        if isinstance(value, Mapping):
            for name, item in value.items():
                if item.__class__ not in _LEAVES:
                    push(item, where, name)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for index, item in enumerate(value):
                if item.__class__ not in _LEAVES:
                    push(item, where, index, index=True)
    return found


# Values `_buffers_in` finds nothing in, left out before its push: a list of 2,000,000 Nones (a 2 MB pickle) took
# 1.1 s of calls to push them (red team 44's profile).
_LEAVES = frozenset({type(None), bool, int, float, complex, str})


# The most characters of a place `_buffers_in` names (a refusal shows it); past them it ends in "...".
_MAX_PLACE = 1024


def _joined(where: str, part: str) -> str:
    """`where.part`, cut to `_MAX_PLACE` characters. Each place was built whole from its parent's: 500,000 dicts
    sharing one 1 MiB key (a 6.5 MB file) copied it into a place for each (12 s), and a list 400,000 deep copied
    its growing path at each level (3 s; 10^6 levels, a 3 MB pickle, 20 s)."""
    if len(where) > _MAX_PLACE:
        return where  # already cut
    text = f"{where}.{part[:_MAX_PLACE]}" if where else part[:_MAX_PLACE]
    return text if len(text) <= _MAX_PLACE else f"{text[:_MAX_PLACE]}..."


# The opcodes through which a pickle imports a global: GLOBAL, INST, STACK_GLOBAL, EXT1, EXT2, EXT4.
_IMPORT_OPCODES = (b"c", b"i", b"\x93", b"\x82", b"\x83", b"\x84")
# A memo index from 65,536 up (opcodes.MIN_HOSTILE_MEMO_INDEX), as LONG_BINPUT (r and 4 bytes, little-endian) or PUT
# (p and a line of digits, which Python reads as int does: "+1_000_000" too) writes it: a pickle of no PROTO and no
# import can still set memory aside. b"Nr\x00\x00\x00\x01." (7 bytes, a protocol 1 pickle) took pickle.loads 262 MB.
_LARGE_MEMO_INDEX = re.compile(rb"r(?:..[^\x00].|...[^\x00])|p[^\n]{5,}\n", re.DOTALL)


def _refuse_pickles_in_buffers(obj: Any) -> None:
    """Refuse a file whose inert io.BytesIO, or bytes value that starts like a pickle or a zip, holds a pickle that
    names a dangerous or unknown global.

    TransformerEngine before 1.x saves each module's FP8 state as torch.save into an io.BytesIO, and its
    set_extra_state torch.loads that buffer when the model loads the state dict (without weights_only in the TE
    and torch of those checkpoints): the buffer's pickle runs then. The outer scan sees bytes only, so the file
    was called safe with `posix.system` in its `_extra_state`. Bytes that are no pickle (the scan cannot parse
    them) are left alone: torch.load fails on them without running anything. A bytes value holding a pickle is
    what ad hoc training states keep a pickled model or dataset in, and their loaders unpickle it.

    Raises:
        UnsafePickle: a buffer's pickle names a global that is not safe.
    """
    from weightdoctor.security.extra_state import LOAD_FROM_BYTES, pickle_loads_problem, starts_like_a_pickle
    from weightdoctor.security.policy import DANGEROUS, UNKNOWN
    from weightdoctor.security.scan import scan_bytes

    judged: set[tuple[bytes, bool]] = set()
    for where, data, buffer in _buffers_in(obj):
        # Each scan costs ~10 us however short the value: 10^6 small bytes values took 30 s. A value already judged
        # is judged alike (the first copy would have been refused), and one holding no byte of an opcode that
        # imports (GLOBAL c, INST i, STACK_GLOBAL, EXT1-4) and no zip names no global, so nothing here refuses it.
        # One that starts like a pickle is scanned all the same: a 9-byte pickle of a memo index (LONG_BINPUT 2**25)
        # took pickle.loads 490 MB, and imports nothing; so is one that holds such an index with no PROTO before it.
        if (data, buffer) in judged or (data[:4] != b"PK\x03\x04" and not starts_like_a_pickle(data)
                                        and not any(op in data for op in _IMPORT_OPCODES)
                                        and _LARGE_MEMO_INDEX.search(data) is None):
            continue
        judged.add((data, buffer))
        report = scan_bytes(data)
        # Inert names inside (a Namespace, a BytesIO) build as harmless there as here: TE loads the buffer once.
        unmarked = not buffer and data[:1] != b"\x80" and data[:4] != b"PK\x03\x04"
        flagged = sorted({g.qualified for g in report.globals
                          if g.safety == DANGEROUS or (g.safety == UNKNOWN and not unmarked)})
        if LOAD_FROM_BYTES in flagged and not buffer and data[:1] == b"\x80":
            # pickle.dumps writes every tensor's storage as _load_from_bytes(<torch.save bytes>) (a pickled
            # optimizer state): judged by the archive it torch.loads, as an _extra_state tensor's pickle is.
            problem = pickle_loads_problem(data)
            if problem is None:
                continue
            raise UnsafePickle(f"{problem[0]}: the bytes value at {where} {problem[1]} (the code that reads this "
                               "checkpoint runs it when it unpickles the value, as pickle.loads(ckpt[...]) does); "
                               "the outer file's own globals are safe")
        loaded_by = ("TransformerEngine's set_extra_state torch.loads such a buffer when the model loads this "
                     "state dict, running it" if buffer else "the code that reads this checkpoint runs it when it "
                     "unpickles the value, as pickle.loads(ckpt[...]) or torch.load(io.BytesIO(...)) does")
        what = "io.BytesIO" if buffer else "bytes value"
        held = "torch.save archive" if not buffer and data[:2] == b"PK" else "pickle"
        if flagged:
            shown = ", ".join(flagged[:4]) + (", ..." if len(flagged) > 4 else "")
            raise UnsafePickle(f"{report.verdict}: the {what} at {where} holds a {held} that names {shown} "
                               f"({loaded_by}); the outer file's own globals are safe")
        found = _nested_pickle_problem(report, data if unmarked else None)
        if found is not None:
            raise UnsafePickle(f"suspicious: the {what} at {where} holds a {held} that, at byte {found.offset:,}, "
                               f"{found.message} ({loaded_by}); the outer file's own globals are safe")


def _nested_pickle_problem(report: ScanReport, unmarked: bytes | None) -> ScanProblem | None:
    """The first problem the scan of a nested pickle found in what its loader runs (a call or BUILD no pickler writes:
    Fraction("1e10000000"), a slot state that sets __class__, a memo index built to exhaust memory), or None.

    A pickle of safe and inert names alone was let through whatever it did with them. Parse errors and bytes after
    the pickle are left out, as its loader meets neither (pickle.loads stops at STOP); where `unmarked` is given (the
    bytes, which do not start like a pickle: text may look like protocol 0 opcodes), a first pickle that does not
    parse to its STOP is left alone too, and so is an EXT opcode's import that the first pickle only keeps, drops or
    returns
    (`opcodes.extension_import_used`): 50 of 10^6 random 24-byte values (digests) were EXT1, EXT2 or EXT4 at
    byte 0, a code and STOP, or the like, and were refused.
    """
    from weightdoctor.security.opcodes import extension_import_used
    from weightdoctor.security.scan import walk_stopped

    # What follows the STOP is left out first: junk after a hostile pickle made its parse error one of "the" pickle's.
    loaded = [p for p in report.problems if not (p.member or "").startswith("after the")]
    if unmarked is not None:
        first = _FIRST_PICKLE.get(report.container)
        # A later pickle that does not parse is no reason: torch.load ran a legacy stream's data pickle before it
        # met the storage keys' parse error.
        if any(p.member == first and walk_stopped(p.message) for p in loaded):
            return None
        if any(p.member == first and _EXTENSION_IMPORT.match(p.message) for p in loaded) \
                and not extension_import_used(unmarked):
            # The first pickle's only: torch.load reads a legacy stream's next four when the first returns its
            # magic number, and a tar's pickles (an EXT import called there ran, and the value was said safe).
            loaded = [p for p in loaded if not (p.member == first and _EXTENSION_IMPORT.match(p.message))]
    return next((p for p in loaded if not walk_stopped(p.message)), None)


# How `opcodes` words an EXT opcode's import among a scan's problems.
_EXTENSION_IMPORT = re.compile(r"EXT[124] imports the global registered under code ")
# The member `scan_bytes` names the first pickle of a value in, by its container: what
# `opcodes.extension_import_used` reads (a tar's or zip's pickles are none of it).
_FIRST_PICKLE = {"pickle": "pickle 1", "pytorch-legacy": "magic number"}


# What `_refuse_shadowed_methods` enters; nothing else it meets can hide a mapping's methods.
_WALKED = (dict, list, tuple)


def _refuse_shadowed_methods(obj: Any) -> None:
    """Refuse an unpickled mapping whose instance attributes hide its methods. torch's weights_only loader lets
    BUILD update an OrderedDict's `__dict__` with anything: `{"items": ...}` would make `state_dict.items()`
    return what the file chose instead of the tensors it holds.

    Raises:
        UnsafePickle: such a mapping, anywhere in the dicts, lists and tuples of `obj` (32 levels deep).
    """
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if id(value) in seen or depth > _MAX_ARRAY_DEPTH:
            continue
        seen.add(id(value))
        if isinstance(value, dict):
            attributes = getattr(value, "__dict__", None) or {}
            shadowing = sorted(str(k) for k in attributes if not isinstance(k, str) or hasattr(type(value), k))
            if shadowing:
                raise UnsafePickle(f"an unpickled {type(value).__name__} sets attributes {shadowing[:3]} that hide "
                                   "its own methods (what it holds would be misread); nothing is trusted from it")
            # Only containers are looked at when popped: a tensor (100,000 of them in a state dict) or any other
            # leaf is left out before a stack entry is built for it, which then did nothing (160 ms a 100k-tensor .bin).
            stack.extend((item, depth + 1) for item in value.values() if isinstance(item, _WALKED))
        elif isinstance(value, (list, tuple)):
            stack.extend((item, depth + 1) for item in value if isinstance(item, _WALKED))


def _refuse_property_state(rebuild: Callable[..., Any]) -> Callable[..., Any]:
    """`_rebuild_from_type_v2` / `_rebuild_parameter_with_state`, refusing a state that sets an attribute the
    tensor type defines: `{"real": 65}` writes 65 into the tensor's memory, which may be bytes the interpreter
    shares. A tensor's own extra attributes (what the state is for) are set as before."""
    import torch

    def checked(*args: Any) -> Any:
        state = args[-1]
        for part in state if isinstance(state, tuple) else (state,):
            if part and (not isinstance(part, dict)
                         or any(not isinstance(k, str) or hasattr(torch.Tensor, k) for k in part)):
                raise RefusedByPolicy(
                    f"refused a tensor state that sets {sorted(map(str, part))[:3]}: a weights file sets only a "
                    "tensor's own extra attributes, never those of torch.Tensor"
                )
        return rebuild(*args)

    return checked


def _copy_readonly_array(rebuild: Callable[..., Any]) -> Callable[..., Any]:
    """`_rebuild_device_tensor_from_numpy`, copying a read-only array first: one made over an immutable bytes
    object (possibly shared by the interpreter, such as b"\\x00") must not back a writable tensor."""

    def checked(data: Any, *args: Any) -> Any:
        if hasattr(data, "flags") and not data.flags.writeable:
            data = data.copy()
        return rebuild(data, *args)

    return checked


# Globals the policy allows whose calls are narrowed here (see each wrapper).
_GUARDED: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    "torch._tensor._rebuild_from_type_v2": _refuse_property_state,
    "torch._utils._rebuild_parameter_with_state": _refuse_property_state,
    "torch._utils._rebuild_device_tensor_from_numpy": _copy_readonly_array,
}


def _container(target: Any, kind: type, opcode: str) -> Any:
    # An inert stand-in is filled like the dict or list subclass it stands for; it keeps items, runs nothing. A deque
    # is filled as pickle writes one (deque((), maxlen), then APPENDs of its items).
    if type(target) is not kind and not (kind is dict and isinstance(target, dict)) and not (
            kind is list and (isinstance(target, InertObject) or type(target) is collections.deque)):
        raise RefusedByPolicy(f"refused {opcode} on {type(target).__name__}: it fills a {kind.__name__} only")
    return target


class RestrictedPickle:
    """A `pickle_module` for `torch.load`: the standard unpickler (every protocol) with `find_class` restricted."""

    __name__ = "weightdoctor_restricted_pickle"
    Unpickler = _RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()


def _restricted_pickle(inert: frozenset[str]) -> type[RestrictedPickle]:
    """`RestrictedPickle` whose unpickler also reads the globals in `inert` as stand-ins (this file's scan)."""

    class Unpickler(_RestrictedUnpickler):
        def __init__(self, file: Any, **kwargs: Any) -> None:
            super().__init__(file, inert=inert, **kwargs)

    class ForThisFile(RestrictedPickle):
        @staticmethod
        def load(file: Any, **kwargs: Any) -> Any:
            return Unpickler(file, **kwargs).load()

    ForThisFile.Unpickler = Unpickler
    return ForThisFile


def _inert_names(report: ScanReport) -> frozenset[str]:
    from weightdoctor.security.policy import INERT

    return frozenset(g.qualified for g in report.globals if g.safety == INERT)


_PADDLE_NAME_TABLE = "StructuredToParameterName@@"


def load_pickle(path: Path, fmt: str, key: str | None = None, label: str | None = None) -> PickleContents:
    """Scan a pickle-based checkpoint, then load it with torch's restricted loader and find its state dict.

    The cyclic garbage collector is paused meanwhile: the scan, the static reader and torch.load keep every object
    they build until the contents are returned, and its passes over them freed nothing (see weightdoctor.gcpause).

    The static scan runs first and alone decides whether anything is unpickled; torch's `weights_only`
    loader is a second line, never the only one.

    Raises:
        UnsafePickle: the scan finds a dangerous or unknown global or an unparseable pickle, or torch's
            weights_only loader refuses a global.
        UnsupportedEnvironment: torch is older than 2.10.
        CorruptCheckpoint: the archive is damaged or holds no state dict.
    """
    with gc_paused():
        return _load_pickle(path, fmt, key, label)


def _stripped_command(path: Path | None) -> str:
    """The convert that writes a Composer checkpoint's state.model without its `model.` prefix (what Composer's own
    export writes), as a .safetensors beside the checkpoint; `--strip-prefix model.` alone, without the file or an
    output, was refused pasted.

    Example:
        >>> _stripped_command(Path("runs/ep1-ba3-rank0.pt"))
        'weightdoctor convert runs/ep1-ba3-rank0.pt --strip-prefix model. -o runs/ep1-ba3-rank0.safetensors'
    """
    from weightdoctor.paths import shell_word

    if path is None:  # no file to name: `weightdoctor convert CHECKPOINT ... -o OUTPUT` pasted read a file CHECKPOINT
        return "weightdoctor's convert of the checkpoint with --strip-prefix model. and -o naming the file to write"
    from weightdoctor.checkpoint.hub import written_beside

    written = written_beside(path, f"{path.stem}.safetensors")
    return (f"weightdoctor convert {shell_word(str(path), argument=True)} --strip-prefix model. -o "
            f"{shell_word(str(written), argument=True)}")


def _as_safetensors_command(path: Path) -> str:
    """The convert that writes the pickle `path` as a .safetensors beside it, each word quoted for a shell:
    `weightdoctor convert -o NAME.safetensors`, without the file, was refused pasted.

    Example:
        >>> _as_safetensors_command(Path("my adapters/ip-adapter.bin"))
        "weightdoctor convert 'my adapters/ip-adapter.bin' -o 'my adapters/ip-adapter.safetensors'"
    """
    from weightdoctor.checkpoint.hub import written_beside
    from weightdoctor.paths import shell_word

    return (f"weightdoctor convert {shell_word(str(path), argument=True)} -o "
            f"{shell_word(str(written_beside(path, path.stem + '.safetensors')), argument=True)}")


def _load_pickle(path: Path, fmt: str, key: str | None, label: str | None) -> PickleContents:
    before = _identity(path)
    report = scan_or_refuse(path, label)
    obj: Any = None
    if fmt == "pytorch-zip":
        try:
            # Without torch: names, shapes, dtypes and byte ranges straight from data.pkl (see pickle_static).
            obj = load_static(path)
        except NeedsTorch:
            obj = None
    notes: list[str] = []
    if obj is None and report.container != "pytorch-zip":
        # A legacy torch.save file (or its tar, or a plain pickle) is read whole: torch.load allocates every storage
        # and reads it in, before any tensor is looked at. Refused before that where it is more than memory holds,
        # rather than killed by the system part way (or torch's allocator error, of no file nor tensor).
        from weightdoctor.checkpoint.safetensors_format import require_memory

        what = {"pytorch-legacy": "this legacy torch.save file (not a zip archive: torch.load reads all of its "
                "storages at once)", "pytorch-tar": "this torch.save tar file (torch.load reads all of its storages "
                "at once)", "pickle": "this pickle (pickle.load reads all of it at once)"}
        require_memory(path, what.get(report.container, "this file"), path.stat().st_size,
                       hint="; torch.save writes a zip archive since torch 1.6, whose tensors are read one at a time: "
                       "re-saved so, on a machine with the memory, it can be read here"
                       if report.container.startswith("pytorch") else "")
    if obj is None and report.container == "pickle":
        obj = _load_plain_pickle(path, _inert_names(report))
        if path.suffix in (".pdparams", ".pdopt") or isinstance(obj, Mapping) and _PADDLE_NAME_TABLE in obj:
            # paddle.save pickles a state dict as numpy arrays beside this table of Paddle's parameter names.
            notes.append("a PaddlePaddle checkpoint (paddle.save: a pickle of numpy arrays), not a torch.save file: "
                         "torch.load cannot read it; its arrays were read as tensors, under Paddle's names, and "
                         "Paddle stores a Linear layer's weight as [in, out], the transpose of PyTorch's [out, in]: "
                         "a PyTorch model loads them only through a conversion that renames and transposes them")
        else:
            notes.append("a plain Python pickle (pickle.dump), not a torch.save file: torch.load cannot read it; "
                         "its numpy arrays were read as tensors")
    # The file as torch.load(mmap=True) mapped it whole, where it read the file: its tensors view that map.
    mapped_identity: tuple[int, int, int, int] | None = None
    if obj is None:
        obj = _load_with_torch(path, fmt, report)
        mapped_identity = before if fmt == "pytorch-zip" else None
    if _identity(path) != before:
        # What was loaded may not be what was scanned.
        raise CorruptCheckpoint("the file changed while it was being scanned and loaded; nothing is trusted from it")
    _refuse_shadowed_methods(obj)
    _refuse_pickles_in_buffers(obj)
    try:
        state_dict, nested_key = find_state_dict(obj, key)
    except CorruptCheckpoint as exc:
        # The file was scanned and read before it was found to hold no weights (a bare tensor, XTTS' mel_stats.pth;
        # an optimizer's state): the one line said what it holds but not whether it is safe to load, which is what
        # people who download such a file ask first. A line that ends with the --key that reads the weights is left
        # as it is: read so, inspect shows the verdict.
        if "; pick one with --key" in exc.message and (fairseq2 := _fairseq2_state_beside(path)) is not None:
            # Its --key offered the optimizer's state or the run's configuration, not the model beside it.
            exc.message = exc.message.replace("; pick one with --key", f"; {fairseq2}")
        if "--key" not in exc.message:
            if _WHERE_THE_WEIGHTS_ARE in exc.message and (beside := _weights_beside(path)) is not None:
                exc.message = exc.message.replace(_WHERE_THE_WEIGHTS_ARE, beside)
            exc.message = f"{exc.message}; {_scan_words(report, path)}"
            exc.args = (exc.message,)
        raise
    if key is None and isinstance(obj, Mapping) and nested_key is None and frozenset(obj) in _ONE_MODEL_PARTS:
        what, loader = _ONE_MODEL_KINDS[frozenset(obj)]
        notes.append(f"{what}: its {' and '.join(map(str, obj))} state dicts are read together, as "
                     f"{', '.join(f'{part}.*' for part in obj)} (the names its .safetensors stores, which "
                     f"{loader} reads too); --key reads one alone")
    elif key is None and (styletts := _styletts2_net(obj)) is not None and nested_key == styletts[1]:
        # A hostile file may name 100,000 modules, or one of a megabyte: the first few, each cut, and a count.
        modules = [clip_middle(name, _NOTE_NAME_CHARS) for name in styletts[0]]
        where = f"{nested_key}." if nested_key else ""
        # The module names are the file's own (any text): the --key offered is quoted for a shell, as pasted, and
        # is one not cut short (a cut name reads nothing).
        first = next((name for name in styletts[0] if len(name) <= _NOTE_NAME_CHARS), None)
        pick = shell_word(where + first) if first is not None else ""
        listed = (", ".join(modules[:-1]) + f" and {modules[-1]}" if len(modules) <= 8
                  else ", ".join(modules[:7]) + f", and {len(modules) - 7:,} more")
        notes.append(f"a StyleTTS 2 / Kokoro model: its {len(modules)} modules' state dicts ({listed}) are read "
                     "together, as <module>.<name>, as StyleTTS 2's load_checkpoint and Kokoro's KModel load each "
                     f"into the module of its name; --key {pick + ' ' if pick else ''}reads one alone")
    elif key is None and nested_key is None and _opennmt_model(obj) is not None:
        rest = [clip_middle(_key_text(name), _NOTE_NAME_CHARS) for name in obj if name not in ("model", "generator")]
        shown = ", ".join(rest[:6]) + (f", and {len(rest) - 6:,} more" if len(rest) > 6 else "")
        notes.append("an OpenNMT-py checkpoint: model and generator (the output projection, which OpenNMT-py saves "
                     "apart) are read together, as generator.* beside the model's names, as OpenNMT-py's loader and "
                     "CTranslate2's ct2-opennmt-py-converter put them back; --key model or --key generator reads one "
                     f"alone; {shown} beside them are not weights")
    elif key is None and nested_key is None and isinstance(state_dict, Mapping) and state_dict and {
            name.split(".", 1)[0] if isinstance(name, str) else None for name in state_dict} == set(_IP_ADAPTER_PARTS):
        # Read here under the very names of an IP-Adapter .safetensors, so nothing looked wrong; but diffusers'
        # load_ip_adapter and ComfyUI's IPAdapter nodes split only a .safetensors by prefix, and index a pickle's
        # state_dict["image_proj"] / ["ip_adapter"]: this file raises in both.
        notes.append("an IP-Adapter stored flat (image_proj.*, ip_adapter.*) in a pickle: diffusers' load_ip_adapter "
                     "and ComfyUI's IPAdapter nodes read a .bin as {'image_proj': ..., 'ip_adapter': ...} and raise "
                     f"on these names; as a .safetensors ({_as_safetensors_command(path)}) both read it flat")
    elif key is None and nested_key is None and isinstance(state_dict, Mapping) and state_dict and {
            name.split(".", 1)[0] if isinstance(name, str) else None for name in state_dict} == set(_PHOTOMAKER_PARTS):
        # The same trap as above: convert warns when it writes one, and the file it wrote read here without a word.
        notes.append("a PhotoMaker adapter stored flat (id_encoder.*, lora_weights.*) in a pickle: "
                     "load_photomaker_adapter reads a .bin as {'id_encoder': ..., 'lora_weights': ...} and raises on "
                     f"these names; as a .safetensors ({_as_safetensors_command(path)}) it reads it flat")
    elif nested_key == "params_ema" and isinstance(obj, Mapping) and _is_state_dict(obj.get("params")):
        notes.append("a BasicSR checkpoint (Real-ESRGAN, GFPGAN, SwinIR): params_ema is read, the averaged weights "
                     "its inference loads; --key params reads the training weights beside them")
    elif key is None and nested_key is not None and nested_key == f"{_audiocraft_best_state(obj)}.model":
        notes.append(f"an audiocraft solver checkpoint: {nested_key} is read, the best epoch's weights that "
                     "audiocraft's export (export_lm, export_encodec) writes to the release file; --key model reads "
                     "the last epoch's weights beside them")
    elif (key is None and nested_key == "ema_net" and path.name == _SUPER_GRADIENTS_AVERAGE
          and _super_gradients_ema(obj)):
        # Trainer._save_checkpoint writes the averaged weights under net into the epoch's state, where (in the
        # releases that did not pop it) the last epoch's ema_net stayed: the note of the other SuperGradients files
        # called net "the raw training weights" and never offered the average this file is saved for.
        notes.append(f"a SuperGradients {_SUPER_GRADIENTS_AVERAGE} (average_best_models): ema_net is read, the last "
                     "epoch's EMA weights, which SuperGradients' models.get(checkpoint_path=...) loads whenever the "
                     "file holds them; net beside them is the average of the best epochs' weights that this file is "
                     "saved for, which models.get does not load from it: --key net reads the average")
    elif key is None and (ema := _averaged_entry_note(obj, nested_key)) is not None:
        notes.append(ema)
    elif key is None and nested_key == "model" and (fairseq_ema := _fairseq_ema(obj)) is not None:
        notes.append(fairseq_ema)
    elif key is None and nested_key == "model" and (averaged := _averaged_model_beside(obj)) is not None:
        notes.append(averaged)
    elif key is None and nested_key == "state_dict" and _timm_ema(obj):
        notes.append("a timm training checkpoint (train.py's CheckpointSaver: epoch, arch, state_dict, optimizer, "
                     "version) saved with --model-ema: state_dict is read, the raw training weights; state_dict_ema "
                     "beside it is the EMA copy, which timm's validate.py --use-ema and "
                     "timm.models.load_checkpoint(model, path, use_ema=True) load instead; --key state_dict_ema "
                     "reads it")
    elif key is None and nested_key == "model" and _icefall_model_avg(obj):
        notes.append("an icefall (k2) training checkpoint (epoch-N.pt / checkpoint-N.pt): model is read, the weights "
                     "at this save; model_avg beside it is the running average since training started (float32), "
                     "and icefall's decode.py and export.py with --use-averaged-model (their default) load neither "
                     "alone: they compute the average over a range of epochs from this file's and the one saved --avg "
                     "epochs earlier (average_checkpoints_with_averaged_model), which no single entry holds; "
                     "--key model_avg reads the average since the start")
    elif key is None and nested_key in ("mpd", "msd", "mrd", "discriminator") and _gan_vocoder_discriminators(obj):
        generator = path.with_name("g_" + path.name[3:]) if path.name.startswith("do_") else None
        where = (f"in {generator}" if generator is not None and generator.is_file()
                 else "in the g_<step> file saved beside it")
        notes.append(f"a HiFi-GAN / BigVGAN training state (do_<step>: the discriminators and both optimizers): "
                     f"{nested_key} is read, a discriminator, which only training uses; the generator their "
                     f"inference loads (checkpoint['generator']) is {where}")
    elif nested_key == "weight" and (voice := _voice_model_note(obj)) is not None:
        notes.append(voice)
    elif key is None and nested_key == "ema_model_state_dict" and _ema_pytorch_beside_model(obj):
        notes.append("an F5-TTS training checkpoint (an ema_pytorch EMA beside the model): ema_model_state_dict is "
                     "read, the averaged weights F5-TTS's inference loads (load_checkpoint, use_ema=True by default, "
                     "strips the ema_model. prefix and drops initted and step); --key model_state_dict reads the raw "
                     "training weights beside them")
    elif key is None and nested_key == "teacher" and _self_distillation_teacher(obj):
        backbone = any(isinstance(name, str) and name.startswith(("backbone.", "module.backbone."))
                       for name in state_dict)
        notes.append("a DINO / iBOT self-distillation checkpoint: teacher is read, the weights their evaluation "
                     "(eval_linear.py, eval_knn.py: --checkpoint_key teacher by default) and released backbones "
                     "come from; --key student reads the student beside it"
                     + ("; their load_pretrained_weights strips module. and backbone. and loads the backbone alone "
                        "(head.* is the projection head, used in training only)" if backbone else ""))
    elif key is None and nested_key == "state.model" and (composer := _composer_state(obj)) is not None:
        notes.append(_composer_note(composer, list(state_dict), path))
    elif key is None and nested_key == "state_dict" and _lightning_weight_averaging(obj):
        # Lightning's WeightAveraging / EMAWeightAveraging callback (lightning/pytorch/callbacks/weight_averaging.py,
        # on_save_checkpoint) moves the trained weights to current_model_state and puts the average in state_dict:
        # which of the two was read went unsaid, current_model_state "a state dict of N tensors" like any other.
        notes.append("a Lightning checkpoint saved with its WeightAveraging callback (EMAWeightAveraging): "
                     "state_dict is read, the averaged weights the callback puts there on save (what "
                     "load_from_checkpoint gives the model); --key current_model_state reads the weights as trained "
                     "beside them (averaging_state is the average's own count, n_averaged, no weights)")
    elif key is None and nested_key == "state_dict" and _mmengine_swapped_ema(obj):
        # ema_state_dict was "a state dict of N tensors: pick it with --key" (convert: "--key ema_state_dict writes it
        # instead"): by its name the EMA, yet it holds the raw weights, which EMAHook swapped out of state_dict.
        notes.append("an MMEngine checkpoint saved with EMAHook: state_dict is read, the averaged weights EMAHook "
                     "swaps into it on save for deployment (what mmengine's load_checkpoint, and so init_detector, "
                     "init_model and tools/test.py, load); ema_state_dict, despite its name, holds the weights as "
                     "trained (module.<name>, and the EMA's steps), which resuming alone reads")
    elif key is None and nested_key == "state_dict" and (pyannote := _pyannote_note(obj, path)) is not None:
        notes.append(pyannote)
    elif nested_key == _MEGATRON_KEY and key is None:
        parts = list(map(str, obj["model"]["language_model"]))
        listed = ", ".join(parts[:-1]) + f" and {parts[-1]}"
        notes.append(f"a Megatron-LM checkpoint: model.language_model's {listed} are read "
                     "together, under their module paths (embedding.word_embeddings.weight, ...), as Megatron's "
                     "load_state_dict and the conversion scripts read them; --key reads one alone"
                     + _tensor_parallel_rank(path))
    elif key is None and nested_key is not None and (chunks := _megatron_virtual_chunks(obj)) \
            and nested_key == f"{chunks[0][0]}.language_model":
        # A hostile file may hold 100,000 chunks (a 4 MB warning in --json): the first few, and a count of the rest.
        others = ", ".join(f"{name} ({counted(_megatron_layers(flat), 'layer')}, {counted(len(flat), 'tensor')})"
                           for name, flat in chunks[1:7])
        others += f", and {len(chunks) - 7:,} more" if len(chunks) > 7 else ""
        names = (", ".join(name for name, _ in chunks) if len(chunks) <= 8
                 else f"{chunks[0][0]}, {chunks[1][0]}, ..., {chunks[-1][0]}")
        notes.append(f"a Megatron-LM virtual-pipeline checkpoint: {len(chunks)} model chunks ({names}), "
                     f"each a slice of the layers; only {nested_key} is read "
                     f"({counted(_megatron_layers(chunks[0][1]), 'layer')}), not {others}; "
                     f"--key {chunks[1][0]}.language_model reads another; Megatron-LM loads them together"
                     + _tensor_parallel_rank(path))
    if key is None and nested_key is None and path.name == "model_weights.ckpt" \
            and (nemo := _nemo_parallel_rank(path)):
        notes.append(nemo)
    if report.container == "pickle" and nested_key in (None, "blobs"):
        # Detectron's (Caffe2) pickles keep SGD's momentum beside each weight as `<blob>_momentum`, and detectron2's
        # checkpointer drops every such blob when it loads one: counted, they doubled the parameters.
        # Only a blob whose weight is beside it: another pickle's own `*_momentum` tensor is not taken for one.
        momentum = {name for name in state_dict if isinstance(name, str) and name.endswith("_momentum")
                    and is_tensor(state_dict[name]) and is_tensor(state_dict.get(name[: -len("_momentum")]))}
        if momentum:
            state_dict = {name: value for name, value in state_dict.items() if name not in momentum}
            example = min(momentum)
            notes.append(f"a Detectron (Caffe2) pickle: {counted(len(momentum), 'blob')} ending in _momentum "
                         f"({example}{', ...' if len(momentum) > 1 else ''}) hold SGD's momentum, not weights: left "
                         "out, as detectron2's checkpointer drops them when it loads the file")
    other, beside = _entries_beside(obj, nested_key)
    if beside:
        # Megatron-LM keeps model.language_model.{embedding, encoder, output_layer} apart: one of them is read.
        # The first few are named, each cut: 100,000 siblings (or one key of a megabyte) made a warning of megabytes.
        names = [clip_middle(name, _NOTE_NAME_CHARS) for name in list(beside)[:6]]
        more = f", and {len(beside) - 6:,} more" if len(beside) > 6 else ""
        notes.append(f"{counted(sum(beside.values()), 'tensor')} beside the state dict "
                     f"{plural(sum(beside.values()), 'is', 'are')} "
                     "not read, in "
                     f"{', '.join(names)}{more}: the weights are split over nested dicts; --key reads one of them")
    tensors: dict[str, Any] = {}
    skipped: list[str] = []
    non_tensor_keys: dict[str, str] = {}
    for name, value in state_dict.items():
        if is_tensor(value) and isinstance(name, str):
            if not isinstance(value, StaticTensor) and value.requires_grad:
                # A saved nn.Parameter: reading its values must not build autograd graphs (nor warn about them).
                value = value.detach()
            tensors[name] = value
        elif is_tensor(value):
            shown = repr(name) if isinstance(name, str) else _key_text(name)
            skipped.append(f"{shown} ({_describe(value)}, under a key that is not a string: load_state_dict cannot)")
        else:
            skipped.append(f"{_key_text(name)} ({_describe(value)})")
            if isinstance(name, str):
                non_tensor_keys[name] = _describe(value)
    packed = _torch_ao_packed_note(state_dict)
    if packed:
        notes.append(packed)
    _refuse_quantized_without_quantizer(tensors)
    quantized_tensors = _torch_ao_quantized_note(tensors)
    if quantized_tensors:
        notes.append(quantized_tensors)
    meta = [name for name, value in tensors.items() if not isinstance(value, StaticTensor) and value.is_meta]
    if meta:
        notes.append(f"{counted(len(meta), 'tensor')} on the meta device ({', '.join(meta[:3])}"
                     f"{', ...' if len(meta) > 3 else ''}): the file holds their shapes and dtypes but no values "
                     "(saved from a model that was never materialised)")
    extra_states = _extra_states_beside(obj, tensors)
    if mapped_identity is not None and (stand_in := mapped_stand_ins(path, mapped_identity)) is not None:
        # Its values read with plain file reads, as the torch-free reader's: through torch's map, a file cut short
        # while one was read killed the process with SIGBUS (redteam40). Those of other memory stay as they are.
        tensors = {name: stand_in(value) for name, value in tensors.items()}
        extra_states = {name: stand_in(value) for name, value in extra_states.items()}
        if not any(is_tensor(value) and not isinstance(value, StaticTensor)
                   for value in itertools.chain(tensors.values(), extra_states.values())):
            mapped_identity = None  # no value views torch's map any more
    return PickleContents(state_dict=tensors, nested_key=nested_key, other_entries=other, skipped_entries=skipped,
                          non_tensor_keys=non_tensor_keys, security=report, notes=notes,
                          extra_states_beside=extra_states, mapped_identity=mapped_identity,
                          fsdp_unflattened=fsdp_unflattened_shapes(obj) if nested_key == "model" else None)


# Nodes `_extra_states_beside` visits at most: a hostile file's millions of nested dicts cost no more than this.
_MAX_BESIDE_NODES = 1_000_000


def _extra_states_beside(obj: Any, read: Mapping[str, Any]) -> dict[str, Any]:
    """Tensors named `_extra_state` / `*._extra_state` anywhere in `obj` but among the values `read`, by their
    dotted path. Megatron-core's virtual-pipeline save (`model0`, `model1`, ...) or an EMA beside `model` is loaded
    whole by its trainer, and TransformerEngine unpickles each such tensor; only string keys are followed (an
    optimizer's state is keyed by parameter number), lists and tuples through their mappings."""
    seen = {id(value) for value in read.values()}
    found: dict[str, Any] = {}
    # A node is marked seen when it is stacked, not when popped: a list of two million references to one dict
    # stacked two million (path, dict) pairs (and made as many paths) to visit one.
    stack: list[tuple[str, Any]] = [] if id(obj) in seen else [("", obj)]
    seen.add(id(obj))
    visited = 0
    while stack and visited < _MAX_BESIDE_NODES:
        prefix, node = stack.pop()
        visited += 1
        if isinstance(node, Mapping):
            items: Iterable[tuple[Any, Any]] = node.items()
        elif isinstance(node, (list, tuple)):
            # Lazily: an index is made text only for a dict not seen yet (those stacked are marked as they go).
            items = ((str(index), value) for index, value in enumerate(node)
                     if isinstance(value, Mapping) and id(value) not in seen)
        else:
            continue
        for key, value in items:
            # The name first: a state dict of 200,000 tensors is passed over at a string test each.
            if type(key) is not str:
                continue
            if key.endswith("_extra_state"):
                if (key == "_extra_state" or key.endswith("._extra_state")) and is_tensor(value) \
                        and id(value) not in seen:
                    found[f"{prefix}.{key}" if prefix else key] = value
            elif (isinstance(value, (dict, list, tuple)) or (not is_tensor(value) and isinstance(value, Mapping))) \
                    and id(value) not in seen:
                seen.add(id(value))
                stack.append((f"{prefix}.{key}" if prefix else key, value))
    return found


def _model_parallel_ranks(path: Path) -> list[str]:
    """The model-parallel rank folders (`mp_rank_00`, `mp_rank_00_000` under pipeline parallelism) beside the one
    `path` lies in, sorted; [] where `path` is in no such folder or it is the only one (or they cannot be listed)."""
    rank = re.compile(r"mp_rank_\d+(_\d+)?")
    if not rank.fullmatch(path.parent.name):
        return []
    try:
        ranks = sorted(p.name for p in path.parent.parent.iterdir() if p.is_dir() and rank.fullmatch(p.name))
    except OSError:
        return []
    return ranks if len(ranks) >= 2 else []


def _nemo_parallel_rank(path: Path) -> str:
    """For an extracted NeMo model's `mp_rank_00/model_weights.ckpt` (model_config.yaml above it) beside other ranks'
    folders: that it holds one model-parallel rank's part ("" otherwise). Read alone it looked like the whole model,
    its split weights a fraction of their size, and nothing said so."""
    ranks = _model_parallel_ranks(path)
    if not ranks or not (path.parent.parent / "model_config.yaml").is_file():
        return ""
    return (f"an extracted NeMo model: {path.parent.name} is one of {len(ranks)} model-parallel ranks ({ranks[0]} to "
            f"{ranks[-1]}): the weights tensor parallelism splits are slices here (under pipeline parallelism, "
            "other ranks hold other layers); NeMo's examples/nlp/language_modeling/megatron_change_num_partitions.py "
            f"(--model_extracted_dir {shell_word(str(path.parent.parent.absolute()), argument=True)} "
            "--target_tensor_model_parallel_size=1 --target_pipeline_model_parallel_size=1) merges them into one "
            ".nemo")


def _tensor_parallel_rank(path: Path) -> str:
    """For a Megatron-LM file in `mp_rank_00/` (`mp_rank_00_000/` under pipeline parallelism) beside other ranks'
    folders: that it holds one rank's slices of the split weights ("" otherwise)."""
    ranks = _model_parallel_ranks(path)
    if not ranks:
        return ""
    return (f"; {path.parent.name} is one of {len(ranks)} model-parallel ranks ({ranks[0]} to {ranks[-1]}): the "
            "weights tensor parallelism splits are slices here, and pipeline stages hold other layers; Megatron's "
            "checkpoint converter (tools/checkpoint/convert.py) merges them")


# Entries of a training checkpoint that hold training state, not weights, at whatever depth they sit beside the
# state dict (Composer's state.optimizers, state.schedulers).
_TRAINING_ENTRY = re.compile(r"optim(?:izer)?s?(?:_states?|_state_dict)?|(?:lr_)?schedulers?(?:_states?)?|scaler|"
                             r"grad_scaler|rng(?:_states?)?", re.IGNORECASE)


def _entries_beside(obj: Any, nested_key: str | None) -> tuple[list[str], dict[str, int]]:
    """The entries beside the state dict at `nested_key`, at every level of its path (`epoch (int: 3)`,
    `model.language_model.embedding (dict, 1 entries)`), and the tensors held beside it below the top level."""
    other: list[str] = []
    beside: dict[str, int] = {}
    current, rest, prefix = obj, nested_key or "", ""
    while rest and isinstance(current, Mapping):
        # The entry the path goes on with, which may itself hold dots ("model.ema" as one key).
        head = max((k for k in current if isinstance(k, str) and (rest == k or rest.startswith(k + "."))),
                   key=len, default=None)
        if head is None:
            break
        for name, value in current.items():
            if name != head:
                # An int key past str()'s 4,300 digits ended the command in 'unexpected ValueError': _key_text.
                text = _key_text(name)
                other.append(f"{prefix}{text} ({_describe(value)})")
                count = _count_tensors(value, set()) if prefix else 0  # optimizer states at the top hold some too
                # ... and deeper: Composer keeps state.optimizers beside state.model, whose moments were called
                # weights split over nested dicts.
                if count and not _TRAINING_ENTRY.fullmatch(text):
                    beside[f"{prefix}{text}"] = count
        current, rest, prefix = current[head], rest[len(head) + 1:], f"{prefix}{head}."
    return other, beside


def _count_tensors(value: Any, seen: set[int], depth: int = 8) -> int:
    """Tensors held in `value`, each container counted once (a pickle can make one hold itself)."""
    if is_tensor(value):
        return 1
    if not depth or not isinstance(value, (Mapping, list, tuple)) or id(value) in seen:
        return 0
    seen.add(id(value))
    values = value.values() if isinstance(value, Mapping) else value
    return sum(_count_tensors(v, seen, depth - 1) for v in values)


# Nesting followed when turning a plain pickle's arrays into tensors (state dicts sit one or two levels down).
_MAX_ARRAY_DEPTH = 32


def _load_plain_pickle(path: Path, inert: frozenset[str] = frozenset()) -> Any:
    """Unpickle a plain `pickle.dump` file (not torch.save: no magic number, no storages), such as the
    model-zoo `.pkl` files of Detectron2 (`{"model": {name: numpy array}, ...}`); numeric arrays become tensors.

    The scan found only safe globals; the restricted unpickler refuses every other (the second line of
    defence that torch's weights_only loader is for torch.save files, which cannot read these).

    Raises:
        UnsafePickle: the unpickler refused a global or an opcode's target.
        CorruptCheckpoint: the pickle cannot be read (truncated, malformed).
    """
    with open(path, "rb") as handle:
        try:
            obj = _RestrictedUnpickler(handle, inert=inert).load()
        except RefusedByPolicy as exc:
            raise UnsafePickle(str(exc)) from exc
        except (RecursionError, MemoryError):
            raise
        except Exception as exc:  # a malformed pickle raises anything from EOFError to TypeError
            raise CorruptCheckpoint(_unreadable_pickle(exc)) from exc
    return _arrays_as_tensors(obj, 0)


def _unreadable_pickle(exc: Exception) -> str:
    """What went wrong reading a malformed pickle, in a line."""
    if "out-of-band" in str(exc):
        return ("the pickle refers to out-of-band buffers (pickle protocol 5 written with a buffer_callback) that "
                "are kept outside the file: the file alone does not hold the data")
    detail = clip_words(" ".join(str(exc).split()), 160)
    return f"the pickle cannot be read: {type(exc).__name__}: {detail}"


def _arrays_as_tensors(value: Any, depth: int, done: dict[int, tuple[Any, Any]] | None = None) -> Any:
    """`value` with each numeric numpy array inside dicts, lists and tuples made a tensor (sharing memory).

    Containers are changed in place and each is visited once (`done`: id -> (original, result), the original
    kept so that its id cannot be reused), so a pickle of shared or cyclic containers (a list holding itself,
    forty levels of one dict twice over) costs its size, not 2^40; one array named twice becomes one tensor.
    """
    numpy = sys.modules.get("numpy")  # no numpy imported: the pickle made no array
    if numpy is None or depth > _MAX_ARRAY_DEPTH:
        return value
    done = {} if done is None else done
    seen = done.get(id(value))
    if seen is not None:
        return seen[1]
    if isinstance(value, numpy.ndarray):
        result = _array_as_tensor(value, numpy)
        done[id(value)] = (value, result)
        return result
    if type(value) in (dict, collections.OrderedDict) or isinstance(value, InertObject):
        # An inert stand-in (Lightning's AttributeDict) holds its items as a dict does.
        done[id(value)] = (value, value)  # before the children: a cycle back here finds it
        for name, item in value.items():
            converted = _arrays_as_tensors(item, depth + 1, done)
            if converted is not item:
                value[name] = converted  # an existing key: the dict's size does not change while iterating
        return value
    if type(value) is list:
        done[id(value)] = (value, value)
        for index, item in enumerate(value):
            value[index] = _arrays_as_tensors(item, depth + 1, done)
        return value
    if type(value) is tuple:
        done[id(value)] = (value, value)  # a cycle through a tuple comes back to the tuple as it was
        items = [_arrays_as_tensors(item, depth + 1, done) for item in value]
        if any(new is not old for new, old in zip(items, value, strict=True)):
            result = tuple(items)
            done[id(value)] = (value, result)
            return result
        return value
    return value


def _array_as_tensor(value: Any, numpy: Any) -> Any:
    """A numeric array as a tensor over the same memory; other arrays (strings, objects) are left as they are."""
    if value.dtype.kind not in "biufc":
        return value
    import torch

    if not value.dtype.isnative:
        value = value.astype(value.dtype.newbyteorder("="))  # big-endian arrays: torch reads native order
    if not (value.flags.c_contiguous and value.flags.writeable):
        # A read-only array may view bytes the interpreter shares (a protocol-5 BINBYTES, b"\x00"): a
        # tensor over them must not be able to write there. (Not ascontiguousarray: it makes 0-d 1-d.)
        value = value.copy(order="C")
    try:
        return torch.from_numpy(value)
    except (TypeError, ValueError):  # a dtype torch has no counterpart for: left as an array (skipped)
        return value


# Dtypes torch has no typed storage class for (uint16/32/64 since 2.3, the float8 family, ...): a legacy (non-zip)
# torch.save records their storages as `torch.storage.UntypedStorage`, which torch's legacy reader cannot rebuild
# (AttributeError: type object 'UntypedStorage' has no attribute 'dtype'). Only the zip format holds them.
_UNTYPED_STORAGE = "torch.storage.UntypedStorage"
_NO_STORAGE_CLASS = re.compile(r"^torch\.(uint(?:16|32|64)|float8_\w+|float4_\w+|bits\w+|uint[1-7]|int[1-7])$")


def _legacy_untyped_storage(path: Path, report: ScanReport) -> UnsupportedFormat | None:
    """The one-line refusal of a legacy torch.save file whose storages are untyped (dtypes without a storage
    class), naming those dtypes; None when the file records none."""
    qualified = {g.qualified for g in report.globals}
    if _UNTYPED_STORAGE not in qualified:
        return None
    dtypes = sorted(m[1] for name in qualified if (m := _NO_STORAGE_CLASS.match(name)))
    # No such dtype named: the untyped storages were saved as they are (torch.save of tensor.untyped_storage()).
    what = f"{', '.join(dtypes)} tensors" if dtypes else "untyped storages (torch.UntypedStorage)"
    return UnsupportedFormat(
        f"a legacy-format (non-zip) torch.save file holding {what}, whose storages torch reads only from its zip "
        "format (no torch.load reads this file); re-save the weights in torch >= 2.x's default zip format "
        "(torch.save without _use_new_zipfile_serialization=False) or as safetensors", str(path))


def _load_with_torch(path: Path, fmt: str, report: ScanReport) -> Any:
    """`torch.load(weights_only=True, mmap=True)`, with its errors turned into the project's."""
    check_torch_version()
    import torch

    from weightdoctor.dtypes import torch_dtype
    from weightdoctor.security.policy import LATER_TORCH_WEIGHTS_ONLY_GLOBALS

    for qualified in sorted({g.qualified for g in report.globals} & LATER_TORCH_WEIGHTS_ONLY_GLOBALS.keys()):
        # A dtype a later torch added (torch 2.14's bcomplex32): this torch's loader refuses the global, which
        # said "the file holds more than weights" of weights alone.
        try:
            torch_dtype(qualified.removeprefix("torch."))
        except UnsupportedEnvironment as error:
            error.message = f"its pickle names {qualified}, a tensor dtype: {error.message}"
            error.path = str(path)
            raise

    names: list[str] | None = None
    if fmt == "pytorch-zip":
        try:
            from weightdoctor.security.archive import zipfile_names

            names = zipfile_names(path)  # parsed once for the whole command (the scan read it already)
        except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError, EOFError):
            # PyTorch's own reader is more lenient than zipfile; let it decide below.
            names = None
        if names is not None and not any(n.lower().endswith("data.pkl") for n in names):  # torch: any case
            if any(n.endswith(("/archive_format", "/models/model.json", "serialized_exported_program.json"))
                   for n in names):
                raise UnsupportedFormat(
                    "a torch.export archive (torch.export.save, .pt2), not a torch.save file: its weights live in "
                    "the exported program; torch.export.load(path).state_dict holds them (loading it builds the "
                    "program: do it only if you trust the file), saved with safetensors they can be read here")
            inside = [n for n in names if n.lower().endswith((".pth", ".pt", ".bin", ".ckpt", ".safetensors"))]
            if inside:
                # A package zipped around weight files (ESPnet's model zoo zip: exp/.../valid.acc.ave.pth beside
                # config.yaml and meta.yaml) was called a damaged torch.save file.
                shown = ", ".join(inside[:4]) + (", ..." if len(inside) > 4 else "")
                raise UnsupportedFormat(
                    f"a zip archive of files, not a torch.save file: it holds the weight "
                    f"{plural(len(inside), 'file')} {shown}"
                    + (" (its meta.yaml, as ESPnet's model zips have, says which the model reads)"
                       if "meta.yaml" in names else "") + "; unzip it and point at one")
            raise CorruptCheckpoint("zip archive has no data.pkl record (not a torch.save file, or damaged)")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals(report) + _inert_safe_globals(report)
                                              + _plain_safe_globals(report)), \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            # torch's deprecation notices (TypedStorage, quantized tensors) are not about the file: not shown.
            warnings.filterwarnings("ignore", category=UserWarning, message=".*deprecated")
            # Nor its notices that a layout is experimental (sparse CSR/CSC/BSR "in beta state", nested tensors
            # "in prototype stage"; torch 2.11's "Sparse invariant checks are implicitly disabled", seen on a
            # GPU machine; torch 2.14's "Validating sparse tensor invariants because weights_only=True"): such a
            # tensor is refused below in one line of its own. Nor that a dtype is (torch 2.14's "BComplex32
            # support is experimental", as it makes a bcomplex32 tensor): the file's dtype is no fault of it.
            warnings.filterwarnings("ignore", category=UserWarning,
                                    message=".*(beta state|prototype stage|[Ss]parse invariant checks"
                                            "|sparse tensor invariants|support is experimental)")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=(fmt == "pytorch-zip"))
    except pickle.UnpicklingError as exc:
        message = _weights_only_message(exc)
        # SETITEMS fills a dict of two items or more, SETITEM one of a single item (a Lightning checkpoint whose
        # AttributeDict of hyper-parameters holds one): torch refuses both on a stand-in, each in its own words.
        fills_inert = "Can only SETITEM" in message and bool(_inert_safe_globals(report))
        # Nor a deque, which pickle fills by APPEND or APPENDS: torch's loader appends to lists alone.
        fills_deque = ("Can only append to lists" in message or "Can only extend lists" in message) and any(
            real is collections.deque for real, _ in _plain_safe_globals(report))
        if "Unsupported operand" not in message and not fills_inert and not fills_deque:
            raise UnsafePickle(message) from exc
        # Not a security matter: torch's restricted loader implements the opcodes of protocol 2 only, and
        # `torch.save(..., pickle_protocol=4)` files are real; it fills no dict subclass either (Lightning's
        # AttributeDict, read as an inert stand-in). The scan found only safe and inert globals; load with
        # an unpickler that still refuses every other global (two lines of defence, as with weights_only).
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj = torch.load(path, map_location="cpu", weights_only=False,
                                 pickle_module=_restricted_pickle(_inert_names(report)),
                                 mmap=(fmt == "pytorch-zip"))
        except RefusedByPolicy as inner:
            raise UnsafePickle(str(inner)) from inner
        except Exception as inner:
            if "saved_id must be a tuple, got str" in str(inner):
                raise UnsupportedFormat(ZIP_PROTOCOL_0) from inner
            if "saved_id must be a tuple" in str(inner):
                # A list or a dict given by BINPERSID: no protocol writes a storage reference so (protocol 0 writes
                # it as text), and it was said to be one.
                raise CorruptCheckpoint(
                    f"a storage reference in data.pkl is a {str(inner).rsplit(' ', 1)[-1]}, not the tuple torch.save "
                    "writes (a damaged or crafted file): torch.load refuses it, weights_only or not") from inner
            raise UnsupportedFormat(
                f"{message} (pickle protocol {report.protocol}); the restricted fallback loader failed too: "
                f"{type(inner).__name__}: {clip_words(' '.join(str(inner).split()), 160)}"
            ) from inner
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
        refusal = _legacy_untyped_storage(path, report) if fmt == "pytorch-legacy" else None
        if refusal is not None:  # (torch raises AttributeError here today; a RuntimeError would say the same)
            raise refusal from exc
        text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        if fmt == "pytorch-zip" and text.startswith("unable to mmap") and "(12)" in text:
            # Not a damaged file: the private map of the whole file counts in full against the memory the system
            # commits (Linux's default rule refuses one larger than its RAM and swap), and against `ulimit -v`
            # and `ulimit -d` (a private writable map is data to RLIMIT_DATA): the limits set are named.
            from weightdoctor.checkpoint.safetensors_format import private_map_limits
            from weightdoctor.units import format_bytes

            raise UnsupportedEnvironment(
                f"torch.load(mmap=True), which reads this file (weightdoctor's own reader does not model it), maps "
                f"all of it ({format_bytes(path.stat().st_size)}) and the system refused the map (more than it "
                f"commits: its memory and swap{''.join(f', or {limit}' for limit in private_map_limits())}): "
                "nothing was read") from exc
        if "storage has wrong byte size: expected %ld" in text:
            # torch's legacy loader leaves its format unfilled ("expected %ld got %ld1656"). The scan compares each
            # record with the size its pickle declares where it knows the storage type: most often a tensor's view
            # past its storage's end grew the storage beyond its record.
            text = ("a tensor's view reaches past the end of its storage, or a storage record holds another size "
                    "than its pickle declares (torch: storage has wrong byte size)")
        if fmt == "pytorch-zip" and names is None:
            # Neither zipfile nor torch can read the archive: most often a download cut short.
            raise CorruptCheckpoint(
                f"the zip archive is damaged or truncated (torch: {clip_words(text, 200)})") from exc
        raise CorruptCheckpoint(f"torch cannot read the file: {clip_words(text, 200)}") from exc
    except Exception as exc:  # torch raises many kinds of errors on hostile bytes
        refusal = _legacy_untyped_storage(path, report) if fmt == "pytorch-legacy" else None
        if refusal is not None:
            raise refusal from exc
        text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise CorruptCheckpoint(f"torch cannot read the file: {type(exc).__name__}: {clip_words(text, 200)}") from exc
    if fmt == "pytorch-zip":
        check_record_sizes(path, _inert_names(report))
    return obj


def resaved_name(path: Path) -> Path:
    """Where the re-save a refusal advises writes: beside `path`, never over it (`model.pt` -> `model-resaved.pt`),
    or where the user stands for a file in a Hub cache snapshot (`written_beside`).

    Example:
        >>> str(resaved_name(Path("ckpt/model.pt")))
        'ckpt/model-resaved.pt'
    """
    from weightdoctor.checkpoint.hub import written_beside

    return written_beside(path, f"{path.stem}-resaved{path.suffix}")


def state_dict_name(path: Path) -> Path:
    """Where a snippet that saves the state dict a refusal names writes: beside `path` (`net.pt` ->
    `net.state_dict.pt`), numbered where that is taken, never over a file; where the user stands for a file in a
    Hub cache snapshot. A `'weights.pt'` of the snippet was written where the user stood, over any file of that name.

    Example:
        >>> str(state_dict_name(Path("/nonexistent/net.pt")))
        '/nonexistent/net.state_dict.pt'
    """
    import os

    from weightdoctor.checkpoint.hub import written_beside

    candidate, number = written_beside(path, f"{path.stem}.state_dict.pt"), 2
    while os.path.lexists(candidate):
        candidate, number = candidate.with_name(f"{path.stem}.state_dict-{number}.pt"), number + 1
    return candidate


def _trusted_load(path: Path, entry: str | None = None) -> str:
    """`torch.load(path, weights_only=False)` with the file as the user named it, then `[entry]` where given: the
    one load a refusal names for a file the user trusts (`torch.load(path, ...)` pasted was a NameError).

    Example:
        >>> _trusted_load(Path("my run/x.th"), "state")
        "torch.load('my run/x.th', weights_only=False)['state']"
    """
    return f"torch.load({str(path)!r}, weights_only=False)" + (f"[{entry!r}]" if entry is not None else "")


def _resave_globals(inert: Collection[str]) -> str:
    """For the re-save a refusal advises: the `safe_globals` block that torch.load(weights_only=True) needs for the
    inert objects the file holds (an argparse.Namespace, an io.BytesIO), which it refuses without it; "" for none."""
    from weightdoctor.security.policy import normalised_names

    # The name Python 3 imports (`__builtin__.set` of a protocol-2 pickle is builtins.set), each cut: from the file.
    names = sorted({clip_middle(normalised_names(name)[-1], _NOTE_NAME_CHARS) for name in inert})
    if not names:
        return ""
    # Every one, so that the block runs as printed: `..., ... (2 more)]` was a SyntaxError, and which two were left
    # out was not said. The names are inert ones (policy.INERT_GLOBALS and omegaconf's types), some 40 at most.
    shown = ", ".join(names)
    return (f" inside `with torch.serialization.safe_globals([{shown}]):`, where you trust the file and have their "
            f"modules imported (weights_only refuses the {counted(len(names), 'object type')} it holds without it)")


def check_record_sizes(path: Path, inert: Collection[str] = ()) -> None:
    """Refuse a torch zip whose storage records differ in size from the storages its data.pkl declares, as
    torch.load refuses it; `torch.load(mmap=True)`, which reads the files the torch-free reader leaves to
    it, does not check (a record cut short gave whatever bytes follow it). `inert` names the inert objects' types
    the scan found, which the re-save a compressed record is refused with must allow.

    Raises:
        CorruptCheckpoint: a record of the wrong size (see `pickle_static.record_size_error`).
        UnsupportedFormat: a compressed storage record, whose values `torch.load(mmap=True)` reads wrong.
    """
    import os

    from weightdoctor.checkpoint.pickle_static import MAX_DATA_PKL, record_size_error
    from weightdoctor.security import archive as zip_archive
    from weightdoctor.security.scan import STORAGE_ELEMENT_SIZE, persistent_ids

    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        try:
            layout = zip_archive.read_layout(handle, size)
        except (ValueError, OSError):
            return  # torch read what it could; there is no record list here to compare with
        # Every record of each name, in any case: torch's reader (miniz) finds a name in any case, and of two records
        # of one name the one its sorted directory's search lands on, not always the first. Keeping the last alone
        # let a short first copy through, which torch.load(mmap=True) read past its end (values of the bytes after);
        # and a data.pkl written twice skipped the check altogether.
        copies: dict[str, list[zip_archive.ZipMember]] = {}
        for member in layout.members:
            copies.setdefault(member.name.lower(), []).append(member)
        pickled = {name: members for name, members in copies.items() if name.endswith("data.pkl")}
        if len(pickled) == 1:
            pickles = next(iter(pickled.values()))
        else:  # data.pkl in two folders: torch reads the one in the folder of the archive's first record
            top = layout.members[0].name.partition("/")[0] if layout.members else ""
            pickles = pickled.get(f"{top}/data.pkl".lower(), [])
        if not pickles:
            return
        prefix = pickles[0].name[: -len("data.pkl")]
        datas: list[bytes] = []
        for member in {m.data_offset: m for m in pickles}.values():  # each copy torch may read, once
            try:
                datas.append(bytes(zip_archive.read_member(handle, member, MAX_DATA_PKL)))
            except ValueError:
                continue
    compared: set[tuple[int, Any]] = set()  # (copy of data.pkl, storage key): each copy on its own
    for copy, pid in ((copy, pid) for copy, data in enumerate(datas) for pid in persistent_ids(data)):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            continue
        if not isinstance(pid[2], (str, int)) or (copy, pid[2]) in compared:
            continue  # torch loads a storage at its first reference and hands it to the later ones unchecked
        compared.add((copy, pid[2]))
        itemsize = STORAGE_ELEMENT_SIZE.get(getattr(pid[1], "name", ""))
        key, numel = pid[2], pid[4]
        named = copies.get(f"{prefix}data/{key}".lower(), [])
        # A compressed copy first, then one of the wrong size: whichever copy torch reads, the file is refused.
        member = next((m for m in named if m.method != 0), None) or next(
            (m for m in named if isinstance(numel, int) and itemsize is not None and m.size != numel * itemsize),
            named[0] if named else None)
        if member is not None and member.method != 0:
            # torch.save stores its records; one deflated by a re-zip is read right by torch.load, but
            # torch.load(mmap=True) hands out the compressed bytes as the tensor's values (convert wrote them).
            resave = f"torch.save(torch.load({str(path)!r}, weights_only=True), {str(resaved_name(path))!r})"
            block = _resave_globals(inert)
            # Inside the `with` block the call alone: `import torch` there came after the `with torch...` line.
            how = (f"with torch imported, {resave}{block}" if block else
                   f"with import torch; {resave}")
            raise UnsupportedFormat(
                f"storage record {member.name} is compressed ({'deflate' if member.method == 8 else member.method}"
                f"), as torch.save never writes it (the archive was zipped again): its values cannot be read in "
                f"place; re-save it to a new file {how}")
        if itemsize is None or member is None or not isinstance(numel, int) or not isinstance(key, str):
            continue  # a storage type without a fixed element size here (new dtypes): not compared
        if member.size != numel * itemsize:
            raise record_size_error(key, member.size, numel, itemsize, copies=len(named))


# torch.ao.quantization's quantized Linear (quantize_dynamic's, or convert's after prepare) saves its weight and bias
# as one entry, `<layer>._packed_params._packed_params`: a tuple of the quantized weight and the float bias (its
# LinearPackedParams._save_to_state_dict), beside `<layer>._packed_params.dtype` and, for the static one,
# `<layer>.scale` / `<layer>.zero_point` (the output's). No tensor: the layers were left out without a word.
_PACKED_PARAMS = "._packed_params._packed_params"


def _torch_ao_packed_note(state_dict: Mapping[Any, Any]) -> str | None:
    """The note for a state dict of torch.ao.quantization's quantized Linear layers, whose weights and biases are
    packed in tuples that are read as no tensor; None where there are none.

    Example:
        >>> import torch
        >>> weight = torch.zeros(4, 2, dtype=torch.int8)  # a qint8 tensor in the file: quantize_per_tensor warns
        >>> _torch_ao_packed_note({"fc._packed_params._packed_params": (weight, torch.zeros(4))})[:55]
        '1 layer quantized by torch.ao.quantization (fc: 8 int8 '
    """
    layers = {name[: -len(_PACKED_PARAMS)]: value for name, value in state_dict.items()
              if isinstance(name, str) and name.endswith(_PACKED_PARAMS) and isinstance(value, tuple)}
    if not layers:
        return None
    weights = biases = 0
    dtypes: set[str] = set()
    for value in layers.values():
        weight, bias = (value + (None, None))[:2]
        if is_tensor(weight):
            weights += weight.numel()
            dtypes.add(str(weight.dtype).removeprefix("torch."))
        if is_tensor(bias):
            biases += bias.numel()
    names = [clip_middle(name, _NOTE_NAME_CHARS) for name in list(layers)[:3]]
    shown = ", ".join(names) + (f" and {len(layers) - 3:,} more" if len(layers) > 3 else "")
    return (f"{counted(len(layers), 'layer')} quantized by torch.ao.quantization ({shown}: "
            f"{weights:,} {'/'.join(sorted(dtypes)) or 'quantized'} weights and {counted(biases, 'bias', 'biases')}) "
            f"keep their weight and bias packed in <layer>{_PACKED_PARAMS}, a tuple, not a tensor: they are left out "
            "of the tensors and parameters counted here (their scale and zero_point, the output's, are not weights); "
            "the model quantized the same way (quantize_dynamic, or prepare and convert) loads this state dict, the "
            "float model does not; on that quantized model, layer.weight().dequantize() gives a layer's float weight")


# torch.ao.quantization's quantized tensors whose storage holds one integer per value (torch._utils._rebuild_qtensor
# rebuilds them from that storage, the qscheme and its scale(s) / zero point(s), all on torch's weights_only list): read
# as that integer type. quint4x2 / quint2x4 pack several values a byte and stay refused.
_QUANTIZED_REPR = {"torch.qint8": "int8", "torch.quint8": "uint8", "torch.qint32": "int32"}
_DEQUANTIZE_ALL = "{k: v.dequantize() if v.is_quantized else v for k, v in state_dict.items()}"


def quantized_scheme(value: Any) -> str | None:
    """'qint8 per_channel_affine' for a torch.ao.quantization quantized tensor listed as its integers
    (`_QUANTIZED_REPR`), None for anything else (a plain tensor, a torch-free stand-in, a quint4x2 tensor)."""
    if value is None or isinstance(value, StaticTensor) or not getattr(value, "is_quantized", False):
        return None
    if str(value.dtype) not in _QUANTIZED_REPR:
        return None
    return f"{str(value.dtype).removeprefix('torch.')} {str(value.qscheme()).removeprefix('torch.')}"


def _refuse_quantized_without_quantizer(tensors: Mapping[str, Any]) -> None:
    """Refuse a tensor of a quantized dtype that torch rebuilt with no quantizer: a plain tensor's record
    (`_rebuild_tensor_v2`) over a storage torch typed as quantized (its key shared with a quantized tensor's, or its
    storage type QInt8Storage). torch.load hands it out, but its first use asks the quantizer, and torch fails an
    internal assert ("cannot call qscheme on UnknownQuantizer": an "unexpected RuntimeError" of every command).

    Raises:
        CorruptCheckpoint: naming the first such tensor and its dtype.
    """
    for name, value in tensors.items():
        if isinstance(value, StaticTensor) or not value.is_quantized:
            continue
        try:
            value.qscheme()
        except RuntimeError:
            raise CorruptCheckpoint(
                f"tensor {name!r} has the quantized dtype {str(value.dtype).removeprefix('torch.')} but no scale or "
                "zero point: its record is a plain tensor's over a storage of a quantized type (torch.save never "
                "writes one; the file was edited or is damaged)") from None


def _torch_ao_quantized_note(tensors: Mapping[str, Any]) -> str | None:
    """The note for torch.ao.quantization's quantized tensors (convert's quantized Conv2d weight), listed as their
    integer values; None where there are none."""
    quantized = {name: value for name, value in tensors.items()
                 if not isinstance(value, StaticTensor) and value.is_quantized}
    if not quantized:
        return None
    kinds = sorted({f"{str(v.dtype).removeprefix('torch.')} {str(v.qscheme()).removeprefix('torch.')}"
                    for v in quantized.values()})
    names = [clip_middle(name, _NOTE_NAME_CHARS) for name in list(quantized)[:3]]
    shown = ", ".join(names) + (f" and {len(quantized) - 3:,} more" if len(quantized) > 3 else "")
    return (f"{counted(len(quantized), 'tensor')} quantized by torch.ao.quantization ({shown}: "
            f"{', '.join(kinds)}) listed as the integers stored, their scales and zero points inside each tensor "
            "not counted; only the model quantized the same way (prepare and convert) loads this state dict; a float "
            f"model loads it once dequantized, {_DEQUANTIZE_ALL}; inspect --stats reads their values dequantized, "
            "convert, shard and diff-keys --values refuse them")


def tensor_infos(contents: PickleContents, relpath: str) -> list[TensorInfo]:
    """Describe each tensor of a loaded pickle, grouping tensors that share storage."""
    infos: list[TensorInfo] = []
    for name, tensor in contents.state_dict.items():
        if isinstance(tensor, StaticTensor):
            record = tensor.storage
            storage_id = f"{relpath}:{record.key}" if record.nbytes else None
            infos.append(TensorInfo(name=name, shape=values_shape(tensor.shape, tensor.dtype), dtype=tensor.dtype,
                                    file=relpath, storage_id=storage_id,
                                    view_id=_view_id(storage_id, tensor.storage_offset, tensor.shape, tensor.stride,
                                                     tensor.dtype)))
            continue
        # A nested tensor has the strided layout but no sizes: asking for its shape is torch's "Internal error".
        quantized_as = _QUANTIZED_REPR.get(str(tensor.dtype)) if tensor.is_quantized else None
        if tensor.layout is not _strided() or (tensor.is_quantized and quantized_as is None) or tensor.is_nested:
            if tensor.is_nested:
                kind, fix = "nested (torch.nested)", "its parts as separate tensors (.unbind())"
            elif tensor.is_quantized:
                kind, fix = "quantized (torch.quantize_per_*)", ".dequantize()"
                layer = name.rpartition(".")[0]
                if f"{layer}.scale" in contents.state_dict and f"{layer}.zero_point" in contents.state_dict:
                    # convert's quantized Conv / Embedding keep their weight as a quantized tensor, with the output's
                    # scale and zero_point beside it: dequantized, the float model (not this one) would load it.
                    kind = (f"{str(tensor.dtype).removeprefix('torch.')} quantized (a torch.ao.quantization "
                            "model's state dict: convert's quantized layer, its scale and zero_point beside it)")
                    fix = (f"every quantized tensor .dequantize()d, e.g. {_DEQUANTIZE_ALL}; only the model quantized "
                           "the same way loads the file as it is")
            else:
                kind, fix = f"sparse ({str(tensor.layout).removeprefix('torch.')})", ".to_dense()"
            raise UnsupportedFormat(
                f"tensor {name!r} is a {kind} tensor; weightdoctor reads dense tensors only (save it with {fix})"
            )
        dtype = quantized_as or canonical_dtype(str(tensor.dtype))
        try:
            storage = tensor.untyped_storage()
            # Meta tensors have no data (every data_ptr is 0): nothing says two of them are one tensor.
            storage_id = f"{relpath}:{storage.data_ptr():x}" if storage.nbytes() and not tensor.is_meta else None
            view_id = _view_id(storage_id, tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), dtype)
        except (RuntimeError, NotImplementedError):
            storage_id = view_id = None
        infos.append(
            TensorInfo(
                name=name,
                shape=values_shape(tuple(int(d) for d in tensor.shape), dtype),
                dtype=dtype,
                file=relpath,
                storage_id=storage_id,
                view_id=view_id,
            )
        )
    return infos


# Distinct views of one storage together: fused q/k/v slices add up to the storage, a transposed alias to twice it;
# thousands of overlapping slices (`w[i:]` for every i) would make a 4 MB file read and write gigabytes.
MAX_VIEWS_TO_STORAGE = 4


def refuse_amplified_views(state_dict: dict[str, Any]) -> None:
    """Refuse a file whose distinct views of one storage add up to more than `MAX_VIEWS_TO_STORAGE` times its bytes
    plus `MAX_EXPANDED_BYTES`: each view may pass `as_tensor`'s check, yet reading them all materializes their sum.

    Views are told apart by offset, shape, strides and dtype: tied names of one view count once, as they are read
    (and written) once.

    Raises:
        CorruptCheckpoint: naming the storage's first tensor, its view count and what they claim.
    """
    views: dict[object, tuple[str, int, set[tuple[Any, ...]], list[int]]] = {}
    for name, value in state_dict.items():
        if isinstance(value, StaticTensor):
            storage, storage_bytes = value.storage.key, value.storage.nbytes
            view = (value.storage_offset, value.shape, value.stride, value.dtype)
            view_bytes = value.numel * value.itemsize
        elif is_tensor(value) and not value.is_meta:
            untyped = value.untyped_storage()
            storage, storage_bytes = ("torch", untyped.data_ptr(), untyped.nbytes()), untyped.nbytes()
            view = (value.storage_offset(), tuple(value.shape), value.stride(), str(value.dtype))
            view_bytes = value.numel() * value.element_size()
        else:
            continue
        first, nbytes, seen, total = views.setdefault(storage, (name, storage_bytes, set(), [0]))
        if view not in seen:
            seen.add(view)
            total[0] += view_bytes
    for first, nbytes, seen, total in views.values():
        # One view alone is judged by `as_tensor` (`_refuse_expanded`), whose message says what it repeats.
        if len(seen) > 1 and total[0] > MAX_VIEWS_TO_STORAGE * nbytes + MAX_EXPANDED_BYTES:
            raise CorruptCheckpoint(
                f"{len(seen):,} views of the storage of tensor {first!r} claim {total[0]:,} bytes of its {nbytes:,} "
                f"(overlapping views): refused rather than read, the reads would materialize every view")


def _refuse_expanded(name: str, view_bytes: int, storage_bytes: int) -> None:
    """Refuse a view whose values take far more bytes than its storage holds (`MAX_EXPANDED_BYTES`)."""
    if view_bytes - storage_bytes > MAX_EXPANDED_BYTES:
        raise CorruptCheckpoint(
            f"tensor {name!r} is a view of {view_bytes:,} bytes over a storage of {storage_bytes:,} (its strides "
            "repeat values, e.g. an expanded tensor): refused rather than materialized"
        )


def _strided() -> Any:
    import torch

    return torch.strided


def _view_id(storage_id: str | None, offset: int, shape: tuple[int, ...], stride: tuple[int, ...], dtype: str,
             ) -> str | None:
    """The same string for two names of one tensor (tied weights), a different one for another view of the storage."""
    if storage_id is None:
        return None
    return f"{storage_id}@{offset}:{','.join(map(str, shape))}:{','.join(map(str, stride))}:{dtype}"


def ensure_pickle_file(path: Path, prefix: bytes) -> str:
    """The pickle format of a file that is not safetensors; a pickle of another kind is still scanned.

    Raises:
        UnsafePickle: the file is some other pickle (protocol 0 or 1, ...) that imports unsafe globals.
        UnsupportedFormat: the file is neither.
    """
    fmt = detect_pickle_format(prefix)
    if fmt is None:
        if path.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"):
            from weightdoctor.security import scan_file
            from weightdoctor.security.opcodes import walk_pickle

            # Bytes that do not even parse as a pickle are just not a checkpoint; imports are worse.
            report = scan_file(path)
            # A tar is read by torch.load as its legacy format (the pickles of "storages" first): one whose records
            # the scan could not follow is said so, not "not a PyTorch pickle", which torch.load reads and unpickles.
            # Inert globals are never imported (a protocol 0 pickle.dump of a fairseq Namespace names copyreg's
            # _reconstructor, read as inert where it builds one): those alone are no reason to refuse.
            if any(g.safety not in ("safe", "inert") for g in report.globals) or (
                    report.container == "pytorch-tar" and report.unsafe):
                raise UnsafePickle(f"{report.summary()}; nothing was unpickled")
            with open(path, "rb") as handle:
                parsed = walk_pickle(handle, path.stat().st_size).error is None
            if parsed and report.container == "pickle":
                # A protocol 0 or 1 pickle.dump (no PROTO opcode to recognise it by): read as a plain pickle,
                # after the same scan again in `load_pickle`.
                return "pytorch-legacy"
            if report.container == "pytorch-legacy" and _first_pickle_protocol(path) >= 2:
                # Opcodes of protocol 1 (a BINFLOAT: the file may open with GGUF) before the magic number's PROTO 2:
                # torch.load(weights_only=True) reads the file as torch.save's own.
                return "pytorch-legacy"
            if report.container == "pytorch-legacy":
                # The scan found torch's legacy magic number: torch.save(pickle_protocol=0 or 1) wrote it, with no
                # PROTO opcode for `detect_pickle_format` to see. "Not a PyTorch pickle" said the opposite.
                raise UnsupportedFormat(legacy_low_protocol(path))
        hint = _archive_hint(path)
        if hint is TORCH_TAR:
            raise UnsupportedFormat(torch_tar_message(path))
        if not hint:
            from weightdoctor.checkpoint.foreign import text_reply_hint

            hint = text_reply_hint(path)
        raise UnsupportedFormat("not a safetensors file nor a PyTorch pickle (zip or legacy)" + hint)
    return fmt


def _first_pickle_protocol(path: Path, limit: int = 4096) -> int:
    """The highest PROTO opcode of the file's first pickle (torch's magic number: a few bytes), 0 for none or for
    bytes that are no pickle within `limit`."""
    import pickletools

    try:
        with open(path, "rb") as handle:
            head = handle.read(limit)
        highest = 0
        for opcode, argument, _ in pickletools.genops(head):
            if opcode.name == "PROTO" and isinstance(argument, int):
                highest = max(highest, argument)
        return highest  # genops stops at the first STOP
    except Exception:  # noqa: BLE001 - any opcode error means "no pickle of a known protocol"
        return 0


def legacy_low_protocol(path: Path) -> str:
    """Why a legacy torch.save file of pickle protocol 0 or 1 is refused, and the re-save that reads a protocol 1 one
    (`path` as the user named it: `torch.load(path, ...)` pasted was a NameError)."""
    return ("a legacy-format (non-zip) torch.save file pickled with protocol 0 or 1 (torch.save(..., pickle_protocol=0 "
            "or 1, _use_new_zipfile_serialization=False)), which torch.load's weights_only loader refuses, and "
            "weightdoctor reads torch files only through it; for a protocol 1 file you trust, import torch; "
            "torch.save(torch.load("
            f"{str(path)!r}, weights_only=False), {str(resaved_name(path))!r}) writes it again with the defaults, to "
            "read here; no torch.load reads a protocol 0 one (its storage references were written as text)")

# torch.save(..., pickle_protocol=0) of tensors into a zip: protocol 0 has no BINPERSID, and pickle writes each
# storage reference as PERSID of its str(), which torch's loader refuses ("saved_id must be a tuple, got str").
ZIP_PROTOCOL_0 = (
    "a torch.save file pickled with protocol 0 (torch.save(..., pickle_protocol=0)): its storage references were "
    "written as text, which torch.load refuses, weights_only or not (saved_id must be a tuple); torch.save the "
    "tensors again with the "
    "default protocol and point weightdoctor at that file")

TORCH_TAR = "a PyTorch checkpoint in its oldest format, a tar of storages, tensors and pickle"


def torch_tar_message(path: Path) -> str:
    """Why a tar of storages, tensors and pickle is refused, and the re-save that reads it (`path` as the user named
    it: `torch.load(path, weights_only=False)` pasted was a NameError)."""
    return (f"{TORCH_TAR} (torch.save of PyTorch 0.1), which weightdoctor does not read; for a file you trust, import "
            f"torch; torch.save({_trusted_load(path)}, {str(resaved_name(path))!r}) writes it again in today's "
            "format, to read here")


class _DecompressionBudgetSpent(OSError):
    """More bytes decompressed than a look at member headers needs."""


class _CappedReader:
    """A file object that refuses to read past `budget` bytes (raising _DecompressionBudgetSpent)."""

    def __init__(self, stream: Any, budget: int) -> None:
        self._stream, self._left = stream, budget

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            raise _DecompressionBudgetSpent
        data = self._stream.read(self._left if size is None or size < 0 else min(size, self._left))
        self._left -= len(data)
        return data


def _tar_member_names(path: Path, limit: int = 64, budget: int = 64 << 20) -> list[str] | None:
    """The names of a tar archive's first `limit` members, None for a file that is no tar. A compressed tar is read
    as a stream of at most `budget` decompressed bytes: skipping a member decompresses its data, and 100 KB of
    bzip2 declare gigabytes (tarfile's seekable "r:*" ran for minutes); the names found by then are returned."""
    import bz2
    import gzip
    import lzma
    import tarfile
    import zlib
    from contextlib import ExitStack

    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except OSError:
        return None
    opener = {b"\x1f\x8b": gzip.open, b"BZ": bz2.open, b"\xfd7": lzma.open}.get(magic[:2])
    names: list[str] = []
    try:
        with ExitStack() as stack:
            if opener is None:  # uncompressed: headers are read by seeking, not by reading data
                archive = stack.enter_context(tarfile.open(path, "r:"))
            else:
                stream = _CappedReader(stack.enter_context(opener(path, "rb")), budget)
                archive = stack.enter_context(tarfile.open(fileobj=stream, mode="r|"))  # type: ignore[call-overload]
            for member in archive:
                names.append(member.name.removeprefix("./"))
                if len(names) >= limit:
                    break
    except (_DecompressionBudgetSpent, tarfile.TarError, OSError, EOFError, ValueError, lzma.LZMAError, zlib.error):
        return names or None  # the names read before the budget was spent or the damage met
    return names


def _archive_hint(path: Path) -> str:
    """For a tar archive (a NeMo `.nemo`: model_config.yaml beside model_weights.ckpt): what it holds and what
    to do; "" for anything else. Reads member headers only, at most 64."""
    names = _tar_member_names(path)
    if names is None:
        return ""
    if {"storages", "tensors", "pickle"} <= set(names):
        # torch.load still reads it (serialization.legacy_load), but never under weights_only, which refuses
        # the tar format outright; its pickles were scanned like any other before this was said.
        return TORCH_TAR
    # .th: AllenNLP's model.tar.gz holds its torch.save state dict as weights.th (beside config.json and
    # vocabulary/); without the suffix the archive was "not a safetensors file nor a PyTorch pickle" and no more.
    weights = [n for n in names if n.endswith((".ckpt", ".pt", ".pth", ".bin", ".safetensors", ".th"))]
    shards = [n for n in names if n.endswith(".distcp")]
    if shards and any(n.endswith("model_config.yaml") for n in names):
        # NeMo 1.x's mcore models (dist_ckpt_format torch_dist) keep model_weights/ as a Megatron-Core torch_dist
        # checkpoint: DCP shards beside a common.pt that holds no weights, which was named as the file to read.
        inside = shards[0].rpartition("/")[0] or "."
        return (f"; it is a NeMo archive (.nemo), a tar whose {inside}/ is a Megatron-Core torch_dist checkpoint "
                "(torch.distributed.checkpoint shards, *.distcp and .metadata; its common.pt holds no weights): "
                "extract it (tar -xf) and import torch.distributed.checkpoint.format_utils; "
                "torch.distributed.checkpoint.format_utils.dcp_to_torch_save("
                f"{inside!r}, {str(state_dict_name(path))!r}) writes one torch.save file to read here")
    if not weights:
        return ""
    ranks = sorted({parts[-2] for n in weights if len(parts := n.split("/")) >= 2
                    and re.fullmatch(r"mp_rank_\d+(_\d+)?", parts[-2])})
    if len(ranks) >= 2 and len(ranks) == len(weights) and any(n.endswith("model_config.yaml") for n in names):
        # A model saved under tensor or pipeline parallelism: one model_weights.ckpt per rank, each a part of the
        # model; "point at that file" after naming two did not say which, nor that either is a part.
        return (f"; it is a NeMo archive (.nemo), a tar holding the model in {len(ranks)} model-parallel ranks "
                f"({', '.join(weights[:2])}{', ...' if len(weights) > 2 else ''}), each with its slices of the "
                "weights tensor parallelism splits (under pipeline parallelism, its stage's layers): extract it "
                "(tar -xf) and point at one to read that rank; NeMo's examples/nlp/language_modeling/"
                f"megatron_change_num_partitions.py (--model_file {shell_word(str(path), argument=True)} "
                "--target_tensor_model_parallel_size=1 --target_pipeline_model_parallel_size=1) merges them into "
                "one .nemo")
    if any(n.endswith("model_config.yaml") for n in names):
        kind = "a NeMo archive (.nemo), a tar"
    elif {"weights.th", "config.json"} <= set(names):
        kind = ("an AllenNLP model archive (what its archive_model writes: config.json, weights.th, vocabulary/; "
                "allennlp's load_archive reads it), a tar")
    else:
        kind = "a tar archive"
    that = "that file" if len(weights) == 1 else "one of them"
    return f"; it is {kind} holding {', '.join(weights[:3])}: extract it (tar -xf) and point at {that}"
