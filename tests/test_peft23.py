"""peft23: peft adapters whose untrained factors inspect --stats called "trained", and PaCA's indices in diff-keys.

Each adapter is built with the installed peft (0.22) on a tiny seeded Llama and saved untouched
(get_peft_model(...).save_pretrained), then again after a few optimizer steps:
- init_lora_weights="orthogonal" draws lora_A and lora_B at rank r/2 (B·A = 0): both were "trained" untouched.
- "nora" scales each column of lora_A to unit L2 norm: lora_A was "trained" untouched.
- "mica" sets lora_B from the base weight's smallest singular vectors (and freezes it), lora_A at zero: lora_B was
  "trained" untouched, and lora_A's zero "a layer that was never initialized".
- False leaves lora_B as nn.Linear draws it (kaiming_uniform), lora_embedding_A as torch.randn: "trained" untouched.
- AdaLoRA starts lora_B at normal(0, 0.02): "trained" untouched.
- "lora_ga" sets both from the loss's gradient on the base weights: lora_A's and lora_B's verdicts were guesses.
- PaCA's paca_indices differing between two adapters compared with --values: only a relative change of column
  numbers, nothing said; against a base, "compared by count" even under --values, which reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import json_report, run_cli, run_json

TARGETS = ["q_proj", "v_proj"]


def _llama() -> Any:
    import transformers

    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=32))


def _save(out: Path, config: Any, steps: int = 0, prepare: Callable[[Any], None] | None = None) -> Path:
    """An adapter of `config` on the tiny Llama, saved after `steps` AdamW steps (lr 1e-2) on random tokens."""
    from peft import get_peft_model

    base = _llama()
    if prepare is not None:
        prepare(base)
    torch.manual_seed(1)
    model = get_peft_model(base, config)
    if steps:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(steps):
            ids = torch.randint(0, 64, (2, 8))
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.save_pretrained(str(out))
    return out


def _inits(adapter: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """inspect --stats --json: each tensor's init by its part (`q_proj.lora_B.weight`), the findings, `weights`."""
    data = json_report("inspect", str(adapter), "--stats")
    inits = {".".join(t["name"].split(".")[-3:]): t["init"] for t in data["tensors"] if t["init"] is not None}
    return inits, data["findings"], data["weights"]


def _labels(inits: dict[str, dict[str, Any]], part: str) -> set[str]:
    return {init["label"] for name, init in inits.items() if f".{part}." in f".{name}."}


def _lora(init: Any, r: int = 4, target_modules: list[str] = TARGETS, **extra: Any) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=r, target_modules=target_modules, init_lora_weights=init, **extra)


def test_an_orthogonal_adapter_saved_untouched_is_at_init_and_one_trained_is_trained(tmp_path: Path) -> None:
    """init_lora_weights="orthogonal": untouched, lora_A and lora_B were "trained" (lora_B off zero, lora_A off
    kaiming_uniform); their rank r/2 says they are where peft drew them, and a trained one's full rank says it moved."""
    inits, findings, weights = _inits(_save(tmp_path / "untouched", _lora("orthogonal")))
    assert _labels(inits, "lora_A") == _labels(inits, "lora_B") == {"undetermined"}, inits
    for init in inits.values():
        assert init["at_init"] is True
        assert init["reason"].startswith('adapter_config.json init_lora_weights="orthogonal": still at its '
                                         "initialization (rank 2 of 4: its singular values past the first 2 are ")
        assert init["expected"]["params"]["structure"] == "half_rank"
    assert [f["code"] for f in findings] == ["checkpoint-at-init"]
    assert weights["state"] == "initialization"

    inits, findings, weights = _inits(_save(tmp_path / "trained", _lora("orthogonal"), steps=5))
    assert _labels(inits, "lora_A") == _labels(inits, "lora_B") == {"trained"}, inits
    for init in inits.values():
        assert init["at_init"] is False
        assert "rank 4 (singular value 3 is " in init["reason"]
        assert init["reason"].endswith("where peft's orthogonal init leaves rank 2: it has trained")
    assert weights["state"] == "trained"


