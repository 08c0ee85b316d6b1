"""Reading a torch zip checkpoint without torch: each tensor's dtype, shape and place in the file.

`torch.save` writes a zip archive: `data.pkl` pickles the structure (dicts of `_rebuild_tensor_v2`
calls whose storages are persistent references), and each storage is a record `data/<key>`, stored
uncompressed. Everything a structure-only command needs (names, shapes, dtypes, which tensors share
storage) and everything a byte copy needs (where a contiguous tensor's bytes lie in the file) is in
`data.pkl` and the zip directory, so this module reads them with an unpickler whose `find_class` knows
only the handful of torch names a state dict uses, and returns stand-ins (`StaticTensor`) instead of
tensors. Importing torch alone takes longer than copying a 2 GB checkpoint here.

It runs only after the static security scan found the pickle safe, and it resolves no global at all:
every name it knows maps to a stand-in of its own. Anything else (numpy arrays, quantized or
non-contiguous storages, tensor subclasses, an irregular archive, a big-endian file) raises
`NeedsTorch`, and the caller reads the file with `torch.load(weights_only=True)` as before.
A `StaticTensor` becomes a real tensor with `to_torch()`: a view of a private, read-only memory map of
the file, as `torch.load(mmap=True)` gives.
"""

from __future__ import annotations

import bisect
import collections
import errno
import itertools
import math
import mmap
import operator
import os
import pickle
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightdoctor.dtypes import BITS_PER_ELEMENT, torch_dtype
from weightdoctor.errors import CorruptCheckpoint
from weightdoctor.wording import counted

if TYPE_CHECKING:
    from typing import BinaryIO

    import torch

    from weightdoctor.security.archive import ZipMember

# torch's legacy typed storages -> the dtype of their elements (quantized storages are left to torch).
STORAGE_DTYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}
# torch dtypes a pickle may name (as `_rebuild_tensor_v3`'s last argument): whole-byte ones we can size.
TORCH_DTYPES = frozenset(name for name, bits in BITS_PER_ELEMENT.items() if bits % 8 == 0) | {"float4_e2m1fn_x2"}
# The largest data.pkl read this way (a 10,000-tensor state dict pickles to about 1 MB).
MAX_DATA_PKL = 256 << 20


# What `StaticTensor.gather` reads: the pages a map's faults would read in, pages at most `_GAP_PAGES` apart in one
# call (as the kernel's readahead would), at most `_BATCH_PAGES` (4 MiB of 4 KiB pages) held at a time.
_PAGE = mmap.PAGESIZE
_GAP_PAGES = 4
_BATCH_PAGES = (4 << 20) // mmap.PAGESIZE
# Rows read by one os.preadv of `StaticTensor._read_rows`, with the gaps between them: under IOV_MAX (1,024 on
# Linux), two buffers a row.
_IOV_ROWS = 500

class _NoState:
    """A stand-in whose state the pickle may not set. The BUILD opcode would otherwise write into it after the
    checks its constructor made (a tensor's shape grown past its storage), or, on one of the rebuild functions
    below, change how every later file is read (`__defaults__`): such a pickle is left to torch's loader."""

    def __setstate__(self, state: Any) -> None:
        raise NeedsTorch("BUILD on a tensor, a storage or an imported function")


class NeedsTorch(Exception):
    """The file holds something this reader does not model; `torch.load` must read it."""


@dataclass(frozen=True)
class _StorageType(_NoState):
    dtype: str | None  # None: torch.UntypedStorage (bytes; the tensor's dtype comes with it)


@dataclass(frozen=True)
class _Dtype(_NoState):
    name: str


