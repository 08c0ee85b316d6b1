"""peft24: peft 0.22 methods past those test_peft23 checks, each built with the installed peft on a tiny seeded Llama
and saved untouched (get_peft_model(...).save_pretrained), then after a few AdamW steps:
- TinyLoRA: tinylora_A / tinylora_B (the base weight's SVD) and tinylora_P (a seeded projection) are buffers peft
  never trains, yet read "normal", still at init, so a trained adapter was "initialization" with checkpoint-at-init;
  its trainable tinylora_v starts at zero (init_weights true: a vector of a few values was "too few values to tell")
  or as torch.empty left it (false: whatever the memory held, "trained" or "initialization" by chance).
- P-tuning and prefix tuning with prefix_projection save their encoder's output, CPT, prompt tuning's TEXT and
  SAMPLE_VOCAB inits and trainable tokens a copy of the base model's embeddings: each read as a normal init, "at
  init" even after training.
- Llama-Adapter (adaption prompt): diff-keys against its own base called its two tensors and every base weight
  "unknown: these weights will not load", worst severity error; its adaption_gate starts at zero.
- Polytropon's poly_lora_B starts at zero: untouched, each was "the whole weight matrix is zero".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import json_report, run_json

TARGETS = ["q_proj", "v_proj"]


def _llama(hidden: int = 32) -> Any:
    import transformers

    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=32))


def _save(out: Path, config: Any, steps: int = 0, **forward: Any) -> Path:
    """An adapter of `config` on the tiny Llama, saved after `steps` AdamW steps (lr 1e-2) on random tokens."""
    from peft import get_peft_model

    torch.manual_seed(1)
    model = get_peft_model(_llama(), config)
    if steps:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(steps):
            ids = torch.randint(0, 64, (2, 8))
            model(input_ids=ids, labels=ids, **forward).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.save_pretrained(str(out))
    return out


def _stats(adapter: Path) -> tuple[dict[str, dict[str, Any]], list[str], str]:
    """inspect --stats --json: each tensor's init by its name's last part(s), the finding codes, the state."""
    data = json_report("inspect", str(adapter), "--stats")
    inits = {t["name"].removeprefix("base_model.model.model.layers.0.self_attn."): t["init"] for t in data["tensors"]
             if t["init"] is not None}  # (PaCA's integer paca_indices have none)
    return inits, [f["code"] for f in data["findings"]], data["weights"]["state"]


def _tinylora(**extra: Any) -> Any:
    from peft import TinyLoraConfig

    return TinyLoraConfig(r=2, u=64, target_modules=TARGETS, **extra)


def test_tinylora_buffers_are_never_judged_and_its_vector_starts_at_zero(tmp_path: Path) -> None:
    """Untouched: the SVD factors and the projection are frozen buffers ("undetermined", out of the share), the vector
    at zero; trained, the vector is "trained" and the adapter no longer reads "checkpoint-at-init"."""
    inits, codes, _ = _stats(_save(tmp_path / "untouched", _tinylora()))
    for part in ("tinylora_A", "tinylora_B", "tinylora_P"):
        init = inits[f"q_proj.{part}"]
        assert init["label"] == "undetermined" and init["at_init"] is None, init
        assert init["reason"].endswith("a buffer peft never trains: nothing to judge"), init
        assert init["expected"]["params"]["frozen"] is True
    assert "truncated SVD (√S·Vᵀ)" in inits["q_proj.tinylora_A"]["reason"]
    vectors = [init for name, init in inits.items() if name.startswith("base_model.tinylora_v.")]
    assert len(vectors) == 2 and all(v["label"] == "zeros" and v["at_init"] is True for v in vectors), vectors
    assert "trained" not in {init["label"] for init in inits.values()}

    inits, codes, state = _stats(_save(tmp_path / "trained", _tinylora(), steps=3))
    vectors = [init for name, init in inits.items() if name.startswith("base_model.tinylora_v.")]
    assert all(v["label"] == "trained" and v["at_init"] is False for v in vectors), vectors
    assert "checkpoint-at-init" not in codes and state != "initialization", (codes, state)


def test_tinylora_with_init_weights_false_is_undetermined_not_trained(tmp_path: Path) -> None:
    """init_weights=False leaves tinylora_v as torch.empty made it: no init to compare with, said so."""
    inits, _, state = _stats(_save(tmp_path / "false", _tinylora(init_weights=False)))
    vectors = [init for name, init in inits.items() if name.startswith("base_model.tinylora_v.")]
    assert vectors and all(v["label"] == "undetermined" and v["at_init"] is None for v in vectors), vectors
    for vector in vectors:
        assert vector["reason"].startswith("torch.empty (never initialized: whatever the memory held) "
                                           "(adapter_config.json init_weights=false"), vector
        assert vector["reason"].endswith("whether it trained is not judged from the adapter alone")
        assert vector["expected"]["params"]["uninitialized"] is True
    assert "trained" not in {init["label"] for init in inits.values()} and state != "trained"


def test_tinylora_uniform_vector_is_expected_at_its_bound(tmp_path: Path) -> None:
    """init_weights="uniform": tinylora_v U(±init_v_bound), still so untouched."""
    inits, _, _ = _stats(_save(tmp_path / "uniform", _tinylora(init_weights="uniform", init_v_bound=0.05)))
    vectors = [init for name, init in inits.items() if name.startswith("base_model.tinylora_v.")]
    assert vectors and {v["expected"]["label"] for v in vectors} == {"uniform"}, vectors
    assert {v["expected"]["params"]["bound"] for v in vectors} == {0.05}
    assert "trained" not in {v["label"] for v in vectors}


def _prompt_config(kind: str) -> Any:
    import peft

    causal = "CAUSAL_LM"
    return {
        "p_tuning": lambda: peft.PromptEncoderConfig(task_type=causal, num_virtual_tokens=4, encoder_hidden_size=16),
        "prefix_projection": lambda: peft.PrefixTuningConfig(task_type=causal, num_virtual_tokens=4,
                                                             prefix_projection=True, encoder_hidden_size=16),
        "cpt": lambda: peft.CPTConfig(task_type=causal, cpt_token_ids=[1, 2, 3, 4], cpt_mask=[1, 1, 1, 1],
                                      cpt_tokens_type_mask=[1, 2, 3, 4]),
        "sample_vocab": lambda: peft.PromptTuningConfig(task_type=causal, num_virtual_tokens=4,
                                                        prompt_tuning_init="SAMPLE_VOCAB"),
        "trainable_tokens": lambda: peft.TrainableTokensConfig(token_indices=[1, 2, 3],
                                                               target_modules=["embed_tokens"]),
    }[kind]()


@pytest.mark.parametrize(("kind", "origin"), [
    ("p_tuning", "the prompt encoder's output"), ("prefix_projection", "the prefix projection's output"),
    ("cpt", "the base model's embeddings of cpt_token_ids"), ("sample_vocab", "the base model's token embeddings"),
    ("trainable_tokens", "the base model's embedding rows of those tokens")])
def test_prompt_embeddings_computed_or_copied_from_the_base_are_undetermined(tmp_path: Path, kind: str,
                                                                             origin: str) -> None:
    """These were a normal init "still at init" untouched and trained alike (P-tuning's trained embeddings moved by
    half their size): their values are an encoder's output or the base model's, which the adapter does not hold."""
    for steps in (0, 3):
        inits, codes, state = _stats(_save(tmp_path / f"{kind}{steps}", _prompt_config(kind), steps=steps))
        (init,) = inits.values()
        assert init["label"] == "undetermined" and init["at_init"] is None, init
        assert origin in init["reason"] and init["reason"].endswith("not judged from the adapter alone"), init
        assert origin in init["expected"]["params"]["derived_from"]
        assert "checkpoint-at-init" not in codes and state == "unknown", (codes, state)


def test_random_prompt_tuning_is_expected_at_its_embedding_s_normal(tmp_path: Path) -> None:
    """prompt_tuning_init RANDOM: the virtual tokens' nn.Embedding, normal(0, 1), confident (not a guess)."""
    from peft import PromptTuningConfig

    inits, _, _ = _stats(_save(tmp_path / "random", PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=16)))
    init = inits["prompt_embeddings"]
    assert init["expected"]["label"] == "normal" and init["expected"]["params"] == {"mean": 0.0, "std": 1.0}, init
    assert init["expected"]["confident"] is True and init["at_init"] is True


