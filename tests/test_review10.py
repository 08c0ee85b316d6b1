"""Review 10: bugs found reviewing the branches merged since 5e639fb (ux9, perf9, review9); each test failed before
its fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import copy_example, run_cli


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return copy_example(tmp_path)


def test_a_backslash_before_a_bracket_reaches_the_terminal() -> None:
    """Rich drops the backslash of any `\\[` in plain text, tag or not, and its `escape` doubles only those before
    a tag: a regex quoted in an error line (`\\[0\\-3\\]`), a Windows path (`C:\\[old]`) lost a backslash, so the
    expression a message told the user to write was another one."""
    from rich.console import Console

    from weightdoctor.render.text import escape

    console = Console(width=200, record=True, color_system=None)
    for text in ("layer\\.\\[0\\-3\\]\\.", "C:\\[old]\\x", "a \\\\[0 b", "\\[bold]x\\[/] [link=y]z"):
        console.print(escape(text), markup=True, highlight=False, soft_wrap=True)
        assert console.export_text().rstrip("\n") == text


@pytest.mark.parametrize(("pattern", "meant"), [
    # A glob's character class is a regex's class: it stays one (it was escaped into the literal `\[0\-3\]`).
    ("*layer.[0-3].*", "layer\\.[0-3]\\."),
    ("*layer.[!0].*", "layer\\.[^0]\\."),
])
def test_a_shell_glob_with_a_character_class_names_the_regex_meant(model: Path, pattern: str, meant: str) -> None:
    result = run_cli("inspect", model, "--filter", pattern)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.endswith(f"; a regular expression, not a shell glob: write '{meant}'")
    # The expression suggested is valid and matches what the glob matches.
    assert re.compile(meant).search("bert.encoder.layer.1.output.dense.weight")


@pytest.mark.parametrize("pattern", ["(?<name>attention)", "layer\\.(?P<n\\d+)", "(?i:*norm)", "a|*b"])
def test_a_broken_regex_that_is_no_glob_gets_no_glob_hint(model: Path, pattern: str) -> None:
    """A pattern written in regex syntax (a group, an alternation, an escape) that re refuses is a mistake in the
    regex: "not a shell glob: write '^\\(.<name>attention\\)$'" told its author to match parentheses literally."""
    result = run_cli("inspect", model, "--filter", pattern)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.startswith(f"error: --filter {pattern!r}: bad regular expression (")
    assert "shell glob" not in line


def test_a_tensorflow_checkpoint_index_is_not_called_a_download_leftover(tmp_path: Path) -> None:
    """Google's original BERT release (bert_model.ckpt.index / .meta, data shard not there): ".index" after
    ".ckpt" is TensorFlow's naming, not a download tool's; "finish the download, or rename the file" misled."""
    folder = tmp_path / "uncased_L-12_H-768_A-12"
    folder.mkdir()
    for name in ("bert_model.ckpt.index", "bert_model.ckpt.meta", "vocab.txt"):
        (folder / name).write_bytes(b"\x00\x01\x02")
    result = run_cli("inspect", folder)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.startswith(f"error: {folder}: folder holds no weight file")
    assert "download" not in line and "rename the file" not in line
    # A real leftover beside them is still named.
    (folder / "model.safetensors.crdownload").write_bytes(b"\x00")
    line = run_cli("inspect", folder).stderr.strip()
    assert "; it holds model.safetensors.crdownload, named like weights with a suffix after it" in line
    assert "ckpt" not in line.split("; it holds ", 1)[1]


@pytest.mark.parametrize(("typed", "meant"), [("1,5GB", "1.5GB"), ("7,5 GiB", "7.5 GiB"), ("0,75TB", "0.75TB")])
def test_a_decimal_comma_in_gpu_is_not_read_as_two_gpus(model: Path, typed: str, meant: str) -> None:
    """`--gpu 1,5GB` (a decimal comma, as many locales write 1.5) was told "holds 2 sizes ... (--gpu 1 --gpu 5GB)":
    a 1-byte GPU and a 5 GB one."""
    result = run_cli("plan-devices", model, "--gpu", typed)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "--gpu 1 " not in line and "holds 2 sizes" not in line
    assert line == (f"error: --gpu {typed!r}: a size takes a decimal point ({meant}); for several GPUs, repeat "
                    "--gpu with one size each")


def test_an_existing_output_folder_is_listed_without_a_stat_per_entry(model: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`convert -o data/` at a folder of 100,000 files: the "it is a folder holding ..." hint stat()ed every
    entry to mark folders (0.7 s here, seconds on a network disk) to show five names."""
    out = tmp_path / "dataset"
    (out / "a_subfolder").mkdir(parents=True)
    for i in range(300):
        (out / f"img_{i:04d}.png").write_bytes(b"")
    calls = {"n": 0}
    real_is_dir = Path.is_dir

    def counting_is_dir(self: Path) -> bool:
        calls["n"] += 1
        return real_is_dir(self)

    monkeypatch.setattr(Path, "is_dir", counting_is_dir)
    result = run_cli("convert", model, "-o", out)
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: {out}: output exists; pass --force to replace it, or choose a new path: "
                                     "it is a folder holding a_subfolder/, img_0000.png, img_0001.png, img_0002.png, "
                                     "img_0003.png, ...")
    assert calls["n"] < 50


@pytest.mark.parametrize("name", ["pytorch_model.bin.gz", "model.safetensors.zst", "model.pt.xz",
                                  "model.safetensors.tar.gz", "model.ckpt.zip"])
def test_a_compressed_weight_file_is_not_told_to_be_renamed(tmp_path: Path, name: str) -> None:
    """A folder holding `pytorch_model.bin.gz` (weights shared compressed) was told "a download still running ...
    rename the file to end in its weight suffix": a gzip stream renamed .bin is still no checkpoint."""
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / name).write_bytes(b"\x1f\x8b\x08\x00" + bytes(40))
    result = run_cli("inspect", folder)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "rename the file" not in line and "download" not in line
    assert line == (f"error: {folder}: folder holds no weight file (.safetensors, .bin, .pt, .pth, .ckpt); it holds "
                    f"{name}, a compressed or archived weight file: unpack it, and point at the file it unpacks to")
