"""Red team, round 21: files that torch.load reads in another way than the scanner walked them."""

from __future__ import annotations

import io
import json
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from tests.helpers import run_cli, runs_when_loaded_from_memory, write_legacy_save_with_frame_past_stop
from weightdoctor.security.scan import scan_bytes, scan_file


class _TouchesAFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.system, (f"touch '{self.path}'",)


def _v7_header(name: bytes, size: int) -> bytes:
    """A pre-POSIX (V7) tar header: no "ustar" magic at byte 257, only a checksum tarfile checks."""
    block = bytearray(512)
    block[0:len(name)] = name
    block[100:108], block[108:116], block[116:124] = b"0000644\0", b"0000000\0", b"0000000\0"
    block[124:136], block[136:148] = b"%011o\0" % size, b"00000000000\0"
    block[148:156], block[156:157] = b" " * 8, b"0"
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _v7_tar_that_opens_a_pickle(path: Path, sentinel: Path) -> None:
    """A V7 tar whose member "storages" (which torch's legacy tar loader unpickles first) runs a shell command, and
    whose first member's name opens a pickle: BINBYTES of everything up to the file's last byte, a STOP."""
    payload = pickle.dumps(_TouchesAFile(sentinel), protocol=2)
    body = _v7_header(b"storages", len(payload)) + payload + b"\0" * (-len(payload) % 512) + b"\0" * 1024
    length = 512 + len(body) - 5
    path.write_bytes(_v7_header(b"B" + struct.pack("<I", length), 0) + body + b".")


def test_a_tar_without_the_ustar_magic_is_scanned_as_the_tar_torch_load_reads(tmp_path: Path) -> None:
    # Before: the scan walked the file as one pickle of a bytes object and said "its pickle is safe (static scan:
    # no globals)"; torch.load(weights_only=False) opened it as its legacy tar and ran the command.
    path, sentinel = tmp_path / "model.pt", tmp_path / "PAYLOAD_RAN"
    _v7_tar_that_opens_a_pickle(path, sentinel)
    assert pickle.loads(path.read_bytes())[:4] == b"\0" * 4  # what the scanner saw: a pickle of a bytes value

    report = scan_file(path)
    assert report.container == "pytorch-tar"
    assert report.verdict == "dangerous", report.summary()
    assert {g.qualified for g in report.globals if g.safety == "dangerous"} == {"posix.system"}

    result = run_cli("inspect", str(path))
    assert result.exit_code == 2
    assert "dangerous" in result.stderr and "system" in result.stderr and "is safe" not in result.stderr
    assert not sentinel.exists()

    # The payload is live: torch.load without weights_only reads the tar and runs it (in a child interpreter).
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"],
                   capture_output=True, timeout=120)
    assert sentinel.exists()


def test_a_pickle_whose_first_block_is_no_tar_header_is_still_walked_as_a_pickle(tmp_path: Path) -> None:
    # A plain pickle of 600 bytes (longer than a tar block) is read as the pickle it is.
    path = tmp_path / "state.pkl"
    path.write_bytes(pickle.dumps({"name": "x" * 600}, protocol=2))
    report = scan_file(path)
    assert report.container == "pickle" and report.verdict == "safe", report.summary()


def _no_proto_system_call(sentinel: Path) -> bytes:
    """A pickle of protocol 4 opcodes without the PROTO opcode (the unpickler does not ask for one) that calls
    posix.system through STACK_GLOBAL: it neither opens with PROTO nor holds a GLOBAL line."""
    command = f"touch '{sentinel}'".encode()
    return b"\x8c\x05posix\x8c\x06system\x93\x8c" + bytes([len(command)]) + command + b"\x85R."


def _tar(path: Path, members: list[tuple[str, bytes | None, str]]) -> None:
    """A tar of (name, data, link target) members: data for a file, None and a target for a hard link."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, target in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.LNKTYPE, target
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _float_storage(values: list[float]) -> bytes:
    """One storage record of the legacy tar's "storages" member: its pickled arguments, int64 count, raw floats."""
    return (pickle.dumps((0, "cpu", torch.FloatStorage), protocol=2) + struct.pack("<q", len(values))
            + struct.pack(f"<{len(values)}f", *values))


