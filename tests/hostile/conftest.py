"""Fixtures the hostile tests share: the mutation fuzzer (scripts/fuzz_mutations.py) and a SIGALRM that ends a run
the fuzzer's way (its `Hang`)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.helpers import load_mutation_fuzz


@pytest.fixture(scope="module")
def fuzz() -> ModuleType:
    return load_mutation_fuzz()


@pytest.fixture()
def alarm(fuzz: ModuleType) -> Iterator[None]:
    """signal.alarm(N) in a test raises the fuzzer's Hang after N seconds; the handler is put back after it."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise fuzz.Hang()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
