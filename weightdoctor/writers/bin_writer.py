"""A streaming writer of torch zip checkpoints (`pytorch_model.bin`), one tensor in memory at a time.

`torch.save` pickles the state dict and then writes each storage as a record of its zip archive. This
writer produces the same archive from names, dtypes and shapes alone: it pickles the same
`_rebuild_tensor_v2`/`_v3` calls and storage references as `torch.save` does, then writes the storage
records one at a time through torch's own `PyTorchFileWriter` (which lays the records out and aligns
them; the CRCs and the serialization id are filled in at the end, from hashes computed in a second
thread). For the same tensors, the file is byte for byte what `torch.save` writes to a file object.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightdoctor.dtypes import torch_dtype
from weightdoctor.wording import counted, plural
from weightdoctor.writers.safetensors_writer import TensorSlot, hash_pool, tensor_bytes

if TYPE_CHECKING:
    import torch

# torch.serialization.DEFAULT_PROTOCOL
PICKLE_PROTOCOL = 2


@dataclass(frozen=True)
class BinSlot(TensorSlot):
    """A tensor to store; `alias_of` names an earlier slot whose storage it shares (a tied weight)."""

    alias_of: str | None = None


class _StorageRef:
    def __init__(self, key: str, storage_type: Any, numel: int) -> None:
        self.key, self.storage_type, self.numel = key, storage_type, numel


class _Rebuild:
    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _StorageRef):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def _contiguous_stride(shape: tuple[int, ...]) -> tuple[int, ...]:
    stride, acc = [], 1
    for dim in reversed(shape):
        stride.append(acc)
        acc *= max(dim, 1)
    return tuple(reversed(stride))


def _storage_type_name(dtype: torch.dtype) -> str:
    """`FloatStorage` for float32 and so on: the legacy storage class torch.save names for a dtype."""
    import torch

    return torch.storage._dtype_to_storage_type_map()[dtype]


def pickle_state_dict(slots: list[BinSlot]) -> tuple[bytes, dict[str, str]]:
    """The `data.pkl` record torch.save would write for these tensors, and name -> storage key."""
    import torch

    storages: dict[str, _StorageRef] = {}
    keys: dict[str, str] = {}
    entries: dict[str, _Rebuild] = {}
    for slot in slots:
        dtype = torch_dtype(slot.dtype)
        if slot.alias_of is not None:
            # The same object, as when torch.save meets one tensor under two names.
            keys[slot.name] = keys[slot.alias_of]
            entries[slot.name] = entries[slot.alias_of]
            continue
        else:
            keys[slot.name] = str(len(storages))
        key = keys[slot.name]
        if dtype in torch.storage._new_dtypes():
            ref = storages.setdefault(key, _StorageRef(key, torch.UntypedStorage, slot.nbytes))
            args: tuple[Any, ...] = (ref, 0, slot.shape, _contiguous_stride(slot.shape), False,
                                     collections.OrderedDict(), dtype)
            func = torch._utils._rebuild_tensor_v3
        else:
            element = torch.empty((), dtype=dtype).element_size()
            storage_type = getattr(torch, _storage_type_name(dtype))
            ref = storages.setdefault(key, _StorageRef(key, storage_type, slot.nbytes // element))
            args = (ref, 0, slot.shape, _contiguous_stride(slot.shape), False, collections.OrderedDict())
            func = torch._utils._rebuild_tensor_v2
        entries[slot.name] = _Rebuild(func, args)
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=PICKLE_PROTOCOL).dump(entries)
    return buffer.getvalue(), keys


def _sha256_and_crc(data: memoryview) -> tuple[str, int]:
    return hashlib.sha256(data).hexdigest(), zlib.crc32(data)


def write_crcs(path: str | Path, crcs: dict[str, int]) -> None:
    """Fill in the CRC-32 of every record of a torch zip written with `compute_crc32=False`.

    torch's writer puts each record's CRC in a data descriptor after its bytes and in the central
    directory; both are patched in place. `crcs` is keyed by record name without the archive folder;
    records not in it (torch's own trailing `version` and `serialization_id`) are read and computed here.

    Raises:
        ValueError: the archive is not laid out as torch writes it.
    """
    with open(path, "r+b") as handle, zipfile.ZipFile(handle) as archive:
        infos = archive.infolist()
        start_dir = archive.start_dir  # type: ignore[attr-defined]
        central = start_dir
        for info in infos:
            handle.seek(info.header_offset)
            local = handle.read(30)
            if local[:4] != b"PK\x03\x04":
                raise ValueError(f"bad local header for {info.filename}")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            data_at = info.header_offset + 30 + name_len + extra_len
            record = info.filename.split("/", 1)[1] if "/" in info.filename else info.filename
            crc = crcs.get(record)
            if crc is None:
                handle.seek(data_at)
                crc = zlib.crc32(handle.read(info.file_size))
            if info.flag_bits & 0x08:
                handle.seek(data_at + info.compress_size)
                descriptor = handle.read(4)
                handle.seek(data_at + info.compress_size + (4 if descriptor == b"PK\x07\x08" else 0))
                handle.write(struct.pack("<I", crc))
            else:
                handle.seek(info.header_offset + 14)
                handle.write(struct.pack("<I", crc))
            handle.seek(central)
            entry = handle.read(46)
            if entry[:4] != b"PK\x01\x02":
                raise ValueError(f"bad central directory entry for {info.filename}")
            handle.seek(central + 16)
            handle.write(struct.pack("<I", crc))
            n, m, k = struct.unpack("<HHH", entry[28:34])
            central += 46 + n + m + k


def write_serialization_id(path: str | Path) -> None:
    """Put the `.data/serialization_id` torch.save would write into a torch zip whose CRCs are right.

    torch derives the id from the CRCs its zip writer computed; with `compute_crc32=False` (the CRCs
    being computed here instead, see `write_crcs`) it derives it from zeros. The id is recomputed from
    the archive as written (`bin_copy.serialization_id`) and written over the old one, same length.

    Raises:
        ValueError: the archive does not end with a 40-byte serialization id, as torch writes it.
    """
    from weightdoctor.writers.bin_copy import serialization_id

    with open(path, "r+b") as handle, zipfile.ZipFile(handle) as archive:
        infos = archive.infolist()
        last = infos[-1] if infos else None
        if last is None or not last.filename.endswith("/.data/serialization_id") or last.file_size != 40:
            raise ValueError("the archive does not end with a serialization id")
        records = []
        for info in infos[:-1]:
            with archive.open(info) as member:
                records.append((info.filename.split("/", 1)[1], info.CRC, member.read(8)))
        ident = serialization_id(records)
        handle.seek(last.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", handle.read(4))
        handle.seek(last.header_offset + 30 + name_len + extra_len)
        handle.write(ident)
        crcs = {info.filename.split("/", 1)[1]: info.CRC for info in infos[:-1]}
    crcs[".data/serialization_id"] = zlib.crc32(ident)
    write_crcs(path, crcs)


class BinWriter:
    """Write a torch zip checkpoint tensor by tensor, in the order `self.order` gives (aliases skipped).

    Example:
        >>> with BinWriter(path, slots) as writer:  # doctest: +SKIP
        ...     for slot in writer.order:
        ...         writer.write(slot.name, load(slot.name))
    """

    def __init__(self, path: Path, slots: list[BinSlot]) -> None:
        import torch
        from torch.serialization import _get_storage_alignment, get_crc32_options

        self.path = path
        self.slots = slots
        self.order = [s for s in slots if s.alias_of is None]
        self.digests: dict[str, str] = {}
        data_pkl, self.keys = pickle_state_dict(slots)
        self._handle = open(path, "xb")  # noqa: SIM115 - closed in close()
        # torch's own CRC32 runs at a few hundred MB/s; zlib's is several times faster. The CRCs are
        # computed here (in the hashing thread) and written into the archive by `close`.
        self._compute_crc = get_crc32_options()
        self._zip = torch._C.PyTorchFileWriter(self._handle, False, _get_storage_alignment())
        self.crcs: dict[str, int] = {}
        alignment = str(_get_storage_alignment())
        for record, value in (("data.pkl", data_pkl), (".format_version", b"1"),
                              (".storage_alignment", alignment.encode()), ("byteorder", b"little")):
            self._zip.write_record(record, value, len(value))
            self.crcs[record] = zlib.crc32(value)
        self._next = 0
        from weightdoctor.writers import hooks

        hooks.reached("after-header")

    def write(self, name: str, tensor: torch.Tensor) -> str:
        """Append one tensor's storage record; it must be the next one in `self.order`."""
        slot = self.order[self._next]
        if name != slot.name:
            raise ValueError(f"expected tensor {slot.name!r} next, got {name!r}")
        if str(tensor.dtype).removeprefix("torch.") != slot.dtype or tuple(tensor.shape) != slot.shape:
            raise ValueError(
                f"tensor {name!r} is {tensor.dtype}{list(tensor.shape)}, expected {slot.dtype}{slot.shape}"
            )
        flat = tensor.detach().contiguous()
        if flat.storage_offset() != 0 or flat.untyped_storage().nbytes() != slot.nbytes:
            flat = flat.clone()  # a view into a larger storage: store only its own elements
        data = tensor_bytes(flat)
        if len(data) != slot.nbytes:
            raise ValueError(f"tensor {name!r} has {counted(len(data), 'byte', grouped=False)}, expected {slot.nbytes}")
        record = f"data/{self.keys[name]}"
        future = hash_pool().submit(_sha256_and_crc, data)
        if len(data):
            # Written straight from the tensor's storage, with no copy into Python bytes.
            self._zip.write_record(record, flat.untyped_storage(), len(data))
        else:
            self._zip.write_record(record, b"", 0)
        digest, self.crcs[record] = future.result()
        self.digests[name] = digest
        for alias in self.slots:
            if alias.alias_of == name:
                self.digests[alias.name] = digest
        self._next += 1
        return digest

    def abandon(self) -> None:
        """Close after a failure (the caller removes the partial file).

        torch's writer must be finalized while its file is still open: left unfinalized, its C++
        destructor writes the end of the archive to the closed file at garbage collection, and the
        process aborts (std::terminate). `write_end_of_file` marks it finalized even when it raises.
        """
        if self._handle.closed:
            return
        try:
            self._zip.write_end_of_file()
        except Exception:  # noqa: BLE001, S110 - the file is being discarded; the first error is the one to report
            pass
        finally:
            self._handle.close()

    def close(self) -> None:
        if self._handle.closed:
            return
        if self._next != len(self.order):
            self.abandon()
            raise ValueError(f"only {self._next} of {counted(len(self.order), 'tensor', grouped=False)} "
                             f"{plural(self._next, 'was', 'were')} written to {self.path}")
        try:
            self._zip.write_end_of_file()
            self._handle.flush()
            if self._compute_crc:
                write_crcs(self._handle.name, self.crcs)
                write_serialization_id(self._handle.name)
        finally:
            self._handle.close()

    def __enter__(self) -> BinWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()
