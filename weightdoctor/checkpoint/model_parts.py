"""fairseq's model-parallel parts (model_part-0.pt, model_part-1.pt, ...): one model's tensors split between files.

fairseq trained with --model-parallel-size N (Megatron's tensor parallelism: fairseq/model_parallel) saves one file
per model-parallel rank, its checkpoint name with `-model_part-R` added (checkpoint_last-model_part-0.pt; the
Megatron-11b release's model_part-0.pt, metaseq's OPT releases' reshard-model_part-0.pt). Each holds every tensor
name, the split ones' slices: Megatron's column-parallel layers (k/q/v_proj, fc1) and the vocabulary-parallel
embedding along dim 0, its row-parallel layers (out_proj, fc2) along dim 1, their biases and the layer norms whole
in every part. Read as a folder they were "several weight files, name one"; one read alone looked like the whole
model at a fraction of its size.

Trained with --ddp-backend fully_sharded --use-sharded-state as well (metaseq's OPT runs), every part is split again
over the data-parallel ranks: `checkpoint_last-model_part-0-shard0.pt`, Trainer.checkpoint_suffix's `-shard{rank}`
after the part's, each the rank's fairscale FSDP local_state_dict (one 1-D `flat_param_0` per wrapped module, the
last ranks' zero-padded) with the metadata that unflattens it (metaseq: `shard_metadata`; fairseq: `fsdp_metadata`).
metaseq's OPT releases ship each part's shards merged into one `reshard-model_part-R.pt`, still flat. With no model
parallelism the shards are `checkpoint_last-shard0.pt`, ...: told by their contents (flat parameters and that
metadata), since other tools name files `-shardN.pt` too.
"""

from __future__ import annotations

import contextlib
import contextvars
import fnmatch
import glob
import itertools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from weightdoctor.paths import fresh_sibling
from weightdoctor.wording import counted

# `{checkpoint}-model_part-{rank}.pt` (fairseq's Trainer.checkpoint_suffix), or `model_part-{rank}.pt` alone.
_PART = re.compile(r"(?P<stem>(?:.+-)?)model_part-(?P<rank>\d+)\.pt")
# A part's FSDP shards (`-model_part-{rank}-shard{dp_rank}.pt`): flat parameters, told apart by `sharded_part_rank`.
_SHARDED_PART = re.compile(r"(?P<stem>(?:.+-)?)model_part-(?P<rank>\d+)-shard(?P<shard>\d+)\.pt")
# One data-parallel rank's FSDP shard of a model with no model parallelism (`checkpoint_last-shard0.pt`): fairseq's and
# metaseq's Trainer.checkpoint_suffix under --use-sharded-state, `-shard{dp_rank}` with no `-model_part-R` before it.
# The name alone proves nothing (other tools write `-shard0.pt` too): the files' contents must (`fsdp_shard_proof`).
_FSDP_SHARD = re.compile(r"(?P<stem>.+)-shard(?P<shard>\d+)\.pt")
# fairscale's FlattenParamsWrapper names each wrapped module's flat parameter `flat_param_0` (1-D).
_FLAT_PARAM = re.compile(r"(?:^|\.)flat_param_\d+$")
# The entries fairscale's local_metadata_dict is saved under: metaseq's Trainer, then fairseq's.
_METADATA_KEYS = ("shard_metadata", "fsdp_metadata")
# metaseq's consolidate_model_parallel gives part p every shard whose name holds `part-{p}`: with more parts than
# this, `part-1` is in `model_part-10-shard0.pt` too.
_CONSOLIDATE_MAX_PARTS = 10
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
# Inside `reading_each_part_once`: what each part file read gave, by its identity (device, inode, size, mtime).
# plan-devices on one part compared its siblings twice (the reader's warning, then `part_of_model` for the plan),
# and a folder's refusal read its first part twice (its kind, then its shapes): each sibling is read once now.
_READS: contextvars.ContextVar[dict[tuple[int, int, int, int], _PartRead] | None] = contextvars.ContextVar(
    "model_part_reads", default=None)


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
    # Each name once however many compared parts hold it (a list searched for each was quadratic, and a name in two
    # other parts was counted twice: "3 not alike" of one name in three parts).
    said = set(differing)
    for part in parts[1:]:
        for name in part:
            if name not in first and name not in said:
                differing.append(name)
                said.add(name)
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


@dataclass(frozen=True)
class _PartRead:
    """One part file's tensor names and shapes, its other entries and the parameters its FSDP metadata says its flat
    parameters hold; `readable` False (and the rest empty) where it could not be read."""

    shapes: dict[str, tuple[int, ...]]
    entries: list[str]
    unflattened: dict[str, tuple[int, ...]] | None
    readable: bool


@contextlib.contextmanager
def reading_each_part_once() -> Iterator[None]:
    """Within it, each part file is read at most once, however many times its siblings' layout is asked for (the
    reader's warning, then plan-devices' `part_of_model`); a scope inside another shares the outer one's reads."""
    if _READS.get() is not None:
        yield
        return
    token = _READS.set({})
    try:
        yield
    finally:
        _READS.reset(token)


