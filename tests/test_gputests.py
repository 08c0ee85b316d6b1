"""gputests: what the tests and the device script assumed of this CPU-only machine, found by the first run of the
whole suite on the lent GPU machine (H100, Python 3.12, torch 2.11, transformers 5.17, pytest 9.1):

* scripts/device_suite.sh gave pytest each shard's files largest first: a tests/ file between two tests/hostile
  files, which pytest 9.1 answers by losing tests/hostile's conftest fixtures ("fixture 'hostile' not found");
* the test-only packages (.devlib) were on the pytest process's path only, not on its child interpreters';
* the FP8 oracles: the default (dequantized) plan was compared with from_pretrained's map on the H100, where
  transformers' FP8 quantizer keeps FP8.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from tests.helpers import REPO_ROOT

SCRIPT = (REPO_ROOT / "scripts" / "device_suite.sh").read_text()


def test_each_shard_lists_a_folders_files_together(tmp_path: Path) -> None:
    """The script's own sharding, run on this tree: no folder's files are split by another folder's."""
    code = re.search(r"<<'PY'\n(.*?)\nPY\n", SCRIPT, re.S)
    assert code, "device_suite.sh shards its files in a python heredoc"
    subprocess.run([sys.executable, "-", "11", str(tmp_path)], input=code.group(1), text=True, check=True,
                   cwd=REPO_ROOT, timeout=60)
    listed: list[str] = []
    for index in range(11):
        names = (tmp_path / f"shard-{index}.txt").read_text().split()
        folders = [str(Path(name).parent) for name in names]
        runs = [folder for i, folder in enumerate(folders) if i == 0 or folder != folders[i - 1]]
        assert len(runs) == len(set(runs)), (index, runs)
        listed += names
    every = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "tests").rglob("test_*.py"))
    assert sorted(listed) == every
    assert any("tests/hostile/" in name for name in listed)


def test_the_children_tests_start_see_the_test_packages_after_the_machines_own(tmp_path: Path) -> None:
    """The script's PYTHONPATH lines, run with a stand-in .devlib: a child interpreter imports a package found only
    there, and finds it after its own site-packages (the machine's pytest and peft stay the ones used)."""
    lines = re.search(r'\nmkdir -p "\$WORK/devsite"\n.*?\nexport PYTHONPATH=[^\n]*\n', SCRIPT, re.S)
    assert lines, "device_suite.sh writes a sitecustomize for .devlib"
    tree, work = tmp_path / "tree", tmp_path / "work"
    (tree / ".devlib").mkdir(parents=True)
    work.mkdir()
    (tree / ".devlib" / "gputests_only_here.py").write_text("WHERE = 'devlib'\n")
    probe = ("import subprocess, sys; subprocess.run([sys.executable, '-c', 'import gputests_only_here, sys, site; "
             "print(gputests_only_here.WHERE); paths = [p.rstrip(\"/\") for p in sys.path]; "
             "print(paths.index(sys.argv[1]) > max(paths.index(p) for p in site.getsitepackages() if p in paths))',"
             " sys.argv[1]], check=True)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(["bash", "-c", f'set -e; WORK="$1"; {lines.group(0)}\n"$2" -c "$3" "$PWD/.devlib"', "-",
                           str(work), sys.executable, probe], capture_output=True, text=True, cwd=tree, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["devlib", "True"], done.stdout


@pytest.fixture(scope="module")
def fp8_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaConfig

    from fixtures.plan_devices import fp8_checkpoint

    return fp8_checkpoint(LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=1000),
                          tmp_path_factory.mktemp("fp8") / "llama")


def test_the_dequantized_fp8_oracle_is_the_dequantized_map_on_a_gpu_that_keeps_fp8_too(fp8_llama: Path) -> None:
    """On a GPU of compute capability 9.0 (told so here), from_pretrained keeps FP8 and its map differs from the
    dequantized one; the oracle the default plan is compared with still gives the dequantized map."""
    from fixtures.plan_devices import (
        fp8_kept_here,
        from_pretrained_device_map,
        from_pretrained_device_map_on_fp8_gpus,
        from_pretrained_device_map_where_fp8_is_dequantized,
    )

    memory: dict[int | str, int] = {0: 1_500_000, 1: 1_500_000, "cpu": 10**10}
    if fp8_kept_here():
        pytest.skip("this machine's GPU keeps FP8: test_plan_devices' FP8 tests compare the real maps here")
    dequantized = from_pretrained_device_map(fp8_llama, "sequential", memory)
    kept = from_pretrained_device_map_on_fp8_gpus(fp8_llama, "sequential", memory)
    assert dequantized != kept  # the budgets tell the two loads apart
    with mock.patch("torch.cuda.is_available", return_value=True), \
            mock.patch("torch.cuda.get_device_capability", return_value=(9, 0)):
        assert fp8_kept_here()
        assert from_pretrained_device_map(fp8_llama, "sequential", memory) == kept  # what the H100 gave
        assert from_pretrained_device_map_where_fp8_is_dequantized(fp8_llama, "sequential", memory) == dequantized
        assert from_pretrained_device_map_on_fp8_gpus(fp8_llama, "sequential", memory) == kept