def _loads_and_runs(path: Path, sentinel: Path) -> bool:
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"],
                   capture_output=True, timeout=120)
    return sentinel.exists()


@pytest.mark.parametrize("where", ["first pickle", "after a storage's bytes", "through a hard link"])
def test_a_legacy_tars_pickle_without_proto_is_walked_where_torch_load_reads_it(tmp_path: Path, where: str) -> None:
    # Before: the "storages" member was only carved for pickles opening with PROTO or a GLOBAL line; this one was not
    # seen, the scan said safe (no globals) and inspect "not a safetensors file nor a PyTorch pickle", while
    # torch.load(weights_only=False) ran it at once.
    path, sentinel = tmp_path / "model.pth", tmp_path / "PAYLOAD_RAN"
    payload = _no_proto_system_call(sentinel)
    if where == "first pickle":
        _tar(path, [("storages", payload, "")])
    elif where == "after a storage's bytes":
        _tar(path, [("storages", pickle.dumps(2, protocol=2) + _float_storage([1.0, 2.0]) + payload, "")])
    else:  # extracting the link "storages" writes the data of "notes.txt"
        _tar(path, [("notes.txt", payload, ""), ("storages", None, "notes.txt")])

    report = scan_file(path)
    assert report.container == "pytorch-tar"
    assert report.verdict == "dangerous", report.summary()
    assert {(g.qualified, g.opcode) for g in report.globals if g.safety != "safe"} == {("posix.system", "STACK_GLOBAL")}
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and "dangerous: posix.system" in result.stderr, result.stderr
    assert "nor a PyTorch pickle" not in result.stderr
    assert not sentinel.exists()
    assert _loads_and_runs(path, sentinel)  # the payload is live


def test_a_genuine_legacy_tar_is_walked_record_by_record_without_a_problem(tmp_path: Path) -> None:
    # Two storages of floats whose bytes hold no pickle, one tensor: every record is where the walk looks for it.
    path = tmp_path / "model.pth"
    storages = (pickle.dumps(2, protocol=2) + _float_storage([0.5, 1.5, 2.5])
                + pickle.dumps((1, "cpu", torch.FloatStorage), protocol=2) + struct.pack("<q", 1)
                + struct.pack("<f", 4.0) + pickle.dumps([], protocol=2))
    tensors = (pickle.dumps(1, protocol=2) + pickle.dumps((7, 0, torch.FloatTensor), protocol=2)
               + struct.pack("<i", 1) + bytes(4) + struct.pack("<qqq", 3, 1, 0))
    state = pickle.dumps({"w": 0}, protocol=2).replace(b"K\x00", b"X\x01\x00\x00\x007Q")  # persistent id "7"
    _tar(path, [("storages", storages, ""), ("tensors", tensors, ""), ("pickle", state, "")])
    assert torch.equal(torch.load(path, weights_only=False)["w"], torch.tensor([0.5, 1.5, 2.5]))

    report = scan_file(path)
    assert report.container == "pytorch-tar" and report.verdict == "safe", report.summary()
    assert report.problems == [] and {g.qualified for g in report.globals} == {
        "torch.FloatStorage", "torch.FloatTensor"}
    # Each record's arguments were walked where torch.load reads them, besides being carved.
    walked = {g.member for g in report.globals if "embedded" not in g.member}
    assert walked == {"storages (pickle 2)", "storages (pickle 3)", "tensors (pickle 2)"}, walked


