"""`inspect` without values: what a checkpoint holds, summarised from the reader's `TensorInfo` list."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from weightdoctor.checkpoint import Checkpoint, TensorInfo
from weightdoctor.checkpoint.gguf_format import combined as combined_gguf
from weightdoctor.checkpoint.gguf_format import is_quantized_dtype, is_unread_dtype
from weightdoctor.checkpoint.gguf_format import metadata_disagreements as gguf_metadata_disagreements
from weightdoctor.checkpoint.gguf_format import summary as gguf_summary
from weightdoctor.checkpoint.hub import snapshot_commit
from weightdoctor.checkpoint.model import unique_tensors
from weightdoctor.dtypes import FLOATING
from weightdoctor.errors import clip_middle
from weightdoctor.gcpause import gc_paused
from weightdoctor.jsontext import MAX_DEPTH, clip_long_strings, parse_json
from weightdoctor.quantized import (
    QuantizedSummary,
    gguf_config_loads_dense,
    gpt_fast_int4_layers,
    inc_weight_config,
    quantized_summary,
)
from weightdoctor.reparametrized import reparametrized
from weightdoctor.wording import counted, plural

# Bytes per parameter when the floating weights are stored at each dtype.
MEMORY_DTYPES: dict[str, float] = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "int4": 0.5}
CONFIG_FIELDS: dict[str, tuple[str, ...]] = {
    "model_type": ("model_type",),
    "architectures": ("architectures", "architecture"),  # timm's config names its one architecture
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim"),
    # An encoder-decoder (BART, Marian, Whisper) writes encoder_layers / encoder_attention_heads only: transformers'
    # attribute_map reads them as num_hidden_layers / num_attention_heads, and so does the summary; a decoder alone
    # (TrOCR's, a VisionEncoderDecoderModel's `decoder`) decoder_layers / decoder_attention_heads, read so too.
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "encoder_layers", "decoder_layers"),
    "num_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads", "encoder_attention_heads",
                  "decoder_attention_heads"),
    "num_key_value_heads": ("num_key_value_heads",),
    "vocab_size": ("vocab_size",),
    "torch_dtype": ("torch_dtype", "dtype"),
    "initializer_range": ("initializer_range", "init_std"),
    "max_position_embeddings": ("max_position_embeddings", "n_positions"),
}
_DIGITS = re.compile(r"^\d+$")
# Levels of the module tree: a name nesting deeper keeps the rest of its path as one module name. Real names are
# under 20 deep; every walk of the tree recurses, and a 30,000-segment name was an unexpected RecursionError.
MAX_TREE_DEPTH = 64
# Other names of a tensor's storage listed in its row: every one for each name costs n² for n names of one storage
# (a 1.5 MB `.bin` of 50,000 names for two floats took 20 GB); `shared_tensors` lists each group whole.
MAX_SHARED_WITH = 16


@dataclass(frozen=True)
class TensorRow:
    """One row of the tensor table."""

    name: str
    shape: list[int]
    dtype: str
    num_params: int
    nbytes: int
    file: str
    shared_with: list[str] = field(default_factory=list)


@dataclass
class ModuleNode:
    """A node of the module tree. `repeat` > 1 stands for identical blocks collapsed into one.

    `tied_params`: parameters of tensors here that are another name of a tensor counted elsewhere (GPT-2's
    `lm_head.weight` is `transformer.wte.weight`): not in `num_params`, so that the children add up.
    """

    name: str
    num_params: int
    num_tensors: int
    repeat: int = 1
    children: list[ModuleNode] = field(default_factory=list)
    tied_params: int = 0


@dataclass(frozen=True)
class FileRow:
    path: str
    role: str
    format: str
    size_bytes: int


@dataclass
class InspectReport:
    """Everything `weightdoctor inspect` shows without reading tensor values."""

    source: str
    resolved_path: str
    format: str
    sharded: bool
    repo_id: str | None
    revision: str | None
    commit: str | None
    files: list[FileRow]
    num_tensors: int
    num_params: int
    total_bytes: int
    dtypes: dict[str, int]
    shared_tensors: list[list[str]]
    nested_key: str | None
    other_entries: list[str]
    skipped_entries: list[str]
    metadata: dict[str, str] | None
    config: dict[str, Any] | None
    config_summary: dict[str, Any] | None
    memory: dict[str, int]
    module_tree: list[ModuleNode]
    tensors: list[TensorRow]
    filter: str | None
    warnings: list[str]
    # The static pickle scan (weightdoctor.security.ScanReport): format, globals, verdict.
    security: Any = None
    # `inspect --verify`: the recomputed zip CRCs (weightdoctor.security.verify.VerifyReport).
    verify: Any = None
    # A quantized checkpoint: the parameters its packed tensors stand for (None when not quantized).
    quantized: QuantizedSummary | None = None
    # A PEFT adapter's `adapter_config.json`, the fields people ask about (None when there is none).
    adapter: dict[str, Any] | None = None
    # Meta's / Mistral's native `params.json` beside `consolidated.*` (no config.json): its fields (None otherwise).
    native_params: dict[str, Any] | None = None
    # A GGUF file (llama.cpp): its version, architecture and sizes, ggml types and metadata (`gguf_format.summary`).
    gguf: dict[str, Any] | None = None
    # How many entries `other_entries` and `skipped_entries` stand for: the lists keep the first
    # MAX_ENTRIES_LISTED, as a pickle of a million non-tensor entries made a 33 MB --json. The text report reads the
    # whole lists (`all_other_entries`, `all_skipped_entries`, not in --json), which it folds and counts itself.
    other_entries_count: int = field(init=False)
    skipped_entries_count: int = field(init=False)
    all_other_entries: list[str] = field(init=False, repr=False, metadata={"json": False})
    all_skipped_entries: list[str] = field(init=False, repr=False, metadata={"json": False})
    # The JSON paths (`config.model_type`, `config_summary.architectures[0]`) of the config strings --json cut in their
    # middle (`clip_long_strings`: past MAX_ECHOED_CHARS characters); the text report reads the whole summary
    # (`full_config_summary`, not in --json), which it cuts shorter itself.
    config_clipped: list[str] = field(init=False)
    full_config_summary: dict[str, Any] | None = field(init=False, repr=False, metadata={"json": False})

    def __post_init__(self) -> None:
        self.config_clipped = []
        self.full_config_summary = self.config_summary
        self.config = clip_long_strings(self.config, "config", self.config_clipped)
        self.config_summary = clip_long_strings(self.config_summary, "config_summary", self.config_clipped)
        self.all_other_entries, self.all_skipped_entries = self.other_entries, self.skipped_entries
        self.other_entries_count, self.skipped_entries_count = len(self.other_entries), len(self.skipped_entries)
        self.other_entries = self.other_entries[:MAX_ENTRIES_LISTED]
        self.skipped_entries = self.skipped_entries[:MAX_ENTRIES_LISTED]


# The most entries inspect's --json lists in `other_entries` and `skipped_entries` (each with its `_count`).
MAX_ENTRIES_LISTED = 1000


# transformers' composite encoder-decoders (EncoderDecoderModel: bert2bert; VisionEncoderDecoderModel: TrOCR, Donut,
# ViT-GPT2 captioning; SpeechEncoderDecoderModel): the config keeps each half whole under `encoder` and `decoder`.
COMPOSITE_ENCODER_DECODERS = frozenset({"encoder-decoder", "vision-encoder-decoder", "speech-encoder-decoder"})


def is_composite_encoder_decoder(config: Mapping[str, Any]) -> bool:
    """Whether a config.json is a composite encoder-decoder's (`COMPOSITE_ENCODER_DECODERS`); its model_type may be
    any JSON value (a list in a damaged or hostile file, which a set lookup raised TypeError on).

    Example:
        >>> is_composite_encoder_decoder({"model_type": "vision-encoder-decoder"}), is_composite_encoder_decoder(
        ...     {"model_type": ["bert"]})
        (True, False)
    """
    model_type = config.get("model_type")
    return isinstance(model_type, str) and model_type in COMPOSITE_ENCODER_DECODERS


def summarize_config(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """Pick the fields people ask about from a `config.json` (looking into `text_config` too, and into the
    `decoder` of a composite encoder-decoder: its text side, as LLaVA's `text_config` is)."""
    if config is None:
        return None
    nested = ["text_config", "llm_config"] + (["decoder"] if is_composite_encoder_decoder(config)
                                              else [])
    sources = [config] + [config[k] for k in nested if isinstance(config.get(k), dict)]
    decoder = config.get("decoder") if "decoder" in nested else None
    summary: dict[str, Any] = {}
    for field_name, keys in CONFIG_FIELDS.items():
        for source in sources:
            # A composite's decoder is built decoder-only (Donut's MBartForCausalLM, TrOCR's): it makes
            # decoder_layers layers, whatever encoder_layers (num_hidden_layers in its attribute_map) says.
            own = tuple(k for k in keys if k.startswith("decoder_")) if source is decoder else ()
            found = next((source[k] for k in (*own, *keys) if source.get(k) is not None), None)
            if found is not None:
                summary[field_name] = [found] if field_name == "architectures" and isinstance(found, str) else found
                break
        else:
            summary[field_name] = None
    if isinstance(config.get("architecture"), str) and config.get("num_classes") is not None:
        summary["num_classes"] = config["num_classes"]  # timm's classifier width
    return summary


NATIVE_PARAMS_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden_dim", "vocab_size",
                        "rope_theta", "norm_eps", "max_seq_len", "moe")
