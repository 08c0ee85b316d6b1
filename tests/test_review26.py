"""review26: redteam15 merged with review25 (the stored-twice rule, the no-format warning, inspect's 200-children
tree cap, Orbax / Megatron step folders), reviewed for false answers."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.console import Console
from rich.tree import Tree

from tests.helpers import run_json
from weightdoctor.checkpoint.model import TensorInfo
from weightdoctor.render.inspect import MAX_TREE_CHILDREN, _add_nodes
from weightdoctor.structure import build_module_tree


def test_a_backbone_partly_shared_and_partly_copied_is_still_said_to_be_stored_twice(tmp_path: Path) -> None:
    # One student tensor is the teacher's own (one storage under both names), the two others are copies: the file
    # holds those two twice. The merged rule counted only copies against the whole backbone (2 != 3) and said nothing.
    g = torch.Generator().manual_seed(26)
    state: dict[str, torch.Tensor] = {}
    shared = torch.randn(24, 8, generator=g)
    state["teacher.backbone.blocks.0.attn.qkv.weight"] = shared
    state["student.backbone.blocks.0.attn.qkv.weight"] = shared
    for who in ("student", "teacher"):
        state[f"{who}.backbone.cls_token"] = torch.randn(1, 1, 8, generator=g)
        state[f"{who}.backbone.blocks.1.attn.qkv.weight"] = torch.randn(24, 8, generator=g)
    for wrapper in ("", "module."):  # and DDP's `module.` pairs
        path = tmp_path / f"model_{len(wrapper)}.pth"
        torch.save({"model": {wrapper + k: v for k, v in state.items()}, "iteration": 1}, path)
        code, data = run_json("inspect", str(path))
        said = [w for w in data["warnings"] if "stored twice" in w]
        assert code == 0 and len(said) == 1, data["warnings"]
        # The copies alone: cls_token (8) and blocks.1's qkv (192), not the shared blocks.0 tensor.
        assert f"{wrapper}student.backbone.* holds the student copy of 2 tensors" in said[0], said
        assert "(200 parameters, counted in the total above)" in said[0], said


def test_a_backbone_wholly_shared_is_not_said_to_be_stored_twice(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(27)
    state: dict[str, torch.Tensor] = {}
    for name in ("a", "b"):
        state[f"teacher.backbone.{name}"] = state[f"student.backbone.{name}"] = torch.randn(4, 4, generator=g)
    path = tmp_path / "model.pth"
    torch.save(state, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and not [w for w in data["warnings"] if "stored twice" in w], data["warnings"]


def _info(name: str, size: int) -> TensorInfo:
    return TensorInfo(name=name, shape=(size,), dtype="float32", file="m.safetensors")


def _tree_text(tensors: list[TensorInfo], max_depth: int) -> str:
    tree = Tree("modules")
    _add_nodes(tree, build_module_tree(tensors), 1, max_depth)
    console = Console(width=160, record=True, color_system=None)
    with console.capture() as capture:
        console.print(tree)
    return capture.get()


def test_the_tree_cap_counts_the_blocks_a_folded_line_left_out_stands_for() -> None:
    # 250 unnumbered siblings, then 0..299 of one structure that fold into one `{0..299} ×300` line (numbered
    # children come after the others): the line cut from the tree is 300 modules, and 50 more unnumbered ones.
    tensors = [_info(f"enc.m{i}.weight", 2) for i in range(250)]
    tensors += [_info(f"enc.{i}.weight", 3) for i in range(300)]
    assert MAX_TREE_CHILDREN == 200
    text = _tree_text(tensors, 4)
    # The parent's total still counts every child, shown or not: 250 × 2 + 300 × 3.
    assert "enc  1.4K" in text, text
    assert "… 350 more modules here" in text, text
    assert "… 51 more modules here" not in text, text
    # 300 numbered layers alone fold into one line, nothing cut; --depth 1 still stops below the top.
    folded = _tree_text([_info(f"layers.{i}.w", 3) for i in range(300)], 1)
    assert "layers.{0..299} ×300" in folded and "more modules" not in folded, folded


def test_a_later_shard_whose_format_is_not_pytorchs_is_warned_of(tmp_path: Path) -> None:
    # transformers 4's load_state_dict checks each shard's own format ("does not contain the valid metadata" for one
    # not in pt / tf / flax / mlx); inspect read only the first shard's metadata, so a second shard saying "np" beside
    # a first saying "pt" (the index listing the second first) was not warned of, while a shard without format was.
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    first, second = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    save_file({"a.weight": torch.zeros(2)}, tmp_path / first, metadata={"format": "pt"})
    save_file({"z.weight": torch.zeros(2)}, tmp_path / second, metadata={"format": "np"})
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {"z.weight": second, "a.weight": first}}))
    code, data = run_json("inspect", str(tmp_path))
    said = [w for w in data["warnings"] if "format 'np'" in w]
    assert code == 0 and len(said) == 1, data["warnings"]
    assert f"metadata of {second} says format 'np'" in said[0], said
