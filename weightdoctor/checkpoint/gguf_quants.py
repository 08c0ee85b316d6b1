"""GGUF's quantized block types dequantized to float32, as ggml's `dequantize_row_*` (ggml-quants.c) computes them.

Each ggml block type packs `block_size` values into `type_size` bytes: an fp16 scale (and for some a minimum), then
small integer codes. ggml's reference decoder computes every value in float32 from the fp16 fields widened exactly:
Q8_0 `q * d`, Q4_1 `q * d + m`, Q4_K `(d * sc) * q - dmin * m`. The same products and sums are taken here with
numpy's float32 arithmetic, one rounding each, so the values are ggml's to the bit (a build of ggml that fuses a
multiply-add, as -ffp-contract=fast with FMA may, can differ from its own reference by one unit in the last place).

Read block by block: a tensor whole into one float32 tensor filled a chunk of blocks at a time, or the values at
given positions from the blocks holding them, reading spans of at most `SPAN_BYTES`. Every read lies within the
tensor's bytes, which the header's checks placed inside the file (`gguf_format.read_header`); a file cut short or
replaced since is refused, never read past its end.

The ternary TQ1_0 / TQ2_0 (`(t - 1) * d`), MXFP4 (a power-of-two e8m0 scale times a doubled e2m1 value) and the
table-based IQ4_NL / IQ4_XS (`d * kvalues_iq4nl[q]`) are decoded the same way: each value one exact widening and at
most two float32 products, as ggml's loops take them; so are the lattice-codebook types, a signed grid point times a
step: IQ2_XXS (its 256-point grid kept here as ggml's generator packs it, a uint16 a point), IQ2_XS, IQ2_S, IQ3_XXS,
IQ3_S and IQ1_S / IQ1_M (`(d * scale) * (level +- 0.125)`, the sum exact), their grids in `gguf_grids`. Q8_1 is not
here: ggml has no dequantizer for it (an intermediate of its dot products; no llama.cpp file type stores it). NVFP4
is MXFP4's levels under an unsigned e4m3 scale a 16 values (ggml_ue4m3_to_fp32, halved: exact), one product; Q1_0 is
a sign bit a value (+-d) and Q2_0 a 2-bit code ((q - 1) * d). Every type llama.cpp writes is decoded
(`gguf_format.DEQUANTIZED_TYPES`); Q8_K, the other intermediate, is not.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from weightdoctor.checkpoint.gguf_format import DEQUANTIZED_TYPES, GGML_TYPES_BY_NAME
from weightdoctor.checkpoint.gguf_grids import IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ3S_GRID, IQ3XXS_GRID
from weightdoctor.checkpoint.model import TensorInfo
from weightdoctor.errors import CorruptCheckpoint, UnsupportedFormat

if TYPE_CHECKING:
    import torch

# Bytes of blocks read and decoded at a time: a chunk's float32 values are at most 256 / 50 * 4 = 20.5 times this
# (IQ1_S, 1.56 bits a value), some 21 MB for a chunk of 1 MiB.
CHUNK_BYTES = 1 << 20
# `values_at` reads the blocks of positions closer than this together, in spans of at most this many bytes.
SPAN_BYTES = 1 << 20
# Bytes a decoder holds at its peak per value of the chunk it decodes, its float32 result included: tracemalloc over
# one chunk of each type measured IQ3_S 17.9, IQ3_XXS 17.4, IQ2_XXS 14.4, IQ2_XS / IQ2_S 13.9, Q2_K 12.5, Q6_K 11.5
# and 6.1 to 11.0 for the others (tests/test_fix70.py checks every decoder against it). 16 was short of the IQ3s'.
DECODE_BYTES_PER_VALUE = 20
# Bytes `values_at` holds per position asked, as counted from the arrays it makes of them: the positions as int64,
# their sort order, their blocks and their offsets in them (8 each), the float32 values, and the indexing copies of
# one span (some 12 more).
POSITION_BYTES = 48


def _half(blocks: np.ndarray, at: int) -> np.ndarray:
    """The fp16 field at byte `at` of each block, widened to float32 (exactly), as a column (n, 1)."""
    return np.ascontiguousarray(blocks[:, at:at + 2]).view("<f2").astype(np.float32)


def _low_high(nibbles: np.ndarray) -> np.ndarray:
    """Byte j's low nibble is value j, its high nibble value j + (bytes per block): [lows..., highs...]."""
    return np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1)


def _fifth_bits(blocks: np.ndarray, at: int, count: int) -> np.ndarray:
    """Value e's fifth bit (0 or 16) from the little-endian uint32 at byte `at`: bit e is value e's."""
    high = np.ascontiguousarray(blocks[:, at:at + 4]).view("<u4")
    return (((high >> np.arange(count, dtype=np.uint32)) & 1) << 4).astype(np.uint8)


def _q8_0(blocks: np.ndarray) -> np.ndarray:
    # d (fp16), then 32 int8 codes: y = q * d.
    return blocks[:, 2:34].view(np.int8).astype(np.float32) * _half(blocks, 0)