_LAYER_INDEX = re.compile(r"^layers\.(\d+)\.")


def native_params_summary(checkpoint: Checkpoint) -> tuple[dict[str, Any] | None, list[str]]:
    """The fields of Meta's or Mistral's native `params.json` (their own code's config, beside
    `consolidated.*`; transformers reads config.json instead), and warnings where the weights disagree with it
    (a layer count, the vocabulary rows of tok_embeddings). (None, []) where there is a config.json or no
    params.json.

    Example:
        >>> native_params_summary(open_checkpoint("Mistral-7B-v0.3"))[0]  # doctest: +SKIP
        {'dim': 4096, 'n_layers': 32, 'n_heads': 32, 'n_kv_heads': 8, 'head_dim': 128, ...}
    """
    if checkpoint.config is not None:
        return None, []
    folder = checkpoint.path if checkpoint.path.is_dir() else checkpoint.path.parent
    path = folder / "params.json"
    try:
        if not path.is_file() or path.stat().st_size > 1 << 20:
            return None, []
        data = parse_json(path.read_text(encoding="utf-8"), max_depth=MAX_DEPTH)
    except (OSError, UnicodeDecodeError, ValueError):
        return None, []
    if not isinstance(data, dict) or not any(k in data for k in ("dim", "n_layers", "n_heads")):
        return None, []  # another library's params.json
    summary = {k: data[k] for k in NATIVE_PARAMS_FIELDS if data.get(k) is not None}
    if isinstance(summary.get("moe"), dict):
        summary["moe"] = {k: v for k, v in summary["moe"].items() if k in ("num_experts", "num_experts_per_tok")}
    warnings = []
    layers = {int(m.group(1)) for t in checkpoint.tensors if (m := _LAYER_INDEX.match(t.name))}
    n_layers = data.get("n_layers")
    if layers and isinstance(n_layers, int) and not isinstance(n_layers, bool) and len(layers) != n_layers:
        warnings.append(f"params.json says n_layers={n_layers}, the weights hold {counted(len(layers), 'layer')} "
                        f"(layers.{min(layers)} to layers.{max(layers)})")
    vocab = data.get("vocab_size")
    embedding = next((t for t in checkpoint.tensors if t.name == "tok_embeddings.weight"), None)
    # Llama 1/2's params.json says vocab_size -1 (the tokenizer decides): only a positive count is compared.
    if embedding is not None and isinstance(vocab, int) and not isinstance(vocab, bool) and vocab > 0 \
            and len(embedding.shape) == 2 and embedding.shape[0] != vocab:
        warnings.append(f"params.json says vocab_size={vocab}, tok_embeddings.weight has "
                        f"{counted(embedding.shape[0], 'row', grouped=False)}")
    return summary, warnings


def remote_code_warning(checkpoint: Checkpoint) -> str | None:
    """A config.json whose `auto_map` names Python modules of its own (`modeling_x.MyModel`, or
    `org/repo--modeling_x.MyModel` in another repo): `from_pretrained(..., trust_remote_code=True)` imports and runs
    them. The security verdict is of the weight files only ("safetensors: no pickle, no code"), which read as if the
    folder held no code at all. None where there is no auto_map. weightdoctor never imports them.

    Example:
        >>> remote_code_warning(open_checkpoint("mpt-7b"))  # doctest: +SKIP
        "config.json's auto_map names code of its own (modeling_mpt.py, configuration_mpt.py, here): ..."
    """
    config = checkpoint.config
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not isinstance(auto_map, dict):
        return None
    references = [ref for value in auto_map.values() for ref in (value if isinstance(value, list) else [value])
                  if isinstance(ref, str) and "." in ref]
    modules = list(dict.fromkeys(ref.rpartition(".")[0] for ref in references))
    if not modules:
        return None
    folder = checkpoint.path if checkpoint.path.is_dir() else checkpoint.path.parent
    here: list[str] = []
    absent: list[str] = []
    elsewhere: list[str] = []
    for module in modules:
        repo, _, local = module.rpartition("--")
        file = local.replace(".", "/") + ".py"
        # os.path.isfile, not Path.is_file: a name longer than the system allows (a hostile config.json's) raised
        # "File name too long" out of Path.is_file and ended inspect, which then read nothing.
        shown = clip_middle(f"{file} of {repo}" if repo else file, 120)
        (elsewhere if repo else here if os.path.isfile(folder / file) else absent).append(shown)
    def first_six(files: list[str]) -> str:
        # A config may name dozens of modules: six, and how many more (the rest went unsaid).
        return ", ".join(files[:6]) + (f" and {len(files) - 6:,} more" if len(files) > 6 else "")

    named = "; ".join(part for part in (
        f"{first_six(here)} in this folder" if here else "",
        f"{first_six(absent)}, not in this folder" if absent else "",
        f"{first_six(elsewhere)}" if elsewhere else "") if part)
    return (f"config.json's auto_map names code of its own ({named}): "
            "from_pretrained(..., trust_remote_code=True) imports and runs it, and the security verdict covers the "
            "weight files only; weightdoctor never runs it: read it before passing trust_remote_code")


def timm_head_warning(checkpoint: Checkpoint) -> str | None:
    """A timm config.json whose `num_classes` the classifier its `pretrained_cfg.classifier` names does not have
    (a model fine-tuned to another class count under the original config): timm.create_model(pretrained=True)
    builds num_classes outputs and the head's weights do not fit. None where they agree or cannot be compared.

    Example:
        >>> timm_head_warning(open_checkpoint("resnet18-finetuned"))  # doctest: +SKIP
        'config.json says num_classes=1000 (timm), fc.weight has 10 rows: ...'
    """
    config = checkpoint.config
    if not config or config.get("model_type") or not isinstance(config.get("architecture"), str):
        return None
    num_classes = config.get("num_classes")
    pretrained = config.get("pretrained_cfg")
    heads = pretrained.get("classifier") if isinstance(pretrained, dict) else None
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes <= 0:
        return None
    by_name = {t.name: t for t in checkpoint.tensors}
    for head in [heads] if isinstance(heads, str) else heads if isinstance(heads, list) else []:
        weight = by_name.get(f"{head}.weight") if isinstance(head, str) else None
        if weight is not None and len(weight.shape) >= 1 and weight.shape[0] != num_classes:
            return (f"config.json says num_classes={num_classes} (timm), {head}.weight has "
                    f"{counted(weight.shape[0], 'row', grouped=False)}: "
                    f"import timm; timm.create_model({config['architecture']!r}, pretrained=True) builds "
                    f"{num_classes} outputs, "
                    f"which these head weights do not fit; set num_classes={weight.shape[0]}")
    return None


def ldm_ema_copy_warning(checkpoint: Checkpoint) -> str | None:
    """An original Stable Diffusion checkpoint saved with its EMA (CompVis' `*-full-ema.ckpt`, a training run's
    last.ckpt): LitEma keeps a copy of every UNet tensor as a buffer named `model_ema.` + the name without its
    first part and dots (`model.diffusion_model.out.2.weight` -> `model_ema.diffusion_modelout2weight`). The
    loaders build one UNet from it, so the parameter count here, which holds both, is not what they load.

    Example:
        >>> ldm_ema_copy_warning(open_checkpoint("sd-v1-4-full-ema.ckpt"))  # doctest: +SKIP
        'the UNet is stored twice: model_ema.* holds an EMA copy of 686 model.diffusion_model.* tensors ...'
    """
    copies = ldm_ema_copies(checkpoint)
    if not copies:
        return None
    params = sum(t.num_params for t in copies)
    return (f"the UNet is stored twice: model_ema.* holds an EMA copy of {counted(len(copies), 'tensor')} of "
            f"model.diffusion_model.* ({counted(params, 'parameter')}, counted in the total above); {LDM_ONE_UNET}")


# What the loaders of an original Stable Diffusion checkpoint do with LitEma's copy of its UNet.
LDM_ONE_UNET = ("the loaders build one UNet: diffusers' from_single_file and the original inference configs "
                "(use_ema: False) take the non-EMA weights, diffusers' conversion script with --extract_ema the EMA "
                "ones")


def ldm_ema_copies(checkpoint: Checkpoint) -> list[TensorInfo]:
    """The UNet tensors (`model.diffusion_model.*`) of an original Stable Diffusion checkpoint that LitEma copied as
    `model_ema.<name without its first part and dots>`; empty for a checkpoint without that copy."""
    names = {t.name for t in checkpoint.tensors}
    unet = [t for t in checkpoint.tensors if t.name.startswith("model.diffusion_model.")]
    return [t for t in unet if "model_ema." + "".join(t.name.split(".")[1:]) in names]


