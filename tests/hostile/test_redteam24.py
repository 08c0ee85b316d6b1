"""Red team 24: the torch classes a DCP `.metadata` is vouched for are the ones genuine saves name, no others.

Every torch class but a blocklist had been let through: one that acts when built (DeviceMesh joins a process group)
or is called with huge sizes (torch.nn.Linear) passed, and the folder's error pointed dcp_to_torch_save at it.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
import pickle
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import one_error_line, run_cli
from weightdoctor.checkpoint import reader
from weightdoctor.errors import UnsafePickle

# Saved in a fresh process: a gloo process group of one (DTensors, ShardedTensors, async_save) is not left behind
# in the test process. `dataclass` keeps a user's dataclass among its objects.
_BUILD = textwrap.dedent('''
    import dataclasses, io, os, sys, warnings
    warnings.simplefilter("ignore")
    import torch, torch.nn as nn
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    out = sys.argv[1]
    torch.manual_seed(0)

    @dataclasses.dataclass
    class RunConfig:
        lr: float = 0.1
        name: str = "run"

    def save(name, state, **kwargs):
        dcp.save(state, checkpoint_id=os.path.join(out, name), **kwargs)

    objects = {"w": torch.randn(2), "step": 7, "name": "run", "items": [1, 2, 3], "buf": io.BytesIO(b"abc"),
               "nested": {"x": [1, {"y": 2}]}}
    save("no_dist_plain", {"w": torch.randn(3, 2), "b": torch.zeros(2)}, no_dist=True)
    save("no_dist_objects", objects, no_dist=True)
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[2], rank=0, world_size=1)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    save("process_group_plain", {"w": torch.randn(3, 2)})
    save("model_and_optimizer", {"model": model_state, "optim": optimizer_state})
    save("not_flattened", {"model": model_state, "optim": optimizer_state},
         planner=dcp.DefaultSavePlanner(flatten_state_dict=False))
    save("scheduler", {"model": model_state,
                       "sched": torch.optim.lr_scheduler.StepLR(optimizer, 2).state_dict()})
    save("objects", objects)
    save("dtypes", {"h": torch.randn(3).bfloat16(), "i": torch.arange(4), "e": torch.empty(0)})
    save("two_files_per_rank", {"w": torch.randn(3, 2), "n": 1},
         storage_writer=dcp.FileSystemWriter(os.path.join(out, "two_files_per_rank"), single_file_per_rank=False))
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    mesh = init_device_mesh("cpu", (1,))
    save("dtensor", {"s": distribute_tensor(torch.randn(4, 4), mesh, [Shard(0)]),
                     "r": distribute_tensor(torch.randn(3), mesh, [Replicate()])})
    from torch.distributed._shard.metadata import ShardMetadata
    from torch.distributed._shard.sharded_tensor import Shard as LocalShard, init_from_local_shards
    save("sharded_tensor", {"st": init_from_local_shards(
        [LocalShard(torch.randn(4, 2), ShardMetadata([0, 0], [4, 2], "rank:0/cpu"))], [4, 2])})
    dcp.async_save({"w": torch.randn(3, 2), "step": 3}, checkpoint_id=os.path.join(out, "async_save")).result()
    from torch.distributed.checkpoint.filesystem import SerializationFormat
    save("safetensors_shards", {"w": torch.randn(3, 2), "n": 3}, storage_writer=dcp.FileSystemWriter(
        os.path.join(out, "safetensors_shards"), serialization_format=SerializationFormat.SAFETENSORS))
    save("hf_writer", {"w": torch.randn(3, 2)},
         storage_writer=dcp.HuggingFaceStorageWriter(os.path.join(out, "hf_writer")))
    save("dataclass", {"w": torch.randn(2), "cfg": RunConfig()})
    dist.destroy_process_group()
''')
GENUINE = ["no_dist_plain", "no_dist_objects", "process_group_plain", "model_and_optimizer", "not_flattened",
           "scheduler", "objects", "dtypes", "two_files_per_rank", "dtensor", "sharded_tensor", "async_save",
           "safetensors_shards"]


@pytest.fixture(scope="module")
def saves(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import socket

    out = tmp_path_factory.mktemp("dcp_saves")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run([sys.executable, "-c", _BUILD, str(out), str(port)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.mark.parametrize("name", GENUINE)
def test_every_genuine_dcp_save_is_still_read(saves: Path, name: str) -> None:
    """Plain, model + optimizer (flattened or not), scheduler, objects (io.BytesIO as torchtitan keeps), DTensor,
    ShardedTensor, async_save, no_dist, two-files-per-rank and safetensors-shard saves of torch 2.13: their
    `.metadata` passes, and the folder's message names the converter, not a refusal."""
    folder = saves / name
    assert (folder / ".metadata").is_file() and any(folder.glob("*.distcp"))
    reader.refuse_unsafe_dcp_metadata(folder)  # raises nothing
    result = run_cli("inspect", str(folder))
    line = one_error_line(result)
    assert result.exit_code == 2 and "dcp_to_torch_save" in line, line
    assert "suspicious" not in line and "dangerous" not in line, line


