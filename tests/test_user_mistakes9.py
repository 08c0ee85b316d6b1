"""Round 9 of the common mistakes users make, and the one line weightdoctor answers each with.

Covers: a misspelled --model-class (the close name is suggested); a tokenizer's, a Trainer's or an adapter's JSON
given as the source (what it is, and the weights beside it); a Hub repo whose cache holds its config only (the
weights were never downloaded: the `hf download` that fetches them); several sizes in one --gpu (`24GB,24GB`,
`2x24GB`: repeat the option); convert/shard -o at an existing folder (what it holds, before --force); a mistyped
local path, a Windows path, a mistyped repo id (the close name that exists); a local index with some shards missing
(how many); a quantized type (int8, int4) given to check-dtype --target or convert --dtype; a mistyped choice
(`--fail-on warning`, `--strategy balanced-low-0`: the one meant); a config of a type transformers does not know
(custom code or too new; plan-devices --model-class: the config to give); a shell glob given as a regular
expression (the regex meant); a server's error reply or a Hub web page (/blob/) saved as the weights; a list
holding a state dict (the --key that reads it); one file into a folder that does not exist (mkdir -p); shard -o
merged.safetensors (a folder is written); --config given the weights file; an empty folder; a download left under a
longer name (.crdownload, .part, .1); a --strip-prefix that matches nothing (how the names start); `-` for stdin;
--key help (a number picks a list item); a config.json given as the source (its folder and weights).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, copy_example, run_cli, run_subprocess

EXAMPLE = REPO_ROOT / "fixtures" / "example"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return copy_example(tmp_path)


@pytest.mark.parametrize(("typed", "meant"), [
    ("BertForSequenceClasification", "'BertForSequenceClassification'"),
    ("bertforsequenceclassification", "'BertForSequenceClassification'"),
    ("transformers.BertModel", "'BertModel'"),
])
def test_misspelled_model_class_names_the_close_one(model: Path, typed: str, meant: str) -> None:
    result = run_cli("diff-keys", model, "--model-class", typed)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line
    assert f"no model class {typed!r}; did you mean {meant}" in line


@pytest.mark.parametrize(("name", "kind"), [
    ("tokenizer.json", "a tokenizer file"),
    ("tokenizer_config.json", "a tokenizer file"),
    ("trainer_state.json", "a Trainer's training log"),
])
def test_a_json_beside_the_weights_points_at_them(model: Path, name: str, kind: str) -> None:
    (model / name).write_text('{"version": "1.0"}')
    result = run_cli("inspect", model / name)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {model / name}: JSON file is neither an index (weight_map) nor a model config ({kind}); "
        "point at the weights beside it (model.safetensors) or at the folder that holds them")


def test_a_lone_json_says_what_to_give(tmp_path: Path) -> None:
    (tmp_path / "notes.json").write_text('{"lr": 0.1}')
    result = run_cli("inspect", tmp_path / "notes.json")
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(
        "nor a model config; give a weights file (.safetensors, .bin, .pt) or the model folder")


def test_a_cached_repo_with_its_config_only_says_the_weights_were_never_downloaded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fixtures.hub_cache import commit_of, write_snapshot

    cache = tmp_path / "hub"
    write_snapshot(cache, "acme/tiny-bert", commit_of("cfg"), {"config.json": (EXAMPLE / "config.json").read_bytes()})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for command in ("inspect", "check-dtype"):
        result = run_cli(command, "acme/tiny-bert")
        assert result.exit_code == 2
        line = result.stderr.strip()
        assert "\n" not in line
        assert line.startswith("error: acme/tiny-bert: folder holds no weight file")
        assert ("; the snapshot holds config.json only: the weights were never downloaded; fetch them with "
                "`hf download acme/tiny-bert`") in line


@pytest.mark.parametrize(("typed", "repeated"), [
    ("24GB,24GB", "holds 2 sizes: --gpu takes one, repeat it for each (--gpu 24GB --gpu 24GB)"),
    ("2x24GiB", "holds 2 sizes: --gpu takes one, repeat it for each (--gpu 24GiB --gpu 24GiB)"),
])
def test_several_gpus_in_one_gpu_option_say_to_repeat_it(model: Path, typed: str, repeated: str) -> None:
    result = run_cli("plan-devices", model, "--gpu", typed)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: --gpu {typed!r} {repeated}"


def test_an_existing_output_folder_shows_what_it_holds_before_force(model: Path, tmp_path: Path) -> None:
    other = tmp_path / "gpt2-finetuned"
    other.mkdir()
    for name in ("config.json", "model.safetensors", "optimizer.pt"):
        (other / name).write_bytes(b"{}")
    for command in (("convert", model, "-o", other), ("shard", model, "-o", other, "--max", "1MB")):
        result = run_cli(*command)
        assert result.exit_code == 2
        assert result.stderr.strip() == (
            f"error: {other}: output exists; pass --force to replace it, or choose a new path: it is a folder "
            "holding config.json, model.safetensors, optimizer.pt")
        assert (other / "model.safetensors").read_bytes() == b"{}"


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache, offline, and the working folder `tmp_path/work` holding models/bert-base-uncased/."""
    cache = tmp_path / "hub"
    cache.mkdir()
    work = tmp_path / "work"
    shutil.copytree(EXAMPLE, work / "models" / "bert-base-uncased")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(work)
    return cache


