"""Review 75: what today's merges (thirdparty27, advice1, redteam32, compat214) got wrong on real inputs.

- diff-keys named a model's own tensors after the quantizers read since round 27 (VPTQ's `centroids`, EXL3's `suh`,
  SpQR's `row_offsets`, fbgemm_fp8's `input_scale_ub`, ...) without a quantized layer beside them: Gemma 4's
  assistant keeps a Linear named `centroids` (`masked_embedding.centroids.weight`), and a B that has it where A does
  not was told "written by VPTQ beside its quantized weight" (a warn) where the weight starts at random.
- A nanotron checkpoint's converter runs from a clone of nanotron (`-m examples.llama.convert_nanotron_to_hf`), but
  it named the checkpoint as typed (`--checkpoint_path='my run/10'`): pasted in the clone, that names nothing.
"""

from __future__ import annotations

import json
import os
import shlex
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import one_error_line, record_calls, run_cli, run_json
from tests.test_third_party_layouts27 import _nanotron_run


def _missing_reasons(tmp_path: Path, extra: dict[str, torch.Tensor]) -> dict[str, tuple[str, str, str]]:
    torch.manual_seed(0)
    base = {"model.embed_tokens.weight": torch.randn(8, 4), "lm_head.weight": torch.randn(8, 4)}
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(base, str(a))
    save_file({**base, **extra}, str(b))
    code, data = run_json("diff-keys", str(a), str(b))
    assert code in (0, 1), data
    return {entry["name"]: (entry["reason"], entry["severity"], entry["detail"]) for entry in data["missing"]}


def test_gemma4_assistants_centroids_weight_is_no_vptq_codebook(tmp_path: Path) -> None:
    """Gemma4AssistantMaskedEmbedder's `centroids` Linear, missing from A: from_pretrained leaves it at random (an
    error with no known cause, as before round 27), not VPTQ's codebook of a quantized layer (a warn)."""
    reasons = _missing_reasons(tmp_path, {"masked_embedding.centroids.weight": torch.randn(2, 4)})
    reason, severity, detail = reasons["masked_embedding.centroids.weight"]
    assert (reason, severity) == ("unknown", "error"), detail
    assert "VPTQ" not in detail


def test_a_models_own_tensors_named_as_round_27s_quantizers_keep_their_reasons(tmp_path: Path) -> None:
    """Each without the quantized layer its quantizer writes it beside: a classifier's `perm` and `weight_bias`, a
    head's `suh`, a lone `trellis`, `row_offsets`, `in_perm`, `input_scale_ub`, Hadamard matrix. Each was told which
    quantizer wrote it ("written by SpQR beside its quantized weight", ...) or "likely the model's own" as a warn."""
    reasons = _missing_reasons(tmp_path, {
        "cls.perm": torch.arange(4), "cls.weight_bias": torch.ones(2), "head.suh": torch.ones(4),
        "grid.trellis": torch.zeros(2, 2, 16, dtype=torch.int16), "enc.row_offsets": torch.zeros(3, dtype=torch.int64),
        "blk.in_perm": torch.arange(4), "x.input_scale_ub": torch.ones(1),
        "attn.forward_hadamard_matrix": torch.eye(4), "vq.res_indices": torch.zeros(3, dtype=torch.int64)})
    assert {name: reason[:2] for name, reason in reasons.items()} == {
        "cls.perm": ("task-head", "info"), "cls.weight_bias": ("task-head", "info"), "head.suh": ("task-head", "info"),
        "grid.trellis": ("unknown", "error"), "enc.row_offsets": ("unknown", "error"),
        "blk.in_perm": ("unknown", "error"), "x.input_scale_ub": ("unknown", "error"),
        "attn.forward_hadamard_matrix": ("unknown", "error"), "vq.res_indices": ("unknown", "error")}


def test_vptq_codebook_beside_its_indices_is_still_named(tmp_path: Path) -> None:
    """The same names in a layer quantized that way are still the quantizer's."""
    reasons = _missing_reasons(tmp_path, {
        "q.indices": torch.zeros(1, 4, 2, dtype=torch.int16), "q.centroids.weight": torch.randn(16, 8),
        "q.perm": torch.arange(4), "e.trellis": torch.zeros(1, 1, 64, dtype=torch.int16), "e.suh": torch.ones(16)})
    assert reasons["q.centroids.weight"][2].startswith("written by VPTQ beside its quantized weight")
    assert reasons["q.perm"][2].startswith("written by VPTQ beside its quantized weight")
    assert reasons["e.suh"][2].startswith("written by ExLlamaV3 (EXL3) beside its quantized weight")
    assert reasons["q.indices"][2].startswith("written by VPTQ as the quantized weight")


