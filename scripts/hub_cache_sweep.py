"""Oracle sweep of Hub repo ids resolved from the local cache, against huggingface_hub's and transformers' answers.

Cache layouts are written as huggingface_hub writes them (`fixtures/hub_cache.py`: blobs named by sha256 or git
sha1, relative links, refs for branches, tags and `refs/pr/N`, `.no_exist` markers, `.incomplete` blobs of cut
downloads), for tiny BERT checkpoints: one safetensors file, a lone pytorch_model.bin, both (different values),
sharded safetensors (complete, a shard never downloaded, a shard cut short), several revisions, a snapshot no
`refs/main` names, a diffusers-style pipeline (`org/pipe/unet`), repo ids without an org, case differences, and
the cache found through HF_HOME / HF_HUB_CACHE / HUGGINGFACE_HUB_CACHE / XDG_CACHE_HOME / a `$VAR` in the path /
the ignored TRANSFORMERS_CACHE, and TRANSFORMERS_OFFLINE.

For each query (repo id, folder, revision) the oracle, a subprocess with the case's environment, asks
`snapshot_download(local_files_only=True)`, transformers' `cached_file` / `get_checkpoint_shard_files` for the
weight file from_pretrained picks (safetensors, its index, pytorch_model.bin, its index; `.no_exist` honoured),
`try_to_load_from_cache` for each, and `scan_cache_dir()` for the refs; without `--quick`,
`AutoModel.from_pretrained(local_files_only=True)` too, whose loaded values must be the picked file's. weightdoctor
must then read that snapshot and those files (`inspect --json`: resolved_path, files, repo_id, revision), run
`diff-keys`, `check-dtype`, `plan-devices`, `convert` and `shard` on the repo id, or fail all of them with exit 2
and a one-line error naming the repo (and revision, and a missing shard), and leave the cache as it was. A few
queries also go through `python -m weightdoctor` and the `weightdoctor` console script (diff-keys' fast path).

    PYTHONPATH=. .venv/bin/python scripts/hub_cache_sweep.py [--quick] [--verbose]

Prints one line per case and the counts; exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from fixtures.hub_cache import commit_of, repo_storage, write_snapshot  # noqa: E402

WEIGHT_NAMES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
DIFFUSERS_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
                   "diffusion_pytorch_model.bin", "diffusion_pytorch_model.bin.index.json")
CONFIG = {"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 8, "num_hidden_layers": 1,
          "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 32, "max_position_embeddings": 16,
          "type_vocab_size": 2}
# Variables that decide where the cache is or whether the Hub is used: cleared for every case, then set.
HUB_VARIABLES = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME", "TRANSFORMERS_CACHE",
                 "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


# ---------------------------------------------------------------- checkpoint bytes


def _state_dict(scale: float) -> dict[str, Any]:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(**{k: v for k, v in CONFIG.items() if k not in ("model_type", "architectures")}))
    return {k: (v * scale).contiguous() for k, v in model.state_dict().items()}


def _files(kind: str) -> dict[str, bytes]:
    """name -> bytes of a checkpoint: "st" (model.safetensors), "bin" (values x2), "sharded" (2 shards)."""
    import io

    import torch
    from safetensors.torch import save

    config = {"config.json": json.dumps(CONFIG).encode()}
    if kind == "st":
        return config | {"model.safetensors": save(_state_dict(1.0), {"format": "pt"})}
    if kind == "bin":
        buffer = io.BytesIO()
        torch.save(_state_dict(2.0), buffer)
        return config | {"pytorch_model.bin": buffer.getvalue()}
    if kind == "sharded-bin":
        state2 = _state_dict(2.0)
        keys2 = list(state2)
        parts = {"pytorch_model-00001-of-00002.bin": keys2[:len(keys2) // 2],
                 "pytorch_model-00002-of-00002.bin": keys2[len(keys2) // 2:]}
        out2 = dict(config)
        for shard, keys in parts.items():
            buffer = io.BytesIO()
            torch.save({k: state2[k] for k in keys}, buffer)
            out2[shard] = buffer.getvalue()
        out2["pytorch_model.bin.index.json"] = json.dumps(
            {"metadata": {}, "weight_map": {k: shard for shard, keys in parts.items() for k in keys}}).encode()
        return out2
    state = _state_dict(1.0)
    names = list(state)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    out = dict(config)
    for shard, keys in shards.items():
        out[shard] = save({k: state[k] for k in keys}, {"format": "pt"})
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in state.values())},
             "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    out["model.safetensors.index.json"] = json.dumps(index, indent=2).encode()
    return out


# ---------------------------------------------------------------- cases


@dataclass
class Query:
    source: str  # as typed: `org/name`, `gpt2`, `org/pipe/unet`
    revision: str | None = None


@dataclass
class Case:
    name: str
    build: Callable[[Path, dict[str, dict[str, bytes]]], None]  # writes the layout under the cache folder
    queries: list[Query]
    env: Callable[[Path], dict[str, str]] = lambda root: {"HF_HUB_CACHE": str(root / "cache"), "HF_HUB_OFFLINE": "1"}
    cache: Callable[[Path], Path] = lambda root: root / "cache"  # where huggingface_hub's cache is
    quick: bool = True
    subprocess_only: bool = False  # the environment must be set before huggingface_hub is imported
    # A file weightdoctor refuses to read past where transformers silently reads the next format: named here.
    refuses: str | None = None
    # What transformers refuses but weightdoctor reads with a warning that says why (this text in it).
    warns: str | None = None


C = {label: commit_of(label) for label in ("one", "gpt2", "bbc", "both", "sh", "gap", "cut", "cut1", "old", "main",
                                           "dev", "pr", "noref", "pipe", "case", "env", "shbin", "mix", "gone",
                                           "dangle", "copies", "sub", "cfg", "var")}


def _pipe(files: dict[str, dict[str, bytes]]) -> dict[str, bytes]:
    st = files["st"]
    return {"model_index.json": b'{"_class_name": "StableDiffusionPipeline"}',
            "unet/config.json": b'{"_class_name": "UNet2DConditionModel"}',
            "unet/diffusion_pytorch_model.safetensors": st["model.safetensors"],
            "text_encoder/config.json": st["config.json"], "text_encoder/model.safetensors": st["model.safetensors"],
            "vae/config.json": b'{"_class_name": "AutoencoderKL"}'}


def _cases() -> list[Case]:
    def w(repo: str, commit: str, kind: str | None = None, **kw: Any) -> Callable[[Path, dict], None]:
        return lambda cache, files: write_snapshot(cache, repo, commit, kw.pop("files", None) or
                                                   (files[kind] if kind else {}), **kw)

    def both(cache: Path, files: dict) -> None:
        write_snapshot(cache, "org/both", C["both"], files["st"] | files["bin"])

    def gap(cache: Path, files: dict) -> None:
        sharded = dict(files["sharded"])
        sharded.pop("model-00002-of-00002.safetensors")  # never downloaded: no link, no blob
        write_snapshot(cache, "org/gap", C["gap"], sharded)

    def cut(cache: Path, files: dict) -> None:
        sharded = dict(files["sharded"])
        shard = sharded.pop("model-00002-of-00002.safetensors")
        write_snapshot(cache, "org/cut", C["cut"], sharded,
                       incomplete={"model-00002-of-00002.safetensors": shard[:100]})

    def cut_single(cache: Path, files: dict) -> None:
        write_snapshot(cache, "org/cut1", C["cut1"], {"config.json": files["st"]["config.json"]},
                       incomplete={"model.safetensors": files["st"]["model.safetensors"][:100]})

    def revisions(cache: Path, files: dict) -> None:
        write_snapshot(cache, "org/revs", C["old"], files["bin"], refs=("v1.0",),
                       no_exist=("model.safetensors", "model.safetensors.index.json"))
        write_snapshot(cache, "org/revs", C["dev"], files["sharded"], refs=("dev",))
        write_snapshot(cache, "org/revs", C["pr"],
                       files["bin"] | {"model.safetensors": files["st"]["model.safetensors"]},
                       refs=("refs/pr/1",))
        write_snapshot(cache, "org/revs", C["main"], files["st"], refs=("main",))

    def ref_to_deleted_snapshot(cache: Path, files: dict) -> None:
        # `hf cache delete` of the newest revision, or a crash between writing refs/main and the snapshot.
        write_snapshot(cache, "org/gone", C["old"], files["st"], refs=("v1",))
        storage = repo_storage(cache, "org/gone")
        (storage / "refs" / "main").write_text(C["gone"])

    def dangling(cache: Path, files: dict) -> None:
        # A blob deleted by hand (or by a disk cleaner) under a snapshot's link.
        snapshot = write_snapshot(cache, "org/dangle", C["dangle"], files["st"] | files["bin"])
        (snapshot / "model.safetensors").resolve().unlink()

    def copies(cache: Path, files: dict) -> None:
        # Where symlinks are not supported (Windows without developer mode) huggingface_hub copies the blob into
        # the snapshot: real files, no links.
        snapshot = write_snapshot(cache, "org/copies", C["copies"], files["st"])
        for link in list(snapshot.iterdir()):
            data = link.read_bytes()
            link.unlink()
            link.write_bytes(data)

    def weights_in_subfolder(cache: Path, files: dict) -> None:
        # A repo whose root has a config but whose weights sit in a training run's folder only.
        weights = files["st"]["model.safetensors"]
        write_snapshot(cache, "org/sub", C["sub"], {"config.json": files["st"]["config.json"],
                                                     "checkpoint-500/model.safetensors": weights})

    def config_only(cache: Path, files: dict) -> None:
        # AutoConfig.from_pretrained fetched the config alone (refs/main), weights cached for an older commit.
        write_snapshot(cache, "org/cfg", C["old"], files["st"], refs=("v1",))
        write_snapshot(cache, "org/cfg", C["cfg"], {"config.json": files["st"]["config.json"]},
                       no_exist=("model.safetensors",))

    def ghost(cache: Path, files: dict) -> None:
        storage = repo_storage(cache, "org/ghost")
        (storage / "refs").mkdir(parents=True)
        (storage / "refs" / "main").write_text(C["noref"])
        (storage / ".no_exist" / C["noref"]).mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            (storage / ".no_exist" / C["noref"] / name).touch()

    def linked(cache: Path, files: dict) -> None:
        real = cache.with_name("real")
        real.mkdir()
        cache.rmdir()
        cache.symlink_to(real.name)
        write_snapshot(cache, "org/env", C["env"], files["st"])

    def case_dup(cache: Path, files: dict) -> None:
        write_snapshot(cache, "Org/Tiny-Model", C["case"], files["st"])

    cases = [
        Case("org-single-safetensors", w("org/one", C["one"], "st"),
             [Query("org/one"), Query("org/one", "main"), Query("org/one", C["one"]), Query("org/one/")]),
        Case("no-org-gpt2", w("gpt2", C["gpt2"], "st"), [Query("gpt2"), Query("gpt2", C["gpt2"])]),
        Case("no-org-bin-only+no_exist", w("bert-base-chinese", C["bbc"], "bin",
                                            no_exist=("model.safetensors", "model.safetensors.index.json")),
             [Query("bert-base-chinese")]),
        Case("bin-and-safetensors", both, [Query("org/both")]),
        Case("sharded-complete", w("org/sh", C["sh"], "sharded"), [Query("org/sh")]),
        Case("sharded-shard-never-downloaded", gap, [Query("org/gap"), Query("org/gap", "main")]),
        Case("sharded-shard-incomplete", cut, [Query("org/cut")]),
        Case("single-file-incomplete", cut_single, [Query("org/cut1")]),
        Case("revisions-branch-tag-pr", revisions,
             [Query("org/revs"), Query("org/revs", "v1.0"), Query("org/revs", "dev"), Query("org/revs", "refs/pr/1"),
              Query("org/revs", C["old"]), Query("org/revs", "no-such-branch"), Query("org/revs", "f" * 40),
              Query("org/revs", "MAIN"), Query("org/revs", "refs/pr/2")]),
        Case("snapshot-without-refs-main", w("org/noref", C["noref"], "st", refs=("v2",)),
             [Query("org/noref"), Query("org/noref", "v2")]),
        Case("diffusers-subfolders", lambda cache, files: write_snapshot(cache, "org/pipe", C["pipe"], _pipe(files)),
             [Query("org/pipe/unet"), Query("org/pipe/text_encoder"), Query("org/pipe/vae"), Query("org/pipe")]),
        Case("sharded-bin", w("org/shbin", C["shbin"], "sharded-bin"), [Query("org/shbin")]),
        Case("sharded-safetensors+single-bin", lambda cache, files: write_snapshot(
            cache, "org/mix", C["mix"], files["sharded"] | files["bin"]), [Query("org/mix")]),
        Case("ref-to-deleted-snapshot", ref_to_deleted_snapshot, [Query("org/gone"), Query("org/gone", "v1")]),
        # transformers' cached_file sees no model.safetensors (isfile is False) and loads pytorch_model.bin;
        # weightdoctor says the safetensors blob is gone rather than read another format (by design, README).
        Case("dangling-link-deleted-blob", dangling, [Query("org/dangle")], refuses="model.safetensors"),
        Case("copied-files-no-symlinks", copies, [Query("org/copies")]),
        # Only `model.fp16.safetensors` (a download with variant="fp16"): from_pretrained needs variant="fp16";
        # weightdoctor reads it and says so (by design).
        Case("variant-only", lambda cache, files: write_snapshot(cache, "org/var", C["var"], {
            "config.json": files["st"]["config.json"], "model.fp16.safetensors": files["st"]["model.safetensors"]}),
             [Query("org/var")], warns="variant='fp16'"),
        Case("weights-only-in-a-subfolder", weights_in_subfolder, [Query("org/sub"), Query("org/sub/checkpoint-500")]),
        Case("refs-main-config-only", config_only, [Query("org/cfg"), Query("org/cfg", "v1")]),
        Case("case-differences", case_dup,
             [Query("Org/Tiny-Model"), Query("org/tiny-model"), Query("ORG/TINY-MODEL")]),
        # A from_pretrained of a repo that had none of the files asked for: refs/main and .no_exist, no snapshots.
        Case("refs-and-no_exist-only", ghost, [Query("org/ghost")]),
        Case("not-cached", lambda cache, files: None, [Query("org/absent"), Query("absent", "v1")]),
        # Where the cache is: each through huggingface_hub's own reading of the environment.
        Case("env-HF_HOME", w("org/env", C["env"], "st"), [Query("org/env")],
             env=lambda root: {"HF_HOME": str(root / "home"), "HF_HUB_OFFLINE": "1"},
             cache=lambda root: root / "home" / "hub", subprocess_only=True),
        Case("env-HF_HUB_CACHE-over-HF_HOME", w("org/env", C["env"], "st"), [Query("org/env")],
             env=lambda root: {"HF_HOME": str(root / "home"), "HF_HUB_CACHE": str(root / "c"), "HF_HUB_OFFLINE": "1"},
             cache=lambda root: root / "c", subprocess_only=True),
        Case("env-HUGGINGFACE_HUB_CACHE", w("org/env", C["env"], "st"), [Query("org/env")],
             env=lambda root: {"HUGGINGFACE_HUB_CACHE": str(root / "legacy"), "HF_HOME": str(root / "home"),
                               "HF_HUB_OFFLINE": "1"},
             cache=lambda root: root / "legacy", subprocess_only=True, quick=False),
        Case("env-XDG_CACHE_HOME", w("org/env", C["env"], "st"), [Query("org/env")],
             env=lambda root: {"XDG_CACHE_HOME": str(root / "xdg"), "HF_HUB_OFFLINE": "1"},
             cache=lambda root: root / "xdg" / "huggingface" / "hub", subprocess_only=True, quick=False),
        Case("env-$VAR-in-HF_HUB_CACHE", w("org/env", C["env"], "st"), [Query("org/env")],
             env=lambda root: {"SWEEP_ROOT": str(root), "HF_HUB_CACHE": "$SWEEP_ROOT/vars", "HF_HUB_OFFLINE": "1"},
             cache=lambda root: root / "vars", subprocess_only=True),
        Case("env-TRANSFORMERS_CACHE-ignored", w("org/env", C["env"], "st"), [Query("org/env")],
             env=lambda root: {"TRANSFORMERS_CACHE": str(root / "tc"), "HF_HOME": str(root / "home"),
                               "HF_HUB_OFFLINE": "1"},
             cache=lambda root: root / "tc", subprocess_only=True, quick=False),
        # ~/.cache/huggingface a link to a bigger disk: snapshot_download resolves the cache folder, cached_file not.
        Case("env-cache-folder-is-a-link", linked, [Query("org/env"), Query("org/env/")],
             env=lambda root: {"HF_HUB_CACHE": str(root / "link"), "HF_HUB_OFFLINE": "1"},
             cache=lambda root: root / "link", subprocess_only=True, quick=False),
        Case("env-TRANSFORMERS_OFFLINE", w("org/env", C["env"], "st"), [Query("org/env"), Query("org/absent")],
             env=lambda root: {"HF_HUB_CACHE": str(root / "c"), "TRANSFORMERS_OFFLINE": "1"},
             cache=lambda root: root / "c", subprocess_only=True),
    ]
    return cases


# ---------------------------------------------------------------- the oracle (runs in a subprocess)


def oracle(queries: list[dict[str, Any]], load: bool) -> list[dict[str, Any]]:
    """huggingface_hub's and transformers' answers for each query, in this process's environment."""
    from huggingface_hub import constants, scan_cache_dir, snapshot_download, try_to_load_from_cache
    from transformers.utils.hub import cached_file, get_checkpoint_shard_files

    answers = []
    for q in queries:
        repo, subfolder, revision = q["repo"], q["subfolder"] or "", q["revision"]
        ans: dict[str, Any] = {"cache": constants.HF_HUB_CACHE, "offline": constants.HF_HUB_OFFLINE}
        try:
            ans["snapshot"] = snapshot_download(repo, revision=revision, local_files_only=True)
        except Exception as exc:
            ans["snapshot"], ans["snapshot_error"] = None, type(exc).__name__
        pick: list[str] | None = None
        names = DIFFUSERS_NAMES if subfolder == "unet" else WEIGHT_NAMES
        ans["error"] = None
        for name in names:
            try:
                found = cached_file(repo, name, subfolder=subfolder, revision=revision, local_files_only=True,
                                    _raise_exceptions_for_missing_entries=False,
                                    _raise_exceptions_for_connection_errors=False)
            except Exception as exc:
                ans["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                break
            if found is None:
                continue
            cached = try_to_load_from_cache(repo, f"{subfolder}/{name}" if subfolder else name, revision=revision)
            ans.setdefault("try_to_load_from_cache", []).append(cached == found)
            pick = [name]
            if name.endswith(".index.json"):
                try:
                    shards, _ = get_checkpoint_shard_files(repo, found, local_files_only=True, revision=revision,
                                                           subfolder=subfolder)
                    pick += [os.path.basename(s) for s in shards]
                except Exception as exc:
                    ans["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                    pick = None
            ans["folder"] = os.path.dirname(found)
            break
        ans["pick"] = pick
        has_config = cached_file(repo, "config.json", subfolder=subfolder, revision=revision, local_files_only=True,
                                 _raise_exceptions_for_missing_entries=False,
                                 _raise_exceptions_for_connection_errors=False) is not None
        if load and pick and has_config and subfolder != "unet":
            from transformers import AutoModel

            try:
                model = AutoModel.from_pretrained(repo, subfolder=subfolder, revision=revision, local_files_only=True)
                value = float(model.embeddings.word_embeddings.weight.abs().sum())
                ans["loaded_scale"] = round(value / _reference_sum(), 3)  # 1.0: safetensors, 2.0: the .bin
            except Exception as exc:
                ans["load_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        refs: dict[str, str] | None = {}
        try:
            scan = scan_cache_dir(constants.HF_HUB_CACHE)
            for info in scan.repos:
                if info.repo_id == repo:
                    for rev in info.revisions:
                        refs |= {ref: rev.commit_hash for ref in rev.refs}
            if any(f"--{repo.replace('/', '--')}" in str(w) for w in scan.warnings):
                refs = None  # scan_cache_dir calls the repo corrupted (a ref to a missing snapshot): no refs to compare
        except Exception:
            refs = None
        ans["scan_refs"] = refs
        answers.append(ans)
    return answers


def _reference_sum() -> float:
    return float(_state_dict(1.0)["embeddings.word_embeddings.weight"].abs().sum())


# ---------------------------------------------------------------- weightdoctor's side


def _split(source: str) -> tuple[str, str | None]:
    text = source.rstrip("/")
    parts = text.split("/")
    return ("/".join(parts[:2]), "/".join(parts[2:])) if len(parts) > 2 else (text, None)


def _tree(folder: Path) -> list[tuple[str, str, int, int]]:
    """Every entry under the cache with its link target, size and mtime: what a run must leave as it was."""
    out = []
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        out.append((str(path.relative_to(folder)), os.readlink(path) if path.is_symlink() else "", st.st_size,
                    st.st_mtime_ns))
    return out


RUNS = {"inprocess": 0, "module": 0, "script": 0}  # weightdoctor runs, for the summary


def _wd(args: list[str], env: dict[str, str], how: str) -> tuple[int, str, str]:
    """Run weightdoctor: in this process (CliRunner on weightdoctor.cli.app), `python -m weightdoctor`, or the
    `weightdoctor` console script."""
    RUNS[how] += 1
    if how == "inprocess":
        from typer.testing import CliRunner

        from weightdoctor.cli import app

        result = CliRunner().invoke(app, args, env=env | {"COLUMNS": "1000"} |
                                    {v: None for v in HUB_VARIABLES if v not in env})
        return result.exit_code, result.stdout, result.stderr
    full = {k: v for k, v in os.environ.items() if k not in HUB_VARIABLES} | env | {"COLUMNS": "1000"}
    full["PYTHONPATH"] = str(REPO_ROOT)
    script = Path(sys.executable).with_name("weightdoctor")
    cmd = [sys.executable, "-m", "weightdoctor", *args] if how == "module" else [str(script), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=full, timeout=120)
    return done.returncode, done.stdout, done.stderr


def _one_line_error(code: int, err: str, must_name: list[str], out: str = "") -> str | None:
    """Why an error run is wrong, or None: exit 2, one line on stderr, nothing on stdout, no traceback, naming
    what it must."""
    if out.strip():
        return f"exit {code} with stdout {out[:100]!r}"
    lines = [line for line in err.splitlines() if line.strip()]
    if code != 2:
        return f"exit {code}, not 2 ({(lines or ['no stderr'])[-1][:150]})"
    if "Traceback" in err or len(lines) != 1:
        return f"{len(lines)} stderr lines: {err[:200]!r}"
    missing = [m for m in must_name if m not in lines[0]]
    return f"error does not name {missing}: {lines[0][:300]}" if missing else None


def check_query(q: Query, ans: dict[str, Any], env: dict[str, str], cache: Path, work: Path, how: str,
                all_commands: bool, refuses: str | None = None, warns: str | None = None) -> list[str]:
    """The mismatches between weightdoctor and the oracle for one query ([] when they agree)."""
    from weightdoctor.checkpoint import hub

    problems: list[str] = []
    repo, subfolder = _split(q.source)
    rev = ["--revision", q.revision] if q.revision else []
    code, out, err = _wd(["inspect", q.source, "--json", *rev], env, how)
    # transformers loads when it finds a weight file; snapshot_download must agree on the folder.
    expected_ok = ans["pick"] is not None and ans["error"] is None and refuses is None
    if warns is not None:
        if code != 0 or not any(warns in w for w in json.loads(out).get("warnings", [])):
            return [f"inspect exit {code}, expected a read with a warning saying {warns!r}: {(out + err)[:300]}"]
        return []
    if expected_ok:
        if code != 0:
            return [f"inspect exit {code}, transformers loads {ans['pick']}: {err.strip()[:300]}"]
        data = json.loads(out)
        folder = Path(ans["folder"])
        resolved = Path(data["resolved_path"])
        # cached_file's folder, or (through a linked cache folder) snapshot_download's, which resolves links.
        if resolved != folder and resolved != Path(ans["snapshot"] or folder) / (subfolder or ""):
            problems.append(f"resolved {resolved}, huggingface_hub {folder}")
        if ans["snapshot"] is not None and not str(resolved).startswith(ans["snapshot"]):
            problems.append(f"resolved {resolved} outside snapshot_download's {ans['snapshot']}")
        files = sorted(Path(f["path"]).name for f in data["files"] if f["role"] in ("weights", "index"))
        if files != sorted(ans["pick"]):
            problems.append(f"read {files}, transformers {sorted(ans['pick'])}")
        if (data["repo_id"], data["revision"]) != (repo, q.revision):
            problems.append(f"reports repo_id/revision {data['repo_id']!r}/{data['revision']!r}")
        if ans.get("loaded_scale") not in (None, 2.0 if ans["pick"][0].startswith("pytorch_model") else 1.0):
            problems.append(f"oracle inconsistent: from_pretrained loaded scale {ans['loaded_scale']}")
        if ans.get("load_error"):
            problems.append(f"oracle inconsistent: from_pretrained failed: {ans['load_error']}")
    else:
        must = [repo] + ([q.revision] if q.revision else [])
        if ans["error"] and "model-00002-of-00002.safetensors" in ans["error"]:
            must.append("model-00002-of-00002.safetensors")
        if refuses:
            must.append(refuses)
        why = _one_line_error(code, err, must, out)
        if why:
            problems.append(f"inspect: {why}")
        # A `--revision X` the error suggests must name a ref or a snapshot of the repo (a download's `hf download
        # ... --revision X` names the revision asked for, to fetch it).
        storage = repo_storage(cache, repo)
        snapshots = [p.name for p in (storage / "snapshots").iterdir()] if (storage / "snapshots").is_dir() else []
        for suggested in re.findall(r"--revision (\S+?)[`),;]?(?:\s|$)", re.sub(r"`hf download [^`]*`", "", err)):
            if suggested not in (ans["scan_refs"] or {}) and not any(c.startswith(suggested) for c in snapshots) \
                    and not (storage / "refs" / suggested).is_file():
                problems.append(f"suggests --revision {suggested}, which names no ref or snapshot of {repo}")
        # A repo cached under another case (the Hub matches any case, the cache does not) is named.
        for other in cache.iterdir() if cache.is_dir() else []:
            if other.name.lower() == storage.name.lower() and other.name != storage.name:
                spelled = other.name.removeprefix("models--").replace("--", "/")
                if spelled not in err:
                    problems.append(f"the cache holds {spelled}, not named: {err.strip()[:200]}")
        # A download cut short (an .incomplete blob) is said, when the snapshot has no weights to read.
        if any((storage / "blobs").glob("*.incomplete")) and "incomplete" not in err:
            problems.append(f"an unfinished download in blobs/ is not mentioned: {err.strip()[:200]}")
        if ans["offline"] and ("unreachable" in err or "connect" in err):
            problems.append(f"huggingface_hub is offline, weightdoctor tried the Hub: {err.strip()[:200]}")
    if not all(ans.get("try_to_load_from_cache", [True])):
        problems.append("oracle inconsistent: try_to_load_from_cache disagrees with cached_file")
    # The refs the error messages list are scan_cache_dir's.
    if how == "inprocess" and ans["scan_refs"] is not None:
        listed = {item.split(" -> ")[0]: item.split(" -> ")[1][:10]
                  for item in _with_env(env, lambda: hub.cached_revisions(repo)) if " -> " in item}
        if listed != {ref: commit[:10] for ref, commit in ans["scan_refs"].items()}:
            problems.append(f"cached refs {listed}, scan_cache_dir {ans['scan_refs']}")
    if not all_commands:
        return problems
    out_dir = work / f"out-{abs(hash((q.source, q.revision, how)))}"
    shutil.rmtree(out_dir, ignore_errors=True)
    runs = {
        "diff-keys": ["diff-keys", q.source, q.source, "--json", *rev],
        "check-dtype": ["check-dtype", q.source, "--json", *rev],
        "plan-devices": ["plan-devices", q.source, "--json", "--gpu", "1GB", *rev],
        "convert": ["convert", q.source, "-o", str(out_dir / "c"), "--to", "safetensors", *rev],
        "shard": ["shard", q.source, "-o", str(out_dir / "s"), "--max", "2KB", *rev],
    }
    for command, args in runs.items():
        code, out, err = _wd(args, env, how)
        if expected_ok:
            if code != 0:
                problems.append(f"{command} exit {code}: {err.strip()[-300:]}")
            elif command == "diff-keys" and json.loads(out).get("resolved_a") != str(resolved):
                problems.append(f"diff-keys resolved_a {json.loads(out).get('resolved_a')}, hub {ans['folder']}")
        else:
            must = [repo] + ([q.revision] if q.revision else []) + ([refuses] if refuses else [])
            why = _one_line_error(code, err, must, out if "--json" in args else "")
            if why and command == "plan-devices" and code == 0 and ans["pick"] is None:
                why = None  # a config alone is enough for plan-devices (README); checked by inspect above
            if why:
                problems.append(f"{command}: {why}")
    shutil.rmtree(out_dir, ignore_errors=True)
    return problems


def _with_env(env: dict[str, str], fn: Callable[[], Any]) -> Any:
    saved = {k: os.environ.get(k) for k in (*HUB_VARIABLES, *env)}
    try:
        for k in HUB_VARIABLES:
            os.environ.pop(k, None)
        os.environ.update(env)
        return fn()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------- main


@dataclass
class Outcome:
    case: str
    query: str
    how: str
    problems: list[str] = field(default_factory=list)


def run(quick: bool, verbose: bool, only: list[str] | None) -> list[Outcome]:
    import warnings

    warnings.filterwarnings("ignore")
    files = {kind: _files(kind) for kind in ("st", "bin", "sharded", "sharded-bin")}
    cases = [c for c in _cases() if (not quick or c.quick) and (not only or c.name in only)]
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="hub-sweep-") as tmp:
        # The cases of the default environment share one cache (their repo ids differ) and one oracle process;
        # each environment case has a root of its own.
        groups = [[c for c in cases if not c.subprocess_only]] + [[c] for c in cases if c.subprocess_only]
        for group in filter(None, groups):
            root = Path(tmp) / (group[0].name if group[0].subprocess_only else "shared")
            env, cache = group[0].env(root), group[0].cache(root)
            cache.mkdir(parents=True, exist_ok=True)
            for case in group:
                case.build(cache, files)
            queries = [{"repo": _split(q.source)[0], "subfolder": _split(q.source)[1], "revision": q.revision}
                       for case in group for q in case.queries]
            before = _tree(cache)
            answers = iter(_run_oracle(queries, env, load=not quick))
            for case in group:
                for q in case.queries:
                    outcomes += _check_case_query(case, q, next(answers), env, cache, root, quick,
                                                  first=q is case.queries[0] and (not quick or case is group[0]))
            if _tree(cache) != before:
                outcomes.append(Outcome(group[0].name, "(cache)", "all", ["the cache changed"]))
                print(f"{group[0].name:34} the cache changed  MISMATCH")
    return outcomes


def _check_case_query(case: Case, q: Query, ans: dict[str, Any], env: dict[str, str], cache: Path, root: Path,
                      quick: bool, first: bool) -> list[Outcome]:
    """Check one query in-process (or, for an environment case, through `python -m weightdoctor`), and on
    `first` also through `python -m weightdoctor` and the console script (once per group with --quick)."""
    label = q.source + (f"@{q.revision[:12]}" if q.revision else "")
    hows = ["module"] if case.subprocess_only else ["inprocess"]
    if first and not case.subprocess_only:
        hows += ["script"] if quick else ["module", "script"]
    outcomes = []
    for how in hows:
        # --quick: every command on a case's first query only (inspect on all), in-process only.
        every = (how == "inprocess" or not quick) and (not quick or q is case.queries[0])
        if how == "script":  # the console script's fast path: diff-keys
            problems = _fast_path(q, ans, env, case.refuses, case.warns)
        else:
            every = every and (how != "module" or case.subprocess_only)
            problems = check_query(q, ans, env, cache, root, how, all_commands=every, refuses=case.refuses,
                                   warns=case.warns)
        outcomes.append(Outcome(case.name, label, how, problems))
        expect = "loads " + ",".join(ans["pick"] or []) if ans["pick"] and not ans["error"] else "fails"
        print(f"{case.name:34} {label:42} {how:9} hub/transformers: {expect:60.60} "
              f"{'ok' if not problems else 'MISMATCH'}")
        for problem in problems:
            print(f"    {problem}")
    return outcomes


def _fast_path(q: Query, ans: dict[str, Any], env: dict[str, str], refuses: str | None,
               warns: str | None = None) -> list[str]:
    rev = ["--revision", q.revision] if q.revision else []
    code, out, err = _wd(["diff-keys", q.source, q.source, "--json", *rev], env, "script")
    if (ans["pick"] and not ans["error"] and not refuses) or warns:
        if code != 0:
            return [f"console script diff-keys exit {code}: {err.strip()[-200:]}"]
        folder = ans.get("folder") or ans["snapshot"]
        return [] if json.loads(out).get("resolved_a") == folder else ["console script resolved elsewhere"]
    why = _one_line_error(code, err, [_split(q.source)[0]] + ([refuses] if refuses else []), out)
    return [f"console script diff-keys: {why}"] if why else []


def _run_oracle(queries: list[dict[str, Any]], env: dict[str, str], load: bool) -> list[dict[str, Any]]:
    full = {k: v for k, v in os.environ.items() if k not in HUB_VARIABLES} | env
    full["PYTHONPATH"] = str(REPO_ROOT)
    full["TRANSFORMERS_VERBOSITY"] = "error"
    done = subprocess.run([sys.executable, __file__, "--oracle", json.dumps({"queries": queries, "load": load})],
                          capture_output=True, text=True, env=full, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"oracle failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases, no from_pretrained load, no subprocess "
                                                                "legs for the in-process cases")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--only", nargs="*", help="case names")
    parser.add_argument("--oracle", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.oracle:
        request = json.loads(args.oracle)
        print(json.dumps(oracle(request["queries"], request["load"])))
        return 0
    os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: this process never goes online
    start = time.perf_counter()
    outcomes = run(args.quick, args.verbose, args.only)
    bad = [o for o in outcomes if o.problems]
    cases = len({o.case for o in outcomes})
    print(f"{cases} layouts, {len(outcomes)} checks, {len(outcomes) - len(bad)} agree, {len(bad)} mismatch "
          f"({time.perf_counter() - start:.1f} s; weightdoctor runs: {RUNS['inprocess']} in-process, "
          f"{RUNS['module']} python -m, {RUNS['script']} console script)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
