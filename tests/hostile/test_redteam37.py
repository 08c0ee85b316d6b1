"""Red team 37: hostile and broken files that earlier rounds left aside.

What held (measured, not all pinned here): safetensors headers whose dtype is written in another case ('f32', 'Bf16')
or with a space ('F32 '), shapes of a 0 beside 2**62 (read, converted, sharded and compared as the library reads them)
or whose product passes 2**64 before the 0, a dimension of 2**63, two tensors of the same range, a range overlapping
its neighbour by one element, an empty tensor at the end or inside another's range, a __metadata__ of a million
entries, names holding a newline, ESC [ or an OSC sequence (refused as control characters); a torch zip whose storage
record is written twice (a copy with other bytes and a right CRC: values read as torch.load reads them, from the first
copy; a copy whose CRC is wrong, first or second: `inspect --verify` finds the mismatch, exit 1, see 4.).
The seeded fuzzer (`scripts/mutation_fuzz.py --formats all --structured --seed 37`, 900 s): see the report.

What did not, each fixed here:
1. A config.json string of megabytes (a 50 MB model_type: config strings are read up to 100 MB) was echoed whole in
   --json: inspect 112 MB (`config` and `config_summary` each held it), plan-devices 50 MB (a warning quoting it),
   check-dtype 2 MB of a 1 MB torch_dtype. inspect --json now cuts each config string past 10,000 characters in its
   middle (saying in it how many characters it left out) and lists the paths it cut in `config_clipped`; the messages
   quote a model_type or a dtype cut at 200 characters.
2. A torch zip read by the torch-free reader, cut short while a caller read one tensor's values (convert --dtype,
   inspect --stats, check-dtype, diff-keys --values): the tensor was a view of the file's map, and the first page past
   the new end raised SIGBUS (exit 135, no message, a temporary output left behind). Its values are read with plain
   file reads into memory of their own now: a read that runs short says so in one line.
3. A weights file of a folder of one's own (in no Hub cache) that is a loop of links, or a link to nothing, was said
   to be "(the cache is damaged); download it again with hf download, given the repo id, or delete the snapshot": no
   cache, no repo, no snapshot. Said as a link to point elsewhere or remove now; a snapshot's is said as before.
4. inspect --verify of a torch zip whose storage record is listed twice checked every copy, but a mismatch of either
   read "archive/data/0" alike and nothing said the record was there twice: the copy is named ("copy 2 of 2") and a
   note says which records the archive lists more than once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import REPO_ROOT, one_error_line, run_cli, run_json

# --- 1. config strings of megabytes in --json --------------------------------------------------------------------


def _folder_with_config(folder: Path, **config: object) -> Path:
    folder.mkdir()
    save_file({"embed.weight": torch.ones(4, 2)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_megabyte_config_string_is_cut_in_inspect_json_and_said_where(tmp_path: Path) -> None:
    folder = _folder_with_config(tmp_path / "m", model_type="x" * 2_000_000, hidden_size=2)
    code, data = run_json("inspect", folder)
    assert code == 0
    for shown in (data["config"]["model_type"], data["config_summary"]["model_type"]):
        assert len(shown) < 10_100 and shown.startswith("x" * 7000) and shown.endswith("x" * 2000)
        assert "(1,990,000 characters left out)" in shown
    assert data["config_clipped"] == ["config.model_type", "config_summary.model_type"]
    assert data["config"]["hidden_size"] == 2  # the rest as the file says
    text = run_cli("inspect", folder)
    assert text.exit_code == 0
    assert "(2,000,000characters,--jsonshows10,000)" in "".join(text.stdout.replace("│", "").split())


def test_a_list_of_long_architectures_and_a_long_key_are_cut_each_where_it_is(tmp_path: Path) -> None:
    folder = _folder_with_config(tmp_path / "m", model_type="bert", architectures=["A", "B" * 20_000],
                                 auto_map={"k" * 30_000: "v"})
    code, data = run_json("inspect", folder)
    assert code == 0
    assert data["config"]["architectures"][0] == "A" and "characters left out" in data["config"]["architectures"][1]
    assert data["config_summary"]["architectures"][0] == "A"
    [key] = data["config"]["auto_map"]
    assert len(key) < 10_100 and "(20,000 characters left out)" in key
    assert data["config_clipped"] == ["config.architectures[1]", "config.auto_map (a key)",
                                      "config_summary.architectures[1]"]


def test_a_genuine_config_is_echoed_whole_and_nothing_said_cut(tmp_path: Path) -> None:
    config = {"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 2, "id2label": {"0": "a" * 9_000}}
    folder = _folder_with_config(tmp_path / "m", **config)
    code, data = run_json("inspect", folder)
    assert code == 0 and data["config"] == config and data["config_clipped"] == []


def test_plan_devices_json_quotes_a_megabyte_model_type_cut(tmp_path: Path) -> None:
    from weightdoctor.errors import MAX_MESSAGE_CHARS

    folder = _folder_with_config(tmp_path / "m", model_type="x" * 1_000_000, hidden_size=2)
    code, data = run_json("plan-devices", folder, "--gpu", "1GB")
    assert code == 0
    [said] = [w for w in data["warnings"] if "does not know model_type" in w]
    assert "characters left out" in said and len(said) < 1000
    assert all(len(w) <= MAX_MESSAGE_CHARS for w in data["warnings"])


def test_check_dtype_json_quotes_a_megabyte_torch_dtype_cut(tmp_path: Path) -> None:
    folder = _folder_with_config(tmp_path / "m", model_type="bert", torch_dtype="z" * 1_000_000)
    code, data = run_json("check-dtype", folder)
    assert code in (0, 1)
    assert data["config_torch_dtype"].startswith("z" * 100) and "characters left out" in data["config_torch_dtype"]
    assert len(data["config_torch_dtype"]) < 300 and len(data["config_agreement"]["message"]) < 1000
    assert len(json.dumps(data)) < 50_000


# --- 2. a torch zip cut short while one tensor's values are read -------------------------------------------------

# Cuts the file named by CUT_SOURCE to 1,000 bytes right after the reader hands out the second tensor, before the
# caller reads its values: what a cut in the middle of that read does to values the caller reads from a map.
_CUT_AFTER_THE_SECOND_VALUE = """
import os
from weightdoctor.checkpoint import reader
asked = [0]
real = reader.Checkpoint.load_tensor
def handing_out(self, *args, **kwargs):
    tensor = real(self, *args, **kwargs)
    asked[0] += 1
    if asked[0] == 2:
        os.truncate(os.environ["CUT_SOURCE"], 1000)
    return tensor
