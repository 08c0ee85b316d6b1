"""Review of thirdparty22 (kohya LoRAs in diff-keys, lora-rank, unused-part's deeper part, the LDM EMA copy in
plan-devices): LoRA factors told apart by rank only where the whole module is the same one at another rank, a LoRA
convolution whose kernel does not fit B's said not to fit, peft's other LoRA factors (embeddings, a wrapped model's
own state dict) told apart by rank, and the docs' table of reasons kept whole."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.helpers import REPO_ROOT, run_json, write_diffusers_flux_transformer


def _kohya_unet_lora(path: Path, rank: int, context: int) -> None:
    """A kohya-ss SD 2.x-style LoRA (diffusers module names, flat) on one self-attention to_q (320 → 320) and one
    cross-attention to_k, whose input is the text encoder's width: 768 for SD 1.5 (CLIP ViT-L), 1024 for SD 2.1
    (OpenCLIP ViT-H)."""
    torch.manual_seed(rank)
    state = {}
    for module, width_in in {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": 320,
                             "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k": context}.items():
        state[f"{module}.lora_down.weight"] = torch.randn(rank, width_in).half()
        state[f"{module}.lora_up.weight"] = torch.zeros(320, rank).half()
        state[f"{module}.alpha"] = torch.tensor(float(rank)).half()
    save_file(state, str(path), metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(rank)})


def test_a_lora_for_another_base_model_is_not_one_of_another_rank_only(tmp_path: Path) -> None:
    """An SD 1.5 LoRA at network_dim 4 against an SD 2.1 one at 8: the cross-attention's to_k reads the text
    encoder's output, 768 wide in one and 1024 in the other, so its lora_down differs on the input axis while its
    lora_up (320 × rank) differs in rank alone. That lora_up was a `lora-rank` and the note said "2 LoRA modules
    differ in rank only", though the to_k module is another base model's. Only to_q, whose both factors differ in
    rank alone, is; both of to_k's factors are shape differences."""
    _kohya_unet_lora(tmp_path / "sd15_r4.safetensors", 4, 768)
    _kohya_unet_lora(tmp_path / "sd21_r8.safetensors", 8, 1024)
    code, data = run_json("diff-keys", str(tmp_path / "sd15_r4.safetensors"), str(tmp_path / "sd21_r8.safetensors"))
    assert code == 1, data
    rows = {m["name"].split("transformer_blocks_0_")[1]: (m["reason"], m["detail"]) for m in data["mismatched"]}
    assert rows == {
        "attn1_to_q.lora_down.weight": ("lora-rank", "4×320 in A, 8×320 in B: LoRA rank 4 in A, 8 in B"),
        "attn1_to_q.lora_up.weight": ("lora-rank", "320×4 in A, 320×8 in B: LoRA rank 4 in A, 8 in B"),
        "attn2_to_k.lora_down.weight": ("shape", "4×768 in A, 8×1024 in B"),
        "attn2_to_k.lora_up.weight": ("shape", "320×4 in A, 320×8 in B"),
    }, rows
    notes = " ".join(data["notes"])
    assert "1 LoRA module differs in rank only: A and B adapt the same modules" in notes, data["notes"]
    assert "2 keys differ in shape" in notes, data["notes"]


def _diffusers_unet(folder: Path) -> None:
    """A diffusers UNet2DConditionModel folder: a ResNet's 3×3 conv1, its 1×1 conv_shortcut (input_blocks.4.0's
    skip_connection in the LDM layout) and its time_emb_proj (an nn.Linear)."""
    folder.mkdir()
    save_file({"down_blocks.1.resnets.0.conv1.weight": torch.zeros(64, 32, 3, 3, dtype=torch.float16),
               "down_blocks.1.resnets.0.conv_shortcut.weight": torch.zeros(64, 32, 1, 1, dtype=torch.float16),
               "down_blocks.1.resnets.0.time_emb_proj.weight": torch.zeros(64, 128, dtype=torch.float16)},
              str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel",
                                                    "_diffusers_version": "0.30.0"}))


