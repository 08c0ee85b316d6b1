"""ux18: every command read at 80 and 120 columns on tiny genuine checkpoints (GPT-2, Llama, T5, a BERT classifier,
a LoRA and its merge, a sharded folder, a GGUF, a Hub-cache repo id). What was fixed: inspect --stats repeated the
same 480-character caveat under every frozen matrix of a block (a GPT-2 with block 1 frozen: its Findings table ran to
259 lines at 80 columns, 173 now); the briefly-trained finding said "1 matrix that still fit their initialization have a
bias that moved" without naming it; the GGUF panel showed `general.file_type 15` bare."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import run_subprocess

_CAVEAT = "a short run at a small learning rate that moved it too little to see"
# health85: a matrix said to have got no update (its bias still at zeros while others moved) has its own hint,
# without the short-run hedge, which would contradict that.
_FROZEN = "a layer frozen by mistake (requires_grad=False, or left out of the optimiser's parameter groups)"


def _trained(model: torch.nn.Module, frozen: torch.nn.Module, batch: object, steps: int = 100) -> torch.nn.Module:
    """`model` after `steps` AdamW steps at lr 1e-3 with `frozen`'s parameters left out, as requires_grad=False does."""
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(steps):
        loss = batch(model)  # type: ignore[operator]
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    return model


def _gpt2_with_block_1_frozen(folder: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64))

    def batch(m: torch.nn.Module) -> torch.Tensor:
        tokens = torch.randint(0, 100, (4, 16))
        return m(tokens, labels=tokens).loss

    _trained(model, model.transformer.h[1], batch).save_pretrained(folder)
    return folder


def _stats(folder: Path, columns: str) -> tuple[str, dict]:
    text = run_subprocess("inspect", folder, "--stats", env={"COLUMNS": columns})
    assert text.returncode == 0, text.stderr
    report = run_subprocess("inspect", folder, "--stats", "--json", env={"COLUMNS": columns})
    assert report.returncode == 0, report.stderr
    return text.stdout, json.loads(report.stdout)


def test_a_caveat_shared_by_the_frozen_matrices_is_shown_once(tmp_path: Path) -> None:
    """Each untrained-tensor warning of the frozen block carried the same caveat (the short-run note and the pooled
    variance): shown once, the later rows point to it and keep what they add (the position table's note); --json
    keeps every hint whole."""
    folder = _gpt2_with_block_1_frozen(tmp_path / "gpt2")
    text, report = _stats(folder, "400")
    untrained = [f for f in report["findings"] if f["code"] == "untrained-tensor"]
    frozen = [f["tensor"] for f in untrained if f["tensor"].startswith("transformer.h.1.")]
    assert len(frozen) == 4, untrained  # c_attn, attn.c_proj, c_fc, mlp.c_proj
    assert all(_CAVEAT not in f["hint"] and _FROZEN in f["hint"] for f in untrained), untrained
    # health85: wte and wpe, warned beside the frozen block with the caveat and the pool's figures, trained; they lost
    # the marks PyTorch's normal_ left on the frozen block's values (weightdoctor/generator_marks.py), so only the
    # frozen block is warned: one hint, shown once, the later rows pointing to the first.
    assert len(untrained) == len(frozen), untrained
    assert text.count(_CAVEAT) == 0 and text.count(_FROZEN) == 1, text
    assert text.count(f"→ as for {frozen[0]} above") == len(frozen) - 1, text
    narrow = run_subprocess("inspect", folder, "--stats", env={"COLUMNS": "80"}).stdout
    findings = narrow[narrow.index("Findings"):]
    # Measured: 259 lines before, 173 after (GPT-2, 2 blocks, block 1 frozen, 100 AdamW steps).
    assert len(findings.splitlines()) < 200, findings


def test_one_matrix_told_trained_by_its_bias_is_said_in_the_singular_and_named(tmp_path: Path) -> None:
    """A BERT classifier trained 100 steps with its head frozen (seed 2): one matrix still fits its init but its bias
    moved. Said "1 matrix that still fit their initialization have a bias that moved", naming none."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(2)
    model = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=4, intermediate_size=64, num_labels=3))

    def batch(m: torch.nn.Module) -> torch.Tensor:
        return m(torch.randint(0, 100, (4, 16)), labels=torch.randint(0, 3, (4,))).loss

    folder = tmp_path / "bert"
    _trained(model, model.classifier, batch).save_pretrained(folder)
    result = run_subprocess("inspect", folder, "--stats", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "classifier.weight" in [f["tensor"] for f in report["findings"] if f["code"] == "untrained-tensor"]
    brief = [f["message"] for f in report["findings"] if f["code"] == "briefly-trained"]
    assert len(brief) == 1 and brief[0].startswith("1 matrix ("), brief
    named = brief[0][len("1 matrix ("):brief[0].index(")")]
    assert brief[0] == (f"1 matrix ({named}) still looks like its initialization, but its bias moved, so it did get "
                        "small updates"), brief
    at_init = {t["name"]: (t.get("init") or {}).get("at_init") for t in report["tensors"]}
    assert at_init[named] is True and at_init[named.removesuffix("weight") + "bias"] is False, at_init


def test_gguf_file_type_is_named(tmp_path: Path) -> None:
    """`general.file_type 15` is llama.cpp's MOSTLY_Q4_K_M: said beside the number; --json keeps the number."""
    from fixtures.gguf_files import tiny_llama_gguf

    path, _ = tiny_llama_gguf(tmp_path / "tiny.gguf")
    for columns in ("80", "120"):
        result = run_subprocess("inspect", path, env={"COLUMNS": columns})
        assert result.returncode == 0, result.stderr
        rows = [line for line in result.stdout.splitlines() if "general.file_type" in line]
        assert len(rows) == 1 and "15 (MOSTLY_Q4_K_M, llama.cpp's file type" in rows[0], result.stdout
    report = json.loads(run_subprocess("inspect", path, "--json").stdout)
    assert report["gguf"]["metadata"]["general.file_type"] == 15
