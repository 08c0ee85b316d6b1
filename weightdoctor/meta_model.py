"""Building a transformers model on the meta device from its config: structure without memory."""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightdoctor.errors import UsageError, clip_words
from weightdoctor.wording import plural

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig


# The names a config.json or --dtype may give a floating dtype in, as plan-devices' short names.
DTYPE_ALIASES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "half": "fp16", "float": "fp32",
                 "float64": "fp64", "double": "fp64"}


def auto_dtype_field(config: dict[str, Any]) -> str | None:
    """The field of one config dict that transformers reads as its dtype, where it is "auto", else None."""
    # transformers reads `torch_dtype` only where `dtype` is unset (None): a "torch_dtype": "auto" beside a real
    # "dtype" loads, and a "dtype": "auto" is not saved by a real "torch_dtype".
    field = "dtype" if config.get("dtype") is not None else "torch_dtype"
    return field if config.get(field) == "auto" else None


def unbuildable_dtype_field(config: dict[str, Any]) -> str | None:
    """The field a config's top level names its dtype in, where no model can be built in that value, else None.

    transformers' config turns a string into `getattr(torch, value)` and from_pretrained(dtype="auto") then builds
    the model in it: "float128" or "torch.float16" (no such attribute), "int8", "bool", "complex64" or
    "float8_e4m3fn" (no floating dtype a model is built in), a number or a list all fail, each with an error of its
    own; given a real dtype, from_pretrained replaces the field and loads (checked on transformers 5.25). A dict
    (a dtype per sub-config) is read as such, and "auto" has a warning of its own (`auto_dtype_field`).

    Example:
        >>> unbuildable_dtype_field({"torch_dtype": "float128"}), unbuildable_dtype_field({"dtype": "bfloat16"})
        ('torch_dtype', None)
    """
    field = "dtype" if config.get("dtype") is not None else "torch_dtype"
    value = config.get(field)
    if value is None or value == "auto" or isinstance(value, dict) or (isinstance(value, str)
                                                                        and value in DTYPE_ALIASES):
        return None
    return field


# transformers 5 writes the floats JSON has no literal for as `{"__float__": "Infinity"}` (Mamba2's
# `time_step_limit` is `[0.0, inf]`) and turns them back when it reads a config file; `for_model` does not.
_FLOAT_TAG_VALUES = {"Infinity": float("inf"), "-Infinity": float("-inf"), "NaN": float("nan")}


def decode_special_floats(value: Any) -> Any:
    """`value` (a parsed config.json) with transformers' tagged floats made floats again, as
    `PretrainedConfig.from_pretrained` reads them.

    Example:
        >>> decode_special_floats({"time_step_limit": [0.0, {"__float__": "Infinity"}]})
        {'time_step_limit': [0.0, inf]}
    """
    if isinstance(value, dict):
        tag = value.get("__float__") if len(value) == 1 else None
        if isinstance(tag, str) and tag in _FLOAT_TAG_VALUES:
            return _FLOAT_TAG_VALUES[tag]
        return {key: decode_special_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_special_floats(item) for item in value]
    return value


# The most values (keys and list entries, at any depth) of a config.json a model is built from. transformers sets
# every key as an attribute, validates each, and copies the config several times while building (~35 us a key
# here): a 19 MB config.json of 1,000,000 keys took diff-keys --model-class 35 s and 1.1 GB, plan-devices 33 s.
# The largest real configs hold some 44,000 (an ImageNet-21k classifier's id2label and label2id, 21,843 each).
MAX_CONFIG_VALUES = 200_000
# Keys of the config itself, and of each object in it that transformers builds or checks key by key (a sub-config:
# `text_config`, `encoder`; the quantization_config; the RoPE parameters, whose unknown keys it logs one by one),
# other than its label maps: each becomes an attribute, set and validated one by one (190,000 took plan-devices 7 s).
# Real ones hold some hundreds. Any other object is the value of one attribute (190,000 entries built in 0.2 s),
# bounded by MAX_CONFIG_VALUES alone: a timm ImageNet-21k classifier's label_descriptions holds 21,843 keys.
MAX_CONFIG_KEYS = 10_000
_LABEL_MAPS = ("id2label", "label2id")
# The labels of one of the config's (or a sub-config's) label maps, counted apart from MAX_CONFIG_VALUES: each map is
# the value of one attribute, its string labels no attribute of their own. A classifier of 100,000 classes (a 6 MB
# config.json) was refused as "more than 200,000 keys", where transformers builds it on the meta device in 1.7 s.
MAX_LABELS = 500_000
_ROPE_PARAMETERS = ("rope_scaling", "rope_parameters")


