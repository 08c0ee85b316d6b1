"""Hostile inputs found by the fourth red-team round: each must exit 0 or 2 with one line, fast, within bounded
memory, and never let text from the file reach the terminal as markup or escape sequences.

Time limits are CPU seconds of this process (`time.process_time`), not wall-clock: they catch quadratic work
and walks of gigabytes, and a machine loaded by other jobs (which made the wall-clock limits fail) does not."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from tests.helpers import run_cli


def _tied(path: Path, count: int) -> Path:
    """A `.bin` of `count` names for one storage of two floats: a file of ~30 bytes per name."""
    storage = torch.zeros(2)
    torch.save({f"layer.{i}.weight": storage for i in range(count)}, path)
    return path


def test_thousands_of_names_for_one_storage_are_not_listed_for_each_name(tmp_path: Path) -> None:
    """Each tensor row's `shared_with` listed every other name of its storage: n names cost n² strings. A 1.5 MB
    `.bin` of 50,000 names for one storage took over 120 s and 20 GB of memory (`inspect --json`), 3,000 names 30 s.
    `shared_with` now names at most `MAX_SHARED_WITH` of them; `shared_tensors` still lists every group whole."""
    from weightdoctor.structure import MAX_SHARED_WITH

    path = _tied(tmp_path / "tied.bin", 3000)
    started = time.process_time()
    result = run_cli("inspect", str(path), "--json")
    elapsed = time.process_time() - started
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [len(group) for group in report["shared_tensors"]] == [3000]
    assert {len(row["shared_with"]) for row in report["tensors"]} == {MAX_SHARED_WITH}
    first, last = report["tensors"][0], report["tensors"][-1]
    assert first["shared_with"][0] == "layer.1.weight" and "layer.0.weight" in last["shared_with"]
    assert all(row["name"] not in row["shared_with"] for row in report["tensors"])
    assert elapsed < 15, elapsed

    started = time.process_time()
    human = run_cli("inspect", str(path), "--all")
    assert human.exit_code == 0, human.stderr
    assert time.process_time() - started < 15
    assert human.stdout.count("and 2,983 more)") == 3000


def test_a_few_shared_names_are_all_listed(tmp_path: Path) -> None:
    """The control: GPT-2's two names for one storage still name each other."""
    embedding = torch.randn(4, 2)
    path = tmp_path / "gpt2.bin"
    torch.save({"transformer.wte.weight": embedding, "lm_head.weight": embedding}, path)
    result = run_cli("inspect", str(path), "--json")
    rows = {row["name"]: row["shared_with"] for row in json.loads(result.stdout)["tensors"]}
    assert rows == {"transformer.wte.weight": ["lm_head.weight"], "lm_head.weight": ["transformer.wte.weight"]}


def test_shared_names_holding_markup_or_escapes_are_printed_as_text(tmp_path: Path) -> None:
    """The summary's `shared storage` line joined the names unescaped: a pickle key `a[/]` ended `inspect` with
    an unexpected MarkupError, `x[bold]` lost its `[bold]`, and `\\x1b]0;...\\x07` set the terminal's title."""
    weight = torch.randn(3, 3)
    path = tmp_path / "tied.bin"
    torch.save({"a[/]": weight, "b\x1b]0;pwned\x07": weight, "x[bold]": weight}, path)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "shared storage" in line)
    assert "a[/] ≡ b\\x1b]0;pwned\\x07 ≡ x[bold]" in line
    assert "\x1b" not in result.stdout


