"""gguf7: the lattice-codebook types IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M, and NVFP4, Q1_0, Q2_0 read
dequantized as ggml's dequantize_row_* computes them: the grids checked against entries of ggml-common.h's expanded
tables and ggml-quants.c's kgrid tables and pinned whole by checksum, every type's decoder against a scalar decoder
written here from ggml-quants.c's loops (to the bit), against hand-built blocks, and end to end through inspect
--stats and check-dtype on GGUF files written by the fixtures. Only Q8_1 / Q8_K, in no llama.cpp file type, stay
described from the header only."""

from __future__ import annotations

import hashlib
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from fixtures.gguf_files import Tensor, llama_metadata, write_gguf
from tests.helpers import json_report

F32 = np.float32
IQ_TYPES = ("IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M")
NEW_TYPES = (*IQ_TYPES, "NVFP4", "Q1_0", "Q2_0")
BLOCK_BYTES = {"IQ2_XS": 74, "IQ2_S": 82, "IQ3_XXS": 98, "IQ3_S": 110, "IQ1_S": 50, "IQ1_M": 56, "NVFP4": 36,
               "Q1_0": 18, "Q2_0": 18}
BLOCK_VALUES = {"NVFP4": 64, "Q1_0": 128, "Q2_0": 64, **{kind: 256 for kind in IQ_TYPES}}
# ggml-common.h's kvalues_fp4 (kvalues_mxfp4): FP4 (e2m1)'s 16 values doubled.
FP4_DOUBLED = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)

# --- the grids -----------------------------------------------------------------------------------------------------

# Entries of ggml-common.h's tables as it lists them (value j is byte j of the little-endian word; iq1s_grid's 0xff
# is -1), read from llama.cpp's ggml/src/ggml-common.h: the first points, some in the middle and the last.
GGML_ENTRIES: dict[str, tuple[int, dict[int, int]]] = {
    "IQ2XS_GRID": (8, {
        0: 0x0808080808080808, 1: 0x080808080808082b, 2: 0x0808080808081919, 3: 0x0808080808082b08,
        4: 0x0808080808082b2b, 5: 0x0808080808190819, 6: 0x0808080808191908, 7: 0x080808080819192b,
        28: 0x080808082b191908, 29: 0x080808082b192b19, 30: 0x080808082b2b0808, 31: 0x0808081908080819,
        508: 0x2b2b2b2b082b2b08, 509: 0x2b2b2b2b082b2b2b, 510: 0x2b2b2b2b2b190819, 511: 0x2b2b2b2b2b2b2b2b}),
    "IQ2S_GRID": (8, {
        0: 0x0808080808080808, 7: 0x080808080819192b, 23: 0x08080808192b192b, 24: 0x08080808192b2b19,
        25: 0x080808082b080808, 32: 0x080808082b2b1919, 33: 0x080808082b2b2b2b, 34: 0x0808081908080819,
        1016: 0x2b2b2b192b08192b, 1017: 0x2b2b2b2b08082b08, 1020: 0x2b2b2b2b082b082b, 1021: 0x2b2b2b2b082b2b08,
        1022: 0x2b2b2b2b2b082b08, 1023: 0x2b2b2b2b2b2b2b2b}),
    "IQ3XXS_GRID": (4, {
        0: 0x04040404, 1: 0x04040414, 2: 0x04040424, 3: 0x04040c0c, 4: 0x04040c1c, 5: 0x04040c3e, 6: 0x04041404,
        7: 0x04041414, 8: 0x04041c0c, 10: 0x04043e1c, 15: 0x040c0c14, 248: 0x3e1c1c1c, 250: 0x3e24140c,
        253: 0x3e2c0414, 254: 0x3e2c1424, 255: 0x3e341c04}),
    "IQ3S_GRID": (4, {
        0: 0x01010101, 1: 0x01010103, 2: 0x01010105, 3: 0x0101010b, 4: 0x0101010f, 5: 0x01010301, 128: 0x03030103,
        129: 0x03030107, 130: 0x0303010d, 135: 0x03030707, 504: 0x0f090307, 506: 0x0f090b01, 509: 0x0f0d0105,
        510: 0x0f0d0703, 511: 0x0f0f0101}),
    "IQ1S_GRID": (8, {
        0: 0xffffffffffffffff, 1: 0xffffffffffffff01, 2: 0xffffffffffff0000, 3: 0xffffffffffff01ff,
        4: 0xffffffffffff0101, 5: 0xffffffffff00ff00, 6: 0xffffffffff000000, 7: 0xffffffffff01ffff,
        2036: 0x010101010000ff00, 2037: 0x01010101000000ff, 2039: 0x0101010101ffffff, 2043: 0x0101010101000000,
        2044: 0x010101010101ffff, 2045: 0x010101010101ff01, 2046: 0x01010101010101ff, 2047: 0x0101010101010101}),
}
# ggml-quants.c's iq2xs_init_impl generates the IQ2 and IQ1 grids from tables of 2-bit codes (value j in bits 2j,
# 2j + 1): the first and last 16 of kgrid_2bit_512 (IQ2_XS) and the first 16 of kgrid_1bit_2048 (IQ1_S), as listed.
KGRID_2BIT_512_FIRST = [0, 2, 5, 8, 10, 17, 20, 22, 25, 32, 34, 37, 40, 65, 68, 70]
KGRID_2BIT_512_LAST = [42133, 42597, 42648, 43018, 43040, 43042, 43048, 43168, 43176, 43268, 43396, 43398, 43560,
                       43562, 43665, 43690]
