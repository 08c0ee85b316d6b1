"""Zip archives as PyTorch reads them: members found leniently, bytes read without zipfile's checks.

PyTorch's reader (miniz) accepts archives that Python's `zipfile` refuses: wrong CRCs, a local header
whose name differs from the central directory's, a "version needed" zipfile does not support, ... A
scanner that gave up where `zipfile` gives up would let those through, so members are listed from the
central directory when `zipfile` can parse it and otherwise by walking the local file headers, and
each member's bytes are read straight from its local header, without CRC, flag or name checks.
`verify_crcs` recomputes the CRC-32 of every member (torch never checks them).
"""

from __future__ import annotations

import collections
import os
import re
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from weightdoctor.errors import clip_words
from weightdoctor.gcpause import gc_paused
from weightdoctor.wording import counted

LOCAL_SIGNATURE = b"PK\x03\x04"
DESCRIPTOR_SIGNATURE = b"PK\x07\x08"
EOCD_SIGNATURE = b"PK\x05\x06"
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ZipMember:
    """One record of a zip archive.

    Attributes:
        name: the member's name (from the central directory when there is one).
        header_offset: where its local file header starts.
        data_offset: where its (possibly compressed) bytes start.
        compressed_size / size: bytes stored / bytes once decompressed.
        method: 0 stored, 8 deflated (others cannot be read here, nor by PyTorch).
        crc: the CRC-32 the archive records for it.
    """

    name: str
    header_offset: int
    data_offset: int
    compressed_size: int
    size: int
    method: int
    crc: int


@dataclass(frozen=True)
class ZipLayout:
    """The members of an archive, how they were found, and where the archive ends."""

    members: list[ZipMember]
    source: str  # "central directory", "central directory (raw)" or "local headers"
    end: int  # first byte after the archive (after the end record and its comment)
    notes: list[str]  # irregularities PyTorch's reader tolerates
    problems: list[str] = field(default_factory=list)  # signs of a crafted archive


def _read_at(handle: BinaryIO, offset: int, size: int) -> bytes:
    if not 0 <= offset < 1 << 63:
        return b""  # an offset a crafted record gives past what seek takes: past the end of any file
    handle.seek(offset)
    return handle.read(size)


def _zip64_sizes(extra: bytes, csize: int, usize: int) -> tuple[int, int]:
    """Sizes from a zip64 extra field (id 1) where the header holds 0xFFFFFFFF."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        if tag == 1:
            values = [struct.unpack_from("<Q", body, i)[0] for i in range(0, len(body) - 7, 8)]
            if usize == 0xFFFFFFFF and values:
                usize = values.pop(0)
            if csize == 0xFFFFFFFF and values:
                csize = values.pop(0)
            break
        pos += 4 + length
    return csize, usize


def _local_header(handle: BinaryIO, offset: int) -> tuple[int, int, int, int, int, int, int, str, bytes] | None:
    """(flags, method, crc, csize, usize, data_offset, header_end, name, extra) or None if no header."""
    raw = _read_at(handle, offset, _LOCAL.size)
    if len(raw) < _LOCAL.size:
        return None
    sig, _version, flags, method, _time, _date, crc, csize, usize, name_len, extra_len = _LOCAL.unpack(raw)
    if sig != LOCAL_SIGNATURE:
        return None
    name = _read_at(handle, offset + _LOCAL.size, name_len)
    extra = handle.read(extra_len)
    data_offset = offset + _LOCAL.size + name_len + extra_len
    csize, usize = _zip64_sizes(extra, csize, usize)
    text = name.decode("utf-8", "replace")
    return flags, method, crc, csize, usize, data_offset, data_offset, text, extra


def _find_end_record(handle: BinaryIO, file_size: int) -> int:
    """First byte after the end-of-central-directory record and its comment (file_size if not found)."""
    window = min(file_size, 65536 + 22)
    tail = _read_at(handle, file_size - window, window)
    at = tail.rfind(EOCD_SIGNATURE)
    if at < 0 or at + 22 > len(tail):
        return file_size
    (comment_len,) = struct.unpack_from("<H", tail, at + 20)
    return min(file_size, file_size - window + at + 22 + comment_len)


# General-purpose flag bits miniz refuses a record for: (bit, what it says).
_REFUSED_FLAGS = ((0x1, "encrypted"), (0x20, "compressed patch data"), (0x40, "strongly encrypted"),
                  (0x2000, "having its local header masked"))
_REFUSED_MASK = sum(bit for bit, _what in _REFUSED_FLAGS)


# The layouts read during one command, by file version: one `inspect` reads the same archive's layout in the scan,
# the static loader and the checks after torch.load; a 54 MB zip listing a million entries took 72 s, most of it
# parsing the central directory again and again. Only a command (`command_cache`) keeps them, and it drops them
# when it ends: a file rewritten in place within one mtime tick (same inode, same size) keeps its key, so a
# process-wide cache could hand a later command a stale view.
_CACHE_DEPTH = 0
_LAYOUT_CACHE: dict[tuple[int, ...], ZipLayout] = {}
_LAYOUT_CACHE_SIZE = 4


@contextmanager
def command_cache() -> Iterator[None]:
    """Within this block each archive's central directory is parsed once (per file version); dropped at the end."""
    global _CACHE_DEPTH
    _CACHE_DEPTH += 1
    try:
        yield
    finally:
        _CACHE_DEPTH -= 1
        if _CACHE_DEPTH == 0:
            _LAYOUT_CACHE.clear()
            _INFOS_CACHE.clear()


