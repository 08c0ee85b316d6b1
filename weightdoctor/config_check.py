"""inspect's cheap checks of config.json against the tensors beside it: the architecture's names, the embedding's
shape, the dtype. Header and config only: no model is built and neither torch nor transformers is imported."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from weightdoctor.checkpoint import Checkpoint, TensorInfo
from weightdoctor.checkpoint.model import unique_tensors
from weightdoctor.wording import counted

# The input embedding of a transformers text model, as its classes name it (Llama's embed_tokens, BERT's
# word_embeddings, GPT-2's wte, T5's shared, GPT-NeoX's embed_in).
_EMBEDDING = re.compile(r"(?:^|\.)(?:embed_tokens|word_embeddings|wte|shared|embed_in)\.weight$")
_EMBEDDING_ENDS = ("embed_tokens.weight", "word_embeddings.weight", "wte.weight", "shared.weight", "embed_in.weight")
_HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model")
# Configs whose embedding is narrower than the model (ALBERT, ELECTRA, DeBERTa's embedding_size; OPT's
# word_embed_proj_dim; Transformer-XL's d_embed): the embedding's width is not hidden_size there.
_OTHER_WIDTH_KEYS = ("embedding_size", "word_embed_proj_dim", "d_embed", "emb_dim", "embedding_dim",
                     "input_embedding_size")
# Segments of a tensor name that are no module of the model class (a wrapper's, a parameter's own parts).
_NOT_MODULES = frozenset({"module", "_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module",
                          "parametrizations", "original0", "original1", "weight", "bias"})
# Fewer of the tensors than this share fit the architecture's module names: "almost none", another architecture's
# weights. A checkpoint in an older layout transformers renames at load (Mixtral's block_sparse_moe) still fits in
# its attention, norms and embeddings, far above it.
_FIT_SHARE = 0.1
_MIN_TENSORS = 4
_MOST_CHECKED = 5000


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _one_value(config: Mapping[str, Any], keys: Sequence[str]) -> tuple[Mapping[str, Any], str, int] | None:
    """The (config, key, value) of the first of `keys` set in the config or its sub-configs, where every (sub)config
    that sets one agrees; None where none does or two differ (CSM's depth decoder has a vocabulary of its own,
    LLaVA's vision tower another width: which one an embedding belongs to is not known from its name)."""
    found: list[tuple[Mapping[str, Any], str, int]] = []

    def walk(node: Mapping[str, Any], depth: int) -> None:
        key = next((k for k in keys if _count(node.get(k)) is not None), None)
        if key is not None:
            found.append((node, key, node[key]))
        if depth < 2:
            for value in node.values():
                if isinstance(value, Mapping):
                    walk(value, depth + 1)

    walk(config, 0)
    # The text model's own config: the top level or its text_config (Kosmos-2's text width is its `embed_dim`, and
    # the only hidden_size its vision config's).
    text = [config, config.get("text_config"), config.get("llm_config")]
    if not found or len({value for _, _, value in found}) != 1 or not any(node is t for node, _, _ in found
                                                                           for t in text):
        return None
    return found[0]


def embedding_shape_warnings(tensors: list[TensorInfo], config: Mapping[str, Any]) -> list[str]:
    """Where config.json's vocab_size or hidden_size disagrees with the input embedding's shape: from_pretrained
    builds the embedding the config says, and this weight does not fit it.

    Example:
        >>> embedding = TensorInfo("model.embed_tokens.weight", (256, 32), "float32", "model.safetensors")
        >>> embedding_shape_warnings([embedding], {"vocab_size": 512, "hidden_size": 32})  # doctest: +ELLIPSIS
        ['config.json says vocab_size=512, model.embed_tokens.weight has 256 rows: ...']
    """
    # endswith first: a regex per name was 0.8 s of a million-tensor inspect.
    embeddings = [t for t in tensors if t.name.endswith(_EMBEDDING_ENDS) and len(t.shape) == 2
                  and _EMBEDDING.search(t.name)]
    if not embeddings or len({tuple(t.shape) for t in embeddings}) != 1:
        return []  # several text models of other shapes (a vision-language pair): no one embedding to compare
    embedding = min(embeddings, key=lambda t: len(t.name))
    rows, width = embedding.shape
    warnings: list[str] = []
    vocab = _one_value(config, ("vocab_size",))
    # Fewer rows than the config's vocabulary only: Mllama, Moshi and Molmo2 build theirs some rows larger than
    # vocab_size by design (image or padding tokens), measured on the meta builds of 360 model types.
    if vocab is not None and vocab[2] > rows:
        warnings.append(f"config.json says vocab_size={vocab[2]}, {embedding.name} has "
                        f"{counted(rows, 'row', grouped=False)}: from_pretrained builds a {vocab[2]}-row embedding "
                        "and cannot load this weight into it (a size mismatch); the config belongs to another model "
                        "or was edited")
    hidden = _one_value(config, _HIDDEN_KEYS)
    if hidden is not None and hidden[2] != width and not any(k in hidden[0] for k in _OTHER_WIDTH_KEYS):
        warnings.append(f"config.json says {hidden[1]}={hidden[2]}, {embedding.name} is {width} wide: "
                        f"from_pretrained builds the model {hidden[2]} wide and cannot load these weights into it "
                        "(a size mismatch); the config belongs to another model or was edited")
    return warnings


def architecture_names_warning(tensors: list[TensorInfo], config: Mapping[str, Any]) -> str | None:
    """Where almost none of the tensor names fit the modules of the architecture config.json names (a Llama config
    beside BERT weights): from_pretrained would load none of them. Read from transformers' modeling code as text:
    every module a name passes through must be an attribute its classes assign."""
    from weightdoctor.modeling_source import attribute_names, modeling_source

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or config.get("auto_map") is not None or len(tensors) < _MIN_TENSORS:
        return None
    from weightdoctor.structure import is_composite_encoder_decoder

    if is_composite_encoder_decoder(config):
        return None  # its halves are other model types' classes, built from the sub-configs
    from weightdoctor.modeling_source import config_model_types

    sources = [modeling_source(t) for t in config_model_types(config)]
    if not sources or any(source is None for source in sources):
        return None
    known = attribute_names(s for s in sources if s is not None)
    fitting = 0
    first_misfit: str | None = None
    # Evenly spaced, at most _MOST_CHECKED names: "almost none fit" is a share, and a million names took 2 s.
    step = -(-len(tensors) // _MOST_CHECKED)
    checked = tensors[::step]
    for info in checked:
        modules = [part for part in info.name.split(".")[:-1] if not part.isdecimal() and part not in _NOT_MODULES]
        if not modules:
            modules = [info.name] if "." not in info.name else []
        if all(part in known for part in modules):
            fitting += 1
        elif first_misfit is None:
            first_misfit = info.name
    if fitting >= _FIT_SHARE * len(checked) or first_misfit is None:
        return None
    architecture = config.get("architectures")
    named = f" ({architecture[0]})" if isinstance(architecture, list) and architecture and isinstance(
        architecture[0], str) else ""
    of = (f"{counted(len(tensors), 'tensor')}" if step == 1 else
          f"{counted(len(checked), 'tensor')} checked (one in {step} of {len(tensors):,})")
    return (f"config.json says model_type {model_type!r}{named}, but {fitting} of the "
            f"{of} have names that fit the modules transformers' {model_type} code "
            f"defines ({first_misfit} does not): these "
            "look like another architecture's weights; from_pretrained would leave them unused (unexpected keys) and "
            "start the model at random")


def dtype_warning(tensors: list[TensorInfo], config: Mapping[str, Any]) -> str | None:
    """Where config.json's dtype differs from the stored floating dtype (fp16 weights, a float32 config: from_pretrained
    (dtype="auto") builds the model at float32, twice the memory), as check-dtype's agreement says it."""
    if not isinstance(config.get("model_type"), str):
        return None  # diffusers, timm, sentence-transformers modules: not from_pretrained's dtype="auto"
    from weightdoctor.dtypes import FLOATING

    declared = config.get("dtype") if config.get("dtype") is not None else config.get("torch_dtype")
    stored = {t.dtype for t in tensors if t.dtype in FLOATING}
    if declared is None or not stored or isinstance(declared, str) and stored == {declared.removeprefix("torch.")}:
        return None  # agrees, or nothing to compare: check_dtype's module (57 ms to import) is not needed
    from weightdoctor.check_dtype import config_agreement, config_dtype

    agreement = config_agreement(config_dtype(dict(config)), tensors, dict(config))
    if agreement.status != "differs":
        return None
    return f"config.json's dtype disagrees with the weights: {agreement.message}"


def config_disagreement_warnings(checkpoint: Checkpoint, quantized: bool, adapter: bool) -> list[str]:
    """Every cheap disagreement between config.json and the tensors beside it, for inspect's warnings; none for a
    quantized checkpoint (packed shapes, scales) or a PEFT adapter (its own names, the base model's config)."""
    config = checkpoint.config
    if not isinstance(config, Mapping) or quantized or adapter or not checkpoint.tensors:
        return []
    tensors = unique_tensors(checkpoint.tensors)
    found = [architecture_names_warning(tensors, config)]
    if found[0] is None:
        # Another architecture's weights differ in every shape: the names say it once.
        found += embedding_shape_warnings(tensors, config)
    found.append(dtype_warning(tensors, config))
    return [warning for warning in found if warning]
