"""review32: the nested-payload scans (bytes values, DCP shards and .metadata, accelerate custom checkpoints,
DeepSpeed states) against files the real libraries write, and the ways around them a reviewer found."""

from __future__ import annotations

import argparse
import io
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import RunsAShellCommand as _RunsAShellCommand
from tests.helpers import one_error_line as _one_error_line
from tests.helpers import run_cli, run_json


def _trained_adamw() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_a_pickle_dumps_of_an_optimizer_state_kept_as_bytes_is_not_refused(tmp_path: Path, protocol: int) -> None:
    """pickle.dumps writes each tensor's storage as torch.storage._load_from_bytes(<torch.save bytes>): a training
    state keeping `pickle.dumps(optimizer.state_dict())` was refused as dangerous for naming it, though the bytes
    it torch.loads are a clean archive. One whose nested archive runs code is still refused."""
    model, optimizer = _trained_adamw()
    good = tmp_path / "state.pt"
    torch.save({"model_state_dict": model.state_dict(),
                "optimizer": pickle.dumps(optimizer.state_dict(), protocol=protocol)}, good)
    code, report = run_json("inspect", str(good))
    assert code == 0 and report["security"]["verdict"] == "safe", report

    class _StorageOfAHostileArchive:
        def __reduce__(self) -> tuple[Any, tuple[bytes]]:
            buffer = io.BytesIO()
            torch.save({"hook": _RunsAShellCommand()}, buffer)
            return torch.storage._load_from_bytes, (buffer.getvalue(),)

    bad = tmp_path / "bad.pt"
    torch.save({"model_state_dict": model.state_dict(),
                "optimizer": pickle.dumps({"state": _StorageOfAHostileArchive()}, protocol=protocol)}, bad)
    line = _one_error_line(run_cli("inspect", str(bad)))
    assert line.startswith(f"error: {bad}: dangerous: the bytes value at optimizer holds a pickle whose "
                           "torch.storage._load_from_bytes torch.loads bytes that are not safe (dangerous: "
                           "posix.system"), line


@pytest.mark.parametrize("where", ["namespace", "set"])
def test_a_pickle_kept_as_bytes_inside_a_namespace_or_a_set_is_refused(tmp_path: Path, where: str) -> None:
    """The walk entered dicts, lists and tuples only: `args.blobs[0]` of an argparse.Namespace (read as inert
    data, its attributes its pickled state) and a set's member were never scanned, the file called safe."""
    payload = pickle.dumps(_RunsAShellCommand())
    held: object = (argparse.Namespace(lr=1e-3, blobs=[payload]) if where == "namespace" else {payload})
    bad = tmp_path / "state.pt"
    torch.save({"model_state_dict": {"fc.weight": torch.zeros(2, 2)}, "args": held}, bad)
    line = _one_error_line(run_cli("inspect", str(bad)))
    expected = "args.blobs.0" if where == "namespace" else "args.0"
    assert line.startswith(f"error: {bad}: dangerous: the bytes value at {expected} holds a pickle that names "
                           "posix.system"), line

    good = tmp_path / "good.pt"
    torch.save({"model_state_dict": {"fc.weight": torch.zeros(2, 2)},
                "args": argparse.Namespace(lr=1e-3, blobs=[pickle.dumps({"epoch": 3})], out=b"\x89PNG\r\n")}, good)
    code, report = run_json("inspect", str(good))
    assert code == 0 and report["security"]["verdict"] == "safe", report


class _ExecsItsSource:
    """What torch.fx's GraphModule pickles as: `reduce_graph_module(body, import_block)` execs import_block with
    the code it is given (a function of torch, which the DCP and DeepSpeed scans let through as torch's own)."""

    def __reduce__(self) -> tuple[Any, tuple[dict[str, str], str]]:
        import torch.fx.graph_module

        return torch.fx.graph_module.reduce_graph_module, (
            {"code": "\ndef forward(self):\n    pass\n"}, "import os; os.system('echo the payload ran')\n")


def _dcp_save(folder: Path, state: dict[str, object]) -> None:
    import warnings

    import torch.distributed.checkpoint as dcp

    folder.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... assuming a single process"
        dcp.save(state, checkpoint_id=str(folder), no_dist=True)