def _handle_identity(handle: BinaryIO, file_size: int) -> tuple[int, ...] | None:
    if _CACHE_DEPTH == 0:
        return None  # outside a command: every call reads the file afresh
    try:
        stat = os.fstat(handle.fileno())
    except (AttributeError, OSError, ValueError):  # an in-memory buffer: nothing tells its versions apart
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, file_size)


# Python zipfile's member list, by file version (see `_LAYOUT_CACHE`): format detection, the scan and the
# torch.export check each asked zipfile to parse the same central directory.
_INFOS_CACHE: dict[tuple[int, ...], list[zipfile.ZipInfo]] = {}


def _zipfile_infos(handle: BinaryIO) -> list[zipfile.ZipInfo]:
    """`zipfile.ZipFile(handle).infolist()`, parsed once per file version.

    Raises:
        whatever `zipfile.ZipFile` raises (BadZipFile, ...); a failure is not cached.
    """
    identity = _handle_identity(handle, -1)
    if identity is not None and identity in _INFOS_CACHE:
        return _INFOS_CACHE[identity]
    handle.seek(0)
    # A ZipInfo per entry, all kept: the collector's passes over them freed nothing (a million entries: 4.3 s of
    # CPU with it, 3.0 s without; see weightdoctor.gcpause).
    with gc_paused(), zipfile.ZipFile(handle) as archive:
        infos = archive.infolist()
    if identity is not None:
        if len(_INFOS_CACHE) >= _LAYOUT_CACHE_SIZE:
            _INFOS_CACHE.pop(next(iter(_INFOS_CACHE)))
        _INFOS_CACHE[identity] = infos
    return infos


def zipfile_names(path: str | os.PathLike[str]) -> list[str]:
    """The member names Python's zipfile lists (`ZipFile(path).namelist()`), parsed once per file version.

    Raises:
        whatever `zipfile.ZipFile` raises: BadZipFile, OSError, ValueError, NotImplementedError, EOFError, ...
    """
    with open(path, "rb") as handle:
        return [info.filename for info in _zipfile_infos(handle)]


def central_directory_size(path: str | os.PathLike[str]) -> int:
    """The most bytes of central directory the archive's end records (classic or zip64) declare: what Python's
    zipfile reads and parses before it lists any name, found from the file's last 64 KB alone; 0 when no end record
    is found.

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as handle:
        file_size = os.fstat(handle.fileno()).st_size
        sizes = [size for _offset, size, _entries in _central_directory_locations(handle, file_size, [])]
        # Python's zipfile reads the zip64 record just before the locator, where miniz (the locations above) goes
        # where the locator points: a locator pointing elsewhere (or past the end) hid a 118 KB directory that
        # zipfile went on to parse in full.
        window = min(file_size, 65536 + 22)
        tail = _read_at(handle, file_size - window, window)
        # zipfile's own search: an end record without comment in the last 22 bytes, else the last signature.
        at = window - 22 if tail[-22:-18] == EOCD_SIGNATURE and tail[-2:] == b"\0\0" else tail.rfind(EOCD_SIGNATURE)
        if 0 <= at <= window - 22:
            sizes.append(struct.unpack_from("<I", tail, at + 12)[0])  # that record's own directory size
        record_at = file_size - window + at - 20 - 56
        if at >= 0 and record_at >= 0:
            record = _read_at(handle, record_at, 76)
            if record[:4] == b"PK\x06\x06" and record[56:60] == b"PK\x06\x07":
                sizes.append(struct.unpack_from("<Q", record, 40)[0])
        return max(sizes, default=0)


def _unicode_path(extra: bytes, written: bytes) -> str | None:
    """The name an entry's Unicode path field (0x7075) gives, where Python 3.12's zipfile takes it for the entry's
    name: a version 1 field whose CRC-32 is the written name's, in UTF-8 (the last such field); else None."""
    found = None
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        if tag == 0x7075 and len(body) >= 5:
            version, crc = struct.unpack_from("<BL", body)
            if version == 1 and crc == zlib.crc32(written):
                # Not UTF-8: 3.12's zipfile refuses the whole archive for it; miniz ignores the field.
                with suppress(UnicodeDecodeError):
                    found = body[5:].decode("utf-8").split("\0", 1)[0] or found
        pos += 4 + length
    return found


