"""Writing a torch zip checkpoint (`pytorch_model.bin`) whose tensors are byte ranges of other files,
copied inside the kernel, without importing torch.

`torch.save` pickles the state dict into `data.pkl` and stores each storage as an uncompressed record
of a zip archive, through torch's `PyTorchFileWriter` (miniz). When no tensor changes dtype, every
storage is a run of bytes of the source, so this module lays the archive out exactly as that writer
does (the same records in the same order, the same 64-byte alignment of record data through a `FB`
extra field, data descriptors, zip64 fields and end records where miniz writes them), emits the same
`data.pkl` bytes with a pickler that names torch's globals without importing them, and copies each
storage with `copy_file_range` as `byte_copy.write_safetensors_by_copy` does. A background thread
re-reads every record as written, compares it with its source and computes its CRC-32 from the same
bytes; the CRCs are then written into the data descriptors and the central directory.

For the same tensors the file is byte for byte what `torch.save` writes to a file object (archive folder
"archive"; pass `archive_name` for what it writes to a path), `.data/serialization_id` included: it is
derived as torch's writer derives it (see `serialization_id`).
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightdoctor.checkpoint.pickle_static import STORAGE_DTYPES
from weightdoctor.dtypes import BITS_PER_ELEMENT
from weightdoctor.errors import CorruptCheckpoint, OutputError
from weightdoctor.writers import byte_copy, hooks
from weightdoctor.writers.bin_writer import PICKLE_PROTOCOL, BinSlot, _contiguous_stride, _Rebuild, _StorageRef
from weightdoctor.writers.byte_copy import WRITEBACK_STEP, ByteRange, RangeComparer, start_writeback

# torch.storage._dtype_to_storage_type_map(): the legacy typed storage torch.save names for a dtype
# (tensors of these dtypes are pickled as `_rebuild_tensor_v2` calls); the reader's table, inverted.
LEGACY_STORAGE_TYPES = {dtype: name for name, dtype in STORAGE_DTYPES.items()}
# torch.storage._new_dtypes() that the reader can size: pickled as `_rebuild_tensor_v3` calls on an
# UntypedStorage (counted in bytes), with the dtype as the last argument.
V3_DTYPES = frozenset(
    {"uint16", "uint32", "uint64", "float8_e5m2", "float8_e4m3fn", "float8_e5m2fnuz", "float8_e4m3fnuz",
     "float8_e8m0fnu", "float4_e2m1fn_x2"}
)
WRITABLE_DTYPES = frozenset(LEGACY_STORAGE_TYPES) | V3_DTYPES
# torch.serialization._get_storage_alignment() and caffe2's kProducedFileFormatVersion, as torch 2.x writes them.
STORAGE_ALIGNMENT = 64
FILE_FORMAT_VERSION = b"3\n"

_U32 = 0xFFFFFFFF
_PAGE = 4096
_LOCAL, _DESCRIPTOR, _CENTRAL = 0x04034B50, 0x08074B50, 0x02014B50
_END64, _LOCATOR64, _END = 0x06064B50, 0x07064B50, 0x06054B50
_FLAG_UTF8, _FLAG_DESCRIPTOR = 0x0800, 0x0008
# miniz's "version made by" in the zip64 end record (3.0, Unix) and the version needed for zip64 (4.5).
_ZIP64_MADE_BY, _ZIP64_NEEDED = 0x031E, 0x002D


def can_write(dtype: str) -> bool:
    """Whether a tensor of this canonical dtype can be stored without torch."""
    return dtype in WRITABLE_DTYPES


# ---------------------------------------------------------------------------------------------------
# data.pkl


class _Global:
    """A global that a pickle names (`GLOBAL module name`) without it being imported here."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: object) -> None:  # pickle requires a reduce function to be callable
        raise TypeError(f"{self.module}.{self.name} is only named in a pickle here")


_GLOBALS: dict[tuple[str, str], _Global] = {}


def _global(module: str, name: str) -> _Global:
    # One object per name, so that the pickler's memo refers back to it as it does to torch's classes.
    return _GLOBALS.setdefault((module, name), _Global(module, name))