def test_an_orthogonal_adapter_saved_in_bfloat16_is_still_at_init(tmp_path: Path) -> None:
    """bfloat16 rounding lifts the rank-r/2 factors' other singular values to about 1e-3 of the largest: still at
    init, not "trained"."""
    inits, _, _ = _inits(_save(tmp_path / "bf16", _lora("orthogonal"), prepare=lambda base: base.to(torch.bfloat16)))
    assert {init["at_init"] for init in inits.values()} == {True}, inits


def test_an_orthogonal_lora_a_wider_than_the_columns_read_is_judged_on_those_read(tmp_path: Path) -> None:
    """lora_A of down_proj with 9,000 inputs: the classifier reads 8,192 of each row's columns, whose rank is r/2 as
    the whole matrix's: still at init (it was "undetermined" for want of whole rows)."""
    import transformers
    from peft import get_peft_model

    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=9000, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=32))
    torch.manual_seed(1)
    get_peft_model(base, _lora("orthogonal", target_modules=["down_proj"])).save_pretrained(str(tmp_path / "wide"))
    inits, _, _ = _inits(tmp_path / "wide")
    lora_a = inits["down_proj.lora_A.weight"]
    assert lora_a["at_init"] is True and "still at its initialization (rank 2 of 4" in lora_a["reason"], lora_a


def test_a_nora_adapter_saved_untouched_is_at_init_and_one_trained_is_trained(tmp_path: Path) -> None:
    """NoRA ("nora"): lora_A is kaiming_uniform with each column scaled to unit L2 norm; one of the two untouched
    lora_A was "trained"."""
    inits, findings, _ = _inits(_save(tmp_path / "untouched", _lora("nora")))
    assert _labels(inits, "lora_A") == {"undetermined"} and _labels(inits, "lora_B") == {"zeros"}, inits
    for name, init in inits.items():
        if ".lora_A." in f".{name}":
            assert init["at_init"] is True
            assert init["reason"].startswith('adapter_config.json init_lora_weights="nora": still at its '
                                             "initialization (32 of its 32 columns read, each at L2 norm 1 within ")
    assert "trained" not in {init["label"] for init in inits.values()}

    inits, _, _ = _inits(_save(tmp_path / "trained", _lora("nora"), steps=5))
    assert _labels(inits, "lora_A") == {"trained"}, inits
    assert all("where NoRA leaves each at 1: it has trained" in init["reason"]
               for name, init in inits.items() if ".lora_A." in f".{name}")


def test_a_nora_adapter_of_a_rank_above_the_rows_read_is_judged_by_its_columns(tmp_path: Path) -> None:
    """r = 96: 64 of lora_A's 96 rows are read, so its columns' norms come from the whole columns read instead."""
    inits, _, _ = _inits(_save(tmp_path / "untouched", _lora("nora", r=96)))
    lora_a = [init for name, init in inits.items() if ".lora_A." in f".{name}"]
    assert {init["at_init"] for init in lora_a} == {True}, lora_a
    assert all("of its 32 columns read, each at L2 norm 1 within " in init["reason"] for init in lora_a)


def test_a_mica_adapter_s_frozen_lora_b_is_undetermined_and_its_zero_lora_a_an_untrained_adapter(
        tmp_path: Path) -> None:
    """MiCA ("mica"): lora_B from the base weight's smallest singular vectors, frozen; lora_A zero. Untouched,
    lora_B was "trained" and lora_A's zero "a layer that was never initialized or was zeroed"."""
    inits, findings, data = _inits(_save(tmp_path / "untouched", _lora("mica")))
    assert _labels(inits, "lora_B") == {"undetermined"} and _labels(inits, "lora_A") == {"zeros"}, inits
    assert all("frozen there by peft: it never trains" in init["reason"]
               for name, init in inits.items() if ".lora_B." in f".{name}")
    zero = [f for f in findings if f["code"] == "all-zero"]
    assert len(zero) == 2 and all(".lora_A." in f["tensor"] for f in zero), findings
    assert zero[0]["hint"] == ('a PEFT adapter still at its initialization (adapter_config.json '
                               'init_lora_weights="mica": MiCA starts lora_A at zero): it changes nothing; saved '
                               "before training, or its updates were lost")
    assert any('init_lora_weights="mica"' in warning for warning in data["warnings"])

    inits, findings, _ = _inits(_save(tmp_path / "trained", _lora("mica"), steps=5))
    assert _labels(inits, "lora_A") == {"trained"} and _labels(inits, "lora_B") == {"undetermined"}, inits
    assert not [f for f in findings if f["code"] == "all-zero"]


