"""Resolving a Hub repo id through huggingface_hub: the local cache first, then (online) the Hub itself."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightdoctor.errors import SourceNotFound, UsageError, clip_words, closest
from weightdoctor.paths import entries_under, expand_user, shell_word
from weightdoctor.paths import exists as path_exists

if TYPE_CHECKING:
    from huggingface_hub.utils._safetensors import SafetensorsRepoMetadata

# A ref holds a 40-character commit hash; anything much longer is not one (and is not read).
MAX_REF_BYTES = 4096
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?\Z")  # \Z: "$" would accept a trailing newline


# The Hub's longest repo name (huggingface_hub's validate_repo_id); no org is longer. A longer part is no repo, and
# its cache folder (`datasets--org--` and 300 letters) is past a file name's 255 bytes: stat raised ENAMETOOLONG.
MAX_REPO_NAME = 96


def looks_like_repo_id(source: str) -> bool:
    """True for `bert-base-chinese` or `org/name`; False for anything that reads as a path."""
    return bool(REPO_ID_RE.match(source)) and not source.startswith(".") and ".." not in source \
        and all(len(part) <= MAX_REPO_NAME for part in source.split("/"))


_HUB_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")
# What follows `org/name` in a Hub page's address: `/tree/REV[/folder]`, `/blob/REV/file`, `/resolve/REV/file`,
# `/commit/SHA`; other pages of a repo (`/discussions/3`) name no revision.
_HUB_URL_FILES = ("blob", "resolve", "raw")
_HUB_URL_VIEWS = ("tree", "commit", *_HUB_URL_FILES)
_HUB_URL_PAGES = ("commits", "discussions", "edit", "settings", "blame")
# The Hub website's own routes, which no user or org may be named (`huggingface.co/docs/transformers/index`): a page
# of one is no repo, where its path was offered as the repo id to type (`docs/transformers/index`).
_HUB_SITE_PAGES = frozenset((
    "docs", "blog", "models", "settings", "papers", "collections", "api", "learn", "tasks", "posts", "join",
    "login", "logout", "pricing", "organizations", "new", "new-dataset", "new-space", "chat", "search",
    "notifications", "enterprise", "inference-endpoints", "changelog", "welcome", "privacy", "terms-of-service"))
_SITE_PAGE_HINT = ("a page of the Hugging Face website, not of a repo: give the id (org/name) of the model repo to "
                   "read")


def _hostname(url: str) -> str | None:
    """The host of `url`, or None where Python's URL parser refuses it (`https://[::1`: an unclosed IPv6 host)."""
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def url_source_hint(text: str) -> str | None:
    """What to type instead of a web address given as a source (a Hub page's, an `hf://` URI, any other URL),
    which was read as a local path ("no such file or directory"); None when `text` is not one.

    Example:
        >>> url_source_hint("https://huggingface.co/org/name/tree/v1.0")
        'a web address, not a local path: give the repo id instead: org/name --revision v1.0'
    """
    from urllib.parse import unquote, urlsplit

    scheme, _, rest = text.partition("://")
    if not rest:
        scheme, rest = "", text
        if not rest.lower().startswith(tuple(f"{host}/" for host in _HUB_HOSTS)):
            return None
    scheme = scheme.lower()
    if scheme == "file":
        # Copied from a browser's address bar or a file manager: the path is right there, nothing to download.
        local = unquote(urlsplit(text).path)
        return f"a file:// URL, not a path: give the path itself: {shell_word(local)}" if local else \
            "a file:// URL without a path"
    if scheme == "hf":
        # huggingface_hub's HfFileSystem form: hf://[datasets/|spaces/]org/name[@revision][/path]
        parts = [unquote(part) for part in rest.split("/") if part]
    elif scheme in ("", "http", "https") and (_hostname(f"https://{rest}") or "") in _HUB_HOSTS:
        parts = [unquote(part) for part in urlsplit(f"https://{rest}").path.split("/") if part]
    else:
        return ("a URL, not a local path: weightdoctor reads local files and Hub repo ids; download it first and "
                "give its path")
    if parts and parts[0] in ("datasets", "spaces"):
        return f"a Hub {parts[0][:-1]} repo, not a model repo: weightdoctor reads model checkpoints"
    if not parts:
        return "a Hub address without a repo: give the repo id (org/name)"
    if scheme != "hf" and parts[0] in _HUB_SITE_PAGES:
        return _SITE_PAGE_HINT
    # `bert-base-uncased/tree/main`: a repo without an org, as the Hub still serves the oldest ones.
    width = 1 if len(parts) == 1 or parts[1] in _HUB_URL_VIEWS + _HUB_URL_PAGES else 2
    repo, view, tail = "/".join(parts[:width]), "", parts[width:]
    revision = None
    if "@" in repo:  # hf://org/name@v1.0
        repo, _, revision = repo.partition("@")
    if tail and tail[0] in _HUB_URL_VIEWS + _HUB_URL_PAGES:
        view, tail = tail[0], tail[1:]
        if view in _HUB_URL_PAGES:
            tail = []
        elif tail:
            revision, tail = tail[0], tail[1:]
    revision = revision if revision != "main" else None
    flag = f" --revision {shell_word(revision)}" if revision else ""
    if view in _HUB_URL_FILES and tail:
        # Each word quoted: `my%20dir/x.bin` unquoted is `my dir/x.bin`, two names to the pasted command.
        return (f"a web address of one file, not a local path: download it "
                f"({download_command(repo, revision, file='/'.join(tail))}) and give its path, or give the repo id: "
                f"{shell_word(repo, argument=True)}{flag}")
    # A folder of the repo (`tree/main/unet`, `hf://org/name/unet`): a diffusers pipeline keeps one model per folder.
    # Quoted as one word: `tree/main/my%20dir` was said as `org/pipe/my dir`, two words to the pasted command.
    folder = "".join(f"/{part}" for part in tail)
    said = shell_word(repo + folder, argument=True)
    return f"a web address, not a local path: give the repo id instead: {said}{flag}"


def _first_shell_word(text: str) -> str:
    """The first word of `text` as a shell reads it (`'org/pipe/my dir' --revision v1` -> `org/pipe/my dir`); the text
    up to its first space where it is no shell words (an unclosed quote)."""
    import shlex

    try:
        words = shlex.split(text)
    except ValueError:
        words = []
    return words[0] if words else text.partition(" ")[0]


_REPO_SUBFOLDER_RE = re.compile(r"^([A-Za-z0-9][\w.-]*/[\w.-]+)/((?:[\w.-]+/)*[\w.-]+)/?\Z")


def split_repo_subfolder(source: str) -> tuple[str, str] | None:
    """`org/name/unet` -> ("org/name", "unet"): a folder inside a Hub repo (diffusers pipelines keep each
    model in one); None for anything else.

    Example:
        >>> split_repo_subfolder("stabilityai/sd-turbo/unet"), split_repo_subfolder("org/name")
        (('stabilityai/sd-turbo', 'unet'), None)
    """
    match = _REPO_SUBFOLDER_RE.match(source)
    if match is None or source.startswith(".") or any(part in (".", "..") for part in source.split("/")) \
            or not looks_like_repo_id(match.group(1)) or any(len(os.fsencode(part)) > 255
                                                             for part in match.group(2).split("/")):
        return None
    return match.group(1), match.group(2)