class _StaticPickler(pickle._Pickler):  # type: ignore[name-defined,misc]
    """Python's own pickler (the C one resolves every global it writes, which would import torch),
    taught to write a `_Global` as the GLOBAL opcode the C pickler writes for the real object."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_static_global(self, obj: _Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[_Global] = save_static_global

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _StorageRef):
            # torch.serialization._save's persistent_id: ("storage", type, key, location, numel).
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def pickle_state_dict_static(slots: list[BinSlot]) -> tuple[bytes, dict[str, str]]:
    """The `data.pkl` record torch.save writes for these tensors (a dict of them, in slot order), and
    name -> storage key, without importing torch: byte for byte what `bin_writer.pickle_state_dict` gives.

    An alias (`alias_of`) is the very tensor it aliases, as when torch.save meets one tensor under two
    names: the pickle refers back to it and no storage of its own is written.

    Example:
        >>> data, keys = pickle_state_dict_static([BinSlot("w", "float32", (2, 3))])
        >>> keys
        {'w': '0'}

    Raises:
        ValueError: a dtype this module cannot name (see `WRITABLE_DTYPES`), or an alias of a name not
        seen before it.
    """
    keys: dict[str, str] = {}
    storages: list[str] = []
    entries: dict[str, _Rebuild] = {}
    for slot in slots:
        if slot.alias_of is not None:
            if slot.alias_of not in entries:
                raise ValueError(f"tensor {slot.name!r} aliases {slot.alias_of!r}, which does not come before it")
            keys[slot.name] = keys[slot.alias_of]
            entries[slot.name] = entries[slot.alias_of]
            continue
        key = keys[slot.name] = str(len(storages))
        storages.append(key)
        stride = _contiguous_stride(slot.shape)
        if slot.dtype in V3_DTYPES:
            ref = _StorageRef(key, _global("torch.storage", "UntypedStorage"), slot.nbytes)
            args: tuple[Any, ...] = (ref, 0, slot.shape, stride, False, collections.OrderedDict(),
                                     _global("torch", slot.dtype))
            entries[slot.name] = _Rebuild(_global("torch._utils", "_rebuild_tensor_v3"), args)
        elif slot.dtype in LEGACY_STORAGE_TYPES:
            element = BITS_PER_ELEMENT[slot.dtype] // 8
            ref = _StorageRef(key, _global("torch", LEGACY_STORAGE_TYPES[slot.dtype]), slot.nbytes // element)
            args = (ref, 0, slot.shape, stride, False, collections.OrderedDict())
            entries[slot.name] = _Rebuild(_global("torch._utils", "_rebuild_tensor_v2"), args)
        else:
            raise ValueError(f"tensor {slot.name!r}: dtype {slot.dtype} cannot be written without torch")
    buffer = io.BytesIO()
    _StaticPickler(buffer, protocol=PICKLE_PROTOCOL).dump(entries)
    return buffer.getvalue(), keys


# ---------------------------------------------------------------------------------------------------
# The zip layout of caffe2's PyTorchStreamWriter (miniz, MZ_ZIP_FLAG_WRITE_ZIP64)


@dataclass(frozen=True)
class _Record:
    """One record of the archive: where its local header and data go, and their fixed bytes."""

    name: bytes  # with the archive folder
    size: int
    header_offset: int

    @property
    def zip64(self) -> bool:
        return self.size >= _U32 or self.header_offset >= _U32

    def _zip64_extra(self, *, local: bool) -> bytes:
        fields = b""
        if self.size >= _U32:
            # Uncompressed, then compressed size; miniz leaves the latter 0 in the local header, whose
            # sizes the data descriptor gives.
            fields += struct.pack("<QQ", self.size, 0 if local else self.size)
        if self.header_offset >= _U32:
            fields += struct.pack("<Q", self.header_offset)
        return struct.pack("<HH", 1, len(fields)) + fields if fields else b""

    @property
    def flags(self) -> int:
        # miniz writes a data descriptor after every record with data (the CRC is known only then).
        return _FLAG_UTF8 | (_FLAG_DESCRIPTOR if self.size else 0)

    @property
    def local_header(self) -> bytes:
        """Local header, name and extra field: zip64 sizes/offset where miniz puts them, then torch's
        `FB` padding that puts the record's data at a multiple of 64 bytes in the file."""
        extra64 = self._zip64_extra(local=True)
        start = self.header_offset + 30 + len(self.name) + len(extra64) + 4
        padding = -start % STORAGE_ALIGNMENT
        extra = extra64 + b"FB" + struct.pack("<H", padding) + b"Z" * padding
        header = struct.pack("<IHHHHHIIIHH", _LOCAL, 0, self.flags, 0, 0, 0, 0, 0, 0, len(self.name), len(extra))
        return header + self.name + extra

    @property
    def data_offset(self) -> int:
        return self.header_offset + len(self.local_header)

    def descriptor(self, crc: int) -> bytes:
        if not self.size:
            return b""
        if self.zip64:
            return struct.pack("<IIQQ", _DESCRIPTOR, crc, self.size, self.size)
        return struct.pack("<IIII", _DESCRIPTOR, crc, self.size, self.size)

    @property
    def end(self) -> int:
        """Where the next record's local header goes."""
        return self.data_offset + self.size + len(self.descriptor(0))

    def central_entry(self, crc: int) -> bytes:
        extra = self._zip64_extra(local=False)
        size32 = min(self.size, _U32)
        return struct.pack(
            "<IHHHHHHIIIHHHHHII", _CENTRAL, 0, 0, self.flags, 0, 0, 0, crc, size32, size32,
            len(self.name), len(extra), 0, 0, 0, 0, min(self.header_offset, _U32),
        ) + self.name + extra