def test_init_lora_weights_false_expects_lora_b_where_nn_linear_draws_it(tmp_path: Path) -> None:
    """init_lora_weights=False: peft skips its reset, lora_B stays as nn.Linear(r, out) drew it (kaiming_uniform,
    U(±1/√r)), which was "trained" against a zero expected."""
    inits, findings, _ = _inits(_save(tmp_path / "untouched", _lora(False)))
    assert "trained" not in _labels(inits, "lora_B"), inits
    for name, init in inits.items():
        if ".lora_B." in f".{name}":
            assert init["expected"]["label"] == "kaiming_uniform"
            assert init["expected"]["params"]["bound"] == pytest.approx(0.5)  # 1/√r, r = 4
            assert init["at_init"] is not False  # 128 values: at init, or too few to say
    assert "untrained-tensor" not in {f["code"] for f in findings}


def test_init_lora_weights_false_on_an_embedding_expects_peft_s_randn(tmp_path: Path) -> None:
    """On an embedding, peft draws lora_embedding_A with torch.randn and, under False, leaves it so: it was "trained"
    against the zero it holds by default."""
    inits, _, _ = _inits(_save(tmp_path / "untouched", _lora(False, target_modules=["embed_tokens"])))
    lora_a = inits["model.embed_tokens.lora_embedding_A"]
    assert lora_a["label"] == "normal" and lora_a["at_init"] is True, lora_a
    assert lora_a["expected"]["params"] == {"mean": 0.0, "std": 1.0}


def test_an_adalora_adapter_saved_untouched_is_not_trained(tmp_path: Path) -> None:
    """AdaLoRA starts lora_A and lora_B at normal(0, 0.02) and lora_E at zero: its lora_B was "trained" (taken for
    LoRA's zero lora_B) and lora_E's zero "a layer that was never initialized"."""
    from peft import AdaLoraConfig

    config = AdaLoraConfig(target_modules=TARGETS, total_step=10, init_r=4)
    inits, findings, _ = _inits(_save(tmp_path / "untouched", config))
    assert _labels(inits, "lora_B") == {"normal"} and _labels(inits, "lora_E") == {"zeros"}, inits
    assert {init["at_init"] for init in inits.values()} == {True}
    assert {f["hint"] for f in findings if f["code"] == "all-zero"} == {
        "a PEFT adapter still at its initialization (peft's AdaLoRA starts lora_E (the singular values) at zero): it "
        "changes nothing; saved before training, or its updates were lost"}

    inits, _, _ = _inits(_save(tmp_path / "trained", config, steps=5))
    assert {init["label"] for init in inits.values()} == {"trained"}, inits


def test_a_lora_ga_adapter_is_undetermined_as_the_other_data_derived_schemes(tmp_path: Path) -> None:
    """LoRA-GA ("lora_ga") sets both halves from the SVD of the loss's gradient on the base weights: what they
    started at is not in the adapter."""
    from peft import LoraGAConfig
    from peft.tuners.lora.loraga import preprocess_loraga

    config = _lora("lora_ga", lora_ga_config=LoraGAConfig())

    def estimate_gradients(base: Any) -> None:
        def train_step() -> None:
            ids = torch.randint(0, 64, (2, 8))
            base(input_ids=ids, labels=ids).loss.backward()

        preprocess_loraga(base, config, train_step)

    inits, _, weights = _inits(_save(tmp_path / "lora_ga", config, prepare=estimate_gradients))
    assert {init["label"] for init in inits.values()} == {"undetermined"}, inits
    assert all(init["reason"].startswith("lora_ga (set from the gradient of the loss on the base model's weights)")
               for init in inits.values())
    assert any('init_lora_weights="lora_ga"' in warning for warning in weights["warnings"])


def _paca(out: Path, seed: int) -> Path:
    from peft import PacaConfig, get_peft_model

    base = _llama()
    torch.manual_seed(seed)  # PaCA draws its columns at random
    get_peft_model(base, PacaConfig(r=4, target_modules=TARGETS, init_weights=False)).save_pretrained(str(out))
    return out


