"""Red team 26: the writers (`convert`, `shard`, `plan-devices -o`) attacked through the file system.

What held (measured, not all pinned here): an output that is a symlink or a hard link of the input, the input folder
itself or a folder holding it (with --force, through a symlinked folder too), a Hub snapshot's config.json for
plan-devices, /dev/null, a FIFO, an existing folder, a read-only file (replaced with --force, as `mv -f` does), a
read-only folder, names with newlines or a leading dash, a full disk (tmpfs, RLIMIT_FSIZE) and a read-only file
system (the earlier save kept whole), the input truncated or rewritten in place while read (safetensors and zip,
copy and cast paths). What did not: a mount point inside an output folder replaced with --force (a bind mount of the
input folder there) was carried over by copying and then emptied with the earlier save, the input's files deleted;
an output file name made from the source's that grew past 255 bytes failed late, blaming the output folder; an
output inside a folder that cannot be entered ended in "permission denied: [Errno 13] ...", naming neither; so did a
source in a folder that cannot be entered or listed, naming `model/latest`, a file that does not exist; an output that
is itself a bind mount failed with "Device or resource busy"; and a name holding bytes that are no UTF-8 was printed
as `\\udcff`, not as the byte.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, load_file, save_file

from tests.helpers import REPO_ROOT, run_cli, save_tiny_bert


def _model(folder: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny model folder: config.json and one model.safetensors of four seeded tensors."""
    torch.manual_seed(seed)
    tensors = {f"layer.{i}.weight": torch.randn(16, 16) for i in range(4)}
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text('{"model_type": "bert"}\n')
    return tensors