def _end_records(count: int, central_offset: int, central_size: int) -> bytes:
    """The zip64 end record and its locator (miniz writes them in every torch archive), then the end record."""
    end64 = struct.pack("<IQHHIIQQQQ", _END64, 44, _ZIP64_MADE_BY, _ZIP64_NEEDED, 0, 0, count, count,
                        central_size, central_offset)
    locator = struct.pack("<IIQI", _LOCATOR64, 0, central_offset + central_size, 1)
    end = struct.pack("<IHHHHIIH", _END, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF), min(central_size, _U32),
                      min(central_offset, _U32), 0)
    return end64 + locator + end


_MASK64 = (1 << 64) - 1
_MURMUR_MUL = (0xC6A4A793 << 32) + 0x5BD1E995
_STD_HASH_SEED = 0xC70F6907
# The bucket counts of a libstdc++ std::unordered_set as it grows one element at a time (max load factor
# 1): 13, then the first prime of libstdc++'s `__prime_list` at least twice the previous count.
_BUCKET_COUNTS = (13, 29, 59, 127, 257, 541, 1109, 2357, 5087, 10273, 20753, 42043, 85229, 172933, 351061,
                  712697, 1447153, 2938679, 5967347, 12117689, 24607243, 49969847, 101473717)


def _hash_combine(seed: int, value: int) -> int:
    """c10::hash_combine on 64-bit size_t."""
    return seed ^ ((value + 0x9E3779B9 + ((seed << 6) & _MASK64) + (seed >> 2)) & _MASK64)


def _shift_mix(value: int) -> int:
    return value ^ (value >> 47)


def std_hash(data: bytes) -> int:
    """libstdc++'s std::hash<std::string> on 64-bit: `_Hash_bytes` (MurmurHash64A-like) with its seed."""
    aligned = len(data) & ~7
    value = (_STD_HASH_SEED ^ (len(data) * _MURMUR_MUL)) & _MASK64
    for at in range(0, aligned, 8):
        word = int.from_bytes(data[at:at + 8], "little")
        block = (_shift_mix((word * _MURMUR_MUL) & _MASK64) * _MURMUR_MUL) & _MASK64
        value = ((value ^ block) * _MURMUR_MUL) & _MASK64
    if len(data) & 7:
        value = ((value ^ int.from_bytes(data[aligned:], "little")) * _MURMUR_MUL) & _MASK64
    return _shift_mix((_shift_mix(value) * _MURMUR_MUL) & _MASK64)


