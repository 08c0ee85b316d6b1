"""A sixth round of checkpoints as other tools write them: LyCORIS' and peft's LoHa / LoKr adapters, image and
video generation single files and pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, run_json


def _lycoris_loha(path: Path) -> None:
    """A LoHa as LyCORIS 3.x (kohya sd-scripts' `--network_module lycoris.kohya --network_args algo=loha`) saves it
    before any step: per module `lora_unet_<path>.hada_w1_a` (out×r, normal std 0.1), `hada_w1_b` (r×in, normal std
    1), `hada_w2_a` (out×r, constant 0), `hada_w2_b` (r×in, normal std 1) and the `alpha` buffer, in fp16, with
    sd-scripts' ss_* metadata; a LoKr module beside it (lokr_w1 kaiming, lokr_w2_a kaiming, lokr_w2_b zero)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    tensors: dict[str, torch.Tensor] = {}
    for module in ("lora_unet_down_blocks_0_attentions_0_proj_in", "lora_te_text_model_encoder_layers_0_mlp_fc1"):
        tensors[f"{module}.hada_w1_a"] = torch.randn(64, 4) * 0.1
        tensors[f"{module}.hada_w1_b"] = torch.randn(4, 64)
        tensors[f"{module}.hada_w2_a"] = torch.zeros(64, 4)
        tensors[f"{module}.hada_w2_b"] = torch.randn(4, 64)
        tensors[f"{module}.alpha"] = torch.tensor(4.0)
    lokr = "lora_unet_mid_block_attentions_0_proj_out"
    tensors[f"{lokr}.lokr_w1"] = torch.empty(8, 8).uniform_(-0.35, 0.35)
    tensors[f"{lokr}.lokr_w2_a"] = torch.empty(40, 4).uniform_(-0.5, 0.5)
    tensors[f"{lokr}.lokr_w2_b"] = torch.zeros(4, 40)
    tensors[f"{lokr}.alpha"] = torch.tensor(4.0)
    save_file({k: v.half() for k, v in tensors.items()}, str(path),
              metadata={"ss_network_module": "lycoris.kohya", "ss_network_dim": "4", "ss_network_alpha": "4",
                        "ss_network_args": json.dumps({"algo": "loha"})})


def test_a_loha_or_lokr_adapter_at_init_is_named_as_an_adapter(tmp_path: Path) -> None:
    """LoHa and LoKr start one factor of their product at zero (LyCORIS: hada_w2_a, lokr_w2_b; peft 0.x:
    hada_w2_b, lokr_w1). inspect --stats called it "a layer that was never initialized or was zeroed; it passes
    nothing on", as it once did of kohya's lora_up, sending users to look for a broken layer."""
    from peft import LoHaConfig, LoKrConfig, get_peft_model

    lycoris = tmp_path / "loha.safetensors"
    _lycoris_loha(lycoris)
    sources = [lycoris]
    for name, config in (("peft-loha", LoHaConfig(r=4, target_modules=["q", "v"])),
                         ("peft-lokr", LoKrConfig(r=4, target_modules=["q", "v"]))):
        torch.manual_seed(0)
        base = torch.nn.ModuleDict({"q": torch.nn.Linear(64, 64), "v": torch.nn.Linear(64, 64)})
        get_peft_model(base, config).save_pretrained(str(tmp_path / name))
        sources.append(tmp_path / name)
    for source in sources:
        code, data = run_json("inspect", str(source), "--stats")
        assert code == 0, source
        zero = [f for f in data["findings"] if f["code"] == "all-zero"]
        assert zero, (source, data["findings"])
        for finding in zero:
            assert "LoHa / LoKr adapter still at its initialization" in finding["hint"], finding
            assert "never initialized" not in finding["hint"], finding


def test_a_yolov5_checkpoint_is_not_sent_to_the_ultralytics_package(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """yolov5s.pt as github.com/ultralytics/yolov5's train.py saves it: {"epoch", "best_fitness", "model": its
    models.yolo.Model pickled whole (fp16), "ema", "updates", "optimizer", "opt", "git", "date"}. The refusal told the
    user to load it with ultralytics' YOLO(path), which raises on exactly these files ("appears to be an Ultralytics
    YOLOv5 model ... NOT forwards compatible with YOLOv8", torch_safe_load on ModuleNotFoundError 'models')."""
    import sys
    import types

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))

    Model.__module__, Model.__qualname__ = "models.yolo", "Model"
    yolo = types.ModuleType("models.yolo")
    yolo.Model = Model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "models", types.ModuleType("models"))
    monkeypatch.setitem(sys.modules, "models.yolo", yolo)
    path = tmp_path / "yolov5s.pt"
    torch.save({"epoch": -1, "best_fitness": None, "model": Model().half(), "ema": None, "updates": None,
                "optimizer": None, "opt": {"epochs": 300}, "git": None, "date": "2022-02-22T12:00:00"}, path)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and result.stdout == ""
    text = " ".join(result.stderr.split())
    assert "models.yolo.Model" in text and "this is a YOLOv5 checkpoint" in text, text
    assert "YOLO(path)" not in text and "ultralytics package refuses" in text and "clone of ultralytics/yolov5" in text


