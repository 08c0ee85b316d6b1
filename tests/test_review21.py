"""Review of redteam13, thirdparty11, ux12 and perf11: false refusals of ordinary use, and rules that disagree.

Covers: a deleted working directory refused every run, `inspect /abs/model` too (nothing relative is read there);
the tie of an output layer read from one side's config only (file against folder: B's missing lm_head "tied to"
A's embedding where A's config says untied, and A's unexpected lm_head "tied to" B's where B's says untied);
--debug with stderr full (exit 1, not 2); an output whose literal name holds a backslash and exists (refused as a
Windows separator even with --force, so it could not be named).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import REPO_ROOT, run_json


def _run(*args: str | Path, cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "weightdoctor", *map(str, args)], text=True, env=env, cwd=cwd,
                          timeout=300, **kwargs)


def test_a_deleted_working_directory_still_reads_absolute_paths(tmp_path: Path) -> None:
    model = tmp_path / "m.safetensors"
    save_file({"a.weight": torch.zeros(4, 4)}, str(model))
    gone = tmp_path / "gone"

    def enter_then_delete() -> None:
        os.chdir(gone)
        os.rmdir(gone)

    gone.mkdir()
    done = _run("inspect", model, "--json", cwd=tmp_path, preexec_fn=enter_then_delete)
    assert done.returncode == 0, done.stderr  # was: "the current folder no longer exists", exit 2
    assert json.loads(done.stdout)["num_tensors"] == 1
    # An output given as an absolute path, its value attached: written there.
    out = tmp_path / "out.safetensors"
    gone.mkdir()
    done = _run("convert", model, f"--output={out}", cwd=tmp_path, preexec_fn=enter_then_delete)
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    # A relative word (here -o's value) would be read against the folder that is gone: still refused, not made in /.
    for args in (["convert", model, "-o", "r21-out.safetensors"], ["convert", model, "-or21-out.safetensors"],
                 ["inspect", "--", "-r21"]):
        gone.mkdir()
        done = _run(*args, cwd=tmp_path, preexec_fn=enter_then_delete)
        assert done.returncode == 2
        assert "the current folder no longer exists" in done.stderr
    assert not os.path.lexists("/r21-out.safetensors")


def _llama_keys(head: bool) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    tensors = {"model.embed_tokens.weight": torch.randn(32, 8, generator=generator),
               "model.norm.weight": torch.ones(8)}
    if head:
        tensors["lm_head.weight"] = torch.randn(32, 8, generator=generator)
    return tensors


def _base_folder(tmp_path: Path, tie: bool) -> Path:
    """A base model's folder (no lm_head) whose config says whether the family ties its output layer."""
    folder = tmp_path / f"base-{tie}"
    folder.mkdir()
    save_file({k.removeprefix("model."): v for k, v in _llama_keys(head=False).items()},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "tie_word_embeddings": tie,
                                                    "architectures": ["LlamaModel"]}))
    return folder


def _lm_head(report: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(entry for entry in report[kind] if entry["name"] == "lm_head.weight")


@pytest.mark.parametrize("tie", [False, True])
def test_an_output_layer_is_tied_by_either_sides_config(tmp_path: Path, tie: bool) -> None:
    plain = tmp_path / "plain.safetensors"  # no config: says nothing of ties
    save_file(_llama_keys(head=True), str(plain))
    base = _base_folder(tmp_path, tie)
    # B's lm_head, missing from A whose config says untied: it starts at random (was "tied to", info).
    _code, report = run_json("diff-keys", str(base), str(plain))
    missing = _lm_head(report, "missing")
    # A's lm_head, unexpected in B whose config says untied: a head B does not use (was "tied to" B's embedding).
    _code, report = run_json("diff-keys", str(plain), str(base))
    unexpected = _lm_head(report, "unexpected")
    if tie:
        assert (missing["reason"], missing["severity"]) == ("tied-weight", "info")
        assert missing["detail"] == "tied to embed_tokens.weight"
        assert (unexpected["reason"], unexpected["detail"]) == ("tied-weight", "tied to embed_tokens.weight")
    else:
        assert (missing["reason"], missing["severity"]) == ("task-head", "warn")
        assert missing["detail"] == "the language-model output layer, initialized at random (not tied)"
        assert (unexpected["reason"], unexpected["detail"]) == ("task-head", "not used by B, dropped")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_debug_on_a_full_stderr_keeps_the_exit_code(tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with open("/dev/full", "w") as full:
        plain = _run("inspect", broken, cwd=tmp_path, stderr=full)
        debug = _run("inspect", broken, "--debug", cwd=tmp_path, stderr=full)
    assert plain.returncode == 2
    assert debug.returncode == 2  # was 1: the traceback's write to the full stderr raised
    assert debug.stdout == ""


def test_an_output_named_with_a_backslash_that_exists_is_the_users_own(tmp_path: Path) -> None:
    model = tmp_path / "m.safetensors"
    save_file({"a.weight": torch.zeros(4, 4)}, str(model))
    (tmp_path / "runs").mkdir()
    done = _run("convert", model, "-o", "runs\\best.safetensors", cwd=tmp_path)
    assert done.returncode == 2  # not there yet: the Windows separator it most likely is
    assert "did you mean runs/best.safetensors?" in done.stderr
    # A file of that literal name (an earlier save): replaced with --force, as a `C:` or `$NAME` folder is written
    # into. It was refused whatever the user did.
    literal = tmp_path / "runs\\best.safetensors"
    save_file({"old": torch.ones(1)}, str(literal))
    done = _run("convert", model, "-o", "runs\\best.safetensors", "--force", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    _code, report = run_json("inspect", str(literal))
    assert [t["name"] for t in report["tensors"]] == ["a.weight"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == []
