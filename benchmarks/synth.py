"""Generators of large synthetic checkpoints for the benchmarks (never used by tests).

Tensors are written one at a time, so a 4 GB checkpoint needs one tensor's worth of memory.

    python -m benchmarks.synth bench-data/llama-4g --size 4GB --tensors 300 --format safetensors
    python -m benchmarks.synth bench-data/llama-4g-sharded --size 4GB --tensors 300 --format sharded
    python -m benchmarks.synth bench-data/big.bin --size 1GB --tensors 200 --format bin
"""

from __future__ import annotations

import argparse
import json
import math
import struct
from pathlib import Path

import torch

from weightdoctor.dtypes import CANONICAL_TO_SAFETENSORS
from weightdoctor.units import parse_size

TensorSpec = tuple[str, tuple[int, ...]]


def llama_specs(
    num_layers: int, hidden: int, intermediate: int, vocab: int, kv_heads_ratio: int = 8
) -> list[TensorSpec]:
    """Tensor names and shapes of a Llama-style decoder (9 tensors per layer plus embeddings and head)."""
    kv = max(hidden // kv_heads_ratio, 1)
    specs: list[TensorSpec] = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(num_layers):
        p = f"model.layers.{i}."
        specs += [
            (p + "self_attn.q_proj.weight", (hidden, hidden)),
            (p + "self_attn.k_proj.weight", (kv, hidden)),
            (p + "self_attn.v_proj.weight", (kv, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, hidden)),
            (p + "mlp.gate_proj.weight", (intermediate, hidden)),
            (p + "mlp.up_proj.weight", (intermediate, hidden)),
            (p + "mlp.down_proj.weight", (hidden, intermediate)),
            (p + "input_layernorm.weight", (hidden,)),
            (p + "post_attention_layernorm.weight", (hidden,)),
        ]
    specs += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    return specs


def specs_for_size(total_bytes: int, num_tensors: int, bytes_per_element: int = 4) -> list[TensorSpec]:
    """`num_tensors` Llama-named matrices of about equal size adding up to about `total_bytes`."""
    per_tensor = max(total_bytes // max(num_tensors, 1) // bytes_per_element, 1)
    cols = 1024 if per_tensor >= 1024 else 1
    rows = max(per_tensor // cols, 1)
    names = [
        name for name, _ in llama_specs(num_layers=math.ceil(num_tensors / 9) + 1, hidden=8, intermediate=8, vocab=8)
    ]
    return [(names[i], (rows, cols)) for i in range(num_tensors)]


def _tensor(shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator, std: float = 0.02) -> torch.Tensor:
    return (torch.randn(shape, generator=generator) * std).to(dtype)


def write_safetensors(
    path: Path, specs: list[TensorSpec], dtype: str = "float32", seed: int = 0, fill: str = "random"
) -> int:
    """Write a safetensors file tensor by tensor (header first); return its size in bytes.

    `fill="random"` writes N(0, 0.02) values; `fill="zeros"` writes zero bytes fast (for benchmarks that
    read headers only).
    """
    torch_dtype = getattr(torch, dtype)
    itemsize = torch.empty((), dtype=torch_dtype).element_size()
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in specs:
        size = math.prod(shape) * itemsize
        header[name] = {
            "dtype": CANONICAL_TO_SAFETENSORS[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    generator = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        for _, shape in specs:
            if fill == "zeros":
                handle.write(bytes(math.prod(shape) * itemsize))
                continue
            tensor = _tensor(shape, torch_dtype, generator)
            handle.write((tensor.view(torch.int16) if torch_dtype == torch.bfloat16 else tensor).numpy().tobytes())
    return 8 + len(raw) + offset


def write_sharded(
    folder: Path,
    specs: list[TensorSpec],
    max_shard_bytes: int,
    dtype: str = "float32",
    seed: int = 0,
    fill: str = "random",
) -> None:
    """Write `model-0000i-of-0000N.safetensors` shards and `model.safetensors.index.json`."""
    itemsize = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    groups: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        nbytes = math.prod(spec[1]) * itemsize
        if groups[-1] and size + nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(spec)
        size += nbytes
    weight_map: dict[str, str] = {}
    for i, group in enumerate(groups, 1):
        filename = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        write_safetensors(folder / filename, group, dtype, seed + i, fill)
        weight_map.update({name: filename for name, _ in group})
    total = sum(math.prod(s) * itemsize for _, s in specs)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )


def write_bin(path: Path, specs: list[TensorSpec], dtype: str = "float32", seed: int = 0) -> None:
    """Write a zip-format `torch.save` file (needs the whole state dict in memory, as torch.save does)."""
    generator = torch.Generator().manual_seed(seed)
    state_dict = {name: _tensor(shape, getattr(torch, dtype), generator) for name, shape in specs}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", default="1GB")
    parser.add_argument("--tensors", type=int, default=200)
    parser.add_argument("--format", choices=["safetensors", "sharded", "bin"], default="safetensors")
    parser.add_argument("--shard-size", default="1GB")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--fill", choices=["random", "zeros"], default="random")
    args = parser.parse_args()
    specs = specs_for_size(
        parse_size(args.size), args.tensors, torch.empty((), dtype=getattr(torch, args.dtype)).element_size()
    )
    if args.format == "safetensors":
        write_safetensors(args.out, specs, args.dtype, fill=args.fill)
    elif args.format == "sharded":
        write_sharded(args.out, specs, parse_size(args.shard_size), args.dtype, fill=args.fill)
    else:
        write_bin(args.out, specs, args.dtype)
    print(args.out)


if __name__ == "__main__":
    main()
