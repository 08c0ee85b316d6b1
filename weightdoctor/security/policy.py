"""Which imported globals a checkpoint's pickle may name: safe, dangerous, or unknown.

Safe is exactly what torch's `weights_only` unpickler allows by default (tensor and storage rebuilds,
dtypes, `OrderedDict`, ...; the list below is checked against the installed torch in the tests), plus
the numpy array and scalar rebuilds that torch documents for `torch.serialization.safe_globals`.
Dangerous is anything that can run code, start processes, touch files or the network, or reach the
import machinery. Everything else is unknown, which the scanner reports as suspicious: a checkpoint of
weights has no reason to import it. Inert are the configuration objects that training checkpoints keep beside
their weights (fairseq's `argparse.Namespace`, omegaconf's `DictConfig`, Lightning's `AttributeDict`,
`pathlib` paths): never imported, they are read as `checkpoint.inert.InertObject`s that run no code.
"""

from __future__ import annotations

import _compat_pickle
import re
import reprlib
from collections.abc import Callable, Iterable
from typing import Any

SAFE = "safe"
DANGEROUS = "dangerous"
UNKNOWN = "unknown"
INERT = "inert"

# The TrainingArguments classes a Trainer torch.saves whole as training_args.bin: transformers' own and TRL's
# trainers' configs, each a dataclass subclass of it (trl/trainer/<name>_config.py) holding plain values.
TRAINING_ARGUMENTS: frozenset[str] = frozenset({
    "transformers.training_args.TrainingArguments", "transformers.training_args_seq2seq.Seq2SeqTrainingArguments",
    *(f"trl.trainer.{module}_config.{name}Config" for module, name in (
        ("sft", "SFT"), ("dpo", "DPO"), ("reward", "Reward"), ("grpo", "GRPO"), ("kto", "KTO"), ("orpo", "ORPO"),
        ("cpo", "CPO"), ("ppo", "PPO"), ("online_dpo", "OnlineDPO"), ("gkd", "GKD"), ("prm", "PRM"), ("bco", "BCO"),
        ("nash_md", "NashMD"), ("xpo", "XPO"), ("rloo", "RLOO"))),
})

# A DeepSpeed run's TrainingArguments (its `deepspeed` field set) holds transformers' HfTrainerDeepSpeedConfig as
# `hf_deepspeed_config` and accelerate's DeepSpeedPlugin as `deepspeed_plugin` (training_args.py's __post_init__), and
# the plugin holds the same config as `hf_ds_config` and, once an Accelerator selected it, transformers'
# HfDeepSpeedConfig as `dschf`; launched by `accelerate launch` with a config file, the plugin holds accelerate's own
# HfDeepSpeedConfig. Each is a plain class (the plugin a dataclass) pickled by NEWOBJ and a BUILD of its __dict__:
# the DeepSpeed config dict, the ZeRO stage, an offload flag, a torch dtype, a list of mismatches. None defines
# __setstate__ or __reduce__; their __init__ reads the JSON file a path names and sets a module-level weakref, and
# DeepSpeedPlugin's __post_init__ reads ACCELERATE_DEEPSPEED_* variables, so a call to one stays refused.
# transformers 4.46 and older defined the two configs in transformers.deepspeed, which pickles name so.
DEEPSPEED_CONFIGS: frozenset[str] = frozenset({
    "accelerate.utils.dataclasses.DeepSpeedPlugin", "accelerate.utils.deepspeed.HfDeepSpeedConfig",
    *(f"transformers.{module}.{name}" for module in ("integrations.deepspeed", "deepspeed")
      for name in ("HfDeepSpeedConfig", "HfTrainerDeepSpeedConfig")),
})

# The enums TrainingArguments' fields hold, each pickled as Enum(value): one string, a member's value. See
# `call_problem` and `build_problem`.
TRAINING_ENUMS: frozenset[str] = frozenset({
    "transformers.training_args.OptimizerNames", "transformers.trainer_utils.SchedulerType",
    "transformers.trainer_utils.IntervalStrategy", "transformers.trainer_utils.SaveStrategy",
    "transformers.trainer_utils.HubStrategy", "transformers.trainer_utils.FSDPOption",
    "transformers.debug_utils.DebugOption", "accelerate.utils.dataclasses.DistributedType",
    "trl.trainer.dpo_config.FDivergenceType",
})

# Configuration containers of training checkpoints, read as inert stand-ins (never imported, see
# weightdoctor.checkpoint.inert): torch's weights_only loader refuses them, so torch.load fails on fairseq,
# Hydra / NeMo and Lightning checkpoints whose tensors are plain.
INERT_GLOBALS: frozenset[str] = frozenset({
    "argparse.Namespace", "types.SimpleNamespace",
    "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePosixPath", "pathlib.PureWindowsPath",
    # Python 3.13 moved the path classes to pathlib._local, and a path pickled there names them so (a Lightning
    # checkpoint's dirpath saved on 3.13): the same classes, which were called unknown.
    "pathlib._local.Path", "pathlib._local.PosixPath", "pathlib._local.WindowsPath", "pathlib._local.PurePosixPath",
    "pathlib._local.PureWindowsPath",
    "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig", "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata", "omegaconf.nodes.AnyNode", "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode", "omegaconf.nodes.FloatNode", "omegaconf.nodes.BooleanNode",
    "omegaconf.nodes.BytesNode", "omegaconf.nodes.PathNode", "omegaconf.nodes.EnumNode",
    "lightning_fabric.utilities.data.AttributeDict", "lightning.fabric.utilities.data.AttributeDict",
    "pytorch_lightning.utilities.parsing.AttributeDict",
    # The `lightning` package (1.8 to 2.0: `import lightning.pytorch as pl`) defined its own copy of the class there,
    # and a checkpoint's hyper_parameters saved with it name it so: the same data, which was called unknown.
    "lightning.pytorch.utilities.parsing.AttributeDict",
    # Lightning 1.x keyed a checkpoint's "callbacks" by the callback's class: the original Stable Diffusion
    # .ckpt files (CompVis sd-v1-4.ckpt) name ModelCheckpoint so, the class only, never built.
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
    # mmengine's Runner (MMDetection, MMPretrain, MMSegmentation 3.x) keeps its MessageHub's logged scalars beside
    # the weights: `message_hub.log_scalars` maps each name to a HistoryBuffer (its numpy history arrays).
    "mmengine.logging.history_buffer.HistoryBuffer",
    # NVIDIA TransformerEngine (Megatron-LM, NeMo) before 1.x kept each module's FP8 scaling state, its
    # `_extra_state`, as a pickled io.BytesIO: an in-memory buffer of bytes, rebuilt from those bytes alone.
    "_io.BytesIO", "io.BytesIO",
    # pyannote.audio's Model.on_save_checkpoint keeps its task's Specifications (a dataclass of two Enums, a
    # duration and class names) under checkpoint["pyannote.audio"] of every segmentation / embedding checkpoint
    # (pyannote/segmentation-3.0's pytorch_model.bin): data, rebuilt by object.__new__ and Enum lookups.
    "pyannote.audio.core.task.Specifications", "pyannote.audio.core.task.Problem",
    "pyannote.audio.core.task.Resolution",
    # torch.__version__ itself, a str subclass (NEWOBJ of the version string), which torch's weights_only loader
    # refuses: pyannote.audio records it under checkpoint["pyannote.audio"]["versions"]["torch"], as other training
    # scripts record the torch they ran with.
    "torch.torch_version.TorchVersion",
    # Plain values a Lightning module's save_hyperparameters() (and other scripts' configs) keep: a run's start time
    # and time budget, a Decimal or Fraction learning rate, a run id. Each is rebuilt from numbers, bytes or a
    # string alone (datetime's C constructors, Decimal(str), Fraction(n, d), UUID's __setstate__ of {"int": n});
    # building them runs no code and touches nothing. Only these names: the rest of `uuid` (getnode, which ran
    # ifconfig) stays dangerous, and a tzinfo from zoneinfo or pytz, which reads zone files, stays unknown.
    "datetime.datetime", "datetime.date", "datetime.time", "datetime.timedelta", "datetime.timezone",
    "decimal.Decimal", "fractions.Fraction", "uuid.UUID",
    # transformers' Trainer torch.saves its TrainingArguments whole as training_args.bin, in every checkpoint-N/ and
    # beside the final model: a dataclass (NEWOBJ, then BUILD of its fields) whose fields hold transformers' enums
    # (REDUCE of the class on a string), an AcceleratorConfig dataclass and accelerate's PartialState (NEWOBJ and
    # BUILD of its settings, a torch.device and a DistributedType enum among them). Read from the file transformers
    # 5 writes; Seq2SeqTrainer's subclass is the same data.
    *TRAINING_ARGUMENTS, "transformers.trainer_pt_utils.AcceleratorConfig", "accelerate.state.PartialState",
    *TRAINING_ENUMS,
    # A DeepSpeed run's training_args.bin: see DEEPSPEED_CONFIGS.
    *DEEPSPEED_CONFIGS,
})

