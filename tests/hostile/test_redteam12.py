"""Round 12 of the red team: user regexes the backtracking bound let through, and hostile bytes, addresses and
names against the formats, Hub sources and batched reads added in round 12. Each command must exit 0 with a
truthful report or 2 with one line naming the file or option and what is wrong; never a traceback or a hang."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str | Path, seconds: float = 20) -> subprocess.CompletedProcess[str]:
    """`python -m weightdoctor ARGS` in a fresh interpreter, killed past `seconds`: re.search cannot be interrupted
    in-process, so a pattern that backtracks for hours would hang the test run itself."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "weightdoctor", *map(str, args)], capture_output=True, text=True,
                          timeout=seconds, env=env, check=False)


@pytest.mark.parametrize(("option", "pattern"), [
    ("--filter", "a?" * 28 + "a" * 28 + "x"),
    ("--filter", "(?:a|a)" * 40 + "x"),
    ("--hist", "a{0,40}" * 6 + "x"),
])
def test_a_pattern_of_exponentially_many_ways_without_a_repeated_group_is_refused(
        tmp_path: Path, option: str, pattern: str) -> None:
    """`_match_cost` refused only what it could not bound: `a?` 28 times then `a` 28 times (the textbook slow regex)
    or `(a|a)` written out 40 times holds no repeated group, so its bound, 2**28 or 2**40 ways whatever the name,
    passed, and `inspect --filter` over a 60-letter name did not return in 10 s. A constant that large is refused
    in one line naming the option; an ordinary pattern of alternatives and counted repeats still runs, and so does
    one wide counted repeat (`\\w{0,5000}`), which is bounded by the name as `\\w*` is."""
    path = tmp_path / "m.safetensors"
    save_file({"a" * 60 + ".weight": torch.zeros(2), "layers.1.q_proj.weight": torch.ones(2)}, path)
    result = _cli("inspect", path, option, pattern, "--json")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {option} ") and "ways on one tensor name" in lines[0], lines[0]
    ordinary = _cli("inspect", path, "--filter", r"layers\.\d{1,3}\.(q|k|v|o)_proj\.(weight|bias)", "--json")
    assert ordinary.returncode == 0 and '"layers.1.q_proj.weight"' in ordinary.stdout, ordinary.stderr
    # One wide counted repeat stops within the name, as `\w*` does: it runs.
    wide = _cli("inspect", path, "--filter", r"^\w{0,5000}\.weight$", "--json")
    assert wide.returncode == 0 and '"layers.1.q_proj.weight"' not in wide.stdout, wide.stderr
    assert f'"{"a" * 60}.weight"' in wide.stdout


def _one_error_line(result: object) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]  # type: ignore[attr-defined]
    assert result.exit_code == 2 and len(lines) == 1, result.stderr  # type: ignore[attr-defined]
    return lines[0]


@pytest.mark.parametrize("command", [["inspect"], ["plan-devices", "--local"], ["convert", "-o", "out.safetensors"]])
@pytest.mark.parametrize("address", ["hf://org/" + "a" * 5000, "https://huggingface.co/org/" + "a" * 5000])
def test_a_hub_address_too_long_for_a_file_name_is_read_as_the_address_it_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], address: str) -> None:
    """`hf://org/` and 5,000 letters was looked up as a local path first, and pathlib's ENAMETOOLONG ended the run:
    'cannot read or write: [Errno 36] File name too long: 'hf:/org/aaa...'' (the address with its '//' collapsed,
    and no word of what is wrong with it). It is huggingface_hub's refusal of the repo id, quoting the address."""
    from tests.helpers import run_cli

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    line = _one_error_line(run_cli(*command, address))
    assert line.startswith(f"error: Invalid HF URI '{address[:40]}"), line[:300]
    assert "File name too long" not in line and "hf:/org" not in line, line[:300]
    assert not (tmp_path / "out.safetensors").exists()


def test_a_revision_too_long_for_a_file_name_is_said_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """`hf://datasets/org/name@` and 5,000 letters: the dataset's refs/<revision> was asked is_file() and the OS
    refused the name ('cannot read or write: [Errno 36] File name too long', naming a cache path). It names the
    address and says that revision is not in the cache, with the download to run, as of a short unknown one."""
    from tests.helpers import run_cli

    (tmp_path / "hub" / "datasets--org--name" / "refs").mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = _one_error_line(run_cli("inspect", "hf://datasets/org/name@" + "a" * 5000))
    assert line.startswith("error: hf://datasets/org/name@aaa") and "File name too long" not in line, line[:300]
    short = _one_error_line(run_cli("inspect", "hf://datasets/org/name@nope"))
    assert "the dataset repo org/name is not in the Hugging Face cache" in short, short
    # The long one is elided in the middle (the revision is quoted twice); it ends as the short one does, with
    # the download that fetches it.
    assert line.endswith("`") and short.endswith("--repo-type dataset --revision nope`"), line[-300:]