def _adaption(hidden: int = 32) -> Any:
    from peft import AdaptionPromptConfig

    return AdaptionPromptConfig(task_type="CAUSAL_LM", adapter_len=4, adapter_layers=1)


def test_a_llama_adapter_fits_its_base_and_not_a_wider_one(tmp_path: Path) -> None:
    """Against its own base: each key was "unknown" (error, exit 1). Now its two tensors are a Llama-Adapter's on
    self_attn, the base weights the base's, exit 0; against a base 48 wide (PeftModel.from_pretrained raises a size
    mismatch) the prompt is an error."""
    from peft import PeftModel

    adapter = _save(tmp_path / "adapter", _adaption())
    for hidden in (32, 48):
        _llama(hidden).save_pretrained(tmp_path / f"base{hidden}")
    code, data = run_json("diff-keys", str(adapter), str(tmp_path / "base32"))
    assert code == 0 and data["worst_severity"] == "info", data
    assert {(e["reason"], e["severity"]) for e in data["unexpected"] + data["missing"]} == {
        ("adapter", "info"), ("adapter-base", "info")}, data
    details = {e["name"].rpartition(".")[2]: e["detail"] for e in data["unexpected"]}
    assert details == {"adaption_prompt": "Llama-Adapter (adaption_prompt) on model.layers.0.self_attn",
                       "adaption_gate": "Llama-Adapter (adaption_gate) on model.layers.0.self_attn"}
    assert "Llama-Adapter on 1 module, 1 of them in B with shapes that fit" in data["notes"][0]

    with pytest.raises(RuntimeError, match="size mismatch"):
        PeftModel.from_pretrained(_llama(48), str(adapter))
    code, data = run_json("diff-keys", str(adapter), str(tmp_path / "base48"))
    assert code == 1, data
    errors = {e["detail"] for e in data["unexpected"] if e["severity"] == "error"}
    assert errors == {"Llama-Adapter on model.layers.0.self_attn: adaption_prompt 1×4×32 is 32 wide, "
                      "model.layers.0.self_attn.q_proj.weight (48×48 in B) reads 48 input features: an adapter for "
                      "another model size"}, data


