"""The shared checkpoint reader: `open_checkpoint(source)` for files, folders, indexes and repo ids."""

from __future__ import annotations

import errno
import heapq
import itertools
import os
import posixpath
import re
import stat
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightdoctor.checkpoint import safetensors_format
from weightdoctor.checkpoint.hub import (
    MAX_REF_BYTES,
    HubLocation,
    RemoteStructure,
    broken_cache_entry,
    cache_folder_snapshot,
    cached_snapshot,
    cached_typed_snapshot,
    check_revision,
    close_local_paths,
    download_command,
    download_file,
    holds_weights,
    hub_file,
    hub_location,
    hub_reachable,
    hub_unavailable,
    index_shards,
    link_out_of_cache,
    linked_snapshot_note,
    looks_like_repo_id,
    normalize_revision,
    offline_download_caveat,
    remote_structure,
    repo_cached,
    resolve_repo_id,
    snapshot_commit,
    split_repo_subfolder,
    url_source_hint,
    written_beside,
)
from weightdoctor.checkpoint.model import CheckpointFile, TensorInfo, unique_tensors
from weightdoctor.checkpoint.model_parts import folder_message as model_parts_message
from weightdoctor.checkpoint.model_parts import (
    fsdp_shards_message,
    fsdp_shards_of_one_model,
    parts_of_one_model,
    sharded_parts_of_one_model,
)
from weightdoctor.checkpoint.model_parts import part_warning as model_part_warning
from weightdoctor.checkpoint.model_parts import sharded_folder_message as sharded_parts_message
from weightdoctor.checkpoint.remote import remote_tensors
from weightdoctor.errors import (
    CorruptCheckpoint,
    InvalidIndex,
    SourceNotFound,
    UnsafePickle,
    UnsupportedFormat,
    UsageError,
    WeightDoctorError,
    clip_middle,
)
from weightdoctor.jsontext import MAX_DEPTH, MAX_JSON_ENTRIES, TooManyEntries, parse_json
from weightdoctor.paths import (
    entries_under,
    expand_user,
    fresh_sibling,
    shell_word,
    too_long,
    unicode_form_hint,
    variable_hint,
)
from weightdoctor.paths import exists as path_exists
from weightdoctor.wording import counted, plural

if TYPE_CHECKING:
    import torch

    from weightdoctor.checkpoint import gguf_format, pytorch_format
    from weightdoctor.security import ScanReport

SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_INDEX = "pytorch_model.bin.index.json"
# Preferred weight files of a model folder, in transformers' order of preference.
PREFERRED_FILES = ("model.safetensors", SAFETENSORS_INDEX, "pytorch_model.bin", PYTORCH_INDEX)
# The longest tensor name read. Real names are under 200 characters; a safetensors header (up to 100 MB) can hold
# a 40 MB one, which `inspect` took minutes to lay out in its table (linear, but 800,000 wrapped lines).
MAX_NAME_CHARS = 1 << 20

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# The largest index or config JSON read, as the safetensors header limit: an index of 100,000 tensors is 10 MB. Read
# whole and parsed, a sparse file of 20 GB (a few bytes on disk) took twice its size in memory before failing.
MAX_JSON_BYTES = 100_000_000


@dataclass
class Checkpoint:
    """An opened checkpoint: its files and tensors described, values loaded on demand.

    Attributes:
        source: the source as the user gave it.
        path: the resolved local path (a file, or the folder of a sharded or directory source).
        format: "safetensors", "pytorch-zip", "pytorch-legacy", "pickle" (pickle.dump's), "gguf" (llama.cpp's),
            or "config-only";
            `sharded` tells whether an index ties several files together.
        files: every file that was read (weights, index, config).
        tensors: every tensor, in file order.
        config: the parsed `config.json`, when there is one.
        metadata: safetensors `__metadata__` (of the first file that has one).
        nested_key: where a training checkpoint keeps its state dict (None at the top level).
        other_entries: a training checkpoint's other entries (top level, and beside the state dict on its
            path), described.
        non_tensor_keys: the string keys of the state dict's entries that are not tensors, described
            (`skipped_entries` says them in words); from_pretrained reads them as keys.
        repo_id / revision: set when the source was a Hub repo id.
        warnings: things the reader noticed that do not stop it (index/shard disagreements, ...).
        security: the static pickle scan of every weight file, merged (verdict "safe" for safetensors;
            a checkpoint whose scan is not safe never opens: `UnsafePickle` is raised instead). For
            safetensors files alone it is built when first read, so that commands that never look at it
            do not import the pickle scanner.
    """

    source: str
    path: Path
    format: str
    sharded: bool
    files: list[CheckpointFile]
    tensors: list[TensorInfo]
    config: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    nested_key: str | None = None
    other_entries: list[str] = field(default_factory=list)
    skipped_entries: list[str] = field(default_factory=list)
    non_tensor_keys: dict[str, str] = field(default_factory=dict)
    repo_id: str | None = None
    revision: str | None = None
    warnings: list[str] = field(default_factory=list)
    # What only a command reading tensor values needs told (inspect --stats, check-dtype): a GGUF's quantized tensors,
    # whose values are not read. Structure-only inspect shows it as information, not as a warning: most GGUF files
    # are quantized, and the structure it reports of them is whole.
    value_warnings: list[str] = field(default_factory=list)
    security: ScanReport | None = field(default_factory=lambda: None)  # no class attribute: see __getattr__
    # Safetensors files whose (trivial) scan report is built on first access to `security`.
    _safetensors_only: list[str] | None = field(default=None, repr=False)
    _headers: dict[str, safetensors_format.SafetensorsHeader] = field(default_factory=dict, repr=False)
    _pickles: dict[str, pytorch_format.PickleContents] = field(default_factory=dict, repr=False)
    # GGUF files (llama.cpp): their parsed headers.
    _ggufs: dict[str, gguf_format.GgufHeader] = field(default_factory=dict, repr=False)
    # Pickle files whose views were checked against their storages (`refuse_amplified_views`), before a first read.
    _views_checked: set[str] = field(default_factory=set, repr=False)
    _by_name: dict[str, TensorInfo] = field(default_factory=dict, repr=False)
    # Set when the structure came from the Hub's headers: files are downloaded on first load_tensor.
    _remote: RemoteStructure | None = field(default=None, repr=False)
    _validated: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        # A comprehension: on Python 3.11 its specialised attribute reads of the slots beat attrgetter in C.
        self._by_name = {info.name: info for info in self.tensors}
        if self.security is None and self._safetensors_only is not None:
            del self.security  # built by __getattr__ when first read

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes an instance lacks: `security` before its first use.
        if name == "security" and self.__dict__.get("_safetensors_only") is not None:
            from weightdoctor.security import merge_reports, safetensors_report

            self.security = merge_reports([safetensors_report([relpath]) for relpath in self._safetensors_only])
            return self.security
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def location(self) -> str:
        """Where the checkpoint is: a local path, or the Hub URL when only its headers were read."""
        if self._remote is not None:
            return f"https://huggingface.co/{self._remote.repo_id} (headers read remotely)"
        return str(self.path)

    @property
    def num_params(self) -> int:
        """Parameters, counting a tensor saved under several names (tied weights) once, as safetensors stores it."""
        return sum(t.num_params for t in unique_tensors(self.tensors))

    @property
    def total_bytes(self) -> int:
        """Bytes of tensor data, counting a tensor saved under several names (tied weights) once.

        Different views of one storage (the q, k and v slices of a fused matrix) each count: loaded, or
        converted to safetensors, each is a tensor of its own.
        """
        return sum(t.nbytes for t in unique_tensors(self.tensors))

    @property
    def weight_files(self) -> list[CheckpointFile]:
        return [f for f in self.files if f.role == "weights"]

    def shared_groups(self) -> list[list[str]]:
        """Names of tensors that share storage, one list per storage (only groups of two or more).

        Tied weights, and also views of one storage (slices of a fused matrix): see `alias_groups`.
        """
        groups: dict[str, list[str]] = {}
        for info in self.tensors:
            if info.storage_id is not None:
                groups.setdefault(info.storage_id, []).append(info.name)
        return [names for names in groups.values() if len(names) > 1]

    def alias_groups(self) -> list[list[str]]:
        """Names that are one tensor (tied weights: same storage, offset, shape, strides), groups of two or more."""
        groups: dict[str, list[str]] = {}
        for info in self.tensors:
            if info.view_id is not None:
                groups.setdefault(info.view_id, []).append(info.name)
        return [names for names in groups.values() if len(names) > 1]

    def tensor_info(self, name: str) -> TensorInfo:
        try:
            return self._by_name[name]
        except KeyError:
            raise WeightDoctorError(f"no tensor named {name!r}", path=str(self.path)) from None

    def file_path(self, relpath: str) -> Path:
        for item in self.files:
            if item.relpath == relpath:
                return item.path
        raise KeyError(relpath)

    def raw_tensor_bytes(self, name: str) -> bytearray:
        """One tensor's bytes as its safetensors file stores them, for a dtype no torch dtype holds (six-bit floats:
        only safetensors names them).

        Raises:
            UnsupportedFormat: the tensor is not in a safetensors file.
        """
        info = self.tensor_info(name)
        if self._remote is not None and info.file not in self._headers:
            self._download(info.file)
        header = self.safetensors_header(info.file)
        if header is None:
            raise UnsupportedFormat(f"tensor {name!r} is not in a safetensors file: its raw bytes are not read",
                                    path=str(self.file_path(info.file)))
        try:
            return safetensors_format.read_tensor_bytes(self.file_path(info.file), header, info)
        except WeightDoctorError as exc:
            exc.path = exc.path or str(self.file_path(info.file))
            raise

    def load_tensor(self, name: str) -> torch.Tensor:
        """Load one tensor's values (a CPU torch tensor). Only this tensor is read from disk."""
        info = self.tensor_info(name)
        if self._remote is not None and info.file not in self._headers:
            self._download(info.file)
        header = self.safetensors_header(info.file)
        if header is not None:
            try:
                return safetensors_format.read_tensor(self.file_path(info.file), header, info)
            except WeightDoctorError as exc:
                exc.path = exc.path or str(self.file_path(info.file))
                raise
        gguf = self._ggufs.get(info.file)
        if gguf is not None:
            from weightdoctor.checkpoint import gguf_format

            if gguf_format.is_unread_dtype(info.dtype):
                raise UnsupportedFormat(gguf_format.not_read_message(name, info.dtype),
                                        path=str(self.file_path(info.file)))
            try:
                if gguf_format.is_dequantized_dtype(info.dtype):  # blocks decoded to float32, as ggml does
                    from weightdoctor.checkpoint import gguf_quants

                    return gguf_quants.read_dequantized(self.file_path(info.file), gguf.data_start, info,
                                                        info.dtype, gguf.identity)
                # plain values, stored in C order under the reversed (PyTorch) shape: read as safetensors' are
                return safetensors_format.read_tensor(self.file_path(info.file), gguf, info)  # type: ignore[arg-type]
            except WeightDoctorError as exc:
                exc.path = exc.path or str(self.file_path(info.file))
                raise
        from weightdoctor.checkpoint import pytorch_format
        from weightdoctor.checkpoint.pickle_static import StaticTensor

        try:
            self._check_views(info.file)
            contents = self._pickles[info.file]
            value = contents.state_dict[name]
            # A torch zip's tensor views a map of the file: whoever reads it reads it whole (and most make a copy).
            # A legacy file's (or a plain pickle's) values are in memory already, torch.load read them all (refused
            # before where the file is larger than the memory available): asking that memory again refused a
            # tensor that was there (check-dtype of a 6 GB legacy .pt on a machine of 10 GB).
            in_memory = (contents.security is not None and contents.security.container != "pytorch-zip"
                         and not isinstance(value, StaticTensor))
            # A meta tensor or an expanded view is refused first, for what it is: its size is not memory the
            # file's values need (a 1 KB file of torch.ones(1).expand(10**11) said "400 GB, more than available").
            pytorch_format.refuse_unreadable(value, name)
            self._check_still_mapped(info.file)
            if isinstance(value, StaticTensor) and value.span_bytes() == info.nbytes:
                # Read into memory of its own, not viewed through the file's map: a file cut short while a caller
                # read the view raised SIGBUS (`StaticTensor.read_whole`). Callers that tell tied names apart use
                # their `view_id`s (`alias_groups`, rewrite's `_identical_sets`), not the addresses of what is read.
                safetensors_format.require_memory_for(self.file_path(info.file), info, info.nbytes)
                return value.read_whole()
            if isinstance(value, StaticTensor):
                # A view across more of its storage than its own bytes (a slice of columns): read a slab at a time
                # into memory of its own, as above (redteam39: its map's span raised SIGBUS where the file was cut
                # short while a caller read it). Its values and one slab's buffer, not the span.
                safetensors_format.require_memory_for(self.file_path(info.file), info,
                                                      info.nbytes + value.slice_buffer_bytes())
                return value.read_slices()
            if not in_memory:
                # torch.load(mmap=True) mapped the whole file privately; the torch-free reader does on first use.
                mapped = (contents.security is not None and contents.security.container == "pytorch-zip"
                          and (not isinstance(value, StaticTensor) or value.storage.archive.mapped_whole))
                safetensors_format.require_memory_for(self.file_path(info.file), info, info.nbytes, mapped=mapped)
                if not mapped and isinstance(value, StaticTensor) and value.span_bytes() > info.nbytes:
                    # Mapped from its first element to its last where the whole file is not mapped already.
                    safetensors_format.require_map_room(self.file_path(info.file), name, info.nbytes,
                                                        value.span_bytes())
            return pytorch_format.as_tensor(value, name)
        except WeightDoctorError as exc:
            exc.path = exc.path or str(self.file_path(info.file))
            raise

    def torch_ao_quantized(self, name: str) -> str | None:
        """'qint8 per_channel_affine' for a torch.ao.quantization quantized tensor of a pickle (listed as the
        integers it stores: `pytorch_format.tensor_infos`), None for any other tensor."""
        info = self.tensor_info(name)
        contents = self._pickles.get(info.file)
        if contents is None:
            return None
        from weightdoctor.checkpoint import pytorch_format

        return pytorch_format.quantized_scheme(contents.state_dict.get(name))

    def load_dequantized(self, name: str) -> torch.Tensor:
        """A torch.ao.quantization quantized tensor's values as torch's .dequantize() gives them (float32: its
        integers less the zero point, times the scale, per tensor or per channel as its qscheme says): the scale(s)
        and zero point(s) travel inside the pickled tensor, so what the stored integers stand for is known.

        Raises:
            UnsupportedFormat: the tensor is no such quantized tensor.
        """
        info = self.tensor_info(name)
        if self.torch_ao_quantized(name) is None:
            raise UnsupportedFormat(f"tensor {name!r} is no torch.ao.quantization quantized tensor",
                                    path=str(self.file_path(info.file)))
        self._check_views(info.file)
        value = self._pickles[info.file].state_dict[name]
        # The float32 copy is four times the int8 values held: asked of the memory left, as any tensor read is.
        safetensors_format.require_memory_for(self.file_path(info.file), info, info.num_params * 4)
        return value.dequantize()

    def load_values(self, name: str, indices: torch.Tensor) -> torch.Tensor:
        """The values at `indices` (positions in the flattened tensor, C order) of one tensor, as a 1-D CPU tensor,
        reading only those where the format allows: a safetensors file one read per distinct position, a torch
        zip's tensor through its memory map (only their pages are touched). The memory they take is that of the
        values alone: nothing is refused for the tensor's size (`load_tensor` refuses a tensor larger than the
        memory available). Other formats hold their values in memory already (torch.load read them whole)."""
        import torch

        info = self.tensor_info(name)
        if self._remote is not None and info.file not in self._headers:
            self._download(info.file)
        header = self.safetensors_header(info.file)
        dtype = getattr(torch, info.dtype, None)
        found = self.byte_range(name) if info.num_params and info.dtype != "float4_e2m1fn_x2" else None
        if found is not None and dtype is not None:
            # A torch zip's too (its records' file): one replaced since was read at the old file's offsets.
            identity = header.identity if header is not None else self.structure_identity(info.file)
            # A torch zip has no header: "the file changed since its header was read" puzzled its reader.
            structure = "its header" if header is not None or info.file in self._ggufs else "its zip records"
            return safetensors_format.read_values_at(found[0], found[1], dtype, name, indices, identity, structure)
        if header is not None:
            return self.load_tensor(name).reshape(-1)[indices]
        if (read := self.element_reader(name)) is not None:
            # A strided view of a torch zip read without torch: its elements read from the file by position
            # (redteam39: check-dtype --sample indexed the map of its span, SIGBUS where the file was cut short
            # meanwhile, and refused under a data limit the span's map).
            return read(indices).reshape(-1)
        tensor = self.pickled_tensor(name)
        if tensor.dim() <= 1:
            return tensor.reshape(-1)[indices]
        # Indexing the strided view itself: reshape(-1) of a view that is not contiguous copies all of it.
        return tensor[unravel_positions(indices, tuple(tensor.shape))]

    def pickled_tensor(self, name: str) -> torch.Tensor:
        """A pickle's tensor as the reader holds it: a view of a torch zip's memory map (nothing read until used) or
        the values torch.load read. Not refused for its size, as `load_tensor` refuses one: for a caller that reads
        only part of it (a sample). Only for a tensor of a pickle-based file."""
        info = self.tensor_info(name)
        from weightdoctor.checkpoint import pytorch_format
        from weightdoctor.checkpoint.pickle_static import StaticTensor

        try:
            self._check_views(info.file)
            value = self._pickles[info.file].state_dict[name]
            if (isinstance(value, StaticTensor) and not value.storage.archive.mapped_whole
                    and value.span_bytes() > info.nbytes):
                # Its sample is read through the map of its span, as `load_tensor` reads it (and refuses it): past a
                # limit it failed as "cannot read or write: [Errno 12] Cannot allocate memory", of no tensor.
                safetensors_format.require_map_room(self.file_path(info.file), name, info.nbytes, value.span_bytes())
            self._check_still_mapped(info.file)
            return pytorch_format.as_tensor(value, name)
        except WeightDoctorError as exc:
            exc.path = exc.path or str(self.file_path(info.file))
            raise

    def element_reader(self, name: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """For a tensor of a torch zip read without torch: a function that reads the elements at C-order positions
        with plain file reads (`StaticTensor.gather`), whatever its layout; for a quantized GGUF tensor of a type
        decoded (`gguf_format.DEQUANTIZED_TYPES`), one that reads and dequantizes the blocks holding them; None for
        any other tensor. For a caller that samples a strided view, which indexing its map left to SIGBUS where the
        file was cut short meanwhile, or a quantized tensor, which has no run of plain values."""
        info = self.tensor_info(name)
        gguf = self._ggufs.get(info.file)
        if gguf is not None and info.data_offsets is not None and _dequantized(info.dtype):
            # A quantized GGUF tensor: only the blocks holding the positions are read and decoded.
            from weightdoctor.checkpoint import gguf_quants

            gguf_path = self.file_path(info.file)

            def dequantized(positions: torch.Tensor) -> torch.Tensor:
                try:
                    return gguf_quants.values_at(gguf_path, gguf.data_start, info, info.dtype, positions,
                                                 gguf.identity)
                except WeightDoctorError as exc:
                    exc.path = exc.path or str(gguf_path)
                    raise

            return dequantized
        contents = self._pickles.get(info.file)
        from weightdoctor.checkpoint.pickle_static import StaticTensor

        value = contents.state_dict.get(name) if contents is not None else None
        if not isinstance(value, StaticTensor):
            return None
        path = str(self.file_path(info.file))
        try:
            self._check_views(info.file)  # what any read of it refuses first (overlapping views, ...)
        except WeightDoctorError as exc:
            exc.path = exc.path or path
            raise

        def read(positions: torch.Tensor) -> torch.Tensor:
            try:
                return value.gather(positions)
            except WeightDoctorError as exc:
                exc.path = exc.path or path
                raise

        return read

    def check_readable(self, name: str) -> None:
        """Every check `load_tensor` makes before it reads a tensor, without reading it (nor downloading it): for a
        caller that knows the tensor's counts from its dtype (check-dtype's exact casts), so that a file a read
        refuses (safetensors' own validation; a pickle's overlapping views, expanded view or meta tensor) is
        refused all the same rather than judged from its header.

        Raises:
            WeightDoctorError: as `load_tensor` would, naming the file.
        """
        info = self.tensor_info(name)
        if self._remote is not None and info.file not in self._headers:
            return  # a Hub file not downloaded: its header was parsed and checked where it was fetched
        if self.safetensors_header(info.file) is not None:
            return
        if info.file in self._ggufs:
            from weightdoctor.checkpoint import gguf_format

            if gguf_format.is_unread_dtype(info.dtype):
                raise UnsupportedFormat(gguf_format.not_read_message(name, info.dtype),
                                        path=str(self.file_path(info.file)))
            return
        from weightdoctor.checkpoint import pytorch_format

        try:
            self._check_views(info.file)
            pytorch_format.refuse_unreadable(self._pickles[info.file].state_dict[name], name)
        except WeightDoctorError as exc:
            exc.path = exc.path or str(self.file_path(info.file))
            raise

    def byte_range(self, name: str) -> tuple[Path, int, int] | None:
        """Where a tensor's bytes lie, when they are one run of its file stored as they are (safetensors;
        contiguous tensors of a regular torch zip checkpoint): `(path, offset, length)`, else None.

        A safetensors file is validated by the library first, as before any value is read.
        """
        info = self.tensor_info(name)
        if self._remote is not None and info.file not in self._headers:
            self._download(info.file)
        header = self.safetensors_header(info.file)
        if header is not None:
            if info.data_offsets is None:
                return None
            begin, end = info.data_offsets
            return self.file_path(info.file), header.data_start + begin, end - begin
        gguf = self._ggufs.get(info.file)
        if gguf is not None:
            from weightdoctor.checkpoint import gguf_format

            if info.data_offsets is None or gguf_format.is_quantized_dtype(info.dtype):
                return None  # blocks of scales and packed values: no run of plain values
            begin, end = info.data_offsets
            return self.file_path(info.file), gguf.data_start + begin, end - begin
        contents = self._pickles.get(info.file)
        if contents is None:
            return None
        self._check_views(info.file)
        from weightdoctor.checkpoint import pytorch_format

        found = pytorch_format.byte_range(contents.state_dict.get(name))
        return (self.file_path(info.file), *found) if found is not None else None

    def structure_identity(self, relpath: str) -> tuple[int, int, int, int] | None:
        """(st_dev, st_ino, st_size, st_mtime_ns) of a weight file when its structure was read, where it was read
        in place (a safetensors header, a torch zip read without torch); None otherwise. A byte copy checks the file
        it copies from against it."""
        header = self._headers.get(relpath) or self._ggufs.get(relpath)
        if header is not None:
            return header.identity
        contents = self._pickles.get(relpath)
        from weightdoctor.checkpoint.pickle_static import StaticTensor

        for value in (contents.state_dict.values() if contents is not None else ()):
            if isinstance(value, StaticTensor):
                return value.storage.archive.identity
        # A torch zip torch.load(mmap=True) read: its tensors view the map it made of the file.
        return contents.mapped_identity if contents is not None else None

    def _check_still_mapped(self, relpath: str) -> None:
        """Before a value of a torch zip that torch.load(mmap=True) read is handed out: the file must still be the
        one it mapped. Its tensors view that map, and a file cut short since (between two tensors of a convert, of
        --stats) raised SIGBUS on the first page past the new end: exit 135, no message, a temporary output left.

        Raises:
            CorruptCheckpoint: the file is shorter now, or was replaced or rewritten since it was mapped.
        """
        contents = self._pickles.get(relpath)
        identity = contents.mapped_identity if contents is not None else None
        if identity is None:
            return
        path, now = self._stat_again(relpath)
        if (now.st_dev, now.st_ino) == identity[:2] and now.st_size < identity[2]:
            raise CorruptCheckpoint(
                f"file ended at byte {now.st_size:,} where it held {identity[2]:,} when it was read: truncated or "
                "changed while reading", path=str(path))
        if (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) != identity:
            raise CorruptCheckpoint("the file changed since its records were read (replaced, or its size or "
                                    "modification time changed); nothing more is read from it", path=str(path))

    def _stat_again(self, relpath: str) -> tuple[Path, os.stat_result]:
        """A weight file's path and its `os.stat` now, to compare with what it was when read.

        Raises:
            CorruptCheckpoint: the file cannot be stat'ed any more (removed, its folder unreadable).
        """
        path = self.file_path(relpath)
        try:
            return path, os.stat(path)
        except OSError as exc:
            raise CorruptCheckpoint(f"the file cannot be looked at any more ({exc.strerror})", path=str(path)) from exc

    def check_unchanged(self, relpath: str) -> None:
        """Refuse a weight file that is no longer the one whose structure was read: a convert that cast the tensors of
        a torch zip checkpoint rewritten in place while it was read (its values come from a private map, whose pages
        not yet read show the file's new bytes) wrote a mix of old and new values, said verified.

        Checked after the values were read (a change while one was read counts too); nothing where the structure
        was not read in place (`structure_identity` None).

        Raises:
            CorruptCheckpoint: its device, inode, size or modification time differ from when it was read.
        """
        identity = self.structure_identity(relpath)
        if identity is None:
            return
        path, now = self._stat_again(relpath)
        if (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) != identity:
            raise CorruptCheckpoint("the file changed while its tensors were read (replaced, or its size or "
                                    "modification time changed): what was read could mix old and new contents",
                                    path=str(path))

    def refuse_unreadable(self, name: str) -> None:
        """Raise what `load_tensor` raises for a pickled tensor that has no values to read (a meta tensor, a view
        whose strides repeat far more values than its storage holds), without reading it: a writer says so before
        it plans the output's size (a 1 KB file of an expanded view is not 400 GB to write). Nothing for
        safetensors files, whose tensors are their bytes.

        Raises:
            CorruptCheckpoint: as `load_tensor`, naming the file.
        """
        info = self.tensor_info(name)
        # The dict test first: a writer (and --dry-run) asks this of every tensor, and the header lookup cost
        # 0.25 s over a 10,000-key safetensors file, whose tensors it never refuses.
        if info.file not in self._pickles or self.safetensors_header(info.file) is not None:
            return
        from weightdoctor.checkpoint import pytorch_format

        self._check_views(info.file)
        try:
            pytorch_format.refuse_unreadable(self._pickles[info.file].state_dict[name], name)
        except WeightDoctorError as exc:
            exc.path = exc.path or str(self.file_path(info.file))
            raise

    def _check_views(self, relpath: str) -> None:
        """Before a pickle's first value is read (or copied): its views may not claim far more than its storages
        (`pytorch_format.refuse_amplified_views`); once per file."""
        if relpath in self._views_checked:
            return
        from weightdoctor.checkpoint import pytorch_format

        try:
            pytorch_format.refuse_amplified_views(self._pickles[relpath].state_dict)
        except WeightDoctorError as exc:
            exc.path = exc.path or str(self.file_path(relpath))
            raise
        self._views_checked.add(relpath)

    def safetensors_metadata(self, relpath: str) -> dict[str, str] | None:
        """The metadata of a safetensors file of this checkpoint as its header holds it (None for other files, and
        for a remote file not downloaded): each shard's own, where `metadata` is the first file's holding any."""
        header = self._headers.get(relpath)
        return header.metadata if header is not None else None

    def whole_metadata(self) -> dict[str, str] | None:
        """`metadata` with every value whole: the reader keeps a value past `MAX_METADATA_VALUE_CHARS` cut in its
        middle, and what carries the metadata into an output (convert, shard) reads the file's again here.

        Raises:
            CorruptCheckpoint: the file changed since its header was read.
        """
        for relpath, header in self._headers.items():
            if header.metadata is self.metadata and header.metadata_cut:
                path = self.file_path(relpath)
                try:
                    return safetensors_format.read_whole_metadata(path, header)
                except WeightDoctorError as exc:
                    exc.path = exc.path or str(path)
                    raise
        return self.metadata

    def gguf_headers(self) -> list[gguf_format.GgufHeader]:
        """The parsed headers of this checkpoint's GGUF files, in file order (none for other formats)."""
        return list(self._ggufs.values())

    def gguf_header(self, relpath: str) -> gguf_format.GgufHeader | None:
        """The parsed header of the GGUF file `relpath` (a weight file's `relpath`), None for another format's."""
        return self._ggufs.get(relpath)

    def safetensors_header(self, relpath: str) -> safetensors_format.SafetensorsHeader | None:
        """The parsed header of a safetensors file of this checkpoint (None for other files), validated
        by the safetensors library too before any of its values is read."""
        header = self._headers.get(relpath)
        if header is not None and relpath not in self._validated:
            path = self.file_path(relpath)
            try:
                safetensors_format.validate_with_library(path, header)
            except WeightDoctorError as exc:
                exc.path = exc.path or str(path)
                raise
            self._validated.add(relpath)
        return header

    def _download(self, relpath: str) -> None:
        assert self._remote is not None
        local = download_file(self._remote.repo_id, relpath, self._remote.revision)
        self._headers[relpath] = safetensors_format.read_header(local, relpath)
        self.files = [
            CheckpointFile(local, f.relpath, f.role, f.format, local.stat().st_size) if f.relpath == relpath else f
            for f in self.files
        ]
        # Its TE `_extra_state` byte tensors, left unchecked while only the header was known, now can be.
        refuse_pickled_extra_states(self, relpath)

    def iter_tensors(self, names: Iterable[str] | None = None) -> Iterator[tuple[TensorInfo, torch.Tensor]]:
        """Yield `(info, tensor)` one at a time, so that only one tensor is held by the reader."""
        for name in names if names is not None else (t.name for t in self.tensors):
            yield self.tensor_info(name), self.load_tensor(name)

    def close(self) -> None:
        self._pickles.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_prefix(path: Path, size: int = 16) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


def read_json(path: Path) -> Any:
    """A JSON file of a checkpoint (index, config) read within the reader's bounds: `MAX_JSON_BYTES`, `MAX_DEPTH`
    levels, `MAX_JSON_ENTRIES` values and members.

    Raises:
        CorruptCheckpoint: the file is past a bound or not valid JSON (a FIFO or device is refused unread).
    """
    require_regular_file(path)
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # opening it says what is wrong
    if size > MAX_JSON_BYTES:
        raise CorruptCheckpoint(f"is {size:,} bytes, more than any index or config holds (the limit is "
                                f"{MAX_JSON_BYTES:,}); not read", path=str(path))
    try:
        text = path.read_text(encoding="utf-8")
        if path.name != "config.json":
            return parse_json(text, max_depth=MAX_DEPTH, max_entries=MAX_JSON_ENTRIES)
        # Opening a model folder reads its config.json four or five times (transformers_weights, then the config
        # itself): a 94 MB one took inspect 41 s. The same text is parsed once; any change to the file is a miss.
        key = os.path.abspath(path)
        cached = _CONFIG_CACHE.get(key)
        if cached is not None and cached[0] == text:
            return cached[1]
        value = parse_json(text, max_depth=MAX_DEPTH, max_entries=MAX_JSON_ENTRIES)
        _CONFIG_CACHE.clear()  # the last one read only: a model folder's, or --config's
        _CONFIG_CACHE[key] = (text, value)
        return value
    except TooManyEntries as exc:
        raise CorruptCheckpoint(f"{exc}, more than any index or config holds; not read", path=str(path)) from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptCheckpoint(f"not valid JSON ({exc})", path=str(path)) from exc


# The config.json `read_json` read last: its absolute path, its text, and what that text parsed to.
_CONFIG_CACHE: dict[str, tuple[str, Any]] = {}


def require_regular_file(path: Path) -> os.stat_result | None:
    """Refuse a FIFO, device or socket before opening it: reading a FIFO waits for a writer forever.

    Returns:
        The path's `os.stat` (for a caller that needs its size too), or None where it cannot be had.
    """
    try:
        found = path.stat()
    except OSError:
        return None  # opening it fails with the message that belongs to it
    mode = found.st_mode
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else \
            "a socket" if stat.S_ISSOCK(mode) else "not a file"
        raise UnsupportedFormat(f"not a regular file ({kind}); give a checkpoint file or folder", path=str(path))
    return found


def _load_config(path: Path | None) -> tuple[dict[str, Any] | None, CheckpointFile | None]:
    if path is None or not path.exists():  # a link to nothing too: said by the caller
        return None, None
    if not path.is_file():
        # A FIFO would wait for a writer forever; a folder or device is no config either. Said, not skipped: the
        # report (plan-devices' model above all) would silently be that of a checkpoint without a config.
        kind = "a folder" if path.is_dir() else _file_kind(path)
        raise UnsupportedFormat(f"config.json is not a regular file ({kind})", str(path))
    data = read_json(path)
    if not isinstance(data, dict):
        raise CorruptCheckpoint("config.json is not a JSON object", path=str(path))
    return data, CheckpointFile(path, path.name, "config", "json", path.stat().st_size)


def _is_config(data: Any) -> bool:
    return isinstance(data, dict) and ("model_type" in data or "architectures" in data)


def _pasteable(path: Path) -> str:
    """`path` as the one word a shell reads back, for the folder a message says to point at (`root two/my model` at
    a line's end, unquoted, was two words when pasted)."""
    from weightdoctor.paths import shell_word

    return shell_word(str(path), argument=True)


def keras_object(data: Any) -> str | None:
    """What a JSON object that Keras serialized (keras.saving.serialize_keras_object: `module`, `class_name`,
    `config`) builds, as "keras_hub's GemmaBackbone"; None for any other JSON.

    Example:
        >>> keras_object({"module": "keras_hub.src.models.gemma.gemma_backbone", "class_name": "GemmaBackbone"})
        "keras_hub's GemmaBackbone"
    """
    if not isinstance(data, dict):
        return None
    module, class_name = data.get("module"), data.get("class_name")
    if not isinstance(module, str) or not isinstance(class_name, str) or not re.match(r"(tf_)?keras\w*", module):
        return None
    return f"{module.split('.')[0]}'s {class_name}"


def _small_json(path: Path) -> Any:
    """The parsed JSON of a small file (a config), or None where it is missing, large or not JSON."""
    try:
        if not path.is_file() or path.stat().st_size > 1_000_000:
            return None
        return parse_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _other_json_message(path: Path, data: Any) -> str:
    """Why a JSON file given as the source is not read: what it is, where diffusers' own files are concerned.

    A diffusers pipeline's model_index.json names the pipeline class and one subfolder per model (unet/, vae/, ...);
    a diffusers model's config.json names its class in `_class_name`. Both were "neither an index nor a model config".
    """
    class_name = data.get("_class_name") if isinstance(data, dict) else None
    if isinstance(class_name, str):
        if path.name == "model_index.json" or class_name.endswith("Pipeline"):
            folders = _subfolders_with_weights(path.parent) if path.parent.is_dir() else []
            example = f", e.g. {_pasteable(path.parent / folders[0])}" if folders else ""
            listed = f" ({', '.join(f'{name}/' for name in folders[:8])})" if folders else ""
            return (f"this is a diffusers pipeline's model_index.json ({class_name}), not weights: each of its models "
                    f"is in a subfolder of its own{listed}; point at one{example}")
        if path.name == "scheduler_config.json" or class_name.endswith("Scheduler"):
            return f"this is a diffusers scheduler's config ({class_name}): a scheduler holds no weights"
        return f"this is a diffusers {class_name} config, not weights; point at the model folder ({path.parent})"
    if (keras := keras_object(data)) is not None:
        # A KerasHub preset's config.json / tokenizer.json, a Keras model's config: Keras' serialization of the
        # object, which was "neither an index (weight_map) nor a model config", not said to be Keras'.
        return (f"this is a Keras object's config ({keras}, as Keras serializes it), not weights: Keras builds it "
                "(a KerasHub preset folder, with model.weights.h5: keras_hub.models.Backbone.from_preset(folder)); "
                "weightdoctor reads PyTorch and safetensors checkpoints")
    # The JSON files of a model folder that are not weights (a tokenizer's, a Trainer's state, an adapter's config):
    # users tab-complete to one of them. Say what it is, and where the weights are.
    kind = next((what for names, what in _OTHER_JSON_KINDS if path.name in names), None)
    try:
        beside = [p.name for p in weight_files_in(path.parent)]
    except OSError:
        beside = []
    if beside:
        shown = ", ".join(beside[:3]) + (f" and {len(beside) - 3} more" if len(beside) > 3 else "")
        where = f"; point at the weights beside it ({shown}) or at the folder that holds them"
    else:
        where = "; give a weights file (.safetensors, .bin, .pt) or the model folder"
    return f"JSON file is neither an index (weight_map) nor a model config{f' ({kind})' if kind else ''}{where}"


def _config_given_message(path: Path) -> str:
    """Why a config.json given as the source is not read, and where its weights are, when they are beside it."""
    try:
        beside = [p.name for p in weight_files_in(path.parent)]
    except OSError:
        beside = []
    if beside:
        shown = ", ".join(beside[:3]) + (", ..." if len(beside) > 3 else "")
        folder = str(path.parent) if str(path.parent) not in ("", ".") else "the current folder, ."
        return f"this is a model config, not weights; point at the model folder ({folder}, which holds {shown})"
    # Only plan-devices takes a config alone (allow_config_only): the others need the weights themselves.
    return ("this is a model config, not weights, and no weight file is beside it; point at the weights (plan-devices "
            "plans from a config alone)")


_OTHER_JSON_KINDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "added_tokens.json"),
     "a tokenizer file"),
    (("trainer_state.json",), "a Trainer's training log"),
    (("adapter_config.json",), "a PEFT adapter's config"),
    (("preprocessor_config.json", "processor_config.json"), "a processor's config"),
    # Meta's and Mistral's releases: the model's shape for their own code, beside consolidated.*.
    (("params.json",), "params.json, the model's shape for Meta's and Mistral's own code, shipped beside their "
                       "consolidated weights"),
    (("generation_config.json",), "a generation config: decoding settings"),
)


