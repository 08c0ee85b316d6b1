"""Shared test fixtures: the real checkpoints built by `fixtures.build`, once per test session."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fixtures.build import build_all
from fixtures.hostile import HostileCase, build_benign, build_hostile

REPO_ROOT = Path(__file__).resolve().parent.parent


def _keep_stderr_apart() -> None:
    """Make a Click older than 8.2 (what Typer 0.15 runs on) keep a run's stderr apart, as Click 8.2+ and Typer's
    vendored Click always do: the tests read `result.stderr`, which such a Click raises on unless asked."""
    init = CliRunner.__init__
    if "mix_stderr" not in inspect.signature(init).parameters:
        return

    def __init__(self: CliRunner, *args: Any, mix_stderr: bool = False, **kwargs: Any) -> None:
        init(self, *args, mix_stderr=mix_stderr, **kwargs)

    CliRunner.__init__ = __init__  # type: ignore[method-assign]


_keep_stderr_apart()


@pytest.fixture(scope="session")
def fx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> path of every fixture checkpoint (see fixtures/build.py)."""
    return build_all(tmp_path_factory.mktemp("fixtures"))


# The hostile corpus and benign controls (fixtures/hostile.py) for tests/hostile, built once per test session. They
# live here, not in tests/hostile/conftest.py: pytest 9.1 loses a subfolder's conftest fixtures when a file of
# another folder is listed between two of its files (pytest-dev/pytest#14971; the GPU machine's shards did).
@pytest.fixture(scope="session")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file every hostile payload would create if it ever ran."""
    return tmp_path_factory.mktemp("sentinel") / "PAYLOAD_RAN"


@pytest.fixture(scope="session")
def hostile(tmp_path_factory: pytest.TempPathFactory, sentinel: Path) -> list[HostileCase]:
    return build_hostile(tmp_path_factory.mktemp("hostile"), sentinel)


@pytest.fixture(scope="session")
def benign(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return build_benign(tmp_path_factory.mktemp("benign"))


@pytest.fixture
def hub_env(fx: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point huggingface_hub at the fixture cache and keep it offline."""
    monkeypatch.setenv("HF_HUB_CACHE", str(fx["hub"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return fx["hub"]


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run a module's tests on one torch thread (restored afterwards): on the shared 2-core machine,
    extra threads on small tensors only add contention."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True)
def _no_hub_network(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never reach a hub; being offline makes a missing repo fail fast with a clear message.
    if "HF_HUB_OFFLINE" not in os.environ:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
