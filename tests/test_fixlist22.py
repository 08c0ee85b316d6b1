"""Small user-facing leftovers of earlier sessions, each with the input that showed it (fixlist22)."""

from __future__ import annotations

import json
import re
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


# 2. Shard numbers of six digits and more: `model-000001-of-000002.safetensors`.

def test_a_single_shard_of_six_digits_says_it_is_one_shard(tmp_path: Path) -> None:
    """Read alone and without its index, a 5-digit shard said "shard 1 of 2"; a 6-digit one said nothing."""
    names = _two_shards(tmp_path / "src", 6)
    alone = tmp_path / "alone"
    alone.mkdir()
    (tmp_path / "src" / names[0]).rename(alone / names[0])
    result = run_cli("inspect", str(alone / names[0]))
    assert result.exit_code == 0, result.stderr
    assert f"{names[0]} is shard 1 of 2: only its own tensors are read" in " ".join(result.stderr.split())


def test_shard_force_replaces_old_shards_of_six_digits(tmp_path: Path) -> None:
    """`shard --force` into a folder holding `model-000001-of-000002.safetensors` kept them beside the new
    `model.safetensors` ("kept"), stale shards of the same set; five-digit ones were replaced."""
    names = _two_shards(tmp_path / "src", 6)
    out = tmp_path / "out"
    _two_shards(out, 6)
    result = run_cli("shard", str(tmp_path / "src"), "-o", str(out), "--max", "1GB", "--force", "--json")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]
    assert set(names) <= set(json.loads(result.stdout)["write"]["replaced"])


def test_convert_force_replaces_old_shards_of_six_digits(tmp_path: Path) -> None:
    """The same for `convert --force` of a folder."""
    _two_shards(tmp_path / "src", 5)
    out = tmp_path / "out"
    stale = _two_shards(out, 6)
    result = run_cli("convert", str(tmp_path / "src"), "-o", str(out), "--force")
    assert result.exit_code == 0, result.stderr
    assert not any((out / name).exists() for name in stale), sorted(p.name for p in out.iterdir())


