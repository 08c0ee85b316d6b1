"""Inert stand-ins for the configuration objects that training checkpoints pickle beside their weights.

fairseq saves its `argparse.Namespace` of arguments, Hydra / NeMo / Lightning projects an omegaconf
`DictConfig`, Lightning its `AttributeDict` of hyper-parameters, many scripts a `pathlib.Path`. torch's
weights_only loader refuses all of them, so `torch.load` fails on the checkpoint although its tensors are
plain. The reader unpickles each such object as an `InertObject` of a class made here, under the same name:
the real class is never imported and none of its code runs (what `policy.INERT_GLOBALS` lists, nothing else).
"""

from __future__ import annotations

import pickle
from typing import Any


class InertObject(dict):  # type: ignore[type-arg]
    """An object of a class that was never imported: it keeps what the pickle gave it and does nothing.

    A dict, so that a pickled dict subclass (`AttributeDict`, omegaconf's containers) can be filled item by
    item; its constructor arguments, BUILD state and appended items are kept apart for `repr` only.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> InertObject:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Not dict.__init__: the arguments are whatever the pickle passed to a class it thought was another.
        self.__dict__["_inert_args"] = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_inert_state"] = state

    def append(self, item: Any) -> None:
        self.__dict__.setdefault("_inert_items", []).append(item)

    def extend(self, items: Any) -> None:
        for item in items:
            self.append(item)

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__qualname__}, read as inert data>"


_CLASSES: dict[str, type[InertObject]] = {}


def inert_class(qualified: str) -> type[InertObject]:
    """The stand-in class for `qualified` ("argparse.Namespace"), one per name, named as the original.

    Example:
        >>> inert_class("argparse.Namespace")(prog="x")
        <argparse.Namespace, read as inert data>
    """
    found = _CLASSES.get(qualified)
    if found is None:
        module, _, name = qualified.rpartition(".")
        found = type(name, (InertObject,), {"__module__": module, "__qualname__": name})
        _CLASSES[qualified] = found
    return found


# The texts of copyreg._reconstructor and of the bases it builds inert classes on (policy.RECONSTRUCTION_GLOBALS).
_RECONSTRUCTORS = frozenset({"copyreg._reconstructor", "copy_reg._reconstructor"})
# Each base's stand-in by its name, and the base it loads as (protocols 0 and 1 write str as Python 2's unicode).
_BASES = {"object": "object", "dict": "dict", "str": "str", "unicode": "str", "basestring": "str"}


def inert_reconstructor(cls: Any, base: Any, state: Any) -> InertObject:
    """copyreg._reconstructor(cls, base, state) for stand-ins: `cls.__new__(cls)` of an inert stand-in class, filled
    with `state`'s items where base is dict, as protocols 0 and 1 build an inert class (the scan vouched for each call
    before anything was unpickled). It calls no base's __new__ or __init__: anything else is refused.

    Example:
        >>> made = inert_reconstructor(inert_class("argparse.Namespace"), inert_class("__builtin__.object"), None)
        >>> made
        <argparse.Namespace, read as inert data>

    Raises:
        pickle.UnpicklingError: cls or base is not a stand-in, or state is not what that base takes.
    """
    stood_in = isinstance(base, type) and issubclass(base, InertObject)
    base_name = _BASES.get(getattr(base, "__qualname__", "")) if stood_in else None
    if not (isinstance(cls, type) and issubclass(cls, InertObject)) or base_name is None or (
            {"object": state is not None, "dict": not isinstance(state, dict), "str": not isinstance(state, str)}
            [base_name]):
        raise pickle.UnpicklingError(f"refused copyreg._reconstructor({cls!r}, {base!r}, {type(state).__name__}): it "
                                     "builds an inert stand-in on object, dict or str only")
    made = cls.__new__(cls)
    if isinstance(state, dict):
        dict.update(made, state)
    elif state is not None:
        made.__dict__["_inert_args"] = (state,)
    return made


def stand_in(qualified: str) -> Any:
    """What the reader puts in place of an inert global: `inert_reconstructor` for copyreg._reconstructor, else the
    stand-in class of `inert_class`.

    Example:
        >>> stand_in("copy_reg._reconstructor") is inert_reconstructor, stand_in("argparse.Namespace")
        (True, <class 'argparse.Namespace'>)
    """
    return inert_reconstructor if qualified in _RECONSTRUCTORS else inert_class(qualified)
