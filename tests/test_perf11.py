"""Round 11 of speed work: a legacy (non-zip) torch file or plain pickle of up to 64 MB is scanned from memory, and
the scanner's walk tests the opcodes a state dict's pickle uses most first. The scan must say exactly what the file
reader says (every global, offset, problem and verdict, hostile files included), and `inspect --json` on a legacy
file must still list what torch.load itself reads. Nothing here is timed: benchmarks/bench_many_tensors.py."""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import run_cli
from weightdoctor.security import scan, scan_file
from weightdoctor.security.opcodes import GlobalImport, walk_pickle


class _System:
    """Pickles as a call of os.system: what a hostile checkpoint hides."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("true",))


def _state_dict(count: int) -> collections.OrderedDict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    dtypes = (torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.float64)
    state = collections.OrderedDict(
        (f"model.layers.{i // 4}.p{i % 4}.weight",
         (torch.randn(2 + i % 3, 3, generator=generator) * 10).to(dtypes[i % len(dtypes)]))
        for i in range(count)
    )
    state["lm_head.weight"] = state["model.layers.0.p0.weight"]  # tied: one storage, two names
    state["model.layers.0.fused"] = torch.randn(6, 4, generator=generator)
    state["model.layers.0.q"] = state["model.layers.0.fused"][:2]  # a view at an offset of a shared storage
    return state


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Legacy files (whole, cut short in the data and in a pickle, a hostile pickle after the storages), a
    nested training checkpoint, plain pickles of protocols 0 and 5, and hostile plain pickles."""
    folder = tmp_path_factory.mktemp("perf11")
    state = _state_dict(300)
    paths = {name: folder / name for name in (
        "legacy.bin", "nested.pt", "cut_data.bin", "cut_pickle.bin", "trailing.bin", "plain0.pkl", "plain5.pkl",
        "system.pkl", "system0.pkl", "memo.pkl", "no_newline.pkl", "garbage.pkl")}
    torch.save(state, paths["legacy.bin"], _use_new_zipfile_serialization=False)
    torch.save({"model": state, "epoch": 3}, paths["nested.pt"], _use_new_zipfile_serialization=False)
    data = paths["legacy.bin"].read_bytes()
    paths["cut_data.bin"].write_bytes(data[: len(data) * 3 // 4])
    paths["cut_pickle.bin"].write_bytes(data[:400])
    paths["trailing.bin"].write_bytes(data + pickle.dumps(_System(), protocol=2))
    plain = {"w": list(range(6)), "b": (1.5, "x", b"y", None, True)}
    paths["plain0.pkl"].write_bytes(pickle.dumps(plain, protocol=0))
    paths["plain5.pkl"].write_bytes(pickle.dumps(plain, protocol=5))
    paths["system.pkl"].write_bytes(pickle.dumps(_System(), protocol=2))
    paths["system0.pkl"].write_bytes(pickle.dumps(_System(), protocol=0))
    # BINPUT of memo index 3e8 three bytes in: a C unpickler sets aside gigabytes for it.
    paths["memo.pkl"].write_bytes(b"\x80\x02N" + b"r" + (300_000_000).to_bytes(4, "little") + b".")
    paths["no_newline.pkl"].write_bytes(b"cos\nsys" + b"x" * 100)
    paths["garbage.pkl"].write_bytes(b"\x80\x02" + bytes(range(256)) * 4)
    return paths


def _scan_from_file(path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as patch:
        patch.setattr(scan, "MAX_IN_MEMORY_SCAN", -1)  # every file through the file reader, as before this round
        return scan_file(path)


def test_scan_from_memory_says_what_the_file_reader_says(files: dict[str, Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name, path in files.items():
        assert path.stat().st_size <= scan.MAX_IN_MEMORY_SCAN
        assert scan_file(path) == _scan_from_file(path, monkeypatch), name


def test_scan_verdicts_of_the_hostile_files(files: dict[str, Path]) -> None:
    # Not vacuous: the files compared above hold what the scan must find.
    assert scan_file(files["legacy.bin"]).verdict == "safe"
    assert scan_file(files["nested.pt"]).container == "pytorch-legacy"
    for name in ("system.pkl", "system0.pkl", "trailing.bin"):
        report = scan_file(files[name])
        assert report.verdict == "dangerous", name
        assert [(g.module, g.name) for g in report.globals if g.safety == "dangerous"] == [(os.system.__module__,
                                                                                            "system")], name
    trailing = scan_file(files["trailing.bin"])
    assert trailing.pickles == 6 and any(g.member.startswith("after the storages") for g in trailing.globals)
    assert any("memo index 300,000,000" in p.message for p in scan_file(files["memo.pkl"]).problems)
    assert any("no newline found" in p.message for p in scan_file(files["no_newline.pkl"]).problems)
    assert any("at position 2" in p.message for p in scan_file(files["garbage.pkl"]).problems)
    assert any("cut short" in p.message or "runs past the end" in p.message
               for p in scan_file(files["cut_data.bin"]).problems)
    assert scan_file(files["cut_pickle.bin"]).problems


def test_files_above_the_bound_keep_the_file_reader(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    read_whole: list[bool] = []
    real = scan._scan_pickle_file

    def recording(handle: Any, size: int, collector: Any) -> str:
        read_whole.append(isinstance(handle, io.BytesIO))
        return real(handle, size, collector)

    monkeypatch.setattr(scan, "_scan_pickle_file", recording)
    monkeypatch.setattr(scan, "MAX_IN_MEMORY_SCAN", files["legacy.bin"].stat().st_size - 1)
    assert scan_file(files["legacy.bin"]).verdict == "safe"
    assert read_whole == [False]  # one byte over the bound: walked from the file
    monkeypatch.setattr(scan, "MAX_IN_MEMORY_SCAN", files["legacy.bin"].stat().st_size)
    assert scan_file(files["legacy.bin"]).verdict == "safe"
    assert read_whole == [False, True]


def test_walk_of_a_state_dict_pickle_tracks_every_frequent_opcode() -> None:
    # Protocol 2 by hand, as torch's legacy data pickle is written: the opcodes the walk now tests first (LONG_BINPUT,
    # BINGET, MARK, BINUNICODE, BININT1, TUPLE1, NONE, NEWFALSE, TUPLE, BINPERSID, EMPTY_TUPLE, TUPLE3, REDUCE).
    stream = (b"\x80\x02" + b"ctorch._utils\n_rebuild_tensor_v2\n" + b"r" + (1).to_bytes(4, "little") + b"0"
              + b"h\x01" + b"(" + b"X" + (7).to_bytes(4, "little") + b"storage" + b"K\x05\x85" + b"N\x89" + b"t"
              + b"Q" + b"K\x01" + b")" + b"\x87" + b"R" + b".")
    walk = walk_pickle(io.BytesIO(stream), len(stream), frozenset({"torch._utils._rebuild_tensor_v2"}))
    assert walk.error is None, walk.error
    assert walk.imports == [GlobalImport("torch._utils", "_rebuild_tensor_v2", "GLOBAL", 2)]
    assert walk.persistent_ids == [("storage", (5,), None, False)]
    assert [(call.callee.name, call.opcode, call.args[1:]) for call in walk.calls] == [
        ("_rebuild_tensor_v2", "REDUCE", (1, ()))]
    assert walk.end == len(stream)
    # A GET of what no PUT wrote stops the walk, wherever the branch now sits.
    broken = walk_pickle(io.BytesIO(b"\x80\x02h\x07."), 5)
    assert broken.error == "memo entry 7 is read before it is written"


def _reference(path: Path) -> tuple[Any, ...]:
    """What torch.load itself reads: names, shapes, dtypes, and the counts inspect gives (tied names once)."""
    state = torch.load(path, weights_only=True)
    state = state.get("model", state)
    rows = [(name, list(t.shape), str(t.dtype).removeprefix("torch."), t.numel(), t.numel() * t.element_size())
            for name, t in state.items()]
    views: dict[tuple[Any, ...], torch.Tensor] = {}
    for t in state.values():
        views.setdefault((t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride()), t)
    params = sum(t.numel() for t in views.values())
    nbytes = sum(t.numel() * t.element_size() for t in views.values())
    return rows, params, nbytes


@pytest.mark.parametrize("name", ["legacy.bin", "nested.pt"])
def test_inspect_json_of_a_legacy_file_lists_what_torch_load_reads(files: dict[str, Path], name: str) -> None:
    result = run_cli("inspect", str(files[name]), "--json", "--all")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    rows, params, nbytes = _reference(files[name])
    assert [(t["name"], t["shape"], t["dtype"], t["num_params"], t["nbytes"]) for t in report["tensors"]] == rows
    assert report["format"] == "pytorch-legacy"
    assert (report["num_tensors"], report["num_params"], report["total_bytes"]) == (len(rows), params, nbytes)
    assert report["security"]["verdict"] == "safe"
    assert report["nested_key"] == ("model" if name == "nested.pt" else None)
    tied = next(group for group in report["shared_tensors"] if "lm_head.weight" in group)
    assert tied == ["model.layers.0.p0.weight", "lm_head.weight"]


def test_inspect_refuses_the_hostile_legacy_file_in_one_line(files: dict[str, Path]) -> None:
    result = run_cli("inspect", str(files["trailing.bin"]), "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "trailing.bin" in result.stderr and "system" in result.stderr
