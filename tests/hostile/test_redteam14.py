"""Round 14 of the red team: today's detectors of sibling formats and third-party layouts, fed hostile files. A
folder of a hundred thousand sibling-format files, a pickle keying its dicts (or an A1111 hypernetwork's widths and
layer_structure) by an int past Python's 4,300-digit str() limit, a --key of thousands of digits. Each command must
exit 0 with a truthful report or 2 with one line naming the file, never 'unexpected ValueError' nor seconds of stats.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli, run_json, run_subprocess

_HUGE = 10 ** 5000  # past sys.get_int_max_str_digits(): str() raises ValueError


def _one_error_line(result: Any) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    return lines[0]


def test_a_folder_of_thousands_of_sibling_format_files_is_listed_without_a_stat_of_each(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model folder beside 100,000 files of another format (m0.onnx ... m99999.onnx): the listing of the other
    formats stat'ed each file (twice: once as a sibling, once as a weight file under another name) and sorted them
    as Paths, 8 s before the report. The directory's own file types and names serve; a file's stat is taken only
    where its name is one to look at."""
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"w": torch.ones(2)}, str(folder / "model.safetensors"))
    for i in range(3000):
        (folder / f"m{i}.onnx").touch()
    calls = {"n": 0}
    real_stat = Path.stat

    def counting_stat(self: Path, *args: Any, **kwargs: Any) -> os.stat_result:
        if self.parent == folder:
            calls["n"] += 1
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", counting_stat)
    result = run_cli("inspect", folder)
    assert result.exit_code == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert "m0.onnx (ONNX), m1.onnx (ONNX)" in said and "and 2992 more" in said
    assert calls["n"] < 300, calls


def _hypernetwork(widths: list[Any], structure: list[Any]) -> dict[Any, Any]:
    state_dict = {"linear.0.weight": torch.ones(2, 2)}
    return {**{width: [state_dict, state_dict] for width in widths}, "layer_structure": structure, "name": "h"}


@pytest.mark.parametrize(("obj", "expected"), [
    # No state dict: the refusal lists the top-level entries by their keys.
    ({_HUGE: 1}, "no state dict (a mapping of names to tensors) found; top-level entries: <int of 16,610 bits> "
                 "(int: 1); pick one with --key"),
    # An A1111 hypernetwork whose layer_structure holds a huge number: the structure is left unquoted.
    (_hypernetwork([320], [1, _HUGE, 1]), "an AUTOMATIC1111 hypernetwork: no one state dict but, for each attention "
                                          "width (320),"),
    (_hypernetwork([_HUGE], [1, 2, 1]), "an AUTOMATIC1111 hypernetwork (layer_structure [1, 2, 1]): no one state "
                                        "dict but, for each attention width (<int of 16,610 bits>),"),
])
@pytest.mark.parametrize("command", ["inspect", "check-dtype"])
def test_a_pickle_keyed_by_an_int_past_the_digit_limit_is_refused_naming_it(tmp_path: Path, obj: Any, expected: str,
                                                                             command: str) -> None:
    """torch.save keeps a dict keyed by any int, and str() of one past 4,300 digits raises ValueError: every command
    ended in 'unexpected ValueError: Exceeds the limit (4300 digits)'. The key is named by its size."""
    path = tmp_path / "hyper.pt"
    torch.save(obj, path)
    line = _one_error_line(run_cli(command, path))
    assert expected in line and "unexpected" not in line, line


@pytest.mark.parametrize("layout", ["beside", "inside"])
def test_a_state_dict_beside_or_holding_an_int_key_past_the_digit_limit_is_read(tmp_path: Path, layout: str) -> None:
    """The entry under the huge key is said among the other (or non-tensor) entries, and the weights are read."""
    path = tmp_path / "model.pt"
    weights = {"w": torch.ones(2)}
    torch.save({_HUGE: weights, "model": weights} if layout == "beside" else {**weights, _HUGE: torch.ones(2)}, path)
    result = run_cli("inspect", path, "--key", "model") if layout == "beside" else run_cli("inspect", path)
    assert result.exit_code == 0, result.stderr
    said = " ".join(result.stdout.replace("│", " ").split())
    assert "<int of 16,610 bits>" in said, said
    assert "tensors 1" in said


