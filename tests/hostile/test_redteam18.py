"""Round 18 of the red team: checkpoint data that a loader turns into code later. A bytes value holding a pickle
(or a torch.save archive) that the training code's `pickle.loads(ckpt["model"])` runs, and a torch.distributed
checkpoint folder whose `.metadata` (which DCP reads with plain `pickle.load`) calls os.system while weightdoctor
named `dcp_to_torch_save` as the next step. Each must be refused in one line naming the file and what it imports;
genuine ones read as before.
"""

from __future__ import annotations

import argparse
import io
import pickle
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import RunsAShellCommand as _RunsAShellCommand
from tests.helpers import one_error_line as _one_error_line
from tests.helpers import run_cli, run_json


def _torch_save_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(("kind", "held"), [("pickle", "pickle"), ("bytearray", "pickle"),
                                            ("torch.save", "torch.save archive"), ("legacy", "pickle")])
def test_a_bytes_value_holding_a_code_running_pickle_is_refused(tmp_path: Path, kind: str, held: str) -> None:
    """`{"model": pickle.dumps(model)}` is how ad hoc training states keep a model, and their loader's
    `pickle.loads(ckpt["model"])` runs it: the file was called safe, the pickle in its bytes never scanned."""
    torch.manual_seed(0)
    payload: bytes | bytearray = (_torch_save_bytes({"x": _RunsAShellCommand()}) if kind == "torch.save"
                                  else pickle.dumps(_RunsAShellCommand()))
    if kind == "bytearray":
        payload = bytearray(payload)
    bad = tmp_path / "state.pt"
    torch.save({"model_state_dict": {"fc.weight": torch.randn(4, 4)}, "model": payload, "step": 3}, bad,
               _use_new_zipfile_serialization=kind != "legacy")
    line = _one_error_line(run_cli("inspect", str(bad)))
    assert line.startswith(f"error: {bad}: dangerous: the bytes value at model holds a {held} that names "
                           "posix.system"), line
    assert "unpickles the value" in line, line


def test_bytes_values_that_are_safe_pickles_or_no_pickle_read_as_before(tmp_path: Path) -> None:
    """Pickled plain data, a pickle-looking prefix that does not parse, a tokenizer's proto bytes: not refused."""
    torch.manual_seed(0)
    good = tmp_path / "state.pt"
    torch.save({"model_state_dict": {"fc.weight": torch.randn(4, 4)},
                "meta": pickle.dumps({"epoch": 3, "lr": (1e-3, 0.9)}), "junk": b"\x80\x04not a pickle",
                "proto": b"\n\x05hello\x12\x03abc", "inner": _torch_save_bytes({"step": 1})}, good)
    code, report = run_json("inspect", str(good))
    assert code == 0, report
    assert report["security"]["verdict"] == "safe" and [t["name"] for t in report["tensors"]] == ["fc.weight"]


def _dcp_save(folder: Path, state: dict[str, object]) -> None:
    import torch.distributed.checkpoint as dcp

    folder.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... assuming a single process"
        dcp.save(state, checkpoint_id=str(folder), no_dist=True)


def _genuine_dcp_state() -> dict[str, object]:
    """What a run's DCP save holds beside its tensors, each kept as a torch.save archive in a shard: Megatron's
    RNG states (numpy's and Python's), its arguments, a scheduler's state, torchtitan's pickled dataloader state."""
    return {"model": {"fc.weight": torch.randn(4, 4)}, "step": 3,
            "rng": {"np": np.random.RandomState(0).get_state(), "py": random.Random(0).getstate()},
            "args": argparse.Namespace(lr=1e-3, seq_length=128),
            "lr_scheduler": {"last_epoch": 3, "base_lrs": [1e-3]}, "dataloader": pickle.dumps({"position": 5})}