def _same_name(written: bytes, field: str) -> bool:
    """Whether a Unicode path field (0x7075) only spells the written name in Unicode: the writer's own transcoding.

    Info-ZIP writes the name's own bytes without the UTF-8 flag and the field with them as UTF-8; a name in NFD
    (macOS) gets a field in NFC; PKZIP, WinRAR and Info-ZIP on Windows write the name in the OEM code page
    (cp437, cp850, ...), which no record names, and the field in UTF-8. Such a field changes no ASCII byte of the
    name (the separators, `data.pkl`): only the letters above 127, in the same places. A field that changes an
    ASCII byte (`archive/data.pkl` named `archivX/data.pkl`) renames the member.

    Example:
        >>> _same_name("caf\u00e9".encode("cp437"), "caf\u00e9"), _same_name(b"archive/data.pkl", "archivX/data.pkl")
        (True, False)
    """
    try:
        text = written.decode("utf-8")
    except UnicodeDecodeError:  # a legacy code page: its bytes above 127 are letters the field names
        return _ascii_runs(written.decode("latin-1")) == _ascii_runs(field)
    return unicodedata.normalize("NFC", text) == unicodedata.normalize("NFC", field)


def _ascii_runs(text: str) -> str:
    """`text` with each run of non-ASCII characters as one U+FFFD: what two spellings of a name share."""
    return re.sub(r"[^\x00-\x7f]+", "\ufffd", text)


def _entry_names(info: zipfile.ZipInfo) -> tuple[str, str | None]:
    """(the entry's name as written, the other name its Unicode path field gives, or None), on every Python.

    Python 3.11's zipfile lists the name written, 3.12's the Unicode path field's (0x7075) when its CRC matches;
    PyTorch's reader (miniz) never reads the field. The written name is decoded as UTF-8 whatever the UTF-8 flag
    says, as PyTorch and the raw directory's reading (`_raw_central_directory`) decode it: zipfile decodes a name
    without the flag as cp437, and the same record then had two names, one of them "not seen by zipfile". A field
    that only spells the written name in Unicode (`_same_name`) gives no other name.
    """
    written = info.orig_filename
    raw = written.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
    cut = raw.split(b"\0", 1)[0]  # zipfile ends a name at its first NUL (both versions)
    name = cut.decode("utf-8", "replace")
    if os.sep != "/":
        name = name.replace(os.sep, "/")
    other = _unicode_path(info.extra, raw)
    if other is None or _same_name(cut, other):
        return name, None
    return name, other


def _from_central_directory(handle: BinaryIO, file_size: int) -> ZipLayout:
    problems: list[str] = []  # irregularities PyTorch's reader tolerates: the layout's notes
    crafted: list[str] = []
    infos = _zipfile_infos(handle)
    members: list[ZipMember] = []
    for info in infos:
        name, unicode_name = _entry_names(info)
        header = _local_header(handle, info.header_offset)
        if header is None:
            problems.append(f"member {name!r}: no local header at byte {info.header_offset}")
            continue
        if unicode_name is not None:
            # Scanners and loaders built on Python's zipfile (numpy.load among them) see the other name from 3.12 on:
            # a data.pkl so renamed was no pickle to them, while torch.load unpickles it.
            crafted.append(f"member {name!r}: its Unicode path field (0x7075) names it {unicode_name!r}, the name "
                           "Python's zipfile lists from 3.12 on; PyTorch's reader takes the name written: the "
                           "archive shows different contents to different readers")
        data_offset = header[5]
        if info.flag_bits & _REFUSED_MASK:
            refused = [what for bit, what in _REFUSED_FLAGS if info.flag_bits & bit]
            # Read in place here, the bytes were taken as values; miniz refuses such a record in every mode
            # ("unsupported encryption", "unsupported feature"), so torch.load refuses the file.
            problems.append(f"member {name!r} is flagged as {' and '.join(refused)} (PyTorch's reader "
                            "refuses it)")
        if header[7] != name:
            problems.append(
                f"member {name!r}: its local header names it {header[7]!r} (PyTorch reads it anyway)"
            )
        members.append(
            ZipMember(name, info.header_offset, data_offset, info.compress_size, info.file_size,
                      info.compress_type, info.CRC)
        )
    return ZipLayout(members, "central directory", _find_end_record(handle, file_size), problems, crafted)