def unordered_set_order(names: list[str]) -> list[str] | None:
    """The order in which a libstdc++ `std::unordered_set<std::string>` iterates over distinct `names`
    inserted one by one (None beyond the growth steps tabled here).

    Its nodes form one singly linked list; each bucket points at the node before its first one. A new
    node goes first in its bucket, or first in the list when its bucket is empty; a rehash relinks the
    nodes in list order the same way.
    """
    codes = {name: std_hash(name.encode("utf-8")) for name in names}
    head = object()  # the list's "before begin" node
    after: dict[object, object | None] = {head: None}
    buckets: list[object | None] = [None]
    sizes = iter(_BUCKET_COUNTS)
    for count, name in enumerate(names):
        if count + 1 > len(buckets) or len(buckets) == 1:
            size = next(sizes, None)
            if size is None:
                return None
            grown: list[object | None] = [None] * size
            node, after[head], first_bucket = after[head], None, 0
            while node is not None:
                following, index = after[node], codes[node] % size  # type: ignore[index]
                if grown[index] is None:
                    after[node], after[head], grown[index] = after[head], node, head
                    if after[node] is not None:
                        grown[first_bucket] = node
                    first_bucket = index
                else:
                    after[node], after[grown[index]] = after[grown[index]], node
                node = following
            buckets = grown
        index = codes[name] % len(buckets)
        before = buckets[index]
        if before is not None:
            after[name], after[before] = after[before], name
        else:
            after[name], after[head] = after[head], name
            if after[name] is not None:
                buckets[codes[after[name]] % len(buckets)] = name  # type: ignore[index]
            buckets[index] = head
    order: list[str] = []
    node = after[head]
    while node is not None:
        order.append(node)  # type: ignore[arg-type]
        node = after[node]
    return order


def serialization_id(records: list[tuple[str, int, bytes]]) -> bytes:
    """The 40 digits of `.data/serialization_id` for records (name without folder, CRC-32, first 8 bytes).

    As torch's PyTorchStreamWriter computes it: 20 digits of the hashes of its record names combined in
    the order its `std::unordered_set` of written names iterates (libstdc++'s, as torch's Linux builds
    use), then 20 digits of the CRC-32s its zip writer saw go out in data descriptors combined in order
    (its write callback checks every buffer of 8 bytes or more, so a record whose data begins with the
    descriptor signature counts too).
    """
    names = [name for name, _, _ in records]
    order = unordered_set_order(names)
    if order is None:  # beyond 10^8 records: a hash of the names in order, still fixed-length and specific
        named = int.from_bytes(hashlib.blake2b("\n".join(names).encode(), digest_size=8).digest(), "little")
    else:
        named = 0
        for name in order:
            named = _hash_combine(named, std_hash(name.encode("utf-8")))
    combined = 0
    for _, crc, head in records:
        if len(head) >= 8 and struct.unpack("<I", head[:4])[0] == _DESCRIPTOR:
            combined = _hash_combine(combined, struct.unpack("<I", head[4:8])[0])
        if head:
            combined = _hash_combine(combined, crc)
    return f"{named:020d}{combined:020d}".encode()


# ---------------------------------------------------------------------------------------------------
# Writing


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view[: 1 << 30], offset)
        view, offset = view[written:], offset + written


