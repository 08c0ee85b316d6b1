"""A twenty-third round: LoRA families, composite models and odd tensors as their own save code writes them:
LyCORIS' LoHa (Tucker cores `hada_t1` / `hada_t2`), LoKr (`lokr_w1`, `lokr_w2_a`, Tucker `lokr_t2`), LoCon with a
Tucker `lora_mid` and DoRA's `dora_scale`, under kohya's flat names, against the single file they adapt; a kohya
Flux LoRA against a ComfyUI all-in-one Flux checkpoint (`model.diffusion_model.double_blocks.*` beside
`text_encoders.*` and `vae.*`).

LyCORIS is not installed here: its files are reproduced from LyCORIS 3.x's module code (lycoris/modules/loha.py,
lokr.py, locon.py: the parameter names and shapes its state_dict saves, `alpha` a buffer), kohya's Flux LoRA from
sd-scripts' networks/lora_flux.py (lora_unet_<BFL module>, CLIP-L as lora_te1), the ComfyUI single file from the key
prefixes its CheckpointSave writes for Flux (model.diffusion_model., text_encoders.clip_l.transformer.,
text_encoders.t5xxl.transformer., vae.).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from tests.helpers import run_cli, run_json, write_diffusers_flux_transformer

_CONV = "lora_unet_down_blocks_0_resnets_0_conv1"  # model.diffusion_model.input_blocks.1.0.in_layers.2 (32×32×3×3)
_LINEAR = "lora_unet_down_blocks_0_attentions_0_proj_in"  # model.diffusion_model.input_blocks.1.1.proj_in (32×32)
_TEXT = "lora_te_text_model_encoder_layers_0_mlp_fc1"  # cond_stage_model.transformer...fc1 (64×16)
_LYCORIS_METADATA = {"ss_network_module": "lycoris.kohya", "ss_network_dim": "4", "ss_network_alpha": "4"}


def _sd_single_file(path: Path) -> Path:
    """A (tiny) original Stable Diffusion single file: LDM UNet names under model.diffusion_model., the CLIP text
    encoder under cond_stage_model.transformer., fp16."""
    torch.manual_seed(0)
    tensors = {
        "model.diffusion_model.input_blocks.1.0.in_layers.2.weight": torch.randn(32, 32, 3, 3),
        "model.diffusion_model.input_blocks.1.0.in_layers.2.bias": torch.randn(32),
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": torch.randn(32, 32),
        "model.diffusion_model.input_blocks.1.1.proj_in.bias": torch.randn(32),
        "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight": torch.randn(64, 16),
        "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.bias": torch.randn(64),
    }
    save_file({name: tensor.half() for name, tensor in tensors.items()}, str(path))
    return path


def _save_lycoris(path: Path, tensors: dict[str, torch.Tensor], algo: str) -> Path:
    save_file({name: tensor.half() for name, tensor in tensors.items()}, str(path),
              metadata={**_LYCORIS_METADATA, "ss_network_args": json.dumps({"algo": algo, "use_tucker": "True"})})
    return path


def _loha(path: Path, text_in: int = 16) -> Path:
    """LyCORIS LoHa, rank 4: on the 3×3 conv with Tucker cores (hada_t1 r×r×3×3, hada_w1_a r×out, hada_w1_b r×in),
    on the Linear plainly (hada_w1_a out×r, hada_w1_b r×in) with DoRA's dora_scale (out×1), on the text encoder's
    fc1 (its input `text_in` wide)."""
    torch.manual_seed(1)
    r = 4
    tensors: dict[str, torch.Tensor] = {f"{module}.alpha": torch.tensor(4.0) for module in (_CONV, _LINEAR, _TEXT)}
    for n in ("1", "2"):
        tensors |= {f"{_CONV}.hada_t{n}": torch.randn(r, r, 3, 3), f"{_CONV}.hada_w{n}_a": torch.randn(r, 32),
                    f"{_CONV}.hada_w{n}_b": torch.randn(r, 32),
                    f"{_LINEAR}.hada_w{n}_a": torch.randn(32, r), f"{_LINEAR}.hada_w{n}_b": torch.randn(r, 32),
                    f"{_TEXT}.hada_w{n}_a": torch.randn(64, r), f"{_TEXT}.hada_w{n}_b": torch.randn(r, text_in)}
    tensors[f"{_LINEAR}.dora_scale"] = torch.randn(32, 1)
    return _save_lycoris(path, tensors, "loha")


def _lokr(path: Path) -> Path:
    """LyCORIS LoKr: lokr_w1 ⊗ (lokr_w2_a @ lokr_w2_b) on the Linear (4×4 ⊗ 8×8 = 32×32), with a Tucker lokr_t2 on
    the conv (4×4 ⊗ 8×(8·3·3)), and lokr_w1_a @ lokr_w1_b ⊗ lokr_w2 on the text encoder's fc1 (8×4 ⊗ 8×4)."""
    torch.manual_seed(2)
    r = 4
    tensors = {f"{module}.alpha": torch.tensor(4.0) for module in (_CONV, _LINEAR, _TEXT)}
    tensors |= {f"{_LINEAR}.lokr_w1": torch.randn(4, 4), f"{_LINEAR}.lokr_w2_a": torch.randn(8, r),
                f"{_LINEAR}.lokr_w2_b": torch.randn(r, 8),
                f"{_CONV}.lokr_w1": torch.randn(4, 4), f"{_CONV}.lokr_t2": torch.randn(r, r, 3, 3),
                f"{_CONV}.lokr_w2_a": torch.randn(r, 8), f"{_CONV}.lokr_w2_b": torch.randn(r, 8),
                f"{_TEXT}.lokr_w1_a": torch.randn(8, 2), f"{_TEXT}.lokr_w1_b": torch.randn(2, 4),
                f"{_TEXT}.lokr_w2": torch.randn(8, 4)}
    return _save_lycoris(path, tensors, "lokr")


