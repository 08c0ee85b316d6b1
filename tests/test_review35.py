"""Review 35: CompactMemo against a dict and against Python's unpicklers, and the bytes-value skip.

The scan judges the globals its walk resolves through the memo; the loader imports what its own memo gives. Any
difference between the two memos would let a pickle show the scan one global and load another.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import random
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

from weightdoctor.checkpoint.pytorch_format import _IMPORT_OPCODES, _RestrictedUnpickler
from weightdoctor.security.opcodes import CompactMemo, walk_pickle

# Indices a crafted pickle would use: the next one, ones just past it, huge ones (LONG_BINPUT's 2^32 - 1), and the
# ones no PUT may write (negative, 2^32: text PUT/GET carry any integer).
_ODD_INDICES = (0, 1, 2, 3, 5, 255, 256, 2**31, 2**32 - 1, 2**32, -1, -(2**32))


def test_compact_memo_answers_as_a_dict_on_random_operations() -> None:
    rng = random.Random(35)
    for _case in range(3000):
        memo, model = CompactMemo(), {}
        for step in range(rng.randint(1, 40)):
            kind = rng.random()
            index = rng.choice((*_ODD_INDICES, len(model), len(model) + 1, rng.randint(0, 12)))
            if kind < 0.25:  # MEMOIZE
                memo[len(memo)] = model[len(model)] = step
            elif kind < 0.6:  # PUT, possibly over an existing entry
                memo[index] = model[index] = step
            else:  # GET, possibly before any PUT
                try:
                    expected: Any = model[index]
                except KeyError:
                    expected = KeyError
                try:
                    got: Any = memo[index]
                except KeyError:
                    got = KeyError
                assert got == expected, (index, model)
            assert len(memo) == len(model)
        # The dense part never shadows a sparse one: each index lives in one place.
        assert not set(memo._sparse) & set(range(len(memo._dense)))


_NAMES = ("os", "system", "builtins", "print", "collections", "OrderedDict", "posix")


def _random_pickle(rng: random.Random) -> bytes:
    """A protocol 4 pickle of string pushes, memo writes and reads of every form, and STACK_GLOBALs; most
    steps are ones the loader accepts (a write over a value, a read of a written index), so that it goes far."""
    out = [b"\x80\x04"]
    written: set[int] = set()
    depth = 0
    for _ in range(rng.randint(1, 40)):
        kind = rng.random()
        index = rng.choice((0, 1, 2, 3, 4, 6, 255, 256, 1000, rng.randint(0, 8)))
        if depth < 2 and kind >= 0.75 or depth < 1 and 0.3 <= kind < 0.55:
            kind = rng.choice((0.0, 0.6))  # push a string or read the memo
        if 0.55 <= kind < 0.75 and written and rng.random() < 0.85:
            index = rng.choice(sorted(written))
        if kind < 0.3:
            text = rng.choice(_NAMES).encode()
            out.append(b"\x8c" + bytes([len(text)]) + text)  # SHORT_BINUNICODE
            depth += 1
        elif kind < 0.4:
            out.append(b"\x94")  # MEMOIZE: its index is the memo's count, wherever the PUTs before went
            written.add(len(written))
        elif kind < 0.55:
            written.add(index)
            form = rng.randrange(3)
            if form == 0:
                out.append(b"p" + str(index).encode() + b"\n")  # PUT
            elif form == 1 and index < 256:
                out.append(b"q" + bytes([index]))  # BINPUT
            else:
                out.append(b"r" + struct.pack("<I", index))  # LONG_BINPUT
        elif kind < 0.75:
            form = rng.randrange(3)
            if form == 0:
                out.append(b"g" + str(index).encode() + b"\n")  # GET
            elif form == 1 and index < 256:
                out.append(b"h" + bytes([index]))  # BINGET
            else:
                out.append(b"j" + struct.pack("<I", index))  # LONG_BINGET
            depth += 1
        elif kind < 0.9:
            out.append(b"\x93")  # STACK_GLOBAL
            depth -= 1
        else:
            out.append(b"0")  # POP
            depth -= 1
    return b"".join(out) + b"."


class _RecordingC(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.calls: list[tuple[str, str]] = []

    def find_class(self, module: str, name: str) -> Any:
        self.calls.append((module, name))
        return (module, name)


class _RecordingRestricted(_RestrictedUnpickler):
    """The restricted unpickler's memo handling (CompactMemo), recording instead of importing."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.calls: list[tuple[str, str]] = []

    def find_class(self, module: str, name: str) -> Any:
        self.calls.append((module, name))
        return (module, name)


