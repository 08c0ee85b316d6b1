"""What transformers' own modeling code says of a model_type, read as text: no import of torch or transformers.

inspect reads structure only and must stay fast (no meta model build); a model's module attribute names and whether
its classes keep modules in float32 are written in its `models/<type>/modeling_*.py`, which costs a file read.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# `self.embed_tokens = nn.Embedding(...)`, `self.layers: nn.ModuleList = ...`, `self.add_module("wo", ...)`,
# `self.register_buffer("inv_freq", ...)`: every name a module or tensor of the model can be stored under.
_ATTRIBUTE = re.compile(r"self\.(\w+)\s*(?::[^=\n]*)?=(?!=)|(?:add_module|register_buffer|register_parameter)\(\s*"
                        r"[\"'](\w+)[\"']")
# A modeling file that takes classes from another model's (`from ..clip.modeling_clip import CLIPEncoder`).
_OTHER_MODELING = re.compile(r"from \.\.(\w+)\.(modeling_\w+) import")
# One that takes its generation mixin from a file of its folder (`from .generation_csm import CsmGenerationMixin`):
# a base of its model classes, read so that their lists are known.
_OWN_GENERATION = re.compile(r"^from \.(generation_\w+) import", re.MULTILINE)
# The largest modeling file read: the biggest in transformers 5 is under 300 KB.
_MAX_SOURCE_BYTES = 4 << 20


@functools.lru_cache(maxsize=1)
def _models_folder() -> Path | None:
    """transformers' `models/` folder, found without importing transformers (find_spec of a top-level package)."""
    try:
        spec = importlib.util.find_spec("transformers")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    folder = Path(locations[0]) / "models" if locations else None
    return folder if folder is not None and folder.is_dir() else None


def _read(path: Path) -> str:
    try:
        if path.stat().st_size > _MAX_SOURCE_BYTES:
            return ""
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


@functools.lru_cache(maxsize=64)
def modeling_source(model_type: str) -> str | None:
    """The text of transformers' modeling files for `model_type` (with those of other models it imports classes
    from, one level), or None where the installed transformers has no such folder (another library's config, a
    remote-code model_type, a type whose folder is named otherwise).

    Example:
        >>> "self.embed_tokens" in modeling_source("llama")  # doctest: +SKIP
        True
    """
    files = _modeling_files(model_type)
    return "\n".join(_read(path) for path in files) if files is not None else None


@functools.lru_cache(maxsize=64)
def _modeling_files(model_type: str) -> tuple[Path, ...] | None:
    """The modeling files `modeling_source` reads for `model_type` (its own, then those it imports classes from)."""
    models = _models_folder()
    if models is None or not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", model_type):
        return None
    folder = models / _special_module_names().get(model_type, model_type.replace("-", "_"))
    files = sorted(folder.glob("modeling_*.py")) if folder.is_dir() else []
    if not files:
        return None
    texts = [_read(path) for path in files]
    for other, module in sorted({m.groups() for text in texts for m in _OTHER_MODELING.finditer(text)}):
        if other != "auto":  # the Auto classes: which model they build is the sub-config's (see _built_plan)
            files.append(models / other / f"{module}.py")
    for module in sorted({m.group(1) for text in texts for m in _OWN_GENERATION.finditer(text)}):
        if (folder / f"{module}.py").is_file():
            files.append(folder / f"{module}.py")
    return tuple(files)


@functools.lru_cache(maxsize=1)
def _special_module_names() -> dict[str, str]:
    """transformers' `SPECIAL_MODEL_TYPE_TO_MODULE_NAME` (a sub-config's type -> its folder: `clip_vision_model` ->
    `clip`), read from the text of models/auto (importing it imports torch: 5 s); empty where it is not found."""
    import ast

    models = _models_folder()
    if models is None:
        return {}
    names: dict[str, str] = {}
    for path in (models / "auto" / "auto_mappings.py", models / "auto" / "configuration_auto.py"):
        try:
            tree = ast.parse(_read(path))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            value: Any = None
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id == "SPECIAL_MODEL_TYPE_TO_MODULE_NAME"):
                value = node.value.args[0] if isinstance(node.value, ast.Call) and node.value.args else node.value
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update"
                  and isinstance(node.func.value, ast.Name)
                  and node.func.value.id == "SPECIAL_MODEL_TYPE_TO_MODULE_NAME" and node.args):
                value = node.args[0]
            if value is None:
                continue
            try:
                pairs = ast.literal_eval(value)
            except ValueError:
                continue
            items = pairs.items() if isinstance(pairs, dict) else pairs
            names.update({k: v for k, v in items if isinstance(k, str) and isinstance(v, str)
                          and re.fullmatch(r"[A-Za-z0-9_]{1,100}", v)})
    return names


