"""gguf8: GGUF loose ends. The memory figures count Q8_1 / Q8_K tensors, which nothing dequantizes, as stored; a
`--sample` read of a quantized tensor asks the memory guard first and reads only the sampled columns of a long row;
a ggml type id a fork of llama.cpp gives another meaning (bitnet.cpp's I2_S at 36 and TL2 at 39, llama-dx's Q2_0 of
128-value blocks at 42, the TurboQuant forks' TQ3_1S at 44, ...) is refused naming what it is, never decoded as
llama.cpp's type; and the decoders are checked bit for bit against gguf-py's dequantize (where installed) and, for
Q1_0 / Q2_0, which gguf-py does not decode, against llama.cpp's reference loops written out here."""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fixtures.gguf_files import STRING, UNREAD_KINDS, Tensor, tiny_llama_gguf, write_gguf
from tests.helpers import json_report, refused_line, run_cli

ROOT = Path(__file__).resolve().parents[1]
_META = {"general.architecture": (STRING, "llama")}


def _refused(path: Path, *words: str) -> str:
    """The one line `inspect` prints for a refused file (exit 2, nothing on stdout); each of `words` in it."""
    return refused_line(path, "inspect", str(path), words=words)


# --- 1. memory: Q8_1 / Q8_K counted as stored -----------------------------------------------------------------------

def _mixed_gguf(tmp_path: Path) -> Path:
    """A Llama-shaped GGUF of Q8_1 (not decoded), Q4_K and Q8_0 (decoded) matrices beside F16 / F32 tensors."""
    return tiny_llama_gguf(tmp_path / "mixed.gguf", kinds=("Q8_1", "Q4_K", "Q8_0"))[0]


def _expected_memory(path: Path, bytes_per_value: float) -> int:
    from weightdoctor.checkpoint.gguf_format import read_header

    header = read_header(path, path.name)
    stored = sum(t.nbytes for t in header.tensors if t.dtype == "Q8_1")
    floats = sum(t.num_params for t in header.tensors if t.dtype != "Q8_1")
    assert stored and floats
    return int(stored + floats * bytes_per_value)


def test_inspect_memory_counts_q8_1_as_stored(tmp_path: Path) -> None:
    path = _mixed_gguf(tmp_path)
    report = json_report("inspect", str(path))
    # Before: every parameter at 4 bytes (3,124,224), the Q8_1 ones too, which no loader dequantizes.
    assert report["memory"]["fp32"] == _expected_memory(path, 4) == 2_223_104
    assert report["memory"]["fp16"] == _expected_memory(path, 2)
    text = run_cli("inspect", str(path))
    assert text.exit_code == 0
    assert "Memory for the weights, dequantized (Q8_1 as stored)" in text.stdout


def test_check_dtype_memory_counts_unread_types_as_stored(tmp_path: Path) -> None:
    path = tiny_llama_gguf(tmp_path / "unread.gguf", kinds=UNREAD_KINDS)[0]
    from weightdoctor.checkpoint.gguf_format import read_header

    header = read_header(path, path.name)
    unread = [t for t in header.tensors if t.dtype in ("Q8_1", "Q8_K")]
    plain = [t for t in header.tensors if t.dtype not in ("Q8_1", "Q8_K")]
    report = json_report("check-dtype", str(path))
    stored = sum(t.nbytes for t in unread)
    assert report["memory_bytes"]["fp32"] == stored + sum(t.num_params for t in plain) * 4
    assert report["memory_bytes"]["bf16"] == stored + sum(t.num_params for t in plain) * 2
    text = run_cli("check-dtype", str(path))
    flat = " ".join(text.stdout.replace("│", " ").split())
    # Only Q8_1 / Q8_K quantized tensors: none counted dequantized, and the label says which are kept as stored.
    assert "Q8_1 and Q8_K ones as stored (nothing dequantizes them)" in flat, flat
    assert "counted dequantized" not in flat


# --- 2. --sample reads: the memory guard, and only the sampled columns of a long row ----------------------------------

