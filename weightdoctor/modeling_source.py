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
    folder = models / model_type.replace("-", "_")
    files = sorted(folder.glob("modeling_*.py")) if folder.is_dir() else []
    if not files:
        return None
    texts = [_read(path) for path in files]
    for other, module in sorted({m.groups() for text in texts for m in _OTHER_MODELING.finditer(text)}):
        files.append(models / other / f"{module}.py")
    return tuple(files)


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
_PLAIN_BASES = frozenset({"object", "nn.Module", "torch.nn.Module", "GenerationMixin", "GradientCheckpointingLayer",
                          "ModelOutput", "torch.autograd.Function", "Function", "Enum", "Exception"})


def fp32_modules_plan(config: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The `_keep_in_fp32_modules` and `_keep_in_fp32_modules_strict` of the model class a config builds, read from
    its modeling code's text (T5's `(("wo",), ())`), where that text alone answers it: one model_type (no
    sub-configs), every PreTrainedModel class of its files inheriting the same two lists, written as literals,
    and nothing else in the code touching them. None otherwise (build the class to know).

    transformers' `post_init` adds the lists of the PreTrainedModel submodules to the model's own; where every such
    class of the files has the same lists, the model's are those, whichever class `architectures` names.

    Example:
        >>> fp32_modules_plan({"model_type": "t5"})  # doctest: +SKIP
        (('wo',), ())
    """
    import ast

    types = config_model_types(config)
    if config.get("auto_map") is not None or len(types) != 1:
        return None
    files = _modeling_files(types[0])
    if not files:
        return None
    classes: dict[str, tuple[list[str], dict[str, Any]]] = {}
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
                if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                        and isinstance(statement.targets[0], ast.Name)
                        and statement.targets[0].id in _FP32_ATTRIBUTES):
                    try:
                        value = ast.literal_eval(statement.value)
                    except ValueError:
                        return None  # computed (`AttributeError()`, a comprehension): not a literal
                    if value is not None and not (isinstance(value, (list, tuple, set))
                                                  and all(isinstance(item, str) for item in value)):
                        return None
                    plan[statement.targets[0].id] = tuple(sorted(set(value or ())))
                    assigned.add(id(statement.targets[0]))
            classes[node.name] = ([ast.unparse(base) for base in node.bases], plan)
        for node in ast.walk(tree):
            # Set or read anywhere else (`self._keep_in_fp32_modules = ...` in __init__, a getattr by name): the
            # class's lists are not those its text declares.
            named = (node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name)
                     else node.value if isinstance(node, ast.Constant) else None)
            if named in _FP32_ATTRIBUTES and id(node) not in assigned:
                return None

    def resolved(name: str, seen: frozenset[str]) -> tuple[bool, dict[str, Any]] | None:
        """Whether class `name` is a PreTrainedModel, with the lists it inherits; None where that is not known."""
        if name == "PreTrainedModel":
            return True, {}
        if name in _PLAIN_BASES:
            return False, {}
        if name not in classes or name in seen:
            return None
        bases, own = classes[name]
        is_model = False
        inherited: dict[str, Any] = {}
        for base in reversed(bases):  # the first base's lists win, as Python's method resolution order gives them
            found = resolved(base, seen | {name})
            if found is None:
                return None
            is_model = is_model or found[0]
            inherited |= found[1]
        return is_model, inherited | own

    plans: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
    for name in classes:
        found = resolved(name, frozenset())
        if found is None:
            return None
        if found[0]:
            plans.add(tuple(found[1].get(attribute, ()) for attribute in _FP32_ATTRIBUTES))  # type: ignore[arg-type]
    return next(iter(plans)) if len(plans) == 1 else None