reader.Checkpoint.load_tensor = handing_out
import sys
from weightdoctor.entry import main
sys.argv[0] = "weightdoctor"
main()
"""


def _regular_torch_zip(tmp_path: Path) -> Path:
    """Six 64 KiB tensors as torch.save writes them: read by the torch-free reader."""
    path = tmp_path / "src.bin"
    torch.save({f"layer.{i}.weight": torch.full((128, 128), float(i + 1)) for i in range(6)}, path)
    return path


@pytest.mark.parametrize("args", [
    ["convert", "{src}", "-o", "out.safetensors", "--dtype", "fp16"],
    ["convert", "{src}", "-o", "out.bin", "--to", "bin", "--dtype", "bf16"],
    ["inspect", "{src}", "--stats"],
    ["check-dtype", "{src}"],
    ["diff-keys", "{src}", "{src}", "--values"],
], ids=["convert-fp16", "convert-to-bin-bf16", "inspect-stats", "check-dtype", "diff-keys-values"])
def test_a_torch_zip_cut_short_while_a_tensor_is_read_is_said_not_a_bus_error(tmp_path: Path, args: list[str]) -> None:
    path = _regular_torch_zip(tmp_path)
    argv = [arg.format(src=path) for arg in args]
    done = subprocess.run([sys.executable, "-c", _CUT_AFTER_THE_SECOND_VALUE, *argv], cwd=tmp_path, text=True,
                          capture_output=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "CUT_SOURCE": str(path)})
    assert os.path.getsize(path) == 1000  # the cut happened
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])  # 135 (-7 here) was SIGBUS
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), done.stderr
    assert "file ended before the bytes of storage data/" in lines[0] and "(1,000 bytes now" in lines[0], lines[0]
    assert lines[0].endswith("truncated or changed while reading"), lines[0]
    assert done.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.bin"]  # no output, no temporary


def test_a_torch_zip_cut_short_in_the_middle_of_the_read_itself_raises(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the reader's identity check, the file shrinks to half of the tensor: the file read runs short."""
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.checkpoint.pickle_static import StaticArchive
    from weightdoctor.errors import CorruptCheckpoint

    path = tmp_path / "src.bin"
    torch.save({"w": torch.arange(1 << 18, dtype=torch.float32)}, path)  # one 1 MiB storage
    real = StaticArchive._check_identity

    def cut_after_the_check(self: StaticArchive, fd: int) -> None:
        real(self, fd)
        os.truncate(path, os.path.getsize(path) // 2)

    with open_checkpoint(str(path)) as checkpoint:
        monkeypatch.setattr(StaticArchive, "_check_identity", cut_after_the_check)
        with pytest.raises(CorruptCheckpoint, match="truncated or changed while reading") as raised:
            checkpoint.load_tensor("w")
    assert raised.value.path == str(path) and ", inside the bytes of storage data/0" in raised.value.one_line()


def test_a_torch_zip_left_alone_is_read_into_values_equal_to_torch_loads(tmp_path: Path) -> None:
    path = tmp_path / "src.bin"
    weight = torch.randn(64, 32, generator=torch.Generator().manual_seed(37))
    state = {"w": weight, "wt": weight.t(), "b": torch.arange(5, dtype=torch.int64), "e": torch.empty(0, 3),
             "h": torch.randn(8, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)}
    torch.save(state, path)
    from weightdoctor.checkpoint import open_checkpoint

    with open_checkpoint(str(path)) as checkpoint:
        for name, expected in state.items():
            read = checkpoint.load_tensor(name)
            assert read.dtype == expected.dtype and read.shape == expected.shape and torch.equal(read, expected)
            assert read.stride() == expected.stride()  # the transposed view stays a transposed view
    result = run_cli("convert", path, "-o", tmp_path / "out.safetensors", "--dtype", "fp16")
    assert result.exit_code == 0, result.stderr
    written = load_file(str(tmp_path / "out.safetensors"))
    assert torch.equal(written["w"], weight.half()) and torch.equal(written["wt"], weight.t().half())


def test_tied_names_of_one_storage_are_still_written_once(tmp_path: Path) -> None:
    """The aliases are found by comparing the views of the file's map: `load_tensor` now gives memory of its own."""
    path = tmp_path / "tied.bin"
    shared = torch.randn(16, 4, generator=torch.Generator().manual_seed(2))
    torch.save({"embed.weight": shared, "lm_head.weight": shared, "norm": torch.ones(4)}, path)
    result = run_cli("convert", path, "-o", tmp_path / "out.safetensors")
    assert result.exit_code == 0, result.stderr
    written = load_file(str(tmp_path / "out.safetensors"))
    assert sorted(written) == ["embed.weight", "norm"] and torch.equal(written["embed.weight"], shared)


# --- 3. a loop of links, or a link to nothing, in a folder of one's own -------------------------------------------


@pytest.mark.parametrize("kind", ["loop", "dangling", "loop-through-an-index"])
def test_a_broken_link_in_a_folder_of_ones_own_is_not_called_a_damaged_cache(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    if kind == "loop":
        (folder / "model.safetensors").symlink_to("model.safetensors")
    elif kind == "dangling":
        (folder / "model.safetensors").symlink_to(tmp_path / "moved" / "model.safetensors")
    else:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "a.safetensors"}}))
        (folder / "a.safetensors").symlink_to("b.safetensors")
        (folder / "b.safetensors").symlink_to("a.safetensors")
    line = one_error_line(run_cli("inspect", folder))
    assert "cache" not in line and "hf download" not in line and "snapshot" not in line, line
    assert line.endswith("; point it at the file it stands for or remove it"), line
    said = {"loop": "which leads back to itself (a loop of links)",
            "dangling": "which does not exist (moved or deleted since the link was made)",
            "loop-through-an-index": "which leads back to itself (a loop of links)"}[kind]
    assert said in line, line


