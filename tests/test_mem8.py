"""mem8: under a tight data limit (`ulimit -d`) every command either finishes with the output it gives without the
limit or fails in one line (exit 2), and never hangs. A thread whose bootstrap died of MemoryError left CPython's
`Thread.start()` waiting forever: convert of a 4 KB file with 8 MiB of room hung, "Exception ignored in thread
started by: <object repr() failed> / MemoryError" its only words.

Each command runs in a child forked from one process that imported what the commands use and then limits its own
data to `room` bytes past what it holds (as tests/test_memory4.py's `_data_limited` does, one process a run): one
import for all the runs keeps the matrix of commands and rooms to seconds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO_ROOT

MIB = 1 << 20
EXAMPLE = REPO_ROOT / "fixtures" / "example"

# The forking runner: imports as test_memory4's `_DATA_LIMITED` does (every weightdoctor module, and the rich and
# safetensors modules the commands import lazily, before any limit), then runs each case of argv[1] (a JSON list) in
# a forked child: in the case's folder, stdout and stderr to files there, its data limited to its room past what
# the child holds. A child still running `timeout` seconds later is killed and said as hung. Prints, as JSON, each
# case's exit code (None: hung) and the data the runner held once its imports were done.
_RUNNER = r"""
import faulthandler, importlib, json, os, pkgutil, resource, select, signal, sys, time
import torch, weightdoctor, weightdoctor.cli
for module in pkgutil.walk_packages(weightdoctor.__path__, "weightdoctor."):
    importlib.import_module(module.name)
import rich.console, rich.live, rich.progress, rich.table, safetensors.torch
for module in filter(None, sys.argv[3].split(",")):
    importlib.import_module(module)
from weightdoctor.entry import main


def data_held():
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmData:"))


