"""Review of review19, fixlist15, thirdparty10, fixlist14 and formats10: answers that were false.

Covers: a torch.save archive kept in a folder named like a Core ML package (`run.mlpackage/best.pt`) refused as
"a file of a Core ML package" by the folder's name alone; convert calling a Wav2Vec2ProcessorWithLM's KenLM
`language_model/5gram.bin` (no pickle) "still PyTorch pickles" and "not cast, convert them on their own"; convert
leaving out an .npz of arrays that are no weights (mel_filters.npz); a scripted `class Module(nn.Module)` with its
forward said to be "named tensors and no code" (rust-bert's OutputArchive), its one class being `__torch__.Module`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli, run_json

# The first bytes of a KenLM binary language model (what pyctcdecode's language_model/5gram.bin holds).
_KENLM_HEAD = b"mmap lm http://kheafield.com/code format version 5\n\x00\x00\x00\x00"


def test_a_pytorch_file_in_a_folder_named_like_a_core_ml_package_is_read(tmp_path: Path) -> None:
    """The folder's name says Core ML; the file is a torch.save zip, which no Core ML package holds."""
    folder = tmp_path / "run.mlpackage"
    folder.mkdir()
    torch.manual_seed(0)
    torch.save({"fc.weight": torch.randn(2, 3)}, folder / "best.pt")
    code, report = run_json("inspect", str(folder / "best.pt"))
    assert code == 0, report
    assert report["format"] == "pytorch-zip" and report["num_tensors"] == 1


