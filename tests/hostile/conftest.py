"""The hostile corpus and benign controls, built once per test session (fixtures/hostile.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.hostile import HostileCase, build_benign, build_hostile


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