cases, timeout = json.loads(sys.argv[1]), float(sys.argv[2])
codes, seconds = [], []
for case in cases:
    started = time.monotonic()
    # A case run on a terminal has its stderr on a pseudo-terminal, which the runner reads as the run goes (its
    # buffer full, the run would wait): the progress bars draw only there.
    terminal, reader = os.openpty() if case.get("terminal") else (None, None)
    pid = os.fork()
    if pid == 0:
        os.chdir(case["folder"])
        os.dup2(os.open("stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
        os.dup2(reader if terminal is not None else os.open("stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
        faulthandler.dump_traceback_later(timeout * 0.9)  # where a hung run waits, for the test's message
        if case["room"] is not None:
            resource.setrlimit(resource.RLIMIT_DATA, (data_held() + case["room"], resource.RLIM_INFINITY))
        sys.argv = ["weightdoctor", *case["args"]]
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        # No teardown of the modules (a second a run, with torch imported), as the commands' fast path skips it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    drawn = bytearray()
    if terminal is not None:
        os.close(reader)
        os.set_blocking(terminal, False)
    deadline = time.monotonic() + timeout
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        if terminal is not None:
            select.select([terminal], [], [], 0.01)
            try:
                drawn += os.read(terminal, 1 << 16)
            except (BlockingIOError, OSError):
                pass
        else:
            time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        codes.append(None)
    else:
        codes.append(os.waitstatus_to_exitcode(done[1]))
    if terminal is not None:
        try:
            while chunk := os.read(terminal, 1 << 16):
                drawn += chunk
        except OSError:  # EIO: the run's end of the terminal is closed, all of it read
            pass
        os.close(terminal)
        with open(os.path.join(case["folder"], "stderr"), "wb") as said:
            said.write(bytes(drawn))
    seconds.append(time.monotonic() - started)
print(json.dumps({"held": data_held(), "codes": codes, "seconds": seconds}))
"""


def run_cases(cases: list[dict[str, Any]], timeout: float, env: dict[str, str] | None = None,
              imported: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run `cases` (each {"folder", "room" (bytes, or None for no limit), "args"}) through the forking runner, which
    imports the modules `imported` too before any limit."""
    done = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(cases), str(timeout), ",".join(imported)],
                          capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=60 + timeout * len(cases),
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# Past what the runner holds once its imports are done (about 330 MiB of data, measured), which includes free heap
# the commands allocate from: on this fixture every command finished with 512 KiB of room, and with none inspect
# --stats, diff-keys --values and check-dtype were refused their first tensor in one line (measured), so 0 tries
# that line; 8 MiB is where the comparing thread's stack fitted and its first frame did not (convert hung).
ROOMS = [0, 4 * MIB, 8 * MIB, 12 * MIB, 16 * MIB, 24 * MIB]
# Each command on the fixture: a .safetensors file of `planted_state_dict` and the same tensors as a zip .bin.
COMMANDS: dict[str, list[str]] = {
    "inspect": ["inspect", "{st}"],
    "inspect --stats": ["inspect", "{st}", "--stats"],
    "diff-keys": ["diff-keys", "{st}", "{bin}", "--values"],
    "plan-devices": ["plan-devices", "{st}", "--gpu", "1GB"],
    "convert": ["convert", "{bin}", "-o", "out.safetensors"],  # copied by byte ranges, verified by a thread
    "convert to .bin": ["convert", "{st}", "-o", "out.bin"],  # hashed by the writer's pool
    "shard": ["shard", "{st}", "-o", "out", "--max", "8KB"],
    "check-dtype": ["check-dtype", "{st}"],
}
# Those that draw a progress bar on a terminal (Rich's refresh thread drew it before), run on one too.
ON_A_TERMINAL = ["inspect --stats", "diff-keys", "convert", "convert to .bin", "shard", "check-dtype"]
TERMINAL_ROOMS = [8 * MIB]
# What plan-devices imports (transformers' modeling_utils, 80 MiB of data and 10 s or more) is imported first too,
# as rich and safetensors are: under these rooms the import alone would be refused, and the command never tried.
IMPORTED = ("transformers.modeling_utils",)
# Seconds a run may take before it is said hung: each takes well under one, here and under a limit.
HUNG_AFTER = 20.0
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_SECONDS = re.compile(r"\b\d+\.\d+ s\b")  # how long convert and shard took, which moves from run to run


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int | None, bool], dict[str, Any]]:
    """(command, room, on a terminal) -> {"code", "stdout", "stderr", "files" (relative path -> bytes)} of each run,
    every command also run without a limit (room None)."""
    import torch
    from safetensors.torch import save_file

    from fixtures.dtype_fixtures import planted_state_dict

    root = tmp_path_factory.mktemp("mem8")
    # Without its float16 `half.weight`, which plan-devices refuses as a module path beside `half` (a method of
    # nn.Module), before anything the limit bears on.
    state = {name: tensor for name, tensor in planted_state_dict().items() if name != "half.weight"}
    save_file(state, str(root / "planted.safetensors"), metadata={"format": "pt"})
    torch.save(state, root / "planted.bin")
    words = {"st": str(root / "planted.safetensors"), "bin": str(root / "planted.bin")}
    keys = [(name, room, False) for name in COMMANDS for room in [None, *ROOMS]]
    keys += [(name, room, True) for name in ON_A_TERMINAL for room in TERMINAL_ROOMS]
    cases = []
    for index, (name, room, terminal) in enumerate(keys):
        folder = root / f"run{index}"
        folder.mkdir()
        cases.append({"folder": str(folder), "room": room, "terminal": terminal,
                      "args": [word.format(**words) for word in COMMANDS[name]]})
    ran = run_cases(cases, HUNG_AFTER, imported=IMPORTED)
    results = {}
    for key, case, code in zip(keys, cases, ran["codes"], strict=True):
        folder = Path(case["folder"])
        results[key] = {"code": code, "stdout": _SECONDS.sub("0.00 s", (folder / "stdout").read_text(errors="replace")),
                        "stderr": (folder / "stderr").read_text(errors="replace"),
                        "files": {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*"))
                                  if path.is_file() and path.name not in ("stdout", "stderr")}}
    return results


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "terminal"])
@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_finishes_or_fails_in_one_line_under_a_data_limit(
        matrix: dict[tuple[str, int | None, bool], dict[str, Any]], name: str, terminal: bool) -> None:
    """Under each room a run gives the output, the stderr and the files of its run without a limit, or exits 2 with
    one line that says memory ran out and leaves no file; it never hangs, and never prints a traceback. convert
    hung with 8 MiB (the comparing thread's bootstrap refused), as a progress bar's refresh thread could."""
    if terminal and name not in ON_A_TERMINAL:
        pytest.skip("no progress bar")
    whole = matrix[(name, None, False)]
    assert whole["code"] in (0, 1), whole
    for room in TERMINAL_ROOMS if terminal else ROOMS:
        run = matrix[(name, room, terminal)]
        said = f"{name} with {room // MIB} MiB of data room: {run['stderr'][-3000:]}"
        assert run["code"] is not None, f"hung: {said}"
        assert "Traceback" not in run["stderr"] and "Exception ignored" not in run["stderr"], said
        if run["code"] == whole["code"]:
            assert run["stdout"] == whole["stdout"], said
            assert run["files"] == whole["files"], said
            if not terminal:  # on a terminal the bar's frames are drawn as the run goes
                assert run["stderr"] == whole["stderr"], said
            continue
        lines = [line for line in _ESCAPES.sub("", run["stderr"]).replace("\r", "\n").splitlines() if line.strip()]
        assert run["code"] == 2 and len(lines) == 1, said
        assert lines[0].startswith("error: ") and "memory" in lines[0], said
        assert run["files"] == {}, said  # nothing written, and nothing half written left behind


