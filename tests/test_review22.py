"""review22: the last merges' new defaults and detectors (self-distillation teacher, fused-qkv ViT, the deleted-cwd
move to /, CPU-time pattern limits) on inputs next to the ones they were written for."""

from __future__ import annotations

from pathlib import Path

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


_HF_VIT = ["embeddings.cls_token", "embeddings.patch_embeddings.projection.weight",
           *(f"encoder.layer.0.attention.attention.{part}.{kind}" for part in ("query", "key", "value")
             for kind in ("weight", "bias")),
           "encoder.layer.0.layernorm_before.weight", "layernorm.weight"]
_TIMM_VIT = ["cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.norm1.weight", "blocks.0.attn.qkv.weight",
             "blocks.0.attn.qkv.bias", "blocks.0.attn.proj.weight", "norm.weight"]


def test_fused_qkv_note_names_the_transformers_side_by_its_own_keys() -> None:
    """A timm ViT with layer scale (DeiT III, `blocks.N.ls1.gamma`) against transformers' ViTModel: the note called
    B a Dinov2Model, from A's ls1.gamma, and pointed at DINOv2's converter; B has no layer_scale1 of Dinov2Model."""
    from weightdoctor.diff_keys import foreign_layout

    deit3 = [*_TIMM_VIT, "blocks.0.ls1.gamma", "blocks.0.ls2.gamma"]
    for a, b, fused in ((deit3, _HF_VIT, "A"), (_HF_VIT, deit3, "B")):
        unexpected, missing = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        whys, note = foreign_layout(unexpected, missing)
        assert note.startswith(f"{fused} is a timm-style ViT") and "transformers' ViTModel layout" in note
        assert "Dinov2" not in note and "dinov2" not in note
        assert set(whys) == {n for n in unexpected + missing if ".qkv." in n or ".attention.attention." in n}
    dinov2 = [n.replace("layernorm_before", "layer_scale1.lambda1") for n in _HF_VIT]  # Dinov2Model's own key
    whys, note = foreign_layout(sorted(set(deit3) - set(dinov2)), sorted(set(dinov2) - set(deit3)))
    assert "transformers' Dinov2Model layout" in note and "convert_dinov2_to_hf.py" in note


