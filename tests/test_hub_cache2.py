"""Repo ids read through Hub cache layouts written as huggingface_hub writes them (round 2 of the cache review)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from safetensors.torch import save
from typer.testing import Result

from fixtures.hub_cache import commit_of, write_snapshot
from tests.helpers import run_cli

CONFIG = b'{"model_type": "bert", "hidden_size": 4}'


def _line(result: Result) -> str:
    return " ".join(result.stderr.split())  # the console wraps long lines at its width


def _pasted(line: str) -> list[str]:
    """The first command a message quotes in backticks, as a shell splits it."""
    return shlex.split(line.split("`")[1])


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.mark.parametrize("revision", [None, "v1.0"])
def test_a_pipeline_folder_not_downloaded_is_not_said_missing_from_the_repo(offline: Path,
                                                                           revision: str | None) -> None:
    # `hf download org/pipe --include "unet/*"` caches one folder of the pipeline; `org/pipe/vae` offline said
    # "org/pipe has no folder vae", of the repo, which has it, and not how to fetch it.
    write_snapshot(offline, "org/pipe", commit_of("pipe"), {
        "model_index.json": b"{}", "unet/config.json": b"{}",
        "unet/diffusion_pytorch_model.safetensors": save({"u": torch.zeros(2)})}, refs=(revision or "main",))
    result = run_cli("inspect", "org/pipe/vae", "--json", *(["--revision", revision] if revision else []))
    assert result.exit_code == 2 and result.stdout == ""
    line = _line(result)
    assert "org/pipe has no folder vae in its cached snapshot" in line, line
    assert "the Hub cannot be reached (HF_HUB_OFFLINE is set)" in line
    assert _pasted(line) == ["hf", "download", "org/pipe", "--include", "vae/*",
                             *(["--revision", revision] if revision else [])]


@pytest.mark.parametrize(("typed", "revision", "command"), [
    ("org/absent", None, ["hf", "download", "org/absent"]),
    ("absent-legacy", None, ["hf", "download", "absent-legacy"]),  # a repo id without an org, as gpt2
    ("org/multi", "v2.0", ["hf", "download", "org/multi", "--revision", "v2.0"]),  # cached, not at that tag
    ("org/absent/unet", None, ["hf", "download", "org/absent", "--include", "unet/*"]),  # a pipeline's folder
    ("hf://org/absent@v1", None, ["hf", "download", "org/absent", "--revision", "v1"]),
    # a file of another format named by its address is fetched by name, not as a folder `--include 'x.onnx/*'`
    ("hf://org/absent/onnx/model.onnx", None, ["hf", "download", "org/absent", "onnx/model.onnx"]),
])
def test_a_model_repo_not_cached_offline_says_what_to_run(offline: Path, typed: str, revision: str | None,
                                                          command: list[str]) -> None:
    # "is not in the Hugging Face cache at ... (HF_HUB_OFFLINE is set)" ended there, while the same message for a
    # dataset repo, a missing file or a broken blob named the `hf download` that fetches it.
    write_snapshot(offline, "org/multi", commit_of("m1"), {"config.json": CONFIG,
                                                            "model.safetensors": save({"w": torch.ones(4)})})
    result = run_cli("inspect", typed, "--json", *(["--revision", revision] if revision else []))
    assert result.exit_code == 2 and result.stdout == ""
    line = _line(result)
    assert f"is not in the Hugging Face cache at {offline} (HF_HUB_OFFLINE is set)" in line, line
    assert line.endswith("(with HF_HUB_OFFLINE unset)"), line
    assert _pasted(line) == command


def test_an_unreachable_hub_says_the_download_needs_it(offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from weightdoctor.checkpoint import hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_unreachable", lambda timeout=5.0: "cannot connect to huggingface.co:443: refused")
    line = _line(run_cli("inspect", "org/absent"))
    assert "the Hub is unreachable (cannot connect to huggingface.co:443: refused)" in line, line
    assert line.endswith("download it with `hf download org/absent` where the Hub can be reached"), line


def test_a_typo_of_a_cached_repo_or_ref_offers_it_and_no_download(offline: Path) -> None:
    # A download of the mistyped name would fail or fetch another repo: the cached one is what was meant.
    write_snapshot(offline, "acme/tiny-bert", commit_of("t"), {"model.safetensors": save({"w": torch.ones(4)})},
                   refs=("main", "v1.0"))
    for args in (("acme/tiny-brt",), ("acme/tiny-bert", "--revision", "mian")):
        line = _line(run_cli("inspect", *args))
        assert line.endswith("(cached)?") or line.endswith("'acme/tiny-bert'?"), line
        assert "hf download" not in line


def test_a_repo_in_the_folder_transformers_cache_names_says_that_variable_is_no_longer_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An old Dockerfile's TRANSFORMERS_CACHE=/models: transformers 5 and huggingface_hub 1+ read HF_HUB_CACHE (or
    # HF_HOME) only, and the repo cached there was said not to be cached at all, with a download to run.
    old = tmp_path / "models"
    write_snapshot(old, "org/m", commit_of("m"), {"config.json": CONFIG,
                                                   "model.safetensors": save({"w": torch.ones(2)})})
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TRANSFORMERS_CACHE", str(old))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = _line(run_cli("inspect", "org/m", "--json"))
    assert line.endswith(f"TRANSFORMERS_CACHE names {old}, which holds org/m, but huggingface_hub and transformers 5 "
                         f"no longer read that variable: set HF_HUB_CACHE={old}"), line
    assert "hf download" not in line
    monkeypatch.setenv("HF_HUB_CACHE", str(old))
    result = run_cli("inspect", "org/m", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["resolved_path"].startswith(str(old))


@pytest.mark.parametrize("end", [b"\n", b"\r\n"])
def test_a_ref_with_a_line_end_is_not_listed_as_a_good_ref(offline: Path, end: bytes) -> None:
    # `echo $SHA > refs/main`, or a cache kept in git with autocrlf: huggingface_hub reads the ref whole (no strip)
    # and finds no snapshot, nor does weightdoctor; the error listed "main -> ae23b94cca" as a good ref beside
    # "is not in the cache", which contradicted itself.
    commit = commit_of("m1")
    write_snapshot(offline, "org/multi", commit, {"model.safetensors": save({"w": torch.ones(4)})})
    (offline / "models--org--multi" / "refs" / "main").write_bytes(commit.encode() + end)
    line = _line(run_cli("inspect", "org/multi"))
    assert f"the cache holds main -> {commit[:10]} followed by {end.decode()!r}, which huggingface_hub reads as " \
           "part of the ref (it names no snapshot)" in line, line
    assert f"main -> {commit[:10]}," not in line and f"main -> {commit[:10]};" not in line


@pytest.mark.parametrize(("typed", "held", "give"), [
    ("datasets/org/same", "model", "org/same"),
    ("hf://spaces/org/same", "dataset", "datasets/org/same"),
])
def test_a_typed_repo_not_cached_names_the_cached_repo_of_another_type(offline: Path, typed: str, held: str,
                                                                       give: str) -> None:
    # A plain `org/name` whose dataset is cached is told "give it as datasets/org/name"; the reverse (a dataset or
    # Space address where only the model, or the dataset, of that id is cached) said only to download it.
    snapshot = write_snapshot(offline, "org/same", commit_of("same"), {"model.safetensors": save({"w": torch.ones(2)})})
    if held != "model":
        storage = snapshot.parent.parent
        storage.rename(storage.with_name(f"{held}s--org--same"))
    line = _line(run_cli("inspect", typed))
    assert f"the cache holds a {held} repo of that name: give it as {give}" in line, line


def test_a_pipeline_folder_the_cache_records_as_missing_is_said_missing_from_the_repo(offline: Path) -> None:
    # huggingface_hub marks a file the repo lacks at a commit with `.no_exist/<commit>/<path>` (diffusers' optional
    # components): that folder is not the repo's, and downloading it would fetch nothing.
    write_snapshot(offline, "org/pipe", commit_of("pipe"), {
        "model_index.json": b"{}", "unet/diffusion_pytorch_model.safetensors": save({"u": torch.zeros(2)})},
        no_exist=("safety_checker/config.json",))
    line = _line(run_cli("inspect", "org/pipe/safety_checker"))
    assert "org/pipe has no folder safety_checker (huggingface_hub recorded safety_checker/config.json as missing " \
           f"from the repo at commit {commit_of('pipe')[:10]}" in line, line
    assert "hf download" not in line