def test_the_matrix_runs_commands_that_succeed_under_a_limit(
        matrix: dict[tuple[str, int | None, bool], dict[str, Any]]) -> None:
    """The rooms are not all too small for every command to do anything: each finishes under the largest."""
    assert [name for name in COMMANDS if matrix[(name, ROOMS[-1], False)]["code"] == 2] == []


# Every thread's bootstrap dies as it did under the limit: CPython hands sys.unraisablehook the MemoryError (with the
# function the thread was started with) and the function never runs. Set in a child that then runs `weightdoctor`.
_BOOTSTRAPS_DIE = """
import _thread, sys, threading


caught = []
sys.unraisablehook = caught.append
type("Dying", (), {"__del__": lambda self: 1 / 0})()  # an unraisable error, for the type of what the hook is given
sys.unraisablehook = sys.__unraisablehook__
UnraisableHookArgs = type(caught[0])


def start_new_thread(function, args, kwargs=None):
    sys.unraisablehook(UnraisableHookArgs((MemoryError, MemoryError(), None, "in thread started by", function)))
    return 1


_thread.start_new_thread = threading._start_new_thread = start_new_thread
from weightdoctor.entry import main
sys.argv = ["weightdoctor"] + sys.argv[1:]
main()
"""


@pytest.mark.parametrize("args", [["convert", "{bin}", "-o", "{out}.safetensors"],
                                  ["convert", "{st}", "-o", "{out}.bin"],
                                  ["shard", "{st}", "-o", "{out}", "--max", "8KB"]], ids=["convert", "to-bin", "shard"])
