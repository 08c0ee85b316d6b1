"""Quantized checkpoints: how many parameters their packed tensors stand for.

GPTQ and AWQ store 32 / bits weights in each int32 of a `qweight`, bitsandbytes 4-bit two in each uint8 of a
`weight` (beside its `absmax` and `quant_state`), compressed-tensors `weight_packed` like GPTQ; their scales,
zero points and absmax are side tensors, not parameters of the model. Counting stored elements gives a
GPTQ Llama an eighth of its parameters, and memory estimates that are as far off.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightdoctor.checkpoint import TensorInfo
from weightdoctor.errors import clip_middle
from weightdoctor.wording import counted, plural

# Side tensors of the quantizers transformers supports (names as their checkpoints store them).
_SIDE = re.compile(
    r"\.(?:qzeros|scales|g_idx|SCB|weight_format|absmax|quant_map|nested_absmax|nested_quant_map|"
    r"quant_state\.[\w.]+|weight_scale(?:_inv|_2)?|weight_zero_point|weight_g_idx|weight_shape|weight_global_scale|"
    r"input_scale|input_scale_ub|input_global_scale|output_scale|k_scale|v_scale)$"
)
_PACKED_INT32 = (".qweight", ".weight_packed")
_INTEGER_DTYPES = frozenset({"int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"})
# optimum-quanto's QTensor parts (`weight._data` is the weight): its scale and shift.
_QUANTO_SIDE = (".weight._scale", ".weight._shift")
# HQQ's HQQLinear.state_dict beside its packed `W_q`: scale and zero, then its meta data as small tensors.
_HQQ_SIDE = (".scale", ".zero", ".shape", ".nbits", ".group_size", ".axis", ".packing", ".channel_wise", ".optimize",
             ".round_zero", ".compute_dtype", ".view_as_float", ".unpack_view_dtype", ".encoded_state_dict",
             ".offload_meta", ".stores_quant_config", ".quant_scale", ".quant_zero", ".meta_zero", ".meta_scale",
             ".zero_q", ".scale_q")  # the last two: a zero / scale quantized itself (quant_zero, quant_scale)
# torchao's tensor subclasses as transformers flattens them into safetensors (TorchAoHfQuantizer.serialized_names).
_TORCHAO_PART = re.compile(r"\._[a-z0-9]+_(qdata|scale_and_zero|per_tensor_scale|scale|zero_point|act_pre_scale)$")
# ExLlamaV2's EXL2 layers: `q_weight` (int32, rows of mixed bit widths) beside its scales, permutation and groups.
_EXL2_SIDE = (".q_scale", ".q_scale_max", ".q_invperm", ".q_perm", ".q_groups", ".q_group_map")
# VPTQ's VQuantLinear beside its `indices`: codebooks (nn.Embedding weights), outliers, the norm and permutation.
_VPTQ_SIDE = (".centroids.weight", ".res_centroids.weight", ".outlier_centroids.weight", ".outlier_indices",
              ".res_indices", ".weight_scale", ".weight_bias", ".perm")
# ExLlamaV3's EXL3 layers (LinearEXL3.get_tensors): `trellis` (int16 [in / 16, out / 16, 16 x bits]) beside the
# Hadamard sign vectors `suh` [in] and `svh` [out] (fp16; older saves bit-packed `su` / `sv`) and codebook markers.
_EXL3_SIDE = (".suh", ".svh", ".su", ".sv", ".mcg", ".mul1")


def quantizer_side_tensors(tensors: Iterable[TensorInfo], config: Mapping[str, Any] | None) -> set[str]:
    """Names of a quantized checkpoint's scales, zero points and quantizer states (none for a checkpoint that
    is not quantized): values the quantizer reads as they are stored, so a dtype cast must leave them, and
    weight-health checks do not apply to them.

    Example:
        >>> gptq = {"quantization_config": {"quant_method": "gptq"}}  # doctest: +SKIP
        >>> quantizer_side_tensors(checkpoint.tensors, gptq)  # doctest: +SKIP
        {'model.layers.0.mlp.up_proj.scales', 'model.layers.0.mlp.up_proj.qzeros', ...}
    """
    unique = list(tensors)
    comfy = comfyui_scaled_fp8_side(unique) | {f"{layer}.scales_and_zeros" for layer in gpt_fast_int4_layers(unique)}
    summary = quantized_summary(unique, config)
    if summary is None:
        return comfy
    side = comfy | {t.name for t in unique if _SIDE.search(t.name)} | _exl2_layers(unique)[1]
    side |= _exl3_layers(unique)[1]
    side |= _method_layers(unique, summary.method, _config_of(config), summary.bits)[1]
    return side | _mlx_groups(unique)[1] if summary.method == "mlx" else side


def comfyui_scaled_fp8_side(tensors: Iterable[TensorInfo]) -> set[str]:
    """ComfyUI's (legacy) scaled-FP8 checkpoints' scales and marker: `<layer>.scale_weight` (and `scale_input`) beside
    a float8 `<layer>.weight`, and the `scaled_fp8` marker whose dtype ComfyUI reads as the weights' float8 type (a
    float32 marker meaning e4m3fn), under any prefix (flux1-dev-fp8-scaled, t5xxl_fp8_e4m3fn_scaled, Wan's and
    HunyuanVideo's fp8_scaled files). There is no quantization_config: ComfyUI multiplies each fp8 weight by its
    scale_weight, so a cast scale changes every weight it dequantizes, and a cast marker the fp8 type it reads.
    """
    infos = {t.name: t for t in tensors}
    side: set[str] = set()
    for name in infos:
        if name.endswith((".scale_weight", ".scale_input")):
            weight = infos.get(name.rsplit(".", 1)[0] + ".weight")
            if weight is not None and weight.dtype.startswith("float8"):
                side.add(name)
    markers = {n for n in infos if n == "scaled_fp8" or n.endswith(".scaled_fp8")}
    return side | markers if side else set()


# The method quantized_summary names gpt-fast's int4 checkpoints by (they carry no quantization_config).
GPT_FAST_INT4_METHOD = "gpt-fast int4 (no quantization_config)"


@dataclass(frozen=True)
class GptFastInt4Layer:
    """One Linear layer of a gpt-fast int4 checkpoint: its shape and quantization group size."""

    out_features: int
    in_features: int
    group_size: int
    # "cuda": int32 from _convert_weight_to_int4pack, 8 values each; "cpu": uint8 [out, in / 2] from
    # _convert_weight_to_int4pack_for_cpu (gpt-fast's --device cpu), 2 values each.
    packing: str = "cuda"


def gpt_fast_int4_layers(tensors: Iterable[TensorInfo]) -> dict[str, GptFastInt4Layer]:
    """gpt-fast's int4 layers (quantize.py's WeightOnlyInt4QuantHandler, model_int4.g32.pth): `<layer>.weight`, int32
    packed by torch.ops.aten._convert_weight_to_int4pack (8 int4 values in each), or uint8 [out, in / 2] packed by
    _convert_weight_to_int4pack_for_cpu (quantize.py on a CPU: 2 in each byte), beside `<layer>.scales_and_zeros`,
    bfloat16 [in / group size, out, 2]. There is no quantization_config: the names and shapes tell them, and
    _weight_int4pack_mm reads the scales in bfloat16 alone (a cast one breaks the layer).

    Example:
        >>> from weightdoctor.checkpoint import TensorInfo
        >>> gpt_fast_int4_layers([TensorInfo("w.weight", (8, 2, 32, 4), "int32", "f"),
        ...                       TensorInfo("w.scales_and_zeros", (8, 64, 2), "bfloat16", "f")])
        {'w': GptFastInt4Layer(out_features=64, in_features=256, group_size=32, packing='cuda')}
    """
    infos = {t.name: t for t in tensors}
    layers: dict[str, GptFastInt4Layer] = {}
    for name, info in infos.items():
        if not name.endswith(".scales_and_zeros") or len(info.shape) != 3 or info.shape[2] != 2:
            continue
        layer = name[: -len(".scales_and_zeros")]
        weight = infos.get(layer + ".weight")
        groups, out_features = info.shape[0], info.shape[1]
        if weight is None or not groups or not out_features:
            continue
        if weight.dtype == "int32":
            packing, values = "cuda", math.prod(weight.shape) * 8
        elif weight.dtype == "uint8" and len(weight.shape) == 2 and weight.shape[0] == out_features:
            packing, values = "cpu", math.prod(weight.shape) * 2
        else:  # a float weight beside a model's own `scales_and_zeros`, or a layout no int4 packing writes
            continue
        if values % out_features or (values // out_features) % groups:
            continue
        in_features = values // out_features
        layers[layer] = GptFastInt4Layer(out_features, in_features, in_features // groups, packing)
    return layers


def _exl2_layers(tensors: Iterable[TensorInfo]) -> tuple[dict[str, int], set[str]]:
    """ExLlamaV2's EXL2 layers: ({q_weight name: the weights it packs}, {their side tensor names}).

    A `q_weight` is [packed rows, out_features] int32 whose rows mix bit widths (its `q_groups` say which), so its
    own shape does not give the weights it holds; its `q_invperm` has one entry per input feature, which does.
    """
    infos = {t.name: t for t in tensors}
    packed: dict[str, int] = {}
    side: set[str] = set()
    for name, info in infos.items():
        if not name.endswith(".q_weight") or info.dtype not in ("int32", "uint32") or len(info.shape) != 2:
            continue
        base = name.removesuffix(".q_weight")
        perm = infos.get(base + ".q_invperm") or infos.get(base + ".q_perm")
        if perm is None or len(perm.shape) != 1:
            continue
        packed[name] = perm.shape[0] * info.shape[1]
        side |= {base + suffix for suffix in _EXL2_SIDE if base + suffix in infos}
    return packed, side


def _exl3_layers(tensors: Iterable[TensorInfo]) -> tuple[dict[str, int], set[str]]:
    """ExLlamaV3's EXL3 layers: ({trellis name: the weights it stands for}, {their side tensor names}).

    A `trellis` is int16 [in / 16, out / 16, 16 x bits]: one 16 x 16 tile of weights per (row, column), each tile
    16 x bits int16 long (exllamav3's LinearEXL3 reads the bits as its last dimension / 16), so it stands for
    in x out weights; its element count is that times bits / 16 (a 4-bit layer's, a quarter).
    """
    infos = {t.name: t for t in tensors}
    packed: dict[str, int] = {}
    side: set[str] = set()
    for name, info in infos.items():
        if not name.endswith(".trellis") or info.dtype not in ("int16", "uint16") or len(info.shape) != 3 \
                or info.shape[2] % 16:
            continue
        base = name.removesuffix(".trellis")
        signs = [infos.get(base + leaf) for leaf in (".suh", ".su", ".svh", ".sv")]
        if not any(signs):  # a tensor named `trellis` of a model's own, not an EXL3 layer
            continue
        packed[name] = info.shape[0] * 16 * info.shape[1] * 16
        side |= {base + suffix for suffix in _EXL3_SIDE if base + suffix in infos}
    return packed, side


def _mlx_groups(tensors: Iterable[TensorInfo]) -> tuple[set[str], set[str]]:
    """mlx-lm's quantized layers: (their packed `weight`s, their per-group `scales` and `biases`)."""
    names = {t.name for t in tensors}
    bases = {n.removesuffix(".scales") for n in names if n.endswith(".scales")
             and n.removesuffix(".scales") + ".biases" in names and n.removesuffix(".scales") + ".weight" in names}
    return {b + ".weight" for b in bases}, {b + suffix for b in bases for suffix in (".scales", ".biases")}


def _mlx_layer_bits(packed: set[str], quantization: Mapping[str, Any] | None) -> dict[str, int]:
    """The bits of the mlx-lm layers quantized unlike the rest: a mixed recipe (`mixed_3_6`) or a predicate
    writes `{"model.layers.0.mlp.down_proj": {"group_size": 64, "bits": 6}}` beside the global bits."""
    if not packed or quantization is None:
        return {}
    found: dict[str, int] = {}
    for name in packed:
        layer = quantization.get(name.removesuffix(".weight"))
        own = _bits(layer.get("bits")) if isinstance(layer, Mapping) else None
        if own is not None:
            found[name] = own
    return found


# The backtracking steps one re.match of a config's `re:` target may take at worst (a tenth of a second of sre's
# time): Python's re cannot be interrupted, and a target such as `re:(a+)+$` over a long layer name never returns.
_PATTERN_STEPS = 10_000_000
# The seconds of this thread's CPU time all the matching may take (not wall time: a machine busy with other work must
# give the same answer; not the process's: torch's intra-op threads or a caller's threads busy meanwhile add theirs):
# the worst case above is far from what a pattern with literal text between its repeats costs
# (`re:.*layers\.\d+\.mlp\.experts\.\d+\..*` over 50,000 expert layers: a fraction of a second).
_PATTERN_SECONDS = 3.0
# The (layer, pattern) pairs looked at, all layers together (a few seconds): 10,000 config groups over as many
# layers would be 10**8 pairs; past this, the layers left get unknown bits wherever a pattern could claim them.
_PATTERN_PAIRS = 20_000_000


def _match_cost(pattern: str, search: bool = False, counts_as_star: bool = False) -> tuple[int, int] | None:
    """An upper bound on re.match's backtracking steps for `pattern`, as (c, d): c x n**d over a name of n
    characters; None when none is known (a repeat of a group that can match one text several ways, `(a+)+` or
    `(a|aa)+`; a backreference): such a pattern can take exponential time, and is not evaluated. A repeated group
    that matches one way from each start (`_unambiguous`: `(\\w+\\.)+`, `(q_proj|mlp)+`) is bounded.

    `search`: the bound for re.search and re.sub, which stop at the first way through: the parts at the end that
    cannot fail (`(attn)?`, `\\d*`, `(q|k|v)?`: each can match nothing, with no anchor after) are tried once from
    where the rest ends, never again for another way through the rest, so their ways add up instead of multiplying.

    `counts_as_star`: a counted repeat of one character followed by a literal (`.{0,20}layers`, `\\w{2,9}\\.`) costs
    n, as `.*` does, instead of its number of counts: sre runs both as one REPEAT_ONE, which stops after at most
    n + 1 counts over a name of n characters and tries only those where the literal after it matches, so both
    bounds hold and a caller may take the smaller. Followed by another repeat (`\\w{0,50}.{3,56}$`), its counts
    multiply the next one's on every name: 4 s over one 10,000-letter name, where `\\w*.*$` takes none.

    Example:
        >>> _match_cost(r"model\\.layers\\.\\d+\\.mlp"), _match_cost("(a+)+$")
        ((1, 1), None)
        >>> _match_cost("(a|b)?(c|d)?" * 10), _match_cost("(a|b)?(c|d)?" * 10, search=True)
        ((1048576, 0), (41, 0))
    """
    import re._constants as sre_constants  # noqa: PLC0415 (the parser's opcodes; only a config pattern needs them)
    import re._parser as sre_parse  # noqa: PLC0415

    one_char = (sre_constants.LITERAL, sre_constants.NOT_LITERAL, sre_constants.IN, sre_constants.ANY)

    def before_literal(items: Any, index: int) -> bool:
        # sre tries a one-character repeat's counts only where the literal after it matches (REPEAT_ONE's "tail
        # starts with a literal" skip), unless case folding makes that literal LITERAL_IGNORE: such a repeat is tried
        # at that literal's places, as `.*` before it is. Another repeat after it multiplies its counts.
        if index + 1 >= len(items) or items[index + 1][0] != sre_constants.LITERAL:
            return False
        return not flags & re.IGNORECASE or _uncased(chr(items[index + 1][1]))

    def cost(items: Any) -> tuple[int, int] | None:
        total = (1, 0)
        for index, (op, arg) in enumerate(items):
            if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
                low, high, sub = arg
                inner = cost(sub)
                if inner is None:
                    return None
                if high <= 1:  # optional: two ways through it
                    part = (2 * inner[0], inner[1])
                elif inner != (1, 0):  # a repeat of something that can itself match several ways
                    if op == sre_constants.POSSESSIVE_REPEAT or not _unambiguous(sub, flags):
                        return None
                    # One way through each iteration: it stops after any of at most n of them, and the last one's
                    # final run (`(\\.\\d+)+`) anywhere in it: n**2 ways at most, each scanned once.
                    part = (1, 2)
                elif high == sre_constants.MAXREPEAT:
                    part = (1, 1)
                elif high - low < 64 and not (counts_as_star and len(sub) == 1 and sub[0][0] in one_char
                                              and before_literal(items, index)):
                    part = (high - low + 1, 0)
                else:  # `\w{0,5000}`: it stops after at most n + 1 counts over a name of n characters, as `\w*` does
                    part = (1, 1)
            elif op == sre_constants.BRANCH:
                alternatives = [cost(alt) for alt in arg[1]]
                if any(alt is None for alt in alternatives):
                    return None
                part = (sum(alt[0] for alt in alternatives if alt), max(alt[1] for alt in alternatives if alt))
            elif op == sre_constants.SUBPATTERN:
                found = cost(arg[3])
                if found is None:
                    return None
                part = found
            elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
                found = cost(arg[1])
                if found is None:
                    return None
                part = found
            elif op in (sre_constants.GROUPREF, sre_constants.GROUPREF_EXISTS, sre_constants.ATOMIC_GROUP):
                return None
            else:
                continue
            # Clamped: `a?` 100,000 times would multiply big integers for as long as it would backtrack.
            total = (min(total[0] * part[0], 1 << 64), min(total[1] + part[1], 64))
        return total

    def never_fails(item: tuple[Any, Any]) -> bool:
        op, arg = item
        if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
            return arg[0] == 0  # it can always take no count
        if op == sre_constants.SUBPATTERN:
            return all(map(never_fails, arg[3]))
        if op == sre_constants.BRANCH:
            return any(all(map(never_fails, alt)) for alt in arg[1])
        return False

    try:
        with warnings.catch_warnings():  # re's "Possible nested set" FutureWarning: said where the user's pattern
            warnings.simplefilter("ignore", FutureWarning)  # is compiled, as compile_user_regex keeps it quiet
            parsed = sre_parse.parse(pattern)
        flags = parsed.state.flags
        if not search:
            return cost(parsed)
        items = list(parsed)
        end = len(items)
        while end and never_fails(items[end - 1]):
            end -= 1
        parts = [cost(items[:end]), *(cost([item]) for item in items[end:])]
        if any(part is None for part in parts):
            return None
        return (min(sum(part[0] for part in parts if part), 1 << 64), max(part[1] for part in parts if part))
    except (re.error, RecursionError, OverflowError, ValueError, TypeError):
        return None


def _takes(item: tuple[Any, Any], char: str, flags: int) -> bool:
    """Whether the one-character item `item` of a parsed pattern (a literal, a class, `.`) may match `char`; True
    where unsure, so that a caller proving two items disjoint errs towards "they overlap"."""
    import re._constants as sre_constants  # noqa: PLC0415

    op, arg = item
    if op == sre_constants.LITERAL:
        return ord(char) == arg
    if op == sre_constants.NOT_LITERAL:
        return ord(char) != arg
    if op == sre_constants.ANY:
        return char != "\n" or bool(flags & re.DOTALL)
    if op != sre_constants.IN:
        return True
    categories = {sre_constants.CATEGORY_DIGIT: r"\d", sre_constants.CATEGORY_NOT_DIGIT: r"\D",
                  sre_constants.CATEGORY_SPACE: r"\s", sre_constants.CATEGORY_NOT_SPACE: r"\S",
                  sre_constants.CATEGORY_WORD: r"\w", sre_constants.CATEGORY_NOT_WORD: r"\W"}
    negate, hit = False, False
    for sub_op, sub_arg in arg:
        if sub_op == sre_constants.NEGATE:
            negate = True
        elif sub_op == sre_constants.LITERAL:
            hit |= ord(char) == sub_arg
        elif sub_op == sre_constants.RANGE:
            hit |= sub_arg[0] <= ord(char) <= sub_arg[1]
        elif sub_op == sre_constants.CATEGORY and sub_arg in categories:
            hit |= re.fullmatch(categories[sub_arg], char, flags & re.ASCII) is not None
        else:
            return True
    return hit != negate


def _spelled_out(item: tuple[Any, Any]) -> list[str] | None:
    """The characters a one-character item matches when they are few and listed (`\\.`, `[._]`, `[a-z]`), else
    None (`\\w`, `[^.]`, `.`)."""
    import re._constants as sre_constants  # noqa: PLC0415

    op, arg = item
    if op == sre_constants.LITERAL:
        return [chr(arg)]
    if op != sre_constants.IN:
        return None
    chars: list[str] = []
    for sub_op, sub_arg in arg:
        if sub_op == sre_constants.LITERAL:
            chars.append(chr(sub_arg))
        elif sub_op == sre_constants.RANGE and sub_arg[1] - sub_arg[0] < 256:
            chars += map(chr, range(sub_arg[0], sub_arg[1] + 1))
        else:
            return None
    return chars if len(chars) <= 256 else None


def _disjoint(a: tuple[Any, Any], b: tuple[Any, Any], flags: int) -> bool:
    """Whether no character matches both one-character items; False where that is not known (both unlisted
    classes, `\\w` and `\\W`; a case-insensitive pattern's letters, whose folds `_takes` does not model).

    A case-insensitive pattern is judged by an item whose listed characters have no case (`\\.`, `[._0-9]`): such an
    item matches only those characters, and another item takes one of them exactly when it does without the flag
    (no fold maps a cased character onto an uncased one), so `(?i)(\\w+\\.)+` is as unambiguous as `(\\w+\\.)+`.
    """
    if flags & re.LOCALE:
        return False  # the locale's folds are unknown here
    for listed, other in ((_spelled_out(b), a), (_spelled_out(a), b)):
        if listed is not None and flags & re.IGNORECASE and not all(map(_uncased, listed)):
            continue
        if listed is not None:
            return not any(_takes(other, char, flags) for char in listed)
    return False


def _uncased(char: str) -> bool:
    """Whether `char` has no other case (`.`, `_`, `7`): re.IGNORECASE matches it as itself alone."""
    return char.lower() == char == char.upper() and char.casefold() == char


def _unambiguous(items: Any, flags: int) -> bool:
    """Whether a repeated group's body matches at most one way from each start, so that repeating it backtracks
    polynomially: one-character items, fixed or repeated, where each variable repeat is followed (the last one by
    the body's first item, the next iteration) by an item that takes at least one character it cannot take, and
    alternatives of fixed text starting with different characters. `(\\w+\\.)+`, `(\\.\\d+)+`, `(self_attn|mlp)+`
    are; `(a+)+`, `(\\w+\\.?)+`, `(a|aa)+`, `(\\d{1,2})+` are not.

    Example:
        >>> import re._parser as sre_parse
        >>> _unambiguous(sre_parse.parse(r"\\w+\\."), 0), _unambiguous(sre_parse.parse(r"\\w+\\.?"), 0)
        (True, False)
    """
    import re._constants as sre_constants  # noqa: PLC0415

    one_char = (sre_constants.LITERAL, sre_constants.NOT_LITERAL, sre_constants.IN, sre_constants.ANY)
    repeats = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT)

    def single(sub: Any) -> tuple[Any, Any] | None:
        if len(sub) != 1:
            return None
        op, arg = sub[0]
        if op in one_char:
            return op, arg
        return single(arg[3]) if op == sre_constants.SUBPATTERN and not arg[1] and not arg[2] else None

    # Each element: (the one-character items it may start with, min count, max count); alternatives count once.
    def elements(sub: Any) -> list[tuple[list[tuple[Any, Any]], int, int]] | None:
        out: list[tuple[list[tuple[Any, Any]], int, int]] = []
        for op, arg in sub:
            if op in one_char:
                out.append(([(op, arg)], 1, 1))
            elif op in repeats:
                item = single(arg[2])
                if item is None:
                    return None
                if arg[1] > 0:
                    out.append(([item], arg[0], arg[1]))
            elif op == sre_constants.SUBPATTERN and not arg[1] and not arg[2]:  # inline flags: not modelled
                inner = elements(arg[3])
                if inner is None:
                    return None
                out += inner
            elif op == sre_constants.AT:  # an anchor takes nothing and only narrows the ways through
                continue
            elif op == sre_constants.BRANCH:
                alternatives = [elements(alt) for alt in arg[1]]
                # Fixed text each (`self_attn`, `mlp`): with different first characters, at most one matches.
                if any(not alt or any(low != high for _, low, high in alt) for alt in alternatives):
                    return None
                firsts = [item for alt in alternatives if alt for item in alt[0][0]]
                if any(not _disjoint(x, y, flags) for i, x in enumerate(firsts) for y in firsts[i + 1:]):
                    return None
                out.append((firsts, 1, 1))
            else:
                return None
        return out

    found = elements(items)
    if not found or not any(low >= 1 for _, low, _ in found):  # a body that can match nothing repeats forever
        return False
    for index, (starts, low, high) in enumerate(found):
        if low != high:
            after, after_low, _ = found[(index + 1) % len(found)]
            if after_low < 1 or not all(_disjoint(starts[0], item, flags) for item in after):
                return False
    return True


# The ways through a user's pattern that do not grow with the name (`_match_cost`'s constant): re.search tries
# them from each of a name's n starts, so 2**13 of them (`a?` 13 times, then `a` 13 times) took 2 s over a
# 10,000-letter name; a real pattern's alternatives and counted repeats (`(q|k|v)_proj`, `\d{1,3}`) are far fewer.
_USER_PATTERN_WAYS = 4096
# The power of the name's length a pattern's ways may grow by when its counted one-character repeats are costed as
# `.*` (`_match_cost(counts_as_star=True)`): `.{0,20}layers.{0,20}attn.{0,20}proj` has 21**3 ways, over the bound
# above, but no more than `.*layers.*attn.*proj` (n**3), which runs; `a{0,40}` six times (n**6, 41**6) stays refused.
_USER_PATTERN_DEGREE = 3


def refuse_unbounded_regex(option: str, pattern: str) -> None:
    """Refuse a user's regular expression whose backtracking has no known bound (`_match_cost`: a repeated group
    that can match one text several ways, a backreference), before it runs over every tensor name.

    Python's re cannot be interrupted: `--filter '(a+)+$'` over a name with a long run of one letter, or
    `'(.+)+_never$'` over any name, backtracks for hours. A pattern of bounded cost runs as before.

    Example:
        >>> refuse_unbounded_regex("--filter", "(a+)+$")
        Traceback (most recent call last):
        weightdoctor.errors.UsageError: --filter '(a+)+$': a repeat of a group that can match the same text ...

    Raises:
        UsageError: naming the option and the pattern, and how to write one that runs.
    """
    cost = _match_cost(pattern, search=True)  # every user pattern is used by re.search or re.sub
    if cost is not None and cost[0] > _USER_PATTERN_WAYS:
        as_star = _match_cost(pattern, search=True, counts_as_star=True)
        # Its counted repeats are bounded by the name as `.*` is, and no worse than `.*` there, only with nothing
        # else to multiply their counts by: `.{0,60}.{0,60}.{0,60}x` (3,721 ways times n) took 2 s over one
        # 10,000-letter name, `(?:ab){1,43}\w{0,50}.?.{3,56}$` 4 s.
        if as_star is not None and as_star[0] == 1 and as_star[1] <= _USER_PATTERN_DEGREE:
            return
        from weightdoctor.errors import UsageError

        # Ways through that do not grow with the name: `a?` 30 times then `a` 30 times, or `(a|a)` written out 40
        # times, fails on a 60-letter name only after 2**30 or more tries (minutes), a bound but no usable one.
        raise UsageError(f"{option} {pattern!r}: its optional parts, alternatives and counted repeats can be tried "
                         f"in about {cost[0]:.1e} ways on one tensor name before it fails, and Python's re cannot "
                         "be stopped: not run; write fewer optional parts in a row (a{0,30} for 30 a? in a row) or "
                         "alternatives that start with different characters")
    if cost is None:
        from weightdoctor.errors import UsageError

        raise UsageError(f"{option} {pattern!r}: a repeat of a group that can match the same text more than one "
                         "way (as (a+)+ or (a|aa)+ can), or a backreference, can backtrack for hours over one long "
                         "tensor name, and Python's re cannot be stopped: not run; end each inner repeat with a "
                         "character it cannot take ((\\w+\\.)+ runs) or use a character class ([\\w.]+ for "
                         "(\\w+\\.?)+)")


def _required_text(pattern: str) -> list[str]:
    """The runs of literal text every match of `pattern` holds (outside repeats, branches and lookarounds): a name
    without one of them cannot match, which is known without running re.match. [] when none is known.

    Example:
        >>> _required_text("(.+)+_never$")
        ['_never']
    """
    import re._constants as sre_constants  # noqa: PLC0415
    import re._parser as sre_parse  # noqa: PLC0415

    try:
        parsed = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError, ValueError, TypeError):
        return []
    if parsed.state.flags & (re.IGNORECASE | re.VERBOSE):  # the literals are not the text matched
        return []
    runs: list[str] = []
    current: list[str] = []

    def walk(items: Any) -> None:
        for op, arg in items:
            if op == sre_constants.LITERAL:
                current.append(chr(arg))
            elif op == sre_constants.SUBPATTERN and not arg[1] and not arg[2]:  # a group without inline flags
                walk(arg[3])
            elif op == sre_constants.AT:  # an anchor takes no text: the run goes on
                continue
            else:
                if current:
                    runs.append("".join(current))
                current.clear()

    walk(parsed)
    if current:
        runs.append("".join(current))
    return runs


