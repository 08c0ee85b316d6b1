"""The data the reader returns: `TensorInfo` for each tensor, `CheckpointFile` for each file."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

from weightdoctor.dtypes import BITS_PER_ELEMENT, FLOATING, bits_per_element


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor of a checkpoint, described without reading its values.

    Attributes:
        name: the state-dict key.
        shape: the tensor's shape.
        dtype: canonical dtype name (`float32`, `bfloat16`, ...; see `weightdoctor.dtypes`).
        file: path of the file that holds it, relative to the checkpoint's root.
        data_offsets: for safetensors, the `[begin, end)` byte range inside the file's data section.
        storage_id: tensors with the same non-None `storage_id` share storage (in a pickle: tied weights,
            or views such as the slices of a fused matrix).
        view_id: tensors with the same non-None `view_id` are one tensor under several names (tied weights:
            same storage, offset, shape, strides and dtype); slices of one storage have different ones.
        num_params: number of elements (derived).
        nbytes: bytes of this tensor's own elements (derived; a view counts its view, not its storage).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    file: str
    data_offsets: tuple[int, int] | None = None
    storage_id: str | None = None
    view_id: str | None = None
    num_params: int = field(init=False)
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        # Runs once per tensor of every header (10,000s for large checkpoints): kept lean.
        numel = math.prod(self.shape)
        bits = BITS_PER_ELEMENT.get(self.dtype) or bits_per_element(self.dtype)
        set_field = object.__setattr__
        set_field(self, "num_params", numel)
        set_field(self, "nbytes", numel * bits // 8)

    @property
    def is_floating(self) -> bool:
        return self.dtype in FLOATING


def strides_overflow(shape: Sequence[int]) -> bool:
    """Whether torch's strides of `shape` pass 2**63 - 1 ("Stride calculation overflowed"): its first dimension's,
    the product of the others (a 0 counted as 1), is the largest. Only an empty shape can (a non-empty one's is at
    most its element count): `[0, 2**62, 3]` passes every size check, and torch refuses to make it.

    Example:
        >>> strides_overflow([0, 2**62, 3]), strides_overflow([2**62, 3, 0])
        (True, False)
    """
    return math.prod(max(dim, 1) for dim in shape[1:]) > 2**63 - 1


def unique_tensors(tensors: Iterable[TensorInfo]) -> list[TensorInfo]:
    """`tensors` with each tensor saved under several names (tied weights, same `view_id`) kept once."""
    seen: set[str] = set()
    out: list[TensorInfo] = []
    for info in tensors:
        if info.view_id is not None:
            if info.view_id in seen:
                continue
            seen.add(info.view_id)
        out.append(info)
    return out


# The slot descriptors of TensorInfo's fields, for `tensor_infos`.
_SLOTS = {name: TensorInfo.__dict__[name] for name in TensorInfo.__slots__}


def tensor_infos(
    names: Sequence[str],
    shapes: Sequence[tuple[int, ...]],
    dtypes: Sequence[str],
    file: str,
    data_offsets: Sequence[tuple[int, int]],
    num_params: Sequence[int],
    nbytes: Sequence[int],
) -> list[TensorInfo]:
    """Many `TensorInfo`s at once, equal to those `TensorInfo(...)` builds, without a call per tensor.

    A safetensors header of 10,000 entries would spend more time in `__init__`/`__post_init__` than in
    parsing its JSON; here each field is set on every instance by one C-level loop over its slot
    descriptor. The caller computed `num_params` and `nbytes` (as `__post_init__` would) while
    validating the header.

    Example:
        >>> [info] = tensor_infos(["w"], [(2, 3)], ["float32"], "m.safetensors", [(0, 24)], [6], [24])
        >>> info == TensorInfo("w", (2, 3), "float32", "m.safetensors", (0, 24))
        True
    """
    count = len(names)
    infos: list[TensorInfo] = list(map(object.__new__, repeat(TensorInfo, count)))
    columns = {"name": names, "shape": shapes, "dtype": dtypes, "file": repeat(file, count),
               "data_offsets": data_offsets, "storage_id": repeat(None, count), "view_id": repeat(None, count),
               "num_params": num_params,
               "nbytes": nbytes}
    if columns.keys() != _SLOTS.keys():  # a field added to TensorInfo must be filled here too
        raise AssertionError(f"tensor_infos sets {sorted(columns)}, TensorInfo has {sorted(_SLOTS)}")
    for name, values in columns.items():
        deque(map(_SLOTS[name].__set__, infos, values), maxlen=0)
    return infos


@dataclass(frozen=True)
class CheckpointFile:
    """A file that is part of a checkpoint (a weight file, a shard, an index or a config)."""

    path: Path
    relpath: str
    role: str  # "weights", "index" or "config"
    format: str  # "safetensors", "pytorch-zip", "pytorch-legacy", "pickle" (pickle.dump's), "json"
    size_bytes: int
