"""Round 11 of the red team: index JSONs, safetensors headers and Hub cache folders built to mislead or to stall
the reader, and the lines that answer them. Each command must exit 0 with a truthful report or 2 with one line
naming the file and what is wrong; never a traceback, a hang, or advice meant for a programmer."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli


def _one_error_line(result: object) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]  # type: ignore[attr-defined]
    assert result.exit_code == 2 and len(lines) == 1, result.stderr  # type: ignore[attr-defined]
    return lines[0]


def test_an_index_naming_a_million_missing_shards_is_answered_without_a_stat_per_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An index naming 200,000 shards of which one is here: the hint counting the missing ones looked at every name
    on disk (a Path and a stat each), most of the time of an index of a million names (12 s, past the 10 s a doctor
    may take). The folder is listed once; the names it does not list are missing without a stat."""
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"a.weight": torch.ones(2)}, folder / "model-00001.safetensors")
    shards = 200_000
    weight_map = {f"x.{i}.weight": f"model-{i + 2:06d}.safetensors" for i in range(shards)}
    weight_map["a.weight"] = "model-00001.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    looked_at = {"n": 0}
    real_exists = os.path.exists

    def counting_exists(path: object) -> bool:
        looked_at["n"] += 1
        return real_exists(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os.path, "exists", counting_exists)
    line = _one_error_line(run_cli("inspect", folder))
    assert "model.safetensors.index.json" in line and "named by the index does not exist" in line
    assert f"({shards} of its {shards + 1} shards are missing: 'model-000002.safetensors'" in line
    assert looked_at["n"] < 1_000, looked_at


def test_a_missing_shard_that_is_a_dangling_link_is_still_counted_missing(tmp_path: Path) -> None:
    """Listed by the folder is not there: a link to nothing is missing, as transformers would find it."""
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"a.weight": torch.ones(2)}, folder / "model-00001-of-00003.safetensors")
    (folder / "model-00002-of-00003.safetensors").symlink_to(tmp_path / "gone.safetensors")
    weight_map = {"a.weight": "model-00001-of-00003.safetensors", "b.weight": "model-00002-of-00003.safetensors",
                  "c.weight": "model-00003-of-00003.safetensors"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    line = _one_error_line(run_cli("inspect", folder))
    assert "(2 of its 3 shards are missing: 'model-00002-of-00003.safetensors', " \
           "'model-00003-of-00003.safetensors'" in line, line


def _cached_repo(cache: Path, ref: bytes) -> Path:
    """org/name in a Hub cache: one snapshot, its refs/main holding `ref`."""
    from fixtures.build import write_hub_cache

    weights = cache.parent / "weights"
    weights.mkdir()
    save_file({"a.weight": torch.ones(2)}, weights / "model.safetensors")
    snapshot = write_hub_cache(cache, "org/name", weights)
    (cache / "models--org--name" / "refs" / "main").write_bytes(ref)
    return snapshot


@pytest.mark.parametrize("ref", [b"\xff\xfe\x00", b"\x1b]8;;http://e\x1b\\junk\n"])
def test_a_ref_holding_no_commit_hash_is_quoted_beside_the_snapshots_the_cache_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ref: bytes) -> None:
    """refs/main of bytes that are no UTF-8 made the list of cached revisions empty (the error said the repo was
    not cached and named none), and junk text was cut to ten characters as if it were a commit. The ref is
    quoted as what it holds, the snapshot still named, and no escape reaches the terminal."""
    cache = tmp_path / "hub"
    snapshot = _cached_repo(cache, ref)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = _one_error_line(run_cli("inspect", "org/name"))
    assert "'org/name'" in line and ", not a commit hash, " in line, line
    assert line.endswith(f"the cache holds main -> {ref.decode('utf-8', 'replace').strip()[:20]!r}, "
                         f"not a commit hash, {snapshot.name[:10]}; download it with `hf download org/name` (with "
                         "HF_HUB_OFFLINE unset)"), line
    assert "\x1b" not in line