def _q4_0(blocks: np.ndarray) -> np.ndarray:
    # d, then 16 bytes of two 4-bit codes each, offset by 8: y = (q - 8) * d.
    codes = _low_high(blocks[:, 2:18]).astype(np.int8) - 8
    return codes.astype(np.float32) * _half(blocks, 0)


def _q4_1(blocks: np.ndarray) -> np.ndarray:
    # d, m, then 16 bytes of 4-bit codes: y = q * d + m.
    return _low_high(blocks[:, 4:20]).astype(np.float32) * _half(blocks, 0) + _half(blocks, 2)


def _q5_0(blocks: np.ndarray) -> np.ndarray:
    # d, a uint32 of fifth bits, then 16 bytes of low nibbles, offset by 16: y = (q - 16) * d.
    codes = (_low_high(blocks[:, 6:22]) | _fifth_bits(blocks, 2, 32)).astype(np.int8) - 16
    return codes.astype(np.float32) * _half(blocks, 0)


def _q5_1(blocks: np.ndarray) -> np.ndarray:
    # d, m, a uint32 of fifth bits, then 16 bytes of low nibbles: y = q * d + m.
    codes = _low_high(blocks[:, 8:24]) | _fifth_bits(blocks, 4, 32)
    return codes.astype(np.float32) * _half(blocks, 0) + _half(blocks, 2)


def _k_scales_mins(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eight 6-bit scales and mins of a Q4_K / Q5_K block's 12 bytes (ggml's get_scale_min_k4), as (n, 8)."""
    first, second, third = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = np.concatenate([first & 63, (third & 0x0F) | ((first >> 6) << 4)], axis=1)
    mins = np.concatenate([second & 63, (third >> 4) | ((second >> 6) << 4)], axis=1)
    return scales, mins


def _k_sub_blocks(blocks: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Q4_K / Q5_K values from their codes (n, 8, 32): sub-block s is (d * scale_s) * q - dmin * min_s."""
    scales, mins = _k_scales_mins(blocks[:, 4:16])
    d, dmin = _half(blocks, 0), _half(blocks, 2)
    step = (d * scales.astype(np.float32))[:, :, None]
    low = (dmin * mins.astype(np.float32))[:, :, None]
    return (step * codes.astype(np.float32) - low).reshape(len(blocks), -1)


def _k_nibbles(quants: np.ndarray) -> np.ndarray:
    """Sub-block codes (n, 8, 32) of 128 bytes: 64 values a 32-byte group, sub-block 2g its low nibbles and 2g + 1
    its high ones."""
    groups = quants.reshape(len(quants), 4, 32)
    return np.stack([groups & 0x0F, groups >> 4], axis=2).reshape(len(quants), 8, 32)


def _q4_k(blocks: np.ndarray) -> np.ndarray:
    # d, dmin, 12 bytes of scales and mins, 128 bytes of 4-bit codes (256 values in 8 sub-blocks of 32).
    return _k_sub_blocks(blocks, _k_nibbles(blocks[:, 16:144]))


def _q5_k(blocks: np.ndarray) -> np.ndarray:
    # d, dmin, scales and mins, 32 bytes of fifth bits (bit s of byte l: value l of sub-block s), 128 of nibbles.
    fifth = (blocks[:, 16:48, None] >> np.arange(8, dtype=np.uint8)) & 1  # (n, 32, 8)
    codes = _k_nibbles(blocks[:, 48:176]) | (fifth.transpose(0, 2, 1) << 4)
    return _k_sub_blocks(blocks, codes)


def _q6_k(blocks: np.ndarray) -> np.ndarray:
    # 128 bytes of low nibbles, 64 of 2-bit high parts, 16 int8 scales (one per 16 values), d last:
    # y = (d * scale) * (q - 32). Each half of 128 values: 64 low bytes and 32 high bytes.
    count = len(blocks)
    low = blocks[:, 0:128].reshape(count, 2, 2, 32)  # half, first/second 32 bytes, l
    high = blocks[:, 128:192].reshape(count, 2, 1, 32)
    shifts = np.arange(0, 8, 2, dtype=np.uint8).reshape(1, 1, 4, 1)
    twos = (high >> shifts) & 3  # (n, 2, 4, 32): quarter g of a half takes bits 2g..2g+1
    nibbles = np.concatenate([low & 0x0F, low >> 4], axis=2)  # quarters: low of bytes 0-31, 32-63, high of each
    codes = (nibbles | (twos << 4)).astype(np.int8) - 32
    scales = blocks[:, 192:208].view(np.int8).astype(np.float32)  # (n, 16)
    step = _half(blocks, 208) * scales
    return (np.repeat(step, 16, axis=1) * codes.reshape(count, 256).astype(np.float32))


def _two_bit_codes(quants: np.ndarray) -> np.ndarray:
    """Q2_K / Q3_K's 2-bit codes of 64 bytes, as (n, 256): each half of 128 values reads 32 bytes four times,
    quarter g from bits 2g and 2g + 1."""
    shifts = np.arange(0, 8, 2, dtype=np.uint8).reshape(1, 1, 4, 1)
    return ((quants.reshape(len(quants), 2, 1, 32) >> shifts) & 3).reshape(len(quants), 256)


