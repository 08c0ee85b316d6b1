"""The byte-copy write path (`writers.byte_copy`): the same files as the torch path, no torch import.

When nothing is cast, `convert` and `shard` copy each tensor's bytes in the kernel and compare them with
the source as they go. Their output must be the very bytes the torch path (tensors loaded one at a time
and written by `SafetensorsWriter`, itself checked against the safetensors library) writes.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import REPO_ROOT, run_cli
from weightdoctor import rewrite
from weightdoctor.writers import byte_copy
from weightdoctor.writers.byte_copy import ByteRange, write_safetensors_by_copy
from weightdoctor.writers.safetensors_writer import TensorSlot


def _files(folder: Path) -> dict[str, bytes]:
    if folder.is_file():
        return {folder.name: folder.read_bytes()}
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _both_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> tuple[dict[str, bytes], str]:
    """Run a write command by byte copy and through torch; return the byte-copy files and its stdout."""
    outputs = {}
    for byte_copy_on in (True, False):
        monkeypatch.setattr(rewrite, "BYTE_COPY", byte_copy_on)
        out = tmp_path / ("copy" if byte_copy_on else "torch") / args[-1]
        out.parent.mkdir(exist_ok=True)
        result = run_cli(*args[:-1], "-o", out, "--json")
        assert result.exit_code == 0, result.stderr
        outputs[byte_copy_on] = (_files(out), result.stdout)
    assert outputs[True][0] == outputs[False][0]
    return outputs[True]


@pytest.mark.parametrize("source", ["bert.bin", "bert.safetensors", "gpt2-tied.bin", "ddp-nested.pth"])
def test_convert_by_copy_writes_the_torch_paths_bytes(fx: dict[str, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    extra = ["--strip-prefix", "module."] if source == "ddp-nested.pth" else []
    files, stdout = _both_paths(monkeypatch, tmp_path, "convert", fx["files"] / source, *extra, "x.safetensors")
    assert '"tensors_verified"' in stdout and '"verified": true' in stdout
    (name, data), = files.items()
    path = tmp_path / "check.safetensors"
    path.write_bytes(data)
    loaded = load_file(path)
    # the source as its own library reads it (torch.load reads a .safetensors file from torch 2.13 only: 2.11's
    # weights_only unpickler stopped at its first byte, "Unsupported operand 208")
    reference = (load_file(fx["files"] / source) if source.endswith(".safetensors")
                 else torch.load(fx["files"] / source, weights_only=True))
    reference = reference.get("model", {}).get("module", reference)
    for key, value in reference.items():
        key = key.removeprefix("module.")
        if key in loaded:
            assert torch.equal(loaded[key], value), key


def test_shard_and_folder_convert_by_copy_write_the_torch_paths_bytes(fx: dict[str, Path], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    files, _ = _both_paths(monkeypatch, tmp_path, "shard", fx["bert-bin"], "--max", "20KB", "sharded")
    assert "model.safetensors.index.json" in files and sum(n.endswith(".safetensors") for n in files) > 2
    files, _ = _both_paths(monkeypatch, tmp_path, "convert", fx["bert-sharded-bin"], "folder")
    assert "model.safetensors.index.json" in files and "config.json" in files


def test_a_conversion_without_a_cast_does_not_import_torch(fx: dict[str, Path], tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from weightdoctor.cli import app\n"
        "for source, out in ((sys.argv[1], sys.argv[2]), (sys.argv[3], sys.argv[4])):\n"
        "    result = CliRunner().invoke(app, ['convert', source, '-o', out, '--json'])\n"
        "    assert result.exit_code == 0, result.output\n"
        "print('torch' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(fx["files"] / "bert.bin"), str(tmp_path / "a.safetensors"),
         str(fx["bert"] / "model.safetensors"), str(tmp_path / "b.safetensors")],
        capture_output=True, text=True, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def _slots_and_sources(path: Path) -> tuple[list[TensorSlot], dict[str, ByteRange]]:
    from weightdoctor.checkpoint import open_checkpoint

    checkpoint = open_checkpoint(path)
    slots = [TensorSlot(t.name, t.dtype, t.shape) for t in checkpoint.tensors]
    sources = {}
    for info in checkpoint.tensors:
        found = checkpoint.byte_range(info.name)
        assert found is not None
        sources[info.name] = ByteRange(*found)
    return slots, sources


def test_copy_falls_back_to_reads_and_writes_where_the_kernel_refuses(fx: dict[str, Path], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    slots, sources = _slots_and_sources(fx["files"] / "bert.bin")
    write_safetensors_by_copy(tmp_path / "kernel.safetensors", slots, sources, {"format": "pt"})

    def refuse(*args: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    compared = write_safetensors_by_copy(tmp_path / "python.safetensors", slots, sources, {"format": "pt"})
    assert compared == len(slots)
    assert (tmp_path / "kernel.safetensors").read_bytes() == (tmp_path / "python.safetensors").read_bytes()


def test_a_source_range_of_the_wrong_size_is_refused_before_writing(fx: dict[str, Path], tmp_path: Path) -> None:
    slots, sources = _slots_and_sources(fx["files"] / "bert.safetensors")
    first = slots[0].name
    sources[first] = ByteRange(sources[first].path, sources[first].offset, sources[first].length - 4)
    with pytest.raises(ValueError, match="source bytes"):
        write_safetensors_by_copy(tmp_path / "x.safetensors", slots, sources, None)
    assert not (tmp_path / "x.safetensors").exists()


def test_writeback_is_started_in_steps_and_verification_reads_every_tensor(fx: dict[str, Path], tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    slots, sources = _slots_and_sources(fx["files"] / "bert.safetensors")
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(byte_copy, "WRITEBACK_STEP", 64 << 10)
    monkeypatch.setattr(byte_copy, "start_writeback", lambda fd, offset, length: calls.append((offset, length)))
    compared = write_safetensors_by_copy(tmp_path / "x.safetensors", slots, sources, {"format": "pt"})
    assert compared == len(slots)
    # Ranges follow one another without gaps, each at least one step long.
    assert calls and all(b[0] == a[0] + a[1] for a, b in zip(calls, calls[1:], strict=False))
    assert all(length >= 64 << 10 for _, length in calls)


@pytest.mark.parametrize("byte_copy_on", [True, False])
def test_fp4_tensors_keep_their_bytes_and_value_shape_through_every_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, byte_copy_on: bool
) -> None:
    # torch counts packed pairs (shape (2, 3)), safetensors counts values (shape (2, 6)): the reader
    # describes both files alike, and the writers store what each format expects.
    from safetensors.torch import save_file

    from weightdoctor.checkpoint import open_checkpoint

    monkeypatch.setattr(rewrite, "BYTE_COPY", byte_copy_on)
    packed = torch.arange(6, dtype=torch.uint8).reshape(2, 3).view(torch.float4_e2m1fn_x2)
    save_file({"w": packed, "x": torch.ones(2)}, tmp_path / "a.safetensors", metadata={"format": "pt"})
    torch.save({"w": packed, "x": torch.ones(2)}, tmp_path / "a.bin")
    for source in ("a.safetensors", "a.bin"):
        info = open_checkpoint(tmp_path / source).tensor_info("w")
        assert (info.shape, info.num_params, info.nbytes) == ((2, 6), 12, 6), source
    assert run_cli("convert", tmp_path / "a.safetensors", "-o", tmp_path / "b.bin").exit_code == 0
    assert run_cli("convert", tmp_path / "b.bin", "-o", tmp_path / "c.safetensors").exit_code == 0
    loaded = torch.load(tmp_path / "b.bin", weights_only=True)["w"]
    assert loaded.shape == (2, 3) and torch.equal(loaded.view(torch.uint8), packed.view(torch.uint8))
    assert (tmp_path / "c.safetensors").read_bytes() == (tmp_path / "a.safetensors").read_bytes()


@pytest.mark.parametrize("source", ["bert.bin", "bert.safetensors"])
def test_a_source_truncated_while_converting_leaves_nothing(fx: dict[str, Path], tmp_path: Path, source: str) -> None:
    import shutil

    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.convert import plan_convert, run_convert
    from weightdoctor.errors import CorruptCheckpoint

    copy = tmp_path / source
    shutil.copyfile(fx["files"] / source, copy)
    checkpoint = open_checkpoint(copy)
    plan = plan_convert(checkpoint, tmp_path / "x.safetensors")
    os.truncate(copy, copy.stat().st_size // 2)
    with pytest.raises(CorruptCheckpoint) as caught:
        run_convert(checkpoint, plan)
    assert caught.value.path == str(copy)
    assert "early" in str(caught.value) or "changed" in str(caught.value)
    assert [p.name for p in tmp_path.iterdir()] == [source]


def test_an_interrupted_wait_never_unmaps_what_the_comparing_thread_reads(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while `finish`/`close` waits for the comparing thread: the thread is stopped first, the maps
    closed only once it has returned, then the interrupt is raised (CPython 3.11 can report an interrupted
    `join`'s thread as stopped while it is inside `memcmp`: unmapping then crashed the process)."""
    import threading
    import time

    data = os.urandom(3 * byte_copy._CHUNK)
    (tmp_path / "src").write_bytes(data)
    (tmp_path / "out").write_bytes(data)
    inside = threading.Event()
    seen: list[bool] = []

    def slow_memcmp(a: int, b: int, n: int) -> int:
        inside.set()
        time.sleep(0.3)
        # The thread maps each chunk itself; what `close` must leave alone until it returns are the descriptors.
        seen.append(comparer._fd >= 0 and all(os.fstat(fd) is not None for fd in comparer._maps.values()))
        return 0

    monkeypatch.setattr(byte_copy, "_MEMCMP", slow_memcmp)
    comparer = byte_copy.RangeComparer(tmp_path / "out")
    comparer.submit("t", ByteRange(tmp_path / "src", 0, len(data)), 0)
    assert inside.wait(5)
    real_wait = comparer._done.wait
    calls = {"n": 0}

    def interrupted_wait(timeout: float | None = None) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return real_wait(timeout)

    monkeypatch.setattr(comparer._done, "wait", interrupted_wait)
    with pytest.raises(KeyboardInterrupt):
        comparer.close()
    assert comparer._done.is_set()  # set by the thread as it returns
    assert seen and all(seen)  # every memcmp ran with its maps open
    assert len(seen) < 3  # cancelled between chunks, not compared to the end
    assert comparer._maps == {} and comparer._fd == -1
