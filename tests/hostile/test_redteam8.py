"""The values and the analyses over them, found by the eighth red-team round: float64 weights beyond float32's
range or resolution, integers past 2**53, tensor kinds the reader cannot describe, and the float8 kinds the
installed safetensors writes. Each figure is checked against torch in float64."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli, run_subprocess


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def _stats_of(path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("inspect", str(path), "--stats", "--json", *extra)
    return result.exit_code, _strict_json(result.stdout)


@pytest.mark.parametrize("sample", [[], ["--sample", "64"]])
def test_float64_values_beyond_float32_are_not_counted_as_inf(tmp_path: Path, sample: list[str]) -> None:
    # 1e308 is finite in float64; narrowed to float32 it became inf: "16 Inf values", an error finding, and
    # min / max over what was left.
    path = tmp_path / "wide.safetensors"
    values = torch.tensor([1e308, -1e308, 1.0, 2.0] * 32, dtype=torch.float64)
    save_file({"w": values.reshape(8, 16)}, str(path))
    code, report = _stats_of(path, *sample)
    assert code == 0
    stats = report["tensors"][0]["stats"]
    assert (stats["nan"], stats["inf"]) == (0, 0)
    assert (stats["min"], stats["max"], stats["abs_max"]) == (-1e308, 1e308, 1e308)
    # The true mean, 0.75, lies far below one ulp of 1e308: float64 sums can only promise it to ~1e-16 of that.
    assert abs(stats["mean"] - 0.75) <= 1e-12 * 1e308
    # torch's own std overflows here (nan); the reference is that of the values scaled down by 2**1023.
    assert stats["std"] == pytest.approx(float((values / 2.0 ** 1023).std(unbiased=False)) * 2.0 ** 1023, rel=1e-12)
    assert not [f for f in report["findings"] if f["code"] == "nan-inf"]


def test_float64_spread_below_float32_resolution_is_not_constant(tmp_path: Path) -> None:
    # 1 + k·1e-12 are 64 different float64 values that all narrow to 1.0f: "every value is 1" was a false alarm.
    path = tmp_path / "fine.safetensors"
    values = 1.0 + 1e-12 * torch.arange(64, dtype=torch.float64)
    save_file({"w": values.reshape(8, 8)}, str(path))
    code, report = _stats_of(path)
    assert code == 0
    stats = report["tensors"][0]["stats"]
    assert stats["std"] == pytest.approx(float(values.std(unbiased=False)), rel=1e-9)
    assert stats["max"] - stats["min"] == pytest.approx(63e-12, rel=1e-6)
    assert not [f for f in report["findings"] if f["code"] == "constant"]


def test_float64_subnormal_spread_keeps_its_std(tmp_path: Path) -> None:
    # Squares of 1e-170 underflow to 0 in float64 itself: the std must come from scaled values.
    path = tmp_path / "tiny.safetensors"
    values = torch.tensor([1e-170, 3e-170] * 8, dtype=torch.float64)
    save_file({"w": values}, str(path))
    code, report = _stats_of(path)
    stats = report["tensors"][0]["stats"]
    assert code == 0
    assert stats["mean"] == pytest.approx(2e-170, rel=1e-12)
    assert stats["std"] == pytest.approx(1e-170, rel=1e-12)
    assert stats["zero_fraction"] == 0.0
    assert math.isfinite(stats["kurtosis"])


@pytest.mark.parametrize(("dtype", "a", "b", "diff"), [
    (torch.int64, 2 ** 53 + 1, 2 ** 53, 1.0),
    (torch.int64, 2 ** 63 - 1, 2 ** 63 - 2, 1.0),
    (torch.int64, -(2 ** 63), 2 ** 63 - 1, float(2 ** 64 - 1)),
    (torch.uint64, 2 ** 64 - 1, 2 ** 64 - 3, 2.0),
])
def test_integers_that_float64_cannot_tell_apart_are_not_identical(tmp_path: Path, dtype: torch.dtype, a: int,
                                                                   b: int, diff: float) -> None:
    # Compared in float64, 2**53 + 1 and 2**53 were one value: a changed seed or step counter was "identical".
    save_file({"seed": torch.tensor([a, 7], dtype=dtype)}, str(tmp_path / "a.safetensors"))
    save_file({"seed": torch.tensor([b, 7], dtype=dtype)}, str(tmp_path / "b.safetensors"))
    result = run_cli("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--values",
                     "--json")
    assert result.exit_code == 0, result.stderr
    (row,) = _strict_json(result.stdout)["values"]
    assert row["identical"] is False
    assert row["max_abs_diff"] == diff
    assert row["rel_change"] == pytest.approx(diff / math.hypot(float(b), 7.0), rel=1e-12)


def test_equal_integers_past_2_53_stay_identical(tmp_path: Path) -> None:
    values = torch.tensor([2 ** 62 + 1, -(2 ** 63), 2 ** 63 - 1])
    save_file({"ids": values}, str(tmp_path / "a.safetensors"))
    save_file({"ids": values.clone()}, str(tmp_path / "b.safetensors"))
    result = run_cli("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--values",
                     "--json")
    (row,) = _strict_json(result.stdout)["values"]
    assert (row["identical"], row["max_abs_diff"], row["rel_change"]) == (True, 0.0, 0.0)


@pytest.mark.parametrize("command", [["inspect"], ["inspect", "--stats"], ["check-dtype"]])
def test_a_nested_tensor_in_a_bin_is_named_as_one(tmp_path: Path, command: list[str]) -> None:
    # It reached torch's "Internal error: NestedTensorImpl doesn't support sizes. Please file an issue."
    path = tmp_path / "nested.bin"
    with warnings.catch_warnings():  # nested tensors are a prototype (said once per process)
        warnings.simplefilter("ignore", UserWarning)
        nested = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])
    torch.save({"w": torch.ones(2, 2), "nt": nested}, path)
    result = run_cli(*command, str(path))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(path) in lines[0] and "tensor 'nt' is a nested" in lines[0]
    assert "Internal error" not in lines[0] and "Traceback" not in result.stderr


def _fnuz_tensors() -> dict[str, torch.Tensor]:
    values = torch.tensor([[0.5, -1.0, 2.0], [4.0, 96.0, 0.015625]])
    return {"e4": values.to(torch.float8_e4m3fnuz), "e5": values.to(torch.float8_e5m2fnuz),
            "fn": values.to(torch.float8_e4m3fn), "w": values}


def test_the_fnuz_float8_kinds_safetensors_writes_are_read(tmp_path: Path) -> None:
    # The installed safetensors writes F8_E4M3FNUZ / F8_E5M2FNUZ and reads them back; every command refused the
    # file: "tensor 'e4' has unknown dtype 'F8_E4M3FNUZ'".
    path = tmp_path / "fnuz.safetensors"
    save_file(_fnuz_tensors(), str(path))
    code, report = _stats_of(path)
    assert code == 0
    by_name = {t["name"]: t for t in report["tensors"]}
    assert (by_name["e4"]["dtype"], by_name["e5"]["dtype"]) == ("float8_e4m3fnuz", "float8_e5m2fnuz")
    for name in ("e4", "e5"):
        reference = _fnuz_tensors()[name].double()
        stats = by_name[name]["stats"]
        assert (stats["min"], stats["max"]) == (float(reference.min()), float(reference.max()))
        assert stats["mean"] == pytest.approx(float(reference.mean()), rel=1e-12)
    result = run_cli("check-dtype", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    checked = {t["name"] for t in _strict_json(result.stdout)["targets"]["fp16"]["tensors"]}
    assert {"e4", "e5"} <= checked


def test_fnuz_tensors_convert_to_the_bytes_safetensors_writes(tmp_path: Path) -> None:
    source, out, reference = tmp_path / "src.bin", tmp_path / "out.safetensors", tmp_path / "ref.safetensors"
    torch.save(_fnuz_tensors(), source)
    save_file(_fnuz_tensors(), str(reference))
    result = run_cli("convert", str(source), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    # The layout safetensors itself gives them (its dtype order), metadata aside.
    assert _layout(out) == _layout(reference)


def _layout(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    header.pop("__metadata__", None)
    return header, data[8 + size:]


@pytest.mark.parametrize("shape", [(1, 1), (1, 1, 1)])
def test_a_single_value_is_not_a_constant_where_variation_is_expected(tmp_path: Path, shape: tuple[int, ...]) -> None:
    # An FP8 layer's per-tensor `weight_scale_inv` stored as (1, 1): one number cannot vary, and was warned
    # about as "every value is 0.000204 where variation is expected".
    path = tmp_path / "scale.safetensors"
    save_file({"model.layers.0.mlp.up_proj.weight_scale_inv": torch.full(shape, 0.000204)}, str(path))
    code, report = _stats_of(path, "--fail-on", "warn")
    assert report["findings"] == [] and code == 0


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("transpose", [False, True])
def test_short_float8_lines_that_repeat_by_chance_are_not_duplicates(tmp_path: Path, dtype: torch.dtype,
                                                                     transpose: bool) -> None:
    # Four float8 values of a normal weight take ~2**22 (e4m3) or ~2**18 (e5m2) likely forms: among 4,096 random
    # rows, a few repeat by chance alone, and were reported as rows that never broke symmetry.
    weight = torch.randn(4096, 4, generator=torch.Generator().manual_seed(0)) * 0.02
    weight = (weight.T.contiguous() if transpose else weight).to(dtype)
    path = tmp_path / "fp8.safetensors"
    save_file({"model.layers.0.mlp.down_proj.weight": weight}, str(path))
    code, report = _stats_of(path)
    stats = report["tensors"][0]["stats"]
    assert not {"duplicate-rows", "duplicate-columns"} & {f["code"] for f in report["findings"]}
    assert not stats["duplicate_rows"] and not stats["duplicate_cols"]


def test_repeated_float8_rows_long_enough_to_tell_are_still_found(tmp_path: Path) -> None:
    weight = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    weight[10] = weight[3]
    path = tmp_path / "fp8.safetensors"
    save_file({"model.layers.0.mlp.down_proj.weight": weight.to(torch.float8_e4m3fn)}, str(path))
    code, report = _stats_of(path)
    assert report["tensors"][0]["stats"]["duplicate_rows"] == 1
    assert "duplicate-rows" in {f["code"] for f in report["findings"]}


@pytest.mark.parametrize("scale", [1e300, 1e-200])
def test_float64_weights_outside_float32_range_are_classified_without_overflow(tmp_path: Path, scale: float) -> None:
    # Read in float64 (not narrowed to inf or 0), the init classifier's moments overflowed (std² of 1e300) or
    # took the log of an underflowed variance (1e-200): "unexpected OverflowError" / "math domain error".
    weight = torch.randn(128, 128, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * scale
    path = tmp_path / "wide.safetensors"
    save_file({"layer.weight": weight}, str(path))
    code, report = _stats_of(path, "--hist", "layer")
    assert code == 0
    (tensor,) = report["tensors"]
    assert tensor["init"]["label"] == "undetermined" and "float32 range" in tensor["init"]["reason"]
    assert tensor["stats"]["std"] == pytest.approx(float((weight / scale).std(unbiased=False)) * scale, rel=1e-9)
    assert sum(tensor["histogram"]["counts"]) == tensor["histogram"]["n"] > 0


@pytest.mark.parametrize("layout", ["sparse_csr", "sparse_csc", "sparse_bsr"])
def test_a_compressed_sparse_tensor_is_refused_in_one_line(tmp_path: Path, layout: str) -> None:
    # torch's "Sparse CSR tensor support is in beta state" UserWarning, raised as the file is read, came first:
    # three lines on stderr where the contract is one.
    dense = torch.eye(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sparse = {"sparse_csr": dense.to_sparse_csr, "sparse_csc": dense.to_sparse_csc,
                  "sparse_bsr": lambda: dense.to_sparse_bsr((2, 2))}[layout]()
    path = tmp_path / "sparse.bin"
    torch.save({"w": dense, "s": sparse}, path)
    result = run_subprocess("inspect", str(path), "--json")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: tensor 's' is a sparse ({layout}) tensor; weightdoctor reads dense tensors only "
        "(save it with .to_dense())"]


def test_a_refused_cast_names_each_tensors_own_target(tmp_path: Path) -> None:
    # With --keep-fp32, kept tensors are cast to float32 and the others to --dtype: the refusal said "casting to
    # float32 would lose values in 2 tensor(s)" of a float16 overflow, and offered --keep-fp32 for a float64
    # tensor that float32 cannot hold either.
    path, out = tmp_path / "src.safetensors", tmp_path / "out.safetensors"
    save_file({"huge": torch.full((4,), 1e300, dtype=torch.float64), "big": torch.full((4,), 1e5)}, str(path))
    result = run_cli("convert", str(path), "-o", str(out), "--dtype", "fp16", "--keep-fp32", "huge")
    assert result.exit_code == 2 and not out.exists()
    (line,) = result.stderr.strip().splitlines()
    assert "casting to float16 would lose values in 2 tensors" in line
    assert "huge (4 values become inf) in float32" in line and "big (4 values become inf)" in line
    assert "--target fp16" in line

    result = run_cli("convert", str(path), "-o", str(out), "--dtype", "bf16", "--keep-fp32", "huge")
    assert result.exit_code == 2 and not out.exists()
    (line,) = result.stderr.strip().splitlines()
    assert "casting to float32 would lose values in 1 tensor: huge (4 values become inf)." in line
    assert "--keep-fp32" not in line.split("Nothing was written.")[1]  # keeping it in float32 is what failed


@pytest.mark.parametrize(("command", "option"), [
    (["inspect", "--filter"], "--filter"), (["inspect", "--stats", "--filter"], "--filter"),
    (["check-dtype", "--filter"], "--filter"), (["inspect", "--hist"], "--hist"),
])
def test_a_bad_regular_expression_names_its_option(tmp_path: Path, command: list[str], option: str) -> None:
    # "error: bad regular expression: unterminated character set at position 0" said neither which option
    # nor which text (--keep-fp32 and --rename say both).
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(2, 2)}, str(path))
    result = run_cli(*command[:1], str(path), *command[1:], "w[")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {option} 'w[': bad regular expression (unterminated character set at position 1)"]


def test_a_histogram_of_float64_subnormals(tmp_path: Path) -> None:
    # Scaling the range up to 1 asked for 2**1073: "unexpected OverflowError: math range error".
    path = tmp_path / "sub.safetensors"
    values = torch.tensor([5e-324, 1e-323, 1.5e-323, 1e-323] * 4, dtype=torch.float64)
    save_file({"layer.weight": values}, str(path))
    code, report = _stats_of(path, "--hist", "layer.weight")
    assert code == 0
    (tensor,) = report["tensors"]
    assert (tensor["stats"]["min"], tensor["stats"]["max"], tensor["stats"]["zero_fraction"]) == (5e-324, 1.5e-323, 0.0)
    assert tensor["histogram"]["low"] == 5e-324 and sum(tensor["histogram"]["counts"]) == 16


def test_a_plot_of_a_float64_range_wider_than_float64(tmp_path: Path) -> None:
    # From -1e308 to 1e308 the bars were inf wide: matplotlib's "invalid value encountered" warnings on stderr
    # and a plot of nothing.
    pytest.importorskip("matplotlib")
    path, image = tmp_path / "wide.safetensors", tmp_path / "plot.png"
    weight = torch.randn(16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4e307
    save_file({"layer.weight": weight}, str(path))
    result = run_subprocess("inspect", str(path), "--plot", str(image))
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and image.stat().st_size > 0


def test_a_depth_profile_with_a_float64_layer_beyond_float32(tmp_path: Path) -> None:
    # A layer's std of 1e298 beside 0.02 ones: matplotlib's log axis overflowed ("overflow encountered in exp"
    # on stderr) and the profile was drawn empty. Such a layer is left out, as the classifier leaves it out.
    pytest.importorskip("matplotlib")
    generator = torch.Generator().manual_seed(0)
    tensors = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(64, 32, generator=generator) * 0.02
               for i in range(3)}
    tensors["model.layers.3.mlp.up_proj.weight"] = torch.randn(64, 32, generator=generator,
                                                               dtype=torch.float64) * 1e298
    path, image = tmp_path / "layers.safetensors", tmp_path / "plot.png"
    save_file(tensors, str(path))
    result = run_subprocess("inspect", str(path), "--plot", str(image))
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and image.stat().st_size > 0


@pytest.mark.parametrize(("a", "b"), [
    ([1e308, -1e308, 3.0], [-1e308, 1e308, 3.0]),  # ‖A−B‖ itself is beyond float64: the ratio is not
    ([1e200 * 1.0001, 5e199, 1.0], [1e200, 5e199, 1.0]),  # squares of 1e200 overflow; the change is 1e-4
])
def test_rel_change_of_float64_values_whose_squares_overflow(tmp_path: Path, a: list[float], b: list[float]) -> None:
    # Σ(A−B)² and ΣB² were summed as they come: inf / inf gave "rel_change": "nan" for a change of 2 or 1e-4.
    save_file({"w": torch.tensor(a, dtype=torch.float64)}, str(tmp_path / "a.safetensors"))
    save_file({"w": torch.tensor(b, dtype=torch.float64)}, str(tmp_path / "b.safetensors"))
    result = run_cli("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--values",
                     "--json")
    assert result.exit_code == 0, result.stderr
    (row,) = _strict_json(result.stdout)["values"]
    scale = 2.0 ** -1000  # the float64 reference, computed where nothing overflows
    ta, tb = torch.tensor(a, dtype=torch.float64) * scale, torch.tensor(b, dtype=torch.float64) * scale
    assert row["identical"] is False
    assert row["rel_change"] == pytest.approx(float((ta - tb).norm() / tb.norm()), rel=1e-12)
