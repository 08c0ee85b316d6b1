"""Fixes made by the lead in the twenty-seventh session, each with the fault it shows (one test per fault)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import run_cli


def test_a_checkpoint_of_only_a_wrapped_state_dict_is_not_said_to_leave_entries_out(tmp_path: Path) -> None:
    """`{"model": state_dict}` and nothing else (fairseq2's model.pt, many training scripts): convert and shard
    warned "(not optimizer or other entries)", entries the file does not have. They say the state dict is written
    unwrapped, and the path a loader read it at; a checkpoint with other entries still names them."""
    torch.manual_seed(0)
    weights = {"encoder.weight": torch.randn(4, 4)}
    for wrapped, path in [({"model": weights}, "checkpoint['model']"),
                          ({"state": {"model": weights}}, "checkpoint['state']['model']")]:
        source = tmp_path / "wrapped.pt"
        torch.save(wrapped, source)
        for command, extra in [("convert", ["-o", str(tmp_path / "out.safetensors")]),
                               ("shard", ["--single", "-o", str(tmp_path / "shards")])]:
            result = run_cli(command, str(source), *extra, "--dry-run", "--json")
            assert result.exit_code == 0, result.stderr
            warnings = json.loads(result.stdout)["warnings"]
            assert len(warnings) == 1 and "optimizer" not in warnings[0], warnings
            assert "written unwrapped, at the top level (the checkpoint holds nothing beside it)" in warnings[0]
            assert f"a loader that reads {path} must read the output's names directly" in warnings[0]
    torch.save({"model": weights, "optimizer": {"lr": 0.1}}, tmp_path / "train.pt")
    result = run_cli("convert", str(tmp_path / "train.pt"), "-o", str(tmp_path / "o.safetensors"), "--dry-run",
                     "--json")
    assert "not the checkpoint's other entries (optimizer)" in json.loads(result.stdout)["warnings"][0]


def test_renumbered_experts_are_not_said_to_start_from_their_init(tmp_path: Path) -> None:
    """A per-expert Mixtral with layer 0's expert 1 renumbered 5: the fused parameters are listed missing with
    reason expert-numbering (from_pretrained fills them from A's experts by order), under a title that said
    "(start from their init)". The title says what happens to them."""
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, num_local_experts=3, num_experts_per_tok=1)
    folder = tmp_path / "mixtral"
    MixtralForCausalLM(config).save_pretrained(folder)
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    prefix = "model.layers.0.block_sparse_moe.experts."
    assert f"{prefix}1.w1.weight" in weights  # save_pretrained writes the per-expert layout
    for projection in ("w1", "w2", "w3"):
        weights[f"{prefix}5.{projection}.weight"] = weights.pop(f"{prefix}1.{projection}.weight")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    result = run_cli("diff-keys", str(folder), "--model-class", "MixtralForCausalLM")
    assert result.exit_code == 1, result.stdout
    assert "expert-numbering" in result.stdout
    assert "start from their init" not in result.stdout
    text = " ".join(result.stdout.split())  # the title wraps at the console's width
    assert "(filled from A's experts out of order, or from_pretrained raises: see each row)" in text


def test_an_output_under_a_link_to_nothing_names_the_folder_to_make(tmp_path: Path) -> None:
    """`-o runs/x.safetensors` where `runs` is a link to a folder not made yet (a scratch disk not mounted): the
    write said "create it first: mkdir -p runs", which fails pasted (mkdir -p stops at the link: "File exists").
    It names the link's target, and the printed command, run, lets the same write go through."""
    import shlex
    import subprocess

    torch.manual_seed(0)
    source = tmp_path / "m.bin"
    torch.save({"w": torch.randn(3, 3)}, source)
    (tmp_path / "runs").symlink_to(tmp_path / "scratch" / "runs")
    out = tmp_path / "runs" / "x.safetensors"
    for extra in ([], ["--dry-run"]):
        result = run_cli("convert", str(source), "-o", str(out), *extra)
        assert result.exit_code == (1 if extra else 2)
        line = result.stderr.strip() if not extra else result.stdout.strip().splitlines()[-1]
        assert (f"the output folder is under {tmp_path / 'runs'}, a link to {tmp_path / 'scratch' / 'runs'}, which "
                "does not exist (create it first: mkdir -p ") in line
    command = line.split("(create it first: ", 1)[1].rsplit(")", 1)[0]
    assert shlex.split(command)[:2] == ["mkdir", "-p"]
    subprocess.run(command, shell=True, check=True)
    assert run_cli("convert", str(source), "-o", str(out)).exit_code == 0
    assert (tmp_path / "scratch" / "runs" / "x.safetensors").is_file()
