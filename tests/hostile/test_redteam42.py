"""Red team 42: metadata values read whole, the fuzzer's import-time blind spot, and a fuzz round on the readers
changed last (split GGUF sets, GGUF dequantization, HQQ qmodel.pt, torch.ao pickles, fairseq dicts, the Hub cache).

What did not hold, each fixed here:
1. A safetensors `__metadata__` value of 60 MB was kept whole for the whole run (the header is read whole, as the
   safetensors library reads it, within its 100 MB bound): inspect --json printed all 60 MB, and every command held
   it (peak RSS, measured with /usr/bin/time: diff-keys A B of two such files 267 -> 207 MB, plan-devices 517 -> 459
   MB, inspect --json 279 -> 212 MB). A value past `MAX_METADATA_VALUE_CHARS` (1 MiB) is kept cut in its middle now,
   said in one warning line; convert and shard read it again to carry it whole. A GGUF string value was bounded
   already (4,096 bytes kept: inspect of a 60 MB one peaks at 52 MB, as of a small file).
2. The fuzzer's hang check never bounded the run that imports a command's modules: red team 41's test ran
   plan-devices once, unchecked, before the fuzzer; a mutant whose run was the first to reach an import had that
   import counted as its own hang; and the model seeds, written by transformers in the fuzzer's process, imported it
   for every command. Each format's first mutant is now preceded by every command on the unmutated seed, held to
   `FIRST_CALL_S` / `FIRST_CALL_MEMORY_MB` and checked as a mutant is, and each command's first such run is also run
   cold in a new process (`cold_start`: plan-devices 15 to 17 s and 335 MB, inspect 0.6 s and 35 MB, measured).
3. HQQ qmodel.pt and StyleTTS 2 files are read as `<module>.<name>`: two entries reaching one name had one silently
   replace the other. Refused in one line now.

What held (measured): the fuzzer on red team 42's seeds (`--formats ggufsplit,ggufq,hqq,fairseq --seed 4201`, 766
mutants, 420 s), on every format (`--formats all --structured --seed 4242`, 730 mutants, 420 s) and, cold runs
included, on `--formats gguf,ggufsplit,ggufq,hqq,fairseq,quant,hub,stmeta --structured --seed 4243` (623 mutants,
300 s; plan-devices cold 16 s and 352 MB, the slowest and largest): no finding. By
hand: GGUF blocks of random bytes (NaN / infinite scales) of all ten dequantized types, element counts not a multiple
of the block, dims whose product overflows, type ids removed from ggml or unknown, a file cut inside the data; split
sets whose part is a FIFO, a folder, a link to itself / to part 1 / to /dev/zero / to nowhere, empty, magic only, or
in another case; HQQ meta of huge, negative or string shapes, odd nbits; fairseq dicts of an empty or list model and
fairscale shard metadata of negative or huge shapes; torch.ao per-channel views and quint4x2; a Hub cache whose refs
lead outside, are FIFOs or link loops, whose snapshot links to itself or /, whose blob is a FIFO, a loop or
/dev/zero: every command ends in a report or one error line, none blocked.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests.helpers import run_cli
from tests.hostile.conftest import run_seeded_mutants

# --- 1. a metadata value of megabytes --------------------------------------------------------------------------------


def _long_metadata(path: Path, length: int = 3_000_000, others: int = 0) -> Path:
    """A safetensors file whose metadata holds `blob`, `length` characters (its first and last marked), beside short
    values and `others` more long ones."""
    blob = "<" + "x" * (length - 2) + ">"
    metadata = {"format": "pt", "blob": blob, "ss_network_module": "networks.lora",
                **{f"long{i}": "y" * (length // 2) for i in range(others)}}
    save_file({"a.weight": torch.randn(4, 4, generator=torch.Generator().manual_seed(42))}, str(path),
              metadata=metadata)
    return path


def test_a_long_metadata_value_is_kept_cut_and_said_in_one_line(tmp_path: Path) -> None:
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.checkpoint.safetensors_format import MAX_METADATA_VALUE_CHARS

    path = _long_metadata(tmp_path / "m.safetensors")
    kept = open_checkpoint(path).metadata
    assert kept is not None and kept["ss_network_module"] == "networks.lora"
    # 3,000,000 characters held before
    assert len(kept["blob"]) <= MAX_METADATA_VALUE_CHARS + 100, len(kept["blob"])
    assert kept["blob"].startswith("<xxx") and kept["blob"].endswith("xxx>")
    assert f" ... ({3_000_000 - MAX_METADATA_VALUE_CHARS:,} characters left out) ... " in kept["blob"]

    done = run_cli("inspect", path, "--json")
    assert done.exit_code == 0, done.stderr
    assert len(done.stdout) < MAX_METADATA_VALUE_CHARS + 100_000, len(done.stdout)  # 3,001,xxx before
    report = json.loads(done.stdout)
    assert report["metadata"]["blob"] == kept["blob"]
    said = ("m.safetensors: metadata 'blob' holds 3,000,000 characters: kept and shown cut to 1,048,576 (convert and "
            "shard carry it whole)")
    assert said in report["warnings"], report["warnings"]
    assert done.stderr == ""  # --json: said in the report
    done = run_cli("inspect", path)
    assert done.exit_code == 0, done.stderr
    assert done.stderr.strip().splitlines() == [f"warning: {said}"], done.stderr
    assert len(done.stdout) < 20_000, len(done.stdout)


def test_several_long_metadata_values_are_said_in_one_line(tmp_path: Path) -> None:
    path = _long_metadata(tmp_path / "m.safetensors", length=2_200_000, others=2)
    done = run_cli("inspect", path, "--json")
    assert done.exit_code == 0, done.stderr
    lines = json.loads(done.stdout)["warnings"]
    assert lines == ["m.safetensors: metadata 'blob' holds 2,200,000 characters (2 other values too): kept "
                     "and shown cut to 1,048,576 (convert and shard carry them whole)"], lines
    assert all(" characters left out) ... " in value for key, value in json.loads(done.stdout)["metadata"].items()
               if key.startswith(("blob", "long")))


@pytest.mark.parametrize("command", [
    ["convert", "{src}", "-o", "{tmp}/out.safetensors"],
    ["convert", "{src}", "-o", "{tmp}/out.safetensors", "--dtype", "fp16"],
    ["shard", "{src}", "-o", "{tmp}/out", "--max", "1GB"],
], ids=["convert", "convert-fp16", "shard"])
def test_convert_and_shard_carry_a_long_metadata_value_whole(tmp_path: Path, command: list[str]) -> None:
    source = _long_metadata(tmp_path / "m.safetensors", others=1)
    with safe_open(str(source), framework="pt") as handle:
        expected = handle.metadata()
    done = run_cli(*[word.format(src=source, tmp=tmp_path) for word in command])
    assert done.exit_code == 0, done.stderr
    written = tmp_path / "out.safetensors" if command[0] == "convert" else tmp_path / "out" / "model.safetensors"
    with safe_open(str(written), framework="pt") as handle:
        carried = handle.metadata()
    assert carried["blob"] == expected["blob"] and carried["long0"] == expected["long0"]
    assert carried["ss_network_module"] == "networks.lora"


def test_a_file_changed_before_its_long_metadata_is_read_again_is_refused(tmp_path: Path) -> None:
    import os

    from weightdoctor.checkpoint.safetensors_format import read_header, read_whole_metadata
    from weightdoctor.errors import CorruptCheckpoint

    path = _long_metadata(tmp_path / "m.safetensors")
    header = read_header(path, path.name)
    assert [key for key, _ in header.metadata_cut] == ["blob"]
    assert read_whole_metadata(path, header)["blob"] == "<" + "x" * 2_999_998 + ">"
    os.utime(path, ns=(header.identity[3] + 10**9, header.identity[3] + 10**9))
    with pytest.raises(CorruptCheckpoint, match="the file changed since its header was read"):
        read_whole_metadata(path, header)


def test_a_short_metadata_value_is_not_read_again(tmp_path: Path) -> None:
    from weightdoctor.checkpoint.safetensors_format import read_header, read_whole_metadata

    path = tmp_path / "m.safetensors"
    save_file({"a": torch.zeros(2)}, str(path), metadata={"format": "pt", "k": "v" * 1000})
    header = read_header(path, path.name)
    assert header.metadata_cut == ()
    assert read_whole_metadata(path, header) is header.metadata


def test_a_long_gguf_string_value_is_kept_cut(tmp_path: Path) -> None:
    """GGUF held already (4,096 bytes kept of a string): pinned beside the safetensors fix."""
    from fixtures.gguf_files import STRING, Tensor, write_gguf

    path = write_gguf(tmp_path / "m.gguf", {"general.architecture": (STRING, "llama"),
                                           "general.description": (STRING, "d" * 3_000_000)},
                      [Tensor("token_embd.weight", [32, 4], "F32")])
    done = run_cli("inspect", path, "--json")
    assert done.exit_code == 0, done.stderr
    assert len(done.stdout) < 100_000
    assert json.loads(done.stdout)["gguf"]["metadata"]["general.description"].endswith("... (3,000,000 bytes)")


# --- 2. the fuzzer's runs that import: checked, on the unmutated seed -----------------------------------------------

def test_each_formats_first_mutant_is_preceded_by_a_checked_run_on_its_seed(
        fuzz: ModuleType, tmp_path: Path, alarm: None) -> None:
    import random

    seeds = fuzz.build_recent_seeds(tmp_path / "seeds", ("int4", "stmeta"))
    fuzzer = fuzz.Fuzzer(tmp_path / "out", seeds, cold=True)
    for n in range(2):
        for fmt in ("int4", "stmeta"):
            fuzzer.run_mutant(fmt, random.Random(f"42-{fmt}-{n}"), tmp_path / "work")
    assert fuzzer.findings == {}, list(fuzzer.findings.values())
    assert fuzzer.seeds_run == {"int4", "stmeta"}
    assert dict(fuzzer.counts) == {"int4": 2, "stmeta": 2}  # the seed runs are not mutants
    commands = {"inspect", "inspect --stats", "check-dtype", "diff-keys --values", "convert", "shard", "plan-devices",
                "plan-devices --kv-cache", "convert --to bin", "convert --dtype fp16"}
    assert set(fuzzer.first_call_s) == commands and set(fuzzer.first_call_mb) == commands
    assert all(0 < seconds < fuzz.FIRST_CALL_S for seconds in fuzzer.first_call_s.values()), fuzzer.first_call_s
    # each command once in a new process, on the first seed: its imports its own, its peak RSS its own (plan-devices
    # imports transformers and accelerate: 15 to 17 s and 335 MB measured on two busy cores; inspect 35 MB)
    assert set(fuzzer.cold_s) == commands and set(fuzzer.cold_mb) == commands
    assert all(0 < seconds < fuzz.FIRST_CALL_S for seconds in fuzzer.cold_s.values()), fuzzer.cold_s
    assert all(20 < peak < fuzz.COLD_START_MB for peak in fuzzer.cold_mb.values()), fuzzer.cold_mb
    assert fuzzer.cold_mb["plan-devices"] > fuzzer.cold_mb["inspect"], fuzzer.cold_mb
    # the seed runs' exits: every command read the genuine int4 file or refused it as a format it does not write
    assert fuzzer.outcomes["inspect:0"] >= 2


def test_a_slow_first_run_on_the_seed_is_a_finding(fuzz: ModuleType, tmp_path: Path, alarm: None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A run on the seed past FIRST_CALL_S (its imports included) is a hang like a mutant's; the mutants' own runs
    keep HANG_S."""
    import random
    import time

    monkeypatch.setattr(fuzz, "FIRST_CALL_S", 1)
    seeds = fuzz.build_recent_seeds(tmp_path / "seeds", ("int4",))
    fuzzer = fuzz.Fuzzer(tmp_path / "out", seeds)
    real_invoke = fuzzer.runner.invoke
    slowed: list[str] = []

    def slow_first_inspect(app: object, args: list[str], **kwargs: object) -> object:
        if args[:1] == ["inspect"] and not slowed:
            slowed.append(args[0])
            time.sleep(3)  # an import of 3 s: the 1 s alarm ends it
        return real_invoke(app, args, **kwargs)

    monkeypatch.setattr(fuzzer.runner, "invoke", slow_first_inspect)
    fuzzer.run_mutant("int4", random.Random("42-int4-0"), tmp_path / "work")
    hangs = [entry for entry in fuzzer.findings.values() if entry["kind"] == "hang"]
    assert len(hangs) == 1 and hangs[0]["mutation"] == "unmutated", list(fuzzer.findings.values())
    assert "on the unmutated seed, imports included (1 s allowed)" in hangs[0]["text"], hangs[0]


