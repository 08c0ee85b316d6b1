"""device1: what a run of the whole suite on the lent GPU machine (an H100, 16 cores, Python 3.12, torch 2.11,
transformers 5.17) found in the product, each reproduced here without it:

* transformers before 5.2x returns one dict of cache-layer kwargs from `get_layer_types_and_kwargs`, not one per
  layer: `plan-devices --kv-cache` ended "unexpected ValueError: zip() argument 2 is shorter than argument 1" (or
  "'str' object has no attribute 'get'") for every config;
* torch 2.11 warns "Sparse invariant checks are implicitly disabled" as it reads a sparse tensor: a second line
  on stderr before the one-line refusal;
* on 16 cores with a 64 MiB stack limit, torch's 16 OpenMP worker stacks took more than an 80 MiB data room, and
  libgomp ended the process ("Thread creation failed", exit 1) where the tool refuses in one line, exit 2;
* Python 3.12 has no `re._compile_repl`: a `--rename` replacement naming an unknown group ended "unexpected
  IndexError" instead of a usage error.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import REPO_ROOT, hard_stack_limit_below, run_json, stack_limit_of

GEMMA2 = {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_size": 256,
          "intermediate_size": 688, "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 8,
          "head_dim": 64, "vocab_size": 1000, "torch_dtype": "float16", "max_position_embeddings": 2048,
          "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"] * 4}


def _older_layer_kwargs(real: Any) -> Any:
    """transformers 5.17's shape of `get_layer_types_and_kwargs`: the layer kinds, and one dict for all layers."""

    def older(config: Any) -> tuple[list[str], dict[str, Any]]:
        kinds, per_layer = real(config)
        if isinstance(per_layer, dict):  # the installed transformers is of 5.17's shape already
            return list(kinds), per_layer
        merged: dict[str, Any] = {}
        for kwargs in per_layer:
            merged.update(kwargs)
        return list(kinds), merged

    return older


