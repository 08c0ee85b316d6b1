"""A twelfth round of checkpoints as research code writes them: DINO / iBOT self-distillation checkpoints (student
and teacher side by side), fairseq's wav2vec 2.0 / HuBERT originals against transformers' models of them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, run_json


def _vit(prefix: str) -> dict[str, torch.Tensor]:
    """A few of DINO's vision_transformer.py names (a tiny ViT-S)."""
    return {f"{prefix}cls_token": torch.randn(1, 1, 16), f"{prefix}pos_embed": torch.randn(1, 5, 16),
            f"{prefix}patch_embed.proj.weight": torch.randn(16, 3, 4, 4),
            f"{prefix}blocks.0.attn.qkv.weight": torch.randn(48, 16), f"{prefix}norm.weight": torch.ones(16)}


def _dino_head(prefix: str) -> dict[str, torch.Tensor]:
    """DINOHead's MLP and its weight-normed last layer (weight_g, weight_v)."""
    return {f"{prefix}head.mlp.0.weight": torch.randn(32, 16), f"{prefix}head.last_layer.weight_g": torch.ones(64, 1),
            f"{prefix}head.last_layer.weight_v": torch.randn(64, 32)}


def _dino_checkpoint(path: Path, loss: str = "dino_loss") -> None:
    """checkpoint.pth as DINO's main_dino.py saves it: the student wrapped in DistributedDataParallel
    (`module.backbone.*`, `module.head.*`), the teacher unwrapped (no BatchNorm: `backbone.*`, `head.*`), the
    optimizer, epoch, the argparse.Namespace of arguments and DINOLoss's state dict (its `center` buffer). iBOT's
    main_ibot.py saves the same with `ibot_loss`."""
    torch.manual_seed(0)
    torch.save({"student": {**_vit("module.backbone."), **_dino_head("module.")},
                "teacher": {**_vit("backbone."), **_dino_head("")},
                "optimizer": {"state": {}, "param_groups": []}, "epoch": 100,
                "args": argparse.Namespace(arch="vit_small", patch_size=16),
                loss: {"center": torch.zeros(1, 64)}}, path)


@pytest.mark.parametrize("loss", ["dino_loss", "ibot_loss"])
def test_a_dino_checkpoint_reads_the_teacher_its_evaluation_loads_and_says_so(tmp_path: Path, loss: str) -> None:
    """DINO's and iBOT's eval_linear.py / eval_knn.py load `teacher` (--checkpoint_key's default) and strip `module.`
    and `backbone.`; `student` came first in the key search and was read, without a word."""
    path = tmp_path / "checkpoint.pth"
    _dino_checkpoint(path, loss)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "teacher", data
    assert all(t["name"].startswith(("backbone.", "head.")) for t in data["tensors"])
    said = " ".join(data["warnings"])
    assert "DINO / iBOT" in said and "--checkpoint_key teacher" in said and "--key student" in said, said
    assert "strips module. and backbone." in said
    assert any(entry.startswith("student (a state dict of 8 tensors") for entry in data["other_entries"])
    # --key still reads the student, and convert writes the teacher's weights.
    code, data = run_json("inspect", str(path), "--key", "student")
    assert code == 0 and data["tensors"][0]["name"].startswith("module."), data
    out = tmp_path / "teacher.safetensors"
    result = run_cli("convert", str(path), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    from safetensors.torch import load_file
    assert torch.equal(load_file(out)["backbone.cls_token"], torch.load(path, weights_only=False)["teacher"][
        "backbone.cls_token"])


def test_a_distillation_checkpoint_without_a_self_distillation_loss_keeps_the_key_order(tmp_path: Path) -> None:
    """A knowledge-distillation run's {student, teacher}: its product is the student, which is read as before."""
    path = tmp_path / "kd.pt"
    torch.save({"student": _vit(""), "teacher": _vit("t."), "epoch": 3}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "student", data
    assert not any("DINO" in w for w in data["warnings"])