def write_bin_by_copy(
    path: Path,
    slots: list[BinSlot],
    sources: dict[str, ByteRange],
    *,
    verify: bool = True,
    on_tensor: Callable[[str], None] | None = None,
    advance: Callable[[int], None] | None = None,
    archive_name: str = "archive",
) -> int:
    """Write a torch zip checkpoint at `path` (created, must not exist) from byte ranges of other files.

    `slots` are the tensors in state-dict order; an alias (`alias_of`) shares the storage of the earlier
    slot it names and needs no source. `sources` gives every other slot's bytes. The file is the one
    torch.save writes for the same tensors (a dict of them, aliases being the same tensor object);
    `archive_name` is the archive's folder (torch.save names it after the file it writes, or "archive"
    when it writes to a file object, as `BinWriter` does).
    With `verify`, every storage is re-read from the output and compared with its source; in any case
    the same re-read gives the CRC-32 of each record. `on_tensor(name)` is called before each storage is
    copied, `advance(nbytes)` after.

    Example:
        >>> write_bin_by_copy(Path("out.bin"), [BinSlot("w", "float32", (2, 3))],  # doctest: +SKIP
        ...                   {"w": ByteRange(Path("model.safetensors"), 80, 24)})
        1

    Returns:
        The number of tensors whose bytes were compared with their source, aliases of a compared tensor
        included (0 without `verify`).

    Raises:
        OSError: writing fails; OutputError: a tensor reads back different from its source;
        ValueError: a source range does not have the size its slot needs, or a dtype cannot be named.
    """
    data_pkl, keys = pickle_state_dict_static(slots)
    owners = [slot for slot in slots if slot.alias_of is None]
    for slot in owners:
        if sources[slot.name].length != slot.nbytes:
            raise ValueError(f"tensor {slot.name!r}: {sources[slot.name].length} source bytes, {slot.nbytes} needed")
    folder = archive_name.encode("utf-8") + b"/"
    # torch.serialization._save's records, then the two PyTorchStreamWriter adds when it is closed.
    leading = [(b"data.pkl", data_pkl), (b".format_version", b"1"),
               (b".storage_alignment", str(STORAGE_ALIGNMENT).encode()), (b"byteorder", b"little")]
    records: list[_Record] = []
    offset = 0

    def add(name: bytes, size: int) -> _Record:
        nonlocal offset
        records.append(_Record(folder + name, size, offset))
        offset = records[-1].end
        return records[-1]

    for name, data in leading:
        add(name, len(data))
    storage_records = [add(f"data/{keys[slot.name]}".encode(), slot.nbytes) for slot in owners]
    version_record = add(b"version", len(FILE_FORMAT_VERSION))
    id_record = add(b".data/serialization_id", 40)
    central_offset = offset

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    inputs = byte_copy.SourceFiles()
    comparer: RangeComparer | None = None
    crcs: dict[bytes, int] = {}
    heads: dict[bytes, bytes] = {}
    try:
        prefix = b""
        for record, (_, data) in zip(records, leading, strict=False):
            crcs[record.name] = zlib.crc32(data)
            heads[record.name] = data[:8]
            prefix += record.local_header + data + record.descriptor(crcs[record.name])
        _pwrite_all(fd, prefix, 0)
        hooks.reached("after-header")
        comparer = RangeComparer(path, compare=verify, crc=True)
        # A write into a page the kernel is writing back waits for that write to finish: a record's
        # descriptor (which holds its CRC) is written once the comparing thread has read the record back,
        # and writeback is started only on whole pages before the first record still waiting for it.
        settled = flushed = 0

        def settle(submitted: int) -> None:
            nonlocal settled, flushed
            while settled < submitted and owners[settled].name in comparer.crcs:  # type: ignore[union-attr]
                record = storage_records[settled]
                crcs[record.name] = comparer.crcs[owners[settled].name]  # type: ignore[union-attr]
                heads[record.name] = os.pread(fd, min(8, record.size), record.data_offset)
                _pwrite_all(fd, record.descriptor(crcs[record.name]), record.data_offset + record.size)
                settled += 1
            done = storage_records[settled - 1].end if settled else 0
            done -= done % _PAGE
            if done - flushed >= WRITEBACK_STEP:
                start_writeback(fd, flushed, done - flushed)
                flushed = done

        for submitted, (slot, record) in enumerate(zip(owners, storage_records, strict=True), start=1):
            if on_tensor is not None:
                on_tensor(slot.name)
            source = sources[slot.name]
            _pwrite_all(fd, record.local_header, record.header_offset)
            try:
                byte_copy.copy_range(inputs.fd(source), fd, source.offset, record.data_offset, source.length)
            except CorruptCheckpoint as exc:
                exc.path = exc.path or str(source.path)
                raise
            comparer.submit(slot.name, source, record.data_offset)
            settle(submitted)
            if advance is not None:
                advance(source.length)
        comparer.finish()
        compared = comparer.compared
        inputs.check_unchanged()
        settle(len(owners))
        crcs[version_record.name] = zlib.crc32(FILE_FORMAT_VERSION)
        heads[version_record.name] = FILE_FORMAT_VERSION[:8]
        ident = serialization_id(
            [(r.name[len(folder):].decode("utf-8"), crcs[r.name], heads[r.name]) for r in records if r is not id_record]
        )
        crcs[id_record.name] = zlib.crc32(ident)
        tail = b""
        for record, data in ((version_record, FILE_FORMAT_VERSION), (id_record, ident)):
            tail += record.local_header + data + record.descriptor(crcs[record.name])
        central = b"".join(record.central_entry(crcs[record.name]) for record in records)
        tail += central + _end_records(len(records), central_offset, len(central))
        _pwrite_all(fd, tail, version_record.header_offset)
        if os.fstat(fd).st_size != central_offset + len(central) + 98:
            raise OutputError("the written archive is not the size its layout gives", path=str(path))
        if not verify:
            return 0
        compared_names = {slot.name for slot in owners} if compared == len(owners) else set()
        return compared + sum(1 for slot in slots if slot.alias_of is not None and slot.alias_of in compared_names)
    finally:
        byte_copy.close_all(comparer, inputs, fd)
