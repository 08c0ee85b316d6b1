"""Red team 33: hostile and broken input in places earlier rounds left aside: the files named by options (`--plot`,
`--map`), zip records given twice, BUILD on a rebuilt tensor, index spellings of one shard, extreme option values.

What held (measured, not all pinned here): safetensors headers whose offsets overlap, or leave a hole, at 8-byte
boundaries (refused in one line naming the tensor); a header naming a tensor twice; convert / shard `--rename` that
maps two names to one (refused, naming both) and catastrophic `--rename`, `--keep-fp32` and `--filter` patterns
((a|a)*$, (\\w+\\.?)+!, (.*.*.*.*.*)*x: refused before they run); `--max` of 0, -0, -1, 0.5B, 1e-30GB, nan, inf,
1e400GB, 400 nines, 0x10MB, 5XB; `--num-labels` 0, -1, 10^9, 10^14; `--sample` 0, -5, 10^22; `--worst` and `--depth`
of -1 and 10^20; `--kv-cache --batch 10^22 --seq-len 10^16`; `--gpu` 0, 1B, 1e30TB, 5,000 sizes in one flag;
`--reserve` 200% / -5% / 1e30TB; any option of 100,000 characters (every error line clipped to about 4 KB); a zip
`.bin` whose data.pkl or a storage record is written twice (read as torch reads it, the first; a dangerous second or
first copy refused), members deflated (refused with the re-save to run) or bzip2 (torch's own error), members with
data descriptors (read); BUILD on a tensor rebuilt by _rebuild_tensor_v2 (another shape, an offset: read as torch
loads it; out of the storage's bounds: torch's error; strides of 0 over 10^12 elements: refused, not materialized);
an index naming one shard as `s.safetensors` and `./s.safetensors`, `sub//s.safetensors`, or two hard links of one
file; a Hub cache whose refs/main names a missing snapshot (said, and the refs that resolve listed), `--revision`
`../../../etc`, `v1\\n`, `refs/v1`, uppercase commits; outputs into the cache's blobs, snapshot or hub folder
(refused as the input); `--map` of JSON nested 100,000 deep, NaN, 1e400, a BOM, UTF-16, /dev/zero.

What did not, each fixed here: `inspect --plot x.png`, x.png a loop of links, ended in "unexpected RuntimeError:
Symlink loop" blamed on the checkpoint; `--plot notes.txt/x.png` (a part of the path a file) in "cannot read or write:
[Errno 20] Not a directory: '.../.weightdoctor-bkph2xln.png'", naming a temporary file and not --plot; `--map` of a
loop of links, through a file, or a name too long in "cannot read or write: [Errno 40] ..." (the catch-all line),
naming neither --map nor what is wrong, where --config says it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import one_error_line, run_cli


def _checkpoint(tmp_path: Path) -> tuple[Path, bytes]:
    """A seeded two-tensor safetensors file, and its bytes (to show it is left as it was)."""
    torch.manual_seed(33)
    path = tmp_path / "model.safetensors"
    save_file({"encoder.layer.0.weight": torch.randn(16, 16), "encoder.layer.1.weight": torch.randn(16, 16)}, path)
    return path, path.read_bytes()


def _link_loop(folder: Path, first: str, second: str) -> Path:
    os.symlink(second, folder / first)
    os.symlink(first, folder / second)
    return folder / first


def test_plot_to_a_loop_of_links_is_refused_naming_the_plot_not_the_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    source, before = _checkpoint(tmp_path)
    loop = _link_loop(tmp_path, "a.png", "b.png")
    result = run_cli("inspect", str(source), "--stats", "--plot", str(loop))
    line = one_error_line(result)
    assert line.startswith(f"error: {loop}: ") and "does not resolve" in line, line
    assert "unexpected" not in line and "RuntimeError" not in line
    assert os.readlink(loop) == "b.png" and os.readlink(tmp_path / "b.png") == "a.png"  # the links left as they were
    assert source.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".weightdoctor-")]


@pytest.mark.parametrize("below", ["x.png", "sub/x.png"])
def test_plot_under_a_file_is_refused_naming_the_plot_and_why(tmp_path: Path, below: str) -> None:
    pytest.importorskip("matplotlib")
    source, before = _checkpoint(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a folder")
    target = notes / below
    result = run_cli("inspect", str(source), "--plot", str(target))
    line = one_error_line(result)
    assert line == f"error: {target}: --plot: cannot write the plot: a part of its path is a file, not a folder"
    assert notes.read_text() == "not a folder" and source.read_bytes() == before


def test_plot_into_a_new_folder_is_still_written(tmp_path: Path) -> None:
    """The refusals above come after the folder is made: a plot into folders that do not exist yet is drawn."""
    pytest.importorskip("matplotlib")
    source, _ = _checkpoint(tmp_path)
    target = tmp_path / "plots" / "run1" / "w.png"
    result = run_cli("inspect", str(source), "--plot", str(target))
    assert result.exit_code == 0, result.stderr
    assert f"plot written to {target}" in result.stderr.replace("\n", "")  # Rich wraps a long path
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _bert(tmp_path: Path) -> Path:
    from tests.helpers import save_tiny_bert

    save_tiny_bert(tmp_path / "bert")
    return tmp_path / "bert"


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bert(tmp_path_factory.mktemp("bert"))


def test_map_that_is_a_loop_of_links_is_said_as_such(bert: Path, tmp_path: Path) -> None:
    loop = _link_loop(tmp_path, "map.json", "other.json")
    result = run_cli("plan-devices", str(bert), "--gpu", "1GB", "--map", str(loop))
    line = one_error_line(result)
    assert line == f"error: {loop}: --map is a symbolic link that does not resolve (a loop of links)"


def test_map_under_a_file_is_said_as_such(bert: Path, tmp_path: Path) -> None:
    (tmp_path / "maps").write_text("{}")
    target = tmp_path / "maps" / "device_map.json"
    result = run_cli("plan-devices", str(bert), "--gpu", "1GB", "--map", str(target))
    line = one_error_line(result)
    assert line == f"error: {target}: --map: a part of its path is a file, not a folder"


def test_map_whose_name_is_too_long_names_map_and_the_reason(bert: Path, tmp_path: Path) -> None:
    target = tmp_path / ("m" * 300 + ".json")
    result = run_cli("plan-devices", str(bert), "--gpu", "1GB", "--map", str(target))
    line = one_error_line(result)
    assert "--map: cannot read it (File name too long)" in line and "[Errno" not in line


def test_a_readable_map_is_still_checked(bert: Path, tmp_path: Path) -> None:
    """The new refusals come only where the file cannot be opened: a map naming every module is planned."""
    device_map = tmp_path / "map.json"
    device_map.write_text(json.dumps({"": 0}))
    result = run_cli("plan-devices", str(bert), "--gpu", "1GB", "--map", str(device_map), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["device_map"].values()) == {0}


def test_rename_of_two_names_to_one_is_refused_before_writing(tmp_path: Path) -> None:
    source, _ = _checkpoint(tmp_path)
    output = tmp_path / "out.safetensors"
    result = run_cli("convert", str(source), "-o", str(output), "--rename", r"layer\.[01]\.=layer.")
    line = one_error_line(result)
    assert "'encoder.layer.0.weight' and 'encoder.layer.1.weight' to 'encoder.layer.weight'" in line
    assert not output.exists()
    assert set(load_file(source)) == {"encoder.layer.0.weight", "encoder.layer.1.weight"}


def test_a_map_of_more_entries_than_any_model_places_is_refused_in_one_line(bert: Path, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000,000 entries (24 MB) took plan-devices 73 s and 1.8 GB, --json 189 s, 3.6 GB and 734 MB of output: each
    was checked and reported. Past 200,000 the map is refused before any is checked."""
    import weightdoctor.plan_devices as plan_devices

    device_map = tmp_path / "map.json"
    device_map.write_text(json.dumps({f"model.layers.{i}": 0 for i in range(plan_devices.MAX_MAP_ENTRIES + 1)}))

    def no_check(*args: object, **kwargs: object) -> object:
        raise AssertionError("the map was checked")

    monkeypatch.setattr(plan_devices, "check_manual_map", no_check)
    result = run_cli("plan-devices", str(bert), "--gpu", "1GB", "--map", str(device_map), "--json")
    line = one_error_line(result)
    assert line == (f"error: {device_map}: holds 200,001 entries, more than any model has modules and parameters to "
                    "place (the limit is 200,000); not checked")