def test_a_dcp_folder_whose_metadata_runs_code_is_refused_not_sent_to_dcp_to_torch_save(tmp_path: Path) -> None:
    """DCP's FileSystemReader reads `.metadata` with plain pickle.load: weightdoctor answered the folder, its
    shard and its `.metadata` with "dcp_to_torch_save(folder, 'model.pt') writes one torch.save file to read
    here", the command that runs the os.system the `.metadata` calls. A genuine folder is still pointed there."""
    torch.manual_seed(0)
    genuine = tmp_path / "genuine"
    _dcp_save(genuine, _genuine_dcp_state())
    line = _one_error_line(run_cli("inspect", str(genuine)))
    assert "dcp_to_torch_save" in line and "dangerous" not in line, line

    hostile = tmp_path / "run"
    _dcp_save(hostile / "step-100", {"model": {"fc.weight": torch.randn(4, 4)}})
    (hostile / "step-100" / ".metadata").write_bytes(pickle.dumps(_RunsAShellCommand()))
    metadata = hostile / "step-100" / ".metadata"
    for source in (hostile, hostile / "step-100", metadata, hostile / "step-100" / "__0_0.distcp"):
        line = _one_error_line(run_cli("inspect", str(source)))
        assert line == (f"error: {metadata}: dangerous: the .metadata of this torch.distributed.checkpoint (DCP) "
                        "folder names posix.system; DCP reads it with pickle.load (dcp.load, dcp_to_torch_save, "
                        "accelerate merge-weights), running it: do not convert or load the folder; nothing was "
                        "unpickled here"), (source, line)


def test_a_dcp_shard_whose_object_entry_runs_code_on_torch_load_is_refused(tmp_path: Path) -> None:
    """DCP keeps each entry that is no tensor as a torch.save archive inside a shard, and its load_bytes reads it
    back with torch.load(weights_only=False): an entry whose pickle calls os.system (its .metadata genuine) was
    answered with "dcp_to_torch_save(folder, 'model.pt') writes one torch.save file to read here"."""
    torch.manual_seed(0)
    hostile = tmp_path / "pytorch_model_fsdp_0"
    _dcp_save(hostile, dict(_genuine_dcp_state(), extra={"hook": _RunsAShellCommand()}))
    shards = sorted(hostile.glob("*.distcp"))
    assert len(shards) == 1
    for source in (tmp_path, hostile, shards[0], hostile / ".metadata"):
        line = _one_error_line(run_cli("inspect", str(source)))
        assert line.startswith(f"error: {shards[0]}: dangerous: the torch.save archive at byte "), (source, line)
        assert line.endswith("(DCP) shard holds a pickle that names posix.system; DCP reads each entry that is no "
                             "tensor back with torch.load(weights_only=False) (dcp.load, dcp_to_torch_save, "
                             "accelerate merge-weights), running it: do not convert or load the folder; nothing "
                             "was unpickled here"), line


