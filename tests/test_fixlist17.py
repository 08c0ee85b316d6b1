"""Fix list 17: an empty safetensors `__metadata__` warned of as one without a format, and DINOv2's eval advice
kept for DINOv2's own checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.helpers import run_json

# 1. save_file(..., metadata={}) writes `"__metadata__": {}`: transformers 4 skips only None, so it refuses the file
# ("... but None"); weightdoctor read {} as no metadata and said nothing.

def _llama_folder(folder: Path, shards: list[dict[str, str] | None]) -> None:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    g = torch.Generator().manual_seed(17)
    if len(shards) == 1:
        save_file({"a.weight": torch.randn(4, 4, generator=g)}, str(folder / "model.safetensors"),
                  metadata=shards[0])
        return
    names = [f"model-0000{i + 1}-of-0000{len(shards)}.safetensors" for i in range(len(shards))]
    for i, (name, metadata) in enumerate(zip(names, shards, strict=True)):
        save_file({f"w{i}.weight": torch.randn(4, 4, generator=g)}, str(folder / name), metadata=metadata)
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 64 * len(shards)}, "weight_map": {f"w{i}.weight": n for i, n in enumerate(names)}}))


def test_an_empty_metadata_is_warned_of_as_holding_no_format(tmp_path: Path) -> None:
    _llama_folder(tmp_path / "empty", [{}])
    code, data = run_json("inspect", str(tmp_path / "empty"))
    said = [w for w in data["warnings"] if "holds no format" in w]
    assert code == 0 and len(said) == 1 and said[0].startswith(
        "the safetensors metadata (empty, {}) holds no format: transformers 4's from_pretrained refuses such a file "
        "(\"Incompatible safetensors file. File metadata is not ['pt', 'tf', 'flax', 'mlx'] but None\")"), \
        data["warnings"]
    assert data["metadata"] is None  # the --json key as it was: nothing to show
    # A shard with {} beside a "pt" one: load_state_dict refuses it as well.
    _llama_folder(tmp_path / "sharded", [{"format": "pt"}, {}])
    code, data = run_json("inspect", str(tmp_path / "sharded"))
    said = [w for w in data["warnings"] if "holds no format" in w]
    assert code == 0 and len(said) == 1 and said[0].startswith(
        "the safetensors metadata of model-00002-of-00002.safetensors (empty, {}) holds no format"), data["warnings"]
    # No `__metadata__` at all loads: nothing said.
    _llama_folder(tmp_path / "none", [None])
    code, data = run_json("inspect", str(tmp_path / "none"))
    assert code == 0 and not [w for w in data["warnings"] if "format" in w], data["warnings"]


# 2. A student / teacher pair of the same backbone outside DINOv2 (a BYOL or mean-teacher trainer's): the warning
# named DINOv2's eval and its checkpoint_key 'teacher', which that trainer has nothing to do with.

def _pair(extra: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(17)
    state = {}
    for who in ("student", "teacher"):
        state[f"{who}.backbone.conv1.weight"] = torch.randn(4, 3, 3, 3, generator=g)
        state[f"{who}.backbone.fc.weight"] = torch.randn(2, 4, generator=g)
    return {**state, **extra}


def test_a_student_teacher_pair_gets_dinov2_advice_only_with_dinov2_evidence(tmp_path: Path) -> None:
    path = tmp_path / "mean_teacher.pth"
    torch.save({"model": _pair({"student.projector.weight": torch.zeros(2, 4)}), "epoch": 3}, path)
    code, data = run_json("inspect", str(path))
    said = [w for w in data["warnings"] if "stored twice" in w]
    assert code == 0 and said == [
        "the backbone is stored twice: student.backbone.* holds the student copy of 2 tensors of teacher.backbone.* "
        "(116 parameters, counted in the total above); a model built from it takes one of the two; "
        "--filter '^teacher\\.backbone\\.' counts it alone"], data["warnings"]
    for part in ("teacher.dino_head.last_layer.weight", "dino_loss.center", "student.ibot_head.mlp.0.weight"):
        torch.save({"model": _pair({part: torch.zeros(2, 4)}), "iteration": 3}, path)
        code, data = run_json("inspect", str(path))
        said = [w for w in data["warnings"] if "stored twice" in w]
        assert code == 0 and len(said) == 1 and "DINOv2's eval (dinov2/eval/setup.py" in said[0] \
            and "checkpoint_key 'teacher'" in said[0], (part, data["warnings"])
    # DDP's `module.` wrapper: the evidence is looked for under it too.
    torch.save({"model": {"module." + k: v for k, v in _pair({"dino_loss.center": torch.zeros(1, 4)}).items()}}, path)
    code, data = run_json("inspect", str(path))
    said = [w for w in data["warnings"] if "stored twice" in w]
    assert code == 0 and len(said) == 1 and "module.student.backbone.*" in said[0] and "DINOv2's eval" in said[0], \
        data["warnings"]


# 3. Megatron-LM's virtual pipeline saves model0, model1, ... in place of `model`: model0.language_model.encoder was
# read alone (its embedding "beside"), and model1 showed as "dict, 1 entry" without a word of its layers.

def _megatron_chunk(g: torch.Generator, first: bool, last: bool, layers: int) -> dict[str, object]:
    language: dict[str, dict[str, object]] = {}
    if first:
        language["embedding"] = {"word_embeddings": {"weight": torch.randn(16, 8, generator=g)}}
    language["encoder"] = {f"layers.{i}.self_attention.query_key_value.weight": torch.randn(24, 8, generator=g)
                           for i in range(layers)}
    if last:
        language["encoder"]["final_layernorm.weight"] = torch.ones(8)
        language["output_layer"] = {"weight": torch.randn(16, 8, generator=g)}
    return {"language_model": language}


def test_a_megatron_virtual_pipeline_checkpoint_says_which_chunk_is_read(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(17)
    path = tmp_path / "model_optim_rng.pt"
    torch.save({"checkpoint_version": 3.0, "iteration": 10, "model0": _megatron_chunk(g, True, False, 2),
                "model1": _megatron_chunk(g, False, False, 3), "model2": _megatron_chunk(g, False, True, 1)}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "model0.language_model", data
    assert [t["name"] for t in data["tensors"]] == ["embedding.word_embeddings.weight",
                                                    "encoder.layers.0.self_attention.query_key_value.weight",
                                                    "encoder.layers.1.self_attention.query_key_value.weight"]
    said = [w for w in data["warnings"] if "virtual-pipeline" in w]
    assert said == ["model_optim_rng.pt: a Megatron-LM virtual-pipeline checkpoint: 3 model chunks (model0, model1, "
                    "model2), each a slice of the layers; only model0.language_model is read (2 layers), not model1 "
                    "(3 layers, 3 tensors), model2 (1 layer, 3 tensors); --key model1.language_model reads another; "
                    "Megatron-LM loads them together"], data["warnings"]
    assert not [w for w in data["warnings"] if "beside the state dict are not read" in w], data["warnings"]
    # The way it names works: model2's parts read together, as the default reads model0's.
    code, data = run_json("inspect", str(path), "--key", "model2.language_model")
    assert code == 0 and [t["name"] for t in data["tensors"]] == [
        "encoder.layers.0.self_attention.query_key_value.weight", "encoder.final_layernorm.weight",
        "output_layer.weight"], data
    assert not [w for w in data["warnings"] if "virtual-pipeline" in w], data["warnings"]