@pytest.mark.parametrize(("typed", "meant"), [
    ("./models/bert-base", "./models/bert-base-uncased"),
    ("./models/bert-base-uncsed", "./models/bert-base-uncased"),
    ("models\\bert-base-uncased", "models/bert-base-uncased? (\\ does not separate folders here, / does)"),
])
def test_a_mistyped_local_path_names_the_close_one(offline_cache: Path, typed: str, meant: str) -> None:
    result = run_cli("inspect", typed)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {typed}: no such file or directory; did you mean {meant}" + (
        "" if meant.endswith(")") else "?")


def test_a_windows_drive_path_is_named_as_one(offline_cache: Path) -> None:
    result = run_cli("inspect", "C:\\models\\bert")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: C:\\models\\bert: no such file or directory; a Windows path: here "
                                     "folders are separated by / (under WSL, C:\\ is /mnt/c/)")


def test_a_mistyped_path_that_reads_as_a_repo_id_names_the_local_folder(offline_cache: Path) -> None:
    result = run_cli("inspect", "models/bert-base")
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(
        "(HF_HUB_OFFLINE is set); did you mean 'models/bert-base-uncased'?")


def test_a_mistyped_repo_id_names_the_cached_one(offline_cache: Path) -> None:
    from fixtures.hub_cache import commit_of, write_snapshot

    write_snapshot(offline_cache, "acme/tiny-bert", commit_of("full"),
                   {"config.json": (EXAMPLE / "config.json").read_bytes(),
                    "model.safetensors": (EXAMPLE / "model.safetensors").read_bytes()})
    result = run_cli("diff-keys", "acme/tiny-brt", "acme/tiny-bert")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: 'acme/tiny-brt' is not a local path and is not in the Hugging Face cache at {offline_cache} "
        "(HF_HUB_OFFLINE is set); did you mean 'acme/tiny-bert'?")


def test_a_local_index_with_shards_missing_says_how_many(model: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(model / "model.safetensors")
    names = sorted(tensors)
    folder = tmp_path / "half"
    folder.mkdir()
    shard_of = {name: f"model-0000{1 + i * 3 // len(names)}-of-00003.safetensors" for i, name in enumerate(names)}
    save_file({n: tensors[n] for n in names if shard_of[n].startswith("model-00001")},
              str(folder / "model-00001-of-00003.safetensors"))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": shard_of}))
    result = run_cli("inspect", folder)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {folder}/model.safetensors.index.json: shard 'model-00002-of-00003.safetensors' named by the index "
        "does not exist (2 of its 3 shards are missing: 'model-00002-of-00003.safetensors', "
        "'model-00003-of-00003.safetensors'; a download or copy that stopped between shards? fetch or copy them "
        "beside the index)")


@pytest.mark.parametrize(("command", "said"), [
    (("check-dtype", "{m}", "--target", "int8"),
     "; int8 is quantization (a scale per block or row), not a cast: check-dtype simulates casts only; "),
    (("convert", "{m}", "-o", "{m}-int4", "--dtype", "int4"),
     "; int4 is quantization (a scale per block or row), not a cast: convert and shard cast floating tensors only; "),
])
def test_a_quantized_dtype_asked_of_a_cast_says_it_is_quantization(model: Path, command: tuple[str, ...],
                                                                    said: str) -> None:
    result = run_cli(*(part.format(m=model) for part in command))
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(said + "plan-devices --dtype int8 or int4 gives the memory of a "
                                          "bitsandbytes load")


@pytest.mark.parametrize(("command", "said"), [
    (("inspect", "{m}", "--fail-on", "warning"),
     "--fail-on 'warning': choose one of info, warn, error; did you mean 'warn'?"),
    (("diff-keys", "{m}", "{m}", "--fail-on", "warning"),
     "--fail-on 'warning': choose one of info, warn, error; did you mean 'warn'?"),
    (("check-dtype", "{m}", "--fail-on", "unsave"), "--fail-on 'unsave': choose one of info, warn, error, "
                                                    "unsafe, lossy; did you mean 'unsafe'?"),
    (("plan-devices", "{m}", "--gpu", "1GB", "--fail-on", "offloaded"),
     "--fail-on 'offloaded': choose one of info, warn, error, offload, no-fit; did you mean 'offload'?"),
    (("plan-devices", "{m}", "--gpu", "1GB", "--strategy", "balanced-low-0"),
     "--strategy 'balanced-low-0': choose one of auto, balanced, balanced_low_0, sequential; did you mean "
     "'balanced_low_0'?"),
])
def test_a_mistyped_choice_names_the_one_meant(model: Path, command: tuple[str, ...], said: str) -> None:
    result = run_cli(*(part.format(m=model) for part in command))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {said}"


