"""Regressions found comparing every command's output at 60cdddc and at review75's merge (55eef5a), each fixed here.

diff-keys under a quantization_config: round 27 (33e28c7) made the names of EXL3, HIGGS, SpQR, FP-Quant, VPTQ and
fbgemm_fp8 (`centroids.weight`, `perm`, `indices`, `tables`, ...) a quantizer's "only in a layer quantized that way",
but exempted every checkpoint whose config.json names a quantizer: in a GPTQ checkpoint, a model's own
`masked_embedding.centroids.weight` (Gemma 4's assistant), a pooler's `perm`, an `indices` or `tables` tensor of a
layer no quantizer touched were "quantization, info: read by the gptq quantizer", where 60cdddc said "unknown" (an
error) or task-head. A quantized layer of those layouts keeps its reason (tests/test_third_party_layouts27.py).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import one_error_line, run_cli, run_json, write_quantized_bert

_OWN = {
    "masked_embedding.centroids.weight": torch.ones(4, 4),
    "bert.pooler.dense.perm": torch.arange(4),
    "bert.embeddings.rope.indices": torch.arange(4, dtype=torch.int32),
    "bert.embeddings.rope.tables": torch.ones(4),
}


def _gptq_bert_with_own_tensors(folder: Path) -> Path:
    write_quantized_bert(folder, ("attention.self.query",), "gptq",
                         {"quant_method": "gptq", "bits": 4, "group_size": 128})
    tensors = load_file(str(folder / "model.safetensors"))
    save_file({**tensors, **_OWN}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_a_gptq_checkpoints_own_tensors_named_as_round_27s_quantizers_are_not_the_gptq_quantizers(
        tmp_path: Path) -> None:
    folder = _gptq_bert_with_own_tensors(tmp_path / "gptq")
    code, data = run_json("diff-keys", str(folder), "--model-class", "BertForMaskedLM")
    assert code == 1, data
    reasons = {entry["name"]: (entry["reason"], entry["severity"], entry["detail"]) for entry in data["unexpected"]}
    for name in _OWN:
        assert reasons[name][0] != "quantization", (name, reasons[name])
        assert "gptq quantizer" not in reasons[name][2], (name, reasons[name])
    # as at 60cdddc: the model's own Linear and the tensors beside a GPTQ layer no quantizer writes are unknown
    assert reasons["masked_embedding.centroids.weight"][:2] == ("unknown", "error")
    assert reasons["bert.embeddings.rope.tables"][:2] == ("unknown", "error")
    assert reasons["bert.embeddings.rope.indices"][:2] == ("unknown", "error")
    assert reasons["bert.pooler.dense.perm"][0] == "task-head"
    # the GPTQ layer's own tensors are still the quantizer's
    assert reasons["bert.encoder.layer.0.attention.self.query.qweight"] == (
        "quantization", "info", "read by the gptq quantizer (quantization_config)")
    assert reasons["bert.encoder.layer.0.attention.self.query.g_idx"][0] == "quantization"


def _cached_repo(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    from fixtures.hub_cache import commit_of, write_snapshot

    return write_snapshot(cache, repo_id, commit_of(repo_id), files)


def torchscript_and_protocol1_repos(cache: Path) -> tuple[Path, Path]:
    """Two cached repos' snapshots in `cache`: org/ts holding a TorchScript archive (model.pt, a Linear(2, 3)) and
    org/legacy a protocol-1 legacy torch.save (pytorch_model.bin)."""
    import io

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 3)), buffer)
    script = _cached_repo(cache, "org/ts", {"model.pt": buffer.getvalue()})
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buffer, pickle_protocol=1, _use_new_zipfile_serialization=False)
    return script, _cached_repo(cache, "org/legacy", {"pytorch_model.bin": buffer.getvalue()})


def test_a_hub_repos_refusal_names_the_cached_file_in_the_python_it_gives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A repo id's refusal says its file by the repo id (`org/ts: model.pt: ...`), but the Python it gives reads the
    file: since the snippets name the file (3ec2161, 8957baf, 840e60e), the repo id replaced the snapshot there too,
    and `torch.jit.load('org/ts/model.pt')` pasted named nothing (60cdddc said `torch.jit.load(path)`)."""
    script, legacy = torchscript_and_protocol1_repos(tmp_path)
    onnx = _cached_repo(tmp_path, "org/onnx", {"model.onnx": b"\x08\x07\x12\x07pytorch" + b"\0" * 32})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    for repo, said in (("org/ts", f"torch.jit.load({str(script / 'model.pt')!r})"),
                       ("org/legacy", f"torch.load({str(legacy / 'pytorch_model.bin')!r}, weights_only=False)"),
                       ("org/onnx", f"onnx.load({str(onnx / 'model.onnx')!r})")):
        result = run_cli("inspect", repo)
        assert result.exit_code == 2, result.output
        line = one_error_line(result)
        assert line.startswith(f"error: {repo}: "), line  # the prose still names the repo
        assert said in line, line
        assert f"'{repo}/" not in line, line  # no path under the repo id, which names nothing here
