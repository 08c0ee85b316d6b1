"""BUILD, the pickle opcode that sets an object's state, may not reach the reader's stand-ins or any imported global."""

from __future__ import annotations

import struct
from pathlib import Path

import torch

from tests.helpers import run_cli

FLOATS = struct.pack("<4f", 1, 2, 3, 4)


def _text(value: str) -> bytes:  # BINUNICODE
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _global(module: str, name: str) -> bytes:  # GLOBAL
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _int(value: int) -> bytes:
    return b"K" + bytes([value]) if 0 <= value < 256 else b"J" + struct.pack("<i", value)


def _tensor() -> bytes:
    """`_rebuild_tensor_v2(storage 0 of 4 floats, 0, (4,), (1,), False, OrderedDict())`, as torch.save writes it."""
    ops = _global("torch._utils", "_rebuild_tensor_v2") + b"("
    ops += b"(" + _text("storage") + _global("torch", "FloatStorage") + _text("0") + _text("cpu") + _int(4) + b"tQ"
    ops += _int(0) + b"(" + _int(4) + b"t(" + _int(1) + b"t\x89" + _global("collections", "OrderedDict") + b")RtR"
    return ops


def _write(path: Path, data_pkl: bytes) -> Path:
    writer = torch._C.PyTorchFileWriter(str(path))
    for name, data in (("data.pkl", data_pkl), ("byteorder", b"little"), ("data/0", FLOATS)):
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    del writer
    return path


def test_build_cannot_grow_a_tensor_past_its_storage(tmp_path: Path) -> None:
    """BUILD after the rebuild call set `shape` to (4096,) on the stand-in, past its 16-byte storage."""
    state = b"}(" + _text("shape") + b"(" + _int(4096) + b"tu" + b"b"
    path = _write(tmp_path / "grown.pt", b"\x80\x02" + _global("collections", "OrderedDict") + b")R("
                  + _text("w") + _tensor() + state + b"u.")
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 2 and result.stdout == "" and "grown.pt" in result.stderr
    result = run_cli("convert", str(path), "-o", str(tmp_path / "out.safetensors"))
    assert result.exit_code == 2 and not (tmp_path / "out.safetensors").exists()


def test_build_cannot_patch_an_imported_function(tmp_path: Path) -> None:
    """A protocol-4 pickle that BUILDs `__defaults__` onto torch's own rebuild function: refused, and
    torch is left as it was for the next file this process reads."""
    import torch._utils

    before = torch._utils._rebuild_tensor_v2.__defaults__
    body = (_global("collections", "OrderedDict") + b")R(" + _text("w") + _tensor()
            + _text("dev") + _global("torch", "device") + _text("cpu") + b"\x85Ru"
            + _global("torch._utils", "_rebuild_tensor_v2") + b"N}" + _text("__defaults__") + b"}"
            + _text("neg") + b"\x88s\x85s\x86b0.")
    path = _write(tmp_path / "patch.pt", b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body)
    legit = tmp_path / "legit.pt"
    torch.save({"w": torch.tensor([1.0, 2.0, 3.0, 4.0])}, legit)
    result = run_cli("diff-keys", str(path), str(legit), "--values", "--json")
    # The scan refuses it before anything is unpickled (review47: BUILD on an imported global).
    assert result.exit_code == 2 and "BUILD sets the attributes of torch._utils._rebuild_tensor_v2 itself" \
        in result.stderr, result.stderr
    assert torch._utils._rebuild_tensor_v2.__defaults__ == before
    result = run_cli("inspect", str(legit), "--stats", "--json")
    assert result.exit_code in (0, 1) and '"min": 1.0' in result.stdout


def test_a_deflate_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """300 MB of zeros deflated into a 300 KB member of a torch zip: refused, never held whole (was 2 GB)."""
    import os
    import subprocess
    import sys
    import zipfile

    from tests.helpers import REPO_ROOT

    path = tmp_path / "bomb.pt"
    torch.save({"w": torch.ones(4)}, path)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive, \
            archive.open("bomb/extra.pkl", "w", force_zip64=True) as member:
        member.write(b"\x80\x02")
        zeros = bytes(1 << 24)
        for _ in range(18):
            member.write(zeros)
    assert path.stat().st_size < 2_000_000
    # VmHWM is this process's own peak: ru_maxrss would include what a child inherits from a large pytest.
    code = ("import atexit, re, runpy, sys\n"
            "atexit.register(lambda: print('PEAK', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())"
            "[1], file=sys.stderr))\n"
            f"sys.argv = ['weightdoctor', 'inspect', {str(path)!r}]\n"
            "runpy.run_module('weightdoctor', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    # refused by the archive-wide budget of what its pickles may inflate to (64x the file), or by the per-member one
    assert result.returncode == 2 and ("inflate to more than" in result.stderr and "zip bomb" in result.stderr
                                       or "decompresses to more than" in result.stderr), result.stderr
    peak_kb = int(result.stderr.split("PEAK ")[1].split()[0])
    assert peak_kb < 600 * 1024  # the 256 MB cap plus the interpreter, not the 300 MB inflated twice


def test_an_archive_without_a_version_record_is_not_called_healthy(tmp_path: Path) -> None:
    """torch.load refuses a zip without `version`; so must the torch-free reader, which would read it fine."""
    import zipfile

    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(4)}, good)
    bad = tmp_path / "no_version.pt"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as target:
        for item in source.infolist():
            if not item.filename.endswith("version"):
                target.writestr(item, source.read(item))
    assert run_cli("inspect", str(good)).exit_code == 0
    result = run_cli("inspect", str(bad))
    assert result.exit_code == 2 and "no_version.pt" in result.stderr and 'hasRecord("version")' in result.stderr


def test_item_opcodes_fill_containers_only(tmp_path: Path) -> None:
    """Protocol 4 sends a file to the restricted fallback unpickler; SETITEM there on a tensor (not a dict)
    would write into whatever memory the tensor views. Refused, as torch's weights_only loader does."""
    body = (_global("collections", "OrderedDict") + b")R(" + _text("w") + _tensor() + b"u"
            + _text("w") + _tensor() + _int(0) + _int(7) + b"s" + b"\x86" + b".")
    path = _write(tmp_path / "setitem.pt", b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and "refused SETITEM on Tensor" in result.stderr, result.stderr


def test_meta_tensors_are_not_tied_to_each_other(tmp_path: Path) -> None:
    from weightdoctor.checkpoint import open_checkpoint

    path = tmp_path / "meta.pt"
    torch.save({"a": torch.empty(3, 3, device="meta"), "b": torch.empty(3, 3, device="meta"),
                "c": torch.empty(4, device="meta")}, path)
    checkpoint = open_checkpoint(path)
    assert checkpoint.num_params == 22 and checkpoint.alias_groups() == []
