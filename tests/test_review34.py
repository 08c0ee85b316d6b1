"""review34: the DCP object scan's budgets (the folder's bytes and pickles, each shard's window) against folders
torch.distributed.checkpoint's own FileSystemWriter writes: model, optimizer, scheduler and dataloader state."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from tests.helpers import RunsAShellCommand as _RunsAShellCommand
from tests.helpers import one_error_line as _one_error_line
from tests.helpers import run_cli


def _training_dcp(folder: Path, layers: int, last: object) -> None:
    """A training run's DCP save as FileSystemWriter writes it over 4 shards (`thread_count=4`: each shard's
    entries that are no tensor first, round robin, then its tensors, each a torch.save archive): a model of
    `layers` Linear layers, its AdamW state, a StepLR scheduler, a dataloader position, and `last`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemWriter

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(layers)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10)
    state = {"model": model.state_dict(), "optim": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "dataloader": {"epoch": 1, "sampler": [1, 2, 3]}, "a": 1, "b": "x", "c": 2.5, "z": last}
    folder.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... assuming a single process"
        dcp.save(state, storage_writer=FileSystemWriter(str(folder), thread_count=4), no_dist=True)


def _shard_of(folder: Path, fqn: str) -> tuple[str, int]:
    metadata = pickle.loads((folder / ".metadata").read_bytes())
    return next((info.relative_path, info.offset) for index, info in metadata.storage_data.items()
                if index.fqn == fqn)


def test_every_shard_s_objects_are_scanned_when_the_first_shards_hold_many_tensors(tmp_path: Path) -> None:
    """The folder's pickle count went to the shards in name order: 300 layers with AdamW make 1,200 tensors, each a
    torch.save archive that costs a pickle and its directory, so __0_0 and __0_1 spent it all and the entry that
    calls os.system at the start of __0_2 went unscanned; the folder was sent to dcp_to_torch_save. Each shard now
    gets its share of what is left, so every shard's first entries (where the writer puts the objects) are read."""
    folder = tmp_path / "run"
    _training_dcp(folder, 300, _RunsAShellCommand())
    name, offset = _shard_of(folder, "z")
    assert name == "__0_2.distcp"  # the writer's round robin: the 27th object lands in the third shard
    line = _one_error_line(run_cli("inspect", str(folder)))
    assert line.startswith(f"error: {folder / name}: dangerous: the torch.save archive at byte {offset:,} of this "
                           "torch.distributed.checkpoint (DCP) shard holds a pickle that names posix.system; "), line


def test_a_genuine_training_dcp_is_still_sent_to_dcp_to_torch_save(tmp_path: Path) -> None:
    """The same save with a plain dict in place of the payload: every object and tensor archive passes."""
    folder = tmp_path / "run"
    _training_dcp(folder, 300, {"seed": 1})
    line = _one_error_line(run_cli("inspect", str(folder)))
    assert "torch.distributed.checkpoint (DCP) folder" in line and "dcp_to_torch_save" in line, line
    assert "dangerous" not in line and "suspicious" not in line, line


def test_a_npy_header_claimed_as_a_gigabyte_of_zeros_is_not_read_whole(tmp_path: Path,
                                                                          monkeypatch: Any) -> None:
    """The .npy object-field search read the whole header a format 2.0 file claims (up to 4 GiB): a sparse file of
    1 GiB of zeros, 16 bytes on disk, was read whole (3 s a GiB) before the refusal for a .npy. numpy's header parse
    refuses a NUL (ast.literal_eval), unpickling nothing, so the search stops at the first one."""
    import io
    import struct

    from weightdoctor.checkpoint import reader

    path = tmp_path / "weights.npy"
    prefix = b"\x93NUMPY\x02\x00" + struct.pack("<I", 1 << 30) + b"{'descr': '<f4', "
    with open(path, "wb") as handle:
        handle.write(prefix)
        handle.truncate(12 + (1 << 30) + 16)
    read = [0]

    class _CountingFile(io.FileIO):
        def read(self, size: int = -1) -> bytes:  # type: ignore[override]
            data = super().read(size)
            read[0] += len(data)
            return data

    monkeypatch.setattr(reader, "open", lambda name, mode="r", *a, **k: _CountingFile(name, "r"), raising=False)
    reader._refuse_pickled_npy(path, prefix)
    assert read[0] <= 2 << 20, read[0]
    monkeypatch.undo()
    line = _one_error_line(run_cli("inspect", str(path)))
    assert line.startswith(f"error: {path}: ") and "numpy" in line.lower(), line


def test_a_npy_of_objects_after_a_header_padded_with_spaces_is_still_refused(tmp_path: Path) -> None:
    """The NUL stop leaves a header numpy does parse: np.save's object array, its header padded past 1 MiB with
    spaces (numpy.load(allow_pickle=True) reads it and runs the pickle), is refused."""
    import io
    import struct

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.array([_RunsAShellCommand()], dtype=object), allow_pickle=True)
    raw = buffer.getvalue()
    header = raw[10:10 + struct.unpack_from("<H", raw, 8)[0]]
    body = raw[10 + len(header):]
    header = b"{" + b" " * (2 << 20) + header[1:]  # the object field past the first MiB read
    path = tmp_path / "weights.npy"
    path.write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header + body)
    line = _one_error_line(run_cli("inspect", str(path)))
    assert line.startswith(f"error: {path}: dangerous") and "posix.system" in line, line


def test_the_latest_save_a_run_folder_s_message_names_is_scanned(tmp_path: Path) -> None:
    """A run folder of 30 DCP saves (step_1/ .. step_30/, as torchtitan keeps them): the scan took the first 16
    subfolders by name (step_1, step_10 .. step_19, step_2, step_20 .. step_23), while the message named step_30,
    the latest by number, for dcp_to_torch_save, which runs its entry calling os.system. The save a message
    names is scanned now, wherever it sorts."""
    import torch.distributed.checkpoint as dcp

    root = tmp_path / "checkpoint"
    for step in range(1, 31):
        save = root / f"step_{step}"
        save.mkdir(parents=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "torch.distributed is disabled ... assuming a single process"
            dcp.save({"model": {"w": torch.zeros(2)}, "extra": _RunsAShellCommand() if step == 30 else step},
                     checkpoint_id=str(save), no_dist=True)
    line = _one_error_line(run_cli("inspect", str(root)))
    shard = root / "step_30" / "__0_0.distcp"
    assert line.startswith(f"error: {shard}: dangerous: the torch.save archive at byte 0 of this "
                           "torch.distributed.checkpoint (DCP) shard holds a pickle that names posix.system"), line
