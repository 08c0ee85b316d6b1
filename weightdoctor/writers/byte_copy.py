"""Writing a safetensors file whose tensors are byte ranges of other files, copied inside the kernel.

When no tensor changes dtype, converting or sharding moves bytes and nothing else: each tensor of a
safetensors file or a regular torch zip checkpoint is one contiguous run of bytes in its file. This
writer lays the output out as `SafetensorsWriter` does (same header, same order), then copies each
tensor with `copy_file_range` (no pass through Python memory; torch is not even imported), asks the
kernel to start writing each range to disk as soon as it is copied (so that the final fsync has
little left to wait for), and, in a second thread, re-reads each finished range of the output and
compares it byte for byte with the source while the next ones are copied.

Peak memory stays at a few buffers of 1 to 8 MiB: each chunk of the source and of the output compared is read into
one (a read of a file cut short meanwhile runs short, where a map's page raised SIGBUS).
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import errno
import os
import queue
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from weightdoctor.errors import CorruptCheckpoint, OutputError
from weightdoctor.threads import start_thread
from weightdoctor.wording import counted
from weightdoctor.writers import hooks
from weightdoctor.writers.safetensors_writer import TensorSlot, _write_all, layout

_CHUNK = 8 << 20
# What the comparing thread reads of the source and of the output at a time, each into a buffer of its own: two
# buffers this size stay in the CPU's cache for the memcmp and the CRC. Comparing a 400 MB file with itself, CRC on,
# from the page cache took 0.57-0.74 s in chunks of 1 MiB, 0.77-1.08 s in chunks of 8 MiB, and 0.67-0.84 s through
# the 8 MiB maps of the output before (red team 41, two shared cores: noisy).
_COMPARE_CHUNK = 1 << 20
# A range up to this size is compared through two reads instead of two maps: mapping and unmapping each chunk of
# both files (memory4) made the comparing thread of a file of 100,000 tensors of 16 bytes about half again slower.
_READ_AT_MOST = 64 << 10
# Source files held open at once by a copy, and apart by its comparing thread (each map holds a descriptor too):
# merging a checkpoint of hundreds of shards into one file held every shard open three times over, and failed with
# "Too many open files" under the usual limit of 1,024 descriptors.
MAX_OPEN_SOURCES = 64
_COPY_CHUNK = 64 << 20
SYNC_FILE_RANGE_WRITE = 2
# Writeback is started every this many bytes copied (in larger steps than tensors, which may be tiny).
WRITEBACK_STEP = 64 << 20


@dataclass(frozen=True)
class ByteRange:
    """Where one tensor's bytes lie: `length` bytes of `path` from `offset`."""

    path: Path
    offset: int
    length: int
    # (st_dev, st_ino, st_size, st_mtime_ns) of `path` when its structure was read, where the reader knows it: the
    # bytes are copied only from that same file, unchanged (see `check_unchanged`).
    identity: tuple[int, int, int, int] | None = None


def check_unchanged(fd: int, source: ByteRange) -> None:
    """Refuse to copy from (or compare with) a source that is no longer the file whose structure was read.

    A file replaced between the header read and the copy (a download or save finishing meanwhile) had its bytes
    copied at the old file's offsets, and the copy was then "verified" against the new file, exit 0.

    Raises:
        CorruptCheckpoint: the open file's device, inode, size or modification time differ from `source.identity`.
    """
    if source.identity is None:
        return
    stat = os.fstat(fd)
    if (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns) != source.identity:
        raise CorruptCheckpoint("the file changed since its header was read (replaced, or its size or modification "
                                "time changed); its bytes are not copied", path=str(source.path))


def open_source(source: ByteRange) -> int:
    """Open a source file for copying, checked with `check_unchanged`.

    Raises:
        OSError: it cannot be opened; CorruptCheckpoint: it changed since its structure was read.
    """
    fd = os.open(source.path, os.O_RDONLY)
    try:
        check_unchanged(fd, source)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _sync_file_range() -> object | None:
    """libc's sync_file_range (Linux), or None: starting writeback early is an optimisation only."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()


def _libdeflate_crc32() -> object | None:
    """libdeflate's CRC-32 (several times faster than zlib's), or None where the library is missing."""
    name = ctypes.util.find_library("deflate")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name).libdeflate_crc32
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
    function.restype = ctypes.c_uint32
    return function


_LIBDEFLATE_CRC32 = _libdeflate_crc32()


def _libc_memcmp() -> Callable[[int, int, int], int]:
    function = ctypes.CDLL(None).memcmp
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


# libc's memcmp on two addresses (ctypes releases the GIL while it runs).
_MEMCMP = _libc_memcmp()


def crc32_at(address: int, length: int, value: int = 0) -> int:
    """The zip CRC-32 of `length` bytes at a memory address (inside a map that stays open meanwhile),
    continuing from `value` as `zlib.crc32(data, value)` does.

    A record's CRC covers all of its bytes; zlib's runs at about 2 GB/s here, slower than the copy
    itself, so libdeflate's is used where the system has it (ctypes releases the GIL).
    """
    if _LIBDEFLATE_CRC32 is not None:
        return int(_LIBDEFLATE_CRC32(value, address, length))  # type: ignore[operator]
    return zlib.crc32((ctypes.c_char * length).from_address(address), value)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range of a file to disk now, without waiting for it."""
    if _SYNC_FILE_RANGE is not None and length:
        _SYNC_FILE_RANGE(fd, offset, length, SYNC_FILE_RANGE_WRITE)  # type: ignore[operator]


