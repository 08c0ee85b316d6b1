"""Review 41 of the redteam25 and thirdparty20 merges: the memory guard where /proc/meminfo says nothing about
MemAvailable, and diff-keys' top-level `fc` classifier rule on a model whose `fc` is a layer, not a head."""

from __future__ import annotations

import builtins
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli, run_json
from weightdoctor.checkpoint import safetensors_format


def _meminfo_reads(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """/proc/meminfo, as the memory guard opens it, reads `path` (absent: no /proc mounted)."""
    def redirected(file: object, *args: object, **kwargs: object) -> object:
        return builtins.open(path if file == "/proc/meminfo" else file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(safetensors_format, "open", redirected, raising=False)


@pytest.mark.parametrize("meminfo", [None, "MemTotal:       65536000 kB\nMemFree:             4 kB\n"],
                         ids=["no-proc-meminfo", "no-MemAvailable-line"])
def test_stats_read_a_tensor_that_fits_where_meminfo_lacks_memavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, meminfo: str | None
) -> None:
    """Without MemAvailable (no /proc mounted, a kernel before 3.14) the guard took the free pages (MemFree) for the
    memory available: they leave out the page cache, often most of a machine's memory, so a 16 KB tensor on a machine
    with 4 KB free and 64 GB of cache was refused ("more than the 4.10 KB this machine has available"). Unknown is
    unknown: the tensor is read."""
    path = tmp_path / "meminfo"
    if meminfo is not None:
        path.write_text(meminfo, encoding="ascii")
    _meminfo_reads(monkeypatch, path)
    real_sysconf = os.sysconf

    def one_free_page(name: str | int) -> int:
        return 1 if name == "SC_AVPHYS_PAGES" else real_sysconf(name)

    monkeypatch.setattr(os, "sysconf", one_free_page)
    model = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(64, 64, generator=torch.Generator().manual_seed(41))}, str(model))
    result = run_cli("inspect", model, "--stats", "--json")
    assert "this machine has available" not in result.stdout + result.stderr
    assert result.exit_code == 0, result.stdout + result.stderr
    assert safetensors_format.available_memory() is None
    stats = {t["name"]: t["stats"] for t in json.loads(result.stdout)["tensors"]}
    assert stats["w"]["count"] == 64 * 64 and stats["w"]["sampled"] is False


def test_memavailable_is_still_read_from_meminfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "meminfo"
    path.write_text("MemTotal:  64 kB\nMemFree:  4 kB\nMemAvailable:   2048 kB\n", encoding="ascii")
    _meminfo_reads(monkeypatch, path)
    assert safetensors_format.available_memory() == 2048 * 1024


def _mlp(path: Path, hidden: int, keys: tuple[str, ...] = ("fc.weight", "fc.bias", "fc2.weight", "fc2.bias")) -> None:
    """A two-layer MLP whose first layer is named `fc` (16 → hidden → 4), seeded."""
    generator = torch.Generator().manual_seed(hidden)
    state = {"fc.weight": torch.randn(hidden, 16, generator=generator), "fc.bias": torch.zeros(hidden),
             "fc2.weight": torch.randn(4, hidden, generator=generator), "fc2.bias": torch.zeros(4)}
    save_file({key: state[key] for key in keys}, str(path))


def test_an_mlp_first_layer_named_fc_is_no_task_head(tmp_path: Path) -> None:
    """fc: 16→32 feeding fc2: 32→4 against fc: 16→64 feeding fc2: 64→4 is a hidden width change, not a changed label
    count: `fc` was called "head-size" (warn, "task head size changed (num_labels ...)") as torchvision's ResNet
    classifier is."""
    _mlp(tmp_path / "a.safetensors", 32)
    _mlp(tmp_path / "b.safetensors", 64)
    code, report = run_json("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"))
    assert code == 1
    reasons = {m["name"]: (m["reason"], m["severity"]) for m in report["mismatched"]}
    assert reasons == {"fc.weight": ("shape", "error"), "fc.bias": ("shape", "error"),
                       "fc2.weight": ("shape", "error")}


def test_a_missing_first_layer_named_fc_is_no_new_head(tmp_path: Path) -> None:
    """B's MLP has `fc` (16→32, feeding fc2) and A lacks it: it was "task-head, new, initialized at random" (info);
    it is a layer of the model that A does not supply."""
    _mlp(tmp_path / "a.safetensors", 32, ("fc2.weight", "fc2.bias"))
    _mlp(tmp_path / "b.safetensors", 32)
    code, report = run_json("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"))
    reasons = {m["name"]: (m["reason"], m["severity"]) for m in report["missing"]}
    assert reasons == {"fc.weight": ("unknown", "error"), "fc.bias": ("unknown", "error")}
    assert code == 1


def test_a_resnet_fc_classifier_is_still_a_head(tmp_path: Path) -> None:
    """Guard: torchvision's ResNet `fc` (the last layer, feeding nothing) with another class count stays head-size."""
    generator = torch.Generator().manual_seed(41)

    def resnet(classes: int) -> dict[str, torch.Tensor]:
        return {"conv1.weight": torch.randn(8, 3, 3, 3, generator=generator), "bn1.weight": torch.ones(8),
                "fc.weight": torch.randn(classes, 8, generator=generator), "fc.bias": torch.zeros(classes)}

    save_file(resnet(1000), str(tmp_path / "a.safetensors"))
    save_file(resnet(10), str(tmp_path / "b.safetensors"))
    code, report = run_json("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"))
    reasons = {m["name"]: m["reason"] for m in report["mismatched"]}
    assert reasons == {"fc.weight": "head-size", "fc.bias": "head-size"}
    assert code == 0