def _built_as_config(key: str, value: Any) -> bool:
    """Whether `config[key]` is an object transformers builds or checks key by key: a sub-config (a dict with a
    `model_type`, or under a `*_config` key: `text_config`, `vision_config`), the quantization_config, the RoPE
    parameters; not a label map or a timm label_descriptions, which are the value of one attribute.

    Example:
        >>> _built_as_config("text_config", {}), _built_as_config("encoder", {"model_type": "bert"})
        (True, True)
        >>> _built_as_config("label_descriptions", {"n01440764": "tench"})
        False
    """
    return isinstance(value, dict) and (isinstance(value.get("model_type"), str) or key.endswith("_config")
                                        or key in _ROPE_PARAMETERS)


def _config_objects(config: dict[str, Any]) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """The config, each object at its top level built as a config (`_built_as_config`), and each sub-config below
    those, with its path (the keys to it).

    A sub-config's keys become attributes of a config built from it, one by one, at any depth: those its config
    class declares (`sub_configs`: Qwen2.5-Omni's `thinker_config` and, in it, `text_config`, built by
    transformers). Below an object of unknown class (a model_type this transformers lacks), every object in it is
    taken for one.

    Example:
        >>> [path for path, _ in _config_objects({"model_type": "qwen2_5_omni", "thinker_config": {"text_config": {}}})]
        [(), ('thinker_config',), ('thinker_config', 'text_config')]
    """
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    def config_class(value: dict[str, Any]) -> Any:
        model_type = value.get("model_type")
        return CONFIG_MAPPING[model_type] if isinstance(model_type, str) and model_type in CONFIG_MAPPING else None

    found: list[tuple[tuple[str, ...], dict[str, Any]]] = [((), config)]
    found += [((key,), value) for key, value in config.items() if _built_as_config(key, value)]
    listed = {id(value) for _, value in found}
    pending: list[tuple[tuple[str, ...], dict[str, Any], Any]] = [((), config, config_class(config))]
    while pending:
        path, value, cls = pending.pop()
        subs: dict[str, Any] = dict(getattr(cls, "sub_configs", None) or {}) if cls is not None else \
            {key: None for key, item in value.items() if isinstance(item, dict)}
        for key, sub_class in subs.items():
            item = value.get(key)
            if not isinstance(item, dict):
                continue
            where = (*path, key)
            if id(item) not in listed:
                listed.add(id(item))
                found.append((where, item))
            if cls is not None:  # of an unknown class, any object may be a sub-config: listed, not walked
                known = config_class(item) if sub_class is None or sub_class is AutoConfig else sub_class
                pending.append((where, item, known))
    return found


def refuse_huge_config(config: dict[str, Any]) -> None:
    """Raise UsageError when `config` holds more than `MAX_CONFIG_VALUES` keys and list entries in all (counted
    without recursion, stopping as soon as the count is past the limit), or more than `MAX_CONFIG_KEYS` keys at its
    top level or in one of its sub-configs, at any depth (label maps aside; see `_config_objects`).

    Example:
        >>> refuse_huge_config({"model_type": "llama", "id2label": {str(i): str(i) for i in range(1000)}})
    """
    for path, value in _config_objects(config):
        if len(value) > MAX_CONFIG_KEYS and not (path and path[-1] in _LABEL_MAPS):
            where = f"'s {'.'.join(path)!r} holds" if path else " holds"
            raise UsageError(f"config.json{where} {len(value):,} keys (real configs some hundreds); weightdoctor "
                             f"builds models from configs of up to {MAX_CONFIG_KEYS:,}")
    label_maps = {id(value[key]): key for _, value in _config_objects(config) for key in _LABEL_MAPS
                  if isinstance(value.get(key), dict)}
    count, pending = 0, [config]
    while pending and count <= MAX_CONFIG_VALUES:
        value = pending.pop()
        items = value.values() if isinstance(value, dict) else value
        if id(value) in label_maps:
            if len(value) > MAX_LABELS:
                raise UsageError(f"config.json's {label_maps[id(value)]} holds {len(value):,} labels; weightdoctor "
                                 f"builds models of up to {MAX_LABELS:,}")
        else:
            count += len(value)
        if count <= MAX_CONFIG_VALUES:
            pending.extend(item for item in items if isinstance(item, (dict, list)) and item)
    if count > MAX_CONFIG_VALUES:
        raise UsageError(f"config.json holds more than {MAX_CONFIG_VALUES:,} keys and list entries (the largest real "
                         "configs some 44,000); weightdoctor does not build a model from it")


