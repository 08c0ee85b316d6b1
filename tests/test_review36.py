"""Review 36: the scans of data a loader unpickles later (TE `_extra_state`, io.BytesIO buffers, DCP shards)."""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import RunsAShellCommand, one_error_line, run_cli


def _torch_saved(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class _BufferBuiltByACall:
    """An io.BytesIO pickled as the call `io.BytesIO(payload)` (REDUCE), not as pickle writes one (its state)."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return io.BytesIO, (self.payload,)


def test_a_bytesio_built_from_its_argument_holding_a_hostile_archive_is_refused(tmp_path: Path) -> None:
    # TE before 1.x torch.loads the buffer: built by the call, it holds the archive that calls os.system.
    payload = _torch_saved({"scale": RunsAShellCommand()})
    path = tmp_path / "model.pt"
    torch.save({"layer.weight": torch.ones(2), "layer._extra_state": _BufferBuiltByACall(payload)}, path)
    loaded = torch.load(path, weights_only=False)["layer._extra_state"]
    assert isinstance(loaded, io.BytesIO) and loaded.getvalue() == payload  # what TE would torch.load
    line = one_error_line(run_cli("inspect", str(path)))
    assert "dangerous: the io.BytesIO at layer._extra_state holds a pickle that names posix.system" in line, line


def test_a_bytesio_built_from_its_argument_holding_plain_data_is_read(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"layer.weight": torch.ones(2),
                "layer._extra_state": _BufferBuiltByACall(_torch_saved({"scale": torch.ones(1)}))}, path)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 0, result.stderr
    assert "layer.weight" in result.stdout


def test_accelerate_custom_checkpoint_0_is_scanned_whatever_decoys_the_folder_lists_first(tmp_path: Path) -> None:
    # load_state reads custom_checkpoint_0.pkl for the first registered object; 2,000 decoys filled the 64 scanned.
    from safetensors.torch import save_file

    folder = tmp_path / "state"
    folder.mkdir()
    save_file({"weight": torch.ones(2)}, folder / "model.safetensors")
    torch.save(RunsAShellCommand(), folder / "custom_checkpoint_0.pkl")
    torch.save({"step": 1}, folder / "decoy.pkl")
    count = 1
    # Until the folder lists the hostile file past the first 64 (the listing's order is the file system's).
    while "custom_checkpoint_0.pkl" in [entry.name for entry in os.scandir(folder)][:70]:
        for index in range(count, count + 500):
            os.link(folder / "decoy.pkl", folder / f"custom_checkpoint_{index}.pkl")
        count += 500
    line = one_error_line(run_cli("inspect", str(folder)))
    assert line.startswith(f"error: {folder / 'custom_checkpoint_0.pkl'}: dangerous: posix.system"), line
    assert "accelerate's load_state torch.loads this file" in line


def _deepspeed_run(folder: Path, steps: int, hostile_step: int) -> Path:
    """A DeepSpeed run folder of `steps` global_stepN/ folders, two ranks each; one optimizer state of
    `hostile_step` calls os.system. Returns that file."""
    model, optim = folder / "model.pt", folder / "optim.pt"
    torch.save({"module": {"weight": torch.ones(2)}}, model)
    torch.save({"optimizer_state_dict": {"state": {}}}, optim)
    for step in range(1, steps + 1):
        (folder / f"global_step{step}").mkdir()
        for rank in range(2):
            os.link(model, folder / f"global_step{step}" / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt")
            os.link(optim, folder / f"global_step{step}" / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    model.unlink()
    optim.unlink()
    hostile = folder / f"global_step{hostile_step}" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    hostile.unlink()
    torch.save({"optimizer_state_dict": RunsAShellCommand()}, hostile)
    (folder / "zero_to_fp32.py").write_text("# DeepSpeed's script\n")
    return hostile


def test_deepspeed_states_of_the_latest_step_are_scanned_before_the_bound(tmp_path: Path) -> None:
    # 130 steps of two ranks: the first 256 files by name were all model states; zero_to_fp32.py gathers the
    # latest step's optimizer states, and the message names that step.
    hostile = _deepspeed_run(tmp_path, 130, 130)
    (tmp_path / "latest").write_text("global_step130")
    line = one_error_line(run_cli("inspect", str(tmp_path)))
    assert line.startswith(f"error: {hostile}: dangerous: this DeepSpeed states file names posix.system"), line


def test_deepspeed_states_of_the_step_the_latest_file_names_are_scanned_whatever_its_tag(tmp_path: Path) -> None:
    _deepspeed_run(tmp_path, 130, 1)
    (tmp_path / "global_step1").rename(tmp_path / "best")  # save_checkpoint(tag="best")
    (tmp_path / "latest").write_text("best")
    line = one_error_line(run_cli("inspect", str(tmp_path)))
    assert "best/zero_pp_rank_0_mp_rank_00_optim_states.pt: dangerous: this DeepSpeed states file names " \
           "posix.system" in line, line


def test_deepspeed_states_of_the_step_folder_read_are_scanned_first(tmp_path: Path) -> None:
    # Read directly, a ZeRO-3 step folder's message names zero_to_fp32.py: its own states are scanned first.
    hostile = _deepspeed_run(tmp_path, 130, 7)
    (tmp_path / "latest").write_text("global_step130")
    for rank in range(2):  # ZeRO-3 placeholders, as zero_to_fp32.py's input
        path = tmp_path / "global_step7" / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt"
        path.unlink()
        torch.save({"module": {"weight": torch.empty(0), "bias": torch.empty(0)}}, path)
    line = one_error_line(run_cli("inspect", str(tmp_path / "global_step7")))
    assert line.startswith(f"error: {hostile}: dangerous: this DeepSpeed states file names posix.system"), line


def _call_pickle(module: str, name: str, args: tuple[Any, ...], protocol: int) -> bytes:
    """A pickle calling `module.name(*args)`: GLOBAL at protocol 2, STACK_GLOBAL (a dotted name) at 4."""
    import pickle

    def body(value: Any) -> bytes:
        return pickle.dumps(value, protocol=protocol)[2:-1]  # without PROTO and STOP (no FRAME at this size)

    imported = (b"c" + module.encode() + b"\n" + name.encode() + b"\n" if protocol == 2
                else body(module) + body(name) + b"\x93")
    return (bytes([0x80, protocol]) + imported + b"".join(map(body, args)) + {1: b"\x85", 2: b"\x86"}[len(args)]
            + b"R.")


@pytest.mark.parametrize(("module", "name", "args", "protocol", "shown"), [
    # Each builds a class of torch's that touches files or sockets when DCP's pickle.load builds it.
    ("torch.export.pt2_archive._package", "PT2ArchiveWriter", ("victim",), 2,
     "torch.export.pt2_archive._package.PT2ArchiveWriter"),
    ("torch", "_C.PyTorchFileWriter", ("victim",), 4, "torch._C.PyTorchFileWriter"),
    ("torch.distributed", "FileStore", ("victim", 1), 2, "torch.distributed.FileStore"),
    ("torch.distributed", "TCPStore", ("203.0.113.1", 29500), 2, "torch.distributed.TCPStore"),
])
def test_a_dcp_metadata_building_a_torch_class_that_writes_files_or_connects_is_refused(
        tmp_path: Path, module: str, name: str, args: tuple[Any, ...], protocol: int, shown: str) -> None:
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    folder = tmp_path / "step-10"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.distributed not initialized: a single process saves
        dcp.save({"model": torch.nn.Linear(2, 2).state_dict()}, checkpoint_id=str(folder))
    line = one_error_line(run_cli("inspect", str(folder)))
    assert "dcp_to_torch_save" in line and "suspicious" not in line, line  # the genuine save is named, not refused
    (folder / ".metadata").write_bytes(_call_pickle(module, name, args, protocol))
    line = one_error_line(run_cli("inspect", str(folder)))
    assert line.startswith(f"error: {folder / '.metadata'}: suspicious: the .metadata of this "
                           f"torch.distributed.checkpoint (DCP) folder names {shown}; DCP reads it with "
                           "pickle.load"), line


def test_the_pickles_built_for_the_dcp_metadata_test_run_what_they_name(tmp_path: Path) -> None:
    # The gadget is real: pickle.load of the .metadata above overwrites the path it names with a zip.
    import pickle

    victim = tmp_path / "victim"
    victim.write_text("precious")
    pickle.loads(_call_pickle("torch", "_C.PyTorchFileWriter", (str(victim),), 4))
    assert victim.read_bytes()[:4] == b"PK\x03\x04"


def _npy_with_header(path: Path, descr: str, body: bytes) -> Path:
    """A .npy (format 1.0, or 2.0 past its 64 KiB of header) whose header is written as given, `body` after it."""
    header = ("{'descr': " + descr + ", 'fortran_order': False, 'shape': (1,), }").encode("latin1")
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    start = (b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) if len(header) < 1 << 16
             else b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)))
    path.write_bytes(start + header + body)
    return path


@pytest.mark.parametrize("descr", ["'O'", "'object'", "'<O'", "'O8'", "'\\x4f'", "[('a', 'O')]"],
                         ids=["O", "object", "little-O", "O8", "escaped", "record"])
def test_a_npy_whose_header_spells_an_object_dtype_otherwise_than_np_save_has_its_pickle_scanned(
        tmp_path: Path, descr: str) -> None:
    import pickle

    import numpy as np

    path = _npy_with_header(tmp_path / "weights.npy", descr, pickle.dumps([RunsAShellCommand()]))
    with pytest.raises(ValueError, match="Object arrays cannot be loaded when allow_pickle=False"):
        np.load(path)  # numpy reads it as objects: allow_pickle=True would unpickle what follows
    line = one_error_line(run_cli("inspect", str(path)))
    assert line.startswith(f"error: {path}: dangerous: posix.system"), line
    assert "numpy.load(path, allow_pickle=True) unpickles them" in line


def test_a_npy_record_with_a_field_named_with_an_o_is_named_as_numpy_not_refused(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "weights.npy"
    np.save(path, np.zeros(4, dtype=[("Output", "<f4"), ("Offset", "<i4")]))
    line = one_error_line(run_cli("inspect", str(path)))
    assert "this is a NumPy .npy array" in line and f"numpy.load({str(path)!r}) reads it" in line, line
    assert "dangerous" not in line and "suspicious" not in line


def _long_record_descr(fields: int) -> str:
    return "[" + ", ".join(f"('Out{index}', '<f4')" for index in range(fields)) + "]"


def test_a_npy_header_too_long_to_parse_that_may_name_objects_has_its_pickle_scanned(tmp_path: Path) -> None:
    import pickle

    descr = _long_record_descr(60_000)  # over the 1 MiB parsed; an O in every field name
    path = _npy_with_header(tmp_path / "weights.npy", descr, pickle.dumps([RunsAShellCommand()]))
    line = one_error_line(run_cli("inspect", str(path)))
    assert line.startswith(f"error: {path}: dangerous: posix.system"), line
    # The same header before an array's raw bytes (no pickle): named as numpy's, not refused.
    path = _npy_with_header(tmp_path / "plain.npy", descr, bytes(240_000))
    line = one_error_line(run_cli("inspect", str(path)))
    assert "this is a NumPy .npy array" in line and "suspicious" not in line, line


def test_the_dcp_save_a_run_folder_message_names_as_latest_is_the_one_scanned(tmp_path: Path) -> None:
    # step-030 and step-30 are numbered alike: the scan took the first as the latest, the message the second.
    import pickle
    import shutil

    dcp = pytest.importorskip("torch.distributed.checkpoint")
    genuine = tmp_path / "genuine"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.distributed not initialized: a single process saves
        dcp.save({"model": torch.nn.Linear(2, 2).state_dict()}, checkpoint_id=str(genuine))
    run = tmp_path / "run"
    for step in range(1, 31):
        shutil.copytree(genuine, run / f"step-{step:03d}")
    shutil.copytree(genuine, run / "step-30")
    line = one_error_line(run_cli("inspect", str(run)))
    assert f"dcp_to_torch_save({str(run / 'step-30')!r}, {str(run / 'step-30.state_dict.pt')!r})" in line, line
    (run / "step-30" / ".metadata").write_bytes(pickle.dumps(RunsAShellCommand(), protocol=2))
    line = one_error_line(run_cli("inspect", str(run)))
    assert line.startswith(f"error: {run / 'step-30' / '.metadata'}: dangerous: the .metadata of this "
                           "torch.distributed.checkpoint (DCP) folder names posix.system"), line