def test_a_lora_convolution_whose_kernel_is_not_b_s_does_not_fit(tmp_path: Path) -> None:
    """A kohya LoRA's lora_down on a convolution is a convolution with the module's own kernel (LoCon: 4 × in × 3 ×
    3 on a 3 × 3 conv), its lora_up pointwise. Only the channel axes were compared, so an SDXL LoRA (LDM names,
    mapped onto a diffusers UNet) with a 3 × 3 lora_down on a 1 × 1 conv_shortcut, a 1 × 1 one on a 3 × 3 conv1 and
    a 3 × 3 one on a Linear was "LoRA on ...", info, exit 0: up @ down has another number of elements than each
    weight, so load_state_dict raises (diffusers / peft) and ComfyUI's reshape fails. Each says why it does not fit;
    a pointwise lora_down on the Linear (ComfyUI and A1111 reshape it) still fits."""
    torch.manual_seed(0)
    lora = tmp_path / "sdxl_locon.safetensors"
    state = {}
    for module, (width_in, width_out, kernel) in {
            "lora_unet_input_blocks_4_0_in_layers_2": (32, 64, (1, 1)),
            "lora_unet_input_blocks_4_0_skip_connection": (32, 64, (3, 3)),
            "lora_unet_input_blocks_4_0_emb_layers_1": (128, 64, (3, 3))}.items():
        state[f"{module}.lora_down.weight"] = torch.randn(4, width_in, *kernel).half()
        state[f"{module}.lora_up.weight"] = torch.zeros(width_out, 4, 1, 1).half()
        state[f"{module}.alpha"] = torch.tensor(4.0).half()
    save_file(state, str(lora), metadata={"ss_network_module": "networks.lora", "ss_conv_dim": "4"})
    unet = tmp_path / "unet"
    _diffusers_unet(unet)
    code, data = run_json("diff-keys", str(lora), str(unet))
    assert code == 1 and data["worst_severity"] == "error", data
    details = {issue["name"]: (issue["severity"], issue["detail"]) for issue in data["unexpected"]}
    assert details["lora_unet_input_blocks_4_0_in_layers_2.lora_down.weight"] == (
        "error", "4×32×1×1 does not fit down_blocks.1.resnets.0.conv1.weight (64×32×3×3 in B): its 1×1 kernel is not "
                 "that of B's 3×3 convolution")
    assert details["lora_unet_input_blocks_4_0_skip_connection.lora_down.weight"] == (
        "error", "4×32×3×3 does not fit down_blocks.1.resnets.0.conv_shortcut.weight (64×32×1×1 in B): its 3×3 "
                 "kernel is not that of B's 1×1 convolution")
    assert details["lora_unet_input_blocks_4_0_emb_layers_1.lora_down.weight"] == (
        "error", "4×128×3×3 does not fit down_blocks.1.resnets.0.time_emb_proj.weight (64×128 in B): its 3×3 kernel "
                 "does not fit B's linear layer")
    assert any("on 3 modules of the UNet / transformer (B), 0 of them in B with shapes that fit" in note
               for note in data["notes"]), data["notes"]
    # Kernels that fit (3 × 3 on the 3 × 3 conv, 1 × 1 on the 1 × 1 one and on the Linear) still fit.
    state["lora_unet_input_blocks_4_0_in_layers_2.lora_down.weight"] = torch.randn(4, 32, 3, 3).half()
    state["lora_unet_input_blocks_4_0_skip_connection.lora_down.weight"] = torch.randn(4, 32, 1, 1).half()
    state["lora_unet_input_blocks_4_0_emb_layers_1.lora_down.weight"] = torch.randn(4, 128, 1, 1).half()
    save_file(state, str(lora))
    code, data = run_json("diff-keys", str(lora), str(unet))
    assert code == 0 and data["worst_severity"] == "info", data["unexpected"]