def config_from_dict(config: dict[str, Any], **overrides: Any) -> PretrainedConfig:
    """Turn a parsed `config.json` into the transformers config class of its `model_type`.

    Raises:
        UsageError: no `model_type`, or one this transformers does not know; a config of more than
            `MAX_CONFIG_VALUES` values.
    """
    from transformers import AutoConfig

    refuse_huge_config(config)
    config = decode_special_floats(config)

    model_type = config.get("model_type")
    # A diffusers config may carry a model_type of its own (Wan2.1's WanModel: "t2v"): still no transformers one.
    if not model_type or isinstance(config.get("_class_name"), str):
        # diffusers' (`_class_name`) and timm's (`architecture`) config.json are not transformers configs: say
        # whose they are, and what to compare against instead.
        owner = (f"a diffusers {config['_class_name']} config" if isinstance(config.get("_class_name"), str)
                 else f"a TensorRT-LLM {config['architecture']} checkpoint config" if is_tensorrt_llm_config(config)
                 else f"a timm {config['architecture']} config" if isinstance(config.get("architecture"), str)
                 else "mamba_ssm's own config (d_model, n_layer, ssm_cfg)" if is_mamba_ssm_config(config)
                 else "Kokoro's own config (istftnet, plbert), which its KModel reads" if is_kokoro_config(config)
                 else None)
        if owner:
            hf = (": transformers' Mamba classes read its conversion (the -hf repos; transformers' "
                  "convert_mamba_ssm_checkpoint_to_pytorch.py writes one), with model_type 'mamba'"
                  if is_mamba_ssm_config(config) else "")
            raise UsageError(f"config.json is {owner}, with no transformers model_type; cannot build the model "
                             f"from it{hf} (compare against a second checkpoint B of that library instead)")
        raise UsageError("config.json has no model_type; cannot build the model from it")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if not isinstance(model_type, str):
        # A number or a list: no transformers version knows it, so "upgrade transformers" would send the user off.
        raise UsageError(f"config.json's model_type is {shown_value(model_type)}, not the name of a model type; "
                         "cannot build the model from it")
    if model_type not in CONFIG_MAPPING:
        # transformers' own message lists every known type on one very long line; say it shortly.
        import transformers

        # What to do differs: code of the repo's own is never run; a type newer than this transformers needs it
        # upgraded.
        why = ("; its config names code of its own (auto_map, trust_remote_code), which weightdoctor never runs"
               if isinstance(config.get("auto_map"), dict) else
               f"; a model newer than transformers {transformers.__version__}? upgrade transformers")
        raise UsageError(f"this transformers does not know model_type {shown_type(model_type)}{why}")
    values = {k: v for k, v in {**config, **overrides}.items() if k != "model_type"}
    try:
        return AutoConfig.for_model(model_type, **values)
    except Exception as exc:  # config classes validate fields in their own ways (strict dataclasses, asserts)
        refused = exc
    malformed = architectures_problem(values.get("architectures"))
    if malformed is not None:
        # transformers 5.17's config classes validate every field, `architectures` (list[str]) among them,
        # and refused it before resolve_model_class could say how to write it ("StrictDataclassFieldValidation
        # Error: ... doesn't match any type"); 5.25's build it and leave the names to the class chosen. Said only
        # where the config builds without it: a string's architectures beside a bad head_dim was blamed, on 5.25
        # too, and the field at fault went unsaid.
        try:
            AutoConfig.for_model(model_type, **{k: v for k, v in values.items() if k != "architectures"})
        except Exception as exc:  # noqa: BLE001 - another field is refused: that one is said
            refused = exc
        else:
            import transformers

            raise UsageError(f"{malformed} (transformers {transformers.__version__} builds no config from it, "
                             "whatever the model class)") from refused
    detail = clip_words(" ".join(str(refused).split()), 200)
    raise UsageError(f"config.json cannot build a {shown_type(model_type)} config ({type(refused).__name__}: {detail})"
                     ) from refused


def shown_type(model_type: Any) -> str:
    """A config's model_type quoted in a message (its repr), cut in the middle past 200 characters: a 50 MB one was
    quoted whole in plan-devices --json's warnings (text cuts a line at MAX_MESSAGE_CHARS, the JSON did not)."""
    from weightdoctor.errors import clip_middle

    return clip_middle(repr(model_type), 200)


def shown_value(value: Any, limit: int = 200) -> str:
    """A value read from a config.json as JSON writes it, cut in the middle past `limit` characters."""
    import json

    from weightdoctor.errors import clip_middle

    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return clip_middle(text, limit)


def is_tensorrt_llm_config(config: Any) -> bool:
    """Whether a config.json is a TensorRT-LLM checkpoint's (convert_checkpoint.py's, trtllm-build's input): its model
    named in `architecture` as timm's is, beside the `mapping` of its ranks, and no model_type."""
    return (isinstance(config, dict) and not config.get("model_type") and isinstance(config.get("architecture"), str)
            and isinstance(config.get("mapping"), dict))


def is_mamba_ssm_config(config: Any) -> bool:
    """Whether a config.json is mamba_ssm's MambaConfig (state-spaces/mamba-*: `d_model`, `n_layer`, `ssm_cfg`), which
    its MambaLMHeadModel.from_pretrained reads, not transformers (no model_type)."""
    return (isinstance(config, dict) and not config.get("model_type")
            and {"d_model", "n_layer", "ssm_cfg"} <= set(config))