def _q2_k(blocks: np.ndarray) -> np.ndarray:
    # 16 bytes of 4-bit scale (low) and min (high) per 16 values, 64 bytes of 2-bit codes, d, dmin:
    # y = (d * scale) * q - dmin * min.
    scales = blocks[:, 0:16]
    step = _half(blocks, 80) * (scales & 0x0F).astype(np.float32)
    low = _half(blocks, 82) * (scales >> 4).astype(np.float32)
    codes = _two_bit_codes(blocks[:, 16:80]).astype(np.float32)
    return np.repeat(step, 16, axis=1) * codes - np.repeat(low, 16, axis=1)


def _q3_k(blocks: np.ndarray) -> np.ndarray:
    # 32 bytes of high bits (value p's is bit p // 32 of byte p % 32; clear: the code is 4 lower), 64 bytes of 2-bit
    # codes, 12 bytes of sixteen 6-bit scales (stored plus 32), d: y = (d * (scale - 32)) * q, q in -4..3.
    count = len(blocks)
    high = (blocks[:, None, 0:32] >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 1  # (n, 8, 32)
    codes = _two_bit_codes(blocks[:, 32:96]).astype(np.int8) - np.where(high.reshape(count, 256), 0, 4).astype(np.int8)
    packed = blocks[:, 96:108]
    first, second, tops = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = np.concatenate([(first & 0x0F) | ((tops & 3) << 4), (second & 0x0F) | (((tops >> 2) & 3) << 4),
                             (first >> 4) | (((tops >> 4) & 3) << 4), (second >> 4) | (((tops >> 6) & 3) << 4)],
                            axis=1).astype(np.int16) - 32
    step = _half(blocks, 108) * scales.astype(np.float32)
    return np.repeat(step, 16, axis=1) * codes.astype(np.float32)


def _trits(packed: np.ndarray, count: int) -> np.ndarray:
    """TQ1_0's base-3 digits: byte b holds `count` trits as the fraction b / 256 of 3**5 (the quantizer rounds the
    base-3 number up to it), digit n (most significant first) is ((b * 3**n) mod 256) * 3 >> 8. As (n, count,
    bytes): digit-major, so the values of one digit across the bytes are consecutive (ggml's order)."""
    powers = (3 ** np.arange(count, dtype=np.uint16)).reshape(1, count, 1)
    shifted = (packed[:, None, :].astype(np.uint16) * powers) & 0xFF
    return ((shifted * 3) >> 8).astype(np.int8)


def _tq1_0(blocks: np.ndarray) -> np.ndarray:
    # 48 bytes of five trits each (32 bytes, then 16: values digit by digit across them), 4 bytes of four trits
    # each, then d: y = (t - 1) * d, t in 0..2.
    count = len(blocks)
    trits = np.concatenate([_trits(blocks[:, 0:32], 5).reshape(count, 160),
                            _trits(blocks[:, 32:48], 5).reshape(count, 80),
                            _trits(blocks[:, 48:52], 4).reshape(count, 16)], axis=1)
    return (trits - 1).astype(np.float32) * _half(blocks, 52)


def _tq2_0(blocks: np.ndarray) -> np.ndarray:
    # 64 bytes of 2-bit codes in Q2_K's order, then d: y = (q - 1) * d (q = 3 is not written, and decodes to 2 d).
    return (_two_bit_codes(blocks[:, 0:64]).astype(np.int8) - 1).astype(np.float32) * _half(blocks, 64)


# ggml's kvalues_iq4nl: IQ4_NL / IQ4_XS's 16 non-uniform levels (ggml-common.h), an int8 code's value.
IQ4NL_LEVELS = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
# ggml's kvalues_mxfp4: the 16 e2m1 (FP4) values doubled, so that they are integers; the e8m0 scale is halved.
MXFP4_LEVELS = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.int8)


def _iq4_nl(blocks: np.ndarray) -> np.ndarray:
    # d, then 16 bytes of 4-bit indices into the levels (Q4_0's order): y = d * level.
    return _half(blocks, 0) * IQ4NL_LEVELS[_low_high(blocks[:, 2:18])].astype(np.float32)


def _iq4_xs(blocks: np.ndarray) -> np.ndarray:
    # d, a uint16 of the 8 sub-blocks' scales' top 2 bits (sub-block s: bits 2s, 2s + 1), 4 bytes of their low 4 bits
    # (s: byte s // 2, low nibble for even s), 128 bytes of indices (16 bytes a sub-block of 32, Q4_0's order):
    # y = (d * (scale - 32)) * level, scale 0..63.
    count = len(blocks)
    high = np.ascontiguousarray(blocks[:, 2:4]).view("<u2")  # (n, 1)
    low = np.stack([blocks[:, 4:8] & 0x0F, blocks[:, 4:8] >> 4], axis=2).reshape(count, 8)
    tops = (high >> (2 * np.arange(8, dtype=np.uint16))) & 3
    scales = (low.astype(np.int16) | (tops.astype(np.int16) << 4)) - 32
    step = _half(blocks, 0) * scales.astype(np.float32)  # (n, 8)
    indices = _low_high(blocks[:, 8:136].reshape(count * 8, 16)).reshape(count, 8, 32)
    return (step[:, :, None] * IQ4NL_LEVELS[indices].astype(np.float32)).reshape(count, 256)


