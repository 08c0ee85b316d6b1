"""Repo ids that are not cached, with the Hub simulated (there is no network here).

huggingface_hub's network calls are replaced by fakes that serve the fixture files, so these tests
check what weightdoctor asks for: headers only for structure, one weight format for the rest.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub.utils._safetensors import SafetensorsFileMetadata, SafetensorsRepoMetadata
from huggingface_hub.utils._safetensors import TensorInfo as HubTensorInfo

from tests.helpers import REPO_ROOT, run_json
from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.checkpoint.safetensors_format import read_header
from weightdoctor.dtypes import CANONICAL_TO_SAFETENSORS
from weightdoctor.errors import SourceNotFound


class FakeHub:
    """Serves one repo from a local folder and records what was requested."""

    def __init__(self, folder: Path, download_dir: Path) -> None:
        self.folder = folder
        self.download_dir = download_dir
        self.downloads: list[str] = []
        self.snapshot_patterns: list[Any] = []

    def list_repo_files(self, repo_id: str, revision: str | None = None, **_: Any) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir())

    def get_safetensors_metadata(self, repo_id: str, revision: str | None = None, **_: Any) -> SafetensorsRepoMetadata:
        files = {}
        weight_map = {}
        for path in sorted(self.folder.glob("*.safetensors")):
            header = read_header(path, path.name)
            tensors = {
                t.name: HubTensorInfo(CANONICAL_TO_SAFETENSORS[t.dtype], list(t.shape), t.data_offsets)
                for t in header.tensors
            }
            files[path.name] = SafetensorsFileMetadata(metadata=header.metadata or {}, tensors=tensors)
            weight_map.update({name: path.name for name in tensors})
        return SafetensorsRepoMetadata(
            metadata=None, sharded=len(files) > 1, weight_map=weight_map, files_metadata=files
        )

    def get_paths_info(self, repo_id: str, paths: list[str], revision: str | None = None, **_: Any) -> list[Any]:
        return [type("Info", (), {"path": p, "size": (self.folder / p).stat().st_size})() for p in paths]

    def hf_hub_download(self, repo_id: str, filename: str, revision: str | None = None, **_: Any) -> str:
        self.downloads.append(filename)
        target = self.download_dir / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.folder / filename, target)
        return str(target)

    def snapshot_download(
        self,
        repo_id: str,
        revision: str | None = None,
        local_files_only: bool = False,
        allow_patterns: Any = None,
        **_: Any,
    ) -> str:
        if local_files_only:
            from huggingface_hub.errors import LocalEntryNotFoundError

            raise LocalEntryNotFoundError("not cached")
        self.snapshot_patterns.append(allow_patterns)
        target = self.download_dir / "snapshot"
        shutil.copytree(self.folder, target, dirs_exist_ok=True)
        return str(target)


@pytest.fixture
def fake_hub(fx: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    hub = FakeHub(fx["bert-sharded"], tmp_path / "downloads")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub

    for name in ("list_repo_files", "get_safetensors_metadata", "get_paths_info"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, lambda self, *a, _n=name, **k: getattr(hub, _n)(*a, **k))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    monkeypatch.setattr("weightdoctor.checkpoint.hub.hub_unreachable", lambda: None)  # the fake Hub is "up"
    return hub


def test_structure_from_remote_headers_downloads_no_weights(fake_hub: FakeHub) -> None:
    ckpt = open_checkpoint("someone/tiny-bert", structure_only=True)
    assert ckpt.num_params == 20077 and ckpt.sharded and ckpt.config["model_type"] == "bert"
    assert fake_hub.downloads == ["config.json"]
    assert "headers read remotely" in ckpt.location
    # Values are fetched file by file when asked for, and match the original.
    value = ckpt.load_tensor("classifier.weight")
    original = open_checkpoint(fake_hub.folder).load_tensor("classifier.weight")
    assert torch.equal(value, original)
    assert len([d for d in fake_hub.downloads if d.endswith(".safetensors")]) == 1


def test_inspect_cli_uses_remote_headers(fake_hub: FakeHub) -> None:
    code, data = run_json("inspect", "someone/tiny-bert")
    assert code == 0 and data["num_params"] == 20077
    assert data["resolved_path"].startswith("https://huggingface.co/someone/tiny-bert")
    assert not any(d.endswith(".safetensors") for d in fake_hub.downloads)


def test_values_needed_fetch_one_weight_format(fake_hub: FakeHub) -> None:
    ckpt = open_checkpoint("someone/tiny-bert")
    assert ckpt.num_params == 20077
    # The files the reader reads, by name: the index, then the shards it names; no .bin, no variant.
    first, shards = fake_hub.snapshot_patterns
    assert "model.safetensors.index.json" in first and "config.json" in first
    assert not [f for f in first + shards if f.endswith(".bin")]
    assert shards == sorted(p.name for p in fake_hub.folder.glob("model-*.safetensors"))


def test_offline_and_uncached_is_a_clear_error(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceNotFound, match="HF_HUB_OFFLINE"):
        open_checkpoint("someone/tiny-bert", structure_only=True)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_hub_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from weightdoctor.checkpoint import hub

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hub, "_unreachable", {})
    port = _closed_port()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    why = hub.hub_unreachable()
    assert why is not None and why.startswith(f"cannot connect to 127.0.0.1:{port}: ") and "refused" in why
    with socket.socket() as server:  # a listening endpoint is reachable
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub.hub_unreachable() is None
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    assert hub.hub_unreachable() == why  # decided once per endpoint and process
    monkeypatch.setattr(hub, "_unreachable", {})
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")  # behind a proxy the probe cannot tell
    assert hub.hub_unreachable() is None


def test_an_unreachable_hub_fails_fast_in_one_line(tmp_path: Path) -> None:
    """No network: a name that is not a local path (a typo, an uncached repo) ends at once, without retries."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "HF_HUB_CACHE": str(tmp_path / "cache"),
           "HF_HOME": str(tmp_path / "home"), "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}
    for args in (["inspect", "no-such/checkpoint-dir"], ["diff-keys", "no-such-folder", "other-folder", "--json"]):
        start = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "weightdoctor", *args], capture_output=True, text=True,
                                cwd=tmp_path, env=env, timeout=120)
        assert time.monotonic() - start < 15  # huggingface_hub alone would retry for ~23 s
        assert result.returncode == 2 and result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1 and "Retrying" not in result.stderr, result.stderr
        assert "the Hub is unreachable (cannot connect to 127.0.0.1:" in result.stderr
        assert f"{args[1]!r} is not a local path" in result.stderr