def is_kokoro_config(config: Any) -> bool:
    """Whether a config.json is Kokoro's (hexgrad/Kokoro-82M: its iSTFTNet decoder's settings under `istftnet`, its
    PL-BERT's under `plbert`), which kokoro's KModel reads, not transformers (no model_type)."""
    return isinstance(config, dict) and not config.get("model_type") and {"istftnet", "plbert"} <= set(config)


# stable-audio-tools' own config, model_config.json beside model.safetensors / model.ckpt (Stable Audio Open,
# stable-audio-open-small, models trained with its train.py): models/factory.py's create_model_from_config builds
# the model its `model_type` names, and models/pretrained.py's get_pretrained_model reads the file by that name.
STABLE_AUDIO_MODEL_TYPES = frozenset({"autoencoder", "diffusion_uncond", "diffusion_cond", "diffusion_cond_inpaint",
                                      "diffusion_autoencoder", "diffusion_prior", "lm"})
STABLE_AUDIO_CONFIG = "model_config.json"
# The most bytes of a model_config.json read: stable-audio-tools' are a few KB; a bigger file is not one of them.
_STABLE_AUDIO_CONFIG_MAX_BYTES = 1 << 20


def stable_audio_config(folder: Path) -> str | None:
    """What the stable-audio-tools model_config.json in `folder` says (`model_type`, sample rate, channels), or None
    where there is none, or the file is not stable-audio-tools' (another model_type, no sample_rate, bad JSON).

    Example:
        >>> stable_audio_config(Path("stable-audio-open-1.0"))  # doctest: +SKIP
        "model_config.json beside the weights is stable-audio-tools' own config (model_type 'diffusion_cond', ..."
    """
    from weightdoctor.jsontext import MAX_DEPTH, parse_json

    path = folder / STABLE_AUDIO_CONFIG
    try:
        if not path.is_file() or path.stat().st_size > _STABLE_AUDIO_CONFIG_MAX_BYTES:
            return None
        config = parse_json(path.read_bytes(), max_depth=MAX_DEPTH)
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("model_type") not in STABLE_AUDIO_MODEL_TYPES \
            or not isinstance(config.get("sample_rate"), int) or not isinstance(config.get("model"), dict):
        return None
    facts = [f"model_type {config['model_type']!r}", f"{config['sample_rate']:,} Hz"]
    if isinstance(config.get("audio_channels"), int):
        facts.append(f"{config['audio_channels']} {plural(config['audio_channels'], 'channel')}")
    if isinstance(config.get("sample_size"), int) and config["sample_size"] > 0:
        facts.append(f"{config['sample_size']:,} samples a clip")
    return (f"{STABLE_AUDIO_CONFIG} beside the weights is stable-audio-tools' own config ({', '.join(facts)}), "
            "which its get_pretrained_model and create_model_from_config read, not a transformers or diffusers one")


def coqui_tts_model(config: Any) -> str | None:
    """The model a config.json of Coqui TTS names (`"model": "xtts"`, "vits", "glow_tts", ...), or None for any
    other config. Coqui's trainer writes its config so: the model's name as a string under `model`, its settings
    under `model_args` or `audio`, the run's under `run_name` / `output_path`; no model_type, which transformers
    needs. Only a short identifier is returned: the value is the file's, and it is quoted in messages.

    Example:
        >>> coqui_tts_model({"model": "xtts", "model_args": {"gpt_layers": 30}, "audio": {"sample_rate": 22050}})
        'xtts'
    """
    if not isinstance(config, dict) or config.get("model_type"):
        return None
    model = config.get("model")
    if not isinstance(model, str) or not re.fullmatch(r"[A-Za-z][\w-]{0,39}", model):
        return None
    return model if isinstance(config.get("audio"), dict) or isinstance(config.get("model_args"), dict) else None


def auto_model_class(mapping: Any, config: PretrainedConfig) -> type:
    """The class an Auto class's `mapping` gives `config`, as its from_pretrained picks it: some model types map to
    several classes (DeiT's image classifier with and without its distillation head, Funnel's full and base
    model), and then the config's `architectures` chooses, else the first one.

    Raises:
        KeyError: the mapping has no class for this config.
    """
    classes = mapping[type(config)]
    if not isinstance(classes, (list, tuple)):
        return classes
    by_name = {cls.__name__: cls for cls in classes}
    return next((by_name[name] for name in getattr(config, "architectures", None) or [] if name in by_name),
                classes[0])