def hub_cache_dir() -> Path:
    """The Hub cache folder, read from the environment at call time as huggingface_hub reads it at import:
    HF_HUB_CACHE, then HUGGINGFACE_HUB_CACHE, then HF_HOME/hub, then XDG_CACHE_HOME/huggingface/hub, with `~`
    and `$VARS` expanded (a `$SCRATCH/hf` that a Dockerfile ENV or a systemd unit leaves unexpanded).

    A variable set to "" counts as set, as huggingface_hub's `os.getenv(name, default)` counts it: `HF_HOME=""` is the
    cache `hub/` of the current folder, where `hf download` and from_pretrained then put and find repos (read as
    unset, the default cache was looked in instead).
    """
    if (folder := os.environ.get("HF_HUB_CACHE")) is None:
        folder = os.environ.get("HUGGINGFACE_HUB_CACHE")
    if folder is None:
        home = os.environ.get("HF_HOME")
        if home is None:
            home = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
        folder = os.path.join(os.path.expandvars(os.path.expanduser(home)), "hub")
    return Path(os.path.expandvars(os.path.expanduser(folder)))


def normalize_revision(revision: str | None) -> str | None:
    """`--revision` as the Hub names it: without trailing slashes (`main/`, as a shell completes refs/main).

    A git ref never ends in "/", so `main/` can only mean `main`; a Hub cache folder read it so (refs/main/ is
    refs/main) while a repo id looked up 'main/'. Nothing but slashes is left as typed: no revision to guess.

    Example:
        >>> normalize_revision("refs/pr/1/"), normalize_revision("/")
        ('refs/pr/1', '/')
    """
    if revision is not None and revision.endswith("/") and revision.rstrip("/"):
        return revision.rstrip("/")
    return revision


def download_command(repo_id: str, revision: str | None = None, folder: str | None = None,
                     file: str | None = None) -> str:
    """The command that downloads `repo_id` (or only its `folder`, or its one `file`) into the Hub cache (`hf`;
    `huggingface-cli` is gone since 1.0), each word quoted for a shell. A `folder` whose last name ends in a file's
    extension (letters, then digits: `onnx/model.onnx`, named by an hf:// address) is taken for a file, which
    `hf download` takes by name; a dotted folder name (`Llama-3.1-8B`) stays a folder: as a file name the command
    fetched nothing.

    Example:
        >>> download_command("org/pipe", "v1", folder="vae"), download_command("org/m", folder="onnx/model.onnx")
        ("hf download org/pipe --include 'vae/*' --revision v1", 'hf download org/m onnx/model.onnx')
        >>> download_command("org/m", folder="Llama-3.1-8B"), download_command("org/m", "v1", file="my dir/a.bin")
        ("hf download org/m --include 'Llama-3.1-8B/*'", "hf download org/m 'my dir/a.bin' --revision v1")
    """
    include = f" {shell_word(file)}" if file else ""
    if folder:
        folder = folder.strip("/")
        include = f" {shell_word(folder)}" if re.fullmatch(r"[A-Za-z]+\d*", Path(folder).suffix[1:]) \
            else f" --include {shell_word(folder + '/*')}"
    return f"hf download {shell_word(repo_id)}{include}" + (f" --revision {shell_word(revision)}" if revision else "")


def _offline_variable() -> str | None:
    """The variable that puts huggingface_hub offline, or None: HF_HUB_OFFLINE, or else TRANSFORMERS_OFFLINE
    (huggingface_hub reads the second only when the first is unset or empty, as here)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(name)
        if value:
            return name if value.strip().upper() in {"1", "ON", "YES", "TRUE"} else None
    return None


def hub_offline() -> bool:
    return _offline_variable() is not None


def offline_download_caveat() -> str:
    """`", with HF_HUB_OFFLINE unset: ..."` to follow an `hf download` to paste while huggingface_hub is offline,
    else "". Offline, `hf download` answers from the cache: for a snapshot that lacks a shard or holds a link to a
    deleted blob it prints "Downloaded" and the snapshot's path and fetches nothing."""
    variable = _offline_variable()
    if variable is None:
        return ""
    return f", with {variable} unset: offline, hf download says 'Downloaded' and fetches nothing"


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_unreachable: dict[str, str | None] = {}  # endpoint -> why it cannot be reached (None: it can), once per process


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the Hub endpoint cannot be reached (no route, no DNS, connection refused), or None if it can.

    huggingface_hub retries a failed connection five times with backoff (~23 s, a warning each time): on a
    machine without network a mistyped local path, which looks like a repo id, would hang that long. One TCP
    connection decides first. Behind a proxy the endpoint is not reached directly, so the probe is skipped.
    """
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    if endpoint not in _unreachable:
        url = urlsplit(endpoint)
        host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
        if host is None or any(os.environ.get(name) for name in _PROXY_VARIABLES):
            _unreachable[endpoint] = None
        else:
            try:
                with socket.create_connection((host, port), timeout=timeout):
                    _unreachable[endpoint] = None
            except OSError as exc:
                detail = exc.strerror or str(exc) or type(exc).__name__
                _unreachable[endpoint] = f"cannot connect to {host}:{port}: {detail}"
    return _unreachable[endpoint]


def hub_reachable() -> bool:
    """Whether files can be fetched now: not HF_HUB_OFFLINE, and the endpoint answers."""
    return not hub_offline() and hub_unreachable() is None


def hub_unavailable() -> str | None:
    """Why files cannot be fetched now (`HF_HUB_OFFLINE is set`, `cannot connect to ...`), or None when they can."""
    if (variable := _offline_variable()) is not None:
        return f"{variable} is set"
    return hub_unreachable()


def _cache_folder_problem() -> str:
    """"; that cache folder does not exist (HF_HOME names it)" and the like when the cache folder itself is amiss
    (a mistyped HF_HOME, a file, a folder this user cannot list), else "": "not in the cache" alone sent users
    looking for a download that had happened, into another folder."""
    folder = hub_cache_dir()
    variable = next((name for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")
                     if os.environ.get(name) is not None), None)
    named = f" ({variable} names it)" if variable else ""
    if variable is not None and not os.environ[variable]:
        # Most often `HF_HOME="$UNSET_VAR"`: huggingface_hub reads the current folder then, and so is it read here.
        return f"; {variable} is set but empty, which huggingface_hub reads as a folder relative to the current one"
    try:
        if not folder.exists():
            return f"; that cache folder does not exist{named}"
        if not folder.is_dir():
            return f"; that cache path is a file, not a folder{named}"
        with os.scandir(folder):
            pass
    except OSError as exc:
        return f"; that cache folder cannot be listed ({exc.strerror or type(exc).__name__}){named}"
    return ""


def _require_hub(repo_id: str, revision: str | None, subfolder: str | None = None, fetch: bool = True) -> None:
    """Raise SourceNotFound, in one line, when the Hub is offline (HF_HUB_OFFLINE) or unreachable, with the
    `hf download` that caches the repo (or its `subfolder`) once it can be reached (not with `fetch=False`: the
    caller names the download, of one file)."""
    cache = f"the Hugging Face cache at {hub_cache_dir()}"
    command = download_command(repo_id, revision, folder=subfolder)
    if (variable := _offline_variable()) is not None:
        raise _not_found(repo_id, revision, f"is not in {cache} ({variable} is set){_cache_folder_problem()}",
                         fetch=f"download it with `{command}` (with {variable} unset)" if fetch else "")
    why = hub_unreachable()
    if why is not None:
        raise _not_found(repo_id, revision,
                         f"is not in {cache}, and the Hub is unreachable ({why}){_cache_folder_problem()}",
                         fetch=f"download it with `{command}` where the Hub can be reached" if fetch else "")


def _repo_dir(repo_id: str, repo_type: str = "model") -> Path:
    """The cache folder of a repo, as huggingface_hub names it (`models--org--name`, `datasets--org--name`)."""
    return hub_cache_dir() / (f"{repo_type}s--" + repo_id.replace("/", "--"))


def cached_revisions(repo_id: str) -> list[str]:
    """What the local cache holds of `repo_id`: its refs as `name -> commit`, then snapshots no ref names."""
    repo_dir = _repo_dir(repo_id)
    refs: dict[str, str] = {}
    around: dict[str, str] = {}  # ref -> what surrounds its commit hash (`\n` of `echo $SHA > refs/main`)
    try:
        for ref in entries_under(repo_dir / "refs"):
            if ref.is_file() and ref.stat().st_size <= MAX_REF_BYTES:
                # One ref of bytes that are no text (a damaged cache) is shown as such: it dropped every revision
                # from the answer, which then said the repo was not cached at all.
                raw = ref.read_bytes().decode("utf-8", errors="replace")
                name, text = ref.relative_to(repo_dir / "refs").as_posix(), raw.strip()
                refs[name] = text
                if raw != text and _COMMIT.fullmatch(text):
                    # huggingface_hub reads a ref whole, not stripped: this one names no snapshot to it (nor to
                    # the reader), and listed as `main -> ae23b94cca` it read as a good ref of an uncached repo.
                    before, _, after = raw.partition(text)
                    around[name] = " and ".join(f"{where} by {extra!r}" for where, extra in
                                                (("preceded", before), ("followed", after)) if extra)
        snapshots = sorted(p.name for p in (repo_dir / "snapshots").iterdir() if p.is_dir())
    except OSError:
        snapshots = []
    # A ref holds a commit hash; anything else in it is quoted (bounded), not cut to look like one.
    shown = [f"{name} -> {commit[:10]} {around[name]}, which huggingface_hub reads as part of the ref (it names no "
             "snapshot)" if name in around else
             f"{name} -> {commit[:10]}" + ("" if commit in snapshots else " (snapshot missing)")
             if _COMMIT.fullmatch(commit) else f"{name} -> {commit[:20]!r}, not a commit hash"
             for name, commit in refs.items()]
    return shown + [commit[:10] for commit in snapshots if commit not in refs.values()]


def _cached_in_other_case(repo_id: str) -> list[str]:
    """Repo ids cached under another spelling of `repo_id`'s case (the Hub matches any case, the cache does not)."""
    wanted = _repo_dir(repo_id).name
    try:
        return sorted(p.name.removeprefix("models--").replace("--", "/") for p in hub_cache_dir().iterdir()
                      if p.name.lower() == wanted.lower() and p.name != wanted)
    except OSError:
        return []