def test_the_fast_diff_keys_path_names_the_choice_meant_too(model: Path) -> None:
    proc = run_subprocess("diff-keys", model, model, "--fail-on", "warning")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --fail-on 'warning': choose one of info, warn, error; did you mean 'warn'?"


def _custom_type(model: Path, auto_map: bool) -> Path:
    """The model folder with its config turned into one of a type transformers does not know."""
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="acme_fancy", architectures=["AcmeFancyModel"])
    if auto_map:
        config["auto_map"] = {"AutoModel": "modeling_acme.AcmeFancyModel"}
    (model / "config.json").write_text(json.dumps(config))
    return model


@pytest.mark.parametrize(("auto_map", "why"), [
    (True, "its config names code of its own (auto_map, trust_remote_code), which weightdoctor never runs"),
    (False, "a model newer than transformers {v}? upgrade transformers"),
])
def test_a_config_of_an_unknown_type_says_why_it_is_unknown(model: Path, auto_map: bool, why: str) -> None:
    # AutoModel picks its class by the config's type, so it cannot build one of a type transformers lacks (a named
    # class such as BertModel is built from its own config class instead).
    import transformers

    result = run_cli("diff-keys", _custom_type(model, auto_map), "--model-class", "AutoModel")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {model}: this transformers does not know model_type 'acme_fancy'; "
        f"{why.format(v=transformers.__version__)}")


def test_plan_devices_model_class_on_an_unknown_type_says_which_config_to_give(model: Path) -> None:
    import transformers

    result = run_cli("plan-devices", _custom_type(model, True), "--model-class", "BertModel", "--gpu", "1GB")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {model}: transformers {transformers.__version__} does not know model_type 'acme_fancy'; "
        "--model-class BertModel is built from the source's config: give a config.json of BertModel's model type "
        "as SOURCE")


@pytest.mark.parametrize(("command", "said"), [
    (("convert", "{m}", "-o", "{m}-bf16", "--dtype", "bf16", "--keep-fp32", "*LayerNorm*"),
     "--keep-fp32 '*LayerNorm*': bad regular expression (nothing to repeat at position 0); a regular expression, "
     "not a shell glob: write 'LayerNorm'"),
    (("inspect", "{m}", "--filter", "*.bias"),
     "--filter '*.bias': bad regular expression (nothing to repeat at position 0); a regular expression, not a "
     "shell glob: write '\\.bias$'"),
    (("diff-keys", "{m}", "{m}", "--rename", "*attention*=attn"),
     "--rename '*attention*': bad regular expression (nothing to repeat at position 0); a regular expression, not a "
     "shell glob: write 'attention'"),
])
def test_a_shell_glob_given_as_a_regex_names_the_regex_meant(model: Path, command: tuple[str, ...],
                                                              said: str) -> None:
    result = run_cli(*(part.format(m=model) for part in command))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {said}"


@pytest.mark.parametrize(("name", "body"), [
    ("model.safetensors", '{"error":"Repository not found"}'),
    ("pytorch_model.bin", "Entry not found"),
])
def test_a_servers_error_reply_saved_as_the_weights_is_named(tmp_path: Path, name: str, body: str) -> None:
    (tmp_path / name).write_text(body)
    result = run_cli("inspect", tmp_path / name)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.startswith(f"error: {tmp_path / name}: not a safetensors file")
    assert line.endswith(f"; it is a short text file that reads {body!r} (a server's error reply saved in place of "
                         "the file? download it again)")


def test_a_protocol_0_pickle_is_still_read_as_a_pickle(tmp_path: Path) -> None:
    import pickle

    import numpy as np

    with open(tmp_path / "weights.pkl", "wb") as handle:
        pickle.dump({"w": np.zeros(2, dtype=np.float32)}, handle, protocol=0)
    result = run_cli("inspect", tmp_path / "weights.pkl", "--json")
    assert "short text file" not in result.stderr
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["num_params"] == 2