def _unknown_model_type(config: Any) -> str | None:
    """A config.json's `model_type` when this transformers has no config for it (and no other library owns it)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if not isinstance(config, dict) or isinstance(config.get("_class_name"), str):
        return None
    model_type = config.get("model_type")
    return model_type if isinstance(model_type, str) and model_type and model_type not in CONFIG_MAPPING else None


# The Auto classes whose from_pretrained a config's `architectures` suffix stands for, most specific first.
_AUTO_CLASSES = ("AutoModelForCausalLM", "AutoModelForSeq2SeqLM", "AutoModelForMaskedLM",
                 "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
                 "AutoModelForQuestionAnswering", "AutoModelForImageTextToText", "AutoModelForImageClassification",
                 "AutoModelForSpeechSeq2Seq", "AutoModelForCTC", "AutoModel")


def native_class_for_remote_architecture(config: Any) -> tuple[str, str] | None:
    """(class, Auto class) transformers builds for a config whose first architecture is a remote-code class it does
    not have (mosaicml/mpt-7b's `MPTForCausalLM`, model_type "mpt") while it knows the model_type: without
    trust_remote_code, `AutoModelForCausalLM.from_pretrained` builds its own class for the type (MptForCausalLM).
    The Auto class is the one whose class for the type has the architecture's name (case aside), else its task
    suffix (`ForCausalLM`; `Model` for AutoModel). None when the architecture is transformers' own, the type
    unknown, or no Auto class matches. No code of the config's (`auto_map`) is looked at.

    Example:
        >>> native_class_for_remote_architecture({"model_type": "mpt", "architectures": ["MPTForCausalLM"]})
        ('MptForCausalLM', 'AutoModelForCausalLM')
    """
    if not isinstance(config, dict):
        return None
    names, model_type = config.get("architectures"), config.get("model_type")
    if not (isinstance(names, list) and names and isinstance(names[0], str) and isinstance(model_type, str)):
        return None
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    wanted = names[0]
    if isinstance(getattr(transformers, wanted, None), type) or model_type not in CONFIG_MAPPING:
        return None
    found: list[tuple[str, str]] = []
    for auto_name in _AUTO_CLASSES:
        classes = getattr(transformers, auto_name)._model_mapping._model_mapping.get(model_type)
        for name in [classes] if isinstance(classes, str) else list(classes or []):
            found.append((name, auto_name))
    same = next((pair for pair in found if pair[0].lower() == wanted.lower()), None)
    if same is not None:
        return same
    suffix = wanted[wanted.find("For"):] if "For" in wanted else "Model" if wanted.endswith("Model") else None
    return next((pair for pair in found if suffix and pair[0].endswith(suffix)
                 and (suffix != "Model" or pair[1] == "AutoModel")), None)


def architectures_problem(names: Any) -> str | None:
    """Why a config.json's `architectures` is no list of model class names, and how to write it; None for a list of
    names or none at all.

    Example:
        >>> architectures_problem(["LlamaForCausalLM"]) is None
        True
        >>> print(architectures_problem("LlamaForCausalLM"))  # doctest: +ELLIPSIS
        config.json's architectures is "LlamaForCausalLM", not a list ...: write it as a list, ["LlamaForCausalLM"]
    """
    if names is None or (isinstance(names, list) and all(isinstance(item, str) for item in names)):
        return None
    as_list = (f"write it as a list, [{json.dumps(names)}]" if isinstance(names, str) and names.isidentifier()
               else "write it as a list of class names")
    return (f"config.json's architectures is {shown_value(names)}, not a list of model class names; nothing was "
            f"built from it: {as_list}")


def resolve_model_class(config: PretrainedConfig, model_class: str | None = None) -> type:
    """The class to build: `model_class` by name, else the config's first architecture (where that is remote code's
    of a model type transformers knows, the class its Auto class builds without trust_remote_code:
    `native_class_for_remote_architecture`), else AutoModel's."""
    names = getattr(config, "architectures", None)
    malformed = architectures_problem(names) if model_class is None else None
    if malformed is not None:
        # A string was read letter by letter ("no model class 'L'"), a dict by its keys, a number failed in iter().
        # The fix works for every command (inspect --stats and check-dtype have no --model-class, which was the
        # one advice given); plan-devices' flag is named as such (this transformers built the config with it).
        raise UsageError(f"{malformed} (plan-devices: or pass --model-class CLASS)")
    name = model_class or next(iter(names or []), None)
    if model_class is None and name is not None:
        native = native_class_for_remote_architecture(
            {"model_type": getattr(config, "model_type", None), "architectures": [name]})
        name = native[0] if native is not None else name
    if name is None:
        from transformers import AutoModel

        return auto_model_class(AutoModel._model_mapping, config)
    return _class_by_name(name, typed=model_class is not None)


