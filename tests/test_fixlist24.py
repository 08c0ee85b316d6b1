"""fixlist24: writer and wording leftovers (quantization_config kinds transformers fails on, unit families, hints)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import copy_example, json_report, run_cli


def _with_quantization_config(tmp_path: Path, value: Any) -> Path:
    folder = copy_example(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _json(*args: str) -> dict[str, Any]:
    return json_report(*args)


@pytest.mark.parametrize(("value", "words", "error"), [
    ({}, "quantization_config is empty ({}): from_pretrained refuses it", ValueError),
    ([1, 2], "quantization_config is a list ([1, 2]), not an object: transformers cannot read this config.json",
     AttributeError),
    ("gptq", "quantization_config is a string ('gptq'), not an object: transformers cannot read this config.json",
     AttributeError),
])
def test_a_quantization_config_transformers_fails_on_is_said_by_every_command(
        tmp_path: Path, value: Any, words: str, error: type[Exception]) -> None:
    """`{}` read as "unknown" quantization (inspect, and plan-devices' dtype) of plain float weights; a list or a
    string read as not quantized, silently. from_pretrained fails on all three (the oracle below): every command
    says so, and reads the weights as not quantized."""
    transformers = pytest.importorskip("transformers")
    folder = _with_quantization_config(tmp_path, value)
    with pytest.raises(error):  # the oracle: the installed transformers fails before loading a weight
        transformers.AutoModel.from_pretrained(str(folder))
    inspected = _json("inspect", str(folder))
    assert inspected["quantized"] is None
    assert any(words in warning for warning in inspected["warnings"]), inspected["warnings"]
    planned = _json("plan-devices", str(folder), "--gpu", "1GB")
    assert planned["dtype"] == "fp32"
    assert any(words in warning for warning in planned["warnings"]), planned["warnings"]
    diffed = _json("diff-keys", str(folder), "--model-class", "BertForSequenceClassification")
    assert not any("quantization" in note for note in diffed["notes"]), diffed["notes"]
    assert any(words in warning for warning in diffed["warnings"]), diffed["warnings"]
    converted = _json("convert", str(folder), "-o", str(tmp_path / "out"), "--dtype", "fp16")
    assert any(words in warning for warning in converted["warnings"]), converted["warnings"]


def test_an_empty_top_level_quantization_config_beside_a_text_configs_is_no_problem(tmp_path: Path) -> None:
    """from_pretrained reads `config.quantization_config or text_config.quantization_config`: an empty top-level one
    gives way to the text config's, which is no failure to warn of."""
    from weightdoctor.quantized import config_quantization_problem, config_quantization_settings

    config = {"model_type": "llava", "quantization_config": {},
              "text_config": {"model_type": "llama", "quantization_config": {"quant_method": "fp8"}}}
    assert config_quantization_problem(config) is None
    assert config_quantization_settings(config) == {"quant_method": "fp8"}
    assert config_quantization_settings({"quantization_config": {}}) is None


def _flip_a_bit_in_the_first_copy(monkeypatch: Any) -> None:
    """Make `byte_copy.copy_range` flip the last bit of its first copy (a disk or copy fault verification finds)."""
    import os

    from weightdoctor.writers import byte_copy

    real_copy = byte_copy.copy_range
    calls = {"n": 0}

    def copy_then_flip_a_bit(src: int, dst: int, src_offset: int, dst_offset: int, length: int) -> None:
        real_copy(src, dst, src_offset, dst_offset, length)
        calls["n"] += 1
        if calls["n"] == 1 and length:
            byte = os.pread(src, 1, src_offset + length - 1)
            os.pwrite(dst, bytes([byte[0] ^ 0x01]), dst_offset + length - 1)

    monkeypatch.setattr(byte_copy, "copy_range", copy_then_flip_a_bit)


@pytest.mark.parametrize(("command", "source", "output", "named"), [
    ("shard", "fixtures/example", "sharded", "sharded/model-00001-of-00004.safetensors"),
    ("convert", "fixtures/example", "converted", "converted/model.safetensors"),
    ("convert", "fixtures/example/model.safetensors", "one.safetensors", "one.safetensors"),
])
def test_a_verification_error_names_the_output_not_the_hidden_staging(
        tmp_path: Path, monkeypatch: Any, command: str, source: str, output: str, named: str) -> None:
    """shard said `error: .../.sharded.wdstage-16755-a921a5ef/model-00001-of-00004.safetensors: verification
    failed: ...`: a hidden name the user never asked for, removed by the time the error is read."""
    from tests.helpers import REPO_ROOT, one_error_line

    _flip_a_bit_in_the_first_copy(monkeypatch)
    extra = ["--max", "300KB"] if command == "shard" else []
    result = run_cli(command, str(REPO_ROOT / source), "-o", str(tmp_path / output), *extra)
    assert result.exit_code == 2, result.stdout
    line = one_error_line(result)
    assert line.startswith(f"error: {tmp_path / named}: verification failed: the bytes of "), line
    assert line.endswith("differ from the source; nothing was written"), line
    assert "wdstage" not in line and "wdtmp" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_key_hint_from_a_pickles_own_module_names_is_quoted_for_a_shell(tmp_path: Path) -> None:
    """A StyleTTS 2 / Kokoro file's module names are its own: `--key style encoder$HOME;'x reads one alone` read
    back in a shell as another key (and ran a command after the `;`). The hint, split as a shell splits it, reads
    that module."""
    import shlex

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    odd = "style encoder$HOME;'x\""
    modules = (odd, "bert", "bert_encoder", "predictor", "decoder", "text_encoder")
    path = tmp_path / "kokoro.pth"
    torch.save({name: {"weight": torch.randn(2 + i, 3)} for i, name in enumerate(modules)}, path)
    report = _json("inspect", str(path))
    note = next(w for w in report["warnings"] if "StyleTTS 2 / Kokoro" in w)
    hint = note.split("; --key ", 1)[1].removesuffix(" reads one alone")
    assert shlex.split(hint) == [odd], hint
    picked = _json("inspect", str(path), "--key", *shlex.split(hint))
    assert picked["nested_key"] == odd and picked["num_tensors"] == 1
    assert picked["num_params"] == 6


def test_a_revision_hint_from_a_cached_ref_name_is_quoted_for_a_shell(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached ref's name is the repo's (`;`, `$` and quotes are allowed in a git ref): `did you mean --revision
    release;v1$x (cached)?` pasted into a shell ran `v1$x` as a command."""
    import shlex

    from safetensors.numpy import save_file

    numpy = pytest.importorskip("numpy")
    ref, commit = "release;v1$x", "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny"
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file({"w": numpy.ones((2, 2), numpy.float32)}, str(repo / "snapshots" / commit / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / ref).write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from tests.helpers import one_error_line

    line = one_error_line(run_cli("inspect", "acme/tiny", "--revision", "release;v1$"))
    assert line.endswith("; did you mean --revision 'release;v1$x' (cached)?"), line
    hint = line.rsplit("did you mean ", 1)[1].removesuffix(" (cached)?")
    assert shlex.split(hint) == ["--revision", ref]
    assert _json("inspect", "acme/tiny", *shlex.split(hint))["num_tensors"] == 1


def test_the_other_cached_revision_offered_is_quoted_for_a_shell(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """refs/main moved to a config-only snapshot: the error offers the tagged earlier commit that holds weights,
    `read one with --revision v1;x`, unquoted (a shell ran `x`)."""
    import shlex
    import shutil

    from fixtures.build import write_hub_cache
    from tests.helpers import one_error_line

    example = copy_example(tmp_path)
    cache = tmp_path / "hub"
    write_hub_cache(cache, "org/tiny-bert", example, revision="v1;x")
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copyfile(example / "config.json", config_only / "config.json")
    write_hub_cache(cache, "org/tiny-bert", config_only, revision="main")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = one_error_line(run_cli("inspect", "org/tiny-bert"))
    assert "(v1;x): read one with --revision 'v1;x' " in line, line
    hint = line.split("read one with ", 1)[1].split(" (the cached", 1)[0]
    assert shlex.split(hint) == ["--revision", "v1;x"]
    assert _json("inspect", "org/tiny-bert", *shlex.split(hint))["num_tensors"] == 73


def test_plan_devices_says_sizes_in_the_units_they_were_typed_in() -> None:
    """`--gpu 1.7GiB --cpu 512MiB` was printed back as `of 1.83 GB` and `of 536.87 MB`, a size the user never
    typed; now `of 1.70 GiB` and `of 512.00 MiB`, and the rest of the report in binary units too."""
    from tests.helpers import REPO_ROOT

    example = str(REPO_ROOT / "fixtures" / "example")
    result = run_cli("plan-devices", example, "--gpu", "1.7GiB", "--cpu", "512MiB")
    assert result.exit_code == 0, result.stderr
    assert "1.06 MiB of 1.70 GiB" in result.stdout and "0 B of 512.00 MiB" in result.stdout, result.stdout
    assert " GB" not in result.stdout and " MB" not in result.stdout, result.stdout
    # Decimal typed: decimal said, as before.
    decimal = run_cli("plan-devices", example, "--gpu", "2GB").stdout
    assert "1.11 MB of 2.00 GB" in decimal and "iB" not in decimal, decimal


def test_plan_devices_says_a_size_typed_in_the_other_family_in_both() -> None:
    """`--gpu 300KiB --cpu 2GB`: the report speaks decimal, the GPU it was told of in KiB is said in both; the
    reserve and the extra GPUs suggested (in --json too) are echoed in the units they were typed in."""
    from tests.helpers import REPO_ROOT

    example = str(REPO_ROOT / "fixtures" / "example")
    mixed = run_cli("plan-devices", example, "--gpu", "300KiB", "--cpu", "2GB", "--reserve", "10KiB").stdout
    assert "0 B of 307.20 KB (300.00 KiB)" in mixed and "1.11 MB of 2.00 GB" in mixed, mixed
    assert "reserve 10.24 KB (10.00 KiB) per GPU" in mixed, mixed
    report = _json("plan-devices", example, "--gpu", "300KiB", "--reserve", "10KiB", "--cpu", "2GiB")
    held = [held["detail"] for device in report["devices"] for held in device["held_back"]]
    assert "--reserve keeps 10.00 KiB free on each GPU" in held, held
    suggestions = [s["description"] for s in report["suggestions"]]
    assert any(s.startswith("5 more 300.00 KiB GPUs") for s in suggestions), suggestions


def test_shard_says_shard_sizes_in_the_units_max_was_typed_in(tmp_path: Path) -> None:
    """`--max 500KiB` (512,000 bytes) listed a first shard of `507.14 KB`, which reads as over the limit; and the
    tensor larger than `--max 100KiB` was said to be `(256.00 KB)`."""
    from tests.helpers import REPO_ROOT

    example = str(REPO_ROOT / "fixtures" / "example")
    result = run_cli("shard", example, "-o", str(tmp_path / "out"), "--max", "500KiB", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "model-00001-of-00003.safetensors  495.25 KiB" in result.stdout, result.stdout
    assert "73 (1.06 MiB) in 3 files" in result.stdout and " KB " not in result.stdout
    small = run_cli("shard", example, "-o", str(tmp_path / "out"), "--max", "100KiB", "--dry-run")
    assert ("bert.embeddings.word_embeddings.weight (250.00 KiB) is larger than --max 100KiB: it gets a shard of its "
            "own") in small.stderr, small.stderr
    decimal = run_cli("shard", example, "-o", str(tmp_path / "out"), "--max", "500KB", "--dry-run").stdout
    assert "490.50 KB" in decimal and "KiB" not in decimal, decimal