class _Builder:
    """Accumulates files and tensors while a source is read."""

    def __init__(self, root: Path, key: str | None) -> None:
        self.root = root
        self.key = key
        self.files: list[CheckpointFile] = []
        self.tensors: list[TensorInfo] = []
        self.headers: dict[str, safetensors_format.SafetensorsHeader] = {}
        self.pickles: dict[str, pytorch_format.PickleContents] = {}
        self.ggufs: dict[str, gguf_format.GgufHeader] = {}
        self.metadata: dict[str, str] | None = None
        self.nested_key: str | None = None
        self.other_entries: list[str] = []
        self.skipped_entries: list[str] = []
        self.non_tensor_keys: dict[str, str] = {}
        self.notes: list[str] = []  # what a weight file's reader noticed (become the checkpoint's warnings)
        self.value_notes: list[str] = []  # what matters to a read of values only (`Checkpoint.value_warnings`)
        self.formats: set[str] = set()
        self.scans: list[ScanReport] = []
        # Safetensors files read since the last pickle, whose scan reports are not built yet.
        self.safetensors_files: list[str] = []
        # Whether the GGUF files read are the parts of one split set (`read_split_gguf`), each not said to be a part.
        self.in_split_set = False

    def relpath(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root)) if path != self.root else path.name
        except ValueError:
            return path.name

    def _flush_safetensors_scans(self) -> None:
        """Before another format's scan report: the reports of the safetensors files read so far, in file order."""
        if self.safetensors_files:
            from weightdoctor.security import safetensors_report

            self.scans += [safetensors_report([name]) for name in self.safetensors_files]
            self.safetensors_files.clear()

    def add_weight_file(self, path: Path) -> list[TensorInfo]:
        relpath = self.relpath(path)
        found = require_regular_file(path)
        try:
            size = (found or path.stat()).st_size  # without one, stat again: its error says what is wrong
            prefix = _read_prefix(path, 32)
        except OSError as exc:
            raise SourceNotFound(f"cannot read: {exc.strerror}", path=str(path)) from exc
        if size == 0 and prefix:
            # /proc/self/status, /sys/...: was "file is empty (0 bytes)", of a file that `cat` shows is not.
            raise UnsupportedFormat("its size is 0 bytes, yet reading it gives bytes (a file of /proc or /sys, made "
                                    "as it is read, or one being written now): not a checkpoint", path=str(path))
        if size == 0:
            raise CorruptCheckpoint("file is empty (0 bytes)", path=str(path))
        if path.suffix == ".distcp" or (path.name == ".metadata" and _is_dcp_folder(path.parent)):
            refuse_unsafe_dcp_metadata(path.parent)  # before a message that names dcp_to_torch_save
            raise UnsupportedFormat(_dcp_file_message(path), path=str(path))
        if path.name == "common.pt" and self.key is None and _is_dcp_folder(path.parent) \
                and _is_megatron_dist(path.parent):
            refuse_unsafe_dcp_metadata(path.parent)
            # Named alone, it was "no state dict found; pick one with --key", where no entry of it holds the weights.
            raise UnsupportedFormat(f"this is the common.pt of {megatron_dist(path.parent)}", path=str(path))
        from weightdoctor.checkpoint import gguf_format

        is_gguf = gguf_format.looks_like_gguf(prefix)
        if is_gguf:
            from weightdoctor.checkpoint.foreign import torch_legacy_pickle

            # b"GGUF\x03..." also opens a legacy torch.save whose first opcode is a BINFLOAT: read as what it is.
            is_gguf = not torch_legacy_pickle(path)
        if not is_gguf and not safetensors_format.looks_like_safetensors(prefix):
            # Imported here: safetensors files need neither (nor the zipfile module they import).
            from weightdoctor.checkpoint import foreign, pytorch_format

            if pytorch_format.detect_pickle_format(prefix) != "pytorch-legacy":
                kind = foreign.identify(path, prefix)
                if kind is not None:
                    _refuse_pickled_npy(path, prefix)  # before a message that names numpy.load(allow_pickle=True)
                    raise UnsupportedFormat(foreign.unsupported_message(kind, path.name, str(path)), path=str(path))
        looks_safetensors = safetensors_format.looks_like_safetensors(prefix)
        misnamed_pickle = False
        if not looks_safetensors and path.suffix == ".safetensors":
            from weightdoctor.checkpoint import pytorch_format

            # Read as what it is (scanned like any pickle); from_pretrained's safe_open refuses it.
            misnamed_pickle = pytorch_format.detect_pickle_format(prefix) is not None
        if misnamed_pickle:
            self.notes.append(f"{relpath}: a PyTorch pickle (torch.save) under a safetensors name: safetensors and "
                              "from_pretrained cannot read it; convert it (weightdoctor convert) or rename it")
        elif looks_safetensors and path.suffix in PICKLE_SUFFIXES:
            self.notes.append(f"{relpath}: safetensors bytes under a PyTorch pickle's name: torch.load (and "
                              "from_pretrained, which torch.loads a .bin) cannot read it; rename it .safetensors")
        try:
            if is_gguf:
                fmt = "gguf"
                gguf = gguf_format.read_header(path, relpath)
                self.ggufs[relpath] = gguf
                infos = gguf.tensors
                self._flush_safetensors_scans()
                from weightdoctor.security import ScanReport

                templates = sorted(key for key in gguf.metadata if key.startswith("tokenizer.chat_template"))
                # Text, never run here; the runner renders it: llama-cpp-python before 0.2.72 did so unsandboxed
                # (CVE-2024-34359), so a template is named where the verdict is.
                notes = [f"{', '.join(templates)}: Jinja text that llama.cpp / llama-cpp-python render when chatting "
                         "(unsandboxed in llama-cpp-python before 0.2.72: CVE-2024-34359); not run here"
                         ] if templates else []
                self.scans.append(ScanReport(format="gguf", container="gguf", files=[relpath], notes=notes))
                quantized = sorted({t.dtype for t in infos if gguf_format.is_unread_dtype(t.dtype)})
                parts = gguf.metadata.get("split.count")
                if isinstance(parts, int) and not isinstance(parts, bool) and parts > 1 and not self.in_split_set:
                    part = gguf.metadata.get("split.no")
                    self.notes.append(
                        f"{relpath}: part {part + 1 if isinstance(part, int) else '?'} of {parts} of a split GGUF "
                        f"(llama.cpp's gguf-split): its own {counted(len(infos), 'tensor')} only; "
                        + (reading if (reading := foreign_gguf_reading(path)).startswith("it is part") else
                           # Renamed: its parts are not found by name, and transformers cannot read a part.
                           f"under gguf-split's names (`-{(part if isinstance(part, int) else 0) + 1:05d}-of-"
                           f"{parts:05d}.gguf`) beside its other parts it is read with them; transformers reads one "
                           "GGUF file, not a part of one: llama.cpp's llama-gguf-split --merge joins the parts first"))
                if quantized:
                    self.value_notes.append(
                        f"{relpath}: GGUF tensors of quantized ggml types ({', '.join(quantized)}) are described from "
                        "the header; their values are not read (--stats, check-dtype and diff-keys --values read "
                        f"{gguf_format.READ_TYPES_WORDS})")
            elif looks_safetensors or (path.suffix == ".safetensors" and not misnamed_pickle):
                fmt = "safetensors"
                # Our parser checks everything the safetensors library checks and more (a property
                # test holds it to that); the library's own validation runs too, before the first
                # value is read (`Checkpoint.safetensors_header`), so that structure-only commands
                # need not import numpy for it.
                header = safetensors_format.read_header(path, relpath)
                self.headers[relpath] = header
                if header.metadata and self.metadata is None:
                    self.metadata = header.metadata
                if header.metadata_cut:
                    # Said once a file, in one line: the first value cut, and how many more were.
                    (key, length), *others = header.metadata_cut
                    more = f" ({counted(len(others), 'other value')} too)" if others else ""
                    self.notes.append(
                        f"{relpath}: metadata {clip_middle(repr(key), 200)} holds {length:,} characters{more}: kept "
                        f"and shown cut to {safetensors_format.MAX_METADATA_VALUE_CHARS:,} (convert and shard carry "
                        f"{'them' if others else 'it'} whole)")
                infos = header.tensors
                self.safetensors_files.append(relpath)
            else:
                from weightdoctor.checkpoint import pytorch_format

                fmt = pytorch_format.ensure_pickle_file(path, prefix)
                contents = pytorch_format.load_pickle(path, fmt, self.key, label=relpath)
                if contents.security is not None and contents.security.container == "pickle":
                    # pickle.dump's own file (Detectron2's model_final_*.pkl, paddle.save): torch.save's legacy
                    # format is a magic number, its pickles and storage records, which torch.load reads and this
                    # is not.
                    fmt = "pickle"
                self._flush_safetensors_scans()
                self.pickles[relpath] = contents
                if contents.security is not None:
                    self.scans.append(contents.security)
                if contents.nested_key is not None:
                    self.nested_key = contents.nested_key
                    self.other_entries = contents.other_entries
                self.skipped_entries += contents.skipped_entries
                self.non_tensor_keys.update(contents.non_tensor_keys)
                self.notes += [f"{relpath}: {note}" for note in contents.notes]
                infos = pytorch_format.tensor_infos(contents, relpath)
                _refuse_zero3_placeholders(path, infos)
        except WeightDoctorError as exc:
            exc.path = exc.path or str(path)
            raise
        # A name is no longer than the header text that spells it (a character is one UTF-8 byte or more, an escape
        # six): a safetensors header within the limit proves every name is, without a pass over 10,000s of names
        # (0.15 ms a 10,002-entry file).
        within_limit = fmt == "safetensors" and header.header_size <= MAX_NAME_CHARS
        # The names once (a comprehension reads the slots fastest), for the checks below as C-level passes.
        names = [info.name for info in infos]
        long_name = None if within_limit or max(map(len, names), default=0) <= MAX_NAME_CHARS else next(
            name for name in names if len(name) > MAX_NAME_CHARS)
        if long_name is not None:
            raise CorruptCheckpoint(
                f"tensor name {long_name[:60]!r}... is {len(long_name):,} characters long (the limit is "
                f"{MAX_NAME_CHARS:,}): no model names a tensor so; printing it took minutes", path=str(path))
        ema_note = _ema_pytorch_state_note(names)
        if ema_note and not any(note.startswith(f"{relpath}: an F5-TTS training checkpoint") for note in self.notes):
            self.notes.append(f"{relpath}: {ema_note}")
        self.formats.add(fmt)
        self.files.append(CheckpointFile(path, relpath, "weights", fmt, size))
        self.tensors.extend(infos)
        return infos


    def read_split_gguf(self, parts: list[Path]) -> None:
        """Read the parts of a split GGUF (`gguf_split.set_parts`) in order, as one checkpoint, and check them
        against each other (`gguf_split.check_set`)."""
        from weightdoctor.checkpoint import gguf_split

        self.in_split_set = True
        try:
            for part in parts:
                self.add_weight_file(part)
        finally:
            self.in_split_set = False
        note = gguf_split.check_set(parts, [self.ggufs.get(self.relpath(part)) for part in parts])
        reading = foreign_gguf_reading(parts[0])
        # What transformers needs of it (one file, merged), as a lone part's note said it.
        self.notes.append(note + ("; " + reading[reading.index("transformers reads"):]
                                  if "transformers reads" in reading else ""))


def _split_gguf_parts(path: Path) -> list[Path] | None:
    """The parts of the split GGUF that `path` is a part of, when its name says so and it is a GGUF (`gguf_split`)."""
    if not path.name.lower().endswith(".gguf"):
        return None
    from weightdoctor.checkpoint import gguf_format, gguf_split

    if gguf_split.split_name(path.name) is None:
        return None
    try:
        if not path.is_file() or not gguf_format.looks_like_gguf(_read_prefix(path, 4)):
            return None  # read (or refused) as what it is
    except OSError:
        return None
    return gguf_split.set_parts(path)


def one_split_gguf_set(folder: Path) -> Path | None:
    """The first part present of the one split GGUF set (`gguf_split`) a folder holds, when the folder's weights are
    the parts of one set and nothing else: named by gguf-split (`m-00001-of-00003.gguf`), of one prefix and count.
    None otherwise: a folder of unrelated GGUF files (one per quantization) asks which file to read, as
    from_pretrained(gguf_file=) needs one named; so does a single GGUF, which that argument names.

    Example:
        m-00001-of-00002.gguf, m-00002-of-00002.gguf, README.md -> m-00001-of-00002.gguf (the set read as one);
        m.Q4_K_M.gguf, m.Q8_0.gguf -> None.
    """
    from weightdoctor.checkpoint import foreign, gguf_split

    try:
        found = foreign.foreign_files_in(folder)
    except OSError:
        return None
    if not found or not all(name.endswith(".gguf") for name in found):
        return None
    named = [gguf_split.split_name(name) for name in found]
    first = named[0]
    if first is None or first.count < 2 or any(
            other is None or (other.prefix, other.count) != (first.prefix, first.count)
            or other.part_name(other.number) != name for other, name in zip(named, found, strict=True)):
        return None
    # Missing parts are named by `gguf_split.set_parts`, read from whichever part is there.
    return folder / min(zip(named, found, strict=True), key=lambda pair: pair[0].number)[1]


def _dequantized(dtype: str) -> bool:
    """Whether a GGUF tensor's dtype is a block type read dequantized (`gguf_format.is_dequantized_dtype`)."""
    from weightdoctor.checkpoint.gguf_format import is_dequantized_dtype

    return is_dequantized_dtype(dtype)


def foreign_gguf_reading(path: Path) -> str:
    """What reads a GGUF file (`foreign.gguf_reading`), imported only when a GGUF is read."""
    from weightdoctor.checkpoint.foreign import gguf_reading

    return gguf_reading(path.name, str(path.parent))


def _ema_pytorch_state_note(tensor_names: list[str]) -> str:
    """What to say of weights that are an ema_pytorch EMA's state dict (`initted` and `step`, its bookkeeping, beside
    the averaged model as `ema_model.*`), or "". F5-TTS releases its models so (model_*.safetensors, a pruned
    model_*.pt): read as they are, the names matched no model and the two counters counted as parameters."""
    # One C-level search that builds nothing for the files that are no such state (every other file read).
    if len(tensor_names) < 3 or "initted" not in tensor_names:
        return ""
    names = set(tensor_names)
    if "step" not in names:
        return ""
    if not all(name.startswith("ema_model.") for name in names - {"initted", "step"}):
        return ""
    return ("an ema_pytorch EMA's state (initted and step, its bookkeeping, beside the averaged model as "
            "ema_model.*): F5-TTS releases its models so (model_*.safetensors, a pruned model_*.pt), and its "
            "load_checkpoint strips the ema_model. prefix and drops initted and step; a model loading this file "
            "directly must do the same")


_DEEPSPEED_MODEL_STATES = re.compile(r"(?:zero_pp_rank_\d+_)?mp_rank_\d+_model_states\.pth?")


def _universal_parameters(zero: Path) -> list[str]:
    """The parameters of a DeepSpeed universal checkpoint's `zero/` folder: ds_to_universal.py writes one folder per
    parameter, named by it, holding fp32.pt ({"param": its fp32 value}), exp_avg.pt and exp_avg_sq.pt. [] when
    `zero` is no such folder."""
    try:
        return sorted((p.name for p in zero.iterdir() if p.is_dir() and (p / "fp32.pt").is_file()), key=natural_order)
    except OSError:
        return []


def _universal_message(count: int, zero: Path) -> str:
    """What a DeepSpeed universal checkpoint is, and the Python that gathers its `zero` folder's parameters into one
    state dict, that folder named as the user named it: `Path('zero')` pasted anywhere but in the step folder
    iterated no folder (FileNotFoundError); written beside the step folder (`gathered_name`), not over a model.pt
    where the user stands."""
    whose = plural(count, "parameter's", "parameters'")  # the possessive of each number
    return (f"a DeepSpeed universal checkpoint (ds_to_universal.py): its {count} {whose} fp32 values are in "
            "zero/<name>/fp32.pt, one folder per parameter (beside Adam's exp_avg.pt and exp_avg_sq.pt), not one "
            "state dict; name one fp32.pt to read that parameter, or gather them with import pathlib, torch; "
            "torch.save({p.name: torch.load(p / 'fp32.pt')['param'] for p in "
            f"pathlib.Path({str(zero)!r}).iterdir() if p.is_dir()}}, {str(gathered_name(zero.parent))!r}) and read "
            "that")


def _refuse_zero3_placeholders(path: Path, infos: list[TensorInfo]) -> None:
    """Raise where a DeepSpeed model states file holds ZeRO-3's placeholders rather than weights: each partitioned
    parameter is saved as `torch.empty(0)` (its values are spread over the zero_pp_rank_* optimizer partitions), so
    the file read as weights gave 0 parameters, a plan that fit in 0 B and a convert that wrote empty tensors and
    verified them. Buffers are not partitioned, nor are parameters under `stage3_param_persistence_threshold`
    (100,000 elements by default: a small model's biases and norms), so most tensors may be real: an empty `weight`
    (no model has one) marks the placeholders too."""
    if not _DEEPSPEED_MODEL_STATES.fullmatch(path.name) or not infos:
        return
    empty = sum(1 for info in infos if info.num_params == 0)
    if empty * 2 < len(infos) and not any(info.num_params == 0 and info.name.endswith("weight") for info in infos):
        return
    universal = _universal_parameters(path.parent / "zero")
    if universal:  # no optimizer partitions here for zero_to_fp32.py: the fp32 values are in zero/
        raise UnsupportedFormat(f"a DeepSpeed ZeRO-3 model states file: placeholders, not weights ({empty} of "
                                f"{counted(len(infos), 'tensor', grouped=False)} {plural(empty, 'is', 'are')} "
                                f"empty), in {_universal_message(len(universal), path.parent / 'zero')}", str(path))
    refuse_unsafe_deepspeed_states(path.parent.parent, path.parent.name)  # before naming zero_to_fp32.py
    raise UnsupportedFormat(
        f"a DeepSpeed ZeRO-3 model states file: placeholders, not weights ({empty} of "
        f"{counted(len(infos), 'tensor', grouped=False)} {plural(empty, 'is', 'are')} empty: "
        "ZeRO-3 spreads the parameters over the zero_pp_rank_*_optim_states.pt partitions); gather them into one "
        "state dict with the zero_to_fp32.py DeepSpeed writes beside the global_step folders "
        f"({_zero_to_fp32_command(path.parent)}), then read that", str(path))


def _zero_to_fp32_command(step: Path) -> str:
    """The zero_to_fp32.py run that gathers the ZeRO-3 partitions of `step` (a global_stepN/ folder, named as the
    user named it): the script beside it where there is one, else DeepSpeed's own; `--tag` names this step, which
    the folder's `latest` may not. `python zero_to_fp32.py CHECKPOINT_DIR OUTPUT` ran only from inside the run folder,
    and named no folder; the output is a folder beside the run that does not exist yet (`OUTDIR` pasted made a
    folder of that name where the user stood). A step named `.` (read from inside it) is named by its own name:
    `. --tag ''` named no step."""
    step = _by_name(step)
    run = step.parent
    script = run / "zero_to_fp32.py"
    how = f"python {_pasteable(script)}" if script.is_file() else "python -m deepspeed.utils.zero_to_fp32"
    return (f"{how} {_pasteable(run)} {_pasteable(fresh_sibling(run, '.fp32'))} --tag {_pasteable(step.name)} "
            "--safe_serialization")


def is_training_state(name: str) -> bool:
    """A file of training state kept beside the weights, not part of the model: optimizer, scheduler, RNG
    states and arguments (Trainer's `checkpoint-N/`, Accelerate's `save_state` folder: `optimizer.bin`,
    `random_states_0.pkl`), DeepSpeed's ZeRO optimizer partitions
    (`zero_pp_rank_0_mp_rank_00_optim_states.pt` beside `mp_rank_00_model_states.pt`), and OLMo's unsharded
    checkpoint (`optim.pt` and `train.pt` beside `model.pt`), Megatron-LM's distributed optimizer
    (`distrib_optim.pt` beside each rank's `model_optim_rng.pt`), and torchtune's `recipe_state.pt` (seed, epochs
    run, optimizer) beside each epoch's model files, and ColossalAI's sharded optimizer (`pytorch_optim-00001.bin`,
    `pytorch_optim_group.bin`, its index `pytorch_optim.bin.index.json`): those names, not any that starts so (a
    model's `pytorch_optimized_model.bin` was "training state only")."""
    return (name.endswith((".safetensors", *PICKLE_SUFFIXES))
            and (name.startswith(("optimizer", "scheduler", "rng_state", "training_args", "scaler", "random_states",
                                  "recipe_state", "pytorch_optim.", "pytorch_optim-", "pytorch_optim_group."))
                 or name.endswith(("_optim_states.pt", "_optim_states.pth"))
                 or name in ("optim.pt", "train.pt", "distrib_optim.pt")))


def is_training_save(folder: Path) -> bool:
    """Whether `folder` is a save to resume training from: at its top, training state other than arguments alone
    (a Trainer's checkpoint-N/: `optimizer.pt`, `scheduler.pt`, `rng_state.pth`, `trainer_state.json`; DeepSpeed's
    global_stepN/: `*_optim_states.pt`; Accelerate's `checkpoint_0/`: `optimizer.bin`, `random_states_0.pkl`).
    `training_args.bin` alone is not one: Trainer.save_model writes it beside a final model too.

    Example:
        >>> is_training_save(Path("/nonexistent"))
        False
    """
    try:
        return any(item.is_file() and (item.name == "trainer_state.json" or (
            is_training_state(item.name) and not item.name.startswith("training_args")))
            for item in itertools.islice(folder.iterdir(), 10000))
    except OSError:
        return False


def _scans_of(paths: list[Path]) -> Iterator[tuple[Path, ScanReport]]:
    """Each regular file of `paths` with its static scan; one that cannot be read is passed over (the loader that
    would run it cannot read it either)."""
    from weightdoctor.security.scan import scan_file

    for path in paths:
        try:
            report = scan_file(path) if path.is_file() else None
        except OSError:
            continue
        if report is not None:
            yield path, report


# Subpackages of torch and DeepSpeed whose classes run code when built (elastic's SubprocessHandler starts a process,
# torch.fx execs source, DeepSpeed's launcher and op builders run and compile), or open files and sockets (torch._C's
# PyTorchFileWriter and export's PT2ArchiveWriter truncate the path they are given, c10d's FileStore creates one and
# its TCPStore connects or listens, fsspec's filesystems connect; DCP's async save executors and stagers start a
# process that joins a process group at the address they hold, a thread pool, or make folders; inductor's and
# dynamo's compile pools and the debug server start processes; DeepSpeed's comm backends join a process group at
# the init_method given, its io writers open the path given for writing, its elastic agent, NVMe tools and tensor
# swappers start processes or write swap files): never vouched for as their own.
_NOT_VOUCHED = ("torch.fx", "torch.utils", "torch.testing", "torch.distributed.elastic", "torch.distributed.launcher",
                "torch.distributed.run", "deepspeed.launcher", "deepspeed.ops", "deepspeed.autotuning",
                "deepspeed.comm", "deepspeed.io", "deepspeed.nvme", "deepspeed.elasticity",
                "deepspeed.runtime.swap_tensor", "deepspeed.runtime.checkpoint_engine",
                "torch._C", "torch.export", "torch._export", "torch.serialization", "torch.multiprocessing",
                "torch.onnx", "torch.profiler", "torch.autograd.profiler", "torch.distributed.distributed_c10d",
                "torch.distributed.rendezvous", "torch.distributed.checkpoint._fsspec_filesystem",
                "torch.distributed.checkpoint._async_process_executor", "torch.distributed.checkpoint._async_executor",
                "torch.distributed.checkpoint._async_thread_executor", "torch.distributed.checkpoint.staging",
                "torch.distributed.checkpoint._pg_transport", "torch.distributed.checkpoint._experimental",
                "torch.distributed.debug", "torch._inductor", "torch._dynamo", "torch._vendor")
# Packages that re-export classes of those (torch.distributed's FileStore and TCPStore, torch's own bindings): a
# genuine pickle names a class by the module that defines it (torch.distributed.checkpoint.metadata.Metadata).
_REEXPORTING = frozenset({"torch", "torch.distributed", "torch.distributed.checkpoint", "deepspeed"})
# DeepSpeed dataclasses named in lower case: ZeRO-1/2 optimizer states keep their param_slice_mappings so.
_LOWER_CASE_CLASSES = frozenset({"deepspeed.utils.tensor_fragment.fragment_address"})


def _vouched_for(module: str, name: str, roots: tuple[str, ...]) -> bool:
    """Whether an unknown global is a class of torch's or DeepSpeed's own that genuine DeepSpeed states name
    (ZeRO's `ZeroStageEnum`): under one of `roots`, and a class by its name. Their functions are not: torch.fx's
    `reduce_graph_module` execs the source the pickle gives it, and every `torch.*` name had been let through.
    DeepSpeed is not installed here, so what its genuine states name cannot be listed: DCP's `.metadata`, whose
    genuine classes can, is judged by `_DCP_METADATA_CLASSES` instead.

    A dotted name is judged by the module its last piece is read from (protocol 4 resolves `torch` /
    `_C.PyTorchFileWriter` by getattr, piece by piece), so that a cut is not stepped around.

    Example:
        >>> _vouched_for("deepspeed.runtime.zero.config", "ZeroStageEnum", ("torch", "deepspeed"))
        True
        >>> _vouched_for("torch.fx.graph_module", "reduce_graph_module", ("torch",))
        False
        >>> _vouched_for("torch", "_C.PyTorchFileWriter", ("torch",)), _vouched_for("torch.distributed", "FileStore",
        ...                                                                        ("torch",))
        (False, False)
    """
    owner, _, last = f"{module}.{name}".rpartition(".")
    if not any(owner == root or owner.startswith(f"{root}.") for root in roots) or owner in _REEXPORTING:
        return False
    if any(owner == cut or owner.startswith(f"{cut}.") for cut in _NOT_VOUCHED):
        return False
    return last.lstrip("_")[:1].isupper() or f"{owner}.{last}" in _LOWER_CASE_CLASSES


