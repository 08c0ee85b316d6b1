"""Dtype names: one canonical spelling (torch's, without the `torch.` prefix) and the size of each."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from weightdoctor.errors import UnsupportedEnvironment

if TYPE_CHECKING:
    import torch

# safetensors header dtype -> canonical name. Canonical names are torch's attribute names, so
# `getattr(torch, name)` gives the torch dtype where torch has it.
SAFETENSORS_TO_CANONICAL: dict[str, str] = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "U16": "uint16",
    "I16": "int16",
    "U32": "uint32",
    "I32": "int32",
    "U64": "uint64",
    "I64": "int64",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    # The AMD (fnuz) float8 kinds: safetensors' Python library writes and reads them (0.6 and later).
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F4": "float4_e2m1fn_x2",
    # The OCP MX six-bit floats (safetensors 0.6 and later read them): no torch dtype holds them, so their structure
    # is read and their values are not.
    "F6_E2M3": "float6_e2m3fn",
    "F6_E3M2": "float6_e3m2fn",
}
CANONICAL_TO_SAFETENSORS: dict[str, str] = {v: k for k, v in SAFETENSORS_TO_CANONICAL.items()}

# Bits per element, as safetensors counts them (F4 is four bits: its shape counts the packed values).
BITS_PER_ELEMENT: dict[str, int] = {
    "bool": 8, "uint8": 8, "int8": 8, "uint16": 16, "int16": 16, "uint32": 32, "int32": 32,
    "uint64": 64, "int64": 64, "float16": 16, "bfloat16": 16, "float32": 32, "float64": 64,
    "complex64": 64, "complex128": 128, "float8_e4m3fn": 8, "float8_e5m2": 8, "float8_e8m0fnu": 8,
    "float8_e4m3fnuz": 8, "float8_e5m2fnuz": 8, "float4_e2m1fn_x2": 4, "float6_e2m3fn": 6, "float6_e3m2fn": 6,
    # torch's alone (no safetensors name): a pair of float16s, and a 16-bit opaque type. Counted as 8 bits, a
    # complex32 tensor's bytes were a quarter of what it holds, and convert --to bin failed on it.
    "complex32": 32, "bits16": 16,
    # torch 2.14's pair of bfloat16s (torch.save names it in `_rebuild_tensor_v3`; an older torch has no such dtype).
    "bcomplex32": 32,
}

FLOATING: frozenset[str] = frozenset(
    {"float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu",
     "float8_e4m3fnuz", "float8_e5m2fnuz"}
)

# What users type on the command line -> canonical name.
ALIASES: dict[str, str] = {
    "fp32": "float32", "float32": "float32", "float": "float32", "f32": "float32",
    "fp16": "float16", "float16": "float16", "half": "float16", "f16": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp64": "float64", "float64": "float64", "double": "float64",
    "fp8_e4m3": "float8_e4m3fn", "float8_e4m3fn": "float8_e4m3fn", "fp8": "float8_e4m3fn",
    "fp8_e5m2": "float8_e5m2", "float8_e5m2": "float8_e5m2",
}


def canonical_dtype(name: str) -> str:
    """Return the canonical name of a dtype given as `torch.float16`, `F16`, `fp16` or `float16`."""
    text = str(name).removeprefix("torch.")
    if text in SAFETENSORS_TO_CANONICAL:
        return SAFETENSORS_TO_CANONICAL[text]
    return ALIASES.get(text.lower(), text)


# dtypes torch added after the oldest release weightdoctor runs on (torch>=2.10), with the first release that has
# each: a file written by a newer torch names them, and weightdoctor reads its structure without torch.
LATER_TORCH_DTYPES: dict[str, str] = {"bcomplex32": "2.14"}


def torch_dtype(name: str) -> torch.dtype:
    """The installed torch's dtype of a canonical name, where the values of a tensor must become a torch tensor.

    Example:
        >>> str(torch_dtype("bfloat16"))
        'torch.bfloat16'

    Raises:
        UnsupportedEnvironment: a dtype a later torch added (torch 2.14's bcomplex32 under torch 2.13), naming
            the release that has it (a bare `getattr` raised AttributeError, reported as an unexpected error).
    """
    import torch

    dtype = getattr(torch, name, None)
    if isinstance(dtype, torch.dtype):
        return dtype
    if name in SIX_BIT:
        raise UnsupportedEnvironment(f"{name} (safetensors' {CANONICAL_TO_SAFETENSORS[name]}) is a six-bit float no "
                                     "torch release has a dtype for: its values cannot be read or written by torch "
                                     "(a safetensors output copies its bytes as they are)")
    since = LATER_TORCH_DTYPES.get(name)
    needs = f"torch {since} or later" if since else "a torch that has it"
    raise UnsupportedEnvironment(f"{name} is a dtype the installed torch {torch.__version__} does not have: reading "
                                 f"its values needs {needs}")


def bits_per_element(dtype: str) -> int:
    """Bits one element of `dtype` takes on disk (8 for unknown byte-sized types)."""
    bits = BITS_PER_ELEMENT.get(dtype)  # fast path: already canonical (called once per tensor by the reader)
    return bits if bits is not None else BITS_PER_ELEMENT.get(canonical_dtype(dtype), 8)


# torch stores two fp4 values per element of `float4_e2m1fn_x2`; safetensors (and weightdoctor's
# TensorInfo) count values. Shapes differ in the last dimension only.
PACKED_PAIRS = "float4_e2m1fn_x2"

# Six-bit dtypes: four values fill three bytes, and safetensors refuses a tensor whose bits end mid-byte.
SIX_BIT = frozenset({"float6_e2m3fn", "float6_e3m2fn"})


def torch_shape(shape: tuple[int, ...], dtype: str) -> tuple[int, ...]:
    """The shape torch gives a tensor described by a TensorInfo shape (fp4: the last dimension halves)."""
    if dtype == PACKED_PAIRS and shape:
        return (*shape[:-1], shape[-1] // 2)
    return shape


def values_shape(shape: tuple[int, ...], dtype: str) -> tuple[int, ...]:
    """The TensorInfo (safetensors) shape of a torch tensor's shape (fp4: the last dimension doubles)."""
    if dtype == PACKED_PAIRS and shape:
        return (*shape[:-1], shape[-1] * 2)
    return shape


# dtypes people ask a cast for that are quantization (a scale per block or row, chosen by a method), not a cast.
QUANTIZED_NAMES = ("int8", "int4", "uint8", "nf4", "fp4", "q8_0", "q4_0", "q4_k_m")


def quantization_hint(name: str, refused: str) -> str:
    """Why a cast to `name` (`--target int8`, `--dtype int4`) is refused, and what answers the question behind it;
    "" for a name that is no quantized type. `refused` says what the command does instead."""
    if name.strip().lower() not in QUANTIZED_NAMES:
        return ""
    return (f"; {name.strip().lower()} is quantization (a scale per block or row), not a cast: {refused}; "
            "plan-devices --dtype int8 or int4 gives the memory of a bitsandbytes load")


# fairseq's SinusoidalPositionalEmbedding registers `_float_tensor = torch.FloatTensor(1)`, and each fairseq model's
# upgrade_state_dict_named writes one again under `<encoder|decoder>.embed_positions._float_tensor`: one value of
# uninitialized memory, kept only so the computed sinusoids can `.type_as()` it. Whatever the allocator held (a
# subnormal, 1e30, NaN) is not a weight: a cast of it loses nothing the model reads, and casting it is never refused.
_DTYPE_PLACEHOLDER = re.compile(r"(^|\.)_float_tensor$")


def is_dtype_placeholder(name: str, numel: int) -> bool:
    """Whether a tensor is fairseq's one-element `_float_tensor`, whose value is uninitialized memory.

    >>> is_dtype_placeholder("decoder.embed_positions._float_tensor", 1), is_dtype_placeholder("w._float_tensor", 8)
    (True, False)
    """
    return numel == 1 and _DTYPE_PLACEHOLDER.search(name) is not None