# Buffers a model registers itself (BatchNorm's statistics): EMAHook copies parameters only, so they have no twin.
_MODULE_BUFFER = re.compile(r"(^|\.)(running_mean|running_var|num_batches_tracked)$")


def mmcv_ema_buffers(names: Iterable[str]) -> dict[str, str]:
    """mmcv EMAHook's buffers among `names`, each mapped to the parameter it copies: `ema_` + the parameter's name
    with `_` for `.`, beside that parameter; {} when too few names have such a copy to be the hook's.

    The hook registers one buffer per parameter of the model, so most of the names (BatchNorm's statistics apart)
    have one: a model with a learned `ema_decay` beside its own `decay` is not an EMAHook checkpoint.

    Example:
        >>> mmcv_ema_buffers(["conv1.weight", "ema_conv1_weight", "ema_x"])
        {'ema_conv1_weight': 'conv1.weight'}
    """
    listed = set(names)
    found = {"ema_" + name.replace(".", "_"): name for name in sorted(listed)
             if not name.startswith("ema_") and "ema_" + name.replace(".", "_") in listed}
    weights = sum(1 for name in listed if not name.startswith("ema_") and not _MODULE_BUFFER.search(name))
    return found if 2 * len(found) >= weights else {}


def mmcv_ema_copy_warning(checkpoint: Checkpoint) -> str | None:
    """An OpenMMLab 1.x checkpoint (mmdet 2.x, mmseg, mmcls) trained with mmcv's EMAHook: the hook registers a
    buffer `ema_` + the parameter's name with `_` for `.` (`backbone.conv1.weight` -> `ema_backbone_conv1_weight`) for
    every parameter, so the state dict holds each parameter twice. A model built for inference has no such buffers:
    load_checkpoint loads the named weights and reports the ema_* ones as unexpected keys.

    Example:
        >>> mmcv_ema_copy_warning(open_checkpoint("yolox_s_8x8_300e_coco.pth"))  # doctest: +SKIP
        'the parameters are stored twice: ema_* holds a copy of 24 tensors (...), the buffers mmcv's EMAHook adds ...'
    """
    of_param = set(mmcv_ema_buffers(t.name for t in checkpoint.tensors).values())
    copies = [t for t in checkpoint.tensors if t.name in of_param]
    if not copies:
        return None
    params = sum(t.num_params for t in copies)
    return (f"the parameters are stored twice: ema_* holds a copy of {counted(len(copies), 'tensor')} "
            f"({counted(params, 'parameter')}, counted in the total above), the buffers mmcv's EMAHook adds (ema_ + "
            "the name with _ for .); a model built without the hook loads the named weights alone and "
            "load_checkpoint reports the ema_* ones as unexpected keys")


# MoCo's two encoders, the trained one and its momentum (EMA) copy: v3's base_encoder / momentum_encoder, v1 / v2's
# encoder_q / encoder_k, under DistributedDataParallel's `module.` as their main_moco.py saves them.
_MOMENTUM_PAIRS = (("base_encoder.", "momentum_encoder.", "moco-v3's main_lincls.py and convert_to_deit.py"),
                   ("encoder_q.", "encoder_k.", "moco's main_lincls.py and convert-pretrain-to-detectron2.py"))


def momentum_encoder_copy_warning(checkpoint: Checkpoint) -> str | None:
    """A MoCo pretraining checkpoint (`{"epoch", "arch", "state_dict", "optimizer"}`, its state dict
    `module.base_encoder.*` beside `module.momentum_encoder.*`, v1 / v2 `module.encoder_q.*` beside `encoder_k.*`): the
    encoder is stored twice, and MoCo's main_lincls.py and its converters (moco-v3's convert_to_deit.py, v2's
    convert-pretrain-to-detectron2.py) load the first encoder alone, its prefix stripped and its head left out; the
    parameter count, which holds both, is not what they load.

    Example:
        >>> momentum_encoder_copy_warning(open_checkpoint("r-50-1000ep.pth.tar"))  # doctest: +SKIP
        'the encoder is stored twice: module.momentum_encoder.* holds the momentum copy of 161 tensors of ...'
    """
    by_name = {t.name: t for t in checkpoint.tensors}
    for base, momentum, loaders in _MOMENTUM_PAIRS:
        for wrapper in ("module.", ""):
            copies = [t for name, t in by_name.items() if name.startswith(wrapper + base)
                      and wrapper + momentum + name[len(wrapper + base):] in by_name]
            if copies:
                params = sum(t.num_params for t in copies)
                return (f"the encoder is stored twice: {wrapper}{momentum}* holds the momentum copy of "
                        f"{counted(len(copies), 'tensor')} of {wrapper}{base}* ({counted(params, 'parameter')}, "
                        f"counted in the total above); {loaders} load {wrapper}{base}* alone, the prefix stripped "
                        "and the head left out")
    return None


# DINOv2's own parts beside its backbones (its heads, the running center of its loss): what tells its trainer's
# checkpoints from another student / teacher pair's.
_DINOV2_PARTS = ("student.dino_head.", "teacher.dino_head.", "student.ibot_head.", "teacher.ibot_head.",
                 "dino_loss.center")


# Prefixes a wrapper adds to every name when a script saves the wrapper's state_dict() instead of the model's:
# DistributedDataParallel / DataParallel keep the model as `.module`, torch.compile's OptimizedModule as `._orig_mod`.
_WRAPPER_PREFIXES = (("module.", "DistributedDataParallel or DataParallel"), ("_orig_mod.", "torch.compile"))
# GroundingDINO (IDEA-Research/GroundingDINO): its released groundingdino_swint_ogc.pth / swinb_cogcoor.pth keep the
# training's DDP prefix under "model", and its util.inference.load_model strips it (util.utils.clean_state_dict).
_GROUNDING_DINO = ("bert.", "transformer.", "feat_map.")
# open_clip's training (open_clip_train/main.py) saves epoch_N.pt / epoch_latest.pt as {"epoch", "name", "state_dict":
# the DDP model's, every name `module.`-prefixed, ...}; open_clip's factory.load_state_dict strips `module.` itself
# when the first name starts with it, so create_model(..., pretrained="epoch_32.pt") reads the file as it is.
_OPEN_CLIP = ("visual.", "logit_scale")


def own_config_warning(checkpoint: Checkpoint) -> str | None:
    """What a library's own config beside weights with no config.json is (stable-audio-tools' model_config.json),
    or None: inspect showed no config at all, as if nothing said what the weights are.

    Example:
        >>> own_config_warning(open_checkpoint("stable-audio-open-1.0"))  # doctest: +SKIP
        "model_config.json beside the weights is stable-audio-tools' own config (model_type 'diffusion_cond', ..."
    """
    from weightdoctor.meta_model import stable_audio_config

    if checkpoint.config is not None:  # headers read remotely: the path names no local folder, none is found
        return None
    from weightdoctor.shard import VOCOS_LOADS, vocos_model

    folder = checkpoint.path if checkpoint.path.is_dir() else checkpoint.path.parent
    if vocos_model(checkpoint):
        return (f"config.yaml beside the weights is Vocos' own config (its parts' vocos classes): {VOCOS_LOADS}; "
                "from_pretrained of transformers has no config.json to build it from")
    said = stable_audio_config(folder)
    return (f"{said}: stable_audio_tools builds the model from it (create_model_from_config) and loads these weights "
            "into it (load_ckpt_state_dict); from_pretrained has no config.json to build it from") if said else None


def _compiled_attribute_warning(names: list[str]) -> str | None:
    """Every name under one attribute's torch.compile wrapper (`model._orig_mod.*`: a LightningModule, or any module,
    whose `self.model = torch.compile(model)` was saved): the prefix is not at the start, and inspect said nothing,
    where the same module without the compile matches none of these names."""
    first = names[0].partition(".")[0] if names else ""
    prefix = f"{first}._orig_mod."
    if not first or not all(name.startswith(prefix) for name in names):
        return None
    return (f"every tensor name starts with {prefix} (the module's {first} attribute was torch.compile's "
            f"OptimizedModule when saved, which keeps the module as _orig_mod): the same module with {first} not "
            "compiled matches none of these names (Lightning's load_from_checkpoint included, unless __init__ "
            f"compiles it too); strip _orig_mod. first (diff-keys --rename '^{re.escape(prefix)}={first}.' shows "
            "the result)")