def test_a_llama_adapter_s_gate_starts_at_zero(tmp_path: Path) -> None:
    """adaption_gate zero and adaption_prompt normal(0, 1), both peft's own: untouched at init, the gate "trained"
    once it moved."""
    inits, _, _ = _stats(_save(tmp_path / "untouched", _adaption()))
    assert inits["adaption_gate"]["expected"]["label"] == "zeros" and inits["adaption_gate"]["label"] == "zeros"
    assert inits["adaption_prompt"]["expected"]["params"] == {"mean": 0.0, "std": 1.0}
    assert inits["adaption_prompt"]["at_init"] is True
    inits, _, _ = _stats(_save(tmp_path / "trained", _adaption(), steps=3))
    assert inits["adaption_gate"]["label"] == "trained", inits


def _zero_hints(adapter: Path) -> set[str]:
    """The hints of inspect --stats' all-zero findings."""
    return {f["hint"] for f in json_report("inspect", str(adapter), "--stats")["findings"] if f["code"] == "all-zero"}


def test_a_polytropon_adapter_s_zero_lora_b_is_said_to_be_at_its_init(tmp_path: Path) -> None:
    """poly_lora_B starts at zero as LoRA's lora_B: untouched it was "a layer that was never initialized or was
    zeroed"; now the adapter still at its initialization, as an untouched LoRA's lora_B."""
    from peft import PolyConfig

    config = PolyConfig(task_type="CAUSAL_LM", n_tasks=2, target_modules=TARGETS)
    inits, codes, state = _stats(_save(tmp_path / "untouched", config))
    assert _zero_hints(tmp_path / "untouched") == {"a PEFT adapter still at its initialization (peft's Polytropon "
                                                   "starts poly_lora_B at zero): it changes nothing; saved before "
                                                   "training, or its updates were lost"}
    assert inits["q_proj.poly_lora_B"]["expected"]["label"] == "zeros"
    assert inits["q_proj.poly_lora_B"]["at_init"] is True
    inits, codes, _ = _stats(_save(tmp_path / "trained", config, steps=3, task_ids=torch.zeros(2, dtype=torch.long)))
    assert inits["q_proj.poly_lora_B"]["label"] == "trained" and inits["q_proj.poly_lora_B"]["at_init"] is False