def test_a_repo_name_past_the_hubs_96_characters_is_not_given_back_as_the_repo_id_to_type(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`hf://org/` and 300 letters (no file name limit hit): huggingface_hub refused the id, and the fallback meant
    for pages of repos without an org answered 'a web address, not a local path: give the repo id instead:
    org/aaa...', an id the Hub refuses too. huggingface_hub's own reason is given: its maximum length is 96."""
    from tests.helpers import run_cli

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = _one_error_line(run_cli("inspect", "hf://org/" + "b" * 300))
    assert "the maximum length is 96" in line and "give the repo id instead" not in line, line
    # The fallback still answers a page of a repo without an org, which huggingface_hub does not parse.
    page = _one_error_line(run_cli("inspect", "https://huggingface.co/bert-base-uncased/tree/main"))
    assert "bert-base-uncased" in page and "Invalid HF URI" not in page, page


def test_a_hundred_thousand_dynamic_patterns_are_compiled_only_as_far_as_the_layers_read_them() -> None:
    """GPTQModel's `dynamic` of 100,000 patterns: every one was compiled and parsed for its bound before any layer
    was looked at (12 s for inspect), though a layer stops at the first pattern that matches it. The first pattern
    claims every layer here at 8 bits, at once; layers that no pattern in reach claims are unknown, not guessed,
    within the matching's own time limit."""
    import time

    from weightdoctor.quantized import _PATTERN_SECONDS, _gptq_dynamic_layer_bits

    packed = [f"model.layers.{i}.mlp.down_proj.qweight" for i in range(200)]
    rest = {f"+:model\\.layers\\.{i}x\\.(up|down)_proj{i}": {"bits": 2} for i in range(100_000)}
    # CPU time of this thread, as the limit counts it: a machine busy with other work stretches wall time.
    started = time.thread_time()
    found = _gptq_dynamic_layer_bits(packed, {"dynamic": {r"+:model\.layers\.\d+\.mlp\.": {"bits": 8}, **rest}})
    assert time.thread_time() - started < 2.0
    assert found == dict.fromkeys(packed, 8)
    started = time.thread_time()
    found = _gptq_dynamic_layer_bits(packed, {"dynamic": rest})
    assert time.thread_time() - started < _PATTERN_SECONDS + 2.0
    assert set(found.values()) == {None} and len(found) == len(packed)


@pytest.mark.parametrize("source", ["dataset/" + "a" * 300, "a" * 300 + "x/datasets/org/name",
                                    "model/org/" + "a" * 300])
def test_a_name_too_long_for_a_cache_folder_is_no_repo_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          source: str) -> None:
    """`dataset/` and 300 letters (as `hf cache ls` writes a dataset's id) was looked for as the cache folder
    `models--dataset--aaa...`, past a file name's 255 bytes: 'cannot read or write: [Errno 36] File name too long'
    naming a cache folder the user never typed. No Hub repo name is longer than 96 characters: such a part is no
    repo id, and the source is a missing path or a repo without that folder."""
    from tests.helpers import run_cli

    (tmp_path / "hub").mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    line = _one_error_line(run_cli("inspect", source))
    assert "File name too long" not in line and str(tmp_path / "hub" / "models--") not in line, line[:300]
    # A local path with a part past 255 bytes cannot be opened at all: said so (ux12), or the missing path.
    assert line.startswith((f"error: {source}: no such file or directory", f"error: {source!r} is not a local path",
                            f"error: {source}: cannot be opened: a name on the path is")), line[:300]


@pytest.mark.parametrize("address", ["hf://org/na\nme", "https://huggingface.co/org/name/tree/ma\tin"])
def test_a_control_character_in_a_hub_address_is_named_with_the_address_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    """`hf://org/na<newline>me` (a pasted line break): the refusal kept the first line of huggingface_hub's message,
    cut at the newline inside the address it quotes ("Invalid HF URI 'hf://org/na", and no reason). It quotes the
    address whole, escaped, and says what is wrong with it."""
    from tests.helpers import run_cli

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = _one_error_line(run_cli("inspect", address))
    assert line == f"error: {address!r}: a Hub address holds no control characters (a newline, a tab): no repo id, " \
                   "revision or file name of the Hub does", line