def test_pattern_time_limit_counts_this_threads_cpu_time_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit was counted in process CPU time, which adds up every thread of the process: torch's intra-op
    threads or a caller's own threads busy meanwhile used it up (here: a second of other threads' CPU time per
    look at the clock), and a two-group config got unknown bits that the matching itself needs microseconds for."""
    import itertools
    import time

    from weightdoctor import quantized

    calls = itertools.count()
    real = time.process_time
    monkeypatch.setattr(time, "process_time", lambda: real() + next(calls))  # 1 s of other threads per look
    quantization = {"quant_method": "compressed-tensors", "config_groups": {
        "g0": {"weights": {"num_bits": 4}, "targets": ["re:.*mlp.*"]},
        "g1": {"weights": {"num_bits": 8}, "targets": ["re:.*attn.*"]}}}
    names = [f"model.layers.{i}.{part}.weight_packed" for i in range(4)
             for part in ("mlp.up_proj", "self_attn.q_proj")]
    notes: list[str] = []
    bits = quantized._compressed_tensors_layer_bits(names, quantization, notes)
    assert bits == {name: 4 if ".mlp." in name else 8 for name in names} and notes == []
    gptq = {"quant_method": "gptq", "bits": 4, "dynamic": {r"+:.*mlp.*": {"bits": 8}}}
    qweights = [name.replace("weight_packed", "qweight") for name in names]
    assert quantized._gptq_dynamic_layer_bits(qweights, gptq, notes) == {
        name: 8 for name in qweights if ".mlp." in name}


def test_deleted_cwd_does_not_take_a_home_that_is_relative_for_absolute(monkeypatch: pytest.MonkeyPatch) -> None:
    """`HOME=relhome weightdoctor convert /m -o ~/x` from a deleted folder: `~/x` was taken as absolute and the run
    moved to /, where it is relhome/x: the output was written under / (relhome/x of the folder that is gone before)."""
    from weightdoctor.entry import _no_relative_path

    monkeypatch.setenv("HOME", "relhome")
    assert not _no_relative_path(["convert", "/m.pt", "-o", "~/x.safetensors"])
    assert not _no_relative_path(["convert", "/m.pt", "--output=~/x.safetensors"])
    assert not _no_relative_path(["convert", "/m.pt", "-o~/x.safetensors"])
    monkeypatch.setenv("HOME", "/home/someone")
    assert _no_relative_path(["convert", "/m.pt", "-o", "~/x.safetensors"])
    assert _no_relative_path(["convert", "/m.pt", "--output=~/x.safetensors"])


def test_deleted_cwd_with_a_relative_home_is_refused(tmp_path: Path) -> None:
    """The whole path: from a deleted folder, with HOME relative, the run stops with the deleted-folder line, writing
    nothing (it went on from / before and tried to write relhome/x.safetensors there)."""
    import os
    import subprocess
    import sys

    from safetensors.torch import save_file

    source = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(2)}, str(source))
    gone = tmp_path / "gone"
    gone.mkdir()
    script = (f"import os, sys; os.chdir({str(gone)!r}); os.rmdir({str(gone)!r}); "
              "sys.argv = ['weightdoctor', 'convert', sys.argv[1], '-o', '~/x.safetensors']; "
              "from weightdoctor.entry import main; main()")
    env = {**os.environ, "HOME": "relhome-review22", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", script, str(source)], capture_output=True, text=True, env=env,
                            timeout=120, check=False)
    assert result.returncode == 2
    assert "the current folder no longer exists" in result.stderr
    assert "relhome-review22" not in result.stderr  # not the output folder at / it looked for


def _transformers_keys(model_class: str, config_class: str) -> list[str]:
    import transformers

    small = {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8}
    config = getattr(transformers, config_class)(
        text_config={**small, "vocab_size": 10, "max_position_embeddings": 8},
        vision_config={**small, "image_size": 8, "patch_size": 4})
    torch.manual_seed(0)
    return list(getattr(transformers, model_class)(config).state_dict())


_OPEN_CLIP = ["positional_embedding", "text_projection", "logit_scale", "token_embedding.weight", "ln_final.weight",
              "transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.0.attn.out_proj.weight",
              "visual.class_embedding", "visual.positional_embedding", "visual.proj", "visual.conv1.weight",
              "visual.ln_pre.weight", "visual.transformer.resblocks.0.attn.in_proj_weight"]


def test_openai_clip_layout_against_siglip_does_not_call_it_clipmodel() -> None:
    """open_clip's ViT-B-32 (OpenAI CLIP's layout) against transformers' SiglipModel: the note called B a CLIPModel
    and offered the CLIP converter, whose CLIPModel output a SiglipModel does not load (logit_bias, the pooling
    head). Against a CLIPModel the note and the converter stay."""
    from weightdoctor.diff_keys import foreign_layout

    siglip = _transformers_keys("SiglipModel", "SiglipConfig")
    for a, b, hf_side, clip_side in ((_OPEN_CLIP, siglip, "B", "A"), (siglip, _OPEN_CLIP, "A", "B")):
        whys, note = foreign_layout(sorted(set(a) - set(b)), sorted(set(b) - set(a)))
        assert f"{hf_side} in transformers' SiglipModel layout" in note and "CLIPModel" not in note
        assert "convert_clip_original_pytorch_to_hf" not in note and "another model than CLIP" in note
        assert {detail for _, _, detail in whys.values()} == {
            f"OpenAI CLIP's layout (in {clip_side})", f"transformers' SiglipModel layout (in {hf_side})"}
    clip = _transformers_keys("CLIPModel", "CLIPConfig")
    whys, note = foreign_layout(sorted(set(_OPEN_CLIP) - set(clip)), sorted(set(clip) - set(_OPEN_CLIP)))
    assert "B in transformers' CLIPModel layout" in note and "convert_clip_original_pytorch_to_hf.py" in note
    assert "SiglipModel" not in note


@pytest.mark.parametrize(("model_class", "config_class", "name"), [("ViTModel", "ViTConfig", "ViTModel"),
                                                                   ("Dinov2Model", "Dinov2Config", "Dinov2Model")])
def test_fused_qkv_note_against_the_model_transformers_builds(model_class: str, config_class: str,
                                                              name: str) -> None:
    """A timm ViT against the class as the installed transformers builds it (`--model-class ViTModel`): transformers
    5 names its attention `layers.N.attention.q_proj`, which the detector did not know (the Hub's
    `attention.attention.query` only): no note, the split matrices "unknown"."""
    import transformers

    from weightdoctor.diff_keys import foreign_layout

    config = getattr(transformers, config_class)(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=8, image_size=8, patch_size=4)
    torch.manual_seed(0)
    hf = list(getattr(transformers, model_class)(config).state_dict())
    for a, b, fused in ((_TIMM_VIT, hf, "A"), (hf, _TIMM_VIT, "B")):
        unexpected, missing = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        whys, note = foreign_layout(unexpected, missing)
        assert note.startswith(f"{fused} is a timm-style ViT") and f"transformers' {name} layout" in note
        split = {n for n in hf if any(f"attention.{part}" in n for part in ("q_proj", "k_proj", "v_proj", "query",
                                                                             "key.", "value"))}
        assert set(whys) == split | {n for n in _TIMM_VIT if ".qkv." in n}
