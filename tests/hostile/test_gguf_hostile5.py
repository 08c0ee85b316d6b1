"""Hostile split GGUF sets (llama.cpp's gguf-split): parts that disagree with their names or each other, a set that
points at itself, a name saying 99,999 parts; each is refused in one line naming the part and what is wrong (exit 2,
stdout empty, no traceback), quickly, never read as a model it is not."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fixtures.gguf_files import INT32, STRING, UINT16, UINT32, Tensor, llama_metadata, split_gguf, write_gguf
from tests.helpers import run_cli


def _tensors(count: int = 6) -> list[Tensor]:
    return [Tensor(f"blk.{index}.attn_norm.weight", [32], "F32") for index in range(count)]


def _refused(path: Path, *words: str) -> str:
    for extra in ((), ("--json",)):
        result = run_cli("inspect", str(path), *extra)
        assert result.exit_code == 2, (result.stdout, result.stderr)
        assert result.stdout == "" and "Traceback" not in result.stderr, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: "), line
        for word in words:
            assert word in line, (word, line)
    return line


@pytest.mark.parametrize(("override", "words"), [
    ({"split.no": (UINT16, 0)}, ["part 2 of 3 of a split GGUF: its split.no is 0, where this part's is 1"]),
    ({"split.count": (UINT16, 5)}, ["part 2 of 3", "its split.count is 5, where this part's is 3 (its name says so)"]),
    ({"split.tensors.count": (INT32, 20)}, ["part 2 of 3", "its split.tensors.count is 20", "part 1 says so"]),
    ({"split.no": (STRING, "one")}, ["part 2 of 3", "no integer split.no"]),
    ({"split.count": (UINT32, 10 ** 6)}, ["its split.count is 1,000,000"]),
])
def test_a_part_disagreeing_with_its_name_or_the_set_is_refused(tmp_path: Path, override: dict,
                                                                 words: list[str]) -> None:
    parts = split_gguf(tmp_path, "m", llama_metadata(tokens=10), _tensors(), 3,
                       **{"m-00002-of-00003.gguf": override})
    for named in (parts[0], parts[2]):  # found from any part
        _refused(named, *words)


def test_parts_of_different_gguf_versions_are_refused(tmp_path: Path) -> None:
    parts = split_gguf(tmp_path, "m", llama_metadata(tokens=10), _tensors(), 2)
    write_gguf(parts[1], {"split.no": (UINT16, 1), "split.count": (UINT16, 2), "split.tensors.count": (INT32, 6)},
               _tensors()[3:], version=2)
    _refused(parts[0], "part 2 of 2", "GGUF version 2, where part 1 is version 3")


def test_a_set_pointing_at_itself_is_refused(tmp_path: Path) -> None:
    """Part 2 a link to part 1 (each part's split.no then disagrees with its name; a copy with its split keys
    rewritten holds part 1's tensors twice)."""
    parts = split_gguf(tmp_path, "m", llama_metadata(tokens=10), _tensors(), 2)
    parts[1].unlink()
    os.symlink(parts[0].name, parts[1])
    _refused(parts[0], "part 2 of 2", "its split.no is 0, where this part's is 1")
    parts[1].unlink()
    write_gguf(parts[1], {"split.no": (UINT16, 1), "split.count": (UINT16, 2), "split.tensors.count": (INT32, 6)},
               _tensors()[:3])
    _refused(parts[0], "part 2 of 2", "tensor 'blk.0.attn_norm.weight' is in part 1 too")


def test_a_tensor_count_short_of_split_tensors_count_is_refused(tmp_path: Path) -> None:
    parts = split_gguf(tmp_path, "m", llama_metadata(tokens=10), _tensors(), 2,
                       **{"m-00001-of-00002.gguf": {"split.tensors.count": (INT32, 7)},
                          "m-00002-of-00002.gguf": {"split.tensors.count": (INT32, 7)}})
    _refused(parts[1], "holds 6 tensors, where its split.tensors.count says 7")


def test_a_name_saying_99999_parts_is_refused_quickly(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m-00001-of-99999.gguf", llama_metadata(tokens=10), _tensors(1))
    started = time.perf_counter()
    _refused(path, "more than the 10,000 parts read as one set")
    assert time.perf_counter() - started < 10
    path = write_gguf(tmp_path / "n-00001-of-09999.gguf", llama_metadata(tokens=10), _tensors(1))
    started = time.perf_counter()
    _refused(path, "part 1 of 9999", "n-00002-of-09999.gguf, n-00003-of-09999.gguf", "and 9,993 more")
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("name", ["m-00004-of-00003.gguf", "m-00000-of-00003.gguf", "m-00001-of-00000.gguf"])
def test_impossible_part_numbers_are_refused(tmp_path: Path, name: str) -> None:
    path = write_gguf(tmp_path / name, llama_metadata(tokens=10), _tensors(1))
    _refused(path, "of a split GGUF", "which no set has")


def test_two_splits_under_one_prefix_are_refused(tmp_path: Path) -> None:
    parts = split_gguf(tmp_path, "m", llama_metadata(tokens=10), _tensors(), 2)
    split_gguf(tmp_path, "m", llama_metadata(tokens=10), _tensors(), 3)
    _refused(parts[0], "a part of another split of the same name")


def test_a_part_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    parts = split_gguf(tmp_path, "m", llama_metadata(tokens=10), _tensors(), 2)
    parts[1].write_bytes(b"\x00" * 64)
    line = _refused(parts[0])
    assert "m-00002-of-00002.gguf" in line, line


@pytest.mark.parametrize("kind", ["self-link", "folder", "fifo"])
def test_a_part_that_is_no_file_is_one_line(tmp_path: Path, kind: str) -> None:
    """Part 2 a link to itself, a folder or a FIFO (whose open would wait for a writer): named, never waited on."""
    parts = split_gguf(tmp_path, "m", llama_metadata(tokens=10), _tensors(), 2)
    parts[1].unlink()
    if kind == "self-link":
        parts[1].symlink_to(parts[1].name)
    elif kind == "folder":
        parts[1].mkdir()
    else:
        os.mkfifo(parts[1])
    started = time.perf_counter()
    line = _refused(parts[0], str(parts[1]))
    assert time.perf_counter() - started < 10, line