def _read_part(path: Path) -> _PartRead:
    """`path` read as any checkpoint is (headers, a memory map), or what an earlier read of the same file in this
    `reading_each_part_once` scope gave."""
    from weightdoctor.checkpoint.reader import open_checkpoint
    from weightdoctor.errors import WeightDoctorError

    reads = _READS.get()
    try:
        found = path.stat()
        identity: tuple[int, int, int, int] | None = (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)
    except OSError:
        identity = None  # not cached: the read below says the same
    if reads is not None and identity is not None and identity in reads:
        return reads[identity]
    token = _COMPARING.set(True)
    try:
        checkpoint = open_checkpoint(path)
        unflattened = next((contents.fsdp_unflattened for contents in checkpoint._pickles.values()
                            if contents.fsdp_unflattened), None)
        read = _PartRead({t.name: tuple(t.shape) for t in checkpoint.tensors}, list(checkpoint.other_entries),
                         unflattened, True)
    except (WeightDoctorError, OSError):
        read = _PartRead({}, [], None, False)
    finally:
        _COMPARING.reset(token)
    if reads is not None and identity is not None:
        reads[identity] = read
    return read


def _shapes_of(paths: Sequence[Path]) -> list[dict[str, tuple[int, ...]]]:
    """Each part's tensor names and shapes, read as any checkpoint is (headers, a memory map); a part that cannot be
    read is left out of the comparison."""
    return [read.shapes for path in paths if (read := _read_part(path)).readable]


def _compared(parts: Sequence[Path], read: Path) -> list[Path]:
    """The other parts compared with `read`: the first ones, and the last, MAX_PARTS_COMPARED in all."""
    others = [path for path in parts if path != read]
    if len(others) < MAX_PARTS_COMPARED:
        return others
    return [*others[:MAX_PARTS_COMPARED - 2], others[-1]]


def _kinds(names: Sequence[str], limit: int = 5, split_modules: frozenset[str] = frozenset()) -> str:
    """The modules' own names of `names`, each once, in order (`embed_tokens, k_proj, q_proj`); a tensor of a module
    in `split_modules` (out_proj's whole bias beside its split weight) by its module and own name, `out_proj.bias`."""
    # A dict keeps the first of each in order: a list searched for each name was quadratic (40,000 names of a
    # module each, read from a part's file: 111 s).
    found: dict[str, None] = {}
    for name in names:
        parts = name.split(".")
        own = len(parts) < 2 or parts[-1] not in ("weight", "bias") and not parts[-1].startswith("_")
        found.setdefault(parts[-1] if own else ".".join(parts[-2:]) if parts[-2] in split_modules else parts[-2])
    kinds = list(found)
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
    with reading_each_part_once():
        return _folder_message(parts)


def _folder_message(parts: Sequence[Path]) -> str:
    first, entries, unflattened = _read_one(parts[0])
    if flat_parameters(first)[0]:
        # metaseq's OPT releases: each part's FSDP flat parameters, which no torch.cat of same-named tensors merges.
        return _flat_parts_message(parts, first, fsdp_metadata_key(entries), unflattened)
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


# The absent ranks or files a sentence names; past them it says "...".
_ABSENT_SHOWN = 4


def _absent(held: set[tuple[int, ...]], bounds: tuple[int, ...]) -> tuple[int, list[tuple[int, ...]]]:
    """How many of the indices below `bounds` (entry i in range(bounds[i])) `held` lacks, and the first of them in
    order (`_ABSENT_SHOWN` and one): counted, never listed whole, for the bounds come from file names
    (`model_part-999999999999.pt` beside `model_part-0.pt` built a list of 10**12 ranks: minutes and GBs, never
    done). `held` lies within `bounds`, its highest entries and one.

    Example:
        >>> _absent({(0,), (3,)}, (4,))
        (2, [(1,), (2,)])
    """
    def below(depth: int) -> Iterator[tuple[int, ...]]:
        if depth == len(bounds):
            yield ()
            return
        for value in range(bounds[depth]):
            for rest in below(depth + 1):
                yield (value, *rest)

    # Each index held is passed once at most before the first absent ones are found: len(held) + 5 steps at most.
    first = list(itertools.islice((index for index in below(0) if index not in held), _ABSENT_SHOWN + 1))
    return math.prod(bounds) - len(held), first


def _absent_said(lead: str, count: int, shown: Sequence[str], beside: int, whole: str, then: str) -> str:
    """The sentence of `count` absent parts or shards (`lead` the words before them, `shown` the first of them),
    which no `whole` is whole without, beside `beside` files, ending in what to do once they are fetched."""
    return (f"{lead} {', '.join(shown[:_ABSENT_SHOWN])}{', ...' if count > _ABSENT_SHOWN else ''} "
            f"{'is' if count == 1 else 'are'} not beside {'them' if beside > 1 else 'it'}, and no {whole}: fetch "
            f"the missing ones from where these came from, then {then}")


