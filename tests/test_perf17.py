"""perf17: the scan's walk of data.pkl serves the record-size check after torch.load, and the garbage collector is
paused while a pickle checkpoint is scanned and read; what each command says is unchanged."""

from __future__ import annotations

import gc
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import run_cli
from weightdoctor.security import opcodes
from weightdoctor.security.scan import persistent_ids, scan_bytes, scan_file


def _torch_read_save(path: Path, size: int = 4) -> Path:
    """A torch.save zip that the torch-free reader hands to torch.load: a bytes value beside the tensors."""
    generator = torch.Generator().manual_seed(17)
    torch.save({"w": torch.randn(size, generator=generator), "b": torch.randn(2, generator=generator),
                "note": b"blob:perf17"}, path)
    return path


def _data_pkl(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))


def test_inspect_walks_data_pkl_once_where_torch_loads_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """The record-size check after torch.load walked data.pkl a second time for its storage ids (a torch.save of
    100,000 str and bytes values: inspect took 4.1 s of CPU, 3.6 s walking it once); it now takes the scan's walk of
    the same bytes."""
    path = _torch_read_save(tmp_path / "model.bin")
    data = _data_pkl(path)
    walked: list[bytes] = []
    real_walk = opcodes._walk

    def counting_walk(handle: Any, end: int, walk: opcodes.PickleWalk, watch: frozenset[str]) -> opcodes.PickleWalk:
        if isinstance(handle, io.BytesIO):
            walked.append(bytes(handle.getbuffer()))
        return real_walk(handle, end, walk, watch)

    monkeypatch.setattr(opcodes, "_walk", counting_walk)
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["num_tensors"] == 2
    assert sorted(t["name"] for t in report["tensors"]) == ["b", "w"]
    assert walked.count(data) == 1, f"data.pkl walked {walked.count(data)} times"


def test_a_rezipped_archive_is_still_refused_once_the_scan_has_walked_its_data_pkl(tmp_path: Path) -> None:
    """check_record_sizes reads the storage ids from the scan's walk: a deflated record is refused as before."""
    saved = _torch_read_save(tmp_path / "saved.pt")
    zipped = tmp_path / "zipped.pt"
    with zipfile.ZipFile(saved) as zin, zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    result = run_cli("inspect", str(zipped), "--json")
    assert result.exit_code == 2 and result.stdout == "", result.stdout
    assert "storage record saved/data/0 is compressed (deflate), as torch.save never writes it" in result.stderr, (
        result.stderr)
    assert (f"re-save it to a new file with import torch; torch.save(torch.load({str(zipped)!r}, weights_only=True), "
            f"{str(tmp_path / 'zipped-resaved.pt')!r})") in result.stderr


def test_persistent_ids_are_the_scans_for_the_same_bytes_and_a_new_walk_for_others(tmp_path: Path) -> None:
    """Keyed by the bytes themselves: another data.pkl (a file rewritten after its scan) is walked anew."""
    first = _torch_read_save(tmp_path / "first.bin", size=4)
    second = _torch_read_save(tmp_path / "second.bin", size=9)
    first_data, second_data = _data_pkl(first), _data_pkl(second)
    assert scan_bytes(first.read_bytes()).verdict == "safe"
    fresh_first = opcodes.walk_pickle(io.BytesIO(first_data), len(first_data)).persistent_ids
    fresh_second = opcodes.walk_pickle(io.BytesIO(second_data), len(second_data)).persistent_ids
    kept = persistent_ids(first_data)
    assert kept is persistent_ids(first_data)  # the scan's own list, not a new walk
    assert [pid[2:] for pid in kept] == [pid[2:] for pid in fresh_first] == [("0", "cpu", 4), ("1", "cpu", 2)]
    assert [pid[2:] for pid in persistent_ids(second_data)] == [pid[2:] for pid in fresh_second] == [
        ("0", "cpu", 9), ("1", "cpu", 2)]


@pytest.mark.parametrize("hostile", [False, True])
def test_the_collector_runs_again_after_a_scan_and_a_read_refused_or_not(tmp_path: Path, hostile: bool) -> None:
    """The scan, the layout read and load_pickle pause the cyclic collector; each restores it, a refusal too."""
    path = _torch_read_save(tmp_path / "model.bin")
    if hostile:
        path = tmp_path / "hostile.pkl"
        path.write_bytes(b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R.")
    assert gc.isenabled()
    report = scan_file(path)
    assert gc.isenabled()
    assert report.verdict == ("dangerous" if hostile else "safe")
    result = run_cli("inspect", str(path))
    assert gc.isenabled()
    if hostile:
        assert result.exit_code == 2 and "dangerous" in result.stderr and "posix.system" in result.stderr
    else:
        assert result.exit_code == 0 and "w" in result.stdout, result.stderr