@pytest.mark.parametrize("key", ["1" * 5000, "0." + "1" * 5000])
def test_a_key_of_thousands_of_digits_is_said_to_name_no_entry(tmp_path: Path, key: str) -> None:
    """--key 111...1 (5,000 digits) was turned into an int to look for an A1111 width or a list's index, which int()
    refuses past 4,300 digits: 'unexpected ValueError'. It names no entry, as any other key would."""
    path = tmp_path / "model.pt"
    torch.save([{"w": torch.ones(2)}, {"v": torch.ones(2)}], path)
    line = _one_error_line(run_cli("inspect", path, "--key", key))
    # The key is quoted cut in its middle; the line ends with what it names.
    assert line.endswith("is not an index of a list of 2 items" if key[0] == "1" else "(entries: w)"), line


@pytest.mark.parametrize("given", ["folder", "file", "export subfolder"])
def test_a_fifo_where_an_openvino_xml_would_be_does_not_hang(tmp_path: Path, given: str) -> None:
    """pytorch_model.bin beside a FIFO named pytorch_model.xml (or an openvino/ folder holding one beside its .bin):
    looking for OpenVINO's `<net` opened the .xml, and open() of a FIFO waits for a writer forever. The FIFO is no
    OpenVINO graph; the PyTorch weights are read."""
    folder = tmp_path / "model"
    folder.mkdir()
    torch.save({"w": torch.ones(2)}, folder / "pytorch_model.bin")
    if given == "export subfolder":
        (folder / "openvino").mkdir()
        (folder / "openvino" / "openvino_model.bin").write_bytes(b"\0" * 16)
        os.mkfifo(folder / "openvino" / "openvino_model.xml")
    else:
        os.mkfifo(folder / "pytorch_model.xml")
    result = run_subprocess("inspect", folder / "pytorch_model.bin" if given == "file" else folder, "--json",
                            timeout=20)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["num_tensors"] == 1


def test_a_torch_save_zip_beside_an_openvino_xml_of_its_name_is_read_as_the_torch_file_it_is(tmp_path: Path) -> None:
    """An OpenVINO IR's .bin is raw bytes, named only by the .xml beside it; torch.save's zip opens with a zip's
    local header, which no raw weights do. Beside a `<net` .xml of its stem it was refused as OpenVINO's weights."""
    folder = tmp_path / "model"
    folder.mkdir()
    torch.save({"w": torch.ones(2)}, folder / "pytorch_model.bin")
    (folder / "pytorch_model.xml").write_text('<?xml version="1.0"?>\n<net name="x" version="11"></net>\n')
    for source in (folder, folder / "pytorch_model.bin"):
        code, report = run_json("inspect", source)
        assert code == 0 and report["num_tensors"] == 1, report


@pytest.mark.parametrize("command", ["inspect", "check-dtype"])
def test_a_cached_index_nested_thousands_deep_is_refused_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    command: str) -> None:
    """A cached repo whose model.safetensors.index.json nests an array 200,000 deep beside its weight_map: the look at
    which shards the snapshot holds parsed it with json.loads, whose RecursionError ended every command given the
    repo id in 'unexpected RecursionError'. The reader's own refusal names the index."""
    commit = "d" * 40
    repo = tmp_path / "hub" / "models--org--deep"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (snapshot / "model.safetensors.index.json").write_text(
        '{"weight_map": {"w": "model-00001-of-00001.safetensors"}, "x": ' + "[" * 200_000 + "]" * 200_000 + "}")
    save_file({"w": torch.ones(2)}, str(snapshot / "model-00001-of-00001.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = _one_error_line(run_cli(command, "org/deep"))
    assert "model.safetensors.index.json: not valid JSON (nested too deeply to read)" in line, line


def test_converting_a_folder_beside_thousands_of_sibling_format_files_resolves_only_its_links(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """convert of a model folder beside 100,000 .onnx files took over 10 s choosing what to copy: each file was
    resolved three times (is it the output, a link out of the folder, a converted file?), a stat per part of its
    path each time. An entry that is no link is itself in the resolved folder; only links are resolved. The .onnx
    files are still left out, by name, and nothing is copied over the input."""
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"w": torch.ones(2)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text("{}")
    for i in range(2000):
        (folder / f"m{i}.onnx").touch()
    calls = {"n": 0}
    real_resolve = Path.resolve

    def counting_resolve(self: Path, *args: Any, **kwargs: Any) -> Path:
        if self.parent == folder:
            calls["n"] += 1
        return real_resolve(self, *args, **kwargs)

    monkeypatch.setattr(Path, "resolve", counting_resolve)
    result = run_cli("convert", folder, "-o", tmp_path / "out", "--dtype", "fp16")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]
    assert "m0.onnx (weights in another file or format, not converted)" in " ".join(result.stderr.split())
    assert calls["n"] < 200, calls