def _class_by_name(name: str, typed: bool = False) -> type:
    """transformers' model class `name`; only a PreTrainedModel subclass (the name may come from a config.json).
    `typed`: the name was typed (--model-class), so a close name is suggested when it is not found."""
    import transformers

    cls = getattr(transformers, name, None)
    if cls is None or not isinstance(cls, type):
        # A misspelled --model-class (`BertForSequenceClasification`, `bertmodel`, `transformers.BertModel`) is
        # the usual cause: name the class meant, as a user would otherwise search transformers' docs for it.
        hint = _close_class_names(name) if typed else []
        meant = f"; did you mean {' or '.join(map(repr, hint))}?" if hint else ""
        raise UsageError(f"transformers has no model class {name!r}{meant}")
    if not issubclass(cls, transformers.PreTrainedModel) or cls is transformers.PreTrainedModel:
        # The name comes from an untrusted config.json (`architectures`): any other class transformers exports
        # (Trainer, TextStreamer, a pipeline, a callback) would be constructed with the config as its argument.
        raise UsageError(f"transformers' {name!r} is not a model class (a subclass of PreTrainedModel); "
                         "nothing was built from it")
    return cls


def _close_class_names(name: str) -> list[str]:
    """transformers' exported names closest to `name` (case aside, a `transformers.` prefix aside), best first."""
    import transformers

    from weightdoctor.errors import closest

    exported = [export for export in dir(transformers) if export[:1].isupper()]
    return closest(name.rpartition(".")[2], exported, n=3, cutoff=0.85)


# Layer-count keys of transformers configs, and the most layers built: real models have up to ~130, and
# building costs ~6 ms a layer (a 200-byte config asking for 10,000 layers took 80 s, 10^6 never finished).
_LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "num_decoder_layers", "encoder_layers",
               "decoder_layers", "num_encoder_layers")
MAX_LAYERS = 1024
# Experts per MoE layer, the same way: real models have up to a few hundred (DeepSeek-V3 256, 61 layers).
_EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
MAX_EXPERTS = 4096


# Stage lists whose sum is the number of layers built (Swin, ConvNeXt, ResNet and 20 more `depths`; Funnel's
# `block_sizes`): `{"depths": [20000]}` built for over 90 s (ConvNeXt 78 s, and then failed). Any other list of
# numbers longer than `MAX_LAYERS` is one entry per layer too (Wav2Vec2's `conv_dim`, Swin's `num_heads`,
# HiFi-GAN's `upsample_rates`), unless it lists tokens or labels.
_STAGE_KEYS = ("depths", "block_sizes", "block_repeats", "num_block_repeats")
_NOT_PER_LAYER = re.compile(r"token|_ids?$|ids_|words|suppress|label|vocab")


# The most submodules and tensors a model built from a config may register. The largest real one registers about
# 87,000 (Switch-C-2048, 2,048 unfused experts in 15 layers: 62,000 modules and 25,000 tensors; it planned in 11 s);
# others stay under 16,000 (NLLB-MoE 8,600 modules and 7,100 tensors; DeepSeek-V3 1,200, its experts fused), at
# about 15,000 a second here. Config keys
# other than the ones counted above make layers too (ALBERT's `num_hidden_groups` and `inner_group_num`, Mimi's
# `num_quantizers`, MusicGen's `num_codebooks`): 20,000 of them built for over a minute.
MAX_MODULES = 100_000
# Modules and tensors one module of a built model may hold side by side (as `plan_devices.MAX_MODULE_ENTRIES` for a
# tree of tensor names): MusicGen's `num_codebooks: 20000` (two lists of 20,000) planned for over a minute, and
# `inspect --stats` took 36 s over it, from a 200-byte config.
MAX_MODULE_ENTRIES = 4096


class _TooManyModules(BaseException):
    """Raised from the registration hook; a BaseException, so that no `except Exception` of model code hides it."""