def _missing_ranks_said(parts: Sequence[Path], then: str) -> str:
    """Which ranks below the highest are not among `parts` (no merge is whole without them), ending in what to do
    once they are fetched (`then`: "merge", "unflatten"); "" when none is missing."""
    ranks = {(rank[1],) for path in parts if (rank := part_rank(path.name)) is not None}
    count, absent = _absent(ranks, (_rank_count(parts),))
    if not count:
        return ""
    return _absent_said(f"The {counted(count, 'part')} of rank{'s' if count > 1 else ''}", count,
                        [str(rank) for rank, in absent], len(parts), "merge is whole without every part", then)


def _merge_said(parts: Sequence[Path], layout: PartsLayout, lead: str) -> str:
    """`lead` and how to merge, or which ranks are missing, which no merge can do without."""
    missing = _missing_ranks_said(parts, "merge")
    if missing:
        return missing
    return (f"{lead}: {merge_how(parts, layout)}; fairseq itself loads the parts only under --model-parallel-size "
            f"{len(parts)}")


def part_warning(path: Path, shapes: Mapping[str, tuple[int, ...]], entries: Sequence[str] = (),
                 unflattened: Mapping[str, tuple[int, ...]] | None = None) -> list[str]:
    """A warning when `path` is one fairseq model-parallel part (`model_part-R.pt`) and `shapes` its tensors: that
    its split tensors are slices, the model's size merged, and how to merge; for an FSDP-flattened part or one FSDP
    shard of a part (`entries`: the file's other entries, which name its shard metadata), what it is and how to
    unflatten it (`unflattened`: the parameters its FSDP metadata says the flat ones hold), or one FSDP shard of a
    model with no model parallelism (`checkpoint_last-shard0.pt`) that its flat parameters and metadata prove one;
    [] for any other file."""
    if _COMPARING.get() or not shapes:
        return []
    if sharded_part_rank(path.name) is not None:
        return _sharded_part_warning(path, shapes, entries, unflattened)
    rank = part_rank(path.name)
    if rank is None:
        return _fsdp_shard_warning(path, shapes, entries, unflattened)
    parts = _parts_beside(path)
    if (flat := flat_parameters(shapes))[0]:
        key = fsdp_metadata_key(entries)
        total = _rank_count(parts)
        held = f"{len(parts)} of the {total}" if total > len(parts) else f"the {total}"
        said = (f"is part {rank[1]} of {held} model-parallel parts of one {_who(key)} model beside it "
                f"({parts[0].name} to {parts[-1].name})" if len(parts) > 1 else
                f"is, by its name, one model-parallel part of a {_who(key)} model, and no other part is beside it")
        return [f"{path.name} {said}, its weights still flattened by fairscale's FullyShardedDataParallel into "
                f"{counted(flat[0], 'flat parameter')} ({flat[1]:,} values"
                f"{_unflattened_said(shapes, unflattened, key, total if len(parts) > 1 else 0)}): none loads by "
                "name, and the counts above are one part's, flattened. " + _unflatten_parts_how(parts, key)]
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


# --- FSDP-flattened parts: metaseq's (and fairseq's) --ddp-backend fully_sharded under --model-parallel-size --------


def sharded_part_rank(name: str) -> tuple[str, int, int] | None:
    """(the name before `model_part-`, the model-parallel rank, the data-parallel shard) of an FSDP-sharded part's
    file name, else None.

    Example:
        >>> sharded_part_rank("checkpoint_last-model_part-1-shard3.pt")
        ('checkpoint_last-', 1, 3)
    """
    match = _SHARDED_PART.fullmatch(name)
    return None if match is None else (match["stem"], int(match["rank"]), int(match["shard"]))


def sharded_parts_of_one_model(files: Sequence[Path]) -> list[Path] | None:
    """`files` sorted by part and shard when they are all FSDP shards of one save's model-parallel parts (one name
    before `model_part-`, two files or more), else None."""
    ranks = [sharded_part_rank(path.name) for path in files]
    if len(files) < 2 or any(rank is None for rank in ranks) or len({rank[0] for rank in ranks if rank}) != 1:
        return None
    return [path for _, path in sorted(((rank[1], rank[2]) if rank else (0, 0), path)
                                       for rank, path in zip(ranks, files, strict=True))]


def flat_parameters(shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, int]:
    """How many of `shapes` are fairscale flat parameters (1-D `flat_param_N`), and their values.

    Example:
        >>> flat_parameters({"flat_param_0": (640,), "decoder.layers.0.flat_param_0": (96,), "decoder.version": (1,)})
        (2, 736)
    """
    flat = [_numel(shape) for name, shape in shapes.items() if len(shape) == 1 and _FLAT_PARAM.search(name)]
    return len(flat), sum(flat)