def _transformers_cache_holding(repo_id: str) -> Path | None:
    """The folder TRANSFORMERS_CACHE names when it holds `repo_id`'s cache folder and is not the cache read: set by
    older setups (a Dockerfile's `ENV TRANSFORMERS_CACHE=/models`), read by neither huggingface_hub nor transformers
    5, which look in HF_HUB_CACHE or HF_HOME."""
    folder = os.environ.get("TRANSFORMERS_CACHE")
    if not folder:
        return None
    path = Path(os.path.expandvars(os.path.expanduser(folder)))
    try:
        if path.resolve() == hub_cache_dir().resolve() or not (path / _repo_dir(repo_id).name).is_dir():
            return None
    except (OSError, RuntimeError):
        return None
    return path


def _cached_close_to(repo_id: str) -> list[str]:
    """Repo ids in the cache spelled close to `repo_id` (`org/ful` for org/full, `bert-base-uncase`), best first."""
    from weightdoctor.errors import closest

    try:
        cached = [p.name.removeprefix("models--").replace("--", "/")
                  for p in hub_cache_dir().iterdir() if p.name.startswith("models--")]
    except OSError:
        return []
    return closest(repo_id, cached, n=3, cutoff=0.8)


def close_local_paths(text: str) -> list[str]:
    """Entries beside a path that does not exist whose names are close to its last part, written as the path was
    (`./bert-base` -> `./bert-base-uncased`): a typo in a local path is the usual reason it is missing."""
    import difflib
    import itertools

    head, name = os.path.split(text.rstrip("/"))
    if not name:
        return []
    try:
        folder = expand_user(head or ".")
        # Every name is looked at, not the first 10,000 in listing order (which differs between filesystems and
        # runs, and so did the hint); only a folder of millions (a dataset's images) is cut, at 1,000,000 names.
        # Kept: names that start with `name`, and those whose length difflib's 0.75 cutoff allows (a ratio of
        # 2·matches/(len a + len b) needs the shorter at least 0.6 of the longer): a cheap filter before the cap.
        # os.scandir, not Path.iterdir: iterdir is os.listdir before Python 3.13, which reads and holds every name
        # (10,000,000 on a network mount) before the cap, and makes a Path of each name kept.
        size = len(name)
        entries: list[str] = []
        if folder.is_dir():
            with os.scandir(folder) as listing:
                entries = [entry.name for entry in itertools.islice(listing, 1_000_000)
                           if entry.name.startswith(name)
                           or 5 * min(size, len(entry.name)) >= 3 * max(size, len(entry.name))]
    except OSError:
        return []
    if len(entries) > 10000:
        # difflib is slow on many names (1.3 s on 100,000 alike): the 10,000 that share the longest start with
        # `name`, then closest in length, then by name stay, the same on every listing.
        entries = sorted(entries, key=lambda entry: (-len(os.path.commonprefix((entry, name))),
                                                     abs(len(entry) - len(name)), entry))[:10000]
    # A name cut short (`bert-base` for bert-base-uncased) is far from the whole one by difflib's ratio.
    longer = sorted(entry for entry in entries if entry.startswith(name) and len(name) >= 3)
    close = longer + [match for match in difflib.get_close_matches(name, entries, n=3, cutoff=0.75)
                      if match not in longer]
    return [os.path.join(head, match) for match in close[:3]]


def _not_found(repo_id: str, revision: str | None, reason: str, fetch: str = "") -> SourceNotFound:
    """Why `repo_id` (at `revision`) cannot be read, with what the cache holds instead; `fetch` (how to download
    it) ends the message when nothing cached is offered as what was meant, nor the cache folder itself is amiss."""
    where = f"revision {revision!r} of " if revision else ""
    cached = cached_revisions(repo_id)
    if fetch and _cache_folder_problem():
        fetch = ""  # a mistyped HF_HOME is the fix, not a second download
    if cached:
        # The repo is in the cache, only not at this revision (or its ref points at a missing snapshot).
        reason += f"; the cache holds {', '.join(cached[:6])}" + (", ..." if len(cached) > 6 else "")
        if revision:
            # `--revision mian`, `--revision V1.0`: the ref meant, as a mistyped repo id gets the one cached.
            refs = [entry.partition(" -> ")[0] for entry in cached if " -> " in entry]
            close = [ref for ref in closest(revision, refs) if ref != revision and not _other_number(revision, ref)]
            if close:
                reason += f"; did you mean --revision {shell_word(close[0])} (cached)?"
            elif fetch:
                reason += f"; {fetch}"
            # The repo id is cached, so it was read as one: "not a local path" said of a revision misled.
            return SourceNotFound(f"{where}{repo_id!r} {reason}")
        if fetch:
            reason += f"; {fetch}"
    elif (old_cache := _transformers_cache_holding(repo_id)) is not None:
        # The fix is the variable, not a download: the repo is cached, in the folder an old setup names.
        reason += (f"; TRANSFORMERS_CACHE names {old_cache}, which holds {repo_id}, but huggingface_hub and "
                   f"transformers 5 no longer read that variable: set HF_HUB_CACHE={shell_word(str(old_cache))}")
    elif other := _cached_in_other_case(repo_id):
        reason += f"; the cache holds {', '.join(map(repr, other))} (repo ids in the cache are case-sensitive)"
    elif typed := [prefix for prefix, kind in _TYPE_PREFIXES.items() if _repo_dir(repo_id, kind).is_dir()]:
        # `hf download org/name --repo-type dataset` caches it as a dataset; a plain repo id names a model.
        reason += (f"; the cache holds a {_TYPE_PREFIXES[typed[0]]} repo of that name: give it as "
                   f"{typed[0]}/{repo_id}")
    else:
        # A mistyped local folder reads as a repo id (`bert-base`, `runs/exp1`), a mistyped repo id is not cached:
        # the close names of both say which was meant.
        close = close_local_paths(repo_id) + [name for name in _cached_close_to(repo_id) if name != repo_id]
        if close:
            reason += f"; did you mean {' or '.join(map(repr, close[:4]))}?"
        elif fetch:
            reason += f"; {fetch}"
    if revision:
        # "revision 'v2' of 'org/name' is not a local path" said of a revision what is said of the repo id.
        return SourceNotFound(f"{repo_id!r} is not a local path, and revision {revision!r} of it {reason}")
    return SourceNotFound(f"{repo_id!r} is not a local path and {reason}")


