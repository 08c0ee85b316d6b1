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


@pytest.fixture(scope="module")
def t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded T5ForConditionalGeneration (its class keeps `wo` in float32 at a float16 load)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("u21") / "t5"
    T5ForConditionalGeneration(T5Config(vocab_size=200, d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4,
                                        decoder_start_token_id=0)).save_pretrained(folder)
    return folder


def test_check_dtype_of_t5_to_fp16_says_what_from_pretrained_keeps_in_fp32_at_a_lossy_verdict(t5: Path) -> None:
    """Was: "fp16 loses precision only: ..." and nothing of `wo`, which from_pretrained(dtype=torch.float16) keeps
    in float32 (kept_fp32_at_load was filled for an unsafe verdict only). Now the tensors, how many of the lossy
    ones that load leaves uncast, and its bytes, each checked against a real from_pretrained."""
    import torch
    from safetensors.torch import load_file
    from transformers import T5ForConditionalGeneration

    report = json_report("check-dtype", str(t5), "--target", "fp16")
    fp16 = report["targets"]["fp16"]
    assert fp16["verdict"] == "lossy"
    loaded = T5ForConditionalGeneration.from_pretrained(t5, dtype=torch.float16)
    stored = load_file(str(t5 / "model.safetensors"))
    kept = sorted(name for name, value in loaded.state_dict().items()
                  if value.dtype == torch.float32 and name in stored)
    assert kept and all(".wo." in name for name in kept)
    assert fp16["kept_fp32_at_load"] == kept
    for name in kept:  # what "load unchanged" says, measured
        assert torch.equal(loaded.get_parameter(name), stored[name])
    lossy = [t["name"] for t in fp16["tensors"] if t["verdict"] == "lossy"]
    spared = [name for name in kept if name in lossy]
    assert spared
    at_load = sum(p.numel() * p.element_size() for p in loaded.parameters())
    assert fp16["kept_fp32_at_load_memory_bytes"] == at_load != fp16["memory_bytes"]
    (line,) = [x for x in report["recommendation"]["lines"] if x.startswith("from_pretrained(dtype=torch.float16)")]
    assert line.startswith(f"from_pretrained(dtype=torch.float16) keeps {len(kept)} tensors in float32 (its class's "
                           f"_keep_in_fp32_modules: wo): {len(spared)} of the {len(lossy)} lossy ones load unchanged; "
                           "the weights take ")
    text = run_subprocess("check-dtype", str(t5), "--target", "fp16")
    assert text.returncode == 0 and "_keep_in_fp32_modules: wo" in " ".join(text.stdout.split())


def test_check_dtype_of_a_model_that_keeps_nothing_in_fp32_says_nothing_of_it(llama: Path) -> None:
    """Llama's class keeps no module in float32: an empty list at every verdict, no line; known from its modeling
    code without building the model."""
    import sys

    import weightdoctor.check_dtype as check_dtype
    from weightdoctor.checkpoint import open_checkpoint

    report = json_report("check-dtype", str(llama))
    for target in ("fp16", "bf16"):
        assert report["targets"][target]["kept_fp32_at_load"] == []
        assert report["targets"][target]["kept_fp32_at_load_memory_bytes"] is None
    assert not [x for x in report["recommendation"]["lines"] if x.startswith("from_pretrained(dtype=")]
    with open_checkpoint(str(llama)) as checkpoint:
        built = sys.modules.get("weightdoctor.meta_model")
        calls: list[object] = []
        if built is not None:
            original = built.build_meta_model
            built.build_meta_model = lambda *a, **k: calls.append(a) or original(*a, **k)  # type: ignore[assignment]
        try:
            assert check_dtype.kept_fp32_at_load(checkpoint, ["fp16", "bf16"]) == {"fp16": [], "bf16": []}
        finally:
            if built is not None:
                built.build_meta_model = original  # type: ignore[assignment]
        assert calls == []
