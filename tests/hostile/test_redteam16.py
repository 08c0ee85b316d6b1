"""Round 16 of the red team: the sibling-format sniffers (OpenVINO, Core ML, Orbax, TensorRT, TFLite, ...) and the
newest layouts (Megatron-LM's virtual-pipeline model0 / model1 saves) fed files that lie. Each command must exit 0
with a truthful report of bounded size, or 2 with one line naming the file; never hang on a FIFO.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, run_json


def _megatron_chunks(path: Path, count: int) -> None:
    one = torch.zeros(1)
    torch.save({f"model{i}": {"language_model": {"encoder": {"layers.0.w": one}}} for i in range(count)}, path)


def test_a_megatron_save_of_thousands_of_chunks_gets_a_bounded_warning(tmp_path: Path) -> None:
    """A virtual-pipeline save of 5,000 chunks (model0 ... model4999): the warning named every chunk twice, once in
    the list of chunks and once with its layer count among those not read, 150 KB of one warning (4 MB at 100,000
    chunks) in --json. It names the first few and counts the rest."""
    path = tmp_path / "model_optim_rng.pt"
    _megatron_chunks(path, 5000)
    code, report = run_json("inspect", path)
    assert code == 0 and report["nested_key"] == "model0.language_model"
    said = [w for w in report["warnings"] if "virtual-pipeline" in w]
    assert len(said) == 1 and len(said[0]) < 2000, len(said[0]) if said else report["warnings"]
    assert "5000 model chunks (model0, model1, ..., model4999)" in said[0]
    assert "model6 (1 layer, 1 tensor), and 4,993 more" in said[0] and "model7 (" not in said[0]
    assert "--key model1.language_model reads another" in said[0]


def test_a_megatron_save_of_a_few_chunks_still_names_each(tmp_path: Path) -> None:
    """The bound leaves a real save (a few chunks per pipeline stage) as it was said: every chunk by name."""
    path = tmp_path / "model_optim_rng.pt"
    _megatron_chunks(path, 3)
    code, report = run_json("inspect", path)
    said = [w for w in report["warnings"] if "virtual-pipeline" in w]
    assert code == 0 and len(said) == 1
    assert "3 model chunks (model0, model1, model2)" in said[0]
    assert "not model1 (1 layer, 1 tensor), model2 (1 layer, 1 tensor);" in said[0]


def _legacy_torch_file(path: Path) -> None:
    torch.save({"a.weight": torch.ones(2, 2)}, path, _use_new_zipfile_serialization=False)


def test_a_legacy_torch_file_beside_an_openvino_xml_is_not_said_unread(tmp_path: Path) -> None:
    """pytorch_model.bin written by torch.save's legacy format (a pickle, no zip) beside a pytorch_model.xml whose
    root is `<net `: the folder read the .bin, and its warning said that same file was "not read ... (OpenVINO)".
    Round 14 kept torch's zip from being taken for OpenVINO's raw bytes; its legacy pickle is torch's too."""
    folder = tmp_path / "model"
    folder.mkdir()
    _legacy_torch_file(folder / "pytorch_model.bin")
    (folder / "pytorch_model.xml").write_text('<?xml version="1.0"?>\n<net name="model" version="11"></net>\n')
    code, report = run_json("inspect", folder)
    assert code == 0 and [t["name"] for t in report["tensors"]] == ["a.weight"]
    assert not [w for w in report["warnings"] if "OpenVINO" in w], report["warnings"]


