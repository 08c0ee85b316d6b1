"""py312: what the product did differently under Python 3.12 (users run 3.12 and 3.13 more than 3.11), each checked
here on the Python that runs the tests, with 3.12's zipfile emulated on older ones:

* 3.12's zipfile names an entry by its Unicode path field (0x7075) when the field's CRC matches the written name,
  and refuses the whole archive when such a field is shorter than its 5-byte head; PyTorch's reader (miniz) reads
  neither. The DCP shard scan listed archives with zipfile: on 3.12 a deflated data.pkl calling os.system behind
  either field was not read ("torch.load cannot read it either"), and the folder passed;
* the archive scan listed zipfile's names: a data.pkl so renamed was "safe" on 3.11 and, on 3.12, a member
  "Python's zipfile does not see" sharing bytes with another;
* 3.11's re takes with a DeprecationWarning, which no user sees, a group reference 3.12 refuses (`\\g<١>`):
  `--rename` renamed on 3.11 what it refuses on 3.12.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import RunsAShellCommand, one_error_line, run_cli


def _decode_extra_as_312(original: Callable[..., None]) -> Callable[..., None]:
    """`ZipInfo._decodeExtra` of Python 3.11 with what 3.12 added (Lib/zipfile/__init__.py, `tp == 0x7075`)."""

    def decode_extra(self: zipfile.ZipInfo, *args: object) -> None:
        original(self, *args)
        written = self.orig_filename.encode("utf-8" if self.flag_bits & 0x800 else "cp437")
        extra = self.extra
        while len(extra) >= 4:
            tag, length = struct.unpack("<HH", extra[:4])
            if tag == 0x7075:
                try:
                    version, crc = struct.unpack("<BL", extra[4:length + 4][:5])
                    if version == 1 and crc == zlib.crc32(written):
                        name = extra[9:length + 4].decode("utf-8")
                        if name:
                            self.filename = name.split("\0", 1)[0]
                except struct.error as exc:
                    raise zipfile.BadZipFile("Corrupt unicode path extra field (0x7075)") from exc
                except UnicodeDecodeError as exc:
                    raise zipfile.BadZipFile("Corrupt unicode path extra field (0x7075): invalid utf-8 bytes") from exc
            extra = extra[length + 4:]

    return decode_extra


@pytest.fixture(params=["this Python", "3.12's zipfile"])
def zipfile_of(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with this Python's zipfile, then with 3.12's reading of the Unicode path field (the real one from
    3.12 on, emulated before)."""
    if request.param == "3.12's zipfile" and sys.version_info < (3, 12):
        monkeypatch.setattr(zipfile.ZipInfo, "_decodeExtra", _decode_extra_as_312(zipfile.ZipInfo._decodeExtra))
    return str(request.param)


def _unicode_path(written: str, name: str) -> bytes:
    body = struct.pack("<BL", 1, zlib.crc32(written.encode())) + name.encode()
    return struct.pack("<HH", 0x7075, len(body)) + body


_SHORT_FIELD = struct.pack("<HH", 0x7075, 1) + b"\x01"  # a field shorter than its version and CRC


def _archive(payload: object, method: int, extra: Callable[[str], bytes]) -> bytes:
    """A torch.save-shaped archive (data.pkl, version), each record's extra fields given by `extra(name)`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in (("archive/data.pkl", pickle.dumps(payload, protocol=2)), ("archive/version", b"3\n")):
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            info.extra = extra(name)
            archive.writestr(info, data)
    return buffer.getvalue()


_EXTRAS: dict[str, Callable[[str], bytes]] = {
    "data.pkl renamed": lambda name: _unicode_path(name, "archive/notes.txt") if name.endswith("data.pkl") else b"",
    "short field": lambda name: _SHORT_FIELD if name.endswith("version") else b"",
}


def test_the_fields_are_read_by_torch_and_by_zipfile_as_this_test_says(zipfile_of: str) -> None:
    """The premise: torch.load reads both archives (miniz ignores the field), 3.12's zipfile renames or refuses."""
    import torch

    for label, extra in _EXTRAS.items():
        data = _archive({"epoch": 7}, zipfile.ZIP_DEFLATED, extra)
        assert torch.load(io.BytesIO(data), weights_only=True) == {"epoch": 7}, label
    renamed = _archive({"epoch": 7}, zipfile.ZIP_DEFLATED, _EXTRAS["data.pkl renamed"])
    names = zipfile.ZipFile(io.BytesIO(renamed)).namelist()
    short = _archive({"epoch": 7}, zipfile.ZIP_DEFLATED, _EXTRAS["short field"])
    if zipfile_of == "3.12's zipfile":
        assert names == ["archive/notes.txt", "archive/version"]
        with pytest.raises(zipfile.BadZipFile, match="Corrupt unicode path extra field"):
            zipfile.ZipFile(io.BytesIO(short))
    elif sys.version_info < (3, 12):
        assert names == ["archive/data.pkl", "archive/version"]
        assert len(zipfile.ZipFile(io.BytesIO(short)).namelist()) == 2


