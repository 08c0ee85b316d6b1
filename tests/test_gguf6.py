"""gguf6: the ternary TQ1_0 / TQ2_0, MXFP4 and the table-based IQ4_NL / IQ4_XS read dequantized as ggml's
dequantize_row_* computes them (checked against scalar decoders written here from ggml-quants.c's loops, against
hand-built blocks, and end to end through inspect --stats); a folder of one split GGUF's parts read as that set; and
plan-devices on a folder of several GGUF files naming the plan-devices command that plans one of them."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from fixtures.gguf_files import (
    IQ4NL_LEVELS,
    MXFP4_LEVELS,
    QUANTIZERS,
    Tensor,
    llama_metadata,
    pack_iq4_xs,
    pack_tq1_0,
    pack_tq2_0,
    quantized_llama_gguf,
    split_gguf,
    tiny_llama_gguf,
)
from tests.helpers import json_report, run_cli, run_json

F32 = np.float32
NEW_TYPES = ("TQ1_0", "TQ2_0", "IQ4_NL", "IQ4_XS", "MXFP4")
SIZES = {"TQ1_0": (256, 54), "TQ2_0": (256, 66), "IQ4_NL": (32, 18), "IQ4_XS": (256, 136), "MXFP4": (32, 17)}


def _half(raw: bytes, at: int) -> np.float32:
    return F32(np.frombuffer(raw[at:at + 2], dtype="<f2")[0])


def _e8m0_half(e: int) -> np.float32:
    """ggml's GGML_E8M0_TO_FP32_HALF, by its bits: 0x00200000 << e for e < 2 (subnormals), else (e - 1) << 23."""
    bits = (0x00200000 << e) if e < 2 else ((e - 1) << 23)
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