def _find_descriptor(handle: BinaryIO, data_offset: int, file_size: int) -> tuple[int, int, int, int] | None:
    """Locate the data descriptor that ends a member of unknown size: (csize, usize, crc, next_offset)."""
    position = data_offset
    carry = b""
    while position < file_size:
        chunk = carry + _read_at(handle, position, _CHUNK)
        base = position - len(carry)
        if len(chunk) <= len(carry):
            break
        at = chunk.find(DESCRIPTOR_SIGNATURE)
        while at >= 0:
            hit = base + at
            record = _read_at(handle, hit, 24)
            length = hit - data_offset
            if len(record) >= 16 and struct.unpack_from("<I", record, 8)[0] == length:
                crc, csize, usize = struct.unpack_from("<III", record, 4)
                return csize, usize, crc, hit + 16
            if len(record) >= 24 and struct.unpack_from("<Q", record, 8)[0] == length:
                crc = struct.unpack_from("<I", record, 4)[0]
                csize, usize = struct.unpack_from("<QQ", record, 8)
                return csize, usize, crc, hit + 24
            at = chunk.find(DESCRIPTOR_SIGNATURE, at + 1)
        carry = chunk[-3:]
        position = base + len(chunk)
    return None


def _from_local_headers(handle: BinaryIO, file_size: int, reason: str) -> ZipLayout:
    problems = [f"zipfile cannot read the central directory ({reason}); members found from local headers"]
    members: list[ZipMember] = []
    offset = 0
    while offset + _LOCAL.size <= file_size:
        header = _local_header(handle, offset)
        if header is None:
            break
        flags, method, crc, csize, usize, data_offset, _end, name, _extra = header
        if flags & 0x08 and csize == 0:
            found = _find_descriptor(handle, data_offset, file_size)
            if found is None:
                problems.append(f"member {name!r}: no data descriptor ends it; the walk stops at byte {offset}")
                break
            csize, usize, crc, next_offset = found
        else:
            next_offset = data_offset + csize
            if flags & 0x08:
                marker = _read_at(handle, next_offset, 4)
                next_offset += 16 if marker == DESCRIPTOR_SIGNATURE else 12
        members.append(ZipMember(name, offset, data_offset, csize, usize, method, crc))
        if next_offset <= offset:
            break
        offset = next_offset
    return ZipLayout(members, "local headers", _find_end_record(handle, file_size), problems)


_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")


def _central_directory_locations(handle: BinaryIO, file_size: int, notes: list[str]
                                 ) -> list[tuple[int, int, tuple[int, int] | None]]:
    """(offset, size, entries) of the central directory as the end records state them, without adjustment.

    Python's zipfile shifts every offset when the end record's numbers do not add up (it assumes
    data was prepended); miniz, PyTorch's reader, takes them as written. Both the classic and the zip64
    end records are honoured. `entries` (on this disk, in all) are the counts miniz goes by, given for the one
    directory it reads (the zip64 record's where there is one), None for the other. What PyTorch's reader refuses
    in them is added to `notes`.
    """
    window = min(file_size, 65536 + 22)
    base = file_size - window
    tail = _read_at(handle, base, window)
    at = tail.rfind(EOCD_SIGNATURE)
    if at < 0 or at + 22 > len(tail):
        return []
    _sig, _disk, _cd_disk, n_disk, n, cd_size, cd_offset, _comment = struct.unpack_from("<4sHHHHIIH", tail, at)
    locations: list[tuple[int, int, tuple[int, int] | None]] = [(cd_offset, cd_size, (n_disk, n))]
    locator = base + at - 20
    if locator >= 0 and _read_at(handle, locator, 4) == b"PK\x06\x07":
        (z64_offset,) = struct.unpack("<Q", _read_at(handle, locator + 8, 8))
        if z64_offset > file_size - 56:
            # miniz refuses the archive ("not a ZIP archive"); seeking there raised OverflowError past 2**63 bytes.
            notes.append(f"the zip64 end locator places its record at byte {z64_offset:,}, past the end of the "
                         f"{file_size:,}-byte file (PyTorch's reader refuses the archive)")
            return locations
        record = _read_at(handle, z64_offset, 56)
        if len(record) == 56 and record[:4] == b"PK\x06\x06":
            z64_n_disk, z64_n, z64_size, z64_cd_offset = struct.unpack_from("<QQQQ", record, 24)
            # miniz then goes by the zip64 record alone (its counts too): the classic one's are not checked.
            locations = [(z64_cd_offset, z64_size, (z64_n_disk, z64_n))]
            if (cd_offset, cd_size) != (z64_cd_offset, z64_size):
                # Both records name one directory in any archive under 4 GB: parsed once, not twice (a directory
                # of 300,000 entries took seconds each time).
                locations.insert(0, (cd_offset, cd_size, None))
    return locations


