"""mem9: under a tight address-space limit (`ulimit -v` a little above what importing torch needs) every command
finishes or refuses in one line that says memory ran out, what was being loaded and the limit, exit 2: never a
traceback, "Error in sys.excepthook" or "Exception ignored in atexit callback" (exit 1, read as findings).

Measured before the fix (diff-keys --model-class and plan-devices of fixtures/example, transformers imported under
the limit): a 650 MiB limit ended in a traceback, the console's import refused while the MemoryError was being said
(OSError ENOMEM listing weightdoctor/render); 761 MiB in "Error in sys.excepthook"; 700 MiB in "Exception ignored in
atexit callback" lines after the refusal was said. The full sweep of commands and limits is
scripts/memory_limit_sweep.py; these tests reproduce each failure in a way that takes seconds."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

EXAMPLE = REPO_ROOT / "fixtures" / "example"


def _run(code: str, *args: str, preexec_fn: object = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=120,
                          preexec_fn=preexec_fn)  # type: ignore[arg-type]


def test_memory_refused_to_the_console_import_is_said_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    """Saying the refusal imports the console (Rich); under the limit the import system's listing of the folder was
    refused too (OSError ENOMEM, no MemoryError): that escaped report_failure, a traceback and exit 1."""
    from weightdoctor.commands import _errors

    def refused() -> None:
        raise OSError(errno.ENOMEM, "Cannot allocate memory", str(REPO_ROOT / "weightdoctor" / "render"))

    monkeypatch.setattr(_errors, "_console", refused)
    assert _errors.report_failure(MemoryError(), debug=False, where="model") == 2
    err = capfd.readouterr().err
    assert err.startswith("error: model: out of memory (Cannot allocate memory)") and err.count("\n") == 1, err
    assert "render" not in err


def test_another_os_error_while_saying_it_is_not_called_memory(monkeypatch: pytest.MonkeyPatch,
                                                               capfd: pytest.CaptureFixture[str]) -> None:
    """stderr failing (EIO) while the line is written is not memory: nothing more is written, the exit code stays."""
    from weightdoctor.commands import _errors

    def broken() -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(_errors, "_console", broken)
    assert _errors.report_failure(MemoryError(), debug=False, where="model") == 2
    assert capfd.readouterr().err == ""


def test_the_plain_line_names_the_limit_that_is_set(tmp_path: Path) -> None:
    """The line written without Rich names the limit and its value: the user sees which one to raise."""
    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (6 << 30, resource.RLIM_INFINITY))\n"
        "from weightdoctor.commands._errors import memory_refusal_line\n"
        "print(memory_refusal_line(MemoryError(), 'model'), end='')\n")
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "error: model: out of memory (Cannot allocate memory); ulimit -v is 6144 MiB\n"


def test_memory_refused_to_an_import_names_the_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """"fixtures/example: out of memory: MemoryError; ... ulimit -v, is set" said nothing of what was being loaded
    (transformers' modeling modules, diff-keys --model-class with a 780 MiB limit)."""
    from weightdoctor.checkpoint import safetensors_format
    from weightdoctor.commands import _errors
    from weightdoctor.render import console

    said: list[str] = []
    monkeypatch.setattr(console, "error", said.append)
    monkeypatch.setattr(safetensors_format, "private_map_limits", lambda: ["this process's address-space limit, "
                                                                            "ulimit -v"])
    exc = _error_from_a_library(tmp_path, "MemoryError")
    assert _errors.report_failure(exc, debug=False, where="model") == 2
    assert said == ["model: out of memory: MemoryError loading bigmodels; this process's address-space limit, "
                    "ulimit -v, is set"]


# The app's import refused memory, as it was under the limit (Typer's handling of it then refused too).
_APP_IMPORT_REFUSED = """
import sys


class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == "weightdoctor.cli":
            raise MemoryError
        return None


sys.meta_path.insert(0, Refuse())
from weightdoctor.entry import main
sys.argv = ["weightdoctor"] + sys.argv[1:]
main()
"""


def test_memory_refused_outside_a_command_is_said_in_one_line() -> None:
    done = _run(_APP_IMPORT_REFUSED, "plan-devices", str(EXAMPLE), "--gpu", "1GB")
    assert done.returncode == 2, done.stderr
    assert done.stderr == "error: out of memory (Cannot allocate memory)\n", done.stderr
    assert done.stdout == ""


# A command refused memory, then the interpreter's teardown too: an atexit callback (as torch's and Rich's are)
# with no room to run.
_REFUSED_THEN_NO_ROOM_AT_EXIT = """
import atexit, sys
import weightdoctor.plan_devices as plan_devices


def refused(*args, **kwargs):
    raise MemoryError


def no_room():
    raise MemoryError


atexit.register(no_room)
plan_devices.build_planned_model = refused
from weightdoctor.entry import main
sys.argv = ["weightdoctor"] + sys.argv[1:]
main()
"""


def test_a_refusal_said_is_not_followed_by_the_teardown_failing() -> None:
    done = _run(_REFUSED_THEN_NO_ROOM_AT_EXIT, "plan-devices", str(EXAMPLE), "--gpu", "1GB")
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {EXAMPLE}: out of memory"), lines
    assert done.stdout == ""


def _error_from_a_library(root: Path, raised: str) -> BaseException:
    """The exception `raised` (Python source) raised while a package under a site-packages folder is imported."""
    package = root / "site-packages" / "bigmodels"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(f"raise {raised}\n")
    sys.path.insert(0, str(root / "site-packages"))
    try:
        import bigmodels  # type: ignore[import-not-found]  # noqa: F401
    except Exception as exc:  # noqa: BLE001 -- whatever the package raised is the result
        return exc
    finally:
        sys.path.remove(str(root / "site-packages"))
        sys.modules.pop("bigmodels", None)
    raise AssertionError("the import did not fail")


@pytest.mark.parametrize("limits", [["this process's data limit, ulimit -d"], []], ids=["limited", "unlimited"])
def test_an_import_returning_an_error_without_one_under_a_limit_is_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limits: list[str]) -> None:
    """diff-keys --model-class under `ulimit -d` with 28 MiB of data room (measured): transformers' import, down in
    sympy, was refused memory and CPython said "unexpected SystemError: error return without exception set".
    Under a limit it is said as memory refused to that library; without one it stays unexpected."""
    from weightdoctor.checkpoint import safetensors_format
    from weightdoctor.commands import _errors
    from weightdoctor.render import console

    said: list[str] = []
    monkeypatch.setattr(console, "error", said.append)
    monkeypatch.setattr(safetensors_format, "private_map_limits", lambda: list(limits))
    exc = _error_from_a_library(tmp_path, "SystemError('error return without exception set')")
    assert _errors.report_failure(exc, debug=False, where="model") == 2  # type: ignore[arg-type]
    if limits:
        assert said == ["model: out of memory: MemoryError loading bigmodels; this process's data limit, ulimit -d, "
                        "is set"]
    else:
        assert said == ["model: unexpected SystemError: error return without exception set (run with --debug for "
                        "the traceback)"]


# report_failure in a child under an address-space limit far above what it needs, its console's import failing
# as under a tight one (plan-devices with a 766 MiB limit, measured: the unmarshalling of a module returned NULL).
_CONSOLE_IMPORT_RETURNS_NULL = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, resource.RLIM_INFINITY))
from weightdoctor.commands import _errors


def refused():
    raise SystemError(sys.argv[1])


_errors._console = refused
sys.exit(_errors.report_failure(MemoryError(), debug=False, where="model"))
"""


def test_a_console_import_returning_null_under_a_limit_is_said_in_one_line() -> None:
    done = _run(_CONSOLE_IMPORT_RETURNS_NULL, "error return without exception set")
    assert done.returncode == 2, done.stderr
    assert done.stderr == "error: model: out of memory (Cannot allocate memory); ulimit -v is 6144 MiB\n"


def test_another_system_error_while_saying_it_is_not_hidden() -> None:
    done = _run(_CONSOLE_IMPORT_RETURNS_NULL, "some other fault")
    assert done.returncode == 1 and "SystemError: some other fault" in done.stderr, done.stderr
