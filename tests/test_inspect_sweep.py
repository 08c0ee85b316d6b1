"""The inspect oracle sweep (scripts/inspect_sweep.py --quick) on architectures with tied names, persistent
buffers and weight-norm parametrizations: inspect --json agrees with safe_open / torch.load / from_pretrained,
and the sweep's checks see a difference when there is one."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT


def test_quick_inspect_sweep_agrees_with_the_libraries() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/inspect_sweep.py", "--quick", "--only", "gpt2", "bert", "bart", "resnet", "wav2vec2"],
        capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("cases: 25  equal: 25  different: 0  errors: 0"), summary
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if "/" in line.split(" ", 1)[0]}
    # GPT-2: save_pretrained drops lm_head.weight; the .bin keeps it as transformer.wte.weight's storage
    assert re.match(r"gpt2/st +28 +140,288 +equal$", lines["gpt2/st"]), lines["gpt2/st"]
    assert re.match(r"gpt2/bin +29 +140,288 +equal$", lines["gpt2/bin"]), lines["gpt2/bin"]
    assert "gpt2/st-index" in lines and "gpt2/state-dict" in lines
    # BatchNorm's running stats and BART's final_logits_bias are buffers inspect counts as parameters
    assert "179 buffer elements counted as parameters" in lines["resnet/st"]
    assert "500 buffer elements counted as parameters" in lines["bart/bin"]


@pytest.fixture(scope="module")
def gpt2_bin(tmp_path_factory: pytest.TempPathFactory):
    """A tied GPT-2 saved as a transformers-4 .bin, with inspect's --json of it."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import inspect_sweep
    import torch

    torch.manual_seed(0)
    model = inspect_sweep._models()["gpt2"]().eval()
    sources = inspect_sweep.build_sources(model, tmp_path_factory.mktemp("gpt2"), ("bin",))
    return inspect_sweep, model, sources["bin"], inspect_sweep._inspect(sources["bin"])


def test_the_sweep_checks_see_a_wrong_count_a_missed_tie_and_a_mislabelled_tree(gpt2_bin) -> None:
    """check_case passes inspect's own report and raises Difference on each planted error."""
    sweep, model, source, report = gpt2_bin
    assert sweep.check_case(copy.deepcopy(report), source, model, None, []) == (29, model.num_parameters())
    wrong_count = {**copy.deepcopy(report), "num_params": report["num_params"] + 1}
    with pytest.raises(sweep.Difference, match="num_params"):
        sweep.check_case(wrong_count, source, model, None, [])
    no_tie = {**copy.deepcopy(report), "shared_tensors": []}
    with pytest.raises(sweep.Difference, match="shared_tensors"):
        sweep.check_case(no_tie, source, model, None, [])
    tree = copy.deepcopy(report)
    block = next(node for node in tree["module_tree"][0]["children"] if node["repeat"] == 2)
    block["children"][0]["num_params"] += 10
    with pytest.raises(sweep.Difference, match="module tree"):
        sweep.check_case(tree, source, model, None, [])
    dtype = json.loads(json.dumps(report))
    dtype["tensors"][0]["dtype"] = "float16"
    with pytest.raises(sweep.Difference, match=dtype["tensors"][0]["name"]):
        sweep.check_case(dtype, source, model, None, [])
