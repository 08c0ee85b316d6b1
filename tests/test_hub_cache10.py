"""Hub sources against huggingface_hub's own answers: `hf download --local-dir` folders, typed repo ids
(`datasets/org/name`, `hf://` URIs, Hub web addresses) and the cache layouts behind them, all built in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from fixtures.hub_cache import commit_of, write_snapshot
from tests.helpers import run_cli


def _one_line(text: str) -> str:
    return " ".join(text.split())  # the console wraps long lines at its width


def test_a_local_dir_download_cut_short_is_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `hf download org/x --local-dir x` moves each file into place once whole; cut short in model.safetensors, the
    # folder holds config.json and .cache/huggingface/download/<hash>.<etag>.incomplete. The error said only
    # "folder holds no weight file", as for a folder that never had weights.
    from huggingface_hub._local_folder import get_local_download_paths, read_download_metadata, write_download_metadata

    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    write_download_metadata(folder, "config.json", commit_of("x"), "etag-of-config")
    get_local_download_paths(folder, "model.safetensors").incomplete_path("a" * 64).write_bytes(b"partial")
    assert read_download_metadata(folder, "model.safetensors") is None  # huggingface_hub: not downloaded
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2 and result.stdout == ""
    line = _one_line(result.stderr)
    assert line.startswith(f"error: {folder}: folder holds no weight file")
    assert "`hf download --local-dir` left 1 unfinished download for it (.cache/huggingface/download/*.incomplete)" \
        in line and "run that download again" in line


def test_a_local_dir_download_cut_in_a_pipeline_folder_or_a_shard_is_said(tmp_path: Path) -> None:
    # A pipeline's unet/ keeps its partial file under the downloaded folder's .cache (download/unet/), and a shard
    # cut short leaves the index naming a file that is not there: neither error mentioned the unfinished download.
    from huggingface_hub._local_folder import get_local_download_paths

    pipe = tmp_path / "pipe"
    (pipe / "unet").mkdir(parents=True)
    (pipe / "unet" / "config.json").write_text("{}")
    get_local_download_paths(pipe, "unet/diffusion_pytorch_model.safetensors").incomplete_path("b" * 64).write_bytes(
        b"partial")
    result = run_cli("inspect", str(pipe / "unet"))
    assert result.exit_code == 2
    line = _one_line(result.stderr)
    assert line.startswith(f"error: {pipe / 'unet'}: folder holds no weight file")
    assert "`hf download --local-dir` left 1 unfinished download for it" in line

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    (sharded / "model-00001-of-00002.safetensors").write_bytes(save({"a": torch.zeros(2)}))
    get_local_download_paths(sharded, "model-00002-of-00002.safetensors").incomplete_path("c" * 64).write_bytes(
        b"partial")
    result = run_cli("inspect", str(sharded))
    assert result.exit_code == 2
    line = _one_line(result.stderr)
    assert "shard 'model-00002-of-00002.safetensors' named by the index does not exist (1 of its 2 shards" in line
    assert "`hf download --local-dir` left 1 unfinished download here (.cache/huggingface/download/*.incomplete)" \
        in line


def test_a_whole_local_dir_download_reads_its_top_and_warns_of_nothing(tmp_path: Path) -> None:
    from huggingface_hub._local_folder import write_download_metadata

    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(save({"a": torch.zeros(2)}))
    write_download_metadata(folder, "model.safetensors", commit_of("x"), "etag")
    result = run_cli("inspect", str(folder), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["warnings"] == [] and data["resolved_path"] == str(folder)


def _weights(label: str) -> bytes:
    return save({label: torch.zeros(2)})


def _cache_dataset(cache: Path, repo_id: str) -> dict[str, str]:
    """A dataset repo cached as `hf download org/data --repo-type dataset` writes it (`datasets--org--data`): the
    layout of a model's, under the dataset's folder name; returns label -> commit."""
    from huggingface_hub.file_download import repo_folder_name

    commits = {"main": commit_of("data-main"), "v1": commit_of("data-v1")}
    write_snapshot(cache, repo_id, commits["v1"], {"model.safetensors": _weights("old")}, refs=("v1",))
    write_snapshot(cache, repo_id, commits["main"], {"model.safetensors": _weights("new"),
                                                     "ckpt/model.safetensors": _weights("inner")})
    storage = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    storage.rename(cache / repo_folder_name(repo_id=repo_id, repo_type="dataset"))  # relative links still hold
    return commits


@pytest.mark.parametrize(("source", "revision", "inside"), [
    ("datasets/org/data", None, ""),
    ("datasets/org/data/", "v1", ""),
    ("datasets/org/data/ckpt", None, "ckpt"),
    ("datasets/org/data@v1", None, ""),
    ("hf://datasets/org/data", None, ""),
    ("hf://datasets/org/data@v1", None, ""),
    ("https://huggingface.co/datasets/org/data/tree/main/ckpt", None, "ckpt"),
])
def test_a_dataset_repo_is_read_from_the_cache_as_huggingface_hub_finds_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, revision: str | None, inside: str) -> None:
    # Checkpoints kept in a dataset repo (`hf download org/data --repo-type dataset`), named as the Hub's addresses
    # name them: `datasets/org/data` was read as folder `data` of a model repo `datasets/org` ("'datasets/org' is
    # not a local path ..."), `hf://` URIs and web addresses as missing local paths.
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import parse_hf_uri

    _cache_dataset(tmp_path, "org/data")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    asked = revision or (parse_hf_uri(source if "://" in source else f"hf://{source}").revision)
    expected = Path(snapshot_download("org/data", repo_type="dataset", revision=asked, cache_dir=tmp_path,
                                      local_files_only=True)) / inside
    result = run_cli("inspect", source, "--json", *(["--revision", revision] if revision else []))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["resolved_path"] == str(expected) and data["commit"] == expected.relative_to(tmp_path).parts[2]
    assert data["warnings"] == []  # no "--revision ignored: a local path"
    assert data["repo_id"] == "datasets/org/data" and data["revision"] == asked


def test_a_dataset_repo_not_cached_says_how_to_download_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cache_dataset(tmp_path, "org/data")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", "datasets/org/data", "--revision", "v9")
    assert result.exit_code == 2 and result.stdout == ""
    line = _one_line(result.stderr)
    assert line.startswith("error: datasets/org/data: revision 'v9' of the dataset repo org/data is not in the "
                           f"Hugging Face cache at {tmp_path}; its cached snapshots: ")
    assert "hf download org/data --repo-type dataset --revision v9" in line
    # The plain repo id names a model, which huggingface_hub does not find either: the dataset is pointed at.
    result = run_cli("inspect", "org/data")
    assert result.exit_code == 2
    assert "the cache holds a dataset repo of that name: give it as datasets/org/data" in _one_line(result.stderr)


@pytest.mark.parametrize(("source", "revision", "inside"), [
    ("hf://org/m@refs/pr/3", "refs/pr/3", ""),
    ("hf://models/org/m@v1.0/unet", "v1.0", "unet"),
    ("hf://org/m@refs/pr/3/unet/diffusion_pytorch_model.safetensors", "refs/pr/3",
     "unet/diffusion_pytorch_model.safetensors"),
    ("https://huggingface.co/org/m", None, ""),
    ("https://huggingface.co/org/m/blob/v1.0/model.safetensors", "v1.0", "model.safetensors"),
    ("https://huggingface.co/org/m/tree/main/unet", "main", "unet"),
    ("org/m@v1.0", "v1.0", ""),  # an hf:// URI without its scheme, as `hf cache` writes a repo at a revision
    ("org/m@refs/pr/3/unet", "refs/pr/3", "unet"),
])
def test_a_model_uri_or_web_address_reads_what_huggingface_hub_resolves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, revision: str | None, inside: str) -> None:
    # `hf download hf://org/m@v1.0` takes these, and a repo's page is what users copy: weightdoctor said
    # "no such file or directory".
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    files = {"model.safetensors": _weights("top"), "unet/diffusion_pytorch_model.safetensors": _weights("unet")}
    write_snapshot(tmp_path, "org/m", commit_of("m-main"), files)
    write_snapshot(tmp_path, "org/m", commit_of("m-v1"), files, refs=("v1.0",))
    write_snapshot(tmp_path, "org/m", commit_of("m-pr3"), files, refs=("refs/pr/3",))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expected = Path(snapshot_download("org/m", revision=revision, cache_dir=tmp_path, local_files_only=True)) / inside
    if inside.endswith(".safetensors"):
        assert try_to_load_from_cache("org/m", inside, cache_dir=tmp_path, revision=revision) == str(expected)
    result = run_cli("inspect", source, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["resolved_path"] == str(expected) and data["repo_id"] == "org/m" and data["revision"] == revision
    assert data["source"] == source  # as typed, not the repo id it was read as
    assert data["warnings"] == []


@pytest.mark.parametrize(("args", "said"), [
    (["hf://org/m@main", "--revision", "v1.0"],
     "hf://org/m@main names revision 'main' and --revision 'v1.0': give one"),
    (["hf://buckets/org/b"], "hf://buckets/org/b names a bucket: weightdoctor reads model, dataset and Space repos"),
    (["hf://kernels/org/k"], "hf://kernels/org/k names a kernel: weightdoctor reads model, dataset and Space repos"),
    # Addresses parse_hf_uri does not parse, of a repo without an org or a commit's page: the repo id to type.
    (["hf://gpt2"], "hf://gpt2: a web address, not a local path: give the repo id instead: gpt2"),
    (["hf://org/m/../../x"], "hf://org/m/../../x: the path in the repo, '../../x', has a '.' or '..' part"),
    (["https://huggingface.co/org/m/commit/abc"], "give the repo id instead: org/m --revision abc"),
])
def test_a_hub_address_that_names_no_repo_to_read_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], said: str) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", *args)
    assert result.exit_code == 2 and result.stdout == ""
    assert said in _one_line(result.stderr) and "Traceback" not in result.stderr


def test_the_ids_hf_cache_ls_prints_read_the_repos_it_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `hf cache ls` lists `model/org/m`, `model/gpt2` and `dataset/org/data` (scan_cache_dir's cache_id), and `hf cache
    # rm` takes them back; given to weightdoctor, `model/org/m` was read as folder `m` of a repo `model/org`.
    from huggingface_hub import scan_cache_dir, snapshot_download

    write_snapshot(tmp_path, "org/m", commit_of("m"), {"model.safetensors": _weights("m")})
    write_snapshot(tmp_path, "gpt2", commit_of("gpt2"), {"model.safetensors": _weights("g"),
                                                         "unet/model.safetensors": _weights("u")})
    _cache_dataset(tmp_path, "org/data")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repos = scan_cache_dir(tmp_path).repos
    assert {repo.cache_id for repo in repos} == {"model/org/m", "model/gpt2", "dataset/org/data"}
    for repo in repos:
        expected = snapshot_download(repo.repo_id, repo_type=repo.repo_type, cache_dir=tmp_path, local_files_only=True)
        result = run_cli("inspect", repo.cache_id, "--json")
        assert result.exit_code == 0, (repo.cache_id, result.stderr)
        data = json.loads(result.stdout)
        assert data["resolved_path"] == expected and data["source"] == repo.cache_id
    result = run_cli("inspect", "model/org/m/", "--json")  # as a shell completes it
    assert result.exit_code == 0 and json.loads(result.stdout)["repo_id"] == "org/m"


def test_a_repo_of_an_org_named_like_a_type_keeps_its_plain_reading(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An org called `model` owns `model/org`: `model/org/unet` is that repo's folder, as before, even with an
    # `org/unet` repo cached too.
    write_snapshot(tmp_path, "model/org", commit_of("owned"), {"unet/model.safetensors": _weights("owned")})
    write_snapshot(tmp_path, "org/unet", commit_of("other"), {"model.safetensors": _weights("other")})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", "model/org/unet", "--json")
    assert result.exit_code == 0, result.stderr
    assert "/models--model--org/snapshots/" in json.loads(result.stdout)["resolved_path"]


def test_a_path_with_an_at_sign_that_is_no_repo_stays_a_missing_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `runs/exp@2` parses as revision 2 of a repo runs/exp: offline and with no such repo cached, it is the
    # mistyped local folder it looks like (the error said "revision '2' of 'runs/exp' is not ... in the cache").
    (tmp_path / "runs" / "exp@1").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for source in ("runs/exp@2", str(tmp_path / "runs@2")):
        result = run_cli("inspect", source)
        assert result.exit_code == 2
        assert _one_line(result.stderr).startswith(f"error: {source}: no such file or directory"), result.stderr
    assert "did you mean runs/exp@1?" in _one_line(run_cli("inspect", "runs/exp@2").stderr)


def test_a_dataset_ref_that_is_a_fifo_is_refused_not_waited_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # huggingface_hub reads a ref whole: a FIFO there would wait forever, as for a model's refs (checked before).
    import os

    _cache_dataset(tmp_path, "org/data")
    ref = tmp_path / "datasets--org--data" / "refs" / "main"
    ref.unlink()
    os.mkfifo(ref)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", "datasets/org/data")
    assert result.exit_code == 2
    line = _one_line(result.stderr)
    assert "the Hub cache's refs/main of org/data is not a regular file" in line
    assert "hf download org/data --repo-type dataset" in line


@pytest.mark.parametrize("config", ["hf://org/bert@v1.0", "org/bert@v1.0",
                                    "https://huggingface.co/org/bert/blob/v1.0/config.json",
                                    "datasets/org/bert-data/v1"])
def test_model_class_config_takes_the_hub_sources_that_source_takes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str) -> None:
    # `--config` read repo ids and `org/pipe/text_encoder`, but `hf://org/bert@v1.0`, a config's page and
    # `datasets/...` were "no such file or directory". v1.0's config has A's one layer, main's two.
    from huggingface_hub.file_download import repo_folder_name
    from transformers import BertConfig, BertModel

    small = {"vocab_size": 40, "hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 16,
             "max_position_embeddings": 8}
    torch.manual_seed(0)
    BertModel(BertConfig(num_hidden_layers=1, **small)).save_pretrained(tmp_path / "a")
    one = (tmp_path / "a" / "config.json").read_bytes()
    two = BertConfig(num_hidden_layers=2, architectures=["BertModel"], **small).to_json_string().encode()
    write_snapshot(tmp_path / "hub", "org/bert", commit_of("v1"), {"config.json": one}, refs=("v1.0",))
    write_snapshot(tmp_path / "hub", "org/bert", commit_of("main"), {"config.json": two})
    write_snapshot(tmp_path / "hub", "org/bert-data", commit_of("data"), {"v1/config.json": one, "config.json": two})
    (tmp_path / "hub" / repo_folder_name(repo_id="org/bert-data", repo_type="model")).rename(
        tmp_path / "hub" / repo_folder_name(repo_id="org/bert-data", repo_type="dataset"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("diff-keys", str(tmp_path / "a"), "--model-class", "BertModel", "--config", config, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["missing"], data["unexpected"], data["matched"]) == ([], [], data["total_a"])
    # The same with main's config: the second layer's weights are missing, so the revision was the one read.
    result = run_cli("diff-keys", str(tmp_path / "a"), "--model-class", "BertModel", "--config", "org/bert", "--json")
    assert result.exit_code == 1
    assert any(".layer.1." in item["name"] for item in json.loads(result.stdout)["missing"])


def test_a_file_named_by_its_address_is_fetched_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `https://huggingface.co/org/m/blob/main/model.fp16.safetensors`, not cached: the folder's fetch took the
    # repo's default weights (model.safetensors, one format, no variant), then said the variant was not there.
    # Now that one file is fetched by name, as `hf download org/m model.fp16.safetensors` fetches it.
    import huggingface_hub

    real_snapshot_download = huggingface_hub.snapshot_download
    fetched: list[tuple[str, str, str | None]] = []

    def hf_hub_download(repo_id: str, filename: str, revision: str | None = None, **_: object) -> str:
        fetched.append((repo_id, filename, revision))
        snapshot = write_snapshot(tmp_path, repo_id, commit_of("remote"), {filename: _weights("fp16")})
        return str(snapshot / filename)

    def snapshot_download(*args: object, local_files_only: bool = False, **kwargs: object) -> str:
        assert local_files_only, "a whole folder was fetched for one file"
        return real_snapshot_download(*args, local_files_only=True, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr("weightdoctor.checkpoint.hub.hub_unreachable", lambda: None)  # the fake Hub is "up"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    result = run_cli("inspect", "https://huggingface.co/org/m/blob/main/model.fp16.safetensors", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert fetched == [("org/m", "model.fp16.safetensors", "main")]
    assert data["resolved_path"].endswith("/model.fp16.safetensors") and data["repo_id"] == "org/m"
    # Offline, a cached snapshot without that file says so, with the download that fetches it.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", "hf://org/m/model.bf16.safetensors")
    assert result.exit_code == 2
    assert _one_line(result.stderr) == (
        "error: hf://org/m/model.bf16.safetensors: org/m's cached snapshot has no model.bf16.safetensors, and the Hub "
        "cannot be reached (HF_HUB_OFFLINE is set): fetch it with `hf download org/m model.bf16.safetensors`")


@pytest.mark.parametrize("source", ["hf://org/m@v1.0", "https://huggingface.co/org/m/tree/v1.0"])
def test_plan_devices_asks_a_hub_address_for_its_config_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    # plan-devices reads a repo id's config only (resolve_repo_id(weights=False)): an `hf://` URI or a repo's page
    # went through the weights reader instead, which fetches the weights of an uncached repo.
    from weightdoctor.checkpoint import hub

    config = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 40, "hidden_size": 8,
              "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
              "max_position_embeddings": 8}
    snapshot = write_snapshot(tmp_path, "org/m", commit_of("m"), {"config.json": json.dumps(config).encode()},
                              refs=("v1.0",))
    asked: list[tuple[str, str | None, bool]] = []

    def resolve_repo_id(repo_id: str, revision: str | None = None, weights: bool = True, **_: object) -> Path:
        asked.append((repo_id, revision, weights))
        return snapshot

    monkeypatch.setattr(hub, "resolve_repo_id", resolve_repo_id)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("plan-devices", source, "--gpu", "1GB", "--json")
    assert result.exit_code == 0, result.stderr
    assert asked == [("org/m", "v1.0", False)]


def test_a_uri_at_a_tag_reads_the_weights_from_pretrained_loads_at_that_tag(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The transformers oracle: `AutoModel.from_pretrained("org/bert", revision="v1.0", local_files_only=True)`
    # loads v1.0's weights (main's differ); `hf://org/bert@v1.0` must be read as those same values.
    from transformers import AutoModel, BertConfig, BertModel

    config = BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=8)
    for seed, label, ref in ((0, "v1", "v1.0"), (1, "main", "main")):
        torch.manual_seed(seed)
        BertModel(config).save_pretrained(tmp_path / label)
        files = {p.name: p.read_bytes() for p in (tmp_path / label).iterdir()}
        write_snapshot(tmp_path / "hub", "org/bert", commit_of(label), files, refs=(ref,))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = AutoModel.from_pretrained("org/bert", revision="v1.0", local_files_only=True,
                                       cache_dir=tmp_path / "hub")
    loaded.save_pretrained(tmp_path / "loaded")
    result = run_cli("diff-keys", "hf://org/bert@v1.0", str(tmp_path / "loaded"), "--values", "--json")
    assert result.exit_code == 0, result.stderr
    values = json.loads(result.stdout)["values"]
    assert values and all(item["identical"] for item in values)
    result = run_cli("diff-keys", "hf://org/bert", str(tmp_path / "loaded"), "--values", "--json")
    assert not all(item["identical"] for item in json.loads(result.stdout)["values"])  # main's differ
