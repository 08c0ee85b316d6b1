"""review58: the review of thirdparty23 (LyCORIS under kohya names, ComfyUI all-in-one files, PEFT LoHa / LoKr
products), each test failing before its fix.

The ComfyUI SD3 file is reproduced from the key prefixes ComfyUI's CheckpointSave writes for SD3 (supported_models.SD3:
the VAE under `first_stage_model.`, the text encoders under `text_encoders.clip_l / clip_g / t5xxl.transformer.`),
as Stability's sd3_medium_incl_clips.safetensors holds them too; the kohya SD3 LoRA from sd-scripts'
networks/lora_sd3.py (lora_unet_joint_blocks_*, CLIP-L lora_te1_, CLIP-G lora_te2_, T5-XXL lora_te3_).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.helpers import run_cli, run_json

_CLIP_L = "text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj"


def _comfyui_sd3(path: Path) -> Path:
    """A (tiny) ComfyUI SD3 single file: MMDiT under model.diffusion_model., the VAE under first_stage_model., the
    three text encoders under text_encoders.<name>.transformer., fp16."""
    torch.manual_seed(0)
    shapes = {"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": (96, 32),
              "model.diffusion_model.x_embedder.proj.weight": (32, 16, 2, 2),
              "first_stage_model.encoder.conv_in.weight": (8, 3, 3, 3),
              "first_stage_model.decoder.conv_out.weight": (3, 8, 3, 3),
              f"{_CLIP_L}.weight": (16, 16),
              "text_encoders.clip_g.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight": (24, 24),
              "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight": (20, 20)}
    save_file({name: torch.randn(*shape).half() for name, shape in shapes.items()}, str(path))
    return path


def _kohya_sd3_lora(path: Path, clip_l_width: int = 16) -> Path:
    """sd-scripts' SD3 LoRA, rank 4, on one MMDiT qkv and one attention projection of each text encoder; its CLIP-L
    module reads `clip_l_width`."""
    torch.manual_seed(1)
    modules = {"lora_unet_joint_blocks_0_x_block_attn_qkv": (96, 32),
               "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (16, clip_l_width),
               "lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (24, 24),
               "lora_te3_encoder_block_0_layer_0_SelfAttention_q": (20, 20)}
    tensors = {}
    for module, (out, width) in modules.items():
        tensors |= {f"{module}.lora_down.weight": torch.randn(4, width),
                    f"{module}.lora_up.weight": torch.zeros(out, 4), f"{module}.alpha": torch.tensor(4.0)}
    save_file({name: tensor.half() for name, tensor in tensors.items()}, str(path),
              metadata={"ss_network_module": "networks.lora_sd3", "ss_network_dim": "4"})
    return path


def test_a_kohya_sd3_lora_against_a_comfyui_sd3_file_checks_its_text_encoders(tmp_path: Path) -> None:
    """ComfyUI's SD3 saves keep the VAE under first_stage_model., the LDM single file's prefix: the file was read as
    an LDM Stable Diffusion one only, and each text-encoder module of a kohya SD3 LoRA was "for the first text
    encoder, which B holds in another layout: not checked" (one module of four counted), so a LoRA for another
    CLIP-L width was a fit. Its text encoders are now found under text_encoders.<name>.transformer."""
    base = _comfyui_sd3(tmp_path / "sd3.safetensors")
    code, data = run_json("diff-keys", str(_kohya_sd3_lora(tmp_path / "lora.safetensors")), str(base))
    assert code == 0, data
    details = {entry["name"]: (entry["severity"], entry["detail"]) for entry in data["unexpected"]}
    assert details["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] == (
        "info", f"LoRA on {_CLIP_L}.weight")
    assert details["lora_te3_encoder_block_0_layer_0_SelfAttention_q.lora_up.weight"] == (
        "info", "LoRA on text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight")
    note = " ".join(data["notes"])
    assert "on 4 modules" in note and "4 of them in B with shapes that fit" in note
    assert "a ComfyUI single-file checkpoint" in note
    code, data = run_json("diff-keys", str(_kohya_sd3_lora(tmp_path / "wide.safetensors", clip_l_width=32)),
                          str(base))
    assert code == 1
    bad = {entry["name"]: entry["detail"] for entry in data["unexpected"] if entry["severity"] == "error"}
    assert set(bad) == {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"}
    assert bad["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"].startswith(
        f"4×32 does not fit {_CLIP_L}.weight (16×16 in B)")


def _adalora_pair(folder: Path, base_in: int = 24) -> tuple[Path, Path]:
    """peft's own AdaLoRA adapter (save_pretrained: lora_A r×in, lora_E r×1, lora_B out×r, r = init_r 12) for a
    two-Linear model reading 24 features, and a base of that model reading `base_in`."""
    import peft

    class Net(torch.nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(width, 40)
            self.fc2 = torch.nn.Linear(40, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(self.fc1(x))

    torch.manual_seed(2)
    base = folder / "base.safetensors"
    save_file(Net(base_in).state_dict(), str(base))
    model = peft.get_peft_model(Net(24), peft.AdaLoraConfig(init_r=12, target_r=4, total_step=10,
                                                            target_modules=["fc1", "fc2"]))
    model.save_pretrained(str(folder / "adapter"))
    return folder / "adapter", base


def test_a_peft_adalora_adapter_against_its_base_is_a_fit(tmp_path: Path) -> None:
    """AdaLoRA saves its singular values lora_E (r × 1) beside lora_A and lora_B: against the model it was trained on
    each lora_E was "saved for fc1.lora_E, which B does not have", an error. It is now AdaLoRA's, on a module B has;
    an AdaLoRA for another input width is still an error, on lora_A."""
    adapter, base = _adalora_pair(tmp_path)
    code, data = run_json("diff-keys", str(adapter), str(base))
    assert code == 0, data
    assert data["worst_severity"] == "info"
    details = {entry["name"]: entry["detail"] for entry in data["unexpected"]}
    assert details["base_model.model.fc1.lora_E"] == "AdaLoRA's singular values (lora_E) on fc1.weight"
    assert "2 of them in B with shapes that fit" in " ".join(data["notes"])
    (tmp_path / "other").mkdir()
    adapter, base = _adalora_pair(tmp_path / "other", base_in=32)
    code, data = run_json("diff-keys", str(adapter), str(base))
    assert code == 1
    bad = {entry["name"] for entry in data["unexpected"] if entry["severity"] == "error"}
    assert bad == {"base_model.model.fc1.lora_A"}


def test_a_kohya_flux_lora_against_a_comfyui_sd3_file_is_not_a_fit(tmp_path: Path) -> None:
    """A Flux LoRA (double_blocks, single_blocks) against an SD3 single file (joint_blocks): its CLIP-L module is
    found in SD3's clip_l, and every transformer module was then "for the UNet / transformer, which B holds in
    another layout: not checked", info, exit 0. B holds its transformer under model.diffusion_model., the names
    lora_unet_ maps to, without any of A's modules: each is an error, as a module B lacks."""
    base = _comfyui_sd3(tmp_path / "sd3.safetensors")
    torch.manual_seed(3)
    tensors = {}
    for module, (out, width) in {"lora_unet_double_blocks_0_img_attn_qkv": (96, 32),
                                 "lora_unet_single_blocks_0_linear1": (224, 32),
                                 "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (16, 16)}.items():
        tensors |= {f"{module}.lora_down.weight": torch.randn(4, width),
                    f"{module}.lora_up.weight": torch.zeros(out, 4), f"{module}.alpha": torch.tensor(4.0)}
    lora = tmp_path / "flux_lora.safetensors"
    save_file({name: tensor.to(torch.bfloat16) for name, tensor in tensors.items()}, str(lora),
              metadata={"ss_network_module": "networks.lora_flux"})
    code, data = run_json("diff-keys", str(lora), str(base))
    assert code == 1
    details = {entry["name"]: (entry["severity"], entry["detail"]) for entry in data["unexpected"]}
    assert details["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"] == (
        "error", "targets double_blocks_0_img_attn_qkv, which B does not have (with _ for .): the adapter's weights "
        "for it are dropped")
    assert details["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"][0] == "info"
    note = " ".join(data["notes"])
    assert "on 3 modules of the first text encoder, UNet / transformer" in note
    assert "1 of them in B with shapes that fit" in note


def test_sharding_a_comfyui_sd3_file_names_diffusers_among_its_loaders(tmp_path: Path) -> None:
    """ComfyUI's SD3 single file (as Stability's sd3_medium_incl_clips.safetensors) is what diffusers'
    StableDiffusion3Pipeline.from_single_file reads, text encoders included; its loaders were ComfyUI's Load
    Checkpoint node alone (before the ComfyUI naming, 'ComfyUI, diffusers' from_single_file')."""
    base = _comfyui_sd3(tmp_path / "sd3.safetensors")
    result = run_cli("shard", str(base), "-o", str(tmp_path / "out"), "--max", "1KB")
    assert result.exit_code == 0, result.output
    assert ("a ComfyUI single-file SD3 checkpoint (diffusion model, text encoders and VAE) is loaded from one file "
            "(ComfyUI's Load Checkpoint node, diffusers' StableDiffusion3Pipeline.from_single_file): none of them "
            "reads an index or these shards") in " ".join(result.output.split())


def test_a_lycoris_lokr_trained_with_train_norm_fits_its_single_file(tmp_path: Path) -> None:
    """LyCORIS' train_norm adds each norm's offsets w_norm and b_norm (one value per channel) beside the LoKr
    factors: every key of such a file, the LoKr's too, was "unknown: these weights will not load". The offsets are now
    checked against the norm's weight and bias, and one for a wider text encoder is an error."""
    torch.manual_seed(4)
    base = tmp_path / "sd.safetensors"
    save_file({name: tensor.half() for name, tensor in {
        "model.diffusion_model.input_blocks.1.0.in_layers.2.weight": torch.randn(40, 24, 3, 3),
        "model.diffusion_model.input_blocks.1.0.in_layers.0.weight": torch.randn(24),
        "model.diffusion_model.input_blocks.1.0.in_layers.0.bias": torch.randn(24),
        "cond_stage_model.transformer.text_model.encoder.layers.0.layer_norm1.weight": torch.randn(16),
        "cond_stage_model.transformer.text_model.encoder.layers.0.layer_norm1.bias": torch.randn(16)}.items()},
        str(base))
    conv, norm = "lora_unet_down_blocks_0_resnets_0_conv1", "lora_unet_down_blocks_0_resnets_0_norm1"
    text = "lora_te_text_model_encoder_layers_0_layer_norm1"

    def lokr(path: Path, text_width: int) -> Path:
        tensors = {f"{conv}.lokr_w1": torch.randn(5, 4), f"{conv}.lokr_w2_a": torch.randn(8, 4),
                   f"{conv}.lokr_w2_b": torch.randn(4, 6 * 9), f"{conv}.alpha": torch.tensor(4.0),
                   f"{norm}.w_norm": torch.randn(24), f"{norm}.b_norm": torch.randn(24),
                   f"{text}.w_norm": torch.randn(text_width), f"{text}.b_norm": torch.randn(text_width)}
        save_file({name: tensor.half() for name, tensor in tensors.items()}, str(path),
                  metadata={"ss_network_module": "lycoris.kohya"})
        return path

    code, data = run_json("diff-keys", str(lokr(tmp_path / "lokr.safetensors", 16)), str(base))
    assert code == 0, data
    details = {entry["name"]: (entry["severity"], entry["detail"]) for entry in data["unexpected"]}
    assert details[f"{norm}.b_norm"] == (
        "info", "LyCORIS' norm offset (b_norm) on model.diffusion_model.input_blocks.1.0.in_layers.0.bias")
    assert details[f"{conv}.lokr_w2_b"] == ("info", "LoKr on model.diffusion_model.input_blocks.1.0.in_layers.2.weight")
    note = " ".join(data["notes"])
    assert "LoKr, norm offsets (w_norm / b_norm) on 3 modules" in note and "3 of them in B" in note
    code, data = run_json("diff-keys", str(lokr(tmp_path / "wide.safetensors", 32)), str(base))
    assert code == 1
    bad = {entry["name"]: entry["detail"] for entry in data["unexpected"] if entry["severity"] == "error"}
    assert bad == {f"{text}.{part}": f"32 does not fit cond_stage_model.transformer.text_model.encoder.layers.0."
                   f"layer_norm1.{what} (16 in B)" for part, what in (("w_norm", "weight"), ("b_norm", "bias"))}


def test_sharding_a_comfyui_file_of_an_unnamed_family_does_not_name_forge(tmp_path: Path) -> None:
    """ComfyUI saves SD 1.x / 2.x / SDXL under cond_stage_model. / conditioner.; a file with text_encoders. whose
    diffusion model is no named family is a newer model's (AuraFlow: double_layers / single_layers, its Pile-T5
    under text_encoders.pile_t5xl.), which Forge does not load: Forge was named among its loaders."""
    torch.manual_seed(5)
    path = tmp_path / "aura.safetensors"
    save_file({name: torch.randn(*shape).half() for name, shape in {
        "model.diffusion_model.double_layers.0.attn.w2q.weight": (32, 32),
        "model.diffusion_model.single_layers.0.attn.w1q.weight": (32, 32),
        "text_encoders.pile_t5xl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight": (16, 16),
        "first_stage_model.decoder.conv_out.weight": (3, 8, 3, 3)}.items()}, str(path))
    result = run_cli("shard", str(path), "-o", str(tmp_path / "out"), "--max", "1KB")
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert ("a ComfyUI single-file checkpoint (diffusion model, text encoders and VAE) is loaded from one file "
            "(ComfyUI's Load Checkpoint node): none of them reads an index or these shards") in output
    assert "Forge" not in output
