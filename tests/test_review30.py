"""Review of 6b61901 and fixlist18: an `_extra_state` pickle cut at the 16 MiB bound, error lines kept on one line
with their spaces, "a path, not a command", and the safe_globals advice."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli
from weightdoctor.security.extra_state import MAX_EXTRA_STATE_BYTES, pickle_loads_problem

# What pickle.loads would run after the cut (never unpickled here: the scanner reads opcodes).
_SHELL_CALL = b"0cposix\nsystem\n(S'echo the extra state ran'\ntR."


def _cut_inside_a_bin_int(cut: int, proto: bool) -> bytes:
    """A pickle whose BININT's 4-byte argument straddles byte `cut`, with a call of posix.system after it: a
    BINUNICODE string fills the bytes before. Without PROTO it is a protocol 1 pickle, which pickle.loads reads
    all the same."""
    head = b"\x80\x02" if proto else b""
    length = cut - len(head) - 5 - 2  # the BININT opcode at cut - 2, its argument running 2 bytes past the cut
    return head + b"X" + struct.pack("<I", length) + b"a" * length + b"J" + struct.pack("<i", 7) + _SHELL_CALL


def test_a_pickle_cut_inside_a_fixed_width_argument_is_refused_as_running_past_the_bytes_read() -> None:
    """pickletools says "not enough data in stream to read int4" when the cut falls in a BININT's argument (or a
    length): `_ran_out` did not know the wording, so a protocol 1 pickle (no PROTO) was let through (None), with
    os.system past the cut, and a protocol 2 one was refused as one that "starts like a pickle but cannot be
    parsed"."""
    for proto in (False, True):
        data = _cut_inside_a_bin_int(1000, proto)
        problem = pickle_loads_problem(data[:1000], prefix=True)
        assert problem == ("suspicious", "holds a pickle that runs past the first 1,000 bytes weightdoctor scans of "
                           "one (not enough data in stream to read int4): what the rest imports is not known"), problem
        # Whole, it names the call: the cut alone hid it.
        assert pickle_loads_problem(data) == ("dangerous", "holds a pickle that names posix.system")



def test_a_length_claiming_4_gb_early_in_the_bytes_read_is_refused() -> None:
    """A BINBYTES claiming 4 GB at byte 3, in the bytes read of a larger tensor: pickletools' "only N remain" is
    judged as a pickle running past the cut, refused (as whole, below the bound, it is one no pickler writes)."""
    data = b"\x80\x04B" + struct.pack("<I", 2**32 - 1) + b"\0" * 2000
    verdict, what = pickle_loads_problem(data[:1000], prefix=True) or ("", "")
    assert (verdict, what.split(" (")[0]) == ("suspicious", "holds a pickle that runs past the first 1,000 bytes "
                                                            "weightdoctor scans of one"), what
    assert (pickle_loads_problem(data) or ("",))[0] == "suspicious"

def test_a_17_mib_protocol_1_extra_state_cut_at_the_bound_is_refused(tmp_path: Path) -> None:
    data = _cut_inside_a_bin_int(MAX_EXTRA_STATE_BYTES, proto=False)
    data += b"\0" * ((17 << 20) - len(data))
    path = tmp_path / "model.safetensors"
    save_file({"layers.0.fc1._extra_state": torch.frombuffer(bytearray(data), dtype=torch.uint8),
               "layers.0.fc1.weight": torch.ones(2, 2)}, path)
    del data
    result = run_cli("inspect", str(path), "--json")
    assert result.exit_code == 2 and result.stdout == "", result.stdout
    assert result.stderr.startswith(
        f"error: {path}: suspicious: the uint8 tensor layers.0.fc1._extra_state holds a pickle that runs past the "
        "first 16,777,216 bytes weightdoctor scans of one (not enough data in stream to read int4)"), result.stderr


def _rezipped(source: Path, target: Path) -> None:
    """`source` (a torch.save zip) zipped again with every member deflated, as a re-zip by hand does."""
    import zipfile

    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))


