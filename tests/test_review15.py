"""Review of the hub10 merge (Hub addresses, typed repo ids, `hf download --local-dir` folders): the cases it missed,
each against a Hub cache built in tmp_path as huggingface_hub writes it; no network (download functions fail)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from fixtures.hub_cache import commit_of, repo_storage, write_snapshot
from tests.helpers import REPO_ROOT, restore_rebound_fakes, run_cli

MAIN, V1 = commit_of("review15-main"), commit_of("review15-v1")
CONFIG = json.dumps({"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 8,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
                     "vocab_size": 32, "max_position_embeddings": 16}).encode()


def _one_line(text: str) -> str:
    return " ".join(text.split())  # the console wraps long lines at its width


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hub cache holding model repo org/m (main: weights, config, model.onnx; v1: weights alone)."""
    folder = tmp_path / "hub"
    write_snapshot(folder, "org/m", MAIN, {"model.safetensors": save({"w": torch.zeros(2)}), "config.json": CONFIG,
                                           "model.onnx": b"\x08\x07\x12\x07pytorch"})
    write_snapshot(folder, "org/m", V1, {"model.safetensors": save({"old": torch.zeros(2)})}, refs=("v1",))
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


@pytest.fixture
def no_fetch(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Make every huggingface_hub call that would reach the Hub fail the test; yields the names called."""
    import huggingface_hub
    from huggingface_hub import hf_api

    called: list[str] = []

    def refuse(name: str) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            called.append(name)
            raise AssertionError(f"{name} reached for the Hub: {args} {kwargs}")
        return call

    def local_only(name: str, real: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            return real(*args, **kwargs) if kwargs.get("local_files_only") else refuse(name)(*args, **kwargs)
        return call

    reals = {"snapshot_download": huggingface_hub.snapshot_download,
             "hf_hub_download": huggingface_hub.hf_hub_download}
    fakes = {name: local_only(name, real) for name, real in reals.items()}
    for name, fake in fakes.items():
        monkeypatch.setattr(huggingface_hub, name, fake)
    for method in ("list_repo_files", "get_safetensors_metadata", "get_paths_info"):
        monkeypatch.setattr(hf_api.HfApi, method, refuse(method))
    yield called
    restore_rebound_fakes(fakes, reals)


@pytest.mark.parametrize("source", ["hf://[::1", "https://[::1"])
def test_an_address_urlsplit_refuses_is_one_line_naming_it(cache: Path, source: str) -> None:
    # urllib's urlsplit raises ValueError on a bracket left open: "unexpected ValueError: Invalid IPv6 URL", and
    # for --config the line named A, not the bad --config.
    result = run_cli("inspect", source)
    assert result.exit_code == 2 and result.stdout == ""
    line = _one_line(result.stderr)
    assert "unexpected" not in line and "ValueError" not in line
    assert line.startswith("error: Invalid HF URI 'hf://[::1'" if source.startswith("hf:")
                           else "error: https://[::1: a URL, not a local path")
    result = run_cli("diff-keys", "org/m", "--model-class", "BertModel", "--config", source)
    line = _one_line(result.stderr)
    assert result.exit_code == 2 and "unexpected" not in line and source in line


def test_a_file_the_hub_lacks_of_a_cached_repo_is_named_not_the_repo(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Online, hf://org/m/model.fp16.safetensors of a cached repo whose Hub has no such file said "'org/m' is not a
    # local path and is not in the cache ... the cache holds main -> ...": the repo is cached, the file is missing.
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    from weightdoctor.checkpoint import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_unreachable", lambda timeout=5.0: None)

    def not_there(repo_id: str, filename: str, **kwargs: object) -> str:
        raise EntryNotFoundError(f"404 Client Error. Entry Not Found for url: {filename}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", not_there)
    source = "hf://org/m/model.fp16.safetensors"
    result = run_cli("inspect", source)
    assert result.exit_code == 2
    line = _one_line(result.stderr)
    assert line.startswith("error: hf://org/m/model.fp16.safetensors: org/m's cached snapshot has no "
                           "model.fp16.safetensors, and the Hub could not provide it: 404 Client Error. Entry Not "
                           "Found")
    assert "not in the cache" not in line


def test_a_blob_page_of_a_cached_file_of_another_format_is_refused_as_that_format(
        cache: Path, monkeypatch: pytest.MonkeyPatch, no_fetch: list[str]) -> None:
    # The blob page of model.onnx in a cached snapshot said "org/m has no folder model.onnx".
    called = no_fetch
    result = run_cli("inspect", "https://huggingface.co/org/m/blob/main/model.onnx")
    assert result.exit_code == 2 and called == []
    line = _one_line(result.stderr)
    assert "has no folder" not in line and "this is an ONNX model" in line


def test_a_dataset_file_reports_its_snapshot_and_commit(cache: Path, no_fetch: list[str]) -> None:
    # hf://datasets/org/d/model.safetensors resolved to its blob (blobs/<sha256>): `resolved_path` was no file name
    # and `commit` was null, where the same file of a model repo reports its snapshot and commit.
    storage = repo_storage(cache, "org/m")
    dataset = cache / "datasets--org--d"
    import shutil

    shutil.copytree(storage, dataset, symlinks=True)
    called = no_fetch
    for source, commit in (("hf://datasets/org/d/model.safetensors", MAIN), ("datasets/org/d@v1/model.safetensors", V1),
                           ("hf://org/m/model.safetensors", MAIN)):
        result = run_cli("inspect", source, "--json")
        assert result.exit_code == 0, result.stderr
        data = json.loads(result.stdout)
        assert data["commit"] == commit, source
        assert data["resolved_path"].endswith(f"/snapshots/{commit}/model.safetensors"), source
        assert data["source"] == source and data["repo_id"] in ("datasets/org/d", "org/m")
    assert called == []


def test_a_missing_local_path_under_a_datasets_folder_is_said_missing_first(cache: Path) -> None:
    # `datasets/mnist/ckpt/model.safetensors` (a mistyped file in a project's own datasets/ folder) said only "the
    # dataset repo mnist/ckpt is not in the Hugging Face cache": no "no such file", no close local names.
    folder = Path("datasets/mnist/ckpts")
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(save({"local": torch.zeros(2)}))
    result = run_cli("inspect", "datasets/mnist/ckpt")
    assert result.exit_code == 2
    line = _one_line(result.stderr)
    assert line.startswith("error: datasets/mnist/ckpt: no such file or directory; did you mean datasets/mnist/ckpts?"
                           "; read as a Hub address, the dataset repo mnist/ckpt is not in the Hugging Face cache")
    # The local folder itself, and an explicit hf:// address, are unchanged.
    assert run_cli("inspect", "datasets/mnist/ckpts").exit_code == 0
    result = run_cli("inspect", "hf://datasets/mnist/ckpt")
    assert _one_line(result.stderr).startswith("error: hf://datasets/mnist/ckpt: the dataset repo mnist/ckpt is not")


@pytest.mark.parametrize("source", ["org/c", "hf://org/c", "hf://org/c@main"])
def test_plan_devices_reads_revision_with_a_trailing_slash_as_inspect_does(
        cache: Path, monkeypatch: pytest.MonkeyPatch, source: str, no_fetch: list[str]) -> None:
    # `inspect org/c --revision main/` reads main (fixlist11); plan-devices resolves a repo id itself and asked the
    # Hub for revision 'main/' (offline: "revision 'main/' of 'org/c' is not ... in the Hugging Face cache"), and
    # hf://org/c@main went through the weights reader, which fetches what a snapshot of a config alone lacks.
    from weightdoctor.checkpoint import hub

    write_snapshot(cache, "org/c", MAIN, {"config.json": CONFIG})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_unreachable", lambda timeout=5.0: None)
    called = no_fetch
    result = run_cli("plan-devices", source, "--revision", "main/", "--cpu", "1GB", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["source"] == source and data["model_class"] == "BertModel" and data["built_from"] == "config"
    assert called == []


@pytest.mark.parametrize("config", ["org/m", "hf://org/m"])
def test_diff_keys_config_reads_revision_with_a_trailing_slash(
        cache: Path, monkeypatch: pytest.MonkeyPatch, config: str, no_fetch: list[str]) -> None:
    # A read at main (`--revision main/`), its --config said "revision 'main/' of 'org/m' is not ... cached".
    called = no_fetch
    result = run_cli("diff-keys", "org/m", "--model-class", "BertModel", "--config", config, "--revision", "main/",
                     "--json")
    assert "revision 'main/'" not in result.stderr
    assert result.exit_code in (0, 1), result.stderr
    data = json.loads(result.stdout)
    assert [entry["name"] for entry in data["unexpected"]] == ["w"] and called == []


def test_a_local_dir_download_is_said_from_inside_the_pipeline_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `cd pipe/unet && weightdoctor inspect .`: Path(".") has no parents, so pipe/.cache/huggingface/download/unet/
    # was not looked for ("folder holds no weight file" alone), though `inspect pipe/unet` found it.
    from huggingface_hub._local_folder import get_local_download_paths

    pipe = tmp_path / "pipe"
    (pipe / "unet").mkdir(parents=True)
    (pipe / "unet" / "config.json").write_text("{}")
    get_local_download_paths(pipe, "unet/diffusion_pytorch_model.safetensors").incomplete_path("b" * 64).write_bytes(
        b"partial")
    monkeypatch.chdir(pipe / "unet")
    result = run_cli("inspect", ".")
    assert result.exit_code == 2
    line = _one_line(result.stderr)
    assert line.startswith("error: .: folder holds no weight file")
    assert "`hf download --local-dir` left 1 unfinished download for it" in line


@pytest.mark.parametrize("name", ["datasets/x/y", "model/a/b", "runs/exp@2", "spaces/a/b", "hf:/org/m"])
def test_an_existing_local_path_wins_over_every_hub_reading(
        cache: Path, monkeypatch: pytest.MonkeyPatch, name: str, no_fetch: list[str]) -> None:
    # Checked fine: each of these, as a local folder, is read as the folder, though the Hub reading's repo is
    # cached too (a dataset x/y, models a/b and runs/exp at revision 2).
    write_snapshot(cache, "a/b", commit_of("ab"), {"model.safetensors": save({"hub": torch.zeros(2)})})
    write_snapshot(cache, "runs/exp", commit_of("re"), {"model.safetensors": save({"hub": torch.zeros(2)})},
                   refs=("main", "2"))
    write_snapshot(cache, "x/y", commit_of("xy"), {"model.safetensors": save({"hub": torch.zeros(2)})})
    repo_storage(cache, "x/y").rename(cache / "datasets--x--y")
    called = no_fetch
    Path(name).mkdir(parents=True)
    (Path(name) / "model.safetensors").write_bytes(save({"local": torch.zeros(4)}))
    source = "hf://org/m" if name == "hf:/org/m" else name
    for given in (source, f"{name}/model.safetensors"):
        result = run_cli("inspect", given, "--json")
        assert result.exit_code == 0, result.stderr
        data = json.loads(result.stdout)
        assert [t["name"] for t in data["tensors"]] == ["local"]
        assert (data["repo_id"], data["revision"], data["commit"]) == (None, None, None)
    assert called == []


def test_a_local_safetensors_imports_no_huggingface_hub(tmp_path: Path) -> None:
    # Checked fine: the Hub readings are tried only for a path that does not exist.
    for name in ("ckpt@best.safetensors", "model.safetensors"):
        (tmp_path / name).write_bytes(save({"w": torch.zeros(2)}))
    code = ("import sys; from weightdoctor.cli import app; from typer.testing import CliRunner; "
            "r = [CliRunner().invoke(app, ['inspect', n, '--json']).exit_code for n in sys.argv[1:]]; "
            "print(r, sorted(m for m in sys.modules if m.startswith('huggingface_hub')))")
    done = subprocess.run([sys.executable, "-c", code, "ckpt@best.safetensors", "model.safetensors"], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                          timeout=120)
    assert done.stdout.strip() == "[0, 0] []", done.stderr


def test_a_missing_path_inside_an_existing_local_at_folder_stays_local(
        cache: Path, monkeypatch: pytest.MonkeyPatch, no_fetch: list[str]) -> None:
    # `runs/exp@2/fnal` (a typo inside the local folder runs/exp@2) was read as folder `fnal` of Hub repo runs/exp
    # at revision 2 whenever the Hub could be reached (or runs/exp was cached): online, a repo listing was asked for.
    from weightdoctor.checkpoint import hub

    final = Path("runs/exp@2/final")
    final.mkdir(parents=True)
    (final / "model.safetensors").write_bytes(save({"local": torch.zeros(2)}))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_unreachable", lambda timeout=5.0: None)
    called = no_fetch
    result = run_cli("inspect", "runs/exp@2/fnal")
    assert result.exit_code == 2
    assert _one_line(result.stderr) == ("error: runs/exp@2/fnal: no such file or directory; did you mean "
                                        "runs/exp@2/final?")
    assert called == []
    # The local folder and its files are read as ever.
    data = json.loads(run_cli("inspect", "runs/exp@2/final", "--json").stdout)
    assert [t["name"] for t in data["tensors"]] == ["local"] and data["repo_id"] is None


def test_a_dataset_reads_at_the_short_commit_its_error_lists(cache: Path, no_fetch: list[str]) -> None:
    # "revision 'b28b7af' of the dataset repo org/d is not in the Hugging Face cache ...; its cached snapshots:
    # <10 hex>, ...": the short commits listed were refused when given back (a model's are read).
    import shutil

    shutil.copytree(repo_storage(cache, "org/m"), cache / "datasets--org--d", symlinks=True)
    result = run_cli("inspect", "datasets/org/d", "--revision", "nope")
    listed = _one_line(result.stderr).partition("its cached snapshots: ")[2].replace(",", "").split()[:2]
    assert result.exit_code == 2 and sorted(listed) == sorted([MAIN[:10], V1[:10]])
    for source, revision in (("datasets/org/d", V1[:10]), (f"hf://datasets/org/d@{MAIN[:7]}", None)):
        result = run_cli("inspect", source, *(["--revision", revision] if revision else []), "--json")
        assert result.exit_code == 0, result.stderr
        data = json.loads(result.stdout)
        assert data["commit"] == (V1 if revision else MAIN) and data["repo_id"] == "datasets/org/d"
        assert data["revision"] == (revision or MAIN[:7])
    assert no_fetch == []
