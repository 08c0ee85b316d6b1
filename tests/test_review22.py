"""review22: the last merges' new defaults and detectors (self-distillation teacher, fused-qkv ViT, the deleted-cwd
move to /, CPU-time pattern limits) on inputs next to the ones they were written for."""

from __future__ import annotations


import pytest
import torch


def _vit(prefix: str, *, masked_embed: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    weights = {f"{prefix}backbone.cls_token": torch.randn(1, 1, 4, generator=gen),
               f"{prefix}backbone.blocks.0.attn.qkv.weight": torch.randn(12, 4, generator=gen),
               f"{prefix}head.mlp.0.weight": torch.randn(8, 4, generator=gen)}
    if masked_embed:  # iBOT's student alone holds the mask token (masked_im_modeling)
        weights[f"{prefix}backbone.masked_embed"] = torch.zeros(1, 4)
    return weights


def test_distillation_with_a_loss_state_and_another_teacher_reads_the_student() -> None:
    """A knowledge-distillation checkpoint whose loss keeps a state dict (`kd_loss`) beside a student and a larger,
    other teacher: the teacher was read, called "a DINO / iBOT self-distillation checkpoint", where the product of
    the run is the student (read before the DINO rule came). A self-distillation teacher is the student's copy."""
    from weightdoctor.checkpoint.pytorch_format import find_state_dict

    gen = torch.Generator().manual_seed(0)
    student = {"fc.weight": torch.randn(2, 4, generator=gen), "fc.bias": torch.zeros(2)}
    teacher = {"encoder.layers.0.weight": torch.randn(8, 8, generator=gen),
               "fc.weight": torch.randn(2, 8, generator=gen)}
    obj = {"student": student, "teacher": teacher, "kd_loss": {"temperature": torch.tensor(4.0)}, "epoch": 1}
    state_dict, where = find_state_dict(obj)
    assert where == "student" and set(state_dict) == {"fc.weight", "fc.bias"}


@pytest.mark.parametrize(("student_prefix", "masked_embed", "loss"), [
    ("module.", False, "dino_loss"),  # DINO: the student under DDP, the teacher not
    ("module.", True, "ibot_loss"),  # iBOT: the student holds masked_embed, which the teacher lacks
    ("", False, "dino_loss"),  # EsViT / DINO with both wrapped alike
])
def test_self_distillation_checkpoints_still_read_the_teacher(student_prefix: str, masked_embed: bool,
                                                              loss: str) -> None:
    from weightdoctor.checkpoint.pytorch_format import find_state_dict

    obj = {"student": _vit(student_prefix, masked_embed=masked_embed), "teacher": _vit(""), "epoch": 3,
           loss: {"center": torch.zeros(1, 8)}}
    state_dict, where = find_state_dict(obj)
    assert where == "teacher" and set(state_dict) == set(_vit(""))
