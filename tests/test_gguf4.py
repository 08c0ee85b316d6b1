"""A GGUF's quantized tensors read dequantized (weightdoctor.checkpoint.gguf_quants): each block type decoded as ggml's
dequantize_row_* does, checked against a scalar decoder written here from ggml's loops, hand-computed blocks, and the
float source of the block writers in fixtures/gguf_files.py; then what inspect --stats, check-dtype and diff-keys
--values make of the values."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from fixtures.gguf_files import QUANTIZERS, UNREAD_KINDS, quantized_llama_gguf, tiny_llama_gguf
from tests.helpers import json_report, run_cli, run_json, run_subprocess

F32 = np.float32
TYPES = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
SIZES = {"Q8_0": (32, 34), "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24),
         "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210)}


def _half(raw: bytes, at: int) -> np.float32:
    return F32(np.frombuffer(raw[at:at + 2], dtype="<f2")[0])


def _scale_min_k4(j: int, q: bytes) -> tuple[int, int]:
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


def scalar_dequantize(kind: str, raw: bytes) -> list[np.float32]:
    """One block decoded value by value, each product and sum a float32 operation, following ggml-quants.c's loops."""
    out: list[np.float32] = [F32(0)] * SIZES[kind][0]
    if kind == "Q8_0":
        d = _half(raw, 0)
        return [F32(F32(struct.unpack_from("<b", raw, 2 + j)[0]) * d) for j in range(32)]
    if kind in ("Q4_0", "Q4_1"):
        d = _half(raw, 0)
        m = _half(raw, 2) if kind == "Q4_1" else None
        qs = raw[4:20] if m is not None else raw[2:18]
        for j in range(16):
            for index, code in ((j, qs[j] & 0x0F), (j + 16, qs[j] >> 4)):
                out[index] = F32(F32(code) * d) + m if m is not None else F32(F32(code - 8) * d)
        return out
    if kind in ("Q5_0", "Q5_1"):
        d = _half(raw, 0)
        m = _half(raw, 2) if kind == "Q5_1" else None
        at = 4 if m is not None else 2
        (qh,) = struct.unpack_from("<I", raw, at)
        qs = raw[at + 4:at + 20]
        for j in range(16):
            x0 = (qs[j] & 0x0F) | (((qh >> j) << 4) & 0x10)
            x1 = (qs[j] >> 4) | ((qh >> (j + 12)) & 0x10)
            for index, code in ((j, x0), (j + 16, x1)):
                out[index] = F32(F32(code) * d) + m if m is not None else F32(F32(code - 16) * d)
        return out
    if kind in ("Q4_K", "Q5_K"):
        d, dmin, scales = _half(raw, 0), _half(raw, 2), raw[4:16]
        qh = raw[16:48] if kind == "Q5_K" else b""
        ql = raw[48:176] if kind == "Q5_K" else raw[16:144]
        y = 0
        for chunk in range(4):
            for sub, shift in ((2 * chunk, 0), (2 * chunk + 1, 4)):
                sc, mn = _scale_min_k4(sub, scales)
                step, low = F32(d * F32(sc)), F32(dmin * F32(mn))
                for lane in range(32):
                    code = (ql[32 * chunk + lane] >> shift) & 0x0F
                    if qh and qh[lane] & (1 << sub):
                        code += 16
                    out[y] = F32(F32(step * F32(code)) - low)
                    y += 1
        return out
    if kind == "Q2_K":
        scales, qs, d, dmin = raw[0:16], raw[16:80], _half(raw, 80), _half(raw, 82)
        y = 0
        for half in range(2):
            for shift in (0, 2, 4, 6):
                for start in (0, 16):
                    sc = scales[y // 16]
                    step, low = F32(d * F32(sc & 0xF)), F32(dmin * F32(sc >> 4))
                    for lane in range(16):
                        out[y] = F32(F32(step * F32((qs[32 * half + start + lane] >> shift) & 3)) - low)
                        y += 1
        return out
    if kind == "Q3_K":
        hmask, qs, d = raw[0:32], raw[32:96], _half(raw, 108)
        # ggml's unpacking of the 12 scale bytes, on three little-endian uint32 words.
        words = list(struct.unpack("<3I", raw[96:108]))
        low4, top2 = 0x0F0F0F0F, 0x03030303
        tmp = words[2]
        unpacked = [(words[0] & low4) | ((tmp & top2) << 4), (words[1] & low4) | (((tmp >> 2) & top2) << 4),
                    ((words[0] >> 4) & low4) | (((tmp >> 4) & top2) << 4),
                    ((words[1] >> 4) & low4) | (((tmp >> 6) & top2) << 4)]
        sc = struct.unpack("<16b", struct.pack("<4I", *unpacked))
        y, mask = 0, 1
        for half in range(2):
            for shift in (0, 2, 4, 6):
                for start in (0, 16):
                    step = F32(d * F32(sc[y // 16] - 32))
                    for lane in range(16):
                        code = ((qs[32 * half + start + lane] >> shift) & 3) - (0 if hmask[start + lane] & mask else 4)
                        out[y] = F32(step * F32(code))
                        y += 1
                mask <<= 1
        return out
    assert kind == "Q6_K"
    d = _half(raw, 208)
    for half in range(2):
        ql, qh = raw[64 * half:64 * half + 64], raw[128 + 32 * half:128 + 32 * half + 32]
        sc = struct.unpack_from("<8b", raw, 192 + 8 * half)
        for lane in range(32):
            codes = ((ql[lane] & 0xF) | ((qh[lane] & 3) << 4),
                     (ql[lane + 32] & 0xF) | (((qh[lane] >> 2) & 3) << 4),
                     (ql[lane] >> 4) | (((qh[lane] >> 4) & 3) << 4),
                     (ql[lane + 32] >> 4) | (((qh[lane] >> 6) & 3) << 4))
            for quarter, code in enumerate(codes):
                out[128 * half + 32 * quarter + lane] = F32(F32(d * F32(sc[lane // 16 + 2 * quarter])) * F32(code - 32))
    return out


def _random_blocks(kind: str, count: int, seed: int) -> bytes:
    """Random bytes in each field, the fp16 scales (and mins) drawn finite so that every value is a number."""
    rng = np.random.default_rng(seed)
    size = SIZES[kind][1]
    blocks = bytearray(rng.integers(0, 256, size=count * size, dtype=np.uint8).tobytes())
    halves = {"Q6_K": (208,), "Q4_1": (0, 2), "Q5_1": (0, 2), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q2_K": (80, 82),
              "Q3_K": (108,)}.get(kind, (0,))
    for block in range(count):
        for at in halves:
            struct.pack_into("<e", blocks, block * size + at, float(rng.normal(0, 0.01)))
    return bytes(blocks)


@pytest.mark.parametrize("kind", TYPES)
def test_every_type_decodes_as_ggmls_loops_to_the_bit(kind: str) -> None:
    from weightdoctor.checkpoint.gguf_quants import dequantize

    raw = _random_blocks(kind, 12, seed=len(kind) * 7 + TYPES.index(kind))
    size = SIZES[kind][1]
    got = dequantize(kind, raw)
    want = np.array([v for block in range(12) for v in scalar_dequantize(kind, raw[block * size:(block + 1) * size])],
                    dtype=np.float32)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # bit for bit, signed zeros included


def test_hand_computed_blocks() -> None:
    from weightdoctor.checkpoint.gguf_quants import dequantize

    half = struct.Struct("<e").pack
    # Q8_0: d = 0.5, codes 0, 1, 2, -1, 127, -128, then zeros.
    q8 = dequantize("Q8_0", half(0.5) + bytes([0, 1, 2, 255, 127, 128] + [0] * 26))
    assert q8[:6].tolist() == [0.0, 0.5, 1.0, -0.5, 63.5, -64.0] and not q8[6:].any()
    # Q4_0: d = 0.25; byte j holds value j low (code j) and value j + 16 high (code 15 - j): (code - 8) * d.
    q4 = dequantize("Q4_0", half(0.25) + bytes(j | ((15 - j) << 4) for j in range(16)))
    assert q4.tolist() == [(j - 8) * 0.25 for j in range(16)] + [(7 - j) * 0.25 for j in range(16)]
    # Q4_1: d = 0.5, m = -1: code * d + m.
    q41 = dequantize("Q4_1", half(0.5) + half(-1.0) + bytes([0x21] * 16))
    assert q41.tolist() == [-0.5] * 16 + [0.0] * 16
    # Q5_0 / Q5_1: value e's code is e (its fifth bit, bit e of qh, set for e >= 16).
    low_nibbles = bytes(j | (j << 4) for j in range(16))
    fifth = struct.pack("<I", 0xFFFF0000)
    assert dequantize("Q5_0", half(0.125) + fifth + low_nibbles).tolist() == [(e - 16) * 0.125 for e in range(32)]
    assert dequantize("Q5_1", half(2.0) + half(1.0) + fifth + low_nibbles).tolist() == [e * 2.0 + 1 for e in range(32)]
    # Q4_K: d = 1, dmin = 0.5; scales 1..8 but sub-block 5's is 37 (low nibble 5 in byte 9, top bits 2 in byte 1's
    # top two), mins 0..7; every code byte 0x21: sub-block 2g codes 1, sub-block 2g + 1 codes 2.
    scales = [1, 2, 3, 4, 5, 37, 7, 8]
    packed = bytes([1, 2 | (2 << 6), 3, 4, 0, 1, 2, 3, 5 | (4 << 4), 5 | (5 << 4), 7 | (6 << 4), 8 | (7 << 4)])
    q4k = dequantize("Q4_K", half(1.0) + half(0.5) + packed + bytes([0x21] * 128))
    assert q4k.reshape(8, 32)[:, 0].tolist() == [scales[s] * (1 if s % 2 == 0 else 2) - 0.5 * s for s in range(8)]
    assert (q4k.reshape(8, 32) == q4k.reshape(8, 32)[:, :1]).all()
    # Q5_K: the same scales, codes 0x21 and every fifth bit of sub-block 3 set (bit 3 of each qh byte): code 18.
    q5k = dequantize("Q5_K", half(1.0) + half(0.5) + packed + bytes([1 << 3] * 32) + bytes([0x21] * 128))
    assert q5k.reshape(8, 32)[3].tolist() == [4 * 18 - 0.5 * 3] * 32
    assert q5k.reshape(8, 32)[2].tolist() == [3 * 1 - 0.5 * 2] * 32
    # Q6_K: d = 0.5, scales 1..15 and -2; every byte zero (code 0 - 32) but for value 0 (low nibble 15, high bits 0:
    # -17), 32 (high bits 1: -16), 64 (nibble 3, high bits 2: 3) and 96 (high bits 3: 16).
    ql = bytearray(128)
    ql[0] = 0x3F
    qh = bytearray(64)
    qh[0] = 0b11100100
    q6 = dequantize("Q6_K", bytes(ql) + bytes(qh) + struct.pack("<16b", *range(1, 16), -2) + half(0.5))
    assert q6[[0, 32, 64, 96]].tolist() == [0.5 * 1 * -17, 0.5 * 3 * -16, 0.5 * 5 * 3, 0.5 * 7 * 16]
    assert q6[1] == 0.5 * 1 * -32 and q6[255] == 0.5 * -2 * -32
    # Q2_K: d = 1, dmin = 0.25; scale byte s: scale s % 16 low, min 1 high; code byte 0b11100100 everywhere: shift 0
    # gives code 0, shift 2 code 1, 4 code 2, 6 code 3 (values 0-31, 32-63, 64-95, 96-127 of each half).
    q2 = dequantize("Q2_K", bytes([(s % 16) | (1 << 4) for s in range(16)]) + bytes([0b11100100] * 64)
                    + half(1.0) + half(0.25))
    assert q2[[0, 16, 32, 64, 96, 128, 255]].tolist() == [0 * 0 - 0.25, 1 * 0 - 0.25, 2 * 1 - 0.25, 4 * 2 - 0.25,
                                                            6 * 3 - 0.25, 8 * 0 - 0.25, 15 * 3 - 0.25]
    # Q3_K: d = 0.5; every scale stored 35 (= 3 + 32: nibbles 3 in bytes 0-7, top bits 2 in bytes 8-11) but scale 5
    # (byte 5's low nibble 9, byte 9's bits 2-3 1: 25 = -7 + 32); every 2-bit code 1, the high bit set for value 0
    # only (hmask byte 0, bit 0): value 0's code is 1, the others' 1 - 4 = -3.
    low = [3 | (3 << 4)] * 8
    low[5] = 9 | (3 << 4)  # scale 5 (second word, byte 1, low nibble) 9; scale 13 (its high nibble) 3
    tops = [0b10101010] * 4
    tops[1] = 0b10100110  # byte 1's bits 2-3: scale 5's top bits 1
    q3 = dequantize("Q3_K", bytes([1] + [0] * 31) + bytes([0b01010101] * 64) + bytes(low + tops) + half(0.5))
    assert q3[0] == 0.5 * 3 * 1 and q3[1] == 0.5 * 3 * -3
    assert q3[5 * 16] == 0.5 * (25 - 32) * -3 and q3[13 * 16] == 0.5 * 3 * -3 and q3[255] == 0.5 * 3 * -3


def _bound(kind: str, block: np.ndarray) -> float:
    """The largest error of `kind`'s writer (fixtures: ggml's reference quantizers for the 32-value types, a plain
    fit for the K-quants) on one block, from its step: half a step, a whole step where the code is clipped at the
    top (Q4_0, Q5_0: the largest magnitude takes the -8 / -16 end), plus the fp16 rounding of the scale and min."""
    amax, span = float(np.abs(block).max()), float(block.max() - block.min())
    fp16 = 2.0 ** -10
    step = {"Q8_0": amax / 127 * 0.5, "Q4_0": amax / 8, "Q5_0": amax / 16, "Q4_1": span / 15 * 0.5,
            "Q5_1": span / 31 * 0.5}.get(kind)
    if step is not None:
        return step * (1 + 256 * fp16) + amax * fp16
    # K-quants: 6-bit scales of a sub-block step ((max - min) / levels); the codes are clipped to the levels.
    levels = {"Q2_K": 3, "Q3_K": 7, "Q4_K": 15, "Q5_K": 31, "Q6_K": 31}[kind]
    return span / levels * 1.5 + amax * 4 * fp16


@pytest.mark.parametrize("kind", TYPES)
def test_the_writers_blocks_dequantize_to_their_float_source(kind: str) -> None:
    from weightdoctor.checkpoint.gguf_quants import dequantize

    source = np.random.default_rng(4).normal(0, 0.02, size=256 * 16).astype(np.float32)
    source[:7] = [0.0, 0.3, -0.2, 1e-6, -1e-6, 0.0, 0.05]  # outliers and near-zeros in the first block
    decoded = dequantize(kind, QUANTIZERS[kind](source))
    block = SIZES[kind][0]
    for start in range(0, len(source), block):
        piece, got = source[start:start + block], decoded[start:start + block]
        assert float(np.abs(got - piece).max()) <= _bound(kind, piece), (kind, start)
    # The quantization is no copy: values moved, and on a grid of levels (fewer distinct values than the source).
    assert not np.array_equal(decoded, source) and len(np.unique(decoded)) < len(np.unique(source))


def test_load_tensor_and_sampled_values_agree_with_the_writers_source(tmp_path: Path) -> None:
    from weightdoctor.checkpoint import open_checkpoint

    path, values = quantized_llama_gguf(tmp_path / "tiny.Q4_0.gguf", "Q4_0", seed=2)
    with open_checkpoint(str(path)) as checkpoint:
        tensor = checkpoint.load_tensor("blk.1.attn_k.weight")
        assert tuple(tensor.shape) == (128, 256) and str(tensor.dtype) == "torch.float32"
        source = values["blk.1.attn_k.weight"]
        # Row r of the PyTorch shape is row r of the matrix quantized (GGUF's dims innermost first).
        assert float(np.abs(tensor.numpy() - source).max()) < 0.01
        assert np.array_equal(tensor.numpy().reshape(-1), _decoded(source, "Q4_0"))
        import torch

        positions = torch.tensor([[0, 31, 32, 32767], [5000, 17, 17, 20000]])
        sampled = checkpoint.load_values("blk.1.attn_k.weight", positions)  # 1-D, as for every format
        assert torch.equal(sampled, tensor.reshape(-1)[positions].reshape(-1))
        reader = checkpoint.element_reader("blk.1.attn_k.weight")
        assert reader is not None and torch.equal(reader(positions), tensor.reshape(-1)[positions])


def _decoded(source: np.ndarray, kind: str) -> np.ndarray:
    from weightdoctor.checkpoint.gguf_quants import dequantize

    return dequantize(kind, QUANTIZERS[kind](source.reshape(-1)))


def _findings(report: dict) -> list[tuple[str, str, str | None]]:
    return sorted((f["severity"], f["code"], f.get("tensor")) for f in report["findings"])


@pytest.mark.parametrize("kind", ["Q4_0", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q6_K"])
def test_a_quantized_copy_reads_as_healthy_as_its_float_source(tmp_path: Path, kind: str) -> None:
    """No finding of quantization's own: the copy of an untouched init reads as initialization (no untrained-tensor
    or mixed state from its grid), the copy of trained weights as trained, each with the float file's findings."""
    for trained in (False, True):
        floats, _ = quantized_llama_gguf(tmp_path / f"f32-{trained}.gguf", "F32", trained=trained)
        quantized, values = quantized_llama_gguf(tmp_path / f"{kind}-{trained}.gguf", kind, trained=trained)
        base = json_report("inspect", "--stats", str(floats))
        report = json_report("inspect", "--stats", str(quantized))
        assert report["weights"]["state"] == base["weights"]["state"] == ("trained" if trained else "initialization")
        assert _findings(report) == _findings(base), (kind, trained)
        assert not [f for f in report["findings"] if f["code"] in ("untrained-tensor", "dead-rows", "dead-columns",
                                                                   "duplicate-rows", "duplicate-columns", "all-zero")]
        rows = {row["name"]: row for row in report["tensors"]}
        decoded = _decoded(values["blk.0.attn_q.weight"], kind).astype(np.float64)
        stats = rows["blk.0.attn_q.weight"]["stats"]
        assert rows["blk.0.attn_q.weight"]["dtype"] == kind
        assert stats["count"] == decoded.size and stats["max"] == pytest.approx(float(decoded.max()))
        assert stats["std"] == pytest.approx(decoded.std(), rel=1e-5)
        assert stats["zero_fraction"] == pytest.approx(float(np.mean(decoded == 0)))
        [said] = [w for w in report["weights"]["warnings"] if "dequantized" in w]
        assert said.startswith(f"the {kind} tensors' statistics are of their values dequantized to float32")


def test_a_q4_0_init_is_not_called_trained_for_its_grid(tmp_path: Path) -> None:
    """Before: 4 of the 10 Q4_0 matrices of a normal(0, 0.02) init failed the distribution test on their grid of 16
    levels, were called trained, and the other 6 and the embedding then 'untrained-tensor' (state mixed)."""
    path, _ = quantized_llama_gguf(tmp_path / "init.Q4_0.gguf", "Q4_0")
    report = json_report("inspect", "--stats", str(path))
    labels = {row["name"]: row["init"]["label"] for row in report["tensors"] if row["dtype"] == "Q4_0"}
    assert len(labels) == 10 and "trained" not in labels.values(), labels
    assert report["weights"]["state"] == "initialization"
    assert [f["code"] for f in report["findings"]] == ["checkpoint-at-init"]


def test_sampled_stats_read_only_the_blocks_they_need(tmp_path: Path) -> None:
    path, values = quantized_llama_gguf(tmp_path / "tiny.Q4_K.gguf", "Q4_K", trained=True)
    report = json_report("inspect", "--stats", "--sample", "1000", str(path))
    rows = {row["name"]: row for row in report["tensors"]}
    decoded = set(_decoded(values["blk.0.ffn_down.weight"], "Q4_K").tolist())
    stats = rows["blk.0.ffn_down.weight"]["stats"]
    assert stats["sampled"] and stats["count"] == 1000
    assert stats["max"] in decoded and stats["min"] in decoded
    assert report["weights"]["state"] == "trained"


def test_check_dtype_casts_the_dequantized_values(tmp_path: Path) -> None:
    path, values = quantized_llama_gguf(tmp_path / "tiny.Q8_0.gguf", "Q8_0", trained=True)
    code, report = run_json("check-dtype", str(path))
    assert code == 0
    assert report["tensors_checked"] == 14 and report["quantized_dequantized"] == 10
    assert report["quantized_not_read"] == 0 and not report["skipped"]
    assert report["recommendation"]["lines"][0].startswith(
        "10 quantized GGUF tensors checked as their values dequantized to float32, as ggml decodes them")
    # Q8_0's values are an int8 code times an fp16 scale: 19 significant bits at most, more than bf16's 8.
    rows = {row["name"]: row for row in report["targets"]["bf16"]["tensors"]}
    decoded = _decoded(values["blk.0.attn_q.weight"], "Q8_0")
    import torch

    as_bf16 = torch.from_numpy(decoded).to(torch.bfloat16).float().numpy()
    assert rows["blk.0.attn_q.weight"]["changed"] == int(np.sum(as_bf16 != decoded)) > 0
    assert rows["blk.0.attn_q.weight"]["dtype"] == "Q8_0"
    sampled = json_report("check-dtype", "--sample", "500", str(path))
    assert sampled["quantized_dequantized"] == 10 and sampled["tensors_checked"] == 14
    human = run_subprocess("check-dtype", str(path), env={"COLUMNS": "400"})
    assert "checked        14 floating tensors (10 of them quantized GGUF tensors, read dequantized to float32 as " \
           "ggml decodes them)" in human.stdout, human.stdout


def test_unread_types_are_still_named_as_not_read(tmp_path: Path) -> None:
    path, _ = tiny_llama_gguf(tmp_path / "tiny.gguf", kinds=UNREAD_KINDS)
    report = json_report("check-dtype", str(path))
    assert report["quantized_not_read"] == 10 and report["quantized_dequantized"] == 0
    inspected = json_report("inspect", str(path))
    assert inspected["gguf"]["values_note"].startswith("Q8_1, Q8_K tensors are described from the header")
    mixed, _ = tiny_llama_gguf(tmp_path / "mixed.gguf", kinds=("Q4_K", "Q8_1", "Q8_0"))
    note = json_report("inspect", str(mixed))["gguf"]["values_note"]
    assert note.startswith("Q4_K, Q8_0 tensors are read dequantized to float32") and \
        "; Q8_1 tensors are described from the header, their values not decoded" in note


def test_diff_keys_values_compares_a_quantized_copy_with_its_source(tmp_path: Path) -> None:
    floats, _ = quantized_llama_gguf(tmp_path / "f32.gguf", "F32", trained=True)
    quantized, _ = quantized_llama_gguf(tmp_path / "q8.gguf", "Q8_0", trained=True)
    report = json_report("diff-keys", str(floats), str(quantized), "--values")
    compared = {row["name"]: row for row in report["values"]}
    assert len(compared) == 14 and not [w for w in report["warnings"] if "not compared" in w]
    assert compared["token_embd.weight"]["identical"]
    row = compared["blk.0.attn_q.weight"]
    assert not row["identical"] and 0 < row["rel_change"] < 0.01, row  # Q8_0's error: well under 1%
    [note] = [n for n in report["notes"] if "dequantized" in n]
    assert note.startswith("10 tensors of quantized GGUF (ggml) types compared dequantized to float32")


def test_a_file_changed_or_cut_short_after_its_header_is_refused(tmp_path: Path) -> None:
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.errors import CorruptCheckpoint

    path, _ = quantized_llama_gguf(tmp_path / "tiny.Q4_K.gguf", "Q4_K")
    with open_checkpoint(str(path)) as checkpoint:
        os.truncate(path, os.path.getsize(path) - 5000)
        with pytest.raises(CorruptCheckpoint, match="changed since its header was read"):
            checkpoint.load_tensor("blk.1.ffn_down.weight")
        import torch

        with pytest.raises(CorruptCheckpoint, match="changed since its header was read"):
            checkpoint.load_values("blk.1.ffn_down.weight", torch.tensor([0, 65535]))
    # Opened again, the header's own check refuses the file in one line, before any value is read.
    result = run_cli("inspect", "--stats", str(path))
    assert result.exit_code == 2 and "past the end of the file's data section" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_quantized_tensor_of_no_dimension_is_refused_as_ggml_refuses_it(tmp_path: Path) -> None:
    """Before: a 0-dimension Q4_0 tensor (one value, no bytes counted) was accepted, and --stats read it as memory
    never written (a max of 1.36e-19 once)."""
    from fixtures.gguf_files import Tensor, llama_metadata, write_gguf

    path = write_gguf(tmp_path / "scalar.gguf", llama_metadata(), [Tensor("w", [], "Q4_0", b""),
                                                                   Tensor("v", [32, 1], "Q8_0")])
    result = run_cli("inspect", "--stats", str(path))
    assert result.exit_code == 2 and result.stdout == ""
    assert "tensor 'w' has 1 values a row, not a multiple of Q4_0's block of 32" in result.stderr