# Inert classes whose own code, run by a call, does what a configuration object must not: a pickle builds them as
# every Trainer writes them, by NEWOBJ (cls.__new__, no __init__) and a BUILD of their fields, and never calls them.
# Called (REDUCE, or INST / OBJ with arguments), TrainingArguments runs __post_init__ (under torch.load with
# weights_only=False): it builds accelerate's PartialState, which initialized torch.distributed's process group under
# torchrun's environment; with fsdp set it wrote FSDP_CPU_RAM_EFFICIENT_LOADING into os.environ; it read the JSON file
# its accelerator_config or fsdp_config named. PartialState(cpu) runs the same initialization itself. Each dataclass,
# built by NEWOBJ, only has its fields set (none defines __setstate__, __setattr__ or a property setter).
BUILT_BY_NEW: frozenset[str] = frozenset({
    *TRAINING_ARGUMENTS, "transformers.trainer_pt_utils.AcceleratorConfig", "accelerate.state.PartialState",
    *DEEPSPEED_CONFIGS,
})

# How a genuine file builds each inert class: a name's being inert says nothing of what the pickle does with it, and
# torch.load(weights_only=False) runs whatever it does. Any other use is refused (`call_problem`, `build_problem`).
CLASS_ONLY = "class only"  # named (a dict key), never called, never built
ENUM = "enum"  # Enum(value) by REDUCE on one literal of the member's value type, never NEWOBJ, never BUILD
NEW_AND_BUILD = "new and build"  # NEWOBJ (cls.__new__ alone, no __init__), then a BUILD of its fields
NEW_ONLY = "new only"  # NEWOBJ, then its items (a dict subclass) or nothing: never BUILD
CALLED_ON_TEXT = "called on text"  # REDUCE on strings alone (a path's parts), never BUILD
CALLED = "called"  # any call: a constructor of a value from the value alone, under the rules `call_problem` has
# The enums read as inert, each with the type of its members' values (pickle writes a member as Enum(value)).
# pyannote.audio's core/task.py: Problem and Resolution are plain Enums of ints (Problem.MONO_LABEL_CLASSIFICATION
# = 1, Resolution.FRAME = 1).
ENUM_VALUE_TYPES: dict[str, type] = {
    **dict.fromkeys(TRAINING_ENUMS, str),
    "pyannote.audio.core.task.Problem": int, "pyannote.audio.core.task.Resolution": int,
}
_PATHS = frozenset(n for n in INERT_GLOBALS if n.startswith("pathlib."))
_ATTRIBUTE_DICTS = frozenset(n for n in INERT_GLOBALS if n.endswith(".AttributeDict"))
_MODEL_CHECKPOINTS = frozenset(n for n in INERT_GLOBALS if n.endswith(".ModelCheckpoint"))
INERT_CONSTRUCTION: dict[str, str] = {
    # Lightning 1.x keys a checkpoint's callbacks by the class. Built, ModelCheckpoint.__init__ opens the file system
    # its dirpath names (fsspec's get_filesystem: a URL's remote one) and resolves that path on disk
    # (os.path.realpath), per Lightning's callbacks/model_checkpoint.py (`__init_ckpt_dir`).
    **dict.fromkeys(_MODEL_CHECKPOINTS, CLASS_ONLY),
    **dict.fromkeys(ENUM_VALUE_TYPES, ENUM),
    # Dataclasses and plain classes without __reduce__ (Namespace, pyannote's Specifications, mmengine's
    # HistoryBuffer, omegaconf's containers, nodes and metadata, which define __getstate__ / __setstate__; UUID's
    # __setstate__ of {"int": n}): NEWOBJ, then BUILD. Each takes object.__new__ (none defines its own).
    **dict.fromkeys(BUILT_BY_NEW | {
        "argparse.Namespace", "pyannote.audio.core.task.Specifications",
        "mmengine.logging.history_buffer.HistoryBuffer", "uuid.UUID",
        *(n for n in INERT_GLOBALS if n.startswith("omegaconf."))}, NEW_AND_BUILD),
    # Lightning's AttributeDict answers getattr from its items (`__getattr__` returns self[key], lightning_fabric's
    # utilities/data.py): a BUILD on one looked up `__setstate__` among them and called what it found with the state.
    # torch.__version__ is a str subclass, NEWOBJ of its text.
    **dict.fromkeys(_ATTRIBUTE_DICTS | {"torch.torch_version.TorchVersion"}, NEW_ONLY),
    **dict.fromkeys(_PATHS, CALLED_ON_TEXT),
    # C constructors of a value from the value alone: SimpleNamespace(), then BUILD of its attributes; datetime's from
    # its bytes; Decimal and Fraction under their own rules below; io.BytesIO(data) copies a buffer (pickle writes
    # NEWOBJ and BUILD; a call holding a pickle is scanned as one, see pytorch_format's `_buffers_in`).
    **dict.fromkeys({"types.SimpleNamespace", "decimal.Decimal", "fractions.Fraction", "_io.BytesIO", "io.BytesIO",
                     *(n for n in INERT_GLOBALS if n.startswith("datetime."))}, CALLED),
}
# Values pickle writes as a call alone, never followed by a BUILD: Fraction keeps its numbers in __slots__, and a BUILD
# of (None, {"_numerator": "x"}) on Fraction(1, 3) made a Fraction whose numerator is a string.
_CALLED_NEVER_BUILT = frozenset({"decimal.Decimal", "fractions.Fraction",
                                 *(n for n in INERT_GLOBALS if n.startswith("datetime."))})
# The inert classes whose instances a genuine file never BUILDs: a BUILD on what a call to one returns is refused.
NEVER_BUILT: frozenset[str] = frozenset(
    name for name, how in INERT_CONSTRUCTION.items() if how in (CLASS_ONLY, ENUM, NEW_ONLY, CALLED_ON_TEXT)
) | _CALLED_NEVER_BUILT
# The inert classes a genuine file builds by NEWOBJ and a BUILD of a dict (their __dict__ or __getstate__): a BUILD on
# one is judged by `build_problem`.
BUILT_FROM_DICT: frozenset[str] = frozenset(name for name, how in INERT_CONSTRUCTION.items() if how == NEW_AND_BUILD)

