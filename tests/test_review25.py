"""review25: fixlist16's student / teacher warning, review24's no-format warning, the link-to-folder refusal and the
index named as typed, reviewed for false answers and false refusals."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers import run_json


def test_a_distillation_between_two_architectures_is_not_called_a_stored_twice_backbone(tmp_path: Path) -> None:
    # A knowledge-distillation run (a ResNet-18-like student, a ResNet-50-like teacher) saves student.backbone.*
    # beside teacher.backbone.*; the stem's names and shapes coincide, the rest differ in shape or exist in one only.
    # inspect said "the backbone is stored twice ... the student copy of 3 tensors", and that DINOv2's eval loads the
    # teacher: neither is so, the two backbones are two models.
    g = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}
    for who in ("student", "teacher"):
        state[f"{who}.backbone.conv1.weight"] = torch.randn(8, 3, 7, 7, generator=g)
        state[f"{who}.backbone.bn1.weight"] = torch.ones(8)
        state[f"{who}.backbone.bn1.bias"] = torch.zeros(8)
    state["student.backbone.layer1.0.conv1.weight"] = torch.randn(8, 8, 3, 3, generator=g)
    state["teacher.backbone.layer1.0.conv1.weight"] = torch.randn(4, 8, 1, 1, generator=g)
    state["teacher.backbone.layer1.0.conv3.weight"] = torch.randn(16, 4, 1, 1, generator=g)
    path = tmp_path / "kd_epoch_10.pth"
    torch.save({"state_dict": state, "epoch": 10}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data is not None
    assert not [w for w in data["warnings"] if "stored twice" in w], data["warnings"]
    assert data["num_tensors"] == 9, data["num_tensors"]


def test_a_dinov2_pair_of_equal_backbones_is_still_warned_of(tmp_path: Path) -> None:
    # The case fixlist16 warned of keeps its warning: every teacher tensor has a student twin of the same shape.
    g = torch.Generator().manual_seed(1)
    state: dict[str, torch.Tensor] = {}
    for who in ("student", "teacher"):
        state[f"{who}.backbone.cls_token"] = torch.randn(1, 1, 8, generator=g)
        state[f"{who}.backbone.blocks.0.attn.qkv.weight"] = torch.randn(24, 8, generator=g)
        state[f"{who}.dino_head.last_layer.weight"] = torch.randn(16, 8, generator=g)
    state["dino_loss.center"] = torch.zeros(1, 16)
    path = tmp_path / "model_0000099.pth"
    torch.save({"model": state, "optimizer": {}, "iteration": 99}, path)
    code, data = run_json("inspect", str(path))
    said = [w for w in data["warnings"] if "stored twice" in w]
    assert code == 0 and len(said) == 1 and "the student copy of 2 tensors" in said[0], data["warnings"]
