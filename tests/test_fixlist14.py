"""fixlist14: known gaps in Hub addresses and the cache, each checked against huggingface_hub's own answer
(parse_hf_uri, snapshot_download(local_files_only=True), its constants, the installed `hf download --help`) on a
Hub cache built in tmp_path as huggingface_hub writes it; no network (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from fixtures.hub_cache import commit_of, repo_storage, write_snapshot
from tests.helpers import restore_rebound_fakes, run_cli, run_json

MAIN, V1 = commit_of("fixlist14-main"), commit_of("fixlist14-v1")
CONFIG = json.dumps({"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 8,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
                     "vocab_size": 32, "max_position_embeddings": 16}).encode()
# A safetensors header length of 8, then bytes that are no JSON.
BAD_SAFETENSORS = b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage"


def _one_line(text: str) -> str:
    return " ".join(text.split())  # the console wraps long lines at its width


def _write_cache(folder: Path) -> Path:
    """org/m in a Hub cache at `folder`: main holds weights, config, a broken safetensors and a sub/ model folder;
    v1 holds other weights. Returns main's snapshot."""
    snapshot = write_snapshot(folder, "org/m", MAIN, {
        "model.safetensors": save({"w": torch.zeros(2)}), "config.json": CONFIG, "bad.safetensors": BAD_SAFETENSORS,
        "sub/model.safetensors": save({"s": torch.zeros(2)}), "sub/config.json": CONFIG})
    write_snapshot(folder, "org/m", V1, {"model.safetensors": save({"old": torch.zeros(2)})}, refs=("v1",))
    return snapshot


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "hub"
    _write_cache(folder)
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return folder