def test_a_legacy_tar_whose_storages_is_a_loop_of_links_is_answered(tmp_path: Path) -> None:
    # "storages" -> "x" -> "storages": following the links is bounded, nothing is walked, nothing hangs.
    path = tmp_path / "model.pth"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, target in (("storages", "x"), ("x", "storages")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    report = scan_file(path)
    assert report.container == "pytorch-tar" and report.globals == [] and report.pickles == 0


def test_a_pickle_holding_ustar_at_byte_257_is_walked_as_the_pickle_torch_load_reads(tmp_path: Path) -> None:
    # Before: "ustar" at byte 257 made the scan read a tar, which tarfile refused: "suspicious: cannot read the tar
    # archive: truncated header ... torch.load it only if you trust its source". torch.load, refused by tarfile too,
    # unpickles the file and runs posix.system.
    path, sentinel = tmp_path / "model.pt", tmp_path / "PAYLOAD_RAN"
    data = b""
    for pad in range(200, 300):
        data = pickle.dumps(["x" * pad + "ustar", _TouchesAFile(sentinel)], protocol=2)
        if data.find(b"ustar") == 257:
            break
    assert data.find(b"ustar") == 257
    path.write_bytes(data)
    report = scan_file(path)
    assert report.verdict == "dangerous" and "posix.system" in {g.qualified for g in report.globals}, report.summary()
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and "dangerous: posix.system" in result.stderr and "tar archive" not in result.stderr
    assert not sentinel.exists()
    assert _loads_and_runs(path, sentinel)


def test_a_tar_header_tarfile_then_refuses_is_walked_as_the_pickle_torch_load_falls_back_to(tmp_path: Path) -> None:
    # One block: a header whose checksum is right (so the scan reads a tar) of a GNU long name, with no header after
    # it, which tarfile.open refuses; torch.load then unpickles the file from byte 0, where the name field holds a
    # protocol 0 call of posix.system. It must be named, not "not a PyTorch pickle".
    path, sentinel = tmp_path / "model.pt", tmp_path / "PAYLOAD_RAN"
    call = b"cposix\nsystem\n(S'touch PAYLOAD_RAN'\ntR."  # run in tmp_path: the name field holds 100 bytes
    block = bytearray(_v7_header(call, 0))
    block[148:157] = b" " * 8 + b"L"
    block[148:156] = b"%06o\0 " % sum(block)
    path.write_bytes(bytes(block))
    report = scan_file(path)
    assert report.verdict == "dangerous" and "posix.system" in {g.qualified for g in report.globals}, report.summary()
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and "dangerous: posix.system" in result.stderr, result.stderr
    assert not sentinel.exists()
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"],
                   capture_output=True, timeout=120, cwd=tmp_path)
    assert sentinel.exists()


def _gnu_header(name: bytes, size: int, typeflag: bytes, fields: list[tuple[int, bytes]]) -> bytes:
    """A GNU tar header ("ustar  " magic), with `fields` written at their offsets."""
    block = bytearray(_v7_header(name, size))
    block[156:157], block[257:265] = typeflag, b"ustar  \0"
    for offset, value in fields:
        block[offset:offset + len(value)] = value
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def test_a_sparse_tar_member_is_scanned_as_extraction_writes_it(tmp_path: Path) -> None:
    # "storages" is a GNU sparse member: BINBYTES of 16, a hole of 16 zero bytes, then a STACK_GLOBAL call of
    # posix.system. Extracted (as torch.load does) the bytes object spans the hole and the call runs; read in place
    # the bytes object swallowed the STACK_GLOBAL and the scan said safe: inspect said "not a safetensors file nor a
    # PyTorch pickle".
    path, sentinel = tmp_path / "model.pth", tmp_path / "PAYLOAD_RAN"
    command = f"touch '{sentinel}'".encode()
    first, second = b"B\x10\x00\x00\x00", b"\x8c\x05posix\x8c\x06system\x93\x8c" + bytes([len(command)]) + command
    second += b"\x85R."
    chunks = [(0, first), (len(first) + 16, second)]
    fields = [(386 + 24 * i + 12 * j, b"%011o\0" % v) for i, (at, data) in enumerate(chunks)
              for j, v in enumerate((at, len(data)))]
    stored = first + second
    header = _gnu_header(b"storages", len(stored), b"S", [*fields, (483, b"%011o\0" % (len(first) + 16 + len(second)))])
    path.write_bytes(header + stored + b"\0" * (-len(stored) % 512 + 1024))
    with tarfile.open(path) as tar:
        assert tar.extractfile("storages").read()[5:21] == bytes(16)  # type: ignore[union-attr]

    report = scan_file(path)
    assert report.verdict == "dangerous" and "posix.system" in {g.qualified for g in report.globals}, report.summary()
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and "dangerous: posix.system" in result.stderr, result.stderr
    assert not sentinel.exists()
    assert _loads_and_runs(path, sentinel)


