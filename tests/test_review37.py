"""Review of the day's merged changes (review37): each test fails before its fix."""

from __future__ import annotations

import json
import pickle
import re
import shlex
import warnings
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli


def test_the_merge_weights_command_for_an_fsdp_folder_is_pasteable(tmp_path: Path) -> None:
    """Accelerate's FSDP save_state folder under a path with a space: the `accelerate merge-weights FOLDER OUTDIR`
    the error prints left the folder bare (`root two/run/pytorch_model_fsdp_0` pasted as two words), where the
    subfolder a folder's error says to point at was shell-quoted (cb1a95b: as every command a message prints)."""
    import torch.distributed.checkpoint as dcp

    folder = tmp_path / "root two" / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no process group: DCP says it saves from one process
        dcp.save({"model": {"w": torch.ones(2, 2)}}, checkpoint_id=str(folder / "pytorch_model_fsdp_0"))
    torch.save({"last_epoch": 1}, folder / "scheduler.bin")
    (folder / "random_states_0.pkl").write_bytes(pickle.dumps({"step": 1}))
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2 and result.stdout == ""
    line = " ".join(result.stderr.split())
    command = re.search(r"accelerate merge-weights (.*) writes", line)
    assert command is not None, line
    assert shlex.split(command.group(1)) == [str(folder / "pytorch_model_fsdp_0"), f"{folder}.merged"], line


def _one_line(stderr: str) -> str:
    return " ".join(stderr.split())


def test_check_dtype_says_an_inf_not_kept_is_unsafe_where_it_lists_what_is(tmp_path: Path) -> None:
    """A mask's -inf cast to fp8_e4m3 (±448) makes the tensor unsafe, and `--fail-on unsafe` exits 1 on it; the
    `--fail-on error` hint said unsafe meant "an overflow or mass underflow" and --help "overflow, clamping, or ≥1%
    ... flushed to zero" (both written beside fixlist20's inf_lost, neither naming it)."""
    from safetensors.torch import save_file

    mask = torch.zeros(64)
    mask[::2] = float("-inf")
    source = tmp_path / "mask.safetensors"
    save_file({"mask": mask}, str(source))
    result = run_cli("check-dtype", str(source), "--target", "fp8_e4m3", "--fail-on", "unsafe", "--json")
    assert result.exit_code == 1
    tensor = json.loads(result.stdout)["targets"]["fp8_e4m3"]["tensors"][0]
    # what the installed torch's cast does to -inf: ±max where it saturates (2.13), NaN where it does not (2.11)
    [cast] = torch.tensor([float("-inf")]).to(torch.float8_e4m3fn).to(torch.float64).tolist()
    assert cast == -448.0 or cast != cast, cast
    assert (tensor["verdict"], tensor["inf_lost"], tensor["reason"]) == (
        "unsafe", 32, "32 inf values become " + ("NaN" if cast != cast else "finite (±max)"))
    # `--fail-on error` was refused with a hint naming what unsafe covers; it is taken now (unsafe weighs error) and
    # exits 1 on the lost inf as `--fail-on unsafe` does (tests/test_fail_on_uniform.py).
    as_error = run_cli("check-dtype", str(source), "--target", "fp8_e4m3", "--fail-on", "error", "--json")
    assert as_error.exit_code == 1, as_error.stderr
    assert json.loads(as_error.stdout)["targets"]["fp8_e4m3"]["tensors"][0]["inf_lost"] == 32
    assert "an inf not kept as inf" in _one_line(run_cli("check-dtype", "--help").stdout)


def test_an_output_given_after_double_dash_is_suggested_before_it(tmp_path: Path) -> None:
    """`convert --dtype fp16 -- a.bin b.safetensors`: the command the error suggested put `-o b.safetensors` after
    the `--`, where Click reads every word as an argument: pasted, it failed with "Missing option '--output'"."""
    source, output = tmp_path / "m.bin", tmp_path / "out.safetensors"
    torch.save({"w": torch.ones(2, 2)}, source)
    line = _one_line(run_cli("convert", "--dtype", "fp16", "--", str(source), str(output)).stderr)
    suggested = re.search(r"not as a second argument: \S+ (?:-m weightdoctor )?convert (.*) \(see ", line)
    assert suggested is not None, line
    words = shlex.split(suggested.group(1))
    assert words.index("-o") < words.index("--"), line
    result = run_cli("convert", *words)
    assert result.exit_code == 0, result.stderr
    assert output.is_file()


def test_json_asked_another_way_before_double_dash_is_suggested_before_it(tmp_path: Path) -> None:
    """`inspect --format json -- model.bin`: the command the error suggested ended in `-- model.bin --json`, which
    Click refused ("Got unexpected extra argument(s) (--json)"): --json goes before the `--`."""
    source = tmp_path / "m.bin"
    torch.save({"w": torch.ones(2, 2)}, source)
    line = _one_line(run_cli("inspect", "--format", "json", "--", str(source)).stderr)
    suggested = re.search(r"with --json: \S+ (?:-m weightdoctor )?inspect (.*) \(see ", line)
    assert suggested is not None, line
    words = shlex.split(suggested.group(1))
    assert words.index("--json") < words.index("--"), line
    result = run_cli("inspect", *words)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["tensors"][0]["name"] == "w"