def _other_number(typed: str, ref: str) -> bool:
    """Whether two refs differ only in their numbers (`v1.1` and `v1.0`, `refs/pr/2` and `pr/1`): another
    release or pull request, not a typo of it."""
    def shape(text: str) -> str:
        return re.sub(r"\d+", "#", text.lower().removeprefix("refs/"))

    return shape(typed) == shape(ref) and re.findall(r"\d+", typed) != re.findall(r"\d+", ref)


_COMMIT = re.compile(r"[0-9a-f]{40}")


def snapshot_commit(path: Path) -> str | None:
    """The commit of the Hub cache snapshot `path` lies in (`models--org--name/snapshots/<commit>/...`), else None.

    Example:
        >>> snapshot_commit(Path("hub/models--gpt2/snapshots/" + "a" * 40 + "/unet"))
        'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'
    """
    parts = path.parts
    for index in range(len(parts) - 1, 1, -1):
        if _COMMIT.fullmatch(parts[index]) and parts[index - 1] == "snapshots" \
                and parts[index - 2].startswith(("models--", "datasets--", "spaces--")):
            return parts[index]
    return None


def written_beside(path: Path, name: str) -> Path:
    """Where printed advice writes a file made from `path`: beside it, or where the user stands when `path` lies in
    a Hub cache snapshot (huggingface_hub's: a file added there is no blob of the repo, and a re-save pasted wrote
    into the cache).

    Example:
        >>> str(written_beside(Path("ckpt/model.pt"), "model-resaved.pt"))
        'ckpt/model-resaved.pt'
        >>> str(written_beside(Path("hub/models--org--m/snapshots/" + "a" * 40 + "/model.pt"), "model-resaved.pt"))
        'model-resaved.pt'
    """
    return Path(name) if snapshot_commit(path) is not None else path.with_name(name)


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The snapshot folder of `repo_id` in the local cache, or None when it is not cached."""
    from huggingface_hub import snapshot_download

    _check_ref_file(repo_id, revision)
    try:
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=hub_cache_dir(), local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, a bad revision, an unreadable cache: all mean "not cached"
        full = _full_commit(repo_id, revision)
        if full is None:
            return None
        return cached_snapshot(repo_id, full)
    # huggingface_hub joins the commit a ref file holds to snapshots/ as it is: an empty ref gives the
    # snapshots folder itself, and `../..` in a ref leads out of the cache. Neither is a snapshot.
    snapshots = (_repo_dir(repo_id) / "snapshots").resolve()
    if path.resolve().parent != snapshots:
        ref = f"refs/{revision or 'main'}"
        if _names_a_snapshot(path, _repo_dir(repo_id)):
            # The ref names a snapshot, and that folder is a link out of snapshots/ (a cache moved by hand, a
            # snapshot kept on another disk): huggingface_hub reads it there, so does the reader (which says so).
            return path
        raise SourceNotFound(
            f"the Hub cache's {ref} of {repo_id} does not name a snapshot (empty, or a path out of its snapshots/ "
            f"folder); download it again with `{download_command(repo_id, revision)}` or delete that ref",
            path=str(snapshots.parent / "refs" / (revision or "main")),
        )
    return path


def _names_a_snapshot(path: Path, repo_dir: Path) -> bool:
    """Whether `path` is `snapshots/<commit>` of `repo_dir` by its name (a link to elsewhere included), as
    huggingface_hub joins a ref's commit to snapshots/: not the snapshots folder itself (an empty ref) nor a path
    out of it (a ref holding `../..`)."""
    return Path(os.path.abspath(path)).parent == Path(os.path.abspath(repo_dir / "snapshots"))


def linked_snapshot_note(path: Path) -> str | None:
    """A warning when the Hub cache snapshot that holds `path` is a link out of its repo's snapshots/ folder: read
    where it leads, as huggingface_hub reads it, and said, since the files are not where the cache keeps them."""
    commit = snapshot_commit(path)
    if commit is None:
        return None
    parts = path.parts
    at = max(i for i in range(2, len(parts)) if parts[i] == commit and parts[i - 1] == "snapshots")
    snapshot = Path(*parts[:at + 1])
    if not snapshot.is_symlink():
        return None
    return (f"the cached snapshot {commit[:10]} is a link out of the cache's snapshots/ folder, to "
            f"{snapshot.resolve()}: read there, as huggingface_hub reads it")


def link_out_of_cache(path: Path) -> Path | None:
    """Where a file of a Hub cache snapshot leads when that is out of its repo's cache folder (`models--org--name`),
    else None. huggingface_hub links a snapshot's files to that folder's blobs/ only, so a link to `~/.ssh/id_rsa`,
    `/etc/passwd` or another disk comes from a cache someone else wrote (a shared cache, a tarball of one). None too
    for a file in a snapshot folder that itself links elsewhere (`linked_snapshot_note` says that).

    Example:
        >>> link_out_of_cache(Path("hub/models--org--m/snapshots/" + "a" * 40 + "/config.json")) is None  # no link
        True
    """
    commit = snapshot_commit(path)
    if commit is None:
        return None
    parts = path.parts
    at = max(i for i in range(2, len(parts)) if parts[i] == commit and parts[i - 1] == "snapshots"
             and parts[i - 2].startswith(("models--", "datasets--", "spaces--")))
    if Path(*parts[:at + 1]).is_symlink():
        return None
    # realpath, not resolve(): it answers a loop of links without raising.
    # The repo's blobs/ may itself be a link (moved to a larger disk by hand): its files are the cache's own.
    target, storage = Path(os.path.realpath(path)), Path(*parts[:at - 1])
    inside = any(target.is_relative_to(os.path.realpath(folder)) for folder in (storage, storage / "blobs"))
    return None if inside else target


def _check_ref_file(repo_id: str, revision: str | None, repo_type: str = "model") -> None:
    """Refuse a ref that is no small regular file: huggingface_hub reads it whole, so a FIFO there waits forever and a
    link to /dev/zero fills the memory."""
    refs = _repo_dir(repo_id, repo_type) / "refs"
    ref = refs / (revision or "main")
    if not os.path.normpath(ref).startswith(os.path.normpath(refs) + os.sep):
        return  # not a ref name (huggingface_hub refuses it itself)
    try:
        mode = ref.stat()
    except (OSError, ValueError):
        return  # no such ref (a commit hash, or not cached): huggingface_hub says so
    if stat.S_ISDIR(mode.st_mode) and _holds_anything(ref):
        # refs/feature/ holds the ref of branch feature/x (refs/refs/ those of PRs): no broken ref, and deleting it
        # as advised deleted theirs. huggingface_hub reads no ref there; the revision is said not to be cached.
        return
    if not stat.S_ISREG(mode.st_mode) or mode.st_size > MAX_REF_BYTES:
        what = "not a regular file" if not stat.S_ISREG(mode.st_mode) else f"{mode.st_size:,} bytes long"
        again = download_command(repo_id, revision) + (f" --repo-type {repo_type}" if repo_type != "model" else "")
        raise SourceNotFound(f"the Hub cache's refs/{revision or 'main'} of {repo_id} is {what}, not a commit hash; "
                             f"download it again with `{again}` or delete that ref",
                             path=str(ref))


def _holds_anything(folder: Path) -> bool:
    """Whether `folder` lists any entry (False when it cannot be listed)."""
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is not None
    except OSError:
        return False


def _full_commit(repo_id: str, revision: str | None, repo_type: str = "model") -> str | None:
    """The one cached snapshot whose commit starts with `revision` (a short sha, `86f7e43`, as git and the Hub's
    web pages show it); None when it is no hex prefix or matches none or several."""
    if revision is None or not re.fullmatch(r"[0-9a-f]{7,39}", revision):
        return None
    snapshots = _repo_dir(repo_id, repo_type) / "snapshots"
    try:
        found = [p.name for p in snapshots.iterdir() if p.is_dir() and p.name.startswith(revision)]
    except OSError:
        return None
    return found[0] if len(found) == 1 and re.fullmatch(r"[0-9a-f]{40}", found[0]) else None


def cache_folder_snapshot(folder: Path, revision: str | None = None) -> tuple[Path, str] | None:
    """The snapshot to read when a repo's cache folder itself (`.../hub/models--org--name`) is given as a path.

    Returns (the snapshot folder, how it was chosen), or None when `folder` is no repo cache folder. The
    snapshot is the one `refs/<revision or main>` names, else the one whose commit starts with `revision`,
    else the only one there is.

    Raises:
        SourceNotFound: it is a cache folder, but no snapshot (or several, and no ref) fits.
    """
    snapshots = folder / "snapshots"
    name = folder.resolve().name  # `.` inside the cache folder, or a link to it, has the name of neither
    if not name.startswith(("models--", "datasets--", "spaces--")) or not snapshots.is_dir():
        return None
    repo_id = name.split("--", 1)[1].replace("--", "/")
    ref = folder / "refs" / (revision or "main")
    # A revision is a ref's name under refs/ or a commit prefix, never a path: `/etc/passwd` (pathlib joins an
    # absolute name as itself) or `../../x` read that file and quoted its first line as the "commit" it names;
    # a name too long to open said the refs could not be read.
    is_ref_name = os.path.normpath(ref).startswith(os.path.normpath(folder / "refs") + os.sep) and \
        len(os.fsencode(ref.name)) <= 255 and len(os.fsencode(os.path.abspath(ref))) < 4096
    try:
        # A ref is a commit hash: a bigger "ref" (a link to a large file) is not read whole.
        commit = ref.read_text(encoding="utf-8").strip() if is_ref_name and ref.is_file() and \
            ref.stat().st_size <= MAX_REF_BYTES else None
        found = sorted(p.name for p in snapshots.iterdir() if p.is_dir())
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceNotFound(f"a Hub cache folder (of {repo_id}) whose refs or snapshots cannot be read ({exc})",
                             str(folder)) from exc
    how = f"refs/{revision or 'main'}"
    if commit is None and revision is not None:
        matching = [name for name in found if name.startswith(revision)]
        commit = matching[0] if len(matching) == 1 else None
        how = f"revision {revision}"
    if commit is None and revision is None and len(found) == 1:
        commit, how = found[0], "its only snapshot"
    # A ref holds a commit hash; one holding a path (`../x`) or nothing names no snapshot of this folder.
    if commit is None or commit not in found:
        held = ", ".join(name[:10] for name in found[:6]) or "none"
        wanted = f"no snapshot for {how}" if commit is None else f"{how} names {commit[:40]!r}, not a snapshot here"
        raise SourceNotFound(f"a Hub cache folder (of {repo_id}), {wanted}; its snapshots: {held}. Give the repo id "
                             f"{repo_id!r} (with --revision) or a snapshot folder", str(folder))
    return snapshots / commit, f"{how}, {commit[:10]}"


@dataclass(frozen=True)
class HubLocation:
    """A place in a Hub repo named with its type: `hf://datasets/org/name@v1/data`, a Hub web address, or
    `datasets/org/name` as those addresses write a dataset."""

    repo_type: str  # "model", "dataset" or "space"
    repo_id: str
    revision: str | None
    path_in_repo: str  # "" for the repo's top
    # A web address's /blob/, /resolve/ or /raw/ page names a file whatever its suffix (`.../blob/v2/onnx/model.onnx`);
    # parse_hf_uri returns the same path for it as for the /tree/ page of a folder.
    names_file: bool = False


# The Hub's addresses name a dataset or a Space under these (huggingface_hub's REPO_TYPES_URL_PREFIXES); no model
# repo can be named so, as the Hub keeps these names for its routes.
_TYPE_PREFIXES = {"datasets": "dataset", "spaces": "space"}
_READ_TYPES = ("model", "dataset", "space")


def hub_location(text: str) -> HubLocation | None:
    """The Hub place `text` names with a repo type or an address, parsed as huggingface_hub parses it (or a cached
    repo's id as `hf cache ls` writes it); None for a plain repo id, a path, or a web address of another site.

    Example:
        >>> hub_location("datasets/org/data/ckpt")
        HubLocation(repo_type='dataset', repo_id='org/data', revision=None, path_in_repo='ckpt', names_file=False)

    Raises:
        UsageError: an `hf://` URI or a Hub web address huggingface_hub cannot parse, or one of a bucket.
    """
    from weightdoctor.errors import UsageError

    if text.startswith(("hf://", "https://", "http://")):
        from urllib.parse import urlsplit

        from huggingface_hub import constants
        from huggingface_hub.errors import HfUriError
        from huggingface_hub.utils import parse_hf_uri

        try:
            host = urlsplit(text).hostname or ""
        except ValueError:  # `https://[::1`: urlsplit refuses a bracket left open; no Hub host, so no Hub address
            host = ""
        hub_hosts = {"huggingface.co", "www.huggingface.co", "hf.co", urlsplit(constants.ENDPOINT).hostname}
        if not text.startswith("hf://") and host not in hub_hosts:
            return None
        if any(char < " " or char == "\x7f" for char in text):
            # huggingface_hub's refusal quotes the address on its first line, which a newline in it cut short
            # ("Invalid HF URI 'hf://org/na"): what is wrong with it is said here, the address escaped whole.
            raise UsageError(f"{text!r}: a Hub address holds no control characters (a newline, a tab): no repo id, "
                             "revision or file name of the Hub does")
        if not text.startswith("hf://") and url_source_hint(text) == _SITE_PAGE_HINT:
            # parse_hf_uri reads `huggingface.co/blog/moe` as repo blog/moe, then said not to be cached.
            raise UsageError(f"{text}: {_SITE_PAGE_HINT}")
        try:
            uri = parse_hf_uri(text)
        except HfUriError as exc:
            # huggingface_hub parses no page of a repo without an org (`/bert-base-uncased/tree/main`), which the
            # Hub still serves: the repo id to type, as url_source_hint reads the address.
            from huggingface_hub.errors import HFValidationError
            from huggingface_hub.utils import validate_repo_id

            hint = url_source_hint(text) or ""
            typed = _first_shell_word(hint.partition("give the repo id instead: ")[2]).partition(" ")[0].rstrip("/")
            try:  # a name past the Hub's 96 characters is no repo id to give, whatever its characters
                validate_repo_id(typed.split("/", 2)[0] if typed.count("/") > 1 else typed)
            except HFValidationError:
                typed = ""
            if looks_like_repo_id(typed):
                raise UsageError(f"{text}: {hint}") from exc
            why = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise UsageError(f"{why} (weightdoctor reads the Hub addresses huggingface_hub parses: "
                             "hf://[datasets/]org/name[@revision][/path], or a repo's page)") from exc
        if uri.type not in _READ_TYPES:
            raise UsageError(f"{text} names a {uri.type}: weightdoctor reads model, dataset and Space repos")
        located = _located(text, uri.type, uri.id, uri.revision, uri.path_in_repo)
        if text.startswith("hf://") or not located.path_in_repo:
            return located
        # The page's kind follows org/name in the address (after `datasets/` or `spaces/` for those repos).
        parts = urlsplit(text).path.strip("/").split("/")
        page = parts[3 if parts[0] in _TYPE_PREFIXES else 2] if len(parts) > 3 else ""
        return replace(located, names_file=page in _HUB_URL_FILES)
    if "@" in text and "/" in text.partition("@")[0] and not text.startswith(("/", ".", "~")):
        # `org/name@v1.0`, `datasets/org/name@main/ckpt`: an hf:// URI without its scheme, as `hf cache` and the
        # Hub's docs write a repo at a revision; anything huggingface_hub does not parse so stays a path.
        at, slash, _ = text.partition("@")[2].partition("/")
        if slash and path_exists(expand_user(text[:text.index("@") + 1 + len(at)])):
            return None  # `runs/exp@2/fnal` where local `runs/exp@2` exists: a path mistyped in that folder
        from huggingface_hub.errors import HfUriError
        from huggingface_hub.utils import parse_hf_uri

        try:
            uri = parse_hf_uri(f"hf://{text}")
        except HfUriError:
            return None
        if uri.type not in _READ_TYPES:
            return None
        # `runs/exp@2` is as likely a mistyped local folder: a repo only when cached, or a model the Hub may hold.
        # `datasets/org/d@v1` names its repo's type, as `datasets/org/d` does, which is read as a Hub address
        # cached or not: the reader says "no such file or directory" first, then how to download it.
        if not _repo_dir(uri.id, uri.type).is_dir() and uri.type == "model" and not hub_reachable():
            return None
        return _located(text, uri.type, uri.id, uri.revision, uri.path_in_repo)
    head, _, rest = text.partition("/")
    parts = rest.strip("/").split("/")
    if head in _TYPE_PREFIXES and len(parts) >= 2 and looks_like_repo_id("/".join(parts[:2])) \
            and not any(part in ("", ".", "..") or len(os.fsencode(part)) > 255 for part in parts):
        return HubLocation(_TYPE_PREFIXES[head], "/".join(parts[:2]), None, "/".join(parts[2:]))
    if head in _READ_TYPES and not any(part in ("", ".", "..") or len(os.fsencode(part)) > 255 for part in parts) \
            and not (looks_like_repo_id(f"{head}/{parts[0]}") and _repo_dir(f"{head}/{parts[0]}").is_dir()):
        # `hf cache ls` names repos by their type and id (`model/org/name`, `dataset/org/name`, `model/gpt2`), and
        # `hf cache rm` takes those ids back. An org named `model` could own `model/org` too: read as the cache's id
        # only when that repo is cached and `model/<org>` is not.
        # A folder of a repo without an org (`model/gpt2/unet`) is left out: `gpt2/unet` reads as a repo id.
        for size in (2, 1):
            repo_id = "/".join(parts[:size])
            if (len(parts) >= size if size == 2 else len(parts) == 1) and looks_like_repo_id(repo_id) \
                    and _repo_dir(repo_id, head).is_dir():
                return HubLocation(head, repo_id, None, "/".join(parts[size:]))
    return None


# `?download=true`, `?a=1&b=2` at the end of a path in a repo: a query string, not a name a file was given. The
# value runs to the end (`&b=2` with it): a group of `&name=value` after a value that may hold `&` too took
# exponential time to fail (`?a=&a=...&a=/x`, 30 of them: minutes).
_QUERY_AT_END = re.compile(r"\?[A-Za-z_][\w.-]*=[^/?]*\Z")


def _located(text: str, repo_type: str, repo_id: str, revision: str | None, inside: str) -> HubLocation:
    """A parsed Hub place whose path stays inside its repo: parse_hf_uri keeps `..` (`hf://org/m/../../x`), which
    joined to a snapshot would leave it."""
    from weightdoctor.errors import UsageError

    if not text.startswith(("https://", "http://")):
        # A web address's query (`?download=true`, copied with a /resolve/ link) parse_hf_uri drops; in an hf:// URI
        # it kept it in the revision (`v1?download=true`, which no git ref can be: git refuses '?') or the file name,
        # then said that revision was not cached. Refused, with the address to give instead.
        query = revision[revision.index("?"):] if revision and "?" in revision else \
            (found[0] if (found := _QUERY_AT_END.search(inside)) else "")
        if query:
            part = "the revision" if revision and query in revision else "the file name"
            raise UsageError(f"{text}: {query!r} is a web address's query string, not part of {part}: give "
                             f"{text.replace(query, '', 1)}")
    inside = inside.strip("/")
    if any(part in (".", "..") for part in inside.split("/")):
        raise UsageError(f"{text}: the path in the repo, {inside!r}, has a '.' or '..' part; name the folder or "
                         "file itself")
    if any(len(os.fsencode(part)) > 255 for part in inside.split("/")):
        # No file system holds such a name, nor the cache's snapshot of it: each look at it raised ENAMETOOLONG.
        raise UsageError(f"{text}: the path in the repo has a part of more than 255 bytes, longer than any file or "
                         "folder name")
    return HubLocation(repo_type, repo_id, revision, inside)


def repo_cached(repo_id: str, repo_type: str = "model") -> bool:
    """Whether the Hub cache holds a folder for the repo (at some revision, or none whole)."""
    return _repo_dir(repo_id, repo_type).is_dir()


def cached_typed_snapshot(location: HubLocation, revision: str | None, source: str) -> Path:
    """The cached snapshot of a dataset or Space repo, as `snapshot_download(repo_type=..., local_files_only=True)`
    finds it: weightdoctor reads those repos from the cache only (it fetches a model's files, not a dataset's).

    Raises:
        SourceNotFound: not cached, or not at that revision.
    """
    from huggingface_hub import snapshot_download

    kind, repo_id = location.repo_type, location.repo_id
    folder = _repo_dir(repo_id, kind)
    # The revision quoted as download_command quotes it (`@it's` left a quote open in the pasted command).
    again = download_command(repo_id) + f" --repo-type {kind}" + (f" --revision {shell_word(revision)}"
                                                                  if revision else "")
    where = f"revision {revision!r} of " if revision else ""
    _check_ref_file(repo_id, revision, kind)
    # A short commit (`b28b7af`, as the error below lists the cached ones) reads its snapshot, as a model's does.
    try:
        named_ref = bool(revision) and (folder / "refs" / str(revision)).is_file()
    except OSError:  # a revision of thousands of characters (ENAMETOOLONG) names no ref
        named_ref = False
    full = _full_commit(repo_id, revision, kind) if revision and not named_ref else None
    try:
        path = Path(snapshot_download(repo_id, repo_type=kind, revision=full or revision, cache_dir=hub_cache_dir(),
                                      local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError, a bad revision: not cached at that revision
        held = sorted(p.name[:10] for p in (folder / "snapshots").iterdir() if p.is_dir()) \
            if (folder / "snapshots").is_dir() else []
        cached = f"; its cached snapshots: {', '.join(held[:6])}" if held else _cache_folder_problem()
        if not held and (other := next((t for t in _READ_TYPES if t != kind and _repo_dir(repo_id, t).is_dir()),
                                       None)) is not None:
            # `datasets/org/name` where `org/name` is a cached model (as a plain id is told of its cached dataset)
            cached += (f"; the cache holds a {other} repo of that name: give it as "
                       + (repo_id if other == "model" else f"{other}s/{repo_id}"))
        raise SourceNotFound(f"{where}the {kind} repo {repo_id} is not in the Hugging Face cache at {hub_cache_dir()}"
                             f"{cached} (weightdoctor reads {kind} repos from the cache only): download it with "
                             f"`{again}`", source) from exc
    if path.resolve().parent != (folder / "snapshots").resolve() and not _names_a_snapshot(path, folder):
        # an empty ref, or one holding a path (a snapshot folder linked elsewhere is read, as huggingface_hub does)
        raise SourceNotFound(f"the Hub cache's refs/{revision or 'main'} of the {kind} repo {repo_id} does not "
                             f"name a snapshot: download it again with `{again}`", source)
    return path


def check_revision(revision: str | None, option: str = "--revision", unset: str = "main") -> None:
    """Refuse an empty `--revision` (`--revision "$REV"` with REV unset): a repo id was said not to be cached at
    all (huggingface_hub finds no ref ""), while its cache folder read refs/main. `option` names the flag it came
    from (diff-keys' `--revision-b`), `unset` what leaving it out reads.

    Raises:
        UsageError: `revision` is empty or blank.
    """
    if revision is not None and not revision.strip():
        raise UsageError(f"{option} is empty: give a branch, tag or commit, or leave it out for {unset}")


def resolve_repo_id(repo_id: str, revision: str | None = None, weights: bool = True,
                    subfolder: str | None = None) -> Path:
    """Return a local snapshot folder for `repo_id`, from the cache or else from the Hub.

    From the Hub only what the reader reads is fetched (see `files_to_fetch`): the small files (config,
    tokenizer, indexes) and the weight files of one format at the folder's top, an index's shards only. With
    `weights=False` (a command that needs the config alone), no weights and no index. With `subfolder`, only
    that folder's files. A cached snapshot that lacks what is asked (a config fetched for plan-devices, another
    folder of a pipeline) is completed when the Hub can be reached, as `from_pretrained` completes it.

    Raises:
        SourceNotFound: not cached and the Hub is offline, unreachable or has no such repo.
    """
    check_revision(revision)
    cached = cached_snapshot(repo_id, revision)
    folder_in_cache = cached / subfolder if cached is not None and subfolder else cached
    if folder_in_cache is not None and (holds_weights(folder_in_cache) if weights
                                        else (folder_in_cache / "config.json").is_file()):
        return cached
    if cached is not None and not hub_reachable():
        return cached  # what it lacks is said by the reader, which names the snapshot's files
    _require_hub(repo_id, revision, subfolder)
    from huggingface_hub import HfApi, snapshot_download

    try:
        files = HfApi().list_repo_files(repo_id, revision=revision)
        wanted, index = files_to_fetch(files, subfolder, weights)
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=hub_cache_dir(), allow_patterns=wanted))
        if index is not None:
            shards = index_shards(folder / index)
            base = index.rpartition("/")[0]
            shards = [f"{base}/{shard}" if base else shard for shard in shards]
            folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=hub_cache_dir(),
                                            allow_patterns=[s for s in shards if s in set(files)] or shards))
        return folder
    except Exception as exc:  # network errors, 404s, auth: all mean "cannot get it"
        if cached is not None:
            return cached  # completing failed (a gated repo, a rate limit): the reader says what it lacks
        raise _hub_error(repo_id, revision, exc) from exc


_SMALL_SUFFIXES = (".json", ".txt", ".model")
_WEIGHT_FORMATS = ((".safetensors",), (".bin", ".pt", ".pth"))


def files_to_fetch(files: list[str], subfolder: str | None, weights: bool) -> tuple[list[str], str | None]:
    """The files of a repo listing to download for the reader, and the index whose shards follow once read.

    Small files (config, tokenizer, sentence-transformers module configs) at any depth of the folder (at its
    top only without `weights`, which is for reading the config); with
    `weights`, the weight files of one format (safetensors when there are any) at the folder's top only, never a
    variant (`model.fp16.safetensors`, read only when asked for) nor another folder's (a pipeline's `unet/`, an
    `onnx/` export, `checkpoints/step_*`). With an index, the index alone: its shards are what it names.

    Example:
        >>> files_to_fetch(["config.json", "model.safetensors", "model.fp16.safetensors", "onnx/model.onnx"],
        ...                None, True)
        (['config.json', 'model.safetensors'], None)
    """
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    here = [f for f in files if f.startswith(prefix)]
    small = [f for f in here if f.endswith(_SMALL_SUFFIXES) and not f.endswith(".index.json")]
    top = [f for f in here if "/" not in f[len(prefix):]]
    if not weights:  # the config: the folder's own small files
        return [f for f in small if f in top], None
    for suffixes in _WEIGHT_FORMATS:
        # An index at the top, wherever its shards are (some repos keep them in a folder of their own).
        indexes = sorted((f for f in top if f.endswith(tuple(s + ".index.json" for s in suffixes))),
                         key=lambda f: (f.count("."), f))
        if indexes:
            return small + [indexes[0]], indexes[0]
    if f"{prefix}modules.json" in here:
        # A sentence-transformers model: its numbered module folders (`2_Dense/`) belong to it (convert copies
        # them beside the converted weights).
        small += [f for f in here if re.match(r"\d+_[^/]+/[^/]+\.(safetensors|bin)$", f[len(prefix):])]
    for suffixes in _WEIGHT_FORMATS:
        candidates = [f for f in top if f.endswith(suffixes)]
        if not candidates:
            continue
        plain = [f for f in candidates if "." not in f[len(prefix):].rsplit(".", 1)[0]] or candidates
        preferred = [f for f in plain if f[len(prefix):] in ("model.safetensors", "pytorch_model.bin")]
        return small + (preferred or plain), None
    return small, None


def index_shards(index: Path) -> list[str]:
    """The shard files an index names (its `weight_map` values), in order; [] when it cannot be read."""
    from weightdoctor.checkpoint.reader import MAX_JSON_BYTES
    from weightdoctor.jsontext import MAX_JSON_ENTRIES, parse_json

    try:
        # No bigger than the reader reads one: a 3 GB index was read whole here, 6 GB of memory, before the reader
        # refused it as too big, "not read".
        if index.stat().st_size > MAX_JSON_BYTES:
            return []
        # parse_json: an index nested thousands deep raised RecursionError through json.loads, and every command on
        # the repo id ended in 'unexpected RecursionError' before the reader's own refusal of it.
        data = parse_json(index.read_text(encoding="utf-8"), max_entries=MAX_JSON_ENTRIES)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
    except (OSError, UnicodeDecodeError, ValueError):
        return []
    if not isinstance(weight_map, dict):
        return []
    return sorted({v for v in weight_map.values() if isinstance(v, str)})


_READABLE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl")


def holds_weights(folder: Path) -> bool:
    """Whether a snapshot folder holds weights the reader can read, in the reader's order: `model.safetensors`,
    its index with every shard, `pytorch_model.bin`, its index with every shard, else any weight file at its top
    (a snapshot that fetched only the config, or a pipeline's folder not fetched yet, does not)."""
    if not folder.is_dir():
        return False
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / single).is_file():
            return True
        if (folder / index).is_file():
            shards = index_shards(folder / index)
            return bool(shards) and all((folder / shard).is_file() for shard in shards)
    return any(p.is_file() and p.suffix in _READABLE_SUFFIXES for p in folder.iterdir())


