"""plan-devices against from_pretrained's own map on ordinary checkpoints: what scripts/plan_sweep.py found."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.plan_devices import from_pretrained_device_map, save_tiny_model
from tests.helpers import run_json

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def xlmr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model("xlm_roberta", tmp_path_factory.mktemp("tiny"))


def test_tied_copy_registered_first_still_counts_the_embeddings(xlmr: Path) -> None:
    # XLMRobertaForMaskedLM registers lm_head before roberta: on a tied model named_parameters() yields the
    # embedding matrix as lm_head.decoder.weight, a tied copy the planner skips, so it counted it nowhere.
    embeddings = 256 * 64 * 4
    reports = []
    for strategy, memory in (("auto", {0: 670_000, "cpu": 10**10}), ("sequential", {0: 670_000, 1: 670_000})):
        gpus = [str(memory[0])] + ([str(memory[1])] if 1 in memory else [])
        args = [a for g in gpus for a in ("--gpu", g)] + (["--cpu", "10000000000"] if "cpu" in memory else [])
        code, data = run_json("plan-devices", xlmr, "--strategy", strategy, *args)
        assert code == 0
        assert data["device_map"] == from_pretrained_device_map(xlmr, strategy, memory)
        reports.append(data)
    data = reports[0]
    embedding_entry = next(r for d in data["devices"] for r in d["ranges"] if r["label"] == "roberta.embeddings")
    assert embedding_entry["bytes"] >= embeddings
    from weightdoctor.plan_devices import build_planned_model, open_plan_source

    with open_plan_source(str(xlmr)) as checkpoint:
        model = build_planned_model(checkpoint).model
    # lm_head.decoder.weight and .bias are copies of the embeddings and of lm_head.bias
    real = sum(p.numel() * p.element_size() for p in model.parameters()) - embeddings - 256 * 4
    assert data["weights_bytes"] == real
    assert data["num_params"] == real // 4


def test_quick_sweep_agrees_with_from_pretrained() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/plan_sweep.py", "--quick", "--only", "bert", "xlm_roberta", "t5", "llama", "clip"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=300,
    )
    last = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-2000:]
    assert "different: 0  errors: 0" in last and "architectures: 5" in last
    assert int(last.split("cases: ")[1].split()[0]) >= 20