KGRID_1BIT_2048_FIRST = [0, 2, 5, 8, 10, 17, 21, 32, 34, 40, 42, 69, 81, 84, 86, 101]
# SHA-256 of each table's points as ggml-common.h stores them (every point's bytes, little-endian, in order).
GRID_SHA256 = {
    "IQ2XS_GRID": "06e47aaca60b4dc1d9b5a3f34540437058a6b142b4d7a59d5ded769b4d1bf1de",
    "IQ2S_GRID": "e1aa1473412b0552c2174c30ef22ab4073f6a181b85a17056e8249bd2932fd88",
    "IQ3XXS_GRID": "46e35f5a997efdee6c99ce57854c8a0d4f0ff8ca57e5e8a60c0793ea580acf5d",
    "IQ3S_GRID": "bd1af4945a1717c65610b0284e4628b9a1ba3b306fae3a06f6e5f597356e349f",
    "IQ1S_GRID": "07540ffc1aeaf6ad4d97e96b0fcc765aae39671d4ae4a27bbd0e796fde167c6a",
}
SHAPES_AND_LEVELS = {"IQ2XS_GRID": ((512, 8), {8, 25, 43}), "IQ2S_GRID": ((1024, 8), {8, 25, 43}),
                     "IQ3XXS_GRID": ((256, 4), {4, 12, 20, 28, 36, 44, 52, 62}),
                     "IQ3S_GRID": ((512, 4), {1, 3, 5, 7, 9, 11, 13, 15}), "IQ1S_GRID": ((2048, 8), {-1, 0, 1})}


@pytest.mark.parametrize("name", sorted(GGML_ENTRIES))
def test_every_grid_is_ggmls(name: str) -> None:
    from weightdoctor.checkpoint import gguf_grids

    grid = getattr(gguf_grids, name)
    shape, levels = SHAPES_AND_LEVELS[name]
    assert grid.shape == shape and set(np.unique(grid).tolist()) == levels
    width, entries = GGML_ENTRIES[name]
    for index, entry in entries.items():
        assert grid[index].tobytes() == entry.to_bytes(width, "little"), (name, index)
    assert len({row.tobytes() for row in grid}) == shape[0]  # distinct points
    assert hashlib.sha256(grid.tobytes()).hexdigest() == GRID_SHA256[name]


def test_the_iq2_and_iq1_grids_are_ggmls_kgrid_tables() -> None:
    from weightdoctor.checkpoint.gguf_grids import IQ1S_GRID, IQ2XS_GRID

    def packed(rows: np.ndarray, levels: list[int]) -> list[int]:
        return [sum(levels.index(int(v)) << (2 * j) for j, v in enumerate(row)) for row in rows]

    assert packed(IQ2XS_GRID[:16], [8, 25, 43]) == KGRID_2BIT_512_FIRST
    assert packed(IQ2XS_GRID[-16:], [8, 25, 43]) == KGRID_2BIT_512_LAST
    assert packed(IQ1S_GRID[:16], [-1, 0, 1]) == KGRID_1BIT_2048_FIRST


# --- scalar decoders from ggml-quants.c's loops --------------------------------------------------------------------

