"""Round 24 of the common mistakes users make: `convert`, `shard` and `check-dtype` typed as users type them, on
checkpoints saved by transformers (tiny seeded configs) and torch.save.

Covers: a transformers-5 model.safetensors records no tied alias, so `convert --to bin` of it wrote no
`lm_head.weight` (T5: no `encoder.embed_tokens.weight`, `decoder.embed_tokens.weight`, `lm_head.weight`) and a
strict `load_state_dict` of the .bin failed where torch.save of the model would not; the ties are now read from the
model config.json builds. `convert org/model` without -o offered no output; it offers a folder named for the repo in
the current directory.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_subprocess
from tests.test_user_mistakes23 import _error_line, _suggested

_GPT2 = dict(n_layer=2, n_embd=32, n_head=2, vocab_size=128, n_positions=64, bos_token_id=0, eos_token_id=0)
_T5 = dict(vocab_size=256, d_model=32, d_ff=64, d_kv=16, num_layers=2, num_heads=2)



def _saved(folder: Path, config_name: str, model_name: str, values: dict[str, Any]) -> Path:
    """A tiny seeded model saved by transformers 5's save_pretrained (model.safetensors, ties not stored)."""
    import torch
    import transformers

    torch.manual_seed(0)
    getattr(transformers, model_name)(getattr(transformers, config_name)(**values)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _saved(tmp_path_factory.mktemp("u24") / "gpt2", "GPT2Config", "GPT2LMHeadModel", _GPT2)


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _saved(tmp_path_factory.mktemp("u24t5") / "t5", "T5Config", "T5ForConditionalGeneration", _T5)


@pytest.mark.parametrize(("fixture", "model_name", "command"), [
    ("gpt2_folder", "GPT2LMHeadModel", ["convert", "{src}/model.safetensors", "-o", "{out}/pytorch_model.bin"]),
    ("gpt2_folder", "GPT2LMHeadModel", ["convert", "{src}", "-o", "{out}", "--to", "bin"]),
    ("t5_folder", "T5ForConditionalGeneration", ["convert", "{src}", "-o", "{out}", "--to", "bin"]),
    ("t5_folder", "T5ForConditionalGeneration", ["shard", "{src}", "-o", "{out}", "--format", "bin", "--max", "60KB"]),
])
def test_a_bin_of_a_transformers5_safetensors_holds_the_tied_names_as_torch_save_writes_them(
        request: pytest.FixtureRequest, tmp_path: Path, fixture: str, model_name: str, command: list[str]) -> None:
    """Was: the .bin held the stored tensors alone (GPT-2: 28 of the 29 names of model.state_dict(), T5: 47 of 50),
    and `model.load_state_dict(torch.load(bin))` raised "Missing key(s) in state_dict: lm_head.weight". Now each tied
    name is written as one storage with the tensor it is tied to, as torch.save of the model writes it: a strict load
    takes it, the names are those of the model's state_dict, and from_pretrained of the folder loads the same values."""
    import torch
    import transformers

    src: Path = request.getfixturevalue(fixture)
    out = tmp_path / "out"
    if command[-1].endswith(".bin"):
        out.mkdir()
        shutil.copy(src / "config.json", out / "config.json")
    process = run_subprocess(*[word.format(src=src, out=out) for word in command])
    assert process.returncode == 0, process.stderr
    state: dict[str, Any] = {}
    for file in sorted(out.glob("*.bin")):
        state |= torch.load(file, weights_only=True)
    model_class = getattr(transformers, model_name)
    reference = model_class.from_pretrained(src)
    expected = reference.state_dict()
    assert sorted(state) == sorted(expected)
    # One storage, as torch.save of the tied model writes it: no byte more on disk.
    tied = reference.all_tied_weights_keys
    assert tied and all(state[name].untyped_storage().data_ptr() == state[kept].untyped_storage().data_ptr()
                        for name, kept in tied.items() if not name.startswith(kept))
    fresh = model_class(reference.config)
    assert fresh.load_state_dict(state, strict=True).missing_keys == []
    loaded = model_class.from_pretrained(out)
    assert all(torch.equal(tensor, expected[name]) for name, tensor in loaded.state_dict().items())


def test_a_hub_repo_id_without_output_is_offered_a_folder_named_for_the_repo(hub_env: Path, tmp_path: Path) -> None:
    """Was: only Click's "Missing option '--output' / '-o'." for `convert org/model`. Now the line offers a folder in
    the current directory named for the repo (`tiny-bert-bin`), and pasted there it writes the repo's weights; typed
    again, the name taken, the next free one. A missing weight file's name (`pytorch_model.bin`) is no repo id and
    gets no such offer."""
    import torch
    from safetensors.torch import load_file

    line = _error_line(run_subprocess("convert", "weightdoctor-tests/tiny-bert", "--to", "bin", cwd=tmp_path))
    assert "convert writes a folder that is not there yet and never over the input" in line
    words = _suggested(line)
    assert words == ["convert", "weightdoctor-tests/tiny-bert", "-o", "tiny-bert-bin", "--to", "bin"]
    pasted = run_subprocess(*words, cwd=tmp_path)
    assert pasted.returncode == 0, pasted.stderr
    snapshot = next(hub_env.glob("models--weightdoctor-tests--tiny-bert/snapshots/*"))
    original = load_file(snapshot / "model.safetensors")
    back = torch.load(tmp_path / "tiny-bert-bin" / "pytorch_model.bin", weights_only=True)
    assert all(torch.equal(back[name], tensor) for name, tensor in original.items())
    again = _suggested(_error_line(run_subprocess("convert", "weightdoctor-tests/tiny-bert@main", "--to", "bin",
                                                  cwd=tmp_path)))
    assert again == ["convert", "weightdoctor-tests/tiny-bert@main", "-o", "tiny-bert-bin-2", "--to", "bin"]
    shard = _suggested(_error_line(run_subprocess("shard", "--max", "1MB", "weightdoctor-tests/tiny-bert",
                                                  cwd=tmp_path)))
    assert shard == ["shard", "--max", "1MB", "weightdoctor-tests/tiny-bert", "-o", "tiny-bert-sharded"]
    missing = _error_line(run_subprocess("convert", "pytorch_model.bin", cwd=tmp_path))
    assert "for example" not in missing


_VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2, image_size=30,
               patch_size=15)
