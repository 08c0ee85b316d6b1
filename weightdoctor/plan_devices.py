"""Device planning: where every module of a model lands for given GPU/CPU/disk budgets, before loading it.

The placement is computed by the library that would really place the model: transformers' own
`_get_device_map` (the function `from_pretrained(device_map=..., max_memory=...)` calls) for transformers
models built from their config, accelerate's `get_balanced_memory` + `infer_auto_device_map` (as
`load_checkpoint_and_dispatch` calls them) for a module tree rebuilt from a checkpoint's tensor names.
This module adds only what those libraries do not say: totals, a verdict, the smallest change that
fits, and why a device holds less than its budget.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import functools
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightdoctor.errors import SourceNotFound, UsageError, WeightDoctorError, clip_middle, clip_words
from weightdoctor.findings import Finding
from weightdoctor.jsontext import MAX_DEPTH, parse_json
from weightdoctor.meta_model import DTYPE_ALIASES, auto_dtype_field, unbuildable_dtype_field
from weightdoctor.paths import expand_user
from weightdoctor.quantized import config_quantization_settings
from weightdoctor.wording import counted, plural

if TYPE_CHECKING:
    import torch

    from weightdoctor.checkpoint import Checkpoint, TensorInfo

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
# --dtype spelling -> (torch dtype name of the parameters, bytes per quantized Linear weight element or None)
DTYPES: dict[str, tuple[str, float | None]] = {
    "fp64": ("float64", None),
    "fp32": ("float32", None),
    "fp16": ("float16", None),
    "bf16": ("bfloat16", None),
    # bitsandbytes' int8 / int4: the unquantized rest is built at from_pretrained(dtype="auto")'s dtype
    # (`quantized_rest_dtype`: a float32 checkpoint's at float32); float16 only where nothing says one.
    "int8": ("float16", 1.0),
    "int4": ("float16", 0.5),
    # A checkpoint of transformers' fine-grained FP8 (quant_method "fp8": DeepSeek-V3, Qwen3-FP8) as its quantizer
    # keeps it on a GPU of compute capability >= 8.9: Linear weights in float8 beside their block scales, the rest
    # at the config's dtype (bf16 where it names none). Sized by the quantizer's own modules (`_keep_fp8`).
    "fp8": ("bfloat16", None),
}
FLOAT_DTYPES = ("fp64", "fp32", "fp16", "bf16")
# The order in which a lower dtype is tried as "the smallest change that fits".
DTYPE_LADDER = ("fp64", "fp32", "bf16", "fp16", "int8", "int4")
VERDICTS = ("fits-on-gpus", "fits-on-cpu", "needs-cpu-offload", "needs-disk-offload", "does-not-fit")
FAIL_ON = ("offload", "no-fit")
# The severity each verdict weighs against `--fail-on info|warn|error`, the levels every command takes (None: nothing
# to fail on). A plan on the CPU alone is what `--cpu` without `--gpu` asks for: said, but no warning.
VERDICT_SEVERITY: dict[str, str | None] = {
    "fits-on-gpus": None, "fits-on-cpu": "info", "needs-cpu-offload": "warn", "needs-disk-offload": "warn",
    "does-not-fit": "error"}
# Every `--fail-on` plan-devices takes: the shared severities, then its own verdict words (kept as they were).
FAIL_ON_CHOICES = ("info", "warn", "error", *FAIL_ON)
MAX_EXTRA_GPUS = 64


# ----------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ModuleRange:
    """Consecutive modules of the map that share a device, e.g. `model.layers.0–39`."""

    label: str
    device: str
    modules: list[str]
    bytes: int
    # Tied parameters of these modules that are one tensor with parameters elsewhere, counted under those names (a
    # tied lm_head's 0 B): the names they share storage with (`tied_elsewhere`).
    tied_to: list[str] = field(default_factory=list)
    # Of those, the bytes dispatch_model copies onto this range's GPU for good, the tensor being loaded on another
    # device (GPT-2's lm_head on cuda:1 with wte on cuda:0): not in `bytes`, which counts the tensor once, as
    # transformers' compute_module_sizes does (`tied_gpu_copies`). 0 off the GPUs and where the tensor is loaded here.
    tied_copy_bytes: int = 0


@dataclass(frozen=True)
class HeldBack:
    """One reason, in bytes, why a device holds less than its capacity."""

    # "reserve", "unset-max-memory", "balanced-cap", "quantizer-headroom", "largest-layer", "next-module-too-big",
    # "unused"
    reason: str
    bytes: int
    detail: str


@dataclass(frozen=True)
class DeviceUse:
    """One device of the plan.

    `capacity_bytes` is what the user gave (None for disk: unlimited); `budget_bytes` is the cap the planner
    really worked with (after --reserve, balancing and quantizer headroom); `used_bytes` is what landed there.
    """

    device: str  # "cuda:0", "cpu", "disk"
    key: int | str  # the value the device map uses for it: 0, "cpu", "disk"
    capacity_bytes: int | None
    budget_bytes: int | None
    used_bytes: int
    ranges: list[ModuleRange]
    held_back: list[HeldBack] = field(default_factory=list)


@dataclass(frozen=True)
class Suggestion:
    """A change that makes the model fit on the GPUs, re-planned with the same planner."""

    change: str  # "strategy", "dtype", "gpus", "gpu-size", "cpu" or "disk"
    description: str
    dtype: str
    gpus: list[int]
    verdict: str


@dataclass(frozen=True)
class KVCacheEstimate:
    batch: int
    # None where no --seq-len was given and none is needed: no layer caches anything per token (Mamba, Mamba-2)
    seq_len: int | None
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str
    bytes_per_token: int
    total_bytes: int
    gpu_free_bytes: int
    fits_on_gpus: bool
    note: str | None = None
    # Conv and recurrent (SSM, linear-attention) states of the layers that keep them, for the whole batch: fixed
    # in size whatever the sequence length. 0 without such layers; None where they could not be sized.
    state_bytes: int | None = 0
    # The keys and values of each decoder layer in order, where every layer caches them (none reuses another's or
    # keeps only a recurrent state); () otherwise. Not in --json: `_kv_crowded_gpu` counts each GPU's share with it.
    _layer_bytes: tuple[int, ...] = ()
    # Multi-head latent attention: each layer caches one latent (and rotary key) a token, not keys and values; its
    # per-token figure is never said as '2 (keys and values) x ...'. Not in --json.
    _latent: bool = False
    # An encoder-decoder's cross-attention cache (`EncoderDecoderCache.cross_attention_cache`): the keys and values of
    # the encoder's output, per decoder layer, for `encoder_seq_len` encoder positions (Whisper's 1,500 frames, a
    # vision encoder's for its image_size, else as many as `seq_len`), the batch included; apart from `total_bytes`
    # (the self-attention), as `state_bytes` is, and counted in the fit. 0 and None for a decoder-only model.
    cross_attention_bytes: int = 0
    encoder_seq_len: int | None = None

    @property
    def held_bytes(self) -> int:
        """All the cache holds: self-attention keys and values, cross-attention ones, recurrent states."""
        return self.total_bytes + self.cross_attention_bytes + (self.state_bytes or 0)


@dataclass(frozen=True)
class TrainingEstimate:
    """Adam training memory as `accelerate estimate-memory` computes it (`estimate_training_usage`)."""

    mixed_precision: str
    fp32_model_bytes: int
    model_bytes: int | None
    gradients_bytes: int | None
    optimizer_bytes: int | None
    step_bytes: int | None
    accelerate_estimate_bytes: int | None  # the "Training using Adam" column: the largest of the four
    total_bytes: int | None  # weights + gradients + two moments together
    note: str | None = None


@dataclass(frozen=True)
class Offload:
    """Where the map offloads, and what accelerate's hooks stream per step. Every figure but cpu_bytes / disk_bytes
    is None where from_pretrained cannot run the map (`map_cannot_run`): no traffic happens."""

    cpu_bytes: int
    disk_bytes: int
    bytes_per_token: int | None  # offloaded weights streamed to the compute device for each generated token
    # An encoder-decoder that generates (T5, BART, Whisper): the offloaded weights streamed once per input, not per
    # token (its encoder's, and its decoder's cross-attention key / value projections, whose outputs the cache
    # keeps: `per_input_offloaded_bytes`); `bytes_per_token` leaves them out. By device.
    per_input_cpu_bytes: int | None = 0
    per_input_disk_bytes: int | None = 0
    # The buffers of the offloaded modules (BART's final_logits_bias, rotary inv_freq, BERT's position_ids):
    # accelerate's hooks (offload_buffers=False, from_pretrained's default) move them once to the execution device
    # (the first GPU) when the model is dispatched and load none of them per step, so the map counts them on CPU /
    # disk while they sit on that GPU; in cpu_bytes / disk_bytes, not in bytes_per_token nor the per-input bytes.
    buffers_on_gpu_bytes: int | None = 0
    # A tied tensor held by two offloaded modules (GPT-2's wte and lm_head) is loaded by each one's hook, each call,
    # while the map counts it once: the loads beyond that copy, per token and per input (`tied_streaming`);
    # in bytes_per_token / per_input_cpu_bytes, not in cpu_bytes / disk_bytes.
    tied_reloaded_per_token_bytes: int | None = 0
    tied_reloaded_per_input_bytes: int | None = 0
    # A tied tensor the map counts in CPU RAM whose twin is placed on the main GPU: the hooks use the GPU's copy and
    # stream none (`tied_streaming`); in cpu_bytes, not in bytes_per_token nor per_input_cpu_bytes.
    tied_on_gpu_bytes: int | None = 0
    # Of bytes_per_token, the tied tensors an offloaded module's hook copies from a twin placed on another GPU than
    # the main one (GPT-2's wte on cuda:1, lm_head offloaded): from_pretrained loads the tensor there, and the
    # offload serves that GPU's tensor, copied GPU to GPU at every call, not from CPU RAM (`tied_streaming`).
    tied_from_gpu_per_token_bytes: int | None = 0
    # Of bytes_per_token, the loads beyond one per step of offloaded modules their layer calls more than once a step
    # (ProphetNet's n-gram self-attention's out_proj, for its main and predicting streams): a hook loads its module's
    # weights at each call (`repeated_call_bytes`).
    repeated_calls_per_token_bytes: int | None = 0


@dataclass(frozen=True)
class ModelPartPlan:
    """The source is one of `parts` tensor-parallel parts of one model (fairseq's `model_part-R.pt`, its siblings
    beside it), `rank` its rank: the plan is that part's alone, what each GPU of fairseq's --model-parallel-size
    `parts` loads. `merged_params`: the whole model's parameters (each split tensor once per part);
    `merged_weights_bytes`: theirs at this plan's bytes per parameter."""

    file: str
    rank: int
    parts: int
    part_params: int
    merged_params: int
    merged_weights_bytes: int


def model_part_plan(report: PlanReport, part: Any) -> ModelPartPlan:
    """`part` (a model_parts.PartOfModel) as the plan `report` of that part says it: the merged model's weights at
    the plan's bytes per parameter."""
    layout = part.layout
    per_param = report.weights_bytes / report.num_params if report.num_params else 0.0
    return ModelPartPlan(part.file, part.rank, part.parts, layout.part_params, layout.merged_params,
                         round(layout.merged_params * per_param))


@dataclass
class PlanReport:
    """Everything `plan-devices` computed. JSON keys are the field names (see docs/commands/plan-devices.md)."""

    source: str
    model_class: str
    built_from: str  # "config" or "tensors"
    placement: str  # which library function computed the map
    strategy: str
    dtype: str
    num_params: int
    weights_bytes: int  # parameters at the chosen dtype (tied parameters once)
    buffers_bytes: int
    no_split: list[str]
    reserve_bytes: int
    device_map: dict[str, int | str]
    devices: list[DeviceUse]
    verdict: str
    offload: Offload
    suggestions: list[Suggestion]
    kv_cache: KVCacheEstimate | None = None
    training: TrainingEstimate | None = None
    manual_map: bool = False
    disk_allowed: bool = False
    findings: list[Finding] = field(default_factory=list)
    local: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    # Tensors no map entry covers (a split module's own non-persistent buffer) -> where from_pretrained puts them.
    unplaced: dict[str, int | str] = field(default_factory=dict)
    # The source is one tensor-parallel part of a model: the plan is that part's (see ModelPartPlan).
    model_part: ModelPartPlan | None = None


@dataclass(frozen=True)
class LocalDevices:
    """The devices of this machine as `--local` reads them."""

    gpu_free_bytes: list[int]
    gpu_names: list[str]
    cpu_available_bytes: int
    bf16_supported: bool
    dtype: str  # what a careful user would pick here
    # Whether transformers' FP8 quantizer keeps FP8 weights here: compute capability >= 8.9 of the current GPU,
    # the device its environment check asks (below, or without a GPU, it dequantizes them to bf16).
    keeps_fp8: bool = False


@dataclass
class PlannedModel:
    """A model with shapes and dtypes on the meta device, ready for the planner."""

    model: torch.nn.Module
    built_from: str
    model_class: str
    dtype: str  # --dtype spelling
    config: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)
    # A checkpoint quantized by its config (GPTQ, AWQ, compressed-tensors, ...), planned at its own int4/int8: the
    # bytes the checkpoint stores for each Linear weight's module (packed weights, scales, zero points, group
    # indexes), which the quantizer's layers hold once loaded; and whether that quantizer keeps 10% of every
    # budget free (`adjust_max_memory`: bitsandbytes, bitnet, quanto and torchao do, GPTQ, AWQ and the rest not).
    stored_bytes: dict[str, int] = field(default_factory=dict, repr=False)
    quantizer_headroom: bool = True
    # The config's quantizer's own layers are in `model`, swapped in as from_pretrained swaps them (BitNet's
    # BitLinear): their tensors count at their own sizes, and the quantizer keeps 10% of every budget.
    quantizer_swapped: bool = False
    # What the report calls `dtype` where the --dtype spelling planned is not what the weights are: an FP8
    # checkpoint sized as "int8" (one byte a weight) is labelled float8_e4m3fn (`quantized_float_label`).
    label: str | None = None
    # Where the dtype `--dtype int8` / `int4` builds the unquantized rest at comes from (`quantized_rest_dtype` of the
    # checkpoint): asked only when needed (the int8 / int4 rungs of the dtype ladder), since it may read the first
    # weight file. None: DTYPES' float16.
    rest_dtype_source: Callable[[], str] | None = field(default=None, repr=False)
    # The .gguf file's name where the model is one, planned as from_pretrained(folder, gguf_file=...) loads it: its
    # GGUF quantizer refuses a device map naming disk (`gguf_disk_refusal`).
    gguf_file: str | None = None

    @property
    def is_transformers(self) -> bool:
        return self.built_from == "config"

    @property
    def quantized_rest(self) -> str:
        """The torch dtype name an int8 / int4 plan of this model holds its unquantized rest in."""
        if "quantized-rest" not in self._cache:
            self._cache["quantized-rest"] = (self.rest_dtype_source() if self.rest_dtype_source is not None
                                             else DTYPES["int8"][0])
        return self._cache["quantized-rest"]


# ----------------------------------------------------------------------------------------------- inputs


def _sparsity_only(config: dict[str, Any] | None) -> str | None:
    """A compressed-tensors config's sparsity format ("sparse-24-bitmask") when it quantizes nothing (no config
    group with weights); else None."""
    quantization = config_quantization_settings(config)
    if quantization is None or quantization.get("quant_method") != "compressed-tensors":
        return None
    sparsity = quantization.get("sparsity_config")
    groups = quantization.get("config_groups")
    if not isinstance(sparsity, dict) or (isinstance(groups, dict) and any(
            isinstance(group, dict) and group.get("weights") for group in groups.values())):
        return None
    return str(sparsity.get("format") or "sparse")


def _weights_not_quantized(config: dict[str, Any] | None) -> str | None:
    """What a compressed-tensors config quantizes when it is not the weights ("the KV cache", "activations"): an
    FP8 KV-cache scheme alone (llm-compressor's `kv_cache_scheme`, `config_groups` empty) or groups of input
    activations without `weights`; else None."""
    quantization = config_quantization_settings(config)
    if quantization is None or quantization.get("quant_method") != "compressed-tensors":
        return None
    groups = quantization.get("config_groups")
    groups = [group for group in groups.values() if isinstance(group, dict)] if isinstance(groups, dict) else []
    if any(isinstance(group.get("weights"), dict) for group in groups):
        return None
    what = (["the KV cache"] if isinstance(quantization.get("kv_cache_scheme"), dict) else []) + (
        ["activations"] if any(isinstance(group.get(key), dict) for group in groups
                               for key in ("input_activations", "output_activations")) else [])
    return " and ".join(what) or None


def normalize_dtype(text: str) -> str:
    """`"bfloat16"` or `"bf16"` -> `"bf16"`.

    Raises:
        UsageError: not one of fp64, fp32, fp16, bf16, int8, int4, fp8.
    """
    typed = text.lower()
    torch_name = typed.removeprefix("torch.")
    if typed != torch_name and DTYPE_ALIASES.get(torch_name, torch_name) in ("fp64", "fp32", "fp16", "bf16"):
        # `torch.bfloat16`, as from_pretrained's torch_dtype= is written and check-dtype --target takes it; not
        # `torch.int8`, which is no bitsandbytes load.
        typed = torch_name
    key = DTYPE_ALIASES.get(typed, typed)
    if key not in DTYPES:
        raise UsageError(f"unknown dtype {text!r}: expected one of {', '.join(DTYPES)}")
    return key


def device_name(key: int | str) -> str:
    """The name people read for a device-map value: 0 -> "cuda:0", "cpu" -> "cpu"."""
    return f"cuda:{key}" if isinstance(key, int) else str(key)


def parse_device_value(value: Any) -> int | str:
    """A device as a hand-written map may spell it (0, "0", "cuda:0", "cpu", "disk") -> 0 / "cpu" / "disk".

    Raises:
        UsageError: anything else.
    """
    if isinstance(value, bool):
        raise UsageError(f"device {value!r} is not a device")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("cpu", "disk"):
            return text
        match = re.fullmatch(r"(?:cuda:)?(\d+)", text)
        if match:
            return int(match.group(1))
        if text == "cuda":
            return 0
    raise UsageError(f"device {value!r} is not a device: expected a GPU index, cuda:N, cpu or disk")


def build_max_memory(gpus: list[int], cpu: int | None, reserve: int = 0) -> dict[int | str, int]:
    """The `max_memory` dict handed to the planner: GPU budgets minus `reserve`, then the CPU.

    Without a CPU budget the CPU is left out, exactly as `from_pretrained` treats such a `max_memory`:
    whatever does not fit on the GPUs goes to disk.
    """
    memory: dict[int | str, int] = {i: max(0, size - reserve) for i, size in enumerate(gpus)}
    if cpu is not None:
        memory["cpu"] = cpu
    return memory


# The share of the memory it reads that from_pretrained plans on when it is given no max_memory: transformers'
# get_max_memory keeps 10% of the host RAM back (for the memory spikes of weight conversions), and its
# get_balanced_memory 10% of a lone GPU (for the buffers), except with device_map="sequential".
UNSET_MAX_MEMORY_SHARE = 0.9


def unset_max_memory_headroom(max_memory: dict[int | str, int], strategy: str) -> dict[int | str, int]:
    """The bytes `from_pretrained(device_map=strategy)` without `max_memory` keeps back of what it reads.

    `--local` reads the machine as accelerate's `get_max_memory()` does; from_pretrained then plans on 90% of
    the RAM and, when exactly one GPU has memory and the strategy balances, 90% of that GPU (the first GPU
    key, as transformers scales it). Truncated to whole bytes: the planner compares whole byte counts with
    these caps, so the floor places exactly as transformers' float does.

    Example:
        >>> unset_max_memory_headroom({0: 1000, "cpu": 5000}, "auto")
        {'cpu': 500, 0: 100}
    """
    held: dict[int | str, int] = {}
    if "cpu" in max_memory:
        held["cpu"] = max_memory["cpu"] - int(max_memory["cpu"] * UNSET_MAX_MEMORY_SHARE)
    gpus = [key for key in max_memory if isinstance(key, int)]
    if strategy != "sequential" and sum(1 for key in gpus if max_memory[key] > 0) == 1:
        held[gpus[0]] = max_memory[gpus[0]] - int(max_memory[gpus[0]] * UNSET_MAX_MEMORY_SHARE)
    return {key: amount for key, amount in held.items() if amount > 0}


def read_local_devices() -> LocalDevices:
    """Free memory of each visible GPU (`torch.cuda.mem_get_info`) and available host RAM (psutil)."""
    import psutil
    import torch

    free: list[int] = []
    names: list[str] = []
    bf16 = keeps_fp8 = False
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free.append(int(torch.cuda.mem_get_info(index)[0]))
            names.append(torch.cuda.get_device_name(index))
        bf16 = bool(torch.cuda.is_bf16_supported())
        keeps_fp8 = tuple(torch.cuda.get_device_capability()) >= (8, 9)
    dtype = ("bf16" if bf16 else "fp16") if free else "fp32"
    return LocalDevices(free, names, int(psutil.virtual_memory().available), bf16, dtype, keeps_fp8)


def local_dtype(local: LocalDevices, config: dict[str, Any] | None) -> str:
    """The dtype `--local` plans at: fp8 for a fine-grained FP8 checkpoint on a GPU where transformers keeps it,
    else what a careful user would pick on these devices (`local.dtype`)."""
    return "fp8" if local.keeps_fp8 and _is_fine_grained_fp8(config) else local.dtype


# ----------------------------------------------------------------------------------------------- the model


def _checkpoint_float_dtype(checkpoint: Checkpoint) -> str | None:
    for info in checkpoint.tensors:
        if info.dtype in ("float32", "float16", "bfloat16", "float64"):
            return info.dtype
    return None


def _config_dtype(config: dict[str, Any]) -> str | None:
    value = config.get("dtype") or config.get("torch_dtype")
    if isinstance(value, dict):
        # A dtype per sub-config: from_pretrained(dtype="auto") builds the model in its "" entry (transformers 5.25
        # `_get_dtype`), else in torch's default, float32.
        value = value.get("", "float32")
    if isinstance(value, str) and value in DTYPE_ALIASES:
        return value
    text = config.get("text_config")
    if isinstance(text, dict):
        return _config_dtype(text)
    return None


def quantized_dtype(config: dict[str, Any] | None) -> tuple[str, str] | None:
    """("int4" or "int8", the quantizer in words) when the config's `quantization_config` stores weights in 4 or
    8 bits (GPTQ, AWQ, bitsandbytes, compressed-tensors): what `from_pretrained` keeps them in; else None (also
    where it dequantizes them at load: `_loads_dense`)."""
    from weightdoctor.quantized import quantization_of

    found = quantization_of(config)
    if found is None or _loads_dense(config):  # dequantized at load: the floating dtype, as a dense model
        return None
    method, bits = found
    if method == "torchao" and bits is None:
        # TorchAoConfig names no bits: its quantizer sizes each weight it quantizes at half a byte for a 4-bit
        # torchao config, one byte for any other (`torchao_element_size`). It was planned dense at the floating
        # dtype, "an upper bound" 2x / 4x the Linear weights from_pretrained places.
        size = torchao_element_size(config)
        return None if size is None else ("int4" if size == 0.5 else "int8", method)
    if method == "hqq":
        # transformers' HQQ quantizer keeps nn.Linear until each weight loads (`_hqq_dense_warning`): its planner
        # counts them at the floating dtype, and the map from_pretrained makes is that one.
        return None
    if bits == 4:
        return "int4", method
    if bits == 8 and "fp8" not in method:
        return "int8", method
    return None


def torchao_config_name(config: Mapping[str, Any] | None) -> str | None:
    """The torchao config class a TorchAoConfig quantizes with, as transformers 5.25 saves it in config.json
    (`quant_type: {"default": {"_type": "Int4WeightOnlyConfig", ...}}`), else None (no torchao config, or the string
    quant_type older transformers saved, which 5.25 refuses to load).

    Example:
        >>> torchao_config_name({"quantization_config": {"quant_method": "torchao",
        ...                      "quant_type": {"default": {"_type": "Int8WeightOnlyConfig", "_data": {}}}}})
        'Int8WeightOnlyConfig'
    """
    settings = config_quantization_settings(config)
    if settings is None or settings.get("quant_method") != "torchao":
        return None
    quant_type = settings.get("quant_type")
    default = quant_type.get("default") if isinstance(quant_type, Mapping) else None
    name = default.get("_type") if isinstance(default, Mapping) else None
    return name if isinstance(name, str) and name else None


def torchao_element_size(config: Mapping[str, Any] | None) -> float | None:
    """Bytes a weight as transformers' torchao quantizer sizes the weights it quantizes while from_pretrained makes
    its map (`TorchAoHfQuantizer.quantized_element_size`): 0.5 where the config class's name gives 4 bits before
    "weight" (`_fuzzy_match_size`: Int4WeightOnlyConfig), 1 for every other (Int8WeightOnlyConfig,
    Float8WeightOnlyConfig, Float8DynamicActivationFloat8WeightConfig, FqnToConfig); its scales and zero points are
    not counted. None where the config is not a torchao one `torchao_config_name` reads.

    Example:
        >>> torchao_element_size({"quantization_config": {"quant_method": "torchao",
        ...                       "quant_type": {"default": {"_type": "Int4WeightOnlyConfig"}}}})
        0.5
    """
    name = torchao_config_name(config)
    if name is None:
        return None
    match = re.search(r"(\d)weight", name.lower())
    return 0.5 if match is not None and match.group(1) == "4" else 1.0


def torchao_fqn_patterns(config: Mapping[str, Any] | None) -> list[str] | None:
    """The keys of a torchao FqnToConfig (ModuleFqnToConfig, its old name) as transformers 5.25 saves it in
    config.json (`quant_type.default._data.fqn_to_config`, else `module_fqn_to_config`): module or parameter names,
    `re:` patterns and `_default`; None where the config is no FqnToConfig.

    Example:
        >>> torchao_fqn_patterns({"quantization_config": {"quant_method": "torchao", "quant_type": {"default": {
        ...     "_type": "FqnToConfig", "_data": {"fqn_to_config": {"re:.*experts": {"_type": "X"}}}}}}})
        ['re:.*experts']
    """
    if torchao_config_name(config) not in ("FqnToConfig", "ModuleFqnToConfig"):
        return None
    default = (config_quantization_settings(config) or {})["quant_type"]["default"]
    data = default.get("_data")
    data = data if isinstance(data, Mapping) else {}
    for key in ("fqn_to_config", "module_fqn_to_config"):
        patterns = data.get(key)
        if isinstance(patterns, Mapping) and patterns:
            return [str(pattern) for pattern in patterns]
    return []


def _fqn_matches(name: str, patterns: list[str]) -> bool:
    """torchao's `fqn_matches_fqn_config`: `name` is a key of the FqnToConfig, or fully matches one of its `re:`
    patterns (a pattern re cannot compile matches nothing here, where torchao would raise; one that may backtrack
    for ever, `_match_cost`, is not run)."""
    from weightdoctor.quantized import _match_cost

    if name in patterns:
        return True
    for pattern in patterns:
        if pattern.startswith("re:"):
            try:
                if _match_cost(f"(?:{pattern[3:]})\\Z") is not None and re.fullmatch(pattern[3:], name):
                    return True
            except re.error:
                continue
    return False


def torchao_quantized_weights(model: torch.nn.Module, config: Mapping[str, Any] | None) -> set[str]:
    """Names of the parameters (and buffers) transformers' torchao quantizer counts at its element size, chosen as
    its `param_needs_quantization` chooses them among all `compute_module_sizes` counts: those whose name
    `should_convert_module` accepts against `get_modules_to_not_convert` (the config's `modules_to_not_convert`,
    else the output embeddings and tied modules; `_keep_in_fp32_modules`; the input and output embeddings taken
    back out of it with `include_input_output_embeddings`), and then the `weight` of every nn.Linear (subclasses
    too, not GPT-2's Conv1D) and nn.Embedding where `include_input_output_embeddings` is set; with an FqnToConfig
    also every tensor whose own name or whose module's name its keys name (fused MoE experts' 3-D `gate_up_proj`,
    a named module's bias), and every tensor of a quantizable module where it holds `_default`.
    """
    import torch
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    settings = config_quantization_settings(config) or {}
    skip = settings.get("modules_to_not_convert")
    skip = [name for name in skip if isinstance(name, str)] if isinstance(skip, list) else None
    keep_fp32 = getattr(model, "_keep_in_fp32_modules", None)
    not_convert = HfQuantizer.get_modules_to_not_convert(model, skip, list(keep_fp32) if keep_fp32 else None)
    quantizable: tuple[type, ...] = (torch.nn.Linear,)
    if settings.get("include_input_output_embeddings"):
        quantizable = (torch.nn.Linear, torch.nn.Embedding)
        embeddings = [getter() for getter in (getattr(model, "get_input_embeddings", None),
                                              getattr(model, "get_output_embeddings", None)) if getter is not None]
        names = [name for name, module in model.named_modules() if any(module is e for e in embeddings)]
        not_convert = [name for name in not_convert if name not in names]
    patterns = torchao_fqn_patterns(config)
    chosen: set[str] = set()
    for module_name, module in model.named_modules():
        tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for leaf, _ in tensors:
            name = f"{module_name}.{leaf}" if module_name else leaf
            if not should_convert_module(name, not_convert):
                continue
            is_quantizable = bool(module_name) and isinstance(module, quantizable)
            named = patterns is not None and (_fqn_matches(module_name, patterns) or _fqn_matches(name, patterns)
                                              or ("_default" in patterns and is_quantizable))
            if named or (is_quantizable and leaf == "weight"):
                chosen.add(name)
    return chosen


def quantized_float_label(config: dict[str, Any] | None) -> str | None:
    """The float dtype an 8- or 4-bit `quantization_config` stores its weights in when they are floats, else None.

    `quantized_dtype` plans them as "int8" / "int4" (one byte, half a byte a weight: right for the sizes), but an
    FP8 checkpoint is not int8: compressed-tensors' float-quantized groups (`"type": "float"`, num_bits 8:
    llm-compressor's FP8 schemes, stored in float8_e4m3fn), optimum-quanto's `weights: "float8"` (its qfloat8,
    which is qfloat8_e4m3fn) and ModelOpt's FP8 exports. Nor is NVFP4 int4: its weights are 4-bit floats (e2m1,
    two a byte, with FP8 block scales), torch's float4_e2m1fn_x2: ModelOpt's `quant_algo: NVFP4` and
    compressed-tensors' nvfp4 scheme (`"type": "float"`, num_bits 4). The label names what they are; the plan is
    unchanged.

    Example:
        >>> quantized_float_label({"quantization_config": {"quant_method": "quanto", "weights": "float8"}})
        'float8_e4m3fn'
        >>> quantized_float_label({"quantization_config": {"quant_method": "modelopt", "quant_algo": "NVFP4"}})
        'float4_e2m1fn_x2'
    """
    quantized = quantized_dtype(config)
    if quantized is None or quantized[0] not in ("int8", "int4"):
        return None
    bits, label = (8, "float8_e4m3fn") if quantized[0] == "int8" else (4, "float4_e2m1fn_x2")
    settings = config_quantization_settings(config) or {}
    method = settings.get("quant_method")
    if method in ("quanto", "eetq"):
        return label if bits == 8 and settings.get("weights") == "float8" else None
    if method == "modelopt":
        return label if f"FP{bits}" in str(settings.get("quant_algo") or "").upper() else None
    if method == "torchao":  # Float8WeightOnlyConfig, Float8DynamicActivationFloat8WeightConfig: float8 weights
        return label if bits == 8 and (torchao_config_name(config) or "").startswith("Float8") else None
    groups = settings.get("config_groups")
    weights = [group.get("weights") for group in groups.values() if isinstance(group, dict)] \
        if isinstance(groups, dict) else []
    weights = [w for w in weights if isinstance(w, dict) and w.get("num_bits") is not None]
    # Every group FP8 (or every one FP4): a mixed recipe (FP8 attention, NVFP4 or int4 MLP) is no one dtype to name.
    if weights and all(w.get("type") == "float" and w.get("num_bits") == bits for w in weights):
        return label
    return None


def default_dtype(checkpoint: Checkpoint) -> str:
    """The dtype `from_pretrained(dtype="auto")` picks; for a checkpoint quantized to 4 or 8 bits (its config's
    `quantization_config`), int4 / int8.

    transformers' own resolver decides (`check_dtype.resolve_auto_dtype`): the config's dtype, else the index's,
    else the first floating tensor in the order transformers reads the first weight file (not the header's
    order: a bf16 `lm_head.weight` read before an fp32 norm makes the model bf16). Where it cannot answer (a
    config without weights, a dtype no model can be built in) the config's dtype, else the checkpoint's first
    floating tensor, else fp32.
    """
    from weightdoctor.check_dtype import resolve_auto_dtype

    quantized = quantized_dtype(checkpoint.config)
    if quantized is not None:
        return quantized[0]
    resolved = resolve_auto_dtype(checkpoint).dtype
    if resolved in ("float64", "float32", "float16", "bfloat16"):
        return DTYPE_ALIASES[resolved]
    chosen = _config_dtype(checkpoint.config or {}) or _checkpoint_float_dtype(checkpoint) or "float32"
    return DTYPE_ALIASES.get(chosen, "fp32")


def quantized_rest_dtype(checkpoint: Checkpoint) -> str:
    """The torch dtype name an int4 / int8 plan of `checkpoint` builds its unquantized rest (embeddings, norms,
    lm_head, biases) at: what from_pretrained(dtype="auto") builds the model at, which no quantizer changes.

    transformers 5.25's bitsandbytes quantizers no longer force float16 (they inherit HfQuantizer.update_dtype,
    which returns the dtype it is given), and from_pretrained defaults to dtype="auto": `from_pretrained(path,
    quantization_config=BitsAndBytesConfig(load_in_4bit=True))` of a float32 checkpoint keeps the rest at float32,
    of a bf16 one at bfloat16. A checkpoint its config quantizes keeps `_quantized_rest_dtype`'s rule; any other at
    `default_dtype` (the config's dtype, else the weights'; float32, torch's default, where nothing says one).

    Example:
        >>> quantized_rest_dtype(float32_llama)  # config.json torch_dtype float32  # doctest: +SKIP
        'float32'
    """
    if quantized_dtype(checkpoint.config) is not None:
        return _quantized_rest_dtype(checkpoint)
    chosen = default_dtype(checkpoint)
    return DTYPES[chosen][0] if chosen in FLOAT_DTYPES else "float32"


def _quantized_rest_dtype(checkpoint: Checkpoint) -> str:
    """The torch dtype name a checkpoint its config quantizes to int4 / int8 (GPTQ, AWQ, bitsandbytes, torchao, ...)
    is built at, which is what its unquantized rest (embeddings, norms, the modules the quantizer leaves, biases) is
    held in: from_pretrained's dtype="auto" (the config's dtype, else the weights', `resolve_auto_dtype`) as those
    quantizers' `update_dtype` leave it (GPTQ, EETQ, bitsandbytes, torchao and compressed-tensors take any; AWQ
    turns bfloat16 into float16 on a GPU: the same bytes). float16, as before, where no float dtype is found.
    """
    from weightdoctor.check_dtype import resolve_auto_dtype

    resolved = resolve_auto_dtype(checkpoint).dtype
    if resolved in ("float64", "float32", "float16", "bfloat16"):
        return resolved
    said = DTYPE_ALIASES.get(_config_dtype(checkpoint.config or {}) or "", "")
    return DTYPES[said][0] if said in FLOAT_DTYPES else "float16"


def unbuildable_dtype_warning(config: dict[str, Any], dtype: str, weights_read: bool = True,
                              stored: str | None = None) -> str | None:
    """The warning for a config.json whose top-level dtype is no dtype a model can be built in
    (`unbuildable_dtype_field`), else None: planned at `dtype`, as from_pretrained given that dtype loads it.

    Example:
        >>> unbuildable_dtype_warning({"torch_dtype": "float128"}, "bf16")
        'config.json sets "torch_dtype": "float128", which is no dtype transformers ... builds a model in: ...'
    """
    field = unbuildable_dtype_field(config)
    if field is None:
        return None
    import json

    from weightdoctor.errors import clip_middle
    from weightdoctor.quantized import transformers_label

    shown = clip_middle(json.dumps(config[field]), 200)
    floating = DTYPES[dtype][0] if dtype in FLOAT_DTYPES else stored or DTYPES[dtype][0]
    planned, value = ((dtype, f'"{floating}"') if weights_read else
                      (f"{dtype} (no weights were read; --dtype plans another)", "the weights' dtype"))
    given = f" (dtype=torch.{floating} replaces the field)" if weights_read else ", which replaces the field"
    return (f'config.json sets "{field}": {shown}, which is no dtype {transformers_label()} builds a model in: '
            f'from_pretrained(dtype="auto") fails on it unless it is given a real dtype{given}; planned at '
            f'{planned}; set "{field}" to {value} in config.json (or remove it) to load it')


def _is_sub_config(key: Any, value: Any) -> bool:
    """Whether `config[key]` is one transformers builds as a config of its own: a nested dict with a `model_type`
    (what `to_dict` saves for one), or a `*_config` one without (a hand-written llava `text_config`, which
    LlavaConfig builds as a llama config all the same; Qwen2-VL's `vision_config` saves none)."""
    return isinstance(value, dict) and (isinstance(value.get("model_type"), str) or (
        isinstance(key, str) and key.endswith("_config") and key != "quantization_config"))


def sub_config_auto_dtypes(config: dict[str, Any], prefix: str = "", depth: int = 0) -> list[str]:
    """The dotted fields of a config's sub-configs (llava's `text_config`, ...) whose dtype is "auto".

    A sub-config (`_is_sub_config`) is built by transformers as a config of its own, which reads "auto" as
    `getattr(torch, "auto")` as the top level does.

    Example:
        >>> sub_config_auto_dtypes({"text_config": {"model_type": "llama", "dtype": "auto"}})
        ['text_config.dtype']
    """
    found: list[str] = []
    if depth > 8:  # configs nest two or three deep; a hostile one is refused elsewhere (_refuse_absurd_depth)
        return found
    for key, value in config.items():
        if _is_sub_config(key, value):
            if (field := auto_dtype_field(value)) is not None:
                found.append(f"{prefix}{key}.{field}")
            found += sub_config_auto_dtypes(value, f"{prefix}{key}.", depth + 1)
    return found


def without_sub_config_auto_dtypes(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` without its sub-configs' "auto" dtype fields: the config once they are fixed (removed),
    which transformers can build; `config` itself when it has none."""
    if not sub_config_auto_dtypes(config):
        return config

    def strip(value: dict[str, Any], depth: int) -> dict[str, Any]:
        out = {}
        for key, item in value.items():
            if _is_sub_config(key, item) and depth <= 8:
                item = strip(item, depth + 1)
                if (field := auto_dtype_field(item)) is not None:
                    item = {k: v for k, v in item.items() if k != field}
            out[key] = item
        return out

    return strip(config, 0)


def auto_dtype_field_warning(config: dict[str, Any], dtype: str, weights_read: bool = True,
                             stored: str | None = None) -> str | None:
    """The warning for a config.json whose `dtype` / `torch_dtype` is "auto" (at its top or in a sub-config such as
    llava's `text_config`), else None.

    "auto" is an argument of from_pretrained, not a dtype a config can hold: transformers' config reads it as
    `getattr(torch, "auto")`, so `AutoConfig.from_pretrained` and `from_pretrained` raise AttributeError. At the top
    level a real `dtype=` given to from_pretrained replaces the field and loads (transformers 5.25); in a
    sub-config nothing does. Both are planned the same way, at `dtype` (what loads once the field is fixed): the
    warning says what to fix, which is what the user needs (an error would hide the plan and name the same
    one-line fix). With no weights read (a config.json alone) their dtype is unknown: the fix names none. A plan
    at int4 / int8 / fp8 names `stored` (the weights' floating dtype), the one the unquantized rest is kept at,
    not DTYPES' float16.

    Example:
        >>> auto_dtype_field_warning({"dtype": "auto"}, "bf16")
        'config.json sets "dtype": "auto", which transformers ... cannot read: ...'
    """
    top = auto_dtype_field(config)
    fields = ([top] if top else []) + sub_config_auto_dtypes(config)
    if not fields:
        return None
    from weightdoctor.quantized import transformers_label

    which = transformers_label()
    floating = DTYPES[dtype][0] if dtype in FLOAT_DTYPES else stored or DTYPES[dtype][0]
    planned, value = ((dtype, f'"{floating}"') if weights_read else
                      (f"{dtype} (no weights were read; --dtype plans another)", "the weights' dtype"))
    def listed(items: list[str]) -> str:
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

    named = listed([f'"{field}"' for field in fields])
    # Checked against transformers 5.25: AutoConfig.from_pretrained and from_pretrained given dtype=torch.float16
    # override a top-level "auto" and load, but a sub-config's "auto" raises whatever dtype is given.
    when = (f"unless they are given a real dtype (dtype=torch.{floating} replaces the field)"
            if fields == [top] and weights_read else "unless they are given a real dtype, which replaces the field"
            if fields == [top] else "whatever dtype they are given")
    sets = listed([f'"{field}": "auto"' for field in fields])
    return (f"config.json sets {sets}, which {which} cannot read: AutoConfig.from_pretrained and from_pretrained "
            f"raise AttributeError (module 'torch' has no attribute 'auto') {when}; planned at {planned}; set "
            f"{named} to {value} in config.json (or remove {'it' if len(fields) == 1 else 'them'}) to load it")


def unsaid_dtype_warning(checkpoint: Checkpoint, quantized: str | None = None) -> str | None:
    """The warning for a plan from a config alone whose config names no dtype, else None.

    With no weights read, nothing says the dtype: the plan is at fp32, but `from_pretrained(dtype="auto")` of the
    model takes the dtype of its first weight file, half the bytes for a bf16 / fp16 checkpoint (a 2x error the
    plan did not mention). A config.json given as a path beside its weights is the usual way to end up here.
    `quantized`: the plan is at this --dtype (int8 / int4), whose unquantized rest is so planned at fp32.

    Example:
        >>> unsaid_dtype_warning(config_only_gpt2)  # gpt2's config.json names no dtype  # doctest: +SKIP
        'config.json names no dtype and no weights were read: planned at fp32 (torch's default), ...'
    """
    config = checkpoint.config
    if checkpoint.tensors or not config or not config.get("model_type") or _config_dtype(config):
        return None
    if "auto" in (config.get("dtype"), config.get("torch_dtype")) or unbuildable_dtype_field(config):
        # not "names no dtype": transformers cannot load it as it is (`auto_dtype_field_warning`,
        # `unbuildable_dtype_warning`)
        return None
    if quantized_dtype(config) is not None or _fp8_quantization(config) is not None:
        return None  # the quantizer's own dtype rule, warned about where it is applied
    from weightdoctor.checkpoint.reader import weight_files_in

    source = expand_user(checkpoint.source)
    folder = source.parent if source.suffix == ".json" and source.is_file() else source
    try:
        beside = weight_files_in(folder) if folder.is_dir() else []
    except OSError:
        beside = []
    hint = (f"; its folder holds the weights ({beside[0].name}): give the folder as SOURCE to plan at their dtype"
            if beside and folder != source else "")
    if quantized is not None:
        # bitsandbytes keeps the rest at from_pretrained's dtype (`quantized_rest_dtype`): no --dtype plans it at
        # another, so the warning names the from_pretrained argument that does.
        return (f"config.json names no dtype and no weights were read: the unquantized rest of this {quantized} plan "
                "(embeddings, norms, lm_head, biases) is at float32 (torch's default), but from_pretrained(dtype="
                "\"auto\") builds it at the dtype of the first weight file (half the bytes for bf16 / fp16 weights, "
                "as dtype=torch.float16 does)" + hint)
    return ("config.json names no dtype and no weights were read: planned at fp32 (torch's default), but "
            "from_pretrained(dtype=\"auto\") loads the model at the dtype of its first weight file (half the bytes "
            "for bf16 / fp16 weights); --dtype bf16 or fp16 plans that" + hint)


# GgufHfQuantizer.update_device_map's own words (transformers 5.x), raised on a device_map naming disk.
GGUF_DISK_REFUSAL = ("One or more modules is configured to be mapped to disk. Disk offload is not supported for "
                     "models loaded from GGUF files.")


def gguf_bitsandbytes_refusal(dtype: str, gguf_file: str) -> str:
    """Why `--dtype int8` / `int4` plans no load of a GGUF: it plans from_pretrained(quantization_config=
    BitsAndBytesConfig(...)), and transformers' get_hf_quantizer raises ValueError on any quantizer but GGUF's beside
    gguf_file=.

    Example:
        >>> gguf_bitsandbytes_refusal("int4", "m.gguf")[:60]
        '--dtype int4 plans a bitsandbytes load (quantization_config='
    """
    bnb = "load_in_8bit=True" if dtype == "int8" else "load_in_4bit=True"
    return (f"--dtype {dtype} plans a bitsandbytes load (quantization_config=BitsAndBytesConfig({bnb})), which "
            f"transformers refuses beside gguf_file={gguf_file!r} (ValueError: \"You cannot combine Quantization and "
            "loading a model from a GGUF file\"): a GGUF loads dequantized, so plan it at --dtype fp32, bf16 or fp16")


def build_planned_model(
    checkpoint: Checkpoint, dtype: str | None = None, model_class: str | None = None, binary_units: bool = False,
    device_flags: str = "...",
) -> PlannedModel:
    """Build the model to plan: from its config like `from_pretrained` does, else from the tensor names.

    Args:
        checkpoint: an opened source (may be config-only).
        dtype: --dtype spelling; None picks what `from_pretrained(dtype="auto")` would.
        model_class: a transformers class name to build instead of the config's first architecture.
        binary_units: the warnings say sizes in binary units (KiB, MiB, GiB), as the devices' were typed.
        device_flags: this run's devices as typed (`--gpu 24GB --cpu 64GB`, shell-quoted), for the command that
            plans an adapter's base model on them; "..." where not known.

    Raises:
        UsageError: a config-only source whose config transformers cannot build.
    """
    warnings: list[str] = list(checkpoint.warnings)  # the reader's (a file left unread, --revision ignored)
    if checkpoint.format == "gguf" and dtype and normalize_dtype(dtype) in ("int8", "int4"):
        raise UsageError(gguf_bitsandbytes_refusal(normalize_dtype(dtype), checkpoint.files[0].path.name),
                         path=checkpoint.source)
    from weightdoctor.quantized import (
        mlx_not_loadable,
        mlx_quantization,
        packed_without_quantizer,
        quantizer_transformers_lacks,
        skipped_quantizer,
        without_quantization_config,
    )

    if checkpoint.config is not None and skipped_quantizer(checkpoint.config, checkpoint.tensors) is not None:
        # Plain float weights beside a quant_method transformers has no quantizer for: from_pretrained skips the
        # quantization_config and builds the model unquantized (the reader's warning says so). It was planned as
        # int4 "by the foo quantizer"; the caller's checkpoint is left as it is.
        checkpoint = copy.copy(checkpoint)
        checkpoint.config = without_quantization_config(checkpoint.config)

    mlx = mlx_quantization(checkpoint.tensors, checkpoint.config)
    if mlx is not None and not dtype:
        # Planned from the config, it came out as the unquantized model (fp16: 3 to 4 times the weights' bytes),
        # or as int4 "by an unknown quantizer": neither is a load that happens.
        raise UsageError(mlx_not_loadable(mlx, "it (no device map to plan)")
                         + "; --dtype plans the unquantized model", path=checkpoint.source)
    lacks = quantizer_transformers_lacks(checkpoint.config, checkpoint.tensors) if mlx is None else None
    if lacks is not None and not dtype:
        raise UsageError(f"{lacks}; no device map to plan; --dtype plans the unquantized model",
                         path=checkpoint.source)
    if lacks is not None:  # in place of the reader's line of it
        warnings = [w for w in warnings if w != f"config.json's {lacks}"]
        warnings.append(f"planned as the unquantized model at {dtype}: {lacks}")
    folder = checkpoint.path if checkpoint.path.is_dir() else checkpoint.path.parent
    packed = packed_without_quantizer(checkpoint.config, checkpoint.tensors, folder) if lacks is None else None
    if packed is not None and not dtype:
        # Planned at fp32 as the dense model, which from_pretrained either refuses to build (a quantization_config
        # naming no quant_method) or builds with the packed layers' weights left at their init.
        raise UsageError(f"{packed}; no device map to plan; --dtype plans the unquantized model",
                         path=checkpoint.source)
    if packed is not None:  # in place of the reader's same line
        warnings = [w for w in warnings if w != packed] + [f"planned as the unquantized model at {dtype}: {packed}"]
    if mlx is not None:
        warnings.append(f"planned as the unquantized model at {dtype}: this {mlx} checkpoint is not what "
                        "from_pretrained loads (transformers has no quantizer for it)")
    if checkpoint.tensors:
        from weightdoctor.structure import adapter_summary, peft_method_name

        adapter = adapter_summary(checkpoint)[0]
        if adapter is not None:
            # "Will my fine-tune fit?" asked of the adapter folder: its few MB are not the model that is loaded.
            base = adapter.get("base_model_name_or_path")
            onto = f" onto {base}" if isinstance(base, str) and base else ""
            method = peft_method_name(adapter["peft_type"])  # VeRA, not VERA: peft's documentation's name
            if checkpoint.config is not None and checkpoint.config.get("model_type"):
                # axolotl, unsloth and Trainer runs save the base model's config.json beside the adapter.
                warnings.append(
                    f"this is a PEFT adapter ({method}) beside a config.json: planned is the model "
                    f"that config describes (model_type {checkpoint.config['model_type']!r}, built at full size), "
                    f"as PeftModel.from_pretrained loads the adapter{onto}; add the adapter's own size")
            else:
                warnings.append(
                    f"this is a PEFT adapter ({method}): only its own weights are planned, not the "
                    f"base model PeftModel.from_pretrained loads it onto; plan the base"
                    + (_base_model_hint(base, device_flags) if isinstance(base, str) and base else "")
                    + " and add the adapter's size")
        else:
            from weightdoctor.checkpoint.reader import adapterhub_adapter, adapterhub_config

            folder = checkpoint.path if checkpoint.path.is_dir() else checkpoint.path.parent
            hub = adapterhub_config(folder)
            if hub is not None:
                # Its few kB were planned as if they were the model: the adapters library adds them to a base.
                base = hub.get("model_name")
                warnings.append(
                    f"this is {adapterhub_adapter(hub)}: only its own weights are planned, not the base model the "
                    "adapters library loads it into (model.load_adapter); plan the base"
                    + (_base_model_hint(base, device_flags) if isinstance(base, str) and base else "")
                    + " and add the adapter's size")
            elif (add_on := _image_model_add_on(checkpoint)) is not None:
                warnings.append(add_on)
    config_quantizer = None
    mxfp4 = False
    stored_method: str | None = None  # a quantizer whose layers are sized at their stored bytes (no --dtype)
    stored_fallback = ""
    stored_how = ""  # its name and bits as the warnings say them: `higgs, 2-bit`
    if not dtype and (quantized := quantized_dtype(checkpoint.config)) is not None:
        config_quantizer = quantized[1]
        how = quantized[1] if quantized[1].endswith("-bit") else f"{quantized[1]}, {quantized[0][3:]}-bit"
        label = quantized_float_label(checkpoint.config) or quantized[0]
        warnings.append(f"the config quantizes the weights ({how}): planned as {label}; --dtype overrides")
        from weightdoctor.quantized import gptq_dynamic_warning

        if dynamic := gptq_dynamic_warning(checkpoint.config):
            warnings.append(dynamic)
    elif not dtype:
        from weightdoctor.quantized import quantization_of

        found = quantization_of(checkpoint.config)
        if found is not None and _is_fine_grained_fp8(checkpoint.config):
            warnings.append(f"the config quantizes the weights (fp8): planned at {default_dtype(checkpoint)}, as "
                            "transformers dequantizes "
                            "them on GPUs of compute capability below 8.9 (A100, V100) and on CPU; on 8.9 and above "
                            "(H100, H200, L40S, RTX 4090) it keeps them in FP8, about half the Linear weights' "
                            "size: --dtype fp8 plans that")
        elif found is not None and _fp8_dequantized(checkpoint.config):
            warnings.append("the config quantizes the weights (fp8) with dequantize: true: transformers dequantizes "
                            "them on every device, to the floating dtype planned here")
        elif found is not None and found[0] == "hqq":
            warnings.append(_hqq_dense_warning(checkpoint, found[1], binary_units))
        elif found is not None and _stored_sized_method(checkpoint) is not None:
            # SpQR, VPTQ, AQLM, HIGGS, FP-Quant, fbgemm_fp8: sized by the stored bytes of each layer once the model
            # is built (`_size_stored_layers`); the upper-bound line below if no layer could be sized so.
            stored_method = found[0]
            stored_how = found[0] + (f", {found[1]}-bit" if found[1] else "")
            stored_fallback = (f"the config quantizes the weights ({stored_how}): planned at the floating dtype, "
                               "which over-sizes the Linear weights its quantizer keeps packed; the plan is an upper "
                               "bound")
        elif found is not None and found[0] == "mxfp4" and _mxfp4_dequantized(checkpoint.config):
            # It was said "an upper bound" that over-sizes what transformers keeps in 4 bits: it keeps nothing so.
            warnings.append("the config quantizes the weights (mxfp4) with dequantize: true: transformers "
                            "dequantizes the experts on every device, to the floating dtype planned here")
        elif found is not None and found[0] == "mxfp4":
            mxfp4 = True  # sized by the experts its quantizer swaps in once the model is built (`_keep_mxfp4`)
        elif found is not None and any(word in found[0] for word in ("fp8", "mxfp4", "fp4")):
            warnings.append(f"the config quantizes the weights ({found[0]}): planned at the floating dtype, which "
                            "over-sizes the Linear weights transformers keeps in 8 or 4 bits (about 2x or 4x); the "
                            "plan is an upper bound")
        elif found is not None and (dense := _loads_dense(checkpoint.config, bool(checkpoint.tensors))):
            warnings.append(f"the config quantizes the weights ({found[0]}), but {dense}: transformers loads them "
                            "dense, at the floating dtype planned here")
        elif found is not None and (sparsity := _sparsity_only(checkpoint.config)) is not None:
            # compressed-tensors' sparsity alone (2:4, unstructured bitmask) stores fewer values, but the model's
            # Linear weights stay dense at the floating dtype: nothing is over-sized.
            warnings.append(f"the config's compressed-tensors quantization_config only sparsifies the weights "
                            f"({sparsity}): the model holds them dense, planned at the floating dtype")
        elif found is not None and (other := _weights_not_quantized(checkpoint.config)) is not None:
            # An FP8 KV-cache scheme alone was said to over-size "the Linear weights its quantizer keeps packed":
            # there are none, the weights load dense and the plan is exact.
            warnings.append(f"the config's compressed-tensors quantization_config quantizes {other} only, not the "
                            "weights: the model holds them dense, planned at the floating dtype")
        elif found is not None and _is_bitnet(checkpoint.config):
            pass  # sized by its quantizer's own layers once the model is built (`_keep_bitnet`)
        elif found is not None:
            # AQLM (2 bits a weight), 2- and 3-bit GPTQ, torchao: no int8 / int4 to plan them as.
            words = found[0] + (f", {found[1]}-bit" if found[1] else "")
            # A config alone (VPTQ, AQLM, ...): its packed layers' sizes are the weights', which were not read.
            unread = (": no weights were read to size its packed layers from, and its config alone does not give "
                      "their sizes" if not checkpoint.tensors and found[0] in _STORED_SIZED else "")
            warnings.append(f"the config quantizes the weights ({words}): planned at the floating dtype, which "
                            f"over-sizes the Linear weights its quantizer keeps packed; the plan is an upper bound"
                            + unread)
    from weightdoctor.quantized import transformers_refuses_quantization

    if (refused := transformers_refuses_quantization(checkpoint.config)) is not None:
        warnings.append(refused)
    asked = dtype
    dtype = normalize_dtype(dtype) if dtype else default_dtype(checkpoint)
    config = checkpoint.config or {}
    unsaid = (unsaid_dtype_warning(checkpoint) if not asked
              else unsaid_dtype_warning(checkpoint, dtype) if dtype in ("int8", "int4") else None)
    if unsaid:
        warnings.append(unsaid)
    if not asked and dtype in ("fp16", "bf16") and isinstance(config.get("_class_name"), str) \
            and not config.get("model_type"):
        # diffusers' configs carry no dtype; its from_pretrained loads in float32 unless given torch_dtype.
        warnings.append(f"a diffusers {config['_class_name']}: its from_pretrained loads in float32 unless given "
                        f"torch_dtype; planned at the stored {dtype}, as torch_dtype=torch.{DTYPES[dtype][0]} loads "
                        "it; --dtype fp32 plans the default (twice the memory)")
    if auto := auto_dtype_field_warning(config, dtype, bool(checkpoint.tensors), _checkpoint_float_dtype(checkpoint)):
        warnings.append(auto)
    if unbuildable := unbuildable_dtype_warning(config, dtype, bool(checkpoint.tensors),
                                                _checkpoint_float_dtype(checkpoint)):
        warnings.append(unbuildable)
    if asked and dtype in FLOAT_DTYPES and mlx is None and lacks is None \
            and (quantized := quantized_dtype(checkpoint.config)) is not None:
        # --dtype overrides the quantized plan (by design: "what if it were dense"), but it is no load that happens:
        # from_pretrained's quantizer keeps the stored 4 / 8-bit weights packed whatever dtype it is given.
        from weightdoctor.units import format_bytes

        how = quantized[1] if quantized[1].endswith("-bit") else f"{quantized[1]}, {quantized[0][3:]}-bit"
        stored = sum(info.nbytes for info in checkpoint.tensors)
        packed = quantized_float_label(checkpoint.config) or quantized[0]  # FP8 / NVFP4 named as the floats they are
        warnings.append(f"--dtype {dtype} on a pre-quantized checkpoint ({how}) sizes the dense weights, every "
                        f"Linear at {dtype}: from_pretrained keeps them packed ({packed}; dtype sets only the "
                        "unquantized rest), so this over-sizes them"
                        + (f"; the checkpoint stores {format_bytes(stored, binary_units)}" if stored else "")
                        + f"; without --dtype it is planned as {packed}, as it loads")
    if asked and DTYPES[dtype][1] is not None:
        from weightdoctor.quantized import quantization_of

        found = quantization_of(checkpoint.config)
        if found is not None and not found[0].startswith("bitsandbytes"):
            # merge_quantization_configs: another class of quantization_config beside the checkpoint's raises.
            warnings.append(f"the checkpoint is already quantized ({found[0]}): from_pretrained refuses "
                            f"bitsandbytes' {dtype} on it (two quantization configs); it loads with its own")
    if dtype == "fp8":
        return _planned_fp8(checkpoint, model_class, warnings)
    # A diffusers config (`_class_name`) may carry a model_type of its own (Wan2.1's WanModel: "t2v"), which is no
    # transformers model type: trying it said "transformers does not know model_type 't2v'", as if an upgrade
    # would help.
    diffusers = checkpoint.config is not None and isinstance(checkpoint.config.get("_class_name"), str)
    if checkpoint.config is not None and checkpoint.config.get("model_type") and not diffusers:
        try:
            built_class = model_class
            if model_class is None:
                from weightdoctor.meta_model import native_class_for_remote_architecture

                native = native_class_for_remote_architecture(checkpoint.config)
                if native is not None:
                    built_class = native[0]
                    named = clip_middle(checkpoint.config["architectures"][0], 120)
                    builds = (f"planned as {native[0]}, what {native[1]}.from_pretrained builds for model_type "
                              f"{checkpoint.config['model_type']!r}")
                    if checkpoint.config.get("auto_map"):
                        warnings.append(
                            f"config.json's architecture {named} is no transformers class (remote code its auto_map "
                            f"names, which weightdoctor never runs): {builds} without trust_remote_code; with it the "
                            "repo's own code builds the model, which may place otherwise")
                    else:
                        # No auto_map: no code of the repo's to run (decapoda-research's LLaMAForCausalLM, a name
                        # older conversion scripts wrote), and trust_remote_code changes nothing.
                        warnings.append(
                            f"config.json's architecture {named} is no transformers class, and no auto_map names "
                            f"code for it: {builds}, the class from_pretrained loads it into")
            # An int4 / int8 model keeps its unquantized rest at the dtype from_pretrained(dtype="auto") picks, not
            # at float16 (`quantized_rest_dtype`): a float32 config's embeddings and norms were half-sized, both
            # where its config quantizes it and where `--dtype int8 / int4` asks bitsandbytes to at load.
            rest_dtype_source = functools.partial(quantized_rest_dtype, checkpoint)
            built_dtype = rest_dtype_source() if config_quantizer is not None or dtype in ("int4", "int8") \
                else DTYPES[dtype][0]
            model = _build_from_config(checkpoint.config, built_dtype, built_class)
            swapped = dtype in FLOAT_DTYPES and _is_bitnet(checkpoint.config)
            if swapped:
                warnings.append(_keep_bitnet(model, checkpoint.config, DTYPES[dtype][0]))
            if mxfp4:
                warnings.append(_keep_mxfp4(model, checkpoint.config, dtype, binary_units))
            if dtype in FLOAT_DTYPES and _fp8_embeddings(checkpoint.config):
                # Dequantized, transformers' FP8 quantizer still keeps the embedding tables it names in FP8.
                try:
                    _keep_fp8(model, checkpoint.config, DTYPES[dtype][0], dequantize=True)
                except UsageError as exc:
                    warnings.append(f"the FP8 embedding tables (modules_to_convert) are planned at {dtype}: "
                                    f"{exc.message}")
            if not model_class and not checkpoint.config.get("architectures"):
                head = _head_auto_class(model.config)
                example = f" (an lm_head with {head})" if head else ""
                warnings.append(f"config.json names no architecture: planned as {type(model).__name__}, the class "
                                f"AutoModel loads, without a task head; from_pretrained of another class{example} "
                                "places more: pass --model-class")
            from weightdoctor.load_simulation import from_pretrained_skips_warning, safetensors_format_warning

            if (other_framework := safetensors_format_warning(checkpoint)) is not None:
                # A Flax file's model fits as planned, but from_pretrained loads its names as they are.
                warnings.append(f"{other_framework}; planned as the model config.json describes")
            if (skipped := from_pretrained_skips_warning(checkpoint)) is not None:
                # A Mistral repo fetched without its HF weights (consolidated.safetensors beside config.json), a
                # torchtune output (hf_model_0001_0.pt): the plan is the model's, but from_pretrained loads nothing.
                warnings.append(f"{skipped}; planned as the model config.json describes, which from_pretrained loads "
                                "once the weights are saved under its names (save_pretrained)")
            planned = PlannedModel(model, "config", type(model).__name__, dtype, checkpoint.config, warnings)
            planned.gguf_file = _gguf_file_loaded(checkpoint) if checkpoint.format == "gguf" else None
            _load_generation_config(model, folder)
            planned.quantizer_swapped = swapped
            planned.rest_dtype_source = rest_dtype_source
            if unsaid and dtype in ("int4", "int8"):
                planned._cache["rest-unsaid"] = True  # at torch's default: nothing said the checkpoint's dtype
            if config_quantizer is not None or dtype in ("int4", "int8"):
                planned._cache["quantized-rest"] = built_dtype
            if config_quantizer is not None:
                _size_config_quantization(planned, checkpoint, config_quantizer, binary_units)
                planned.label = quantized_float_label(checkpoint.config)
            if stored_method is not None and not _size_stored_layers(planned, checkpoint, stored_method,
                                                                     binary_units, stored_how):
                warnings.append(stored_fallback)
            dropped = quantized_experts_not_loaded(model, checkpoint)
        except UsageError as exc:
            if not checkpoint.tensors or model_class is not None:
                exc.path = exc.path or checkpoint.source
                if checkpoint.format == "gguf" and exc.message.startswith("config.json "):
                    # A GGUF has no config.json: its config is what its metadata gives (`_open_gguf_for_plan`).
                    exc.message = "the config its GGUF metadata gives " + exc.message.removeprefix("config.json ")
                raise
            warnings.append(f"cannot build the model from config.json ({exc.message}); planned from the tensors")
            if stored_method is not None:
                warnings.append(stored_fallback)
        else:
            if dropped is not None:
                raise UsageError(f"{dropped}; no device map to plan", path=checkpoint.source)
            return planned
    elif not checkpoint.tensors:
        what = ("there is no config.json" if checkpoint.config is None else
                f"its config.json is a diffusers {checkpoint.config['_class_name']} config, which transformers "
                "cannot build" if diffusers else "its config.json has no model_type")
        # Named as typed, as every other error names its source: `org/pipe/vae`, not its snapshot's path deep in
        # the cache; `./m`, not its absolute path.
        raise UsageError(f"nothing to plan: the checkpoint holds no tensors and {what}", path=checkpoint.source)
    if model_class is not None:
        # The class is built from a transformers config, which this checkpoint lacks: planned from the tensor names,
        # --model-class was dropped without a word (a typo in it too).
        missing = ("there is no config.json" if checkpoint.config is None
                   else "config.json is not a transformers model's (no model_type)")
        warnings.append(f"--model-class {model_class} is not used: {missing} to build it from; the plan is made from "
                        "the tensor names")
    model = build_tensor_tree(checkpoint, None if dtype in ("int8", "int4") else DTYPES[dtype][0])
    fp8 = [t for t in checkpoint.tensors if t.dtype.startswith("float8")]
    if fp8 and dtype not in ("int8", "int4", "fp8"):
        # A ComfyUI / Forge fp8 checkpoint (flux1-dev-fp8): planned as the floating dtype its loader up-casts to.
        share = sum(t.num_params for t in fp8) / max(1, sum(t.num_params for t in checkpoint.tensors))
        warnings.append(f"{counted(len(fp8), 'tensor')} ({share:.0%} of the parameters) "
                        f"{plural(len(fp8), 'is', 'are')} stored in {fp8[0].dtype}: planned "
                        f"at {dtype}, as a loader that up-casts them holds them ({DTYPES[dtype][0]}); one that keeps "
                        "them in fp8 (ComfyUI's fp8 weight dtype) needs their stored size"
                        + ("; --dtype bf16 plans the usual compute dtype" if dtype == "fp32" else ""))
    blocks = [name for name, module in model.named_modules() if type(module).__name__ == NUMBERED_BLOCK]
    if blocks:
        shown = ", ".join(blocks[:2]) + (", ..." if len(blocks) > 2 else "")
        warnings.append(
            f"{_no_transformers_config(checkpoint.config, _own_config_beside(checkpoint))} which modules must stay "
            "whole: each numbered "
            f"block ({shown}) is kept on one "
            f"device (no-split class {NUMBERED_BLOCK}), as transformers keeps a model's layers; --no-split overrides"
        )
    untied = [names for names in checkpoint.alias_groups() if any("." not in name for name in names)]
    if untied:
        warnings.append(
            "tied tensors outside any module (" + "; ".join(" = ".join(names) for names in untied[:3])
            + ") are planned as separate copies, since accelerate cannot tie top-level names: their memory counts"
            " once per name"
        )
    if (ema := _ldm_ema_planned(checkpoint, model, binary_units)) is not None:
        warnings.append(ema)
    # An FP8 config's plan is labelled as its warning above names it, from the tensors as from the config.
    label = quantized_float_label(checkpoint.config) if config_quantizer is not None else None
    if dtype in ("int8", "int4"):
        warnings.append(f"{label or dtype} is planned for transformers models only; the tensors keep their own "
                        "dtypes")
    planned = PlannedModel(model, "tensors", "module tree from tensor names", dtype, checkpoint.config, warnings)
    planned.label = label
    return planned


def _load_generation_config(model: torch.nn.Module, folder: Path) -> None:
    """Give `model` the generation config from_pretrained gives it: the folder's generation_config.json where there
    is one (it replaces the one built from config.json whole: a `use_cache` it does not set is generate()'s default,
    True, whatever config.json says), else the one built from config.json, left as it is.

    generate() caches (or not) as that config says, which decides whether an offloaded decoder's cross-attention
    key / value projections run once per input or at every token (`_once_per_input_test`).
    """
    path = folder / "generation_config.json"
    can_generate = getattr(model, "can_generate", None)
    if not path.is_file() or not callable(can_generate) or not can_generate():
        return
    from transformers import GenerationConfig

    try:
        # as from_pretrained's adjust_generation_fn loads it; a file it cannot read leaves the config.json one
        model.generation_config = GenerationConfig.from_pretrained(folder)
    except Exception:  # noqa: BLE001 - an unreadable file: from_pretrained falls back to config.json's too
        return


def _ldm_ema_planned(checkpoint: Checkpoint, model: torch.nn.Module, binary: bool = False) -> str | None:
    """The warning for an original Stable Diffusion checkpoint saved with LitEma's copy of its UNet (`model_ema.*`,
    CompVis' `*-full-ema.ckpt`, a training run's last.ckpt), or None: planned from the tensor names, the copy was
    placed as a module of its own, so the plan held the UNet twice, where every loader builds one. `binary`: the size
    is said in binary units (KiB, MiB, GiB), as the devices' sizes were typed (the report's "model_ema, 48.01 KiB"
    was "49.16 KB" here)."""
    from weightdoctor.structure import LDM_ONE_UNET, ldm_ema_copies
    from weightdoctor.units import format_bytes

    copies = ldm_ema_copies(checkpoint)
    if not copies:
        return None
    try:
        ema = model.get_submodule("model_ema")
    except AttributeError:
        return None
    size = sum(t.numel() * t.element_size() for t in (*ema.parameters(), *ema.buffers()))
    said = format_bytes(size, binary)
    return (f"the UNet is stored twice: model_ema ({said} as planned) holds an EMA copy of "
            f"{counted(len(copies), 'tensor')} of model.diffusion_model.*, placed here as a module of its own, so a "
            f"load holds {said} less than planned; {LDM_ONE_UNET}")


# transformers' quantizers whose `adjust_max_memory` keeps 10% of every budget free; the others (GPTQ, AWQ,
# compressed-tensors, HQQ, ...) inherit the base class's, which keeps none.
_HEADROOM_QUANTIZERS = ("bitsandbytes", "bitnet", "quanto", "torchao")


def bnb_skip_modules(config: Mapping[str, Any] | None) -> list[str] | None:
    """A bitsandbytes config's `llm_int8_skip_modules` (the modules it leaves unquantized), or None where it has
    none (transformers then skips the output embeddings and tied modules itself).

    Example:
        >>> bnb_skip_modules({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True,
        ...                   "llm_int8_skip_modules": ["lm_head", "model.layers.1.mlp"]}})
        ['lm_head', 'model.layers.1.mlp']
    """
    settings = config_quantization_settings(config)
    if settings is None or settings.get("quant_method", "bitsandbytes") != "bitsandbytes":
        return None
    skip = settings.get("llm_int8_skip_modules")
    return [name for name in skip if isinstance(name, str)] if isinstance(skip, list) else None


def _skip_entries_used(model: torch.nn.Module, skip: list[str]) -> tuple[list[str], list[str]]:
    """`skip` (a llm_int8_skip_modules list) split in the entries that keep some Linear layer of `model` out of the
    quantizer, matched as transformers' `should_convert_module` matches them, and those that keep none.

    Example:
        >>> import torch
        >>> _skip_entries_used(torch.nn.Sequential(torch.nn.Linear(2, 2)), ["0", "vision_tower"])
        (['0'], ['vision_tower'])
    """
    import re

    import torch
    from transformers.pytorch_utils import Conv1D
    from transformers.quantizers.quantizers_utils import should_convert_module

    linears = [name for name, module in model.named_modules()
               if name and (isinstance(module, Conv1D) or type(module) is torch.nn.Linear)]
    used: list[str] = []
    idle: list[str] = []
    from weightdoctor.quantized import _match_cost

    for entry in skip:
        try:
            # a pattern that may backtrack for ever is not run: said as the config gives it, not checked
            hit = _match_cost(f"(?:{entry})") is None or any(not should_convert_module(name, [entry])
                                                            for name in linears)
        except re.error:  # not a pattern re compiles: transformers' own match would fail on it, not skip
            hit = False
        (used if hit else idle).append(entry)
    return used, idle


def _size_config_quantization(planned: PlannedModel, checkpoint: Checkpoint, quantizer: str,
                              binary: bool = False) -> None:
    """Set how a checkpoint its config quantizes is sized: 10% headroom only for the quantizers that take it, and
    (but for bitsandbytes, sized by its quantizer's own rule) each Linear weight at the bytes the checkpoint stores
    for its module, as the quantizer's layer holds them.

    A GPTQ or AWQ layer keeps `qweight`, `qzeros`, `scales` (and `g_idx`) where the model built from the config
    has one `weight`; compressed-tensors keeps `weight_packed`, `weight_scale`, ...: the planner then counts those
    buffers. Their bytes are the checkpoint's (every tensor directly under the module but its `bias`, counted as
    its own parameter), so the weight is sized at stored bytes / its elements. A module the checkpoint holds
    nothing for (other names, a config-only source) keeps the bitsandbytes-style size: its weight at 4 or 8 bits,
    scales and zero points left out, which the warnings say.
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    from weightdoctor.checkpoint.model import unique_tensors

    planned.quantizer_headroom = quantizer.lower().startswith(_HEADROOM_QUANTIZERS)
    bits = planned.dtype[3:]
    if quantizer.lower().startswith("bitsandbytes"):
        # Its layers keep one packed `weight` each, sized so by its quantizer (`param_element_size`); the
        # quantization state beside it is no parameter or buffer, so transformers' planner leaves it out too.
        skip = bnb_skip_modules(planned.config)
        keeping, idle = _skip_entries_used(planned.model, skip or [])
        kept = (f"; the modules its llm_int8_skip_modules names ({clip_words(', '.join(keeping), 120)}) at their "
                "floating dtype, as the quantizer leaves them") if keeping else ""
        if idle:
            # Unsloth's lists name a vision tower a text-only class has not, or lm_head where the class has none:
            # "the modules it names (vision_tower, ...) at their floating dtype" spoke of modules not in the model.
            kept += (f"; {clip_words(', '.join(idle), 120)} in llm_int8_skip_modules "
                     f"{plural(len(idle), 'names', 'name')} no Linear layer of {type(planned.model).__name__}: "
                     "nothing is kept unquantized for " + plural(len(idle), "it", "them"))
        planned.warnings.append(f"Linear weights planned at {bits} bits, as transformers' planner sizes "
                                f"bitsandbytes layers (their small quantization state not counted){kept}")
        return
    if (size := torchao_element_size(planned.config)) is not None:
        # transformers' torchao quantizer keeps nn.Linear while the map is made and sizes each weight it quantizes
        # at its `quantized_element_size` (`torchao_element_size`), whatever the checkpoint stores beside it (the
        # `_weight_qdata` with its `_weight_scale`, `_weight_zero_point`): from_pretrained places by those sizes,
        # and so does this plan. The stored bytes would be a different map.
        chosen = torchao_quantized_weights(planned.model, planned.config)
        linear_weights = {f"{name}.weight" for name, module in planned.model.named_modules()
                          if name and isinstance(module, torch.nn.Linear)}
        # An FqnToConfig names what it quantizes: fused MoE experts' 3-D tensors, a named module's bias, which its
        # quantizer sizes at its element size too (they were counted at the floating dtype).
        fqn = torchao_fqn_patterns(planned.config) is not None
        others = sorted(chosen - linear_weights) if fqn else []
        count = len(chosen & linear_weights) if fqn else len(chosen)
        named = (f", and {counted(len(others), 'other tensor')} its {torchao_config_name(planned.config)} names "
                 f"({', '.join(others[:2])}{', ...' if len(others) > 2 else ''})") if others else ""
        planned.warnings.append(
            f"{counted(count, 'Linear weight')}{named} planned at {bits} bits ({size:g} byte a weight), as "
            "transformers' planner sizes the weights its torchao quantizer quantizes "
            f"({torchao_config_name(planned.config)}; their scales and zero points not counted, for which the "
            "quantizer keeps 10% of every budget free)")
        return
    if not checkpoint.tensors and quantizer in _CONFIG_SIZED \
            and (layers := _config_sized_layers(planned.model, planned.config, quantizer)) is not None:
        # A config-only 4-bit HIGGS source: HiggsLinear's scales and tables count beside its packed weight, as
        # from_pretrained's planner counts them (they were left out: "no quantized tensors to size them from").
        from weightdoctor.units import format_bytes

        planned.stored_bytes = {f"{name}.weight": size for name, (size, _) in layers.items()}
        if quantizer == "eetq":
            planned.stored_bytes |= _eetq_biases(planned.model, layers)
        linears = [name for name, module in planned.model.named_modules()
                   if name and isinstance(module, (Conv1D, torch.nn.Linear))]
        planned.warnings.append(
            f"the {counted(len(layers), 'quantized Linear layer')} of {len(linears)} are sized "
            f"{_CONFIG_SIZED_HOW[quantizer]} ({format_bytes(sum(size for size, _ in layers.values()), binary)}), as "
            "transformers' planner sizes the quantizer's own layers that replace them; the rest at the floating dtype")
        planned.warnings.append(f"the {quantizer} quantizer keeps no headroom in the budgets (bitsandbytes keeps "
                                "10%): none is kept here")
        return
    stored: dict[str, int] = {}
    children: dict[str, int] = {}
    quantized: set[str] = set()  # modules that store more than a plain weight: packed weights, scales, zero points
    by_name = {info.name: info for info in unique_tensors(checkpoint.tensors)}
    for info in by_name.values():
        module, _, leaf = info.name.rpartition(".")
        if leaf.startswith("_") and module.endswith(".weight"):  # optimum-quanto: `weight._data`, `weight._scale`
            module = module.removesuffix(".weight")
        if leaf != "bias":
            children[module] = children.get(module, 0) + _held_bytes(info, by_name, quantizer)
        if leaf not in ("weight", "bias"):
            quantized.add(module)
    linears = 0
    for name, module in planned.model.named_modules():
        if name and (isinstance(module, Conv1D) or type(module) is torch.nn.Linear):
            linears += 1
            weight = getattr(module, "weight", None)
            if name in children and isinstance(weight, torch.nn.Parameter) and weight.numel():
                stored[f"{name}.weight"] = children[name]
    planned.stored_bytes = stored
    # Stored tensors that land on no Linear layer and on no parameter or buffer of the built model: MoE experts
    # saved one Linear each (`experts.0.w1.qweight`) where transformers 5 builds them fused (3-D tensors).
    known = set(planned.model.state_dict(keep_vars=True))
    sized_modules = {name.removesuffix(".weight") for name in stored}
    elsewhere = [info for info in unique_tensors(checkpoint.tensors)
                 if info.name not in known and info.name.rpartition(".")[0] not in sized_modules]
    if stored:
        left = linears - len(stored)
        # A Linear layer the quantizer left out (lm_head, compressed-tensors' `ignore`) stores its plain weight: sized
        # at its stored bytes all the same, but it was counted among the quantized ones ("8 of 8" for 7).
        plain = sorted(name.removesuffix(".weight") for name in stored if name.removesuffix(".weight") not in quantized)
        # kept for the float16-rest sizer: from_pretrained builds these at the model's dtype, whatever they store
        planned._cache["plain-stored-layers"] = set(plain)
        planned.warnings.append(
            f"the quantized Linear layers are sized at the bytes the checkpoint stores for them (packed weights, "
            f"scales, zero points: {len(stored) - len(plain)} of {linears})"
            + (f"; {counted(len(plain), 'other')} ({', '.join(plain[:3])}{', ...' if len(plain) > 3 else ''}) "
               f"stored unquantized, at {'its' if len(plain) == 1 else 'their'} stored size" if plain else "")
            + (f"; the other {left} at {bits} bits a weight, scales and zero points not counted" if left else ""))
    elif checkpoint.tensors:
        planned.warnings.append(f"Linear weights planned at {bits} bits, scales and zero points not counted: none "
                                f"of the checkpoint's {len(checkpoint.tensors):,} tensor names is under a Linear "
                                "layer of the model built from its config (another prefix?)")
    else:
        planned.warnings.append(f"Linear weights planned at {bits} bits (scales and zero points not counted: "
                                "the source holds no quantized tensors to size them from)")
    if stored and elsewhere:
        from weightdoctor.units import format_bytes

        planned.warnings.append(
            f"{counted(len(elsewhere), 'stored tensor')} ({format_bytes(sum(i.nbytes for i in elsewhere), binary)}, "
            f"e.g. {elsewhere[0].name}) {plural(len(elsewhere), 'lies', 'lie')} under no Linear layer "
            "or tensor of the model built from its config (MoE "
            "experts, which transformers 5 builds fused): the modules they belong to are planned unquantized, an "
            "upper bound")
    if quantizer == "eetq" and stored:
        planned.stored_bytes = {**stored, **_eetq_biases(planned.model, quantized & {
            name.removesuffix(".weight") for name in stored})}
    if not planned.quantizer_headroom:
        planned.warnings.append(f"the {quantizer} quantizer keeps no headroom in the budgets (bitsandbytes keeps "
                                "10%): none is kept here")


def _eetq_biases(model: torch.nn.Module, layers: Iterable[str]) -> dict[str, int]:
    """{`<layer>.bias`: bytes} for each of `layers` (EETQ-quantized Linear layers) with a bias: EetqLinear makes its
    bias in float16 whatever the model's dtype (a float32 or bfloat16 model's too: the same bytes for the latter),
    and from_pretrained's planner counts it so."""
    import torch

    biases: dict[str, int] = {}
    for name in layers:
        bias = getattr(model.get_submodule(name), "bias", None)
        if isinstance(bias, torch.nn.Parameter):
            biases[f"{name}.bias"] = bias.numel() * 2
    return biases


def _held_bytes(info: TensorInfo, by_name: Mapping[str, TensorInfo], quantizer: str) -> int:
    """The bytes the quantizer's layer holds for a stored tensor while from_pretrained makes its map: its stored
    bytes, but for compressed-tensors' packed zero points.

    An asymmetric pack-quantized layer (W4A16_ASYM) stores `weight_zero_point` packed like its weights, int32
    [out x bits / 32, groups]; the layer compressed-tensors builds before the weights load (apply_quantization_config,
    then compress_model) holds it unpacked, one int8 a zero point at its `weight_scale`'s shape, and transformers'
    planner counts that (compressed-tensors 0.20.1 measured: 256 bytes where the file stores 128 for a [256, 128]
    layer of group 128), 4 / bits times the stored bytes.
    """
    module, _, leaf = info.name.rpartition(".")
    scale = by_name.get(module + ".weight_scale")
    if (quantizer == "compressed-tensors" and leaf == "weight_zero_point" and info.dtype == "int32"
            and module + ".weight_packed" in by_name and scale is not None):
        return scale.num_params
    return info.nbytes


# The quantizers whose layers transformers' planner sizes at what they hold before loading, which is what the
# checkpoint stores for them: the replaced module (spqr_quant's QuantizedLinear, vptq's VQuantLinear, aqlm's
# QuantizedLinear, transformers' HiggsLinear, FbgemmFp8Linear) registers exactly the packed tensors a checkpoint
# stores (fp_quant's FPQuantLinear more: `_fp_quant_layer_tensors`), and none of these quantizers overrides
# `param_element_size` (fbgemm_fp8's quantized_element_size of 1 applies only to weights it quantizes itself, not to
# a pre-quantized checkpoint's).
# Each takes a dtype by its `update_dtype`: the ones listed raise on any other (SpQR, HIGGS), and those two are then
# planned as before, at the floating dtype as an upper bound. HQQ is not here: its quantizer keeps nn.Linear until
# the weights load (`prepare_for_hqq_linear` only tags them), so from_pretrained's planner counts them dense.
_STORED_SIZED: dict[str, tuple[str, ...] | None] = {
    "spqr": ("fp16",), "higgs": ("fp16", "bf16"), "vptq": None, "aqlm": None, "fp_quant": None, "fbgemm_fp8": None,
    # 2- and 3-bit GPTQ (4 and 8 bits are planned as int4 / int8 by `_size_config_quantization`): gptqmodel's
    # QuantLinear holds the stored qweight, qzeros, scales and g_idx
    "gptq": None}


def _stored_sized_method(checkpoint: Checkpoint) -> str | None:
    """The quant_method whose pre-quantized layers `_size_stored_layers` sizes at their stored bytes, else None: one
    of `_STORED_SIZED`, with tensors to size from, at a dtype its quantizer takes (from_pretrained's dtype="auto")."""
    from weightdoctor.quantized import quantization_of

    found = quantization_of(checkpoint.config)
    if found is None or found[0] not in _STORED_SIZED or _loads_dense(checkpoint.config):
        return None
    if not checkpoint.tensors and not (found[0] == "spqr" and _spqr_config_shapes(checkpoint.config)) \
            and found[0] not in _CONFIG_SIZED:
        # nothing to size from: SpQR's config alone gives its layers' sizes (`_spqr_config_shapes`), HIGGS' and
        # fbgemm_fp8's layers are made from the config alone (`_config_sized_layers`)
        return None
    takes = _STORED_SIZED[found[0]]
    if takes is not None and default_dtype(checkpoint) not in takes:
        return None  # from_pretrained raises on this dtype (update_dtype): planned as before
    return found[0]


# spqr_quant's QuantizedLinear.create_placehodler, which transformers' replace_with_spqr_linear builds each layer
# with from SpQRConfig.shapes (`<layer>.<leaf>.shape`: the element count): its tensors' element sizes.
_SPQR_LEAF_BYTES = {"dense_weights": 8, "row_offsets": 4, "col_vals": 4, "in_perm": 4}


def _spqr_config_shapes(config: Mapping[str, Any] | None) -> dict[str, dict[str, int]]:
    """{layer: {leaf: elements}} for each layer an SpQR config's `shapes` gives all four tensors of, else empty.

    Example:
        >>> _spqr_config_shapes({"quantization_config": {"quant_method": "spqr", "shapes": {
        ...     "l.dense_weights.shape": 64, "l.row_offsets.shape": 9, "l.col_vals.shape": 3, "l.in_perm.shape": 8}}})
        {'l': {'dense_weights': 64, 'row_offsets': 9, 'col_vals': 3, 'in_perm': 8}}
    """
    settings = config_quantization_settings(config) or {}
    shapes = settings.get("shapes") if settings.get("quant_method") == "spqr" else None
    layers: dict[str, dict[str, int]] = {}
    for key, value in (shapes.items() if isinstance(shapes, Mapping) else ()):
        layer, _, leaf = str(key).removesuffix(".shape").rpartition(".")
        if key.endswith(".shape") and leaf in _SPQR_LEAF_BYTES and isinstance(value, int) \
                and not isinstance(value, bool) and value >= 0:
            layers.setdefault(layer, {})[leaf] = value
    return {layer: leaves for layer, leaves in layers.items() if set(leaves) == set(_SPQR_LEAF_BYTES)}


# The quantizers whose layers transformers makes from the config alone, whatever the checkpoint holds: HiggsLinear
# (transformers/integrations/higgs.py) and FbgemmFp8Linear (integrations/fbgemm_fp8.py), which
# `replace_with_higgs_linear` / `replace_with_fbgemm_fp8_linear` swap in for each nn.Linear the quantizer's
# `get_modules_to_not_convert` leaves. A config-only source of them is sized so (`_config_sized_layers`).
_CONFIG_SIZED = ("higgs", "fbgemm_fp8", "eetq")


def _config_sized_layers(model: torch.nn.Module, config: Mapping[str, Any] | None,
                         method: str) -> dict[str, tuple[int, set[str]]] | None:
    """{Linear layer: (bytes, its tensors' names)} of every layer transformers' HIGGS, fbgemm_fp8 or EETQ quantizer
    swaps in, as its layer holds them when from_pretrained makes its map, its bias aside (left to the model); None where
    the quantizer could not build them (HiggsLinear asserts that its group size divides in_features and bits of 2,
    3 or 4: from_pretrained raises there).

    EetqLinear (pre-quantized): an int8 `weight` [in, out] and float16 `weight_scales` [out]. HiggsLinear(in, out,
    bits): an int16 `weight` [out x bits / 16, in], `scales` [out, in / group_size], `tables`
    [2^bits] and `tables2` [2^bits, 2^bits, 2] at the model's dtype (made inside from_pretrained's default-dtype
    context). FbgemmFp8Linear (pre-quantized): a float8 `weight` [out, in], a float32 `weight_scale` [out, 1] and a
    float32 `input_scale_ub` [1]. The layers are the nn.Linear (subclasses too) `should_convert_module` accepts
    against `get_modules_to_not_convert(model, modules_to_not_convert, _keep_in_fp32_modules)`: the config's list,
    else the output embeddings and tied modules.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(64, 32, dtype=torch.float16))
        >>> _config_sized_layers(model, {"quantization_config": {"quant_method": "higgs", "bits": 2,
        ...     "group_size": 64, "modules_to_not_convert": []}}, "higgs")["0"][0]  # 4 x 64 x 2 + 32 x 2 + 8 + 32 x 2
        648
    """
    import torch
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    settings = config_quantization_settings(config) or {}
    skip = settings.get("modules_to_not_convert")
    skip = [name for name in skip if isinstance(name, str)] if isinstance(skip, list) else None
    keep_fp32 = getattr(model, "_keep_in_fp32_modules", None)
    not_convert = HfQuantizer.get_modules_to_not_convert(model, skip, list(keep_fp32) if keep_fp32 else None)
    bits, group = settings.get("bits", 4), settings.get("group_size", 256)  # HiggsConfig's defaults
    if method == "higgs" and not (bits in (2, 3, 4) and isinstance(group, int) and not isinstance(group, bool)
                                  and group > 0):
        return None
    layers: dict[str, tuple[int, set[str]]] = {}
    for name, module in model.named_modules():
        if not name or not isinstance(module, torch.nn.Linear) or not should_convert_module(name, not_convert):
            continue
        out_features, in_features = module.out_features, module.in_features
        if method == "fbgemm_fp8":
            layers[name] = (out_features * in_features + out_features * 4 + 4,
                            {"weight", "weight_scale", "input_scale_ub"})
            continue
        if method == "eetq":  # EetqLinear: an int8 weight [in, out], float16 weight_scales [out]
            layers[name] = (out_features * in_features + out_features * 2, {"weight", "weight_scales"})
            continue
        if in_features % group:
            return None
        itemsize = module.weight.element_size()
        size = (out_features * bits // 16 * in_features * 2 + out_features * (in_features // group) * itemsize
                + 2 ** bits * itemsize + 2 ** bits * 2 ** bits * 2 * itemsize)
        layers[name] = (size, {"weight", "scales", "tables", "tables2"})
    return layers


# HQQLinear's stored tensors beside its packed `W_q` (HQQLinear.state_dict: the scales and zero points, and the
# quantization metadata it saves as tensors).
_HQQ_LEAVES = ("W_q", "scale", "zero", "shape", "nbits", "group_size", "axis", "channel_wise", "optimize",
               "round_zero", "offload_meta", "packing", "unpack_view_dtype", "view_as_float", "compute_dtype",
               "encoded_state_dict", "stores_quant_config", "meta", "bias")


def _hqq_dense_warning(checkpoint: Checkpoint, bits: int | None, binary: bool = False) -> str:
    """What a plan of an HQQ checkpoint is, in a line: the floating dtype, as from_pretrained's own planner sizes it.

    transformers' HQQ quantizer swaps nothing in before the map is made: `prepare_for_hqq_linear` only tags each
    nn.Linear with its quant_config, and the layer becomes an HQQLinear as its weights load
    (`param_needs_quantization` is every Linear parameter). Nor does it override `param_element_size`, so
    `compute_module_sizes` counts each Linear's weight dense at the model's dtype, and `device_map="auto"` places by
    those sizes. It was planned as int4 at the stored bytes: a map with more on the GPUs than from_pretrained's.
    Loaded, the layers hold what the checkpoint stores for them (said, not planned).
    """
    from weightdoctor.checkpoint.model import unique_tensors
    from weightdoctor.units import format_bytes

    infos = list(unique_tensors(checkpoint.tensors))
    layers = {info.name.removesuffix(".W_q") for info in infos if info.name.endswith(".W_q")}
    stored = sum(info.nbytes for info in infos if info.name.rpartition(".")[0] in layers
                 and info.name.rpartition(".")[2] in _HQQ_LEAVES)
    held = (f"; loaded, its {counted(len(layers), 'HQQLinear layer')} hold the "
            f"{format_bytes(stored, binary)} the checkpoint stores for them, not their dense size planned here"
            if layers else "")
    return (f"the config quantizes the weights (hqq{f', {bits}-bit' if bits else ''}): planned at the floating "
            "dtype, as transformers' planner sizes it: its HQQ quantizer keeps each Linear dense (nn.Linear, "
            "tagged by prepare_for_hqq_linear) until its weights load, so from_pretrained's device_map=\"auto\" "
            "counts them at that dtype" + held)


def _fp_quant_layer_tensors(settings: Mapping[str, Any] | None, out_features: int, in_features: int,
                            itemsize: int) -> dict[str, int]:
    """The bytes of each tensor FP-Quant's FPQuantLinear makes in __init__ (IST-DASLab/FP-Quant's
    inference_lib/src/fp_quant/module/linear.py), which is what it holds while from_pretrained makes its map: a
    `weight` and a `dqweight` [out, in] at the model's dtype whatever the checkpoint stores (its loader, transformers'
    FpQuantDeserialize, empties them as the stored weights load), `qweight` uint8 [out, in / 2], `scales` uint8
    [out, in / 32] (MXFP4) or [out, in / 16] (NVFP4), two global scales [1] and two Hadamard matrices [group,
    group] at the model's dtype (group: hadamard_group_size, else 16 for NVFP4 and 32 for MXFP4, FPQuantConfig's).

    Example:
        >>> _fp_quant_layer_tensors({"forward_dtype": "mxfp4"}, 128, 64, 2)["scales"]
        256
    """
    settings = settings or {}
    nvfp4 = settings.get("forward_dtype", "nvfp4") == "nvfp4"
    group = settings.get("hadamard_group_size")
    group = group if isinstance(group, int) and not isinstance(group, bool) and group > 0 else (16 if nvfp4 else 32)
    dense = out_features * in_features * itemsize
    return {"weight": dense, "dqweight": dense, "qweight": out_features * (in_features // 2),
            "scales": out_features * (in_features // (16 if nvfp4 else 32)), "weight_global_scale": itemsize,
            "act_global_scale": itemsize, "forward_hadamard_matrix": group * group * itemsize,
            "backward_hadamard_matrix": group * group * itemsize}


def _size_stored_layers(planned: PlannedModel, checkpoint: Checkpoint, method: str, binary: bool = False,
                        how: str = "") -> bool:
    """Size each Linear layer the checkpoint stores quantized (by SpQR, VPTQ, AQLM, HIGGS, FP-Quant or fbgemm_fp8)
    as from_pretrained's planner sizes the quantizer's module that replaces it, and say so in a warning; False where
    no layer was sized (the caller then says the plan is an upper bound).

    A layer's bytes are the checkpoint's tensors under it (`<layer>.dense_weights`, `<layer>.centroids.weight`,
    ...), its bias aside, which stays a parameter of the model at the floating dtype. FP-Quant's FPQuantLinear also
    holds the tensors its __init__ makes that the checkpoint does not store, a `weight` and a `dqweight` [out, in]
    at the model's dtype above all, while the map is made (`_fp_quant_layer_tensors`): transformers' planner counts
    them, so the plan does too, and the warning says so.
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    from weightdoctor.checkpoint.model import unique_tensors
    from weightdoctor.units import format_bytes

    linears = {name: module for name, module in planned.model.named_modules()
               if name and (isinstance(module, Conv1D) or type(module) is torch.nn.Linear)}
    held: dict[str, int] = {}
    leaves: dict[str, set[str]] = {}
    for info in unique_tensors(checkpoint.tensors):
        parts = info.name.split(".")
        # the nearest Linear above the tensor: VPTQ's codebooks are `<layer>.centroids.weight`, one level deeper
        owner = next((".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1) if ".".join(parts[:i]) in linears),
                     None)
        if owner is None:
            continue
        leaf = info.name[len(owner) + 1:]
        if leaf == "bias":
            continue
        held[owner] = held.get(owner, 0) + info.nbytes
        leaves.setdefault(owner, set()).add(leaf)
    # A config-only SpQR source: its layers as QuantizedLinear.create_placehodler builds them from the config's
    # shapes, which is all from_pretrained's planner sees of them too (it was planned dense, "an upper bound").
    from_config = not checkpoint.tensors and method in ("spqr", *_CONFIG_SIZED)
    if from_config and method == "spqr":
        for layer, counts in _spqr_config_shapes(planned.config).items():
            if layer in linears:
                held[layer] = sum(count * _SPQR_LEAF_BYTES[leaf] for leaf, count in counts.items())
                leaves[layer] = set(counts)
    elif from_config:
        # A config-only HIGGS or fbgemm_fp8 source: its layers as the quantizer makes them from the config, which is
        # what from_pretrained's planner counts too (it was planned dense, "an upper bound").
        for layer, (size, names) in (_config_sized_layers(planned.model, planned.config, method) or {}).items():
            if layer in linears:
                held[layer], leaves[layer] = size, names
    quantized = {name for name, names in leaves.items() if names != {"weight"}}
    if method == "fbgemm_fp8":  # its layers keep a float8 `weight` beside `weight_scale`: packed by its dtype
        quantized = {name for name in quantized if "weight_scale" in leaves[name]}
    stored: dict[str, int] = {}
    placeholder_bytes = 0
    settings = config_quantization_settings(planned.config)
    itemsize = getattr(torch, DTYPES[planned.dtype][0]).itemsize
    for name in sorted(quantized):
        weight = getattr(linears[name], "weight", None)
        if not isinstance(weight, torch.nn.Parameter) or not weight.numel():
            continue
        size = held[name]
        if method == "fbgemm_fp8":
            # FbgemmFp8Linear.__init__ makes them at its own dtypes, whatever the model's or the file's: a float8
            # `weight`, a float32 `weight_scale` [out, 1] and `input_scale_ub` [1] (a buffer save_pretrained does
            # not store) and a float32 `bias` [out]. The bias was counted at the model's bf16 (half its bytes), the
            # scale bound at nothing where the file does not store it.
            bias = getattr(linears[name], "bias", None)
            size = weight.numel() + weight.shape[0] * 4 + 4
            if isinstance(bias, torch.nn.Parameter):
                stored[f"{name}.bias"] = bias.numel() * 4
        if method == "fp_quant":
            # what its __init__ makes that the checkpoint does not store counts too, as transformers' planner
            # counts it
            extra = sum(size for leaf, size in _fp_quant_layer_tensors(
                settings, weight.shape[0], weight.shape[1], itemsize).items() if leaf not in leaves[name])
            size += extra
            placeholder_bytes += extra
        stored[f"{name}.weight"] = size
    if not stored:
        return False
    planned.stored_bytes = stored
    planned.quantizer_headroom = False
    weights = [key for key in stored if key.endswith(".weight")]  # fbgemm_fp8's float32 biases are keyed too
    dense = sum(linears[key.removesuffix(".weight")].weight.numel() for key in weights) * itemsize
    packed = sum(stored[key] for key in weights) - placeholder_bytes
    planned.warnings.append(
        f"the config quantizes the weights ({how or method}): the {counted(len(weights), 'quantized Linear layer')} of "
        f"{len(linears)} are sized "
        + (_CONFIG_SIZED_HOW.get(method, "") if from_config else "at the bytes the checkpoint stores for them")
        + f" ({format_bytes(packed, binary)} where "
        f"{planned.dtype} weights take {format_bytes(dense, binary)}), as transformers' planner sizes the quantizer's "
        "own layers that replace them; the rest at the floating dtype; its quantizer keeps no headroom in the budgets"
        + (f"; FP-Quant's layers also hold a weight and a dqweight at {planned.dtype} while from_pretrained makes its "
           f"map, which its planner counts ({format_bytes(placeholder_bytes, binary)} beside what the checkpoint "
           "stores, planned here as it places them) and its loader empties as the stored weights load"
           if placeholder_bytes else "")
        + ("; its FbgemmFp8Linear layers hold their weight_scale, input_scale_ub and bias in float32 whatever the "
           "model's dtype, counted so" if method == "fbgemm_fp8" else ""))
    return True


# How a config-only source's layers are sized, in words (`_size_stored_layers`' warning).
_CONFIG_SIZED_HOW = {
    "spqr": ("from the shapes its config gives (SpQRConfig.shapes, which spqr_quant's QuantizedLinear is built from: "
             "int64 dense_weights, int32 row_offsets, col_vals and in_perm; no weights were read)"),
    "higgs": ("from its config as transformers' HiggsLinear holds them (an int16 weight of bits / 16 a weight, "
              "scales of one a group_size, the two tables; no weights were read)"),
    "fbgemm_fp8": ("from its config as transformers' FbgemmFp8Linear holds them (a float8 weight, a float32 "
                   "weight_scale a row and input_scale_ub; no weights were read)"),
    "eetq": ("from its config as transformers' EetqLinear holds them (an int8 weight, float16 weight_scales and "
             "bias; no weights were read)")}


# GPTQ's and AWQ's stored tensors for one quantized Linear layer (its `bias` aside).
_LINEAR_QUANT_LEAVES = ("qweight", "qzeros", "scales", "g_idx")


def quantized_experts_not_loaded(model: Any, checkpoint: Checkpoint) -> str | None:
    """Why from_pretrained does not load a GPTQ or AWQ checkpoint's MoE experts, in a line; None when it does.

    GPTQ (optimum's `convert_model`) and AWQ (`replace_with_awq_linear`) replace `nn.Linear` layers only. The
    checkpoint stores each expert as its own quantized Linear (`experts.0.w1.qweight`), while transformers 5
    builds Mixtral's, Qwen-MoE's, ... experts fused (3-D `experts.gate_up_proj`): its conversion mapping merges
    `experts.*.w1.weight` into them, and no `qweight`. So the experts' tensors are unexpected keys, the fused
    experts missing (left at their init), and the load yields a broken model whatever the device map. Asked of
    transformers' own conversion mapping: a stored quantized tensor whose layer's `.weight` would be merged into
    a fused tensor of the model. Experts transformers swaps back to Linear layers for this quantizer
    (`MODULES_TO_PATCH_FOR_QUANTIZATION`) load, and are left to the plan.
    """
    from weightdoctor.quantized import quantization_of

    found = quantization_of(checkpoint.config)
    if found is None or found[0] not in ("gptq", "awq") or not checkpoint.tensors:
        return None
    try:
        import transformers
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
        from transformers.quantizers.base import MODULES_TO_PATCH_FOR_QUANTIZATION
    except ImportError:  # transformers 4 loads experts as Linear layers, which the quantizers replace
        return None
    from weightdoctor.checkpoint.model import unique_tensors

    known = set(model.state_dict(keep_vars=True))
    bases = {}
    for info in unique_tensors(checkpoint.tensors):
        base, _, leaf = info.name.rpartition(".")
        if leaf in _LINEAR_QUANT_LEAVES and info.name not in known:
            bases.setdefault(base, info.name)
    if not bases:
        return None
    patched = {name for name, entry in MODULES_TO_PATCH_FOR_QUANTIZATION.items()
               if found[0] in [str(getattr(m, "value", m)) for m in entry["quantization_methods"]]}
    with _quiet_libraries():
        mapping = get_model_conversion_mapping(model, None, None)
    renamings = [entry for entry in mapping if isinstance(entry, WeightRenaming)]
    converters = [entry for entry in mapping if isinstance(entry, WeightConverter)]
    state = model.state_dict()
    fused: dict[str, str] = {}  # a stored tensor -> the fused tensor of the model its layer's weight merges into
    for base, stored in bases.items():
        target, pattern = rename_source_key(f"{base}.weight", renamings, converters, model.base_model_prefix, state)
        if pattern is None or target not in state:
            continue
        owner = target.rpartition(".")[0]
        if type(model.get_submodule(owner) if owner else model).__name__ not in patched:
            fused[stored] = target
    if not fused:
        return None
    stored, target = next(iter(fused.items()))
    count = sum(1 for info in unique_tensors(checkpoint.tensors) if info.name.rpartition(".")[0] in
                {name.rpartition(".")[0] for name in fused})
    return (f"this {found[0].upper()} checkpoint stores its MoE experts as quantized Linear layers ({count:,} "
            f"tensors, e.g. {stored}), but transformers {transformers.__version__} builds "
            f"{type(model).__name__}'s experts fused ({target}, {len(state[target].shape)}-D) and its "
            f"{found[0].upper()} quantizer replaces nn.Linear layers only: from_pretrained leaves those tensors "
            "unexpected and the experts' weights missing (left at their init), a broken model on any device map; "
            "GPTQModel and vLLM load such checkpoints with their own model code")


def _fp8_quantization(config: dict[str, Any] | None) -> Mapping[str, Any] | None:
    """The `quantization_config` of a config of transformers' fine-grained FP8 (`quant_method: fp8`), else None."""
    quantization = config_quantization_settings(config)
    return quantization if quantization is not None and quantization.get("quant_method") == "fp8" else None


def _is_fine_grained_fp8(config: dict[str, Any] | None) -> bool:
    """Whether transformers' fine-grained FP8 quantizer loads this config (`quant_method: fp8`, not dequantized)."""
    quantization = _fp8_quantization(config)
    return quantization is not None and not quantization.get("dequantize")


def _loads_dense(config: dict[str, Any] | None, has_weights: bool = True) -> str | None:
    """Why from_pretrained loads this quantized config's Linear weights dense, at the dtype it is given (in words,
    for a warning), else None.

    transformers' CompressedTensorsConfig and MetalConfig read `dequantize: true` (compressed-tensors also the
    deprecated `run_compressed: false`) from config.json and dequantize every weight at load; a compressed-tensors
    `quantization_status` other than "compressed" means the weights were never packed, and they stay dense.
    A GgufConfig (`quant_method: gguf`, in the config of a model once loaded from a .gguf) packs only what it reads
    from a .gguf file (`gguf_file=`): beside safetensors or .bin weights (`has_weights`) its quantizer is left
    unsupported and the weights load as they are stored.
    """
    quantization = config_quantization_settings(config)
    if quantization is None:
        return None
    if quantization.get("quant_method") == "gguf" and has_weights:
        return ("its quantization_config is GGUF's, which packs only weights read from a .gguf file (from_pretrained's "
                "gguf_file=), not these")
    if quantization.get("quant_method") not in ("compressed-tensors", "metal"):
        return None
    method = quantization["quant_method"]
    if quantization.get("dequantize") is True:
        return f"its {method} quantization_config sets dequantize: true"
    if method != "compressed-tensors":
        return None
    if quantization.get("run_compressed") is False:
        return "its compressed-tensors quantization_config sets run_compressed: false (dequantize: true)"
    status = quantization.get("quantization_status")
    if isinstance(status, str) and status != "compressed":
        return (f"its compressed-tensors quantization_status is {status!r}, not \"compressed\": the weights are "
                "stored dense")
    return None


def _fp8_dequantized(config: dict[str, Any] | None) -> bool:
    """A fine-grained FP8 config that asks transformers to dequantize it (`dequantize: true`) on any GPU."""
    quantization = _fp8_quantization(config)
    return quantization is not None and bool(quantization.get("dequantize"))


def _planned_fp8(checkpoint: Checkpoint, model_class: str | None, warnings: list[str]) -> PlannedModel:
    """The model `from_pretrained` builds for a fine-grained FP8 checkpoint on a GPU of compute capability >= 8.9."""
    if _fp8_dequantized(checkpoint.config):
        raise UsageError("--dtype fp8: this FP8 checkpoint's quantization_config sets dequantize: true, so "
                         "transformers dequantizes it on every GPU: plan it without --dtype (or at fp16, bf16)",
                         path=str(checkpoint.path))
    from weightdoctor.quantized import quantization_of

    if not _is_fine_grained_fp8(checkpoint.config):
        raise UsageError("--dtype fp8 plans a checkpoint quantized with transformers' fine-grained FP8 (its "
                         "config's quantization_config has quant_method \"fp8\"); this one is not: "
                         + ("plan it without --dtype (its own quantization is planned then)" if quantization_of(
                             checkpoint.config) is not None
                             # a GGUF loads dequantized: transformers refuses bitsandbytes beside gguf_file=
                             else "use fp32, bf16 or fp16" if checkpoint.format == "gguf"
                             else "use fp16, bf16, int8 or int4"),
                         path=str(checkpoint.path))
    config = checkpoint.config or {}
    # The quantizer leaves the model's dtype as from_pretrained(dtype="auto") picks it (the config's): the rest
    # (embeddings, norms, biases) stays at that dtype beside the float8 weights.
    rest = default_dtype(checkpoint)
    model = _fp8_model(config, model_class, DTYPES[rest if rest in FLOAT_DTYPES else "fp8"][0])
    warnings.append("planned as transformers keeps FP8 weights on GPUs of compute capability 8.9 and above (H100, "
                    "H200, L40S, RTX 4090); on older GPUs and on CPU it dequantizes them to bf16 (the plan without "
                    "--dtype)")
    return PlannedModel(model, "config", type(model).__name__, "fp8", config, warnings)


def _fp8_model(config: dict[str, Any], model_class: str | None, torch_dtype: str) -> torch.nn.Module:
    """The model built at `torch_dtype` (its unquantized rest), then given transformers' FP8 modules."""
    model = _build_from_config(config, torch_dtype, model_class)
    _keep_fp8(model, config, torch_dtype)
    return model


def _fp8_rest_dtype(config: dict[str, Any] | None) -> str:
    """The dtype an FP8 checkpoint's unquantized rest is kept at: its config's (bf16 where it names none)."""
    rest = DTYPE_ALIASES.get(_config_dtype(config or {}) or "", "")
    return rest if rest in FLOAT_DTYPES else "bf16"


def _fp8_embeddings(config: dict[str, Any] | None) -> bool:
    """An FP8 config naming embedding tables to keep in FP8 (`modules_to_convert`): transformers' quantizer swaps
    them for FP8Embedding even where it dequantizes the rest (no FP8 GPU, or `dequantize: true`)."""
    quantization = _fp8_quantization(config)
    return quantization is not None and bool(quantization.get("modules_to_convert"))


def _keep_fp8(model: torch.nn.Module, config: dict[str, Any], torch_dtype: str, dequantize: bool = False) -> None:
    """Swap in the FP8 modules transformers' own quantizer swaps in before loading (FP8Linear, FP8Experts: float8
    weights and their block scales; FP8Embedding for `modules_to_convert`), with the modules it leaves alone
    (output embeddings, its skip list). `dequantize`: as it prepares the model where it dequantizes (no FP8 GPU):
    the embedding tables only."""
    settings = {**(config_quantization_settings(config) or {}), **({"dequantize": True} if dequantize else {})}
    with fp8_experts_class_kept():
        _prepare_with_quantizer(model, settings, torch_dtype, "FP8")


def _mxfp4_dequantized(config: dict[str, Any] | None) -> bool:
    """An MXFP4 config that asks transformers to dequantize it (`dequantize: true`) on every device."""
    settings = config_quantization_settings(config)
    return settings is not None and settings.get("quant_method") == "mxfp4" and bool(settings.get("dequantize"))


def _keep_mxfp4(model: torch.nn.Module, config: dict[str, Any], dtype: str, binary: bool = False) -> str:
    """Swap in the experts transformers' MXFP4 quantizer swaps in before from_pretrained computes its map, and say
    so in a line.

    `replace_with_mxfp4_linear` replaces the experts of every GptOssMLP whose `<mlp>.experts` name
    `should_convert_module` accepts against `get_modules_to_not_convert` (the config's modules_to_not_convert, else
    the output embeddings; `_keep_in_fp32_modules`) by transformers' Mxfp4GptOssExperts(config): uint8
    `gate_up_proj` [experts, 2 x intermediate, hidden / 2] and `down_proj` [experts, hidden, intermediate / 2], two
    FP4 values a byte, beside float32 biases; no scales while the map is made, and no element size or headroom of
    its own. It was planned as the dense experts at the floating dtype, "an upper bound" about 4x their bytes. That
    is what it holds where it can run them (CUDA of compute capability 7.5 and above with triton >= 3.4 and the
    kernels package, or an XPU); elsewhere its validate_environment dequantizes them (the line says so). The import
    of the hub's triton kernels replace_with_mxfp4_linear makes is not run: the module is built by hand.
    """
    import torch
    from transformers.integrations.mxfp4 import Mxfp4GptOssExperts
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    settings = config_quantization_settings(config) or {}
    skip = settings.get("modules_to_not_convert")
    skip = [name for name in skip if isinstance(name, str)] if isinstance(skip, list) else None
    keep_fp32 = getattr(model, "_keep_in_fp32_modules", None)
    not_convert = HfQuantizer.get_modules_to_not_convert(model, skip, list(keep_fp32) if keep_fp32 else None)
    swapped = 0
    held = dense = 0
    for name, module in list(model.named_modules()):
        if type(module).__name__ != "GptOssMLP" or not should_convert_module(f"{name}.experts", not_convert):
            continue
        before = sum(t.numel() * t.element_size() for t in module.experts.parameters())
        with torch.device("meta"):
            module.experts = Mxfp4GptOssExperts(model.config)
        swapped += 1
        dense += before
        held += sum(t.numel() * t.element_size() for t in module.experts.parameters())
    from weightdoctor.units import format_bytes

    if not swapped:
        return ("the config quantizes the weights (mxfp4), but its quantizer swaps in no experts here (no GptOssMLP "
                f"it converts): planned at {dtype}")
    return (f"the config quantizes the weights (mxfp4): the experts of {counted(swapped, 'MLP layer')} are planned as "
            "transformers' Mxfp4GptOssExperts holds them (uint8 gate_up_proj and down_proj, two FP4 values a byte, "
            f"beside float32 biases: {format_bytes(held, binary)} where {dtype} experts take "
            f"{format_bytes(dense, binary)}), the rest at {dtype}; that is what from_pretrained places on a GPU of "
            "compute capability 7.5 and above with triton >= 3.4 and the kernels package installed; without them it "
            f"dequantizes the experts to bf16 (--dtype bf16 plans that)")


def _is_bitnet(config: dict[str, Any] | None) -> bool:
    """Whether from_pretrained quantizes this config's model with transformers' BitNet quantizer."""
    settings = config_quantization_settings(config)
    return settings is not None and settings.get("quant_method") == "bitnet"


def _keep_bitnet(model: torch.nn.Module, config: dict[str, Any], torch_dtype: str) -> str:
    """Swap in the layers transformers' BitNet quantizer swaps in before from_pretrained computes its map, by that
    quantizer itself (its `preprocess_model`), and say so in a line.

    BitLinear (linear_class "bitlinear") holds a uint8 `weight` [out / 4, in], four ternary values a byte, and a
    `weight_scale` at the model's dtype; AutoBitLinear keeps a Linear's weight at that dtype beside the scale. The
    model was planned as its dense bf16 Linear layers, four times the packed weights, said as an upper bound, and
    without the 10% of every budget the quantizer keeps (`adjust_max_memory`): a placement from_pretrained does not
    make.
    """
    _prepare_with_quantizer(model, dict(config_quantization_settings(config) or {}), torch_dtype, "BitNet")
    swapped = [name for name, module in model.named_modules() if type(module).__name__ in ("BitLinear",
                                                                                          "AutoBitLinear")]
    kind = type(model.get_submodule(swapped[0])).__name__ if swapped else "BitLinear"
    held = ("a uint8 weight, four ternary values a byte, and its weight_scale" if kind == "BitLinear"
            else f"its weight at {torch_dtype} and its weight_scale")
    return (f"the config quantizes the weights (bitnet): planned with the {counted(len(swapped), kind + ' layer')} "
            f"transformers' BitNet quantizer swaps in before from_pretrained places the model (each holds {held}), "
            "and the 10% of every budget the quantizer keeps")


def bitnet_refusal_here(config: dict[str, Any] | None, device_map: dict[str, int | str]) -> str | None:
    """What transformers' BitNet quantizer says of `device_map` on this machine where it refuses it, else None.

    from_pretrained's `_get_device_map` hands the map it made to the quantizer's `validate_environment`. BitNet's
    raises ValueError for a map holding cpu or disk where `torch.cuda.is_available()`; without CUDA it only logs
    that inference will be slow, and from_pretrained loads the map (the CPU-only answer).
    """
    from transformers.quantizers.auto import AutoHfQuantizer, AutoQuantizationConfig

    settings = dict(config_quantization_settings(config) or {})
    try:
        with _quiet_libraries():
            quantizer = AutoHfQuantizer.from_config(AutoQuantizationConfig.from_dict(settings), pre_quantized=True)
            quantizer.validate_environment(device_map=dict(device_map))
    except ValueError as exc:
        return " ".join(str(exc).split())
    except Exception:  # noqa: BLE001 - its model was prepared by this quantizer already: nothing else to say
        return None
    return None


def offload_refusing_quantizer(config: dict[str, Any] | None,
                               device_map: dict[str, int | str]) -> tuple[str, str] | None:
    """(the quantizer's name, the start of its error) where transformers' quantizer for `config` refuses
    `device_map` because it holds cpu or disk, else None.

    Their `validate_environment(device_map=...)`, which from_pretrained's `_get_device_map` calls on the map it
    made, raise ValueError (transformers 5.25): HIGGS' and HQQ's for any cpu or disk entry; FP-Quant's, unless its
    config sets `pseudoquantization`, for a disk entry or a cpu entry beside others (its test: `not pseudo and
    len(map) > 1 and "cpu" in values or "disk" in values`). Read from the config, as these quantizers need their
    packages (flute, hqq, fp_quant) to be built.

    Example:
        >>> offload_refusing_quantizer({"quantization_config": {"quant_method": "higgs", "bits": 4}},
        ...                            {"model.layers": 0, "lm_head": "cpu"})[0]
        'HIGGS'
    """
    settings = config_quantization_settings(config)
    if settings is None:
        return None
    method = settings.get("quant_method")
    values = list(device_map.values())
    offloads = "cpu" in values or "disk" in values
    if method == "higgs" and offloads:
        return "HIGGS", "You are attempting to load a HIGGS model with a device_map that contains a CPU or disk device"
    if method == "hqq" and offloads:
        return "HQQ", "You are attempting to use an HQQ model with a device_map that contains a CPU or disk device"
    if method == "torchao" and "disk" in values and len(values) > 1:
        # pre-quantized (what a checkpoint with a torchao quantization_config is): disk beside other entries
        return ("torchao", "You are attempting to perform disk offload with a pre-quantized torchao model This is "
                "not supported yet")
    if method == "fp_quant" and (not settings.get("pseudoquantization") and len(values) > 1 and "cpu" in values
                                 or "disk" in values):
        return ("FP-Quant", "You are attempting to load a FPQuant model with a device_map that contains a CPU or "
                "disk device")
    return None


def _prepare_with_quantizer(model: torch.nn.Module, settings: dict[str, Any], torch_dtype: str, name: str) -> None:
    """Prepare `model` as from_pretrained does before it computes its map: transformers' own quantizer for
    `settings` (a quantization_config) swaps in its layers (`preprocess_model`). `name` is the quantizer's name in
    the refusal when it cannot."""
    import torch
    from transformers.quantizers.auto import AutoHfQuantizer, AutoQuantizationConfig

    dtype = getattr(torch, torch_dtype)  # the dtype the model was built at, as from_pretrained passes it
    try:
        with _quiet_libraries():
            quantizer = AutoHfQuantizer.from_config(AutoQuantizationConfig.from_dict(settings), pre_quantized=True)
            # from_pretrained's next step; its environment check (which dequantizes FP8 without such a GPU, and
            # needs CUDA for BitNet) is left out on purpose: the plan is for the GPUs given, not for this machine.
            # from_pretrained runs it inside its init contexts, the default dtype set to the model's: FP8Linear
            # makes its bias with torch.empty, bf16 there (float32 outside).
            with _default_dtype(dtype):
                quantizer.preprocess_model(model=model, dtype=dtype, device_map="auto", checkpoint_files=None)
    except Exception as exc:  # a hostile or unsupported quantization_config
        detail = clip_words(" ".join(str(exc).split()), 200)
        raise UsageError(f"transformers' {name} quantizer cannot prepare this model ({type(exc).__name__}: "
                         f"{detail})") from exc


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch's default dtype set to `dtype` for the block (transformers' `local_torch_dtype`)."""
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@contextlib.contextmanager
def fp8_experts_class_kept() -> Iterator[None]:
    """Leave transformers' `FP8Experts` class as it was found. Its FP8 quantizer decorates that class in place
    (`use_experts_implementation` wraps `__init__` and `forward` again) for every MoE layer it converts, so that in
    one process the wrappers pile up until building an FP8 MoE model fails with RecursionError (a few hundred
    layers: a few DeepSeek-V3 plans). The modules already built keep what they were built with."""
    try:
        from transformers.integrations.finegrained_fp8 import FP8Experts
    except ImportError:  # an older transformers: no FP8Experts to keep
        yield
        return
    before = dict(vars(FP8Experts))
    try:
        yield
    finally:
        for key in set(vars(FP8Experts)) - set(before):
            delattr(FP8Experts, key)
        for key, value in before.items():
            if vars(FP8Experts).get(key) is not value:
                setattr(FP8Experts, key, value)


def _head_auto_class(config: Any) -> str | None:
    """The first Auto class with a language-model head that has a model for `config`'s type (AutoModelForCausalLM
    for Llama, AutoModelForImageTextToText for LLaVA), or None: an example `--model-class` that works."""
    import transformers

    heads = ("AutoModelForCausalLM", "AutoModelForImageTextToText", "AutoModelForSeq2SeqLM", "AutoModelForMaskedLM")
    for name in heads:
        mapping = getattr(getattr(transformers, name, None), "_model_mapping", None)
        try:
            if mapping is not None and type(config) in mapping:
                return name
        except Exception:  # noqa: BLE001 - a lazy mapping that cannot import one of its models: try the next
            continue
    return None


def _build_from_config(config: dict[str, Any], torch_dtype: str, model_class: str | None) -> torch.nn.Module:
    """Instantiate under `torch.device("meta")` with the dtype set, as `from_pretrained` instantiates."""
    import transformers
    from transformers import CONFIG_MAPPING

    from weightdoctor.load_simulation import concrete_class_name
    from weightdoctor.meta_model import build_meta_model, shown_type

    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type not in CONFIG_MAPPING:
        # With --model-class, this is an error (not a fallback to the tensors): say how to give a config it knows.
        hint = (f"; --model-class {model_class} is built from the source's config: give a config.json of "
                f"{model_class}'s model type as SOURCE" if model_class else "")
        if isinstance(config.get("auto_map"), dict) and not model_class:
            # Nemotron-NAS (`nemotron-nas`, block_configs), DeciLM, Phi-3-small: a type of the repo's own, which no
            # transformers upgrade knows; from_pretrained builds it only by running the repo's code.
            hint = ("; the repo ships its own modelling code (auto_map, loaded with trust_remote_code), which "
                    "weightdoctor never runs")
        raise UsageError(f"transformers {transformers.__version__} does not know model_type {shown_type(model_type)}"
                         f"{hint}")
    if model_class:
        # AutoModelForCausalLM.from_pretrained builds the class its mapping gives for the config's type
        model_class = concrete_class_name(config, model_class)
    try:
        with _quiet_libraries():
            # Untied, as from_pretrained builds it before computing its map: its planner skips the tied copies by
            # name (all_tied_weights_keys). Tied, named_parameters() yields a tensor once under its first name,
            # the tied copy's where the head is registered first (XLMRobertaForMaskedLM's lm_head), and the
            # planner would then count the embeddings nowhere.
            # A sub-config's dtype "auto" is planned as once fixed (removed), as a top-level one is, replaced by
            # `dtype` here: `auto_dtype_field_warning` says so.
            return build_meta_model(without_sub_config_auto_dtypes(config), model_class, dtype=torch_dtype,
                                    tie_weights=False,
                                    other_config_hint="or give a config.json of that model type as SOURCE")
    except UsageError:
        raise
    except Exception as exc:  # third-party model code can raise anything on a hostile config
        detail = clip_words(" ".join(str(exc).split()), 200)
        raise UsageError(f"transformers cannot build this config ({type(exc).__name__}: {detail})") from exc


NUMBERED_BLOCK = "NumberedBlock"
# Tensors and modules one module of a tensor-name tree may hold side by side. accelerate's infer_auto_device_map
# re-filters its list of equally large layers for every entry it places, so a flat tree of 10,000 same-sized
# tensors took 16 s and 40,000 minutes; real trees hold at most some hundreds (MoE experts) in one module.
MAX_MODULE_ENTRIES = 4096
# Modules one tensor name may nest: real names are under 20 deep. A 120 KB name of 30,000 segments made 1.8 GB of
# prefixes (their total length is the square of the depth) in 30 s, and then a RecursionError in torch's walk.
MAX_MODULE_DEPTH = 64


def _numbered_block_class() -> type[torch.nn.Module]:
    """The class of the numbered modules of a tensor tree (`h.0`, `layers.11`): one class, so the planner can
    be told to keep each whole (`_no_split_modules`), as transformers models list their layer classes."""
    import torch

    global _NUMBERED_BLOCK_CLASS
    if _NUMBERED_BLOCK_CLASS is None:
        _NUMBERED_BLOCK_CLASS = type(NUMBERED_BLOCK, (torch.nn.Module,), {
            "__doc__": "A numbered block of a module tree rebuilt from tensor names (kept whole when planning).",
        })
    return _NUMBERED_BLOCK_CLASS


_NUMBERED_BLOCK_CLASS: type | None = None


# Libraries that keep their own config beside the weights under another name than config.json, and what reads it:
# GLiNER's gliner_config.json (urchade/gliner_*: pytorch_model.bin beside it, no config.json).
_OWN_CONFIG_FILES = (("gliner_config.json", "GLiNER's own config, which GLiNER.from_pretrained reads"),)


def _own_config_beside(checkpoint: Checkpoint) -> str | None:
    """What a library's own config beside the weights is (`_OWN_CONFIG_FILES`), or None."""
    from weightdoctor.meta_model import stable_audio_config
    from weightdoctor.shard import vocos_model

    folder = checkpoint.path if checkpoint.path.is_dir() else checkpoint.path.parent
    return next((f"{name} beside the weights is {what}" for name, what in _OWN_CONFIG_FILES
                 if (folder / name).is_file()), None) or stable_audio_config(folder) or (
        "config.yaml beside the weights is Vocos' own config, which Vocos.from_pretrained reads"
        if vocos_model(checkpoint) else None)


def _no_transformers_config(config: dict[str, Any] | None, own_config: str | None = None) -> str:
    """Why nothing says which modules stay whole: no config.json (`own_config`: what another library's config
    beside the weights is), or one that is not transformers' (diffusers', timm's: no model_type to build the model
    from).

    Example:
        >>> _no_transformers_config({"_class_name": "UNet2DConditionModel"})
        'config.json (a diffusers UNet2DConditionModel config, not a transformers one) does not say'
        >>> _no_transformers_config(None, "gliner_config.json beside the weights is GLiNER's own config")
        "no config.json (gliner_config.json beside the weights is GLiNER's own config) to say"
    """
    from weightdoctor.meta_model import coqui_tts_model, is_kokoro_config, is_mamba_ssm_config, is_tensorrt_llm_config

    if config is None:
        return f"no config.json ({own_config}) to say" if own_config else "no config.json to say"
    if isinstance(config.get("_class_name"), str):
        what = f"a diffusers {config['_class_name']} config, not a transformers one"
    elif is_tensorrt_llm_config(config):  # `architecture` too, as timm's: told apart by its `mapping`
        what = f"a TensorRT-LLM {config['architecture']} checkpoint config, not a transformers one"
    elif isinstance(config.get("architecture"), str):
        what = f"a timm {config['architecture']} config, not a transformers one"
    elif is_mamba_ssm_config(config):
        what = "mamba_ssm's own config, not a transformers one"
    elif is_kokoro_config(config):
        what = "Kokoro's own config, which its KModel reads, not a transformers one"
    elif (coqui := coqui_tts_model(config)) is not None:
        # Coqui's trainer writes config.json too (XTTS: `"model": "xtts"`, `model_args`, `audio`): read as a
        # transformers config that lacks its model_type, it was called one.
        what = f"Coqui TTS's own config, model {coqui!r}, not a transformers one"
    elif isinstance(config.get("model_type"), str) and config["model_type"]:
        what = f"model_type {config['model_type']!r}, which the model could not be built from"
    else:
        what = "no model_type"
    return f"config.json ({what}) does not say"


def build_tensor_tree(checkpoint: Checkpoint, torch_dtype: str | None) -> torch.nn.Module:
    """A module tree whose parameters are the checkpoint's tensors on the meta device, grouped by dotted name.

    A tensor saved under several names becomes one Parameter registered under each, so accelerate sees it tied.
    Floating tensors take `torch_dtype` when one is given. Modules are added in natural name order (`h.2`
    before `h.10`, as transformers sorts state-dict names), which is the order the planner places them in; a
    module named by a number (`h.0`, `layers.11`) is a `NumberedBlock`, listed in the root's
    `_no_split_modules` so that no layer is split across devices.

    Raises:
        UsageError: a tensor name that cannot be a module path (empty segment), or no tensors at all.
    """
    import torch
    from transformers.core_model_loading import dot_natural_key

    if not checkpoint.tensors:
        raise UsageError("the source holds no tensors and no buildable config", path=str(checkpoint.path))
    block_class = _numbered_block_class()
    target = getattr(torch, torch_dtype) if torch_dtype else None
    root = torch.nn.Module()
    by_view: dict[str, torch.nn.Parameter] = {}
    deep = next((t for t in checkpoint.tensors if t.name.count(".") >= MAX_MODULE_DEPTH), None)
    if deep is not None:
        shown = deep.name if len(deep.name) <= 80 else f"{deep.name[:80]}..."
        raise UsageError(
            f"tensor name {shown!r} nests {deep.name.count('.'):,} modules (the limit is {MAX_MODULE_DEPTH}): no "
            "model is that deep; give its config.json (plan-devices builds the model from it)",
            path=str(checkpoint.path))
    prefixes = {
        ".".join(t.name.split(".")[:end]) for t in checkpoint.tensors for end in range(1, t.name.count(".") + 1)
    }
    for info in sorted(checkpoint.tensors, key=lambda t: dot_natural_key(t.name)):
        parts = info.name.split(".")
        if any(not part for part in parts):
            raise UsageError(f"tensor name {info.name!r} has an empty segment; cannot group it into modules",
                             path=str(checkpoint.path))
        if info.name in prefixes:
            # bitsandbytes keeps `weight.absmax`, `weight.quant_state...` beside `weight`: say what it likely is.
            quantized = any(n.startswith(info.name + ".") and ("quant" in n or "absmax" in n)
                            for n in prefixes | {t.name for t in checkpoint.tensors})
            raise UsageError(
                f"tensor {info.name!r} is also the prefix of other tensor names, so it cannot be a module path"
                + ("; these look like bitsandbytes quantization side tensors (absmax, quant_state), which a "
                   "tensor-by-tensor plan cannot place: plan from the model's folder with its config.json instead"
                   if quantized else ""),
                path=str(checkpoint.path))
        module = root
        for part in parts[:-1]:
            child = module._modules.get(part)
            if child is None:
                child = block_class() if part.isdigit() else torch.nn.Module()
                try:
                    module.add_module(part, child)
                except (KeyError, TypeError) as exc:
                    raise UsageError(f"tensor name {info.name!r} cannot be a module path ({exc})",
                                     path=str(checkpoint.path)) from exc
            module = child
        # One tensor under several names (tied weights) is one Parameter; slices of one storage are not.
        # accelerate cannot place a tie that involves a top-level name (no module holds it): those are
        # planned as separate tensors, which counts their memory twice rather than failing.
        tieable = info.view_id is not None and "." in info.name
        param = by_view.get(info.view_id) if tieable else None  # type: ignore[arg-type]
        if param is None:
            dtype = getattr(torch, info.dtype, None)
            if not isinstance(dtype, torch.dtype):
                dtype = torch.uint8  # a dtype this torch lacks: count its bytes
            if target is not None and dtype.is_floating_point:
                dtype = target
            # An empty tensor's strides are any: torch's own for [0, 2**62, 3] pass 2**63 - 1 ("Stride calculation
            # overflowed"), where a pickle gives its own and torch.load reads it.
            param = torch.nn.Parameter(torch.empty(info.shape, dtype=dtype, device="meta") if info.num_params else
                                       torch.empty_strided(info.shape, (1,) * len(info.shape), dtype=dtype,
                                                           device="meta"), requires_grad=False)
            if tieable:
                by_view[info.view_id] = param  # type: ignore[index]
        try:
            module.register_parameter(parts[-1], param)
        except (KeyError, TypeError) as exc:
            raise UsageError(f"tensor name {info.name!r} cannot be a module path ({exc})",
                             path=str(checkpoint.path)) from exc
    for name, module in root.named_modules():
        entries = len(module._modules) + len(module._parameters)
        if entries > MAX_MODULE_ENTRIES:
            where = f"module {name!r}" if name else "the top level"
            raise UsageError(
                f"{where} of the tensor names holds {entries:,} tensors and modules side by side (the limit is "
                f"{MAX_MODULE_ENTRIES:,}): accelerate's placement takes time in the square of that, and no model is "
                "that flat; give its config.json (plan-devices builds the model from it)", path=str(checkpoint.path))
    if any(isinstance(module, block_class) for module in root.modules()):
        root._no_split_modules = [NUMBERED_BLOCK]
    return root


# ----------------------------------------------------------------------------------------------- sizing


class _SizeOverride:
    """A stand-in for a transformers quantizer: the planner asks it each parameter's element size.

    With `quantized_size` it mirrors bitsandbytes' quantizers (`quantized_element_size` 1 or 0.5 for the weight
    of every `nn.Linear` except the modules `get_keys_to_not_convert` keeps, and 10 % headroom in
    `adjust_max_memory`); with `float_size` every floating parameter counts at that size instead of its own.
    """

    def __init__(self, model: torch.nn.Module, quantized_size: float | None = None, float_size: int | None = None,
                 stored_bytes: dict[str, int] | None = None, headroom: bool = True,
                 skip_modules: list[str] | None = None, swapped: bool = False,
                 quantized_weights: set[str] | None = None):
        self.quantized_size = quantized_size
        # the quantizer's own layers are in the model (BitNet): sizes as they are, its headroom kept
        self.keeps_headroom = headroom and (quantized_size is not None or swapped)
        self.float_size = float_size
        # Weights sized at what the checkpoint stores for their module (see `_size_config_quantization`).
        self.stored_bytes = stored_bytes or {}
        self.headroom = headroom
        self._quantized: set[str] = set()
        if quantized_size is not None:
            # the weights its quantizer sizes at `quantized_size`: given (torchao's), else bitsandbytes' choice
            self._quantized = (quantized_weights if quantized_weights is not None
                               else _bnb_quantized_weights(model, skip_modules))

    def param_element_size(self, model: Any, name: str, param: torch.Tensor) -> float:
        import torch

        stored = self.stored_bytes.get(name)
        if stored is not None:
            return stored / param.numel()
        if self.quantized_size is not None and name in self._quantized:
            return self.quantized_size
        if self.float_size is not None and param.is_floating_point() and isinstance(param, torch.nn.Parameter):
            return self.float_size
        return param.element_size()

    def adjust_max_memory(self, max_memory: dict[int | str, Any]) -> dict[int | str, Any]:
        if not self.keeps_headroom:
            return max_memory
        return {key: value * 0.90 for key, value in max_memory.items()}

    def validate_environment(self, *args: Any, **kwargs: Any) -> None:
        return None


def _bnb_quantized_weights(model: torch.nn.Module, skip_modules: list[str] | None = None) -> set[str]:
    """Names of the weights bitsandbytes would quantize, chosen as its quantizer chooses them.

    `replace_with_bnb_linear` swaps every exact `nn.Linear` (and GPT-2's `Conv1D`) whose name
    `should_convert_module` accepts against the quantizer's `get_modules_to_not_convert` (output embeddings,
    tied and last modules, `_keep_in_fp32_modules`); their weights (not biases) are stored quantized. A config's
    `llm_int8_skip_modules` (`skip_modules`: Unsloth's dynamic 4-bit saves keep a model's sensitive layers in
    bf16 so) replaces those defaults, as the quantizer's `_process_model_before_weight_loading` passes it.
    """
    import torch
    from transformers.pytorch_utils import Conv1D
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    keep_fp32 = getattr(model, "_keep_in_fp32_modules", None)
    skip = HfQuantizer.get_modules_to_not_convert(model, skip_modules, list(keep_fp32) if keep_fp32 else None)
    names: set[str] = set()
    for module_name, module in model.named_modules():
        if not module_name or not should_convert_module(module_name, skip):
            continue
        if isinstance(module, Conv1D) or type(module) is torch.nn.Linear:
            names.add(f"{module_name}.weight")
    return names


def _sizer_for(planned: PlannedModel, dtype: str) -> _SizeOverride | None:
    """The size override that makes `planned.model` count as if built at `dtype` (None: as built); cached."""
    key = ("sizer", dtype)
    if key not in planned._cache:
        planned._cache[key] = _new_sizer(planned, dtype)
    return planned._cache[key]


def _new_sizer(planned: PlannedModel, dtype: str) -> _SizeOverride | None:
    quantized = DTYPES[dtype][1]
    if quantized is not None:
        if not planned.is_transformers:
            return None
        if dtype == planned.dtype:  # the checkpoint's own quantization, as its config sets it
            torchao = torchao_element_size(planned.config) is not None
            return _SizeOverride(planned.model, quantized_size=quantized, stored_bytes=planned.stored_bytes,
                                 headroom=planned.quantizer_headroom, skip_modules=bnb_skip_modules(planned.config),
                                 quantized_weights=torchao_quantized_weights(planned.model, planned.config)
                                 if torchao else None)
        # Counted with the rest at the dtype `--dtype int8 / int4` builds it at (`quantized_rest_dtype`), whatever
        # dtype this plan is at: a float32 model planned at fp32 had its int8 rung's rest counted at float16, where
        # `--dtype int8` (from_pretrained with BitsAndBytesConfig and dtype="auto") holds it at float32.
        import torch

        return _SizeOverride(planned.model, quantized_size=quantized,
                             float_size=getattr(torch, planned.quantized_rest).itemsize)
    if dtype == planned.dtype:
        if planned.stored_bytes:  # SpQR, VPTQ, ... layers at their stored bytes (`_size_stored_layers`)
            return _SizeOverride(planned.model, stored_bytes=planned.stored_bytes, headroom=False)
        return _SizeOverride(planned.model, swapped=True) if planned.quantizer_swapped else None
    import torch

    return _SizeOverride(planned.model, float_size=getattr(torch, DTYPES[dtype][0]).itemsize)


def _sizes(planned: PlannedModel, dtype: str) -> tuple[dict[str, int], dict[str, int]]:
    """(bytes of every module, parameter and buffer name; bytes of each parameter and buffer) at `dtype`.

    Counted by transformers' `compute_module_sizes`, as the planner counts them (tied duplicates once); cached.
    """
    key = ("sizes", dtype)
    if key not in planned._cache:
        compute_module_sizes = _hf_placement().compute_module_sizes
        sizer = _sizer_for(planned, dtype)
        raw = planned._cache.get(("planner-sizes", id(sizer)))  # what the planner itself counted, if it ran
        if raw is None:
            raw, _ = compute_module_sizes(planned.model, sizer, only_modules=False)  # type: ignore[arg-type]
        sizes = {k: int(math.ceil(v)) for k, v in raw.items()}
        params, buffers, _ = _tensor_names(planned)
        planned._cache[key] = (sizes, {n: sizes[n] for n in params + buffers if n in sizes})
    return planned._cache[key]


def tied_copies(model: torch.nn.Module) -> set[str]:
    """The names of a transformers model's tied copies (`all_tied_weights_keys`: `lm_head.weight` tied to the
    input embeddings), which its planner leaves uncounted; empty for other trees."""
    tied = getattr(model, "all_tied_weights_keys", None)
    return set(tied) if isinstance(tied, dict) else set()


def _tensor_names(planned: PlannedModel) -> tuple[list[str], list[str], int]:
    """(parameter names, buffer names, number of parameters), tied parameters once; cached."""
    if "names" not in planned._cache:
        # One walk over the modules, in named_parameters()/named_buffers() order, shared tensors once and tied
        # copies left out (the model is built untied, as from_pretrained builds it).
        params: list[str] = []
        buffers: list[str] = []
        count = 0
        seen: set[int] = set()
        copies = tied_copies(planned.model)
        for prefix, module in planned.model.named_modules():
            for name, param in module._parameters.items():
                full = f"{prefix}.{name}" if prefix else name
                if param is not None and id(param) not in seen and full not in copies:
                    seen.add(id(param))
                    params.append(full)
                    # MXFP4's packed experts (Mxfp4GptOssExperts, which the plan builds as from_pretrained does on a
                    # capable GPU) hold two FP4 weights a uint8: counted by their bytes, the parameters said were
                    # 109,264 for the dense experts' 158,416 (the model's weights are as many as before packing).
                    packed = type(module).__name__ == "Mxfp4GptOssExperts" and str(param.dtype) == "torch.uint8"
                    count += param.numel() * (2 if packed else 1)
            for name, buffer in module._buffers.items():
                full = f"{prefix}.{name}" if prefix else name
                if buffer is not None and id(buffer) not in seen and full not in copies:
                    seen.add(id(buffer))
                    if name == "weight" and type(module).__name__ == "BitLinear":
                        # BitNet's packed weight (four ternary values a byte) is a buffer of its BitLinear: the
                        # layer's weights all the same, in_features x out_features of them, as the model has
                        params.append(full)
                        count += module.in_features * module.out_features
                    else:
                        buffers.append(full)
        planned._cache["names"] = (params, buffers, count)
    return planned._cache["names"]


# ----------------------------------------------------------------------------------------------- placement


class _Silence(logging.Filter):
    """Drops library log records below ERROR while weightdoctor plans (e.g. accelerate's "Device 0 is not
    available", said for every GPU budget on a machine without those GPUs). A filter, not setLevel: changing
    levels clears the logging caches of every logger, which costs more than the planning on a 70B model."""

    active = 0

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.active or record.levelno >= logging.ERROR


_SILENCE = _Silence()
_QUIETED = ("accelerate.utils.modeling", "accelerate.big_modeling", "transformers.integrations.accelerate",
            "transformers.modeling_utils")


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Silence the planning libraries' warnings for the duration (see `_Silence`)."""
    for name in _QUIETED:
        logger = logging.getLogger(name)
        if _SILENCE not in logger.filters:
            logger.addFilter(_SILENCE)
    _Silence.active += 1
    try:
        yield
    finally:
        _Silence.active -= 1


def no_split_classes(planned: PlannedModel, override: list[str] | None) -> list[str]:
    """The classes never split across devices: `--no-split`, else the model's `_no_split_modules`."""
    if override:
        known = {type(m).__name__ for m in planned.model.modules()}
        unknown = [name for name in override if name not in known]
        if unknown:
            raise UsageError(
                f"--no-split {unknown[0]!r} is no module class of {planned.model_class} "
                f"(classes: {', '.join(sorted(known)[:12])}...)"
            )
        return list(override)
    return sorted(getattr(planned.model, "_no_split_modules", None) or [])


@dataclass(frozen=True)
class Placement:
    """What the planner computed: the map (in placement order), its budgets, and the entries it placed one by
    one before `clean_device_map` merged them (`visited`, in that order)."""

    device_map: dict[str, int | str]
    budgets: dict[int | str, float]
    visited: list[str]


def place(
    planned: PlannedModel,
    max_memory: dict[int | str, int],
    strategy: str,
    no_split: list[str],
    sizer: _SizeOverride | None = None,
) -> Placement:
    """Compute the device map the way the loading library does.

    transformers models go through `transformers.integrations.accelerate._get_device_map`, the very call
    `from_pretrained` makes (with the model's `_no_split_modules` set to `no_split`); other trees through
    accelerate's `get_balanced_memory` + `infer_auto_device_map`, as `load_checkpoint_and_dispatch` does.
    The budgets are the caps the planner worked with (balanced strategies lower them).
    """
    from weightdoctor.errors import choose

    strategy = choose("--strategy", strategy, STRATEGIES)
    model = planned.model
    with _quiet_libraries():
        if planned.is_transformers:
            hf_accelerate = _hf_placement()
            saved = model.__dict__.get("_no_split_modules", _MISSING)
            model._no_split_modules = set(no_split)
            recorded: dict[str, Any] = {}
            original = hf_accelerate.infer_auto_device_map
            original_sizes = hf_accelerate.compute_module_sizes
            original_clean = hf_accelerate.clean_device_map

            def recording(model: Any, max_memory: Any = None, *args: Any, **kwargs: Any) -> Any:
                # The budgets `_get_device_map` hands the planner (after balancing and quantizer headroom):
                # recorded on the way through rather than recomputed, so they are the very same numbers.
                recorded["budgets"] = dict(max_memory or {})
                return original(model, max_memory, *args, **kwargs)

            def recording_sizes(target: Any, *args: Any, **kwargs: Any) -> Any:
                # Likewise the sizes of every module and tensor the planner counted (its one whole-model call
                # with only_modules=False): reused for per-device totals instead of counting again.
                result = original_sizes(target, *args, **kwargs)
                if target is model and kwargs.get("only_modules") is False and not kwargs.get("buffers_only"):
                    planned._cache[("planner-sizes", id(sizer))] = result[0]
                return result

            def recording_clean(device_map: Any, *args: Any, **kwargs: Any) -> Any:
                # The order the planner placed modules in, before clean_device_map regroups them (it walks a
                # set of names, so its own order changes with PYTHONHASHSEED).
                if not args and not kwargs:  # the top call; the recursive ones pass module_name
                    recorded["visited"] = list(device_map)
                return original_clean(device_map, *args, **kwargs)

            hf_accelerate.infer_auto_device_map = recording
            hf_accelerate.compute_module_sizes = recording_sizes
            hf_accelerate.clean_device_map = recording_clean
            try:
                device_map = hf_accelerate._get_device_map(model, strategy, dict(max_memory), sizer)
            except (IndexError, KeyError, ValueError, AttributeError, RuntimeError) as exc:
                raise _no_split_missing(model, strategy, no_split, exc) or \
                    _planner_failed("transformers' _get_device_map", exc) from exc
            finally:
                hf_accelerate.infer_auto_device_map = original
                hf_accelerate.compute_module_sizes = original_sizes
                hf_accelerate.clean_device_map = original_clean
                if saved is _MISSING:
                    model.__dict__.pop("_no_split_modules", None)
                else:
                    model._no_split_modules = saved
            budgets = recorded.get("budgets", dict(max_memory))
            visited = recorded.get("visited", list(device_map))
        else:
            from accelerate import infer_auto_device_map
            from accelerate.utils import get_balanced_memory, get_max_memory
            from accelerate.utils.modeling import clean_device_map

            if sizer is not None:
                model = _converted_tree(model, sizer)
            budgets = dict(max_memory)
            if strategy != "sequential":
                budgets = get_balanced_memory(
                    model, max_memory=budgets, no_split_module_classes=no_split, low_zero=(strategy == "balanced_low_0")
                )
            else:
                budgets = get_max_memory(budgets)
            try:
                # Uncleaned first, to keep the order the planner placed modules in; then cleaned as it would be.
                device_map = infer_auto_device_map(model, max_memory=dict(budgets), no_split_module_classes=no_split,
                                                   clean_result=False)
            except (IndexError, KeyError, ValueError, AttributeError, RuntimeError) as exc:
                raise _planner_failed("accelerate's infer_auto_device_map", exc) from exc
            visited = list(device_map)
            device_map = clean_device_map(device_map)
    return Placement(in_placement_order(dict(device_map), visited), dict(budgets), visited)


class _HashedAs:
    """A stand-in for "cpu" or "disk" in a set: its hash chosen, equal to itself only (`main_gpus`)."""

    __slots__ = ("_hash",)

    def __init__(self, value: int) -> None:
        self._hash = value

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other


def tied_elsewhere(planned: PlannedModel, ranges: list[ModuleRange], device_map: Mapping[str, int | str],
                   tensor_sizes: Mapping[str, int]) -> list[ModuleRange]:
    """`ranges` with `tied_to` set: for each, the names its tied parameters share storage with, counted under those
    names outside it (GPT-2's lm_head, 0 B: tied to transformer.wte.weight), and `tied_copy_bytes`: the copy of
    them dispatch_model keeps on the range's GPU where the tensor is loaded on another device (`tied_gpu_copies`).

    Example: a map of {"transformer": 0, "lm_head": 0} gives lm_head's range tied_to ["transformer.wte.weight"],
    tied_copy_bytes 0; with "lm_head": 1, tied_copy_bytes the table's bytes.
    """
    groups = tied_groups(planned)
    if not groups:
        return ranges
    owner_of: dict[str, str] = {}
    for group in groups:
        for name in group:
            owner = _owner(name, device_map)
            if owner is not None:
                owner_of[name] = owner
    found = []
    for item in ranges:
        inside = set(item.modules)
        tied_groups_here = [(group, counted) for group in groups
                            if (counted := next((name for name in group if name in tensor_sizes), None)) is not None
                            and owner_of.get(counted) not in inside
                            and any(owner_of.get(name) in inside for name in group if name != counted)]
        tied = sorted({counted for _, counted in tied_groups_here})
        # a twin on a GPU the tensor is not loaded on: dispatch_model's hook copies it here (`tied_gpu_copies`)
        copied = 0
        for group, counted in tied_groups_here:
            home = _tied_home(planned, group, tensor_sizes)
            here = device_map.get(next((owner_of[name] for name in group if owner_of.get(name) in inside), ""))
            loaded = device_map.get(owner_of.get(home or "", ""))
            if isinstance(here, int) and loaded != here and loaded != "disk":
                copied += tensor_sizes[counted]
        found.append(dataclasses.replace(item, tied_to=tied, tied_copy_bytes=copied) if tied else item)
    return found


def main_gpus(device_map: Mapping[str, int | str]) -> list[int]:
    """The GPU accelerate's `dispatch_model` runs offloaded modules on (its main_device), as it picks it:
    `list(set(device_map.values()) - {"cpu", "disk"})[0]`, the first of a set, not the lowest-numbered.

    A set is iterated by slot (an int's slot is the int modulo the table size, 8 for up to 4 entries), so a map on
    cuda:1 and cuda:8 runs its offloaded modules on cuda:8 (slot 0). Which of two GPUs that share a slot (cuda:3 and
    cuda:11) comes first follows the order the map names them in, and where "cpu" or "disk" comes before them, the
    hashes of those strings too, which change from run to run. So the set is built here as dispatch_model builds it,
    by this Python's own set, with "cpu" and "disk" standing in at every slot of the table and at random hashes:
    each GPU it can be is returned, the one the most hashes give first. [] where the map names no GPU.

    Example:
        >>> main_gpus({"a": 1, "b": "cpu", "c": 8}), main_gpus({"a": 0, "b": 3}), main_gpus({"a": 3, "b": 11})
        ([8], [0], [3])
        >>> main_gpus({"a": "cpu", "b": 3, "c": 11})
        [3, 11]
    """
    distinct = tuple(dict.fromkeys(device for device in device_map.values()
                                   if isinstance(device, int) or device in ("cpu", "disk")))
    if not any(isinstance(device, int) for device in distinct):
        return []
    return list(_set_firsts(distinct))


@functools.lru_cache(maxsize=64)
def _set_firsts(values: tuple[int | str, ...]) -> tuple[int, ...]:
    """The GPUs `list(set(values) - {"cpu", "disk"})[0]` gives over the hashes "cpu" and "disk" can have, the most
    frequent first (see `main_gpus`)."""
    import itertools
    import random

    strings = [name for name in ("cpu", "disk") if name in values]
    if not strings:  # ints only: one layout, whatever the run
        return (list(set(values) - {"cpu", "disk"})[0],)  # type: ignore[return-value]
    rng = random.Random(0)
    # Every slot of tables up to 64 entries, and full-width hashes for the probes a collision follows.
    hashes = list(range(64)) + [rng.randrange(-2**63, 2**63) for _ in range(64)]
    counts: dict[int, int] = {}
    for chosen in itertools.product(hashes, repeat=len(strings)):
        stand_ins = {name: _HashedAs(value) for name, value in zip(strings, chosen, strict=True)}
        # two in the set subtracted, as {"cpu", "disk"} is: its size picks how set difference builds the result
        taken = {stand_ins.get("cpu", _HashedAs(0)), stand_ins.get("disk", _HashedAs(1))}
        built = {stand_ins[device] if isinstance(device, str) else device for device in values}
        first = list(built - taken)[0]
        counts[first] = counts.get(first, 0) + 1  # type: ignore[index]
    return tuple(sorted(counts, key=lambda gpu: -counts[gpu]))


def _main_gpu_said(device_map: Mapping[str, int | str]) -> str:
    """accelerate's main device in words: "cuda:8", or "cuda:3 or cuda:11 from run to run, ..." where it can be
    either (see `main_gpus`)."""
    candidates = main_gpus(device_map)
    said = " or ".join(f"cuda:{gpu}" for gpu in candidates)
    if len(candidates) < 2:
        return said
    return f"{said} from run to run, as the set's order follows the map's order and string hashing"


def in_placement_order(device_map: dict[str, int | str], visited: list[str]) -> dict[str, int | str]:
    """`device_map` with its entries in the order the planner placed them (`visited`: its map before cleaning).

    accelerate's `clean_device_map` merges the entries of a module that landed on one device and re-inserts
    the merged entry at the end, iterating a set of names: its key order follows string hashing, not the
    model. Each cleaned entry takes the place of the first placed entry it covers, so the JSON is the same in
    every run and "the next module" is the one the planner really tried next.

    Example:
        >>> in_placement_order({"b": "cpu", "a": 0, "c": 0}, ["a", "b.0", "b.1", "c"])
        {'a': 0, 'b': 'cpu', 'c': 0}
    """
    first: dict[str, int] = {}
    for index, name in enumerate(visited):
        parts = name.split(".")
        for end in range(len(parts) + 1):
            first.setdefault(".".join(parts[:end]) if end else "", index)
    # An entry the planner never named (cannot happen with the libraries' maps) keeps its relative place last.
    return dict(sorted(device_map.items(), key=lambda item: first.get(item[0], len(visited))))


def _no_split_missing(model: Any, strategy: str, no_split: list[str], exc: Exception) -> UsageError | None:
    """Why transformers' balanced planning failed where the model holds no module of a no-split class (a config
    with num_hidden_layers 0): its `get_balanced_memory` takes the max() of the sizes of those modules, an empty
    sequence; other sizes cannot help, the sequential strategy (which skips that step) can. None otherwise."""
    if strategy == "sequential" or not no_split or not isinstance(exc, ValueError):
        return None
    if any(type(module).__name__ in no_split for module in model.modules()):
        return None
    detail = clip_words(" ".join(str(exc).split()), 160) or "no message"
    return UsageError(
        f"the model holds no {' / '.join(no_split)} module (num_hidden_layers 0?), and transformers' "
        f"device_map={strategy!r} planning fails without one ({type(exc).__name__}: {detail}), as from_pretrained "
        "would; --strategy sequential plans it"
    )


def _planner_failed(planner: str, exc: Exception) -> UsageError:
    """The library's own planner failed on these budgets: from_pretrained(device_map=...) would fail alike."""
    detail = clip_words(" ".join(str(exc).split()), 160) or "no message"
    return UsageError(
        f"{planner} fails on these budgets ({type(exc).__name__}: {detail}); from_pretrained with the same "
        "device_map and max_memory would fail the same way: try other --gpu/--cpu sizes or --strategy"
    )


_MISSING = object()


def _hf_placement() -> Any:
    """transformers' module holding the placement code `from_pretrained` runs (5.x: integrations.accelerate).

    Raises:
        UsageError: this transformers has no such module (4.x kept it in modeling_utils and accelerate).
    """
    from transformers.integrations import accelerate as hf_accelerate

    needed = ("_get_device_map", "infer_auto_device_map", "compute_module_sizes", "get_balanced_memory")
    missing = [name for name in needed if not hasattr(hf_accelerate, name)]
    if missing:
        import transformers

        raise UsageError(
            f"transformers {transformers.__version__} has no {', '.join(missing)} in transformers.integrations."
            "accelerate; plan-devices needs transformers 5"
        )
    return hf_accelerate


def _converted_tree(model: torch.nn.Module, sizer: _SizeOverride) -> torch.nn.Module:
    """A copy of a tensor tree with floating parameters at the sizer's element size (accelerate takes no sizer)."""
    import copy

    import torch

    size_to_dtype = {2: torch.float16, 4: torch.float32, 8: torch.float64}
    clone = copy.deepcopy(model)
    if sizer.float_size in size_to_dtype:
        clone.to(size_to_dtype[sizer.float_size])
    return clone


# ----------------------------------------------------------------------------------------------- analysis


def _owner(name: str, keys: dict[str, int | str]) -> str | None:
    """The device-map key that covers `name` (the longest matching prefix), or None."""
    parts = name.split(".")
    for end in range(len(parts), -1, -1):
        candidate = ".".join(parts[:end])
        if candidate in keys:
            return candidate
    return None


def usage_by_device(
    device_map: dict[str, int | str], tensor_sizes: dict[str, int], unplaced: dict[str, int | str] | None = None
) -> tuple[dict[int | str, int], dict[str, int]]:
    """Bytes per device and per map entry, each tensor counted where its longest-prefix entry sends it, and
    each tensor of `unplaced` (covered by no entry) on its device there."""
    per_device: dict[int | str, int] = {}
    per_entry: dict[str, int] = dict.fromkeys(device_map, 0)
    for name, size in tensor_sizes.items():
        owner = _owner(name, device_map)
        if owner is None:
            if unplaced and name in unplaced:
                per_device[unplaced[name]] = per_device.get(unplaced[name], 0) + size
            continue
        per_entry[owner] += size
        device = device_map[owner]
        per_device[device] = per_device.get(device, 0) + size
    return per_device, per_entry


def unplaced_tensors(
    planned: PlannedModel, device_map: dict[str, int | str], tensor_names: list[str]
) -> dict[str, int | str]:
    """Parameters and buffers of a transformers model that no map entry covers -> the device `from_pretrained`
    gives them.

    accelerate's planner, splitting a module, places its parameters and children but not its own buffers (a
    non-persistent one, like CTRL's `transformer.pos_encoding`, is in no checkpoint either). `from_pretrained`
    then materializes it with `get_device(device_map, name, valid_torch_device=True)`: the map's `""` entry,
    else the CPU.
    """
    if not planned.is_transformers:
        return {}  # a tensor tree holds parameters only, and accelerate places every one
    missing = [name for name in tensor_names if _owner(name, device_map) is None]
    if not missing:
        return {}
    from transformers.integrations.accelerate import get_device

    return {name: get_device(device_map, name, valid_torch_device=True) for name in missing}


_INDEXED = re.compile(r"^(.*)\.(\d+)$")


def module_ranges(device_map: dict[str, int | str], entry_bytes: dict[str, int]) -> list[ModuleRange]:
    """Group consecutive map entries on one device; numbered siblings become `prefix.first–last`.

    Example:
        >>> [r.label for r in module_ranges({"m.l.0": 0, "m.l.1": 0, "m.l.2": "cpu"}, {})]
        ['m.l.0–1', 'm.l.2']
    """
    ranges: list[ModuleRange] = []
    items = list(device_map.items())
    i = 0
    while i < len(items):
        name, device = items[i]
        run = [name]
        match = _INDEXED.match(name)
        if match:
            prefix, start = match.group(1), int(match.group(2))
            j = i + 1
            while j < len(items) and items[j][1] == device:
                nxt = _INDEXED.match(items[j][0])
                if not nxt or nxt.group(1) != prefix or int(nxt.group(2)) != start + len(run):
                    break
                run.append(items[j][0])
                j += 1
            label = f"{prefix}.{start}–{start + len(run) - 1}" if len(run) > 1 else name
        else:
            label = name if name else "(whole model)"
        ranges.append(ModuleRange(label, device_name(device), run, sum(entry_bytes.get(n, 0) for n in run)))
        i += len(run)
    return ranges


def classify(
    device_map: dict[str, int | str],
    has_gpus: bool,
    allow_disk: bool,
    over_budget: bool = False,
    extra_devices: set[int | str] | None = None,
) -> str:
    """The verdict for a device map (and `extra_devices`, where tensors outside it land): one of VERDICTS."""
    devices = set(device_map.values()) | (extra_devices or set())
    if over_budget or ("disk" in devices and not allow_disk):
        return "does-not-fit"
    if "disk" in devices:
        return "needs-disk-offload"
    if not has_gpus:
        return "fits-on-cpu"
    if "cpu" in devices:
        return "needs-cpu-offload"
    return "fits-on-gpus"


def verdict_exit_code(verdict: str, fail_on: str | None, findings: list[Finding] | None = None) -> int:
    """0 when the verdict does not reach `fail_on`; 1 when it does, or when a hand-written map is invalid.

    Example:
        >>> verdict_exit_code("needs-cpu-offload", "offload"), verdict_exit_code("needs-cpu-offload", "no-fit")
        (1, 0)
        >>> verdict_exit_code("needs-cpu-offload", "warn"), verdict_exit_code("needs-cpu-offload", "error")
        (1, 0)
    """
    if findings and any(f.severity == "error" for f in findings):
        return 1
    if fail_on is None:
        return 0
    from weightdoctor.errors import choose
    from weightdoctor.findings import SEVERITIES, severity_reaches

    fail_on = choose("--fail-on", fail_on, FAIL_ON_CHOICES)
    if fail_on in SEVERITIES:
        reached = severity_reaches(VERDICT_SEVERITY[verdict], fail_on) or any(
            severity_reaches(f.severity, fail_on) for f in findings or [])
        return 1 if reached else 0
    if fail_on == "no-fit":
        return 1 if verdict == "does-not-fit" else 0
    return 0 if verdict == "fits-on-gpus" else 1


def _largest_layer(
    model: torch.nn.Module, names: list[str], sizes: dict[str, int], no_split: list[str]
) -> tuple[int, list[str]]:
    """accelerate's `get_max_layer_size` over the given map entries (modules only)."""
    from accelerate.utils.modeling import get_max_layer_size

    modules = []
    for name in names:
        if name == "":  # the whole model: its children, as accelerate walks it from the top
            modules.extend(model.named_children())
            continue
        try:
            modules.append((name, model.get_submodule(name)))
        except AttributeError:
            continue
    if not modules:
        return 0, []
    from collections import defaultdict

    return get_max_layer_size(modules, defaultdict(int, sizes), no_split)


def explain_devices(
    planned: PlannedModel,
    device_map: dict[str, int | str],
    capacities: dict[int | str, int],
    reserve: int,
    budgets: dict[int | str, float],
    entry_bytes: dict[str, int],
    per_device: dict[int | str, int],
    sizes: dict[str, int],
    no_split: list[str],
    strategy: str,
    sizer: _SizeOverride | None,
    visited: list[str] | None = None,
    headroom: dict[int | str, int] | None = None,
    binary: bool = False,
) -> dict[int | str, list[HeldBack]]:
    """Why each GPU (and the CPU) holds less than its capacity, in bytes that add up to the gap.

    "The next module" is the first module the planner tried after the device's last one (`visited`: the
    entries in the order it placed them, before merging): the one that did not fit, not a merged entry.
    `headroom`: what from_pretrained without max_memory keeps back of each device (`--local`). `binary`: the
    sizes in the details are said in binary units (KiB, MiB, GiB), as the user typed the devices' sizes.
    """
    from weightdoctor.units import format_bytes

    order = list(device_map)
    keys = [k for k in capacities if k != "disk"]
    gpu_keys = [k for k in keys if isinstance(k, int)]
    main = {gpu_keys[0], "cpu"} if gpu_keys else {"cpu"}
    result: dict[int | str, list[HeldBack]] = {}
    for position, key in enumerate(keys):
        capacity = capacities[key]
        used = per_device.get(key, 0)
        gap = capacity - used
        if gap <= 0:
            continue
        parts: list[HeldBack] = []
        left = gap
        if isinstance(key, int) and reserve:
            amount = min(reserve, left)
            parts.append(HeldBack("reserve", amount,
                                  f"--reserve keeps {format_bytes(reserve, binary)} free on each GPU"))
            left -= amount
        planner_cap = int(budgets.get(key, capacity))
        given = capacity - (reserve if isinstance(key, int) else 0)
        kept = (headroom or {}).get(key, 0)
        if kept and left > 0:
            amount = min(kept, left)
            what = "the RAM available" if key == "cpu" else "the free memory of a lone GPU"
            parts.append(HeldBack("unset-max-memory", amount,
                                  f"from_pretrained without max_memory plans on 90% of {what} "
                                  "(--local: transformers keeps 10% back)"))
            left -= amount
        given -= kept
        if sizer is not None and sizer.keeps_headroom:
            quantizer_kept = int(given - given * 0.9)
            if quantizer_kept > 0 and left > 0:
                amount = min(quantizer_kept, left)
                parts.append(HeldBack("quantizer-headroom", amount,
                                      "the quantizer keeps 10% of every budget for quantization "
                                      "buffers (bitsandbytes, quanto, bitnet and torchao do)"))
                left -= amount
                given -= quantizer_kept
        if isinstance(key, int) and strategy != "sequential" and planner_cap < given and left > 0:
            amount = min(given - planner_cap, left)
            parts.append(HeldBack(
                "balanced-cap", amount,
                f"{strategy!r} caps this GPU at {format_bytes(planner_cap, binary)} (its share of the model plus 1.25 "
                "x the largest layer) so that the layers spread over every GPU",
            ))
            left -= amount
        later = [n for n in order if _device_rank(device_map[n], keys) > position]
        # What the planner placed after this device, in its order: the first is the module that did not fit here.
        tried = [n for n in visited or [] if _device_rank(device_map.get(_owner(n, device_map) or "", ""), keys)
                 > position]
        if key in main and later and left > 0:
            # The room it kept was for the largest layer still to place besides the one it was trying (it leaves
            # that one out of the count as it takes it: T5's decoder.block.0, with its relative_attention_bias,
            # is tried with room kept for decoder.block.1).
            layer, layer_names = _largest_layer(planned.model, tried[1:] if tried else later, sizes, no_split)
            if layer > 0:
                amount = min(layer, left)
                where = "the CPU" if key != "cpu" else "disk"
                first = "first GPU" if key != "cpu" else "CPU"
                name = f"{layer_names[0]}, " if layer_names else ""
                parts.append(HeldBack(
                    "largest-layer", amount,
                    f"the planner always keeps room on the {first} for the largest layer still to place "
                    f"({name}{format_bytes(layer, binary)}), in case it must bring it back from {where}",
                ))
                left -= amount
        if later and left > 0:
            nxt = tried[0] if tried else later[0]
            size = sizes.get(nxt, entry_bytes.get(nxt, 0)) if tried else entry_bytes.get(nxt, 0)
            parts.append(HeldBack(
                "next-module-too-big", left,
                f"the next module, {nxt or '(the whole model)'} ({format_bytes(size, binary)}), did not fit in what "
                "was left",
            ))
            left = 0
        if left > 0:
            parts.append(HeldBack("unused", left, "nothing left to place"))
        result[key] = parts
    return result


def _device_rank(key: int | str, keys: list[int | str]) -> int:
    return keys.index(key) if key in keys else len(keys)


# ----------------------------------------------------------------------------------------------- manual maps


# The most entries a --map may hold. A map names modules or parameters, one entry each: the models transformers
# builds have some thousands (their experts fused), a map of every parameter of any of them far fewer than this.
# 2,000,000 entries (a 24 MB file, within the 100 MB read) were each checked and reported: 73 s and 1.8 GB of
# memory, and with --json 189 s, 3.6 GB and 734 MB of output.
MAX_MAP_ENTRIES = 200_000


def load_manual_map(path: str | Path) -> dict[str, int | str]:
    """Read a hand-written device map JSON: {module name: device}.

    Raises:
        UsageError: not JSON, not an object, or a value that is not a device.
    """
    from weightdoctor.checkpoint.reader import MAX_JSON_BYTES

    file = Path(path)
    try:
        # Read bounded: `--map /dev/zero` (or a runaway generator behind `--map <(...)`, a FIFO that must still
        # be read) filled the memory until the process was killed.
        with open(file, "rb") as handle:
            raw = handle.read(MAX_JSON_BYTES + 1)
        if len(raw) > MAX_JSON_BYTES:
            raise UsageError(f"is more than {MAX_JSON_BYTES:,} bytes, more than any device map holds; not read",
                             path=str(file))
        data = parse_json(raw.decode("utf-8"), max_depth=MAX_DEPTH)
    except FileNotFoundError:
        raise UsageError("--map: no such file", path=str(file)) from None
    except IsADirectoryError:
        raise UsageError("--map names a folder, not a device map JSON file", path=str(file)) from None
    except PermissionError:
        raise UsageError("--map: permission denied", path=str(file)) from None
    except NotADirectoryError:
        raise UsageError("--map: a part of its path is a file, not a folder", path=str(file)) from None
    except OSError as exc:
        # A loop of links, a name too long, an I/O error: "cannot read or write: [Errno 40] Too many levels of
        # symbolic links" from the catch-all, which named neither --map nor what the path is.
        if exc.errno == errno.ELOOP:
            raise UsageError("--map is a symbolic link that does not resolve (a loop of links)",
                             path=str(file)) from None
        raise UsageError(f"--map: cannot read it ({exc.strerror or exc})", path=str(file)) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"not valid JSON ({exc})", path=str(file)) from exc
    if not isinstance(data, dict) or not data:
        raise UsageError("a device map must be a non-empty JSON object {module: device}", path=str(file))
    if len(data) > MAX_MAP_ENTRIES:
        raise UsageError(f"holds {len(data):,} entries, more than any model has modules and parameters to place "
                         f"(the limit is {MAX_MAP_ENTRIES:,}); not checked", path=str(file))
    result: dict[str, int | str] = {}
    for name, value in data.items():
        try:
            result[str(name)] = parse_device_value(value)
        except UsageError as exc:
            raise UsageError(f"entry {name!r}: {exc.message}", path=str(file)) from None
    return result


def tied_groups(planned: PlannedModel) -> list[list[str]]:
    """Groups of parameter names that are one tensor (tied embeddings, shared storage)."""
    model = planned.model
    tied = getattr(model, "all_tied_weights_keys", None)
    if tied:
        groups: dict[str, set[str]] = {}
        for key, target in tied.items():
            groups.setdefault(target, {target}).add(key)
        return [sorted(g) for g in groups.values()]
    from accelerate.utils import find_tied_parameters

    return [sorted(g) for g in find_tied_parameters(model)]


def check_manual_map(
    planned: PlannedModel,
    device_map: dict[str, int | str],
    capacities: dict[int | str, int],
    allow_disk: bool,
    sizer: _SizeOverride | None,
    binary: bool = False,
) -> list[Finding]:
    """Check a hand-written map: each tensor covered once, no unknown names, budgets kept, ties together.

    `binary`: sizes said in binary units (KiB, MiB, GiB), the family the devices' sizes were typed in.
    """
    from weightdoctor.units import format_bytes

    model = planned.model
    findings: list[Finding] = []
    params = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    buffers = [n for n, _ in model.named_buffers()]
    modules = {n for n, _ in model.named_modules()}
    known = modules | set(params) | set(buffers)
    for key in device_map:
        if key not in known:
            findings.append(Finding("error", "unknown-module", key, f"{key!r} is no module or parameter of the model"))
    uncovered: list[str] = []
    for name in params + buffers:
        parts = name.split(".")
        covering = [".".join(parts[:end]) for end in range(len(parts) + 1) if ".".join(parts[:end]) in device_map]
        if not covering:
            uncovered.append(name)
        elif len(covering) > 1:
            findings.append(Finding(
                "error", "covered-twice", name,
                f"{name} is covered by several entries: {', '.join(repr(c) for c in covering)}",
            ))
    if uncovered:
        shown = ", ".join(uncovered[:5]) + (f" and {len(uncovered) - 5} more" if len(uncovered) > 5 else "")
        findings.append(Finding(
            "error", "not-covered", None,
            f"{counted(len(uncovered), 'tensor')} {plural(len(uncovered), 'has', 'have')} no device: {shown}"))
    for key in sorted({v for v in device_map.values()}, key=str):
        if key == "disk" and not allow_disk:
            findings.append(Finding("error", "disk-not-allowed", None, "the map puts modules on disk; pass --disk"))
        elif key != "disk" and key not in capacities:
            message = f"the map uses {device_name(key)}, which has no budget"
            findings.append(Finding("error", "no-budget", None, message))
    per_device, _ = usage_by_device(device_map, _sizes(planned, planned.dtype)[1])
    for key, used in per_device.items():
        capacity = capacities.get(key)
        if capacity is not None and used > capacity:
            # In the units the report speaks (`--gpu 300KiB`: "of 300.00 KiB" above, not "307.20 KB" here), and in
            # bytes where rounding says the two alike ("holds 1.00 GiB, over its 1.00 GiB budget").
            held, budget = format_bytes(used, binary), format_bytes(capacity, binary)
            if held == budget:
                held, budget = f"{used:,} bytes", f"{capacity:,}-byte"
            findings.append(Finding(
                "error", "over-budget", None, f"{device_name(key)} holds {held}, over its {budget} budget",
            ))
    for group in tied_groups(planned):
        devices = {device_map[o] for o in (_owner(n, device_map) for n in group) if o is not None}
        if len(devices) > 1:
            findings.append(Finding(
                "error", "tied-split", group[0],
                f"tied parameters {', '.join(group)} are on different devices "
                f"({', '.join(sorted(device_name(d) for d in devices))})"
                + (_tied_disk_split(planned, group, device_map) or _tied_gpu_split(group, device_map)),
            ))
    return findings


# Error findings that say from_pretrained raises on the map, whatever the machine's memory: the map is never run.
_CANNOT_RUN_CODES = frozenset({"quantizer-refuses-offload", "gguf-refuses-disk"})


def map_cannot_run(planned: PlannedModel, device_map: Mapping[str, int | str], findings: Iterable[Finding]) -> bool:
    """Whether from_pretrained cannot run `device_map` at all, as an error finding says: a quantizer or the GGUF
    loader refuses it, a tied tensor has a twin on disk beside one elsewhere (`_tied_disk_split`), or twins on two
    GPUs (`_tied_gpu_split`). A map over a budget, or parting tied twins between one GPU and the CPU, still loads
    and runs (the ties are copied).

    Example: GPT-2's lm_head on disk beside wte on cuda:0 -> True (its first forward raises KeyError).
    """
    errors = [finding for finding in findings if finding.severity == "error"]
    if any(finding.code in _CANNOT_RUN_CODES for finding in errors):
        return True
    if not any(finding.code == "tied-split" for finding in errors):
        return False
    return any(_tied_disk_split(planned, group, device_map) or _tied_gpu_split(group, device_map)
               for group in tied_groups(planned))


def _tied_disk_split(planned: PlannedModel, group: list[str], device_map: Mapping[str, int | str]) -> str:
    """What a tied-split map with a twin on disk beside one elsewhere does in from_pretrained ("" for any other).

    from_pretrained loads a tied tensor once, where its source sits, and ties the others to it. Source on disk: the
    twin placed elsewhere is tied to a tensor left on the meta device, which dispatch_model cannot place (ValueError
    "weight is on the meta device"). Source elsewhere: the disk offload index holds the checkpoint's names, not the
    twin's, and the twin's hook finds nothing to load at its first forward (KeyError); a checkpoint storing both
    names is refused at load (its tie check compares a meta tensor). Measured with the CPU as main device; the same
    code runs on a GPU.
    """
    where = {name: device_map.get(_owner(name, device_map) or "") for name in group}
    if "disk" not in where.values() or set(where.values()) == {"disk"}:
        return ""
    source = _tied_home(planned, group, {}) or group[0]
    on_disk = [name for name in group if where[name] == "disk"]
    how = ("it raises while it loads the model (the twins placed elsewhere point at the tensor left on the meta "
           "device for the disk)" if where.get(source) == "disk" else
           f"its first forward raises KeyError '{on_disk[0]}' (the disk offload holds no tensor under that name), "
           "or the load raises where the checkpoint stores both names")
    return (f": from_pretrained cannot run this map, since it loads the tensor once, where {source} sits, and does "
            f"not place a twin on disk beside one elsewhere: {how}; keep the tied modules on one device")



def _tied_gpu_split(group: list[str], device_map: Mapping[str, int | str]) -> str:
    """What a tied-split map with twins on two GPUs does in from_pretrained ("" for any other).

    from_pretrained loads the tensor once and ties the twins to it; dispatch_model's hook of each module then moves
    its twin to that module's GPU, a copy on each GPU (`tied_params_map` keeps both: the copy the ranges say,
    `tied_copy_bytes`). But dispatch_model ends by tying the twins back together (`retie_parameters`): every name of
    the group is pointed at the tensor of its first name in sorted order not left on the meta device (a twin on a
    GPU: one offloaded to the CPU or disk is on meta between calls), so a twin on another GPU runs with a weight
    on that GPU while its hook sends the inputs to its own, and its forward raises. Measured with accelerate 1.16
    on GPU stand-ins (tests/test_plan89.py); a twin offloaded to the CPU beside one GPU loads its copy at each
    call and runs.

    Example: GPT-2's wte on cuda:0, lm_head on cuda:1: wte is pointed at lm_head's copy on cuda:1 and its first
    forward raises RuntimeError (input_ids on cuda:0, the table on cuda:1).
    """
    where = {name: device_map.get(_owner(name, device_map) or "") for name in group}
    if "disk" in where.values():
        return ""  # `_tied_disk_split` says what happens
    on_gpus = [name for name in sorted(group) if isinstance(where[name], int)]
    if len({where[name] for name in on_gpus}) < 2:
        return ""
    kept = on_gpus[0]
    raising = [name for name in on_gpus if where[name] != where[kept]]
    first = raising[0]
    # The module that runs with the far weight is the twin's owner; a top-level parameter (no dot) is the model's
    # own, where rpartition would name nothing ("so  runs on").
    runner = first.rpartition(".")[0] or f"the model itself (which holds {first})"
    return (f": from_pretrained loads it with a copy of the tensor on each GPU, but dispatch_model then ties the "
            f"twins back to one copy ({kept}'s, on {device_name(where[kept])}: accelerate's retie_parameters "
            f"takes the first name in sorted order), so {runner} runs on "
            f"{device_name(where[first])} with its weight on {device_name(where[kept])} and the first forward "
            "raises RuntimeError (tensors on two devices); keep the tied modules on one GPU, or offload one to "
            "the CPU")

# ----------------------------------------------------------------------------------------------- estimates


# Cache layer kinds of transformers' DynamicCache (`get_layer_types_and_kwargs`): keys and values per token in the
# attention kinds (sliding and chunked ones keep at most their window), a recurrent state of fixed size in the
# linear-attention / state-space kinds, both in the hybrid kinds, nothing in a "dummy" layer (shared KV, no attention).
_KV_KINDS = {"full_attention", "sliding_attention", "chunked_attention", "indexed_attention", "hybrid",
             "hybrid_sliding", "deepseek_sparse_attention"}
_STATE_KINDS = {"conv", "linear_attention", "hybrid", "hybrid_sliding"}


# Models transformers builds with no attention at all, whose cache is a recurrent state it keeps outside its Cache
# classes (RWKV's `state`, xLSTM's xLSTMCache): get_layer_types_and_kwargs lays their layers out as full attention,
# and RWKV was refused ("no num_attention_heads"), xLSTM sized as 32 attention layers' keys and values.
_RECURRENT_ONLY = frozenset({"rwkv", "xlstm"})


def _decoder_layer_kinds(config: dict[str, Any], layers: int) -> list[tuple[str, int | None]] | None:
    """Each decoder layer's cache kind and window, as transformers' `DynamicCache(config=...)` lays them out.

    transformers derives them from fields a config.json may not spell out: published Gemma-2, Gemma-3 and Cohere2
    configs predate `layer_types` (every other layer / five of six / three of four slide), Qwen2's slide only with
    `use_sliding_window`, Jamba's and Bamba's attention layers are every `attn_layer_period`-th or listed.
    Returns None where transformers cannot say (too old, an unknown model type, an encoder-decoder whose
    per-layer list counts the encoder's layers): the caller then reads `layer_types` and `sliding_window` itself.
    """
    from weightdoctor.meta_model import MAX_LAYERS, config_from_dict

    if layers > MAX_LAYERS:
        return None
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type in _RECURRENT_ONLY:  # a list there is unhashable (hostile)
        return [("linear_attention", None)] * layers
    try:
        from transformers.cache_utils import get_layer_types_and_kwargs

        with _quiet_libraries():
            built = config_from_dict(config).get_text_config(decoder=True)
            kinds, kwargs = get_layer_types_and_kwargs(built)
    except Exception:  # noqa: BLE001 - an older transformers, or a config it cannot build: read the dict
        return None
    if isinstance(kwargs, dict):  # transformers before 5.2x: one set of kwargs, given to every layer's cache
        kwargs = [kwargs if kind in _WINDOWED_KINDS else {} for kind in kinds]
        # ... and the last num_kv_shared_layers (Gemma 3n's, which reuse an earlier layer's keys and values) left
        # out of the list rather than named "dummy": no cache layer is made for them either way
        shared = getattr(built.get_text_config(decoder=True), "num_kv_shared_layers", None)
        if isinstance(shared, int) and 0 < shared < layers and len(kinds) == layers - shared:
            kinds, kwargs = [*kinds, *["dummy"] * shared], [*kwargs, *[{}] * shared]
    if len(kinds) != layers or not isinstance(kwargs, list) or len(kwargs) != len(kinds):
        return None
    kinds = [_OLDER_KINDS.get(kind, kind) if isinstance(kind, str) else kind for kind in kinds]
    text = built.get_text_config(decoder=True)
    blocks = getattr(text, "layers_block_type", None) if getattr(text, "layer_types", None) is None else None
    if isinstance(blocks, list) and len(blocks) == len(kinds) and "recurrent" in blocks:
        # transformers 5.17's RecurrentGemma has no layer_types: every layer is laid out as sliding attention, and
        # only its "attention" blocks fill theirs; a "recurrent" block keeps its state in the block (5.25 names it
        # "linear_attention")
        recurrent = [block == "recurrent" for block in blocks]
        kinds = ["linear_attention" if rec else kind for rec, kind in zip(recurrent, kinds, strict=True)]
        kwargs = [{} if rec else kw for rec, kw in zip(recurrent, kwargs, strict=True)]
    return [(kind, kw.get("sliding_window") if isinstance(kw, dict) else None)
            for kind, kw in zip(kinds, kwargs, strict=True)]


# Older transformers' names (5.17) of the kinds transformers 5.25 names otherwise, where both cache the same: the
# "moe" / "mlp" layers of models without attention there were an empty LinearAttentionLayer (5.25: "dummy").
# DeepSeek-V3.2's "deepseek_sparse_attention" stays itself: transformers 5.17 caches its keys and values expanded
# per head (see `estimate_kv_cache`), 5.25's "indexed_attention" the latent.
_OLDER_KINDS = {"qwen_sparse_attention": "indexed_attention", "moe": "dummy", "mlp": "dummy"}

# The layer kinds that also cache their indexer's key of each token (DynamicIndexedLayer's `indexer_keys`).
_INDEXED_KINDS = frozenset({"indexed_attention", "deepseek_sparse_attention"})

# The layer kinds whose cache transformers bounds by a window (`sliding_window` of their cache-layer kwargs).
_WINDOWED_KINDS = frozenset({"sliding_attention", "hybrid_sliding", "reference_sliding_attention",
                             "chunked_attention"})


# The attributes in which transformers' cache layers (`LinearAttentionLayer`) keep the fixed-size states.
_STATE_ATTRIBUTES = ("conv_states", "recurrent_states", "ssm_states")


def recurrent_state_bytes(config: dict[str, Any], torch_dtype: str, batch: int) -> int | None:
    """Bytes of the fixed-size states of `batch` sequences, in all (see `recurrent_states`); None where unsized."""
    states = recurrent_states(config, torch_dtype, batch)
    return states[0] if states is not None else None


def recurrent_states(config: dict[str, Any], torch_dtype: str, batch: int) -> tuple[int, tuple[int, ...]] | None:
    """Bytes of the conv and recurrent states transformers' cache keeps for `batch` sequences of a state-space or
    hybrid model (Mamba, Jamba, Qwen3-Next, LFM2, ...): fixed in size, whatever the sequence length.

    Measured, not derived: the model is built from `config` on the meta device and run once on `batch` x 1 tokens
    (meta tensors carry shapes and dtypes, no memory, no arithmetic), and the states its cache then holds are
    counted, so every shape comes from transformers' own modeling code. The run is in bfloat16, the one dtype the
    grouped-experts kernels of MoE hybrids accept on every device: a state that comes out in bfloat16 follows the
    model's dtype (`torch_dtype`), one kept in float32 (Mamba's SSM states) stays float32 (float64 in a float64
    model). The states are those of
    the cache's layers, and those a model keeps in its own blocks (RecurrentGemma). None when the model cannot be
    built or run so, or holds no such state. Returned with the bytes of each of the cache's layers in order (0 in an
    attention layer; () where some states are kept outside the cache's layers, in the model's blocks).
    """
    import torch

    from weightdoctor.meta_model import build_meta_model

    try:
        with _quiet_libraries():
            model = build_meta_model(config).to(torch.bfloat16)
            ids = torch.zeros((batch, 1), dtype=torch.long, device="meta")
            with torch.no_grad():
                output = model(input_ids=ids, use_cache=True)
    except Exception:  # noqa: BLE001 - model code can raise anything on a meta run: the states stay unsized
        return None
    # transformers 5.17's Mamba and Mamba-2 outputs name their cache `cache_params` (5.25: `cache`)
    cache = (getattr(output, "past_key_values", None) or getattr(output, "cache", None)
             or getattr(output, "cache_params", None))
    element = getattr(torch, torch_dtype).itemsize
    seen: set[int] = set()
    total = 0

    def count(value: Any) -> None:
        nonlocal total
        if isinstance(value, torch.Tensor):
            if id(value) not in seen:
                seen.add(id(value))
                # a float32 state stays float32 below that, and follows a float64 model up
                size = (element if value.dtype == torch.bfloat16 else max(element, value.element_size())
                        if value.is_floating_point() else value.element_size())
                total += value.numel() * size
        elif isinstance(value, dict):
            for item in value.values():
                count(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                count(item)

    # RWKV returns its state (5 tensors of batch x hidden x layers) as `state`, outside any Cache
    count(getattr(output, "state", None))
    per_layer = []
    for layer in getattr(cache, "layers", None) or []:
        before = total
        for name in _STATE_ATTRIBUTES:
            count(getattr(layer, name, None))
        per_layer.append(total - before)
    in_layers = total
    # Some models keep them in their own blocks instead (RecurrentGemma: `conv1d_state`, `rg_lru.recurrent_states`):
    # tensors a module holds as plain attributes named so, neither parameters nor buffers.
    for module in model.modules():
        for name, value in vars(module).items():
            if name.endswith(("_state", "_states")) and isinstance(value, torch.Tensor):
                count(value)
    if not total:
        return None
    return total, tuple(per_layer) if total == in_layers else ()


def decoder_text_config(config: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The sub-config whose decoder the KV cache is sized from, and whether it is a composite encoder-decoder's
    `decoder` (whose layers also cache cross-attention keys and values).

    LLaVA and its kin keep the language model in `text_config`; EncoderDecoderModel and its vision and speech
    kin the decoder in `decoder` (a BERT, GPT-2, TrOCR or MBart config); other models are their own.

    Example:
        >>> decoder_text_config({"model_type": "vision-encoder-decoder", "decoder": {"n_layer": 2}})
        ({'n_layer': 2}, True)
    """
    text = config.get("text_config")
    if isinstance(text, dict):
        return text, False
    from weightdoctor.structure import is_composite_encoder_decoder

    decoder = config.get("decoder")
    if is_composite_encoder_decoder(config) and isinstance(decoder, dict):
        return decoder, True
    return config, False


def _kv_heads(text: dict[str, Any], heads: int) -> Any:
    """The key/value heads a decoder's cache keeps per layer, as transformers' config works them out: Falcon and
    GPT-BigCode (StarCoder) write none as `num_key_value_heads`; their `multi_query` (true unless the config says
    false) keeps one, and Falcon-40B's `new_decoder_architecture` its `num_kv_heads`. Reading `heads` for them sized
    falcon-7b's cache 71 times over.

    Example:
        >>> _kv_heads({"model_type": "falcon", "multi_query": True}, 71), _kv_heads({"model_type": "gpt_bigcode"}, 48)
        (1, 1)
        >>> _kv_heads({"model_type": "falcon", "new_decoder_architecture": True, "num_kv_heads": 8}, 128)
        8
    """
    explicit = text.get("num_key_value_heads")
    if explicit:
        return explicit
    model_type = text.get("model_type")
    multi_query = bool(text.get("multi_query", True))
    if model_type == "gpt_bigcode":
        return 1 if multi_query else heads
    if model_type == "falcon":
        kv_heads = text.get("num_kv_heads") or heads
        return kv_heads if text.get("new_decoder_architecture") or not multi_query else 1
    return heads


@functools.lru_cache(maxsize=1)
def _falcon_caches_every_head() -> bool:
    """Whether the installed transformers' Falcon caches a key and value for every query head in its new decoder
    architecture (Falcon-40B): transformers 5.17 broadcasts the num_kv_heads groups to all heads before its cache
    update (`num_kv_heads = self.num_heads if self.new_decoder_architecture`), measured 2 x the keys and values of
    5.25, which caches the groups and repeats them as it attends.

    Measured, as `recurrent_states` measures: a one-layer Falcon of 4 heads in 2 groups built on the meta device
    runs one token, and its cache's keys say how many heads it keeps. Where that run fails, read from the modeling
    module: 5.25's has `repeat_kv`, 5.17's has not."""
    import torch

    try:
        import transformers
        from transformers.models.falcon import modeling_falcon
    except Exception:  # noqa: BLE001 - no Falcon in this transformers: the config's groups, as 5.25 caches them
        return False
    try:
        config = transformers.FalconConfig(vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                                           num_kv_heads=2, new_decoder_architecture=True, bos_token_id=0,
                                           eos_token_id=0)
        with _quiet_libraries(), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            with torch.device("meta"):
                model = transformers.FalconForCausalLM(config)
            out = model(input_ids=torch.zeros((1, 1), dtype=torch.long, device="meta"), use_cache=True)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        return int(cache.layers[0].keys.shape[1]) == config.num_attention_heads
    except Exception:  # noqa: BLE001 - a transformers whose Falcon or cache runs otherwise: read its module
        return not hasattr(modeling_falcon, "repeat_kv")


@functools.lru_cache(maxsize=64)
def _config_class_reads(config_class: type, key: str) -> bool:
    """Whether `config_class`, built with its defaults, holds `key` (True where it cannot be built so)."""
    try:
        with _quiet_libraries(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            default = config_class()
    except Exception:
        return True
    try:
        return key in vars(default) or hasattr(type(default), key)
    except Exception:
        return True


class _ConfigKeys:
    """A decoder config's sizes read the way transformers' config class reads them: through its `attribute_map`
    (DBRX's and MPT's `n_layers` / `n_heads` / `d_model`, Moonshine's `decoder_num_*`) and its derived attributes
    (DBRX's KV heads in `attn_config.kv_n_heads`, Mixtral's default 8 KV heads). The class is built from the config's
    values alone (`CONFIG_MAPPING`; no weights, no repo code). For a model type transformers does not know, or a config
    its class refuses, the common spellings (`n_layer`, `n_head`, `n_embd`, `num_heads`, `num_layers`, `d_model`) are
    read instead; a known class reads only those its attribute_map names (Falcon's FalconConfig ignores `n_head`).

    Example:
        >>> _ConfigKeys({"model_type": "mpt", "n_layers": 2, "n_heads": 4, "d_model": 32}).first("num_hidden_layers")
        2
    """

    def __init__(self, text: dict[str, Any]) -> None:
        self.text = text
        self.built: Any = None
        self.attribute_map: dict[str, str] = {}
        model_type = text.get("model_type")
        if not isinstance(model_type, str):
            return
        try:
            from transformers import CONFIG_MAPPING

            config_class = CONFIG_MAPPING[model_type]
        except (ImportError, KeyError):
            return
        from weightdoctor.meta_model import decode_special_floats, refuse_unbuildable_config

        try:
            # A class builds per-layer lists in its __init__ (Qwen3's layer_types): num_hidden_layers 10^9 never
            # finished building. Such a config is read as written; the caller refuses its layer count in one line.
            refuse_unbuildable_config(text)
        except UsageError:
            return
        # as from_pretrained reads them: transformers 5 saves Infinity as {"__float__": "Infinity"} (Mamba2's and
        # Nemotron-H's time_step_limit), which the class's strict fields refuse as written
        values = {key: decode_special_floats(value) for key, value in text.items() if key != "model_type"}
        try:
            with _quiet_libraries(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.built = config_class(**values)
        except Exception:  # a config its own class refuses: read as written
            return
        self.attribute_map = dict(getattr(config_class, "attribute_map", {}) or {})

    def written(self, key: str) -> bool:
        """Whether the config writes `key`, under its own name or the name the class maps it to."""
        if key in self.text:
            return True
        alias = self.attribute_map.get(key)
        return alias is not None and alias in self.text

    def _attribute(self, key: str) -> Any:
        """The built class's `key`, None where it holds none or refuses to say one (transformers raises for a
        per-layer attribute of a heterogeneous config, Gemma 4's head_dim)."""
        try:
            return getattr(self.built, key, None)
        except Exception:
            return None

    def _value(self, key: str) -> Any:
        # A key written under its own name is read as written: a class may rewrite it (DoryConfig counts only the
        # attention entries of layer_types as num_hidden_layers, though the cache keeps one per written layer).
        if key in self.text or self.built is None:
            return self.text.get(key)
        return self._attribute(key)

    def _reads(self, key: str) -> bool:
        """Whether the class has `key` of its own (LongcatFlash's num_layers), not only as a leftover of the config
        (Falcon's n_head): its default instance holds it too."""
        if self.built is None:
            return True
        return _config_class_reads(type(self.built), key)

    def first(self, *keys: str, legacy: tuple[str, ...] = ()) -> Any:
        """The first of `keys` the config writes (0 included), as the class reads it; `legacy` spellings count only
        where the class has them of its own, or no transformers class reads the config (`None` where none is
        written)."""
        for key in keys + tuple(key for key in legacy if self._reads(key)):
            if self.written(key):
                value = self._value(key)
                if value is not None and not isinstance(value, bool):
                    return value
        return None

    def derived(self, key: str) -> Any:
        """The built class's `key` where the class computes it from other fields it reads (a property:
        NemotronHConfig's num_hidden_layers is the length of its layers_block_type), so a config that class saves
        does not write it; else None."""
        import inspect

        if self.built is None or not isinstance(inspect.getattr_static(type(self.built), key, None), property):
            return None
        value = self._attribute(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    def default(self, key: str) -> Any:
        """What the built class holds for `key` though the config does not write it (an int, else None)."""
        value = self._attribute(key) if self.built is not None else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    def kv_heads(self, heads: int, decoder_heads: bool = False) -> Any:
        """The KV heads per layer: written, else Falcon's / GPT-BigCode's multi_query, else the class's own
        (DBRX's attn_config, Mixtral's default), else the query heads. A decoder sized by `decoder_attention_heads`
        (Whisper, BART) does not read `num_key_value_heads`, which Whisper's class maps to its encoder's heads."""
        if self.text.get("model_type") == "falcon" and self.text.get("new_decoder_architecture") \
                and _falcon_caches_every_head():
            return heads
        if not decoder_heads:
            explicit = self.first("num_key_value_heads")
            if explicit:
                return explicit
        if self.text.get("model_type") in ("falcon", "gpt_bigcode"):
            return _kv_heads(self.text, heads)
        return (None if decoder_heads else self.default("num_key_value_heads")) or _kv_heads(self.text, heads)

    def missing(self, needed: tuple[str, ...]) -> str:
        """The refusal: which of `needed` the config does not write, and what transformers' class would hold."""
        if self.built is None:
            return f"config has no {' / '.join(needed)}; cannot size a KV cache"
        absent = [key for key in needed if not self.written(key)] or list(needed)
        name = type(self.built).__name__
        held = [f"{key} {self._attribute(key)!r}" for key in absent if self._attribute(key) is not None]
        ignored = [key for key in ("n_layer", "num_layers", "n_head", "num_heads", "n_embd", "d_model")
                   if key in self.text and key not in self.attribute_map.values() and not self._reads(key)]
        said = f"config has no {' / '.join(absent)} that transformers' {name} reads"
        if ignored:
            said += f" (it ignores the {', '.join(ignored)} written"
            said += f" and keeps its default {', '.join(held)})" if held else ")"
        elif held:
            said += f" (it would keep its default {', '.join(held)})"
        return said + "; cannot size a KV cache"


# The names a decoder's context length is written under, in the order read: Whisper's decoder length first (its
# max_source_positions is the encoder's), then the common one, GPT-2's, MPT's, CodeGen's, ChatGLM's and Qwen's, others',
# LED's (its max_encoder_position_embeddings is the encoder's; LEDConfig reads none of the others).
_CONTEXT_KEYS = ("max_target_positions", "max_position_embeddings", "n_positions", "max_seq_len", "n_ctx",
                 "seq_length", "max_sequence_length", "max_decoder_position_embeddings")


def context_length(config: dict[str, Any], path: str | None = None) -> tuple[int, str | None]:
    """The decoder's context length, the KV cache's default --seq-len, as transformers' config class reads it: the
    first of `_CONTEXT_KEYS` written (under its own name or its attribute_map alias: RWKV's `context_length`), else
    the class's default (LlamaConfig's 2048 where max_position_embeddings is absent, MptConfig's max_seq_len). A
    spelling the class has no attribute of is read only where the class keeps no length at all (T5's leftover
    `n_positions`). Returns the length and, for a default, what it is ("LlamaConfig's default
    max_position_embeddings"); None where written.

    Example:
        >>> context_length({"model_type": "mpt", "n_layers": 2, "n_heads": 4, "d_model": 32, "max_seq_len": 777})
        (777, None)
        >>> context_length({"model_type": "llama", "num_hidden_layers": 2})
        (2048, "LlamaConfig's default max_position_embeddings")

    Raises:
        UsageError: none written nor kept by the class, or one written that is not a positive integer.
    """
    from weightdoctor.meta_model import shown_value

    text = decoder_text_config(config)[0]
    keys = _ConfigKeys(text)
    own = [key for key in _CONTEXT_KEYS if keys._reads(key) or key in keys.attribute_map]
    for key in own or _CONTEXT_KEYS:
        if keys.written(key):
            value = keys._value(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value, None
            field = key if key in text else keys.attribute_map.get(key, key)
            raise UsageError(f"--kv-cache needs --seq-len: config.json's {field} is {shown_value(text.get(field))}, "
                             "no length to size the cache by", path=path)
    name = type(keys.built).__name__ if keys.built is not None else None
    for key in own if name else ():
        if keys.default(key):
            return keys.default(key), f"{name}'s default {key}"
    keeps = f" and transformers' {name} keeps none" if name else ""
    raise UsageError(f"--kv-cache needs --seq-len: config.json writes no context length "
                     f"({', '.join(_CONTEXT_KEYS)}){keeps}", path=path)


def _vision_encoder_positions(config: dict[str, Any]) -> tuple[int, str, tuple[int, int]] | None:
    """The positions a composite's vision encoder (VisionEncoderDecoder's ViT, DeiT, BEiT, Donut's Swin) outputs for
    an image of its `image_size`, as transformers builds it (`AutoModel.from_config(config.encoder)`), run on the
    meta device: ViT's patches and CLS token (17 for 32 x 32 pixels in 8 x 8 patches), DeiT's two extra tokens,
    Swin's last stage. Returns the positions, the encoder class's name and the image size; None where the encoder is
    no vision model with an image size, or transformers does not build or run it.

    Its length was taken as --seq-len ("an encoder's length depends on its input"): a ViT encoder's does not.
    """
    encoder = config.get("encoder")
    if not isinstance(encoder, dict) or not isinstance(encoder.get("model_type"), str):
        return None
    image = encoder.get("image_size")
    size = [image, image] if isinstance(image, int) else image
    if not (isinstance(size, list) and len(size) == 2 and all(
            isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 100_000 for n in size)):
        return None
    import torch

    from weightdoctor.meta_model import config_from_dict, refuse_unbuildable_config

    try:
        refuse_unbuildable_config(encoder)
        from transformers import AutoModel

        with _quiet_libraries(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = config_from_dict(encoder)
            channels = getattr(built, "num_channels", 3)
            with torch.device("meta"):
                model = AutoModel.from_config(built)
            with torch.no_grad():
                output = model(pixel_values=torch.empty(1, channels, *size, device="meta"))
        hidden = output[0]
    except Exception:  # noqa: BLE001 - any encoder transformers cannot build or run so: its length stays unsaid
        return None
    if not (isinstance(hidden, torch.Tensor) and hidden.dim() == 3 and hidden.shape[1] > 0):
        return None
    return int(hidden.shape[1]), type(model).__name__, (size[0], size[1])


def caches_per_token(config: dict[str, Any]) -> bool:
    """Whether some decoder layer caches anything per token, so that the cache's size needs a sequence length: False
    where transformers' cache lays out every decoder layer as one that keeps a fixed-size state, or none at all (a
    pure Mamba or Mamba-2 stack); True where any layer attends (Jamba, Qwen3-Next), for an encoder-decoder, and where
    transformers cannot say.

    Example:
        >>> caches_per_token({"model_type": "mamba", "hidden_size": 32, "num_hidden_layers": 2, "vocab_size": 64})
        False
        >>> caches_per_token({"model_type": "llama", "num_hidden_layers": 2})
        True
    """
    text, composite = decoder_text_config(config)
    if composite or text.get("is_encoder_decoder"):
        return True
    layers = _ConfigKeys(text).first("decoder_layers", "num_decoder_layers", "num_hidden_layers",
                                     legacy=("n_layer", "num_layers"))
    kinds = _decoder_layer_kinds(config, layers) if isinstance(layers, int) else None
    # No layers at all (0): nothing to decide by, the length read as before ("no KV cache: the config counts 0
    # layers" stays the whole note).
    return not kinds or any(kind in _KV_KINDS for kind, _ in kinds)


# Where a decoder's layer count, attention heads and width are written, as estimate_kv_cache reads them
_LAYER_FIELDS = ("decoder_layers", "num_decoder_layers", "num_hidden_layers", "n_layer", "num_layers")
_HEAD_FIELDS = ("decoder_attention_heads", "num_attention_heads", "n_head", "num_heads")
_HIDDEN_FIELDS = ("hidden_size", "n_embd", "d_model")


def _cache_size(text: dict[str, Any], value: Any, fields: tuple[str, ...]) -> int:
    """`value`, a size of the KV cache read from the config under one of `fields`, as a positive whole number.

    Example:
        >>> _cache_size({"head_dim": 8}, 8, ("head_dim",))
        8

    Raises:
        UsageError: it is none (a string, a fraction, 0 or less, a bool), naming the first of `fields` written.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    from weightdoctor.meta_model import shown_value

    field = next((key for key in fields if key in text), None)
    said = f"config.json's {field} is {shown_value(text[field])}" if field else f"the config's {fields[0]} is {value!r}"
    raise UsageError(f"{said}, not a positive whole number; cannot size a KV cache")


def estimate_kv_cache(config: dict[str, Any] | None, dtype: str, batch: int, seq_len: int | None,
                      length_source: str | None = None) -> KVCacheEstimate:
    """KV cache of a decoder for `batch` sequences of `seq_len` tokens: 2 x layers x kv_heads x head_dim.

    The layers counted are those transformers' cache keeps keys and values for; the fixed-size conv and recurrent
    states of Mamba / linear-attention layers are `state_bytes` (see `recurrent_state_bytes`), apart from
    `total_bytes`; sliding-window layers keep at most `sliding_window` tokens. An encoder-decoder's cross-attention
    keys and values are `cross_attention_bytes`, apart too: each decoder layer's, for Whisper's max_source_positions
    encoder frames, a VisionEncoderDecoder's vision encoder's positions for its image_size, else as many encoder
    tokens as `seq_len`. `length_source` says where a `seq_len` the config does not write came from (see
    `context_length`), in the note. `seq_len` None sizes a model none of whose layers caches per token (see
    `caches_per_token`), for any length.

    Example:
        >>> estimate_kv_cache({"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4,
        ...                    "num_key_value_heads": 2, "hidden_size": 32}, "fp16", 1, 10).total_bytes
        1280

    Raises:
        UsageError: no config, or one without the attention sizes.
    """
    import torch

    if not config:
        raise UsageError("--kv-cache needs the model's config.json")
    if batch < 1 or (seq_len is not None and seq_len < 1):
        raise UsageError("--batch and --seq-len must be at least 1")
    text, composite = decoder_text_config(config)
    keys = _ConfigKeys(text)
    # Decoder self-attention cache. An encoder-decoder's decoder sizes come first: Whisper's and BART's
    # num_hidden_layers, where present, count the encoder's layers.
    layers = keys.first("decoder_layers", "num_decoder_layers", "num_hidden_layers", legacy=("n_layer", "num_layers"))
    if layers is None:  # a count the class derives and does not save (Nemotron-H's, from its layers_block_type)
        layers = keys.derived("num_hidden_layers")
    heads_key = next((key for key in ("decoder_attention_heads", "num_attention_heads") if keys.written(key)), None)
    heads = keys.first("decoder_attention_heads", "num_attention_heads", legacy=("n_head", "num_heads"))
    hidden = keys.first("hidden_size", legacy=("n_embd", "d_model"))
    kinds = _decoder_layer_kinds(config, layers) if isinstance(layers, int) else None
    attention = [k for k in kinds if k[0] in _KV_KINDS] if kinds is not None else None
    stateful = sum(1 for kind, _ in kinds if kind in _STATE_KINDS) if kinds is not None else 0
    torch_dtype = DTYPES[dtype][0]
    states = recurrent_states(config, torch_dtype, batch) if stateful else (0, ())
    state = states[0] if states is not None else None
    state_layers = states[1] if states is not None else ()
    unsized = " (not counted)" if state is None else ""
    if attention == [] and isinstance(layers, int):
        # Mamba, Mamba-2, RWKV-like stacks: no layer attends, so nothing grows with the sequence
        note = (f"no KV cache: {'its' if layers == 1 else 'all'} {counted(layers, 'layer', grouped=False)} "
                f"{plural(layers, 'keeps', 'keep')} a recurrent state of fixed size per sequence instead{unsized}"
                if stateful else "no KV cache: no layer attends" if layers
                else "no KV cache: the config counts 0 layers")
        if seq_len is None:
            note += "; the same for any sequence length, so no --seq-len is needed"
        return KVCacheEstimate(batch, seq_len, 0, 0, 0, torch_dtype, 0, 0, 0, False, note, state)
    sizes = ((layers, _LAYER_FIELDS), (heads, _HEAD_FIELDS), (hidden, _HIDDEN_FIELDS))
    for value, fields in sizes:
        if value is not None and not isinstance(value, int):  # written, as no count (1.0, "12", a list)
            _cache_size(text, value, fields)
    if not (isinstance(layers, int) and isinstance(heads, int) and isinstance(hidden, int)):
        raise UsageError(keys.missing(("num_hidden_layers", "num_attention_heads", "hidden_size")))
    if seq_len is None:
        # `caches_per_token` said no layer caches per token, and yet one attends here: no length to size it by
        raise UsageError("--kv-cache needs --seq-len: some layers cache keys and values per token")
    from weightdoctor.meta_model import MAX_LAYERS

    if layers < 0:
        _cache_size(text, layers, _LAYER_FIELDS)
    if layers > MAX_LAYERS:
        # The layers are counted one by one below: num_hidden_layers 1e30 (json reads any integer) never ended.
        raise UsageError(f"config.json asks for {layers:,} decoder layers; weightdoctor sizes the KV cache of up to "
                         f"{MAX_LAYERS:,} layers")
    kv_heads = keys.kv_heads(heads, decoder_heads=heads_key == "decoder_attention_heads")
    notes = []
    if text.get("model_type") == "moonshine" and keys.built is not None:
        # MoonshineAttention writes its head counts into the shared config (`config.update`, through the
        # attribute_map onto decoder_num_*), the encoder's layers first: transformers 5.25's decoder is built, and
        # caches, with the encoder's counts, whatever decoder_num_* says.
        encoder = (keys._attribute("encoder_num_attention_heads"), keys._attribute("encoder_num_key_value_heads"))
        if all(isinstance(n, int) and n > 0 for n in encoder) and encoder != (heads, kv_heads):
            notes.append(f"Moonshine: transformers builds the decoder's attention with the encoder's head counts "
                         f"(encoder_num_attention_heads {encoder[0]}, encoder_num_key_value_heads {encoder[1]}), "
                         f"not decoder_num_* ({heads}, {kv_heads})")
            heads, kv_heads = encoder
    # Zamba's shared attention runs on the hidden state concatenated with the embeddings: attention_head_dim is
    # 2 x hidden_size / heads there (HunyuanVL spells head_dim so too); T5 maps head_dim to its d_kv
    head_dim = keys.first("head_dim", legacy=("attention_head_dim", "d_kv")) or keys.default("head_dim")
    if not head_dim:
        _cache_size(text, heads, _HEAD_FIELDS)
        head_dim = hidden // heads
        if head_dim < 1:
            raise UsageError(f"config.json writes no head_dim, and its hidden size {hidden:,} over "
                             f"{counted(heads, 'attention head', grouped=False)} leaves none; cannot size a KV cache")
    # A size the config writes as no positive whole number ("8", 0.5, -1, true) that transformers' class refused (the
    # plan then comes from the tensors) or built with: multiplied as written, it made a negative or fractional cache,
    # or a TypeError
    head_dim = _cache_size(text, head_dim, ("head_dim", "attention_head_dim", "d_kv"))
    kv_heads = _cache_size(text, kv_heads, ("num_key_value_heads", "num_kv_heads", "multi_query"))
    element = getattr(torch, torch_dtype).itemsize
    per_token_layer = 2 * kv_heads * head_dim * element
    if attention is None:
        # as the config spells it: `layer_types`, else every layer slides where it has a sliding_window
        window = text.get("sliding_window")
        layer_types = text.get("layer_types")
        attention = []
        for index in range(layers):
            kind = layer_types[index] if isinstance(layer_types, list) and index < len(layer_types) else None
            sliding = isinstance(window, int) and window > 0 and (kind is None or kind == "sliding_attention")
            attention.append(("sliding_attention" if sliding else "full_attention", window if sliding else None))
    encoder_decoder = bool(composite or text.get("is_encoder_decoder") or keys._attribute("is_encoder_decoder")
                           or "decoder_layers" in text or "num_decoder_layers" in text)
    latent, rope = text.get("kv_lora_rank"), text.get("qk_rope_head_dim")
    latent_cache = isinstance(latent, int) and isinstance(rope, int) and latent > 0 and rope >= 0
    if latent_cache:
        # Multi-head latent attention (DeepSeek-V2/V3, Kimi-K2, MiniCPM3): transformers caches the compressed
        # latent and the shared rotary key of each token, once per layer, not keys and values per head.
        kv_heads, head_dim = 1, latent + rope
        per_token_layer = head_dim * element
        notes = [f"multi-head latent attention: transformers caches kv_lora_rank + qk_rope_head_dim = {head_dim} "
                 "values per layer and token"]
    nope, values = text.get("qk_nope_head_dim"), text.get("v_head_dim")
    if latent_cache and any(kind == "deepseek_sparse_attention" for kind, _ in attention) \
            and isinstance(nope, int) and isinstance(values, int) and nope >= 0 and values > 0:
        # transformers 5.17's DeepSeek-V3.2 (and its DSA kin) caches the latent expanded by kv_b_proj, as keys of
        # qk_nope_head_dim + qk_rope_head_dim and values of v_head_dim for each of num_attention_heads ("Sparse-
        # attention models cache the expanded K/V, not the compressed latents"); 5.25 caches the latent.
        import transformers

        latent_cache = False
        # head_dim: a head's key and value together (they differ in width), so that the line's factors multiply out
        kv_heads, head_dim = heads, nope + rope + values
        per_token_layer = heads * head_dim * element
        notes = [f"transformers {transformers.__version__} caches this sparse attention's keys and values expanded "
                 f"per head, not the latent: {counted(heads, 'head', grouped=False)} x (qk_nope_head_dim + "
                 f"qk_rope_head_dim = {nope + rope} key values + v_head_dim = {values} values = {head_dim} a head) "
                 "per layer and token"]
    # DeepSeek-V3.2's sparse attention (transformers' "indexed_attention" layers) also caches its indexer's key of
    # each token, index_head_dim values, beside the latent
    index_dim = text.get("index_head_dim")
    indexer = index_dim * element if isinstance(index_dim, int) and index_dim > 0 else 0
    total = 0
    per_token = 0
    windowed: set[int] = set()
    layer_bytes = []
    for kind, window in attention:
        layer_token = per_token_layer + (indexer if kind in _INDEXED_KINDS else 0)
        per_token += layer_token
        tokens = seq_len
        if isinstance(window, int) and window > 0:
            tokens = min(seq_len, window)
            if tokens < seq_len:
                windowed.add(window)
        layer_bytes.append(layer_token * tokens * batch)
        total += layer_bytes[-1]
    if indexer and any(kind in _INDEXED_KINDS for kind, _ in attention):
        notes.append("plus the indexer's key of each token, "
                     f"index_head_dim = {counted(index_dim, 'value', grouped=False)} per layer")
    if windowed:
        sliding = sum(1 for _kind, window in attention if window in windowed)
        which = "" if sliding == len(attention) else f" ({sliding} of {counted(layers, 'layer', grouped=False)})"
        # Measured (transformers 5.25): DynamicSlidingWindowLayer keeps the last window - 1 tokens as a view of the
        # tensor it attended over, so after a prompt of S > window tokens the S tokens stay in memory until the next
        # token, and from then on the window's; StaticCache allocates the window. The estimate is the latter.
        notes.append(f"sliding-window layers{which} keep at most {', '.join(map(str, sorted(windowed)))} tokens "
                     "while generating (right after a longer prompt, transformers' DynamicCache still holds all of "
                     "it there until the next token)")
    shared = sum(1 for kind, _ in kinds or [] if kind == "dummy")
    if shared:
        notes.append(f"{shared} of {counted(layers, 'layer', grouped=False)} "
                     f"{plural(shared, 'caches', 'cache')} nothing "
                     f"({plural(shared, 'it reuses', 'they reuse')} earlier layers' keys and values, or "
                     f"{plural(shared, 'does', 'do')} not attend)")
    hybrid = sum(1 for kind, _ in kinds or [] if kind in _STATE_KINDS and kind in _KV_KINDS)
    if stateful - hybrid:
        notes.append(f"{stateful - hybrid} of {counted(layers, 'layer', grouped=False)} "
                     f"{plural(stateful - hybrid, 'keeps', 'keep')} a recurrent state of fixed size per sequence "
                     f"instead of keys and values{unsized}")
    if hybrid:
        notes.append(f"{hybrid} of {counted(layers, 'layer', grouped=False)} also {plural(hybrid, 'keeps', 'keep')} a "
                     f"recurrent state of fixed size per sequence{unsized}")
    # Each decoder layer's share, where transformers says each layer's kind (`kinds`): a layer that caches nothing
    # (Gemma 3n's shared-KV layers, a hybrid's Mamba layers) holds 0 of the keys and values, and its recurrent state
    # where the cache's layers hold them all (Jamba, Qwen3-Next). Hybrid and shared-KV models were checked in total
    # only, and a Jamba whose attention layers ran on a GPU without room for their keys and values was said to fit.
    # An encoder-decoder's decoder layers (T5, Whisper, BART) are told apart from its encoder's by get_decoder();
    # their share is the self-attention cache, at least what that GPU holds (the cross-attention cache adds to it).
    # An encoder-decoder's cross-attention cache: each decoder layer keeps the keys and values of the encoder's
    # output, at the decoder's heads and head_dim (Whisper, BART, T5, Moonshine, a composite's BERT / GPT-2 / TrOCR
    # decoder), once per sequence. Whisper's encoder always outputs max_source_positions frames (30 s of audio), a
    # VisionEncoderDecoder's ViT its patches for its image_size; another encoder's length depends on its input, taken
    # here as long as the decoder's.
    cross = encoder_length = None
    if encoder_decoder:
        frames = keys.first("max_source_positions") or keys.default("max_source_positions")
        whisper = text.get("model_type") == "whisper" and isinstance(frames, int) and frames > 0
        vision = _vision_encoder_positions(config) if composite and not whisper else None
        encoder_length = frames if whisper else vision[0] if vision else seq_len
        cross = [per_token_layer * encoder_length * batch for _ in attention]
        said = (f"{encoder_length:,} encoder frames, Whisper's max_source_positions" if whisper
                else f"{counted(encoder_length, 'encoder position', grouped=True)}, what its {vision[1]} outputs for "
                     f"an image of its image_size, {vision[2][0]} x {vision[2][1]} pixels" if vision
                else f"{counted(encoder_length, 'encoder token', grouped=True)}, as many as the decoder's (an "
                     "encoder's length depends on its input)")
        notes.insert(0, f"the decoder's self-attention; its cross-attention keys and values, each decoder layer's, "
                        f"are counted apart for {said}")
    if length_source:
        notes.append(f"the {seq_len:,} tokens are {length_source} (config.json writes none)")
    shares: tuple[int, ...] = ()
    if kinds is not None and len(kinds) == layers:
        kv_bytes = iter(layer_bytes)
        shares = tuple(next(kv_bytes) if kind in _KV_KINDS else 0 for kind, _ in kinds)
        if len(state_layers) == layers:
            shares = tuple(a + b for a, b in zip(shares, state_layers, strict=True))
    elif len(attention) == layers:
        shares = tuple(layer_bytes)
    if cross is not None and len(shares) == len(cross):
        shares = tuple(a + b for a, b in zip(shares, cross, strict=True))
    return KVCacheEstimate(batch, seq_len, len(attention), kv_heads, head_dim, torch_dtype, per_token, total, 0,
                           False, "; ".join(notes) or None, state, shares, latent_cache,
                           sum(cross) if cross is not None else 0, encoder_length)


def _decoder_prefix(model: torch.nn.Module) -> str:
    """The name (with its trailing dot) of the module transformers' `get_decoder()` returns (LLaVA's
    "model.language_model."), "" where it returns the model itself or none can be told."""
    try:
        decoder = model.get_decoder()
    except Exception:  # noqa: BLE001 - a model's own get_decoder may raise (transformers' "exotic models")
        return ""
    return next((f"{name}." for name, module in model.named_modules() if module is decoder and name), "")


def _kv_crowded_gpu(planned: PlannedModel, no_split: list[str], device_map: Mapping[str, int | str],
                    kv: KVCacheEstimate, capacities: Mapping[int | str, int], reserve: int,
                    per_device: Mapping[int | str, int], binary: bool) -> str | None:
    """The line for a GPU that cannot hold its layers' share of a KV cache the GPUs hold in all, or None.

    transformers keeps each layer's keys and values on that layer's device (an offloaded layer's on the GPU it runs
    on, accelerate's main_device: see `main_gpus`): 16 of 32 layers on a 10 GB GPU with 3.26 GB
    left need half the cache there, whatever a 24 GB GPU beside it has left. Each layer's own size counts
    (`kv._layer_bytes`: sliding-window layers keep their window, multi-head latent attention its latent), where every
    layer caches keys and values and the decoder blocks are as many; None otherwise. A hybrid layer's recurrent
    state is not counted in its share (its size per layer is not known here): the share is then the least it holds.

    It was checked for a cache of one size per layer alone, and a note (sliding window, latent attention) turned it
    off: a Mistral whose every layer slides, all on a GPU with 6.32 MB left for its 8.39 MB cache, was said to fit
    in the 46.32 MB two GPUs had left.
    """
    from weightdoctor.units import format_bytes

    gpus_used = {device for device in device_map.values() if isinstance(device, int)}
    if kv.num_layers and len(gpus_used) == 1:
        # One GPU runs every module (and every offloaded one, as main_device): the whole cache is made there, whatever
        # the layers' sizes or an encoder's blocks. A T5 mapped whole to a GPU with 990.46 KB left was said to fit its
        # 16.78 MB cache in the 40.99 MB two GPUs had left, the other holding nothing.
        gpu = next(iter(gpus_used))
        needed = kv.held_bytes
        free = max(0, capacities[gpu] - reserve - per_device.get(gpu, 0)) if gpu in capacities else None
        if free is not None and needed > free:
            return (f"KV cache: cuda:{gpu} runs {kv.num_layers} of the {kv.num_layers} layers, so it holds "
                    f"{format_bytes(needed, binary)} of the {format_bytes(needed, binary)} cache, with "
                    f"{format_bytes(free, binary)} left: it does not fit there (transformers keeps each layer's keys "
                    "and values on the GPU that layer runs on, not where another GPU has room)")
        return None
    if not kv.num_layers or not kv._layer_bytes:
        return None
    blocks = [name for name, module in planned.model.named_modules() if type(module).__name__ in no_split]
    if len(blocks) != len(kv._layer_bytes):
        # A vision-language model's blocks are its vision tower's too (LLaVA: CLIPVisionEmbeddings, CLIPEncoderLayer
        # and the LlamaDecoderLayers): its decoder layers are the one list of blocks as many as the layers cached.
        # Counting all of them turned the check off, and 8 LLaVA text layers on a GPU with 7.34 MB left for their
        # 16.78 MB cache were said to fit in the 46.14 MB two GPUs had left.
        lists: dict[str, list[str]] = {}
        for name in blocks:
            lists.setdefault(name.rpartition(".")[0], []).append(name)
        decoder = [names for names in lists.values() if len(names) == len(kv._layer_bytes)]
        if len(decoder) > 1:
            # a vision tower as deep as the decoder: the list under transformers' own `get_decoder()` is the one
            decoder = [names for names in decoder if names[0].startswith(_decoder_prefix(planned.model))]
        if len(decoder) != 1:
            return None
        blocks = decoder[0]
    # accelerate's main_device, where offloaded layers run: `list(set of the map's GPUs)[0]`, not the lowest-numbered
    # with a GPU from cuda:8 on (a map on cuda:1 and cuda:8 runs them on cuda:8); each GPU it can be is checked.
    for main_gpu in main_gpus(device_map) or [None]:
        layers: dict[int | str, int] = {}
        shares: dict[int | str, int] = {}
        moved: dict[int | str, int] = {}
        for block, layer_bytes in zip(blocks, kv._layer_bytes, strict=True):
            parts = block.split(".")
            device = next((device_map[key] for key in (".".join(parts[:i]) for i in range(len(parts), -1, -1))
                           if key in device_map), None)
            if device is None:
                return None  # a block the map splits: no one device to count it on
            if not isinstance(device, int):
                device = main_gpu
                if device is None:
                    return None
                moved[device] = moved.get(device, 0) + 1
            layers[device] = layers.get(device, 0) + 1
            shares[device] = shares.get(device, 0) + layer_bytes
        for device, count in sorted(layers.items(), key=lambda item: str(item[0])):
            if device not in capacities:  # a hand-written map's GPU no --gpu sized: its room is unknown
                continue
            free = max(0, capacities[device] - reserve - per_device.get(device, 0))
            share = shares[device]
            if share > free:
                offloaded = (f" ({moved[device]} offloaded: they run on accelerate's main device, the first GPU "
                             f"dispatch_model takes from a set of the map's GPUs: {_main_gpu_said(device_map)})"
                             if moved.get(device) else "")
                whole = format_bytes(sum(kv._layer_bytes), binary)
                return (f"KV cache: cuda:{device} runs {count} of the {len(kv._layer_bytes)} layers{offloaded}, so "
                        f"it holds {format_bytes(share, binary)} of the {whole} cache, with "
                        f"{format_bytes(free, binary)} left: it does not fit there (transformers keeps each layer's "
                        "keys and values on the GPU that layer runs on, not where another GPU has room)")
    return None


def estimate_training(model: torch.nn.Module, dtype: str) -> TrainingEstimate:
    """Adam training memory by accelerate's own `estimate_training_usage`, from the fp32 size of the model."""
    from accelerate.commands.estimate import estimate_training_usage

    fp32_bytes = 0
    copies = tied_copies(model)
    tensors = [t for n, t in [*model.named_parameters(), *model.named_buffers()] if n not in copies]
    for tensor in tensors:
        fp32_bytes += tensor.numel() * (4 if tensor.is_floating_point() else tensor.element_size())
    precision = DTYPES[dtype][0] if DTYPES[dtype][1] is None else dtype
    usage = estimate_training_usage(fp32_bytes, precision)
    if any(v == -1 for v in usage.values()):
        return TrainingEstimate(precision, fp32_bytes, None, None, None, None, None, None,
                                f"accelerate has no training estimate for {dtype}")
    return TrainingEstimate(
        precision, fp32_bytes, usage["model"], usage["gradients"], usage["optimizer"], usage["step"],
        max(usage.values()), usage["model"] + usage["gradients"] + usage["optimizer"],
    )


# ----------------------------------------------------------------------------------------------- the plan


@dataclass
class PlanRequest:
    """What the user asked for, already parsed (sizes in bytes)."""

    gpus: list[int]
    cpu: int | None
    disk: bool = False
    strategy: str = "auto"
    no_split: list[str] | None = None
    reserve: int = 0
    manual_map: dict[str, int | str] | None = None
    kv_cache: tuple[int, int | None] | None = None  # (batch, seq_len); seq_len None: see `caches_per_token`
    # Where seq_len came from when the config does not write it: its class's default ("LlamaConfig's default
    # max_position_embeddings"), said in the estimate's note; None where written or given.
    kv_length_source: str | None = None
    training: bool = False
    suggest: bool = True
    # --local: the sizes are what the machine has, planned as from_pretrained plans without max_memory
    # (`unset_max_memory_headroom`), not as a max_memory the user wrote
    unset_max_memory: bool = False
    # The sizes were typed in binary units (`--gpu 1.7GiB`): the ones echoed back in words are said in them too.
    binary_units: bool = False
    # --revision as typed: a from_pretrained call the report offers loads the same revision it planned
    revision: str | None = None


def plan_devices(planned: PlannedModel, request: PlanRequest, source: str = "") -> PlanReport:
    """Plan (or check) the placement of `planned` on the requested devices.

    Example:
        >>> report = plan_devices(planned, PlanRequest(gpus=[24 * 10**9, 24 * 10**9], cpu=64 * 10**9))  # doctest: +SKIP
        >>> report.verdict, report.device_map["model.layers.0"]  # doctest: +SKIP

    Raises:
        UsageError: no device at all, an unknown strategy or --no-split class.
    """
    if not request.gpus and request.cpu is None:
        raise UsageError("no devices: give --gpu SIZE (repeatable) and/or --cpu SIZE, or --local")
    if request.reserve and any(size <= request.reserve for size in request.gpus):
        # Both sizes, so a slip (--reserve 20GiB meant as 2GiB) shows in the message itself; in binary units when
        # both were whole binary ones (24GiB reads 24.00 GiB, not 25.77 GB).
        from weightdoctor.units import format_bytes

        smallest = min(size for size in request.gpus if size <= request.reserve)
        binary = all(size % 2**20 == 0 and size % 10**6 for size in (smallest, request.reserve))
        than = "as large as" if request.reserve == smallest else "larger than"
        raise UsageError(f"--reserve {format_bytes(request.reserve, binary)} is {than} a GPU budget (--gpu "
                         f"{format_bytes(smallest, binary)}): nothing would be left to place; give a --reserve "
                         "smaller than every --gpu")
    no_split = no_split_classes(planned, request.no_split)
    sizer = _sizer_for(planned, planned.dtype)
    max_memory = build_max_memory(request.gpus, request.cpu, request.reserve)
    headroom = (unset_max_memory_headroom(max_memory, request.strategy)
                if request.unset_max_memory and request.manual_map is None else {})
    for key, amount in headroom.items():
        max_memory[key] -= amount
    capacities: dict[int | str, int] = {i: size for i, size in enumerate(request.gpus)}
    if request.cpu is not None:
        capacities["cpu"] = request.cpu
    findings: list[Finding] = []
    if request.manual_map is not None:
        device_map = dict(request.manual_map)
        budgets: dict[int | str, float] = {k: float(v) for k, v in capacities.items()}
        findings = check_manual_map(planned, device_map, capacities, request.disk, sizer, request.binary_units)
        placement = "manual map (checked)"
    else:
        try:
            placement_result = place(planned, max_memory, request.strategy, no_split, sizer)
        except UsageError as exc:
            # The planner's failure is about this source's model: its line names it, as every refusal does.
            if exc.path is None and source:
                exc.path = source
            raise
        device_map, budgets, visited = placement_result.device_map, placement_result.budgets, placement_result.visited
        placement = ("transformers.integrations.accelerate._get_device_map" if planned.is_transformers
                     else "accelerate.get_balanced_memory + infer_auto_device_map")
    sizes, tensor_sizes = _sizes(planned, planned.dtype)
    unplaced = unplaced_tensors(planned, device_map, list(tensor_sizes)) if request.manual_map is None else {}
    per_device, entry_bytes = usage_by_device(device_map, tensor_sizes, unplaced)
    over = any(per_device.get(k, 0) > v for k, v in capacities.items())
    verdict = classify(device_map, bool(request.gpus), request.disk, over, set(unplaced.values()))

    held: dict[int | str, list[HeldBack]] = {}
    if request.manual_map is None:
        held = explain_devices(planned, device_map, capacities, request.reserve, budgets, entry_bytes, per_device,
                               sizes, no_split, request.strategy, sizer, visited, headroom, request.binary_units)
    ranges = tied_elsewhere(planned, module_ranges(device_map, entry_bytes), device_map, tensor_sizes) + [
        ModuleRange(f"{name} (in no map entry)", device_name(device), [name], tensor_sizes.get(name, 0))
        for name, device in unplaced.items()
    ]
    keys: list[int | str] = list(capacities)
    if "disk" in per_device or request.disk:
        keys.append("disk")
    devices = [
        DeviceUse(
            device_name(k), k, capacities.get(k),
            None if k == "disk" else int(budgets.get(k, capacities.get(k, 0))),
            per_device.get(k, 0), [r for r in ranges if r.device == device_name(k)], held.get(k, []),
        )
        for k in keys
    ]
    for key in per_device:
        if key not in keys:  # a manual map naming a device without a budget
            devices.append(DeviceUse(device_name(key), key, None, None, per_device[key],
                                     [r for r in ranges if r.device == device_name(key)]))
    cpu_bytes = per_device.get("cpu", 0) if request.gpus else 0
    disk_bytes = per_device.get("disk", 0)
    per_input = per_input_offloaded_bytes(planned, device_map, tensor_sizes) if request.gpus else {}
    kept_buffers = offloaded_buffer_bytes(planned, device_map, tensor_sizes) if request.gpus else 0
    # a tied tensor offloaded with two of its modules is loaded by each one's hook, one beside a twin on the main GPU
    # by none (`tied_streaming`)
    tied = tied_streaming(planned, device_map, tensor_sizes) if request.gpus else TiedStreaming()
    # a module called twice a step is loaded twice (`repeated_call_bytes`)
    repeated = sum(repeated_call_bytes(planned, device_map, tensor_sizes).values()) if request.gpus else 0
    offload = Offload(cpu_bytes, disk_bytes,
                      cpu_bytes + disk_bytes - sum(per_input.values()) - kept_buffers + tied.reloaded_per_token
                      - tied.on_gpu_per_token + repeated,
                      per_input.get("cpu", 0) + tied.reloaded_per_input - tied.on_gpu_per_input,
                      per_input.get("disk", 0), kept_buffers, tied.reloaded_per_token, tied.reloaded_per_input,
                      tied.on_gpu_per_token + tied.on_gpu_per_input, tied.from_gpu_per_token, repeated)

    suggestions: list[Suggestion] = []
    if request.suggest and request.manual_map is None and verdict != "fits-on-gpus" and request.gpus:
        suggestions = suggest_changes(planned, request, no_split, source)
    # GPUs alone, the rest with nowhere to go: from_pretrained(device_map="auto") without max_memory puts it in CPU
    # RAM, which --cpu plans; only a lower dtype, more GPUs and disk (the slowest) were offered.
    if verdict == "does-not-fit" and request.cpu is None and request.gpus and request.suggest \
            and request.manual_map is None and not over and per_device.get("disk", 0) \
            and (cpu := _cpu_that_fits(planned, request, no_split, per_device["disk"])) is not None:
        from weightdoctor.units import format_bytes

        suggestions.append(Suggestion(
            "cpu", f"--cpu {cpu[1]}: the same GPUs with the rest "
            f"({format_bytes(per_device['disk'], request.binary_units)}) in CPU RAM, streamed to the GPU on "
            "every forward pass (faster than disk)", planned.dtype, list(request.gpus), "needs-cpu-offload"))
    if verdict == "does-not-fit" and "disk" in device_map.values() and not request.disk and not over:
        # The planner already sent the rest to disk: with --disk this very map is the plan.
        suggestions.append(Suggestion("disk", "--disk: the same plan with the rest offloaded to disk (slow)",
                                      planned.dtype, list(request.gpus), "needs-disk-offload"))

    warnings = list(planned.warnings)
    rest_said = quantized_rest_warning(planned, request, no_split, tensor_sizes, verdict)
    if rest_said:
        warnings.append(rest_said)
    # what accelerate adds on the main GPU beside the map's share: the offloaded modules' buffers, and the weights
    # an offloaded module's hook copies there while it runs
    onloaded = offload_onloaded_bytes(planned, device_map, tensor_sizes) if request.gpus else 0
    copies = tied_gpu_copies(planned, device_map, tensor_sizes) if request.gpus else {}
    kept_over = kept_buffers_over_budget_warning(device_map, per_device, capacities, kept_buffers,
                                                 request.binary_units, request.reserve, onloaded, copies)
    if kept_over:
        warnings.append(kept_over)
    bnb_offload = bnb_offload_warning(planned, device_map, tensor_sizes, request.binary_units)
    if bnb_offload:
        warnings.append(bnb_offload)
    values = list(device_map.values())
    if planned.quantizer_swapped and _is_bitnet(planned.config) and (len(values) > 1 and "cpu" in values
                                                                      or "disk" in values):
        # BitNetHfQuantizer.validate_environment(device_map=...), which _get_device_map calls on the map it made,
        # where CUDA is available (its own test: `len(map) > 1 and "cpu" in values or "disk" in values`)
        refused = bitnet_refusal_here(planned.config, device_map)
        if refused is None:  # no CUDA here: said of the machine with the GPUs planned
            warnings.append("transformers' BitNet quantizer refuses a device map holding cpu or disk on a machine "
                            "with a GPU (ValueError: \"You are attempting to load a BitNet model with a device_map "
                            "that contains a CPU or disk device\"): from_pretrained loads it with every module on "
                            "the GPUs, or the whole model on the CPU (device_map {\"\": \"cpu\"}: one entry passes "
                            "its check)")
        else:
            # This machine has CUDA: from_pretrained raises on this very map, so it is an error, not a plan that
            # offloads, and the offload suggestions (--cpu, --disk) would be refused the same way.
            findings.append(Finding(
                "error", "quantizer-refuses-offload", None,
                "from_pretrained raises on this map here: CUDA is available, and transformers' BitNet quantizer "
                f"refuses a device map holding cpu or disk (ValueError: \"{clip_middle(refused.split('.')[0], 160)}\")"
                "; it loads with every module on the GPUs, or the whole model on the CPU (device_map "
                "{\"\": \"cpu\"}: one entry passes its check)"))
            suggestions = [s for s in suggestions if s.change not in ("cpu", "disk")]
            if verdict in ("needs-cpu-offload", "needs-disk-offload"):
                verdict = "does-not-fit"
    if planned.is_transformers and (refusing := offload_refusing_quantizer(planned.config, device_map)) is not None:
        # HIGGS', HQQ's and FP-Quant's validate_environment, which _get_device_map calls on the map it made, raise
        # on it whatever the machine: the map is no load, and offloading further (--cpu, --disk) is refused alike.
        # torchao's refuses disk only (beside other devices): the GPUs and the CPU together load
        disk_only = refusing[0] == "torchao"
        findings.append(Finding(
            "error", "quantizer-refuses-offload", None,
            f"from_pretrained raises on this map: transformers' {refusing[0]} quantizer refuses a device map holding "
            + (f"disk beside other devices (ValueError: \"{refusing[1]}\"); it loads with every module on the GPUs "
               "and the CPU" if disk_only else
               f"cpu or disk (ValueError: \"{refusing[1]}\"); it loads with every module on the GPUs")))
        suggestions = [s for s in suggestions if s.change not in (("disk",) if disk_only else ("cpu", "disk"))]
        if verdict in ("needs-cpu-offload", "needs-disk-offload"):
            verdict = "does-not-fit"
    if planned.gguf_file is not None:
        # GgufHfQuantizer.update_device_map raises on a device_map naming disk, but it sees the device_map as given:
        # a dict (this plan written with -o, a --map) that names disk is refused, and the string "auto" is not. The
        # map "auto" makes is checked by the quantizer's validate_environment only, which does not look at it: there
        # the offloaded weights, dequantized, are re-saved into offload_folder= (accelerate's offload_weight raises
        # ValueError without one), and the model loads and runs (measured, transformers 5.25: its logits equal the
        # all-CPU load's). So an automatic plan with disk loads as device_map="auto" with offload_folder=, and a
        # hand-written map with disk does not load at all.
        # Nor is int8 / int4 a way: bitsandbytes beside gguf_file= is refused (`gguf_bitsandbytes_refusal`).
        manual = request.manual_map is not None
        suggestions = [s for s in suggestions if s.dtype not in ("int8", "int4")
                       and not (manual and (s.change == "disk" or s.verdict == "needs-disk-offload"))]
        if "disk" in device_map.values():
            if manual:
                findings.append(Finding(
                    "error", "gguf-refuses-disk", None,
                    f"from_pretrained(folder, gguf_file={planned.gguf_file!r}, device_map=<this map>) raises: "
                    f"transformers' GGUF quantizer refuses a device map naming disk (RuntimeError: "
                    f"\"{GGUF_DISK_REFUSAL}\"); it loads with every module on the GPUs and the CPU, or as "
                    "device_map=\"auto\" with offload_folder="))
                if verdict in ("needs-cpu-offload", "needs-disk-offload"):
                    verdict = "does-not-fit"
            else:
                findings.append(Finding(
                    "warn", "gguf-refuses-disk", None,
                    f"from_pretrained(folder, gguf_file={planned.gguf_file!r}, device_map=\"auto\") loads this plan "
                    "only given offload_folder=: the weights it puts on disk are dequantized and re-saved there "
                    "(ValueError \"The current `device_map` had weights offloaded to the disk, which needed to be "
                    "re-saved\" without one); this map passed as a dict (written with -o) is refused by transformers' "
                    f"GGUF quantizer (RuntimeError: \"{GGUF_DISK_REFUSAL}\")"))
    if planned.is_transformers and (raising := torchao_fqn_map_raises(planned, device_map)) is not None:
        warnings.append(raising)
    kept_fp32 = keep_in_fp32_warning(planned, device_map, tensor_sizes, unplaced, request.binary_units)
    if kept_fp32:
        warnings.append(kept_fp32)
    split_layer = split_layer_warning(planned, device_map, no_split, manual=request.manual_map is not None)
    if split_layer:
        warnings.append(split_layer)
    if unplaced:
        from weightdoctor.units import format_bytes

        shown = [f"{name} ({format_bytes(tensor_sizes[name], request.binary_units)})" for name in list(unplaced)[:3]]
        where = sorted({device_name(d) for d in unplaced.values()})
        warnings.append(
            f"{counted(len(unplaced), 'tensor')} {plural(len(unplaced), 'is', 'are')} in no map entry, since the "
            "planner split the "
            f"module that holds {plural(len(unplaced), 'it', 'them')} "
            f"and places only its parameters and children: {', '.join(shown)}"
            + (" and more" if len(unplaced) > 3 else "")
            + f"; from_pretrained puts them on {', '.join(where)} (the map's \"\" entry, else cpu), and they are "
            "counted there"
        )

    param_names, buffer_names, num_params = _tensor_names(planned)
    weights_bytes = sum(tensor_sizes.get(n, 0) for n in param_names)
    buffers_bytes = sum(tensor_sizes.get(n, 0) for n in buffer_names)
    kv = None
    if request.kv_cache is not None:
        # an FP8 plan computes (and caches keys and values) at the dtype of its unquantized rest
        kv_dtype = _fp8_rest_dtype(planned.config) if planned.dtype == "fp8" else planned.dtype
        if planned.dtype in ("int4", "int8") and planned.is_transformers:
            # a quantized model computes (and caches) at the dtype its rest is built at: a float32 config's float32
            kv_dtype = _built_float_dtype(planned.model) or kv_dtype
        kv = estimate_kv_cache(planned.config, kv_dtype, *request.kv_cache, length_source=request.kv_length_source)
        beyond = seq_len_beyond_context_warning(planned.config, request.kv_cache[1], request.kv_length_source)
        if beyond:
            warnings.append(beyond)
        gpu_free = sum(max(0, capacities[k] - request.reserve - per_device.get(k, 0)) for k in capacities
                       if isinstance(k, int))
        needed = kv.held_bytes
        crowded = _kv_crowded_gpu(planned, no_split, device_map, kv, capacities, request.reserve, per_device,
                                  request.binary_units) if needed <= gpu_free else None
        if crowded is not None:
            warnings.append(crowded)
        # A map that runs no module on a GPU (every one on "cpu" or "disk") is run on the CPU: accelerate's main_device
        # is then "cpu", where each layer's keys and values are made, whatever room the GPUs given have.
        on_gpus = any(isinstance(device, int) for device in device_map.values())
        kv = dataclasses.replace(kv, gpu_free_bytes=gpu_free,
                                 fits_on_gpus=needed <= gpu_free and crowded is None and on_gpus)
    training = estimate_training(planned.model, planned.dtype) if request.training else None
    if map_cannot_run(planned, device_map, findings):
        # from_pretrained raises on this map (an error finding says why): nothing is ever streamed, so no traffic
        # figure is given, in the text or the JSON; where the map counts the tensors stays said
        offload = Offload(cpu_bytes, disk_bytes, None, None, None, None, None, None, None, None, None)
        # as for a quantizer's refusal: no offload of this map loads; and a map on the GPUs alone that does not run
        # (tied twins on two GPUs, `_tied_gpu_split`) fits them no better
        verdict = "does-not-fit"
    return PlanReport(
        source=source,
        model_class=planned.model_class,
        built_from=planned.built_from,
        placement=placement,
        strategy=request.strategy,
        dtype=planned.label or planned.dtype,
        num_params=num_params,
        weights_bytes=weights_bytes,
        buffers_bytes=buffers_bytes,
        no_split=no_split,
        reserve_bytes=request.reserve,
        device_map=device_map,
        devices=devices,
        verdict=verdict,
        offload=offload,
        suggestions=suggestions,
        kv_cache=kv,
        training=training,
        manual_map=request.manual_map is not None,
        disk_allowed=request.disk,
        findings=findings,
        warnings=warnings,
        unplaced=unplaced,
    )


# The decoder's cross-attention modules (T5's EncDecAttention; BART's, Marian's, Whisper's encoder_attn; the
# crossattention of BERT-style and GPT-2-style decoders) and, in them, the key / value projections whose outputs
# generate() caches once per input (EncoderDecoderCache's cross-attention layers, `is_updated`): GPT-2's
# crossattention.c_attn projects keys and values together (its query is q_attn), BERT's sits one level down
# (crossattention.self.key / .value). Measured with accelerate's hooks in generate() (tests/test_plan84). These
# names are the fallback of `_cross_key_value_modules`, which reads the modules' forward code.
_CROSS_ATTENTION = ("EncDecAttention", "encoder_attn", "crossattention", "cross_attn")
_CROSS_KEY_VALUE = ("k", "v", "k_proj", "v_proj", "key", "value", "c_attn")
# What a cross-attention's key / value projections are called on in transformers' attention classes (BART's and
# T5's `self.k_proj(current_states)`, BERT's and GPT-2's `self.key(encoder_hidden_states)`), and the keywords by
# which a layer hands the encoder's states down to its cross-attention (`key_value_states=encoder_hidden_states`)
_ENCODER_STATES = ("current_states", "key_value_states", "encoder_hidden_states")


@functools.lru_cache(maxsize=512)
def _forward_calls(cls: type) -> tuple[tuple[str, bool], ...] | None:
    """The `self.<child>(...)` calls in `cls.forward` (a ModuleList item `self.layer[1]` as "layer.1"), each with
    whether it hands the encoder's states down (an argument named, or a keyword called, `key_value_states` /
    `encoder_hidden_states`); None where its source cannot be read."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls.forward)))
    except (OSError, TypeError, SyntaxError, AttributeError):
        return None
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        target = node.func
        index = ""
        if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant):
            index, target = f".{target.slice.value}", target.value
        if not (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"):
            continue
        hands = any(isinstance(arg, ast.Name) and arg.id in _ENCODER_STATES[1:] for arg in node.args) or any(
            keyword.arg in _ENCODER_STATES[1:] and not (isinstance(keyword.value, ast.Constant)
                                                        and keyword.value.value is None)
            for keyword in node.keywords)
        found.append((f"{target.attr}{index}", hands))
    return tuple(found)


def repeated_call_bytes(planned: PlannedModel, device_map: Mapping[str, int | str],
                        tensor_sizes: Mapping[str, int]) -> dict[str, int]:
    """{module: bytes} of offloaded weights whose module runs more than once a step, beyond the one load per step
    the per-token figure counts: accelerate's hook loads a module's weights at each call, and a forward that calls a
    child twice (ProphetNet's n-gram self-attention's out_proj and relative_pos_embeddings), or in a loop (HRM's
    L_module, `H_cycles x L_cycles` times; ALBERT's shared layer group, once per layer) loads them at each call.
    Read from the code of each module's enclosing classes, inherited forwards included (`calls_per_forward`); the
    calls multiply down the tree, and add up where a forward calls a module both itself and through its parent
    (`_calls_per_step`). Modules run once per input (an encoder-decoder's encoder) are left out; {} where
    the map names no GPU.
    """
    if not planned.is_transformers or not any(isinstance(where, int) for where in device_map.values()):
        return {}
    once_per_input = _once_per_input_test(planned)
    modules = dict(planned.model.named_modules())
    param_names, _, _ = _tensor_names(planned)
    walked: dict[str, dict[str, int]] = {}
    runs: dict[str, int] = {}
    found: dict[str, int] = {}
    for name in param_names:
        if name not in tensor_sizes or device_map.get(_owner(name, device_map) or "") not in ("cpu", "disk"):
            continue
        if once_per_input is not None and once_per_input(name):
            continue
        module = name.rpartition(".")[0]
        if module not in runs:
            runs[module] = _calls_per_step(modules, module.split(".") if module else [], walked)
        times = runs[module]
        if times > 1:
            found[module] = found.get(module, 0) + tensor_sizes[name] * (times - 1)
    return found


def _calls_per_step(modules: Mapping[str, torch.nn.Module], parts: list[str],
                    walked: dict[str, dict[str, int]]) -> int:
    """The times the module named `parts` runs in one call of the model, read from the forwards of the transformers
    classes above it (`calls_per_forward`, cached in `walked`).

    Each name a forward calls on the way down is a route, its count times the runs of the named module's own forward
    down to this one, and the routes add up: Sam3Model's forward calls detr_decoder.box_head itself and
    detr_decoder, whose forward calls box_head once per decoder layer, so box_head runs 1 + layers times (the one
    longest name was taken: once). A forward naming nothing on the way down is taken to run the next module down
    once (a call in a branch, or a forward not read), unless its class's code never names it
    (`attributes_read`): PPDocLayoutV2's reading order calls embeddings.norm itself, its embeddings' forward never
    does. A module the forward reaches past (`self.vision_model.encoder(...)`, no call of vision_model) is no
    route. Where the routes count fewer runs than the longest name at each forward does, that count is kept, as
    before.

    Example: a forward running `self.block.inner(x)` and `self.block(x)`, block's forward calling `self.inner(x)`
    twice: parts ["block", "inner"] -> 1 + 1 x 2 = 3.
    """
    from weightdoctor.forward_calls import attributes_read, calls_per_forward

    def calls_at(depth: int) -> dict[str, int]:
        """{the names on the way down the forward of module parts[:depth] calls: their counts}, by their end."""
        prefix = ".".join(parts[:depth])
        parent = modules.get(prefix)
        if parent is None or not type(parent).__module__.startswith("transformers."):
            return {}
        if prefix not in walked:
            walked[prefix] = calls_per_forward(parent)
        return walked[prefix]

    def may_call(depth: int) -> bool:
        """Whether the code of module parts[:depth]'s class names a module on the way down, in a branch or not."""
        read_anywhere = attributes_read(type(modules[".".join(parts[:depth])]))
        return read_anywhere is None or any(".".join(parts[depth:end]) in read_anywhere
                                             for end in range(depth + 1, len(parts) + 1))

    def named(depth: int) -> dict[int, int]:
        counts = calls_at(depth)
        return {end: max(counts[".".join(parts[depth:end])], 1) for end in range(depth + 1, len(parts) + 1)
                if ".".join(parts[depth:end]) in counts}

    @functools.cache
    def sure(depth: int) -> int:
        """The runs per call of module parts[:depth] by the routes its forward names (0: none sure)."""
        if depth == len(parts):
            return 1
        routes = named(depth)
        if routes:
            return sum(count * sure(end) for end, count in routes.items())
        if calls_at(depth) and not may_call(depth):
            return 0  # read, and its class's code names nothing on the way down: it never calls the module
        return sure(depth + 1)  # a call in a branch, or a forward not read: once a call, as the longest route says

    @functools.cache
    def longest(depth: int) -> int:
        if depth == len(parts):
            return 1
        routes = named(depth)
        if not routes:
            return longest(depth + 1)
        end = max(routes)
        return routes[end] * longest(end)

    return max(sure(0), longest(0))


@functools.lru_cache(maxsize=512)
def _projects_encoder_states(cls: type) -> frozenset[str]:
    """The children `cls.forward` calls on the encoder's states (`self.k_proj(current_states)`): its key / value
    projections, where it is a cross-attention."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls.forward)))
    except (OSError, TypeError, SyntaxError, AttributeError):
        return frozenset()
    return frozenset(
        node.func.attr for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name) and node.func.value.id == "self"
        and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in _ENCODER_STATES)


def _cross_key_value_modules(model: torch.nn.Module, encoder_prefix: str) -> set[str] | None:
    """The names of the decoder's modules that project the encoder's states into cross-attention keys and values,
    read from the modules' forward code, whatever they are called (Pix2Struct's encoder_decoder_attention.attention
    .key, ProphetNet's cross_attn.key_proj): a child an attention's forward calls on the encoder's states
    (`_projects_encoder_states`), in an attention that the calls down to it from the model hand the encoder's states
    to, where they are read: a caller that hands them to one child and not this one (a decoder layer's
    self-attention, of the same class) makes it no cross-attention. None
    where no forward could be read (the module names are used then)."""
    import torch

    modules = dict(model.named_modules())
    calls: dict[str, tuple[tuple[str, bool], ...] | None] = {}
    read_any = False
    found: set[str] = set()
    for name, module in modules.items():
        if not name or name == encoder_prefix or name.startswith(f"{encoder_prefix}."):
            continue
        projections = _projects_encoder_states(type(module))
        if not projections:
            continue
        read_any = True
        handed = False
        for depth in range(name.count(".") + 1):
            parts = name.split(".")
            parent = ".".join(parts[:depth])
            below = parts[depth:]
            if parent not in calls:
                calls[parent] = _forward_calls(type(modules[parent])) if parent in modules else None
            said = [hands for child, hands in calls[parent] or ()
                    if child == below[0] or (len(below) > 1 and child == f"{below[0]}.{below[1]}")]
            if said and not any(said) and any(hands for _, hands in calls[parent] or ()):
                break  # called without the encoder's states its caller hands another child: a self-attention
            handed = handed or any(said)
        else:
            if handed:
                found.update(f"{name}.{child}" for child in projections
                             if isinstance(getattr(module, child, None), torch.nn.Module))
    return found if read_any else None


def offloaded_buffer_bytes(planned: PlannedModel, device_map: Mapping[str, int | str],
                           tensor_sizes: Mapping[str, int]) -> int:
    """The bytes of the buffers of modules `device_map` offloads ("cpu", "disk") that accelerate keeps on the GPU;
    0 where the map names no GPU (accelerate's main device is then the CPU: nothing moves).

    dispatch_model hooks each offloaded module with AlignDevicesHook(offload=True, offload_buffers=False) as
    from_pretrained calls it: the hook's init moves the module's buffers (persistent or not) to the execution
    device, the main GPU, and its pre_forward loads only the parameters from the CPU / disk.
    """
    if not any(isinstance(where, int) for where in device_map.values()):
        return 0
    _, buffers, _ = _tensor_names(planned)
    return sum(tensor_sizes[name] for name in buffers if name in tensor_sizes
               and device_map.get(_owner(name, device_map) or "") in ("cpu", "disk"))


def _once_per_input_test(planned: PlannedModel) -> Callable[[str], bool] | None:
    """For a generating encoder-decoder, the test of whether a parameter's module runs once per input in generate()
    (its encoder's, and its decoder's cross-attention key / value projections, whose outputs the cache keeps), not
    once per token; None for any other model."""
    config = planned.config or {}
    model = planned.model
    if not planned.is_transformers or not config.get("is_encoder_decoder"):
        return None
    can_generate = getattr(model, "can_generate", None)
    get_encoder = getattr(model, "get_encoder", None)
    if not callable(can_generate) or not can_generate() or not callable(get_encoder):
        return None
    try:
        encoder = get_encoder()
    except Exception:  # noqa: BLE001 - a class whose get_encoder needs what the meta model lacks: no split said
        return None
    prefix = next((name for name, module in model.named_modules() if module is encoder and name), None)
    if prefix is None:
        return None
    # generate() keeps the cross-attention keys and values only where it caches (generation_config.use_cache, from
    # the config: Pix2Struct's text_config says False, and its decoder projects them again at every token)
    caches = getattr(getattr(model, "generation_config", None), "use_cache", None) is not False
    cross = _cross_key_value_modules(model, prefix) if caches else set()

    def once_per_input(name: str) -> bool:
        if name.startswith(f"{prefix}."):
            return True
        if cross is not None:
            return name.rpartition(".")[0] in cross
        parts = name.split(".")
        # the projection in the cross-attention module itself, or in its attention core (BERT's `self`)
        return len(parts) >= 3 and parts[-2] in _CROSS_KEY_VALUE and (parts[-3] in _CROSS_ATTENTION or (
            len(parts) >= 4 and parts[-3] == "self" and parts[-4] in _CROSS_ATTENTION))

    return once_per_input


def offload_onloaded_bytes(planned: PlannedModel, device_map: Mapping[str, int | str],
                           tensor_sizes: Mapping[str, int]) -> int:
    """The most offloaded weights accelerate's hooks hold on the main GPU at once: while an offloaded module runs,
    its hook has copied its own parameters there, beside those of the offloaded modules around it whose hooks are
    still running (a module with parameters of its own and children); 0 where the map offloads nothing or names no
    GPU.

    Example: a map offloading lm_head (a 64 x 64 float32 Linear) holds its 16,384 bytes on the GPU for the length
    of its forward, as accelerate's planner keeps room for the largest layer on the main device.
    """
    if not any(isinstance(where, int) for where in device_map.values()):
        return 0
    param_names, _, _ = _tensor_names(planned)
    # a tied tensor is counted once in tensor_sizes, under its first name; each module holding it loads it
    size_of = dict(tensor_sizes)
    for group in tied_groups(planned):
        counted = next((name for name in group if name in tensor_sizes), None)
        if counted is not None:
            size_of.update(dict.fromkeys(group, tensor_sizes[counted]))
    # an offloaded-to-CPU twin of a tensor on the main GPU is not copied: its hook uses that copy (`tied_streaming`)
    mains = main_gpus(device_map)
    reused = {name for group in tied_groups(planned) if len(mains) == 1
              and mains[0] in {device_map.get(_owner(member, device_map) or "") for member in group}
              for name in group if device_map.get(_owner(name, device_map) or "") == "cpu"}
    own: dict[str, int] = {}
    for name in set(param_names) | {name for group in tied_groups(planned) for name in group}:
        if name in reused:
            continue
        if name in size_of and device_map.get(_owner(name, device_map) or "") in ("cpu", "disk"):
            module = name.rpartition(".")[0]
            own[module] = own.get(module, 0) + size_of[name]
    return max((load + sum(own[outer] for outer in own if outer != module
                           and (not outer or module.startswith(f"{outer}.")))
                for module, load in own.items()), default=0)


def kept_buffers_over_budget_warning(device_map: Mapping[str, int | str], per_device: Mapping[int | str, int],
                                     capacities: Mapping[int | str, int], kept_buffers: int,
                                     binary: bool = False, reserve: int = 0, onloaded: int = 0,
                                     tied_copies: Mapping[int, tuple[int, str, str]] | None = None) -> str | None:
    """The warning for a map whose main GPU, with what accelerate adds there, holds more than its budget (less
    --reserve), else None.

    transformers' planner (and the map) counts the offloaded modules' buffers with their modules on the CPU / disk;
    dispatch_model (offload_buffers=False) materializes them on its main device, the first GPU
    (`offloaded_buffer_bytes`). And each offloaded module's hook copies its weights there while it runs
    (`offload_onloaded_bytes`: `onloaded`, the most at once), the room accelerate's planner keeps free on its main
    device for the largest layer. And a tied tensor's twin placed on it, where the map counts the tensor on another
    device (`tied_gpu_copies`: `tied_copies`), is a copy accelerate makes there when it dispatches: on any GPU, the
    main one or another (GPT-2's lm_head on cuda:1 with wte on cuda:0), which only that copy is added to. The map is
    left as it is: a plan that fits by less than those is said, not changed.

    Example:
        >>> kept_buffers_over_budget_warning({"a": 0, "b": "cpu"}, {0: 990, "cpu": 50}, {0: 1000, "cpu": 10**6}, 40)
        ... # doctest: +ELLIPSIS
        'cuda:0 holds 990 B in the map, and accelerate adds the 40 B of buffers of the offloaded modules there ...'
    """
    tied_copies = tied_copies or {}
    if not kept_buffers and not onloaded and not tied_copies:
        return None
    from weightdoctor.units import format_bytes

    mains = main_gpus(device_map)
    for gpu in mains + sorted(gpu for gpu in tied_copies if gpu not in mains):
        capacity = capacities.get(gpu)
        held = per_device.get(gpu, 0)
        if capacity is None or held > capacity:
            continue  # unknown room, or over already (an error of its own)
        room = capacity - reserve
        copied, twin, counted_on = tied_copies.get(gpu, (0, "", ""))
        # the buffers and the hooks' loads go to the main GPU only; a tied copy to whichever GPU its twin is on
        buffers_here, onloaded_here = (kept_buffers, onloaded) if gpu in mains else (0, 0)
        if held + buffers_here + onloaded_here + copied <= room:
            continue
        total = held + buffers_here + onloaded_here + copied
        said_total, budget = format_bytes(total, binary), format_bytes(room, binary)
        if said_total == budget:  # a few bytes over: in bytes, not "33.54 KB, over its 33.54 KB budget"
            said_total, budget = f"{total:,} bytes", f"{room:,}-byte"
        added = []
        if buffers_here:
            added.append(f"the {format_bytes(buffers_here, binary)} of buffers of the offloaded modules there "
                         "(dispatch_model, offload_buffers=False, keeps them on its main GPU, though the map counts "
                         "them on the CPU)")
        if onloaded_here:
            added.append(f"up to {format_bytes(onloaded_here, binary)} of offloaded weights its hooks copy there while "
                         "their module runs")
        if copied:
            added.append(f"a {format_bytes(copied, binary)} copy of tied weights ({twin}, loaded on {counted_on}, "
                         "where the map counts them) for the modules placed there")
        less = f" (--gpu {format_bytes(capacity, binary)} less --reserve {format_bytes(reserve, binary)})" \
            if reserve else ""
        return (f"{device_name(gpu)} holds {format_bytes(held, binary)} in the map, and accelerate adds "
                f"{' and '.join(added)}: {said_total}, over its {budget} budget{less}; "
                "leave that GPU a little more room (a smaller --gpu for the plan, or --reserve)")
    return None


def per_input_offloaded_bytes(planned: PlannedModel, device_map: Mapping[str, int | str],
                              tensor_sizes: Mapping[str, int]) -> dict[str, int]:
    """The offloaded bytes of a generating encoder-decoder that are streamed once per input, not per generated
    token, by device ("cpu", "disk"); {} for any other model.

    accelerate's hooks copy an offloaded module's weights to the GPU each time the module runs. generate() runs the
    encoder once per input and the decoder once per token, and the decoder's cross-attention key and value
    projections only on the first step (their outputs over the encoder's states are cached): those weights are no
    per-token cost. A tensor tied to one used per token (T5's shared embeddings, which the decoder and lm_head use)
    is counted per token.
    """
    once_per_input = _once_per_input_test(planned)
    if once_per_input is None:
        return {}
    per_token = {name for group in tied_groups(planned) if not all(once_per_input(member) for member in group)
                 for name in group}
    # buffers are kept on the GPU, not streamed (`offloaded_buffer_bytes`)
    _, buffers, _ = _tensor_names(planned)
    kept = set(buffers)
    found: dict[str, int] = {}
    for name, size in tensor_sizes.items():
        if not once_per_input(name) or name in per_token or name in kept:
            continue
        device = device_map.get(_owner(name, device_map) or "")
        if device in ("cpu", "disk"):
            found[str(device)] = found.get(str(device), 0) + size
    return found


def _tied_home(planned: PlannedModel, group: list[str], tensor_sizes: Mapping[str, int]) -> str | None:
    """The member of a tied group whose device from_pretrained loads the tensor on: the source its tie_weights ties
    the others to (`all_tied_weights_keys`' values), else the name the map counts it under; None if neither."""
    tied = getattr(planned.model, "all_tied_weights_keys", None)
    if isinstance(tied, dict):
        source = next((tied[name] for name in group if name in tied and tied[name] in group), None)
        if source is not None:
            return str(source)
    return next((name for name in group if name in tensor_sizes), None)


def tied_gpu_copies(planned: PlannedModel, device_map: Mapping[str, int | str],
                    tensor_sizes: Mapping[str, int]) -> dict[int, tuple[int, str, str]]:
    """{GPU: (bytes, the tied names, the device they are loaded on)} of the tied tensors accelerate copies onto a GPU
    at dispatch, beyond what the map counts there: a twin placed on a GPU other than the one its tensor is loaded on.

    from_pretrained loads a tied tensor where its source sits (tie_weights points the others at it); dispatch_model's
    hook of a module placed on another GPU then copies it there for good (`tied_params_map` keeps one copy per
    device). A tensor loaded on disk is left out: from_pretrained cannot place its twin then.

    Example: GPT-2's wte in CPU RAM and lm_head on cuda:0 hold the 64 x 64 float32 table twice, once on each.
    """
    found: dict[int, tuple[int, str, str]] = {}
    for group in tied_groups(planned):
        home = _tied_home(planned, group, tensor_sizes)
        counted = next((name for name in group if name in tensor_sizes), None)
        if home is None or counted is None:
            continue
        where = {name: device_map.get(_owner(name, device_map) or "") for name in group}
        if where[home] == "disk":
            continue
        for gpu in {device for device in where.values() if isinstance(device, int) and device != where[home]}:
            size, names, loaded = found.get(gpu, (0, "", device_name(where[home])))
            named = " = ".join(sorted(group))
            found[gpu] = (size + tensor_sizes[counted], f"{names}; {named}" if names else named, loaded)
    return found


@dataclass(frozen=True)
class TiedStreaming:
    """How accelerate's hooks stream the tied tensors of offloaded modules, against the one copy the map counts
    (`tied_streaming`)."""

    reloaded_per_token: int = 0  # loads beyond the map's copy, for each generated token
    reloaded_per_input: int = 0  # the same, once per input (an encoder-decoder's encoder / cross-attention k, v)
    on_gpu_per_token: int = 0  # the map's copy on the CPU, never streamed: a twin placed on the main GPU is used
    on_gpu_per_input: int = 0
    from_gpu_per_token: int = 0  # of reloaded_per_token, copied from a twin loaded on another GPU, not CPU RAM


def tied_streaming(planned: PlannedModel, device_map: Mapping[str, int | str],
                   tensor_sizes: Mapping[str, int]) -> TiedStreaming:
    """The bytes of tied tensors that accelerate's hooks load beyond the one copy the map counts, where the modules
    holding them are offloaded, and the map's copies they never load.

    dispatch_model hooks each offloaded module that holds parameters of its own, and each hook loads its module's
    parameters from the offload on every call and frees them after it: a tensor tied between two offloaded modules
    (GPT-2's wte and lm_head, BERT's word embeddings and cls.predictions.decoder) is loaded by both, each time it
    runs. The map counts the tensor once, where its first name sits. Module objects registered under two names
    (T5's shared and encoder.embed_tokens) are one hook.

    A load is skipped where the tensor is already on the execution device: dispatch_model's `tied_params_map`
    (keyed by the data pointer of the tensor in CPU RAM, the one the weights map of "cpu" entries serves) holds the
    copy of a twin placed on the main GPU for good, and the copy an enclosing module's hook loaded for the length of
    its call (BERT's cls.predictions.bias around its decoder's tied bias). Weights offloaded to "disk" are read
    anew at each load, at another address: they are loaded every time.
    """
    if not any(isinstance(where, int) for where in device_map.values()):
        return TiedStreaming()  # no GPU: the CPU runs the model where it lies, nothing is streamed
    once_per_input = _once_per_input_test(planned)
    model = planned.model
    mains = main_gpus(device_map)
    main = mains[0] if len(mains) == 1 else None  # the main GPU from run to run: no twin is sure to be on it
    token = input_ = on_gpu_token = on_gpu_input = from_gpu = 0
    for group in tied_groups(planned):
        counted = next((name for name in group if name in tensor_sizes), None)
        if counted is None:
            continue
        size = tensor_sizes[counted]
        where = {name: device_map.get(_owner(name, device_map) or "") for name in group}
        # loaded on a GPU (not the main one): the offload of its "cpu" twins serves that GPU's tensor
        home = _tied_home(planned, group, tensor_sizes)
        home_gpu = home is not None and isinstance(where[home], int)
        on_main = main is not None and main in where.values()
        # the modules of the members offloaded to the CPU: a member inside one of them is loaded within its call
        in_ram = [name.rpartition(".")[0] for name in group if where[name] == "cpu"]
        token_loads: dict[int, str] = {}
        input_loads: dict[int, str] = {}
        for name in group:
            if where[name] not in ("cpu", "disk"):
                continue
            path = name.rpartition(".")[0]
            if where[name] == "cpu" and (on_main or any(
                    outer != path and (not outer or path.startswith(f"{outer}.")) for outer in in_ram)):
                continue  # the copy already on the execution device is used (`tied_params_map`)
            try:
                module = model.get_submodule(path)
            except AttributeError:
                continue
            loads = input_loads if once_per_input is not None and once_per_input(name) else token_loads
            loads.setdefault(id(module), name)
        input_loads = {key: name for key, name in input_loads.items() if key not in token_loads}
        # what the map already counts: the first name's copy, per token where any member runs per token
        # (`per_input_offloaded_bytes`)
        already = where[counted] in ("cpu", "disk")
        group_per_token = once_per_input is None or not all(once_per_input(member) for member in group)
        token_extra = size * len(token_loads) - (size if already and group_per_token else 0)
        input_extra = size * len(input_loads) - (size if already and not group_per_token else 0)
        token += max(token_extra, 0)
        input_ += max(input_extra, 0)
        on_gpu_token += max(-token_extra, 0)
        on_gpu_input += max(-input_extra, 0)
        if home_gpu:
            from_gpu += size * sum(1 for name in token_loads.values() if where[name] == "cpu")
    return TiedStreaming(token, input_, on_gpu_token, on_gpu_input, min(from_gpu, token))


def seq_len_beyond_context_warning(config: dict[str, Any] | None, seq_len: int | None,
                                   length_source: str | None) -> str | None:
    """A `--seq-len` longer than the context the config says the model takes (Llama's max_position_embeddings): the
    cache is sized as asked, but the model past that length is another matter; None within it, or where no length is
    written (a class's default is no statement of the model's).

    Example:
        >>> seq_len_beyond_context_warning({"max_position_embeddings": 4096}, 8192, None)  # doctest: +ELLIPSIS
        '--seq-len 8,192 is beyond the 4,096 positions the config says the model takes (max_position_embeddings)...'
    """
    if not config or seq_len is None or length_source is not None:
        return None
    for source in (config, config.get("text_config"), config.get("decoder")):
        if not isinstance(source, dict):
            continue
        key = next((k for k in _CONTEXT_KEYS if isinstance(source.get(k), int) and not isinstance(source.get(k), bool)
                    and source[k] > 0), None)
        if key is None:
            continue
        length = source[key]
        if seq_len <= length:
            return None
        scaled = " (its rope_scaling is set: check the length it extends to)" if source.get("rope_scaling") else ""
        return (f"--seq-len {seq_len:,} is beyond the {length:,} positions the config says the model takes ({key}):"
                " the KV cache is sized for it as asked, but a model with learned position embeddings (GPT-2, BERT, "
                f"OPT) fails past them and a rotary one (Llama) degrades{scaled}")
    return None


def _built_float_dtype(model: torch.nn.Module) -> str | None:
    """The --dtype spelling of the first floating parameter's dtype of `model` (fp32, fp16, bf16, fp64), else None."""
    spelled = {"float64": "fp64", "float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
    for parameter in model.parameters():
        name = str(parameter.dtype).removeprefix("torch.")
        if name in spelled:
            return spelled[name]
    return None


def torchao_fqn_map_raises(planned: PlannedModel, device_map: Mapping[str, int | str]) -> str | None:
    """The warning for a torchao FqnToConfig model whose map places alone a module holding buffers of its own
    (`model.rotary_emb`'s inv_freq), else None.

    transformers 5.25's planner (`infer_auto_device_map`) counts the buffers of each module it places whole with
    `compute_module_total_buffer_size(module, hf_quantizer)`, which asks the quantizer of each buffer by its name in
    that module (`inv_freq`); the torchao quantizer's FqnToConfig branch splits that name at its last dot
    (`param_name.rsplit(".", 1)`), and one without a dot raises ValueError ("not enough values to unpack"): its
    from_pretrained(device_map="auto") fails on any map that splits the model so (measured with its own quantizer in
    tests/test_plan_quantized4.py). A map of one entry, or a device_map passed by hand, is not made by that planner.
    Said only where the installed transformers' quantizer still splits names so (its source read).
    """
    if torchao_fqn_patterns(planned.config) is None or len(device_map) < 2:
        return None
    alone = []
    for name in device_map:
        try:
            module = planned.model.get_submodule(name)
        except AttributeError:  # a parameter placed on its own
            continue
        if next(module.named_buffers(recurse=False), None) is not None:
            alone.append(name)
    if not alone:
        return None
    import inspect

    from transformers.quantizers.quantizer_torchao import TorchAoHfQuantizer

    from weightdoctor.quantized import transformers_label

    try:  # said only of a transformers whose quantizer still splits every name so
        if 'module_fqn, _ = param_name.rsplit(".", 1)' not in inspect.getsource(
                TorchAoHfQuantizer.param_needs_quantization):
            return None
    except (OSError, TypeError):  # no source to read: nothing said
        return None
    return ("from_pretrained(device_map=\"auto\") raises on this model in " + transformers_label()
            + " (ValueError: not enough values to unpack): placing " + ", ".join(alone[:2])
            + (", ..." if len(alone) > 2 else "")
            + " alone, its planner asks the torchao quantizer about a buffer by a name without a dot, which its "
            "FqnToConfig branch cannot split; pass this map as device_map (weightdoctor plan-devices --json gives "
            "it) or fit the model on one device")


def quantized_rest_warning(
    planned: PlannedModel, request: PlanRequest, no_split: list[str], tensor_sizes: Mapping[str, int], verdict: str,
) -> str | None:
    """The warning for a `--dtype int8 / int4` plan of an unquantized transformers checkpoint whose unquantized rest
    (embeddings, norms, lm_head, biases) is wider than 16 bits (a float32 checkpoint's), else None.

    bitsandbytes quantizes the Linear weights only, and transformers 5.25 builds the rest at
    from_pretrained(dtype="auto")'s dtype (`quantized_rest_dtype`), not the float16 older releases forced: the
    plan holds it so, which users who remember the old rule do not expect. Where the plan does not fit on the GPUs
    and the same quantization with the rest at float16 (from_pretrained given dtype=torch.float16 too) does, as
    the same planner places it, it says so.
    """
    from weightdoctor.quantized import quantization_of, transformers_label
    from weightdoctor.units import format_bytes

    if planned.dtype not in ("int8", "int4") or not planned.is_transformers:
        return None
    rest = planned.quantized_rest
    import torch

    itemsize = getattr(torch, rest).itemsize
    if itemsize <= 2:
        return None
    if quantization_of(planned.config) is not None:
        return _prequantized_rest_hint(planned, request, no_split, tensor_sizes, verdict)
    sizer = _sizer_for(planned, planned.dtype)
    quantized = sizer._quantized if sizer is not None else set()
    params, _, _ = _tensor_names(planned)
    rest_params = [name for name in params if name not in quantized and name in tensor_sizes
                   and planned.model.get_parameter(name).is_floating_point()]
    rest_bytes = sum(tensor_sizes[name] for name in rest_params)
    half_bytes = sum(planned.model.get_parameter(name).numel() * 2 for name in rest_params)
    # Matrices held by no Linear or Embedding (an MoE's fused experts, transformers 5's MixtralExperts; a Conv1d):
    # bitsandbytes leaves them whole too, and in a MoE they are most of the rest, which "embeddings, norms,
    # lm_head, biases" did not name (a float32 Mixtral's 1.30 MB rest was all experts but 0.1 MB).
    outside = [name for name in rest_params if planned.model.get_parameter(name).dim() >= 2 and not isinstance(
        planned.model.get_submodule(name.rpartition(".")[0]), (torch.nn.Linear, torch.nn.Embedding))]
    outside_bytes = sum(tensor_sizes[name] for name in outside)
    what = "embeddings, norms, lm_head, biases"
    if outside:
        largest = max(outside, key=lambda name: tensor_sizes[name])
        what += (f", and weights in no Linear layer ({format_bytes(outside_bytes, request.binary_units)}, such as "
                 f"{largest})")
    load_in = "load_in_4bit=True" if planned.dtype == "int4" else "load_in_8bit=True"
    unsaid = planned._cache.get("rest-unsaid", False)
    loads = f"{transformers_label()}'s from_pretrained(..., quantization_config=BitsAndBytesConfig({load_in}))"
    said = (f"bitsandbytes {planned.dtype} quantizes the Linear weights only: the unquantized rest ({what}: "
            f"{format_bytes(rest_bytes, request.binary_units)}) is planned at {rest}"
            + (f" (torch's default: nothing read says the checkpoint's dtype, which {loads} keeps it at" if unsaid
               else f", as {loads} holds it (dtype=\"auto\": this checkpoint's dtype")
            + "; older releases forced float16)")
    if verdict == "fits-on-gpus" or not request.gpus or request.manual_map is not None:
        return said
    half = _float16_rest_sizer(planned, planned.dtype)
    if _replan_verdict(planned, request, no_split, planned.dtype, list(request.gpus), sizer=half) != "fits-on-gpus":
        return said
    return (f"{said}; passing dtype=torch.float16 (or torch.bfloat16) to from_pretrained too holds it in "
            f"{format_bytes(half_bytes, request.binary_units)}, and the model then fits on the GPUs")


def _float16_rest_sizer(planned: PlannedModel, dtype: str) -> _SizeOverride:
    """The sizer of `planned` quantized to `dtype` (int8 / int4) with its unquantized rest at float16, as
    from_pretrained given dtype=torch.float16 builds it: the checkpoint's own quantization (stored layers, headroom,
    torchao's weights) where `dtype` is the one its config names, else bitsandbytes' as `--dtype` plans it."""
    key = ("sizer", "float16-rest", dtype)
    # Kept in the cache, as every sizer is: the planner's sizes are cached by the sizer's id, which a freed one
    # could hand to the next.
    if key not in planned._cache:
        own = dtype == planned.dtype and quantized_dtype(planned.config) is not None
        torchao = own and torchao_element_size(planned.config) is not None
        # A Linear layer the quantizer left out (GPTQ's lm_head) is sized at its stored bytes, which are the rest's
        # dtype's only as the checkpoint's dtype builds it: at float16 from_pretrained builds it at 2 bytes a weight.
        plain = planned._cache.get("plain-stored-layers", set())
        stored = {name: planned.model.get_parameter(name).numel() * 2 if name.removesuffix(".weight") in plain
                  else size for name, size in planned.stored_bytes.items()}
        planned._cache[key] = _SizeOverride(
            planned.model, quantized_size=DTYPES[dtype][1], float_size=2,
            stored_bytes=stored if own else None,
            headroom=planned.quantizer_headroom if own else True, skip_modules=bnb_skip_modules(planned.config),
            quantized_weights=torchao_quantized_weights(planned.model, planned.config) if torchao else None)
    return planned._cache[key]


def _quantizer_keeps_float16(config: Mapping[str, Any] | None) -> bool:
    """Whether transformers' quantizer for `config`'s quantization_config builds the model at float16 when
    from_pretrained is given dtype=torch.float16 (its `update_dtype` returns what it is given: bitsandbytes, GPTQ,
    AWQ do); False where it is not found or turns float16 into another dtype."""
    import torch

    settings = (config or {}).get("quantization_config")
    if not isinstance(settings, Mapping):
        return False
    try:
        from transformers.quantizers.auto import AUTO_QUANTIZER_MAPPING, AutoQuantizationConfig

        with _quiet_libraries():
            method = AutoQuantizationConfig.from_dict(dict(settings)).quant_method
            method = getattr(method, "value", method)
            if method == "bitsandbytes":  # one quant_method, two quantizers
                method += "_4bit" if settings.get("load_in_4bit") else "_8bit"
            quantizer_class = AUTO_QUANTIZER_MAPPING[method]
            # Its own update_dtype, without its __init__ (GPTQ's wants optimum installed just to be made): none
            # reads what __init__ sets (they look at the dtype and the machine only).
            quantizer = object.__new__(quantizer_class)
            return quantizer.update_dtype(torch.float16) == torch.float16
    except Exception:  # noqa: BLE001 - a quantizer transformers cannot make here gives no hint, not a failure
        return False


def _prequantized_rest_hint(
    planned: PlannedModel, request: PlanRequest, no_split: list[str], tensor_sizes: Mapping[str, int], verdict: str,
) -> str | None:
    """The hint for a checkpoint its config quantizes (bitsandbytes, GPTQ, ...) and saved at float32, planned with
    its unquantized rest at float32 (from_pretrained(dtype="auto")'s dtype), that does not fit on the GPUs but fits
    with the rest at float16, as the same planner places it: passing dtype=torch.float16 to from_pretrained does
    that. None where it fits already, or does not fit so either, or its quantizer does not take float16."""
    if verdict == "fits-on-gpus" or not request.gpus or request.manual_map is not None:
        return None
    if _replan_verdict(planned, request, no_split, planned.dtype, list(request.gpus),
                       sizer=_float16_rest_sizer(planned, planned.dtype)) != "fits-on-gpus":
        return None
    if not _quantizer_keeps_float16(planned.config):
        return None
    from weightdoctor.units import format_bytes

    quantized = _sizer_for(planned, planned.dtype)
    # the layers the quantizer left out (GPTQ's lm_head, stored plain) are part of the rest, at its dtype
    plain = {f"{name}.weight" for name in planned._cache.get("plain-stored-layers", set())}
    held = ((quantized._quantized | set(quantized.stored_bytes)) - plain) if quantized is not None else set()
    params, _, _ = _tensor_names(planned)
    rest_params = [name for name in params if name not in held and name in tensor_sizes
                   and planned.model.get_parameter(name).is_floating_point()]
    rest_bytes = sum(tensor_sizes[name] for name in rest_params)
    half_bytes = sum(planned.model.get_parameter(name).numel() * 2 for name in rest_params)
    return (f"the unquantized rest of this {planned.label or planned.dtype} checkpoint (embeddings, norms, lm_head, "
            f"biases: {format_bytes(rest_bytes, request.binary_units)}) is planned at {planned.quantized_rest}, as "
            "from_pretrained(dtype=\"auto\") builds it from this checkpoint's dtype; passing dtype=torch.float16 to "
            f"from_pretrained holds it in {format_bytes(half_bytes, request.binary_units)}, and the model then fits "
            "on the GPUs")


def bnb_offload_warning(
    planned: PlannedModel, device_map: dict[str, int | str], tensor_sizes: dict[str, int], binary: bool = False,
) -> str | None:
    """The warning for a bitsandbytes int8/int4 plan that offloads to the CPU or disk, else None.

    bitsandbytes' quantizers (`validate_environment`) refuse such a map in `from_pretrained` unless
    `llm_int8_enable_fp32_cpu_offload=True`, and with it the offloaded modules stay unquantized: the map is the
    same, but `from_pretrained` fails on it as planned, and the offload takes more memory. Despite the flag's
    name they are not up-cast: transformers 5.25 loads every parameter it does not quantize at the model's dtype
    (the rest's, `quantized_rest_dtype`), so a bf16 checkpoint's stay bf16; counted at 4 bytes, its offload was
    said to be twice what it is.
    """
    if planned.dtype not in ("int8", "int4") or not planned.is_transformers:
        return None
    config_quantized = quantized_dtype(planned.config)
    if config_quantized is not None and "bitsandbytes" not in config_quantized[1].lower():
        return None  # another quantizer (GPTQ, AWQ, ...): bitsandbytes' rule is not its rule
    values = set(device_map.values())
    if values == {"cpu"} or not values & {"cpu", "disk"}:
        return None  # bitsandbytes' own condition: all on the CPU is allowed, any GPU + CPU/disk is not
    from weightdoctor.units import format_bytes

    offloaded = [n for n in tensor_sizes if device_map.get(_owner(n, device_map) or "") in ("cpu", "disk")]
    planned_bytes = sum(tensor_sizes[n] for n in offloaded)
    # The meta model is built at the rest's dtype (its Linear weights too, sized as quantized by the sizer only):
    # each tensor's own element size is what it takes unquantized.
    unquantized_bytes = 0
    tensors = dict(planned.model.named_parameters()) | dict(planned.model.named_buffers())
    for name in offloaded:
        tensor = tensors.get(name)
        if tensor is not None:
            unquantized_bytes += tensor.numel() * tensor.element_size()
    rest = DTYPE_ALIASES.get(planned.quantized_rest, planned.quantized_rest)
    load_in = "load_in_4bit=True" if planned.dtype == "int4" else "load_in_8bit=True"
    return (
        f"bitsandbytes {planned.dtype} with modules on the CPU or disk: from_pretrained raises \"ValueError: Some "
        "modules are dispatched on the CPU or the disk\" for this map unless you pass "
        f"quantization_config=BitsAndBytesConfig({load_in}, llm_int8_enable_fp32_cpu_offload=True); the offloaded "
        f"modules then stay in {rest}, not quantized: about {format_bytes(unquantized_bytes, binary)} on CPU/disk "
        f"instead of the {format_bytes(planned_bytes, binary)} planned here"
    )


def split_layer_warning(planned: PlannedModel, device_map: Mapping[str, int | str], no_split: list[str],
                        manual: bool = False) -> str | None:
    """The warning for a map that runs the parts of one layer (a numbered block of an `nn.ModuleList`:
    `model.encoder.layers.0`) on two GPUs, else None.

    A layer's forward adds its parts' outputs (the residual) and multiplies attention's query by its key; accelerate's
    hooks move each hooked module's inputs to its device but not the layer's own tensors, so parts on two GPUs raise a
    device mismatch at run time. `from_pretrained(device_map="auto")` splits such a layer where its class lists no
    `_no_split_modules` (MarianMTModel, Pegasus, DistilBERT, DeBERTa-v2, BioGPT: transformers 5 plans them with none,
    where transformers 4 refused device_map="auto"). A part on "cpu" or "disk" runs on accelerate's main GPU.

    Example:
        >>> split_layer_warning(planned_marian, {"model.encoder.layers.0.self_attn": 0,  # doctest: +SKIP
        ...                                      "model.encoder.layers.0.fc1": 1, ...}, [])
        'MarianMTModel lists no _no_split_modules, so the planner split model.encoder.layers.0 ...'
    """
    if not planned.is_transformers:
        return None
    mains = main_gpus(device_map)
    if not mains:
        return None  # no GPU in the map: every part runs on the CPU
    import torch

    def runs_on(device: int | str) -> int:
        return device if isinstance(device, int) else mains[0]

    split: dict[str, list[int]] = {}
    classes: list[str] = []
    outer: list[str] = []  # the outermost numbered blocks found so far: the layers; blocks inside them are parts
    for list_name, module in planned.model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or any(list_name.startswith(f"{o}.") for o in outer):
            continue
        for index, block in module.named_children():
            name = f"{list_name}.{index}" if list_name else index
            if next(block.children(), None) is None or (type(block).__name__ in no_split and not manual):
                # A leaf (nn.Linear in a list) is never split; nor is a no-split class, but by a hand-written map.
                continue
            outer.append(name)
            if type(block).__name__ not in classes:
                classes.append(type(block).__name__)
            devices = sorted({runs_on(d) for key, d in device_map.items() if key.startswith(f"{name}.")})
            if len(devices) > 1:
                split[name] = devices
    if not split:
        return None
    first, devices = next(iter(split.items()))
    more = f" (and {counted(len(split) - 1, 'more layer')})" if len(split) > 1 else ""
    cause = ("the map splits a layer" if manual else f"{planned.model_class} lists no _no_split_modules" if not no_split
             else f"the no-split classes ({', '.join(no_split)}) do not name {', '.join(classes)}")
    keep = ("keep each layer in one entry of the map" if manual else
            f"{' '.join(f'--no-split {c}' for c in classes)} keeps each layer whole: pass the map it writes (-o) "
            "to from_pretrained(device_map=...)")
    return (f"{cause}, so {first} runs its parts on {' and '.join(device_name(d) for d in devices)}{more}"
            + ("" if manual else ", as from_pretrained(device_map=...) splits it")
            + ": a layer adds and multiplies its parts' outputs (its residual, attention's query and key), which "
            f"raises a device mismatch on those GPUs at run time; {keep}")


def keep_in_fp32_warning(
    planned: PlannedModel, device_map: dict[str, int | str], tensor_sizes: dict[str, int],
    unplaced: dict[str, int | str], binary: bool = False,
) -> str | None:
    """The warning for a model whose `_keep_in_fp32_modules` (T5's `wo`; `_keep_in_fp32_modules_strict` at bf16
    too) stay float32 at fp16, else None.

    `from_pretrained` computes its map on the model built at the requested dtype, and casts the tensors its
    `dtype_plan` names to float32 only as it loads them: the map is the one planned here, but those tensors take
    twice the bytes counted for their devices.

    So do they in a `--dtype int8 / int4` plan whose unquantized rest is 16-bit (a float16 checkpoint's):
    bitsandbytes leaves `_keep_in_fp32_modules` unquantized (`get_modules_to_not_convert`), and from_pretrained
    builds the dtype plan from the model's dtype (the rest's) as it does unquantized; a bf16 rest upcasts only the
    `_strict` ones (T5's `wo` stays bf16).
    """
    if not planned.is_transformers:
        return None
    import torch

    from weightdoctor.quantized import quantization_of

    quantized: set[str] = set()
    if planned.dtype in ("fp16", "bf16"):
        half = getattr(torch, DTYPES[planned.dtype][0])
        at = planned.dtype
    elif planned.dtype in ("int8", "int4") and quantization_of(planned.config) is None \
            and planned.quantized_rest in ("float16", "bfloat16"):
        half = getattr(torch, planned.quantized_rest)
        at = f"{planned.dtype} (bitsandbytes leaves them unquantized, the rest at {planned.quantized_rest})"
        sizer = _sizer_for(planned, planned.dtype)
        quantized = sizer._quantized if sizer is not None else set()
    else:
        return None
    dtype_plan_of = getattr(planned.model, "_get_dtype_plan", None)
    if dtype_plan_of is None:
        return None
    plan = dtype_plan_of(half)
    if not plan:
        return None
    from transformers.core_model_loading import build_glob_alternation

    from weightdoctor.units import format_bytes

    pattern = build_glob_alternation(list(plan))[0]  # matched as the loader matches each tensor's name (search)
    params, _, _ = _tensor_names(planned)
    extra: dict[int | str, int] = {}
    matched = 0
    for name in params:
        if name in tensor_sizes and name not in quantized and pattern.search(name) \
                and planned.model.get_parameter(name).dtype == half:
            owner = _owner(name, device_map)
            device = device_map[owner] if owner is not None else unplaced.get(name, "cpu")
            extra[device] = extra.get(device, 0) + tensor_sizes[name]  # fp16/bf16 -> fp32: as much again
            matched += 1
    if not matched:
        return None
    where = ", ".join(f"{device_name(d)} +{format_bytes(n, binary)}" for d, n in extra.items())
    return (f"{planned.model_class} keeps {counted(matched, 'tensor')} of {', '.join(sorted(plan))} in float32 at "
            f"{at} (_keep_in_fp32_modules): from_pretrained computes this map at {planned.dtype} but "
            f"loads them in float32, {format_bytes(sum(extra.values()), binary)} more than planned ({where})")


def _gpus(gpus: list[int]) -> str:
    """The GPUs a suggestion keeps, counted: "GPU" for one (`--gpu 24GiB`), "2 GPUs" for more."""
    return "GPU" if len(gpus) == 1 else f"{len(gpus)} GPUs"


def suggest_changes(planned: PlannedModel, request: PlanRequest, no_split: list[str],
                    source: str = "") -> list[Suggestion]:
    """The smallest changes that fit on the GPUs: the first lower dtype, and the fewest extra GPUs of the largest size.

    Each candidate is re-planned with the same planner on the same meta model, its sizes counted at the
    candidate dtype. Where no dtype rung fits and the int8 / int4 rungs hold the unquantized rest wider than 16 bits
    (a float32 checkpoint's, as from_pretrained(dtype="auto") builds it), the first of them that fits with the rest
    at float16 is offered as the from_pretrained call that loads it so (`source`: the path or repo id it names).
    """
    from weightdoctor.quantized import quantization_of
    from weightdoctor.units import format_bytes

    suggestions: list[Suggestion] = []
    if request.strategy in ("balanced_low_0", "sequential") and request.gpus:
        # The least change of all: the same GPUs and dtype, placed as from_pretrained's default places them.
        auto = dataclasses.replace(request, strategy="auto")
        if _replan_verdict(planned, auto, no_split, planned.dtype, list(request.gpus)) == "fits-on-gpus":
            suggestions.append(Suggestion(
                "strategy", f"--strategy auto fits on the {_gpus(request.gpus)} at {planned.dtype}, where "
                f"{request.strategy} offloads", planned.dtype, list(request.gpus), "fits-on-gpus"))
    current = DTYPE_LADDER.index(planned.dtype) if planned.dtype in DTYPE_LADDER else len(DTYPE_LADDER)
    current_size = _element_size(planned.dtype)
    # A pre-quantized checkpoint is not quantized again by bitsandbytes: from_pretrained raises on a
    # BitsAndBytesConfig beside any other quantization_config (FP8 dequantized or kept, MXFP4, GPTQ...). Its float
    # rungs stay (an FP8 checkpoint planned at fp32 loads at bf16 as well).
    prequantized = quantization_of(planned.config) is not None
    ladder = [d for d in DTYPE_LADDER[current + 1:] if not (prequantized and DTYPES[d][1] is not None)]
    if planned.dtype != "fp8" and planned.is_transformers and _is_fine_grained_fp8(planned.config):
        # Planned dequantized (bf16): kept in FP8, as transformers keeps it on GPUs of compute capability >= 8.9.
        try:
            # The rest at the config's dtype, as _planned_fp8 keeps it (no checkpoint here to ask beyond it).
            kept = _fp8_model(planned.config or {}, planned.model_class, DTYPES[_fp8_rest_dtype(planned.config)][0])
        except UsageError:  # a quantization_config its quantizer refuses: no FP8 plan to offer (--dtype fp8 says why)
            kept = None
        fp8 = PlannedModel(kept, "config", planned.model_class, "fp8", planned.config) if kept is not None else None
        if fp8 is not None and _replan_verdict(fp8, request, no_split, "fp8", request.gpus) == "fits-on-gpus":
            suggestions.append(Suggestion(
                "dtype", f"--dtype fp8 fits on the {_gpus(request.gpus)} if "
                         f"{plural(len(request.gpus), 'it has', 'they have')} compute capability 8.9 or "
                "above (transformers then keeps the FP8 weights)", "fp8", list(request.gpus), "fits-on-gpus"))
    for dtype in ladder:
        if _element_size(dtype) >= current_size:
            continue
        if DTYPES[dtype][1] is not None and not planned.is_transformers:
            continue
        if _total_bytes(planned, dtype) > _gpu_room(request.gpus, request.reserve, dtype):
            continue  # cannot fit whatever the placement: no need to ask the planner
        verdict = _replan_verdict(planned, request, no_split, dtype, request.gpus)
        if verdict == "fits-on-gpus":
            # int8 with its rest at float16 loses less than int4 with a float32 rest (8-bit Linear weights, and a
            # float16 rest that is as float32 for inference): where it fits too, it is offered first.
            half_int8 = _float16_rest_rung(planned, request, no_split, ["int8"], source) if dtype == "int4" else None
            if half_int8 is not None:
                suggestions.append(half_int8)
            suggestions.append(Suggestion("dtype", f"--dtype {dtype} fits on the {_gpus(request.gpus)}",
                                          dtype, list(request.gpus), verdict))
            break
    else:
        half_rest = _float16_rest_rung(planned, request, no_split, ladder, source)
        if half_rest is not None:
            suggestions.append(half_rest)
    size = max(request.gpus)
    total = _total_bytes(planned, planned.dtype)
    room = _gpu_room([size], request.reserve, planned.dtype)
    start = max(1, math.ceil(total / max(1, room)) - len(request.gpus))
    for extra in range(start, MAX_EXTRA_GPUS + 1):
        gpus = list(request.gpus) + [size] * extra
        verdict = _replan_verdict(planned, request, no_split, planned.dtype, gpus)
        if verdict == "fits-on-gpus":
            suggestions.append(Suggestion(
                "gpus", f"{extra} more {format_bytes(size, request.binary_units)} {plural(extra, 'GPU')} "
                        f"({len(gpus)} in all) at "
                f"{planned.dtype}",
                planned.dtype, gpus, verdict,
            ))
            break
    if len(set(request.gpus)) == 1 and (bigger := _gpu_size_that_fits(planned, request, no_split)) is not None:
        suggestions.append(Suggestion(
            "gpu-size", f"--gpu {bigger[1]}" + (f" for each of the {len(request.gpus)} GPUs" if len(request.gpus) > 1
                                                 else "") + f" (instead of {format_bytes(size, request.binary_units)}) "
            f"at {planned.dtype}",
            planned.dtype, [bigger[0]] * len(request.gpus), "fits-on-gpus"))
    return suggestions


def _float16_rest_rung(planned: PlannedModel, request: PlanRequest, no_split: list[str], ladder: list[str],
                       source: str) -> Suggestion | None:
    """The int8 / int4 rung with the unquantized rest at float16, for a plan whose int8 / int4 rungs (`ladder`)
    hold a float32 rest and fit no GPU so; None where the rest is 16-bit already or it does not fit so either.

    `--dtype int8 / int4` plans the rest at from_pretrained(dtype="auto")'s dtype (a float32 checkpoint's float32),
    and no flag plans it at float16: what fits is said as the from_pretrained call that loads it so (the same
    budgets as max_memory, the same strategy as device_map), which the user can paste.
    """
    import torch

    from weightdoctor.quantized import quantization_of

    if not planned.is_transformers or quantization_of(planned.config) is not None \
            or getattr(torch, planned.quantized_rest).itemsize <= 2:
        return None
    import transformers

    if not isinstance(getattr(transformers, planned.model_class, None), type):
        return None  # remote code or a class transformers does not export: no call to paste
    for dtype in ("int8", "int4"):
        if dtype not in ladder:
            continue
        sizer = _float16_rest_sizer(planned, dtype)
        if _replan_verdict(planned, request, no_split, dtype, list(request.gpus), sizer=sizer) != "fits-on-gpus":
            continue
        placed = None
        if request.no_split:
            # from_pretrained takes no --no-split: the map planned with it is given as device_map itself
            max_memory = build_max_memory(list(request.gpus), request.cpu, request.reserve)
            if request.unset_max_memory:
                for key, amount in unset_max_memory_headroom(max_memory, request.strategy).items():
                    max_memory[key] -= amount
            placed = place(planned, max_memory, request.strategy, no_split, sizer).device_map
        call = from_pretrained_call(planned.model_class, source, dtype, request, placed)
        return Suggestion(
            "dtype-float16-rest", f"--dtype {dtype} with its unquantized rest at float16 (from_pretrained "
            f"dtype=torch.float16; --dtype {dtype} plans it at {planned.quantized_rest}, this checkpoint's dtype) "
            f"fits on the {_gpus(request.gpus)}; no plan-devices flag plans it, load it so: {call}",
            dtype, list(request.gpus), "fits-on-gpus")
    return None


def from_pretrained_call(model_class: str, source: str, dtype: str, request: PlanRequest,
                         device_map: Mapping[str, int | str] | None = None) -> str:
    """One line of Python that loads `source` quantized to `dtype` (int8 / int4) by bitsandbytes with its rest at
    float16, placed as `request` plans it (max_memory: its budgets; none with --local, which plans as
    from_pretrained without it), at `request.revision` (an `hf://org/name@rev` source: its repo id and revision);
    `device_map`: the map itself, given instead of the strategy and budgets (planned with --no-split, which
    from_pretrained has no argument for).

    Example:
        >>> from_pretrained_call("LlamaForCausalLM", "m", "int4", PlanRequest(gpus=[1000], cpu=None))
        ... # doctest: +ELLIPSIS
        'import torch; ... LlamaForCausalLM.from_pretrained("m", ..., dtype=torch.float16, ..., max_memory={0: 1000})'
    """
    import json

    from weightdoctor.checkpoint.hub import hub_location, normalize_revision
    from weightdoctor.paths import exists as path_exists

    folder = Path(source)
    # from_pretrained takes a folder or a repo id: a config.json or weight file given as SOURCE names its folder
    where = str(folder.parent) if source and folder.is_file() else source
    revision = normalize_revision(request.revision)
    located = hub_location(source) if source and not path_exists(expand_user(source)) else None
    if located is not None and located.repo_type == "model" and not located.path_in_repo:
        # `hf://org/name@v1`: from_pretrained takes the repo id, and the revision as its argument
        where, revision = located.repo_id, located.revision or revision
    load_in = "load_in_4bit=True" if dtype == "int4" else "load_in_8bit=True"
    if device_map is not None:
        placement = "device_map={" + ", ".join(f"{json.dumps(key)}: {json.dumps(value)}"
                                               for key, value in device_map.items()) + "}"
    else:
        budgets = "" if request.unset_max_memory else ", max_memory={" + ", ".join(
            f"{json.dumps(key)}: {value}" for key, value in
            build_max_memory(list(request.gpus), request.cpu, request.reserve).items()) + "}"
        placement = f"device_map={json.dumps(request.strategy)}{budgets}"
    at = f", revision={json.dumps(revision)}" if revision else ""
    return (f"import torch; from transformers import BitsAndBytesConfig, {model_class}; model = {model_class}"
            f".from_pretrained({json.dumps(where)}{at}, quantization_config=BitsAndBytesConfig({load_in}), "
            f"dtype=torch.float16, {placement})")


def _gpu_size_that_fits(
    planned: PlannedModel, request: PlanRequest, no_split: list[str]
) -> tuple[int, str] | None:
    """The least whole GiB (GB where the sizes were typed in decimal units; MiB, KiB for a model of a few GiB or less)
    of `--gpu`, the same for each of the GPUs given (all of one size), with which the model plans on the GPUs alone,
    and its `--gpu` text.

    Users with a model just too big ask how much memory per GPU it needs: the planner's own answer differs from
    the total divided by the count (the largest layer kept free on the first GPU, the balanced caps, modules that
    do not split). None when GPUs of four times the model's size plus the reserve, each, do not hold it (the sizes
    tried are that once, twice and four times).
    """
    total = _total_bytes(planned, planned.dtype)
    count = len(request.gpus)
    # Whole GB for real models; for a share of a few GB or less (a small encoder, a test model) the largest unit of
    # which it holds four, where rounding up to a GB would suggest several times what it needs.
    share = total / count + request.reserve
    units = [(2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")] if request.binary_units else \
        [(10**9, "GB"), (10**6, "MB"), (10**3, "KB")]
    unit, name = next(((u, n) for u, n in units if share >= 4 * u), (1, ""))
    current = request.gpus[0]
    lowest = max(current // unit + 1, math.ceil((total / count + request.reserve) / unit))
    highest = max(lowest, math.ceil((total + request.reserve) / unit) + 1)

    def fits(units: int) -> bool:
        return _replan_verdict(planned, request, no_split, planned.dtype, [units * unit] * count) == "fits-on-gpus"

    for _ in range(3):  # bitsandbytes' 10% headroom, a reserve: the whole model a GPU may not be enough yet
        if fits(highest):
            break
        lowest, highest = highest + 1, highest * 2
    else:
        return None
    # Fitting grows with the size (every cap the planner sets grows with it): the least size that fits, by halves.
    while lowest < highest:
        middle = (lowest + highest) // 2
        if fits(middle):
            highest = middle
        else:
            lowest = middle + 1
    return highest * unit, f"{highest}{name}"


def _cpu_that_fits(
    planned: PlannedModel, request: PlanRequest, no_split: list[str], rest: int
) -> tuple[int, str] | None:
    """The least whole GiB (GB where the sizes were typed in decimal units) of `--cpu`, from `rest` up to 8 times it,
    with which the same GPUs plan as CPU offload, and its `--cpu` text; None when none does."""
    unit, name = (2**30, "GiB") if request.binary_units else (10**9, "GB")
    count = max(1, math.ceil(rest / unit))
    while count * unit <= 8 * max(rest, unit):
        cpu = count * unit
        if _replan_verdict(planned, dataclasses.replace(request, cpu=cpu), no_split, planned.dtype,
                           request.gpus) == "needs-cpu-offload":
            return cpu, f"{count}{name}"
        count *= 2
    return None


def _total_bytes(planned: PlannedModel, dtype: str) -> int:
    return sum(_sizes(planned, dtype)[1].values())


def _gpu_room(gpus: list[int], reserve: int, dtype: str) -> float:
    """The most the GPUs can hold at `dtype` (bitsandbytes keeps 10 % back)."""
    room = sum(max(0, size - reserve) for size in gpus)
    return room * 0.9 if DTYPES[dtype][1] is not None else room


def _element_size(dtype: str) -> float:
    import torch

    quantized = DTYPES[dtype][1]
    return quantized if quantized is not None else getattr(torch, DTYPES[dtype][0]).itemsize


def _replan_verdict(
    planned: PlannedModel, request: PlanRequest, no_split: list[str], dtype: str, gpus: list[int],
    sizer: _SizeOverride | None = None,
) -> str:
    """The verdict of `planned` re-planned at `dtype` on `gpus` (the request's CPU, disk and strategy); `sizer`:
    counted so instead of as `dtype` counts it."""
    sizer = sizer if sizer is not None else _sizer_for(planned, dtype)
    max_memory = build_max_memory(gpus, request.cpu, request.reserve)
    if request.unset_max_memory:
        for key, amount in unset_max_memory_headroom(max_memory, request.strategy).items():
            max_memory[key] -= amount
    try:
        device_map = place(planned, max_memory, request.strategy, no_split, sizer).device_map
    except UsageError:
        # The library's planner fails on this candidate (transformers' own planner raised IndexError at a
        # quantized dtype on tiny budgets): it is no suggestion, and the plan asked for stands.
        return "planner-failed"
    params, buffers, _ = _tensor_names(planned)
    unplaced = unplaced_tensors(planned, device_map, params + buffers)
    return classify(device_map, bool(gpus), request.disk, extra_devices=set(unplaced.values()))


def open_plan_source(source: str, revision: str | None = None, key: str | None = None) -> Checkpoint:
    """Open a source for planning: any checkpoint, or just a config (file, folder, or repo id holding one).

    A repo id is resolved without downloading weights: a config is enough to plan.
    """
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.checkpoint.hub import hub_location, looks_like_repo_id, normalize_revision, resolve_repo_id
    from weightdoctor.checkpoint.reader import PICKLE_SUFFIXES
    from weightdoctor.paths import exists as path_exists

    revision = normalize_revision(revision)  # as open_checkpoint does: the config-only path below bypasses it
    path = expand_user(source)
    repo = source
    located = hub_location(source) if not path_exists(path) else None
    if located is not None and located.repo_type == "model" and not located.path_in_repo \
            and (located.revision is None or revision in (None, located.revision)):
        # `hf://org/name@v1`, a repo's page: the repo id it names, whose config is enough (not its weights).
        repo, revision = located.repo_id, located.revision or revision
    # A missing `model.safetensors` is a mistyped file, as the other commands read it: not a repo id to look up
    # (which named the Hub cache and the network instead of the path).
    # A link that leads nowhere (its target gone, or links that loop) is no repo id either: open_checkpoint says
    # so, where the Hub lookup said "not a local path" and suggested the link's own name.
    if not path_exists(path) and not path_exists(path, link=True) and looks_like_repo_id(repo) \
            and not repo.endswith((".json", ".safetensors", *PICKLE_SUFFIXES)):
        try:
            folder = resolve_repo_id(repo, revision, weights=False)
        except SourceNotFound as exc:
            if repo == source:
                raise
            from weightdoctor.checkpoint.reader import said_of_address

            raise said_of_address(exc, source) from exc
        try:
            if _split_gguf_folder(Path(folder)):
                checkpoint = _open_gguf_for_plan(str(folder), key)
            else:
                try:
                    checkpoint = open_checkpoint(folder, key=key, allow_config_only=True,
                                                 gguf_refused_by="plan-devices")
                except SourceNotFound as exc:
                    raise _planned_gguf_hint(exc, Path(folder)) from exc
        except WeightDoctorError as exc:  # an index's missing shard too: said of the repo id, not the cache path
            from weightdoctor.checkpoint.reader import named_by_repo

            raise named_by_repo(exc, folder, repo, revision) from exc
        # Opened by its snapshot's path: named by the repo id typed, as open_checkpoint names one it resolves.
        checkpoint.source, checkpoint.repo_id, checkpoint.revision = source, repo, revision
        return checkpoint
    # A folder of a repo (`org/pipe/unet`: a diffusers model, whose config transformers cannot build) is planned from
    # its config and safetensors headers, read remotely when not cached: its weights are not downloaded.
    from weightdoctor.errors import InvalidIndex

    if _is_gguf_file(path) or _is_gguf_file(_cached_repo_file(source, revision)) or _split_gguf_folder(path):
        # A GGUF of a repo of several (`org/name/model.Q4_K_M.gguf`) too: from_pretrained(repo, gguf_file=) loads it;
        # and a folder of one split GGUF's parts, read as that set (merged first for from_pretrained).
        return _open_gguf_for_plan(source, key)
    try:
        return open_checkpoint(source, revision=revision, key=key, allow_config_only=True, structure_only=True,
                               gguf_refused_by="plan-devices")
    except SourceNotFound as exc:
        hinted = _planned_gguf_hint(exc, path)
        if hinted is exc:
            raise
        raise hinted from exc
    except InvalidIndex as exc:
        # A download stopped between shards: the plan needs no weights, and the config beside the index gives it
        # (the refusal said only to fetch the rest, hours away for a 70B model).
        config = Path(exc.path).parent / "config.json" if exc.path else None
        # A shard of another save under a shard's name too: fetched again, as long; the config is what it is.
        if config is not None and ("does not exist" in exc.message or "is no shard of this index" in exc.message) \
                and config.is_file():
            from weightdoctor.paths import shell_word

            exc.message += (f"; plan-devices plans from the config alone meanwhile: give it "
                            f"{shell_word(str(config), argument=True)} in place of the folder")
        raise


def _cached_repo_file(source: str, revision: str | None) -> Path:
    """The cached file that `org/name/file` names in a Hub repo's snapshot, or an empty path for any other source."""
    from weightdoctor.checkpoint.hub import cached_snapshot, split_repo_subfolder

    try:
        inside = split_repo_subfolder(source) if not Path(source).exists() else None
        snapshot = cached_snapshot(inside[0], revision) if inside is not None else None
    except OSError:  # a name past 255 bytes (ENAMETOOLONG): open_checkpoint says what is wrong with the source
        return Path()
    return snapshot / inside[1] if snapshot is not None and inside is not None else Path()


def _split_gguf_folder(path: Path) -> bool:
    """Whether `path` is a folder of one split GGUF's parts and no other weights (`reader.one_split_gguf_set`)."""
    from weightdoctor.checkpoint.reader import one_split_gguf_set

    try:
        return path.is_dir() and one_split_gguf_set(path) is not None
    except OSError:
        return False  # open_checkpoint says what is wrong with it


def _planned_gguf_hint(exc: SourceNotFound, folder: Path) -> SourceNotFound:
    """A folder's refusal for holding GGUF files only (a repo of one per quantization), naming the plan-devices
    command that plans one of them where it named inspect's; `exc` itself for any other refusal."""
    from weightdoctor.checkpoint.reader import NO_WEIGHT_FILE, no_weights_message

    try:
        if not exc.message.startswith(NO_WEIGHT_FILE) or not folder.is_dir() \
                or exc.message != no_weights_message(folder):
            return exc
        return SourceNotFound(no_weights_message(folder, "plan-devices"), exc.path)
    except OSError:
        return exc


def _is_gguf_file(path: Path) -> bool:
    """Whether `path` is a file that opens with GGUF's magic (read as GGUF by the reader)."""
    from weightdoctor.checkpoint.gguf_format import looks_like_gguf

    try:
        if not path.is_file():  # checked before opening: a FIFO's open waits for a writer
            return False
        with open(path, "rb") as handle:
            return looks_like_gguf(handle.read(4))
    except OSError:
        return False  # open_checkpoint says what is wrong with it


def _gguf_file_loaded(checkpoint: Checkpoint) -> str:
    """The gguf_file= from_pretrained is given for a GGUF checkpoint: its file, or a split set's merged file."""
    from weightdoctor.checkpoint.gguf_split import loaded_name

    return loaded_name([f.path.name for f in checkpoint.files])


def _open_gguf_for_plan(source: str, key: str | None) -> Checkpoint:
    """A GGUF file planned as transformers loads it: `from_pretrained(folder, gguf_file=...)` builds the config its
    metadata gives and dequantizes every tensor into that model, at float32 unless `dtype=` says otherwise (the
    legacy GGUF loader: `GgufHfQuantizer.update_dtype` takes torch's default dtype). The checkpoint keeps its files
    and loses its tensors, so that the plan is the config's model, as for a config.json alone.

    Raises:
        UnsupportedFormat: an architecture whose config weightdoctor cannot build as transformers does (the
            refusal says why, and what reads the file).
    """
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.checkpoint.gguf_config import transformers_config
    from weightdoctor.checkpoint.gguf_format import refusal_for

    checkpoint = open_checkpoint(source, key=key, structure_only=True)
    from weightdoctor.checkpoint.gguf_format import combined

    header = combined(checkpoint.gguf_headers())
    assert header is not None  # a GGUF file was read
    built = transformers_config(header)
    gguf_file = checkpoint.files[0].path
    if built.config is None:
        checkpoint.close()
        raise refusal_for("plan-devices", gguf_file.name, str(gguf_file.parent), because=built.reason)
    from weightdoctor.checkpoint.gguf_format import UNREAD_TYPES_WORDS, is_unread_dtype

    unread = [kind for kind in header.ggml_types.values() if is_unread_dtype(kind)]
    if unread:
        # The plan is of every tensor dequantized into the model: from_pretrained(gguf_file=) fails on a Q8_1 / Q8_K
        # one instead, so no placement of it is a load that happens.
        from weightdoctor.wording import counted

        checkpoint.close()
        raise refusal_for("plan-devices", gguf_file.name, str(gguf_file.parent),
                          because=f"{counted(len(unread), 'tensor')} of it {'are' if len(unread) > 1 else 'is'} "
                                  f"{' / '.join(sorted(set(unread)))}, which that load cannot dequantize: "
                                  + UNREAD_TYPES_WORDS, loadable=False)
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = dict(built.config)
    causal = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.get("model_type", ""))
    if causal is not None and "architectures" not in config:
        # llama.cpp's models are language models, loaded with AutoModelForCausalLM: its class, as a config.json's
        # `architectures` names it (--model-class plans another).
        config["architectures"] = [causal]
    # What from_pretrained(dtype="auto") resolves for a GGUF: its config names none, so torch's default, float32.
    config.setdefault("dtype", "float32")
    checkpoint.config = config
    checkpoint.tensors = []
    loaded = _gguf_file_loaded(checkpoint)
    what = (f"{gguf_file.name}: a GGUF file, planned as from_pretrained(folder, gguf_file={loaded!r}) loads it"
            if loaded == gguf_file.name else
            f"{gguf_file.name} ...: the {len(checkpoint.files)} parts of a split GGUF, planned as "
            f"from_pretrained(folder, "
            f"gguf_file={loaded!r}) loads them once llama-gguf-split --merge has joined them (transformers reads one "
            "file)")
    checkpoint.warnings.append(
        f"{what}: "
        f"the {config.get('model_type')} config its metadata gives (transformers' GGUF_CONFIG_MAPPING), every "
        "tensor dequantized into that model, at float32 unless --dtype says otherwise (the dtype= you load it "
        "with); for a plan that needs the disk, give device_map=\"auto\" and offload_folder= (transformers' GGUF "
        "quantizer refuses a device_map dict naming disk); llama.cpp places it itself (--n-gpu-layers)")
    return checkpoint


def _image_model_add_on(checkpoint: Checkpoint) -> str | None:
    """The warning for a file that image-generation tools apply to a model they load apart (a kohya or diffusers
    LoRA, a ControlNet-LLLite, a textual-inversion embedding, an IP-Adapter), or None: its own few MB were planned,
    with "fits on the GPUs", as if they were what is loaded."""
    from weightdoctor.shard import ADD_ONS, single_file_kind

    kind = single_file_kind(checkpoint)
    if kind not in ADD_ONS:
        return None
    metadata = checkpoint.metadata or {}
    base = next((str(metadata[k]) for k in ("ss_base_model_version", "modelspec.architecture", "ss_sd_model_name")
                 if metadata.get(k)), None)
    return (f"this is {kind}: only its own weights are planned, not the Stable Diffusion / Flux model it is applied "
            "to" + (f" (its metadata names {base})" if base else "") + "; plan that model and add this file's size")


def _base_model_hint(base: str, device_flags: str = "...") -> str:
    """How to plan the base model a PEFT adapter_config.json names as `base_model_name_or_path`: the command, where
    weightdoctor can read what it names (a Hub repo id or address, a path that exists here), else what it is.

    The file is the adapter author's: "weightdoctor plan-devices /home/them/llama ..." or "... https://example.com/x"
    was offered as the next step, and refused when run. `device_flags`, the run's devices, end the command: with
    "..." for them it was refused pasted (an extra argument `...`), and without them (no devices given).

    Example:
        >>> _base_model_hint("meta-llama/Llama-2-7b-hf", "--gpu 24GB")
        ' (weightdoctor plan-devices meta-llama/Llama-2-7b-hf --gpu 24GB)'
        >>> _base_model_hint("/nonexistent/llama-7b")
        ' (its adapter_config.json names it as "/nonexistent/llama-7b", a path on the machine the adapter was ...)'
    """
    from weightdoctor.checkpoint.hub import _HUB_HOSTS, _hostname, looks_like_repo_id
    from weightdoctor.meta_model import shown_value

    hub_address = base.startswith("hf://") or ("://" in base and _hostname(base) in _HUB_HOSTS)
    if looks_like_repo_id(base) or hub_address or os.path.exists(os.path.expanduser(base)):
        return f" (weightdoctor plan-devices {_quoted(base)} {device_flags})"
    if "://" in base:
        return (f" (its adapter_config.json names it by an address, {shown_value(base)}, not a Hub repo id or a "
                "path; give the base model's repo id or folder)")
    if os.path.isabs(base) or base.startswith(("./", "../", "~")):
        return (f" (its adapter_config.json names it as {shown_value(base)}, a path on the machine the adapter was "
                "saved on, which does not exist here; give the base model's repo id or folder)")
    return (f" (its adapter_config.json names it as {shown_value(base)}, neither a Hub repo id nor a path here; give "
            "the base model's repo id or folder)")


def _quoted(word: str) -> str:
    """`word` as a shell reads it back whole: a base model saved as a local path with a space was two words."""
    from weightdoctor.paths import shell_word

    return shell_word(word, argument=True)