class StaticArchive:
    """A torch zip file whose records are read in place; the memory map is made on first use."""

    def __init__(self, path: Path, identity: tuple[int, int, int, int] | None = None) -> None:
        self.path = path
        # (st_dev, st_ino, st_size, st_mtime_ns) when the records were listed: the map, made later by path, must be
        # of that same file (a file replaced in between had its bytes read at the old file's offsets).
        self.identity = identity
        self._map: mmap.mmap | None = None
        self._too_large = False  # the system refused to map the whole file (`mapping`)
        self._lock = threading.Lock()

    def _check_identity(self, fd: int) -> None:
        now = file_identity(os.fstat(fd))
        # Cut short in place: `to_torch` says which record the file now ends before.
        shorter = self.identity is not None and now[:2] == self.identity[:2] and now[2] < self.identity[2]
        if self.identity is not None and now != self.identity and not shorter:
            raise CorruptCheckpoint(
                "the file changed since its records were read (replaced, or its size or modification "
                "time changed); nothing more is read from it", path=str(self.path))

    @property
    def mapped_whole(self) -> bool:
        """Whether the map of the whole file (`mapping`) is made already."""
        return self._map is not None

    def mapping(self) -> mmap.mmap | None:
        """A private, copy-on-write map of the whole file (as torch.load(mmap=True) maps it), or None where the
        system refuses a map that large: a private writable map counts in full against the memory the kernel
        commits, and Linux's default overcommit rule refuses one larger than its RAM and swap (a 30 GB .bin on a
        machine of 24 GB), though reading one tensor of it touches only that tensor's pages (`range_mapping`).

        Raises:
            CorruptCheckpoint: the file is no longer the one whose records were listed (replaced or rewritten).
        """
        with self._lock:
            mapped = self._map
            if mapped is None:
                if self._too_large:
                    return None
                with open(self.path, "rb") as handle:
                    self._check_identity(handle.fileno())
                    try:
                        mapped = self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
                    except OSError as exc:
                        if exc.errno != errno.ENOMEM:
                            raise
                        self._too_large = True
                        return None
        _hold(self)
        return mapped

    def range_mapping(self, offset: int, length: int) -> tuple[mmap.mmap, int]:
        """A private, copy-on-write map of the file's bytes [offset, offset + length) alone, and where `offset`
        lies in it (a map starts at a multiple of the allocation granularity). Made anew on each call: it lives
        as long as the tensor viewing it.

        Raises:
            CorruptCheckpoint: the file changed since its records were listed, or now ends before `offset + length`.
            OSError: the system refuses even this map (ENOMEM: more than it can commit).
        """
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        with open(self.path, "rb") as handle:
            self._check_identity(handle.fileno())
            size = os.fstat(handle.fileno()).st_size
            if offset + length > size:
                raise CorruptCheckpoint(
                    f"file ended before byte {offset + length:,} ({counted(size, 'byte')} now): truncated or "
                    "changed while reading", path=str(self.path))
            return mmap.mmap(handle.fileno(), offset + length - start, offset=start,
                             access=mmap.ACCESS_COPY), offset - start

    def drop_map(self) -> None:
        """Let go of the map: it is unmapped (and its descriptor closed) once no tensor views it any more; the next
        value read maps the file again."""
        self._map = None


# The archives whose maps are held, the most recently used last: each map holds a descriptor of its own, so that
# reading the values of a checkpoint of hundreds of .bin shards (inspect --stats, check-dtype, a cast) failed with
# "Too many open files" once their number passed the limit (1,024 on Linux, 256 on macOS).
# Weak references: an archive no checkpoint holds any more goes, its map with it, as before.
_MAPS_HELD = 32
_HELD: collections.OrderedDict[int, weakref.ref[StaticArchive]] = collections.OrderedDict()
_HELD_LOCK = threading.Lock()


def _hold(archive: StaticArchive) -> None:
    """Count `archive` as just used; drop the maps of the least recently used beyond `_MAPS_HELD`."""
    with _HELD_LOCK:
        _HELD.pop(id(archive), None)
        _HELD[id(archive)] = weakref.ref(archive)
        dropped = [_HELD.popitem(last=False)[1]() for _ in range(len(_HELD) - _MAPS_HELD)]
    for old in dropped:
        if old is not None:
            old.drop_map()