def fsdp_metadata_key(entries: Sequence[str]) -> str | None:
    """Which entry beside the model holds fairscale's local_metadata_dict (`entries` as Checkpoint.other_entries
    writes them, `shard_metadata (dict, 2 entries)`): metaseq's `shard_metadata`, fairseq's `fsdp_metadata`; None
    where none does.

    Example:
        >>> fsdp_metadata_key(["cfg (dict, 5 entries)", "shard_metadata (dict, 2 entries)"])
        'shard_metadata'
    """
    return next((key for key in _METADATA_KEYS if any(entry.startswith(key + " ") for entry in entries)), None)


def _read_one(path: Path) -> tuple[dict[str, tuple[int, ...]], list[str], dict[str, tuple[int, ...]] | None]:
    """One file's tensor names and shapes, its other entries, and the parameters its FSDP metadata says its flat
    parameters hold (see `PickleContents.fsdp_unflattened`); empty where it cannot be read."""
    read = _read_part(path)
    return read.shapes, read.entries, read.unflattened


def _unflattened_said(shapes: Mapping[str, tuple[int, ...]], unflattened: Mapping[str, tuple[int, ...]] | None,
                      key: str | None, parts: int) -> str:
    """The parameters the flat ones hold, by the shapes the metadata under `key` gives (`shapes`' other tensors,
    the buffers, added): a part's and the merged model's where there are `parts` model-parallel parts (the split
    tensors told by their module names), the model's where `parts` is 1, a part's alone where it is 0 (a part
    whose siblings are not beside it); "" where no metadata says."""
    if not unflattened:
        return ""
    named = {**{name: shape for name, shape in shapes.items() if not _FLAT_PARAM.search(name)}, **unflattened}
    said = f"; unflattened by its {key or 'metadata'}'s shapes, "
    if parts < 2:
        return said + f"{'the model' if parts else 'the part'} holds {sum(map(_numel, named.values())):,} parameters"
    layout = split_layout([named], parts)
    return said + (f"a part holds {layout.part_params:,} parameters and the model merged {layout.merged_params:,} "
                   "(its split tensors told by their module names)")


def fairscale_unflatten_fix(key: str | None) -> str:
    """How every rank's file of fairscale flat parameters is unflattened by the metadata its file holds under `key`
    (metaseq's `shard_metadata`, fairseq's `fsdp_metadata`; None: neither, and nothing but the model recovers
    them): the one wording of inspect's flat-parameter warning and diff-keys' note, which each wrote it apart."""
    if key == "shard_metadata":
        return ("metaseq's consolidate_fsdp_shards (python -m metaseq.scripts.consolidate_fsdp_shards given the files' "
                "path up to -shardN.pt, or to -model_part-) reads each file's 'shard_metadata', glues model-parallel "
                "parts too, and writes that path with _consolidated.pt added; or fairscale's FullyShardedDataParallel."
                "consolidate_shard_weights(shard_weights=[each file's 'model'], shard_metadata=[each file's "
                "'shard_metadata']), then torch.save the dict it returns")
    if key == "fsdp_metadata":
        return ("fairscale's FullyShardedDataParallel.consolidate_shard_weights(shard_weights=[each file's 'model'], "
                "shard_metadata=[each file's 'fsdp_metadata']), which fairseq's checkpoint_utils."
                "load_model_ensemble_and_task([path], num_shards=N) calls, then torch.save the dict it returns")
    return ("only the model loaded under FSDP at the same world size (fairscale's load_local_state_dict) and saved "
            "whole (state_dict(), not local_state_dict()) recovers the weights")


def _who(key: str | None) -> str:
    return {"shard_metadata": "metaseq", "fsdp_metadata": "fairseq"}.get(key or "", "metaseq / fairseq")


def _fresh_prefix(prefix: Path) -> Path:
    """`prefix`, numbered where `prefix.pt` is taken, for a script that writes `{prefix}.pt`."""
    candidate, number = prefix, 2
    while candidate.with_name(candidate.name + ".pt").exists():
        candidate, number = prefix.with_name(f"{prefix.name}-{number}"), number + 1
    return candidate


def _shards_missing(shards: Sequence[Path]) -> tuple[int, list[str]]:
    """How many shards no file is beside for (every part's shards 0 to the highest shard seen, every part 0 to the
    highest part seen), and the file names of the first of them."""
    ranks = [rank for path in shards if (rank := sharded_part_rank(path.name)) is not None]
    if not ranks:
        return 0, []
    stem, parts, per_part = ranks[0][0], max(r[1] for r in ranks) + 1, max(r[2] for r in ranks) + 1
    count, absent = _absent({(r[1], r[2]) for r in ranks}, (parts, per_part))
    return count, [f"{stem}model_part-{part}-shard{shard}.pt" for part, shard in absent]


def _glob_literal(path: str) -> str:
    """`path` as a glob that matches only itself: the scripts below glob what they are given (`glob(input)`,
    `glob(f"{prefix}*shard*.pt")`), and a folder named `run[1]` or `run*` matched other files, or none.

    Example: _glob_literal("/ckpt/run[1]/checkpoint") -> "/ckpt/run[[]1]/checkpoint"
    """
    return glob.escape(path)


