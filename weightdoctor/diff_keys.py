"""`diff-keys` analysis: what loading checkpoint A into a model shaped like B reports, why, and the fix.

Everything here works on names, shapes and dtypes (`KeySpec`), so it runs on headers alone; only
`compare_values` reads tensor data, one pair at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import math
import os
import re
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, filterfalse, repeat
from operator import and_, attrgetter, eq, getitem, ne, not_
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from weightdoctor.dtypes import FLOATING, SIX_BIT, is_dtype_placeholder
from weightdoctor.errors import choose
from weightdoctor.findings import SEVERITIES, severity_rank
from weightdoctor.gcpause import gc_paused
from weightdoctor.renames import (
    LOOKALIKE_LATIN,
    MAX_NAME_CHARS,
    Rename,
    add_prefix,
    apply_renames,
    python_snippet,
    rename_all,
    rename_steps,
    strip_prefix,
)
from weightdoctor.reparametrized import Reparametrized, kept_under, reparametrized_name
from weightdoctor.wording import counted, plural

if TYPE_CHECKING:
    import torch

    from weightdoctor.changed_projections import ChangedProjections
    from weightdoctor.checkpoint import Checkpoint, TensorInfo

class _LazyRegex:
    """A regex compiled on first use. Most runs classify no key by these patterns (a DDP diff explains every
    key by one rename), and compiling them all costs a fresh process a few milliseconds."""

    __slots__ = ("_pattern", "_compiled")

    def __init__(self, pattern: str) -> None:
        self._pattern = pattern
        self._compiled: re.Pattern[str] | None = None

    def __getattr__(self, name: str) -> Any:  # search, match, sub...: the compiled pattern's
        if self._compiled is None:
            self._compiled = re.compile(self._pattern)
        return getattr(self._compiled, name)


def _lazy_regex(pattern: str) -> Any:
    return _LazyRegex(pattern)


# ---------------------------------------------------------------------------------------------------------------
# Reasons: a stable code, the severity it carries and the sentence a person reads.

REASONS: dict[str, str] = {
    "task-head": "task head: new heads start random (expected when fine-tuning starts); a head B lacks is dropped",
    "wrapper-prefix": "a wrapper prefix (DDP module., torch.compile _orig_mod., PEFT base_model.model., Lightning "
                      "model. on a model whose base prefix is another) hides the keys",
    "base-model-prefix": "the base-model prefix (bert., model., transformer., ...) differs; from_pretrained adds or "
    "strips it, load_state_dict does not",
    "renamed": "the same tensor under another name; the suggested rename maps it, or (a note says) transformers "
               "renames it for this model on load",
    "legacy-name": "legacy name (LayerNorm.gamma/beta, weight_g/weight_v); from_pretrained renames it on load",
    "tied-weight": "tied to the input embeddings: not stored, re-tied on load",
    "buffer": "a buffer that is recomputed at init (position_ids, num_batches_tracked, attention masks, inv_freq)",
    "vocab-size": "vocabulary size changed: the embedding / output rows differ",
    "position-length": "maximum position length changed: the position-embedding rows differ",
    "head-size": "task head size changed (num_labels; num_classes in timm and torchvision): the head is re-initialized",
    "adapter": "adapter / PEFT weights (LoRA, prefix tuning): merge them or load through PEFT",
    "adapter-base": "a weight of the base model, which a PEFT adapter does not store: peft's PeftModel.from_pretrained "
    "takes it from the base model it loads the adapter onto",
    "quantization": "quantization side tensor (scales, zero points, absmax): needs the matching quantizer",
    "lora-rank": "a LoRA factor of another rank (kohya's network_dim, peft's r): the same module adapted by an adapter "
                 "of another size, which does not load into this one's tensors",
    "shape": "same name, different shape: the architecture differs",
    "transposed": "the same matrix transposed (nn.Linear out×in against GPT-2's Conv1D in×out): transpose it "
    "when converting",
    "channels-last": "the same convolution kernel with its input channels last (out, *kernel, in), as MLX stores "
    "convolutions, or both channel axes last (*kernel, in, out), as TensorFlow / Keras and Flax do, against "
    "PyTorch's (out, in, *kernel): move those axes when converting",
    "expert-layout": "MoE experts one tensor per expert on one side, fused per projection on the other: "
                     "from_pretrained converts between them, load_state_dict does not",
    "expert-numbering": "MoE experts one tensor per expert whose numbers are not 0 to N-1 in each projection: "
                        "from_pretrained stacks them in the order of their numbers, raising where a projection lacks "
                        "one and loading a renumbered set into the wrong slots without a word",
    "foreign-layout": "another code base's layout (Meta's original Llama/Mistral, a single-file Stable Diffusion "
    "checkpoint, an original Flux / SD3 transformer, LitGPT's, another framework's: Flax's, llama.cpp's GGUF names, an "
    "ONNX export's): convert with that library's converter, a rename alone "
    "loads wrong values",
    "unused-part": "a part of A that B does not have at all, while B gets every weight it needs (another tower "
    "of a composite model, a module of another task): dropped",
    "not-a-tensor": "an entry of A's state dict that is no tensor (a version number, a string): from_pretrained "
    "lists it as unexpected and ignores it, and raises when it has the name of a weight",
    "other-model": "a part of another model of the family (Chroma's distilled_guidance_layer against Flux's "
                   "modulation): the two are not one model, and neither loads into the other",
    "swapped-sides": "A and B given the other way round: B is an adapter and A the model it adapts, while diff-keys "
                     "loads A into B (the note gives the command with the sides swapped)",
    "fsdp-flat-param": "FSDP's flat parameter (use_orig_params=False): every weight of a wrapped module in one 1-D "
                       "tensor (this rank's shard of it), which loads by no name: save the full state dict instead",
    "fairscale-flat-param": "fairscale FSDP's flat parameter (flat_param_N, fairseq's --ddp-backend fully_sharded): "
                            "every weight of a wrapped module in one padded 1-D tensor (this rank's shard of it), "
                            "which loads by no name: unflatten every rank's file with the metadata saved beside it "
                            "(metaseq's shard_metadata, fairseq's fsdp_metadata: consolidate_shard_weights) or save "
                            "fsdp_model.state_dict() instead of local_state_dict()",
    "tensor-parallel-part": "A (or B) is one tensor-parallel part of a model (fairseq's model_part-R.pt beside the "
                            "others): it holds its slice of this tensor, the other side's with one dimension divided "
                            "by the number of parts: merge the parts first",
    "layer-count": "one side has more layers of one list than the other (a distilled student against its teacher, "
                   "another num_hidden_layers): the same layers at another depth; no rename fixes it",
    "reparametrized": "a weight kept under one of torch's reparametrizations on one side (torch.nn.utils.prune's "
                      "weight_orig and weight_mask, spectral_norm's weight_orig, weight_u and weight_v, the old "
                      "weight_norm's weight_g and weight_v, parametrize's parametrizations.weight.original) and as "
                      "the weight itself on the other: remove it before saving (prune.remove, remove_spectral_norm, "
                      "remove_weight_norm, remove_parametrizations), or apply the same one to the model loaded into",
    "unknown": "no known cause: these weights will not load",
}

# The adapter families whose notes `adapter_fit` writes, by the note's start, other than PEFT's (which REASONS'
# "adapter" and "adapter-base" texts describe): a kohya LoRA's legend said "merge them or load through PEFT", which
# cannot load it.
_ADAPTER_FAMILIES = (("A is a kohya-style", "a kohya-style LoRA"), ("A is a LyCORIS", "a LyCORIS adapter"),
                     ("A is a LoRA in diffusers' layout", "a LoRA in diffusers' layout"),
                     ("A is a Flux LoRA in diffusers' layout", "a LoRA in diffusers' layout"),
                     ("A is an AdapterHub", "an AdapterHub adapter"),
                     ("A and B are both adapters in kohya's layout", "a kohya-style or LyCORIS adapter"))


def reason_text(reason: str, notes: Sequence[str] = (), side_b: str = "B") -> str:
    """The sentence a person reads for `reason` in a report of these `notes`: REASONS', or for an adapter of a
    family PEFT does not load, that family's; B, the side A is loaded into, called `side_b` (`side_b_word`).

    Example:
        >>> reason_text("adapter-base", ["A is a kohya-style LoRA (lora_down / lora_up ...): ..."])[:60]
        'a weight of the base model, which a kohya-style LoRA does no'
        >>> reason_text("task-head", side_b="the model")[-33:]
        'a head the model lacks is dropped'
    """
    if reason in ("adapter", "adapter-base"):
        family = next((name for note in notes for start, name in _ADAPTER_FAMILIES if note.startswith(start)), None)
        if family is not None:
            return (f"{family}'s own weights, which PEFT does not load: load them with the loader the note names, or "
                    "merge them into the base" if reason == "adapter" else f"a weight of the base model, which "
                    f"{family} does not store: the loader the note names takes it from the base")
    return name_side_b(REASONS.get(reason, ""), side_b)


# What `diff-keys --model-class` calls B, the side A is loaded into: a transformers model built from a config, no
# second checkpoint (the header names its class).
MODEL_SIDE = "the model"


def side_b_word(mode: str) -> str:
    """What a report of `mode` ("checkpoints" or "model-class") calls the side A is loaded into.

    Example:
        >>> side_b_word("checkpoints"), side_b_word("model-class")
        ('B', 'the model')
    """
    return MODEL_SIDE if mode == "model-class" else "B"


# B as a word of a sentence ("not used by B", "B's config", "B is an adapter"): not a letter of a key (`lora_B`,
# `x.B.weight`, `B_proj`), of a formula (‖A−B‖/‖B‖, |A−B|) or of code, and not the argument of a `diff-keys A B`
# a note tells to run ("diff-keys B A", "the adapter as A and its base model as B"), which stays B in any mode, nor
# a byte count's unit (512 B).
# "B's model" is B itself (resize B's model first).
_SIDE_B = _lazy_regex(r"(?<![\w.\-/−|‖`'\\])(?<!as )(?<!A )(?<!\d )B(?![\w\-−|‖`]|\.\w| A\b)('s model(?![\w.])|'s)?")


def name_side_b(text: str, side_b: str) -> str:
    """`text`, a sentence of a report that calls the side A is loaded into B, with that side called `side_b`
    (`side_b_word`); capitalized after a full stop (a note or detail starts in lower case: "note: the model
    has ..."). The sentences are written once, with B: a `--model-class` report, whose B is a model built from a
    config, says "the model" in them instead.

    Example:
        >>> name_side_b("not used by B, dropped; B's config names 3 labels, lora_B and ‖A−B‖ kept", "the model")
        "not used by the model, dropped; the model's config names 3 labels, lora_B and ‖A−B‖ kept"
        >>> name_side_b("B has 2 layers. B is an adapter: resize B's model first (diff-keys B A)", "the model")
        'the model has 2 layers. The model is an adapter: resize the model first (diff-keys B A)'
    """
    if side_b == "B" or "B" not in text:
        return text

    def spoken(match: re.Match[str]) -> str:
        start = match.start()
        word = side_b if match.group(1) == "'s model" else side_b + (match.group(1) or "")
        return word[:1].upper() + word[1:] if text[max(0, start - 2):start] == ". " else word

    return _SIDE_B.sub(spoken, text)


# Module names of task heads (`classifier`, `lm_head`, BERT's pre-training `cls.predictions`, ...).
_HEAD_WORDS = frozenset({
    "classifier", "score", "qa_outputs", "lm_head", "pooler", "cls", "seq_relationship", "head", "heads", "logits",
    "embed_out", "output_layer", "mlm", "nsp", "predictions", "sop_classifier", "dense_head", "classification_head",
    "pre_classifier", "generator_predictions", "generator_lm_head", "discriminator_predictions", "vocab_transform",
    "vocab_layer_norm", "vocab_projector", "sequence_summary", "lm_loss", "projector", "decode_head",
    "auxiliary_head",
})
_HEAD = _lazy_regex(r"(^|\.)(" + "|".join(sorted(_HEAD_WORDS)) + r")(\.|$)")
# A top-level `fc` is the classifier of torchvision's ResNet / ResNeXt / RegNet / ShuffleNetV2 / GoogLeNet / Inception
# and timm's ResNets (resnet50-0676ba61.pth, a model fine-tuned with num_classes=10). Only at the top: `fc` inside a
# block (an SE module's, an MLP's) is no head, so it is not a head word.
_TOP_FC = _lazy_regex(r"^fc\.(weight|bias)$")
_TOP_WEIGHT = _lazy_regex(r"^[^.]+\.weight$")


def _top_fc_is_head(name: str, *sides: Mapping[str, KeySpec] | None) -> bool:
    """Whether `name` is a top-level `fc.weight` / `fc.bias` that is a classifier in each of `sides` (the state dicts
    holding it): the model's last layer, whose outputs no other top-level linear layer takes as its inputs. An MLP
    whose first layer is `fc` (fc: 16→32, fc2: 32→4) feeds `fc2` with it: a layer, no head. A side not given (None)
    tells nothing against it."""
    if not _TOP_FC.search(name):
        return False
    for side in sides:
        if side is None:
            continue
        own = side.get("fc.weight") or side.get("fc.bias")
        if own is None or not own.shape:
            continue
        width = own.shape[0]
        if any(key != "fc.weight" and len(spec.shape) == 2 and spec.shape[1] == width and _TOP_WEIGHT.search(key)
               for key, spec in side.items()):
            return False
    return True


def _top_linear_is_head(name: str, side: Mapping[str, KeySpec] | None) -> bool:
    """Whether `name` is a top-level `linear.weight` (no bias) beside one encoder under a single prefix and nothing
    else: ColBERT's projection of each token embedding (stanford-futuredata/ColBERT's HF_ColBERT, colbert/modeling/
    hf_colbert.py: `self.linear = nn.Linear(hidden_size, dim, bias=False)` beside `bert.` / `roberta.`), its head.
    Its checkpoint against the BertModel it was trained from read "unknown" on it, an error with no detail, though
    BertModel.from_pretrained drops it.

    Example:
        >>> side = {n: KeySpec(n, (16, 32), "float32") for n in ("linear.weight", "bert.pooler.dense.weight")}
        >>> _top_linear_is_head("linear.weight", side), _top_linear_is_head("linear.weight", {**side, "fc.bias": None})
        (True, False)
    """
    if name != "linear.weight" or side is None or "linear.bias" in side:
        return False
    prefixes = {key.split(".", 1)[0] for key in side if key != name}
    return len(prefixes) == 1 and all("." in key for key in side)


_OUTPUT_EMBEDDING = _lazy_regex(
    r"(^|\.)(lm_head|embed_out|output_projection|cls\.predictions\.decoder|predictions\.decoder|"
    r"lm_head\.decoder|generator_lm_head|output_embeddings)\.weight$"
)
_INPUT_EMBEDDING = _lazy_regex(
    r"(^|\.)(word_embeddings|wte|embed_tokens|shared|tok_embeddings|embed_in|embeddings)\.weight$")
# Every name each of the two matches ends with one of these (an alternative followed by `.weight`): a C-level endswith
# over the other side's keys leaves the regex a handful of them instead of all (`_first_embedding`).
_OUTPUT_EMBEDDING_ENDS = ("lm_head.weight", "embed_out.weight", "output_projection.weight", "decoder.weight",
                          "output_embeddings.weight")
_INPUT_EMBEDDING_ENDS = ("wte.weight", "embed_tokens.weight", "shared.weight", "embeddings.weight", "embed_in.weight")
_BUFFER = _lazy_regex(
    r"(^|\.)(position_ids|token_type_ids|num_batches_tracked|inv_freq|masked_bias|rotary_emb\.inv_freq|"
    r"attn\.bias|attention\.bias|crossattention\.bias|_float_tensor|relative_position_index|causal_mask|"
    r"attn_mask|bias_mask|original_inv_freq|cos_cached|sin_cached|_cos_cached|_sin_cached|attn\.embed_positions)$"
)
# PEFT's prompt learning keeps its encoders in `prompt_encoder.<adapter name>.` (embedding, mlp_head, lstm_head,
# transform), AdapterHub its bottlenecks in `adapters.<name>.`: a bare `prompt_encoder.` or `adapter.` is also a
# model's own module (SamModel's prompt encoder, Wav2Vec2's `adapter.layers.N` with add_adapter=True), whose missing
# weights were called an adapter's, a warning, where a load leaves them at random.
_ADAPTER = _lazy_regex(
    r"(^|\.)(lora_[AB]|lora_embedding_[AB]|lora_magnitude_vector|lora_dropout|prefix_encoder|"
    r"prompt_encoder\.[^.]+\.(?:embedding|delta_embedding|mlp_head|lstm_head|transform|prefix_task_cols|"
    r"prefix_task_rows)|"
    r"modules_to_save|original_module|ia3_l|hada_w\d_[ab]|lokr_w\d|adapter_(up|down)|adapters)(\.|$)"
)
_QUANT = _lazy_regex(
    r"(\.SCB|\.weight_format|\.absmax|\.quant_map|\.quant_state\.[\w.]+|\.nested_absmax|\.nested_quant_map|"
    r"\.qweight|\.qzeros|\.scales|\.g_idx|\.weight_scale(_inv)?|\.input_scale(_ub)?|\.output_scale|\.k_scale|"
    r"\.v_scale|"
    r"\.weight_zero_point|\.weight_packed|\.weight_shape|\.zeros|\.scale|\.weight_g_idx|\.weight_global_scale|"
    r"\.input_global_scale|_proj_blocks|_proj_scales|"
    # ExLlamaV2, AQLM, HQQ, optimum-quanto, EETQ; torchao's safetensors (`_weight_qdata`, `_weight_scale`, ...).
    r"\.q_weight|\.q_scale|\.q_scale_max|\.q_invperm|\.q_perm|\.q_groups|\.codes|\.codebooks|\.W_q|\.zero|"
    # ExLlamaV3 (EXL3): the packed `trellis` beside its sign vectors and codebook markers.
    r"\.trellis|\.suh|\.svh|\.su|\.sv|\.mcg|\.mul1|"
    r"\.weight\._data|\.weight\._scale|\.weight\._shift|\.weight_scales|"
    # transformers' Metal affine quantization (MetalLinear: weight, scales, qbiases).
    r"\.qbiases|"
    # transformers' HIGGS (HiggsLinear: an int16 weight, scales, and the codebooks tables and tables2).
    r"\.tables|\.tables2|"
    # SpQR (QuantizedLinear: the packed dense_weights, the outliers in CSR and the input permutation).
    r"\.dense_weights|\.row_offsets|\.col_vals|\.in_perm|"
    # FP-Quant (FPQuantLinear: the Hadamard rotations beside its qweight and scales).
    r"\.forward_hadamard_matrix|\.backward_hadamard_matrix|"
    # VPTQ (VQuantLinear: codebook indices, the codebooks, outliers, norm and permutation).
    r"\.indices|\.centroids\.weight|\.res_centroids\.weight|\.outlier_centroids\.weight|\.outlier_indices|"
    r"\.res_indices|\.weight_bias|\.perm|"
    # HQQLinear's meta data, stored as small tensors beside its W_q.
    r"\.nbits|\.group_size|\.axis|\.packing|\.channel_wise|\.optimize|\.round_zero|\.compute_dtype|\.shape|"
    r"\.view_as_float|\.unpack_view_dtype|\.encoded_state_dict|\.offload_meta|\.stores_quant_config|"
    r"\.quant_scale|\.quant_zero|"
    # hqq's own qmodel.pt: a zero (or scale) quantized itself, beside its meta_zero (meta_scale) data.
    r"\.zero_q|\.scale_q|"
    r"\._[a-z0-9]+_(?:qdata|scale_and_zero|per_tensor_scale|scale|zero_point|act_pre_scale))$"
)
# Which quantizer writes a side tensor, by its name's end: said where no quantization_config names one. `.scales`
# and `.zeros`, `.scale` are left to "a quantizer": GPTQ, AWQ, mlx-lm, Metal and HQQ all write one.
_SIDE_WRITERS: tuple[tuple[Any, str], ...] = tuple((_lazy_regex(pattern), who) for pattern, who in (
    (r"\.(?:SCB|weight_format)$", "bitsandbytes 8-bit (LLM.int8)"),
    (r"\.(?:absmax|quant_map|nested_absmax|nested_quant_map|quant_state\.[\w.]+)$", "bitsandbytes 4-bit"),
    (r"\.(?:qweight|qzeros)$", "GPTQ or AWQ"),
    (r"\.g_idx$", "GPTQ (its group index per input column: AWQ writes none)"),
    (r"\.weight_scale_inv$", "transformers' FineGrainedFP8 (quant_method fp8)"),
    (r"\.(?:weight_packed|weight_shape|weight_zero_point|weight_g_idx|weight_global_scale|input_global_scale)$",
     "compressed-tensors (llm-compressor)"),
    (r"\.weight_scale$", "compressed-tensors (llm-compressor, int4 or FP8) or an FP8 quantizer (ModelOpt, "
     "fbgemm_fp8), or VPTQ (its norm's scale)"),
    (r"\.(?:input_scale|output_scale|k_scale|v_scale)$",
     "compressed-tensors (llm-compressor, int4 or FP8) or an FP8 quantizer (ModelOpt, fbgemm_fp8)"),
    (r"_proj_(?:blocks|scales)$", "MXFP4 (gpt-oss)"),
    (r"\.q_(?:weight|scale|scale_max|invperm|perm|groups)$", "ExLlamaV2 (EXL2)"),
    (r"\.(?:trellis|suh|svh|su|sv|mcg|mul1)$", "ExLlamaV3 (EXL3)"),
    (r"\.input_scale_ub$", "fbgemm_fp8 (its activation scale's upper bound)"),
    (r"\.(?:codes|codebooks)$", "AQLM"),
    (r"\.weight\.(?:_data|_scale|_shift)$", "optimum-quanto"),
    (r"\.weight_scales$", "EETQ"),
    (r"\.qbiases$", "transformers' Metal quantization"),
    (r"\.tables2?$", "transformers' HIGGS quantization"),
    (r"\.(?:dense_weights|col_vals|in_perm)$", "SpQR"),
    (r"\.row_offsets$", "SpQR (or compressed-tensors' sparse-bitmask)"),
    (r"\.(?:forward|backward)_hadamard_matrix$", "FP-Quant (its Hadamard rotation)"),
    (r"\.(?:indices|centroids\.weight|res_centroids\.weight|outlier_centroids\.weight|outlier_indices|res_indices|"
     r"weight_bias|perm)$", "VPTQ"),
    (r"\._[a-z0-9]+_(?:qdata|scale_and_zero|per_tensor_scale|scale|zero_point|act_pre_scale)$", "torchao"),
    (r"\.(?:W_q|zero|nbits|group_size|axis|packing|channel_wise|optimize|round_zero|compute_dtype|shape|"
     r"view_as_float|unpack_view_dtype|encoded_state_dict|offload_meta|stores_quant_config|quant_scale|quant_zero)$",
     "HQQ"),
))


# Those that are the packed weight itself, not a tensor beside it.
_PACKED_WEIGHT = _lazy_regex(r"(?:\.qweight|\.weight_packed|_blocks|\.q_weight|\.trellis|\.dense_weights|\.W_q|"
                             r"\.codes|\.indices|"
                             r"\._weight_qdata|\.weight\._data)$")


# Side-tensor names a model may give its own parameters (a norm's `scale`, a layer's `scales`): a quantizer's only
# beside a quantized weight of the same layer.
_GENERIC_SIDE = _lazy_regex(r"\.(?:scales|zeros|scale|zero|shape|axis|nbits|group_size|packing|optimize)$")
# The names of EXL3, HIGGS, SpQR, FP-Quant, VPTQ and fbgemm_fp8's upper bound: a quantizer's only in a layer quantized
# that way (`_in_quantized_layer`). Gemma 4's assistant has a Linear named `centroids`, a classifier may keep a `perm`:
# a missing `masked_embedding.centroids.weight` was "written by VPTQ beside its quantized weight" (a warn), where it
# is the model's own weight, left at random ("unknown", an error, as before these layouts were read).
_LAYER_ONLY_SIDE = _lazy_regex(
    r"\.(?:trellis|suh|svh|su|sv|mcg|mul1|tables2?|dense_weights|row_offsets|col_vals|in_perm|"
    r"forward_hadamard_matrix|backward_hadamard_matrix|indices|(?:res_|outlier_)?centroids\.weight|outlier_indices|"
    r"res_indices|weight_bias|perm|input_scale_ub)$")
_VPTQ_CODEBOOK = _lazy_regex(r"\.(?:res_|outlier_)?centroids\.weight$")


def _in_quantized_layer(name: str, side: Mapping[str, KeySpec]) -> bool:
    """Whether `side` holds a quantized weight of the layer `name` is a side tensor (or the storage) of: an EXL3
    trellis beside its sign vectors, a VPTQ `indices` beside its codebook, SpQR's int64 `dense_weights`, a GPTQ / AWQ
    / FP-Quant `qweight`, EXL2's `q_weight`, HQQ's `W_q`, compressed-tensors' `weight_packed`, or a `weight` stored
    as integers or float8 (bitsandbytes, HIGGS' int16, mlx-lm's and Metal's packed uint32, FP8). A bare `trellis`,
    `indices` or `dense_weights` is a name a model may give its own tensor.

    Example:
        >>> spec = KeySpec("emb.centroids.weight", (2, 4), "float32")
        >>> _in_quantized_layer("emb.centroids.weight", {"emb.centroids.weight": spec})
        False
    """
    layer = _VPTQ_CODEBOOK.sub("", name) if _VPTQ_CODEBOOK.search(name) else name.rsplit(".", 1)[0]
    if layer + ".trellis" in side and any(layer + leaf in side for leaf in (".suh", ".svh", ".su", ".sv")):
        return True
    if layer + ".indices" in side and layer + ".centroids.weight" in side:
        return True
    dense = side.get(layer + ".dense_weights")
    if dense is not None and dense.dtype == "int64":
        return True
    if any(layer + leaf in side for leaf in (".qweight", ".q_weight", ".W_q", ".weight_packed")):
        return True
    weight = side.get(layer + ".weight")
    return weight is not None and weight.dtype.startswith(("int", "uint", "float8"))


def side_tensor_detail(name: str, kind: str, named: str | None = None, other: str | None = None) -> str:
    """The detail of a quantizer's side tensor where the config it is checked against names no quantizer: who writes
    it and what to do (`kind`: "missing", B's tensor that A lacks, or "unexpected", A's that B lacks). `named`: the
    quantizer the config of the side that holds it names (A's, for an unexpected key), `other`: the other side's;
    A's own quantization_config was said to be missing ("add that quantizer's quantization_config to config.json")
    where A's config.json names it and B's model is the one built without it.

    Example:
        >>> side_tensor_detail("layers.0.mlp.SCB", "unexpected")[:54]
        'written by bitsandbytes 8-bit (LLM.int8) beside its qu'
    """
    who = next((writer for pattern, writer in _SIDE_WRITERS if pattern.search(name)),
               "a quantizer (GPTQ, AWQ, mlx-lm, HQQ and Metal write scales and zeros)")
    what = "the quantized weight" if _PACKED_WEIGHT.search(name) else "beside its quantized weight"
    written = f"written by {who} as {what}" if what.startswith("the") else f"written by {who} {what}"
    if kind == "missing":
        return (f"{written}, and A has none: A is not quantized that way (compare with the checkpoint B was "
                "quantized from, or quantize A with it)")
    if named:
        held = ("B's names none" if not other else "B's the same one" if other == named else f"B's the {other} one")
        return (f"{written}; A's config.json names the {named} quantizer, {held}: B's model has no such tensor and "
                "drops it (an unexpected key); compare A with a checkpoint quantized as A is"
                + (", or with a dequantized copy of A" if other != named else ""))
    return (f"{written}; no quantization_config names that quantizer, so a "
            "model built without it drops this (an unexpected key): add that quantizer's quantization_config to "
            "config.json to load it quantized, or compare a dequantized copy")


def is_quantizer_name(name: str) -> bool:
    """Whether `name` is one a quantizer stores beside or in place of a weight (`.qweight`, `.scales`, torchao's
    `._weight_qdata`): read by that quantizer, never a rename of a model's own weight."""
    return _QUANT.search(name) is not None


# Integer dtypes quantizers store weights in (bitsandbytes int8 / packed uint8, GPTQ int32, ...).
_QUANTIZED_DTYPES = frozenset({"int8", "uint8", "int32", "int16", "uint16", "uint32"})
# What a quantized layer stores in place of its `weight` (GPTQ / AWQ, compressed-tensors, EXL2, EXL3).
_QUANTIZED_STORAGE = ("qweight", "weight_packed", "_weight_qdata", "weight._data", "W_q", "codes", "q_weight",
                      "trellis", "dense_weights", "indices")
_POSITION = _lazy_regex(r"(position_embeddings|wpe|embed_positions|pos_emb|position_embedding|positional)")
# Tensors with one row (or, for `final_logits_bias`, one column) per vocabulary entry. By component, not by
# substring: `model.decoder.layers.0.fc1` is no vocabulary, nor is every `bias`.
_VOCAB = _lazy_regex(
    r"(^|\.)(word_embeddings|wte|embed_tokens|shared|tok_embeddings|embed_in|lm_head|decoder|embed_out|"
    r"output_projection|generator_lm_head|token_embedding|embeddings)\.(weight|bias)$|"
    r"(^|\.)(predictions\.bias|final_logits_bias)$"
)
_WRAPPERS = ("module.", "_orig_mod.", "base_model.model.", "model.module.", "_fsdp_wrapped_module.",
             "_checkpoint_wrapped_module.", "ema.", "model_ema.", "student.", "teacher.", "state_dict.")
# Base-model prefixes of transformers' task classes (the `base_model_prefix` they add or strip on load).
_BASE_PREFIXES = ("model.", "bert.", "roberta.", "transformer.", "gpt_neox.", "deberta.", "distilbert.",
                  "albert.", "electra.", "xlm.", "encoder.", "vit.", "backbone.", "t5.", "bart.", "language_model.")

# Transformers' "legacy" renames (transformers/conversion_mapping.py, key "legacy"), as --rename flags.
LEGACY_RENAMES: tuple[Rename, ...] = (
    Rename(r"LayerNorm\.gamma", "LayerNorm.weight"),
    Rename(r"LayerNorm\.beta", "LayerNorm.bias"),
    Rename(r"\.weight_g$", ".parametrizations.weight.original0"),
    Rename(r"\.weight_v$", ".parametrizations.weight.original1"),
)
_SPARING_LOOKAHEAD = re.compile(r"^\^\(\?!\(\?:[^)]*\)\\\.\)")
_DIGIT_SEGMENT = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)")


# Meta's original Llama / Mistral layout (`consolidated.00.pth`, Mistral's `consolidated.safetensors`) and the
# Hugging Face one it converts to. The conversion is not a rename: transformers' convert_llama_weights_to_hf.py
# (and convert_mistral_weights_to_hf.py) permute the rows of wq and wk from Meta's interleaved rotary pairs to
# rotate_half's halves, so any rename-only "fix" loads weights that produce garbage.
_META_LAYOUT = _lazy_regex(
    r"(?:^|\.)(?:tok_embeddings\.weight|norm\.weight|output\.weight|rope\.freqs|"
    r"layers\.\d+\.(?:attention\.w[qkvo]|attention\.(?:q|k)_norm|feed_forward\.(?:w[123]|gate|experts\.\d+\.w[123])|"
    r"attention_norm|ffn_norm)\.(?:weight|bias))$"
)
_META_EVIDENCE = _lazy_regex(r"(?:^|\.)layers\.\d+\.attention\.w[qk]\.weight$")
_HF_LAYOUT = _lazy_regex(
    r"(?:^|\.)(?:embed_tokens\.weight|norm\.weight|lm_head\.weight|rotary_emb\.inv_freq|"
    r"layers\.\d+\.(?:self_attn\.(?:[qkvo]_proj|q_norm|k_norm)|mlp\.(?:gate|up|down)_proj|"
    r"(?:block_sparse_moe|mlp)\.(?:gate|experts\.\d+\.w[123]|experts\.(?:gate_up_proj|down_proj)|"
    r"experts\.\d+\.(?:gate|up|down)_proj)|input_layernorm|post_attention_layernorm)(?:\.(?:weight|bias))?)$"
)
_HF_EVIDENCE = _lazy_regex(r"(?:^|\.)layers\.\d+\.self_attn\.[qk]_proj\.weight$")


# A single-file Stable Diffusion checkpoint (CompVis / Stability's original LDM layout, as CivitAI and A1111 share
# them: `model.diffusion_model.input_blocks.N.M`, the VAE under `first_stage_model`, the text encoder(s) under
# `cond_stage_model` or SDXL's `conditioner.embedders.N`) and diffusers' models (`down_blocks.N.resnets.M`, the VAE's
# `encoder.down_blocks`, transformers' CLIP `text_model`). diffusers' from_single_file converts between them:
# blocks renumbered, the VAE's 1x1-conv attention reshaped to Linear; no rename does that.
_LDM_LAYOUT = _lazy_regex(
    r"^(?:model\.diffusion_model|model_ema|first_stage_model|cond_stage_model|conditioner\.embedders\.\d+)\.")
_LDM_EVIDENCE = _lazy_regex(
    r"^(?:model\.diffusion_model\.(?:input_blocks|middle_block|output_blocks|time_embed)\.|"
    r"first_stage_model\.(?:encoder|decoder)\.)")
_DIFFUSERS_LAYOUT = _lazy_regex(
    r"^(?:(?:unet|vae|text_encoder(?:_2)?)\.)?(?:(?:encoder|decoder)\.)?(?:conv_in|conv_out|conv_norm_out|"
    r"time_embedding|add_embedding|down_blocks|up_blocks|mid_block|quant_conv|post_quant_conv|text_model|"
    r"text_projection)\.")
_DIFFUSERS_EVIDENCE = _lazy_regex(r"(?:^|\.)(?:down_blocks|up_blocks|mid_block)\.")


def _sides(unexpected: Sequence[str], missing: Sequence[str], here: Any, there: Any,
           ) -> tuple[str, str, Sequence[str], Sequence[str]] | None:
    """Which side holds which of two layouts: (side of `here`, side of `there`, their keys) when A's keys (the
    unexpected ones) match `here` and B's (the missing ones) `there`, or the reverse; None when neither."""
    if any(map(here.search, unexpected)) and any(map(there.search, missing)):
        return "A", "B", unexpected, missing
    if any(map(here.search, missing)) and any(map(there.search, unexpected)):
        return "B", "A", missing, unexpected
    return None


def _paired_layouts(unexpected: Sequence[str], missing: Sequence[str], here: tuple[Any, Any, str],
                    there: tuple[Any, Any, str]) -> tuple[str, str, Sequence[str], Sequence[str],
                                                          dict[str, tuple[str, str, str]]] | None:
    """Two known layouts of one model, one on each side: (side of `here`, side of `there`, their keys, and the
    foreign-layout whys of both sides' keys), or None when the keys show no such pair. `here` / `there`: (evidence
    regex, layout regex, the layout's name in the whys)."""
    sides = _sides(unexpected, missing, here[0], there[0])
    if sides is None:
        return None
    here_side, there_side, here_names, there_names = sides
    whys = _layout_errors("foreign-layout", (here_names, here[1], f"{here[2]} (in {here_side})"),
                          (there_names, there[1], f"{there[2]} (in {there_side})"))
    return here_side, there_side, here_names, there_names, whys


# Every match of _LDM_EVIDENCE holds one of the first words, every match of _DIFFUSERS_EVIDENCE one of the second.
_LDM_WORDS = ("model.diffusion_model.", "first_stage_model.")
_DIFFUSERS_WORDS = ("down_blocks.", "up_blocks.", "mid_block.")


def _sd_single_file_layout(unexpected: Sequence[str], missing: Sequence[str], joined_unexpected: str | None = None,
                           joined_missing: str | None = None) -> tuple[dict[str, tuple[str, str, str]], str]:
    """foreign_layout's whys and note for a single-file Stable Diffusion checkpoint against a diffusers model.

    `joined_unexpected` / `joined_missing`: the names joined by newlines, when the caller has them.
    """
    # A side whose names joined hold none of a pattern's words has no name it matches: then `_sides` finds no
    # pair, and a few substring searches spare a regex search per name (10,000s on every diff).
    joined_unexpected = "\n".join(unexpected) if joined_unexpected is None else joined_unexpected
    joined_missing = "\n".join(missing) if joined_missing is None else joined_missing
    ldm_a, ldm_b = (any(map(joined.__contains__, _LDM_WORDS)) for joined in (joined_unexpected, joined_missing))
    diffusers_a, diffusers_b = (any(map(joined.__contains__, _DIFFUSERS_WORDS))
                                for joined in (joined_unexpected, joined_missing))
    if not ((ldm_a and diffusers_b) or (ldm_b and diffusers_a)):
        return {}, ""
    paired = _paired_layouts(unexpected, missing,
                             (_LDM_EVIDENCE, _LDM_LAYOUT, "single-file Stable Diffusion layout"),
                             (_DIFFUSERS_EVIDENCE, _DIFFUSERS_LAYOUT, "diffusers' layout"))
    if paired is None:
        return {}, ""
    ldm_side, diffusers_side, ldm_names, diffusers_names, whys = paired
    ldm_in_a = ldm_side == "A"
    # SDXL's single files hold their two text encoders under `conditioner.embedders`: its pipeline class is another.
    pipeline = ("StableDiffusionXLPipeline" if any(name.startswith("conditioner.embedders.") for name in ldm_names)
                else "StableDiffusionPipeline")
    note = (f"{ldm_side} is a single-file Stable Diffusion checkpoint in the original (LDM) layout "
            "(model.diffusion_model = UNet, first_stage_model = VAE, cond_stage_model / conditioner = text "
            f"encoders) and {diffusers_side} in diffusers' layout: "
            + (f"load A with diffusers' from_single_file (e.g. {pipeline}.from_single_file) or its "
               "convert_original_stable_diffusion_to_diffusers.py" if ldm_in_a else
               "diffusers' convert_diffusers_to_original_stable_diffusion.py writes the single-file layout")
            + "; blocks are renumbered and the VAE's attention reshaped, which no rename does")
    return whys, note


# An original ControlNet (lllyasviel's control_*.pth / control_v11*.safetensors, as A1111's sd-webui-controlnet and
# ComfyUI load them: the UNet encoder copy under `control_model.input_blocks.N`, its hint encoder
# `control_model.input_hint_block`, one zero conv per block `control_model.zero_convs.N.0`) against diffusers'
# ControlNetModel (`down_blocks`, `controlnet_cond_embedding`, `controlnet_down_blocks.N`). diffusers' from_single_file
# converts it as it does the UNet: blocks renumbered; the rename search offered a few one-to-one pairs as the fix.
_CONTROLNET_LAYOUT = _lazy_regex(r"^control_model\.")
_CONTROLNET_EVIDENCE = _lazy_regex(r"^control_model\.(?:input_blocks|middle_block|input_hint_block|zero_convs)\.")
_DIFFUSERS_CONTROLNET_LAYOUT = _lazy_regex(
    r"^(?:conv_in|time_embedding|add_embedding|down_blocks|mid_block|controlnet_cond_embedding|controlnet_down_blocks|"
    r"controlnet_mid_block)\.")
_DIFFUSERS_CONTROLNET_EVIDENCE = _lazy_regex(r"^(?:controlnet_down_blocks|controlnet_cond_embedding)\.")


def _controlnet_single_file_layout(unexpected: Sequence[str], missing: Sequence[str], joined_unexpected: str,
                                   joined_missing: str) -> tuple[dict[str, tuple[str, str, str]], str]:
    """foreign_layout's whys and note for an original ControlNet against diffusers' ControlNetModel (either way
    round); ({}, "") when the keys show no such pair."""
    if not ("control_model." in joined_unexpected + joined_missing and "controlnet_" in joined_unexpected
            + joined_missing):
        return {}, ""
    paired = _paired_layouts(unexpected, missing,
                             (_CONTROLNET_EVIDENCE, _CONTROLNET_LAYOUT, "original ControlNet layout"),
                             (_DIFFUSERS_CONTROLNET_EVIDENCE, _DIFFUSERS_CONTROLNET_LAYOUT,
                              "diffusers' ControlNetModel layout"))
    if paired is None:
        return {}, ""
    original_side, diffusers_side, original_names, diffusers_names, whys = paired
    note = (f"{original_side} is a ControlNet in its original single-file layout (control_model.input_blocks, "
            f"input_hint_block, zero_convs: what A1111's ControlNet extension and ComfyUI load) and {diffusers_side} "
            "in diffusers' ControlNetModel layout (down_blocks, controlnet_cond_embedding, controlnet_down_blocks): "
            + ("load A with diffusers' ControlNetModel.from_single_file or its convert_original_controlnet_to_"
               "diffusers.py" if original_side == "A" else
               "code written for the original layout needs A converted back")
            + "; blocks are renumbered, which no rename does")
    return whys, note


# A single-file diffusion transformer in its authors' layout (Black Forest Labs' Flux and Tencent's HunyuanVideo:
# `double_blocks.N.img_attn.qkv`, `single_blocks.N.linear1`; Stability's SD3 / SD3.5 MMDiT: `joint_blocks.N.x_block`;
# bare, or under ComfyUI's `model.diffusion_model.` / a LoRA trainer's `diffusion_model.`) against diffusers' model of
# it (FluxTransformer2DModel, SD3Transformer2DModel, HunyuanVideoTransformer3DModel: `transformer_blocks.N.attn.to_q`,
# `single_transformer_blocks.N`). diffusers' from_single_file converts: q, k and v are split out of one fused qkv
# (Flux's single blocks fuse the MLP in too), so no rename loads them; a rename search found only the odd
# one-to-one pair (img_in → x_embedder) and offered it as the fix.
_ORIGINAL_DIT_PREFIX = r"^(?:(?:model\.)?diffusion_model\.)?"
_ORIGINAL_DIT_LAYOUT = _lazy_regex(
    _ORIGINAL_DIT_PREFIX + r"(?:(?:double_blocks|single_blocks|joint_blocks|img_in|txt_in|time_in|vector_in|"
    r"guidance_in|final_layer|x_embedder|context_embedder|t_embedder|y_embedder)\.|pos_embed$)")
_ORIGINAL_DIT_EVIDENCE = _lazy_regex(_ORIGINAL_DIT_PREFIX + r"(?:double_blocks|single_blocks|joint_blocks)\.\d+\.")
_DIFFUSERS_DIT_LAYOUT = _lazy_regex(
    r"^(?:transformer\.)?(?:transformer_blocks|single_transformer_blocks|x_embedder|context_embedder|"
    r"time_text_embed|time_guidance_embed|norm_out|proj_out|pos_embed|context_refiner)\.")
_DIFFUSERS_DIT_EVIDENCE = _lazy_regex(r"^(?:transformer\.)?(?:single_)?transformer_blocks\.\d+\.")


def _dit_family(names: Sequence[str]) -> tuple[str, str, str]:
    """(family in words, diffusers' class of it, its authors' code) of a diffusion transformer's original keys.
    HunyuanVideo has Flux's double and single blocks too (ComfyUI even names their attention img_attn.qkv as Flux
    does): its text-token refiner, or its own release's img_attn_qkv, tell it. Each note named all three families.

    Example:
        >>> _dit_family(["double_blocks.0.img_attn.qkv.weight", "txt_in.individual_token_refiner.blocks.0.x"])[1]
        'HunyuanVideoTransformer3DModel'
    """
    if any("joint_blocks." in name for name in names) and not any("double_blocks." in name for name in names):
        return "Stability's SD3: joint_blocks", "SD3Transformer2DModel", "Stability's sd3 reference code"
    if any("txt_in.individual_token_refiner." in name or ".img_attn_qkv." in name for name in names):
        return ("Tencent's HunyuanVideo: double_blocks / single_blocks, txt_in.individual_token_refiner",
                "HunyuanVideoTransformer3DModel", "Tencent's HunyuanVideo")
    return "Black Forest Labs' Flux: double_blocks / single_blocks", "FluxTransformer2DModel", "Black Forest Labs' flux"


def _dit_single_file_layout(unexpected: Sequence[str], missing: Sequence[str], joined_unexpected: str,
                            joined_missing: str) -> tuple[dict[str, tuple[str, str, str]], str]:
    """foreign_layout's whys and note for a Flux / SD3 / HunyuanVideo transformer in its original layout against
    diffusers' model of it (either way round); ({}, "") when the keys show no such pair."""
    words = ("double_blocks.", "single_blocks.", "joint_blocks.")
    original_a, original_b = (any(map(joined.__contains__, words)) for joined in (joined_unexpected, joined_missing))
    diffusers_a, diffusers_b = ("transformer_blocks." in joined for joined in (joined_unexpected, joined_missing))
    if not ((original_a and diffusers_b) or (original_b and diffusers_a)):
        return {}, ""
    paired = _paired_layouts(unexpected, missing,
                             (_ORIGINAL_DIT_EVIDENCE, _ORIGINAL_DIT_LAYOUT, "original single-file transformer layout"),
                             (_DIFFUSERS_DIT_EVIDENCE, _DIFFUSERS_DIT_LAYOUT, "diffusers' layout"))
    if paired is None:
        return {}, ""
    original_side, diffusers_side, original_names, diffusers_names, whys = paired
    family, model_class, authors = _dit_family(original_names)
    note = (f"{original_side} is a diffusion transformer in its original single-file layout ({family}) and "
            f"{diffusers_side} in diffusers' layout (transformer_blocks.N.attn.to_q): "
            + (f"load A with diffusers' from_single_file ({model_class}.from_single_file)" if original_side == "A"
               else f"code written for the original layout (ComfyUI, {authors}) needs A converted back")
            + "; q, k and v are split out of one fused qkv tensor, which no rename does")
    return whys, note


# Gives A's one weights file as typed and a new folder beside it (`converters.conversion_paths`), or None when A is
# in several files: what a conversion script a note names is given. Called only for such a note (it looks at the
# file system); None where A's file is not known.
ConversionPaths = Callable[[], tuple[str, str] | None] | None


def _resolved(paths: ConversionPaths) -> tuple[str, str] | None:
    return paths() if paths is not None else None


def _convert_a(library: str, script: str, paths: ConversionPaths, input_flag: str, output_flag: str, *,
               in_package: bool = True, extra: Sequence[tuple[str, str | None]] = ()) -> str:
    """The conversion script `script` of `library` given A's file as `input_flag` and a new folder as `output_flag`
    (`converters.conversion_advice`): a command to run, or the script's source named with the flags' real values.
    Where A's file is not one file the user can name (`paths` None), the flags are said in words."""
    from weightdoctor.converters import conversion_advice

    if (paths := _resolved(paths)) is None:
        named = conversion_advice(library, script, in_package=in_package)
        return (f"{named}, given A's weights file as {input_flag} and a new folder as {output_flag}"
                + "".join(f", {flag}" if value is None else f", {flag} {value}" for flag, value in extra))
    return conversion_advice(library, script, [(input_flag, paths[0]), (output_flag, paths[1]), *extra],
                             in_package=in_package)


def _script(library: str, script: str) -> str:
    """`library`'s conversion `script` named: `python -m MODULE` where the installed library ships it, else its
    place in the library's source repository."""
    from weightdoctor.converters import conversion_advice

    return conversion_advice(library, script)


def _shipped_words(script: str) -> str:
    """How transformers' conversion `script` runs: `, run as python -m MODULE` where the installed transformers ships
    it, else where its source is."""
    from weightdoctor.converters import not_shipped, shipped_module

    module = shipped_module("transformers", script)
    return f", run as python -m {module}" if module is not None else f", {not_shipped('transformers', script)}"


def _stem(paths: tuple[str, str] | None) -> str | None:
    """A's file name without its suffix (a release's name: sam_vit_b_01ec64.pth), None when A is not one file."""
    return None if paths is None else Path(paths[0]).stem  # the paths resolved


# fair-esm's pretrained models, the names convert_esm.py's --model takes (its MODEL_MAPPING): it loads them through
# the esm package (which downloads them), not from a file.
_FAIR_ESM_MODELS = frozenset({
    "esm1b_t33_650M_UR50S", *(f"esm1v_t33_650M_UR90S_{n}" for n in range(1, 6)), "esm2_t48_15B_UR50D",
    "esm2_t36_3B_UR50D", "esm2_t33_650M_UR50D", "esm2_t30_150M_UR50D", "esm2_t12_35M_UR50D", "esm2_t6_8M_UR50D"})
# Meta's Segment Anything releases, the names convert_sam_to_hf.py's --model_name takes and downloads itself.
_SAM_RELEASES = ("sam_vit_b_01ec64", "sam_vit_l_0b3195", "sam_vit_h_4b8939")


def _esm_note(given: ConversionPaths) -> str:
    from weightdoctor.converters import conversion_advice

    paths = _resolved(given)
    release = _stem(paths)
    if release in _FAIR_ESM_MODELS and paths is not None:
        how = (conversion_advice("transformers", "models/esm/convert_esm.py",
                                 [("--model", release), ("--pytorch_dump_folder_path", paths[1])])
               + f", which converts fair-esm's pretrained {release} (A's name; the esm package loads it, "
               "downloading it where it is not cached)")
    else:
        how = (_script("transformers", "models/esm/convert_esm.py") + ", given --model, converts fair-esm's "
               "pretrained models by name (esm2_t6_8M_UR50D, esm2_t33_650M_UR50D, esm1b_t33_650M_UR50S ...: the esm "
               "package loads them), not a file: "
               + (f"A's name ({Path(paths[0]).name}) is none of them, so a fine-tuned A needs its weights copied "
                  "the way that script copies them" if paths is not None else "a fine-tuned A needs its weights "
                  "copied the way that script copies them"))
    return ("A is in fair-esm's own layout (encoder.sentence_encoder.layers.N.self_attn.q_proj, fc1, "
            "emb_layer_norm_after: the esm package's .pt) and B in transformers' ESM layout "
            f"(esm.encoder.layer.N.attention.self.query, intermediate.dense): {how}, copying each weight to its "
            "transformers name and saving the model with its config; the renames suggested here cover a few keys "
            "only")


def _sam_note(given: ConversionPaths) -> str:
    from weightdoctor.converters import conversion_advice

    paths = _resolved(given)
    release = _stem(paths)
    if release in _SAM_RELEASES and paths is not None:
        how = (conversion_advice("transformers", "models/sam/convert_sam_to_hf.py",
                                 [("--model_name", release), ("--pytorch_dump_folder_path", paths[1])])
               + f", which converts Meta's {release} (A's name; it downloads the release itself)")
    else:
        how = (_script("transformers", "models/sam/convert_sam_to_hf.py") + ", given --model_name "
               f"({', '.join(_SAM_RELEASES)}), converts Meta's released checkpoints (it downloads them itself)")
    return ("A is in Segment Anything's own layout (image_encoder.blocks.N, neck.0, prompt_encoder.pe_layer, "
            "mask_decoder.output_upscaling: segment-anything's sam_vit_*.pth) and B in transformers' SamModel layout "
            f"(vision_encoder.layers.N, neck.conv1, shared_image_embedding, mask_decoder.upscale_conv1): {how}, "
            "renaming every key by its KEYS_TO_MODIFY_MAPPING and storing pe_layer's matrix under two names; a "
            "fine-tuned A needs that script's replace_keys applied to it; the renames suggested here cover a few "
            "keys only")


def _rwkv_note(given: ConversionPaths) -> str:
    # The script downloads its input from the Hub (--repo_id, --checkpoint_file): a local file is no argument of it.
    paths = _resolved(given)
    named = f" (A's: {Path(paths[0]).name})" if paths is not None else ""
    output = f" and --output_dir the new folder (such as {paths[1]})" if paths is not None else \
        " and --output_dir a new folder"
    return ("A is in BlinkDL's own RWKV-4 layout (emb, blocks.N.att.time_mix_k, ffn, ln_out, head: RWKV-LM's and "
            "ChatRWKV's .pth) and B in transformers' Rwkv layout (rwkv.embeddings, rwkv.blocks.N.attention."
            "time_mix_key, feed_forward): " + _script("transformers", "models/rwkv/convert_rwkv_checkpoint_to_hf.py")
            + ", given --repo_id the Hub repo the .pth is in (BlinkDL/rwkv-4-pile-169m ...: it downloads it), "
            f"--checkpoint_file the file's name there{named}{output}, renames every key and writes the config; the "
            "renames suggested here cover most keys only")


# TencentARC's original T2I-Adapter (t2iadapter_*_sd14v1.pth, *_sd15v2.pth, as ComfyUI and A1111's ControlNet
# extension load them: `conv_in`, then one flat `body.K` list of ResnetBlocks, K = stage * num_res_blocks + block, a
# stage's first block holding its `in_conv`) against diffusers' T2IAdapter (`adapter.conv_in`, `adapter.body.S.
# resnets.B.block1`, the stage's `adapter.body.S.in_conv`). diffusers' convert_original_t2i_adapter.py renumbers the
# blocks; the rename search offered `^=adapter.`, which maps body.2.in_conv onto another stage's, and the keys under
# `adapter.` were called PEFT adapter weights.
_ORIGINAL_T2I_LAYOUT = _lazy_regex(r"^(?:conv_in|body\.\d+\.(?:block1|block2|in_conv|skep))\.")
_ORIGINAL_T2I_EVIDENCE = _lazy_regex(r"^body\.\d+\.block[12]\.")
_DIFFUSERS_T2I_LAYOUT = _lazy_regex(r"^adapter\.(?:conv_in|body)\.")
_DIFFUSERS_T2I_EVIDENCE = _lazy_regex(r"^adapter\.body\.\d+\.resnets\.\d+\.block[12]\.")


def _t2i_adapter_layout(unexpected: Sequence[str], missing: Sequence[str], joined_unexpected: str,
                        joined_missing: str, paths_a: ConversionPaths = None,
                        ) -> tuple[dict[str, tuple[str, str, str]], str]:
    """foreign_layout's whys and note for an original T2I-Adapter against diffusers' T2IAdapter (either way round);
    ({}, "") when the keys show no such pair."""
    if ".resnets." not in joined_unexpected + joined_missing or "body." not in joined_unexpected + joined_missing:
        return {}, ""
    paired = _paired_layouts(unexpected, missing,
                             (_ORIGINAL_T2I_EVIDENCE, _ORIGINAL_T2I_LAYOUT, "original T2I-Adapter layout"),
                             (_DIFFUSERS_T2I_EVIDENCE, _DIFFUSERS_T2I_LAYOUT, "diffusers' T2IAdapter layout"))
    if paired is None:
        return {}, ""
    original_side, diffusers_side, original_names, diffusers_names, whys = paired
    note = (f"{original_side} is a T2I-Adapter in TencentARC's original layout (conv_in, body.K.block1: one flat "
            f"list of blocks, what ComfyUI and A1111's ControlNet extension load) and {diffusers_side} in diffusers' "
            "T2IAdapter layout (adapter.body.S.resnets.B.block1): "
            + ("convert A with " + _convert_a("diffusers", "scripts/convert_original_t2i_adapter.py", paths_a,
                                              "--checkpoint_path", "--output_path", in_package=False)
               + " (and --is_adapter_light for an Adapter-Light one, else --in_channels: the image channels, "
               "A's conv_in.weight's second size divided by 64)" if original_side == "A" else
               "code written for the original layout needs A converted back")
            + "; the blocks are renumbered per stage, which no rename does")
    return whys, note


@dataclass(frozen=True)
class _RenamedLayout:
    """A model's own layout in A against transformers' layout of it in B that a converter renames key by key: the
    rename search finds a few of its pairs only, so the note names the converter. `a_words` / `b_words`: one of them
    must be in A's unexpected / B's missing keys (a substring test first: this runs on every diff); the evidence
    regexes must then match one key on each side."""

    a_words: tuple[str, ...]
    b_words: tuple[str, ...]
    a_evidence: Any
    b_evidence: Any
    # The note, or a function of A's paths that gives it (a conversion script given A's file).
    note: str | Callable[[ConversionPaths], str]
    # A's keys of a later version of the same layout, which B's class and the converter the note names do not take
    # (BlinkDL's RWKV-5 / RWKV-6 beside RWKV-4): none of them may be among A's unexpected keys.
    a_excluded: Any = None

    def note_for(self, unexpected: Sequence[str], joined_unexpected: str, missing: Sequence[str],
                 joined_missing: str, paths_a: ConversionPaths = None) -> str:
        """The note when the keys show this pair of layouts, else ""."""
        if not (any(word in joined_unexpected for word in self.a_words)
                and any(word in joined_missing for word in self.b_words)):
            return ""
        if not (any(map(self.a_evidence.search, unexpected)) and any(map(self.b_evidence.search, missing))):
            return ""
        if self.a_excluded is not None and any(map(self.a_excluded.search, unexpected)):
            return ""
        return self.note if isinstance(self.note, str) else self.note(paths_a)


# openai-whisper's own checkpoint (tiny.pt ... large-v3.pt: {"dims", "model_state_dict"}) names its blocks
# `encoder.blocks.N.attn.query`, `decoder.blocks.N.cross_attn.key`, `mlp.0`, `positional_embedding`; transformers'
# Whisper `model.encoder.layers.N.self_attn.q_proj`. transformers' convert_openai_to_hf.py renames them (its
# WHISPER_MAPPING) and builds the config from `dims`: the rename search found only a few of its pairs and offered them
# as the fix, one of them onto the tied `proj_out`.
_OPENAI_WHISPER_EVIDENCE = _lazy_regex(r"^(?:encoder|decoder)\.blocks\.\d+\.(?:attn|cross_attn)\.(?:query|key|value)\.")
_HF_WHISPER_EVIDENCE = _lazy_regex(
    r"^(?:model\.)?(?:encoder|decoder)\.layers\.\d+\.(?:self_attn|encoder_attn)\.q_proj\.")


# fair-esm's own checkpoints (esm2_t6_8M_UR50D.pt, esm1b_t33_650M_UR50S.pt: {"model", "args" or "cfg"}) name their
# blocks `encoder.sentence_encoder.layers.N.self_attn.q_proj`, `fc1`, `emb_layer_norm_after`; transformers' ESM
# `esm.encoder.layer.N.attention.self.query`, `intermediate.dense`, `esm.encoder.emb_layer_norm_after`.
# transformers' convert_esm.py copies each weight to its new name: the rename search found a few prefixes and
# offered them as the fix, with no word of the converter.
_FAIR_ESM_EVIDENCE = _lazy_regex(r"(?:^|\.)layers\.\d+\.self_attn\.[qkv]_proj\.")
_HF_ESM_EVIDENCE = _lazy_regex(r"(?:^|\.)encoder\.layer\.\d+\.attention\.self\.(?:query|key|value)\.")


# SAM 2's own checkpoints (sam2_hiera_tiny.pt, sam2.1_hiera_large.pt: {"model": state dict}) name the Hiera image
# encoder `image_encoder.trunk.blocks.N`, `image_encoder.neck.convs.N.conv`, the prompt encoder and mask decoder
# `sam_prompt_encoder.*` / `sam_mask_decoder.*`, beside the video tracker's memory_attention, memory_encoder and
# maskmem_tpos_enc; transformers' Sam2Model `vision_encoder.backbone.blocks.N`, `prompt_encoder`, `mask_decoder`. Every
# key was "unknown", with no word of the converter (the Segment Anything row looks for SAM 1's names).
_SAM2_EVIDENCE = _lazy_regex(r"^image_encoder\.trunk\.blocks\.\d+\.|^sam_(?:prompt_encoder|mask_decoder)\.")
_HF_SAM2_EVIDENCE = _lazy_regex(r"^(?:sam2\.)?vision_encoder\.backbone\.blocks\.\d+\.")


# fairseq's own wav2vec 2.0 and HuBERT checkpoints (wav2vec_small.pt, wav2vec_small_960h.pt, hubert_base_ls960.pt:
# {"model", "cfg" or "args", "optimizer_history", "extra_state", ...}) name the convolutional front end
# `feature_extractor.conv_layers.N.0`, its projection `post_extract_proj`, the positional convolution
# `encoder.pos_conv.0`, the blocks' `self_attn`, `fc1`, `fc2`; a fine-tuned one keeps them under
# `w2v_encoder.w2v_model.` beside `w2v_encoder.proj`. transformers' `feature_projection.projection`,
# `encoder.pos_conv_embed.conv`, `feed_forward.intermediate_dense`: its conversion scripts copy each weight by their
# MAPPING. The rename search offered a handful of renames as the fix and called the rest "unknown" (fc1, pos_conv, the
# front end's convolutions), with no word of the converter.
_FAIRSEQ_W2V_EVIDENCE = _lazy_regex(r"(?:^|\.)encoder\.pos_conv\.0\.|(?:^|\.)post_extract_proj\.")
_HF_W2V_EVIDENCE = _lazy_regex(r"(?:^|\.)encoder\.pos_conv_embed\.conv\.|(?:^|\.)feature_projection\.projection\.")


def _fairseq_wav2vec2_note(unexpected: Sequence[str], joined_unexpected: str, missing: Sequence[str],
                           joined_missing: str, paths_a: ConversionPaths = None) -> str:
    """The note for fairseq's own wav2vec 2.0 / HuBERT layout in A against transformers' model of it in B, or ""."""
    if "pos_conv" not in joined_unexpected and "post_extract_proj" not in joined_unexpected:
        return ""
    if not (any(map(_FAIRSEQ_W2V_EVIDENCE.search, unexpected)) and any(map(_HF_W2V_EVIDENCE.search, missing))):
        return ""
    # HuBERT's own checkpoints keep its cluster embeddings (`label_embs_concat`); transformers' Hubert* `hubert.`.
    hubert = "label_embs_concat" in joined_unexpected or any(name.startswith("hubert.") for name in missing)
    family, model = ("HuBERT", "hubert") if hubert else ("wav2vec 2.0", "wav2vec2")
    script = f"models/{model}/convert_{model}_original_pytorch_checkpoint_to_pytorch.py"
    convert = _convert_a("transformers", script, paths_a, "--checkpoint_path", "--pytorch_dump_folder_path")
    return (f"A is in fairseq's own {family} layout (feature_extractor.conv_layers.N.0, post_extract_proj, "
            "encoder.pos_conv.0, self_attn, fc1; w2v_encoder.w2v_model.* in a fine-tuned one) and B in transformers' "
            "(feature_projection.projection, encoder.pos_conv_embed.conv, attention, feed_forward.intermediate_dense): "
            f"convert A with {convert}, adding --config_path with B's config.json, --not_finetuned for a pretraining "
            "checkpoint, --dict_path with the dict.ltr.txt of a fine-tuned one; it loads A through fairseq and copies "
            "each weight by its MAPPING; the renames suggested here cover a few keys only")


# Segment Anything's own checkpoints (sam_vit_b_01ec64.pth ...: a bare state dict) name the image encoder
# `image_encoder.blocks.N.attn.qkv`, `neck.0`, the prompt encoder's `pe_layer`, `point_embeddings.N`,
# `mask_downscaling.N`; transformers' SamModel `vision_encoder.layers.N`, `neck.conv1`, `shared_image_embedding`,
# `point_embed`, `mask_embed.conv1`. transformers' convert_sam_to_hf.py renames them by substring (its
# KEYS_TO_MODIFY_MAPPING) and stores pe_layer's matrix under two names: the rename search offered two prefixes
# that match a few keys, and no word of the converter.
_SAM_EVIDENCE = _lazy_regex(r"^image_encoder\.blocks\.\d+\.attn\.qkv\.|^prompt_encoder\.pe_layer\.")
_HF_SAM_EVIDENCE = _lazy_regex(
    r"^(?:sam\.)?vision_encoder\.layers\.\d+\.attn\.qkv\.|^(?:sam\.)?shared_image_embedding\.")

# BlinkDL's RWKV-4 .pth (RWKV-LM, ChatRWKV: RWKV-4-Pile-169M-*.pth) names `emb`, `blocks.N.att.time_mix_k`, `ffn`,
# `blocks.0.ln0`; transformers' Rwkv `rwkv.embeddings`, `rwkv.blocks.N.attention.time_mix_key`, `feed_forward`,
# `pre_ln`. Its convert_rwkv_checkpoint_to_hf.py renames every key; the rename search found most of them but not
# time_mix_k -> time_mix_key, and offered that as the fix with no word of the converter.
_RWKV_EVIDENCE = _lazy_regex(r"^blocks\.\d+\.att\.(?:time_mix_k|time_decay|receptance\.weight)$")
_HF_RWKV_EVIDENCE = _lazy_regex(r"^(?:rwkv\.)?blocks\.\d+\.attention\.(?:time_mix_key|time_decay|receptance\.weight)$")
# RWKV-5 and RWKV-6 keep RWKV-4's time_mix_k / time_decay / receptance names and add a GroupNorm (att.ln_x), a gate
# and time_faaaa (RWKV-6 also time_maa_*): transformers' Rwkv is RWKV-4 alone, and its converter renames these into
# keys that no RwkvForCausalLM has.
_RWKV_LATER_EVIDENCE = _lazy_regex(
    r"^blocks\.\d+\.att\.(?:ln_x\.(?:weight|bias)|gate\.weight|time_faaaa|time_maa_\w+)$")


# haotian-liu/LLaVA's own checkpoints (liuhaotian/llava-v1.5-7b: the language model's `model.layers.N`, `lm_head`,
# with the projector as `model.mm_projector.0` / `.2`; its pretraining stage's mm_projector.bin, the projector alone)
# hold no vision tower (unless it was trained): LLaVA loads the CLIP its config's mm_vision_tower names. transformers'
# LlavaForConditionalGeneration keeps the tower inside and names the projector `multi_modal_projector.linear_1` /
# `linear_2`: the tower's keys were "unknown: these weights will not load", with no word of why a LLaVA file lacks
# them or of the converter.
_LLAVA_EVIDENCE = _lazy_regex(r"^(?:model\.)?mm_projector\.\d+\.(?:weight|bias)$")
_HF_LLAVA_EVIDENCE = _lazy_regex(r"(?:^|\.)multi_modal_projector\.linear_\d+\.(?:weight|bias)$")

# AnimateDiff's motion modules as guoyww/AnimateDiff releases them (mm_sd_v15_v2.ckpt: a bare state dict that
# AnimateDiff, ComfyUI-AnimateDiff-Evolved and sd-webui-animatediff load) name `<block>.motion_modules.N.
# temporal_transformer.transformer_blocks.N.attention_blocks.N`, `norms.N`, `ff_norm`, `pos_encoder.pe`; diffusers'
# MotionAdapter `<block>.motion_modules.N.transformer_blocks.N.attn1`, `norm1`, `norm3`, and no pe (it computes the
# sinusoidal table). The rename search offered `temporal_transformer.` -> `.`, which leaves most keys unknown.
_ANIMATEDIFF_EVIDENCE = _lazy_regex(r"\.motion_modules\.\d+\.temporal_transformer\.transformer_blocks\.\d+\.")
_DIFFUSERS_MOTION_EVIDENCE = _lazy_regex(r"\.motion_modules\.\d+\.transformer_blocks\.\d+\.(?:attn1|norm1)\.")

# suno's Bark checkpoints (text_2.pt, coarse_2.pt, fine_2.pt: {"model_args", "model", "best_val_loss", ...}) keep
# nanoGPT's names (`transformer.h.N.attn.c_attn`, `mlp.c_fc`, `transformer.ln_f`), often under torch.compile's
# `_orig_mod.`; transformers' BarkSemanticModel / BarkCoarseModel / BarkFineModel name them `layers.N.attn.att_proj`,
# `mlp.in_proj`, `layernorm_final` (under `semantic.`, `coarse_acoustics.`, `fine_acoustics.` in BarkModel). The
# rename search offered wte, wpe and ln_f alone ("4 of 18 keys match"), the blocks "unknown", with no word of
# convert_suno_to_hf.py, which renames every key by its new_layer_name_dict.
_SUNO_BARK_EVIDENCE = _lazy_regex(r"^(?:_orig_mod\.)?transformer\.h\.\d+\.attn\.c_attn\.weight$")
_HF_BARK_EVIDENCE = _lazy_regex(r"(?:^|\.)layers\.\d+\.attn\.att_proj\.weight$")

# descript-audio-codec's own weights (weights.pth, as `python -m dac download` fetches it: audiotools' BaseModel.save
# with package=False, {"state_dict", "metadata": {"kwargs": the DAC constructor's arguments}}) name its layers by
# nn.Sequential position (`encoder.block.N.block.M.block.K`, `decoder.model.N.block.M.block.K`) and keep every conv
# weight-normed (weight_g / weight_v); transformers' DacModel names them `encoder.block.N.res_unitM.conv1`, `snake1`,
# `conv_t1`, one plain `weight` each. The rename search offered 6 prefixes (12 of 188 keys), the rest "unknown", with
# no word of convert_dac_checkpoint.py, which maps every name, reads the sizes from metadata.kwargs and folds the
# weight norm (apply_weight_norm, load, remove_weight_norm).
# --model-class: from_pretrained renames weight_g / weight_v to parametrizations.weight.original0 / original1 first.
_DAC_EVIDENCE = _lazy_regex(r"^(?:encoder\.block|decoder\.model)\.\d+\.block\.\d+\.block\.\d+\."
                            r"(?:weight_[gv]|parametrizations\.weight\.original[01])$")
_HF_DAC_EVIDENCE = _lazy_regex(r"^(?:encoder|decoder)\.block\.\d+\.res_unit\d+\.conv[12]\.")


def _dac_note(paths: ConversionPaths) -> str:
    """The note on descript-audio-codec's own weights against transformers' DacModel: its converter given A."""
    return ("A is in descript-audio-codec's own layout (encoder.block.N.block.M.block.K, decoder.model.N..., every "
            "conv weight-normed as weight_g / weight_v: dac's weights.pth, its state_dict beside metadata.kwargs) and "
            "B in transformers' DacModel layout (encoder.block.N.res_unitM.conv1, snake1, conv_t1, one plain weight "
            "each): convert A with " + _convert_a(
                "transformers", "models/dac/convert_dac_checkpoint.py", paths, "--checkpoint_path",
                "--pytorch_dump_folder_path", extra=[("--model", "dac_44khz")])
            + " (--model dac_24khz or dac_16khz for those: it takes only these three names, and reads the sizes from "
            "metadata.kwargs; --sample_rate too, or config.json's sampling_rate is left null), which renames every "
            "key and folds weight_g / weight_v into weight; the renames suggested here cover a few keys only and "
            "leave the weight norm unfolded")


_RENAMED_LAYOUTS = (
    _RenamedLayout(("weight_v", "parametrizations.weight.original1"), ("res_unit",), _DAC_EVIDENCE, _HF_DAC_EVIDENCE,
                   _dac_note),
    _RenamedLayout(
        ("temporal_transformer.",), ("motion_modules.",), _ANIMATEDIFF_EVIDENCE, _DIFFUSERS_MOTION_EVIDENCE,
        ("A is in AnimateDiff's own motion-module layout (motion_modules.N.temporal_transformer.transformer_blocks.N."
         "attention_blocks.N, norms.N, ff_norm, pos_encoder.pe: guoyww/AnimateDiff's mm_sd_v15*.ckpt, which "
         "AnimateDiff, ComfyUI-AnimateDiff-Evolved and sd-webui-animatediff load) and B in diffusers' MotionAdapter "
         "layout (motion_modules.N.transformer_blocks.N.attn1, norm1, norm3): diffusers' "
         "MotionAdapter.from_single_file(A) converts it, renaming every key and dropping pos_encoder.pe, the "
         "sinusoidal table diffusers computes itself; the renames suggested here cover a few keys only")),
    _RenamedLayout(
        ("att.time_",), ("attention.time_",), _RWKV_EVIDENCE, _HF_RWKV_EVIDENCE,
        _rwkv_note, _RWKV_LATER_EVIDENCE),
    _RenamedLayout(
        ("mm_projector.",), ("multi_modal_projector.",), _LLAVA_EVIDENCE, _HF_LLAVA_EVIDENCE,
        lambda _paths: (
            "A is in the original LLaVA layout (haotian-liu/LLaVA: model.mm_projector.0 / .2 beside the language "
         "model's model.layers.N and lm_head, or the projector alone in the mm_projector.bin its pretraining stage "
         "saves) and B in transformers' LlavaForConditionalGeneration layout (multi_modal_projector.linear_1 / "
         "linear_2, the vision tower inside); LLaVA loads its vision tower from the CLIP model its config's "
         "mm_vision_tower names, so its files hold none unless the tower was trained: B's vision tower keys that "
         "A lacks come from that CLIP model; transformers' convert_llava_weights_to_hf.py builds the model from both "
         "towers and renames every key, given Hub repo ids (--text_model_id the language model's, --vision_model_id "
         "the CLIP model's, --old_state_dict_id the repo of A's weights) and --output_hub_path the folder to write"
         + _shipped_words("models/llava/convert_llava_weights_to_hf.py"))),
    _RenamedLayout(
        (".attn.c_attn.",), (".attn.att_proj.",), _SUNO_BARK_EVIDENCE, _HF_BARK_EVIDENCE,
        lambda _paths: (
            "A is in suno's own Bark layout (transformer.h.N.attn.c_attn, mlp.c_fc, transformer.ln_f: nanoGPT's names, "
            "under torch.compile's _orig_mod. in suno's text_2.pt / coarse_2.pt / fine_2.pt) and B in transformers' "
            "Bark layout (layers.N.attn.att_proj, mlp.in_proj, layernorm_final): transformers' convert_suno_to_hf.py, "
            "given the model type (text, coarse or fine) and an output folder, converts suno's released checkpoints "
            "(it downloads them itself), stripping _orig_mod. and renaming every key by its new_layer_name_dict"
            + _shipped_words("models/bark/convert_suno_to_hf.py")
            + "; a fine-tuned A needs that mapping applied to it; the renames suggested here cover a few keys only")),
    _RenamedLayout(
        (".blocks.",), (".layers.",), _OPENAI_WHISPER_EVIDENCE, _HF_WHISPER_EVIDENCE,
        lambda paths: (
            "A is in openai-whisper's own layout (encoder.blocks.N.attn.query, mlp.0, positional_embedding) and B in "
            "transformers' Whisper layout (model.encoder.layers.N.self_attn.q_proj, fc1, embed_positions): convert A "
            "with " + _convert_a("transformers", "models/whisper/convert_openai_to_hf.py", paths, "--checkpoint_path",
                                 "--pytorch_dump_folder_path")
            + ", which renames every key and builds config.json from the checkpoint's dims")),
    _RenamedLayout(
        ("emb_layer_norm_after",), ("emb_layer_norm_after",), _FAIR_ESM_EVIDENCE, _HF_ESM_EVIDENCE,
        _esm_note),
    _RenamedLayout(
        ("image_encoder.", "prompt_encoder.pe_layer."), ("vision_encoder.", "shared_image_embedding."), _SAM_EVIDENCE,
        _HF_SAM_EVIDENCE,
        _sam_note),
    _RenamedLayout(
        ("image_encoder.trunk.", "sam_mask_decoder."), ("vision_encoder.backbone.",), _SAM2_EVIDENCE, _HF_SAM2_EVIDENCE,
        lambda _paths: (
            "A is in SAM 2's own layout (image_encoder.trunk.blocks.N, sam_prompt_encoder, sam_mask_decoder: the sam2 "
         "package's sam2*_hiera_*.pt, read by its build_sam2) and B in transformers' (vision_encoder.backbone."
         "blocks.N, prompt_encoder, mask_decoder): transformers' convert_sam2_to_hf.py converts Meta's "
         "released checkpoints, renaming every key" + _shipped_words("models/sam2/convert_sam2_to_hf.py")
         + "; the renames suggested here cover a few keys only")),
)


# LitGPT's own checkpoint (lit_model.pth, as `litgpt download` / convert_to_litgpt and its finetune / pretrain scripts
# write it beside model_config.yaml): `transformer.wte`, `transformer.h.N.norm_1`, q, k and v fused in one
# `attn.qkv` (`attn.attn` before litgpt 0.5), `mlp.fc_1` / `fc_2` / `proj`, `transformer.ln_f`. Against transformers'
# model of it the rename search found wte and ln_f only and offered them as the fix, the rest "unknown"; `litgpt
# convert_from_litgpt` splits qkv per query group and renames every key.
_LITGPT_LAYOUT = _lazy_regex(r"^(?:transformer\.(?:wte|ln_f|h\.\d+)\.|lm_head\.)")
_LITGPT_EVIDENCE = _lazy_regex(r"^transformer\.h\.\d+\.(?:norm_1\.|attn\.(?:qkv|attn)\.)")
# transformers' decoder models that LitGPT converts (Llama / Mistral / Qwen / Gemma / Phi: model.layers.N;
# GPT-NeoX / Pythia: gpt_neox.layers.N; Falcon: transformer.h.N.self_attention), their embeddings, norms and head.
_HF_DECODER_LAYOUT = _lazy_regex(
    r"^(?:(?:model|gpt_neox|transformer)\.)?(?:layers\.\d+\.|h\.\d+\.|embed_tokens\.|embed_in\.|word_embeddings\.|"
    r"norm\.|final_layernorm\.|final_layer_norm\.|ln_f\.)|^(?:lm_head|embed_out)\.")
_HF_DECODER_EVIDENCE = _lazy_regex(
    r"(?:^|\.)(?:layers|h)\.\d+\.(?:self_attn\.[qkv]_proj|attention\.query_key_value|self_attention\."
    r"query_key_value)\.")


def _litgpt_convert(given: ConversionPaths) -> str:
    """`litgpt convert_from_litgpt` given A's folder (lit_model.pth beside model_config.yaml) and a new folder beside
    it: `CHECKPOINT_DIR OUT_DIR` pasted named no folder. Said in words where A is not one file."""
    from weightdoctor.paths import fresh_sibling, shell_word

    if (paths := _resolved(given)) is None:
        return ("litgpt convert_from_litgpt, given the folder of lit_model.pth and model_config.yaml and a new folder, "
                "writes model.pth there under transformers' names, which from_pretrained loads as "
                "state_dict= beside B's config")
    folder = Path(paths[0]).parent
    written = fresh_sibling(folder, "-hf")  # `.` (lit_model.pth typed bare) is named by its own name
    return (f"litgpt convert_from_litgpt {shell_word(os.fspath(folder), argument=True)} "
            f"{shell_word(os.fspath(written), argument=True)} (the folder of lit_model.pth and model_config.yaml, "
            f"then a new one) writes {os.fspath(written / 'model.pth')!r} under transformers' names, which "
            f"from_pretrained loads as state_dict=torch.load({os.fspath(written / 'model.pth')!r}, "
            "weights_only=True) beside B's config")


def _litgpt_layout(unexpected: Sequence[str], missing: Sequence[str], joined_unexpected: str,
                   joined_missing: str, paths_a: ConversionPaths = None) -> tuple[dict[str, tuple[str, str, str]], str]:
    """foreign_layout's whys and note for LitGPT's own layout against transformers' model of it (either way
    round); ({}, "") when the keys show no such pair."""
    if "norm_1." not in joined_unexpected + joined_missing and ".attn.qkv." not in joined_unexpected + joined_missing:
        return {}, ""
    paired = _paired_layouts(unexpected, missing,
                             (_LITGPT_EVIDENCE, _LITGPT_LAYOUT, "LitGPT's layout"),
                             (_HF_DECODER_EVIDENCE, _HF_DECODER_LAYOUT, "transformers' layout"))
    if paired is None:
        return {}, ""
    litgpt_side, hf_side, litgpt_names, hf_names, whys = paired
    note = (f"{litgpt_side} is in LitGPT's own layout (transformer.h.N.norm_1, q, k and v fused in attn.qkv, "
            f"mlp.fc_1: its lit_model.pth) and {hf_side} in transformers' layout: "
            + (_litgpt_convert(paths_a) if litgpt_side == "A" else
               "`litgpt convert_to_litgpt` converts a transformers checkpoint to LitGPT's layout")
            + "; q, k and v are split from (or fused into) qkv per query group, which no rename does")
    return whys, note


# fairseq2's LLaMA (its TransformerDecoderModel: decoder_frontend.embed, decoder.layers.N.self_attn.output_proj,
# ffn.gate_proj / inner_proj / output_proj, self_attn_layer_norm, ffn_layer_norm, decoder.layer_norm, final_proj), as
# its checkpoints' model/pp_00/tp_00/sdp_00.pt holds it. Against transformers' Llama the rename search offered
# `^final_proj\.=model.embed_tokens.` (the head onto the embedding: one shape) and left q / k as they were, where
# fairseq2's own Hugging Face export (fairseq2/models/llama/hg.py, export_llama_checkpoint) maps final_proj to lm_head
# and permutes q_proj and k_proj from interleaved rotary pairs to rotate_half's halves.
_FAIRSEQ2_DECODER_LAYOUT = _lazy_regex(r"^(?:decoder_frontend\.|decoder\.(?:layers\.\d+\.|layer_norm\.)|final_proj\.)")
# Evidence is fairseq2's own module names only: self_attn_layer_norm is also BART's, Whisper's, mBART's, Marian's and
# RT-DETR's (`decoder.layers.N.self_attn_layer_norm` in their base models), whose base model against its
# ForConditionalGeneration was called fairseq2's layout, errors, where a --rename '^model\.=' loads it.
_FAIRSEQ2_DECODER_EVIDENCE = _lazy_regex(r"^decoder\.layers\.\d+\.(?:self_attn\.output_proj|ffn\.inner_proj)\.")


def _fairseq2_decoder_layout(unexpected: Sequence[str], missing: Sequence[str], joined_unexpected: str,
                             joined_missing: str) -> tuple[dict[str, tuple[str, str, str]], str]:
    """foreign_layout's whys and note for fairseq2's LLaMA layout against transformers' decoder layout (either way
    round); ({}, "") when the keys show no such pair."""
    if "decoder.layers." not in joined_unexpected + joined_missing:
        return {}, ""
    paired = _paired_layouts(unexpected, missing,
                             (_FAIRSEQ2_DECODER_EVIDENCE, _FAIRSEQ2_DECODER_LAYOUT, "fairseq2's layout"),
                             (_HF_DECODER_EVIDENCE, _HF_DECODER_LAYOUT, "transformers' layout"))
    if paired is None:
        return {}, ""
    fairseq2_side, hf_side, _, _, whys = paired
    note = (f"{fairseq2_side} is in fairseq2's LLaMA layout (decoder_frontend.embed, decoder.layers.N.self_attn."
            f"output_proj, ffn.inner_proj, final_proj) and {hf_side} in transformers' layout: fairseq2's own Hugging "
            "Face export (fairseq2.models.llama's export_llama_checkpoint, hg.py) maps final_proj to lm_head and "
            "permutes q_proj and k_proj from interleaved rotary pairs to rotate_half's halves, which no rename does: "
            "renamed alone, the weights load and the model's output is garbage")
    return whys, note


# llama.cpp's GGUF tensor names (`token_embd`, `blk.N.attn_q`, `ffn_gate`, `output_norm`, `output`), as a GGUF file
# holds them and a dequantized safetensors copy of one keeps them; transformers' `model.layers.N.self_attn.q_proj`.
# Every key was "unknown", with no word of what they are. transformers reads the GGUF file itself (gguf_file=),
# renaming each tensor and, for Llama / Mistral, reversing the permutation of attn_q / attn_k that llama.cpp's
# convert_hf_to_gguf.py applies.
_GGUF_LAYOUT = _lazy_regex(r"^(?:blk\.\d+\.|token_embd\.|output_norm\.|output\.|rope_freqs\.|token_types\.)")
_GGUF_EVIDENCE = _lazy_regex(r"^blk\.\d+\.(?:attn_q|attn_k|attn_v|attn_qkv|attn_output|ffn_gate|ffn_up|ffn_down)\.")


def _gguf_names_layout(unexpected: Sequence[str], missing: Sequence[str], joined_unexpected: str,
                       joined_missing: str) -> tuple[dict[str, tuple[str, str, str]], str]:
    """foreign_layout's whys and note for llama.cpp's GGUF tensor names against transformers' decoder layout (either
    way round); ({}, "") when the keys show no such pair."""
    if "blk." not in joined_unexpected + joined_missing:
        return {}, ""
    paired = _paired_layouts(unexpected, missing,
                             (_GGUF_EVIDENCE, _GGUF_LAYOUT, "llama.cpp's GGUF tensor names"),
                             (_HF_DECODER_EVIDENCE, _HF_DECODER_LAYOUT, "transformers' layout"))
    if paired is None:
        return {}, ""
    gguf_side, hf_side, gguf_names, hf_names, whys = paired
    note = (f"{gguf_side} is in llama.cpp's GGUF tensor names (token_embd, blk.N.attn_q, ffn_gate, output_norm: a "
            "GGUF file's, kept by a dequantized copy of one) and "
            f"{hf_side} in transformers' layout (model.layers.N.self_attn.q_proj): "
            + ("transformers reads the GGUF file itself (from_pretrained given its folder and gguf_file=, its name), "
               "renaming every "
               "tensor and, for Llama / Mistral, reversing the permutation of attn_q and attn_k that llama.cpp's "
               "convert_hf_to_gguf.py applies, which no rename does; a dequantized copy is best remade from the GGUF "
               "file that way" if gguf_side == "A" else
               "llama.cpp's convert_hf_to_gguf.py converts a transformers model to GGUF, renaming every tensor and, "
               "for Llama / Mistral, permuting attn_q and attn_k, which no rename does"))
    return whys, note


# An ONNX model's initializers saved as safetensors (onnx.numpy_helper.to_array of each, then save_file): the
# TorchScript exporter (torch.onnx.export, dynamo=False) keeps a parameter's name where an op reads it as it is, but a
# Linear weight it folds into a MatMul constant becomes `onnx::MatMul_N`, [in, out]. They were "unknown", with no word.
_ONNX_CONSTANT = _lazy_regex(r"^onnx::")


def _onnx_initializers_layout(unexpected: Sequence[str], missing: Sequence[str], joined_unexpected: str,
                              joined_missing: str) -> tuple[dict[str, tuple[str, str, str]], str]:
    """foreign_layout's whys (the exporter's `onnx::` names only) and note for an ONNX export's initializers on
    either side; ({}, "") when neither side has such names."""
    for side, names, joined in (("A", unexpected, joined_unexpected), ("B", missing, joined_missing)):
        if "onnx::" not in joined:
            continue
        constants = [name for name in names if _ONNX_CONSTANT.search(name)]
        if not constants:
            continue
        note = (f"{side} holds an ONNX export's initializers ({len(constants)} named by the exporter, e.g. "
                f"{constants[0]}): torch.onnx.export names a Linear weight it folds into a MatMul constant "
                "onnx::MatMul_N and stores it [in, out], the transpose of nn.Linear's weight; which weight each one is "
                "only the ONNX graph says (the node that reads it), so no rename maps them: export the PyTorch "
                "model's own state dict instead, or read the ONNX graph with the onnx package")
        detail = f"an ONNX exporter's name for a folded constant (in {side}): the graph's node that reads it says " \
                 "which weight it is (a MatMul's is [in, out])"
        return {name: ("foreign-layout", "error", detail) for name in constants}, note
    return {}, ""


# OpenAI CLIP's own layout (clip.load's ViT-B-32.pt once read with jit=False, or its state_dict(); open_clip's
# checkpoints keep it): `transformer.resblocks.N` for the text tower, `visual.transformer.resblocks.N`, `visual.conv1`,
# `token_embedding`, `ln_final`, each attention's q, k and v fused in `attn.in_proj_weight`; transformers' CLIPModel
# `text_model.encoder.layers.N.self_attn.q_proj`, `vision_model.embeddings.patch_embedding`. The rename search
# matched names by shape alone and offered the text tower's final norm as the vision tower's pre-norm and the
# reverse; transformers' convert_clip_original_pytorch_to_hf.py splits in_proj_weight, which no rename does.
# open_clip's training checkpoints (epoch_N.pt) keep the layout under DDP's `module.`: every key was "unknown" or a
# wrapper-prefix rename, and the towers' norms renamed onto each other by shape, with no word of the layout.
_CLIP_LAYOUT = _lazy_regex(
    r"^(?:module\.)?(?:(?:visual\.)?transformer\.resblocks\.\d+\.|visual\.(?:conv1|class_embedding|"
    r"positional_embedding|proj|ln_pre|ln_post)\b|(?:token_embedding\.|positional_embedding$|ln_final\.|"
    r"text_projection$))")
_CLIP_EVIDENCE = _lazy_regex(r"^(?:module\.)?(?:visual\.)?transformer\.resblocks\.\d+\.attn\.in_proj_weight$")
_HF_CLIP_LAYOUT = _lazy_regex(r"^(?:text_model|vision_model)\.|^(?:visual_projection|text_projection)\.weight$")
_HF_CLIP_EVIDENCE = _lazy_regex(r"^(?:text_model|vision_model)\.encoder\.layers\.\d+\.self_attn\.[qkv]_proj\.")


def _openai_clip_layout(unexpected: Sequence[str], missing: Sequence[str], joined_unexpected: str,
                        joined_missing: str, paths_a: ConversionPaths = None,
                        ) -> tuple[dict[str, tuple[str, str, str]], str]:
    """foreign_layout's whys and note for OpenAI CLIP's (and open_clip's) own layout against transformers' CLIP,
    either way round; ({}, "") when the keys show no such pair."""
    joined = joined_unexpected + joined_missing
    if ".resblocks." not in joined or "_model.encoder.layers." not in joined:
        return {}, ""
    sides = _sides(unexpected, missing, _CLIP_EVIDENCE, _HF_CLIP_EVIDENCE)
    if sides is None:
        return {}, ""
    clip_side, hf_side, clip_names, hf_names = sides
    # transformers' SiglipModel shares CLIPModel's names but for its logit_bias and attention-pooling head: B was
    # called a CLIPModel and A's CLIP converter offered, whose output (a CLIPModel) B's class does not load.
    siglip = any(name == "logit_bias" or name.startswith("vision_model.head.") for name in hf_names)
    bare_first, converted_from = "", paths_a
    if clip_side == "A" and not siglip and all(name.startswith("module.") for name in clip_names):
        # clip.load, which the converter calls, reads a plain state dict: not one under `state_dict`, nor DDP's names.
        from weightdoctor.paths import shell_word

        typed = _resolved(paths_a)
        bare = f"{Path(typed[0]).with_suffix('')}-bare.pt" if typed is not None else None
        bare_first = ("; A's names carry DDP's module. (an open_clip training checkpoint, epoch_N.pt), which clip.load "
                      "reads neither under state_dict nor with the prefix: write the bare state dict first, "
                      + (f"weightdoctor convert {shell_word(typed[0], argument=True)} -o "
                         f"{shell_word(bare, argument=True)} --rename '^module\\.=', and give the converter that file"
                         if typed is not None and bare is not None else
                         "with weightdoctor convert A -o <a new .pt> --rename '^module\\.=', and give the converter "
                         "that file"))
        if typed is not None and bare is not None:
            converted_from = lambda: (bare, typed[1])  # noqa: E731 -- the converter's input is the bare copy
    note = (f"{clip_side} is in OpenAI CLIP's own layout (transformer.resblocks.N, visual.conv1, ln_final, q, k and v "
            "fused in attn.in_proj_weight: the clip package's and open_clip's checkpoints) and "
            f"{hf_side} in transformers' {'SiglipModel' if siglip else 'CLIPModel'} layout "
            "(text_model.encoder.layers.N.self_attn.q_proj, vision_model.embeddings.patch_embedding"
            + ("; logit_bias and the attention-pooling vision_model.head: SigLIP, another model than CLIP, which "
               "no converter makes of a CLIP checkpoint" if siglip else "") + "): "
            + ("q, k and v are fused on one side and split on the other, which no rename does" if siglip else
               "convert A with " + _convert_a("transformers", "models/clip/convert_clip_original_pytorch_to_hf.py",
                                              converted_from, "--checkpoint_path", "--pytorch_dump_folder_path")
               + ", adding --config_path with B's config.json for another size than ViT-B/32; it loads A with "
               "clip.load (the clip package) and splits each in_proj_weight into q_proj, k_proj and v_proj, which "
               "no rename does" if clip_side == "A" else
               "the clip package and open_clip load their own layout, with q, k and v fused in in_proj_weight, "
               "which no rename does")
            + bare_first + "; renaming by shape pairs the two towers' same-sized norms wrongly")
    whys = _layout_errors("foreign-layout",
                          (clip_names, _CLIP_LAYOUT, f"OpenAI CLIP's layout (in {clip_side})"),
                          (hf_names, _HF_CLIP_LAYOUT,
                           f"transformers' {'SiglipModel' if siglip else 'CLIPModel'} layout (in {hf_side})"))
    return whys, note


# A timm-style ViT (DINO's and DINOv2's own checkpoints, dinov2_vits14_pretrain.pth, a DINO teacher's backbone, timm's
# vit_*): q, k and v fused in `blocks.N.attn.qkv`, which transformers' ViTModel / Dinov2Model split into
# `encoder.layer.N.attention.attention.query` / `key` / `value`. The rename search found the blocks, norms and
# embeddings and said nothing of the fused matrices, which its renames leave "unknown"; the conversion scripts split
# them. transformers 5 builds them (`--model-class ViTModel`) as `layers.N.attention.q_proj` (ViTModel) and
# `encoder.layer.N.attention.q_proj` (Dinov2Model), which its conversion mapping renames the Hub's names to: the note
# was missing against such a model.
_VIT_QKV = _lazy_regex(r"(?:^|\.)blocks\.\d+\.attn\.qkv\.(?:weight|bias)$")
_HF_VIT_QKV = _lazy_regex(r"(?:^|\.)(?:encoder\.layer|layers)\.\d+\.attention\."
                          r"(?:attention\.(?:query|key|value)|[qkv]_proj)\.(?:weight|bias)$")


def _vit_fused_qkv_layout(unexpected: Sequence[str], missing: Sequence[str], joined_unexpected: str,
                          joined_missing: str) -> tuple[dict[str, tuple[str, str, str]], str]:
    """foreign_layout's whys (the fused and split attention matrices only) and note for a timm-style ViT against
    transformers' ViTModel or Dinov2Model, either way round; ({}, "") when the keys show no such pair."""
    joined = joined_unexpected + joined_missing
    if ".attn.qkv." not in joined or (".attention.attention." not in joined and ".attention.q_proj." not in joined):
        return {}, ""
    paired = _paired_layouts(unexpected, missing,
                             (_VIT_QKV, _VIT_QKV, "q, k and v fused in one matrix"),
                             (_HF_VIT_QKV, _HF_VIT_QKV, "q, k and v split"))
    if paired is None:
        return {}, ""
    fused_side, hf_side, fused_names, hf_names, whys = paired
    # The transformers side's own key says which class it is: a timm ViT with layer scale (DeiT III's ls1.gamma) made
    # a ViTModel B "Dinov2Model", with DINOv2's converter.
    dinov2 = any(".layer_scale1.lambda1" in name for name in hf_names)
    script = (f"convert_dinov2_to_hf.py{_shipped_words('models/dinov2/convert_dinov2_to_hf.py')}, converts "
              "DINOv2's releases" if dinov2 else
              f"convert_dino_to_pytorch.py{_shipped_words('models/vit/convert_dino_to_pytorch.py')}, converts DINO's "
              "releases, and convert_vit_timm_to_pytorch.py timm's")
    # An original Depth Anything checkpoint (pretrained.blocks.N.attn.qkv beside depth_head.*) is a DINOv2 backbone
    # with a DPT head: DINOv2's converter drops the head, Depth Anything's own converts both.
    if fused_side == "A" and "depth_head." in joined_unexpected:
        script = ("convert_depth_anything_to_hf.py"
                  f"{_shipped_words('models/depth_anything/convert_depth_anything_to_hf.py')}, converts Depth "
                  "Anything's releases (the pretrained.* DINOv2 backbone and its depth_head)")
    note = (f"{fused_side} is a timm-style ViT (blocks.N.attn.qkv: DINO's, DINOv2's and timm's own checkpoints) and "
            f"{hf_side} transformers' {'Dinov2Model' if dinov2 else 'ViTModel'} layout "
            "(encoder.layer.N.attention.attention.query, key, value; attention.q_proj, k_proj, v_proj as "
            "transformers 5 builds it): q, k and v are fused in one qkv matrix on one "
            "side and split on the other, which no rename does"
            + (f"; transformers' {script}, built by name (--model_name), splitting qkv" if fused_side == "A" else "")
            + "; the renames suggested here cover some of the other keys")
    return whys, note


# Flax's names for a model's parameters (transformers 4's Flax models' save_pretrained(safe_serialization=True):
# flatten_dict(params, sep=".") with safetensors metadata format "flax"; flax.linen's Dense / Conv `kernel`, Embed
# `embedding`, LayerNorm / BatchNorm `scale`) against PyTorch's `weight`. The rename search offered
# `kernel=weight`, `scale=weight`, `embedding=weight` as the fix: a Dense kernel is [in, out], the transpose of
# nn.Linear's weight, so the renamed square matrices load transposed without a word.
_FLAX_PARAM = _lazy_regex(r"\.(?:kernel|embedding|scale)$")


def _flax_layout(unexpected: Sequence[str], missing: Sequence[str], joined_unexpected: str,
                 joined_missing: str) -> tuple[dict[str, tuple[str, str, str]], str]:
    """foreign_layout's whys and note for Flax's parameter names (`.kernel`, `.embedding`, `.scale`) against
    PyTorch's `.weight` of the same modules, either way round; ({}, "") when the keys show no such pair: a kernel
    and an embedding or a scale must each pair with a `.weight` of the other side."""
    for flax_side, flax_names, other in (("A", unexpected, missing), ("B", missing, unexpected)):
        if ".kernel" not in (joined_unexpected if flax_side == "A" else joined_missing):
            continue
        weights = {name for name in other if name.endswith(".weight")}
        pairs = {name: name.rsplit(".", 1)[0] + ".weight" for name in flax_names if _FLAX_PARAM.search(name)}
        pairs = {name: weight for name, weight in pairs.items() if weight in weights}
        kinds = {name.rsplit(".", 1)[1] for name in pairs}
        if "kernel" not in kinds or not kinds & {"embedding", "scale"}:
            continue
        torch_side = "B" if flax_side == "A" else "A"
        if flax_side == "A":
            how = ("transformers 4's PyTorch from_pretrained converted such a file on load (it reads the safetensors "
                   "format \"flax\", or from_flax=True for flax_model.msgpack, with flax installed), transposing each "
                   "kernel; transformers 5 has no Flax support and loads the names as they are, so none of these "
                   "weights load: convert A with transformers 4 (from_pretrained(A, from_flax=True), then "
                   "save_pretrained)")
        else:
            how = ("Flax loads its own names: transformers 4's Flax from_pretrained(A, from_pt=True) converted A, "
                   "transposing each kernel (transformers 5 has no Flax models)")
        note = (f"{flax_side} is in Flax's layout (.kernel, .embedding, .scale: a transformers 4 Flax model's "
                "save_pretrained, format \"flax\" in a .safetensors, or flax params flattened) and "
                f"{torch_side} in PyTorch's (.weight): a Dense kernel is [in, out], the transpose of nn.Linear's "
                "[out, in], and a convolution's (*kernel, in, out), so a rename alone loads the square ones "
                f"transposed without an error; {how}")
        whys: dict[str, tuple[str, str, str]] = {}
        for name, weight in pairs.items():
            if name.endswith(".kernel"):
                detail = (f"Flax's Dense / Conv kernel (in {flax_side}): [in, out], the transpose of {torch_side}'s "
                          f"{weight.rsplit('.', 2)[-2]}.weight")
            else:
                detail = f"Flax's name of {torch_side}'s {weight.rsplit('.', 2)[-2]}.weight (in {flax_side})"
            whys[name] = ("foreign-layout", "error", detail)
            whys[weight] = ("foreign-layout", "error", f"PyTorch's name (in {torch_side}); {flax_side} holds it as "
                            f"{name.rsplit('.', 1)[1]} in Flax's layout")
        return whys, note
    return {}, ""


# Every digit but 1 written 0, for `_word_text`.
_FOLD_DIGITS = str.maketrans("023456789", "000000000")


def _word_text(names: Sequence[str]) -> str:
    r"""The names joined by newlines with every digit but 1 written 0 and repeated lines left out: for substring
    tests of words made of other characters and the digit 1 only, which it answers as the names joined would.

    Such a word matches a folded character exactly where it matches the original one (a digit other than 1 becomes
    0, which the word does not hold; 1 and every other character stay), and leaving out repeated lines loses no
    line. `tests/test_perf12.py` checks that every word the layout detectors test is such a word.

    Example:
        >>> _word_text([f"h.{i}.norm_1.w" for i in range(30)])
        'h.0.norm_1.w\nh.1.norm_1.w\nh.10.norm_1.w\nh.11.norm_1.w\nh.00.norm_1.w\nh.01.norm_1.w'
    """
    return "\n".join(dict.fromkeys("\n".join(names).translate(_FOLD_DIGITS).split("\n")))


def foreign_layout(unexpected: Sequence[str], missing: Sequence[str],
                   word_texts: tuple[str, str] | None = None,
                   paths_a: Callable[[], ConversionPaths] | None = None,
                   ) -> tuple[dict[str, tuple[str, str, str]], str]:
    """(reason, severity, detail) for the keys that differ because A and B are in two known layouts of one model
    (Meta's original Llama / Mistral layout against Hugging Face's, either way round), and a note saying what to
    do instead of renaming; ({}, "") when the keys show no such pair of layouts.

    Example:
        >>> whys, note = foreign_layout(["layers.0.attention.wq.weight"], ["model.layers.0.self_attn.q_proj.weight"])
        >>> whys["layers.0.attention.wq.weight"][0]
        'foreign-layout'
    """
    # The detectors only test whether their words occur in the joined names: they get the names with layer indices
    # folded together (`_word_text`), a few dozen lines for a 10,000-key side instead of 0.5 MB each of ~40
    # substring searches went over (10k DDP pair: 6.4 -> 2.2 ms).
    # `word_texts`: the two texts, when the caller has them (`_diff_specs` hands the first to `adapter_fit` too).
    # `paths_a`: gives A's file and a new folder beside it (`converters.conversion_paths`), which a conversion
    # script a note names is given; called only for such a note (it looks at the file system).
    joined_unexpected, joined_missing = word_texts or (_word_text(unexpected), _word_text(missing))

    def holds(joined: str, word: str, names: Sequence[str], evidence: Any) -> bool:
        # A substring test first: this runs on every diff, and 10,000s of regex searches would show.
        return word in joined and any(map(evidence.search, "\n".join(names).split("\n")))

    meta_in_a = holds(joined_unexpected, ".attention.w", unexpected, _META_EVIDENCE) and \
        holds(joined_missing, ".self_attn.", missing, _HF_EVIDENCE)
    meta_in_b = not meta_in_a and holds(joined_missing, ".attention.w", missing, _META_EVIDENCE) and \
        holds(joined_unexpected, ".self_attn.", unexpected, _HF_EVIDENCE)
    if not (meta_in_a or meta_in_b):
        given = functools.cache(paths_a) if paths_a is not None else None
        for detect in (_sd_single_file_layout, _dit_single_file_layout, _controlnet_single_file_layout,
                       _t2i_adapter_layout, _litgpt_layout, _fairseq2_decoder_layout, _openai_clip_layout,
                       _vit_fused_qkv_layout,
                       _flax_layout, _gguf_names_layout, _onnx_initializers_layout):
            whys, note = (detect(unexpected, missing, joined_unexpected, joined_missing, given)
                          if detect in (_t2i_adapter_layout, _openai_clip_layout, _litgpt_layout) else
                          detect(unexpected, missing, joined_unexpected, joined_missing))
            if whys:
                return whys, note
        # Renames alone convert it (no key is left a foreign-layout error), but not the few the search finds.
        return {}, (next((note for layout in _RENAMED_LAYOUTS
                          if (note := layout.note_for(unexpected, joined_unexpected, missing, joined_missing,
                                                      given))), "")
                    or _fairseq_wav2vec2_note(unexpected, joined_unexpected, missing, joined_missing, given))
    meta_side, hf_side = ("A", "B") if meta_in_a else ("B", "A")
    meta_names, hf_names = (unexpected, missing) if meta_in_a else (missing, unexpected)
    if meta_in_a:
        note = ("A is in Meta's original Llama/Mistral layout (tok_embeddings, layers.N.attention.wq, "
                "feed_forward.w1) and B in Hugging Face's: convert A with transformers' "
                f"convert_llama_weights_to_hf.py{_shipped_words('models/llama/convert_llama_weights_to_hf.py')} "
                "(convert_mistral_weights_to_hf.py for Mistral), given the folder of Meta's release as --input_dir; "
                "it permutes wq and wk for rotate_half, which no rename does")
    else:
        note = ("A is in Hugging Face's Llama/Mistral layout and B in Meta's original one: Meta's code needs "
                "q_proj and k_proj permuted back to interleaved rotary pairs, which no rename does")
    whys = _layout_errors("foreign-layout",
                          (meta_names, _META_LAYOUT,
                           f"Meta's original layout (in {meta_side})"),
                          (hf_names, _HF_LAYOUT,
                           f"Hugging Face's layout (in {hf_side})"))
    return whys, note


def _layout_errors(reason: str, *sides: tuple[Sequence[str], Any, str]) -> dict[str, tuple[str, str, str]]:
    """(reason, "error", detail) for each name a side's pattern finds, for each side's (names, pattern, detail):
    the keys of two layouts that no rename maps onto each other (one side's, then the other's)."""
    return {name: (reason, "error", detail) for names, pattern, detail in sides for name in names
            if pattern.search(name)}


# MoE experts as the Hub's checkpoints store them (`experts.3.w1.weight`, `experts.3.gate_proj.weight`) and as
# transformers 5 models hold them, fused per projection (`experts.gate_up_proj`, `experts.down_proj`).
_PER_EXPERT = _lazy_regex(r"(?:^|\.)experts\.\d+\.")
_FUSED_EXPERTS = _lazy_regex(r"(?:^|\.)experts\.(?!\d)[^.]+(?:\.(?:weight|bias))?$")


def expert_layout(unexpected: Sequence[str], missing: Sequence[str],
                  check_command: Callable[[], str | None] | None = None,
                  word_texts: tuple[str, str] | None = None,
                  ) -> tuple[dict[str, tuple[str, str, str]], str]:
    """(reason, severity, detail) for MoE expert keys stored one per expert on one side and fused per projection
    on the other (a Hub Mixtral against transformers 5's `model.state_dict()`), and a note; ({}, "") otherwise.

    No rename joins or splits tensors; from_pretrained's WeightConverters do (so the note names the
    `--model-class` check), a plain `load_state_dict` does not (error). `check_command`: gives that check
    (`model_class_check`) or None, named in the note (called only then: it may import transformers).

    Example:
        >>> whys, _ = expert_layout(["m.experts.gate_up_proj"], ["m.experts.0.w1.weight"])
        >>> whys["m.experts.0.w1.weight"][0]
        'expert-layout'
    """
    if word_texts is not None:  # `_word_text` of each side: the word holds no digit, so they answer as the names
        # The names of both sides joined end to end, as below: the word may also run from A's last into B's first.
        if ".experts." not in word_texts[0] and ".experts." not in word_texts[1] and not (
                unexpected and missing and ".experts." in unexpected[-1] + missing[0]):
            return {}, ""
    elif ".experts." not in "\n".join(unexpected) + "\n".join(missing):
        return {}, ""
    sides = _sides(unexpected, missing, _PER_EXPERT, _FUSED_EXPERTS)
    if sides is None:
        return {}, ""
    split_side, fused_side, split_names, fused_names = sides
    whys = _layout_errors("expert-layout",
                          (split_names, _PER_EXPERT,
                           f"one tensor per expert (in {split_side})"),
                          (fused_names, _FUSED_EXPERTS,
                           f"experts fused per projection (in {fused_side})"))
    note = (f"{split_side} stores the MoE experts one tensor per expert (as checkpoints on the Hub do) and "
            f"{fused_side} fused per projection (as transformers 5 models hold them, e.g. model.state_dict()): no "
            "rename joins or splits tensors. from_pretrained converts between the two layouts, load_state_dict "
            "does not")
    command = check_command() if check_command else None
    if command:
        note += f"; what from_pretrained reports: {command}"
    return whys, note


@functools.cache
def has_model_class(name: str) -> bool:
    """Whether transformers has a class `name` (a note names a `--model-class` check only when it runs)."""
    try:
        import transformers

        return isinstance(getattr(transformers, name, None), type)
    except Exception:  # transformers that fails to import, or a lazy module that fails: no check to name
        return False


def model_class_check(source_a: str, model_class: str, config: str, *, revision: str | None = None,
                      key: str | None = None, renames: Sequence[Rename] = ()) -> str:
    """The `diff-keys --model-class` command a note gives (`config`: what --config reads B's config.json from),
    with the flags that read A as this run read it (its revision, where its state dict is, the user's renames).

    Example:
        >>> print(model_class_check("sd.pt", "BertModel", "hub", key="state_dict", renames=[Rename("^net_", "")]))
        weightdoctor diff-keys sd.pt --model-class BertModel --config hub --key state_dict --rename '^net_='
    """
    from weightdoctor.paths import shell_word

    words = [f"weightdoctor diff-keys {shell_word(source_a, argument=True)} --model-class {model_class}",
             f"--config {shell_word(config)}"]
    if revision is not None:
        words.append(f"--revision {shell_word(revision)}")
    if key is not None:
        words.append(f"--key {shell_word(key)}")
    words.extend(rename.as_flag() for rename in renames)
    return " ".join(words)


# A PEFT adapter's own tensors: LoRA's low-rank pair on a module (`<module>.lora_A.weight`, `lora_B`, with the
# adapter's name in between in an unsaved state dict), its embedding form (`lora_embedding_A`, a parameter), and
# DoRA's `lora_magnitude_vector` beside them (one value per output feature); IA3's `ia3_l` (one scale per feature);
# AdaLoRA's `lora_E` (its r singular values, r × 1, between lora_A and lora_B: an AdaLoRA adapter against its own
# base was "saved for <module>.lora_E, which B does not have", an error on every module).
_LORA_PAIR = _lazy_regex(
    r"^(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector|ia3_l|lora_E)"
    r"(?:\.[^.]+)?(?:\.weight)?$")
_PEFT_WRAPPER = "base_model.model."
# The detail of a weight of B a PEFT adapter saves whole (modules_to_save): the renderer titles the Missing table by it.
ADAPTER_SAVES_WHOLE = "the adapter stores it whole"
# The other PEFT methods' tensors on a module they adapt (each tuner's adapter_layer_names in peft 0.21, the adapter's
# name dropped as save_pretrained drops it), and the method each is: a VeRA, OFT, BOFT, LoHa, LoKr, LN Tuning,
# FourierFT, HRA, MiSS / Bone, C3A, RandLora, VB-LoRA, SHiRA, RoAd or trainable-tokens adapter against its base was
# "unknown: these weights will not load" for every base weight, worst severity error. LoRA's trainable_token_indices
# keeps its tokens under the embedding's `token_adapter.`. RandLora saves each module's randlora_A / randlora_B beside
# the shared ones, SHiRA its shira_indices, LN Tuning on a BatchNorm its running statistics.
_PEFT_TUNER_PARTS = {
    "vera_lambda_b": "VeRA", "vera_lambda_d": "VeRA", "oft_R": "OFT", "oft_embedding_R": "OFT", "oft_r": "OFT",
    "oft_s": "OFT", "boft_R": "BOFT", "boft_s": "BOFT", "hada_w1_a": "LoHa", "hada_w1_b": "LoHa", "hada_w2_a": "LoHa",
    "hada_w2_b": "LoHa", "hada_t1": "LoHa", "hada_t2": "LoHa", "lokr_w1": "LoKr", "lokr_w1_a": "LoKr",
    "lokr_w1_b": "LoKr", "lokr_w2": "LoKr", "lokr_w2_a": "LoKr", "lokr_w2_b": "LoKr", "lokr_t2": "LoKr",
    "ln_tuning_layers": "LN Tuning", "fourierft_spectrum": "FourierFT", "hra_u": "HRA", "miss_block": "MiSS",
    "bone_block": "Bone", "c3a_kernel": "C3A", "randlora_lambda": "RandLora", "randlora_gamma": "RandLora",
    "randlora_A": "RandLora", "randlora_B": "RandLora", "shira_indices": "SHiRA",
    "vblora_logits_A": "VB-LoRA", "vblora_logits_B": "VB-LoRA", "vblora_logits_A_topk_indices": "VB-LoRA",
    "vblora_logits_A_topk_weights": "VB-LoRA", "vblora_logits_B_topk_indices": "VB-LoRA",
    "vblora_logits_B_topk_weights": "VB-LoRA", "shira_weight": "SHiRA", "road_theta": "RoAd",
    "road_alpha": "RoAd", "trainable_tokens_delta": "Trainable Tokens", "waveft_spectrum": "WaveFT",
    "delora_A": "DeLoRA", "delora_B": "DeLoRA", "delora_lambda": "DeLoRA", "delora_w_norm": "DeLoRA",
    # peft 0.22's PaCA: the update of r input columns (out × r) and which columns (r indices, a buffer it saves).
    "paca_delta": "PaCA", "paca_indices": "PaCA",
    # HiRA (peft 0.21): LoRA-shaped factors whose update multiplies the weight (r × in, out × r; on an embedding
    # r × rows, dim × r), which _peft_generic read as a method not known here, shapes not compared.
    "hira_A": "HiRA", "hira_B": "HiRA", "hira_embedding_A": "HiRA", "hira_embedding_B": "HiRA",
}
_PEFT_TUNER = _lazy_regex(
    r"^(?P<module>.+?)\.(?:token_adapter\.)?(?P<part>" + "|".join(sorted(_PEFT_TUNER_PARTS, key=len, reverse=True))
    + r")(?:\.(?P<param>weight|bias|running_mean|running_var|num_batches_tracked))?$")
# One substring of each, for a test of the whole key list before any match.
_PEFT_TUNER_WORDS = ("vera_lambda", "oft_", "boft_", "hada_", "lokr_", "ln_tuning_layers", "fourierft_spectrum",
                     "hra_u", "miss_block", "bone_block", "c3a_kernel", "randlora_", "vblora_", "shira_",
                     "road_", "trainable_tokens_delta", "waveft_spectrum", "delora_", "paca_", "hira_")
_PEFT_TUNER_WORD = _lazy_regex(r"\.(?:" + "|".join(_PEFT_TUNER_WORDS) + ")")
# Every substring `adapter_fit` looks for before it looks at any key, with its digits folded as `_word_text` folds
# them (`.ia3_l` -> `.ia0_l`): a text of folded names that holds none of them holds none of the words either.
_ADAPTER_WORDS_FOLDED = tuple(word.translate(_FOLD_DIGITS) for word in (
    ".adapters.", ".loras.", ".lora_", ".ia3_l", *("." + word for word in _PEFT_TUNER_WORDS), "lora_unet_",
    "lora_te", "lora_transformer_", "base_model.", "_lora.down.", "_lora.up."))
# The tensors such a method shares between its modules, saved once at the top (`base_model.vera_A`): VeRA's and
# RandLora's random projections (save_projection=True), VB-LoRA's vector bank.
_PEFT_SHARED = _lazy_regex(r"^base_model\.(?:vera_[AB]|randlora_[AB]|vblora_vector_bank)(?:\.[^.]+)?$")
# kohya / LyCORIS names (lora_unet_<path>.hada_w1_a) are looked up by _kohya_adapter_fit's tables, not as modules.
_KOHYA_MODULE = _lazy_regex(r"^lora_(?:unet|te\d?|transformer)_")
_KOHYA_LINE = _lazy_regex(r"(?m)^lora_(?:unet|te\d?|transformer)_")


def _adapter_target(name: str) -> str:
    """The name a key of a saved PEFT adapter has in the base model: without `base_model.model.` and
    `.base_layer` (a layer whose full weight the adapter stores beside its LoRA pair)."""
    return name.removeprefix(_PEFT_WRAPPER).replace(".base_layer.", ".")


def _saved_peft_adapter(specs: Mapping[str, KeySpec]) -> set[str]:
    """The adapter tensors of `specs` where it is a PEFT adapter as save_pretrained writes it (every name under
    `base_model.`, none a wrapped layer's `.base_layer.` weight, at least half of them LoRA / IA3 / other PEFT
    methods' tensors: the rest whole modules it saves); an empty set for anything else (a model, a whole
    PEFT-wrapped model, whose base weights are there too).

    Example:
        >>> _saved_peft_adapter({"base_model.model.q.lora_A.weight": KeySpec("", (4, 8), "float32")})
        {'base_model.model.q.lora_A.weight'}
        >>> _saved_peft_adapter({"q.weight": KeySpec("", (8, 8), "float32")})
        set()
    """
    if not specs or not all(name.startswith("base_model.") and ".base_layer." not in name for name in specs):
        return set()
    tensors = {name for name in specs
               if _LORA_PAIR.match(name) or _PEFT_SHARED.match(name) or _PEFT_TUNER.match(name)}
    return tensors if len(tensors) * 2 >= len(specs) else set()


def peft_wrapped_against_adapter(
    specs_a: Mapping[str, KeySpec], specs_b: Mapping[str, KeySpec], unexpected: Sequence[str],
) -> tuple[dict[str, tuple[str, str, str]], str]:
    """When A is a whole PEFT-wrapped model (`get_peft_model(...).state_dict()`: its base weights under
    `base_model.model.`, each adapted layer's under `.base_layer.`, beside the adapter's own tensors, `lora_A.default`)
    and B a saved PEFT adapter: A's base weights, which B does not store, read "unknown: these weights will not load",
    errors, with no word of what the pair is. Returns ("adapter-base", "info", detail) for each of them and a note;
    ({}, "") otherwise. A's adapter tensors are left to the rename search (peft's save drops the adapter's name).

    Example:
        >>> a = {n: KeySpec(n, (8, 8), "float32") for n in ("base_model.model.q.base_layer.weight",
        ...      "base_model.model.q.lora_A.default.weight", "base_model.model.k.weight")}
        >>> b = {"base_model.model.q.lora_A.weight": KeySpec("base_model.model.q.lora_A.weight", (8, 8), "float32")}
        >>> peft_wrapped_against_adapter(a, b, list(a))[1].split(":")[0]
        'A is a whole PEFT-wrapped model, the base with its adapter in it, and B a saved PEFT adapter'
    """
    adapter_b = _saved_peft_adapter(specs_b)
    if not adapter_b:  # first: it stops at B's first name not under base_model.
        return {}, ""
    # Saved through a training wrapper too (DDP's `module.` before every key): its names were "unknown" errors.
    outer = next((w for w in _WRAPPERS if w != _PEFT_WRAPPER and specs_a
                  and all(name.startswith(w + _PEFT_WRAPPER) for name in specs_a)), "")
    if outer:
        specs_a = {name[len(outer):]: spec for name, spec in specs_a.items()}
        unexpected = [name[len(outer):] if name.startswith(outer) else name for name in unexpected]
    wrapped = [name for name in specs_a if name.startswith(_PEFT_WRAPPER) and ".base_layer." in name]
    if not wrapped:
        return {}, ""
    adapter_a = {name for name in specs_a if _LORA_PAIR.match(name) or _PEFT_SHARED.match(name)
                 or _PEFT_TUNER.match(name)}
    if not adapter_a:
        return {}, ""
    base = [name for name in unexpected if name not in adapter_a]
    whys = {outer + name: ("adapter-base", "info", "a weight of the base model in A, which B, an adapter, does not "
                           "store") for name in base}
    saved, mapped = "", "the suggested renames"
    if outer:  # no rename is suggested through the wrapper's prefix: the flags that map A's adapter onto B's
        saved = f" (saved through a training wrapper, DDP, torch.compile, ...: {outer!r} before every key)"
        flags = " ".join([Rename(f"^{re.escape(outer)}", "").as_flag()] + (
            [Rename(r"\.default\.", ".").as_flag()] if any(".default." in name for name in adapter_a) else []))
        mapped = flags
        for name in unexpected:
            if name in adapter_a:
                whys[outer + name] = ("adapter", "error", f"a tensor of A's adapter, under the wrapper's prefix: "
                                      f"{flags} maps it onto B's")
        for name in adapter_b:
            if outer + name not in whys and name not in specs_a:
                whys[name] = ("adapter", "error", f"a tensor of B's adapter, which A holds under the wrapper's "
                              f"prefix: {flags} maps A's onto it")
    return whys, (f"A is a whole PEFT-wrapped model{saved}, the base with its adapter in it, and B a saved PEFT "
                  f"adapter: {counted(len(base), 'weight', grouped=True)} of A's are the base's "
                  f"({counted(len(wrapped), 'adapted layer', grouped=True)} under .base_layer.), which an adapter "
                  f"does not store; to compare the adapters, save A's with save_pretrained (or map its adapter "
                  f"tensors with {mapped}); to compare the model, merge it (merge_and_unload) and "
                  "compare it with the base, or compare B against the base")


# diffusers' LoRA files (save_lora_weights' pytorch_lora_weights.safetensors, and the ai-toolkit / SimpleTuner Flux
# LoRAs in its layout) name each pair under the pipeline component it adapts: `transformer.transformer_blocks.0.attn.
# to_q.lora_A.weight`, `unet.down_blocks...`, `text_encoder.text_model...`. The pipeline's load_lora_weights strips
# that prefix and loads each part into its component: against the component's own weights (a transformer/ or unet/
# folder), no pair was found in B and every one was an error.
_DIFFUSERS_LORA_COMPONENTS = ("transformer.", "unet.", "text_encoder.", "text_encoder_2.", "text_encoder_3.",
                              "prior.")


# diffusers' first LoRA files (unet.save_attn_procs' pytorch_lora_weights.bin, under no component's prefix; then
# save_lora_weights', under `unet.` / `text_encoder.`) hold each attention processor's own LoRALinearLayer pairs:
# `<attn>.processor.to_q_lora.down.weight`. Against the UNet they adapt, every key read "unknown: these weights will
# not load", errors, though diffusers' loaders still load them: load_lora_adapter renames them first
# (utils/state_dict_utils.py: `.processor.` dropped, UNET_TO_DIFFUSERS `.to_q_lora.down` -> `.to_q.lora_A`,
# `.to_out_lora.up` -> `.to_out.0.lora_B`; a text encoder's by DIFFUSERS_OLD_TO_PEFT, `.to_q_lora.up` ->
# `.q_proj.lora_B`), and a file with no key under the component's prefix is taken whole as the UNet's.
_DIFFUSERS_OLD_LORA = _lazy_regex(
    r"^(?P<module>.+?)(?:\.processor)?\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<part>down|up)\.weight$")
_DIFFUSERS_OLD_TEXT_PROJ = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}
# LoRAAttnAddedKVProcessor's pairs on an added-KV attention's add_k_proj / add_v_proj (UnCLIP's, DeepFloyd IF's UNet:
# `<attn>.processor.add_k_proj_lora.down.weight`, down rank × added_kv_proj_dim, up hidden × rank). Against the UNet
# every one was "saved for ..., which B does not have", errors. They adapt B's add_k_proj / add_v_proj, but diffusers'
# loaders since its PEFT backend do not rename them (state_dict_utils' UNET_TO_DIFFUSERS has no add_k_proj_lora entry,
# and load_lora_adapter builds its LoraConfig from the `lora_B` keys alone): load_lora_weights leaves them out and
# warns of unexpected keys (set_peft_model_state_dict's). diffusers' attention-processor loaders before that backend
# loaded them.
_DIFFUSERS_OLD_ADDED_KV = _lazy_regex(
    r"^(?:unet\.)?(?P<module>.+?)(?:\.processor)?\.(?P<proj>add_k_proj|add_v_proj)_lora\.(?P<part>down|up)\.weight$")


def _diffusers_added_kv_fit(
    names: Sequence[str], specs_a: Mapping[str, KeySpec], specs_b: Mapping[str, KeySpec],
) -> tuple[dict[str, tuple[str, str, str]], int, int]:
    """(reason, severity, detail) for each LoRAAttnAddedKVProcessor pair key among `names` (`_DIFFUSERS_OLD_ADDED_KV`),
    checked against B's add_k_proj / add_v_proj; the count of projections they fit and of those they do not."""
    whys: dict[str, tuple[str, str, str]] = {}
    fitting: set[str] = set()
    misfit: set[str] = set()
    for name in names:
        match = _DIFFUSERS_OLD_ADDED_KV.match(name)
        if match is None:
            continue
        target = f"{match['module']}.{match['proj']}"
        factor = "lora_A" if match["part"] == "down" else "lora_B"
        weight, shape = specs_b.get(target + ".weight"), specs_a[name].shape
        if weight is None:
            whys[name] = ("adapter", "error", f"LoRAAttnAddedKVProcessor's pair on {target}, which B does not have")
            misfit.add(target)
        elif not _lora_fits(factor, shape, weight.shape):
            whys[name] = ("adapter", "error", f"{'×'.join(map(str, shape))} does not fit {target}.weight "
                          f"({'×'.join(map(str, weight.shape))} in B): {_lora_misfit(factor, shape, weight.shape)}")
            misfit.add(target)
        else:
            whys[name] = ("adapter", "warn", f"LoRA on {target}.weight (LoRAAttnAddedKVProcessor's added key / value "
                          "projection), which diffusers' current loaders leave out: they do not rename "
                          f"{match['proj']}_lora")
            fitting.add(target)
    return whys, len(fitting - misfit), len(misfit)


def _diffusers_old_lora_names(names: Iterable[str]) -> dict[str, str]:
    """The names diffusers' loaders give the keys of a LoRA in its first, attention-processor layout, as a LoRA in
    its current layout names them (the component's prefix first: `unet.` where the file has none); {} for none.

    Example:
        >>> _diffusers_old_lora_names(["mid_block.attn1.processor.to_out_lora.up.weight", "q.weight"])
        {'mid_block.attn1.processor.to_out_lora.up.weight': 'unet.mid_block.attn1.to_out.0.lora_B.weight'}
        >>> _diffusers_old_lora_names(["text_encoder.text_model.encoder.layers.0.self_attn.to_q_lora.down.weight"])
        {'text_encoder.text_model.encoder.layers.0.self_attn.to_q_lora.down.weight': \
'text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight'}
    """
    renamed: dict[str, str] = {}
    for name in names:
        match = _DIFFUSERS_OLD_LORA.match(name)
        if match is None:
            continue
        module, proj = match["module"], match["proj"]
        factor = "lora_A" if match["part"] == "down" else "lora_B"
        if module.startswith(("text_encoder.", "text_encoder_2.")):
            target = _DIFFUSERS_OLD_TEXT_PROJ[proj]
        else:
            target = "to_out.0" if proj == "to_out" else proj
            if _diffusers_component(module) is None:
                module = "unet." + module
        renamed[name] = f"{module}.{target}.{factor}.weight"
    return renamed


def _diffusers_old_lora_fit(
    renamed: Mapping[str, str], specs_a: Mapping[str, KeySpec], specs_b: Mapping[str, KeySpec],
    unexpected: Sequence[str], missing: Sequence[str], adapter_config: Callable[[], Mapping[str, Any] | None] | None,
    source_b: str | None,
) -> tuple[dict[str, tuple[str, str, str]], str]:
    """adapter_fit for a LoRA in diffusers' first layout: its keys checked under the names diffusers' loaders give
    them (`_diffusers_old_lora_names`), the reasons given back under the file's own names. Against B the same
    kind of LoRA in diffusers' current layout (its keys the names A's are loaded as), each pair is matched with its
    own: it was "a PEFT adapter ... none of its modules is in B: it was made for another model"."""
    held = {name: new for name, new in renamed.items() if new in specs_b}
    if len(held) * 2 >= len(renamed):
        return _diffusers_old_against_current(held, specs_a, specs_b, added_kv=unexpected)
    added_kv, added_fit, added_misfit = _diffusers_added_kv_fit(
        [name for name in unexpected if name not in renamed], specs_a, specs_b)
    whys, note = adapter_fit({renamed.get(name, name): spec for name, spec in specs_a.items() if name not in added_kv},
                             specs_b, [renamed.get(name, name) for name in unexpected if name not in added_kv], missing,
                             None, adapter_config, source_b)
    if not whys:
        return {}, ""
    whys.update(added_kv)
    if added_kv:
        note += (f"; its LoRAAttnAddedKVProcessor pairs (add_k_proj_lora / add_v_proj_lora) are on "
                 f"{counted(added_fit + added_misfit, 'added key / value projection')} of B's, {added_fit} of them "
                 "with shapes that fit, but diffusers' loaders since its PEFT backend leave them out "
                 "(state_dict_utils' UNET_TO_DIFFUSERS does not rename them: load_lora_weights loads the other pairs "
                 "and warns of unexpected keys); the attention-processor loaders of diffusers before that backend "
                 "loaded them")
    back = {new: name for name, new in renamed.items()}
    layout = ("A is a LoRA in diffusers' layout (its first one, unet.save_attn_procs' attention-processor pairs, "
              "`processor.to_q_lora.down`, which diffusers' loaders rename to `to_q.lora_A` as they load it")
    no_prefix = not any(_diffusers_component(name) for name in renamed)
    if no_prefix:  # the keys were read as the UNet's, as load_lora_adapter reads them
        layout += "; its keys, under no component's prefix, are the UNet's"
    return ({back.get(name, name): why for name, why in whys.items()},
            note.replace("A is a LoRA in diffusers' layout", layout + ")", 1)
            if note.startswith("A is a LoRA in diffusers' layout") else note)


def _diffusers_added_kv_current_name(name: str) -> str | None:
    """The name a LoRAAttnAddedKVProcessor pair key (`_DIFFUSERS_OLD_ADDED_KV`) has in a LoRA of diffusers' current
    layout on the same projection (peft's, as save_lora_weights names it), or None for another key. diffusers' loaders
    do not give it that name: they leave such a pair out.

    Example:
        >>> _diffusers_added_kv_current_name("mid_block.attentions.0.processor.add_k_proj_lora.up.weight")
        'unet.mid_block.attentions.0.add_k_proj.lora_B.weight'
    """
    match = _DIFFUSERS_OLD_ADDED_KV.match(name)
    if match is None:
        return None
    module = match["module"] if _diffusers_component(match["module"]) else "unet." + match["module"]
    return f"{module}.{match['proj']}.{'lora_A' if match['part'] == 'down' else 'lora_B'}.weight"


def _diffusers_old_against_current(
    held: Mapping[str, str], specs_old: Mapping[str, KeySpec], specs_new: Mapping[str, KeySpec], old_side: str = "A",
    added_kv: Sequence[str] = (),
) -> tuple[dict[str, tuple[str, str, str]], str]:
    """`_diffusers_old_lora_fit` where one side (`old_side`) is a LoRA in diffusers' first layout and the other holds
    its pairs under the names diffusers' loaders give them (`held`: old name -> new name): each key and the key it is
    loaded as, "renamed" where their shapes agree, an error where they do not. The old side's LoRAAttnAddedKVProcessor
    pairs among `added_kv` (its names the other side lacks) are matched with the other side's pairs on the same
    add_k_proj / add_v_proj (`_diffusers_added_kv_current_name`): the same LoRA, which diffusers' loaders leave out of
    the old side (they were "unknown" errors, the other side's "adapter" warnings with no detail)."""
    new_side = "B" if old_side == "A" else "A"
    whys: dict[str, tuple[str, str, str]] = {}
    differ = added_same = 0
    for name in added_kv:
        new = _diffusers_added_kv_current_name(name)
        if new is None or new not in specs_new or new in specs_old:
            continue
        shape_old, shape_new = specs_old[name].shape, specs_new[new].shape
        if tuple(shape_old) == tuple(shape_new):
            added_same += 1
            whys[name] = ("adapter", "warn", f"the pair {new_side} holds as {new} (LoRAAttnAddedKVProcessor's added "
                          "key / value projection), with the same shape, but diffusers' current loaders leave it out "
                          f"of {old_side}: they do not rename {_DIFFUSERS_OLD_ADDED_KV.match(name)['proj']}_lora")
            whys[new] = ("adapter", "warn", f"{old_side} holds it as {name} (diffusers' first layout), with the same "
                         f"shape, which diffusers' current loaders leave out of {old_side}")
        else:
            differ += 1
            shown = (f"{'×'.join(map(str, shape_old))} in {old_side}, "
                     f"{'×'.join(map(str, shape_new))} in {new_side}")
            whys[name] = ("adapter", "error", f"the pair {new_side} holds as {new}: {shown}")
            whys[new] = ("adapter", "error", f"{old_side} holds it as {name}: {shown}")
    for name, new in held.items():
        shape_old, shape_new = specs_old[name].shape, specs_new[new].shape
        if tuple(shape_old) == tuple(shape_new):
            whys[name] = ("renamed", "info", f"diffusers' loaders load it as {new}, which {new_side} holds")
            whys[new] = ("renamed", "info", f"{old_side} holds it as {name} (diffusers' first layout)")
        else:
            differ += 1
            shown = (f"{'×'.join(map(str, shape_old))} in {old_side}, "
                     f"{'×'.join(map(str, shape_new))} in {new_side}")
            whys[name] = ("adapter", "error", f"loaded as {new}, which {new_side} holds: {shown}")
            whys[new] = ("adapter", "error", f"{old_side} holds it as {name}: {shown}")
    return whys, (f"{old_side} is a LoRA in diffusers' first layout (unet.save_attn_procs' attention-processor pairs, "
                  f"`processor.to_q_lora.down`) and {new_side} one in its current layout (`to_q.lora_A`): diffusers' "
                  f"loaders rename {old_side}'s keys to {new_side}'s as they load it, and {len(held)} of "
                  f"{old_side}'s keys are {new_side}'s under those names"
                  + (f", {differ} of them of other shapes" if differ else ", with the same shapes")
                  + (f"; {added_same} more of {old_side}'s, LoRAAttnAddedKVProcessor pairs (add_k_proj_lora / "
                     f"add_v_proj_lora), are {new_side}'s on the same added key / value projections with the same "
                     f"shapes, but diffusers' loaders since its PEFT backend leave them out of {old_side} (they do "
                     "not rename them): loaded, the two differ there" if added_same else ""))


def _diffusers_component(module: str) -> str | None:
    """The pipeline component prefix (`transformer.`) a diffusers-layout LoRA module name starts with, or None."""
    return next((prefix for prefix in _DIFFUSERS_LORA_COMPONENTS if module.startswith(prefix)), None)


# transformers 5.6 flattened CLIPTextModel: its `text_model.` wrapper module is gone (embeddings, encoder and
# final_layer_norm sit on the model; conversion_mapping.py's PrefixChange(prefix_to_remove="text_model") renames old
# checkpoints as from_pretrained loads them), and save_pretrained writes its keys without it. diffusers' and kohya's
# text-encoder LoRAs still name the modules under it (`text_encoder.text_model.encoder.layers.0.self_attn.q_proj`,
# `lora_te_text_model_encoder_...`): against such a text encoder every pair was "targets ..., which B does not have"
# and the note told to load it with peft's PeftModel. CLIPTextModelWithProjection keeps its `text_model`.
_CLIP_TEXT_WRAPPER = "text_model."


# Where loading such a LoRA into that text encoder stands (huggingface/diffusers issue #13984: the loader matches the
# text encoder's module names against the LoRA's `text_model.` ones, finds no rank and raises IndexError).
_FLATTENED_CLIP_TEXT_NOTE = (
    "B is a CLIPTextModel saved by transformers 5.6 or later, which dropped the text_model. wrapper A's names keep "
    "(A's text_model.encoder.layers.N is B's encoder.layers.N, as transformers renames old checkpoints), so its "
    "modules are read without it; {loader} maps them onto such a text encoder only in a diffusers release that knows "
    "the flattened class: older ones raise IndexError in load_lora_into_text_encoder (diffusers issue #13984)")


def _flattened_clip_text(specs_b: Mapping[str, KeySpec]) -> bool:
    """Whether B is a CLIPTextModel saved without its `text_model.` wrapper (transformers 5.6 and later)."""
    return "final_layer_norm.weight" in specs_b and "embeddings.token_embedding.weight" in specs_b and not any(
        name.startswith(_CLIP_TEXT_WRAPPER) for name in specs_b)


def _in_component(module: str, component: str, specs_b: Mapping[str, KeySpec]) -> str | None:
    """B's name for a diffusers-layout LoRA's `module` (under the pipeline's `component.`) when B is that component:
    the name without the component's prefix, or, in a text encoder B saved without CLIP's `text_model.` wrapper,
    without that too; None where B has neither.

    Example:
        >>> specs = {"encoder.layers.0.self_attn.q_proj.weight": KeySpec("", (8, 8), "float32")}
        >>> _in_component("text_encoder.text_model.encoder.layers.0.self_attn.q_proj", "text_encoder.", specs)
        'encoder.layers.0.self_attn.q_proj'
    """
    inner = module[len(component):]
    if inner + ".weight" in specs_b:
        return inner
    if component.startswith("text_encoder") and inner.startswith(_CLIP_TEXT_WRAPPER) and (
            inner[len(_CLIP_TEXT_WRAPPER):] + ".weight" in specs_b):
        return inner[len(_CLIP_TEXT_WRAPPER):]
    return None


def _lora_fits(part: str, shape: tuple[int, ...], weight: tuple[int, ...], groups: int = 1) -> bool:
    """Whether a LoRA tensor of `shape` fits a base `weight` of that shape (Linear / Conv out×in..., GPT-2's
    Conv1D in×out, Embedding rows×dim). `groups`: a grouped convolution's (`_lora_groups`), whose weight holds
    in / groups input channels and whose lora_A reads all of them."""
    if len(shape) < 2 or len(weight) < 2:
        return False
    if part in ("lora_A", "lora_B") and not _lora_kernel_fits(part, shape[2:], weight[2:]):
        return False
    if part == "lora_A":  # r × in (Conv: r × in × kh × kw)
        return shape[1] in (weight[1], weight[0]) if len(weight) == 2 else shape[1] == weight[1] * groups
    if part == "lora_B":  # out × r
        return shape[0] in (weight[0], weight[1]) if len(weight) == 2 else shape[0] == weight[0]
    if part == "lora_embedding_A":  # r × num_embeddings
        return shape[1] == weight[0]
    return shape[0] == weight[1]  # lora_embedding_B: dim × r


def _pair_misfit(
    down: tuple[str, tuple[int, ...], KeySpec, str], up: tuple[str, tuple[int, ...], KeySpec, str],
    down_part: str = "lora_A", up_part: str = "lora_B",
) -> str | None:
    """Why a LoRA's 2-D down (r × in) and up (out × r) factors, each (name, shape, B's weight, module), do not fit
    their 2-D weight together: up @ down is out × in, which must be the weight's shape, Linear's way (out × in) or
    GPT-2's Conv1D's (in × out); None when it is.

    Example:
        >>> w = KeySpec("q.weight", (48, 32), "float32")
        >>> _pair_misfit(("a", (4, 32), w, "q"), ("b", (32, 4), w, "q")).split(", either")[0]
        'lora_B 32×4 and lora_A 4×32 make a 32×32 update, which q.weight (48×32 in B) is not'
        >>> _pair_misfit(("a", (4, 48), w, "q"), ("b", (32, 4), w, "q")) is None  # GPT-2's Conv1D: in × out
        True
    """
    (_, a, weight, _), (_, b, _, _) = down, up
    if (b[0], a[1]) in (tuple(weight.shape), tuple(weight.shape)[::-1]):
        return None
    return (f"{up_part} {b[0]}×{b[1]} and {down_part} {a[0]}×{a[1]} make a {b[0]}×{a[1]} update, which "
            f"{weight.name} ({'×'.join(map(str, weight.shape))} in B) is not, either way round: an adapter for "
            "another model size")


def _lora_groups(pairs: Sequence[tuple[str, re.Match[str]]], specs_a: Mapping[str, KeySpec]) -> dict[str, int]:
    """The groups of each grouped convolution a PEFT LoRA adapts, read off its pair: peft makes lora_A a plain
    convolution (r × in × kh × kw) and lora_B one with the base's groups (out × r / groups × 1 × 1), so lora_A's
    rank over lora_B's second axis is the base's groups (module -> groups, only those above 1)."""
    shapes: dict[str, dict[str, tuple[int, ...]]] = defaultdict(dict)
    for name, match in pairs:
        if match["part"] in ("lora_A", "lora_B") and len(specs_a[name].shape) > 2:
            shapes[match["module"]][match["part"]] = specs_a[name].shape
    groups: dict[str, int] = {}
    for module, held in shapes.items():
        a, b = held.get("lora_A"), held.get("lora_B")
        if a and b and 0 < b[1] < a[0] and a[0] % b[1] == 0 and b[0] % (a[0] // b[1]) == 0:
            groups[module] = a[0] // b[1]
    return groups


def _lora_kernel_fits(part: str, kernel: tuple[int, ...], weight_kernel: tuple[int, ...]) -> bool:
    """Whether a LoRA factor's kernel (its shape past the first two axes) fits the kernel of the weight it adapts.
    peft's and kohya's A / down factor of a convolution is a convolution with the weight's own kernel (r × in × 3 ×
    3 on a 3 × 3 one) and the B / up factor a pointwise one (out × r × 1 × 1); a pointwise factor fits an nn.Linear
    (ComfyUI and A1111 reshape up @ down to the weight's shape), a 3 × 3 one does not, nor a 1 × 1 down factor a
    3 × 3 convolution: up @ down has another number of elements than the weight, and load_state_dict raises."""
    if part == "lora_B" or not kernel or not weight_kernel:
        return all(size == 1 for size in (*kernel, *weight_kernel)) if part == "lora_A" else all(
            size == 1 for size in kernel)
    return kernel == weight_kernel


def _lora_misfit(part: str, shape: tuple[int, ...], weight: tuple[int, ...]) -> str:
    """Why a LoRA factor that `_lora_fits` rejects does not fit: its kernel, or the model's size.

    Example:
        >>> _lora_misfit("lora_A", (4, 32, 3, 3), (64, 32, 1, 1))
        "its 3×3 kernel is not that of B's 1×1 convolution"
    """
    if part not in ("lora_A", "lora_B") or len(shape) < 2 or len(weight) < 2 or _lora_kernel_fits(
            part, shape[2:], weight[2:]):
        return "an adapter for another model size"
    kernel, held = "×".join(map(str, shape[2:])), "×".join(map(str, weight[2:]))
    if part == "lora_B":
        return f"its {kernel} kernel: a LoRA's up / B factor is pointwise (1×1)"
    if not kernel:
        return f"a linear factor does not fit B's {held} convolution"
    return f"its {kernel} kernel is not that of B's {held} convolution" if held else \
        f"its {kernel} kernel does not fit B's linear layer"


def adapter_fit(
    specs_a: Mapping[str, KeySpec], specs_b: Mapping[str, KeySpec], unexpected: Sequence[str], missing: Sequence[str],
    word_text: str | None = None, adapter_config: Callable[[], Mapping[str, Any] | None] | None = None,
    source_b: str | None = None, revision_b: str | None = None, source_a: str | None = None,
    revision_a: str | None = None,
) -> tuple[dict[str, tuple[str, str, str]], str]:
    """When A is a PEFT adapter (LoRA pairs and few or no base weights) and B a model: whether each LoRA pair's
    target module is in B with shapes it fits, as `PeftModel.from_pretrained(B, A)` needs. Returns
    (reason, severity, detail) for A's unexpected keys and B's missing ones, and a note; ({}, "") when A is no
    adapter, or holds most of B's weights (a whole PEFT-wrapped model, which renames fix).

    Example:
        >>> a = {"base_model.model.q.lora_A.weight": KeySpec("base_model.model.q.lora_A.weight", (4, 8), "float32")}
        >>> b = {"q.weight": KeySpec("q.weight", (8, 8), "float32")}
        >>> adapter_fit(a, b, list(a), list(b))[0]["q.weight"][:2]
        ('adapter-base', 'info')

    `word_text`: `_word_text(unexpected)` when the caller has it (`foreign_layout` needs it too): a text that holds
    none of the words below, folded, answers "no adapter" without joining and searching every name again.
    `adapter_config`: gives the adapter_config.json beside A (or None), read only for the methods whose saved shapes
    it settles (MiSS's init_weights, SHiRA's r). `source_b`: B as the user named it, for the command that strips a
    training wrapper's prefix from B's keys (said in words without it: `weightdoctor convert B ... -o ...` named no
    file); `revision_b`: B's Hub revision, which that command reads B at. `source_a`: A as the user named it, for the
    PeftModel.from_pretrained call that loads it onto B (said in words without both: see `peft_loading`), read at
    `revision_a`, A's Hub revision.
    """
    def loading(fits: bool) -> str:
        # B named only where the adapter fits it: pasted onto a B it does not fit, the call raised.
        config = adapter_config() if adapter_config is not None else None
        return peft_loading(source_a, source_b if fits else None, config, revision_b, revision_a)

    if "prompt_embeddings" in unexpected:
        return _prompt_adapter_fit(specs_a, specs_b, unexpected, missing, loading, adapter_config)
    if unexpected and unexpected[0].startswith(_XLORA_CLASSIFIER) and all(
            name.startswith(_XLORA_CLASSIFIER) for name in unexpected):
        return _xlora_fit(specs_a, specs_b, unexpected, missing, loading)
    if word_text is not None and not any(map(word_text.__contains__, _ADAPTER_WORDS_FOLDED)):
        return {}, ""  # none of the words below is in the names: every test below says "no adapter"
    joined = "\n".join(unexpected)
    if ("_lora.down." in joined or "_lora.up." in joined) and (old_names := _diffusers_old_lora_names(unexpected)):
        return _diffusers_old_lora_fit(old_names, specs_a, specs_b, unexpected, missing, adapter_config, source_b)
    # One substring test of B's names joined first: this runs on every PEFT adapter against its base (10,000s of
    # missing base weights).
    if ".lora_A." in joined and ("_lora.down." in (joined_missing := "\n".join(missing)) or "_lora.up." in
                                 joined_missing) and (old_in_b := _diffusers_old_lora_names(missing)):
        # B the LoRA in the first layout, A in the current one: the same pairing the other way round.
        held = {name: new for name, new in old_in_b.items() if new in specs_a}
        if len(held) * 2 >= len(old_in_b):
            return _diffusers_old_against_current(held, specs_b, specs_a, old_side="B", added_kv=missing)
    if ".adapters." in joined or ".loras." in joined:
        whys, note = _adapterhub_fit(specs_a, specs_b, unexpected, missing)
        if whys:
            return whys, note
    tuner_in = _PEFT_TUNER_WORD.search(joined) is not None
    # One substring test spares 10,000s of regex matches. kohya's flat names hold LyCORIS' GLoRA (`.a1.weight`) or
    # full (`.diff`) parts under no such word: their lora_unet_ / lora_te_ start says it.
    # Every name under peft's `base_model.`: an adapter of a PEFT method not known here may be one (`_peft_generic`).
    peft_named = bool(unexpected) and all(name.startswith("base_model.") for name in unexpected)
    if ".lora_" not in joined and ".ia3_l" not in joined and not tuner_in and not peft_named \
            and not _KOHYA_LINE.search(joined):
        return {}, ""
    pairs = ([(name, match) for name in unexpected if (match := _LORA_PAIR.match(name))]
             if ".lora_" in joined or ".ia3_l" in joined else [])  # (a whole PEFT-wrapped model without them)
    tuners = ([(name, match) for name in unexpected if (match := _PEFT_TUNER.match(name))
               and not _KOHYA_MODULE.match(match["module"]) and not _PEFT_SHARED.match(name)] if tuner_in else [])
    shared = [name for name in unexpected if _PEFT_SHARED.match(name)] if tuners else []
    if not pairs and not tuners and not peft_named:
        return _kohya_adapter_fit(specs_a, specs_b, unexpected, missing) if "lora_" in joined else ({}, "")
    if pairs and not tuners and len(pairs) == len(unexpected):
        flux_whys, flux_note = _diffusers_flux_onto_bfl(pairs, specs_a, specs_b, missing)
        if flux_whys:
            return flux_whys, flux_note
    lora_names = {name for name, _ in pairs} | {name for name, _ in tuners} | set(shared)
    others = [name for name in unexpected if name not in lora_names]
    covered = sum(1 for name in others if _adapter_target(name) in specs_b)
    if covered * 2 >= len(specs_b):
        return {}, ""  # a whole wrapped model: most base weights are there under other names
    # Or under another split of them: a PEFT-wrapped MoE holds its experts fused (as transformers 5 models do), B
    # one tensor per expert (as save_pretrained writes them), so few names match, but A holds B's weights. Or they
    # match already (a whole PEFT model under the suggested renames): every key of A but its LoRA pairs counts.
    # (A tensor a PEFT file saves once at the top, `base_model.pvera_A`, is none of B's weights, however large.)
    held = sum(math.prod(spec.shape) for name, spec in specs_a.items() if name not in lora_names
               and not (peft_named and not name.startswith(_PEFT_WRAPPER)))
    if held * 2 >= sum(math.prod(spec.shape) for spec in specs_b.values()):
        return {}, ""
    generic, generic_shared = _peft_generic(others, specs_b) if peft_named else ([], [])
    # UniLoRA saves one vector for the whole adapter (`base_model.unilora_theta_d`) and nothing per module: an
    # adapter of it was no adapter here, B's weights "unknown: these weights will not load".
    unilora = [name for name in generic_shared if name.startswith("base_model.unilora_theta_d")]
    if not pairs and not tuners and not generic and not unilora:
        return {}, ""  # (names under `base_model.` alone, none on a module of B: a model under that prefix, maybe)
    if generic or generic_shared:
        taken = {name for name, _, _ in generic} | set(generic_shared)
        others = [name for name in others if name not in taken]
    whys: dict[str, tuple[str, str, str]] = {}
    modules: dict[str, bool] = {}
    ranks: set[int] = set()
    # Convolutions read as grouped (module -> groups) to fit an IA3 / OFT tensor: a checkpoint does not store groups.
    conv_groups: dict[str, int] = {}
    merges: set[str] = set()  # those of them whose update merges into the weight (IA3's)
    # Grouped convolutions a LoRA adapts (AdaLoRA's too): merge_and_unload raises on them, as on OFT's.
    grouped_updates: set[str] = set()
    # The diffusers pipeline components whose pairs land in B once their prefix is stripped (B is that component).
    # peft's own files wrap every name in base_model.model. (GPT-2's transformer.h.0 is no pipeline component).
    # Nor is an AdaLoRA's (its singular values, lora_E, beside each pair): diffusers saves and loads LoRAs alone, and
    # a GPT-2 AdaLoRA with peft's wrapper renamed away (`--rename '^base_model\.model\.='`) against a GPT2Model was
    # "a LoRA in diffusers' layout", to load with load_lora_weights.
    grouped = _lora_groups(pairs, specs_a)
    grouped_updates.update(_adapter_target(module) for module in grouped)
    adalora = any(match["part"] == "lora_E" for _, match in pairs)
    components = set() if adalora else {component for _, match in pairs if not match["module"].startswith(_PEFT_WRAPPER)
                  and (component := _diffusers_component(module := _adapter_target(match["module"]))) is not None
                  and module + ".weight" not in specs_b and _in_component(module, component, specs_b) is not None}
    # Nor is one with peft's adapter_config.json beside it (its peft_type): diffusers writes none, and a GPT-2 LoRA
    # with peft's wrapper renamed away against a GPT2Model was "a LoRA in diffusers' layout" too. Read only when a
    # component was found (the config is a file read).
    if components and adapter_config is not None and isinstance((adapter_config() or {}).get("peft_type"), str):
        components = set()
    params: dict[str, list[KeySpec]] | None = None  # `_module_parameters(specs_b)`, built when first wanted
    fusions: dict[str, tuple[str, list[KeySpec]]] | None = None  # `_per_expert_fusions(specs_b)`, the same
    fused_from: dict[str, str] = {}  # experts modules of B's loaded model -> as B stores them, per expert
    wrappers: dict[str, int] | None = None  # `_parameter_wrappers(pairs)`, built when first wanted
    # The 2-D lora_A and lora_B of one adapter on one module (their names without the part) that each fit it.
    factors: dict[str, dict[str, tuple[str, tuple[int, ...], KeySpec, str]]] = defaultdict(dict)
    for name, match in pairs:
        module, part = _adapter_target(match["module"]), match["part"]
        # peft nests a second wrapper of one module under the first's base_layer (target_parameters on two of an
        # experts module's parameters: `experts.base_layer.lora_A.weight`).
        depth = 0  # wrappers outside this one: which of the module's targeted parameters it adapts
        while module.endswith(".base_layer"):
            module = module[:-len(".base_layer")]
            depth += 1
        component = _diffusers_component(module) if components else None
        if component in components:
            module = _in_component(module, component, specs_b) or module[len(component):]
        elif component is not None:
            whys[name] = ("adapter", "info", f"for the pipeline's {component[:-1]}, not B: diffusers' "
                          "load_lora_weights loads it there")
            continue
        kind = "IA3" if part == "ia3_l" else "LoRA"
        shape = specs_a[name].shape
        rank: int | None = None
        if part == "lora_E":  # one value per rank: the weight's shape is lora_A's and lora_B's to check
            kind = "AdaLoRA's singular values (lora_E)"
        elif name.endswith(".bias") or part in ("lora_magnitude_vector", "ia3_l"):  # IA3: (out, 1), or (1, in)
            # lora_B's bias (peft's lora_bias=True), DoRA's magnitude (1×out×1×1 on a Conv): out values, checked
            # as a 1-column B.
            part, shape = "lora_B", (math.prod(shape), 1) if shape else shape
        else:
                # The rank is A's first and B's second dimension; a 0-dim tensor has neither (and fits nothing).
                rank_axis = 0 if part in ("lora_A", "lora_embedding_A") else 1
                if len(shape) > rank_axis:  # a grouped convolution's lora_B holds rank / groups
                    rank = shape[rank_axis] * (grouped.get(match["module"], 1) if rank_axis else 1)
        weight = specs_b.get(module + ".weight")
        if weight is None and part in ("lora_A", "lora_B"):
            # An nn.MultiheadAttention: peft's LoRA adapts its packed in_proj_weight (3·E × E) under the module's
            # own name (its out_proj under `.base_layer.out_proj.`); it was "targets mha, which B does not have".
            weight = specs_b.get(module + ".in_proj_weight")
        if weight is None and part in ("lora_A", "lora_B") and len(shape) == 2:
            params = _module_parameters(specs_b) if params is None else params
            if module not in params and module.endswith(".experts"):
                # B saved per expert (`experts.3.gate_proj.weight`: transformers 5's save_pretrained writes the
                # legacy layout) holds the fused parameters the adapter was made on only once loaded, when
                # transformers fuses them: every target_parameters factor was "targets experts, which B does not
                # have", an error, though PeftModel.from_pretrained on the loaded model takes them all.
                fusions = _per_expert_fusions(specs_b) if fusions is None else fusions
                if module in fusions:
                    saved_as, params[module] = fusions[module]
                    fused_from[module] = saved_as
            stored = (f"; B stores them per expert, {fused_from[module]}.N.*.weight, fused by transformers when it "
                      "loads the model") if module in fused_from else ""
            if module in params:  # peft's target_parameters: a LoRA on a bare parameter (fused MoE experts)
                # The other factor of the pair (lora_B beside lora_A) must fit the same parameter the same way
                # round: each alone fitting some axis of some parameter of the module passed lora_B of a gate_up_proj
                # made for narrower experts (its out against down_proj's, or gate_up_proj's in axis), which
                # PeftModel.from_pretrained refuses (size mismatch). B's experts fused from per-expert weights are
                # E × out × in, as transformers builds them (not is_transposed).
                sibling_name = _LORA_SIBLING.sub(lambda found: ".lora_B." if found[1] == "A" else ".lora_A.", name)
                sibling = specs_a.get(sibling_name) if part == match["part"] and sibling_name != name else None
                transposed = False if module in fused_from else None
                fits = [param for param in params[module] if _parameter_lora_fits(
                    part, shape, param.shape, transposed=transposed,
                    other=sibling.shape if sibling is not None else None)]
                fit = fits[0] if fits else None
                either = ("", "")
                if len(fits) > 1:
                    # Two parameters of one shape (Nemotron-H's gateless experts, up_proj and down_proj, where
                    # moe_intermediate_size is the hidden size): the first was named, and peft's nesting puts the
                    # other on this wrapper as often. Which one it adapts follows from the wrapper's depth where
                    # the targeted parameters are known; otherwise the detail says it is one of them.
                    if wrappers is None:
                        wrappers = _parameter_wrappers(pairs)
                    fit = _nested_parameter(module, depth, wrappers.get(module, 1), params[module], fits,
                                            adapter_config() if adapter_config is not None else None)
                    if fit is None:
                        fit = fits[0]
                        either = (f" or {' or '.join(param.name for param in fits[1:])}", ": both of one shape, "
                                  "and which of them this wrapper adapts is not in the names (adapter_config.json's "
                                  "target_parameters tells; none is beside A)")
                if rank is not None:  # r × experts: each expert's rank stacked
                    experts = (fit or params[module][0]).shape[0] if len(
                        (fit or params[module][0]).shape) == 3 else 1
                    rank = rank // experts if rank % experts == 0 else rank
                    ranks.add(rank)
                if fit is not None:
                    whys[name] = ("adapter", "info", f"{kind} on {fit.name}{either[0]} (a parameter peft's "
                                  f"target_parameters adapts{stored}){either[1]}")
                    modules.setdefault(module, True)
                else:
                    held = ", ".join(f"{param.name} ({'×'.join(map(str, param.shape))})" for param in params[module])
                    # A factor that fits alone is refused with its pair: said so, the pair's other factor named.
                    paired = ""
                    if sibling is not None and any(_parameter_lora_fits(part, shape, param.shape, transposed=transposed)
                                                   for param in params[module]):
                        other_part = _LORA_SIBLING.search(sibling_name)[0][1:-1]
                        paired = f" with its {other_part} ({'×'.join(map(str, sibling.shape))})"
                    whys[name] = ("adapter", "error", f"{'×'.join(map(str, shape))}{paired} fits none of B's "
                                  f"parameters of {module} ({held}{stored}): an adapter for another model size")
                    modules[module] = False
                continue
        if weight is None and part in ("lora_A", "lora_B") and len(shape) == 2 and (
                expert := _PER_EXPERT_MODULE.match(module)) is not None:
            params = _module_parameters(specs_b) if params is None else params
            fused = _fused_expert_parameter(expert, part, shape, params.get(expert["experts"], []))
            if fused is not None:
                # peft saved LoRA per expert module for transformers 4 (`experts.3.w1`); transformers 5 holds the
                # experts fused (`experts.gate_up_proj`), and peft with transformers-5 weight conversion turns the
                # per-expert factors into LoRA on the fused parameter when it loads the adapter (the merged weights
                # equal the per-expert update); a peft without it loads none of them.
                if rank is not None:
                    ranks.add(rank)
                if _peft_converts_experts():
                    whys[name] = ("adapter", "info", f"{kind} on expert {expert['number']} of {fused.name}, which B "
                                  "holds fused: peft converts the per-expert LoRA onto it when it loads the adapter")
                    modules.setdefault(module, True)
                else:
                    whys[name] = ("adapter", "error", f"targets {module}, one expert of {fused.name}, which B holds "
                                  "fused: this peft loads none of it (a peft with transformers-5 weight conversion, "
                                  "peft.utils.transformers_weight_conversion, converts it)")
                    modules[module] = False
                continue
        if rank is not None:
            ranks.add(rank)
        tied = _tied_output_weight(module, specs_b) if weight is None else None
        stored = "" if tied is None else f" (B stores it once, as {tied.name}, tied)"
        weight = weight if tied is None else tied
        if weight is None:
            whys[name] = ("adapter", "error", f"targets {module}, which B does not have: the adapter's weights "
                          "for it are dropped")
            modules[module] = False
        elif weight.dtype not in FLOATING:
            whys[name] = ("adapter", "info", f"on {module} (stored quantized in B: shapes not compared)")
            modules.setdefault(module, True)
        elif match["part"] == "ia3_l" and (misfit := _ia3_misfit(specs_a[name].shape, weight.shape, module)) and (
                groups := _ia3_conv_groups(specs_a[name].shape, weight.shape)) is not None:
            conv_groups[module] = groups
            merges.add(module)  # IA3's scales merge into a grouped convolution (peft expands them per group)
            whys[name] = ("adapter", "info", f"IA3 on {weight.name} ({_grouped_reading(groups, specs_a[name].shape)})")
            modules.setdefault(module, True)
        elif match["part"] == "ia3_l" and misfit:
            grouping = _UNGROUPED if len(weight.shape) > 2 and len(specs_a[name].shape) == len(weight.shape) else ""
            whys[name] = ("adapter", "error", f"{'×'.join(map(str, specs_a[name].shape))} does not fit {module}.weight "
                          f"({'×'.join(map(str, weight.shape))} in B): it {misfit}{grouping}: an adapter for another "
                          "model size")
            modules[module] = False
        elif part == "lora_A" and f"{match['module']}.lora_E" in specs_a and (
                groups := _adalora_conv_groups(shape, weight.shape)) is not None:
            # peft's AdaLoRA SVDConv2d saves lora_A flat (r × in·kh·kw): it was "a linear factor does not fit B's
            # 3×3 convolution", an error, on an adapter PeftModel.from_pretrained loads.
            if groups > 1:
                grouped_updates.add(module)
            whys[name] = ("adapter", "info", f"LoRA on {weight.name}") if groups == 1 else (
                "adapter", "warn", f"LoRA on {weight.name}: {'×'.join(map(str, shape))} reads all "
                f"{groups * weight.shape[1]} input channels of a convolution of {groups} groups (times its kernel); "
                f"{_PEFT_REFUSES_GROUPED.format(method='AdaLoRA', error='ValueError')}, and 0.21's AdaLoRA cannot "
                "run it there (its update, out × in·kh·kw, is no grouped weight's shape)")
            modules.setdefault(module, True)
        elif part != "lora_E" and match["part"] != "ia3_l" and not _lora_fits(
                part, shape, weight.shape, grouped.get(match["module"], 1)):
            whys[name] = ("adapter", "error", f"{'×'.join(map(str, shape))} does not fit {module}.weight "
                          f"({'×'.join(map(str, weight.shape))} in B): {_lora_misfit(part, shape, weight.shape)}")
            modules[module] = False
        else:
            whys[name] = ("adapter", "info", f"{kind} on {module}.weight{stored}" if tied is not None
                          else f"{kind} on {weight.name}")
            modules.setdefault(module, True)
            if part in ("lora_A", "lora_B") and len(shape) == 2 and len(weight.shape) == 2 \
                    and not name.endswith(".bias"):
                factors[name[:match.start("part")] + name[match.end("part"):]][part] = (name, shape, weight, module)
    # Each factor alone fits one of a 2-D weight's axes, either way round (GPT-2's Conv1D is in × out): a LoRA made
    # for a 32→32 Linear "fit" a 32→48 or a 48→32 one, which PeftModel.from_pretrained refuses (a size mismatch).
    # B's outputs and A's inputs are one weight's out and in, Linear's way (out × in) or Conv1D's (in × out).
    # Conv1D's way only where the adapter was made for one: peft saves fan_in_fan_out=True then (it sets it for a
    # Conv1D target), so a LoRA made for a 32→64 Linear "fit" a 64→32 one, which PeftModel.from_pretrained refuses.
    linear_only: bool | None = None  # adapter_config.json's fan_in_fan_out is false (None: not read yet)
    for held in factors.values():
        if len(held) < 2:
            continue
        misfit = _pair_misfit(held["lora_A"], held["lora_B"])
        (_, a, weight, _), (_, b, _, _) = held["lora_A"], held["lora_B"]
        if misfit is None and (b[0], a[1]) != tuple(weight.shape):
            if linear_only is None:
                read = adapter_config() if adapter_config is not None else None
                linear_only = read is not None and read.get("fan_in_fan_out") is False
            if linear_only:
                misfit = (f"lora_B {b[0]}×{b[1]} and lora_A {a[0]}×{a[1]} make a {b[0]}×{a[1]} update, which "
                          f"{weight.name} ({'×'.join(map(str, weight.shape))} in B) is only the other way round, "
                          "as GPT-2's Conv1D stores it, while adapter_config.json's fan_in_fan_out is false (the "
                          "adapter adapts an nn.Linear, out × in): an adapter for another layer")
        if misfit:
            whys[held["lora_A"][0]] = whys[held["lora_B"][0]] = ("adapter", "error", misfit)
            modules[held["lora_A"][3]] = False
    uncompared: dict[str, str] = {}  # a method whose tensors could not be compared with B's -> why
    config = adapter_config() if adapter_config is not None and any(
        match["part"] in ("miss_block", "shira_weight", "road_theta", "road_alpha", "paca_indices")
        for _, match in tuners) else None
    methods = _tuners_fit(tuners, shared, specs_b, whys, modules, specs_a, conv_groups, uncompared, config)
    unknown: list[str] = []  # the tensor families of PEFT methods not known here (`_peft_generic`), in order
    frod_sparse_rate: tuple[Any, ...] | None = None  # FRoD's adapter_config.json sparse_rate, read once if needed
    for name, module, part in generic:
        if part in _ADAPTION_PARTS:
            if "Llama-Adapter" not in methods:
                methods.append("Llama-Adapter")
            if misfit := _adaption_misfit(part, specs_a[name].shape, module, specs_b):
                whys[name] = ("adapter", "error", f"Llama-Adapter on {module}: {misfit}: an adapter for another "
                              "model size")
                modules[module] = False
            else:
                whys[name] = ("adapter", "info", f"Llama-Adapter ({part}) on {module}")
                modules.setdefault(module, True)
            continue
        family = part.split("_")[0] + "_*"
        sized = _GENERIC_SIZED_METHODS.get(family)
        weight = specs_b.get(module + ".weight")
        if sized is None or weight is None or weight.dtype not in FLOATING or len(weight.shape) != 2:
            if family not in unknown:
                unknown.append(family)
            whys[name] = ("adapter", "info", f"{part} on {module}.weight: a PEFT method not known here (its shapes "
                          "are not compared)")
            modules.setdefault(module, True)
            continue
        if sized not in methods:
            methods.append(sized)
        if sized == "FRoD" and frod_sparse_rate is None and adapter_config is not None:
            frod_sparse_rate = ((adapter_config() or {}).get("sparse_rate"),)
        misfit = (_psoft_misfit(name, specs_a[name].shape, weight, module) if sized == "PSOFT" else
                  _frod_misfit(part, specs_a[name].shape, weight, module, (frod_sparse_rate or (None,))[0])
                  if sized == "FRoD" else _generic_sized_misfit(part, specs_a[name].shape, weight, module))
        if misfit:
            whys[name] = ("adapter", "error", f"{sized} on {module}: {misfit}: an adapter for another model size")
            modules[module] = False
        else:
            whys[name] = ("adapter", "info", f"{sized} on {module}.weight")
            modules.setdefault(module, True)
    for name in generic_shared:
        known = _GENERIC_SIZED_METHODS.get(name.split(".")[1].split("_")[0] + "_*", "a PEFT method not known here")
        whys[name] = ("adapter", "info", f"saved once for the adapter's modules by {known}, not a weight of B")
        if name.startswith("base_model.frod_V."):
            misfit = _frod_projection_misfit(name, specs_a[name].shape, generic, specs_b)
            if misfit:
                whys[name] = ("adapter", "error", f"FRoD's {misfit}: an adapter for another model size")
    targets = _unilora_targets(adapter_config() if unilora and adapter_config is not None else None, specs_b)
    for name in unilora:
        whys[name] = ("adapter", "error", f"UniLoRA's shared vector theta_d for modules named {targets[1]} "
                      "(adapter_config.json's target_modules), none of which B has: peft refuses to load it") if (
            targets is not None and not targets[0]) else ("adapter", "info", (
                f"UniLoRA's shared vector theta_d ({math.prod(specs_a[name].shape)} values), not a weight of B: peft "
                "rebuilds every adapted module's factors from it (proj_seed), whatever the module's size"))
    # LoHa's and LoKr's products, VeRA's, OFT's, BOFT's, HRA's and LN Tuning's widths, MiSS's, C3A's, RandLora's,
    # SHiRA's and VB-LoRA's sizes are compared with the weights (`uncompared`: where A alone could not tell); the
    # other methods' tensors are not shaped so.
    unshaped = [method for method in methods if method not in _SHAPED_TUNERS or method in uncompared]
    why_unshaped = "; ".join(uncompared.get(method, f"{method} tensors are not shaped as the weights they adapt")
                             for method in unshaped)
    for name in others:
        # Whole weights an adapter saves beside its pairs (modules_to_save heads, resized embeddings).
        target = specs_b.get(_adapter_target(name))
        tied = _ties_to_embedding(_adapter_target(name), specs_a[name].shape, specs_b) if target is None else None
        if tied is not None:  # B stores its output layer once, as the input embedding it is tied to (GPT-2)
            whys[name] = ("adapter", "info", f"replaces {_adapter_target(name)}, stored in B as {tied} (tied)")
        elif target is None:
            whys[name] = ("adapter", "error", f"saved for {_adapter_target(name)}, which B does not have")
        elif target.shape != specs_a[name].shape:
            whys[name] = ("adapter", "error", f"replaces {target.name}: "
                          f"{'×'.join(map(str, specs_a[name].shape))} in A, {'×'.join(map(str, target.shape))} in B")
        else:
            whys[name] = ("adapter", "info", f"replaces {target.name} (a module the adapter saves whole)")
    # A convolution that fits only as a grouped one (its groups implied, not stored) is not counted as fitting.
    fitting = sum(fits for module, fits in modules.items() if module not in conv_groups)
    # The base's weights are the base's whether or not the adapter's shapes fit them, or its modules are B's at all:
    # an adapter for another size of B, or for another model (a Llama LoRA against GPT-2), left every one of them
    # "unknown: no known cause: these weights will not load", though PeftModel.from_pretrained takes them from B.
    if modules or generic_shared:
        replaced = {_adapter_target(name): name for name in others}
        for name in missing:
            if name not in replaced:
                whys[name] = ("adapter-base", "info", "")
            else:
                reason, severity, _ = whys[replaced[name]]
                whys[name] = (reason, severity, f"{ADAPTER_SAVES_WHOLE}, as {replaced[name]}")
    # AdaLoRA's pairs are LoRA's with its singular values (lora_E) between them: inspect and plan-devices name it
    # AdaLoRA, diff-keys said "LoRA (rank 6)".
    lora = "AdaLoRA" if any(match["part"] == "lora_E" for _, match in pairs) else "LoRA"
    kinds = ([f"{lora} (rank {'/'.join(map(str, sorted(ranks)))})"] if ranks
             else ["IA3"] if pairs else [])
    method = " and ".join(kinds + methods + [f"{family} tensors" for family in unknown] + (
        ["UniLoRA"] if unilora else []))
    if unknown:
        checked = ("(shapes not compared: " + " and ".join(unknown) + " tensors are of a PEFT method not known "
                   "here, so an adapter for another size of the model is not caught)")
    elif not unshaped:
        checked = "with shapes that fit"
    elif kinds or len(unshaped) < len(methods):
        compared = " and ".join(([kinds[0].split()[0]] if kinds else []) + [m for m in methods if m not in unshaped])
        checked = (f"(shapes compared for the {compared} tensors only: {why_unshaped})" if uncompared else
                   f"(shapes compared for the {compared} tensors only: {' and '.join(unshaped)} ones are "
                   "not shaped as the weights they adapt)")
    elif uncompared:
        checked = f"(shapes not compared: {why_unshaped}, so an adapter for another size of the model is not caught)"
    else:
        checked = (f"(shapes not compared: {' and '.join(unshaped)} tensors are not shaped as the weights they "
                   "adapt, so an adapter for another size of the model is not caught)")
    if conv_groups:
        read = ", ".join(f"{module}: {groups} groups" for module, groups in conv_groups.items())
        count = len(conv_groups)
        checked += (f"; {count} more {plural(count, 'is a convolution', 'are convolutions')} it fits only if "
                    f"grouped ({read}): a checkpoint does not store groups, so {plural(count, 'its', 'their')} fit "
                    "is not compared")
    if "PaCA" in methods and any(modules.get(_adapter_target(match["module"])) for _, match in tuners
                                 if match["part"] == "paca_indices"):
        # PeftModel.from_pretrained loads saved indices past a narrower layer's in_features (its checks are of r and
        # of paca_indices_pattern): the forward and merge_and_unload raise (index out of bounds).
        checked += PACA_INDICES_BY_COUNT
    for spectral in ("FourierFT", "WaveFT"):
        if spectral not in unshaped:
            continue
        # peft's FourierFTLayer: the spectrum holds n_frequency values, put at positions torch.randperm draws (from
        # fourierft_random_loc_seed) over the layer's out × in; only n_frequency <= out × in is asked of the layer.
        # WaveFT's are wavelet coefficients at positions drawn from its random_loc_seed over out × in alike.
        checked = (checked[:-1] + f"; {spectral}'s spectrum is n_frequency values placed at positions drawn from "
                   "its seed over the layer's out × in, so only one longer than out × in, which peft refuses, is "
                   "caught)")
    if unilora and not modules:
        values = sum(math.prod(specs_a[name].shape) for name in unilora)
        named = ("the file names no module, so which of B's modules it adapts is not compared here" if targets is None
                 else f"adapter_config.json's target_modules ({targets[1]}) name modules of B" if targets[0] else
                 f"none of adapter_config.json's target_modules ({targets[1]}) is a module of B, and "
                 "PeftModel.from_pretrained onto B raises: load it onto the base it was made for")
        return whys, (f"A is a PEFT adapter: UniLoRA, one shared vector (theta_d, {values} values) from which peft "
                      "rebuilds the factors of each module it adapts, whatever their sizes; "
                      f"{named}; it stores no base weights: load it with {loading(bool(targets and targets[0]))}, "
                      "or merge it (merge_and_unload) before comparing whole checkpoints")
    # B is a saved PEFT adapter too (an IA3 adapter against a LoRA one): its tensors were "a weight of the base model"
    # and the note "0 of them in B", "made for another model", with no word that B is no model at all.
    adapter_b = _saved_peft_adapter(specs_b)
    if adapter_b:
        for name in missing:
            if name in adapter_b:
                whys[name] = ("adapter", "error", "a tensor of B's own adapter: B is a PEFT adapter, not a model "
                              "A's adapter loads into")
        return whys, (f"A and B are both PEFT adapters: A {method} on {counted(len(modules), 'module')}, B "
                      f"{counted(len(adapter_b), 'adapter tensor', grouped=True)} under base_model. and no base "
                      "weights; an adapter loads into its base model, not into another adapter, so no key of either "
                      "was checked against a model: compare each against its base (diff-keys with the adapter as A "
                      "and its base model as B), or merge each (merge_and_unload) and compare the merged models")
    # Whole weights of B's the adapter saves (modules_to_save, a resized embedding): "it stores no base weights"
    # was said of an adapter that saves its classifier or norm whole, which replace the base's.
    whole = [_adapter_target(name) for name in others if _adapter_target(name) in specs_b]
    stores = ("it stores no base weights" if not whole else
              f"of B's weights it stores only {'the one' if len(whole) == 1 else f'the {len(whole)}'} it saves whole "
              f"({', '.join(whole[:3])}{', ...' if len(whole) > 3 else ''})")
    if components:
        named = ", ".join(sorted(component[:-1] for component in components))
        note = (f"A is a LoRA in diffusers' layout: {method} on {counted(len(modules), 'module')} of the pipeline's "
                f"{named} "
                f"(B), {fitting} of them in B {checked}; {stores}: load it with the "
                "pipeline's load_lora_weights(adapter), or fuse it (fuse_lora) before comparing whole checkpoints")
        if any(component.startswith("text_encoder") for component in components) and _flattened_clip_text(specs_b):
            note += "; " + _FLATTENED_CLIP_TEXT_NOTE.format(
                loader="the pipeline's load_lora_weights (its load_lora_into_text_encoder)")
    else:
        note = (f"A is a PEFT adapter: {method} on {counted(len(modules), 'module')}, {fitting} of them in B "
                f"{checked}; "
                f"{stores}: load it with {loading(_fits_whole(modules, fitting, whys))}, "
                "or merge it (merge_and_unload) before comparing whole checkpoints")
        # Modules B has whose shapes the adapter's do not fit: the PeftModel.from_pretrained said above, pasted
        # with B as the base, raises a size mismatch.
        misfit = sum(1 for module, fits in modules.items() if not fits and (
            f"{module}.weight" in specs_b or f"{module}.bias" in specs_b or f"{module}.in_proj_weight" in specs_b
            or (params is not None and module in params)))
        if misfit:
            # PSOFT's factors are sized by its rank alone: what peft refuses is a rank above a layer's smaller side,
            # with a ValueError from PsoftLayer.update_layer, not a size mismatch.
            raised = ("a ValueError (its rank is above min(in_features, out_features) of a layer)"
                      if method == "PSOFT" else "a size mismatch")
            if method == "PaCA":  # PacaLayer.update_layer refuses r or an index above in_features before any load
                raised = " or ".join(sorted({
                    "a ValueError" if "ValueError" in detail else "a TypeError" if "TypeError" in detail
                    else "a size mismatch" for _, severity, detail in whys.values()
                    if severity == "error" and detail.startswith("PaCA on ")})) or raised
            # A BOFT / HRA / HiRA tensor that reads all of a grouped convolution's channels: which of the two B's is
            # (a layer of another size, or a grouped one peft refuses the method on) a checkpoint does not tell.
            refused = sorted({detail.split(" on ", 1)[0] for _, severity, detail in whys.values()
                              if severity == "error" and "does not support Conv2d layers with groups > 1" in detail})
            note += (f"; {misfit} of them {plural(misfit, 'does', 'do')} not fit B's shapes: it was made for another "
                     f"size of the model, and PeftModel.from_pretrained onto B raises {raised}: load it "
                     "onto the base it was made for (adapter_config.json's base_model_name_or_path)")
            if refused:
                note += (f" (or, where B's convolutions are grouped, it raises a NotImplementedError: peft refuses "
                         f"{' and '.join(refused)} on them)")
        # B a whole PEFT-wrapped model (get_peft_model(...).state_dict(): each adapted layer's weight under
        # `.base_layer.`, its own adapter's tensors beside it): "it was made for another model" was said of an
        # adapter against the very model it was saved from.
        elif modules and not fitting and (wrapped_b := [
                module for module in modules if f"{_PEFT_WRAPPER}{module}.base_layer.weight" in specs_b]):
            for name in missing:
                if (match := _LORA_PAIR.match(name) or _PEFT_TUNER.match(name)) is not None and (
                        _adapter_target(match["module"]) in modules):
                    whys[name] = ("adapter", "info", "a tensor of the adapter in B, a whole PEFT-wrapped model")
            for name, match in (*pairs, *tuners):
                if _adapter_target(match["module"]) in wrapped_b:
                    whys[name] = ("adapter", "error", f"on {_adapter_target(match['module'])}, {_WRAPPED_IN_B}")
            note += (f"; none of its modules is in B as a base model's layer (e.g. {next(iter(modules))}), but "
                     f"{len(wrapped_b)} of them {plural(len(wrapped_b), 'is', 'are')} B's adapted layers (e.g. "
                     f"{_PEFT_WRAPPER}{wrapped_b[0]}.base_layer.weight): B is a whole PEFT-wrapped model (the "
                     "base with an adapter in it, get_peft_model(...).state_dict()), not a base an adapter loads "
                     "into; to compare the adapters, save B's with save_pretrained; to check A, compare it against "
                     "the base (or B merged: merge_and_unload)")
        elif ranks and modules and not fitting:
            # No module of the adapter is in B: peft's inject_adapter raises NoMatchingPeftModuleError ("Target
            # modules {...} not found in the base model"); "0 of them in B" said nothing of what to do. Unless B has
            # modules of the names peft targets elsewhere (a LlamaForCausalLM's adapter on a LlamaModel, whose
            # `layers.0.self_attn.q_proj` is the other's `model.layers.0...`): peft then wraps those, loads none of
            # the saved factors ("Found missing adapter keys", a warning) and the adapter does nothing.
            example = next(iter(modules))
            # B saved from a training wrapper (DDP's module., torch.compile's _orig_mod.): its modules are A's under
            # the wrapper's prefix, and "load it onto the model class it was trained on" was said of its own base.
            wrapper, held = max(((w, sum(1 for module in modules if f"{w}{module}.weight" in specs_b))
                                 for w in _WRAPPERS if w != _PEFT_WRAPPER), key=lambda found: found[1])
            elsewhere = _peft_targets_in(adapter_config() if adapter_config is not None else None, modules, specs_b)
            if held:
                note += (f"; none of its modules is in B under the name it was saved with (e.g. {example}), but "
                         f"{held} of them {plural(held, 'is', 'are')} under the prefix {wrapper!r} (e.g. "
                         f"{wrapper}{example}): B's keys were saved from a training wrapper (DDP, torch.compile, "
                         f"...); strip it from B's keys ({_unwrap_command(source_b, wrapper, revision_b)}) and "
                         "compare or load the adapter with that")
            elif elsewhere:
                note += (f"; none of its modules is in B under the name it was saved with (e.g. {example}), yet B has "
                         f"modules of the names peft targets ({elsewhere}): PeftModel.from_pretrained onto B "
                         "does not raise, it wraps those, loads none of A's factors (peft warns 'Found missing "
                         "adapter keys') and leaves each as peft initializes it (none of A's training is used): "
                         "load it onto the model class it was trained on, whose module names it has "
                         "(adapter_config.json's base_model_name_or_path names its base)")
            else:
                note += (f"; none of its modules is in B (e.g. {example}): it was made for another model, and "
                         "PeftModel.from_pretrained onto B raises (peft: target modules not found in the base "
                         "model): load it onto a base that has these modules, the one it was trained on (which "
                         "adapter_config.json's base_model_name_or_path names, unless the adapter was saved with "
                         "another)")
        # peft's merge_and_unload raises on a LoRA's ("Merging is not supported for _ConvNd layers with groups >
        # 1") or 0.21's OFT's (its rotation reshaped to out × in·kh·kw) grouped convolution: "or merge it" was not so.
        unmerged = sorted(module for module in {*grouped_updates, *conv_groups} - merges if modules.get(module))
        if unmerged:
            note += (f"; merge_and_unload raises on {', '.join(unmerged)}: peft does not merge a LoRA or OFT update "
                     "into a grouped convolution")
    return whys, note


# The detail of an adapter's tensor on a module B holds as a whole PEFT-wrapped model's (see `adapter_fit`): such a
# module is not one the adapter adapts in a model (`swapped_sides`).
_WRAPPED_IN_B = "which B holds wrapped by an adapter of its own (.base_layer.), not as a base model's layer"


def swapped_sides(
    specs_a: Mapping[str, KeySpec], specs_b: Mapping[str, KeySpec], unexpected: Sequence[str], missing: Sequence[str],
    word_text_b: str | None = None, source_a: str = "A", source_b: str = "B",
    steps: str | Callable[[str | None], str] | None = None,
) -> tuple[dict[str, tuple[str, str, str]], str]:
    """When B is an adapter (PEFT, kohya, LyCORIS, ...) that adapts modules of A, and A no adapter: the two given the
    other way round (`diff-keys BASE ADAPTER`). Every key then read "unknown: these weights will not load", errors,
    with no word of why. Returns (reason, severity, detail) for every key of A's and B's that differ, all errors (the
    check asked for was not made: a CI gate must not pass it), and a note that gives the command with the sides
    swapped; ({}, "") otherwise. `steps`: what the note tells to do to check it (`swapped_steps`: with the flags
    that read each side as this run did), or a function of the training wrapper's prefix to strip from A's keys
    first (None: none) that gives it; by default `diff-keys B A` on the sources as given.

    A saved through a training wrapper (DDP's `module.`, torch.compile's `_orig_mod.` before every key) is the model
    the adapter adapts all the same: its keys are matched without the prefix (they read "unknown" errors), and the
    steps strip it first (`diff-keys B A` pasted as it is says the adapter's modules are not in A).

    Example:
        >>> base = {"q.weight": KeySpec("q.weight", (8, 8), "float32")}
        >>> lora = {"base_model.model.q.lora_A.weight": KeySpec("base_model.model.q.lora_A.weight", (4, 8), "float32")}
        >>> whys, note = swapped_sides(base, lora, list(base), list(lora), None, "base", "lora")
        >>> whys["q.weight"][:2], note.split(":")[0]
        (('swapped-sides', 'error'), 'B is a PEFT adapter and A the model it adapts')
    """
    from weightdoctor.paths import shell_word

    def adapts(whys: Mapping[str, tuple[str, str, str]]) -> bool:
        return any(why[0] == "adapter-base" for why in whys.values()) and any(
            why is not None and why[0] != "adapter-base" and "which B does not have" not in why[2]
            and _WRAPPED_IN_B not in why[2] for why in map(whys.get, missing))

    whys, note = adapter_fit(specs_b, specs_a, missing, unexpected, word_text_b)
    wrapper = None
    if whys and not adapts(whys):
        wrapper = next((w for w in _WRAPPERS if w != _PEFT_WRAPPER and specs_a
                        and all(name.startswith(w) for name in specs_a)), None)
        if wrapper is not None:
            bare = {name: name[len(wrapper):] for name in specs_a}
            found, note = adapter_fit(specs_b, {bare[name]: spec for name, spec in specs_a.items()}, missing,
                                      [bare.get(name, name) for name in unexpected], word_text_b)
            original = {stripped: name for name, stripped in bare.items()}
            whys = {original.get(name, name): why for name, why in found.items()}
            if not adapts(whys):
                wrapper = None
    # The adapter's modules are A's (a weight of A it leaves to the base): not an adapter of another model. Every
    # weight of A the adapter does not store is "adapter-base" whether or not it adapts A: a model with none of its
    # modules (another model, a whole PEFT model whose layers are under .base_layer.) was "the model it adapts", and
    # the command given said "none of its modules is in B".
    if not whys or not adapts(whys):
        return {}, ""
    named = re.match(r"A is (.+?)(?: \(|:)", note)
    what = named[1] if named else "an adapter"
    if callable(steps):
        steps = steps(wrapper)
    elif steps is None and wrapper is not None:
        from weightdoctor.checkpoint import Checkpoint

        steps = swapped_steps(Checkpoint(source_a, Path(source_a), "", False, [], []),
                              Checkpoint(source_b, Path(source_b), "", False, [], []), strip=wrapper)
    elif steps is None:
        steps = (f"run weightdoctor diff-keys {shell_word(source_b, argument=True)} "
                 f"{shell_word(source_a, argument=True)}")
    saved = (f", saved through a training wrapper (DDP, torch.compile, ...: {wrapper!r} before every key)"
             if wrapper is not None else "")
    swapped = {name: ("swapped-sides", "error", "" if whys.get(name, ("", "", ""))[0] == "adapter-base"
                      else whys.get(name, ("", "", ""))[2]) for name in (*unexpected, *missing)}
    # Modules of A's names whose shapes none of the adapter's tensors fit (GPT-2's LoRA against a GPT-2 of another
    # width): "A the model it adapts" was said, and the command given then says "made for another size".
    told = [why for name, why in whys.items() if name in set(missing) and why[0] == "adapter"]
    resized = not any(why[1] == "info" for why in told) and any("fit" in why[2] for why in told)
    adapted = ("A a model with its modules, but of another size: none of the adapter's tensors fits A's shapes"
               if resized else "A the model it adapts")
    checked = "" if resized else " and no key of the adapter was checked against A"
    return swapped, (f"B is {what} and {adapted}{saved}: diff-keys loads A into B, so the sides are "
                     f"given the other way round{checked}; to check it, "
                     f"{steps}")


def _tuners_fit(
    tuners: Sequence[tuple[str, re.Match[str]]], shared: Sequence[str], specs_b: Mapping[str, KeySpec],
    whys: dict[str, tuple[str, str, str]], modules: dict[str, bool], specs_a: Mapping[str, KeySpec],
    conv_groups: dict[str, int], uncompared: dict[str, str], adapter_config: Mapping[str, Any] | None = None,
) -> list[str]:
    """`adapter_fit`'s reasons for the tensors of PEFT methods other than LoRA and IA3 (see `_PEFT_TUNER_PARTS`),
    added to `whys` and `modules` (module -> in B); returns the methods found, in order. LoHa's and LoKr's factors
    make a product of the weight's shape (`_lycoris_product`), which is compared with it; VeRA's, OFT's, BOFT's,
    HRA's and LN Tuning's tensors are sized by the layer's widths (`_tuner_misfit`), which are compared with the
    weight's; for the other methods (FourierFT's spectrum, ...) only that the module is in B is checked. An OFT
    tensor that fits a convolution only as a grouped one (`_oft_conv_groups`) adds it to `conv_groups` (module ->
    groups). MiSS's, C3A's, RandLora's, SHiRA's and VB-LoRA's are sized by the layer too (`_sized_misfit`); a method
    whose tensor could not be compared is added to `uncompared` with why. `adapter_config`: the adapter_config.json
    beside A, where there is one (MiSS's init_weights, SHiRA's r)."""
    methods: list[str] = []
    held: dict[str, dict[str, tuple[int, ...]]] = defaultdict(dict)
    # VB-LoRA's vector bank (num_vectors × vector_length), saved once: its logits are sized by the vector length.
    bank = next((specs_a[name].shape for name in shared if name.startswith("base_model.vblora_vector_bank")), None)
    for name, match in tuners:
        if _PEFT_TUNER_PARTS[match["part"]] in ("LoHa", "LoKr") and match["param"] is None:
            held[_adapter_target(match["module"])][match["part"]] = specs_a[name].shape
    for name, match in tuners:
        module, method = _adapter_target(match["module"]), _PEFT_TUNER_PARTS[match["part"]]
        if method not in methods:
            methods.append(method)
        tied = _tied_output_weight(module, specs_b) if module + ".weight" not in specs_b else None
        weight = specs_b.get(module + ".weight")
        product = _lycoris_product(method, held[module]) if module in held and weight is not None \
            and weight.dtype in FLOATING and len(weight.shape) >= 2 else None
        shape = specs_a[name].shape
        # (misfit, why not compared): the older methods' widths, then the newer methods' sizes.
        misfit = _tuner_misfit(match["part"], match["param"], shape, module, specs_b)
        sized = (misfit, None) if misfit else _sized_misfit(match["part"], shape, weight, module, bank, adapter_config)
        misfit = sized[0]
        if module in held and weight is not None and weight.dtype in FLOATING and len(weight.shape) >= 2 and (
                product is None or (product[0], product[1]) != (weight.shape[0], math.prod(weight.shape[1:]))):
            shaped = "its factors do not make one product (a factor missing, or of another rank)" if product is \
                None else (f"its product is {product[0]}×{product[1]}, which does not fit {module}.weight "
                           f"({'×'.join(map(str, weight.shape))} in B)")
            whys[name] = ("adapter", "error", f"{method} on {module}: {shaped}")
            modules[module] = False
        elif misfit and (groups := _oft_conv_groups(match["part"], shape, weight)) is not None:
            conv_groups[module] = groups
            # peft 0.22 refuses OFT on any Conv2d with groups > 1 (depthwise too) when it builds the layer, so
            # PeftModel.from_pretrained raises on an adapter 0.21 saved and loaded: a warning, not a fit.
            whys[name] = ("adapter", "warn", f"{method} on {module}.weight ({_grouped_reading(groups, shape)}); "
                          f"{_PEFT_REFUSES_GROUPED.format(method=method, error='NotImplementedError')}")
            modules.setdefault(module, True)
        elif misfit and (groups := _refused_conv_groups(match["part"], shape, weight)) is not None:
            # peft (0.21 too) refuses BOFT and HRA on a Conv2d with groups > 1 when it builds the layer: it was "an
            # adapter for another model size" of a tensor that reads all the channels of a grouped convolution.
            refused = _PEFT_REFUSES_GROUPED_ALWAYS.format(method=method)
            whys[name] = ("adapter", "error", f"{method} on {module}: {misfit} as one group: an adapter for another "
                          f"model size, or, as a convolution of {groups} groups (a checkpoint does not store groups), "
                          f"one that reads all its channels, and {refused}")
            modules[module] = False
        elif misfit:
            if match["part"] == "oft_R" and weight is not None and len(weight.shape) == 4:
                misfit += _UNGROUPED
            whys[name] = ("adapter", "error", f"{method} on {module}: {misfit}: an adapter for another model size")
            modules[module] = False
        elif weight is not None and len(weight.shape) == 4 and weight.shape[2] != weight.shape[3] and match[
                "part"] in ("oft_R", "boft_R", "hra_u") and _tuner_misfit(
                match["part"], match["param"], shape, module, specs_b, kernel_read_twice=False):
            # It fits only as peft 0.21 sized a kh × kw convolution's input (in × kh × kh); 0.22 sizes it in × kh ×
            # kw, so its load_state_dict raises a size mismatch on the adapter 0.21 saved and loaded.
            whys[name] = ("adapter", "warn", f"{method} on {module}.weight: {'×'.join(map(str, shape))} reads "
                          f"{weight.shape[1]}×{weight.shape[2]}×{weight.shape[2]} input features, as peft 0.21 sized "
                          f"a {weight.shape[2]}×{weight.shape[3]} kernel's (kernel_size[0] twice); PeftModel"
                          ".from_pretrained onto B raises with peft 0.22 and later, which sizes it in × kh × kw "
                          f"({weight.shape[1] * weight.shape[2] * weight.shape[3]}: size mismatch); peft 0.21 "
                          "loads it")
            modules.setdefault(module, True)
        elif sized[1] is not None and module + ".weight" in specs_b:
            uncompared[method] = sized[1]
            whys[name] = ("adapter", "info", f"{method} on {module}.weight (shapes not compared: {sized[1]})")
            modules.setdefault(module, True)
        elif tied is not None:
            whys[name] = ("adapter", "info", f"{method} on {module}.weight (B stores it once, as {tied.name}, tied)")
            modules.setdefault(module, True)
        elif module + ".weight" in specs_b:
            whys[name] = ("adapter", "info", f"{method} on {module}.weight")
            modules.setdefault(module, True)
        else:
            whys[name] = ("adapter", "error", f"targets {module}, which B does not have: the adapter's weights for "
                          "it are dropped")
            modules[module] = False
    vera = [module for name, match in tuners if match["part"] == "vera_lambda_b"
            and (module := _adapter_target(match["module"])) + ".weight" in specs_b]
    for name in shared:
        misfit = _vera_projection_misfit(name, specs_a[name].shape, vera, specs_b)
        whys[name] = ("adapter", "error", misfit) if misfit else (
            "adapter", "info", "shared by the adapter's modules (its fixed random projections, saved with "
            "save_projection=True, or VB-LoRA's vector bank), not a weight of B")
    return methods


# A module of one expert, as transformers 4 held MoE experts (Mixtral's `block_sparse_moe.experts.3.w1`, Qwen-MoE's
# `mlp.experts.3.gate_proj`): what a LoRA saved then targets.
_PER_EXPERT_MODULE = re.compile(r"^(?P<experts>.+\.experts)\.(?P<number>\d+)\.(?P<projection>[^.]+)$")
# Per-expert projections that transformers 5 fuses into one gate-and-up parameter (the rest: the down projection).
_GATE_UP_PROJECTIONS = frozenset({"gate_proj", "up_proj", "w1", "w3"})


def _fused_expert_parameter(expert: re.Match[str], part: str, shape: tuple[int, ...],
                            params: Sequence[KeySpec]) -> KeySpec | None:
    """The fused 3-D experts parameter of B (E × out × in, or E × in × out) that a per-expert LoRA factor of
    `expert` (a `_PER_EXPERT_MODULE` match) adapts once converted: the gate-and-up one for a gate / up projection
    (its out axis twice the projection's), the other for the down projection; None where none fits, or the expert's
    number is past B's experts.

    Example:
        >>> up = KeySpec("m.experts.gate_up_proj", (4, 32, 8), "float32")
        >>> down = KeySpec("m.experts.down_proj", (4, 8, 16), "float32")
        >>> _fused_expert_parameter(_PER_EXPERT_MODULE.match("m.experts.3.w1"), "lora_B", (16, 2), [up, down]).name
        'm.experts.gate_up_proj'
    """
    gate_up = expert["projection"] in _GATE_UP_PROJECTIONS
    for param in params:
        if len(param.shape) != 3 or int(expert["number"]) >= param.shape[0] or ("gate_up" in param.name) != gate_up:
            continue
        for out_axis, in_axis in ((1, 2), (2, 1)):
            out = param.shape[out_axis] // 2 if gate_up else param.shape[out_axis]
            if (shape[1] == param.shape[in_axis]) if part == "lora_A" else (shape[0] == out):
                return param
    return None


@functools.cache
def _peft_converts_experts() -> bool:
    """Whether the installed peft converts a LoRA saved per expert onto transformers 5's fused experts when it loads
    it (its `peft.utils.transformers_weight_conversion`, which `set_peft_model_state_dict` runs)."""
    import importlib.util

    try:
        return importlib.util.find_spec("peft.utils.transformers_weight_conversion") is not None
    except (ImportError, ValueError):  # no peft at all
        return False


def _per_expert_fusions(specs_b: Mapping[str, KeySpec]) -> dict[str, tuple[str, list[KeySpec]]]:
    """The fused experts parameters transformers 5 builds when it loads B's experts saved one module each
    (`<experts>.N.gate_proj.weight` / `up_proj` / `down_proj`, or Mixtral's `w1` / `w3` / `w2`), by the experts
    module of the loaded model (Mixtral's `block_sparse_moe.experts` loads as `mlp.experts`: conversion_mapping.py's
    WeightRenaming): (the experts module as B stores it, [`<experts>.gate_up_proj` (E × 2·out × in, the gate and up
    projections stacked), `<experts>.down_proj` (E × out × in)]), E the experts B holds. Only where every expert
    holds each projection, of one shape.

    Example:
        >>> b = {f"m.experts.{i}.{p}.weight": KeySpec(f"m.experts.{i}.{p}.weight", s, "float32")
        ...      for i in range(4) for p, s in (("gate_proj", (8, 16)), ("up_proj", (8, 16)), ("down_proj", (16, 8)))}
        >>> [(spec.name, spec.shape) for spec in _per_expert_fusions(b)["m.experts"][1]]
        [('m.experts.gate_up_proj', (4, 16, 16)), ('m.experts.down_proj', (4, 16, 8))]
    """
    # experts module -> projection -> expert number -> the weight's spec
    found: dict[str, dict[str, dict[int, KeySpec]]] = defaultdict(lambda: defaultdict(dict))
    for name, spec in specs_b.items():
        if not name.endswith(".weight") or len(spec.shape) != 2 or spec.dtype not in FLOATING:
            continue
        expert = _PER_EXPERT_MODULE.match(name[:-len(".weight")])
        if expert is not None:
            found[expert["experts"]][expert["projection"]][int(expert["number"])] = spec
    fused: dict[str, tuple[str, list[KeySpec]]] = {}
    for experts, projections in found.items():
        numbers = {frozenset(by_number) for by_number in projections.values()}
        shapes = {projection: {spec.shape for spec in by_number.values()}
                  for projection, by_number in projections.items()}
        if len(numbers) != 1 or any(len(kinds) != 1 for kinds in shapes.values()):
            continue
        count = len(next(iter(numbers)))
        if next(iter(numbers)) != frozenset(range(count)):
            continue
        one = {projection: next(iter(kinds)) for projection, kinds in shapes.items()}
        dtype = next(iter(next(iter(projections.values())).values())).dtype
        gate_up = [one[p] for p in ("gate_proj", "up_proj") if p in one] or [one[p] for p in ("w1", "w3") if p in one]
        down = one.get("down_proj", one.get("w2"))
        if set(one) == {"up_proj", "down_proj"}:
            # Experts of no gate (Nemotron-H's mixer.experts.N.up_proj / down_proj): conversion_mapping.py stacks
            # each projection alone (`mixer.experts.up_proj`, E × out × in).
            stacked = [KeySpec(f"{{loaded}}.{projection}", (count, *one[projection]), dtype)
                       for projection in ("up_proj", "down_proj")]
        elif len(gate_up) != 2 or gate_up[0] != gate_up[1] or down is None:
            continue
        else:
            stacked = [KeySpec("{loaded}.gate_up_proj", (count, 2 * gate_up[0][0], gate_up[0][1]), dtype),
                       KeySpec("{loaded}.down_proj", (count, *down), dtype)]
        for loaded in {experts, _BLOCK_SPARSE_MOE.sub(".mlp.experts", experts)}:
            fused[loaded] = (experts, [spec._replace(name=spec.name.format(loaded=loaded)) for spec in stacked])
    return fused


# transformers 5 loads Mixtral's (and its kin's) `block_sparse_moe.experts` as `mlp.experts`.
_BLOCK_SPARSE_MOE = re.compile(r"\.block_sparse_moe\.experts$")


def _module_parameters(specs_b: Mapping[str, KeySpec]) -> dict[str, list[KeySpec]]:
    """B's bare 2-D and 3-D floating parameters (not a layer's weight / bias) by the module that holds them: fused MoE
    experts (`mlp.experts.gate_up_proj`, E × in × out or E × out × in), which peft's LoRA adapts by target_parameters.
    """
    found: dict[str, list[KeySpec]] = defaultdict(list)
    for name, spec in specs_b.items():
        module, _, param = name.rpartition(".")
        if module and param not in ("weight", "bias") and len(spec.shape) in (2, 3) and spec.dtype in FLOATING:
            found[module].append(spec)
    return found


def _parameter_lora_fits(part: str, shape: tuple[int, ...], param: tuple[int, ...], transposed: bool | None = None,
                         other: tuple[int, ...] | None = None) -> bool:
    """Whether a LoRA factor of peft's target_parameters (ParamWrapper) fits a bare parameter: on a 3-D one (E
    experts) lora_A is (r·E) × in and lora_B out × (r·E), peft reading E × out × in, or E × in × out where the
    experts module says is_transposed (`transposed`; None: either); `other`, the pair's other factor where the
    adapter holds it, must fit the same way round. On a 2-D one (out × in) as on an nn.Linear.

    Example:
        >>> _parameter_lora_fits("lora_A", (16, 64), (4, 64, 32)), _parameter_lora_fits("lora_B", (48, 16), (4, 64, 32))
        (True, False)
        >>> _parameter_lora_fits("lora_B", (16, 16), (4, 24, 16)), _parameter_lora_fits("lora_B", (16, 16), (4, 24, 16),
        ...                                                                             other=(16, 16))
        (True, False)
    """
    if len(param) == 2:
        return shape[1] == param[1] if part == "lora_A" else shape[0] == param[0]
    if len(param) != 3 or not param[0]:
        return False
    lora_a, lora_b = (shape, other) if part == "lora_A" else (other, shape)
    for flipped in ((False, True) if transposed is None else (transposed,)):
        in_axis, out_axis = (1, 2) if flipped else (2, 1)
        if (lora_a is None or (len(lora_a) == 2 and lora_a[0] % param[0] == 0 and lora_a[1] == param[in_axis])) and (
                lora_b is None or (len(lora_b) == 2 and lora_b[1] % param[0] == 0 and lora_b[0] == param[out_axis])):
            return True
    return False


def _parameter_wrappers(pairs: Sequence[tuple[str, re.Match[str]]]) -> dict[str, int]:
    """How many peft wrappers each module's LoRA factors are nested in (`experts.base_layer.lora_A`: 2), by module.

    Example:
        >>> pairs = [(n, _LORA_PAIR.match(n)) for n in ("base_model.model.m.experts.lora_A.weight",
        ...                                             "base_model.model.m.experts.base_layer.lora_A.weight")]
        >>> _parameter_wrappers(pairs)
        {'m.experts': 2}
    """
    found: dict[str, int] = {}
    for _, match in pairs:
        module, depth = _adapter_target(match["module"]), 0
        while module.endswith(".base_layer"):
            module, depth = module[:-len(".base_layer")], depth + 1
        found[module] = max(found.get(module, 0), depth + 1)
    return found


# transformers 5's experts modules define their input projection before the output one (MixtralExperts'
# gate_up_proj then down_proj, Nemotron-H's up_proj then down_proj, GPT-OSS' biases after each): peft wraps the
# parameters in that order, the first innermost.
_INPUT_PROJECTION = re.compile(r"^(?:gate_up_proj|up_proj|gate_proj|w1|w3|input_linear)(?:_bias)?$")
_OUTPUT_PROJECTION = re.compile(r"^(?:down_proj|w2|output_linear)(?:_bias)?$")


def _nested_parameter(module: str, depth: int, wrappers: int, params: Sequence[KeySpec], fits: Sequence[KeySpec],
                      config: Mapping[str, Any] | None) -> KeySpec | None:
    """The parameter of `module` that the peft wrapper `depth` wrappers in adapts, among `fits` (parameters of one
    shape), or None where that is not known.

    peft's target_parameters wraps an experts module once per parameter it targets, in the module's order of its
    parameters, each new wrapper around the last: the outermost (`experts.lora_A`) adapts the last one targeted,
    `experts.base_layer.lora_A` the one before. The targeted ones are adapter_config.json's target_parameters that
    name a parameter of `module` (peft's match: the name, or a dotted ending of it); without the file, all of the
    module's parameters where there are as many wrappers as parameters.

    Example:
        >>> up = KeySpec("m.experts.up_proj", (2, 8, 8), "float32")
        >>> down = KeySpec("m.experts.down_proj", (2, 8, 8), "float32")
        >>> _nested_parameter("m.experts", 0, 2, [down, up], [down, up], None).name
        'm.experts.down_proj'
        >>> _nested_parameter("m.experts", 1, 2, [down, up], [down, up], {"target_parameters": ["experts.up_proj",
        ...                   "experts.down_proj"]}).name
        'm.experts.up_proj'
        >>> _nested_parameter("m.experts", 0, 1, [down, up], [down, up], None) is None
        True
    """
    ordered = sorted(params, key=lambda param: 0 if _INPUT_PROJECTION.match(param.name.rpartition(".")[2]) else 1)
    if not all(_INPUT_PROJECTION.match(short) or _OUTPUT_PROJECTION.match(short)
               for short in (param.name.rpartition(".")[2] for param in ordered)):
        return None  # a module whose parameters' order is not known here
    named = config.get("target_parameters") if isinstance(config, Mapping) else None
    if isinstance(named, list) and named and all(isinstance(target, str) for target in named):
        targeted = [param for param in ordered if any(
            param.name == target or param.name.endswith("." + target) for target in named)]
    elif wrappers == len(ordered):
        targeted = list(ordered)
    else:
        return None
    if len(targeted) != wrappers or not 0 <= depth < wrappers:
        return None
    chosen = targeted[wrappers - 1 - depth]
    return chosen if chosen in fits else None


# The part of a LoRA factor's name, to find the pair's other factor (`experts.lora_A.weight` beside `lora_B`).
_LORA_SIBLING = _lazy_regex(r"\.lora_([AB])\.")


# A tensor part a PEFT method names with its prefix (peft's tuners name every parameter `<prefix>_<part>`: delora_A,
# glora_Xd, osf_svd_params), under the module it adapts or once at the top (`base_model.unilora_theta_d`).
_PEFT_PART = _lazy_regex(r"^[a-z][a-z0-9]*_[A-Za-z0-9_]+$")


# peft's Llama-Adapter (adaption prompt) saves its prompt (1 × adapter_len × hidden) and gate (1) on the attention
# module it wraps (`self_attn`), which holds no weight of its own: an adapter of it against its own base was
# "unknown: these weights will not load" for every key, worst severity error.
_ADAPTION_PARTS = ("adaption_prompt", "adaption_gate")


def _adaption_misfit(part: str, shape: tuple[int, ...], module: str, specs_b: Mapping[str, KeySpec]) -> str | None:
    """Why Llama-Adapter's `adaption_prompt` of `shape` does not fit B's attention `module`, or None (it fits, or
    B's width cannot be read there): its last dimension is the model's hidden size, q_proj's input features (Llama,
    Mistral) or c_attn's first dimension (GPT-2's Conv1D, in × out).

    Example:
        >>> b = {"a.q_proj.weight": KeySpec("a.q_proj.weight", (32, 48), "float32")}
        >>> _adaption_misfit("adaption_prompt", (1, 4, 32), "a", b)
        'adaption_prompt 1×4×32 is 32 wide, a.q_proj.weight (32×48 in B) reads 48 input features'
    """
    if part != "adaption_prompt" or len(shape) != 3:
        return None
    for child, axis in (("q_proj", 1), ("c_attn", 0)):
        weight = specs_b.get(f"{module}.{child}.weight")
        if weight is not None and len(weight.shape) == 2:
            if weight.shape[axis] == shape[-1]:
                return None
            return (f"adaption_prompt {'×'.join(map(str, shape))} is {shape[-1]} wide, {weight.name} "
                    f"({'×'.join(map(str, weight.shape))} in B) reads {weight.shape[axis]} input features")
    return None


def _peft_generic(
    names: Sequence[str], specs_b: Mapping[str, KeySpec],
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The tensors of a PEFT method not known here among `names` (A's names B lacks, each under `base_model.`):
    (name, module of B, part) for those under `base_model.model.<module>.<prefix>_<part>...` where B has that
    module, and the names saved once at the top (`base_model.<prefix>_<part>...`), which count only beside the
    former (an adapter's own). peft 0.21 has ~20 methods past
    those `_PEFT_TUNER_PARTS` names (GLoRA, GraLoRA, OSF, ...): an adapter of one against its own base was
    "unknown: these weights will not load", every base weight an error, though PeftModel.from_pretrained loads it.

    Example:
        >>> b = {"q.weight": KeySpec("q.weight", (8, 8), "float32")}
        >>> _peft_generic(["base_model.model.q.delora_A", "base_model.frod_V.q", "base_model.model.k.x_A"], b)
        ([('base_model.model.q.delora_A', 'q', 'delora_A')], ['base_model.frod_V.q'])
    """
    modules_b = {name.rpartition(".")[0] for name in specs_b}
    attention_modules: set[str] | None = None  # every module holding one of B's (`_ADAPTION_PARTS`), when first wanted
    found: list[tuple[str, str, str]] = []
    shared: list[str] = []
    for name in names:
        if _adapter_target(name) in specs_b:  # B's own weight (bn.running_mean), not a method's part
            continue
        if name.startswith(_PEFT_WRAPPER):
            segments = _adapter_target(name).split(".")
            if segments[-1] in _ADAPTION_PARTS:
                if attention_modules is None:
                    attention_modules = {".".join(parts[:cut]) for parts in (m.split(".") for m in modules_b)
                                         for cut in range(1, len(parts) + 1)}
                if (module := ".".join(segments[:-1])) in attention_modules:
                    found.append((name, module, segments[-1]))
                continue
            for cut in range(len(segments) - 1, 0, -1):
                module = ".".join(segments[:cut])
                if module in modules_b and _PEFT_PART.match(segments[cut]):
                    found.append((name, module, segments[cut]))
                    break
        elif _PEFT_PART.match(name.split(".")[1]):
            shared.append(name)
    return found, shared


# peft 0.21's methods read by `_peft_generic` whose factors are sized by the nn.Linear they adapt (each tuner's
# layer.py), by family: TinyLoRA's tinylora_A r × in and tinylora_B out × r (its tinylora_P u × r × r and the shared
# tinylora_v are sized by r and u alone); Lily's lily_A r × in and lily_B (num_B · r) × out (lily_router num_B × r);
# PEANuT's peanut_A r × out (it reads the layer's output) and peanut_B out × r (peanut_encoders / decoders r × r).
# Their adapters against a base of another size read "shapes not compared", though PeftModel.from_pretrained raises.
# PSOFT's psoft_R (its weight r × r, or r(r-1)/2 when orthogonal; vector_a / vector_b r) is sized by its rank alone,
# which peft's PsoftLayer.update_layer refuses above min(in_features, out_features) (ValueError). FRoD's frod_lambda_l
# is one value per input feature, frod_lambda_s_values min(int(in² · sparse_rate), in(in-1)) (at least 1), and its
# projection saved once per kind of module (`base_model.frod_V.<category>`, frod/model.py's _category_from_key:
# self_attn_q_proj) in × in: an adapter of either against a base of another width read "a PEFT method not known
# here (its shapes are not compared)", though PeftModel.from_pretrained raises.
_GENERIC_SIZED_METHODS = {"tinylora_*": "TinyLoRA", "lily_*": "Lily", "peanut_*": "PEANuT", "psoft_*": "PSOFT",
                          "frod_*": "FRoD"}
_GENERIC_SIZED_PARTS = {"tinylora_A": (1, "in"), "tinylora_B": (0, "out"), "lily_A": (1, "in"),
                        "lily_B": (1, "out"), "peanut_A": (1, "out"), "peanut_B": (0, "out"),
                        "frod_lambda_l": (0, "in")}


def _generic_sized_misfit(part: str, shape: tuple[int, ...], weight: KeySpec, module: str) -> str | None:
    """Why a TinyLoRA / Lily / PEANuT factor (`_GENERIC_SIZED_PARTS`) does not fit B's 2-D `weight`, or None (a part
    sized by the rank alone fits any layer).

    Example:
        >>> _generic_sized_misfit("peanut_A", (4, 32), KeySpec("v.weight", (16, 32), "float32"), "v")
        'peanut_A 4×32 spans 32 output features, v.weight (16×32 in B) writes 16'
    """
    if part not in _GENERIC_SIZED_PARTS or len(shape) != (1 if part == "frod_lambda_l" else 2):
        return None
    axis, side = _GENERIC_SIZED_PARTS[part]
    widths = _layer_widths(weight.shape, module)
    wanted = {width if side == "in" else out for width, out in widths}
    if shape[axis] in wanted:
        return None
    verb = "reads" if side == "in" else "writes"
    return (f"{part} {'×'.join(map(str, shape))} spans {shape[axis]} {'input' if side == 'in' else 'output'} "
            f"features, {weight.name} ({'×'.join(map(str, weight.shape))} in B) {verb} "
            f"{' or '.join(map(str, sorted(wanted)))}")


def _psoft_rank(name: str, shape: tuple[int, ...]) -> int | None:
    """PSOFT's rank r as one of its psoft_R tensors shows it: vector_a / vector_b r, weight r × r, or r(r-1)/2 values
    (the strict upper triangle its orthogonal form keeps); None where the shape says none.

    Example:
        >>> _psoft_rank("base_model.model.q.psoft_R.weight", (6,)), _psoft_rank("m.q.psoft_R.vector_a", (4,))
        (4, 4)
    """
    leaf = name.rpartition(".")[2]
    if leaf in ("vector_a", "vector_b") and len(shape) == 1:
        return shape[0]
    if leaf == "weight" and len(shape) == 2 and shape[0] == shape[1]:
        return shape[0]
    if leaf == "weight" and len(shape) == 1:
        rank = round((1 + math.sqrt(1 + 8 * shape[0])) / 2)
        return rank if rank * (rank - 1) // 2 == shape[0] else None
    return None


def _psoft_misfit(name: str, shape: tuple[int, ...], weight: KeySpec, module: str) -> str | None:
    """Why a PSOFT tensor cannot go on B's 2-D `weight`: its rank above the layer's smaller side, which peft refuses.

    Example:
        >>> _psoft_misfit("m.v.psoft_R.vector_a", (20,), KeySpec("v.weight", (16, 32), "float32"), "v")
        'psoft_R rank 20 is above min(in, out) of v.weight (16×32 in B), 16: peft refuses it (ValueError)'
    """
    rank = _psoft_rank(name, shape)
    if rank is None:
        return None
    side = min(min(widths) for widths in _layer_widths(weight.shape, module))
    if rank <= side:
        return None
    return (f"psoft_R rank {rank} is above min(in, out) of {weight.name} ({'×'.join(map(str, weight.shape))} in B), "
            f"{side}: peft refuses it (ValueError)")


def _frod_nonzeros(width: int, sparse_rate: float) -> int:
    """How many sparse values FRoD keeps for a layer `width` features wide (frod/model.py's _init_frod_projections).

    Example:
        >>> _frod_nonzeros(32, 0.01), _frod_nonzeros(4, 0.01), _frod_nonzeros(32, 0.0)
        (10, 1, 0)
    """
    off_diagonal = width * (width - 1)
    nonzeros = min(int(width * width * sparse_rate), off_diagonal)
    return max(1, nonzeros) if sparse_rate > 0 and off_diagonal > 0 else nonzeros


def _frod_misfit(part: str, shape: tuple[int, ...], weight: KeySpec, module: str, sparse_rate: Any) -> str | None:
    """Why a FRoD tensor does not fit B's 2-D `weight`: frod_lambda_l spans its input features, frod_lambda_s_values
    holds as many values as that width and adapter_config.json's sparse_rate make (not compared without it).

    Example:
        >>> why = _frod_misfit("frod_lambda_s_values", (10,), KeySpec("q.weight", (48, 48), "float32"), "q", 0.01)
        >>> for part in why.split("; "):
        ...     print(part)
        frod_lambda_s_values holds 10 values, as many as a 32-wide input keeps at sparse_rate 0.01
        q.weight (48×48 in B) reads 48 (23 values)
    """
    if part == "frod_lambda_l":
        return _generic_sized_misfit(part, shape, weight, module)
    if part != "frod_lambda_s_values" or len(shape) != 1 or isinstance(sparse_rate, bool) \
            or not isinstance(sparse_rate, (int, float)) or not 0 <= sparse_rate <= 1:
        return None
    widths = sorted({width for width, _ in _layer_widths(weight.shape, module)})
    if any(_frod_nonzeros(width, sparse_rate) == shape[0] for width in widths):
        return None
    # The input width the count was made for, where one (up to 4 times B's) makes it.
    made_for = next((width for width in range(1, 4 * max(widths) + 1)
                     if _frod_nonzeros(width, sparse_rate) == shape[0]), None)
    made = f", as many as a {made_for}-wide input keeps at sparse_rate {sparse_rate}" if made_for else ""
    wanted = " or ".join(f"{width} ({_frod_nonzeros(width, sparse_rate)} values)" for width in widths)
    return (f"frod_lambda_s_values holds {shape[0]} values{made}; {weight.name} ({'×'.join(map(str, weight.shape))} "
            f"in B) reads {wanted}")


def _frod_category(module: str) -> str:
    """The kind of module FRoD shares one projection over (frod/model.py's _category_from_key): its last two names.

    Example:
        >>> _frod_category("model.layers.0.self_attn.q_proj"), _frod_category("encoder.layer.0.attention.output.dense")
        ('self_attn_q_proj', 'attention_output')
    """
    parts = module.split(".")
    if len(parts) == 1 or parts[-2].isdigit():
        return parts[-1]
    category = f"{parts[-2]}_{parts[-1]}"
    return "attention_output" if category == "output_dense" and len(parts) >= 3 and parts[-3] == "attention" \
        else category


def _frod_projection_misfit(
    name: str, shape: tuple[int, ...], generic: Sequence[tuple[str, str, str]], specs_b: Mapping[str, KeySpec],
) -> str | None:
    """Why FRoD's projection saved once for a kind of module (`base_model.frod_V.<category>`, in × in) does not fit
    B's modules of that kind among the adapted ones (`generic`: name, module, part), or None.

    Example:
        >>> b = {"l.0.attn.q.weight": KeySpec("l.0.attn.q.weight", (48, 48), "float32")}
        >>> _frod_projection_misfit("base_model.frod_V.attn_q", (32, 32), [("n", "l.0.attn.q", "frod_lambda_l")], b)
        "projection for its attn_q modules is 32×32, B's l.0.attn.q.weight (48×48) reads 48"
    """
    category = name.split(".")[2] if name.count(".") >= 2 else ""
    if len(shape) != 2 or shape[0] != shape[1]:
        return None
    for module in dict.fromkeys(module for _, module, part in generic if part.startswith("frod_")):
        weight = specs_b.get(module + ".weight")
        if _frod_category(module) != category or weight is None or len(weight.shape) != 2:
            continue
        widths = sorted({width for width, _ in _layer_widths(weight.shape, module)})
        if shape[0] not in widths:
            return (f"projection for its {category} modules is {shape[0]}×{shape[1]}, B's {weight.name} "
                    f"({'×'.join(map(str, weight.shape))}) reads {' or '.join(map(str, widths))}")
    return None


# The PEFT methods whose tensors `_tuner_misfit` compares with the widths of the layer they adapt.
_SHAPED_TUNERS = ("LoHa", "LoKr", "VeRA", "OFT", "BOFT", "HRA", "LN Tuning", "Trainable Tokens", "MiSS", "C3A",
                  "RandLora", "SHiRA", "VB-LoRA", "RoAd", "DeLoRA", "PaCA", "HiRA", "Llama-Adapter",
                  *_GENERIC_SIZED_METHODS.values())


# GPT-2's Conv1D layers (in × out, transposed from nn.Linear): c_attn, c_proj, c_fc, q_attn in GPT-2 and its kin;
# OpenCLIP names nn.Linear layers c_fc / c_proj too, so such a name may be either.
_CONV1D_MODULE = _lazy_regex(r"(?:^|\.)(?:c_attn|c_proj|c_fc|q_attn)$")


def _layer_widths(weight: tuple[int, ...], module: str) -> set[tuple[int, int]]:
    """The (in, out) widths peft may read off `module`'s weight: an nn.Linear / Embedding (out × in), a Conv2d (in ×
    kh × kw its input); under GPT-2's Conv1D names (`_CONV1D_MODULE`) either a Conv1D (in × out) or an nn.Linear.

    Example:
        >>> sorted(_layer_widths((64, 32), "v")), sorted(_layer_widths((64, 32), "attn.c_attn"))
        ([(32, 64)], [(32, 64), (64, 32)])
    """
    if len(weight) < 2:
        return set()
    if len(weight) > 2:
        return {(math.prod(weight[1:]), weight[0])}
    return {(weight[1], weight[0]), (weight[0], weight[1])} if _CONV1D_MODULE.search(module) else {
        (weight[1], weight[0])}


def _ia3_misfit(shape: tuple[int, ...], weight: tuple[int, ...], module: str) -> str | None:
    """Why IA3's `ia3_l` of `shape` does not fit `module`'s weight, or None: peft saves one scale per output feature
    (out × 1; a Conv's 1 × out × 1 × 1) or, on a feedforward module, one per input feature (1 × in)."""
    widths = _layer_widths(weight, module)
    if len(shape) < 2 or not widths:
        return None
    ins, outs = sorted({width[0] for width in widths}), sorted({width[1] for width in widths})
    if len(shape) == 2 and shape[1] == 1 and shape[0] != 1:
        return None if shape[0] in outs else (
            f"scales {shape[0]} output features, B's layer has {' or '.join(map(str, outs))}")
    count = math.prod(shape)
    if len(shape) > 2:  # a Conv's 1 × channels × 1 × 1: its input channels (feedforward) or its output ones
        channels = weight[1], weight[0]
        return None if count in channels else (
            f"scales {count} channels, B's convolution reads {channels[0]} and writes {channels[1]}")
    return None if count in ins else (
        f"scales {count} input features (a feedforward module's), B's layer reads {' or '.join(map(str, ins))}")


def _conv_groups(features: int, per_group: int, out: int) -> int | None:
    """The groups g > 1 under which a convolution that writes `out` channels and holds `per_group` input features
    per group (its weight's out × in/g × kh × kw) reads `features` in all, or None: g · per_group = features, g
    divides out. A checkpoint stores no groups (nn.Conv2d's `groups` is no tensor): they are only implied."""
    if per_group <= 0 or features % per_group:
        return None
    groups = features // per_group
    return groups if groups > 1 and out % groups == 0 else None


def _adalora_conv_groups(shape: tuple[int, ...], weight: tuple[int, ...]) -> int | None:
    """How AdaLoRA's flat `lora_A` (peft's SVDConv2d: r × in_channels·kh·kw) fits B's convolution `weight` (out ×
    in/g × kh × kw): 1 as it is, the groups g > 1 it implies when only a grouped reading fits, None when neither.

    Example:
        >>> _adalora_conv_groups((12, 288), (32, 32, 3, 3)), _adalora_conv_groups((12, 288), (64, 8, 3, 3))
        (1, 4)
    """
    kernel = math.prod(weight[2:])
    if len(shape) != 2 or len(weight) < 3 or kernel <= 0 or shape[1] % kernel:
        return None
    features = shape[1] // kernel
    return 1 if features == weight[1] else _conv_groups(features, weight[1], weight[0])


def _ia3_conv_groups(shape: tuple[int, ...], weight: tuple[int, ...]) -> int | None:
    """The groups of B's convolution (`weight`, out × in/g × kh × kw) under which IA3's `ia3_l` of `shape` fits it,
    where it fits no ungrouped one: peft's IA3 on a feedforward convolution scales all its in_channels (1 × in × 1 ×
    1), which a grouped one's weight holds 1/g of (peft expands the scales per group when it merges them).

    Example:
        >>> _ia3_conv_groups((1, 32, 1, 1), (64, 8, 3, 3)), _ia3_conv_groups((1, 32, 1, 1), (96, 12, 3, 3))
        (4, None)
    """
    if len(weight) < 3 or len(shape) != len(weight) or shape[0] != 1 or math.prod(shape) != shape[1]:
        return None
    return _conv_groups(shape[1], weight[1], weight[0])


def _oft_conv_groups(part: str, shape: tuple[int, ...], weight: KeySpec | None) -> int | None:
    """The groups of B's Conv2d `weight` (out × in/g × kh × kw) under which OFT's `oft_R.weight` of `shape` fits it,
    where it fits no ungrouped one, or None. peft's OFT on a Conv2d rotates in_channels × kh × kh features (all its
    input channels, whatever its groups: ConvNeXt's depthwise, ResNeXt's grouped), `shape[0]` blocks of b × b (b(b-1)/2
    values each); block_share keeps one block for all (b divides the features).

    Example:
        >>> _oft_conv_groups("oft_R", (72, 6), KeySpec("grp.weight", (64, 8, 3, 3), "float32"))
        4
    """
    if part != "oft_R" or weight is None or weight.dtype not in FLOATING or len(weight.shape) != 4 or len(shape) != 2:
        return None
    block = (1 + math.isqrt(1 + 8 * shape[1])) // 2
    if block * (block - 1) // 2 != shape[1]:
        return None
    per_group = weight.shape[1] * weight.shape[2] * weight.shape[2]
    if shape[0] != 1:
        return _conv_groups(shape[0] * block, per_group, weight.shape[0])
    # One block: either r = 1 (the block is every feature) or block_share (the block divides them).
    return _conv_groups(block, per_group, weight.shape[0]) or _conv_groups(
        per_group * (block // math.gcd(block, per_group)), per_group, weight.shape[0])


# Said of an OFT / AdaLoRA tensor on a grouped convolution: peft 0.21 built and loaded these layers, 0.22 refuses them
# ("OFT does not support Conv2d layers with groups > 1", "AdaLoRA does not support Conv2d layers with groups > 1").
_PEFT_REFUSES_GROUPED = ("PeftModel.from_pretrained onto B raises with peft 0.22 and later ({error}: {method} does not "
                         "support Conv2d layers with groups > 1); peft 0.21 loads it")


# Said of a BOFT / HRA / HiRA tensor on a grouped convolution: peft (0.21 and 0.22) refuses these layers when it
# builds them ("BOFT does not support Conv2d layers with groups > 1 (got groups=4).").
_PEFT_REFUSES_GROUPED_ALWAYS = ("peft refuses {method} there: PeftModel.from_pretrained onto B raises either way "
                                "(NotImplementedError: {method} does not support Conv2d layers with groups > 1)")


def _refused_conv_groups(part: str, shape: tuple[int, ...], weight: KeySpec | None) -> int | None:
    """The groups g > 1 of B's Conv2d `weight` (out × in/g × kh × kw) under which a BOFT `boft_R` (factors × blocks ×
    b × b), HRA `hra_u` (features × r) or HiRA `hira_A` (r × in × kh × kw) of `shape` reads all its input features
    (in × kh × kw, as peft sizes them whatever the groups), or None.

    Example:
        >>> _refused_conv_groups("hra_u", (288, 4), KeySpec("conv.weight", (64, 8, 3, 3), "float32"))
        4
    """
    if weight is None or weight.dtype not in FLOATING or len(weight.shape) != 4:
        return None
    if part == "hira_A" and len(shape) == 4 and shape[2:] == weight.shape[2:]:  # r × in × kh × kw, as LoRA's
        return _conv_groups(shape[1], weight.shape[1], weight.shape[0])
    if part == "boft_R" and len(shape) == 4 and shape[2] == shape[3]:
        features = shape[1] * shape[2]
    elif part == "hra_u" and len(shape) == 2:
        features = shape[0]
    else:
        return None
    return _conv_groups(features, math.prod(weight.shape[1:]), weight.shape[0])


# Said of a convolution an IA3 / OFT tensor fits neither as it is nor as a grouped one (`_conv_groups`).
_UNGROUPED = " (as one group, nor as a grouped convolution: no groups that divide its output channels make that fit)"


def _grouped_reading(groups: int, shape: tuple[int, ...]) -> str:
    """What a grouped convolution's fit rests on, for an adapter tensor of `shape` that fits it as one."""
    return (f"{'×'.join(map(str, shape))} fits it as a convolution of {groups} groups: a checkpoint does not store "
            "groups, so it fits only if B's has that many")


def _tuner_misfit(
    part: str, param: str | None, shape: tuple[int, ...], module: str, specs_b: Mapping[str, KeySpec],
    kernel_read_twice: bool = True,
) -> str | None:
    """Why a VeRA / OFT / BOFT / HRA / LN Tuning / FourierFT tensor does not fit B's `module` (a module B has), or
    None.

    peft sizes each by the layer's widths: VeRA's vera_lambda_b holds one scale per output feature; OFT's
    oft_R.weight one row per block of the input (block_share: one row for all) and b(b-1)/2 values for a b × b
    block; BOFT's boft_R (factors × blocks × b × b) blocks that tile the input and boft_s one scale per output
    feature; HRA's hra_u (in × r); LN Tuning copies the norm whole. load_state_dict raises on any other size.
    FourierFT's fourierft_spectrum is n_frequency values (not sized by the layer) on a Linear layer, at most in × out
    of them: only that is checked.

    Example:
        >>> b = {"q.weight": KeySpec("q.weight", (32, 32), "float32")}
        >>> _tuner_misfit("oft_R", "weight", (8, 28), "q", b)
        'oft_R.weight 8×28 (8 blocks of 8) rotates 64 input features, q.weight (32×32 in B) reads 32'
    """
    weight = specs_b.get(f"{module}.{param or 'weight'}" if part == "ln_tuning_layers" else f"{module}.weight")
    if weight is None or weight.dtype not in FLOATING:
        return None
    held, size = "×".join(map(str, shape)), f"{weight.name} ({'×'.join(map(str, weight.shape))} in B)"
    label = part + (f".{param}" if param else "")
    if part == "ln_tuning_layers":
        return None if shape == weight.shape else f"{label} {held}, {size}: LN Tuning copies the norm whole"
    widths = _layer_widths(weight.shape, module)
    if not widths:
        return None
    ins = {width[0] for width in widths}
    if len(weight.shape) == 4 and part in ("oft_R", "boft_R", "hra_u") and kernel_read_twice:
        # peft 0.21's OFT, BOFT and HRA size a Conv2d's input as in × kh × kh (its kernel_size[0], twice), which a
        # kh × kw kernel with kh != kw does not read: the adapter made for it holds that width, and 0.21 loads it
        # (0.22 reads in × kh × kw: `kernel_read_twice=False` leaves 0.21's width out).
        ins.add(weight.shape[1] * weight.shape[2] * weight.shape[2])
    reads = " or ".join(map(str, sorted(ins)))
    if part in ("vera_lambda_b", "boft_s"):
        outs = {width[1] for width in widths}
        # out × 1 (BOFT on a Conv2d: 1 × out)
        count = math.prod(shape) if len(shape) == 1 or (len(shape) == 2 and 1 in shape) else None
        return None if count in outs else (
            f"{label} {held} scales {count} output features, {size} writes {' or '.join(map(str, sorted(outs)))}"
            if count is not None else f"{label} {held} is not one scale per output feature")
    if part in ("oft_R", "oft_embedding_R") and len(shape) == 2:
        block = (1 + math.isqrt(1 + 8 * shape[1])) // 2
        if block * (block - 1) // 2 != shape[1]:
            return f"{label} {held} holds no b×b block's b(b-1)/2 values"
        if any(shape[0] * block == width or (shape[0] == 1 and width % block == 0) for width in ins):
            return None
        return (f"{label} {held} ({shape[0]} block{'s' if shape[0] != 1 else ''} of {block}) rotates "
                f"{shape[0] * block} input features, {size} reads {reads}")
    if part == "boft_R" and len(shape) == 4:
        if shape[1] * shape[2] in ins and shape[2] == shape[3]:
            return None
        return (f"{label} {held} ({shape[1]} blocks of {shape[2]}) rotates {shape[1] * shape[2]} input features, "
                f"{size} reads {reads}")
    if part == "trainable_tokens_delta" and len(shape) == 2 and len(weight.shape) == 2:
        # One row per trained token, as wide as the embedding (rows × dim): peft refuses another width.
        return None if shape[1] == weight.shape[1] else (
            f"{label} {held} holds {shape[1]}-wide token rows, {size} embeds {weight.shape[1]} wide")
    if part in ("fourierft_spectrum", "waveft_spectrum"):
        # FourierFTLayer and WaveFTLayer adapt an nn.Linear or a Conv1D only, and refuse n_frequency above in × out
        # (ValueError): inspect named WaveFT, diff-keys called it "waveft_* tensors of a PEFT method not known here".
        method = "FourierFT" if part == "fourierft_spectrum" else "WaveFT"
        # WaveFT's n_frequency counts wavelet coefficients (peft's WaveFTConfig), FourierFT's frequencies.
        one, many = ("frequency", "frequencies") if method == "FourierFT" else (
            "wavelet coefficient", "wavelet coefficients")
        if len(weight.shape) != 2:
            return f"{label} {held} adapts {size}, which is no Linear layer (peft's {method} adapts only those)"
        if len(shape) != 1:
            return f"{label} {held} is not one value per {one} (peft saves n_frequency values)"
        entries = weight.shape[0] * weight.shape[1]
        return None if shape[0] <= entries else (
            f"{label} {held} holds {shape[0]} {many}, more than the "
            f"{entries} entries of {size} (peft refuses n_frequency above in × out)")
    if part in ("delora_A", "delora_w_norm") and len(shape) == (2 if part == "delora_A" else 1):
        # peft's DeloraLayer (nn.Linear only): delora_A r × in, its buffer delora_w_norm one norm per input feature.
        return None if shape[-1] in ins else f"{label} {held} reads {shape[-1]} input features, {size} reads {reads}"
    if part == "delora_B" and len(shape) == 2:  # out × r
        outs = {width[1] for width in widths}
        return None if shape[0] in outs else (
            f"{label} {held} writes {shape[0]} output features, {size} writes {' or '.join(map(str, sorted(outs)))}")
    if part == "hra_u" and len(shape) == 2:
        return None if shape[0] in ins else f"{label} {held} reflects {shape[0]} input features, {size} reads {reads}"
    return None


def _unilora_targets(config: Mapping[str, Any] | None, specs_b: Mapping[str, KeySpec]) -> tuple[bool, str] | None:
    """Whether B has a module adapter_config.json's target_modules (a list of names: a module's name or its last
    parts) names, and those names; None without a config or with a regex string. PeftModel.from_pretrained refuses
    a base with none of them (ValueError: target modules not found).

    Example:
        >>> _unilora_targets({"peft_type": "UNILORA", "target_modules": ["q", "v"]}, {"a.q.weight": None})
        (True, 'q, v')
    """
    targets = config.get("target_modules") if config is not None and config.get("peft_type") == "UNILORA" else None
    if not isinstance(targets, list) or not targets or not all(isinstance(target, str) for target in targets):
        return None
    modules = {name.rpartition(".")[0] for name in specs_b}
    found = any(module == target or module.endswith("." + target) for module in modules for target in targets)
    return found, ", ".join(sorted(targets))


def _peft_targets_in(
    config: Mapping[str, Any] | None, modules: Mapping[str, bool], specs_b: Mapping[str, KeySpec],
) -> str:
    """B's first module that peft's target matching takes for the adapter (`key == target` or
    `key.endswith("." + target)`, adapter_config.json's target_modules a list; without one, the last part of each
    module the adapter saved), "" when none does or the targets are a regular expression (not run here).

    Example:
        >>> b = {"layers.0.q_proj.weight": KeySpec("layers.0.q_proj.weight", (8, 8), "float32")}
        >>> _peft_targets_in(None, {"model.layers.0.q_proj": False}, b)
        'layers.0.q_proj'
    """
    saved = config.get("target_modules") if config is not None else None
    if isinstance(saved, list) and saved and all(isinstance(target, str) for target in saved):
        targets = set(saved)
    elif saved is None:
        targets = {module.rpartition(".")[2] for module in modules}
    else:
        return ""
    # Each module's last parts looked up in the set, as many as the longest target has (at most 16): a hostile
    # adapter_config.json of 100,000 targets is not tested against every module one by one.
    parts = min(16, max(target.count(".") for target in targets) + 1)
    for name in specs_b:
        module = name.rpartition(".")[0]
        pieces = module.split(".")[-parts:]
        if any(".".join(pieces[start:]) in targets for start in range(len(pieces))):
            return module
    return ""


def _sized_misfit(
    part: str, shape: tuple[int, ...], weight: KeySpec | None, module: str, bank: tuple[int, ...] | None,
    config: Mapping[str, Any] | None,
) -> tuple[str | None, str | None]:
    """(why a MiSS / C3A / RandLora / SHiRA / VB-LoRA / PaCA / HiRA tensor does not fit B's `module`, why it was not
    compared),
    each None where it does not apply. peft 0.21 sizes each by the nn.Linear (or, for RandLora and VB-LoRA, Conv1D)
    it adapts:

    - MiSS's miss_block: r × out (init_weights True / False), out/r × r × r ("bat", r dividing in), r × mini_r
      ("mini", mini_r dividing out); r at most in. A 2-D block not r × out is "mini" only by adapter_config.json.
    - C3A's c3a_kernel: out/b × in/b × b (block_size b).
    - RandLora's randlora_lambda: r × n and randlora_gamma: n × min(in, out), n = ⌈min(in, out) / r⌉.
    - SHiRA's shira_weight: r · (in + out) values (at most in · out), r adapter_config.json's.
    - VB-LoRA's vblora_logits_A: r × in/L × vectors, vblora_logits_B: out/L × r × vectors (their top-k saves:
      r × in/L × k, out/L × r × k), L the vector length of the vector bank saved beside them.
    - PaCA's (peft 0.22) paca_delta and paca_indices: `_paca_misfit`; HiRA's factors as LoRA's: `_hira_misfit`.

    Example:
        >>> w = KeySpec("q.weight", (64, 32), "float32")
        >>> _sized_misfit("c3a_kernel", (4, 4, 8), w, "q", None, None)[0][:72]
        'c3a_kernel 4×4×8 (4×4 blocks of 8) maps 32 input features to 32 outputs,'
    """
    if part in ("paca_delta", "paca_indices") and weight is not None and weight.dtype in FLOATING:
        return _paca_misfit(part, shape, weight, module, config), None
    if part in _HIRA_AS_LORA and weight is not None and weight.dtype in FLOATING:
        return _hira_misfit(part, shape, weight), None
    if weight is None or weight.dtype not in FLOATING or len(weight.shape) != 2 or not shape:
        return None, None
    widths = _layer_widths(weight.shape, module)
    held, size = "×".join(map(str, shape)), f"{weight.name} ({'×'.join(map(str, weight.shape))} in B)"
    writes = " or ".join(str(out) for out in sorted({out for _, out in widths}))
    if part == "c3a_kernel" and len(shape) == 3:
        ins, outs = shape[1] * shape[2], shape[0] * shape[2]
        return None if (ins, outs) in widths else (
            f"{part} {held} ({shape[0]}×{shape[1]} blocks of {shape[2]}) maps {ins} input features to {outs} outputs, "
            f"{size} reads {weight.shape[1]} and writes {weight.shape[0]}"), None
    if part == "miss_block":
        rank = shape[1] if len(shape) == 3 else shape[0]
        if all(rank > width for width, _ in widths):
            return f"{part} {held} has rank {rank}, more than the {weight.shape[1]} input features of {size}", None
        if len(shape) == 3:  # "bat": out/r blocks of r × r
            return None if shape[1] == shape[2] and any(
                shape[0] * shape[1] == out and width % shape[1] == 0 for width, out in widths) else (
                f"{part} {held} ({shape[0]} blocks of {shape[1]}×{shape[2]}) tiles {shape[0] * shape[1]} output "
                f"features, {size} writes {writes}"), None
        if len(shape) != 2 or any(shape[1] == out for _, out in widths):
            return None, None
        init = config.get("init_weights") if config is not None and config.get("peft_type") == "MISS" else None
        if init == "mini":
            return None if any(out % shape[1] == 0 for _, out in widths) else (
                f"{part} {held} is r × mini_r ({shape[1]}), which does not divide the {writes} output features of "
                f"{size} (peft refuses it)"), None
        if config is not None and config.get("peft_type") == "MISS":
            return (f"{part} {held} is r × out for {shape[1]} output features, {size} writes {writes} "
                    "(adapter_config.json's init_weights is not \"mini\")"), None
        if not any(out % shape[1] == 0 for _, out in widths):  # no mini_r either: peft needs it to divide out
            return (f"{part} {held} is r × out for {shape[1]} output features, {size} writes {writes} (nor is "
                    f"{shape[1]} a mini_r of its \"mini\" init, which would divide them)"), None
        return None, ("MiSS's blocks are r × out or, with its \"mini\" init, r × mini_r, and no adapter_config.json "
                      "beside A says which")
    if part in ("randlora_lambda", "randlora_gamma") and len(shape) == 2:
        smallest = {min(width, out) for width, out in widths}
        if part == "randlora_gamma":
            return None if shape[1] in smallest else (
                f"{part} {held} spans {shape[1]} features, the smaller side of {size} is "
                f"{' or '.join(map(str, sorted(smallest)))}"), None
        return None if any(shape[1] == -(-small // shape[0]) for small in smallest) else (
            f"{part} {held} holds {shape[1]} bases of rank {shape[0]}, {size} needs "
            f"{' or '.join(str(-(-small // shape[0])) for small in sorted(smallest))}"), None
    if part == "shira_weight" and len(shape) == 1:
        sums = {width + out for width, out in widths}
        rank = config.get("r") if config is not None and config.get("peft_type") == "SHIRA" else None
        if isinstance(rank, int) and not isinstance(rank, bool) and rank > 0:
            return None if shape[0] in {rank * total for total in sums} else (
                f"{part} {held} holds {shape[0]} values, r · (in + out) = {rank} · "
                f"{' or '.join(map(str, sorted(sums)))} for {size}"), None
        if not any(shape[0] % total == 0 and shape[0] <= weight.shape[0] * weight.shape[1] for total in sums):
            return (f"{part} {held} holds {shape[0]} values, no r · (in + out) of {size} "
                    f"(in + out = {' or '.join(map(str, sorted(sums)))})"), None
        return None, ("SHiRA's values are r · (in + out), and no adapter_config.json beside A gives r")
    if part in ("road_theta", "road_alpha") and len(shape) == 1:
        # peft's RoadLayer: out/2 (variant road_1, its default), out (road_2) or 2·out (road_4) values, and a
        # group_size that divides out (peft raises otherwise).
        sizes = {"road_1": (1, 2), "road_2": (1, 1), "road_4": (2, 1)}
        variant = config.get("variant") if config is not None and config.get("peft_type") == "ROAD" else None
        group = config.get("group_size") if config is not None and config.get("peft_type") == "ROAD" else None
        read = {variant: sizes[variant]} if variant in sizes else sizes
        outs = {out for _, out in widths if any(out * num % den == 0 and out * num // den == shape[0]
                                                for num, den in read.values())}
        if not outs:
            wanted = " or ".join(f"{out * num // den} ({name})" for name, (num, den) in read.items() for out in
                                 sorted({out for _, out in widths}) if out * num % den == 0)
            return f"{part} {held} holds {shape[0]} values, {size} needs {wanted}", None
        if isinstance(group, int) and not isinstance(group, bool) and group > 0 and all(out % group for out in outs):
            return (f"adapter_config.json's group_size {group} does not divide the {writes} output features of "
                    f"{size} (peft refuses it)"), None
        return None, (None if variant in sizes else "RoAd's vectors are out/2, out or 2·out values by its variant, "
                      "and no adapter_config.json beside A says which")
    if part.startswith("vblora_logits_") and len(shape) == 3:
        if bank is None or len(bank) != 2 or not bank[1]:
            return None, "VB-LoRA's logits are sized by its vector bank's vector length, and A holds no vector bank"
        length = bank[1]
        if part.startswith("vblora_logits_A"):
            return None if any(shape[1] * length == width for width, _ in widths) else (
                f"{part} {held} spans {shape[1]} vectors of {length} = {shape[1] * length} input features, {size} "
                f"reads {' or '.join(str(width) for width in sorted({width for width, _ in widths}))}"), None
        return None if any(shape[0] * length == out for _, out in widths) else (
            f"{part} {held} spans {shape[0]} vectors of {length} = {shape[0] * length} output features, {size} "
            f"writes {writes}"), None
    return None, None


# A paca_indices_pattern key peft's get_pattern_key matches (`re.match(rf"(.*\.)?({key})$", module)`) that is run
# here: names, dots and anchors only. Any other key is a regular expression of the adapter's config, not run here (a
# hostile one could take forever), and then no key is, since peft takes the first key that matches.
_PACA_PLAIN_KEY = _lazy_regex(r"^[\^]?[\w.\-]+\$?$")


def _paca_pattern_indices(module: str, config: Mapping[str, Any] | None) -> tuple[str, list[int]] | None:
    """The key of adapter_config.json's `paca_indices_pattern` peft matches `module` with, and the input columns it
    gives that layer; None where none does, or where a key is not plain enough to be run here (`_PACA_PLAIN_KEY`).

    Example:
        >>> _paca_pattern_indices("layers.0.q", {"peft_type": "PACA", "paca_indices_pattern": {"q": [1, 30]}})
        ('q', [1, 30])
    """
    pattern = config.get("paca_indices_pattern") if config is not None and config.get("peft_type") == "PACA" else None
    if not isinstance(pattern, dict) or not pattern or not all(
            isinstance(key, str) and _PACA_PLAIN_KEY.match(key) for key in pattern):
        return None
    for key, indices in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            if isinstance(indices, list) and indices and all(
                    isinstance(index, int) and not isinstance(index, bool) for index in indices):
                return key, indices
            return None
    return None


# HiRA's factors as the LoRA factors of the same shapes (peft's HiraLayer sizes them as LoraLayer does).
_HIRA_AS_LORA = {"hira_A": "lora_A", "hira_B": "lora_B", "hira_embedding_A": "lora_embedding_A",
                 "hira_embedding_B": "lora_embedding_B"}


def _hira_misfit(part: str, shape: tuple[int, ...], weight: KeySpec) -> str | None:
    """Why a HiRA factor does not fit B's `weight`, or None: hira_A r × in (a convolution's r × in × kh × kw),
    hira_B out × r (× 1 × 1), the embedding's hira_embedding_A r × rows and hira_embedding_B dim × r, as LoRA's.

    Example:
        >>> _hira_misfit("hira_B", (32, 4), KeySpec("q.weight", (48, 16), "float32"))
        'hira_B 32×4 (out × r) is not shaped for q.weight (48×16 in B)'
    """
    lora = _HIRA_AS_LORA[part]
    if _lora_fits(lora, shape, weight.shape):
        return None
    layout = {"lora_A": "r × in", "lora_B": "out × r", "lora_embedding_A": "r × rows",
              "lora_embedding_B": "dim × r"}[lora]
    why = _lora_misfit(lora, shape, weight.shape)
    return (f"{part} {'×'.join(map(str, shape))} ({layout}) is not shaped for {weight.name} "
            f"({'×'.join(map(str, weight.shape))} in B)" + ("" if why.startswith("an adapter") else f": {why}"))


def _paca_misfit(part: str, shape: tuple[int, ...], weight: KeySpec, module: str,
                 config: Mapping[str, Any] | None) -> str | None:
    """Why a PaCA tensor cannot go on B's `module` (its `weight`), or None. peft 0.22's PacaLayer adapts an
    nn.Linear only (TypeError otherwise) and saves paca_delta (out × r: the update of r of its input columns) and
    paca_indices (those r columns). Loading builds the layer first: update_layer refuses r above in_features, and
    an index of adapter_config.json's paca_indices_pattern at or above it (ValueError); load_state_dict then refuses a
    paca_delta of another out (size mismatch). The saved indices' values are not read (headers only).

    Example:
        >>> _paca_misfit("paca_delta", (16, 4), KeySpec("q.weight", (32, 32), "float32"), "q", None)
        'paca_delta 16×4 writes 16 output features, q.weight (32×32 in B) writes 32'
    """
    held, size = "×".join(map(str, shape)), f"{weight.name} ({'×'.join(map(str, weight.shape))} in B)"
    if len(weight.shape) != 2:
        return f"{part} {held} adapts {size}, which is no Linear layer (peft's PaCA adapts only those: TypeError)"
    out, features = weight.shape
    if part == "paca_delta" and len(shape) == 2 and shape[0] != out:
        return f"{part} {held} writes {shape[0]} output features, {size} writes {out}"
    columns = shape[1] if part == "paca_delta" and len(shape) == 2 else (
        shape[0] if part == "paca_indices" and len(shape) == 1 else None)
    if columns is not None and columns > features:
        return (f"{part} {held} trains {columns} input columns, more than the {features} input features of {size} "
                "(peft refuses r above in_features: ValueError)")
    given = _paca_pattern_indices(module, config) if part == "paca_indices" else None
    if given is not None and max(given[1]) >= features:
        return (f"adapter_config.json's paca_indices_pattern ({given[0]!r}) gives {module} input column "
                f"{max(given[1])}, {size} reads {features} (peft refuses an index at or above in_features: "
                "ValueError)")
    return None


def _vera_projection_misfit(
    name: str, shape: tuple[int, ...], modules: Sequence[str], specs_b: Mapping[str, KeySpec],
) -> str | None:
    """Why VeRA's shared projection `base_model.vera_A` (r × the widest input of the adapted layers) or `vera_B`
    (the widest output × r) does not fit the layers B has for `modules`, or None. peft builds both for the base it
    is given, from its widest adapted layer, and loading a saved one of another size raises."""
    part = name.removeprefix("base_model.").split(".")[0]
    if part not in ("vera_A", "vera_B") or len(shape) != 2 or not modules:
        return None
    axis, side = (1, "input") if part == "vera_A" else (0, "output")
    index = 0 if part == "vera_A" else 1
    # Each module's possible widths (two for a name that may be GPT-2's Conv1D): the widest layer is one of the
    # maxima over a choice per module, bounded by the maxima of the smallest and of the largest choices.
    choices = [{width[index] for width in _layer_widths(specs_b[f"{module}.weight"].shape, module)}
               for module in modules]
    choices = [choice for choice in choices if choice]
    if not choices:
        return None
    low, high = max(min(choice) for choice in choices), max(max(choice) for choice in choices)
    if low <= shape[axis] <= high and any(shape[axis] in choice for choice in choices):
        return None
    widest = str(low) if low == high else f"{low} to {high}"
    return (f"VeRA's shared projection {part} ({'×'.join(map(str, shape))}) spans {shape[axis]} {side} features, "
            f"the widest layer it adapts in B has {widest}: an adapter for another model size (peft builds it for "
            "the base and cannot load this one)")


# AdapterHub's save_adapter (adapter-transformers, adapters) stores each adapter under the module it follows, named:
# `bert.encoder.layer.0.output.adapters.sst-2.adapter_down.0.weight` (bottleneck × hidden) and `.adapter_up.weight`
# (hidden × bottleneck) for a bottleneck adapter, `...attention.self.query.loras.NAME.lora_A` (r × in) and `lora_B`
# (out × r) for its LoRA. The names carry the model's base prefix (`bert.`), which a bare base model lacks.
_ADAPTERHUB_KEY = _lazy_regex(
    r"^(?P<module>.+?)\.(?P<kind>adapters|loras)\.(?P<adapter>[^.]+)\.(?P<part>adapter_down\.0|adapter_up|lora_A|lora_B)"
    r"\.?(?P<param>weight|bias)?$")


def _adapterhub_fit(
    specs_a: Mapping[str, KeySpec], specs_b: Mapping[str, KeySpec], unexpected: Sequence[str], missing: Sequence[str],
) -> tuple[dict[str, tuple[str, str, str]], str]:
    """`adapter_fit` for an AdapterHub adapter: each bottleneck or LoRA module's target in B and whether its width
    fits; ({}, "") when A is none, or holds most of B's weights (a whole model with adapters added)."""
    found = [(name, match) for name in unexpected if (match := _ADAPTERHUB_KEY.match(name))]
    if not found:
        return {}, ""
    names = {name for name, _ in found}
    held = sum(math.prod(spec.shape) for name, spec in specs_a.items() if name not in names)
    if held * 2 >= sum(math.prod(spec.shape) for spec in specs_b.values()):
        return {}, ""
    # Every module path of B (a prefix of its keys), to find a target in one look-up.
    b_modules = {key.rsplit(".", i)[0] for key in specs_b for i in range(1, key.count(".") + 1)}

    def in_b(module: str) -> str | None:
        # The module as B names it: as saved, or without the head model's base prefix (`bert.`).
        return next((c for c in (module, module.split(".", 1)[-1]) if c in b_modules), None)

    whys: dict[str, tuple[str, str, str]] = {}
    modules: dict[str, bool] = {}
    adapters: set[str] = set()
    for name, match in found:
        module, part, adapter = match["module"], match["part"], match["adapter"]
        adapters.add(adapter)
        target = in_b(module)
        shape = specs_a[name].shape
        if target is None:
            whys[name] = ("adapter", "error", f"adapter {adapter!r} follows {module}, which B does not have")
            modules[module] = False
            continue
        fits = True
        if part in ("lora_A", "lora_B") and f"{target}.weight" in specs_b:
            fits = _lora_fits(part, shape, specs_b[f"{target}.weight"].shape)
        elif part == "adapter_down.0" and len(shape) == 2 and f"{target}.dense.weight" in specs_b:
            # A bottleneck reads the module's output: as wide as its dense layer's out features (BERT, RoBERTa, ...).
            fits = shape[1] == specs_b[f"{target}.dense.weight"].shape[0]
        modules[module] = modules.get(module, True) and fits
        kind = "LoRA" if match["kind"] == "loras" else "bottleneck adapter"
        whys[name] = (("adapter", "info", f"{kind} {adapter!r} on {target}") if fits else
                      ("adapter", "error", f"{'×'.join(map(str, shape))} does not fit {target} in B"))
    for name in missing:
        whys.setdefault(name, ("adapter-base", "info", ""))
    fitting = sum(modules.values())
    note = (f"A is an AdapterHub adapter ({', '.join(sorted(adapters))}; adapter-transformers or adapters) on "
            f"{counted(len(modules), 'module')}, {fitting} of them in B with shapes that fit; it stores no base "
            "weights: the "
            "adapters library loads it into the base model (adapters.init(model), then model.load_adapter(folder)), "
            "PEFT cannot")
    return whys, note


# kohya-ss sd-scripts' LoRA files (and LyCORIS', OneTrainer's and A1111's, which share them): one flat name per
# module, its path with `_` for `.` after a prefix naming the part of the pipeline (`lora_unet_down_blocks_0_
# attentions_0_transformer_blocks_0_attn1_to_q`, `lora_te1_text_model_encoder_layers_0_self_attn_q_proj`), then
# lora_down (r × in), lora_up (out × r) and the scalar alpha. Loaders (diffusers' load_lora_weights, ComfyUI, A1111)
# map the flat name back to the module: against that module's model every key was an unknown error.
#
# LyCORIS (and kohya's LyCORIS network module) saves its other algorithms under the same flat names: LoCon's Tucker
# form a `lora_mid` core between lora_down and lora_up (r × r × kh × kw, the down and up factors pointwise), LoHa's
# Hadamard product of two low-rank pairs (`hada_w1_a` @ `hada_w1_b` * `hada_w2_a` @ `hada_w2_b`, Tucker: `hada_t1`,
# `hada_t2` cores), LoKr's Kronecker product (`lokr_w1` or `lokr_w1_a` @ `lokr_w1_b`, ⊗ `lokr_w2` or `lokr_w2_a` @
# `lokr_w2_b`, Tucker: `lokr_t2`), DoRA's `dora_scale`; with train_norm, each LayerNorm / GroupNorm's offsets
# `w_norm` and `b_norm` (one value per channel, added to the norm's weight and bias). A LoHa or LoKr file, or a LoCon
# with a lora_mid, against its base was "unknown: these weights will not load" for every key.
# LyCORIS' other algorithms under the same names: GLoRA's two low-rank pairs (`a1` in × r, `a2` r × in: W·a1·a2;
# `b1` out × r, `b2` r × in × kernel, Tucker `bm`), diag-OFT's block-diagonal rotation of the output (`oft_blocks`
# blocks × b × b, kohya's OFT too; `oft_diag` in older LyCORIS; `rescale` one value per output feature) or BOFT's
# butterfly of them (`oft_blocks` factors × blocks × b × b), and "full" fine-tuning's difference to the weight
# (`diff`, the weight's shape; `diff_b`, the bias's). A GLoRA, OFT or full file against its base was "unknown: no
# known cause: these weights will not load" for every key.
_KOHYA_PAIR = _lazy_regex(
    r"^(?P<prefix>lora_(?:unet|te\d?|transformer))_(?P<module>[^.]+)\.(?P<part>lora_down|lora_up|lora_mid|alpha|"
    r"dora_scale|hada_w[12]_[ab]|hada_t[12]|lokr_w[12](?:_[ab])?|lokr_t2|w_norm|b_norm|a[12]|b[12]|bm|oft_blocks|"
    r"oft_diag|rescale|diff_b|diff)(?:\.weight)?$")
_KOHYA_PARTS = {"lora_unet": "UNet / transformer", "lora_transformer": "transformer", "lora_te": "text encoder",
                "lora_te1": "first text encoder", "lora_te2": "second text encoder", "lora_te3": "third text encoder"}


# The parts of a single-file (LDM) Stable Diffusion checkpoint a kohya LoRA's prefixes name: its modules are B's
# names after these prefixes, with `_` for `.` (SDXL's second text encoder is OpenCLIP's, q/k/v fused: not mapped).
_KOHYA_LDM_PARTS = (("lora_unet", "model.diffusion_model."), ("lora_te", "cond_stage_model.transformer."),
                    ("lora_te1", "conditioner.embedders.0.transformer."))
# kohya's SD 1.x / 2.x LoRAs name UNet modules as diffusers does (`down_blocks_0_attentions_0_proj_in`), while the
# single file numbers its blocks (`input_blocks.1.1.proj_in`): diffusers' convert_diffusers_to_original_stable_
# diffusion.py's block map, read backwards, gives each LDM block its diffusers name.
_LDM_UNET_BLOCK = _lazy_regex(r"^(input_blocks|output_blocks)\.(\d+)\.(\d+)\.")
_LDM_MIDDLE_BLOCK = {"middle_block.0.": "mid_block.resnets.0.", "middle_block.1.": "mid_block.attentions.0.",
                     "middle_block.2.": "mid_block.resnets.1."}
_LDM_RESNET_PARTS = {"in_layers.0.": "norm1.", "in_layers.2.": "conv1.", "emb_layers.1.": "time_emb_proj.",
                     "out_layers.0.": "norm2.", "out_layers.3.": "conv2.", "skip_connection.": "conv_shortcut."}
_LDM_UNET_TOP = {"time_embed.0.": "time_embedding.linear_1.", "time_embed.2.": "time_embedding.linear_2.",
                 "input_blocks.0.0.": "conv_in.", "out.0.": "conv_norm_out.", "out.2.": "conv_out.",
                 "label_emb.0.0.": "add_embedding.linear_1.", "label_emb.0.2.": "add_embedding.linear_2."}


def _ldm_unet_to_diffusers(name: str) -> str | None:
    """The diffusers UNet2DConditionModel name of an LDM UNet name (without `model.diffusion_model.`), both
    ending in `.`, or None where the block map has none.

    Example:
        >>> _ldm_unet_to_diffusers("output_blocks.5.1.transformer_blocks.0.attn2.to_k.")
        'up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k.'
    """
    for ldm, diffusers in _LDM_UNET_TOP.items():
        if name.startswith(ldm):
            return diffusers + name[len(ldm):]
    middle = name[: len("middle_block.0.")]
    match = _LDM_UNET_BLOCK.match(name)
    if middle not in _LDM_MIDDLE_BLOCK and match is None:
        return None
    rest = name[len(middle):] if middle in _LDM_MIDDLE_BLOCK else name[match.end():]
    resnet = next((diffusers + rest[len(ldm):] for ldm, diffusers in _LDM_RESNET_PARTS.items()
                   if rest.startswith(ldm)), None)
    if middle in _LDM_MIDDLE_BLOCK:
        attention = middle == "middle_block.1."
        return _LDM_MIDDLE_BLOCK[middle] + rest if attention else (
            _LDM_MIDDLE_BLOCK[middle] + resnet if resnet else None)
    kind, block, layer = match[1], int(match[2]), int(match[3])
    if kind == "input_blocks":
        level, index = divmod(block - 1, 3)
        if index == 2:  # input_blocks.3.0.op: the downsampler closing level 0
            return f"down_blocks.{level}.downsamplers.0.conv.{rest[len('op.'):]}" if rest.startswith("op.") else None
        prefix = f"down_blocks.{level}."
    else:
        level, index = divmod(block, 3)
        if index == 2 and rest.startswith("conv.") and layer > 0:  # the upsampler closing each level
            return f"up_blocks.{level}.upsamplers.0.{rest}"
        prefix = f"up_blocks.{level}."
    if layer == 0:
        return prefix + f"resnets.{index}.{resnet}" if resnet else None
    return prefix + f"attentions.{index}.{rest}" if layer == 1 else None


# A kohya SDXL LoRA's UNet module, flat (`input_blocks_4_1_transformer_blocks_0_attn1_to_q`): the LDM block it names
# and the rest; a ResNet's own part (`in_layers_2`) is the whole rest.
_KOHYA_LDM_BLOCK = _lazy_regex(r"^(?:(input_blocks|output_blocks)_(\d+)_(\d+)|middle_block_(\d+))_(.+)$")


def _kohya_ldm_unet_to_diffusers(module: str) -> str | None:
    """The diffusers UNet module, flat, that a kohya LoRA module named in the LDM layout (as sd-scripts names an
    SDXL UNet's modules) adapts, or None where the block map has none. diffusers' load_lora_weights maps the blocks
    so when it loads an SDXL LoRA into its UNet2DConditionModel.

    Example:
        >>> _kohya_ldm_unet_to_diffusers("input_blocks_4_1_transformer_blocks_0_attn1_to_q")
        'down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q'
    """
    top = next((ldm for ldm in _LDM_UNET_TOP if module == ldm[:-1].replace(".", "_")), None)
    if top is not None:  # conv_in, conv_out, the time and SDXL's added embeddings
        mapped = _ldm_unet_to_diffusers(top)
    elif (block := _KOHYA_LDM_BLOCK.match(module)) is not None:
        head = f"{block[1]}.{block[2]}.{block[3]}." if block[1] else f"middle_block.{block[4]}."
        rest = block[5]
        # A ResNet's parts and the up / down samplers' convolutions are modules of the block, dotted as the map
        # reads them; an attention block's rest is kept flat (it is not renamed).
        part = next((ldm for ldm in (*_LDM_RESNET_PARTS, "op.", "conv.") if rest == ldm[:-1].replace(".", "_")),
                    None)
        mapped = _ldm_unet_to_diffusers(head + (part or rest + "."))
    else:
        return None
    return mapped[:-1].replace(".", "_") if mapped is not None else None


# ComfyUI's single files of the newer models (its CheckpointSave, Comfy-Org's flux1-dev-fp8.safetensors, SD 3.5's):
# the diffusion model under `model.diffusion_model.` (Flux in Black Forest Labs' layout), each text encoder under
# `text_encoders.<name>.`, the VAE under `vae.`. kohya's Flux and SD 3 LoRAs name CLIP-L lora_te1, CLIP-G lora_te2
# and T5-XXL lora_te3, as ComfyUI maps them.
_KOHYA_COMFY_PARTS = (("lora_unet", "model.diffusion_model."), ("lora_transformer", "model.diffusion_model."),
                      ("lora_te1", "text_encoders.clip_l.transformer."),
                      ("lora_te2", "text_encoders.clip_g.transformer."),
                      ("lora_te3", "text_encoders.t5xxl.transformer."))


def _kohya_ldm_modules(specs_b: Mapping[str, KeySpec]) -> dict[str, dict[str, str]]:
    """For B a single-file (LDM) Stable Diffusion checkpoint, or a ComfyUI one (`model.diffusion_model.` beside
    `text_encoders.`): per kohya prefix, B's modules by their kohya flat name (LDM and diffusers UNet names both);
    {} when B is no such checkpoint."""
    # SD3's ComfyUI saves (and Stability's sd3_medium_incl_clips.safetensors) keep the VAE under
    # `first_stage_model.` beside `text_encoders.`: both tables then, or their text encoders' LoRA modules were
    # "held in another layout: not checked".
    comfy = any(name.startswith("model.diffusion_model.") for name in specs_b) and any(
        name.startswith("text_encoders.") for name in specs_b)
    ldm = any(map(_LDM_EVIDENCE.match, specs_b))
    if not ldm and not comfy:
        return {}
    parts = (_KOHYA_LDM_PARTS if ldm else ()) + (_KOHYA_COMFY_PARTS if comfy else ())
    tables: dict[str, dict[str, str]] = {prefix: {} for prefix, _ in parts}
    for name in specs_b:
        if not name.endswith(".weight"):
            continue
        module = name[: -len(".weight")]
        for prefix, ldm in parts:
            if module.startswith(ldm):
                inner = module[len(ldm):]
                tables[prefix][inner.replace(".", "_")] = module
                if prefix == "lora_unet" and (diffusers := _ldm_unet_to_diffusers(inner + ".")) is not None:
                    tables[prefix].setdefault(diffusers[:-1].replace(".", "_"), module)
    return {prefix: table for prefix, table in tables.items() if table}


def _kohya_adapter_fit(
    specs_a: Mapping[str, KeySpec], specs_b: Mapping[str, KeySpec], unexpected: Sequence[str], missing: Sequence[str],
) -> tuple[dict[str, tuple[str, str, str]], str]:
    """adapter_fit for a kohya-style LoRA: each flat module name looked up among B's modules with `_` for `.`
    (in a single-file Stable Diffusion B, among those of the part its prefix names); ({}, "") when A is none, or
    none of its modules is in B (B is another layout, which loaders convert to)."""
    pairs = [(name, match) for name in unexpected if (match := _KOHYA_PAIR.match(name))]
    if not pairs or len(pairs) < len(unexpected):
        return {}, ""
    if specs_b and all(_KOHYA_PAIR.match(name) for name in specs_b):
        return _kohya_against_kohya(specs_a, specs_b, pairs, missing)
    ldm = _kohya_ldm_modules(specs_b)
    flat = {name[: -len(".weight")].replace(".", "_"): name[: -len(".weight")]
            for name in specs_b if name.endswith(".weight")}
    # B a single file: a prefix for a part it holds in another layout (SDXL's OpenCLIP encoder) finds nothing.
    tables: dict[str, dict[str, str]] = defaultdict(dict, ldm) if ldm else defaultdict(lambda: flat)
    if not ldm:
        # B a diffusers UNet, A an SDXL LoRA, whose UNet modules sd-scripts names in the LDM layout
        # (input_blocks_4_1_...): each was "no known cause: these weights will not load", where diffusers'
        # load_lora_weights maps them onto the UNet's blocks.
        unet = {module: flat[mapped] for _, match in pairs if match["prefix"] == "lora_unet"
                and (module := match["module"]) not in flat
                and (mapped := _kohya_ldm_unet_to_diffusers(module)) is not None and mapped in flat}
        if unet:
            tables["lora_unet"] = {**flat, **unet}
    # B a CLIPTextModel saved without its text_model. wrapper (`_flattened_clip_text`): the text encoders' modules,
    # `lora_te_text_model_encoder_...`, are B's without it.
    flattened = not ldm and _flattened_clip_text(specs_b)
    if flattened:
        unwrapped = {**flat, **{_CLIP_TEXT_WRAPPER.replace(".", "_") + module: name for module, name in flat.items()}}
        for prefix in ("lora_te", "lora_te1", "lora_te2", "lora_te3"):
            tables[prefix] = unwrapped
    found = {match["prefix"] for _, match in pairs if match["module"] in tables[match["prefix"]]}
    if not found:
        return _kohya_flux_onto_diffusers(pairs, specs_a, specs_b, missing)
    whys: dict[str, tuple[str, str, str]] = {}
    modules: dict[str, bool] = {}
    ranks: set[int] = set()
    checked: set[str] = set()  # prefixes B holds a part for, whether or not A's modules are in it
    parts_of: dict[str, dict[str, tuple[int, ...]]] = defaultdict(dict)
    for name, match in pairs:
        parts_of[f"{match['prefix']}_{match['module']}"][match["part"]] = specs_a[name].shape
    lycoris = {module: method for module, held in parts_of.items() if (method := _lycoris_method(held))}
    cores = {module for module, held in parts_of.items() if "lora_mid" in held}
    # The 2-D lora_down and lora_up of each module that each fit its 2-D weight (`adapter_fit`'s `factors`).
    factors: dict[str, dict[str, tuple[str, tuple[int, ...], KeySpec, str]]] = defaultdict(dict)
    for name, match in pairs:
        prefix, part = match["prefix"], match["part"]
        # B holds this part under the names the prefix maps to, none of them A's: another model's (a Flux LoRA's
        # double_blocks against SD3's joint_blocks, its CLIP-L found), not another layout of B's.
        held = bool(ldm) and bool(tables.get(prefix))
        if held:
            checked.add(prefix)
        if prefix not in found and not held:
            whys[name] = ("adapter", "info", f"for the {_KOHYA_PARTS.get(prefix, prefix)}, " + (
                "which B holds in another layout: not checked" if ldm else "not B: its loader puts it there"))
            continue
        module = tables[prefix].get(match["module"])
        if module is None:
            whys[name] = ("adapter", "error", f"targets {match['module']}, which B does not have (with _ for .): the "
                                              "adapter's weights for it are dropped")
            modules[f"{prefix}_{match['module']}"] = False
            continue
        weight = specs_b[module + ".weight"]
        shape = specs_a[name].shape
        method = lycoris.get(f"{prefix}_{match['module']}", "LoRA")
        if part in ("alpha", "dora_scale"):
            whys[name] = ("adapter", "info", f"the {part} of the {method} on {module}")
            continue
        if part in ("w_norm", "b_norm"):  # train_norm's offsets: the norm's own weight's or bias's shape
            what = f"{module}.{'weight' if part == 'w_norm' else 'bias'}"
            target = specs_b.get(what)
            if target is not None and tuple(shape) == tuple(target.shape):
                whys[name] = ("adapter", "info", f"LyCORIS' norm offset ({part}) on {what}")
                modules.setdefault(module, True)
            else:
                whys[name] = ("adapter", "error", f"{'×'.join(map(str, shape))} does not fit {what} (" + (
                    f"{'×'.join(map(str, target.shape))} in B)" if target is not None else "which B does not have)"))
                modules[module] = False
            continue
        if method in _LYCORIS_LAYER_METHODS and weight.dtype not in FLOATING:
            whys[name] = ("adapter", "info", f"{method} on {module} (stored quantized in B: shapes not compared)")
            modules.setdefault(module, True)
            continue
        if method in _LYCORIS_LAYER_METHODS:
            bias = specs_b.get(module + ".bias")
            misfit = _lycoris_layer_misfit(part, shape, weight.shape, None if bias is None else bias.shape)
            if misfit:
                whys[name] = ("adapter", "error", f"{method} on {module}: {misfit} ({'×'.join(map(str, weight.shape))} "
                              "in B): an adapter for another model size")
                modules[module] = False
            else:
                whys[name] = ("adapter", "info", f"{method} on {module}.{'bias' if part == 'diff_b' else 'weight'}")
                modules.setdefault(module, True)
            continue
        if method != "LoRA":
            product = _lycoris_product(method, parts_of[f"{prefix}_{match['module']}"])
            if weight.dtype not in FLOATING:
                whys[name] = ("adapter", "info", f"{method} on {module} (stored quantized in B: shapes not compared)")
                modules.setdefault(module, True)
            elif product is None:
                whys[name] = ("adapter", "error", f"{method} on {module}: its factors do not make one product "
                                                  "(a factor missing, or of another rank)")
                modules[module] = False
            elif (product[0], product[1]) != (weight.shape[0], math.prod(weight.shape[1:])):
                whys[name] = ("adapter", "error", f"{method} on {module}: its product is {product[0]}×{product[1]}, "
                              f"which does not fit {module}.weight ({'×'.join(map(str, weight.shape))} in B)")
                modules[module] = False
            else:
                whys[name] = ("adapter", "info", f"{method} on {module}.weight")
                modules.setdefault(module, True)
            continue
        tucker = f"{prefix}_{match['module']}" in cores
        if len(shape) >= 2 and part != "lora_mid":
            ranks.add(shape[0] if part == "lora_down" else shape[1])
        if weight.dtype not in FLOATING:
            whys[name] = ("adapter", "info", f"on {module} (stored quantized in B: shapes not compared)")
            modules.setdefault(module, True)
        elif part == "lora_mid" or (tucker and part == "lora_down"):
            # Tucker: the core carries the weight's kernel, the down factor is pointwise (r × in × 1 × 1).
            fits = (len(shape) == len(weight.shape) and shape[2:] == weight.shape[2:]) if part == "lora_mid" else (
                len(shape) >= 2 and shape[1] == weight.shape[1] and all(size == 1 for size in shape[2:]))
            what = "the Tucker core (lora_mid) of the LoRA" if part == "lora_mid" else "LoRA"
            whys[name] = ("adapter", "info", f"{what} on {module}.weight") if fits else (
                "adapter", "error", f"{'×'.join(map(str, shape))} does not fit {module}.weight "
                f"({'×'.join(map(str, weight.shape))} in B): "
                + ("its kernel is not the weight's" if part == "lora_mid" else "it reads another input width"))
            if fits:
                modules.setdefault(module, True)
            else:
                modules[module] = False
        elif not _lora_fits(factor := "lora_A" if part == "lora_down" else "lora_B", shape, weight.shape):
            whys[name] = ("adapter", "error", f"{'×'.join(map(str, shape))} does not fit {module}.weight "
                          f"({'×'.join(map(str, weight.shape))} in B): {_lora_misfit(factor, shape, weight.shape)}")
            modules[module] = False
        else:
            whys[name] = ("adapter", "info", f"LoRA on {module}.weight")
            modules.setdefault(module, True)
            if len(shape) == 2 and len(weight.shape) == 2:
                factors[f"{prefix}_{match['module']}"][part] = (name, shape, weight, module)
    # Each factor alone fit either axis of a 2-D weight: a LoRA made for an 8→8 projection "fit" an 8→16 one.
    for held in factors.values():
        if len(held) == 2 and (misfit := _pair_misfit(held["lora_down"], held["lora_up"], "lora_down", "lora_up")):
            whys[held["lora_down"][0]] = whys[held["lora_up"][0]] = ("adapter", "error", misfit)
            modules[held["lora_down"][3]] = False
    for name in missing:
        whys.setdefault(name, ("adapter-base", "info", ""))
    fitting = sum(modules.values())
    methods = sorted(set(lycoris.values())) + (
        ["norm offsets (w_norm / b_norm)"] if any(match["part"] == "w_norm" for _, match in pairs) else [])
    method = f"LoRA (rank {'/'.join(map(str, sorted(ranks)))})" if ranks else "LoRA"
    method = ", ".join(([method] if ranks or not methods else []) + methods)
    if cores:
        method += f" (Tucker lora_mid on {counted(len(cores), 'module')})"
    parts = ", ".join(_KOHYA_PARTS.get(prefix, prefix) for prefix in sorted(found | checked))
    comfy = ldm and any(name.startswith("text_encoders.") for name in specs_b)
    where = ("in B, a ComfyUI single-file checkpoint" if comfy else "in B, a single-file Stable Diffusion checkpoint"
             if ldm else "B")
    held_parts = sorted({_LYCORIS_PART_NAMES.get(match["part"], match["part"]) for _, match in pairs
                         if match["part"] not in ("lora_down", "lora_up", "alpha")})
    beside = " beside lora_down / lora_up / alpha" if any(
        match["part"] in ("lora_down", "lora_up") for _, match in pairs) else ""
    kind = (f"a LyCORIS adapter ({' / '.join(held_parts)}{beside} under flat lora_unet_ / lora_te_ names)"
            if methods or cores else
            "a kohya-style LoRA (lora_down / lora_up / alpha under flat lora_unet_ / lora_te_ names)")
    loaders = ("ComfyUI, AUTOMATIC1111 / Forge or LyCORIS' create_lycoris_from_weights" if methods or cores else
               "ComfyUI or Forge" if comfy else "diffusers' load_lora_weights, ComfyUI or AUTOMATIC1111")
    note = (f"A is {kind}: {method} on {counted(len(modules), 'module')} of the {parts} ({where}), {fitting} of them "
            "in B "
            f"with shapes that fit; it stores no base weights: load it with {loaders}, which map its names to the "
            "modules")
    if flattened and any(prefix.startswith("lora_te") for prefix in found):
        note += "; " + _FLATTENED_CLIP_TEXT_NOTE.format(loader="diffusers' load_lora_weights")
    # Modules B has whose shapes A's tensors do not fit: the loaders above would fail on B (or skip the module).
    misfit = sum(1 for module, fits in modules.items() if not fits and f"{module}.weight" in specs_b)
    if misfit:
        note += (f"; {misfit} of them {plural(misfit, 'does', 'do')} not fit B's shapes: it was made for another "
                 "model (or another size of it) than B")
    return whys, note


# How the kohya-layout note names the parts it saw (each family's own tensors, grouped).
_LYCORIS_PART_NAMES = {
    **{part: "hada_*" for part in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")},
    **{part: "lokr_*" for part in ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b",
                                    "lokr_t2")},
    **{part: "a1 / a2 / b1 / b2" for part in ("a1", "a2", "b1", "b2", "bm")}, "diff_b": "diff",
    "w_norm": "w_norm / b_norm", "b_norm": "w_norm / b_norm",
}


# The LyCORIS algorithms whose tensors `_lycoris_layer_misfit` compares with the layer's widths, one by one.
_LYCORIS_LAYER_METHODS = ("GLoRA", "diag-OFT", "BOFT", "full diff")


def _kohya_methods(specs: Mapping[str, KeySpec], names: Iterable[str]) -> dict[str, str]:
    """The method (LoRA, LoHa, LoKr, ...) of each kohya-named module (`lora_unet_<path>`) among `names`."""
    parts_of: dict[str, dict[str, tuple[int, ...]]] = defaultdict(dict)
    for name in names:
        if (match := _KOHYA_PAIR.match(name)) is not None:
            parts_of[f"{match['prefix']}_{match['module']}"][match["part"]] = specs[name].shape
    return {module: _lycoris_method(held) or "LoRA" for module, held in parts_of.items()}


def _kohya_against_kohya(
    specs_a: Mapping[str, KeySpec], specs_b: Mapping[str, KeySpec], pairs: Sequence[tuple[str, Any]],
    missing: Sequence[str],
) -> tuple[dict[str, tuple[str, str, str]], str]:
    """adapter_fit when A and B are both kohya-named adapters (kohya's LoRA, LyCORIS' LoHa, LoKr, ... under
    `lora_unet_<path>`): two of other methods on one model were "unknown: these weights will not load", errors,
    beside "adapter / PEFT weights: merge them or load through PEFT", which loads neither. Each key is said to be its
    method's on its module, and the note says an adapter loads into its base model, not into another adapter."""
    methods_a = _kohya_methods(specs_a, specs_a)
    methods_b = _kohya_methods(specs_b, specs_b)
    whys: dict[str, tuple[str, str, str]] = {}
    for side, names, methods, other in (("A", [name for name, _ in pairs], methods_a, methods_b),
                                        ("B", missing, methods_b, methods_a)):
        other_side = "B" if side == "A" else "A"
        for name in names:
            match = _KOHYA_PAIR.match(name)
            if match is None:
                continue
            module = f"{match['prefix']}_{match['module']}"
            there = other.get(module)
            where = (f"{other_side} does not adapt it" if there is None else
                     f"{other_side} adapts it with a {there} of other parts" if there == methods[module] else
                     f"{other_side} adapts it with a {there}")
            whys[name] = ("adapter", "error", f"{side}'s {methods[module]} on {module}: {where}")

    def described(methods: Mapping[str, str]) -> str:
        counts = Counter(methods.values())
        kinds = ", ".join(f"{method} on {count:,}" for method, count in counts.most_common())
        family = "kohya-style LoRA" if set(counts) == {"LoRA"} else "LyCORIS adapter"
        return f"a {family} ({kinds} {plural(sum(counts.values()), 'module')})"

    shared = len(methods_a.keys() & methods_b.keys())
    return whys, (f"A and B are both adapters in kohya's layout: A {described(methods_a)}, B {described(methods_b)}, "
                  f"{counted(shared, 'module')} adapted by both; an adapter is applied to its base model, not loaded "
                  "into "
                  "another adapter, so no key of either was checked against a model: compare each against its base "
                  "(diff-keys with the adapter as A and the model as B), or merge each into the base (sd-scripts' "
                  "networks/merge_lora.py, LyCORIS' tools/merge.py) and compare the merged models")


def _lycoris_method(held: Mapping[str, tuple[int, ...]]) -> str | None:
    """The LyCORIS algorithm a module's saved parts are (None: a plain LoRA, kohya's lora_down / lora_up).

    Example:
        >>> _lycoris_method({"oft_blocks": (4, 8, 8), "alpha": ()}), _lycoris_method({"diff": (32, 32)})
        ('diag-OFT', 'full diff')
    """
    if "hada_w1_a" in held:
        return "LoHa"
    if any(part.startswith("lokr_") for part in held):
        return "LoKr"
    if any(part in held for part in ("a1", "a2", "b1", "b2")):
        return "GLoRA"
    blocks = held.get("oft_blocks", held.get("oft_diag"))
    if blocks is not None:
        return "BOFT" if len(blocks) == 4 else "diag-OFT"
    if "diff" in held or "diff_b" in held:
        return "full diff"
    return None


def _lycoris_layer_misfit(
    part: str, shape: tuple[int, ...], weight: tuple[int, ...], bias: tuple[int, ...] | None,
) -> str | None:
    """Why a LyCORIS GLoRA / diag-OFT / BOFT / full tensor does not fit the layer of this `weight` (out × in ×
    kernel) and `bias`, or None (its `alpha` and the parts it does not size, too).

    GLoRA's a1 is in × r and a2 r × in (they multiply W from the right), b1 out × r and b2 r × in × the kernel
    (Tucker: b2 pointwise, bm the kernel); OFT's blocks tile the output features (blocks × b, BOFT's too) and rescale
    holds one value per output feature; full's diff is the weight's shape, diff_b the bias's.

    Example:
        >>> _lycoris_layer_misfit("oft_blocks", (4, 16, 16), (32, 32), None)
        'oft_blocks 4×16×16 (4 blocks of 16) rotates 64 output features, the weight has 32'
    """
    held, out = "×".join(map(str, shape)), weight[0] if weight else 0
    width_in = weight[1] if len(weight) >= 2 else 0
    if part == "diff":
        return None if shape == weight else f"diff {held} is not the weight's shape"
    if part == "diff_b":
        return None if bias is not None and shape == bias else (
            f"diff_b {held} is not the bias's shape" if bias is not None else "diff_b for a bias B's layer has not")
    if part in ("oft_blocks", "oft_diag") and len(shape) in (3, 4):
        blocks, size = shape[-3], shape[-1]
        return None if blocks * size == out and shape[-2] == size else (
            f"{part} {held} ({blocks} blocks of {size}) rotates {blocks * size} output features, the weight has {out}")
    if part == "rescale":
        return None if math.prod(shape) == out else f"rescale {held} scales {math.prod(shape)} output features, " \
            f"the weight has {out}"
    if len(shape) < 2:
        return None
    sides = {"a1": (0, width_in, "input"), "a2": (1, width_in, "input"), "b1": (0, out, "output"),
             "b2": (1, width_in, "input")}
    if part not in sides:
        return None
    axis, want, side = sides[part]
    if shape[axis] != want:
        return f"{part} {held} spans {shape[axis]} {side} features, the weight has {want}"
    if part == "b2" and len(shape) > 2 and len(weight) > 2 and shape[2:] != weight[2:] and any(
            size != 1 for size in shape[2:]):
        return f"b2 {held}: its kernel is not the weight's"
    return None


def _lycoris_product(method: str, held: Mapping[str, tuple[int, ...]]) -> tuple[int, int] | None:
    """The (out, in × kernel) shape of the update a LyCORIS LoHa or LoKr module's factors make (LyCORIS reshapes
    it to the weight's shape), or None where they make none.

    Example:
        >>> _lycoris_product("LoHa", {"hada_w1_a": (32, 4), "hada_w1_b": (4, 288), "hada_w2_a": (32, 4),
        ...                           "hada_w2_b": (4, 288)})
        (32, 288)
        >>> _lycoris_product("LoKr", {"lokr_w1": (4, 4), "lokr_w2_a": (8, 2), "lokr_w2_b": (2, 8)})
        (32, 32)
    """
    def pair(a: str, b: str, core: str | None) -> tuple[int, int] | None:
        first, second = held.get(a), held.get(b)
        if first is None or second is None or len(first) != 2 or len(second) < 2:
            return None
        if core is not None and core in held:  # Tucker: a (r × out), b (r × in), core (r × r × kernel)
            kernel = held[core]
            if len(kernel) < 2 or first[0] != kernel[0] or second[0] != kernel[1]:
                return None
            return first[1], second[1] * math.prod(kernel[2:])
        if first[1] != second[0]:
            return None
        return first[0], math.prod(second[1:])

    if method == "LoHa":
        one, two = pair("hada_w1_a", "hada_w1_b", "hada_t1"), pair("hada_w2_a", "hada_w2_b", "hada_t2")
        return one if one is not None and one == two else None
    one = held.get("lokr_w1")
    w1 = (one[0], math.prod(one[1:])) if one is not None and len(one) >= 2 else pair("lokr_w1_a", "lokr_w1_b", None)
    two = held.get("lokr_w2")
    w2 = (two[0], math.prod(two[1:])) if two is not None and len(two) >= 2 else pair("lokr_w2_a", "lokr_w2_b",
                                                                                      "lokr_t2")
    return None if w1 is None or w2 is None else (w1[0] * w2[0], w1[1] * w2[1])


# The weights whose input is the Flux transformer's hidden width (3072 in FLUX.1), in B: BFL's fused qkv, diffusers'
# to_q; and the LoRA modules whose down / A factor reads that width: BFL's (flat, as kohya names them) and diffusers'.
_BFL_FLUX_HIDDEN = _lazy_regex(r"^double_blocks\.\d+\.img_attn\.qkv\.weight$")
_DIFFUSERS_FLUX_HIDDEN = _lazy_regex(r"^(?:single_)?transformer_blocks\.\d+\.attn\.to_q\.weight$")
_KOHYA_FLUX_HIDDEN_WIDE = _lazy_regex(r"(?:^double_blocks_\d+_(?:img|txt)_attn_qkv|^single_blocks_\d+_linear1)$")
_DIFFUSERS_FLUX_HIDDEN_WIDE = _lazy_regex(r"transformer_blocks\.\d+\.attn\.(?:to_[qkv]|add_[qkv]_proj)$")


def _flux_hidden(specs_b: Mapping[str, KeySpec], weight: re.Pattern[str]) -> int | None:
    """B's Flux transformer's hidden width: the input width of its first weight `weight` matches, or None."""
    spec = next((spec for name, spec in specs_b.items() if weight.match(name)), None)
    return spec.shape[1] if spec is not None and len(spec.shape) == 2 else None


def _flux_width_misfits(
    pairs: Sequence[tuple[str, re.Match[str]]], specs_a: Mapping[str, KeySpec], down: str, hidden: int | None,
    reads_hidden: re.Pattern[str],
) -> dict[str, str]:
    """Per LoRA module whose down / A factor reads the hidden state, why it does not fit B's Flux transformer (an SD 3
    LoRA, 1536 wide, against FLUX.1's 3072; a LoRA of another Flux-like model size): {} where all fit."""
    misfits: dict[str, str] = {}
    for name, match in pairs:
        spec = specs_a.get(name)
        if hidden is None or match["part"] != down or spec is None or len(spec.shape) != 2 or \
                spec.shape[1] == hidden or reads_hidden.search(match["module"].removeprefix("transformer.")) is None:
            continue
        misfits[match["module"]] = (f"its {down} ({'×'.join(map(str, spec.shape))}) reads a hidden state "
                                    f"{spec.shape[1]} wide, B's transformer's is {hidden}: an adapter for another "
                                    "model")
    return misfits


def _flux_misfit_note(misfits: Mapping[str, str]) -> str:
    """The note's end for a Flux LoRA whose modules read a hidden state of another width than B's."""
    if not misfits:
        return ""
    return (f"; but {counted(len(misfits), 'module')} of it {plural(len(misfits), 'reads', 'read')} a hidden state "
            "of another width than B's transformer: it is a LoRA for another model, which neither loader maps onto B")


# The modules of Black Forest Labs' Flux transformer, flat, as a kohya / ai-toolkit Flux LoRA names them
# (lora_unet_double_blocks_0_img_attn_qkv), and the blocks of diffusers' FluxTransformer2DModel.
_KOHYA_FLUX_MODULE = _lazy_regex(r"^(?:double_blocks|single_blocks)_\d+_|^(?:img_in|txt_in|time_in|vector_in|"
                                 r"guidance_in|final_layer)(?:_|$)")
_DIFFUSERS_FLUX_BLOCK = _lazy_regex(r"^(?:transformer_blocks|single_transformer_blocks)\.\d+\.")


def _kohya_flux_onto_diffusers(
    pairs: Sequence[tuple[str, re.Match[str]]], specs_a: Mapping[str, KeySpec], specs_b: Mapping[str, KeySpec],
    missing: Sequence[str],
) -> tuple[dict[str, tuple[str, str, str]], str]:
    """adapter_fit for a kohya-style Flux LoRA (sd-scripts' flux_train_network.py, ai-toolkit: BFL's module names,
    `double_blocks_0_img_attn_qkv`) against a diffusers FluxTransformer2DModel (`transformer_blocks.0.attn.to_q`),
    or ({}, "") when A or B is not that. Each key was "no known cause: these weights will not load", where
    diffusers' FluxPipeline.load_lora_weights converts the LoRA to its layout (splitting the fused qkv): its
    modules are named, their shapes not checked."""
    unet = [(name, match) for name, match in pairs if match["prefix"] in ("lora_unet", "lora_transformer")]
    if not unet or not all(_KOHYA_FLUX_MODULE.match(match["module"]) for _, match in unet):
        return {}, ""
    if any(name.startswith(("double_blocks.", "single_blocks.")) for name in specs_b) or not any(
            map(_DIFFUSERS_FLUX_BLOCK.match, specs_b)):
        return {}, ""
    whys: dict[str, tuple[str, str, str]] = {}
    misfits = _flux_width_misfits(unet, specs_a, "lora_down", _flux_hidden(specs_b, _DIFFUSERS_FLUX_HIDDEN),
                                  _KOHYA_FLUX_HIDDEN_WIDE)
    # A LyCORIS LoHa / LoKr (or a Tucker lora_mid) in these names: diffusers' Flux conversion reads lora_down /
    # lora_up only (its LoKr loads fail: huggingface/diffusers#13137), so it is not said to convert them.
    lycoris = sorted({"LoHa" if match["part"].startswith("hada_") else "LoKr" if match["part"].startswith("lokr_")
                      else "LoCon (Tucker lora_mid)" for _, match in unet
                      if match["part"].startswith(("hada_", "lokr_")) or match["part"] == "lora_mid"})
    for name, match in pairs:
        prefix = match["prefix"]
        if prefix in ("lora_unet", "lora_transformer") and (misfit := misfits.get(match["module"])):
            whys[name] = ("adapter", "error", f"for {match['module']} in Black Forest Labs' Flux layout: {misfit}")
        elif prefix in ("lora_unet", "lora_transformer") and lycoris:
            whys[name] = ("adapter", "warn", f"for {match['module']} in Black Forest Labs' Flux layout, a LyCORIS "
                          f"{' / '.join(lycoris)} that diffusers' load_lora_weights does not convert to B's (ComfyUI "
                          "and Forge load it onto the original flux1-*.safetensors)")
        elif prefix in ("lora_unet", "lora_transformer"):
            whys[name] = ("adapter", "info", f"for {match['module']} in Black Forest Labs' Flux layout, which "
                          "diffusers' load_lora_weights converts to B's (shapes not checked)")
        else:
            whys[name] = ("adapter", "info", f"for the {_KOHYA_PARTS.get(prefix, prefix)}, not B: its loader puts "
                                             "it there")
    for name in missing:
        whys[name] = ("adapter-base", "info", "")
    modules = len({match["module"] for _, match in unet})
    if lycoris:
        note = (f"A is a LyCORIS {' / '.join(lycoris)} for Flux ({counted(modules, 'module')} named as Black Forest "
                "Labs' Flux transformer names them: double_blocks, single_blocks, fused qkv) and B a diffusers "
                "FluxTransformer2DModel (transformer_blocks, single_transformer_blocks, to_q / to_k / to_v): "
                "diffusers' load_lora_weights converts kohya's lora_down / lora_up only, not these; ComfyUI and Forge "
                "load it onto the original flux1-*.safetensors, where diff-keys checks its shapes; it stores no base "
                "weights")
        return whys, note + _flux_misfit_note(misfits)
    note = (f"A is a kohya-style Flux LoRA (lora_down / lora_up / alpha on {counted(modules, 'module')} named as "
            "Black Forest Labs' Flux transformer names them: double_blocks, single_blocks, fused qkv) and B a "
            "diffusers FluxTransformer2DModel (transformer_blocks, single_transformer_blocks, to_q / to_k / to_v): "
            "diffusers' FluxPipeline.load_lora_weights converts the LoRA to B's layout, and ComfyUI and Forge load "
            "it onto the original flux1-*.safetensors, where diff-keys checks its shapes; it stores no base weights")
    return whys, note + _flux_misfit_note(misfits)


# The top modules of diffusers' FluxTransformer2DModel, as a LoRA in diffusers' layout (ai-toolkit's, the diffusers
# trainers') names them, with or without the pipeline's `transformer.`.
_DIFFUSERS_FLUX_MODULE = _lazy_regex(r"^(?:transformer\.)?(?P<block>transformer_blocks|single_transformer_blocks|"
                                     r"x_embedder|context_embedder|time_text_embed|norm_out|proj_out)(?:\.|$)")


def _diffusers_flux_onto_bfl(
    pairs: Sequence[tuple[str, re.Match[str]]], specs_a: Mapping[str, KeySpec], specs_b: Mapping[str, KeySpec],
    missing: Sequence[str],
) -> tuple[dict[str, tuple[str, str, str]], str]:
    """adapter_fit for a Flux LoRA in diffusers' layout (`transformer.transformer_blocks.0.attn.to_q.lora_A`)
    against Black Forest Labs' original Flux transformer (flux1-dev.safetensors: double_blocks, fused qkv), or
    ({}, "") when A or B is not that. It was "a PEFT adapter ... 0 of them in B", every pair an error, where ComfyUI
    maps such a LoRA onto those modules: its modules are named, their shapes not checked."""
    matches = [_DIFFUSERS_FLUX_MODULE.match(match["module"]) for _, match in pairs]
    if None in matches or not any(m["block"].endswith("transformer_blocks") for m in matches if m is not None):
        return {}, ""
    if not (any(name.startswith("double_blocks.") for name in specs_b)
            and any(name.startswith("single_blocks.") for name in specs_b)):
        return {}, ""
    misfits = _flux_width_misfits(pairs, specs_a, "lora_A", _flux_hidden(specs_b, _BFL_FLUX_HIDDEN),
                                  _DIFFUSERS_FLUX_HIDDEN_WIDE)
    whys: dict[str, tuple[str, str, str]] = {}
    for name, match in pairs:
        module = match["module"].removeprefix("transformer.")
        misfit = misfits.get(match["module"])
        whys[name] = ("adapter", "error", f"for {module} in diffusers' Flux layout: {misfit}") if misfit else (
            "adapter", "info", f"for {module} in diffusers' Flux layout, which ComfyUI maps onto B's modules (Black "
                               "Forest Labs' layout) when it loads the LoRA (shapes not checked)")
    for name in missing:
        whys[name] = ("adapter-base", "info", "")
    modules = len({match["module"] for _, match in pairs})
    note = (f"A is a Flux LoRA in diffusers' layout (lora_A / lora_B on {counted(modules, 'module')} of "
            "FluxTransformer2DModel: transformer_blocks, single_transformer_blocks, to_q / to_k / to_v) and B Black "
            "Forest Labs' original Flux transformer (double_blocks, single_blocks, fused qkv): ComfyUI maps the "
            "LoRA onto B's modules, and diffusers' load_lora_weights loads it into the FluxTransformer2DModel that "
            "from_single_file builds from B, where diff-keys checks its shapes; it stores no base weights")
    return whys, note + _flux_misfit_note(misfits)


# What a PEFT prompt-learning adapter saves (prompt, p-, prefix tuning; multitask prompt tuning's task factors).
_PROMPT_ADAPTER_KEYS = frozenset({"prompt_embeddings", "prefix_task_cols", "prefix_task_rows"})


def _block_count(specs: Mapping[str, KeySpec]) -> int:
    """How many repeated blocks the model has: the most distinct indices under one prefix (`model.layers.0`..)."""
    indices: dict[str, set[str]] = defaultdict(set)
    for name in specs:
        match = _FIRST_INDEX.search(name)
        if match:
            indices[name[:match.start(1)]].add(match.group(1))
    return max(map(len, indices.values()), default=0)


_FIRST_INDEX = re.compile(r"(?:^|\.)(\d+)\.")
_KEY_PROJECTION = re.compile(r"(?:^|\.)(?:k_proj|key|k|k_lin|wk)\.weight$")


def _key_widths(specs: Mapping[str, KeySpec], width: int) -> set[int]:
    """The widths a prefix-tuning key or value prefix can have in this model: its hidden width, and the rows of
    its key projections (grouped-query attention shares fewer key/value heads: peft sizes the prefixes so)."""
    return {width} | {spec.shape[0] for name, spec in specs.items()
                      if len(spec.shape) == 2 and _KEY_PROJECTION.search(name)}


# peft's X-LoRA saves its classifier (`base_model.internal_xlora_classifier.layers.N`, an MLP from the base model's
# hidden states to one scaling per LoRA adapter) in adapter_model.safetensors and the LoRA adapters it mixes in
# subfolders: against its own base each of its keys and every base weight was "unknown: these weights will not load".
_XLORA_CLASSIFIER = "base_model.internal_xlora_classifier."


def _xlora_fit(
    specs_a: Mapping[str, KeySpec], specs_b: Mapping[str, KeySpec], unexpected: Sequence[str], missing: Sequence[str],
    loading: Callable[[bool], str],
) -> tuple[dict[str, tuple[str, str, str]], str]:
    """`adapter_fit` for an X-LoRA adapter's classifier (every name of A that B lacks under `_XLORA_CLASSIFIER`): its
    first layer (out × hidden) reads the hidden states, as wide as B's input embedding.

    Example:
        >>> a = {"base_model.internal_xlora_classifier.layers.0.weight": KeySpec("", (2, 32), "float32")}
        >>> b = {"model.embed_tokens.weight": KeySpec("model.embed_tokens.weight", (64, 32), "float32")}
        >>> _xlora_fit(a, b, list(a), list(b), lambda fits: "PeftModel.from_pretrained")[0][list(a)[0]][1]
        'info'
    """
    embedding = next((spec for name, spec in specs_b.items()
                      if _INPUT_EMBEDDING.search(name) and len(spec.shape) == 2), None)
    first = specs_a.get(f"{_XLORA_CLASSIFIER}layers.0.weight")
    width = first.shape[1] if first is not None and len(first.shape) == 2 else None
    if embedding is not None and width is not None and width != embedding.shape[1]:
        why = ("adapter", "error", f"X-LoRA's classifier reads hidden states {width} wide, but B's {embedding.name} "
               f"is {embedding.shape[1]} wide: an adapter for another model size")
    else:
        why = ("adapter", "info", "X-LoRA's classifier (it weighs the LoRA adapters saved in the adapter's "
               "subfolders), not a weight of B" + ("" if embedding is not None and width is not None else
                                                  "; its width is not compared"))
    whys = dict.fromkeys(unexpected, why)
    if why[1] == "info":
        for name in missing:
            whys[name] = ("adapter-base", "info", "")
    note = ("A is a PEFT X-LoRA adapter: its classifier here, the LoRA adapters it mixes in its subfolders (diff-keys "
            "each of them against B to check their fit); it stores no base weights: load it with "
            f"{loading(why[1] == 'info')}")
    return whys, note


def _prompt_adapter_fit(
    specs_a: Mapping[str, KeySpec], specs_b: Mapping[str, KeySpec], unexpected: Sequence[str], missing: Sequence[str],
    loading: Callable[[bool], str] = lambda fits: peft_loading(None, None),
    adapter_config: Callable[[], Mapping[str, Any] | None] | None = None,
) -> tuple[dict[str, tuple[str, str, str]], str]:
    """`adapter_fit` for a prompt-learning adapter: `prompt_embeddings` [virtual tokens, width] and nothing of B.

    Prompt and p-tuning prepend virtual tokens as wide as B's input embedding; prefix tuning stores a key and a
    value prefix for every layer in one row (width = layers x 2 x the attention width), and so does peft's
    CARTRIDGE (a trained KV cache, its adapter_config.json's peft_type says which): those rows are checked against
    B's layers and key widths.
    """
    if not specs_a.keys() <= _PROMPT_ADAPTER_KEYS:
        return {}, ""  # beside other weights (a whole model that holds a prompt encoder): not the adapter alone
    shape = specs_a["prompt_embeddings"].shape
    embedding = next((spec for name, spec in specs_b.items()
                      if _INPUT_EMBEDDING.search(name) and len(spec.shape) == 2), None)
    width = embedding.shape[1] if embedding is not None else None
    whys: dict[str, tuple[str, str, str]] = {}
    if len(shape) != 2:
        why = ("adapter", "error", f"prompt embeddings of shape {'×'.join(map(str, shape))}: PEFT saves "
               "[virtual tokens, width]")
    elif width is None or shape[1] == width:
        why = ("adapter", "info", f"{counted(shape[0], 'virtual token', grouped=False)} of width {shape[1]}"
               + (f", the width of B's {embedding.name}" if embedding is not None else ""))
    elif (layers := _block_count(specs_b)) and shape[1] in {2 * layers * kv for kv in _key_widths(specs_b, width)}:
        # peft 0.21's CARTRIDGE saves its trained KV cache as prefix tuning's rows: "prefix tuning's" misnamed it.
        config = adapter_config() if adapter_config is not None else None
        cartridge = (config or {}).get("peft_type") == "CARTRIDGE"
        why = ("adapter", "info", f"{counted(shape[0], 'virtual token', grouped=False)}, {shape[1]} values "
               f"each: {'CARTRIDGE' if cartridge else 'prefix tuning'}'s key and value prefixes "
               f"{'(its trained KV cache) ' if cartridge else ''}for B's {counted(layers, 'layer', grouped=False)}, "
               f"{shape[1] // (2 * layers)} wide")
    else:
        assert embedding is not None
        why = ("adapter", "error", f"{counted(shape[0], 'virtual token', grouped=False)} of width {shape[1]}, but B's "
               f"{embedding.name} is {width} wide" + (f" and its {counted(layers, 'layer', grouped=False)} "
                                                      f"{plural(layers, 'takes', 'take')} no prefix of that width"
                                                      if layers else "")
               + ": an adapter for another model")
    for name in unexpected:
        whys[name] = why if name == "prompt_embeddings" else ("adapter", "info", "multitask prompt tuning's task "
                                                                                 "factors")
    if why[1] == "info":
        for name in missing:
            whys[name] = ("adapter-base", "info", "")
    tokens = shape[0] if shape else 0
    note = (f"A is a PEFT prompt-learning adapter ({counted(tokens, 'virtual token', grouped=False)}): "
            f"it stores no base weights: load it with {loading(why[1] == 'info')}")
    return whys, note


# ---------------------------------------------------------------------------------------------------------------
# Data.


class KeySpec(NamedTuple):
    """What the diff needs to know about one tensor: its name, shape and dtype (canonical name).

    A named tuple rather than a dataclass: a 10,000-key diff builds 20,000 of them.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True, slots=True)
class KeyIssue:
    """A missing or unexpected key, with why it is there and how much it matters."""

    name: str
    reason: str
    severity: str
    detail: str = ""


_KEY_ISSUE_SLOTS = tuple(KeyIssue.__dict__[f] for f in ("name", "reason", "severity", "detail"))


def key_issues(names: Sequence[str], whys: Sequence[tuple[str, str, str]]) -> list[KeyIssue]:
    """`[KeyIssue(name, *why) for name, why in zip(names, whys)]`, built a field at a time.

    A diff of two 10,000-key checkpoints whose keys all differ builds 20,000 of them, and a frozen
    dataclass's `__init__` costs as much as the rest of the report; here each field is set on every
    instance by one C-level loop over its slot descriptor (as `checkpoint.model.tensor_infos` does).

    Example:
        >>> key_issues(["a.w"], [("unknown", "error", "")]) == [KeyIssue("a.w", "unknown", "error", "")]
        True
    """
    if len(names) != len(whys):
        raise ValueError(f"{len(names)} names for {len(whys)} reasons")
    issues: list[KeyIssue] = list(map(object.__new__, repeat(KeyIssue, len(names))))
    if issues:
        # One reason for every key (a DDP `module.` on 10,000 keys): its fields repeated, not transposed.
        uniform = whys.count(whys[0]) == len(whys)
        fields = (names, *map(repeat, whys[0])) if uniform else (names, *zip(*whys, strict=True))
        for slot, values in zip(_KEY_ISSUE_SLOTS, fields, strict=True):
            deque(map(slot.__set__, issues, values), maxlen=0)
    return issues


@dataclass(frozen=True)
class Mismatch:
    """A key present on both sides with different shapes (`shape_a` in A, `shape_b` in B)."""

    name: str
    shape_a: list[int]
    shape_b: list[int]
    reason: str
    severity: str
    detail: str = ""


@dataclass(frozen=True)
class DtypeDifference:
    name: str
    dtype_a: str
    dtype_b: str
    severity: str


@dataclass(frozen=True)
class SuggestedRename:
    """One `--rename` of the suggested fix, with the keys it makes match."""

    pattern: str
    replacement: str
    flag: str
    matches_gained: int


@dataclass(frozen=True)
class KeyGroup:
    """Keys that differ only in layer indices, reported once: `encoder.layer.*.output.dense.weight ×12`."""

    kind: str  # "missing", "unexpected", "mismatched" or "dtype"
    pattern: str
    count: int
    reason: str
    severity: str
    example: str


@dataclass(frozen=True)
class ValueDiff:
    """How one common tensor's values differ: `rel_change` is ‖A−B‖/‖B‖ (computed in float64)."""

    name: str
    identical: bool
    max_abs_diff: float
    rel_change: float
    dtype_a: str
    dtype_b: str
    # "A is B rounded to bfloat16" where the change is a cast's rounding alone (see `cast_rounding`), else None.
    rounded_to: str | None = None


@dataclass(frozen=True)
class LayerChange:
    """One layer's relative change ‖A−B‖/‖B‖ over its tensors together (the norms of their values concatenated), and
    the largest |A−B| of any of its values: the size of a change that ‖B‖ = 0 makes infinite."""

    layer: str
    rel_change: float
    tensors: int
    identical: bool
    max_abs_diff: float = 0.0


def change_rank(rel_change: float, max_abs_diff: float) -> tuple[int, float]:
    """The sort key that puts the most changed first: a NaN change (an inf or NaN on one side: beyond measure), then
    the finite relative changes, largest first, then those that are infinite because B is all zeros there (a bias
    initialized to zeros), by their largest |A−B|, then the unchanged. An infinite ‖A−B‖/‖B‖ says only that B was
    zero: ranked by it, a bias nudged by 1e-6 from its zeros came above a weight changed by 50%.

    Example:
        >>> sorted([(math.inf, 1e-6), (0.5, 0.2), (math.inf, 0.3), (0.01, 0.1)], key=lambda r: change_rank(*r))
        [(0.5, 0.2), (0.01, 0.1), (inf, 0.3), (inf, 1e-06)]
    """
    if math.isnan(rel_change):
        return 0, 0.0
    if math.isinf(rel_change):
        return 2, -max_abs_diff if not math.isnan(max_abs_diff) else -math.inf
    # An unchanged layer (0) after every changed one, the infinite ones included.
    return (1, -rel_change) if rel_change != 0 else (3, 0.0)


@dataclass
class DiffReport:
    """The whole answer of `diff-keys`. JSON keys are the field names (see docs/commands/diff-keys.md)."""

    source_a: str
    source_b: str
    mode: str  # "checkpoints" or "model-class"
    model_class: str | None
    renames_applied: list[str]
    matched: int
    total_a: int
    total_b: int
    missing: list[KeyIssue]
    unexpected: list[KeyIssue]
    mismatched: list[Mismatch]
    dtype_differences: list[DtypeDifference]
    suggested_renames: list[SuggestedRename]
    matched_after_renames: int | None
    python_snippet: str | None
    groups: list[KeyGroup]
    worst_severity: str | None
    values: list[ValueDiff] | None = None
    layers_changed_most: list[LayerChange] | None = None
    # --values: the changed tensors where they are exactly a few modules of the layers (a merged LoRA), else null.
    changed_projections: ChangedProjections | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the reader's, about A's or B's files ("A: ...")
    # Where each side was read from: the Hub revision asked for (repo ids only) and the resolved location
    # (a local path, inside the Hub cache a snapshot folder named by its commit).
    revision_a: str | None = None
    revision_b: str | None = None
    resolved_a: str | None = None
    resolved_b: str | None = None
    # --model-class: False when from_pretrained(A) itself does not read what this report compares (a training
    # checkpoint's nested state dict, a weights file it does not look for; a note says which); None for two checkpoints.
    from_pretrained_reads_a: bool | None = None
    # The `diff-keys` arguments that read A and B as this run read them (shell-quoted; --rename flags apart), for
    # the re-check line: without --config, --key or --revision, the pasted command failed or read other files.
    recheck_args: str = field(default="", metadata={"json": False}, repr=False)
    # `convert` arguments that read A as this run did and name a new output beside it (shell-quoted; --rename flags
    # apart), for the line that writes the renamed copy; "" where A is no local weights file or folder.
    convert_args: str = field(default="", metadata={"json": False}, repr=False)
    # --model-class: a note names the converter of A's foreign layout (descript-audio-codec's, suno's Bark): the
    # training checkpoint's "write the state dict on its own first" is then not the fix, converting it is.
    converter_named: bool = field(default=False, metadata={"json": False}, repr=False)

    def severities(self) -> list[str]:
        """Every severity this report carries (one per key problem and dtype difference)."""
        found = [*map(_SEVERITY, self.missing), *map(_SEVERITY, self.unexpected)]
        found += [*map(_SEVERITY, self.mismatched), *map(_SEVERITY, self.dtype_differences)]
        return found


_SEVERITY = attrgetter("severity")


def name_side_b_in(report: DiffReport) -> None:
    """Call B in every sentence of `report` (its notes, each key's and mismatch's detail) what its mode calls it
    (`side_b_word`): a `--model-class` report's sentences, built by the same code as two checkpoints' ("a head B
    lacks", "not used by B, dropped", "120×32 in B"), then name the model, the B of its header.

    Example:
        >>> report = diff_specs({}, {"classifier.weight": KeySpec("classifier.weight", (2,), "float32")})
        >>> report.mode, report.notes = "model-class", ["B's config names 2 labels"]
        >>> name_side_b_in(report)
        >>> report.notes
        ["the model's config names 2 labels"]
    """
    side_b = side_b_word(report.mode)
    if side_b == "B":
        return
    said = functools.cache(lambda text: name_side_b(text, side_b))  # 10,000 keys share a few details
    report.notes = [said(note) for note in report.notes]
    for kind in ("missing", "unexpected", "mismatched"):
        rows = getattr(report, kind)
        setattr(report, kind, [row if (detail := said(row.detail)) == row.detail
                               else dataclasses.replace(row, detail=detail) for row in rows])


def exit_code(report: DiffReport, fail_on: str) -> int:
    """0 when nothing in `report` reaches `fail_on` ("info", "warn" or "error"), else 1.

    Example:
        >>> exit_code(diff_specs({}, {"classifier.weight": KeySpec("classifier.weight", (2,), "float32")}), "error")
        0
    """
    threshold = severity_rank(choose("--fail-on", fail_on, SEVERITIES))
    return 1 if any(severity_rank(s) >= threshold for s in set(report.severities())) else 0


def specs_from_tensors(tensors: Iterable[TensorInfo]) -> dict[str, KeySpec]:
    """`TensorInfo`s from the reader, as name -> `KeySpec`.

    A `TensorInfo` whose shape is a plain tuple already has everything a `KeySpec` offers (`name`,
    `shape`, `dtype`) and is used as it is: 20,000 new tuples cost as much as the rest of a diff.
    """
    infos = list(tensors)
    # The reader's shapes are tuples. A comprehension: on Python 3.11 its specialised reads of TensorInfo's slots
    # take half the time of C-level map(attrgetter).
    if {type(info.shape) for info in infos} <= {tuple}:
        return {info.name: info for info in infos}  # type: ignore[misc]
    return {t.name: t if type(t.shape) is tuple else KeySpec(t.name, tuple(t.shape), t.dtype)  # type: ignore[misc]
            for t in infos}


def checkpoint_specs(checkpoint: Checkpoint) -> dict[str, KeySpec]:
    """`specs_from_tensors(checkpoint.tensors)`, copied from the name -> tensor index the checkpoint built when it
    was opened (the one `Checkpoint.tensor_info` reads), not built again: a copy of a dict is one C-level pass, a
    comprehension over 10,000 tensors 0.4 ms. That index was built by the same comprehension over the same list;
    with every name once (the index as long as the list) and every shape a tuple, it is the dict
    `specs_from_tensors` returns, keys in the same order. Anything else takes `specs_from_tensors`.

    Example:
        >>> ckpt = open_checkpoint("model.safetensors")  # doctest: +SKIP
        >>> checkpoint_specs(ckpt) == specs_from_tensors(ckpt.tensors)  # doctest: +SKIP
        True
    """
    infos = checkpoint.tensors
    index = checkpoint._by_name
    if type(infos) is list and len(index) == len(infos) and {type(info.shape) for info in infos} <= {tuple}:
        return dict(index)  # type: ignore[arg-type]
    return specs_from_tensors(infos)


# ---------------------------------------------------------------------------------------------------------------
# Grouping.


def collapse_indices(name: str) -> str:
    """Replace every dotted integer component by `*`.

    Example:
        >>> collapse_indices("encoder.layer.11.attention.self.query.weight")
        'encoder.layer.*.attention.self.query.weight'
    """
    return _DIGIT_SEGMENT.sub("*", name)


# `_DIGIT_SEGMENT` over names joined by newlines, as two patterns that start with a literal (which the
# regex engine scans for quickly): a leading index (after a newline), then every index after a dot.
_LEADING_INDEX_LINES = re.compile(r"\n\d+(?=\.)")
_DOTTED_INDEX_LINES = re.compile(r"\.\d+(?=[.\n]|\Z)")
# The same patterns for an ASCII text, where \d can only match 0-9: ASCII matching is ~20% faster.
_LEADING_INDEX_LINES_ASCII = re.compile(_LEADING_INDEX_LINES.pattern, re.ASCII)
_DOTTED_INDEX_LINES_ASCII = re.compile(_DOTTED_INDEX_LINES.pattern, re.ASCII)


def _collapse_all(names: list[str]) -> list[str]:
    """`collapse_indices` of every name, in two regex passes over all the names joined by newlines.

    Exact when no name holds a newline, which the number of pieces proves; otherwise name by name.
    """
    if not names:
        return []
    text = "\n" + "\n".join(names)
    ascii_only = text.isascii()  # a flag of the string, read without a scan
    text = (_LEADING_INDEX_LINES_ASCII if ascii_only else _LEADING_INDEX_LINES).sub("\n*", text)
    collapsed = (_DOTTED_INDEX_LINES_ASCII if ascii_only else _DOTTED_INDEX_LINES).sub(".*", text)[1:].split("\n")
    return collapsed if len(collapsed) == len(names) else [collapse_indices(name) for name in names]


# Leading components kept when merging key patterns into groups (real names are under 20 deep).
MAX_GROUP_DEPTH = 64


def group_issues(report: DiffReport, max_groups_per_reason: int = 6) -> list[KeyGroup]:
    """Group the report's keys so that a large diff reads in one screen.

    Keys are grouped by (kind, reason, severity) and layer indices are collapsed
    (`encoder.layer.*.attention.self.query.weight ×12`); when one (kind, reason, severity) still has more
    than `max_groups_per_reason` patterns, they are merged by their leading components
    (`module.bert.* ×39`), keeping fewer components until they fit. Groups come in the order of their
    first key; each names its first key as the example.
    """
    keyed: list[Any] = [*report.missing, *report.unexpected, *report.mismatched]
    # Comprehensions: on Python 3.11 their specialised reads of KeyIssue's slots beat attrgetter in C.
    names = [*[k.name for k in keyed], *(d.name for d in report.dtype_differences)]
    reasons = [*[k.reason for k in keyed], *(f"{d.dtype_a}→{d.dtype_b}" for d in report.dtype_differences)]
    severities = [*[k.severity for k in keyed], *(d.severity for d in report.dtype_differences)]
    patterns = _collapse_all(names)
    # One bucket per (kind, reason, severity) in the order of its first key: pattern -> (count, first name).
    buckets: dict[tuple[str, str, str], dict[str, tuple[int, str]]] = {}
    start = 0
    for kind, size in (("missing", len(report.missing)), ("unexpected", len(report.unexpected)),
                       ("mismatched", len(report.mismatched)), ("dtype", len(report.dtype_differences))):
        end = start + size
        if size and len(set(reasons[start:end])) == 1 and len(set(severities[start:end])) == 1:
            # Every key of this kind has one reason and severity (a DDP `module.` on 10,000s of keys): one
            # bucket, counted by pattern alone with C-level loops.
            buckets[(kind, reasons[start], severities[start])] = _pattern_counts(patterns[start:end], names[start:end])
        elif size:
            keys = list(zip(repeat(kind, size), reasons[start:end], severities[start:end], patterns[start:end],
                            strict=True))
            counts = Counter(keys)
            examples = dict(zip(reversed(keys), reversed(names[start:end]), strict=True))  # the last write: first
            for key in counts:  # in the order of first appearance
                buckets.setdefault(key[:3], {})[key[3]] = (counts[key], examples[key])
        start = end
    groups: list[KeyGroup] = []
    for (kind, reason, severity), by_pattern in buckets.items():
        if len(by_pattern) > max_groups_per_reason:
            # Split once, and merge from at most MAX_GROUP_DEPTH components: trying every depth of names of
            # 22,000 components rebuilt each name 22,000 times (40 such names: minutes).
            split = {pattern: pattern.split(".", MAX_GROUP_DEPTH) for pattern in by_pattern}
            longest = max(len(parts) for parts in split.values())
            for depth in range(longest - 1, 0, -1):
                merged: dict[str, tuple[int, str]] = {}
                for pattern, (count, example) in by_pattern.items():
                    parts = split[pattern]
                    key = ".".join(parts[:depth]) + ".*" if len(parts) > depth else pattern
                    total, first = merged.get(key, (0, example))
                    merged[key] = (total + count, first)
                if len(merged) <= max_groups_per_reason or depth == 1:
                    by_pattern = merged
                    break
        groups += [KeyGroup(kind, p, count, reason, severity, example) for p, (count, example) in by_pattern.items()]
    return groups


def _pattern_counts(patterns: list[str], names: list[str]) -> dict[str, tuple[int, str]]:
    """pattern -> (how many keys have it, the first of them), in the order of first appearance.

    Example:
        >>> _pattern_counts(["l.*.w", "l.*.w", "b"], ["l.0.w", "l.1.w", "b"])
        {'l.*.w': (2, 'l.0.w'), 'b': (1, 'b')}
    """
    counts = Counter(patterns)  # a dict: in the order of first appearance
    examples = dict(zip(reversed(patterns), reversed(names), strict=True))  # the last write is the first name
    return {pattern: (count, examples[pattern]) for pattern, count in counts.items()}


# ---------------------------------------------------------------------------------------------------------------
# Rename detection.


def _leading_splits(name: str, depth: int = 3) -> Iterator[tuple[str, str]]:
    """`(prefix, rest)` for the empty prefix and the first `depth` dotted components."""
    yield "", name
    position = 0
    for _ in range(depth):
        position = name.find(".", position)
        if position < 0:
            return
        position += 1
        yield name[:position], name[position:]


def _simpler(rename: Rename, other: Rename) -> bool:
    """Whether `rename` is the simpler of two renames that match as many keys (less added, shorter pattern)."""
    return (len(rename.replacement), len(rename.pattern), rename.pattern) < (
        len(other.replacement), len(other.pattern), other.pattern)


def _head_words(name: str) -> set[str]:
    return set(name.split(".")).intersection(_HEAD_WORDS)


def _other_head(old: str, new: str) -> bool:
    """True when a rename changes which task head a key belongs to.

    That covers one head moved onto another (`pooler.*` -> `cls.predictions.*`), a head moved into the
    body (`classifier.weight` -> `embeddings.token_type_embeddings.weight`, same (2, H) shape when
    num_labels = type_vocab_size = 2) and the body moved into a head. Heads differ between tasks by
    design, so such shape lookalikes are never evidence for a rename.
    """
    return _head_words(old) != _head_words(new)


def _escape(text: str) -> str:
    """`re.escape`, with `=` written `\\x3d` so the pattern survives the `--rename REGEX=REPL` syntax."""
    return re.escape(text).replace("=", "\\x3d")


# Components of a name tried one by one as renamed or dropped: each try builds the name again, so a name of n
# components costs n times its length (40 names of 22,000 components took 23 GB). Real names are under 20 deep.
MAX_RENAME_PARTS = 64


def _sample(names: Sequence[str], limit: int = 2000) -> Sequence[str]:
    """At most `limit` names spread over `names`: votes on a sample find the same renames much faster."""
    if len(names) <= limit:
        return names
    step = len(names) / limit
    return [names[int(i * step)] for i in range(limit)]


def _candidate_renames(
    unmatched: Sequence[str], targets: set[str], structural: bool = False, limit: int = 8,
    literals: dict[Rename, tuple[str, str, tuple[str, ...]]] | None = None,
) -> list[Rename]:
    """Renames that would map some of `unmatched` onto `targets`, most promising first.

    Cheap candidates (transformers' legacy renames; prefix strip / add / replace) unless `structural`,
    which asks for the costlier ones: one component renamed or dropped. Each prefix rename is also
    recorded in `literals` as (old prefix, new prefix, no spared prefixes), the plain-string form of
    its regex (applied by `suggest_renames` with string operations).
    """
    votes: Counter[tuple[str, str, str]] = Counter()
    sample = _sample(unmatched)
    if not structural:
        # Index the targets by what follows their first 0-3 components, keeping only the rests that some
        # sampled name has (the others get no vote): one cheap pass over 10,000s of targets.
        sample_splits = [list(_leading_splits(name)) for name in sample]
        wanted = {rest for splits in sample_splits for _, rest in splits}
        by_rest: dict[str, set[str]] = defaultdict(set)
        for target in targets:
            if target in wanted:
                by_rest[target].add("")
            # After the first, second and third dot (unrolled: this loop runs over every target).
            first = target.find(".") + 1
            if not first:
                continue
            if (rest := target[first:]) in wanted:
                by_rest[rest].add(target[:first])
            second = target.find(".", first) + 1
            if not second:
                continue
            if (rest := target[second:]) in wanted:
                by_rest[rest].add(target[:second])
            third = target.find(".", second) + 1
            if third and (rest := target[third:]) in wanted:
                by_rest[rest].add(target[:third])
        from weightdoctor.prefix_votes import top_prefix_votes

        prefix_votes = top_prefix_votes(sample_splits, by_rest, limit)
    else:
        # One dotted component renamed in place (`encoder.layers.3.x` -> `encoder.layer.3.x`).
        by_hole: dict[tuple[str, int], set[str]] = defaultdict(set)
        # The same for one number: an expert or a layer saved under another number (a pruning script that kept
        # the old numbers: `experts.9` for the model's `experts.2`), voted for by the module's whole prefix.
        by_number: dict[tuple[str, int], set[str]] = defaultdict(set)
        for target in targets:
            parts = target.split(".")
            if len(parts) > MAX_RENAME_PARTS:
                continue
            for i, part in enumerate(parts):
                holes = by_number if part.isdigit() else by_hole
                holes[(".".join(parts[:i] + ["\0"] + parts[i + 1:]), i)].add(part)
        for name in sample:
            parts = name.split(".")
            if len(parts) > MAX_RENAME_PARTS:
                continue
            for i, part in enumerate(parts):
                hole = (".".join(parts[:i] + ["\0"] + parts[i + 1:]), i)
                for target_part in by_hole.get(hole, ()) if not part.isdigit() else ():
                    if target_part != part:
                        votes[("segment", part, target_part)] += 1
                for target_part in by_number.get(hole, ()) if part.isdigit() else ():
                    if target_part != part:
                        module = ".".join(parts[:i])
                        votes[("number", f"{module}.{part}".lstrip("."), f"{module}.{target_part}".lstrip("."))] += 1
            # One dotted component dropped (`query.base_layer.weight` -> `query.weight`, PEFT's wrapped layers),
            # or a run of up to three: FSDP1 with activation checkpointing wraps every block in two modules
            # (`layers.0._fsdp_wrapped_module._checkpoint_wrapped_module.attn.weight`), and dropping either
            # alone matches nothing. Not the first component (a prefix rename strips that) nor the last.
            for i in range(1, len(parts) - 1):
                for run in range(1, min(3, len(parts) - 1 - i) + 1):
                    dropped = parts[i:i + run]
                    if any(map(str.isdigit, dropped)):
                        break
                    if ".".join(parts[:i] + parts[i + run:]) in targets:
                        votes[("drop", ".".join(dropped), "")] += 1
    renames: list[Rename] = []
    if not structural:
        # transformers' legacy renames first: on a tie (gamma->weight and gamma->bias fit equally) they win.
        renames += [legacy for legacy in LEGACY_RENAMES if any(map(re.compile(legacy.pattern).search, sample))]
    # Most votes first; on a tie the simpler rename (shorter replacement), then by name: deterministic,
    # whatever the order of the sets the votes came from.
    if structural:
        # A component that fits several others equally (Meta's `attention_norm` has the shape of both
        # `input_layernorm` and `post_attention_layernorm`) is a guess from shapes alone: a wrong one would
        # load weights into the wrong place silently. Such components get no suggestion.
        best: dict[tuple[str, str], int] = {}
        tied: Counter[tuple[str, str]] = Counter()
        for (kind, old, _), count in votes.items():
            if count > best.get((kind, old), 0):
                best[(kind, old)], tied[(kind, old)] = count, 1
            elif count == best[(kind, old)]:
                tied[(kind, old)] += 1
        votes = Counter({key: count for key, count in votes.items() if tied[key[:2]] == 1
                         and count == best[key[:2]]})
    # The first `limit` of them as a full sort ranks them (the keys are distinct: the same order), without sorting
    # the rest: a block of 1,000 renumbered layers casts a million prefix votes, a sort of them 5 s.
    ranked = heapq.nsmallest(limit, votes.items(), key=lambda item: (-item[1], len(item[0][2]), item[0])) \
        if structural else prefix_votes
    for (kind, old, new), _ in ranked:
        if kind == "prefix":
            if new == "" and "=" not in old:
                renames.append(strip_prefix(old))
            elif old == "":
                renames.append(add_prefix(new))
            else:
                renames.append(Rename("^" + _escape(old), new.replace("\\", "\\\\")))
            if literals is not None:
                literals[renames[-1]] = (old, new, ())
        elif kind == "drop":
            renames.append(Rename(rf"\.{_escape(old)}\.", "."))
        elif kind == "number":
            renames += _renumberings(old, new, unmatched, literals)
        else:
            renames.append(Rename(rf"(?<![^.]){_escape(old)}(?![^.])", new.replace("\\", "\\\\")))
    return renames


def _renumberings(old: str, new: str, unmatched: Sequence[str],
                  literals: dict[Rename, tuple[str, str, tuple[str, ...]]] | None) -> list[Rename]:
    """The renames that give the module numbered `old` (`model.layers.1.mlp.experts.9`) the number of `new`
    (`...experts.2`): by the component before the number alone (`experts\\.9\\.`, which renumbers that expert of
    every layer; the search keeps it only where it unmatches no key), then by the whole prefix, anchored.

    Example:
        >>> [r.as_flag() for r in _renumberings("m.1.experts.9", "m.1.experts.2", [], None)]
        ["--rename 'experts\\\\.9\\\\.=experts.2.'", "--rename '^m\\\\.1\\\\.experts\\\\.9\\\\.=m.1.experts.2.'"]
    """
    renames = []
    module, _, number = old.rpartition(".")
    last = module.rpartition(".")[2]
    if last and not last.isdigit():
        short = f"{last}.{number}."
        # `shared_experts.9.` holds `experts.9.` too: such a name among the unmatched ones gets a name boundary.
        bounded = any(map(re.compile("[^.]" + re.escape(short)).search, unmatched))
        renames.append(Rename(("(?<![^.])" if bounded else "") + _escape(short),
                              f"{last}.{new.rpartition('.')[2]}.".replace("\\", "\\\\")))
    anchored = Rename("^" + _escape(old + "."), (new + ".").replace("\\", "\\\\"))
    if literals is not None:
        literals[anchored] = (old + ".", new + ".", ())
    return [*renames, anchored]


_RENUMBERING = re.compile(r"^(?:\^|\(\?<!\[\^\.\]\))?(?P<module>(?:[^\\]|\\\.)*?)\\\.(?P<old>\d+)\\\.$")


def renumbering_renames(moves: Sequence[tuple[str, str]], names: Sequence[str]) -> list[Rename]:
    """Renames that move every key under each old prefix of `moves` to its new prefix and touch no other of
    `names`: one short rename by the component before the number (`experts\\.9\\.=experts.2.`) where it does
    so for all of them, else one anchored rename a move.

    Example:
        >>> names = ["m.0.experts.9.w", "m.0.experts.1.w", "m.1.experts.9.w"]
        >>> [r.as_flag() for r in renumbering_renames([("m.0.experts.9.", "m.0.experts.2.")], names)]
        ["--rename '^m\\\\.0\\\\.experts\\\\.9\\\\.=m.0.experts.2.'"]
    """
    shorts = {(old.rstrip(".").rpartition(".")[0].rpartition(".")[2], old.rstrip(".").rpartition(".")[2],
               new.rstrip(".").rpartition(".")[2]) for old, new in moves}
    if len(shorts) == 1:
        last, old_number, new_number = next(iter(shorts))
        if last and not last.isdigit():
            short = Rename("(?<![^.])" + _escape(f"{last}.{old_number}."), f"{last}.{new_number}.")
            touched = set(filter(re.compile(short.pattern).search, names))
            under = {name for name in names if name.startswith(tuple(old for old, _ in moves))}
            if touched == under:
                plain = Rename(_escape(f"{last}.{old_number}."), short.replacement)
                return [plain if set(filter(re.compile(plain.pattern).search, names)) == under else short]
    return [Rename("^" + _escape(old), new.replace("\\", "\\\\")) for old, new in moves]


def renumbered_block(
    names: Sequence[str], shapes: Sequence[tuple[int, ...]], targets: Mapping[str, tuple[int, ...]],
    names_of_a: Iterable[str], names_of_b: Iterable[str],
) -> list[tuple[str, str]]:
    """Two or more modules of one list saved under other numbers (a pipeline stage saved from 0: layers 16-31 as
    0-15; experts 2 and 5 saved as 9 and 11): `(A's prefix, B's prefix)` a module, lowest number first, or [].

    `names` (with `shapes`, in step) are A's unmatched names, `targets` B's names no key of A has, with their shapes;
    `names_of_a` / `names_of_b` every name of each side. A module of A is paired with one of B under the same list
    (`model.layers`) when A's number is none of B's there, B's none of A's, and the names and shapes below them are
    the same. Where several of A's modules have the same names and shapes as several of B's (every layer of a model
    does), names and shapes cannot tell which is which: they are paired in the order of their numbers (A's lowest
    with B's lowest), which is right for a block saved under a constant offset and a guess otherwise; the note
    (`renumbering_note`) says so. A list whose modules do not pair one to one is left alone.

    Example:
        >>> renumbered_block(["l.0.w", "l.1.w"], [(2,), (2,)], {"l.16.w": (2,), "l.17.w": (2,)},
        ...                  ["l.0.w", "l.1.w"], ["l.16.w", "l.17.w"])
        [('l.0.', 'l.16.'), ('l.1.', 'l.17.')]
    """
    def signatures(pairs: Iterable[tuple[str, tuple[int, ...]]]) -> dict[str, dict[str, set[tuple[str, Any]]]]:
        # list prefix -> number -> the (rest of the name, shape) pairs below that module
        found: dict[str, dict[str, set[tuple[str, Any]]]] = defaultdict(lambda: defaultdict(set))
        for name, shape in pairs:
            parts = name.split(".")
            if len(parts) > MAX_RENAME_PARTS:
                continue
            for i, part in enumerate(parts):
                if part.isdigit() and i + 1 < len(parts):
                    found[".".join(parts[:i])][part].add((".".join(parts[i + 1:]), tuple(shape)))
        return found

    def numbers(every: Iterable[str], lists: set[str]) -> dict[str, set[str]]:
        # list prefix -> every number a name of the side holds under it (matched names too)
        held: dict[str, set[str]] = defaultdict(set)
        for name in every:
            parts = name.split(".")
            for i, part in enumerate(parts[:MAX_RENAME_PARTS]):
                if part.isdigit() and (module := ".".join(parts[:i])) in lists:
                    held[module].add(part)
        return held

    ours = signatures(zip(names, shapes, strict=True))
    theirs = signatures(targets.items())
    lists = set(ours) & set(theirs)
    if not lists:
        return []
    held_a, held_b = numbers(names_of_a, lists), numbers(names_of_b, lists)
    best: list[tuple[str, str]] = []
    best_keys = 0
    for module in sorted(lists):
        olds = {n: frozenset(sig) for n, sig in ours[module].items() if n not in held_b[module]}
        news = {n: frozenset(sig) for n, sig in theirs[module].items() if n not in held_a[module]}
        # Every unmatched module of A under this list must find its pair, and every one of B's: one to one.
        by_signature: dict[frozenset[tuple[str, Any]], tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
        for number, sig in olds.items():
            by_signature[sig][0].append(number)
        for number, sig in news.items():
            by_signature[sig][1].append(number)
        if not olds or any(len(a) != len(b) for a, b in by_signature.values()):
            continue
        moves = [(f"{module}.{old}.".lstrip("."), f"{module}.{new}.".lstrip("."))
                 for a, b in by_signature.values()
                 for old, new in zip(sorted(a, key=int), sorted(b, key=int), strict=True)]
        keys = sum(len(sig) for sig in olds.values())
        if len(moves) >= 2 and keys > best_keys:
            best, best_keys = sorted(moves, key=lambda move: int(move[0].rstrip(".").rpartition(".")[2])), keys
    return best


def _number_list(numbers: Sequence[int]) -> str:
    """`0-15`, `2, 5`: ascending numbers, runs of three or more as a range."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)) for run in runs)


def renumbering_note(suggestions: Sequence[SuggestedRename],
                     shapes_b: Mapping[str, tuple[int, ...]] | None = None) -> str:
    """What the suggested renames that only renumber a module (`experts\\.9\\.=experts.2.`) rest on, or "".

    Such a rename is read from names and shapes alone: A's module under a number B lacks, B's under a number A
    lacks, the same names and shapes below them. The values are not compared, so the note says how to check them.
    Several modules of one list renumbered together (`renumbered_block`) are said together: where B's modules have
    the same names and shapes as each other (from `shapes_b`), which of A's is which is a pairing in the order of
    their numbers, not a finding, and the note says so, and whether it is a constant offset.

    Example:
        >>> renumbering_note([SuggestedRename("experts\\\\.9\\\\.", "experts.2.", "", 3)])[:63]
        "A's experts.9 has the names and shapes of B's experts.2, which "
    """
    moved: dict[str, list[tuple[int, int]]] = {}
    for suggestion in suggestions:
        found = _RENUMBERING.match(suggestion.pattern)
        if found is None:
            continue
        module = found["module"].replace("\\", "")
        # The replacement is the same module under another number (`experts.2.`), nothing else.
        number = re.fullmatch(re.escape(module) + r"\.(\d+)\.", suggestion.replacement)
        if number is None or number[1] == found["old"]:
            continue
        moved.setdefault(module, []).append((int(found["old"]), int(number[1])))
    said = []
    for module, pairs in moved.items():
        if len(pairs) == 1:
            (old, new), = pairs
            said.append(f"A's {module}.{old} has the names and shapes of B's {module}.{new}, which A lacks")
            continue
        pairs.sort()
        olds, news = [old for old, _ in pairs], [new for _, new in pairs]
        text = (f"A's {module} {_number_list(sorted(olds))} have the names and shapes of B's {module} "
                f"{_number_list(sorted(news))}, which A lacks")
        below: dict[int, set[tuple[str, tuple[int, ...]]]] = {new: set() for new in news}
        for name, shape in (shapes_b or {}).items():
            if name.startswith(module + "."):
                number, _, tail = name[len(module) + 1:].partition(".")
                if number.isdigit() and int(number) in below:
                    below[int(number)].add((tail, tuple(shape)))
        signatures = [frozenset(below[new]) for new in news]
        if shapes_b is not None and len(set(signatures)) == len(signatures):
            said.append(text + ", each with shapes none of the others has: the shapes pair them")
            continue
        offsets = {new - old for old, new in pairs}
        pairing = ", ".join(f"{old} with {new}" for old, new in pairs[:4]) + (", ..." if len(pairs) > 4 else "")
        order = (f"a constant offset of {offsets.pop():+d}, as a block saved under other numbers (a pipeline stage "
                 "saved from 0) has it. --rename cannot add to a number (its replacement is text), so it is one "
                 f"rename a module, all {len(pairs)} listed, applied in the order given, as the Python snippet does"
                 if len(offsets) == 1 else "not a constant offset: a guess")
        said.append(text + f"; the same names and shapes as each other, so names and shapes cannot tell which is "
                    f"which: the renames pair them in the order of their numbers ({pairing}), {order}")
    if not said:
        return ""
    return ("; ".join(said) + ": a module saved under another number (a pruning or merging script that kept the old "
            "numbers saves it so), which the suggested rename gives B's number. Names and shapes agree, values are "
            "not compared: check it is that module, with --values and the rename")


def _complete_strips(
    unmatched: Sequence[str], targets: set[str], literals: dict[Rename, tuple[str, str, tuple[str, ...]]],
) -> list[Rename]:
    """The prefix strips (first 1-3 components) that turn every sampled unmatched name into a target,
    simplest first; each is recorded in `literals` as `_candidate_renames` records it.

    Such a strip gets every sample's vote in `_candidate_renames`, so it is among the candidates ranked there.
    """
    sample = _sample(unmatched)
    if not sample:
        return []
    # A strip that gets every sample's vote is one of the first sampled name's leading prefixes that every
    # sampled name starts with (the same components: the prefix ends with a dot) and leaves a target.
    renames = []
    for old, _ in _leading_splits(sample[0]):
        cut = slice(len(old), None)
        if old and all(map(str.startswith, sample, repeat(old))) and all(
                map(targets.__contains__, map(getitem, sample, repeat(cut)))):
            rename = strip_prefix(old) if "=" not in old else Rename("^" + _escape(old), "")
            literals[rename] = (old, "", ())
            renames.append(rename)
    return sorted(renames, key=lambda rename: (len(rename.pattern), rename.pattern))  # as `_simpler` ranks


def _collides(current: Mapping[str, str], proposal: Mapping[str, str]) -> bool:
    """Whether applying `proposal` (old -> new names for some keys) to `current` maps two keys to one name."""
    if len(proposal) == len(current):  # it renames every key (its keys are current's): no merged copy needed
        return len(set(proposal.values())) != len(proposal)
    merged = {**current, **proposal}
    return len(set(merged.values())) != len(merged)


def _gains_if_none_lost(
    keys: Sequence[str], names: Sequence[str], renamed: Sequence[str], shapes_a: Mapping[str, tuple[int, ...]],
    shapes_b: Mapping[str, tuple[int, ...]], ok: set[str],
) -> int | None:
    """For a rename that moves no key to another head: the keys it matches (same name and shape as B's),
    counted with C-level loops, when none of the keys it changes matched before (so it unmatches none);
    else None, and `suggest_renames` looks at the keys one by one. The keys it changes, their names and their
    new names: three lists in step.
    """
    if not keys:
        return 0
    if any(map(shapes_b.__contains__, names)) or not ok.isdisjoint(keys):
        return None
    return sum(map(eq, map(shapes_b.get, renamed), map(tuple, map(shapes_a.__getitem__, keys))))


def _frozen_peft_copies(names: Iterable[str]) -> set[str]:
    """Keys of PEFT's frozen `original_module` copies whose module also holds a trained `modules_to_save` copy."""
    names = list(names)
    if "modules_to_save." not in "\n".join(names):  # no name holds it (one search, not an f-string per name)
        return set()
    saved = {name.split(".modules_to_save.", 1)[0] for name in names if ".modules_to_save." in f".{name}"}
    return {name for name in names if ".original_module." in f".{name}"
            and f".{name}".split(".original_module.", 1)[0][1:] in saved}


def suggest_renames(
    shapes_a: Mapping[str, tuple[int, ...]],
    shapes_b: Mapping[str, tuple[int, ...]],
    already_ok: set[str] | None = None,
    max_renames: int = 6,
) -> list[SuggestedRename]:
    """The renames of A's keys that match the most of them to B's keys, chosen greedily.

    Each step tries prefix strip/add/replace, single-component renames and transformers' legacy renames
    built from the keys that still do not match, and keeps the one that gains the most matches (same
    name and same shape) without unmatching a key or mapping two keys to one name.

    Example:
        >>> [r.flag for r in suggest_renames({"module.a.weight": (2,)}, {"a.weight": (2,)})]
        ["--rename '^module\\\\.='"]

    Args:
        shapes_a: A's keys and shapes.
        shapes_b: the names (and shapes) a key of A must take to match.
        already_ok: keys of A that count as matched whatever their name (e.g. renamed by transformers).
        max_renames: stop after this many renames.
    """
    return _suggest_renames(shapes_a, shapes_b, already_ok, max_renames)[0]


def _suggest_renames(
    shapes_a: Mapping[str, tuple[int, ...]],
    shapes_b: Mapping[str, tuple[int, ...]],
    already_ok: set[str] | None = None,
    max_renames: int = 6,
) -> tuple[list[SuggestedRename], dict[str, str], int]:
    """`suggest_renames`, with what its search already knows: each key of A -> its name after the renames (as
    `rename_all` gives them), and the length of the longest name before or after any of them (what `rename_all`
    checks against the limit, rename by rename)."""
    ok = already_ok or set()
    current: dict[str, str] = {name: name for name in shapes_a}
    longest = max(map(len, current), default=0)
    chosen: list[SuggestedRename] = []
    # PEFT's modules_to_save keeps the module as it was (`classifier.original_module.*`, frozen) beside the copy
    # that trained (`classifier.modules_to_save.default.*`), which merge_and_unload keeps: the frozen copy
    # matching B is no evidence, or the simpler rename onto it would hand back the untrained head.
    frozen = _frozen_peft_copies(shapes_a)

    # Prefix renames as plain strings (old prefix, new prefix, prefixes spared): same result as the regex.
    literals: dict[Rename, tuple[str, str, tuple[str, ...]]] = {}

    def changes(rename: Rename) -> tuple[list[str], list[str], list[str]]:
        """The keys of A that `rename` changes, their current names and their names after it (lists in step),
        picked with C-level loops."""
        literal = literals.get(rename)
        keys, names = list(current), list(current.values())
        if literal is None:
            sub = re.compile(rename.pattern).sub  # as Rename.apply does, compiled once
            replacement = rename.replacement
            renamed = [sub(replacement, new, count=1) for new in names]
            hits = list(map(ne, renamed, names))
            return list(compress(keys, hits)), list(compress(names, hits)), list(compress(renamed, hits))
        old_prefix, new_prefix, spared = literal
        if old_prefix == new_prefix:
            return [], [], []  # every name it touches keeps its name
        cut = len(old_prefix)
        if not spared and all(map(str.startswith, names, repeat(old_prefix))):
            pass  # every name has the prefix (a DDP `module.` on 10,000s of keys): all of them change
        else:
            hits = list(map(str.startswith, names, repeat(old_prefix)))
            if spared:
                hits = list(map(and_, hits, map(not_, map(str.startswith, names, repeat(spared)))))
            keys, names = list(compress(keys, hits)), list(compress(names, hits))
        tails = map(getitem, names, repeat(slice(cut, None)))
        return keys, names, list(map(new_prefix.__add__, tails)) if new_prefix else list(tails)

    def evaluate(rename: Rename) -> tuple[int, list[str], dict[str, str]]:
        """(matches gained, keys it would unmatch, old -> new for the keys it changes)."""
        gained, lost = 0, []
        literal = literals.get(rename)
        # A prefix rename between prefixes that hold no head word cannot move a key to another head.
        heads_unchanged = literal is not None and not any(
            (prefix and not prefix.endswith(".")) or _head_words(prefix) for prefix in literal[:2])
        keys, names, new_names = changes(rename)
        proposal = dict(zip(keys, new_names, strict=True))
        if heads_unchanged and not frozen and (
                gains := _gains_if_none_lost(keys, names, new_names, shapes_a, shapes_b, ok)) is not None:
            return gains, lost, proposal
        for name, new, renamed in zip(keys, names, new_names, strict=True):
            if name in frozen:
                continue
            if new in shapes_b or name in ok:  # matched before
                if renamed not in shapes_b:
                    lost.append(name)
            # One head moved onto another (`pooler.dense` -> `cls.predictions.transform.dense`) is a lookalike,
            # not evidence: heads differ between tasks by design.
            elif shapes_b.get(renamed) == tuple(shapes_a[name]) and (  # same name and shape as B's
                    heads_unchanged or not _other_head(new, renamed)):
                gained += 1
        return gained, lost, proposal

    for _ in range(max_renames):
        # The keys whose current name is none of B's (and not already counted as matched), in order.
        unmatched = list(compress(current, map(not_, map(shapes_b.__contains__, current.values()))))
        if ok:
            unmatched = list(filterfalse(ok.__contains__, unmatched))
        if not unmatched:
            break
        if len(unmatched) == len(current):  # no key has one of B's names (a DDP `module.` on every key)
            targets = set(shapes_b)
        else:
            taken = set(current.values())
            targets = set(filterfalse(taken.__contains__, shapes_b))  # B's names no key has, in B's order
        if not targets:
            break
        best: tuple[int, Rename, dict[str, str]] | None = None
        # Before the first rename every key has its own name: the keys are their names.
        unmatched_names = list(map(current.__getitem__, unmatched)) if chosen else unmatched
        # A prefix strip that matches every unmatched key, unmatches none and maps no two keys to one name
        # cannot be beaten: no rename gains more, and none is simpler (it adds nothing; the simplest such
        # strip is tried first). Found, it spares building the index of every target that ranks the other
        # candidates (a DDP `module.` on 10,000 keys: half the search). A strip that would unmatch keys
        # could have a simpler sparing variant: then the full search decides.
        complete = False
        for rename in _complete_strips(unmatched_names, targets, literals):
            gained, lost, proposal = evaluate(rename)
            if lost:
                break
            if gained == len(unmatched) and not _collides(current, proposal):
                best, complete = (gained, rename, proposal), True
                break
        # Prefix and legacy renames first; only when none helps, rename or drop one component.
        for structural in (False, True) if best is None else ():
            candidates = _candidate_renames(unmatched_names, targets, structural=structural, literals=literals)
            for candidate in candidates:
                rename = candidate
                if best is not None:
                    # A rename gains at most the unmatched keys it matches: skip those that cannot beat the
                    # best so far (their spared variants below have longer patterns, so they cannot either).
                    literal = literals.get(rename)
                    if literal is not None:
                        bound = sum(map(str.startswith, unmatched_names, repeat(literal[0])))
                    else:
                        bound = sum(1 for _ in filter(re.compile(rename.pattern).search, unmatched_names))
                    if bound < best[0] or (bound == best[0] and not _simpler(rename, best[1])):
                        continue
                gained, lost, proposal = evaluate(rename)
                if lost and rename.pattern.startswith("^") and not rename.pattern.startswith("^(?!"):
                    # Spare the keys it would break: `^(?!lm_head\.)` -> `model.` leaves `lm_head.weight` alone.
                    heads = sorted({current[n].split(".", 1)[0] for n in lost})
                    if len(heads) <= 4:
                        spared = "|".join(_escape(h) for h in heads)
                        literal = literals.get(rename)
                        rename = Rename(f"^(?!(?:{spared})\\.)" + rename.pattern[1:], rename.replacement)
                        if literal is not None:
                            literals[rename] = (literal[0], literal[1], tuple(h + "." for h in heads))
                        gained, lost, proposal = evaluate(rename)
                if lost or gained == 0 or _collides(current, proposal):
                    continue
                if best is None or gained > best[0] or (
                    gained == best[0] and _simpler(rename, best[1])
                ):
                    best = (gained, rename, proposal)
            if best is not None:
                break
        # Several modules of one list under other numbers (a pipeline stage's layers 16-31 saved as 0-15): one
        # rename a module, found together, where one rename at a time would pair them by the order of the names'
        # text (layer 10 onto 18) or, tied, not at all.
        if not complete and (block := _renumbering_step(unmatched, unmatched_names, targets, current, shapes_a,
                                                         shapes_b, ok)) is not None and block[0] > (
                best[0] if best is not None else 0):
            current.update(block[1])
            longest = max(longest, max(map(len, block[1].values()), default=0))
            chosen += block[2]
            continue
        if best is None:
            break
        gained, rename, proposal = best
        current.update(proposal)
        longest = max(longest, max(map(len, proposal.values()), default=0))
        chosen.append(SuggestedRename(rename.pattern, rename.replacement, rename.as_flag(), gained))
        if complete:
            # It matched every unmatched key and unmatched none: the next step would find no unmatched key (a
            # pass over every name to learn it, 10,000 for a DDP `module.`) and stop.
            break
    if chosen:
        chosen, current = _narrowed_prefix_adds(chosen, current, shapes_a, shapes_b)
    return chosen, current, longest


def _narrowed_prefix_adds(
    chosen: list[SuggestedRename], current: dict[str, str], shapes_a: Mapping[str, tuple[int, ...]],
    shapes_b: Mapping[str, tuple[int, ...]],
) -> tuple[list[SuggestedRename], dict[str, str]]:
    """`chosen`, each prefix it adds before every key but a few (`^(?!(?:vit)\\.)` -> `vit.embeddings.`) narrowed
    to the keys that end up matching B, where those are the fewer of the keys it renames; with the new names.

    A timm ViT against transformers' ViT had `vit.embeddings.` put before all 29 of its other keys for two of them
    (`cls_token`, and `pos_embed` that a later rename turns into `position_embeddings`): the other 27 were left
    under names that neither side has (`vit.embeddings.blocks.0.attn.qkv.weight`), in the report after the renames
    and in the state dict the snippet writes. Narrowed (`^(cls_token|pos_embed)(?![^.])` -> `vit.embeddings.\\1`),
    the rename renames what it matches. Every key matched before is matched under the same name after, no two keys
    share a name, or the rename is left as it was.

    Example:
        >>> a = {"cls_token": (1,), "blocks.0.w": (2,), "head.w": (3,)}
        >>> b = {"vit.embeddings.cls_token": (1,), "vit.encoder.layer.0.w": (2,), "classifier.w": (3,)}
        >>> chosen, names = _narrowed_prefix_adds([SuggestedRename("^", "vit.embeddings.", "", 1)],
        ...                                       {k: "vit.embeddings." + k for k in a}, a, b)
        >>> chosen[0].pattern, names["blocks.0.w"]
        ('^cls_token(?![^.])', 'blocks.0.w')
    """
    matched: set[str] | None = None  # the keys matched before, found once a rename is one this narrows
    for index, suggestion in enumerate(chosen):
        pattern = suggestion.pattern
        if not suggestion.replacement or not (pattern == "^" or _SPARING_LOOKAHEAD.fullmatch(pattern)):
            continue  # not a prefix added where there was none
        if rename_reason(Rename(pattern, suggestion.replacement))[0] != "renamed":
            continue  # a wrapper's or the base model's prefix: from_pretrained adds it to every key, as it is
        if matched is None:
            matched = {key for key, name in current.items() if shapes_b.get(name) == tuple(shapes_a[key])}
        before = [Rename(s.pattern, s.replacement) for s in chosen[:index]]
        names = {key: _rename_all(key, before) for key in current}
        search = re.compile(pattern).search
        renamed = [key for key, name in names.items() if search(name)]
        keep = [key for key in renamed if key in matched]
        heads = sorted({names[key].split(".", 1)[0] for key in keep})
        if not keep or 2 * len(keep) >= len(renamed) or len(heads) > 4:
            continue
        prefix = suggestion.replacement
        narrowed = (Rename(f"^{_escape(heads[0])}(?![^.])", prefix + heads[0].replace("\\", "\\\\"))
                    if len(heads) == 1 else Rename(f"^({'|'.join(map(_escape, heads))})(?![^.])", prefix + "\\1"))
        trial = [*chosen[:index], SuggestedRename(narrowed.pattern, narrowed.replacement, narrowed.as_flag(),
                                                  suggestion.matches_gained), *chosen[index + 1:]]
        renames = [Rename(s.pattern, s.replacement) for s in trial]
        after = {key: _rename_all(key, renames) for key in current}
        if any(after[key] != current[key] for key in matched) or len(set(after.values())) != len(after) or sum(
                shapes_b.get(name) == tuple(shapes_a[key]) for key, name in after.items()) != len(matched):
            continue
        chosen, current = trial, after
    return chosen, current


def _renumbering_step(
    unmatched: Sequence[str], unmatched_names: Sequence[str], targets: set[str], current: Mapping[str, str],
    shapes_a: Mapping[str, tuple[int, ...]], shapes_b: Mapping[str, tuple[int, ...]], ok: set[str],
) -> tuple[int, dict[str, str], list[SuggestedRename]] | None:
    """The renames of `renumbered_block` as one step of `_suggest_renames`: (keys matched, old -> new name for the
    keys they change, the renames in the order they apply); None where there is no such block, or its renames
    would unmatch a key or give two keys one name."""
    moves = renumbered_block(unmatched_names, [shapes_a[key] for key in unmatched],
                             {target: shapes_b[target] for target in targets}, current.values(), shapes_b)
    if not moves:
        return None
    renames = [Rename("^" + _escape(old), new.replace("\\", "\\\\")) for old, new in moves]
    # Two or more moves of one list are one anchored rename each (`^model\\.layers\\.0\\.`), a literal prefix
    # under that list: a name's own prefix there, looked up, is the rename that applies (A's numbers and B's are
    # disjoint: no renamed name matches a later rename). One lookup a name, not one regex a name and a rename.
    new_of = dict(moves)
    gains = dict.fromkeys(new_of, 0)
    module = moves[0][0].rstrip(".").rpartition(".")[0]
    start = len(module) + 1 if module else 0
    proposal: dict[str, str] = {}
    for key, name in current.items():
        if module and not name.startswith(module + "."):
            continue
        end = name.find(".", start) + 1
        old = name[:end] if end else ""
        if old not in new_of:
            continue
        renamed = new_of[old] + name[end:]
        if name in shapes_b or key in ok or shapes_b.get(renamed) != tuple(shapes_a[key]):
            return None  # it would unmatch a key, or move one onto a name of another shape
        proposal[key] = renamed
        gains[old] += 1
    if _collides(current, proposal):
        return None
    return len(proposal), proposal, [SuggestedRename(rename.pattern, rename.replacement, rename.as_flag(),
                                                     gains[old]) for rename, (old, _) in zip(renames, moves,
                                                                                            strict=True)]


def _prefix_of(rename: Rename) -> str:
    """The module prefix a base-model-prefix rename strips or adds: `^model\\.` -> "model"."""
    anchored = _SPARING_LOOKAHEAD.sub("^", rename.pattern)
    old = anchored.lstrip("^").replace("\\", "")
    return (old or rename.replacement).rstrip(".")


def rename_reason(rename: Rename) -> tuple[str, str]:
    """(reason, severity) for keys that a suggested rename maps: what kind of difference it fixes."""
    if any(rename == legacy for legacy in LEGACY_RENAMES):
        return "legacy-name", "warn"
    anchored = _SPARING_LOOKAHEAD.sub("^", rename.pattern)
    text = anchored.lstrip("^").replace("\\", "") + "|" + rename.replacement
    if anchored.startswith("^"):
        old = anchored[1:].replace("\\", "")
        if any(old.startswith(w) or (old == "" and rename.replacement.startswith(w)) for w in _WRAPPERS):
            return "wrapper-prefix", "error"
        if any(old == p or (old == "" and rename.replacement == p) for p in _BASE_PREFIXES):
            return "base-model-prefix", "warn"
        if any(w in text for w in _WRAPPERS[:4]):
            return "wrapper-prefix", "error"
    return "renamed", "error"


# ---------------------------------------------------------------------------------------------------------------
# Classification of single keys.


def _tied_output_weight(module: str, specs_b: Mapping[str, KeySpec]) -> KeySpec | None:
    """The input embedding B stores for the output embedding `module` an adapter targets (`lm_head` of GPT-2, whose
    weight save_pretrained writes once, as `transformer.wte.weight`), or None.

    The module is in the model B builds, tied: peft adapts it there (a LoRA or trainable-tokens adapter on lm_head of
    a tied model was "targets lm_head, which B does not have: the adapter's weights for it are dropped").

    Example:
        >>> b = {"transformer.wte.weight": KeySpec("transformer.wte.weight", (100, 64), "float32")}
        >>> _tied_output_weight("lm_head", b).name
        'transformer.wte.weight'
    """
    if not _OUTPUT_EMBEDDING.search(module + ".weight"):
        return None
    return next((candidate for candidate in _first_embedding(specs_b, _INPUT_EMBEDDING_ENDS)
                 if _INPUT_EMBEDDING.search(candidate.name) and "position" not in candidate.name), None)


def _ties_to_embedding(name: str, shape: tuple[int, ...], other: Mapping[str, KeySpec]) -> str | None:
    """The input embedding (in `other`) that the output embedding `name` would be tied to, if any."""
    if not _OUTPUT_EMBEDDING.search(name):
        return None
    for candidate in _first_embedding(other, _INPUT_EMBEDDING_ENDS):
        if _INPUT_EMBEDDING.search(candidate.name) and candidate.shape == shape and "position" not in candidate.name:
            return candidate.name
    return None


def _first_embedding(other: Mapping[str, KeySpec], ends: tuple[str, ...]) -> Iterator[KeySpec]:
    """The specs of `other` whose names end with one of `ends`, in order: the only ones an embedding regex can match.

    A missing input embedding against a DDP A (`module.` on every key) scanned all 10,002 keys with a regex search
    each (5-6 ms of a 55 ms diff); this C-level filter takes ~0.5 ms and leaves the regex one or two names.
    """
    specs = other.values()
    return compress(specs, map(str.endswith, map(attrgetter("name"), specs), repeat(ends)))


def _filled_by_output_embedding(name: str, shape: tuple[int, ...], other: Mapping[str, KeySpec]) -> str | None:
    """The output embedding (in `other`, A's keys) that fills the missing input embedding `name` on load, if any.

    The other way round from `_ties_to_embedding`: a state dict torch.save wrote keeps both names of a tied pair, and
    a convert without a config.json keeps the first in sorted order, `lm_head.weight`; from_pretrained ties
    `transformer.wte.weight` to it and reports nothing missing, where this was said "unknown: will not load".
    """
    if not _INPUT_EMBEDDING.search(name) or "position" in name:
        return None
    for candidate in _first_embedding(other, _OUTPUT_EMBEDDING_ENDS):
        if _OUTPUT_EMBEDDING.search(candidate.name) and candidate.shape == shape:
            return candidate.name
    return None


def tied_index(groups: Sequence[Sequence[str]]) -> dict[str, Sequence[str]]:
    """Each name of `groups` mapped to its group (the first one that holds it), for `classify_key`.

    Example:
        >>> tied_index([["lm_head.weight", "wte.weight"]])["wte.weight"]
        ['lm_head.weight', 'wte.weight']
    """
    index: dict[str, Sequence[str]] = {}
    for group in groups:
        for name in group:
            index.setdefault(name, group)
    return index


def _reparametrization(name: str, kind: str, this_side: Mapping[str, KeySpec],
                       own_side: Mapping[str, KeySpec] | None) -> tuple[str, str, str] | None:
    """Reason `reparametrized` for a key one side keeps under torch.nn.utils.prune, spectral_norm or parametrize and
    the other as the plain weight (`fc.weight_orig`, `fc.weight_mask` against `fc.weight`), either way round: a
    pruned model's fc.weight against the same model unpruned read "task-head: not used by B, dropped" and its
    weight_orig and weight_mask "unknown", with no word of prune.

    Example:
        >>> _reparametrization("fc.weight", "unexpected", {"fc.weight_orig": None, "fc.weight_mask": None}, None)
        ('reparametrized', 'error', 'B keeps it under torch.nn.utils.prune (fc.weight_mask, fc.weight_orig)')
    """
    kept = reparametrized_name(name, own_side) if own_side is not None else None
    if kept is not None and kept.stored in this_side:
        return "reparametrized", "error", (f"{'A' if kind == 'unexpected' else 'B'} keeps {kept.stored} under "
                                           f"torch.nn.utils.{kept.family}, which "
                                           f"{'B' if kind == 'unexpected' else 'A'} stores plainly")
    plain = kept_under(name, this_side)
    if plain is None:
        return None
    kept_names = sorted(n for n in _reparametrized_siblings(name, plain) if n in this_side)
    return "reparametrized", "error", (f"{'B' if kind == 'unexpected' else 'A'} keeps it under "
                                       f"torch.nn.utils.{plain.family} ({', '.join(kept_names)})")


def _reparametrized_siblings(name: str, plain: Reparametrized) -> tuple[str, ...]:
    """The names a reparametrization of `plain.family` keeps `name` under (those of parametrize's own state aside)."""
    if plain.family == "parametrize":
        module, _, leaf = name.rpartition(".")
        base = f"{module}.parametrizations.{leaf}.original" if module else f"parametrizations.{leaf}.original"
        return base, base + "0", base + "1"
    return {"prune": (name + "_orig", name + "_mask"), "weight_norm": (name + "_g", name + "_v")}.get(
        plain.family, (name + "_orig", name + "_u", name + "_v"))


def _reparametrized_whys(missing: Sequence[str], unexpected: Sequence[str], specs_a: Mapping[str, KeySpec],
                         specs_b: Mapping[str, KeySpec]) -> tuple[dict[str, tuple[str, str, str]], str]:
    """Reason `reparametrized` for each missing or unexpected key that one side keeps under torch.nn.utils.prune,
    spectral_norm or parametrize and the other as the plain weight (`_reparametrization`), and a note saying, once per
    reparametrization, how to remove it."""
    joined = "\n".join((*missing, *unexpected))
    if "parametrizations." not in joined and not _REPARAMETRIZED_ENDING.search(joined):
        return {}, ""  # a substring search and one regex pass over the names joined: every diff runs them
    whys = {name: _reparametrization(name, "missing", specs_a, specs_b) for name in missing}
    whys.update({name: _reparametrization(name, "unexpected", specs_b, specs_a) for name in unexpected})
    found = {name: why for name, why in whys.items() if why is not None}
    families: dict[str, Reparametrized] = {}
    for side in (specs_a, specs_b):
        for name in found:
            kept = reparametrized_name(name, side) if name in side else None
            if kept is not None:
                families.setdefault(kept.family, kept)
    return found, "; ".join(kept.how_to_remove for kept in families.values())


# The modules torch.ao.quantization's prepare / prepare_qat adds: each layer's `weight_fake_quant` and
# `activation_post_process` (eager mode), FX's top-level `activation_post_process_N`; their state is the observer's
# min_val / max_val, the fake quantizer's scale, zero_point, fake_quant_enabled, observer_enabled.
_TORCH_AO_OBSERVER = _lazy_regex(r"(?:^|\.)(?:activation_post_process(?:_\d+)?|weight_fake_quant)\.")
# A name ending in a reparametrization's suffix (_orig, _mask, _u, _v, _g), among names joined by newlines (a newline
# inside a name can only make it match where it would not: the slow path then). With a search for "parametrizations."
# first, 0.95 ms on 20,000 names, where a per-name str.endswith took 3.2 ms.
_REPARAMETRIZED_ENDING = _lazy_regex(r"_(?:orig|mask|[uvg])(?:\n|\Z)")


# torch.ao.quantization's quantized Linear (quantize_dynamic's, convert's) saves weight and bias as one tuple,
# `<layer>._packed_params._packed_params`, no tensor: only its output `scale` and `zero_point` are tensors.
TORCH_AO_PACKED = "._packed_params._packed_params"
_TORCH_AO_FLOAT_LEAVES = ("weight", "bias")
_TORCH_AO_OUTPUT_LEAVES = ("scale", "zero_point")


def torch_ao_packed_layers(non_tensor_keys: Iterable[str]) -> frozenset[str]:
    """The layers whose weight and bias a state dict keeps in torch.ao.quantization's packed tuple (`fc1` for
    `fc1._packed_params._packed_params`), told from its entries that are not tensors (`Checkpoint.non_tensor_keys`).

    Example:
        >>> sorted(torch_ao_packed_layers(["fc1._packed_params._packed_params", "fc1._packed_params.dtype"]))
        ['fc1']
    """
    return frozenset(name[: -len(TORCH_AO_PACKED)] for name in non_tensor_keys if name.endswith(TORCH_AO_PACKED))


# A BatchNorm's state: fuse_modules folds it into the Conv before it (conv + bn [+ relu]), so the quantized model
# has no BatchNorm where the float model has one.
_BATCHNORM_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torch_ao_quantized_tensors(checkpoint: Checkpoint) -> frozenset[str]:
    """The names of a checkpoint's torch.ao.quantization quantized tensors (convert's quantized Conv / Embedding
    weights, listed as their integers): only a pickle holds them, and only as int8 / uint8 / int32."""
    return frozenset(t.name for t in checkpoint.tensors
                     if t.dtype in ("int8", "uint8", "int32") and checkpoint.torch_ao_quantized(t.name) is not None)


def _torch_ao_packed_whys(missing: Sequence[str], unexpected: Sequence[str], packed_a: frozenset[str],
                          packed_b: frozenset[str], qtensors: tuple[frozenset[str], frozenset[str]] = (
                              frozenset(), frozenset())) -> tuple[dict[str, tuple[str, str, str]], str]:
    """Keys that differ because one side is a torch.ao.quantization quantized model and the other the float model:
    its Linear layers' weight and bias packed in one tuple, its Conv / Embedding weights quantized tensors (`qtensors`:
    A's and B's names), each quantized layer's output scale / zero_point and each QuantStub's input scale /
    zero_point as tensors, and a BatchNorm that fuse_modules folded into its Conv gone. The float `fc1.weight` /
    `bias` were "unknown", `fc1.scale` "likely the model's own parameter", a Conv's `scale` "written by a quantizer
    (GPTQ, AWQ, ...)", every `zero_point` "unknown".
    Returns ({name: (reason, severity, detail)}, the note on what to do; "" when there are none)."""
    quantized_layers = tuple(packed | {name.rpartition(".")[0] for name in names}
                             for packed, names in zip((packed_a, packed_b), qtensors, strict=True))
    whys: dict[str, tuple[str, str, str]] = {}
    sides: set[str] = set()
    for names, kind in ((missing, "missing"), (unexpected, "unexpected")):
        # The side that holds these keys (B for missing ones, A for unexpected ones) and the other side.
        own, other = (1, 0) if kind == "missing" else (0, 1)
        own_side, other_side = "AB"[own], "AB"[other]
        listed = set(names)
        for name in names:
            layer, _, leaf = name.rpartition(".")
            # The side that quantized this layer: A holds the packed tuple where B's float weight is missing, or
            # A's output scale is unexpected; B holds it the other way round.
            # QuantWrapper(model) quantizes the model under `module.`, beside its QuantStub `quant`: the float
            # model's `fc.weight` is `module.fc`'s.
            in_a = layer in packed_a or f"module.{layer}" in packed_a
            in_b = layer in packed_b or f"module.{layer}" in packed_b
            if leaf in _TORCH_AO_FLOAT_LEAVES and kind == "missing" and in_a:
                whys[name] = ("quantization", "error", f"A keeps it packed in <layer>{TORCH_AO_PACKED} (a "
                              "torch.ao.quantization quantized Linear's weight and bias, a tuple, no tensor): B's "
                              "float model cannot load it")
                sides.add("A")
            elif leaf in _TORCH_AO_FLOAT_LEAVES and kind == "unexpected" and in_b:
                whys[name] = ("quantization", "error", f"B keeps it packed in <layer>{TORCH_AO_PACKED} (a "
                              "torch.ao.quantization quantized Linear): B's quantized model does not load a float "
                              "weight by this name")
                sides.add("B")
            elif leaf in _TORCH_AO_OUTPUT_LEAVES and layer in quantized_layers[own]:
                # One detail for every layer: the report groups keys by kind, reason and detail.
                whys[name] = ("quantization", "warn", f"an output scale / zero_point of {own_side}'s "
                              "torch.ao.quantization quantized layers (calibrated by prepare and convert; "
                              "quantize_dynamic's are 1.0 and 0, unused): no float model has it")
                sides.add(own_side)
            elif (leaf in _TORCH_AO_OUTPUT_LEAVES and quantized_layers[own]
                  and {f"{layer}.scale", f"{layer}.zero_point"} <= listed and f"{layer}.weight" not in listed):
                # convert's Quantize module, which replaces a QuantStub: the input's scale and zero point, no weight.
                whys[name] = ("quantization", "warn", f"the input scale / zero_point of {own_side}'s "
                              "torch.ao.quantization QuantStub (convert's Quantize module, calibrated by prepare): "
                              "no float model has it")
                sides.add(own_side)
            elif (leaf in _BATCHNORM_LEAVES and quantized_layers[other] and layer not in quantized_layers[other]
                  and f"{layer}.running_mean" in listed):
                whys[name] = ("quantization", "warn", f"a BatchNorm of {own_side}'s float model that "
                              f"{other_side}'s torch.ao.quantization quantized model does not have: fuse_modules "
                              "folded it into the Conv before it (conv + bn) before quantizing")
                sides.add(other_side)
    if not whys:
        return {}, ""
    quantized = "A" if "A" in sides else "B"
    at = 0 if quantized == "A" else 1
    packed = sorted(packed_a if at == 0 else packed_b)
    held = sorted(qtensors[at])
    parts = [*([f"{_first_names(packed)}: weight and bias packed in <layer>{TORCH_AO_PACKED}"] if packed else []),
             *([f"{_first_names(held)}: quantized tensors (qint8 / quint8 integers with their scale and zero point "
                "inside), which a float model's load_state_dict refuses (\"Copying from quantized Tensor to "
                "non-quantized Tensor is not allowed\")"] if held else [])]
    wrapped = any(name.startswith("module.") for name in (*packed, *held)) and any(
        name == "quant.scale" for name in whys)
    dequantize = [*(["layer.weight().dequantize() and layer.bias() for each quantized Linear"] if packed else []),
                  *(["{k: v.dequantize() if v.is_quantized else v for k, v in state_dict.items()} for the "
                     "quantized tensors"] if held else [])]
    return whys, (f"{quantized} is a torch.ao.quantization quantized model ({'; '.join(parts)}; beside each "
                  "quantized layer its output scale and zero_point) and the other side its float model: load the "
                  "state dict into the model quantized the same way (quantize_dynamic, or prepare and convert, then "
                  f"load_state_dict), or dequantize it on that model for the float one ({'; '.join(dequantize)})"
                  + ("; its names are QuantWrapper's (the model under `module.`, its QuantStub `quant`): taking "
                     "the prefix off (--rename '^module\\.=') matches the names, not the quantized values"
                     if wrapped else ""))


def classify_key(
    name: str,
    spec: KeySpec,
    kind: str,
    this_side: Mapping[str, KeySpec],
    tied_groups: Sequence[Sequence[str]] | Mapping[str, Sequence[str]] = (),
    tie_embeddings: bool | None = None,
    quantization: str | None = None,
    target: Mapping[str, KeySpec] | None = None,
    tie_embeddings_a: bool | None = None,
    own_side: Mapping[str, KeySpec] | None = None,
    quantizers: tuple[str | None, str | None] = (None, None),
) -> tuple[str, str, str]:
    """(reason, severity, detail) for a key that is missing (`kind="missing"`) or unexpected.

    `this_side` is the side that lacks the key's counterpart: A's keys for a missing key (could A
    supply it by tying?), B's keys for an unexpected one. `tie_embeddings` is the target config's
    `tie_word_embeddings` when known: False means an output embedding is never explained by tying.
    `quantization` names the quantizer the target config's `quantization_config` asks for (e.g.
    "bitsandbytes 4-bit"): side tensors are then expected (info), not a quantizer to go and find (warn).
    `tied_groups`: the groups, or each name's group (`tied_index`): a caller classifying every key of a large
    group passes the index, as scanning the groups for each key costs n² for n tied names. `tie_embeddings_a`: the
    other side's `tie_word_embeddings` (A's for a missing key, B's for an unexpected one), taken where
    `tie_embeddings` is None. `own_side`: the keys of the side that holds the key (B's for a missing key, A's for an
    unexpected one), which tell whether a top-level `fc` is a classifier or a layer that feeds another.
    `quantizers`: the quantizer the config of the side that holds the key names, then the other side's (checkpoint
    mode, where `quantization` is None): a side tensor is then told to be that quantizer's.
    """
    if _BUFFER.search(name):
        return "buffer", "info", ""
    if name == "n_averaged" or name.endswith(".n_averaged"):
        # torch.optim.swa_utils.AveragedModel's step counter, beside its `module.` copy of the model: torchvision's
        # --model-ema checkpoints (model_ema), SWA, timm's ModelEmaV3 does not keep one. It was "no known cause".
        return "buffer", "info", ("AveragedModel's count of averaged steps (torchvision's model_ema, SWA): "
                                  "no weight; AveragedModel starts it at 0")
    group = (tied_groups.get(name) if isinstance(tied_groups, Mapping)
             else next((group for group in tied_groups if name in group), None))
    if group is not None:
        other = next((n for n in group if n != name), None)
        if kind == "missing" and other is not None:
            return "tied-weight", "info", f"one tensor with {other} in B, which A has: tied on load"
        return "tied-weight", "info", f"shares storage with {other}" if other is not None else ""
    # One side's config calls the output layer untied and the other side has none (a plain state dict): untied, as
    # the filler below always took it. The tie itself took the untied config of one direction only: B's missing
    # lm_head was "tied to" A's embedding where A's config says untied (it starts at random: warn), and A's
    # unexpected lm_head "tied to" B's embedding where B's config says so.
    untied = tie_embeddings is False or (tie_embeddings is None and tie_embeddings_a is False)
    tied = _ties_to_embedding(name, spec.shape, this_side) if not untied else None
    if tied is not None:
        return "tied-weight", "info", f"tied to {tied}"
    filler = (_filled_by_output_embedding(name, spec.shape, this_side)
              if kind == "missing" and not untied else None)
    # B stores the output embedding beside the input one, not as one tensor (a tied group returned above): B's model
    # keeps two, so A's output embedding loads into B's and the input embedding starts at random.
    if filler is not None and (target is None or filler not in target):
        return "tied-weight", "info", f"tied to {filler}, which A has: filled from it on load"
    reparametrization = _reparametrization(name, kind, this_side, own_side)
    if reparametrization is not None:
        return reparametrization
    if _TORCH_AO_OBSERVER.search(name):
        # A QAT checkpoint (prepare_qat's model, trained) against the float model: every observer's and fake
        # quantizer's state was "unknown: these weights will not load", an error, beside weights that all match.
        return "quantization", "warn", (
            "torch.ao.quantization's observer / fake-quantizer state (prepare_qat's or prepare's model): "
            + ("B's model has them and A, a model not prepared so, does not: they start afresh and calibrate again"
               if kind == "missing" else
               "B's model, not prepared so, has none: its weights load without them (load_state_dict strict=False), "
               "the calibration is lost; convert() of the prepared model gives the quantized one"))
    if _ADAPTER.search(name):
        return "adapter", "warn", ""
    # Round 27's names (VPTQ's `perm`, `indices`, `centroids.weight`, HIGGS' `tables`, ...) are a quantizer's only in
    # a layer quantized that way, under a quantization_config too: in a GPTQ checkpoint a model's own
    # `masked_embedding.centroids.weight` was "read by the gptq quantizer" (info), where it is unknown (an error).
    if _QUANT.search(name) and (own_side is None or not _LAYER_ONLY_SIDE.search(name)
                                or _in_quantized_layer(name, own_side)):
        if quantization:
            return "quantization", "info", f"read by the {quantization} quantizer (quantization_config)"
        if own_side is not None and _GENERIC_SIDE.search(name) and not _in_quantized_layer(name, own_side):
            # A model's own `scales` or `scale` (a norm's, a layer scale) was "written by a quantizer ... beside
            # its quantized weight: add that quantizer's quantization_config".
            return "quantization", "warn", (
                "named as quantizers name their scales and zeros, but no quantized weight of its layer is beside it "
                "(no qweight, q_weight, W_q or integer weight): likely the model's own parameter, not a "
                "quantizer's")
        return "quantization", "warn", side_tensor_detail(name, kind, *quantizers)
    if kind == "missing":
        stored = [name[: -len("weight")] + leaf for leaf in _QUANTIZED_STORAGE] if name.endswith(".weight") else []
        stored.append(name + "_blocks")  # MXFP4 (gpt-oss): `experts.down_proj` as `experts.down_proj_blocks`
        found = next((candidate for candidate in stored if candidate in this_side
                      and (not _LAYER_ONLY_SIDE.search(candidate) or _in_quantized_layer(candidate, this_side))), None)
        if found is not None and quantization:
            return "quantization", "info", f"stored quantized as {found}; the {quantization} quantizer builds it"
        if found is not None:
            # A quantized checkpoint into an unquantized model: nothing unpacks it on this load.
            return "quantization", "error", (f"A stores it quantized as {found}; a model without that quantizer "
                                             "gets it only once the checkpoint is dequantized")
    if kind == "missing" and _OUTPUT_EMBEDDING.search(name):
        # Not a new task head: the pretrained output layer of a language model, and not tied to any input
        # embedding here, so it starts random and what the model generates is noise until it is trained.
        return "task-head", "warn", "the language-model output layer, initialized at random (not tied)"
    if name == "final_logits_bias" or name.endswith(".final_logits_bias"):
        # The generation head's output bias of BART, mBART, Pegasus, Blenderbot, PLBart, LED, Marian, MVP: a buffer
        # (no optimizer trains it) the model builds as zeros beside its tied lm_head. BartModel against
        # BartForConditionalGeneration called it "unknown: these weights will not load", an error, either way round,
        # where from_pretrained of the base into the head reports nothing (its _keys_to_ignore_on_load_missing) and
        # of the head into the base the one unexpected key, dropped.
        return "task-head", "info", ("not used by B, dropped" if kind != "missing" else
                                     "the generation head's output bias, a buffer the model sets to zeros")
    if _HEAD.search(name) or _top_fc_is_head(name, own_side) or _top_linear_is_head(name, own_side):
        # A head's bias starts at the model's own init, not at random: transformers' _init_weights zeroes a
        # Linear's bias ("initialized at random" stood beside classifier.bias, which from_pretrained leaves at zeros).
        detail = "not used by B, dropped" if kind != "missing" else new_head_detail(name, spec.shape)
        return "task-head", "info", detail
    return "unknown", "error", ""


# A norm layer's module name (`layer_norm`, `LayerNorm`, `ln_f`, `norm`, `rms_norm`): its 1-D weight and bias in a
# new head are constants set by the model's _init_weights, not random draws.
_NORM_MODULE = _lazy_regex(r"(?i)(?:^|[._])(?:ln(?:_\w*)?|\w*norm\w*|\w*rms\w*)$")
_LAYER_NORM_MODULE = _lazy_regex(r"(?i)(?:^|[._])(?:ln(?:_\w*)?|\w*layer_?norm\w*)$")


def new_head_detail(name: str, shape: Sequence[int]) -> str:
    """What from_pretrained leaves in a key of a new task head that the checkpoint lacks.

    A Linear's weight is drawn at random; its bias, and a norm's weight and bias, are set by the model's
    _init_weights: RoBERTa's new `lm_head.layer_norm.weight` (BERT's `cls.predictions.transform.LayerNorm.weight`)
    loads as ones and its bias as zeros, which "initialized at random" misstated. An RMSNorm that scales by
    1 + weight loads its missing weight as zeros: measured (transformers 5.25, from_pretrained of a checkpoint
    without it) for GemmaRMSNorm, Gemma2RMSNorm and Gemma3RMSNorm. (A Gemma, Gemma 2 or Gemma 3 base into its
    ForCausalLM or ForSequenceClassification adds no norm: only `score.weight`, at random; the lm_head is tied.)
    """
    stem, _, leaf = name.rpartition(".")
    if len(shape) == 1 and leaf in ("weight", "bias") and _NORM_MODULE.search(stem):
        if leaf == "bias":
            return "new, set to zeros by the model (a norm's shift), not random"
        if _LAYER_NORM_MODULE.search(stem):
            return "new, set to ones by the model (a LayerNorm's scale), not random"
        return ("new, set by the model to the norm's constant scale (ones; zeros where it scales by 1 + weight, "
                "as Gemma's RMSNorm), not random")
    return "new, initialized by the model" if leaf == "bias" else "new, initialized at random"


# The two factors of a LoRA pair and the axis that is its rank: the down / A factor's first (rank × in, rank × in
# × kernel for a convolution), the up / B factor's second (out × rank, out × rank × 1 × 1): kohya-ss sd-scripts'
# lora_down / lora_up, peft's lora_A / lora_B (`lora_A.default.weight` in a wrapped model's own state dict) and
# lora_embedding_A (rank × rows) / lora_embedding_B (dim × rank), diffusers' old attention processors' lora.down /
# lora.up. LoHa's and LoKr's low-rank factors too (LyCORIS' under kohya's names, peft's): hada_w1_a / lokr_w1_a out
# × rank, hada_w1_b / lokr_w1_b rank × in (two LoHa files of another network_dim were "from_pretrained raises on
# them unless ignore_mismatched_sizes=True", which loads neither). With LyCORIS' Tucker decomposition (use_tucker, a
# convolution's hada_t1 / hada_t2 / lokr_t2 core, rank × rank × kernel) the `_a` factor is rank × out, its rank the
# first axis (lycoris/modules/loha.py, lokr.py): two Tucker LoHa files of another dim were "the architecture differs".
_LORA_FACTOR = _lazy_regex(r"[._](?:lora_(down|up)|lora_([AB])|lora\.(down|up))(?:\.[^.]+)?\.weight$"
                           r"|[._]lora_embedding_([AB])(?:\.[^.]+)?$"
                           r"|\.(?:hada|lokr)_w[12]_([ab])(?:\.[^.]+)?$"
                           r"|\.(hada_t[12]|lokr_t2)(?:\.[^.]+)?$")
_LORA_PARTNER = {"down": "up", "up": "down", "A": "B", "B": "A", "a": "b", "b": "a"}
# The Tucker core beside a LoHa / LoKr pair (`hada_w1_` → `hada_t1`), whose presence makes the pair's `_a` rank × out.
_TUCKER_CORE = {"hada_w1_": "hada_t1", "hada_w2_": "hada_t2", "lokr_w2_": "lokr_t2"}


def _tucker_ranks(name: str, start: int, factor: str, shape_a: tuple[int, ...], shape_b: tuple[int, ...],
                  specs_a: Mapping[str, KeySpec] | None,
                  specs_b: Mapping[str, KeySpec] | None) -> tuple[int, int] | None | bool:
    """(A's rank, B's rank) for a LyCORIS Tucker core or the factor of a Tucker-decomposed pair whose shapes differ
    in rank alone; None where they differ otherwise; False where `name` is no Tucker part (the plain reading applies).
    A core is rank × rank × kernel; a pair's factors beside one are rank × out and rank × in, each rank first."""
    if factor in _TUCKER_CORE.values():
        same_rest = shape_a[2:] == shape_b[2:] and shape_a[0] == shape_a[1] and shape_b[0] == shape_b[1]
        return (shape_a[0], shape_b[0]) if same_rest and shape_a[0] != shape_b[0] else None
    stem = name[start - len("hada_w1_"):start]
    core = _TUCKER_CORE.get(stem)
    if core is None or specs_a is None or specs_b is None:
        return False
    core_name = name[:start - len(stem)] + core + name[start + 1:]  # peft's `.default` suffix kept
    core_a, core_b = specs_a.get(core_name), specs_b.get(core_name)
    if core_a is None or core_b is None:
        return False
    if shape_a[1:] != shape_b[1:] or shape_a[0] == shape_b[0] or core_a.shape[:1] != shape_a[:1] or \
            core_b.shape[:1] != shape_b[:1]:
        return None
    return shape_a[0], shape_b[0]


def _lora_ranks(name: str, shape_a: tuple[int, ...], shape_b: tuple[int, ...],
                specs_a: Mapping[str, KeySpec] | None = None,
                specs_b: Mapping[str, KeySpec] | None = None) -> tuple[int, int] | None:
    """(A's rank, B's rank) when `name` is a LoRA factor whose shapes differ on its rank axis alone (two LoRAs of
    one model trained with network_dim 4 and 8, which were said to differ in architecture), else None. Where both
    sides hold its other factor, that one must differ in rank alone too, by the same ranks: an SD 1.5 LoRA against
    an SD 2.1 one of another rank shares attn2.to_k's lora_up shape (320 × rank) but not its lora_down's (rank × 768
    against rank × 1024), a LoRA for another base model."""
    # "lora" in the name first: most mismatched keys are no LoRA factor, and the substring test spares the search.
    if len(shape_a) != len(shape_b) or len(shape_a) < 2 or (
            "lora" not in name and "hada_" not in name and "lokr_" not in name) or (
            match := _LORA_FACTOR.search(name)) is None:
        return None
    group = match.lastindex or 0  # the one factor group that matched is the last
    factor = match[group]
    if factor not in _LORA_PARTNER or factor in ("a", "b"):
        tucker = _tucker_ranks(name, match.start(group), factor, shape_a, shape_b, specs_a, specs_b)
        if tucker is not False:
            return tucker
    axis = 0 if factor in ("down", "A", "b") else 1
    rank_a, rank_b = shape_a[axis], shape_b[axis]
    if rank_a == rank_b or shape_a[:axis] + shape_a[axis + 1:] != shape_b[:axis] + shape_b[axis + 1:]:
        return None
    if specs_a is None or specs_b is None:
        return rank_a, rank_b
    start, end = match.span(group)
    partner = name[:start] + _LORA_PARTNER[factor] + name[end:]
    if (spec_a := specs_a.get(partner)) is None or (spec_b := specs_b.get(partner)) is None:
        return rank_a, rank_b
    # The partner's rank axis is the other one: (A's rank, B's rank) there too, and nothing else differs.
    other, held_a, held_b = 1 - axis, spec_a.shape, spec_b.shape
    if (len(held_a) != len(held_b) or len(held_a) < 2 or held_a[other] != rank_a or held_b[other] != rank_b
            or held_a[:other] + held_a[other + 1:] != held_b[:other] + held_b[other + 1:]):
        return None
    return rank_a, rank_b


def _lora_module(name: str) -> str:
    """The module a LoRA factor's name adapts (`q` of `q.lora_A.weight`, of `q.lora_embedding_A`)."""
    match = _LORA_FACTOR.search(name)
    return name[:match.start()] if match is not None else name


# Flux's modulation inputs and layers, which lodestones' Chroma drops for its distilled_guidance_layer (one
# approximator of every block's modulation): time_in, vector_in, guidance_in, each block's img_mod / txt_mod /
# modulation, the final layer's adaLN_modulation. Either under DDP's `module.` too (a file saved from the wrapped
# model): a DDP-saved Chroma against Flux had no Chroma note, and its distilled_guidance_layer.in_proj was offered a
# rename onto Flux's time_in.in_layer (one shape) beside the `^module\.=` one.
_FLUX_MODULATION = _lazy_regex(r"^(?:module\.)?(?:model\.)?(?:diffusion_model\.)?(?:time_in|vector_in|guidance_in)\.|"
                               r"\.(?:img_mod|txt_mod|modulation)\.|(?:^|\.)final_layer\.adaLN_modulation\.")
_CHROMA_APPROXIMATOR = _lazy_regex(r"^(?:module\.)?(?:model\.)?(?:diffusion_model\.)?distilled_guidance_layer\.")


def _chroma_against_flux(
    unexpected: Sequence[str], missing: Sequence[str],
) -> tuple[dict[str, tuple[str, str, str]], str] | None:
    """Reasons and a note when one side is lodestones' Chroma and the other Flux, or None. Chroma keeps Flux's
    double and single blocks but replaces its modulation with distilled_guidance_layer: each side's were "unknown:
    these weights will not load" (the approximator's norms `scale` "quantization side tensors"), with no word that
    the two are other models.

    Example:
        >>> _chroma_against_flux(["distilled_guidance_layer.in_proj.weight"], ["guidance_in.in_layer.weight"])[1][:46]
        'A is Chroma (Flux-derived) and B Flux: Chroma '
    """
    # Every match names distilled_guidance_layer: one substring test over each side's joined names skips the
    # per-name regex on all others (a 10k-key DDP diff spent 21 ms profiled on 20,004 misses).
    chroma_a = ([name for name in unexpected if _CHROMA_APPROXIMATOR.match(name)]
                if "distilled_guidance_layer." in "\n".join(unexpected) else [])
    chroma_b = ([name for name in missing if _CHROMA_APPROXIMATOR.match(name)]
                if "distilled_guidance_layer." in "\n".join(missing) else [])
    if bool(chroma_a) == bool(chroma_b):
        return None
    flux = [name for name in (missing if chroma_a else unexpected) if _FLUX_MODULATION.search(name)]
    if not flux:
        return None
    chroma_side, flux_side = ("A", "B") if chroma_a else ("B", "A")
    whys = {name: ("other-model", "error", f"Chroma's distilled_guidance_layer (in {chroma_side}): Flux has none")
            for name in chroma_a or chroma_b}
    whys.update({name: ("other-model", "error", f"Flux's modulation (in {flux_side}), which Chroma replaces with its "
                                            "distilled_guidance_layer") for name in flux})
    note = (f"{chroma_side} is Chroma (Flux-derived) and {flux_side} Flux: Chroma keeps Flux's double and single "
            "blocks but replaces its modulation (time_in, vector_in, guidance_in, the blocks' img_mod / txt_mod) with "
            "distilled_guidance_layer, so neither loads into the other's model; Chroma loads with "
            "ChromaTransformer2DModel.from_single_file or ComfyUI")
    return whys, note


# What FLUX.1's patch embedding (img_in, hidden × channels) reads in each variant: 64 latent channels (dev, schnell,
# Kontext), 384 with the masked image and mask packed beside them (Fill), 128 with a control image's latents (Depth,
# Canny), and the diffusers pipeline that runs each.
_FLUX_IMG_IN = {64: ("FLUX.1 dev / schnell / Kontext", "FluxPipeline"), 384: ("FLUX.1 Fill", "FluxFillPipeline"),
                128: ("FLUX.1 Depth / Canny", "FluxControlPipeline")}


def classify_mismatch(name: str, shape_a: tuple[int, ...], shape_b: tuple[int, ...],
                      specs_a: Mapping[str, KeySpec] | None = None,
                      specs_b: Mapping[str, KeySpec] | None = None) -> tuple[str, str, str]:
    """(reason, severity, detail) for a key whose shape differs. `specs_a` / `specs_b`, where given, tell whether a
    top-level `fc` is a classifier or a layer feeding another (`_top_fc_is_head`)."""
    detail = f"{'×'.join(map(str, shape_a)) or 'scalar'} in A, {'×'.join(map(str, shape_b)) or 'scalar'} in B"
    if (ranks := _lora_ranks(name, shape_a, shape_b, specs_a, specs_b)) is not None:
        return "lora-rank", "error", f"{detail}: LoRA rank {ranks[0]} in A, {ranks[1]} in B"
    if (name == "img_in.weight" or name.endswith(".img_in.weight")) and len(shape_a) == len(shape_b) == 2 \
            and shape_a[0] == shape_b[0] and shape_a[1] in _FLUX_IMG_IN and shape_b[1] in _FLUX_IMG_IN:
        # FLUX.1 Fill or Depth against dev: "the architecture differs" said nothing of which model each is.
        (variant_a, pipe_a), (variant_b, pipe_b) = _FLUX_IMG_IN[shape_a[1]], _FLUX_IMG_IN[shape_b[1]]
        return "shape", "error", (f"{detail}: img_in reads {shape_a[1]} channels in A ({variant_a}), {shape_b[1]} in "
                                  f"B ({variant_b}): other FLUX.1 models, each run by its own pipeline ({pipe_a}, "
                                  f"{pipe_b})")
    same_rank = len(shape_a) == len(shape_b) and len(shape_a) >= 1
    first_only = same_rank and shape_a[1:] == shape_b[1:] and shape_a[0] != shape_b[0]
    if first_only and _POSITION.search(name):
        return "position-length", "warn", detail
    head = _HEAD.search(name) or _top_fc_is_head(name, specs_a, specs_b)
    if first_only and head and not _OUTPUT_EMBEDDING.search(name) and not name.endswith(
            ("decoder.bias", "predictions.bias", "lm_head.bias")):
        # One row per label: a label count changed. Any other dimension of a head is the architecture.
        return "head-size", "warn", detail
    if (first_only or (same_rank and shape_a[:-1] == shape_b[:-1] and name.endswith("final_logits_bias"))) \
            and _VOCAB.search(name):
        return "vocab-size", "warn", detail
    if len(shape_a) == 2 and shape_a == shape_b[::-1]:
        # nanoGPT / Megatron (nn.Linear, out×in) against GPT-2's Conv1D (in×out): the same weights, transposed.
        return "transposed", "error", f"{detail}: transpose it (nn.Linear is out×in, Conv1D in×out)"
    if len(shape_a) >= 3 and shape_a[0] == shape_b[0] and shape_a[1] != shape_a[-1]:
        # MLX's Conv1d / Conv2d keep (out, *kernel, in) where torch keeps (out, in, *kernel): mlx-examples'
        # converters (whisper, stable diffusion, encodec) move the axis; said "the architecture differs".
        # Which side is channels-last: the one whose moved axis matches, and, as a 1-D kernel's two orders are each
        # other's swap, whose channels outnumber its kernel (80 mel bins against a width of 3).
        sides = [(last, first) for last, first, channels_last, channels_first in
                 (("A", "B", shape_a, shape_b), ("B", "A", shape_b, shape_a))
                 if channels_last[1:] == channels_first[2:] + channels_first[1:2]
                 and channels_last[-1] > channels_last[1]
                 # A 3-dim swap is also a stack of matrices transposed (MoE experts fused per projection,
                 # (experts, in, out) against (experts, out, in)): a Conv1d's width is under its output channels,
                 # an expert matrix's side above the expert count.
                 and (len(channels_last) > 3 or channels_last[1] < channels_last[0])]
        if len(sides) == 1:
            last, first = sides[0]
            return "channels-last", "error", (f"{detail}: the same kernel, input channels last in {last} (as MLX "
                                              f"stores convolutions), second in {first} (PyTorch's order); "
                                              f"torch.movedim(w, -1, 1) turns {last}'s into {first}'s")
    if len(shape_a) == 3 and shape_a[0] == shape_b[0] and shape_a[1:] == shape_b[:0:-1]:
        return "shape", "error", f"{detail}: the last two axes swapped, each of the {shape_a[0]} matrices transposed"
    if len(shape_a) >= 3 and len(shape_a) == len(shape_b):
        # TensorFlow / Keras and Flax keep a ConvNd kernel as (*kernel, in, out) (HWIO), PyTorch as (out, in,
        # *kernel); a hand conversion that forgot the permute was said "the architecture differs". A 1-D kernel's
        # two orders are each other's reverse, so the HWIO side is also the one whose channels outnumber its kernel.
        sides = [(last, first) for last, first, hwio, oihw in
                 (("A", "B", shape_a, shape_b), ("B", "A", shape_b, shape_a))
                 if hwio == oihw[2:] + (oihw[1], oihw[0]) and hwio[-1] > hwio[0]]
        if len(sides) == 1:
            last, first = sides[0]
            n = len(shape_a)
            order = ", ".join(map(str, (n - 1, n - 2, *range(n - 2))))
            return "channels-last", "error", (f"{detail}: the same kernel, (*kernel, in, out) in {last} (as "
                                              f"TensorFlow / Keras and Flax store convolutions), (out, in, *kernel) "
                                              f"in {first} (PyTorch's order); w.permute({order}) turns {last}'s "
                                              f"into {first}'s")
    return "shape", "error", detail


def _dtype_severity(dtype_a: str, dtype_b: str) -> str:
    return "info" if (dtype_a in FLOATING) == (dtype_b in FLOATING) else "warn"


# ---------------------------------------------------------------------------------------------------------------
# The diff itself.


def _renamed(specs_a: Mapping[str, KeySpec], renames: Sequence[Rename]) -> tuple[dict[str, KeySpec], dict[str, str]]:
    """A's specs under their new names, and new -> old names."""
    if not renames:
        return dict(specs_a), {}
    mapping = apply_renames(specs_a, list(renames))
    renamed = {new: KeySpec(new, specs_a[old].shape, specs_a[old].dtype) for old, new in mapping.items()}
    return renamed, {new: old for old, new in mapping.items() if new != old}


@dataclass(frozen=True)
class _RawDiff:
    missing: list[str]
    unexpected: list[str]
    common: list[str]


def raw_diff(names_a: Iterable[str], names_b: Iterable[str]) -> _RawDiff:
    """Set arithmetic in the order of B (missing, common) and A (unexpected).

    With C-level filters (`[n for n in list_b if n not in set_a]` looped in Python over 10,000s of names); a
    dict (the specs) answers membership itself, without a set built from its keys.
    """
    list_a, list_b = list(names_a), list(names_b)
    in_a = names_a.__contains__ if isinstance(names_a, dict) else set(list_a).__contains__
    in_b = names_b.__contains__ if isinstance(names_b, dict) else set(list_b).__contains__
    return _RawDiff(
        missing=list(filterfalse(in_a, list_b)),
        unexpected=list(filterfalse(in_b, list_a)),
        common=list(filter(in_a, list_b)),
    )


def _lookalike_skeleton(name: str) -> str:
    """`name` as it reads: compatibility forms folded (NFKC), lookalike letters of other scripts as the Latin ones,
    format characters (zero-width ones) dropped."""
    import unicodedata

    folded = unicodedata.normalize("NFKC", name).translate(LOOKALIKE_LATIN)
    return "".join(char for char in folded if unicodedata.category(char) != "Cf")


def _character_words(text: str) -> str:
    import unicodedata

    return ", ".join(f"{char!r} (U+{ord(char):04X} {unicodedata.name(char, 'unnamed')})" for char in text) or "nothing"


def lookalike_pairs(unexpected: Sequence[str], missing: Sequence[str]) -> dict[str, tuple[str, str]]:
    """A's unexpected names that read as one of B's missing names but differ in their code points (a Cyrillic 'а'
    for a Latin 'a', the ligature 'ﬁ' for 'fi', a zero-width space), each with that name of B's and the letters
    that differ, said with their code points (redteam39: `--rename 'attention=аttention'` read as a rename of a name
    to itself).

    Example:
        >>> lookalike_pairs(["l.\u0430ttn"], ["l.attn"])["l.\u0430ttn"]
        ('l.attn', "A has 'а' (U+0430 CYRILLIC SMALL LETTER A) where B has 'a' (U+0061 LATIN SMALL LETTER A)")
    """
    import difflib
    import unicodedata

    # Only names that are not ASCII can look like another (an ASCII name reads as itself): most diffs stop here.
    if all(map(str.isascii, unexpected)) and all(map(str.isascii, missing)):
        return {}
    by_skeleton: dict[str, str] = {}
    for name in missing:
        by_skeleton.setdefault(name if name.isascii() else _lookalike_skeleton(name), name)
    pairs: dict[str, tuple[str, str]] = {}
    for name in unexpected:
        other = by_skeleton.get(name if name.isascii() else _lookalike_skeleton(name))
        if other is None or other == name or unicodedata.normalize("NFC", other) == unicodedata.normalize("NFC", name):
            continue  # one name in two Unicode forms: the suggested fix says so (red team 38)
        differences = [f"A has {_character_words(name[i1:i2])} where B has {_character_words(other[j1:j2])}"
                       for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, name, other, autojunk=False)
                       .get_opcodes() if tag != "equal"]
        pairs[name] = (other, "; ".join(differences[:3]) + ("; ..." if len(differences) > 3 else ""))
    return pairs


def _lookalike_whys(pairs: Mapping[str, tuple[str, str]], specs_a: Mapping[str, KeySpec],
                    specs_b: Mapping[str, KeySpec]) -> tuple[dict[str, tuple[str, str, str]], str]:
    """(reason, severity, detail) of both names of each lookalike pair of the same shape, and a note on them all."""
    whys: dict[str, tuple[str, str, str]] = {}
    for name, (other, letters) in pairs.items():
        if name in specs_a and other in specs_b and specs_a[name].shape == specs_b[other].shape:
            detail = f"reads as B's {other!r} but differs in its letters: {letters}"
            whys[name] = ("renamed", "error", detail)
            whys[other] = ("renamed", "error", f"reads as A's {name!r} but differs in its letters: {letters}")
    first, (other, letters) = next(iter(pairs.items()))
    note = (f"{counted(len(pairs), 'name')} of A {'reads' if len(pairs) == 1 else 'read'} as one of B's but "
            f"{'differs' if len(pairs) == 1 else 'differ'} in letters that look alike ({first!r} against "
            f"{other!r}: {letters}): the names are not the same to a state dict")
    return whys, note


def _fairscale_unflatten_how(key: str | None) -> str:
    """What saves fairscale flat parameters with the metadata under `key` (metaseq's `shard_metadata`, fairseq's
    `fsdp_metadata`; None: neither is in A's file) and how that metadata unflattens them, for diff-keys' note."""
    from weightdoctor.checkpoint.model_parts import fairscale_unflatten_fix

    if key == "shard_metadata":
        return ("metaseq's --ddp-backend fully_sharded --use-sharded-state saves one checkpoint_last-shardN.pt per "
                "rank, checkpoint_last-model_part-R-shardN.pt under --model-parallel-size, and A holds the metadata "
                "that unflattens them under 'shard_metadata'); no loader takes them by name, and a rank's file "
                "holds only its shard. Unflatten every rank's file with that metadata: " + fairscale_unflatten_fix(key))
    if key == "fsdp_metadata":
        return ("fairseq's --ddp-backend fully_sharded saves one checkpoint_last-shardN.pt per rank, and A holds the "
                "metadata that unflattens them under 'fsdp_metadata'); no loader takes them by name, and a rank's file "
                "holds only its shard. Unflatten every rank's file with that metadata: " + fairscale_unflatten_fix(key))
    return ("what fairseq's and metaseq's --ddp-backend fully_sharded save, one checkpoint_last-shardN.pt per rank, "
            "with the metadata that unflattens them beside the model: A's file holds none, neither metaseq's "
            "'shard_metadata' nor fairseq's 'fsdp_metadata'); no loader takes them by name, and a rank's file holds "
            "only its shard. Without that metadata no script unflattens them: " + fairscale_unflatten_fix(None))


def build_report(
    specs_a: Mapping[str, KeySpec],
    specs_b: Mapping[str, KeySpec],
    missing: Sequence[str],
    unexpected: Sequence[str],
    mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]],
    common: Sequence[str],
    suggestions: list[SuggestedRename],
    *,
    source_a: str,
    source_b: str,
    mode: str,
    model_class: str | None = None,
    renames_applied: Sequence[Rename] = (),
    matched_after_renames: int | None = None,
    tied_groups_a: Sequence[Sequence[str]] = (),
    tied_groups_b: Sequence[Sequence[str]] = (),
    tie_embeddings: bool | None = None,
    base_prefix_loads: bool = True,
    compare_dtypes: bool = True,
    notes: Sequence[str] = (),
    quantization: str | None = None,
    layout_whys: Mapping[str, tuple[str, str, str]] | None = None,
    refused_dtypes: frozenset[str] = frozenset(),
    tie_embeddings_a: bool | None = None,
    head_names: set[str] | None = None,
    loader_prefix: Callable[[], str | None] | None = None,
    loader_ran: bool = False,
    fixed_by_renames: Mapping[str, int] | None = None,
    saved_names_a: Collection[str] | None = None,
    quantization_a: str | None = None,
    quantizers: tuple[str | None, str | None] = (None, None),
    tensor_parallel_parts_a: int = 0,
    tensor_parallel_parts_b: int = 0,
    fsdp_metadata_key_a: str | None = None,
) -> DiffReport:
    """Classify the differences and assemble the report (shared by both modes).

    `layout_whys`: (reason, severity, detail) of keys that differ because of a known foreign layout
    (`foreign_layout`); they win over any other explanation. `refused_dtypes`: names whose dtype difference is an
    error whatever the dtypes (a torch.ao quantized tensor, which load_state_dict refuses to copy into a float one).
    `tie_embeddings_a`: A's `tie_word_embeddings`
    when known (an untied output layer of A is a head of its own, not a tied copy). `head_names`: keys of B
    outside its base model (a transformers task class's head, whatever its modules are called).

    `quantization`: the quantizer B's config asks for (see `classify_key`); integer-stored weights of A
    (packed 4-bit, int8, GPTQ's int32) then differ from B's float shapes and dtypes by design (info).
    `tied_groups_b`: names that are one tensor in B; a missing one whose partner A has is tied on load.
    `base_prefix_loads`: False when B is a plain state dict (no config): then no loader adds or strips a
    base-model prefix, and keys that need one do not load (error, not warn). `loader_ran`: A's names are already
    those from_pretrained loads (model-class mode), so a base-model prefix left is one it does not handle.
    `fixed_by_renames`: missing and unexpected keys that load once `suggestions[:i + 1]` are applied (name -> i)
    where a plain rename of the unexpected names does not show it (weights the model ties to one renamed, keys
    transformers' ignore lists drop from the unexpected ones, a base-model prefix the loader adds after the
    rename): they take that rename's reason.
    `quantization_a`: the quantizer A's own config names, where B's names none (a bitsandbytes 4-bit save against
    its 16-bit merge): A's integer-stored weights then differ from B's floats because they are packed, not because
    the architecture differs (error all the same: B's model cannot take them as stored).
    `quantizers`: the quantizers A's and B's configs name (checkpoint mode), for the detail of A's side tensors.
    `tensor_parallel_parts_a`: how many tensor-parallel parts A is one of (fairseq's model_part-R.pt beside the
    others), 0 when it is none: a tensor of A whose shape is B's with one dimension divided by that count is A's slice
    of it, not another architecture. `tensor_parallel_parts_b`: the same of B, whose tensor is then A's slice
    (the whole model compared with one part's shapes).
    `fsdp_metadata_key_a`: the entry of A's file that holds fairscale FSDP's local_metadata_dict (metaseq's
    `shard_metadata`, fairseq's `fsdp_metadata`), None where it holds neither: the fix for A's flat parameters.
    `saved_names_a`: A's names as its file holds them, where `specs_a` holds them as the loader renamed them
    (model-class mode: Whisper's `model.encoder.*` is WhisperForAudioClassification's `encoder.*`); a part of A
    said to be dropped is named as saved.
    """
    rename_objects = [Rename(s.pattern, s.replacement) for s in suggestions]
    by_rename = _explained_by_renames(unexpected, rename_objects, specs_b, base_prefix_loads, loader_prefix,
                                      loader_ran)
    if fixed_by_renames:
        step_whys = {why[2]: why for why in by_rename.values()}
        for name, step in fixed_by_renames.items():
            if name in by_rename or step >= len(rename_objects):
                continue
            flag = rename_objects[step].as_flag()
            reason, severity = rename_reason(rename_objects[step])
            if loader_ran and reason == "base-model-prefix":  # one from_pretrained left: a wrapper's
                reason, severity = "wrapper-prefix", "error"
            by_rename[name] = step_whys.get(flag, (reason, severity, flag))
    if layout_whys:
        by_rename.update(layout_whys)  # a known foreign layout says more than any rename that touches it
    # B's tied names that A supplies through a partner, the partner first (it is what the detail names).
    supplied_ties = tied_index([sorted(group, key=lambda n: n not in specs_a) for group in tied_groups_b
                                if any(n in specs_a for n in group)])
    tied_a = tied_index(tied_groups_a)

    # FSDP's flat parameters of A (`_fsdp_wrapped_module._flat_param`, a LOCAL_STATE_DICT's
    # `model.layers.0._flat_param`) by the module they flatten: every weight of B under it was "unknown: no known
    # cause", and the flat parameter too.
    # weightdoctor.structure is imported only where a name holds `_flat_param`: a headers-only diff imports no
    # inspect module (perf21).
    flat_params: dict[str, str] = {}
    # fairscale's FSDP (fairseq's --ddp-backend fully_sharded) names its flat parameters `flat_param_0`, one per
    # wrapped module: before, A's were "unknown" and every weight of B "unknown: no known cause", with no word of
    # the metadata saved beside them (metaseq's shard_metadata, fairseq's fsdp_metadata), which unflattens them.
    fairscale_flat: dict[str, str] = {}
    joined_unexpected_names = "\n".join(unexpected)
    if "_flat_param" in joined_unexpected_names:
        from weightdoctor.structure import fsdp_flat_params

        flat_params = fsdp_flat_params(unexpected)
    if "flat_param_" in joined_unexpected_names:
        from weightdoctor.structure import fairscale_flat_params

        fairscale_flat = fairscale_flat_params({name: specs_a[name].shape for name in unexpected
                                                if "flat_param_" in name and name in specs_a})
        flat_params = {**flat_params, **fairscale_flat}

    def flat_reason(flat_param: str) -> str:
        return "fairscale-flat-param" if flat_param in fairscale_flat else "fsdp-flat-param"

    def classify(name: str, kind: str) -> tuple[str, str, str]:
        if kind == "unexpected" and name in flat_params:
            size = math.prod(specs_a[name].shape) if name in specs_a else 0
            if name in fairscale_flat:
                # fairscale's root FSDP flattens the modules no inner FSDP wraps, not the whole model.
                held = flat_params[name].rstrip(".") or "the modules no inner FSDP wraps"
                return "fairscale-flat-param", "error", (f"{size:,} values of {held} in one 1-D tensor, padded: "
                                                         "one rank's shard")
            return "fsdp-flat-param", "error", (f"{size:,} values of {flat_params[name] or 'the whole model'} "
                                                "in one 1-D tensor")
        if kind == "missing":
            why = classify_key(name, specs_b[name], kind, specs_a, supplied_ties, tie_embeddings, quantization,
                               target=specs_b, tie_embeddings_a=tie_embeddings_a, own_side=specs_b)
            # The output layer too ("initialized at random (not tied)"): FSDP flattens every parameter of the module.
            if flat_params and why[0] in ("unknown", "task-head") and why[1] != "info":
                holder = _flat_param_holding(name, flat_params)
                if holder is not None:
                    return flat_reason(holder), "error", f"flattened into A's {holder}"
            if why[0] == "unknown" and head_names and name in head_names:
                detail = new_head_detail(name, specs_b[name].shape)
                return "task-head", "info", (detail if detail.endswith("not random")
                                             else "new, initialized at random (outside the base model)")
            return why
        spec = specs_a.get(name) or KeySpec(name, (), "float32")
        why = classify_key(name, spec, kind, specs_b, tied_a, tie_embeddings_a, quantization=quantization,
                           tie_embeddings_a=tie_embeddings,  # the other side's config, as for a missing key
                           own_side=specs_a, quantizers=quantizers)
        head = name.split(".", 1)[0]
        if why[0] == "unknown" and fully_supplied and head not in heads_of_b():
            # B gets every weight it has, and this part of A is not in B at all: the other tower of a composite
            # model (CLIP into CLIPTextModel), a module of another task. Dropped by design, as B is whole.
            part = dropped_part(name)
            return "unused-part", "info", f"{part if part == name else part + '.*'} is no part of B: dropped"
        return why

    # A's top-level names, then per top-level name its deeper prefixes (model.decoder, ...), each counted only once
    # asked: how many of A's keys each holds, and how many unexpected ones. A whole top-level part dropped (CLIP's
    # other tower) is told by the first count alone; counting every prefix of 10,000 keys cost more than the rest.
    head_counts: dict[str, list[int]] = {}
    deep_counts: dict[str, dict[str, list[int]]] = {}
    named: list[Collection[str]] = []  # A's names, and the unexpected ones

    def dropped_part(name: str) -> str:
        """The shortest prefix of `name` all of whose keys in A are dropped: `model.decoder` of Whisper's
        `model.decoder.layers.0.fc1.weight` loaded into WhisperForAudioClassification, whose encoder takes
        `model.encoder.*` (it was "model.* is no part of B", though half of model.* loads)."""
        if not head_counts:
            named.extend((specs_a if saved_names_a is None else saved_names_a, set(unexpected)))
            for index, names in enumerate(named):
                for key in names:
                    head_counts.setdefault(key.partition(".")[0], [0, 0])[index] += 1
        head = name.partition(".")[0]
        counts = head_counts.get(head)
        if counts is not None and counts[0] == counts[1]:
            return head
        if (prefixes := deep_counts.get(head)) is None:
            prefixes = deep_counts[head] = {}
            lead = head + "."
            for index, names in enumerate(named):
                for key in names:
                    if key.startswith(lead):
                        parts = key.split(".")
                        for depth in range(2, len(parts) + 1):
                            prefixes.setdefault(".".join(parts[:depth]), [0, 0])[index] += 1
        parts = name.split(".")
        for depth in range(2, len(parts) + 1):
            counts = prefixes.get(".".join(parts[:depth]))
            if counts is not None and counts[0] == counts[1]:
                return ".".join(parts[:depth])
        return name

    # B gets every weight it has from A, but for its own new task head (a classifier, a resized label head):
    # BART into BartForSequenceClassification, CLIPModel into CLIPForImageClassification.
    fully_supplied = all(classify_mismatch(*m, specs_a, specs_b)[0] == "head-size" for m in mismatched) and all(
        classify(name, "missing")[0] == "task-head" for name in missing)
    heads: set[str] = set()

    def heads_of_b() -> set[str]:
        if not heads:
            heads.update(n.split(".", 1)[0] for n in specs_b)
        return heads

    def issues(names: Sequence[str], kind: str) -> list[KeyIssue]:
        whys: list[tuple[str, str, str] | None] = list(map(by_rename.get, names))
        if None in whys:
            for index, why in enumerate(whys):
                if why is None:
                    whys[index] = classify(names[index], kind)
        return key_issues(names, whys)  # type: ignore[arg-type]

    def quantized(name: str) -> bool:
        """A's tensor holds quantized integers where B expects floats, as `quantization` stores them."""
        a, b = specs_a.get(name), specs_b.get(name)
        return bool(quantization) and a is not None and b is not None and a.dtype in _QUANTIZED_DTYPES \
            and b.dtype in FLOATING

    mismatch_rows = []
    packed_in_a = 0
    sliced: list[str] = []
    sliced_b: list[str] = []  # B the part: the whole model loaded into one part's shapes
    for name, shape_a, shape_b in mismatched:
        part_side = next(((side, parts, dim) for side, parts, held, whole in (
            ("A", tensor_parallel_parts_a, shape_a, shape_b), ("B", tensor_parallel_parts_b, shape_b, shape_a))
            if (dim := _sliced_dim(held, whole, parts)) is not None), None)
        if part_side is not None:
            side, parts, dim = part_side
            (sliced if side == "A" else sliced_b).append(name)
            mismatch_rows.append(Mismatch(name, list(shape_a), list(shape_b), "tensor-parallel-part", "error",
                                          f"{side} holds 1/{parts} of it, split along dim {dim}"))
            continue
        reason, severity, detail = classify_mismatch(name, shape_a, shape_b, specs_a, specs_b)
        if quantized(name):
            reason, severity = "quantization", "info"
            detail = f"{detail}; packed by the {quantization} quantizer, which unpacks it on load"
        elif quantization_a and not quantization and specs_a[name].dtype in _QUANTIZED_DTYPES \
                and specs_b[name].dtype in FLOATING:
            # ignore_mismatched_sizes, which the shape note offers, would start these weights at random.
            reason, severity = "quantization", "error"
            detail = f"{detail}; packed by A's {quantization_a} quantizer, B holds it unquantized"
            packed_in_a += 1
        mismatch_rows.append(Mismatch(name, list(shape_a), list(shape_b), reason, severity, detail))
    if packed_in_a:
        # transformers' dequantize() exists for bitsandbytes and HIGGS models only (their quantizers' _dequantize).
        unpack = ("A's model.dequantize() then save_pretrained gives weights to compare with B" if
                  quantization_a.startswith(("bitsandbytes", "higgs")) else
                  f"transformers cannot dequantize a {quantization_a} model (no dequantize()): compare A with a "
                  "checkpoint quantized the same way")
        notes = [*notes, (
            f"{counted(packed_in_a, 'weight')} of A {plural(packed_in_a, 'is', 'are')} stored packed by the "
            f"{quantization_a} quantizer its config names, where B's model holds them unquantized: B's "
            "from_pretrained cannot take them as stored (ignore_mismatched_sizes would start them at random); "
            f"A loads with its own config (from_pretrained of A), and {unpack}")]
    mismatched_names = {m[0] for m in mismatched}
    notes = [*notes, *_square_transposed_note(mismatch_rows, common, specs_a, mismatched_names)]
    resized = [m for m in mismatch_rows if m.reason not in ("quantization", "lora-rank", "tensor-parallel-part")]
    if sliced:
        notes.append(
            f"{counted(len(sliced), 'tensor')} of A ({_first_names(sliced)}) {plural(len(sliced), 'is', 'are')} "
            f"B's with one dimension divided by {tensor_parallel_parts_a}: A is one of {tensor_parallel_parts_a} "
            "tensor-parallel parts of one model, each holding its slice of the split tensors; merge the parts into "
            "one state dict (A's warning says how) and compare that with B")
    if sliced_b:
        notes.append(
            f"{counted(len(sliced_b), 'tensor')} of B ({_first_names(sliced_b)}) {plural(len(sliced_b), 'is', 'are')} "
            f"A's with one dimension divided by {tensor_parallel_parts_b}: B is one of {tensor_parallel_parts_b} "
            "tensor-parallel parts of one model, each holding its slice of the split tensors, so A's whole tensors "
            "load into no part; merge B's parts into one state dict (B's warning says how) and compare A with that, "
            f"or split A the same way into {tensor_parallel_parts_b} parts for fairseq's --model-parallel-size "
            f"{tensor_parallel_parts_b}")
    if ranked := sorted({_lora_module(m.name) for m in mismatch_rows if m.reason == "lora-rank"}):
        # Two LoRAs of one model at another network_dim / r: from_pretrained and ignore_mismatched_sizes are not
        # how either is loaded; the loaders (sd-scripts' --network_weights, peft) call load_state_dict.
        notes.append(
            f"{counted(len(ranked), 'LoRA module')} {plural(len(ranked), 'differs', 'differ')} in rank only: A "
            "and B adapt the same modules with adapters of another size; torch's load_state_dict, which LoRA loaders "
            "call (sd-scripts' --network_weights, peft's load_adapter), raises on a size mismatch even with "
            "strict=False")
    if fairscale_flat:
        notes.append(
            f"A holds {counted(len(fairscale_flat), 'fairscale FSDP flat parameter')} "
            f"({_first_names(list(fairscale_flat))}): the weights of the modules fairscale's FullyShardedDataParallel "
            "wraps (flatten_parameters), flattened into 1-D, padded and sharded over the ranks, as its "
            f"local_state_dict() gives them ({_fairscale_unflatten_how(fsdp_metadata_key_a)}; or save "
            "the full state dict in the training script (fairscale's fsdp_model.state_dict(), not "
            "local_state_dict(); torch's FSDP: FSDP.state_dict_type(fsdp_model, StateDictType.FULL_STATE_DICT))")
    if len(flat_params) > len(fairscale_flat):
        from weightdoctor.structure import FSDP_FULL_STATE_DICT_SAVE

        flat_params = {name: prefix for name, prefix in flat_params.items() if name not in fairscale_flat}
        notes.append(
            f"A holds {counted(len(flat_params), 'FSDP flat parameter')} ({_first_names(list(flat_params))}): the "
            "model's weights flattened and sharded by FullyShardedDataParallel (use_orig_params=False), saved from "
            "named_parameters() or a LOCAL_STATE_DICT; no loader takes them by name, and a rank's shard holds only "
            f"part of them. Save the full state dict instead, {FSDP_FULL_STATE_DICT_SAVE}, or fsdp_model.state_dict() "
            "inside FSDP.state_dict_type(fsdp_model, StateDictType.FULL_STATE_DICT)")
    if resized and all(_KOHYA_PAIR.match(m.name) for m in resized) and all(map(_KOHYA_PAIR.match, specs_a)) \
            and all(map(_KOHYA_PAIR.match, specs_b)):
        # Two kohya / LyCORIS adapters (two LoKr files of another factor): "from_pretrained raises on them unless
        # ignore_mismatched_sizes=True" named a loader of neither.
        notes.append(
            f"{counted(len(resized), 'key')} {plural(len(resized), 'differs', 'differ')} in shape: A and B are "
            "adapters in kohya's layout whose factors for the same "
            "modules have other shapes (another LoKr factor, another method's parts), not two of one size; an "
            "adapter is applied to its base model: compare each against its base (diff-keys with the adapter as A "
            "and the model as B)")
    elif resized:
        # Even the expected resizes (vocabulary, labels, positions) stop the default load.
        notes.append(
            f"{counted(len(resized), 'key')} {plural(len(resized), 'differs', 'differ')} in shape: from_pretrained "
            "raises on "
            f"{plural(len(resized), 'it', 'them')} unless "
            "ignore_mismatched_sizes=True (it then initializes them at random), and torch's load_state_dict "
            "raises on a size mismatch even with strict=False")
        # A model that ties its output layer to the embedding: save_pretrained stored the embedding alone, the one
        # 2-D vocabulary row here, and a strict load_state_dict of A into the resized model raised on the tied copy.
        # (A torch.save'd state dict keeps the copy under its own name, one storage with the embedding: not this.)
        embeddings = [m.name for m in resized if m.reason == "vocab-size" and len(m.shape_a) == 2]
        tied_unstored = tie_embeddings is True and len(embeddings) == 1 and not any(
            embeddings[0] in group for group in tied_groups_a)
        notes.extend(_vocab_size_note(resized, _local_without_config(source_a), tied_unstored))
    dtype_rows = []
    if compare_dtypes:
        for name in common:
            a, b = specs_a.get(name), specs_b.get(name)
            if a is not None and b is not None and a.dtype != b.dtype:
                # A torch.ao quantized tensor against a float one: load_state_dict raises on it ("Copying from
                # quantized Tensor to non-quantized Tensor is not allowed"), whichever way round.
                severity = "error" if name in refused_dtypes else "info" if quantized(name) \
                    else _dtype_severity(a.dtype, b.dtype)
                dtype_rows.append(DtypeDifference(name, a.dtype, b.dtype, severity))
    report = DiffReport(
        source_a=source_a,
        source_b=source_b,
        mode=mode,
        model_class=model_class,
        renames_applied=[r.as_flag() for r in renames_applied],
        matched=len(list(filterfalse(mismatched_names.__contains__, common))),
        total_a=len(specs_a),
        total_b=len(specs_b),
        missing=issues(missing, "missing"),
        unexpected=issues(unexpected, "unexpected"),
        mismatched=mismatch_rows,
        dtype_differences=dtype_rows,
        suggested_renames=suggestions,
        matched_after_renames=matched_after_renames,
        python_snippet=python_snippet([*renames_applied, *rename_objects]) if suggestions else None,
        groups=[],
        worst_severity=None,
        notes=list(notes),
    )
    report.groups = group_issues(report)
    found = set(report.severities())  # one severity per rank: the set has the same maximum
    report.worst_severity = max(found, key=severity_rank) if found else None
    return report


def _sliced_dim(shape_a: Sequence[int], shape_b: Sequence[int], parts: int) -> int | None:
    """The dimension along which `shape_a` is one of `parts` equal slices of `shape_b` (the others equal), else None.

    Example:
        >>> _sliced_dim((8, 16), (16, 16), 2), _sliced_dim((16, 8), (16, 16), 2), _sliced_dim((8, 8), (16, 16), 2)
        (0, 1, None)
    """
    if parts < 2 or len(shape_a) != len(shape_b):
        return None
    differing = [dim for dim, (a, b) in enumerate(zip(shape_a, shape_b, strict=True)) if a != b]
    if len(differing) != 1 or shape_a[differing[0]] * parts != shape_b[differing[0]]:
        return None
    return differing[0]


def _flat_param_holding(name: str, flat_params: Mapping[str, str]) -> str | None:
    """The flat parameter whose module holds `name`: the one of the longest prefix `name` starts with.

    Example:
        >>> _flat_param_holding("model.layers.0.mlp.up_proj.weight", {"_flat_param": "", "model.layers.0._flat_param":
        ...     "model.layers.0."})
        'model.layers.0._flat_param'
    """
    holders = [(len(prefix), flat) for flat, prefix in flat_params.items() if name.startswith(prefix)]
    return max(holders)[1] if holders else None


def _first_names(names: Sequence[str], count: int = 2) -> str:
    """The first `count` names and how many more: `a, b and 3 more`."""
    shown = ", ".join(names[:count])
    return shown if len(names) <= count else f"{shown} and {len(names) - count:,} more"


def _vocab_size_note(resized: Sequence[Mismatch], no_config: bool = False, tied_unstored: bool = False) -> list[str]:
    """What keeps a resized vocabulary's trained rows, where the shape note offers only ignore_mismatched_sizes (which
    starts them at random): one note when every `vocab-size` row agrees on A's and B's vocabulary, else none.
    `no_config`: A is a local file or folder with no config.json beside it, which from_pretrained cannot load.
    `tied_unstored`: B's config ties the output layer to the embedding and A stores the embedding alone, so a model
    with an output layer holds a key A lacks (`lm_head.weight`): load_state_dict(A) raises on it unless strict=False.
    Said of "a model that ties an output layer": the config's tie_word_embeddings is true for classes with no output
    layer too (BertForSequenceClassification, whose strict load of A raises nothing), which no key here tells apart.

    Example:
        >>> row = Mismatch("transformer.wte.weight", [1010, 64], [1000, 64], "vocab-size", "warn", "")
        >>> _vocab_size_note([row])[0][:62]
        'the vocabulary differs (1,010 tokens in A, 1,000 in B): to kee'
    """
    sizes = {(m.shape_a[-1], m.shape_b[-1]) if m.name.endswith("final_logits_bias") else (m.shape_a[0], m.shape_b[0])
             for m in resized if m.reason == "vocab-size"}
    if len(sizes) != 1:
        return []
    ((tokens_a, tokens_b),) = sizes
    resize = (f"(model.resize_token_embeddings({tokens_a}), which resizes a tied or separate output layer too) and "
              + ("then model.load_state_dict(A, strict=False): a model that ties an output layer to its embedding "
                 "holds that layer under a name of its own, which A does not store and a strict load reports missing "
                 "(the tie fills it)" if tied_unstored else
                 "then load_state_dict A"))
    if no_config:
        # A lone weights file (a training run's checkpoint): "from_pretrained of A" raised, no config.json to read.
        return [f"the vocabulary differs ({tokens_a:,} tokens in A, {tokens_b:,} in B): to keep A's trained rows, "
                f"resize B's model first {resize} (A has no config.json beside it, so from_pretrained cannot load it)"]
    return [f"the vocabulary differs ({tokens_a:,} tokens in A, {tokens_b:,} in B): to keep A's trained rows, load A "
            f"with its own config.json (from_pretrained of A), or resize B's model first {resize}"]


def _local_without_config(source: str) -> bool:
    """Whether `source` is a local weights file or folder with no config.json in it (beside the file); False for
    anything else (a repo id).

    Example:
        >>> import tempfile
        >>> _local_without_config(tempfile.mkdtemp()), _local_without_config("org/model")
        (True, False)
    """
    from weightdoctor.paths import expand_user

    try:
        path = expand_user(source)
        if path.is_dir():
            return not (path / "config.json").is_file()
        return path.is_file() and not (path.parent / "config.json").is_file()
    except (OSError, ValueError):
        return False


def _square_transposed_note(
    mismatches: Sequence[Mismatch], common: Sequence[str], specs_a: Mapping[str, KeySpec], mismatched: set[str],
) -> list[str]:
    """A note when some weights are stored transposed: the square ones of the same blocks match by shape, so
    nothing flags them, yet they are transposed too (nanoGPT's c_proj against GPT-2's Conv1D)."""
    transposed = [m.name for m in mismatches if m.reason == "transposed"]
    if not transposed:
        return []
    blocks = {collapse_indices(name).rsplit(".", 2)[0] for name in transposed}
    square = [name for name in common if name not in mismatched and name.endswith(".weight")
              and len(shape := specs_a[name].shape) == 2 and shape[0] == shape[1]
              and collapse_indices(name).rsplit(".", 2)[0] in blocks]
    if not square:
        return []
    return [f"{counted(len(transposed), 'weight')} {plural(len(transposed), 'is', 'are')} stored transposed; "
            f"{counted(len(square), 'square weight')} of the same blocks "
            f"(e.g. {square[0]}) load without a shape error but are most likely transposed too: transpose every "
            "Linear / Conv1D weight of these blocks when converting, not only those that mismatch"]


def _explained_by_renames(
    unexpected: Sequence[str], renames: Sequence[Rename], specs_b: Mapping[str, KeySpec],
    base_prefix_loads: bool = True, loader_prefix: Callable[[], str | None] | None = None,
    loader_ran: bool = False,
) -> dict[str, tuple[str, str, str]]:
    """(reason, severity, flag) of the first of `renames` that changes an unexpected key, for the unexpected
    keys that the renames, applied in order, land on one of B's keys, and for the keys of B they land on.
    Without `base_prefix_loads` (B is a plain state dict) a base-model prefix and a legacy name are errors: no
    loader fixes them. With it, a base-model prefix is fixed only when it is the one B's class adds or strips
    (`loader_prefix`): a Lightning `model.` on BERT (prefix `bert`) is not, and is a wrapper's prefix (error).
    With `loader_ran` (A's names are what from_pretrained loads) any base-model prefix left is a wrapper's too.

    Example:
        >>> b = {"w": KeySpec("w", (1,), "float32")}
        >>> _explained_by_renames(["module.w", "x"], [Rename(r"^module\\.", "")], b)["w"][0]
        'wrapper-prefix'
    """
    if not renames:
        return {}
    # The names of every unexpected key after the renames, and the step that first changed each.
    final, first_steps = rename_steps(unexpected, renames)
    whys = [(*rename_reason(r), r.as_flag()) for r in renames]
    if loader_ran:  # from_pretrained already added or stripped B's prefix: one left is a wrapper's
        whys = [("wrapper-prefix", "error", flag) if reason == "base-model-prefix" else (reason, severity, flag)
                for reason, severity, flag in whys]
    if not base_prefix_loads:
        whys = [(reason, "error", flag) if reason in ("base-model-prefix", "legacy-name") else (reason, severity, flag)
                for reason, severity, flag in whys]
    elif loader_prefix is not None and any(reason == "base-model-prefix" for reason, _, _ in whys):
        fixed = loader_prefix()
        # Not the prefix B's class adds or strips: from_pretrained leaves it, as it leaves DDP's `module.`.
        whys = [("wrapper-prefix", "error", flag) if reason == "base-model-prefix" and fixed is not None
                and _prefix_of(rename) != fixed else (reason, severity, flag)
                for rename, (reason, severity, flag) in zip(renames, whys, strict=True)]
    # Old and new names are never the same key: an unexpected key is not one of B's.
    if len(whys) == 1:  # one rename (a DDP `module.` on 10,000 keys): every hit has its reason, in bulk
        # rename_all gives one name per name: the columns line up. Picked with C-level loops.
        hits = list(map(and_, map(ne, final, unexpected), map(specs_b.__contains__, final)))
        explained = dict.fromkeys(compress(unexpected, hits), whys[0])
        explained.update(dict.fromkeys(compress(final, hits), whys[0]))
        return explained
    explained: dict[str, tuple[str, str, str]] = {}
    for old, new, step in zip(unexpected, final, first_steps, strict=True):
        if new != old and new in specs_b:
            explained[old] = explained[new] = whys[step]
    return explained


def diff_specs(
    specs_a: Mapping[str, KeySpec],
    specs_b: Mapping[str, KeySpec],
    renames: Sequence[Rename] = (),
    *,
    source_a: str | None = None,
    source_b: str | None = None,
    tied_groups_a: Sequence[Sequence[str]] = (),
    tied_groups_b: Sequence[Sequence[str]] = (),
    tie_embeddings: bool | None = None,
    base_prefix_loads: bool = True,
    tie_embeddings_a: bool | None = None,
    loader_prefix: Callable[[], str | None] | None = None,
    model_class_command: Callable[[], str | None] | None = None,
    model_renamings: Callable[[], Sequence[tuple[str, str]]] | None = None,
    model_loaded_names: Callable[[Iterable[str]], Mapping[str, str]] | None = None,
    quantization_a: str | None = None,
    quantizers: tuple[str | None, str | None] = (None, None),
    adapter_config_a: Callable[[], Mapping[str, Any] | None] | None = None,
    swapped_steps: str | Callable[[str | None], str] | None = None,
    revision_b: str | None = None,
    revision_a: str | None = None,
    paths_a: Callable[[], tuple[str, str] | None] | None = None,
    torch_ao_packed: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset()),
    torch_ao_qtensors: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset()),
    tensor_parallel_parts_a: int = 0,
    tensor_parallel_parts_b: int = 0,
    fsdp_metadata_key_a: str | None = None,
) -> DiffReport:
    """Diff two key sets as `load_state_dict(A, strict=False)` into a model shaped like B would see them.

    Example:
        >>> a = {"module.w": KeySpec("module.w", (2,), "float32")}
        >>> b = {"w": KeySpec("w", (2,), "float32")}
        >>> report = diff_specs(a, b)
        >>> report.matched, report.suggested_renames[0].pattern
        (0, '^module\\\\.')

    Args:
        specs_a: A's keys (name -> KeySpec), in file order.
        specs_b: B's keys.
        renames: `--rename`s applied to A's keys first.
        tied_groups_a: names that are one tensor in A (a pickle's tied weights).
        tied_groups_b: names that are one tensor in B.
        tie_embeddings: B's `tie_word_embeddings` when known (None: tie if an embedding fits).
        tie_embeddings_a: A's, for A's keys.
        base_prefix_loads: whether a loader adds or strips a base-model prefix (B is a transformers model).
        loader_prefix: called at most once, when a base-model prefix is suggested: the prefix B's
            from_pretrained adds or strips (its class's `base_model_prefix`), None when it cannot be told.
        model_class_command: gives the `diff-keys --model-class` check of B's class (`model_class_check`) or
            None; called only for a note on differences only from_pretrained resolves (it may import
            transformers).
        model_renamings: gives the `(regex, replacement)` renames transformers applies to B's class on load
            (`transformers_renamings`); called only when keys are left missing and unexpected with a shape in common.
        model_loaded_names: gives B's names that transformers renames on load, each to its loaded name
            (`transformers_loaded_names`); called only when an adapter A's modules are not in B as saved.
        adapter_config_a: gives the PEFT adapter_config.json beside A (or None); called only for an adapter whose
            saved shapes it settles.
        source_a: A as the user named it (None: not known, "A" in the report, and the calls that would name it said
            in words).
        source_b: B as the user named it (None: not known, "B" in the report, and the commands that would name it
            said in words).
        revision_b: the Hub revision B was read at (a repo id only), which a command that reads B again names.
        revision_a: A's, for the PeftModel.from_pretrained call that loads the adapter A.
        swapped_steps: what a "swapped-sides" note tells to do to check the adapter B against A (`swapped_steps`),
            when B is an adapter of A, or a function of the wrapper prefix to strip from A's keys that gives it (see
            `swapped_sides`); by default `diff-keys B A` on the sources as given.
        paths_a: gives A's one weights file as a path to type and a new folder beside it
            (`converters.conversion_paths`), for the conversion script a note on A's layout names; None: not known,
            said in words.
        torch_ao_packed: A's and B's layers kept in torch.ao.quantization's packed tuple (`torch_ao_packed_layers`
            of each side's entries that are not tensors).
        torch_ao_qtensors: A's and B's torch.ao.quantization quantized tensors (`torch_ao_quantized_tensors`).

    Raises:
        UsageError: the renames map two keys of A to the same name.
    """
    with gc_paused():  # 100,000s of long-lived small objects: see weightdoctor.gcpause
        return _diff_specs(specs_a, specs_b, renames, source_a=source_a if source_a is not None else "A",
                           named_a=source_a, source_b=source_b if source_b is not None else "B", named_b=source_b,
                           revision_b=revision_b, revision_a=revision_a,
                           tied_groups_a=tied_groups_a, tied_groups_b=tied_groups_b,
                           tie_embeddings=tie_embeddings, base_prefix_loads=base_prefix_loads,
                           tie_embeddings_a=tie_embeddings_a, loader_prefix=loader_prefix,
                           model_class_command=model_class_command, model_renamings=model_renamings,
                           model_loaded_names=model_loaded_names, quantization_a=quantization_a,
                           quantizers=quantizers, adapter_config_a=adapter_config_a,
                           swapped_steps=swapped_steps, paths_a=paths_a, torch_ao_packed=torch_ao_packed,
                           torch_ao_qtensors=torch_ao_qtensors, tensor_parallel_parts_a=tensor_parallel_parts_a,
                           tensor_parallel_parts_b=tensor_parallel_parts_b,
                           fsdp_metadata_key_a=fsdp_metadata_key_a)


def _dropped_tie_aliases(specs_a: Mapping[str, KeySpec]) -> list[str]:
    """The tied names save_pretrained leaves out of a checkpoint that ties its embeddings (the output layer,
    T5's per-stack copies of `shared`), where A stores none of them."""
    aliases = ["lm_head.weight"]
    if "shared.weight" in specs_a:
        aliases += ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"]
    return [alias for alias in aliases if alias not in specs_a]


def renames_onto_dropped_ties(
    specs_a: Mapping[str, KeySpec], specs_b: Mapping[str, KeySpec], renames: Sequence[Rename],
    missing: Sequence[str], tie_embeddings_a: bool | None,
) -> tuple[dict[str, tuple[str, str, str]], str]:
    """A `--rename` written for a tied alias A does not store (`lm_head.weight`, tied to `transformer.wte.weight`
    and dropped on save): it renames nothing, and the key of B it was meant to fill was an "unknown" error. Returns
    (reason, severity, detail) for those keys of B and a note; ({}, "") when no rename is such.

    Example:
        >>> a = {"wte.weight": KeySpec("wte.weight", (50, 16), "float32")}
        >>> b = {"output.weight": KeySpec("output.weight", (50, 16), "float32")}
        >>> renames_onto_dropped_ties(a, b, [Rename("^lm_head", "output")], ["output.weight"], None)[0][
        ...     "output.weight"][:2]
        ('tied-weight', 'error')
    """
    if not renames or not missing or tie_embeddings_a is False:
        return {}, ""
    embeddings = [name for name in specs_a if _INPUT_EMBEDDING.search(name) and "position" not in name]
    whys: dict[str, tuple[str, str, str]] = {}
    notes: list[str] = []
    for alias in _dropped_tie_aliases(specs_a) if embeddings else ():
        for rename in renames:
            target = rename.apply(alias)
            spec = specs_b.get(target)
            if target == alias or spec is None or target not in missing:
                continue
            source = next((name for name in embeddings if specs_a[name].shape == spec.shape), None)
            if source is None:
                continue
            # A config that says tie_word_embeddings settles it; without one, an absent output layer most likely is.
            ties = "ties" if tie_embeddings_a else "most likely ties"
            whys[target] = ("tied-weight", "error", f"{rename.as_flag()} names it after {alias}, which A does not "
                            f"store: A {ties} it to {source}")
            notes.append(f"{rename.as_flag()} renames no key of A onto {target}: A {ties} its {alias} to {source} "
                         f"(tie_word_embeddings), so it was stored once, as {source}, and {alias} was left out on "
                         f"save; B stores {target} on its own: fill it with a copy (state_dict[{target!r}] = "
                         f"state_dict[{source!r}]), or load into a model that ties them")
            break
    return whys, "; ".join(notes)


def _diff_specs(
    specs_a: Mapping[str, KeySpec],
    specs_b: Mapping[str, KeySpec],
    renames: Sequence[Rename],
    *,
    source_a: str,
    source_b: str,
    tied_groups_a: Sequence[Sequence[str]],
    tied_groups_b: Sequence[Sequence[str]],
    tie_embeddings: bool | None,
    base_prefix_loads: bool,
    tie_embeddings_a: bool | None = None,
    loader_prefix: Callable[[], str | None] | None = None,
    model_class_command: Callable[[], str | None] | None = None,
    model_renamings: Callable[[], Sequence[tuple[str, str]]] | None = None,
    model_loaded_names: Callable[[Iterable[str]], Mapping[str, str]] | None = None,
    quantization_a: str | None = None,
    quantizers: tuple[str | None, str | None] = (None, None),
    adapter_config_a: Callable[[], Mapping[str, Any] | None] | None = None,
    swapped_steps: str | Callable[[str | None], str] | None = None,
    named_a: str | None = None,
    named_b: str | None = None,
    revision_b: str | None = None,
    revision_a: str | None = None,
    paths_a: Callable[[], tuple[str, str] | None] | None = None,
    torch_ao_packed: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset()),
    torch_ao_qtensors: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset()),
    tensor_parallel_parts_a: int = 0,
    tensor_parallel_parts_b: int = 0,
    fsdp_metadata_key_a: str | None = None,
) -> DiffReport:
    renamed_a, _ = _renamed(specs_a, renames)
    tied = [[_rename_all(n, renames) for n in group] for group in tied_groups_a] if renames else tied_groups_a
    diff = raw_diff(renamed_a, specs_b)
    mismatched = [
        (n, renamed_a[n].shape, specs_b[n].shape) for n in diff.common if renamed_a[n].shape != specs_b[n].shape
    ]
    suggestions: list[SuggestedRename] = []
    after: int | None = None
    word_texts = (_word_text(diff.unexpected), _word_text(diff.missing))
    layout_whys, layout_note = foreign_layout(diff.unexpected, diff.missing, word_texts, paths_a)
    tie_whys, tie_note = renames_onto_dropped_ties(specs_a, specs_b, renames, diff.missing, tie_embeddings_a)
    if tie_whys:
        layout_whys = {**layout_whys, **tie_whys}
        layout_note = "; ".join(filter(None, (layout_note, tie_note)))
    expert_whys, expert_note = expert_layout(diff.unexpected, diff.missing, model_class_command, word_texts)
    if expert_whys:
        layout_whys = {**expert_whys, **layout_whys}
        layout_note = "; ".join(filter(None, (layout_note, expert_note)))
    if any(map(str.startswith, diff.missing, repeat("ema_"))):  # C-level: every diff runs it over B's missing keys
        from weightdoctor.structure import mmcv_ema_buffers

        missing_b = set(diff.missing)

        # B trained with mmcv's EMAHook (`ema_<name with _>` buffers beside each parameter), A without: the hook
        # registers the buffers as copies of the parameters when it starts, so A's parameters are all they need.
        ema_whys = {buffer: ("buffer", "info", f"mmcv EMAHook's copy of {param}, which A has: the hook re-creates "
                             "it from the parameter (the EMA restarts from A's weights)")
                    for buffer, param in mmcv_ema_buffers(specs_b).items()
                    if buffer in missing_b and param in renamed_a}
        layout_whys = {**ema_whys, **layout_whys}
    if diff.missing and diff.unexpected and (reparametrized := _reparametrized_whys(
            diff.missing, diff.unexpected, renamed_a, specs_b))[0]:
        # Left out of the rename search too: it renamed prune's weight_mask (0s and 1s) onto the weight.
        layout_whys = {**reparametrized[0], **layout_whys}
        layout_note = "; ".join(filter(None, (layout_note, reparametrized[1])))
    qtensors_a = torch_ao_qtensors[0]
    if any(torch_ao_packed) or any(torch_ao_qtensors):
        packed_a = frozenset(_rename_all(f"{layer}.weight", renames).removesuffix(".weight")
                             for layer in torch_ao_packed[0]) if renames else torch_ao_packed[0]
        qtensors_a = frozenset(_rename_all(name, renames) for name in torch_ao_qtensors[0]) if renames \
            else torch_ao_qtensors[0]
        ao_whys, ao_note = _torch_ao_packed_whys(diff.missing, diff.unexpected, packed_a, torch_ao_packed[1],
                                                 (qtensors_a, torch_ao_qtensors[1]))
        layout_whys = {**ao_whys, **layout_whys}
        layout_note = "; ".join(filter(None, (layout_note, ao_note)))
    adapter_whys, adapter_note = adapter_fit(renamed_a, specs_b, diff.unexpected, diff.missing, word_texts[0],
                                             adapter_config_a, named_b, revision_b, named_a, revision_a)
    if model_loaded_names is not None and any(severity == "error" for _, severity, _ in adapter_whys.values()):
        adapter_whys, adapter_note = _adapter_fit_as_loaded(
            (adapter_whys, adapter_note), model_loaded_names, renamed_a, specs_b, diff, word_texts[0],
            adapter_config_a, named_b, revision_b, named_a, revision_a)
    if adapter_whys:  # an adapter is not renamed into its base: its keys are told what they fit
        layout_whys, layout_note = adapter_whys, adapter_note
    elif diff.missing and (swapped := swapped_sides(renamed_a, specs_b, diff.unexpected, diff.missing, word_texts[1],
                                                    source_a, source_b, swapped_steps))[0]:
        adapter_whys = layout_whys = swapped[0]
        layout_note = swapped[1]
    elif diff.unexpected and (wrapped := peft_wrapped_against_adapter(renamed_a, specs_b, diff.unexpected))[0]:
        layout_whys, layout_note = {**wrapped[0], **layout_whys}, "; ".join(filter(None, (layout_note, wrapped[1])))
    elif chroma_whys := _chroma_against_flux(diff.unexpected, diff.missing):
        layout_whys, layout_note = {**chroma_whys[0], **layout_whys}, "; ".join(
            filter(None, (layout_note, chroma_whys[1])))
    if not adapter_whys and bool(diff.missing) != bool(diff.unexpected) \
            and (depth := _layer_count_whys()(renamed_a, specs_b, diff.missing, diff.unexpected))[0] \
            and not _any_tied(depth[0], tied, tied_groups_b):
        layout_whys = {**depth[0], **layout_whys}
        layout_note = "; ".join(filter(None, (layout_note, depth[1])))
    if diff.missing and diff.unexpected and not adapter_whys:
        # Keys of a known foreign layout are left out of the rename search: renaming them is not the fix.
        if layout_whys:
            shapes_a = {n: s.shape for n, s in renamed_a.items() if n not in layout_whys}
            shapes_b = {n: s.shape for n, s in specs_b.items() if n not in layout_whys}
        else:  # the same dicts, without a membership test per key
            shapes_a = {n: s.shape for n, s in renamed_a.items()}
            shapes_b = {n: s.shape for n, s in specs_b.items()}
        suggestions, final_names, longest = _suggest_renames(shapes_a, shapes_b)
        if suggestions:
            # The search's own result is rename_all's (a test holds it to that); a name over the limit at any step
            # goes through rename_all, which refuses it naming that step's rename.
            fixed = list(final_names.values()) if longest <= MAX_NAME_CHARS else rename_all(
                list(shapes_a), [Rename(s.pattern, s.replacement) for s in suggestions])
            # Keys whose new name is one of B's with the same shape (a name not in B gets None: no match).
            after = sum(map(eq, map(shapes_b.get, fixed), shapes_a.values()))
            layout_note = "; ".join(filter(None, (layout_note, renumbering_note(suggestions, shapes_b))))
    if suggestions and suggestions[0].pattern == r"^module\." and not adapter_whys \
            and (open_clip := open_clip_ddp_whys(renamed_a, specs_b, diff.unexpected))[0]:
        layout_whys = {**open_clip[0], **layout_whys}
        layout_note = "; ".join(filter(None, (layout_note, open_clip[1])))
    if diff.missing and diff.unexpected and not adapter_whys \
            and (lookalikes := lookalike_pairs(diff.unexpected, diff.missing)):
        lookalike_whys, lookalike_note = _lookalike_whys(lookalikes, renamed_a, specs_b)
        layout_whys = {**lookalike_whys, **layout_whys}
        layout_note = "; ".join(filter(None, (layout_note, lookalike_note)))
    if model_renamings is not None and diff.missing and diff.unexpected and not adapter_whys:
        renamed_whys, renamed_note = per_model_renames(renamed_a, specs_b, diff.unexpected, diff.missing,
                                                       suggestions, model_renamings, model_class_command)
        layout_whys = {**renamed_whys, **layout_whys}
        layout_note = "; ".join(filter(None, (layout_note, renamed_note)))
    return build_report(
        renamed_a, specs_b, diff.missing, diff.unexpected, mismatched, diff.common, suggestions,
        source_a=source_a, source_b=source_b, mode="checkpoints", renames_applied=renames,
        matched_after_renames=after, tied_groups_a=tied, tied_groups_b=tied_groups_b,
        tie_embeddings=tie_embeddings, base_prefix_loads=base_prefix_loads, tie_embeddings_a=tie_embeddings_a,
        layout_whys=layout_whys, notes=[layout_note] if layout_note else (), loader_prefix=loader_prefix,
        quantization_a=quantization_a, quantizers=quantizers,
        refused_dtypes=frozenset(qtensors_a | torch_ao_qtensors[1]) if any(torch_ao_qtensors) else frozenset(),
        tensor_parallel_parts_a=tensor_parallel_parts_a, tensor_parallel_parts_b=tensor_parallel_parts_b,
        fsdp_metadata_key_a=fsdp_metadata_key_a,
    )


# Libraries whose own loader strips DDP's `module.` from a checkpoint they saved, told by names every such file holds
# (structure.py's _OPEN_CLIP / _GROUNDING_DINO tell the same files for inspect): diff-keys rated the prefix an error no
# load by that library meets. open_clip's training saves epoch_N.pt with the DDP model's state dict, and its
# factory.load_state_dict strips `module.` when the first name starts with it; GroundingDINO's released .pth holds
# {"model": the DDP model's state dict}, which its util/inference.py's load_model reads as
# load_state_dict(clean_state_dict(checkpoint["model"]), strict=False), clean_state_dict (util/utils.py) dropping
# `module.` from each name. Each: (the names, the library's loader, what A is, how that loader reads the file).
_OWN_LOADER_DDP: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    (("module.visual.", "module.logit_scale"), "open_clip's loader",
     "an open_clip training checkpoint (epoch_N.pt, the DDP model's state dict)",
     "open_clip's factory.load_state_dict strips itself, so open_clip.create_model(..., pretrained=<A>) loads them "
     "as they are"),
    (("module.bert.", "module.transformer.", "module.feat_map."), "GroundingDINO's load_model",
     "a GroundingDINO checkpoint (its released .pth: the DDP model's state dict under \"model\")",
     "GroundingDINO's load_model strips itself (util.utils.clean_state_dict, then load_state_dict with "
     "strict=False), so its own code loads them as they are"),
)


def open_clip_ddp_whys(specs_a: Mapping[str, KeySpec], specs_b: Mapping[str, KeySpec], unexpected: Sequence[str],
                       ) -> tuple[dict[str, tuple[str, str, str]], str]:
    """(reason, severity, detail) of the keys that differ only by DDP's `module.` where A is a checkpoint of a library
    whose own loader strips that prefix (open_clip's training checkpoint, GroundingDINO's .pth: _OWN_LOADER_DDP), and
    a note; ({}, "") for any other file: a warning, not an error, since that library's loader strips the prefix.

    Example:
        >>> a = {n: KeySpec(n, (1,), "float32") for n in ("module.visual.proj", "module.logit_scale")}
        >>> b = {n: KeySpec(n, (1,), "float32") for n in ("visual.proj", "logit_scale")}
        >>> open_clip_ddp_whys(a, b, list(a))[0]["logit_scale"][:2]
        ('wrapper-prefix', 'warn')
    """
    if not specs_a or not all(map(str.startswith, specs_a, repeat("module."))):
        return {}, ""
    library = next((entry for entry in _OWN_LOADER_DDP
                    if all(any(map(str.startswith, specs_a, repeat(part))) for part in entry[0])), None)
    if library is None:
        return {}, ""
    _, loader, what, how = library
    why = ("wrapper-prefix", "warn", f"{loader} strips module. itself (see the note)")
    whys: dict[str, tuple[str, str, str]] = {}
    for name in unexpected:
        bare = name[len("module."):]
        if name.startswith("module.") and bare in specs_b and specs_b[bare].shape == specs_a[name].shape:
            whys[name] = whys[bare] = why
    if not whys or len(whys) != 2 * len(unexpected):
        # Only the prefix between them: against another layout (transformers' CLIPModel, GroundingDinoModel) the
        # library's loader is no loader of B, and the layout's note says what to do.
        return {}, ""
    return whys, (f"A is {what}: "
                  f"{counted(len(whys) // 2, 'key')} {plural(len(whys) // 2, 'differs', 'differ')} from B only by "
                  f"module., which {how}; only another loader (load_state_dict, a converter) needs "
                  "--rename '^module\\.='")


def _adapter_fit_as_loaded(
    found: tuple[dict[str, tuple[str, str, str]], str],
    model_loaded_names: Callable[[Iterable[str]], Mapping[str, str]],
    specs_a: Mapping[str, KeySpec], specs_b: Mapping[str, KeySpec], diff: _RawDiff, word_text: str | None,
    *args: Any,
) -> tuple[dict[str, tuple[str, str, str]], str]:
    """`adapter_fit` again on B's names as from_pretrained loads them, when transformers renames some (Nemotron-H's
    saved `backbone.` is `model.` in memory, the names peft's adapter holds): every module of a LoRA made on the
    loaded model was "which B does not have: the adapter's weights for it are dropped", an error, though
    PeftModel.from_pretrained on the loaded base takes them all. `found` when the loaded names fit no better."""
    loaded = model_loaded_names(specs_b)
    if not loaded:
        return found
    specs_loaded = {loaded.get(name, name): KeySpec(loaded[name], spec.shape, spec.dtype) if name in loaded else spec
                    for name, spec in specs_b.items()}
    if len(specs_loaded) != len(specs_b):  # two of B's names load as one: not a renaming to reason on
        return found
    whys, note = adapter_fit(specs_a, specs_loaded, diff.unexpected, [loaded.get(name, name) for name in diff.missing],
                             word_text, *args)

    def errors(said: Mapping[str, tuple[str, str, str]]) -> int:
        return sum(severity == "error" for _, severity, _ in said.values())

    if not whys or errors(whys) >= errors(found[0]):
        return found
    saved_as = {new: old for old, new in loaded.items()}
    old, new = next(iter(loaded.items()))
    return ({saved_as.get(name, name): why for name, why in whys.items()},
            f"{note}; B's keys are compared as from_pretrained names them: transformers' conversion mapping for its "
            f"model renames {len(loaded)} of them on load ({old} as {new})")


def per_model_renames(
    specs_a: Mapping[str, KeySpec], specs_b: Mapping[str, KeySpec], unexpected: Sequence[str],
    missing: Sequence[str], suggestions: Sequence[SuggestedRename],
    model_renamings: Callable[[], Sequence[tuple[str, str]]],
    model_class_command: Callable[[], str | None] | None = None,
) -> tuple[dict[str, tuple[str, str, str]], str]:
    """Keys left missing and unexpected (after the suggested renames) that are one weight under the two names
    transformers maps for B's class on load and save (GPT-NeoX's `embed_out` saved, `lm_head` in memory): from
    a model's `state_dict()` against its `save_pretrained`, from_pretrained loads them; load_state_dict does not.
    Returns (reason, severity, detail) for those keys and a note; ({}, "") when there are none.

    Example:
        >>> a = {"lm_head.weight": KeySpec("lm_head.weight", (8, 4), "float32")}
        >>> b = {"embed_out.weight": KeySpec("embed_out.weight", (8, 4), "float32")}
        >>> whys, _ = per_model_renames(a, b, ["lm_head.weight"], ["embed_out.weight"], [],
        ...                             lambda: [("^embed_out[.]", "lm_head.")])
        >>> whys["embed_out.weight"][:2]
        ('renamed', 'warn')
    """
    steps = [Rename(s.pattern, s.replacement) for s in suggestions]
    left_a = dict(zip(rename_all(list(unexpected), steps), unexpected, strict=True)) if steps else \
        dict(zip(unexpected, unexpected, strict=True))
    left_a = {new: old for new, old in left_a.items() if new not in specs_b}
    left_b = [name for name in missing if name not in left_a]
    if not left_a or not left_b or not {specs_a[o].shape for o in left_a.values()} & \
            {specs_b[n].shape for n in left_b}:
        return {}, ""
    found: list[tuple[str, str, str]] = []  # (A's name, B's name, rename)
    for pattern, replacement in model_renamings():
        try:
            regex = re.compile(pattern)
            # A in memory and B saved (B's name renamed onto A's), or A saved and B in memory
            pairs = [(new_a, n) for n in left_b if (new_a := regex.sub(replacement, n, count=1)) != n] + \
                [(a, new_b) for a in left_a if (new_b := regex.sub(replacement, a, count=1)) != a]
        except (re.error, IndexError):  # a pattern of transformers' own syntax that re does not take
            continue
        for name_a, name_b in pairs:
            old = left_a.get(name_a)
            if old is not None and name_b in specs_b and specs_a[old].shape == specs_b[name_b].shape:
                found.append((old, name_b, f"{pattern} → {replacement}"))
    whys: dict[str, tuple[str, str, str]] = {}
    for old, name_b, rule in found:
        detail = (f"the same weight as {name_b}: transformers renames it for this model ({rule}), "
                  "load_state_dict does not")
        whys[old] = ("renamed", "warn", detail)
        whys[name_b] = ("renamed", "warn", detail.replace(name_b, old, 1))
    if not found:
        return {}, ""
    shown = ", ".join(f"{old} ↔ {name_b}" for old, name_b, _ in found[:3]) + (" ..." if len(found) > 3 else "")
    command = model_class_command() if model_class_command is not None else None
    note = (f"transformers' conversion mapping for B's model renames {shown} on load and save (from_pretrained "
            "loads them, load_state_dict does not)" + (f"; what from_pretrained reports: {command}" if command else ""))
    return whys, note


def transformers_renamings(config: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The plain renames (`WeightRenaming`: one regex, one replacement) of transformers' conversion mapping for
    the config's first architecture and its model_type, as from_pretrained applies them on load. Imports
    transformers; [] when it is not installed or knows neither."""
    if not config:
        return []
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
        from transformers.core_model_loading import WeightRenaming
    except Exception:  # noqa: BLE001 - no (or another) transformers: nothing to tell
        return []
    found: list[tuple[str, str]] = []
    for key in (_first_architecture(config), config.get("model_type")):
        for transform in (get_checkpoint_conversion_mapping(key) or []) if isinstance(key, str) else []:
            if type(transform) is not WeightRenaming:
                continue
            sources = getattr(transform, "_original_source_patterns", transform.source_patterns)
            targets = getattr(transform, "_original_target_patterns", transform.target_patterns)
            sources, targets = ([x] if isinstance(x, str) else list(x) for x in (sources, targets))
            if len(sources) == 1 and len(targets) == 1:
                found.append((sources[0], targets[0]))
    return found


def transformers_loaded_names(config: Mapping[str, Any] | None, names: Iterable[str]) -> dict[str, str]:
    """B's names that transformers' conversion mapping for the config's first architecture and its model_type renames
    when from_pretrained loads it (its plain `WeightRenaming`s, applied in turn by its own `apply_renamings`), each
    to its loaded name: Nemotron-H's `backbone.layers.1.mixer.q_proj.weight` loads as `model.layers.1.mixer.q_proj
    .weight`. {} when transformers is not installed, knows neither, or renames none of them."""
    if not config:
        return {}
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, apply_renamings
    except Exception:  # noqa: BLE001 - no (or another) transformers: nothing to tell
        return {}
    renamings = [transform for key in dict.fromkeys((_first_architecture(config), config.get("model_type")))
                 if isinstance(key, str) for transform in (get_checkpoint_conversion_mapping(key) or [])
                 if type(transform) is WeightRenaming]
    if not renamings:
        return {}
    loaded: dict[str, str] = {}
    for name in names:
        try:
            new = apply_renamings(name, renamings)
        except Exception:  # noqa: BLE001 - transformers' own code on a name it was not written for
            return {}
        if new != name:
            loaded[name] = new
    return loaded


def _rename_all(name: str, renames: Sequence[Rename]) -> str:
    for rename in renames:
        name = rename.apply(name)
    return name


def swapped_steps(a: Checkpoint, b: Checkpoint, key: str | None = None, renames: Sequence[Rename] = (),
                  strip: str | None = None) -> str:
    """What a "swapped-sides" note tells to do: `diff-keys B A`, each side read as this run read it. The sources
    alone compared other revisions than `--revision` / `--revision-b` named (B's revision is the new A's, and A's
    the new B's), and dropped A's `--key` and `--rename`s: diff-keys takes neither for B, so A is written out as
    this run read it first (`weightdoctor convert`, which takes both), and that copy compared. `strip`: a training
    wrapper's prefix before every key of A (`module.`), which that copy drops too.

    Example:
        >>> from weightdoctor.checkpoint import Checkpoint
        >>> a = Checkpoint("org/base", Path("base"), "safetensors", False, [], [], repo_id="org/base")
        >>> b = Checkpoint("org/lora", Path("lora"), "safetensors", False, [], [], repo_id="org/lora", revision="v2")
        >>> swapped_steps(a, b)
        'run weightdoctor diff-keys org/lora org/base --revision v2 --revision-b main'
    """
    from weightdoctor.paths import shell_word

    first, second = b.revision, a.revision
    flags = [f"--revision {shell_word(first)}"] if first is not None else []
    steps = ""
    wrapper = [Rename(f"^{re.escape(strip)}", "")] if strip is not None else []
    if key is not None or renames or wrapper:
        # A file converts to a file, a folder or a repo to a folder (convert's rule).
        source = Path(a.source)
        tags = ".".join(([key] if key is not None else []) + (["renamed"] if renames or wrapper else []))
        written = (f"{source.stem}.{tags}.safetensors" if source.suffix.lower() in _WEIGHT_FILE_SUFFIXES
                   else f"{source.name}.{tags}")
        options = ([f"--key {shell_word(key)}"] if key is not None else []) + [rename.as_flag() for rename in
                                                                                [*renames, *wrapper]]
        words = ["weightdoctor convert", shell_word(a.source, argument=True), *options,
                 f"-o {shell_word(written, argument=True)}"]
        words += [f"--revision {shell_word(second)}"] if second is not None else []
        how = " and ".join(([f"--key {shell_word(key)}"] if key is not None else [])
                           + ([" ".join(rename.as_flag() for rename in renames)] if renames else []))
        takes = " and ".join((["takes no --key for B"] if key is not None else [])
                             + (["renames only A's keys"] if renames else []))
        into = "a file" if written.endswith(".safetensors") else "a folder"
        read = f"as this run read it ({how})" if how else ""
        unwrapped = f"without the wrapper's prefix ({wrapper[0].as_flag()})" if wrapper else ""
        why = f", as diff-keys {takes}" if takes else ""
        steps = (f"write A's state dict {' and '.join(filter(None, (read, unwrapped)))} to {into} of its own{why} "
                 f"({' '.join(words)}), then ")
        target = written
    else:
        target = a.source
        if second != first and a.repo_id is not None:  # a repo read at its default branch: main
            flags.append(f"--revision-b {shell_word(second or 'main')}")
    return " ".join([f"{steps}run weightdoctor diff-keys {shell_word(b.source, argument=True)}",
                     shell_word(target, argument=True), *flags])


def _fits_whole(modules: Mapping[str, bool], fitting: int, whys: Mapping[str, tuple[str, str, str]]) -> bool:
    """Whether an adapter fits B whole: every module it adapts in B with shapes that fit (none a convolution that
    fits only as a grouped one) and none of its tensors an error (a module it saves whole of another shape)."""
    return bool(modules) and fitting == len(modules) and not any(why[1] == "error" for why in whys.values())


# The transformers class peft's AutoPeftModel classes load a base into, by the adapter's task_type
# (peft.auto.MODEL_TYPE_TO_PEFT_MODEL_MAPPING beside AutoPeftModelFor*'s _target_class).
_PEFT_TASK_CLASSES = {"CAUSAL_LM": "AutoModelForCausalLM", "SEQ_CLS": "AutoModelForSequenceClassification",
                      "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM", "TOKEN_CLS": "AutoModelForTokenClassification",
                      "QUESTION_ANS": "AutoModelForQuestionAnswering", "FEATURE_EXTRACTION": "AutoModel"}


def _loadable_folder(source: str | None, marker: str) -> str | None:
    """What from_pretrained is given for `source` as the user named it: a folder or repo id as named, a file's
    folder where `marker` (config.json, adapter_config.json) lies beside it; None when there is none (a bare
    state dict file, or no source)."""
    if source is None or source.startswith("hf://"):  # from_pretrained reads no hf:// address
        return None
    # os.path.isfile, not Path.is_file: the base is adapter_config.json's text, and a name past 255 bytes made
    # Path.is_file raise ENAMETOOLONG (Python 3.11 lets it through), which ended inspect of the adapter in "cannot
    # read or write: File name too long", naming no file.
    if not os.path.isfile(source):
        return source  # a folder, or a repo id (from_pretrained reads both)
    folder = Path(source).parent
    return (str(folder) if str(folder) != "." else ".") if os.path.isfile(folder / marker) else None


def _peft_base_class(config: Mapping[str, Any] | None) -> str | None:
    """The transformers class an adapter's base loads in, from its adapter_config.json: its task_type's Auto class,
    else the class peft recorded (`auto_mapping`, written when the base was no Auto class's); None when neither."""
    if not isinstance(config, Mapping):
        return None
    task_type = config.get("task_type")
    if isinstance(task_type, str) and task_type in _PEFT_TASK_CLASSES:
        return _PEFT_TASK_CLASSES[task_type]
    mapping = config.get("auto_mapping")
    if isinstance(mapping, Mapping):
        name, library = mapping.get("base_model_class"), mapping.get("parent_library")
        if isinstance(name, str) and name.isidentifier() and isinstance(library, str) \
                and library.split(".")[0] == "transformers":
            return name
    return None


def peft_loading(adapter: str | None, base: str | None, config: Mapping[str, Any] | None = None,
                 revision: str | None = None, adapter_revision: str | None = None) -> str:
    """How a PEFT adapter is loaded onto its base: the call, pasteable with its imports into a fresh interpreter, where
    the adapter and the base are both named (folders or repo ids, each as the user named it; the base's `revision` and
    the adapter's kept) and the adapter's config gives the base's class; in words otherwise:
    `PeftModel.from_pretrained(base, adapter)` pasted was a NameError, and `peft.PeftModel...` without its import.

    Example:
        >>> peft_loading("out/lora", "org/llama", {"task_type": "CAUSAL_LM"})[:66]
        'import peft, transformers; model = peft.PeftModel.from_pretrained('
        >>> peft_loading("out/lora", "org/llama", {"task_type": "CAUSAL_LM"})[-45:]
        "lLM.from_pretrained('org/llama'), 'out/lora')"
        >>> peft_loading(None, None)
        "peft's PeftModel.from_pretrained, given the base model it was made for and the adapter's folder"
    """
    adapter_folder = _loadable_folder(adapter, "adapter_config.json")
    base_folder = _loadable_folder(base, "config.json")
    model_class = _peft_base_class(config)
    if adapter_folder is not None and base_folder is not None and model_class is not None:
        at = f", revision={revision!r}" if revision is not None else ""
        adapter_at = f", revision={adapter_revision!r}" if adapter_revision is not None else ""
        return ("import peft, transformers; model = "
                f"peft.PeftModel.from_pretrained(transformers.{model_class}.from_pretrained({base_folder!r}{at}), "
                f"{adapter_folder!r}{adapter_at})")
    given = (f"B ({base_folder!r}) loaded in the model class the adapter was trained on" if base_folder is not None
             else "the base model it was made for")
    return (f"peft's PeftModel.from_pretrained, given {given} and "
            + (f"the adapter's folder {adapter_folder!r}" if adapter_folder is not None else "the adapter's folder"))


def _unwrap_command(source: str | None, wrapper: str, revision: str | None = None) -> str:
    """The convert that writes `source` without a training wrapper's prefix, where the user stands (a file to
    `NAME.unwrapped.safetensors`, a folder or repo to `NAME.unwrapped`), read at `revision` (a repo id's
    --revision-b, dropped before: the convert read the default branch). Without a source, said in words:
    `weightdoctor convert B ... -o ...` pasted read a file named `B`.

    Example:
        >>> print(_unwrap_command("runs/ddp model.pt", "module."))
        weightdoctor convert 'runs/ddp model.pt' --rename '^module\\.=' -o 'ddp model.unwrapped.safetensors'
    """
    from weightdoctor.paths import shell_word

    flag = Rename(f"^{re.escape(wrapper)}", "").as_flag()
    if source is None:
        # No file to name (diff_specs called without B's source): a command with `B` and `...` in it ran pasted and
        # read a file named B, so the step is said in words.
        return f"convert B's checkpoint with {flag} and -o naming the file to write"
    named = Path(source.rstrip("/") or "/")
    written = (f"{named.stem}.unwrapped.safetensors" if named.suffix.lower() in _WEIGHT_FILE_SUFFIXES
               else f"{named.name or 'model'}.unwrapped")
    # A repo id read at --revision-b: the convert read the default branch without it, not the B compared here
    # (an hf:// address carries its own @revision).
    at = f" --revision {shell_word(revision, argument=True)}" if revision is not None \
        and not source.startswith("hf://") else ""
    return (f"weightdoctor convert {shell_word(source, argument=True)}{at} {flag} -o "
            f"{shell_word(written, argument=True)}")


# The suffixes of a single weights file, which `weightdoctor convert` writes to a file (a folder to a folder).
_WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _model_part_flat_notes(notes: list[str], files_a: Sequence[Path]) -> list[str]:
    """`notes`, the fairscale flat parameters' note told of A as the model-parallel part its file name says it is
    (metaseq's `checkpoint_last-model_part-0-shard0.pt`, `reshard-model_part-0.pt`): that note's fix, fairseq's
    `checkpoint_last-shardN.pt` consolidated by their 'fsdp_metadata', is none for a part (metaseq saves
    'shard_metadata', and each part's shards are unflattened apart); A's warning says what is and how."""
    from weightdoctor.checkpoint.model_parts import part_rank, sharded_part_rank

    if len(files_a) != 1 or (part_rank(files_a[0].name) is None and sharded_part_rank(files_a[0].name) is None):
        return notes
    told = []
    for note in notes:
        head, _, _ = note.partition(": ")
        if note.startswith("A holds ") and "fairscale FSDP flat parameter" in head:
            note = (f"{head}: {files_a[0].name} is one model-parallel part's weights (or one FSDP shard of them), "
                    "flattened by fairscale's FullyShardedDataParallel, which no loader takes by name; unflatten "
                    "every part by the metadata its files hold, as A's warning says how, and compare the merged "
                    "model with B")
        told.append(note)
    return told


def diff_checkpoints(a: Checkpoint, b: Checkpoint, renames: Sequence[Rename] = (), *,
                     key: str | None = None) -> DiffReport:
    """`diff_specs` on two opened checkpoints (headers only: no tensor data is read). `key`: A's `--key`, as
    given (None when A's state dict was found without one)."""
    from weightdoctor.checkpoint.model_parts import fsdp_metadata_key, parts_counted
    from weightdoctor.converters import conversion_paths
    from weightdoctor.quantized import quantization_of

    def adapter_config_a() -> Mapping[str, Any] | None:
        # Imported when asked (a PEFT method whose saved shapes the config settles): weightdoctor.structure is no
        # module the headers-only path imports otherwise, ~3-7 ms of every fresh diff-keys.
        from weightdoctor.structure import peft_adapter_config

        return peft_adapter_config(a)

    # Asked only for a note (has_model_class imports transformers: not in the headers-only path otherwise).
    check = functools.cache(lambda: _model_class_command(a, b, renames))
    found_b = quantization_of(b.config)
    report = diff_specs(
        checkpoint_specs(a), checkpoint_specs(b), renames,
        source_a=a.source, source_b=b.source, tied_groups_a=a.alias_groups(), tied_groups_b=b.alias_groups(),
        tie_embeddings=config_ties(b.config), base_prefix_loads=b.config is not None,
        tie_embeddings_a=config_ties(a.config),
        loader_prefix=(lambda: base_model_prefix_of(b.config)) if b.config else None,
        model_class_command=check,
        model_renamings=(lambda: transformers_renamings(b.config)) if b.config else None,
        model_loaded_names=functools.partial(transformers_loaded_names, b.config) if b.config else None,
        quantization_a=None if (found := quantization_of(a.config)) is None or found_b else found[0],
        quantizers=(found[0] if found is not None else None, found_b[0] if found_b is not None else None),
        adapter_config_a=adapter_config_a,
        swapped_steps=functools.partial(swapped_steps, a, b, key, renames),
        revision_b=b.revision if b.repo_id is not None else None,
        revision_a=a.revision if a.repo_id is not None else None,
        paths_a=functools.partial(conversion_paths, a),
        torch_ao_packed=(torch_ao_packed_layers(a.non_tensor_keys), torch_ao_packed_layers(b.non_tensor_keys)),
        torch_ao_qtensors=(torch_ao_quantized_tensors(a), torch_ao_quantized_tensors(b)),
        tensor_parallel_parts_a=parts_counted([f.path for f in a.files if f.role == "weights"]),
        tensor_parallel_parts_b=parts_counted([f.path for f in b.files if f.role == "weights"]),
        fsdp_metadata_key_a=fsdp_metadata_key(a.other_entries),
    )
    report.revision_a, report.resolved_a = a.revision, a.location
    report.revision_b, report.resolved_b = b.revision, b.location
    report.notes = _model_part_flat_notes(report.notes, [f.path for f in a.files if f.role == "weights"])
    # Every missing and unexpected key is in one group of its kind and reason: a few groups, not 10,000s of keys.
    unexplained = any(g.reason == "unknown" and g.kind in ("missing", "unexpected") for g in report.groups)
    if unexplained and not any("--model-class" in note for note in report.notes) and check():
        # Two checkpoints are compared as load_state_dict sees them; from_pretrained also renames some keys
        # per model (in-memory names differ from saved ones in several vision and MoE models).
        report.notes.append(
            f"B's config names {_first_architecture(b.config)}: from_pretrained also renames some checkpoint keys "
            f"of its own (per model), which load_state_dict does not; what it reports: {check()}")
    timm_note = timm_head_note(a, b, report.mismatched)
    if timm_note:
        report.notes.append(timm_note)
    return report


def timm_head_note(a: Checkpoint, b: Checkpoint, mismatched: Sequence[Mismatch]) -> str | None:
    """How timm loads A into B when B is a timm model (config.json with `architecture` and `pretrained_cfg`) whose
    classifier (`pretrained_cfg.classifier`) has another class count than A's: timm's own loader drops the classifier
    weights whose class count differs and starts them at random, where the generic advice (from_pretrained's
    ignore_mismatched_sizes, load_state_dict) is not what a timm user runs. None for anything else.

    Example:
        >>> timm_head_note(a, b, report.mismatched)  # doctest: +SKIP
        "B is timm's convnext_atto with num_classes=10 (config.json): ..."
    """
    config = b.config or {}
    arch, pretrained = config.get("architecture"), config.get("pretrained_cfg")
    if not isinstance(arch, str) or not isinstance(pretrained, Mapping):
        return None
    classifier = pretrained.get("classifier")
    classifiers = [classifier] if isinstance(classifier, str) else [c for c in classifier or [] if isinstance(c, str)]
    heads = [m for m in mismatched if m.reason == "head-size" and m.shape_a and m.shape_b
             and any(m.name.startswith(f"{c}.") for c in classifiers)]
    if not heads:
        return None
    rows_a, rows_b = heads[0].shape_a[0], heads[0].shape_b[0]
    if any((m.shape_a[0], m.shape_b[0]) != (rows_a, rows_b) for m in heads):
        return None  # several classifiers of different widths (a distilled model's head_dist): no one command
    weights = [f for f in a.files if f.role == "weights"]
    if a.repo_id is not None:
        model, overlay = f"'hf-hub:{a.repo_id}'", ""
    elif len(weights) == 1:
        # timm reads a local file through pretrained_cfg_overlay; its num_classes says how many rows A's head has,
        # which timm compares with num_classes to drop it.
        file = str(weights[0].path)
        model, overlay = f"'{arch}'", f", pretrained_cfg_overlay=dict(file={file!r}, num_classes={rows_a})"
    else:
        return None
    names = ", ".join(sorted(m.name for m in heads))
    said = "its config.json" if config.get("num_classes") == rows_b else "its classifier's rows"
    return (f"B is timm's {arch} with num_classes={rows_b} ({said}), A's classifier has {rows_a} outputs: "
            f"import timm; timm.create_model({model}, "
            f"pretrained=True, num_classes={rows_b}{overlay}) loads A's weights and drops {names} (their class count "
            "differs), which start at random; the rest must match")


def _model_class_command(a: Checkpoint, b: Checkpoint, renames: Sequence[Rename]) -> str | None:
    """The `diff-keys --model-class` check of B's class that reads A as this run did (None when B's config names
    no class transformers has, or when one --revision cannot name both A's and B's)."""
    model_class = _first_architecture(b.config)
    if not model_class or not has_model_class(model_class):
        return None
    config = _config_source(b)
    # With --model-class, --revision applies to A and to --config alike (a local A ignores it). A read from the
    # Hub keeps its own revision (None: its default branch), whatever B's.
    revision = a.revision if a.repo_id is not None or b.repo_id is None else b.revision
    if b.repo_id is not None and b.revision != revision:
        if b.location != str(b.path):  # B's headers came from the Hub: no local folder to name instead
            return None
        config = str(b.path if b.path.is_dir() else b.path.parent)  # B's snapshot, read at its own revision
    return model_class_check(a.source, model_class, config, revision=revision, key=a.nested_key, renames=renames)


def _config_source(b: Checkpoint) -> str:
    """What `--config` takes to read B's config.json: B as given when it names a folder or a repo, else the
    folder of its weights file or index (where the reader found that config.json; --config reads a file it is
    given as JSON)."""
    if b.repo_id is not None or Path(b.source).is_dir():
        return b.source
    return str(Path(b.source).parent)


def _first_architecture(config: Mapping[str, Any] | None) -> str | None:
    architectures = config.get("architectures") if config else None
    first = architectures[0] if isinstance(architectures, list) and architectures else None
    return first if isinstance(first, str) and first.isidentifier() else None


def base_model_prefix_of(config: Mapping[str, Any] | None) -> str | None:
    """The `base_model_prefix` of the class from_pretrained builds for `config` (its first architecture, else
    AutoModel's class for its model_type): the one prefix it adds or strips. None when transformers does not
    know the model. Imports transformers (only asked when a base-model prefix is suggested)."""
    if not config:
        return None
    try:
        import transformers
        from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

        names = [n for n in config.get("architectures") or [] if isinstance(n, str)]
        names.append(MODEL_MAPPING_NAMES.get(config.get("model_type"), ""))
        for name in names:
            cls = getattr(transformers, name, None) if name else None
            if isinstance(cls, type):
                return getattr(cls, "base_model_prefix", None) or None
    except Exception:  # noqa: BLE001 - an unknown or broken model: the prefix cannot be told
        return None
    return None


def config_ties(config: Mapping[str, Any] | None) -> bool | None:
    """A config's `tie_word_embeddings` (also under `text_config`), None when it does not say."""
    if not config:
        return None
    for source in (config, config.get("text_config") or {}):
        value = source.get("tie_word_embeddings") if isinstance(source, Mapping) else None
        if isinstance(value, bool):
            return value
    return None


# ---------------------------------------------------------------------------------------------------------------
# Values.


def layer_of(name: str) -> str:
    """The layer a tensor belongs to: up to its first numeric component, else its module path.

    Example:
        >>> layer_of("bert.encoder.layer.3.attention.self.query.weight")
        'bert.encoder.layer.3'
    """
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1]) or name


def _computable(tensor: torch.Tensor) -> bool:
    """Whether torch can cast `tensor` to float64 (not for packed 4-bit and bit types); a complex one is compared as its
    (real, imaginary) pairs, which it can (its own cast would warn that it drops the imaginary parts)."""
    import torch

    if tensor.is_complex():
        return True
    try:
        # One value, a view: reshape(-1) of a strided tensor (a transpose saved as such) copies all of it.
        probe = tensor[(0,) * tensor.dim()].reshape(1) if tensor.numel() else tensor.reshape(-1)
        probe.to(torch.float64)
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    return True


def _bytes_of(tensor: torch.Tensor) -> torch.Tensor:
    import torch

    return tensor.contiguous().reshape(-1).view(torch.uint8)


# float4_e2m1fn_x2's codes (sign, 2 exponent bits, 1 mantissa bit), each value doubled: all are integers in int8.
_FLOAT4_DOUBLED = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)


def _float4_doubled(tensor: torch.Tensor) -> torch.Tensor:
    """Twice the values of a float4_e2m1fn_x2 tensor, flat, as int8: both nibbles of each byte, low then high
    (A's and B's in the same order, which is all a comparison needs)."""
    import torch

    codes = _bytes_of(tensor)
    table = torch.tensor(_FLOAT4_DOUBLED, dtype=torch.int8)
    return torch.stack([table[(codes & 0x0F).long()], table[(codes >> 4).long()]], -1).reshape(-1)


# Values compared at once by `compare_pair`: each float64 temporary of a chunk (the two casts, the difference, its
# square, ...) is 8 bytes a value, and about seven are alive together. At 4M values a chunk that was ~210 MB above
# the pair itself (measured: diff-keys --values of two 300 MB float32 tensors peaked at 1022 MB; 828 MB at 256K
# values, the pair and the interpreter with torch ~820 MB). 256K values are also faster (they stay in the CPU's
# caches): 0.16 s of CPU for 10M float32 values on one thread, 0.5 s at 4M values a chunk.
VALUE_CHUNK = 1 << 18


def compare_pair(name: str, a: torch.Tensor, b: torch.Tensor,
                 chunk: int = VALUE_CHUNK) -> tuple[ValueDiff, float, float]:
    """Compare two same-shaped tensors in float64 chunks; also return Σ(A−B)² and ΣB² for layer totals.

    Each chunk's sums are torch's own (pairwise, in float64); the chunks' sums add up exactly rounded
    (`math.fsum`), so the number of chunks does not change the precision of `rel_change`.
    """
    import torch

    dtype_a = str(a.dtype).removeprefix("torch.")
    dtype_b = str(b.dtype).removeprefix("torch.")
    if (a.is_complex() or b.is_complex()) and _computable(a) and _computable(b):
        # Against a packed type torch has no arithmetic for (float4: "cat_serial_kernel not implemented", an
        # unexpected NotImplementedError), compared below as such, bytes or an unknown change.
        # Compared as (real, imaginary) pairs: a cast to float64 would drop the imaginary parts.
        # A complex tensor's (real, imaginary) view is no copy; its chunks are cast to float64 as a float tensor's.
        a = _real_pairs(a) if a.is_complex() else torch.stack([a, torch.zeros_like(a)], -1)
        b = _real_pairs(b) if b.is_complex() else torch.stack([b, torch.zeros_like(b)], -1)
    if a.dtype == b.dtype and dtype_a == "float4_e2m1fn_x2" and a.shape == b.shape:
        # Torch has no arithmetic for float4 (its cast raises), so a changed tensor got NaN for the size of its
        # change. Its 16 codes decode exactly: compared as twice their values in int8 (two values a byte, half
        # the memory of float16), then halved; the relative change is the same either way. Decoded a chunk at a
        # time: the whole tensor's codes as int64 table indices were 16 bytes a byte of it.
        def decoded() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for codes_a, codes_b in _pieces(a.view(torch.uint8), b.view(torch.uint8), max(1, chunk // 2)):
                yield _float4_doubled(codes_a), _float4_doubled(codes_b)

        identical, max_abs, diff_sq, ref_sq, rel = _compare_pieces(decoded, exact=False)
        return (ValueDiff(name, identical, max_abs / 2, rel, dtype_a, dtype_b), diff_sq / 4, ref_sq / 4)
    if not (_computable(a) and _computable(b)):
        # Packed formats torch has no arithmetic for (bits8, uint1..uint7): equal bytes, or an unknown change.
        same = a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bytes_of(a), _bytes_of(b))
        unknown = 0.0 if same else math.nan
        return ValueDiff(name, same, unknown, unknown, dtype_a, dtype_b), 0.0, 0.0
    # 64-bit integers past 2**53 are not all float64 values (2**53 + 1 becomes 2**53): those are compared as
    # they are stored, and a difference float64 would round away is taken from the integers themselves.
    exact = a.dtype == b.dtype and a.dtype in (torch.int64, torch.uint64)
    identical, max_abs, diff_sq, ref_sq, rel = _compare_pieces(lambda: _pieces(a, b, chunk), exact)
    rounded = None if identical or not {dtype_a, dtype_b} <= _PLAIN_FLOATS else _cast_rounding()(a, b, chunk)
    return ValueDiff(name, identical, max_abs, rel, dtype_a, dtype_b, rounded), diff_sq, ref_sq



# A reading only diff-keys makes (inspect imports this module, and the memory guard's margin in its tests is
# this module's size): imported when first needed.
_PLAIN_FLOATS = frozenset({"float64", "float32", "float16", "bfloat16"})


def _cast_rounding() -> Callable[..., str | None]:
    from weightdoctor.cast_rounding import cast_rounding

    return cast_rounding


def _any_tied(names: Mapping[str, object], *groups: Sequence[Sequence[str]]) -> bool:
    """Whether any of `names` is one tensor with another name (a tied group of either side): extra "layers" that
    share storage with layer 0 are tied names, not a deeper model (red team 4's 40,000 tied names of one storage)."""
    return any(len(group) > 1 and any(name in names for name in group) for side in groups for group in side)


def _layer_count_whys() -> Callable[..., tuple[dict[str, tuple[str, str, str]], str]]:
    from weightdoctor.layer_depth import layer_count_whys

    return layer_count_whys


def _pieces(a: torch.Tensor, b: torch.Tensor, chunk: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Matching 1-D pieces of two tensors of as many values, in row-major order, each of at most `chunk` values:
    views where the tensors are contiguous (or 1-D), else copies of that piece alone (`reshape(-1)` of a strided
    tensor, a transpose saved as such, copied all of it)."""
    if a.numel() == 0:
        return
    if a.shape != b.shape or a.dim() <= 1 or (a.is_contiguous() and b.is_contiguous()):
        flat_a, flat_b = a.reshape(-1), b.reshape(-1)
        for start in range(0, flat_a.numel(), chunk):
            yield flat_a[start:start + chunk], flat_b[start:start + chunk]
        return
    row = math.prod(a.shape[1:])
    if row > chunk:
        for index in range(a.shape[0]):
            yield from _pieces(a[index], b[index], chunk)
        return
    step = chunk // row
    for start in range(0, a.shape[0], step):
        yield a[start:start + step].reshape(-1), b[start:start + step].reshape(-1)


def _compare_pieces(pieces: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
                    exact: bool) -> tuple[bool, float, float, float, float]:
    """`compare_pair`'s figures over matching pieces of A and B (`pieces()` gives them; called again where the
    sums of squares overflow): identical, max |A−B|, Σ(A−B)², ΣB², ‖A−B‖/‖B‖. `exact`: 64-bit integers."""
    import torch

    max_abs = 0.0
    diff_sqs: list[float] = []
    ref_sqs: list[float] = []
    identical = True
    for stored_a, stored_b in pieces():
        part_a = stored_a.to(torch.float64)
        part_b = stored_b.to(torch.float64)
        delta = part_a - part_b
        if exact:
            # Wrapping int64 subtraction (uint64 read as int64) is the exact difference whenever it is below
            # 2**63; float64 rounds by at most 2**11 here, so any float64 difference under 2**62 is one of those.
            wrapped = stored_a.view(torch.int64) - stored_b.view(torch.int64)
            delta = torch.where(delta.abs() < 2.0 ** 62, wrapped.to(torch.float64), delta)
            same = stored_a == stored_b
        else:
            # Equal values differ by 0, infinities included (inf − inf is NaN), and so do NaNs on both sides.
            same = (part_a == part_b) | (torch.isnan(part_a) & torch.isnan(part_b))
        delta = torch.where(same, torch.zeros_like(delta), delta)
        if identical and not bool(torch.all(same)):
            identical = False
        if delta.numel():
            largest = float(delta.abs().max())
            # A NaN on one side only is a difference of unknown size: keep it NaN rather than let max() drop it.
            max_abs = math.nan if math.isnan(largest) or math.isnan(max_abs) else max(max_abs, largest)
        diff_sqs.append(float((delta * delta).sum()))
        ref_sqs.append(_reference_sq(part_b, same))
        del part_a, part_b, delta, same  # the next chunk's temporaries take their place, not join them
    diff_sq, ref_sq = _total(diff_sqs), _total(ref_sqs)
    return identical, max_abs, diff_sq, ref_sq, _rel_change(identical, diff_sq, ref_sq, pieces)


def _real_pairs(tensor: torch.Tensor) -> torch.Tensor:
    """A complex tensor as (real, imaginary) pairs of its float type, without a copy where torch can view it so."""
    import torch

    try:
        return torch.view_as_real(tensor)
    except RuntimeError:  # a complex dtype torch has no real view of: the whole cast, as before
        return torch.view_as_real(tensor.to(torch.complex128))


def _total(sums: list[float]) -> float:
    """The exactly rounded total of chunk sums (`math.fsum`), inf or NaN as a plain sum would give them."""
    try:
        return math.fsum(sums)
    except (OverflowError, ValueError):  # fsum raises where a sum of finite values overflows, or inf meets -inf
        return sum(sums)


def _reference_sq(part_b: torch.Tensor, same: torch.Tensor) -> float:
    """‖B‖² over one chunk, leaving out the NaNs and infinities A holds at the same place: they did not change
    and have no size, so ‖A−B‖/‖B‖ is over the values that do (a matching NaN made it NaN, a matching inf 0)."""
    import torch

    kept = torch.where(same & ~torch.isfinite(part_b), torch.zeros_like(part_b), part_b)
    return float((kept * kept).sum())


def _rel_change(identical: bool, diff_sq: float, ref_sq: float,
                pieces: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]) -> float:
    """‖A−B‖/‖B‖ from the two sums of squares: 0 when identical, inf when B is all zeros."""
    if identical:
        return 0.0
    if ref_sq == 0.0:
        return math.inf
    if math.isinf(diff_sq) or math.isinf(ref_sq):
        # Squares of float64 values beyond ~1e154 overflow (inf / inf is NaN): the ratio again, from values
        # scaled by a power of two (exact). An inf among the values still gives inf or NaN, as it should.
        return _scaled_rel_change(pieces)
    return math.sqrt(diff_sq) / math.sqrt(ref_sq)


# Pairs of float tensors up to this many values are compared together (`compare_pairs_batch`): for 100,000 tiny
# tensors the ~25 torch calls per pair, not the values, were the time.
BATCH_PAIR_ELEMENTS = 1 << 14
# Values of a batch: ~10 float64 temporaries of all of them are alive together (the two casts, the difference, its
# size, squares, masks). At 1M values that was ~80 MiB over the pairs (diff-keys --values of 2,000 pairs of 1,024
# float32 values raised its peak resident set by 93 MiB, the pairs themselves 16 MiB); at 32K values it is ~3 MiB
# (measured: 6 MiB rise). 32K values is also torch's grain size: each call runs on one thread, with no wait on its
# thread pool (in-process, those 2,000 pairs: 0.97-1.17 s at 1M values, 0.79-0.88 s at 32K on two busy cores).
BATCH_ELEMENTS = 1 << 15
_BATCH_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _batchable(a: torch.Tensor, b: torch.Tensor) -> bool:
    """A pair `compare_pairs_batch` compares as `compare_pair` would: plain floats, non-empty, within one chunk."""
    return (0 < a.numel() == b.numel() <= BATCH_PAIR_ELEMENTS
            and str(a.dtype).removeprefix("torch.") in _BATCH_DTYPES
            and str(b.dtype).removeprefix("torch.") in _BATCH_DTYPES)


def compare_pairs_batch(pairs: list[tuple[str, torch.Tensor, torch.Tensor]]) -> list[tuple[ValueDiff, float, float]]:
    """`compare_pair` of each of `pairs` (each `_batchable`), computed on all their values at once.

    The same numbers: the element-wise steps are the same, `identical` and the NaN test are counts per pair
    (prefix sums of int64), the largest difference is a maximum per pair, and each pair's sums of squares are
    torch's own sums over that pair's slice, as `compare_pair` sums a pair that fits in one chunk.
    """
    import torch

    lengths = [a.numel() for _, a, _ in pairs]
    # torch.cat promotes float16 / bfloat16 / float32 to a float type that holds each exactly, so the float64
    # values are the ones each tensor's own cast gives.
    all_a = torch.cat([a.reshape(-1) for _, a, _ in pairs]).to(torch.float64)
    all_b = torch.cat([b.reshape(-1) for _, _, b in pairs]).to(torch.float64)
    bounds = [0]
    for length in lengths:
        bounds.append(bounds[-1] + length)
    ends, starts = torch.tensor(bounds[1:]), torch.tensor(bounds[:-1])
    segment = torch.repeat_interleave(torch.arange(len(pairs)), torch.tensor(lengths))

    def per_pair(mask: torch.Tensor) -> list[int]:
        prefix = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(mask, 0, dtype=torch.int64)])
        return (prefix[ends] - prefix[starts]).tolist()

    same = (all_a == all_b) | (torch.isnan(all_a) & torch.isnan(all_b))
    delta = torch.where(same, torch.zeros_like(all_a), all_a - all_b)
    differing = per_pair(~same)
    size = delta.abs()
    unknown = torch.isnan(size)
    nan_count = per_pair(unknown)
    # compare_pair's max() keeps a NaN; here the NaNs are counted apart and the maximum taken over the rest.
    largest = torch.zeros(len(pairs), dtype=torch.float64).scatter_reduce_(
        0, segment, torch.where(unknown, torch.zeros_like(size), size), "amax", include_self=True).tolist()
    diff_sq = torch.stack([piece.sum() for piece in torch.split(delta * delta, lengths)]).tolist()
    kept_b = torch.where(same & ~torch.isfinite(all_b), torch.zeros_like(all_b), all_b)  # as `_reference_sq`
    ref_sq = torch.stack([piece.sum() for piece in torch.split(kept_b * kept_b, lengths)]).tolist()
    results = []
    for i, (name, a, b) in enumerate(pairs):
        identical = differing[i] == 0
        max_abs = math.nan if nan_count[i] else largest[i]
        rel = _rel_change(identical, diff_sq[i], ref_sq[i], functools.partial(_pieces, a, b, VALUE_CHUNK))
        results.append((ValueDiff(name, identical, max_abs, rel, str(a.dtype).removeprefix("torch."),
                                  str(b.dtype).removeprefix("torch."), None if identical else _cast_rounding()(a, b)),
                        diff_sq[i], ref_sq[i]))
    return results


def _scaled_rel_change(pieces: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]) -> float:
    """‖A−B‖/‖B‖ over matching pieces of A and B, their values scaled so that the largest finite one is below 1."""
    import torch

    peak = 0.0
    for pair in pieces():
        for part in pair:
            wide = part.to(torch.float64).abs()
            wide = wide[torch.isfinite(wide)]
            if wide.numel():
                peak = max(peak, float(wide.max()))
    scale = math.ldexp(1.0, -math.frexp(peak)[1]) if peak > 0 else 1.0
    diff_sqs: list[float] = []
    ref_sqs: list[float] = []
    for stored_a, stored_b in pieces():
        part_a = stored_a.to(torch.float64) * scale
        part_b = stored_b.to(torch.float64) * scale
        same = (part_a == part_b) | (torch.isnan(part_a) & torch.isnan(part_b))
        delta = torch.where(same, torch.zeros_like(part_a), part_a - part_b)
        diff_sqs.append(float((delta * delta).sum()))
        ref_sqs.append(_reference_sq(part_b, same))
    diff_sq, ref_sq = _total(diff_sqs), _total(ref_sqs)
    return math.sqrt(diff_sq) / math.sqrt(ref_sq) if ref_sq else math.inf


def compare_values(
    pairs: Iterable[tuple[str, torch.Tensor, torch.Tensor]], top: int = 10
) -> tuple[list[ValueDiff], list[LayerChange]]:
    """Compare tensor pairs as they stream in (hold one pair at a time); rank layers by relative change.

    Pairs of at most `BATCH_PAIR_ELEMENTS` float values are the exception: up to `BATCH_ELEMENTS` values of them
    (under 1 MB) are held and compared together, with the same results.

    Args:
        pairs: `(name, tensor_from_A, tensor_from_B)`, same shapes; produced lazily by the caller.
        top: how many layers to return, most changed first.
    """
    results: list[ValueDiff] = []
    layers: dict[str, list[float]] = {}

    def record(row: ValueDiff, diff_sq: float, ref_sq: float) -> None:
        results.append(row)
        total = layers.setdefault(layer_of(row.name), [0.0, 0.0, 0.0, 1.0, 0.0])
        total[0] += diff_sq
        total[1] += ref_sq
        total[2] += 1
        total[3] = total[3] if row.identical else 0.0
        # NaN (bit types: "changed, size not comparable") stays NaN, where max() would keep or drop it by position.
        total[4] = math.nan if math.isnan(row.max_abs_diff) or math.isnan(total[4]) else max(total[4],
                                                                                              row.max_abs_diff)

    # Small float pairs wait here (a few MB at most) and are compared together, then recorded in their order:
    # the batch is flushed before any other pair is recorded.
    pending: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    pending_elements = 0

    def flush() -> None:
        nonlocal pending_elements
        if pending:
            for outcome in compare_pairs_batch(pending):
                record(*outcome)
            pending.clear()
            pending_elements = 0

    for name, a, b in pairs:
        if _batchable(a, b):
            if pending_elements + a.numel() > BATCH_ELEMENTS:
                flush()
            # Copies, not views: a view keeps its file's memory map (and descriptor) open until the flush.
            pending.append((name, a.clone(), b.clone()))
            pending_elements += a.numel()
            del a, b
            continue
        flush()
        record(*compare_pair(name, a, b))
        del a, b
    flush()
    ranked = []
    for layer, (diff_sq, ref_sq, count, same, max_abs) in layers.items():
        rel = 0.0 if same else (math.inf if ref_sq == 0 else math.sqrt(diff_sq) / math.sqrt(ref_sq))
        ranked.append(LayerChange(layer, rel, int(count), bool(same), max_abs))
    ranked.sort(key=lambda r: (*change_rank(r.rel_change, r.max_abs_diff), r.layer))
    return results, ranked[:top]


def value_pairs(
    a: Checkpoint, b: Checkpoint, report: DiffReport, renames: Sequence[Rename] = (),
    advance: Callable[[int], None] | None = None, dequantized_names: set[str] | None = None,
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """Lazily load each common, same-shaped tensor pair (A under its renamed name), one pair at a time.
    `dequantized_names`, where given, gets B's names of the pairs read dequantized from a GGUF block type on one
    side and stored otherwise on the other (their difference holds the quantization's error)."""
    new_to_old = {}
    if renames:
        new_to_old = {new: old for old, new in apply_renames((t.name for t in a.tensors), list(renames)).items()}
    mismatched = {m.name for m in report.mismatched}
    names_a = {t.name for t in a.tensors}
    from weightdoctor.checkpoint.gguf_format import (
        READ_TYPES_WORDS,
        UNREAD_TYPES_WORDS,
        is_dequantized_dtype,
        is_unread_dtype,
    )

    quantized: list[str] = []  # a GGUF's Q8_1, ... on either side: blocks of scales and codes, not values read
    dequantized: list[str] = []  # a GGUF's Q4_K, ...: compared as the float32 values ggml decodes
    placeholders: list[str] = []  # fairseq's `_float_tensor`: uninitialized memory, different in every save
    six_same: list[str] = []  # six-bit MX floats (no torch dtype holds them): compared by their bytes alone
    six_changed: list[str] = []
    for info in b.tensors:
        name = info.name
        old = new_to_old.get(name, name if not renames else None)
        if old is None or old not in names_a or name in mismatched:
            continue
        if is_dtype_placeholder(name, info.num_params):
            placeholders.append(name)
            if advance is not None:
                advance(1)
            continue
        if SIX_BIT.intersection((info.dtype, a.tensor_info(old).dtype)):
            (six_same if _same_bytes(a, a.tensor_info(old), b, info) else six_changed).append(name)
            if advance is not None:
                advance(1)
            continue
        if is_unread_dtype(info.dtype) or is_unread_dtype(a.tensor_info(old).dtype):
            quantized.append(name)
            if advance is not None:
                advance(1)
            continue
        if is_dequantized_dtype(info.dtype) or is_dequantized_dtype(a.tensor_info(old).dtype):
            dequantized.append(name)
            if dequantized_names is not None and info.dtype != a.tensor_info(old).dtype:
                dequantized_names.add(name)
        yield name, a.load_tensor(old), b.load_tensor(name)
        if advance is not None:
            advance(1)
    if placeholders:
        # Two saves of one fairseq model differ there (checkpoint_best.pt against checkpoint_last.pt): shown as the
        # layer changed most, by 1e48, it hid the comparison of the weights.
        report.notes.append(
            f"{counted(len(placeholders), 'tensor')} not compared ({placeholders[0]}"
            f"{', ...' if len(placeholders) > 1 else ''}): fairseq's dtype placeholder `_float_tensor`, one value "
            "of uninitialized memory that differs from save to save and that the model never reads")
    if six_same or six_changed:
        first = (six_changed or six_same)[0]
        said = (f"{counted(len(six_same) + len(six_changed), 'tensor')} of six-bit float dtypes (F6_E2M3, F6_E3M2: "
                f"no torch dtype holds them, and weightdoctor does not decode them) compared by their bytes, not in "
                f"`values`: {len(six_same)} identical, {len(six_changed)} changed ({first}"
                f"{', ...' if len(six_same) + len(six_changed) > 1 else ''})")
        (report.warnings if six_changed else report.notes).append(said)
    if dequantized:
        # Information: the comparison is of what the quantized file holds, its rounding included.
        report.notes.append(
            f"{counted(len(dequantized), 'tensor')} of quantized GGUF (ggml) types compared dequantized to float32, "
            f"as ggml decodes them ({dequantized[0]}{', ...' if len(dequantized) > 1 else ''}): against an "
            "unquantized copy their quantization error counts as a change")
    if quantized:
        report.warnings.append(
            f"{counted(len(quantized), 'tensor')} of quantized GGUF (ggml) types not compared ({quantized[0]}"
            f"{', ...' if len(quantized) > 1 else ''}): weightdoctor reads the values of GGUF's {READ_TYPES_WORDS}; "
            + UNREAD_TYPES_WORDS)


def _same_bytes(a: Checkpoint, info_a: TensorInfo, b: Checkpoint, info_b: TensorInfo) -> bool:
    """Whether two tensors hold the same dtype, shape and bytes: for dtypes no torch dtype holds (six-bit floats,
    which only safetensors files name), read as the bytes they are."""
    if info_a.dtype != info_b.dtype or info_a.shape != info_b.shape:
        return False
    return a.raw_tensor_bytes(info_a.name) == b.raw_tensor_bytes(info_b.name)


# What the adapter note says of PaCA's indices from headers alone; `check_paca_indices` replaces it under --values.
PACA_INDICES_BY_COUNT = (" (PaCA's paca_indices, the input columns it trains, are compared by count, not value: a "
                         "header holds no values, and an index at or above a layer's in_features, which "
                         "PeftModel.from_pretrained loads, makes its forward and merge_and_unload raise)")


# A PaCA adapter's saved choice of input columns (peft 0.22: `<module>.paca_indices`, r integers): paca_delta's
# column k updates input column paca_indices[k].
_PACA_INDICES = re.compile(r"(^|\.)paca_indices$")
_PACA_INDICES_READ = 65_536
_INTEGER = ("int", "uint")


def paca_indices_note(a: Checkpoint, b: Checkpoint, rows: Sequence[ValueDiff],
                      renames: Sequence[Rename] = ()) -> str | None:
    """The note `diff-keys --values` adds where two PaCA adapters' paca_indices differ, or None: each paca_delta
    column updates the input column its index names, so adapters that picked other columns do not mean the same
    thing, and their paca_delta (and the indices' own ‖A−B‖, a difference of column numbers) compare nothing alike.

    Example:
        >>> paca_indices_note(a, b, compare_values(value_pairs(a, b, report))[0])          # doctest: +SKIP
        "PaCA's paca_indices differ in 1 module (q_proj: A trains input columns 1, 5, 10, 26; B 1, 8, 13, 20) ..."

    Args:
        a, b: the two checkpoints, opened with their values.
        rows: `compare_values`'s rows (B's names).
        renames: the renames A's names were compared under, as `value_pairs` was given them.
    """
    # r indices a module (a header claiming millions is no PaCA choice of columns: not read a second time).
    changed = [row.name for row in rows if not row.identical and _PACA_INDICES.search(row.name)
               and b.tensor_info(row.name).num_params <= _PACA_INDICES_READ
               and row.dtype_a.startswith(_INTEGER) and row.dtype_b.startswith(_INTEGER)]
    if not changed:
        return None
    new_to_old = {new: old for old, new in apply_renames((t.name for t in a.tensors), list(renames)).items()} \
        if renames else {}

    def columns(values: list[int]) -> str:
        return ", ".join(map(str, values[:8])) + (f" … ({len(values):,} in all)" if len(values) > 8 else "")

    shown = []
    for name in changed[:3]:
        indices_a = [int(v) for v in a.load_tensor(new_to_old.get(name, name)).reshape(-1).tolist()]
        indices_b = [int(v) for v in b.load_tensor(name).reshape(-1).tolist()]
        shared = len(set(indices_a) & set(indices_b))
        module = _PACA_INDICES.sub("", name)
        shown.append(f"{module}: A trains input columns {columns(indices_a)}; B {columns(indices_b)}; "
                     f"{shared} of {len(indices_b):,} the same")
    more = f"; and {len(changed) - 3:,} more" if len(changed) > 3 else ""
    return (f"PaCA's paca_indices differ in {counted(len(changed), 'module')} ({'; '.join(shown)}{more}): each "
            "paca_delta column updates the input column its index names, so the two adapters change different "
            "inputs there and do not mean the same thing; their paca_delta values are compared column by column "
            "over different inputs, and the indices' own difference is one of column numbers")


def check_paca_indices(report: DiffReport, a: Checkpoint, b: Checkpoint) -> None:
    """`diff-keys --values` of a PaCA adapter A against its base B: read the saved paca_indices of each module that
    fits B and make an `error` of each that names an input column at or above its layer's in_features, or below 0
    (PeftModel.from_pretrained loads it; the forward and merge_and_unload raise, index out of bounds). The adapter
    note's "compared by count, not value" then says what the values showed. Changes `report` in place.

    Example:
        >>> check_paca_indices(report, adapter, base)                                          # doctest: +SKIP
        >>> [i.detail for i in report.unexpected if i.severity == "error"]                     # doctest: +SKIP
        ['PaCA on mlp.down_proj: paca_indices names input column 47, past the 32 of mlp.down_proj.weight ...']
    """
    checked = [(index, issue) for index, issue in enumerate(report.unexpected)
               if issue.reason == "adapter" and issue.severity == "info" and _PACA_INDICES.search(issue.name)
               and issue.detail.startswith("PaCA on ")]
    read = bad = 0
    for index, issue in checked:
        weight = issue.detail.removeprefix("PaCA on ")
        try:
            shape, held = b.tensor_info(weight).shape, a.tensor_info(issue.name)
        except KeyError:
            continue
        if len(shape) != 2 or held.num_params > _PACA_INDICES_READ or not held.dtype.startswith(_INTEGER):
            continue  # peft saves int64 indices: floats (NaN) are no column numbers
        columns = [int(v) for v in a.load_tensor(issue.name).reshape(-1).tolist()]
        read += 1
        outside = [v for v in columns if not 0 <= v < shape[1]]
        if outside:
            bad += 1
            module = weight.removesuffix(".weight")
            shown = ", ".join(map(str, outside[:4])) + (" …" if len(outside) > 4 else "")
            report.unexpected[index] = KeyIssue(issue.name, "adapter", "error", (
                f"PaCA on {module}: paca_indices names input {plural(len(outside), 'column')} {shown}, outside the "
                f"{shape[1]:,} of {weight} ({shape[0]}×{shape[1]} in B): PeftModel.from_pretrained loads it, and "
                "its forward and merge_and_unload raise (index out of bounds)"))
    if not read:
        return
    said = (f" (PaCA's paca_indices, the input columns it trains, were read: {bad} of {counted(read, 'module')} "
            "name a column outside their layer's in_features, which PeftModel.from_pretrained loads and the forward "
            "and merge_and_unload then raise on)" if bad else
            f" (PaCA's paca_indices, the input columns it trains, were read: each of {counted(read, 'module')} "
            "names columns within its layer's in_features)")
    report.notes = [note.replace(PACA_INDICES_BY_COUNT, said) for note in report.notes]
    report.groups = group_issues(report)
    found = set(report.severities())
    report.worst_severity = max(found, key=severity_rank) if found else None