def test_values_at_asks_the_memory_guard_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from weightdoctor.checkpoint import gguf_quants, safetensors_format
    from weightdoctor.checkpoint.gguf_format import read_header
    from weightdoctor.errors import UnsupportedEnvironment

    path = write_gguf(tmp_path / "q8.gguf", _META, [Tensor("w", [4096, 64], "Q8_0")])
    header = read_header(path, path.name)
    [info] = header.tensors
    positions = torch.arange(200_000) % info.num_params
    # Before: no guard, the positions' arrays were made whatever the memory left.
    monkeypatch.setattr(safetensors_format, "available_memory", lambda: 1 << 20)
    with pytest.raises(UnsupportedEnvironment) as refused:
        gguf_quants.values_at(path, header.data_start, info, "Q8_0", positions, header.identity)
    message = str(refused.value)
    assert "200,000 values of tensor 'w' (Q8_0, dequantized to float32)" in message
    assert "nothing was read; a smaller --sample reads fewer" in message and "\n" not in message
    monkeypatch.setattr(safetensors_format, "available_memory", lambda: 1 << 40)
    values = gguf_quants.values_at(path, header.data_start, info, "Q8_0", positions[:10], header.identity)
    assert values.tolist() == [0.0] * 10


def _limit_address_space() -> None:
    limit = 4 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_sample_of_a_huge_row_reads_only_its_sampled_columns(tmp_path: Path) -> None:
    """A Q8_0 tensor of one row of 2**33 values (a sparse file: 9.13 GB that take no disk): --sample read the whole
    row to keep 4,096 of its columns, 69 GB of int64 positions refused by torch's allocator under a 4 GiB limit
    ("out of memory: torch could not allocate 68.72 GB"); now only the sampled columns are read."""
    row = 1 << 33
    path = write_gguf(tmp_path / "huge.gguf", _META, [Tensor("blk.0.ffn_down.weight", [row, 1], "Q8_0", data=b"")])
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size + row // 32 * 34)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "weightdoctor", "inspect", str(path), "--sample", "1000",
                             "--json"], capture_output=True, text=True, env=env, timeout=600,
                            preexec_fn=_limit_address_space)
    assert "out of memory" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 1), result.stderr

    [tensor] = json.loads(result.stdout)["tensors"]
    assert tensor["name"] == "blk.0.ffn_down.weight" and tensor["stats"]["sampled"] is True
    assert tensor["stats"]["zero_fraction"] == 1.0  # a sparse file's zeros, read


# --- 3. type ids forks give another meaning ---------------------------------------------------------------------------

@pytest.mark.parametrize(("type_id", "words"), [
    (36, ("ggml type 36 (IQ4_NL_4_4 in ggml, which removed it from GGUF files",
          "I2_S (BitNet b1.58's 2-bit ternary weights) in Microsoft's bitnet.cpp and ik_llama.cpp")),
    (44, ("ggml type 44 (no llama.cpp type", "TQ3_1S (a weight type) in the TurboQuant forks")),
    (139, ("IQ4_K in ik_llama.cpp",)),
    (212, ("Q4_K_R4 in ik_llama.cpp (rows repacked for its kernels)",)),
    (142, ("PQ2_0 in PrismML's fork", "IQ2_TN in ik_llama.cpp (deprecated)")),
])
def test_a_fork_only_type_id_is_refused_saying_what_it_is(tmp_path: Path, type_id: int, words: tuple[str]) -> None:
    path = write_gguf(tmp_path / f"fork{type_id}.gguf", _META,
                      [Tensor("blk.0.attn_q.weight", [256, 4], "F32", type_id=type_id)])
    line = _refused(path, *words, "which llama.cpp and transformers cannot load", "known: BF16")
    assert "a type this reader does not know" not in line


def test_an_id_no_fork_is_known_to_use_is_still_unknown(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "unknown.gguf", _META, [Tensor("w", [32, 2], "F32", type_id=1000)])
    _refused(path, "ggml type 1000 (a type this reader does not know")


