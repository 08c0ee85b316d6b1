"""Small user-facing leftovers of earlier sessions, each with the input that showed it (fixlist22)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tests.helpers import one_error_line, run_cli

EXAMPLE = "fixtures/example"


def _two_shards(folder: Path, digits: int, fmt: str = "safetensors") -> list[str]:
    """Two seeded shards `model-0..1-of-0..2` padded to `digits` digits, with their index, in `folder`."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    parts = [{"a.weight": torch.randn(4, 4)}, {"b.weight": torch.randn(4, 4)}]
    stem, ext = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
    names = [f"{stem}-{i:0{digits}d}-of-{2:0{digits}d}.{ext}" for i in (1, 2)]
    for name, part in zip(names, parts, strict=True):
        if fmt == "safetensors":
            save_file(part, folder / name, metadata={"format": "pt"})
        else:
            torch.save(part, folder / name)
    weight_map = {key: name for name, part in zip(names, parts, strict=True) for key in part}
    (folder / f"{stem}.{ext}.index.json").write_text(json.dumps({"metadata": {"total_size": 128},
                                                                 "weight_map": weight_map}))
    return names


# 1. `-o json`, `-o yaml`: another tool's way to ask for a report format, which wrote a file of that name.

@pytest.mark.parametrize("word", ["json", "yaml", "TABLE", "text", ".json"])
@pytest.mark.parametrize("command", ["convert", "shard"])
def test_an_output_named_like_a_report_format_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         command: str, word: str) -> None:
    """`convert m.safetensors -o json` wrote the weights to a bin file named `json` (plan-devices refused it)."""
    source = Path(EXAMPLE, "model.safetensors").resolve()
    monkeypatch.chdir(tmp_path)
    extra = ["--max", "1GB"] if command == "shard" else []
    line = one_error_line(run_cli(command, str(source), "-o", word, *extra))
    assert f"{word!r} is an output format, not a file name" in line, line
    assert f"(-o ./{word} for that name)" in line
    if word.lower().lstrip(".") == "json":
        assert "--json prints the report as one JSON object on stdout" in line
    assert list(tmp_path.iterdir()) == []


def test_the_format_word_escape_writes_that_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`-o ./json`, the name the refusal offers, is written as asked."""
    source = Path(EXAMPLE, "model.safetensors").resolve()
    monkeypatch.chdir(tmp_path)
    result = run_cli("convert", str(source), "-o", "./json", "--to", "bin")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "json").is_file()


@pytest.mark.parametrize("word", ["yaml", "table", "Text"])
def test_plan_devices_refuses_every_report_format_as_its_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 word: str) -> None:
    """plan-devices refused `-o json` only: `-o yaml` wrote the device map to a file named `yaml`."""
    source = str(Path(EXAMPLE).resolve())
    monkeypatch.chdir(tmp_path)
    line = one_error_line(run_cli("plan-devices", source, "--gpu", "1GB", "-o", word))
    assert line.startswith(f"error: --output {word!r} is an output format, not a file name"), line
    assert line.endswith(f"give a file name, e.g. device_map.json (-o ./{word} for that name)"), line
    assert list(tmp_path.iterdir()) == []
