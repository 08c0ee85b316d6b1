"""A Typer-free path for plain `diff-keys A B [options]` runs, taken before Typer is even imported.

Why: importing Typer and the Click it vendors takes ~30 ms, a third of a `diff-keys --json` run over two
headers; CI gates call it once per checkpoint pair. Only argument lists whose meaning is beyond doubt take
this path: every option known, given once (flags and `--rename` may repeat), each value a separate token not
starting with "-", and exactly the positional arguments the command needs. Anything else (`--help`,
`--opt=value`, `--`, an unknown option or a missing value, `--model-class`, shell completion) returns None,
and Typer parses it as always. A test holds the keyword arguments built here equal to the ones Typer passes.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FastCommand:
    """The subset of a command's arguments the fast path parses, and the Typer-free function that runs it."""

    runner: str  # "module:function"; it takes the parameters below and returns the exit code
    positionals: tuple[str, ...]  # parameter names of the positional arguments, in order, all required here
    flags: Mapping[str, str]  # option -> parameter set to True
    options: Mapping[str, str]  # option -> parameter taking one value (given at most once)
    repeatable: Mapping[str, str]  # option -> parameter collecting a list of values, in order
    defaults: Mapping[str, Any]  # what Typer passes for a parameter that is not given


FAST_COMMANDS: dict[str, FastCommand] = {
    "diff-keys": FastCommand(
        runner="weightdoctor.commands._diff_keys_run:run_diff_keys",
        positionals=("source_a", "source_b"),
        flags={"--json": "json_output", "--all": "show_all", "--values": "values", "--debug": "debug"},
        options={"--fail-on": "fail_on", "--key": "key", "--revision": "revision", "--revision-b": "revision_b"},
        repeatable={"--rename": "renames"},
        defaults={"json_output": False, "show_all": False, "values": False, "debug": False, "fail_on": "error",
                  "key": None, "revision": None, "revision_b": None, "renames": None, "model_class": None,
                  "config": None, "num_labels": None},
    ),
}


def parse_fast(argv: Sequence[str]) -> tuple[FastCommand, dict[str, Any]] | None:
    """`(command, keyword arguments)` when `argv` (without the program name) can take the fast path, else None.

    Example:
        >>> parse_fast(["diff-keys", "a.safetensors", "b.safetensors", "--json"])[1]["json_output"]
        True
        >>> parse_fast(["diff-keys", "a.safetensors", "--model-class", "BertModel"]) is None
        True
    """
    if not argv or argv[0] not in FAST_COMMANDS or _completion_requested():
        return None
    command = FAST_COMMANDS[argv[0]]
    kwargs = dict(command.defaults)
    given: set[str] = set()
    positionals: list[str] = []
    tokens = iter(argv[1:])
    for token in tokens:
        if not token.startswith("-"):
            positionals.append(token)
        elif token in command.flags:
            kwargs[command.flags[token]] = True  # a repeated flag stays True, as in Click
        elif token in command.options or token in command.repeatable:
            value = next(tokens, None)
            if value is None or value.startswith("-"):
                return None  # Click's business: a missing value, or one that looks like an option
            if token in command.repeatable:
                kwargs[command.repeatable[token]] = [*(kwargs[command.repeatable[token]] or []), value]
            elif token in given:
                return None  # Click keeps the last; leave that to it
            else:
                given.add(token)
                kwargs[command.options[token]] = value
        else:
            return None
    if len(positionals) != len(command.positionals):
        return None
    kwargs.update(zip(command.positionals, positionals, strict=True))
    return command, kwargs


def _completion_requested() -> bool:
    # Click answers shell completion when `_<PROG>_COMPLETE` is set; only Typer may handle that.
    return any(name.startswith("_") and name.endswith("_COMPLETE") for name in os.environ)


def run_fast(command: FastCommand, kwargs: dict[str, Any]) -> int:
    """Run `command` with `kwargs` and return its exit code; failures are reported as the Typer commands do."""
    from weightdoctor.commands._errors import report_failure

    kwargs = dict(kwargs)
    debug = bool(kwargs.pop("debug", False))
    module_name, _, function_name = command.runner.partition(":")
    try:
        runner: Callable[..., int] = getattr(importlib.import_module(module_name), function_name)
        return runner(**kwargs)
    except BrokenPipeError:
        raise  # handled by `weightdoctor.entry.main`: exit 141, nothing printed
    except (KeyboardInterrupt, Exception) as exc:
        return report_failure(exc, debug, kwargs.get("source_a"))
