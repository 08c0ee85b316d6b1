"""health84: the matrices of a frozen block were warned "got no update" (untrained-tensor) and, in the same report,
counted among the matrices that "have trained too" by the pooled briefly-trained test.

Fault: T5 with encoder.block.1 frozen, 60 AdamW steps (fixtures.trained_zoo): its six matrices were warned, yet the
briefly-trained info said "30 matrices ... 36,096 values hold 103.8% of the variance their inits give (5.1 standard
deviations above it): they have trained too", the six among the 30, and the state line said the same pool. Now the
matrices whose bias or block's norms say they got no update are left out of the pool (`weights.pooled_spread`, the
info, the state line, the untrained-tensor hints): 24 matrices, 27,904 values, 105.5%, 6.5σ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fixtures.trained_zoo import Case, build_cases
from tests.helpers import run_cli, run_subprocess

pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

_NOT_AMONG = "that got no update (untrained-tensor)"


def _case(out: Path, model: str, regime: str, steps: int = 60) -> Case:
    (case,) = build_cases(out, model, regimes=(regime,), hidden=32, steps=steps)
    return case


def _stats_json(path: Path) -> dict[str, Any]:
    result = run_cli("inspect", str(path), "--stats", "--json")
    assert result.exit_code in (0, 1), result.stderr
    return json.loads(result.stdout)


def _frozen_matrices(case: Case, report: dict[str, Any]) -> set[str]:
    """The matrices the oracle says are bit for bit their init (the frozen block's)."""
    matrices = {t["name"] for t in report["tensors"] if len(t["shape"]) >= 2}
    return {name for name, truth in case.truth.items() if truth == "init" and name in matrices}


def _at_init(report: dict[str, Any]) -> dict[str, int]:
    """The matrices the report reads as still at their init, with their number of values."""
    return {t["name"]: t["stats"]["count"] for t in report["tensors"]
            if len(t["shape"]) >= 2 and t["init"] and t["init"]["at_init"]}


def test_t5_with_a_frozen_block_counts_only_the_matrices_that_got_updates_as_trained_too(tmp_path: Path) -> None:
    case = _case(tmp_path, "t5", "frozen")
    report = _stats_json(case.path)
    frozen = _frozen_matrices(case, report)
    assert len(frozen) == 6 and all(name.startswith("encoder.block.1.") for name in frozen)
    warned = {f["tensor"] for f in report["findings"] if f["code"] == "untrained-tensor"}
    assert warned == frozen, warned
    at_init = _at_init(report)
    assert frozen <= set(at_init)
    pooled_names = set(at_init) - frozen  # every T5 matrix has a certain normal init: all of them pool
    pooled = report["weights"]["pooled_spread"]
    assert pooled["tensors"] == len(pooled_names) == 24
    assert pooled["values"] == sum(at_init[name] for name in pooled_names)
    assert pooled["moved"] is True
    info = [f["message"] for f in report["findings"] if f["code"] == "briefly-trained"]
    assert len(info) == 1, info
    assert info[0].startswith("24 matrices still look like their initialization one by one, but taken together they "
                              "have trained too")
    assert f"Beside them, {report['weights']['trained_share']:.1%} of the checkpoint's matrix parameters" in info[0]
    assert f"their {pooled['values']:,} values hold {pooled['variance_ratio']:.1%} of the variance" in info[0]
    assert info[0].endswith(f"have clearly trained. The 6 matrices {_NOT_AMONG} are not counted here")
    weights = report["weights"]
    assert (weights["state"], weights["state_basis"]) == ("trained", "pooled")
    text = " ".join(run_subprocess("inspect", case.path, "--stats", env={"COLUMNS": "400"}).stdout.split())
    assert (f"pooled, the 24 matrices still fitting their inits (6 frozen ones left out) hold "
            f"{pooled['variance_ratio']:.1%} of their inits' variance)") in text, text


def test_t5_after_15_steps_with_a_frozen_block_rests_on_the_pool_without_it(tmp_path: Path) -> None:
    """No matrix moved enough to tell alone: the state rests on the pool alone ("no matrix ... has moved enough to
    tell on its own, but together ... has been trained"), which held the 6 frozen matrices among 35."""
    case = _case(tmp_path, "t5", "frozen", steps=15)
    report = _stats_json(case.path)
    frozen = _frozen_matrices(case, report)
    assert len(frozen) == 6
    weights = report["weights"]
    assert (weights["state"], weights["state_basis"], weights["trained_share"]) == ("trained", "pooled", 0.0)
    others = set(_at_init(report)) - frozen
    assert weights["pooled_spread"]["tensors"] == len(others) == 29
    info = [f["message"] for f in report["findings"] if f["code"] == "briefly-trained"]
    assert len(info) == 1 and "values of the 29 matrices with a known random init hold " in info[0], info
    assert info[0].endswith(f". The 6 matrices {_NOT_AMONG} are not counted here"), info
    assert {f["tensor"] for f in report["findings"] if f["code"] == "untrained-tensor"} == frozen


def test_llama_with_a_frozen_block_leaves_it_out_of_the_pool_and_its_hints(tmp_path: Path) -> None:
    """Llama, model.layers.1 frozen: its 7 matrices were 7 of the 9 pooled ("pooled, the 9 matrices still at a known
    random init hold 99.0% ...: too little to tell they moved" in each of their warnings); now the pool holds the 2
    others, and the frozen matrices' hints no longer speak of a pool they are not in."""
    case = _case(tmp_path, "llama", "frozen")
    report = _stats_json(case.path)
    frozen = _frozen_matrices(case, report)
    assert len(frozen) == 7 and all(name.startswith("model.layers.1.") for name in frozen)
    warnings = {f["tensor"]: f for f in report["findings"] if f["code"] == "untrained-tensor"}
    assert frozen <= set(warnings), warnings
    at_init = _at_init(report)
    pooled = report["weights"]["pooled_spread"]
    others = set(at_init) - frozen
    assert others and pooled is not None and pooled["tensors"] == len(others)
    assert pooled["values"] == sum(at_init[name] for name in others)
    assert all("pooled, the" not in warnings[name]["hint"] for name in frozen), warnings
    assert all(f"pooled, the {len(others)} matrices still at a known random init" in warnings[name]["hint"]
               for name in others if name in warnings)
    assert report["weights"]["state"] == "trained"


def test_t5_with_nothing_frozen_pools_every_matrix_at_init(tmp_path: Path) -> None:
    case = _case(tmp_path, "t5", "full")
    report = _stats_json(case.path)
    assert not _frozen_matrices(case, report)
    assert not [f for f in report["findings"] if f["code"] == "untrained-tensor"]
    at_init = _at_init(report)
    pooled = report["weights"]["pooled_spread"]
    assert pooled["tensors"] == len(at_init) == 30 and pooled["values"] == sum(at_init.values())
    info = [f["message"] for f in report["findings"] if f["code"] == "briefly-trained"]
    assert len(info) == 1 and info[0].startswith("30 matrices still look like their initialization one by one")
    assert info[0].endswith("of the checkpoint's matrix parameters have clearly trained"), info
    assert (report["weights"]["state"], report["weights"]["state_basis"]) == ("trained", "pooled")
