"""What each tensor held at initialization: the model's own init rules, or PyTorch's defaults.

For a checkpoint with a transformers config, the model is built on the meta device
(`weightdoctor.meta_model.build_meta_model`) and its real `initialize_weights()` is run with every init
function of `torch.nn.init` and `transformers.initialization` replaced by a recorder: on the meta device
nothing is filled, and the last call made on each parameter is the rule the installed transformers
applies to it (parent modules run after their children, as in transformers). Parameters no rule touches
keep their module's own `reset_parameters()`, which is recorded the same way.

For a bare state dict, the module type is guessed from the name and shape, and PyTorch's defaults for
that type are used (`nn.Linear`/`nn.Conv*`: kaiming_uniform(a=√5); biases U(±1/√fan_in);
`nn.Embedding`: normal(0, 1); norms: ones and zeros). Only the norm constants are certain there.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from weightdoctor.errors import clip_words
from weightdoctor.init_classify import InitResult, describe

if TYPE_CHECKING:
    import torch

    from weightdoctor.checkpoint import TensorInfo

INIT_FUNCTIONS = (
    "uniform_", "normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_", "xavier_uniform_",
    "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "trunc_normal_", "orthogonal_", "sparse_",
)
# The half of a LoRA pair its trainer starts at zero: peft's lora_B (lora_embedding_A for embeddings), kohya-ss
# sd-scripts' lora_up (`lora_unet_..._to_q.lora_up.weight`), diffusers' old attention processors' `to_q_lora.up`.
LORA_ZERO_INIT = re.compile(r"(^|\.)(lora_B|lora_embedding_A|lora_up)(\.|$)|_lora\.up(\.|$)")
# Zero convolutions, which start at zero so that a control adds nothing before training: kohya's ControlNet-LLLite
# (`lllite_unet_<module>.up.0.weight`, its "zero conv"), lllyasviel's ControlNet (`zero_convs.N.0`,
# `middle_block_out.0`) and diffusers' ControlNetModel (`controlnet_down_blocks.N`, `controlnet_mid_block`). An
# untrained one was called "a layer that was never initialized or was zeroed".
ZERO_CONV_INIT = re.compile(r"^lllite_\w+\.up\.0\.weight$|(^|\.)(zero_convs\.\d+\.0|middle_block_out\.0|"
                            r"controlnet_down_blocks\.\d+|controlnet_mid_block)\.weight$")
# The other half, which peft (lora_A) and kohya-ss (lora_down) start as nn.Linear does, kaiming_uniform(a=√5); and
# LyCORIS' Tucker core `lora_mid`, an nn.Conv2d (r × r × kh × kw) started as one. A trained core, off that scale, was
# "still matches its initialization kaiming_uniform ... (found normal(0, 0.96))": the guessed init's scale was not
# held against it.
LORA_KAIMING_INIT = re.compile(r"(^|\.)(lora_A|lora_down|lora_mid)(\.|$)|_lora\.down(\.|$)")
# peft's lora_A / lora_B of Linear and Conv layers (not lora_embedding_*), which `init_lora_weights` sets.
PEFT_LORA_HALF = re.compile(r"(^|\.)lora_(?P<half>[AB])(\.|$)")
# peft's `init_lora_weights` schemes that set LoRA halves from data, not at random, and which halves: PiSSA (also
# "pissa_niter_N") and CorDA from the base weight's SVD, OLoRA from its QR, LoftQ from its quantization residual (both
# halves off zero), EVA's lora_A from the activations' SVD (lora_B stays at zero), and peft 0.22's ASTRA both from
# the output activations' covariance (lora_B its eigenvectors V, lora_A Vᵀ·W): an untrained ASTRA adapter's lora_A
# was "trained" (not kaiming_uniform). What they start at is the base model's, so the adapter alone cannot say
# whether they trained.
# LoRA-GA ("lora_ga") sets both from the SVD of the loss's gradient on the base weights, and MiCA ("mica") lora_B
# from the base weight's smallest singular vectors, which peft then freezes (lora_A starts at zero): an untrained
# MiCA adapter's lora_B was "trained" (expected at zero).
DATA_DERIVED_LORA_INIT = {"pissa": "AB", "olora": "AB", "corda": "AB", "loftq": "AB", "eva": "A", "astra": "AB",
                          "lora_ga": "AB", "mica": "B"}
# peft's schemes that draw LoRA halves at random in a way no per-tensor init describes, each with the structure that
# tells one still at its initialization from one that has trained (`structural_init` tests it): "orthogonal" draws
# lora_A (r × in) and lora_B (out × r) each of rank r/2, from two halves of one random orthogonal matrix so that
# B·A = 0 (any step fills the rank in), and NoRA ("nora") scales each column of a kaiming_uniform lora_A to unit L2
# norm (a step moves them off 1). Untouched, both were "trained": lora_B off its zero, lora_A off kaiming_uniform.
STRUCTURED_LORA_INIT = {"orthogonal": ("AB", "half_rank"), "nora": ("A", "unit_columns")}
# peft's lora_embedding_A / lora_embedding_B, which it draws from randn and (init_lora_weights not False) redraws.
PEFT_LORA_EMBEDDING_HALF = re.compile(r"(^|\.)lora_embedding_(?P<half>[AB])(\.|$)")
# AdaLoRA's SVD triplet (`<module>.lora_A`, `lora_E`, `lora_B`: peft's adalora/layer.py), drawn from randn and, unless
# init_lora_weights is False, redrawn as lora_A and lora_B normal(0, 0.02) and lora_E zero: its lora_B was
# "trained" (LoRA's lora_B starts at zero) in an adapter saved untouched.
ADALORA_PART = re.compile(r"(^|\.)lora_(?P<part>[ABE])(\.|$)")
# The factors of a LoHa (Hadamard product) or LoKr (Kronecker product) adapter, kohya/LyCORIS' `lora_unet_..._to_q.
# hada_w2_a` and peft's `base_model.model....hada_w2_b`: each trainer starts one factor at zero so the product, the
# adapter's update, is zero, but which one differs (LyCORIS: hada_w2_a, lokr_w2 or lokr_w2_b; peft: hada_w2_b, lokr_w1
# or lokr_w1_a, or lokr_w2). Any of them all zero means the update is zero: the adapter is where it began.
PRODUCT_ADAPTER_FACTOR = re.compile(r"(^|\.)(hada_w[12]_[ab]|hada_t[12]|lokr_w[12](_[ab])?|lokr_t2)(\.|$)")
# peft's IA3 vectors (`<module>.ia3_l`, one scale per feature), which it starts at ones: the identity.
IA3_VECTOR = re.compile(r"(^|\.)ia3_l(\.|$)")
# peft's OFT and BOFT rotation parameters (`oft_R.weight`, `boft_R`), which it starts at zero: the Cayley transform
# of a zero skew-symmetric matrix is the identity rotation, the base weight unchanged. An untrained one was "a layer
# that was never initialized or was zeroed; it passes nothing on".
ROTATION_ADAPTER = re.compile(r"(^|\.)(oft_R|oft_embedding_R|oft_r|boft_R)(\.|$)")
# LyCORIS' diag-OFT / BOFT blocks (`oft_blocks`; `oft_diag` in older LyCORIS) and kohya's OFT under flat names,
# which they start at zero too (the identity rotation).
LYCORIS_ROTATION = re.compile(r"^lora_(unet|te\d?|transformer)_[^.]+\.(oft_blocks|oft_diag)$")
# ... LyCORIS' `rescale` beside them (one value per output feature), which it starts at ones; and GLoRA's a2 and b2,
# which it starts at zero so that W·a1·a2 + b1·b2 adds nothing. Untrained, each was "a layer that was never
# initialized or was zeroed" or "a constant weight never breaks symmetry".
LYCORIS_RESCALE = re.compile(r"^lora_(unet|te\d?|transformer)_[^.]+\.rescale$")
GLORA_ZERO_FACTOR = re.compile(r"^lora_(unet|te\d?|transformer)_[^.]+\.(a2|b2)\.weight$")
# ... and their scales (`boft_s`, older peft's `oft_s`), which it starts at ones ("a constant weight never breaks
# symmetry").
ROTATION_ADAPTER_SCALE = re.compile(r"(^|\.)(oft_s|boft_s)(\.|$)")
# peft's HRA Householder vectors (`<module>.hra_u`, in × r): with an even r it starts each vector twice, so that each
# pair of reflections cancels (the identity); "duplicate columns: re-initialize randomly" undid that by design.
HRA_VECTORS = re.compile(r"(^|\.)hra_u(\.|$)")
# peft 0.22's TinyLoRA (tinylora/layer.py, model.py): tinylora_A and tinylora_B are the base weight's truncated SVD
# (√S·Vᵀ, U·√S) and tinylora_P a projection drawn from projection_seed, all three buffers peft never trains; the one
# trainable tensor is the vector saved once per group of modules (`base_model.tinylora_v.<group>`), which init_weights
# starts at zero (True), at U(±init_v_bound) ("uniform") or leaves as torch.empty left it (False). Untouched, an
# init_weights=False adapter's vector (whatever the memory held) was "trained", and a trained adapter read as
# "initialization": its SVD factors fit a normal, its vector of a few values too few to tell a distribution.
TINYLORA_BUFFER = re.compile(r"(^|\.)tinylora_(?P<part>[ABP])$")
TINYLORA_VECTOR = re.compile(r"^base_model\.tinylora_v\.[^.]+$")
# peft's Llama-Adapter (adaption prompt, adaption_prompt/layer.py): the prompt drawn with normal_() (normal(0, 1)) and
# the gate at zero, so the adapted attention adds nothing before training.
ADAPTION_PART = re.compile(r"(^|\.)adaption_(?P<part>prompt|gate)$")
# peft's trainable tokens (`<embedding>.trainable_tokens_delta`, also LoRA's trainable_token_indices under
# `token_adapter.`): a copy of the base embedding's rows of those tokens (init_weights True), torch.randn (False).
TRAINABLE_TOKENS_DELTA = re.compile(r"(^|\.)trainable_tokens_delta$")
# peft 0.22's AdaMSS (adamss/layer.py): the projection adamss_newB (r × in + 1), a buffer from the base weight's SVD
# that peft never trains; each subspace's adamss_A.<i> from a QR of the base weight's singular vectors; adamss_B.<i>
# at zero (init_weights "orthogonal", the default; untouched each was "the whole weight matrix is zero"), else
# torch.randn × 0.01.
ADAMSS_PART = re.compile(r"(^|\.)adamss_(?P<part>newB|A|B)(\.\d+)?$")
# The factor each of these peft methods starts at zero (unless init_weights is false) so that the adapter adds
# nothing before training (each tuner's layer.py): untouched, each was "a layer that was never initialized or was
# zeroed", where LoRA's lora_B is "a LoRA adapter still at its initialization".
PEFT_ZERO_STARTED = {peft_type: re.compile(rf"(^|\.)(?P<part>{parts})(\.weight)?$") for peft_type, parts in (
    ("LILY", "lily_B"), ("RANDLORA", "randlora_lambda"), ("HIRA", "hira_B|hira_embedding_A"), ("DELORA", "delora_B"),
    ("PEANUT", "peanut_B"), ("PACA", "paca_delta"), ("GRALORA", "gralora_B"))}
PEFT_ZERO_STARTED_NAMES = {"LILY": "Lily", "RANDLORA": "RandLora", "HIRA": "HiRA", "DELORA": "DeLoRA",
                           "PEANUT": "PEANuT", "PACA": "PaCA", "GRALORA": "GraLoRA"}
# peft's Polytropon (poly/layer.py, router.py): poly_lora_B (splits × skills × r × out) starts at zero as LoRA's
# lora_B (init_weights true; untouched, each was "the whole weight matrix is zero"), the router's module_logits at
# U(±1e-3).
POLY_PART = re.compile(r"(^|\.)(?P<part>poly_lora_B|poly_router\.module_logits)$")
# The prompt-learning methods' saved tensors: the virtual tokens' embeddings (`prompt_embeddings`, what the prompt
# encoder gives for them, which peft computes at save) and multitask prompt tuning's per-task factors.
PROMPT_LEARNING_TYPES = frozenset({"PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "MULTITASK_PROMPT_TUNING", "CPT"})
NORM_NAME = re.compile(r"(norm|(^|[._])ln(_?\w*)?($|\.)|layer_?norm|rms)", re.IGNORECASE)
EMBED_NAME = re.compile(r"(embed|wte|wpe|shared\.weight|word_embeddings|position_embeddings|tok_embeddings)",
                        re.IGNORECASE)


@dataclass(frozen=True)
class ExpectedInit:
    """The initialization a tensor is expected to have had.

    Attributes:
        label: a word of the classifier's vocabulary (`normal`, `ones`, `kaiming_uniform`, ...), or
            `other` for functions outside it (`eye_`, `dirac_`, `sparse_`, `copy_`).
        params: `std`, `bound`, `mean`, `gain`, `value`, ... as they apply.
        source: where the rule comes from, e.g. "BertForSequenceClassification._init_weights: normal_(std=0.02)".
        confident: True when taken from the model's own code (or a norm constant); False for a guess.
        zero_rows: rows set to zero after the init (an embedding's padding_idx).
    """

    label: str
    params: dict[str, Any]
    source: str
    confident: bool
    zero_rows: tuple[int, ...] = ()

    @property
    def scale(self) -> float | None:
        return self.params.get("std", self.params.get("bound"))

    def describe(self) -> str:
        text = describe(self.label, self.params) if self.label != "other" else self.params.get("function", "other")
        if self.zero_rows:
            text += f", row {', '.join(map(str, self.zero_rows))} zero"
        return text


@dataclass
class ExpectedInits:
    """Expected initialization per tensor name, and how it was found."""

    by_name: dict[str, ExpectedInit] = field(default_factory=dict)
    method: str = "pytorch-defaults"  # "transformers" or "pytorch-defaults"
    model_class: str | None = None
    warning: str | None = None


def _gain(nonlinearity: str, a: float | None) -> float:
    import torch

    return float(torch.nn.init.calculate_gain(nonlinearity, a))


def from_call(function: str, args: dict[str, Any], shape: tuple[int, ...], source: str,
              confident: bool = True) -> ExpectedInit:
    """Turn a recorded `torch.nn.init`-style call on a tensor of `shape` into an `ExpectedInit`.

    Example:
        >>> e = from_call("kaiming_uniform_", {"a": 5 ** 0.5, "mode": "fan_in", "nonlinearity": "leaky_relu"},
        ...               (64, 256), "nn.Linear")
        >>> round(e.params["bound"], 6)
        0.0625
    """
    from weightdoctor.init_classify import fans

    where = f"{source}: {function}"
    if function in ("zeros_", "ones_") or function == "constant_":
        value = 0.0 if function == "zeros_" else 1.0 if function == "ones_" else float(args["val"])
        label = "zeros" if value == 0 else "ones" if value == 1 else "constant"
        return ExpectedInit(label, {"value": value}, where, confident)
    if function == "normal_":
        return ExpectedInit("normal", {"mean": float(args["mean"]), "std": float(args["std"])}, where, confident)
    if function == "trunc_normal_":
        mean, std, a, b = (float(args[k]) for k in ("mean", "std", "a", "b"))
        if std > 0 and (b - mean) / std > 5 and (mean - a) / std > 5:
            # torch's bounds are absolute: trunc_normal_(std=0.02) with a=-2, b=2 is not truncated at all.
            return ExpectedInit("normal", {"mean": mean, "std": std}, where + f" (bounds {a:g}, {b:g} cut nothing)",
                                confident)
        return ExpectedInit("truncated_normal", {"mean": mean, "std": std, "a": a, "b": b}, where, confident)
    if function == "uniform_":
        low, high = float(args["a"]), float(args["b"])
        params = {"bound": high} if math.isclose(low, -high) else {"low": low, "high": high}
        return ExpectedInit("uniform", params, where, confident)
    fan = fans(shape)
    if function in ("xavier_uniform_", "xavier_normal_") and fan is not None:
        gain = float(args.get("gain", 1.0))
        total = fan[0] + fan[1]
        if function == "xavier_uniform_":
            return ExpectedInit("xavier_uniform", {"gain": gain, "bound": gain * math.sqrt(6.0 / total)},
                                where, confident)
        return ExpectedInit("xavier_normal", {"gain": gain, "std": gain * math.sqrt(2.0 / total)}, where, confident)
    if function in ("kaiming_uniform_", "kaiming_normal_") and fan is not None:
        a, mode, nonlinearity = float(args.get("a", 0)), args.get("mode", "fan_in"), args.get("nonlinearity",
                                                                                              "leaky_relu")
        gain = _gain(nonlinearity, a)
        value = fan[0] if mode == "fan_in" else fan[1]
        params = {"a": a, "mode": mode, "nonlinearity": nonlinearity, "gain": gain}
        if function == "kaiming_uniform_":
            return ExpectedInit("kaiming_uniform", {**params, "bound": gain * math.sqrt(3.0 / value)}, where,
                                confident)
        return ExpectedInit("kaiming_normal", {**params, "std": gain / math.sqrt(value)}, where, confident)
    if function == "orthogonal_":
        return ExpectedInit("orthogonal", {"gain": float(args.get("gain", 1.0))}, where, confident)
    return ExpectedInit("other", {"function": function}, where, confident)


@contextmanager
def _recording(calls: dict[int, tuple[str, dict[str, Any], Any, str]], source: list[str]) -> Iterator[None]:
    """Replace the init functions of torch and transformers by recorders of (function, arguments)."""
    import torch

    originals: list[tuple[Any, str, Any]] = []
    targets: list[Any] = [torch.nn.init]
    try:
        import transformers.initialization as hf_init

        table = getattr(hf_init, "TORCH_INIT_FUNCTIONS", None)
    except ImportError:  # older transformers call torch.nn.init directly
        table = None

    def recorder(name: str, original: Any) -> Any:
        signature = inspect.signature(original)

        def record(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            bound = signature.bind(tensor, *args, **kwargs)
            bound.apply_defaults()
            values = {k: v for k, v in bound.arguments.items() if k not in ("tensor", "generator")}
            calls.pop(id(tensor), None)  # keep `calls` in the order of each tensor's last call
            calls[id(tensor)] = (name, values, tensor, source[0])
            return tensor

        return record

    try:
        for module in targets:
            for name in INIT_FUNCTIONS:
                if hasattr(module, name):
                    originals.append((module, name, getattr(module, name)))
                    setattr(module, name, recorder(name, getattr(module, name)))
        if table is not None:
            for name in list(table):
                originals.append((table, name, table[name]))
                table[name] = recorder(name, table[name])
            # transformers' own copy_ (not in its table of torch's functions) sets tables a model computes: Whisper's
            # encoder overwrites its embedding's normal_ with sinusoids. Unrecorded, the normal_ stood as the rule, and
            # the fixed table read as "trained", its half-precision repeats as "symmetry never broken".
            if callable(getattr(hf_init, "copy_", None)):
                originals.append((hf_init, "copy_", hf_init.copy_))
                hf_init.copy_ = recorder("copy_", hf_init.copy_)
        yield
    finally:
        for owner, name, original in reversed(originals):
            if isinstance(owner, dict):
                owner[name] = original
            else:
                setattr(owner, name, original)


@contextmanager
def _untied(model: torch.nn.Module) -> Iterator[dict[str, str]]:
    """Give each tied parameter (`all_tied_weights_keys`: target -> source) its own meta tensor for a while.

    transformers initializes a new model before it ties it (`init_weights`: `initialize_weights()`, then
    `tie_weights()`, which points each target at its source): the init calls on a target's own tensor are
    thrown away, and the tied tensor keeps the values its source was given. Recording on the tied model would
    keep the last call on the shared tensor instead, whichever of the two modules it was made for (ModernBERT's
    decoder rule for its token embeddings). Yields the target -> source names that were untied.
    """
    import torch

    tied = dict(getattr(model, "all_tied_weights_keys", None) or {})
    swapped: list[tuple[torch.nn.Module, str, Any]] = []
    untied: dict[str, str] = {}
    try:
        for target, source in tied.items():
            try:
                source_param = model.get_parameter(source)
                parent_name, _, leaf = target.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                current = getattr(parent, leaf)
            except (AttributeError, KeyError):  # a pattern or a name this build does not have
                continue
            if current is not source_param:
                continue  # not tied in this build (tie_word_embeddings false): its own rule stands
            fresh = torch.nn.Parameter(torch.empty_like(source_param, device="meta"),
                                       requires_grad=source_param.requires_grad)
            swapped.append((parent, leaf, current))
            setattr(parent, leaf, fresh)
            untied[target] = source
        yield untied
    finally:
        for parent, leaf, original in reversed(swapped):
            setattr(parent, leaf, original)


def _model_rules(model: torch.nn.Module) -> dict[str, ExpectedInit]:
    """Run the model's own init on the meta device, recording the rule each parameter gets.

    Tied parameters get their source's rule: the values a new model saves are the source's (see `_untied`).
    """
    with _untied(model) as tied:
        rules = _recorded_rules(model)
    for target, source in tied.items():
        if source in rules:
            rules[target] = rules[source]
    return rules


def _recorded_rules(model: torch.nn.Module) -> dict[str, ExpectedInit]:
    """The last init call recorded on each parameter and buffer of `model`, run on the meta device."""
    import torch

    class_name = type(model).__name__
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    for name, buffer in model.named_buffers(remove_duplicate=False):
        # Buffers the model's own init sets (BART's final_logits_bias: zeros, in every published checkpoint).
        names.setdefault(id(buffer), []).append(name)
    defaults: dict[int, tuple[str, dict[str, Any], Any, str]] = {}
    calls: dict[int, tuple[str, dict[str, Any], Any, str]] = {}
    source = [""]
    with torch.no_grad(), _recording(defaults, source), torch.device("meta"):
        for module in model.modules():
            if hasattr(module, "reset_parameters") and any(True for _ in module.parameters(recurse=False)):
                source[0] = f"torch {type(module).__name__}.reset_parameters"
                try:
                    module.reset_parameters()
                except Exception:  # noqa: BLE001 - a custom module's reset may not run on meta
                    continue
    # On the meta device, as the model was built: tensors an init makes without naming a device were made on the
    # CPU, and a config's head_dim of 10^9 had the rotary init allocate 2 GB there (10^10: 20 GB) for inspect --stats.
    with torch.no_grad(), _recording(calls, source), torch.device("meta"):
        source[0] = f"{class_name}._init_weights"
        for module in model.modules():
            if hasattr(module, "_is_hf_initialized"):
                module._is_hf_initialized = False
        if hasattr(model, "initialize_weights"):
            model.initialize_weights()
        elif hasattr(model, "init_weights"):
            model.init_weights()
    rules: dict[str, ExpectedInit] = {}
    zero_rows: dict[int, list[int]] = {}
    order = {key: index for index, key in enumerate(calls)}
    for key, record in list(calls.items()):
        function, args, tensor, _ = record
        base = getattr(tensor, "_base", None)
        if base is None or order.get(id(base), -1) > order[key]:
            continue  # not a row, or a row the whole tensor's init overwrote later (ModernBERT's padding row)
        if id(base) in names and function == "zeros_" and tensor.dim() == base.dim() - 1:
            zero_rows.setdefault(id(base), []).append(int(tensor.storage_offset() // max(base.stride(0), 1)))
    for pid, param_names in names.items():
        record = calls.get(pid) or defaults.get(pid)
        if record is None:
            continue
        function, args, tensor, where = record
        expected = from_call(function, args, tuple(tensor.shape), where)
        if pid in zero_rows:
            expected = ExpectedInit(expected.label, expected.params, expected.source, expected.confident,
                                    tuple(sorted(set(zero_rows[pid]))))
        for name in param_names:
            rules[name] = expected
    return rules


def _match_names(model_names: list[str], checkpoint_names: list[str]) -> dict[str, str]:
    """checkpoint name -> model name: exact, else unique suffix match either way (prefix differences)."""
    exact = set(model_names)
    result: dict[str, str] = {}
    for name in checkpoint_names:
        if name in exact:
            result[name] = name
            continue
        hits = [m for m in model_names if m.endswith("." + name) or name.endswith("." + m)]
        if len(hits) == 1:
            result[name] = hits[0]
    return result


def _load_renames(model: torch.nn.Module, checkpoint_names: list[str]) -> dict[str, str]:
    """checkpoint name -> the model's name for it, by the renames `from_pretrained` applies at load.

    transformers 5 renamed some models' modules (ViT's `encoder.layer.N.attention.attention.key` is
    `layers.N.attention.k_proj`) and writes the old names back on save: without this the model's own rules
    match none of those keys. Only plain renames; converters (fused q/k/v) have no one-to-one name. {} on
    transformers 4.
    """
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, rename_source_key
    except ImportError:
        return {}
    try:
        renamings = [e for e in get_model_conversion_mapping(model, None, None) if isinstance(e, WeightRenaming)]
        if not renamings:
            return {}
        meta_state_dict = model.state_dict()
        renamed = {}
        for name in checkpoint_names:
            new, _ = rename_source_key(name, renamings, [], model.base_model_prefix, meta_state_dict)
            if new != name and new in meta_state_dict:
                renamed[name] = new
        return renamed
    except Exception:  # noqa: BLE001 - an unexpected mapping in some release: fall back to the names as saved
        return {}


def guess_default(info: TensorInfo, siblings: dict[str, TensorInfo]) -> ExpectedInit | None:
    """PyTorch's default init for the module type a bare state-dict entry most likely belongs to."""
    from weightdoctor.init_classify import fans

    name, shape = info.name, tuple(info.shape)
    if LORA_ZERO_INIT.search(name):
        # Not a Linear's kaiming default: any value off zero is training's (a trained LoRA's B half was called
        # "still at its initialization kaiming_uniform" for being normal-looking).
        return ExpectedInit("zeros", {"value": 0.0}, "LoRA's B / up half starts at zero (guessed from the name)", True)
    if ZERO_CONV_INIT.search(name):
        return ExpectedInit("zeros", {"value": 0.0}, "a ControlNet's zero convolution starts at zero (guessed from the "
                            "name)", True)
    if IA3_VECTOR.search(name):
        return ExpectedInit("ones", {"value": 1.0}, "peft's IA3 vector starts at ones (guessed from the name)", True)
    stem, _, leaf = name.rpartition(".")
    weight = siblings.get(f"{stem}.weight" if stem else "weight")
    if leaf == "bias" and len(shape) == 1:
        if weight is not None and len(weight.shape) == 1 or NORM_NAME.search(stem):
            return ExpectedInit("zeros", {"value": 0.0}, "PyTorch norm default (guessed from the name)", True)
        if weight is not None and len(weight.shape) >= 2:
            fan = fans(tuple(weight.shape))
            assert fan is not None
            bound = 1.0 / math.sqrt(fan[0]) if fan[0] else 0.0
            return ExpectedInit("uniform", {"bound": bound},
                                "PyTorch nn.Linear/Conv default bias U(±1/√fan_in) (guessed from the name)", False)
        return None
    if leaf == "weight" and len(shape) == 1 and (NORM_NAME.search(stem) or f"{stem}.bias" in siblings):
        return ExpectedInit("ones", {"value": 1.0}, "PyTorch norm default (guessed from the name)", True)
    if len(shape) == 2 and EMBED_NAME.search(name):
        return ExpectedInit("normal", {"mean": 0.0, "std": 1.0}, "PyTorch nn.Embedding default (guessed)", False)
    if len(shape) >= 2 and leaf == "weight":
        fan = fans(shape)
        assert fan is not None
        if fan[0] == 0:
            return None
        kind = "nn.Linear" if len(shape) == 2 else f"nn.Conv{len(shape) - 2}d"
        # A LoRA's A half is set so by its trainer, not guessed: off that scale it has trained.
        lora = LORA_KAIMING_INIT.search(name) is not None
        return ExpectedInit("kaiming_uniform", {"a": math.sqrt(5), "mode": "fan_in", "nonlinearity": "leaky_relu",
                                                "gain": math.sqrt(1 / 3), "bound": 1.0 / math.sqrt(fan[0])},
                            ("LyCORIS' Tucker core (lora_mid), kaiming_uniform as its nn.Conv2d starts" if ".lora_mid"
                             in name else "LoRA's A / down half, kaiming_uniform as peft and kohya-ss start it") if lora
                            else f"PyTorch {kind} default (guessed from the name)", lora)
    return None


