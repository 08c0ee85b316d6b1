"""Safetensors' six-bit floats (F6_E2M3, F6_E3M2, the OCP MX formats; safetensors 0.6 and later) are read.

They were refused as an "unknown dtype", exit 2, where the safetensors library opens the file. No torch dtype holds
them: their structure is read, statistics and casts leave them out and say so, a safetensors output copies their
bytes, a .bin output is refused in one line, and diff-keys --values compares their bytes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests.helpers import run_cli

SIX_BIT_BYTES = bytes(range(7, 31))  # 32 six-bit values of a [4, 8] tensor: 24 bytes


def _with_six_bit(path: Path, six_bit: bytes = SIX_BIT_BYTES, dtype: str = "F6_E2M3",
                  shape: tuple[int, ...] = (4, 8)) -> Path:
    """A safetensors file of float32 tensors (saved by the library) with a six-bit tensor appended to it."""
    torch.manual_seed(0)
    plain = path.with_suffix(".plain")
    save_file({"w": torch.randn(8, 8), "b": torch.zeros(8)}, str(plain))
    raw = plain.read_bytes()
    plain.unlink()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size])
    data = raw[8 + size:]
    header["mx.weight"] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(six_bit)]}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data + six_bit)
    return path


def _six_bit_bytes(path: Path, name: str = "mx.weight") -> bytes:
    """A tensor's bytes, read by hand from the header (the library has no reader for their values)."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    begin, end = json.loads(raw[8:8 + size])[name]["data_offsets"]
    return raw[8 + size + begin:8 + size + end]


@pytest.mark.parametrize("dtype,canonical", [("F6_E2M3", "float6_e2m3fn"), ("F6_E3M2", "float6_e3m2fn")])
def test_inspect_reads_the_structure(tmp_path: Path, dtype: str, canonical: str) -> None:
    path = _with_six_bit(tmp_path / "m.safetensors", dtype=dtype)
    with safe_open(str(path), framework="np") as handle:  # the library opens it: so must weightdoctor
        assert "mx.weight" in list(handle.keys())
    result = run_cli("inspect", path, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    row = next(t for t in report["tensors"] if t["name"] == "mx.weight")
    assert (row["dtype"], row["shape"], row["num_params"], row["nbytes"]) == (canonical, [4, 8], 32, 24)
    assert report["dtypes"][canonical] == 32


def test_a_count_that_ends_mid_byte_is_refused_in_one_line(tmp_path: Path) -> None:
    path = _with_six_bit(tmp_path / "m.safetensors", six_bit=bytes(3), shape=(3,))  # 18 bits
    result = run_cli("inspect", path)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "'mx.weight'" in line and "multiple of 4" in line and str(path) in line


def test_stats_and_check_dtype_leave_them_out_and_say_why(tmp_path: Path) -> None:
    path = _with_six_bit(tmp_path / "m.safetensors")
    stats = run_cli("inspect", path, "--stats")
    assert stats.exit_code in (0, 1), stats.output
    assert "float6_e2m3fn ×1" in " ".join(stats.stdout.split())
    result = run_cli("check-dtype", path, "--json")
    assert result.exit_code in (0, 1), result.output
    skipped = {t["name"]: t["reason"] for t in json.loads(result.stdout)["skipped"]}
    assert "six-bit" in skipped["mx.weight"]


def test_a_cast_safetensors_output_copies_their_bytes(tmp_path: Path) -> None:
    path = _with_six_bit(tmp_path / "m.safetensors")
    out = tmp_path / "out.safetensors"
    result = run_cli("convert", path, "--to", "safetensors", "--dtype", "bf16", "-o", out)
    assert result.exit_code == 0, result.output
    assert _six_bit_bytes(out) == SIX_BIT_BYTES
    with safe_open(str(out), framework="pt") as handle:
        assert handle.get_tensor("w").dtype == torch.bfloat16
        assert handle.get_slice("mx.weight").get_dtype() == "F6_E2M3"
    shards = tmp_path / "shards"
    result = run_cli("shard", path, "--max", "100B", "--dtype", "bf16", "-o", shards)
    assert result.exit_code == 0, result.output
    index = json.loads((shards / "model.safetensors.index.json").read_text())
    assert _six_bit_bytes(shards / index["weight_map"]["mx.weight"]) == SIX_BIT_BYTES


def test_a_bin_output_is_refused_naming_the_tensor(tmp_path: Path) -> None:
    path = _with_six_bit(tmp_path / "m.safetensors")
    out = tmp_path / "out.bin"
    result = run_cli("convert", path, "--to", "bin", "-o", out)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "'mx.weight'" in line and "six-bit" in line
    assert not out.exists()


def test_diff_keys_values_compares_their_bytes(tmp_path: Path) -> None:
    a = _with_six_bit(tmp_path / "a.safetensors")
    same = _with_six_bit(tmp_path / "same.safetensors")
    changed = _with_six_bit(tmp_path / "changed.safetensors", six_bit=bytes([255]) + SIX_BIT_BYTES[1:])
    result = run_cli("diff-keys", a, same, "--values", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert any("1 identical, 0 changed (mx.weight)" in note for note in report["notes"])
    assert "mx.weight" not in {row["name"] for row in report["values"]}
    result = run_cli("diff-keys", a, changed, "--values", "--json")
    report = json.loads(result.stdout)
    assert any("0 identical, 1 changed (mx.weight)" in warning for warning in report["warnings"])