def test_convert_does_not_call_a_kenlm_binary_a_pytorch_pickle(tmp_path: Path) -> None:
    """Wav2Vec2ProcessorWithLM keeps language_model/5gram.bin (KenLM) beside the model: copied, it is no pickle and
    no weights to convert on their own; a real pickle in a module folder is still named."""
    model = tmp_path / "w2v"
    (model / "language_model").mkdir(parents=True)
    (model / "2_Dense").mkdir()
    torch.manual_seed(0)
    save_file({"lm_head.weight": torch.randn(4, 4)}, model / "model.safetensors")
    (model / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    (model / "language_model" / "5gram.bin").write_bytes(_KENLM_HEAD + b"\x01" * 200)
    (model / "language_model" / "attrs.json").write_text("{}")
    torch.save({"linear.weight": torch.randn(2, 2)}, model / "2_Dense" / "pytorch_model.bin")
    code, report = run_json("convert", str(model), "-o", str(tmp_path / "out"), "--dtype", "fp16")
    assert code == 0, report
    warnings = "\n".join(report["warnings"])
    assert "language_model/5gram.bin" not in warnings, warnings
    assert "still PyTorch pickles: 2_Dense/pytorch_model.bin" in warnings, warnings
    assert "not cast to float16: 2_Dense/pytorch_model.bin" in warnings, warnings
    # Copied all the same: the processor needs it.
    assert (tmp_path / "out" / "language_model" / "5gram.bin").read_bytes().startswith(_KENLM_HEAD)


def test_convert_copies_an_npz_of_arrays_that_are_no_weights(tmp_path: Path) -> None:
    """mel_filters.npz (mel_80) and ESPnet's feats_stats.npz (count, sum, sum_square) are files the model's code
    loads, not weights in another format: copied. An npz of module-path names (MLX's weights.npz) is left out."""
    import numpy as np

    model = tmp_path / "m"
    model.mkdir()
    torch.manual_seed(0)
    save_file({"proj.weight": torch.randn(4, 4)}, model / "model.safetensors")
    (model / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    np.savez(model / "mel_filters.npz", mel_80=np.ones((80, 201), dtype=np.float32))
    np.savez(model / "feats_stats.npz", count=np.array(3), sum=np.zeros(4), sum_square=np.zeros(4))
    np.savez(model / "weights.npz", **{"proj.weight": np.ones((4, 4), dtype=np.float32)})
    code, report = run_json("convert", str(model), "-o", str(tmp_path / "out"))
    assert code == 0, report
    warnings = "\n".join(report["warnings"])
    assert (tmp_path / "out" / "mel_filters.npz").is_file() and (tmp_path / "out" / "feats_stats.npz").is_file()
    assert "mel_filters.npz (weights" not in warnings and "feats_stats.npz (weights" not in warnings, warnings
    assert not (tmp_path / "out" / "weights.npz").exists()
    assert "weights.npz (weights in another file or format, not converted)" in warnings, warnings
    # The folder's listing of other formats names weights.npz alone, as convert leaves it alone out.
    code, report = run_json("inspect", str(model))
    listing = "\n".join(report["warnings"])
    assert code == 0 and "weights.npz (NumPy / MLX)" in listing, listing
    assert "mel_filters.npz" not in listing and "feats_stats.npz" not in listing, listing


class Module(torch.nn.Module):
    """A script's own model class named Module: scripted from __main__, its class is `__torch__.Module`."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


Module.__module__ = "__main__"  # TorchScript names a class by its module: a script's own is __torch__.<name>


def test_a_scripted_module_named_module_is_said_as_code_not_as_tensors_alone(tmp_path: Path) -> None:
    scripted = torch.jit.script(Module())
    assert scripted._c._type().qualified_name() == "__torch__.Module"  # as a script's own class is named
    torch.jit.save(scripted, str(tmp_path / "model.pt"))
    result = run_cli("inspect", str(tmp_path / "model.pt"))
    said = " ".join(result.stderr.split())
    assert result.exit_code == 2, said
    assert "named tensors and no code" not in said, said
    assert "compiled TorchScript code" in said, said


# Counted one-character repeats costed as `.*` (fixlist15) only where nothing multiplies their counts and a literal
# after each lets sre skip the places it cannot match: each of these took 2 s or more over one 10,000-letter name
# (measured: `.{0,60}.{0,60}.{0,60}x` 2 s, `(?:ab){1,43}\w{0,50}.?.{3,56}$` 4 s, the (?i) one over 6 s) and ran.
@pytest.mark.parametrize("pattern", [r".{0,60}.{0,60}.{0,60}x", r"(?:ab){1,43}\w{0,50}.?.{3,56}$",
                                     r"(?i)\w{3,52}.{1,47}[ab]{1,20}\w_never$", r"[ab]{1,18}.{1,11}[ab]{0,45}$"])
def test_counted_repeats_that_multiply_are_refused(tmp_path: Path, pattern: str) -> None:
    save_file({"model.layers.0.self_attn.q_proj.weight": torch.zeros(2)}, tmp_path / "m.safetensors")
    result = run_cli("inspect", str(tmp_path / "m.safetensors"), "--filter", pattern)
    said = " ".join(result.stderr.split())
    assert result.exit_code == 2, said
    assert f"--filter {pattern!r}: its optional parts, alternatives and counted repeats can be tried" in said, said


@pytest.mark.parametrize("pattern", [r".{0,20}layers.{0,20}attn.{0,20}proj", r"\w{2,9}\.\d{1,3}\.self_attn",
                                     r"^.{0,30}layers\.\d{1,3}\..{0,40}proj"])
def test_counted_repeats_before_a_literal_still_run(tmp_path: Path, pattern: str) -> None:
    import re
    import time

    names = ["model.layers.0.self_attn.q_proj.weight", "lm_head.weight"]
    save_file({name: torch.zeros(2) for name in names}, tmp_path / "m.safetensors")
    code, data = run_json("inspect", str(tmp_path / "m.safetensors"), "--filter", pattern, "--all")
    assert code == 0 and [t["name"] for t in data["tensors"]] == [n for n in names if re.search(pattern, n)], data
    compiled = re.compile(pattern)
    started = time.monotonic()
    for name in ("layers." * 1400, "a" * 10_000, "attn" * 2500 + "!"):
        compiled.search(name)
    assert time.monotonic() - started < 1.0


def test_a_folder_read_does_not_list_a_large_data_folder_beside_the_model(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The sibling listing looked through every subfolder's files for other formats: a data/ of 20,000 files beside
    the model made each read of the folder 0.7 s -> 3 s. Exports (onnx/) hold a few files and are still named."""
    from weightdoctor.checkpoint import foreign

    model = tmp_path / "m"
    (model / "data").mkdir(parents=True)
    (model / "onnx").mkdir()
    torch.manual_seed(0)
    save_file({"fc.weight": torch.randn(2, 2)}, model / "model.safetensors")
    (model / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (model / "onnx" / "model.onnx").write_bytes(b"\x08\x07")
    for index in range(1001):
        (model / "data" / f"{index}.bin").touch()
    listed: list[str] = []
    real = foreign.foreign_files_in
    monkeypatch.setattr(foreign, "foreign_files_in", lambda folder: listed.append(folder.name) or real(folder))
    code, report = run_json("inspect", str(model))
    assert code == 0, report
    assert "data" not in listed, listed
    assert any("onnx/ (ONNX)" in warning for warning in report["warnings"]), report["warnings"]