# Pickle's protocols 0 and 1 (torch.save(..., pickle_protocol=0 or 1), Python 2's files) write an object without
# its own __reduce__ as copyreg._reduce_ex does: REDUCE of copyreg._reconstructor(cls, base, state), where base is
# the first built-in class of cls's MRO and state is base(obj) (None for object); a BUILD of its fields follows. The
# function runs base.__new__(cls, state) and, unless base.__init__ is object's, base.__init__(obj, state): of any class
# the pickle names, a call of its constructor. It is read here only as a genuine file writes it, for an inert class
# (`RECONSTRUCTED_BASES`), and only where the pickle uses it and its bases for nothing else (`reconstruction_vouched`).
RECONSTRUCTOR: frozenset[str] = frozenset({"copyreg._reconstructor", "copy_reg._reconstructor"})
# The base of each inert class _reduce_ex finds, with the state it writes: object (state None) for the classes built
# by NEWOBJ and a BUILD of their fields; dict (state: their items, a dict) for Lightning's AttributeDict, a dict
# subclass; str (state: its text) for torch.__version__, a str subclass.
RECONSTRUCTED_BASES: dict[str, str] = {
    **{name: "builtins.object" for name, how in INERT_CONSTRUCTION.items() if how == NEW_AND_BUILD},
    **dict.fromkeys(_ATTRIBUTE_DICTS, "builtins.dict"), "torch.torch_version.TorchVersion": "builtins.str",
}
# Every text a pickle may write for _reconstructor or a base (Python 2's copy_reg and __builtin__ included): the walk
# counts how often each is pushed (`opcodes.PickleWalk.pushed`).
# Protocols 0 and 1 write str as Python 2's `__builtin__.unicode` (`_compat_pickle`'s mapping back), which loads as str.
RECONSTRUCTION_GLOBALS: frozenset[str] = frozenset(
    {*RECONSTRUCTOR, *RECONSTRUCTED_BASES.values(), *(f"__builtin__.{base.partition('.')[2]}"
                                                      for base in RECONSTRUCTED_BASES.values()),
     *(f"{m}.{n}" for (m, n), loaded in _compat_pickle.NAME_MAPPING.items()
       if f"{loaded[0]}.{loaded[1]}" in RECONSTRUCTED_BASES.values())})


def reconstruction_vouched(pushed: dict[str, int], approved: list[tuple[str, str | None]]) -> frozenset[str]:
    """The names of `RECONSTRUCTION_GLOBALS` read as inert stand-ins in one pickle: each one every use of which is an
    approved call (`approved`: the argument tuples of the REDUCEs of _reconstructor that `call_problem` passed). A name
    pushed more often than those calls consume it (kept in a list, passed to another call, left in the value) stays
    what `classify` says: copyreg's functions and `object` are dangerous.

    Example:
        >>> vouched = reconstruction_vouched({"copy_reg._reconstructor": 1, "__builtin__.object": 1},
        ...                                  [("copy_reg._reconstructor", "__builtin__.object")])
        >>> sorted(vouched)
        ['__builtin__.object', 'copy_reg._reconstructor']

    Args:
        pushed: how often the walk pushed each name (a value that holds it counts too), by the text it was written as.
        approved: per approved call, (callee as written, base as written).
    """
    if "<uncounted>" in pushed:  # opcodes.UNCOUNTED: a value too large to look into held one of them
        return frozenset()
    consumed: dict[str, int] = {}
    for callee, base in approved:
        for name in (callee, base):
            if name is not None:
                consumed[name] = consumed.get(name, 0) + 1
    return frozenset(name for name, count in pushed.items() if count > 0 and consumed.get(name) == count)


# The types omegaconf's node metadata names as values (`ref_type=typing.Any`, `object_type=dict`, a resolver
# cache `defaultdict(dict)`): unknown alone, read as inert stand-ins in a pickle that holds omegaconf
# containers (a real Hydra / NeMo / Lightning checkpoint names them all). See `inert_in_context`.
OMEGACONF_TYPE_GLOBALS: frozenset[str] = frozenset({
    "typing.Any", "builtins.dict", "builtins.list", "builtins.tuple", "builtins.set", "builtins.int",
    "builtins.float", "builtins.str", "builtins.bool", "builtins.bytes", "builtins.object",
    "collections.defaultdict",
})
# Those of them read as inert by context alone (typing.Any, and built-ins `classify` calls unknown), in each form a
# pickle may write them: omegaconf's pickles name them as values and never call them. Called, each runs on what the
# pickle chose: builtins.dict(<a DictConfig>) resolved its ${oc.env:NAME} interpolations under
# torch.load(weights_only=False), reading the environment into the loaded value, and str(data, "punycode") decodes in
# time that grows with the square of the data (a 200 KB file: 22 s of torch.load). See `call_problem`.
_NAMED_TYPES = frozenset({"typing.Any", *(f"builtins.{n}" for n in ("dict", "list", "tuple", "int", "float", "str",
                                                                     "bool"))})
NAMED_TYPE_FORMS: frozenset[str] = frozenset(
    {*_NAMED_TYPES, *(f"__builtin__.{n.partition('.')[2]}" for n in _NAMED_TYPES if n.startswith("builtins.")),
     *(f"{m}.{n}" for (m, n), loaded in _compat_pickle.NAME_MAPPING.items() if ".".join(loaded) in _NAMED_TYPES)})
# The factories a genuine defaultdict holds (omegaconf's resolver cache is defaultdict(dict)): built-in containers and
# numbers, made from nothing. Any other is called on each missing key after the load (omegaconf's cached resolvers look
# their cache up by name): defaultdict(accelerate.state.PartialState) passed the scan as safe.
_DEFAULT_FACTORIES = frozenset({"builtins.dict", "builtins.list", "builtins.tuple", "builtins.set", "builtins.int",
                                "builtins.float", "builtins.str", "builtins.bool", "builtins.bytes"})


def inert_in_context(module: str, name: str, others: Iterable[tuple[str, str]]) -> bool:
    """Whether (module, name), unknown alone, is read as an inert stand-in beside `others`, the globals of the
    same pickle: one of omegaconf's metadata types where omegaconf containers are (which are inert).

    Example:
        >>> inert_in_context("typing", "Any", [("omegaconf.dictconfig", "DictConfig")])
        True
        >>> inert_in_context("typing", "Any", [("collections", "OrderedDict")])
        False
    """
    if not any(f"{m}.{n}" in OMEGACONF_TYPE_GLOBALS for m, n in _normalise(module, name)):
        return False
    return any(m.startswith("omegaconf.") and f"{m}.{n}" in INERT_GLOBALS for m, n in others)


# Generated from torch._weights_only_unpickler._get_allowed_globals() (torch 2.13);
# tests/hostile/test_policy.py checks that it still covers the installed torch's list.
TORCH_WEIGHTS_ONLY_GLOBALS: frozenset[str] = frozenset({
    "_codecs.encode", "builtins.bytearray", "builtins.complex", "builtins.set", "collections.Counter",
    "collections.OrderedDict", "torch.BFloat16Storage", "torch.BFloat16Tensor", "torch.BoolStorage",
    "torch.BoolTensor", "torch.ByteStorage", "torch.ByteTensor", "torch.CharStorage", "torch.CharTensor",
    "torch.ComplexDoubleStorage", "torch.ComplexFloatStorage", "torch.DoubleStorage", "torch.DoubleTensor",
    "torch.FloatStorage", "torch.FloatTensor", "torch.HalfStorage", "torch.HalfTensor", "torch.IntStorage",
    "torch.IntTensor", "torch.LongStorage", "torch.LongTensor", "torch.QInt32Storage", "torch.QInt8Storage",
    "torch.QUInt2x4Storage", "torch.QUInt4x2Storage", "torch.QUInt8Storage", "torch.ShortStorage",
    "torch.ShortTensor", "torch.Size", "torch.Tensor", "torch._tensor._rebuild_from_type_v2",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor", "torch._utils._rebuild_device_tensor_from_numpy",
    "torch._utils._rebuild_meta_tensor_no_storage", "torch._utils._rebuild_nested_tensor",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state", "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor", "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3", "torch._utils._rebuild_wrapper_subclass", "torch.bfloat16", "torch.bits16",
    "torch.bits1x8", "torch.bits2x4", "torch.bits4x2", "torch.bits8", "torch.bool", "torch.complex128",
    "torch.complex32", "torch.complex64", "torch.cuda.BFloat16Storage", "torch.cuda.BFloat16Tensor",
    "torch.cuda.BoolStorage", "torch.cuda.BoolTensor", "torch.cuda.ByteStorage", "torch.cuda.ByteTensor",
    "torch.cuda.CharStorage", "torch.cuda.CharTensor", "torch.cuda.ComplexDoubleStorage",
    "torch.cuda.ComplexFloatStorage", "torch.cuda.DoubleStorage", "torch.cuda.DoubleTensor",
    "torch.cuda.FloatStorage", "torch.cuda.FloatTensor", "torch.cuda.HalfStorage", "torch.cuda.HalfTensor",
    "torch.cuda.IntStorage", "torch.cuda.IntTensor", "torch.cuda.LongStorage", "torch.cuda.LongTensor",
    "torch.cuda.ShortStorage", "torch.cuda.ShortTensor", "torch.cuda.sparse.BFloat16Tensor",
    "torch.cuda.sparse.ByteTensor", "torch.cuda.sparse.CharTensor", "torch.cuda.sparse.DoubleTensor",
    "torch.cuda.sparse.FloatTensor", "torch.cuda.sparse.HalfTensor", "torch.cuda.sparse.IntTensor",
    "torch.cuda.sparse.LongTensor", "torch.cuda.sparse.ShortTensor", "torch.device", "torch.float16", "torch.float32",
    "torch.float4_e2m1fn_x2", "torch.float64", "torch.float8_e4m3fn", "torch.float8_e4m3fnuz", "torch.float8_e5m2",
    "torch.float8_e5m2fnuz", "torch.float8_e8m0fnu", "torch.int1", "torch.int16", "torch.int2", "torch.int3",
    "torch.int32", "torch.int4", "torch.int5", "torch.int6", "torch.int64", "torch.int7", "torch.int8",
    "torch.nn.parameter.Parameter", "torch.per_channel_affine", "torch.per_channel_affine_float_qparams",
    "torch.per_channel_symmetric", "torch.per_tensor_affine", "torch.per_tensor_symmetric", "torch.qint32",
    "torch.qint8", "torch.quint2x4", "torch.quint4x2", "torch.quint8", "torch.serialization._get_layout",
    "torch.sparse.BFloat16Tensor", "torch.sparse.ByteTensor", "torch.sparse.CharTensor", "torch.sparse.DoubleTensor",
    "torch.sparse.FloatTensor", "torch.sparse.HalfTensor", "torch.sparse.IntTensor", "torch.sparse.LongTensor",
    "torch.sparse.ShortTensor", "torch.storage.TypedStorage", "torch.storage.UntypedStorage", "torch.uint1",
    "torch.uint16", "torch.uint2", "torch.uint3", "torch.uint32", "torch.uint4", "torch.uint5", "torch.uint6",
    "torch.uint64", "torch.uint7", "torch.uint8",
})