def _compressed_tensors_layer_bits(packed: Iterable[str], quantization: Mapping[str, Any] | None,
                                   notes: list[str] | None = None
                                   ) -> dict[str, int | None]:
    """The bits of each compressed-tensors `<layer>.weight_packed` when its config groups quantize layers at
    different bits (a mixed recipe: attention W8, MLP W4); {} when they agree. None: no group or several at
    different bits claim the layer.

    A group claims a layer by its `targets`, as compressed-tensors matches them: the layer's own name first,
    then a `re:` pattern matching it (re.match), then a class name ("Linear"), which claims every packed layer.
    A pattern that cannot be matched in bounded time (nested repeats, a backreference, a high power of the name's
    length; or past a few seconds of matching, all layers together) is not evaluated: the layers it might claim get
    unknown bits, unless their own name claims them.
    """
    groups = quantization.get("config_groups") if quantization is not None else None
    if not isinstance(groups, Mapping):
        return {}
    by_name: dict[str, set[int | None]] = {}
    by_class: set[int | None] = set()
    raw_patterns: dict[str, set[int | None]] = {}
    every_bits: set[int | None] = set()
    for group in groups.values():
        weights = group.get("weights") if isinstance(group, Mapping) else None
        targets = group.get("targets") if isinstance(group, Mapping) else None
        if not (isinstance(weights, Mapping) and isinstance(targets, list)):
            continue
        bits = _bits(weights.get("num_bits"))
        every_bits.add(bits)
        for target in targets:
            if not isinstance(target, str):
                continue
            if target.startswith("re:"):
                raw_patterns.setdefault(target[3:], set()).add(bits)
            elif target[:1].isupper():  # a class name (Linear, Embedding), not a layer
                by_class.add(bits)
            else:
                by_name.setdefault(target, set()).add(bits)
    if len(every_bits) < 2:
        return {}
    # Each distinct pattern compiled once (re's own cache holds 512); one Python cannot compile claims nothing.
    patterns: list[tuple[re.Pattern[str], set[int | None], tuple[int, int] | None, list[str]]] = []
    # Compiling has the same time limit as matching: 100,000 groups' patterns took 10 s to compile and bound before
    # any layer was looked at. Those left when the time is up are not evaluated: the bits they give are unknown.
    deadline = time.thread_time() + _PATTERN_SECONDS
    not_compiled: set[int | None] = set()
    not_compiled_texts: list[str] = []
    for text, bits_set in raw_patterns.items():
        if time.thread_time() > deadline:
            not_compiled |= bits_set
            not_compiled_texts.append(text)
            continue
        try:
            patterns.append((re.compile(text), bits_set, _match_cost(text), _required_text(text)))
        except (re.error, RecursionError, OverflowError):
            continue
    deadline, pairs = time.thread_time() + _PATTERN_SECONDS, _PATTERN_PAIRS
    every_pattern_bits: set[int | None] = set().union(not_compiled, *(bits_set for _, bits_set, _, _ in patterns))
    found: dict[str, int | None] = {}
    # Layers some pattern was not evaluated for because the time ran out: on a slower machine, more of them.
    out_of_time: set[str] = set()
    timed_out = False
    for name in packed:
        layer = name.removesuffix(".weight_packed")
        named = by_name.get(layer)
        if named:
            found[name] = next(iter(named)) if len(named) == 1 else None
            continue
        matched: set[int | None] = set()
        unsure = set(not_compiled)  # bits of patterns not evaluated: they may or may not claim the layer
        if not_compiled or timed_out:
            out_of_time.add(name)
        pairs -= len(patterns)
        if pairs < 0 or (patterns and time.thread_time() > deadline):
            if pairs >= 0:  # the time ran out, not the (machine-independent) budget of pairs
                timed_out = True
                out_of_time.add(name)
            pairs = -1
            unsure = set(every_pattern_bits)
        for compiled, bits_set, pattern_cost, required in patterns if pairs >= 0 else ():
            if not all(map(layer.__contains__, required)):  # it cannot match: no need to run it
                continue
            steps = None if pattern_cost is None else pattern_cost[0] * (len(layer) + 1) ** pattern_cost[1]
            if steps is None or steps > _PATTERN_STEPS or time.thread_time() > deadline:
                if steps is not None and steps <= _PATTERN_STEPS:
                    out_of_time.add(name)
                unsure |= bits_set
                continue
            if compiled.match(layer):
                matched |= bits_set
        claimed = matched or by_class
        if unsure:  # what the layer gets if they claim it, or if they do not
            claimed = matched | unsure if matched else unsure | (by_class or {None})
        found[name] = next(iter(claimed)) if len(claimed) == 1 else None
    unknown = sum(found[name] is None for name in out_of_time)
    if notes is not None and unknown:
        left = len(not_compiled_texts)
        notes.append(_time_limit_note("quantization_config.config_groups' `re:` targets",
                                      f"{left:,} of {counted(len(raw_patterns), 'pattern')} not compiled, "
                                      "" if left else "",
                                      unknown, len(found)))
    return found


