"""Round 21 of the common mistakes users make: what round 20 noticed and left, in inspect, check-dtype and
plan-devices.

Covers: `plan-devices --gpu {"0":"20GiB","1":"20GiB"}` typed unquoted, which the shell's brace expansion hands over
as `--gpu 0:20GiB 1:20GiB`, ended in Click's "Got unexpected extra argument(s) (1:20GiB)"; it now prints the command
line with --gpu once per GPU (and --cpu for a cpu entry), which pasted back plans those sizes.
check-dtype of a T5 to fp16 said "lossy" and nothing of the `wo` from_pretrained(dtype=torch.float16) keeps in
float32 (said only for an unsafe verdict); now at every verdict, counted, with that load's bytes.
inspect said nothing of a config.json that disagrees with the tensors: a Llama config beside BERT weights, a
vocab_size / hidden_size that disagrees with the embedding, fp16 weights under a float32 config; now each is warned,
from the header and the config alone.
plan-devices --strategy balanced_low_0 needing CPU offload where auto fits the same GPUs was offered a lower dtype or
more GPUs, not the strategy; now `--strategy auto` comes first. A --seq-len beyond max_position_embeddings gets a note.
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


def _copy_with_config(source: Path, folder: Path, **changes: object) -> Path:
    """`source`'s weights in `folder`, beside its config.json with `changes` made."""
    import shutil

    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_inspect_warns_of_a_llama_config_beside_bert_weights(llama: Path, tmp_path: Path) -> None:
    """Was: no warning. transformers' AutoModel builds a LlamaModel from that folder and loads none of the BERT
    tensors (all unexpected); inspect says so from the names alone, and says nothing of the matching pairs."""
    import torch
    from transformers import AutoModel, BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    assert not json_report("inspect", str(folder))["warnings"]
    (folder / "config.json").write_text((llama / "config.json").read_text())
    report = json_report("inspect", str(folder))
    (warning,) = [w for w in report["warnings"] if "model_type 'llama'" in w]
    assert warning.startswith(f"config.json says model_type 'llama' (LlamaForCausalLM), but 0 of the "
                              f"{report['num_tensors']} tensors have names that fit the modules transformers' llama "
                              "code defines")
    assert "another architecture's weights" in warning
    assert not [w for w in report["warnings"] if "size mismatch" in w]  # said once, by the names
    _, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert len(info["unexpected_keys"]) == report["num_tensors"]  # what the warning says, measured
    assert not [w for w in json_report("inspect", str(llama))["warnings"] if "config.json" in w]


def test_inspect_warns_of_a_config_whose_sizes_disagree_with_the_embedding(llama: Path, tmp_path: Path) -> None:
    """Was: no warning for a config saying hidden_size 64 and vocab_size 512 beside a 256×32 embedding; from_pretrained
    builds the model the config says and cannot load the weights into it."""
    from transformers import LlamaForCausalLM

    folder = _copy_with_config(llama, tmp_path / "edited", hidden_size=64, vocab_size=512)
    report = json_report("inspect", str(folder))
    sizes = [w for w in report["warnings"] if "size mismatch" in w]
    assert sizes == [
        "config.json says vocab_size=512, model.embed_tokens.weight has 256 rows: from_pretrained builds a 512-row "
        "embedding and cannot load this weight into it (a size mismatch); the config belongs to another model or "
        "was edited",
        "config.json says hidden_size=64, model.embed_tokens.weight is 32 wide: from_pretrained builds the model 64 "
        "wide and cannot load these weights into it (a size mismatch); the config belongs to another model or was "
        "edited"]
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):  # what the warning says, measured
        LlamaForCausalLM.from_pretrained(folder)
    text = run_subprocess("inspect", str(folder))
    assert text.returncode == 0 and "config.json says vocab_size=512" in " ".join(text.stderr.split())