def _hf_download_help() -> str:
    """The installed `hf download --help`, the oracle for the commands the errors give."""
    hf = Path(sys.executable).with_name("hf")
    if not hf.exists():
        pytest.skip("no hf executable beside this Python")
    done = subprocess.run([str(hf), "download", "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


# 1. A web link's query string in an hf:// address.

@pytest.mark.parametrize(("source", "part", "meant"), [
    ("hf://org/m@v1?download=true", "the revision", "hf://org/m@v1"),
    ("org/m@v1?download=true", "the revision", "org/m@v1"),
    ("hf://org/m/model.safetensors?download=true", "the file name", "hf://org/m/model.safetensors"),
    ("hf://org/m@v1/sub/model.safetensors?download=true&x=1", "the file name", "hf://org/m@v1/sub/model.safetensors"),
    ("hf://org/m@v1?download=true/sub", "the revision", "hf://org/m@v1/sub"),
])
def test_a_query_string_in_an_hf_address_is_refused_with_the_address_to_give(
        cache: Path, source: str, part: str, meant: str) -> None:
    # parse_hf_uri keeps `?download=true` in an hf:// URI's revision (no git ref can hold '?'): the revision
    # 'v1?download=true' was said not to be cached, and a file's `model.safetensors?download=true` was "no such
    # file or directory", named without its scheme.
    from huggingface_hub.utils import parse_hf_uri

    parsed = parse_hf_uri(source if source.startswith("hf://") else f"hf://{source}")
    assert "?download=true" in f"{parsed.revision} {parsed.path_in_repo}"
    result = run_cli("inspect", source)
    assert result.exit_code == 2 and result.stdout == ""
    query = source[source.index("?"):].partition("/")[0]
    assert _one_line(result.stderr) == (f"error: {source}: {query!r} is a web address's query string, not part of "
                                        f"{part}: give {meant}")


def test_a_web_address_with_a_query_string_reads_the_file_as_huggingface_hub_parses_it(cache: Path) -> None:
    from huggingface_hub.utils import parse_hf_uri

    source = "https://huggingface.co/org/m/resolve/v1/model.safetensors?download=true"
    assert parse_hf_uri(source).revision == "v1" and parse_hf_uri(source).path_in_repo == "model.safetensors"
    code, data = run_json("inspect", source)
    assert code == 0 and [t["name"] for t in data["tensors"]] == ["old"] and data["commit"] == V1


# 2. An uncached dataset at a revision, written without a scheme.

@pytest.mark.parametrize(("source", "command"), [
    ("datasets/org/d@v1", "hf download org/d --repo-type dataset --revision v1"),
    ("spaces/org/s@v2/ckpt", "hf download org/s --repo-type space --revision v2"),
])
def test_an_uncached_typed_repo_at_a_revision_gets_the_download_that_caches_it(
        cache: Path, source: str, command: str) -> None:
    # `datasets/org/d` got `hf download org/d --repo-type dataset`; `datasets/org/d@v1` only "no such file or
    # directory", though parse_hf_uri reads it as that dataset at v1.
    from huggingface_hub.utils import parse_hf_uri

    parsed = parse_hf_uri(f"hf://{source}")
    assert parsed.type in ("dataset", "space") and parsed.revision in ("v1", "v2")
    result = run_cli("inspect", source)
    assert result.exit_code == 2
    line = _one_line(result.stderr)
    assert line.startswith(f"error: {source}: no such file or directory; read as a Hub address, revision "), line
    assert line.endswith(f"download it with `{command}`"), line
    usage = _hf_download_help()
    assert "--repo-type" in usage and "--revision" in usage


# 3. A file of a repo named by its address: its errors name the address.

@pytest.mark.parametrize(("source", "folder"), [
    ("hf://org/m/config.json", "hf://org/m"),
    ("hf://org/m@main/sub/config.json", "hf://org/m@main/sub"),
    ("https://huggingface.co/org/m/blob/main/sub/config.json", "hf://org/m@main/sub"),
])
def test_a_config_named_by_its_hub_address_is_said_of_that_address(cache: Path, source: str, folder: str) -> None:
    # It was "error: org/m: this is a model config, ...; point at the model folder (<the snapshot's path deep in
    # the cache>, ...)": neither what was typed nor a folder to type.
    result = run_cli("inspect", source)
    assert result.exit_code == 2
    line = _one_line(result.stderr)
    holds = "model.safetensors" if "sub" in folder else "bad.safetensors, model.safetensors"
    assert line.startswith(f"error: {source}: this is a model config, not weights; point at the model folder "
                           f"({folder}, which holds {holds}) (read from the cached file {cache}/"), line


def test_a_broken_file_named_by_its_hub_address_is_said_of_that_address(cache: Path) -> None:
    result = run_cli("inspect", "hf://org/m/bad.safetensors")
    assert result.exit_code == 2
    line = _one_line(result.stderr)
    assert line.startswith("error: hf://org/m/bad.safetensors: header is not valid JSON"), line
    assert line.endswith(f"(read from the cached file {cache}/models--org--m/snapshots/{MAIN}/bad.safetensors)")


# 4. A cached file whose blob is gone.

def test_a_cached_file_whose_blob_is_gone_is_a_broken_entry_with_the_download_that_mends_it(cache: Path) -> None:
    # "org/m's cached snapshot has no model.safetensors": it has (huggingface_hub linked it), its blob is gone.
    from huggingface_hub import try_to_load_from_cache

    pointer = cache / "models--org--m" / "snapshots" / MAIN / "sub" / "model.safetensors"
    blob = pointer.resolve()
    blob.unlink()
    assert pointer.is_symlink() and try_to_load_from_cache("org/m", "sub/model.safetensors", cache_dir=cache) is None
    fix = f"hf download org/m sub/model.safetensors --revision {MAIN} --force-download"
    broken = (f"the Hub cache entry of sub/model.safetensors (repo org/m, commit {MAIN[:10]}) is broken: it links to "
              f"{os.readlink(pointer)}, a blob that is missing (deleted, or the cache damaged)")
    result = run_cli("inspect", "hf://org/m/sub/model.safetensors")
    assert result.exit_code == 2
    assert _one_line(result.stderr) == (f"error: hf://org/m/sub/model.safetensors: {broken}, and the Hub cannot be "
                                        f"reached (HF_HUB_OFFLINE is set): fetch it again with `{fix}`")
    result = run_cli("inspect", str(pointer))  # the snapshot's file by its path
    assert result.exit_code == 2
    assert _one_line(result.stderr) == f"error: {pointer}: {broken}: fetch it again with `{fix}`"
    assert "--force-download" in _hf_download_help()


# 5. An empty cache variable.

@pytest.mark.parametrize(("variable", "inside"), [("HF_HOME", "hub"), ("HF_HUB_CACHE", ".")])
def test_an_empty_cache_variable_is_read_as_huggingface_hub_reads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, inside: str) -> None:
    # Read as unset, the default ~/.cache/huggingface/hub was looked in; huggingface_hub takes "" as a path relative
    # to the current folder, where `hf download` then put the repo and from_pretrained finds it.
    work = tmp_path / "work"
    _write_cache(work / inside)
    for name in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(work)
    oracle = subprocess.run([sys.executable, "-c", "from huggingface_hub import constants; "
                             "print(constants.HF_HUB_CACHE)"], capture_output=True, text=True, check=True,
                            env={**os.environ})
    assert Path(oracle.stdout.strip() or ".") == Path(inside)
    code, data = run_json("inspect", "org/m")
    assert code == 0 and data["commit"] == MAIN and [t["name"] for t in data["tensors"]] == ["w"]
    result = run_cli("inspect", "org/absent")
    assert result.exit_code == 2
    assert f"; {variable} is set but empty, which huggingface_hub reads as a folder relative to the current one" \
        in _one_line(result.stderr)


# 6. `inspect --verify` and torch.hub's download folder.

def _save_hub_named(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    path = folder / "resnet18-0676ba61.pth"  # torch.hub's `<name>-<sha256 prefix>`, which this file's is not
    torch.save({"fc.weight": torch.randn(4, 3)}, path)
    return path


def test_verify_finds_torch_hubs_folder_through_a_link_to_another_disk(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # ~/.cache/torch/hub/checkpoints linked to a big disk: resolved, the file lay outside any hub/checkpoints, so a
    # download whose sha256 does not match its name was a note and exit 0.
    import torch.hub

    store = tmp_path / "big-disk" / "torch-downloads"
    _save_hub_named(store)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    (tmp_path / "torch-home" / "hub").mkdir(parents=True)
    (tmp_path / "torch-home" / "hub" / "checkpoints").symlink_to(store, target_is_directory=True)
    assert Path(torch.hub.get_dir()) == tmp_path / "torch-home" / "hub"
    for source in (tmp_path / "torch-home" / "hub" / "checkpoints" / "resnet18-0676ba61.pth",
                   store / "resnet18-0676ba61.pth"):
        code, data = run_json("inspect", str(source), "--verify")
        assert code == 1, data["verify"]
        [line] = data["verify"]["hash_mismatches"]
        assert line.startswith("resnet18-0676ba61.pth: the name carries sha256 prefix 0676ba61")


def test_verify_finds_torch_hubs_folder_set_by_set_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torch.hub.set_dir("/data/weights") keeps downloads in /data/weights/checkpoints, with no hub/ in the path.
    import torch.hub

    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    torch.hub.set_dir(str(tmp_path / "weights"))
    path = _save_hub_named(Path(torch.hub.get_dir()) / "checkpoints")
    code, data = run_json("inspect", str(path), "--verify")
    assert code == 1 and len(data["verify"]["hash_mismatches"]) == 1, data["verify"]
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "elsewhere"))
    code, data = run_json("inspect", str(path), "--verify")  # no longer torch.hub's folder: a note only
    assert code == 0 and data["verify"]["hash_mismatches"] == [], data["verify"]


# 7. A snapshot folder linked out of snapshots/ (the model case is in tests/hostile/test_redteam11.py).

def test_a_dataset_snapshot_linked_out_of_the_cache_is_read_as_huggingface_hub_reads_it(cache: Path) -> None:
    # It was "refs/main of the dataset repo org/m does not name a snapshot: download it again", of a ref that is fine.
    from huggingface_hub import snapshot_download
    from huggingface_hub.file_download import repo_folder_name

    storage = cache / repo_folder_name(repo_id="org/m", repo_type="dataset")
    repo_storage(cache, "org/m").rename(storage)
    snapshot = storage / "snapshots" / MAIN
    moved = cache.parent / "moved"
    shutil.copytree(snapshot, moved)  # the links to ../../blobs become the files they name
    shutil.rmtree(snapshot)
    snapshot.symlink_to(moved, target_is_directory=True)
    found = snapshot_download("org/m", repo_type="dataset", cache_dir=cache, local_files_only=True)
    assert found == str(snapshot)
    code, data = run_json("inspect", "datasets/org/m")
    assert code == 0 and data["commit"] == MAIN and [t["name"] for t in data["tensors"]] == ["w"]
    assert f"the cached snapshot {MAIN[:10]} is a link out of the cache's snapshots/ folder, to {moved}: read " \
        "there, as huggingface_hub reads it" in data["warnings"]


# 8. plan-devices of a pipeline's folder not cached: its config and headers, not its weights.

def test_plan_devices_of_a_pipeline_folder_reads_its_headers_remotely_not_its_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `org/pipe/unet` went through resolve_repo_id(weights=True), which downloaded the unet's weights (gigabytes)
    # where `org/pipe` reads its config alone; a diffusers config cannot be built by transformers, so the plan needs
    # the tensor names and shapes: the safetensors headers, read with range requests as huggingface_hub reads them.
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError
    from huggingface_hub.utils._safetensors import SafetensorsFileMetadata
    from huggingface_hub.utils._safetensors import TensorInfo as HubTensorInfo

    from weightdoctor.checkpoint.safetensors_format import read_header
    from weightdoctor.dtypes import CANONICAL_TO_SAFETENSORS

    repo = tmp_path / "served"
    (repo / "unet").mkdir(parents=True)
    (repo / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                       "unet": ["diffusers", "UNet2DConditionModel"]}))
    (repo / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", "in_channels": 4}))
    torch.manual_seed(0)
    weights = {"conv_in.weight": torch.randn(8, 4, 3, 3), "conv_in.bias": torch.zeros(8),
               "conv_out.weight": torch.randn(4, 8, 3, 3)}
    (repo / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(save(weights))
    (repo / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(
        save({k: v.half() for k, v in weights.items()}))
    fetched: list[str] = []

    def parse_header(self: object, repo_id: str, filename: str, **_: object) -> SafetensorsFileMetadata:
        header = read_header(repo / filename, filename)
        return SafetensorsFileMetadata(metadata=header.metadata or {}, tensors={
            t.name: HubTensorInfo(CANONICAL_TO_SAFETENSORS[t.dtype], list(t.shape), t.data_offsets)
            for t in header.tensors})

    def download(repo_id: str, filename: str, **_: object) -> str:
        fetched.append(filename)
        target = tmp_path / "downloads" / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / filename, target)
        return str(target)

    def snapshot(repo_id: str, local_files_only: bool = False, allow_patterns: object = None, **_: object) -> str:
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        fetched.append(f"snapshot {allow_patterns}")
        shutil.copytree(repo, tmp_path / "snapshot", dirs_exist_ok=True)
        return str(tmp_path / "snapshot")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, *a, **k: sorted(
        p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()))
    monkeypatch.setattr(huggingface_hub.HfApi, "parse_safetensors_file_metadata", parse_header)
    monkeypatch.setattr(huggingface_hub.HfApi, "get_paths_info", lambda self, repo_id, paths, **k: [
        type("Info", (), {"path": p, "size": (repo / p).stat().st_size})() for p in paths])
    reals = {"hf_hub_download": huggingface_hub.hf_hub_download, "snapshot_download": huggingface_hub.snapshot_download}
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    monkeypatch.setattr("weightdoctor.checkpoint.hub.hub_unreachable", lambda: None)  # the served repo is "up"
    try:
        code, data = run_json("plan-devices", "org/pipe/unet", "--gpu", "1GB")
    finally:
        restore_rebound_fakes({"hf_hub_download": download, "snapshot_download": snapshot}, reals)
    assert fetched == ["unet/config.json"], fetched  # no weights, no variant, no snapshot of the folder
    assert code == 0, data
    assert data["device_map"] == {"": 0}, data["device_map"]  # the whole unet on GPU 0, as accelerate writes it
    assert data["num_params"] == sum(t.numel() for t in weights.values())
