"""Round 23 of the common mistakes users make: `convert` and `shard` typed as users type them, on checkpoints saved
by transformers (tiny seeded configs) and torch.save.

Covers: `convert pytorch_model.bin` with no -o said only Click's "Missing option '--output' / '-o'"; now the line
gives the command with an -o beside the input, in the format written, as Hugging Face's conversion names it
(model.safetensors), and pasted it writes there. `shard --max 200Kilobytes` / `200bytes` / `2 mebibytes` were
refused as unknown units; a unit spelled out is read as the abbreviation it spells. A fp16 convert of a T5 imported
transformers and built the model on the meta device to learn its `_keep_in_fp32_modules` (CPU seconds, 15 s of
wall time on a busy machine, for a file of kilobytes); the list is read from the modeling code's text where that
answers it, the same as the built model's.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO_ROOT, run_subprocess

_GPT2 = dict(n_layer=2, n_embd=32, n_head=2, vocab_size=128, n_positions=64)
_T5 = dict(vocab_size=256, d_model=32, d_ff=64, d_kv=16, num_layers=2, num_heads=2)


def _error_line(process: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of a run that exited 2 with nothing on stdout."""
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    assert process.returncode == 2 and process.stdout == "" and len(lines) == 1, (process.stdout, process.stderr)
    return lines[0]


def _suggested(line: str) -> list[str]:
    """The weightdoctor arguments of the command a one-line error offers after "for example: "."""
    tail = line.split("for example: ", 1)[1]
    tail = tail[:tail.rindex(" (see ")]
    words = shlex.split(tail)
    assert words[:3] == ["python", "-m", "weightdoctor"], line
    return words[3:]


@pytest.fixture(scope="module")
def gpt2_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded GPT-2 as transformers 4 saved it: config.json and a pytorch_model.bin of model.state_dict()."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**_GPT2))
    folder = tmp_path_factory.mktemp("u23") / "gpt2-finetuned"
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded T5ForConditionalGeneration saved by save_pretrained (model.safetensors, float32)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("u23t5") / "t5-small-ft"
    T5ForConditionalGeneration(T5Config(**_T5)).save_pretrained(folder)
    return folder


def _tensors(path: Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    return load_file(path) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)


def test_convert_without_output_names_a_file_beside_the_input_and_pasted_it_writes_there(
        gpt2_bin: Path, tmp_path: Path) -> None:
    """Was: "Missing option '--output' / '-o'." and nothing of what to give. Now, typed in the model's folder, the
    line offers `-o model.safetensors` (what from_pretrained reads first, the name Hugging Face's conversion gives);
    pasted in that folder, it writes the input's tensors there and leaves the input as it was."""
    import shutil

    folder = tmp_path / "gpt2"
    shutil.copytree(gpt2_bin, folder)
    before = (folder / "pytorch_model.bin").read_bytes()
    line = _error_line(run_subprocess("convert", "pytorch_model.bin", cwd=folder))
    assert line.startswith("error: python -m weightdoctor convert: Missing option '--output' / '-o': convert writes "
                           "a file that is not there yet and never over the input, for example: "), line
    words = _suggested(line)
    assert words == ["convert", "pytorch_model.bin", "-o", "model.safetensors"]
    pasted = run_subprocess(*words, cwd=folder)
    assert pasted.returncode == 0, pasted.stderr
    assert (folder / "pytorch_model.bin").read_bytes() == before
    import torch

    source, written = _tensors(folder / "pytorch_model.bin"), _tensors(folder / "model.safetensors")
    assert set(written) == set(source) - {"lm_head.weight"}  # the tied alias is left out, as save_pretrained does
    assert all(torch.equal(written[name], source[name]) for name in written)
    # Typed again, the name taken, it offers the next free one rather than one --force would replace.
    again = _suggested(_error_line(run_subprocess("convert", "pytorch_model.bin", cwd=folder)))
    assert again == ["convert", "pytorch_model.bin", "-o", "model-2.safetensors"]


