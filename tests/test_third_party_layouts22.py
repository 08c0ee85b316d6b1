"""A twenty-second round: image, audio and LoRA ecosystems as their own save code writes them: sentence-transformers'
first folders (the model in 0_Transformer/ beside a config.json of the library's own), original Stable Diffusion
checkpoints saved with LitEma's copy of the UNet, Whisper saves loaded into an encoder-only class, kohya-ss LoRAs of
another network_dim, kohya-ss SDXL LoRAs (LDM module names) against a diffusers UNet, Flux LoRAs
in one layout against the Flux transformer in the other (Black Forest Labs' and diffusers'), the module folders a
sentence-transformers save keeps beside its model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tests.helpers import one_error_line, run_cli, run_json, write_diffusers_flux_transformer


def _old_sentence_transformers(root: Path) -> None:
    """A sentence-transformers 0.x save (SentenceTransformer.save): each module in its own numbered folder, the
    transformer's config.json and pytorch_model.bin in 0_Transformer/, modules.json naming the folders, and at the
    root a config.json of the library's own, holding only its version."""
    torch.manual_seed(0)
    transformer = root / "0_Transformer"
    transformer.mkdir(parents=True)
    (root / "1_Pooling").mkdir()
    (root / "2_Dense").mkdir()
    hidden = 16
    (transformer / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertModel"], "vocab_size": 50, "hidden_size": hidden,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 32}))
    torch.save({"embeddings.word_embeddings.weight": torch.randn(50, hidden),
                "encoder.layer.0.output.dense.weight": torch.randn(hidden, 32)}, transformer / "pytorch_model.bin")
    (transformer / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": hidden,
                                                                 "pooling_mode_mean_tokens": True}))
    (root / "2_Dense" / "config.json").write_text(json.dumps({"in_features": hidden, "out_features": 8, "bias": True}))
    torch.save({"linear.weight": torch.randn(8, hidden), "linear.bias": torch.zeros(8)},
               root / "2_Dense" / "pytorch_model.bin")
    (root / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    (root / "config.json").write_text(json.dumps({"__version__": "0.3.9"}))


def test_plan_devices_names_the_subfolders_of_an_old_sentence_transformers_folder(tmp_path: Path) -> None:
    """plan-devices took the root's config.json ({"__version__": ...}) for a model config to plan from and said only
    "nothing to plan: the checkpoint holds no tensors and its config.json has no model_type", where inspect and the
    others name the subfolders that hold the weights: it names them too, and the one it names is planned."""
    root = tmp_path / "bert-base-nli-mean-tokens"
    _old_sentence_transformers(root)
    for command in (("plan-devices", str(root), "--gpu", "1GB"), ("inspect", str(root))):
        result = run_cli(*command)
        line = one_error_line(result)
        assert result.exit_code == 2 and result.stdout == "", (command, result.stdout)
        assert "nothing to plan" not in line, line
        assert "weights are in subfolders (0_Transformer/, 2_Dense/): point at one, e.g. " in line, line
        assert line.endswith(str(root / "0_Transformer")), line
    code, data = run_json("plan-devices", str(root / "0_Transformer"), "--gpu", "1GB")
    assert code == 0 and data["model_class"] == "BertModel", data


def _ldm_with_ema(path: Path) -> int:
    """An original (CompVis ldm) Stable Diffusion checkpoint saved with its EMA, as LatentDiffusion's state_dict
    holds it: the UNet under model.diffusion_model.*, LitEma's copy of each UNet tensor as a buffer named model_ema.
    + the name without its first part and dots, LitEma's decay and num_updates, the VAE and the text encoder.
    Returns the bytes of model_ema.* in float32."""
    torch.manual_seed(0)
    unet = {"model.diffusion_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3),
            "model.diffusion_model.input_blocks.0.0.bias": torch.randn(8),
            "model.diffusion_model.time_embed.0.weight": torch.randn(32, 8),
            "model.diffusion_model.out.2.weight": torch.randn(4, 8, 3, 3)}
    state = {**unet,
             "first_stage_model.encoder.conv_in.weight": torch.randn(8, 3, 3, 3),
             "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.randn(50, 16),
             "betas": torch.linspace(1e-4, 0.02, 100),
             "model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(470000, dtype=torch.int32)}
    for name, tensor in unet.items():
        state["model_ema." + "".join(name.split(".")[1:])] = tensor + 0.01
    torch.save({"state_dict": state, "global_step": 470000}, path)
    return sum(t.numel() * t.element_size() for name, t in state.items() if name.startswith("model_ema."))


def test_plan_devices_says_an_ldm_checkpoint_holds_its_unet_twice(tmp_path: Path) -> None:
    """A *-full-ema.ckpt planned from its tensor names placed model_ema (LitEma's copy of the UNet) as a module of
    its own, without a word: the plan counted the UNet twice, where every loader builds one. inspect said so; plan-
    devices says so too, with the bytes the copy adds to the plan, at the planned dtype."""
    path = tmp_path / "sd-v1-4-full-ema.ckpt"
    ema_bytes = _ldm_with_ema(path)
    code, data = run_json("plan-devices", str(path), "--gpu", "1GB")
    assert code == 0, data
    said = [w for w in data["warnings"] if w.startswith("the UNet is stored twice")]
    assert said == [f"the UNet is stored twice: model_ema ({ema_bytes / 1000:.2f} KB as planned) holds an EMA copy of "
                    f"4 tensors of model.diffusion_model.*, placed here as a module of its own, so a load holds "
                    f"{ema_bytes / 1000:.2f} KB less than planned; the loaders build one UNet: diffusers' "
                    "from_single_file and the original inference configs (use_ema: False) take the non-EMA weights, "
                    "diffusers' conversion script with --extract_ema the EMA ones"], data["warnings"]
    code, data = run_json("plan-devices", str(path), "--gpu", "1GB", "--dtype", "fp16")
    # The float copies halve at fp16; LitEma's int32 step count and float decay are planned as the tree holds them.
    assert any(w.startswith("the UNet is stored twice: model_ema (") for w in data["warnings"]), data["warnings"]
    # Without the copy (a pruned file), nothing is said.
    torch.save({"state_dict": {k: v for k, v in torch.load(path)["state_dict"].items()
                               if not k.startswith("model_ema.")}}, tmp_path / "pruned.ckpt")
    code, data = run_json("plan-devices", str(tmp_path / "pruned.ckpt"), "--gpu", "1GB")
    assert code == 0 and not any("stored twice" in w for w in data["warnings"]), data["warnings"]


def test_inspect_still_says_the_unet_is_stored_twice(tmp_path: Path) -> None:
    """inspect's own warning, whose wording plan-devices' now shares, is unchanged."""
    path = tmp_path / "last.safetensors"
    torch.manual_seed(0)
    state = {"model.diffusion_model.out.2.weight": torch.randn(4, 8, 3, 3),
             "model_ema.diffusion_modelout2weight": torch.randn(4, 8, 3, 3)}
    save_file(state, str(path))
    code, data = run_json("inspect", str(path))
    assert code == 0 and ("the UNet is stored twice: model_ema.* holds an EMA copy of 1 tensor of "
                          "model.diffusion_model.* (288 parameters, counted in the total above); the loaders build "
                          "one UNet: diffusers' from_single_file and the original inference configs (use_ema: False) "
                          "take the non-EMA weights, diffusers' conversion script with --extract_ema the EMA "
                          "ones") in data["warnings"], data["warnings"]


def _tiny_whisper(folder: Path) -> None:
    """A WhisperForConditionalGeneration as save_pretrained writes it (model.encoder.*, model.decoder.*, proj_out
    tied to the decoder's embeddings and left out)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8,
                           max_source_positions=16, max_target_positions=16, pad_token_id=1, bos_token_id=2,
                           eos_token_id=3, decoder_start_token_id=2)
    WhisperForConditionalGeneration(config).save_pretrained(folder)


def test_diff_keys_names_the_part_of_a_whisper_save_an_encoder_only_class_drops(tmp_path: Path) -> None:
    """Whisper loaded into WhisperForAudioClassification: from_pretrained strips the base-model prefix, so
    model.encoder.* loads as the classifier's encoder.* and only model.decoder.* is dropped. Each decoder key was
    said to be dropped because "model.* is no part of B", though half of model.* loads: it names model.decoder.*,
    and from_pretrained's own lists agree on what is missing and what is dropped."""
    folder = tmp_path / "whisper-tiny"
    _tiny_whisper(folder)
    code, data = run_json("diff-keys", str(folder), "--model-class", "WhisperForAudioClassification")
    assert code == 0, data
    details = {issue["detail"] for issue in data["unexpected"]}
    assert details == {"model.decoder.* is no part of the model: dropped"}, details
    assert {issue["reason"] for issue in data["unexpected"]} == {"unused-part"}
    from transformers import WhisperForAudioClassification

    _, info = WhisperForAudioClassification.from_pretrained(folder, output_loading_info=True)
    assert sorted(issue["name"] for issue in data["unexpected"]) == sorted(info["unexpected_keys"])
    assert sorted(issue["name"] for issue in data["missing"]) == sorted(info["missing_keys"])
    assert all(name.startswith("model.decoder.") for name in info["unexpected_keys"])


def _kohya_lora(path: Path, rank: int) -> None:
    """A kohya-ss sd-scripts LoRA as networks/lora.py's save_weights writes it: flat lora_unet_ / lora_te_ names,
    lora_down (rank × in) / lora_up (out × rank) in the save precision, alpha a 0-dim tensor, ss_* metadata."""
    torch.manual_seed(rank)
    state = {}
    for module, (width_in, width_out) in {"lora_unet_down_blocks_0_attentions_0_proj_in": (32, 32),
                                          "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (16, 16)}.items():
        state[f"{module}.lora_down.weight"] = torch.randn(rank, width_in).half()
        state[f"{module}.lora_up.weight"] = torch.randn(width_out, rank).half()
        state[f"{module}.alpha"] = torch.tensor(float(rank)).half()
    state["lora_unet_conv_in.lora_down.weight"] = torch.randn(rank, 4, 3, 3).half()
    state["lora_unet_conv_in.lora_up.weight"] = torch.randn(8, rank, 1, 1).half()
    save_file(state, str(path), metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(rank),
                                          "ss_network_alpha": str(rank), "ss_base_model_version": "sd_v1"})


def test_two_loras_of_another_rank_are_told_apart_from_another_architecture(tmp_path: Path) -> None:
    """Two kohya LoRAs of one model, trained at network_dim 4 and 8: each factor was "same name, different shape: the
    architecture differs", with a note that from_pretrained raises unless ignore_mismatched_sizes=True, which loads
    no LoRA. Each is a LoRA factor of another rank, and the note says what the LoRA loaders do."""
    _kohya_lora(tmp_path / "r4.safetensors", 4)
    _kohya_lora(tmp_path / "r8.safetensors", 8)
    code, data = run_json("diff-keys", str(tmp_path / "r4.safetensors"), str(tmp_path / "r8.safetensors"))
    assert code == 1, data
    rows = {m["name"]: (m["reason"], m["severity"], m["detail"]) for m in data["mismatched"]}
    assert len(rows) == 6 and {reason for reason, _, _ in rows.values()} == {"lora-rank"}, rows
    assert rows["lora_unet_conv_in.lora_down.weight"] == ("lora-rank", "error",
                                                          "4×4×3×3 in A, 8×4×3×3 in B: LoRA rank 4 in A, 8 in B")
    assert rows["lora_unet_conv_in.lora_up.weight"][2] == "8×4×1×1 in A, 8×8×1×1 in B: LoRA rank 4 in A, 8 in B"
    assert "3 LoRA modules differ in rank only: A and B adapt the same modules with adapters of another size; " \
           "torch's load_state_dict, which LoRA loaders call (sd-scripts' --network_weights, peft's load_adapter), " \
           "raises on a size mismatch even with strict=False" in data["notes"], data["notes"]
    assert not any("ignore_mismatched_sizes" in note for note in data["notes"]), data["notes"]
    # The alpha scalars differ in value only: no difference of keys or shapes.
    assert not data["missing"] and not data["unexpected"]


def test_a_lora_factor_resized_on_its_other_axis_is_still_a_shape_difference(tmp_path: Path) -> None:
    """Only the rank axis makes a lora-rank: a lora_A of another input width (another base model) is a shape
    difference, and so is its lora_B of another r beside it (the module as a whole is not the same one at another
    rank: review52); a peft adapter's pair of another r alone is a lora-rank."""
    save_file({"base_model.model.q.lora_A.weight": torch.zeros(4, 16), "base_model.model.q.lora_B.weight":
               torch.zeros(16, 4), "base_model.model.k.lora_A.weight": torch.zeros(4, 16),
               "base_model.model.k.lora_B.weight": torch.zeros(16, 4)}, str(tmp_path / "a.safetensors"))
    save_file({"base_model.model.q.lora_A.weight": torch.zeros(4, 32), "base_model.model.q.lora_B.weight":
               torch.zeros(16, 8), "base_model.model.k.lora_A.weight": torch.zeros(8, 16),
               "base_model.model.k.lora_B.weight": torch.zeros(16, 8)}, str(tmp_path / "b.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"))
    rows = {m["name"]: m["reason"] for m in data["mismatched"]}
    assert rows == {"base_model.model.q.lora_A.weight": "shape", "base_model.model.q.lora_B.weight": "shape",
                    "base_model.model.k.lora_A.weight": "lora-rank", "base_model.model.k.lora_B.weight": "lora-rank"}
    assert "1 LoRA module differs in rank only" in " ".join(data["notes"]), data["notes"]
    assert any(note.startswith("2 keys differ in shape: from_pretrained raises") for note in data["notes"])


def _kohya_sdxl_lora(path: Path) -> None:
    """An SDXL LoRA as sd-scripts' sdxl_train_network.py saves it: the UNet's modules named in the LDM layout
    (input_blocks_4_1_..., middle_block_1_..., a LoCon conv on input_blocks_1_0_in_layers_2), both text encoders
    (lora_te1_, lora_te2_), alpha 0-dim, fp16."""
    torch.manual_seed(0)
    state = {}
    for module, (width_in, width_out, kernel) in {
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q": (32, 32, ()),
            "lora_unet_middle_block_1_proj_in": (64, 64, ()),
            "lora_unet_input_blocks_1_0_in_layers_2": (32, 32, (3, 3)),
            "lora_unet_output_blocks_2_1_conv": (32, 32, (3, 3)),
            "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (16, 16, ())}.items():
        state[f"{module}.lora_down.weight"] = torch.randn(4, width_in, *kernel).half()
        state[f"{module}.lora_up.weight"] = torch.zeros(width_out, 4, *(1 for _ in kernel)).half()
        state[f"{module}.alpha"] = torch.tensor(2.0).half()
    save_file(state, str(path), metadata={"ss_network_module": "networks.lora", "ss_network_dim": "4",
                                          "ss_base_model_version": "sdxl_base_v1-0"})


def _diffusers_unet(folder: Path, width: int = 32) -> None:
    """A diffusers UNet2DConditionModel folder (config.json, diffusion_pytorch_model.safetensors) holding the
    modules the LoRA above adapts, under diffusers' names."""
    folder.mkdir()
    save_file({"conv_in.weight": torch.zeros(width, 4, 3, 3, dtype=torch.float16),
               "down_blocks.0.resnets.0.conv1.weight": torch.zeros(width, width, 3, 3, dtype=torch.float16),
               "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight": torch.zeros(width, width,
                                                                                               dtype=torch.float16),
               "mid_block.attentions.0.proj_in.weight": torch.zeros(2 * width, 2 * width, dtype=torch.float16),
               "up_blocks.0.upsamplers.0.conv.weight": torch.zeros(width, width, 3, 3, dtype=torch.float16)},
              str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel",
                                                    "_diffusers_version": "0.30.0"}))


def test_an_sdxl_kohya_lora_is_checked_against_a_diffusers_unet(tmp_path: Path) -> None:
    """sd-scripts names an SDXL UNet's modules as the original (LDM) code does; against a diffusers UNet folder
    each was "unknown: no known cause: these weights will not load", though diffusers' load_lora_weights maps those
    blocks onto the UNet's. Each is checked against the diffusers module it adapts, as an SD 1.x LoRA (whose names
    are diffusers') already was."""
    lora, unet = tmp_path / "sdxl_lora.safetensors", tmp_path / "unet"
    _kohya_sdxl_lora(lora)
    _diffusers_unet(unet)
    code, data = run_json("diff-keys", str(lora), str(unet))
    assert code == 0 and data["worst_severity"] == "info", data
    details = {issue["name"]: (issue["reason"], issue["detail"]) for issue in data["unexpected"]}
    assert details["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight"] == (
        "adapter", "LoRA on down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight")
    assert details["lora_unet_middle_block_1_proj_in.lora_up.weight"] == (
        "adapter", "LoRA on mid_block.attentions.0.proj_in.weight")
    assert details["lora_unet_input_blocks_1_0_in_layers_2.lora_down.weight"] == (
        "adapter", "LoRA on down_blocks.0.resnets.0.conv1.weight")
    assert details["lora_unet_output_blocks_2_1_conv.alpha"] == (
        "adapter", "the alpha of the LoRA on up_blocks.0.upsamplers.0.conv")
    assert details["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] == (
        "adapter", "for the first text encoder, not B: its loader puts it there")
    assert any(note.startswith("A is a kohya-style LoRA") and "on 4 modules of the UNet / transformer (B), 4 of "
               "them in B with shapes that fit" in note for note in data["notes"]), data["notes"]
    # The same LoRA against a UNet of another width (SD 1.x's, not SDXL's) does not fit, and says so.
    other = tmp_path / "unet-narrow"
    _diffusers_unet(other, width=16)
    code, data = run_json("diff-keys", str(lora), str(other))
    assert code == 1 and any(issue["detail"].startswith("4×32 does not fit down_blocks.1.attentions.0.")
                             for issue in data["unexpected"]), data["unexpected"]


def test_a_kohya_flux_lora_against_a_diffusers_flux_transformer_is_no_unknown(tmp_path: Path) -> None:
    """sd-scripts' flux_train_network.py names a Flux LoRA's modules as Black Forest Labs' transformer does
    (lora_unet_double_blocks_0_img_attn_qkv: one fused qkv); against a diffusers FluxTransformer2DModel folder
    (transformer_blocks.0.attn.to_q) every key was "unknown: no known cause: these weights will not load", exit 1,
    though diffusers' FluxPipeline.load_lora_weights converts it. Each key is said to be for a module in BFL's
    layout, which that loader converts; against BFL's own flux1-dev.safetensors its shapes are checked."""
    torch.manual_seed(0)
    lora = {}
    for module, (width_in, width_out) in {"lora_unet_double_blocks_0_img_attn_qkv": (16, 48),
                                          "lora_unet_single_blocks_0_linear1": (16, 80),
                                          "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (16, 16)}.items():
        lora[f"{module}.lora_down.weight"] = torch.randn(4, width_in, dtype=torch.bfloat16)
        lora[f"{module}.lora_up.weight"] = torch.zeros(width_out, 4, dtype=torch.bfloat16)
        lora[f"{module}.alpha"] = torch.tensor(4.0, dtype=torch.bfloat16)
    save_file(lora, str(tmp_path / "flux_lora.safetensors"),
              metadata={"ss_network_module": "networks.lora_flux", "ss_base_model_version": "flux1"})
    transformer = write_diffusers_flux_transformer(
        tmp_path / "transformer", {name: torch.zeros(16, 16, dtype=torch.bfloat16) for name in (
        "transformer_blocks.0.attn.to_q.weight", "transformer_blocks.0.attn.to_k.weight",
        "transformer_blocks.0.attn.to_v.weight", "single_transformer_blocks.0.attn.to_q.weight")})
    code, data = run_json("diff-keys", str(tmp_path / "flux_lora.safetensors"), str(transformer))
    assert code == 0 and data["worst_severity"] == "info", data
    details = {issue["name"]: issue["detail"] for issue in data["unexpected"]}
    assert {issue["reason"] for issue in data["unexpected"]} == {"adapter"}
    assert details["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"] == (
        "for double_blocks_0_img_attn_qkv in Black Forest Labs' Flux layout, which diffusers' load_lora_weights "
        "converts to B's (shapes not checked)")
    assert details["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.alpha"] == (
        "for the first text encoder, not B: its loader puts it there")
    assert {issue["reason"] for issue in data["missing"]} == {"adapter-base"}
    assert any(note.startswith("A is a kohya-style Flux LoRA (lora_down / lora_up / alpha on 2 modules named as "
                               "Black Forest Labs' Flux transformer names them") for note in data["notes"])
    # Against BFL's own layout the shapes are checked, as before.
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(48, 16, dtype=torch.bfloat16),
               "single_blocks.0.linear1.weight": torch.zeros(80, 16, dtype=torch.bfloat16)},
              str(tmp_path / "flux1-dev.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "flux_lora.safetensors"), str(tmp_path / "flux1-dev.safetensors"))
    assert code == 0 and any(issue["detail"] == "LoRA on double_blocks.0.img_attn.qkv.weight"
                             for issue in data["unexpected"]), data["unexpected"]


def test_a_diffusers_layout_flux_lora_against_bfl_flux_is_no_dropped_peft_adapter(tmp_path: Path) -> None:
    """The mirror case: an ai-toolkit / diffusers-trainer Flux LoRA (transformer.transformer_blocks.0.attn.to_q.
    lora_A.weight) against BFL's flux1-dev.safetensors was "a PEFT adapter ... 0 of them in B", each pair an error
    ("targets ..., which B does not have: the adapter's weights for it are dropped"), exit 1, where ComfyUI maps it
    onto those modules. Each pair is said to be in diffusers' Flux layout, and against a diffusers
    FluxTransformer2DModel its shapes are checked as before."""
    lora = {"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 16),
            "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(16, 4),
            "transformer.single_transformer_blocks.0.proj_mlp.lora_A.weight": torch.zeros(4, 16),
            "transformer.single_transformer_blocks.0.proj_mlp.lora_B.weight": torch.zeros(64, 4)}
    save_file(lora, str(tmp_path / "pytorch_lora_weights.safetensors"))
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(48, 16),
               "single_blocks.0.linear1.weight": torch.zeros(80, 16)}, str(tmp_path / "flux1-dev.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "pytorch_lora_weights.safetensors"),
                          str(tmp_path / "flux1-dev.safetensors"))
    assert code == 0 and data["worst_severity"] == "info", data
    details = {issue["name"]: (issue["reason"], issue["detail"]) for issue in data["unexpected"]}
    assert details["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"] == (
        "adapter", "for transformer_blocks.0.attn.to_q in diffusers' Flux layout, which ComfyUI maps onto B's modules "
                   "(Black Forest Labs' layout) when it loads the LoRA (shapes not checked)")
    assert {issue["reason"] for issue in data["missing"]} == {"adapter-base"}
    assert any(note.startswith("A is a Flux LoRA in diffusers' layout (lora_A / lora_B on 2 modules of "
                               "FluxTransformer2DModel") for note in data["notes"]), data["notes"]
    transformer = write_diffusers_flux_transformer(
        tmp_path / "transformer", {"transformer_blocks.0.attn.to_q.weight": torch.zeros(16, 16),
                                   "single_transformer_blocks.0.proj_mlp.weight": torch.zeros(64, 16)})
    code, data = run_json("diff-keys", str(tmp_path / "pytorch_lora_weights.safetensors"), str(transformer))
    assert code == 0 and any(issue["detail"] == "LoRA on transformer_blocks.0.attn.to_q.weight"
                             for issue in data["unexpected"]), data["unexpected"]


def test_the_folder_to_point_at_is_named_as_the_source_was_typed(tmp_path: Path, monkeypatch: Any) -> None:
    """A sentence-transformers folder (the model at the top, a Dense module's weights in 2_Dense/) read by a path
    two folders deep said "point at st/2_Dense to read them": the folder's last name only, which pasted from where
    the command ran names no folder (exit 2). It names the path as typed (quoted where the shell needs it), and
    that path reads; axolotl's merged/ beside an adapter is named so too."""
    root = tmp_path / "models" / "my st"
    _old_sentence_transformers(tmp_path / "old")
    root.mkdir(parents=True)
    for name in ("config.json", "pytorch_model.bin"):
        (root / name).write_bytes((tmp_path / "old" / "0_Transformer" / name).read_bytes())
    for module in ("1_Pooling", "2_Dense"):
        (root / module).mkdir()
        for file in (tmp_path / "old" / module).iterdir():
            (root / module / file.name).write_bytes(file.read_bytes())
    (root / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    monkeypatch.chdir(tmp_path)
    code, data = run_json("inspect", "models/my st")
    said = [w for w in data["warnings"] if w.startswith("sentence-transformers module folder")]
    assert code == 0 and said == ["sentence-transformers module folder 2_Dense/ holds weights of its own, not "
                                  "in this report: point at 'models/my st/2_Dense' to read them"], data["warnings"]
    code, data = run_json("inspect", "models/my st/2_Dense")
    assert code == 0 and data["num_tensors"] == 2, data
    # axolotl's output_dir: the adapter at the top, the merged model in merged/.
    output = tmp_path / "runs" / "lora-out"
    (output / "merged").mkdir(parents=True)
    for name in ("config.json", "pytorch_model.bin"):
        (output / "merged" / name).write_bytes((root / name).read_bytes())
    save_file({"base_model.model.encoder.layer.0.output.dense.lora_A.weight": torch.zeros(4, 32),
               "base_model.model.encoder.layer.0.output.dense.lora_B.weight": torch.zeros(16, 4)},
              str(output / "adapter_model.safetensors"))
    (output / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["dense"],
                                                            "base_model_name_or_path": "bert-base-uncased"}))
    code, data = run_json("inspect", "runs/lora-out")
    assert code == 0 and any(w.endswith("this reads the adapter; point at runs/lora-out/merged to read the merged "
                                        "model") for w in data["warnings"]), data["warnings"]
