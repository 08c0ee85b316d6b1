"""fairseq's model-parallel parts (model_part-0.pt, model_part-1.pt, ...): one model's tensors split between files.

fairseq trained with --model-parallel-size N (Megatron's tensor parallelism: fairseq/model_parallel) saves one file
per model-parallel rank, its checkpoint name with `-model_part-R` added (checkpoint_last-model_part-0.pt; the
Megatron-11b release's model_part-0.pt, metaseq's OPT releases' reshard-model_part-0.pt). Each holds every tensor
name, the split ones' slices: Megatron's column-parallel layers (k/q/v_proj, fc1) and the vocabulary-parallel
embedding along dim 0, its row-parallel layers (out_proj, fc2) along dim 1, their biases and the layer norms whole
in every part. Read as a folder they were "several weight files, name one"; one read alone looked like the whole
model at a fraction of its size.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from weightdoctor.paths import fresh_sibling
from weightdoctor.wording import counted

# `{checkpoint}-model_part-{rank}.pt` (fairseq's Trainer.checkpoint_suffix), or `model_part-{rank}.pt` alone. The
# FSDP shards of a part (`-model_part-0-shard0.pt`, metaseq) are flat parameters, another layout: not matched.
_PART = re.compile(r"(?P<stem>(?:.+-)?)model_part-(?P<rank>\d+)\.pt")
# Which names fairseq's model-parallel modules split along which dimension, as metaseq's scripts/reshard_mp.py merges
# them: ColumnParallelLinear (k/q/v_proj, the fused qkv_proj, fc1, NormFormer's ffn_layernorm) and
# VocabParallelEmbedding (embed_tokens; an untied output_projection) along dim 0, RowParallelLinear's weight (out_proj,
# fc2) along dim 1; the row-parallel biases, layer norms, positions and version are whole in every part.
_DIM0 = re.compile(r"(?:^|\.)(?:embed_tokens|output_projection|ffn_layernorm|fc1|[kqv]_proj|qkv_proj)"
                   r"\.(?:weight|bias)$")
_DIM1 = re.compile(r"(?:^|\.)(?:fc2|out_proj)\.weight$")
# The most parts whose tensor names and shapes are compared (the part read, then the first ones, then the last).
MAX_PARTS_COMPARED = 8
# Set while the other parts are read for the comparison: reading them says nothing of their own siblings.
_COMPARING: contextvars.ContextVar[bool] = contextvars.ContextVar("comparing_model_parts", default=False)


@dataclass(frozen=True)
class PartsLayout:
    """How a tensor-parallel model's tensors are spread over its parts: `split` (name -> the dimension its slices
    are concatenated along), `whole` (names the same in every part), `by_shape` (split names told by their shapes
    differing between parts rather than by the module's name), `differing` (names some compared part lacks, or whose
    shapes differ in more than one dimension), `part_params` (the parameters of the part read) and `merged_params`
    (the parameters of the model merged: each split tensor once per part)."""

    split: dict[str, int]
    whole: tuple[str, ...]
    by_shape: tuple[str, ...]
    differing: tuple[str, ...]
    part_params: int
    merged_params: int


def split_layout(parts: Sequence[Mapping[str, tuple[int, ...]]], count: int) -> PartsLayout:
    """Which tensors of `parts` (name -> shape, the first the part read) are split, along which dimension: where the
    compared parts' shapes differ in one dimension, that one; else by the module's name, as fairseq's model-parallel
    modules split it; every other tensor is whole in each part. `count`: how many parts the model has.

    Example:
        >>> layout = split_layout([{"fc1.weight": (8, 4), "fc2.weight": (4, 8), "ln.weight": (4,)}] * 2, 2)
        >>> layout.split, layout.whole, layout.merged_params
        ({'fc1.weight': 0, 'fc2.weight': 1}, ('ln.weight',), 132)
    """
    first = parts[0]
    split: dict[str, int] = {}
    whole: list[str] = []
    by_shape: list[str] = []
    differing: list[str] = []
    part_params = merged_params = 0
    for name, shape in first.items():
        size = _numel(shape)
        part_params += size
        others = [part.get(name) for part in parts[1:]]
        if any(other is None or len(other) != len(shape) for other in others):
            differing.append(name)
            merged_params += size
            continue
        dims = {dim for other in others for dim, (mine, theirs) in enumerate(zip(shape, other, strict=True))
                if mine != theirs}
        if len(dims) > 1:
            differing.append(name)
            merged_params += size
        elif dims:
            split[name] = dims.pop()
            by_shape.append(name)
            merged_params += size * count
        elif shape and _DIM1.search(name) and len(shape) >= 2:
            split[name] = 1
            merged_params += size * count
        elif shape and _DIM0.search(name):
            split[name] = 0
            merged_params += size * count
        else:
            whole.append(name)
            merged_params += size
    differing += [name for part in parts[1:] for name in part if name not in first and name not in differing]
    return PartsLayout(split, tuple(whole), tuple(by_shape), tuple(differing), part_params, merged_params)


def _numel(shape: Sequence[int]) -> int:
    size = 1
    for extent in shape:
        size *= extent
    return size


def part_rank(name: str) -> tuple[str, int] | None:
    """(the name before `model_part-`, the rank) of a fairseq model-parallel part's file name, else None.

    Example:
        >>> part_rank("checkpoint_last-model_part-1.pt")
        ('checkpoint_last-', 1)
    """
    match = _PART.fullmatch(name)
    return None if match is None else (match["stem"], int(match["rank"]))


def parts_of_one_model(files: Sequence[Path]) -> list[Path] | None:
    """`files` sorted by rank when they are all parts of one model-parallel save (one name before `model_part-`, two
    or more ranks), else None."""
    ranks = [part_rank(path.name) for path in files]
    if len(files) < 2 or any(rank is None for rank in ranks) or len({rank[0] for rank in ranks if rank}) != 1:
        return None
    return [path for _, path in sorted(zip((rank[1] for rank in ranks if rank), files, strict=True))]


def _parts_beside(path: Path) -> list[Path]:
    """The parts of the save `path` is a part of, itself included, sorted by rank; [path] alone where none is beside
    it or the folder cannot be listed."""
    stem = part_rank(path.name)
    if stem is None:
        return [path]
    try:
        beside = [entry for entry in path.parent.iterdir()
                  if (rank := part_rank(entry.name)) is not None and rank[0] == stem[0] and entry.is_file()]
    except OSError:
        return [path]
    return parts_of_one_model(beside) or [path]


def parts_counted(files: Sequence[Path]) -> int:
    """How many model-parallel parts the one file in `files` is one of (itself and the parts beside it), 0 when it is
    no such part, none is beside it, or `files` is not one file."""
    if len(files) != 1 or part_rank(files[0].name) is None:
        return 0
    parts = _parts_beside(files[0])
    return len(parts) if len(parts) >= 2 else 0


def _shapes_of(paths: Sequence[Path]) -> list[dict[str, tuple[int, ...]]]:
    """Each part's tensor names and shapes, read as any checkpoint is (headers, a memory map); a part that cannot be
    read is left out of the comparison."""
    from weightdoctor.checkpoint.reader import open_checkpoint
    from weightdoctor.errors import WeightDoctorError

    shapes = []
    token = _COMPARING.set(True)
    try:
        for path in paths:
            try:
                shapes.append({t.name: tuple(t.shape) for t in open_checkpoint(path).tensors})
            except (WeightDoctorError, OSError):
                continue
    finally:
        _COMPARING.reset(token)
    return shapes


def _compared(parts: Sequence[Path], read: Path) -> list[Path]:
    """The other parts compared with `read`: the first ones, and the last, MAX_PARTS_COMPARED in all."""
    others = [path for path in parts if path != read]
    if len(others) < MAX_PARTS_COMPARED:
        return others
    return [*others[:MAX_PARTS_COMPARED - 2], others[-1]]


def _kinds(names: Sequence[str], limit: int = 5, split_modules: frozenset[str] = frozenset()) -> str:
    """The modules' own names of `names`, each once, in order (`embed_tokens, k_proj, q_proj`); a tensor of a module
    in `split_modules` (out_proj's whole bias beside its split weight) by its module and own name, `out_proj.bias`."""
    kinds: list[str] = []
    for name in names:
        parts = name.split(".")
        own = len(parts) < 2 or parts[-1] not in ("weight", "bias") and not parts[-1].startswith("_")
        kind = parts[-1] if own else ".".join(parts[-2:]) if parts[-2] in split_modules else parts[-2]
        if kind not in kinds:
            kinds.append(kind)
    return ", ".join(kinds[:limit]) + (", ..." if len(kinds) > limit else "")


def _module(name: str) -> str:
    parts = name.split(".")
    return parts[-2] if len(parts) >= 2 else parts[-1]


def _spread(layout: PartsLayout) -> str:
    """What is split along which dimension and what is whole, in words."""
    by_dim: dict[int, list[str]] = {}
    for name, dim in layout.split.items():
        by_dim.setdefault(dim, []).append(name)
    said = [f"{counted(len(names), 'tensor')} split along dim {dim} ({_kinds(names)})"
            for dim, names in sorted(by_dim.items())]
    if layout.whole:
        split_modules = frozenset(map(_module, layout.split))
        said.append(f"{len(layout.whole):,} whole in every part ({_kinds(layout.whole, 6, split_modules)})")
    if layout.differing:
        said.append(f"{len(layout.differing):,} not alike in every part compared ({layout.differing[0]}"
                    f"{', ...' if len(layout.differing) > 1 else ''})")
    told = ("by their module names, as fairseq's model-parallel layers split them" if not layout.by_shape else
            f"{len(layout.by_shape):,} of them by their shapes differing between parts, the others by their module "
            "names, as fairseq's model-parallel layers split them")
    return ", ".join(said[:-1]) + (" and " if len(said) > 1 else "") + said[-1] + f" (told {told})"


def merge_how(parts: Sequence[Path], layout: PartsLayout) -> str:
    """How to merge the parts into one state dict, written beside them (never over a file): metaseq's reshard_mp where
    a fused qkv_proj is split (a plain concatenation would interleave its q, k and v), else torch.cat of each split
    tensor's slices in rank order, the other tensors from part 0.

    Example:
        >>> layout = split_layout([{"fc1.weight": (8, 4), "ln.weight": (4,)}] * 2, 2)
        >>> merge_how([Path("/nonexistent/model_part-0.pt"), Path("/nonexistent/model_part-1.pt")], layout)[-47:]
        "'/nonexistent/model.pt') writes the whole model"
    """
    stem = part_rank(parts[0].name)
    prefix = stem[0] if stem is not None else ""
    output = str(fresh_sibling(parts[0].parent / (prefix.rstrip("-") or "model"), ".pt"))
    if any(name.endswith(("qkv_proj.weight", "qkv_proj.bias")) for name in layout.split):
        return (f"metaseq's scripts/reshard_mp.py merges them, its fused qkv_proj included (python -m "
                f"metaseq.scripts.reshard_mp --input {str(parts[0].parent / (prefix + 'model_part-*.pt'))!r} "
                f"--output {output!r} --num-output-parts 1)")
    # By the names' last two parts (`k_proj.weight`: 0) where that says each name's dimension, so a model of 96
    # layers is told in a dozen entries; by full name where it does not.
    by_suffix: dict[str, int | None] = {}
    for name in [*layout.split, *layout.whole, *layout.differing]:
        suffix = ".".join(name.split(".")[-2:])
        dim = layout.split.get(name)
        by_suffix[suffix] = dim if by_suffix.get(suffix, dim) == dim else -1
    if -1 in by_suffix.values():
        dims, key = {name: dim for name, dim in layout.split.items()}, "k"
    else:
        dims, key = {suffix: dim for suffix, dim in by_suffix.items() if dim is not None}, "'.'.join(k.split('.')[-2:])"
    files = f"[{str(parts[0].parent / (prefix + 'model_part-'))!r} + str(rank) + '.pt' for rank in range({len(parts)})]"
    return ("concatenate each split tensor's slices in rank order along its dimension, the others taken from part 0 "
            "(import argparse, torch; torch.serialization.add_safe_globals([argparse.Namespace]); "
            f"parts = [torch.load(f, map_location='cpu')['model'] for f in {files}]; dims = {dims!r}; "
            f"torch.save({{k: torch.cat([p[k] for p in parts], dim=dims[{key}]) if {key} in dims else v "
            f"for k, v in parts[0].items()}}, {output!r}) writes the whole model")


def folder_message(parts: Sequence[Path]) -> str:
    """The refusal of a folder of model-parallel parts: what they are, how the tensors are spread, how to merge."""
    shapes = _shapes_of([parts[0], *_compared(parts, parts[0])])
    total = _rank_count(parts)
    held = f"{len(parts)} of the {total}" if total > len(parts) else f"{len(parts)}"
    if not shapes:
        return (f"folder holds {held} model-parallel parts of one fairseq model ({parts[0].name} to "
                f"{parts[-1].name}), none of which could be read")
    layout = split_layout(shapes, total)
    return (f"folder holds {held} tensor-parallel parts of one fairseq model ({parts[0].name} to "
            f"{parts[-1].name}; fairseq's --model-parallel-size {total}), not shards of one state dict: each "
            f"holds every tensor name, {_spread(layout)}; merged, the model holds {layout.merged_params:,} parameters "
            f"({layout.part_params:,} in a part). "
            + _merge_said(parts, layout, "Merge them into one state dict first and read that")
            + "; or name one part to read it alone")


def _rank_count(parts: Sequence[Path]) -> int:
    """How many parts the save has: its highest rank and one (ranks start at 0)."""
    return max((rank[1] for path in parts if (rank := part_rank(path.name)) is not None), default=-1) + 1


def _merge_said(parts: Sequence[Path], layout: PartsLayout, lead: str) -> str:
    """`lead` and how to merge, or which ranks are missing, which no merge can do without."""
    ranks = {rank[1] for path in parts if (rank := part_rank(path.name)) is not None}
    absent = sorted(set(range(_rank_count(parts))) - ranks)
    if absent:
        return (f"The {counted(len(absent), 'part')} of rank{'s' if len(absent) > 1 else ''} "
                f"{', '.join(map(str, absent[:4]))}{', ...' if len(absent) > 4 else ''} "
                f"{'is' if len(absent) == 1 else 'are'} not beside {'them' if len(parts) > 1 else 'it'}, and no "
                "merge is whole without every part: fetch the missing ones from where these came from, then merge")
    return (f"{lead}: {merge_how(parts, layout)}; fairseq itself loads the parts only under --model-parallel-size "
            f"{len(parts)}")


def part_warning(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """A warning when `path` is one fairseq model-parallel part (`model_part-R.pt`) and `shapes` its tensors: that
    its split tensors are slices, the model's size merged, and how to merge; [] for any other file."""
    rank = part_rank(path.name)
    if rank is None or _COMPARING.get() or not shapes:
        return []
    parts = _parts_beside(path)
    if len(parts) < 2:
        layout = split_layout([shapes], 2)
        if not layout.split:
            return []  # a file of that name whose names fairseq's model-parallel layers never split
        return [f"{path.name} is, by its name, one rank's part of a fairseq model trained with --model-parallel-size "
                f"(model_part-R.pt), and no other part is beside it: {_spread(layout)}, so the split ones are "
                "slices here and the counts above one part's; the model is all its parts merged"]
    total = _rank_count(parts)
    layout = split_layout([dict(shapes), *_shapes_of(_compared(parts, path))], total)
    held = f"{len(parts)} of the {total}" if total > len(parts) else f"the {total}"
    return [f"{path.name} is part {rank[1]} of {held} tensor-parallel parts of one fairseq model beside "
            f"it ({parts[0].name} to {parts[-1].name}): {_spread(layout)}, so the split ones are slices here and "
            f"the counts above one part's ({layout.part_params:,} parameters; merged, {layout.merged_params:,}). "
            + _merge_said(parts, layout, "Merge the parts into one state dict before loading, comparing or planning "
                                         "it")]