# The classes genuine DCP `.metadata` pickles name beyond the policy's safe ones (torch.Size, dtypes, _get_layout)
# and inert ones (the pathlib path of StorageMeta.checkpoint_id): the dataclasses of DCP's metadata module and the
# filesystem writer's `_StorageInfo`, each rebuilt by NEWOBJ and BUILD (object.__new__ then its fields, no __init__),
# and the enum of memory formats, called with its value. Listed from every `.metadata` that torch 2.13 writes (plain
# and model + optimizer state dicts, flattened or not, DTensors, ShardedTensors, objects, async_save, no_dist), as
# module and name; earlier torch 2.x named TensorProperties and its enum from sharded_tensor's metadata, and 1.13 the
# classes from torch.distributed._shard.checkpoint, which torch still loads as a copy of the same modules. Every
# other torch class is not vouched for: a blocklist of the ones that act when built (FileStore, TCPStore,
# PT2ArchiveWriter, _AsyncCheckpointProcess) kept missing the next one, and a vouched class called with arguments runs
# its __init__ (torch.nn.Linear(10**6, 10**6) asks for 4 TB of weights and fills them).
_DCP_METADATA_CLASSES: frozenset[tuple[str, str]] = frozenset(
    [(module, name)
     for module in ("torch.distributed.checkpoint.metadata", "torch.distributed._shard.checkpoint.metadata")
     for name in ("Metadata", "MetadataIndex", "StorageMeta", "TensorStorageMetadata", "BytesStorageMetadata",
                  "ChunkStorageMetadata", "TensorProperties", "_MEM_FORMAT_ENCODING")]
    + [(module, "_StorageInfo") for module in ("torch.distributed.checkpoint.filesystem",
                                               "torch.distributed._shard.checkpoint.filesystem")]
    + [("torch.distributed._shard.sharded_tensor.metadata", name)
       for name in ("TensorProperties", "MEM_FORMAT_ENCODING")])


