"""review73: the device-run fixes of 5b1e263 (the thread cap under a process limit, the older transformers' kwargs
dict of cache layers), each problem reproduced without a GPU:

* `torch.set_num_threads(n)` makes torch's pthreadpool at once, n - 1 threads of glibc's default stack, beside the
  n - 1 OpenMP workers the warm-up op starts: the cap counted one stack a thread, and its threads took nearly all of
  the room it meant to halve (8 stacks of 32 MiB, 256 MiB of a 320 MiB data room);
* where the room cannot be measured (/proc/self/status unreadable, or without VmData / VmSize) the cap ran torch on
  one thread for the whole command, where it had run on all;
* OMP_STACKSIZE below PTHREAD_STACK_MIN ("0", "1": libgomp says "Stack size less than minimum" and keeps the
  default) was read as a 1-byte or 1 KiB stack, so no cap; OMP_STACKSIZE outranks GOMP_STACKSIZE in libgomp;
* transformers 5.17 names DeepSeek-V3.2's layers "deepseek_sparse_attention" (5.25: "indexed_attention"):
  `plan-devices --kv-cache` said "no KV cache: no layer attends", 0 bytes (5.17 caches their keys and values
  expanded per head: sized and tested in tests/test_compat_kv.py); its "moe" / "mlp" (5.25: "dummy") were
  left out of the note; and 5.17 leaves Gemma3n's `num_kv_shared_layers` out of its list, so every layer was
  counted (390,144 bytes where the cache holds 260,096).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO_ROOT, hard_stack_limit_below, stack_limit_of
from weightdoctor.checkpoint import safetensors_format as sf


def _default_stack() -> int:
    soft = resource.getrlimit(resource.RLIMIT_STACK)[0]
    return soft if soft != resource.RLIM_INFINITY and soft > 0 else 8 << 20


@pytest.mark.parametrize(("omp", "gomp", "expected"), [
    ("0", None, None),  # below PTHREAD_STACK_MIN: libgomp keeps the default
    ("1", None, None),
    ("1", "4M", None),  # OMP_STACKSIZE parsed, then refused: GOMP_STACKSIZE is not read
    ("  ", None, None),
    ("10T", None, None),
    ("-5", None, None),
    ("4M", "32M", 4 << 20),  # libgomp reads OMP_STACKSIZE first
    ("junk", "4M", 4 << 20),  # an invalid OMP_STACKSIZE: GOMP_STACKSIZE
    ("+2M", None, 2 << 20),  # strtoul takes a sign
    ("64", None, 64 << 10),
])
def test_the_thread_stack_is_the_one_libgomp_gives(monkeypatch: pytest.MonkeyPatch, omp: str, gomp: str | None,
                                                   expected: int | None) -> None:
    """Each case measured with torch 2.13's libgomp under `ulimit -s 65536`: the VmData one worker took."""
    monkeypatch.setenv("OMP_STACKSIZE", omp)
    if gomp is None:
        monkeypatch.delenv("GOMP_STACKSIZE", raising=False)
    else:
        monkeypatch.setenv("GOMP_STACKSIZE", gomp)
    assert sf._thread_stack_bytes() == (expected if expected is not None else _default_stack())


class _FakeTorch:
    """What `_start_torch_threads` asks of torch, on a machine of 8 cores."""

    uint8 = "uint8"

    def __init__(self) -> None:
        self.set_to: list[int] = []
        self.summed: list[int] = []

    def get_num_threads(self) -> int:
        return self.set_to[-1] if self.set_to else 8

    def set_num_threads(self, count: int) -> None:
        self.set_to.append(count)

    def ones(self, count: int, dtype: Any) -> Any:
        summed = self.summed

        class _Ones:
            def sum(self) -> None:
                summed.append(count)

        return _Ones()


@pytest.mark.parametrize("status", ["unreadable", "without VmData"])
def test_threads_are_left_as_torch_has_them_where_the_room_is_unknown(monkeypatch: pytest.MonkeyPatch,
                                                                     status: str) -> None:
    fake = _FakeTorch()
    monkeypatch.setitem(sys.modules, "torch", fake)
    monkeypatch.setattr(sf, "_TORCH_THREADS_STARTED", False)
    monkeypatch.setattr(sf, "_address_space_limited", lambda: False)

    def fields(path: str) -> dict[str, int]:
        if status == "unreadable":
            raise OSError(2, "No such file or directory", path)
        return {"VmSize": 1 << 30}

    monkeypatch.setattr(sf, "_fields", fields)
    sf._start_torch_threads([(1 << 30, "VmData", "data limit (ulimit -d", "in private writable memory already")])
    assert sf._threads_the_room_holds([(1 << 30, "VmData", "", "")]) is None
    assert fake.set_to == [] and fake.summed == [8 * 65536]  # all 8 threads started, none capped


def test_the_cap_counts_the_stacks_of_torchs_pthreadpool_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_STACKSIZE", raising=False)
    monkeypatch.delenv("GOMP_STACKSIZE", raising=False)
    status = sf._fields("/proc/self/status")
    room = 320 << 20
    limits = [(status["VmData"] + room, "VmData", "data limit (ulimit -d", "")]
    threads = sf._threads_the_room_holds(limits)
    assert threads is not None and threads >= 1
    # n threads: n - 1 OpenMP workers and n - 1 pthreadpool threads, in half the room
    assert 2 * (threads - 1) * _default_stack() <= room // 2 < 2 * threads * _default_stack()