def peft_lora_init(setting: str | None, info: TensorInfo) -> ExpectedInit | None:
    """What a peft LoRA half starts at under an adapter_config.json `init_lora_weights` scheme other than the
    default (`setting` as `structure.lora_init_setting` gives it): normal(0, 1/r) for "gaussian"'s lora_A, an `other`
    init taken from the base model for the data-derived schemes (`params["derived_from"]` says from what), an
    `other` init whose structure `structural_init` tests for "orthogonal" and "nora" (`params["structure"]`), the
    modules' own defaults for False, AdaLoRA's normal(0, 0.02); None where the default rules hold.

    Example:
        >>> info = TensorInfo("m.q.lora_B.weight", (8, 4), ...)                       # doctest: +SKIP
        >>> peft_lora_init("pissa", info).params["derived_from"]                       # doctest: +SKIP
        "the base model's weights"
    """
    if setting is not None and setting.startswith("adalora"):
        return _adalora_init(setting, info)
    if setting == "false" and (embedding := PEFT_LORA_EMBEDDING_HALF.search(info.name)) is not None:
        # peft draws them with torch.randn and leaves them so when init_lora_weights is False.
        return ExpectedInit("normal", {"mean": 0.0, "std": 1.0}, "adapter_config.json init_lora_weights=false: "
                            f"peft's lora_embedding_{embedding['half']} as drawn, torch.randn", True)
    match = PEFT_LORA_HALF.search(info.name) if setting else None
    if match is None or setting is None:
        return None
    scheme = "pissa" if setting.startswith("pissa_niter_") else setting
    source = f'adapter_config.json init_lora_weights="{setting}"'
    if match["half"] in DATA_DERIVED_LORA_INIT.get(scheme, ""):
        origin = {"eva": "the activations", "astra": "the activations and the base model's weights",
                  "lora_ga": "the gradient of the loss on the base model's weights",
                  "mica": "the base model's weights (its smallest singular vectors), and frozen there by peft: it "
                          "never trains"}.get(scheme, "the base model's weights")
        return ExpectedInit("other", {"function": f"{scheme} (set from {origin})", "derived_from": origin},
                            source, True)
    if scheme == "mica" and match["half"] == "A":
        return ExpectedInit("zeros", {"value": 0.0}, source + ": MiCA starts lora_A at zero", True)
    halves, structure = STRUCTURED_LORA_INIT.get(scheme, ("", ""))
    if match["half"] in halves and len(info.shape) == 2:
        function = ("orthogonal (lora_A and lora_B drawn at rank r/2 each, B·A = 0)" if structure == "half_rank"
                    else "nora (kaiming_uniform, each column scaled to unit L2 norm)")
        return ExpectedInit("other", {"function": function, "structure": structure}, source, True)
    fan = _fans_or_none(tuple(info.shape))
    if scheme == "false" and match["half"] == "B" and fan is not None and fan[0]:
        # peft leaves lora_B as nn.Linear / nn.Conv made it (reset_lora_parameters is not called): not at zero.
        return ExpectedInit("kaiming_uniform", {"a": math.sqrt(5), "mode": "fan_in", "nonlinearity": "leaky_relu",
                                                "gain": math.sqrt(1 / 3), "bound": 1.0 / math.sqrt(fan[0])},
                            'adapter_config.json init_lora_weights=false: lora_B as its nn.Linear / nn.Conv starts, '
                            "kaiming_uniform", True)
    if scheme == "gaussian" and match["half"] == "A" and len(info.shape) >= 2 and info.shape[0]:
        # peft: nn.init.normal_(lora_A, std=1 / r), and r is lora_A's first dimension (rank_pattern included).
        return ExpectedInit("normal", {"mean": 0.0, "std": 1 / info.shape[0]}, source + ": normal(0, 1/r)", True)
    return None