def wrapper_prefix_warning(checkpoint: Checkpoint) -> str | None:
    """A state dict saved from a wrapped model: every name starts with `module.` (DDP / DataParallel) or
    `_orig_mod.` (torch.compile), which the bare model's load_state_dict matches with none of its own names.
    Nothing said so: the module tree showed one top module called `module`.

    Example:
        >>> wrapper_prefix_warning(open_checkpoint("groundingdino_swint_ogc.pth"))  # doctest: +SKIP
        'every tensor name starts with module. (the state_dict() of a DistributedDataParallel or DataParallel ...'
    """
    names = [t.name for t in checkpoint.tensors]
    # Wrappers stack: DDP(torch.compile(model)) names every tensor `module._orig_mod.*`, and stripping `module.`
    # alone (what was said) still matched none of the bare model's names.
    stacked: list[tuple[str, str]] = []
    prefix = ""
    while len(stacked) < len(_WRAPPER_PREFIXES) and (found := next(
            (w for w in _WRAPPER_PREFIXES if names and all(n.startswith(prefix + w[0]) for n in names)), None)):
        stacked.append(found)
        prefix += found[0]
    if not stacked:
        return _compiled_attribute_warning(names)
    wrapper = f"{stacked[0][1]} wrapper" + "".join(f" around a {w[1]} one" for w in stacked[1:])
    said = (f"every tensor name starts with {prefix} (the state_dict() of a {wrapper}, where "
            f"model.{prefix.rstrip('.')}.state_dict() is the model's own): the unwrapped model's load_state_dict "
            "matches none of "
            f"these names; strip the prefix first (diff-keys --rename '^{re.escape(prefix)}=' shows the result)")
    if prefix == "module." and all(any(n.startswith(prefix + part) for n in names) for part in _GROUNDING_DINO):
        said += ("; a GroundingDINO checkpoint: its load_model strips the prefix itself (util.utils.clean_state_dict) "
                 "and loads with strict=False, so its own code reads the file as it is, but another loader with "
                 "strict=False would load none of these weights and raise nothing")
    elif prefix == "module." and all(any(n.startswith(prefix + part) for n in names) for part in _OPEN_CLIP):
        said += ("; an open_clip training checkpoint (epoch_N.pt): open_clip's own loader strips the prefix itself "
                 "(factory.load_state_dict), so create_model(..., pretrained=<this file>) reads it as it is; "
                 "only another loader needs it stripped")
    return said


# The full-state-dict save inspect's warning, diff-keys' note and the refusal of a rank's DTensors give (one text:
# they had each their own copy). It runs in the training script, where the wrapped model is: `fsdp_model` is named as
# the user's own (`get_model_state_dict(model, ...)` read as if `model` were defined), and the imports come with it
# (`StateDictOptions` was a NameError pasted). cpu_offload with full_state_dict gives the whole dict to rank 0 alone.
FSDP_FULL_STATE_DICT_SAVE = (
    "in the training script, on every rank, with its FSDP-wrapped model as fsdp_model (the one name here that is "
    "yours): import torch; from torch.distributed.checkpoint.state_dict import StateDictOptions, "
    "get_model_state_dict; state_dict = get_model_state_dict(fsdp_model, options=StateDictOptions("
    "full_state_dict=True, cpu_offload=True)); then on rank 0 alone (the others get an empty dict) "
    "torch.save(state_dict, 'full_state_dict.pt')")


def fsdp_flat_params(names: Iterable[str]) -> dict[str, str]:
    """FSDP flat parameters among `names`, each with the prefix of the module it flattens (its name less
    `_flat_param` and FSDP's `_fsdp_wrapped_module.` wrappers; "" for the root module): inspect's warning and
    diff-keys' reason `fsdp-flat-param` both tell them by this.

    Example:
        >>> fsdp_flat_params(["_fsdp_wrapped_module._flat_param", "model.layers.0._flat_param", "lm_head.weight"])
        {'_fsdp_wrapped_module._flat_param': '', 'model.layers.0._flat_param': 'model.layers.0.'}
    """
    flat: dict[str, str] = {}
    for name in names:
        if name == "_flat_param" or name.endswith("._flat_param"):
            flat[name] = name[: -len("_flat_param")].replace("_fsdp_wrapped_module.", "")
    return flat


def fsdp_flat_param_warning(checkpoint: Checkpoint) -> str | None:
    """FSDP flat parameters (`_fsdp_wrapped_module._flat_param`, a LOCAL_STATE_DICT's `model.layers.0._flat_param`):
    FullyShardedDataParallel's weights with use_orig_params=False, saved from named_parameters() or its local state
    dict. inspect showed one 1-D tensor and a module tree of `_fsdp_wrapped_module`, and said nothing.

    Example:
        >>> fsdp_flat_param_warning(open_checkpoint("fsdp_named_params.pt"))  # doctest: +SKIP
        '1 FSDP flat parameter (_fsdp_wrapped_module._flat_param, 106,816 values): the weights of the modules ...'
    """
    # One pass of str.endswith over the names (this runs on every inspect): the rule itself is fsdp_flat_params'.
    if not any(t.name.endswith("_flat_param") for t in checkpoint.tensors):
        return None
    names = fsdp_flat_params(t.name for t in checkpoint.tensors)
    flat = [t for t in checkpoint.tensors if t.name in names]
    if not flat:
        return None
    shown = ", ".join(t.name for t in flat[:2]) + (f" and {len(flat) - 2:,} more" if len(flat) > 2 else "")
    values = sum(t.num_params for t in flat)
    return (f"{len(flat):,} FSDP flat parameter{'s' if len(flat) != 1 else ''} ({shown}, {values:,} values): the "
            "weights of the modules FullyShardedDataParallel wraps (use_orig_params=False), flattened into 1-D and "
            "sharded, as named_parameters() or a LOCAL_STATE_DICT gives them; no model loads them by name, and one "
            f"rank's file holds only its shard. Save the full state dict instead, {FSDP_FULL_STATE_DICT_SAVE}")


# fairscale's FlattenParamsWrapper registers `flat_param_0`, `flat_param_1`, ... on each module its
# FullyShardedDataParallel wraps; its local_state_dict keeps them (the wrappers' `_fsdp_wrapped_module.` and
# `_fpw_module.` dropped) beside the buffers under their own names: what fairseq's --ddp-backend fully_sharded saves
# in each rank's checkpoint_last-shardN.pt, with `fsdp_metadata` to put them back together.
_FAIRSCALE_FLAT_PARAM = re.compile(r"(^|\.)flat_param_\d+$")


def fairscale_flat_params(shapes: Mapping[str, Sequence[int]]) -> dict[str, str]:
    """fairscale FSDP flat parameters among `shapes` (name -> shape), each with the prefix of the module it flattens
    (its name less `flat_param_N`; "" for the root module): 1-D tensors only, so a model's own 2-D `flat_param_0` is
    not one. inspect's warning and diff-keys' reason `fairscale-flat-param` both tell them by this.

    Example:
        >>> fairscale_flat_params({"flat_param_0": (640,), "decoder.layers.0.flat_param_0": (2128,),
        ...                        "proj.flat_param_0": (4, 4)})
        {'flat_param_0': '', 'decoder.layers.0.flat_param_0': 'decoder.layers.0.'}
    """
    flat: dict[str, str] = {}
    for name, shape in shapes.items():
        if len(shape) == 1 and (match := _FAIRSCALE_FLAT_PARAM.search(name)) is not None:
            flat[name] = name[: match.start()] + ("." if match.start() else "")
    return flat


def fairscale_flat_param_warning(checkpoint: Checkpoint) -> str | None:
    """fairscale FSDP flat parameters (`flat_param_0`, `decoder.layers.0.flat_param_0`): one rank's shard of the weights
    of the modules fairscale's FullyShardedDataParallel wraps, flattened into 1-D. inspect counted them as the model's
    parameters and said nothing (the one warning of FSDP's flat parameters matched only torch's `_flat_param`).

    Example:
        >>> fairscale_flat_param_warning(open_checkpoint("checkpoint_last-shard0.pt"))  # doctest: +SKIP
        '2 fairscale FSDP flat parameters (flat_param_0, decoder.layers.0.flat_param_0, 4,224 values): ...'
    """
    if not any("flat_param_" in t.name for t in checkpoint.tensors):
        return None  # one pass of a substring test: this runs on every inspect
    names = fairscale_flat_params({t.name: t.shape for t in checkpoint.tensors if "flat_param_" in t.name})
    flat = [t for t in checkpoint.tensors if t.name in names]
    if not flat:
        return None
    from weightdoctor.checkpoint.model_parts import (
        fsdp_metadata_key,
        fsdp_shard_said_by_reader,
        part_rank,
        sharded_part_rank,
    )

    if part_rank(checkpoint.path.name) is not None or sharded_part_rank(checkpoint.path.name) is not None:
        return None  # a model-parallel part's flat parameters: the reader's part warning says what and how, once
    if fsdp_shard_said_by_reader(checkpoint.path, checkpoint.other_entries):
        return None  # checkpoint_last-shard0.pt with its metadata: the reader's warning says which shard, and how
    shown = ", ".join(t.name for t in flat[:2]) + (f" and {len(flat) - 2:,} more" if len(flat) > 2 else "")
    values = sum(t.num_params for t in flat)
    return (f"{len(flat):,} fairscale FSDP flat parameter{'s' if len(flat) != 1 else ''} ({shown}, {values:,} "
            "values): one rank's shard of the weights of the modules fairscale's FullyShardedDataParallel wraps "
            "(flatten_parameters), flattened into 1-D and padded, as its local_state_dict gives them (fairseq's "
            "--ddp-backend fully_sharded saves one checkpoint_last-shardN.pt per rank); no model loads them by name "
            "and the counts above are of this shard. " + _fairscale_consolidation(fsdp_metadata_key(
                checkpoint.other_entries)))