def test_an_x_lora_adapter_s_classifier_is_an_adapter_s_own(tmp_path: Path) -> None:
    """X-LoRA saves its classifier (`base_model.internal_xlora_classifier.layers.0`) beside the LoRA adapters it mixes
    (subfolders): against its base each key and every base weight was "unknown" (error); against a base 48 wide its
    classifier (32 wide) is an error."""
    from peft import LoraConfig, XLoraConfig, get_peft_model

    adapters = {}
    for index in range(2):
        torch.manual_seed(5 + index)
        get_peft_model(_llama(), LoraConfig(r=2, target_modules=TARGETS, init_lora_weights="gaussian")) \
            .save_pretrained(str(tmp_path / f"lora{index}"))
        adapters[str(index)] = str(tmp_path / f"lora{index}")
    base = _llama()
    base.config.use_cache = False  # X-LoRA refuses a model that caches
    torch.manual_seed(1)
    get_peft_model(base, XLoraConfig(task_type="CAUSAL_LM", hidden_size=32, adapters=adapters, xlora_depth=1)) \
        .save_pretrained(str(tmp_path / "xlora"))
    for hidden in (32, 48):
        _llama(hidden).save_pretrained(tmp_path / f"base{hidden}")

    code, data = run_json("diff-keys", str(tmp_path / "xlora"), str(tmp_path / "base32"))
    assert code == 0 and data["worst_severity"] == "info", data
    assert {e["detail"] for e in data["unexpected"]} == {
        "X-LoRA's classifier (it weighs the LoRA adapters saved in the adapter's subfolders), not a weight of B"}
    assert {(e["reason"], e["severity"]) for e in data["missing"]} == {("adapter-base", "info")}
    assert data["notes"][0].startswith("A is a PEFT X-LoRA adapter: its classifier here")
    code, data = run_json("diff-keys", str(tmp_path / "xlora"), str(tmp_path / "base48"))
    assert code == 1 and {e["severity"] for e in data["unexpected"]} == {"error"}, data
    detail = data["unexpected"][0]["detail"]
    assert "reads hidden states 32 wide, but B's model.embed_tokens.weight is 48 wide" in detail, detail
    inits, _, _ = _stats(tmp_path / "xlora")
    assert "trained" not in {init["label"] for init in inits.values()}, inits


def _adamss(out: Path, trained: bool) -> Path:
    """An AdaMSS adapter as peft 0.22 saves it on the tiny Llama's q_proj (r=8, num_subspaces=2, its default
    init_weights "orthogonal"): the frozen projection adamss_newB (8 × 32), each subspace's adamss_A.<i> (1 × 8) and
    adamss_B.<i> (16 × 1, zero until trained). Written here: peft builds AdaMSS only with scikit-learn (KMeans), which
    the test environment lacks; names, shapes and config are those peft wrote where it was installed."""
    import json

    from safetensors.torch import save_file

    out.mkdir()
    generator = torch.Generator().manual_seed(0)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj."
    tensors = {f"{prefix}adamss_newB": torch.linalg.qr(torch.randn(32, 8, generator=generator))[0].T.contiguous()}
    for index in range(2):
        tensors[f"{prefix}adamss_A.{index}"] = torch.nn.functional.normalize(torch.randn(1, 8, generator=generator))
        tensors[f"{prefix}adamss_B.{index}"] = (0.02 * torch.randn(16, 1, generator=generator) if trained
                                                 else torch.zeros(16, 1))
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps({
        "auto_mapping": {"base_model_class": "LlamaForCausalLM",
                         "parent_library": "transformers.models.llama.modeling_llama"},
        "base_model_name_or_path": None, "init_weights": "orthogonal", "num_subspaces": 2, "peft_type": "ADAMSS",
        "peft_version": "0.22.0", "r": 8, "subspace_rank": 1, "target_modules": ["q_proj"], "task_type": None}))
    return out


