"""The writers and what surrounds them, found by the seventh red-team round: a source cut short while it is being
copied or cast, output names near the file-name limit, and the other environments `convert` and `shard` write
into. Each must exit 0 with a whole output, or exit 2 with one line and nothing left behind; never crash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import REPO_ROOT, run_cli


def _weights(tmp_path: Path, kind: str) -> Path:
    """Six 16 KiB tensors (each past the first pages of the file) as a safetensors file or a torch zip `.bin`."""
    tensors = {f"layer.{i}.weight": torch.full((64, 64), float(i + 1)) for i in range(6)}
    path = tmp_path / f"src.{kind}"
    if kind == "safetensors":
        save_file(tensors, str(path))
    else:
        torch.save(tensors, path)
    return path


def _run_patched(prelude: str, *args: str | Path, cwd: Path, cut: Path,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`weightdoctor ARGS` in a fresh interpreter after `prelude` (which patches the write path): a crash there
    (SIGBUS) must not take the test run with it."""
    code = prelude + "\nimport sys\nfrom weightdoctor.entry import main\nsys.argv[0] = 'weightdoctor'\nmain()\n"
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "CUT_SOURCE": str(cut),
                **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=full_env, cwd=cwd, text=True,
                          capture_output=True, timeout=120, check=False)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".wdtmp-" in p.name or ".wdstage-" in p.name)


# Cuts the source to nothing when the fourth tensor is about to be copied, once the comparing thread has opened the
# source and before it compares the first tensor: every page of the map now lies past the end of the file.
_CUT_WHILE_COMPARING = """
import os, threading
from weightdoctor.writers import byte_copy, hooks
source = os.environ["CUT_SOURCE"]
mapped, cut, compared = threading.Event(), threading.Event(), threading.Event()
real_reached, real_compare = hooks.reached, byte_copy.RangeComparer._compare

def reached(point):
    if point == "tensor-3":
        mapped.wait(20)
        os.truncate(source, 0)
        cut.set()
        compared.wait(20)
    real_reached(point)

def compare(self, name, where, offset):
    if where.length and not cut.is_set():
        self._source_fd(where.path)
        mapped.set()
        cut.wait(20)
        try:
            real_compare(self, name, where, offset)
        finally:
            compared.set()
    else:
        real_compare(self, name, where, offset)

hooks.reached, byte_copy.RangeComparer._compare = reached, compare
"""


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
@pytest.mark.parametrize("output", ["out.safetensors", "out.bin"])
def test_a_source_cut_short_while_its_copy_is_compared(tmp_path: Path, kind: str, output: str) -> None:
    """The byte copy's comparing thread read the source through a map made at its old size: cut short meanwhile,
    the first page past its new end raised SIGBUS, and the process died (exit 135) without a word, its temporary
    output left behind."""
    source = _weights(tmp_path, kind)
    result = _run_patched(_CUT_WHILE_COMPARING, "convert", source, "-o", output, cwd=tmp_path, cut=source)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {source}") and "changed while copying" in lines[0]
    assert not (tmp_path / output).exists() and _leftovers(tmp_path) == []


_CUT_AT_TENSOR_1 = """
import os
from weightdoctor.writers import hooks
real_reached = hooks.reached

def reached(point):
    if point == "tensor-1":
        os.truncate(os.environ["CUT_SOURCE"], 1000)
    real_reached(point)

hooks.reached = reached
"""


@pytest.mark.parametrize("output", ["out.safetensors", "out.bin"])
def test_a_pickle_cut_short_between_two_tensors_of_a_cast(tmp_path: Path, output: str) -> None:
    """A torch zip checkpoint's values are read through a map of the whole file made at the first value; the file
    cut short after that (before the second tensor of a `--dtype` cast) raised SIGBUS: exit 135, no message."""
    source = _weights(tmp_path, "bin")
    result = _run_patched(_CUT_AT_TENSOR_1, "convert", source, "-o", output, "--dtype", "fp16", cwd=tmp_path,
                          cut=source)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {source}") and "truncated or changed" in lines[0]
    assert not (tmp_path / output).exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("length", [240, 255])