def _gptq_dynamic_layer_bits(packed: Iterable[str], quantization: Mapping[str, Any] | None,
                             notes: list[str] | None = None) -> dict[str, int | None]:
    """The bits of each GPTQ `<layer>.qweight` that GPTQModel's `dynamic` overrides name; {} without overrides.
    None: unknown (a pattern that cannot be matched in bounded time comes first, or a `-:` pattern, "not
    quantized", names a layer that holds a qweight all the same).

    `dynamic` maps a regex over module names to overrides ({"bits": 8, "group_size": 32}); GPTQModel (and vLLM)
    take the first key that re.match-es the module, in the config's order: a `-:` key leaves it unquantized, a
    `+:` key or a bare one overrides the top-level settings. Patterns are bounded as compressed-tensors' are
    (`_match_cost`, the same step and time limits).
    """
    dynamic = quantization.get("dynamic") if quantization is not None else None
    if not isinstance(dynamic, Mapping) or not dynamic:
        return {}
    keys = [(key, overrides) for key, overrides in dynamic.items() if isinstance(key, str)]
    # Compiled (and bounded) as the layers reach them, under the deadline: 100,000 patterns parsed twice each up
    # front took 12 s before any layer was looked at, though each layer stops at the first pattern it matches.
    rules: list[tuple[re.Pattern[str] | None, tuple[int, int] | None, bool, int | None]] = []

    def rule(index: int) -> tuple[re.Pattern[str] | None, tuple[int, int] | None, bool, int | None]:
        while len(rules) <= index:
            key, overrides = keys[len(rules)]
            text = key[2:] if key.startswith(("-:", "+:")) else key
            try:
                compiled: re.Pattern[str] | None = re.compile(text)
            except (re.error, RecursionError, OverflowError):
                compiled = None  # one Python cannot compile claims nothing, as for compressed-tensors' targets
            bits = _bits(overrides.get("bits")) if isinstance(overrides, Mapping) else None
            rules.append((compiled, _match_cost(text) if compiled is not None else (1, 0), key.startswith("-:"),
                          bits))
        return rules[index]

    deadline = time.thread_time() + _PATTERN_SECONDS
    found: dict[str, int | None] = {}
    out_of_time = 0
    for name in packed:
        layer = name.removesuffix(".qweight")
        for index in range(len(keys)):
            if time.thread_time() > deadline:
                found[name] = None  # a pattern not looked at might claim the layer: the bits are not known
                out_of_time += 1
                break
            compiled, cost, negative, bits = rule(index)
            if compiled is None:
                continue
            steps = None if cost is None else cost[0] * (len(layer) + 1) ** cost[1]
            if steps is None or steps > _PATTERN_STEPS:
                found[name] = None  # it might claim the layer: the bits are not known
                break
            if compiled.match(layer):
                if negative or bits is not None:
                    found[name] = None if negative else bits
                break
    if notes is not None and out_of_time:
        left = len(keys) - len(rules)
        notes.append(_time_limit_note("quantization_config.dynamic's patterns",
                                      f"{left:,} of {counted(len(keys), 'pattern')} not compiled, " if left else "",
                                      out_of_time, len(found)))
    return found


def _layers_hold(count: int) -> str:
    """`count` layers and the verb that fits them: "1 layer holds", "3 layers hold"."""
    return f"{counted(count, 'layer')} {plural(count, 'holds', 'hold')}"


def _time_limit_note(what: str, patterns_left: str, layers: int, of: int) -> str:
    """The warning for a time limit reached while matching a config's patterns against the packed layers: why the
    bits are unknown here, where a faster machine may have matched them all (the limit is CPU time of the matching
    thread: a machine busy with other work takes as long)."""
    return (f"{what}: the {_PATTERN_SECONDS:g} s time limit for matching them was reached; {patterns_left}"
            f"{layers:,} of {counted(of, 'packed layer')} left unmatched, their bits per value unknown (a slower "
            "machine "
            "reaches the limit sooner, so it may answer differently)")