@pytest.mark.parametrize(("typed", "offered"), [
    (["convert", "{src}", "--dtype", "bf16"], ["convert", "{src}", "-o", "{src}-bf16", "--dtype", "bf16"]),
    (["convert", "{src}/model.safetensors", "--to", "bin"],
     ["convert", "{src}/model.safetensors", "-o", "{src}/pytorch_model.bin", "--to", "bin"]),
    (["shard", "--max", "50KB", "--", "{src}"], ["shard", "--max", "50KB", "-o", "{src}-sharded", "--", "{src}"]),
])
def test_a_missing_output_of_a_folder_a_bin_target_or_a_shard_is_offered_too(
        t5_folder: Path, tmp_path: Path, typed: list[str], offered: list[str]) -> None:
    """A folder gets a folder beside it named for what was asked, --to bin the name transformers 4 reads, a shard a
    folder (its -o before a `--`); each pasted writes a checkpoint with the source's tensors."""
    import shutil

    import torch

    src = tmp_path / "t5"
    shutil.copytree(t5_folder, src)
    line = _error_line(run_subprocess(*[word.format(src=src) for word in typed]))
    words = _suggested(line)
    assert words == [word.format(src=src) for word in offered], line
    assert run_subprocess(*words).returncode == 0
    output = Path(words[words.index("-o") + 1])
    files = sorted(output.glob("*.safetensors")) if output.is_dir() else [output]
    written = {name: tensor for file in files for name, tensor in _tensors(file).items()}
    source = _tensors(src / "model.safetensors")
    # A .bin holds T5's tied names too, one storage with shared.weight, as torch.save of the model writes them.
    tied = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    assert set(written) == set(source) | (tied if output.suffix == ".bin" else set())
    assert all(torch.equal(written[name].float(), source[name].to(written[name].dtype).float()) for name in source)


@pytest.mark.parametrize(("spelled", "abbreviated"), [
    ("50Kilobytes", "50KB"), ("50000bytes", "50000"), ("50 kilobyte", "50KB"), ("0.05 megabytes", "0.05MB"),
    ("48kibibytes", "48KiB"),
])
def test_a_size_unit_spelled_out_shards_as_its_abbreviation(t5_folder: Path, tmp_path: Path, spelled: str,
                                                             abbreviated: str) -> None:
    """Was: "cannot parse size '50Kilobytes': unknown unit 'Kilobytes'". A unit spelled out has one reading, the one
    of the abbreviation it spells (a kilobyte 1000 bytes, a kibibyte 1024): the shards are those of the
    abbreviation, file for file."""
    one, two = tmp_path / "spelled", tmp_path / "abbreviated"
    first = run_subprocess("shard", t5_folder, "-o", one, "--max", spelled)
    assert first.returncode == 0, first.stderr
    assert run_subprocess("shard", t5_folder, "-o", two, "--max", abbreviated).returncode == 0
    shards = sorted(p.name for p in two.glob("*.safetensors"))
    assert len(shards) > 1 and sorted(p.name for p in one.glob("*.safetensors")) == shards
    assert all((one / name).read_bytes() == (two / name).read_bytes() for name in shards)


def test_a_size_split_by_the_shell_with_a_spelled_unit_is_joined() -> None:
    """`--max 50 kilobytes` (two words): the line gives the size as one word, as for `50 KB`."""
    line = _error_line(run_subprocess("shard", "x", "-o", "y", "--max", "50", "kilobytes"))
    assert "--max 50 kilobytes: a size is one word, --max 50kilobytes (the shell split it in two)" in line


def test_a_fp16_convert_of_t5_reads_the_fp32_modules_without_importing_transformers(t5_folder: Path,
                                                                                    tmp_path: Path) -> None:
    """Was: transformers imported and the T5 built on the meta device to learn `_keep_in_fp32_modules` (5 s of CPU
    of a convert of 60 KB). The warning is the same, from the modeling code's text; transformers is not imported."""
    import os

    process = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "weightdoctor", "convert", str(t5_folder), "-o",
         str(tmp_path / "fp16"), "--dtype", "fp16"],
        capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert process.returncode == 0, process.stderr
    imported = [line.rsplit("|", 1)[1].strip() for line in process.stderr.splitlines()
                if line.startswith("import time:")]
    assert "torch" in imported and not [name for name in imported if name.startswith("transformers")]
    assert ("casts 4 tensors that from_pretrained(dtype=torch.float16) keeps in float32 (its class's "
            "_keep_in_fp32_modules: wo)") in process.stderr
    assert r"--keep-fp32 '\.wo\.'" in process.stderr