def test_an_output_named_near_the_file_name_limit(tmp_path: Path, length: int) -> None:
    """A legal output name of 232 to 255 bytes failed: its temporary sibling (`.NAME.wdtmp-PID-TOKEN`) passed
    NAME_MAX, and the error line ("File name too long") named that temporary, not the output."""
    source = _weights(tmp_path, "safetensors")
    name = "é" * ((length - len(".safetensors")) // 2) + "x" * ((length - len(".safetensors")) % 2) + ".safetensors"
    assert len(os.fsencode(name)) == length
    result = run_cli("convert", source, "-o", tmp_path / name)
    assert result.exit_code == 0, result.stderr
    assert set(load_file(tmp_path / name)) == {f"layer.{i}.weight" for i in range(6)}
    folder = tmp_path / ("d" * length)
    result = run_cli("shard", source, "--max", "40KB", "-o", folder)
    assert result.exit_code == 0, result.stderr
    assert (folder / "model.safetensors.index.json").is_file()
    result = run_cli("shard", source, "--max", "20KB", "-o", folder, "--force")
    assert result.exit_code == 0, result.stderr
    assert _leftovers(tmp_path) == []


def test_stale_siblings_of_a_long_output_are_still_removed(tmp_path: Path) -> None:
    """The siblings of a long name carry a shortened name and a hash: the next run still finds those of a killed
    run for the same destination, and leaves those of another one alone."""
    from weightdoctor.writers.atomic import TEMP_MARK, _sibling, remove_stale_siblings

    dest, other = tmp_path / ("a" * 250), tmp_path / ("a" * 249 + "b")
    dead = 2**22 + 1  # past Linux's pid_max: no process has it
    mine = _sibling(dest, TEMP_MARK).name.replace(f"-{os.getpid()}-", f"-{dead}-")
    theirs = _sibling(other, TEMP_MARK).name.replace(f"-{os.getpid()}-", f"-{dead}-")
    assert mine != theirs and max(len(mine), len(theirs)) <= 255
    (tmp_path / mine).write_bytes(b"")
    (tmp_path / theirs).write_bytes(b"")
    assert remove_stale_siblings(dest) == [tmp_path / mine]
    assert _leftovers(tmp_path) == [theirs]


@pytest.mark.parametrize("command", [["convert", "-o", "out.safetensors"], ["shard", "--max", "100B", "-o", "out"]])
def test_a_rename_onto_the_name_of_a_dropped_tied_alias_is_refused(tmp_path: Path, command: list[str]) -> None:
    """Tied `head.weight` = `emb.weight` drops `head.weight` from a safetensors output (recorded in the metadata as
    `head.weight -> emb.weight`); `--rename '^q$=head.weight'` then wrote `q`'s values under that very name, beside
    the record that calls it an alias of `emb.weight`. A .bin output, which keeps every name, refused it already."""
    tied = torch.randn(4, 4)
    torch.save({"emb.weight": tied, "head.weight": tied, "q": torch.randn(4, 4)}, tmp_path / "tied.bin")
    result = run_cli(command[0], tmp_path / "tied.bin", *command[1:-1], tmp_path / command[-1],
                     "--rename", "^q$=head.weight")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == ["error: renames map both 'head.weight' and 'q' to 'head.weight'"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tied.bin"]


# At the point named, the source is replaced by another file (`os.replace`, as a download or a save finishing does),
# or written in place.
_CHANGE_AT = """
import os
from weightdoctor.writers import hooks
real_reached = hooks.reached

def reached(point):
    if point == os.environ["CHANGE_AT"]:
        source = os.environ["CUT_SOURCE"]
        if os.environ.get("CHANGE_WITH"):
            os.replace(os.environ["CHANGE_WITH"], source)
        else:
            with open(source, "r+b") as handle:
                handle.seek(-8, os.SEEK_END)
                handle.write(handle.read(8)[::-1])
    real_reached(point)

hooks.reached = reached
"""


def _run_changed(tmp_path: Path, source: Path, at: str, replacement: Path | None, *args: str) -> (
        subprocess.CompletedProcess[str]):
    return _run_patched(_CHANGE_AT, *args, cwd=tmp_path, cut=source,
                        env={"CHANGE_AT": at, "CHANGE_WITH": str(replacement or "")})


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
@pytest.mark.parametrize("cast", [[], ["--dtype", "fp16"]])
@pytest.mark.parametrize("output", ["out.safetensors", "out.bin"])
def test_a_source_replaced_after_its_header_was_read(tmp_path: Path, kind: str, cast: list[str], output: str) -> None:
    """The byte copy opened the source by name when it began copying: a file put in its place after the header was
    read (here: the same tensors behind a longer header, or one more record) had its bytes copied at the old file's
    offsets, "verified, byte for byte equal to the source", exit 0, every value garbage (4e33 for 1.0). A cast of a
    torch zip file mapped the new file the same way and reported the garbage as values lost to the cast."""
    source = _weights(tmp_path, kind)
    other = tmp_path / "other"
    other.mkdir()
    tensors = {f"layer.{i}.weight": torch.full((64, 64), float(i + 1)) for i in range(6)}
    replacement = other / source.name
    if kind == "safetensors":
        save_file(tensors, str(replacement), metadata={"format": "pt", "pad": "x" * 50})
    else:
        torch.save({**tensors, "extra": torch.zeros(1)}, replacement)
    result = _run_changed(tmp_path, source, "tensor-0", replacement, "convert", source, "-o", output, *cast)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {source}: the file changed since its"), lines
    assert not (tmp_path / output).exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
@pytest.mark.parametrize("output", ["out.safetensors", "out.bin"])
def test_a_source_written_in_place_while_it_is_copied(tmp_path: Path, kind: str, output: str) -> None:
    """Bytes the copy had already passed, changed in place meanwhile: the output mixed old and new bytes."""
    source = _weights(tmp_path, kind)
    result = _run_changed(tmp_path, source, "tensor-5", None, "convert", source, "-o", output)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {source}: the file changed since its"), lines
    assert not (tmp_path / output).exists() and _leftovers(tmp_path) == []


def _in_a_bind_mount(tmp_path: Path, folder: Path, alias: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """`weightdoctor ARGS` where `alias` is `folder` bind-mounted, in a mount namespace of its own (nothing outlives
    the command); skipped where this user cannot mount."""
    import shlex
    import shutil

    if shutil.which("unshare") is None:
        pytest.skip("no unshare here")
    alias.mkdir()
    command = " ".join(shlex.quote(str(a)) for a in (sys.executable, "-m", "weightdoctor", *args))
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {shlex.quote(str(folder))} "
                            f"{shlex.quote(str(alias))}"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("cannot bind-mount here (needs root, or user namespaces)")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {shlex.quote(str(folder))} "
                           f"{shlex.quote(str(alias))} && exec {command}"], env=env, cwd=tmp_path, text=True,
                          capture_output=True, timeout=120, check=False)


@pytest.mark.parametrize("command", [
    ["convert", "{folder}/model.safetensors", "-o", "{alias}/model.safetensors", "--dtype", "fp16", "--force"],
    ["shard", "{alias}", "--max", "40KB", "-o", "{folder}", "--force"],
    ["shard", "{folder}", "--max", "40KB", "-o", "{alias}", "--force"],
])
def test_the_input_under_another_path_is_never_replaced(tmp_path: Path, command: list[str]) -> None:
    """The output was compared with the input by path only: through a bind mount of the input folder, `--force`
    renamed the fp16 output over the fp32 input, or swapped the input folder out and deleted its weights."""
    folder = tmp_path / "model"
    folder.mkdir()
    source = _weights(folder, "safetensors").rename(folder / "model.safetensors")
    before = source.read_bytes()
    alias = tmp_path / "alias"
    args = [part.format(folder=folder, alias=alias) for part in command]
    result = _in_a_bind_mount(tmp_path, folder, alias, *args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "output would overwrite the input" in lines[0], lines
    assert source.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["model.safetensors"]


def test_a_hard_link_of_the_input_is_the_input(tmp_path: Path) -> None:
    """The same file under a second name is the input too (same device and inode), as a bind mount's path is."""
    source = _weights(tmp_path, "safetensors")
    os.link(source, tmp_path / "link.safetensors")
    result = run_cli("convert", source, "-o", tmp_path / "link.safetensors", "--force", "--dtype", "fp16")
    assert result.exit_code == 2 and "output would overwrite the input" in result.stderr
    assert os.path.samefile(source, tmp_path / "link.safetensors")


@pytest.mark.parametrize("command", [["shard", "--max", "10B"], ["convert"]])
def test_a_folder_output_that_fails_leaves_no_folders_it_made(tmp_path: Path, command: list[str]) -> None:
    """A folder output makes the folders above it (`-o new/deep/out`): when the write then failed ("casting to
    float16 would lose values ... Nothing was written"), `new/deep/` stayed behind."""
    source = tmp_path / "model"
    source.mkdir()
    save_file({"a": torch.full((4,), 1e6), "b": torch.ones(4)}, str(source / "model.safetensors"))
    result = run_cli(command[0], source, *command[1:], "-o", tmp_path / "new" / "deep" / "out", "--dtype", "fp16")
    assert result.exit_code == 2 and "Nothing was written" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    (tmp_path / "kept").mkdir()
    result = run_cli(command[0], source, *command[1:], "-o", tmp_path / "kept" / "deep" / "out", "--dtype", "fp16")
    assert result.exit_code == 2 and list((tmp_path / "kept").iterdir()) == []


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_plan_devices_never_writes_its_map_over_the_input_under_another_path(tmp_path: Path, name: str) -> None:
    """`plan-devices --output` compared paths only: through a bind mount of the model folder it replaced the
    weights (or the config) with a 12-byte device map, exit 0."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(REPO_ROOT / "fixtures" / "example", folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    alias = tmp_path / "alias"
    result = _in_a_bind_mount(tmp_path, folder, alias, "plan-devices", folder, "--gpu", "1GB",
                              "--output", alias / name)
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == [
        f"error: --output {alias / name} would overwrite an input (the same file under another path); "
        "choose another file"]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@pytest.mark.parametrize("command", [["convert", "--to", "bin"], ["shard", "--max", "40KB", "--format", "bin"]])
def test_a_subfolder_named_like_an_output_weight_file_is_not_copied(tmp_path: Path, command: list[str]) -> None:
    """Subfolders are copied whole; one named `pytorch_model.bin.index.json/` or `pytorch_model-00001-of-00002.bin/`
    took the name of a file the output writes, and the write failed with "cannot write the output: File exists"
    (or "Is a directory"), which did not say why."""
    folder = tmp_path / "model"
    folder.mkdir()
    _weights(folder, "safetensors").rename(folder / "model.safetensors")
    for name in ("pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin", "pytorch_model.bin"):
        (folder / name).mkdir()
        (folder / name / "notes.txt").write_text("x")
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text("{}")
    result = run_cli(command[0], folder, "-o", tmp_path / "out", *command[1:])
    assert result.exit_code == 0, result.stderr
    assert "pytorch_model.bin.index.json/ (a folder named like a weight file or index)" in result.stderr
    assert (tmp_path / "out" / "1_Pooling" / "config.json").is_file()
    assert not (tmp_path / "out" / "pytorch_model.bin").is_dir()


@pytest.mark.parametrize("points_to", ["/proc/self/fd/1", "fifo"])
def test_force_never_replaces_a_link_to_a_stream(tmp_path: Path, points_to: str) -> None:
    """`-o /dev/stdout --force` as root replaced the system's `/dev/stdout -> /proc/self/fd/1` with a regular file
    of the output (the link itself was renamed over, as for any link); a link to a FIFO likewise."""
    if points_to == "fifo":
        os.mkfifo(tmp_path / "fifo")
        points_to = str(tmp_path / "fifo")
    link = tmp_path / "stdout"
    link.symlink_to(points_to)
    source = _weights(tmp_path, "safetensors")
    result = run_cli("convert", source, "-o", link, "--force")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {link}: output exists and is a link to a device, FIFO, socket or /proc (such as /dev/stdout); "
        "it is never replaced")
    assert link.is_symlink() and os.readlink(link) == points_to and _leftovers(tmp_path) == []


@pytest.mark.parametrize(("output", "reason"), [
    ("{file}/sub", "a part of the output's path is a file, not a folder"),
    ("{file}/sub/deeper", "a part of the output's path is a file, not a folder"),
    ("{long}", "a name on the path is 256 bytes long, past the limit of 255 bytes a file name may have"),
    ("{long}/x", "a name on the path is 256 bytes long, past the limit of 255 bytes a file name may have"),
])
@pytest.mark.parametrize("command", [["convert"], ["shard", "--max", "40KB"]])
def test_an_output_path_that_cannot_be_is_said_in_words(tmp_path: Path, output: str, reason: str,
                                                        command: list[str]) -> None:
    """A path under a file said "cannot write the output: File exists" (or "Not a directory"); one with a 256-byte
    name said "cannot read or write: [Errno 36] File name too long: '...'", the OS error as it came."""
    folder = tmp_path / "model"
    folder.mkdir()
    _weights(folder, "safetensors").rename(folder / "model.safetensors")
    (tmp_path / "file").write_text("x")
    dest = output.format(file=tmp_path / "file", long=tmp_path / ("z" * 256))
    result = run_cli(command[0], folder, *command[1:], "-o", dest)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {dest}: cannot write the output: {reason}; nothing was left behind"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "model"]


@pytest.mark.parametrize("command", [["convert", "-o", "out.safetensors"], ["shard", "--max", "0", "-o", "out"]])
def test_every_strip_and_add_prefix_given_is_applied_in_order(tmp_path: Path, command: list[str]) -> None:
    """`--strip-prefix module. --strip-prefix model.` (a DDP-wrapped transformers state dict) kept the last one only,
    without a word: the output still had `module.` names, exit 0."""
    source = tmp_path / "ddp.safetensors"
    save_file({"module.model.embed.weight": torch.ones(2), "module.model.norm.weight": torch.ones(2)}, str(source))
    result = run_cli(command[0], source, *command[1:-1], tmp_path / command[-1], "--strip-prefix", "module.",
                     "--strip-prefix", "model.", "--add-prefix", "base.", "--add-prefix", "text.")
    assert result.exit_code == 0, result.stderr
    written = tmp_path / "out.safetensors" if command[0] == "convert" else tmp_path / "out" / "model.safetensors"
    assert sorted(load_file(written)) == ["text.base.embed.weight", "text.base.norm.weight"]


def _run_with_256_descriptors(command: list[str], folder: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m weightdoctor COMMAND[0] FOLDER COMMAND[1:]` limited to 256 open descriptors (macOS's default)."""
    import resource

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "weightdoctor", command[0], str(folder), *command[1:]], env=env,
                          cwd=cwd, text=True, capture_output=True, timeout=300, check=False,
                          preexec_fn=few_descriptors)


