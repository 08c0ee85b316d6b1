"""Hostile inputs found by a sweep of every command: each must exit 2 with one line, fast, allocating little."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli


def _one_line_exit_2(*args: str, expected: str) -> None:
    result = run_cli(*args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stdout[:300], result.stderr)
    assert len(lines) == 1 and expected in lines[0] and "unexpected" not in lines[0], result.stderr


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("command", [["inspect", "--stats"], ["check-dtype"], ["convert", "-o"]])
def test_an_expanded_tensor_is_not_materialized(tmp_path: Path, legacy: bool, command: list[str]) -> None:
    """A 1 KB file holding `torch.ones(1).expand(10**11)`: 400 GB of values over one stored float. The commands
    that read values refuse it; plain inspect lists it as torch.load would (its values are never read)."""
    path = tmp_path / "expanded.bin"
    torch.save({"w": torch.ones(1).expand(10**11)}, path, _use_new_zipfile_serialization=not legacy)
    args = [*command, str(path)] if command[-1] != "-o" else [command[0], str(path), "-o", str(tmp_path / "o.st")]
    started = time.monotonic()
    _one_line_exit_2(*args, expected="'w' is a view of 400,000,000,000 bytes over a storage of 4")
    assert time.monotonic() - started < 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expanded.bin"]
    listed = run_cli("inspect", str(path), "--json")
    assert listed.exit_code == 0 and json.loads(listed.stdout)["num_params"] == 10**11


def test_small_expanded_views_still_read(tmp_path: Path) -> None:
    path = tmp_path / "small.bin"
    torch.save({"position_ids": torch.arange(4).expand(1, 4), "b": torch.ones(4, 1).expand(4, 1000)}, path)
    result = run_cli("inspect", str(path), "--stats", "--json")
    assert result.exit_code == 0, result.stderr


def _big_endian_save(path: Path) -> Path:
    """A torch.save archive whose byteorder record says "big" (as torch writes on a big-endian machine)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    torch.save({"a.weight": torch.arange(6.0).reshape(2, 3)}, buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info.filename, b"big" if info.filename.endswith("/byteorder") else data)
    return path


@pytest.mark.parametrize("command", [["plan-devices", "--gpu", "1GB"], ["check-dtype", "--local"]])
def test_a_big_endian_archive_does_not_crash_the_dtype_resolver(tmp_path: Path, command: list[str]) -> None:
    """transformers' resolver reads the first weight file with torch.load(map_location="meta"), which dies with
    SIGSEGV byte-swapping a big-endian archive: run in a subprocess, as the crash would take pytest with it."""
    from tests.helpers import run_subprocess

    path = _big_endian_save(tmp_path / "big.bin")
    result = run_subprocess(command[0], str(path), *command[1:], "--json", timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])


def test_an_index_whose_metadata_is_not_an_object(tmp_path: Path) -> None:
    import json

    import numpy
    from safetensors.numpy import save_file

    save_file({"a": numpy.ones(2, numpy.float32)}, tmp_path / "model-00001-of-00001.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": [1], "weight_map": {"a": "model-00001-of-00001.safetensors"}}))
    result = run_cli("plan-devices", str(tmp_path), "--gpu", "1GB", "--json")
    assert result.exit_code == 0, result.stderr


def test_a_config_listing_architectures_that_are_not_strings(tmp_path: Path) -> None:
    import json

    import numpy
    from safetensors.numpy import save_file

    save_file({"a": numpy.ones(2, numpy.float32)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": [1, None]}))
    result = run_cli("inspect", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert "1, None" in result.stdout


@pytest.mark.parametrize("ref", ["fifo", "long"])
def test_a_hub_cache_ref_that_is_no_commit_hash(tmp_path: Path, ref: str) -> None:
    """huggingface_hub reads refs/main whole: a FIFO there waited forever (a link to /dev/zero filled the memory)."""
    import os

    import numpy
    from safetensors.numpy import save_file

    from fixtures.build import write_hub_cache
    from tests.helpers import run_subprocess

    weights = tmp_path / "weights"
    weights.mkdir()
    save_file({"a": numpy.ones(2, numpy.float32)}, weights / "model.safetensors")
    cache = tmp_path / "hub"
    write_hub_cache(cache, "org/name", weights)
    main = cache / "models--org--name" / "refs" / "main"
    main.unlink()
    if ref == "fifo":
        os.mkfifo(main)
    else:
        main.write_text("a" * 10_000)
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    result = run_subprocess("inspect", "org/name", env=env, timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "refs/main of org/name is " in lines[0] and str(main) in lines[0]


@pytest.mark.parametrize("kind", ["fifo", "folder", "device", "dangling"])
def test_a_config_that_is_no_regular_file_is_said(tmp_path: Path, kind: str) -> None:
    """It was skipped silently: every command reported a checkpoint without a config (plan-devices planned from the
    tensor names instead of the model)."""
    import json
    import os

    import numpy
    from safetensors.numpy import save_file

    save_file({"a": numpy.ones(2, numpy.float32)}, tmp_path / "model.safetensors")
    config = tmp_path / "config.json"
    if kind == "fifo":
        os.mkfifo(config)
    elif kind == "folder":
        config.mkdir()
    elif kind == "device":
        config.symlink_to("/dev/zero")
    else:
        config.symlink_to(tmp_path / "gone.json")
    if kind != "dangling":
        expected = {"fifo": "(a FIFO)", "folder": "(a folder)", "device": "(a device)"}[kind]
        _one_line_exit_2("inspect", str(tmp_path), expected=f"config.json is not a regular file {expected}")
        return
    result = run_cli("inspect", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    assert any("config.json is a link to" in w for w in json.loads(result.stdout)["warnings"])


@pytest.mark.parametrize("key, expected", [("__metadata__", "is the key of a safetensors header's metadata"),
                                           ("a\ud800", "unpaired UTF-16 surrogate")])
def test_pickle_keys_no_safetensors_file_can_hold(tmp_path: Path, key: str, expected: str) -> None:
    """Refused before writing, as other unfit names are: a `__metadata__` key was written whole and then failed to
    read back (naming the temporary file), a lone surrogate was an unexpected UnicodeEncodeError."""
    path = tmp_path / "keys.bin"
    torch.save({key: torch.ones(2), "b": torch.ones(2)}, path)
    _one_line_exit_2("convert", str(path), "-o", str(tmp_path / "out.safetensors"), expected=expected)
    _one_line_exit_2("shard", str(path), "-o", str(tmp_path / "shards"), "--max", "1KB", expected=expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.bin"]
    result = run_cli("inspect", str(path), "--stats", "--json")
    assert result.exit_code == 0, result.stderr


def test_a_flat_tree_of_thousands_of_tensors_is_not_planned(tmp_path: Path) -> None:
    """accelerate's placement is quadratic in equally sized entries of one module: 40,000 top-level names (a 2 MB
    header) ran for minutes. Refused from the tree's shape, before any placement."""
    import json
    import struct

    count = 4097  # plan_devices.MAX_MODULE_ENTRIES + 1
    header = json.dumps({f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(count)})
    path = tmp_path / "flat.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode())
    _one_line_exit_2("plan-devices", str(path), "--gpu", "1GB", expected=f"holds {count:,} tensors and modules")