def file_identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What tells one version of a file from another: (st_dev, st_ino, st_size, st_mtime_ns)."""
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class StorageRecord(_NoState):
    """One storage: its key (`data/<key>`), element dtype, and where its bytes are in the file."""

    archive: StaticArchive = field(repr=False, compare=False)
    key: str
    data_offset: int
    nbytes: int


@dataclass(frozen=True)
class StaticTensor(_NoState):
    """A tensor of a torch zip checkpoint, described without torch (the stand-in `to_torch` turns real).

    `storage_offset` and `stride` count elements of `dtype`, as torch's do.
    """

    storage: StorageRecord
    dtype: str
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int

    @property
    def itemsize(self) -> int:
        return BITS_PER_ELEMENT[self.dtype] // 8 if self.dtype != "float4_e2m1fn_x2" else 1

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def is_contiguous(self) -> bool:
        if self.numel == 0:
            return True  # as torch says of every empty tensor
        expected = 1
        for size, stride in zip(reversed(self.shape), reversed(self.stride), strict=True):
            if size != 1 and stride != expected:
                return False
            expected *= size
        return True

    def byte_range(self) -> tuple[int, int] | None:
        """(file offset, length) of the tensor's bytes when they are one contiguous run, else None."""
        if not self.is_contiguous():
            return None
        return self.storage.data_offset + self.storage_offset * self.itemsize, self.numel * self.itemsize

    def span_bytes(self) -> int:
        """Bytes of its storage from the view's first element to its last (its `nbytes` where contiguous; a slice
        of columns of a larger tensor reaches across the rows of all of it)."""
        if self.numel == 0:
            return 0
        extent = sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True)) + 1
        return extent * self.itemsize

    def read_whole(self) -> torch.Tensor:
        """The tensor's values read into memory of their own with plain file reads (os.preadv), for a caller that
        reads them all (a cast, --stats, check-dtype, diff-keys --values): a view of the file's map (`to_torch`)
        raised SIGBUS on the first page past the file's end where the file was cut short while the values were read,
        killing the process with no message (exit 135) and leaving a temporary output behind; a read runs short and
        says so instead. Costs a copy out of the page cache (benchmarks: bench_convert's cast of a 1 GB .bin).

        Only for a view whose bytes are its own span (`span_bytes` its size: contiguous, or its dimensions
        permuted); a slice of a larger storage is read through `to_torch`'s map of the bytes it reaches.

        Raises:
            CorruptCheckpoint: the file changed since its records were listed, or ends before the view's last byte.
        """
        import torch

        dtype = torch_dtype(self.dtype)
        length = self.span_bytes()
        if length == 0:
            return torch.empty(0, dtype=dtype).as_strided(self.shape, self.stride, 0)
        first = self.storage.data_offset + self.storage_offset * self.itemsize
        values = torch.empty(length, dtype=torch.uint8)
        view = memoryview(values.numpy())
        fd = os.open(self.storage.archive.path, os.O_RDONLY)
        try:
            self.storage.archive._check_identity(fd)
            done = 0
            while done < length:
                got = os.preadv(fd, [view[done:]], first + done)
                if got == 0:
                    size, end = os.fstat(fd).st_size, self.storage.data_offset + self.storage.nbytes
                    where = (f"before the bytes of storage data/{self.storage.key} ({counted(size, 'byte')} now, "
                             f"the record ends at {end:,})" if size <= self.storage.data_offset else
                             f"at byte {size:,}, inside the bytes of storage data/{self.storage.key} (the record ends "
                             f"at {end:,})")
                    raise CorruptCheckpoint(f"file ended {where}: truncated or changed while reading",
                                            path=str(self.storage.archive.path))
                done += got
        finally:
            os.close(fd)
        return values.view(dtype).as_strided(self.shape, self.stride, 0)

    def read(self) -> torch.Tensor:
        """Its values read with plain file reads into memory of their own: `read_whole` where its bytes are its own
        span, else `read_slices`.

        Raises:
            CorruptCheckpoint: the file changed since its records were listed, or ends before the view's last byte.
        """
        return self.read_whole() if self.span_bytes() == self.numel * self.itemsize else self.read_slices()

    def leading(self, limit: int) -> StaticTensor:
        """The view of its first elements (C order) that hold at least its first `limit` bytes, for a caller that
        reads no more (a pickle's first bytes): within its first index along each leading dimension that alone
        holds `limit` bytes or more, then the fewest indices along the next: less than twice `limit` bytes (and one
        element), where a stepped view's bytes read through `contiguous()` were all of them.

        Example:
            >>> view = StaticTensor(None, "uint8", (4, 1000), (2000, 2), 0)  # every other byte of 4 rows
            >>> view.leading(1500).shape, view.leading(10).shape
            ((2, 1000), (10,))
        """
        shape, stride = self.shape, self.stride
        while len(shape) > 1 and math.prod(shape[1:]) * self.itemsize >= limit:
            shape, stride = shape[1:], stride[1:]  # its first row holds them all
        if shape:
            row = math.prod(shape[1:]) * self.itemsize
            shape = (min(shape[0], -(-limit // row)) if row else shape[0], *shape[1:])
        return StaticTensor(self.storage, self.dtype, shape, stride, self.storage_offset)

    def read_slices(self) -> torch.Tensor:
        """The values of a view that reaches across more of its storage than its own bytes (a slice of columns of a
        larger tensor, every other row), read into a contiguous tensor of their own with plain file reads (os.preadv)
        of at most `_BATCH_PAGES` of its span at a time (or one slice, where one is larger), each copied out of the
        buffer: `to_torch`'s map of its span raised SIGBUS where the file was cut short while check-dtype, --stats,
        a convert or diff-keys --values read the view (redteam39: exit 135, no message). Memory: the values and the
        buffer (`slice_buffer_bytes`), not the span.

        Raises:
            CorruptCheckpoint: the file changed since its records were listed, or ends before the view's last byte.
        """
        import torch

        dtype = torch_dtype(self.dtype)
        out = torch.empty(self.shape, dtype=dtype)
        if self.numel == 0:
            return out
        if self._rows_in_order():
            return self._read_rows(out)
        axis, per_read, buffer_bytes = self._slicing()
        others = [d for d in range(len(self.shape)) if d != axis]
        shape, stride = [self.shape[d] for d in others], [self.stride[d] for d in others]
        rest = sum((n - 1) * s for n, s in zip(shape, stride, strict=True)) + 1  # elements one slice reaches
        buffer = torch.empty(buffer_bytes, dtype=torch.uint8)
        view = memoryview(buffer.numpy())
        moved = out.movedim(axis, 0)
        fd = os.open(self.storage.archive.path, os.O_RDONLY)
        try:
            self.storage.archive._check_identity(fd)
            for start in range(0, self.shape[axis], per_read):
                count = min(per_read, self.shape[axis] - start)
                first = self.storage.data_offset + (self.storage_offset + start * self.stride[axis]) * self.itemsize
                length = ((count - 1) * self.stride[axis] + rest) * self.itemsize
                self._read_pages(fd, view, first, length)
                piece = buffer[:length].view(dtype).as_strided((count, *shape), (self.stride[axis], *stride), 0)
                moved[start:start + count] = piece
        finally:
            os.close(fd)
        return out

    def _rows_in_order(self) -> bool:
        """Whether the view is rows of contiguous elements in storage order (a slice of columns, every other row of
        a matrix): its last dimension's stride 1, and each row after the one before it in the file."""
        # Rows of under 1 KiB (a column or two of a large matrix) are read a slab at a time: a call per 500 of them
        # cost more than the copy it spares.
        if len(self.shape) < 2 or (self.stride[-1] != 1 and self.shape[-1] != 1) \
                or self.shape[-1] * self.itemsize < 1024:
            return False
        expected = self.shape[-1]
        for size, stride in zip(reversed(self.shape[:-1]), reversed(self.stride[:-1]), strict=True):
            if size != 1 and stride < expected:
                return False
            expected = stride * size if size != 1 else expected
        return True

    def _read_rows(self, out: torch.Tensor) -> torch.Tensor:
        """`read_slices` for rows in storage order: each row read straight into `out`, the bytes between two rows
        into a scratch buffer (one os.preadv of up to `_IOV_ROWS` rows), with no copy beside."""
        import torch

        row = self.shape[-1] * self.itemsize
        rows = out.reshape(-1, self.shape[-1]).view(torch.uint8)
        view = memoryview(rows.numpy()).cast("B")
        # Each row's first element in the storage (the C-order positions of the rows' starts).
        starts = torch.zeros(1, dtype=torch.int64)
        for size, stride in zip(self.shape[:-1], self.stride[:-1], strict=True):
            starts = (starts.unsqueeze(1) + torch.arange(size, dtype=torch.int64) * stride).reshape(-1)
        offsets = ((starts + self.storage_offset) * self.itemsize + self.storage.data_offset).tolist()
        gaps = [after - before - row for before, after in itertools.pairwise(offsets)]
        # The bytes between two rows go to a scratch buffer of at most 4 MiB; a wider gap (a step over whole
        # matrices of a 3-D view) ends the call, and the next row starts another.
        scratch = memoryview(bytearray(min(max(gaps, default=0), _BATCH_PAGES * _PAGE)))
        fd = os.open(self.storage.archive.path, os.O_RDONLY)
        try:
            self.storage.archive._check_identity(fd)
            first = 0
            while first < len(offsets):
                buffers, index = [], first
                while True:
                    buffers.append(view[index * row:(index + 1) * row])
                    index += 1
                    if index == len(offsets) or index - first == _IOV_ROWS or gaps[index - 1] > len(scratch):
                        break
                    if gaps[index - 1]:
                        buffers.append(scratch[:gaps[index - 1]])
                length = offsets[index - 1] + row - offsets[first]
                got = os.preadv(fd, buffers, offsets[first])
                if got < length:  # a short read (the file ends, or a signal): the rest read from where it stopped
                    self._read_rest(fd, buffers, offsets[first], got)
                first = index
        finally:
            os.close(fd)
        return out

    def _read_rest(self, fd: int, buffers: list[memoryview], offset: int, done: int) -> None:
        """Finish a short os.preadv into `buffers` from file `offset`, `done` bytes of them read already."""
        for buffer in buffers:
            if done >= len(buffer):
                done -= len(buffer)
                offset += len(buffer)
                continue
            self._read_pages(fd, buffer[done:], offset + done, len(buffer) - done)
            offset += len(buffer)
            done = 0

    def _slicing(self) -> tuple[int, int, int]:
        """(the dimension read a slab at a time, slices of it per read, the buffer's bytes): the dimension whose
        elements lie farthest apart, so that one slice across it reaches the fewest bytes of the storage."""
        axis = max(range(len(self.shape)), key=lambda d: self.stride[d] if self.shape[d] > 1 else -1)
        rest = sum((n - 1) * s for d, (n, s) in enumerate(zip(self.shape, self.stride, strict=True)) if d != axis) + 1
        step = max(self.stride[axis], 1)
        per_read = max(1, min(self.shape[axis], (_BATCH_PAGES * _PAGE - rest * self.itemsize) // (step * self.itemsize)
                              + 1))
        return axis, per_read, ((per_read - 1) * step + rest) * self.itemsize

    def slice_buffer_bytes(self) -> int:
        """The buffer `read_slices` reads through, beside the values it returns."""
        return self._slicing()[2] if self.numel else 0

    def gather(self, positions: torch.Tensor) -> torch.Tensor:
        """The elements at C-order `positions` (any shape) of a view of any layout, read with plain file reads of
        the pages they lie on, for a caller that samples a strided view (inspect --stats --sample of a transposed
        weight) rather than reading it whole: indexing `to_torch`'s map raised SIGBUS where the file was cut short
        meanwhile (exit 135, no message). Reads what indexing the map faulted in: the pages touched, each once.

        Raises:
            CorruptCheckpoint: the file changed since its records were listed, or ends before a page read.
        """
        import torch

        dtype = torch_dtype(self.dtype)
        if positions.numel() == 0:
            return torch.empty(positions.shape, dtype=dtype)
        flat = positions.reshape(-1)
        element = torch.full_like(flat, self.storage_offset)
        rest = flat
        for size, stride in zip(reversed(self.shape), reversed(self.stride), strict=True):
            element = element + (rest % size) * stride
            rest = rest // size
        where = self.storage.data_offset + element * self.itemsize  # byte offset of each element in the file
        # Pages counted from `shift`, so that no element straddles two (torch aligns a record's data to 64 bytes,
        # an archive written otherwise may not): an element's offset from it is a multiple of its size, as is _PAGE.
        shift = self.storage.data_offset % self.itemsize
        where = where - shift
        page_of = where // _PAGE
        # The pages touched, found with a mask over the stretch they lie in (no sort: sorting the positions cost
        # ten times the reads), and how far into each its last element reaches (a file's last page is read short).
        low = int(page_of.min())
        relative = page_of - low
        stretch = int(relative.max()) + 1
        reach = torch.zeros(stretch, dtype=torch.int64).scatter_reduce(0, relative, where % _PAGE + self.itemsize,
                                                                        "amax")
        pages = torch.nonzero(reach).reshape(-1)
        # Runs of pages read in one call: pages at most `_GAP_PAGES` apart, the pages between them read too, within
        # one aligned stretch of `_BATCH_PAGES`; runs are read in batches of at most `_BATCH_PAGES` pages (bounded
        # memory however many elements), the elements of a batch picked from it at once.
        starts_run = torch.ones(pages.numel(), dtype=torch.bool)
        absolute = pages + low
        starts_run[1:] = ((pages[1:] - pages[:-1]) > _GAP_PAGES + 1) | (
            absolute[1:] // _BATCH_PAGES != absolute[:-1] // _BATCH_PAGES)
        firsts = torch.nonzero(starts_run).reshape(-1)
        lasts = torch.cat([firsts[1:] - 1, torch.tensor([pages.numel() - 1])])
        first_page, last_page = pages[firsts].tolist(), pages[lasts].tolist()
        last_reach = reach[pages[lasts]].tolist()
        buffer = torch.empty(min(_BATCH_PAGES, stretch) * _PAGE, dtype=torch.uint8)
        view = memoryview(buffer.numpy())
        out = torch.empty(flat.numel(), self.itemsize, dtype=torch.uint8)
        step = torch.arange(self.itemsize)
        # Where each page of the stretch lies in its batch's buffer, in bytes (pages not read: never looked up).
        placed = torch.zeros(stretch, dtype=torch.int64)
        fd = os.open(self.storage.archive.path, os.O_RDONLY)
        try:
            self.storage.archive._check_identity(fd)
            run = 0
            while run < len(first_page):
                used, batch_low = 0, first_page[run]
                while run < len(first_page):
                    span = last_page[run] - first_page[run] + 1
                    if used and used + span > _BATCH_PAGES:
                        break
                    self._read_pages(fd, view[used * _PAGE:], (low + first_page[run]) * _PAGE + shift,
                                     (span - 1) * _PAGE + last_reach[run])
                    placed[first_page[run]:last_page[run] + 1] = (
                        torch.arange(span, dtype=torch.int64) + used) * _PAGE
                    used, run = used + span, run + 1
                batch_high = last_page[run - 1]
                chosen = torch.nonzero((relative >= batch_low) & (relative <= batch_high)).reshape(-1)
                inside = placed[relative[chosen]] + where[chosen] % _PAGE
                out[chosen] = buffer[inside.unsqueeze(1) + step]
        finally:
            os.close(fd)
        return out.reshape(-1).view(dtype).reshape(positions.shape)

    def _read_pages(self, fd: int, into: memoryview, offset: int, length: int) -> None:
        """`length` bytes of the file from `offset` into `into`, or CorruptCheckpoint where the file ends first."""
        done = 0
        while done < length:
            got = os.preadv(fd, [into[done:length]], offset + done)
            if got == 0:
                raise CorruptCheckpoint(
                    f"file ended at byte {os.fstat(fd).st_size:,}, before the bytes of storage "
                    f"data/{self.storage.key} it reads (from {offset + done:,}): truncated or changed while reading",
                    path=str(self.storage.archive.path))
            done += got

    def to_torch(self) -> torch.Tensor:
        """The tensor, viewing a private memory map of the file (nothing is read until it is used)."""
        import torch

        dtype = torch_dtype(self.dtype)
        count = self.storage.nbytes // self.itemsize
        if count == 0:
            base = torch.empty(0, dtype=dtype)
        elif (mapping := self.storage.archive.mapping()) is None:
            # The file is too large to map whole here: map the bytes this view reaches, from its first element.
            if self.numel == 0:
                return torch.empty(0, dtype=dtype).as_strided(self.shape, self.stride, 0)
            first = self.storage.data_offset + self.storage_offset * self.itemsize
            length = self.span_bytes()
            part, shift = self.storage.archive.range_mapping(first, length)
            base = torch.frombuffer(part, dtype=dtype, count=length // self.itemsize, offset=shift)
            return base.as_strided(self.shape, self.stride, 0)
        else:
            # `len(mapping)` is the size when the map was made; `mapping.size()` is the file's size now. A file cut
            # short after the map was made (between two tensors of a convert) raised SIGBUS on the first page
            # past its new end, killing the process with no message and its temporary output left behind.
            now = min(len(mapping), mapping.size())
            if self.storage.data_offset + count * self.itemsize > now:
                # The file was cut short after its records were listed (the map is made on the first value
                # read): frombuffer's ValueError was an unexpected error line.
                raise CorruptCheckpoint(
                    f"file ended before the bytes of storage data/{self.storage.key} ({counted(now, 'byte')} now, "
                    f"the record ends at {self.storage.data_offset + self.storage.nbytes:,}): truncated or changed "
                    "while reading")
            base = torch.frombuffer(mapping, dtype=dtype, count=count, offset=self.storage.data_offset)
        return base.as_strided(self.shape, self.stride, self.storage_offset)


_INT64_MAX = 2**63 - 1


def _rebuild_tensor(storage: tuple[StorageRecord, str | None], storage_offset: int, size: Any, stride: Any,
                    requires_grad: Any = False, backward_hooks: Any = None, metadata: Any = None,
                    dtype: _Dtype | None = None) -> StaticTensor:
    record, storage_dtype = storage
    if backward_hooks or metadata:
        raise NeedsTorch("a tensor with hooks or subclass metadata")
    element = dtype.name if isinstance(dtype, _Dtype) else storage_dtype
    if element is None or not isinstance(storage_offset, int) or isinstance(storage_offset, bool):
        raise NeedsTorch("a storage of unknown dtype")
    if not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride):
        raise NeedsTorch("a tensor size or stride that is not a tuple")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size + stride):
        raise NeedsTorch("a tensor size or stride that is not a natural number")
    if any(product > _INT64_MAX for product in itertools.accumulate(size, operator.mul)):
        # torch multiplies sizes in order in 64 bits and refuses an overflow even before a 0 ([2**40, 2**40, 0]):
        # as an empty stand-in it passed, and plan-devices or --stats then failed inside torch (unexpected errors).
        raise NeedsTorch("a tensor size whose product overflows 64 bits")
    if storage_offset > _INT64_MAX or any(v > _INT64_MAX for v in stride):
        # torch holds offsets and strides in 64 bits: an empty view or one of a single element passed the extent
        # check below, and --stats, check-dtype and convert then failed in as_strided (unexpected errors).
        raise NeedsTorch("a storage offset or stride beyond 64 bits")
    tensor = StaticTensor(record, element, size, stride, storage_offset)
    if storage_offset < 0:
        raise NeedsTorch("a negative storage offset")
    # The last element the view reaches must lie inside its storage; torch says what is wrong otherwise.
    if tensor.numel:
        extent = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
        if extent * tensor.itemsize > record.nbytes:
            raise NeedsTorch("a view beyond its storage")
    return tensor


def _rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, dtype: Any, metadata: Any = None) -> StaticTensor:
    if not isinstance(dtype, _Dtype):
        raise NeedsTorch("_rebuild_tensor_v3 without a dtype")
    return _rebuild_tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata, dtype)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None, state: Any = None) -> Any:
    if not isinstance(data, StaticTensor) or backward_hooks or state:
        raise NeedsTorch("a parameter with hooks or state")
    return data