def test_a_sparse_tar_member_expanding_to_gigabytes_is_not_read(tmp_path: Path) -> None:
    # A map of one byte at offset 2**40: extracted, a terabyte of zeros. The scan refuses to expand it.
    path = tmp_path / "model.pth"
    fields = [(386, b"%011o\0" % (1 << 40)), (398, b"%011o\0" % 1), (483, b"%011o\0" % ((1 << 40) + 1))]
    path.write_bytes(_gnu_header(b"storages", 1, b"S", fields) + b"K" + bytes(511 + 1024))
    report = scan_file(path)
    assert report.verdict != "safe"
    assert any("sparse map expands to more than" in p.message for p in report.problems), report.summary()


def test_a_tar_whose_extraction_python_3_14_refuses_has_its_fallback_pickle_scanned(tmp_path: Path) -> None:
    # The first header's name opens a protocol-less STACK_GLOBAL of posix.system whose BINBYTES skips the header's
    # fields to byte 345, where the call ends; "storages" is a hard link to an absolute path, which Python 3.14's
    # default extraction filter (data_filter) refuses with a TarError, on which torch.load unpickles the file from
    # byte 0. Before: the scan walked the members only, said safe, and inspect "not a PyTorch pickle".
    path, sentinel = tmp_path / "model.pth", tmp_path / "PAYLOAD_RAN"
    command = f"touch '{sentinel}'".encode()
    opening = b"\x8c\x05posix\x8c\x06system\x93B"
    # The call ends in the header's prefix field (bytes 345 to 499), free text to tarfile.
    first = bytearray(_v7_header(opening + struct.pack("<I", 345 - len(opening) - 4), 0))
    first[345:] = (b"0\x8c" + bytes([len(command)]) + command + b"\x85R.").ljust(167, b"\0")
    first[148:156] = b" " * 8
    first[148:156] = b"%06o\0 " % sum(first)
    link = _gnu_header(b"storages", 0, tarfile.LNKTYPE, [(157, b"/etc/hostname")])
    assert len(first) == 512
    path.write_bytes(bytes(first) + link + bytes(1024))

    report = scan_file(path)
    assert report.container == "pytorch-tar"
    assert report.verdict == "dangerous" and "posix.system" in {g.qualified for g in report.globals}, report.summary()
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and "dangerous: posix.system" in result.stderr, result.stderr
    assert not sentinel.exists()
    subprocess.run([sys.executable, "-c", "import tarfile, torch; "
                    "tarfile.TarFile.extraction_filter = staticmethod(tarfile.data_filter); "
                    f"torch.load({str(path)!r}, weights_only=False)"], capture_output=True, timeout=120)
    assert sentinel.exists()  # the payload is live where extraction filters by default


def test_a_frame_running_past_its_stop_is_refused_where_file_and_stream_readers_disagree(tmp_path: Path) -> None:
    # A legacy torch.save whose magic-number pickle has a FRAME running past its STOP into the next pickle's bytes
    # value, which holds a protocol-less STACK_GLOBAL call of posix.system. pickle.load of a file goes on after the
    # STOP and reads the genuine checkpoint; of a stream without peek (io.BytesIO) after the frame, and runs the
    # call. Before: the scan said safe (its walk is the file's), torch.load(io.BytesIO(data)) ran the command.
    path, sentinel = tmp_path / "model.pt", tmp_path / "PAYLOAD_RAN"
    write_legacy_save_with_frame_past_stop(path, sentinel)
    assert torch.equal(torch.load(path, weights_only=False)["w"], torch.ones(3))  # the file's reading

    report = scan_file(path)
    assert report.verdict != "safe"
    assert any("FRAME runs 7 bytes past its STOP" in p.message for p in report.problems), report.summary()
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and "suspicious" in result.stderr and "past its STOP" in result.stderr
    assert not sentinel.exists()
    assert runs_when_loaded_from_memory(path, sentinel)  # the payload is live when the same bytes are loaded so