def config_model_types(config: Mapping[str, Any]) -> list[str]:
    """Every `model_type` of a config and its sub-configs (LLaVA's `text_config`, `vision_config`), top first."""
    found: list[str] = []

    def walk(node: Mapping[str, Any], depth: int) -> None:
        model_type = node.get("model_type")
        if isinstance(model_type, str) and model_type not in found:
            found.append(model_type)
        if depth < 3:
            for value in node.values():
                if isinstance(value, Mapping):
                    walk(value, depth + 1)

    walk(config, 0)
    return found


def attribute_names(sources: Iterable[str]) -> frozenset[str]:
    """The attribute names modules and tensors are assigned to in `sources` (modeling file texts)."""
    return frozenset(name for text in sources for match in _ATTRIBUTE.finditer(text)
                     for name in match.groups() if name)


def keeps_modules_in_fp32(config: Mapping[str, Any]) -> bool | None:
    """Whether any model class of this config can keep modules in float32 at a half-precision load (its modeling
    code sets `_keep_in_fp32_modules` or `_keep_in_fp32_modules_strict`): False where the code of every model_type
    the config names was read and none does; None where some was not found (remote code, another library).

    Example:
        >>> keeps_modules_in_fp32({"model_type": "t5"})  # doctest: +SKIP
        True
    """
    if config.get("auto_map") is not None:
        return None  # remote code: its classes are not transformers' files
    types = config_model_types(config)
    if not types:
        return None
    sources = [modeling_source(model_type) for model_type in types]
    if any(source is None for source in sources):
        return None
    return any(re.search(r"_keep_in_fp32_modules(?:_strict)?\s*=\s*[\[\({\"']", source or "") for source in sources)


_FP32_ATTRIBUTES = ("_keep_in_fp32_modules", "_keep_in_fp32_modules_strict")
# Bases a modeling file's classes take from outside it that are no PreTrainedModel and set no dtype plan.
# transformers' BackboneMixin and DecisionMixin (backbone_utils.py, decision/modeling_utils.py) declare neither list
# nor any tie: their post_init calls the model's own.
_PLAIN_BASES = frozenset({"object", "nn.Module", "torch.nn.Module", "GenerationMixin", "GradientCheckpointingLayer",
                          "ModelOutput", "torch.autograd.Function", "Function", "Enum", "Exception", "BackboneMixin",
                          "DecisionMixin", "StoppingCriteria"})


_ClassTable = dict[str, tuple[list[str], dict[str, Any], Any]]
# transformers' model base classes (modeling_utils.py): PreTrainedAudioTokenizerBase (DAC's, EnCodec's) adds encode and
# decode to PreTrainedModel, neither list nor any tie.
_MODEL_BASES = frozenset({"PreTrainedModel", "PreTrainedAudioTokenizerBase"})


def _class_table(files: Iterable[Path], attributes: tuple[str, ...]) -> _ClassTable | None:
    """Every class of the modeling `files`: name -> (its bases as written, the `attributes` its body sets to a literal
    (list / tuple / set of strings, a dict of strings, None: each as a sorted tuple of its entries, a dict's keys and
    values paired), its ClassDef node). None where the text alone does not answer: a file that does not parse, two
    classes of one name, one of `attributes` set to no literal or set or read anywhere else (`self._tied_weights_keys
    = ...` in __init__, a getattr by name), where the class's value is not what its text declares."""
    import ast

    classes: _ClassTable = {}
    for path in files:
        try:
            tree = ast.parse(_read(path))
        except (SyntaxError, ValueError):
            return None
        assigned: set[int] = set()
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            if node.name in classes:
                return None  # two classes of one name: which is meant is not read from text
            plan: dict[str, Any] = {}
            for statement in node.body:
                target = statement.targets[0] if isinstance(statement, ast.Assign) and len(statement.targets) == 1 \
                    else statement.target if isinstance(statement, ast.AnnAssign) and statement.value else None
                if isinstance(target, ast.Name) and target.id in attributes:
                    try:
                        value = ast.literal_eval(statement.value)  # type: ignore[union-attr,arg-type]
                    except ValueError:
                        return None  # computed (`AttributeError()`, a comprehension): not a literal
                    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in value.items()):
                        value = sorted(value.items())
                    elif value is not None and not (isinstance(value, (list, tuple, set))
                                                    and all(isinstance(item, str) for item in value)):
                        return None
                    plan[target.id] = tuple(sorted(set(value or ())))
                    assigned.add(id(target))
            classes[node.name] = ([ast.unparse(base) for base in node.bases], plan, node)
        for node in ast.walk(tree):
            named = (node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name)
                     else node.value if isinstance(node, ast.Constant) else None)
            if named in attributes and id(node) not in assigned:
                return None
    return classes