def _raw_central_directory(handle: BinaryIO, file_size: int, offset: int, size: int,
                           known: dict[tuple[str, int], ZipMember] | None = None
                           ) -> tuple[list[ZipMember], int, int]:
    """The members a central directory at `offset` lists, parsed as miniz would (no offset shifting), but for
    those `known` holds as they are; the number of its entries (those without a local header included); the
    number of entries with a local header (those `known` holds included).

    `known` maps (name, header offset) to the members already read there (zipfile's): the same local header
    gives the same data offset, so a million-entry directory's local headers are not read a second time, and
    no member is built for a record `known` holds with the same compression method, sizes and CRC (the caller
    keeps only members it does not know: a million built and dropped were a second of `inspect`). A record
    that names a known local header but reads it with another method, size or CRC is returned: it is another
    member (torch.load inflated a record's bytes that zipfile read as stored values).
    """
    if offset >= file_size:
        return [], 0, 0
    raw = _read_at(handle, offset, min(size, file_size - offset, 1 << 28))
    members: list[ZipMember] = []
    entries = with_header = 0
    for fields, written, _, csize, usize, header_offset in _central_records(raw):
        method, crc = fields[4], fields[7]
        name = written.decode("utf-8", "replace")
        entries += 1
        seen = known.get((name, header_offset)) if known is not None else None
        if seen is not None:
            with_header += 1
            if (seen.method != method or seen.crc != crc or seen.compressed_size != csize
                    or seen.size != usize):
                members.append(ZipMember(name, header_offset, seen.data_offset, csize, usize, method, crc))
            continue
        header = _local_header(handle, header_offset)
        if header is not None:
            with_header += 1
            members.append(ZipMember(name, header_offset, header[5], csize, usize, method, crc))
    return members, entries, with_header


@dataclass(frozen=True)
class ListedEntry:
    """One entry of a central directory, as written: its name's bytes decoded, the Unicode path field not read."""

    name: str
    method: int
    compressed_size: int
    header_offset: int  # moved by the bytes before the archive, as Python's zipfile moves it


def directory_as_written(handle: BinaryIO, record: int) -> list[ListedEntry]:
    """The entries of the central directory that the end record at byte `record` closes, read without zipfile.

    Python's zipfile parses each entry's extra fields, and which it reads depends on the Python: from 3.12 it takes a
    Unicode path field (0x7075) whose CRC matches the name as the entry's name, and refuses the whole archive when such
    a field is shorter than its 5-byte head ("Corrupt unicode path extra field"), where 3.11 and PyTorch's reader
    (miniz) read neither. Here the name is the one written in the entry, on every Python. The directory is found
    where zipfile looks for it (just before the end record, or before the zip64 record just before its locator), and
    each local header offset is moved by what precedes the archive, as zipfile moves it; an entry's zip64 field gives
    the values its header holds as 0xFFFFFFFF. The walk stops at the first record that is no central directory entry.

    Example:
        >>> import io, zipfile
        >>> buffer = io.BytesIO(b"x" * 10)
        >>> with zipfile.ZipFile(buffer, "a") as archive:
        ...     archive.writestr("archive/data.pkl", b"\\x80\\x02N.")
        >>> [(e.name, e.header_offset) for e in directory_as_written(buffer, buffer.getvalue().rfind(EOCD_SIGNATURE))]
        [('archive/data.pkl', 10)]

    Raises:
        OSError: the handle cannot be read.
    """
    end_record = _read_at(handle, record, 22)
    if len(end_record) < 22 or end_record[:4] != EOCD_SIGNATURE:
        return []
    size, offset = struct.unpack_from("<II", end_record, 12)
    directory_end = record
    if record >= 20 + 56 and _read_at(handle, record - 20, 4) == b"PK\x06\x07":
        zip64 = _read_at(handle, record - 20 - 56, 56)
        if len(zip64) == 56 and zip64[:4] == b"PK\x06\x06":
            size, offset = struct.unpack_from("<QQ", zip64, 40)
            directory_end = record - 20 - 56
    start = directory_end - size
    if start < 0:
        return []
    shift = start - offset  # the bytes before the archive: zipfile's `concat`
    raw = _read_at(handle, start, size)
    entries: list[ListedEntry] = []
    for fields, name, _, csize, _, header_offset in _central_records(raw):
        # zipfile decodes a name as UTF-8 when flag bit 11 says so, else as cp437; PyTorch's names are ASCII.
        text = name.decode("utf-8", "replace") if fields[3] & 0x800 else name.decode("cp437")
        entries.append(ListedEntry(text, fields[4], csize, header_offset + shift))
    return entries


