"""plan90: plan-devices on one part of a model-parallel set reads each sibling part once; oracle sweep additions.

1. plan-devices on `model_part-0.pt` compared the sibling parts' tensors twice: once for the reader's warning
   (model_parts.part_warning), then again for the plan's `model_part` (model_parts.part_of_model): every sibling was
   opened by open_checkpoint twice (16 file opens each, where one read is 8). A folder of parts read its first part
   twice for its refusal (its kind, then its shapes). Each is read once now, with the same report.
2. 55 families no test built before (scripts/plan_sweep.py's `_archs_plan90`: seq2seq, vision, MoE, multimodal,
   state-space hybrids) against from_pretrained's own map at fp32 / fp16 / bf16 over 2 GPUs + CPU + disk: every map
   agreed (docs/plan-sweep.md); one of each kind is kept here so that none drifts.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import run_cli, run_json
from tests.test_thirdparty37 import _save_parts


def _counting_reads(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """How many times open_checkpoint reads each file (by name) from now on: model_parts reads the sibling parts
    with it."""
    import weightdoctor.checkpoint.reader as reader

    reads: collections.Counter[str] = collections.Counter()
    real = reader.open_checkpoint

    def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
        reads[Path(str(path)).name] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(reader, "open_checkpoint", counting)
    return reads


@pytest.mark.parametrize("parts", [2, 4])
def test_plan_devices_on_one_part_reads_each_sibling_once_and_plans_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parts: int
) -> None:
    folder = tmp_path / "megatron"
    whole = _save_parts(folder, parts=parts)
    reads = _counting_reads(monkeypatch)
    code, report = run_json("plan-devices", str(folder / "model_part-0.pt"), "--gpu", "1GB")
    assert code == 0, report
    assert dict(reads) == {f"model_part-{rank}.pt": 1 for rank in range(1, parts)}, reads
    # what the two reads gave: the plan is the part's, its merged size the whole model's
    assert report["model_part"]["parts"] == parts
    assert report["model_part"]["merged_params"] == sum(t.numel() for t in whole.values())
    assert any(f"is part 0 of the {parts} tensor-parallel parts" in w for w in report["warnings"]), report["warnings"]
    reads.clear()
    said = " ".join(run_cli("plan-devices", str(folder / "model_part-0.pt"), "--gpu", "1GB").stdout.split())
    assert f"model_part-0.pt is part 0 of {parts} tensor-parallel parts of one fairseq model" in said, said
    assert dict(reads) == {f"model_part-{rank}.pt": 1 for rank in range(1, parts)}, reads


@pytest.mark.parametrize("command", ["plan-devices", "inspect"])
def test_a_folder_of_parts_is_refused_reading_each_part_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    folder = tmp_path / "megatron"
    whole = _save_parts(folder)
    reads = _counting_reads(monkeypatch)
    result = run_cli(command, str(folder), *(["--gpu", "1GB"] if command == "plan-devices" else []))
    assert result.exit_code == 2
    said = " ".join(result.stderr.split())
    assert "folder holds 2 tensor-parallel parts of one fairseq model" in said, said
    assert f"merged, the model holds {sum(t.numel() for t in whole.values()):,} parameters" in said, said
    # the folder itself, then each part once (model_part-0.pt was read twice: its kind, then its shapes)
    assert reads["model_part-0.pt"] == 1 and reads["model_part-1.pt"] == 1, reads


def test_a_part_rewritten_between_two_runs_is_read_again(tmp_path: Path) -> None:
    """The reads are kept for one command only: a sibling changed since the last run is read as it is now."""
    folder = tmp_path / "megatron"
    _save_parts(folder)
    _, first = run_json("plan-devices", str(folder / "model_part-0.pt"), "--gpu", "1GB")
    sibling = torch.load(folder / "model_part-1.pt", weights_only=False)
    sibling["model"]["decoder.extra.weight"] = torch.zeros(3, 3)
    torch.save(sibling, folder / "model_part-1.pt")
    _, second = run_json("plan-devices", str(folder / "model_part-0.pt"), "--gpu", "1GB")
    assert first["model_part"]["merged_params"] == second["model_part"]["merged_params"]  # part 0's names merged
    assert not any("decoder.extra.weight" in w for w in first["warnings"])
    assert any("decoder.extra.weight" in w or "differ" in w for w in second["warnings"]), second["warnings"]


# --- 2. plan-devices against from_pretrained on the families plan90 added to scripts/plan_sweep.py -------------------


def _plan_sweep(monkeypatch: pytest.MonkeyPatch) -> Any:
    """scripts/plan_sweep.py as a module (it imports sweep_common from its own folder)."""
    import importlib.util

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    monkeypatch.syspath_prepend(str(scripts))
    spec = importlib.util.spec_from_file_location("plan_sweep", scripts / "plan_sweep.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "plan_sweep", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# one of each kind: seq2seq, vision tower + text tower, MoE with fp32 router rules, a multimodal MoE with a
# vision tower, a Mamba2 / attention hybrid
@pytest.mark.parametrize("name", ["m2m_100", "siglip2", "dbrx", "qwen3_vl_moe", "bamba"])
def test_new_families_at_every_dtype_over_two_gpus_cpu_and_disk_equal_from_pretrained(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fixtures.plan_devices import from_pretrained_device_map
    from weightdoctor.plan_devices import DTYPES, PlanRequest, build_planned_model, open_plan_source, plan_devices

    sweep = _plan_sweep(monkeypatch)
    folder = sweep.write_checkpoint(sweep._archs_plan90()[name], tmp_path / name)
    compared = offloaded = 0
    for dtype in ("fp32", "fp16", "bf16"):
        with open_plan_source(str(folder)) as checkpoint:
            planned = build_planned_model(checkpoint, dtype)
        total = sweep._from_pretrained_bytes(planned.model)
        for strategy in ("auto", "sequential"):
            # 2 GPUs + CPU + disk; 2 GPUs + disk (no CPU budget)
            for gpus, cpu in (([total // 4, total // 4], total // 4), ([total // 3, total // 4], None)):
                memory: dict[int | str, int] = {**dict(enumerate(gpus)), **({"cpu": cpu} if cpu else {})}
                expected = from_pretrained_device_map(folder, strategy, memory,
                                                      dtype=getattr(torch, DTYPES[dtype][0]))
                got = plan_devices(planned, PlanRequest(gpus=gpus, cpu=cpu, strategy=strategy, disk=True,
                                                        suggest=False)).device_map
                assert got == expected, (name, dtype, strategy, gpus, cpu)
                offloaded += "disk" in got.values()
                compared += 1
    assert compared == 12
    assert offloaded >= 6  # the budgets do reach the disk