def test_an_adamss_adapter_s_zero_b_factors_are_its_init_and_its_projection_is_never_judged(tmp_path: Path) -> None:
    """Untouched, each adamss_B was "a layer that was never initialized or was zeroed" and adamss_newB, a buffer set
    from the base weight's SVD, "orthogonal", at init: a trained adapter read "initialization"."""
    inits, codes, state = _stats(_adamss(tmp_path / "untouched", trained=False))
    assert "trained" not in {init["label"] for init in inits.values()}, (codes, inits)
    assert _zero_hints(tmp_path / "untouched") == {
        'a PEFT adapter still at its initialization (adapter_config.json init_weights="orthogonal": AdaMSS starts '
        "adamss_B at zero): it changes nothing; saved before training, or its updates were lost"}
    assert inits["q_proj.adamss_B.0"]["expected"]["label"] == "zeros" and inits["q_proj.adamss_B.0"]["at_init"]
    assert inits["q_proj.adamss_newB"]["label"] == "undetermined"
    assert inits["q_proj.adamss_newB"]["expected"]["params"]["frozen"] is True
    assert inits["q_proj.adamss_A.0"]["expected"]["params"]["derived_from"].startswith("the base model's weight")
    inits, codes, state = _stats(_adamss(tmp_path / "trained", trained=True))
    assert inits["q_proj.adamss_B.1"]["label"] == "trained" and state == "trained", (state, inits)


@pytest.mark.parametrize(("config", "kwargs", "part", "method"), [
    ("LilyConfig", {}, "lily_B", "Lily"), ("DeloraConfig", {}, "delora_B", "DeLoRA"),
    ("PacaConfig", {}, "paca_delta", "PaCA"), ("HiraConfig", {}, "hira_B", "HiRA"),
    ("GraloraConfig", {"r": 4, "gralora_k": 2}, "gralora_B", "GraLoRA"), ("PeanutConfig", {}, "peanut_B", "PEANuT"),
    ("RandLoraConfig", {}, "randlora_lambda", "RandLora")])
def test_a_peft_method_s_zero_factor_is_its_init_not_a_layer_never_initialized(
        tmp_path: Path, config: str, kwargs: dict[str, Any], part: str, method: str) -> None:
    """Each of these methods starts one factor at zero (init_weights true): untouched, the factor was "a layer that
    was never initialized or was zeroed; it passes nothing on"."""
    import peft

    adapter = _save(tmp_path / "untouched", getattr(peft, config)(target_modules=TARGETS, **kwargs))
    assert _zero_hints(adapter) == {f"a PEFT adapter still at its initialization (peft's {method} starts {part} at "
                                    "zero): it changes nothing; saved before training, or its updates were lost"}
    inits, _, _ = _stats(adapter)
    assert "trained" not in {init["label"] for init in inits.values()}, inits


def test_tinylora_s_uninitialized_vector_holding_nan_is_still_undetermined(tmp_path: Path) -> None:
    """torch.empty's memory may hold NaN bit patterns: the vector is still "undetermined" (no init to compare with),
    and the NaN is the nan-inf finding."""
    import json

    from safetensors.torch import load_file, save_file

    adapter = _save(tmp_path / "false", _tinylora(init_weights=False))

    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    tensors["base_model.tinylora_v.0"] = torch.full((64,), float("nan"))
    tensors["base_model.tinylora_v.0"][:32] = torch.linspace(-1, 1, 32)
    save_file(tensors, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    assert json.loads((adapter / "adapter_config.json").read_text())["init_weights"] is False
    data = json_report("inspect", str(adapter), "--stats")
    (vector,) = [t["init"] for t in data["tensors"] if t["name"] == "base_model.tinylora_v.0"]
    assert vector["label"] == "undetermined" and vector["reason"].startswith("torch.empty"), vector
    assert ("nan-inf", "base_model.tinylora_v.0") in {(f["code"], f["tensor"]) for f in data["findings"]}
