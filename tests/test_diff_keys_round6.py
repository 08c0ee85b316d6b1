"""diff-keys, round 6: a merged LoRA under --values, renames that rename only what they match, and checkpoints saved
under the names older transformers wrote, against from_pretrained's own loading report.

The merged LoRA is peft's own (peft 0.21.2 in the venv): get_peft_model on a seeded tiny Llama with
init_lora_weights=False (a LoRA that starts at zero merges into nothing), then merge_and_unload, saved with
save_pretrained beside the base it was built on.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import torch

from tests.helpers import run_json, run_subprocess
from tests.test_diff_keys_round5 import _timm_vit


def _merged_lora(folder: Path, targets: list[str], layers: list[int] | None = None) -> tuple[Path, Path]:
    """A seeded 3-layer Llama saved as `base`, and the same model with a LoRA on `targets` merged into it (peft's
    merge_and_unload) saved as `merged`; `layers` limits the LoRA to those layers (peft's layers_to_transform)."""
    import peft

    from fixtures.diff_pairs import tiny_llama

    model = tiny_llama(seed=6, layers=3)
    model.save_pretrained(folder / "base")
    torch.manual_seed(7)
    lora = peft.LoraConfig(r=4, target_modules=targets, init_lora_weights=False, layers_to_transform=layers)
    peft.get_peft_model(model, lora).merge_and_unload().save_pretrained(folder / "merged")
    return folder / "merged", folder / "base"


def _changed_by_torch(a: Path, b: Path) -> set[str]:
    """The tensors torch.equal finds changed between two model folders' model.safetensors."""
    from safetensors.torch import load_file

    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert left.keys() == right.keys()
    return {name for name in left if not torch.equal(left[name], right[name])}


def test_a_merged_lora_against_its_base_says_only_the_adapted_projections_changed(tmp_path: Path) -> None:
    """A LoRA on q_proj / v_proj merged into its base: --values listed 6 changed tensors among 30 and ranked the
    layers, and nothing said that exactly the adapted projections had changed (the question asked of a merge: did it
    take, and did it touch anything else?). Now `changed_projections` and a note say so, counted as torch counts."""
    merged, base = _merged_lora(tmp_path, ["q_proj", "v_proj"])
    changed = _changed_by_torch(merged, base)
    assert changed == {f"model.layers.{n}.self_attn.{p}.weight" for n in range(3) for p in ("q_proj", "v_proj")}
    code, data = run_json("diff-keys", str(merged), str(base), "--values")
    assert code == 0 and {row["name"] for row in data["values"] if not row["identical"]} == changed, data["values"]
    assert data["changed_projections"] == {"modules": ["self_attn.q_proj", "self_attn.v_proj"], "layers": 3,
                                           "layers_total": 3, "tensors": 6, "identical": 24}, data
    said = [note for note in data["notes"] if note.startswith("only the adapted projections changed")]
    assert len(said) == 1 and said[0].startswith(
        "only the adapted projections changed (q_proj, v_proj in 3 layers: 6 tensors); the other 24 common tensors "
        "are identical"), data["notes"]
    # In the table view too, whole at a wide terminal.
    shown = run_subprocess("diff-keys", str(merged), str(base), "--values", env={"COLUMNS": "400"})
    assert shown.returncode == 0 and "only the adapted projections changed (q_proj, v_proj in 3 layers" \
        in shown.stdout, shown.stdout


def test_a_lora_merged_into_some_layers_is_counted_against_the_layers_that_hold_them(tmp_path: Path) -> None:
    """peft's layers_to_transform=[0, 2]: the projections changed in 2 of the 3 layers that hold them."""
    merged, base = _merged_lora(tmp_path, ["q_proj", "v_proj", "down_proj"], layers=[0, 2])
    changed = _changed_by_torch(merged, base)
    assert len(changed) == 6 and not any(".layers.1." in name for name in changed), changed
    code, data = run_json("diff-keys", str(merged), str(base), "--values")
    assert data["changed_projections"] == {"modules": ["mlp.down_proj", "self_attn.q_proj", "self_attn.v_proj"],
                                           "layers": 2, "layers_total": 3, "tensors": 6, "identical": 24}, data
    assert any(note.startswith("only the adapted projections changed (down_proj, q_proj, v_proj in 2 of the 3 "
                               "layers that hold them: 6 tensors)") for note in data["notes"]), data["notes"]


def test_no_projection_summary_where_every_matrix_or_a_norm_changed(tmp_path: Path) -> None:
    """A full fine-tune (every matrix moved) or a change to a norm beside the projections: no summary, no note;
    nothing changed: none either."""
    from safetensors.torch import load_file, save_file

    merged, base = _merged_lora(tmp_path, ["q_proj", "v_proj"])
    state = load_file(base / "model.safetensors")
    cases = {
        "full": {name: t + 0.01 if t.dim() >= 2 else t for name, t in state.items()},
        "norm": {name: t + 0.01 if name.endswith(("q_proj.weight", "input_layernorm.weight")) else t
                 for name, t in state.items()},
        "same": dict(state),
    }
    for case, tensors in cases.items():
        folder = tmp_path / case
        folder.mkdir()
        save_file({name: t.contiguous() for name, t in tensors.items()}, folder / "model.safetensors")
        (folder / "config.json").write_text((base / "config.json").read_text())
        code, data = run_json("diff-keys", str(folder), str(base), "--values")
        assert data["values"] and data["changed_projections"] is None, (case, data["changed_projections"])
        assert not any("adapted projections" in note for note in data["notes"]), (case, data["notes"])


def _renames_each_raise_matched(a: Path, b: Path) -> tuple[list[str], list[int], dict]:
    """The suggested renames of `diff-keys A B`, and `matched` with none, the first, the first two ... of them applied
    through --rename, and the last run's report."""
    code, data = run_json("diff-keys", str(a), str(b))
    flags = [rename["flag"] for rename in data["suggested_renames"]]
    counts = [data["matched"]]
    after = data
    for count in range(1, len(flags) + 1):
        words = [word for flag in flags[:count] for word in shlex.split(flag)]
        code, after = run_json("diff-keys", str(a), str(b), *words)
        counts.append(after["matched"])
    assert counts[-1] == data["matched_after_renames"] or not flags, (counts, data["matched_after_renames"])
    return flags, counts, after


def test_a_timm_vits_renames_rename_only_the_keys_they_match(tmp_path: Path) -> None:
    """timm's ViT against transformers' ViTForImageClassification: the search offered
    `--rename '^(?!(?:vit)\\.)=vit.embeddings.'`, `vit.embeddings.` before all 29 keys but the final norm's, for two
    of them (cls_token, and pos_embed that the next rename turns into position_embeddings); the other 27 were left
    named `vit.embeddings.blocks.0.attn.qkv.weight`..., which neither side has, in the report after the renames and
    in what the snippet writes. The rename is now narrowed to the keys it matches; each suggested rename, applied,
    raises `matched`, and every key left unmatched keeps its own name."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(3)
    config = ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                       image_size=32, patch_size=8, num_labels=10)
    ViTForImageClassification(config).save_pretrained(tmp_path / "hf-vit")
    state = _timm_vit(tmp_path / "timm_vit.safetensors", 16, 2, 10, 4)
    flags, counts, after = _renames_each_raise_matched(tmp_path / "timm_vit.safetensors", tmp_path / "hf-vit")
    assert all(later > earlier for earlier, later in zip(counts, counts[1:], strict=False)), (flags, counts)
    assert counts[-1] == 4, (flags, counts)  # the final norm's two, cls_token, pos_embed: as before
    left = {row["name"] for row in after["unexpected"]}
    assert len(left) == len(state) - 4 and left <= set(state), sorted(left - set(state))
    assert "--rename '^(cls_token|pos_embed)(?![^.])=vit.embeddings.\\1'" in flags, flags


def test_every_suggested_rename_of_the_fixture_pairs_raises_matched(tmp_path: Path) -> None:
    """fixtures.diff_pairs' workflow pairs (DDP, compile, LoRA, legacy names, base into head...): each suggested
    rename, applied in turn with --rename, matches more keys of B, and all of them match what they said."""
    from fixtures.diff_pairs import build_pairs

    checked = []
    for name, pair in build_pairs(tmp_path).items():
        flags, counts, _ = _renames_each_raise_matched(pair.a, pair.b)
        assert all(later > earlier for earlier, later in zip(counts, counts[1:], strict=False)), (name, flags, counts)
        if flags:
            checked.append(name)
    assert {"ddp-prefix", "compile-prefix", "lora-peft"} <= set(checked), checked


def _square_nemotron_h_lora(folder: Path, targets: list[str]) -> tuple[Path, Path, dict[str, str]]:
    """A seeded Nemotron-H whose experts' up_proj and down_proj are of one shape (moe_intermediate_size = the hidden
    size, 32 × 32 an expert) saved as `base`, a LoRA on the experts' `targets` (peft's target_parameters) saved as
    `lora`, and, as peft itself holds them, each wrapper's module name (as its saved keys name it) -> the parameter
    it adapts (ParamWrapper.parameter_name)."""
    import transformers
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = transformers.NemotronHConfig(
        vocab_size=128, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        intermediate_size=48, mamba_num_heads=4, mamba_head_dim=16, ssm_state_size=8, n_groups=1, chunk_size=8,
        max_position_embeddings=64, layers_block_type=["mamba", "attention", "moe"], n_routed_experts=2,
        num_experts_per_tok=1, moe_intermediate_size=32, moe_shared_expert_intermediate_size=16,
        architectures=["NemotronHForCausalLM"])
    model = transformers.NemotronHForCausalLM(config)
    model.save_pretrained(folder / "base")
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], target_parameters=targets))
    adapted = {name: module.parameter_name for name, module in peft_model.named_modules()
               if hasattr(module, "parameter_name")}
    peft_model.save_pretrained(folder / "lora")
    return folder / "lora", folder / "base", adapted


def _expert_details(data: dict) -> dict[str, str]:
    return {row["name"]: row["detail"] for row in data["unexpected"] if ".mixer.experts." in row["name"]}


def test_nemotron_h_expert_factors_of_one_shape_are_named_by_peft_s_nesting_not_guessed(tmp_path: Path) -> None:
    """Nemotron-H's gateless experts, up_proj and down_proj of one shape, with peft's LoRA on both: every factor was
    "LoRA on ...experts.up_proj", the first parameter that fit; peft puts the outer wrapper (`experts.lora_A`) on
    down_proj. Now each wrapper is named as peft's ParamWrapper.parameter_name says, with and without
    adapter_config.json (two wrappers, two parameters: all of them targeted)."""
    import shutil

    adapter, base, adapted = _square_nemotron_h_lora(tmp_path, ["mixer.experts.up_proj", "mixer.experts.down_proj"])
    experts = "model.layers.2.mixer.experts"
    assert adapted == {f"base_model.model.{experts}": "down_proj",
                       f"base_model.model.{experts}.base_layer": "up_proj"}, adapted
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(adapter / "adapter_model.safetensors", alone / "adapter_model.safetensors")
    for given in (adapter, alone / "adapter_model.safetensors"):
        code, data = run_json("diff-keys", str(given), str(base))
        details = _expert_details(data)
        assert len(details) == 4 and code == 0, data["unexpected"]
        for name, detail in details.items():
            wrapper = name.rsplit(".lora_", 1)[0]
            assert detail.startswith(f"LoRA on {experts}.{adapted[wrapper]} ("), (given, name, detail)


def test_nemotron_h_one_targeted_expert_parameter_is_read_from_the_config_or_said_to_be_either(tmp_path: Path) -> None:
    """A LoRA on down_proj alone, up_proj of the same shape: it was named up_proj (the first that fit). With
    adapter_config.json beside it, its target_parameters names down_proj; without, the detail says it is one of the
    two and that the names do not tell which."""
    import shutil

    adapter, base, adapted = _square_nemotron_h_lora(tmp_path, ["mixer.experts.down_proj"])
    experts = "model.layers.2.mixer.experts"
    assert adapted == {f"base_model.model.{experts}": "down_proj"}, adapted
    code, data = run_json("diff-keys", str(adapter), str(base))
    details = _expert_details(data)
    assert len(details) == 2 and all(detail.startswith(f"LoRA on {experts}.down_proj (")
                                     for detail in details.values()), details
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(adapter / "adapter_model.safetensors", alone / "adapter_model.safetensors")
    code, data = run_json("diff-keys", str(alone / "adapter_model.safetensors"), str(base))
    details = _expert_details(data)
    assert code == 0 and len(details) == 2, data["unexpected"]
    for detail in details.values():
        assert detail.startswith(f"LoRA on {experts}.up_proj or {experts}.down_proj ("), detail
        assert detail.endswith(": both of one shape, and which of them this wrapper adapts is not in the names "
                               "(adapter_config.json's target_parameters tells; none is beside A)"), detail
