"""Keeping peak memory at one tensor: give back the pages of memory-mapped tensors once written.

PyTorch pickles are read with `torch.load(mmap=True)`: their tensors are private, read-only file
mappings, and every page touched while a tensor is written or hashed stays resident (and counts in RSS)
until the whole checkpoint is closed. Once a tensor is done, `release_file_pages` drops its pages with
`madvise(MADV_DONTNEED)`; a private file mapping that was never written simply reads the file again if
touched later. Memory that is not a file mapping (legacy pickles, tensors read from safetensors) is never
touched: for anonymous memory MADV_DONTNEED would discard the values.
"""

from __future__ import annotations

import bisect
import ctypes
import mmap
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MADV_DONTNEED = 4
_ranges: list[tuple[int, int]] = []
_starts: list[int] = []


def _load_file_mappings() -> None:
    """Read the file-backed mappings of this process from /proc/self/maps."""
    ranges = []
    try:
        with open("/proc/self/maps") as handle:
            for line in handle:
                parts = line.split(maxsplit=5)
                # address perms offset dev inode [path]; inode 0 means anonymous memory
                if len(parts) < 6 or parts[4] == "0" or not parts[5].startswith("/"):
                    continue
                begin, end = (int(x, 16) for x in parts[0].split("-"))
                ranges.append((begin, end))
    except OSError:
        ranges = []
    ranges.sort()
    _ranges[:] = ranges
    _starts[:] = [r[0] for r in ranges]


def _in_file_mapping(begin: int, end: int) -> bool:
    index = bisect.bisect_right(_starts, begin) - 1
    return index >= 0 and _ranges[index][0] <= begin and end <= _ranges[index][1]


def release_file_pages(tensor: torch.Tensor) -> bool:
    """Drop the resident pages of a tensor that lives in a file mapping; True when pages were dropped."""
    if not sys.platform.startswith("linux"):
        return False
    storage = tensor.untyped_storage()
    begin, length = storage.data_ptr(), storage.nbytes()
    if length < mmap.PAGESIZE or begin == 0:
        return False
    end = begin + length
    if not _in_file_mapping(begin, end):
        _load_file_mappings()
        if not _in_file_mapping(begin, end):
            return False
    # Whole pages inside the storage only: a page shared with a neighbouring tensor is left alone.
    page = mmap.PAGESIZE
    first, last = -(-begin // page) * page, end // page * page
    if last <= first:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), MADV_DONTNEED) == 0


_MALLOC_TRIM: object | None = None


def release_heap() -> None:
    """Give freed heap memory back to the system (glibc's malloc_trim), after each tensor is written.

    glibc raises its mmap threshold to the size of the largest block freed, so tensor-sized temporaries
    (a cast's output and masks) land on the heap afterwards and stay counted in RSS, hundreds of MB over a
    checkpoint; trimming after each tensor keeps peak memory at one tensor's worth.
    """
    global _MALLOC_TRIM
    if not sys.platform.startswith("linux"):
        return
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)  # type: ignore[operator]
