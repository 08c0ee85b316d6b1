"""A streaming safetensors writer: the header first, then each tensor's bytes, one tensor at a time.

`safetensors.torch.save_file` needs the whole state dict in memory; this writer needs only the names,
dtypes and shapes up front and then one tensor at a time. It lays the file out exactly as the
safetensors library does (tensors ordered by dtype alignment, then name; the header padded with spaces
to 8 bytes), so for the same tensors the two produce the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from weightdoctor.dtypes import CANONICAL_TO_SAFETENSORS, bits_per_element
from weightdoctor.errors import OutputError
from weightdoctor.threads import WorkerPool
from weightdoctor.wording import counted, plural

if TYPE_CHECKING:
    import torch

# The safetensors library's Dtype enum order; it writes tensors in descending order of it.
_DTYPE_RANK = {
    name: rank
    for rank, name in enumerate(
        ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ",
         "F8_E5M2FNUZ", "I16", "U16", "F16",
         "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"]
    )
}


@dataclass(frozen=True)
class TensorSlot:
    """One tensor the writer will store: its name, canonical dtype and shape (torch's shape)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        numel = math.prod(self.shape) if self.shape else 1
        if self.dtype == "float4_e2m1fn_x2":  # one byte holds two values; torch counts bytes
            return numel
        return numel * bits_per_element(self.dtype) // 8

    @property
    def header_shape(self) -> list[int]:
        # safetensors counts float4 values, torch counts packed bytes: the last dimension doubles.
        if self.dtype == "float4_e2m1fn_x2" and self.shape:
            return [*self.shape[:-1], self.shape[-1] * 2]
        return list(self.shape)


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a tensor, without copying when it is already contiguous."""
    import torch

    flat = tensor.detach().reshape(-1)
    if not flat.is_contiguous():
        flat = flat.contiguous()
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


# The most a strided tensor's piece copied to be written holds (`contiguous_pieces`), but for a row of its last
# dimension, which is copied whole.
_PIECE_BYTES = 4 << 20


def contiguous_pieces(tensor: torch.Tensor, most: int) -> Iterator[torch.Tensor]:
    """Contiguous pieces of a tensor whose bytes, one after the other, are its bytes in row-major order: views where
    it is contiguous, else copies of runs of whole rows along its first dimension of at most `most` bytes (or of
    one row, taken apart the same way where a row is larger).

    Example:
        >>> import torch
        >>> t = torch.arange(12).reshape(3, 4).t()
        >>> [p.tolist() for p in contiguous_pieces(t, 24)]
        [[[0, 4, 8]], [[1, 5, 9]], [[2, 6, 10]], [[3, 7, 11]]]
    """
    if tensor.dim() == 0 or tensor.is_contiguous():
        yield tensor
        return
    rows = tensor.shape[0]
    row_bytes = tensor[0].numel() * tensor.element_size() if rows else 0
    if tensor.dim() > 1 and row_bytes > most:
        for index in range(rows):
            yield from contiguous_pieces(tensor[index], most)
        return
    step = max(1, most // max(row_bytes, 1))
    for start in range(0, rows, step):
        yield tensor[start:start + step].contiguous()


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's bytes (what verification compares between source and output)."""
    return hashlib.sha256(tensor_bytes(tensor)).hexdigest()


_POOL: WorkerPool | None = None


def hash_pool() -> WorkerPool:
    """Threads that hash while the main thread writes (hashlib and os.write both release the GIL); where the system
    refuses them their memory, the hashing is done on the main thread (a ThreadPoolExecutor's hung: `WorkerPool`)."""
    global _POOL
    if _POOL is None:
        _POOL = WorkerPool(2)
    return _POOL


def _sha256(data: memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def layout(slots: list[TensorSlot], metadata: dict[str, str] | None) -> tuple[bytes, list[TensorSlot]]:
    """The header bytes (size prefix included) and the order in which tensor bytes must follow."""
    for slot in slots:
        if slot.dtype not in CANONICAL_TO_SAFETENSORS:
            raise OutputError(f"safetensors cannot store tensor {slot.name!r} of dtype {slot.dtype}")
    ordered = sorted(slots, key=lambda s: (-_DTYPE_RANK[CANONICAL_TO_SAFETENSORS[s.dtype]], s.name))
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for slot in ordered:
        header[slot.name] = {
            "dtype": CANONICAL_TO_SAFETENSORS[slot.dtype],
            "shape": slot.header_shape,
            "data_offsets": [offset, offset + slot.nbytes],
        }
        offset += slot.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, ordered


def _write_all(fd: int, data: memoryview | bytes) -> None:
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    while view:
        written = os.write(fd, view[: 1 << 30])
        view = view[written:]


class SafetensorsWriter:
    """Write a safetensors file tensor by tensor, in the order `self.order` gives.

    Example:
        >>> with SafetensorsWriter(path, slots, {"format": "pt"}) as writer:  # doctest: +SKIP
        ...     for slot in writer.order:
        ...         writer.write(slot.name, load(slot.name))

    Each `write` checks the tensor against its slot (dtype, shape) and returns the sha256 of its bytes.
    `close` raises if a tensor is missing, so a short file is never taken for a finished one.
    """

    def __init__(self, path: Path, slots: list[TensorSlot], metadata: dict[str, str] | None = None) -> None:
        self.path = path
        self.header, self.order = layout(slots, metadata)
        self.digests: dict[str, str] = {}
        self._next = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        _write_all(self._fd, self.header)
        from weightdoctor.writers import hooks

        hooks.reached("after-header")

    def write(self, name: str, tensor: torch.Tensor) -> str:
        """Append one tensor's bytes; it must be the next one in `self.order`."""
        from weightdoctor.dtypes import canonical_dtype

        slot = self._slot_for(name)
        if canonical_dtype(str(tensor.dtype)) != slot.dtype or tuple(tensor.shape) != slot.shape:
            raise ValueError(
                f"tensor {name!r} is {tensor.dtype}{list(tensor.shape)}, expected {slot.dtype}{slot.shape}"
            )
        if tensor.dim() > 0 and not tensor.is_contiguous():
            return self._done(name, self._write_pieces(name, tensor, slot.nbytes))
        return self._write_whole(name, tensor_bytes(tensor), slot.nbytes)

    def write_bytes(self, name: str, data: bytes | bytearray | memoryview) -> str:
        """Append one tensor given as its raw bytes, for a dtype no torch dtype holds (six-bit floats): copied as
        they are. It must be the next one in `self.order`, of that slot's size."""
        return self._write_whole(name, memoryview(data).cast("B"), self._slot_for(name).nbytes)

    def _slot_for(self, name: str) -> TensorSlot:
        slot = self.order[self._next]
        if name != slot.name:
            raise ValueError(f"expected tensor {slot.name!r} next, got {name!r}")
        return slot

    def _write_whole(self, name: str, data: memoryview, nbytes: int) -> str:
        """Write one tensor's bytes in one run, hashed on the side while they are written; its sha256."""
        if len(data) != nbytes:
            raise ValueError(f"tensor {name!r} has {counted(len(data), 'byte', grouped=False)}, expected {nbytes}")
        future = hash_pool().submit(_sha256, data)
        _write_all(self._fd, data)
        return self._done(name, future.result())

    def _done(self, name: str, digest: str) -> str:
        self.digests[name] = digest
        self._next += 1
        return digest

    def _write_pieces(self, name: str, tensor: torch.Tensor, nbytes: int) -> str:
        """Write a strided tensor (a transpose a .bin holds as such) a piece at a time, each copied alone
        (`contiguous_pieces`); its sha256. Copied whole, it took memory of its own beside the source's view: under
        `ulimit -d` converting a 600 MB .bin died in torch's allocator ("unexpected RuntimeError: ...
        DefaultCPUAllocator: can't allocate memory: you tried to allocate 100000000 bytes")."""
        import torch

        digest = hashlib.sha256()
        written = 0
        for piece in contiguous_pieces(tensor.detach(), _PIECE_BYTES):
            data = memoryview(piece.reshape(-1).view(torch.uint8).numpy()).cast("B")
            digest.update(data)
            _write_all(self._fd, data)
            written += len(data)
        if written != nbytes:
            raise ValueError(f"tensor {name!r} has {counted(written, 'byte', grouped=False)}, expected {nbytes}")
        return digest.hexdigest()

    def close(self) -> None:
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        os.close(fd)
        if self._next != len(self.order):
            raise ValueError(f"only {self._next} of {counted(len(self.order), 'tensor', grouped=False)} "
                             f"{plural(self._next, 'was', 'were')} written to {self.path}")

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        elif self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