def _mxfp4(blocks: np.ndarray) -> np.ndarray:
    # An e8m0 exponent byte e, then 16 bytes of 4-bit e2m1 codes (Q4_0's order): y = level * 2**(e - 128), ggml's
    # GGML_E8M0_TO_FP32_HALF (2**-128 and 2**-127 as float32 subnormals, e = 255 as 2**127: no NaN, as ggml).
    scale = np.ldexp(np.float32(1), blocks[:, 0:1].astype(np.int32) - 128).astype(np.float32)
    return MXFP4_LEVELS[_low_high(blocks[:, 1:17])].astype(np.float32) * scale


# IQ2_XXS's codebook: 256 points of 8 values, each value 2 bits of a uint16 (value i: bits 2i, 2i + 1) naming one of
# the levels 8, 25, 43. ggml generates its iq2xxs_grid (ggml-common.h, 256 uint64 of 8 bytes) from this table
# (kgrid_2bit_256 in ggml-quants.c's iq2xs_init_impl); every entry was checked equal to ggml's.
_IQ2XXS_PACKED = np.array([
    0, 2, 5, 8, 10, 17, 20, 32, 34, 40, 42, 65, 68, 80, 88, 97,
    100, 128, 130, 138, 162, 257, 260, 272, 277, 320, 388, 408, 512, 514, 546, 642,
    1025, 1028, 1040, 1057, 1060, 1088, 1090, 1096, 1120, 1153, 1156, 1168, 1188, 1280, 1282, 1288,
    1312, 1350, 1385, 1408, 1425, 1545, 1552, 1600, 1668, 1700, 2048, 2053, 2056, 2068, 2088, 2113,
    2116, 2128, 2130, 2184, 2308, 2368, 2562, 2580, 4097, 4100, 4112, 4129, 4160, 4192, 4228, 4240,
    4245, 4352, 4360, 4384, 4432, 4442, 4480, 4644, 4677, 5120, 5128, 5152, 5157, 5193, 5248, 5400,
    5474, 5632, 5654, 6145, 6148, 6160, 6208, 6273, 6400, 6405, 6560, 6737, 8192, 8194, 8202, 8260,
    8289, 8320, 8322, 8489, 8520, 8704, 8706, 9217, 9220, 9232, 9280, 9302, 9472, 9537, 9572, 9872,
    10248, 10272, 10388, 10820, 16385, 16388, 16400, 16408, 16417, 16420, 16448, 16456, 16470, 16480, 16513, 16516,
    16528, 16640, 16672, 16737, 16768, 16773, 16897, 16912, 16968, 16982, 17000, 17408, 17416, 17440, 17536, 17561,
    17682, 17700, 17920, 18433, 18436, 18448, 18496, 18501, 18688, 18776, 18785, 18818, 19013, 19088, 20480, 20488,
    20497, 20505, 20512, 20608, 20616, 20740, 20802, 20900, 21137, 21648, 21650, 21770, 22017, 22100, 22528, 22545,
    22553, 22628, 22848, 23048, 24580, 24592, 24640, 24680, 24832, 24917, 25112, 25184, 25600, 25605, 25872, 25874,
    25988, 26690, 32768, 32770, 32778, 32833, 32898, 33028, 33048, 33088, 33297, 33793, 33796, 33808, 33813, 33856,
    33888, 34048, 34118, 34196, 34313, 34368, 34400, 34818, 35076, 35345, 36868, 36880, 36900, 36928, 37025, 37142,
    37248, 37445, 37888, 37922, 37956, 38225, 39041, 39200, 40962, 41040, 41093, 41225, 41472, 42008, 43088, 43268,
], dtype=np.uint16)
_IQ2XXS_LEVELS = np.array([8, 25, 43, 0], dtype=np.uint8)  # 2-bit code 3 is in no point
IQ2XXS_GRID = _IQ2XXS_LEVELS[(_IQ2XXS_PACKED[:, None] >> (2 * np.arange(8, dtype=np.uint16))) & 3]  # (256, 8)
# ggml's ksigns_iq2xs: 7 sign bits and, as the eighth, their parity (an even count of minus signs in every 8).
_EVEN_SIGNS = np.array([index | ((bin(index).count("1") & 1) << 7) for index in range(128)], dtype=np.uint8)