_QFORMER = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                encoder_hidden_size=32)
_OPT = dict(model_type="opt", vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, ffn_dim=37,
            word_embed_proj_dim=32)
_T5_TEXT = dict(model_type="t5", vocab_size=99, d_model=32, d_ff=37, d_kv=16, num_layers=1, num_heads=2)
_LLAMA = dict(model_type="llama", vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
              num_attention_heads=2, num_key_value_heads=2)


def _composite(kind: str) -> Any:
    """A tiny composite config: BLIP-2 over OPT or T5 (a T5-based composite), LLaVA over CLIP and Llama."""
    from transformers import Blip2Config, LlavaConfig

    if kind == "llava":
        config = LlavaConfig(vision_config={**_VISION, "model_type": "clip_vision_model"}, text_config=_LLAMA)
        config.architectures = ["LlavaForConditionalGeneration"]
    else:
        config = Blip2Config(vision_config=_VISION, qformer_config=_QFORMER,
                             text_config=_OPT if kind == "blip2-opt" else _T5_TEXT, num_query_tokens=4)
        config.architectures = ["Blip2ForConditionalGeneration"]
    return config


@pytest.mark.parametrize(("kind", "expected"), [
    ("blip2-opt", (("qformer", "query_tokens"), ())),
    ("blip2-t5", (("qformer", "query_tokens", "wo"), ())),
    ("llava", ((), ())),
])
def test_the_fp32_modules_of_a_composite_model_are_read_from_text_as_built(kind: str,
                                                                           expected: tuple[Any, ...]) -> None:
    """Was: None for any config with sub-configs (BLIP-2, LLaVA, a BLIP-2 over T5), and the fp16 convert imported
    transformers and built the model to learn its lists. Now the text answers, with the lists of the model built:
    the class's own and those of the PreTrainedModels it builds, of its files and of the sub-configs' types."""
    import torch
    import transformers

    from weightdoctor.modeling_source import fp32_modules_plan

    config = _composite(kind)
    with torch.device("meta"):
        model = getattr(transformers, config.architectures[0])(config)
    built = (tuple(sorted(model._keep_in_fp32_modules or ())), tuple(sorted(model._keep_in_fp32_modules_strict or ())))
    assert built == expected
    assert fp32_modules_plan(config.to_dict()) == expected


