"""Round 12 of the common mistakes users make: the environments and shells weightdoctor runs in.

Covers: stdout on a full disk (`> /dev/full`, `ulimit -f`: was "cannot read or write: [Errno 28]", naming no file,
and after convert read as if the output had failed); a working directory deleted under the shell (relative paths
said "file not found: [Errno 2]" naming nothing, and importing torch killed the process with oneMKL's "Cannot load
libtorch_cpu.so"); a symbolic link loop given to plan-devices or --config (looked up as a repo id: "did you mean
'loopa'?", the link's own name); `'$HOME/m'` in single quotes (as a source: "no such file"; as -o: a folder named
`$HOME` made in the working directory); a Windows path as -o (a file named `C:\\models\\m.safetensors` made here);
a name typed in another Unicode normal form (NFD, as copied from macOS) than the one on disk; a folder nested past
PATH_MAX (said to be "no such file or directory") and an output path past it (said to hold a name over 255 bytes);
`--force` into an output folder that is a symlink (the link was swapped for a real folder, the target kept the old
weights); a relative -o in a read-only working directory ("operation not permitted", naming no folder); stderr on a
full disk (exit 1, the --json report lost); the `mkdir -p` hint for a folder named with a newline (made `x y`); a URL
as -o (`s3://bucket/m` written as the folders `./s3:/bucket/m`) and a file:// source ("download it first"); torch
unable to load under `ulimit -v` ("<source>: unexpected ImportError", blaming the checkpoint).
Checked and already right (no test here): LANG=C / LC_ALL=C / PYTHONIOENCODING=ascii / PYTHONUTF8=0 with unicode
tensor names and paths, NO_COLOR, FORCE_COLOR with --json piped, TERM=dumb, COLUMNS=20 / 400, `| head -1`, `>&-`,
`2>&-`, stdin not a tty, HOME unset, TMPDIR unwritable, RLIMIT_FSIZE during convert / shard, `~` quoted, trailing
slashes, `./`, `..`, symlinked folders, spaces and newlines in paths, `-` and /dev/stdin as a source.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO_ROOT, copy_example


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, stdout: Any = subprocess.PIPE,
         **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`python -m weightdoctor ARGS` in a fresh interpreter, offline, with `env` added."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "weightdoctor", *map(str, args)], stdout=stdout, text=True,
                          env=full_env, cwd=cwd, timeout=300, **kwargs)


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_stdout_is_named_and_a_written_output_said_whole(tmp_path: Path) -> None:
    folder = copy_example(tmp_path)
    with open("/dev/full", "w") as full:
        done = _run("inspect", folder, "--json", cwd=tmp_path, stdout=full)
        assert done.returncode == 2
        assert _one_line(done.stderr) == "error: stdout: cannot write the report: no space left on the device"

        # A Rich report too; and after convert the output is there, whole, which the line says.
        out = tmp_path / "out.safetensors"
        done = _run("convert", folder / "model.safetensors", "-o", out, cwd=tmp_path, stdout=full)
    assert done.returncode == 2
    assert _one_line(done.stderr) == (f"error: stdout: cannot write the report: no space left on the device; {out} "
                                      "was written whole")
    checked = _run("inspect", out, "--json", cwd=tmp_path)
    assert json.loads(checked.stdout)["num_tensors"] == 73


def test_a_deleted_working_directory_is_one_line(tmp_path: Path) -> None:
    folder = copy_example(tmp_path)
    gone = tmp_path / "gone"

    def enter_then_delete() -> None:
        os.chdir(gone)
        os.rmdir(gone)

    # Relative words only: absolute paths alone are read from / (tests/test_review21.py).
    for args in (["check-dtype", "bert"], ["inspect", "."], ["convert", folder, "-o", "out"]):
        gone.mkdir()
        done = _run(*args, cwd=tmp_path, env={"PWD": str(gone)}, preexec_fn=enter_then_delete)
        assert done.returncode == 2, done.stderr
        # torch's import (check-dtype) died with "Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so"
        assert _one_line(done.stderr) == (f"error: {gone}: the current folder no longer exists (it was deleted or "
                                          "moved): cd into an existing folder and run the command again; nothing "
                                          "was read or written")
        assert done.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert"]


def test_a_symlink_loop_is_named_by_plan_devices_and_config(tmp_path: Path) -> None:
    folder = copy_example(tmp_path)
    (tmp_path / "loopa").symlink_to("loopb")
    (tmp_path / "loopb").symlink_to("loopa")
    (tmp_path / "dangling").symlink_to("no-such-model")
    expected = "a symbolic link to {} that does not resolve (missing target, or a loop of links)"
    done = _run("plan-devices", "loopa", "--gpu", "1GB", cwd=tmp_path)
    assert done.returncode == 2
    assert _one_line(done.stderr) == "error: loopa: " + expected.format("loopb")  # was "did you mean 'loopa'?"
    done = _run("diff-keys", folder, "--model-class", "BertModel", "--config", "dangling", cwd=tmp_path)
    assert done.returncode == 2
    assert _one_line(done.stderr) == "error: dangling: " + expected.format("no-such-model")


def test_an_unexpanded_home_as_source_says_the_path_meant(tmp_path: Path) -> None:
    copy_example(tmp_path)
    env = {"HOME": str(tmp_path)}
    done = _run("inspect", "$HOME/bert", cwd=tmp_path / "bert", env=env)
    assert done.returncode == 2
    assert _one_line(done.stderr) == (f"error: $HOME/bert: no such file or directory; did you mean {tmp_path}/bert? "
                                      "($HOME was not expanded: the shell replaces it only outside single quotes)")
    done = _run("diff-keys", "bert", "--model-class", "BertModel", "--config", "${NOT_SET_HERE}/bert", cwd=tmp_path,
                env=env)
    assert _one_line(done.stderr).endswith("; ${NOT_SET_HERE} was not expanded (it is not set here either): the "
                                           "shell replaces it only outside single quotes")


def test_an_unexpanded_variable_or_windows_path_as_output_makes_nothing(tmp_path: Path) -> None:
    folder = copy_example(tmp_path)
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    env = {"HOME": str(tmp_path / "home")}
    cases = {
        ("convert", "-o", "$HOME/m.safetensors"): "$HOME/m.safetensors: $HOME was not expanded (the shell replaces it "
        "only outside single quotes), so a file or folder named $HOME would be made; nothing written: did you mean "
        f"{tmp_path}/home/m.safetensors?",
        ("shard", "-o", r"C:\models\m", "--max", "1MB"): r"C:\models\m: a Windows path, which would be written here as"
        r" a file or folder of that literal name (nothing written): folders are separated by / (under WSL, C:\ is "
        "/mnt/c/)",
        ("convert", "-o", r"out\m.safetensors"): r"out\m.safetensors: \ does not separate folders here, / does: did "
        "you mean out/m.safetensors? (nothing written)",
        ("convert", "-o", "D:/models/m"): "D:/models/m: a Windows path, which would be written here as a file or "
        "folder of that literal name (nothing written): there are no drive letters here (under WSL, D:/ is /mnt/d/)",
    }
    for (command, *args), message in cases.items():
        done = _run(command, folder, *args, cwd=work, env=env)
        assert done.returncode == 2, done.stderr
        assert _one_line(done.stderr) == f"error: {message}"
    # Was: a folder named `$HOME`, a folder named `C:\models\m`, a file named `out\m.safetensors`, a folder `D:`.
    assert sorted(p.name for p in work.iterdir()) == ["out"] and not any((work / "out").iterdir())

    # A folder that is literally named `$x` is the user's own: written into.
    (work / "$x").mkdir()
    done = _run("convert", folder / "model.safetensors", "-o", "$x/m.safetensors", cwd=work)
    assert done.returncode == 0, done.stderr
    assert (work / "$x" / "m.safetensors").is_file()


def test_a_windows_path_with_forward_slashes_as_source(tmp_path: Path) -> None:
    done = _run("inspect", "C:/models/m", cwd=tmp_path)
    assert done.returncode == 2
    # Was "no such file or directory" alone: the `\\` hint was given for `C:\\models` only.
    assert _one_line(done.stderr) == ("error: C:/models/m: no such file or directory; a Windows path: there are no "
                                      "drive letters here (under WSL, C:/ is /mnt/c/)")


def test_a_name_in_another_unicode_form_is_suggested(tmp_path: Path) -> None:
    composed = unicodedata.normalize("NFC", "modèle élève")
    shutil.copytree(copy_example(tmp_path), tmp_path / composed)
    typed = unicodedata.normalize("NFD", composed)  # as macOS hands a name out: looks the same
    done = _run("inspect", typed, cwd=tmp_path)
    assert done.returncode == 2
    assert _one_line(done.stderr) == (f"error: {typed}: no such file or directory; the same name exists with its "
                                      "accented letters written in Unicode form NFC, which looks the same: did you "
                                      f"mean {composed!r}?")


def _deep_folder(root: Path, depth: int) -> Path:
    """A folder `depth` names of 200 bytes below `root` (made one level at a time: past PATH_MAX the whole path
    cannot be given to mkdir), holding the example checkpoint."""
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("b" * 200, dir_fd=fd)
            inner = os.open("b" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        for name in ("config.json", "model.safetensors"):
            out = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(out, (REPO_ROOT / "fixtures" / "example" / name).read_bytes())
            os.close(out)
    finally:
        os.close(fd)
    return Path(root, *["b" * 200] * depth)


def test_paths_past_path_max_say_so(tmp_path: Path) -> None:
    root = tmp_path / "deep"
    root.mkdir()
    try:
        deep = _deep_folder(root, 21)
        assert len(os.fsencode(str(deep))) >= 4096
        done = _run("inspect", deep, cwd=tmp_path)
        assert done.returncode == 2
        line = _one_line(done.stderr)
        # It exists: was "no such file or directory".
        assert line.endswith(f": cannot be opened: the path is {len(os.fsencode(str(deep))):,} bytes long, past the "
                             "system's limit of 4,095 (PATH_MAX): cd into a folder on the way and give the rest of "
                             "the path from there")

        # An output there: every name is 200 bytes, yet it was "a name on the output's path is too long (255 bytes
        # at most)".
        out = deep / "m.safetensors"
        done = _run("convert", REPO_ROOT / "fixtures" / "example" / "model.safetensors", "-o", out, cwd=tmp_path)
        assert done.returncode == 2
        line = _one_line(done.stderr)
        assert "past the system's limit of 4,095 (PATH_MAX)" in line and "255" not in line
    finally:
        shutil.rmtree(root)  # walks by file descriptors: no path past PATH_MAX is given to the system


def test_force_into_a_symlinked_output_folder_writes_into_its_target(tmp_path: Path) -> None:
    folder = copy_example(tmp_path)
    big_disk = tmp_path / "big" / "bert-fp16"
    shutil.copytree(folder, big_disk)
    (big_disk / "README.md").write_text("notes\n")
    link = tmp_path / "bert-fp16"
    link.symlink_to(big_disk, target_is_directory=True)

    done = _run("convert", folder, "-o", link, "--dtype", "fp16", "--force", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # Was: the link swapped for a real folder beside it (the earlier files copied in), the target left with the
    # old fp32 weights.
    assert link.is_symlink() and link.resolve() == big_disk
    assert sorted(p.name for p in big_disk.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    inspected = json.loads(_run("inspect", big_disk, "--json", cwd=tmp_path).stdout)
    assert inspected["dtypes"] == {"float16": 276674}
    assert (big_disk / "README.md").read_text() == "notes\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_output_in_a_read_only_working_directory_names_the_folder(tmp_path: Path) -> None:
    folder = copy_example(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    if os.geteuid() == 0:
        # root ignores permission bits; the immutable attribute stops it too.
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", work]).returncode != 0:
            pytest.skip("cannot make a folder read-only for root here")
        why = "operation not permitted: the folder {} is immutable (chattr +i)"
    else:
        work.chmod(0o555)
        why = "permission denied: the folder {} is not writable"
    try:
        for args in (["convert", folder, "-o", "out"], ["shard", folder, "-o", "a/b", "--max", "1MB"]):
            done = _run(*args, cwd=work)
            assert done.returncode == 2
            # Was "operation not permitted" alone: which folder (the working directory, `-o out` being relative)?
            assert _one_line(done.stderr) == (f"error: {args[3]}: cannot write the output: {why.format(work)}; "
                                              "nothing was left behind")
        assert list(work.iterdir()) == []
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", work])
        else:
            work.chmod(0o755)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_stderr_loses_lines_never_the_report_or_the_exit_code(tmp_path: Path) -> None:
    folder = copy_example(tmp_path)
    with open("/dev/full", "w") as full:
        # A warning on stderr (config.json follows the cast): was exit 1, read as findings, and no JSON on stdout.
        done = _run("shard", folder, "-o", tmp_path / "out", "--max", "100KB", "--json", cwd=tmp_path, stderr=full)
        assert done.returncode == 0
        assert json.loads(done.stdout)["plan"]["output"] == str(tmp_path / "out")
        # An error (exit 2) and a usage error (exit 2), whose lines cannot be written: were exit 1.
        assert _run("inspect", tmp_path / "nope", cwd=tmp_path, stderr=full).returncode == 2
        assert _run("inspect", folder, "--bogus", cwd=tmp_path, stderr=full).returncode == 2


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_mkdir_hint_for_a_folder_with_a_newline_makes_that_folder(tmp_path: Path) -> None:
    folder = copy_example(tmp_path)
    done = _run("convert", folder / "model.safetensors", "-o", "x\ny/m.safetensors", cwd=tmp_path)
    assert done.returncode == 2
    line = _one_line(done.stderr)
    hint = line.split("(create it first: ", 1)[1].split("); nothing was left behind", 1)[0]
    assert hint == "mkdir -p $'x\\x0ay'"  # was `mkdir -p 'x y'`: the newline folded into a space by the one line
    subprocess.run(["bash", "-c", hint], cwd=tmp_path, check=True)
    assert (tmp_path / "x\ny").is_dir() and not (tmp_path / "x y").exists()


def test_a_url_as_output_or_a_file_url_as_source(tmp_path: Path) -> None:
    folder = copy_example(tmp_path)
    done = _run("shard", folder, "-o", "s3://bucket/model", "--max", "1MB", cwd=tmp_path)
    assert done.returncode == 2
    # Was: written, as the folders ./s3:/bucket/model.
    assert _one_line(done.stderr) == ("error: s3://bucket/model: a URL, which would be written here as the folders "
                                      "s3:/...; outputs are written to local paths only; nothing written")
    done = _run("convert", folder, "-o", f"file://{tmp_path}/out", cwd=tmp_path)
    assert _one_line(done.stderr).endswith(f"local paths only: give the path itself: {tmp_path}/out; nothing written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert"]

    # A file:// source: the path it names, not "download it first".
    done = _run("inspect", "file://" + str(folder).replace(" ", "%20"), cwd=tmp_path)
    assert done.returncode == 2
    assert _one_line(done.stderr) == (f"error: file://{folder}: a file:// URL, not a path: give the path itself: "
                                      f"{folder}")


def test_torch_that_cannot_load_under_a_memory_limit_is_not_blamed_on_the_checkpoint(tmp_path: Path) -> None:
    import resource

    folder = copy_example(tmp_path)
    limit = 300 * 2**20  # `ulimit -v 307200`: Python starts, torch's libraries cannot be mapped

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    done = _run("check-dtype", folder, cwd=tmp_path, preexec_fn=limit_memory)
    if done.returncode == 0:
        pytest.skip("torch loads within 300 MB of address space here")
    assert done.returncode == 2
    line = _one_line(done.stderr)
    # Was "<folder>: unexpected ImportError: libtorch_cpu.so: failed to map segment ...", said of the checkpoint.
    assert line.startswith("error: cannot import torch: ") and "unexpected" not in line and str(folder) not in line
    if "failed to map segment" in line:
        assert line.endswith("(a memory limit, such as ulimit -v, leaves too little to load it)")