# --- 3. the round's findings: entries joined to one name -------------------------------------------------------

def _hqq_layer(generator: torch.Generator) -> dict:
    """An HQQLinear's state dict as hqq 0.1 saves it (4-bit, groups of 64, a 64 x 16 weight)."""
    return {"W_q": torch.randint(0, 255, (32, 16), dtype=torch.uint8, generator=generator),
            "meta": {"nbits": 4, "group_size": 64, "shape": torch.Size([64, 16]), "axis": 0, "packing": "4bit_u8",
                     "scale": torch.rand(1, 16, generator=generator), "zero": torch.rand(1, 16, generator=generator)},
            "bias": None}


@pytest.mark.parametrize("case", ["meta-holds-W_q", "module-and-key-join", "int-and-str-key"])
def test_an_hqq_qmodel_whose_entries_join_to_one_name_is_refused(tmp_path: Path, case: str) -> None:
    """HQQ's entries are read as `<module>.<name>`: two of them reaching one name had one silently replace the other
    (inspect listed `m.q.W_q` as the meta's 3 values, the layer's packed weights gone; `a.b.c` as module a.b's)."""
    generator = torch.Generator().manual_seed(42)
    layer = _hqq_layer(generator)
    if case == "meta-holds-W_q":
        layer["meta"]["W_q"] = torch.zeros(3)
        weights, said = {"m.q": layer}, "entry 'W_q' of module 'm.q' and entry 'meta' / 'W_q' of module 'm.q'"
        name = "m.q.W_q"
    elif case == "module-and-key-join":
        weights = {"a": {**layer, "b.c": torch.ones(2)}, "a.b": {"c": torch.zeros(5)}}
        said, name = "entry 'b.c' of module 'a' and entry 'c' of module 'a.b'", "a.b.c"
    else:
        weights = {"m": {**layer, 1: torch.ones(2), "1": torch.zeros(5)}}
        said, name = "entry '1' of module 'm' and entry '1' of module 'm'", "m.1"
    path = tmp_path / "qmodel.pt"
    torch.save(weights, path)
    for command in (["inspect", path], ["check-dtype", path], ["convert", path, "-o", tmp_path / "out.safetensors"]):
        done = run_cli(*command)
        assert done.exit_code == 2, (command[0], done.exit_code, done.stdout[-2000:])
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: HQQ's qmodel.pt"), lines
        assert f"{said} are both read as {name!r}" in lines[0], lines[0]
    assert not (tmp_path / "out.safetensors").exists()


