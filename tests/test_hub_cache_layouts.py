"""Repo ids read from Hub cache layouts written as huggingface_hub writes them (found by scripts/hub_cache_sweep.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from fixtures.hub_cache import commit_of, write_snapshot
from tests.helpers import run_cli

REPO_ROOT = Path(__file__).resolve().parent.parent


def _sharded_files() -> dict[str, bytes]:
    index = {"metadata": {"total_size": 32},
             "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    return {"config.json": b'{"model_type": "bert"}',
            "model.safetensors.index.json": json.dumps(index).encode(),
            "model-00001-of-00002.safetensors": save({"a": torch.zeros(4)}),
            "model-00002-of-00002.safetensors": save({"b": torch.zeros(4)})}


@pytest.mark.parametrize("revision", [None, "main"])
def test_a_shard_never_downloaded_is_named_with_the_repo_and_revision(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, revision: str | None) -> None:
    # `hf download --include "model-00001*"`, or a download stopped between shards: the snapshot holds the index
    # and one shard. The error named only the index's path deep in the cache, not the repo id or revision typed.
    files = _sharded_files()
    del files["model-00002-of-00002.safetensors"]
    write_snapshot(tmp_path, "org/gap", commit_of("gap"), files)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    result = run_cli("inspect", "org/gap", "--json", *(["--revision", revision] if revision else []))
    assert result.exit_code == 2 and result.stdout == ""
    line = " ".join(result.stderr.split())  # the console wraps long lines at its width
    assert line.startswith("error: org/gap")
    assert "model-00002-of-00002.safetensors" in line and "named by the index does not exist" in line
    assert (f"revision {revision!r}" in line) == (revision is not None)
    assert "hf download org/gap" in line


def test_hf_hub_cache_with_a_variable_in_it_is_expanded_as_huggingface_hub_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # huggingface_hub runs HF_HOME / HF_HUB_CACHE through expandvars and expanduser (a `$SCRATCH/hf` left
    # unexpanded by a Dockerfile ENV or a systemd unit); weightdoctor looked for a folder named `$SWEEP/hub`.
    write_snapshot(tmp_path / "hub", "org/one", commit_of("one"), {"model.safetensors": save({"a": torch.zeros(2)})})
    monkeypatch.setenv("SWEEP", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", "$SWEEP")
    result = run_cli("inspect", "org/one", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["resolved_path"].startswith(str(tmp_path / "hub" / "models--org--one"))


def test_transformers_offline_is_offline_as_for_huggingface_hub(tmp_path: Path) -> None:
    # huggingface_hub is offline when HF_HUB_OFFLINE or else TRANSFORMERS_OFFLINE says so; weightdoctor read
    # only the first and so opened a connection to the Hub (and blamed the network) on a machine told to stay off.
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env |= {"HF_HUB_CACHE": str(tmp_path), "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT),
            "HF_ENDPOINT": "http://127.0.0.1:9"}  # were it contacted, the error would say it cannot connect
    done = subprocess.run([sys.executable, "-m", "weightdoctor", "inspect", "org/absent"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert "TRANSFORMERS_OFFLINE is set" in done.stderr and "connect" not in done.stderr


def test_plan_devices_on_a_pipeline_folder_without_a_model_names_it_as_typed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A diffusers pipeline's `vae/` holds a config with no model_type and (here) no weights: the error named the
    # snapshot's folder deep in the cache instead of `org/pipe/vae`.
    write_snapshot(tmp_path, "org/pipe", commit_of("pipe"), {
        "model_index.json": b"{}", "unet/diffusion_pytorch_model.safetensors": save({"a": torch.zeros(2)}),
        "vae/config.json": b'{"_class_name": "AutoencoderKL"}'})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    result = run_cli("plan-devices", "org/pipe/vae", "--gpu", "1GB")
    assert result.exit_code == 2
    line = " ".join(result.stderr.split())
    assert line.startswith("error: org/pipe/vae: nothing to plan") and "models--" not in line


def test_plan_devices_on_a_shard_never_downloaded_names_the_repo(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # plan-devices opens a repo's snapshot folder as a path (a config alone is enough for it): the missing
    # shard was said of the index's path in the cache, with neither the repo id nor the revision typed.
    files = _sharded_files()
    del files["model-00002-of-00002.safetensors"]
    write_snapshot(tmp_path, "org/gap", commit_of("gap"), files)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    result = run_cli("plan-devices", "org/gap", "--gpu", "1GB", "--revision", "main")
    assert result.exit_code == 2
    line = " ".join(result.stderr.split())
    assert line.startswith("error: org/gap: model.safetensors.index.json: shard 'model-00002-of-00002.safetensors'")
    assert "revision 'main'" in line and "hf download org/gap --revision main" in line


def test_a_snapshot_link_to_a_deleted_blob_names_the_repo_and_a_cut_download(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The blob under model.safetensors was deleted, and its download again was cut short: huggingface_hub >= 1.x
    # names the partial file `<etag>.<8 hex>.incomplete`. The error named the link's path deep in the cache
    # (not the repo id) and, looking for `<etag>.incomplete` only, called the file never downloaded.
    snapshot = write_snapshot(tmp_path, "org/dangle", commit_of("dangle"),
                              {"model.safetensors": save({"a": torch.zeros(2)}), "pytorch_model.bin": b"unused"})
    blob = (snapshot / "model.safetensors").resolve()
    blob.unlink()
    blob.with_name(f"{blob.name}.1a2b3c4d.incomplete").write_bytes(b"partial")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    result = run_cli("inspect", "org/dangle")
    assert result.exit_code == 2
    line = " ".join(result.stderr.split())
    assert line.startswith("error: org/dangle: model.safetensors: is a link to") and "did not finish" in line


def test_a_pipeline_folder_without_weights_suggests_no_sibling_folder_as_a_revision(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `org/pipe/vae` without weights: the "other cached revisions hold weights" hint took the snapshot's other
    # folders (unet/, text_encoder/) for snapshots and advised `--revision text_encoder`, which names no revision.
    weights = save({"a": torch.zeros(2)})
    write_snapshot(tmp_path, "org/pipe", commit_of("pipe-old"), {"vae/diffusion_pytorch_model.safetensors": weights},
                   refs=("v1",))
    write_snapshot(tmp_path, "org/pipe", commit_of("pipe"), {
        "unet/diffusion_pytorch_model.safetensors": weights, "text_encoder/model.safetensors": weights,
        "vae/config.json": b"{}"})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    result = run_cli("inspect", "org/pipe/vae")
    assert result.exit_code == 2
    line = " ".join(result.stderr.split())
    assert "--revision text_encoder" not in line and "--revision unet" not in line
    # The older snapshot whose vae/ holds weights is the revision to suggest.
    assert "other cached revisions hold weights" in line and "--revision v1" in line


def test_a_download_cut_short_is_said_when_the_snapshot_has_no_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `hf download` interrupted in model.safetensors: huggingface_hub links a file into the snapshot only once
    # its blob is whole, so the snapshot holds config.json alone and blobs/ a `<etag>.<8 hex>.incomplete`. The
    # error said only "folder holds no weight file".
    write_snapshot(tmp_path, "org/cut1", commit_of("cut1"), {"config.json": b"{}"},
                   incomplete={"model.safetensors": b"partial"})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    result = run_cli("inspect", "org/cut1", "--revision", "main")
    assert result.exit_code == 2
    line = " ".join(result.stderr.split())
    assert line.startswith("error: org/cut1: folder holds no weight file")
    assert "1 unfinished download (blobs/*.incomplete)" in line and "hf download org/cut1 --revision main" in line


def test_a_repo_id_cached_under_another_case_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The Hub matches repo ids in any case, the cache does not (models--Org--Tiny-Model is not org/tiny-model):
    # offline, huggingface_hub and weightdoctor both fail; the error now names the spelling that is cached.
    write_snapshot(tmp_path, "Org/Tiny-Model", commit_of("case"), {"model.safetensors": save({"a": torch.zeros(2)})})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    result = run_cli("inspect", "org/tiny-model")
    assert result.exit_code == 2
    line = " ".join(result.stderr.split())
    assert "'org/tiny-model' is not a local path" in line and "the cache holds 'Org/Tiny-Model'" in line


def test_inspect_json_names_the_commit_a_revision_resolved_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`commit`: the snapshot read, the answer to "which weights did this run see?" when `main` moves; for a repo id,
    its cache folder and a subfolder of a pipeline, and null for a plain local folder (even one named `snapshots`)."""
    weights = {"model.safetensors": save({"a": torch.zeros(2)}), "unet/model.safetensors": save({"b": torch.zeros(2)})}
    old, new = commit_of("old"), commit_of("new")
    write_snapshot(tmp_path, "org/moving", old, weights, refs=("v1",))
    write_snapshot(tmp_path, "org/moving", new, weights, refs=("main",))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    for args, commit in ((["org/moving"], new), (["org/moving", "--revision", "v1"], old),
                         (["org/moving/unet"], new), ([str(tmp_path / "models--org--moving"), "--revision", "v1"], old),
                         ([str(tmp_path / "models--org--moving" / "snapshots" / old)], old)):
        result = run_cli("inspect", *args, "--json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["commit"] == commit, args
    plain = tmp_path / "work" / "snapshots" / commit_of("plain")
    plain.mkdir(parents=True)
    (plain / "model.safetensors").write_bytes(weights["model.safetensors"])
    result = run_cli("inspect", str(plain), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["commit"] is None


def test_a_snapshot_link_that_leads_back_to_itself_is_called_a_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A blob link turned into a link to itself (a damaged cache): it was said not to exist, "deleted or never
    downloaded"; it exists as a loop of links."""
    snapshot = write_snapshot(tmp_path, "org/loop", commit_of("loop"),
                              {"model.safetensors": save({"a": torch.zeros(2)})})
    blob = (snapshot / "model.safetensors").resolve()
    blob.unlink()
    os.symlink(blob.name, blob)  # the blob now names itself
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    result = run_cli("inspect", "org/loop")
    assert result.exit_code == 2
    line = " ".join(result.stderr.split())
    assert line.startswith("error: org/loop: model.safetensors: is a link to"), line
    assert "leads back to itself (a loop of links)" in line and "does not exist" not in line


@pytest.mark.parametrize(("variable", "make", "said"), [
    ("HF_HUB_CACHE", None, "that cache folder does not exist (HF_HUB_CACHE names it)"),
    ("HF_HOME", None, "that cache folder does not exist (HF_HOME names it)"),
    ("HF_HUB_CACHE", "file", "that cache path is a file, not a folder (HF_HUB_CACHE names it)"),
])
def test_a_cache_folder_that_is_missing_or_a_file_is_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, make: str | None, said: str) -> None:
    # A mistyped HF_HOME read as "not in the cache" alone: users looked for a download that had happened, elsewhere.
    place = tmp_path / "hf-cache"
    if make == "file":
        place.write_text("not a folder")
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, str(place))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", "org/tiny-model")
    assert result.exit_code == 2 and result.stdout == ""
    line = " ".join(result.stderr.split())
    cache = place / "hub" if variable == "HF_HOME" else place
    assert f"is not in the Hugging Face cache at {cache} (HF_HUB_OFFLINE is set); {said}" in line, line


def test_a_cache_folder_that_is_there_adds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", "org/tiny-model")
    assert result.exit_code == 2
    assert " ".join(result.stderr.split()).endswith(
        f"cache at {tmp_path} (HF_HUB_OFFLINE is set); download it with `hf download org/tiny-model` (with "
        "HF_HUB_OFFLINE unset)"), result.stderr