def _orbax_run(root: Path) -> None:
    """A run folder as orbax-checkpoint 0.11's CheckpointManager saves it (openpi's and MaxText's checkpoints): one
    folder per step, each with _CHECKPOINT_METADATA beside its items; the `params` item an OCDBT tree (_METADATA,
    _sharding, array_metadatas/process_0, manifest.ocdbt, ocdbt.process_0/d/<hash>, d/<hash>)."""
    for step in ("1000", "2000"):
        item = root / step / "params"
        (item / "ocdbt.process_0" / "d").mkdir(parents=True)
        (item / "d").mkdir()
        (item / "array_metadatas").mkdir()
        (root / step / "_CHECKPOINT_METADATA").write_text(json.dumps(
            {"item_handlers": {"params": "orbax.checkpoint._src.handlers.standard_checkpoint_handler."
                                         "StandardCheckpointHandler"}, "metrics": {}, "performance_metrics": {},
             "init_timestamp_nsecs": 1700000000000000000, "commit_timestamp_nsecs": 1700000001000000000,
             "custom_metadata": {}}))
        (item / "_METADATA").write_text(json.dumps({"tree_metadata": {
            "('params', 'Dense_0', 'kernel')": {"key_metadata": [{"key": "params", "key_type": 2}],
                                                "value_metadata": {"value_type": "jax.Array", "skip_deserialize": False,
                                                                   "write_shape": [64, 64]}}},
            "use_zarr3": False, "store_array_data_equal_to_fill_value": True}))
        (item / "_sharding").write_text("{}")
        (item / "array_metadatas" / "process_0").write_text("{}")
        (item / "manifest.ocdbt").write_bytes(b"\x00" * 64)
        (item / "ocdbt.process_0" / "d" / "24d1d89bac0128c13875f30189d41d5e").write_bytes(b"\x00" * 128)
        (item / "d" / "cfae78e20e3d1ca493b14df122a61d03").write_bytes(b"\x00" * 32)


def test_an_orbax_checkpoint_is_named_as_one(tmp_path: Path) -> None:
    """JAX runs (Flax, MaxText, openpi) save through Orbax: every command said only "folder holds no weight file",
    at the run folder, at a step and at an item, leaving the user to guess what the folder is and what to do."""
    root = tmp_path / "checkpoints"
    _orbax_run(root)
    for source in (root, root / "2000", root / "2000" / "params"):
        for command in (["inspect"], ["plan-devices", "--gpu", "1GB"], ["check-dtype"]):
            result = run_cli(*command, str(source))
            assert result.exit_code == 2 and result.stdout == "", (command, source)
            text = " ".join(result.stderr.split())
            assert "an Orbax (JAX) checkpoint" in text and "orbax.checkpoint" in text, (command, source, text)
    # A folder of PyTorch weights that merely holds a file named like Orbax's is not called one.
    other = tmp_path / "plain"
    other.mkdir()
    (other / "_METADATA").write_text("{}")
    assert "Orbax" not in run_cli("inspect", str(other)).stderr