def test_a_fp16_convert_of_blip2_over_t5_names_its_fp32_modules_without_importing_transformers(
        tmp_path: Path) -> None:
    """The warning for what from_pretrained keeps in float32 names BLIP-2's qformer and T5's wo, from the text."""
    import os
    import sys

    import torch
    import transformers

    from tests.helpers import REPO_ROOT

    torch.manual_seed(0)
    source = tmp_path / "blip2-t5"
    transformers.Blip2ForConditionalGeneration(_composite("blip2-t5")).save_pretrained(source)
    process = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "weightdoctor", "convert", str(source), "-o",
         str(tmp_path / "fp16"), "--dtype", "fp16", "--allow-overflow", "--json"],
        capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert process.returncode == 0, process.stderr
    imported = [line.rsplit("|", 1)[1].strip() for line in process.stderr.splitlines()
                if line.startswith("import time:")]
    assert not [name for name in imported if name.startswith("transformers")]
    import json
    import re

    from safetensors import safe_open

    warning = next(w for w in json.loads(process.stdout)["warnings"] if "keeps in float32" in w)
    assert "from_pretrained(dtype=torch.float16) keeps in float32 (its class's _keep_in_fp32_modules" in warning
    offered = re.compile(shlex.split(warning.split("--keep-fp32 ", 1)[1])[0])
    with safe_open(str(source / "model.safetensors"), "pt") as handle:
        names = list(handle.keys())
    kept = {name for name in names if name.startswith(("qformer.", "query_tokens")) or ".wo." in name}
    assert len(kept) > 3 and {name for name in names if offered.search(name)} == kept


def test_a_cast_to_the_dtype_the_model_has_already_says_it_casts_nothing(gpt2_folder: Path, tmp_path: Path) -> None:
    """Was: `convert fp16-model -o out --dtype fp16` (and shard) wrote a copy and said nothing, as if it had cast.
    Now a warning says no tensor is cast and why; the tensors are written as they are."""
    import torch

    half = tmp_path / "gpt2-fp16"
    assert run_subprocess("convert", gpt2_folder, "-o", half, "--dtype", "fp16").returncode == 0
    for command in (["convert", half, "-o", tmp_path / "again", "--dtype", "float16"],
                    ["shard", half, "-o", tmp_path / "shards", "--dtype", "fp16", "--max", "40KB"]):
        process = run_subprocess(*command)
        assert process.returncode == 0, process.stderr
        assert ("warning: --dtype float16 casts no tensor: the floating ones are float16 already, and the output "
                "holds them as the source does") in process.stderr
    written = _tensors(tmp_path / "again" / "model.safetensors")
    source = _tensors(half / "model.safetensors")
    assert sorted(written) == sorted(source) and all(torch.equal(written[k], source[k]) for k in source)
    kept = run_subprocess("convert", gpt2_folder, "-o", tmp_path / "kept", "--dtype", "fp16", "--keep-fp32", ".")
    assert "--dtype float16 casts no tensor: --keep-fp32 matches every floating one" in kept.stderr


def _tensors(path: Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    return load_file(path) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)


def test_to_bin_with_a_safetensors_name_offers_both_ways_out(gpt2_folder: Path, tmp_path: Path) -> None:
    """Was: "--to bin but the output name ends in .safetensors" and nothing of what to type. Now the line names the
    output each way writes, and the name it offers writes a .bin."""
    typed = tmp_path / "gpt2.safetensors"
    line = _error_line(run_subprocess("convert", gpt2_folder / "model.safetensors", "--to", "bin", "-o", typed))
    offered = tmp_path / "gpt2.bin"
    assert line == (f"error: --to bin but the output name ends in .safetensors: name it {offered} to write bin, or "
                    "leave out --to to write safetensors, as the name says")
    assert run_subprocess("convert", gpt2_folder / "model.safetensors", "--to", "bin", "-o", offered).returncode == 0
    assert "lm_head.weight" in _tensors(offered)