@pytest.mark.parametrize("command", [["convert", "-o", "merged.safetensors"], ["convert", "-o", "merged.bin"],
                                     ["shard", "--max", "0", "-o", "merged"]])
def test_merging_hundreds_of_shards_holds_a_bounded_number_of_files_open(tmp_path: Path, command: list[str]) -> None:
    """The byte copy held every source file open until the end, and its comparing thread mapped each (a descriptor
    of its own, and the map's): merging 600 shards into one file failed with "cannot write the output: Too many open
    files" under the usual limit of 1,024 descriptors (here 300 shards under 256)."""
    import json

    folder = tmp_path / "many"
    folder.mkdir()
    count = 300
    weight_map = {}
    for i in range(count):
        name = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
        save_file({f"l{i}.w": torch.full((4,), float(i))}, str(folder / name))
        weight_map[f"l{i}.w"] = name
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    result = _run_with_256_descriptors(command, folder, tmp_path)
    assert result.returncode == 0, result.stderr
    written = tmp_path / "merged" / "model.safetensors" if command[0] == "shard" else tmp_path / command[-1]
    tensors = load_file(written) if written.suffix == ".safetensors" else torch.load(written, weights_only=True)
    assert len(tensors) == count and all(float(tensors[f"l{i}.w"][0]) == i for i in range(count))