def copy_range(src: int, dst: int, src_offset: int, dst_offset: int, length: int) -> None:
    """Copy `length` bytes between two files at the given offsets (in the kernel where it can).

    Raises:
        OSError: the copy fails (disk full, ...); CorruptCheckpoint: the source ends early.
    """
    done = 0
    use_kernel = hasattr(os, "copy_file_range")
    while done < length:
        count = min(_COPY_CHUNK, length - done)
        if use_kernel:
            try:
                got = os.copy_file_range(src, dst, count, src_offset + done, dst_offset + done)
            except OSError as exc:
                # Some file systems (and older kernels across devices) refuse it: copy through Python.
                if exc.errno not in (18, 22, 38, 95):  # EXDEV, EINVAL, ENOSYS, EOPNOTSUPP
                    raise
                use_kernel = False
                continue
        else:
            data = os.pread(src, min(count, _CHUNK), src_offset + done)
            got = os.pwrite(dst, data, dst_offset + done) if data else 0
        if got == 0:
            # The source was truncated after its structure was read: nothing is trusted from it.
            raise CorruptCheckpoint(f"the source ends {counted(length - done, 'byte', grouped=False)} "
                                    f"early (at byte {os.fstat(src).st_size:,} now): truncated or changed while "
                                    "copying")
        done += got


