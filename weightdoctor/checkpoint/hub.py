"""Resolving a Hub repo id to a local folder through huggingface_hub and its cache."""

from __future__ import annotations

import os
import re
from pathlib import Path

from weightdoctor.errors import SourceNotFound

REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# What the reader may need from a repo; weights of one kind only (safetensors preferred).
CONFIG_PATTERNS = ["*.json", "*.txt", "*.model"]
SAFETENSORS_PATTERNS = ["*.safetensors", "*.safetensors.index.json"]
PICKLE_PATTERNS = ["*.bin", "*.bin.index.json", "*.pt", "*.pth"]


def looks_like_repo_id(source: str) -> bool:
    """True for `bert-base-chinese` or `org/name`; False for anything that reads as a path."""
    return bool(REPO_ID_RE.match(source)) and not source.startswith(".") and ".." not in source


def hub_cache_dir() -> Path:
    """The Hub cache folder, read from the environment at call time (HF_HUB_CACHE, then HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def resolve_repo_id(repo_id: str, revision: str | None = None, weights: bool = True) -> Path:
    """Return a local snapshot folder for `repo_id`, from the cache or else from the Hub.

    From the Hub only what the reader needs is fetched: config and tokenizer JSON, the index, and the
    weights of one format (safetensors when the repo has them). With `weights=False` (a command that
    needs the config alone), weights are not fetched at all.

    Raises:
        SourceNotFound: not cached and the Hub is offline, unreachable or has no such repo.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache_dir = hub_cache_dir()
    try:
        return Path(
            snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True)
        )
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    where = f"revision {revision!r} of " if revision else ""
    if hub_offline():
        raise SourceNotFound(
            f"{where}{repo_id!r} is not a local path and is not in the Hugging Face cache at {cache_dir}"
            " (HF_HUB_OFFLINE is set, so the Hub was not asked)"
        )
    try:
        from huggingface_hub import HfApi

        files = HfApi().list_repo_files(repo_id, revision=revision)
        patterns = list(CONFIG_PATTERNS)
        if weights:
            has_safetensors = any(f.endswith(".safetensors") for f in files)
            patterns += SAFETENSORS_PATTERNS if has_safetensors else PICKLE_PATTERNS
        return Path(
            snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns)
        )
    except Exception as exc:  # network errors, 404s, auth: all mean "cannot get it"
        reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise SourceNotFound(
            f"{where}{repo_id!r} is not a local path, not in the cache at {cache_dir}, and the Hub "
            f"could not provide it: {reason[:160]}"
        ) from exc
