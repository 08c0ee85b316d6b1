"""An eleventh round of checkpoints as image-generation and RLHF tools write them: kohya's ControlNet-LLLite,
textual-inversion embeddings, LitGPT's lit_model.pth, a TRL reward model started from a causal LM."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, run_json


def _header_metadata(path: Path) -> dict[str, str] | None:
    """A safetensors file's `__metadata__`, read from its header."""
    with path.open("rb") as handle:
        size = struct.unpack("<Q", handle.read(8))[0]
        return json.loads(handle.read(size)).get("__metadata__")


def _lllite(path: Path) -> None:
    """A ControlNet-LLLite as sd-scripts' sdxl_train_control_net_lllite.py saves it: per U-Net module
    `lllite_unet_<module>.conditioning1.N` (the conditioning image embedding, a 4x4 stride-4 conv first), `down.0`,
    `mid.0`, `up.0` (its weight zero at init: LLLiteModule's "zero conv"), with sd-scripts' ss_* metadata."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    tensors: dict[str, torch.Tensor] = {}
    for module in ("lllite_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
                   "lllite_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_q"):
        tensors |= {f"{module}.conditioning1.0.weight": torch.randn(8, 3, 4, 4),
                    f"{module}.conditioning1.0.bias": torch.randn(8),
                    f"{module}.down.0.weight": torch.randn(16, 64), f"{module}.down.0.bias": torch.randn(16),
                    f"{module}.mid.0.weight": torch.randn(16, 24), f"{module}.mid.0.bias": torch.randn(16),
                    f"{module}.up.0.weight": torch.zeros(64, 16), f"{module}.up.0.bias": torch.randn(64) * 0.1}
    save_file({k: v.half() for k, v in tensors.items()}, path,
              metadata={"ss_network_module": "networks.control_net_lllite", "ss_network_dim": "16",
                        "modelspec.architecture": "stable-diffusion-xl-v1-base/controlnet-lllite"})


def test_shards_of_a_controlnet_lllite_name_it_and_its_loaders_and_keep_its_metadata(tmp_path: Path) -> None:
    """A ControlNet-LLLite carries sd-scripts' ss_network_module, so shard called it "a kohya-style LoRA ... loaded
    by AUTOMATIC1111, ComfyUI, diffusers' load_lora_weights", none of which load it."""
    source = tmp_path / "controllllite_canny.safetensors"
    _lllite(source)
    code, data = run_json("shard", str(source), "--max", "2KB", "-o", str(tmp_path / "shards"))
    assert code == 0 and data["plan"]["index"] is not None, data
    said = " ".join(data["plan"]["warnings"])
    assert "a ControlNet-LLLite is loaded from one file" in said, said
    assert "--control_net_lllite_models" in said and "ControlNet-LLLite-ComfyUI" in said, said
    assert "kohya-style LoRA" not in said and "load_lora_weights" not in said, said
    # sd-scripts and ComfyUI read ss_* / modelspec.* back from each file's header: every shard keeps them.
    for shard in (tmp_path / "shards").glob("*.safetensors"):
        metadata = _header_metadata(shard) or {}
        assert metadata.get("ss_network_module") == "networks.control_net_lllite", (shard, metadata)
        assert metadata.get("modelspec.architecture") == "stable-diffusion-xl-v1-base/controlnet-lllite"