def _load(unpickler: Any) -> list[tuple[str, str]]:
    # A malformed sequence ends the load; what it imported before is what is compared.
    with contextlib.suppress(Exception):
        unpickler.load()
    return unpickler.calls


def test_walk_and_restricted_unpickler_import_what_pickle_imports() -> None:
    rng = random.Random(3535)
    resolved = 0
    for _case in range(3000):
        data = _random_pickle(rng)
        loaded = _load(_RecordingC(data))
        restricted = _load(_RecordingRestricted(data))
        assert restricted == loaded, data
        walk = walk_pickle(io.BytesIO(data), len(data))
        walked = [(g.module, g.name) for g in walk.imports]
        # Every global the loader imports is the one the walk judged at that place; the walk may go on where
        # the loader stops (a STACK_GLOBAL of a non-string: the walk records it as <computed>).
        assert walked[:len(loaded)] == loaded, (data, walk.error)
        resolved += len(loaded)
    assert resolved > 500  # the generator does reach STACK_GLOBALs fed through the memo


@pytest.mark.parametrize("opcode", [b"c", b"i", b"\x93", b"\x82", b"\x83", b"\x84"])
def test_every_importing_opcode_is_in_the_skip_list(opcode: bytes) -> None:
    import pickletools

    # The opcodes whose unpickling calls find_class: GLOBAL, INST, STACK_GLOBAL, EXT1, EXT2, EXT4.
    importing = {op.code.encode("latin-1") for op in pickletools.opcodes
                 if op.name in ("GLOBAL", "INST", "STACK_GLOBAL", "EXT1", "EXT2", "EXT4")}
    assert opcode in importing and set(_IMPORT_OPCODES) == importing


class _RunsAShellCommand:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.system, ("echo the payload ran",)


def _hostile(form: str) -> bytes:
    if form == "inst":  # protocol 0's INST: MARK, the arguments, then `i` module name
        return b"(S'echo the payload ran'\niposix\nsystem\n."
    if form.startswith("archive"):
        import torch

        buffer = io.BytesIO()
        torch.save({"hook": _RunsAShellCommand()}, buffer)
        if form == "archive":
            return buffer.getvalue()
        # Its members deflated: data.pkl's opcode bytes no longer appear as such; the zip's start still has it read.
        deflated = io.BytesIO()
        with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as target:
            for info in source.infolist():
                target.writestr(info.filename, source.read(info.filename))
        return deflated.getvalue()
    return pickle.dumps(_RunsAShellCommand(), protocol=int(form))


@pytest.mark.parametrize("form", ["0", "1", "2", "3", "4", "5", "inst", "archive", "archive-deflated"])
def test_a_hostile_bytes_value_after_many_skipped_ones_is_still_refused(tmp_path: Path, form: str) -> None:
    """The skip (a value judged before, or holding no importing opcode's byte) lets through thousands of benign
    values; the hostile one after them, in every protocol, INST and a torch.save archive, is still refused."""
    import torch

    from tests.helpers import run_cli

    benign = [bytes([n % 7 + 1]) * (n % 5 + 1) for n in range(2000)] + [pickle.dumps([1, 2])] * 50
    bad = tmp_path / "state.pt"
    torch.save({"model_state_dict": {"fc.weight": torch.zeros(2, 2)}, "blobs": [*benign, _hostile(form)]}, bad)
    result = run_cli("inspect", str(bad))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, (result.stdout, result.stderr)
    assert lines[0].startswith(f"error: {bad}: dangerous: the bytes value at blobs.2050 holds a "), lines[0]
    assert "posix.system" in lines[0], lines[0]