def test_a_loop_of_links_in_a_hub_snapshot_is_still_said_of_the_cache(tmp_path: Path) -> None:
    snapshot = tmp_path / "hub" / "models--org--name" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (snapshot / "model.safetensors").symlink_to("model.safetensors")
    line = one_error_line(run_cli("inspect", snapshot))
    assert "(a loop of links) (the cache is damaged); download it again with `hf download org/name" in line, line


# --- 4. inspect --verify of a torch zip whose storage record is written twice ------------------------------------


def _record_written_twice(tmp_path: Path, flipped_copy: int | None) -> Path:
    """A torch.save archive whose record data/0 is listed twice, both copies whole; with `flipped_copy` (0 or 1) a
    bit of that copy's bytes is flipped and its CRC-32 left as it was."""
    import io
    import zipfile

    buffer = io.BytesIO()
    torch.save({"w": torch.arange(16, dtype=torch.float32), "v": torch.ones(4)}, buffer)
    path = tmp_path / "twice.bin"
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out, \
            pytest.warns(UserWarning, match="Duplicate name"):
        for name in source.namelist():
            for _ in range(2 if name.endswith("/data/0") else 1):
                out.writestr(name, source.read(name))
        genuine = source.read(next(n for n in source.namelist() if n.endswith("/data/0")))
    if flipped_copy is not None:
        raw = bytearray(path.read_bytes())
        at = raw.find(genuine)
        if flipped_copy == 1:
            at = raw.find(genuine, at + 1)
        raw[at] ^= 0x40
        path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("flipped_copy", [0, 1])
def test_verify_says_which_copy_of_a_record_written_twice_is_altered(tmp_path: Path, flipped_copy: int) -> None:
    path = _record_written_twice(tmp_path, flipped_copy)
    code, data = run_json("inspect", path, "--verify")
    assert code == 1
    [mismatch] = data["verify"]["mismatches"]
    assert mismatch["member"].endswith(f"/data/0 (copy {flipped_copy + 1} of 2)"), mismatch
    assert data["verify"]["members_checked"] == 9
    assert data["verify"]["notes"] == ["twice.bin: the archive lists archive/data/0 (2 times); each copy was checked"]


def test_verify_of_a_record_written_twice_whole_notes_it_and_finds_nothing(tmp_path: Path) -> None:
    path = _record_written_twice(tmp_path, None)
    code, data = run_json("inspect", path, "--verify")
    assert code == 0 and data["verify"]["mismatches"] == [] and data["verify"]["unreadable"] == []
    assert data["verify"]["notes"] == ["twice.bin: the archive lists archive/data/0 (2 times); each copy was checked"]