def scalar_dequantize(kind: str, raw: bytes) -> list[np.float32]:
    """One block decoded value by value, following ggml-quants.c's loops (`dequantize_row_tq1_0`, ...); each product a
    float32 operation."""
    out: list[np.float32] = []
    if kind == "TQ1_0":
        qs, qh, d = raw[0:48], raw[48:52], _half(raw, 52)
        pow3 = (1, 3, 9, 27, 81, 243)
        for start, width in ((0, 32), (32, 16)):
            for n in range(5):
                for m in range(width):
                    q = (qs[start + m] * pow3[n]) & 0xFF  # uint8 arithmetic
                    out.append(F32(F32(((q * 3) >> 8) - 1) * d))
        for n in range(4):
            for j in range(4):
                q = (qh[j] * pow3[n]) & 0xFF
                out.append(F32(F32(((q * 3) >> 8) - 1) * d))
        return out
    if kind == "TQ2_0":
        qs, d = raw[0:64], _half(raw, 64)
        for j in (0, 32):
            for shift in range(4):
                for m in range(32):
                    out.append(F32(F32(((qs[j + m] >> (2 * shift)) & 3) - 1) * d))
        return out
    if kind == "IQ4_NL":
        d, qs = _half(raw, 0), raw[2:18]
        out = [F32(0)] * 32
        for j in range(16):
            out[j] = F32(d * F32(IQ4NL_LEVELS[qs[j] & 0xF]))
            out[j + 16] = F32(d * F32(IQ4NL_LEVELS[qs[j] >> 4]))
        return out
    if kind == "IQ4_XS":
        d = _half(raw, 0)
        (scales_h,) = struct.unpack_from("<H", raw, 2)
        scales_l, qs = raw[4:8], raw[8:136]
        for ib in range(8):
            ls = ((scales_l[ib // 2] >> (4 * (ib % 2))) & 0xF) | (((scales_h >> (2 * ib)) & 3) << 4)
            dl = F32(d * F32(ls - 32))
            block = [F32(0)] * 32
            for j in range(16):
                block[j] = F32(dl * F32(IQ4NL_LEVELS[qs[16 * ib + j] & 0xF]))
                block[j + 16] = F32(dl * F32(IQ4NL_LEVELS[qs[16 * ib + j] >> 4]))
            out += block
        return out
    assert kind == "MXFP4"
    d, qs = _e8m0_half(raw[0]), raw[1:17]
    out = [F32(0)] * 32
    for j in range(16):
        out[j] = F32(F32(MXFP4_LEVELS[qs[j] & 0x0F]) * d)
        out[j + 16] = F32(F32(MXFP4_LEVELS[qs[j] >> 4]) * d)
    return out


def _random_blocks(kind: str, count: int, seed: int) -> bytes:
    """Random bytes in every field, the fp16 scale drawn finite (MXFP4's e8m0 byte is any of its 256 values)."""
    rng = np.random.default_rng(seed)
    size = SIZES[kind][1]
    blocks = bytearray(rng.integers(0, 256, size=count * size, dtype=np.uint8).tobytes())
    at = {"TQ1_0": 52, "TQ2_0": 64, "IQ4_NL": 0, "IQ4_XS": 0}.get(kind)
    for block in range(count):
        if at is not None:
            struct.pack_into("<e", blocks, block * size + at, float(rng.normal(0, 0.01)))
    return bytes(blocks)


@pytest.mark.parametrize("kind", NEW_TYPES)
def test_every_new_type_decodes_as_ggmls_loops_to_the_bit(kind: str) -> None:
    from weightdoctor.checkpoint.gguf_quants import dequantize

    count = 24
    raw = _random_blocks(kind, count, seed=NEW_TYPES.index(kind) + 11)
    size = SIZES[kind][1]
    got = dequantize(kind, raw)
    want = np.array([v for block in range(count)
                      for v in scalar_dequantize(kind, raw[block * size:(block + 1) * size])], dtype=np.float32)
    assert got.dtype == np.float32 and got.shape == (count * SIZES[kind][0],)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # bit for bit, signed zeros included


def test_hand_built_ternary_blocks() -> None:
    from weightdoctor.checkpoint.gguf_quants import dequantize

    # TQ1_0: d = 0.5, trit i = i % 3 (value i is (i % 3 - 1) * 0.5), packed five (four) to a byte as base-3
    # fractions of 256 by the writer (ggml's quantize_row_tq1_0_ref).
    trits = [i % 3 for i in range(256)]
    tq1 = dequantize("TQ1_0", pack_tq1_0(0.5, trits))
    assert tq1.tolist() == [(t - 1) * 0.5 for t in trits]
    # Byte values by hand: trits 2, 2, 2, 2, 2 (242 in base 3) -> ceil(242 * 256 / 243) = 255; 1, 0, 0, 0, 0 (81)
    # -> 86; value n * 32 of the block is digit n of byte 0.
    block = bytearray(54)
    block[0], block[1] = 255, 86
    struct.pack_into("<e", block, 52, 0.25)
    decoded = dequantize("TQ1_0", bytes(block))
    assert decoded[[0, 32, 64, 96, 128]].tolist() == [0.25] * 5
    assert decoded[[1, 33, 65, 97, 129]].tolist() == [0.0, -0.25, -0.25, -0.25, -0.25]
    # Every other byte 0: digits 0 (-d), as the qh bytes' values 240-255 are.
    assert decoded[2] == decoded[255] == -0.25
    # TQ2_0: d = 2; byte j of each 32 holds values j, j + 32, j + 64, j + 96 of its 128 in bits 0-1, 2-3, 4-5, 6-7;
    # code 3, which ggml's quantizer never writes, decodes to 2 d.
    tq2 = dequantize("TQ2_0", bytes([0b11100100] * 64) + struct.pack("<e", 2.0))
    assert tq2[[0, 32, 64, 96, 128, 255]].tolist() == [-2.0, 0.0, 2.0, 4.0, -2.0, 4.0]
    codes = [(i * 7) % 3 for i in range(256)]
    assert dequantize("TQ2_0", pack_tq2_0(0.125, codes)).tolist() == [(c - 1) * 0.125 for c in codes]


def test_hand_built_iq4_and_mxfp4_blocks() -> None:
    from weightdoctor.checkpoint.gguf_quants import dequantize

    half = struct.Struct("<e").pack
    # IQ4_NL: d = 0.25; byte j holds value j's index j (low) and value j + 16's index 15 - j (high).
    nl = dequantize("IQ4_NL", half(0.25) + bytes(j | ((15 - j) << 4) for j in range(16)))
    assert nl.tolist() == [0.25 * IQ4NL_LEVELS[j] for j in range(16)] + [0.25 * IQ4NL_LEVELS[15 - j] for j in range(16)]
    assert nl[0] == -31.75 and nl[16] == 28.25
    # IQ4_XS: d = 0.5, scales -32, -1, 0, 1, 5, 17, 31, -20 (stored plus 32), index of value 32 s + k: k % 16.
    scales = [-32, -1, 0, 1, 5, 17, 31, -20]
    codes = [k % 16 for _ in range(8) for k in range(32)]
    xs = dequantize("IQ4_XS", pack_iq4_xs(0.5, scales, codes))
    assert xs.tolist() == [0.5 * scales[i // 32] * IQ4NL_LEVELS[codes[i]] for i in range(256)]
    # By the bytes: stored scale 0 of sub-block 0 (low nibble 0 of byte 4, top bits 0): -32; sub-block 5's stored 49
    # (low nibble 1 in byte 6's high nibble, top bits 3 at bits 10-11 of the uint16).
    raw = bytearray(pack_iq4_xs(0.5, scales, codes))
    assert raw[4] & 0x0F == 0 and raw[6] >> 4 == 1 and (struct.unpack_from("<H", raw, 2)[0] >> 10) & 3 == 3
    # MXFP4: e = 128 is a scale of 1 (2**(e - 128): the doubled e2m1 values as they are), e = 130 of 4, e = 0 the
    # float32 subnormal 2**-128, e = 255 2**127 (ggml has no NaN for it; its products past float32 are inf).
    nibbles = bytes(j | ((15 - j) << 4) for j in range(16))
    assert dequantize("MXFP4", bytes([128]) + nibbles).tolist() == \
        [float(MXFP4_LEVELS[j]) for j in range(16)] + [float(MXFP4_LEVELS[15 - j]) for j in range(16)]
    assert dequantize("MXFP4", bytes([130]) + nibbles)[[1, 7, 16]].tolist() == [4.0, 48.0, -48.0]
    tiny = dequantize("MXFP4", bytes([0]) + nibbles)
    assert tiny[1] == np.float32(2.0 ** -128) and tiny[1] > 0 and tiny[7] == np.float32(12 * 2.0 ** -128)
    huge = dequantize("MXFP4", bytes([255]) + nibbles)
    assert huge[1] == np.float32(2.0 ** 127) and np.isposinf(huge[2])  # 2 * 2**127 overflows float32, as in ggml
    assert not dequantize("MXFP4", bytes([200]) + bytes([0x88] * 16)).any()  # index 8 is -0: zeros


@pytest.mark.parametrize("kind", ["TQ1_0", "TQ2_0"])
def test_ternary_values_round_trip_exactly(kind: str) -> None:
    """Values that are -d, 0 or d with d an fp16 number come back exactly through the reference quantizer."""
    from weightdoctor.checkpoint.gguf_quants import dequantize

    source = np.random.default_rng(5).integers(-1, 2, size=256 * 6).astype(np.float32) * np.float32(0.0375)
    source[:256] *= np.float32(4)  # another d in the first block
    expected = source.astype(np.float16).astype(np.float32)  # d as fp16 holds it
    assert np.array_equal(dequantize(kind, QUANTIZERS[kind](source)), expected)


@pytest.mark.parametrize("kind", ["IQ4_NL", "IQ4_XS", "MXFP4"])
def test_the_writers_blocks_decode_near_their_source_on_the_levels(kind: str) -> None:
    from weightdoctor.checkpoint.gguf_quants import dequantize

    source = np.random.default_rng(6).normal(0, 0.02, size=256 * 8).astype(np.float32)
    decoded = dequantize(kind, QUANTIZERS[kind](source))
    block = SIZES[kind][0]
    for start in range(0, len(source), block):
        piece, got = source[start:start + block], decoded[start:start + block]
        amax = float(np.abs(piece).max())
        # The widest gap between neighbouring levels, as a fraction of the largest one: IQ4's 23 / 127 at its
        # ends (the positive end clips at 113), FP4's 4 / 12 between 8 and 12 (MXFP4's scale rounds up to a power
        # of two: twice that at worst); half a gap off, plus fp16's rounding of the scale.
        bound = {"IQ4_NL": amax * 16 / 127, "IQ4_XS": amax * 16 / 127 * 1.1, "MXFP4": amax * 2 * 2 / 12}[kind]
        assert float(np.abs(got - piece).max()) <= bound, (kind, start)
    assert len(np.unique(decoded)) < len(np.unique(source))


@pytest.mark.parametrize("kind", NEW_TYPES)
def test_inspect_stats_reads_the_new_types_end_to_end(tmp_path: Path, kind: str) -> None:
    """A GGUF of every matrix in `kind`: inspect --stats --json gives each its statistics of the values ggml decodes
    (before gguf6: null stats and a warning that the type is not read)."""
    path, values = quantized_llama_gguf(tmp_path / f"tiny.{kind}.gguf", kind, trained=True)
    report = json_report("inspect", "--stats", str(path))
    rows = {row["name"]: row for row in report["tensors"]}
    source = values["blk.1.ffn_down.weight"].reshape(-1)
    raw = QUANTIZERS[kind](source)
    size = SIZES[kind][1]
    decoded = np.array([v for start in range(0, len(raw), size)
                        for v in scalar_dequantize(kind, raw[start:start + size])], dtype=np.float32).astype(np.float64)
    row = rows["blk.1.ffn_down.weight"]
    assert row["dtype"] == kind and row["stats"] is not None, row
    stats = row["stats"]
    assert stats["count"] == decoded.size == 65536
    assert stats["max"] == pytest.approx(float(decoded.max())) and stats["min"] == pytest.approx(float(decoded.min()))
    assert stats["std"] == pytest.approx(decoded.std(), rel=1e-5)
    assert stats["zero_fraction"] == pytest.approx(float(np.mean(decoded == 0)))
    assert not [w for w in report["warnings"] if "quantized ggml types" in w and "not read" in w]
    [said] = [w for w in report["weights"]["warnings"] if "dequantized" in w]
    assert said.startswith(f"the {kind} tensors' statistics are of their values dequantized to float32")
    assert report["gguf"]["values_note"].startswith(f"{kind} tensors are read dequantized to float32")
    checked = json_report("check-dtype", str(path))
    assert checked["quantized_dequantized"] == 10 and checked["quantized_not_read"] == 0


def test_the_unread_types_list_no_longer_names_the_decoded_ones() -> None:
    from weightdoctor.checkpoint.gguf_format import DEQUANTIZED_TYPES, READ_TYPES_WORDS, is_unread_dtype

    assert set(NEW_TYPES) <= DEQUANTIZED_TYPES
    assert not any(is_unread_dtype(kind) for kind in NEW_TYPES)
    assert all(is_unread_dtype(kind) for kind in ("Q8_1", "Q8_K"))  # the IQ1 / IQ2 / IQ3, NVFP4, Q1_0, Q2_0 ones: gguf7
    assert not is_unread_dtype("IQ2_XXS")
    assert "IQ4_NL, IQ4_XS, MXFP4" in READ_TYPES_WORDS and "TQ1_0, TQ2_0" in READ_TYPES_WORDS


# --- IQ2_XXS: a 256-point grid -------------------------------------------------------------------------------------

# ggml-common.h's iq2xxs_grid, entries 0-7 and 252-255 as it lists them (8 bytes a point, value 0 the lowest byte).
GGML_IQ2XXS_ENTRIES = {0: 0x0808080808080808, 1: 0x080808080808082b, 2: 0x0808080808081919, 3: 0x0808080808082b08,
                       4: 0x0808080808082b2b, 5: 0x0808080808190819, 6: 0x0808080808191908, 7: 0x08080808082b0808,
                       100: 0x08192b0808081908, 252: 0x2b2b082b08080808, 253: 0x2b2b190808192b08,
                       254: 0x2b2b2b0819190808, 255: 0x2b2b2b1908081908}


def test_the_iq2_xxs_grid_is_ggmls() -> None:
    from weightdoctor.checkpoint.gguf_quants import IQ2XXS_GRID

    assert IQ2XXS_GRID.shape == (256, 8) and set(np.unique(IQ2XXS_GRID).tolist()) == {8, 25, 43}
    for index, entry in GGML_IQ2XXS_ENTRIES.items():
        assert IQ2XXS_GRID[index].tolist() == list(entry.to_bytes(8, "little")), index
    assert len({row.tobytes() for row in IQ2XXS_GRID}) == 256  # 256 distinct points


def scalar_iq2_xxs(raw: bytes) -> list[np.float32]:
    """One IQ2_XXS block by ggml's dequantize_row_iq2_xxs loop (its grid the one checked above)."""
    from weightdoctor.checkpoint.gguf_quants import IQ2XXS_GRID

    d = _half(raw, 0)
    out: list[np.float32] = []
    for ib32 in range(8):
        indices = raw[2 + 8 * ib32:2 + 8 * ib32 + 4]
        (aux,) = struct.unpack_from("<I", raw, 2 + 8 * ib32 + 4)
        db = F32(F32(d * F32(F32(0.5) + F32(aux >> 28))) * F32(0.25))
        for lane in range(4):
            seven = (aux >> (7 * lane)) & 127
            signs = seven | ((bin(seven).count("1") & 1) << 7)
            for j in range(8):
                value = F32(db * F32(IQ2XXS_GRID[indices[lane]][j]))
                out.append(F32(value * F32(-1.0 if signs & (1 << j) else 1.0)))
    return out


def _iq2_xxs_blocks(count: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    blocks = bytearray(rng.integers(0, 256, size=count * 66, dtype=np.uint8).tobytes())
    for block in range(count):
        struct.pack_into("<e", blocks, block * 66, float(rng.normal(0, 0.01)))
    return bytes(blocks)


def test_iq2_xxs_decodes_as_ggmls_loop_to_the_bit() -> None:
    from weightdoctor.checkpoint.gguf_quants import dequantize

    raw = _iq2_xxs_blocks(16, seed=3)
    got = dequantize("IQ2_XXS", raw)
    want = np.array([v for b in range(16) for v in scalar_iq2_xxs(raw[66 * b:66 * b + 66])], dtype=np.float32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    # By hand: d = 1; group 0 indices 0, 1, 2, 255, sign index 1 for its first 8 (value 0 and, for parity, value 7
    # negative), scale 3: step (1 * 3.5) * 0.25 = 0.875, levels 8, 25, 43 -> 7, 21.875, 37.625.
    word = 1 | (3 << 28)
    block = struct.pack("<e", 1.0) + bytes([0, 1, 2, 255]) + struct.pack("<I", word) + bytes(56)
    values = dequantize("IQ2_XXS", block)
    assert values[:8].tolist() == [-7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, -7.0]
    assert values[8:16].tolist() == [37.625] + [7.0] * 7
    assert values[24:32].tolist() == [7.0, 21.875, 7.0, 7.0, 21.875, 37.625, 37.625, 37.625]
    assert values[32:].tolist() == [8 * 0.125] * 224  # zero bytes: index 0, scale 0 (step 0.125), no sign


def test_inspect_stats_reads_iq2_xxs_end_to_end(tmp_path: Path) -> None:
    from fixtures.gguf_files import write_gguf

    raw = _iq2_xxs_blocks(256, seed=9)  # a 256 x 256 matrix
    path = write_gguf(tmp_path / "m.IQ2_XXS.gguf", llama_metadata(), [Tensor("blk.0.attn_q.weight", [256, 256],
                                                                             "IQ2_XXS", raw)])
    report = json_report("inspect", "--stats", str(path))
    [row] = report["tensors"]
    decoded = np.array([v for b in range(256) for v in scalar_iq2_xxs(raw[66 * b:66 * b + 66])],
                       dtype=np.float32).astype(np.float64)
    assert row["dtype"] == "IQ2_XXS" and row["stats"]["count"] == 65536
    assert row["stats"]["max"] == pytest.approx(float(decoded.max()))
    assert row["stats"]["std"] == pytest.approx(decoded.std(), rel=1e-5)
    assert report["gguf"]["values_note"].startswith("IQ2_XXS tensors are read dequantized to float32")


# --- a folder of a split set ---------------------------------------------------------------------------------------

def _split_set(folder: Path, prefix: str = "tiny", parts: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = [Tensor(f"blk.{i % 2}.w{i}", [32, 4], "F32", np.full(128, i, np.float32).tobytes()) for i in range(6)]
    return split_gguf(folder, prefix, llama_metadata(), tensors, parts)


def test_a_folder_of_one_split_set_is_read_as_that_set(tmp_path: Path) -> None:
    """Before: 'folder holds no weight file ...; it holds tiny-00001-of-00003.gguf, ... read when named' (exit 2)."""
    parts = _split_set(tmp_path / "set")
    (tmp_path / "set" / "README.md").write_text("a model card\n")
    code, report = run_json("inspect", "--stats", str(tmp_path / "set"))
    assert code == 0, report
    assert report["num_tensors"] == 6 and report["format"] == "gguf"
    stats = {row["name"]: row["stats"] for row in report["tensors"]}
    assert stats["blk.1.w5"]["max"] == 5.0 and stats["blk.0.w0"]["max"] == 0.0
    [note] = [w for w in report["warnings"] if "parts of a split GGUF" in w]
    assert note.startswith("tiny-00001-of-00003.gguf ... tiny-00003-of-00003.gguf: the 3 parts of a split GGUF")
    # The parts read are no sibling "not read" (part 2, named in no other warning, was listed so).
    assert not [w for w in report["warnings"] if "not read" in w and parts[1].name in w], report["warnings"]
    # The same set named by its second part reads the same tensors.
    assert json_report("inspect", str(parts[1]))["num_tensors"] == 6


def test_a_folder_of_a_set_missing_a_part_names_it(tmp_path: Path) -> None:
    parts = _split_set(tmp_path / "set")
    parts[0].unlink()
    result = run_cli("inspect", str(tmp_path / "set"))
    assert result.exit_code == 2 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "part 2 of 3 of a split GGUF" in line and "tiny-00001-of-00003.gguf is not beside it" in line, line


@pytest.mark.parametrize("others", ["unrelated", "two-sets"])
def test_a_folder_of_several_ggufs_still_asks_naming_them(tmp_path: Path, others: str) -> None:
    folder = tmp_path / "mixed"
    parts = _split_set(folder)
    if others == "unrelated":
        extra = [tiny_llama_gguf(folder / "tiny.Q4_K_M.gguf")[0]]
    else:
        extra = _split_set(folder, prefix="other", parts=2)
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "folder holds no weight file" in line and "read when named: weightdoctor inspect" in line, line
    for path in parts + extra:
        assert path.name in line, (path.name, line)


def test_plan_devices_plans_a_folder_of_one_split_set(tmp_path: Path) -> None:
    _split_set(tmp_path / "set")
    code, report = run_json("plan-devices", str(tmp_path / "set"), "--gpu", "1GB")
    assert code == 0 and report["verdict"] == "fits-on-gpus", report
    [said] = [w for w in report["warnings"] if "parts of a split GGUF, planned as" in w]
    assert "gguf_file='tiny.gguf'" in said and "llama-gguf-split --merge" in said, said
    # No word of from_pretrained(folder) looking for model.safetensors: a GGUF is loaded with gguf_file=.
    assert not [w for w in report["warnings"] if "looks for model.safetensors" in w], report["warnings"]


def test_plan_devices_on_a_folder_of_several_ggufs_names_its_own_command(tmp_path: Path) -> None:
    """Before: the refusal suggested 'weightdoctor inspect <file> shows its tensors and metadata'."""
    folder = tmp_path / "repo"
    folder.mkdir()
    first, _ = tiny_llama_gguf(folder / "tiny.Q4_K_M.gguf")
    tiny_llama_gguf(folder / "tiny.Q8_0.gguf")
    result = run_cli("plan-devices", str(folder), "--gpu", "1GB")
    assert result.exit_code == 2 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "tiny.Q4_K_M.gguf, tiny.Q8_0.gguf" in line, line
    assert (f"read when named: weightdoctor plan-devices '{first}' (with the options given here) plans it as "
            "from_pretrained(folder, gguf_file='tiny.Q4_K_M.gguf') loads it") in line, line
    assert "weightdoctor inspect" not in line
    # The command named plans it.
    code, report = run_json("plan-devices", str(first), "--gpu", "1GB")
    assert code == 0 and report["verdict"] == "fits-on-gpus"
    # inspect's own refusal keeps naming inspect.
    inspected = run_cli("inspect", str(folder))
    assert inspected.exit_code == 2 and f"weightdoctor inspect '{first}' shows its tensors and metadata" in \
        inspected.stderr


def test_plan_devices_on_a_hub_repo_of_several_ggufs_names_its_own_command(tmp_path: Path) -> None:
    from fixtures.hub_cache import commit_of, write_snapshot
    from tests.helpers import run_subprocess

    data = tiny_llama_gguf(tmp_path / "tiny.gguf")[0].read_bytes()
    cache = tmp_path / "hub"
    snapshot = write_snapshot(cache, "org/tiny-gguf", commit_of("main"),
                              {f"tiny.{kind}.gguf": data for kind in ("Q4_K_M", "Q8_0")})
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "COLUMNS": "400"}
    refused = run_subprocess("plan-devices", "org/tiny-gguf", "--gpu", "1GB", env=env, cwd=tmp_path)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "read when named: weightdoctor plan-devices '" in refused.stderr, refused.stderr
    assert "gguf_file='tiny.Q4_K_M.gguf') loads it" in refused.stderr
    named = refused.stderr.split("weightdoctor plan-devices '", 1)[1].split("'", 1)[0]
    assert Path(named).name == "tiny.Q4_K_M.gguf" and Path(named).is_file(), (named, snapshot)
    planned = run_subprocess("plan-devices", named, "--gpu", "1GB", "--json", env=env, cwd=tmp_path)
    assert planned.returncode == 0 and '"model_class": "LlamaForCausalLM"' in planned.stdout, planned.stderr
