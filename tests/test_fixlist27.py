"""fixlist27: small left-outs.

- plan-devices --kv-cache without --seq-len on a pure Mamba / Mamba-2 config was refused ("needs --seq-len: config.json
  writes no context length ... MambaConfig keeps none"), though no layer caches anything per token: it is now sized
  for any length, and says so; a hybrid (Jamba) still takes its context length. RWKV (refused, with --seq-len or
  not) and xLSTM (sized as 32 layers of keys and values) are told apart as recurrent too, RWKV's state measured.
- diff-keys of two PEFT adapters against each other (an IA3 adapter as A, a LoRA one as B) called B's LoRA tensors
  "a weight of the base model" and said "0 of them in B ... it was made for another model", without a word that B
  is itself an adapter: the note now says what the pair is and to compare each against its base.
- diff-keys of a whole PEFT-wrapped model (get_peft_model(...).state_dict(): `.base_layer.weight` beside
  `lora_A.default`) against its own saved adapter left A's base weights "unknown", errors, with no note: they are
  the base's ("adapter-base", info), and the note says what the pair is (merge_and_unload, or compare with the base).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import json_report, run_cli, run_json


def _state_bytes(cache: Any) -> int:
    """Bytes of the conv and SSM states transformers' cache holds after a real forward (each layer keeps them in
    dicts of tensors)."""
    total = 0
    for layer in cache.layers:
        for name in ("conv_states", "recurrent_states"):
            held = getattr(layer, name, None)
            for tensor in (held.values() if isinstance(held, dict) else [held]):
                if isinstance(tensor, torch.Tensor):
                    total += tensor.numel() * tensor.element_size()
    return total


@pytest.mark.parametrize("kind", ["mamba", "mamba2"])
def test_kv_cache_of_a_pure_state_space_model_needs_no_seq_len(tmp_path: Path, kind: str) -> None:
    import transformers

    torch.manual_seed(0)
    if kind == "mamba":
        config = transformers.MambaConfig(vocab_size=64, hidden_size=32, state_size=8, num_hidden_layers=3,
                                          expand=2, conv_kernel=4, architectures=["MambaForCausalLM"])
        model = transformers.MambaForCausalLM(config).eval()
    else:
        config = transformers.Mamba2Config(vocab_size=64, hidden_size=32, state_size=8, num_hidden_layers=2,
                                           num_heads=4, head_dim=16, n_groups=1, expand=2,
                                           architectures=["Mamba2ForCausalLM"])
        model = transformers.Mamba2ForCausalLM(config).eval()
    # the oracle: the states transformers' cache holds for 2 sequences, the same after 3 tokens as after 9 (the
    # output's `cache`; transformers 5.17 names it `cache_params`)
    with torch.no_grad():
        outputs = {length: model(input_ids=torch.randint(0, 64, (2, length)), use_cache=True) for length in (3, 9)}
    held = {length: _state_bytes(output["cache"] if "cache" in output else output["cache_params"])
            for length, output in outputs.items()}
    assert held[3] == held[9] > 0, held
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    args = ("plan-devices", str(tmp_path / "config.json"), "--gpu", "1GB", "--kv-cache", "--batch", "2",
            "--dtype", "fp32")
    kv = json_report(*args)["kv_cache"]
    assert kv["seq_len"] is None and kv["total_bytes"] == 0 and kv["state_bytes"] == held[3], kv
    assert kv["fits_on_gpus"] is True
    assert "no --seq-len is needed" in kv["note"], kv
    result = run_cli(*args)
    text = " ".join(result.stdout.split())
    assert result.exit_code == 0, result.stderr
    assert "KV cache: none for batch 2 x any length (no KV cache:" in text, text
    assert "needs --seq-len" not in result.stderr
    # --seq-len still given: as before, for that length
    kv = json_report(*args, "--seq-len", "7")["kv_cache"]
    assert kv["seq_len"] == 7 and kv["state_bytes"] == held[3] and "no --seq-len" not in kv["note"], kv


def test_kv_cache_of_a_hybrid_still_takes_a_length(tmp_path: Path) -> None:
    """Jamba's attention layer caches per token: its length is still its context length (JambaConfig's 262,144)."""
    import transformers

    config = transformers.JambaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=48, attn_layer_period=2,
                                      attn_layer_offset=1, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2,
                                      num_experts=1, max_position_embeddings=1000, architectures=["JambaForCausalLM"])
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    kv = json_report("plan-devices", str(tmp_path / "config.json"), "--gpu", "1GB", "--kv-cache",
                     "--dtype", "fp32")["kv_cache"]
    # 1 attention layer x 2 (keys, values) x 2 KV heads x 8 values x 4 bytes x 1,000 tokens
    assert kv["seq_len"] == 1000 and kv["total_bytes"] == 128 * 1000 and "--seq-len" not in kv["note"], kv


def test_estimate_without_a_length_is_refused_where_a_layer_attends() -> None:
    from weightdoctor.errors import UsageError
    from weightdoctor.plan_devices import caches_per_token, estimate_kv_cache

    llama = {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "hidden_size": 32}
    assert caches_per_token(llama)
    with pytest.raises(UsageError, match="needs --seq-len"):
        estimate_kv_cache(llama, "fp16", 1, None)


def _tiny_llama() -> Any:
    import transformers

    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2))


@pytest.fixture(scope="module")
def peft_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny Llama, a LoRA and an IA3 adapter of it as peft (0.21) saves them, the whole LoRA-wrapped model's
    state_dict, and the base's own file."""
    import peft
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("fixlist27")
    _tiny_llama().save_pretrained(root / "base")
    lora = peft.get_peft_model(_tiny_llama(), peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(root / "lora")
    save_file({k: v.contiguous() for k, v in lora.state_dict().items()}, root / "wrapped.safetensors")
    ia3 = peft.get_peft_model(_tiny_llama(), peft.IA3Config(target_modules=["k_proj", "down_proj"],
                                                            feedforward_modules=["down_proj"]))
    ia3.save_pretrained(root / "ia3")
    return {"base": root / "base" / "model.safetensors", "lora": root / "lora" / "adapter_model.safetensors",
            "ia3": root / "ia3" / "adapter_model.safetensors", "wrapped": root / "wrapped.safetensors"}


@pytest.mark.parametrize(("a", "b", "said"), [("ia3", "lora", "A IA3 on 4 modules, B 8 adapter tensors"),
                                              ("lora", "ia3", "A LoRA (rank 4) on 4 modules, B 4 adapter tensors")])
def test_two_adapters_against_each_other_are_said_to_be_two_adapters(
        peft_files: dict[str, Path], a: str, b: str, said: str) -> None:
    code, data = run_json("diff-keys", str(peft_files[a]), str(peft_files[b]))
    assert code == 1 and data["worst_severity"] == "error", data
    note = " ".join(data["notes"])
    assert note.startswith(f"A and B are both PEFT adapters: {said} under base_model. and no base weights"), note
    assert "compare each against its base" in note and "made for another model" not in note, note
    for key in data["missing"]:  # B's own tensors: no longer "a weight of the base model"
        assert (key["reason"], key["severity"]) == ("adapter", "error") and "B's own adapter" in key["detail"], key
    result = run_cli("diff-keys", str(peft_files[a]), str(peft_files[b]))
    assert "A and B are both PEFT adapters" in " ".join(result.stdout.split()), result.stdout


def test_an_adapter_against_its_base_keeps_its_own_note(peft_files: dict[str, Path]) -> None:
    """No false note: the LoRA against the model it adapts loads (its modules fit)."""
    code, data = run_json("diff-keys", str(peft_files["lora"]), str(peft_files["base"]))
    note = " ".join(data["notes"])
    assert note.startswith("A is a PEFT adapter: LoRA (rank 4) on 4 modules, 4 of them in B with shapes that fit")
    assert "both PEFT adapters" not in note and "PEFT-wrapped" not in note, note
    assert {key["reason"] for key in data["missing"]} == {"adapter-base"}, data["missing"]


def test_a_peft_wrapped_model_against_its_adapter_says_what_the_pair_is(peft_files: dict[str, Path]) -> None:
    from safetensors import safe_open

    with safe_open(peft_files["wrapped"], "pt") as handle:
        names = list(handle.keys())
    base = [name for name in names if ".lora_" not in name]
    assert any(".base_layer." in name for name in base) and len(base) == 21, names
    code, data = run_json("diff-keys", str(peft_files["wrapped"]), str(peft_files["lora"]))
    note = " ".join(data["notes"])
    assert note.startswith("A is a whole PEFT-wrapped model, the base with its adapter in it, and B a saved PEFT "
                           "adapter: 21 weights of A's are the base's (4 adapted layers under .base_layer.)"), note
    assert "merge_and_unload" in note and "compare B against the base" in note, note
    reasons = {key["name"]: (key["reason"], key["severity"]) for key in data["unexpected"]}
    assert {reasons[name] for name in base} == {("adapter-base", "info")}, reasons
    assert not any(reason == "unknown" for reason, _ in reasons.values()), reasons
    # A's LoRA tensors still get the rename that maps them onto B's (peft's save drops the adapter's name)
    assert [rename["pattern"] for rename in data["suggested_renames"]] == [r"\.default\."], data["suggested_renames"]
    assert data["matched_after_renames"] == 8
    result = run_cli("diff-keys", str(peft_files["wrapped"]), str(peft_files["lora"]))
    assert "A is a whole PEFT-wrapped model" in " ".join(result.stdout.split())


def test_a_peft_wrapped_model_against_its_base_gets_no_adapter_pair_note(peft_files: dict[str, Path]) -> None:
    code, data = run_json("diff-keys", str(peft_files["wrapped"]), str(peft_files["base"]))
    note = " ".join(data["notes"])
    assert "saved PEFT adapter" not in note and "both PEFT adapters" not in note, note


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_rwkv_keeps_a_state_and_no_keys_and_values(tmp_path: Path, dtype: str) -> None:
    """transformers lays RWKV's layers out as full attention (get_layer_types_and_kwargs): --kv-cache was refused,
    with --seq-len or not ("config has no num_attention_heads that transformers' RwkvConfig reads"). Its cache is
    the `state` it returns, the same after 3 tokens as after 9."""
    import transformers

    torch.manual_seed(0)
    config = transformers.RwkvConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, attention_hidden_size=32,
                                     intermediate_size=64, architectures=["RwkvForCausalLM"])
    model = transformers.RwkvForCausalLM(config).eval().to(torch.float32 if dtype == "fp32" else torch.bfloat16)
    with torch.no_grad():
        held = {length: sum(t.numel() * t.element_size() for t in model(
            input_ids=torch.randint(0, 64, (2, length)), use_cache=True).state) for length in (3, 9)}
    assert held[3] == held[9] > 0, held
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    args = ("plan-devices", str(tmp_path / "config.json"), "--gpu", "1GB", "--kv-cache", "--batch", "2",
            "--dtype", dtype)
    for extra in ((), ("--seq-len", "5")):
        kv = json_report(*args, *extra)["kv_cache"]
        assert (kv["total_bytes"], kv["num_layers"], kv["state_bytes"]) == (0, 0, held[3]), kv
        assert kv["note"].startswith("no KV cache: all 2 layers keep a recurrent state"), kv
        assert kv["seq_len"] == (5 if extra else None), kv


def test_xlstm_is_not_sized_as_attention_layers(tmp_path: Path) -> None:
    """With --seq-len, xLSTM (no attention at all) was sized as 32 layers x 4 KV heads of keys and values; without,
    refused for want of a length. (transformers 5.25 does not run a default xLSTM, on CPU or meta: its state stays
    unsized, and says so.)"""
    import transformers

    config = transformers.xLSTMConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_heads=4,
                                      architectures=["xLSTMForCausalLM"])
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    args = ("plan-devices", str(tmp_path / "config.json"), "--gpu", "1GB", "--kv-cache", "--dtype", "fp32")
    for extra in ((), ("--seq-len", "7")):
        kv = json_report(*args, *extra)["kv_cache"]
        assert (kv["total_bytes"], kv["num_layers"], kv["bytes_per_token"]) == (0, 0, 0), kv
        assert kv["note"].startswith("no KV cache: all 2 layers keep a recurrent state of fixed size per sequence "
                                     "instead (not counted)"), kv
        assert kv["state_bytes"] is None and kv["seq_len"] == (7 if extra else None), kv