# What later torch releases add to that list, with the first release that allows each: a dtype torch 2.14 added
# (a pair of bfloat16s) is a name torch.save writes and weights_only loads there, and data anywhere. Safe under any
# torch (an older one only fails to find it); tests/test_compat_torch214.py asks the installed torch of each.
LATER_TORCH_WEIGHTS_ONLY_GLOBALS: dict[str, str] = {"torch.bcomplex32": "2.14"}


def later_torch_note(qualified: Iterable[str]) -> str | None:
    """What a safe verdict leaves unsaid where a pickle names globals only a later torch has and the installed torch
    is older: its torch.load fails on the file (its weights_only loader does not know the name). None otherwise.

    Example:
        >>> later_torch_note(["torch._utils._rebuild_tensor_v2", "torch.float16"]) is None
        True
    """
    named = sorted({q for q in qualified if q in LATER_TORCH_WEIGHTS_ONLY_GLOBALS})
    if not named:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("torch")
    except PackageNotFoundError:
        return None
    have = tuple(int(p) if p.isdigit() else 0 for p in installed.split("+")[0].split(".")[:2])
    later = [q for q in named if have < tuple(int(p) for p in LATER_TORCH_WEIGHTS_ONLY_GLOBALS[q].split("."))]
    if not later:
        return None
    since = ", ".join(f"{q} (torch {LATER_TORCH_WEIGHTS_ONLY_GLOBALS[q]} on)" for q in later)
    return (f"torch's weights_only loader allows {since}, but the installed torch {installed} does not have "
            f"{'it' if len(later) == 1 else 'them'}: its torch.load fails on the file")


# numpy arrays and scalars, as torch's documentation allowlists them for weights_only loads.
NUMPY_GLOBALS: frozenset[str] = frozenset({
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.ndarray", "numpy.dtype",
    # protocol 5 rebuilds arrays from a buffer: data only, no code
    "numpy._core.numeric._frombuffer", "numpy.core.numeric._frombuffer",
})
_NUMPY_DTYPE_CLASS = re.compile(r"^numpy\.dtypes\.[A-Z][A-Za-z0-9]*DType$")
# Plain pickles of protocols 0-2 write an empty bytes object as a call to `bytes()`; numpy writes an empty
# array's data that way. Calls with a size are refused (see `call_problem`).
# Plain Python values pickle writes as a call of their own built-in type, each made from what the call holds and
# running nothing of the pickle's choosing: frozenset([items]) (protocols 0 to 3; 4 has FROZENSET), slice(start,
# stop, step), deque((), maxlen) and APPENDs of its items. A Lightning module's save_hyperparameters(), a script's
# config or a training state may hold them; torch's weights_only loader refuses them. Read only as pickle writes them
# (`_plain_value_problem`): frozenset or deque called on anything but a list or tuple iterates it (an enum class's
# metaclass __iter__). Not range: range(10**12) is three numbers that set(), Counter() or torch.Size() would each
# turn into memory without bound.
PLAIN_VALUE_TYPES: frozenset[str] = frozenset({"builtins.frozenset", "builtins.slice", "collections.deque"})
PLAIN_PICKLE_GLOBALS: frozenset[str] = frozenset({"builtins.bytes", *PLAIN_VALUE_TYPES})
# The containers pickle writes as a call on a list of their items (or pairs), each made for that call alone: set,
# frozenset, deque, Counter and OrderedDict. Each such call copies every item of the list, so a list the pickle
# fetches again from its memo and hands to one call after another makes memory the file does not hold: one list of
# 10,000 ints and 1,000 calls of set on it (a 59 KB file): a process that pickle.loads it peaks at 515 MB
# (`opcodes._walk` refuses it).
# bytearray, bytes, _codecs.encode and torch.Size copy what they are given too (pickle writes them as calls on text,
# bytes or a tuple made for them alone): _codecs.encode of one 10,000-character text fetched again 20,000 times (a
# 410 KB file) and bytes() of one 10,000-int list 20,000 times (200 KB) each peaked pickle.loads at 203 MB.
COPYING_CALLS: frozenset[str] = frozenset(
    {f"{m}.{n}" for name in ("builtins.set", "builtins.frozenset", "collections.deque", "collections.Counter",
                             "collections.OrderedDict", "builtins.bytearray", "builtins.bytes")
     for m, n in [tuple(name.rsplit(".", 1)), *((k for k, v in _compat_pickle.NAME_MAPPING.items()
                                                 if ".".join(v) == name))]}
    | {"__builtin__.set", "__builtin__.frozenset", "__builtin__.bytearray", "__builtin__.bytes", "torch.Size",
       "_codecs.encode"})
# Every text a pickle may write for them, as the walk and the reader see calls.
PLAIN_VALUE_FORMS: frozenset[str] = frozenset(
    {*PLAIN_VALUE_TYPES,
     *(f"__builtin__.{n.partition('.')[2]}" for n in PLAIN_VALUE_TYPES if n.startswith("builtins.")),
     *(f"{m}.{n}" for (m, n), loaded in _compat_pickle.NAME_MAPPING.items() if ".".join(loaded) in PLAIN_VALUE_TYPES)})

