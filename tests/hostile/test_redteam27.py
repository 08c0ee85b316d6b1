"""Red team 27: Hub caches and sharded folders a hostile party can hand a user (a shared cache, a tarball of one, a
repo uploaded with odd files), read by the commands and by the writers.

What held (measured, not all pinned here): a snapshot file linked to /dev/zero, /proc/self/mem, a FIFO or a socket
is refused as no regular file, a dangling link or a loop of links as such; refs/main holding `../../x`, 50 MB, an
uppercase or 64-hex commit, or another repo's commit is said not to name a snapshot; an index whose weight_map names
`../` or absolute paths, config.json, the index itself, its folder, a subfolder, a name with NUL or newline, a list
or string weight_map, tensors in two shards, or tensors the shards do not hold, is refused in one line naming the
index; a lying `metadata.total_size` (negative, float, 10^30, inf, nan) is a warning; convert and shard leave out a
config or tokenizer file that links out of the model folder (the output is what gets uploaded). What did not: a
snapshot file linked out of the cache (to the user's own files) was read with no word said; the writers ended in
"unexpected RuntimeError" on a folder holding a loop of links (one in a subfolder was dropped unsaid), and in
"unexpected RecursionError" on a folder nested 1,500 deep, as did a cache whose refs/ was; a ref of 400 MB was read
whole (864 MB of memory); an index without a `metadata` object, which transformers' from_pretrained fails on, was read
with no word said; a pytorch_model.bin that a safetensors index names as a shard was read and said "ignored", and
convert wrote it as model.safetensors beside the index, which then read alone (verification failed).

Not fixed: a snapshot (or any folder) of 100,000 entries without weights took 33 s to refuse (sorting Paths, a stat
per entry, in several places); a blob that is a hard link to a user's file cannot be told from one the cache wrote.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save, save_file

from fixtures.hub_cache import commit_of, write_snapshot
from tests.helpers import one_error_line, run_cli


def _cache_with_a_link_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, target: Path,
                           files: dict[str, bytes]) -> Path:
    """A cached snapshot of org/m whose `name` is a link to `target`, out of the cache; the rest as the Hub writes."""
    cache = tmp_path / "hub"
    snapshot = write_snapshot(cache, "org/m", commit_of("m"), files)
    (snapshot / name).symlink_to(target)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snapshot


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "model-00001-of-00001.safetensors"])
def test_a_snapshot_file_that_links_out_of_the_cache_is_said_where_it_leads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """huggingface_hub links a snapshot's files to the repo's blobs/ only; a cache someone else wrote linked
    model.safetensors (a shard, config.json) to the user's own file, and every command read it with no word said.
    It is read, as from_pretrained reads it, and said, naming the file and where it leads."""
    user = tmp_path / "home"
    user.mkdir()
    save_file({"private": torch.arange(4.0)}, user / "mine.safetensors")
    (user / "mine.json").write_text('{"model_type": "bert", "note": "mine"}')
    files = {"config.json": b'{"model_type": "bert"}', "model.safetensors": save({"a": torch.zeros(2)})}
    target = user / "mine.safetensors"
    if name == "config.json":
        del files["config.json"]
        target = user / "mine.json"
    elif name.startswith("model-"):
        del files["model.safetensors"]
        files["model.safetensors.index.json"] = json.dumps(
            {"metadata": {"total_size": 16}, "weight_map": {"private": name}}).encode()
    else:
        del files["model.safetensors"]
    _cache_with_a_link_out(tmp_path, monkeypatch, name, target, files)
    for source in ("org/m", str(tmp_path / "hub" / "models--org--m")):
        result = run_cli("inspect", source, "--json")
        assert result.exit_code == 0, result.stderr
        said = [w for w in json.loads(result.stdout)["warnings"] if "cache folder" in w and "leads out" in w]
        assert said == [f"{name} leads out of the repo's Hub cache folder, to {target} (huggingface_hub links a "
                        "snapshot's files to the repo's blobs/ only: a cache written by someone else?): read there"]


def test_a_snapshot_file_linked_to_a_file_that_is_no_weights_says_where_it_leads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """model.safetensors linked to a text file of the user's: refused (its first bytes quoted, as of any text saved
    in place of weights), and now also said to lead out of the cache, to that file."""
    secret = tmp_path / "notes.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n" * 3)
    _cache_with_a_link_out(tmp_path, monkeypatch, "model.safetensors", secret, {"config.json": b"{}"})
    line = " ".join(one_error_line(run_cli("inspect", "org/m")).split())
    assert line.startswith("error: org/m: model.safetensors: ")
    assert f"(it leads out of the repo's Hub cache folder, to {secret}: huggingface_hub links" in line


def test_a_snapshot_file_in_blobs_or_a_moved_blobs_folder_is_not_said_to_lead_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The links huggingface_hub writes (to ../../blobs), and blobs/ moved to another disk by hand and linked back,
    are the cache's own: no warning."""
    cache = tmp_path / "hub"
    write_snapshot(cache, "org/m", commit_of("m"), {"config.json": b'{"model_type": "bert"}',
                                                     "model.safetensors": save({"a": torch.zeros(2)})})
    blobs = cache / "models--org--m" / "blobs"
    blobs.rename(tmp_path / "disk2")
    blobs.symlink_to(tmp_path / "disk2", target_is_directory=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", "org/m", "--json")
    assert result.exit_code == 0, result.stderr
    assert not [w for w in json.loads(result.stdout)["warnings"] if "leads out" in w]


@pytest.mark.parametrize("command", ["convert", "shard"])
def test_a_loop_of_links_in_the_folder_is_left_out_by_the_writers_and_said(tmp_path: Path, command: str) -> None:
    """A folder holding `loop1 -> loop2 -> loop1` (a tarball's links, extracted): convert and shard ended in
    "unexpected RuntimeError: Symlink loop" (Path.resolve), and one in a subfolder was dropped unsaid."""
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    torch.save({"a": torch.zeros(2)}, model / "pytorch_model.bin")
    (model / "config.json").write_text('{"model_type": "bert"}')
    (model / "sub" / "keep.json").write_text("{}")
    os.symlink("loop2", model / "loop1")
    os.symlink("loop1", model / "loop2")
    os.symlink("x.json", model / "sub" / "x.json")
    os.symlink(tmp_path / "gone", model / "sub" / "gone.json")
    out = tmp_path / "out"
    args = [command, str(model), "-o", str(out), "--json"] + (["--max", "1KB"] if command == "shard" else [])
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr
    warnings = json.loads(result.stdout)["plan"]["warnings"]
    said = " ".join(warnings)
    for name in ("loop1", "loop2", "sub/x.json"):
        assert f"{name} (a loop of links, leading back to itself)" in said
    assert "sub/gone.json (a link to a missing file" in said
    assert (out / "config.json").is_file() and (out / "sub" / "keep.json").is_file()
    assert not (out / "loop1").exists() and not (out / "sub" / "x.json").is_symlink()


def _nest(folder: Path, depth: int) -> Path:
    """`folder/d/d/.../d`, `depth` levels (made one by one: os.makedirs recurses once per level)."""
    for _ in range(depth):
        folder = folder / "d"
        folder.mkdir()
    return folder


def _unnest(folder: Path, depth: int) -> None:
    """Remove what `_nest` made (with any files at its bottom), level by level: shutil.rmtree recurses too."""
    bottom = folder / Path(*["d"] * depth)
    for item in bottom.iterdir():
        item.unlink()
    for level in range(depth, 0, -1):
        (folder / Path(*["d"] * level)).rmdir()


def test_a_folder_nested_1500_deep_beside_the_weights_is_left_out_by_convert(tmp_path: Path) -> None:
    """convert copies a model folder's other files with their folders: `d/d/.../x.json` 1,500 deep (a tarball's)
    ended in "unexpected RecursionError" (rglob, then mkdir(parents=True)). What lies past 32 levels is left out and
    said; a file a few levels down is copied as before."""
    model = tmp_path / "model"
    model.mkdir()
    torch.save({"a": torch.zeros(2)}, model / "pytorch_model.bin")
    (model / "config.json").write_text('{"model_type": "bert"}')
    (_nest(model, 1500) / "x.json").write_text("{}")
    (model / "1_Pooling").mkdir()
    (model / "1_Pooling" / "config.json").write_text("{}")
    try:
        result = run_cli("convert", str(model), "-o", str(tmp_path / "out"), "--json")
        assert result.exit_code == 0, result.stderr
        assert "d/ (its files nested past 32 folders deep)" in json.loads(result.stdout)["plan"]["warnings"][0]
        assert (tmp_path / "out" / "1_Pooling" / "config.json").is_file()
        assert not (tmp_path / "out" / "d" / "d").exists()
    finally:
        _unnest(model, 1500)


def test_refs_nested_1500_deep_in_a_cache_are_listed_without_recursion(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache whose refs/ holds `r/r/.../r/x` 1,500 deep: every command on the repo id that listed the cached
    revisions (a snapshot without weights, an unknown --revision) ended in "unexpected RecursionError"."""
    cache = tmp_path / "hub"
    snapshot = write_snapshot(cache, "org/m", commit_of("m"), {"config.json": b'{"model_type": "bert"}'})
    refs = cache / "models--org--m" / "refs"
    (_nest(refs, 1500) / "x").write_text(snapshot.name)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        line = " ".join(one_error_line(run_cli("inspect", "org/m")).split())
        assert "the weights were never downloaded" in line and "Recursion" not in line
        line = " ".join(one_error_line(run_cli("inspect", "org/m", "--revision", "nope")).split())
        assert "revision 'nope' of 'org/m' is not in the Hugging Face cache" in line
        assert f"main -> {snapshot.name[:10]}" in line and "d/d/d/d/x -> " in line
    finally:
        _unnest(refs, 1500)


def test_a_ref_of_gigabytes_is_not_read_to_list_the_other_snapshots(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot without weights looks for other cached revisions that have them, and for the refs naming each: a
    ref of gigabytes (a sparse file; huggingface_hub's are 40 bytes) was read whole, 864 MB of memory for a 400 MB
    one. Refs past 4 KiB are skipped, as the listing of cached revisions skips them."""
    import tracemalloc

    from weightdoctor.checkpoint.reader import _other_snapshots_with_weights

    cache = tmp_path / "hub"
    snapshot = write_snapshot(cache, "org/m", commit_of("m"), {"config.json": b'{"model_type": "bert"}'})
    write_snapshot(cache, "org/m", commit_of("m2"), {"model.safetensors": save({"a": torch.zeros(2)})}, refs=("v1",))
    with open(cache / "models--org--m" / "refs" / "huge", "wb") as ref:
        ref.truncate(64 * 2**20)
    tracemalloc.start()
    try:
        found = _other_snapshots_with_weights(snapshot)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found == [(commit_of("m2"), ["v1"])]
    assert peak < 8 * 2**20, peak


def _two_shards(folder: Path, index: dict) -> Path:
    """A folder of two safetensors shards (`a` in s1, `b` in s2), a config, and `index` as its safetensors index."""
    folder.mkdir()
    save_file({"a": torch.zeros(4)}, folder / "s1.safetensors")
    save_file({"b": torch.zeros(4)}, folder / "s2.safetensors")
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


@pytest.mark.parametrize(("metadata", "said"), [
    (None, "no 'metadata' entry"), ([1], "a 'metadata' that is a list, not an object"),
    ("x", "a 'metadata' that is a string, not an object"), (0, "a 'metadata' that is a number, not an object")])
def test_an_index_without_a_metadata_object_is_said_to_fail_from_pretrained(
        tmp_path: Path, metadata: object, said: str) -> None:
    """transformers' get_checkpoint_shard_files sets `index["metadata"]["all_checkpoint_keys"]`: an index written
    with its weight_map alone failed from_pretrained with KeyError: 'metadata' (a list there, TypeError; measured on
    transformers 5.25 with a BertModel saved in shards), and weightdoctor read it with no word said."""
    index: dict = {"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}
    if metadata is not None:
        index["metadata"] = metadata
    result = run_cli("inspect", str(_two_shards(tmp_path / "m", index)), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["warnings"] == [
        f"the index has {said}: transformers' from_pretrained fails reading it (add \"metadata\": {{}} to it)"]
    index["metadata"] = {}  # what from_pretrained reads
    result = run_cli("inspect", str(_two_shards(tmp_path / "fixed", index)), "--json")
    assert json.loads(result.stdout)["warnings"] == []


def test_pytorch_model_bin_named_as_a_shard_by_the_safetensors_index_is_not_said_ignored(tmp_path: Path) -> None:
    """A safetensors index naming pytorch_model.bin as a shard: the .bin was read (its tensor in the report) and
    said "pytorch_model.bin is ignored: model.safetensors.index.json comes first"."""
    folder = _two_shards(tmp_path / "m", {"metadata": {}, "weight_map": {"a": "s1.safetensors",
                                                                         "b": "pytorch_model.bin"}})
    torch.save({"b": torch.zeros(4)}, folder / "pytorch_model.bin")
    result = run_cli("inspect", str(folder), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert {t["name"]: t["file"] for t in data["tensors"]} == {"a": "s1.safetensors", "b": "pytorch_model.bin"}
    assert not [w for w in data["warnings"] if "pytorch_model.bin is ignored" in w]


def test_a_converted_shard_does_not_take_the_name_of_the_file_its_index_stands_beside(tmp_path: Path) -> None:
    """A safetensors index naming pytorch_model.bin as a shard (from_pretrained reads it with torch.load): convert
    named its output model.safetensors beside model.safetensors.index.json, which the verification (and
    from_pretrained) read alone, and failed with "verification failed: missing ['a']" naming a hidden staging
    folder (with --no-verify the output was written so). The shard is written under another name the index names."""
    model = tmp_path / "model"
    model.mkdir()
    save_file({"a": torch.ones(4)}, model / "s1.safetensors")
    torch.save({"b": torch.zeros(4)}, model / "pytorch_model.bin")
    (model / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"a": "s1.safetensors", "b": "pytorch_model.bin"}}))
    out = tmp_path / "out"
    result = run_cli("convert", str(model), "-o", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    assert not (out / "model.safetensors").exists()
    written = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert written == {"a": "s1.safetensors", "b": "model-shard.safetensors"}
    assert (out / "model-shard.safetensors").is_file()
    result = run_cli("inspect", str(out), "--json")
    assert {t["name"] for t in json.loads(result.stdout)["tensors"]} == {"a", "b"}
