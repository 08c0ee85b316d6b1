"""Orbax step folders are told by their ASCII-digit names."""

from __future__ import annotations

from pathlib import Path


def test_a_folder_whose_only_numbered_subfolder_is_a_unicode_digit_is_no_orbax_root(tmp_path: Path) -> None:
    """Orbax step folders are named by ASCII digits (CheckpointManager's `1000/`): a subfolder `²` holding a step's
    marker made the folder "an Orbax (JAX) checkpoint (step folders)", while the marker listing skipped it."""
    from weightdoctor.checkpoint.reader import _is_orbax_checkpoint

    step = tmp_path / "²"
    step.mkdir()
    (step / "_CHECKPOINT_METADATA").write_text("{}")
    assert not _is_orbax_checkpoint(tmp_path)
    (tmp_path / "1000").mkdir()
    (tmp_path / "1000" / "_CHECKPOINT_METADATA").write_text("{}")
    assert _is_orbax_checkpoint(tmp_path)