def _format_literal(path: str) -> str:
    """`path` as a str.format pattern that formats to itself: reshard_fsdp writes to `output.format(i=shard)`, and
    a `{` or `}` in a folder's name raised there (KeyError, ValueError) or named another file."""
    return path.replace("{", "{{").replace("}", "}}")


def _other_files_globbed(folder: Path, pattern: str, shards: Sequence[Path]) -> bool:
    """Whether `pattern` (a glob in `folder`, as a script given it reads it) matches a file beside `shards` that is
    none of them."""
    names = {path.name for path in shards}
    try:
        return any(entry.name not in names and fnmatch.fnmatchcase(entry.name, pattern) for entry in folder.iterdir())
    except OSError:
        return False


def _consolidate_shards_how(shards: Sequence[Path], key: str | None) -> str:
    """How to turn every part's FSDP shards into weights by name, or which shards are missing."""
    count, missing = _shards_missing(shards)
    if count:
        return _absent_said(f"The {counted(count, 'shard')}", count, missing, len(shards),
                            "consolidation is whole without every shard of every part", "consolidate")
    stem = sharded_part_rank(shards[0].name)
    prefix = stem[0].rstrip("-") if stem is not None else ""
    folder = shards[0].parent
    parts = 1 + max((rank[1] for path in shards if (rank := sharded_part_rank(path.name)) is not None), default=0)
    if key == "shard_metadata" and (not prefix or parts > _CONSOLIDATE_MAX_PARTS):
        # consolidate_fsdp_shards tells the parts apart by `-model_part-` (find_num_parts): without a name before
        # it, every shard would be taken for one part's; and it gives part p the shards whose names hold
        # `part-{p}`, so past 10 parts part 1 is given part 10's too. reshard_fsdp unflattens one part's shards
        # at a time.
        out = fresh_sibling(folder, "-unflat")
        last = f", the same for each part to model_part-{parts - 1}" if parts > 1 else ""
        pattern = _glob_literal(str(folder / f"{stem[0] if stem is not None else ''}model_part-0-shard")) + "*.pt"
        return ("Unflatten each part's shards first with metaseq's reshard_fsdp, which reads their shard_metadata "
                f"(python -m metaseq.scripts.reshard_fsdp --input {pattern!r} --output "
                f"{_format_literal(str(out / 'model_part-0.pt'))!r} --num-output-shards 1 --skip-optimizer-state True "
                f"--unflatten-weights True{last}), then read {out.name}, whose parts are told how to merge")
    if key == "shard_metadata":
        save = _fresh_prefix(folder / f"{prefix}_consolidated")
        # consolidate_fsdp_shards reads every file its `{prefix}*shard*.pt` globs: another save beside these whose
        # name starts with theirs (checkpoint_1_10000 beside checkpoint_1_1000) would be consolidated with them;
        # the prefix then runs to `-model_part-`, which only these names hold after it.
        if _other_files_globbed(folder, _glob_literal(prefix) + "*shard*.pt", shards):
            prefix = f"{prefix}-model_part-"
        return ("Consolidate them first: metaseq's consolidate_fsdp_shards unflattens each part's shards with their "
                "shard_metadata and glues the parts into one state dict, Megatron's split tensors (a fused qkv_proj "
                f"included) concatenated (python -m metaseq.scripts.consolidate_fsdp_shards "
                f"{_glob_literal(str(folder) + '/' + prefix)!r} --save-prefix {str(save)!r} writes {save.name}.pt, "
                "the whole model under 'model')")
    if key == "fsdp_metadata":
        return ("Consolidate them first: fairscale's FullyShardedDataParallel.consolidate_shard_weights("
                "shard_weights=[each shard's 'model'], shard_metadata=[each shard's 'fsdp_metadata']) over one "
                "part's shards in shard order unflattens that part; torch.save each part's as {'model': ...} to "
                "model_part-R.pt in a folder of its own, then read that folder, which is told how to merge")
    return ("They hold neither shard_metadata nor fsdp_metadata, which unflattening them needs: only the model "
            "loaded under FSDP at the same world size (--use-sharded-state) and saved whole recovers the weights")


def _unflatten_parts_how(parts: Sequence[Path], key: str | None) -> str:
    """How to unflatten parts whose data-parallel shards are merged but still flat (metaseq's reshard-model_part-R.pt),
    or which parts are missing."""
    missing = _missing_ranks_said(parts, "unflatten")
    if missing:
        return missing
    folder = parts[0].parent
    if key == "shard_metadata":
        out = fresh_sibling(folder, "-unflat")
        last = f", the same for each part to {parts[-1].name}" if len(parts) > 1 else ""
        return ("Unflatten them first with metaseq's reshard_fsdp, which reads each part's shard_metadata (python -m "
                f"metaseq.scripts.reshard_fsdp --input {_glob_literal(str(parts[0]))!r} --output "
                f"{_format_literal(str(out / parts[0].name))!r} "
                f"--num-output-shards 1 --unflatten-weights True{last}), then read {out.name}, whose parts are told "
                "how to merge")
    if key == "fsdp_metadata":
        return ("Unflatten each part first: fairscale's FullyShardedDataParallel.consolidate_shard_weights("
                "shard_weights=[the part's 'model'], shard_metadata=[its 'fsdp_metadata']), torch.save as {'model': "
                "...} in a folder of its own; then read that folder, whose parts are told how to merge")
    return ("They hold no shard_metadata to unflatten them by, so only the model does it: metaseq's "
            f"convert_to_singleton loads the {counted(len(parts), 'part')} on as many GPUs under FSDP and writes the "
            f"whole model, unflattened and glued, to restored.pt beside them (python -m "
            f"metaseq.scripts.convert_to_singleton {str(folder)!r})")