def _fans_or_none(shape: tuple[int, ...]) -> tuple[int, int] | None:
    from weightdoctor.init_classify import fans

    return fans(shape) if all(shape) else None


def _adalora_init(setting: str, info: TensorInfo) -> ExpectedInit | None:
    """What peft's AdaLoRA starts `info` at: lora_A and lora_B normal(0, 0.02) and lora_E zero, or all three as
    torch.randn drew them under init_lora_weights=false (`setting` "adalora_false"); None for another tensor."""
    match = ADALORA_PART.search(info.name)
    if match is None:
        return None
    if setting == "adalora_false":
        return ExpectedInit("normal", {"mean": 0.0, "std": 1.0}, "peft's AdaLoRA with init_lora_weights=false: "
                            f"lora_{match['part']} as drawn, torch.randn", True)
    if match["part"] == "E":
        return ExpectedInit("zeros", {"value": 0.0}, "peft's AdaLoRA starts lora_E (the singular values) at zero",
                            True)
    return ExpectedInit("normal", {"mean": 0.0, "std": 0.02},
                        f"peft's AdaLoRA starts lora_{match['part']} at normal(0, 0.02)", True)


def expected_inits(tensors: list[TensorInfo], config: dict[str, Any] | None) -> ExpectedInits:
    """Expected initialization of each tensor: the model's own rules when `config` allows, else guesses.

    Args:
        tensors: the checkpoint's tensors.
        config: the parsed `config.json`, or None for a bare state dict.
    """
    result = ExpectedInits()
    siblings = {t.name: t for t in tensors}
    if config and config.get("model_type"):
        try:
            from weightdoctor.meta_model import build_meta_model

            model = build_meta_model(config)
            renamed = _load_renames(model, [t.name for t in tensors])
            rules = _model_rules(model)
            mapping = _match_names(list(rules), [renamed.get(t.name, t.name) for t in tensors])
            result.by_name = {ckpt: rules[mapping[renamed.get(ckpt, ckpt)]] for ckpt in (t.name for t in tensors)
                              if renamed.get(ckpt, ckpt) in mapping}
            result.method = "transformers"
            result.model_class = type(model).__name__
        except Exception as exc:  # noqa: BLE001 - any failure falls back to the PyTorch defaults
            text = clip_words(" ".join(str(exc).split()), 160)
            result.warning = f"could not build the model from config.json ({type(exc).__name__}: {text}); " \
                             "expected inits are PyTorch defaults guessed from names"
    for info in tensors:
        if info.name not in result.by_name:
            guess = guess_default(info, siblings)
            if guess is not None:
                result.by_name[info.name] = guess
    return result