def _resolved(classes: _ClassTable, name: str,
              seen: frozenset[str] = frozenset()) -> tuple[bool, dict[str, Any]] | None:
    """Whether class `name` of `classes` is a PreTrainedModel, with the attributes it inherits (the first base's
    winning, as Python's method resolution order gives them); None where that is not known (a base from elsewhere)."""
    if name in _MODEL_BASES:
        return True, {}
    if name in _PLAIN_BASES or name in _GENERIC_HEADS or name not in classes and (
            name.startswith(("nn.", "torch.nn.")) or "Output" in name and not name.endswith("Model")):
        # torch's layers (`nn.Embedding`), transformers' output dataclasses (`BaseModelOutputWithPooling`)
        return False, {}
    if name not in classes or name in seen:
        return None
    bases, own, _ = classes[name]
    is_model = False
    inherited: dict[str, Any] = {}
    for base in reversed(bases):
        found = _resolved(classes, base, seen | {name})
        if found is None:
            return None
        is_model = is_model or found[0]
        inherited |= found[1]
    return is_model, inherited | own


def ties_nothing(config: Mapping[str, Any]) -> bool:
    """True where transformers' modeling code shows that the model of this config ties no weights (reads none of
    a checkpoint's tensors from another): one model_type, `architectures` naming a class of its files, and neither
    that class nor a PreTrainedModel it builds as a submodule (`self.bert = BertModel(config)`) declares
    `_tied_weights_keys`. False where that is not known from the text (build the model to know).

    transformers 5 ties a model's own `_tied_weights_keys` and those of its PreTrainedModel children (post_init); a
    BertForSequenceClassification, whose BertModel declares none, ties nothing, and its safetensors file converts
    without importing torch.

    Example:
        >>> ties_nothing({"model_type": "bert", "architectures": ["BertForSequenceClassification"]})  # doctest: +SKIP
        True
    """
    found = _declared_ties(config)
    return found is not None and not found[0] and not found[1]


def tied_weights_from_text(config: Mapping[str, Any]) -> dict[str, str] | None:
    """The ties the model of this config makes ({tied name: the name it is filled from}: GPT-2's
    `{"lm_head.weight": "transformer.wte.weight"}`), read from its modeling code's text where that alone answers, as
    transformers 5's post_init gathers them: the class `architectures` names declares its own as a dict of whole
    tensor names (no pattern to expand against the built model), and each PreTrainedModel it sets as an attribute
    from the same config adds its own under that attribute's name (BART's `model.encoder.embed_tokens.weight` from
    `model.shared.weight`, declared by BartModel). All of them tie only where the config's `tie_word_embeddings`
    is true: config.json's value, else the default its config class declares (`config_ties_word_embeddings`). None
    otherwise (build the model to know).

    Example:
        >>> tied_weights_from_text({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        ...                         "tie_word_embeddings": True})  # doctest: +SKIP
        {'lm_head.weight': 'transformer.wte.weight'}
    """
    found = _declared_ties(config)
    if found is None:
        return None
    if not found[0] and not found[1]:
        return {}  # nothing declared anywhere: no tie, whatever the config says
    types = config_model_types(config)
    files = _modeling_files(types[0])
    if not files or any(_TIE_FLAG in _read(path) for path in files):
        # the modeling code reads or sets the flag itself (T5's family scales its output by it, Marian reads it)
        return None
    ties = config_ties_word_embeddings(config)
    if ties is None:
        return None
    if not ties:
        return {}
    classes = _class_table(files, ("_tied_weights_keys",))
    return _expanded_ties(classes, config["architectures"][0], frozenset()) if classes is not None else None


