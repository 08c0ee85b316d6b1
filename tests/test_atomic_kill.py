"""Outputs appear whole or not at all: SIGKILL at several points of the write path, SIGTERM, a full disk
(RLIMIT_FSIZE) and a read-only folder, each in a subprocess. The input is never changed."""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import REPO_ROOT


def _sha_tree(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _start(args: list[str], tmp_path: Path, pause_at: str | None = None, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    if pause_at:
        env.update(WEIGHTDOCTOR_PAUSE_AT=pause_at, WEIGHTDOCTOR_PAUSE_FILE=str(tmp_path / "paused"))
    return subprocess.Popen([sys.executable, "-m", "weightdoctor", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT, **kwargs)  # type: ignore


def _wait_for_pause(proc: subprocess.Popen[str], marker: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"finished before pausing: {proc.returncode} {proc.stderr.read()}")  # type: ignore
        assert time.monotonic() < deadline, "never reached the pause point"
        time.sleep(0.05)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".wdtmp-" in p.name or ".wdstage-" in p.name)


def _default_disposition(number: int) -> Callable[[], None]:
    """For preexec_fn: `number` at its default in the child. A suite run under `nohup` passes SIGHUP on ignored, and
    weightdoctor rightly keeps an ignored SIGHUP ignored."""
    return lambda: signal.signal(number, signal.SIG_DFL) and None


def _run_paused_and_kill(args: list[str], tmp_path: Path, point: str, sig: int = signal.SIGKILL) -> int:
    marker = tmp_path / "paused"
    marker.unlink(missing_ok=True)
    catchable = sig in (signal.SIGTERM, signal.SIGHUP)
    proc = _start(args, tmp_path, pause_at=point, preexec_fn=_default_disposition(sig) if catchable else None)
    try:
        _wait_for_pause(proc, marker)
        proc.send_signal(sig)
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.parametrize("point", ["after-header", "tensor-7", "before-rename"])
def test_convert_killed_leaves_no_output_and_the_input_unchanged(
    fx: dict[str, Path], tmp_path: Path, point: str
) -> None:
    source = fx["files"] / "bert.bin"
    before = _sha_tree(source)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dest = out_dir / "model.safetensors"
    _run_paused_and_kill(["convert", source, "-o", dest], tmp_path, point)
    assert not dest.exists()
    assert len(_leftovers(out_dir)) == 1  # the killed run's temp file, never under the real name
    assert _sha_tree(source) == before
    if point != "before-rename":
        return
    # The next run removes the dead run's temp file and writes the whole, verified output.
    proc = _start(["convert", source, "-o", dest], tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["model.safetensors"]
    original = torch.load(source, weights_only=True)
    converted = load_file(dest)
    assert all(torch.equal(converted[k], original[k]) for k in original)


@pytest.mark.parametrize("point", ["tensor-20", "before-index", "before-swap", "after-swap"])
def test_shard_killed_keeps_the_earlier_save_until_the_new_one_is_complete(
    fx: dict[str, Path], tmp_path: Path, point: str
) -> None:
    source = fx["bert-sharded-bin"]
    before = _sha_tree(source)
    dest = tmp_path / "out"
    shutil.copytree(fx["bert-sharded"], dest)  # an earlier save in the destination
    earlier = _sha_tree(dest)
    _run_paused_and_kill(["shard", source, "--max", "25KB", "-o", dest, "--force"], tmp_path, point)
    assert _sha_tree(source) == before
    if point == "after-swap":
        # Swapped in whole: the new shard set, complete and verified before the swap.
        index = (dest / "model.safetensors.index.json").read_text()
        assert "-of-00004" in index
        shards = {}
        for path in dest.glob("model-*.safetensors"):
            shards.update(load_file(path))
        original = {}
        for path in source.glob("*.bin"):
            original.update(torch.load(path, weights_only=True))
        assert shards.keys() == original.keys() and all(torch.equal(shards[k], original[k]) for k in original)
    else:
        assert _sha_tree(dest) == earlier
    assert len(_leftovers(tmp_path)) <= 1


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_cleans_up_and_exits_130(fx: dict[str, Path], tmp_path: Path, number: int) -> None:
    """SIGTERM, and SIGHUP (a closed terminal or SSH session), unwind as Ctrl-C does: nothing left behind."""
    dest = tmp_path / "o"
    code = _run_paused_and_kill(["shard", fx["bert"], "--max", "30KB", "-o", dest], tmp_path, "tensor-3", number)
    assert code == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["paused"]


def assert_refused_for_size(args: list[str], tmp_path: Path) -> None:
    """Run with a 10 KB file-size limit: one line naming the cause, nothing on stdout, nothing left."""
    proc = _start(args, tmp_path, preexec_fn=lambda: _limit_file_size(10_000))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "file too large" in lines[0] and "nothing was left behind" in lines[0]
    assert out == "" and list(tmp_path.iterdir()) == []


def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_exits_2_with_one_line_and_leaves_nothing(fx: dict[str, Path], tmp_path: Path) -> None:
    source = fx["files"] / "bert.bin"
    for args in (["convert", source, "-o", tmp_path / "model.safetensors"],
                 ["shard", source, "--max", "20KB", "-o", tmp_path / "shards"]):
        assert_refused_for_size(args, tmp_path)


def test_a_read_only_output_folder_exits_2_with_one_line(fx: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        # root ignores permission bits; the immutable attribute stops it too.
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", folder]).returncode != 0:
            pytest.skip("cannot make a folder read-only for root here")
    else:
        folder.chmod(0o555)
    try:
        for args in (["convert", fx["files"] / "bert.bin", "-o", folder / "model.safetensors"],):
            proc = _start(args, tmp_path)
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 2
            lines = err.strip().splitlines()
            assert len(lines) == 1 and str(folder) in lines[0]
            assert "permission denied" in lines[0] or "not permitted" in lines[0]
        assert list(folder.iterdir()) == []
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", folder])
        else:
            folder.chmod(0o755)


def test_an_ignored_hangup_stays_ignored_under_nohup() -> None:
    """`nohup weightdoctor convert ... &` must survive the logout: a SIGHUP set to be ignored is left alone,
    while a default one (and SIGTERM) unwinds the write."""
    from weightdoctor.commands._write_options import terminate_as_interrupt

    before = {number: signal.getsignal(number) for number in (signal.SIGHUP, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with terminate_as_interrupt():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert callable(signal.getsignal(signal.SIGTERM))
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with terminate_as_interrupt():
            assert callable(signal.getsignal(signal.SIGHUP))
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