def _llama_dx_q2_0(values: int) -> bytes:
    """llama-dx's Q2_0 at id 42: 128-value blocks of an fp16 scale and 32 bytes of 2-bit codes (34 bytes)."""
    return (struct.pack("<e", 0.5) + bytes(range(32))) * (values // 128)


def test_llama_dx_q2_0_at_id_42_is_refused_not_decoded_as_llama_cpp_q2_0(tmp_path: Path) -> None:
    """Two llama-dx Q2_0 tensors laid end to end at its 34 bytes a 128 values: read as llama.cpp's Q2_0 (18 bytes a
    64), the first ran into the second and the file was refused as overlapping tensors, saying nothing of why."""
    rows = 4096
    first = _llama_dx_q2_0(rows * 4)
    tensors = [Tensor("blk.0.attn_q.weight", [rows, 4], "Q2_0", data=first, type_id=42),
               Tensor("blk.0.attn_k.weight", [rows, 4], "Q2_0", data=_llama_dx_q2_0(rows * 4), type_id=42)]
    path = write_gguf(tmp_path / "llamadx.gguf", _META, tensors)
    _refused(path, "tensor 'blk.0.attn_q.weight' has ggml type 42, Q2_0 in llama.cpp",
             "do not end where the next tensor, 'blk.0.attn_k.weight', starts",
             "Q2_0 of 128-value blocks in 34 bytes (2.125 bits a weight) in the llama-dx fork",
             "refused rather than decoded as Q2_0")


def test_bitnet_tl2_at_id_39_is_refused_not_decoded_as_mxfp4(tmp_path: Path) -> None:
    """bitnet.cpp's TL2 (39, ggml's MXFP4) holds some 1.67 bits a weight: its last tensor read as MXFP4 (4.25 bits)
    ran past the file's end, refused as truncated without a word of the fork."""
    values = 256 * 64
    tensors = [Tensor("blk.0.attn_q.weight", [256, 64], "MXFP4", data=bytes(values * 5 // 24), type_id=39)]
    path = write_gguf(tmp_path / "tl2.gguf", _META, tensors)
    _refused(path, "truncated (or not MXFP4: type 39 is also TL2 (BitNet b1.58's lookup-table weights) in "
                   "Microsoft's bitnet.cpp")


def test_llama_cpp_q2_0_and_mxfp4_laid_end_to_end_are_read(tmp_path: Path) -> None:
    """The check of a fork's layout leaves llama.cpp's own files of ids 39 and 42 read, decoded."""
    q2_0 = (struct.pack("<e", 0.5) + bytes([0b11100100] * 16)) * 64  # codes 0, 1, 2, 3: -0.5, 0, 0.5, 1
    mxfp4 = (bytes([127]) + bytes([0x21] * 16)) * 32  # scale 2**0; codes 1 and 2: 0.5 and 1.0
    tensors = [Tensor("blk.0.attn_q.weight", [64, 64], "Q2_0", data=q2_0, type_id=42),
               Tensor("blk.0.attn_k.weight", [32, 32], "MXFP4", data=mxfp4, type_id=39),
               Tensor("blk.0.attn_v.weight", [64, 64], "Q2_0", data=q2_0, type_id=42)]
    path = write_gguf(tmp_path / "mainline.gguf", _META, tensors)
    from weightdoctor.checkpoint.reader import open_checkpoint

    checkpoint = open_checkpoint(str(path))
    q = checkpoint.load_tensor("blk.0.attn_q.weight").reshape(-1)[:4].tolist()
    k = checkpoint.load_tensor("blk.0.attn_k.weight").reshape(-1)[:2].tolist()
    assert q == [-0.5, 0.0, 0.5, 1.0] and k == [0.5, 0.5]


# --- 4. the decoders against gguf-py's and llama.cpp's reference loops ----------------------------------------------

def _random_blocks(kind: str, count: int, seed: int) -> np.ndarray:
    from weightdoctor.checkpoint.gguf_format import GGML_TYPES_BY_NAME

    size = GGML_TYPES_BY_NAME[kind].type_size
    return np.random.default_rng(seed).integers(0, 256, size=count * size, dtype=np.uint8)


def _same_bits(ours: np.ndarray, theirs: np.ndarray) -> bool:
    """Equal to the bit, a NaN equal to any NaN (its payload is the fp16 scale's, widened by each its own way)."""
    ours, theirs = ours.astype(np.float32), theirs.astype(np.float32)
    return bool(np.all((ours.view(np.uint32) == theirs.view(np.uint32)) | (np.isnan(ours) & np.isnan(theirs))))


def test_every_decoder_matches_gguf_py_bit_for_bit() -> None:
    gguf = pytest.importorskip("gguf")
    from gguf import quants

    from weightdoctor.checkpoint.gguf_format import DEQUANTIZED_TYPES
    from weightdoctor.checkpoint.gguf_quants import dequantize

    checked = []
    for kind in sorted(DEQUANTIZED_TYPES):
        qtype = getattr(gguf.GGMLQuantizationType, kind, None)
        if qtype is None:
            continue
        raw = _random_blocks(kind, 256, seed=len(kind))
        try:
            with np.errstate(all="ignore"):
                theirs = quants.dequantize(raw.reshape(1, -1), qtype).reshape(-1)
        except NotImplementedError:
            continue
        assert _same_bits(dequantize(kind, raw), theirs), kind
        checked.append(kind)
    assert {"Q4_K", "IQ2_XXS", "TQ1_0", "MXFP4"} <= set(checked)


def _q1_0_reference(raw: np.ndarray) -> np.ndarray:
    """ggml-quants.c's dequantize_row_q1_0, loop for loop: y[j] = bit j (byte j / 8, bit j % 8) ? d : -d."""
    out = []
    for block in raw.reshape(-1, 18):
        d = np.frombuffer(block[:2].tobytes(), "<f2")[0].astype(np.float32)
        for j in range(128):
            out.append(d if (block[2 + j // 8] >> (j % 8)) & 1 else -d)
    return np.array(out, dtype=np.float32)


def _q2_0_reference(raw: np.ndarray) -> np.ndarray:
    """ggml-quants.c's dequantize_row_q2_0 (QK2_0 64): q = (qs[j / 4] >> 2 (j % 4)) & 3; y[j] = (float)(q - 1) * d."""
    out = []
    for block in raw.reshape(-1, 18):
        d = np.frombuffer(block[:2].tobytes(), "<f2")[0].astype(np.float32)
        for j in range(64):
            q = (int(block[2 + j // 4]) >> (2 * (j % 4))) & 3
            with np.errstate(all="ignore"):
                out.append(np.float32(q - 1) * d)
    return np.array(out, dtype=np.float32)


@pytest.mark.parametrize(("kind", "reference"), [("Q1_0", _q1_0_reference), ("Q2_0", _q2_0_reference)])
def test_q1_0_and_q2_0_match_llama_cpp_reference_loops(kind: str, reference: object) -> None:
    from weightdoctor.checkpoint.gguf_quants import dequantize

    raw = _random_blocks(kind, 300, seed=8)
    # fp16 scales of every kind among random bytes: normal, subnormal, zero, inf and NaN.
    assert _same_bits(dequantize(kind, raw), reference(raw))  # type: ignore[operator]


def test_plan_devices_refuses_a_gguf_whose_q8_1_tensors_no_load_dequantizes(tmp_path: Path) -> None:
    """plan-devices planned a Q8_1 GGUF as "every tensor dequantized into that model", a load transformers fails."""
    path = _mixed_gguf(tmp_path)
    result = run_cli("plan-devices", str(path), "--gpu", "1GB")
    assert result.exit_code == 2 and result.stdout == "", result.stdout
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: a GGUF file (llama.cpp): plan-devices plans from_pretrained's load")
    assert "6 tensors of it are Q8_1, which that load cannot dequantize" in line
    # Not sent to from_pretrained(gguf_file=) for a reading: it fails on them too.
    assert "AutoModelForCausalLM.from_pretrained" not in line
    decoded = tiny_llama_gguf(tmp_path / "decoded.gguf")[0]  # Q4_K / Q6_K / Q8_0: planned as before
    assert run_cli("plan-devices", str(decoded), "--gpu", "1GB").exit_code == 0