def _half(raw: bytes, at: int) -> np.float32:
    return F32(np.frombuffer(raw[at:at + 2], dtype="<f2")[0])


def _even_signs(seven: int) -> int:
    """ggml's ksigns_iq2xs[seven]: the 7 bits and their parity as bit 7."""
    return seven | ((bin(seven).count("1") & 1) << 7)


def _sign(byte: int, j: int) -> np.float32:
    return F32(-1.0) if byte & (1 << j) else F32(1.0)


def scalar_dequantize(kind: str, raw: bytes) -> list[np.float32]:
    """One block decoded value by value as ggml-quants.c's dequantize_row_<kind> loop does; each operation float32."""
    from weightdoctor.checkpoint.gguf_grids import IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ3S_GRID, IQ3XXS_GRID

    out: list[np.float32] = []
    if kind == "Q1_0":
        d = _half(raw, 0)
        return [d if (raw[2 + j // 8] >> (j % 8)) & 1 else F32(-d) for j in range(128)]
    if kind == "Q2_0":
        d = _half(raw, 0)
        return [F32(F32(((raw[2 + j // 4] >> (2 * (j % 4))) & 3) - 1) * d) for j in range(64)]
    if kind == "NVFP4":
        for sub_block in range(4):
            d = _ue4m3_half(raw[sub_block])
            group = [F32(0)] * 16
            for j in range(8):
                byte = raw[4 + 8 * sub_block + j]
                group[j] = F32(F32(FP4_DOUBLED[byte & 0x0F]) * d)
                group[j + 8] = F32(F32(FP4_DOUBLED[byte >> 4]) * d)
            out += group
        return out
    if kind in ("IQ2_XS", "IQ2_S"):
        d = _half(raw, 0)
        scales = raw[66:74] if kind == "IQ2_XS" else raw[74:82]
        for ib32 in range(8):
            db = [F32(F32(d * F32(F32(0.5) + F32(scales[ib32] & 0xF))) * F32(0.25)),
                  F32(F32(d * F32(F32(0.5) + F32(scales[ib32] >> 4))) * F32(0.25))]
            for lane in range(4):
                if kind == "IQ2_XS":
                    (word,) = struct.unpack_from("<H", raw, 2 + 2 * (4 * ib32 + lane))
                    point, signs = IQ2XS_GRID[word & 511], _even_signs(word >> 9)
                else:
                    index = raw[2 + 4 * ib32 + lane] | ((raw[66 + ib32] << (8 - 2 * lane)) & 0x300)
                    point, signs = IQ2S_GRID[index], raw[34 + 4 * ib32 + lane]
                for j in range(8):
                    out.append(F32(F32(db[lane // 2] * F32(point[j])) * _sign(signs, j)))
        return out
    if kind == "IQ3_XXS":
        d = _half(raw, 0)
        for ib32 in range(8):
            (aux,) = struct.unpack_from("<I", raw, 66 + 4 * ib32)
            db = F32(F32(d * F32(F32(0.5) + F32(aux >> 28))) * F32(0.5))
            for lane in range(4):
                signs = _even_signs((aux >> (7 * lane)) & 127)
                first, second = IQ3XXS_GRID[raw[2 + 8 * ib32 + 2 * lane]], IQ3XXS_GRID[raw[2 + 8 * ib32 + 2 * lane + 1]]
                group = [F32(0)] * 8
                for j in range(4):
                    group[j] = F32(F32(db * F32(first[j])) * _sign(signs, j))
                    group[j + 4] = F32(F32(db * F32(second[j])) * _sign(signs, j + 4))
                out += group
        return out
    if kind == "IQ3_S":
        d = _half(raw, 0)
        qs, qh, signs, scales = raw[2:66], raw[66:74], raw[74:106], raw[106:110]
        for ib32 in range(8):
            scale = scales[ib32 // 2] & 0xF if ib32 % 2 == 0 else scales[ib32 // 2] >> 4
            db = F32(d * F32(1 + 2 * scale))
            for lane in range(4):
                first = IQ3S_GRID[qs[8 * ib32 + 2 * lane] | ((qh[ib32] << (8 - 2 * lane)) & 256)]
                second = IQ3S_GRID[qs[8 * ib32 + 2 * lane + 1] | ((qh[ib32] << (7 - 2 * lane)) & 256)]
                sign_byte = signs[4 * ib32 + lane]
                group = [F32(0)] * 8
                for j in range(4):
                    group[j] = F32(F32(db * F32(first[j])) * _sign(sign_byte, j))
                    group[j + 4] = F32(F32(db * F32(second[j])) * _sign(sign_byte, j + 4))
                out += group
        return out
    if kind == "IQ1_S":
        d = _half(raw, 0)
        for ib in range(8):
            (qh,) = struct.unpack_from("<H", raw, 34 + 2 * ib)
            dl = F32(d * F32(2 * ((qh >> 12) & 7) + 1))
            delta = F32(-0.125) if qh & 0x8000 else F32(0.125)
            for lane in range(4):
                point = IQ1S_GRID[raw[2 + 4 * ib + lane] | (((qh >> (3 * lane)) & 7) << 8)]
                out += [F32(dl * F32(F32(point[j]) + delta)) for j in range(8)]
        return out
    assert kind == "IQ1_M"
    sc = struct.unpack_from("<4H", raw, 48)
    bits = (sc[0] >> 12) | ((sc[1] >> 8) & 0x00F0) | ((sc[2] >> 4) & 0x0F00) | (sc[3] & 0xF000)
    d = F32(np.array([bits], dtype=np.uint16).view("<f2")[0])
    for ib in range(8):
        dl1 = F32(d * F32(2 * ((sc[ib // 2] >> (6 * (ib % 2) + 0)) & 0x7) + 1))
        dl2 = F32(d * F32(2 * ((sc[ib // 2] >> (6 * (ib % 2) + 3)) & 0x7) + 1))
        qs, qh = raw[4 * ib:4 * ib + 4], raw[32 + 2 * ib:32 + 2 * ib + 2]
        index = [qs[0] | ((qh[0] << 8) & 0x700), qs[1] | ((qh[0] << 4) & 0x700),
                 qs[2] | ((qh[1] << 8) & 0x700), qs[3] | ((qh[1] << 4) & 0x700)]
        delta = [F32(-0.125) if flag else F32(0.125)
                 for flag in (qh[0] & 0x08, qh[0] & 0x80, qh[1] & 0x08, qh[1] & 0x80)]
        for lane in range(4):
            dl = dl1 if lane < 2 else dl2
            out += [F32(dl * F32(F32(IQ1S_GRID[index[lane]][j]) + delta[lane])) for j in range(8)]
    return out


def _ue4m3_half(code: int) -> np.float32:
    """ggml's ggml_ue4m3_to_fp32: 0 for 0 and 0x7F, else (1 + m / 8) * 2**(e - 7) (m * 2**-9 for e = 0), halved."""
    if code in (0, 0x7F):
        return F32(0)
    exponent, mantissa = (code >> 3) & 0xF, code & 7
    raw = math.ldexp(mantissa, -9) if exponent == 0 else math.ldexp(1.0 + mantissa / 8.0, exponent - 7)
    return F32(F32(raw) * F32(0.5))


def _random_blocks(kind: str, count: int, seed: int) -> bytes:
    """Random bytes in every field, the fp16 d drawn finite (IQ1_M's, spread over its scale words' top nibbles, too)."""
    rng = np.random.default_rng(seed)
    size = BLOCK_BYTES[kind]
    blocks = bytearray(rng.integers(0, 256, size=count * size, dtype=np.uint8).tobytes())
    for block in range(count):
        d = np.array([rng.normal(0, 0.01)], dtype="<f2").view("<u2")[0]
        if kind == "NVFP4":
            continue  # its scale bytes are any of their 256 values
        if kind == "IQ1_M":
            words = list(struct.unpack_from("<4H", blocks, block * size + 48))
            words = [(word & 0x0FFF) | (((int(d) >> (4 * w)) & 0xF) << 12) for w, word in enumerate(words)]
            struct.pack_into("<4H", blocks, block * size + 48, *words)
        else:
            struct.pack_into("<H", blocks, block * size, int(d))
    return bytes(blocks)


def _scalar_blocks(kind: str, raw: bytes) -> np.ndarray:
    size = BLOCK_BYTES[kind]
    return np.array([v for start in range(0, len(raw), size) for v in scalar_dequantize(kind, raw[start:start + size])],
                    dtype=np.float32)


@pytest.mark.parametrize("kind", NEW_TYPES)
def test_every_new_type_decodes_as_ggmls_loop_to_the_bit(kind: str) -> None:
    from weightdoctor.checkpoint.gguf_quants import dequantize

    raw = _random_blocks(kind, 24, seed=NEW_TYPES.index(kind) + 70)
    got = dequantize(kind, raw)
    want = _scalar_blocks(kind, raw)
    assert got.dtype == np.float32 and got.shape == (24 * BLOCK_VALUES[kind],)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # bit for bit, signed zeros included
    # The random blocks reach many points, scales and signs (Q1_0: two values a block, +-d).
    assert len(np.unique(got)) >= (40 if kind == "Q1_0" else 50)


# --- hand-built blocks ---------------------------------------------------------------------------------------------

def _fp16(value: float) -> bytes:
    return struct.pack("<e", value)


def test_hand_built_iq2_blocks() -> None:
    from weightdoctor.checkpoint.gguf_grids import IQ2S_GRID
    from weightdoctor.checkpoint.gguf_quants import dequantize

    # IQ2_XS: d = 1; group 0's word: grid index 1 (43, then 8 seven times) with sign index 1 (ksigns 129: values 0
    # and 7 negative); group 2's: index 511 (43 eight times), no sign. Scale byte 0x32: groups 0-1 scale 2, step
    # (1 * 2.5) * 0.25 = 0.625; groups 2-3 scale 3, step 0.875. The other sub-blocks: index 0, scale 0, step 0.125.
    words = [1 | (1 << 9), 0, 511] + [0] * 29
    block = _fp16(1.0) + struct.pack("<32H", *words) + bytes([0x32] + [0] * 7)
    values = dequantize("IQ2_XS", block)
    assert values[:8].tolist() == [-26.875, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, -5.0]
    assert values[8:16].tolist() == [5.0] * 8 and values[16:24].tolist() == [37.625] * 8
    assert values[32:].tolist() == [1.0] * 224
    # IQ2_S: d = 0.5; group 0 index 1 with the sign byte 0x80 (only value 7 negative: no parity here), group 1 index
    # 0xff plus top bits 3 (byte 0 of qh, bits 2-3): 1023, 43 eight times; group 4 (sub-block 1) low byte 0 with top
    # bits 2: index 512. Scale byte 0x01: step (0.5 * 1.5) * 0.25 = 0.1875 for groups 0-1, 0.0625 for 2-3.
    qs = bytes([1, 0xFF] + [0] * 30)
    signs = bytes([0x80] + [0] * 31)
    qh = bytes([0b1100, 0b10] + [0] * 6)
    block = _fp16(0.5) + qs + signs + qh + bytes([0x01] + [0] * 7)
    values = dequantize("IQ2_S", block)
    assert values[:8].tolist() == [8.0625] + [1.5] * 6 + [-1.5]
    assert values[8:16].tolist() == [8.0625] * 8 and values[16:24].tolist() == [0.5] * 8
    assert values[32:40].tolist() == (IQ2S_GRID[512].astype(np.float64) * 0.0625).tolist()
    assert IQ2S_GRID[512].tolist() != IQ2S_GRID[0].tolist()


def test_hand_built_iq3_blocks() -> None:
    from weightdoctor.checkpoint.gguf_quants import dequantize

    # IQ3_XXS: d = 1; group 0's two indices 1 (20, 4, 4, 4) and 255 (4, 28, 52, 62); sub-block 0's word: sign index
    # 1 (values 0 and 7 negative), scale 2 (bits 28-31): step (1 * 2.5) * 0.5 = 1.25.
    block = _fp16(1.0) + bytes([1, 255] + [0] * 62) + struct.pack("<8I", 1 | (2 << 28), *[0] * 7)
    values = dequantize("IQ3_XXS", block)
    assert values[:8].tolist() == [-25.0, 5.0, 5.0, 5.0, 5.0, 35.0, 65.0, -77.5]
    assert values[8:32].tolist() == [5.0] * 24 and values[32:].tolist() == [1.0] * 224  # scale 0: step 0.25
    # IQ3_S: d = 0.25; group 0's indices 1 (3, 1, 1, 1) and 0xff with its ninth bit (qh byte 0, bit 1): 511 (1, 1,
    # 15, 15); sign byte 0x01 (value 0 negative); scale byte 0x21: sub-block 0 scale 1, step 0.25 * 3 = 0.75,
    # sub-block 1 scale 2, step 1.25; sub-blocks 2-7 scale 0, step 0.25.
    qs = bytes([1, 0xFF] + [0] * 62)
    block = _fp16(0.25) + qs + bytes([0b10] + [0] * 7) + bytes([0x01] + [0] * 31) + bytes([0x21, 0, 0, 0])
    values = dequantize("IQ3_S", block)
    assert values[:8].tolist() == [-2.25, 0.75, 0.75, 0.75, 0.75, 0.75, 11.25, 11.25]
    assert values[32:64].tolist() == [1.25] * 32 and values[64:].tolist() == [0.25] * 192


def test_hand_built_iq1_blocks() -> None:
    from weightdoctor.checkpoint.gguf_quants import dequantize

    # IQ1_S: d = 1; sub-block 0: group 0 index 1 (1, then -1 seven times), group 1 index 0xff plus top bits 7 (bits
    # 3-5): 2047 (1 eight times); scale 2 (bits 12-14): dl = 5; shift +0.125 -> 5.625 and -4.375. Sub-block 1: scale
    # 0, the shift's sign bit set: -0.125, index 0 (-1 eight times): 1 * (-1 - 0.125).
    qh = [(7 << 3) | (2 << 12), 0x8000] + [0] * 6
    block = _fp16(1.0) + bytes([1, 0xFF] + [0] * 30) + struct.pack("<8H", *qh)
    values = dequantize("IQ1_S", block)
    assert values[:8].tolist() == [5.625] + [-4.375] * 7 and values[8:16].tolist() == [5.625] * 8
    assert values[16:32].tolist() == [-4.375] * 16
    assert values[32:64].tolist() == [-1.125] * 32 and values[64:].tolist() == [-0.875] * 192
    # IQ1_M: d = 0.5 (fp16 0x3800: nibble 8 atop word 2, nibble 3 atop word 3); word 0's 3-bit scales 1 (groups 0-1:
    # dl = 0.5 * 3) and 2 (groups 2-3: 2.5). Group 0 index 1, shift +; group 1 index 0xff with nibble 0b1111 (top
    # bits 7: 2047, the shift's sign set: -0.125); group 2 index 0 (-1s), shift +. The rest: scale 0, dl = 0.5.
    words = [1 | (2 << 3), 0, 0x8 << 12, 0x3 << 12]
    block = bytes([1, 0xFF] + [0] * 30) + bytes([0xF0] + [0] * 15) + struct.pack("<4H", *words)
    values = dequantize("IQ1_M", block)
    assert values[:8].tolist() == [1.6875] + [-1.3125] * 7 and values[8:16].tolist() == [1.3125] * 8
    assert values[16:32].tolist() == [-2.1875] * 16 and values[32:].tolist() == [-0.4375] * 224


def test_hand_built_nvfp4_blocks() -> None:
    from weightdoctor.checkpoint.gguf_quants import dequantize

    # Scale bytes: 0x38 (exponent 7, mantissa 0: 1, halved 0.5: the doubled levels become e2m1's own), 0x7F (e4m3's
    # NaN: ggml reads 0), 0x01 (subnormal 2**-9, halved 2**-10), 0xFF (bit 7 ignored: 1.875 * 2**8 = 480, halved
    # 240). Byte j of a sub-block holds value j's code (low) and value j + 8's (high): codes j and 15 - j.
    codes = bytes(j | ((15 - j) << 4) for j in range(8))
    values = dequantize("NVFP4", bytes([0x38, 0x7F, 0x01, 0xFF]) + codes * 4)
    assert values[:16].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -6.0, -4.0, -3.0, -2.0, -1.5, -1.0, -0.5,
                                    0.0]
    assert not values[16:32].any()  # 0x7F: zeros
    assert values[33] == 2.0 ** -10 and values[39] == 12 * 2.0 ** -10
    assert values[48:64].tolist() == [240.0 * level for level in (0, 1, 2, 3, 4, 6, 8, 12, -12, -8, -6, -4, -3, -2,
                                                                   -1, 0)]


def test_hand_built_q1_0_and_q2_0_blocks() -> None:
    from weightdoctor.checkpoint.gguf_quants import dequantize

    # Q1_0: d = 0.5; byte 0 = 0b10000001 (values 0 and 7 set: +d), byte 15 = 0xFF (values 120-127); the rest -d.
    values = dequantize("Q1_0", _fp16(0.5) + bytes([0b10000001] + [0] * 14 + [0xFF]))
    assert values[:8].tolist() == [0.5] + [-0.5] * 6 + [0.5]
    assert values[8:120].tolist() == [-0.5] * 112 and values[120:].tolist() == [0.5] * 8
    # Q2_0: d = 2; byte 0 = 0b11100100 holds codes 0, 1, 2, 3 for values 0-3 (-d, 0, d, 2 d: ggml's reference
    # quantizer writes code 3 too, for a value of twice the block's largest magnitude only as clamped); the rest -d.
    values = dequantize("Q2_0", _fp16(2.0) + bytes([0b11100100] + [0] * 15))
    assert values[:4].tolist() == [-2.0, 0.0, 2.0, 4.0] and values[4:].tolist() == [-2.0] * 60


# --- end to end ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", NEW_TYPES)
def test_inspect_stats_reads_the_new_types_end_to_end(tmp_path: Path, kind: str) -> None:
    """A GGUF holding a 64 x 256 matrix of `kind`: inspect --stats --json gives it the statistics of the values ggml
    decodes, and check-dtype counts it read (before gguf7: null stats, 'not read' warnings, quantized_not_read 1)."""
    raw = _random_blocks(kind, 16384 // BLOCK_VALUES[kind], seed=NEW_TYPES.index(kind) + 90)
    path = write_gguf(tmp_path / f"m.{kind}.gguf", llama_metadata(),
                      [Tensor("blk.0.attn_q.weight", [256, 64], kind, raw),
                       Tensor("blk.0.attn_norm.weight", [256], "F32", np.ones(256, np.float32).tobytes())])
    report = json_report("inspect", "--stats", str(path))
    rows = {row["name"]: row for row in report["tensors"]}
    row = rows["blk.0.attn_q.weight"]
    decoded = _scalar_blocks(kind, raw).astype(np.float64)
    assert row["dtype"] == kind and row["stats"] is not None, row
    stats = row["stats"]
    assert stats["count"] == decoded.size == 16384
    assert stats["max"] == pytest.approx(float(decoded.max())) and stats["min"] == pytest.approx(float(decoded.min()))
    assert stats["mean"] == pytest.approx(decoded.mean(), rel=1e-5, abs=1e-9)
    assert stats["std"] == pytest.approx(decoded.std(), rel=1e-5)
    assert not [w for w in report["warnings"] if "not read" in w], report["warnings"]
    assert report["gguf"]["values_note"].startswith(f"{kind} tensors are read dequantized to float32")
    checked = json_report("check-dtype", str(path))
    assert checked["quantized_dequantized"] == 1 and checked["quantized_not_read"] == 0


def test_sampled_values_are_the_decoded_ones(tmp_path: Path) -> None:
    """--sample reads only the blocks holding the sampled positions: their values are the whole decode's."""
    import torch

    from weightdoctor.checkpoint.gguf_format import read_header
    from weightdoctor.checkpoint.gguf_quants import values_at

    raw = _random_blocks("IQ3_S", 32, seed=5)
    path = write_gguf(tmp_path / "m.gguf", llama_metadata(), [Tensor("blk.0.attn_q.weight", [256, 32], "IQ3_S", raw)])
    header = read_header(path, path.name)
    [info] = [t for t in header.tensors if t.name == "blk.0.attn_q.weight"]
    positions = torch.tensor([0, 255, 256, 4097, 8191])
    got = values_at(path, header.data_start, info, "IQ3_S", positions)
    assert got.tolist() == _scalar_blocks("IQ3_S", raw)[positions.numpy()].tolist()


def test_every_file_type_is_decoded() -> None:
    from weightdoctor.checkpoint.gguf_format import DEQUANTIZED_TYPES, GGML_TYPES_BY_NAME, is_unread_dtype

    assert set(NEW_TYPES) <= DEQUANTIZED_TYPES
    assert not any(is_unread_dtype(kind) for kind in NEW_TYPES)
    unread = {name for name in GGML_TYPES_BY_NAME if is_unread_dtype(name)}
    # Q8_1 and Q8_K: intermediates of ggml's dot products, in no llama.cpp file type.
    assert unread == {"Q8_1", "Q8_K"}, unread