class CachingFakeHub:
    """A Hub serving one repo (a folder, subfolders included) into a real cache layout: `snapshot_download`
    copies only what `allow_patterns` names, and `local_files_only` sees what is already there."""

    sha = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, folder: Path, cache: Path) -> None:
        self.folder, self.cache = folder, cache
        self.fetched: list[str] = []

    def files(self) -> list[str]:
        return sorted(p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*") if p.is_file())

    def snapshot_dir(self, repo_id: str) -> Path:
        return self.cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / self.sha

    def snapshot_download(self, repo_id: str, revision: str | None = None, local_files_only: bool = False,
                          allow_patterns: Any = None, **_: Any) -> str:
        import fnmatch

        target = self.snapshot_dir(repo_id)
        if local_files_only:
            if not target.is_dir():
                from huggingface_hub.errors import LocalEntryNotFoundError

                raise LocalEntryNotFoundError("not cached")
            return str(target)
        for name in self.files():
            if allow_patterns is None or any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                if not (target / name).exists():
                    shutil.copyfile(self.folder / name, target / name)
                    self.fetched.append(name)
        (target.parent.parent / "refs").mkdir(parents=True, exist_ok=True)
        (target.parent.parent / "refs" / "main").write_text(self.sha)
        return str(target)

    def hf_hub_download(self, repo_id: str, filename: str, revision: str | None = None, **_: Any) -> str:
        return str(Path(self.snapshot_download(repo_id, allow_patterns=[filename])) / filename)


def _serve(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CachingFakeHub:
    hub = CachingFakeHub(repo, tmp_path / "cache")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub.cache))
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, *a, **k: hub.files())
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    monkeypatch.setattr("weightdoctor.checkpoint.hub.hub_unreachable", lambda: None)
    return hub


