"""plan-devices against from_pretrained's own map on ordinary checkpoints: what scripts/plan_sweep.py found."""

from __future__ import annotations

import os
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
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},  # the script imports fixtures/ from the checkout
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    assert "different: 0  errors: 0" in last and "architectures: 5" in last
    assert int(last.split("cases: ")[1].split()[0]) >= 20


def test_keep_in_fp32_modules_at_fp16_are_warned_with_the_bytes_a_real_load_adds(tmp_path: Path) -> None:
    import torch
    import transformers

    config = transformers.T5Config(vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=3, num_decoder_layers=3,
                                   num_heads=4, architectures=["T5ForConditionalGeneration"])
    torch.manual_seed(0)
    transformers.T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    code, data = run_json("plan-devices", tmp_path / "t5", "--dtype", "fp16", "--gpu", "300000", "--cpu", "10GB")
    assert code == 0
    loaded = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "t5", dtype=torch.float16)
    real = sum(p.numel() * p.element_size() for p in loaded.parameters())
    assert {p.dtype for n, p in loaded.named_parameters() if ".wo." in n} == {torch.float32}
    extra = 6 * 128 * 64 * 2  # six wo weights, counted at fp16, loaded in fp32
    assert real == data["weights_bytes"] + extra
    [warning] = [w for w in data["warnings"] if "_keep_in_fp32_modules" in w]
    assert warning.startswith("T5ForConditionalGeneration keeps 6 tensors of wo in float32 at fp16")
    assert "98.30 KB more than planned (cuda:0 +" in warning and "cpu +" in warning
    code, data = run_json("plan-devices", tmp_path / "t5", "--dtype", "bf16", "--gpu", "10GB")
    assert code == 0 and not [w for w in data["warnings"] if "_keep_in_fp32_modules" in w]


@pytest.fixture(scope="module")
def no_architectures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untied Llama checkpoint whose config.json names no architecture."""
    import json

    folder = save_tiny_model("llama", tmp_path_factory.mktemp("noarch"))
    config = json.loads((folder / "config.json").read_text())
    del config["architectures"]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_an_auto_class_is_planned_as_from_pretrained_of_it_builds(no_architectures: Path) -> None:
    import transformers

    memory = {0: 700_000, "cpu": 10**10}
    code, data = run_json("plan-devices", no_architectures, "--model-class", "AutoModelForCausalLM",
                          "--gpu", "700000", "--cpu", "10000000000")
    assert code == 0 and data["model_class"] == "LlamaForCausalLM"
    assert data["device_map"] == from_pretrained_device_map(no_architectures, "auto", memory,
                                                            model_class=transformers.AutoModelForCausalLM)
    assert "lm_head" in data["device_map"]
    assert not [w for w in data["warnings"] if "names no architecture" in w]


def test_a_config_without_architectures_says_which_class_is_planned(no_architectures: Path) -> None:
    code, data = run_json("plan-devices", no_architectures, "--gpu", "10GB")
    assert code == 0 and data["model_class"] == "LlamaModel"
    [warning] = [w for w in data["warnings"] if "names no architecture" in w]
    assert warning.startswith("config.json names no architecture: planned as LlamaModel, the class AutoModel")
    assert "pass --model-class" in warning


def test_keep_in_fp32_warning_counts_only_tensors_still_at_half_precision() -> None:
    import torch
    import transformers

    from weightdoctor.plan_devices import PlannedModel, _build_from_config, _sizes, keep_in_fp32_warning

    config = transformers.T5Config(vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=1, num_decoder_layers=1,
                                   num_heads=4, architectures=["T5ForConditionalGeneration"]).to_dict()
    model = _build_from_config(config, "float16", None)
    wo = model.encoder.block[0].layer[1].DenseReluDense.wo
    wo.weight = torch.nn.Parameter(torch.empty(64, 128, dtype=torch.float32, device="meta"))  # built fp32 already
    planned = PlannedModel(model, "config", "T5ForConditionalGeneration", "fp16", config)
    tensor_sizes = _sizes(planned, "fp16")[1]
    warning = keep_in_fp32_warning(planned, {"": 0}, tensor_sizes, {})
    assert warning is not None and "keeps 1 tensor of wo" in warning and "16.38 KB more" in warning