def test_a_peft_conv_lora_whose_kernel_is_not_b_s_does_not_fit(tmp_path: Path) -> None:
    """The same for a peft adapter: peft's lora_A on an nn.Conv2d takes the layer's kernel (r × in × kh × kw), so a
    3 × 3 lora_A on a 1 × 1 convolution was "LoRA on ..." though PeftModel.from_pretrained raises on its size."""
    save_file({"base_model.model.conv.lora_A.weight": torch.zeros(4, 8, 3, 3),
               "base_model.model.conv.lora_B.weight": torch.zeros(16, 4, 1, 1)}, str(tmp_path / "adapter.safetensors"))
    save_file({"conv.weight": torch.zeros(16, 8, 1, 1), "conv.bias": torch.zeros(16)},
              str(tmp_path / "model.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "adapter.safetensors"), str(tmp_path / "model.safetensors"))
    assert code == 1, data
    details = {issue["name"]: (issue["severity"], issue["detail"]) for issue in data["unexpected"]}
    assert details["base_model.model.conv.lora_A.weight"] == (
        "error", "4×8×3×3 does not fit conv.weight (16×8×1×1 in B): its 3×3 kernel is not that of B's 1×1 "
                 "convolution"), details


def test_peft_embedding_and_wrapped_model_factors_of_another_rank_are_lora_rank(tmp_path: Path) -> None:
    """peft's LoRA on an nn.Embedding saves lora_embedding_A (r × rows) and lora_embedding_B (dim × r), and a
    PeftModel's own state dict (torch.save(model.state_dict())) names the adapter (`lora_A.default.weight`): two
    of each at r 4 and 8 were "same name, different shape: the architecture differs" with the from_pretrained
    note, where lora_A / lora_B saved by save_pretrained were already told apart as lora-rank."""
    def adapter(rank: int) -> dict[str, torch.Tensor]:
        return {"base_model.model.embed_tokens.lora_embedding_A": torch.zeros(rank, 100),
                "base_model.model.embed_tokens.lora_embedding_B": torch.zeros(16, rank),
                "base_model.model.q_proj.lora_A.default.weight": torch.zeros(rank, 16),
                "base_model.model.q_proj.lora_B.default.weight": torch.zeros(16, rank),
                "base_model.model.q_proj.base_layer.weight": torch.zeros(16, 16)}
    save_file(adapter(4), str(tmp_path / "r4.safetensors"))
    save_file(adapter(8), str(tmp_path / "r8.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "r4.safetensors"), str(tmp_path / "r8.safetensors"))
    assert code == 1, data
    rows = {m["name"]: (m["reason"], m["detail"]) for m in data["mismatched"]}
    assert rows == {
        "base_model.model.embed_tokens.lora_embedding_A": ("lora-rank", "4×100 in A, 8×100 in B: LoRA rank 4 in A, "
                                                                         "8 in B"),
        "base_model.model.embed_tokens.lora_embedding_B": ("lora-rank", "16×4 in A, 16×8 in B: LoRA rank 4 in A, "
                                                                         "8 in B"),
        "base_model.model.q_proj.lora_A.default.weight": ("lora-rank", "4×16 in A, 8×16 in B: LoRA rank 4 in A, "
                                                                        "8 in B"),
        "base_model.model.q_proj.lora_B.default.weight": ("lora-rank", "16×4 in A, 16×8 in B: LoRA rank 4 in A, "
                                                                        "8 in B"),
    }, rows
    assert any(note.startswith("2 LoRA modules differ in rank only") for note in data["notes"]), data["notes"]
    assert not any("ignore_mismatched_sizes" in note for note in data["notes"]), data["notes"]


def test_a_lora_of_another_width_is_no_flux_lora_for_b(tmp_path: Path) -> None:
    """thirdparty22 names a Flux LoRA in one layout against the Flux transformer in the other as the layout the
    loaders map, "shapes not checked", info. A LoRA for a narrower transformer of the same block names (an SD 3
    LoRA in diffusers' layout, 1536 wide, against FLUX.1's 3072; here 24 against 32) was so too, exit 0, though
    neither ComfyUI nor diffusers loads it onto B: the down factor of each attention projection reads the hidden
    state, so its width is checked against B's, both ways round."""
    lora = {}
    for module in ("transformer.transformer_blocks.0.attn.to_q", "transformer.transformer_blocks.0.attn.to_k",
                   "transformer.transformer_blocks.0.ff.net.2"):
        lora[f"{module}.lora_A.weight"] = torch.zeros(4, 24 if "attn" in module else 96)
        lora[f"{module}.lora_B.weight"] = torch.zeros(24, 4)
    save_file(lora, str(tmp_path / "sd3_lora.safetensors"))
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(96, 32),
               "single_blocks.0.linear1.weight": torch.zeros(224, 32)}, str(tmp_path / "flux1-dev.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "sd3_lora.safetensors"), str(tmp_path / "flux1-dev.safetensors"))
    assert code == 1 and data["worst_severity"] == "error", data
    details = {issue["name"]: (issue["severity"], issue["detail"]) for issue in data["unexpected"]}
    assert details["transformer.transformer_blocks.0.attn.to_q.lora_B.weight"] == (
        "error", "for transformer_blocks.0.attn.to_q in diffusers' Flux layout: its lora_A (4×24) reads a hidden "
                 "state 24 wide, B's transformer's is 32: an adapter for another model"), details
    # The feed-forward's output projection reads the MLP's width, not the hidden state's: not judged by it.
    assert details["transformer.transformer_blocks.0.ff.net.2.lora_A.weight"][0] == "info", details
    assert any(note.endswith("; but 2 modules of it read a hidden state of another width than B's transformer: it is "
                             "a LoRA for another model, which neither loader maps onto B") for note in data["notes"])
    # The kohya layout against a diffusers FluxTransformer2DModel of another width: the same.
    kohya = {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.zeros(4, 24),
             "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.zeros(72, 4),
             "lora_unet_double_blocks_0_img_attn_qkv.alpha": torch.tensor(4.0)}
    save_file(kohya, str(tmp_path / "kohya_flux.safetensors"))
    transformer = write_diffusers_flux_transformer(
        tmp_path / "transformer", {"transformer_blocks.0.attn.to_q.weight": torch.zeros(32, 32),
                                   "single_transformer_blocks.0.attn.to_q.weight": torch.zeros(32, 32)})
    code, data = run_json("diff-keys", str(tmp_path / "kohya_flux.safetensors"), str(transformer))
    assert code == 1, data
    assert {issue["detail"] for issue in data["unexpected"]} == {
        "for double_blocks_0_img_attn_qkv in Black Forest Labs' Flux layout: its lora_down (4×24) reads a hidden "
        "state 24 wide, B's transformer's is 32: an adapter for another model"}, data["unexpected"]
    # As wide as B: as before, info.
    kohya["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"] = torch.zeros(4, 32)
    save_file(kohya, str(tmp_path / "kohya_flux.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "kohya_flux.safetensors"), str(transformer))
    assert code == 0 and data["worst_severity"] == "info", data["unexpected"]


def test_every_diff_keys_reason_is_in_the_docs_table() -> None:
    """The --json `reason` values are a documented contract: each of REASONS (lora-rank, added by thirdparty22,
    included) has its row in docs/commands/diff-keys.md's table, and each row there is one diff-keys gives."""
    from weightdoctor.diff_keys import REASONS

    doc = (REPO_ROOT / "docs" / "commands" / "diff-keys.md").read_text()
    rows = set(re.findall(r"^\| `([a-z]+(?:-[a-z]+)*)` \| (?:info|warn|error)", doc, re.M))
    assert rows == set(REASONS), (sorted(set(REASONS) - rows), sorted(rows - set(REASONS)))