def _hub_reason(exc: Exception) -> str:
    """What the Hub's error says, in a line: huggingface_hub puts the status on its first line and what is not found
    on the next ("404 Client Error. (Request ID: Root=1-...)", a blank line, "Entry Not Found for url: ..."), and the
    first line alone named no file or revision. The request's id, which says nothing to a reader, is left out.

    Example:
        >>> _hub_reason(OSError("404 Client Error. (Request ID: Root=1-abc)\\n\\nEntry Not Found for url: https://x/f."))
        '404 Client Error. Entry Not Found for url: https://x/f.'
    """
    text = re.sub(r" \((?:Request ID|Amzn Trace ID|Amz CF ID): [^)\n]*\)", "", str(exc))
    return clip_words(" ".join(text.split()), 240) or type(exc).__name__


def _hub_error(repo_id: str, revision: str | None, exc: Exception) -> SourceNotFound:
    return _not_found(
        repo_id, revision,
        f"is not in the cache at {hub_cache_dir()}, and the Hub could not provide it: {_hub_reason(exc)}"
    )


@dataclass(frozen=True)
class RemoteStructure:
    """A repo's safetensors headers read from the Hub with range requests: no weights downloaded."""

    repo_id: str
    revision: str | None
    metadata: SafetensorsRepoMetadata
    config: dict[str, Any] | None
    file_sizes: dict[str, int]


