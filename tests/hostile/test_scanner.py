"""The scanner's parts: the policy against torch's allowlist, the opcode walk, containers, messages, --verify."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from fixtures.hostile import SYSTEM, payloads
from tests.helpers import run_cli, run_json
from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.checkpoint.pytorch_format import check_torch_version
from weightdoctor.errors import CorruptCheckpoint, UnsafePickle, UnsupportedEnvironment, UnsupportedFormat
from weightdoctor.security import classify, scan_bytes, scan_file
from weightdoctor.security.policy import TORCH_WEIGHTS_ONLY_GLOBALS


def test_safe_list_is_within_torch_weights_only_allowlist() -> None:
    from torch._weights_only_unpickler import _get_allowed_globals

    allowed = set(_get_allowed_globals())
    beyond_torch = TORCH_WEIGHTS_ONLY_GLOBALS - allowed
    assert not beyond_torch, sorted(beyond_torch)
    missing = {name for name in allowed if classify(*name.rsplit(".", 1)) != "safe"}
    assert not missing, f"torch allows these but the policy does not: {sorted(missing)}"


@pytest.mark.parametrize("qualified", [
    "os.system", "posix.system", "nt.system", "posix.popen", "subprocess.Popen", "subprocess.check_output",
    "builtins.eval", "builtins.exec", "builtins.compile", "builtins.getattr", "builtins.open", "builtins.__import__",
    "__builtin__.eval", "runpy.run_path", "runpy._run_code", "socket.socket", "shutil.rmtree", "sys.modules",
    "pty.spawn", "pickle.loads", "_pickle.loads", "pdb.set_trace", "ctypes.CDLL", "importlib.import_module",
    "webbrowser.open", "requests.get", "requests.api.request", "httplib.HTTPConnection", "http.client.HTTPConnection",
    "aiohttp.client.ClientSession", "functools.partial", "operator.attrgetter", "operator.methodcaller",
    "types.CodeType", "types.FunctionType", "marshal.loads", "torch.load", "torch.hub.load",
    "numpy.testing._private.utils.runstring", "torch.serialization.os.system", "torch._utils.__globals__",
    "commands.getoutput",
])
def test_dangerous_globals(qualified: str) -> None:
    module, name = qualified.rsplit(".", 1)
    if qualified == "torch.serialization.os.system":
        module, name = "torch.serialization", "os.system"
    assert classify(module, name) == "dangerous"


@pytest.mark.parametrize("qualified", ["__main__.Net", "builtins.dict", "transformers.BertConfig",
                                       "argparse.ArgumentParser", "pathlib.PurePath", "omegaconf.OmegaConf",
                                       "numpy.random._pickle.__randomstate_ctor"])
def test_unknown_globals(qualified: str) -> None:
    assert classify(*qualified.rsplit(".", 1)) == "unknown"


@pytest.mark.parametrize("qualified", ["pathlib.PosixPath", "types.SimpleNamespace", "argparse.Namespace",
                                       "omegaconf.dictconfig.DictConfig",
                                       "lightning_fabric.utilities.data.AttributeDict"])
def test_configuration_objects_are_inert(qualified: str) -> None:
    """Read as stand-ins that are never imported (weightdoctor.checkpoint.inert), not as the classes."""
    assert classify(*qualified.rsplit(".", 1)) == "inert"


def test_stack_global_with_computed_operands_is_suspicious() -> None:
    # STACK_GLOBAL fed by the result of a (safe) call: the scanner cannot know the name, so it refuses.
    data = b"\x80\x04\x8c\x07_codecs\x8c\x06encode\x93\x8c\x02os\x8c\x06latin1\x86R\x8c\x06system\x93N\x85R."
    report = scan_bytes(data)
    assert report.verdict == "suspicious"
    assert any(g.module == "<computed>" and g.opcode == "STACK_GLOBAL" for g in report.globals)


@pytest.mark.parametrize("data, fragment", [
    (b"\x80\x06N.", "unsupported pickle protocol 6"),
    (b"\x80\x02h\x05.", "memo entry 5 is read before it is written"),
    (b"\x80\x02N", "before seeing STOP"),
    (b"\x80\x02\x93.", "stack underflow"),
    (b"\x80\x02e.", "no MARK"),
    (b"\x80\x02\xff.", "unknown"),
])
def test_unparseable_pickles_are_findings(data: bytes, fragment: str) -> None:
    report = scan_bytes(data)
    assert report.verdict == "suspicious"
    assert any(fragment in p.message for p in report.problems), report.problems


def test_what_was_found_before_the_error_is_reported() -> None:
    data = pickle.dumps(payloads(Path("/nonexistent/x"))["eval"][0], protocol=2)[:-4]
    report = scan_bytes(data)
    assert report.verdict == "dangerous"
    assert "__builtin__.eval" in report.problems[0].message and "cannot be parsed" in report.problems[0].message


def _hostile_zip(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.pt"
    torch.save({"w": torch.ones(3), "x": payloads(tmp_path / "SENTINEL")["os-system"][0]}, path)
    return path


def test_deflated_data_pkl(tmp_path: Path) -> None:
    source = _hostile_zip(tmp_path)
    target = tmp_path / "deflated.pt"
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for info in archive.infolist():
            out.writestr(info.filename, archive.read(info.filename))
    report = scan_file(target)
    assert report.verdict == "dangerous" and SYSTEM in {g.qualified for g in report.globals}


def test_zip_without_central_directory_is_walked_by_local_headers(tmp_path: Path) -> None:
    raw = _hostile_zip(tmp_path).read_bytes()
    cut = tmp_path / "no-central-directory.pt"
    cut.write_bytes(raw[: raw.find(b"PK\x01\x02")])
    report = scan_file(cut)
    assert report.verdict == "dangerous" and SYSTEM in {g.qualified for g in report.globals}
    assert any("local headers" in note for note in report.notes)
    assert not (tmp_path / "SENTINEL").exists()


def test_legacy_with_unknown_storage_layout_is_carved(tmp_path: Path) -> None:
    clean = tmp_path / "fp8-legacy.pt"
    torch.save({"t": torch.zeros(16, dtype=torch.float8_e4m3fn), "u": torch.ones(3)}, clean,
               _use_new_zipfile_serialization=False)
    assert scan_file(clean).verdict == "safe"
    hostile = tmp_path / "fp8-legacy-then-payload.pt"
    hostile.write_bytes(clean.read_bytes() + pickle.dumps(payloads(tmp_path / "S")["exec"][0], protocol=2))
    report = scan_file(hostile)
    assert report.verdict == "dangerous" and "__builtin__.exec" in {g.qualified for g in report.globals}


def test_trailing_garbage_after_a_zip_is_suspicious(fx: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "trailing.bin"
    path.write_bytes((fx["files"] / "bert.bin").read_bytes() + b"\x00garbage")
    report = scan_file(path)
    assert report.verdict == "suspicious" and "follow the end of the checkpoint" in report.problems[0].message


def test_unsafe_message_is_one_line_with_verdict_global_and_place(tmp_path: Path) -> None:
    path = _hostile_zip(tmp_path)
    with pytest.raises(UnsafePickle) as caught:
        open_checkpoint(path)
    text = caught.value.one_line()
    assert "\n" not in text
    assert text.startswith(f"{path}: dangerous: {SYSTEM} (dangerous, ")
    assert "hostile/data.pkl at byte" in text and text.endswith("nothing was unpickled")


def test_protocol_0_pickle_without_torch_magic_is_scanned(tmp_path: Path) -> None:
    path = tmp_path / "p0.pkl"
    path.write_bytes(pickle.dumps(payloads(tmp_path / "S")["os-system"][0], protocol=0))
    with pytest.raises(UnsafePickle, match="dangerous"):
        open_checkpoint(path)
    plain = tmp_path / "p0-plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=0))
    # Read as the plain pickle it is (as protocol 2 would be), which holds no weights.
    with pytest.raises(CorruptCheckpoint, match="no state dict .* top-level entries: a \\(int: 1\\)"):
        open_checkpoint(plain)
    (tmp_path / "text.pkl").write_bytes(b"not a pickle at all\n")
    with pytest.raises(UnsupportedFormat):
        open_checkpoint(tmp_path / "text.pkl")


@pytest.mark.parametrize("version, ok", [("2.9.1", False), ("2.10.0", True), ("2.13.0+cpu", True),
                                         ("1.13.1", False), ("3.0.0a0", True), ("garbage", False)])
def test_torch_version_is_enforced(version: str, ok: bool) -> None:
    if ok:
        check_torch_version(version)
    else:
        with pytest.raises(UnsupportedEnvironment, match=">= 2.10"):
            check_torch_version(version)


def test_old_torch_refused_before_loading(fx: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # A legacy (non-zip) pickle can only be read by torch's unpickler: an old torch is refused.
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    result = run_cli("inspect", fx["files"] / "bert-legacy.bin")
    assert result.exit_code == 2 and "torch 2.5.1 is installed" in result.stderr


def test_zip_checkpoint_read_without_torchs_unpickler(fx: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # A regular zip checkpoint is read by weightdoctor's own stand-in unpickler, never by torch.load:
    # the torch version does not matter, and torch.load is not called.
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    result = run_cli("inspect", fx["files"] / "bert.bin", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["num_tensors"] > 0


def _flip_storage_byte(source: Path, target: Path) -> str:
    raw = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size > 8)
    name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
    raw[info.header_offset + 30 + name_len + extra_len + 5] ^= 0x10
    target.write_bytes(bytes(raw))
    return info.filename


def test_verify_finds_a_flipped_bit_that_torch_loads_silently(fx: dict[str, Path], tmp_path: Path) -> None:
    source = fx["files"] / "bert.bin"
    code, data = run_json("inspect", source, "--verify")
    assert code == 0 and data["verify"]["mismatches"] == [] and data["verify"]["members_checked"] >= 10
    flipped = tmp_path / "flipped.bin"
    member = _flip_storage_byte(source, flipped)
    torch.load(flipped, weights_only=True)  # torch does not notice
    code, data = run_json("inspect", flipped, "--verify")
    assert code == 1
    assert [m["member"] for m in data["verify"]["mismatches"]] == [member]
    result = run_cli("inspect", flipped, "--verify")
    assert result.exit_code == 1 and "CRC mismatch" in result.stdout
    code, data = run_json("inspect", flipped)
    assert code == 0 and data["verify"] is None


def test_verify_on_sharded_and_safetensors(fx: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    shutil.copytree(fx["bert-sharded-bin"], folder)
    shard = sorted(folder.glob("pytorch_model-*.bin"))[1]
    _flip_storage_byte(fx["bert-sharded-bin"] / shard.name, shard)
    code, data = run_json("inspect", folder, "--verify")
    assert code == 1 and data["verify"]["mismatches"][0]["file"] == shard.name
    code, data = run_json("inspect", fx["bert"], "--verify")
    assert code == 0 and data["verify"]["files_checked"] == 0 and "no checksum" in data["verify"]["notes"][0]


def test_scan_bytes_of_real_save_in_every_protocol() -> None:
    for protocol in (2, 3, 4, 5):
        buffer = io.BytesIO()
        torch.save({"w": torch.ones(2)}, buffer, pickle_protocol=protocol)
        assert scan_bytes(buffer.getvalue()).verdict == "safe"
        buffer = io.BytesIO()
        torch.save({"w": torch.ones(2)}, buffer, pickle_protocol=protocol, _use_new_zipfile_serialization=False)
        assert scan_bytes(buffer.getvalue()).verdict == "safe", protocol


def test_file_swapped_between_scan_and_load_is_refused(fx: dict[str, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """What torch loads must be what was scanned: a swap after the scan is caught by the file's identity."""
    import os

    from weightdoctor.checkpoint import pytorch_format
    from weightdoctor.errors import CorruptCheckpoint

    path = tmp_path / "model.bin"
    shutil.copyfile(fx["files"] / "bert.bin", path)
    real_scan = pytorch_format.scan_or_refuse

    def scan_then_swap(target: Path, label: str | None = None):  # type: ignore[no-untyped-def]
        report = real_scan(target, label)
        replacement = tmp_path / "swap.bin"
        shutil.copyfile(fx["files"] / "gpt2-tied.bin", replacement)
        os.replace(replacement, target)
        return report

    monkeypatch.setattr(pytorch_format, "scan_or_refuse", scan_then_swap)
    with pytest.raises(CorruptCheckpoint, match="changed while it was being scanned"):
        open_checkpoint(path)


def test_carving_has_a_budget() -> None:
    """Bytes built so that every carving candidate walks far are given up on quickly, as a finding."""
    import time

    from weightdoctor.security import scan

    data = b"\x80\x02" * 3000 + b"N" * (1 << 20)
    collector = scan._Collector(None)
    started = time.perf_counter()
    original = scan.MAX_CARVED_BYTES
    scan.MAX_CARVED_BYTES = 8 << 20
    try:
        scan._carve(io.BytesIO(data), 0, len(data), collector, "storage data")
    finally:
        scan.MAX_CARVED_BYTES = original
    assert time.perf_counter() - started < 30
    assert collector.problems and "gave up" in collector.problems[-1].message
