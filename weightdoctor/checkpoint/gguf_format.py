"""GGUF files (llama.cpp / ggml): the header read by hand, bounded, without the `gguf` package.

Layout (ggml's docs/gguf.md, little-endian): `GGUF`, a uint32 version, a uint64 tensor count, a uint64 key-value
count, the key-value pairs (a string key, a uint32 value type, the value), then per tensor its name, a uint32 count of
dimensions, that many uint64 dimensions (innermost first: ne[0] is PyTorch's last dimension), a uint32 ggml type and a
uint64 offset into the data section, which starts at the next multiple of `general.alignment` (32 by default).

Every count, length and offset is checked against the bytes the file has before anything is read or allocated: a
hostile header (a tensor count of 2**63, a string running past the end) is refused in one line, as llama.cpp's
gguf_init_from_file refuses it.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from weightdoctor.checkpoint.model import TensorInfo, strides_overflow, tensor_infos
from weightdoctor.errors import CorruptCheckpoint, UnsupportedFormat

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# ggml's GGML_MAX_DIMS: llama.cpp refuses a tensor of more dimensions.
MAX_DIMS = 4
# Array elements kept as a preview in the metadata (tokenizer.ggml.tokens holds 150,000 strings: counted, not kept).
ARRAY_PREVIEW = 3
# Arrays of arrays nest; no writer nests deeper than two, a hostile file could a million times.
MAX_ARRAY_DEPTH = 8
# The longest metadata string kept whole (a chat template is a few KB); longer ones are kept as their start.
MAX_STRING_KEPT = 4096
# The longest tensor name read (as the reader's MAX_NAME_CHARS): ggml itself caps them at 64 bytes.
MAX_NAME_BYTES = 1 << 20
# Counts a file may hold yet no model has, each entry a Python object kept or a step of a loop: a 1 GB file of 24-byte
# tensor entries is 44 million TensorInfos (some 10 GB). Real GGUFs hold tens of keys, at most some thousands of
# tensors (llama.cpp stacks a MoE's experts into one tensor a layer) and tokenizers of some 260,000 strings (Gemma 3's
# vocabulary of 262,144).
MAX_TENSORS = 200_000  # as safetensors_format.MAX_TENSORS
MAX_METADATA_ENTRIES = 200_000
MAX_ARRAY_STRINGS = 4_000_000
MAX_NESTED_ARRAYS = 100_000


@dataclass(frozen=True)
class GgmlType:
    """One ggml tensor type: `block_size` values stored in `type_size` bytes."""

    id: int
    name: str
    block_size: int
    type_size: int
    # The canonical (torch) dtype of a type stored as plain values, None for a quantized (block) type.
    dtype: str | None = None

    @property
    def bits_per_weight(self) -> float:
        return self.type_size * 8 / self.block_size


_QK_K = 256
# ggml's ggml_type values with (block size, type size), as gguf-py's GGML_QUANT_SIZES lists them. Checked against
# llama.cpp master after b9916 (ggml.h: NVFP4 = 40, Q1_0 = 41, Q2_0 = 42, GGML_TYPE_COUNT = 43; constants.py:
# NVFP4 (64, 4 + 32), Q1_0 (128, 2 + 16), Q2_0 (64, 2 + 16)).
GGML_TYPES: dict[int, GgmlType] = {t.id: t for t in (
    GgmlType(0, "F32", 1, 4, "float32"),
    GgmlType(1, "F16", 1, 2, "float16"),
    GgmlType(2, "Q4_0", 32, 2 + 16),
    GgmlType(3, "Q4_1", 32, 2 + 2 + 16),
    GgmlType(6, "Q5_0", 32, 2 + 4 + 16),
    GgmlType(7, "Q5_1", 32, 2 + 2 + 4 + 16),
    GgmlType(8, "Q8_0", 32, 2 + 32),
    GgmlType(9, "Q8_1", 32, 4 + 4 + 32),
    GgmlType(10, "Q2_K", _QK_K, 2 + 2 + _QK_K // 16 + _QK_K // 4),
    GgmlType(11, "Q3_K", _QK_K, 2 + _QK_K // 4 + _QK_K // 8 + 12),
    GgmlType(12, "Q4_K", _QK_K, 2 + 2 + _QK_K // 2 + 12),
    GgmlType(13, "Q5_K", _QK_K, 2 + 2 + _QK_K // 2 + _QK_K // 8 + 12),
    GgmlType(14, "Q6_K", _QK_K, 2 + _QK_K // 2 + _QK_K // 4 + _QK_K // 16),
    GgmlType(15, "Q8_K", _QK_K, 4 + _QK_K + _QK_K // 8),
    GgmlType(16, "IQ2_XXS", _QK_K, 2 + _QK_K // 4),
    GgmlType(17, "IQ2_XS", _QK_K, 2 + _QK_K // 4 + _QK_K // 32),
    GgmlType(18, "IQ3_XXS", _QK_K, 2 + _QK_K // 4 + _QK_K // 8),
    GgmlType(19, "IQ1_S", _QK_K, 2 + _QK_K // 8 + _QK_K // 16),
    GgmlType(20, "IQ4_NL", 32, 2 + 16),
    GgmlType(21, "IQ3_S", _QK_K, 2 + _QK_K // 4 + _QK_K // 8 + _QK_K // 32 + 4),
    GgmlType(22, "IQ2_S", _QK_K, 2 + _QK_K // 4 + _QK_K // 16),
    GgmlType(23, "IQ4_XS", _QK_K, 2 + 2 + _QK_K // 2 + _QK_K // 64),
    GgmlType(24, "I8", 1, 1, "int8"),
    GgmlType(25, "I16", 1, 2, "int16"),
    GgmlType(26, "I32", 1, 4, "int32"),
    GgmlType(27, "I64", 1, 8, "int64"),
    GgmlType(28, "F64", 1, 8, "float64"),
    GgmlType(29, "IQ1_M", _QK_K, _QK_K // 8 + _QK_K // 16 + _QK_K // 32),
    GgmlType(30, "BF16", 1, 2, "bfloat16"),
    GgmlType(34, "TQ1_0", _QK_K, 2 + 4 * 13),
    GgmlType(35, "TQ2_0", _QK_K, 2 + 64),
    GgmlType(39, "MXFP4", 32, 1 + 16),
    GgmlType(40, "NVFP4", 64, 4 + 32),
    GgmlType(41, "Q1_0", 128, 2 + 16),
    GgmlType(42, "Q2_0", 64, 2 + 16),
)}
GGML_TYPES_BY_NAME: dict[str, GgmlType] = {t.name: t for t in GGML_TYPES.values()}
# Types ggml numbered once and removed from GGUF files (Q4_2, Q4_3; the repacked Q4_0_4_4 ... IQ4_NL_8_8).
_REMOVED_TYPES = {4: "Q4_2", 5: "Q4_3", 31: "Q4_0_4_4", 32: "Q4_0_4_8", 33: "Q4_0_8_8", 36: "IQ4_NL_4_4",
                  37: "IQ4_NL_4_8", 38: "IQ4_NL_8_8"}

_BITNET = "Microsoft's bitnet.cpp"
_IK = "ik_llama.cpp"
_IK_EARLY = "ik_llama.cpp of 2024"
_TURBO = "the TurboQuant forks"
# What forks of llama.cpp store under a ggml type id llama.cpp gives another meaning or none: read from their ggml.h
# (ggml_type): Microsoft's bitnet.cpp (I2_S 36, I8_S 37, TL1 38, TL2 39, beside TQ1_0 / TQ2_0 at 34 / 35),
# ik_llama.cpp (I2_S 36; its own types from 133, the repacked _R4 / _R8 from 202; in mid-2024 it numbered IQ1_BN,
# IQ2_BN, Q8_K64, IQ4_K 34 to 37, where ggml put TQ1_0 and TQ2_0 since), PrismML's fork (PQ2_0 142, PTQ1_0 143),
# llama-dx (Q2_0 at 42 as llama.cpp, but of 128-value blocks: `#define QK2_0 128` where llama.cpp's is 64) and
# the TurboQuant forks (TURBO3_0 / TURBO4_0 / TURBO2_0 at 41-43, KV-cache types never stored, and the TQ3_1S /
# TQ4_1S weights at 44 / 45, until ggml took 41 and 42 for Q1_0 and Q2_0; since renumbered 43-47 or 64-68). Only
# the types such a fork writes into a GGUF file are listed, not its dot-product intermediates (ik's Q8_K16, ...).
_FORK_TYPES: dict[int, tuple[str, ...]] = {
    34: (f"IQ1_BN in {_IK_EARLY}",),
    35: (f"IQ2_BN in {_IK_EARLY}",),
    36: (f"I2_S (BitNet b1.58's 2-bit ternary weights) in {_BITNET} and {_IK}", f"Q8_K64 in {_IK_EARLY}"),
    37: (f"I8_S in {_BITNET}", f"IQ4_K in {_IK_EARLY}"),
    38: (f"TL1 (BitNet b1.58's lookup-table weights) in {_BITNET}",),
    39: (f"TL2 (BitNet b1.58's lookup-table weights) in {_BITNET}",),
    41: (f"TURBO3_0 in {_TURBO} (a KV-cache type they never store)",),
    42: ("Q2_0 of 128-value blocks in 34 bytes (2.125 bits a weight) in the llama-dx fork (Maxritz/LLAMA-DX), "
         "where llama.cpp's Q2_0 is 64 values in 18 bytes", f"TURBO4_0 or TURBO2_0 in {_TURBO} (KV-cache types)"),
    43: ("Q2_0_G128 in a fork of llama.cpp", f"TURBO2_0 in {_TURBO} (a KV-cache type)"),
    44: (f"TQ3_1S (a weight type) in {_TURBO}",),
    45: (f"TQ4_1S (a weight type) in {_TURBO}",),
    46: (f"TQ3_1S (a weight type) in {_TURBO}",),
    47: (f"TQ4_1S (a weight type) in {_TURBO}",),
    67: (f"TQ3_1S (a weight type) in {_TURBO}",),
    68: (f"TQ4_1S (a weight type) in {_TURBO}",),
    133: (f"Q6_0 in {_IK}",), 134: (f"IQ1_BN in {_IK}",), 135: (f"IQ2_BN in {_IK}",), 137: (f"IQ2_K in {_IK}",),
    138: (f"IQ3_K in {_IK}",), 139: (f"IQ4_K in {_IK}",), 140: (f"IQ5_K in {_IK}",), 141: (f"IQ6_K in {_IK}",),
    142: ("PQ2_0 in PrismML's fork", f"IQ2_TN in {_IK} (deprecated)"),
    143: ("PTQ1_0 in PrismML's fork", f"IQ1_TN in {_IK} (deprecated)"),
    144: (f"IQ4_KS in {_IK}",), 145: (f"IQ2_KS in {_IK}",), 146: (f"IQ4_KSS in {_IK}",), 151: (f"Q8_KV in {_IK}",),
    **{type_id: (f"{name} in {_IK} (rows repacked for its kernels)",) for type_id, name in (
        (202, "Q4_0_R8"), (206, "Q5_0_R4"), (208, "Q8_0_R8"), (210, "Q2_K_R4"), (211, "Q3_K_R4"), (212, "Q4_K_R4"),
        (213, "Q5_K_R4"), (214, "Q6_K_R4"), (216, "IQ2_XXS_R4"), (217, "IQ2_XS_R4"), (218, "IQ3_XXS_R4"),
        (219, "IQ1_S_R4"), (220, "IQ4_NL_R4"), (221, "IQ3_S_R4"), (222, "IQ2_S_R4"), (223, "IQ4_XS_R8"),
        (229, "IQ1_M_R4"), (230, "BF16_R16"), (233, "Q6_0_R4"), (335, "IQ2_BN_R4"), (337, "IQ2_K_R4"),
        (338, "IQ3_K_R4"), (339, "IQ4_K_R4"), (340, "IQ5_K_R4"), (344, "IQ4_KS_R4"), (398, "Q8_KV_R8"),
        (399, "Q8_K_R8"))},
}


def fork_meanings(type_id: int) -> str | None:
    """What forks of llama.cpp store under ggml type `type_id` where it is not llama.cpp's (`_FORK_TYPES`), in
    words, or None.

    Example:
        >>> fork_meanings(39)
        "TL2 (BitNet b1.58's lookup-table weights) in Microsoft's bitnet.cpp"
    """
    meanings = _FORK_TYPES.get(type_id)
    return "; ".join(meanings) if meanings else None


def unknown_type_words(type_id: int) -> str:
    """Why ggml type `type_id`, which llama.cpp's GGUF files do not use, is refused: what it was in ggml and what
    forks store under it, where known."""
    removed = _REMOVED_TYPES.get(type_id)
    forks = fork_meanings(type_id)
    if removed and forks:
        return (f"{removed} in ggml, which removed it from GGUF files; {forks}: a file of that fork, which "
                "llama.cpp and transformers cannot load")
    if removed:
        return f"{removed}, a type ggml removed from GGUF files"
    if forks:
        return f"no llama.cpp type; {forks}: a file of that fork, which llama.cpp and transformers cannot load"
    return "a type this reader does not know"

# general.file_type: llama.cpp's llama_ftype (llama.h; gguf-py's LlamaFileType; as of b9916: MOSTLY_NVFP4 = 39,
# MOSTLY_Q1_0 = 40, MOSTLY_Q2_0 = 41), what the file was quantized "to"
# (most 2-D tensors; norms stay F32, a Q4_K_M keeps some Q6_K). 4-6 and 33-35 were removed from llama.cpp.
LLAMA_FILE_TYPES: dict[int, str] = {
    0: "ALL_F32", 1: "MOSTLY_F16", 2: "MOSTLY_Q4_0", 3: "MOSTLY_Q4_1", 4: "MOSTLY_Q4_1_SOME_F16", 5: "MOSTLY_Q4_2",
    6: "MOSTLY_Q4_3", 7: "MOSTLY_Q8_0", 8: "MOSTLY_Q5_0", 9: "MOSTLY_Q5_1", 10: "MOSTLY_Q2_K", 11: "MOSTLY_Q3_K_S",
    12: "MOSTLY_Q3_K_M", 13: "MOSTLY_Q3_K_L", 14: "MOSTLY_Q4_K_S", 15: "MOSTLY_Q4_K_M", 16: "MOSTLY_Q5_K_S",
    17: "MOSTLY_Q5_K_M", 18: "MOSTLY_Q6_K", 19: "MOSTLY_IQ2_XXS", 20: "MOSTLY_IQ2_XS", 21: "MOSTLY_Q2_K_S",
    22: "MOSTLY_IQ3_XS", 23: "MOSTLY_IQ3_XXS", 24: "MOSTLY_IQ1_S", 25: "MOSTLY_IQ4_NL", 26: "MOSTLY_IQ3_S",
    27: "MOSTLY_IQ3_M", 28: "MOSTLY_IQ2_S", 29: "MOSTLY_IQ2_M", 30: "MOSTLY_IQ4_XS", 31: "MOSTLY_IQ1_M",
    32: "MOSTLY_BF16", 33: "MOSTLY_Q4_0_4_4", 34: "MOSTLY_Q4_0_4_8", 35: "MOSTLY_Q4_0_8_8", 36: "MOSTLY_TQ1_0",
    37: "MOSTLY_TQ2_0", 38: "MOSTLY_MXFP4_MOE", 39: "MOSTLY_NVFP4", 40: "MOSTLY_Q1_0", 41: "MOSTLY_Q2_0",
}

# GGUF metadata value types: (name, struct format) of the fixed-size ones.
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("uint8", "<B"), 1: ("int8", "<b"), 2: ("uint16", "<H"), 3: ("int16", "<h"), 4: ("uint32", "<I"),
    5: ("int32", "<i"), 6: ("float32", "<f"), 7: ("bool", "<?"), 10: ("uint64", "<Q"), 11: ("int64", "<q"),
    12: ("float64", "<d"),
}
_STRING, _ARRAY = 8, 9


def looks_like_gguf(prefix: bytes) -> bool:
    """Whether a file's first bytes are GGUF's magic."""
    return prefix[:4] == MAGIC


def ggml_type_of(dtype: str) -> GgmlType | None:
    """The ggml type a GGUF tensor's `TensorInfo.dtype` names (`Q4_K`, or `float16` for F16), or None."""
    found = GGML_TYPES_BY_NAME.get(dtype)
    if found is not None:
        return found
    return next((t for t in GGML_TYPES.values() if t.dtype == dtype), None)


