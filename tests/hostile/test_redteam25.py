"""Red team 25: the commands that read values and do arithmetic (inspect --stats, diff-keys --values, check-dtype,
plan-devices) on extreme values and sizes.

What held (checked against torch in float64, not pinned here beyond one guard): statistics of values near
float32's and float64's limits, subnormals, NaN / inf / -0.0, fp8; diff-keys --values of int64 / uint64 past 2**53,
bool, complex, mixed dtypes, all-zero B, NaN at the same place; check-dtype at fp16's boundaries. What did not:
a tensor larger than the machine's memory (read whole) ended in "out of memory: MemoryError" naming neither file
nor tensor, or "unexpected RuntimeError"; and plan-devices on a config with num_hidden_layers 0 failed in
transformers' balanced planning with a line that named no file and advised other --gpu sizes, which cannot help.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tests.helpers import one_error_line, run_cli
from weightdoctor.checkpoint import safetensors_format


def _write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], bytes | int]]) -> None:
    """A safetensors file whose data is given as bytes, or as a byte count left sparse (zeros, no disk used)."""
    header: dict[str, object] = {}
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        size = data if isinstance(data, int) else len(data)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text)
        for _dtype, _shape, data in tensors.values():
            if isinstance(data, int):
                handle.seek(data, 1)
            else:
                handle.write(data)
        handle.truncate(8 + len(text) + offset)


@pytest.fixture
def small_machine(monkeypatch: pytest.MonkeyPatch) -> int:
    """A machine with 1 MB of memory available (the tensors below are 4 MB)."""
    monkeypatch.setattr(safetensors_format, "available_memory", lambda: 1_000_000, raising=False)
    return 1_000_000


def _big_file(tmp_path: Path) -> Path:
    path = tmp_path / "big.safetensors"
    _write_safetensors(path, {"small": ("F32", [4], struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)),
                              "huge": ("F32", [1024, 1024], 4 * 1024 * 1024)})
    return path


def test_stats_refuse_a_tensor_larger_than_memory_naming_file_tensor_and_sample(
    tmp_path: Path, small_machine: int
) -> None:
    path = _big_file(tmp_path)
    line = one_error_line(run_cli("inspect", path, "--stats"))
    assert line.startswith(f"error: {path}: tensor 'huge' (4.19 MB) is read whole into memory")
    assert "1.00 MB this machine has available: nothing was read; --sample N" in line
    # --sample reads a few blocks, not the tensor: it still works on this machine.
    result = run_cli("inspect", path, "--stats", "--sample", "256", "--json")
    assert result.exit_code == 0, result.stderr
    stats = {t["name"]: t["stats"] for t in json.loads(result.stdout)["tensors"]}
    assert stats["huge"]["sampled"] is True and stats["huge"]["count"] == 256
    assert stats["small"]["mean"] == 2.5


@pytest.mark.parametrize("command", [["check-dtype"], ["diff-keys", "SAME", "--values"]])
def test_check_dtype_and_diff_values_refuse_it_in_one_line_naming_the_file(
    tmp_path: Path, small_machine: int, command: list[str]
) -> None:
    path = _big_file(tmp_path)
    args = [str(path) if word == "SAME" else word for word in command]
    line = one_error_line(run_cli(args[0], path, *args[1:]))
    assert line.startswith(f"error: {path}: tensor 'huge' (4.19 MB) is read whole into memory")
    assert "MemoryError" not in line


def test_a_tensor_that_fits_is_still_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safetensors_format, "available_memory", lambda: 5_000_000, raising=False)
    result = run_cli("inspect", _big_file(tmp_path), "--stats", "--json")
    assert result.exit_code == 0, result.stderr
    stats = {t["name"]: t["stats"] for t in json.loads(result.stdout)["tensors"]}
    assert stats["huge"]["count"] == 1024 * 1024 and stats["huge"]["zero_fraction"] == 1.0


def test_stats_of_values_near_float32_max_are_not_inf(tmp_path: Path) -> None:
    """Guard: sums past float32's range are combined in float64 (mean of 3e38s is 3e38, not inf)."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(25)
    values = torch.randn(64, 64, generator=generator) * 1e37
    values[0, :] = 3e38
    save_file({"w": values}, str(tmp_path / "m.safetensors"))
    result = run_cli("inspect", tmp_path / "m.safetensors", "--stats", "--json")
    stats = json.loads(result.stdout)["tensors"][0]["stats"]
    exact = values.double()
    assert stats["mean"] == pytest.approx(exact.mean().item(), rel=1e-9)
    assert stats["std"] == pytest.approx(exact.std(unbiased=False).item(), rel=1e-9)
    assert stats["inf"] == 0 and stats["abs_max"] == exact.abs().max().item()