def sharded_folder_message(shards: Sequence[Path]) -> str:
    """The refusal of a folder of FSDP-sharded model-parallel parts: what they are and how to consolidate them."""
    ranks = [rank for path in shards if (rank := sharded_part_rank(path.name)) is not None]
    parts, per_part = max(r[1] for r in ranks) + 1, max(r[2] for r in ranks) + 1
    shapes, entries, unflattened = _read_one(shards[0])
    key = fsdp_metadata_key(entries)
    count, values = flat_parameters(shapes)
    held = (f"{counted(count, 'flat parameter')} (flat_param_N, {values:,} values in {shards[0].name}"
            f"{_unflattened_said(shapes, unflattened, key, parts)})" if count else "flat parameters")
    return (f"folder holds {len(shards)} FSDP shards of the model-parallel parts of one {_who(key)} model "
            f"({shards[0].name} to {shards[-1].name}: --model-parallel-size {parts}, each part's weights flattened "
            f"by fairscale's FullyShardedDataParallel and split over {per_part} data-parallel ranks, --ddp-backend "
            f"fully_sharded --use-sharded-state), not shards of one state dict: each holds {held} that load by no "
            "name, and the Megatron-split tensors in them are each part's slices. "
            + _consolidate_shards_how(shards, key) + "; or name one shard to read it alone")


def _flat_parts_message(parts: Sequence[Path], shapes: Mapping[str, tuple[int, ...]], key: str | None,
                        unflattened: Mapping[str, tuple[int, ...]] | None = None) -> str:
    count, values = flat_parameters(shapes)
    total = _rank_count(parts)
    held = f"{len(parts)} of the {total}" if total > len(parts) else f"{len(parts)}"
    return (f"folder holds {held} model-parallel parts of one {_who(key)} model ({parts[0].name} to "
            f"{parts[-1].name}; --model-parallel-size {total}), each part's weights still flattened by fairscale's "
            f"FullyShardedDataParallel into {counted(count, 'flat parameter')} ({values:,} values in a part; "
            "metaseq's OPT releases ship their reshard-model_part-R.pt so"
            f"{_unflattened_said(shapes, unflattened, key, total)}), not shards of one state dict: none loads by "
            "name, and the Megatron-split tensors in them are each part's slices. "
            + _unflatten_parts_how(parts, key) + "; or name one part to read it alone")


def _sharded_part_warning(path: Path, shapes: Mapping[str, tuple[int, ...]], entries: Sequence[str],
                          unflattened: Mapping[str, tuple[int, ...]] | None = None) -> list[str]:
    """The warning of one FSDP shard of a model-parallel part read alone."""
    stem, rank, shard = sharded_part_rank(path.name) or ("", 0, 0)
    try:
        beside = [entry for entry in path.parent.iterdir()
                  if (other := sharded_part_rank(entry.name)) is not None and other[0] == stem and entry.is_file()]
    except OSError:
        beside = [path]
    shards = sharded_parts_of_one_model(beside) or [path]
    key = fsdp_metadata_key(entries)
    count, values = flat_parameters(shapes)
    ranks = [r for p in shards if (r := sharded_part_rank(p.name)) is not None]
    parts, per_part = max(r[1] for r in ranks) + 1, max(r[2] for r in ranks) + 1
    around = (f"{len(shards)} files beside it for {counted(parts, 'part')} × {counted(per_part, 'shard')} "
              f"({shards[0].name} to {shards[-1].name})" if len(shards) > 1 else "no other shard beside it")
    return [f"{path.name} is, by its name, FSDP shard {shard} of model-parallel part {rank} of one {_who(key)} model "
            f"(--model-parallel-size with --ddp-backend fully_sharded --use-sharded-state; {around}): its "
            f"{counted(count, 'flat parameter')} ({values:,} values"
            f"{_unflattened_said(shapes, unflattened, key, parts if parts > 1 else 0)}) are this data-parallel rank's "
            "piece of the part's "
            "weights, flattened by fairscale's FullyShardedDataParallel, so no model loads them by name and the "
            "counts above are one shard's of one part. " + _consolidate_shards_how(shards, key)]


