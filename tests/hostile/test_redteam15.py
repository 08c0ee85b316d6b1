"""Round 15 of the red team: the newest detectors (Flax, GGUF names, ONNX initializers, student / teacher copies, the
safetensors `format` metadata) fed hostile files. A `format` of megabytes, or of control characters, is the file's
own text: each command must exit 0 with a truthful report of bounded size, or 2 with one line naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.helpers import run_cli, run_json

_MEGABYTE_FORMAT = "x" * 1_000_000


def _model_folder(tmp_path: Path, framework: str) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"a.weight": torch.zeros(2, 2)}, str(folder / "model.safetensors"), metadata={"format": framework})
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    return folder


def test_a_megabyte_format_is_not_echoed_whole_in_inspects_warning(tmp_path: Path) -> None:
    """A safetensors `format` of a megabyte: inspect's "not PyTorch's pt" warning quoted it whole, a 1 MB warning
    line in --json (the human line is cut by the console). The warning quotes its beginning and end."""
    code, report = run_json("inspect", _model_folder(tmp_path, _MEGABYTE_FORMAT))
    assert code == 0
    said = [w for w in report["warnings"] if "the safetensors metadata says format" in w]
    assert len(said) == 1 and len(said[0]) < 2000, len(said[0]) if said else report["warnings"]
    assert "characters left out" in said[0] and "not PyTorch's \"pt\"" in said[0]


def test_a_megabyte_format_is_not_echoed_whole_when_converted_to_bin(tmp_path: Path) -> None:
    """convert --to bin of a file whose `format` is a megabyte: "the source's format '...' is not written" held it
    whole, in the plan's warnings and the report's, 2 MB of --json for a 16-byte tensor."""
    out = tmp_path / "out"
    code, report = run_json("convert", _model_folder(tmp_path, _MEGABYTE_FORMAT), "-o", out, "--to", "bin")
    assert code == 0
    said = [w for w in report["warnings"] if "the source's format" in w]
    assert len(said) == 1 and len(said[0]) < 2000 and "characters left out" in said[0], said
    assert len(json.dumps(report)) < 20_000


def test_a_module_of_a_hundred_thousand_unnumbered_children_prints_a_bounded_tree(tmp_path: Path) -> None:
    """A DINO self-distillation checkpoint whose student and teacher each hold 20,000 modules named b0 ... b19999:
    names that are not numbered fold into no `×N` line, so the tree printed every one (100,000 took 13 s of
    rendering). The tree shows the first ones and a count of the rest; --json keeps them all."""
    one = torch.zeros(1)
    n = 20_000
    path = tmp_path / "dino.pt"
    torch.save({"student": {f"b{i}.w": one for i in range(n)}, "teacher": {f"module.b{i}.w": one for i in range(n)},
                "dino_loss": {"center": one}}, path)
    result = run_cli("inspect", path)
    assert result.exit_code == 0, result.stderr
    assert f"… {n - 200:,} more modules here" in result.stdout
    assert len(result.stdout.splitlines()) < 1000
    assert "teacher is read" in result.stderr  # the DINO teacher rule still holds
    code, report = run_json("inspect", path)
    assert code == 0 and len(report["module_tree"][0]["children"]) == n


def test_an_orbax_root_beside_a_folder_named_by_a_unicode_digit_names_its_step(tmp_path: Path) -> None:
    """An Orbax root of step folders (1000/_CHECKPOINT_METADATA) beside a folder named '²': str.isdigit() took '²'
    for a step and int() refused it, so inspect ended in "unexpected ValueError" instead of the Orbax refusal."""
    root = tmp_path / "run"
    (root / "1000").mkdir(parents=True)
    (root / "1000" / "_CHECKPOINT_METADATA").touch()
    (root / "²").mkdir()
    (root / "20").mkdir()
    result = run_cli("inspect", root)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert "Orbax (JAX) checkpoint (1000/_CHECKPOINT_METADATA)" in lines[0] and "ValueError" not in lines[0]


def test_a_megatron_iteration_file_holding_a_unicode_digit_is_no_crash(tmp_path: Path) -> None:
    """latest_checkpointed_iteration.txt holding '²' (str.isdigit() is true of it, int() refuses it): inspect ended
    in "unexpected ValueError"; the folder is now said to hold no weight file, in one line naming it."""
    folder = tmp_path / "megatron"
    folder.mkdir()
    (folder / "latest_checkpointed_iteration.txt").write_text("²", encoding="utf-8")
    result = run_cli("inspect", folder)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert str(folder) in lines[0] and "no weight file" in lines[0] and "ValueError" not in lines[0]


def test_metadata_without_a_format_names_its_megabyte_key_by_its_ends(tmp_path: Path) -> None:
    """Metadata with no `format` whose one key is a megabyte long: the "holds no format" warning named the key
    whole. It names its beginning and end."""
    folder = tmp_path / "model"
    folder.mkdir()
    key = "k" * 1_000_000
    save_file({"a.weight": torch.zeros(2, 2)}, str(folder / "model.safetensors"), metadata={key: "v"})
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    code, report = run_json("inspect", folder)
    assert code == 0
    said = [w for w in report["warnings"] if "holds no format" in w]
    assert len(said) == 1 and len(said[0]) < 2000 and "characters left out" in said[0], said


def test_a_student_that_is_the_teachers_own_tensor_is_not_said_stored_twice(tmp_path: Path) -> None:
    """student.backbone.* and teacher.backbone.* as one tensor under two names (torch.save keeps one storage): the
    file stores the backbone once and the total counts it once, yet inspect said "the backbone is stored twice ...
    counted in the total above". Separate copies are still said to be stored twice."""
    one = torch.zeros(4)
    tied = tmp_path / "tied.pt"
    torch.save({"model": {"teacher.backbone.w": one, "student.backbone.w": one}}, tied)
    result = run_cli("inspect", tied)
    assert result.exit_code == 0, result.stderr
    assert "stored twice" not in result.stderr
    copied = tmp_path / "copied.pt"
    torch.save({"model": {"teacher.backbone.w": one, "student.backbone.w": one.clone()}}, copied)
    result = run_cli("inspect", copied)
    assert result.exit_code == 0, result.stderr
    assert "the backbone is stored twice: student.backbone.* holds the student copy of 1 tensor" in result.stderr
