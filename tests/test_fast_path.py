"""The Typer-free fast path of `diff-keys`: the same arguments as Typer would pass, the same output and exit code."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from safetensors.numpy import save_file
from typer.testing import CliRunner

from tests.helpers import REPO_ROOT
from weightdoctor.commands import diff_keys as diff_keys_command
from weightdoctor.commands._fast import FAST_COMMANDS, parse_fast


def typer_kwargs(args: list[str]) -> dict[str, Any]:
    """The keyword arguments Typer passes to the diff-keys command for `args` (recorded, nothing run)."""
    recorded: dict[str, Any] = {}

    def record(**kwargs: Any) -> None:
        recorded.update(kwargs)

    functools.update_wrapper(record, diff_keys_command.diff_keys)  # the command's own parameters and options
    holder = typer.Typer(add_completion=False)
    holder.command()(record)
    result = CliRunner().invoke(holder, args)
    assert result.exit_code == 0, result.output
    return recorded


ACCEPTED = [
    ["a.safetensors", "b.safetensors"],
    ["a.safetensors", "b.safetensors", "--json"],
    ["--json", "a.safetensors", "b.safetensors"],
    ["a.safetensors", "--json", "b.safetensors", "--fail-on", "warn"],
    ["a.safetensors", "b.safetensors", "--rename", "^module\\.=", "--rename", "x=y"],
    ["a.safetensors", "b.safetensors", "--all", "--values", "--debug", "--key", "model", "--revision", "main"],
    ["org/model", "org/model", "--revision", "v1", "--revision-b", "v2"],
    ["a.safetensors", "b.safetensors", "--json", "--json", "--all"],
    ["a.safetensors", "b.safetensors", "--fail-on", "nonsense"],  # refused by the command itself, either path
    ["", "b.safetensors", "--rename", ""],
    ["org/model", "b folder/with spaces", "--key", "model.module"],
]


@pytest.mark.parametrize("args", ACCEPTED)
def test_the_fast_path_passes_what_typer_passes(args: list[str]) -> None:
    parsed = parse_fast(["diff-keys", *args])
    assert parsed is not None
    command, kwargs = parsed
    assert command is FAST_COMMANDS["diff-keys"]
    assert kwargs == typer_kwargs(args)


def test_defaults_are_typers() -> None:
    # Also covers the parameters the fast path never sets (--model-class, --config, --num-labels).
    assert dict(FAST_COMMANDS["diff-keys"].defaults) == {
        name: value for name, value in typer_kwargs(["a", "b"]).items() if name not in ("source_a", "source_b")}


@pytest.mark.parametrize("argv", [
    [],
    ["--version"],
    ["inspect", "a.safetensors"],
    ["diff-keys"],
    ["diff-keys", "a.safetensors"],  # one checkpoint: only with --model-class, which Typer parses
    ["diff-keys", "a", "b", "c"],
    ["diff-keys", "a", "b", "--help"],
    ["diff-keys", "a", "b", "-h"],
    ["diff-keys", "a", "b", "--fail-on=warn"],
    ["diff-keys", "a", "b", "--fail-on", "warn", "--fail-on", "info"],
    ["diff-keys", "a", "b", "--fail-on"],
    ["diff-keys", "a", "b", "--rename", "-x"],
    ["diff-keys", "a", "b", "--", "c"],
    ["diff-keys", "-", "b"],
    ["diff-keys", "a", "b", "--model-class", "BertModel"],
    ["diff-keys", "a", "b", "--jso"],  # Click does not expand abbreviations, and neither does the fast path
])
def test_everything_else_is_left_to_typer(argv: list[str]) -> None:
    assert parse_fast(argv) is None


def test_shell_completion_is_left_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_WEIGHTDOCTOR_COMPLETE", "bash_complete")
    assert parse_fast(["diff-keys", "a", "b"]) is None


# --- whole runs: `python -m weightdoctor` (fast path) against the Typer app run on the same arguments ---------

TYPER_PATH = "import sys\nfrom weightdoctor.cli import app\nsys.argv[0] = 'weightdoctor'\napp()\n"


def _run(args: list[str], typer_path: bool, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", TYPER_PATH, *args] if typer_path else [sys.executable, "-m", "weightdoctor", *args]
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fast")
    rng = np.random.default_rng(0)
    b = {f"encoder.layer.{i}.weight": rng.standard_normal((4, 4)).astype(np.float32) for i in range(3)}
    b["classifier.weight"] = rng.standard_normal((2, 4)).astype(np.float32)
    save_file(b, str(folder / "b.safetensors"))
    ddp = {f"module.{k}": v for k, v in b.items() if not k.startswith("classifier")}
    save_file(ddp, str(folder / "ddp.safetensors"))
    save_file({k: v + 1e-3 for k, v in b.items()}, str(folder / "tuned.safetensors"))
    (folder / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    return folder


@pytest.mark.parametrize("args", [
    ["ddp.safetensors", "b.safetensors", "--json"],
    ["ddp.safetensors", "b.safetensors"],
    ["ddp.safetensors", "b.safetensors", "--all", "--fail-on", "warn"],
    ["ddp.safetensors", "b.safetensors", "--rename", "^module\\.=", "--json"],
    ["tuned.safetensors", "b.safetensors", "--values", "--json"],
    ["b.safetensors", "b.safetensors"],
    ["missing.safetensors", "b.safetensors", "--json"],
    ["broken.safetensors", "b.safetensors"],
    ["ddp.safetensors", "b.safetensors", "--fail-on", "sometimes"],
    ["ddp.safetensors", "b.safetensors", "--rename", "(=x"],
    ["ddp.safetensors", "b.safetensors", "--rename", "no-equals-sign"],
])
def test_both_paths_print_the_same(pair: Path, args: list[str]) -> None:
    fast, slow = _run(["diff-keys", *args], False, pair), _run(["diff-keys", *args], True, pair)
    assert (fast.returncode, fast.stdout, fast.stderr) == (slow.returncode, slow.stdout, slow.stderr)
    assert fast.stdout or fast.stderr


def test_fast_path_exit_codes_and_content(pair: Path) -> None:
    ok = _run(["diff-keys", "b.safetensors", "b.safetensors", "--json"], False, pair)
    assert ok.returncode == 0 and json.loads(ok.stdout)["matched"] == 4
    findings = _run(["diff-keys", "ddp.safetensors", "b.safetensors", "--json"], False, pair)
    report = json.loads(findings.stdout)
    assert findings.returncode == 1 and report["suggested_renames"][0]["flag"] == "--rename '^module\\.='"
    layers = [f"encoder.layer.{i}.weight" for i in range(3)]
    assert [m["name"] for m in report["missing"]] == ["classifier.weight", *layers]
    bad = _run(["diff-keys", "broken.safetensors", "b.safetensors", "--json"], False, pair)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: ") and "broken.safetensors" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_debug_shows_the_traceback_on_both_paths(pair: Path) -> None:
    args = ["diff-keys", "broken.safetensors", "b.safetensors", "--debug"]
    fast, slow = _run(args, False, pair), _run(args, True, pair)
    assert fast.returncode == slow.returncode == 2  # a traceback is shown, the exit code stays "bad input"
    assert fast.stderr.startswith("Traceback") and slow.stderr.startswith("Traceback")
    assert fast.stderr.splitlines()[-1] == slow.stderr.splitlines()[-1]
    assert fast.stderr.splitlines()[-1].startswith("error: broken.safetensors")
    assert any(line.startswith("weightdoctor.errors.CorruptCheckpoint") for line in fast.stderr.splitlines())


@pytest.mark.parametrize("command", [["inspect"], ["diff-keys", None], ["check-dtype"]])
def test_json_is_valid_utf8_for_a_file_name_that_is_not(pair: Path, tmp_path: Path, command: list[str | None]) -> None:
    """A non-UTF-8 byte in a file name is written as JSON's \\udcXX escape, not as a raw byte."""
    import os
    import shutil

    name = os.fsdecode(b"bad\xff.safetensors")
    shutil.copyfile(pair / "b.safetensors", tmp_path / name)
    args = [arg if arg is not None else name for arg in command]
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "weightdoctor", args[0], name, *args[1:], "--json"],
                            capture_output=True, cwd=tmp_path, env=env)
    assert result.returncode in (0, 1), result.stderr
    data = json.loads(result.stdout.decode("utf-8"))  # strict UTF-8: a raw 0xff byte fails here
    assert name in json.dumps(data, ensure_ascii=False)