def _is_folder(entry: os.DirEntry[str]) -> bool:
    """Whether a listed entry is a folder; one whose stat fails is not. A symlink to itself named global_step0
    raised ELOOP there, which ended the scan of every global_step folder: global_step1's states calling os.system
    beside it went unread."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _matches(folder: Path, pattern: str) -> list[Path]:
    """The files of `folder` matching `pattern`, sorted; none where it cannot be listed (the others still are)."""
    try:
        return sorted(folder.glob(pattern))
    except OSError:
        return []


# The most DeepSpeed states files scanned under a folder's global_step*/ folders (one model and one optimizer file
# per rank and step); the rest are not, and the message names the folder all the same.
_MAX_DEEPSPEED_STATES = 256


def refuse_unsafe_deepspeed_states(folder: Path, step: str | None = None) -> None:
    """Refuse a DeepSpeed run folder whose global_step*/ model or optimizer states may run code.

    zero_to_fp32.py (what the refusal of such a folder names as the next step) and DeepSpeed's load_checkpoint
    torch.load each `*_model_states.pt` and `*_optim_states.pt` with weights_only=False. DeepSpeed's and torch's
    own classes (ZeRO's `ZeroStageEnum`) are unknown to the policy but are what genuine ones hold; any other
    unknown or dangerous global is refused.

    The steps those load come first: `step` (the step folder being read), the one the `latest` file names (what
    zero_to_fp32.py and load_checkpoint read; DeepSpeed's `tag` may name it otherwise than global_step*), then the
    others from the highest-numbered down, each step's model and optimizer states together.

    Raises:
        UnsafePickle: naming the file and what it imports.
    """
    from weightdoctor.security.policy import DANGEROUS, UNKNOWN

    try:
        # The folder listed once (every folder read comes here, one of 100,000 files too), then each step's own.
        with os.scandir(folder) as entries:
            steps = [e.name for e in entries if e.name.startswith("global_step") and _is_folder(e)]
    except OSError:
        return
    # Of 130 steps with two ranks each, the first 256 files by name were every step's model states: the optimizer
    # states zero_to_fp32.py gathers from the latest step went unscanned, one of them calling os.system.
    named = [name for name in (step, _latest_tag(folder)) if name and name not in (".", "..") and "/" not in name
             and os.sep not in name]
    ordered = dict.fromkeys([*named, *sorted(steps, key=natural_order, reverse=True)])
    found = list(itertools.islice((p for name in ordered for pattern in ("*_model_states.pt", "*_optim_states.pt")
                                   for p in _matches(folder / name, pattern)), _MAX_DEEPSPEED_STATES))
    for path, report in _scans_of(found):
        flagged = sorted({g.qualified for g in report.globals if g.safety == DANGEROUS or (
            g.safety == UNKNOWN and not _vouched_for(g.module, g.name, ("torch", "deepspeed")))})
        if flagged:
            dangerous = any(g.safety == DANGEROUS for g in report.globals if g.qualified in flagged)
            shown = ", ".join(flagged[:4]) + (", ..." if len(flagged) > 4 else "")
            raise UnsafePickle(f"{'dangerous' if dangerous else 'suspicious'}: this DeepSpeed states file names "
                               f"{shown}; zero_to_fp32.py and DeepSpeed's load_checkpoint torch.load it with "
                               "weights_only=False, running it: do not gather or load the folder; nothing was "
                               "unpickled here", str(path))


# The most of accelerate's custom_checkpoint_N.pkl files scanned beside the weights (one per registered object):
# N from 0 up, the names load_state reads.
_MAX_CUSTOM_CHECKPOINTS = 64


def refuse_unsafe_accelerate_objects(folder: Path) -> None:
    """Refuse a folder whose accelerate `custom_checkpoint_N.pkl` may run code.

    accelerator.save_state writes the state of each object given to register_for_checkpointing there, and
    load_state reads it back with `torch.load(..., weights_only=False)`, alone of that folder's files: a folder
    whose model.safetensors is clean was called safe with a custom_checkpoint_0.pkl calling os.system beside it.

    Raises:
        UnsafePickle: naming the file and what its scan found.
    """
    # load_state reads custom_checkpoint_{i}.pkl for i in 0, 1, ... (one per registered object): those names, not the
    # first 64 the folder lists (in directory order), which 2,000 decoys named custom_checkpoint_1..1999.pkl filled
    # while custom_checkpoint_0.pkl, calling os.system, went unscanned.
    found = [folder / f"custom_checkpoint_{index}.pkl" for index in range(_MAX_CUSTOM_CHECKPOINTS)]
    for path, report in _scans_of(found):
        if report.unsafe:
            raise UnsafePickle(f"{report.summary(limit=4)} (accelerate's load_state torch.loads this file beside the "
                               "weights with weights_only=False, running it); nothing was unpickled here", str(path))


def weight_files_in(folder: Path) -> list[Path]:
    """The weight files directly in `folder`, sorted: safetensors (`.sft` too) and pickles, not a Trainer's
    optimizer or scheduler state nor an OpenVINO IR's raw `.bin`.

    Public because plan-devices names them too (a config read alone whose folder holds the weights).

    Example:
        >>> [p.name for p in weight_files_in(Path("bert"))]  # doctest: +SKIP
        ['model.safetensors', 'pytorch_model.bin']

    Raises:
        OSError: the folder cannot be listed.
    """
    from weightdoctor.checkpoint import foreign  # an OpenVINO IR's .bin is raw bytes, named by its .xml

    return sorted(
        p for p in folder.iterdir()
        # `.sft`: safetensors under the short suffix some releases use (Flux's ae.sft, flux1-dev.sft). The suffix
        # first: a stat of each of a folder's 100,000 other files took seconds.
        if (p.suffix in (".safetensors", ".sft") or p.suffix in PICKLE_SUFFIXES) and p.is_file()
        and not is_training_state(p.name) and not foreign.is_openvino_weights(p)
    )


def _sentence_transformers_router(folder: Path) -> bool:
    """Whether `folder` is a sentence-transformers model whose one module is a Router (v5: modules.json names
    `sentence_transformers.models.Router` at path "", router_config.json beside it), its routes' modules in
    subfolders."""
    try:
        if not (folder / "router_config.json").is_file() or (folder / "modules.json").stat().st_size > 1 << 16:
            return False
        modules = parse_json((folder / "modules.json").read_text(encoding="utf-8"), max_depth=MAX_DEPTH)
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(modules, list) and any(
        isinstance(module, dict) and isinstance(module.get("type"), str)
        and module["type"].rpartition(".")[2] == "Router" and module["type"].startswith("sentence_transformers.")
        for module in modules)


def _subfolders_with_weights(folder: Path) -> list[str]:
    """The subfolders of `folder` holding weight files or a shard index; of more than _SIBLING_FOLDER_ENTRIES, the
    first ones, the usual export folders and the step DeepSpeed's `latest` names are looked into (a config beside
    30,000 empty folders was refused after 30,000 listings)."""
    found = []
    with os.scandir(folder) as entries:  # the entries' types: no stat of each
        names = sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())
    for sub in (folder / name for name in _bounded_subfolders(names, _latest_tag(folder))):
        try:
            if weight_files_in(sub) or any(not _indexes_training_state(index) for index in sub.glob("*.index.json")):
                found.append(sub.name)
        except OSError:
            continue
    return found


def _indexes_training_state(index: Path) -> bool:
    """Whether a shard index indexes training state, not weights: ColossalAI's booster.save_optimizer writes
    pytorch_optim.bin.index.json over pytorch_optim-0000N.bin (each {parameter number: its Adam state}) beside
    pytorch_optim_group.bin. It was read as the model's shards ("no state dict found ... pick one with --key"), and
    its folder offered as one holding weights."""
    return is_training_state(index.name.removesuffix(".index.json"))


def _saved_by_the_trainer(meta: Path) -> bool:
    """Whether a sharded Lightning checkpoint's meta.pt is the Trainer's (it holds `pytorch-lightning_version` beside
    the loops and callbacks), not Fabric's. torch.save stores its pickle uncompressed, so the key is in the bytes;
    a meta.pt that cannot be read is taken as the Trainer's, the more common writer."""
    try:
        with open(meta, "rb") as handle:
            head = handle.read(1 << 20)
    except OSError:
        return True
    return b"pytorch-lightning_version" in head or len(head) == 1 << 20


# How much of a .npy's pickle is read whole to judge its tensors' _load_from_bytes calls (a dict of RNG states is
# kilobytes); a larger one naming that call is refused as before.
_NPY_NESTED_BOUND = 64 << 20


def _only_load_from_bytes(report: Any) -> bool:
    """Whether the only globals a scan calls dangerous or unknown are torch.storage._load_from_bytes."""
    from weightdoctor.security.extra_state import LOAD_FROM_BYTES
    from weightdoctor.security.policy import DANGEROUS, UNKNOWN

    return {g.qualified for g in report.globals if g.safety in (DANGEROUS, UNKNOWN)} == {LOAD_FROM_BYTES}


# The longest .npy header parsed to learn whether its dtype holds objects (np.save's record of 3,000 fields writes
# 64 KiB; parsing takes about 1 s a MiB, and 170 MB); a longer one that may name an object field has the bytes after
# it scanned, and refused unless they are no pickle that imports anything unsafe.
_NPY_HEADER_PARSED = 1 << 20


def _npy_header_has_objects(header: bytes, major: int) -> bool:
    """Whether a .npy header's dtype holds Python objects, read as numpy.load reads it (a literal dict whose descr
    `numpy.lib.format.descr_to_dtype` builds); True when it cannot be read so (a Python 2 header numpy filters
    first, ...): its pickle, if any, is scanned rather than assumed absent.

    Example:
        >>> _npy_header_has_objects(b"{'descr': 'O', 'fortran_order': False, 'shape': (1,), }", 1)
        True
        >>> _npy_header_has_objects(b"{'descr': [('Output', '<f4')], 'fortran_order': False, 'shape': (1,), }", 1)
        False
    """
    import ast
    import warnings

    import numpy.lib.format

    try:
        with warnings.catch_warnings():
            # Said of the file's text, not of weightdoctor: an invalid escape (SyntaxWarning), a deprecated dtype
            # spelling (numpy's VisibleDeprecationWarning) printed to stderr beside the one error line.
            warnings.simplefilter("ignore")
            parsed = ast.literal_eval(header.decode("utf-8" if major >= 3 else "latin1"))
            return bool(numpy.lib.format.descr_to_dtype(parsed["descr"]).hasobject)
    except Exception:  # any failure of a parse of data: SyntaxError, KeyError, TypeError, RecursionError, ...
        return True


def _no_pickle(report: Any) -> bool:
    """Whether a scan found bytes that are no pickle and imported nothing unsafe before they stopped parsing (what
    unpickling them would fail on having run nothing)."""
    from weightdoctor.security.policy import DANGEROUS, UNKNOWN
    from weightdoctor.security.scan import walk_stopped

    return (not any(g.safety in (DANGEROUS, UNKNOWN) for g in report.globals) and bool(report.problems)
            and all(map(walk_stopped, (p.message for p in report.problems))))


def _refuse_pickled_npy(path: Path, prefix: bytes) -> None:
    """Refuse a NumPy .npy of Python objects (an object dtype, a dict saved with np.save) whose pickle may run code.

    np.save pickles such an array after its header, and `numpy.load(path, allow_pickle=True)` (how VGG-style
    `weights.npy` dicts are read, and what the refusal for a .npy suggests) unpickles it: a file calling os.system
    was answered with that advice. Arrays of numbers hold no pickle and are left to that message.

    Raises:
        UnsafePickle: naming the file and what its pickle imports.
    """
    from weightdoctor.security.scan import scan_embedded_pickle

    if not prefix.startswith(b"\x93NUMPY") or len(prefix) < 12:
        return
    # Format 1.0 keeps the header's length in 2 bytes, 2.0 and 3.0 in 4.
    start, length = (10, struct.unpack_from("<H", prefix, 8)[0]) if prefix[6] == 1 else (
        12, struct.unpack_from("<I", prefix, 8)[0])
    try:
        with open(path, "rb") as handle:
            if start + length > os.fstat(handle.fileno()).st_size:
                return  # numpy.load fails reading the header, unpickling nothing: said "suspicious" of byte 4 GiB
            handle.seek(start)
            # An object field anywhere in the dtype ('|O', a record's ('a', '|O')) makes np.save pickle the array;
            # the whole header is searched (allow_pickle=True lifts numpy's bound on its size): np.save's own file
            # of 3,000 float fields and one object field put it past the 64 KiB read, its pickle not scanned.
            # numpy reads the header as a literal (ast.literal_eval) and its descr as a dtype, which spells an object
            # field many ways ('O', 'object', '<O', 'O8', '\x4f'): each holds an O, "object" or a backslash, and a
            # header holding one is parsed as numpy parses it (where not too long to) to know; one holding none has
            # no object field. Only '|O' was looked for: a descr of 'O' had its pickle calling os.system unscanned.
            maybe, kept, tail, left = False, bytearray(), b"", length
            while left > 0:
                chunk = handle.read(min(left, 1 << 20))
                if not chunk:
                    break
                left -= len(chunk)
                if b"\0" in chunk:
                    # numpy's header parse (ast.literal_eval) refuses a NUL, unpickling nothing: a sparse file
                    # claiming 4 GiB of header, zeros, was read whole (3 s a GiB).
                    return
                maybe = maybe or b"O" in chunk or b"\\" in chunk or b"object" in tail + chunk
                tail = chunk[-5:]
                if length <= _NPY_HEADER_PARSED:
                    kept += chunk
        unsure = maybe and length > _NPY_HEADER_PARSED  # too long to parse here (1 MiB took 1 s, 13 MiB 18 s)
        objects = unsure or (maybe and _npy_header_has_objects(bytes(kept), prefix[6]))
        report = scan_embedded_pickle(path, start + length) if objects else None
    except OSError:
        return  # numpy cannot read it either
    if unsure and report is not None and _no_pickle(report):
        return  # an array's raw bytes (a record of 50,000 fields, one named Output), or a pickle.load that fails
    if report is not None and report.unsafe and _only_load_from_bytes(report):
        # np.save of a dict holding a torch tensor (a training loop's torch.get_rng_state() beside numpy's) pickles
        # its storage as _load_from_bytes(<torch.save bytes>): judged by the archive it torch.loads, as a bytes
        # value's pickle is, not called dangerous for the name alone. Past the bound the refusal stands.
        try:
            with open(path, "rb") as handle:
                handle.seek(start + length)
                data = handle.read(_NPY_NESTED_BOUND + 1)
        except OSError:
            return
        if len(data) <= _NPY_NESTED_BOUND:
            from weightdoctor.security.extra_state import pickle_loads_problem

            problem = pickle_loads_problem(data)
            if problem is None:
                return
            raise UnsafePickle(f"{problem[0]}: this NumPy .npy array of Python objects {problem[1]} (numpy.load(path, "
                               "allow_pickle=True) unpickles it, running that); nothing was unpickled here", str(path))
    if report is not None and report.unsafe:
        raise UnsafePickle(f"{report.summary(limit=4)}: this NumPy .npy array holds Python objects, pickled after "
                           "its header, and numpy.load(path, allow_pickle=True) unpickles them, running that; nothing "
                           "was unpickled here", str(path))


def _dcp_file_message(path: Path) -> str:
    """The refusal for one file of a torch.distributed.checkpoint folder named alone. A `.distcp` shard is the
    concatenation of the byte ranges its rank wrote (each tensor a torch.save archive of its own, one after the
    other), which read as a zip whose central directories disagree ("suspicious"); `.metadata` is the pickled
    index of DCP's classes that places them (its globals unknown to weights_only). Neither is a state dict."""
    what = ("the metadata (the pickled index of every tensor's chunks and where they lie)" if path.name == ".metadata"
            else "one rank's shard (byte ranges placed only by the .metadata beside it)")
    # Megatron-Core's torch_dist save (Megatron-LM's iter_N/, NeMo's model_weights/) says so by its common.pt or
    # metadata.json: named, where the shards alone were put down to FSDP, torchtitan or Lightning.
    saver = ("as Megatron-Core's torch_dist format saves one (Megatron-LM's iter_N/, NeMo's model_weights/; common.pt "
             "and metadata.json beside the shards)" if _is_megatron_dist(path.parent)
             else "as FSDP, torchtitan and Lightning save one")
    return (f"this is {what} of a torch.distributed.checkpoint (DCP) folder, {saver} "
            f"({path.parent.name or '.'}/: *.distcp shards and .metadata); no file of it is read alone: "
            f"{dcp_to_torch_save(path.parent)} writes one torch.save "
            "file to read here")


def _shell_word(path: Path) -> str:
    """`path` as one shell word, to paste into the command a message suggests."""
    return shell_word(str(path), argument=True)


def _consolidated(folder: Path) -> Path:
    """Where Lightning's consolidate_checkpoint scripts write a sharded checkpoint folder by default: beside it,
    named like it with `.consolidated` added (epoch=0-step=100.ckpt/ -> epoch=0-step=100.ckpt.consolidated)."""
    return folder.with_name(folder.name + ".consolidated")


def _by_name(folder: Path) -> Path:
    """`folder` named by its own name (`.` inside it: `../epoch=0-step=100.ckpt`): `.` has no name to add
    `.consolidated` to (ValueError, said as "unexpected"), nor has Lightning's script, which adds it the same way."""
    if folder.name not in ("", ".", ".."):
        return folder
    return Path(os.path.normpath(folder / ".." / folder.resolve().name))


def _is_dcp_folder(folder: Path) -> bool:
    """Whether `folder` is a torch.distributed.checkpoint save: a `.metadata` file beside `*.distcp` shards."""
    return (folder / ".metadata").is_file() and any(folder.glob("*.distcp"))


# The most subfolders of a folder whose DCP `.metadata` is scanned (accelerate's pytorch_model_fsdp_0/ and
# optimizer_0/, a run's step-N/ folders): the messages that name them as the next step are refusals, kept cheap.
_MAX_DCP_SUBFOLDERS = 16


def _latest_save(names: list[str]) -> int:
    """The index of the latest of a run's saves (sorted by name): the highest-numbered, the last by name among
    those numbered alike (step-030 and step-30). One choice for the message that names it and the scan of it: the
    scan took the first of a tie, step-030, while the message pointed dcp_to_torch_save at step-30, unscanned."""
    return max(range(len(names)), key=lambda index: (natural_order(names[index]), index))


def refuse_unsafe_dcp_metadata(folder: Path) -> None:
    """Refuse a torch.distributed.checkpoint folder, or one of its first subfolders, whose `.metadata` pickle
    names a dangerous global, or an unknown one outside torch.

    DCP's FileSystemReader reads `.metadata` with plain `pickle.load` (dcp.load, dcp_to_torch_save, accelerate
    merge-weights, Lightning's consolidate_checkpoint all do): the messages that name those as the next step sent
    a folder whose `.metadata` calls os.system there unscanned. DCP's own classes
    (`torch.distributed.checkpoint.metadata.Metadata`, ...) are unknown to the policy but are what every genuine
    one holds: those genuine saves name pass (`_DCP_METADATA_CLASSES`), and no other torch class does.

    Raises:
        UnsafePickle: naming the `.metadata` file and what it imports.
    """
    from weightdoctor.security.policy import DANGEROUS, UNKNOWN
    from weightdoctor.security.scan import scan_file

    try:
        saves = [p for p in sorted(folder.iterdir()) if p.is_dir() and _is_dcp_folder(p)]
    except OSError:
        saves = []
    # The saves the no-weights message names for a converter are scanned wherever they sort: its first by name
    # (pytorch_model_fsdp_0/) and its latest by number (step_30/, which sorted 24th of 30 by name and went
    # unscanned while dcp_to_torch_save was pointed at it).
    named = [p for p in saves if not p.name.startswith("optimizer")]
    folders = [folder, *saves[:_MAX_DCP_SUBFOLDERS]]
    if named:
        latest = named[_latest_save([p.name for p in named])]
        folders += [p for p in dict.fromkeys((named[0], latest)) if p not in folders]
    for candidate in folders:
        if not _is_dcp_folder(candidate):
            continue
        metadata = candidate / ".metadata"
        try:
            report = scan_file(metadata)
        except OSError:
            continue  # unreadable: DCP cannot read it either, and the message names the folder all the same
        flagged = sorted({g.qualified for g in report.globals if g.safety == DANGEROUS or (
            g.safety == UNKNOWN and (g.module, g.name) not in _DCP_METADATA_CLASSES)})
        if flagged:
            dangerous = any(g.safety == DANGEROUS for g in report.globals if g.qualified in flagged)
            shown = ", ".join(flagged[:4]) + (", ..." if len(flagged) > 4 else "")
            raise UnsafePickle(
                f"{'dangerous' if dangerous else 'suspicious'}: the .metadata of this torch.distributed.checkpoint "
                f"(DCP) folder names {shown}; DCP reads it with pickle.load (dcp.load, dcp_to_torch_save, "
                "accelerate merge-weights), running it: do not convert or load the folder; nothing was unpickled "
                "here", str(metadata))
        _refuse_unsafe_dcp_objects(candidate)


# Bytes of a DCP folder's shards read to find the torch.save archives of its non-tensor entries (they lie anywhere
# the .metadata says; torch's writer puts them first in each shard), the archives' pickles walked, and the bytes
# of one pickle read (a genuine one is a few hundred bytes: a tensor's rebuild call, a scheduler's dict; one
# running past it is refused as not vouched for).
_MAX_DCP_SCAN_BYTES = 1 << 30
# The first bytes of each shard read (FileSystemWriter writes a shard's byte items before its tensors), so that
# every shard's objects are scanned: with the 1 GiB shared by the folder, a real model's first shard (gigabytes)
# used it all and the other ranks' objects were never looked at.
_MAX_DCP_SHARD_SCAN_BYTES = 64 << 20
_MAX_DCP_PICKLES = 4096
# What one local header costs of that count when it names no data.pkl (a pickle costs 16): torch.save archives
# hold a few members each, and a shard of 1 GiB filled with header signatures read each one's name (a seek and a
# read per 4 bytes: about 14 s) before the pickles ran out.
_DCP_PICKLE_COST = 16
_MAX_DCP_PICKLE_BYTES = 1 << 20
# Bytes of central directory read that cost one of that count (about one member's entry, whose name torch.save
# writes as `archive/data/0`): a genuine archive's directory costs a few, and all the folder's together 4 MiB.
_DCP_DIRECTORY_BYTES = 64
_DCP_CHUNK = 16 << 20
_LOCAL_HEADER = re.compile(rb"PK\x03\x04")
_END_OF_ARCHIVE = re.compile(rb"PK\x05\x06")


class _Window:
    """The first `end` bytes of an open file, as zipfile reads an archive: its end is the archive's end."""

    def __init__(self, handle: Any, end: int, limit: int) -> None:
        # `limit`: the most bytes all reads return together. zipfile reads a central directory whole and builds an
        # entry per member: one of 2,000 members read again at each of 4,096 end records took 20 s.
        self.handle, self.end, self.position, self.limit, self.taken = handle, end, 0, limit, 0

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = max(0, offset if whence == 0 else self.position + offset if whence == 1 else self.end + offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> bytes:
        size = self.end - self.position if size < 0 else min(size, self.end - self.position)
        self.handle.seek(self.position)
        data = self.handle.read(max(min(size, self.limit - self.taken), 0))  # cut short: zipfile calls it truncated
        self.position += len(data)
        self.taken += len(data)
        return data


def _pickles_torch_reads(handle: Any, record: int, end: int, units: int
                         ) -> tuple[list[tuple[int, bytes, bool]], int]:
    """The data.pkl of the archive whose end of central directory record starts at byte `record` and ends (its
    comment included) at byte `end`, as torch.load finds it: by the central directory, inflated where deflated. Only
    the members the local-header walk of `_refuse_unsafe_archives_in` does not read are returned (deflated, or whose
    local header names another member): `(local header's byte, first bytes, whether cut)`; with the units of the
    folder's pickle count spent, at most `units` (each `_DCP_DIRECTORY_BYTES` of directory read, each data.pkl read a
    pickle's).

    The directory is read as written (`directory_as_written`), not by zipfile: Python 3.12's zipfile names an entry
    by its Unicode path field (0x7075) where miniz goes by the name written, and refuses an archive whose such field
    is short; on 3.12 a deflated data.pkl that calls os.system behind either was not read, and the folder was called
    safe for dcp_to_torch_save, which runs it."""
    import zlib

    from weightdoctor.security.archive import directory_as_written

    window = _Window(handle, end, max(units, 0) * _DCP_DIRECTORY_BYTES)
    try:
        members = directory_as_written(window, record)  # type: ignore[arg-type]
    except (ValueError, OSError):
        return [], window.taken // _DCP_DIRECTORY_BYTES  # torch.load cannot read it either
    found: list[tuple[int, bytes, bool]] = []
    spent = window.taken // _DCP_DIRECTORY_BYTES
    for member in members:
        if not member.name.endswith("data.pkl") or member.method not in (0, 8):
            continue  # miniz, torch's reader, knows these two methods only: stored and deflated
        if not 0 <= member.header_offset < end:
            # Outside the archive (a directory placed before the file's start, a ZIP64 offset of 2^64 - 1): the
            # seek raised ValueError ("unexpected" said of the folder) or OSError, which ended the shard's scan.
            continue
        # A directory of 70,000 members all named data.pkl, at one deflated MiB: each read and inflated.
        spent += _DCP_PICKLE_COST
        if spent > units:
            break
        handle.seek(member.header_offset)
        local = handle.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            continue
        name_length, extra_length = struct.unpack_from("<HH", local, 26)
        local_name = handle.read(name_length)
        if member.method == 0 and local_name.endswith(b"data.pkl"):
            continue  # the local-header walk reads it
        handle.seek(member.header_offset + 30 + name_length + extra_length)
        raw = handle.read(min(member.compressed_size, _MAX_DCP_PICKLE_BYTES))
        if member.method == 0:
            found.append((member.header_offset, raw, len(raw) == _MAX_DCP_PICKLE_BYTES))
            continue
        try:
            inflater = zlib.decompressobj(-15)
            data = inflater.decompress(raw, _MAX_DCP_PICKLE_BYTES)
        except zlib.error:
            continue  # torch.load fails on it without unpickling
        found.append((member.header_offset, data, len(data) == _MAX_DCP_PICKLE_BYTES
                      or len(raw) < member.compressed_size))
    return found, spent


def _refuse_unsafe_dcp_objects(folder: Path) -> None:
    """Refuse a DCP folder whose shards hold a torch.save archive whose data.pkl may run code.

    DCP keeps each entry that is no tensor (a scheduler's state, a dataloader's position, any object) as a
    torch.save archive inside a `.distcp` shard, and its DefaultLoadPlanner.load_bytes reads it back with
    `torch.load(..., weights_only=False)`: dcp_to_torch_save runs it. The archives are found by their zip local
    headers (torch writes the sizes after the data, so each data.pkl is walked from its start to its STOP).
    The first `_MAX_DCP_SHARD_SCAN_BYTES` of each shard are read, where torch's writer puts them, up to
    `_MAX_DCP_SCAN_BYTES` and `_MAX_DCP_PICKLES` pickles for the folder, shared by its shards (each gets its part of
    what the shards before it left); past that the rest is not read (the messages
    name the folder all the same; docs/security.md says what a crafted shard can place beyond).

    Raises:
        UnsafePickle: naming the shard, the byte its archive starts at, and what the pickle imports.
    """
    budget, pickles = _MAX_DCP_SCAN_BYTES, _MAX_DCP_PICKLES * _DCP_PICKLE_COST
    shards = sorted(folder.glob("*.distcp"))
    for index, shard in enumerate(shards):
        if not shard.is_file():
            continue  # a FIFO so named blocked the open forever (DCP cannot read one either), a folder raised
        # Each shard gets its share of what is left, what it leaves going to the next: in name order, a training
        # run's first shards spent the whole count on their tensors' archives (each a torch.save archive) and the
        # objects the writer puts at the start of the later shards were never read.
        # At least a few archives' worth each, else a folder of 100,000 shards would leave its first none.
        allowed = min(max(budget // (len(shards) - index), 1 << 20), budget, _MAX_DCP_SHARD_SCAN_BYTES)
        share = min(max(pickles // (len(shards) - index), 16 * _DCP_PICKLE_COST), pickles)
        try:
            left, unused = _refuse_unsafe_archives_in(shard, allowed, share)
        except OSError:
            continue  # unreadable: DCP cannot read it either
        budget -= allowed - left
        pickles -= share - unused
        if budget <= 0 or pickles <= 0:
            return


def _refuse_unsafe_archives_in(shard: Path, budget: int, pickles: int) -> tuple[int, int]:
    """`_refuse_unsafe_dcp_objects` for one shard: its first `budget` bytes read in chunks, at most `pickles`
    data.pkl walked; returns the bytes and pickles left to the folder's other shards."""
    from weightdoctor.security.extra_state import pickle_loads_problem

    with open(shard, "rb") as handle:
        position = 0
        while budget > 0 and pickles > 0:
            handle.seek(position)
            chunk = handle.read(min(_DCP_CHUNK, budget))
            if not chunk:
                break
            budget -= len(chunk)
            for match in _LOCAL_HEADER.finditer(chunk):
                start = position + match.start()
                handle.seek(start + 26)
                lengths = handle.read(4)
                if len(lengths) < 4:
                    continue
                name_length, extra_length = struct.unpack("<HH", lengths)
                if not handle.read(name_length).endswith(b"data.pkl"):
                    pickles -= 1  # a member that is no pickle: a small part of one pickle's cost
                    if pickles < 0:
                        return budget, pickles
                    continue
                pickles -= _DCP_PICKLE_COST
                if pickles < 0:
                    return budget, pickles
                handle.seek(start + 30 + name_length + extra_length)
                data = handle.read(_MAX_DCP_PICKLE_BYTES)
                # A pickle stops at its STOP: what follows (a data descriptor, the next archive) is never read.
                problem = pickle_loads_problem(data, prefix=len(data) == _MAX_DCP_PICKLE_BYTES)
                if problem is not None:
                    raise UnsafePickle(
                        f"{problem[0]}: the torch.save archive at byte {start:,} of this "
                        f"torch.distributed.checkpoint (DCP) shard {problem[1]}; DCP reads each entry that is no "
                        "tensor back with torch.load(weights_only=False) (dcp.load, dcp_to_torch_save, accelerate "
                        "merge-weights), running it: do not convert or load the folder; nothing was unpickled "
                        "here", str(shard))
            for match in _END_OF_ARCHIVE.finditer(chunk):
                # torch.load finds data.pkl by the central directory: a deflated one, or one whose local header
                # names another member, is not at the local header walked above.
                handle.seek(position + match.start() + 20)
                comment = handle.read(2)
                if len(comment) < 2:
                    continue
                end = position + match.start() + 22 + struct.unpack("<H", comment)[0]
                pickles -= _DCP_PICKLE_COST  # each directory read counts: shards full of signatures end soon
                if pickles < 0:
                    return budget, pickles
                read, spent = _pickles_torch_reads(handle, position + match.start(), end, pickles)
                pickles -= spent  # what is read is judged, then the scan ends when the count is spent
                for start, data, cut in read:
                    problem = pickle_loads_problem(data, prefix=cut)
                    if problem is not None:
                        raise UnsafePickle(
                            f"{problem[0]}: the torch.save archive at byte {start:,} of this "
                            f"torch.distributed.checkpoint (DCP) shard {problem[1]}; DCP reads each entry that is "
                            "no tensor back with torch.load(weights_only=False) (dcp.load, dcp_to_torch_save, "
                            "accelerate merge-weights), running it: do not convert or load the folder; nothing was "
                            "unpickled here", str(shard))
            if len(chunk) < _DCP_CHUNK:
                break
            position += len(chunk) - 3  # a header cut at the chunk's end is found whole in the next one
    return budget, pickles


def _foreign_weights_only(folder: Path) -> list[str]:
    """What to say of a model folder whose weights are TensorFlow, Flax, ONNX or GGUF files only, read from its
    config.json alone: from_pretrained finds no model.safetensors or pytorch_model.bin there and raises (the
    transformers of today loads no TensorFlow or Flax weights either)."""
    from weightdoctor.checkpoint import foreign

    # Core ML packages too (coreml/<task>/*.mlpackage): folders, which the folder's own refusal says apart.
    others = foreign.foreign_files_in(folder) + [f"{name}/" for name in foreign.coreml_packages_in(folder)]
    if not others:
        return []
    gguf = next((name for name in others if name.lower().endswith(".gguf")), None)
    # transformers reads a GGUF file when named (gguf_file=), dequantizing it to the floating dtype planned here.
    named = f" (unless given gguf_file={gguf!r}, which it dequantizes)" if gguf else ""
    return [f"the folder's weights are {', '.join(others[:6])} (not PyTorch): from_pretrained(folder) finds no "
            f"model.safetensors or pytorch_model.bin there and raises{named}; read from config.json alone, as the "
            "model it describes"]


def _foreign_weights_beside_other_config(folder: Path) -> bool:
    """Whether a folder without PyTorch weights holds another framework's (model.keras, model.mpk, a GGUF) beside a
    config.json that describes no transformers or diffusers model (Keras' own, Burn's): planned from that config,
    plan-devices said only "nothing to plan: the checkpoint holds no tensors and its config.json has no model_type",
    never naming the weights the folder does hold, which the folder's own refusal names."""
    from weightdoctor.checkpoint import foreign

    if not foreign.foreign_files_in(folder):
        return False
    try:
        config = read_json(folder / "config.json")
    except (WeightDoctorError, OSError):
        return False
    return isinstance(config, dict) and not config.get("model_type") and "_class_name" not in config


def _model_config_beside_subfolder_weights(folder: Path) -> bool:
    """Whether a folder without weights of its own keeps them in subfolders beside a config.json that describes no
    transformers or diffusers model: an old sentence-transformers save (`config.json` holding only `__version__`,
    the model in `0_Transformer/` or `0_BERT/`, modules.json naming them). Planned from that config, plan-devices
    said "nothing to plan: ... its config.json has no model_type", where the other commands name the subfolders
    that hold the weights."""
    try:
        config = read_json(folder / "config.json")
    except (WeightDoctorError, OSError):
        return False
    if isinstance(config, dict) and (config.get("model_type") or "_class_name" in config):
        return False
    try:
        return bool(_subfolders_with_weights(folder))
    except OSError:
        return False


def _is_orbax_checkpoint(folder: Path) -> bool:
    """Whether `folder` is an Orbax (JAX) checkpoint, one of its items, or a root of step folders holding them.

    A step (CheckpointManager's `1000/`) holds `_CHECKPOINT_METADATA` (V0 API) or an empty `orbax.checkpoint` file
    (V1), beside one folder per item (`default/`, `params/`, `state/`); an item holds `_METADATA`, and under OCDBT
    `manifest.ocdbt` with `ocdbt.process_0/`, else one zarr folder per array.
    """
    def step(path: Path) -> bool:
        return (path / "_CHECKPOINT_METADATA").is_file() or (path / "orbax.checkpoint").is_file()

    try:
        if step(folder) or (folder / "_METADATA").is_file() and (
                (folder / "manifest.ocdbt").is_file() or (folder / "_sharding").is_file()):
            return True
        return any(p.is_dir() and p.name.isascii() and p.name.isdigit() and step(p) for p in folder.iterdir())
    except OSError:
        return False


def _orbax_markers(folder: Path) -> list[str]:
    """The Orbax marker files `folder` holds, or its first step folder holds (`1000/_CHECKPOINT_METADATA`): what the
    message names as its evidence, listing only those there (an item holds _METADATA, a step _CHECKPOINT_METADATA)."""
    names = ("_CHECKPOINT_METADATA", "orbax.checkpoint", "_METADATA", "manifest.ocdbt", "_sharding")
    present = [name for name in names if (folder / name).is_file()]
    if present:
        return present
    # ASCII digits only: str.isdigit() is true of a folder named '²', which int() refused ("unexpected ValueError").
    # The directory's own entry types, the names first: no stat of each of a folder's 100,000 other files.
    try:
        with os.scandir(folder) as entries:
            steps = sorted((e.name for e in entries if e.name.isascii() and e.name.isdigit() and e.is_dir()),
                           key=lambda name: (len(name.lstrip("0")), name.lstrip("0")))
    except OSError:
        steps = []
    for step in steps:
        if found := [f"{step}/{name}" for name in names[:2] if (folder / step / name).is_file()]:
            return found
    return ["step folders"]


NO_WEIGHT_FILE = "folder holds no weight file (.safetensors, .bin, .pt, .pth, .ckpt)"


# What a run's numbered saves are named before their number (epoch_3, checkpoint-500, global_step500, iter_0001000,
# step-100, v10): a counter of saves, not of ranks or bits.
_SAVE_SERIES = re.compile(r"(?:^|[^a-z])(?:checkpoint|ckpt|epoch|ep|step|steps|iter|iteration|v|version|save|"
                          r"snapshot)[-_=.]?$", re.IGNORECASE)


def no_weights_message(folder: Path, command: str = "inspect") -> str:
    """Why a folder has nothing to read: foreign weights, weights only in subfolders, or nothing at all. A folder of
    GGUF files names the `command` line that reads one of them: inspect's, or plan-devices' (which plans a GGUF as
    from_pretrained(folder, gguf_file=) loads it)."""
    from weightdoctor.checkpoint import foreign

    message = NO_WEIGHT_FILE
    found = foreign.foreign_files_in(folder)
    others = [name for name in found if not name.endswith(foreign.READ_WHEN_NAMED)]
    if others:
        named_gguf = next((name for name in others if name.lower().endswith(".gguf")), None)
        if named_gguf is not None and all(name.lower().endswith(".gguf") for name in others):
            # Read when named, as from_pretrained reads one given gguf_file=: a folder's GGUF is not its weights.
            # Quoted always: a Hub snapshot's path, so quoted, stays the path (named_by_repo rewrites an unquoted one
            # as `org/name/file.gguf`, which names a folder of the repo, not its file).
            word = shell_word(str(folder / named_gguf))
            quoted = word if word.startswith(("'", '"', "$'")) else f"'{word}'"
            from weightdoctor.checkpoint.gguf_split import split_name

            # A split set's first part reads the whole set (`gguf_split`): said so, not "its tensors".
            split = split_name(named_gguf)
            is_set = split is not None and split.count > 1
            if command == "plan-devices":
                # The command that plans one of them, not inspect's: plan-devices takes a GGUF file named.
                loaded = f"{split.prefix}.gguf" if split is not None and is_set else named_gguf
                planned = f"the {split.count} parts of its split GGUF" if split is not None and is_set else "it"
                said = (f"plan-devices {quoted} (with the options given here) plans {planned} as "
                        f"from_pretrained(folder, gguf_file={loaded!r}) loads it")
            else:
                shown = (f"the tensors and metadata of the {split.count} parts of its split GGUF, read as one"
                         if split is not None and is_set else "its tensors and metadata")
                said = f"inspect {quoted} shows {shown}"
            # Every file named: a repo of one GGUF per quantization holds 20 or more, and the one wanted may be last.
            message += (f"; it holds {', '.join(others[:30])}{' and more' if len(others) > 30 else ''}, GGUF "
                        f"(llama.cpp), read when named: weightdoctor {said}")
        else:
            message += f"; it holds {', '.join(others[:6])}, which weightdoctor does not read (not PyTorch)"
        keras = keras_object(data) if (data := _small_json(folder / "config.json")) is not None else None
        if keras is not None and keras.startswith("keras_hub") and "model.weights.h5" in others:
            # A KerasHub preset (keras/gemma_2b_en and the like): Keras' own config of the backbone beside its
            # weights, which only keras_hub builds; the .h5 advice alone did not say what builds the model.
            message += (f"; the folder is a KerasHub preset (config.json: {keras}, beside model.weights.h5): "
                        f"keras_hub.models.Backbone.from_preset({str(folder)!r}) builds and loads it in Keras")
        gguf = next((name for name in others if name.lower().endswith(".gguf")), None)
        if gguf is not None and foreign.gguf_reading(gguf).startswith("it is part"):  # a split GGUF: merged first
            message += f"; {gguf} {foreign.gguf_reading(gguf, str(folder)).removeprefix('it ')}"
        elif gguf is not None:  # the way to PyTorch weights, as the file's own refusal says it
            message += (f"; transformers reads {gguf} into PyTorch, dequantized (import transformers; "
                        f"transformers.AutoModelForCausalLM.from_pretrained({str(folder)!r}, gguf_file={gguf!r})), "
                        "and save_pretrained then writes safetensors")
        elif (said := foreign.what_it_is(folder / others[0])) is not None:
            # An export folder (a repo's onnx/, openvino/): what reads its first file, as that file's refusal says.
            message += f"; {said}"
    paddle = [name for name in found if name.endswith(foreign.READ_WHEN_NAMED)]
    if paddle:
        # PaddleNLP / PaddleOCR repos: model_state.pdparams, a pickle of numpy arrays read when named.
        # Two or more read as a list whose last item is "a PaddlePaddle checkpoint": each is one.
        what = "a PaddlePaddle checkpoint" if len(paddle) == 1 else "each a PaddlePaddle checkpoint"
        message += (f"; it holds {', '.join(paddle[:4])}{', ...' if len(paddle) > 4 else ''}, {what} (paddle.save, "
                    f"not PyTorch), read when named ({folder.name}/{paddle[0]})")
    try:
        # torch.save files named .pth.tar, as timm's train.py (checkpoint-N, last, model_best) and PyTorch's ImageNet
        # example save them: read when named, not looked for in a folder.
        tarred = sorted((p.name for p in folder.iterdir() if p.name.endswith((".pth.tar", ".pt.tar")) and p.is_file()),
                        key=natural_order)
    except OSError:
        tarred = []
    if tarred:
        message += (f"; it holds {', '.join(tarred[:6])}{', ...' if len(tarred) > 6 else ''} (torch.save checkpoints "
                    "named .pth.tar, as timm's train.py saves them): name one to read it")
    try:
        # torch.save files named .th: AllenNLP's serialization folder (weights.th, best.th, model_state_epoch_N.th),
        # audiocraft's checkpoint.th. The folder was said to hold no weight file with one beside its config.
        dotth = sorted((p.name for p in folder.iterdir() if p.suffix == ".th" and p.is_file()), key=natural_order)
    except OSError:
        dotth = []
    if dotth:
        message += (f"; it holds {', '.join(dotth[:6])}{', ...' if len(dotth) > 6 else ''} (torch.save files named "
                    ".th, as AllenNLP's weights.th and best.th, read when named): name one to read it "
                    f"({folder.name}/{dotth[0]})")
    try:
        nemo = sorted(p.name for p in folder.iterdir() if p.name.endswith(".nemo") and p.is_file())
    except OSError:
        nemo = []
    if nemo:
        # NVIDIA's NeMo repos (nvidia/parakeet-*, canary-*) hold one .nemo file: a tar around model_weights.ckpt
        # and model_config.yaml, read when named but not looked for in a folder.
        message += (f"; it holds {', '.join(nemo[:4])}, a NeMo archive (a tar around model_weights.ckpt): extract it "
                    f"(tar -xf {nemo[0]}) and point at model_weights.ckpt")
    pipeline = foreign.spacy_pipeline(folder)
    if pipeline is not None:
        # A spaCy pipeline (nlp.to_disk, a spacy/* Hub repo) keeps its weights in each component's model file, thinc's
        # msgpack, where the folder was said to hold no weight file and no more.
        message += f"; {foreign.spacy_pipeline_message(folder, pipeline)}"
    if _is_orbax_checkpoint(folder):
        # JAX training (Flax, MaxText, openpi, T5X's successors) saves through Orbax: tensorstore arrays, no torch.
        message += (f"; it is an Orbax (JAX) checkpoint ({', '.join(_orbax_markers(folder))}), which "
                    "weightdoctor does not read (not PyTorch): restore it with orbax.checkpoint "
                    "(ocp.StandardCheckpointer().restore(path)) and save the arrays with safetensors, or use the "
                    "model's own JAX-to-PyTorch conversion script")
    elif (item := foreign.orbax_item(folder / "_")) is not None:
        # A folder inside an item (ocdbt.process_0/, its d/): the item's arrays, restored through the item alone.
        message += (f"; it is inside an Orbax (JAX) checkpoint ({item.name}/, read whole), which weightdoctor does "
                    f"not read (not PyTorch): orbax.checkpoint restores it (ocp.StandardCheckpointer().restore("
                    f"{str(item)!r})) and safetensors can save the arrays")
    package = foreign.coreml_package(folder)
    packages = [] if package is not None else foreign.coreml_packages_in(folder)
    if package is not None or packages:
        # A Hub repo's coreml/ export (Apple's and Optimum's): a folder per model, no tensor file weightdoctor reads.
        what = (f"it is {'in ' if package != folder else ''}a Core ML package ({package.name})" if package is not None
                else f"it holds Core ML packages ({', '.join(packages[:4])}{', ...' if len(packages) > 4 else ''})")
        message += (f"; {what}, which weightdoctor does not read (not PyTorch): coremltools.models.MLModel(path) "
                    "loads one (macOS runs it); the PyTorch or safetensors weights it was converted from (in the "
                    "repo it came from) are what to read here")
    if _is_dcp_folder(folder):
        # FSDP's sharded state dict (accelerate's pytorch_model_fsdp_0/): PyTorch weights, in a format of its own.
        message += ("; it is a torch.distributed.checkpoint (DCP) folder (*.distcp shards and .metadata): "
                    f"{dcp_to_torch_save(folder)} writes one "
                    "torch.save file to read here")
    try:
        state = sorted(p.name for p in folder.iterdir() if p.is_file() and is_training_state(p.name))
        # Accelerate's save_state under FSDP's SHARDED_STATE_DICT (its default): the model in
        # pytorch_model_fsdp_0/, its optimizer in optimizer_0/, both DCP folders, beside scheduler.bin and the RNG.
        distributed = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("optimizer")
                             and (p / ".metadata").is_file() and any(p.glob("*.distcp")))
    except OSError:
        state, distributed = [], []
    if state:
        # A Trainer checkpoint-N saved without its model (DeepSpeed ZeRO-3 without a 16-bit save keeps it in
        # global_stepN/, to be gathered by the zero_to_fp32.py script beside it).
        listed = f"{', '.join(state[:4])}{', ...' if len(state) > 4 else ''}"
        message += (f"; it holds training state ({listed}: optimizer, scheduler, RNG)" if distributed else
                    f"; it holds training state only ({listed}: optimizer, scheduler, RNG; not the model's weights)")
    if (folder / "zero_to_fp32.py").is_file():  # beside training state, or beside the global_stepN/ folders
        refuse_unsafe_deepspeed_states(folder)
        # The script beside it came with the folder, as any file of it did: DeepSpeed's own copy is the same code.
        # Named by its path: `python zero_to_fp32.py run OUTDIR` worked only from inside the folder, where `run`
        # named nothing; and `OUTDIR` pasted made a folder of that name: it writes to a new folder beside the run.
        message += ("; DeepSpeed's zero_to_fp32.py beside it gathers the weights: python "
                    f"{_pasteable(folder / 'zero_to_fp32.py')} {_pasteable(folder)} "
                    f"{_pasteable(fresh_sibling(folder, '.fp32'))} --safe_serialization (that "
                    "script came with the folder; python -m deepspeed.utils.zero_to_fp32 runs the installed "
                    "DeepSpeed's own)")
        if folder.name.endswith(".ckpt"):
            # PyTorch Lightning's DeepSpeedStrategy saves each checkpoint as a folder under the file's name
            # (epoch=0-step=10.ckpt/checkpoint/mp_rank_00_model_states.pt, its names under `_forward_module.`).
            message += ("; a folder named like a .ckpt file is how PyTorch Lightning's DeepSpeed strategy saves a "
                        "checkpoint: import lightning.pytorch.utilities.deepspeed; "
                        "lightning.pytorch.utilities.deepspeed.convert_zero_checkpoint_to_fp32_state_dict"
                        f"({str(folder)!r}, {str(_lightning_fp32_name(folder))!r}) writes it as one file, which "
                        "load_from_checkpoint reads")
    described = None
    if distributed and _is_megatron_dist(folder / distributed[0]):
        # NeMo 2.0's checkpoint (context/ beside weights/), Megatron-Core's torch_dist save: sharded tensors that
        # accelerate's FSDP merge does not know.
        nemo = (folder / "context").is_dir()
        message += (f"; {'a NeMo 2.0 checkpoint: ' if nemo else ''}the model's weights are in {distributed[0]}/, a "
                    "Megatron-Core torch_dist checkpoint (DCP shards, *.distcp and .metadata): "
                    + ("NeMo's import pathlib; from nemo.collections import llm; llm.export_ckpt(path=pathlib.Path("
                       f"{str(folder)!r}), target='hf', output_path=pathlib.Path("
                       f"{str(fresh_sibling(folder, '.hf'))!r})) writes a Hugging Face folder to read here"
                       if nemo else f"{dcp_to_torch_save(folder / distributed[0])} writes one torch.save file to read "
                       "here"))
        described = distributed[0]  # not pointed at again as a subfolder of weights (its common.pt is none)
    elif distributed and distributed[0].startswith("pytorch_model_fsdp"):
        message += (f"; the model's weights are in {distributed[0]}/, a torch.distributed.checkpoint (DCP) folder "
                    f"(FSDP's sharded state dict): accelerate merge-weights {_pasteable(folder / distributed[0])} "
                    f"{_pasteable(fresh_sibling(folder, '.merged'))} writes them as one model.safetensors to read "
                    "here")
    elif distributed:
        # A run's step folders (torchtitan's checkpoint/step-N/, a DCP save per step): accelerate's merge unwraps
        # its own single-model folder only, where a step holds the model beside optimizer, scheduler, dataloader.
        latest = distributed[_latest_save(distributed)]  # the one refuse_unsafe_dcp_metadata scanned as latest
        distributed.sort(key=natural_order)
        shown = ", ".join(f"{name}/" for name in distributed[:6]) + (", ..." if len(distributed) > 6 else "")
        message += (f"; its subfolders {shown} are torch.distributed.checkpoint (DCP) folders (*.distcp and "
                     f".metadata, as torchtitan saves each step): {dcp_to_torch_save(folder / latest)} writes one "
                     "torch.save file to read here")
    nanotron = foreign.nanotron_checkpoint(folder)
    if nanotron is not None:
        # Its subfolders with a file are the optimizer's, the scheduler's and the RNG's: "point at one, e.g.
        # lr_scheduler/" sent the user to the scheduler, and model/ itself was "no weight file".
        return f"{message}; {foreign.nanotron_message(folder, nanotron)}"
    fairseq2 = foreign.fairseq2_checkpoint(folder)
    if fairseq2 is not None:
        return f"{message}; {foreign.fairseq2_message(folder, *fairseq2)}"
    megatron = _megatron_latest(folder)
    if megatron is not None:
        from weightdoctor.checkpoint.pytorch_format import _model_parallel_ranks

        ranks = _model_parallel_ranks(megatron)
        # Under tensor or pipeline parallelism the file named is one rank's part: "point at that file" alone read
        # as the whole model.
        of_ranks = (f" (one of its {len(ranks)} model-parallel ranks, {ranks[0]}/ to {ranks[-1]}/, each holding "
                    "its slices of the split weights; Megatron's checkpoint converter, tools/checkpoint/convert.py, "
                    "merges them)" if ranks else "")
        message += (f"; a Megatron-LM save folder: its latest_checkpointed_iteration.txt names "
                    f"{megatron.parent.parent.name}/, whose weights are in {megatron}{of_ranks}: point at that file")
    universal = _universal_parameters(folder)
    if universal:  # its subfolders are parameters, not models to point at
        message += f"; {_universal_message(len(universal), folder)}"
    subfolders = [name for name in _subfolders_with_weights(folder) if name != described and name not in universal]
    if subfolders:
        subfolders.sort(key=natural_order)  # global_step500 before global_step1000
        shown = ", ".join(f"{name}/" for name in subfolders[:8]) + (", ..." if len(subfolders) > 8 else "")
        latest = _latest_tag(folder)
        if latest in subfolders:  # DeepSpeed's `latest` names the step its load_checkpoint resumes from
            message += (f"; weights are in subfolders ({shown}): point at one, e.g. {_pasteable(folder / latest)} "
                        "(the one DeepSpeed's `latest` file names)")
        elif len(subfolders) > 1 and len(prefixes := {re.sub(r"\d+$", "", name) for name in subfolders}) == 1 \
                and all(name[-1:].isdigit() for name in subfolders) and _SAVE_SERIES.search(prefixes.pop()):
            # One run's saves (torchtune's epoch_0/ ... epoch_9/, a Trainer's checkpoint-N/): the first named was
            # the earliest, where the latest is the one wanted. Only under a save's name: Megatron's mp_rank_00/
            # mp_rank_01/ are parts of one save, fp16/ fp32/ variants of one model, numbered all the same.
            message += (f"; weights are in subfolders ({shown}): point at one, e.g. "
                        f"{_pasteable(folder / subfolders[-1])} (the highest-numbered, the run's latest save)")
        elif len(subfolders) > 1 and all(_MODEL_PARALLEL_RANK.fullmatch(name) for name in subfolders) and all(
                (folder / name / weights).is_file() for name in subfolders[:64] for weights in
                (("model_weights.ckpt",) if (folder / "model_config.yaml").is_file() else ("model_optim_rng.pt",))):
            # Megatron-LM's iter_N/ (an extracted NeMo model's folder too), told by the file each writes per rank
            # (model_optim_rng.pt; NeMo's model_weights.ckpt): the ranks of one save, each a part of every split
            # tensor; "point at one" said nothing of their being parts, not models.
            nemo = (folder / "model_config.yaml").is_file()
            merge = ("NeMo's examples/nlp/language_modeling/megatron_change_num_partitions.py "
                     f"(--model_extracted_dir {shell_word(str(folder.absolute()), argument=True)} "
                     "--target_tensor_model_parallel_size=1 --target_pipeline_model_parallel_size=1) merges them "
                     "into one .nemo" if nemo else
                     "Megatron's checkpoint converter (tools/checkpoint/convert.py) merges them")
            message += (f"; {'an extracted NeMo model' if nemo else 'a Megatron-LM save'} in "
                        f"{len(subfolders)} model-parallel ranks ({shown}): each holds its slices of the weights "
                        "tensor parallelism splits (under pipeline parallelism, mp_rank_TT_PPP/, its stage's layers), "
                        f"not a model of its own: point at one, e.g. {_pasteable(folder / subfolders[0])}, to read "
                        f"that rank; {merge}")
        elif (pipeline := _diffusers_pipeline(folder, subfolders)) is not None:
            message += pipeline
        elif _sentence_transformers_router(folder):
            # Each route's module folder (query_0_MLMTransformer/, document_0_MLMTransformer/) is a model of its own;
            # "point at one" alone sent a convert to one route, its output no SparseEncoder / SentenceTransformer.
            message += (f"; a sentence-transformers Router (router_config.json): each route's module keeps its own "
                        f"weights, in {shown}: point at one, e.g. {_pasteable(folder / subfolders[0])}; to convert "
                        "or shard the model, write each of them to the same name in the output folder and copy "
                        "modules.json, router_config.json and the other files and folders beside them")
        else:
            message += f"; weights are in subfolders ({shown}): point at one, e.g. {_pasteable(folder / subfolders[0])}"
    if message == NO_WEIGHT_FILE:
        message += (_lightning_runs_below(folder) or _saves_with_weights_below(folder)
                    or _unfinished_or_empty(folder))
    return message


_MODEL_PARALLEL_RANK = re.compile(r"mp_rank_\d+(_\d+)?")
# A pipeline's denoising model, the component a diffusers pipeline is named for, in the order looked for.
_DENOISERS = ("transformer", "unet", "prior", "decoder", "transformer_2", "unet_2")


def _diffusers_pipeline(folder: Path, subfolders: list[str]) -> str | None:
    """"; a diffusers pipeline (model_index.json: ...)" naming the components with weights, or None when `folder`
    holds no model_index.json naming any of `subfolders`. "weights are in subfolders (text_encoder/, unet/, vae/):
    point at one, e.g. text_encoder" said nothing of their being one pipeline's models and offered the first by name,
    where the denoiser (unet/, transformer/) is the model the pipeline is for."""
    index = _small_json(folder / "model_index.json")
    if not isinstance(index, dict):
        return None
    components = [name for name in subfolders if isinstance(index.get(name), list)]
    if not components:
        return None
    class_name = index.get("_class_name")
    named = f": {class_name}" if isinstance(class_name, str) and class_name.isprintable() and len(class_name) < 100 \
        else ""
    example = next((name for name in _DENOISERS if name in components), components[0])
    why = " (the denoising model)" if example in _DENOISERS else ""
    shown = ", ".join(f"{name}/" for name in components[:8]) + (", ..." if len(components) > 8 else "")
    return (f"; a diffusers pipeline (model_index.json{named}): each component is a model of its own, with its own "
            f"config and weights, in {shown}: point at one, e.g. {_pasteable(folder / example)}{why}; "
            "DiffusionPipeline.from_pretrained loads them all")


def _lightning_runs_below(folder: Path) -> str:
    """"; its lightning_logs/ holds PyTorch Lightning's runs ..." when `folder` is a Lightning project's (its
    lightning_logs/ holding version_N/checkpoints/*.ckpt) or its lightning_logs/ itself, or "" for any other folder.

    The project folder was "folder holds no weight file" and nothing more; its lightning_logs/ was called "a run's
    save, whose weights are a folder further down (..., as diffusers' training scripts save each step's models)",
    where each version_N/ is a run of its own.
    """
    try:
        # Lightning's DeepSpeed strategy saves each checkpoint as a folder named like the .ckpt file, DeepSpeed's
        # `latest` and tag folder inside: a checkpoints/ of them held "no weight file" and nothing more.
        with os.scandir(folder) as entries:
            deepspeed = sorted((e.name for e in itertools.islice(entries, 10000) if e.name.endswith(".ckpt")
                                and e.is_dir() and (folder / e.name / "latest").is_file()), key=natural_order)
    except OSError:
        deepspeed = []
    if deepspeed:
        listed = ", ".join(f"{name}/" for name in deepspeed[:4]) + (", ..." if len(deepspeed) > 4 else "")
        what = ("is a PyTorch Lightning DeepSpeed checkpoint" if len(deepspeed) == 1
                else "are PyTorch Lightning DeepSpeed checkpoints")
        return (f"; {listed} {what} (a folder per save, named like the .ckpt file): point at one, e.g. "
                f"{_pasteable(folder / deepspeed[-1])}")
    base = folder / "lightning_logs" if (folder / "lightning_logs").is_dir() else folder
    try:
        with os.scandir(base) as entries:
            versions = [e.name for e in itertools.islice(entries, 10000)
                        if re.fullmatch(r"version_\d+", e.name) and e.is_dir()]
        runs = sorted((name for name in versions if any((base / name / "checkpoints").glob("*.ckpt"))),
                      key=natural_order)
    except OSError:
        return ""
    if not runs:
        return ""
    listed = ", ".join(f"{name}/" for name in runs[:4]) + (", ..." if len(runs) > 4 else "")
    where = "its lightning_logs/ holds" if base != folder else "it holds"
    return (f"; {where} PyTorch Lightning's runs ({listed}, a logger's version_N/ each), whose ModelCheckpoint saves "
            f"are .ckpt files in checkpoints/: point at one, e.g. {_pasteable(base / runs[-1] / 'checkpoints')} "
            "(the latest run that holds saves)")


def _saves_with_weights_below(folder: Path) -> str:
    """"; its subfolders checkpoint-500/, ... are a run's saves ..." when `folder`'s subfolders are one run's numbered
    saves whose weights are a folder further down, or "" for any other folder.

    diffusers' training scripts (train_text_to_image.py, train_dreambooth.py, train_controlnet.py) save each step with
    accelerate's save_state and a hook that writes the models in subfolders: output_dir/checkpoint-500/unet/,
    checkpoint-500/unet_ema/ (or controlnet/, transformer/). The output_dir given, mid-run, was "folder holds no weight
    file" and not a word of where they are. Only the latest save is looked into.
    """
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in itertools.islice(entries, 10000) if not e.name.startswith(".") and e.is_dir()]
    except OSError:
        return ""
    saves = [name for name in names if name[-1:].isdigit()]
    prefixes = {re.sub(r"\d+$", "", name) for name in saves}
    if len(prefixes) != 1 or not _SAVE_SERIES.search(prefixes.pop()):
        return ""
    saves.sort(key=natural_order)
    latest = folder / saves[-1]
    try:
        inner = _subfolders_with_weights(latest)
        # A Trainer under FSDP with its default SHARDED_STATE_DICT saves each checkpoint-N/'s model as a DCP folder,
        # pytorch_model_fsdp_0/: its output_dir was "folder holds no weight file" and not a word of where they are.
        fsdp = sorted(p.name for p in latest.iterdir() if p.is_dir() and p.name.startswith("pytorch_model_fsdp")
                      and (p / ".metadata").is_file())
    except OSError:
        return ""
    listed = ", ".join(f"{name}/" for name in saves[:4]) + (", ..." if len(saves) > 4 else "")
    which = (f"its subfolders {listed} are one run's saves" if len(saves) > 1
             else f"its subfolder {listed} is a run's save")
    if not inner and fsdp:
        return (f"; {which}, whose model is a torch.distributed.checkpoint (DCP) folder ({saves[-1]}/{fsdp[0]}/, "
                f"FSDP's sharded state dict, as a Trainer under FSDP saves it): accelerate merge-weights "
                f"{_pasteable(latest / fsdp[0])} {_pasteable(fresh_sibling(latest, '.merged'))} writes the latest "
                "save's as one model.safetensors to read here")
    if not inner:
        return ""
    held = ", ".join(f"{saves[-1]}/{name}/" for name in inner[:6]) + (", ..." if len(inner) > 6 else "")
    return (f"; {which}, whose weights are a folder further down ({held}, as diffusers' training scripts save each "
            f"step's models): point at one, e.g. {_pasteable(latest / inner[0])} (the latest save's)")


# A weight file's name with something after it: what browsers (.crdownload, .part), wget (.1) and download tools
# (.download, .tmp, .aria2) leave while, or after, a download ran.
_AFTER_WEIGHT_NAME = re.compile(r"\.(safetensors|bin|pt|pth|ckpt)\.[^/]+$")
# ... except TensorFlow's own names after `.ckpt` (bert_model.ckpt.index, .meta, .data-00000-of-00001): a TF
# checkpoint, not a download left unfinished.
_TENSORFLOW_CKPT_PART = re.compile(r"\.ckpt(-\d+)?\.(index|meta|data-\d+-of-\d+)$")
# ... and what compressed or archived it (`pytorch_model.bin.gz`, `model.safetensors.zst`, `.tar.gz`): renamed, a
# gzip stream is still no checkpoint; unpacked, it is one.
_PACKED_SUFFIX = re.compile(r"\.(gz|tgz|xz|zst|zstd|bz2|lz4|zip|7z|rar|tar)$", re.IGNORECASE)
# ... and LitGPT's fine-tuning outputs (finetune_lora's final/lit_model.pth.lora, finetune_adapter's
# lit_model.pth.adapter / .adapter_v2): the trained weights alone, by design, not a download left unfinished.
_LITGPT_PEFT_FILE = re.compile(r"^lit_model\.pth\.(lora|adapter|adapter_v2)$")


def _unfinished_or_empty(folder: Path) -> str:
    """"; the folder is empty", or the weight files it holds under a name with something after the suffix."""
    try:
        names = sorted(p.name for p in itertools.islice(folder.iterdir(), 10000))
    except OSError:
        return ""
    if not names:
        return "; the folder is empty"
    hint = ""
    local_dir = _local_dir_unfinished(folder)
    if local_dir:
        # `hf download --local-dir` moves a file into place only once it is whole: a download cut short leaves
        # nothing at the top, only a partial file under the folder's .cache/huggingface/download/.
        hint += (f"; `hf download --local-dir` left {counted(local_dir, 'unfinished download', grouped=False)} for "
                 "it (.cache/huggingface/download/*.incomplete): run that download again")
    litgpt = [name for name in names if _LITGPT_PEFT_FILE.match(name)]
    if litgpt:
        kinds = {"lora": "LoRA", "adapter": "adapter", "adapter_v2": "adapter v2"}
        what = " and ".join(kinds[name.rsplit(".", 1)[1]] for name in litgpt)
        hint += (f"; it holds {', '.join(litgpt)}, LitGPT's {what} weights alone, as its finetune scripts save them: "
                 "give the file itself to read them"
                 + ("; `litgpt merge_lora` on this folder merges the LoRA into its base and writes lit_model.pth"
                    if "lit_model.pth.lora" in litgpt else ""))
    after = [name for name in names if _AFTER_WEIGHT_NAME.search(name) and not name.endswith(".index.json")
             and not _TENSORFLOW_CKPT_PART.search(name) and name not in litgpt]
    packed = [name for name in after if _PACKED_SUFFIX.search(name)]
    unfinished = [name for name in after if name not in packed]
    if unfinished:
        shown = ", ".join(unfinished[:3]) + (", ..." if len(unfinished) > 3 else "")
        hint += (f"; it holds {shown}, named like weights with a suffix after it (a download still running, "
                 "stopped, or saved twice?): finish the download, or rename the file to end in its weight suffix")
    if packed:
        shown = ", ".join(packed[:3]) + (", ..." if len(packed) > 3 else "")
        hint += (f"; it holds {shown}, a compressed or archived weight file: unpack it, and point at the file it "
                 "unpacks to" if len(packed) == 1 else
                 f"; it holds {shown}, compressed or archived weight files: unpack them, and point at what they "
                 "unpack to")
    return hint


def _cached_file(repo_id: str, inside: str, revision: str | None) -> bool:
    """Whether the cached snapshot of a model repo holds `inside` as a file."""
    snapshot = cached_snapshot(repo_id, revision)
    return snapshot is not None and (snapshot / inside).is_file()


def _local_dir_unfinished(folder: Path) -> int:
    """How many partial files `hf download --local-dir` left for `folder`: huggingface_hub downloads each file into
    `<local dir>/.cache/huggingface/download/[<subfolder>/]<hash>.<etag>.incomplete` and moves it into place once
    whole, so a pipeline's `unet/` finds its own under the downloaded folder's .cache (or deeper, its parents')."""
    folder = folder.absolute()  # `.` (run inside a pipeline's unet/) has no parents to find the download's .cache in
    for base in [folder, *itertools.islice(folder.parents, 3)]:
        downloads = base / ".cache" / "huggingface" / "download" / folder.relative_to(base)
        try:
            if downloads.is_dir():
                return sum(1 for _ in itertools.islice(downloads.glob("*.incomplete"), 10000))
        except OSError:
            return 0
    return 0


def _consolidate_hf_shards(folder: Path) -> str:
    """The Python that writes the per-rank files of a HuggingFaceStorageWriter(save_distributed=True) save in
    `folder` (named as the user named it) as whole tensors, into a new folder beside it: torch's
    consolidate_safetensors_files, given every tensor's name (all in one output file: it takes no None) and a folder
    it can write into (it makes none). `(input_dir, output_dir, fqn_to_index_mapping)` pasted was a NameError."""
    written = str(fresh_sibling(folder, ".consolidated"))
    return ("import glob, os, safetensors, torch.distributed.checkpoint._consolidate_hf_safetensors as hf; "
            f"os.makedirs({written!r}); hf.consolidate_safetensors_files({str(folder)!r}, {written!r}, "
            f"{{name: 1 for shard in glob.glob(glob.escape({str(folder)!r}) + '/shard-*.safetensors') "
            "for name in safetensors.safe_open(shard, 'np').keys()})")


def _lightning_fp32_name(folder: Path) -> Path:
    """Where Lightning's convert_zero_checkpoint_to_fp32_state_dict, as printed, writes the one file gathered from a
    DeepSpeed checkpoint folder named like a .ckpt file: beside it (`epoch=0-step=10.ckpt` ->
    `epoch=0-step=10.fp32.ckpt`), numbered where taken. A 'lightning_model.pt' was written where the user stood, over
    any file of that name.

    Example:
        >>> str(_lightning_fp32_name(Path("/nonexistent/epoch=0-step=10.ckpt")))
        '/nonexistent/epoch=0-step=10.fp32.ckpt'
    """
    stem = folder.name.removesuffix(".ckpt") or "checkpoint"
    candidate, number = written_beside(folder, f"{stem}.fp32.ckpt"), 2
    while os.path.lexists(candidate):
        candidate, number = candidate.with_name(f"{stem}.fp32-{number}.ckpt"), number + 1
    return candidate


def gathered_name(folder: Path) -> Path:
    """Where a snippet that gathers a folder of pieces (DCP shards, a DeepSpeed universal checkpoint's zero/) into
    one torch.save file writes it: beside the folder, named by it (`ckpt/step-30` -> `ckpt/step-30.state_dict.pt`),
    numbered where that is taken, never over a file; where the user stands for a folder in a Hub cache snapshot.
    A 'model.pt' of the snippet was written where the user stood, over any model.pt there.

    Example:
        >>> str(gathered_name(Path("/nonexistent/step-30")))
        '/nonexistent/step-30.state_dict.pt'
    """
    if folder.name in ("", ".", ".."):  # `.` has no name to add to: named by the folder it is
        folder = Path(os.path.normpath(folder / ".." / folder.resolve().name))
    name = folder.name or "weights"
    candidate, number = written_beside(folder, f"{name}.state_dict.pt"), 2
    while os.path.lexists(candidate):
        candidate, number = candidate.with_name(f"{name}.state_dict-{number}.pt"), number + 1
    return candidate


def dcp_to_torch_save(folder: Path) -> str:
    """The call that writes a DCP folder's state dict as one torch.save file, its folder named as the user named it
    (a Python literal: `dcp_to_torch_save(folder, ...)` pasted was a NameError), into a new file beside it
    (`gathered_name`).

    Example:
        >>> dcp_to_torch_save(Path("/nonexistent/step-30"))[-79:]
        "dcp_to_torch_save('/nonexistent/step-30', '/nonexistent/step-30.state_dict.pt')"
    """
    return ("import torch.distributed.checkpoint.format_utils; "
            f"torch.distributed.checkpoint.format_utils.dcp_to_torch_save({str(folder)!r}, "
            f"{str(gathered_name(folder))!r})")


def megatron_dist(folder: Path) -> str:
    """What a Megatron-Core torch_dist checkpoint `folder` is, and the call that writes its weights as one file."""
    return ("a Megatron-Core torch_dist checkpoint: the weights are in its torch.distributed.checkpoint (DCP) "
            "shards (*.distcp and .metadata), common.pt holds only its state that is not sharded (the run's "
            f"arguments, RNG, optimizer settings); {dcp_to_torch_save(folder)} writes one torch.save file to read "
            "here")


def _is_megatron_dist(folder: Path) -> bool:
    """Whether a DCP folder is Megatron-Core's torch_dist save: its metadata.json names the sharded backend, or a
    common.pt (the run's arguments and RNG state) lies beside the shards."""
    if (folder / "common.pt").is_file():
        return True
    from weightdoctor.checkpoint.foreign import _head

    # Without blocking: a FIFO named metadata.json beside a .distcp named alone (whose message asks this) made
    # open() wait forever for a writer.
    return b'"sharded_backend"' in _head(folder / "metadata.json", 4096)


def _megatron_latest(folder: Path) -> Path | None:
    """The first rank's file of the iteration Megatron-LM's latest_checkpointed_iteration.txt names
    (`iter_0001000/mp_rank_00/model_optim_rng.pt`; `release/` for a released model), or None."""
    if not (folder / "latest_checkpointed_iteration.txt").is_file():
        return None
    try:
        with open(folder / "latest_checkpointed_iteration.txt", encoding="utf-8") as file:
            text = file.read(64).strip()
    except (OSError, UnicodeDecodeError):
        return None
    # ASCII digits only: str.isdigit() is true of '²', which int() refused ("unexpected ValueError").
    tag = "release" if text == "release" else f"iter_{int(text):07d}" if text.isascii() and text.isdigit() else None
    if tag is None or not (folder / tag).is_dir():
        return None
    ranks = sorted(p for p in (folder / tag).glob("mp_rank_*") if p.is_dir())
    files = [p for rank in ranks[:1] for p in sorted(rank.glob("*.pt"))
             if p.is_file() and not is_training_state(p.name)]  # not distrib_optim.pt beside it
    return files[0] if files else None


def _latest_tag(folder: Path) -> str | None:
    """The tag DeepSpeed's `latest` file names (`global_step1000`), or None: save_checkpoint writes it beside the
    step folders, and load_checkpoint reads it to choose one."""
    if not (folder / "latest").is_file():  # a FIFO named so would block the read
        return None
    try:
        with open(folder / "latest", encoding="utf-8") as file:
            text = file.read(256).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def _link_loops(link: Path) -> bool:
    """Whether following `link` leads back to a link already passed (the system's ELOOP)."""
    try:
        os.stat(link)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def _dangling_message(link: Path) -> str:
    target = Path(os.path.normpath(link.parent / os.readlink(link)))
    # huggingface_hub downloads into `<etag>.incomplete`, since 1.x into `<etag>.<8 hex>.incomplete` (one per process).
    partial = path_exists(target.with_name(target.name + ".incomplete")) or any(
        target.parent.glob(f"{glob_escape(target.name)}.*.incomplete"))
    why = "its download did not finish" if partial else "the file was deleted or never downloaded"
    what = "which does not exist"
    if _link_loops(link):  # the link leads back to itself (directly or through other links)
        what, why = "which leads back to itself (a loop of links)", "the cache is damaged"
    snapshot = next((p for p in link.parents if p.parent.name == "snapshots"), None)
    if snapshot is None:
        # A folder of one's own, in no Hub cache: a loop of links there was said to be a damaged cache, to download
        # again "with hf download, given the repo id," or to "delete the snapshot", of a folder that is neither.
        gone = "" if what.endswith("(a loop of links)") else " (moved or deleted since the link was made)"
        return f"is a link to {target}, {what}{gone}; point it at the file it stands for or remove it"
    repo = snapshot.parent.parent.name
    if repo.startswith("models--"):
        again = f"with `{download_command(repo.removeprefix('models--').replace('--', '/'), snapshot.name)}`"
    else:  # no repo to name: `hf download <repo id>` pasted was a shell redirection from a file `repo`
        again = "with hf download, given the repo id,"  # (huggingface-cli is gone since huggingface_hub 1.0)
    return f"is a link to {target}, {what} ({why}); download it again {again} or delete the snapshot" + (
        offline_download_caveat() if repo.startswith("models--") else "")


def explicit_weights_name(config: Any) -> str | None:
    """The weight file a config names with `transformers_weights` (transformers 5 reads it instead of
    `model.safetensors`); None when it names none."""
    name = config.get("transformers_weights") if isinstance(config, dict) else None
    return name if isinstance(name, str) and name else None


def explicit_weights(folder: Path) -> Path | None:
    """The file a model folder's config.json names with `transformers_weights`, which from_pretrained reads in
    place of the usual names; None when the config names none (or there is no readable config: its own error
    comes when it is read).

    Raises:
        UnsupportedFormat: the name is not a safetensors file or index, or leads outside the folder (transformers
            raises ValueError for both).
        SourceNotFound: the folder lacks the file (from_pretrained fails to open it).
    """
    config_path = folder / "config.json"
    if not config_path.is_file():
        return None
    try:
        config = read_json(config_path)
    except WeightDoctorError:
        return None
    if isinstance(config, dict) and config.get("transformers_weights") not in (None, "") \
            and explicit_weights_name(config) is None:
        raise UnsupportedFormat(f"config.json's transformers_weights is {config['transformers_weights']!r}, not a "
                                "file name (from_pretrained fails on it)", str(config_path))
    name = explicit_weights_name(config)
    if name is None:
        return None
    if not name.endswith((".safetensors", ".safetensors.index.json")) and name != "adapter_model.bin":
        raise UnsupportedFormat(f"config.json's transformers_weights names {name!r}, neither a safetensors file nor "
                                "a safetensors index: from_pretrained refuses it", str(config_path))
    target = folder / name
    # transformers' own containment test: the absolute path (links not followed) must stay in the folder.
    base = os.path.abspath(folder)
    if os.path.isabs(name) or os.path.commonpath([base, os.path.abspath(target)]) != base:
        raise UnsupportedFormat(f"config.json's transformers_weights names {name!r}, outside the model folder: "
                                "from_pretrained refuses it, and it is not read", str(config_path))
    try:
        exists, regular = target.exists(), target.is_file()
    except OSError as exc:
        # A name of more than 255 bytes: Path.exists raises ENAMETOOLONG (Python 3.11), which ended in "cannot read
        # or write: [Errno 36] File name too long", naming neither the config nor the field.
        raise UnsupportedFormat(f"config.json's transformers_weights names {name!r}, which the file system cannot "
                                f"look up ({exc.strerror}): from_pretrained finds no such file either",
                                str(config_path)) from exc
    if exists and not regular:
        # A FIFO there is no missing file: said so, as a config.json that is one is (and never opened).
        kind = "a folder" if target.is_dir() else _file_kind(target)
        raise UnsupportedFormat(f"config.json's transformers_weights names {name}, which is not a regular file "
                                f"({kind})", str(folder))
    if not regular:
        raise SourceNotFound(f"config.json's transformers_weights names {name}, which the folder lacks "
                             "(from_pretrained reads that file and no other, so it would fail too)", str(folder))
    return target


def _choose_in_folder(folder: Path) -> tuple[Path, bool]:
    """Pick what to read in a model folder: (path, is_index): the file config.json names with
    `transformers_weights`, else from_pretrained's order (`PREFERRED_FILES`).

    Raises:
        CorruptCheckpoint: a weight file or index is a link to a missing file (a Hub cache snapshot whose
            blob was deleted or never finished downloading): named, rather than silently reading another format.
    """
    explicit = explicit_weights(folder)
    if explicit is not None:
        return explicit, explicit.name.endswith(".index.json")
    in_snapshot = folder.parent.name == "snapshots"  # huggingface_hub's layout: links into ../../blobs
    dangling: Path | None = None
    for name in PREFERRED_FILES:
        candidate = folder / name
        if candidate.is_file():
            return candidate, name.endswith(".index.json")
        if candidate.is_symlink() and not candidate.exists():
            if in_snapshot or "blobs" in Path(os.readlink(candidate)).parts:
                # A Hub download cut short: said, not replaced by another format.
                raise CorruptCheckpoint(_dangling_message(candidate), str(candidate))
            # An ordinary folder: from_pretrained reads the next file (its isfile() is False); so does this,
            # with a warning (`_folder_notes`).
            dangling = dangling or candidate
        elif candidate.exists() and not candidate.is_dir():
            raise UnsupportedFormat(f"{name} is not a regular file ({_file_kind(candidate)})", str(candidate))
    if dangling is not None:  # no preferred file after it either: from_pretrained would fail too
        raise CorruptCheckpoint(_dangling_message(dangling), str(dangling))
    # Variants (`diffusion_pytorch_model.fp16.safetensors`, diffusers' and transformers' `variant=`) come after
    # the plain file of the same name, as from_pretrained reads the plain one unless a variant is asked for.
    # transformers and diffusers name a sharded variant's index `model.safetensors.index.fp16.json`.
    indexes = [index for suffix in (".safetensors", ".bin") for index in
               sorted(folder.glob(f"*{suffix}.index.json"), key=_variant_last)
               + sorted(folder.glob(f"*{suffix}.index.*.json")) if not _indexes_training_state(index)]
    if indexes:
        return indexes[0], True
    weights = weight_files_in(folder)
    # Every message below may name a DCP converter (dcp_to_torch_save, accelerate merge-weights) as the next step.
    refuse_unsafe_dcp_metadata(folder)
    if weights and all(p.name == "common.pt" for p in weights) and _is_dcp_folder(folder):
        # Megatron-Core's torch_dist checkpoint (iter_0001000/): the weights in the DCP shards, its common.pt
        # holding only the run's arguments, iteration and RNG state.
        raise UnsupportedFormat(megatron_dist(folder), str(folder))
    if weights and all(p.name == "meta.pt" for p in weights) and _is_dcp_folder(folder) \
            and not _saved_by_the_trainer(weights[0]):
        # Lightning Fabric's fabric.save(path, state) under the same strategies: the modules and optimizers in the
        # DCP shards, every other entry of `state` in meta.pt; the Trainer's consolidation script expects the
        # Trainer's keys, Fabric has its own.
        raise UnsupportedFormat(
            "a Lightning Fabric checkpoint saved sharded (fabric.save with FSDPStrategy or ModelParallelStrategy, "
            "state_dict_type='sharded'): the weights of the modules and optimizers saved are in its "
            "torch.distributed.checkpoint (DCP) shards (*.distcp and .metadata), meta.pt holds the state's other "
            "entries only; python -m lightning.fabric.utilities.consolidate_checkpoint "
            f"{_shell_word(_by_name(folder))} writes them as one {_shell_word(_consolidated(_by_name(folder)))} file "
            "to read here", str(folder))
    if weights and all(p.name == "meta.pt" for p in weights) and _is_dcp_folder(folder):
        # Lightning's FSDP / ModelParallel strategies save a sharded checkpoint as a folder named like the file
        # (epoch=0-step=100.ckpt/): the model and optimizer as DCP shards, the trainer's state in meta.pt.
        raise UnsupportedFormat(
            "a Lightning checkpoint saved sharded (FSDPStrategy or ModelParallelStrategy, state_dict_type='sharded'): "
            "the model's and optimizer's weights are in its torch.distributed.checkpoint (DCP) shards (*.distcp and "
            ".metadata), meta.pt holds the trainer's state only (epoch, loops, callbacks); python -m "
            f"lightning.pytorch.utilities.consolidate_checkpoint {_shell_word(_by_name(folder))} writes them as one "
            f"{_shell_word(_consolidated(_by_name(folder)))} file to read here", str(folder))
    safetensors_files = [p for p in weights if p.suffix == ".safetensors"]
    if len(safetensors_files) == 1 or (len(weights) == 1):
        return (safetensors_files or weights)[0], False
    plain = [p for p in safetensors_files if "." not in p.stem]
    if len(plain) == 1 and all(p == plain[0] or p.name.startswith(plain[0].stem + ".") for p in safetensors_files):
        return plain[0], False
    if not weights:
        dangling = [p for p in sorted(folder.iterdir()) if p.is_symlink() and not p.exists()
                    and (p.suffix == ".safetensors" or p.suffix in PICKLE_SUFFIXES)]
        if dangling:
            raise CorruptCheckpoint(_dangling_message(dangling[0]), str(dangling[0]))
        split_part = one_split_gguf_set(folder)
        if split_part is not None:  # read as the set (`_split_gguf_parts`), as its part named would be
            return split_part, False
        raise SourceNotFound(no_weights_message(folder), str(folder))
    names = ", ".join(p.name for p in weights[:6])
    foreign_kinds = _foreign_kinds(weights)
    if foreign_kinds is not None:
        # TheBloke's GGML repos: one .bin per quantization (llama-2-7b.ggmlv3.q4_0.bin, ...), none of them a pickle;
        # their names read like variants, and were said to be ones.
        from weightdoctor.checkpoint import foreign

        said = foreign.unsupported_message(foreign_kinds[0], weights[0].name, str(weights[0])).removeprefix(
            "this is ")
        said = f"each is {said}" if len(set(foreign_kinds)) == 1 else f"{weights[0].name} is {said}"
        raise UnsupportedFormat(f"folder's weight files ({names}) are not PyTorch checkpoints: {said}", str(folder))
    if all(re.fullmatch(r"zero_pp_rank_\d+_mp_rank_\d+_model_states\.pt", p.name) for p in weights) and (
            universal := _universal_parameters(folder / "zero")):
        # ds_to_universal.py copies them beside zero/, where the fp32 values are: no partitions to gather here.
        raise UnsupportedFormat(f"folder holds DeepSpeed ZeRO-3 model states, one per data-parallel rank ({names}), "
                                f"in {_universal_message(len(universal), folder / 'zero')}", str(folder))
    if all(re.fullmatch(r"zero_pp_rank_\d+_mp_rank_\d+_model_states\.pt", p.name) for p in weights):
        # ZeRO-3 saves the model states once per data-parallel rank, each with placeholders for the partitioned
        # parameters (see `_refuse_zero3_placeholders`).
        refuse_unsafe_deepspeed_states(folder.parent, folder.name)  # before naming zero_to_fp32.py
        raise UnsupportedFormat(
            f"folder holds DeepSpeed ZeRO-3 model states, one per data-parallel rank ({names}): their parameters are "
            "placeholders, the weights are partitioned over the *_optim_states.pt files; gather them into one state "
            "dict with the zero_to_fp32.py DeepSpeed writes beside the global_step folders "
            f"({_zero_to_fp32_command(folder)}), then read that", str(folder))
    layers = [p for p in weights if re.fullmatch(r"layer_\d+-model_\d+-model_states\.pt", p.name)]
    if layers and all(p in layers or _DEEPSPEED_MODEL_STATES.fullmatch(p.name) for p in weights):
        # DeepSpeed's pipeline engine (GPT-NeoX, Megatron-DeepSpeed) saves each layer on its own, its names
        # relative to the layer (`attention.query_key_value.weight`), beside an mp_rank file without weights.
        raise UnsupportedFormat(
            "folder holds a DeepSpeed pipeline-parallel checkpoint: "
            f"{counted(len(layers), 'layer file', grouped=False)} ({layers[0].name}, "
            "...), each one layer's weights under names without its layer number, so they cannot be read as one "
            "state dict; name one to see that layer, or convert the checkpoint with its framework's tools "
            "(GPT-NeoX's convert_neox_to_hf.py, DeepSpeed's ds_to_universal.py)", str(folder))
    if all(re.fullmatch(r"consolidated\.\d+\.pth", p.name) for p in weights):
        # Meta's original checkpoints of the larger models: one file per model-parallel rank, each holding a
        # slice of every tensor, so they cannot be read as shards of one state dict.
        raise UnsupportedFormat(
            f"folder holds {len(weights)} model-parallel parts of Meta's original checkpoint ({names}): each holds "
            "a slice of every tensor, not some of the tensors; name one to see one part, or convert the folder "
            "with transformers' convert_llama_weights_to_hf.py", str(folder))
    if (sharded_parts := sharded_parts_of_one_model(weights)) is not None:
        # metaseq's FSDP-sharded parts (checkpoint_last-model_part-0-shard0.pt, ...): flat parameters split twice;
        # were "several weight files and no index; name one".
        raise UnsupportedFormat(sharded_parts_message(sharded_parts), str(folder))
    if (fsdp_shards := fsdp_shards_of_one_model(weights)) is not None:
        # fairseq's and metaseq's --use-sharded-state with no model parallelism (checkpoint_last-shard0.pt, ...): one
        # flat shard per data-parallel rank, which their contents prove; were "several weight files; name one".
        raise UnsupportedFormat(fsdp_shards_message(*fsdp_shards), str(folder))
    if (model_parts := parts_of_one_model(weights)) is not None:
        # fairseq's --model-parallel-size saves (model_part-0.pt, ...): every part holds every name, the split ones'
        # slices; was "several weight files and no index; name one".
        raise UnsupportedFormat(model_parts_message(model_parts), str(folder))
    if (folder / "CKPT.yaml").is_file():
        # SpeechBrain's Checkpointer: one file per recoverable, `<name>.ckpt`; the Brain's step and an epoch
        # counter are YAML / text under the same suffix.
        pickled = [p.name for p in weights if _pickled(p)]
        text = [p.name for p in weights if p.name not in pickled]
        # The example is a module's weights: TIMIT's CRDNN recipe saves lr_annealing.ckpt (NewBob's floats, no
        # tensors) beside model.ckpt, and the first name alphabetically led to "no state dict found".
        example = next((n for n in pickled if "model" in n),
                       next((n for n in pickled if not re.search(r"anneal|schedul|optim", n)), "model.ckpt"))
        raise UnsupportedFormat(
            f"a SpeechBrain checkpoint folder (CKPT.yaml): each module's state is a .ckpt file of its own "
            f"({', '.join(pickled[:6]) or 'none here'})"
            + (f", and {', '.join(text[:4])} {'is' if len(text) == 1 else 'are'} text (the Brain's step, the epoch "
               "counter), not weights" if text else "")
            + f"; name the module's file to read it (e.g. {folder.name}/{example})",
            str(folder))
    if (folder / "hyperparams.yaml").is_file() and all(p.suffix == ".ckpt" for p in weights):
        # A SpeechBrain model on the Hub (speechbrain/spkrec-ecapa-voxceleb): from_hparams reads hyperparams.yaml,
        # whose Pretrainer loads one .ckpt per module (embedding_model.ckpt, classifier.ckpt, mean_var_norm_emb.ckpt).
        example = next((p.name for p in weights if "model" in p.name), weights[0].name)
        raise UnsupportedFormat(
            f"a SpeechBrain pretrained model (hyperparams.yaml, which from_hparams reads): its Pretrainer loads each "
            f"module from a .ckpt file of its own ({names}), not the shards of one state dict; name the module's file "
            f"to read it (e.g. {folder.name}/{example})", str(folder))
    if {p.name for p in weights} >= {"fp32.pt", "exp_avg.pt"} and _universal_parameters(folder.parent):
        raise UnsupportedFormat(
            f"one parameter of a DeepSpeed universal checkpoint ({folder.name}): fp32.pt holds its fp32 value, "
            "exp_avg.pt and exp_avg_sq.pt Adam's moments; name fp32.pt to read it (inspect the zero/ folder above "
            "for how to gather them all)", str(folder))
    if all(re.fullmatch(r"rank\d+\.safetensors", p.name) for p in weights):
        # TensorRT-LLM's checkpoint (convert_checkpoint.py): one file per rank of its mapping, each holding that
        # rank's slices of the split tensors.
        raise UnsupportedFormat(
            f"a TensorRT-LLM checkpoint of {len(weights)} ranks ({', '.join(p.name for p in weights[:4])}"
            f"{', ...' if len(weights) > 4 else ''}): each file holds its rank's slices of the tensors split by "
            "tensor or pipeline parallelism, not some of the tensors; name one to read that rank", str(folder))
    if all(re.fullmatch(r"shard-\d+-model-\d+-of-\d+\.safetensors", p.name) for p in weights):
        # torch.distributed.checkpoint's HuggingFaceStorageWriter(save_distributed=True) names each rank's file
        # shard-<rank>-model-<i>-of-<n>: slices of the tensors at the offsets its DCP_SHARDING_INFO metadata gives.
        raise UnsupportedFormat(
            f"folder holds {counted(len(weights), 'per-rank file', grouped=False)} "
            "of a torch.distributed.checkpoint HuggingFaceStorageWriter "
            f"save (save_distributed=True: {weights[0].name}, ...), each holding its rank's slices of the tensors, "
            f"and no index; {_consolidate_hf_shards(folder)} writes the whole tensors as one model-*.safetensors "
            "with its index, to read here", str(folder))
    shard_sets = shard_sets_of(weights)
    if shard_sets is not None and len(shard_sets) > 1:
        # An old `-of-00002` set beside a new `-of-00003` one (a repo re-sharded, fetched into the same folder): two
        # checkpoints, whose tensors overlap; reading them together would merge them. Was "several weight files and
        # no index; name one", which did not say there are two checkpoints.
        raise UnsupportedFormat(several_shard_sets_message(shard_sets), str(folder))
    if shard_sets is not None and (missing := shard_sets[0].missing):
        # Shards of one set without its index, some missing (a download or copy stopped between shards): named, as
        # an index's missing shards are (`_missing_shards`), where "several weight files; name one" named none.
        found = shard_sets[0]
        named = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise UnsupportedFormat(
            f"folder holds {len(found.present)} of the {found.total} shards of one checkpoint ({found.present[0]} to "
            f"{found.present[-1]}) and no index: {len(missing)} {plural(len(missing), 'is', 'are')} missing "
            f"({named}); a download or copy that stopped between shards? fetch {plural(len(missing), 'it', 'them')} "
            f"and the index ({found.index_name}) from where the shards came from, or name one shard to read it alone",
            str(folder))
    if shard_sets is not None:
        # Shards without their index (a download of `*.safetensors` only; ExLlamaV2's output-0000N-of-0000M, which
        # it reads without one): from_pretrained looks for the index and finds nothing it can load.
        found = shard_sets[0]
        if _quant_method(folder) == "exl2":
            raise UnsupportedFormat(
                f"an ExLlamaV2 (EXL2) checkpoint in {found.total} shards ({weights[0].name} to {weights[-1].name}), "
                "which exllamav2 reads without an index and transformers does not load (it has no exl2 quantizer); "
                "name one shard to read it alone", str(folder))
        raise UnsupportedFormat(
            f"folder holds the {found.total} shards of one checkpoint ({weights[0].name} to {weights[-1].name}) but "
            f"not their index ({found.index_name}, which from_pretrained needs to load them): fetch it from where the "
            "shards came from, or name one shard to read it alone", str(folder))
    variants = {p.name: variant_of(p.name) for p in weights}
    stems = {p.name.split(".", 1)[0] for p in weights}
    if all(variants.values()) and len(stems) == 1:
        # A diffusers repo fetched with its variants only (SD 1.5's unet/ holds .fp16 and .non_ema copies of
        # diffusion_pytorch_model): from_pretrained reads none of them unless given variant=; a bare "several weight
        # files, name one" did not say they are one model's variants.
        kinds = sorted(set(filter(None, variants.values())))
        asked = " or ".join(f"variant={kind!r}" for kind in kinds)
        raise UnsupportedFormat(
            f"folder holds only variants of {stems.pop()} ({names}) and no plain file: from_pretrained reads one only "
            f"when asked, {asked} (diffusers and transformers alike); name a file to read it", str(folder))
    adapterhub = _adapterhub_folder(folder, weights)
    if adapterhub is not None:
        raise UnsupportedFormat(adapterhub, str(folder))
    torchtune = _torchtune_folder(folder, weights)
    if torchtune is not None:
        raise UnsupportedFormat(torchtune, str(folder))
    espnet = _espnet_exp_folder(folder, weights)
    if espnet is not None:
        raise UnsupportedFormat(espnet, str(folder))
    coqui = _coqui_tts_folder(folder, weights)
    if coqui is not None:
        raise UnsupportedFormat(coqui, str(folder))
    lightning = _lightning_checkpoints_folder(folder, weights)
    if lightning is not None:
        raise UnsupportedFormat(lightning, str(folder))
    from weightdoctor.checkpoint.foreign import fairseq2_checkpoint, fairseq2_message

    fairseq2 = fairseq2_checkpoint(folder)
    if fairseq2 is not None and fairseq2[0] == folder and fairseq2[1][0].parent == folder:
        # fairseq2's older step folder: model.pt beside the ranks' training state (foreign._FAIRSEQ2_OLD_MODEL).
        raise UnsupportedFormat(f"folder holds several weight files and no index ({names}); "
                                f"{fairseq2_message(folder, *fairseq2)}", str(folder))
    raise UnsupportedFormat(f"folder holds several weight files and no index ({names}); name one", str(folder))


# The names PyTorch Lightning's ModelCheckpoint gives its saves: last.ckpt (save_last; last-v1.ckpt beside an older
# one), and its filename template with the metric names inserted (`epoch=2-step=90.ckpt` by default,
# `epoch=2-val_loss=0.25.ckpt` from "{epoch}-{val_loss:.2f}"), a -vN added where a name is taken.
_LIGHTNING_LAST = re.compile(r"last(-v\d+)?\.ckpt")
_LIGHTNING_SAVE = re.compile(r".*\b(epoch|step)=\d+.*\.ckpt")


def _lightning_checkpoints_folder(folder: Path, weights: list[Path]) -> str | None:
    """The refusal for a PyTorch Lightning checkpoints folder (`lightning_logs/version_0/checkpoints/`: last.ckpt
    beside ModelCheckpoint's `epoch=N-step=M.ckpt` saves), or None. "several weight files and no index; name one" did
    not say that each is a whole training checkpoint of the same model, nor which is the latest."""
    names = sorted((p.name for p in weights), key=natural_order)
    if not all(name.endswith(".ckpt") for name in names) or not any(
            _LIGHTNING_LAST.fullmatch(name) or _LIGHTNING_SAVE.fullmatch(name) for name in names):
        return None
    last = sorted((name for name in names if _LIGHTNING_LAST.fullmatch(name)), key=natural_order)
    saves = sorted((name for name in names if _LIGHTNING_SAVE.fullmatch(name)), key=natural_order)
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    example = last[-1] if last else (saves or names)[-1]
    return (f"a PyTorch Lightning checkpoints folder (ModelCheckpoint's saves: {shown}): each file is a whole "
            "training checkpoint of the model (its state_dict beside the optimizer states, loops and callbacks), "
            "not a part of one"
            + (f"; {last[-1]} is the latest save (save_last)" if last else "")
            + ("; the epoch= / step= files are those its save_top_k kept (the best by its monitored metric, or the "
               "latest)" if saves else "")
            + f"; name one to read it (e.g. {_shell_word(_by_name(folder) / example)})")


# The files espnet2's Trainer writes to an experiment folder (exp/asr_train_*/): `<N>epoch.pth` per epoch, the
# averaged `valid.acc.ave_10best.pth` with its links `valid.acc.ave.pth` / `valid.acc.best.pth` (any phase, metric,
# `ave`, `best`, `ave_<N>best`), and `checkpoint.pth` / `latest.pth`, the state it resumes from.
_ESPNET_WEIGHTS = re.compile(
    r"\d+epoch\.pth|(train|valid)\.\w+\.(ave|best|ave_\d+best)\.pth|checkpoint\.pth|latest\.pth")


def _espnet_exp_folder(folder: Path, weights: list[Path]) -> str | None:
    """The refusal for an espnet2 experiment folder (config.yaml beside the Trainer's files, `_ESPNET_WEIGHTS`), or
    None: "several weight files, name one" did not say which of them is the model its recipes decode with."""
    if not (folder / "config.yaml").is_file() or not all(_ESPNET_WEIGHTS.fullmatch(p.name) for p in weights):
        return None
    averaged = sorted(p.name for p in weights if re.fullmatch(r"(train|valid)\.\w+\.ave(_\d+best)?\.pth", p.name))
    if not averaged:
        return None
    # asr.sh decodes and packs valid.acc.ave.pth by default (inference_asr_model), tts.sh train.loss.ave.pth.
    model = next((name for name in ("valid.acc.ave.pth", "train.loss.ave.pth") if name in averaged), averaged[0])
    epochs = sorted((p.name for p in weights if re.fullmatch(r"\d+epoch\.pth", p.name)), key=lambda n: int(n[:-9]))
    resume = [name for name in ("checkpoint.pth", "latest.pth") if name in {p.name for p in weights}]
    return (f"an ESPnet experiment folder (config.yaml beside {counted(len(weights), 'weight file', grouped=False)}): "
            f"{', '.join(averaged)} {'is' if len(averaged) == 1 else 'are'} the model averaged over its best epochs "
            "that its recipes decode with and pack (asr.sh's inference_asr_model is valid.acc.ave.pth by default, "
            "tts.sh's train.loss.ave.pth)"
            + (f", {epochs[0]}{f' to {epochs[-1]}' if len(epochs) > 1 else ''} one epoch's weights each"
               if epochs else "")
            + (f", {' and '.join(resume)} the training state it resumes from (the model beside the optimizers)"
               if resume else "")
            + f"; name one to read it (e.g. {_shell_word(_by_name(folder) / model)})")


# What each file of a Coqui XTTS folder (coqui/XTTS-v2, and the folders its fine-tuning recipes write) holds, and
# what reads it: Xtts.load_checkpoint reads model.pth (its `model` entry) with vocab.json; XTTS fine-tuning
# (GPTTrainer) reads dvae.pth as `dvae_checkpoint` and mel_stats.pth as `mel_norm_file`; XttsSpeakerManager reads
# speakers_xtts.pth.
_XTTS_FILES = (
    ("dvae.pth", "the discrete VAE's state dict, which XTTS fine-tuning (GPTTrainer's dvae_checkpoint) reads"),
    ("mel_stats.pth", "a bare tensor of per-mel-channel norms, which XTTS fine-tuning (GPTTrainer's mel_norm_file) "
                      "reads"),
    ("speakers_xtts.pth", "the built-in speakers' conditioning latents (XttsSpeakerManager)"),
)


def _coqui_tts_folder(folder: Path, weights: list[Path]) -> str | None:
    """The refusal for a Coqui TTS model folder (its own config.json, `"model": "xtts"`, beside model.pth, dvae.pth,
    mel_stats.pth, ...), or None. "several weight files, name one" said neither that it is Coqui's, nor which file is
    the model, nor what reads the others."""
    from weightdoctor.meta_model import coqui_tts_model

    try:
        config = read_json(folder / "config.json") if (folder / "config.json").is_file() else None
    except (WeightDoctorError, OSError):
        return None
    model = coqui_tts_model(config)
    if model is None:
        return None
    names = [p.name for p in weights]
    if model == "xtts" and "model.pth" in names:
        others = "; ".join(f"{name} is {what}" for name, what in _XTTS_FILES if name in names)
        return ("a Coqui XTTS model folder (config.json is Coqui TTS's own, model \"xtts\", not a transformers "
                "config): model.pth is the model (its `model` entry), which TTS loads with its config: from "
                "TTS.tts.configs.xtts_config import XttsConfig; from TTS.tts.models.xtts import Xtts; config = "
                f"XttsConfig(); config.load_json({str(_by_name(folder) / 'config.json')!r}); model = "
                "Xtts.init_from_config(config); model.load_checkpoint(config, "
                f"checkpoint_dir={str(_by_name(folder))!r})"
                + (f"; {others}" if others else "")
                + f"; name one to read it (e.g. {_shell_word(_by_name(folder) / 'model.pth')})")
    example = next((name for name in ("best_model.pth", "model.pth", "model_file.pth") if name in names), names[0])
    return (f"a Coqui TTS model folder (config.json is Coqui TTS's own, model {model!r}, not a transformers config) "
            f"with {counted(len(weights), 'weight file', grouped=False)} ({', '.join(names[:6])}): TTS loads one "
            f"checkpoint with that config (tts --text 'Hello.' --model_path {_shell_word(_by_name(folder) / example)} "
            f"--config_path {_shell_word(_by_name(folder) / 'config.json')} --out_path "
            f"{_shell_word(fresh_sibling(_by_name(folder), '.hello.wav'))}, or the model class's "
            f"load_checkpoint); name one to read it (e.g. {_shell_word(_by_name(folder) / example)})")


def _foreign_kinds(weights: list[Path]) -> list[str] | None:
    """What each file is when every one is a recognised foreign format (GGML, GGUF, ... under .bin names), else
    None. Reads 32 bytes of each file."""
    from weightdoctor.checkpoint import foreign

    kinds = []
    for path in weights:
        try:
            prefix = _read_prefix(path, 32)
        except OSError:
            return None
        kind = foreign.identify(path, prefix) if not safetensors_format.looks_like_safetensors(prefix) else None
        if kind is None:
            return None
        kinds.append(kind)
    return kinds


def _quant_method(folder: Path) -> str | None:
    """The quant_method of the folder's config.json, or None (no config, no quantization_config, unreadable)."""
    try:
        config = read_json(folder / "config.json") if (folder / "config.json").is_file() else None
    except (WeightDoctorError, OSError):
        return None
    from weightdoctor.quantized import config_quantization_settings  # not at the top: it imports the checkpoint package

    quantization = config_quantization_settings(config) if isinstance(config, dict) else None
    method = quantization.get("quant_method") if quantization is not None else None
    return method if isinstance(method, str) else None


# The files AdapterHub's save_adapter writes (adapter-transformers, and its successor the adapters library).
ADAPTERHUB_WEIGHTS = ("pytorch_adapter.bin", "adapter.safetensors")
ADAPTERHUB_HEADS = ("pytorch_model_head.bin", "model_head.safetensors")


def adapterhub_adapter(config: Any) -> str | None:
    """What an AdapterHub adapter_config.json describes ("an AdapterHub adapter ('sst-2', for bert-base-uncased)"),
    or None when `config` is not one.

    save_adapter writes the adapter's architecture under "config" beside model_class / model_name / name: no
    peft_type, so PEFT refuses it, though the adapters library loads it.
    """
    if not isinstance(config, dict) or "peft_type" in config or not isinstance(config.get("config"), dict):
        return None
    if not any(isinstance(config.get(key), str) for key in ("model_class", "model_name", "model_type")):
        return None
    if "architecture" not in config["config"] and not isinstance(config.get("version"), str):
        return None  # every AdapterConfig's to_dict has its architecture; save_adapter adds the library's version
    name, model = config.get("name"), config.get("model_name")
    said = ", ".join(part for part in (repr(name) if isinstance(name, str) else "",
                                       f"for {model}" if isinstance(model, str) else "") if part)
    return f"an AdapterHub adapter{f' ({said})' if said else ''}, saved by adapter-transformers or adapters"


def adapterhub_config(folder: Path) -> dict[str, Any] | None:
    """The folder's adapter_config.json when AdapterHub wrote it (see `adapterhub_adapter`), else None."""
    path = folder / "adapter_config.json"
    try:
        if not path.is_file() or path.stat().st_size > 1 << 20:  # a config, not data
            return None
        config = read_json(path)
    except (WeightDoctorError, OSError):
        return None
    return config if adapterhub_adapter(config) is not None else None


def _adapterhub_folder(folder: Path, weights: list[Path]) -> str | None:
    """The refusal for a save_adapter folder holding both the adapter and its prediction head, or None."""
    names = {p.name for p in weights}
    adapter = next((n for n in ADAPTERHUB_WEIGHTS if n in names), None)
    head = next((n for n in ADAPTERHUB_HEADS if n in names), None)
    config = adapterhub_config(folder) if adapter is not None and head is not None else None
    described = adapterhub_adapter(config)
    if described is None:
        return None
    return (f"folder holds {described}: {adapter} holds the adapter's weights, {head} its prediction head "
            "(head_config.json); the adapters library's model.load_adapter(folder) loads both into the model, "
            f"PEFT loads neither; name one to read it (e.g. {folder.name}/{adapter})")


# The model files torchtune's checkpointers (up to 0.3) write into output_dir, each ending in the epoch it closes:
# FullModelHFCheckpointer `hf_model_<part>_<epoch>.pt` (`model-0<part>-of-0<n>_<epoch>.safetensors` with
# safe_serialization), FullModelMetaCheckpointer `meta_model_<epoch>.pt`, FullModelTorchTuneCheckpointer
# `torchtune_model_<epoch>.pt`; and, for LoRA, `adapter_<epoch>.pt` under torchtune's own names.
_TORCHTUNE_MODEL_FILES = (
    (re.compile(r"hf_model_(\d+)_(\d+)\.pt"), "Hugging Face names"),
    (re.compile(r"model-0*(\d+)-of-\d+_(\d+)\.safetensors"), "Hugging Face names"),
    (re.compile(r"meta_model_()(\d+)\.pt"), "Meta's original names"),
    (re.compile(r"torchtune_model_()(\d+)\.pt"), "torchtune's own names"),
)
_TORCHTUNE_ADAPTER = re.compile(r"adapter_(\d+)\.pt")


def _torchtune_folder(folder: Path, weights: list[Path]) -> str | None:
    """The refusal for a torchtune output_dir whose files are its checkpointers' (see `_TORCHTUNE_MODEL_FILES`),
    or None. Each epoch's files lie side by side with no index, and a model of several parts is split as the
    checkpoint it was fine-tuned from was: "several weight files, name one" did not say which is the model."""
    epochs: dict[int, dict[str, list[str]]] = {}  # epoch -> what the files hold -> the files
    peft = [p.name for p in weights if p.name in ("adapter_model.bin", "adapter_model.safetensors")]
    for path in weights:
        if path.name in peft:
            continue  # the LoRA under PEFT's names, written beside adapter_<epoch>.pt: said below
        adapter = _TORCHTUNE_ADAPTER.fullmatch(path.name)
        found = next(((match, names) for pattern, names in _TORCHTUNE_MODEL_FILES
                      if (match := pattern.fullmatch(path.name))), None)
        if adapter is not None:
            epochs.setdefault(int(adapter.group(1)), {}).setdefault("LoRA weights under torchtune's names",
                                                                    []).append(path.name)
        elif found is not None:
            epochs.setdefault(int(found[0].group(2)), {}).setdefault(f"the model under {found[1]}",
                                                                     []).append(path.name)
        else:
            return None
    with_model = [epoch for epoch, held in epochs.items() if any(what.startswith("the model") for what in held)]
    if not with_model:
        return None
    last = max(with_model)
    said, split, example = [], False, ""
    for what, names in sorted(epochs[last].items(), key=lambda item: item[1]):
        names.sort()
        if what.startswith("the model") and len(names) > 1:
            # The HF checkpointer splits the tuned model as the checkpoint it read was split, without an index.
            under = what.removeprefix("the model under ")
            what, split = f"the model in {len(names)} parts, each some of its tensors, under {under}", True
        said.append(f"{', '.join(names)} ({what})")
        example = example or (names[0] if what.startswith("the model") else "")
    if peft:
        said.append(f"{', '.join(peft)} (the LoRA under PEFT's names, for PeftModel.from_pretrained)")
    earlier = sorted(set(epochs) - {last})
    return (f"a torchtune output folder: its checkpointer writes each epoch's files side by side, under names "
            f"from_pretrained does not look for; epoch {last}: {'; '.join(said)}"
            + (f"; earlier epochs: {', '.join(map(str, earlier))}" if earlier else "")
            + ("; the parts have no index, so they are not read as one checkpoint" if split else "")
            + f"; name a file to read it (e.g. {folder.name}/{example})")


@dataclass(frozen=True)
class ShardSet:
    """The files of one `<stem>-00001-of-0000N<suffix>` set found in a folder: the names there and the ones missing."""

    stem: str
    suffix: str
    total: int
    present: list[str]
    missing: list[str]

    @property
    def index_name(self) -> str:
        """The index from_pretrained looks for beside such shards."""
        if self.stem in ("model", "pytorch_model", "diffusion_pytorch_model"):
            return f"{self.stem}{self.suffix}.index.json"
        return "model.safetensors.index.json" if self.suffix == ".safetensors" else "pytorch_model.bin.index.json"

    @property
    def pattern(self) -> str:
        """The set's names as one glob, `model-*-of-00003.safetensors`."""
        return f"{self.stem}-*-of-{self.present[0].rsplit('-of-', 1)[1]}"


_SHARD_FILE = re.compile(r"(.+)-(\d+)-of-(\d+)(\.[a-z]+)")


def shard_sets_of(weights: list[Path]) -> list[ShardSet] | None:
    """The shard sets `weights` make up, the largest first, when every one of them is a shard by its name
    (`<stem>-00001-of-0000N<suffix>`) and there are at least two; None otherwise.

    Example:
        >>> [s.missing for s in shard_sets_of([Path("model-00001-of-00003.safetensors"),
        ...                                    Path("model-00003-of-00003.safetensors")])]
        [['model-00002-of-00003.safetensors']]
    """
    found = [_SHARD_FILE.fullmatch(p.name) for p in weights]
    if len(weights) < 2 or not all(found):
        return None
    return _grouped_shards([m for m in found if m])


def _grouped_shards(found: list[re.Match[str]]) -> list[ShardSet]:
    groups: dict[tuple[str, str, str], dict[int, str]] = {}
    for match in found:
        stem, number, total, suffix = match.groups()
        groups.setdefault((stem, total, suffix), {})[int(number)] = match.group(0)
    sets = []
    for (stem, total, suffix), numbered in groups.items():
        width = len(total)
        missing = [f"{stem}-{number:0{width}d}-of-{total}{suffix}" for number in range(1, int(total) + 1)
                   if number not in numbered]
        present = [numbered[number] for number in sorted(numbered)]
        sets.append(ShardSet(stem, suffix, int(total), present, missing))
    return sorted(sets, key=lambda s: (-s.total, s.stem, s.suffix))


def several_shard_sets_message(sets: list[ShardSet]) -> str:
    """The refusal of a folder holding the shards of several checkpoints and no index."""
    described = "; ".join(f"{s.pattern} ({len(s.present)} of {s.total} shards"
                          + (f", {', '.join(s.missing[:3])}{', ...' if len(s.missing) > 3 else ''} missing" if s.missing
                             else "") + ")" for s in sets[:4]) + ("; ..." if len(sets) > 4 else "")
    return (f"folder holds the shards of {len(sets)} different checkpoints and no index: {described}; they are not "
            "merged (two saves, not one checkpoint split in two): fetch the index of the one you want from where "
            "it came from and delete the other set, or name one shard to read it alone")


def _pickled(path: Path) -> bool:
    """Whether a file starts as torch.save writes (a zip archive, or a legacy pickle), not as YAML or text."""
    from weightdoctor.checkpoint.pytorch_format import detect_pickle_format

    try:
        with open(path, "rb") as handle:
            return detect_pickle_format(handle.read(8)) is not None
    except OSError:
        return False


_LEADS_OUT = "leads out of the repo's Hub cache folder, to"
_NOT_THE_HUBS = "huggingface_hub links a snapshot's files to the repo's blobs/ only: a cache written by someone else?"


def named_by_repo(exc: WeightDoctorError, snapshot: Path, source: str, revision: str | None = None) -> Exception:
    """The same error about a cached snapshot folder or a file in it, named by the repo id it was reached by
    (`org/pipe`, and `org/pipe/text_encoder` for the folders it suggests) and the `--revision` asked for, the file
    (relative to the snapshot) and the snapshot's path kept. An index whose shards the snapshot lacks (a download
    stopped between shards, or limited by `--include`) says how many, and the download that fetches them."""
    inside = Path(exc.path) if exc.path else None
    if snapshot.name == "snapshots" and inside is not None and inside.parent == snapshot:
        # The snapshot itself is no folder (a FIFO, a file): read as a file, its parent `snapshots/` came as the
        # folder; the snapshot is the entry named, as plan-devices names it.
        snapshot = inside
    # Named by the repo id where the words say the file, not inside a Python string the message gives to paste
    # (`torch.jit.load('...')`, `numpy.load('...')`): `org/m/model.pt` names no file where the user stands, the
    # cached one does.
    message = re.sub(r"(?<!['\"])" + re.escape(f"{snapshot}/"), lambda _: f"{source.rstrip('/')}/", exc.message)
    repo_id = "/".join(source.rstrip("/").split("/")[:2])  # `org/pipe/unet` is a folder of org/pipe
    again = download_command(repo_id, revision)
    shards: list[str] = []
    missing: list[str] = []
    if inside is not None and inside != snapshot and inside.is_relative_to(snapshot):
        message = f"{inside.relative_to(snapshot).as_posix()}: {message}"
        if inside.exists() and (out := link_out_of_cache(inside)) is not None:  # a dangling link is said as one
            message += f" (it {_LEADS_OUT} {out}: {_NOT_THE_HUBS})"
        shards = index_shards(inside) if isinstance(exc, InvalidIndex) and inside.name.endswith(".json") else []
        missing = [shard for shard in shards if not (inside.parent / shard).exists()]
    # huggingface_hub links a file into a snapshot only once its blob is whole: a download cut short leaves no
    # link, only `blobs/<etag>.<8 hex>.incomplete` (which file it was, its name does not say).
    unfinished = _unfinished_downloads(snapshot) if missing or isinstance(exc, SourceNotFound) else 0
    cut = f"the repo's cache holds {unfinished} unfinished download{'s' if unfinished > 1 else ''} (blobs/*.incomplete)"
    hint = None
    if missing:
        hint = (f"the snapshot lacks {len(missing)} of the index's {counted(len(shards), 'shard', grouped=False)}"
                + (f" and {cut}" if unfinished else "") + f": fetch them with `{again}`{offline_download_caveat()}")
    elif unfinished:
        hint = f"{cut}: run `{again}` again{offline_download_caveat()}"
    others = _other_snapshots_with_weights(snapshot) if isinstance(exc, SourceNotFound) else []
    if others:
        # refs/main moved to a commit fetched in part (a config read after the repo changed): offline, the
        # weights cached for an earlier commit are still there, under --revision.
        shown = ", ".join(f"{commit[:12]}" + (f" ({', '.join(refs)})" if refs else "") for commit, refs in others[:3])
        pick = others[0][1][0] if others[0][1] else others[0][0][:12]
        message += f"; other cached revisions hold weights: {shown}: read one with --revision {shell_word(pick)}"
    if hint is None and not others and exc.message == NO_WEIGHT_FILE:
        # A snapshot holding only what was fetched (a config read by `AutoConfig`, a tokenizer): the weights
        # were never downloaded, which "folder holds no weight file" alone did not say.
        held = _snapshot_files(snapshot)
        shown = f"{', '.join(held[:4])}{', ...' if len(held) > 4 else ''}"
        if set(held) & _MODEL_CONFIG_NAMES:
            hint = f"the snapshot holds {shown} only: the weights were never downloaded; fetch them with `{again}`"
        elif held:
            # No model config either (tokenizer files, a README): the repo may well have no weights at all (a
            # tokenizer-only or dataset-like repo), so "never downloaded" would be a guess.
            hint = (f"the snapshot holds {shown} only, neither a model config nor weights: the repo may have no "
                    f"weights (a tokenizer-only or dataset-like repo?); if it has some, fetch them with `{again}`")
    if hint:
        message += f"; {hint}"
    at = f"revision {revision!r}, " if revision else ""
    return type(exc)(f"{message} ({at}the cached snapshot {snapshot})", source)


def _missing_path_hint(text: str) -> str:
    """What the user most likely meant by a path that does not exist: the same path with `/` for a Windows `\\`,
    or a close name beside it (`./bert-base` for `./bert-base-uncased`)."""
    if text == "-":  # the Unix "standard input": a checkpoint is read by offsets and memory maps, not as a stream
        return "; a checkpoint is not read from standard input: save it to a file and give its path"
    if "\\" in text:
        slashed = text.replace("\\", "/")
        if expand_user(slashed).exists():
            return f"; did you mean {slashed}? (\\ does not separate folders here, / does)"
    if re.match(r"[A-Za-z]:\\", text):
        return "; a Windows path: here folders are separated by / (under WSL, C:\\ is /mnt/c/)"
    if re.match(r"[A-Za-z]:/", text):  # as Python on Windows writes one
        return f"; a Windows path: there are no drive letters here (under WSL, {text[:2]}/ is /mnt/{text[0].lower()}/)"
    hint = variable_hint(text) or unicode_form_hint(text)
    if hint:
        return hint
    close = close_local_paths(text)
    return f"; did you mean {' or '.join(close)}?" if close else ""


# The config of a model (transformers, a PEFT adapter, a diffusers pipeline, Mistral's native params.json beside
# consolidated.safetensors): a repo that has one has weights too.
_MODEL_CONFIG_NAMES = {"config.json", "adapter_config.json", "model_index.json", "params.json"}


def _snapshot_files(snapshot: Path) -> list[str]:
    """The file names at the top of a cached snapshot (links to whole blobs), sorted."""
    try:
        return sorted(p.name for p in snapshot.iterdir() if p.is_file())
    except OSError:
        return []


def _unfinished_downloads(snapshot: Path) -> int:
    """How many `.incomplete` blobs the cached repo of `snapshot` (or of a folder in one) holds."""
    while snapshot.parent.name != "snapshots":
        if snapshot.parent == snapshot:
            return 0
        snapshot = snapshot.parent
    try:
        return sum(1 for _ in (snapshot.parent.parent / "blobs").glob("*.incomplete"))
    except OSError:
        return 0


def _other_snapshots_with_weights(snapshot: Path) -> list[tuple[str, list[str]]]:
    """Other snapshots of a cached repo whose top (or, for a folder of a snapshot such as a pipeline's `vae/`,
    that same folder) holds a weight file or an index, newest first, each with the refs (branches, tags) that
    name it."""
    folder = Path()
    while snapshot.parent.name != "snapshots":
        if snapshot.parent == snapshot:
            return []  # not inside a Hub cache snapshot
        folder, snapshot = Path(snapshot.name) / folder, snapshot.parent
    try:
        snapshots = snapshot.parent
        refs_dir = snapshots.parent / "refs"
        refs: dict[str, list[str]] = {}
        if refs_dir.is_dir():
            for ref in entries_under(refs_dir):
                # huggingface_hub's refs are 40 bytes: a ref of gigabytes (a sparse file) was read whole here.
                if ref.is_file() and ref.stat().st_size <= MAX_REF_BYTES:
                    refs.setdefault(ref.read_text(encoding="utf-8").strip(), []).append(
                        ref.relative_to(refs_dir).as_posix())
        found = []
        for other in snapshots.iterdir():
            if other.name == snapshot.name or not other.is_dir() or not (other / folder).is_dir():
                continue
            if weight_files_in(other / folder) or any((other / folder).glob("*.index.json")):
                found.append((other.stat().st_mtime, other.name))
    except (OSError, UnicodeDecodeError):
        return []
    return [(name, refs.get(name, [])) for _, name in sorted(found, reverse=True)]


def variant_of(name: str) -> str | None:
    """The variant a weight file's name carries, as from_pretrained's `variant=` names it; None for a plain name.

    Public because load_simulation (behind plan-devices' warnings) needs it as the reader does: a variant file
    (`model.fp16.safetensors`) is one from_pretrained reads only with `variant="fp16"`, not a file it skips.

    Example:
        >>> variant_of("model.fp16.safetensors"), variant_of("model.safetensors.index.fp16.json")
        ('fp16', 'fp16')
        >>> variant_of("model.safetensors") is None
        True

    Args:
        name: a file name, without its folder.

    Returns:
        The variant ("fp16", "ema"), or None.
    """
    sharded = _VARIANT_INDEX.fullmatch(name)
    if sharded:
        return sharded.group(1)
    stem, _, extension = name.removesuffix(".index.json").rpartition(".")
    if extension not in ("safetensors", "bin") or "." not in stem:
        return None
    return stem.rpartition(".")[2]


def _shard_problem(path: Path) -> str | None:
    """Why a shard an index names cannot be read (None: a regular file, through links). Each case is said as it
    is: a FIFO, a device or a folder reported as "does not exist" sent users looking for a missing download, and a
    name too long to open was an OSError line that named neither the index nor the shard."""
    import errno
    import stat

    try:
        mode = path.stat().st_mode
    except UnicodeEncodeError:  # `\ud800` in the index's JSON: a lone surrogate, which no file name encodes
        return "is not a file name (it holds an unpaired UTF-16 surrogate, not valid Unicode)"
    except ValueError:  # a NUL in the name: no file can have it
        return "is not a file name (it holds a NUL character)"
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return "is too long a name for this system to open"
        if path.is_symlink():
            return _dangling_message(path)
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "does not exist"
        return f"cannot be opened ({exc.strerror or type(exc).__name__})"
    if stat.S_ISREG(mode):
        return None
    return f"is not a regular file ({'a folder' if stat.S_ISDIR(mode) else _file_kind(path)})"


def _file_kind(path: Path) -> str:
    import stat

    mode = path.stat().st_mode
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def _folder_notes(folder: Path, chosen: Path) -> list[str]:
    """Warnings about a model folder that the file read does not show: a preferred file that is a broken link
    (read past, as from_pretrained does), only a dtype variant (which from_pretrained reads only when asked for
    it), sentence-transformers modules with weights of their own."""
    notes = [f"{name} is a link to {os.readlink(folder / name)}, which does not exist: {chosen.name} is read "
             "instead, as from_pretrained does" for name in PREFERRED_FILES
             if (folder / name).is_symlink() and not (folder / name).exists()]
    if _named_by_config(folder, chosen):
        others = [name for name in PREFERRED_FILES if (folder / name).is_file() and folder / name != chosen]
        notes.append(f"config.json names {chosen.relative_to(folder).as_posix()} as transformers_weights: it is read, "
                     "as from_pretrained reads it" + (f" ({', '.join(others)} beside it ignored)" if others else ""))
        return notes
    variant = variant_of(chosen.name)
    if variant is not None and chosen.parent == folder:
        notes.append(f"{chosen.name} is the {variant!r} variant and there is no plain file: from_pretrained reads "
                     f"it only with variant={variant!r} (diffusers and transformers alike)")
    merged = folder / "merged"
    if chosen.name.startswith("adapter_model") and merged.is_dir() and any(
            (merged / name).is_file() for name in PREFERRED_FILES):
        # axolotl's merge-lora saves the base with the adapter merged in to <output_dir>/merged, beside the adapter:
        # the report of the adapter's few MB did not say that the model a user most often wants is one folder down.
        notes.append(f"merged/ beside this adapter holds a whole model (where axolotl's merge-lora saves the base "
                     f"with the adapter merged in): this reads the adapter; point at {_pasteable(merged)} to read "
                     "the merged model")
    if chosen.parent == folder and (saves := _trainer_saves_beside(folder)):
        # A Trainer's output_dir: Trainer.save_model's final model at the top, the run's checkpoint-N/ saves below.
        # The final model is what from_pretrained(output_dir) loads, and read without a word of the saves: with
        # load_best_model_at_end it is the best save's weights, not the latest's.
        shown = ", ".join(f"{name}/" for name in saves[:4]) + (", ..." if len(saves) > 4 else "")
        notes.append(f"{shown} beside the model {'are a run' if len(saves) > 1 else 'is a run'}'s "
                     f"{'saves' if len(saves) > 1 else 'save'} to resume training from (a Trainer's checkpoint-N/), "
                     "not read: this reads the model at the folder's top, as from_pretrained(folder) loads it; point "
                     f"at {_pasteable(folder / saves[-1])} to read the "
                     f"{'highest-numbered, latest save' if len(saves) > 1 else 'save'}")
    if (folder / "modules.json").is_file():
        modules = sorted(p.name for p in folder.iterdir() if p.is_dir() and re.match(r"\d+_", p.name)
                         and any(q.suffix in (".safetensors", ".bin") for q in p.iterdir() if q.is_file()))
        if modules:
            one = len(modules) == 1
            notes.append(f"sentence-transformers module {plural(len(modules), 'folder')} "
                         f"{', '.join(m + '/' for m in modules)} {'holds' if one else 'hold'} weights "
                         f"of {'its' if one else 'their'} own, not in this report: point at "
                         f"{_pasteable(folder / modules[0])} to read them")
    return notes


def _trainer_saves_beside(folder: Path) -> list[str]:
    """The checkpoint-N/ subfolders of `folder` that are a Trainer's saves to resume from, in number order (at most
    the first 10,000 entries looked at, the latest 16 kept)."""
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in itertools.islice(entries, 10000)
                     if re.fullmatch(r"checkpoint-\d+", e.name) and e.is_dir()]
    except OSError:
        return []
    names.sort(key=natural_order)
    return [name for name in names[-_LATEST_SAVES_KEPT:] if is_training_save(folder / name)]


def _file_identity(path: Path) -> tuple[int, int] | None:
    """The device and inode `path` leads to, or None where it cannot be stat'ed."""
    try:
        found = path.stat()
    except OSError:
        return None
    return (found.st_dev, found.st_ino)


def _other_shard_sets(folder: Path, read: set[Path], chosen: Path) -> tuple[list[str], set[str]]:
    """One warning per shard set in `folder` of which nothing was read and that no other index beside names (an old
    `-of-00002` set beside the `-of-00003` set an index names; the shards of a safetensors checkpoint, without their
    index, beside the pytorch_model.bin read), and the names it covers. Such a set was passed over in silence when an
    index was read (its names looked like that index's shards), or called "weight files under names from_pretrained
    does not look for" when a single file was: neither said that it is another checkpoint, never merged with this.
    """
    try:
        with os.scandir(folder) as entries:
            found = [match for entry in itertools.islice(entries, 100_000)
                     if (match := _SHARD_FILE.fullmatch(entry.name)) and match.group(4) in (".safetensors", ".bin")
                     and entry.is_file()]
    except OSError:
        return [], set()
    if not found:
        return [], set()
    read_names = {p.name for p in read if p.parent.resolve() == folder.resolve()}
    # A shard read under another name (a link to it, `sub/../` in the index) is read all the same: the same file.
    read_files = {_file_identity(p) for p in read} - {None}
    read_names.update(match.string for match in found if _file_identity(folder / match.string) in read_files)
    named_elsewhere: set[str] = set()
    for index in folder.glob("*.index*.json"):
        if index.name not in read_names:
            named_elsewhere.update(index_shards(index))  # said with that index (`_ignored_beside`)
    if chosen.name.endswith(".json"):
        why = f"{chosen.name} is read, with the {counted(len(read_names - {chosen.name}), 'shard')} it names"
    else:
        why = f"{chosen.name} is read"
    why += " (as from_pretrained(folder) chooses)" if chosen.name in PREFERRED_FILES else ""
    said: list[str] = []
    covered: set[str] = set()
    for shard_set in _grouped_shards(found):
        if read_names.intersection(shard_set.present) or named_elsewhere.intersection(shard_set.present):
            continue
        if shard_set.missing:
            holds = (f"{len(shard_set.present)} of the {shard_set.total} shards of another checkpoint, "
                     f"{', '.join(shard_set.missing[:3])}{', ...' if len(shard_set.missing) > 3 else ''} missing")
        else:
            holds = f"the {shard_set.total} shards of another checkpoint"
        index = "" if chosen.name.endswith(".json") else \
            f", without their index {shard_set.index_name} (which from_pretrained needs to load them)"
        not_named = ", which the index read does not name" if chosen.name.endswith(".json") else ""
        said.append(f"{shard_set.pattern} ignored: {holds}{index}{not_named}; {why}, and the two are never merged: "
                    "name one of those shards to read it alone")
        covered.update(shard_set.present)
    return said, covered


def _siblings_not_read(folder: Path, read: set[Path], said: list[str],
                       covered: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """One warning naming the other formats a model folder holds, which neither this read nor from_pretrained(folder)
    loads: another framework's copy (gpt2's tf_model.h5, flax_model.msgpack, rust_model.ot, 64-8bits.tflite), a
    model's own release format (Mistral's consolidated.safetensors beside the shards), a weight file under another
    name (open_clip_model.safetensors), and subfolders of exports (onnx/, openvino/, coreml/, Llama 3's original/);
    [] when there is none. Names another warning already gives (`said`: pytorch_model.bin, variants, Accelerate's
    model_1) are left to it; subfolders of PyTorch weights (modules, components, runs) are not listed."""
    from weightdoctor.checkpoint import foreign

    def already_said(name: str) -> bool:
        return any(re.search(r"(?<![\w./-])" + re.escape(name) + r"(?![\w.-])", line) for line in said)

    def a_shard_of_an_index(name: str) -> bool:  # read with its index, or said with it (an index ignored)
        shard = _SHARD_NAME.fullmatch(name)
        return shard is not None and any(folder.glob(f"{glob_escape(shard.group(1).split('.')[0])}."
                                                      f"{shard.group(2)}.index*.json"))

    read_names = {p.resolve() for p in read}
    found: list[str] = []
    other_names: list[str] = []
    try:
        for name in foreign.foreign_files_in(folder):
            # The parts of a split GGUF read as the folder's checkpoint (`one_split_gguf_set`) are no sibling. Only a
            # .gguf name is resolved to see: a folder beside thousands of other files stats none of them (redteam14).
            if "/" not in name and not already_said(name) and not (
                    name.lower().endswith(".gguf") and (folder / name).resolve() in read_names):
                kind = foreign.sibling_format(name)
                found.append(f"{name} ({kind})" if kind else name)
        mistral_index = folder / MISTRAL_INDEX
        if mistral_index.is_file() and mistral_index.resolve() not in read_names and not already_said(MISTRAL_INDEX) \
                and (folder / "params.json").is_file():
            # Mistral Large's repos keep their own release sharded (consolidated-00001-of-00051.safetensors and
            # this index) beside the transformers shards: its shards are passed over below as an index's, and
            # the index itself was named by nothing, where a single consolidated.safetensors is.
            shards = sum(1 for _ in folder.glob("consolidated-*-of-*.safetensors"))
            found.append(f"{MISTRAL_INDEX} and its {counted(shards, 'shard')} (Mistral's own format, sharded, with "
                         "params.json: vLLM's --load-format mistral reads it)")
        for path in weight_files_in(folder):
            # Left to others: a PEFT adapter beside its merged model (said where the adapter is looked at), and a
            # .pkl, as often a tokenizer's or a scaler's pickle as weights.
            if path.name == "model_head.pkl" and not already_said(path.name) and (
                    (folder / "config_setfit.json").is_file() or (folder / "modules.json").is_file()):
                # SetFit's save_pretrained: the sentence-transformers body (read) beside its classification head,
                # which a classifier needs as much; a pickle that loading it runs, and never a word of it.
                found.append("model_head.pkl (SetFit's classification head: a joblib pickle of a scikit-learn "
                             "estimator or of SetFitHead, which SetFitModel.from_pretrained loads with joblib.load, "
                             "running the code of the classes it names; the weights read are the sentence-"
                             "transformers body only)")
                continue
            if path.name in covered or path.resolve() in read_names or already_said(path.name) \
                    or path.name.startswith("adapter_model.") \
                    or path.suffix == ".pkl" or a_shard_of_an_index(path.name):
                continue
            native = native_format(path)
            if native is not None:
                found.append(f"{path.name} ({native})")
            else:
                other_names.append(path.name)
        open_clip = [name for name in other_names if name in OPEN_CLIP_WEIGHTS]
        if open_clip and (folder / "open_clip_config.json").is_file():
            # timm's CLIP towers (timm/vit_base_patch16_clip_224.openai) keep open_clip's copy of the model beside
            # their own: "weight files under names from_pretrained does not look for" did not say whose they are.
            other_names = [name for name in other_names if name not in open_clip]
            found.append(f"{', '.join(open_clip)} (open_clip's copy of the weights, under its own names, with "
                         "open_clip_config.json: open_clip.create_model_from_pretrained reads it)")
        if other_names:
            found.append(f"{', '.join(other_names[:4])}{' and more' if len(other_names) > 4 else ''} (weight "
                         f"{'file' if len(other_names) == 1 else 'files'} under "
                         f"{'a name' if len(other_names) == 1 else 'names'} from_pretrained(folder) does not look "
                         "for)")
        with os.scandir(folder) as entries:  # the directory's file types: no stat of each of 100,000 files
            subs = _bounded_subfolders(sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir()))
        resolved_reads = [q.resolve() for q in read]  # once, not once per subfolder
        for sub in (folder / name for name in subs):
            if already_said(sub.name + "/") or any(q.is_relative_to(sub.resolve()) for q in resolved_reads) \
                    or not _few_entries(sub):
                continue
            others = foreign.foreign_files_in(sub)
            kinds = sorted({foreign.sibling_format(name) for name in others} - {""})
            if foreign.coreml_package(sub) == sub or foreign.coreml_packages_in(sub, depth=2):  # at the top too
                kinds.append("Core ML")
            if kinds:
                found.append(f"{sub.name}/ ({', '.join(kinds)})")
            elif (native := original_release(sub)) is not None:
                found.append(f"{sub.name}/ ({native})")  # Llama 3's original/
    except OSError:
        return []
    if not found:
        return []
    shown = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
    return [f"not read, and not loaded by from_pretrained(folder) either: {shown}; name one to read or identify it"]


# An export folder (onnx/, openvino/, coreml/, original/) holds a few files; a folder of more is a data set's, a
# run's logs or images beside the model, whose listing (every .bin's .xml looked for) took seconds on each read.
_SIBLING_FOLDER_ENTRIES = 1000
# The subfolders Hub repos keep exports and original releases in, looked into however many folders are beside them.
_EXPORT_FOLDERS = frozenset({"onnx", "openvino", "coreml", "original"})
# The highest-numbered subfolders looked into past that bound (the latest saves of a run, a few of them empty when
# the last save was cut short).
_LATEST_SAVES_KEPT = 16
_NUMBERED = re.compile(r"(.*\D|)\d+")


def _bounded_subfolders(names: list[str], *named: str | None) -> list[str]:
    """Of a folder's sorted subfolder names, those to look into: all of them, or past _SIBLING_FOLDER_ENTRIES the
    first ones, the exports' usual names, Core ML packages and any of `named` there.

    A model beside 40,000 folders (a data set's classes, a run's step folders) took over 10 s, each folder listed
    three ways. A Core ML package lies at the top as often as in coreml/ (model.mlpackage/): it sorted past the
    first 1,000 and went unnamed.

    Example:
        >>> _bounded_subfolders(["onnx", "unet"])
        ['onnx', 'unet']
    """
    from weightdoctor.checkpoint import foreign

    if len(names) <= _SIBLING_FOLDER_ENTRIES:
        return names
    kept = {name for name in names if name.lower() in _EXPORT_FOLDERS or name in named
            or name.lower().endswith(foreign.COREML_FOLDER_SUFFIXES)}
    # The highest-numbered too: a Trainer's output_dir of 1,500 saves (checkpoint-500 ... checkpoint-750000) put its
    # latest past the first 1,000 in string order, and the refusal named checkpoint-549500 as the run's latest save.
    # Only of names a save counter ends (the message's "highest-numbered" is said of those alone).
    saves = (name for name in names if (match := _NUMBERED.fullmatch(name)) and _SAVE_SERIES.search(match[1]))
    latest = heapq.nlargest(_LATEST_SAVES_KEPT, saves, key=natural_order)
    return sorted({*names[:_SIBLING_FOLDER_ENTRIES], *kept, *latest})


def _few_entries(folder: Path) -> bool:
    """Whether `folder` lists at most `_SIBLING_FOLDER_ENTRIES` entries (read no further than one past them)."""
    with os.scandir(folder) as entries:
        return sum(1 for _ in itertools.islice(entries, _SIBLING_FOLDER_ENTRIES + 1)) <= _SIBLING_FOLDER_ENTRIES


_SHARD_NAME = re.compile(r"(.+)-\d+-of-\d+\.(safetensors|bin)")


OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # what open_clip's hub loads
def original_release(folder: Path) -> str | None:
    """What a subfolder holding a model's own release of its weights is (Llama 3's `original/`: consolidated.00.pth
    beside params.json; Llama 3.1 405B's a level down, original/mp16/), as `native_format` names it; None for any
    other folder (a sentence-transformers module's, an export's)."""
    try:
        subfolders = sorted(sub for sub in folder.iterdir() if sub.is_dir() and not sub.is_symlink())[:8]
        for place in (folder, *subfolders):
            kind = next((kind for path in weight_files_in(place) if (kind := native_format(path)) is not None), None)
            if kind is not None:
                return kind
    except OSError:
        return None
    return None


MISTRAL_INDEX = "consolidated.safetensors.index.json"  # Mistral's own release, sharded (Mistral Large 2)


def native_format(path: Path) -> str | None:
    """What a weight file of a model's own release format is (Meta's and Mistral's `consolidated.*` with a
    params.json, kept beside the Hugging Face files), for `_siblings_not_read` and for what convert and shard leave
    out; None for any other file."""
    if not path.name.startswith("consolidated.") or not (path.parent / "params.json").is_file():
        return None
    if path.suffix == ".safetensors":
        return "Mistral's own format, with params.json: mistral_inference and vLLM's --load-format mistral read it"
    return ("Meta's original format, with params.json: Meta's llama code reads it, transformers' "
            "convert_llama_weights_to_hf.py converts it")


def _named_by_config(folder: Path, chosen: Path) -> bool:
    """Whether `chosen` is the file folder's config.json names with `transformers_weights`."""
    try:
        return explicit_weights(folder) == chosen
    except WeightDoctorError:
        return False


def _variant_last(path: Path) -> tuple[int, str]:
    return path.name.count("."), path.name


def _ignored_beside(folder: Path, chosen: Path) -> list[str]:
    """A warning for each other preferred weight file of `folder`: from_pretrained reads `chosen` only."""
    if chosen.name.endswith("_model_states.pt") and any(folder.glob("*zero_pp_rank_*_optim_states.pt")):
        # Shown only once the model states were read: ZeRO-3's placeholders are refused first
        # (`_refuse_zero3_placeholders`), so this is a ZeRO-1/2 step, whose model states hold the weights in the
        # training dtype and whose partitions hold the optimizer state with the fp32 master copies.
        return [f"{chosen.name} is read: it holds the weights in the dtype they were trained in; the "
                "*zero_pp_rank_*_optim_states.pt partitions beside it (the optimizer state and the fp32 master "
                "weights) are not read: DeepSpeed's zero_to_fp32.py gathers those into one fp32 state dict"]
    if _named_by_config(folder, chosen):
        return []  # said by `_folder_notes`
    stem = chosen.name.split(".")[0]
    variants = sorted(p.name for p in folder.glob(f"{stem}.*.safetensors") if p != chosen and p.name != chosen.name)
    said: list[str] = []
    if variants and "." not in chosen.name.split(".safetensors")[0] and variant_of(chosen.name) is None:
        said.append(f"{', '.join(variants[:4])} ignored: variants of {chosen.name}, which from_pretrained reads "
                    "unless asked for a variant (name one to read it)")
    if chosen.name not in PREFERRED_FILES:
        if chosen.suffix == ".safetensors" and chosen.parent == folder:
            # The one safetensors file beside pickles of other names: diffusers', peft's and open_clip's folders can
            # keep both copies (diffusion_pytorch_model.bin, adapter_model.bin, open_clip_pytorch_model.bin), and
            # each library loads the safetensors one first.
            pickles = [p.name for p in weight_files_in(folder) if p.suffix != ".safetensors"]
            if pickles:
                said.append(f"{', '.join(pickles[:4])}{' and more' if len(pickles) > 4 else ''} ignored: "
                            f"{chosen.name} is read (a folder's one safetensors file comes first, as diffusers, "
                            "peft and open_clip load it; name a file to read another)")
        return said
    # Variants of the other format (`model.fp16.safetensors.index.json` beside a pytorch_model.bin).
    others = sorted(p.name for p in folder.iterdir() if _OTHER_VARIANT.fullmatch(p.name) and p.name not in variants
                    and not p.name.startswith(stem + "."))
    if others:
        said.append(f"{', '.join(others[:4])} ignored: dtype variants, which from_pretrained reads only when asked "
                    "for one (variant=...)")
    # Accelerate's save_state writes the i-th prepared model (i > 0) as model_i.safetensors / pytorch_model_i.bin
    # beside the first model's model.safetensors: another model (a GAN's discriminator, an EMA copy), not a part.
    numbered = re.compile(re.escape(stem) + r"_\d+" + re.escape(chosen.name[len(stem):]))  # once, not per name
    more = sorted((p.name for p in folder.iterdir() if numbered.fullmatch(p.name) and p.is_file()), key=natural_order)
    if more:
        said.append(f"{', '.join(more[:4])}{' and more' if len(more) > 4 else ''} ignored: Accelerate's save_state "
                    f"writes each prepared model to a file of its own ({chosen.name} the first, {more[0]} the "
                    "next): only the first is read; name one to read it")
    ignored = [name for name in PREFERRED_FILES if name != chosen.name and (folder / name).is_file()]
    if ignored and chosen.name.endswith(".index.json"):
        # A safetensors index that names pytorch_model.bin as a shard: read (and scanned) as one, not ignored.
        named = {posixpath.normpath(shard) for shard in index_shards(chosen)}
        ignored = [name for name in ignored if name not in named]
    return said + [f"{name} is ignored: {chosen.name} comes first, as from_pretrained chooses" for name in ignored]


_VARIANT_INDEX = re.compile(r".+\.(?:safetensors|bin)\.index\.([^.]+)\.json")
_OTHER_VARIANT = re.compile(r"(model|pytorch_model)(\.[^.]+\.(safetensors|bin)(\.index\.json)?"
                            r"|\.(safetensors|bin)\.index\.[^.]+\.json)")


def natural_order(name: str) -> tuple[str | int, ...]:
    """Sort key reading the digit runs of `name` as numbers: `part-2.bin` before `part-10.bin`."""
    return tuple(int(part) if index % 2 else part for index, part in enumerate(_DIGIT_RUNS.split(name)))


_DIGIT_RUNS = re.compile(r"(\d+)")


def _missing_shards(index_path: Path, shards: list[str]) -> str:
    """How many of a local index's shards are missing, when some are and some are not (a download or copy stopped
    between shards), as a hint; "" in a Hub cache snapshot, whose error says the `hf download` that fetches them
    (`named_by_repo`)."""
    if snapshot_commit(index_path) is not None:
        return ""
    # A name the folder does not list is missing without a stat: one stat (and one Path) per shard made an index
    # of a million shard names take seconds for this hint alone. Names in subfolders, and names listed (a link
    # may dangle), are still looked at; os.path.exists, not Path.exists: a name too long to open raises from the latter.
    # Compared case-folded and NFC-normalized: a case-insensitive (or normalizing, macOS) file system opens
    # `Model.safetensors` by a name it lists as `model.safetensors`, so only a name that differs otherwise is missing.
    import unicodedata

    def folded(name: str) -> str:
        return unicodedata.normalize("NFC", name).casefold()

    folder = str(index_path.parent)
    try:
        listed: set[str] | None = {folded(name) for name in os.listdir(folder)}
    except OSError:
        listed = None
    missing = [shard for shard in shards
               if (listed is not None and "/" not in shard and folded(shard) not in listed)
               or not os.path.exists(os.path.join(folder, shard))]
    unfinished = _local_dir_unfinished(index_path.parent) if missing else 0
    # `hf download --local-dir` cut short in a shard: its partial file is in the folder's .cache/huggingface/.
    cut = (f"; `hf download --local-dir` left {counted(unfinished, 'unfinished download', grouped=False)} here "
           "(.cache/huggingface/download/*.incomplete): run that download again") if unfinished else ""
    if not missing or len(missing) == len(shards):
        return f" ({cut[2:]})" if cut else ""  # none missing, or the index alone: the shard named says as much
    named = f": {_first(missing)}{', ...' if len(missing) > 3 else ''}" if len(missing) > 1 else ""
    return (f" ({len(missing)} of its {len(shards)} shards {plural(len(missing), 'is', 'are')} missing{named}; "
            "a download or copy that stopped "
            f"between shards? fetch or copy {plural(len(missing), 'it', 'them')} beside the index{cut})")


def _complete_index_beside(index_path: Path) -> str:
    """Where an index misses shards: the other format's index beside it whose shards are all there (a repo with
    both model.safetensors.index.json and pytorch_model.bin.index.json, partly downloaded), as a hint; else ""."""
    name = index_path.name
    other = (name.replace("model.safetensors.index", "pytorch_model.bin.index") if "safetensors" in name
             else name.replace("pytorch_model.bin.index", "model.safetensors.index"))
    if other == name or not (index_path.parent / other).is_file():
        return ""
    try:
        index = read_json(index_path.parent / other)
    except (WeightDoctorError, OSError):
        return ""
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        return ""
    shards = {shard for shard in weight_map.values() if isinstance(shard, str) and shard}
    if not shards or any(os.path.isabs(s) or ".." in Path(s).parts or _shard_problem(index_path.parent / s)
                         for s in shards):
        return ""
    load = "from_pretrained reads them with use_safetensors=False" if "safetensors" in name else \
        "from_pretrained prefers them"
    return f"; {other} beside it has all {len(shards)} of its shards here: name it to read those ({load})"


def _read_index(builder: _Builder, index_path: Path) -> list[str]:
    index = read_json(index_path)
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise InvalidIndex("index has no 'weight_map' object", str(index_path))
    weight_map: dict[str, Any] = index["weight_map"]
    if not weight_map:
        raise InvalidIndex("index has an empty 'weight_map': it names no tensor and no shard", str(index_path))
    folder = os.path.normpath(os.path.abspath(index_path.parent))
    builder.files.append(
        CheckpointFile(index_path, builder.relpath(index_path), "index", "json", index_path.stat().st_size)
    )
    # A dict keeps the order of first appearance and finds a name in constant time: a list's `in` made an index
    # of 80,000 distinct shard names (2.5 MB) take 26 s before the first shard was even looked at.
    # Each shard's first spelling in the index, what an error quotes: `https://x/a.safetensors` was quoted as
    # `https:/x/a.safetensors`, a name the index does not hold.
    distinct: dict[str, str] = {}
    # One shard however the index spells it (`./a.safetensors` and `a.safetensors`: transformers opens both, the
    # same file); a name that is no string is refused below.
    spelled: dict[str, str] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard:
            raise InvalidIndex(f"weight_map entry {name!r} is not a file name", str(index_path))
        if shard.endswith("/"):
            # normpath (and Path) drop the slash and the shard was read; transformers joins the name as it is and
            # opening "a.safetensors/" fails (No such file or directory).
            raise InvalidIndex(f"shard {shard!r} named by the index (for {name!r}) ends in '/', which names a folder: "
                               "from_pretrained cannot open it", str(index_path))
        same = spelled.get(shard)
        if same is None:
            # `.` and doubled slashes only: `x/..` is left for the file system to resolve, as it resolves it for
            # transformers (through a link, or not at all where `x` is missing)
            same = spelled[shard] = shard if ".." in shard.split("/") else posixpath.normpath(shard)
        distinct.setdefault(same, shard)
    shards = list(distinct)
    # Shard after shard, as the writer laid the tensors out (model-00001-of-N first): the weight_map is sorted
    # by tensor name, so its order of first appearance mixes the shards. Numbers compare as numbers
    # (`part-2` before `part-10`), for shard names written without zero padding.
    shards.sort(key=natural_order)
    warnings: list[str] = []
    seen: dict[str, str] = {}
    # Per shard, and per (listed, actual) pair: names, said in one line each (an index of none of 300,000 names
    # printed 300,000 warnings).
    unlisted: dict[str, list[str]] = {}
    misplaced: dict[tuple[str, str], list[str]] = {}
    # One file under several spellings (`sub/../a.safetensors`, a link beside it): transformers opens each name and
    # loads the same tensors again; it was refused as "tensor 'x' is in both a and sub/../a". Read once, said once.
    index_stat = os.stat(index_path)
    read_as: dict[tuple[int, int], str] = {(index_stat.st_dev, index_stat.st_ino): ""}
    aliases: dict[str, str] = {}
    for shard in shards:
        shard_path = (index_path.parent / shard)
        # Judged on the names, not through symlinks: a Hub cache snapshot links every shard to ../../blobs.
        lexical = os.path.normpath(os.path.abspath(shard_path))
        if lexical == folder:  # `.`, `sub/..`: the index's own folder, which is no file and not outside it
            raise InvalidIndex(f"index names its own folder as a shard: {distinct[shard]!r}", str(index_path))
        if os.path.isabs(shard) or not lexical.startswith(folder + os.sep):
            raise InvalidIndex(f"index points outside its folder: {distinct[shard]!r}", str(index_path))
        problem = _shard_problem(shard_path)
        if problem is not None:
            beside = _complete_index_beside(index_path)  # the better answer, where there is one
            if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", distinct[shard]):
                problem += " (it is a URL: an index names files beside it, which from_pretrained opens there)"
            spellings = [distinct[name] for name in shards]
            raise InvalidIndex(f"shard {distinct[shard]!r} named by the index {problem}"
                               + (beside or _missing_shards(index_path, spellings)), str(index_path))
        shard_stat = os.stat(shard_path)
        first = read_as.setdefault((shard_stat.st_dev, shard_stat.st_ino), shard)
        if first == "":
            # Read as a weight file, the index was said to be "not a safetensors file", as if it were named by mistake.
            raise InvalidIndex(f"shard {distinct[shard]!r} named by the index is the index itself, not a weight file",
                               str(index_path))
        if first != shard:
            aliases[shard] = first
            continue
        infos = builder.add_weight_file(shard_path)
        if builder.relpath(shard_path) in builder.ggufs:
            # An index of GGUF files was read as "gguf (sharded)" (or, beside safetensors shards, its names said to
            # be "in no shard"): from_pretrained opens an index's shards with safetensors or torch.load, and loads a
            # GGUF file alone (gguf_file=), a split GGUF by its own split.* metadata.
            raise InvalidIndex(f"shard {distinct[shard]!r} named by the index is a GGUF file (llama.cpp): "
                               "from_pretrained opens an index's shards with safetensors or torch.load, neither of "
                               "which reads it; a GGUF file is read alone (weightdoctor inspect FILE.gguf)",
                               str(index_path))
        for info in infos:
            if info.name in seen:
                earlier = seen[info.name]  # read whole already: what it holds is known too
                raise InvalidIndex(f"tensor {info.name!r} is in both {earlier} and {shard}"
                                   + _foreign_shard(weight_map, spelled, info.name, (earlier, shard),
                                                    {shard: [i.name for i in infos],
                                                     earlier: [n for n, file in seen.items() if file == earlier]}),
                                   str(index_path))
            seen[info.name] = shard
            listed = weight_map.get(info.name)
            listed = spelled.get(listed, listed) if isinstance(listed, str) else listed
            if listed is None:
                unlisted.setdefault(shard, []).append(info.name)
            elif listed != shard:
                misplaced.setdefault((listed, shard), []).append(info.name)
    also: dict[str, list[str]] = {}
    for other, first in aliases.items():
        also.setdefault(first, []).append(distinct[other])
    for first, others in also.items():
        warnings.append(f"the index names {distinct[first]!r} also as {_first(others)}"
                        f"{f' and {len(others) - 3:,} more' if len(others) > 3 else ''}: the same file, read once")
    for shard, names in unlisted.items():
        warnings.append(f"{shard} holds {names[0]!r}, which the index does not list" if len(names) == 1 else
                        f"{shard} holds {len(names):,} tensors the index does not list, e.g. {_first(names)}")
    for (listed, shard), names in misplaced.items():
        if aliases.get(listed) == shard:
            continue  # listed under another spelling of the file it is in (known only once both were looked at)
        warnings.append(f"the index puts {names[0]!r} in {listed} but it is in {shard}" if len(names) == 1 else
                        f"the index puts {len(names):,} tensors in {listed} but they are in {shard}, "
                        f"e.g. {_first(names)}")
    missing = [name for name in weight_map if name not in seen]
    if missing:
        raise InvalidIndex(
            f"{counted(len(missing), 'tensor')} listed in the index {plural(len(missing), 'is', 'are')} in no shard, "
            f"e.g. {missing[0]!r} "
            f"(listed in {weight_map[missing[0]]})",
            str(index_path),
        )
    if not isinstance(index.get("metadata"), dict):
        # transformers' get_checkpoint_shard_files does `index["metadata"]["all_checkpoint_keys"] = ...`: an index
        # written by hand with its weight_map alone failed from_pretrained with KeyError: 'metadata' (5.25 measured).
        what = "no 'metadata' entry" if "metadata" not in index else \
            f"a 'metadata' that is {_json_kind(index['metadata'])}, not an object"
        warnings.append(f"the index has {what}: transformers' from_pretrained fails reading it (add "
                        '"metadata": {} to it)')
    total_size = index.get("metadata", {}).get("total_size") if isinstance(index.get("metadata"), dict) else None
    actual = sum(t.nbytes for t in unique_tensors(builder.tensors))
    # Writers differ on tied weights in .bin shards: counted once (huggingface_hub) or under every name.
    every_name = sum(t.nbytes for t in builder.tensors)
    if isinstance(total_size, (int, float)) and not isinstance(total_size, bool) and total_size not in (
            actual, every_name):
        warnings.append(f"index metadata.total_size is {total_size} but the shards hold {actual} bytes")
    return warnings


def _foreign_shard(weight_map: dict[str, Any], spelled: dict[str, str], name: str, shards: tuple[str, str],
                   names_of: dict[str, list[str]]) -> str:
    """What a tensor found in two shards says of them: the one the index does not put it in is no shard of this
    index (a shard of another upload or another sharding, copied under its name), with what it holds and lacks of
    the index's; "" where the index puts the tensor in neither. `names_of`: the tensor names of the shard read last.

    from_pretrained does not refuse it: it loads the other model's tensors that file holds (the index's own ones
    lost) and starts at random each tensor the index puts there that the file lacks (transformers 5.25 measured).

    Example:
        >>> said = _foreign_shard({"a": "s1", "b": "s2", "c": "s2"}, {}, "a", ("s1", "s2"), {"s2": ["a", "b"]})
        >>> said[:58]
        ': the index puts it in s1: s2 is no shard of this index (i'
        >>> said[58:120]
        't holds 1 tensor the index puts in other shards and lacks 1 of'
    """
    listed = weight_map.get(name)
    listed = spelled.get(listed, listed) if isinstance(listed, str) else listed
    if listed not in shards:
        return ""
    odd = shards[1] if listed == shards[0] else shards[0]
    own = [n for n, file in weight_map.items() if isinstance(file, str) and spelled.get(file, file) == odd]
    held = set(names_of.get(odd, ()))
    lacks = sum(n not in held for n in own)
    if own and odd in names_of and not lacks:
        # It holds every tensor the index puts in it: one of this index's shards, and "no shard of this index;
        # fetch it again" was false. An index naming the tensor twice (`"a": "s1", ..., "a": "s2"`, JSON keeping
        # the last) or a writer that saved it twice.
        return (f": the index puts it in {listed}, and {odd}, which the index names for "
                f"{counted(len(own), 'other tensor')}, holds it too (saved in both, or named twice in "
                "the index's weight_map, where JSON keeps a name's last entry): re-save the checkpoint, or remove "
                f"{name!r} from {odd}")
    if odd not in names_of:
        return f": the index puts it in {listed}: {odd} is no shard of this index; fetch {odd} again"
    holds = names_of[odd]
    elsewhere = sum(spelled.get(weight_map.get(n), weight_map.get(n)) != odd for n in holds if n in weight_map)
    return (f": the index puts it in {listed}: {odd} is no shard of this index (it holds {elsewhere:,} "
            f"tensor{'s' if elsewhere != 1 else ''} the index puts in other shards and lacks {lacks:,} of the "
            f"{len(own):,} the index lists for it: a shard of another upload or another sharding, copied under this "
            f"name?); fetch {odd} again")


def _json_kind(value: Any) -> str:
    """What a JSON value is, in words: `null`, a list, a string, a number, true or false, an object.

    Example:
        >>> _json_kind(None), _json_kind([1]), _json_kind(False)
        ('null', 'a list', 'false')
    """
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return {list: "a list", str: "a string", dict: "an object"}.get(type(value), "a number")


def _first(names: list[str], count: int = 3) -> str:
    """The first `count` names, quoted: `'a', 'b', 'c'`."""
    return ", ".join(map(repr, names[:count]))


def said_of_address(exc: SourceNotFound, typed: str, what: str = "") -> SourceNotFound:
    """A repo named by a Hub address or URI (`hf://org/name@v1`, a repo's web page) that was not found: said of the
    address as typed, without "is not a local path" (the address was read as the repo it names, not as a path)."""
    message = re.sub(r"^('[^']*') is not a local path, and (revision '[^']*') of it ", r"\2 of \1 ", exc.message,
                     count=1).replace(" is not a local path and ", " ", 1)
    located = hub_location(typed)
    # Where the revision was typed in the address: `hf://org/name@mian`, or a web page's `/tree/mian`,
    # `/blob/mian/...`, `/resolve/mian/...` (the web page's form said `--revision main`, refused beside it too).
    spot = re.search(rf"(@|/(?:tree|blob|resolve)/){re.escape(located.revision)}(?=[/?#]|$)", typed) if (
        located is not None and located.revision) else None
    if spot is not None:
        # The ref meant goes in the same place, as `--revision main` beside an address naming @mian would be
        # refused as two revisions.
        message = re.sub(r"did you mean --revision (\S+) \(cached\)\?",
                         lambda match: f"did you mean {typed[:spot.start()]}{spot[1]}{match[1]}{typed[spot.end():]} "
                                       "(cached)?",
                         message)
    return SourceNotFound(what + message, path=typed)


def _address_of(located: HubLocation, revision: str | None, inside: str) -> str:
    """The hf:// address of a place in a repo (`hf://datasets/org/d@v1/ckpt`), as weightdoctor reads it back.

    Example:
        >>> _address_of(HubLocation("model", "org/m", None, "unet/config.json"), "v1", "unet")
        'hf://org/m@v1/unet'
    """
    kind = "" if located.repo_type == "model" else f"{located.repo_type}s/"
    return f"hf://{kind}{located.repo_id}" + (f"@{revision}" if revision else "") + (f"/{inside}" if inside else "")


def _said_of_source(exc: WeightDoctorError, path: Path, typed_file: tuple[str, str] | None, repo_id: str | None,
                    root: Path, text: str, revision: str | None) -> Exception:
    """An error about a source's file as the source was typed: of its Hub address (`_said_as_typed`), or of the repo
    id and revision (a snapshot's file, not only a path deep in the cache: `named_by_repo`); else `exc` itself."""
    if typed_file is not None:
        return _said_as_typed(exc, path, *typed_file)
    if repo_id is None:
        return exc
    return named_by_repo(exc, root, text, revision)


def _said_as_typed(exc: WeightDoctorError, file: Path, typed: str, folder_address: str) -> WeightDoctorError:
    """An error about a repo's file named by its Hub address: said of the address typed, its folder (which a config's
    error points at) by that folder's address, and the cached file it was read from kept at the end."""
    message = exc.message.replace(f"({file.parent}, ", f"({folder_address}, ")
    return type(exc)(f"{message} (read from the cached file {file})", typed)


def open_checkpoint(
    source: str | os.PathLike[str],
    *,
    revision: str | None = None,
    key: str | None = None,
    allow_config_only: bool = False,
    structure_only: bool = False,
    gguf_refused_by: str | None = None,
) -> Checkpoint:
    """Open any checkpoint source and describe it, reading headers (safetensors) or a memory map (pickles).

    Example:
        >>> ckpt = open_checkpoint("bert-base-uncased")      # a repo id, from the cache  # doctest: +SKIP
        >>> ckpt.format, ckpt.num_params, ckpt.tensors[0].name  # doctest: +SKIP

    Args:
        source: a weight file, a model folder, an index JSON, a `config.json`, or a Hub repo id.
        revision: the Hub revision (branch, tag or commit) for a repo id.
        key: dotted path of the state dict inside a training checkpoint (found automatically if None).
        allow_config_only: accept a config without weights (for commands that plan from the config).
        structure_only: the caller needs names, shapes and dtypes first; for an uncached repo id with
            safetensors weights, read the headers on the Hub instead of downloading the weights (values
            are then downloaded file by file on first `load_tensor`).
        gguf_refused_by: the command (convert, shard, plan-devices) that does not take a GGUF file: one is refused,
            in one line saying what reads it (`gguf_format.refuse_for`), named as the source was typed.

    Raises:
        SourceNotFound, UnsupportedFormat, CorruptCheckpoint, InvalidIndex, UnsafePickle.
    """
    try:
        return _open_checkpoint(source, revision=revision, key=key, allow_config_only=allow_config_only,
                                structure_only=structure_only, gguf_refused_by=gguf_refused_by)
    except WeightDoctorError:
        raise
    except Exception as exc:
        # Errors of ours name their file. Any other (a library failing on odd bytes, or a bug) is reported as
        # unexpected, and should still say which of a command's sources it came from.
        if not hasattr(exc, "weightdoctor_source"):
            exc.weightdoctor_source = os.fspath(source)  # type: ignore[attr-defined]
        raise


def _one_shard_of_several(path: Path, typed: str | None = None) -> list[str]:
    """A warning when `path` is one shard (`model-00001-of-00003.safetensors`) of a sharded checkpoint: after
    `shard`, inspecting one shard counted its tensors alone and diff-keys said the others "will not load". `typed`:
    the source as typed when it is not `path` (a Hub repo's file, `org/m/model-00001-of-00003.safetensors`), whose
    index is named in the same form rather than by its path deep in the Hub cache."""
    found = re.fullmatch(r"(.+)-0*(\d+)-of-0*(\d+)(\.[A-Za-z]+)", path.name)
    if found is None or int(found.group(3)) < 2:
        return []
    index = path.with_name(f"{found.group(1)}{found.group(4)}.index.json")
    try:
        has_index = index.is_file()
    except OSError:  # the index's name is longer than the shard's ("-1-of-2" < ".index.json"): past 255 bytes
        has_index = False
    # The name alone says "shard" only in the Hub's own spelling (`-00001-of-00003`, five digits each, as
    # transformers, diffusers and `shard` write it; six or more from writers that pad wider, and from huggingface_hub
    # past 99999 shards): `fold-1-of-5.pt`, a whole model of a 5-fold cross-validation, is not one. Without that
    # spelling, an index beside it has to say so.
    if not has_index and re.search(r"-\d{5,}-of-\d{5,}\.[A-Za-z]+$", path.name) is None:
        return []
    siblings = [p for p in path.parent.glob(f"{glob_escape(found.group(1))}-*-of-*{found.group(4)}")
                if p != path and re.fullmatch(rf"{re.escape(found.group(1))}-0*\d+-of-0*{int(found.group(3))}"
                                              rf"{re.escape(found.group(4))}", p.name)]
    if has_index:
        # Typed ending with the shard's name (`org/m/...`, `hf://org/m@v1/...`, a /blob/ page): its index the same way.
        named = typed[:-len(path.name)] + index.name if typed and typed.endswith("/" + path.name) else str(index)
        whole = f"its index {shell_word(named, argument=True)} (or the folder) reads the whole checkpoint"
    elif siblings:
        # The folder without the index is refused (from_pretrained needs it): naming the folder would not help.
        whole = (f"the other shards are beside it but not their index {index.name}, which reading them all needs: "
                 "fetch it from where the shards came from")
    else:
        whole = "the other shards are not beside it"
    return [f"{path.name} is shard {int(found.group(2))} of {int(found.group(3))}: only its own tensors are read; "
            + whole]


def _recorded_missing(snapshot: Path, folder: str) -> str | None:
    """A file of `folder` that huggingface_hub's `.no_exist/<commit>/` marks as absent from the repo at the snapshot's
    commit (`vae/config.json`), or None: then the folder is not the repo's, rather than not downloaded yet."""
    marks = snapshot.parent.parent / ".no_exist" / snapshot.name / folder
    try:
        with os.scandir(marks) as entries:
            found = sorted(entry.name for entry in entries if entry.is_file())
    except OSError:
        return None
    return f"{folder.strip('/')}/{found[0]}" if found else None


def dangling_link(path: Path, text: str) -> SourceNotFound:
    """The error for a path that is a symbolic link leading nowhere, which is no repo id to look up either. In a Hub
    cache's snapshot, a file whose blob is gone: a damaged cache entry, and the download that mends it."""
    if (broken := broken_cache_entry(path)) is not None:
        return SourceNotFound(broken, text)
    return SourceNotFound(f"a symbolic link to {os.readlink(path)} that does not resolve (missing target, or a loop "
                          "of links)", text)


def missing_path_message(text: str) -> str:
    """Why the local path `text` (no repo id, no address) cannot be read: too long for the system to open, or
    "no such file or directory" with what was most likely meant."""
    length = too_long(os.fspath(expand_user(text)))
    return f"cannot be opened: {length}" if length else f"no such file or directory{_missing_path_hint(text)}"


def _open_checkpoint(
    source: str | os.PathLike[str],
    *,
    revision: str | None,
    key: str | None,
    allow_config_only: bool,
    structure_only: bool,
    gguf_refused_by: str | None = None,
) -> Checkpoint:
    text = os.fspath(source)
    revision = normalize_revision(revision)
    if not text.strip():
        # Path("") is the current folder: `weightdoctor inspect "$MODEL"` with MODEL unset must not read it.
        raise UsageError("the source is an empty string: give a checkpoint file, a folder or a Hub repo id")
    check_revision(revision)
    path = expand_user(text)
    repo_id = None
    # Asked once (each is a stat): the local path is read as typed unless a Hub address below replaces it.
    exists = path_exists(path)
    if not exists and path_exists(path, link=True):
        # Not a repo id to look up: a link that leads nowhere (its target is gone, or links loop).
        raise dangling_link(path, text)
    located = hub_location(text) if not exists else None
    given = text  # the source as typed (`hf://org/name@v1`), which `source` keeps once it is read as `org/name`
    if located is not None:
        # `hf://org/name@v1/unet`, a repo's web address, `datasets/org/name`: huggingface_hub's own parse of it.
        if located.revision is not None and revision is not None and located.revision != revision:
            raise UsageError(f"{text} names revision {located.revision!r} and --revision {revision!r}: give one")
        revision = located.revision or revision
        inside = located.path_in_repo
        if located.repo_type != "model":
            try:
                path = cached_typed_snapshot(located, revision, text) / inside
            except SourceNotFound as exc:
                if text.startswith(("hf://", "https://", "http://")) or repo_cached(located.repo_id,
                                                                                    located.repo_type):
                    raise
                # `datasets/mnist/ckpt` without a scheme, of a repo not cached at all, is as likely a mistyped path
                # in a local `datasets/` folder: say so first, with its close local names, as for any missing path.
                raise SourceNotFound(f"no such file or directory{_missing_path_hint(text)}; read as a Hub "
                                     f"address, {exc.message}", text) from exc
            if not path.exists():
                raise SourceNotFound(f"the {located.repo_type} repo {located.repo_id} has no {inside} (its cached "
                                     f"snapshot is {path.parents[inside.count('/')]})", text)
        elif inside and (located.names_file
                         or inside.rpartition("/")[2].endswith((".safetensors", ".json") + PICKLE_SUFFIXES)
                         or _cached_file(located.repo_id, inside, revision)):
            # A file named by its address: that file, not the weights its folder's fetch would pick (one format,
            # no variant); one of another format too (a blob page of `model.onnx`, `model.gguf`) once cached, so
            # it is refused as that format rather than as "no folder".
            repo_id, text = located.repo_id, located.repo_id
            try:
                path = hub_file(located.repo_id, inside, revision)
            except SourceNotFound as exc:
                if inside in exc.message:  # says what is missing (and how to fetch it, or the Hub's reply)
                    raise SourceNotFound(exc.message, path=given) from exc
                fetch = download_command(located.repo_id, revision).replace(
                    f"hf download {shell_word(located.repo_id)}",
                    f"hf download {shell_word(located.repo_id)} {shell_word(inside)}", 1)
                # A cached ref offered for a mistyped one (`/blob/mian/`): the corrected address reads, and a fetch
                # of the ref that was not found (`--revision mian`) would only fail again.
                offered = re.search(r"did you mean --revision \S+ \(cached\)\?", exc.message)
                raise said_of_address(SourceNotFound(exc.message if offered else f"{exc.message}: `{fetch}` fetches "
                                                     "it"), given, f"file {inside!r} of ") from exc
        else:
            text = located.repo_id + (f"/{inside}" if inside else "")
        exists = path_exists(path)
    if not exists:
        if (url_hint := url_source_hint(text)) is not None:
            # Pasted from a browser or a script: read as a local path, it was "no such file or directory".
            raise SourceNotFound(url_hint, path=text)
        if text.endswith("/") and "/" in text.rstrip("/") and looks_like_repo_id(text.rstrip("/")):
            text = text.rstrip("/")  # `org/name/`, as a shell completes a folder name
        if looks_like_repo_id(text) and not text.endswith((".safetensors", ".json") + PICKLE_SUFFIXES):
            repo_id = text
            try:
                cached = cached_snapshot(text, revision) if structure_only else None
                if structure_only and (cached is None or (not holds_weights(cached) and hub_reachable())):
                    # Headers over the network rather than the weights (also to complete a snapshot that holds
                    # only what plan-devices fetched, its config).
                    remote = remote_structure(text, revision)
                    if remote is not None:
                        return _remote_checkpoint(given if located is not None else text, remote)
                path = resolve_repo_id(text, revision, weights=True)
            except SourceNotFound as exc:
                if located is None:
                    raise
                raise said_of_address(exc, given) from exc
        elif (inside := split_repo_subfolder(text)) is not None and not text.endswith(
                (".safetensors", ".json") + PICKLE_SUFFIXES):
            # `org/name/unet`: one model folder of a repo (a diffusers pipeline keeps one per component).
            repo_id, subfolder = inside
            try:
                cached = cached_snapshot(repo_id, revision) if structure_only else None
                if structure_only and (cached is None or (not holds_weights(cached / subfolder) and hub_reachable())):
                    # The folder's headers over the network rather than its weights, as for a whole repo: plan-devices
                    # and inspect of `org/pipe/unet` downloaded the unet's gigabytes.
                    remote = remote_structure(repo_id, revision, subfolder)
                    if remote is not None:
                        return _remote_checkpoint(given if located is not None else text, remote)
                snapshot = resolve_repo_id(repo_id, revision, weights=True, subfolder=subfolder)
            except SourceNotFound as exc:
                if located is not None:
                    raise said_of_address(exc, given, f"folder {subfolder!r} of ") from exc
                # Most often a mistyped deep local path (`runs/exp1/final`): name it as typed, then the repo.
                raise SourceNotFound(f"{text!r} is not a local path, nor folder {subfolder!r} of a Hub repo: "
                                     f"{exc.message}") from exc
            path = snapshot / subfolder
            if path.is_dir() and not path.resolve().is_relative_to(snapshot.resolve()):
                # The Hub writes real folders in a snapshot; one that links elsewhere is not the repo's.
                raise SourceNotFound(f"{repo_id}'s folder {subfolder} links outside its snapshot "
                                     f"(to {path.resolve()}): not read", text)
            if not path.is_dir() and path.name.lower().endswith(".gguf") and path.is_file():
                # `org/name/model.Q4_K_M.gguf`: a cached file of the repo, as from_pretrained(repo, gguf_file=) names
                # one of a repo of several quantizations; read as that file (its folder holds no weights of its own).
                pass
            elif not path.is_dir():
                if (missing := _recorded_missing(snapshot, subfolder)) is not None:
                    # `.no_exist/<commit>/vae/config.json`: the Hub answered that the repo has no such file there.
                    raise SourceNotFound(f"{repo_id} has no folder {subfolder} (huggingface_hub recorded {missing} "
                                         f"as missing from the repo at commit {snapshot.name[:10]}; its snapshot is "
                                         f"{snapshot})", text)
                if (why := hub_unavailable()) is not None:
                    # Offline the snapshot holds what was downloaded (`hf download org/pipe --include "unet/*"`),
                    # not the repo: "org/pipe has no folder vae" was said of a repo that has it.
                    raise SourceNotFound(f"{repo_id} has no folder {subfolder} in its cached snapshot ({snapshot}), "
                                         f"and the Hub cannot be reached ({why}): fetch it with "
                                         f"`{download_command(repo_id, revision, folder=subfolder)}`", text)
                raise SourceNotFound(f"{repo_id} has no folder {subfolder} (its snapshot is {snapshot})", text)
        else:
            # A folder nested past PATH_MAX may well exist: said so, not "no such file or directory".
            raise SourceNotFound(missing_path_message(text), path=text)

    # A file of a Hub repo named by its address (`hf://org/m/config.json`): what fails in it is said of the address
    # typed and of its folder's address, not of the repo id alone and the snapshot's path deep in the cache.
    typed_file = (given, _address_of(located, revision, located.path_in_repo.rpartition("/")[0])) \
        if located is not None and located.path_in_repo and path.is_file() else None
    cache_note = None
    if repo_id is None and path.is_dir():
        # `~/.cache/huggingface/hub/models--org--name` as a path: read the snapshot its ref names, as the repo
        # id would (its top holds only blobs/, refs/ and snapshots/).
        in_cache = cache_folder_snapshot(path, revision)
        if in_cache is not None:
            path, how = in_cache
            cache_note = f"{text} is a Hub cache folder: read its snapshot ({how})"
    # `path` is what is read from here on: whether it is a folder is asked once.
    is_dir = path.is_dir()
    root = path if is_dir else path.parent
    builder = _Builder(root, key)
    config_path: Path | None = None
    sharded = False
    warnings: list[str] = [cache_note] if cache_note else []
    if (repo_id is not None or located is not None) and (linked := linked_snapshot_note(path)) is not None:
        warnings.append(linked)
    if repo_id is None and revision is not None and cache_note is None and located is None:
        warnings.append(f"--revision {revision} ignored: {text} is a local path, not a Hub repo id")
    target = path
    is_index = False
    if is_dir:
        config_path = path / "config.json"
        try:
            # Before the weights are chosen: a save_state folder whose model is in a DCP subfolder has none here.
            refuse_unsafe_accelerate_objects(path)
            # A Trainer checkpoint-N/ resumed under DeepSpeed torch.loads its global_stepN/ states (weights_only=False)
            # whether or not zero_to_fp32.py is beside them: scanned wherever the folder is read, not only there.
            refuse_unsafe_deepspeed_states(path)
            target, is_index = _choose_in_folder(path)
            warnings += _ignored_beside(path, target) + _folder_notes(path, target)
        except SourceNotFound as exc:
            if (allow_config_only and config_path.is_file() and not _foreign_weights_beside_other_config(path)
                    and not _model_config_beside_subfolder_weights(path)):
                target = config_path
                # A Hub snapshot fetched for its config alone holds what was fetched, not what the repo has.
                warnings += _foreign_weights_only(path) if repo_id is None else []
            elif repo_id is not None:  # named by the repo id it was reached by, not by its cache path
                raise named_by_repo(exc, path, text, revision) from exc
            else:
                raise
        except (UnsupportedFormat, CorruptCheckpoint) as exc:  # a link to a deleted blob, too
            if repo_id is None:
                raise
            raise named_by_repo(exc, path, text, revision) from exc
    elif path.suffix == ".json":
        try:
            data = read_json(path)
            from weightdoctor.checkpoint import foreign

            mlc = foreign.mlc_json_message(path, data)
            if mlc is not None:
                raise UnsupportedFormat(mlc, text)
            if isinstance(data, dict) and "weight_map" in data:
                is_index = True
                config_path = path.parent / "config.json"
            elif _is_config(data):
                if not allow_config_only:
                    raise UnsupportedFormat(_config_given_message(path), text)
                config_path = path
            else:
                raise UnsupportedFormat(_other_json_message(path, data), text)
        except WeightDoctorError as exc:
            if typed_file is None:
                raise
            raise _said_as_typed(exc, path, *typed_file) from exc
    else:
        config_path = path.parent / "config.json"

    try:
        if is_index:
            sharded = True
            warnings += _read_index(builder, target)
        elif target == config_path:
            pass
        elif gguf_refused_by is None and (split_parts := _split_gguf_parts(target)) is not None:
            # (A command that refuses a GGUF refuses the part named, saying it is one: its set is not read.)
            builder.read_split_gguf(split_parts)
        else:
            builder.add_weight_file(target)
            warnings += _one_shard_of_several(target, given if repo_id is not None else None)
            if "model_part-" in target.name or "-shard" in target.name:
                unflattened = next((contents.fsdp_unflattened for contents in builder.pickles.values()
                                    if contents.fsdp_unflattened), None)
                warnings += model_part_warning(target, {t.name: tuple(t.shape) for t in builder.tensors},
                                               builder.other_entries, unflattened)
        if gguf_refused_by is not None and builder.ggufs:
            from weightdoctor.checkpoint import gguf_format

            gguf_file = next(f.path for f in builder.files if f.relpath in builder.ggufs)
            gguf_format.refuse_for(gguf_refused_by, [gguf_file.name], str(gguf_file.parent))
    except WeightDoctorError as exc:
        said = _said_of_source(exc, path, typed_file, repo_id, root, text, revision)
        if said is exc:
            raise
        raise said from exc
    warnings += builder.notes
    if is_dir and target != config_path:
        # What the folder holds beside what was read: said once, as from_pretrained leaves it too.
        read_files = {f.path for f in builder.files}
        other_sets, covered = _other_shard_sets(path, read_files, target)
        warnings += other_sets
        warnings += _siblings_not_read(path, read_files, warnings, covered)
    names = [t.name for t in builder.tensors]
    # C-level passes over the names: this runs for every checkpoint read.
    # A name starting with "v_head." holds it: one substring search over the names joined rules most files out.
    value_head = sorted(itertools.compress(names, map(str.startswith, names, itertools.repeat("v_head.")))) \
        if "v_head." in "\0".join(names) else []
    if value_head and any(t.name.startswith(("transformer.", "model.", "lm_head.")) for t in builder.tensors):
        # TRL's AutoModelForCausalLMWithValueHead.save_pretrained: the language model's state dict plus v_head.*.
        warnings.append(f"a TRL value head ({', '.join(value_head[:2])}) beside the language model: TRL's "
                        "AutoModelForCausalLMWithValueHead loads it; from_pretrained of the model class alone drops "
                        "it (an unexpected key)")

    config, config_file = _load_config(config_path)
    # not at the top: it imports this package
    from weightdoctor.quantized import config_quantization_problem, packed_without_quantizer

    if (quantization_problem := config_quantization_problem(config, builder.tensors)) is not None:
        warnings.append(quantization_problem)
    elif (packed := packed_without_quantizer(config, builder.tensors, path if is_dir else path.parent)):
        warnings.append(packed)
    if config_path is not None and config_path.is_symlink() and not config_path.exists():
        # A link to itself (or through others back to itself) was said to lead to a file that "does not exist".
        what = "which leads back to itself (a loop of links)" if _link_loops(config_path) else "which does not exist"
        warnings.append(f"config.json is a link to {os.readlink(config_path)}, {what}: read without a config "
                        "(from_pretrained would fail)")
    if config_file is not None:
        builder.files.append(config_file)
    # A snapshot's file that links out of the cache (to the user's own files, or another disk), however the snapshot
    # was named (repo id, its path, the repo's cache folder): read as huggingface_hub reads it, and said, as a
    # snapshot folder linked elsewhere is.
    for file in builder.files:
        if (out := link_out_of_cache(file.path)) is not None:
            warnings.append(f"{file.relpath} {_LEADS_OUT} {out} ({_NOT_THE_HUBS}): read there")
    if target == config_path:
        fmt = "config-only"
    elif "safetensors" in builder.formats:
        fmt = "safetensors" if len(builder.formats) == 1 else "mixed"
    else:
        fmt = next(iter(builder.formats)) if len(builder.formats) == 1 else "mixed"
    if key is not None and builder.formats and not builder.pickles:
        raise UsageError(
            f"--key {key!r} names an entry inside a PyTorch pickle; this {fmt} checkpoint has no nesting"
            " (drop --key)",
            text,
        )
    security = None
    safetensors_only = None
    if builder.scans:
        from weightdoctor.security import merge_reports, safetensors_report

        security = merge_reports(builder.scans + [safetensors_report([f]) for f in builder.safetensors_files])
    elif builder.safetensors_files:
        safetensors_only = builder.safetensors_files
    checkpoint = Checkpoint(
        source=given if located is not None else text,
        # A dataset's file is kept in its snapshot as a model's is (not resolved to its blob), so `commit` names it.
        path=path.resolve() if repo_id is None and located is None else path,
        format=fmt,
        sharded=sharded,
        files=builder.files,
        tensors=builder.tensors,
        config=config,
        metadata=builder.metadata,
        nested_key=builder.nested_key,
        other_entries=builder.other_entries,
        skipped_entries=builder.skipped_entries,
        non_tensor_keys=builder.non_tensor_keys,
        # A dataset or Space repo is named as it reads back (`datasets/org/name`): a bare `org/name` is a model.
        repo_id=repo_id if located is None or located.repo_type == "model" else
        f"{located.repo_type}s/{located.repo_id}",
        revision=revision if repo_id is not None or located is not None else None,
        warnings=warnings,
        value_warnings=builder.value_notes,
        security=security,
        _safetensors_only=safetensors_only,
        _headers=builder.headers,
        _pickles=builder.pickles,
        _ggufs=builder.ggufs,
    )
    try:
        checkpoint.warnings += refuse_pickled_extra_states(checkpoint)
    except WeightDoctorError as exc:
        said = _said_of_source(exc, path, typed_file, repo_id, root, text, revision)  # as other errors are
        if said is exc:
            raise
        raise said from exc
    return checkpoint


def refuse_pickled_extra_states(checkpoint: Checkpoint, relpath: str | None = None) -> list[str]:
    """Scan the pickle in each TransformerEngine `_extra_state` byte tensor; refuse the checkpoint if one may run code.

    TE 1.x and later store a module's FP8 state as a 1-D uint8 tensor of `pickle.dumps(state)`, and its
    set_extra_state `pickle.loads` those bytes when the model loads the state dict: a file's own scan (or a
    .safetensors, which holds no pickle) saw only a tensor. Only tensors named `_extra_state` or `*._extra_state`
    of a dtype numpy holds (any shape: TE flattens it) are read, each through the reader's own read path, and
    of a larger one its first `MAX_EXTRA_STATE_BYTES`;
    with no such name, nothing is (one substring test over the names). `relpath`: those of one file only (a Hub
    file just downloaded).

    Returns:
        Warnings for such tensors that were not checked: those of a Hub file whose header alone was read
        (nothing is downloaded for this).

    Raises:
        UnsafePickle: a tensor's pickle names a dangerous or unknown global (or cannot be vouched for: one
            still running past the bytes read), naming the file and the tensor.
    """
    beside = {relpath_: contents.extra_states_beside for relpath_, contents in checkpoint._pickles.items()
              if contents.extra_states_beside and relpath in (None, relpath_)}
    if "_extra_state" not in "\0".join(checkpoint._by_name) and not beside:
        return []
    import functools

    from weightdoctor.checkpoint import pytorch_format
    from weightdoctor.security import extra_state

    found = [info for info in checkpoint.tensors if info.nbytes and relpath in (None, info.file)
             and extra_state.is_extra_state(info.name, info.dtype, info.shape)]
    remote = [info.name for info in found if checkpoint._remote is not None and info.file not in checkpoint._headers]
    # (file, name, dtype, bytes, how to read its first bytes): the state dict's tensors, then those beside it.
    candidates: list[tuple[str, str, str, int, Callable[[int | None], bytes]]] = [
        (info.file, info.name, info.dtype, info.nbytes, functools.partial(_tensor_bytes, checkpoint, info))
        for info in found if info.name not in remote]
    for file, values in beside.items():
        for name, value in values.items():
            dtype, shape, nbytes = pytorch_format.value_layout(value)
            if nbytes and extra_state.is_extra_state(name, dtype, shape):
                candidates.append((file, name, dtype, nbytes,
                                   functools.partial(_value_bytes, checkpoint.file_path(file), name, value)))
    for file, name, dtype, nbytes, read in candidates:
        path = checkpoint.file_path(file)
        # Past the bound only the first bytes are read: pickle.loads stops at STOP, so a hostile pickle padded
        # with zeros is judged all the same, and a pickle still running past them is refused (not vouched for).
        prefix = nbytes > extra_state.MAX_EXTRA_STATE_BYTES
        try:
            data = read(extra_state.MAX_EXTRA_STATE_BYTES if prefix else None)
            problem = extra_state.pickle_loads_problem(data, prefix=prefix)
        except WeightDoctorError as exc:
            exc.path = exc.path or str(path)
            raise
        if problem is not None:
            verdict, what = problem
            raise UnsafePickle(f"{verdict}: the {dtype} tensor {name} {what} (TransformerEngine's "
                               "set_extra_state pickle.loads an _extra_state tensor's bytes when the model loads "
                               "this state dict, running it); nothing was unpickled here", str(path))
    warnings = []
    if remote:
        warnings.append(f"{counted(len(remote), '_extra_state byte tensor')} ({remote[0]}"
                        f"{', ...' if len(remote) > 1 else ''}) not checked for a pickle: only the Hub's headers "
                        "were read (TransformerEngine's set_extra_state pickle.loads such a tensor when the model "
                        "loads it); download the weights and run weightdoctor on them to have it scanned")
    return warnings


def _tensor_bytes(checkpoint: Checkpoint, info: TensorInfo, limit: int | None = None) -> bytes:
    """A tensor's raw bytes as the reader reads them (C order): a safetensors file's plain reads, a torch zip's
    byte run (no torch imported), else the loaded tensor's values; with `limit`, only its first `limit` bytes (of a
    view spread over its storage, only the elements that hold them: `_value_bytes`)."""
    from weightdoctor.checkpoint.pickle_static import StaticTensor

    header = checkpoint.safetensors_header(info.file)
    if header is not None and limit is None:
        return bytes(safetensors_format.read_tensor_bytes(checkpoint.file_path(info.file), header, info))
    found = checkpoint.byte_range(info.name)  # a pickle's overlapping views refused first (`_check_views`)
    contents = checkpoint._pickles.get(info.file)
    value = contents.state_dict.get(info.name) if contents is not None else None
    if found is None and limit is not None and isinstance(value, StaticTensor):
        # load_tensor read all of a stepped view (every other byte of a 40 MB storage: 20 MB, and the span's slabs)
        # to keep its first 16 MiB; its leading rows hold them.
        return _value_bytes(checkpoint.file_path(info.file), info.name, value, limit)
    if found is not None:
        path, offset, length = found
        length = length if limit is None else min(length, limit)
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(length)
        if len(data) != length:
            raise CorruptCheckpoint(f"file ended while reading tensor {info.name!r} (truncated or changed while "
                                    "reading)")
        return data
    data = bytes(checkpoint.load_tensor(info.name).detach().contiguous().numpy().tobytes())
    return data if limit is None else data[:limit]


def _value_bytes(path: Path, name: str, value: Any, limit: int | None = None) -> bytes:
    """A tensor's bytes (C order) outside the state dict read, as `_tensor_bytes` reads one in it: its byte run in
    a torch zip read without torch (or of one torch.load(mmap=True) read: `mapped_stand_ins`), a view spread over
    its storage read with plain reads of its first `limit` bytes' elements, else the loaded tensor's values.

    Raises:
        CorruptCheckpoint: the file ends before the bytes read (through the map of the file, a file cut short while
            a view of its storage was read raised SIGBUS: exit 135, no message).
    """
    from weightdoctor.checkpoint import pytorch_format
    from weightdoctor.checkpoint.pickle_static import StaticTensor

    found = pytorch_format.byte_range(value)
    if found is not None:
        offset, length = found
        length = length if limit is None else min(length, limit)
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(length)
        if len(data) != length:
            raise CorruptCheckpoint(f"file ended while reading tensor {name!r} (truncated or changed while reading)")
        return data
    if isinstance(value, StaticTensor):
        import torch

        pytorch_format.refuse_unreadable(value, name)
        read = (value if limit is None else value.leading(limit)).read()
        data = bytes(read.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return data if limit is None else data[:limit]
    data = bytes(pytorch_format.as_tensor(value, name).detach().contiguous().numpy().tobytes())
    return data if limit is None else data[:limit]


def _remote_checkpoint(source: str, remote: RemoteStructure) -> Checkpoint:
    files, tensors, metadata = remote_tensors(remote)
    checkpoint = Checkpoint(
        source=source,
        path=Path(remote.repo_id),
        format="safetensors",
        sharded=remote.metadata.sharded,
        files=files,
        tensors=tensors,
        config=remote.config,
        metadata=metadata,
        repo_id=remote.repo_id,
        revision=remote.revision,
        warnings=["structure read from the Hub's safetensors headers; no weights were downloaded"],
        _remote=remote,
    )
    checkpoint.warnings += refuse_pickled_extra_states(checkpoint)
    return checkpoint


def unravel_positions(indices: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """The coordinates of C-order positions `indices` in a tensor of `shape`, one tensor per dimension.

    What `torch.unravel_index` gives, without its first call importing torch.fx and sympy (tens of MB): under a
    data limit (`ulimit -d`) that a file's map had nearly filled, --sample of a strided tensor died in that import,
    "unexpected SystemError: error return without exception set".

    Example:
        >>> import torch
        >>> [t.tolist() for t in unravel_positions(torch.tensor([0, 5, 11]), (3, 4))]
        [[0, 1, 2], [0, 1, 3]]
    """
    coordinates = []
    rest = indices
    for size in reversed(shape):
        coordinates.append(rest % size)
        rest = rest // size
    return tuple(reversed(coordinates))