def test_an_integer_past_the_digit_limit_is_said_without_pythons_advice(tmp_path: Path) -> None:
    """A header offset of 5,000 digits: the line ended in Python's "use sys.set_int_max_str_digits() to increase
    the limit", advice for a programmer. It says how long the integer is and how long one may be."""
    header = b'{"a.weight":{"dtype":"F32","shape":[4],"data_offsets":[0,' + b"9" * 5000 + b"]}}"
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    line = _one_error_line(run_cli("inspect", path))
    assert line == f"error: {path}: header is not valid JSON (an integer of 5,000 digits; at most 4,300 are read)"
    index = tmp_path / "model.safetensors.index.json"
    index.write_text('{"metadata": {"total_size": ' + "1" * 5000 + '}, "weight_map": {"a.weight": "x.safetensors"}}')
    line = _one_error_line(run_cli("inspect", index))
    assert "an integer of 5,000 digits; at most 4,300 are read" in line and "set_int_max_str_digits" not in line


def test_an_index_that_names_itself_as_a_shard_is_said_so(tmp_path: Path) -> None:
    """`"b.weight": "model.safetensors.index.json"`: the index was read as a weight file and refused as "not a
    safetensors file nor a PyTorch pickle", as if the user had named it by mistake."""
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"a.weight": torch.ones(2)}, folder / "model-00001-of-00001.safetensors")
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {
        "a.weight": "model-00001-of-00001.safetensors", "b.weight": "./model.safetensors.index.json"}}))
    line = _one_error_line(run_cli("inspect", folder))
    assert line == (f"error: {index}: shard './model.safetensors.index.json' named by the index is the index itself, "
                    "not a weight file")


def test_a_snapshot_folder_that_is_a_link_out_of_the_cache_is_read_as_huggingface_hub_reads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """refs/main holds the commit and snapshots/<commit> is a link to where the files were moved: the error said
    refs/main was "empty, or a path out of its snapshots/ folder" (it is neither) and to delete that ref; later the
    snapshot was refused as a link out of snapshots/. huggingface_hub reads it (snapshot_download(local_files_only)
    returns it, and from_pretrained loads it), so it is read, with a warning saying where it leads (fixlist14)."""
    import json
    import shutil

    from huggingface_hub import snapshot_download

    cache = tmp_path / "hub"
    snapshot = _cached_repo(cache, b"")
    (cache / "models--org--name" / "refs" / "main").write_text(snapshot.name)
    moved = tmp_path / "moved"
    shutil.copytree(snapshot, moved)  # the links to ../../blobs become the files they name
    shutil.rmtree(snapshot)
    snapshot.symlink_to(moved, target_is_directory=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert snapshot_download("org/name", cache_dir=cache, local_files_only=True) == str(snapshot)
    result = run_cli("inspect", "org/name", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["resolved_path"] == str(snapshot) and data["commit"] == snapshot.name
    assert data["warnings"] == [f"the cached snapshot {snapshot.name[:10]} is a link out of the cache's snapshots/ "
                                f"folder, to {moved}: read there, as huggingface_hub reads it"]


@pytest.mark.parametrize("command", ["inspect", "diff-keys", "check-dtype"])
def test_a_c1_control_in_a_tensor_name_is_escaped_in_json(tmp_path: Path, command: str) -> None:
    """U+009B is CSI to a terminal, as ESC [ is: a pickled name `e\\x9b31m.weight` reached stdout raw in `--json`
    (JSON escapes U+0000-U+001F only), so `inspect x.bin --json` on a console printed in red. It is written as
    its `\\u009b` escape, which decodes to the same name."""
    source = tmp_path / "model.bin"
    torch.save({"e\x9b31m.weight": torch.ones(2), "ok.weight": torch.ones(2)}, source)
    other = tmp_path / "other.bin"
    torch.save({"ok.weight": torch.ones(2)}, other)
    args = [command, str(source)] + ([str(other)] if command == "diff-keys" else [])
    result = run_cli(*args, "--json")
    assert result.exit_code in (0, 1), result.stderr
    assert not any("\x80" <= char <= "\x9f" for char in result.stdout), result.stdout
    assert "\\u009b" in result.stdout and "e\x9b31m.weight" in json.dumps(json.loads(result.stdout),
                                                                          ensure_ascii=False)


def test_a_shard_named_by_url_is_quoted_as_the_index_spells_it(tmp_path: Path) -> None:
    """`https://huggingface.co/...` in a weight_map: the error quoted `https:/huggingface.co/...` (the name with its
    slashes collapsed, which the index does not hold) and said only that it does not exist."""
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"b.weight": torch.ones(2)}, folder / "model-00002-of-00002.safetensors")
    url = "https://huggingface.co/org/name/resolve/main/model-00001-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {
        "a.weight": url, "b.weight": "model-00002-of-00002.safetensors"}}))
    line = _one_error_line(run_cli("inspect", folder))
    assert f"shard {url!r} named by the index does not exist (it is a URL: an index names files beside it, " \
           "which from_pretrained opens there) (1 of its 2 shards is missing" in line, line