@pytest.mark.parametrize(("config_name", "values", "model_type"), [
    ("T5Config", _T5, "t5"),
    ("RwkvConfig", dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, context_length=32), "rwkv"),
    ("GPT2Config", _GPT2, "gpt2"),
])
def test_the_fp32_modules_read_from_text_are_those_of_the_built_model(config_name: str, values: dict[str, Any],
                                                                      model_type: str) -> None:
    """What the text gives is what transformers' model, built, holds after post_init (its submodules' lists added)."""
    import torch
    import transformers

    from weightdoctor.modeling_source import fp32_modules_plan

    config = getattr(transformers, config_name)(**values)
    cls = getattr(transformers, config.architectures[0]) if config.architectures else None
    cls = cls or transformers.AutoModelForCausalLM._model_mapping[type(config)] if model_type != "t5" else \
        transformers.T5ForConditionalGeneration
    with torch.device("meta"):
        model = cls(config)
    built = (tuple(sorted(model._keep_in_fp32_modules or ())), tuple(sorted(model._keep_in_fp32_modules_strict or ())))
    assert fp32_modules_plan(config.to_dict()) == built
    assert fp32_modules_plan({"model_type": model_type, "auto_map": {"AutoModel": "x.Y"}}) is None  # remote code


def _tied_models() -> list[tuple[str, Any]]:
    import torch
    import transformers

    torch.manual_seed(0)
    return [
        ("gpt2", transformers.GPT2LMHeadModel(transformers.GPT2Config(**_GPT2))),
        ("t5", transformers.T5ForConditionalGeneration(transformers.T5Config(**_T5))),
        ("llama", transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, tie_word_embeddings=True))),
    ]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["gpt2", "t5", "llama"])
def test_a_bin_written_from_safetensors_keeps_the_tied_names_as_torch_save_does(tmp_path: Path, index: int) -> None:
    """Was: `convert --to bin` of a safetensors file that records its tied tensors (GPT-2's `lm_head.weight`, T5's
    three embeddings) left them out, and `model.load_state_dict(torch.load(path))` (strict, as older libraries load a
    .bin) failed on the missing keys. Now the .bin holds every name torch.save writes for `model.state_dict()`, the
    tied ones one storage with the tensor kept (no byte more), and loads strictly, by from_pretrained too."""
    import torch

    name, model = _tied_models()[index]
    source = tmp_path / name
    model.config.save_pretrained(source)
    state = model.state_dict()
    torch.save(state, source / "pytorch_model.bin")
    as_safetensors, back = tmp_path / f"{name}-st", tmp_path / f"{name}-bin"
    assert run_subprocess("convert", source, "-o", as_safetensors).returncode == 0
    stored = set(_tensors(as_safetensors / "model.safetensors"))
    assert stored < set(state)  # the tied names are records in its metadata, not tensors
    converted = run_subprocess("convert", as_safetensors, "-o", back, "--to", "bin")
    assert converted.returncode == 0, converted.stderr
    assert "tied tensors it does not store" not in converted.stderr
    loaded = torch.load(back / "pytorch_model.bin", weights_only=True)
    assert list(loaded) == [n for n in loaded if n in stored] + sorted(set(state) - stored)  # aliases after owners
    assert set(loaded) == set(state) and all(torch.equal(loaded[n], state[n]) for n in state)
    storages = {n: loaded[n].untyped_storage().data_ptr() for n in loaded}
    for group in {frozenset(m for m in state if state[m].data_ptr() == state[n].data_ptr()) for n in state}:
        assert len({storages[n] for n in group}) == 1, group  # one storage per tied group, as in the source
    assert (back / "pytorch_model.bin").stat().st_size <= (source / "pytorch_model.bin").stat().st_size + 4096
    fresh = type(model)(model.config)
    fresh.load_state_dict(loaded, strict=True)
    reloaded = type(model).from_pretrained(back).state_dict()
    assert all(torch.equal(reloaded[n], state[n]) for n in state)