def test_a_torchserve_manifest_that_inflates_to_gigabytes_is_read_bounded(tmp_path: Path) -> None:
    """A .mar whose MAR-INF/MANIFEST.json is 3 GB of spaces (3 MB deflated): the manifest was inflated whole by
    zipfile's read() and only then cut to 1 MB, 15 s and 6 GB of memory to name the archive. It is read 1 MB at
    most; a real manifest still names its weights file."""
    import json
    import tracemalloc
    import zipfile

    from weightdoctor.checkpoint.foreign import identify

    bomb = tmp_path / "bomb.mar"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("MAR-INF/MANIFEST.json", "w", force_zip64=True) as member:
            for _ in range(200):
                member.write(b" " * (1 << 20))
        archive.writestr("handler.py", "")
    tracemalloc.start()
    try:
        kind = identify(bomb, bomb.read_bytes()[:32])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert kind is not None and "holding the model's weights file beside its handler" in kind
    assert peak < 50 << 20, peak
    real = tmp_path / "real.mar"
    with zipfile.ZipFile(real, "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"serializedFile": "model.pt"}}))
        archive.writestr("model.pt", b"")
    assert "holding model.pt beside its handler" in (identify(real, real.read_bytes()[:32]) or "")


def test_a_cached_index_of_gigabytes_is_not_read_to_see_whether_the_snapshot_holds_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached snapshot's model.safetensors.index.json of 3 GB (sparse): the reader refuses it unread, but the repo
    id's lookup first read it whole to list its shards (holds_weights: 16 s and 6 GB of memory for `inspect
    org/name`). The lookup skips an index the reader would not read; the refusal is the reader's, as before."""
    import json

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--name"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with open(snapshot / "model.safetensors.index.json", "wb") as handle:
        handle.truncate(3 << 30)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from weightdoctor.checkpoint import hub

    read = []
    real_read_text = Path.read_text

    def counting_read_text(self: Path, *args: object, **kwargs: object) -> str:
        read.append(self.name)
        return real_read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", counting_read_text)
    assert hub.index_shards(snapshot / "model.safetensors.index.json") == []
    assert read == []
    from tests.helpers import run_cli

    monkeypatch.setattr(Path, "read_text", real_read_text)
    line = _one_error_line(run_cli("inspect", "org/name"))
    assert "model.safetensors.index.json: is 3,221,225,472 bytes, more than any index or config holds" in line


class _System:
    """Pickled as a call of os.system (never run: the scan refuses the file before anything is unpickled)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, ("true",)


def test_a_pickled_model_that_also_calls_os_system_is_not_told_to_be_loaded_unwarned(tmp_path: Path) -> None:
    """torch.save({'model': model, 'x': <os.system call>}): the whole-model refusal said 'where you trust the file,
    with the code that defines its classes (posix.system) importable, torch.load(path, weights_only=False) rebuilds
    the model', calling os.system one of the model's classes and the load that runs it the way to the weights. The
    hint no longer counts it among the classes, and ends by naming it as what unpickling may call."""
    from tests.helpers import run_cli

    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    torch.save({"model": model, "x": _System()}, tmp_path / "evil.pt")
    line = _one_error_line(run_cli("inspect", tmp_path / "evil.pt"))
    assert "(posix.system) importable" not in line and "defines its classes installed" in line, line
    assert line.endswith("; beware: it also names posix.system, which unpickling may call (torch.load with "
                         "weights_only=False, or any loader of it): load it only if you know why that is there)"), line
    torch.save(model, tmp_path / "plain.pt")
    plain = _one_error_line(run_cli("inspect", tmp_path / "plain.pt"))
    assert "this looks like a whole pickled model" in plain and "beware" not in plain, plain


def test_a_shard_named_with_a_lone_surrogate_is_not_said_to_hold_a_nul(tmp_path: Path) -> None:
    """An index naming the shard `"\\ud800.safetensors"` (valid JSON, no valid file name): os.stat's
    UnicodeEncodeError is a ValueError, which was read as a NUL in the name: 'is not a file name (it holds a NUL
    character)'. It says what the name holds; a NUL is still said to be one."""
    from tests.helpers import run_cli

    for shard, why in (("\\ud800.safetensors", "an unpaired UTF-16 surrogate, not valid Unicode"),
                       ("x\\u0000y.safetensors", "a NUL character")):
        folder = tmp_path / why.split()[1]
        folder.mkdir()
        save_file({"a.weight": torch.ones(2)}, folder / "model-00001.safetensors")
        (folder / "model.safetensors.index.json").write_text(
            '{"metadata": {}, "weight_map": {"a.weight": "model-00001.safetensors", "b.weight": "' + shard + '"}}')
        line = _one_error_line(run_cli("inspect", folder))
        assert f"named by the index is not a file name (it holds {why})" in line, line


@pytest.mark.parametrize(("source", "said"), [
    ("hf://org/name/" + "a" * 300, "the path in the repo has a part of more than 255 bytes, longer than any file"),
    ("https://huggingface.co/org/name/tree/main/" + "a" * 300 + "/unet", "the path in the repo has a part of more"),
    # Without a scheme, a local path whose part is past 255 bytes: one that cannot be opened (ux12's wording).
    ("datasets/org/name/" + "a" * 300, "cannot be opened: a name on the path is 300 bytes long"),
    ("a" * 300 + "x/y@main/z", "cannot be opened: a name on the path is 301 bytes long"),
])
def test_a_path_in_a_cached_repo_past_a_file_names_255_bytes_is_said_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, said: str) -> None:
    """`hf://org/name/` and 300 letters, of a cached repo: the snapshot's folder of that name was looked at (a stat
    in holds_weights, in _cached_file, in the dataset's snapshot) and ENAMETOOLONG ended the run, 'cannot read or
    write: [Errno 36] File name too long' naming a cache path. An address is refused for its path; the same text
    without a scheme, which may be a mistyped local path, is a missing one."""
    from tests.helpers import run_cli

    commit = "0123456789abcdef0123456789abcdef01234567"
    for kind in ("models", "datasets"):
        repo = tmp_path / "hub" / f"{kind}--org--name"
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
        save_file({"a.weight": torch.ones(2)}, repo / "snapshots" / commit / "model.safetensors")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    for command in (["inspect"], ["plan-devices", "--local"]):
        line = _one_error_line(run_cli(*command, source))
        assert line.startswith(f"error: {source[:30]}") and said in line, line[:400]
        assert "File name too long" not in line, line[:400]


def test_a_hundred_thousand_config_group_patterns_are_compiled_within_the_matchings_time() -> None:
    """compressed-tensors config groups with 100,000 `re:` targets: each was compiled and bounded before the
    matching's deadline was even set (10 s for inspect). Compiling has a time limit of its own, the matching's; the
    patterns left when the time is up are not evaluated, so the layers they might claim get unknown bits, and a
    layer named outright keeps its group's."""
    import time

    from weightdoctor.quantized import _PATTERN_SECONDS, _compressed_tensors_layer_bits

    packed = [f"model.layers.{i}.mlp.weight_packed" for i in range(300)]
    groups = {f"g{j}": {"targets": [f"re:.*layers\\.{j}x\\..*"], "weights": {"num_bits": 4 if j % 2 else 8}}
              for j in range(100_000)}
    groups["named"] = {"targets": ["model.layers.0.mlp"], "weights": {"num_bits": 4}}
    # CPU time, not wall time: the limits are wall-clock deadlines, so a loaded machine only uses less CPU before
    # them, while its wall time stretches past them (7.3 s for a 7 s bound on 2 busy cores). Unbounded: ~11 s CPU.
    started = time.process_time()
    found = _compressed_tensors_layer_bits(packed, {"config_groups": groups})
    assert time.process_time() - started < 2 * _PATTERN_SECONDS + 2.0
    assert found[packed[0]] == 4
    assert {found[name] for name in packed[1:]} == {None}


@pytest.mark.parametrize("shard", [".", "sub/.."])
def test_an_index_naming_its_own_folder_as_a_shard_is_not_said_to_point_outside_it(tmp_path: Path, shard: str
                                                                                   ) -> None:
    """`"b.weight": "."` in an index: the refusal said 'index points outside its folder: '.'', of the folder the
    index lies in. It says the index names its own folder as a shard; a name out of it is still said to be."""
    from tests.helpers import run_cli

    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    save_file({"a.weight": torch.ones(2)}, folder / "model-00001.safetensors")
    index = folder / "model.safetensors.index.json"
    index.write_text('{"weight_map": {"a.weight": "model-00001.safetensors", "b.weight": "' + shard + '"}}')
    line = _one_error_line(run_cli("inspect", folder))
    assert line == f"error: {index}: index names its own folder as a shard: {shard!r}", line
    index.write_text('{"weight_map": {"a.weight": "model-00001.safetensors", "b.weight": "../x.safetensors"}}')
    assert "index points outside its folder: '../x.safetensors'" in _one_error_line(run_cli("inspect", folder))