_CAPPED = """
import json, resource, sys
import torch
real_threads = torch.get_num_threads
torch.get_num_threads = lambda: 8  # as on a machine of 8 cores (this one may have fewer)
from weightdoctor.checkpoint import safetensors_format as sf
def vmdata():
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmData:"))
room = int(sys.argv[1])
held = vmdata()
resource.setrlimit(resource.RLIMIT_DATA, (held + room, resource.getrlimit(resource.RLIMIT_DATA)[1]))
left = min(r for r, _ in sf._process_limit_rooms())
print(json.dumps({"taken": vmdata() - held, "left": left, "threads": real_threads()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's data limit and /proc/self/status")
@pytest.mark.skipif(hard_stack_limit_below(32),
                    reason="the hard stack limit is below 32 MiB")
def test_the_threads_the_cap_starts_take_at_most_half_the_room() -> None:
    """Before: 4 threads (a little under 320 MiB / 2 / 32 MiB), so 3 pthreadpool threads and 3 OpenMP workers of
    32 MiB: 192 MiB of the 320 MiB room taken (201,744,384 bytes measured), 128 MiB left."""
    if sf._rlimit_data_ignored():
        pytest.skip("the kernel ignores RLIMIT_DATA")
    room = 320 << 20
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("OMP_STACKSIZE", None)
    env.pop("GOMP_STACKSIZE", None)
    done = subprocess.run([sys.executable, "-c", _CAPPED, str(room)], capture_output=True, text=True, cwd=REPO_ROOT,
                          env=env, timeout=300, preexec_fn=stack_limit_of(32))
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    assert measured["threads"] >= 2, measured  # still parallel
    assert measured["taken"] <= room // 2 and measured["left"] >= room // 2 - (8 << 20), measured


def _as_transformers_517(real: Any) -> Any:
    """transformers 5.17's `get_layer_types_and_kwargs` (checked against it): one dict of kwargs for all layers,
    and its names of the kinds 5.25 renamed."""
    names = {"indexed_attention": "deepseek_sparse_attention", "dummy": "moe"}

    def older(config: Any) -> tuple[list[str], dict[str, Any]]:
        kinds, per_layer = real(config)
        if isinstance(per_layer, dict):  # the installed transformers is of 5.17's shape already: read as it is
            return kinds, per_layer
        shared = getattr(config, "num_kv_shared_layers", None)
        if shared:  # 5.17: `layer_types[: -config.num_kv_shared_layers]`, where 5.25 makes them "dummy"
            kinds, per_layer = kinds[:-shared], per_layer[:-shared]
        merged: dict[str, Any] = {}
        for kwargs in per_layer:
            merged.update(kwargs)
        return [names.get(kind, kind) for kind in kinds], merged

    return older


# Nemotron-H's "moe" and "mlp" layers attend to nothing: 5.25 lays them out as "dummy", 5.17 under their own names
NEMOTRON_H = {"model_type": "nemotron_h", "architectures": ["NemotronHForCausalLM"], "vocab_size": 100,
              "hidden_size": 64, "num_hidden_layers": 4, "layers_block_type": ["linear_attention", "moe",
                                                                               "full_attention", "mlp"],
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "mamba_num_heads": 4,
              "mamba_head_dim": 16, "ssm_state_size": 8, "n_groups": 1, "intermediate_size": 64}


def _gemma3n() -> dict[str, Any]:
    """A 6-layer Gemma3n whose last 2 layers reuse earlier layers' keys and values, every other layer sliding (16)."""
    import transformers

    config = transformers.Gemma3nTextConfig(
        vocab_size=100, hidden_size=64, intermediate_size=[128] * 6, num_hidden_layers=6, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, num_kv_shared_layers=2, sliding_window=16,
        layer_types=["sliding_attention", "full_attention"] * 3, hidden_size_per_layer_input=16,
        vocab_size_per_layer_input=100, laurel_rank=8, activation_sparsity_pattern=[0.0] * 6, altup_num_inputs=2)
    return {**config.to_dict(), "architectures": ["Gemma3nForCausalLM"], "num_hidden_layers": 6}


# (DeepSeek-V3.2 is not here: transformers 5.17 really caches its keys and values expanded per head, a figure of
# its own, measured and tested in tests/test_compat_kv.py)
@pytest.mark.parametrize(("config", "total"), [
    (NEMOTRON_H, 2 * 2 * 16 * 2 * 1000),  # its one attention layer: keys and values, 2 heads of 16, 2 bytes
    (None, 2 * 32 * 2 * (2 * 1000 + 2 * 16)),  # Gemma3n: 2 full layers, 2 sliding ones, 2 that cache nothing
], ids=["nemotron_h", "gemma3n"])
def test_kv_cache_under_transformers_517_names_of_layer_kinds_is_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any] | None, total: int) -> None:
    """Before: Nemotron-H's note left out "2 of 4 layers
    cache nothing"; Gemma3n counted its 2 shared layers too, 390,144 bytes (each seen with transformers 5.17)."""
    from tests.test_device1 import kv_cache_as_installed_then_emulated

    (tmp_path / "config.json").write_text(json.dumps(config if config is not None else _gemma3n()))
    args = ("plan-devices", str(tmp_path / "config.json"), "--gpu", "8GB", "--dtype", "bf16", "--kv-cache",
            "--seq-len", "1000")
    new, old = kv_cache_as_installed_then_emulated(monkeypatch, args, _as_transformers_517)
    # (the recurrent state is sized by 5.25's own cache classes, which the stand-in's dict does not fit: compared by
    # hand with transformers 5.17, 2,688 bytes both)
    assert old["total_bytes"] == new["total_bytes"] == total and old["num_layers"] == new["num_layers"], old
    assert (old["note"] or "").split(";")[0] == (new["note"] or "").split(";")[0], (old["note"], new["note"])
    assert "no layer attends" not in (old["note"] or "")
