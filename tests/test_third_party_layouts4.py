"""A fourth round of checkpoints as other tools write them: CTranslate2's model.bin (faster-whisper), ..."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli


def _ct2_string(text: str) -> bytes:
    return struct.pack("H", len(text) + 1) + text.encode() + b"\0"


def _faster_whisper(folder: Path, spec: str = "WhisperSpec") -> None:
    """A faster-whisper repo as ct2-transformers-converter writes it: model.bin in CTranslate2's own format (binary
    version, spec name, revision, then name / rank / dims / type id / byte count / bytes per variable, then
    aliases), its config.json (alignment heads, suppress ids: no model_type), vocabulary.json, tokenizer.json."""
    folder.mkdir()
    variables = [("encoder/conv1/weight", torch.ones(8, 4, 3, dtype=torch.float16), 4),
                 ("decoder/embeddings/weight", torch.ones(16, 8, dtype=torch.float16), 4),
                 ("decoder/layer_0/self_attention/linear_0/weight", torch.ones(24, 8, dtype=torch.int8), 1)]
    blob = struct.pack("I", 6) + _ct2_string(spec) + struct.pack("I", 3) + struct.pack("I", len(variables))
    for name, value, type_id in variables:
        blob += _ct2_string(name) + struct.pack("B", value.dim()) + b"".join(struct.pack("I", d) for d in value.shape)
        data = value.numpy().tobytes()
        blob += struct.pack("B", type_id) + struct.pack("I", len(data)) + data
    blob += struct.pack("I", 1) + _ct2_string("decoder/projection/weight") + _ct2_string("decoder/embeddings/weight")
    (folder / "model.bin").write_bytes(blob)
    (folder / "config.json").write_text(json.dumps({
        "alignment_heads": [[2, 3]], "lang_ids": [50259], "suppress_ids": [1, 2], "suppress_ids_begin": [220],
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "decoder_start_token": "<|startoftranscript|>", "add_source_bos": False, "add_source_eos": False,
        "layer_norm_epsilon": None}, indent=2, sort_keys=True))
    (folder / "vocabulary.json").write_text(json.dumps(["<|endoftext|>", "a"]))
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))


@pytest.mark.parametrize("spec", ["WhisperSpec", "TransformerDecoderModelSpec"])
def test_a_ctranslate2_model_bin_is_named_not_called_a_broken_pickle(tmp_path: Path, spec: str) -> None:
    """faster-whisper's model.bin (and any ct2-*-converter output) is CTranslate2's binary format. Every command said
    "not a safetensors file nor a PyTorch pickle (zip or legacy)", which reads as a damaged download."""
    folder = tmp_path / "faster-whisper-large-v3"
    _faster_whisper(folder, spec)
    for args in (["inspect", str(folder)], ["inspect", str(folder / "model.bin")], ["convert", str(folder), "-o",
                 str(tmp_path / "out")], ["plan-devices", str(folder), "--gpu", "24GB"], ["check-dtype", str(folder)]):
        result = run_cli(*args)
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert f"a CTranslate2 model ({spec};" in message and "nor a PyTorch pickle" not in message, message
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
