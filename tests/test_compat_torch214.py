"""compat214: what the whole suite under torch 2.14.1 (CPU, Python 3.11) found in the product, each reproduced
here under the torch CI runs (2.13), where 2.14's behaviour is emulated:

* torch 2.14 added a dtype, `torch.bcomplex32` (a pair of bfloat16s), and allows it in its weights_only loader:
  a file torch 2.14 saves with one such tensor was called "suspicious: torch.bcomplex32 (unknown ...)" and
  refused (exit 2), and its elements had no size (counted as one byte each);
* under an older torch the same file's values cannot become tensors: `convert --to bin` and `diff-keys --values`
  ended "unexpected AttributeError: module 'torch' has no attribute 'bcomplex32'", and a file read by torch.load
  was said to "hold more than weights";
* torch 2.14's torch.load warns as it reads a sparse tensor ("Validating sparse tensor invariants because
  weights_only=True ...") and as it makes a bcomplex32 tensor ("BComplex32 support is experimental ..."):
  lines on stderr before the one-line refusal, or on a file read without fault.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import REPO_ROOT, one_error_line, run_cli, run_json
from weightdoctor.dtypes import BITS_PER_ELEMENT
from weightdoctor.security.policy import classify

VALUES = [[1.5, -2.25], [0.5, 3.0], [-1.0, 0.125]]  # three (real, imaginary) pairs, exact in bfloat16
HAS_BCOMPLEX32 = isinstance(getattr(torch, "bcomplex32", None), torch.dtype)


def _release(version: str) -> tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def write_bcomplex32(path: Path, extra: dict[str, Any] | None = None, raw: bytes | None = None,
                     name: str = "w") -> Path:
    """A torch.save file holding `name`, a bcomplex32 tensor (VALUES, shape (3, 1); or the bytes `raw`, 1-D), and
    `extra`, as torch 2.14 writes it: under a torch that has the dtype, torch.save's own; under an older one,
    complex32's file (the same 4-byte elements, `_rebuild_tensor_v3` naming its dtype) with the dtype's name changed
    in data.pkl."""
    pairs = (torch.tensor(VALUES, dtype=torch.bfloat16) if raw is None
             else torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    if HAS_BCOMPLEX32:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "BComplex32 support is experimental"
            torch.save({name: pairs.view(torch.bcomplex32), **(extra or {})}, path)
        return path
    source = path.with_name(f"{path.stem}_source.pt")
    torch.save({name: pairs.view(torch.float16).view(torch.complex32), **(extra or {})}, source)
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in archive.infolist():
            data = archive.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert data.count(b"ctorch\ncomplex32\n") == 1
                data = data.replace(b"ctorch\ncomplex32\n", b"ctorch\nbcomplex32\n")
            out.writestr(info.filename.replace(f"{source.stem}/", f"{path.stem}/"), data)
    return path


def test_a_bcomplex32_tensor_of_torch_214_is_read_as_safe_weights_of_four_bytes_each(tmp_path: Path) -> None:
    path = write_bcomplex32(tmp_path / "bc.pt")
    code, data = run_json("inspect", path)
    assert code == 0, data
    assert data["security"]["verdict"] == "safe"
    assert {"module": "torch", "name": "bcomplex32"} in [{k: g[k] for k in ("module", "name")}
                                                         for g in data["security"]["globals"]]
    [tensor] = data["tensors"]
    assert (tensor["name"], tensor["dtype"], tensor["shape"], tensor["num_params"], tensor["nbytes"]) == \
        ("w", "bcomplex32", [3, 1], 3, 12)
    if HAS_BCOMPLEX32:
        assert data["security"]["notes"] == []
    else:  # "safe" without this would read as "torch.load takes it": the installed torch does not
        assert data["security"]["notes"] == [
            f"torch's weights_only loader allows torch.bcomplex32 (torch 2.14 on), but the installed torch "
            f"{torch.__version__} does not have it: its torch.load fails on the file"]
    text = run_cli("inspect", path)
    assert text.exit_code == 0 and "bcomplex32" in text.stdout and text.stderr == ""
    # safetensors has no name for it (its table: C64 is its only complex dtype): refused before anything is written.
    assert one_error_line(run_cli("convert", path, "-o", tmp_path / "out.safetensors")) == (
        f"error: {path}: safetensors has no dtype for 1 tensor: w (bcomplex32); nothing was written (a .bin output, "
        "-o NAME.bin or --to bin, keeps them as torch.save does)")
    assert not (tmp_path / "out.safetensors").exists()


def test_the_policy_and_the_dtype_table_know_what_the_installed_torch_allows() -> None:
    """Asked of the installed torch: every later torch's global the policy calls safe is one this torch allows,
    or one it does not have at all (so loading it fails there whatever the policy says); every floating or complex
    dtype its loader allows has its own bit width (bcomplex32 was missing under 2.14: 8 bits by default)."""
    from torch._weights_only_unpickler import _get_allowed_globals

    from weightdoctor.dtypes import LATER_TORCH_DTYPES
    from weightdoctor.security.policy import LATER_TORCH_WEIGHTS_ONLY_GLOBALS

    allowed = dict(_get_allowed_globals())
    installed = _release(torch.__version__)
    for qualified, since in LATER_TORCH_WEIGHTS_ONLY_GLOBALS.items():
        assert classify(*qualified.rsplit(".", 1)) == "safe"
        if hasattr(torch, qualified.removeprefix("torch.")):
            assert qualified in allowed and installed >= _release(since), (qualified, torch.__version__)
        else:
            assert installed < _release(since), (qualified, torch.__version__)
    assert {f"torch.{name}" for name in LATER_TORCH_DTYPES} <= set(LATER_TORCH_WEIGHTS_ONLY_GLOBALS)
    dtypes = {name: value for name, value in allowed.items() if isinstance(value, torch.dtype)
              and (value.is_floating_point or value.is_complex)}
    assert dtypes, "no dtype in torch's allowlist"
    wrong = {name: (BITS_PER_ELEMENT.get(name.removeprefix("torch.")), value.itemsize * 8)
             for name, value in dtypes.items()
             if name != "torch.float4_e2m1fn_x2"  # two values a byte: counted per value, as safetensors does
             and BITS_PER_ELEMENT.get(name.removeprefix("torch.")) != value.itemsize * 8}
    assert not wrong, wrong


def test_values_of_a_dtype_the_installed_torch_lacks_are_refused_in_one_line_naming_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torch 2.13 (emulated under 2.14 by taking the dtype away): the structure is read, the values cannot
    be, and each command that needs them says so in one line naming the file (no unexpected AttributeError)."""
    path = write_bcomplex32(tmp_path / "bc.pt")
    loaded = write_bcomplex32(tmp_path / "sized.pt", {"size": torch.Size([2, 3])})  # read by torch.load
    monkeypatch.delattr(torch, "bcomplex32", raising=False)
    lacks = (f"bcomplex32 is a dtype the installed torch {torch.__version__} does not have: reading its values "
             "needs torch 2.14 or later")
    code, data = run_json("inspect", path)
    assert code == 0 and data["tensors"][0]["dtype"] == "bcomplex32"
    output = tmp_path / "out.bin"
    assert one_error_line(run_cli("convert", path, "--to", "bin", "-o", output)) == \
        f"error: {path}: tensor 'w': {lacks}"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("out")]  # nothing half-written
    assert one_error_line(run_cli("diff-keys", path, path, "--values")) == f"error: {path}: {lacks}"
    assert one_error_line(run_cli("inspect", loaded)) == \
        f"error: {loaded}: its pickle names torch.bcomplex32, a tensor dtype: {lacks}"


