"""review86: hostile inputs against what landed with quant4, gguf4 and plan87.

1. A Q4_0 block whose fp16 scale is inf or NaN decodes to inf / NaN values, as ggml's dequantize_row_q4_0 computes
   them (0 * inf is NaN): inspect --stats counts them in its nan-inf finding. numpy also printed a RuntimeWarning
   ("invalid value encountered in multiply") with gguf_quants.py's source line on stderr, for every command that
   read the tensor (inspect --stats, --sample, check-dtype, diff-keys --values).
2. hqq 0.2's qmodel.pt (its meta data beside W_q, no "meta" dict) was not recognised as hqq's own file.
3. diff-keys --values of a quantized GGUF against its float file said a LoRA had been merged (changed_projections).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fixtures.gguf_files import Tensor, llama_metadata, quantize_q4_0, write_gguf

_ROOT = Path(__file__).resolve().parent.parent
_BLOCK = 18  # Q4_0: an fp16 scale, then 16 bytes of 32 4-bit codes


def _hostile_q4_0(folder: Path) -> tuple[Path, Path, int, int]:
    """A GGUF whose Q4_0 matrix has block 0's scale inf and block 5's NaN, and the same file with those blocks
    whole. Returns both paths and the NaN and Inf values ggml decodes from the hostile one."""
    values = np.random.default_rng(0).normal(0, 0.02, size=64 * 64).astype(np.float32)
    good = quantize_q4_0(values)
    bad = bytearray(good)
    bad[0:2] = struct.pack("<e", float("inf"))
    bad[5 * _BLOCK:5 * _BLOCK + 2] = struct.pack("<e", float("nan"))
    # Block 0: code 8 is (8 - 8) * inf = NaN, any other code +-inf. Block 5: NaN throughout.
    codes = [byte & 0x0F for byte in bad[2:18]] + [byte >> 4 for byte in bad[2:18]]
    nan, inf = codes.count(8) + 32, 32 - codes.count(8)
    paths = []
    for label, data in (("hostile", bytes(bad)), ("whole", good)):
        path = folder / f"{label}.gguf"
        write_gguf(path, llama_metadata(tokens=10), [Tensor("blk.0.attn_q.weight", [64, 64], "Q4_0", data)])
        paths.append(path)
    return paths[0], paths[1], nan, inf


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own: Python warnings reach its stderr as a user sees them."""
    env = {**os.environ, "PYTHONPATH": str(_ROOT)}
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run([sys.executable, "-m", "weightdoctor", *args], capture_output=True, text=True, env=env,
                          cwd=_ROOT, timeout=300)


@pytest.mark.parametrize("command", ["stats", "sample", "check-dtype", "diff-values"])
def test_inf_and_nan_block_scales_decode_as_ggml_does_without_a_numpy_warning(tmp_path: Path, command: str) -> None:
    """Before: each command printed numpy's 'RuntimeWarning: invalid value encountered in multiply' with the
    decoder's source line on stderr. Now stderr holds the tool's own lines only, and the values are ggml's."""
    hostile, whole, nan, inf = _hostile_q4_0(tmp_path)
    args = {"stats": ("inspect", str(hostile), "--stats", "--json"),
            "sample": ("inspect", str(hostile), "--stats", "--sample", "100", "--json"),
            "check-dtype": ("check-dtype", str(hostile), "--json"),
            "diff-values": ("diff-keys", str(hostile), str(whole), "--values", "--json")}[command]
    result = _cli(*args)
    assert result.returncode in (0, 1), result.stderr
    assert "RuntimeWarning" not in result.stderr and "gguf_quants.py" not in result.stderr, result.stderr
    data = json.loads(result.stdout)
    if command == "stats":
        stats = next(t for t in data["tensors"] if t["name"] == "blk.0.attn_q.weight")["stats"]
        assert (stats["nan"], stats["inf"]) == (nan, inf), stats
        assert any(f["code"] == "nan-inf" and f["message"] == f"{nan} NaN and {inf} Inf among 4,096 values"
                   for f in data["findings"]), data["findings"]