def test_ten_megabytes_of_metadata_are_clipped_in_the_summary(tmp_path: Path) -> None:
    """A safetensors header of 100,000 metadata entries (10 MB) took 38 s to lay out and printed 17 MB; the
    summary shows the first ~2,000 characters and how many entries it left out, `--json` keeps them all."""
    header = {"__metadata__": {f"k{i}": "v" * 100 for i in range(100_000)},
              "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    raw = json.dumps(header).encode()
    path = tmp_path / "meta.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(4))
    started = time.process_time()
    result = run_cli("inspect", str(path))
    assert result.exit_code == 0, result.stderr
    assert time.process_time() - started < 10
    assert len(result.stdout) < 20_000
    assert "more" in result.stdout and "99,98" in result.stdout
    assert len(json.loads(run_cli("inspect", str(path), "--json").stdout)["metadata"]) == 100_000


def test_diff_keys_of_tens_of_thousands_of_tied_names_is_linear(tmp_path: Path) -> None:
    """diff-keys scanned every tied group, and listed the group's other names, for each missing or unexpected key:
    n² for n names of one storage. 50,000 tied names against 20,000 took 32 s (a minute under a profiler), and a
    hostile file can hold a million in 30 MB. Each key's group is now looked up once."""
    a = _tied(tmp_path / "a.bin", 40_000)
    b = _tied(tmp_path / "b.bin", 10_000)
    started = time.process_time()
    result = run_cli("diff-keys", str(a), str(b), "--json")
    assert time.process_time() - started < 15
    assert result.exit_code == 0, result.stderr
    unexpected = json.loads(result.stdout)["unexpected"]
    assert len(unexpected) == 30_000
    assert {(issue["reason"], issue["detail"]) for issue in unexpected} == {
        ("tied-weight", "shares storage with layer.0.weight")}


def _model_folder_with_links_out(tmp_path: Path) -> tuple[Path, Path]:
    """A model folder (as a git clone or a tarball brings it: both keep symbolic links) whose tokenizer.json is a
    link to a secret outside it, with a folder linking to the folder above; and the secret."""
    import os

    from safetensors.torch import save_file

    secret = tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    folder = tmp_path / "home" / "downloads" / "model"
    folder.mkdir(parents=True)
    save_file({"a.weight": torch.ones(2, 2)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"model_type": "bert"}')
    os.symlink("../../.ssh/id_rsa", folder / "tokenizer.json")
    os.symlink("..", folder / "up")
    return folder, secret


def test_links_out_of_a_model_folder_are_not_copied_into_the_output(tmp_path: Path) -> None:
    """convert and shard copy a folder's side files, following links (a Hub snapshot is made of them): a link
    `tokenizer.json -> ../../.ssh/id_rsa` put the key into the output (which is then uploaded), and `up -> ..`
    copied every folder beside the model (`-> /`: the whole file system). A link is followed only where it stays
    in the folder or, in a Hub snapshot, in the repo's blobs; the others are left out and named."""
    folder, secret = _model_folder_with_links_out(tmp_path)
    for command in (["convert", str(folder), "-o", str(tmp_path / "converted")],
                    ["shard", str(folder), "--max", "1KB", "-o", str(tmp_path / "sharded")]):
        result = run_cli(*command)
        assert result.exit_code == 0, result.stderr
        out = Path(command[-1])
        assert sorted(p.name for p in out.iterdir()) == sorted(
            ["config.json", "model.safetensors"] if command[0] == "convert" else ["config.json", "model.safetensors"])
        assert not any(secret.read_text() in p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
        assert "tokenizer.json (a link to a file outside the model folder)" in result.stderr
        assert "up/ (a link to a folder)" in result.stderr


def test_a_hub_snapshot_still_copies_its_files_through_the_blobs(tmp_path: Path) -> None:
    """The control: a Hub snapshot is links into `../../blobs` (`../../../blobs` in a subfolder), all copied."""
    import io

    from safetensors.torch import save

    from fixtures.hub_cache import commit_of, write_snapshot

    buffer = io.BytesIO(save({"a.weight": torch.ones(2, 2)}))
    snapshot = write_snapshot(tmp_path / "hub", "org/model", commit_of("one"), {
        "model.safetensors": buffer.getvalue(), "config.json": b'{"model_type": "bert"}',
        "tokenizer.json": b"{}", "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}'})
    assert (snapshot / "tokenizer.json").is_symlink()
    out = tmp_path / "out"
    result = run_cli("convert", str(snapshot), "-o", str(out), "--to", "bin")
    assert result.exit_code == 0, result.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "1_Pooling/config.json", "config.json", "pytorch_model.bin", "tokenizer.json"]
    assert "outside the model folder" not in result.stderr


def test_an_output_named_dot_or_dot_dot(tmp_path: Path, monkeypatch: Any) -> None:
    """`shard x -o .` ended with an unexpected ValueError (`PosixPath('.') has an empty name`: the staging folder is
    named after the output), and `-o ..` staged *inside* the current folder, which lies in `..`: carrying the
    earlier files over copied the staging folder into itself until the name was too long. Both are the folder
    they name."""
    from safetensors.torch import save_file

    source = tmp_path / "source.safetensors"
    save_file({"a.weight": torch.ones(2, 2)}, str(source))
    out = tmp_path / "out"
    (out / "inner").mkdir(parents=True)
    (out / "notes.txt").write_text("kept")
    monkeypatch.chdir(out)
    result = run_cli("shard", str(source), "--max", "1KB", "-o", ".", "--force")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["inner", "model.safetensors", "notes.txt"]
    monkeypatch.chdir(out / "inner")
    result = run_cli("shard", str(source), "--max", "1KB", "-o", "..", "--force")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["inner", "model.safetensors", "notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "source.safetensors"]


def test_an_empty_output_is_refused(tmp_path: Path, monkeypatch: Any) -> None:
    """`-o ""` (an unset `$OUT`) is the current folder to the file system: `shard x -o "" --force` replaced the
    weights of wherever it ran. Refused as a usage error; nothing is written."""
    from safetensors.torch import save_file

    source = tmp_path / "source.safetensors"
    save_file({"a.weight": torch.ones(2, 2)}, str(source))
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for command in (["shard", str(source), "--max", "1KB"], ["convert", str(source)]):
        result = run_cli(*command, "-o", "", "--force")
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and "'-o': is empty" in lines[0], result.stderr
    assert list(here.iterdir()) == []


def _header_only(path: Path, names: list[str]) -> None:
    """A safetensors file of empty tensors under `names` (a header and no data)."""
    raw = json.dumps({name: {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for name in names}).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)


def test_an_index_that_lists_none_of_a_shards_tensors_warns_once_per_shard(tmp_path: Path) -> None:
    """One warning per tensor a shard holds and the index does not list (or puts in another shard): an index of
    two shards of 150,000 such tensors each printed 300,000 lines, 22 MB on stderr, in 25 s. Now one line per shard
    and kind, with the count and the first names."""
    _header_only(tmp_path / "s1.safetensors", ["a", *(f"t{i}" for i in range(20_000))])
    _header_only(tmp_path / "s2.safetensors", ["b", *(f"u{i}" for i in range(20_000))])
    weight_map = {"a": "s1.safetensors", "b": "s2.safetensors", **{f"u{i}": "s1.safetensors" for i in range(20_000)}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    result = run_cli("inspect", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    warnings = json.loads(result.stdout)["warnings"]
    assert warnings == [
        "s1.safetensors holds 20,000 tensors the index does not list, e.g. 't0', 't1', 't2'",
        "the index puts 20,000 tensors in s1.safetensors but they are in s2.safetensors, e.g. 'u0', 'u1', 'u2'",
    ]
    human = run_cli("inspect", str(tmp_path))
    assert human.exit_code == 0 and len(human.stderr.splitlines()) == 2, human.stderr[:500]


def test_one_tensor_the_index_does_not_list_is_still_named_alone(tmp_path: Path) -> None:
    """The control: the warnings for one tensor read as they did."""
    _header_only(tmp_path / "s1.safetensors", ["a", "extra"])
    _header_only(tmp_path / "s2.safetensors", ["b", "c"])
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {
        "a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"}}))
    warnings = json.loads(run_cli("inspect", str(tmp_path), "--json").stdout)["warnings"]
    assert warnings == ["s1.safetensors holds 'extra', which the index does not list",
                        "the index puts 'b' in s1.safetensors but it is in s2.safetensors"]


def test_diff_keys_of_names_of_thousands_of_components_is_bounded(tmp_path: Path) -> None:
    """Names of thousands of dotted components (a safetensors header allows 1 MiB per name): diff-keys' search
    for a renamed component kept every name rebuilt once per component (n components × the name's length), and its
    grouping of keys tried every depth of them. 40 names of 22,000 components took 23 GB and did not end in two
    minutes. Both now look at the first 64 components (real names are under 20 deep)."""
    import random
    import tracemalloc

    rng = random.Random(0)
    for side in "ab":
        names = [f"{side}{i}." + "".join(rng.choice("abcdefgh.") for _ in range(30_000)) for i in range(12)]
        raw = json.dumps({name: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
                          for i, name in enumerate(names)}).encode()
        (tmp_path / f"{side}.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(4 * len(names)))
    tracemalloc.start()
    try:
        started = time.process_time()
        result = run_cli("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--json")
        elapsed = time.process_time() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.exit_code == 1, result.stderr
    report = json.loads(result.stdout)
    assert len(report["missing"]) == len(report["unexpected"]) == 12
    assert peak < 200 * 2**20, f"{peak:,} bytes"
    assert elapsed < 20, elapsed


def test_overlapping_views_of_one_storage_are_refused_before_their_values_are_read(tmp_path: Path) -> None:
    """80 views `w[i:]` of one 4 MB storage: each passes the per-view limit, together they claim 320 MB (a 2,000-view
    file claimed 8 GB: check-dtype did not end in 60 s, convert would have written it all). Commands that read values
    refuse it with one line and write nothing; inspect still describes it, as torch.load would load it. Views that
    add up to a few times their storage (fused q/k/v slices, a transposed alias, tied names) are read as before."""
    from weightdoctor.checkpoint.pytorch_format import MAX_EXPANDED_BYTES, MAX_VIEWS_TO_STORAGE

    storage = torch.randn(1_000_000)
    views = {f"v{i}": storage[i * 10:] for i in range(80)}
    assert sum(v.nbytes for v in views.values()) > MAX_VIEWS_TO_STORAGE * storage.nbytes + MAX_EXPANDED_BYTES
    amplified = tmp_path / "amplified.bin"
    torch.save(views, amplified)
    for args in (["check-dtype", str(amplified)], ["inspect", str(amplified), "--stats"],
                 ["convert", str(amplified), "-o", str(tmp_path / "out.safetensors")],
                 ["shard", str(amplified), "-o", str(tmp_path / "shards"), "--max", "100MB"]):
        result = run_cli(*args)
        assert result.exit_code == 2, (args, result.output[-500:])
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "80 views of the storage of tensor 'v0' claim" in lines[0], lines
        assert str(amplified) in lines[0]
    assert not (tmp_path / "out.safetensors").exists() and not (tmp_path / "shards").exists()
    listed = run_cli("inspect", str(amplified), "--json")
    assert listed.exit_code == 0 and json.loads(listed.stdout)["num_tensors"] == 80

    legit = tmp_path / "legit.bin"
    torch.save({"q": storage[:300_000], "k": storage[300_000:600_000], "v": storage[600_000:], "all": storage,
                "all_t": storage.view(1000, 1000).t(), "tied": storage}, legit)
    result = run_cli("convert", str(legit), "-o", str(tmp_path / "legit.safetensors"))
    assert result.exit_code == 0, result.output[-500:]
    from safetensors.torch import load_file

    written = load_file(tmp_path / "legit.safetensors")
    assert torch.equal(written["all_t"], storage.view(1000, 1000).t())
    assert torch.equal(written["k"], storage[300_000:600_000])