@pytest.mark.parametrize("protocol", [4, 5])
def test_frames_picklers_write_are_not_flagged(tmp_path: Path, protocol: int) -> None:
    # Frames of 64 KiB and more (a bytes value of a megabyte between small values), a legacy and a zip torch.save.
    plain = pickle.dumps({"a": list(range(100)), "b": bytes(1 << 20), "c": "x" * 70_000}, protocol=protocol)
    assert scan_bytes(plain).problems == []
    for zipped in (False, True):
        saved = io.BytesIO()
        torch.save({"w": torch.ones(3), "meta": {"n": list(range(20_000))}}, saved, pickle_protocol=protocol,
                   _use_new_zipfile_serialization=zipped)
        report = scan_bytes(saved.getvalue())
        assert report.problems == [] and report.verdict == "safe", report.summary()


def test_a_data_pkl_named_in_capitals_is_scanned_as_torch_load_finds_it(tmp_path: Path) -> None:
    # torch's zip reader (miniz, no case-sensitive flag) finds "archive/data.pkl" as "archive/DATA.PKL". Before: a
    # protocol-less STACK_GLOBAL call of posix.system there was never scanned, and inspect said "zip archive has no
    # data.pkl record (not a torch.save file, or damaged)" while torch.load ran the call.
    path, sentinel = tmp_path / "model.pt", tmp_path / "PAYLOAD_RAN"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/DATA.PKL", _no_proto_system_call(sentinel))
        archive.writestr("archive/version", b"3\n")
        archive.writestr("archive/byteorder", b"little")
    report = scan_file(path)
    assert report.verdict == "dangerous" and "posix.system" in {g.qualified for g in report.globals}, report.summary()
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and "dangerous: posix.system" in result.stderr and "no data.pkl" not in result.stderr
    assert not sentinel.exists()
    assert _loads_and_runs(path, sentinel)


def test_a_torch_save_whose_data_pkl_is_named_in_capitals_is_read(tmp_path: Path) -> None:
    # The same torch.save with its records renamed (same lengths, CRCs of the data unchanged): torch.load reads it,
    # and so does inspect (it said "no data.pkl record").
    saved = tmp_path / "saved.pt"
    torch.save({"w": torch.arange(6.0).reshape(2, 3)}, saved)
    data = saved.read_bytes()
    assert data.count(b"/data.pkl") == 2  # its local header and its central directory entry
    path = tmp_path / "model.pt"
    path.write_bytes(data.replace(b"/data.pkl", b"/DATA.PKL"))
    assert torch.equal(torch.load(path)["w"], torch.arange(6.0).reshape(2, 3))
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    assert [(t["name"], t["shape"]) for t in json.loads(result.stdout)["tensors"]] == [("w", [2, 3])]


def test_a_byteorder_record_named_in_capitals_is_the_byte_order_values_are_read_in(tmp_path: Path) -> None:
    # A torch.save rewritten big-endian, its record named "BYTEORDER": torch.load finds it (any case) and reads
    # [1, 2, 3, 4]. Before: the torch-free reader saw no byteorder record, read the values little-endian, and
    # inspect --stats gave a mean of 2.9e-41; convert wrote those swapped bytes.
    saved, path = tmp_path / "saved.pt", tmp_path / "model.pt"
    torch.save({"w": torch.tensor([1.0, 2.0, 3.0, 4.0])}, saved)
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            name, data = info.filename, source.read(info)
            if name.endswith("/byteorder"):
                name, data = name[: -len("byteorder")] + "BYTEORDER", b"big"
            elif "/data/" in name:
                data = np.frombuffer(data, "<f4").astype(">f4").tobytes()
            target.writestr(name, data)
    assert torch.load(path)["w"].tolist() == [1.0, 2.0, 3.0, 4.0]

    result = run_cli("inspect", str(path), "--stats", "--json")
    assert result.exit_code == 0, result.stderr
    stats = json.loads(result.stdout)["tensors"][0]["stats"]
    assert (stats["min"], stats["mean"], stats["max"]) == (1.0, 2.5, 4.0), stats
    out = tmp_path / "model.safetensors"
    result = run_cli("convert", str(path), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert load_file(out)["w"].tolist() == [1.0, 2.0, 3.0, 4.0]