@pytest.mark.parametrize("config", [GEMMA2, {**GEMMA2, "model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                             "layer_types": None, "sliding_window": None}], ids=["gemma2", "llama"])
def test_kv_cache_under_an_older_transformers_kwargs_dict_is_the_same_figure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any]) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    args = ("plan-devices", str(folder), "--gpu", "40MB", "--dtype", "fp16", "--kv-cache", "--seq-len", "2048")
    newer, older = kv_cache_as_installed_then_emulated(monkeypatch, args, _older_layer_kwargs)
    assert older == newer
    if config["model_type"] == "gemma2":  # every other layer slides: 4 full layers of 2.10 MB, 4 of 128 tokens
        assert older["total_bytes"] == 4 * 2097152 + 4 * 131072, older


def kv_cache_as_installed_then_emulated(monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...],
                                        emulated: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `kv_cache` object of `weightdoctor ARGS --json` with the installed transformers, then with its
    `get_layer_types_and_kwargs` replaced by `emulated(real)` (an older release's shape of it)."""
    import transformers.cache_utils as cache_utils

    code, newer = run_json(*args)
    assert code == 0, newer
    monkeypatch.setattr(cache_utils, "get_layer_types_and_kwargs", emulated(cache_utils.get_layer_types_and_kwargs))
    code, older = run_json(*args)
    assert code == 0, older
    return newer["kv_cache"], older["kv_cache"]


# A child in which torch.load warns first, as torch 2.11's does reading a sparse tensor, then runs `weightdoctor`.
_WARNING_LOAD = """
import sys, warnings, torch
real = torch.load
def load(*args, **kwargs):
    warnings.warn("Sparse invariant checks are implicitly disabled. Memory errors (e.g. SEGFAULT) will occur when "
                  "operating on a sparse tensor which violates the invariants, but checks incur performance "
                  "overhead.", UserWarning)
    return real(*args, **kwargs)
torch.load = load
from weightdoctor.entry import main
sys.argv = ["weightdoctor"] + sys.argv[1:]
main()
"""


def test_a_sparse_tensor_is_refused_in_one_line_whatever_torch_warns_as_it_reads_it(tmp_path: Path) -> None:
    dense = torch.eye(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sparse = dense.to_sparse_csr()
    path = tmp_path / "sparse.bin"
    torch.save({"w": dense, "s": sparse}, path)
    done = subprocess.run([sys.executable, "-c", _WARNING_LOAD, "inspect", str(path), "--json"], capture_output=True,
                          text=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: {path}: tensor 's' is a sparse (sparse_csr) tensor; weightdoctor reads dense tensors only "
        "(save it with .to_dense())"]


_DATA_LIMITED = """
import resource, sys
import torch, weightdoctor.cli
from weightdoctor.entry import main
held = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmData:"))
resource.setrlimit(resource.RLIMIT_DATA, (held + int(sys.argv[1]), resource.RLIM_INFINITY))
sys.argv = ["weightdoctor"] + sys.argv[2:]
main()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's data limit")
@pytest.mark.skipif(hard_stack_limit_below(64),
                    reason="the hard stack limit is below 64 MiB")
def test_many_torch_threads_with_large_stacks_under_a_data_limit_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    torch.save({"w": torch.randn(4096, 4096, generator=torch.Generator().manual_seed(4)).t()}, path)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "16"}
    env.pop("GOMP_STACKSIZE", None)
    env.pop("OMP_STACKSIZE", None)
    done = subprocess.run([sys.executable, "-c", _DATA_LIMITED, str(72 << 20), "check-dtype", str(path)],
                          capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=300,
                          preexec_fn=stack_limit_of(64))
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stderr)
    assert lines[0].startswith(f"error: {path}: ") and "memory" in lines[0] and "libgomp" not in lines[0], lines


def test_the_thread_stack_is_read_from_the_openmp_variables_then_the_stack_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from weightdoctor.checkpoint import safetensors_format as sf

    monkeypatch.delenv("GOMP_STACKSIZE", raising=False)
    for value, expected in (("512", 512 << 10), ("4M", 4 << 20), ("1g", 1 << 30), ("65536 B", 65536)):
        monkeypatch.setenv("OMP_STACKSIZE", value)
        assert sf._thread_stack_bytes() == expected, value
    monkeypatch.setenv("GOMP_STACKSIZE", "2M")  # read where OMP_STACKSIZE is not (libgomp reads it first: review73)
    monkeypatch.delenv("OMP_STACKSIZE")
    assert sf._thread_stack_bytes() == 2 << 20
    monkeypatch.delenv("GOMP_STACKSIZE")
    monkeypatch.setenv("OMP_STACKSIZE", "lots")  # not a size: the stack limit, as glibc reads it
    soft = resource.getrlimit(resource.RLIMIT_STACK)[0]
    assert sf._thread_stack_bytes() == (soft if soft not in (resource.RLIM_INFINITY,) and soft > 0 else 8 << 20)
    monkeypatch.setenv("OMP_STACKSIZE", "8M")
    status = sf._fields("/proc/self/status")
    room = 100 << 20
    limits = [(status["VmData"] + room, "VmData", "data limit (ulimit -d", "")]
    # each thread past the first: an OpenMP stack of 8 MiB and a pthreadpool thread's of the stack limit (review73)
    assert sf._threads_the_room_holds(limits) == 1 + room // 2 // ((8 << 20) + sf._default_stack_bytes())
    assert sf._threads_the_room_holds([(status["VmData"], "VmData", "", "")]) == 1  # no room: one thread


def test_a_replacement_naming_an_unknown_group_is_a_usage_error() -> None:
    """The check is `Pattern.sub` on an empty string, which parses the template on every Python (checked by hand
    with this machine's Python 3.12.1 too, where the private parser called before is gone)."""
    from weightdoctor.errors import UsageError
    from weightdoctor.renames import parse_rename

    with pytest.raises(UsageError, match=r"unknown group name 'nope'"):
        parse_rename(r"w=\g<nope>")
    with pytest.raises(UsageError, match=r"invalid group reference 2"):
        parse_rename(r"(w)=\2")
    with pytest.raises(UsageError, match=r"bad escape"):
        parse_rename(r"w=\q")
    assert parse_rename(r"(w)=x\1").replacement == r"x\1"


def test_a_pattern_re_warns_of_a_future_reading_is_used_without_its_warning(tmp_path: Path) -> None:
    """`[[]` (a `[` in a class) draws re's "FutureWarning: Possible nested set" as it is parsed: two more lines on
    stderr beside diff-keys' report and inspect's one-line refusal (seen while checking the Python 3.12 changes)."""
    from safetensors.torch import save_file

    save_file({"a.weight": torch.ones(2)}, str(tmp_path / "a.safetensors"))
    save_file({"b.weight": torch.ones(2)}, str(tmp_path / "b.safetensors"))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONWARNINGS": "default"}
    diffed = subprocess.run([sys.executable, "-m", "weightdoctor", "diff-keys", str(tmp_path / "a.safetensors"),
                             str(tmp_path / "b.safetensors"), "--rename", "[[]=x", "--json"],
                            capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=300)
    assert diffed.returncode == 1 and diffed.stderr == "", diffed.stderr
    assert [entry["name"] for entry in json.loads(diffed.stdout)["missing"]] == ["b.weight"]
    filtered = subprocess.run([sys.executable, "-m", "weightdoctor", "inspect", str(tmp_path / "a.safetensors"),
                               "--filter", "[[]"], capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                              timeout=300)
    assert filtered.returncode == 2 and filtered.stderr.splitlines() == [
        "error: --filter '[[]' matches no tensor name (the checkpoint's 1 tensor is a.weight)"], filtered.stderr
