"""review25: fixlist16's student / teacher warning, review24's no-format warning, the link-to-folder refusal and the
index named as typed, reviewed for false answers and false refusals."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

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


def test_a_peft_adapter_whose_metadata_has_no_format_is_not_said_to_be_refused(tmp_path: Path) -> None:
    # An adapter folder (adapter_config.json + adapter_model.safetensors) that also holds its base model's config.json,
    # as many adapter repos do, its metadata written without `format` (a LoRA exported by another trainer): inspect
    # said transformers 4's from_pretrained refuses the file, but PeftModel / load_adapter read it with
    # safetensors' load_file (peft's load_peft_weights), which checks no format.
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2,
                                                            "target_modules": ["q_proj"]}))
    g = torch.Generator().manual_seed(2)
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(2, 8, generator=g),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(8, 2)},
              str(folder / "adapter_model.safetensors"), metadata={"ss_network_dim": "2"})
    for source in (folder, folder / "adapter_model.safetensors"):
        code, data = run_json("inspect", str(source))
        assert code == 0 and data["metadata"] == {"ss_network_dim": "2"}, data
        assert not [w for w in data["warnings"] if "holds no format" in w], data["warnings"]
    # The same file as a model's weights (no adapter_config.json) is still warned of: from_pretrained refuses it.
    (folder / "adapter_config.json").unlink()
    (folder / "adapter_model.safetensors").rename(folder / "model.safetensors")
    code, data = run_json("inspect", str(folder))
    said = [w for w in data["warnings"] if "holds no format" in w]
    assert code == 0 and len(said) == 1 and said[0].startswith("the safetensors metadata (ss_network_dim) holds no "
                                                               "format: transformers 4's from_pretrained refuses"), said


def test_one_shard_without_format_beside_pt_shards_is_warned_of(tmp_path: Path) -> None:
    # transformers 4 checks every shard's own metadata: a shard rewritten without `format` (its metadata a merge
    # tool's) is refused though the first says "pt". The warning read the first file's metadata alone: no word.
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    g = torch.Generator().manual_seed(3)
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    save_file({"a.weight": torch.randn(4, 4, generator=g)}, str(folder / names[0]), metadata={"format": "pt"})
    save_file({"b.weight": torch.randn(4, 4, generator=g)}, str(folder / names[1]), metadata={"merged_by": "me"})
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 128}, "weight_map": {"a.weight": names[0], "b.weight": names[1]}}))
    code, data = run_json("inspect", str(folder))
    said = [w for w in data["warnings"] if "holds no format" in w]
    assert code == 0 and len(said) == 1, data["warnings"]
    assert said[0].startswith("the safetensors metadata of model-00002-of-00002.safetensors (merged_by) holds no "
                              "format: transformers 4's from_pretrained refuses such a file (\"does not contain the "
                              "valid metadata\")"), said
    # Both shards labelled "pt": nothing to say.
    save_file({"b.weight": torch.randn(4, 4, generator=g)}, str(folder / names[1]), metadata={"format": "pt"})
    code, data = run_json("inspect", str(folder))
    assert code == 0 and not [w for w in data["warnings"] if "holds no format" in w], data["warnings"]