def _fairscale_consolidation(key: str | None) -> str:
    """How every rank's file of fairscale flat parameters is unflattened, by the metadata its file holds under `key`
    (metaseq's `shard_metadata`, fairseq's `fsdp_metadata`; None: neither)."""
    from weightdoctor.checkpoint.model_parts import fairscale_unflatten_fix

    lead = {"shard_metadata": "Consolidate every rank's file first by the shard_metadata it holds (metaseq's Trainer "
                              "saves it): ",
            "fsdp_metadata": "Consolidate every rank's file first: "}.get(
        key or "", "The file holds no metadata to unflatten them by (neither metaseq's shard_metadata nor fairseq's "
                   "fsdp_metadata): ")
    return lead + fairscale_unflatten_fix(key)


def gpt_fast_int4_warning(checkpoint: Checkpoint) -> str | None:
    """gpt-fast's int4 checkpoints (quantize.py --mode int4: model_int4.g32.pth): each Linear's weight packed 8 int4
    values to an int32, beside bfloat16 scales_and_zeros, with no config to say so. inspect counted the int32 (an
    eighth of the weights) and said nothing of the format.

    Example:
        >>> gpt_fast_int4_warning(open_checkpoint("model_int4.g32.pth"))  # doctest: +SKIP
        '1 Linear layer quantized to int4 as gpt-fast's quantize.py writes it ...'
    """
    if not any(t.name.endswith(".scales_and_zeros") for t in checkpoint.tensors):
        return None  # one pass of str.endswith: this runs on every inspect
    layers = gpt_fast_int4_layers(checkpoint.tensors)
    if not layers:
        return None
    weights = sum(layer.out_features * layer.in_features for layer in layers.values())
    groups = ", ".join(map(str, sorted({layer.group_size for layer in layers.values()})))
    shown = ", ".join(list(layers)[:2]) + (f" and {len(layers) - 2:,} more" if len(layers) > 2 else "")
    cuda = sum(layer.out_features * layer.in_features for layer in layers.values() if layer.packing == "cuda")
    packings = [*(["int32 packed by torch.ops.aten._convert_weight_to_int4pack, 8 int4 values to an int32"]
                  if cuda else []),
                *(["uint8 [out, in / 2] packed by torch.ops.aten._convert_weight_to_int4pack_for_cpu (quantize.py "
                   "on a CPU), 2 int4 values to a byte"] if weights - cuda else [])]
    stored = " and ".join([*([f"{cuda // 8:,} int32"] if cuda else []),
                           *([f"{(weights - cuda) // 2:,} uint8"] if weights - cuda else [])])
    # Each packing has its own kernel: the CPU one's was named as the CUDA one's (_weight_int4pack_mm).
    kernels = " or ".join([*(["_weight_int4pack_mm (CUDA)"] if cuda else []),
                           *(["_weight_int4pack_mm_for_cpu (CPU)"] if weights - cuda else [])])
    return (f"{counted(len(layers), 'Linear layer')} quantized to int4 as gpt-fast's quantize.py writes "
            f"{'it' if len(layers) == 1 else 'them'} ({shown}; WeightOnlyInt4QuantHandler, group size {groups}): "
            f"each weight is {' or '.join(packings)}, so they hold {weights:,} weights where the parameters here "
            f"count {stored} (num_params counts the stored values, `quantized` the weights), "
            f"beside bfloat16 scales_and_zeros, which {kernels} reads in bfloat16 alone (convert and "
            "check-dtype leave them so); gpt-fast's generate.py runs the file (--checkpoint_path), no "
            "from_pretrained reads it, and its int4 packing is the layout of the torch build and device that "
            "wrote it")


def reparametrized_warning(checkpoint: Checkpoint) -> str | None:
    """Weights saved while torch.nn.utils.prune, spectral_norm or parametrize was applied (`fc.weight_orig` beside
    `fc.weight_mask`; `conv.weight_orig`, `_u`, `_v`; `parametrizations.weight.original`): a model without the same
    reparametrization matches none of these names, and a pruned model's masks (buffers of 0s and 1s) were counted
    as its parameters. inspect said nothing of them.

    Example:
        >>> reparametrized_warning(open_checkpoint("pruned.pt"))  # doctest: +SKIP
        '2 weights saved under torch.nn.utils.prune (conv.weight, fc.weight): ...'
    """
    # One pass of str.endswith / `in` over the names (this runs on every inspect) before the rule itself.
    if not any(t.name.endswith(("_orig", "_mask", "_u", "_v")) or "parametrizations." in t.name
               for t in checkpoint.tensors):
        return None
    found = reparametrized(t.name for t in checkpoint.tensors)
    if not found:
        return None
    said = []
    # weight_norm's weight_g / weight_v are left out: transformers' own models save them so (wav2vec 2.0's pos_conv),
    # and from_pretrained reads them; diff-keys names them where the other side stores the weight itself.
    for family in ("prune", "spectral_norm", "parametrize"):
        stored = sorted({what.stored for what in found.values() if what.family == family})
        if not stored:
            continue
        example = next(what for what in found.values() if what.family == family)
        shown = ", ".join(stored[:3]) + (f" and {len(stored) - 3:,} more" if len(stored) > 3 else "")
        text = (f"{counted(len(stored), 'weight')} saved under torch.nn.utils."
                f"{'prune' if family == 'prune' else family} ({shown}): {example.how_to_remove}")
        if family == "prune":
            masks = [t for t in checkpoint.tensors if found.get(t.name) is not None and t.name.endswith("_mask")]
            text += (f"; the {counted(len(masks), 'mask')} ({sum(t.num_params for t in masks):,} values) are counted "
                     "in the parameters here, as every tensor of the state dict is, and hold no weights")
        said.append(text)
    return "; ".join(said) or None


def student_teacher_copy_warning(checkpoint: Checkpoint) -> str | None:
    """A DINOv2 training checkpoint (its trainer's `model_N.pth`, `{"model": {...}, "optimizer", "iteration"}`, or
    that state dict alone): `student.backbone.*` beside `teacher.backbone.*` (and their heads, `dino_loss.center`),
    so the backbone is stored twice; DINOv2's eval (dinov2/eval/setup.py) loads the teacher alone, through
    load_pretrained_weights with checkpoint_key "teacher", the `backbone.` prefix stripped.

    Example:
        >>> student_teacher_copy_warning(open_checkpoint("model_0124999.rank_0.pth"))  # doctest: +SKIP
        'the backbone is stored twice: student.backbone.* holds the student copy of 2 tensors of ...'
    """
    by_name = {t.name: t for t in checkpoint.tensors}
    for wrapper in ("module.", ""):
        teacher = wrapper + "teacher.backbone."
        backbone = [(t, by_name.get(wrapper + "student.backbone." + name[len(teacher):]))
                    for name, t in by_name.items() if name.startswith(teacher)]
        # The same architecture twice, tensor for tensor: a distillation between two architectures (a ResNet-18
        # student, a ResNet-50 teacher) shares some names, even a stem of the same shapes, but is two models.
        twins = [(t, twin) for t, twin in backbone if twin is not None and twin.shape == t.shape]
        # A student tensor that is the teacher's own (one tensor under both names, same view_id) is stored once and
        # counted once: such a file was said to store the backbone twice, "counted in the total above". Only the
        # others are copies; a file sharing some and copying the rest still stores those twice.
        copies = [t for t, twin in twins if t.view_id is None or twin.view_id != t.view_id]
        if copies and len(twins) == len(backbone):
            params = sum(t.num_params for t in copies)
            said = (f"the backbone is stored twice: {wrapper}student.backbone.* holds the student copy of "
                    f"{counted(len(copies), 'tensor')} of {wrapper}teacher.backbone.* "
                    f"({counted(params, 'parameter')}, counted in the total above); ")
            # The trainer's own eval export (teacher_checkpoint.pth) is {"teacher": teacher.state_dict()}; nothing
            # here drops the student, so the way to count the teacher alone is inspect's --filter.
            alone = f"--filter '^{re.escape(teacher)}' counts it alone"
            # DINOv2's eval advice only where DINOv2's own parts say so: any self-distillation or EMA-teacher trainer
            # (BYOL, iBOT, a mean teacher) names its copies student / teacher, and was told of dinov2/eval/setup.py.
            if any(name.startswith(wrapper + part) for name in by_name for part in _DINOV2_PARTS):
                return (said + "DINOv2's eval (dinov2/eval/setup.py, load_pretrained_weights with checkpoint_key "
                        f"'teacher') loads {wrapper}teacher.backbone.* alone, the prefix stripped and the dino_head "
                        f"left out; {alone}")
            return said + f"a model built from it takes one of the two; {alone}"
    return None


