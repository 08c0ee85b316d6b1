"""Red team, round 19: denial of service and crashes in today's scans of data loaders unpickle later (DCP shards'
torch.save archives, DeepSpeed states, accelerate's custom checkpoints, bytes values, `.npy` object arrays).

Each test counts work or bounds sizes; none times a run."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from weightdoctor.checkpoint import reader

REPO = Path(__file__).resolve().parents[2]


def _central_entry(name: bytes, method: int = 0, compressed: int = 0, size: int = 0, offset: int = 0) -> bytes:
    return struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, method, 0, 0, 0, compressed, size, len(name), 0, 0,
                       0, 0, 0, offset) + name


def _dcp_folder(tmp_path: Path, shard: bytes) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".metadata").write_bytes(pickle.dumps({"a": 1}))
    (folder / "__0_0.distcp").write_bytes(shard)
    return folder


def test_end_records_that_reread_one_central_directory_read_a_bounded_number_of_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 4,096 end records, each saying the directory of 500 members before it is its own (its size reaching back
    # over the records before it): zipfile read and parsed it whole at each one, 295 MB for a 120 KB shard (a
    # directory of 2,000 members took 20 s, of 10^5 would have taken hours).
    directory = b"".join(_central_entry(b"x%07d" % i) for i in range(500))
    records = b"".join(struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 500, 500, len(directory) + 22 * k, 0, 0)
                       for k in range(4096))
    folder = _dcp_folder(tmp_path, directory + records)
    taken = [0]
    original = reader._Window.read

    def counting_read(self: Any, size: int = -1) -> bytes:
        data = original(self, size)
        taken[0] += len(data)
        return data

    monkeypatch.setattr(reader._Window, "read", counting_read)
    reader._refuse_unsafe_dcp_objects(folder)
    assert 0 < taken[0] <= 8 << 20, taken[0]


def test_a_directory_of_members_all_named_data_pkl_inflates_a_bounded_number(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One end record whose directory lists 10,000 deflated members named data.pkl, all at the same local header:
    # each was read (up to 1 MiB) and inflated (up to 1 MiB), past the folder's bound of 4,096 pickles.
    inflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = pickle.dumps({"a": 1}, protocol=2)
    raw = inflater.compress(payload) + inflater.flush()
    name = b"archive/data.pkl"
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, len(raw), len(payload), len(name), 0)
    body = local + name + raw
    directory = b"".join(_central_entry(name, 8, len(raw), len(payload)) for _ in range(10_000))
    record = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 10_000, 10_000, len(directory), len(body), 0)
    folder = _dcp_folder(tmp_path, body + directory + record)
    inflations = [0]
    original = zlib.decompressobj

    def counting(*args: Any, **kwargs: Any) -> Any:
        inflations[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(zlib, "decompressobj", counting)
    reader._refuse_unsafe_dcp_objects(folder)
    assert 0 < inflations[0] <= reader._MAX_DCP_PICKLES, inflations[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_named_as_a_dcp_shard_is_passed_over_not_waited_on(tmp_path: Path) -> None:
    # open() of a FIFO blocks until a writer comes: inspect of the folder hung forever in the shards' scan.
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".metadata").write_bytes(pickle.dumps({"a": 1}))
    os.mkfifo(folder / "__0_0.distcp")
    result = subprocess.run([sys.executable, "-m", "weightdoctor", "inspect", str(folder)], capture_output=True,
                            text=True, timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2, result.stderr
    assert "torch.distributed.checkpoint (DCP) folder" in result.stderr
    assert str(folder) in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
