"""Round 11 of the common mistakes users make: whole workflows, one command's output pasted into the next.

Covers: diff-keys' "re-check with" line pasted as given (a path with a space was left unquoted, and --config,
--key and --revision were dropped, so the pasted command failed or read other files).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import run_cli


def _tiny_bert(folder: Path) -> dict:
    """A seeded two-layer BertForSequenceClassification saved by save_pretrained; its state dict returned."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(folder)
    return model.state_dict()


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
