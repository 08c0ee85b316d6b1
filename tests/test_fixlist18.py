"""Fix list 18: the items today's reviews found and left unfixed.

Covers: `plan-devices --gpu NxSIZE` with N past the 1,024 GPUs plan-devices plans (a list of N sizes was built:
MemoryError at 10^9, an OverflowError past an index); error lines squeezing runs of spaces, so that a pasted
`inspect 'a  b.pt'` named another file; `weightdoctor scan` beside a file ./scan
suggesting `inspect` with no file; the "tensor(s) beside the state dict" and pyannote notes quoting
100,000 names or a megabyte string whole; folded_entries folding 10^6 entries name by name; the compressed-record
refusal advising a torch.load(weights_only=True) that refuses a file holding inert objects (argparse.Namespace);
plan-devices without --disk listing the modules left over `→ disk`; an `_extra_state` refusal in a Hub snapshot
named by its cache path, not the repo id typed.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.helpers import run_cli, run_json, run_subprocess
from weightdoctor.errors import UsageError, WeightDoctorError


@pytest.mark.parametrize(("given", "shown"), [("5000000x24GB", "5,000,000"),
                                               ("99999999999999999999x24GB", "over 10^12"),
                                               ("1025 x 80GiB", "1,025")])
def test_gpu_count_past_the_most_gpus_is_refused_in_one_line(given: str, shown: str) -> None:
    result = run_cli("plan-devices", "no-such-model", "--gpu", given)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"holds {shown} sizes" in lines[0] and "at most 1,024 GPUs" in lines[0]
    assert "OverflowError" not in result.stderr and "unexpected" not in result.stderr


def test_size_list_builds_only_what_it_shows() -> None:
    from weightdoctor.units import refuse_size_list

    with pytest.raises(UsageError, match=r"holds 10,000,000 sizes: plan-devices plans at most 1,024"):
        refuse_size_list("--gpu", "10000000x24GB")
    # Within the bound the repeated form is still spelled out, as before.
    with pytest.raises(UsageError, match=r"holds 1024 sizes: --gpu takes one.*--gpu 24GB --gpu 24GB --gpu 24GB"):
        refuse_size_list("--gpu", "1024x24GB")


def test_pasted_command_in_an_error_keeps_its_spaces(tmp_path: Path) -> None:
    import torch

    torch.save({"w": torch.zeros(2)}, tmp_path / "a  b.pt")
    result = run_subprocess("a  b.pt", cwd=tmp_path)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "is a path, not a command" in line and "inspect 'a  b.pt'" in line
    # Pasted as printed, the suggestion reads the same file.
    pasted = shlex.split(line.split("e.g. ", 1)[1].split(" (commands:")[0])
    assert pasted[-1] == "a  b.pt" and (tmp_path / pasted[-1]).is_file()


def test_error_line_keeps_the_spaces_of_a_path_and_joins_its_lines() -> None:
    err = WeightDoctorError("GLOBAL in u  v.pt at byte 169;\n    nothing was unpickled\n", path="u  v.pt")
    assert err.one_line() == "u  v.pt: GLOBAL in u  v.pt at byte 169; nothing was unpickled"


def test_unknown_command_that_is_a_file_here_is_said_as_a_path(tmp_path: Path) -> None:
    import torch

    torch.save({"w": torch.zeros(2)}, tmp_path / "scan")
    line = run_subprocess("scan", cwd=tmp_path).stderr.strip()
    assert "'scan' is a path, not a command" in line and "weightdoctor inspect scan " in line
    # Followed by a file, `scan` is the other tool's command, as before.
    line = run_subprocess("scan", "model.pt", cwd=tmp_path).stderr.strip()
    assert "No such command 'scan'; inspect scans a pickle" in line and "weightdoctor inspect model.pt" in line


def test_tensors_beside_the_state_dict_note_names_the_first_few(tmp_path: Path) -> None:
    import torch

    siblings = {f"sib{i}": {"t": torch.zeros(1)} for i in range(3000)}
    siblings["x" * 50_000] = {"t": torch.zeros(1)}
    torch.save({"model": {"language_model": {"encoder": {"w": torch.zeros(2)}, **siblings}}}, tmp_path / "m.pt")
    code, report = run_json("inspect", tmp_path / "m.pt", "--key", "model.language_model.encoder")
    assert code == 0
    [note] = [w for w in report["warnings"] if "beside the state dict" in w]
    assert "3,001 tensors beside the state dict are not read, in model.language_model.sib0, " in note
    assert "model.language_model.sib5, and 2,995 more: the weights are split" in note
    assert len(note) < 1000


def test_pyannote_note_cuts_the_strings_the_file_gives(tmp_path: Path) -> None:
    import torch

    torch.save({"state_dict": {"w": torch.zeros(2)},
                "pyannote.audio": {"architecture": {"module": "pyannote.audio.models." + "m" * 100_000,
                                                    "class": "PyanNet"},
                                   "versions": {"pyannote.audio": "3." + "1" * 100_000}}}, tmp_path / "p.pt")
    code, report = run_json("inspect", tmp_path / "p.pt")
    assert code == 0
    [note] = [w for w in report["warnings"] if "pyannote.audio checkpoint" in w]
    assert "a Lightning checkpoint of pyannote.audio.models.mmm" in note and "characters left out" in note
    assert ".PyanNet, saved by pyannote.audio 3.111" in note
    assert f"Model.from_pretrained({str(tmp_path / 'p.pt')!r})" in note
    assert len(note) < 1000


def _folded_name_by_name(entries: list[str]) -> list[str]:
    """folded_entries as it was written before: collapse_indices of each name in turn."""
    from weightdoctor.diff_keys import collapse_indices

    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for entry in entries:
        name, space, description = entry.partition(" (")
        key = collapse_indices(name) + space + description
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, entry)
    return [f"{key} ×{count}" if count > 1 else first[key] for key, count in counts.items()]


def _generated_entries(seed: int, count: int) -> list[str]:
    import random

    rng = random.Random(seed)
    parts = ["model", "layers", "0", "12", "007", "h", "block", "_extra_state", "é", "1.5", "x1", "", "(", " ", "\n"]
    descriptions = ["(None)", "(int: 3)", "(float: 1.5)", "(str: 'a.1')", "(dict, 2 entries)", ""]
    entries = []
    for _ in range(count):
        name = ".".join(rng.choice(parts) for _ in range(rng.randint(1, 6)))
        entries.append(f"{name} {rng.choice(descriptions)}".rstrip())
    return entries


@pytest.mark.parametrize("seed", range(6))
def test_folded_entries_equal_to_folding_name_by_name(seed: int) -> None:
    from weightdoctor.render.inspect import folded_entries

    entries = _generated_entries(seed, 3000)
    if seed % 2:
        entries = [entry.replace("\n", "") for entry in entries]  # the one-pass case (no name holds a newline)
    assert folded_entries(entries) == _folded_name_by_name(entries)


def test_folded_entries_fold_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from weightdoctor import diff_keys
    from weightdoctor.render.inspect import folded_entries

    calls = []
    real = diff_keys.collapse_indices
    monkeypatch.setattr(diff_keys, "collapse_indices", lambda name: calls.append(name) or real(name))
    entries = [f"model.layers.{i % 100}.block{i // 100}._extra_state (int: {i % 7})" for i in range(20_000)]
    assert folded_entries(entries)[:2] == ["model.layers.*.block0._extra_state (int: 0) ×15",
                                           "model.layers.*.block0._extra_state (int: 1) ×15"]
    assert len(calls) < 100  # not one call per entry (10^6 entries took 3.5 s name by name)


def _rezipped(source: Path, target: Path) -> None:
    """`source` (a torch.save zip) zipped again with every member deflated, as a re-zip by hand does."""
    import zipfile

    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))


def test_compressed_record_advice_works_for_a_file_with_inert_objects(tmp_path: Path) -> None:
    import argparse
    import importlib
    import io
    import re

    import torch

    torch.save({"model": {"w": torch.arange(4.0)}, "args": argparse.Namespace(lr=0.1), "buf": io.BytesIO(b"x")},
               tmp_path / "saved.pt")
    _rezipped(tmp_path / "saved.pt", tmp_path / "zipped.pt")
    result = run_cli("inspect", tmp_path / "zipped.pt")
    assert result.exit_code == 2
    assert "is compressed (deflate)" in result.stderr
    block = re.search(r"`with torch\.serialization\.safe_globals\(\[([^\]]*)\]\):`", result.stderr)
    assert block is not None, result.stderr
    names = block.group(1).split(", ")
    assert sorted(names) == ["_io.BytesIO", "argparse.Namespace"]
    # The advice, followed (to another file): torch.load(weights_only=True) alone refuses this file.
    with pytest.raises(Exception, match="argparse.Namespace|Unsupported global"):
        torch.load(tmp_path / "zipped.pt", weights_only=True)
    types = [getattr(importlib.import_module(name.rpartition(".")[0]), name.rpartition(".")[2]) for name in names]
    with torch.serialization.safe_globals(types):
        torch.save(torch.load(tmp_path / "zipped.pt", weights_only=True), tmp_path / "resaved.pt")
    assert run_cli("inspect", tmp_path / "resaved.pt").exit_code == 0


def test_compressed_record_advice_without_inert_objects_is_unchanged(tmp_path: Path) -> None:
    import torch

    torch.save({"w": torch.arange(4.0)}, tmp_path / "saved.pt")
    _rezipped(tmp_path / "saved.pt", tmp_path / "zipped.pt")
    result = run_cli("inspect", tmp_path / "zipped.pt")
    assert result.exit_code == 2
    assert result.stderr.rstrip().endswith(
        f"re-save it to a new file with import torch; torch.save(torch.load({str(tmp_path / 'zipped.pt')!r}, "
        "weights_only=True), "
        f"{str(tmp_path / 'zipped-resaved.pt')!r})")


def test_plan_devices_without_disk_lists_the_left_over_modules_as_not_placed(tmp_path: Path) -> None:
    import json

    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "torch_dtype": "float16"}))
    out = run_cli("plan-devices", config, "--gpu", "100KB", "--cpu", "10KB").stdout
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("disk ") and "nowhere to go" in line)
    listed = [line.split() for line in lines[start + 1:start + 5]]
    assert [words[0] for words in listed] == ["model.layers", "model.norm", "model.rotary_emb", "lm_head"]
    assert all(words[1:3] == ["not", "placed"] for words in listed), listed
    assert "→ disk" not in out
    # With --disk they are placed there, as before.
    allowed = run_cli("plan-devices", config, "--gpu", "100KB", "--cpu", "10KB", "--disk").stdout
    assert "model.layers" in allowed and "→ disk" in allowed and "not placed" not in allowed


def test_extra_state_refusal_in_a_hub_snapshot_names_the_repo_id(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    import torch
    from safetensors.torch import save_file

    class RunsCode:
        def __reduce__(self) -> tuple:
            import os

            return (os.system, ("true",))

    repo = tmp_path / "hub" / "models--org--te"
    commit = "ab" * 20
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    state = torch.frombuffer(bytearray(pickle.dumps(RunsCode())), dtype=torch.uint8)
    save_file({"layer.weight": torch.zeros(2, 2), "layer._extra_state": state}, repo / "blobs" / "0123abcd")
    (repo / "snapshots" / commit / "model.safetensors").symlink_to("../../blobs/0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", "org/te")
    assert result.exit_code == 2
    line = " ".join(result.stderr.split())
    assert line.startswith("error: org/te: model.safetensors: dangerous: the uint8 tensor layer._extra_state holds "
                           "a pickle that names posix.system"), line
    assert f"(the cached snapshot {repo / 'snapshots' / commit})" in line