_TIE_FLAG = "tie_word_embeddings"
# transformers' own test of a mapping it uses as written (get_expanded_tied_weights_keys): whole names ending in
# weight or bias, no pattern or module name to expand against the built model.
_WHOLE_TENSOR_NAME = re.compile(r"[A-Za-z0-9_.]+\.(?:weight|bias)")


def _expanded_ties(classes: _ClassTable, name: str, seen: frozenset[str]) -> dict[str, str] | None:
    """The `all_tied_weights_keys` post_init gives PreTrainedModel class `name` of `classes` when its config ties
    word embeddings: its `_tied_weights_keys`, then those of each PreTrainedModel its `__init__` sets as an attribute
    (`self.model = BartModel(config)`), prefixed with the attribute's name, as post_init takes them from its named
    children. A child that ties something is followed only where it is set at the top of `__init__` from the
    `config` it was given (the flag is then the same one); None where one is built otherwise, or not known."""
    import ast

    found = _resolved(classes, name) if name not in seen else None
    if found is None or not found[0]:
        return None
    declared = found[1].get("_tied_weights_keys") or ()
    if not all(isinstance(pair, tuple) and len(pair) == 2 and all(_WHOLE_TENSOR_NAME.fullmatch(part) for part in pair)
               for pair in declared):
        return None  # transformers 4's list, or patterns post_init expands against the built model's names
    ties: dict[str, str] = dict(declared)
    attributes = _children_set_from_config(classes, name)
    for owner in [name, *_ancestors(classes, name)]:
        for node in ast.walk(classes[owner][2]):
            called = _called_class(node)
            if called is None or called in _PLAIN_BASES or called == owner:
                continue
            if called not in classes:
                if called.startswith("Auto") or called.endswith(("Model", "PreTrainedModel")):
                    return None  # a model of another file or of a sub-config: its ties are not read here
                continue
            built = _resolved(classes, called)
            if built is None:
                return None
            if not built[0]:
                continue  # a plain module: post_init takes no ties from it (transformers reads named children)
            child = _expanded_ties(classes, called, seen | {name})
            if child is None:
                return None
            if not child:
                continue
            attribute = attributes.get(id(node))
            if attribute is None:
                return None  # built in a branch, a list or from another config: where its ties land is not read
            ties.update({f"{attribute}.{target}": f"{attribute}.{source}" for target, source in child.items()})
    return ties


def _children_set_from_config(classes: _ClassTable, name: str) -> dict[int, str]:
    """The calls at the top level of the `__init__` class `name` runs (its own, else its nearest base's) that set an
    attribute from the config `__init__` was given, unchanged (`self.model = BartModel(config)`): id of the call ->
    the attribute's name. Empty where the config parameter is assigned to in `__init__`."""
    import ast

    for owner in [name, *_ancestors(classes, name)]:
        init = next((node for node in classes[owner][2].body
                     if isinstance(node, ast.FunctionDef) and node.name == "__init__"), None)
        if init is not None:
            break
    else:
        return {}
    parameters = init.args.args
    if len(parameters) < 2:
        return {}
    given = parameters[1].arg
    if any(isinstance(node, ast.Name) and node.id == given and isinstance(node.ctx, ast.Store)
           for node in ast.walk(init)):
        return {}
    found: dict[int, str] = {}
    for statement in init.body:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.value, ast.Call)):
            continue
        target, call = statement.targets[0], statement.value
        first = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "config"), None)
        if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"
                and isinstance(first, ast.Name) and first.id == given):
            found[id(call)] = target.attr
    return found