@pytest.fixture
def caching_hub(fx: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CachingFakeHub:
    """A repo with a sharded model at its top, a variant, an ONNX export and a pipeline-like `unet/` folder."""
    repo = tmp_path / "repo"
    shutil.copytree(fx["bert-sharded"], repo)
    shutil.copy(fx["bert"] / "model.safetensors", repo / "model.fp16.safetensors")  # a variant (not asked for)
    (repo / "onnx").mkdir()
    (repo / "onnx" / "model.onnx").write_bytes(b"onnx")
    shutil.copytree(fx["bert"], repo / "unet")
    return _serve(repo, tmp_path, monkeypatch)


def test_a_snapshot_fetched_for_its_config_is_completed_when_weights_are_needed(caching_hub: CachingFakeHub) -> None:
    """plan-devices fetches the config alone (no index whose shards are absent); check-dtype then needs the
    weights and fetches exactly the index's shards, never the variant, the ONNX export or another folder."""
    code, data = run_json("plan-devices", "someone/tiny-bert", "--gpu", "1GB")
    assert code == 0, data
    assert caching_hub.fetched == ["config.json"]
    code, data = run_json("check-dtype", "someone/tiny-bert")
    assert code in (0, 1) and data["targets"], data
    shards = sorted(p.name for p in caching_hub.folder.glob("model-*.safetensors"))
    assert {f for f in caching_hub.fetched if f.endswith(".safetensors")} == set(shards)
    assert "model.safetensors.index.json" in caching_hub.fetched
    # Another folder of the same repo, asked for later, is fetched then (and only it).
    code, data = run_json("check-dtype", "someone/tiny-bert/unet")
    assert code in (0, 1), data
    assert {f for f in caching_hub.fetched if f.startswith("unet/") and f.endswith(".safetensors")} == {
        "unet/model.safetensors"}
    assert not [f for f in caching_hub.fetched if "fp16" in f or f.startswith("onnx/")]


def test_diff_keys_reads_an_uncached_repo_from_its_remote_headers(fake_hub: FakeHub, fx: dict[str, Path]) -> None:
    """diff-keys reads headers only: an uncached repo id costs its config and headers, no weight file."""
    code, data = run_json("diff-keys", "someone/tiny-bert", str(fx["bert"]))
    assert code == 0 and data["matched"] == data["total_b"], data
    assert not [d for d in fake_hub.downloads if d.endswith((".safetensors", ".bin"))]
    assert fake_hub.snapshot_patterns == []


def test_hub_layouts_fetch_what_the_reader_reads_and_trust_a_readable_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An index whose shards lie in a folder; a cached snapshot that reads (model.safetensors beside a stray
    .bin index, or a .ckpt) is used as it is, even when listing the repo fails (a gated repo, a rate limit);
    --config org/name/folder completes a snapshot that holds another folder only."""
    import huggingface_hub
    from safetensors.torch import save_file

    repo = tmp_path / "repo"
    (repo / "weights").mkdir(parents=True)
    (repo / "config.json").write_text('{"model_type": "bert"}')
    for i in (1, 2):
        save_file({f"layer.{i}.weight": torch.zeros(4, 4)}, repo / "weights" / f"model-0000{i}-of-00002.safetensors")
    (repo / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 128}, "weight_map": {
        f"layer.{i}.weight": f"weights/model-0000{i}-of-00002.safetensors" for i in (1, 2)}}))
    hub = _serve(repo, tmp_path, monkeypatch)
    assert len(open_checkpoint("someone/sub-index").tensors) == 2
    assert sorted(f for f in hub.fetched if f.endswith(".safetensors")) == [
        "weights/model-00001-of-00002.safetensors", "weights/model-00002-of-00002.safetensors"]

    def no_listing(*_: Any, **__: Any) -> list[str]:
        raise OSError("401 Client Error: gated repo")

    for name, files in (("stray-index", {"model.safetensors": "st", "pytorch_model.bin.index.json": "{}"}),
                        ("lightning", {"last.ckpt": "ckpt"})):
        monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, *a, **k: hub.files())
        snapshot = hub.snapshot_dir(f"someone/{name}")
        snapshot.mkdir(parents=True)
        for filename, kind in files.items():
            if kind == "st":
                save_file({"w": torch.zeros(2)}, snapshot / filename)
            elif kind == "ckpt":
                torch.save({"state_dict": {"w": torch.zeros(2)}}, snapshot / filename)
            else:
                (snapshot / filename).write_text(kind)
        (snapshot.parent.parent / "refs").mkdir()
        (snapshot.parent.parent / "refs" / "main").write_text(hub.sha)
        monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", no_listing)
        assert [t.name for t in open_checkpoint(f"someone/{name}").tensors] == ["w"], name

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, *a, **k: hub.files())
    from weightdoctor.load_simulation import load_config

    (repo / "unet").mkdir()
    (repo / "unet" / "config.json").write_text('{"model_type": "unet"}')
    (repo / "text_encoder").mkdir()
    (repo / "text_encoder" / "config.json").write_text('{"model_type": "bert"}')
    assert load_config("someone/sub-index/text_encoder", open_checkpoint("someone/sub-index")) == {
        "model_type": "bert"}


def test_single_letter_units_and_a_missing_folder_with_a_slash_are_said() -> None:
    from weightdoctor.errors import UsageError
    from weightdoctor.units import parse_size

    with pytest.raises(UsageError, match=r"'24G' is ambiguous: write 24GB .* or 24GiB"):
        parse_size("24G")
    from tests.helpers import run_cli

    result = run_cli("inspect", "no-such-folder/")
    assert result.exit_code == 2 and "no such file or directory" in result.stderr