def _locon_tucker(path: Path, mid_kernel: int = 3) -> Path:
    """LyCORIS LoCon with use_tucker: on the 3×3 conv a pointwise lora_down (r×in×1×1), the lora_mid core
    (r×r×3×3) and a pointwise lora_up (out×r×1×1, zero before training); a plain pair on the Linear."""
    torch.manual_seed(3)
    r = 4
    tensors = {f"{_CONV}.lora_down.weight": torch.randn(r, 32, 1, 1),
               f"{_CONV}.lora_mid.weight": torch.randn(r, r, mid_kernel, mid_kernel),
               f"{_CONV}.lora_up.weight": torch.zeros(32, r, 1, 1), f"{_CONV}.alpha": torch.tensor(4.0),
               f"{_LINEAR}.lora_down.weight": torch.randn(r, 32), f"{_LINEAR}.lora_up.weight": torch.zeros(32, r),
               f"{_LINEAR}.alpha": torch.tensor(4.0)}
    return _save_lycoris(path, tensors, "locon")


def test_lycoris_loha_and_lokr_against_their_single_file_are_adapters_that_fit(tmp_path: Path) -> None:
    """A LyCORIS LoHa or LoKr against the single file it adapts was "unknown: no known cause: these weights will
    not load" for every alpha, hada_t1, lokr_w1_a, dora_scale (and every base weight), worst severity error, where
    ComfyUI and A1111 apply it: each module is now found in B and the product of its factors checked against the
    weight's shape."""
    base = _sd_single_file(tmp_path / "sd.safetensors")
    for adapter, method in ((_loha(tmp_path / "loha.safetensors"), "LoHa"),
                            (_lokr(tmp_path / "lokr.safetensors"), "LoKr")):
        code, data = run_json("diff-keys", str(adapter), str(base))
        assert code == 0, data
        assert data["worst_severity"] == "info"
        assert {entry["reason"] for entry in data["unexpected"]} == {"adapter"}
        assert {entry["reason"] for entry in data["missing"]} == {"adapter-base"}
        details = {entry["name"]: entry["detail"] for entry in data["unexpected"]}
        assert details[f"{_CONV}.alpha"] == (
            f"the alpha of the {method} on model.diffusion_model.input_blocks.1.0.in_layers.2")
        core = f"{_CONV}.hada_t1" if method == "LoHa" else f"{_CONV}.lokr_t2"
        assert details[core] == f"{method} on model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
        note = " ".join(data["notes"])
        assert "A is a LyCORIS adapter" in note and f"{method} on 3 modules" in note
        assert "3 of them in B with shapes that fit" in note and "create_lycoris_from_weights" in note
    details = {entry["name"]: entry["detail"] for entry in run_json(
        "diff-keys", str(tmp_path / "loha.safetensors"), str(base))[1]["unexpected"]}
    assert details[f"{_LINEAR}.dora_scale"] == (
        "the dora_scale of the LoHa on model.diffusion_model.input_blocks.1.1.proj_in")


def test_a_loha_whose_product_does_not_fit_is_an_error_naming_both_shapes(tmp_path: Path) -> None:
    """A LoHa made for a wider text encoder (fc1 reading 32, B's reads 16): its factors' product is named against
    B's weight, an error; the modules that fit stay info."""
    base = _sd_single_file(tmp_path / "sd.safetensors")
    code, data = run_json("diff-keys", str(_loha(tmp_path / "loha.safetensors", text_in=32)), str(base))
    assert code == 1
    bad = {entry["name"]: entry for entry in data["unexpected"] if entry["severity"] == "error"}
    assert set(bad) == {f"{_TEXT}.hada_w{n}_{ab}" for n in "12" for ab in "ab"}
    assert bad[f"{_TEXT}.hada_w1_b"]["detail"] == (
        "LoHa on cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1: its product is 64×32, which does "
        "not fit cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight (64×16 in B)")
    assert "2 of them in B with shapes that fit" in " ".join(data["notes"])