def test_raw_openvino_weights_beside_their_xml_are_still_refused(tmp_path: Path) -> None:
    """The OpenVINO rule still holds for raw bytes that open like a pickle (0x80 0x02) but are no torch file: a
    folder of the export alone names its .bin as OpenVINO's weights."""
    folder = tmp_path / "ov"
    folder.mkdir()
    (folder / "model.xml").write_text('<net name="model" version="11"></net>')
    (folder / "model.bin").write_bytes(b"\x80\x02" + bytes(range(256)) * 4)
    result = run_cli("inspect", folder)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert "it holds model.bin, which weightdoctor does not read" in lines[0]
    assert "model.bin is an OpenVINO IR model's weights (model.xml beside it holds the graph" in lines[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_named_as_openvino_weights_beside_their_xml_does_not_hang(tmp_path: Path) -> None:
    """openvino/openvino_model.bin a FIFO beside a real openvino_model.xml: the legacy-pickle check reads the .bin's
    first bytes, which a blocking open() of a FIFO waits on forever; the model beside is read."""
    folder = tmp_path / "model"
    (folder / "openvino").mkdir(parents=True)
    _legacy_torch_file(folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "openvino" / "openvino_model.xml").write_text('<net name="model" version="11"></net>')
    os.mkfifo(folder / "openvino" / "openvino_model.bin")
    code, report = run_json("inspect", folder)
    assert code == 0 and [t["name"] for t in report["tensors"]] == ["a.weight"]


def test_a_model_beside_thousands_of_folders_looks_into_a_bounded_number(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A model folder beside 40,000 subfolders (a data set's classes): the look for exports listed every one of them
    three ways and resolved every read file once per subfolder, over 10 s before any report. The exports' usual
    folders (onnx/) are still looked into and named, however many folders sort before them."""
    from safetensors.torch import save_file

    from weightdoctor.checkpoint import foreign

    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"a.weight": torch.zeros(2, 2)}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    for i in range(5000):
        (folder / f"class_{i:05d}").mkdir()
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"\x08\x07")
    looked: list[Path] = []
    real = foreign.foreign_files_in

    def counting(path: Path) -> list[str]:
        looked.append(path)
        return real(path)

    monkeypatch.setattr(foreign, "foreign_files_in", counting)
    code, report = run_json("inspect", folder)
    assert code == 0 and [t["name"] for t in report["tensors"]] == ["a.weight"]
    assert len([p for p in looked if p != folder]) <= 1001, len(looked)
    said = [w for w in report["warnings"] if w.startswith("not read")]
    assert said and "onnx/ (ONNX)" in said[0], report["warnings"]


def test_a_torch_zips_central_directory_is_parsed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save writes both end records, classic and zip64, naming one central directory: it was parsed twice
    (with one local-header lookup per entry), so a 34 MB lit_model.pth of 300,000 empty members took 10-14 s to be
    refused as having no data.pkl, 7 s once parsed once. Each directory is parsed once; the zip64 counts are still
    checked (round 13)."""
    from weightdoctor.security import archive

    path = tmp_path / "lit_model.pth"
    torch.save({"a.weight": torch.ones(2, 2)}, path)
    parsed: list[int] = []
    real = archive._raw_central_directory

    def counting(handle: object, file_size: int, offset: int, *args: object, **kwargs: object) -> object:
        parsed.append(offset)
        return real(handle, file_size, offset, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(archive, "_raw_central_directory", counting)
    code, report = run_json("inspect", path)
    assert code == 0 and [t["name"] for t in report["tensors"]] == ["a.weight"]
    assert parsed and len(parsed) == len(set(parsed)), parsed


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
@pytest.mark.parametrize("command", [["inspect"], ["convert", "-o", "{out}"]])
def test_a_fifo_as_the_openvino_weights_of_a_folder_without_pytorch_weights_does_not_hang(
        tmp_path: Path, command: list[str]) -> None:
    """A config.json beside openvino/openvino_model.xml and a FIFO named openvino_model.bin, no PyTorch weights: the
    folder's refusal said what its first foreign file is, opening the FIFO with a blocking open(), and every command
    waited forever. The folder is refused, naming no FIFO as OpenVINO's weights."""
    from tests.helpers import run_subprocess

    folder = tmp_path / "model"
    (folder / "openvino").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "openvino" / "openvino_model.xml").write_text('<net name="model" version="11"></net>')
    os.mkfifo(folder / "openvino" / "openvino_model.bin")
    args = [arg.format(out=tmp_path / "out") for arg in command]
    result = run_subprocess(args[0], folder, *args[1:], timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "model: folder holds no weight file" in lines[0] and "openvino_model.bin" not in lines[0]


def test_a_sibling_npz_of_thousands_of_members_is_not_listed_member_by_member(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model folder beside feats_stats.npz holding 20,000 members: whether its arrays are weights was decided by
    listing every member (300,000 took 3-7 s on each read of the folder, in every command). Statistics hold a few
    arrays: an archive whose central directory says it holds thousands is taken as weights, unlisted, and named
    among the folder's other formats; a small one of statistics is still left out."""
    import zipfile

    import numpy as np
    from safetensors.torch import save_file

    from weightdoctor.security import archive

    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"a.weight": torch.zeros(2, 2)}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with zipfile.ZipFile(folder / "big_stats.npz", "w") as big:
        for i in range(20_000):
            big.writestr(f"count{i}.npy", b"")
    np.savez(folder / "feats_stats.npz", count=np.zeros(1), sum=np.zeros(3))
    listed: list[str] = []
    real = archive.zipfile_names

    def counting(path: Path) -> list[str]:
        listed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(archive, "zipfile_names", counting)
    code, report = run_json("inspect", folder)
    assert code == 0 and [t["name"] for t in report["tensors"]] == ["a.weight"]
    assert "big_stats.npz" not in listed and "feats_stats.npz" in listed, listed
    said = [w for w in report["warnings"] if w.startswith("not read")]
    assert said and "big_stats.npz (NumPy / MLX)" in said[0] and "feats_stats" not in said[0], report["warnings"]


@pytest.mark.parametrize("address", [
    "hf://org/m/x?a=" + "&a=" * 40 + "/y.safetensors",
    "hf://org/m@main/x?a=" + "&a=" * 40 + "?",
])
def test_an_address_of_many_query_parameters_before_a_slash_is_answered_at_once(
        address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The query-string rule's pattern (a value, then `&name=value` groups, the value free to hold `&`) backtracked
    exponentially on a path whose `?a=&a=...` is followed by more path: 26 pairs took over 20 s, 40 would take hours.
    The address is answered as any uncached one; the query hint itself is unchanged."""
    from weightdoctor.checkpoint import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub._QUERY_AT_END.search("?a=" + "&a=" * 40 + "/") is None  # before: hours
    result = run_cli("inspect", address)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert "&a=&a=" in lines[0] and "Traceback" not in result.stderr
    result = run_cli("inspect", "hf://org/m/model.safetensors?a=1&b=2")
    assert "'?a=1&b=2' is a web address's query string, not part of the file name: give " \
           "hf://org/m/model.safetensors" in result.stderr