def _found_scale(found: InitResult) -> float | None:
    return found.params.get("std") if "std" in found.params else found.params.get("bound")


def _uniform_ends(params: dict[str, Any]) -> tuple[float, float] | None:
    """(low, high) of a uniform given by `low, high` or by a symmetric `bound`."""
    if "low" in params and "high" in params:
        return float(params["low"]), float(params["high"])
    if "bound" in params:
        return -float(params["bound"]), float(params["bound"])
    return None


FAMILY_OF = {
    "normal": "normal", "kaiming_normal": "normal", "xavier_normal": "normal", "truncated_normal": "truncated_normal",
    "uniform": "uniform", "kaiming_uniform": "uniform", "xavier_uniform": "uniform", "orthogonal": "orthogonal",
}


def _truncated_spread(params: dict[str, Any]) -> float | None:
    """Standard deviation of the values of a symmetric truncated normal given by `mean, std, a, b` (or `k`)."""
    from weightdoctor.init_classify import _truncation_ratio

    std = params.get("std")
    if not std:
        return None
    k = params.get("k")
    if k is None and "a" in params and "b" in params:
        mean = params.get("mean", 0.0)
        k = min(params["b"] - mean, mean - params["a"]) / std
    if not k or k <= 0:
        return None
    return std * k * _truncation_ratio(k)