def config_ties_word_embeddings(config: Mapping[str, Any]) -> bool | None:
    """The `tie_word_embeddings` the config class of this config's model_type holds once built, read as text:
    config.json's value, else the default the class declares (`tie_word_embeddings: bool = True`), else False
    (post_init reads the attribute with a default of False: a vision model's config has none). None where the class
    does more with it than declare it (LongT5's forces it true, composite ones take the text config's), where it is
    not a transformers config class of a single file, or config.json's value is no boolean.

    Example:
        >>> config_ties_word_embeddings({"model_type": "bart"})  # doctest: +SKIP
        True
    """
    import ast

    types = config_model_types(config)
    models = _models_folder()
    if len(types) != 1 or models is None or config.get("auto_map") is not None:
        return None
    given = config.get(_TIE_FLAG)
    if _TIE_FLAG in config and not isinstance(given, bool):
        return None
    folder = models / _special_module_names().get(types[0], types[0].replace("-", "_"))
    texts = [_read(path) for path in sorted(folder.glob("configuration_*.py"))] if folder.is_dir() else []
    declared: list[Any] = []
    for text in texts:
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            return None
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef) or not any(
                    isinstance(statement, ast.Assign) and len(statement.targets) == 1
                    and isinstance(statement.targets[0], ast.Name) and statement.targets[0].id == "model_type"
                    and isinstance(statement.value, ast.Constant) and statement.value.value == types[0]
                    for statement in node.body):
                continue
            if [ast.unparse(base) for base in node.bases] not in (["PreTrainedConfig"], ["PretrainedConfig"]):
                return None  # a subclass of another model's config: its fields and __post_init__ are elsewhere
            declared.append(node)
        mentions = [node for node in ast.walk(tree) if (isinstance(node, ast.Attribute) and node.attr == _TIE_FLAG)
                    or (isinstance(node, ast.Name) and node.id == _TIE_FLAG)
                    or (isinstance(node, ast.Constant) and node.value == _TIE_FLAG)]
        fields = [statement for node in declared for statement in node.body if isinstance(statement, ast.AnnAssign)
                  and isinstance(statement.target, ast.Name) and statement.target.id == _TIE_FLAG]
        if any(mention not in [field.target for field in fields] for mention in mentions):
            return None  # set, popped or read elsewhere (a __post_init__ forcing it, another class of the file)
    if len(declared) != 1:
        return None
    if isinstance(given, bool):
        return given
    fields = [statement for statement in declared[0].body if isinstance(statement, ast.AnnAssign)
              and isinstance(statement.target, ast.Name) and statement.target.id == _TIE_FLAG]
    if not fields:
        return False
    default = fields[0].value
    return default.value if isinstance(default, ast.Constant) and isinstance(default.value, bool) else None


def _declared_ties(config: Mapping[str, Any]) -> tuple[tuple[Any, ...], bool] | None:
    """The `_tied_weights_keys` the class `architectures` names declares (as `_class_table` reads it), and whether a
    PreTrainedModel it builds declares any; None where the text does not say (several types, remote code, a class
    not of the files, a model built from another file: `AutoModel.from_config`)."""
    import ast

    architectures = config.get("architectures")
    types = config_model_types(config)
    if (config.get("auto_map") is not None or len(types) != 1 or not isinstance(architectures, list)
            or len(architectures) != 1 or not isinstance(architectures[0], str)):
        return None
    files = _modeling_files(types[0])
    classes = _class_table(files or (), ("_tied_weights_keys",)) if files else None
    root = architectures[0]
    if classes is None or root not in classes:
        return None
    own: tuple[Any, ...] = ()
    children_tie = False
    pending, checked = [root], set()
    while pending:
        name = pending.pop()
        if name in checked:
            continue
        checked.add(name)
        found = _resolved(classes, name)
        if found is None:
            return None
        ties = found[1].get("_tied_weights_keys") or ()
        if name == root:
            own = ties
        elif ties:
            children_tie = True
        # The classes it builds: every name called in its body and its bases' bodies (`BertModel(config)`); one not
        # of these files may be a PreTrainedModel of another (`AutoModel.from_config`), whose ties are not read.
        for owner in [name, *_ancestors(classes, name)]:
            for node in ast.walk(classes[owner][2]):
                called = _called_class(node)
                if called is None or called in _PLAIN_BASES or called == owner:
                    continue  # a function, a method of a module (`nn.Linear`: `nn`), a builtin
                if called not in classes:
                    if called.startswith("Auto") or called.endswith(("Model", "PreTrainedModel")):
                        return None
                    continue  # an exception, a config class, an output class: no submodule with ties
                is_model = _resolved(classes, called)
                if is_model is None:
                    return None
                if is_model[0]:
                    pending.append(called)
    return own, children_tie


def _ancestors(classes: _ClassTable, name: str) -> list[str]:
    """The bases of `name` (and theirs) that are classes of `classes`."""
    found: list[str] = []
    pending = list(classes[name][0])
    while pending:
        base = pending.pop()
        if base in classes and base not in found:
            found.append(base)
            pending.extend(classes[base][0])
    return found