def test_paca_adapters_with_other_indices_are_said_to_differ_under_values(tmp_path: Path) -> None:
    """Two PaCA adapters that picked other input columns: --values reported the indices' relative change (a
    difference of column numbers) and said nothing; the same adapter twice gets no note."""
    from safetensors.torch import load_file

    first, second = _paca(tmp_path / "a", 1), _paca(tmp_path / "b", 2)
    indices = {seed: {name.split(".")[-2]: tensor.tolist() for name, tensor in
                      load_file(str(folder / "adapter_model.safetensors")).items() if name.endswith("paca_indices")}
               for seed, folder in ((1, first), (2, second))}
    assert indices[1]["q_proj"] != indices[2]["q_proj"]

    data = json_report("diff-keys", str(first), str(second), "--values")
    notes = [note for note in data["notes"] if note.startswith("PaCA's paca_indices differ in 2 modules (")]
    assert len(notes) == 1, data["notes"]
    shared = len(set(indices[1]["q_proj"]) & set(indices[2]["q_proj"]))
    q_columns = (f"base_model.model.model.layers.0.self_attn.q_proj: A trains input columns "
                 f"{', '.join(map(str, indices[1]['q_proj']))}; B {', '.join(map(str, indices[2]['q_proj']))}; "
                 f"{shared} of 4 the same")
    assert q_columns in notes[0]
    assert notes[0].endswith("the two adapters change different inputs there and do not mean the same thing; their "
                             "paca_delta values are compared column by column over different inputs, and the "
                             "indices' own difference is one of column numbers")

    result = run_cli("diff-keys", str(first), str(second), "--values")
    assert "PaCA's paca_indices differ in 2 modules" in " ".join(result.stdout.split())

    data = json_report("diff-keys", str(first), str(_paca(tmp_path / "again", 1)), "--values")
    assert not [note for note in data["notes"] if "paca_indices" in note], data["notes"]


def test_a_paca_adapter_s_indices_past_its_base_s_input_features_are_an_error_under_values(tmp_path: Path) -> None:
    """PaCA on down_proj of a Llama 64 wide inside, against one 32 wide inside: paca_delta (32 × 4) fits, and
    PeftModel.from_pretrained loads the indices 45 and 48, which its forward then raises on. Headers alone cannot
    tell (info, "compared by count"); --values read them and said nothing of it (exit 0)."""
    import transformers
    from peft import PacaConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file

    def llama(intermediate: int) -> Any:
        torch.manual_seed(0)
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=intermediate, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32))

    base = llama(64)
    torch.manual_seed(3)  # draws down_proj's columns 1, 19, 45, 48
    adapter = tmp_path / "paca"
    get_peft_model(base, PacaConfig(r=4, target_modules=["down_proj", "q_proj"], init_weights=False)) \
        .save_pretrained(str(adapter))
    llama(32).save_pretrained(tmp_path / "narrow")
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    assert saved["base_model.model.model.layers.0.mlp.down_proj.paca_indices"].tolist() == [1, 19, 45, 48]
    loaded = PeftModel.from_pretrained(llama(32), str(adapter))
    with pytest.raises((IndexError, RuntimeError)):
        loaded(input_ids=torch.tensor([[1, 2, 3]]))

    code, data = run_json("diff-keys", str(adapter), str(tmp_path / "narrow"))
    assert code == 0 and "compared by count, not value: a header holds no values" in data["notes"][0]

    code, data = run_json("diff-keys", str(adapter), str(tmp_path / "narrow"), "--values")
    assert code == 1
    assert [entry["detail"] for entry in data["unexpected"] if entry["severity"] == "error"] == [
        "PaCA on model.layers.0.mlp.down_proj: paca_indices names input columns 45, 48, outside the 32 of "
        "model.layers.0.mlp.down_proj.weight (32×32 in B): PeftModel.from_pretrained loads it, and its forward and "
        "merge_and_unload raise (index out of bounds)"]
    assert "(PaCA's paca_indices, the input columns it trains, were read: 1 of 2 modules name a column outside " \
        "their layer's in_features" in data["notes"][0]

    llama(64).save_pretrained(tmp_path / "own")
    code, data = run_json("diff-keys", str(adapter), str(tmp_path / "own"), "--values")
    assert code == 0, data["unexpected"]
    assert "(PaCA's paca_indices, the input columns it trains, were read: each of 2 modules names columns within " \
        "its layer's in_features)" in data["notes"][0]
