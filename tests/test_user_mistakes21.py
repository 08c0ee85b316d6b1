"""Round 21 of the common mistakes users make: what round 20 noticed and left, in inspect, check-dtype and
plan-devices.

Covers: `plan-devices --gpu {"0":"20GiB","1":"20GiB"}` typed unquoted, which the shell's brace expansion hands over
as `--gpu 0:20GiB 1:20GiB`, ended in Click's "Got unexpected extra argument(s) (1:20GiB)"; it now prints the command
line with --gpu once per GPU (and --cpu for a cpu entry), which pasted back plans those sizes.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tests.helpers import json_report, run_subprocess

_LLAMA = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8, max_position_embeddings=64)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded LlamaForCausalLM, save_pretrained'd (float32)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("u21") / "llama"
    LlamaForCausalLM(LlamaConfig(**_LLAMA)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(("typed", "gib"), [
    # `--gpu {"0":"20GiB","1":"20GiB"}`: brace expansion makes two words of it, the quotes removed
    (["--gpu", "0:20GiB", "1:20GiB"], {0: 20, 1: 20}),
    # `--gpu {"0":"20GiB","1":"10GiB","cpu":"64GiB"}` after the source, `--json` after it
    (["--gpu", "0:20GiB", "1:10GiB", "cpu:64GiB", "--strategy", "sequential"], {0: 20, 1: 10, "cpu": 64}),
])
def test_a_max_memory_dict_typed_unquoted_after_gpu_prints_the_command_that_plans_it(
        llama: Path, typed: list[str], gib: dict[int | str, int]) -> None:
    """Was: `error: ... Got unexpected extra argument(s) (1:20GiB)`. Now one line with the whole command line as it
    should be typed; pasted back (through the real CLI), it plans the sizes the dict said."""
    result = run_subprocess("plan-devices", str(llama), *typed)
    assert result.returncode == 2 and result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and "unexpected extra argument" not in line
    assert f"{' '.join(typed[:len(gib) + 1])} is a max_memory dict the shell split into words" in line
    printed = shlex.split(line.split(" and --cpu for RAM: ", 1)[1].split(" (see ")[0])
    assert printed[:3] == ["python", "-m", "weightdoctor"]
    pasted = run_subprocess(*printed[3:], "--json")
    assert pasted.returncode == 0, pasted.stderr
    report = json.loads(pasted.stdout)
    capacities = {d["device"]: d["capacity_bytes"] for d in report["devices"]
                  if d["device"].startswith("cuda:") or "cpu" in gib and d["device"] == "cpu"}
    assert capacities == {f"cuda:{d}" if isinstance(d, int) else d: size * 2**30 for d, size in gib.items()}
    if "--strategy" in typed:
        assert report["strategy"] == "sequential"
    assert json_report(*printed[3:])["device_map"] == report["device_map"]