def gptq_dynamic_warning(config: Mapping[str, Any] | None) -> str | None:
    """The warning for a GPTQ config whose `dynamic` (GPTQModel's per-module overrides) transformers ignores.

    transformers 5's GPTQConfig keeps no `dynamic` (from_dict drops it; verified on 5.25): its GPTQ quantizer
    (optimum's convert_model) replaces every Linear of the blocks by a QuantLinear of the top-level bits and
    group size, whatever the overrides say. GPTQModel's own loader and vLLM honour them.
    """
    quantization = _config_of(config)
    dynamic = quantization.get("dynamic") if quantization is not None else None
    if quantization is None or quantization.get("quant_method") != "gptq" or not isinstance(dynamic, Mapping) \
            or not dynamic:
        return None
    which = transformers_label()
    keys = [key for key in dynamic if isinstance(key, str)]
    skipped = sum(key.startswith("-:") for key in keys)
    bits = _bits(quantization.get("bits"))
    if bits not in (2, 3, 4, 8):  # GPTQConfig's post_init refuses any other (5 and 16 hold in an int32 all the same)
        bits = None
    if bits is not None:
        builds = (f"from_pretrained builds every Linear of the blocks at the top-level {bits} bits, unlike what the "
                  "checkpoint stores for the modules they name")
    else:
        # Said "at the top-level ? bits": GPTQConfig takes `bits` as a required argument (2, 3, 4 or 8), so
        # from_pretrained raises on such a config before building any Linear (verified on 5.25).
        given = ("has no top-level `bits`" if "bits" not in quantization
                 else f"sets top-level `bits` to {quantization['bits']!r}")
        builds = (f"and the config {given}: GPTQConfig needs 2, 3, 4 or 8 there, so from_pretrained raises before "
                  "building any Linear")
    return (f"quantization_config.dynamic holds GPTQModel's per-module overrides ({counted(len(keys), 'pattern')}"
            + (f", {skipped} leaving modules unquantized with '-:'" if skipped else "")
            + f"), which {which} does not read (its GPTQConfig drops `dynamic`){',' if bits is None else ':'} "
            f"{builds}; GPTQModel's loader and vLLM honour them")


@dataclass(frozen=True)
class QuantizedSummary:
    """What a quantized checkpoint's tensors stand for.

    Attributes:
        method: the quantizer, from the config's `quantization_config` ("gptq", "awq", "bitsandbytes 4-bit",
            "fp8", ...) or, without one, from the tensors' names.
        bits: bits per packed weight value, when known.
        packed_tensors: tensors that hold several weight values per stored element.
        side_tensors: scales, zero points, absmax...: stored, but not parameters of the model.
        parameters: the model's parameters once unpacked (side tensors left out); None when a packed tensor's
            bits are unknown.
    """

    method: str
    bits: int | None
    packed_tensors: int
    side_tensors: int
    parameters: int | None
    # Tensor name -> the parameters it stands for (0 for a side tensor): what memory estimates count.
    counts: dict[str, int] = field(default_factory=dict, metadata={"json": False}, repr=False)
    # Why bits are unknown when a time limit cut the matching short: said in the report's warnings (not a JSON key).
    warnings: list[str] = field(default_factory=list, metadata={"json": False}, repr=False)


# Composite configs whose own get_text_config (transformers 5.25) hands over to one sub-config: the Qwen omni
# models to their thinker's, ColPali's kind to the VLM's, Dia and Canary to their decoder's (taken as it is).
_TEXT_CONFIG_OVERRIDES = {"qwen2_5_omni": ("thinker_config", True), "qwen3_omni_moe": ("thinker_config", True),
                          "colpali": ("vlm_config", True), "colqwen2": ("vlm_config", True),
                          "colmodernvbert": ("vlm_config", True), "dia": ("decoder_config", False),
                          "canary": ("decoder_config", False)}
# The names PreTrainedConfig.get_text_config(decoder=True) looks for, in its order.
_DECODER_TEXT_CONFIGS = ("decoder", "generator", "text_config")


def _text_config(config: Mapping[str, Any], depth: int = 0) -> Any:
    """The sub-config dict `get_text_config(decoder=True)` returns for a config.json dict; the dict itself where it
    names none, None where transformers' answer holds no config (several candidates: it raises)."""
    override = _TEXT_CONFIG_OVERRIDES.get(str(config.get("model_type")))
    if override is not None and depth < 4:
        inner = config.get(override[0])
        if not isinstance(inner, Mapping):
            return None
        return _text_config(inner, depth + 1) if override[1] else inner
    found = [config[name] for name in _DECODER_TEXT_CONFIGS if config.get(name) is not None]
    if len(found) > 1:
        return None
    return found[0] if found else config


def config_quantization_settings(config: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A config.json's `quantization_config` as from_pretrained reads it: the top level's, or where that is unset
    or empty its text config's (`get_hf_quantizer` reads `config.get_text_config(decoder=True)` too: a LLaVA,
    Qwen2-VL or Gemma 3 checkpoint may keep it in `text_config`); None when neither holds one.

    The one reader of a config dict's quantization for every command (`load_simulation.config_quantization` is
    its twin for a config transformers built).

    Example:
        >>> config_quantization_settings({"text_config": {"quantization_config": {"quant_method": "fp8"}}})
        {'quant_method': 'fp8'}
    """
    if not isinstance(config, Mapping):
        return None
    quantization = config.get("quantization_config")
    if not quantization:  # transformers: `config.quantization_config or text_config.quantization_config`
        text = _text_config(config)
        quantization = text.get("quantization_config") if isinstance(text, Mapping) and text is not config else None
    # An empty one (`{}`), or one that names no quantizer (`{"bits": 4}`), asks for no quantization: it was read as
    # "unknown" quantization of plain float weights (planned as int4), which from_pretrained refuses to load at all
    # (`config_quantization_problem` says so).
    if not isinstance(quantization, Mapping) or not quantization or names_no_quantizer(quantization, config):
        return None
    return quantization


def names_no_quantizer(quantization: Mapping[str, Any], config: Mapping[str, Any] | None) -> bool:
    """Whether a non-empty `quantization_config` is one from_pretrained refuses for naming no quantizer: no
    `quant_method` and no `load_in_4bit` / `load_in_8bit` (transformers 4.30's bitsandbytes saves, read as
    bitsandbytes still). mlx-lm's copy of its own `quantization` (no quant_method either) is mlx-lm's, which
    `mlx_quantization` tells; `config`'s `quantization` says which.

    Example:
        >>> names_no_quantizer({"bits": 4}, {}), names_no_quantizer({"load_in_8bit": True}, {})
        (True, False)
        >>> names_no_quantizer({"bits": 4, "group_size": 64}, {"quantization": {"bits": 4, "group_size": 64}})
        False
    """
    if quantization.get("quant_method") is not None or quantization.get("load_in_4bit") \
            or quantization.get("load_in_8bit"):
        return False
    return not (isinstance(config, Mapping) and isinstance(config.get("quantization"), Mapping))


def config_quantization_problem(config: Mapping[str, Any] | None, tensors: Iterable[TensorInfo] = ()) -> str | None:
    """Why transformers cannot load a checkpoint with this config.json's `quantization_config`, in a line, where it
    is one of the kinds it fails on before reading a weight; None otherwise (what `config_quantization_settings`
    reads, or none at all).

    A value that is not an object (`[1, 2]`, `"gptq"`, even `[]` or `""`) ends AutoConfig.from_pretrained itself:
    it logs the config, and `to_dict` calls the value's `.to_dict()` (transformers 5.25: AttributeError). An empty
    one (`{}`) where from_pretrained reads it (`config.quantization_config or text_config.quantization_config`)
    ends `get_hf_quantizer`: ValueError "has no `quant_method` attribute". Both are read as not quantized.

    Example:
        >>> config_quantization_problem({"quantization_config": {}})[:64]
        "config.json's quantization_config is empty ({}): from_pretrained"
        >>> config_quantization_problem({"quantization_config": {"quant_method": "fp8"}}) is None
        True
    """
    if not isinstance(config, Mapping):
        return None
    text = _text_config(config)
    places = [("", config)] + ([("text config's ", text)] if isinstance(text, Mapping) and text is not config else [])
    for where, holder in places:
        value = holder.get("quantization_config")
        if value is not None and not isinstance(value, Mapping):
            kind = type(value).__name__
            return (f"config.json's {where}quantization_config is a {_json_kind(value)}, not an object: transformers "
                    f"cannot read this config.json (AutoConfig.from_pretrained raises AttributeError: '{kind}' object "
                    "has no attribute 'to_dict'); read as not quantized")
    read = config.get("quantization_config") or (text.get("quantization_config") if isinstance(text, Mapping)
                                                  else None)
    # Where from_pretrained read it: a LLaVA's text config holds it where the top level has none.
    where = "" if config.get("quantization_config") or text is config else "text config's "
    if isinstance(read, Mapping) and not read:
        return (f"config.json's {where}quantization_config is empty ({{}}): from_pretrained refuses it (ValueError: "
                "the quantization config has no `quant_method` attribute) before it loads a weight; read as not "
                "quantized (delete the entry to load the weights as they are)")
    if (skipped := skipped_quantizer(config, tensors)) is not None:
        return skipped
    settings = config_quantization_settings(config)
    method = settings.get("quant_method") if settings is not None else None
    if method is not None and not isinstance(method, (list, dict)) and method not in _TRANSFORMERS_QUANTIZERS \
            and (lacks := quantizer_transformers_lacks(config, tensors)) is not None:
        # Quantized tensors beside a quant_method transformers has no quantizer for (exl2, "" or 5): plan-devices and
        # diff-keys refused with this line, where inspect said nothing of it.
        return f"config.json's {lacks}"
    if isinstance(read, Mapping) and names_no_quantizer(read, config) and not _mlx_groups(tensors)[0]:
        # `{"bits": 4, "group_size": 128}`: a hand-written or foreign config, not mlx-lm's (its `quantization` beside).
        shown = repr(dict(read))
        return (f"config.json's {where}quantization_config names no quant_method ({clip_middle(shown, 60)}): "
                "from_pretrained "
                "refuses it (ValueError: the quantization config has no `quant_method` attribute) before it loads a "
                "weight; read without it (a quantized checkpoint's needs the quant_method of its quantizer; delete "
                "the entry to load float weights as they are)")
    return None


def packed_without_quantizer(config: Mapping[str, Any] | None, tensors: Iterable[TensorInfo],
                             folder: Path | None = None) -> str | None:
    """What from_pretrained does with GPTQ/AWQ-packed (`qweight`) or compressed-tensors-packed (`weight_packed`)
    layers whose config.json names no quantizer for them, in a line; None where it names one, where there is no
    config.json, or where `folder` holds an Intel Neural Compressor weight config (`inc_loader_warning` says what
    loads that).

    With no `quantization_config`, from_pretrained builds the model unquantized: each packed layer's `weight` is a
    missing key left at its init, the packed tensors unexpected keys (transformers 5.25 checked on a tiny BERT). One
    that names no quant_method it refuses before it loads a weight (`config_quantization_problem`).

    Packed means integers with the quantizer's scales beside (`qzeros` or `scales`; `weight_scale`): a float
    `qweight`, or one alone, is a model's own tensor.

    Example:
        >>> packed = [TensorInfo("q.qweight", (4, 32), "int32", "m.safetensors"),
        ...           TensorInfo("q.scales", (1, 32), "float16", "m.safetensors")]
        >>> packed_without_quantizer({"model_type": "bert"}, packed)[:63]
        '1 layer holds GPTQ/AWQ-packed weights (q.qweight, beside its qz'
        >>> packed_without_quantizer({"model_type": "bert"}, packed[:1]) is None
        True
    """
    if not isinstance(config, Mapping) or _config_of(config) is not None:
        return None
    unique = tensors if isinstance(tensors, list) else list(tensors)
    if (bnb := _bnb_packed_without_quantizer(config, unique)) is not None:
        return bnb
    if (exllama := _exllama_packed_without_quantizer(config, unique)) is not None:
        return exllama
    candidates = [t for t in unique if t.name.endswith(_PACKED_INT32)]
    if candidates:
        # Packed only as a quantizer packs it: integers (GPTQModel packs int8 to int64 too), its scales beside. A
        # model's own float `qweight`, or one alone, was refused as "GPTQ/AWQ-packed ... beside its qzeros, scales".
        gptq_layers: set[str] = set()
        ct_layers: set[str] = set()
        for tensor in unique:
            name = tensor.name
            if name.endswith((".qzeros", ".scales")):
                gptq_layers.add(name[:-7])
            elif name.endswith(".weight_scale"):
                ct_layers.add(name[:-13])
        candidates = [t for t in candidates if t.dtype in _INTEGER_DTYPES and (
            t.name[:-8] in gptq_layers if t.name.endswith(".qweight") else t.name[:-14] in ct_layers)]
    packed = [t.name for t in candidates]
    if not packed or (folder is not None and inc_weight_config(folder) is not None):
        return None
    gptq = [name for name in packed if name.endswith(".qweight")]
    kind, side, method = (("GPTQ/AWQ", "qzeros, scales", "gptq or awq") if gptq else
                          ("compressed-tensors", "weight_scale", "compressed-tensors"))
    shown = clip_middle((gptq or packed)[0], 60)
    held = f"{_layers_hold(len(packed))} {kind}-packed weights ({shown}, beside its {side})"
    refused = config.get("quantization_config")
    if isinstance(refused, Mapping) and refused and names_no_quantizer(refused, config):
        how = ("config.json's quantization_config names no quant_method: from_pretrained refuses it (ValueError: the "
               "quantization config has no `quant_method` attribute) before it loads a weight")
    else:
        how = ("config.json has no quantization_config: from_pretrained builds the model unquantized, leaves these "
               "layers' weights at their init (missing keys) and drops the packed tensors (unexpected keys)")
    beside = _settings_beside(folder) if gptq and folder is not None else None
    if beside is not None:
        return f"{held}, but {how}; {beside}"
    legacy = config.get("compression_config")
    if not gptq and isinstance(legacy, Mapping) and legacy:
        # compressed-tensors' older name for it (its ModelCompressor still reads both); transformers reads only
        # quantization_config.
        named = legacy.get("quant_method")
        fix = ("" if named == "compressed-tensors" else
               f", its quant_method {clip_middle(repr(named), 40)} made 'compressed-tensors'" if named is not None
               else ", with quant_method 'compressed-tensors' added")
        return (f"{held}, but {how}; its settings are in config.json's compression_config, compressed-tensors' older "
                f"name, which transformers does not read: rename it quantization_config{fix} to load them quantized")
    return (f"{held}, but {how}; the quantizer's quantization_config (quant_method {method}, bits, group_size) in "
            "config.json loads them quantized")


def _exllama_packed_without_quantizer(config: Mapping[str, Any], tensors: list[TensorInfo]) -> str | None:
    """`packed_without_quantizer` for ExLlamaV2's (`q_weight`) and ExLlamaV3's (`trellis`) layers: early EXL2 repos
    kept their settings out of config.json, and a config.json copied over from the base model has none. transformers
    has no quantizer for either, so from_pretrained builds the model unquantized whatever the config says; without
    a quantization_config there was not even that warning, and plan-devices planned the base model's clean load."""
    for found, kind, leaf, side, method in ((_exl3_layers(tensors)[0], "ExLlamaV3 (EXL3)", "trellis", "suh, svh",
                                             "exl3"),
                                            (_exl2_layers(tensors)[0], "ExLlamaV2 (EXL2)", "q_weight",
                                             "q_scale, q_invperm", "exl2")):
        if not found:
            continue
        how = ("config.json's quantization_config names no quant_method: from_pretrained refuses it (ValueError: the "
               "quantization config has no `quant_method` attribute) before it loads a weight"
               if isinstance(refused := config.get("quantization_config"), Mapping) and refused
               and names_no_quantizer(refused, config) else
               "config.json has no quantization_config: from_pretrained builds the model unquantized, leaves these "
               "layers' weights at their init (missing keys) and drops the packed tensors (unexpected keys)")
        first = clip_middle(min(found), 60)
        return (f"{_layers_hold(len(found))} {kind} {leaf}-packed weights ({first}, beside its {side}), but {how}; "
                f"transformers has no quantizer for {method}: {_OWN_RUNNERS[method]}")
    return None


