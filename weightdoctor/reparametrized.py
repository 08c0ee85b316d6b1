"""Weights saved while one of torch's reparametrizations was applied (torch.nn.utils.prune, spectral_norm,
torch.nn.utils.parametrize): the names such a module keeps, each with the name it stores once the reparametrization
is removed, for inspect's warning and diff-keys' reason `reparametrized`."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

# parametrize.register_parametrization moves `weight` to `parametrizations.weight.original` (`original0`,
# `original1`, ... where the parametrization's right_inverse returns several tensors: weight_norm's g and v), the
# parametrization modules' own state beside it as `parametrizations.weight.0.*` (spectral_norm's `_u`, `_v`).
_PARAMETRIZED = re.compile(r"^(?P<module>(?:.*\.)?)parametrizations\.(?P<tensor>[^.]+)\.(?:original\d*|\d+\..+)$")
_SUFFIXES = ("_orig", "_mask", "_u", "_v", "_g")

REMOVE: dict[str, str] = {
    "prune": "torch.nn.utils.prune keeps a pruned {leaf} as {leaf}_orig (the weights before pruning) and {leaf}_mask "
             "(a buffer of 0s and 1s) and computes {leaf} = {leaf}_orig * {leaf}_mask at each forward: "
             "prune.remove(module, '{leaf}') on the pruned model before saving stores the pruned {leaf} under its "
             "own name, which a model never pruned loads",
    "spectral_norm": "torch.nn.utils.spectral_norm keeps {leaf} as {leaf}_orig with its power-iteration vectors "
                     "{leaf}_u and {leaf}_v and divides it by its largest singular value at each forward: "
                     "torch.nn.utils.remove_spectral_norm(module) before saving stores {leaf} itself; a model with "
                     "spectral_norm applied to the same modules loads these names as they are",
    "weight_norm": "torch.nn.utils.weight_norm (the old hook) keeps {leaf} as {leaf}_g (its norms) and {leaf}_v (its "
                   "directions) and computes {leaf} = {leaf}_g * {leaf}_v / ||{leaf}_v|| at each forward, so "
                   "{leaf}_v alone is not {leaf}: torch.nn.utils.remove_weight_norm(module) before saving stores "
                   "{leaf} itself; a model with weight_norm applied to the same modules loads these names as they "
                   "are (transformers renames them to parametrizations.{leaf}.original0 / original1 where its model "
                   "uses parametrize)",
    "parametrize": "torch.nn.utils.parametrize keeps {leaf} as parametrizations.{leaf}.original (original0, "
                   "original1, ... for weight_norm's g and v) with its parametrization's state and computes {leaf} "
                   "at each forward: torch.nn.utils.parametrize.remove_parametrizations(module, '{leaf}') before "
                   "saving (torch.ao.pruning's sparsifiers: sparsifier.squash_mask()) stores {leaf} itself; a "
                   "model with the same parametrizations registered loads these names as they are",
}


@dataclass(frozen=True)
class Reparametrized:
    """A name kept under a reparametrization: `stored` is the name the module stores without it, `family` the
    reparametrization (a key of REMOVE)."""

    stored: str
    family: str

    @property
    def leaf(self) -> str:
        return self.stored.rpartition(".")[2]

    @property
    def how_to_remove(self) -> str:
        return REMOVE[self.family].format(leaf=self.leaf)


def reparametrized_name(name: str, names: Collection[str]) -> Reparametrized | None:
    """What `name` is, where its siblings in `names` (the same state dict's keys) show it kept under a
    reparametrization; None otherwise. A set or a mapping makes each call a few lookups.

    Example:
        >>> reparametrized_name("fc.weight_mask", {"fc.weight_orig", "fc.weight_mask", "fc.bias"})
        Reparametrized(stored='fc.weight', family='prune')
        >>> reparametrized_name("fc.weight_orig", {"fc.weight_orig", "fc.bias"}) is None
        True
    """
    matched = _PARAMETRIZED.match(name)
    if matched is not None:
        base = f"{matched['module']}parametrizations.{matched['tensor']}.original"
        if base in names or base + "0" in names:
            return Reparametrized(f"{matched['module']}{matched['tensor']}", "parametrize")
        return None
    suffix = next((s for s in _SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        return None
    stored = name[: -len(suffix)]
    if stored.endswith(".") or not stored:
        return None
    if stored + "_orig" in names and stored + "_mask" in names and suffix in ("_orig", "_mask"):
        return Reparametrized(stored, "prune")
    if stored + "_orig" in names and stored + "_u" in names and stored + "_v" in names:
        return Reparametrized(stored, "spectral_norm")
    if stored + "_g" in names and stored + "_v" in names and suffix in ("_g", "_v"):
        return Reparametrized(stored, "weight_norm")
    return None


def kept_under(name: str, names: Collection[str]) -> Reparametrized | None:
    """Where `name` is a plain tensor (`fc.weight`) that `names`, another state dict's keys, keep under a
    reparametrization (`fc.weight_orig` and `fc.weight_mask`, `fc.parametrizations.weight.original`); None otherwise.

    Example:
        >>> kept_under("conv.weight", {"conv.weight_orig", "conv.weight_u", "conv.weight_v"})
        Reparametrized(stored='conv.weight', family='spectral_norm')
    """
    module, _, leaf = name.rpartition(".")
    parametrized = f"{module}.parametrizations.{leaf}.original" if module else f"parametrizations.{leaf}.original"
    for candidate in (name + "_orig", name + "_g", parametrized, parametrized + "0"):
        if candidate in names:
            found = reparametrized_name(candidate, names)
            if found is not None and found.stored == name:
                return found
    return None


def reparametrized(names: Iterable[str]) -> dict[str, Reparametrized]:
    """Every name of a state dict kept under a reparametrization, with what it is.

    Example:
        >>> sorted(reparametrized(["fc.weight_orig", "fc.weight_mask", "fc.bias"]))
        ['fc.weight_mask', 'fc.weight_orig']
    """
    keys = set(names)
    found = {name: reparametrized_name(name, keys) for name in keys}
    return {name: what for name, what in found.items() if what is not None}