@dataclass(frozen=True)
class PartOfModel:
    """One tensor-parallel part read alone, beside its siblings: its `rank`, how many `parts` the model has, the
    `layout` of its tensors over them (`merged_params`: the whole model's)."""

    file: str
    rank: int
    parts: int
    layout: PartsLayout


def part_of_model(files: Sequence[Path], shapes: Mapping[str, tuple[int, ...]]) -> PartOfModel | None:
    """What `files` (one file whose tensors are `shapes`) is a part of, where it is one fairseq model-parallel part
    with its sibling parts beside it, holding names (not flat parameters) that Megatron's layers split; else None."""
    if len(files) != 1 or (rank := part_rank(files[0].name)) is None or not shapes or flat_parameters(shapes)[0]:
        return None
    parts = _parts_beside(files[0])
    if len(parts) < 2:
        return None
    total = _rank_count(parts)
    layout = split_layout([dict(shapes), *_shapes_of(_compared(parts, files[0]))], total)
    return PartOfModel(files[0].name, rank[1], total, layout) if layout.split else None


# --- FSDP shards with no model parallelism: fairseq's and metaseq's --use-sharded-state at --model-parallel-size 1 ---


def fsdp_shard_rank(name: str) -> tuple[str, int] | None:
    """(the checkpoint name, the data-parallel shard) of a file named as fairseq's and metaseq's FSDP shards of a
    model with no model parallelism are, else None (a model-parallel part's shard is `sharded_part_rank`'s).

    Example:
        >>> fsdp_shard_rank("checkpoint_last-shard1.pt"), fsdp_shard_rank("checkpoint_last-model_part-0-shard1.pt")
        (('checkpoint_last', 1), None)
    """
    match = _FSDP_SHARD.fullmatch(name)
    if match is None or _SHARDED_PART.fullmatch(name) is not None:
        return None
    return match["stem"], int(match["shard"])


@dataclass(frozen=True)
class FsdpShardProof:
    """What one file's contents hold that makes it a fairscale FSDP shard: its 1-D flat parameters' `shapes` (and
    buffers), the `key` of the metadata that unflattens them, and the parameters that metadata says they hold
    (`unflattened`, empty where it does not give their shapes)."""

    shapes: dict[str, tuple[int, ...]]
    key: str
    unflattened: dict[str, tuple[int, ...]]


def _proof(shapes: Mapping[str, tuple[int, ...]], entries: Sequence[str],
           unflattened: Mapping[str, tuple[int, ...]] | None) -> FsdpShardProof | None:
    key = fsdp_metadata_key(entries)
    if key is None or not flat_parameters(shapes)[0]:
        return None
    return FsdpShardProof(dict(shapes), key, dict(unflattened or {}))


def fsdp_shard_proof(path: Path) -> FsdpShardProof | None:
    """The proof that `path` is one rank's fairscale FSDP shard (1-D `flat_param_N` tensors, and metaseq's
    `shard_metadata` or fairseq's `fsdp_metadata` beside the model), None where its contents do not give it."""
    return _proof(*_read_one(path))


def fsdp_shards_of_one_model(files: Sequence[Path]) -> tuple[list[Path], FsdpShardProof] | None:
    """`files` sorted by shard, with the first one's proof, when they are the FSDP shards of one checkpoint of a model
    with no model parallelism (`checkpoint_last-shard0.pt`, ...: one checkpoint name, two files or more) and the
    first and the last one's contents prove it (flat parameters and their metadata); else None. Two files are read,
    whatever the count: a run of 128 ranks is 128 files of optimizer state, and one name holds one run's."""
    ranks = [fsdp_shard_rank(path.name) for path in files]
    if len(files) < 2 or any(rank is None for rank in ranks) or len({rank[0] for rank in ranks if rank}) != 1:
        return None
    shards = [path for _, path in sorted((rank[1] if rank else 0, path) for rank, path in zip(ranks, files,
                                                                                            strict=True))]
    proof = fsdp_shard_proof(shards[0])
    if proof is None or fsdp_shard_proof(shards[-1]) is None:
        return None
    return shards, proof