def _flux_pair(tmp_path: Path, dim: int = 16, mlp: int = 64) -> tuple[Path, Path]:
    """A two-block Flux transformer twice: as Black Forest Labs' flux1-dev.safetensors names it (their flux package's
    Flux module: double_blocks.N.img_attn.qkv, single_blocks.N.linear1 fusing qkv and the MLP's input, img_in, txt_in,
    time_in / vector_in / guidance_in, final_layer) and as diffusers 0.30's FluxTransformer2DModel saves it to
    transformer/diffusion_pytorch_model.safetensors (transformer_blocks.N.attn.to_q, single_transformer_blocks.N,
    x_embedder, context_embedder, time_text_embed, norm_out, proj_out), beside its config.json."""
    from safetensors.torch import save_file

    def t(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape) * 0.02).bfloat16()

    torch.manual_seed(0)
    bfl: dict[str, torch.Tensor] = {"img_in.weight": t(dim, 64), "img_in.bias": t(dim), "txt_in.weight": t(dim, 32),
                                    "txt_in.bias": t(dim), "time_in.in_layer.weight": t(dim, 256),
                                    "vector_in.in_layer.weight": t(dim, 24), "guidance_in.in_layer.weight": t(dim, 256),
                                    "final_layer.linear.weight": t(64, dim),
                                    "final_layer.adaLN_modulation.1.weight": t(2 * dim, dim)}
    diffusers: dict[str, torch.Tensor] = {
        "x_embedder.weight": t(dim, 64), "x_embedder.bias": t(dim), "context_embedder.weight": t(dim, 32),
        "context_embedder.bias": t(dim), "time_text_embed.timestep_embedder.linear_1.weight": t(dim, 256),
        "time_text_embed.text_embedder.linear_1.weight": t(dim, 24),
        "time_text_embed.guidance_embedder.linear_1.weight": t(dim, 256), "proj_out.weight": t(64, dim),
        "norm_out.linear.weight": t(2 * dim, dim)}
    for i in range(2):
        for side in ("img", "txt"):
            bfl[f"double_blocks.{i}.{side}_attn.qkv.weight"] = t(3 * dim, dim)
            bfl[f"double_blocks.{i}.{side}_attn.proj.weight"] = t(dim, dim)
            bfl[f"double_blocks.{i}.{side}_attn.norm.query_norm.scale"] = t(dim // 2)
            bfl[f"double_blocks.{i}.{side}_mlp.0.weight"] = t(mlp, dim)
            bfl[f"double_blocks.{i}.{side}_mod.lin.weight"] = t(6 * dim, dim)
        bfl[f"single_blocks.{i}.linear1.weight"] = t(3 * dim + mlp, dim)
        bfl[f"single_blocks.{i}.linear2.weight"] = t(dim, dim + mlp)
        bfl[f"single_blocks.{i}.norm.query_norm.scale"] = t(dim // 2)
        bfl[f"single_blocks.{i}.modulation.lin.weight"] = t(3 * dim, dim)
        for proj in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj"):
            diffusers[f"transformer_blocks.{i}.attn.{proj}.weight"] = t(dim, dim)
        diffusers[f"transformer_blocks.{i}.attn.to_out.0.weight"] = t(dim, dim)
        diffusers[f"transformer_blocks.{i}.attn.to_add_out.weight"] = t(dim, dim)
        diffusers[f"transformer_blocks.{i}.attn.norm_q.weight"] = t(dim // 2)
        diffusers[f"transformer_blocks.{i}.attn.norm_added_q.weight"] = t(dim // 2)
        diffusers[f"transformer_blocks.{i}.ff.net.0.proj.weight"] = t(mlp, dim)
        diffusers[f"transformer_blocks.{i}.ff_context.net.0.proj.weight"] = t(mlp, dim)
        diffusers[f"transformer_blocks.{i}.norm1.linear.weight"] = t(6 * dim, dim)
        diffusers[f"transformer_blocks.{i}.norm1_context.linear.weight"] = t(6 * dim, dim)
        for proj in ("to_q", "to_k", "to_v"):
            diffusers[f"single_transformer_blocks.{i}.attn.{proj}.weight"] = t(dim, dim)
        diffusers[f"single_transformer_blocks.{i}.attn.norm_q.weight"] = t(dim // 2)
        diffusers[f"single_transformer_blocks.{i}.proj_mlp.weight"] = t(mlp, dim)
        diffusers[f"single_transformer_blocks.{i}.proj_out.weight"] = t(dim, dim + mlp)
        diffusers[f"single_transformer_blocks.{i}.norm.linear.weight"] = t(3 * dim, dim)
    original = tmp_path / "flux1-dev.safetensors"
    save_file(bfl, str(original))
    folder = tmp_path / "FLUX.1-dev" / "transformer"
    folder.mkdir(parents=True)
    save_file(diffusers, str(folder / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "FluxTransformer2DModel", "_diffusers_version": "0.30.0.dev0", "attention_head_dim": 8,
        "guidance_embeds": True, "in_channels": 64, "joint_attention_dim": 32, "num_attention_heads": 2,
        "num_layers": 2, "num_single_layers": 2, "patch_size": 1, "pooled_projection_dim": 24}))
    return original, folder


def test_an_original_flux_or_sd3_transformer_against_diffusers_is_a_foreign_layout(tmp_path: Path) -> None:
    """diff-keys flux1-dev.safetensors FLUX.1-dev/transformer listed every key `unknown` and offered as "suggested
    fix" the one pair a rename can match (img_in → x_embedder, proj_out ← final_layer.linear): the fused qkv (and
    single blocks' fused MLP) need diffusers' from_single_file. The same for SD3's joint_blocks, ComfyUI-prefixed."""
    from safetensors.torch import save_file

    original, folder = _flux_pair(tmp_path)
    for a, b, side in ((original, folder, "A"), (folder, original, "B")):
        code, data = run_json("diff-keys", str(a), str(b))
        assert code == 1 and data["matched"] == 0
        assert data["suggested_renames"] == [] and data["python_snippet"] is None, data["suggested_renames"]
        assert len(data["notes"]) == 1 and data["notes"][0].startswith(f"{side} is a diffusion transformer in its "
                                                                        "original single-file layout"), data["notes"]
        assert ("from_single_file" in data["notes"][0]) == (side == "A")
        reasons = {entry["reason"] for entry in data["missing"] + data["unexpected"]}
        assert reasons == {"foreign-layout"}, reasons
    # SD3 (Stability's sd3_medium.safetensors, under ComfyUI's prefix) against SD3Transformer2DModel.
    torch.manual_seed(0)
    sd3 = {"model.diffusion_model.pos_embed": torch.randn(1, 16, 16).half(),
           "model.diffusion_model.x_embedder.proj.weight": torch.randn(16, 16, 2, 2).half(),
           "model.diffusion_model.context_embedder.weight": torch.randn(16, 32).half()}
    mmdit = {"pos_embed.proj.weight": torch.randn(16, 16, 2, 2).half(),
             "context_embedder.weight": torch.randn(16, 32).half()}
    for i in range(2):
        for block in ("x_block", "context_block"):
            sd3[f"model.diffusion_model.joint_blocks.{i}.{block}.attn.qkv.weight"] = torch.randn(48, 16).half()
            sd3[f"model.diffusion_model.joint_blocks.{i}.{block}.adaLN_modulation.1.weight"] = \
                torch.randn(96, 16).half()
        for proj in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj"):
            mmdit[f"transformer_blocks.{i}.attn.{proj}.weight"] = torch.randn(16, 16).half()
        mmdit[f"transformer_blocks.{i}.norm1.linear.weight"] = torch.randn(96, 16).half()
        mmdit[f"transformer_blocks.{i}.norm1_context.linear.weight"] = torch.randn(96, 16).half()
    save_file(sd3, str(tmp_path / "sd3_medium.safetensors"))
    save_file(mmdit, str(tmp_path / "sd3_transformer.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "sd3_medium.safetensors"),
                          str(tmp_path / "sd3_transformer.safetensors"))
    assert code == 1 and data["suggested_renames"] == [], data["suggested_renames"]
    assert len(data["notes"]) == 1 and "SD3: joint_blocks" in data["notes"][0], data["notes"]
    assert {entry["reason"] for entry in data["missing"] + data["unexpected"]} == {"foreign-layout"}


def test_an_sdxl_single_file_against_a_diffusers_unet_names_the_sdxl_pipeline(tmp_path: Path) -> None:
    """sd_xl_base_1.0.safetensors (Stability's generative-models layout: conditioner.embedders.0 CLIP-L,
    conditioner.embedders.1 OpenCLIP-G, model.diffusion_model with label_emb, first_stage_model) against a diffusers
    unet/: the note sent the user to StableDiffusionPipeline.from_single_file, the SD 1.x/2.x pipeline."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    sdxl = {"conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight":
            torch.randn(100, 16).half(),
            "conditioner.embedders.1.model.token_embedding.weight": torch.randn(100, 24).half(),
            "conditioner.embedders.1.model.text_projection": torch.randn(24, 24).half(),
            "model.diffusion_model.input_blocks.0.0.weight": torch.randn(32, 4, 3, 3).half(),
            "model.diffusion_model.label_emb.0.0.weight": torch.randn(32, 64).half(),
            "model.diffusion_model.time_embed.0.weight": torch.randn(32, 8).half(),
            "first_stage_model.decoder.conv_out.weight": torch.randn(3, 16, 3, 3).half()}
    save_file(sdxl, str(tmp_path / "sd_xl_base_1.0.safetensors"))
    unet = {"conv_in.weight": torch.randn(32, 4, 3, 3).half(),
            "add_embedding.linear_1.weight": torch.randn(32, 64).half(),
            "time_embedding.linear_1.weight": torch.randn(32, 8).half(),
            "down_blocks.0.resnets.0.conv1.weight": torch.randn(32, 32, 3, 3).half()}
    save_file(unet, str(tmp_path / "unet.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "sd_xl_base_1.0.safetensors"), str(tmp_path / "unet.safetensors"))
    assert code == 1 and len(data["notes"]) == 1, data["notes"]
    assert "StableDiffusionXLPipeline.from_single_file" in data["notes"][0], data["notes"]


def _openai_whisper(path: Path) -> dict[str, int]:
    """A one-layer Whisper as openai-whisper 20240930 saves it (tiny.pt's layout): {"dims": ModelDimensions as a
    dict, "model_state_dict": fp16 tensors named as whisper.model.Whisper names them}. Returns the dims."""
    dims = {"n_mels": 8, "n_vocab": 64, "n_audio_ctx": 10, "n_audio_state": 8, "n_audio_head": 2,
            "n_audio_layer": 1, "n_text_ctx": 12, "n_text_state": 8, "n_text_head": 2, "n_text_layer": 1}
    torch.manual_seed(0)
    sd = {"encoder.positional_embedding": torch.randn(10, 8), "encoder.conv1.weight": torch.randn(8, 8, 3),
          "encoder.conv1.bias": torch.randn(8), "encoder.conv2.weight": torch.randn(8, 8, 3),
          "encoder.conv2.bias": torch.randn(8), "encoder.ln_post.weight": torch.ones(8),
          "encoder.ln_post.bias": torch.zeros(8), "decoder.token_embedding.weight": torch.randn(64, 8),
          "decoder.positional_embedding": torch.randn(12, 8), "decoder.ln.weight": torch.ones(8),
          "decoder.ln.bias": torch.zeros(8)}
    for side in ("encoder", "decoder"):
        block = f"{side}.blocks.0"
        for attn in ("attn", "cross_attn") if side == "decoder" else ("attn",):
            for proj in ("query", "key", "value", "out"):
                sd[f"{block}.{attn}.{proj}.weight"] = torch.randn(8, 8)
                if proj != "key":
                    sd[f"{block}.{attn}.{proj}.bias"] = torch.randn(8)
            sd[f"{block}.{attn}_ln.weight"], sd[f"{block}.{attn}_ln.bias"] = torch.ones(8), torch.zeros(8)
        sd[f"{block}.mlp.0.weight"], sd[f"{block}.mlp.0.bias"] = torch.randn(16, 8), torch.randn(16)
        sd[f"{block}.mlp.2.weight"], sd[f"{block}.mlp.2.bias"] = torch.randn(8, 16), torch.randn(8)
        sd[f"{block}.mlp_ln.weight"], sd[f"{block}.mlp_ln.bias"] = torch.ones(8), torch.zeros(8)
    torch.save({"dims": dims, "model_state_dict": {k: v.half() for k, v in sd.items()}}, path)
    return dims


def test_an_openai_whisper_checkpoint_against_transformers_whisper_names_the_converter(tmp_path: Path) -> None:
    """diff-keys tiny.pt against transformers' Whisper (a saved model, or --model-class) offered three renames that
    match 10 of its keys (one of them decoder.token_embedding → the tied proj_out) and called the rest unknown;
    transformers' convert_openai_to_hf.py renames them all and builds the config from `dims`."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    dims = _openai_whisper(tmp_path / "tiny.pt")
    config = WhisperConfig(vocab_size=dims["n_vocab"], num_mel_bins=dims["n_mels"], d_model=8, encoder_layers=1,
                           decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
                           decoder_ffn_dim=16, max_source_positions=10, max_target_positions=12, pad_token_id=62,
                           bos_token_id=62, eos_token_id=62, decoder_start_token_id=63, suppress_tokens=None,
                           begin_suppress_tokens=None)
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(str(tmp_path / "whisper-hf"))
    for extra in ([str(tmp_path / "whisper-hf")],
                  ["--model-class", "WhisperForConditionalGeneration", "--config", str(tmp_path / "whisper-hf")]):
        code, data = run_json("diff-keys", str(tmp_path / "tiny.pt"), *extra)
        assert code == 1, extra
        said = [note for note in data["notes"] if "openai-whisper's own layout" in note]
        assert len(said) == 1 and "convert_openai_to_hf.py" in said[0] and "dims" in said[0], data["notes"]
    # transformers' Whisper against itself: no such note.
    code, data = run_json("diff-keys", str(tmp_path / "whisper-hf"), str(tmp_path / "whisper-hf"))
    assert code == 0 and not any("openai-whisper" in note for note in data["notes"])


def test_shards_of_a_hunyuanvideo_single_file_are_not_called_flux(tmp_path: Path) -> None:
    """hunyuan_video_t2v_720p_bf16.safetensors (Tencent's HunyuanVideo transformer as ComfyUI loads it: double_blocks
    with img_attn_qkv / img_mlp.fc1 / img_mod.linear, single_blocks with linear1 / modulation.linear,
    txt_in.individual_token_refiner, img_in.proj a Conv3d): shard said "an original-layout Flux checkpoint is loaded
    from one file"."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    weights = {"img_in.proj.weight": torch.randn(16, 16, 1, 2, 2), "txt_in.input_embedder.weight": torch.randn(16, 32),
               "txt_in.individual_token_refiner.blocks.0.self_attn_qkv.weight": torch.randn(48, 16),
               "time_in.mlp.0.weight": torch.randn(16, 256), "vector_in.in_layer.weight": torch.randn(16, 24),
               "guidance_in.mlp.0.weight": torch.randn(16, 256), "final_layer.linear.weight": torch.randn(64, 16)}
    for i in range(2):
        for side in ("img", "txt"):
            weights[f"double_blocks.{i}.{side}_attn_qkv.weight"] = torch.randn(48, 16)
            weights[f"double_blocks.{i}.{side}_mlp.fc1.weight"] = torch.randn(64, 16)
            weights[f"double_blocks.{i}.{side}_mod.linear.weight"] = torch.randn(96, 16)
        weights[f"single_blocks.{i}.linear1.weight"] = torch.randn(112, 16)
        weights[f"single_blocks.{i}.modulation.linear.weight"] = torch.randn(48, 16)
    source = tmp_path / "hunyuan_video_t2v_720p_bf16.safetensors"
    save_file({k: v.bfloat16() for k, v in weights.items()}, str(source))
    code, data = run_json("shard", str(source), "-o", str(tmp_path / "out"), "--max", "20KB")
    assert code == 0, data
    said = [w for w in data["plan"]["warnings"] if "is loaded from one file" in w]
    assert len(said) == 1 and said[0].startswith("an original-layout HunyuanVideo checkpoint"), data["plan"]["warnings"]
    # Black Forest Labs' Flux is still named so.
    flux, _ = _flux_pair(tmp_path)
    code, data = run_json("shard", str(flux), "-o", str(tmp_path / "flux-out"), "--max", "10KB")
    assert code == 0 and any(w.startswith("an original-layout Flux checkpoint") for w in data["plan"]["warnings"])


def test_a_comfyui_scaled_fp8_checkpoint_keeps_its_scales_when_cast(tmp_path: Path) -> None:
    """ComfyUI's scaled-FP8 files (flux1-dev-fp8-scaled, t5xxl_fp8_e4m3fn_scaled): each Linear's weight in float8_e4m3fn
    with a 0-d float32 `scale_weight` (and `scale_input`) beside it, a `scaled_fp8` marker tensor, no config. ComfyUI
    multiplies each fp8 weight by its scale_weight: `convert --dtype bf16` rounded every scale to bf16 (up to 0.4 %
    on every weight it dequantizes) without a word, as it does not for DeepSeek's weight_scale_inv."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    weights: dict[str, torch.Tensor] = {"img_in.weight": torch.randn(16, 64).bfloat16(),
                                        "scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for i in range(2):
        for layer in (f"double_blocks.{i}.img_attn.qkv", f"single_blocks.{i}.linear1"):
            weights[f"{layer}.weight"] = (torch.randn(48, 16) * 8).to(torch.float8_e4m3fn)
            weights[f"{layer}.scale_weight"] = torch.tensor(0.0123456789)
            weights[f"{layer}.bias"] = torch.zeros(48).bfloat16()
        weights[f"single_blocks.{i}.linear1.scale_input"] = torch.tensor(1.0009765625)
    source = tmp_path / "flux1-dev-fp8-scaled.safetensors"
    save_file(weights, str(source))
    out = tmp_path / "bf16.safetensors"
    code, data = run_json("convert", str(source), "-o", str(out), "--dtype", "bf16")
    assert code == 0, data
    written = load_file(str(out))
    scales = [n for n in weights if n.endswith((".scale_weight", ".scale_input"))]
    assert len(scales) == 6
    for name in scales:
        assert written[name].dtype == torch.float32 and torch.equal(written[name], weights[name]), name
    assert written["scaled_fp8"].dtype == torch.float8_e4m3fn
    assert any("quantizer scale/state tensors kept as stored" in w for w in data["plan"]["warnings"])
    code, data = run_json("check-dtype", str(source))
    assert code == 0 and {s["name"] for s in data["skipped"]} >= set(scales), data["skipped"]
    # A tensor merely named scale_weight beside a weight that is not float8 is an ordinary weight, cast.
    save_file({"norm.weight": torch.randn(8), "norm.scale_weight": torch.randn(8)}, str(tmp_path / "plain.safetensors"))
    plain = tmp_path / "plain-bf16.safetensors"
    code, data = run_json("convert", str(tmp_path / "plain.safetensors"), "-o", str(plain), "--dtype", "bf16")
    assert code == 0 and load_file(str(plain))["norm.scale_weight"].dtype == torch.bfloat16


def test_a_diffusers_model_index_or_model_config_given_as_the_source_says_what_it_is(tmp_path: Path) -> None:
    """stabilityai/stable-diffusion-xl-base-1.0 as diffusers 0.19 saves it: model_index.json at the root naming
    StableDiffusionXLPipeline and its parts, one folder per model (unet/ with its config.json and
    diffusion_pytorch_model.safetensors, vae/, text_encoder_2/), scheduler/scheduler_config.json. Given any of these
    JSON files, every command said "JSON file is neither an index (weight_map) nor a model config"."""
    from safetensors.torch import save_file

    root = tmp_path / "stable-diffusion-xl-base-1.0"
    components = {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL"}
    for folder, class_name in components.items():
        (root / folder).mkdir(parents=True)
        (root / folder / "config.json").write_text(json.dumps({"_class_name": class_name,
                                                               "_diffusers_version": "0.19.0.dev0"}))
        save_file({"conv_in.weight": torch.zeros(4, 4, 3, 3)},
                  str(root / folder / "diffusion_pytorch_model.safetensors"))
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0", "num_train_timesteps": 1000}))
    (root / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.19.0.dev0",
         "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
         "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}))

    def said(*args: str) -> str:
        result = run_cli(*args)
        assert result.exit_code == 2 and result.stdout == "", args
        return " ".join(result.stderr.split())

    for command in (["inspect"], ["plan-devices", "--gpu", "1GB"]):
        text = said(*command, str(root / "model_index.json"))
        assert "diffusers pipeline's model_index.json (StableDiffusionXLPipeline)" in text, text
        assert "(unet/, vae/)" in text and f"e.g. {root / 'unet'}" in text, text
    text = said("inspect", str(root / "unet" / "config.json"))
    assert f"a diffusers UNet2DConditionModel config, not weights; point at the model folder ({root / 'unet'})" \
        in text, text
    assert "a scheduler holds no weights" in said("inspect", str(root / "scheduler" / "scheduler_config.json"))
    # The folder the message points at is read.
    code, data = run_json("inspect", str(root / "unet"))
    assert code == 0 and data["num_tensors"] == 1


def test_a_unet_folder_of_variants_only_names_them_as_variants(tmp_path: Path) -> None:
    """runwayml/stable-diffusion-v1-5's unet/ holds diffusion_pytorch_model.{fp16,non_ema}.{safetensors,bin} beside
    the plain files; fetched with its variants only (allow_patterns=["*.fp16.*", "*.non_ema.*"]), every command said
    "folder holds several weight files and no index; name one", as if they were unrelated files."""
    from safetensors.torch import save_file

    unet = tmp_path / "stable-diffusion-v1-5" / "unet"
    unet.mkdir(parents=True)
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel",
                                                  "_diffusers_version": "0.6.0"}))
    weights = {"conv_in.weight": torch.randn(32, 4, 3, 3), "conv_in.bias": torch.zeros(32)}
    for variant, dtype in (("fp16", torch.float16), ("non_ema", torch.float32)):
        cast = {k: v.to(dtype) for k, v in weights.items()}
        save_file(cast, str(unet / f"diffusion_pytorch_model.{variant}.safetensors"), metadata={"format": "pt"})
        torch.save(cast, unet / f"diffusion_pytorch_model.{variant}.bin")
    for command in (["inspect"], ["check-dtype"], ["plan-devices", "--gpu", "1GB"]):
        result = run_cli(*command, str(unet))
        assert result.exit_code == 2 and result.stdout == "", command
        text = " ".join(result.stderr.split())
        assert "only variants of diffusion_pytorch_model" in text, text
        assert "variant='fp16' or variant='non_ema'" in text, text
    # Files that are not one model's variants are still "several weight files".
    other = tmp_path / "other"
    other.mkdir()
    torch.save(weights, other / "a.pt")
    torch.save(weights, other / "b.pt")
    assert "several weight files and no index" in run_cli("inspect", str(other)).stderr


def test_a_diffusers_layout_lora_against_its_component_is_an_adapter_that_fits(tmp_path: Path) -> None:
    """pytorch_lora_weights.safetensors as diffusers' save_lora_weights writes it (and ai-toolkit's Flux LoRAs): peft's
    lora_A / lora_B pairs under the pipeline component they adapt, `transformer.transformer_blocks.0.attn.to_q.lora_A.
    weight`, `unet.…`, `text_encoder.…`. Against that component's weights (FLUX.1-dev/transformer) diff-keys found "0
    of them in B with shapes that fit" and called every pair an error; load_lora_weights strips the prefix."""
    from safetensors.torch import save_file

    _, transformer = _flux_pair(tmp_path)
    torch.manual_seed(0)
    lora = {}
    for i in range(2):
        for proj in ("to_q", "to_k", "to_v"):
            module = f"transformer.transformer_blocks.{i}.attn.{proj}"
            lora[f"{module}.lora_A.weight"] = torch.randn(4, 16).bfloat16()
            lora[f"{module}.lora_B.weight"] = (torch.randn(16, 4) * 0.01).bfloat16()
        module = f"transformer.single_transformer_blocks.{i}.proj_mlp"
        lora[f"{module}.lora_A.weight"] = torch.randn(4, 16).bfloat16()
        lora[f"{module}.lora_B.weight"] = (torch.randn(64, 4) * 0.01).bfloat16()
    # A text-encoder part, as SD / SDXL LoRAs trained with --train_text_encoder save it beside.
    lora["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = torch.randn(4, 32).bfloat16()
    lora["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight"] = torch.zeros(32, 4).bfloat16()
    path = tmp_path / "pytorch_lora_weights.safetensors"
    save_file(lora, str(path))
    code, data = run_json("diff-keys", str(path), str(transformer))
    assert code == 0 and data["worst_severity"] == "info", data["groups"]
    assert len(data["notes"]) == 1 and data["notes"][0].startswith("A is a LoRA in diffusers' layout"), data["notes"]
    assert "8 of them in B with shapes that fit" in data["notes"][0] and "load_lora_weights" in data["notes"][0]
    text_encoder = [e for e in data["unexpected"] if e["name"].startswith("text_encoder.")]
    assert len(text_encoder) == 2 and all("for the pipeline's text_encoder, not B" in e["detail"] for e in text_encoder)
    # A pair that does not fit the component (a LoRA for another model size) is still an error.
    lora["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"] = torch.randn(4, 24).bfloat16()
    save_file(lora, str(path))
    code, data = run_json("diff-keys", str(path), str(transformer))
    assert code == 1 and "7 of them in B with shapes that fit" in data["notes"][0], data["notes"]


def test_a_kohya_lora_against_the_model_it_adapts_is_an_adapter_that_fits(tmp_path: Path) -> None:
    """kohya-ss sd-scripts' train_network.py writes one flat name per module, its diffusers path with `_` for `.`
    (`lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight`, `lora_up`, `alpha`; the
    text encoder under lora_te_), with ss_* metadata. Against the UNet it adapts, diff-keys called every key an
    unknown error, with no word of what the file is; a LoCon conv pair and Black Forest Labs' Flux names alike."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    unet = {"conv_in.weight": torch.randn(32, 4, 3, 3).half(), "conv_in.bias": torch.zeros(32).half(),
            "down_blocks.0.resnets.0.conv1.weight": torch.randn(32, 32, 3, 3).half()}
    for attn in ("attn1", "attn2"):
        for proj in ("to_q", "to_k", "to_v"):
            unet[f"down_blocks.0.attentions.0.transformer_blocks.0.{attn}.{proj}.weight"] = torch.randn(32, 32).half()
    save_file(unet, str(tmp_path / "unet.safetensors"))
    lora: dict[str, torch.Tensor] = {}
    for attn in ("attn1", "attn2"):
        for proj in ("to_q", "to_k", "to_v"):
            module = f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_{attn}_{proj}"
            lora[f"{module}.lora_down.weight"] = torch.randn(4, 32).half()
            lora[f"{module}.lora_up.weight"] = (torch.randn(32, 4) * 0.01).half()
            lora[f"{module}.alpha"] = torch.tensor(4.0).half()
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"  # LoCon (conv_dim=4): a 3×3 down, a 1×1 up
    lora[f"{conv}.lora_down.weight"] = torch.randn(4, 32, 3, 3).half()
    lora[f"{conv}.lora_up.weight"] = (torch.randn(32, 4, 1, 1) * 0.01).half()
    lora[f"{conv}.alpha"] = torch.tensor(1.0).half()
    te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    lora[f"{te}.lora_down.weight"], lora[f"{te}.lora_up.weight"] = torch.randn(4, 16).half(), torch.zeros(16, 4).half()
    lora[f"{te}.alpha"] = torch.tensor(4.0).half()
    path = tmp_path / "my_lora.safetensors"
    save_file(lora, str(path), metadata={"ss_network_module": "networks.lora", "ss_network_dim": "4",
                                         "ss_network_alpha": "4.0", "ss_base_model_version": "sd_v1"})
    code, data = run_json("diff-keys", str(path), str(tmp_path / "unet.safetensors"))
    assert code == 0 and data["worst_severity"] == "info", data["groups"]
    assert len(data["notes"]) == 1 and data["notes"][0].startswith("A is a kohya-style LoRA"), data["notes"]
    assert "LoRA (rank 4) on 7 modules" in data["notes"][0] and "7 of them in B" in data["notes"][0]
    text_encoder = [e for e in data["unexpected"] if e["name"].startswith("lora_te_")]
    assert len(text_encoder) == 3 and all("for the text encoder, not B" in e["detail"] for e in text_encoder)
    # The Flux LoRAs kohya's flux_train_network.py writes, against Black Forest Labs' flux1-dev.safetensors.
    flux, _ = _flux_pair(tmp_path)
    flux_lora = {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.randn(4, 16).bfloat16(),
                 "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.randn(48, 4).bfloat16(),
                 "lora_unet_double_blocks_0_img_attn_qkv.alpha": torch.tensor(4.0).bfloat16(),
                 "lora_unet_single_blocks_1_linear1.lora_down.weight": torch.randn(4, 16).bfloat16(),
                 "lora_unet_single_blocks_1_linear1.lora_up.weight": torch.randn(112, 4).bfloat16(),
                 "lora_unet_single_blocks_1_linear1.alpha": torch.tensor(4.0).bfloat16()}
    save_file(flux_lora, str(tmp_path / "flux_lora.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "flux_lora.safetensors"), str(flux))
    assert code == 0 and "2 of them in B with shapes that fit" in data["notes"][0], data["notes"]
    # One for another model size is said to be.
    flux_lora["lora_unet_single_blocks_1_linear1.lora_up.weight"] = torch.randn(96, 4).bfloat16()
    save_file(flux_lora, str(tmp_path / "flux_lora.safetensors"))
    code, data = run_json("diff-keys", str(tmp_path / "flux_lora.safetensors"), str(flux))
    assert code == 1 and "1 of them in B with shapes that fit" in data["notes"][0], data["notes"]


def test_an_espnet_model_zip_names_the_weight_file_inside(tmp_path: Path) -> None:
    """espnet_model_zoo's packed models (espnet2's `pack` command): a zip of exp/<run>/valid.acc.ave_10best.pth, its
    config.yaml and a meta.yaml naming them (asr_model_file, asr_train_config). Every command called it "zip
    archive has no data.pkl record (not a torch.save file, or damaged)", as if the download were broken."""
    import zipfile

    run = "exp/asr_train_asr_conformer_raw_en_bpe5000"
    weights = tmp_path / "valid.acc.ave_10best.pth"
    torch.save({"encoder.embed.conv.0.weight": torch.randn(16, 1, 3, 3)}, weights)
    archive = tmp_path / "asr_conformer.zip"
    with zipfile.ZipFile(archive, "w") as package:
        package.write(weights, f"{run}/valid.acc.ave_10best.pth")
        package.writestr(f"{run}/config.yaml", "encoder: conformer\nfrontend: default\n")
        package.writestr("meta.yaml", f"espnet: '202301'\nfiles:\n  asr_model_file: {run}/valid.acc.ave_10best.pth\n"
                                      f"yaml_files:\n  asr_train_config: {run}/config.yaml\n")
    for command in ("inspect", "check-dtype"):
        result = run_cli(command, str(archive))
        assert result.exit_code == 2 and result.stdout == ""
        text = " ".join(result.stderr.split())
        assert f"it holds the weight file {run}/valid.acc.ave_10best.pth" in text and "meta.yaml" in text, text
        assert "damaged" not in text


def test_a_demucs_model_package_is_refused_with_the_way_to_its_state_dict(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Demucs' pretrained files (955717e8-8726e21a.th: demucs.states.serialize_model then save_with_checksum) pickle
    the model's class itself under 'klass' beside 'args', 'kwargs', the fp16 state dict under 'state' and
    'training_args'. The refusal named an unknown global and nothing else; nothing may be unpickled."""
    import sys
    import types

    class HTDemucs(torch.nn.Module):
        pass

    HTDemucs.__module__, HTDemucs.__qualname__ = "demucs.htdemucs", "HTDemucs"
    module = types.ModuleType("demucs.htdemucs")
    module.HTDemucs = HTDemucs  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "demucs", types.ModuleType("demucs"))
    monkeypatch.setitem(sys.modules, "demucs.htdemucs", module)
    path = tmp_path / "955717e8-8726e21a.th"
    torch.save({"klass": HTDemucs, "args": (), "kwargs": {"sources": ["drums", "bass", "other", "vocals"]},
                "state": {"encoder.0.conv.weight": torch.randn(48, 4, 8).half()}, "training_args": {"epochs": 360}},
               path)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and result.stdout == ""
    text = " ".join(result.stderr.split())
    assert "demucs.htdemucs.HTDemucs" in text and "nothing was unpickled (this is a Demucs model package" in text
    assert f"torch.load({str(path)!r}, weights_only=False)['state']" in text, text


def test_a_wan_config_with_its_own_model_type_is_named_as_diffusers(tmp_path: Path) -> None:
    """Wan-AI/Wan2.1-T2V-1.3B as Wan's own code saves it (WanModel, a diffusers ModelMixin): config.json names
    `_class_name: WanModel` and `model_type: "t2v"` (Wan's task, not a transformers type) beside
    diffusion_pytorch_model.safetensors (blocks.N.self_attn.q, patch_embedding, head.head). plan-devices warned
    "transformers 5.x does not know model_type 't2v'", and diff-keys --model-class said the same, as if an upgrade
    would help."""
    from safetensors.torch import save_file

    folder = tmp_path / "Wan2.1-T2V-1.3B"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "WanModel", "_diffusers_version": "0.30.0", "dim": 16, "eps": 1e-06, "ffn_dim": 32,
        "freq_dim": 8, "in_dim": 16, "model_type": "t2v", "num_heads": 2, "num_layers": 2, "out_dim": 16,
        "text_len": 512}))
    torch.manual_seed(0)
    weights = {"patch_embedding.weight": torch.randn(16, 16, 1, 2, 2), "head.head.weight": torch.randn(64, 16)}
    for i in range(2):
        for proj in "qkvo":
            weights[f"blocks.{i}.self_attn.{proj}.weight"] = torch.randn(16, 16) * 0.02
        weights[f"blocks.{i}.ffn.0.weight"] = torch.randn(32, 16) * 0.02
        weights[f"blocks.{i}.modulation"] = torch.randn(1, 6, 16) * 0.02
    save_file({k: v.bfloat16() for k, v in weights.items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0, data
    assert not any("does not know model_type" in w for w in data["warnings"]), data["warnings"]
    assert any("a diffusers WanModel config, not a transformers one" in w for w in data["warnings"]), data["warnings"]
    result = run_cli("plan-devices", str(folder / "config.json"), "--gpu", "1GB")
    assert result.exit_code == 2 and "a diffusers WanModel config, which transformers cannot build" in \
        " ".join(result.stderr.split())
    result = run_cli("diff-keys", str(folder), "--model-class", "WanModel")
    text = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "config.json is a diffusers WanModel config" in text, text
    assert "does not know model_type" not in text


def test_an_openvino_export_is_named_not_read_as_a_broken_pickle(tmp_path: Path) -> None:
    """A repo as Optimum Intel's OVModelForCausalLM.save_pretrained writes it (the OpenVINO/* repos): config.json
    (transformers'), openvino_model.xml (the graph, root <net>) and openvino_model.bin (raw weight bytes, no header).
    The folder was read as a PyTorch .bin: "not a safetensors file nor a PyTorch pickle (zip or legacy)"."""
    import os

    folder = tmp_path / "gpt2-int8-ov"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 16, "n_layer": 1, "n_head": 2,
        "vocab_size": 64, "n_positions": 32}))
    (folder / "openvino_model.xml").write_text('<?xml version="1.0"?>\n<net name="Model0" version="11">\n'
                                               "\t<layers>\n\t</layers>\n</net>\n")
    (folder / "openvino_model.bin").write_bytes(os.urandom(4096))
    (folder / "openvino_config.json").write_text(json.dumps({"dtype": "int8", "quantization_config": {"bits": 8}}))
    for source in (folder, folder / "openvino_model.bin"):
        result = run_cli("inspect", str(source))
        assert result.exit_code == 2 and result.stdout == ""
        text = " ".join(result.stderr.split())
        assert "openvino_model.bin" in text and "not a safetensors file nor a PyTorch pickle" not in text, text
    assert "an OpenVINO IR model's weights" in " ".join(run_cli("inspect", str(folder / "openvino_model.bin"))
                                                       .stderr.split())
    # plan-devices plans the model its config.json describes, saying the weights there are not PyTorch.
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and any("openvino_model.bin" in w and "not PyTorch" in w for w in data["warnings"]), data
    # A plain .bin beside an unrelated .xml is still read as PyTorch.
    plain = tmp_path / "plain"
    plain.mkdir()
    torch.save({"w": torch.zeros(2)}, plain / "pytorch_model.bin")
    (plain / "pytorch_model.xml").write_text("<notes/>")
    assert run_json("inspect", str(plain))[0] == 0


def test_a_nemo_repo_folder_names_its_nemo_archive(tmp_path: Path) -> None:
    """nvidia/parakeet-tdt-0.6b-v2 (and the other NeMo repos) hold one .nemo file beside README.md: a tar of
    model_config.yaml and model_weights.ckpt, which NeMo's save_to writes. The file named is explained; the folder (what
    a user downloads and points at) said only "folder holds no weight file"."""
    import io
    import tarfile

    folder = tmp_path / "parakeet-tdt-0.6b-v2"
    folder.mkdir()
    weights = io.BytesIO()
    torch.save({"encoder.pre_encode.conv.0.weight": torch.randn(4, 1, 3, 3)}, weights)
    with tarfile.open(folder / "parakeet-tdt-0.6b-v2.nemo", "w") as archive:
        for name, data in (("./model_config.yaml", b"target: nemo.collections.asr.models.EncDecRNNTBPEModel\n"),
                           ("./model_weights.ckpt", weights.getvalue())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    (folder / "README.md").write_text("# Parakeet TDT 0.6B V2\n")
    for command in (["inspect"], ["plan-devices", "--gpu", "1GB"], ["check-dtype"]):
        result = run_cli(*command, str(folder))
        assert result.exit_code == 2 and result.stdout == "", command
        text = " ".join(result.stderr.split())
        assert "it holds parakeet-tdt-0.6b-v2.nemo, a NeMo archive" in text, text
        assert "tar -xf parakeet-tdt-0.6b-v2.nemo" in text and "model_weights.ckpt" in text


def test_a_keras_repo_folder_names_its_keras_archive(tmp_path: Path) -> None:
    """A Keras 3 Hub repo (keras-io/*, saved with model.save("model.keras") and pushed): model.keras, a zip of
    metadata.json, config.json and model.weights.h5. Named, the file is said to be a Keras archive; the folder said
    only "folder holds no weight file"."""
    import zipfile

    folder = tmp_path / "keras-io-mnist"
    folder.mkdir()
    with zipfile.ZipFile(folder / "model.keras", "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.6.0", "date_saved": "2024-10-01@12:00:00"}))
        archive.writestr("config.json", json.dumps({"module": "keras", "class_name": "Sequential", "config": {}}))
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    result = run_cli("inspect", str(folder))
    assert result.exit_code == 2
    assert "it holds model.keras, which weightdoctor does not read (not PyTorch)" in " ".join(result.stderr.split())