def controlnet_beside_sd_warning(checkpoint: Checkpoint) -> str | None:
    """An original ControlNet saved with the whole Stable Diffusion model it was trained on (ControlNet 1.0's
    control_sd15_*.pth: model.diffusion_model, first_stage_model, cond_stage_model beside control_model): its
    loaders take `control_model.*` alone, so most of what is counted here is not the ControlNet.

    Example:
        >>> controlnet_beside_sd_warning(open_checkpoint("control_sd15_canny.pth"))  # doctest: +SKIP
        'the file holds a whole Stable Diffusion checkpoint beside its ControlNet: ...'
    """
    control = [t for t in checkpoint.tensors if t.name.startswith("control_model.")]
    if not control or not any(t.name.startswith("model.diffusion_model.") for t in checkpoint.tensors):
        return None
    params = sum(t.num_params for t in control)
    return (f"the file holds a whole Stable Diffusion checkpoint beside its ControlNet: control_model.* is the "
            f"ControlNet ({counted(len(control), 'tensor')}, {counted(params, 'parameter')}), the rest the model it "
            "was trained on; A1111's ControlNet extension, ComfyUI and diffusers' ControlNetModel.from_single_file "
            "read control_model.* alone")


# peft's PeftType values as peft's documentation names the methods (its package reference's page titles, peft 0.21):
# `VERA` is VeRA, `LN_TUNING` LayerNorm Tuning's short name. A type not listed is shown as it is written.
_PEFT_METHOD_NAMES = {
    "LORA": "LoRA", "ADALORA": "AdaLoRA", "LOHA": "LoHa", "LOKR": "LoKr", "IA3": "IA3", "VERA": "VeRA",
    "LN_TUNING": "LN Tuning", "OFT": "OFT", "BOFT": "BOFT", "HRA": "HRA", "FOURIERFT": "FourierFT",
    "VBLORA": "VB-LoRA", "XLORA": "X-LoRA", "POLY": "Polytropon", "RANDLORA": "RandLora", "SHIRA": "SHiRA",
    "C3A": "C3A", "MISS": "MiSS", "BONE": "Bone", "ROAD": "RoAd", "CPT": "CPT", "TRAINABLE_TOKENS": "Trainable Tokens",
    "PROMPT_TUNING": "Prompt tuning", "P_TUNING": "P-tuning", "PREFIX_TUNING": "Prefix tuning",
    "MULTITASK_PROMPT_TUNING": "Multitask prompt tuning", "ADAPTION_PROMPT": "Llama-Adapter (adaption prompt)",
    # The methods peft 0.21 added since, as its docstrings and documentation pages write them.
    "ADAMSS": "AdaMSS", "BEFT": "BEFT", "LILY": "Lily", "FROD": "FRoD", "PVERA": "PVeRA", "GLORA": "GLoRA",
    "UNILORA": "UniLoRA", "HIRA": "HiRA", "WAVEFT": "WaveFT", "OSF": "OSF", "DELORA": "DeLoRA", "GRALORA": "GraLoRA",
    "CARTRIDGE": "CARTRIDGE", "TINYLORA": "TinyLoRA", "PSOFT": "PSOFT", "PEANUT": "PEANuT", "SHADOW": "ShadowPEFT",
    "SUPERTUNING": "Super-Tuning", "DEFT": "DEFT",
    # peft 0.22's.
    "PACA": "PaCA",
}


def peft_method_name(peft_type: object) -> str:
    """An adapter_config.json's `peft_type` as a person reads it, in peft's documentation's words.

    Example:
        >>> peft_method_name("VERA"), peft_method_name("LN_TUNING"), peft_method_name("NEWTHING")
        ('VeRA', 'LN Tuning', 'NEWTHING')
    """
    return _PEFT_METHOD_NAMES.get(peft_type, str(peft_type)) if isinstance(peft_type, str) else str(peft_type)


# target_parameters: the bare parameters a LoRA adapts (fused MoE experts, peft 0.17+), beside target_modules; not
# said, inspect named the attention projections alone of an adapter whose experts' factors were most of its weights.
ADAPTER_FIELDS = ("peft_type", "base_model_name_or_path", "task_type", "r", "lora_alpha", "target_modules",
                  "modules_to_save", "use_dora", "target_parameters")
# What sizes an adapter of a method whose `r` is no size of it (peft's OFT config sets r=0 beside oft_block_size;
# AdaLoRA ignores r for init_r / target_r; IA3, C3A, FourierFT, BOFT, ... have none): inspect said "OFT r=0".
SIZE_FIELDS = ("init_r", "target_r", "oft_block_size", "boft_block_size", "boft_block_num", "boft_n_butterfly_factor",
               "block_size", "n_frequency", "group_size", "num_virtual_tokens", "adapter_len", "effective_rank")


def adapter_summary(checkpoint: Checkpoint) -> tuple[dict[str, Any] | None, str | None]:
    """The fields of a PEFT `adapter_config.json` beside the weights (its base model, rank, targets), or None;
    and a warning when there is such a file that cannot be read as one.

    Example:
        >>> adapter_summary(open_checkpoint("my-lora"))[0]  # doctest: +SKIP
        {'peft_type': 'LORA', 'base_model_name_or_path': 'meta-llama/Llama-2-7b-hf', 'r': 8, ...}
    """
    folder = checkpoint.path if checkpoint.path.is_dir() else checkpoint.path.parent
    path = folder / "adapter_config.json"
    try:
        if not path.is_file():
            return None, None
        if path.stat().st_size > 1 << 20:  # a config, not data: a megabyte is plenty
            return None, "adapter_config.json is over 1 MB: not read as a PEFT adapter config"
        data = parse_json(path.read_text(encoding="utf-8"), max_depth=MAX_DEPTH)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        # PeftModel.from_pretrained fails on it too; the weights are still described.
        return None, f"adapter_config.json beside the weights cannot be read ({exc}): PEFT cannot load this adapter"
    peft_type = data.get("peft_type") if isinstance(data, dict) else None
    if not isinstance(peft_type, str) or not peft_type:  # absent, null, a number: PEFT knows no such type
        from weightdoctor.checkpoint.reader import adapterhub_adapter

        described = adapterhub_adapter(data)
        if described is not None:  # not a broken PEFT config: another library's
            return None, (f"adapter_config.json beside the weights is {described}: the adapters library loads it "
                          "(model.load_adapter(folder)), PEFT cannot")
        return None, "adapter_config.json beside the weights has no peft_type: PEFT cannot load this adapter"
    read = [f.path.name for f in checkpoint.weight_files]
    beside = [p.name for p in sorted(folder.glob("adapter_model.*")) if p.suffix in (".safetensors", ".bin", ".pt")]
    if read and beside and not any(name.startswith("adapter_model") for name in read):
        # torchtune's epoch_N/: the merged model read here, the LoRA it merged beside it. transformers'
        # from_pretrained (maybe_load_adapters) loads a local folder's own weights, then the adapter onto them.
        shown = f"{read[0]}{', ...' if len(read) > 1 else ''}"
        return None, (f"{beside[0]} and adapter_config.json ({peft_method_name(peft_type)}) beside the model's "
                      f"weights are a PEFT adapter, not the weights read here ({shown}): from_pretrained(folder), "
                      "with peft installed, loads these weights and then loads the adapter onto them (a merged model "
                      "gets its LoRA "
                      f"twice); name {beside[0]} to read the adapter")
    summary = {key: data[key] for key in (*ADAPTER_FIELDS, *SIZE_FIELDS) if data.get(key) is not None}
    # What the PeftModel.from_pretrained printed loads the base with: the base's revision, and the class peft
    # recorded for a base of no Auto class's task (its two names only, not whatever else the file holds there).
    if isinstance(data.get("revision"), str):
        summary["revision"] = data["revision"]
    mapping = data.get("auto_mapping")
    if isinstance(mapping, dict) and all(isinstance(mapping.get(key), str)
                                         for key in ("base_model_class", "parent_library")):
        summary["auto_mapping"] = {key: mapping[key] for key in ("base_model_class", "parent_library")}
    for pattern in ("rank_pattern", "alpha_pattern"):  # peft writes {} when unused
        if isinstance(data.get(pattern), dict) and data[pattern]:
            summary[pattern] = data[pattern]
    # PaCA's (peft 0.22) paca_alpha scales its update as lora_alpha does LoRA's; its paca_indices_pattern gives the
    # layers a pattern matches their own input columns, as many as listed, not r: "PaCA r=4" was said of them too.
    # The columns are counted, not copied (a list per pattern, as long as the layer is wide).
    if data.get("peft_type") == "PACA":
        if isinstance(data.get("paca_alpha"), (int, float)) and not isinstance(data["paca_alpha"], bool):
            summary["paca_alpha"] = data["paca_alpha"]
        columns = data.get("paca_indices_pattern")
        if isinstance(columns, dict) and columns and all(isinstance(v, list) for v in columns.values()):
            summary["paca_columns_pattern"] = {key: len(indices) for key, indices in columns.items()}
    # peft leaves out the target_modules that exclude_modules matches (a list of names, or a regex)
    excluded = data.get("exclude_modules")
    if isinstance(excluded, str) and excluded or isinstance(excluded, list) and excluded and all(
            isinstance(module, str) for module in excluded):
        summary["exclude_modules"] = excluded
    if data.get("use_rslora") is True:  # rank-stabilised: scaled by alpha / sqrt(r), not alpha / r
        summary["use_rslora"] = True
    # peft adapts the target_modules of these layers only (an int is one layer), found under layers_pattern.
    layers = data.get("layers_to_transform")
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = [layers]
    if isinstance(layers, list) and layers and all(isinstance(layer, int) and not isinstance(layer, bool)
                                                   for layer in layers):
        summary["layers_to_transform"] = layers
        if isinstance(data.get("layers_pattern"), (str, list)) and data["layers_pattern"]:
            summary["layers_pattern"] = data["layers_pattern"]
    # LoRA's trainable_token_indices (a list for the input embedding, or a list per embedding module): the token
    # rows it trains beside the LoRA, stored as trainable_tokens_delta.
    trained = data.get("trainable_token_indices")
    if isinstance(trained, dict) and all(isinstance(v, list) for v in trained.values()):
        trained = [index for indices in trained.values() for index in indices]
    if isinstance(trained, list) and trained:
        summary["trainable_token_count"] = len(trained)
    saved = summary.get("modules_to_save")
    if isinstance(saved, str):
        saved = [saved]
    if isinstance(saved, list) and all(isinstance(module, str) for module in saved):
        summary["modules_saved"] = stored_modules(saved, [t.name for t in checkpoint.tensors])
    tokens = data.get("token_indices")  # Trainable Tokens: a list, or a list per embedding
    if isinstance(tokens, dict) and all(isinstance(v, list) for v in tokens.values()):
        tokens = [index for indices in tokens.values() for index in indices]
    if isinstance(tokens, list) and tokens:
        summary["token_count"] = len(tokens)
    return summary, None