def matches_expected(found: InitResult, expected: ExpectedInit, count: int,
                     value_range: tuple[float, float] | None = None) -> bool | None:
    """Whether the values still match their expected initialization; None when it cannot be said.

    Scales are compared with a tolerance of 5% (uniform: the bound) or max(1%, 4 standard errors of the std of
    `count` normal values). A truncated normal init is still matched by values fitted as a plain normal (a cut
    at ±3σ does not show in a few thousand values) at its spread, and by none beyond its cut: `value_range`,
    the tensor's (min, max), when given.
    """
    if found.label in ("undetermined",) or expected.label == "other":
        return None
    if found.label == "trained":
        return False
    if expected.label in ("zeros", "ones", "constant"):
        return found.label in ("zeros", "ones", "constant") and found.params.get("value") == expected.params["value"]
    if found.label in ("zeros", "ones", "constant"):
        return False
    want = FAMILY_OF.get(expected.label)
    have = found.family if found.label == "ambiguous" else FAMILY_OF.get(found.label)
    if want is None or have is None:
        return None
    if want != have and not (want in ("orthogonal", "truncated_normal") and have == "normal"):
        return False
    if want == "orthogonal":
        return found.label == "orthogonal" and abs(found.params["gain"] / expected.params["gain"] - 1) < 0.05
    if want == "uniform" and "low" in expected.params:
        # An asymmetric uniform (Funnel's r_w_bias: U(0, initializer_range)) has no bound: compare its ends.
        ends, (low, high) = _uniform_ends(found.params), _uniform_ends(expected.params) or (0.0, 0.0)
        if ends is None or high <= low:
            return None
        # n values leave a gap of t·width at an end with probability (1 - t)^n: 10/n puts that under 5e-5.
        slack = max(0.05, 10.0 / max(count, 1)) * (high - low)
        return abs(ends[0] - low) <= slack and abs(ends[1] - high) <= slack
    if want == "truncated_normal":
        low, high = expected.params.get("a"), expected.params.get("b")
        if value_range is not None and low is not None and high is not None:
            slack = 0.01 * max(abs(low), abs(high))  # bf16 rounds the cut by 0.4% at most
            if value_range[0] < low - slack or value_range[1] > high + slack:
                return False
        # The fitted σ of a truncated normal comes through its estimated cut k and is off by a percent or more
        # on millions of values; the spread of the values themselves is exact: compare that.
        scale = _found_scale(found) if have == "normal" else _truncated_spread(found.params)
        target = _truncated_spread(expected.params)
    else:
        scale, target = _found_scale(found), expected.scale
    if scale is None or not target:
        return None
    # A fresh normal sample's std is within 4 standard errors (1/√(2n)) of its init's; beyond that it has
    # moved. The 1% floor allows for rounding and rules that do not say their scale exactly.
    tolerance = 0.05 if want == "uniform" else max(0.01, 4.0 / math.sqrt(2.0 * max(count, 1)))
    return abs(scale / target - 1) <= tolerance


