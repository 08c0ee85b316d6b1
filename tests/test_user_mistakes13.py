"""Round 13 of the common mistakes users make: a new user's first hour, README and `--help` only, five real problems.

Covers, each with the command the message prints run as printed: from_pretrained's "Some weights of
BertForSequenceClassification were not initialized" checked by `diff-keys ckpt BertForSequenceClassification` (the
class looked up as a repo id: "not in the Hugging Face cache"); `plan-devices --max-memory` in the spellings people
paste from from_pretrained (`0=20GiB`, `cuda:0=20GB`, `20GiB,20GiB`, `{"0": "20GiB"}`, `cpu=64GB`: "No such
option", nothing more) and the same given to --gpu / --cpu ("'0=20' is not a number"); `shard --max-shard-size`
(save_pretrained's name); `weightdoctor scan model.pt` / `info` / `plan` (another tool's command, "No such command")
and `weightdoctor model.pt` (no command); `convert --dtype torch.bfloat16` and `plan-devices --dtype torch.float16`
refused where check-dtype --target takes it; convert --dtype saying its output was "sha256 equal to the source" (a
cast's bytes are not the source's).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.helpers import run_cli, run_subprocess


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded tiny BertForPreTraining saved by save_pretrained, in a folder whose name holds a space."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    folder = tmp_path_factory.mktemp("ux13") / "my bert"
    transformers.BertForPreTraining(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llama_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama config.json alone: plan-devices plans from it."""
    folder = tmp_path_factory.mktemp("ux13-llama")
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "torch_dtype": "float16"}))
    return folder / "config.json"


def _printed_command(line: str, start: str) -> list[str]:
    """The words of the command a one-line message prints, from `start` (a command name) to the end or to the
    trailing "(see ... --help)"."""
    at = line.rindex(f" {start} ") + 1
    return shlex.split(re.sub(r" \(see [^()]*--help\)$", "", line[at:]))


def test_a_class_given_as_b_says_to_give_it_as_model_class(pretrained: Path) -> None:
    """`diff-keys ckpt BertForSequenceClassification` looked the class up as a Hub repo id ("not a local path and
    not in the Hugging Face cache ... the Hub is unreachable"): the class goes to --model-class."""
    for result in (run_cli("diff-keys", pretrained, "BertForSequenceClassification"),
                   run_subprocess("diff-keys", pretrained, "BertForSequenceClassification")):  # the fast path
        line = result.stderr.strip()
        assert getattr(result, "returncode", getattr(result, "exit_code", None)) == 2
        assert "\n" not in line and "Hugging Face cache" not in line
        assert line.startswith("error: B 'BertForSequenceClassification' is a transformers class, not a checkpoint")
    printed = _printed_command(line, "diff-keys")
    assert printed == ["diff-keys", str(pretrained), "--model-class", "BertForSequenceClassification"]
    rerun = run_cli(*printed, "--json")
    assert rerun.exit_code == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert {item["name"] for item in report["missing"]} == {"classifier.weight", "classifier.bias"}
    assert {item["reason"] for item in report["missing"]} == {"task-head"}