def _iq2_xxs(blocks: np.ndarray) -> np.ndarray:
    # d, then 8 groups of 8 bytes for 32 values each: 4 bytes of grid indices (8 values each), then a uint32 of four
    # 7-bit sign indices (bits 7 l ..) and a 4-bit scale (bits 28-31): y = ((d * (0.5 + scale)) * 0.25) * level,
    # negated where the sign bit of its place is set.
    count = len(blocks)
    groups = blocks[:, 2:66].reshape(count, 8, 8)
    words = np.ascontiguousarray(groups[:, :, 4:8]).reshape(count, 32).view("<u4")  # (n, 8)
    step = (_half(blocks, 0) * ((words >> 28).astype(np.float32) + np.float32(0.5))) * np.float32(0.25)
    signs = _EVEN_SIGNS[(words[:, :, None] >> (7 * np.arange(4, dtype=np.uint32))) & 127]  # (n, 8, 4)
    negative = (signs[..., None] >> np.arange(8, dtype=np.uint8)) & 1  # (n, 8, 4, 8)
    values = step[:, :, None, None] * IQ2XXS_GRID[groups[:, :, 0:4]].astype(np.float32)
    return np.where(negative.astype(bool), -values, values).reshape(count, 256)


def _q1_0(blocks: np.ndarray) -> np.ndarray:
    # d, then 16 bytes of one bit a value (value j: bit j % 8 of byte j // 8): y = d where it is set, else -d.
    bits = (blocks[:, 2:18, None] >> np.arange(8, dtype=np.uint8)) & 1
    d = _half(blocks, 0)
    return np.where(bits.reshape(len(blocks), 128).astype(bool), d, -d)


def _q2_0(blocks: np.ndarray) -> np.ndarray:
    # d, then 16 bytes of 2-bit codes (value j: bits 2 (j % 4), 2 (j % 4) + 1 of byte j // 4): y = (q - 1) * d.
    codes = (blocks[:, 2:18, None] >> (2 * np.arange(4, dtype=np.uint8))) & 3
    return (codes.reshape(len(blocks), 64).astype(np.int8) - 1).astype(np.float32) * _half(blocks, 0)


def _ue4m3_half(codes: np.ndarray) -> np.ndarray:
    """NVFP4's unsigned e4m3 scale bytes halved, as ggml's ggml_ue4m3_to_fp32 (the FP4 levels are doubled): exponent
    bits 3-6 (bias 7), mantissa bits 0-2, bit 7 ignored; 0 and 0x7F (e4m3's NaN) are 0. Every value exact."""
    exponent = ((codes >> 3) & 0x0F).astype(np.int32)
    mantissa = (codes & 7).astype(np.int32)
    # (1 + m / 8) * 2**(e - 7) = (8 + m) * 2**(e - 10); subnormal m * 2**-9; halved: one less in the exponent.
    significand = np.where(exponent == 0, mantissa, mantissa + 8).astype(np.float32)
    halved = np.ldexp(significand, np.where(exponent == 0, -10, exponent - 11)).astype(np.float32)
    return np.where((codes == 0) | (codes == 0x7F), np.float32(0), halved).astype(np.float32)


def _nvfp4(blocks: np.ndarray) -> np.ndarray:
    # 4 ue4m3 scale bytes (one a sub-block of 16 values), then 32 bytes of 4-bit e2m1 codes (8 a sub-block, Q4_0's
    # order within it): y = level * scale, the doubled FP4 levels of MXFP4 times the halved scale.
    count = len(blocks)
    codes = _low_high(blocks[:, 4:36].reshape(count * 4, 8)).reshape(count, 4, 16)
    levels = MXFP4_LEVELS[codes].astype(np.float32)
    return (levels * _ue4m3_half(blocks[:, 0:4])[:, :, None]).reshape(count, 64)


def _signed(values: np.ndarray, sign_bytes: np.ndarray) -> np.ndarray:
    """`values` (..., 8) negated where bit j of the group's sign byte (...) is set, as ggml's `* (signs & kmask_iq2xs[j]
    ? -1.f : 1.f)` (an exact negation: -0 where the product is 0)."""
    negative = ((sign_bytes[..., None] >> np.arange(8, dtype=np.uint8)) & 1).astype(bool)
    return np.where(negative, -values, values)