# Safe globals that, called with a size, make memory nothing fills: uninitialized bytes of this process would
# become weights (and be written out by convert). A weights file passes these classes as arguments (the array
# type to `_reconstruct`, a storage type inside a persistent id) and never calls them.
_ALLOCATING = re.compile(
    r"^(numpy\.ndarray|torch\.Tensor|torch\.(cuda\.|sparse\.|cuda\.sparse\.)?[A-Za-z0-9]+(Tensor|Storage)"
    r"|torch\.storage\.(Untyped|Typed)Storage)$"
)
_RECONSTRUCT = frozenset({"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct"})
_FROM_TYPE = "torch._tensor._rebuild_from_type_v2"
_ORDERED_DICT = "collections.OrderedDict"
# fractions.Fraction pickles as Fraction(numerator, denominator), two ints. Called with a string it parses an exponent
# and computes 10 ** exponent: Fraction("1e10000000") took 8 s of torch.load(weights_only=False), a 12-byte string with
# a longer exponent has no bound; Fraction(Decimal("1e10000000")) does the same. Its gcd of two ints grows with the
# square of their size (two ints of 4M bits: 18 s), so ints past this size are refused as well.
_FRACTION = "fractions.Fraction"
MAX_FRACTION_BITS = 1 << 16
# Python 3.10 and older pickle a Fraction as Fraction(str(self)): "n/d" or "n", digits only (no exponent, no point),
# which parses in time linear in its length; as many digits as MAX_FRACTION_BITS bits hold, and no more.
_FRACTION_TEXT = re.compile(r"-?[0-9]{1,19729}(/[0-9]{1,19729})?")
# decimal.Decimal pickles as Decimal(text). From an int it converts base 2 to base 10 in time that grows with the square
# of the int's size: Decimal of a 2M-bit int (a 251 KB file) took torch.load(weights_only=False) 7 s, of 4M bits 23 s.
_DECIMAL = "decimal.Decimal"
# numpy pickles a scalar as scalar(dtype, data). Without the data numpy makes one of zeros, of any size the dtype says:
# scalar(dtype("V1000000000")), a 1.7 KB file, took torch.load(weights_only=False) 2.2 GB of memory, each more call
# another GB.
_SCALAR = frozenset({"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"})
# Pickle's protocols 0-2 write bytes as _codecs.encode(text, "latin1") and a bytearray as bytearray(text, "latin-1"),
# always that codec. Other codecs cost what their input chooses: punycode of 8,000 distinct characters (a 23 KB file)
# took torch.load (weights_only False and True alike, and weightdoctor's own reader) 11 s, and that time grows faster
# than the square of the text.
_ENCODE = "_codecs.encode"
_PICKLE_ENCODINGS = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "iso_8859_1", "l1"})
# Every name whose calls `call_problem` judges, in each form a pickle may write it.
WATCHED_CALLS: frozenset[str] = frozenset(
    {n for n in TORCH_WEIGHTS_ONLY_GLOBALS | NUMPY_GLOBALS if _ALLOCATING.match(n)}
    | _RECONSTRUCT | {_FROM_TYPE, "builtins.bytearray", "__builtin__.bytearray", "builtins.bytes", "__builtin__.bytes"}
    | {_FRACTION, _ENCODE, _DECIMAL} | _SCALAR
    | {"numpy.dtype"}  # its BUILD states, judged by `build_problem`
    | frozenset(INERT_CONSTRUCTION) | {"collections.defaultdict", _ORDERED_DICT} | RECONSTRUCTOR | NAMED_TYPE_FORMS
    | PLAIN_VALUE_FORMS
)
# The flags a structured dtype's state may hold (numpy's NPY_FROM_FIELDS, NPY_NEEDS_PYAPI, NPY_ALIGNED_STRUCT): what
# its fields pass on. Never NPY_ITEM_IS_POINTER (0x4), NPY_USE_GETITEM (0x20), NPY_USE_SETITEM (0x40).
_STRUCTURED_FLAGS = 0x1B | 0x10 | 0x80

# Whole modules (and their submodules) that give code execution, processes, files, network or imports.
DANGEROUS_MODULES: frozenset[str] = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "runpy", "socket", "shutil", "pty", "pickle", "_pickle",
    "cPickle", "pdb", "bdb", "ctypes", "_ctypes", "importlib", "imp", "zipimport", "pkgutil", "webbrowser",
    "requests", "httplib", "http", "urllib", "urllib2", "urllib3", "aiohttp", "httpx", "ftplib", "telnetlib",
    "smtplib", "poplib", "imaplib", "nntplib", "xmlrpc", "asyncio", "multiprocessing", "concurrent",
    "threading", "_thread", "signal", "code", "codeop", "marshal", "io", "_io", "tempfile", "glob",
    "fileinput", "commands", "popen2", "platform", "timeit", "trace", "profile",
    "cProfile", "doctest", "pydoc", "site", "ensurepip", "venv", "pip", "distutils", "setuptools",
    "dill", "cloudpickle", "joblib", "shelve", "dbm", "sqlite3", "ssl", "select", "selectors",
    "mmap", "resource", "fcntl", "termios", "tty", "pwd", "grp", "uuid", "_osx_support", "_aix_support",
    "idlelib", "tkinter", "turtle", "sh", "pexpect", "paramiko", "fabric", "IPython", "jinja2", "mako",
    "yaml", "numexpr", "pandas.io", "torch.hub", "torch.jit", "torch.package", "torch.utils.cpp_extension",
    "torch._inductor", "torch._dynamo", "torch.compiler", "torch.ops", "torch.classes",
    "torch.distributed.rpc", "logging.config", "linecache", "inspect", "gc", "copyreg", "copy_reg",
})
# Single names in otherwise ordinary modules.
DANGEROUS_NAMES: frozenset[str] = frozenset({
    "builtins.eval", "builtins.exec", "builtins.compile", "builtins.getattr", "builtins.setattr",
    "builtins.delattr", "builtins.open", "builtins.__import__", "builtins.globals", "builtins.locals",
    "builtins.vars", "builtins.input", "builtins.breakpoint", "builtins.exit", "builtins.quit",
    "builtins.help", "builtins.type", "builtins.super", "builtins.object", "builtins.memoryview",
    "builtins.classmethod", "builtins.staticmethod", "builtins.property", "builtins.apply",
    "builtins.execfile", "builtins.reload", "builtins.file", "builtins.dir", "builtins.__build_class__",
    "builtins.__loader__", "builtins.__spec__",
    "functools.partial", "functools.partialmethod", "functools.reduce", "functools.singledispatch",
    "functools.wraps", "functools.update_wrapper", "_functools.partial", "_functools.reduce",
    "operator.attrgetter", "operator.methodcaller", "operator.itemgetter", "operator.getitem",
    "operator.setitem", "operator.delitem", "operator.call", "_operator.attrgetter", "_operator.methodcaller",
    "_operator.itemgetter", "_operator.getitem", "_operator.call",
    "numpy.testing._private.utils.runstring", "numpy.load", "numpy.lib.npyio.load", "numpy.fromfile",
    "numpy.f2py", "torch.load", "torch.serialization.load", "torch.serialization._legacy_load",
    "torch.storage._load_from_bytes", "torch._C._import_ir_module",
    "collections.namedtuple", "string.Formatter", "codecs.open", "zipfile.ZipFile", "tarfile.open",
    # code objects and the types that turn them into callables
    "types.CodeType", "types.FunctionType", "types.LambdaType", "types.MethodType", "types.ModuleType",
    "types.BuiltinFunctionType", "types.BuiltinMethodType", "types.new_class", "types.coroutine",
    "pathlib.Path.write_text", "pathlib.Path.write_bytes", "pathlib.Path.unlink", "pathlib.Path.open",
})
# Attribute names that walk from a harmless object to code, globals or the import system.
_DANGEROUS_ATTRIBUTE = re.compile(
    r"^__(globals|builtins|code|closure|subclasses|class|base|bases|mro|dict|getattribute|import|loader|"
    r"spec|reduce|reduce_ex|init|new|call|func|self|module|func_globals)__$"
)


def _normalise(module: str, name: str) -> list[tuple[str, str]]:
    """The names Python's unpickler may resolve (module, name) to: as written and after Python 2 renames."""
    forms = [(module, name)]
    if (module, name) in _compat_pickle.NAME_MAPPING:
        forms.append(_compat_pickle.NAME_MAPPING[(module, name)])
    elif module in _compat_pickle.IMPORT_MAPPING:
        forms.append((_compat_pickle.IMPORT_MAPPING[module], name))
    return forms


def normalised_names(qualified: str) -> list[str]:
    """`__builtin__.long` -> ["__builtin__.long", "builtins.int"]: each name an unpickler may look it up by."""
    module, _, name = qualified.rpartition(".")
    return list(dict.fromkeys(f"{m}.{n}" for m, n in _normalise(module, name)))