def test_a_torch_function_that_runs_code_is_not_vouched_for_as_torch_s_own(tmp_path: Path) -> None:
    """The DCP .metadata scan let every unknown `torch.*` name through (DCP's own classes are unknown to the
    policy) and the DeepSpeed states scan every `torch.*` / `deepspeed.*` one: torch.fx's reduce_graph_module,
    which execs the source the pickle gives it, passed both, and the folder was pointed at dcp_to_torch_save /
    zero_to_fp32.py. Their genuine classes (Metadata, _StorageInfo, ZeroStageEnum) still pass."""
    _dcp_save(tmp_path / "dcp", {"model": {"fc.weight": torch.zeros(2, 2)}, "step": 3})
    line = _one_error_line(run_cli("inspect", str(tmp_path / "dcp")))
    assert "dcp_to_torch_save" in line and "suspicious" not in line, line
    metadata = tmp_path / "dcp" / ".metadata"
    metadata.write_bytes(pickle.dumps(_ExecsItsSource()))
    line = _one_error_line(run_cli("inspect", str(tmp_path / "dcp")))
    assert line.startswith(f"error: {metadata}: suspicious: the .metadata of this torch.distributed.checkpoint "
                           "(DCP) folder names torch.fx.graph_module.reduce_graph_module; "), line

    run = tmp_path / "run"
    step = run / "global_step5"
    step.mkdir(parents=True)
    torch.save({"module": {"fc.weight": torch.empty(0)}, "ds_version": "0.14.0"},
               step / "zero_pp_rank_0_mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {"zero_stage": 3}, "hook": _ExecsItsSource()},
               step / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (run / "zero_to_fp32.py").write_text("# DeepSpeed's script\n")
    line = _one_error_line(run_cli("inspect", str(run)))
    assert line == (f"error: {step / 'bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt'}: suspicious: this DeepSpeed "
                    "states file names torch.fx.graph_module.reduce_graph_module; zero_to_fp32.py and DeepSpeed's "
                    "load_checkpoint torch.load it with weights_only=False, running it: do not gather or load the "
                    "folder; nothing was unpickled here"), line


def _archive(compression: int, local_name: str | None = None) -> bytes:
    """A torch.save-shaped archive whose data.pkl calls os.system: deflated, or its local header naming another
    member than its central directory (torch's reader, miniz, finds a member by the central directory alone)."""
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"hook": _RunsAShellCommand()}, protocol=2))
        archive.writestr("archive/version", "3\n")
    data = buffer.getvalue()
    if local_name is not None:
        start = data.index(b"archive/data.pkl")  # the local header's copy comes first
        data = data[:start] + local_name.encode() + data[start + len(local_name):]
    return data


@pytest.mark.parametrize("layout", ["deflated", "local-name"])
def test_a_dcp_entry_whose_archive_torch_load_reads_by_its_central_directory_is_scanned(tmp_path: Path,
                                                                                      layout: str) -> None:
    """The shard scan found archives by their local headers and walked the bytes after one named data.pkl as a
    pickle: a deflated data.pkl (torch.load inflates it) or one whose local header names another member (torch
    goes by the central directory) calls os.system unscanned, and the folder was sent to dcp_to_torch_save."""
    import zipfile

    from tests.test_py312 import _dcp_folder_with

    folder = tmp_path / "dcp"
    payload = (_archive(zipfile.ZIP_DEFLATED) if layout == "deflated"
               else _archive(zipfile.ZIP_STORED, local_name="archive/datb.pkl"))
    # the entry's storage pointed at the archive appended, as DCP's writer would have placed it
    shard = _dcp_folder_with(folder, payload)
    start = shard.stat().st_size - len(payload)
    line = _one_error_line(run_cli("inspect", str(folder)))
    assert line.startswith(f"error: {shard}: dangerous: the torch.save archive at byte {start:,} of this "
                           "torch.distributed.checkpoint (DCP) shard holds a pickle that names posix.system; "), line


@pytest.mark.parametrize("protocol", [0, 1])
def test_a_protocol_0_or_1_pickle_kept_as_bytes_is_refused(tmp_path: Path, protocol: int) -> None:
    """Only bytes starting with PROTO (\\x80) or a zip were scanned: `pickle.dumps(obj, protocol=0)` starts with its
    first opcode (GLOBAL `c`, MARK `(`), and `pickle.loads(ckpt["model"])` runs it all the same; the file was
    called safe. Other bytes that are no pickle (a proto, a PNG, text) still read as before."""
    bad = tmp_path / "state.pt"
    torch.save({"model_state_dict": {"fc.weight": torch.zeros(2, 2)},
                "model": pickle.dumps(_RunsAShellCommand(), protocol=protocol)}, bad)
    line = _one_error_line(run_cli("inspect", str(bad)))
    assert line.startswith(f"error: {bad}: dangerous: the bytes value at model holds a pickle that names "
                           "posix.system"), line

    good = tmp_path / "good.pt"
    torch.save({"model_state_dict": {"fc.weight": torch.zeros(2, 2)},
                "meta": pickle.dumps({"epoch": 3, "name": "run"}, protocol=protocol),
                "proto": b"\n\x0b\n\x05<unk>\x15\x00\x00\x00\x00\x18\x02" * 50, "thumbnail": b"\x89PNG\r\n\x1a\n",
                "config": b"config\nname: run\nclass: os.system\n", "note": b"(copy of the run)\n"}, good)
    code, report = run_json("inspect", str(good))
    assert code == 0 and report["security"]["verdict"] == "safe", report