class RangeComparer:
    """Compares ranges of the output with their source ranges in a background thread (where the system gives none,
    as each range is submitted).

    `submit` after each range is copied; `finish` waits for all comparisons and raises the first
    difference. The output is re-read through its own file descriptor (what the file holds now).
    With `crc`, the CRC-32 of each range as re-read is kept in `crcs` (by the name submitted), so that a
    zip writer reads its data once for both; with `compare=False` the ranges are only re-read for that.
    """

    def __init__(self, output: Path, *, compare: bool = True, crc: bool = False) -> None:
        self.output = output
        self.compare = compare
        self.crc = crc
        self.crcs: dict[str, int] = {}
        self._fd = os.open(output, os.O_RDONLY)
        self._maps: dict[Path, int] = {}  # the source files' descriptors (`_source_fd`)
        # What `_read_chunk` reads each chunk of a source, and of the output, into (and their addresses, for memcmp
        # and the CRC), made on first use.
        self._buffers: list[bytearray | None] = [None, None]
        self._addresses = [0, 0]
        self._queue: queue.Queue[tuple[str, ByteRange, int] | None] = queue.Queue()
        self._error: BaseException | None = None
        self.compared = 0
        # Set by the thread itself when it returns. Not `Thread.is_alive()`: on CPython 3.11 a `join()` that
        # Ctrl-C interrupts can mark a thread still inside `memcmp` as stopped, and unmapping its maps
        # then crashes the process (SIGSEGV) instead of exiting 130.
        self._done = threading.Event()
        self._cancelled = False  # read by the thread between chunks: stop early once the write is abandoned
        # Where the thread cannot be had (its stack or its first frame refused under `ulimit -d`: Thread.start()
        # then waited forever, and convert of a 4 KB file with 8 MiB of room hung), each range is compared as it is
        # submitted, on the writing thread: the same comparisons, without the overlap.
        self._inline = not start_thread(self._run)
        if self._inline:
            self._done.set()

    def submit(self, name: str, source: ByteRange, output_offset: int) -> None:
        if self._inline:
            self._compare_one((name, source, output_offset))
        else:
            self._queue.put((name, source, output_offset))

    def _source_fd(self, path: Path) -> int:
        """A descriptor of a source file, held open (at most MAX_OPEN_SOURCES, the least recently used closed)."""
        if path in self._maps:
            self._maps[path] = self._maps.pop(path)  # the most recently used last
        while path not in self._maps and len(self._maps) >= MAX_OPEN_SOURCES:
            os.close(self._maps.pop(next(iter(self._maps))))  # the least recently used
        if path not in self._maps:
            self._maps[path] = os.open(path, os.O_RDONLY)
        return self._maps[path]

    def _compare(self, name: str, source: ByteRange, output_offset: int) -> None:
        """Compare (and CRC) one range a chunk at a time: the source's and the output's bytes each read into a buffer
        of this comparer's (`_read_chunk`), one `memcmp` per chunk.

        A whole source file was mapped privately once: such a map counts in full against this process's data limit
        (`ulimit -d`) and address-space limit (`ulimit -v`), so convert and shard of a 600 MB .safetensors failed
        under either with room for the copy ("cannot write the output: Cannot allocate memory"). A chunk of either
        file mapped alone, its size checked first, still raised SIGBUS where the file was cut short between the
        check and the comparison (exit 135, no message: the source by another process, the temporary output too): a
        read of it runs short and says so."""
        crc = 0
        if source.length:
            src_fd = -1
            if self.compare:
                src_fd = self._source_fd(source.path)
                check_unchanged(src_fd, source)
            if output_offset + source.length > os.fstat(self._fd).st_size:
                raise OutputError(f"the output ends inside {name!r}", path=str(self.output))
            if source.length <= _READ_AT_MOST:
                crc = self._compare_read(name, source, output_offset, src_fd)
                if self.crc:
                    self.crcs[name] = crc
                return
            done = 0
            while done < source.length and not self._cancelled:
                count = min(_COMPARE_CHUNK, source.length - done)
                src_address = self._read_chunk(name, source, src_fd, source.offset + done, count, 0) \
                    if self.compare else 0
                out_address = self._read_chunk(name, source, self._fd, output_offset + done, count, 1)
                if self.crc:
                    crc = crc32_at(out_address, count, crc)
                if self.compare and _MEMCMP(out_address, src_address, count):
                    raise OutputError(f"verification failed: the bytes of {name!r} differ from the source",
                                      path=str(self.output))
                done += count
        if self.crc:
            self.crcs[name] = crc

    def _read_chunk(self, name: str, source: ByteRange, fd: int, offset: int, count: int, which: int) -> int:
        """Read `count` bytes of `fd` (the source's, or the output's: `fd` is `self._fd`) from `offset` into this
        comparer's buffer `which` (0 the source's, 1 the output's; `_COMPARE_CHUNK` bytes each, made on first use,
        kept);
        its address.

        Raises:
            CorruptCheckpoint: the source ends first (cut short since it was checked).
            OutputError: the output ends first (cut short by another process since it was written).
            OSError: ENOMEM, the system refuses the buffer.
        """
        if self._buffers[which] is None:
            try:
                buffer = bytearray(_COMPARE_CHUNK)
            except MemoryError as exc:
                # Refused as the map of a chunk was (under `ulimit -d`): said as the memory it is, of the output.
                raise OSError(errno.ENOMEM, "Cannot allocate memory") from exc
            self._buffers[which] = buffer
            self._addresses[which] = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
        view = memoryview(self._buffers[which])  # type: ignore[arg-type]
        got = 0
        while got < count:
            read = os.preadv(fd, [view[got:count]], offset + got)
            if read == 0:
                now = os.fstat(fd).st_size
                if fd == self._fd:
                    raise OutputError(f"the output ends inside {name!r} (at byte {now:,} now): cut short by "
                                      "another process while it was compared", path=str(self.output))
                raise CorruptCheckpoint(f"the source ends before the bytes of {name!r} (at byte {now:,} now): "
                                        "truncated or changed while copying", path=str(source.path))
            got += read
        return self._addresses[which]

    def _compare_read(self, name: str, source: ByteRange, output_offset: int, src_fd: int) -> int:
        """`_compare` of a small range through `os.pread` of both files (a read past a file's end comes back short,
        where a map's page raised SIGBUS); the CRC-32 of the output's bytes."""
        written = os.pread(self._fd, source.length, output_offset)
        if len(written) != source.length:
            raise OutputError(f"the output ends inside {name!r}", path=str(self.output))
        if self.compare:
            read = os.pread(src_fd, source.length, source.offset)
            if len(read) != source.length:
                raise CorruptCheckpoint(f"the source ends before the bytes of {name!r} (at byte "
                                        f"{os.fstat(src_fd).st_size:,} now): truncated or changed while copying",
                                        path=str(source.path))
            if read != written:
                raise OutputError(f"verification failed: the bytes of {name!r} differ from the source",
                                  path=str(self.output))
        return zlib.crc32(written) if self.crc else 0

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None or self._cancelled:
                    return
                self._compare_one(item)
        finally:
            self._done.set()

    def _compare_one(self, item: tuple[str, ByteRange, int]) -> None:
        """Compare one submitted range unless one already failed; a failure is kept for `finish` to raise."""
        if self._error is not None:
            return
        try:
            self._compare(*item)
            self.compared += self.compare
        except BaseException as exc:  # noqa: BLE001 - handed to the writing thread by finish()
            self._error = exc

    def _wait_for_thread(self) -> None:
        """Return once the comparing thread has returned. A signal during the wait (Ctrl-C, the writers'
        SIGTERM handler) cancels the comparisons and is raised once the thread is out of the maps."""
        interrupted: BaseException | None = None
        while not self._done.is_set():
            try:
                self._done.wait(0.05)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the thread has returned
                self._cancelled = True
                interrupted = interrupted or exc
        if interrupted is not None:
            raise interrupted

    def finish(self) -> int:
        """Wait for every comparison; return how many tensors were compared.

        Raises:
            OutputError: a range differs from its source.
        """
        self._queue.put(None)
        self._wait_for_thread()
        self.close()
        if self._error is not None:
            raise self._error
        return self.compared

    def close(self) -> None:
        """Stop the comparisons (abandoned if still running), then close the maps and descriptors."""
        if not self._done.is_set():
            self._cancelled = True
            self._queue.put(None)
        try:
            self._wait_for_thread()
        finally:
            if self._done.is_set():  # never unmap what the thread may still be reading
                for fd in self._maps.values():
                    os.close(fd)
                self._maps.clear()
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1