def fits_expected(values: torch.Tensor, expected: ExpectedInit) -> bool:
    """Whether `values` pass a Kolmogorov-Smirnov test against the expected init itself (its exact scale).

    For tensors too small for the family fit to be sure: 64 normal values can fit a uniform better by
    likelihood, yet still be a plain sample of their normal init.
    """
    from weightdoctor.init_classify import KS_LIMIT, FamilyFit, ks_distance

    family, scale = FAMILY_OF.get(expected.label), expected.scale
    ends = _uniform_ends(expected.params) if family == "uniform" else None
    if ends is not None and ends[1] > ends[0] and values.numel():
        fit = FamilyFit(family, {}, 0.5 * (ends[0] + ends[1]), 0.5 * (ends[1] - ends[0]), ends[0], ends[1])
        return ks_distance(values, fit) * math.sqrt(values.numel()) <= KS_LIMIT
    if family not in ("normal", "uniform") or not scale or values.numel() == 0:
        return False
    mean = float(expected.params.get("mean", 0.0))
    fit = FamilyFit(family, {}, mean, scale, mean - scale, mean + scale)
    return ks_distance(values, fit) * math.sqrt(values.numel()) <= KS_LIMIT


def reconcile(found: InitResult, expected: ExpectedInit | None, count: int,
              values: torch.Tensor | None = None, value_range: tuple[float, float] | None = None) -> InitResult:
    """Call a tensor `trained` when it was fitted to some distribution but its certain init was another.

    Only confident expectations (the model's own rules, norm constants) overrule the classifier. When only
    the family differs and `values` (the classifier's sample) still fit the expected init at its exact
    scale, the family fit was chance: the result becomes the expected init.
    """
    if expected is None or not expected.confident:
        return found
    if found.label in ("zeros", "ones", "constant") and expected.label not in ("zeros", "ones", "constant"):
        return found  # a zeroed or constant matrix is a health finding, not training
    verdict = matches_expected(found, expected, count, value_range)
    if verdict is False and found.label not in ("trained",):
        have = found.family if found.label == "ambiguous" else FAMILY_OF.get(found.label)
        if values is not None and have != FAMILY_OF.get(expected.label) and fits_expected(values, expected):
            x = values.double()
            if FAMILY_OF[expected.label] == "normal":
                estimate = {"mean": float(x.mean()), "std": float(x.std())}
            elif "low" in expected.params:
                estimate = {"low": float(x.min()), "high": float(x.max())}
            else:
                estimate = {"bound": float(x.abs().max())}
            params = {**expected.params, **estimate}
            return InitResult(expected.label, params, family=FAMILY_OF.get(expected.label), evidence=found.evidence,
                              note=f"fits {expected.describe()} (too few values to tell it from {found.describe()})",
                              named=True)
        reason = f"initialized as {expected.describe()} ({expected.source}); now {found.describe()}"
        return InitResult("trained", dict(found.params), family=found.family, reason=reason,
                          evidence=found.evidence)
    return found