_BNB_4BIT_STATES = (".weight.quant_state.bitsandbytes__nf4", ".weight.quant_state.bitsandbytes__fp4")


def _bnb_packed_without_quantizer(config: Mapping[str, Any], tensors: list[TensorInfo]) -> str | None:
    """`packed_without_quantizer` for bitsandbytes' layouts: 4-bit (`weight` packed [n*k/2, 1] with `absmax`,
    `quant_map` and `quant_state.bitsandbytes__nf4` / `__fp4` beside) and 8-bit (an int8 `weight` with its `SCB`).

    Without a quantization_config from_pretrained builds the model unquantized (transformers 5.25 checked on a tiny
    BERT): a 4-bit packed `weight` is a shape mismatch, and it raises RuntimeError (ignore_mismatched_sizes is False)
    before it returns a model; an 8-bit one loads, its int8 values copied into the float weight as they are (up to
    127), the SCB scales dropped as unexpected keys. Either was planned as the dense model at fp32, without a word.
    """
    names = {t.name: t for t in tensors}
    four = sorted(name[: -len(state)] + ".weight" for name in names for state in _BNB_4BIT_STATES
                  if name.endswith(state))
    four = [name for name in four if name in names]
    eight = sorted(name[: -len("SCB")] + "weight" for name in names if name.endswith(".SCB"))
    eight = [name for name in eight if name in names and names[name].dtype == "int8"]
    if not four and not eight:
        return None
    refused = config.get("quantization_config")
    if isinstance(refused, Mapping) and refused and names_no_quantizer(refused, config):
        how = ("config.json's quantization_config names no quant_method: from_pretrained refuses it (ValueError: the "
               "quantization config has no `quant_method` attribute) before it loads a weight")
    elif four:
        how = ("config.json has no quantization_config: from_pretrained builds the model unquantized, and the packed "
               "weights' shapes are not the layers' (RuntimeError: ignore_mismatched_sizes is False): it loads nothing")
    else:
        how = ("config.json has no quantization_config: from_pretrained builds the model unquantized and copies the "
               "int8 values (up to 127) into these layers' float weights as they are, dropping their SCB scales "
               "(unexpected keys): not the model's weights")
    if four:
        held = (f"{_layers_hold(len(four))} bitsandbytes 4-bit-packed weights ({clip_middle(four[0], 60)}, beside "
                "its absmax, quant_map and quant_state)")
        kinds = sorted({state[-3:] for name in names for state in _BNB_4BIT_STATES if name.endswith(state)})
        fix = f"load_in_4bit true, bnb_4bit_quant_type {' or '.join(kinds)}"
    else:
        held = f"{_layers_hold(len(eight))} bitsandbytes 8-bit weights ({clip_middle(eight[0], 60)}, beside its SCB)"
        fix = "load_in_8bit true"
    return (f"{held}, but {how}; the quantizer's quantization_config (quant_method bitsandbytes, {fix}) in "
            "config.json loads them quantized")


# The settings files AutoGPTQ / GPTQModel (quantize_config.json) and AutoAWQ (quant_config.json) write beside a
# config.json that has no quantization_config (TheBloke's 2023 GPTQ repos): (file, library, quant_method, the
# transformers key each setting goes to).
_SETTINGS_FILES = (
    ("quantize_config.json", "GPTQ", "AutoGPTQ's / GPTQModel's from_quantized", "gptq",
     (("bits", "bits"), ("group_size", "group_size"), ("desc_act", "desc_act"), ("sym", "sym"))),
    ("quant_config.json", "AWQ", "AutoAWQ's from_quantized", "awq",
     (("w_bit", "bits"), ("q_group_size", "group_size"), ("zero_point", "zero_point"), ("version", "version"))),
)


def _settings_beside(folder: Path) -> str | None:
    """Where a GPTQ / AWQ checkpoint's quantization settings are when config.json has none, in words: the library
    that reads that file, and the quantization_config from_pretrained needs from it; None for no such file."""
    from weightdoctor.jsontext import MAX_DEPTH, parse_json

    for name, kind, reader, method, keys in _SETTINGS_FILES:
        path = folder / name
        try:
            if not path.is_file() or path.stat().st_size > 1 << 20:
                continue
            data = parse_json(path.read_text(encoding="utf-8"), max_depth=MAX_DEPTH)
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if not isinstance(data, dict) or not any(key in data for key, _ in keys):
            continue
        settings = {ours: data[theirs] for theirs, ours in keys if theirs in data}
        shown = clip_middle(json.dumps({"quant_method": method, **settings}), 120)
        return (f"{name} beside it holds the {kind} settings, which {reader} reads and from_pretrained does not: "
                f"add them to config.json as its quantization_config ({shown}) to load them quantized")
    return None


def _json_kind(value: Any) -> str:
    """The JSON kind of a config value in words: "list ([1, 2])", "string ('gptq')", "number (5)"."""
    kind = ("boolean" if isinstance(value, bool) else "number" if isinstance(value, (int, float))
            else "string" if isinstance(value, str) else "list" if isinstance(value, list) else type(value).__name__)
    shown = repr(value)
    return f"{kind} ({shown if len(shown) <= 40 else shown[:37] + '...'})"