def test_one_shard_under_two_spellings_is_read_once(tmp_path: Path) -> None:
    """`a.weight` in `model-00001-of-00001.safetensors`, `b.weight` in `sub/../model-00001-of-00001.safetensors`
    and `c.weight` in a link to it: the same file, which transformers opens under each name. The index was refused
    as "tensor 'a.weight' is in both ...", naming two spellings of one file. It is read once, with one warning."""
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    tensors = {"a.weight": torch.ones(2), "b.weight": torch.zeros(3), "c.weight": torch.full((4,), 2.0)}
    save_file(tensors, folder / "model-00001-of-00001.safetensors")
    (folder / "link.safetensors").symlink_to("model-00001-of-00001.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {
        "a.weight": "model-00001-of-00001.safetensors", "b.weight": "sub/../model-00001-of-00001.safetensors",
        "c.weight": "link.safetensors"}}))
    result = run_cli("inspect", folder, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["num_tensors"] == 3 and report["num_params"] == 9
    assert [f["path"] for f in report["files"] if f["role"] == "weights"] == ["link.safetensors"]
    assert report["warnings"] == ["the index names 'link.safetensors' also as 'model-00001-of-00001.safetensors', "
                                  "'sub/../model-00001-of-00001.safetensors': the same file, read once"]
    out = tmp_path / "out"
    result = run_cli("convert", folder, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tensors) and len(set(index["weight_map"].values())) == 1


@pytest.mark.parametrize("how", ["absolute", "dotdot"])
def test_a_revision_that_is_a_path_reads_no_file_out_of_a_cache_folders_refs(tmp_path: Path, how: str) -> None:
    """`inspect models--org--name --revision /some/file` (or `../../../some/file`): pathlib joined the revision to
    refs/ as a path, read that file and quoted its first forty characters as the commit it named."""
    cache = tmp_path / "hub"
    snapshot = _cached_repo(cache, b"")
    (cache / "models--org--name" / "refs" / "main").write_text(snapshot.name)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOKEN=hf_not_for_the_terminal\n")
    folder = cache / "models--org--name"
    revision = str(secret) if how == "absolute" else os.path.relpath(secret, folder / "refs")
    line = _one_error_line(run_cli("inspect", folder, "--revision", revision))
    assert line == (f"error: {folder}: a Hub cache folder (of org/name), no snapshot for revision {revision}; its "
                    f"snapshots: {snapshot.name[:10]}. Give the repo id 'org/name' (with --revision) or a snapshot "
                    "folder"), line
    assert "TOKEN" not in line


def test_an_empty_revision_is_refused_naming_the_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--revision "$REV"` with REV unset: the repo id was said not to be cached (the cache holds main -> ...),
    while its cache folder read refs/main as if no revision had been given."""
    cache = tmp_path / "hub"
    snapshot = _cached_repo(cache, b"")
    (cache / "models--org--name" / "refs" / "main").write_text(snapshot.name)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for args in (("inspect", "org/name"), ("inspect", str(cache / "models--org--name")),
                 ("plan-devices", "org/name", "--gpu", "1GB")):
        line = _one_error_line(run_cli(*args, "--revision", ""))
        assert line == "error: --revision is empty: give a branch, tag or commit, or leave it out for main", args


@pytest.mark.parametrize("command", ["convert", "shard"])
def test_metadata_given_as_bytes_that_are_no_utf8_is_refused_naming_the_option(tmp_path: Path, command: str) -> None:
    """`--metadata $'k=\\xff'`: Python keeps the byte as a lone surrogate, which no safetensors header can encode;
    the line was "unexpected UnicodeEncodeError ... (run with --debug for the traceback)", after the plan."""
    from tests.helpers import copy_example

    folder = copy_example(tmp_path)
    out = tmp_path / "out"
    extra = ["--max", "1MB"] if command == "shard" else []
    line = _one_error_line(run_cli(command, folder, "-o", out, *extra, "--metadata", "k=\udcff"))
    assert line == ("error: --metadata 'k=\\udcff': not UTF-8 text (the command line held bytes that are not); "
                    "a safetensors header holds UTF-8 only")
    assert not out.exists()
