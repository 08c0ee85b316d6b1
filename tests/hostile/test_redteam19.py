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


_SYSTEM = b"cposix\nsystem\n(S'echo pwned'\ntR."


def _npy_header(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    return (10, struct.unpack_from("<H", data, 8)[0]) if data[6] == 1 else (12, struct.unpack_from("<I", data, 8)[0])


def test_an_object_field_past_the_first_64_kib_of_a_npy_header_has_its_pickle_scanned(tmp_path: Path) -> None:
    # np.save's own file: a record of 3,000 float fields and one object field, its header (format 2.0) 120 KB,
    # the '|O' near its end. Only the first 64 KiB were searched, so the pickle after it was never scanned and the
    # message advised numpy.load(path, allow_pickle=True), which runs it (allow_pickle lifts numpy's header bound).
    import warnings

    import numpy as np

    from weightdoctor.errors import UnsafePickle

    fields = [(f"f{i:05d}_{'x' * 20}", "<f4") for i in range(3000)] + [("obj", "O")]
    path = tmp_path / "weights.npy"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns that format 2.0 needs numpy >= 1.9
        np.save(path, np.zeros(1, dtype=fields))
    start, length = _npy_header(path)
    assert length > 1 << 16 and path.read_bytes().find(b"|O") > start + (1 << 16)
    path.write_bytes(path.read_bytes()[:start + length] + _SYSTEM)
    with pytest.raises(UnsafePickle) as caught:
        reader._refuse_pickled_npy(path, path.read_bytes()[:64])
    assert "dangerous" in str(caught.value) and "posix.system" in str(caught.value)
    assert caught.value.path == str(path)


def test_a_npy_header_longer_than_the_file_is_not_called_a_pickle(tmp_path: Path) -> None:
    # A format 2.0 header claiming 4 GiB in a 90-byte file: numpy.load fails reading the header and unpickles
    # nothing, yet the file was refused as "suspicious: ... at byte 4294967307: the pickle cannot be parsed ...
    # numpy.load(path, allow_pickle=True) unpickles them, running that".
    path = tmp_path / "weights.npy"
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1152921504606846976,), }"
    path.write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFFF) + header)
    reader._refuse_pickled_npy(path, path.read_bytes()[:64])  # no refusal: the .npy message says what it is
    result = subprocess.run([sys.executable, "-m", "weightdoctor", "inspect", str(path)], capture_output=True,
                            text=True, timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2 and "this is a NumPy .npy array" in result.stderr, result.stderr
    assert "suspicious" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _deflated_archive(payload: bytes) -> bytes:
    """A torch.save-like archive whose data.pkl is deflated: found by its central directory only."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", b"3\n")
    return buffer.getvalue()


def test_a_directory_entry_before_the_shard_does_not_end_the_scan_of_the_archives_after_it(tmp_path: Path) -> None:
    # The first archive's end record places its directory 1,000 bytes past where it lies, so its member's offset
    # falls before the file: the seek raised OSError, taken as an unreadable shard, and the deflated data.pkl
    # calling os.system in the archive after it was never read.
    name = b"archive/data.pkl"
    bogus_directory = _central_entry(name, 8, 10, 10, 0)
    bogus = bogus_directory + struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(bogus_directory), 1000, 0)
    hostile = _deflated_archive(_SYSTEM)
    folder = _dcp_folder(tmp_path, bogus + hostile)
    from weightdoctor.errors import UnsafePickle

    with pytest.raises(UnsafePickle) as caught:
        reader._refuse_unsafe_dcp_objects(folder)
    assert "posix.system" in str(caught.value) and f"at byte {len(bogus):,}" in str(caught.value)
    assert caught.value.path == str(folder / "__0_0.distcp")


def test_a_zip64_offset_of_2_to_the_64_is_no_unexpected_error(tmp_path: Path) -> None:
    # A ZIP64 extra field giving a member's local header at byte 2^64 - 1: the seek raised ValueError, and the
    # folder's read ended "unexpected ValueError: cannot fit 'int' into an offset-sized integer".
    name = b"archive/data.pkl"
    extra = struct.pack("<HHQ", 1, 8, (1 << 64) - 1)
    entry = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 45, 45, 0, 8, 0, 0, 0, 10, 10, len(name), len(extra), 0, 0,
                        0, 0, 0xFFFFFFFF) + name + extra
    folder = _dcp_folder(tmp_path, entry + struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(entry), 0, 0))
    result = subprocess.run([sys.executable, "-m", "weightdoctor", "inspect", str(folder)], capture_output=True,
                            text=True, timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2, result.stderr
    assert "torch.distributed.checkpoint (DCP) folder" in result.stderr and "unexpected" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symlinks")
def test_a_symlink_loop_named_global_step0_does_not_end_the_deepspeed_states_scan(tmp_path: Path) -> None:
    # global_step0 -> global_step0: its is_dir() raised ELOOP inside the one try around the listing, so no step
    # was scanned and the folder read as healthy with global_step1's states calling os.system beside it
    # (DeepSpeed's load_checkpoint torch.loads them with weights_only=False).
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "run"
    (folder / "global_step1").mkdir(parents=True)
    (folder / "global_step1" / "mp_rank_00_model_states.pt").write_bytes(_SYSTEM)
    (folder / "global_step0").symlink_to("global_step0")
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    from weightdoctor.errors import UnsafePickle

    with pytest.raises(UnsafePickle) as caught:
        reader.refuse_unsafe_deepspeed_states(folder)
    assert "DeepSpeed states file names posix.system" in str(caught.value)
    assert caught.value.path == str(folder / "global_step1" / "mp_rank_00_model_states.pt")


def test_the_places_the_buffer_walk_builds_are_bounded_in_size() -> None:
    # Each place was built whole from its parent's: dicts sharing one 1 MiB key (memoized, so 500,000 of them made
    # a 6.5 MB file) copied the key into each place (12 s), and a list nested 400,000 deep copied a path growing
    # by two characters a level (3 s). A place is now cut at _MAX_PLACE characters, and built from a cut parent.
    from weightdoctor.checkpoint import pytorch_format

    key = "k" * (1 << 20)
    deep: list[Any] = []
    level = deep
    for _ in range(5000):
        level.append([])
        level = level[-1]
    level.append(b"\x80\x04K\x01.")  # not the bytes below: the walk visits one object once
    obj = {"meta": [{key: 0} for _ in range(50)], "under": {key: {"x": b"\x80\x04N."}}, "deep": deep}
    found = {where.split(".", 1)[0]: where for where, _, _ in pytorch_format._buffers_in(obj)}
    assert set(found) == {"under", "deep"}
    assert found["under"].startswith("under.kkk") and found["deep"].startswith("deep.0.0.0")
    assert all(len(where) <= 1030 for where in found.values()), {k: len(v) for k, v in found.items()}