def _dcp_folder_with(folder: Path, payload: bytes) -> Path:
    """A DCP folder (dcp.save) whose extra entry is `payload`, appended to its shard as DCP's writer places it."""
    import warnings

    import torch
    import torch.distributed.checkpoint as dcp

    folder.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... assuming a single process"
        dcp.save({"model": {"fc.weight": torch.zeros(2, 2)}, "extra": {"epoch": 1}}, checkpoint_id=str(folder),
                 no_dist=True)
    shard = next(folder.glob("*.distcp"))
    start = shard.stat().st_size
    with open(shard, "ab") as handle:
        handle.write(payload)
    metadata = pickle.loads((folder / ".metadata").read_bytes())
    for index, info in list(metadata.storage_data.items()):
        if index.fqn.startswith("extra"):
            metadata.storage_data[index] = type(info)(relative_path=info.relative_path, offset=start,
                                                      length=len(payload))
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    return shard


@pytest.mark.parametrize("layout", sorted(_EXTRAS))
def test_a_dcp_entry_behind_a_unicode_path_field_is_scanned(tmp_path: Path, zipfile_of: str, layout: str) -> None:
    """A deflated data.pkl that calls os.system, in an archive whose data.pkl record carries a Unicode path field
    naming it otherwise, or whose other record carries a short one: torch.load runs it on every Python; the shard
    scan, reading the directory with zipfile, skipped it under 3.12 and called the folder fine."""
    shard = _dcp_folder_with(tmp_path / "dcp", b"")
    start = shard.stat().st_size
    with open(shard, "ab") as handle:
        handle.write(_archive({"hook": RunsAShellCommand()}, zipfile.ZIP_DEFLATED, _EXTRAS[layout]))
    line = one_error_line(run_cli("inspect", str(tmp_path / "dcp")))
    assert line.startswith(f"error: {shard}: dangerous: the torch.save archive at byte {start:,} of this "
                           "torch.distributed.checkpoint (DCP) shard holds a pickle that names posix.system; "), line


@pytest.mark.parametrize("layout", sorted(_EXTRAS))
def test_the_shard_scan_alone_finds_the_pickle_behind_either_field(tmp_path: Path, zipfile_of: str,
                                                                  layout: str) -> None:
    """The scan of the shards, without torch (so that a Python without a torch wheel runs it against its own
    zipfile): the archive, after 100 bytes of tensor data, is refused naming where it starts."""
    from weightdoctor.checkpoint.reader import _refuse_unsafe_dcp_objects
    from weightdoctor.errors import UnsafePickle

    shard = tmp_path / "__0_0.distcp"
    shard.write_bytes(bytes(100) + _archive({"hook": RunsAShellCommand()}, zipfile.ZIP_DEFLATED, _EXTRAS[layout]))
    with pytest.raises(UnsafePickle, match=r"^dangerous: the torch.save archive at byte 100 of this "
                                           r"torch.distributed.checkpoint \(DCP\) shard holds a pickle that names "
                                           r"posix.system; "):
        _refuse_unsafe_dcp_objects(tmp_path)


