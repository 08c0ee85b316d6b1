"""Round 17 of the common mistakes users make: an ML engineer's bad day with what transformers 5 does at load time.

Covers: a Mixtral checkpoint in the per-expert layout transformers 4 wrote (`block_sparse_moe.experts.N.w1.weight`,
what save_pretrained still writes) whose experts of one layer were renumbered (0, 1, 3, 9: an expert-pruning script
that kept the old numbers), which from_pretrained's WeightConverter stacks in the order of their numbers without a
word, expert 3 in slot 2: diff-keys --model-class said "A loads into B cleanly" (transformers 4 and load_state_dict
named experts.2 missing); one expert's w3 lost from such a checkpoint, where from_pretrained raises and diff-keys
said "shape: the architecture differs" with the converter's bare "Sizes of tensors must match", naming no key; a
LoRA adapter of a Qwen3-MoE saved per expert module (`mlp.experts.3.gate_proj.lora_A`, as peft wrote it under
transformers 4) checked against Qwen3MoeForCausalLM, said to target modules "B does not have: the adapter's weights
for it are dropped" (an error on every factor), where the installed peft converts them onto the fused experts and
the merged weights equal the per-expert update; the renumbered checkpoint against the original's folder (two
checkpoints, no --model-class), whose tables listed `model.layers.*.block_sparse_moe.experts.*.w1.weight` as both
missing and unexpected, naming neither the layer nor the expert.
Checked and already right (oracle tests here): the per-expert save_pretrained layout of Mixtral / Qwen2-MoE against
its fused class; a LLaVA checkpoint in the transformers 4.4x layout (`language_model.model.`, `vision_tower.`,
`multi_modal_projector.`) and a Qwen2-VL fine-tune in its old layout (`model.layers`, `visual.`), both loading equal
to the original through transformers' conversion mapping.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import json_report, run_cli, run_subprocess


def _tiny_mixtral() -> Any:
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                           max_position_embeddings=64)
    return MixtralForCausalLM(config).eval()


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A seeded tiny Mixtral saved by save_pretrained (per-expert keys, as transformers 4 wrote them), and its
    state dict as the model holds it (experts fused per projection)."""
    model = _tiny_mixtral()
    folder = tmp_path_factory.mktemp("mixtral") / "mixtral"
    model.save_pretrained(folder)
    return folder, {name: tensor.clone() for name, tensor in model.state_dict().items()}