def test_an_accelerate_custom_checkpoint_that_runs_code_is_refused_beside_clean_weights(tmp_path: Path) -> None:
    """accelerator.load_state torch.loads custom_checkpoint_N.pkl with weights_only=False (its other files with
    weights_only=True): a save_state folder with a clean model.safetensors was called safe, exit 0, beside one that
    calls os.system. A genuine one (a registered object's plain state dict) reads as before."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    folder = tmp_path / "checkpoint_0"
    folder.mkdir()
    save_file({"fc.weight": torch.randn(4, 4)}, folder / "model.safetensors")
    torch.save({"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]}, folder / "optimizer.bin")
    torch.save({"step": 7, "ema_decay": 0.999, "shadow": {"fc.weight": torch.zeros(4, 4)}},
               folder / "custom_checkpoint_0.pkl")
    code, report = run_json("inspect", str(folder))
    assert code == 0 and report["security"]["verdict"] == "safe", report

    torch.save({"step": 7, "hook": _RunsAShellCommand()}, folder / "custom_checkpoint_1.pkl")
    for command in (("inspect", str(folder)), ("convert", str(folder), "-o", str(tmp_path / "out.safetensors"))):
        line = _one_error_line(run_cli(*command))
        assert line.startswith(f"error: {folder / 'custom_checkpoint_1.pkl'}: dangerous: posix.system "), line
        assert line.endswith("(accelerate's load_state torch.loads this file beside the weights with "
                             "weights_only=False, running it); nothing was unpickled here"), line
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("layout", ["dict", "record"])
def test_a_numpy_npy_of_objects_whose_pickle_runs_code_is_refused_not_sent_to_allow_pickle(tmp_path: Path,
                                                                                        layout: str) -> None:
    """np.save pickles an array of Python objects (a dict of weights, a record with an object field) after its
    header, and `numpy.load(path, allow_pickle=True)` unpickles it: the refusal for such a file named exactly
    that as the next step, with os.system in its pickle. Arrays of numbers, and a dict of them, are named as before."""
    bad = tmp_path / "vgg16.npy"
    if layout == "dict":
        np.save(bad, np.array({"conv1_1": [np.ones((3, 3), np.float32)], "hook": _RunsAShellCommand()}, dtype=object),
                allow_pickle=True)
    else:
        records = np.zeros(2, dtype=[("name", "O"), ("scale", "f4")])
        records["name"][0] = _RunsAShellCommand()
        np.save(bad, records, allow_pickle=True)
    line = _one_error_line(run_cli("inspect", str(bad)))
    assert line.startswith(f"error: {bad}: dangerous: posix.system (dangerous, "), line
    assert line.endswith("this NumPy .npy array holds Python objects, pickled after its header, and "
                         "numpy.load(path, allow_pickle=True) unpickles them, running that; nothing was unpickled "
                         "here"), line

    for name, array in (("weights.npy", np.array({"conv1_1": [np.ones((3, 3), np.float32)]}, dtype=object)),
                        ("numbers.npy", np.ones((3, 3), np.float32))):
        np.save(tmp_path / name, array, allow_pickle=True)
        line = _one_error_line(run_cli("inspect", str(tmp_path / name)))
        assert line.startswith(f"error: {tmp_path / name}: this is a NumPy .npy array; ") and "allow_pickle" in line


def _deepspeed_run(run: Path, hook: object = None) -> Path:
    """A ZeRO-3 run folder as DeepSpeed saves it: global_step5/ with one model states file (placeholders) and one
    optimizer partition per rank, `latest`, and the zero_to_fp32.py it copies beside them."""
    step = run / "global_step5"
    step.mkdir(parents=True)
    for rank in range(2):
        torch.save({"module": {"fc.weight": torch.empty(0, dtype=torch.bfloat16)},
                    "param_shapes": [{"fc.weight": torch.Size([4, 4])}], "ds_version": "0.14.0"},
                   step / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt")
        state: dict[str, object] = {"optimizer_state_dict": {"zero_stage": 3, "loss_scaler": None}}
        if hook is not None and rank == 1:
            state["hook"] = hook
        torch.save(state, step / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    (run / "latest").write_text("global_step5")
    (run / "zero_to_fp32.py").write_text("# DeepSpeed's script\n")
    return step


def test_a_deepspeed_run_whose_states_run_code_is_refused_not_sent_to_zero_to_fp32(tmp_path: Path) -> None:
    """zero_to_fp32.py torch.loads every rank's model and optimizer states with weights_only=False: a run folder
    whose rank-1 partition calls os.system was answered with "python zero_to_fp32.py RUN OUTDIR", unscanned, and
    that script is one that came with the folder. A genuine run is still pointed there, and at DeepSpeed's own."""
    genuine = tmp_path / "genuine"
    _deepspeed_run(genuine)
    line = " ".join(run_cli("inspect", str(genuine)).stderr.split())
    assert (f"python {genuine / 'zero_to_fp32.py'} {genuine} {genuine}.fp32 --safe_serialization (that script came "
            "with the folder; python -m deepspeed.utils.zero_to_fp32 runs the installed DeepSpeed's own)") in line, line

    run = tmp_path / "run"
    step = _deepspeed_run(run, hook=_RunsAShellCommand())
    partition = step / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    for source in (run, step, step / "zero_pp_rank_0_mp_rank_00_model_states.pt"):
        line = _one_error_line(run_cli("inspect", str(source)))
        assert line == (f"error: {partition}: dangerous: this DeepSpeed states file names posix.system; "
                        "zero_to_fp32.py and DeepSpeed's load_checkpoint torch.load it with weights_only=False, "
                        "running it: do not gather or load the folder; nothing was unpickled here"), (source, line)