def test_a_locon_with_a_tucker_lora_mid_fits_its_convolution(tmp_path: Path) -> None:
    """LoCon's Tucker form (lora_down 1×1, lora_mid 3×3, lora_up 1×1 on a 3×3 conv) was "unknown: these weights
    will not load" for all its keys: lora_mid was no kohya part, and a pointwise lora_down on a 3×3 conv does not
    fit without the core. A core of the wrong kernel is an error."""
    base = _sd_single_file(tmp_path / "sd.safetensors")
    code, data = run_json("diff-keys", str(_locon_tucker(tmp_path / "locon.safetensors")), str(base))
    assert code == 0, data
    details = {entry["name"]: (entry["severity"], entry["detail"]) for entry in data["unexpected"]}
    conv = "model.diffusion_model.input_blocks.1.0.in_layers.2"
    assert details[f"{_CONV}.lora_mid.weight"] == ("info", f"the Tucker core (lora_mid) of the LoRA on {conv}.weight")
    assert details[f"{_CONV}.lora_down.weight"] == ("info", f"LoRA on {conv}.weight")
    assert "LoRA (rank 4) (Tucker lora_mid on 1 module) on 2 modules" in " ".join(data["notes"])
    code, data = run_json("diff-keys", str(_locon_tucker(tmp_path / "pointwise.safetensors", mid_kernel=1)),
                          str(base))
    assert code == 1
    details = {entry["name"]: (entry["severity"], entry["detail"]) for entry in data["unexpected"]}
    assert details[f"{_CONV}.lora_mid.weight"] == (
        "error", f"4×4×1×1 does not fit {conv}.weight (32×32×3×3 in B): its kernel is not the weight's")


def _comfyui_flux(path: Path, hidden: int = 32) -> Path:
    """A ComfyUI all-in-one Flux file (CheckpointSave's, as Comfy-Org's flux1-dev-fp8.safetensors): the
    transformer in Black Forest Labs' layout under model.diffusion_model., CLIP-L and T5-XXL under
    text_encoders.<name>.transformer., the VAE under vae."""
    torch.manual_seed(4)
    tensors = {}
    for block in range(2):
        double = f"model.diffusion_model.double_blocks.{block}."
        tensors |= {double + "img_attn.qkv.weight": torch.randn(3 * hidden, hidden),
                    double + "img_attn.qkv.bias": torch.randn(3 * hidden),
                    double + "img_mlp.0.weight": torch.randn(4 * hidden, hidden)}
        single = f"model.diffusion_model.single_blocks.{block}."
        tensors |= {single + "linear1.weight": torch.randn(7 * hidden, hidden),
                    single + "linear2.weight": torch.randn(hidden, 5 * hidden)}
    tensors |= {
        "model.diffusion_model.img_in.weight": torch.randn(hidden, 16),
        "text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight": torch.randn(16, 16),
        "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight": torch.randn(16, 16),
        "vae.encoder.conv_in.weight": torch.randn(8, 3, 3, 3), "vae.decoder.conv_out.weight": torch.randn(3, 8, 3, 3)}
    save_file({name: tensor.to(torch.bfloat16) for name, tensor in tensors.items()}, str(path))
    return path


def _kohya_flux_lora(path: Path, hidden: int = 32) -> Path:
    """sd-scripts' flux_train_network.py LoRA: lora_unet_<BFL module> (fused qkv), CLIP-L's as lora_te1_."""
    torch.manual_seed(5)
    r = 4
    tensors = {}
    modules = {"double_blocks_0_img_attn_qkv": (3 * hidden, hidden), "double_blocks_1_img_mlp_0": (4 * hidden, hidden),
               "single_blocks_0_linear1": (7 * hidden, hidden), "single_blocks_1_linear2": (hidden, 5 * hidden)}
    for module, (out, width) in modules.items():
        tensors |= {f"lora_unet_{module}.lora_down.weight": torch.randn(r, width),
                    f"lora_unet_{module}.lora_up.weight": torch.zeros(out, r),
                    f"lora_unet_{module}.alpha": torch.tensor(4.0)}
    te = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
    tensors |= {f"{te}.lora_down.weight": torch.randn(r, 16), f"{te}.lora_up.weight": torch.zeros(16, r),
                f"{te}.alpha": torch.tensor(4.0)}
    save_file({name: tensor.to(torch.bfloat16) for name, tensor in tensors.items()}, str(path),
              metadata={"ss_network_module": "networks.lora_flux", "ss_network_dim": "4"})
    return path