@pytest.mark.parametrize("command", [["convert", "-o", "out.safetensors", "--dtype", "fp16"],
                                     ["check-dtype", "--target", "fp16"], ["inspect", "--stats"],
                                     ["diff-keys", "many", "--values"]])
def test_reading_the_values_of_hundreds_of_bin_shards_holds_a_bounded_number_of_files_open(
        tmp_path: Path, command: list[str]) -> None:
    """Each torch zip file read without torch kept its memory map (and the descriptor a map holds) until the
    checkpoint was closed: the values of 300 `.bin` shards under a limit of 256 descriptors (macOS's default; 1,024
    on Linux) failed with "Too many open files"."""
    import json

    folder = tmp_path / "many"
    folder.mkdir()
    count = 300
    weight_map = {}
    for i in range(count):
        name = f"pytorch_model-{i + 1:05d}-of-{count:05d}.bin"
        torch.save({f"l{i}.w": torch.full((4,), float(i))}, folder / name)
        weight_map[f"l{i}.w"] = name
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    result = _run_with_256_descriptors(command, folder, tmp_path)
    assert result.returncode == 0, result.stderr
    if command[0] == "convert":
        tensors = load_file(tmp_path / "out.safetensors")
        assert len(tensors) == count and all(float(tensors[f"l{i}.w"][0]) == i for i in range(count))