def _classify_one(module: str, name: str) -> str:
    full = f"{module}.{name}"
    if (full in TORCH_WEIGHTS_ONLY_GLOBALS or full in NUMPY_GLOBALS or full in PLAIN_PICKLE_GLOBALS
            or full in LATER_TORCH_WEIGHTS_ONLY_GLOBALS or _NUMPY_DTYPE_CLASS.match(full)):
        return SAFE
    if full in INERT_GLOBALS:
        return INERT
    parts = full.split(".")
    # Every prefix counts: `os.path.join` is in `os`, `builtins.eval` is a dangerous name.
    for cut in range(1, len(parts) + 1):
        prefix = ".".join(parts[:cut])
        if prefix in DANGEROUS_MODULES or prefix in DANGEROUS_NAMES:
            return DANGEROUS
    # A dotted name is an attribute walk (protocol 4 resolves it with getattr, piece by piece), so
    # module `torch.serialization` with name `os.system` reaches os.system: judge every piece too.
    for piece in name.split("."):
        if piece in DANGEROUS_MODULES or _DANGEROUS_ATTRIBUTE.match(piece) or f"builtins.{piece}" in DANGEROUS_NAMES:
            return DANGEROUS
    return UNKNOWN


def classify(module: str, name: str) -> str:
    """Classify one imported global as "safe", "inert" (read as a stand-in, never imported), "dangerous" or
    "unknown".

    Example:
        >>> classify("torch._utils", "_rebuild_tensor_v2"), classify("posix", "system"), classify("m", "C")
        ('safe', 'dangerous', 'unknown')

    A name is judged in every form the unpickler could resolve it to (Python 2 module names such as
    `__builtin__` are mapped as `pickle` maps them); the worst classification wins.
    """
    forms = _normalise(module, name)
    results = [_classify_one(m, n) for m, n in forms]
    if DANGEROUS in results:
        return DANGEROUS
    if all(r == SAFE for r in results):
        return SAFE
    if all(r == INERT for r in results):
        return INERT
    # `__builtin__.set` (every protocol-2 pickle of a set, complex or bytearray, e.g. DeepSpeed's model
    # states) is unknown as written, but no Python 3 module is called `__builtin__`: only its mapped form,
    # `builtins.set`, can ever be loaded, so that form decides.
    if len(forms) == 2 and results[1] == SAFE and not _importable(module):
        return SAFE
    return UNKNOWN


def _importable(module: str) -> bool:
    """Whether a module of this name exists here (searched for, never imported or run)."""
    import importlib.util

    top = module.partition(".")[0]
    try:
        return bool(top) and importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def call_problem(qualified: str, args: Any, name_of: Callable[[Any], str | None], opcode: str = "REDUCE") -> str | None:
    """Why a call a pickle makes to a safe or inert global is refused, or None when it is what weights files do.

    Safe globals can still make memory that nothing fills (`numpy.ndarray((1 << 30,), "f4")`,
    `torch.FloatStorage(n)`, `_reconstruct` with a shape but no BUILD) or huge zeroed buffers
    (`bytearray(1 << 40)`); `_rebuild_from_type_v2` calls whatever it is given.

    Example:
        >>> call_problem("builtins.bytearray", (1 << 40,), lambda value: None)
        'calls builtins.bytearray(1099511627776): a buffer sized by a number, which no pickled value needs'

    Args:
        qualified: the callee, `module.name` as the pickle writes it.
        args: the positional arguments as far as they are known (a tuple; anything else when not literal).
        name_of: the qualified global name an argument stands for, or None (statically a `GlobalImport`,
            at run time the object `find_class` returned).
        opcode: the opcode that makes the call: REDUCE calls `qualified(*args)`; NEWOBJ and NEWOBJ_EX call
            `qualified.__new__` alone; INST and OBJ call `qualified.__new__` alone when `args` is empty.
    """
    full = _loadable_name(qualified)
    if full in RECONSTRUCTOR:
        return _reconstructor_problem(full, args, name_of, opcode)
    how = INERT_CONSTRUCTION.get(full)
    if how is not None and how != CALLED:
        return _inert_call_problem(full, how, args, opcode)
    if full == _ORDERED_DICT:
        return _ordered_dict_problem(args, name_of)
    if full in PLAIN_VALUE_TYPES:
        return _plain_value_problem(full, args, name_of)
    if full == "collections.defaultdict":
        if opcode not in ("NEWOBJ", "NEWOBJ_EX") and not (isinstance(args, tuple) and len(args) <= 1):
            # defaultdict(factory, items) copies its items in (dict(items)): of one dict the memo fetched again,
            # 1,000 calls (a 104 KB file) peaked pickle.loads at 311 MB, and of an omegaconf DictConfig it resolved
            # ${oc.env:NAME}, reading the environment into the loaded value.
            return (f"calls {full}{_shown_args(args, name_of)}: a defaultdict's items are copied in from what "
                    "follows its factory (every key and value of a mapping, resolving an omegaconf DictConfig's "
                    "interpolations), where pickle writes defaultdict(factory) and sets its items one by one")
        factory = args[0] if isinstance(args, tuple) and args else None
        named = name_of(factory) if factory is not None else None
        if factory is None or (named is not None and _loadable_name(named) in _DEFAULT_FACTORIES):
            return None
        return (f"makes a defaultdict whose factory is {named or shown(factory)}: called on every missing key after "
                "the load, where a genuine one holds a built-in container or number (omegaconf's resolver cache is "
                "defaultdict(dict))")
    if full in _NAMED_TYPES:
        return (f"calls {full}{_shown_args(args, name_of)}: a checkpoint names this type as a value (omegaconf's "
                "metadata, the base copyreg._reconstructor is given) and never calls it; called, it runs on what the "
                "pickle chose (dict of a DictConfig resolves its ${oc.env:...} interpolations, reading the "
                "environment; str(data, 'punycode') takes time that grows with the square of the data)")
    if _ALLOCATING.match(full):
        return (f"calls {full} directly: memory nothing fills (a weights file passes the class as an argument, "
                "never calls it)")
    first = args[0] if isinstance(args, tuple) and args else None
    if full in ("builtins.bytearray", "builtins.bytes"):
        if isinstance(first, int):
            return f"calls {full}({shown(first)}): a buffer sized by a number, which no pickled value needs"
        if isinstance(args, tuple) and len(args) >= 2:
            # bytearray(text, encoding) runs the codec, as _codecs.encode does; pickle writes (text, "latin-1").
            encoding = args[1]
            if len(args) > 2 or not isinstance(encoding, str) or encoding.lower() not in _PICKLE_ENCODINGS:
                return (f"calls {full} with encoding {shown(encoding)}: pickle writes one as {full}(text, 'latin-1'), "
                        "and other codecs cost what their input chooses (punycode of a 23 KB file: 11 s)")
        return None
    if full in _RECONSTRUCT:
        shape = args[1] if isinstance(args, tuple) and len(args) >= 2 else None
        if shape != (0,):
            # numpy pickles every array as _reconstruct(ndarray, (0,), b"b") and then sets its data (BUILD).
            return f"calls {full} with shape {shown(shape)}: an array of memory nothing fills (numpy writes shape (0,))"
        return None
    if full == _FRACTION:
        return _fraction_problem(args)
    if full in _SCALAR and not (isinstance(args, tuple) and len(args) == 2):
        return (f"calls {full} with {shown(args) if isinstance(args, tuple) else 'arguments the scan cannot read'}: "
                "numpy pickles a scalar as scalar(dtype, data), and without the data it makes zeros of any size "
                "the dtype says")
    if full == _DECIMAL and not (isinstance(args, tuple) and len(args) == 1 and isinstance(first, str)):
        return (f"calls {full}{shown(args) if isinstance(args, tuple) else ' with arguments the scan cannot read'}: "
                "pickle writes a Decimal as Decimal(text), and from a large int it takes time that grows with the "
                "square of its size")
    if full == _ENCODE:
        encoding = args[1] if isinstance(args, tuple) and len(args) == 2 else None
        if isinstance(encoding, str) and encoding.lower() in _PICKLE_ENCODINGS:
            return None
        said = f"with encoding {shown(encoding)}" if encoding is not None else f"with arguments {shown(args)}"
        return (f"calls {full} {said}: pickle writes bytes as {full}(text, 'latin1'), and other codecs cost what "
                "their input chooses (punycode of a 23 KB file: 11 s)")
    if full == _FROM_TYPE:
        func = name_of(first)
        if func is None or not func.startswith("torch._utils._rebuild_"):
            return f"calls {func or 'a value'} through {full}, which torch only ever gives its own tensor rebuilds"
    return None