def _llama_config(folder: Path, layers: int) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": layers, "vocab_size": 1000,
        "max_position_embeddings": 128, "torch_dtype": "float32"}))
    return folder


@pytest.mark.parametrize("strategy", ["auto", "balanced"])
def test_plan_devices_on_a_model_without_layers_says_why_and_names_the_file(tmp_path: Path, strategy: str) -> None:
    folder = _llama_config(tmp_path / "no-layers", 0)
    line = one_error_line(run_cli("plan-devices", folder, "--gpu", "24GB", "--strategy", strategy))
    assert line.startswith(f"error: {folder}: the model holds no LlamaDecoderLayer module (num_hidden_layers 0?)")
    assert f"device_map={strategy!r} planning fails without one" in line
    assert "--strategy sequential plans it" in line and "try other --gpu" not in line
    # What the line advises works.
    result = run_cli("plan-devices", folder, "--gpu", "24GB", "--strategy", "sequential", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["verdict"] == "fits-on-gpus"


@pytest.mark.parametrize("size", [6, 20_000])  # compared in one batch of small pairs, and pair by pair
@pytest.mark.parametrize("special", [float("nan"), float("inf")])
def test_diff_values_rel_change_leaves_out_a_nan_or_inf_unchanged_on_both_sides(
    tmp_path: Path, size: int, special: float
) -> None:
    """A NaN at the same place in A and B made rel_change "nan" (the documented "size not comparable") next to a
    true max_abs_diff; an inf at the same place made it 0.0 beside identical: false. ‖B‖ is now over the rest."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(25)
    a = torch.randn(size, generator=generator)
    b = a.clone()
    b[1] += 0.5
    a[0] = b[0] = special
    save_file({"w": a}, str(tmp_path / "a.safetensors"))
    save_file({"w": b}, str(tmp_path / "b.safetensors"))
    result = run_cli("diff-keys", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--values", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    row = report["values"][0]
    rest_a, rest_b = a[1:].double(), b[1:].double()
    expected = ((rest_a - rest_b).norm() / rest_b.norm()).item()
    assert row["identical"] is False and row["max_abs_diff"] == pytest.approx(0.5, rel=1e-6)
    assert row["rel_change"] == pytest.approx(expected, rel=1e-9)
    assert report["layers_changed_most"][0]["rel_change"] == pytest.approx(expected, rel=1e-9)


def test_kv_cache_of_a_config_with_zero_layers_is_none_not_a_missing_key(tmp_path: Path) -> None:
    """num_hidden_layers 0 was read as absent (`or`): "config has no num_hidden_layers ...; cannot size a KV
    cache", exit 2. Zero layers cache nothing."""
    folder = _llama_config(tmp_path / "no-layers", 0)
    result = run_cli("plan-devices", folder, "--gpu", "24GB", "--strategy", "sequential", "--kv-cache", "--json")
    assert result.exit_code == 0, result.stderr
    kv_cache = json.loads(result.stdout)["kv_cache"]
    assert kv_cache["total_bytes"] == 0 and kv_cache["num_layers"] == 0
    assert kv_cache["note"] == "no KV cache: the config counts 0 layers"


def test_stats_beside_nan_and_inf_are_over_the_finite_values_as_documented(tmp_path: Path) -> None:
    """Guard for the sentence the docs now say: min / max / abs_max / zero_fraction leave NaN and inf out."""
    import torch
    from safetensors.torch import save_file

    values = torch.tensor([0.0, float("-inf"), float("nan"), 2.0, float("inf")])
    save_file({"w": values}, str(tmp_path / "m.safetensors"))
    result = run_cli("inspect", tmp_path / "m.safetensors", "--stats", "--json")
    stats = json.loads(result.stdout)["tensors"][0]["stats"]
    assert (stats["min"], stats["max"], stats["abs_max"], stats["zero_fraction"]) == (0.0, 2.0, 2.0, 0.5)
    assert (stats["count"], stats["nan"], stats["inf"], stats["mean"]) == (5, 1, 2, 1.0)