def test_a_thread_whose_bootstrap_dies_is_done_without(tmp_path: Path, args: list[str]) -> None:
    """The comparing thread of a copy (convert, shard) and the writer's hashing threads (a .bin output) are started so
    that a bootstrap that dies is seen: the work is done on the main thread, the output verified, and stderr says
    nothing of it. Thread.start() waited for such a thread forever (the run was killed here after 30 s)."""
    import torch
    from safetensors.torch import load_file, save_file

    from fixtures.dtype_fixtures import planted_state_dict

    state = {name: tensor for name, tensor in planted_state_dict().items() if name != "half.weight"}
    save_file(state, str(tmp_path / "in.safetensors"))
    torch.save(state, tmp_path / "in.bin")
    words = [word.format(st=tmp_path / "in.safetensors", bin=tmp_path / "in.bin", out=tmp_path / "out")
             for word in args]
    done = subprocess.run([sys.executable, "-c", _BOOTSTRAPS_DIE, *words, "--json"], capture_output=True, text=True,
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=30)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    written = json.loads(done.stdout)["write"]
    assert written["verified"] is True and written["tensors_verified"] == len(state), written
    if args[-1].endswith(".safetensors"):
        copied = load_file(str(tmp_path / "out.safetensors"))
        assert {name: tensor.numpy().tobytes() for name, tensor in copied.items()} == \
            {name: tensor.numpy().tobytes() for name, tensor in state.items()}


def test_a_thread_starts_and_runs() -> None:
    from weightdoctor.threads import start_thread

    ran = threading.Event()
    assert start_thread(ran.set) is True
    assert ran.wait(5)


def test_a_bootstrap_that_dies_is_seen_at_once_and_kept_off_stderr(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """What CPython does with a thread whose first frame is refused: the MemoryError to sys.unraisablehook, the
    function never called. start_thread says False well before its wait ends, and nothing reaches stderr."""
    from weightdoctor import threads

    hook_args = _unraisable_hook_args_type()

    def dies(function: Any, args: tuple[Any, ...]) -> int:
        sys.unraisablehook(hook_args((MemoryError, MemoryError(), None, "in thread started by", function)))
        return 1

    monkeypatch.setattr(threads._thread, "start_new_thread", dies)
    started = time.monotonic()
    assert threads.start_thread(lambda: pytest.fail("ran")) is False
    assert time.monotonic() - started < 1
    assert capsys.readouterr().err == ""


def test_a_thread_that_starts_after_its_wait_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given up after its wait, a thread that starts late returns at once: its work is done by the caller only."""
    from weightdoctor import threads

    late: list[Any] = []
    monkeypatch.setattr(threads._thread, "start_new_thread", lambda function, args: late.append(function) or 1)
    ran: list[int] = []
    assert threads.start_thread(lambda: ran.append(1), wait=0.05) is False
    late[0]()  # it starts now
    assert ran == []


def test_a_thread_refused_its_stack_is_said_false(monkeypatch: pytest.MonkeyPatch) -> None:
    from weightdoctor import threads

    def refused(function: Any, args: tuple[Any, ...]) -> int:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threads._thread, "start_new_thread", refused)
    assert threads.start_thread(lambda: None) is False


def test_a_pool_without_threads_runs_the_work_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    from weightdoctor import threads

    monkeypatch.setattr(threads, "start_thread", lambda target, wait=threads.START_WAIT: False)
    pool = threads.WorkerPool(2)
    assert pool.submit(pow, 2, 10).result(timeout=0) == 1024
    assert list(pool.map(abs, [-1, 2, -3])) == [1, 2, 3]
    with pytest.raises(ZeroDivisionError):
        pool.submit(divmod, 1, 0).result(timeout=0)


def test_a_pool_runs_the_work_in_its_threads() -> None:
    from weightdoctor.threads import WorkerPool

    pool = WorkerPool(2)
    names = list(pool.map(lambda _: threading.get_ident(), range(8)))
    assert threading.get_ident() not in names and len(set(names)) <= 2
    with pytest.raises(ZeroDivisionError):
        pool.submit(divmod, 1, 0).result(timeout=5)


def test_a_comparer_without_its_thread_compares_as_ranges_are_submitted(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from weightdoctor.errors import OutputError
    from weightdoctor.writers import byte_copy

    monkeypatch.setattr(byte_copy, "start_thread", lambda target: False)
    (tmp_path / "src").write_bytes(b"a" * 100 + b"b" * 100)
    (tmp_path / "out").write_bytes(b"a" * 100 + b"c" * 100)
    comparer = byte_copy.RangeComparer(tmp_path / "out")
    comparer.submit("same", byte_copy.ByteRange(tmp_path / "src", 0, 100), 0)
    assert comparer.compared == 1
    comparer.submit("other", byte_copy.ByteRange(tmp_path / "src", 100, 100), 100)
    with pytest.raises(OutputError, match="the bytes of 'other' differ from the source"):
        comparer.finish()


def _unraisable_hook_args_type() -> Any:
    """The type CPython hands sys.unraisablehook (not importable by name)."""
    caught: list[Any] = []
    hook = sys.unraisablehook
    sys.unraisablehook = caught.append
    try:
        type("Dying", (), {"__del__": lambda self: 1 / 0})()
    finally:
        sys.unraisablehook = hook
    return type(caught[0])


# A staged folder output whose run then spends its whole data room (as shard's verification, importing transformers
# under the limit, did) and fails: the stage must still be removed.
_STAGE_THEN_NO_ROOM = """
import os, resource, sys
from pathlib import Path
from weightdoctor.writers.atomic import StagingDir

held = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmData:"))
resource.setrlimit(resource.RLIMIT_DATA, (held + (8 << 20), resource.RLIM_INFINITY))
hoard = []
try:
    with StagingDir(Path(sys.argv[1]) / "out") as stage:
        for index in range(20):
            (stage.path / f"model-{index}.safetensors").write_bytes(bytes(100))
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 8):
            try:
                while True:
                    hoard.append(bytearray(size))
            except MemoryError:
                pass
        raise RuntimeError("the run failed")