def test_the_zero_to_fp32_command_for_a_deepspeed_folder_is_pasteable(tmp_path: Path) -> None:
    """A DeepSpeed run folder (zero_to_fp32.py beside global_step1/) under a path with a space: the `python
    zero_to_fp32.py FOLDER OUTDIR --safe_serialization` the error prints left the folder bare (two words pasted)."""
    folder = tmp_path / "ds two" / "run"
    (folder / "global_step1").mkdir(parents=True)
    (folder / "zero_to_fp32.py").write_text("# DeepSpeed's script\n")
    (folder / "latest").write_text("global_step1")
    torch.save({"optimizer_state_dict": {}}, folder / "global_step1" / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2 and result.stdout == ""
    line = _one_line(result.stderr)
    command = re.search(r"python (.*) --safe_serialization", line)
    assert command is not None, line
    # The script by its path too (thirdparty26: `python zero_to_fp32.py` ran only from inside the folder).
    assert shlex.split(command.group(1)) == [str(folder / "zero_to_fp32.py"), str(folder), f"{folder}.fp32"], line


def test_a_dcp_metadata_that_starts_dcps_async_save_process_is_refused(tmp_path: Path) -> None:
    """A `.metadata` whose pickle builds DCP's own `_AsyncCheckpointProcess` (its `_ProcessGroupInitInfo` set by
    state, not built): pickle.load of it spawns a Python process that joins a process group at the address the file
    names (measured: 'Initializing dist.ProcessGroup in checkpoint background process on port 29517'). Under
    torch.distributed.checkpoint and named by a capital, the class was vouched for, and the folder's error pointed
    dcp_to_torch_save at it; the genuine save's metadata still passes."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint._async_process_executor import _AsyncCheckpointProcess, _ProcessGroupInitInfo

    folder = tmp_path / "step-10"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no process group: DCP says it saves from one process
        dcp.save({"model": {"w": torch.ones(2, 2)}}, checkpoint_id=str(folder))
    genuine = run_cli("inspect", str(folder))
    assert genuine.exit_code == 2 and "dcp_to_torch_save" in _one_line(genuine.stderr), genuine.stderr

    info = _ProcessGroupInitInfo.__new__(_ProcessGroupInitInfo)  # pickled as NEWOBJ + BUILD: no __init__ runs
    info.__dict__.update(local_rank=0, global_rank=0, world_size=1, tcp_store_master_addr="203.0.113.7",
                         tcp_store_master_port=29500, use_prefix_store=False, disable_automatic_gc=False,
                         disable_manual_gc=False)

    class StartsTheProcess:
        def __reduce__(self) -> tuple[object, tuple[object, ...]]:
            return _AsyncCheckpointProcess, (info,)

    (folder / ".metadata").write_bytes(pickle.dumps([StartsTheProcess()], protocol=4))
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2 and result.stdout == ""
    line = _one_line(result.stderr)
    assert "torch.distributed.checkpoint._async_process_executor._AsyncCheckpointProcess" in line, line
    assert "do not convert or load the folder; nothing was unpickled here" in line, line
    assert "writes one torch.save file" not in line, line


@pytest.mark.parametrize(("module", "name", "args"), [
    # DeepSpeed's PyFileWriter.__init__ runs open(file_path, 'wb'); TorchBackend.__init__ runs
    # torch.distributed.init_process_group(backend, timeout=..., init_method=...) at the address given.
    ("deepspeed.io.py_file_writer", "PyFileWriter", ("victim",)),
    ("deepspeed.comm.torch", "TorchBackend", ("gloo", None, "tcp://203.0.113.1:29500")),
])
def test_a_deepspeed_state_building_a_deepspeed_class_that_writes_or_connects_is_refused(
        tmp_path: Path, module: str, name: str, args: tuple[object, ...]) -> None:
    """zero_to_fp32.py torch.loads (weights_only=False) every global_step*/ state: one naming DeepSpeed's own
    PyFileWriter or TorchBackend (capitalised, under deepspeed: vouched for) was let through, and the folder's error
    named zero_to_fp32.py as the next step."""
    folder = tmp_path / "run"
    (folder / "global_step1").mkdir(parents=True)
    (folder / "zero_to_fp32.py").write_text("# DeepSpeed's script\n")
    (folder / "latest").write_text("global_step1")
    arguments = pickle.dumps(tuple(args), protocol=2)[2:-1]  # the tuple, without PROTO and STOP
    hostile = folder / "global_step1" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    hostile.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + arguments + b"R.")
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2 and result.stdout == ""
    line = _one_line(result.stderr)
    assert line.startswith(f"error: {hostile}: suspicious: this DeepSpeed states file names {module}.{name}"), line
    assert "python zero_to_fp32.py" not in line, line
