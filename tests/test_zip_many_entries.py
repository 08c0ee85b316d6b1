"""Zip archives with very many entries: one command parses each central directory once (redteam12's 1M-entry zip)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from fixtures.zips import write_many_entry_zip as _many_entry_zip
from tests.helpers import run_cli
from weightdoctor.security import archive


class _Counts:
    """How often zipfile parsed a central directory and how many local headers were read, during one command."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.zipfile_parses = 0
        self.local_headers = 0
        real_contents = zipfile.ZipFile._RealGetContents  # type: ignore[attr-defined]
        real_local = archive._local_header

        def counting_contents(zf: zipfile.ZipFile) -> None:
            self.zipfile_parses += 1
            real_contents(zf)

        def counting_local(handle: Any, offset: int) -> Any:
            self.local_headers += 1
            return real_local(handle, offset)

        monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", counting_contents)
        monkeypatch.setattr(archive, "_local_header", counting_local)


def test_inspect_parses_a_large_central_directory_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: zipfile parsed it 4 times (format detection, scan, static loader, torch.export check) and every local
    # header was read 6 times; a 54 MB zip of 1,000,000 entries took 72 s.
    source = _many_entry_zip(tmp_path / "many.bin", 3000)
    counts = _Counts(monkeypatch)
    result = run_cli("inspect", str(source))
    assert result.exit_code == 2
    assert "many.bin" in result.stderr and "no data.pkl record" in result.stderr
    assert counts.zipfile_parses == 1
    assert counts.local_headers == 3000


def test_torch_save_zip_reads_as_before_with_one_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    state = {f"layers.{i}.weight": torch.randn(2, 3, generator=generator) for i in range(400)}
    source = tmp_path / "pytorch_model.bin"
    torch.save(state, source)
    counts = _Counts(monkeypatch)
    result = run_cli("inspect", str(source), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["num_tensors"] == 400
    assert report["num_params"] == 400 * 6
    assert counts.zipfile_parses == 1
    with zipfile.ZipFile(source) as zf:
        assert counts.local_headers == len(zf.namelist())


def test_cache_lives_only_as_long_as_the_command(tmp_path: Path) -> None:
    # A file rewritten in place within one mtime tick keeps its (inode, size, mtime) key: outside a command every
    # read sees the file as it is now, and a command drops what it cached when it ends.
    source = _many_entry_zip(tmp_path / "a.bin", 5, prefix="x/")
    with archive.command_cache(), open(source, "rb") as handle:
        first = archive.read_layout(handle, source.stat().st_size)
        first.members.clear()  # a caller changing its copy does not change what later calls get
        again = archive.read_layout(handle, source.stat().st_size)
    assert [m.name for m in again.members] == [f"x/{i}" for i in range(5)]
    assert not archive._LAYOUT_CACHE and not archive._INFOS_CACHE
    _many_entry_zip(source, 5, prefix="y/")
    with open(source, "rb") as handle:
        assert [m.name for m in archive.read_layout(handle, source.stat().st_size).members][0] == "y/0"
    assert archive.zipfile_names(source)[-1] == "y/4"