def is_quantized_dtype(dtype: str) -> bool:
    """Whether `dtype` is a ggml block type (Q4_K, IQ2_XS, ...): packed blocks, no run of plain values."""
    found = GGML_TYPES_BY_NAME.get(dtype)
    return found is not None and found.dtype is None


# The block types whose values weightdoctor reads, dequantized to float32 as ggml does (`gguf_quants`): the legacy
# 32-value types, the K-quants (Q2_K ... Q6_K, every one of llama.cpp's Q*_K_S / _M / _L files), the ternary TQ1_0 /
# TQ2_0 (BitNet b1.58, TriLMs), MXFP4 (gpt-oss) and NVFP4, the table-based IQ4_NL / IQ4_XS, the lattice-codebook
# IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S (their grids of 256 to 2,048 points: `gguf_grids`) and the 1-
# and 2-bit Q1_0 / Q2_0: every type a llama.cpp file type stores. Q8_1 (ggml has no dequantizer for it) and Q8_K,
# intermediates of ggml's dot products, are described from the header only.
DEQUANTIZED_TYPES = frozenset({"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
                               "TQ1_0", "TQ2_0", "MXFP4", "IQ4_NL", "IQ4_XS", "IQ2_XXS", "IQ2_XS", "IQ2_S",
                               "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "NVFP4", "Q1_0", "Q2_0"})


def is_dequantized_dtype(dtype: str) -> bool:
    """Whether `dtype` is a ggml block type whose values are read, dequantized to float32 (`DEQUANTIZED_TYPES`)."""
    return dtype in DEQUANTIZED_TYPES


def is_unread_dtype(dtype: str) -> bool:
    """Whether `dtype` is a ggml block type whose values weightdoctor does not read (Q8_1, Q8_K)."""
    return is_quantized_dtype(dtype) and dtype not in DEQUANTIZED_TYPES


# The words every command uses for what is read of a GGUF's tensors.
READ_TYPES_WORDS = ("F32, F16, BF16, F64 and integer tensors, and " + ", ".join(sorted(DEQUANTIZED_TYPES))
                    + " ones dequantized to float32 as ggml does")
# What reads the types weightdoctor does not (Q8_1, Q8_K, the only ones left): nothing a user has at hand. gguf-py's
# dequantize, which transformers' GGUF loading calls, has no class for either (NotImplementedError), nor has the
# packed loader's own dequantizer of transformers 5 (integrations/gguf/dequant.py: ValueError), so pointing at
# from_pretrained(gguf_file=) sent users to a loader that fails on them too.
UNREAD_TYPES_WORDS = ("Q8_1 and Q8_K are intermediates of ggml's dot products that no llama.cpp file type stores, "
                      "and transformers' from_pretrained(gguf_file=) cannot load them either (neither gguf-py's "
                      "dequantize nor transformers' own GGUF dequantizer decodes them)")


@dataclass(frozen=True)
class ArraySummary:
    """A metadata array, counted: its element type, its length and its first few elements."""

    element_type: str
    count: int
    first: list[Any]

    def __str__(self) -> str:
        shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in self.first)
        more = ", ..." if self.count > len(self.first) else ""
        return f"[{self.count:,} {self.element_type}: {shown}{more}]"


@dataclass(frozen=True)
class GgufHeader:
    """The parsed header of one GGUF file. `data_start` and `identity` are what a tensor read needs (as a
    `SafetensorsHeader` gives them: `safetensors_format.read_tensor_bytes` reads either)."""

    version: int
    alignment: int
    data_start: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    ggml_types: dict[str, str] = field(repr=False)  # tensor name -> ggml type name
    identity: tuple[int, int, int, int] | None = None

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None


def combined(headers: list[GgufHeader]) -> GgufHeader | None:
    """One header for the GGUF files of a checkpoint, the parts of a split set (`gguf_split`) in order: the first
    part's version and metadata (gguf-split writes the model's metadata there alone) with every part's tensors. Its
    `data_start` is the first part's: tensor reads go through each file's own header, never this one. None for no
    GGUF file; the header itself for one."""
    if len(headers) < 2:
        return headers[0] if headers else None
    first = headers[0]
    return GgufHeader(first.version, first.alignment, first.data_start, first.metadata,
                      [info for header in headers for info in header.tensors],
                      {name: kind for header in headers for name, kind in header.ggml_types.items()})


# What a read is of, for its error: text, or a function making it (formatted only on error: building the words of
# every read of 200,000 tensor entries cost more than reading them).
Said = str | Callable[[], str]


def said(what: Said) -> str:
    return what if isinstance(what, str) else what()


# Bytes read from the file at a time while the header is parsed (a header of 150,000 tokens is a few MB).
_WINDOW = 1 << 20


class _Cursor:
    """Reads little-endian values from a file with plain reads of a window at a time, every read checked against the
    file's end first. Not a map of the file: under an address-space limit (`ulimit -v`) a 40 GB GGUF's map failed
    where its header, a few MB, is all that is read; what is skipped (an array of numbers, the rest of a long
    string) is never read."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self.handle = handle
        self.size = size
        self.pos = 0
        self.window = b""
        self.window_start = 0

    def need(self, count: int, what: Said) -> None:
        if count < 0 or self.pos + count > self.size:
            raise CorruptCheckpoint(
                f"GGUF header: {said(what)} needs {count:,} bytes at byte {self.pos:,}, past the end of the file "
                f"({self.size:,} bytes): truncated or not a GGUF file")

    def peek(self, count: int) -> tuple[bytes, int]:
        """The window holding the `count` bytes at `pos` (checked by `need` first), and where they start in it."""
        start = self.pos - self.window_start
        if start < 0 or start + count > len(self.window):
            self.handle.seek(self.pos)
            self.window = self.handle.read(max(count, _WINDOW))
            self.window_start, start = self.pos, 0
            if len(self.window) < count:  # the file was cut short after its size was read
                raise CorruptCheckpoint(f"GGUF header: the file ended at byte {self.pos + len(self.window):,} "
                                        f"while its header was read ({self.size:,} bytes when opened): truncated "
                                        "while reading")
        return self.window, start

    def unpack(self, fmt: str, what: Said) -> Any:
        length = struct.calcsize(fmt)
        self.need(length, what)
        window, start = self.peek(length)
        values = struct.unpack_from(fmt, window, start)
        self.pos += length
        return values[0] if len(values) == 1 else values

    def string(self, what: Said, limit: int | None = None) -> str:
        length = self.unpack("<Q", lambda: f"the length of {said(what)}")
        self.need(length, lambda: f"{said(what)} ({length:,} bytes long)")
        kept = length if limit is None else min(length, limit)
        window, start = self.peek(kept)
        raw = window[start:start + kept]
        self.pos += length
        text = raw.decode("utf-8", errors="replace")
        return text if kept == length else f"{text}... ({length:,} bytes)"


def _value(cursor: _Cursor, value_type: int, key: str, depth: int = 0) -> Any:
    """One metadata value; an array as an `ArraySummary` (its elements skipped, a few kept)."""
    scalar = _SCALARS.get(value_type)
    if scalar is not None:
        return cursor.unpack(scalar[1], lambda: f"the value of {key!r}")
    if value_type == _STRING:
        return cursor.string(f"the string value of {key!r}", MAX_STRING_KEPT)
    if value_type != _ARRAY:
        raise CorruptCheckpoint(f"GGUF header: metadata key {key!r} has value type {value_type}, which GGUF does "
                                "not define (0-12)")
    if depth >= MAX_ARRAY_DEPTH:
        raise CorruptCheckpoint(f"GGUF header: metadata key {key!r} nests arrays more than {MAX_ARRAY_DEPTH} deep")
    element_type = cursor.unpack("<I", lambda: f"the element type of {key!r}")
    count = cursor.unpack("<Q", lambda: f"the length of {key!r}")
    scalar = _SCALARS.get(element_type)
    if scalar is not None:
        width = struct.calcsize(scalar[1])
        cursor.need(count * width, lambda: f"the {count:,} {scalar[0]} values of {key!r}")
        shown = min(count, ARRAY_PREVIEW)
        first = list(cursor.unpack(f"<{shown}{scalar[1][1]}", lambda: f"the values of {key!r}")) if shown > 1 else (
            [cursor.unpack(scalar[1], lambda: f"the values of {key!r}")] if shown else [])
        cursor.pos += (count - shown) * width  # skipped, never read
        return ArraySummary(scalar[0], count, first)
    if element_type not in (_STRING, _ARRAY):
        raise CorruptCheckpoint(f"GGUF header: metadata array {key!r} has element type {element_type}, which "
                                "GGUF does not define (0-12)")
    # Each element takes 8 bytes at least (a string's length; an array's type and length take 12).
    cursor.need(count * 8, lambda: f"the {count:,} elements of {key!r}")
    limit = MAX_ARRAY_STRINGS if element_type == _STRING else MAX_NESTED_ARRAYS
    if count > limit:
        raise CorruptCheckpoint(f"GGUF header: metadata array {key!r} holds {count:,} "
                                f"{'strings' if element_type == _STRING else 'arrays'}, more than {limit:,} (the "
                                "largest tokenizer holds some 260,000)")
    first = []
    name = "string" if element_type == _STRING else "array"
    if element_type == _STRING:
        for index in range(min(count, ARRAY_PREVIEW)):
            first.append(cursor.string(f"element {index} of {key!r}", 200))
        _skip_strings(cursor, len(first), count, key)
        return ArraySummary(name, count, first)
    for index in range(count):
        nested = _value(cursor, _ARRAY, f"{key}[{index}]", depth + 1)
        if index < ARRAY_PREVIEW:
            first.append(str(nested))
    return ArraySummary(name, count, first)


_LENGTH = struct.Struct("<Q")


def _skip_strings(cursor: _Cursor, index: int, total: int, key: str) -> None:
    """Step over strings `index` to `total` of an array (a tokenizer's 150,000 tokens and as many merges), reading
    only their lengths, a window at a time: one cursor call per string took 1.3 s for 300,000 of them."""
    size = cursor.size
    count = total - index
    while count:
        cursor.need(8, lambda left=count: f"the length of string {total - left:,} of {key!r}")
        window, at = cursor.peek(8)
        base, end = cursor.window_start, len(window)
        while count and at + 8 <= end:
            (length,) = _LENGTH.unpack_from(window, at)
            after = at + 8 + length
            if base + after > size:
                cursor.pos = base + at + 8
                cursor.need(length, f"string {total - count:,} of {key!r} ({length:,} bytes long)")  # fails: said now
            at = after
            count -= 1
        cursor.pos = base + at


def _running_product_overflows(dims: tuple[int, ...]) -> bool:
    """Whether ggml's check of a tensor's element count refuses `dims` (its ne, first dimension first, padded to
    four with 1): `INT64_MAX / ne[j] <= ne[0] * ... * ne[j-1]` for j of 1 to 3. A 0 is skipped (ggml divides by it)
    and ends the product."""
    ne = (*dims, *(1,) * (MAX_DIMS - len(dims)))
    product = ne[0]
    for dim in ne[1:]:
        if dim and (2**63 - 1) // dim <= product:
            return True
        product *= dim
    return False


def _refuse_fork_layouts(names: list[str], types: dict[str, str], begins: list[int], sizes: list[int],
                         alignment: int) -> None:
    """Refuse a tensor of a type id that a fork of llama.cpp gives another meaning (`_FORK_TYPES`: bitnet.cpp's TL2
    is ggml's MXFP4, 39) whose bytes are not the next tensor's start as llama.cpp lays them out: llama.cpp's
    gguf_init_from_file requires each tensor to start where the one before it ends, padded to the alignment. Read
    with llama.cpp's block sizes, such a tensor's bytes are another type's, which were decoded as llama.cpp's.

    Raises:
        CorruptCheckpoint: such a tensor, naming what the id is in llama.cpp and in the forks.
    """
    for index, name in enumerate(names[:-1]):
        kind = GGML_TYPES_BY_NAME[types[name]]
        if kind.id not in _FORK_TYPES:
            continue
        expected = begins[index] + -(-sizes[index] // alignment) * alignment
        if begins[index + 1] != expected:
            forks = fork_meanings(kind.id)
            raise CorruptCheckpoint(
                f"GGUF header: tensor {name!r} has ggml type {kind.id}, {kind.name} in llama.cpp, whose "
                f"{sizes[index]:,} bytes at data offset {begins[index]:,} do not end where the next tensor, "
                f"{names[index + 1]!r}, starts ({begins[index + 1]:,}; llama.cpp lays tensors end to end, padded to "
                f"{alignment}): type {kind.id} is also {forks}, a file of that fork, which llama.cpp and "
                f"transformers cannot load; refused rather than decoded as {kind.name}")


def read_header(path: Path, relpath: str) -> GgufHeader:
    """Parse a GGUF file's header: its metadata and its tensors (shapes as PyTorch gives them, outermost first).

    Example:
        A GGUF tensor of ne = [4096, 11008] (ne[0] innermost) is `TensorInfo(shape=(11008, 4096))`, the shape of
        the `nn.Linear(4096, 11008).weight` it was converted from.

    Args:
        path: the file.
        relpath: its name relative to the checkpoint's root (each TensorInfo's `file`).

    Returns:
        The header; a tensor of a quantized ggml type has that type's name as its dtype (`Q4_K`) and its exact
        bytes (whole blocks) as its `nbytes`.

    Raises:
        UnsupportedFormat: a GGUF version other than 2 and 3 (v1 files, big-endian files).
        CorruptCheckpoint: anything in the header that does not fit the file or the format.
    """
    with open(path, "rb") as handle:
        stat = os.fstat(handle.fileno())
        size = stat.st_size
        if size < 24:
            raise CorruptCheckpoint(f"GGUF header: the file is {size} bytes, shorter than GGUF's 24-byte header")
        header = _parse(_Cursor(handle, size), relpath)
    return GgufHeader(*header, identity=(stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))


def _parse(cursor: _Cursor, relpath: str
           ) -> tuple[int, int, int, dict[str, Any], list[TensorInfo], dict[str, str]]:
    if cursor.unpack("4s", "the magic") != MAGIC:
        raise UnsupportedFormat("not a GGUF file (no GGUF magic)")
    version = cursor.unpack("<I", "the version")
    if version == 1:
        raise UnsupportedFormat("a GGUF version 1 file (32-bit counts, 2023's first format), which llama.cpp and "
                                "transformers no longer read: convert the original model again with llama.cpp's "
                                "convert_hf_to_gguf.py")
    if version not in (2, 3):
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in (2, 3):
            raise UnsupportedFormat(f"a big-endian GGUF (version {swapped} byte-swapped): llama.cpp and "
                                    "transformers read little-endian GGUF only")
        raise UnsupportedFormat(f"GGUF version {version:,}, which no GGUF reader knows (2 and 3 exist)")
    tensor_count = cursor.unpack("<Q", "the tensor count")
    kv_count = cursor.unpack("<Q", "the metadata count")
    # A key-value pair takes 13 bytes at least (an empty key, its type, one byte), a tensor's entry 24 (an empty
    # name, no dimension, its type and offset): counts the file cannot hold are refused before any loop runs.
    left = cursor.size - cursor.pos
    if kv_count * 13 > left:
        raise CorruptCheckpoint(f"GGUF header: {kv_count:,} metadata entries cannot fit in the {left:,} bytes left "
                                "in the file")
    if tensor_count * 24 > left:
        raise CorruptCheckpoint(f"GGUF header: {tensor_count:,} tensors cannot fit in the {left:,} bytes left in "
                                "the file")
    if kv_count > MAX_METADATA_ENTRIES or tensor_count > MAX_TENSORS:
        many, what, limit = ((kv_count, "metadata entries", MAX_METADATA_ENTRIES) if kv_count > MAX_METADATA_ENTRIES
                             else (tensor_count, "tensors", MAX_TENSORS))
        raise CorruptCheckpoint(f"GGUF header: {many:,} {what}, more than the {limit:,} read (real GGUF files hold "
                                "tens of metadata entries and some thousands of tensors)")
    metadata: dict[str, Any] = {}
    for index in range(kv_count):
        key = cursor.string(f"metadata key {index:,}", MAX_STRING_KEPT)
        if key in metadata:
            raise CorruptCheckpoint(f"GGUF header: metadata key {key!r} appears twice")
        value_type = cursor.unpack("<I", lambda key=key: f"the value type of {key!r}")
        metadata[key] = _value(cursor, value_type, key)
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0 \
            or alignment & (alignment - 1):
        raise CorruptCheckpoint(f"GGUF header: general.alignment is {alignment!r}, not a power of two")
    names: list[str] = []
    shapes: list[tuple[int, ...]] = []
    dtypes: list[str] = []
    begins: list[int] = []
    counts: list[int] = []
    sizes: list[int] = []
    types: dict[str, str] = {}
    for index in range(tensor_count):
        length = cursor.unpack("<Q", lambda index=index: f"the name length of tensor {index:,}")
        if length > MAX_NAME_BYTES:
            raise CorruptCheckpoint(f"GGUF header: tensor {index:,}'s name is {length:,} bytes long (the limit is "
                                    f"{MAX_NAME_BYTES:,}; ggml writes at most 64)")
        cursor.pos -= 8
        name = cursor.string(f"the name of tensor {index:,}")
        if name in types:
            raise CorruptCheckpoint(f"GGUF header: tensor {name!r} appears twice")
        n_dims = cursor.unpack("<I", lambda name=name: f"the dimension count of {name!r}")
        if n_dims > MAX_DIMS:
            raise CorruptCheckpoint(f"GGUF header: tensor {name!r} has {n_dims:,} dimensions (ggml allows at most "
                                    f"{MAX_DIMS})")
        dims: tuple[int, ...] = ()
        if n_dims:
            unpacked = cursor.unpack(f"<{n_dims}Q", lambda name=name: f"the dimensions of {name!r}")
            dims = unpacked if isinstance(unpacked, tuple) else (unpacked,)
        type_id = cursor.unpack("<I", lambda name=name: f"the type of {name!r}")
        offset = cursor.unpack("<Q", lambda name=name: f"the offset of {name!r}")
        ggml_type = GGML_TYPES.get(type_id)
        if ggml_type is None:
            raise CorruptCheckpoint(f"GGUF header: tensor {name!r} has ggml type {type_id} "
                                    f"({unknown_type_words(type_id)}; known: {', '.join(sorted(GGML_TYPES_BY_NAME))})")
        numel = math.prod(dims)
        if any(d >= 1 << 63 for d in dims) or numel >= 1 << 63:
            raise CorruptCheckpoint(f"GGUF header: tensor {name!r} has dimensions {list(dims)}, more elements than "
                                    "ggml's int64 counts hold")
        if not numel and (_running_product_overflows(dims) or strides_overflow(dims[::-1])):
            # ggml checks each running product (INT64_MAX / ne[j] <= ne[0] * ... * ne[j-1]), a 0 after one that
            # passes it no help; torch cannot make the strides of [0, 2**62, 3] either (--stats, check-dtype and
            # diff-keys --values ended in "unexpected RuntimeError: Stride calculation overflowed").
            raise CorruptCheckpoint(f"GGUF header: tensor {name!r} has dimensions {list(dims)}: holding no value, the "
                                    "product of its dimensions before a 0 passes 2**63 - 1, past ggml's int64 element "
                                    "count and torch's strides")
        # A tensor of no dimension is one value (ggml's ne are all 1): a block type's row of 1, as ggml refuses it
        # (its bytes were counted as none, and a read of it gave memory never written).
        row = dims[0] if dims else 1
        if row % ggml_type.block_size:
            raise CorruptCheckpoint(f"GGUF header: tensor {name!r} has {row:,} values a row, not a multiple of "
                                    f"{ggml_type.name}'s block of {ggml_type.block_size}")
        if offset % alignment:
            raise CorruptCheckpoint(f"GGUF header: tensor {name!r} starts at data offset {offset:,}, not a multiple "
                                    f"of the alignment {alignment}")
        names.append(name)
        shapes.append(tuple(reversed(dims)))
        dtypes.append(ggml_type.dtype or ggml_type.name)
        begins.append(offset)
        counts.append(numel)
        sizes.append(numel // ggml_type.block_size * ggml_type.type_size)
        types[name] = ggml_type.name
    data_start = -(-cursor.pos // alignment) * alignment
    data_size = cursor.size - data_start
    ends = [begin + nbytes for begin, nbytes in zip(begins, sizes, strict=True)]
    _refuse_fork_layouts(names, types, begins, sizes, alignment)
    for name, begin, end in zip(names, begins, ends, strict=True):
        if end > data_size:
            kind = GGML_TYPES_BY_NAME[types[name]]
            forks = fork_meanings(kind.id)
            also = (f" (or not {kind.name}: type {kind.id} is also {forks}, a file of that fork, which llama.cpp and "
                    "transformers cannot load)") if forks else ""
            raise CorruptCheckpoint(f"GGUF header: tensor {name!r} spans data bytes {begin:,} to {end:,}, past the "
                                    f"end of the file's data section ({max(data_size, 0):,} bytes): truncated{also}")
    # Empty tensors hold no bytes and are left out: compared with their neighbours only, one between two tensors
    # at the same offset hid the overlap (200 aliases of one 256 KB run in a 280 KB file read as 13 million values).
    order = sorted((index for index in range(len(names)) if sizes[index]), key=begins.__getitem__)
    for before, after in zip(order, order[1:], strict=False):
        if begins[after] < ends[before]:
            raise CorruptCheckpoint(f"GGUF header: tensors {names[before]!r} and {names[after]!r} overlap (data "
                                    f"bytes {begins[before]:,}-{ends[before]:,} and {begins[after]:,}-"
                                    f"{ends[after]:,})")
    infos = tensor_infos(names, shapes, dtypes, relpath, list(zip(begins, ends, strict=True)), counts, sizes)
    return version, alignment, data_start, metadata, infos, types


def _json_value(value: Any) -> Any:
    if isinstance(value, ArraySummary):
        return {"array": value.element_type, "count": value.count, "first": [_json_value(v) for v in value.first]}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or Infinity: a float32 value of a hostile (or odd) file
    return value


def metadata_json(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata as JSON values: arrays as `{"array": type, "count": n, "first": [...]}`, a non-finite float as
    its text ("nan", "inf")."""
    return {key: _json_value(value) for key, value in metadata.items()}


# The config.json-like fields a GGUF's metadata gives, as `{arch}.` keys (llama.cpp's LLM_KV names).
_SUMMARY_KEYS: dict[str, str] = {
    "hidden_size": "{arch}.embedding_length",
    "num_layers": "{arch}.block_count",
    "num_heads": "{arch}.attention.head_count",
    "num_kv_heads": "{arch}.attention.head_count_kv",
    "intermediate_size": "{arch}.feed_forward_length",
    "context_length": "{arch}.context_length",
    "rope_theta": "{arch}.rope.freq_base",
}


def summary(header: GgufHeader) -> dict[str, Any]:
    """What inspect shows of a GGUF file in place of a config.json: its architecture and sizes, its file type, the
    bytes and bits per weight of each ggml type, and its whole metadata (arrays counted)."""
    arch = header.architecture or ""
    # As the metadata gives them (an array counted as in `metadata_json`): a hostile file's general.name can be an
    # array, which came out under the dataclass's own field names ("element_type"), not as its metadata entry did.
    fields: dict[str, Any] = {"architecture": header.architecture,
                              "name": _json_value(header.metadata.get("general.name"))}
    for field_name, key in _SUMMARY_KEYS.items():
        fields[field_name] = _json_value(header.metadata.get(key.format(arch=arch))) if arch else None
    tokens = header.metadata.get("tokenizer.ggml.tokens")
    fields["vocab_size"] = tokens.count if isinstance(tokens, ArraySummary) else None
    by_type: dict[str, dict[str, Any]] = {}
    for info in header.tensors:
        kind = header.ggml_types[info.name]
        row = by_type.setdefault(kind, {"tensors": 0, "parameters": 0, "bytes": 0, "bits_per_weight": 0.0})
        row["tensors"] += 1
        row["parameters"] += info.num_params
        row["bytes"] += info.nbytes
    for kind, row in by_type.items():
        row["bits_per_weight"] = round(GGML_TYPES_BY_NAME[kind].bits_per_weight, 4)
    params = sum(info.num_params for info in header.tensors)
    nbytes = sum(info.nbytes for info in header.tensors)
    quantized = [kind for kind in sorted(by_type) if GGML_TYPES_BY_NAME[kind].dtype is None]
    return {
        "version": header.version,
        "alignment": header.alignment,
        **fields,
        "tensor_types": dict(sorted(by_type.items(), key=lambda item: -item[1]["parameters"])),
        "bits_per_weight": round(nbytes * 8 / params, 4) if params else None,
        # Information, not a warning: a quantized GGUF is the usual one, and its structure is read whole.
        "values_note": values_note(quantized) if quantized else None,
        "metadata": metadata_json(header.metadata),
    }


# Architectures whose attn_q / attn_k rows are the heads times the head size (llama.cpp's build of them): others fuse
# QKV, add a gate to attn_q (qwen3next) or split it low-rank (deepseek2), and their shapes say nothing of the heads.
_PLAIN_ATTENTION = frozenset({"llama", "mistral", "qwen2", "qwen2moe", "qwen3", "qwen3moe", "gemma", "gemma2", "gemma3",
                              "granite", "starcoder2", "olmo2"})


def _int_value(metadata: dict[str, Any], key: str) -> int | None:
    value = metadata.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def metadata_disagreements(header: GgufHeader) -> list[str]:
    """Where the config a GGUF's metadata gives disagrees with its tensors' shapes, for inspect's warnings (as
    config.json's are said of the tensors beside it): llama.cpp and from_pretrained(gguf_file=) build the model the
    metadata says and cannot load such a tensor into it ("wrong shape"). `header`: the whole checkpoint's
    (`combined`, a split set's parts together).

    Example:
        embedding_length 4096 beside a token_embd.weight 2048 wide; block_count 32 beside tensors of blocks 0-27.
    """
    arch = header.architecture
    if not arch:
        return []
    metadata = header.metadata
    said = "its GGUF metadata says"
    cannot = ("llama.cpp and from_pretrained(gguf_file=) build the model the metadata gives and cannot load it "
              "(wrong shape); the metadata was edited or belongs to another file")
    by_name = {info.name: info for info in header.tensors}
    warnings: list[str] = []
    embedding = by_name.get("token_embd.weight")
    hidden = _int_value(metadata, f"{arch}.embedding_length")
    if embedding is not None and len(embedding.shape) == 2:
        rows, width = embedding.shape
        if hidden is not None and width != hidden:
            warnings.append(f"{said} {arch}.embedding_length={hidden}, token_embd.weight is {width} wide: {cannot}")
        vocab_key = f"{arch}.vocab_size"
        vocab = _int_value(metadata, vocab_key)
        tokens = metadata.get("tokenizer.ggml.tokens")
        if vocab is None and isinstance(tokens, ArraySummary):
            vocab, vocab_key = tokens.count, "tokenizer.ggml.tokens"
        if vocab is not None and rows != vocab:
            what = f"holds {vocab:,} tokens" if vocab_key == "tokenizer.ggml.tokens" else f"is {vocab:,}"
            warnings.append(f"{said} {vocab_key} {what}, token_embd.weight has {rows:,} rows: {cannot}")
    blocks = _int_value(metadata, f"{arch}.block_count")
    found = {int(name.split(".", 2)[1]) for name in by_name
             if name.startswith("blk.") and name.split(".", 2)[1].isdigit()}
    if blocks is not None and found and found != set(range(blocks)):
        extra = sorted(index for index in found if index >= blocks)
        missing = blocks - len(found & set(range(blocks)))
        detail = (f"tensors of block {extra[0]:,}" + (f" to {extra[-1]:,}" if len(extra) > 1 else "") if extra
                  else f"no tensor of {missing:,} of its blocks")
        warnings.append(f"{said} {arch}.block_count={blocks:,}, and it holds {detail} (blk.0 to "
                        f"blk.{max(found):,}, {len(found):,} blocks): llama.cpp and from_pretrained(gguf_file=) "
                        "build the metadata's blocks, and a block missing its tensors does not load; the metadata "
                        "was edited or belongs to another file")
    heads = _int_value(metadata, f"{arch}.attention.head_count")
    if arch in _PLAIN_ATTENTION and heads is not None and hidden is not None:
        head_size = _int_value(metadata, f"{arch}.attention.key_length") or hidden // heads
        kv_heads = _int_value(metadata, f"{arch}.attention.head_count_kv") or heads
        for part, count, key in (("attn_q", heads, "head_count"), ("attn_k", kv_heads, "head_count_kv")):
            tensor = by_name.get(f"blk.0.{part}.weight")
            if tensor is None or len(tensor.shape) != 2 or tensor.shape[0] == count * head_size:
                continue
            warnings.append(f"{said} {arch}.attention.{key}={count} of {head_size} (heads times head size "
                            f"{count * head_size:,}), blk.0.{part}.weight has {tensor.shape[0]:,} rows: {cannot}")
    return warnings


def values_note(quantized: list[str]) -> str:
    """What is read of the values of a GGUF's quantized tensors of types `quantized` (inspect's GGUF panel)."""
    decoded = [kind for kind in quantized if kind in DEQUANTIZED_TYPES]
    unread = [kind for kind in quantized if kind not in DEQUANTIZED_TYPES]
    said = []
    if decoded:
        said.append(f"{', '.join(decoded)} tensors are read dequantized to float32, as ggml computes them, by --stats, "
                    "check-dtype and diff-keys --values (their statistics are of the quantized values)")
    if unread:
        said.append(f"{', '.join(unread)} tensors are described from the header, their values not decoded: "
                    + UNREAD_TYPES_WORDS)
    return "; ".join(said)


def not_read_message(name: str, dtype: str) -> str:
    """Why a quantized GGUF tensor's values are not read, and what reads them."""
    return (f"tensor {name!r} is {dtype}, a quantized ggml type weightdoctor does not decode: it reads the values "
            f"of GGUF's {READ_TYPES_WORDS}; {UNREAD_TYPES_WORDS}")



# Why each command that does not take a GGUF file refuses it, before what reads one.
_REFUSALS = {
    "convert": "convert writes what from_pretrained loads, and a GGUF's tensors are llama.cpp's (its names, "
               "quantized blocks, attention rows permuted for its RoPE)",
    "shard": "shard writes what from_pretrained loads, and a GGUF's tensors are llama.cpp's (its names, quantized "
             "blocks, attention rows permuted for its RoPE)",
    "plan-devices": "plan-devices plans from_pretrained's load, which dequantizes a GGUF into the model its metadata "
                    "configures, and it plans a GGUF file of the architectures transformers' GGUF loading takes "
                    "(llama.cpp places a GGUF itself: --n-gpu-layers); plan the original model (its repo id or "
                    "config.json) at the dtype you load it in",
}


def refusal_for(command: str, name: str, folder: str, because: str | None = None,
                loadable: bool = True) -> UnsupportedFormat:
    """The one-line refusal of GGUF file `name` in `folder` by `command`, with what reads it; `because` says why
    this file in particular is refused (plan-devices plans the architectures whose config it can build).
    `loadable`: False for a file transformers cannot load either (tensors of Q8_1 / Q8_K), whose refusal then
    points at from_pretrained(gguf_file=) no more."""
    from weightdoctor.checkpoint.foreign import gguf_reading

    why = f"{_REFUSALS[command]}: {because}" if because else _REFUSALS[command]
    reading = f"{gguf_reading(name, folder)}; " if loadable else ""
    return UnsupportedFormat(f"a GGUF file (llama.cpp): {why}; {reading}weightdoctor inspect reads its structure "
                             "and metadata", path=str(Path(folder) / name))


def refuse_for(command: str, gguf_names: list[str], folder: str) -> None:
    """Refuse a GGUF source for a command that does not take one, in one line saying what does.

    Raises:
        UnsupportedFormat: `gguf_names` is not empty (the source holds GGUF files).
    """
    if gguf_names:
        raise refusal_for(command, gguf_names[0], folder)
