"""A DCP shard filled with zip local-header signatures: each one's member name was read (a seek and a read per
four bytes of shard) until 1 GiB was read or 4,096 data.pkl found, none of which come: 256 MiB of signatures took
115 s to refuse the folder. Every header now counts toward the bound, a sixteenth of a pickle each."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from weightdoctor.checkpoint import reader


class _CountingFile(io.FileIO):
    reads = 0

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        _CountingFile.reads += 1
        return super().read(size)


def test_a_shard_of_header_signatures_reads_a_bounded_number_of_names(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    headers = 1 << 18  # 262,144 signatures, 1 MiB
    (folder / "__0_0.distcp").write_bytes(b"PK\x03\x04" * headers)
    (folder / ".metadata").write_bytes(b"\x80\x02}q\x00.")

    def counting_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        assert mode == "rb"
        return _CountingFile(path, "r")

    monkeypatch.setattr(reader, "open", counting_open, raising=False)
    _CountingFile.reads = 0
    reader._refuse_unsafe_dcp_objects(folder)
    # Two reads per header examined (its lengths, its name), within the bound of 4,096 pickles' worth.
    bound = reader._MAX_DCP_PICKLES * reader._DCP_PICKLE_COST
    assert bound < headers
    assert _CountingFile.reads <= 2 * bound + 16, _CountingFile.reads


def test_genuine_archives_after_other_members_are_still_scanned(tmp_path: Path) -> None:
    """A torch.save archive's own members (data/0, version, byteorder) before a hostile data.pkl of another archive
    cost a sixteenth each: the hostile one is reached and refused."""
    import pickle
    import zipfile

    from weightdoctor.errors import UnsafePickle

    class _Shell:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            import os

            return os.system, ("true",)

    folder = tmp_path / "run"
    folder.mkdir()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index in range(200):
            archive.writestr(f"archive/data/{index}", b"\0" * 8)
        archive.writestr("archive/data.pkl", pickle.dumps(_Shell(), protocol=2))
    (folder / "__0_0.distcp").write_bytes(b"\0" * 64 + buffer.getvalue())
    (folder / ".metadata").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(UnsafePickle, match="posix.system"):
        reader._refuse_unsafe_dcp_objects(folder)


def test_every_shard_of_a_large_dcp_folder_has_its_objects_scanned(tmp_path: Path) -> None:
    """The 1 GiB read was shared by the folder: a real model's first shard (gigabytes of tensors) used it all, and
    the objects of the other ranks' shards were never scanned. Each shard's first bytes are read now, where torch's
    FileSystemWriter writes its byte items."""
    import pickle
    import zipfile

    from weightdoctor.errors import UnsafePickle

    class _Shell:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            import os

            return os.system, ("true",)

    folder = tmp_path / "run"
    folder.mkdir()
    with open(folder / "__0_0.distcp", "wb") as handle:
        handle.truncate((1 << 30) + (1 << 20))  # a sparse 1 GiB shard of tensor data
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(_Shell(), protocol=2))
    (folder / "__1_0.distcp").write_bytes(buffer.getvalue() + b"\0" * 4096)
    (folder / ".metadata").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(UnsafePickle, match="posix.system"):
        reader._refuse_unsafe_dcp_objects(folder)