def _central_records(raw: bytes) -> Iterator[tuple[tuple[Any, ...], bytes, bytes, int, int, int]]:
    """The records of a central directory's bytes `raw`, in order, until one does not start with its signature:
    (the fixed fields as `_CENTRAL` unpacks them, the name as written, the extra field, the compressed size, the
    size and the local header's offset, the last three from the zip64 extra where the fields say 0xFFFFFFFF)."""
    position = 0
    while position + _CENTRAL.size <= len(raw) and raw[position:position + 4] == b"PK\x01\x02":
        fields = _CENTRAL.unpack_from(raw, position)
        csize, usize = fields[8], fields[9]
        name_len, extra_len, comment_len, header_offset = fields[10], fields[11], fields[12], fields[16]
        name = raw[position + 46:position + 46 + name_len]
        extra = raw[position + 46 + name_len:position + 46 + name_len + extra_len]
        if 0xFFFFFFFF in (csize, usize, header_offset):
            values = _zip64_values(extra)  # in zip64's order: size, compressed size, header offset
            if usize == 0xFFFFFFFF and values:
                usize = values.pop(0)
            if csize == 0xFFFFFFFF and values:
                csize = values.pop(0)
            if header_offset == 0xFFFFFFFF and values:
                header_offset = values.pop(0)
        yield fields, name, extra, csize, usize, header_offset
        position += 46 + name_len + extra_len + comment_len


def _fields(member: ZipMember, shown: bool = False) -> tuple[Any, ...]:
    """What a reader takes a record's bytes as: compression method, compressed size, size, CRC-32 (in words)."""
    if shown:
        return (member.method, f"{member.compressed_size:,}", f"{member.size:,}", f"{member.crc:08x}")
    return member.method, member.compressed_size, member.size, member.crc


