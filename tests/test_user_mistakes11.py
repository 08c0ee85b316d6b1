"""Round 11 of the common mistakes users make: whole workflows, one command's output pasted into the next.

Covers: diff-keys' "re-check with" line pasted as given (a path with a space was left unquoted, and --config,
--key and --revision were dropped, so the pasted command failed or read other files); check-dtype on the file its
own suggested `convert --keep-fp32` wrote (it suggested the same convert again, to '<name>-fp16-fp16'); convert's
overflow refusal and plan-devices' adapter warning naming a path with a space unquoted (`check-dtype my model`,
`plan-devices my base`: two words when pasted); a torch.save'd GPT-2 state dict converted without a config.json
(lm_head.weight kept) said by diff-keys to miss transformer.wte.weight "unknown: will not load" (from_pretrained
fills it from lm_head); `check-dtype .` inside the model folder suggesting `-o .-fp16` (a hidden folder inside it); one
shard of `shard`'s output read alone without a word (its tensors counted as the checkpoint, the rest "will not load").
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import run_cli
from tests.helpers import save_tiny_bert as _tiny_bert


def _wide(*args: str) -> str:
    """stdout of `weightdoctor ARGS` on a console wide enough that no suggested command is wrapped."""
    result = run_cli(*args, runner=CliRunner(env={"COLUMNS": "400"}))
    return result.stdout


def _recheck_command(stdout: str) -> list[str]:
    """The arguments of the fix panel's "re-check with: weightdoctor ..." line, as the shell splits them."""
    lines = [line for line in stdout.splitlines() if "re-check with: weightdoctor " in line]
    assert len(lines) == 1, stdout
    return shlex.split(lines[0].split("re-check with: weightdoctor ", 1)[1].rstrip(" │"))


# Workflow (2): a DDP training script's checkpoint (state dict under 'model', keys under 'module.') saved with
# torch.save into a path with a space → diff-keys --model-class → paste the re-check line → convert with its
# --rename → diff-keys again says it loads.
def test_recheck_line_pastes_with_spaces_config_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    base = tmp_path / "base"
    state = _tiny_bert(base)
    monkeypatch.chdir(tmp_path)
    torch.save({"model": {"module." + k: v for k, v in state.items()}, "optimizer": {}, "epoch": 3}, "train ckpt.pt")

    out = _wide("diff-keys", "train ckpt.pt", "--model-class", "BertForSequenceClassification", "--config", "base")
    args = _recheck_command(out)
    # Every argument that read A and its config as this run did, the path as one word.
    assert args == ["diff-keys", "train ckpt.pt", "--model-class", "BertForSequenceClassification",
                    "--config", "base", "--rename", r"^module\.="]
    pasted = run_cli(*args, "--json")
    assert pasted.exit_code == 0, pasted.stderr
    assert json.loads(pasted.stdout)["matched"] == 41

    # Two checkpoints and --key: the re-check keeps --key (without it A's top level was read: no tensors).
    out = _wide("diff-keys", "train ckpt.pt", "base", "--key", "model")
    args = _recheck_command(out)
    assert args == ["diff-keys", "train ckpt.pt", "base", "--key", "model", "--rename", r"^module\.="]
    assert run_cli(*args).exit_code == 0

    # The rename the panel suggests, applied with convert, and the check again: it now loads.
    rename = args[args.index("--rename") + 1]
    converted = run_cli("convert", "train ckpt.pt", "-o", "fixed.safetensors", "--rename", rename)
    assert converted.exit_code == 0, converted.stderr
    after = run_cli("diff-keys", "fixed.safetensors", "--model-class", "BertForSequenceClassification",
                    "--config", "base", "--json")
    assert json.loads(after.stdout)["matched"] == 41 and after.exit_code == 0