@contextlib.contextmanager
def _module_budget() -> Iterator[None]:
    """Count every submodule registered while the model is built; past `MAX_MODULES` in all, or
    `MAX_MODULE_ENTRIES` in one module, stop the build."""
    from torch.nn.modules.module import (
        register_module_module_registration_hook,
        register_module_parameter_registration_hook,
    )

    count = [0]

    def counted(module: Any, name: str, submodule: Any) -> None:
        count[0] += 1
        if count[0] > MAX_MODULES:
            raise _TooManyModules(f"registers more than {MAX_MODULES:,} modules and tensors (the largest real "
                                  "model, Switch-C-2048, about 87,000)")
        if len(module._modules) >= MAX_MODULE_ENTRIES:
            raise _TooManyModules(f"puts more than {MAX_MODULE_ENTRIES:,} modules side by side in one "
                                  f"{type(module).__name__} (real models some hundreds)")

    def tensor_counted(module: Any, name: str, parameter: Any) -> None:
        count[0] += 1
        if count[0] > MAX_MODULES:
            raise _TooManyModules(f"registers more than {MAX_MODULES:,} modules and tensors (the largest real "
                                  "model, Switch-C-2048, about 87,000)")

    handles = [register_module_module_registration_hook(counted),
               register_module_parameter_registration_hook(tensor_counted)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _refuse_absurd_depth(config: dict[str, Any], where: str = "") -> None:
    """Raise UsageError when the config (or a sub-config: `text_config`, `encoder`, ...) asks for more than
    `MAX_LAYERS` layers or `MAX_EXPERTS` experts per layer."""
    for key, value in config.items():
        if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            total = sum(v for v in value if isinstance(v, int) and v > 0) if key in _STAGE_KEYS else 0
            if total > MAX_LAYERS or (len(value) > MAX_LAYERS and not _NOT_PER_LAYER.search(key)):
                what = f"{total:,} layers in all" if total > MAX_LAYERS else f"{len(value):,} entries, one per layer"
                raise UsageError(f"config.json lists {what} ({where}{key}); weightdoctor builds models of up to "
                                 f"{MAX_LAYERS:,} layers")
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            if isinstance(value, dict) and where.count(".") <= 3:
                _refuse_absurd_depth(value, f"{where}{key}.")
            continue
        for keys, limit, what in ((_LAYER_KEYS, MAX_LAYERS, "layers"), (_EXPERT_KEYS, MAX_EXPERTS, "experts")):
            if key in keys and value > limit:
                raise UsageError(
                    f"config.json asks for {value:,} {what} ({where}{key}); weightdoctor builds models of up to "
                    f"{limit:,} {what}"
                )


def refuse_unbuildable_config(config: dict[str, Any]) -> None:
    """Raise UsageError for a config weightdoctor does not build anything from: too many values or keys
    (`refuse_huge_config`), or more layers or experts than any real model (`MAX_LAYERS`, `MAX_EXPERTS`).

    Example:
        >>> refuse_unbuildable_config({"model_type": "qwen3", "num_hidden_layers": 28})
        >>> refuse_unbuildable_config({"model_type": "qwen3", "num_hidden_layers": 10**9})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        weightdoctor.errors.UsageError: config.json asks for 1,000,000,000 layers (num_hidden_layers); ...
    """
    refuse_huge_config(config)
    _refuse_absurd_depth(config)


def _sub_config_for(cls: type, config: dict[str, Any], built: Any, overrides: dict[str, Any],
                    foreign: bool = False) -> Any:
    """The config `cls.from_pretrained` would build from a composite model's config: CLIPTextModel from a CLIP
    checkpoint takes its `text_config` (the config class's `base_config_key`), a class whose model type is one
    sub-config's takes that one, as transformers' `PreTrainedConfig.from_pretrained` does; else `built`.

    `foreign`: a config of another model type with no such sub-config is read by the class's own config class,
    as from_pretrained reads it (Qwen2ForCausalLM from a Llama checkpoint gets a Qwen2Config made of the Llama
    config's values, whose `model_type` stays "llama"), not refused."""
    expected = getattr(cls, "config_class", None)
    if not isinstance(expected, type) or isinstance(built, expected):
        return built
    wanted = getattr(expected, "model_type", None)
    chosen = config
    key = getattr(expected, "base_config_key", None)
    if key and isinstance(config.get(key), dict):
        chosen = config[key]
    if wanted and chosen.get("model_type") != wanted:
        # transformers' loop does not stop at the first match: of two sub-configs of the class's type (a BERT
        # encoder-decoder's `decoder` and `encoder`, in the file's sorted order) the last one wins
        matches = [value for value in chosen.values() if isinstance(value, dict) and value.get("model_type") == wanted]
        chosen = matches[-1] if matches else chosen
    if chosen is config and not foreign:
        return built
    return expected.from_dict(dict(chosen), **overrides)


def foreign_class_message(cls: type, model_type: str | None, hint: str = "or pass --config") -> str:
    """Why a class of another model type is refused: `hint` says how the command takes another config."""
    expected = getattr(cls, "config_class", None)
    wanted = getattr(expected, "model_type", "") or getattr(expected, "__name__", "its own")
    return (f"{cls.__name__} needs a {wanted!r} config, but the config's model_type is {shown_type(model_type)}; "
            f"pick a class of that model type, {hint}")


def is_foreign_config(config: Any) -> bool:
    """A config of one class read from another model type's values: its `model_type` is not its class's."""
    wanted = getattr(type(config), "model_type", None)
    return bool(wanted) and getattr(config, "model_type", wanted) != wanted


def build_meta_model(
    config: dict[str, Any] | PretrainedConfig,
    model_class: str | None = None,
    *,
    other_config_hint: str = "or pass --config",
    tie_weights: bool = True,
    foreign_config: bool = False,
    **overrides: Any,
) -> torch.nn.Module:
    """Instantiate a model on the meta device: every parameter has a shape and dtype, none has memory.

    Built under `torch.device("meta")`, as transformers builds models before loading weights, so tied
    weights are tied (accelerate's `init_empty_weights` leaves them untied in transformers 5).

    Example:
        >>> model = build_meta_model({"model_type": "bert", "architectures": ["BertModel"]})
        >>> next(model.parameters()).device
        device(type='meta')

    `other_config_hint` ends the message for a class of another model type: how the calling command
    takes another config (diff-keys has `--config`; plan-devices takes a config.json as its source).

    `tie_weights=False` builds it as `from_pretrained` does before it loads (transformers' `no_tie_weights`):
    tied parameters are separate tensors, named in the model's `all_tied_weights_keys`.
    `foreign_config`: build such a class as from_pretrained does, from its own config class filled with this
    config's values (see `_sub_config_for`); the message is then only for a class that cannot be built so.
    """
    import torch

    if isinstance(config, dict):
        refuse_unbuildable_config(config)
        config = decode_special_floats(config)
    unknown = _unknown_model_type(config) if foreign_config and model_class else None
    if unknown is not None and model_class is not None and not model_class.startswith("Auto"):
        # A model type this transformers does not know (remote code's, an old name): the named class's
        # from_pretrained reads the values with its own config class all the same, and the type stays the file's.
        cls = _class_by_name(model_class, typed=True)
        try:
            cfg = cls.config_class.from_dict(dict(config), **overrides)
        except Exception as exc:  # the class's config class validates the other type's values its own way
            raise UsageError(foreign_class_message(cls, unknown, other_config_hint)) from exc
    else:
        try:
            cfg = config_from_dict(config, **overrides) if isinstance(config, dict) else config
        except UsageError as exc:
            if model_class is None or "does not know model_type" not in exc.message:
                raise
            # `--model-class AutoModel` on a checkpoint of a custom type: the class is known, the config is not.
            raise UsageError(f"{exc.message}; --model-class {model_class} is built from this config: "
                             f"{other_config_hint.removeprefix('or ')} of {model_class}'s model type") from exc
        cls = resolve_model_class(cfg, model_class)
    given = getattr(cfg, "model_type", None)
    try:
        cfg = _sub_config_for(cls, config if isinstance(config, dict) else cfg.to_dict(), cfg, overrides,
                              foreign=foreign_config)
    except Exception as exc:  # the class's config class validates the other type's values its own way
        raise UsageError(foreign_class_message(cls, given, other_config_hint)) from exc
    untied: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if not tie_weights:
        from transformers.initialization import no_tie_weights

        untied = no_tie_weights()
    try:
        # Python warnings of model code and torch on the meta device are about their internals, printed with a
        # source path (a config.json's `vocab_size: 0` printed torch's "UserWarning: Initializing zero-element
        # tensors is a no-op" and its line of code): what the config does wrong is said by the commands.
        with torch.device("meta"), untied, _module_budget(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls._from_config(cfg) if hasattr(cls, "_from_config") else cls(cfg)
    except _TooManyModules as exc:
        raise UsageError(f"{cls.__name__} from this config.json {exc.args[0]}; weightdoctor does not build it") \
            from None
    except Exception as exc:  # model code can raise anything on a config it was not written for
        expected = getattr(cls, "config_class", None)
        if isinstance(expected, type) and (not isinstance(cfg, expected) or is_foreign_config(cfg)):
            # A class of another model type (BertModel on a GPT-2 config): say so, not the AttributeError.
            raise UsageError(foreign_class_message(cls, getattr(cfg, "model_type", None), other_config_hint)) from exc
        # torch's C++ errors go on with the frame they came from ("Exception raised from THPUtils_unpackLong at
        # /__w/pytorch/..."): a size of 1e30 in config.json cut the line in the middle of a source path.
        detail = clip_words(" ".join(str(exc).split("Exception raised from", 1)[0].split()).rstrip(' "'), 200)
        raise UsageError(f"transformers cannot build {cls.__name__} from this config: {detail}") from exc
    _refuse_flat_modules(model)
    if not model._modules and not model._parameters:
        # An abstract base (BertPreTrainedModel) builds nothing and skips post_init: the load simulation and
        # accelerate's placement then raised AttributeError (all_tied_weights_keys), reported as unexpected, or as
        # budgets to change. No model class transformers loads weights into is empty.
        raise UsageError(f"transformers' {cls.__name__} builds no layers (the abstract base class of a family's "
                         "models): from_pretrained loads no weights into it; name a model class, such as one of "
                         "the config's architectures")
    return model.eval()


def _refuse_flat_modules(model: torch.nn.Module) -> None:
    """Raise UsageError when one module of `model` holds more than `MAX_MODULE_ENTRIES` modules and tensors."""
    for name, module in model.named_modules():
        entries = len(module._modules) + len(module._parameters)
        if entries > MAX_MODULE_ENTRIES:
            raise UsageError(
                f"{type(model).__name__} built from this config.json holds {entries:,} modules and tensors side by "
                f"side in {name or 'its top level'!r} (the limit is {MAX_MODULE_ENTRIES:,}; real models hold some "
                "hundreds): accelerate's placement takes time in the square of that, and inspect --stats' "
                "initialization check in proportion")