def test_convert_names_six_digit_bin_shards_as_transformers_does(tmp_path: Path) -> None:
    """`pytorch_model-000001-of-000002.bin` converted to `pytorch_model-000001-of-000002.safetensors`, where the
    five-digit shard became `model-00001-of-00002.safetensors` (transformers' safetensors name)."""
    _two_shards(tmp_path / "src", 6, fmt="bin")
    result = run_cli("convert", str(tmp_path / "src"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "model-000001-of-000002.safetensors", "model-000002-of-000002.safetensors", "model.safetensors.index.json"]


def test_weight_set_reads_shard_numbers_of_any_width() -> None:
    from weightdoctor.rewrite import default_output_name, weight_set

    for digits in (1, 5, 6, 8):
        number = f"-{1:0{digits}d}-of-{2:0{digits}d}"
        assert weight_set(f"model{number}.safetensors") == ("model", None)
        assert weight_set(f"diffusion_pytorch_model{number}.fp16.safetensors") == ("diffusion_pytorch_model", "fp16")
        assert default_output_name(f"pytorch_model{number}.bin", "safetensors") == f"model{number}.safetensors"


# 3. Device sizes past any device: float arithmetic no longer holds them exactly.

@pytest.mark.parametrize(("option", "size"), [("--gpu", "1e30GB"), ("--gpu", "9.1PB"), ("--cpu", "1e20GB"),
                                              ("--reserve", "123456789012345678901GB")])
def test_a_device_size_past_any_device_is_refused(option: str, size: str) -> None:
    """`--gpu 1e20GB` was planned as 99999999999999991433150857216 bytes (int(float * 10**9), as accelerate reads
    it), not the 10^29 typed, and printed as "1e+14 PB"."""
    words = ["--gpu", "24GB", option, size] if option != "--gpu" else [option, size]
    line = one_error_line(run_cli("plan-devices", EXAMPLE, *words))
    assert line == (f"error: {option} {size} is more memory than any device holds (over 9 PB, 2^53 bytes, past which "
                    "a size read as a float, as accelerate reads max_memory, is no longer exact): give the device's "
                    "own size")


def test_a_device_size_up_to_two_to_the_53_is_planned_exactly() -> None:
    result = run_cli("plan-devices", EXAMPLE, "--gpu", "9PB", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["devices"][0]["capacity_bytes"] == 9 * 10**15


# 4. Commands a hint gives to paste are pasteable.

@pytest.mark.parametrize(("url", "typed"), [
    ("huggingface.co/org/pipe/tree/main/my%20dir", "org/pipe/my dir"),
    ("https://huggingface.co/bert-base-uncased/tree/main/my%20dir", "bert-base-uncased/my dir"),
])
def test_a_repo_id_with_a_space_is_quoted_in_the_hint(url: str, typed: str) -> None:
    """"give the repo id instead: org/pipe/my dir" pasted as two arguments."""
    line = one_error_line(run_cli("inspect", url))
    said = line.partition("give the repo id instead: ")[2]
    assert said and shlex.split(said) == [typed], line


def test_a_repo_id_without_a_space_is_said_as_before() -> None:
    line = one_error_line(run_cli("inspect", "huggingface.co/org/pipe/tree/v1/unet"))
    assert line.endswith("give the repo id instead: org/pipe/unet --revision v1"), line


def test_the_shard_folder_hint_quotes_an_output_with_a_space(tmp_path: Path) -> None:
    """"use weightdoctor convert -o my model.safetensors" named two outputs."""
    result = run_cli("shard", EXAMPLE, "-o", str(tmp_path / "my model.safetensors"), "--max", "1GB", "--dry-run")
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stderr.split())
    folder, command = re.search(r"name it (.*?) for a folder; for a single file .*?, use (weightdoctor convert .*)$",
                                text).groups()
    # each names one path (quoted as the shell reads it), the output as typed, and the source too (advice1)
    assert shlex.split(folder) == [str(tmp_path / "my model") + "/"], text
    assert shlex.split(command) == ["weightdoctor", "convert", EXAMPLE, "-o", str(tmp_path / "my model.safetensors")]


# 5. `--max` sizes: what was read, and which units are.

def test_a_bare_number_of_bytes_is_not_said_to_be_in_decimal_units(tmp_path: Path) -> None:
    """`--max 1e5` printed "1e5 = 100,000 bytes (decimal units)": no unit was typed."""
    result = run_cli("shard", EXAMPLE, "-o", str(tmp_path / "out"), "--max", "1e5", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "1e5 = 100,000 bytes (no unit: bytes)" in result.stdout
    result = run_cli("shard", EXAMPLE, "-o", str(tmp_path / "out"), "--max", "400 KB", "--dry-run")
    assert "400 KB = 400,000 bytes (decimal units)" in result.stdout


@pytest.mark.parametrize(("size", "said"), [
    ("400kb", "write 400KB for bytes"),
    ("0.4 mb", "write 0.4MB for bytes"),
    ("400k", "write 400KB (KB = 10^3 bytes) or 400KiB (2^10 bytes)"),
])
def test_a_refused_unit_lists_the_units_read(tmp_path: Path, size: str, said: str) -> None:
    """The refusal of `400kb` said how to write bytes, and not which units are read at all."""
    line = one_error_line(run_cli("shard", EXAMPLE, "-o", str(tmp_path / "out"), "--max", size))
    assert f"size {size!r} is ambiguous" in line and said in line, line
    assert line.endswith("(decimal: KB MB GB TB PB; binary: KiB MiB GiB TiB PiB; any case, but KB..PB with a capital "
                         "B; a bare number is bytes)"), line


@pytest.mark.parametrize(("size", "read"), [("400 KB", 400_000), ("0.4MB", 400_000), ("400KiB", 409_600),
                                            ("400kib", 409_600), ("1e5", 100_000)])
def test_the_sizes_the_refusal_lists_are_read_as_it_says(tmp_path: Path, size: str, read: int) -> None:
    result = run_cli("shard", EXAMPLE, "-o", str(tmp_path / "out"), "--max", size, "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["plan"]["max_bytes"] == read


# 6. auto_map: six names and how many more.

def test_the_auto_map_warning_counts_the_modules_left_unsaid(tmp_path: Path) -> None:
    import shutil

    shutil.copy(Path(EXAMPLE, "model.safetensors"), tmp_path)
    config = json.loads(Path(EXAMPLE, "config.json").read_text())
    config["auto_map"] = {f"AutoModel{i}": f"modeling_m{i}.M{i}" for i in range(9)}
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = run_cli("inspect", str(tmp_path))
    text = " ".join(result.stderr.split())
    assert "modeling_m5.py and 3 more, not in this folder" in text, text


# 7. Narrow consoles.

def test_the_check_dtype_title_is_not_cut_mid_phrase_at_80_columns() -> None:
    """At 80 columns the per-measure table's title wrapped as "What each cast does (tensors affected:" over
    "unsafe / lossy of checked)"."""
    from tests.helpers import REPO_ROOT, run_subprocess

    out = run_subprocess("check-dtype", REPO_ROOT / "fixtures" / "example",
                         env={"COLUMNS": "80", "TERM": "dumb", "NO_COLOR": "1"}).stdout
    lines = [line.rstrip() for line in out.splitlines()]
    assert "What each cast does" in lines, out
    assert "tensors: unsafe / lossy of checked" in lines, out
    assert not any(line.startswith("unsafe / lossy") for line in lines)


@pytest.mark.parametrize("width", [40, 50, 60])
def test_inspect_stats_cuts_no_number_or_code_on_a_narrow_console(width: int) -> None:
    """At 60 columns and under the statistics table cut its figures (`100.…`, `-0.00…`, `0.01…`), its headers
    (`m…` for mean at 40) and the findings' code (`checkpoint-at…`): each tensor and finding is told in lines of its
    own there: its name, then its figures, then what it was found and expected to be (ux20)."""
    from tests.helpers import REPO_ROOT, run_subprocess

    out = run_subprocess("inspect", REPO_ROOT / "fixtures" / "example", "--stats",
                         env={"COLUMNS": str(width), "TERM": "dumb", "NO_COLOR": "1"}).stdout
    stats = out[out.index("Weights: statistics and initialization"):]
    assert max(map(len, out.splitlines())) <= width
    assert "…" not in stats.replace("more; use --all", ""), stats
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in stats.splitlines() if line.startswith("│")]
    text = " ".join(cell for row in cells for cell in row)
    assert "mean -0.000253 · std 0.0199 · abs max 0.0719" in text and "zeros 100.0%" in text, stats
    assert "warn · checkpoint-at-init" in text and "expected at init zeros" in text, stats


def test_inspect_stats_keeps_each_name_whole_at_80() -> None:
    """At 80 the table kept its seven columns and gave names 10 cells: `bert.embed` / `dings.Laye` / `rNorm.bias`
    (ux20). Each tensor is now told in lines of its own, its name whole, its figures on one line."""
    from tests.helpers import REPO_ROOT, run_subprocess

    out = run_subprocess("inspect", REPO_ROOT / "fixtures" / "example", "--stats",
                         env={"COLUMNS": "80", "TERM": "dumb", "NO_COLOR": "1"}).stdout
    assert "│ bert.embeddings.position_embeddings.weight" in out, out
    assert "│ mean -0.000253 · std 0.0199 · abs max 0.0719 · zeros 0.0%" in out, out


# 8. Library messages are cut between words.

def test_clip_words_cuts_between_words_and_marks_the_cut() -> None:
    from weightdoctor.errors import clip_words

    text = "TimmBackbone requires the timm library but it was not found in your environment."
    for limit in range(20, len(text)):
        clipped = clip_words(text, limit)
        assert len(clipped) <= limit and clipped.endswith(" …"), clipped
        assert text.startswith(clipped[:-2]) and text[len(clipped) - 2] == " ", clipped
    assert clip_words(text, len(text)) == text
    assert clip_words("x" * 50, 10) == "x" * 9 + "…"


def test_a_model_that_needs_timm_is_said_to_in_whole_words(tmp_path: Path) -> None:
    """plan-devices on a transformers TimmBackbone config without timm installed said "... restart your runtime after
    installati); planned from the tensors": transformers' message cut at 200 characters."""
    import importlib.util

    import torch
    from safetensors.torch import save_file

    if importlib.util.find_spec("timm") is not None:
        pytest.skip("timm is installed: transformers builds the model")
    torch.manual_seed(0)
    save_file({"fc.weight": torch.randn(10, 8), "fc.bias": torch.zeros(10)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "timm_backbone", "backbone": "resnet18",
                                                      "architectures": ["TimmBackbone"]}))
    result = run_cli("plan-devices", str(tmp_path), "--gpu", "1GB")
    assert result.exit_code == 0, result.stderr
    warning = " ".join(result.stderr.split())
    said = warning.partition("transformers cannot build TimmBackbone from this config: ")[2]
    assert "requires the timm library" in said, warning
    detail = said.partition("); planned from the tensors")[0]
    assert detail.endswith(" …") and len(detail) <= 200, detail
    full = ("TimmBackbone requires the timm library but it was not found in your environment. You can install it "
            "with pip: `pip install timm`. Please note that you may need to restart your runtime after installation.")
    assert full.startswith(detail[:-2]) and full[len(detail) - 2] == " ", detail  # ends where a word ends


# 9. inspect --json lists the first 1,000 other and non-tensor entries, with their counts.

def test_inspect_json_bounds_the_entries_lists_and_counts_them(tmp_path: Path) -> None:
    """A pickle of a million non-tensor entries made a 33 MB --json (every entry described in `skipped_entries`, or
    in `other_entries` at the top level): the first 1,000 are listed, and `*_count` says how many there are."""
    import re

    import torch

    torch.manual_seed(0)
    torch.save({"w": torch.randn(2, 2), **{f"step_{i}": i for i in range(2500)}}, tmp_path / "skipped.pt")
    torch.save({"state_dict": {"w": torch.randn(2, 2)}, **{f"meta_{i}": i for i in range(1500)}},
               tmp_path / "other.pt")
    skipped = json.loads(run_cli("inspect", str(tmp_path / "skipped.pt"), "--json").stdout)
    assert skipped["skipped_entries_count"] == 2500 and len(skipped["skipped_entries"]) == 1000
    assert skipped["skipped_entries"][:2] == ["step_0 (int: 0)", "step_1 (int: 1)"]
    other = json.loads(run_cli("inspect", str(tmp_path / "other.pt"), "--json").stdout)
    assert other["other_entries_count"] == 1500 and len(other["other_entries"]) == 1000
    assert other["other_entries"][0] == "meta_0 (int: 0)" and other["nested_key"] == "state_dict"
    small = json.loads(run_cli("inspect", EXAMPLE, "--json").stdout)
    assert small["other_entries"] == small["skipped_entries"] == [] and small["skipped_entries_count"] == 0
    # The text report still counts every entry, past the 1,000 the JSON lists.
    for name, total in (("skipped.pt", 2500), ("other.pt", 1500)):
        text = " ".join(run_cli("inspect", str(tmp_path / name)).stdout.split())
        left = re.search(r"and ([\d,]+) more", text)
        assert left is not None and int(left.group(1).replace(",", "")) > total - 1000, text
