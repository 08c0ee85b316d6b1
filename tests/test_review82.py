"""review82: the merges after eecd7841 (quantrest, the gather snippets, ...), reviewed.

Found: `plan-devices --dtype int4 / int8` of a bf16 or fp16 checkpoint that offloads said the offloaded modules
"stay in fp32, not quantized" with llm_int8_enable_fp32_cpu_offload=True, and counted them at 4 bytes a value:
transformers 5.25 loads every parameter it does not quantize at the model's dtype (dtype="auto": the checkpoint's,
as quantrest plans the rest), so they stay bf16 and the warning doubled the memory the offload takes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.helpers import run_json
from tests.test_plan_quantrest import _llama, fake_bitsandbytes  # noqa: F401 - the fixture is used by name


def _owned_by(name: str, modules: list[str]) -> bool:
    return any(module == "" or name == module or name.startswith(f"{module}.") for module in modules)


@pytest.mark.parametrize("stored", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_the_offloaded_modules_of_a_bnb_plan_stay_at_the_checkpoints_dtype(
        tmp_path: Path, fake_bitsandbytes: None, stored: torch.dtype) -> None:  # noqa: F811
    """The oracle: from_pretrained with BitsAndBytesConfig(load_in_4bit=True, llm_int8_enable_fp32_cpu_offload=True)
    and a map that offloads every module quantizes none of them and loads them at the checkpoint's dtype (bf16 stays
    bf16). The plan's warning names that dtype and the bytes the offloaded weights take at it, which for a
    checkpoint stored at that dtype are their bytes in the file; a bf16 checkpoint's were said fp32 and doubled."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from weightdoctor.units import format_bytes

    folder = _llama(tmp_path / "m", stored)
    loaded = AutoModelForCausalLM.from_pretrained(
        folder, device_map={"model": "cpu", "lm_head": "disk"}, offload_folder=str(tmp_path / "offload"),
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, llm_int8_enable_fp32_cpu_offload=True))
    assert {p.dtype for p in loaded.parameters()} == {stored}
    assert type(loaded.model.layers[0].mlp.down_proj) is torch.nn.Linear  # offloaded: not quantized

    code, whole = run_json("plan-devices", str(folder), "--gpu", "1GB", "--dtype", "int4")
    share = (whole["weights_bytes"] + whole["buffers_bytes"]) // 2  # GPUs that take a part of it, not all
    code, data = run_json("plan-devices", str(folder), "--gpu", f"{share}B", "--gpu", f"{share}B", "--cpu", "1GB",
                          "--dtype", "int4")
    assert code == 0 and data["verdict"] == "needs-cpu-offload", data["verdict"]
    offloaded = [module for module, where in data["device_map"].items() if where in ("cpu", "disk")]
    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        stored_bytes = sum(_numel(handle.get_slice(name).get_shape()) * stored.itemsize
                           for name in handle.keys() if _owned_by(name, offloaded))  # noqa: SIM118
    [warning] = [w for w in data["warnings"] if "llm_int8_enable_fp32_cpu_offload=True" in w]
    short = {torch.bfloat16: "bf16", torch.float32: "fp32"}[stored]
    assert f"the offloaded modules then stay in {short}, not quantized" in warning, warning
    said = re.search(r"about (.+?) on CPU/disk", warning)
    assert said is not None
    # The buffers (rotary inv_freq) are the only bytes the file does not hold: a few hundred at most.
    assert said.group(1) in {format_bytes(stored_bytes + extra) for extra in range(0, 600, 2)}, (said, stored_bytes)