def remote_structure(repo_id: str, revision: str | None = None,
                     subfolder: str | None = None) -> RemoteStructure | None:
    """Read the safetensors headers of an uncached repo (or of one folder of it, a pipeline's `unet/`) from the Hub;
    None if it has no safetensors weights there.

    Raises:
        SourceNotFound: the Hub is offline or unreachable, or has no such repo.
    """
    _require_hub(repo_id, revision, subfolder)
    import json

    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi()
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    try:
        files = api.list_repo_files(repo_id, revision=revision)
        if not any(f.startswith(prefix) and f.endswith(".safetensors") for f in files):
            return None
        if prefix:
            metadata = _folder_safetensors_metadata(api, repo_id, revision, files, prefix)
            if metadata is None:
                return None
        else:
            metadata = api.get_safetensors_metadata(repo_id, revision=revision)
        config = None
        if f"{prefix}config.json" in files:
            path = hf_hub_download(repo_id, f"{prefix}config.json", revision=revision, cache_dir=hub_cache_dir())
            config = json.loads(Path(path).read_text(encoding="utf-8"))
        sizes = {
            info.path: int(getattr(info, "size", 0) or 0)
            for info in api.get_paths_info(repo_id, list(metadata.files_metadata), revision=revision)
        }
    except Exception as exc:
        raise _hub_error(repo_id, revision, exc) from exc
    return RemoteStructure(repo_id, revision, metadata, config, sizes)