def test_inspect_warns_of_fp16_weights_under_a_float32_config(llama: Path, tmp_path: Path) -> None:
    """Was: no warning. from_pretrained(dtype="auto") builds the model at float32: twice the weights' bytes."""
    import torch
    from transformers import LlamaForCausalLM

    half = tmp_path / "half"
    LlamaForCausalLM.from_pretrained(llama, dtype=torch.float16).save_pretrained(half)
    assert not [w for w in json_report("inspect", str(half))["warnings"] if "dtype" in w]
    config = json.loads((half / "config.json").read_text())
    config["dtype"] = "float32"
    (half / "config.json").write_text(json.dumps(config))
    report = json_report("inspect", str(half))
    (warning,) = [w for w in report["warnings"] if "dtype" in w]
    assert warning.startswith("config.json's dtype disagrees with the weights: stored float16 but config says "
                              "float32: from_pretrained(dtype='auto') up-casts at load, ")
    loaded = LlamaForCausalLM.from_pretrained(half, dtype="auto")
    assert loaded.dtype == torch.float32
    assert sum(p.numel() * p.element_size() for p in loaded.parameters()) == 2 * report["total_bytes"]


_TWO_120KB = ["--gpu", "120KB", "--gpu", "120KB", "--cpu", "10MB"]


def test_balanced_low_0_that_offloads_where_auto_fits_is_offered_auto(llama: Path) -> None:
    """Was: --strategy balanced_low_0 on two 120 KB GPUs needs CPU offload, and the smallest changes offered were a
    lower dtype, a third GPU or larger GPUs, never the strategy (auto fits these very GPUs). The option printed,
    pasted in place of the strategy, fits; both maps are from_pretrained's own."""
    from fixtures.plan_devices import from_pretrained_device_map

    budgets: dict[int | str, int] = {0: 120_000, 1: 120_000, "cpu": 10_000_000}
    low_0 = json_report("plan-devices", str(llama), *_TWO_120KB, "--strategy", "balanced_low_0")
    assert low_0["verdict"] == "needs-cpu-offload"
    assert low_0["device_map"] == from_pretrained_device_map(llama, "balanced_low_0", budgets)
    (offered,) = [s for s in low_0["suggestions"] if s["change"] == "strategy"]
    assert offered == {"change": "strategy", "description": "--strategy auto fits on the 2 GPUs at fp32, where "
                       "balanced_low_0 offloads", "dtype": "fp32", "gpus": [120_000, 120_000],
                       "verdict": "fits-on-gpus"}
    assert low_0["suggestions"][0] == offered  # the least change comes first
    option = shlex.split(offered["description"].split(" fits on ")[0])
    pasted = json_report("plan-devices", str(llama), *_TWO_120KB, *option)
    assert pasted["verdict"] == "fits-on-gpus"
    assert pasted["device_map"] == from_pretrained_device_map(llama, "auto", budgets)
    assert "cpu" not in pasted["device_map"].values()
    text = run_subprocess("plan-devices", str(llama), *_TWO_120KB, "--strategy", "balanced_low_0")
    assert "--strategy auto fits on the 2 GPUs" in " ".join(text.stdout.split())
    # Where auto offloads as well, the strategy is no change to offer.
    small = json_report("plan-devices", str(llama), "--gpu", "80KB", "--gpu", "80KB", "--cpu", "10MB",
                        "--strategy", "balanced_low_0")
    assert small["verdict"] == "needs-cpu-offload" and not [s for s in small["suggestions"]
                                                            if s["change"] == "strategy"]


def test_a_seq_len_beyond_max_position_embeddings_gets_a_note(llama: Path) -> None:
    """Was: `--kv-cache --seq-len 100000` on a model whose config says max_position_embeddings 64 was sized with no
    word. Now a warning names the config's length; within it, none."""
    beyond = json_report("plan-devices", str(llama), "--gpu", "24GB", "--kv-cache", "--seq-len", "100000")
    assert beyond["kv_cache"]["seq_len"] == 100_000
    (note,) = [w for w in beyond["warnings"] if "--seq-len" in w]
    assert note.startswith("--seq-len 100,000 is beyond the 64 positions the config says the model takes "
                           "(max_position_embeddings): the KV cache is sized for it as asked")
    within = json_report("plan-devices", str(llama), "--gpu", "24GB", "--kv-cache", "--seq-len", "64")
    assert not [w for w in within["warnings"] if "--seq-len" in w]
