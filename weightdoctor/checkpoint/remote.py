"""A `Checkpoint` built from safetensors headers read on the Hub, before any weight is downloaded."""

from __future__ import annotations

from pathlib import Path

from weightdoctor.checkpoint.hub import RemoteStructure
from weightdoctor.checkpoint.model import CheckpointFile, TensorInfo
from weightdoctor.dtypes import SAFETENSORS_TO_CANONICAL
from weightdoctor.errors import CorruptCheckpoint


def remote_tensors(remote: RemoteStructure) -> tuple[list[CheckpointFile], list[TensorInfo], dict[str, str] | None]:
    """Describe the files and tensors of a remote safetensors repo from its headers.

    The files are named by their path in the repo; their `path` is where the cache would keep them, so
    that nothing pretends to exist locally.
    """
    files: list[CheckpointFile] = []
    tensors: list[TensorInfo] = []
    metadata: dict[str, str] | None = None
    for filename, file_meta in remote.metadata.files_metadata.items():
        files.append(
            CheckpointFile(Path(filename), filename, "weights", "safetensors", remote.file_sizes.get(filename, 0))
        )
        if file_meta.metadata and metadata is None:
            metadata = dict(file_meta.metadata)
        for name, info in file_meta.tensors.items():
            dtype = SAFETENSORS_TO_CANONICAL.get(info.dtype)
            if dtype is None:
                raise CorruptCheckpoint(f"tensor {name!r} has unknown dtype {info.dtype!r}", path=filename)
            tensors.append(
                TensorInfo(name, tuple(info.shape), dtype, filename, data_offsets=tuple(info.data_offsets))  # type: ignore[arg-type]
            )
    return files, tensors, metadata
