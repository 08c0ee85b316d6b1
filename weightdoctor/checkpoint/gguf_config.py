"""The transformers config a GGUF file's metadata gives, as `AutoConfig.from_pretrained(folder, gguf_file=...)` builds
it, without the `gguf` package (which transformers' `load_gguf_checkpoint` imports for it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from weightdoctor.checkpoint.gguf_format import ArraySummary, GgufHeader


@dataclass(frozen=True)
class GgufConfig:
    """A config built from a GGUF's metadata, or why none is (`config` None, `reason` saying why)."""

    config: dict[str, Any] | None
    reason: str | None = None


def transformers_config(header: GgufHeader) -> GgufConfig:
    """The config dict transformers builds from a GGUF file's metadata (its `load_gguf_checkpoint`'s config part,
    reproduced over transformers' own tables: `GGUF_CONFIG_MAPPING`, `GGUF_CONFIG_DEFAULTS_MAPPING`).

    Example:
        A llama GGUF's `llama.embedding_length = 4096` is `hidden_size: 4096`, `llama.block_count = 32`
        `num_hidden_layers: 32`; no `output.weight` tensor is `tie_word_embeddings: True`.

    Returns:
        The config, or None with the reason: an architecture transformers' GGUF loading does not take, one its
        newer loader builds (qwen35, qwen35moe, lfm2: it may keep their blocks packed, so a dequantized plan would
        be wrong), or a metadata array the config needs whole (weightdoctor keeps an array's first elements only).
    """
    from transformers.modeling_gguf_pytorch_utils import (
        GGUF_CONFIG_DEFAULTS_MAPPING,
        GGUF_SUPPORTED_ARCHITECTURES,
        GGUF_TO_TRANSFORMERS_MAPPING,
    )

    metadata = header.metadata
    architecture = metadata.get("general.architecture")
    if not isinstance(architecture, str):
        return GgufConfig(None, "its metadata names no general.architecture")
    try:
        from transformers.integrations.gguf import GGUF_CONFIG_ARCHS
    except ImportError:  # a transformers before its packed GGUF loader: every architecture is dequantized
        GGUF_CONFIG_ARCHS = {}  # noqa: N806
    if architecture in GGUF_CONFIG_ARCHS:
        return GgufConfig(None, f"transformers loads a {architecture!r} GGUF with its own loader, which keeps the "
                                "quantized blocks packed where the kernels package has a kernel for the GPU: no "
                                "dequantized plan of it is exact")
    name = metadata.get("general.name")
    # transformers reads general.name as a list of one value and tests `"mistral" in` that list: a name equal to
    # "mistral", not one containing it.
    model_name = [name] if isinstance(name, str) else []
    config: dict[str, Any] = {}
    updated = architecture
    if "llama" in architecture and "mistral" in model_name:
        updated = "mistral"
    elif "t5" in architecture or "t5encoder" in architecture:
        config["is_gated_act"] = True
        if model_name and "umt5" in model_name[0].lower():
            updated = "umt5"
            if "t5encoder" in architecture:
                config["architectures"] = ["UMT5EncoderModel"]
        else:
            if "t5encoder" in architecture:
                config["architectures"] = ["T5EncoderModel"]
            updated = "t5"
    if "qwen2moe" in architecture:
        updated = "qwen2_moe"
    elif "gpt_oss" in architecture or "gpt-oss" in architecture:
        return GgufConfig(None, "transformers rebuilds a gpt-oss GGUF's rope scaling from keys weightdoctor does "
                                "not reproduce")
    elif "qwen3moe" in architecture:
        updated = "qwen3_moe"
    elif "minimax-m2" in architecture:
        updated = "minimax_m2"
    names = [info.name for info in header.tensors]
    if "stablelm" in architecture:
        config["use_qkv_bias"] = any(bias in name for name in names
                                     for bias in ("attn_q.bias", "attn_k.bias", "attn_v.bias"))
        config["use_parallel_residual"] = not any("ffn_norm" in name for name in names)
    if architecture not in GGUF_SUPPORTED_ARCHITECTURES and updated not in GGUF_SUPPORTED_ARCHITECTURES:
        return GgufConfig(None, f"transformers' GGUF loading does not take architecture {architecture!r} (it takes "
                                f"{', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))})")
    config["tie_word_embeddings"] = all(name != "output.weight" for name in names) or architecture in (
        "falcon", "bloom")
    for key, value in (GGUF_CONFIG_DEFAULTS_MAPPING.get(updated, GGUF_CONFIG_DEFAULTS_MAPPING.get(architecture)
                                                        or {})).items():
        config.setdefault(key, value)
    renames = GGUF_TO_TRANSFORMERS_MAPPING["config"]
    for gguf_key, value in metadata.items():
        prefix, _, config_key = gguf_key.replace(architecture, updated).partition(".")
        if prefix not in renames or config_key not in renames[prefix]:
            continue
        renamed = renames[prefix][config_key]
        if renamed == -1 or renamed is None:
            continue
        if isinstance(value, ArraySummary):
            if value.count > len(value.first):
                return GgufConfig(None, f"its config field {renamed} comes from the metadata array {gguf_key!r} "
                                        f"({value.count:,} elements), which weightdoctor does not keep whole")
            value = value.first[0] if value.count == 1 else list(value.first)
        if isinstance(value, str) and architecture in value:
            value = value.replace(architecture, updated)
        config[renamed] = value
    if config.get("model_type") == "gemma3":
        config["model_type"] = "gemma3_text"
    if config.get("model_type") == "gemma4":
        config["model_type"] = "gemma4_text"
        config["eos_token_id"] = [1, 106, 50]
    if config.get("model_type") == "minimax_m2" and isinstance(config.get("scoring_func"), int):
        config["scoring_func"] = {0: "none", 1: "softmax", 2: "sigmoid"}.get(config["scoring_func"], "softmax")
    if "vocab_size" not in config:
        tokens = metadata.get("tokenizer.ggml.tokens")
        if isinstance(tokens, ArraySummary):
            config["vocab_size"] = tokens.count
    if config.get("model_type") == "lfm2":
        return GgufConfig(None, "transformers maps an lfm2 GGUF's per-layer key-value heads to its layer types, "
                                "which weightdoctor does not reproduce")
    return GgufConfig(config)