def test_shards_of_an_sdxl_textual_inversion_embedding_say_its_loaders_read_one_file(tmp_path: Path) -> None:
    """An SDXL embedding (kohya's sdxl_train_textual_inversion.py: `clip_l` and `clip_g`, one vector row per token)
    was split into model-00001-of-00002.safetensors and model-00002-of-00002.safetensors with nothing said:
    AUTOMATIC1111, ComfyUI and diffusers' load_textual_inversion each read one file."""
    from safetensors.torch import save_file

    source = tmp_path / "my_style.safetensors"
    save_file({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, source)
    code, data = run_json("shard", str(source), "--max", "8KB", "-o", str(tmp_path / "shards"))
    assert code == 0 and data["plan"]["index"] is not None, data
    said = " ".join(data["plan"]["warnings"])
    assert "a textual-inversion embedding is loaded from one file" in said, said
    assert "load_textual_inversion" in said, said
    code, data = run_json("shard", str(source), "--single", "-o", str(tmp_path / "one"))
    assert code == 0 and not any("textual-inversion" in w for w in data["plan"]["warnings"]), data["plan"]


def _tiny_llama(folder: Path) -> dict[str, torch.Tensor]:
    """A tiny LlamaForCausalLM saved with save_pretrained (untied head, as Llama's config says); its state dict."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _litgpt_state(hf: dict[str, torch.Tensor], legacy: bool) -> dict[str, torch.Tensor]:
    """LitGPT's names for a Llama (what `litgpt convert_to_litgpt` writes into lit_model.pth): q, k and v fused into
    `attn.qkv` (`attn.attn` before litgpt 0.5), norm_1 / norm_2, mlp.fc_1 / fc_2 / proj, wte, ln_f."""
    lit = {"transformer.wte.weight": hf["model.embed_tokens.weight"],
           "transformer.ln_f.weight": hf["model.norm.weight"], "lm_head.weight": hf["lm_head.weight"]}
    for layer in range(2):
        hf_prefix, lit_prefix = f"model.layers.{layer}.", f"transformer.h.{layer}."
        qkv = torch.cat([hf[f"{hf_prefix}self_attn.{p}_proj.weight"] for p in "qkv"])
        lit |= {f"{lit_prefix}norm_1.weight": hf[f"{hf_prefix}input_layernorm.weight"],
                f"{lit_prefix}norm_2.weight": hf[f"{hf_prefix}post_attention_layernorm.weight"],
                f"{lit_prefix}attn.{'attn' if legacy else 'qkv'}.weight": qkv,
                f"{lit_prefix}attn.proj.weight": hf[f"{hf_prefix}self_attn.o_proj.weight"],
                f"{lit_prefix}mlp.fc_1.weight": hf[f"{hf_prefix}mlp.gate_proj.weight"],
                f"{lit_prefix}mlp.fc_2.weight": hf[f"{hf_prefix}mlp.up_proj.weight"],
                f"{lit_prefix}mlp.proj.weight": hf[f"{hf_prefix}mlp.down_proj.weight"]}
    return lit


@pytest.mark.parametrize("legacy", [False, True])
def test_a_litgpt_checkpoint_against_transformers_names_litgpts_converter(tmp_path: Path, legacy: bool) -> None:
    """LitGPT's lit_model.pth against the transformers model it came from: diff-keys offered `transformer.wte. →
    model.embed_tokens.` and `transformer.ln_f. → model.norm.` as the fix and called the rest "unknown", with no word
    that q, k and v are fused or of `litgpt convert_from_litgpt`."""
    hf = tmp_path / "hf"
    lit_folder = tmp_path / "out" / "finetune" / "full" / "final"
    lit_folder.mkdir(parents=True)
    torch.save(_litgpt_state(_tiny_llama(hf), legacy), lit_folder / "lit_model.pth")
    (lit_folder / "model_config.yaml").write_text("name: tiny-llama\nn_layer: 2\nn_embd: 32\nn_head: 4\n")
    code, data = run_json("diff-keys", str(lit_folder / "lit_model.pth"), str(hf))
    assert code == 1 and data["worst_severity"] == "error", data  # errors fail by default
    assert data["suggested_renames"] == [], data["suggested_renames"]
    assert {k["reason"] for k in data["unexpected"]} == {"foreign-layout"}, data["unexpected"]
    assert {k["reason"] for k in data["missing"]} == {"foreign-layout"}, data["missing"]
    note = " ".join(data["notes"])
    assert "A is in LitGPT's own layout" in note and "litgpt convert_from_litgpt" in note, note
    # The other way round: code written for LitGPT needs convert_to_litgpt, not a rename.
    code, data = run_json("diff-keys", str(hf), str(lit_folder / "lit_model.pth"))
    note = " ".join(data["notes"])
    assert "B is in LitGPT's own layout" in note and "litgpt convert_to_litgpt" in note, note
    assert {k["reason"] for k in data["missing"]} == {"foreign-layout"}, data["missing"]


def test_a_trl_reward_model_from_a_causal_lm_does_not_call_its_dropped_head_tied(tmp_path: Path) -> None:
    """TRL's reward training starts from AutoModelForSequenceClassification.from_pretrained(sft_model, num_labels=1):
    the causal LM's trained lm_head is dropped and `score` is new. diff-keys --model-class said the untied lm_head
    was "tied to model.embed_tokens.weight" though the config says tie_word_embeddings: false."""
    folder = tmp_path / "sft"
    _tiny_llama(folder)
    code, data = run_json("diff-keys", str(folder), "--model-class", "LlamaForSequenceClassification",
                          "--num-labels", "1")
    assert code == 0, data
    head = {k["name"]: k for k in data["unexpected"]}["lm_head.weight"]
    assert head["reason"] != "tied-weight" and "tied" not in head["detail"], head
    assert head["reason"] == "task-head" and "dropped" in head["detail"], head
    assert [(k["name"], k["reason"]) for k in data["missing"]] == [("score.weight", "task-head")], data["missing"]


def test_an_ip_adapter_bin_already_stored_flat_is_warned_about_when_read(tmp_path: Path) -> None:
    """convert warned when it wrote an IP-Adapter's flat names to a .bin, but a flat .bin from elsewhere (a training
    script's torch.save of the merged state dict) was read with no word: inspect and diff-keys called it clean, though
    diffusers' load_ip_adapter and ComfyUI's IPAdapter nodes raise on it (they index state_dict["image_proj"])."""
    flat = {"image_proj.proj.weight": torch.randn(64, 16), "image_proj.norm.weight": torch.ones(16),
            "ip_adapter.1.to_k_ip.weight": torch.randn(32, 16), "ip_adapter.1.to_v_ip.weight": torch.randn(32, 16)}
    torch.save(flat, tmp_path / "ip-adapter_flat.bin")
    torch.save({part: {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith(part + ".")}
                for part in ("image_proj", "ip_adapter")}, tmp_path / "ip-adapter_sd15.bin")
    code, data = run_json("inspect", str(tmp_path / "ip-adapter_flat.bin"))
    assert code == 0 and data["num_params"] == sum(t.numel() for t in flat.values()), data
    said = " ".join(data["warnings"])
    assert "an IP-Adapter stored flat (image_proj.*, ip_adapter.*) in a pickle" in said, said
    assert "load_ip_adapter" in said and "IPAdapter nodes" in said and "raise" in said, said
    # The layout its loaders read (two state dicts) is not warned about, nor the flat names in a .safetensors.
    code, data = run_json("inspect", str(tmp_path / "ip-adapter_sd15.bin"))
    assert code == 0 and not any("stored flat" in w for w in data["warnings"]), data["warnings"]
    code, data = run_json("convert", str(tmp_path / "ip-adapter_flat.bin"), "-o", str(tmp_path / "ip.safetensors"))
    assert code == 0, data
    code, data = run_json("inspect", str(tmp_path / "ip.safetensors"))
    assert code == 0 and not any("stored flat" in w for w in data["warnings"]), data["warnings"]


def test_an_a1111_hypernetwork_is_refused_by_name_with_the_key_that_reads_a_network(tmp_path: Path) -> None:
    """AUTOMATIC1111's Hypernetwork.save: per attention width an int key holding the key and value networks' state
    dicts, beside layer_structure, activation_func, step, sd_checkpoint. inspect said only "no state dict found;
    top-level entries: 768 (list, 2 items), ...; pick one with --key", and `--key 768` is no state dict."""
    def network(width: int) -> dict[str, torch.Tensor]:
        return {"linear.0.weight": torch.randn(2 * width, width), "linear.0.bias": torch.zeros(2 * width),
                "linear.1.weight": torch.randn(width, 2 * width), "linear.1.bias": torch.zeros(width)}

    torch.save({768: [network(8), network(8)], 1280: [network(16), network(16)], "step": 2000, "name": "my_hn",
                "layer_structure": [1, 2, 1], "activation_func": "relu", "is_layer_norm": False,
                "weight_initialization": "Normal", "use_dropout": False, "sd_checkpoint": "e1441589",
                "sd_checkpoint_name": "v1-5-pruned-emaonly", "activate_output": False,
                "last_layer_dropout": False}, tmp_path / "my_hn.pt")
    for command in ("inspect", "diff-keys"):
        args = [command, str(tmp_path / "my_hn.pt")] + ([str(tmp_path / "my_hn.pt")] if command == "diff-keys" else [])
        result = run_cli(*args)
        line = " ".join(result.stderr.split())
        assert result.exit_code == 2 and "Traceback" not in result.stderr, (result.exit_code, result.stderr)
        assert "an AUTOMATIC1111 hypernetwork (layer_structure [1, 2, 1])" in line, line
        assert "(768, 1280)" in line and "--key 768.0 reads one of them" in line, line
        assert "pick one with --key" not in line and "corrupt" not in line.lower(), line
    code, data = run_json("inspect", str(tmp_path / "my_hn.pt"), "--key", "768.0")
    assert code == 0 and data["num_params"] == 2 * 16 * 8 + 16 + 8, data


@pytest.mark.parametrize(("tensors", "parts"), [
    # SD 1.5 as v1-5-pruned-emaonly.safetensors holds it (A1111, ComfyUI, from_single_file).
    ({"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
      "model.diffusion_model.out.2.weight": (4, 8, 3, 3), "first_stage_model.encoder.conv_in.weight": (8, 3, 3, 3),
      "first_stage_model.post_quant_conv.weight": (4, 4, 1, 1),
      "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (50, 8)},
     {"model.diffusion_model": "UNet", "first_stage_model": "VAE", "cond_stage_model": "text encoder"}),
    # SD3 as sd3_medium_incl_clips.safetensors holds it: an MMDiT, not a UNet, and three text encoders.
    ({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": (24, 8),
      "model.diffusion_model.x_embedder.proj.weight": (8, 16, 2, 2),
      "first_stage_model.decoder.conv_in.weight": (8, 16, 3, 3),
      "text_encoders.clip_l.transformer.text_model.embeddings.token_embedding.weight": (50, 8),
      "text_encoders.t5xxl.transformer.shared.weight": (50, 8)},
     {"model.diffusion_model": "transformer", "first_stage_model": "VAE", "text_encoders": "text encoders"}),
    # ComfyUI's all-in-one Flux file (flux1-dev-fp8.safetensors): its VAE under vae.
    ({"model.diffusion_model.double_blocks.0.img_attn.qkv.weight": (24, 8),
      "model.diffusion_model.single_blocks.0.linear1.weight": (24, 8), "vae.decoder.conv_in.weight": (8, 16, 3, 3),
      "text_encoders.t5xxl.transformer.shared.weight": (50, 8)},
     {"model.diffusion_model": "transformer", "vae": "VAE", "text_encoders": "text encoders"}),
])
def test_the_parts_of_a_single_file_stable_diffusion_checkpoint_are_named(
        tmp_path: Path, tensors: dict[str, tuple[int, ...]], parts: dict[str, str]) -> None:
    """inspect's module tree of a single-file checkpoint showed model.diffusion_model, first_stage_model and
    cond_stage_model (or conditioner.embedders, text_encoders) by those names alone: which is the UNet, the VAE or the
    text encoder was left to the reader."""
    from safetensors.torch import save_file

    source = tmp_path / "single_file.safetensors"
    save_file({name: torch.randn(*shape).half() for name, shape in tensors.items()}, source,
              metadata={"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-v1"})
    result = run_cli("inspect", str(source), "--depth", "1")
    assert result.exit_code == 0, result.stderr
    tree = result.stdout[result.stdout.index("modules "):result.stdout.index("Tensors")]
    # A tiny file's one-child chains are collapsed into one node (cond_stage_model.transformer.text_model...).
    lines = {line.split()[1]: line for line in tree.splitlines() if line.startswith(("├", "└"))}
    for name, part in parts.items():
        line = next(line for node, line in lines.items() if node == name or node.startswith(name + "."))
        assert line.rstrip().endswith(f"  {part}"), (name, line)
    assert "UNet" not in tree or parts["model.diffusion_model"] == "UNet", tree


def test_a_model_with_a_diffusion_model_module_alone_gets_no_part_names(tmp_path: Path) -> None:
    """The part names are those of a single-file Stable Diffusion checkpoint only: a lone diffusion_model module
    (k-diffusion's, a standalone UNet extracted by a script) is not called one."""
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.out.2.weight": torch.randn(4, 8, 3, 3), "model.head.weight": torch.randn(2, 2)},
              tmp_path / "unet_only.safetensors")
    result = run_cli("inspect", str(tmp_path / "unet_only.safetensors"), "--depth", "1")
    assert result.exit_code == 0 and "UNet" not in result.stdout, result.stdout


def test_planning_a_kohya_lora_or_lllite_says_the_model_it_is_applied_to_is_not_planned(tmp_path: Path) -> None:
    """plan-devices on a kohya LoRA (or a ControlNet-LLLite) planned its few kB as "(whole model) → cuda:0 ... fits on
    the GPUs", with nothing said; a PEFT adapter's plan says only the adapter was planned, not its base."""
    from safetensors.torch import save_file

    name = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    save_file({f"{name}.lora_down.weight": torch.randn(4, 64).half(),
               f"{name}.lora_up.weight": torch.zeros(64, 4).half(), f"{name}.alpha": torch.tensor(4.0).half()},
              tmp_path / "style.safetensors",
              metadata={"ss_network_module": "networks.lora", "ss_base_model_version": "sdxl_base_v1-0"})
    _lllite(tmp_path / "lllite.safetensors")
    code, data = run_json("plan-devices", str(tmp_path / "style.safetensors"), "--gpu", "1GB")
    assert code == 0, data
    said = " ".join(data["warnings"])
    assert "this is a kohya-style LoRA: only its own weights are planned" in said, said
    assert "its metadata names sdxl_base_v1-0" in said, said
    code, data = run_json("plan-devices", str(tmp_path / "lllite.safetensors"), "--gpu", "1GB")
    said = " ".join(data["warnings"])
    assert code == 0 and "this is a ControlNet-LLLite: only its own weights are planned" in said, said
    assert "stable-diffusion-xl-v1-base/controlnet-lllite" in said, said


def test_a_litgpt_lora_output_folder_is_not_called_an_unfinished_download(tmp_path: Path) -> None:
    """LitGPT's finetune_lora saves the LoRA alone as final/lit_model.pth.lora ({"model": its lora_A / lora_B}) beside
    model_config.yaml and hyperparameters.yaml; merged or not, that name is by design. The folder was refused as
    holding "lit_model.pth.lora, named like weights with a suffix after it (a download still running, stopped, or
    saved twice?): ... rename the file", which LitGPT's merge_lora would then not find."""
    final = tmp_path / "out" / "finetune" / "lora" / "final"
    final.mkdir(parents=True)
    torch.save({"model": {"transformer.h.0.attn.qkv.lora_A": torch.randn(8, 32),
                          "transformer.h.0.attn.qkv.lora_B": torch.zeros(96, 8)}}, final / "lit_model.pth.lora")
    (final / "model_config.yaml").write_text("name: tiny-llama\nn_layer: 1\nn_embd: 32\n")
    (final / "hyperparameters.yaml").write_text("checkpoint_dir: checkpoints/tiny-llama\nlora_r: 8\n")
    result = run_cli("inspect", str(final))
    line = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result.stderr
    assert "lit_model.pth.lora, LitGPT's LoRA weights alone" in line, line
    assert "litgpt merge_lora" in line and "download" not in line and "rename the file" not in line, line
    code, data = run_json("inspect", str(final / "lit_model.pth.lora"))
    assert code == 0 and data["nested_key"] == "model" and data["num_params"] == 8 * 32 + 96 * 8, data


def _data_hash(path: Path) -> str:
    """kohya sd-scripts' sshs_model_hash (train_util.addnet_hash_safetensors): sha256 of the bytes after the
    header, i.e. of the tensors' data in file order."""
    import hashlib

    raw = path.read_bytes()
    return hashlib.sha256(raw[8 + struct.unpack("<Q", raw[:8])[0]:]).hexdigest()


def test_a_kohya_data_hash_is_kept_only_where_the_data_stays_as_it_was_hashed(tmp_path: Path) -> None:
    """sd-scripts records sshs_model_hash, a hash of the file's tensor data, which A1111 and CivitAI name a LoRA by.
    convert --rename laid the tensors out anew (by their new names) and shard split them among files, yet both kept
    the source's hash: a stale one, which misnames the file. A plain convert keeps the data and its hash."""
    from safetensors.torch import save_file

    tensors = {}
    for module, width in (("lora_unet_mid_block_attentions_0_proj_in", 64),
                          ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 32)):
        tensors |= {f"{module}.lora_down.weight": torch.randn(4, width).half(),
                    f"{module}.lora_up.weight": torch.randn(width, 4).half(),
                    f"{module}.alpha": torch.tensor(4.0).half()}
    source = tmp_path / "style.safetensors"
    save_file(tensors, source)
    model_hash = _data_hash(source)
    save_file(tensors, source, metadata={"sshs_model_hash": model_hash, "ss_network_module": "networks.lora"})

    code, data = run_json("convert", str(source), "-o", str(tmp_path / "copy.safetensors"))
    assert code == 0 and not any("sshs_model_hash" in w for w in data["plan"]["warnings"]), data["plan"]["warnings"]
    metadata = _header_metadata(tmp_path / "copy.safetensors") or {}
    assert metadata.get("sshs_model_hash") == model_hash == _data_hash(tmp_path / "copy.safetensors"), metadata

    # lora_te1 renamed after lora_unet: its data now comes last.
    code, data = run_json("convert", str(source), "-o", str(tmp_path / "renamed.safetensors"),
                          "--rename", "^lora_te1_=lora_zz_te1_")
    assert code == 0 and _data_hash(tmp_path / "renamed.safetensors") != model_hash, data
    metadata = _header_metadata(tmp_path / "renamed.safetensors") or {}
    assert "sshs_model_hash" not in metadata and metadata.get("ss_network_module") == "networks.lora", metadata
    assert any("sshs_model_hash is a hash of its tensor data, which the renames may reorder" in w
               for w in data["plan"]["warnings"]), data["plan"]["warnings"]

    code, data = run_json("shard", str(source), "--max", "400B", "-o", str(tmp_path / "shards"))
    assert code == 0 and data["plan"]["index"] is not None, data
    for shard in (tmp_path / "shards").glob("*.safetensors"):
        assert "sshs_model_hash" not in (_header_metadata(shard) or {}), shard
    assert any("which the split divides among the shards" in w for w in data["plan"]["warnings"]), data["plan"]


def test_an_untrained_controlnet_lllite_is_named_as_its_zero_conv_not_a_broken_layer(tmp_path: Path) -> None:
    """LLLiteModule starts each `up` Linear's weight at zero (its "zero conv", as ControlNet's zero_convs): inspect
    --stats called an untrained one's up.0.weight "a layer that was never initialized or was zeroed", which sent users
    looking for a broken layer. A trained one's up is no finding at all."""
    _lllite(tmp_path / "untrained.safetensors")
    code, data = run_json("inspect", str(tmp_path / "untrained.safetensors"), "--stats")
    assert code == 0, data
    zeros = [f for f in data["findings"] if f["code"] == "all-zero"]
    assert {f["tensor"].rsplit(".", 3)[1] for f in zeros} == {"up"} and len(zeros) == 2, zeros
    for finding in zeros:
        assert "zero convolution still at its initialization" in finding["hint"], finding
        assert "never initialized" not in finding["hint"], finding
    from safetensors.torch import load_file, save_file

    trained = {name: torch.randn_like(value.float()).half() * 0.01 if ".up.0.weight" in name else value
               for name, value in load_file(tmp_path / "untrained.safetensors").items()}
    save_file(trained, tmp_path / "trained.safetensors")
    code, data = run_json("inspect", str(tmp_path / "trained.safetensors"), "--stats")
    assert code == 0 and not [f for f in data["findings"] if f["code"] == "all-zero"], data["findings"]


def test_a_litgpt_folder_with_its_copied_config_is_not_told_to_rename_lit_model_pth(tmp_path: Path) -> None:
    """litgpt's finetune output copies the Hugging Face config.json beside lit_model.pth. diff-keys --model-class on
    that folder said "rename it so, or write it with save_pretrained": renamed to pytorch_model.bin, LitGPT's keys
    still load nothing."""
    import shutil

    hf = tmp_path / "hf"
    folder = tmp_path / "final"
    folder.mkdir()
    torch.save(_litgpt_state(_tiny_llama(hf), legacy=False), folder / "lit_model.pth")
    shutil.copy(hf / "config.json", folder / "config.json")
    code, data = run_json("diff-keys", str(folder), "--model-class", "LlamaForCausalLM")
    assert code == 1 and data["worst_severity"] == "error", data
    notes = " ".join(data["notes"])
    assert "litgpt convert_from_litgpt" in notes, notes
    assert "renaming the file would not do: convert it as the note above says" in notes, notes
    assert "rename it so" not in notes, notes


def test_an_axolotl_output_folder_names_the_merged_model_beside_the_adapter(tmp_path: Path) -> None:
    """axolotl's output_dir: adapter_model.safetensors, adapter_config.json, the base's config.json, and after
    `axolotl merge-lora` the merged model in merged/. inspect and plan-devices on output_dir read the adapter (as
    AutoPeftModel does) and said nothing of the whole model one folder down."""
    from safetensors.torch import save_file

    output = tmp_path / "lora-out"
    _tiny_llama(output / "merged")
    save_file({f"base_model.model.model.layers.0.self_attn.{p}_proj.lora_{ab}.weight":
               torch.randn(8, 32) if ab == "A" else torch.randn(32, 8) * 0.01 for p in "qv" for ab in "AB"},
              output / "adapter_model.safetensors")
    (output / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": "NousResearch/Llama-3.2-1B", "task_type": "CAUSAL_LM"}))
    (output / "config.json").write_bytes((output / "merged" / "config.json").read_bytes())
    code, data = run_json("inspect", str(output))
    assert code == 0 and data["adapter"]["peft_type"] == "LORA", data
    said = " ".join(data["warnings"])
    assert "merged/ beside this adapter holds a whole model" in said and "lora-out/merged" in said, said
    code, data = run_json("inspect", str(output / "merged"))
    assert code == 0 and data["adapter"] is None and not any("merged/" in w for w in data["warnings"]), data
    # Without merged/ (before merge-lora): nothing said of it.
    import shutil

    shutil.rmtree(output / "merged")
    code, data = run_json("inspect", str(output))
    assert code == 0 and not any("merged/" in w for w in data["warnings"]), data["warnings"]