def _fsdp_shards_how(shards: Sequence[Path], key: str) -> str:
    """How to unflatten every rank's shard into one state dict by the metadata under `key`, or which are missing."""
    ranks = [rank for path in shards if (rank := fsdp_shard_rank(path.name)) is not None]
    stem = ranks[0][0] if ranks else "checkpoint"
    held = {(rank[1],) for rank in ranks}
    count, absent = _absent(held, (max(held, default=(-1,))[0] + 1,))
    if count:
        return _absent_said(f"The {counted(count, 'shard')}", count, [f"{stem}-shard{shard}.pt" for shard, in absent],
                            len(shards), "unflattening is whole without every rank's shard", "consolidate")
    if len(shards) == 1:
        # How many ranks the run had is not in the file's name: no command is given with a count made up.
        return (f"No other rank's shard is beside it, and no unflattening is whole without every rank's (unless the "
                f"run had one data-parallel rank): fetch the others ({stem}-shard1.pt, ...) from where it came "
                "from, then read their folder, which is told how to consolidate them")
    folder = shards[0].parent
    if key == "shard_metadata":
        save = _fresh_prefix(folder / f"{stem}_consolidated")
        # find_num_parts finds no `part-R-` in these names, so consolidate_fsdp_shards unflattens them as one part.
        # It reads every file `{prefix}*shard*.pt` globs: checkpoint_1_10000's shards beside checkpoint_1_1000's
        # would be unflattened with them, as the model parts' prefix was (`_consolidate_shards_how`); the prefix
        # then runs to the dash before `shard`, which only these names hold after it.
        prefix = stem + "-" if _other_files_globbed(folder, _glob_literal(stem) + "*shard*.pt", shards) else stem
        return ("Consolidate them first: metaseq's consolidate_fsdp_shards unflattens every rank's flat parameters "
                "with their shard_metadata, in shard order, into one state dict (python -m "
                f"metaseq.scripts.consolidate_fsdp_shards {_glob_literal(str(folder) + '/' + prefix)!r} --save-prefix "
                f"{str(save)!r} writes {save.name}.pt, the whole model under 'model')")
    output = fresh_sibling(folder / f"{stem}_consolidated", ".pt")
    # fairseq's own stitch_fsdp_ckpt reads `shard_metadata`, which fairseq's Trainer never writes: not offered here.
    # Its load_model_ensemble_and_task finds `{name}-shard{i}.pt` for i < num_shards (and asserts strict=False).
    return ("Consolidate them first: fairscale's FullyShardedDataParallel.consolidate_shard_weights("
            "shard_weights=[each shard's 'model'], shard_metadata=[each shard's 'fsdp_metadata']) over every rank's "
            "file in shard order unflattens them into one state dict, as fairseq's checkpoint_utils."
            f"load_model_ensemble_and_task([{str(folder / stem) + '.pt'!r}], num_shards={len(shards)}, "
            f"strict=False) does when it loads them; torch.save that state dict as {{'model': ...}} to "
            f"{str(output)!r} and read that")


def fsdp_shards_message(shards: Sequence[Path], proof: FsdpShardProof) -> str:
    """The refusal of a folder of one model's FSDP shards (no model parallelism): what they are, how to consolidate."""
    count, values = flat_parameters(proof.shapes)
    said = _unflattened_said(proof.shapes, proof.unflattened, proof.key, 1)
    return (f"folder holds {len(shards)} FSDP shards of one {_who(proof.key)} model ({shards[0].name} to "
            f"{shards[-1].name}: its weights flattened by fairscale's FullyShardedDataParallel and split over the "
            "data-parallel ranks, --ddp-backend fully_sharded --use-sharded-state with no model parallelism), not "
            f"shards of one state dict: each holds {counted(count, 'flat parameter')} (flat_param_N, {values:,} "
            f"values in {shards[0].name}{said}) that load by no name, and the {proof.key} beside them that "
            "unflattens them. " + _fsdp_shards_how(shards, proof.key) + "; or name one shard to read it alone")


def _fsdp_shard_warning(path: Path, shapes: Mapping[str, tuple[int, ...]], entries: Sequence[str],
                        unflattened: Mapping[str, tuple[int, ...]] | None) -> list[str]:
    """The warning of one FSDP shard of a model with no model parallelism read alone, where its name and contents
    make it one; [] for any other file."""
    rank = fsdp_shard_rank(path.name)
    proof = _proof(shapes, entries, unflattened) if rank is not None else None
    if rank is None or proof is None:
        return []
    try:
        beside = [entry for entry in path.parent.iterdir()
                  if (other := fsdp_shard_rank(entry.name)) is not None and other[0] == rank[0] and entry.is_file()]
    except OSError:
        beside = [path]
    shards = sorted(beside, key=lambda entry: (fsdp_shard_rank(entry.name) or ("", 0))[1]) or [path]
    count, values = flat_parameters(shapes)
    around = (f"one of {len(shards)} shards in its folder, {shards[0].name} to {shards[-1].name}"
              if len(shards) > 1 else "no other shard beside it")
    return [f"{path.name} is FSDP shard {rank[1]} of one {_who(proof.key)} model (--ddp-backend fully_sharded "
            f"--use-sharded-state with no model parallelism; {around}): its {counted(count, 'flat parameter')} "
            f"({values:,} values{_unflattened_said(shapes, unflattened, proof.key, 1)}) are this data-parallel "
            "rank's piece of the weights, flattened by fairscale's FullyShardedDataParallel, so no model loads them "
            "by name and the counts above are one shard's. " + _fsdp_shards_how(shards, proof.key)]


def fsdp_shard_said_by_reader(path: Path, entries: Sequence[str]) -> bool:
    """Whether the reader's own warning says what `path` is (an FSDP shard by its name and metadata), so that
    inspect's generic word of fairscale flat parameters is not said twice."""
    return fsdp_shard_rank(path.name) is not None and fsdp_metadata_key(entries) is not None
