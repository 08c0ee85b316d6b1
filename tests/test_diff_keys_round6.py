"""diff-keys, round 6: a merged LoRA under --values, renames that rename only what they match, and checkpoints saved
under the names older transformers wrote, against from_pretrained's own loading report.

The merged LoRA is peft's own (peft 0.21.2 in the venv): get_peft_model on a seeded tiny Llama with
init_lora_weights=False (a LoRA that starts at zero merges into nothing), then merge_and_unload, saved with
save_pretrained beside the base it was built on.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
                                           "layers_total": 3, "tensors": 6, "identical": 24, "rounded": 0}, data
    said = [note for note in data["notes"] if note.startswith("only the adapted projections changed")]
    assert len(said) == 1 and said[0].startswith(
        "only the adapted projections changed (q_proj, v_proj in 3 layers: 6 tensors); the other 24 common tensors "
        "are identical"), data["notes"]
    # In the table view too, whole at a wide terminal.
    shown = run_subprocess("diff-keys", str(merged), str(base), "--values", env={"COLUMNS": "400"})
    assert shown.returncode == 0 and "only the adapted projections changed (q_proj, v_proj in 3 layers" \
        in shown.stdout, shown.stdout


def test_a_lora_merged_in_fp32_and_saved_in_bf16_against_its_fp32_base(tmp_path: Path) -> None:
    """The merged model saved in bfloat16 against the fp32 base: 23 of 30 tensors differ (the norms, all ones, are
    bf16 values), 17 of them by the cast's rounding alone, and no summary was given (a rounded tensor counted as a
    change). The adapted projections are the 6 that changed beyond rounding, and the note says so."""
    merged, base = _merged_lora(tmp_path, ["q_proj", "v_proj"])
    import transformers

    transformers.AutoModelForCausalLM.from_pretrained(merged).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    code, data = run_json("diff-keys", str(tmp_path / "bf16"), str(base), "--values")
    rows = data["values"]
    assert sum(not row["identical"] for row in rows) == 23 and sum(bool(row["rounded_to"]) for row in rows) == 17
    assert data["changed_projections"] == {"modules": ["self_attn.q_proj", "self_attn.v_proj"], "layers": 3,
                                           "layers_total": 3, "tensors": 6, "identical": 7, "rounded": 17}, data
    assert any(note.startswith("only the adapted projections changed (q_proj, v_proj in 3 layers: 6 tensors); the "
                               "other 24 common tensors are identical or differ by a cast's rounding alone (17)")
               for note in data["notes"]), data["notes"]


def test_a_lora_merged_into_some_layers_is_counted_against_the_layers_that_hold_them(tmp_path: Path) -> None:
    """peft's layers_to_transform=[0, 2]: the projections changed in 2 of the 3 layers that hold them."""
    merged, base = _merged_lora(tmp_path, ["q_proj", "v_proj", "down_proj"], layers=[0, 2])
    changed = _changed_by_torch(merged, base)
    assert len(changed) == 6 and not any(".layers.1." in name for name in changed), changed
    code, data = run_json("diff-keys", str(merged), str(base), "--values")
    assert data["changed_projections"] == {"modules": ["mlp.down_proj", "self_attn.q_proj", "self_attn.v_proj"],
                                           "layers": 2, "layers_total": 3, "tensors": 6, "identical": 24,
                                           "rounded": 0}, data
    assert any(note.startswith("only the adapted projections changed (down_proj, q_proj, v_proj in 2 of the 3 "
                               "layers that hold them: 6 tensors)") for note in data["notes"]), data["notes"]


def test_a_lora_merged_into_fused_moe_experts_counts_each_layer_once(tmp_path: Path) -> None:
    """peft's target_parameters on Qwen2-MoE's fused gate_up_proj, merged, saved per expert (transformers 5 writes
    `mlp.experts.N.gate_proj`): the experts are modules of their layer (`mlp.experts.*.gate_proj`), not 8 layers."""
    import peft
    import transformers

    torch.manual_seed(0)
    config = transformers.Qwen2MoeConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        shared_expert_intermediate_size=32)
    model = transformers.Qwen2MoeForCausalLM(config)
    model.save_pretrained(tmp_path / "base")
    lora = peft.LoraConfig(r=2, target_modules=["q_proj"], target_parameters=["mlp.experts.gate_up_proj"],
                           init_lora_weights=False)
    peft.get_peft_model(model, lora).merge_and_unload().save_pretrained(tmp_path / "merged")
    changed = _changed_by_torch(tmp_path / "merged", tmp_path / "base")
    assert len(changed) == 18, sorted(changed)  # q_proj and 4 experts' gate and up, in 2 layers
    code, data = run_json("diff-keys", str(tmp_path / "merged"), str(tmp_path / "base"), "--values")
    assert data["changed_projections"] == {
        "modules": ["mlp.experts.*.gate_proj", "mlp.experts.*.up_proj", "self_attn.q_proj"], "layers": 2,
        "layers_total": 2, "tensors": 18, "identical": len(data["values"]) - 18, "rounded": 0}, \
        data["changed_projections"]
    assert any(note.startswith("only the adapted projections changed (gate_proj, up_proj, q_proj in 2 layers: 18 "
                               "tensors)") for note in data["notes"]), data["notes"]


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