@pytest.mark.parametrize("command", [["convert"], ["shard", "--max", "40KB"]])
def test_an_output_inside_the_hub_cache_is_warned_of(gpt2_folder: Path, tmp_path: Path, command: list[str]) -> None:
    """Was: written without a word into a repo's snapshot folder, where from_pretrained('org/name') then reads the
    file as the repo's own. Now a warning names the repo and says to write it outside the cache."""
    snapshot = tmp_path / "hub" / "models--someorg--other-model" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    process = run_subprocess(command[0], gpt2_folder, "-o", snapshot / "converted", *command[1:])
    assert process.returncode == 0, process.stderr
    assert (f"warning: {snapshot / 'converted'} is inside the Hugging Face Hub cache "
            f"({snapshot.parent.parent}): from_pretrained('someorg/other-model') would read what is written there as "
            "the repo's own files") in process.stderr
    elsewhere = run_subprocess(command[0], gpt2_folder, "-o", tmp_path / "out", *command[1:])
    assert elsewhere.returncode == 0 and "Hub cache" not in elsewhere.stderr


@pytest.mark.parametrize(("typed", "offered"), [
    (["check-dtype", "{src}", "fp16"], ["check-dtype", "{src}", "--target", "fp16"]),
    (["check-dtype", "--json", "--", "{src}", "bf16"], ["check-dtype", "--json", "--target", "bf16", "--", "{src}"]),
    (["convert", "{src}", "-o", "{out}", "half"], ["convert", "{src}", "-o", "{out}", "--dtype", "half"]),
])
def test_a_dtype_typed_as_an_argument_is_offered_with_its_option(gpt2_folder: Path, tmp_path: Path,
                                                                 typed: list[str], offered: list[str]) -> None:
    """Was: "Got unexpected extra argument(s) (fp16)". Now the line gives the command with --target / --dtype before
    the dtype, and pasted it runs."""
    fill = {"src": str(gpt2_folder), "out": str(tmp_path / "out")}
    line = _error_line(run_subprocess(*[word.format(**fill) for word in typed]))
    assert "takes a dtype as" in line
    tail = line.rsplit(": python -m weightdoctor ", 1)[1]
    words = shlex.split(tail[:tail.rindex(" (see ")])
    assert words == [word.format(**fill) for word in offered]
    assert run_subprocess(*words).returncode == 0


def test_the_ties_of_a_gpt2_are_read_from_text_without_importing_transformers(gpt2_folder: Path,
                                                                              tmp_path: Path) -> None:
    """Reading the ties by building GPT-2 on the meta device imported torch and transformers: a 0.8 s conversion took
    11 s. Its modeling code declares them as whole names (`lm_head.weight` from `transformer.wte.weight`), and
    config.json says `tie_word_embeddings`: the .bin gets the name, nothing of transformers is imported."""
    import os
    import sys

    from tests.helpers import REPO_ROOT

    out = tmp_path / "gpt2.bin"
    process = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "weightdoctor", "convert", str(gpt2_folder / "model.safetensors"),
         "-o", str(out)], capture_output=True, text=True, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert process.returncode == 0, process.stderr
    imported = [line.rsplit("|", 1)[1].strip() for line in process.stderr.splitlines()
                if line.startswith("import time:")]
    assert not [name for name in imported if name.startswith("transformers")]
    state = _tensors(out)
    assert state["lm_head.weight"].untyped_storage().data_ptr() == \
        state["transformer.wte.weight"].untyped_storage().data_ptr()


@pytest.mark.parametrize(("command", "option"), [("check-dtype", "-o"), ("inspect", "--output"),
                                                 ("diff-keys", "-o")])
def test_an_output_file_asked_of_a_report_command_says_how_to_keep_the_report(gpt2_folder: Path, command: str,
                                                                              option: str) -> None:
    """Was: "No such option: -o; -o is an option of plan-devices, convert and shard", which points at commands that
    write weights or a device map. Now the line says the command prints its report and how to put it in a file."""
    sources = [gpt2_folder] * (2 if command == "diff-keys" else 1)
    line = _error_line(run_subprocess(command, *sources, option, "report.json"))
    assert line.endswith(f"No such option: {option}; {command} writes no file: it prints its report, and --json > "
                         "report.json puts the JSON one in a file (-o is convert's and shard's, for the weights they "
                         f"write) (see python -m weightdoctor {command} --help)"), line