def test_nanotrons_converter_names_the_checkpoint_from_inside_a_clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    """The run folder as typed (relative, with a space): the --checkpoint_path given, read by a shell in the clone
    of nanotron the command is run from, is the step folder that holds checkpoint_metadata.json."""
    step = _nanotron_run(tmp_path / "my run")
    clone = tmp_path / "nanotron"
    (clone / "examples" / "llama").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    result = run_cli("inspect", "my run")
    assert result.exit_code == 2
    line = " ".join(result.stderr.split())
    assert "-m examples.llama.convert_nanotron_to_hf --checkpoint_path=" in line, line
    words = shlex.split(line.split("-m examples.llama.convert_nanotron_to_hf ", 1)[1].split(" --save_path")[0])
    (named,) = words
    path = named.removeprefix("--checkpoint_path=")
    monkeypatch.chdir(clone)
    assert (Path(path) / "checkpoint_metadata.json").is_file(), path
    assert os.path.samefile(path, step)


def _write_header(path: Path, text: str, nbytes: int) -> Path:
    raw = text.encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * nbytes)
    return path


def test_a_header_with_colons_in_its_names_is_proved_without_walking_every_entry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Names such as `dense.kernel:0` and metadata with a URL failed the colon count outside strings, and the count
    of every string's colons walked each entry in Python: 0.10 s of CPU on 50,000 tensors (the key-name counts it
    replaced: 0.013 s), each time a command reads the header. Only the metadata is walked now; a tensor listed twice
    is still refused, a colon in its name or not."""
    from weightdoctor.checkpoint import safetensors_format

    walked = record_calls(monkeypatch, safetensors_format, "_keys_and_string_colons")
    entries = {f"model.layers.{i}.dense.kernel:0": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
               for i in range(2000)}
    header = {"__metadata__": {"format": "pt", "source": "https://example.com/a:b"}, **entries}
    path = _write_header(tmp_path / "colons.safetensors", json.dumps(header, separators=(",", ":")), 8000)
    code, data = run_json("inspect", path)
    assert code == 0 and data["num_params"] == 2000, data
    assert len(walked) < 10, len(walked)
    for text in ('{"w:0":{},"w:0":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
                 '{"__metadata__":{"url":"http://x"},"w:0":{},'
                 '"w:0":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
                 '{"w\\u003a0":{},"w:0":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'):
        twice = _write_header(tmp_path / "twice.safetensors", text, 8)
        assert one_error_line(run_cli("inspect", twice)) == f"error: {twice}: header lists tensor 'w:0' twice"


def test_a_3_bit_higgs_checkpoint_counts_its_weights(tmp_path: Path) -> None:
    """HiggsLinear takes num_bits 2, 3 or 4: its int16 `weight` is [out x bits / 16, in]. 16 / 3 weights an int16 is
    no whole number, and a 3-bit layer was counted an int16 a weight (its 3 / 16), all 14 layers 'not packed'."""
    from tests.test_third_party_layouts27 import LLAMA_PARAMETERS, _higgs

    folder = _higgs(tmp_path / "higgs3", bits=3)
    code, data = run_json("inspect", folder)
    assert code == 0
    assert data["quantized"] == {"method": "higgs", "bits": 3, "packed_tensors": 14, "side_tensors": 42,
                                 "parameters": LLAMA_PARAMETERS}


def test_a_weights_file_named_pytorch_optimized_is_no_colossalai_optimizer_state(tmp_path: Path) -> None:
    """ColossalAI's optimizer files start `pytorch_optim-`, `pytorch_optim_group.` or `pytorch_optim.`; every name
    that starts `pytorch_optim` was training state, and a folder holding a model's `pytorch_optimized_model.bin` was
    refused ("it holds training state only"), where it was read before."""
    folder = tmp_path / "model"
    folder.mkdir()
    torch.save({"w": torch.ones(2, 2)}, folder / "pytorch_optimized_model.bin")
    code, data = run_json("inspect", folder)
    assert code == 0, data
    assert [entry["path"] for entry in data["files"]] == ["pytorch_optimized_model.bin"]
    assert data["num_params"] == 4
    from weightdoctor.checkpoint.reader import is_training_state

    assert all(map(is_training_state, ("pytorch_optim-00001.bin", "pytorch_optim_group.bin", "pytorch_optim.bin")))
