"""The download command a Hub-cache error suggests exists in the installed huggingface_hub and takes its flags."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

from fixtures.build import write_hub_cache
from tests.helpers import run_cli


def _check_pasteable(message: str, repo_id: str) -> None:
    commands = re.findall(r"`([^`]+)`", message)
    assert commands, message
    words = shlex.split(commands[0])
    scripts = {ep.name: ep.value for ep in distribution("huggingface_hub").entry_points
               if ep.group == "console_scripts"}
    assert words[0] in scripts, (words[0], sorted(scripts))
    assert words[1:3] == ["download", repo_id]
    # Every option it passes is one the command's own --help lists.
    module = scripts[words[0]].split(":")[0]
    helped = subprocess.run([sys.executable, "-c", f"import sys; sys.argv = ['{words[0]}', 'download', '--help']; "
                             f"from {module} import main; main()"], capture_output=True, text=True).stdout
    for option in (w for w in words[3:] if w.startswith("--")):
        assert option in helped, option


def test_dangling_link_names_a_download_command_that_exists(
    fx: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = tmp_path / "cache"
    snapshot = write_hub_cache(cache, "org/cut", fx["bert"])
    (snapshot / "model.safetensors").resolve().unlink()  # the blob gone, the snapshot's link left
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", "org/cut")
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
    _check_pasteable(" ".join(result.stderr.split()), "org/cut")


def test_bad_ref_names_a_download_command_that_exists(
    fx: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = tmp_path / "cache"
    write_hub_cache(cache, "org/ref", fx["bert"])
    (cache / "models--org--ref" / "refs" / "main").write_text("")  # an empty ref names no snapshot
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli("inspect", "org/ref")
    assert result.exit_code == 2
    assert "does not name a snapshot" in result.stderr
    _check_pasteable(" ".join(result.stderr.split()), "org/ref")