def test_a_kohya_flux_lora_against_a_comfyui_all_in_one_flux_file_is_checked(tmp_path: Path) -> None:
    """A kohya Flux LoRA against ComfyUI's all-in-one Flux file was "unknown: these weights will not load" for
    every key of both, worst severity error, where ComfyUI loads it onto exactly those modules: each module is now
    found under model.diffusion_model. / text_encoders.clip_l.transformer. and its shapes checked."""
    base = _comfyui_flux(tmp_path / "flux1-dev-fp8.safetensors")
    code, data = run_json("diff-keys", str(_kohya_flux_lora(tmp_path / "flux_lora.safetensors")), str(base))
    assert code == 0, data
    assert {entry["reason"] for entry in data["unexpected"]} == {"adapter"}
    assert {entry["reason"] for entry in data["missing"]} == {"adapter-base"}
    details = {entry["name"]: entry["detail"] for entry in data["unexpected"]}
    assert details["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"] == (
        "LoRA on model.diffusion_model.double_blocks.0.img_attn.qkv.weight")
    assert details["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] == (
        "LoRA on text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight")
    note = " ".join(data["notes"])
    assert "on 5 modules of the first text encoder, UNet / transformer (in B, a ComfyUI single-file checkpoint)" \
        in note and "5 of them in B with shapes that fit" in note and "ComfyUI or Forge" in note
    # A LoRA for a Flux of another width is an error, not a fit.
    code, data = run_json("diff-keys", str(_kohya_flux_lora(tmp_path / "wide.safetensors", hidden=48)), str(base))
    assert code == 1
    assert data["unexpected"] and any(entry["severity"] == "error" and "does not fit "
                                      "model.diffusion_model.double_blocks.0.img_attn.qkv.weight" in entry["detail"]
                                      for entry in data["unexpected"])


def _bitnet_folder(folder: Path) -> Path:
    """A BitNet b1.58 save as transformers' BitLinear holds it (microsoft/bitnet-b1.58-2B-4T's layout): each
    Linear's `weight` uint8 [out / 4, in], four ternary values a byte, beside its bf16 `weight_scale` (1,); norms and
    the (tied) embedding in bf16; quantization_config {"quant_method": "bitnet", "linear_class": "bitlinear"}."""
    torch.manual_seed(6)
    hidden, inner, vocab = 64, 128, 256
    tensors = {"model.embed_tokens.weight": torch.randn(vocab, hidden).bfloat16(),
               "model.norm.weight": torch.ones(hidden).bfloat16()}
    for layer in range(2):
        prefix = f"model.layers.{layer}."
        shapes = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden // 2, hidden),
                  "self_attn.v_proj": (hidden // 2, hidden), "self_attn.o_proj": (hidden, hidden),
                  "mlp.gate_proj": (inner, hidden), "mlp.up_proj": (inner, hidden), "mlp.down_proj": (hidden, inner)}
        for module, (out, width) in shapes.items():
            tensors[f"{prefix}{module}.weight"] = torch.randint(0, 256, (out // 4, width), dtype=torch.uint8)
            tensors[f"{prefix}{module}.weight_scale"] = torch.rand(1).bfloat16()
        for norm, width in (("input_layernorm", hidden), ("post_attention_layernorm", hidden),
                            ("self_attn.attn_sub_norm", hidden), ("mlp.ffn_sub_norm", inner)):
            tensors[f"{prefix}{norm}.weight"] = torch.ones(width).bfloat16()
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "hidden_size": hidden,
        "intermediate_size": inner, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": vocab, "hidden_act": "relu2", "max_position_embeddings": 128, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16", "bos_token_id": 0, "eos_token_id": 1,
        "quantization_config": {"quant_method": "bitnet", "linear_class": "bitlinear",
                                "quantization_mode": "offline"}}))
    return folder


def test_inspect_counts_a_bitnet_checkpoints_ternary_weights_four_a_byte(tmp_path: Path) -> None:
    """inspect said of a BitNet save "bitnet: 35,520 parameters once unpacked; 0 packed tensor(s)": each packed byte
    counted as one weight, a quarter of every Linear. BitNetForCausalLM of this config holds 90,816 parameters (its
    num_parameters(), measured), which plan-devices plans; inspect now says the same."""
    folder = _bitnet_folder(tmp_path / "bitnet")
    code, data = run_json("inspect", str(folder))
    assert code == 0
    assert data["quantized"] == {"method": "bitnet", "bits": None, "packed_tensors": 14, "side_tensors": 14,
                                 "parameters": 90816}
    assert data["num_params"] == 35534  # the stored values, as documented
    assert data["module_tree"][0]["num_params"] == 90816
    code, plan = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and plan["num_params"] == 90816