@pytest.mark.parametrize("layout", sorted(_EXTRAS))
def test_a_benign_dcp_entry_behind_such_a_field_is_no_refusal(tmp_path: Path, zipfile_of: str, layout: str) -> None:
    """The directory read as written finds what torch.load finds and no more: a benign deflated entry behind either
    field leaves the folder's own answer (a DCP folder, no weight file to read here)."""
    _dcp_folder_with(tmp_path / "dcp", _archive({"epoch": 1}, zipfile.ZIP_DEFLATED, _EXTRAS[layout]))
    line = one_error_line(run_cli("inspect", str(tmp_path / "dcp")))
    assert line == (f"error: {tmp_path / 'dcp'}: folder holds no weight file (.safetensors, .bin, .pt, .pth, .ckpt); "
                    "it is a torch.distributed.checkpoint (DCP) folder (*.distcp shards and .metadata): "
                    "import torch.distributed.checkpoint.format_utils; "
                    "torch.distributed.checkpoint.format_utils.dcp_to_torch_save("
                    f"{str(tmp_path / 'dcp')!r}, {str(tmp_path / 'dcp.state_dict.pt')!r}) writes one torch.save "
                    "file to read here"), line


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_data_pkl_renamed_by_its_unicode_path_field_is_suspicious_on_every_python(tmp_path: Path, zipfile_of: str,
                                                                                    method: int) -> None:
    """torch.load reads data.pkl by the name written; zipfile from 3.12 on (and the scanners and loaders built on
    it) lists 'archive/notes.txt' in its place. Said so on every Python: on 3.11 the file was called safe, on 3.12
    a member zipfile does not see."""
    path = tmp_path / "model.pt"
    path.write_bytes(_archive({"epoch": 7}, method, _EXTRAS["data.pkl renamed"]))
    line = one_error_line(run_cli("inspect", str(path)))
    assert line.startswith(f"error: {path}: suspicious: "), line
    assert ("member 'archive/data.pkl': its Unicode path field (0x7075) names it 'archive/notes.txt', the name "
            "Python's zipfile lists from 3.12 on; PyTorch's reader takes the name written: the archive shows "
            "different contents to different readers") in line, line
    assert "does not see" not in line and "shares its bytes" not in line, line


def test_a_unicode_path_field_that_spells_the_written_name_is_no_problem(zipfile_of: str) -> None:
    """The field of a writer that adds it to every record (its name as written) changes no name and says nothing;
    a short one (3.12's zipfile refuses the archive for it) leaves the members as PyTorch's reader lists them."""
    from weightdoctor.security.archive import read_layout

    for extra in (lambda name: _unicode_path(name, name), _EXTRAS["short field"]):
        data = _archive({"epoch": 7}, zipfile.ZIP_DEFLATED, extra)
        layout = read_layout(io.BytesIO(data), len(data))
        assert [m.name for m in layout.members] == ["archive/data.pkl", "archive/version"], layout
        assert layout.problems == [], layout.problems


@pytest.mark.parametrize("spec", [r"(w)=\g<١>", r"(w)=\g< 1>", r"(w)=\g<+1>"])
def test_a_group_reference_python_3_12_refuses_is_refused_on_every_python(tmp_path: Path, spec: str) -> None:
    """3.11 renamed `w` by these (with a DeprecationWarning no user sees), 3.12 refuses them: the rename, and the
    Python snippet diff-keys prints, worked only on the older Python."""
    import numpy as np
    from safetensors.numpy import save_file

    from weightdoctor.errors import UsageError
    from weightdoctor.renames import parse_rename

    with pytest.raises(UsageError, match=r"bad character in group name"):
        parse_rename(spec)
    a = tmp_path / "a.safetensors"
    save_file({"w.weight": np.zeros(2, dtype=np.float32)}, str(a))
    line = one_error_line(run_cli("diff-keys", str(a), str(a), "--rename", spec))
    assert "bad character in group name" in line and "--rename" in line, line
    assert parse_rename(r"(w)=\g<1>x").apply("w.weight") == "wx.weight"  # ASCII digits, as before


def test_a_pattern_python_3_12_refuses_is_refused_in_its_words_on_every_python() -> None:
    """A condition on a group of other digits (`(?(١)b|c)`): 3.11 compiled it with a DeprecationWarning and then
    refused it as a backreference that may backtrack for hours; 3.12 says what is wrong with it."""
    from weightdoctor.commands._options import check_regex
    from weightdoctor.errors import UsageError

    with pytest.raises(UsageError, match=r"^--keep-fp32 '\(a\)\(\?\(١\)b\|c\)': bad regular expression \(bad "
                                         r"character in group name '١' at position 6\)$"):
        check_regex("--keep-fp32", "(a)(?(١)b|c)")