def test_a_genuine_hqq_qmodel_still_reads(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(42)
    weights = {"model.layers.0.q_proj": _hqq_layer(generator), "model.norm": {"weight": torch.ones(16)}}
    torch.save(weights, tmp_path / "qmodel.pt")
    done = run_cli("inspect", tmp_path / "qmodel.pt", "--json")
    assert done.exit_code == 0, done.stderr
    names = {row["name"] for row in json.loads(done.stdout)["tensors"]}
    assert {"model.layers.0.q_proj.W_q", "model.layers.0.q_proj.scale", "model.norm.weight"} <= names, names


def test_a_styletts2_file_whose_modules_join_to_one_name_is_refused(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(42)
    net = {part: {"linear.weight": torch.randn(2, 2, generator=generator)}
           for part in ("bert", "bert_encoder", "predictor", "decoder", "text_encoder")}
    net["bert"]["encoder.layer"] = torch.ones(3)
    net["bert.encoder"] = {"layer": torch.zeros(4)}
    torch.save({"net": net, "epoch": 3}, tmp_path / "epoch_2nd_00003.pth")
    done = run_cli("inspect", tmp_path / "epoch_2nd_00003.pth")
    assert done.exit_code == 2, done.stdout[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "a StyleTTS 2 / Kokoro file of one state dict per module: entry 'encoder.layer' of " \
        "module 'bert' and entry 'layer' of module 'bert.encoder' are both read as 'bert.encoder.layer'" in lines[0], \
        lines


# --- the fuzzer's new seeds ------------------------------------------------------------------------------------------

def test_the_rt42_seeds_are_read_as_their_tools_wrote_them(fuzz: ModuleType, tmp_path: Path) -> None:
    seeds = fuzz.build_rt42_seeds(tmp_path / "seeds")
    assert sorted(seeds) == sorted(fuzz.RT42_FORMATS)
    parts = sorted(p.name for p in seeds["ggufsplit"].parent.iterdir())
    assert parts == [f"tiny-0000{n}-of-00003.gguf" for n in (1, 2, 3)]
    assert fuzz.mutable_files("ggufsplit", seeds["ggufsplit"]) == sorted(seeds["ggufsplit"].parent.iterdir())
    expected = {"ggufsplit": 5, "ggufq": 10, "hqq": None, "fairseq": 4}
    for fmt, path in seeds.items():
        done = run_cli("inspect", path, "--json")
        assert done.exit_code == 0, (fmt, done.stderr)
        report = json.loads(done.stdout)
        if expected[fmt] is not None:
            assert report["num_tensors"] == expected[fmt], (fmt, report["num_tensors"])
    done = run_cli("inspect", seeds["ggufq"], "--json")
    types = set(json.loads(done.stdout)["gguf"]["tensor_types"])
    assert types == {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}, types
    hqq = json.loads(run_cli("inspect", seeds["hqq"], "--json").stdout)
    names = {row["name"] for row in hqq["tensors"]}
    assert {"model.layers.0.self_attn.q_proj.W_q", "model.layers.0.mlp.up_proj.W_q", "model.norm.weight"} <= names
    fairseq = json.loads(run_cli("inspect", seeds["fairseq"], "--json").stdout)
    assert fairseq["nested_key"] == "model", fairseq["nested_key"]


def test_seeded_mutants_of_the_rt42_formats_end_in_a_report_or_one_error_line(
        fuzz: ModuleType, tmp_path: Path, alarm: None) -> None:
    """Two seeded mutants of each of red team 42's seeds (after a run on each seed), every command on each."""
    seeds = fuzz.build_rt42_seeds(tmp_path / "seeds")
    fuzzer = fuzz.Fuzzer(tmp_path / "out", seeds)
    run_seeded_mutants(fuzzer, fuzz.RT42_FORMATS, 2, "42", tmp_path / "work")
    assert fuzzer.seeds_run == set(fuzz.RT42_FORMATS)


# --- what held, pinned: a Hub cache laid out by hand ---------------------------------------------------------------

def _blob_of(snapshot: Path, name: str) -> Path:
    return (snapshot / name).resolve()


_HUB_LAYOUTS = {
    "ref-outside": lambda storage, snapshot: (storage / "refs" / "main").write_text("../../../../../etc"),
    "ref-fifo": lambda storage, snapshot: ((storage / "refs" / "main").unlink(), os.mkfifo(storage / "refs" / "main")),
    "ref-link-loop": lambda storage, snapshot: ((storage / "refs" / "main").unlink(),
                                                os.symlink("main", storage / "refs" / "main")),
    "snapshot-loop": lambda storage, snapshot: (shutil.rmtree(snapshot), os.symlink(snapshot.name, snapshot)),
    "snapshot-to-root": lambda storage, snapshot: (shutil.rmtree(snapshot), os.symlink("/", snapshot)),
    "blob-fifo": lambda storage, snapshot: (_blob_of(snapshot, "model.safetensors").unlink(),
                                            os.mkfifo(_blob_of(snapshot, "model.safetensors"))),
    "blob-loop": lambda storage, snapshot: (_blob_of(snapshot, "model.safetensors").unlink(),
                                            os.symlink(_blob_of(snapshot, "model.safetensors").name,
                                                       _blob_of(snapshot, "model.safetensors"))),
    "config-fifo": lambda storage, snapshot: (_blob_of(snapshot, "config.json").unlink(),
                                              os.mkfifo(_blob_of(snapshot, "config.json"))),
}


@pytest.mark.parametrize("layout", sorted(_HUB_LAYOUTS))
def test_a_hub_cache_laid_out_by_hand_is_refused_in_one_line(tmp_path: Path, layout: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A ref out of the cache, a FIFO or a link loop for a ref, a snapshot linked to itself or to /, a blob that is a
    FIFO or a link to itself: every command said so in one line, none blocked on a FIFO (held before; pinned)."""
    from safetensors.torch import save

    from fixtures.hub_cache import commit_of, repo_storage, write_snapshot

    cache = tmp_path / "hub"
    body = save({"a.weight": torch.randn(4, 4, generator=torch.Generator().manual_seed(42))})
    config = json.dumps({"model_type": "bert", "architectures": ["BertModel"]}).encode()
    snapshot = write_snapshot(cache, "org/m", commit_of(layout), {"model.safetensors": body, "config.json": config})
    _HUB_LAYOUTS[layout](repo_storage(cache, "org/m"), snapshot)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for command in (["inspect", "org/m"], ["convert", "org/m", "-o", tmp_path / "out.safetensors"]):
        done = run_cli(*command)
        assert done.exit_code == 2, (command[0], done.exit_code, done.stdout[-1000:])
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not (tmp_path / "out.safetensors").exists()