class SourceFiles:
    """The open descriptors of a copy's source files: at most `MAX_OPEN_SOURCES` at once, the least recently used
    closed first, each checked with `check_unchanged` as it is closed (and the rest by `check_unchanged` at the end:
    a file written in place while it was copied gave a mix of its old and new bytes)."""

    def __init__(self) -> None:
        self._open: collections.OrderedDict[Path, tuple[int, ByteRange]] = collections.OrderedDict()

    def fd(self, source: ByteRange) -> int:
        """The descriptor of `source.path`, opened with `open_source` if it is not open."""
        held = self._open.get(source.path)
        if held is not None:
            self._open.move_to_end(source.path)
            return held[0]
        while len(self._open) >= MAX_OPEN_SOURCES:
            _, (old, old_source) = self._open.popitem(last=False)
            try:
                check_unchanged(old, old_source)
            finally:
                os.close(old)
        handle = open_source(source)
        self._open[source.path] = (handle, source)
        return handle

    def check_unchanged(self) -> None:
        """Raises CorruptCheckpoint: a source still open changed (see `check_unchanged`)."""
        for handle, source in self._open.values():
            check_unchanged(handle, source)

    def close(self) -> None:
        while self._open:
            os.close(self._open.popitem()[1][0])


def close_all(comparer: RangeComparer | None, inputs: SourceFiles, fd: int) -> None:
    """Stop the comparing thread and close the source and output descriptors of a copy."""
    if comparer is not None:
        comparer.close()
    inputs.close()
    os.close(fd)


def write_safetensors_by_copy(
    path: Path,
    slots: list[TensorSlot],
    sources: dict[str, ByteRange],
    metadata: dict[str, str] | None,
    *,
    verify: bool = True,
    on_tensor: Callable[[str], None] | None = None,
    advance: Callable[[int], None] | None = None,
) -> int:
    """Write a safetensors file at `path` (created, must not exist) from byte ranges of other files.

    The header and tensor order are those of `SafetensorsWriter` (the safetensors library's layout).
    With `verify`, every tensor's bytes are re-read from the output and compared with the source.
    `on_tensor(name)` is called before each tensor is copied, `advance(nbytes)` after.

    Returns:
        The number of tensors compared (0 without `verify`).

    Raises:
        OSError: writing fails; OutputError: a tensor reads back different from its source;
        ValueError: a source range does not have the size its slot needs.
    """
    header, order = layout(slots, metadata)
    for slot in order:
        if sources[slot.name].length != slot.nbytes:
            raise ValueError(f"tensor {slot.name!r}: {sources[slot.name].length} source bytes, {slot.nbytes} needed")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    inputs = SourceFiles()
    comparer: RangeComparer | None = None
    try:
        _write_all(fd, header)
        hooks.reached("after-header")
        comparer = RangeComparer(path) if verify else None
        position = flushed = len(header)
        for slot in order:
            if on_tensor is not None:
                on_tensor(slot.name)
            source = sources[slot.name]
            try:
                copy_range(inputs.fd(source), fd, source.offset, position, source.length)
            except CorruptCheckpoint as exc:
                exc.path = exc.path or str(source.path)
                raise
            if position + source.length - flushed >= WRITEBACK_STEP:
                start_writeback(fd, flushed, position + source.length - flushed)
                flushed = position + source.length
            if comparer is not None:
                comparer.submit(slot.name, source, position)
            position += source.length
            if advance is not None:
                advance(source.length)
        compared = comparer.finish() if comparer is not None else 0
        inputs.check_unchanged()
        if os.fstat(fd).st_size != position:
            raise OutputError("verification failed: the file is not the size its header gives", path=str(path))
        return compared
    finally:
        close_all(comparer, inputs, fd)