def test_the_printed_safe_globals_block_runs_as_written_for_an_omegaconf_checkpoint(tmp_path: Path) -> None:
    """A Hydra / NeMo / Lightning checkpoint's OmegaConf config names 10 types weights_only refuses: the advice
    printed 8 and `... (2 more)` inside the list, a SyntaxError when pasted, and which two were left out unsaid."""
    import re
    import subprocess
    import sys

    from omegaconf import OmegaConf

    torch.save({"model": {"w": torch.arange(4.0)}, "cfg": OmegaConf.create({"a": 1, "b": [1, 2]})},
               tmp_path / "saved.pt")
    _rezipped(tmp_path / "saved.pt", tmp_path / "zipped.pt")
    result = run_cli("inspect", tmp_path / "zipped.pt")
    assert result.exit_code == 2 and "is compressed (deflate)" in result.stderr, result.stderr
    found = re.search(r"re-save it to a new file with torch imported, "
                      r"(torch\.save\(torch\.load\('[^']*', weights_only=True\), "
                      r"'[^']*'\)) inside "
                      r"`(with torch\.serialization\.safe_globals\(\[([^`]*)\]\):)`", result.stderr)
    assert found is not None, result.stderr
    names = found.group(3).split(", ")
    assert "omegaconf.dictconfig.DictConfig" in names and "typing.Any" in names, names
    assert "refuses the 10 object types it holds" in result.stderr and len(names) == 10, names
    # The block as printed, with the modules it names imported ("have their modules imported"): it names the file
    # and a new one beside it.
    imports = "".join(f"import {module}\n" for module in sorted({name.rpartition(".")[0] for name in names}))
    script = f"import torch\n{imports}{found.group(2)}\n    {found.group(1)}\nprint('re-saved')\n"
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and ran.stdout == "re-saved\n", ran.stderr
    # The re-saved copy is read in place, its config among the other entries.
    result = run_cli("inspect", tmp_path / "zipped-resaved.pt", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["nested_key"], [t["name"] for t in report["tensors"]]) == ("model", ["w"]), report["tensors"]


def test_a_word_of_another_tool_that_is_a_file_here_followed_by_options_is_said_as_a_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`weightdoctor scan --json` beside ./scan suggested `weightdoctor inspect --json`, which has no file to read
    ("Missing argument 'source'"); only `scan` alone was said as the path it is."""
    torch.save({"w": torch.zeros(2)}, tmp_path / "scan")
    monkeypatch.chdir(tmp_path)
    line = run_cli("scan", "--json").stderr.strip()
    assert "'scan' is a path, not a command" in line and " inspect scan --json (commands: " in line, line
    # A word that is not an option after it (a file, or an option's value) keeps `scan` the other tool's command.
    for args, suggested in ((("scan", "model.pt"), " inspect model.pt "),
                            (("scan", "--", "-x.pt"), " inspect -- -x.pt "),
                            (("scan", "--fail-on", "warn"), " inspect --fail-on warn ")):
        line = run_cli(*args).stderr.strip()
        assert "No such command 'scan'; inspect scans a pickle" in line and suggested in line, line


def test_a_path_pickled_on_python_3_13_is_inert_data(tmp_path: Path) -> None:
    """Python 3.13 moved pathlib's classes to pathlib._local, so a path pickled there (a Lightning checkpoint's
    dirpath saved on 3.13) names `pathlib._local.PosixPath`: it was an unknown global, the file refused."""
    import io
    import pathlib

    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.ones(2)}, "dirpath": pathlib.PosixPath("/tmp/run")}, buffer,
               _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    assert b"pathlib\nPosixPath" in data
    (tmp_path / "saved_on_313.pt").write_bytes(data.replace(b"pathlib\nPosixPath", b"pathlib._local\nPosixPath"))
    result = run_cli("inspect", str(tmp_path / "saved_on_313.pt"), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["security"]["verdict"] == "safe"
    assert report["other_entries"] == ["dirpath (pathlib._local.PosixPath, read as inert data)"]