@pytest.mark.parametrize("name", ["a\nb.safetensors", "a\nb"])
def test_what_a_killed_run_left_for_a_name_with_a_newline_is_removed(tmp_path: Path, name: str) -> None:
    """The next run for a destination removes what a killed one left beside it: not where the name held a newline
    (the pattern that finds those siblings stopped at it)."""
    from weightdoctor.writers.atomic import STAGE_MARK, TEMP_MARK

    source = _weights(tmp_path, "safetensors")
    mark = TEMP_MARK if name.endswith(".safetensors") else STAGE_MARK
    stale = tmp_path / f".{name}{mark}{2**22 + 1}-deadbeef"  # past Linux's pid_max: that process is gone
    (stale.mkdir if mark == STAGE_MARK else stale.touch)()
    command = ["convert"] if mark == TEMP_MARK else ["shard", "--max", "40KB"]
    result = run_cli(command[0], source, *command[1:], "-o", tmp_path / name)
    assert result.exit_code == 0, result.stderr
    assert not stale.exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["file", "stage"])
def test_what_a_killed_run_left_read_as_the_input_is_not_removed_unread(tmp_path: Path, kind: str) -> None:
    """A run killed before its rename leaves `.model.safetensors.wdtmp-PID-TOKEN` (or a `.out.wdstage-...` folder of
    whole shards); converting that very file to the output it was meant for removed it as a stale sibling before
    anything was read: the input was gone, and the run failed."""
    dead = 2**22 + 1  # past Linux's pid_max: that process is gone
    if kind == "file":
        source = tmp_path / f".model.safetensors.wdtmp-{dead}-abcd"
        _weights(tmp_path, "safetensors").rename(source)
        command = ["convert", str(source), "-o", str(tmp_path / "model.safetensors")]
    else:
        source = tmp_path / f".out.wdstage-{dead}-abcd"
        source.mkdir()
        _weights(tmp_path, "safetensors").rename(source / "model.safetensors")
        command = ["shard", str(source), "--max", "40KB", "-o", str(tmp_path / "out")]
    before = sorted(p.name for p in source.rglob("*")) if source.is_dir() else source.read_bytes()
    result = run_cli(*command)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is what an earlier, killed run for this output left" in lines[0], lines
    assert (sorted(p.name for p in source.rglob("*")) if source.is_dir() else source.read_bytes()) == before