def test_a_repo_id_or_a_folder_named_like_a_class_is_still_read_as_b(pretrained: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    shutil.copytree(pretrained, tmp_path / "BertModel")
    monkeypatch.chdir(tmp_path)
    result = run_cli("diff-keys", pretrained, "BertModel", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["missing"] == []


@pytest.mark.parametrize(("typed", "meant"), [
    (["0=20GiB"], ["--gpu", "20GiB"]),
    (["cuda:0=20GB"], ["--gpu", "20GB"]),
    (["20GiB,20GiB"], ["--gpu", "20GiB", "--gpu", "20GiB"]),
    (['{"0": "20GiB", "1": "20GiB"}'], ["--gpu", "20GiB", "--gpu", "20GiB"]),
    (["{0: '20GiB', 'cpu': '64GB'}"], ["--gpu", "20GiB", "--cpu", "64GB"]),
    (["cpu=64GB"], ["--cpu", "64GB"]),
    (["0=20GiB", "1=20GiB", "cpu=64GB"], ["--gpu", "20GiB", "--gpu", "20GiB", "--cpu", "64GB"]),
])
def test_max_memory_names_the_gpu_and_cpu_options_that_say_it(llama_config: Path, typed: list[str],
                                                               meant: list[str]) -> None:
    """`--max-memory`, from_pretrained's max_memory pasted: "No such option: --max-memory" and no word of --gpu."""
    given = [word for value in typed for word in ("--max-memory", value)]
    result = run_cli("plan-devices", llama_config, *given)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line
    assert "No such option: --max-memory; plan-devices takes max_memory as --gpu SIZE once per GPU" in line
    printed = shlex.split(re.sub(r" \(see [^()]*--help\)$", "", line.split(" for RAM: ", 1)[1]))
    assert printed == meant
    rerun = run_cli("plan-devices", llama_config, *printed, "--json")
    assert rerun.exit_code == 0, rerun.stderr
    sizes = {"20GiB": 20 * 2**30, "20GB": 20 * 10**9, "64GB": 64 * 10**9}
    expected = [sizes[size] for option, size in zip(meant[::2], meant[1::2], strict=True) if option == "--gpu"]
    devices = json.loads(rerun.stdout)["devices"]
    assert [d["capacity_bytes"] for d in devices if str(d["device"]).startswith("cuda")] == expected


def test_max_memory_in_the_equals_form_and_of_no_known_spelling(llama_config: Path) -> None:
    joined = run_cli("plan-devices", llama_config, "--max_memory=0=20GiB,1=20GiB")
    assert "plan-devices takes max_memory as --gpu SIZE once per GPU, in device order, and --cpu SIZE for RAM: " \
           "--gpu 20GiB --gpu 20GiB (see" in joined.stderr
    unknown = run_cli("plan-devices", llama_config, "--max-memory", "lots")
    assert "--cpu SIZE for RAM (e.g. --gpu 20GiB --gpu 20GiB --cpu 64GB) (see" in unknown.stderr


@pytest.mark.parametrize(("option", "typed", "meant"), [
    ("--gpu", "0=20GiB", ["--gpu", "20GiB"]),
    ("--gpu", "cuda:0=20GB", ["--gpu", "20GB"]),
    ("--gpu", '{"0": "20GiB", "1": "20GiB"}', ["--gpu", "20GiB", "--gpu", "20GiB"]),
    ("--cpu", "cpu=64GB", ["--cpu", "64GB"]),
])
def test_a_max_memory_entry_given_to_gpu_or_cpu_names_the_options(llama_config: Path, option: str, typed: str,
                                                                  meant: list[str]) -> None:
    """Was "cannot parse size '0=20GiB': '0=20' is not a number"."""
    result = run_cli("plan-devices", llama_config, option, typed, *(["--gpu", "20GiB"] if option == "--cpu" else []))
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.startswith(f"error: {option} {typed!r} is written as a max_memory entry (device=size)")
    assert "not a number" not in line
    printed = shlex.split(line.split(" for RAM: ", 1)[1])
    assert printed == meant
    rerun = run_cli("plan-devices", llama_config, *printed, *(["--gpu", "20GiB"] if option == "--cpu" else []),
                    "--json")
    assert rerun.exit_code == 0, rerun.stderr


def test_shard_max_shard_size_says_shard_calls_it_max(pretrained: Path, tmp_path: Path) -> None:
    """save_pretrained's max_shard_size: "No such option: --max-shard-size" and no guess."""
    for typed in ("--max-shard-size", "--max_shard_size"):
        result = run_cli("shard", pretrained, "-o", tmp_path / "out", typed, "50KB")
        assert result.exit_code == 2
        assert f"No such option: {typed}; shard calls it --max (see " in result.stderr
    rerun = run_cli("shard", pretrained, "-o", tmp_path / "out", "--max", "50KB", "--json")
    assert rerun.exit_code == 0, rerun.stderr
    assert len(json.loads(rerun.stdout)["plan"]["shards"]) > 1


@pytest.mark.parametrize(("typed", "command", "said"), [
    ("scan", "inspect", "inspect scans a pickle for code before it reads anything"),
    ("security", "inspect", "inspect scans a pickle for code before it reads anything"),
    ("info", "inspect", "inspect shows what a checkpoint holds"),
    ("plan", "plan-devices", "plan-devices plans where each module lands"),
])
def test_another_tools_command_names_the_command_that_answers(pretrained: Path, typed: str, command: str,
                                                               said: str) -> None:
    """`weightdoctor scan model.pt` (picklescan's word, for "is this file safe?") said "No such command 'scan'."."""
    torch_file = pretrained.parent / "model.pt"
    if not torch_file.exists():
        import torch
        from safetensors.torch import load_file

        torch.save(load_file(pretrained / "model.safetensors"), torch_file)
    extra = ["--gpu", "1GB"] if command == "plan-devices" else []
    source = pretrained if command == "plan-devices" else torch_file
    result = run_cli(typed, source, *extra)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert f"No such command {typed!r}; {said}" in line
    printed = _printed_command(line, command)
    assert printed == [command, str(source), *extra]
    rerun = run_cli(*printed)
    assert rerun.exit_code == 0, rerun.stderr
    if typed == "scan":
        assert re.search(r"security\s+safe \(static pickle scan", rerun.stdout)


def test_a_checkpoint_given_with_no_command_says_to_name_one(pretrained: Path) -> None:
    result = run_cli(pretrained)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert f"{shlex.quote(str(pretrained))!r} is a path, not a command" in line or \
        f"{str(pretrained)!r} is a path, not a command" in line
    assert "(commands: inspect, diff-keys, plan-devices, convert, shard, check-dtype)" in line
    printed = shlex.split(line.split("e.g. ", 1)[1].split(" (commands:")[0])
    assert printed[-2:] == ["inspect", str(pretrained)]
    assert run_cli(*printed[-2:]).exit_code == 0
    assert "Did you mean" in run_cli("dtype", pretrained).stderr  # Click's own guess is kept for a close name


@pytest.mark.parametrize("typed", ["torch.bfloat16", "torch.float16"])
def test_torch_dtype_names_are_taken_by_convert_shard_and_plan_devices(pretrained: Path, tmp_path: Path,
                                                                       llama_config: Path, typed: str) -> None:
    """check-dtype --target took `torch.bfloat16`; convert, shard and plan-devices refused it as unknown."""
    stored = {"torch.bfloat16": "bfloat16", "torch.float16": "float16"}[typed]
    converted = run_cli("convert", pretrained, "-o", tmp_path / "c", "--dtype", typed, "--json")
    assert converted.exit_code == 0, converted.stderr
    sharded = run_cli("shard", pretrained, "-o", tmp_path / "s", "--max", "100KB", "--dtype", typed, "--json")
    assert sharded.exit_code == 0, sharded.stderr
    for out in ("c", "s"):
        inspected = run_cli("inspect", tmp_path / out, "--json")
        assert set(json.loads(inspected.stdout)["dtypes"]) == {stored}
    planned = run_cli("plan-devices", llama_config, "--gpu", "1GB", "--dtype", typed, "--json")
    assert planned.exit_code == 0, planned.stderr
    assert json.loads(planned.stdout)["dtype"] == {"torch.bfloat16": "bf16", "torch.float16": "fp16"}[typed]


def test_torch_int8_is_still_no_bitsandbytes_load(llama_config: Path) -> None:
    result = run_cli("plan-devices", llama_config, "--gpu", "1GB", "--dtype", "torch.int8")
    assert result.exit_code == 2
    assert "unknown dtype 'torch.int8'" in result.stderr


def test_a_cast_is_not_said_to_be_equal_to_the_source(pretrained: Path, tmp_path: Path) -> None:
    """convert --dtype bf16 said "verified ... sha256 equal to the source": the bytes checked are the cast ones."""
    cast = run_cli("convert", pretrained, "-o", tmp_path / "bf16", "--dtype", "bf16")
    assert cast.exit_code == 0, cast.stderr
    assert re.search(r"verified\s+\d+ tensors re-read, sha256 equal to the cast bytes written", cast.stdout)
    assert "equal to the source" not in cast.stdout
    copied = run_cli("shard", pretrained, "-o", tmp_path / "same", "--max", "100KB")
    assert copied.exit_code == 0, copied.stderr
    assert "equal to the source" in copied.stdout
