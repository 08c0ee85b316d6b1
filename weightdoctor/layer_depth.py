"""diff-keys' reading of two checkpoints of one architecture at another depth (a distilled student, its teacher)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from operator import methodcaller

from weightdoctor.diff_keys import KeySpec, _number_list
from weightdoctor.wording import counted

_LAYER_NUMBER = re.compile(r"^(?P<list>(?:[^.]+\.)*?[^.\d][^.]*)\.(?P<number>\d+)\.(?P<tail>.+)$")


def _layers_of(names: Iterable[str], module: str) -> dict[int, set[str]]:
    """Number -> the rests of the names below `module`.<number> (`model.layers` -> {0: {"mlp.up.weight", ...}})."""
    found: dict[int, set[str]] = defaultdict(set)
    lead = module + "."
    for name in filter(methodcaller("startswith", lead), names):
        number, _, tail = name[len(lead):].partition(".")
        if number.isdigit() and tail:
            found[int(number)].add(tail)
    return found


def layer_count_whys(specs_a: Mapping[str, KeySpec], specs_b: Mapping[str, KeySpec], missing: Sequence[str],
                     unexpected: Sequence[str]) -> tuple[dict[str, tuple[str, str, str]], str]:
    """(reason, severity, detail) of the keys that differ because one side has more layers of one list than the
    other (a distilled student against its teacher, a model with fewer num_hidden_layers), and a note; ({}, "")
    otherwise. They were `unknown: no known cause`, with no detail.

    It applies where every key on one side's extra layers is missing (or unexpected) and nothing else of that
    side is, both sides number the list 0 to N-1, and each extra layer holds the names and shapes of the other
    side's layer 0. Missing layers start from their init (an error); A's extra layers are dropped while B gets
    every weight it needs (a warning: the model is A cut to B's depth, which is what initializing a student from
    its teacher's first layers does, and what a wrong config does too).

    Example:
        >>> a = {n: KeySpec(n, (2,), "float32") for n in ("h.0.w", "h.1.w", "h.2.w")}
        >>> b = {n: KeySpec(n, (2,), "float32") for n in ("h.0.w",)}
        >>> whys, note = layer_count_whys(a, b, [], ["h.1.w", "h.2.w"])
        >>> whys["h.2.w"][:2], note[:40]
        (('layer-count', 'warn'), 'A has 3 layers under h (0-2), B has 1 (0')
    """
    for side, other, keys, kind in ((specs_b, specs_a, missing, "missing"), (specs_a, specs_b, unexpected,
                                                                               "unexpected")):
        if not keys:
            continue
        found = _LAYER_NUMBER.match(keys[0])
        if found is None:
            continue
        module = found["list"]
        ours, theirs = _layers_of(side, module), _layers_of(other, module)
        extra = set(ours) - set(theirs)
        if not theirs or not extra or sorted(ours) != list(range(len(ours))) \
                or sorted(theirs) != list(range(len(theirs))) or not set(theirs) < set(ours):
            continue
        lead = module + "."
        under_extra = {f"{lead}{number}.{tail}" for number in extra for tail in ours[number]}
        if under_extra != set(keys):
            continue
        first = {tail: tuple(other[f"{lead}0.{tail}"].shape) for tail in theirs[0]}
        if any({tail: tuple(side[f"{lead}{number}.{tail}"].shape) for tail in ours[number]} != first
               for number in extra):
            continue
        more, fewer = ("B", "A") if kind == "missing" else ("A", "B")
        numbers = _number_list(sorted(extra))
        if kind == "missing":
            why = ("layer-count", "error", f"B's {module} {numbers}, which A has none of (A has "
                   f"{counted(len(theirs), 'layer')}): starts from its init")
            outcome = (f"loaded into B, A fills B's first {counted(len(theirs), 'layer')} and B's {module} {numbers} "
                       "start from their init (from_pretrained lists them missing)")
        else:
            why = ("layer-count", "warn", f"A's {module} {numbers}, which B has none of (B has "
                   f"{counted(len(theirs), 'layer')}): dropped")
            outcome = (f"loaded into B, A's {module} {numbers} are dropped (from_pretrained lists them unexpected) "
                       f"and B is A cut to its first {counted(len(theirs), 'layer')}")
        note = (f"{more} has {len(ours)} layers under {module} ({_number_list(sorted(ours))}), {fewer} has "
                f"{len(theirs)} ({_number_list(sorted(theirs))}), each with the names and shapes of the other's: "
                f"the same architecture at another depth (a distilled student against its teacher, a config with "
                f"another num_hidden_layers); {outcome}. No rename fixes it: to keep A whole, load it into a "
                "model built from its own config (from_pretrained of A)")
        return dict.fromkeys(keys, why), note
    return {}, ""