def _folder_safetensors_metadata(api: Any, repo_id: str, revision: str | None, files: list[str],
                                 prefix: str) -> SafetensorsRepoMetadata | None:
    """The safetensors headers of the weights the reader would read in one folder of a repo (its index's shards, else
    its plain safetensors file), each read with a range request as get_safetensors_metadata reads a repo's top,
    which it cannot do for a folder (`unet/diffusion_pytorch_model.safetensors`); None when that folder's weights are
    no safetensors. Files are named by their path in the repo, which fetches their values later."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils._safetensors import SafetensorsRepoMetadata

    wanted, index = files_to_fetch(files, prefix.rstrip("/"), True)
    if index is not None:
        if not index.endswith(".safetensors.index.json"):
            return None
        base = index.rpartition("/")[0]
        local = Path(hf_hub_download(repo_id, index, revision=revision, cache_dir=hub_cache_dir()))
        weights = [f"{base}/{shard}" if base else shard for shard in index_shards(local)]
    else:
        weights = [f for f in wanted if f.endswith(".safetensors") and "/" not in f[len(prefix):]]
    if not weights:
        return None
    files_metadata = {name: api.parse_safetensors_file_metadata(repo_id, name, revision=revision) for name in weights}
    weight_map = {tensor: name for name, meta in files_metadata.items() for tensor in meta.tensors}
    return SafetensorsRepoMetadata(metadata=None, sharded=index is not None, weight_map=weight_map,
                                   files_metadata=files_metadata)


def hub_file(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """One file of a model repo (`hf://org/name/model.fp16.safetensors`): from its cached snapshot, else fetched by
    name alone when the Hub can be reached, as `hf_hub_download` fetches it.

    Raises:
        SourceNotFound: neither cached nor fetchable (offline, unreachable, no such file).
    """
    named = f"{repo_id}/{filename}"
    cached = cached_snapshot(repo_id, revision)
    if cached is not None and (cached / filename).is_file():
        return cached / filename
    if not hub_reachable():
        if cached is None:
            # says why (offline, unreachable) and what the cache holds; the reader adds the file's own download
            _require_hub(repo_id, revision, fetch=False)
        why = hub_unavailable()
        broken = broken_cache_entry(cached / filename, why)
        if broken is not None:
            # The file was cached (its link is there) and its blob is gone: no "has no" file, a damaged cache entry.
            raise SourceNotFound(broken, named)
        raise SourceNotFound(f"{repo_id}'s cached snapshot has no {filename}, and the Hub cannot be reached "
                             f"({why}): fetch it with `{download_command(repo_id, revision, file=filename)}`", named)
    if cached is None:
        return download_file(repo_id, filename, revision)
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=hub_cache_dir()))
    except Exception as exc:
        # The repo is cached: what failed is this file (a 404 for a name the repo lacks, most often), which
        # download_file's "not in the cache" would have blamed on the repo.
        raise SourceNotFound(f"{repo_id}'s cached snapshot has no {filename}, and the Hub could not provide it: "
                             f"{_hub_reason(exc)}", named) from exc


def broken_cache_entry(pointer: Path, unreachable: str | None = None) -> str | None:
    """What is wrong with a Hub cache snapshot's file whose link leads to a blob that is gone (deleted by hand, a
    cleaner that removed blobs, a copy of the cache without them), with the command that fetches it again; None for
    anything else. huggingface_hub itself sees no file there, and downloads the blob again when online; `unreachable`
