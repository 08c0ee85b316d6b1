"""Red team 28: mutation fuzzing of every reader (scripts/mutation_fuzz.py).

Genuine tiny files of each format (safetensors, a sharded index, a zip `.bin`, a legacy torch save, a plain `.pkl`, a
DCP folder, `.npz`, a Hub cache), written by torch / safetensors / numpy / huggingface_hub, mutated with seeded
byte flips, inserts, deletes, truncations, header splices, length / offset / count fields of safetensors and zip
records, JSON values of a safetensors header or an index, and single pickle opcodes (ints, strings, globals), then
run through every command in-process. 27,322 mutants (safetensors 3,385, index 3,038, zip 4,778, legacy 6,816,
pkl 2,514, DCP 2,168, npz 2,455, Hub cache 2,168; two processes, about 32 minutes) found no traceback, no
"unexpected" error, no exit code but 0/1/2, no run over 10 s (the slowest 4.7 s, plan-devices importing
transformers), no growth of 200 MB, no write beside the output, no half-written output, no changed input, and no
pickle called safe that reaches a global outside torch's weights_only list and docs/security.md's inert classes.
The only commands that refused what `inspect` read were convert / shard on names a safetensors file cannot hold
(control characters, a `/`, an empty name) and plan-devices on names with an empty segment, as documented.
These tests keep a seeded slice of that run, and check that the fuzzer's oracles can fail.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from tests.hostile.conftest import run_seeded_mutants


@pytest.fixture(scope="module")
def seeds(fuzz: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return fuzz.build_seeds(tmp_path_factory.mktemp("seeds") / "s")


def test_seeded_mutants_of_every_format_end_in_a_report_or_one_error_line(
        fuzz: ModuleType, seeds: dict[str, Path], tmp_path: Path, alarm: None) -> None:
    """Three seeded mutants a format, every command on each: no finding, some read (exit 0), some refused."""
    fuzzer = fuzz.Fuzzer(tmp_path / "out", seeds)
    run_seeded_mutants(fuzzer, fuzz.FORMATS, 3, "28", tmp_path / "work")
    assert fuzzer.outcomes["inspect:2"] > 0 and fuzzer.outcomes["inspect:0"] > 0, fuzzer.outcomes


def test_the_fuzzer_reports_an_unexpected_error_a_reader_raises(
        fuzz: ModuleType, seeds: dict[str, Path], tmp_path: Path, alarm: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The oracle can fail: a reader that raises a foreign error (here planted) is a finding naming it."""
    from weightdoctor.checkpoint import safetensors_format

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("planted by the test")

    monkeypatch.setattr(safetensors_format, "_parse_header", broken)
    monkeypatch.setattr(fuzz, "mutate", lambda data, rng, donors: (data, "none"))
    fuzzer = fuzz.Fuzzer(tmp_path / "out", seeds)
    fuzzer.run_mutant("safetensors", random.Random(0), tmp_path / "work")
    assert any(entry["kind"] == "unexpected" and "unexpected ValueError: planted by the test" in entry["text"]
               for entry in fuzzer.findings.values()), list(fuzzer.findings)


def _plant(path: str) -> None:
    Path(path).write_text("ran")


class Planted:
    """A class a pickle names; unpickling it for real calls `_plant`, which creates `ran`."""

    ran: Path | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return _plant, (str(Planted.ran),)


def test_the_safety_oracle_names_what_torch_load_would_import_and_runs_none_of_it(
        fuzz: ModuleType, tmp_path: Path) -> None:
    """`reached_globals` lists a global outside torch's allowlist that torch.load(weights_only=False) would call,
    without calling it."""
    Planted.ran = tmp_path / "ran"
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2), "x": Planted()}, buffer)
    (tmp_path / "m.bin").write_bytes(buffer.getvalue())
    reached = fuzz.reached_globals(tmp_path / "m.bin", "torch")
    outside = sorted(name for name in reached if name not in fuzz.allowed_globals())
    assert outside == [f"{__name__}._plant"]
    assert not Planted.ran.exists()