def fp32_modules_plan(config: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The `_keep_in_fp32_modules` and `_keep_in_fp32_modules_strict` of the model class a config builds, read from
    its modeling code's text (T5's `(("wo",), ())`, BLIP-2's `(("qformer", "query_tokens"), ())`), where that text
    alone answers it: the lists written as literals and nothing else in the code touching them, and the class known
    (the one `architectures` names, else every PreTrainedModel class of the files has the same lists). None
    otherwise (build the class to know).

    transformers' `post_init` adds the lists of the PreTrainedModel submodules to the model's own: those it builds of
    its own files (`self.qformer = Blip2QFormerModel(...)`) are followed by name; one built from a sub-config
    (`AutoModel.from_config(config.text_config)`: LLaVA's language model) adds the lists its model_type's classes
    all share.

    Example:
        >>> fp32_modules_plan({"model_type": "t5"})  # doctest: +SKIP
        (('wo',), ())
    """
    types = config_model_types(config)
    if config.get("auto_map") is not None or not types:
        return None
    classes = _fp32_class_table(types[0])
    if classes is None:
        return None
    architectures = config.get("architectures")
    if isinstance(architectures, list) and len(architectures) == 1 and isinstance(architectures[0], str):
        if architectures[0] not in classes:
            return None
        return _built_plan(classes, architectures[0], types)
    # No class named: the one built is transformers' pick for the type, known here where all would say the same.
    plans = set()
    for name in classes:
        found = _resolved(classes, name)
        if found is None:
            return None
        if found[0]:
            plans.add(_built_plan(classes, name, types))
    return next(iter(plans)) if len(plans) == 1 else None


@functools.lru_cache(maxsize=64)
def _fp32_class_table(model_type: str) -> _ClassTable | None:
    files = _modeling_files(model_type)
    return _class_table(files, _FP32_ATTRIBUTES) if files else None


# transformers' modeling_layers heads, bases of a model class beside its PreTrainedModel: they set no dtype plan and
# build the base model of the config's own type.
_GENERIC_HEADS = frozenset({"GenericForSequenceClassification", "GenericForQuestionAnswering",
                            "GenericForTokenClassification"})


def _uniform_plan(model_type: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The two lists every PreTrainedModel class of `model_type`'s files has (whichever of them a sub-config builds),
    or None where they differ or are not read."""
    classes = _fp32_class_table(model_type)
    if classes is None:
        return None
    plans = set()
    for name in classes:
        found = _resolved(classes, name)
        if found is None:
            return None
        if found[0]:
            plans.add(tuple(found[1].get(attribute, ()) for attribute in _FP32_ATTRIBUTES))
    return next(iter(plans)) if len(plans) == 1 else None  # type: ignore[return-value]


def _built_plan(classes: _ClassTable, name: str,
                types: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The lists of class `name` after post_init: its own, those of the PreTrainedModel classes of `classes` it
    builds (followed by name), and those of the sub-configs' model types where it builds a model from a sub-config
    (an `AutoModel...` call, a model class of another file). None where one is not read."""
    import ast

    lists: dict[str, set[str]] = {attribute: set() for attribute in _FP32_ATTRIBUTES}
    pending, checked, from_sub_config = [name], set(), False
    elsewhere: set[str] = set()  # the model classes it builds that are not of these files (`AutoModel`, `EncodecModel`)
    while pending:
        current = pending.pop()
        if current in checked:
            continue
        checked.add(current)
        found = _resolved(classes, current)
        if found is None:
            return None
        for attribute in _FP32_ATTRIBUTES:
            lists[attribute].update(found[1].get(attribute, ()))
        if any(base in _GENERIC_HEADS for owner in [current, *_ancestors(classes, current)]
               for base in classes[owner][0]):
            # transformers' GenericForSequenceClassification (and its kin) builds `AutoModel.from_config(config)`:
            # the base model of this type, one of these classes, whose lists every class shares or are not known.
            own = _uniform_plan(types[0])
            if own is None:
                return None
            for attribute, values in zip(_FP32_ATTRIBUTES, own, strict=True):
                lists[attribute].update(values)
        for owner in [current, *_ancestors(classes, current)]:
            for node in ast.walk(classes[owner][2]):
                called = _called_class(node)
                if called is None or called in _PLAIN_BASES or called == owner:
                    continue
                if called not in classes:
                    from_sub_config = from_sub_config or called.startswith("Auto") or called.endswith("Model")
                    elsewhere.add(called)
                    continue
                built = _resolved(classes, called)
                if built is None:
                    return None
                if built[0]:
                    pending.append(called)
    if from_sub_config:
        top = types[0]
        for sub_type in types[1:]:
            if _modeling_files(sub_type) == _modeling_files(top):
                # A sub-config whose classes are the top type's (Sam3's vision config: Sam3VisionModel, built by
                # AutoModel): known where no model class of the files not followed above keeps more than is found.
                for other in classes:
                    found = _resolved(classes, other) if other not in checked else None
                    if found is not None and found[0] and any(not set(found[1].get(a, ())) <= lists[a]
                                                              for a in _FP32_ATTRIBUTES):
                        return None
                continue
            plan = _uniform_plan(sub_type) or _picked_plan(sub_type, elsewhere)
            if plan is None:
                return None
            for attribute, values in zip(_FP32_ATTRIBUTES, plan, strict=True):
                lists[attribute].update(values)
    return tuple(tuple(sorted(lists[attribute])) for attribute in _FP32_ATTRIBUTES)  # type: ignore[return-value]


def _picked_plan(model_type: str, called: set[str]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The lists of the class of `model_type` a composite builds from its sub-config, where its classes' lists differ
    (BLIP-2's Blip2Model keeps `qformer`, the Blip2QFormerModel that `AutoModel.from_config(config.qformer_config)`
    builds does not): the class each Auto class `called` picks for the type (its mapping in models/auto, read as
    text) and each class of the type's files called by name, where all of them have the same lists; else None."""
    classes = _fp32_class_table(model_type)
    if classes is None:
        return None
    picks = _auto_model_picks()
    candidates = {picks[name][model_type] for name in called if model_type in picks.get(name, {})}
    candidates |= {name for name in called if name in classes}
    if not candidates or not candidates <= set(classes):
        return None
    plans = {_built_plan(classes, name, [model_type]) for name in candidates}
    return next(iter(plans)) if len(plans) == 1 else None


@functools.lru_cache(maxsize=1)
def _auto_model_picks() -> dict[str, dict[str, str]]:
    """transformers' Auto model classes -> {model_type: the class it builds for it} (`AutoModel` ->
    `MODEL_MAPPING_NAMES`), read from the text of models/auto/modeling_auto.py; empty where it is not found."""
    import ast

    models = _models_folder()
    if models is None:
        return {}
    try:
        tree = ast.parse(_read(models / "auto" / "modeling_auto.py"))
    except (SyntaxError, ValueError):
        return {}
    names: dict[str, dict[str, str]] = {}  # MODEL_MAPPING_NAMES -> its pairs
    mappings: dict[str, str] = {}  # MODEL_MAPPING -> MODEL_MAPPING_NAMES
    picks: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
            if (target.endswith("_NAMES") and isinstance(value, ast.Call) and value.args
                    and getattr(value.func, "id", None) == "OrderedDict"):
                try:
                    pairs = ast.literal_eval(value.args[0])
                except ValueError:
                    continue
                names[target] = {k: v for k, v in pairs if isinstance(k, str) and isinstance(v, str)}
            elif (isinstance(value, ast.Call) and getattr(value.func, "id", None) == "_LazyAutoMapping"
                  and len(value.args) == 2 and isinstance(value.args[1], ast.Name)):
                mappings[target] = value.args[1].id
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Auto"):
            for statement in node.body:
                if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                        and getattr(statement.targets[0], "id", None) == "_model_mapping"
                        and isinstance(statement.value, ast.Name)):
                    picks[node.name] = names.get(mappings.get(statement.value.id, ""), {})
    return picks


def _called_class(node: Any) -> str | None:
    """The class name a call builds (`BertModel(config)`, `AutoModel.from_config(...)`), or None for a call of a
    function, a method of a module or of self (`nn.Linear`, `self.post_init`)."""
    import ast

    if not isinstance(node, ast.Call):
        return None
    func = node.func
    called = func.id if isinstance(func, ast.Name) else (
        func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None)
    return None if called is None or called[:1].islower() else called