def test_inspect_stats_shows_no_nan_for_a_tensor_with_a_zero_size_dimension(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A torch.save'd state dict with empty tensors (0×4, 0, 3×0×2): inspect --stats printed "nan nan nan nan%" in
    their row, as for a tensor full of NaN, beside "undetermined (empty tensor)"; they have no values, shown as
    "-". The --json keeps its documented "nan" strings and count 0."""
    path = tmp_path / "zero.bin"
    torch.manual_seed(7)
    torch.save({"emb.weight": torch.randn(0, 4), "bias": torch.zeros(0), "w": torch.randn(3, 0, 2),
                "ok": torch.randn(2, 2)}, path)
    from weightdoctor.render import console

    # The console read COLUMNS when first imported, by whichever test came first (80 wide in the whole suite, where
    # each row wrapped and "(empty tensor)" was cut in two): laid out 200 wide for this test alone.
    monkeypatch.setattr(console.stdout, "_width", 200)
    result = run_cli("inspect", str(path), "--stats", runner=CliRunner(env={"COLUMNS": "200"}))
    assert result.exit_code == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "(empty tensor)" in line]
    assert len(rows) == 3
    for row in rows:
        assert "nan" not in row and row.count(" - ") >= 4, row
    code, data = run_json("inspect", str(path), "--stats")
    assert code == 0
    stats = {tensor["name"]: tensor["stats"] for tensor in data["tensors"]}
    assert stats["w"]["count"] == 0 and stats["w"]["mean"] == "nan" and stats["ok"]["count"] == 4


_LLAMA_LINEARS = {"self_attn.q_proj": (64, 64), "self_attn.k_proj": (32, 64), "self_attn.v_proj": (32, 64),
                  "self_attn.o_proj": (64, 64), "mlp.gate_proj": (128, 64), "mlp.up_proj": (128, 64),
                  "mlp.down_proj": (64, 128)}


def _unsloth_dynamic_4bit(folder: Path, skip: list[str]) -> tuple[Path, int]:
    """An Unsloth dynamic 4-bit save (save_pretrained of a model loaded in 4 bits, as unsloth/*-unsloth-bnb-4bit
    repos hold): config.json with `unsloth_version`, a bitsandbytes nf4 quantization_config whose
    `llm_int8_skip_modules` keeps lm_head and layer 1's MLP in bf16, those stored as plain bf16 weights and every
    other Linear packed (uint8 [n/2, 1] beside absmax, quant_map, quant_state). Returns the folder and the bytes
    the loaded layers hold: the packed weights' bytes plus every bf16 tensor's (the quantization state left out,
    as transformers' planner leaves it)."""
    torch.manual_seed(8)
    tensors = {"model.embed_tokens.weight": torch.randn(256, 64).bfloat16(), "lm_head.weight":
               torch.randn(256, 64).bfloat16(), "model.norm.weight": torch.ones(64).bfloat16()}
    for layer in range(2):
        for module, (out, width) in _LLAMA_LINEARS.items():
            name = f"model.layers.{layer}.{module}.weight"
            if any(name.startswith(kept + ".") for kept in skip):
                tensors[name] = torch.randn(out, width).bfloat16()
                continue
            state = json.dumps({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [out, width]})
            tensors |= {name: torch.randint(0, 255, (out * width // 2, 1), dtype=torch.uint8),
                        name + ".absmax": torch.rand(out * width // 64), name + ".quant_map": torch.rand(16),
                        name + ".quant_state.bitsandbytes__nf4": torch.tensor(list(state.encode()), dtype=torch.uint8)}
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"model.layers.{layer}.{norm}.weight"] = torch.ones(64).bfloat16()
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
        "max_position_embeddings": 128, "torch_dtype": "bfloat16", "tie_word_embeddings": False,
        "unsloth_version": "2025.3.19", "unsloth_fixed": True,
        "quantization_config": {
            "_load_in_4bit": True, "_load_in_8bit": False, "bnb_4bit_compute_dtype": "bfloat16",
            "bnb_4bit_quant_storage": "uint8", "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": False,
            "llm_int8_enable_fp32_cpu_offload": False, "llm_int8_has_fp16_weight": False,
            "llm_int8_skip_modules": skip, "llm_int8_threshold": 6.0, "load_in_4bit": True, "load_in_8bit": False,
            "quant_method": "bitsandbytes"}}))
    held = sum(tensor.numel() * tensor.element_size() for name, tensor in tensors.items()
               if tensor.dtype == torch.bfloat16 or (tensor.dtype == torch.uint8 and name.endswith(".weight")))
    return folder, held


def test_plan_devices_keeps_the_modules_an_unsloth_4bit_config_skips_at_bf16(tmp_path: Path) -> None:
    """plan-devices sized every Linear of a bitsandbytes save at 4 bits but the ones transformers skips by default
    (lm_head), ignoring the config's llm_int8_skip_modules: Unsloth's dynamic 4-bit repos keep many layers in
    bf16 so, and the plan was 103,040 bytes where the loaded layers hold 139,904 (the stored packed weights and
    bf16 tensors). transformers' bnb quantizer passes llm_int8_skip_modules to replace_with_bnb_linear, which
    leaves those modules as they are."""
    folder, held = _unsloth_dynamic_4bit(tmp_path / "unsloth", ["lm_head", "model.layers.1.mlp"])
    code, plan = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0, plan
    assert held == 139904
    assert plan["dtype"] == "int4" and plan["weights_bytes"] == held
    assert any("llm_int8_skip_modules names (lm_head, model.layers.1.mlp) at their floating dtype" in warning
               for warning in plan["warnings"])


def test_diff_keys_says_an_unsloth_4bit_save_is_packed_not_another_architecture(tmp_path: Path) -> None:
    """An Unsloth 4-bit save against its merged 16-bit save (save_pretrained_merged "merged_16bit": the same
    config, unsloth_version and all, without the quantization_config): each packed weight was "shape: same name,
    different shape: the architecture differs", with a note offering ignore_mismatched_sizes=True, which starts
    them at random. They are A's quantizer's packing: still errors for B's model, now said so."""
    quantized, _ = _unsloth_dynamic_4bit(tmp_path / "unsloth-bnb-4bit", ["lm_head", "model.layers.1.mlp"])
    merged = tmp_path / "merged_16bit"
    merged.mkdir()
    config = json.loads((quantized / "config.json").read_text())
    del config["quantization_config"]
    (merged / "config.json").write_text(json.dumps(config))
    torch.manual_seed(9)
    tensors = {"model.embed_tokens.weight": torch.randn(256, 64), "lm_head.weight": torch.randn(256, 64),
               "model.norm.weight": torch.ones(64)}
    for layer in range(2):
        tensors |= {f"model.layers.{layer}.{module}.weight": torch.randn(*shape)
                    for module, shape in _LLAMA_LINEARS.items()}
        tensors |= {f"model.layers.{layer}.{norm}.weight": torch.ones(64)
                    for norm in ("input_layernorm", "post_attention_layernorm")}
    save_file({name: tensor.bfloat16() for name, tensor in tensors.items()}, str(merged / "model.safetensors"))
    code, data = run_json("diff-keys", str(quantized), str(merged))
    assert code == 1
    assert len(data["mismatched"]) == 11
    assert {(m["reason"], m["severity"]) for m in data["mismatched"]} == {("quantization", "error")}
    down = next(m for m in data["mismatched"] if m["name"] == "model.layers.0.mlp.down_proj.weight")
    assert down["detail"] == ("4096×1 in A, 64×128 in B; packed by A's bitsandbytes 4-bit quantizer, B holds it "
                              "unquantized")
    notes = " ".join(data["notes"])
    assert "ignore_mismatched_sizes=True (it then initializes them at random)" not in notes
    assert "11 weights of A are stored packed by the bitsandbytes 4-bit quantizer its config names" in notes
    # Against B quantized the same way nothing is packed on one side only.
    code, data = run_json("diff-keys", str(quantized), str(quantized))
    assert code == 0 and not data["mismatched"]


def test_a_peft_loha_or_lokr_for_another_model_size_is_caught(tmp_path: Path) -> None:
    """peft's LoHa and LoKr (Tucker cores for the conv: use_effective_conv2d) were only checked for their module's
    name: "shapes not compared ... an adapter for another size of the model is not caught". Their factors' product
    is the weight's shape: against a base whose layers are another size, where PeftModel.from_pretrained raises
    (the oracle), it is now an error naming both shapes; against their own base, a fit."""
    import peft

    class Small(torch.nn.Module):
        def __init__(self, conv_in: int = 8, fc_in: int = 16) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(conv_in, 16, 3)
            self.fc = torch.nn.Linear(fc_in, 16)

    torch.manual_seed(10)
    save_file(Small().state_dict(), str(tmp_path / "base.safetensors"))
    save_file(Small(4, 32).state_dict(), str(tmp_path / "other.safetensors"))
    configs = {"LoHa": peft.LoHaConfig(r=4, target_modules=["conv", "fc"], use_effective_conv2d=True),
               "LoKr": peft.LoKrConfig(r=4, target_modules=["conv", "fc"], use_effective_conv2d=True)}
    for method, config in configs.items():
        adapter = tmp_path / method
        peft.get_peft_model(Small(), config).save_pretrained(str(adapter))
        peft.PeftModel.from_pretrained(Small(), str(adapter))  # its own base takes it
        try:
            peft.PeftModel.from_pretrained(Small(4, 32), str(adapter))
        except RuntimeError as error:
            assert "size mismatch" in str(error)
        else:
            raise AssertionError(f"peft loaded the {method} into a base of another size")
        code, data = run_json("diff-keys", str(adapter), str(tmp_path / "base.safetensors"))
        assert code == 0 and data["worst_severity"] == "info", data["unexpected"]
        assert f"A is a PEFT adapter: {method} on 2 modules, 2 of them in B with shapes that fit" in data["notes"][0]
        code, data = run_json("diff-keys", str(adapter), str(tmp_path / "other.safetensors"))
        assert code == 1
        details = {entry["detail"] for entry in data["unexpected"]}
        assert details == {f"{method} on fc: its product is 16×16, which does not fit fc.weight (16×32 in B)",
                           f"{method} on conv: its product is 16×72, which does not fit conv.weight (16×4×3×3 in B)"}
        assert "0 of them in B with shapes that fit" in data["notes"][0]


def test_shard_names_a_comfyui_all_in_one_flux_file_and_what_loads_it(tmp_path: Path) -> None:
    """shard of ComfyUI's all-in-one Flux file warned "a single-file Stable Diffusion checkpoint is loaded from one
    file (AUTOMATIC1111, ComfyUI, diffusers' from_single_file / load_lora_weights)": AUTOMATIC1111 loads no Flux,
    and this file is ComfyUI's, its text encoders and VAE inside."""
    base = _comfyui_flux(tmp_path / "flux1-dev-fp8.safetensors")
    code, data = run_json("shard", str(base), "--max", "10KB", "-o", str(tmp_path / "shards"))
    assert code == 0 and len(data["plan"]["shards"]) > 1
    said = [warning for warning in data["plan"]["warnings"] if "is loaded from one file" in warning]
    assert said == ["a ComfyUI single-file Flux checkpoint (diffusion model, text encoders and VAE) is loaded from one "
                    "file (ComfyUI's Load Checkpoint node, Forge): none of them reads an index or these shards"]


def test_a_trained_tucker_lora_mid_is_not_called_untrained(tmp_path: Path) -> None:
    """A LoCon whose lora_down and lora_mid have trained off their kaiming_uniform start: inspect --stats warned
    "lora_mid.weight still matches its initialization kaiming_uniform(a=√5, fan_in) U(±0.1667) (found normal(...,
    0.96))", the init named beside values ten times its scale, because the init of a name it did not know was only
    guessed. lora_mid is an nn.Conv2d LyCORIS starts as one (kaiming_uniform(a=√5)); one still there is at init."""
    base = _locon_tucker(tmp_path / "trained.safetensors")
    code, data = run_json("inspect", str(base), "--stats")
    assert code == 0
    mid = next(t for t in data["tensors"] if t["name"] == f"{_CONV}.lora_mid.weight")
    assert mid["init"]["at_init"] is False and mid["init"]["label"] == "trained"
    assert mid["init"]["expected"]["source"] == (
        "LyCORIS' Tucker core (lora_mid), kaiming_uniform as its nn.Conv2d starts")
    assert not [f for f in data["findings"] if f["code"] == "untrained-tensor"], data["findings"]
    # At its start (as LyCORIS saves it before a step) it matches its init.
    torch.manual_seed(11)
    tensors = {f"{_CONV}.lora_mid.weight": torch.nn.Conv2d(8, 8, 3, bias=False).weight.detach(),
               f"{_CONV}.lora_down.weight": torch.nn.Conv2d(32, 8, 1, bias=False).weight.detach(),
               f"{_CONV}.lora_up.weight": torch.zeros(32, 8, 1, 1), f"{_CONV}.alpha": torch.tensor(8.0)}
    save_file(tensors, str(tmp_path / "start.safetensors"))
    code, data = run_json("inspect", str(tmp_path / "start.safetensors"), "--stats")
    assert code == 0
    mid = next(t for t in data["tensors"] if t["name"] == f"{_CONV}.lora_mid.weight")
    assert mid["init"]["at_init"] is True, mid["init"]


def test_diff_keys_does_not_offer_dequantize_for_a_bitnet_save(tmp_path: Path) -> None:
    """A BitNet save against its bf16 master (microsoft's bitnet-b1.58-2B-4T-bf16 beside the packed one): the note
    for A's packed weights offered model.dequantize(), which transformers' BitNet quantizer does not implement
    (it keeps HfQuantizer._dequantize, which raises NotImplementedError: the oracle below)."""
    from transformers import BitNetConfig, BitNetForCausalLM

    folder = _bitnet_folder(tmp_path / "bitnet")
    config = json.loads((folder / "config.json").read_text())
    del config["quantization_config"]
    master = tmp_path / "bf16"
    master.mkdir()
    (master / "config.json").write_text(json.dumps(config))
    torch.manual_seed(12)
    BitNetForCausalLM(BitNetConfig(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")})
                      ).to(torch.bfloat16).save_pretrained(str(master))
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizer_bitnet import BitNetHfQuantizer
    from transformers.quantizers.quantizer_bnb_4bit import Bnb4BitHfQuantizer

    # BitNet's quantizer keeps the base _dequantize, which raises NotImplementedError; bitsandbytes' has its own.
    assert BitNetHfQuantizer._dequantize is HfQuantizer._dequantize
    assert Bnb4BitHfQuantizer._dequantize is not HfQuantizer._dequantize
    code, data = run_json("diff-keys", str(folder), str(master))
    assert code == 1
    assert {(m["reason"], m["severity"]) for m in data["mismatched"]} == {("quantization", "error")}
    note = next(n for n in data["notes"] if "stored packed by the bitnet quantizer" in n)
    assert "model.dequantize()" not in note
    assert note.endswith("transformers cannot dequantize a bitnet model (no dequantize()): compare A with a checkpoint "
                         "quantized the same way")


def test_a_lycoris_lokr_for_flux_is_not_said_to_convert_in_diffusers(tmp_path: Path) -> None:
    """A LyCORIS LoKr trained on Flux under kohya's names (lora_unet_double_blocks_0_img_attn_qkv.lokr_w1, as
    sd-scripts with --network_module lycoris.kohya saves it), against a diffusers FluxTransformer2DModel: with
    LyCORIS' parts now read, it would have been "in Black Forest Labs' Flux layout, which diffusers'
    load_lora_weights converts to B's", as a kohya LoRA is; diffusers converts lora_down / lora_up only (its LoKr
    loads fail, huggingface/diffusers#13137). It is a warning saying so; against BFL's own file its products are
    checked."""
    torch.manual_seed(13)
    tensors = {}
    for module, (out, width) in {"double_blocks_0_img_attn_qkv": (48, 16), "single_blocks_0_linear1": (80, 16)}.items():
        tensors |= {f"lora_unet_{module}.lokr_w1": torch.randn(4, 4), f"lora_unet_{module}.lokr_w2": torch.zeros(
            out // 4, width // 4), f"lora_unet_{module}.alpha": torch.tensor(4.0)}
    save_file({k: v.to(torch.bfloat16) for k, v in tensors.items()}, str(tmp_path / "flux_lokr.safetensors"),
              metadata={"ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps({"algo": "lokr"})})
    transformer = write_diffusers_flux_transformer(
        tmp_path / "transformer", {name: torch.zeros(16, 16, dtype=torch.bfloat16) for name in (
            "transformer_blocks.0.attn.to_q.weight", "single_transformer_blocks.0.attn.to_q.weight")})
    code, data = run_json("diff-keys", str(tmp_path / "flux_lokr.safetensors"), str(transformer))
    assert code == 0 and data["worst_severity"] == "warn", data
    details = {entry["name"]: (entry["severity"], entry["detail"]) for entry in data["unexpected"]}
    assert details["lora_unet_double_blocks_0_img_attn_qkv.lokr_w1"] == ("warn", (
        "for double_blocks_0_img_attn_qkv in Black Forest Labs' Flux layout, a LyCORIS LoKr that diffusers' "
        "load_lora_weights does not convert to B's (ComfyUI and Forge load it onto the original "
        "flux1-*.safetensors)"))
    assert any(note.startswith("A is a LyCORIS LoKr for Flux (2 modules named as Black Forest Labs'")
               and "diffusers' load_lora_weights converts kohya's lora_down / lora_up only, not these" in note
               for note in data["notes"]), data["notes"]
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(48, 16, dtype=torch.bfloat16),
               "single_blocks.0.linear1.weight": torch.zeros(80, 16, dtype=torch.bfloat16)},
              str(tmp_path / "flux1-dev.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "flux_lokr.safetensors"), str(tmp_path / "flux1-dev.safetensors"))
    assert code == 0 and data["worst_severity"] == "info"
    assert ("info", "LoKr on double_blocks.0.img_attn.qkv.weight") in {
        (entry["severity"], entry["detail"]) for entry in data["unexpected"]}
