"""diff-keys --values: whether the tensors that changed are exactly a few kinds of projection (a merged LoRA)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from weightdoctor.diff_keys import ValueDiff
from weightdoctor.wording import plural


@dataclass(frozen=True)
class ChangedProjections:
    """The changed tensors of a `--values` run, when they are all of a few modules of B's layers (JSON:
    `changed_projections`).

    `modules` are the modules' paths inside their layer (`self_attn.q_proj`; a module outside any numbered layer,
    `lm_head`, by its whole path), `layers` the numbered layers where one of them changed, `layers_total` the
    numbered layers that hold one of those modules, `tensors` the changed tensors, `identical` the identical ones and
    `rounded` those that differ by a cast's rounding alone (a LoRA merged in fp32 and saved in bf16, against its fp32
    base: every tensor differs, and only the adapted projections beyond rounding).
    """

    modules: list[str]
    layers: int
    layers_total: int
    tensors: int
    identical: int
    rounded: int = 0


def _layer_and_module(module: str, numbered: bool = False) -> tuple[str | None, str]:
    """(the numbered layer, the module's path inside it, numbers written `*`): `model.layers.2.self_attn.q_proj` ->
    (`model.layers.2`, `self_attn.q_proj`); an MoE expert's `model.layers.2.mlp.experts.3.w1` -> (`model.layers.2`,
    `mlp.experts.*.w1`), one module of each layer (as `layer_of` cuts layers); (None, the whole path) outside any
    numbered layer. `numbered`: the numbers inside the layer kept (`mlp.experts.3.w1`), each expert its own module."""
    parts = module.split(".")
    for index, part in enumerate(parts[:-1]):
        if part.isdigit():
            inside = ["*" if piece.isdigit() and not numbered else piece for piece in parts[index + 1:]]
            return ".".join(parts[: index + 1]), ".".join(inside)
    return None, module


def changed_projections(rows: Sequence[ValueDiff], shapes: Mapping[str, Sequence[int]],
                        dequantized: Collection[str] = ()) -> ChangedProjections | None:
    """What changed, where every changed tensor belongs to a module with a matrix weight (a projection, a
    convolution, an embedding) and a matrix weight of another module is identical, or differs by a cast's rounding
    alone: what merging a LoRA leaves (peft's `merge_and_unload` adds B@A·scale to the weights of the modules it
    targets, nothing else), saved in the base's dtype or another.

    None where fewer than two tensors changed beyond rounding, where every matrix weight changed (a full fine-tune),
    or where a norm or any tensor of a module without a matrix weight changed, or where a changed tensor was read
    dequantized from a quantized GGUF type (`dequantized`): its change holds the quantization's error, and a
    llama.cpp quantization changes every matrix it quantizes and leaves the norms (F32) alone, as a merge would.

    Example:
        >>> rows = [ValueDiff(f"model.layers.{n}.self_attn.{p}.weight", p == "k_proj", 0.0 if p == "k_proj" else 0.1,
        ...                   0.0 if p == "k_proj" else 0.5, "float32", "float32") for n in range(2)
        ...         for p in ("q_proj", "k_proj", "v_proj")]
        >>> found = changed_projections(rows, {row.name: (4, 4) for row in rows})
        >>> found.modules, found.layers, found.tensors, found.identical, found.rounded
        (['self_attn.q_proj', 'self_attn.v_proj'], 2, 4, 2, 0)

    Args:
        rows: the `--values` rows, named by B's names.
        shapes: B's tensors' shapes by name.
        dequantized: B's names of the tensors compared dequantized from a GGUF block type on one side and stored
            otherwise on the other (a Q4_K tensor against an F16 one; two Q4_K copies compare exactly).
    """
    # A tensor that differs by a cast's rounding alone is the base's, saved in another dtype.
    changed = [row for row in rows if not row.identical and not row.rounded_to]
    kept = [row for row in rows if row.identical or row.rounded_to]
    # One changed tensor is no group (a fine-tune that moved one weight says as much as a merge): two at least.
    if len(changed) < 2:
        return None
    # Quantization error is no merge: a Q4_K copy of a model against its F16 file changed every quantized matrix
    # and no norm, and was said to be "only the adapted projections changed" (a merged LoRA).
    if any(row.name in dequantized for row in changed):
        return None

    def matrix_module(name: str) -> str | None:
        module, _, _ = name.rpartition(".")
        return module if module and len(shapes.get(f"{module}.weight", ())) >= 2 else None

    modules = {matrix_module(row.name) for row in changed}
    if None in modules:
        return None
    unchanged_matrices = [row for row in kept if row.name.endswith(".weight") and len(shapes.get(row.name, ())) >= 2]
    if not unchanged_matrices:
        return None
    placed = [_layer_and_module(module) for module in modules if module is not None]
    layers = {layer for layer, _ in placed if layer is not None}
    numbered = False
    if {kind for _, kind in placed} & {kind for layer, kind in (_layer_and_module(row.name.rpartition(".")[0])
                                                                for row in unchanged_matrices) if layer in layers}:
        # A module of those kinds unchanged in a layer where its kind changed elsewhere in that layer: some of a
        # layer's experts changed, not all (a LoRA merged into experts 0 and 1 of 8). Each expert is then its own
        # module (`mlp.experts.0.gate_proj`): summarised as `*`, it left the answer null, which experts changed unsaid.
        numbered = True
        placed = [_layer_and_module(module, numbered) for module in modules if module is not None]
    kinds = sorted({kind for _, kind in placed})
    # Every numbered layer holding one of those modules, changed or not (a LoRA on some layers only).
    holding = {layer for layer, kind in (_layer_and_module(row.name.rpartition(".")[0], numbered) for row in rows)
               if layer is not None and kind in kinds}
    rounded = sum(1 for row in kept if not row.identical)
    return ChangedProjections(kinds, len(layers), len(holding), len(changed), len(kept) - rounded, rounded)


def changed_projections_note(found: ChangedProjections) -> str:
    """The --values note for `changed_projections`'s answer.

    Example:
        >>> changed_projections_note(ChangedProjections(["self_attn.q_proj", "self_attn.v_proj"], 3, 3, 6, 24))[:64]
        'only the adapted projections changed (q_proj, v_proj in 3 layers'
    """
    # The modules by their own names (`q_proj`) where those tell them apart, else by their path in the layer.
    short = [kind.rpartition(".")[2] for kind in found.modules]
    names = ", ".join(short if len(set(short)) == len(short) else found.modules)
    where = ""
    if found.layers:
        where = f" in {found.layers} {plural(found.layers, 'layer')}" if found.layers == found.layers_total else \
            f" in {found.layers} of the {found.layers_total} layers that hold them"
    others = found.identical + found.rounded
    kept = "are identical" if not found.rounded else (
        "differ by a cast's rounding alone" if not found.identical else
        f"are identical or differ by a cast's rounding alone ({found.rounded})")
    return (f"only the adapted projections changed ({names}{where}: {found.tensors} "
            f"{plural(found.tensors, 'tensor')}); the other {others} common {plural(others, 'tensor')} {kept}, as "
            "merging a LoRA on those modules leaves its base (peft's merge_and_unload adds B@A·scale to their "
            "weights alone), not a full fine-tune")