def _iq2_steps(d: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """IQ2_XS / IQ2_S's step of each group of 8 (n, 8, 4): sub-block s's scale byte holds groups 0-1's 4-bit scale
    low and groups 2-3's high, the step (d * (0.5 + scale)) * 0.25."""
    nibbles = np.stack([scales & 0x0F, scales >> 4], axis=2).astype(np.float32)  # (n, 8, 2)
    steps = (d[:, :, None] * (nibbles + np.float32(0.5))) * np.float32(0.25)
    return np.repeat(steps, 2, axis=2)


def _iq2_xs(blocks: np.ndarray) -> np.ndarray:
    # d, 32 uint16 (group g of 8 values: a 9-bit grid index, then a 7-bit sign index of even parity, as IQ2_XXS's),
    # 8 bytes of two 4-bit scales: y = step * level, negated by the sign bits.
    count = len(blocks)
    words = np.ascontiguousarray(blocks[:, 2:66]).view("<u2").reshape(count, 8, 4)
    steps = _iq2_steps(_half(blocks, 0), blocks[:, 66:74])
    values = steps[..., None] * IQ2XS_GRID[words & 511].astype(np.float32)
    return _signed(values, _EVEN_SIGNS[words >> 9]).reshape(count, 256)


def _iq2_s(blocks: np.ndarray) -> np.ndarray:
    # d, 32 bytes of grid indices' low 8 bits, 32 sign bytes (bit j: value j of the group), 8 bytes of their top 2
    # bits (group l of sub-block s: bits 2l, 2l + 1 of byte s), 8 bytes of scales as IQ2_XS's.
    count = len(blocks)
    low = blocks[:, 2:34].reshape(count, 8, 4).astype(np.uint16)
    tops = (blocks[:, 66:74, None] >> (2 * np.arange(4, dtype=np.uint8))) & 3  # (n, 8, 4)
    steps = _iq2_steps(_half(blocks, 0), blocks[:, 74:82])
    values = steps[..., None] * IQ2S_GRID[low | (tops.astype(np.uint16) << 8)].astype(np.float32)
    return _signed(values, blocks[:, 34:66].reshape(count, 8, 4)).reshape(count, 256)


def _iq3_xxs(blocks: np.ndarray) -> np.ndarray:
    # d, 64 bytes of grid indices (4 values each: two to a group of 8), 8 uint32 of four 7-bit sign indices (bits
    # 7 l ..) and a 4-bit scale (bits 28-31): y = ((d * (0.5 + scale)) * 0.5) * level, negated by the sign bits.
    count = len(blocks)
    words = np.ascontiguousarray(blocks[:, 66:98]).view("<u4")  # (n, 8)
    step = (_half(blocks, 0) * ((words >> 28).astype(np.float32) + np.float32(0.5))) * np.float32(0.5)
    signs = _EVEN_SIGNS[(words[:, :, None] >> (7 * np.arange(4, dtype=np.uint32))) & 127]  # (n, 8, 4)
    levels = IQ3XXS_GRID[blocks[:, 2:66].reshape(count, 8, 8)].reshape(count, 8, 4, 8).astype(np.float32)
    return _signed(step[:, :, None, None] * levels, signs).reshape(count, 256)


def _iq3_s(blocks: np.ndarray) -> np.ndarray:
    # d, 64 bytes of grid indices' low 8 bits (8 a sub-block), 8 bytes of their ninth bits (bit k of byte s: index k
    # of sub-block s), 32 sign bytes (4 a sub-block), 4 bytes of two 4-bit scales (sub-block 2 b low, 2 b + 1 high):
    # y = (d * (1 + 2 scale)) * level, negated by the sign bits.
    count = len(blocks)
    ninth = (blocks[:, 66:74, None] >> np.arange(8, dtype=np.uint8)) & 1  # (n, 8, 8)
    indices = blocks[:, 2:66].reshape(count, 8, 8).astype(np.uint16) | (ninth.astype(np.uint16) << 8)
    scales = np.stack([blocks[:, 106:110] & 0x0F, blocks[:, 106:110] >> 4], axis=2).reshape(count, 8)
    step = _half(blocks, 0) * (scales.astype(np.float32) * np.float32(2) + np.float32(1))  # 1 + 2 scale: exact
    levels = IQ3S_GRID[indices].reshape(count, 8, 4, 8).astype(np.float32)
    return _signed(step[:, :, None, None] * levels, blocks[:, 74:106].reshape(count, 8, 4)).reshape(count, 256)


def _iq1_s(blocks: np.ndarray) -> np.ndarray:
    # d, 32 bytes of grid indices' low 8 bits, 8 uint16 (sub-block s: the indices' top 3 bits at bits 3 l .., a
    # 3-bit scale at bits 12-14, the shift's sign at bit 15): y = (d * (2 scale + 1)) * (level + shift), level in
    # -1, 0, 1 and the shift +-0.125 (IQ1S_DELTA).
    count = len(blocks)
    high = np.ascontiguousarray(blocks[:, 34:50]).view("<u2")  # (n, 8)
    tops = (high[:, :, None] >> (3 * np.arange(4, dtype=np.uint16))) & 7  # (n, 8, 4)
    indices = blocks[:, 2:34].reshape(count, 8, 4).astype(np.uint16) | (tops << 8)
    step = _half(blocks, 0) * (((high >> 12) & 7).astype(np.float32) * np.float32(2) + np.float32(1))
    shift = np.where(high & 0x8000, np.float32(-0.125), np.float32(0.125)).astype(np.float32)
    levels = IQ1S_GRID[indices].astype(np.float32) + shift[:, :, None, None]  # exact: k / 8 for small k
    return (step[:, :, None, None] * levels).reshape(count, 256)


def _iq1_m(blocks: np.ndarray) -> np.ndarray:
    # 32 bytes of grid indices' low 8 bits, 16 bytes of a nibble a group of 8 (group 2 m low, 2 m + 1 high: the
    # index's top 3 bits and the shift's sign as bit 3), 4 uint16 holding sixteen 3-bit scales (scale k, for groups
    # 2 k and 2 k + 1: bits 3 (k % 4) .. of word k // 4) and d's fp16 bits in their top nibbles (word w's bits 12-15
    # are d's bits 4 w ..): y = (d * (2 scale + 1)) * (level + shift), as IQ1_S.
    count = len(blocks)
    words = np.ascontiguousarray(blocks[:, 48:56]).view("<u2")  # (n, 4)
    d_bits = ((words >> 12) << (4 * np.arange(4, dtype=np.uint16))).sum(axis=1, dtype=np.uint16)
    d = np.ascontiguousarray(d_bits).view("<f2").astype(np.float32)[:, None]
    scales = (np.repeat(words, 4, axis=1) >> np.tile(3 * np.arange(4, dtype=np.uint16), 4)) & 7  # (n, 16)
    step = d * (scales.astype(np.float32) * np.float32(2) + np.float32(1))
    nibbles = np.stack([blocks[:, 32:48] & 0x0F, blocks[:, 32:48] >> 4], axis=2).reshape(count, 32)
    indices = blocks[:, 0:32].astype(np.uint16) | ((nibbles & 7).astype(np.uint16) << 8)
    shift = np.where(nibbles & 8, np.float32(-0.125), np.float32(0.125)).astype(np.float32)
    levels = IQ1S_GRID[indices].astype(np.float32) + shift[:, :, None]  # (n, 32, 8)
    return (np.repeat(step, 2, axis=1)[:, :, None] * levels).reshape(count, 256)


_DECODERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Q8_0": _q8_0, "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1,
    "Q2_K": _q2_k, "Q3_K": _q3_k, "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k,
    "TQ1_0": _tq1_0, "TQ2_0": _tq2_0, "IQ4_NL": _iq4_nl, "IQ4_XS": _iq4_xs, "MXFP4": _mxfp4, "IQ2_XXS": _iq2_xxs,
    "IQ2_XS": _iq2_xs, "IQ2_S": _iq2_s, "IQ3_XXS": _iq3_xxs, "IQ3_S": _iq3_s, "IQ1_S": _iq1_s, "IQ1_M": _iq1_m,
    "NVFP4": _nvfp4, "Q1_0": _q1_0, "Q2_0": _q2_0,
}
assert set(_DECODERS) == DEQUANTIZED_TYPES


