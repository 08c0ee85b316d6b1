"""An output path that is a link to a folder is refused as the folder itself is: `convert m.safetensors -o runs
--force`, where `runs` links to a folder, put a file in the link's place (the link gone), while a real folder there
is refused with "give a file name"."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.helpers import run_cli


def test_force_onto_a_link_to_a_folder_is_refused_and_the_link_kept(tmp_path: Path) -> None:
    source = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(2)}, source)
    (tmp_path / "store").mkdir()
    link = tmp_path / "runs"
    link.symlink_to(tmp_path / "store")
    result = run_cli("convert", str(source), "-o", str(link), "--force")
    assert result.exit_code == 2
    line = " ".join(result.stderr.split())
    assert f"{link}: output exists and is a link to a folder ({tmp_path / 'store'}); give a file name" in line, line
    assert link.is_symlink() and os.readlink(link) == str(tmp_path / "store")
    assert list((tmp_path / "store").iterdir()) == []
    # A link to a file is still replaced by --force (an earlier output's link), as before.
    (tmp_path / "old.safetensors").write_bytes(source.read_bytes())
    file_link = tmp_path / "out.safetensors"
    file_link.symlink_to(tmp_path / "old.safetensors")
    assert run_cli("convert", str(source), "-o", str(file_link), "--force").exit_code == 0
    assert file_link.is_file() and not file_link.is_symlink()