def _zip64_values(extra: bytes) -> list[int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        if tag == 1:
            return [struct.unpack_from("<Q", body, i)[0] for i in range(0, len(body) - 7, 8)]
        pos += 4 + length
    return []


def _copy(layout: ZipLayout) -> ZipLayout:
    """A layout whose lists a caller may change without changing the cached one."""
    return ZipLayout(list(layout.members), layout.source, layout.end, list(layout.notes), list(layout.problems))


def read_layout(handle: BinaryIO, file_size: int) -> ZipLayout:
    """List a zip archive's members the way both Python's zipfile and PyTorch's reader see them (cached per file
    version; see `_read_layout`).

    Example:
        >>> with open("model.bin", "rb") as handle:  # doctest: +SKIP
        ...     [m.name for m in read_layout(handle, os.path.getsize("model.bin")).members][:2]
        ['archive/data.pkl', 'archive/.format_version']
    """
    identity = _handle_identity(handle, file_size)
    if identity is not None and identity in _LAYOUT_CACHE:
        return _copy(_LAYOUT_CACHE[identity])
    with gc_paused():  # a member per entry, all kept (a million: 4.2 s of CPU with the collector, 3.2 s without)
        layout = _read_layout(handle, file_size)
    if identity is not None:
        if len(_LAYOUT_CACHE) >= _LAYOUT_CACHE_SIZE:
            _LAYOUT_CACHE.pop(next(iter(_LAYOUT_CACHE)))
        _LAYOUT_CACHE[identity] = layout
        return _copy(layout)
    return layout


def _read_layout(handle: BinaryIO, file_size: int) -> ZipLayout:
    """List a zip archive's members the way both Python's zipfile and PyTorch's reader see them.

    The union of zipfile's central directory, the central directory read at the end record's raw
    offsets (miniz's view), and, when neither can be read, a walk over the local file headers. An
    archive whose views disagree was crafted to show a scanner one thing and torch another; every
    member of every view is returned, and the disagreement is reported in `problems`. A record both views
    list at one local header, read with other fields (method, sizes, CRC), is returned as zipfile reads it:
    scanning the second reading would walk the same bytes again, which the scan refuses to do.

    Example:
        >>> with open("model.bin", "rb") as handle:  # doctest: +SKIP
        ...     [m.name for m in read_layout(handle, os.path.getsize("model.bin")).members][:2]
        ['archive/data.pkl', 'archive/.format_version']
    """
    notes: list[str] = []
    reason = ""
    try:
        strict: ZipLayout | None = _from_central_directory(handle, file_size)
    except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError, EOFError, struct.error) as exc:
        strict = None
        reason = clip_words(" ".join(str(exc).split()), 120) or type(exc).__name__
        notes.append(f"zipfile cannot read the central directory ({reason}); it was read as PyTorch reads it")
    raw_members: list[ZipMember] = []  # those zipfile's view does not hold
    raw_found = 0  # members of the raw view with a local header, zipfile's included
    read = {(m.name, m.header_offset): m for m in strict.members} if strict is not None else {}
    # The classic and zip64 end records usually give the same place: that directory is parsed once.
    for offset, size, declared in dict.fromkeys(_central_directory_locations(handle, file_size, notes)):
        try:
            found, entries, with_header = _raw_central_directory(handle, file_size, offset, size, read)
        except (ValueError, OSError, struct.error):
            continue
        raw_members += found
        raw_found += with_header
        if declared is not None and entries and declared != (entries, entries):
            # miniz reads as many entries as the end record counts: more than the directory holds and torch.load
            # refuses the file ("archive is corrupted"), fewer and it sees only the first ones. zipfile counts
            # nothing, so the torch-free reader listed every record and called the file healthy.
            notes.append(f"the end record counts {declared[1]:,} entries ({declared[0]:,} on this disk), but the "
                         f"central directory PyTorch reads holds {entries:,}")
    members: list[ZipMember] = list(strict.members) if strict is not None else []
    extra: list[ZipMember] = []
    added: set[tuple[str, int]] = set()  # the keys of `extra`
    reread: dict[ZipMember, ZipMember] = {}  # miniz's member -> zipfile's, at one local header but read apart
    for member in raw_members:
        key = (member.name, member.header_offset)
        seen = read.get(key)
        if seen is not None:
            if _fields(seen) != _fields(member):
                reread.setdefault(member, seen)
        elif key not in added:
            added.add(key)
            extra.append(member)
    problems: list[str] = []
    if strict is not None and strict.members and not raw_found:
        # zipfile moves every offset when the end record's numbers do not add up; miniz does not. A second archive
        # in the comment of the first (or two archives joined) is read whole by zipfile and not at all by torch:
        # inspect listed the hidden archive's tensors, exit 0, for a file torch.load refuses.
        problems.append(
            "Python's zipfile finds the central directory only by moving every offset the end record gives (as if "
            "the archive came after other bytes: a second archive in the first's comment, or two files joined); "
            "PyTorch's reader takes the offsets as written and finds no record there (torch.load refuses the file): "
            "the archive shows different contents to different readers"
        )
    if strict is not None:
        notes += strict.notes
        problems += strict.problems
        if extra:
            problems.append(
                f"the central directory PyTorch reads lists {counted(len(extra), 'member')} that Python's zipfile "
                "does not "
                f"see (e.g. {extra[0].name!r}): the archive shows different contents to different readers"
            )
        if reread:
            # Two directories (a zip64 record where the locator points, another just before it, as zipfile reads
            # it in Python 3.11) can list one local header with other fields: torch.load inflated a tensor's
            # bytes that zipfile, so the scan and the torch-free reader, took as stored values.
            theirs, ours = next(iter(reread.items()))
            differences = "; ".join(f"{what} {mine} where zipfile reads {other}" for what, mine, other in zip(
                ("compression method", "compressed size", "size", "CRC-32"), _fields(theirs, True),
                _fields(ours, True), strict=True) if mine != other)
            problems.append(
                f"the central directory PyTorch reads gives {counted(len(reread), 'member')} that Python's zipfile "
                "also "
                f"lists, at the same local header, other fields (e.g. {theirs.name!r}: {differences}): the archive "
                "shows different contents to different readers"
            )
    members += extra
    if not members:
        walked = _from_local_headers(handle, file_size, reason or "it lists no member")
        return ZipLayout(walked.members, "local headers", walked.end, walked.notes)
    source = "central directory" if strict is not None else "central directory (raw)"
    return ZipLayout(members, source, _find_end_record(handle, file_size), notes, problems)