def _numel(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def test_the_index_of_a_sharded_safetensors_bart_leaves_its_buffer_out_of_total_parameters(tmp_path: Path) -> None:
    """review81 left persistent buffers out of an index's `total_parameters` only where the model was built for tied
    tensors, which only a .bin holds: `shard` of BART as the Hub has it (save_pretrained's model.safetensors, no tied
    storage) counted final_logits_bias as parameters (28,928 parameters said 29,028). The oracle: the index
    save_pretrained writes for the same model at the same shard size."""
    import json

    import transformers

    torch.manual_seed(0)
    model = transformers.BartForConditionalGeneration(transformers.BartConfig(
        encoder_layers=1, decoder_layers=1, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, vocab_size=100, max_position_embeddings=64))
    model.save_pretrained(tmp_path / "hub")  # one model.safetensors, as a Hub repo holds it
    model.save_pretrained(tmp_path / "reference", max_shard_size="5KB")
    code, data = run_json("shard", str(tmp_path / "hub"), "--max", "5KB", "-o", str(tmp_path / "ours"))
    assert code == 0, data
    reference = json.loads((tmp_path / "reference" / "model.safetensors.index.json").read_text())
    ours = json.loads((tmp_path / "ours" / "model.safetensors.index.json").read_text())
    buffers = sum(b.numel() for name, b in model.named_buffers() if name in model.state_dict())
    assert buffers == 100  # final_logits_bias: the case is one where the two counts differ
    assert reference["metadata"]["total_parameters"] == model.num_parameters()
    assert ours["metadata"]["total_parameters"] == model.num_parameters(), ours["metadata"]
    assert ours["metadata"]["total_size"] == reference["metadata"]["total_size"]


@pytest.mark.parametrize("typed", ["{{0:1}}", "{[1]:2}"])
def test_an_unhashable_max_memory_literal_is_a_size_error_not_an_unexpected_one(tmp_path: Path, typed: str) -> None:
    """`--gpu '{{0:1}}'` (a set of dicts) and `--gpu '{[1]:2}'` (a dict keyed by a list): the max_memory reading
    of what --gpu was given let ast.literal_eval's TypeError through, which read "<source>: unexpected TypeError:
    unhashable type" (naming the config folder, not the option). Now the size itself is refused, naming it."""
    from tests.helpers import run_cli
    from tests.test_third_party_layouts27 import CONFIG

    (tmp_path / "config.json").write_text(__import__("json").dumps(CONFIG))
    result = run_cli("plan-devices", str(tmp_path), "--gpu", typed)
    assert result.exit_code == 2
    assert "unexpected" not in result.stderr and "TypeError" not in result.stderr, result.stderr
    assert f"cannot parse size '{typed}'" in result.stderr, result.stderr


def test_the_rest_warning_of_a_float32_moe_names_the_experts_it_holds(
        tmp_path: Path, fake_bitsandbytes: None) -> None:  # noqa: F811
    """transformers 5's Mixtral holds its experts as fused parameters (MixtralExperts), no Linear: bitsandbytes
    leaves them whole, at the rest's dtype, and they are most of the rest the warning counts. It said "the
    unquantized rest (embeddings, norms, lm_head, biases: 1.30 MB)", naming none of them. The oracle: the model
    from_pretrained builds with BitsAndBytesConfig(load_in_4bit=True) (its map computed, nothing loaded)."""
    import transformers

    from fixtures.plan_devices import from_pretrained_device_map
    from weightdoctor.units import format_bytes

    torch.manual_seed(0)
    config = transformers.MixtralConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4)
    transformers.MixtralForCausalLM(config).save_pretrained(tmp_path / "moe")  # float32
    seen: dict[str, torch.nn.Module] = {}
    import transformers.modeling_utils as modeling_utils

    original = modeling_utils._get_device_map

    def record(model: torch.nn.Module, *args: object, **kwargs: object) -> object:
        seen["model"] = model
        return original(model, *args, **kwargs)

    modeling_utils._get_device_map = record
    try:
        from_pretrained_device_map(tmp_path / "moe", "auto", {0: 10**9}, quantization_config=transformers.
                                   BitsAndBytesConfig(load_in_4bit=True, llm_int8_enable_fp32_cpu_offload=True))
    finally:
        modeling_utils._get_device_map = original
    built = seen["model"]
    experts = {name: p for name, p in built.named_parameters() if ".experts." in name}
    assert experts and all(p.dtype == torch.float32 and p.dim() == 3 for p in experts.values())
    assert not any(isinstance(m, torch.nn.Linear) for name, m in built.named_modules() if ".experts" in name)

    code, data = run_json("plan-devices", str(tmp_path / "moe"), "--gpu", "1GB", "--dtype", "int4")
    assert code == 0
    [said] = [w for w in data["warnings"] if "the unquantized rest" in w]
    # What transformers' model holds in no Linear (quantized or skipped) and no Embedding: the experts and the
    # routers (MixtralTopKRouter's own weight), all float32.
    modules = dict(built.named_modules())
    unlinear = sum(p.numel() * p.element_size() for name, p in built.named_parameters() if p.dim() >= 2
                   and not isinstance(modules[name.rpartition(".")[0]], (torch.nn.Linear, torch.nn.Embedding)))
    assert unlinear > sum(p.numel() * 4 for p in experts.values())
    assert f"and weights in no Linear layer ({format_bytes(unlinear)}, such as " in said, (said, unlinear)
    assert "experts.gate_up_proj" in said or "experts.down_proj" in said, said