@pytest.mark.skipif(not HAS_BCOMPLEX32, reason="torch.bcomplex32 is torch 2.14's (run under a torch 2.14 too)")
def test_bcomplex32_values_are_read_and_written_as_torch_reads_them(tmp_path: Path) -> None:
    """Where torch has the dtype: a file torch.load reads (a torch.Size beside the weights) is read without
    torch's "BComplex32 support is experimental" warning, and `convert --to bin` writes what torch.load reads back."""
    path = write_bcomplex32(tmp_path / "sized.pt", {"size": torch.Size([2, 3])})
    output = tmp_path / "out.bin"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = {}
    for args in (("inspect", str(path), "--json"), ("convert", str(path), "--to", "bin", "-o", str(output))):
        done[args[0]] = subprocess.run([sys.executable, "-m", "weightdoctor", *args], capture_output=True, text=True,
                                       cwd=REPO_ROOT, env=env, timeout=300)
        assert done[args[0]].returncode == 0, (args, done[args[0]].stderr)
    assert done["inspect"].stderr == ""
    assert done["convert"].stderr.splitlines() == [
        "warning: 1 non-tensor entry of the state dict is not written: size (Size, 2 items)"]
    data = json.loads(done["inspect"].stdout)
    assert data["skipped_entries"] == ["size (Size, 2 items)"] and data["tensors"][0]["nbytes"] == 12
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        written = torch.load(output, weights_only=True)["w"]
    assert written.dtype == torch.bcomplex32 and written.view(torch.bfloat16).tolist() == VALUES