def _state(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder` (relative name) -> (sha256, mtime in ns)."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".wdtmp-" in p.name or ".wdstage-" in p.name)


def _with_bind_mount(cwd: Path, folder: Path, at: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """`weightdoctor ARGS` run while `folder` is bind-mounted at `at`, in a mount namespace of its own (nothing
    outlives the command); skipped where this user cannot mount."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare here")
    mount = f"mount --bind {shlex.quote(str(folder))} {shlex.quote(str(at))}"
    if subprocess.run(["unshare", "-m", "sh", "-c", mount], capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot bind-mount here (needs root, or user namespaces)")
    command = " ".join(shlex.quote(str(a)) for a in (sys.executable, "-m", "weightdoctor", *args))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(["unshare", "-m", "sh", "-c", f"{mount} && exec {command}"], env=env, cwd=cwd, text=True,
                          capture_output=True, timeout=120, check=False)


@pytest.mark.parametrize("command", [["shard", "--max", "2KB"], ["convert", "--dtype", "fp16"]])
def test_a_mount_inside_an_output_folder_replaced_with_force_is_never_emptied(tmp_path: Path,
                                                                             command: list[str]) -> None:
    """An earlier save holding a mount point (here the input folder, bind-mounted at `out/data/inputs`): --force
    carried the mount's files over by copying them (no hard link crosses a mount), swapped the folders, then deleted
    the earlier save with everything under the mount: the input folder was left empty, exit 0, and the staging folder
    stayed behind, hidden, holding the mount."""
    source = tmp_path / "model"
    _model(source)
    before = _state(source)
    out = tmp_path / "out"
    _model(out, seed=1)
    (out / "data" / "inputs").mkdir(parents=True)
    earlier = _state(out)
    result = _with_bind_mount(tmp_path, source, out / "data" / "inputs",
                              command[0], source, *command[1:], "-o", out, "--force")
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {out}: cannot replace the existing output: {out}/data/inputs is a mount point inside "
                     "it, whose files would be deleted with the earlier save: unmount it, or write elsewhere; it was "
                     "left as it is, and nothing was left behind"], lines
    assert result.stdout == ""
    assert _state(source) == before
    assert _state(out) == earlier and _leftovers(tmp_path) == []
    assert set(load_file(str(source / "model.safetensors"))) == {f"layer.{i}.weight" for i in range(4)}


@pytest.mark.parametrize("command", [["shard", "--max", "3KB"], ["convert"]])
def test_an_output_file_name_grown_past_name_max_is_named_before_anything_is_written(tmp_path: Path,
                                                                                    command: list[str]) -> None:
    """The output's file names are made from the source's: a dtype variant of 230 bytes (`model.vvv....safetensors`,
    248 bytes, a legal name) gets `-00001-of-00002` as a shard, and a `.pt` of 250 bytes becomes `.safetensors`. The
    write failed only then, saying "a name on the output's path is too long" of the output folder, whose name was
    fine, and `--dry-run` printed a plan that could not be written."""
    folder = tmp_path / "model"
    tensors = _model(folder)
    if command[0] == "shard":
        source = folder / f"model.{'v' * 230}.safetensors"
        (folder / "model.safetensors").rename(source)
        grown = f"{source.stem}-00001-of-00002.safetensors"
    else:
        source = folder / f"{'a' * 250}.pt"
        torch.save(tensors, source)
        (folder / "model.safetensors").unlink()
        grown = f"{'a' * 250}.safetensors"
    before = _state(folder)
    out = tmp_path / "out"
    for dry_run in ([], ["--dry-run"]):
        result = run_cli(command[0], folder, *command[1:], "-o", out, *dry_run)
        assert result.exit_code == 2 and result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {out}: cannot write {grown[:20]}"), lines
        assert (f"{grown[-12:]}: its name, made from the source's file name, would be {len(grown)} bytes long, past "
                "the limit of 255 bytes a file name may have; give the source file a shorter name") in lines[0]
        assert not out.exists() and _leftovers(tmp_path) == [] and _state(folder) == before


@pytest.fixture
def world_readable() -> Iterator[Path]:
    """A folder that another user can work in (pytest's own tmp_path is private to its user); removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="wd-redteam26-"))
    base.chmod(0o777)
    try:
        yield base
    finally:
        for folder in [base, *base.rglob("*")]:
            if folder.is_dir() and not folder.is_symlink():
                folder.chmod(0o755)
        shutil.rmtree(base)


def _as_a_user_without_rights(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """`weightdoctor ARGS` as a user that file permissions hold back: this one, or `nobody` where this one is root
    (root passes every permission check); skipped where root cannot switch user."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "HOME": str(cwd)}
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root, and no setpriv to run as another user")
        prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    return subprocess.run([*prefix, sys.executable, "-m", "weightdoctor", *map(str, args)], env=env, cwd=cwd,
                          text=True, capture_output=True, timeout=120, check=False)


@pytest.mark.parametrize("command", [
    ["shard", "{model}", "--max", "20KB", "-o", "{locked}/deep/out"],
    ["convert", "{model}", "-o", "{locked}/out"],
    ["convert", "{model}/model.safetensors", "-o", "{locked}/deep/out.safetensors"],
    ["plan-devices", "{model}", "--gpu", "1GB", "-o", "{locked}/map.json"],
    ["plan-devices", "{model}", "--gpu", "1GB", "-o", "{locked}/deep/map.json", "--force"],
])
def test_an_output_in_a_folder_that_cannot_be_entered_is_said_in_one_line_naming_it(world_readable: Path,
                                                                                    command: list[str]) -> None:
    """The message of a write refused for permissions looked for the folder to blame with Path.exists, which raises
    PermissionError inside a folder that cannot be entered (mode 000, or another user's 700): the line became
    "permission denied: [Errno 13] Permission denied: '.../locked/deep'", naming neither the output nor why
    (plan-devices the same, from its own checks of the output's folder)."""
    model = world_readable / "model"
    save_tiny_bert(model)
    for item in [model, *model.iterdir()]:
        item.chmod(0o755 if item.is_dir() else 0o644)
    before = _state(model)
    locked = world_readable / "locked"
    (locked / "deep").mkdir(parents=True)
    locked.chmod(0o000)
    args = [part.format(model=model, locked=locked) for part in command]
    result = _as_a_user_without_rights(world_readable, *args)
    out = args[args.index("-o") + 1]
    assert result.returncode == 2 and result.stdout == "", result
    assert result.stderr.strip().splitlines() == [
        f"error: {out}: cannot write the output: permission denied: the folder {locked} cannot be entered (no search "
        "permission); nothing was left behind"]
    assert _state(model) == before
    locked.chmod(0o755)
    assert sorted(p.name for p in locked.rglob("*")) == ["deep"] and _leftovers(world_readable) == []


@pytest.mark.parametrize(("which", "mode", "why"), [
    ("locked", 0o000, "cannot be entered (no search permission)"),
    ("model", 0o311, "cannot be listed (no read permission)"),
    ("model", 0o644, "cannot be entered (no search permission)"),
])
def test_an_input_folder_that_cannot_be_read_is_named_with_why(world_readable: Path, which: str, mode: int,
                                                               why: str) -> None:
    """A source inside a folder this user cannot enter, or a model folder it cannot list or enter, ended in
    "permission denied: [Errno 13] Permission denied: 'model/latest'": Python's words, and in the last case a file
    that does not exist (the first name looked for inside the folder). The line names the folder and what it lacks."""
    locked = world_readable / "locked"
    model = locked / "model"
    _model(model)
    for item in [locked, model, *model.iterdir()]:
        item.chmod(0o755 if item.is_dir() else 0o644)
    before = _state(model)
    folder = locked if which == "locked" else model
    folder.chmod(mode)
    for command in (["inspect", model], ["convert", model, "-o", world_readable / "out"]):
        result = _as_a_user_without_rights(world_readable, *command)
        assert result.returncode == 2 and result.stdout == "", result
        assert result.stderr.strip().splitlines() == [f"error: {folder}: permission denied: this folder {why}"]
    folder.chmod(0o755)
    assert _state(model) == before and not (world_readable / "out").exists()


@pytest.mark.parametrize("command", [
    ["shard", "{model}", "--max", "2KB", "-o", "{out}", "--force"],
    ["convert", "{model}", "-o", "{out}", "--force"],
    ["convert", "{model}/model.safetensors", "-o", "{out}.safetensors", "--force", "--dtype", "fp16"],
    ["plan-devices", "{bert}", "--gpu", "1GB", "-o", "{out}.safetensors", "--force"],
])
def test_an_output_that_is_a_bind_mount_is_said_to_be_one(tmp_path: Path, command: list[str]) -> None:
    """An output folder (or file) that is a bind mount of another of the same file system cannot be swapped or
    renamed over: os.path.ismount compares devices and did not see it, and the line said "cannot write the output:
    Device or resource busy", Python's words for what stopped it."""
    model = tmp_path / "model"
    _model(model)
    bert = tmp_path / "bert"
    if command[0] == "plan-devices":
        save_tiny_bert(bert)
    before = _state(model)
    mounted = tmp_path / "mounted"
    args = [part.format(model=model, out=mounted, bert=bert) for part in command]
    out = Path(args[args.index("-o") + 1])
    if out.suffix:
        (tmp_path / "other.safetensors").write_bytes(b"someone's file")
        out.touch()
        result = _with_bind_mount(tmp_path, tmp_path / "other.safetensors", out, *args)
        why = f"{out} is a mount point (a file mounted there), which cannot be replaced: choose another path"
    else:
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "notes.txt").write_text("someone's folder")
        out.mkdir()
        result = _with_bind_mount(tmp_path, tmp_path / "other", out, *args)
        why = f"{out} is a mount point, which cannot be renamed: write into a folder inside it"
    assert result.returncode == 2 and result.stdout == "", result
    assert result.stderr.strip().splitlines() == [
        f"error: {out}: cannot replace the existing output: {why}; it was left as it is, and nothing was left behind"]
    assert _state(model) == before and _leftovers(tmp_path) == []
    other = tmp_path / ("other.safetensors" if out.suffix else "other/notes.txt")
    assert other.read_text() == ("someone's file" if out.suffix else "someone's folder")


def test_an_output_named_with_bytes_that_are_no_utf8_is_written_as_those_bytes(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`-o $'\\xff.safetensors'` (a name from a latin-1 system): Python reads the byte as a lone surrogate, and the
    lines said `\\udcff.safetensors`, a name that neither ls nor a shell writes, nor anyone could type."""
    monkeypatch.chdir(tmp_path)
    _model(Path("model"))
    out = os.fsdecode(b"\xff\xfe.safetensors")
    result = run_cli("convert", "model/model.safetensors", "-o", out)
    assert result.exit_code == 0 and os.listdir(b".") and os.path.isfile(b"\xff\xfe.safetensors")
    assert "converted model/model.safetensors → \\xff\\xfe.safetensors" in result.stdout
    assert set(load(Path(out).read_bytes())) == {f"layer.{i}.weight" for i in range(4)}  # its loader takes no such path
    result = run_cli("convert", "model/model.safetensors", "-o", out)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: \\xff\\xfe.safetensors: output exists; pass --force to replace it"]