def test_hqq_0_2_qmodel_pt_with_its_meta_data_beside_w_q_is_read_as_one_state_dict(tmp_path: Path) -> None:
    """hqq 0.2's save_quantized writes {module name: module.state_dict()} with its serialize_weights turning
    encoded_state_dict off, and HQQLinear.state_dict lays the meta data out beside W_q ({"W_q", "nbits", "shape",
    "scale", "zero", ..., "bias", "offload_meta"}), no "meta" dict. Before: only hqq 0.1's {"W_q", "meta", "bias"} was
    recognised, and this file was read as a training checkpoint whose state dict is `model.embed_tokens` (2,048
    values), every quantized layer an other entry, `quantized` null."""
    import torch
    from torch import nn

    from fixtures.diff_pairs import tiny_llama
    from tests.helpers import run_json
    from tests.test_quant4 import _hqq_qmodel, _inspected

    model = tiny_llama(seed=6, layers=2)
    model.save_pretrained(tmp_path / "float")

    def hqq_0_2_layer(packed: torch.Tensor, meta: dict) -> dict:
        # hqq 0.2's meta data, raw (serialize_weights sets encoded_state_dict = False before state_dict()).
        meta.update({"quant_scale": False, "quant_zero": False, "unpack_view_dtype": torch.uint8,
                     "view_as_float": False, "compute_dtype": torch.float16})
        return {"W_q": packed, **meta, "bias": None, "offload_meta": False}

    weights = _hqq_qmodel(model, hqq_0_2_layer)
    path = tmp_path / "qmodel.pt"
    data, names = _inspected(weights, path)
    assert {"model.embed_tokens.weight", "model.norm.weight", "model.layers.1.self_attn.q_proj.W_q",
            "model.layers.1.self_attn.q_proj.scale", "model.layers.1.self_attn.q_proj.zero"} <= names, sorted(names)
    stored = sum(t.numel() for state in weights.values() for t in state.values() if isinstance(t, torch.Tensor))
    assert data["num_params"] == stored, (data["num_params"], stored)
    layers = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert data["quantized"] == {"method": "hqq-like (no quantization_config)", "bits": None,
                                 "packed_tensors": layers, "side_tensors": 2 * layers, "parameters": None}, \
        data["quantized"]
    code, report = run_json("diff-keys", str(path), str(tmp_path / "float"))
    assert report["unexpected"] and {row["reason"] for row in report["unexpected"]} == {"quantization"}, \
        report["unexpected"]


def _block_bytes_changed(source: Path, target: Path, names: tuple[str, ...]) -> None:
    """`source` copied to `target` with one code byte of the first block of each of `names` changed (a Q4_K block's
    codes start at byte 16): their values differ, every other tensor's bytes are the same."""
    from weightdoctor.checkpoint import gguf_format

    raw = bytearray(source.read_bytes())
    header = gguf_format.read_header(source, source.name)
    for info in header.tensors:
        if info.name in names:
            assert info.data_offsets is not None
            at = header.data_start + info.data_offsets[0] + 16
            raw[at] ^= 0x11
    target.write_bytes(bytes(raw))


def test_a_quantized_gguf_against_its_float_file_is_not_read_as_a_merged_lora(tmp_path: Path) -> None:
    """A Q4_K copy of a model against its F32 file: llama.cpp quantizes every matrix and leaves the norms F32 (and
    here the F16 embedding), so every matrix differs by its quantization's error and nothing else does. Before:
    changed_projections named every projection and its note said "only the adapted projections changed ... as
    merging a LoRA on those modules leaves its base ..., not a full fine-tune". Now it is null: the change holds the
    quantization's error. Two Q4_K files of which one has attn_q changed still name attn_q: identical blocks
    decode identically."""
    from fixtures.gguf_files import quantized_llama_gguf
    from tests.helpers import run_json

    quantized, _ = quantized_llama_gguf(tmp_path / "model.Q4_K.gguf", "Q4_K")
    plain, _ = quantized_llama_gguf(tmp_path / "model.F32.gguf", "F32")
    code, report = run_json("diff-keys", str(quantized), str(plain), "--values")
    assert code in (0, 1) and len([row for row in report["values"] if not row["identical"]]) == 10, report["values"]
    assert report["changed_projections"] is None, report["changed_projections"]
    assert not any("adapted projections" in note for note in report["notes"]), report["notes"]
    assert any("quantization error counts as a change" in note for note in report["notes"]), report["notes"]

    merged = tmp_path / "merged.Q4_K.gguf"
    _block_bytes_changed(quantized, merged, ("blk.0.attn_q.weight", "blk.1.attn_q.weight"))
    code, report = run_json("diff-keys", str(merged), str(quantized), "--values")
    assert report["changed_projections"] is not None, report["notes"]
    assert report["changed_projections"]["modules"] == ["attn_q"], report["changed_projections"]
    assert report["changed_projections"]["tensors"] == 2, report["changed_projections"]