def test_a_save_by_the_hugging_face_writer_is_read_as_safetensors(saves: Path) -> None:
    """HuggingFaceStorageWriter writes safetensors shards and their index, no `.metadata`: read as weights."""
    result = run_cli("inspect", str(saves / "hf_writer"), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["format"].startswith("safetensors"), result.stdout


def test_a_user_dataclass_among_the_objects_is_refused_by_the_shard_not_the_metadata(saves: Path) -> None:
    """The `.metadata` of a save holding a dataclass of the user's passes; the dataclass itself is a class of the
    user's code that the shard's torch.load imports and builds, refused there as before."""
    folder = saves / "dataclass"
    with pytest.raises(UnsafePickle) as caught:
        reader.refuse_unsafe_dcp_metadata(folder)
    assert caught.value.path.endswith(".distcp") and "__main__.RunConfig" in str(caught.value)


class _Builds:
    """Pickled as a call of `target(*args)`: the pickle names the class, nothing is built here."""

    def __init__(self, target: Any, args: tuple[Any, ...]) -> None:
        self.target, self.args = target, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.target, self.args


def _hostile_copy(saves: Path, tmp_path: Path, value: Any) -> Path:
    """A genuine save whose `.metadata` is the genuine Metadata with `value` among its planner data."""
    folder = tmp_path / "step-10"
    shutil.copytree(saves / "no_dist_plain", folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metadata = pickle.loads((folder / ".metadata").read_bytes())  # our own genuine save
    metadata.planner_data = {"extra": value}
    (folder / ".metadata").write_bytes(pickle.dumps(metadata, protocol=4))
    return folder


def _hostile_values() -> list[Any]:
    import torch
    from torch.distributed.checkpoint.filesystem import FileSystemWriter
    from torch.distributed.device_mesh import DeviceMesh

    return [
        # 10**12 float32 weights: 4 TB asked for and filled by its reset_parameters.
        pytest.param(_Builds(torch.nn.Linear, (10**6, 10**6)), "torch.nn.modules.linear.Linear", id="linear"),
        # DeviceMesh.__init__ calls init_process_group() when none is: env:// rendezvous at MASTER_ADDR:MASTER_PORT
        # (measured: with RANK=0 WORLD_SIZE=1 set, building one left a process group initialized).
        pytest.param(_Builds(DeviceMesh, ("cpu", [0])), "torch.distributed.device_mesh.DeviceMesh", id="mesh"),
        pytest.param(_Builds(torch.nn.Embedding, (10**9, 10**4)), "torch.nn.modules.sparse.Embedding",
                     id="embedding"),
        # A DCP class of the writer's own, which no `.metadata` names.
        pytest.param(_Builds(FileSystemWriter, ("victim",)), "torch.distributed.checkpoint.filesystem."
                     "FileSystemWriter", id="writer"),
    ]


@pytest.mark.parametrize(("value", "named"), _hostile_values())
def test_a_metadata_naming_a_torch_class_no_genuine_save_names_is_refused(saves: Path, tmp_path: Path, value: Any,
                                                                         named: str) -> None:
    folder = _hostile_copy(saves, tmp_path, value)
    result = run_cli("inspect", str(folder))
    line = one_error_line(result)
    assert result.exit_code == 2 and result.stdout == ""
    assert line.startswith("error:") and str(folder / ".metadata") in line, line
    assert f"suspicious: the .metadata of this torch.distributed.checkpoint (DCP) folder names {named};" in line
    assert "do not convert or load the folder; nothing was unpickled here" in line, line
    assert "writes one torch.save file" not in line and "dcp_to_torch_save(" not in line, line
    json_result = run_cli("inspect", str(folder), "--json")
    assert json_result.exit_code == 2 and named in one_error_line(json_result)


def test_the_deepspeed_rule_still_vouches_for_torch_and_deepspeed_classes() -> None:
    """The DeepSpeed rule is left as it was (DeepSpeed is not installed here to list what its states name)."""
    assert reader._vouched_for("deepspeed.runtime.zero.config", "ZeroStageEnum", ("torch", "deepspeed"))
    assert reader._vouched_for("torch.distributed.checkpoint.metadata", "Metadata", ("torch", "deepspeed"))
    assert not reader._vouched_for("torch.distributed", "FileStore", ("torch", "deepspeed"))


@pytest.mark.parametrize(("module", "name"), sorted(reader._DCP_METADATA_CLASSES))
def test_every_vouched_dcp_name_is_a_class_whose_building_only_sets_its_fields(module: str, name: str) -> None:
    """Each name resolves, in the installed torch, to a dataclass without __post_init__ or an Enum: built by NEWOBJ
    and BUILD (as genuine saves do) or called with arguments, it only sets its fields (MetadataIndex's own
    __init__ sets three, its offset as a torch.Size)."""
    with warnings.catch_warnings(record=True):  # torch.distributed._shard.checkpoint warns "always" it is deprecated
        found = getattr(importlib.import_module(module), name)
    assert isinstance(found, type)
    if issubclass(found, enum.Enum):
        return
    assert dataclasses.is_dataclass(found) and not hasattr(found, "__post_init__")
    init = found.__init__
    assert getattr(init, "__qualname__", "").startswith(f"{found.__qualname__}.") or name == "MetadataIndex"
    if name == "MetadataIndex":
        assert init.__code__.co_names == ("object", "__setattr__", "torch", "Size"), init.__code__.co_names