def _inert_call_problem(full: str, how: str, args: Any, opcode: str) -> str | None:
    """Why a call to an inert class is refused, or None when it is how a genuine file builds one (`how`, its
    `INERT_CONSTRUCTION`)."""
    said = shown(args) if isinstance(args, tuple) else " with arguments the scan cannot read"
    new_alone = opcode in ("NEWOBJ", "NEWOBJ_EX") or (opcode in ("INST", "OBJ") and args == ())
    if how == CLASS_ONLY:
        return (f"calls {full}{said} by {opcode}: a checkpoint names this class only (Lightning 1.x keys its callbacks "
                "by it) and never builds one; its __init__ opens the file system its dirpath names and resolves that "
                "path on disk")
    if how in (NEW_AND_BUILD, NEW_ONLY):
        if new_alone:
            return None  # cls.__new__ alone: no __init__, no __post_init__
        if full in BUILT_BY_NEW:
            return (f"calls {full}{said}: that runs its __init__ (TrainingArguments' __post_init__ and PartialState "
                    "initialize accelerate and torch.distributed, set environment variables and read the files its "
                    "fields name; DeepSpeed's configs read the JSON file a path names), where pickle builds one by "
                    "NEWOBJ and sets its fields (BUILD)")
        return (f"calls {full}{said} by {opcode}: that runs its __init__, where pickle builds one by NEWOBJ "
                "(cls.__new__ alone) and then sets its fields or items")
    if how == CALLED_ON_TEXT:
        if opcode == "REDUCE" and isinstance(args, tuple) and all(type(a) is str for a in args):
            return None
        return (f"calls {full}{said} by {opcode}: pickle writes a path as {full}(*parts), REDUCE on strings alone")
    value_type = ENUM_VALUE_TYPES.get(full, str)
    if (opcode not in ("NEWOBJ", "NEWOBJ_EX") and isinstance(args, tuple) and len(args) == 1
            and type(args[0]) is value_type):
        return None
    return (f"calls {full}{said} by {opcode}: pickle writes an enum member as {full}(value), one "
            f"{'string' if value_type is str else value_type.__name__}, and other calls reach Enum's functional API "
            "or the member's __new__")


def _ordered_dict_problem(args: Any, name_of: Callable[[Any], str | None]) -> str | None:
    """Why a call to collections.OrderedDict is refused, or None when it is what a pickler writes: OrderedDict() and
    its items (Python 3's __reduce__), or OrderedDict(items), one list of [key, value] pairs (Python 2's)."""
    if args == () or (isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], (list, tuple))
                      and all(isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in args[0])):
        return None
    first = args[0] if isinstance(args, tuple) and args else None
    named = name_of(first) if first is not None else None
    said = named if named is not None else shown(args) if isinstance(args, tuple) else "arguments the scan cannot read"
    if named is None and isinstance(args, tuple) and len(args) == 1 and isinstance(first, (list, tuple)):
        at, item = next((at, item) for at, item in enumerate(first)
                        if not (isinstance(item, (list, tuple)) and len(item) == 2))
        said = f"a list whose item {at} is {name_of(item) or shown(item)}, not a [key, value] pair"
    return (f"calls {_ORDERED_DICT} on {said}: pickle writes an OrderedDict as OrderedDict() and its items "
            "(Python 2 as OrderedDict of a list of [key, value] pairs), and a call on anything else iterates it, "
            "running its __iter__ (an enum class's, of its metaclass) while the file loads")


def _plain_value_problem(full: str, args: Any, name_of: Callable[[Any], str | None]) -> str | None:
    """Why a call to one of `PLAIN_VALUE_TYPES` is refused, or None when it is how pickle writes the value: frozenset()
    or frozenset(list), slice of one to three values, deque() or deque(list or tuple, maxlen) with maxlen an int or
    None.

    Example:
        >>> _plain_value_problem("builtins.slice", (0, 10, 2), lambda value: None) is None
        True
    """
    said = _shown_args(args, name_of)
    if not isinstance(args, tuple):
        return f"calls {full}{said}: the scan cannot read its arguments, and pickle writes them as literals"
    sequence = len(args) >= 1 and type(args[0]) in (list, tuple)
    fits = {
        "builtins.frozenset": args == () or (len(args) == 1 and sequence),
        "builtins.slice": 1 <= len(args) <= 3,
        "collections.deque": args == () or (sequence and (len(args) == 1 or (
            len(args) == 2 and (args[1] is None or type(args[1]) is int)))),
    }[full]
    if fits:
        return None
    written = {"builtins.frozenset": "frozenset(list of its items)", "builtins.slice": "slice(start, stop, step)",
               "collections.deque": "deque((), maxlen) and its items appended"}[full]
    return (f"calls {full}{said}: pickle writes one as {written}, and a call on anything else iterates "
            "what it holds while the file loads (an enum class's members, by its metaclass's __iter__)")


def _reconstructor_problem(full: str, args: Any, name_of: Callable[[Any], str | None], opcode: str) -> str | None:
    """Why a call to copyreg._reconstructor is refused, or None when it is what protocols 0 and 1 write for an inert
    class: REDUCE of (cls, base, state) with cls's own base (`RECONSTRUCTED_BASES`) and state of that base's kind."""
    from weightdoctor.security.opcodes import OpaqueDict

    said = _shown_args(args, name_of)
    written = ("pickle's protocols 0 and 1 write it as _reconstructor(cls, object, None) for a class built from its "
               "fields (its dict or str subclass on dict or str and the items or text), and other arguments run "
               "base.__new__(cls, state) and base.__init__(obj, state) of any class the pickle names")
    if opcode != "REDUCE" or not isinstance(args, tuple) or len(args) != 3:
        return f"calls {full}{said} by {opcode}: {written}"
    cls_name, base_name = name_of(args[0]), name_of(args[1])
    cls = _loadable_name(cls_name) if cls_name is not None else None
    expected = RECONSTRUCTED_BASES.get(cls) if cls is not None else None
    if expected is None:
        return (f"calls {full} to build {cls or shown(args[0])}, not a class read as inert data built from its fields: "
                f"{written}")
    base = _loadable_name(base_name) if base_name is not None else None
    state = args[2]
    fits = {"builtins.object": state is None, "builtins.dict": state.__class__ is OpaqueDict or type(state) is dict,
            "builtins.str": type(state) is str}[expected]
    if base != expected or not fits:
        return (f"calls {full} to build {cls} on {base or shown(args[1])} with state {shown(state)}, where pickle "
                f"writes it on {expected} with {_STATE_OF[expected]}: {written}")
    return None


_STATE_OF = {"builtins.object": "state None", "builtins.dict": "its items (a dict)", "builtins.str": "its text"}


def _shown_args(args: Any, name_of: Callable[[Any], str | None]) -> str:
    """A call's arguments for a message, each global by its name (`(argparse.Namespace, None)`), bounded as `shown`."""
    if not isinstance(args, tuple):
        return " with arguments the scan cannot read"
    items = [name_of(a) or shown(a) for a in args[:8]]
    return f"({', '.join(items)}{', ...' if len(args) > 8 else ''}{',' if len(args) == 1 else ''})"


