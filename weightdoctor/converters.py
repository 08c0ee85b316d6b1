"""The conversion scripts advice names: a command to run where the installed library ships the script, else the
script named by its place in the library's source repository, with the real paths to give it."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from weightdoctor.checkpoint.reader import Checkpoint

# Where each library keeps its scripts in its source repository: transformers' convert_*.py sit inside the package
# (src/transformers/models/X/), but its wheels leave them out (transformers 5 ships none); diffusers' sit in the
# repository's scripts/ folder, which no wheel holds.
_SOURCES = {"transformers": ("src/transformers/", "github.com/huggingface/transformers"),
            "diffusers": ("", "github.com/huggingface/diffusers")}


def shipped_module(library: str, script: str) -> str | None:
    """The module `python -m` runs for `script` (a path inside the package `library`, such as
    `models/whisper/convert_openai_to_hf.py`) where the installed `library` ships it; None where it does not, or
    `library` is not installed. Nothing is imported: the package's folder is looked in.

    Example:
        >>> shipped_module("no_such_library_here", "models/x/convert_x.py") is None
        True
    """
    try:
        spec = importlib.util.find_spec(library)
    except (ImportError, ValueError):  # a broken or half-removed install: nothing to run
        return None
    for folder in (spec.submodule_search_locations or ()) if spec is not None else ():
        if os.path.isfile(os.path.join(folder, script)):
            return f"{library}.{script.removesuffix('.py').replace('/', '.')}"
    return None


def _installed_version(library: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(library)
    except PackageNotFoundError:
        return None


def conversion_advice(library: str, script: str, flags: Sequence[tuple[str, str | None]] = (), *,
                      in_package: bool = True) -> str:
    """How to run `library`'s conversion `script` with `flags` ((flag, value): a value None is a switch; values are
    shell-quoted): `python -m MODULE --flag value ...` where the installed library ships it; else the script named
    by its path in the library's source repository, the flags said after it. `in_package`: the script's path is
    inside the package (transformers' models/X/); False for a repository's scripts/ folder, which no wheel ships.

    A printed `transformers' models/whisper/convert_openai_to_hf.py --checkpoint_path A --pytorch_dump_folder_path
    OUT` named neither a file the user has (transformers 5's wheels ship no conversion script) nor their files.

    Example:
        >>> conversion_advice("diffusers", "scripts/convert_x.py", [("--checkpoint_path", "a b.pth")],
        ...                   in_package=False).split(", given ")
        ["diffusers' convert_x.py, which no installed diffusers ships (scripts/convert_x.py in its source repository, \
github.com/huggingface/diffusers)", "--checkpoint_path 'a b.pth'"]
    """
    from weightdoctor.paths import shell_word

    words = " ".join(flag if value is None else f"{flag} {shell_word(value, argument=True)}"
                     for flag, value in flags)
    module = shipped_module(library, script) if in_package else None
    if module is not None:
        return f"python -m {module}" + (f" {words}" if words else "")
    return f"{library}' {Path(script).name}, {not_shipped(library, script, in_package=in_package)}" + (
        f", given {words}" if words else "")


def not_shipped(library: str, script: str, *, in_package: bool = True) -> str:
    """Words saying that no installed `library` ships `script`, and where its source is.

    Example:
        >>> not_shipped("diffusers", "scripts/convert_x.py", in_package=False).split(" (")[0]
        'which no installed diffusers ships'
    """
    prefix, repository = _SOURCES.get(library, ("", library))
    version = _installed_version(library) if in_package else None
    shipped = (f"which the installed {library} {version} does not ship" if version is not None else
               f"which no installed {library} ships" if not in_package else f"({library} is not installed)")
    return f"{shipped} ({prefix}{script} in its source repository, {repository})"


def conversion_paths(checkpoint: Checkpoint) -> tuple[str, str] | None:
    """A checkpoint's one weights file as a path to type where the user stands, and a new folder for a conversion
    script to write into: the source as typed when it is that file (its folder's file when a folder was typed) and
    a folder beside it (`tiny.pt` -> `tiny-hf`, numbered where taken); a Hub source's cached file and a folder of its
    name where the user stands (not inside the cache). None when the weights are in several files (a conversion
    script reads one).

    Example:
        >>> conversion_paths(checkpoint)  # doctest: +SKIP
        ('tiny.pt', 'tiny-hf')
    """
    from weightdoctor.paths import fresh_sibling

    weights = [file for file in checkpoint.files if file.role == "weights"]
    if len(weights) != 1:
        return None
    if checkpoint.repo_id is not None:
        typed, beside = os.fspath(weights[0].path), Path(weights[0].path.name)
    else:
        typed = checkpoint.source if checkpoint.path.is_file() else os.path.join(checkpoint.source,
                                                                                 weights[0].relpath)
        typed = os.path.expanduser(typed)  # shell-quoted in the command, a `~` would not be expanded
        beside = Path(typed)
    stem = beside.with_suffix("") if beside.suffix and beside.stem else beside
    return typed, os.fspath(fresh_sibling(stem, "-hf"))
