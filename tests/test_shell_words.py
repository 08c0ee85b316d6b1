"""Commands printed in messages are pasted into a shell: every one quotes its words with `paths.shell_word`, so a
folder whose name starts with `-` or holds a newline is the same folder once pasted (a few still used
`shlex.quote`, which leaves `-x` to be read as an option and a newline to be folded into a space)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import copy_example, run_cli


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_plan_devices_mkdir_hint_pasted_makes_that_folder(tmp_path: Path) -> None:
    folder = copy_example(tmp_path)
    weird = "-maps\nnew"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = run_cli("plan-devices", str(folder), "--gpu", "1GB", "--output", f"{weird}/map.json")
    finally:
        os.chdir(cwd)
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    hint = message.split("create it first: ", 1)[1].split(")", 1)[0]
    assert hint == "mkdir -p $'./-maps\\x0anew'"
    subprocess.run(["bash", "-c", hint], cwd=tmp_path, check=True)
    assert (tmp_path / weird).is_dir() and not (tmp_path / "-maps new").exists()