# Checkpoints under the names older transformers wrote, which transformers 5 converts on load (conversion_mapping.py's
# WeightRenaming / WeightConverter entries, its "legacy" ones for every model): each is a tiny seeded model's weights
# renamed to that layout. `save_pretrained` in transformers 5 writes several of these layouts itself (it reverts the
# conversion on save): those are taken as it writes them.
_SMALL = {"vocab_size": 96, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 4, "max_position_embeddings": 64}
_KV = {**_SMALL, "num_key_value_heads": 2}
_VIT = {"image_size": 32, "patch_size": 8, "num_channels": 3, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 64}


def _old_name_cases() -> dict[str, tuple[str, Any, Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]],
                                                         dict[str, torch.Tensor]], str]]:
    """name -> (class, config, (saved weights, in-memory weights) -> the old layout's weights, class to load into)."""
    import re

    import transformers as T

    def renamed(fn: Callable[[str], str], source: str = "saved") -> Callable[..., dict[str, torch.Tensor]]:
        return lambda saved, memory: {fn(k): v for k, v in (saved if source == "saved" else memory).items()}

    def drop(pattern: str) -> Callable[..., dict[str, torch.Tensor]]:
        return lambda saved, memory: {k: v for k, v in saved.items() if not re.search(pattern, k)}

    def prefix(old: str, new: str) -> Callable[[str], str]:
        return lambda name: new + name[len(old):] if name.startswith(old) else name

    llava = T.LlavaConfig(text_config={"model_type": "llama", **_KV},
                          vision_config={"model_type": "clip_vision_model", **_VIT}, image_token_index=95)
    qwen2_vl = T.Qwen2VLConfig(
        text_config={"model_type": "qwen2_vl_text", **_KV,
                     "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]}},
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 4, "patch_size": 4,
                       "spatial_merge_size": 2, "temporal_patch_size": 2},
        image_token_id=94, video_token_id=95, vision_start_token_id=93)
    mixtral = T.MixtralConfig(**_KV, num_local_experts=4, num_experts_per_tok=2)
    return {
        # TF-era LayerNorm.gamma / beta (conversion_mapping's "legacy", for every model).
        "bert-gamma-beta": ("BertForMaskedLM", T.BertConfig(**_SMALL, type_vocab_size=2), renamed(
            lambda n: n.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")),
            "BertForMaskedLM"),
        # torch's old weight_norm names (weight_g / weight_v) on wav2vec2's positional convolution.
        "wav2vec2-weight-g-v": ("Wav2Vec2ForCTC", T.Wav2Vec2Config(
            vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            conv_dim=[16, 16], conv_stride=[4, 4], conv_kernel=[8, 8], num_conv_pos_embeddings=8,
            num_conv_pos_embedding_groups=4), renamed(lambda n: n.replace(
                "parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                         "weight_v")), "Wav2Vec2ForCTC"),
        # transformers 4's Llava: language_model.model., language_model.lm_head, vision_tower., multi_modal_projector.
        "llava-v4": ("LlavaForConditionalGeneration", llava, renamed(lambda n: n), "LlavaForConditionalGeneration"),
        "llava-v4-into-model": ("LlavaForConditionalGeneration", llava, renamed(lambda n: n), "LlavaModel"),
        # transformers 5.10-5.23 saved model.language_model.model. (the legacy mapping's regression fix).
        "llava-v5.10": ("LlavaForConditionalGeneration", llava, renamed(
            prefix("model.language_model.", "model.language_model.model."), "memory"),
            "LlavaForConditionalGeneration"),
        # transformers 4's Qwen2-VL: model.layers. and visual. at the top.
        "qwen2-vl-v4": ("Qwen2VLForConditionalGeneration", qwen2_vl, renamed(lambda n: n),
                        "Qwen2VLForConditionalGeneration"),
        "qwen2-vl-v4-into-model": ("Qwen2VLForConditionalGeneration", qwen2_vl, renamed(lambda n: n),
                                   "Qwen2VLModel"),
        # MoE experts one module each (block_sparse_moe.experts.N.w1), stacked on load; one expert's w1 missing.
        "mixtral-per-expert": ("MixtralForCausalLM", mixtral, renamed(lambda n: n), "MixtralForCausalLM"),
        "mixtral-expert-missing": ("MixtralForCausalLM", mixtral, drop(r"layers\.0\..*experts\.1\.w1\."),
                                   "MixtralForCausalLM"),
        "qwen2-moe-expert-missing": ("Qwen2MoeForCausalLM", T.Qwen2MoeConfig(
            **_KV, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32),
            drop(r"layers\.0\.mlp\.experts\.1\.down_proj\."), "Qwen2MoeForCausalLM"),
        "granitemoe-input-linear": ("GraniteMoeForCausalLM", T.GraniteMoeConfig(
            **_KV, num_local_experts=4, num_experts_per_tok=2), renamed(lambda n: n), "GraniteMoeForCausalLM"),
        # nomic-embed's remote-code names (encoder.layers.N.attn.Wqkv fused, emb_ln, fc11 / fc12 / fc2), split on load.
        "nomic-bert-wqkv": ("NomicBertModel", T.AutoConfig.for_model("nomic_bert", **_SMALL), renamed(lambda n: n),
                            "NomicBertModel"),
        "segformer-encoder-block": ("SegformerForSemanticSegmentation", T.SegformerConfig(
            num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], num_attention_heads=[1, 2],
            decoder_hidden_size=32, strides=[4, 2], patch_sizes=[7, 3]), renamed(lambda n: n),
            "SegformerForSemanticSegmentation"),
    }


def _loading_sets(folder: Path, model_class: str) -> tuple[set[str], set[str], set[tuple[str, tuple, tuple]]] | str:
    """from_pretrained's own report (output_loading_info, ignore_mismatched_sizes), or "raises" where it raises."""
    import transformers

    try:
        _, info = getattr(transformers, model_class).from_pretrained(
            folder, output_loading_info=True, ignore_mismatched_sizes=True)
    except Exception:  # noqa: BLE001 - the oracle raised: diff-keys must say that it does
        return "raises"
    return (set(info["missing_keys"]), set(info["unexpected_keys"]),
            {(k, tuple(a), tuple(b)) for k, a, b in info["mismatched_keys"]})


def test_old_transformers_names_against_from_pretrained_s_loading_info(tmp_path: Path) -> None:
    """diff-keys --model-class on checkpoints under older transformers' names (12 layouts, 10 model types) reports
    the missing / unexpected / mismatched sets from_pretrained reports, and says it raises where it raises (an
    expert's projection missing from Mixtral's stacked experts). No disagreement was found (round 6's sweep of ~50
    types, in memory and as saved); this holds the layouts transformers converts on load to the oracle."""
    import transformers
    from safetensors.torch import load_file, save_file

    transformers.logging.set_verbosity_error()
    outcomes = {}
    for name, (class_name, config, old_layout, target) in _old_name_cases().items():
        torch.manual_seed(0)
        model = getattr(transformers, class_name)(config).eval()
        model.save_pretrained(tmp_path / f"{name}-new")
        saved: dict[str, torch.Tensor] = {}
        for file in sorted((tmp_path / f"{name}-new").glob("*.safetensors")):
            saved.update(load_file(file))
        weights = old_layout(saved, dict(model.state_dict()))
        folder = tmp_path / name
        folder.mkdir()
        save_file({k: v.detach().clone().contiguous() for k, v in weights.items()}, folder / "model.safetensors",
                  metadata={"format": "pt"})
        (folder / "config.json").write_text((tmp_path / f"{name}-new" / "config.json").read_text())
        expected = _loading_sets(folder, target)
        code, data = run_json("diff-keys", str(folder), "--model-class", target)
        if expected == "raises":
            rows = data["missing"] + data["mismatched"]
            assert any(row["detail"].startswith("from_pretrained raises") for row in rows) or any(
                "raises here" in note for note in data["notes"]), (name, data)
            assert code == 1, (name, code)
        else:
            got = ({row["name"] for row in data["missing"]}, {row["name"] for row in data["unexpected"]},
                   {(row["name"], tuple(row["shape_a"]), tuple(row["shape_b"])) for row in data["mismatched"]})
            assert got == expected, (name, got, expected)
        outcomes[name] = expected if isinstance(expected, str) else tuple(map(len, expected))
    # The cases are what they say: old names that load whole, a mismatch, a raise, the parts a base class lacks.
    assert outcomes["bert-gamma-beta"] == outcomes["llava-v5.10"] == outcomes["nomic-bert-wqkv"] == (0, 0, 0)
    assert outcomes["mixtral-expert-missing"] == "raises" and outcomes["qwen2-moe-expert-missing"] == (0, 0, 1)
    assert outcomes["llava-v4-into-model"] == (0, 1, 0), outcomes