# Workflow (4): check-dtype --target fp16 → its convert --keep-fp32 pasted → check-dtype on the output.
def test_check_dtype_on_its_own_keep_fp32_output_says_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    _tiny_bert(tmp_path / "base")
    state = load_file(tmp_path / "base" / "model.safetensors")
    state["bert.encoder.layer.0.output.LayerNorm.weight"] *= 1e5  # beyond fp16's 65504
    (tmp_path / "my model").mkdir()
    shutil.copy(tmp_path / "base" / "config.json", tmp_path / "my model" / "config.json")
    save_file(state, tmp_path / "my model" / "model.safetensors", metadata={"format": "pt"})
    monkeypatch.chdir(tmp_path)

    first = json.loads(run_cli("check-dtype", "my model", "--target", "fp16", "--json").stdout)
    command = first["recommendation"]["commands"]["fp16"]
    words = shlex.split(command)
    assert words[:2] == ["weightdoctor", "convert"]
    converted = run_cli(*words[1:])
    assert converted.exit_code == 0, converted.stderr

    again = run_cli("check-dtype", words[words.index("-o") + 1], "--target", "fp16", "--json")
    report = json.loads(again.stdout)
    assert report["targets"]["fp16"]["keep_fp32"] == first["targets"]["fp16"]["keep_fp32"]
    # The output already is what that convert writes: no second convert (to 'my model-fp16-fp16') is suggested.
    assert report["recommendation"]["commands"] == {}
    assert "already keeps it in fp32 and every other tensor in fp16" in report["recommendation"]["text"]
    assert "nothing to convert" in report["recommendation"]["text"]


def _overflowing_model(tmp_path: Path) -> Path:
    """'my model': the tiny Bert with one LayerNorm beyond fp16's range, in a folder whose name has a space."""
    import shutil

    from safetensors.torch import load_file, save_file

    if not (tmp_path / "base").exists():
        _tiny_bert(tmp_path / "base")
    state = load_file(tmp_path / "base" / "model.safetensors")
    state["bert.encoder.layer.0.output.LayerNorm.weight"] *= 1e5
    folder = tmp_path / "my model"
    folder.mkdir()
    shutil.copy(tmp_path / "base" / "config.json", folder / "config.json")
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def _backticked(message: str, command: str) -> list[str]:
    """The `weightdoctor COMMAND ...` a message quotes in backticks, as the shell splits it (program name dropped)."""
    found = re.search(rf"`weightdoctor ({command} [^`]*)`", message)
    assert found, message
    return shlex.split(found.group(1))


# Workflow (4) the other way round: convert --dtype fp16 first, refused; the check-dtype it names, pasted.
def test_convert_overflow_names_a_check_dtype_that_pastes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _overflowing_model(tmp_path)
    monkeypatch.chdir(tmp_path)
    refused = run_cli("convert", "my model", "-o", "out16", "--dtype", "fp16")
    assert refused.exit_code == 2 and not (tmp_path / "out16").exists()
    args = _backticked(" ".join(refused.stderr.split()), "check-dtype")
    assert args == ["check-dtype", "my model", "--target", "fp16"]
    pasted = run_cli(*args, "--json")
    assert pasted.exit_code in (0, 1), pasted.stderr
    assert json.loads(pasted.stdout)["targets"]["fp16"]["verdict"] == "unsafe"


# Workflow (3): a LoRA adapter whose base was saved as a local path with a space → plan-devices on the adapter
# names the base to plan; that command, pasted, plans the base.
def bert_lora_beside_its_base(folder: Path, base: str, adapter: str) -> None:
    """A tiny BERT saved in folder/base and a LoRA adapter for it in folder/adapter, naming its base by the relative
    path `base` (as a local save records it)."""
    import torch
    from safetensors.torch import save_file

    _tiny_bert(folder / base)
    (folder / adapter).mkdir()
    (folder / adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "base_model_name_or_path": base, "task_type": "SEQ_CLS", "r": 4,
        "lora_alpha": 8, "target_modules": ["query", "value"]}))
    prefix = "base_model.model.bert.encoder.layer.0.attention.self.query"
    save_file({f"{prefix}.lora_A.weight": torch.zeros(4, 32), f"{prefix}.lora_B.weight": torch.zeros(32, 4)},
              folder / adapter / "adapter_model.safetensors")


def test_adapter_plan_names_a_base_that_pastes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bert_lora_beside_its_base(tmp_path, "my base", "my lora")
    monkeypatch.chdir(tmp_path)

    planned = run_cli("plan-devices", "my lora", "--gpu", "1GB")
    assert planned.exit_code == 0, planned.stderr
    said = " ".join(planned.stderr.split())
    found = re.search(r"\(weightdoctor (plan-devices .*?)\) and add", said)
    assert found, said
    args = shlex.split(found.group(1))
    assert args == ["plan-devices", "my base", "--gpu", "1GB"]  # this run's devices, as typed (advice1)
    base = run_cli(*args, "--json")
    assert base.exit_code == 0, base.stderr
    assert json.loads(base.stdout)["model_class"] == "BertForSequenceClassification"