# How far from an untouched structure a stored factor may be and still be it: float32 keeps a rank-r/2 matrix's
# other singular values under 1e-6 of its largest and a unit column's norm within 1e-6 of 1; bfloat16 rounds each
# value by up to 2⁻⁹, which moves them to about 1e-3 (float16: 2⁻¹²). One optimiser step moves them further.
_STRUCTURE_SLACK = {"bfloat16": 2e-2, "float16": 4e-3}
_STRUCTURE_SLACK_DEFAULT = 1e-4


def structural_init(expected: ExpectedInit, shape: tuple[int, ...], dtype: str, rows: torch.Tensor | None,
                    cols: torch.Tensor | None = None, cols_complete: bool = False) -> tuple[InitResult, bool | None]:
    """Whether a peft LoRA half drawn by a structured scheme (`expected.params["structure"]`: "half_rank" for
    init_lora_weights="orthogonal", "unit_columns" for "nora") still has the structure it was drawn with.

    Returns the init result and `at_init`: ("undetermined", True) with the reason when it still has it (no named
    distribution describes the values, yet they are where peft put them), ("trained", False) when it has lost it,
    ("undetermined", None) when the rows read cannot tell (a partial read, too few rows).

    Example:
        >>> a = torch.randn(4, 2) @ torch.linalg.qr(torch.randn(4, 4))[0][0::2]      # doctest: +SKIP
        >>> structural_init(want, (4, 4), "float32", a, True)[1]                      # doctest: +SKIP
        True

    Args:
        expected: the half's ExpectedInit from `peft_lora_init`.
        shape: the stored shape (r × in for lora_A, out × r for lora_B).
        dtype: the stored dtype, which sets the slack for its rounding.
        rows: rows of the tensor (`TensorSample.rows`, float32): all of a row's values, or the same sampled
            columns of each row beyond 8,192 (a rank-r/2 matrix's columns are of rank r/2 too, and each column of
            NoRA's lora_A read whole where every row is read).
        cols, cols_complete: whole columns (`TensorSample.cols`, one a row) for NoRA's norms where `rows` is not
            every row (r above the rows read).
    """
    import torch

    structure, said = expected.params.get("structure"), expected.source  # the expected init is shown beside it
    if rows is None or len(shape) != 2 or rows.numel() == 0:
        return InitResult("undetermined", reason=f"{said}: its structure was not checked (no rows read)"), None
    matrix = rows.double()
    # peft draws them in the base model's dtype and saves them in float32 (autocast_adapter_dtype): a bfloat16 base's
    # factors are bfloat16 values stored as float32, with bfloat16's rounding.
    rounded = next((name for name, narrow in (("bfloat16", torch.bfloat16), ("float16", torch.float16))
                    if dtype == name or bool((rows.to(narrow).double() == matrix).all())), dtype)
    slack = _STRUCTURE_SLACK.get(rounded, _STRUCTURE_SLACK_DEFAULT)
    if structure == "unit_columns":
        if matrix.shape[0] == shape[0]:
            norms = matrix.norm(dim=0)
        elif cols is not None and cols_complete and cols.numel():
            norms = cols.double().norm(dim=1)
        else:
            return InitResult("undetermined", reason=f"{said}: its columns were not read whole"), None
        off = float((norms - 1).abs().max())
        if off <= slack:
            return InitResult("undetermined", reason=f"{said}: still at its initialization ({len(norms):,} "
                              f"of its {shape[1]:,} columns read, each at L2 norm 1 within {off:.1g})"), True
        farthest = float(norms[(norms - 1).abs().argmax()])
        return InitResult("trained", reason=f"{said}: a column's L2 norm is {farthest:.4g}, where NoRA leaves each "
                          "at 1: it has trained"), False
    rank = min(shape)  # r: lora_A is r × in, lora_B out × r (a rank above in or out leaves the smaller)
    if min(matrix.shape) < rank or rank < 2:
        return InitResult("undetermined", reason=f"{said}: too few rows read ({matrix.shape[0]}×{matrix.shape[1]}) "
                          "to see its rank"), None
    singular = torch.linalg.svdvals(matrix)
    top = float(singular[0])
    if top == 0:
        return InitResult("undetermined", reason=f"{said}: all zero"), None
    beyond = float(singular[rank // 2]) / top
    if beyond <= slack:
        return InitResult("undetermined", reason=f"{said}: still at its initialization (rank {rank // 2} of {rank}: "
                          f"its singular values past the first {rank // 2} are {beyond:.1g} of the largest)"), True
    return InitResult("trained", reason=f"{said}: rank {rank} (singular value {rank // 2 + 1} is {beyond:.2g} of the "
                      f"largest), where peft's orthogonal init leaves rank {rank // 2}: it has trained"), False


def peft_method_init(adapter: Mapping[str, Any], info: TensorInfo) -> ExpectedInit | None:
    """What a tensor of a peft adapter of a method other than LoRA and AdaLoRA starts at, by its adapter_config.json
    (`adapter`, as `structure.peft_adapter_config` reads it), or None where the default rules hold.

    An `other` init with `params["frozen"]` is a buffer peft never trains (TinyLoRA's SVD factors and projection);
    with `params["derived_from"]` one set from the base model or computed at save (a prompt encoder's output), not
    judged from the adapter alone; with `params["uninitialized"]` one peft left as torch.empty left it.

    Example:
        >>> info = TensorInfo("base_model.tinylora_v.0", (64,), ...)                    # doctest: +SKIP
        >>> peft_method_init({"peft_type": "TINYLORA"}, info).label                     # doctest: +SKIP
        'zeros'
    """
    peft_type = adapter.get("peft_type")
    if peft_type == "TINYLORA":
        return _tinylora_init(adapter, info)
    if peft_type == "ADAPTION_PROMPT" and (match := ADAPTION_PART.search(info.name)) is not None:
        if match["part"] == "gate":
            return ExpectedInit("zeros", {"value": 0.0}, "peft's Llama-Adapter starts adaption_gate at zero", True)
        return ExpectedInit("normal", {"mean": 0.0, "std": 1.0}, "peft's Llama-Adapter draws adaption_prompt with "
                            "normal_()", True)
    if TRAINABLE_TOKENS_DELTA.search(info.name) is not None and peft_type in ("TRAINABLE_TOKENS", "LORA"):
        if peft_type == "TRAINABLE_TOKENS" and adapter.get("init_weights", True) is False:
            return ExpectedInit("normal", {"mean": 0.0, "std": 1.0}, "adapter_config.json init_weights=false: peft's "
                                "trainable_tokens_delta as drawn, torch.randn", True)
        origin = "the base model's embedding rows of those tokens"
        return ExpectedInit("other", {"function": f"a copy of {origin}", "derived_from": origin},
                            "peft's trainable tokens start as the rows they replace", True)
    if peft_type in PROMPT_LEARNING_TYPES:
        return _prompt_learning_init(adapter, info)
    if peft_type == "ADAMSS" and (match := ADAMSS_PART.search(info.name)) is not None:
        return _adamss_init(adapter, match["part"])
    zero_started = PEFT_ZERO_STARTED.get(str(peft_type))
    if zero_started is not None and adapter.get("init_weights", True) is not False and (
            match := zero_started.search(info.name)) is not None:
        return ExpectedInit("zeros", {"value": 0.0}, f"peft's {PEFT_ZERO_STARTED_NAMES[str(peft_type)]} starts "
                            f"{match['part']} at zero", True)
    if peft_type == "POLY" and (match := POLY_PART.search(info.name)) is not None:
        if match["part"] == "poly_router.module_logits":
            return ExpectedInit("uniform", {"bound": 1e-3}, "peft's Polytropon router: module_logits U(±1e-3)", True)
        if adapter.get("init_weights", True) is not False:
            return ExpectedInit("zeros", {"value": 0.0}, "peft's Polytropon starts poly_lora_B at zero", True)
    return None


def _tinylora_init(adapter: Mapping[str, Any], info: TensorInfo) -> ExpectedInit | None:
    """TinyLoRA's buffers (frozen) and its trainable vector, by init_weights (see `TINYLORA_BUFFER`)."""
    if (buffer := TINYLORA_BUFFER.search(info.name)) is not None:
        function = ("a projection drawn from projection_seed, normal(0, 1/√r)" if buffer["part"] == "P" else
                    f"the base model's weight's truncated SVD ({'√S·Vᵀ' if buffer['part'] == 'A' else 'U·√S'})")
        return ExpectedInit("other", {"function": function, "frozen": True},
                            f"peft's TinyLoRA sets tinylora_{buffer['part']} so", True)
    if TINYLORA_VECTOR.match(info.name) is None:
        return None
    setting = adapter.get("init_weights", True)
    if setting is False:
        return ExpectedInit("other", {"function": "torch.empty (never initialized: whatever the memory held)",
                                      "uninitialized": True},
                            "adapter_config.json init_weights=false: peft leaves TinyLoRA's tinylora_v as torch.empty "
                            "made it", True)
    if isinstance(setting, str) and setting.lower() == "uniform":
        bound = adapter.get("init_v_bound", 0.02)
        if isinstance(bound, (int, float)) and not isinstance(bound, bool) and bound > 0:
            return ExpectedInit("uniform", {"bound": float(bound)}, 'adapter_config.json init_weights="uniform": '
                                "TinyLoRA's tinylora_v U(±init_v_bound)", True)
        return None
    return ExpectedInit("zeros", {"value": 0.0}, "peft's TinyLoRA starts tinylora_v at zero (init_weights true)", True)


def _adamss_init(adapter: Mapping[str, Any], part: str) -> ExpectedInit:
    """AdaMSS's projection (frozen), its subspaces' A factors (from the base weight) and B factors (see ADAMSS_PART)."""
    if part == "newB":
        return ExpectedInit("other", {"function": "the base model's weight's SVD (its right singular vectors)",
                                      "frozen": True}, "peft's AdaMSS sets adamss_newB so", True)
    if part == "A":
        origin = "the base model's weight (a QR of its subspace's singular vectors)"
        return ExpectedInit("other", {"function": f"set from {origin}", "derived_from": origin},
                            "peft's AdaMSS sets adamss_A so", True)
    if adapter.get("init_weights", "orthogonal") == "orthogonal":
        return ExpectedInit("zeros", {"value": 0.0}, 'adapter_config.json init_weights="orthogonal": AdaMSS starts '
                            "adamss_B at zero", True)
    return ExpectedInit("normal", {"mean": 0.0, "std": 0.01}, "adapter_config.json init_weights=null: AdaMSS draws "
                        "adamss_B torch.randn × 0.01", True)


def _prompt_learning_init(adapter: Mapping[str, Any], info: TensorInfo) -> ExpectedInit | None:
    """A prompt-learning adapter's `prompt_embeddings` (and multitask prompt tuning's task factors)."""
    peft_type, leaf = adapter.get("peft_type"), info.name.rpartition(".")[2]
    init = str(adapter.get("prompt_tuning_init", "RANDOM")).upper()
    if leaf in ("prefix_task_cols", "prefix_task_rows") and peft_type == "MULTITASK_PROMPT_TUNING":
        if init in ("AVERAGE_SOURCE_TASKS", "EXACT_SOURCE_TASK"):
            origin = "the source tasks' trained factors (prompt_tuning_init_state_dict_path)"
            return ExpectedInit("other", {"function": f"copied from {origin}", "derived_from": origin},
                                f'adapter_config.json prompt_tuning_init="{init}"', True)
        return ExpectedInit("normal", {"mean": 0.0, "std": 0.02}, f"peft's multitask prompt tuning draws {leaf} "
                            "normal(0, 0.02)", True)
    if leaf != "prompt_embeddings":
        return None
    if peft_type == "P_TUNING" or (peft_type == "PREFIX_TUNING" and adapter.get("prefix_projection")):
        # peft saves what the encoder gives for the virtual tokens (get_prompt_embedding_to_save), not its weights.
        origin = ("the prompt encoder's output (an MLP or LSTM of its embedding), which peft saves"
                  if peft_type == "P_TUNING" else "the prefix projection's output (an MLP of its embedding), which "
                  "peft saves")
        return ExpectedInit("other", {"function": origin, "derived_from": origin}, f"peft's {peft_type}", True)
    if peft_type == "CPT":
        origin = "the base model's embeddings of cpt_token_ids"
        return ExpectedInit("other", {"function": f"a copy of {origin}", "derived_from": origin},
                            "peft's CPT starts its prompt at its tokens' embeddings", True)
    source_tasks = ("ONLY_SOURCE_SHARED", "AVERAGE_SOURCE_TASKS", "EXACT_SOURCE_TASK")
    if init in ("TEXT", "SAMPLE_VOCAB") or (peft_type == "MULTITASK_PROMPT_TUNING" and init in source_tasks):
        origin = ("the source tasks' trained prompt (prompt_tuning_init_state_dict_path)" if init in source_tasks
                  else "the base model's token embeddings")
        return ExpectedInit("other", {"function": f"copied from {origin}", "derived_from": origin},
                            f'adapter_config.json prompt_tuning_init="{init}"', True)
    # RANDOM (and prefix tuning without projection): the nn.Embedding peft makes, normal(0, 1).
    return ExpectedInit("normal", {"mean": 0.0, "std": 1.0}, f"peft's {peft_type}: the virtual tokens' nn.Embedding, "
                        "normal(0, 1)", True)