def stored_modules(modules: list[str], names: list[str]) -> list[str]:
    """The entries of an adapter's `modules_to_save` whose weights `names` hold, each once, in order.

    peft appends its task's heads whether the model has them (a SEQ_CLS adapter lists `classifier` and `score`, and
    from 0.22 `pre_classifier`) and
    matches an entry to every module whose name ends with it, as here: `classifier` holds
    `base_model.model.classifier.weight`.

    Example:
        >>> stored_modules(["classifier", "score", "classifier"], ["base_model.model.classifier.weight"])
        ['classifier']
    """
    joined = "\n." + "\n.".join(names)
    return [module for module in dict.fromkeys(modules) if f".{module}." in joined]


def peft_adapter_config(checkpoint: Checkpoint) -> dict[str, Any] | None:
    """The whole PEFT adapter_config.json beside the weights, where `adapter_summary` reads one as the config of
    these weights; None otherwise (no such file, unreadable, another library's, the adapter of other weights)."""
    adapter, _ = adapter_summary(checkpoint)
    if adapter is None:
        return None
    folder = checkpoint.path if checkpoint.path.is_dir() else checkpoint.path.parent
    try:  # adapter_summary read it a moment ago (and checked its size)
        data = parse_json((folder / "adapter_config.json").read_text(encoding="utf-8"), max_depth=MAX_DEPTH)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def lora_init_setting(checkpoint: Checkpoint) -> str | None:
    """A PEFT LoRA adapter's `init_lora_weights` when it names a scheme ("pissa", "olora", "gaussian", ...),
    "false" for False (peft then leaves both halves at their modules' defaults), "adalora" / "adalora_false" for an
    AdaLoRA adapter (its own init: lora_B is no zero there), or None (the default, True; no LoRA adapter config
    beside the weights)."""
    data = peft_adapter_config(checkpoint)
    if data is None or data.get("peft_type") not in ("LORA", "ADALORA"):
        return None
    value = data.get("init_lora_weights", True)
    if data.get("peft_type") == "ADALORA":
        return "adalora" if value is not False else "adalora_false"
    if value is False:
        return "false"
    return value.lower() if isinstance(value, str) else None


def memory_by_dtype(tensors: list[TensorInfo], quantized: QuantizedSummary | None = None) -> dict[str, int]:
    """Bytes the weights need at each dtype: floating tensors cast, others kept; tied weights once.

    For a quantized checkpoint (`quantized` with known parameters) the packed and integer weights count as the
    floating parameters they dequantize to, and side tensors (scales, zero points, absmax) not at all. A GGUF's
    block types count as the floats they dequantize to, except Q8_1 and Q8_K (`gguf_format.is_unread_dtype`),
    which no loader dequantizes: kept at their stored bytes.
    """
    floating, fixed = 0, 0
    counts = quantized.counts if quantized is not None and quantized.parameters is not None else None
    for info in unique_tensors(tensors):
        if counts is not None and info.name in counts:
            stands_for = counts[info.name]
            if stands_for != info.num_params or info.dtype in FLOATING or info.name.endswith(".weight"):
                floating += stands_for  # packed, or a weight stored as integers: floating once dequantized
                continue
        # A GGUF's Q4_K: floats once dequantized. Not its Q8_1 / Q8_K, which nothing decodes (ggml has no
        # dequantizer for Q8_1, gguf-py and transformers none for either): counted as the bytes they are.
        if info.dtype in FLOATING or (is_quantized_dtype(info.dtype) and not is_unread_dtype(info.dtype)):
            floating += info.num_params
        else:
            fixed += info.nbytes
    return {name: int(fixed + floating * size) for name, size in MEMORY_DTYPES.items()}


def params_by_dtype(tensors: list[TensorInfo]) -> dict[str, int]:
    """Parameters per dtype, tied weights once (so the counts add up to `num_params`)."""
    counts: dict[str, int] = {}
    for info in unique_tensors(tensors):
        counts[info.dtype] = counts.get(info.dtype, 0) + info.num_params
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


class _Trie:
    __slots__ = ("children", "tensors", "aliases", "counts", "_signature", "_totals")

    def __init__(self, aliases: frozenset[str] = frozenset(), counts: Mapping[str, int] | None = None) -> None:
        self.children: dict[str, _Trie] = {}
        self.tensors: list[TensorInfo] = []
        self.aliases = aliases  # names of tensors counted under another name (tied weights)
        # A quantized checkpoint's parameters per tensor once unpacked (side tensors 0); None: stored values.
        self.counts = counts
        # Both are asked for at every level of the tree (each node's totals, each sibling's signature in a
        # run): computed once per node, or a many-tensor checkpoint (DeepSeek-V3's 92k) pays depth x tensors.
        self._signature: tuple[Any, ...] | None = None
        self._totals: tuple[int, int, int] | None = None

    def params(self, info: TensorInfo) -> int:
        return info.num_params if self.counts is None else self.counts.get(info.name, info.num_params)

    def signature(self) -> tuple[Any, ...]:
        """The subtree's structure: its own tensors' (leaf name, shape, dtype), then each child's, under its key.

        Relative (a child's signature does not hold its parent's path), so each node's is built once and reused
        by every ancestor; two subtrees have equal signatures exactly when their dotted names below the node,
        shapes and dtypes agree.
        """
        if self._signature is None:
            own = tuple(sorted((t.name.rsplit(".", 1)[-1], tuple(t.shape), t.dtype) for t in self.tensors))
            nested = tuple((key, child.signature()) for key, child in sorted(self.children.items()))
            self._signature = (own, nested)
        return self._signature

    def totals(self) -> tuple[int, int, int]:
        """(parameters, tensors, tied parameters) under this node."""
        if self._totals is None:
            params = sum(self.params(t) for t in self.tensors if t.name not in self.aliases)
            tied = sum(self.params(t) for t in self.tensors if t.name in self.aliases)
            count = len(self.tensors)
            for child in self.children.values():
                p, c, t = child.totals()
                params, count, tied = params + p, count + c, tied + t
            self._totals = (params, count, tied)
        return self._totals


