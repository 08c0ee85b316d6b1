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


def run_seeded_mutants(fuzzer: Any, formats: Any, per_format: int, tag: str, work: Any) -> None:
    """`per_format` mutants of each format, each drawn from random.Random(f"{tag}-{format}-{n}"), every command on
    each; then no finding, and that many mutants counted per format."""
    import random

    for fmt in formats:
        for n in range(per_format):
            fuzzer.run_mutant(fmt, random.Random(f"{tag}-{fmt}-{n}"), work)
    assert fuzzer.findings == {}, list(fuzzer.findings.values())
    assert dict(fuzzer.counts) == dict.fromkeys(formats, per_format)