# A child in which torch.load warns first as torch 2.14's does (reading a sparse tensor, making a bcomplex32
# tensor), then runs `weightdoctor`.
_WARNING_LOAD = """
import sys, warnings, torch
real = torch.load
def load(*args, **kwargs):
    warnings.warn("Validating sparse tensor invariants because weights_only=True; this is an O(nnz) scan per sparse "
                  "tensor and may be slow for large checkpoints.", UserWarning)
    warnings.warn("BComplex32 support is experimental and many operators don't support it yet. (Triggered "
                  "internally at /__w/pytorch/pytorch/aten/src/ATen/EmptyTensor.cpp:57.)", UserWarning)
    return real(*args, **kwargs)
torch.load = load
from weightdoctor.entry import main
sys.argv = ["weightdoctor"] + sys.argv[1:]
main()
"""


def test_torch_214s_load_warnings_are_not_shown_beside_what_the_command_says(tmp_path: Path) -> None:
    dense = torch.eye(4)
    sparse_path, sized_path = tmp_path / "sparse.bin", tmp_path / "sized.bin"
    torch.save({"w": dense, "s": dense.to_sparse()}, sparse_path)
    torch.save({"w": dense, "size": torch.Size([2, 3])}, sized_path)  # read by torch.load, without fault
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", _WARNING_LOAD, *args], capture_output=True, text=True,
                              cwd=REPO_ROOT, env=env, timeout=300)

    done = run("inspect", str(sparse_path), "--json")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: {sparse_path}: tensor 's' is a sparse (sparse_coo) tensor; weightdoctor reads dense tensors only "
        "(save it with .to_dense())"]
    done = run("inspect", str(sized_path), "--json")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert [t["name"] for t in json.loads(done.stdout)["tensors"]] == ["w"]


class _System:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, ("echo the payload ran",)


@pytest.mark.parametrize("dtype", ["bcomplex32", "bits16", "uint8"])
def test_an_extra_state_numpy_cannot_hold_is_no_pickle_transformer_engine_loads(tmp_path: Path, dtype: str) -> None:
    """TransformerEngine unpickles `_extra_state.numpy().tobytes()`; `.numpy()` raises on bcomplex32 and torch's
    bits types ("Got unsupported ScalarType Bits16") before any pickle.loads, as on complex32: a file holding a
    pickle of os.system in such a tensor is no TE state (it was called dangerous); in uint8 it is."""
    import pickle

    payload = pickle.dumps(_System(), protocol=2)
    payload += b"." * (-len(payload) % 4)  # whole 4-byte elements
    path = tmp_path / f"{dtype}.pt"
    extra = {"layer.weight": torch.ones(2)}
    if dtype == "bcomplex32":
        write_bcomplex32(path, extra, raw=payload, name="layer._extra_state")
    else:
        torch.save({"layer._extra_state": torch.frombuffer(bytearray(payload), dtype=torch.uint8).view(
            getattr(torch, dtype)), **extra}, path)
    result = run_cli("inspect", path, "--json")
    if dtype == "uint8":
        assert "dangerous: the uint8 tensor layer._extra_state holds a pickle that names posix.system" in \
            one_error_line(result)
        return
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["security"]["verdict"] == "safe"
    assert {t["name"]: t["dtype"] for t in data["tensors"]}["layer._extra_state"] == dtype