def _fraction_problem(args: Any) -> str | None:
    """Why a call to fractions.Fraction is refused, or None when it is what pickle writes: one or two literal ints of
    at most `MAX_FRACTION_BITS` bits (a Fraction's numerator and denominator), or, as Python 3.10 and older write it,
    one text "n/d" of digits."""
    if isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], str) and _FRACTION_TEXT.fullmatch(args[0]):
        return None
    if (not isinstance(args, tuple) or not 1 <= len(args) <= 2
            or not all(isinstance(a, int) and not isinstance(a, bool) for a in args)):
        return (f"calls {_FRACTION}{shown(args) if isinstance(args, tuple) else ' with arguments the scan cannot read'}"
                ": pickle writes a Fraction as two ints (or, before Python 3.11, as the text n/d), and from other text "
                "or a Decimal it computes 10 ** exponent "
                "(time and memory without bound)")
    widest = max(a.bit_length() for a in args)
    if widest > MAX_FRACTION_BITS:
        return (f"calls {_FRACTION} with an integer of {widest:,} bits (more than {MAX_FRACTION_BITS:,}): "
                "reducing it takes time that grows with the square of its size")
    return None


def build_problem(qualified: str, made_args: Any, state: Any) -> str | None:
    """Why a BUILD that sets the state of a numpy dtype the pickle made is refused, or None when its flags are those
    numpy gives the dtype it describes. A BUILD on what a call to one of `NEVER_BUILT` returns is refused whatever its
    state: `OptimizerNames("adamw_torch")` returns transformers' own member, and a BUILD of {"_value_": "sgd"} rewrote
    it for the whole process (torch.load(weights_only=False)), where pickle writes an enum member as a call alone; a
    BUILD on a Lightning AttributeDict called the item it holds under `__setstate__`.

    numpy's `dtype.__setstate__` takes the flags from the state as they are, and numpy then trusts them for how it
    reads memory: a void dtype of 8 bytes given NPY_USE_GETITEM made `numpy.core.multiarray.scalar(dtype, bytes)`
    crash the process (a segmentation fault: Python's pickle.load, torch.load, weightdoctor's own reader), from a
    pickle of nothing but globals torch's documentation allowlists. numpy writes the flags of the dtype itself.

    Example:
        >>> build_problem("numpy.dtype", ("V8", False, True), (3, "|", None, None, None, 8, 1, 32))[:58]
        'sets the flags of numpy.dtype V8 to 32 (0x20), where numpy'

    Args:
        qualified: the dtype's constructor, `module.name` as the pickle writes it.
        made_args: the arguments it was called with, as far as they are literals.
        state: the BUILD state, as far as it is literal.
    """
    from weightdoctor.security.opcodes import OpaqueDict, call_result

    how = INERT_CONSTRUCTION.get(_loadable_name(qualified))
    if how == NEW_AND_BUILD:
        if isinstance(state, OpaqueDict):
            return None
        # pickle sets a slot state attribute by attribute (setattr): {"__class__": X} made an argparse.Namespace an
        # instance of X, any class the pickle names (ModelCheckpoint, which a file names only, among them), whether
        # the pair is written out or returned by a call (builtins.tuple, a call omegaconf's pickles keep).
        said = ("a pair (its attributes, then attributes set one by one)" if isinstance(state, tuple)
                else "the result of a call" if call_result(state) else shown(state))
        return (f"sets the state of a {qualified} to {said}, where pickle writes its fields as one dict; the "
                "attributes of a slot state are set by setattr, which can set __class__ and turn the object into "
                "any class the pickle names")
    if how == ENUM:
        member = shown(made_args[0]) if isinstance(made_args, tuple) and made_args else "member"
        return (f"sets the state of the enum member {qualified}({member}): one object the whole process shares "
                "(the library's own), which BUILD would rewrite; pickle never sets an enum member's state")
    if how in (CLASS_ONLY, NEW_ONLY, CALLED_ON_TEXT) or qualified in _CALLED_NEVER_BUILT:
        why = (": an AttributeDict answers getattr from its items, so BUILD calls the item named __setstate__ with "
               "the state" if qualified in _ATTRIBUTE_DICTS else "")
        written = {CLASS_ONLY: "names the class alone", NEW_ONLY: "builds one by NEWOBJ and its items or value",
                   CALLED_ON_TEXT: "builds one by a call on its parts", CALLED: "builds one by a call alone"}[how]
        return f"sets the state of a {qualified}, which pickle never writes (it {written}){why}"
    if call_result(state) or isinstance(state, OpaqueDict):  # a call's result (or a dict): no pickler writes one, and
        # a tuple a call returns would be taken
        return f"sets the state of a {qualified} to the result of a call, which the scan cannot judge"
    if not isinstance(state, tuple) or len(state) < 8:
        return None  # numpy's older states (5 to 7 items) carry no flags; anything else numpy refuses
    flags, subarray, fields = state[7], state[2], state[4]
    if not isinstance(flags, int) or isinstance(flags, bool):
        return f"sets the flags of a {qualified} to {shown(flags)}, not a literal number the scan can judge"
    if fields is not None or subarray is not None:
        base = subarray[0] if isinstance(subarray, tuple) and subarray else None
        callee = getattr(base, "callee", None)  # the base dtype, made by the pickle (an `opcodes.Made`)
        natural = _natural_flags(f"{callee.module}.{callee.name}" if callee is not None else None,
                                 getattr(base, "args", None))
        # numpy 1.x writes the flags as a signed char: an aligned struct's 0x90 is -112 in its pickles. numpy 1.x
        # reads them back as that char (0x90), numpy 2 adds 128 (0x10): both readings must be flags of fields.
        readings = (flags & 0xFF, flags + 128) if -128 <= flags < 0 else (flags,)
        if all(reading & ~_STRUCTURED_FLAGS == 0 for reading in readings) or flags == natural:
            return None
        return (f"sets the flags of a structured or subarray {qualified} to {flags} ({flags:#x}), flags no dtype of "
                "fields has (numpy trusts them for how it reads memory)")
    natural = _natural_flags(qualified, made_args)
    if natural == flags:
        return None
    described = f" {shown(made_args[0]).strip(chr(39))}" if isinstance(made_args, tuple) and made_args else ""
    said = "no dtype numpy builds" if natural is None else f"{natural} ({natural:#x})"
    return (f"sets the flags of {qualified}{described} to {flags} ({flags:#x}), where numpy gives it "
            f"{said}: flags numpy trusts for how it reads memory")


def _natural_flags(qualified: str | None, args: Any) -> int | None:
    """The flags numpy gives the dtype `qualified(*args)` (literal arguments only), or None where it cannot say."""
    if qualified is None or not isinstance(args, tuple) or not all(isinstance(a, (str, bool, int)) for a in args):
        return None
    import numpy

    try:
        if qualified == "numpy.dtype":
            return int(numpy.dtype(*args).flags)
        cls = getattr(getattr(numpy, "dtypes", None), qualified.rpartition(".")[2], None)
        return int(cls(*args).flags) if isinstance(cls, type) and qualified.startswith("numpy.dtypes.") else None
    except Exception:  # numpy refuses these arguments: the pickle would fail there too
        return None


class _BoundedRepr(reprlib.Repr):
    """`reprlib`'s bounded repr, with integers of any size: a pickle's LONG4 can hold one of millions of digits,
    which `repr` refuses past 4,300 (ValueError)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxtuple, self.maxlist, self.maxstring, self.maxother = 3, 8, 8, 60, 60

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            return f"<an integer of {x.bit_length():,} bits>"
        return repr(x)


_BOUNDED = _BoundedRepr()


def shown(value: Any) -> str:
    """`repr(value)` for a message, bounded: a pickled value is anything its writer chose (a shape of two million
    dimensions, ten megabytes of text, a tuple nested 200,000 deep, an integer of 5,000 digits), and its full
    repr made a 10 MB error line, or failed (RecursionError, ValueError) instead of saying what was refused.

    Example:
        >>> shown(tuple(range(100)))
        '(0, 1, 2, 3, 4, 5, 6, 7, ...)'
    """
    try:
        return _BOUNDED.repr(value)
    except Exception:  # a value whose own __repr__ fails (objects RestrictedPickle built): said by its type
        return f"<a {type(value).__name__}>"


def _loadable_name(qualified: str) -> str:
    """The name Python 3 loads for `qualified` (`__builtin__.bytearray` is `builtins.bytearray`)."""
    module, _, name = qualified.rpartition(".")
    forms = _normalise(module, name)
    return ".".join(forms[-1])