def test_a_map_for_another_model_prints_twenty_unknown_entries_and_json_keeps_all(bert: Path, tmp_path: Path) -> None:
    """A map of 500 entries no module of the model printed 1,000 lines (one a device line, one a finding); 80,000
    took 43 s. Twenty of each are shown and the rest counted; --json still lists every one."""
    device_map = tmp_path / "map.json"
    # Names that are no `prefix.N` run: consecutive ones (`block.0`, `block.1`) share one device line already
    entries = {"": 0, **{f"other_model.block_{i}": 0 for i in range(500)}}
    device_map.write_text(json.dumps(entries))
    result = run_cli("plan-devices", str(bert), "--gpu", "1GB", "--map", str(device_map))
    assert result.exit_code == 1, result.stderr
    shown = [line for line in result.stdout.splitlines() if "unknown-module: 'other_model.block_" in line]
    assert shown == [f"error unknown-module: 'other_model.block_{i}' is no module or parameter of the model"
                     for i in range(20)]
    assert "error unknown-module: and 480 more like these (--json lists every one)" in result.stdout
    assert "and 500 entries of the map that are no module of the model" in result.stdout
    assert "other_model.block_20" not in result.stdout  # no device line for the entries left out either
    report = json.loads(run_cli("plan-devices", str(bert), "--gpu", "1GB", "--map", str(device_map), "--json").stdout)
    unknown = [f["tensor"] for f in report["findings"] if f["code"] == "unknown-module"]
    assert unknown == [f"other_model.block_{i}" for i in range(500)]


def test_a_map_with_a_few_unknown_entries_still_lists_them_all(bert: Path, tmp_path: Path) -> None:
    device_map = tmp_path / "map.json"
    device_map.write_text(json.dumps({"": 0, "nope": 0, "also_nope": 0}))
    result = run_cli("plan-devices", str(bert), "--gpu", "1GB", "--map", str(device_map))
    assert result.exit_code == 1, result.stderr
    assert "unknown-module: 'nope'" in result.stdout and "unknown-module: 'also_nope'" in result.stdout
    assert "more like these" not in result.stdout and "no module of the model (" not in result.stdout