def _to_nodes(trie: _Trie) -> list[ModuleNode]:
    keys = list(trie.children)
    numeric = sorted((k for k in keys if _DIGITS.match(k)), key=int)
    others = [k for k in keys if not _DIGITS.match(k)]
    nodes: list[ModuleNode] = []
    for key in others:
        nodes.append(_node(key, trie.children[key]))
    # Consecutive numbered children with the same structure collapse into one `{a..b}` node.
    run: list[str] = []
    for key in numeric + [None]:  # type: ignore[list-item]
        if run and (
            key is None
            or int(key) != int(run[-1]) + 1
            or trie.children[key].signature() != trie.children[run[0]].signature()
        ):
            first = trie.children[run[0]]
            node = _node(run[0], first)
            if len(run) > 1:
                # `node.name` may already continue with a collapsed single child (`0.self_attn`): keep it.
                node.name = f"{{{run[0]}..{run[-1]}}}" + node.name[len(run[0]):]
                # `{0..1}.{0..2}` (blocks of repeated layers) stands for 2 x 3 layers: repeat counts them all, so
                # that `each` is one innermost block, what the children add up to
                node.repeat = len(run) * node.repeat
                node.num_params *= len(run)
                node.num_tensors *= len(run)
                node.tied_params *= len(run)
            nodes.append(node)
            run = []
        if key is not None:
            run.append(key)
    return nodes


def _node(name: str, trie: _Trie) -> ModuleNode:
    params, count, tied = trie.totals()
    children = _to_nodes(trie)
    repeat = 1
    # A module with a single child and no tensors of its own reads better as one dotted name
    # (`encoder.layer.{0..11}`); the chain stops below a repeated block, and at a module with tensors of its own
    # (BERT's `cls.predictions.bias` beside its one child `transform`): going on would count them under the
    # child's name.
    if not trie.tensors:
        while len(children) == 1 and repeat == 1 and (children[0].children or children[0].repeat > 1):
            only = children[0]
            name, children, repeat = f"{name}.{only.name}", only.children, only.repeat
            if repeat == 1 and only.num_tensors > sum(child.num_tensors for child in children):
                break
    return ModuleNode(name=name, num_params=params, num_tensors=count, repeat=repeat, children=children,
                      tied_params=tied)


def build_module_tree(tensors: list[TensorInfo], counts: Mapping[str, int] | None = None) -> list[ModuleNode]:
    """Group tensors by their dotted names into modules, collapsing repeated blocks.

    `counts`: a quantized checkpoint's parameters per tensor once unpacked (`QuantizedSummary.counts`), so that
    a GPTQ `q_proj` counts its 4096 × 4096 weights, not the int32s that pack them plus its scales and g_idx.

    Example:
        `encoder.layer.0.*` ... `encoder.layer.11.*` with equal shapes become one node
        `encoder.layer.{0..11}` with `repeat=12`.
    """
    # One node, dict and list per module and a signature tuple per node, all alive until the tree is returned:
    # the collector walked them again and again (two thirds of the tree's time on DeepSeek-V3's 92k tensors).
    with gc_paused():
        return _module_tree(tensors, counts)


def _module_tree(tensors: list[TensorInfo], counts: Mapping[str, int] | None) -> list[ModuleNode]:
    counted = {t.name for t in unique_tensors(tensors)}
    aliases = frozenset(t.name for t in tensors if t.name not in counted)
    root = _Trie(aliases, counts)
    for info in tensors:
        node = root
        parts = info.name.split(".")[:-1]
        if len(parts) > MAX_TREE_DEPTH:
            parts = [*parts[:MAX_TREE_DEPTH - 1], ".".join(parts[MAX_TREE_DEPTH - 1:])]
        for part in parts:
            # get-then-create: setdefault would build a throwaway node for every part of every name
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Trie(aliases, counts)
            node = child
        node.tensors.append(info)
    return _to_nodes(root) + (
        [ModuleNode(name="(top level)", num_params=sum(root.params(t) for t in root.tensors if t.name not in aliases),
                    num_tensors=len(root.tensors),
                    tied_params=sum(root.params(t) for t in root.tensors if t.name in aliases))]
        if root.tensors else []
    )


def raise_no_match(name_filter: str | None, tensors: list[TensorInfo]) -> None:
    """A `--filter` that matches no tensor is a usage error: a CI gate must not pass on a typo.

    Raises:
        UsageError: always, naming the filter and a few of the names it could have matched.
    """
    from weightdoctor.errors import UsageError

    names = ", ".join(t.name for t in tensors[:3]) + (", ..." if len(tensors) > 3 else "")
    raise UsageError(f"--filter {name_filter!r} matches no tensor name"
                     + (f" (the checkpoint's {counted(len(tensors), 'tensor')} {plural(len(tensors), 'is', 'include')} "
                        f"{names})" if tensors else ""))


def inspect_checkpoint(checkpoint: Checkpoint, name_filter: str | None = None) -> InspectReport:
    """Summarise a checkpoint's structure: counts, dtypes, memory, module tree and tensor table.

    Args:
        checkpoint: an opened checkpoint.
        name_filter: a regular expression; only matching tensors go into the tensor table (the
            summary always covers the whole checkpoint).
    """
    pattern = re.compile(name_filter) if name_filter else None
    shared = checkpoint.shared_groups()
    partners = {name: [n for n in group[:MAX_SHARED_WITH + 1] if n != name][:MAX_SHARED_WITH]
                for group in shared for name in group}
    with gc_paused():  # a row and two lists per tensor, all kept: see weightdoctor.gcpause
        rows = [
            TensorRow(t.name, list(t.shape), t.dtype, t.num_params, t.nbytes, t.file, partners.get(t.name, []))
            for t in checkpoint.tensors
            if pattern is None or pattern.search(t.name)
        ]
    if pattern is not None and not rows:
        raise_no_match(name_filter, checkpoint.tensors)
    unique = unique_tensors(checkpoint.tensors)
    folder = checkpoint.path if checkpoint.path.is_dir() else checkpoint.path.parent
    # Intel Neural Compressor's weight-only save: GPTQ's tensor names, its bits in its own qconfig.json beside them.
    inc = inc_weight_config(folder) if any(t.name.endswith(".qweight") for t in unique) else None
    quantized = quantized_summary(unique, checkpoint.config, inc)
    adapter, adapter_problem = adapter_summary(checkpoint)
    native_params, params_problems = native_params_summary(checkpoint)
    from weightdoctor.load_simulation import from_pretrained_skips_warning

    # As plan-devices and diff-keys say it: the folder reads here, but from_pretrained(folder) raises.
    skipped = from_pretrained_skips_warning(checkpoint)
    from weightdoctor.load_simulation import safetensors_format_warning

    other_framework = safetensors_format_warning(checkpoint)
    from weightdoctor.config_check import config_disagreement_warnings

    disagreements = config_disagreement_warnings(checkpoint, quantized is not None, adapter is not None)
    gguf_header = combined_gguf(checkpoint.gguf_headers())
    return InspectReport(
        source=checkpoint.source,
        resolved_path=checkpoint.location,
        format=checkpoint.format,
        sharded=checkpoint.sharded,
        repo_id=checkpoint.repo_id,
        revision=checkpoint.revision,
        commit=snapshot_commit(checkpoint.path) if checkpoint.location == str(checkpoint.path) else None,
        files=[FileRow(f.relpath, f.role, f.format, f.size_bytes) for f in checkpoint.files],
        num_tensors=len(checkpoint.tensors),
        num_params=checkpoint.num_params,
        total_bytes=checkpoint.total_bytes,
        dtypes=params_by_dtype(checkpoint.tensors),
        shared_tensors=shared,
        nested_key=checkpoint.nested_key,
        other_entries=checkpoint.other_entries,
        skipped_entries=checkpoint.skipped_entries,
        metadata=checkpoint.metadata,
        config=checkpoint.config,
        config_summary=summarize_config(checkpoint.config),
        memory=memory_by_dtype(checkpoint.tensors, quantized),
        module_tree=build_module_tree(checkpoint.tensors, quantized.counts if quantized is not None
                                      and quantized.parameters is not None else None),
        tensors=rows,
        filter=name_filter,
        warnings=[*checkpoint.warnings, *([adapter_problem] if adapter_problem else []), *params_problems,
                  *filter(None, [remote_code_warning(checkpoint), timm_head_warning(checkpoint),
                                 ldm_ema_copy_warning(checkpoint),
                                 controlnet_beside_sd_warning(checkpoint), mmcv_ema_copy_warning(checkpoint),
                                 momentum_encoder_copy_warning(checkpoint),
                                 student_teacher_copy_warning(checkpoint), wrapper_prefix_warning(checkpoint),
                                 own_config_warning(checkpoint),
                                 fsdp_flat_param_warning(checkpoint), fairscale_flat_param_warning(checkpoint),
                                 reparametrized_warning(checkpoint),
                                 gpt_fast_int4_warning(checkpoint)]),
                  *([f"{skipped}; from_pretrained loads them once saved under its names (save_pretrained)"] if skipped
                    else []), *([other_framework] if other_framework else []),
                  *(quantized.warnings if quantized is not None else []),
                  *filter(None, [gguf_config_loads_dense(checkpoint.config)]), *disagreements,
                  *(gguf_metadata_disagreements(gguf_header) if gguf_header is not None else [])],
        security=checkpoint.security,
        quantized=quantized,
        adapter=adapter,
        native_params=native_params,
        gguf=gguf_summary(gguf_header) if gguf_header is not None else None,
    )