# Workflow (2), a language model: torch.save(model.state_dict()) keeps both names of the tied embedding; convert
# without a config.json keeps lm_head.weight (sorted order, as huggingface_hub does); diff-keys against the
# save_pretrained folder said transformer.wte.weight "unknown: will not load" (error) while from_pretrained fills it.
def test_converted_tied_lm_head_is_not_said_to_lose_its_embedding(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    model.save_pretrained(tmp_path / "base")
    monkeypatch.chdir(tmp_path)
    torch.save(model.state_dict(), "sd.pt")
    (tmp_path / "out").mkdir()
    converted = run_cli("convert", "sd.pt", "-o", "out/model.safetensors", "--json")
    assert converted.exit_code == 0, converted.stderr
    assert json.loads(converted.stdout)["plan"]["dropped_aliases"] == [
        {"name": "transformer.wte.weight", "kept": "lm_head.weight"}]

    report = json.loads(run_cli("diff-keys", "out/model.safetensors", "base", "--json").stdout)
    missing = {issue["name"]: issue for issue in report["missing"]}
    assert missing["transformer.wte.weight"]["reason"] == "tied-weight"
    assert missing["transformer.wte.weight"]["severity"] == "info"
    assert report["worst_severity"] == "info"
    # What from_pretrained says of the same folder once config.json is beside it: nothing missing.
    (tmp_path / "out" / "config.json").write_text((tmp_path / "base" / "config.json").read_text())
    _, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"]


# Workflow (4) from inside the model's folder: `check-dtype .` named `-o .-fp16`, a hidden folder written inside
# the very folder it converts (and read back by the next `inspect .`'s neighbours); now beside it, as for `..`/name.
def test_check_dtype_dot_suggests_an_output_beside_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _overflowing_model(tmp_path)
    monkeypatch.chdir(folder)
    report = json.loads(run_cli("check-dtype", ".", "--target", "fp16", "--json").stdout)
    words = shlex.split(report["recommendation"]["commands"]["fp16"])
    assert words[words.index("-o") + 1] == "../my model-fp16"
    converted = run_cli(*words[1:])
    assert converted.exit_code == 0, converted.stderr
    assert (tmp_path / "my model-fp16" / "model.safetensors").is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]


# Workflow (1): a Trainer checkpoint → convert --dtype fp16 → shard → inspect one shard. One shard read alone counted
# its own tensors without a word, and diff-keys said the other shards' tensors "unknown: will not load".
def test_one_shard_after_shard_says_it_is_one_of_several(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import torch

    _tiny_bert(tmp_path / "base")
    run = tmp_path / "run" / "checkpoint-500"
    run.mkdir(parents=True)
    for name in ("model.safetensors", "config.json"):
        shutil.copy(tmp_path / "base" / name, run / name)
    torch.save({"state": {}, "param_groups": []}, run / "optimizer.pt")
    torch.save({"last_epoch": 500}, run / "scheduler.pt")
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 500, "log_history": []}))
    monkeypatch.chdir(tmp_path)
    assert run_cli("convert", "run/checkpoint-500", "-o", "run/fp16", "--dtype", "fp16").exit_code == 0
    assert run_cli("shard", "run/fp16", "--max", "20KB", "-o", "run/sharded").exit_code == 0

    whole = json.loads(run_cli("inspect", "run/sharded", "--json").stdout)
    assert whole["sharded"] and whole["num_tensors"] == 41 and whole["warnings"] == []
    first = json.loads(run_cli("inspect", "run/sharded/model-00001-of-00003.safetensors", "--json").stdout)
    assert first["num_tensors"] < 41
    assert first["warnings"] == [
        "model-00001-of-00003.safetensors is shard 1 of 3: only its own tensors are read; its index "
        "run/sharded/model.safetensors.index.json (or the folder) reads the whole checkpoint"]
    diff = json.loads(run_cli("diff-keys", "run/sharded/model-00002-of-00003.safetensors", "base", "--json").stdout)
    assert any("is shard 2 of 3" in w for w in diff["warnings"])
    # The folder itself, planned: every tensor, the fp16 bytes convert wrote.
    plan = json.loads(run_cli("plan-devices", "run/sharded", "--gpu", "1GB", "--json").stdout)
    assert plan["num_params"] == whole["num_params"] and plan["weights_bytes"] == whole["total_bytes"]