def _edited_copy(source: Path, destination: Path, edit: Any) -> Path:
    """A copy of the model folder `source` whose model.safetensors went through `edit(state_dict)`."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(source, destination)
    weights = load_file(destination / "model.safetensors")
    edit(weights)
    save_file(weights, str(destination / "model.safetensors"), metadata={"format": "pt"})
    return destination


_LAYER_1 = "model.layers.1.block_sparse_moe.experts"


def _renumber_expert_2_as_9(weights: dict[str, Any]) -> None:
    for projection in ("w1", "w2", "w3"):
        weights[f"{_LAYER_1}.9.{projection}.weight"] = weights.pop(f"{_LAYER_1}.2.{projection}.weight")


def test_renumbered_experts_are_said_to_load_into_the_wrong_slots(mixtral: tuple[Path, dict[str, Any]],
                                                                 tmp_path: Path) -> None:
    import torch
    from transformers import MixtralForCausalLM

    folder, original = mixtral
    assert f"{_LAYER_1}.2.w1.weight" in _keys(folder)  # save_pretrained wrote the per-expert layout
    renumbered = _edited_copy(folder, tmp_path / "renumbered", _renumber_expert_2_as_9)
    # The library: it loads without a word, expert 3 in slot 2 and expert 9 in slot 3.
    loaded, info = MixtralForCausalLM.from_pretrained(renumbered, output_loading_info=True)
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    fused = loaded.state_dict()["model.layers.1.mlp.experts.gate_up_proj"]
    was = original["model.layers.1.mlp.experts.gate_up_proj"]
    assert torch.equal(fused[2], was[3]) and torch.equal(fused[3], was[2]) and not torch.equal(fused[2], was[2])

    result = run_cli("diff-keys", str(renumbered), "--model-class", "MixtralForCausalLM", "--json")
    assert result.exit_code == 1, result.stdout  # was 0, "A loads into B cleanly"
    report = json_report("diff-keys", str(renumbered), "--model-class", "MixtralForCausalLM")
    said = {issue["name"]: issue for issue in report["missing"]}
    assert set(said) == {"model.layers.1.mlp.experts.gate_up_proj", "model.layers.1.mlp.experts.down_proj"}
    gate_up = said["model.layers.1.mlp.experts.gate_up_proj"]
    assert (gate_up["reason"], gate_up["severity"]) == ("expert-numbering", "error")
    assert f"{_LAYER_1}.*.w1.weight and {_LAYER_1}.*.w3.weight hold experts 0, 1, 3, 9" in gate_up["detail"]
    assert "(no 2; 9 past the model's 4 experts): expert 3 fills slot 2, 9 fills slot 3" in gate_up["detail"]
    assert f"{_LAYER_1}.*.w2.weight holds experts 0, 1, 3, 9" in said["model.layers.1.mlp.experts.down_proj"]["detail"]
    assert report["matched"] == report["total_b"] - 2
    assert "expert-numbering" in run_cli("diff-keys", str(renumbered), "--model-class", "MixtralForCausalLM").stdout


def test_one_renumbered_expert_between_two_checkpoints_is_named_by_its_keys(mixtral: tuple[Path, dict[str, Any]],
                                                                           tmp_path: Path) -> None:
    folder, _ = mixtral
    renumbered = _edited_copy(folder, tmp_path / "renumbered", _renumber_expert_2_as_9)
    report = json_report("diff-keys", str(renumbered), str(folder))
    assert {issue["name"] for issue in report["missing"]} == {f"{_LAYER_1}.2.w{i}.weight" for i in (1, 2, 3)}
    assert {issue["name"] for issue in report["unexpected"]} == {f"{_LAYER_1}.9.w{i}.weight" for i in (1, 2, 3)}
    patterns = {(group["kind"], group["pattern"]) for group in report["groups"]}  # --json keeps the patterns
    assert ("missing", "model.layers.*.block_sparse_moe.experts.*.w1.weight") in patterns
    # Without --all, each table's rows: the keys themselves, not a pattern both tables share.
    # A fresh process: in-process, the console keeps the width it was made with (80 in a whole-suite run).
    shown = run_subprocess("diff-keys", str(renumbered), str(folder), env={"COLUMNS": "200"}).stdout
    assert "experts.*" not in shown
    for number in (2, 9):
        for projection in ("w1", "w2", "w3"):
            assert f"{_LAYER_1}.{number}.{projection}.weight" in shown


def test_a_projection_one_expert_lacks_is_named(mixtral: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    from transformers import MixtralForCausalLM

    folder, _ = mixtral
    lacking = _edited_copy(folder, tmp_path / "lacking", lambda weights: weights.pop(f"{_LAYER_1}.3.w3.weight"))
    with pytest.raises(RuntimeError, match="conversion"):  # the library raises, naming no key
        MixtralForCausalLM.from_pretrained(lacking)
    report = json_report("diff-keys", str(lacking), "--model-class", "MixtralForCausalLM")
    (issue,) = report["missing"]
    assert issue["name"] == "model.layers.1.mlp.experts.gate_up_proj"
    assert issue["reason"] == "expert-numbering"  # was "shape: the architecture differs"
    assert issue["detail"].startswith(f"from_pretrained raises: A's {_LAYER_1}.*.w3.weight holds experts 0, 1, 2 "
                                      "(no 3), and its WeightConverter stacks")
    assert "w1.weight" not in issue["detail"]  # w1 holds every expert: not blamed


def test_an_expert_parallel_shard_is_one_shape_said_once_with_its_experts(mixtral: tuple[Path, dict[str, Any]],
                                                                           tmp_path: Path) -> None:
    """One rank's experts (2 and 3 of 4) in layer 1: from_pretrained reports the stacked shapes mismatched; the
    report lists each key once, as mismatched, and says which experts A holds."""
    from transformers import MixtralForCausalLM

    def keep_experts_2_and_3(weights: dict[str, Any]) -> None:
        for number in (0, 1):
            for projection in ("w1", "w2", "w3"):
                weights.pop(f"{_LAYER_1}.{number}.{projection}.weight")

    folder, _ = mixtral
    shard = _edited_copy(folder, tmp_path / "rank1", keep_experts_2_and_3)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        MixtralForCausalLM.from_pretrained(shard)
    report = json_report("diff-keys", str(shard), "--model-class", "MixtralForCausalLM")
    assert report["missing"] == []
    said = {issue["name"]: issue["detail"] for issue in report["mismatched"]}
    assert set(said) == {"model.layers.1.mlp.experts.gate_up_proj", "model.layers.1.mlp.experts.down_proj"}
    assert said["model.layers.1.mlp.experts.down_proj"].startswith("2×32×48 in A, 4×32×48 in the model")
    assert f"{_LAYER_1}.*.w2.weight holds experts 2, 3 (no 0, 1)" in said["model.layers.1.mlp.experts.down_proj"]
    assert report["matched"] == report["total_b"] - 2


@pytest.mark.parametrize("kind", ["mixtral", "qwen2_moe"])
def test_the_per_expert_layout_of_save_pretrained_loads_cleanly(kind: str, tmp_path: Path) -> None:
    """Oracle (already right): no expert-numbering error on a whole per-expert save, experts 0-11 included (a
    natural order, not 0, 1, 10, 11, 2)."""
    import torch
    import transformers

    torch.manual_seed(0)
    if kind == "mixtral":
        model = transformers.MixtralForCausalLM(transformers.MixtralConfig(
            vocab_size=64, hidden_size=16, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=1, num_local_experts=12, num_experts_per_tok=2))
    else:
        model = transformers.Qwen2MoeForCausalLM(transformers.Qwen2MoeConfig(
            vocab_size=64, hidden_size=16, intermediate_size=8, moe_intermediate_size=8,
            shared_expert_intermediate_size=8, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
            num_experts=12, num_experts_per_tok=2))
    model.save_pretrained(tmp_path / kind)
    assert any(".experts.11." in key for key in _keys(tmp_path / kind))
    _, info = type(model).from_pretrained(tmp_path / kind, output_loading_info=True)
    assert not any(info[kind_] for kind_ in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    result = run_cli("diff-keys", str(tmp_path / kind), "--model-class", type(model).__name__)
    assert result.exit_code == 0, result.stdout
    assert "A loads into the model cleanly" in result.stdout


def _keys(folder: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as weights:
        return list(weights.keys())


def _vlm(kind: str) -> Any:
    import torch
    import transformers

    torch.manual_seed(0)
    text = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64)
    if kind == "llava":
        return transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
            vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8),
            text_config=dict(model_type="llama", **text), image_token_index=255)).eval()
    return transformers.Qwen2VLForConditionalGeneration(transformers.Qwen2VLConfig(
        text_config=dict(**text, rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]}),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=4,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3))).eval()


# transformers 4.4x's names of these models' weights, from the names transformers 5 models hold.
_OLD_LAYOUTS = {
    "llava": ((r"^model\.language_model\.", "language_model.model."), (r"^lm_head\.", "language_model.lm_head."),
              (r"^model\.vision_tower\.", "vision_tower."),
              (r"^model\.multi_modal_projector\.", "multi_modal_projector.")),
    "qwen2_vl": ((r"^model\.language_model\.", "model."), (r"^model\.visual\.", "visual.")),
}


@pytest.mark.parametrize("kind", ["llava", "qwen2_vl"])
def test_an_old_vision_language_layout_is_said_to_load_as_it_does(kind: str, tmp_path: Path) -> None:
    """Oracle (already right): transformers' conversion mapping renames the old layout; diff-keys says it loads,
    and from_pretrained loads every weight equal to the original."""
    import torch
    from safetensors.torch import save_file

    model = _vlm(kind)
    model.save_pretrained(tmp_path / kind)
    old = {}
    for name, tensor in model.state_dict().items():
        for pattern, replacement in _OLD_LAYOUTS[kind]:
            name = re.sub(pattern, replacement, name)
        old[name] = tensor.contiguous().clone()
    assert not any(name.startswith("model.language_model.") for name in old)
    save_file(old, str(tmp_path / kind / "model.safetensors"), metadata={"format": "pt"})
    loaded, info = type(model).from_pretrained(tmp_path / kind, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert all(torch.equal(tensor, loaded.state_dict()[name]) for name, tensor in model.state_dict().items())
    report = json_report("diff-keys", str(tmp_path / kind), "--model-class", type(model).__name__)
    assert (report["missing"], report["unexpected"], report["mismatched"]) == ([], [], [])
    assert report["matched"] == report["total_b"] == len(model.state_dict())


# --- a LoRA saved per expert, loaded onto transformers 5's fused experts ---------------------------------------------

_PROJECTIONS = {"gate_proj": (32, 16), "up_proj": (32, 16), "down_proj": (16, 32)}  # in, out of one expert's Linear


@pytest.fixture(scope="module")
def per_expert_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded tiny Qwen3-MoE saved by save_pretrained in `base/`, and in `adapter/` a rank-4 LoRA on every expert's
    gate / up / down projection under peft's names for transformers 4's per-expert modules."""
    import json

    import torch
    from safetensors.torch import save_file
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    root = tmp_path_factory.mktemp("moe_lora")
    torch.manual_seed(0)
    Qwen3MoeForCausalLM(Qwen3MoeConfig(
        vocab_size=128, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=4, num_experts_per_tok=2,
        max_position_embeddings=64)).save_pretrained(root / "base")
    factors = {}
    for layer in range(2):
        for expert in range(4):
            for projection, (width_in, width_out) in _PROJECTIONS.items():
                module = f"base_model.model.model.layers.{layer}.mlp.experts.{expert}.{projection}"
                factors[f"{module}.lora_A.weight"] = torch.randn(4, width_in) * 0.1
                factors[f"{module}.lora_B.weight"] = torch.randn(width_out, 4) * 0.1
    (root / "adapter").mkdir()
    save_file(factors, str(root / "adapter" / "adapter_model.safetensors"))
    (root / "adapter" / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(root / "base"), "r": 4,
        "lora_alpha": 8, "target_modules": sorted(_PROJECTIONS), "lora_dropout": 0.0, "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True}))
    return root


def test_a_lora_saved_per_expert_is_said_to_load_onto_the_fused_experts(per_expert_lora: Path) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import Qwen3MoeForCausalLM

    # The library: peft loads the per-expert factors onto the fused experts, the merged update each expert's B @ A.
    base = Qwen3MoeForCausalLM.from_pretrained(per_expert_lora / "base")
    before = {name: tensor.clone() for name, tensor in base.state_dict().items()}
    merged = PeftModel.from_pretrained(base, per_expert_lora / "adapter").merge_and_unload().state_dict()
    factors = load_file(per_expert_lora / "adapter" / "adapter_model.safetensors")
    module = "base_model.model.model.layers.1.mlp.experts.2"
    update = 2.0 * factors[f"{module}.down_proj.lora_B.weight"] @ factors[f"{module}.down_proj.lora_A.weight"]
    assert torch.allclose(merged["model.layers.1.mlp.experts.down_proj"][2],
                          before["model.layers.1.mlp.experts.down_proj"][2] + update, atol=1e-6)
    update = 2.0 * factors[f"{module}.up_proj.lora_B.weight"] @ factors[f"{module}.up_proj.lora_A.weight"]
    assert torch.allclose(merged["model.layers.1.mlp.experts.gate_up_proj"][2, 16:],
                          before["model.layers.1.mlp.experts.gate_up_proj"][2, 16:] + update, atol=1e-6)

    args = ("diff-keys", str(per_expert_lora / "adapter"), "--model-class", "Qwen3MoeForCausalLM",
            "--config", str(per_expert_lora / "base"))
    assert run_cli(*args).exit_code == 0  # was 1: every factor "targets ..., which B does not have"
    report = json_report(*args)
    details = {issue["name"]: issue for issue in report["unexpected"]}
    assert len(details) == 48 and {issue["severity"] for issue in details.values()} == {"info"}
    said = details["base_model.model.model.layers.1.mlp.experts.2.up_proj.lora_A.weight"]["detail"]
    assert said == ("LoRA on expert 2 of model.layers.1.mlp.experts.gate_up_proj, which the model holds fused: "
                    "peft converts the per-expert LoRA onto it when it loads the adapter")
    said = details["base_model.model.model.layers.0.mlp.experts.3.down_proj.lora_B.weight"]["detail"]
    assert "expert 3 of model.layers.0.mlp.experts.down_proj" in said


def test_a_lora_saved_per_expert_without_peft_conversion_is_an_error(per_expert_lora: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A peft without transformers-5 weight conversion loads none of the per-expert factors: still an error, naming
    the fused parameter and what converts it."""
    import weightdoctor.diff_keys as diff_keys

    monkeypatch.setattr(diff_keys, "_peft_converts_experts", lambda: False)
    args = ("diff-keys", str(per_expert_lora / "adapter"), "--model-class", "Qwen3MoeForCausalLM",
            "--config", str(per_expert_lora / "base"))
    assert run_cli(*args).exit_code == 1
    said = {issue["name"]: issue for issue in json_report(*args)["unexpected"]}
    issue = said["base_model.model.model.layers.1.mlp.experts.2.gate_proj.lora_B.weight"]
    assert issue["severity"] == "error"
    assert issue["detail"].startswith("targets model.layers.1.mlp.experts.2.gate_proj, one expert of "
                                      "model.layers.1.mlp.experts.gate_up_proj, which the model holds fused: "
                                      "this peft loads none of it")
