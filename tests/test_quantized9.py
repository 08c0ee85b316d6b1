"""Quantized checkpoints' counts (inspect) and plans (plan-devices) that earlier sessions left open.

optimum-quanto int4 / int2: a WeightQBitsTensor groups its [out, in] weight into [out x in / group_size,
group_size] rows (axis 0), one `_scale` / `_shift` row per group, and its PackedTensor packs 8 / bits of those
rows into each uint8 row (`weight._data._data` once serialized; the padding rows dropped on unpacking). The
files here are packed as quanto packs them (written here from its packing rules; quanto is not installed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_json


def quanto_pack(weight: torch.Tensor, bits: int, group_size: int | None) -> dict[str, torch.Tensor]:
    """A Linear weight as quanto's WeightQBitsTensor.save_to_state_dict stores it (axis 0, affine)."""
    grouped = weight if group_size is None else weight.reshape(-1, group_size)
    levels = 2**bits - 1
    low, high = grouped.amin(dim=1, keepdim=True), grouped.amax(dim=1, keepdim=True)
    scale = ((high - low) / levels).clamp(min=1e-6)
    values = ((grouped - low) / scale).round().clamp(0, levels).to(torch.uint8)
    per = 8 // bits
    rows = -(-values.shape[0] // per)
    packed = torch.zeros(rows, values.shape[1], dtype=torch.uint8)
    for i in range(per):  # quanto's pack_weights: the i-th slice of `rows` rows shifted by bits x i
        part = values[i * rows:(i + 1) * rows]
        packed[: part.shape[0]] |= part << (bits * i)
    return {"_data._data": packed, "_scale": scale.half(), "_shift": (-low / scale).half()}


def quanto_unpack(packed: torch.Tensor, bits: int, rows: int) -> torch.Tensor:
    """quanto's PackedTensor.unpack: each slice back, then the padding rows dropped (its size's first dim)."""
    per = 8 // bits
    parts = [(packed >> (bits * i)) & (2**bits - 1) for i in range(per)]
    return torch.cat(parts)[:rows]


# (out, in, group size): grouped by 128, an odd number of groups (padding rows for int4 and int2), ungrouped.
LAYERS = {"model.layers.0.mlp.up_proj": (50, 128, 128), "model.layers.0.mlp.down_proj": (64, 256, 128),
          "model.layers.0.self_attn.q_proj": (6, 64, None)}


def write_quanto(folder: Path, bits: int, config: bool) -> tuple[int, dict[str, int]]:
    """A quanto checkpoint: its Linear layers packed at `bits`, a norm and embeddings in fp16. Returns the
    parameters the original model had and each layer's weight numel as quanto's own unpacking yields it."""
    folder.mkdir()
    torch.manual_seed(0)
    tensors = {"model.embed_tokens.weight": torch.randn(32, 64).half(), "model.norm.weight": torch.ones(64).half()}
    original = sum(t.numel() for t in tensors.values())
    unpacked: dict[str, int] = {}
    for name, (out, inp, group) in LAYERS.items():
        weight = torch.randn(out, inp)
        original += weight.numel()
        parts = quanto_pack(weight, bits, group)
        rows = parts["_scale"].shape[0]
        unpacked[name] = quanto_unpack(parts["_data._data"], bits, rows).numel()
        tensors |= {f"{name}.weight.{key}": value for key, value in parts.items()}
        tensors[f"{name}.input_scale"] = torch.ones(()).half()  # QModuleMixin's activation scales
        tensors[f"{name}.output_scale"] = torch.ones(()).half()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    settings: dict[str, object] = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
    if config:
        settings["quantization_config"] = {"quant_method": "quanto", "weights": f"int{bits}", "activations": None}
    (folder / "config.json").write_text(json.dumps(settings))
    return original, unpacked


def _node(tree: list[dict], path: str) -> dict:
    """The module-tree node whose dotted path (the names of the nodes down to it, joined) is `path`."""
    for node in tree:
        if path == node["name"]:
            return node
        if path.startswith(node["name"] + "."):
            return _node(node["children"], path[len(node["name"]) + 1:])
    raise AssertionError(f"{path} not in {[n['name'] for n in tree]}")


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("config", [True, False])
def test_quanto_int4_and_int2_layers_count_the_weights_quanto_unpacks(tmp_path: Path, bits: int,
                                                                     config: bool) -> None:
    """The packed `weight._data._data` counted as its stored bytes (a half or a quarter of the weights), and
    without a quantization_config (quanto's own save) the checkpoint was not seen as quantized at all: its
    scales and shifts counted as parameters."""
    folder = tmp_path / f"quanto-int{bits}"
    original, unpacked = write_quanto(folder, bits, config)
    assert unpacked == {name: out * inp for name, (out, inp, _) in LAYERS.items()}  # the oracle is sound
    code, data = run_json("inspect", str(folder), "--json")
    assert code == 0, data
    quantized = data["quantized"]
    assert quantized["parameters"] == original, quantized
    assert quantized["packed_tensors"] == len(LAYERS) and quantized["side_tensors"] >= 2 * len(LAYERS)
    assert quantized["method"] == ("quanto" if config else "quanto-like (no quantization_config)")
    for name, numel in unpacked.items():
        node = _node(data["module_tree"], name + ".weight")
        assert node["num_params"] == numel, (name, node)