def test_a_hub_web_page_saved_as_the_weights_says_resolve_not_blob(tmp_path: Path) -> None:
    page = tmp_path / "model.safetensors"
    page.write_text('<!DOCTYPE html>\n<html class=""><head><title>model.safetensors · acme/tiny at main</title>')
    result = run_cli("inspect", page)
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(
        f"error: {page}: this is an HTML page, not weights (a failed download? a Hub URL with /blob/ fetches the "
        "file's web page, one with /resolve/ the file itself; or use hf download)")


def test_a_list_holding_a_state_dict_says_which_key_reads_it(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "ensemble.pt"
    torch.save([{"note": "fold 0"}, {"linear.weight": torch.zeros(2, 2)}], path)
    result = run_cli("inspect", path)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {path}: no state dict (a mapping of names to tensors) found; the file holds a list, 2 items; item 1 "
        "is a state dict: pick it with --key 1")
    code = run_cli("inspect", path, "--key", "1", "--json")
    assert code.exit_code == 0 and json.loads(code.stdout)["num_params"] == 4


def test_one_file_into_a_folder_that_does_not_exist_says_how_to_make_it(model: Path, tmp_path: Path) -> None:
    result = run_cli("convert", model / "model.safetensors", "-o", f"{tmp_path / 'new'}/")
    assert result.exit_code == 2 and not (tmp_path / "new").exists()
    assert result.stderr.strip() == (
        f"error: {tmp_path / 'new' / 'model.safetensors'}: cannot write the output: the output folder does not exist "
        f"(create it first: mkdir -p {tmp_path / 'new'}); nothing was left behind")


def test_shard_to_a_file_name_says_it_writes_a_folder(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged.safetensors"
    result = run_cli("shard", model, "-o", out, "--max", "300KB")
    assert result.exit_code == 0 and out.is_dir()
    assert ("warning: merged.safetensors is written as a folder holding the shards, not as a single file: name it "
            f"{tmp_path / 'merged'}/ for a folder; for a single file (where no folder of that name is in the way), use "
            f"weightdoctor convert {model} -o {out}") in result.stderr


def test_config_given_the_weights_file_says_what_config_takes(model: Path) -> None:
    result = run_cli("diff-keys", model, "--model-class", "BertModel", "--config", model / "model.safetensors")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.startswith(f"error: {model / 'model.safetensors'}: not valid JSON (")
    assert line.endswith("(a weights file?): --config takes a config.json, the folder holding one, or a repo id")


def test_an_empty_folder_says_it_is_empty(tmp_path: Path) -> None:
    result = run_cli("inspect", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: {tmp_path}: folder holds no weight file (.safetensors, .bin, .pt, .pth, "
                                     ".ckpt); the folder is empty")


@pytest.mark.parametrize("left", ["model.safetensors.crdownload", "pytorch_model.bin.part", "model.safetensors.1"])
def test_a_download_left_under_a_longer_name_is_named(model: Path, left: str) -> None:
    (model / "model.safetensors").rename(model / left)
    result = run_cli("inspect", model)
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(
        f"; it holds {left}, named like weights with a suffix after it (a download still running, stopped, or "
        "saved twice?): finish the download, or rename the file to end in its weight suffix")


def test_a_strip_prefix_that_matches_nothing_shows_how_names_start(model: Path, tmp_path: Path) -> None:
    result = run_cli("convert", model, "-o", tmp_path / "out", "--strip-prefix", "module.")
    assert result.exit_code == 2 and not (tmp_path / "out").exists()
    assert result.stderr.strip() == (
        "error: the rename --rename '^module\\.=' changes no tensor name (from --strip-prefix, --rename or "
        "--add-prefix): nothing was written; the names start with 'bert.' (71), 'classifier.' (2)")


def test_a_dash_for_standard_input_says_a_file_is_needed(offline_cache: Path) -> None:
    result = run_cli("inspect", "-")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: -: no such file or directory; a checkpoint is not read from standard "
                                     "input: save it to a file and give its path")


@pytest.mark.parametrize("command", ["inspect", "diff-keys", "convert"])
def test_key_help_says_a_number_picks_a_list_item(command: str) -> None:
    proc = run_subprocess(command, "--help", env={"COLUMNS": "300"})
    assert proc.returncode == 0
    line = next(line for line in proc.stdout.splitlines() if "--key" in line)
    assert "(e.g. model.module; a number picks an item of a list: 0)." in line


def test_a_config_given_as_the_source_names_the_folder_and_its_weights(model: Path, tmp_path: Path) -> None:
    result = run_cli("check-dtype", model / "config.json")
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: {model / 'config.json'}: this is a model config, not weights; point at "
                                     f"the model folder ({model}, which holds model.safetensors)")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(model / "config.json", alone)
    result = run_cli("inspect", alone / "config.json")
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("this is a model config, not weights, and no weight file is beside it; "
                                          "point at the weights (plan-devices plans from a config alone)")