def iter_member_chunks(handle: BinaryIO, member: ZipMember, limit: int | None = None) -> Iterator[bytes]:
    """Yield a member's decompressed bytes in chunks, reading from its local header's data offset.

    Raises:
        ValueError: the member uses a compression method other than stored or deflated, its data is
            cut short, or it decompresses to more than `limit` bytes.
    """
    if member.method not in (0, 8):
        raise ValueError(f"compression method {member.method} (only stored and deflated can be read)")
    inflater = zlib.decompressobj(-15) if member.method == 8 else None
    left = member.compressed_size
    position = member.data_offset
    produced = 0
    while True:
        if inflater is not None and inflater.unconsumed_tail:
            raw = inflater.unconsumed_tail  # input held back by the output bound below
        elif left > 0:
            raw = _read_at(handle, position, min(_CHUNK, left))
            if not raw:
                raise ValueError(f"data ends {counted(left, 'byte', grouped=False)} early (truncated)")
            position += len(raw)
            left -= len(raw)
        else:
            break
        try:
            # Bounded output: 1 MB of deflated zeros inflates to 1 GB in one call otherwise.
            out = inflater.decompress(raw, _CHUNK) if inflater is not None else raw
        except zlib.error as exc:
            raise ValueError(f"cannot inflate: {exc}") from exc
        produced += len(out)
        if limit is not None and produced > limit:
            raise ValueError(f"decompresses to more than {limit} bytes")
        yield out
    if inflater is not None:
        tail = inflater.flush()
        produced += len(tail)
        if limit is not None and produced > limit:
            raise ValueError(f"decompresses to more than {limit} bytes")
        yield tail


def read_member(handle: BinaryIO, member: ZipMember, limit: int) -> bytearray:
    """A member's whole decompressed content (at most `limit` bytes; see `iter_member_chunks`).

    Grown in place: collecting chunks and joining them would hold the content twice at the peak, which for
    a deflated bomb at the limit is twice the limit.
    """
    content = bytearray()
    for chunk in iter_member_chunks(handle, member, limit):
        content += chunk
    return content


@dataclass(frozen=True)
class CrcMismatch:
    """A member whose bytes do not match the CRC-32 the archive records."""

    member: str
    expected: str
    actual: str


@dataclass(frozen=True)
class CrcReport:
    """Result of recomputing every member's CRC-32."""

    checked: int
    mismatches: list[CrcMismatch]
    unreadable: list[str]
    # (name, copies) of each member the directory lists more than once, in the order first listed.
    repeated: list[tuple[str, int]] = field(default_factory=list)


def verify_crcs(handle: BinaryIO, file_size: int) -> CrcReport:
    """Recompute the CRC-32 of every member and compare it with the archive's record.

    torch.load does not check CRCs, so a flipped bit in a `.bin` loads silently; this finds it.
    """
    layout = read_layout(handle, file_size)
    mismatches: list[CrcMismatch] = []
    unreadable: list[str] = []
    # The CRC of each run of bytes, computed once: a central directory can list one 10 MB record 20,000 times
    # (60 bytes an entry), which is 200 GB to read for a file of 11 MB.
    computed: dict[tuple[int, int, int], int | str] = {}
    # A name listed twice (two copies of a storage record, which may differ) was said as one member: a mismatch of
    # either copy read "archive/data/0" alike, and nothing said the record was there twice.
    copies = collections.Counter(member.name for member in layout.members)
    seen: collections.Counter[str] = collections.Counter()
    for member in layout.members:
        seen[member.name] += 1
        shown = member.name if copies[member.name] == 1 else \
            f"{member.name} (copy {seen[member.name]:,} of {copies[member.name]:,})"
        key = (member.data_offset, member.compressed_size, member.method)
        if key not in computed:
            crc = 0
            try:
                for chunk in iter_member_chunks(handle, member):
                    crc = zlib.crc32(chunk, crc)
                computed[key] = crc
            except ValueError as exc:
                computed[key] = str(exc)
        result = computed[key]
        if isinstance(result, str):
            unreadable.append(f"{shown}: {result}")
            continue
        crc = result
        if crc != member.crc:
            mismatches.append(CrcMismatch(shown, f"{member.crc:08x}", f"{crc:08x}"))
    return CrcReport(checked=len(layout.members) - len(unreadable), mismatches=mismatches, unreadable=unreadable,
                     repeated=[(name, count) for name, count in copies.items() if count > 1])
