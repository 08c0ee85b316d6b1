"""The shared checkpoint reader: every command opens its sources through `open_checkpoint`."""

from weightdoctor.checkpoint.model import CheckpointFile, TensorInfo
from weightdoctor.checkpoint.reader import Checkpoint, open_checkpoint

__all__ = ["Checkpoint", "CheckpointFile", "TensorInfo", "open_checkpoint"]
