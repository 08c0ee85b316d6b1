"""Corrupt and hostile safetensors files and index files: each one clear line, exit 2 (or a warning)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures.build import write_hub_cache
from tests.helpers import REPO_ROOT, run_cli, run_json
from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.checkpoint.safetensors_format import MAX_TENSORS
from weightdoctor.errors import CorruptCheckpoint, InvalidIndex

ENTRY = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}


def _safetensors(path: Path, header: bytes, data: bytes = b"\0\0\0\0") -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def _raw(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _entry_json(name: str) -> bytes:
    return json.dumps({name: ENTRY}).encode()


CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("duplicate key", lambda d: _safetensors(
        d / "dup.safetensors", b'{"a":' + json.dumps(ENTRY).encode() + b',"a":' + json.dumps(ENTRY).encode() + b"}"),
     "header lists tensor 'a' twice"),
    ("leading whitespace", lambda d: _safetensors(d / "ws.safetensors", b"  " + _entry_json("a")),
     "leading whitespace"),
    ("empty name", lambda d: _safetensors(d / "empty.safetensors", _entry_json("")), "empty name"),
    ("control character", lambda d: _safetensors(d / "ctl.safetensors", _entry_json("a\x07b")),
     "control characters"),
    ("newline", lambda d: _safetensors(d / "nl.safetensors", _entry_json("a\nb")), "control characters"),
    ("path separator", lambda d: _safetensors(d / "sep.safetensors", _entry_json("../../etc/passwd")),
     "path separator"),
    ("backslash", lambda d: _safetensors(d / "bs.safetensors", _entry_json("a\\b")), "path separator"),
    ("dot-dot", lambda d: _safetensors(d / "dots.safetensors", _entry_json("..")), "path separator"),
    ("not an object", lambda d: _safetensors(d / "list.safetensors", b'["a"]'), "does not start with '{'"),
    ("bad utf-8", lambda d: _safetensors(d / "utf.safetensors", b'{"\xff":1}'), "not valid JSON"),
    ("unknown dtype", lambda d: _safetensors(
        d / "dtype.safetensors", json.dumps({"a": {**ENTRY, "dtype": "F31"}}).encode()), "unknown dtype"),
    ("overlap", lambda d: _safetensors(
        d / "overlap.safetensors",
        json.dumps({"a": ENTRY, "b": ENTRY}).encode()), "overlap or gap"),
    ("wrong span", lambda d: _safetensors(
        d / "span.safetensors", json.dumps({"a": {**ENTRY, "shape": [2]}}).encode()), "needs 8"),
    ("offsets past the end", lambda d: _safetensors(
        d / "past.safetensors", json.dumps({"a": {**ENTRY, "data_offsets": [0, 4]}}).encode(), b"\0"),
     "truncated"),
    ("header larger than file", lambda d: _raw(d / "hdr.safetensors", struct.pack("<Q", 1000) + b"{}"),
     "truncated"),
    ("metadata not strings", lambda d: _safetensors(
        d / "meta.safetensors", json.dumps({"__metadata__": {"a": 1}, "x": ENTRY}).encode()), "__metadata__"),
    # What Python's json reads but the library refuses, or torch cannot hold: found by a sweep of every command.
    ("negative zero", lambda d: _safetensors(d / "negzero.safetensors", json.dumps(
        {"a": {**ENTRY, "shape": [0], "data_offsets": [0, 0]}, "b": ENTRY}).encode().replace(b"[0]", b"[-0]")),
     "invalid shape [-0.0]"),
    ("lone surrogate", lambda d: _safetensors(d / "surrogate.safetensors", _entry_json("a\ud800b")),
     "unpaired UTF-16 surrogate"),
    ("dimension past int64", lambda d: _safetensors(d / "dim.safetensors", json.dumps(
        {"a": {**ENTRY, "shape": [2**63, 0], "data_offsets": [0, 0]}, "b": ENTRY}).encode()), "beyond 2**63 - 1"),
    ("dimension past uint64", lambda d: _safetensors(d / "dim64.safetensors", json.dumps(
        {"a": {**ENTRY, "shape": [2**64 + 5, 0], "data_offsets": [0, 0]}, "b": ENTRY}).encode()), "beyond 2**63 - 1"),
    ("fp4 odd last dimension", lambda d: _safetensors(d / "fp4.safetensors", json.dumps(
        {"a": {"dtype": "F4", "shape": [2, 3], "data_offsets": [0, 3]}}).encode(), b"\0\0\0"), "must be even"),
    ("fp4 scalar", lambda d: _safetensors(d / "fp4s.safetensors", json.dumps(
        {"a": {"dtype": "F4", "shape": [], "data_offsets": [0, 0]}}).encode(), b""), "must be even"),
]


@pytest.mark.parametrize("make, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_safetensors_exit_2_one_line(tmp_path: Path, make: Callable[[Path], Path], expected: str) -> None:
    path = make(tmp_path)
    with pytest.raises(CorruptCheckpoint, match="."):
        open_checkpoint(path)
    result = run_cli("inspect", path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and result.stdout == ""
    assert len(lines) == 1 and expected in lines[0] and path.name in lines[0], result.stderr
    for command in (["inspect", path, "--stats"], ["diff-keys", path, path, "--values"], ["check-dtype", path],
                    ["plan-devices", path, "--gpu", "1GB"]):
        result = run_cli(*command)
        assert result.exit_code == 2 and expected in result.stderr and "unexpected" not in result.stderr, result.stderr


def test_the_library_alone_keeps_the_last_duplicate(tmp_path: Path) -> None:
    """Why the duplicate check exists: safetensors itself accepts the file silently."""
    from safetensors import safe_open

    path = _safetensors(tmp_path / "dup.safetensors",
                        b'{"a":' + json.dumps(ENTRY).encode() + b',"a":' + json.dumps(ENTRY).encode() + b"}")
    with safe_open(str(path), framework="np") as handle:
        assert list(handle.keys()) == ["a"]


def test_millions_of_entries_refused_fast(tmp_path: Path) -> None:
    count = MAX_TENSORS * 5
    body = b",".join(b'"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i for i in range(count))
    path = _safetensors(tmp_path / "huge.safetensors", b"{" + body + b"}", b"")
    started = time.perf_counter()
    with pytest.raises(CorruptCheckpoint, match="limit is 200,000"):
        open_checkpoint(path)
    assert time.perf_counter() - started < 5


def test_truncated_while_reading_raises_instead_of_sigbus(fx: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    shutil.copyfile(fx["files"] / "bert.safetensors", path)
    script = (
        "import os, sys\n"
        "from weightdoctor.checkpoint import open_checkpoint\n"
        "from weightdoctor.errors import CorruptCheckpoint\n"
        "ckpt = open_checkpoint(sys.argv[1])\n"
        "last = max(ckpt.tensors, key=lambda t: t.data_offsets[1])\n"
        "os.truncate(sys.argv[1], os.path.getsize(sys.argv[1]) - last.nbytes // 2)\n"
        "try:\n"
        "    ckpt.load_tensor(last.name)\n"
        "except CorruptCheckpoint as exc:\n"
        "    print('raised:', exc.one_line())\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                          cwd=REPO_ROOT, env={"PYTHONPATH": str(REPO_ROOT)}, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-1000:])  # -7 would be SIGBUS
    assert "raised:" in proc.stdout and "changed since its header was read" in proc.stdout


def test_truncated_during_the_read_itself(fx: dict[str, Path], tmp_path: Path) -> None:
    """Past the identity check (the file shrinks between it and the read): pread runs short and raises."""
    import dataclasses

    from weightdoctor.checkpoint.safetensors_format import read_header, read_tensor_bytes

    path = tmp_path / "model.safetensors"
    shutil.copyfile(fx["files"] / "bert.safetensors", path)
    header = dataclasses.replace(read_header(path, path.name), identity=None)
    last = max(header.tensors, key=lambda t: t.data_offsets[1])
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 1)
    with pytest.raises(CorruptCheckpoint, match="truncated or changed while reading"):
        read_tensor_bytes(path, header, last)


def test_changed_after_header_read_is_refused(fx: dict[str, Path], tmp_path: Path) -> None:
    import os

    path = tmp_path / "model.safetensors"
    shutil.copyfile(fx["files"] / "bert.safetensors", path)
    checkpoint = open_checkpoint(path)
    name = checkpoint.tensors[0].name
    checkpoint.load_tensor(name)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, new contents, new modification time
    path.write_bytes(bytes(data))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(CorruptCheckpoint, match="changed since its header was read"):
        checkpoint.load_tensor(name)


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _index(folder: Path) -> tuple[Path, dict]:  # type: ignore[type-arg]
    path = folder / "model.safetensors.index.json"
    return path, json.loads(path.read_text())


def test_index_missing_shard(fx: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(fx["bert-sharded"], tmp_path / "m")
    (folder / "model-00003-of-00003.safetensors").unlink()
    result = run_cli("inspect", folder)
    assert result.exit_code == 2 and "model-00003-of-00003.safetensors" in result.stderr
    assert "does not exist" in result.stderr and result.stderr.count("\n") == 1


def test_index_lists_tensor_absent_from_its_shard(fx: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(fx["bert-sharded"], tmp_path / "m")
    path, index = _index(folder)
    index["weight_map"]["ghost.weight"] = "model-00001-of-00003.safetensors"
    path.write_text(json.dumps(index))
    with pytest.raises(InvalidIndex, match="'ghost.weight'"):
        open_checkpoint(folder)
    result = run_cli("inspect", folder)
    assert result.exit_code == 2 and "ghost.weight" in result.stderr and "in no shard" in result.stderr


def test_index_tensor_in_two_shards(fx: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    folder = _copy(fx["bert-sharded"], tmp_path / "m")
    first = load_file(folder / "model-00001-of-00003.safetensors")
    name = next(iter(first))
    second = load_file(folder / "model-00002-of-00003.safetensors")
    save_file({**second, name: first[name]}, folder / "model-00002-of-00003.safetensors", metadata={"format": "pt"})
    result = run_cli("inspect", folder)
    assert result.exit_code == 2 and name in result.stderr and "is in both" in result.stderr


def test_index_total_size_disagrees_is_a_warning(fx: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(fx["bert-sharded"], tmp_path / "m")
    path, index = _index(folder)
    index["metadata"]["total_size"] = 12345
    path.write_text(json.dumps(index))
    code, data = run_json("inspect", folder)
    assert code == 0
    assert any("total_size is 12345" in w for w in data["warnings"])
    result = run_cli("inspect", folder)
    assert "warning:" in result.stderr and "total_size is 12345" in result.stderr  # warnings go to stderr


@pytest.mark.parametrize("shard", ["../outside.safetensors", "sub/../../outside.safetensors", "/etc/passwd"])
def test_index_pointing_outside_its_folder(fx: dict[str, Path], tmp_path: Path, shard: str) -> None:
    folder = _copy(fx["bert-sharded"], tmp_path / "m")
    shutil.copyfile(folder / "model-00001-of-00003.safetensors", tmp_path / "outside.safetensors")
    path, index = _index(folder)
    index["weight_map"] = {k: (shard if v.startswith("model-00001") else v) for k, v in index["weight_map"].items()}
    path.write_text(json.dumps(index))
    result = run_cli("inspect", folder)
    assert result.exit_code == 2 and "outside its folder" in result.stderr and shard in result.stderr


def test_index_bad_json_and_bad_weight_map(fx: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(fx["bert-sharded"], tmp_path / "m")
    path, index = _index(folder)
    path.write_text('{"weight_map": ["not", "a", "map"]}')
    result = run_cli("inspect", folder)
    assert result.exit_code == 2 and "weight_map" in result.stderr
    path.write_text("{not json")
    result = run_cli("inspect", folder)
    assert result.exit_code == 2 and "not valid JSON" in result.stderr


def test_sharded_repo_from_hub_cache_follows_blob_links(fx: dict[str, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards in a Hub cache snapshot are symlinks to ../../blobs: inside the folder, not outside it."""
    cache = tmp_path / "hub"
    write_hub_cache(cache, "org/sharded", fx["bert-sharded"])
    write_hub_cache(cache, "org/sharded-bin", fx["bert-sharded-bin"])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for repo in ("org/sharded", "org/sharded-bin"):
        code, data = run_json("inspect", repo)
        assert code == 0 and data["sharded"] and data["num_params"] == 20077
        assert data["security"]["verdict"] == "safe"


def test_a_tensorflow_safetensors_file_is_named_as_such(tmp_path: Path) -> None:
    """transformers' TF save_pretrained(safe_serialization=True) writes Keras variable names (`bert/embeddings/...`)
    with metadata format "tf": refused as "contains a path separator", as if the file were damaged."""
    import numpy as np
    from safetensors.numpy import save_file

    path = tmp_path / "model.safetensors"
    save_file({"bert/embeddings/word_embeddings/weight:0": np.zeros((4, 2), np.float32),
               "bert/pooler/dense/bias:0": np.zeros(2, np.float32)}, str(path), metadata={"format": "tf"})
    for command in (["inspect", str(path)], ["check-dtype", str(tmp_path)], ["convert", str(path), "-o",
                                                                              str(tmp_path / "out.bin")]):
        result = run_cli(*command)
        assert result.exit_code == 2 and result.stdout == ""
        line = " ".join(result.stderr.split())
        assert "a TensorFlow checkpoint (safetensors metadata format \"tf\", Keras variable names such as " \
               "'bert/embeddings/word_embeddings/weight:0')" in line and "transformers 5 cannot load it" in line, line
    assert not (tmp_path / "out.bin").exists()