def dequantize(type_name: str, raw: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """The float32 values of whole blocks of ggml type `type_name`, in order (a 1-D array).

    Example:
        >>> import struct
        >>> block = struct.pack("<e", 0.5) + bytes([0, 1, 2, 254] + [0] * 28)
        >>> dequantize("Q8_0", block)[:4].tolist()
        [0.0, 0.5, 1.0, -1.0]

    Args:
        type_name: a ggml type of `gguf_format.DEQUANTIZED_TYPES` ("Q8_0", "Q4_K", ...).
        raw: a whole number of its blocks.

    Raises:
        UnsupportedFormat: a type not decoded here.
        ValueError: `raw` is not a whole number of blocks.
    """
    decode = _DECODERS.get(type_name)
    if decode is None:
        raise UnsupportedFormat(f"ggml type {type_name} is not dequantized by weightdoctor (it dequantizes "
                                f"{', '.join(sorted(DEQUANTIZED_TYPES))})")
    kind = GGML_TYPES_BY_NAME[type_name]
    data = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw.reshape(-1)
    if len(data) % kind.type_size:
        raise ValueError(f"{len(data)} bytes are not a whole number of {type_name} blocks ({kind.type_size} bytes)")
    # A block whose fp16 scale is inf or NaN decodes to inf / NaN values, as in ggml (0 * inf is NaN): counted by
    # the statistics' nan-inf finding, not a numpy RuntimeWarning printed with this file's source line on stderr.
    with np.errstate(invalid="ignore", over="ignore"):
        return decode(data.reshape(-1, kind.type_size)).reshape(-1)


def _read_exactly(fd: int, length: int, offset: int, name: str, path: Path) -> np.ndarray:
    buffer = np.empty(length, dtype=np.uint8)
    view = memoryview(buffer)
    done = 0
    while done < length:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise CorruptCheckpoint(f"file ended while reading tensor {name!r} (truncated or changed while reading)",
                                    path=str(path))
        done += got
    return buffer


def _open_checked(path: Path, identity: tuple[int, int, int, int] | None, name: str) -> int:
    from weightdoctor.checkpoint.safetensors_format import _refuse_if_changed

    fd = os.open(path, os.O_RDONLY)
    try:
        _refuse_if_changed(fd, identity, name, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _whole_blocks(info: TensorInfo, type_name: str) -> tuple[int, int]:
    """The tensor's bytes (begin, number of blocks), refused where they are not its values' whole blocks (the
    header's checks make them so: this guards a `TensorInfo` made elsewhere).

    Raises:
        CorruptCheckpoint: the values are not a whole number of blocks, or the bytes not those blocks.
    """
    kind = GGML_TYPES_BY_NAME[type_name]
    assert info.data_offsets is not None
    begin, end = info.data_offsets
    blocks, left = divmod(info.num_params, kind.block_size)
    if left or end - begin != blocks * kind.type_size:
        raise CorruptCheckpoint(f"tensor {info.name!r}: {info.num_params:,} {type_name} values in {end - begin:,} "
                                f"bytes, not whole blocks of {kind.block_size} values in {kind.type_size} bytes")
    return begin, blocks


def read_dequantized(path: Path, data_start: int, info: TensorInfo, type_name: str,
                     identity: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """A quantized GGUF tensor's values whole, dequantized to float32 in its PyTorch shape, decoded `CHUNK_BYTES`
    of blocks at a time into the one float32 tensor returned (its memory is refused first where there is not
    that much: `require_memory`).

    Raises:
        CorruptCheckpoint: the file ended, or changed since its header was read.
        UnsupportedEnvironment: the float32 values are more memory than is available.
    """
    import torch

    from weightdoctor.checkpoint.safetensors_format import require_memory

    kind = GGML_TYPES_BY_NAME[type_name]
    begin, blocks = _whole_blocks(info, type_name)
    end = begin + blocks * kind.type_size
    chunk_blocks = max(1, CHUNK_BYTES // kind.type_size)
    chunk_values = min(blocks, chunk_blocks) * kind.block_size
    # The float32 values returned, and one chunk's bytes and the decoder's temporaries (`DECODE_BYTES_PER_VALUE`).
    require_memory(path, f"tensor {info.name!r} ({type_name}, dequantized to float32)",
                   info.num_params * 4 + min(end - begin, CHUNK_BYTES) + chunk_values * DECODE_BYTES_PER_VALUE,
                   "; --sample N reads N values of each tensor instead")
    out = torch.empty(info.num_params, dtype=torch.float32)
    values = out.numpy()
    fd = _open_checked(path, identity, info.name)
    try:
        for first in range(0, blocks, chunk_blocks):
            count = min(chunk_blocks, blocks - first)
            raw = _read_exactly(fd, count * kind.type_size, data_start + begin + first * kind.type_size,
                                info.name, path)
            values[first * kind.block_size:(first + count) * kind.block_size] = dequantize(type_name, raw)
    finally:
        os.close(fd)
    return out.reshape(info.shape)


def values_at(path: Path, data_start: int, info: TensorInfo, type_name: str, positions: torch.Tensor,
              identity: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """The dequantized float32 values at `positions` (C-order positions in the tensor, any shape; the result has
    that shape), reading and decoding only the blocks that hold them: blocks less than `SPAN_BYTES` apart are read
    in one span, and only the blocks asked for are decoded. Memory: the values and one span's bytes and blocks,
    refused first where there is not that much (`require_memory`), as `read_dequantized` refuses a whole tensor.

    Raises:
        CorruptCheckpoint: the file ended, or changed since its header was read.
        UnsupportedEnvironment: the positions' values and their working arrays are more memory than is available.
    """
    import torch

    from weightdoctor.checkpoint.safetensors_format import require_memory

    kind = GGML_TYPES_BY_NAME[type_name]
    begin = _whole_blocks(info, type_name)[0]
    count = positions.numel()
    span_blocks = max(1, SPAN_BYTES // kind.type_size)
    # Asked before anything of the positions is made: a row of 2**33 values of a sparse file, sampled whole, made
    # 69 GB of int64 positions and died in torch's allocator (or, overcommitted, ran until the process was killed).
    require_memory(path, f"{count:,} values of tensor {info.name!r} ({type_name}, dequantized to float32)",
                   count * POSITION_BYTES + 2 * span_blocks * kind.type_size
                   + min(count, span_blocks) * kind.block_size * DECODE_BYTES_PER_VALUE,
                   "; a smaller --sample reads fewer", done="are read into memory: nothing was read")
    flat = positions.to(torch.int64).reshape(-1).numpy()
    out = np.empty(len(flat), dtype=np.float32)
    if not len(flat):
        return torch.from_numpy(out).reshape(positions.shape)
    if int(flat.min()) < 0 or int(flat.max()) >= info.num_params:
        raise IndexError(f"positions out of range for tensor {info.name!r} of {info.num_params:,} values")
    order = np.argsort(flat, kind="stable")
    blocks = flat[order] // kind.block_size
    fd = _open_checked(path, identity, info.name)
    try:
        start = 0
        while start < len(blocks):
            first = int(blocks[start])
            stop = int(np.searchsorted(blocks, first + span_blocks, side="left"))
            last = int(blocks[stop - 1])
            raw = _read_exactly(fd, (last - first + 1) * kind.type_size, data_start + begin + first * kind.type_size,
                                info.name, path).reshape(-1, kind.type_size)
            wanted, inverse = np.unique(blocks[start:stop] - first, return_inverse=True)
            decoded = dequantize(type_name, raw[wanted]).reshape(len(wanted), kind.block_size)
            within = flat[order[start:stop]] % kind.block_size
            out[order[start:stop]] = decoded[inverse.reshape(-1), within]
            start = stop
    finally:
        os.close(fd)
    return torch.from_numpy(out).reshape(positions.shape)