def _config_of(config: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return config_quantization_settings(config)


def _bits(value: Any) -> int | None:
    """A config's bits per value if it is one a packed int32 can hold (1 to 32), else None (unknown): a file may
    say `true`, `-8` or `64` there."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 32 else None


def _method_and_bits(quantization: Mapping[str, Any]) -> tuple[str, int | None]:
    # An empty quant_method is said as it is (transformers: "Unknown quantization type, got "), not as "unknown".
    method = "'' (an empty quant_method)" if quantization.get("quant_method") == "" else \
        str(quantization.get("quant_method") or "unknown")
    if quantization.get("load_in_4bit") or quantization.get("load_in_8bit"):
        # transformers reads these as bitsandbytes whatever the quant_method (`AutoQuantizationConfig.from_dict`):
        # transformers 4.30 saved BitsAndBytesConfig without one, said here as "unknown" quantization.
        method = "bitsandbytes"
    bits = _bits(quantization.get("bits"))
    if method == "bitsandbytes":
        if quantization.get("load_in_4bit"):
            return "bitsandbytes 4-bit", 4
        if quantization.get("load_in_8bit"):
            return "bitsandbytes 8-bit", 8
    if bits is None and method in ("quanto", "eetq"):  # QuantoConfig / EetqConfig: weights "int8", "int4", ...
        weights = quantization.get("weights")
        bits = {"int8": 8, "float8": 8, "int4": 4, "int2": 2}.get(weights) if isinstance(weights, str) else None
    if bits is None and method == "hqq":  # HqqConfig: quant_config.weight_quant_params.nbits
        settings = quantization.get("quant_config")
        params = settings.get("weight_quant_params") if isinstance(settings, Mapping) else None
        bits = _bits(params.get("nbits")) if isinstance(params, Mapping) else None
    if bits is None and method == "modelopt":  # NVIDIA ModelOpt's exports: quant_algo NVFP4, FP8, W4A16_AWQ, ...
        algo = str(quantization.get("quant_algo") or "").upper()
        bits = 4 if "FP4" in algo or algo.startswith("W4") else 8 if "FP8" in algo or algo.startswith("W8") else None
    groups = quantization.get("config_groups")
    if bits is None and isinstance(groups, Mapping):  # compressed-tensors: config_groups.<group>.weights.num_bits
        for group in groups.values():
            weights = group.get("weights") if isinstance(group, Mapping) else None
            if isinstance(weights, Mapping) and _bits(weights.get("num_bits")) is not None:
                bits = _bits(weights["num_bits"])
                break
    return method, bits


def gguf_config_loads_dense(config: Mapping[str, Any] | None) -> str | None:
    """What from_pretrained does with these weights when the config's `quantization_config` is GGUF's, else None.

    A model once loaded from a .gguf file and saved keeps `quant_method: gguf` in its config.json. transformers'
    GGUF quantizer packs only what it reads from a .gguf file (`from_pretrained(..., gguf_file=)`); safetensors or
    .bin weights beside such a config load as they are stored, into plain Linear layers (transformers 5.25 checked:
    same tensors, no unexpected or missing key). weightdoctor never reads a .gguf file, so any weights it reads
    are these.

    Example:
        >>> gguf_config_loads_dense({"quantization_config": {"quant_method": "gguf"}})[:41]
        "config.json's quantization_config is GGUF"
    """
    quantization = _config_of(config)
    if quantization is None or quantization.get("quant_method") != "gguf":
        return None
    return ("config.json's quantization_config is GGUF's (quant_method: gguf), which packs only weights read from a "
            ".gguf file (from_pretrained's gguf_file=): these weights are not quantized, and from_pretrained loads "
            "them as they are stored")


def quantization_of(config: Mapping[str, Any] | None) -> tuple[str, int | None] | None:
    """(method, bits) of a config's `quantization_config`, None when it has none.

    Example:
        >>> quantization_of({"quantization_config": {"quant_method": "gptq", "bits": 4}})
        ('gptq', 4)
    """
    quantization = _config_of(config)
    return None if quantization is None else _method_and_bits(quantization)


def mlx_quantization(tensors: Iterable[TensorInfo], config: Mapping[str, Any] | None) -> str | None:
    """mlx-lm's quantization in words ("mlx-lm 4-bit, group size 64") when the checkpoint is one, else None.

    mlx-lm writes the bits and group size under the config's `quantization` (newer versions copy them to
    `quantization_config`, without a quant_method) and packs each quantized layer's `weight` into uint32 beside
    its `scales` and `biases`. transformers has no quantizer for it: from_pretrained raises on a
    quantization_config without quant_method, and without one the packed weights do not fit its layers.

    Example:
        >>> mlx_quantization(checkpoint.tensors, {"quantization": {"group_size": 64, "bits": 4}})  # doctest: +SKIP
        'mlx-lm 4-bit, group size 64'
    """
    unique = list(tensors)
    own = config.get("quantization") if isinstance(config, Mapping) else None
    quantization = _config_of(config)
    if unique:
        summary = quantized_summary(unique, config)
        if summary is None or summary.method != "mlx":
            return None
    elif (not isinstance(own, Mapping) or not {"bits", "group_size"} & set(own)
          or (quantization is not None and quantization.get("quant_method"))):
        return None  # a config alone: mlx-lm's `quantization`, and no quantizer transformers knows beside it
    settings = own if isinstance(own, Mapping) else quantization or {}
    bits, group = _bits(settings.get("bits")), settings.get("group_size")
    words = "mlx-lm" + (f" {bits}-bit" if bits else " quantized")
    return words + (f", group size {group}" if isinstance(group, int) and not isinstance(group, bool) else "")


def mlx_not_loadable(what: str, target: str = "it") -> str:
    """Why transformers cannot take an mlx-lm quantized checkpoint (`what`: `mlx_quantization`'s words), in a line."""
    return (f"an {what} checkpoint (uint32-packed weights with per-group scales and biases): transformers has no "
            f"quantizer for it, so from_pretrained cannot load {target}; mlx_lm.load runs it on Apple silicon, or "
            "use the unquantized model it was converted from")


# What runs a checkpoint of a quantizer transformers has none for, by its quant_method.
_OWN_RUNNERS = {"exl2": "exllamav2 (TabbyAPI, text-generation-webui) runs it",
                "exl3": "exllamav3 (TabbyAPI) runs it"}


def _method_layers(tensors: Iterable[TensorInfo], method: str, quantization: Mapping[str, Any] | None,
                   bits: int | None) -> tuple[dict[str, int], set[str]]:
    """AQLM, HQQ, optimum-quanto and EETQ layers: ({packed tensor: the weights it stands for}, {side tensor names}).

    AQLM's `codes` [out groups, in groups, codebooks] index `codebooks`: each code stands for out_group_size x
    in_group_size weights. HQQ's `W_q` (uint8) holds 8 / nbits weights a byte, 3-bit ones ten to an int32.
    """
    infos = list(tensors)
    packed: dict[str, int] = {}
    side: set[str] = set()
    settings = quantization or {}
    if method == "aqlm":
        groups = [settings.get(key, default) for key, default in (("out_group_size", 1), ("in_group_size", 8))]
        sizes = [g for g in groups if isinstance(g, int) and not isinstance(g, bool) and g > 0]
        bases = {t.name.removesuffix(".codes") for t in infos if t.name.endswith(".codes") and len(t.shape) == 3}
        for info in infos:
            base = info.name.rpartition(".")[0]
            if base in bases and info.name.endswith(".codes") and len(sizes) == 2:
                packed[info.name] = info.shape[0] * sizes[0] * info.shape[1] * sizes[1]
            elif base in bases and info.name.endswith(".codebooks"):
                side.add(info.name)
    elif method.startswith("hqq"):
        bases = {t.name.removesuffix(".W_q") for t in infos if t.name.endswith(".W_q")}
        per: dict[str, int] = {}
        if bits in (1, 2, 4, 8):
            per["uint8"] = 8 // bits
        if bits == 3:
            per["int32"] = 10
        for info in infos:
            base, _, leaf = info.name.rpartition(".")
            if base in bases and leaf == "W_q" and info.dtype in per:
                packed[info.name] = info.num_params * per[info.dtype]
            elif (base in bases or info.name.rsplit(".", 2)[0] in bases) and info.name.endswith(_HQQ_SIDE):
                # hqq's own qmodel.pt nests a quantized zero's (or scale's) meta data: `q_proj.meta_zero.scale`.
                side.add(info.name)
    elif method.startswith("quanto"):
        side = {t.name for t in infos if t.name.endswith(_QUANTO_SIDE)}
        packed = _quanto_packed(infos, bits)
    elif method == "bitnet":
        # transformers' BitLinear (microsoft/bitnet-b1.58-2B-4T): a uint8 `weight` [out / 4, in] holding four
        # ternary weights a byte (VALUES_PER_ITEM in transformers' integrations/bitnet.py) beside its `weight_scale`.
        # They were counted one a byte: "0 packed tensor(s)", a quarter of the Linear weights.
        scaled = {t.name.removesuffix("_scale") for t in infos if t.name.endswith(".weight_scale")}
        for info in infos:
            if info.name in scaled and info.dtype == "uint8" and len(info.shape) == 2:
                packed[info.name] = info.num_params * 4
    elif method == "higgs":
        # transformers' HiggsLinear: an int16 `weight` [out x bits / 16, in] (bits 2, 3 or 4) beside its
        # `scales`, and the codebooks `tables` [2^bits] and `tables2` [2^bits, 2^bits, 2] it dequantizes through.
        # The weight was counted an int16 a weight (a quarter of a 4-bit layer), the codebooks as parameters.
        coded = {t.name.removesuffix(".tables") for t in infos if t.name.endswith(".tables")}
        for info in infos:
            base, _, leaf = info.name.rpartition(".")
            if base not in coded:
                continue
            if leaf == "weight" and info.dtype == "int16" and len(info.shape) == 2 and bits \
                    and info.shape[0] * 16 % bits == 0:
                # [out x bits / 16, in]: out = rows x 16 / bits, whole for 3 bits too (16 / 3 weights an int16 is
                # not: a 3-bit layer was counted an int16 a weight)
                packed[info.name] = info.shape[0] * 16 // bits * info.shape[1]
            elif leaf in ("tables", "tables2"):
                side.add(info.name)
    elif method == "spqr":
        # SpQR's QuantizedLinear (spqr_quant, which transformers' SpQR quantizer builds): `dense_weights`, int64
        # [tiles x beta1], each int64 one tile row of beta2 3-bit weights beside its first- and second-order
        # statistics, so beta2 weights an int64 (exact where rows and columns are multiples of the tile, as
        # every LLM's are); the outliers in CSR (`row_offsets`, `col_vals`) and `in_perm` are side tensors.
        tile = settings.get("beta2", 16)
        tile = tile if isinstance(tile, int) and not isinstance(tile, bool) and tile > 0 else 16
        bases = {t.name.removesuffix(".dense_weights") for t in infos
                 if t.name.endswith(".dense_weights") and t.dtype == "int64" and len(t.shape) == 1}
        for info in infos:
            base, _, leaf = info.name.rpartition(".")
            if base in bases and leaf == "dense_weights":
                packed[info.name] = info.num_params * tile
            elif base in bases and leaf in ("row_offsets", "col_vals", "in_perm"):
                side.add(info.name)
    elif method == "vptq":
        # VPTQ's VQuantLinear (vptq/layers/vqlinear.py): `indices` index vectors of `vector_len` weights in the
        # `centroids` (and `res_centroids`) codebooks, packed into int32 (is_indice_packed) or one an int16, so
        # their count does not give the weights: the layer's settings do, config_for_layers' entry for it (or, as
        # transformers' replace_with_vptq_linear falls back, shared_layer_config's): its in_features x
        # out_features, else its norm's or permutation's inputs (or group_num x group_size) by one vector_len per
        # index row (exact where the outputs are a multiple of vector_len). The codebooks, norm and permutation are
        # side tensors.
        layers = settings.get("config_for_layers")
        layers = layers if isinstance(layers, Mapping) else {}
        shared = settings.get("shared_layer_config")
        shared = shared if isinstance(shared, Mapping) else {}
        by_name = {t.name: t for t in infos}
        for info in infos:
            base, _, leaf = info.name.rpartition(".")
            if leaf != "indices" or info.dtype not in ("int16", "int32") or len(info.shape) != 3:
                continue
            parts = base.split(".")
            layer = layers.get(base) or (shared.get(parts[1]) if len(parts) > 1 else None)
            if not isinstance(layer, Mapping):
                continue
            vector = layer.get("vector_lens")
            vector = vector[-1] if isinstance(vector, list) and vector else None
            # The norm and permutation hold one value per input (transformers builds each layer at the model's
            # in_features, whatever a shared group_size says).
            own = next((by_name[base + leaf].shape[0] for leaf in (".perm", ".weight_scale", ".weight_bias")
                        if base + leaf in by_name and len(by_name[base + leaf].shape) == 1), None)
            inputs = _positive(layer.get("in_features")) or own or (
                (_positive(layer.get("group_num")) or 0) * (_positive(layer.get("group_size")) or 0))
            outputs = _positive(layer.get("out_features")) or (
                info.shape[1] * vector if _positive(vector) else None)
            if inputs and outputs:
                packed[info.name] = inputs * outputs
        bases = {name.removesuffix(".indices") for name in packed}
        for info in infos:
            for leaf in _VPTQ_SIDE:
                if info.name.endswith(leaf) and info.name.removesuffix(leaf) in bases:
                    side.add(info.name)
    elif method == "fp_quant":
        # FP-Quant's FPQuantLinear (fp_quant/module/linear.py), quantized for real: `qweight` uint8 [out, in / 2],
        # two FP4 values (MXFP4 or NVFP4) a byte, beside its uint8 `scales` (and NVFP4's `weight_global_scale`) and
        # the Hadamard rotations it multiplies activations by, in the model's dtype.
        for info in infos:
            base, _, leaf = info.name.rpartition(".")
            if leaf == "qweight" and info.dtype == "uint8" and len(info.shape) == 2:
                packed[info.name] = info.num_params * 2
            elif leaf in ("forward_hadamard_matrix", "backward_hadamard_matrix"):
                side.add(info.name)
    elif method == "eetq":  # EetqLinear: an int8 `weight` [in, out] and its fp16 `weight_scales`
        side = {t.name for t in infos if t.name.endswith(".weight_scales")}
    elif method == "compressed-tensors":
        packed, side = _sparse_bitmask_layers(infos)
        groups = settings.get("config_groups")
        # The format is the config's, or each group's in a mixed-precision one.
        formats = {settings.get("format")}
        if isinstance(groups, Mapping):
            formats |= {group.get("format") for group in groups.values() if isinstance(group, Mapping)}
        if "marlin-24" in formats:
            # Each layer at its own group's bits: a mixed recipe's first group (W8 attention) is not the MLP's.
            marlin_packed, marlin_side = _marlin24_layers(infos, bits, _compressed_tensors_layer_bits(
                (t.name for t in infos if t.name.endswith(".weight_packed")), quantization))
            packed, side = {**packed, **marlin_packed}, side | marlin_side
    elif method == "torchao":
        # transformers' torchao safetensors: each tensor subclass flattened into `_weight_qdata` beside its
        # `_weight_scale` (and zero points); an Int4 qdata holds two weights a byte.
        kind = json.dumps(settings.get("quant_type"))
        for info in infos:
            match = _TORCHAO_PART.search(info.name)
            if match is None:
                continue
            if match.group(1) == "qdata":
                packed[info.name] = info.num_params * (2 if "Int4" in kind and info.dtype == "uint8" else 1)
            else:
                side.add(info.name)
    return packed, side


def _positive(value: object) -> int | None:
    """A config's positive integer (not a bool), else None.

    Example:
        >>> _positive(8), _positive(0), _positive(True), _positive("8")
        (8, None, None, None)
    """
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _sparse_bitmask_layers(tensors: list[TensorInfo]) -> tuple[dict[str, int], set[str]]:
    """compressed-tensors' sparse layers: ({`<layer>.compressed`: the weights it stands for}, {their side tensors}).

    The sparsity compressors store a Linear's `weight` as `<layer>.compressed` (its kept values) beside a
    `<layer>.bitmask` (uint8, one bit per dense value: [rows, ceil(cols / 8)]), `<layer>.shape` (the dense shape)
    and, unstructured (`sparse-bitmask`), `<layer>.row_offsets`. sparse-24-bitmask keeps two values of four:
    `compressed` is [rows, cols / 2], so twice its count is exact; unstructured keeps a 1-D run of values whose
    length says nothing of the dense shape, so the bitmask's bits are counted (exact when cols is a multiple of 8).
    """
    infos = {t.name: t for t in tensors}
    packed: dict[str, int] = {}
    side: set[str] = set()
    for name, info in infos.items():
        if not name.endswith(".compressed"):
            continue
        base = name.removesuffix(".compressed")
        mask = infos.get(base + ".bitmask")
        if mask is None or mask.dtype not in ("uint8", "int8", "bool") or len(mask.shape) != 2:
            continue
        rows, mask_cols = mask.shape
        if len(info.shape) == 2 and info.shape[0] == rows and -(-2 * info.shape[1] // 8) == mask_cols:
            packed[name] = 2 * info.num_params
        else:
            packed[name] = rows * mask_cols * 8
        side |= {base + suffix for suffix in (".bitmask", ".shape", ".row_offsets") if base + suffix in infos}
    return packed, side


def _marlin24_layers(tensors: list[TensorInfo], bits: int | None, layer_bits: Mapping[str, int | None]
                     ) -> tuple[dict[str, int], set[str]]:
    """compressed-tensors' marlin-24 layers (format "marlin-24": 2:4 sparse, then quantized for vLLM's Marlin 2:4
    kernel): ({`<layer>.weight_packed`: the weights it stands for}, {`scale_packed`, `meta`}).

    The compressor keeps two values of every four, then packs 32 / bits of the kept ones in each int32: the dense
    weight is twice what the packing holds. Its `scale_packed` (fp16 scales in Marlin's order) and `meta` (int16
    2:4 indexes) are side tensors. `layer_bits` (`_compressed_tensors_layer_bits`) overrides `bits` per layer; a
    layer of unknown bits is left out of the packed ones (counted as unknown there), its side tensors kept.
    """
    infos = {t.name: t for t in tensors}
    packed: dict[str, int] = {}
    side: set[str] = set()
    for name, info in infos.items():
        base = name.removesuffix(".weight_packed")
        if (base == name or info.dtype not in ("int32", "uint32") or base + ".scale_packed" not in infos
                or base + ".meta" not in infos):
            continue
        side |= {base + ".scale_packed", base + ".meta"}
        own_bits = layer_bits.get(name, bits)
        if own_bits and info.num_params * 32 % own_bits == 0:
            packed[name] = 2 * info.num_params * 32 // own_bits
    return packed, side


def _quanto_packed(tensors: list[TensorInfo], bits: int | None) -> dict[str, int]:
    """optimum-quanto's int4 / int2 weights: {`<layer>.weight._data._data`: the weights it unpacks to}.

    A WeightQBitsTensor groups its [out, in] weight into [out x in / group_size, group_size] rows (axis 0; the
    whole [out, in] without a group size), one `_scale` and `_shift` row each, then its PackedTensor stores
    8 / bits rows in each byte row: uint8 [ceil(rows x bits / 8), cols], serialized one level deeper
    (`_data._data`). Unpacking drops the padding rows, so the scale's rows, not the bytes, give the count.
    """
    infos = {t.name: t for t in tensors}
    packed: dict[str, int] = {}
    for name, info in infos.items():
        if not name.endswith(".weight._data._data") or info.dtype != "uint8" or len(info.shape) != 2:
            continue
        scale = infos.get(name.removesuffix("._data._data") + "._scale")
        rows, cols = info.shape
        if scale is not None and len(scale.shape) == 2 and scale.shape[1] == 1 and (
                -(-scale.shape[0] * (bits or 8) // 8) == rows if bits in (2, 4) else rows < scale.shape[0]):
            packed[name] = scale.shape[0] * cols
        elif bits in (2, 4):  # no per-row scale to read the padding from: every packed row counts
            packed[name] = rows * (8 // bits) * cols
    return packed


def quantizer_transformers_lacks(config: Mapping[str, Any] | None,
                                 tensors: Iterable[TensorInfo] | None = None) -> str | None:
    """Why from_pretrained does not load this config's quantized weights, in a line, when its quant_method is one
    transformers has no quantizer for (ExLlamaV2's "exl2"); None otherwise (no quant_method: `mlx_quantization`),
    and for `tensors` that are plain float weights, which it loads as they are (`skipped_quantizer`).

    transformers logs "Unknown quantization type", skips the quantization_config and builds the model
    unquantized: the checkpoint's packed tensors are unexpected keys and the layers' weights start from their init.
    The installed transformers decides (`_transformers_has_quantizer`: its version's list, else an import).
    """
    quantization = _config_of(config)
    method = quantization.get("quant_method") if quantization is not None else None
    # An empty one ("") is a name like any other to transformers: "Unknown quantization type, got " and skipped;
    # so is a number (`quant_method: 5`), which no transformers has a quantizer for. A list or an object is not
    # looked up at all (`supports_quant_method`'s `in` raises TypeError): not skipped, so not said to be.
    if method is None or isinstance(method, (list, dict)) or quantization is None \
            or quantization.get("load_in_4bit") or quantization.get("load_in_8bit"):
        return None
    if isinstance(method, str) and _transformers_has_quantizer(method) is not False:
        return None
    if tensors is not None and _plain_float(tensors):
        return None
    runner = _OWN_RUNNERS.get(method, "the library that quantized it loads it") if isinstance(method, str) \
        else "the library that quantized it loads it"
    return (f"quant_method {_shown_method(method)} is not one transformers has a quantizer for: from_pretrained "
            "skips the quantization_config (\"Unknown quantization type\") and builds the model unquantized, whose "
            f"weights this checkpoint does not hold (they start from their init); {runner}")


def transformers_refuses_quantization(config: Mapping[str, Any] | None) -> str | None:
    """Why transformers' own quantization config class refuses a config.json's `quantization_config` of a method it
    knows, in a line, else None. `AutoQuantizationConfig.from_dict` validates the fields (GPTQConfig's bits in
    2, 3, 4 or 8 and group_size past 0 or -1, BitsAndBytesConfig's llm_int8_skip_modules a list); from_pretrained
    builds it first and fails with its error, so a plan of the quantized model is of one that does not load.
    Only transformers' own code runs (no `auto_map`); an unknown method is `quantizer_transformers_lacks`'.

    Example:
        >>> print(transformers_refuses_quantization({"quantization_config": {"quant_method": "gptq", "bits": "4"}}))
        transformers ... refuses ... (ValueError: ... bits is the string "4", not the number 4): ... does not load ...
    """
    quantization = config_quantization_settings(config)
    if quantization is None:
        return None
    try:
        from transformers.quantizers.auto import AutoQuantizationConfig
    except ImportError:  # pragma: no cover - depends on the installed transformers
        return None
    try:
        AutoQuantizationConfig.from_dict(dict(quantization))
    except ImportError:
        return None  # a library this machine lacks (compressed-tensors, bitsandbytes): no word on the config
    except Exception as exc:  # each config class validates its fields its own way
        text = " ".join(str(exc).split())
        if text.startswith("Unknown quantization type") or "pip install" in text:
            return None  # skipped by from_pretrained, not refused; or a library this machine lacks
        detail = clip_middle(text, 200)
        # "found 4" of bits "4" reads as no fault at all: say which fields hold a number written as a string.
        quoted = [f"{name} is the string {json.dumps(value)}, not the number {value}"
                  for name, value in quantization.items() if isinstance(name, str) and _numeric_string(value)][:3]
        said = "; ".join(quoted)
        return (f"{transformers_label()} refuses config.json's quantization_config ({type(exc).__name__}: {detail}"
                + (f"; {said}" if said else "") + "): from_pretrained fails on it as it is, so this plan is of a "
                "model that does not load until the config is fixed")
    return None


def _numeric_string(value: object) -> bool:
    """Whether a config value is a number written as a JSON string ("4", "0.5").

    Example:
        >>> _numeric_string("4"), _numeric_string("-1"), _numeric_string(4), _numeric_string("gptq")
        (True, True, False, False)
    """
    if not isinstance(value, str) or len(value) > 40:
        return False
    try:
        float(value)
    except ValueError:
        return False
    return value.strip() == value and value.lower() not in ("nan", "inf", "-inf", "infinity", "-infinity")


def _transformers_has_quantizer(method: str) -> bool | None:
    """Whether the installed transformers has a quantizer for `method`; None without transformers. For the version
    `_TRANSFORMERS_QUANTIZERS` lists, from that list: importing transformers to ask took seconds (5.8 s measured)
    of an `inspect` that reads an EXL2 checkpoint's headers in half a second."""
    from importlib import metadata

    try:
        version = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return None
    if version.startswith(_LISTED_VERSION):
        return method in _TRANSFORMERS_QUANTIZERS
    try:
        from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING
    except ImportError:
        return None
    return method in AUTO_QUANTIZATION_CONFIG_MAPPING


def _shown_method(method: Any) -> str:
    """A quant_method as a message quotes it: `'exl2'`; an empty one said to be empty, which `''` alone hides.

    Example:
        >>> _shown_method("exl2"), _shown_method("")
        ("'exl2'", "'' (an empty string)")
    """
    return clip_middle(repr(method), 40) if method != "" else "'' (an empty string)"


def _plain_float(tensors: Iterable[TensorInfo]) -> bool:
    """Whether `tensors` are all plain floating weights (fp16, bf16, fp32, fp64), none a quantizer's side tensor:
    no packed integers, no float8 or scales a quantizer reads. False for none at all."""
    unique = list(tensors)
    return bool(unique) and all(t.dtype in _PLAIN_FLOATS and not _SIDE.search(t.name) for t in unique)


_PLAIN_FLOATS = frozenset({"float16", "bfloat16", "float32", "float64"})
# transformers 5.25's quantizers (AUTO_QUANTIZATION_CONFIG_MAPPING): a config naming one of them needs no import of
# transformers (seconds) to be told one it has, where `inspect` reads plain float weights beside it.
_LISTED_VERSION = "5.25."  # the transformers whose quantizers these are
_TRANSFORMERS_QUANTIZERS = frozenset({
    "awq", "bitsandbytes_4bit", "bitsandbytes_8bit", "gptq", "aqlm", "quanto", "quark", "fouroversix", "fp_quant",
    "eetq", "higgs", "hqq", "compressed-tensors", "fbgemm_fp8", "torchao", "bitnet", "vptq", "spqr", "fp8", "gguf",
    "nvfp4", "mxfp8", "auto-round", "mxfp4", "metal", "sinq", "gemma"})


def skipped_quantizer(config: Mapping[str, Any] | None, tensors: Iterable[TensorInfo]) -> str | None:
    """What from_pretrained does with plain float weights beside a quant_method transformers has no quantizer for,
    in a line; None otherwise. It logs "Unknown quantization type", skips the quantization_config and loads the
    model unquantized: these weights, as they are stored (transformers 5.25 checked: no missing or unexpected key).
    Imports transformers only for such a config beside such weights.
    """
    quantization = _config_of(config)
    method = quantization.get("quant_method") if quantization is not None else None
    # A number (`quant_method: 5`) is skipped the same way ("Unknown quantization type"); a list or an object is
    # not looked up at all (`quantizer_transformers_lacks`).
    if method is None or isinstance(method, (list, dict)) or method in _TRANSFORMERS_QUANTIZERS \
            or not _plain_float(tensors):
        return None
    if quantizer_transformers_lacks(config) is None:  # the installed transformers decides
        return None
    return (f"config.json's quantization_config names quant_method {_shown_method(method)}, which transformers "
            "has no quantizer for: from_pretrained skips it (\"Unknown quantization type\") and loads these plain "
            "float weights as they are stored; read as not quantized")


def without_quantization_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a config.json dict with no `quantization_config`, at the top or in a sub-config (a LLaVA's
    `text_config`): the model from_pretrained builds where it skips the quantization config (`skipped_quantizer`).

    Example:
        >>> without_quantization_config({"a": 1, "quantization_config": {}, "text_config": {"quantization_config": {}}})
        {'a': 1, 'text_config': {}}
    """
    return {key: ({k: v for k, v in value.items() if k != "quantization_config"} if isinstance(value, Mapping)
                  else value)
            for key, value in config.items() if key != "quantization_config"}


def raised_name(error: BaseException) -> str:
    """The name a message gives an exception: its class's (`ValueError`), with its module where the bare name
    reads as a word (`re.error`, which a bad regex in a quantizer's module patterns raises: "raises error here").

    Example:
        >>> import re
        >>> raised_name(re.error("x")), raised_name(ValueError("x"))
        ('re.error', 'ValueError')
    """
    name = type(error).__qualname__
    module = type(error).__module__
    return f"{module}.{name}" if name[:1].islower() and module not in ("builtins", "__main__") else name


def quantizer_load_error(quantization_config: Any) -> str | None:
    """Why from_pretrained cannot load a checkpoint of this `quantization_config` here, in a line, or None.

    Asks the installed transformers as from_pretrained does before it loads a weight: its quantizer for the
    config (`AutoHfQuantizer.from_config`; compressed-tensors' config imports its package there) and that
    quantizer's `validate_environment(device_map=None, weights_only=True)`, which raises ImportError where its
    package is missing (bitsandbytes, optimum for GPTQ, gptqmodel for AWQ) or RuntimeError where it needs a GPU.
    Runs only transformers' own code (an `auto_map` is never looked at). None where the method is not one
    transformers has a quantizer for (`quantizer_transformers_lacks` says that), or the quantizer accepts.

    Example:
        >>> # where optimum is not installed:
        >>> quantizer_load_error({"quant_method": "gptq", "bits": 4})  # doctest: +SKIP
        "from_pretrained raises ImportError here before it loads a weight: 'Loading a GPTQ quantized model ..."
    """
    if not isinstance(quantization_config, Mapping):
        to_dict = getattr(quantization_config, "to_dict", None)
        quantization_config = to_dict() if callable(to_dict) else None
        if not isinstance(quantization_config, Mapping):
            return None
    try:
        from transformers.quantizers.auto import AutoHfQuantizer
    except ImportError:
        return None
    config = dict(quantization_config)
    try:
        if not AutoHfQuantizer.supports_quant_method(config):
            return None
        # A quantizer imports its package where it is installed (GPTQ's optimum.gptq as it is built), and what that
        # prints on import went to stdout, before a --json report.
        with contextlib.redirect_stdout(io.StringIO()):
            quantizer = AutoHfQuantizer.from_config(config, pre_quantized=True)
            quantizer.validate_environment(device_map=None, weights_only=True)
            device_map = quantizer.update_device_map(None)
    except Exception as error:  # whatever the quantizer raises, from_pretrained raises
        said = " ".join(str(error).split()) or raised_name(error)
        return (f"from_pretrained raises {raised_name(error)} here before it loads a weight: "
                f"{clip_middle(said, 240)!r}; the keys are compared as its quantizer reads them where it loads")
    device = unusable_device(device_map)
    if device is not None:
        return (f"from_pretrained fails here as it copies the first weight: its quantizer maps the model to "
                f"{device!r}, which this machine's torch has no device for; the keys are compared as its quantizer "
                "reads them where it loads")
    return None


def unusable_device(device_map: Any) -> str | None:
    """The first device of a quantizer's device map (`update_device_map`, as from_pretrained gets it) that torch has
    no device for here, or None.

    Metal's quantizer, short of an Apple GPU, dequantizes the weights yet still maps the model to "mps":
    from_pretrained then fails on the first weight it copies there (transformers 5.25 with a CPU-only torch on
    Linux: RuntimeError "PyTorch is not linked with support for mps devices"). Told by torch's accelerator (or the
    device module's `is_available`), without making anything on a device.
    """
    if not isinstance(device_map, Mapping):
        return None
    import torch

    accelerator = None
    with contextlib.suppress(Exception):  # a torch without torch.accelerator (< 2.6): each device module is asked
        accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    for device in device_map.values():
        if device in ("cpu", "disk", "meta"):
            continue
        try:
            kind = torch.device(device).type
        except (RuntimeError, TypeError, ValueError):  # not a device torch names: from_pretrained's own error
            continue
        if kind in ("cpu", "meta") or (accelerator is not None and accelerator.type == kind):
            continue
        available = getattr(getattr(torch, kind, None), "is_available", None)
        usable = False
        with contextlib.suppress(Exception):
            usable = bool(available()) if callable(available) else False
        if not usable:
            return str(device)
    return None


# Intel Neural Compressor's weight-only save keeps each layer's bits in a file of its own beside the weights, never a
# quantization_config: 2.x's q_model.save (best_model.pt) writes qconfig.json as {op: {"dtype": "int", "bits": 4,
# "group_size", "scheme", "algorithm", ...}} (INC 2.2: weight_config.json, the same), 3.x's neural_compressor.torch
# save (quantized_model.pt, later quantized_weight.pt) as {"('op', 'Linear')": {"rtn": {"dtype": "int", "bits": 4,
# ...}}}, one algorithm's settings per op.
INC_CONFIG_NAMES = ("qconfig.json", "weight_config.json")
_INC_OP_KEY = re.compile(r"^\('(.+)', '\w+'\)$")
_INC_METHOD = "Intel Neural Compressor weight-only"


@dataclass(frozen=True)
class IncWeightConfig:
    """Intel Neural Compressor's weight-only config: its file name, each op's bits (None: left in floating point)
    and whether it is 3.x's per-algorithm form."""

    name: str
    layers: dict[str, int | None]
    version3: bool


def inc_weight_config(folder: Path) -> IncWeightConfig | None:
    """Intel Neural Compressor's weight-only config in `folder` (qconfig.json, INC 2.2's weight_config.json); None
    where there is none, or the file is another library's (each entry must name a dtype)."""
    from weightdoctor.jsontext import MAX_DEPTH, parse_json

    for name in INC_CONFIG_NAMES:
        path = folder / name
        try:
            if not path.is_file() or path.stat().st_size > 64 << 20:
                continue
            data = parse_json(path.read_text(encoding="utf-8"), max_depth=MAX_DEPTH)
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if not isinstance(data, dict) or not data:
            continue
        layers: dict[str, int | None] = {}
        version3 = False
        for key, value in data.items():
            match = _INC_OP_KEY.match(key)
            if match is not None and isinstance(value, dict) and len(value) == 1:
                key, value, version3 = match.group(1), next(iter(value.values())), True
            if not isinstance(value, dict) or not isinstance(value.get("dtype"), str):
                layers = {}
                break
            layers[key] = None if value["dtype"].startswith(("fp32", "float")) else _bits(value.get("bits"))
        if layers:
            return IncWeightConfig(name, layers, version3)
    return None


def inc_loader_warning(inc: IncWeightConfig) -> str:
    """What loads an INC weight-only save, which from_pretrained does not (no quantization_config), in words: the
    folder is not known here and the model is the user's own object (`load(FOLDER, original_model=MODEL)` pasted was
    a NameError)."""
    load = ("neural_compressor.torch.quantization.load (INC 3.x), given the save's folder and, as original_model=, "
            if inc.version3 else
            "neural_compressor.utils.pytorch.load (INC 2.x), given the save's folder, weight_only=True and ")
    return (f"an {_INC_METHOD} save: each layer's bits are in its {inc.name}, not in the quantization_config that "
            f"transformers' from_pretrained builds quantized layers from; {load}the floating-point model it was "
            "made from, rebuilds the quantized model around it")


def quantized_summary(tensors: Iterable[TensorInfo], config: Mapping[str, Any] | None,
                      inc: IncWeightConfig | None = None) -> QuantizedSummary | None:
    """The parameters a quantized checkpoint's tensors stand for; None for a checkpoint that is not quantized.

    `inc`: Intel Neural Compressor's weight-only config beside the weights (`inc_weight_config`), read where there
    is no quantization_config.

    Example (GPTQ's qweight int32 [512, 4096] stands for 4096 × 4096):
        >>> summary = quantized_summary(open_checkpoint("llama-gptq").tensors, config)  # doctest: +SKIP
        >>> summary.method, summary.bits, summary.parameters  # doctest: +SKIP
        ('gptq', 4, 16777216)
    """
    unique = list(tensors)
    names = {t.name for t in unique}
    # bitsandbytes 4-bit keeps the packed weight under its own name, its quant state beside it.
    bnb4 = {n.split(".weight.", 1)[0] + ".weight" for n in names
            if ".weight.quant_state." in n or n.endswith((".weight.absmax", ".weight.quant_map"))}
    # MXFP4 (gpt-oss): 4-bit values two to a byte in `*_blocks`, their shared exponents in `*_scales`.
    mxfp4 = {n for n in names if n.endswith("_blocks")}
    mxfp4_scales = {n[: -len("_blocks")] + "_scales" for n in mxfp4}
    # mlx-lm: 32 / bits values in each uint32 of a `weight`, with per-group `scales` and `biases` beside it; the
    # config's `quantization` (newer mlx-lm: `quantization_config` too, without quant_method) holds the bits.
    mlx_packed, mlx_side = _mlx_groups(unique)
    exl2_packed, exl2_side = _exl2_layers(unique)
    exl3_packed, exl3_side = _exl3_layers(unique)
    # gpt-fast's int4 layers (no config): one pass of str.endswith before the shapes are read.
    gpt_fast = gpt_fast_int4_layers(unique) if any(n.endswith(".scales_and_zeros") for n in names) else {}
    mlx_config = config.get("quantization") if isinstance(config, Mapping) else None
    quantization = _config_of(config)
    # A quantization_config that names no quantizer is read as none (`names_no_quantizer`), but its bits are those of
    # the tensors found packed: mlx-lm's copy of its `quantization` alone, a GPTQ quantize_config.json copied over.
    refused = config.get("quantization_config") if isinstance(config, Mapping) else None
    refused = refused if isinstance(refused, Mapping) and refused and names_no_quantizer(refused, config) else None
    if not isinstance(mlx_config, Mapping) and mlx_packed:
        mlx_config = refused
    if gguf_config_loads_dense(config) is not None:  # dense weights beside a config from a .gguf load
        return None
    if quantization is not None:
        method, bits = _method_and_bits(quantization)
        if bits is None and method == "mxfp4":
            bits = 4
        if method == "unknown" and mlx_packed:
            method = "mlx"
    elif mlx_packed and isinstance(mlx_config, Mapping):
        method, bits = "mlx", _bits(mlx_config.get("bits"))
    elif exl2_packed:
        method, bits = "exl2-like (no quantization_config)", None
    elif exl3_packed:
        method, bits = "exl3-like (no quantization_config)", None
    elif gpt_fast:
        method, bits = GPT_FAST_INT4_METHOD, 4
    elif any(n.endswith((".weight._data", ".weight._data._data")) for n in names) and any(
            n.endswith(".weight._scale") for n in names):
        # optimum-quanto's own save (QuantizedModelForCausalLM.save_pretrained, or `quantization_map` beside a
        # plain state_dict): no quantization_config, its qtypes in a quanto_qmap.json that this does not read.
        method, bits = "quanto-like (no quantization_config)", None
    elif any(n.endswith(".W_q") for n in names) and any(n.endswith((".scale", ".meta_zero.scale")) for n in names):
        # HQQ's own save_quantized (qmodel.pt, `pytorch_format.hqq_save_quantized`): no quantization_config, each
        # layer's nbits a plain int beside its W_q, not a tensor read here.
        method, bits = "hqq-like (no quantization_config)", None
    elif any(n.endswith(_PACKED_INT32) for n in names) and inc is not None and any(inc.layers.values()):
        known = {bits for bits in inc.layers.values() if bits}
        method, bits = f"{_INC_METHOD} ({inc.name})", known.pop() if len(known) == 1 else None
    elif any(n.endswith(_PACKED_INT32) for n in names):
        method, bits = "gptq-like (no quantization_config)", None
    elif bnb4:
        method, bits = "bitsandbytes 4-bit (no quantization_config)", 4
    elif any(n.endswith(".SCB") for n in names):
        method, bits = "bitsandbytes 8-bit (no quantization_config)", 8
    elif mxfp4 and mxfp4_scales <= names:
        method, bits = "mxfp4-like (no quantization_config)", 4
    else:
        return None
    if quantization is None and refused is not None:
        bits = bits if bits is not None else _bits(refused.get("bits"))
        method = method.replace("(no quantization_config)", "(its quantization_config names no quant_method)")
    counts: dict[str, int] = {}
    packed = side = 0
    unknown = False
    if method != "mlx":
        mlx_packed, mlx_side = set(), set()
    own_packed, own_side = _method_layers(unique, method, quantization, bits)
    exl2_packed, exl2_side = {**exl2_packed, **exl3_packed, **own_packed}, exl2_side | exl3_side | own_side
    if method == GPT_FAST_INT4_METHOD:  # each packed weight as the out x in weights it holds, its scales beside it
        exl2_packed.update({f"{name}.weight": layer.out_features * layer.in_features
                            for name, layer in gpt_fast.items()})
        exl2_side |= {f"{name}.scales_and_zeros" for name in gpt_fast}
    layer_bits: dict[str, int | None] = {
        **_mlx_layer_bits(mlx_packed, mlx_config if isinstance(mlx_config, Mapping) else quantization)}
    warnings: list[str] = []
    if method.startswith(_INC_METHOD) and inc is not None:
        # Each op's own bits: a mixed recipe (an 8-bit down_proj beside 4-bit attention) is counted layer by layer.
        layer_bits.update({f"{op}.qweight": op_bits for op, op_bits in inc.layers.items() if op_bits})
        warnings.append(inc_loader_warning(inc))
    if method == "compressed-tensors":
        layer_bits.update(_compressed_tensors_layer_bits(
            (t.name for t in unique if t.name.endswith(".weight_packed")), quantization, warnings))
    if method == "gptq":
        layer_bits.update(_gptq_dynamic_layer_bits((t.name for t in unique if t.name.endswith(".qweight")),
                                                   quantization, warnings))
    for info in unique:
        if info.name in exl2_packed:
            packed += 1
            counts[info.name] = exl2_packed[info.name]
        elif (info.name in exl2_side or _SIDE.search(info.name) or info.name in mlx_side
              or (info.name in mxfp4_scales and info.dtype == "uint8")):
            counts[info.name], side = 0, side + 1
        elif (info.name in mxfp4 or info.name.endswith(".weight_packed")) and info.dtype in ("uint8", "int8"):
            # Values packed into bytes: MXFP4 blocks, compressed-tensors' NVFP4 `weight_packed` (8 / bits each).
            packed += 1
            # A mixed recipe's NVFP4 MLP beside FP8 attention: its own group's bits, not the first group's 8.
            own_bits = layer_bits.get(info.name, bits)
            if own_bits and 8 % own_bits == 0:
                counts[info.name] = info.num_params * (8 // own_bits)
            else:
                counts[info.name], unknown = info.num_params, True
        elif (info.name.endswith(_PACKED_INT32) or info.name in mlx_packed) and info.dtype in ("int32", "uint32"):
            packed += 1
            # 32 / bits values per int32; 3-bit GPTQ packs 32 values into 3 int32s, so the ratio, not 32 // bits.
            own_bits = layer_bits.get(info.name, bits)
            if own_bits and info.num_params * 32 % own_bits == 0:
                counts[info.name] = info.num_params * 32 // own_bits
            else:
                counts[info.name], unknown = info.num_params, True
        elif info.name in bnb4 and info.dtype == "uint8":
            packed += 1
            counts[info.name] = info.num_params * 2
        elif method.startswith("hqq") and bits is None and info.name.endswith(".W_q"):
            # Its bits unknown, so the weights it packs: not counted as the bytes stored.
            packed += 1
            counts[info.name], unknown = info.num_params, True
        elif method == "modelopt" and bits == 4 and info.name.endswith(".weight") and info.dtype == "uint8":
            # ModelOpt's NVFP4: two FP4 values in each byte of the Linear's own `weight`, beside its FP8
            # `weight_scale` and float32 `weight_scale_2` / `input_scale`.
            packed += 1
            counts[info.name] = info.num_params * 2
        else:
            counts[info.name] = info.num_params
    if not packed and not side and quantization is not None and skipped_quantizer(config, unique) is not None:
        return None  # from_pretrained skips the quantization_config and loads these float weights as they are
    return QuantizedSummary(method=method, bits=bits, packed_tensors=packed, side_tensors=side,
                            parameters=None if unknown else sum(counts.values()), counts=counts, warnings=warnings)


def transformers_label() -> str:
    """`transformers 5.25.0`, the installed version that warnings say what they checked against, read from the
    package's metadata (no import of transformers)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"transformers {version('transformers')}"
    except PackageNotFoundError:  # pragma: no cover - transformers is a dependency
        return "transformers"