except RuntimeError:
    hoard.clear()
print(len(os.listdir(sys.argv[1])))
"""


def test_a_staged_folder_is_removed_when_the_failed_run_spent_the_room(tmp_path: Path) -> None:
    """Removing the stage reads it (opendir's buffer), which the spent room refused: rmtree ignored the ENOMEM and
    `.out.wdstage-*` stayed (shard with 9 MiB of room, measured). Room held back for it from the start removes it."""
    done = subprocess.run([sys.executable, "-c", _STAGE_THEN_NO_ROOM, str(tmp_path)], capture_output=True, text=True,
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"], list(tmp_path.iterdir())


def test_memory_refused_to_a_call_on_a_file_is_said_as_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """"cannot read or write: [Errno 12] Cannot allocate memory: '.out.wdstage-1-ab'", of no source (shard under
    `ulimit -d`), said the stage of the output as if its disk failed."""
    import errno

    from weightdoctor.commands import _errors
    from weightdoctor.render import console

    said: list[str] = []
    monkeypatch.setattr(console, "error", said.append)
    refused = OSError(errno.ENOMEM, "Cannot allocate memory", ".out.wdstage-1-ab")
    assert _errors.report_failure(refused, debug=False, where="model") == 2
    assert len(said) == 1 and said[0].startswith("model: out of memory: Cannot allocate memory"), said
    assert "wdstage" not in said[0]


def test_a_failure_that_cannot_be_said_for_memory_is_said_plainly(monkeypatch: pytest.MonkeyPatch,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    """Naming the data limit reads a file, which the spent room refused: report_failure raised MemoryError, and the
    run ended in a traceback, exit 1 (plan-devices with 48 MiB of room, its transformers import refused)."""
    from weightdoctor.checkpoint import safetensors_format
    from weightdoctor.commands import _errors

    def refused() -> list[str]:
        raise MemoryError

    monkeypatch.setattr(safetensors_format, "private_map_limits", refused)
    assert _errors.report_failure(MemoryError(), debug=False, where="model") == 2
    assert capfd.readouterr().err == "error: model: out of memory (Cannot allocate memory)\n"