@pytest.mark.parametrize("command", [["convert"], ["shard", "--max", "40KB"]])
def test_a_sparse_side_file_is_copied_sparse(tmp_path: Path, command: list[str]) -> None:
    """A model folder's `README.md` of 1 GiB that takes no disk (`truncate -s 1G`: a tarball can carry one) was
    written out in full, 1 GiB of zeros (a terabyte one, likewise, until the disk was full)."""
    folder = tmp_path / "model"
    folder.mkdir()
    _weights(folder, "safetensors").rename(folder / "model.safetensors")
    with open(folder / "README.md", "wb") as handle:
        handle.write(b"# head\n")
        handle.truncate(1 << 30)
        handle.seek(0, os.SEEK_END)
        handle.write(b"tail\n")
    if os.stat(folder / "README.md").st_blocks * 512 > 1 << 20:
        pytest.skip("this file system keeps no holes")
    result = run_cli(command[0], folder, *command[1:], "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    copied = tmp_path / "out" / "README.md"
    assert copied.stat().st_size == (1 << 30) + 5 and copied.stat().st_blocks * 512 <= 1 << 20
    with open(copied, "rb") as handle:
        assert handle.read(7) == b"# head\n" and (handle.seek(-5, os.SEEK_END), handle.read())[1] == b"tail\n"