_FUNCTIONS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _Function(_NoState):
    """One of the rebuild functions, as this pickle sees it: callable, and closed to BUILD."""

    __slots__ = ("function",)

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)


class _StaticUnpickler(pickle.Unpickler):
    """Unpickles `data.pkl` into stand-ins; resolves no real global."""

    def __init__(self, data: bytes, archive: StaticArchive, records: dict[str, tuple[int, int]]) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.records = records
        # key -> what its first reference made: torch.load keeps the storage its first reference loads and hands
        # it to every later one, whatever type and size that one declares.
        self.storages: dict[str, tuple[StorageRecord, str | None]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _FUNCTIONS:
            function = _FUNCTIONS[(module, name)]
            return function if isinstance(function, type) else _Function(function)
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if module in ("torch", "torch.storage") and name == "UntypedStorage":
            return _StorageType(None)
        if module == "torch" and name in TORCH_DTYPES:
            return _Dtype(name)
        raise NeedsTorch(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise NeedsTorch("a persistent reference other than a storage")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if key not in self.records:
            raise NeedsTorch(f"storage {key} has no record")
        if key in self.storages:
            # A later reference of another type (DoubleStorage after FloatStorage) read the same bytes as float64
            # here, where torch gives the float32 storage of the first: other values, other dtype.
            return self.storages[key]
        offset, nbytes = self.records[key]
        record = StorageRecord(self.archive, key, offset, nbytes)
        itemsize = 1 if storage_type.dtype is None else BITS_PER_ELEMENT[storage_type.dtype] // 8
        if not isinstance(numel, int):
            raise NeedsTorch(f"storage {key} has no integer size")
        if numel * itemsize != record.nbytes:
            raise record_size_error(key, record.nbytes, numel, itemsize)
        self.storages[key] = (record, storage_type.dtype)
        return self.storages[key]


def record_size_error(key: str, nbytes: int, numel: int, itemsize: int, copies: int = 1) -> CorruptCheckpoint:
    """A storage record whose size is not the storage's: torch.load checks each record against the size its
    reference gives and refuses the file ("record size does not match expected size"); only its mmap=True
    path reads it regardless, handing out whatever bytes lie there. `copies`: how many records the archive lists
    under that name (torch's reader finds one of them, by its sorted directory, not always the first)."""
    listed = f" (one of {copies} records of that name in the archive)" if copies > 1 else ""
    return CorruptCheckpoint(
        f"storage record data/{key}{listed} holds {counted(nbytes, 'byte', grouped=False)}, but "
        "the pickle declares a storage of "
        f"{numel} x {itemsize} = {numel * itemsize} bytes (damaged archive: torch.load refuses it)"
    )


def _supported_version(text: bytes) -> bool:
    """Whether a torch zip's version record holds a format version torch's reader supports (1 to 10)."""
    try:
        return 1 <= int(text.strip()) <= 10
    except ValueError:
        return False


def _read_record(handle: BinaryIO, member: ZipMember, limit: int) -> bytearray:
    """`read_member`, its refusal (a record cut short, a deflate stream that does not inflate) left to torch.load,
    whose reader says what is wrong with the file: a ValueError here ended inspect with 'unexpected ValueError'."""
    from weightdoctor.security import archive as zip_archive

    try:
        return zip_archive.read_member(handle, member, limit)
    except ValueError as exc:
        raise NeedsTorch(f"record {member.name} cannot be read here ({exc})") from exc


def load_static(path: Path) -> Any:
    """Unpickle a torch zip checkpoint into dicts of `StaticTensor`, without torch.

    Call only after the security scan has found the file safe. The archive must be regular (one
    central directory that every reader sees alike, stored records, little-endian data).

    Raises:
        NeedsTorch: anything this reader does not model; read the file with torch.load instead.
    """
    from weightdoctor.security import archive as zip_archive

    with open(path, "rb") as handle:
        identity = file_identity(os.fstat(handle.fileno()))
        size = identity[2]
        try:
            layout = zip_archive.read_layout(handle, size)
        except (ValueError, OSError) as exc:
            raise NeedsTorch(f"the archive cannot be read here ({exc})") from exc
        if layout.source != "central directory" or layout.notes or layout.problems:
            raise NeedsTorch("an irregular archive")
        names = [m.name for m in layout.members]
        if any(m.method == 0 and m.compressed_size != m.size for m in layout.members):
            raise NeedsTorch("a stored record whose two sizes disagree")  # torch: "archive is corrupted"
        # torch's reader (miniz, no case-sensitive flag) finds a record under any case: "archive/BYTEORDER" holding
        # "big" is the byte order torch.load reads its values in, where this reader saw none and read them little.
        if len({name.lower() for name in names}) != len(names):
            raise NeedsTorch("an archive with duplicate record names (in any case)")
        pickles = [m for m in layout.members if m.name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise NeedsTorch("not exactly one data.pkl")
        prefix = pickles[0].name[: -len("data.pkl")]
        # torch's reader takes the first record's folder as the archive's and refuses a record outside it
        # ("file in archive is not in a subdirectory"), and finds data.pkl right in it.
        top = names[0].split("/", 1)[0] + "/"
        if prefix != top or not all(name.startswith(top) for name in names):
            raise NeedsTorch("records outside the archive's one top folder")
        by_name = {m.name.lower(): m for m in layout.members}
        version = by_name.get(prefix.lower() + ".data/version", by_name.get(prefix.lower() + "version"))
        if version is None:
            raise NeedsTorch("no version record (torch.load requires one)")
        # torch refuses a version it cannot parse or does not support (caffe2/serialize/versions.h: 1 to 10): a
        # file written by a later torch may not mean what this reader takes it to mean.
        if version.size > 16 or not _supported_version(_read_record(handle, version, 16)):
            raise NeedsTorch("a version record torch does not support")
        byteorder = by_name.get(prefix.lower() + "byteorder")
        if byteorder is not None and (byteorder.size > 16
                                      or _read_record(handle, byteorder, 16) != b"little"):
            # Longer than any byte order torch writes: read_member would refuse it; torch's reader says why.
            # Compared as it is, as torch compares it: "little\n" was read here, and torch.load refuses it
            # ("Unknown endianness type").
            raise NeedsTorch("a big-endian checkpoint, or a byteorder record torch does not know")
        records: dict[str, tuple[int, int]] = {}
        for member in layout.members:
            if member.name.startswith(prefix + "data/"):
                if member.method != 0 or member.compressed_size != member.size:
                    raise NeedsTorch("a compressed storage record")
                if member.data_offset + member.size > size:
                    raise NeedsTorch("a record beyond the end of the file")
                records[member.name[len(prefix) + len("data/"):]] = (member.data_offset, member.size)
        data = _read_record(handle, pickles[0], MAX_DATA_PKL)
    try:
        return _StaticUnpickler(data, StaticArchive(path, identity), records).load()
    except (NeedsTorch, CorruptCheckpoint):
        raise
    except Exception as exc:  # a malformed pickle: torch's loader gives the error users know
        raise NeedsTorch(f"{type(exc).__name__}: {exc}") from exc


def mapped_stand_ins(path: Path, identity: tuple[int, int, int, int]) -> Callable[[Any], Any] | None:
    """For a torch zip that `torch.load(mmap=True)` read (one `load_static` leaves to torch): a function that gives
    each tensor viewing torch's map of the file a `StaticTensor` of the same bytes (its storage where torch's map
    puts it, its dtype, shape, strides and offset), and any other value as it is; None where that cannot be told.

    Its values are then read with plain file reads as the torch-free reader's are (`read_whole`, `read_slices`,
    `gather`, a byte copy's range): through torch's map, a file cut short while a value was read killed the process
    with SIGBUS (exit 135, no message). Where each storage lies is the kernel's word (/proc/self/maps: the map's
    start and file offset), checked against the archive's records (a storage is a whole record, of its size). None
    off Linux, where the archive cannot be listed here, or where a byteorder record makes torch swap the bytes in
    its map (the file's bytes are not the values then).
    """
    import sys

    from weightdoctor.security import archive as zip_archive

    if not sys.platform.startswith("linux"):
        return None
    try:
        with open(path, "rb") as handle:
            if file_identity(os.fstat(handle.fileno())) != identity:
                return None  # no longer the file torch mapped: its first read says so
            layout = zip_archive.read_layout(handle, identity[2])
            records: dict[int, tuple[str, int]] = {}
            for member in layout.members:
                name = member.name.lower()
                # torch.load byteswaps the storages in its (private) map where this differs from the machine's.
                if (name == "byteorder" or name.endswith("/byteorder")) and (
                        member.size > 16 or zip_archive.read_member(handle, member, 16) != sys.byteorder.encode()):
                    return None
                key = member.name.rpartition("data/")[2] if "data/" in member.name else None
                if key and member.method == 0 and member.compressed_size == member.size:
                    records.setdefault(member.data_offset, (key, member.size))
    except (ValueError, OSError):
        return None
    mappings = _file_mappings()
    archive = StaticArchive(path, identity)
    bases: set[int] = set()
    made: dict[int, StorageRecord | None] = {}  # storage address -> its record (None: not one of the file's)

    def record_of(address: int, nbytes: int) -> StorageRecord | None:
        if address not in made:
            made[address] = None
            index = bisect.bisect_right(mappings, (address, float("inf"))) - 1
            if index >= 0 and mappings[index][0] <= address < mappings[index][1]:
                start, _end, file_offset = mappings[index]
                offset = address - start + file_offset
                found = records.get(offset)
                # One map of the whole file: every storage of it at the same base, each a record of its size.
                if found is not None and found[1] == nbytes and len(bases | {address - offset}) == 1:
                    bases.add(address - offset)
                    made[address] = StorageRecord(archive, found[0], offset, nbytes)
        return made[address]

    def stand_in(value: Any) -> Any:
        import torch

        if type(value) not in (torch.Tensor, torch.nn.Parameter) or value.device.type != "cpu" \
                or value.layout is not torch.strided or value.is_quantized or value.is_nested or value.is_conj() \
                or value.is_neg():
            return value
        dtype = str(value.dtype).removeprefix("torch.")
        if dtype not in TORCH_DTYPES:
            return value
        storage = value.untyped_storage()
        if not storage.nbytes() or (record := record_of(storage.data_ptr(), storage.nbytes())) is None:
            return value
        return StaticTensor(record, dtype, tuple(value.shape), tuple(value.stride()), value.storage_offset())

    return stand_in


def _file_mappings() -> list[tuple[int, int, int]]:
    """The file-backed maps of this process (/proc/self/maps): (start address, end address, file offset), sorted."""
    found: list[tuple[int, int, int]] = []
    try:
        with open("/proc/self/maps") as handle:
            for line in handle:
                parts = line.split(maxsplit=5)
                # address perms offset dev inode [path]; inode 0 is anonymous memory
                if len(parts) < 6 or parts[4] == "0":
                    continue
                start, end = (int(x, 16) for x in parts[0].split("-"))
                found.append((start, end, int(parts[2], 16)))
    except (OSError, ValueError):
        return []
    return sorted(found)
