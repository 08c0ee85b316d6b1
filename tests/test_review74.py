"""review74: the names-as-written archive scan (Python 3.12's Unicode path field) and BitNet's refused map.

* A zip entry named in non-ASCII without the UTF-8 flag (Info-ZIP, PKZIP, WinRAR re-zipping a checkpoint) had two
  names: zipfile's cp437 reading and the UTF-8 one of the raw directory and the local header, so one record was
  "a member Python's zipfile does not see" and the file suspicious (exit 2).
* A Unicode path field (0x7075) that only spells the written name in Unicode (the writer's OEM code page name, an
  NFD name given in NFC) was "its Unicode path field names it ...": the archive called suspicious for a writer's
  ordinary transcoding. A field that changes an ASCII byte of the name still is.
* plan-devices' human verdict for a BitNet --map holding cpu, refused where CUDA is available, said the GPUs cannot
  hold the model when the map, not the GPUs, put modules on the CPU.
"""

from __future__ import annotations

import io
import json
import struct
import unicodedata
import zipfile
import zlib
from pathlib import Path

import pytest

from tests.helpers import one_error_line, run_cli, run_json
from tests.test_py312 import zipfile_of  # noqa: F401 - the fixture: this Python's zipfile, then 3.12's

torch = pytest.importorskip("torch")


def _field(name: bytes, written: bytes) -> bytes:
    """A Unicode path extra field (0x7075, version 1) naming the entry `name` (UTF-8) for the written bytes."""
    body = struct.pack("<BL", 1, zlib.crc32(written)) + name
    return struct.pack("<HH", 0x7075, len(body)) + body


def _rezipped(path: Path, folder: bytes, flags: int, field: bytes | None) -> Path:
    """A seeded torch.save archive re-zipped (stored) with its records under `folder` (bytes as written, with the
    general-purpose `flags`), each with a Unicode path field naming it under `field` when one is given."""
    buffer = io.BytesIO()
    torch.manual_seed(0)
    torch.save({"w": torch.randn(3)}, buffer)
    with zipfile.ZipFile(buffer) as archive:
        records = [(info.filename.split("/", 1)[1].encode(), archive.read(info)) for info in archive.infolist()]
    out, directory = bytearray(), bytearray()
    for rest, data in records:
        name = folder + b"/" + rest
        extra = _field(field + b"/" + rest, name) if field is not None else b""
        crc, offset = zlib.crc32(data), len(out)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, flags, 0, 0, 0, crc, len(data), len(data),
                           len(name), len(extra)) + name + extra + data
        directory += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, flags, 0, 0, 0, crc, len(data),
                                 len(data), len(name), len(extra), 0, 0, 0, 0, offset) + name + extra
    out += directory + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(records), len(records), len(directory),
                                   len(out), 0)
    path.write_bytes(bytes(out))
    assert torch.load(path, weights_only=True)["w"].shape == (3,)  # torch reads it, whatever the names
    return path


CAFE = "caf\u00e9"
BENIGN = {
    # Info-ZIP on Linux: the name's own (UTF-8) bytes, no flag; no field, or one giving the same name.
    "utf-8 bytes, no flag, no field": (CAFE.encode(), 0, None),
    # PKZIP, WinRAR, Info-ZIP on Windows: the OEM code page's bytes, and the name in UTF-8 in the field.
    "cp437 bytes, UTF-8 field": (CAFE.encode("cp437"), 0, CAFE.encode()),
    "cp850 bytes, UTF-8 field": (CAFE.encode("cp850"), 0, CAFE.encode()),
    # A macOS name (NFD) with a field in NFC: the same name, canonically.
    "NFD bytes, NFC field": (unicodedata.normalize("NFD", CAFE).encode(), 0,
                             unicodedata.normalize("NFC", CAFE).encode()),
}


@pytest.mark.parametrize("case", list(BENIGN))
def test_a_checkpoint_rezipped_with_a_non_ascii_folder_name_is_safe(tmp_path: Path, case: str,
                                                                    zipfile_of: str) -> None:  # noqa: F811
    """Each was 'suspicious: ... lists 7 member(s) that Python's zipfile does not see' (exit 2), or 'its Unicode
    path field (0x7075) names it ...' for a field that only transcodes the written name."""
    folder, flags, field = BENIGN[case]
    path = _rezipped(tmp_path / "model.pt", folder, flags, field)
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["security"]["verdict"], report["security"]["problems"]) == ("safe", []), report["security"]
    assert report["num_tensors"] == 1


@pytest.mark.parametrize(("written", "field"), [
    (b"archive", b"archivX"),  # an ASCII letter changed: another member name to zipfile-based scanners
    (CAFE.encode("cp437"), b"cafe"),  # a code page's letter turned into an ASCII one
    (CAFE.encode(), CAFE.encode() + b"\xe2\x80\x8b"),  # a zero-width space added to a UTF-8 name
])
def test_a_field_that_renames_the_member_is_still_suspicious(tmp_path: Path, written: bytes, field: bytes,
                                                             zipfile_of: str) -> None:  # noqa: F811
    path = _rezipped(tmp_path / "model.pt", written, 0, field)
    line = one_error_line(run_cli("inspect", str(path)))
    assert line.startswith(f"error: {path}: suspicious: "), line
    assert "its Unicode path field (0x7075) names it" in line, line


def test_a_bitnet_map_by_hand_refused_here_is_not_said_to_overflow_the_gpus(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU (100 MB) holds the 1.7 MB model; the --map puts lm_head on the CPU, which BitNet's quantizer refuses
    where CUDA is available. The verdict said 'the GPUs given cannot hold the model, and its quantizer refuses to
    offload the rest here'."""
    from tests.test_compat_load import _bitnet_llama

    folder = tmp_path / "bitnet"
    _bitnet_llama(folder)
    manual = tmp_path / "map.json"
    manual.write_text(json.dumps({"model.embed_tokens": 0, "model.layers": 0, "model.norm": 0,
                                  "model.rotary_emb": 0, "lm_head": "cpu"}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (100_000_000, 80 * 10**9))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *device: (9, 0))
    args = ("plan-devices", str(folder), "--gpu", "100MB", "--cpu", "100MB", "--map", str(manual))
    code, planned = run_json(*args)
    assert (code, planned["verdict"], planned["manual_map"]) == (1, "does-not-fit", True)
    assert [f["code"] for f in planned["findings"]] == ["quantizer-refuses-offload"]
    said = " ".join(run_cli(*args).stdout.split())
    assert ("verdict: does not fit (your --map places modules on cpu or disk, which its quantizer refuses "
            "here)") in said, said
    assert "cannot hold the model" not in said, said


def test_a_string_architectures_is_not_blamed_for_another_field_the_config_refuses(tmp_path: Path) -> None:
    """config.json with `"architectures": "LlamaForCausalLM"` and a head_dim of "x": the config class refuses the
    head_dim on every transformers (5.25 takes a string's architectures), yet the error said 'transformers ...
    builds no config from it' of the architectures, and the field at fault went unsaid."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": "LlamaForCausalLM", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100, "head_dim": "x"}))
    line = one_error_line(run_cli("plan-devices", str(folder), "--gpu", "1GB"))
    assert line.startswith("error: "), line
    assert "config.json cannot build a 'llama' config (StrictDataclassFieldValidationError: Validation error for " \
           "field 'head_dim'" in line, line
    assert "architectures is" not in line and "builds no config from it" not in line, line