says why it cannot now.

    Example:
        >>> broken_cache_entry(Path("hub/models--org--m/snapshots/" + "a" * 40 + "/config.json")) is None  # no link
        True
    """
    commit = snapshot_commit(pointer)
    if commit is None or not pointer.is_symlink() or pointer.exists():
        return None
    parts = pointer.parts
    at = max(i for i in range(2, len(parts)) if parts[i] == commit and parts[i - 1] == "snapshots"
             and parts[i - 2].startswith(("models--", "datasets--", "spaces--")))
    storage, inside = Path(*parts[:at - 1]), "/".join(parts[at + 1:])
    kind, _, name = storage.name.partition("--")
    repo_id = name.replace("--", "/")
    command = f"hf download {shell_word(repo_id)} {shell_word(inside)}" + (
        f" --repo-type {kind[:-1]}" if kind != "models" else "") + f" --revision {commit} --force-download"
    return (f"the Hub cache entry of {inside} (repo {repo_id}, commit {commit[:10]}) is broken: it links to "
            f"{os.readlink(pointer)}, a blob that is missing (deleted, or the cache damaged)"
            + (f", and the Hub cannot be reached ({unreachable})" if unreachable else "")
            + f": fetch it again with `{command}`")


def download_file(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """Download one file of a repo into the cache (used when a remote-structure tensor's values are needed)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=hub_cache_dir()))
    except Exception as exc:
        raise _hub_error(repo_id, revision, exc) from exc
