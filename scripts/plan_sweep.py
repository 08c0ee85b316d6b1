"""Oracle sweep of plan-devices over ordinary (non-quantized) checkpoints of 128 architectures.

For tiny seeded models of encoders, seq2seq, decoders (dense and MoE), vision and multimodal models, each saved as
a real checkpoint (one safetensors file, sharded safetensors or a pytorch_model.bin; fp32 or bf16; a config with
or without its dtype), compares `plan_devices(...).device_map` with the map transformers' own
`from_pretrained(device_map=..., max_memory=..., dtype=...)` computes (`fixtures.plan_devices.
from_pretrained_device_map`: the real from_pretrained, stopped right after `_get_device_map`, GPUs mocked by
their budgets):

* `--dtype` auto (from_pretrained's default) and one of fp16 / bf16 / fp32 per architecture;
* strategies auto / balanced / balanced_low_0 / sequential;
* GPU budgets splitting the model 1-4 ways with a CPU budget, GPU + CPU + disk, GPU + disk (no CPU budget),
  CPU + disk (no GPU);
* the class inferred from the config vs `--model-class` (the oracle loads that class), and `--no-split`;
* the CLI (`plan-devices ... --json`, a subprocess) once per architecture, unless `--quick` (or with `--cli`);
* with `--load`, the real load on the CPU + disk budget: the loaded model's `hf_device_map` (what a load does, not
  only what it computes).

    PYTHONPATH=. .venv/bin/python scripts/plan_sweep.py [--only NAME ...] [--quick] [--verbose] [--cli] [--load]

Prints one line per case (case / expected / got / verdict) and the counts; exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sweep_common import only_these, print_table, quiet_libraries, summary

GB = 10**9
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass
class Arch:
    """One architecture of the sweep and the checkpoint written for it."""

    make: Callable[[], Any]  # the tiny config, `architectures` set
    saved: str = "fp32"  # dtype of the saved weights (and of the config's dtype)
    layout: str = "single"  # single | sharded | bin
    other_dtype: str = "fp16"  # the --dtype planned beside auto
    config_dtype: bool = True  # False: config.json without its dtype (auto reads the weights)
    model_class: str | None = None  # a --model-class case besides the config's architecture
    no_split: list[str] = field(default_factory=list)  # a --no-split case


def _archs() -> dict[str, Arch]:
    import transformers as T

    # vocabularies small beside the layers, so that budgets split the layers, not just the embeddings
    dec = {"vocab_size": 256, "hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 128}
    llama = {**dec, "intermediate_size": 256, "num_hidden_layers": 6, "num_key_value_heads": 2}
    bert = {"vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 6, "num_attention_heads": 4,
            "intermediate_size": 256, "max_position_embeddings": 128}
    bart = {"vocab_size": 512, "d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
            "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128,
            "max_position_embeddings": 128}
    t5 = {"vocab_size": 512, "d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 3, "num_decoder_layers": 3,
          "num_heads": 4}
    clip_text = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "max_position_embeddings": 64}
    clip_vision = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "image_size": 32, "patch_size": 8}

    def cfg(cls: Any, arch: str, **kw: Any) -> Callable[[], Any]:
        return lambda: cls(**kw, architectures=[arch])

    return {
        # encoders
        "bert": Arch(cfg(T.BertConfig, "BertForMaskedLM", **bert), model_class="BertModel"),
        "roberta": Arch(cfg(T.RobertaConfig, "RobertaForMaskedLM", **bert, pad_token_id=1), saved="bf16",
                        layout="sharded", other_dtype="fp32"),
        # lm_head registered before the encoder: named_parameters meets the tied lm_head.decoder.weight first
        "xlm_roberta": Arch(cfg(T.XLMRobertaConfig, "XLMRobertaForMaskedLM", **bert, pad_token_id=1),
                            other_dtype="bf16", model_class="XLMRobertaModel"),
        "deberta_v2": Arch(cfg(T.DebertaV2Config, "DebertaV2ForMaskedLM", **bert), layout="bin",
                           other_dtype="bf16"),
        "distilbert": Arch(cfg(T.DistilBertConfig, "DistilBertForMaskedLM", vocab_size=512, dim=64, n_layers=4,
                               n_heads=4, hidden_dim=128, max_position_embeddings=128), config_dtype=False),
        "albert": Arch(cfg(T.AlbertConfig, "AlbertForMaskedLM", **bert, embedding_size=32, num_hidden_groups=1),
                       other_dtype="bf16", model_class="AlbertModel"),
        # seq2seq
        "t5": Arch(cfg(T.T5Config, "T5ForConditionalGeneration", **t5), model_class="T5EncoderModel"),
        "t5_untied": Arch(cfg(T.T5Config, "T5ForConditionalGeneration", **t5, tie_word_embeddings=False,
                              feed_forward_proj="gated-gelu"), saved="bf16", layout="sharded"),
        "bart": Arch(cfg(T.BartConfig, "BartForConditionalGeneration", **bart), other_dtype="bf16",
                     model_class="BartModel"),
        "marian": Arch(cfg(T.MarianConfig, "MarianMTModel", **bart, pad_token_id=255, decoder_start_token_id=255),
                       layout="bin"),
        "pegasus": Arch(cfg(T.PegasusConfig, "PegasusForConditionalGeneration", **bart), saved="bf16",
                        other_dtype="fp32"),
        "whisper": Arch(cfg(T.WhisperConfig, "WhisperForConditionalGeneration", vocab_size=512, d_model=64,
                            encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                            encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=16, max_source_positions=32,
                            max_target_positions=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                            decoder_start_token_id=3, suppress_tokens=[], begin_suppress_tokens=[]),
                        layout="sharded", model_class="WhisperModel"),
        # decoders
        "gpt2": Arch(cfg(T.GPT2Config, "GPT2LMHeadModel", vocab_size=512, n_embd=64, n_layer=4, n_head=4,
                         n_positions=128), model_class="GPT2Model", no_split=["GPT2MLP"]),
        "opt": Arch(cfg(T.OPTConfig, "OPTForCausalLM", vocab_size=512, hidden_size=64, num_hidden_layers=4,
                        ffn_dim=128, num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=64),
                    saved="bf16", layout="bin", other_dtype="fp32"),
        "bloom": Arch(cfg(T.BloomConfig, "BloomForCausalLM", vocab_size=512, hidden_size=64, n_layer=4, n_head=4),
                      layout="sharded", other_dtype="bf16"),
        "falcon": Arch(cfg(T.FalconConfig, "FalconForCausalLM", vocab_size=512, hidden_size=64, num_hidden_layers=4,
                           num_attention_heads=4, new_decoder_architecture=True, num_kv_heads=2),
                       saved="bf16"),
        "gpt_neox": Arch(cfg(T.GPTNeoXConfig, "GPTNeoXForCausalLM", **dec, intermediate_size=128,
                             num_hidden_layers=4), config_dtype=False, other_dtype="bf16"),
        "gptj": Arch(cfg(T.GPTJConfig, "GPTJForCausalLM", vocab_size=512, n_embd=64, n_layer=4, n_head=4,
                         rotary_dim=8, n_positions=128), layout="bin"),
        "llama": Arch(cfg(T.LlamaConfig, "LlamaForCausalLM", **llama), saved="bf16", layout="sharded",
                      model_class="LlamaModel", no_split=["LlamaAttention", "LlamaMLP"]),
        "mistral": Arch(cfg(T.MistralConfig, "MistralForCausalLM", **llama), saved="bf16", other_dtype="fp32",
                        model_class="AutoModelForCausalLM"),
        "qwen2": Arch(cfg(T.Qwen2Config, "Qwen2ForCausalLM", **llama, tie_word_embeddings=True),
                      other_dtype="bf16"),
        "gemma": Arch(cfg(T.GemmaConfig, "GemmaForCausalLM", **llama, head_dim=16), saved="bf16"),
        "gemma2": Arch(cfg(T.Gemma2Config, "Gemma2ForCausalLM", **llama, head_dim=16), saved="bf16",
                       layout="sharded", other_dtype="fp32"),
        "phi3": Arch(cfg(T.Phi3Config, "Phi3ForCausalLM", **llama, pad_token_id=0), config_dtype=False),
        "mixtral": Arch(cfg(T.MixtralConfig, "MixtralForCausalLM", **llama, num_local_experts=4,
                            num_experts_per_tok=2), saved="bf16", layout="sharded"),
        "qwen2_moe": Arch(cfg(T.Qwen2MoeConfig, "Qwen2MoeForCausalLM", **llama, num_experts=4,
                              num_experts_per_tok=2, moe_intermediate_size=64, shared_expert_intermediate_size=64),
                          other_dtype="bf16"),
        "mamba": Arch(cfg(T.MambaConfig, "MambaForCausalLM", vocab_size=256, hidden_size=64, state_size=8,
                          num_hidden_layers=6, expand=2, conv_kernel=4), other_dtype="bf16"),
        "gpt_bigcode": Arch(cfg(T.GPTBigCodeConfig, "GPTBigCodeForCausalLM", vocab_size=256, n_embd=64, n_layer=6,
                                n_head=4, n_positions=128, multi_query=True), saved="bf16", layout="bin"),
        "mt5": Arch(cfg(T.MT5Config, "MT5ForConditionalGeneration", **t5), other_dtype="fp16"),
        "bert2bert": Arch(lambda: T.EncoderDecoderConfig.from_encoder_decoder_configs(
            T.BertConfig(**bert), T.BertConfig(**bert, is_decoder=True, add_cross_attention=True),
            architectures=["EncoderDecoderModel"]), layout="sharded"),
        # vision, audio and multimodal
        "vit": Arch(cfg(T.ViTConfig, "ViTForImageClassification", hidden_size=64, num_hidden_layers=4,
                        num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8),
                    model_class="ViTModel"),
        "clip": Arch(lambda: T.CLIPConfig(text_config=clip_text, vision_config=clip_vision, projection_dim=32,
                                          architectures=["CLIPModel"]), layout="sharded", other_dtype="bf16",
                     model_class="CLIPTextModel"),
        "siglip": Arch(lambda: T.SiglipConfig(text_config=clip_text, vision_config=clip_vision,
                                              architectures=["SiglipModel"]), saved="bf16",
                       model_class="SiglipVisionModel"),
        "llava": Arch(lambda: T.LlavaConfig(
            vision_config=T.CLIPVisionConfig(**clip_vision), text_config=T.LlamaConfig(**llama),
            image_token_index=255, architectures=["LlavaForConditionalGeneration"]), saved="bf16", layout="sharded",
            other_dtype="fp32"),
        "qwen2_vl": Arch(lambda: T.Qwen2VLConfig(
            text_config={**llama, "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
            vision_config={"depth": 2, "embed_dim": 64, "hidden_size": 64, "num_heads": 4, "mlp_ratio": 2,
                           "patch_size": 8, "spatial_merge_size": 2, "temporal_patch_size": 2},
            image_token_id=250, video_token_id=251, vision_start_token_id=252,
            architectures=["Qwen2VLForConditionalGeneration"]), saved="bf16", other_dtype="fp16"),
        "wav2vec2": Arch(cfg(T.Wav2Vec2Config, "Wav2Vec2ForCTC", vocab_size=32, hidden_size=64, num_hidden_layers=4,
                             num_attention_heads=4, intermediate_size=128, conv_dim=(32, 32), conv_stride=(5, 2),
                             conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
                         model_class="Wav2Vec2Model"),
        # oracle10: architectures with no-split lists, tied heads or fused experts of their own
        "llama4_text": Arch(cfg(T.Llama4TextConfig, "Llama4ForCausalLM", **llama, intermediate_size_mlp=256,
                                head_dim=16, num_local_experts=4, num_experts_per_tok=1, interleave_moe_layer_step=2,
                                attention_chunk_size=8), saved="bf16", layout="sharded"),
        "gemma3n_text": Arch(cfg(T.Gemma3nTextConfig, "Gemma3nForCausalLM", **llama, head_dim=16, sliding_window=8,
                                 num_kv_shared_layers=2, hidden_size_per_layer_input=8,
                                 vocab_size_per_layer_input=256, laurel_rank=4, altup_num_inputs=2,
                                 activation_sparsity_pattern=[0.0] * 6,
                                 layer_types=["sliding_attention", "full_attention"] * 3), other_dtype="bf16"),
        "qwen3_next": Arch(cfg(T.Qwen3NextConfig, "Qwen3NextForCausalLM", **llama, head_dim=16, num_experts=4,
                               num_experts_per_tok=2, moe_intermediate_size=64, shared_expert_intermediate_size=64,
                               linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=16,
                               linear_value_head_dim=16), saved="bf16", model_class="Qwen3NextModel"),
        "glm4_moe": Arch(cfg(T.Glm4MoeConfig, "Glm4MoeForCausalLM", **llama, head_dim=16, n_routed_experts=4,
                             n_group=1, topk_group=1, first_k_dense_replace=1, num_experts_per_tok=2,
                             moe_intermediate_size=64), layout="sharded"),
        "deepseek_v2": Arch(cfg(T.DeepseekV2Config, "DeepseekV2ForCausalLM", **{**llama, "num_key_value_heads": 4},
                                n_routed_experts=4, n_shared_experts=1, first_k_dense_replace=1, q_lora_rank=32,
                                kv_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
                                topk_method="greedy", num_experts_per_tok=2, moe_intermediate_size=64),
                            saved="bf16", other_dtype="fp32"),
        "granitemoe": Arch(cfg(T.GraniteMoeConfig, "GraniteMoeForCausalLM", **llama, num_local_experts=4,
                               num_experts_per_tok=2), layout="bin"),
        "cohere": Arch(cfg(T.CohereConfig, "CohereForCausalLM", **llama), saved="bf16"),
        "starcoder2": Arch(cfg(T.Starcoder2Config, "Starcoder2ForCausalLM", **llama), other_dtype="bf16",
                           model_class="Starcoder2Model"),
        "phimoe": Arch(cfg(T.PhimoeConfig, "PhimoeForCausalLM", **llama, num_local_experts=4, num_experts_per_tok=2),
                       saved="bf16", layout="sharded"),
        "idefics3": Arch(lambda: T.Idefics3Config(text_config=T.LlamaConfig(**llama).to_dict(),
                                                  vision_config={**clip_vision, "model_type": "idefics3_vision"},
                                                  image_token_id=250, scale_factor=2,
                                                  architectures=["Idefics3ForConditionalGeneration"]),
                         saved="bf16", model_class="LlamaForCausalLM"),
        "smolvlm": Arch(lambda: T.SmolVLMConfig(text_config=T.LlamaConfig(**llama).to_dict(),
                                                vision_config={**clip_vision, "model_type": "smolvlm_vision"},
                                                image_token_id=250, scale_factor=2,
                                                architectures=["SmolVLMForConditionalGeneration"]), layout="sharded"),
        "qwen2_5_vl": Arch(lambda: T.Qwen2_5_VLConfig(
            text_config={**llama, "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
            vision_config={"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4,
                           "out_hidden_size": 64, "patch_size": 8, "spatial_merge_size": 2, "temporal_patch_size": 2,
                           "window_size": 32, "fullatt_block_indexes": [1]},
            image_token_id=250, video_token_id=251, vision_start_token_id=252,
            architectures=["Qwen2_5_VLForConditionalGeneration"]), saved="bf16",
            model_class="Qwen2_5_VLModel"),
        "blip2": Arch(lambda: T.Blip2Config(
            vision_config=clip_vision, num_query_tokens=4,
            qformer_config={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                            "intermediate_size": 128, "encoder_hidden_size": 64, "vocab_size": 256},
            text_config={"model_type": "opt", "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 4,
                         "ffn_dim": 128, "num_attention_heads": 4, "word_embed_proj_dim": 64},
            architectures=["Blip2ForConditionalGeneration"]), other_dtype="bf16",
            model_class="Blip2VisionModel"),
        "pix2struct": Arch(lambda: T.Pix2StructConfig(
            text_config={"vocab_size": 256, "hidden_size": 64, "d_kv": 16, "d_ff": 128, "num_layers": 3,
                         "num_heads": 4},
            vision_config={"hidden_size": 64, "patch_embed_hidden_size": 64, "d_kv": 16, "d_ff": 128,
                           "num_hidden_layers": 3, "num_attention_heads": 4},
            architectures=["Pix2StructForConditionalGeneration"]), layout="sharded"),
        "dinov2": Arch(cfg(T.Dinov2Config, "Dinov2ForImageClassification", hidden_size=64, num_hidden_layers=4,
                           num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8),
                       model_class="Dinov2Model"),
        "yolos": Arch(cfg(T.YolosConfig, "YolosForObjectDetection", hidden_size=64, num_hidden_layers=4,
                          num_attention_heads=4, intermediate_size=128, image_size=[32, 32], patch_size=8,
                          num_detection_tokens=4), saved="bf16"),
        "layoutlmv3": Arch(cfg(T.LayoutLMv3Config, "LayoutLMv3ForTokenClassification", **bert, input_size=32,
                               patch_size=8, coordinate_size=16, shape_size=16, max_2d_position_embeddings=128),
                           layout="bin"),
        "longformer": Arch(cfg(T.LongformerConfig, "LongformerForMaskedLM", **bert, attention_window=4,
                               pad_token_id=1), model_class="LongformerModel"),
        "big_bird": Arch(cfg(T.BigBirdConfig, "BigBirdForMaskedLM", **bert, attention_type="original_full"),
                         saved="bf16", layout="sharded"),
        "xlnet": Arch(cfg(T.XLNetConfig, "XLNetLMHeadModel", vocab_size=256, d_model=64, n_layer=6, n_head=4,
                          d_inner=256), other_dtype="bf16"),
        "esm": Arch(cfg(T.EsmConfig, "EsmForMaskedLM", **bert, pad_token_id=1, mask_token_id=2),
                    model_class="EsmModel"),
        "speecht5": Arch(cfg(T.SpeechT5Config, "SpeechT5ForSpeechToText", vocab_size=256, hidden_size=64,
                             encoder_layers=3, decoder_layers=3, encoder_attention_heads=4, decoder_attention_heads=4,
                             encoder_ffn_dim=128, decoder_ffn_dim=128, conv_dim=[32, 32], conv_stride=[4, 4],
                             conv_kernel=[8, 8], num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                             max_speech_positions=128, max_text_positions=128), layout="sharded"),
        "hubert": Arch(cfg(T.HubertConfig, "HubertForCTC", vocab_size=32, hidden_size=64, num_hidden_layers=4,
                           num_attention_heads=4, intermediate_size=128, conv_dim=(32, 32), conv_stride=(5, 2),
                           conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
                       saved="bf16"),
        "wavlm": Arch(cfg(T.WavLMConfig, "WavLMForCTC", vocab_size=32, hidden_size=64, num_hidden_layers=4,
                          num_attention_heads=4, intermediate_size=128, conv_dim=(32, 32), conv_stride=(5, 2),
                          conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                          num_buckets=16, max_bucket_distance=32), model_class="WavLMModel"),
        "zamba": Arch(cfg(T.ZambaConfig, "ZambaForCausalLM", **{**llama, "num_key_value_heads": 4,
                                                                 "num_hidden_layers": 12},
                          mamba_d_state=8, n_mamba_heads=2, mamba_expand=2), saved="bf16"),
        "recurrent_gemma": Arch(cfg(T.RecurrentGemmaConfig, "RecurrentGemmaForCausalLM", vocab_size=256,
                                    hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
                                    num_key_value_heads=2, lru_width=64, attention_window_size=8, conv1d_width=4)),
        "mamba2": Arch(cfg(T.Mamba2Config, "Mamba2ForCausalLM", vocab_size=256, hidden_size=64, num_hidden_layers=6,
                           num_heads=8, head_dim=16, state_size=8, n_groups=1, expand=2), saved="bf16",
                       layout="bin"),
        "llama4": Arch(lambda: T.Llama4Config(
            text_config={**llama, "intermediate_size_mlp": 256, "head_dim": 16, "num_local_experts": 4,
                         "num_experts_per_tok": 1, "interleave_moe_layer_step": 2, "attention_chunk_size": 8},
            vision_config={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                           "intermediate_size": 128, "image_size": 32, "patch_size": 8, "vision_output_dim": 64,
                           "projector_input_dim": 64, "projector_output_dim": 64, "pixel_shuffle_ratio": 0.5},
            image_token_index=250, boi_token_index=251, eoi_token_index=252,
            architectures=["Llama4ForConditionalGeneration"]), saved="bf16", layout="sharded",
            model_class="Llama4ForCausalLM"),
        "sam": Arch(lambda: T.SamConfig(
            vision_config={"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": 64,
                           "patch_size": 16, "output_channels": 32, "mlp_dim": 128, "window_size": 2,
                           "global_attn_indexes": [1, 3], "num_pos_feats": 16},
            prompt_encoder_config={"hidden_size": 32, "image_size": 64, "patch_size": 16, "mask_input_channels": 4},
            mask_decoder_config={"hidden_size": 32, "mlp_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                 "iou_head_hidden_dim": 32}, architectures=["SamModel"])),
        "seamless_m4t": Arch(lambda: T.SeamlessM4TConfig(
            vocab_size=256, t2u_vocab_size=32, hidden_size=64, encoder_layers=2, decoder_layers=2,
            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
            speech_encoder_layers=2, speech_encoder_attention_heads=4, speech_encoder_intermediate_size=128,
            t2u_encoder_layers=1, t2u_decoder_layers=1, t2u_encoder_attention_heads=4, t2u_decoder_attention_heads=4,
            t2u_encoder_ffn_dim=64, t2u_decoder_ffn_dim=64, feature_projection_input_dim=16,
            unit_hifi_gan_vocab_size=16, upsample_initial_channel=16, upsample_rates=[2, 2],
            upsample_kernel_sizes=[4, 4], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
            unit_embed_dim=8, lang_embed_dim=8, spkr_embed_dim=8, vocoder_num_langs=2, vocoder_num_spkrs=2,
            max_position_embeddings=128, t2u_max_position_embeddings=64, adaptor_kernel_size=2, adaptor_stride=2,
            num_adapter_layers=1, architectures=["SeamlessM4TForTextToText"]), model_class="SeamlessM4TModel"),
        "mobilebert": Arch(cfg(T.MobileBertConfig, "MobileBertForMaskedLM", **bert, embedding_size=32,
                               intra_bottleneck_size=32, true_hidden_size=32, num_feedforward_networks=2),
                           model_class="MobileBertModel"),
        "rembert": Arch(cfg(T.RemBertConfig, "RemBertForMaskedLM", **bert, input_embedding_size=32,
                            output_embedding_size=48, pad_token_id=0), saved="bf16"),
        "led": Arch(cfg(T.LEDConfig, "LEDForConditionalGeneration",
                        **{k: v for k, v in bart.items() if k != "max_position_embeddings"},
                        max_encoder_position_embeddings=128, max_decoder_position_embeddings=128,
                        attention_window=4), layout="sharded"),
        "prophetnet": Arch(cfg(T.ProphetNetConfig, "ProphetNetForConditionalGeneration", vocab_size=256,
                               hidden_size=64, encoder_ffn_dim=128, decoder_ffn_dim=128, num_encoder_layers=3,
                               num_decoder_layers=3, num_encoder_attention_heads=4, num_decoder_attention_heads=4,
                               max_position_embeddings=128, ngram=2, num_buckets=8, relative_max_distance=16)),
        "falcon_mamba": Arch(cfg(T.FalconMambaConfig, "FalconMambaForCausalLM", vocab_size=256, hidden_size=64,
                                 state_size=8, num_hidden_layers=6, expand=2, conv_kernel=4), saved="bf16"),
        "speech_to_text": Arch(cfg(T.Speech2TextConfig, "Speech2TextForConditionalGeneration",
                                   **{k: v for k, v in bart.items() if k != "max_position_embeddings"},
                                   max_source_positions=128, max_target_positions=128, input_feat_per_channel=8,
                                   num_conv_layers=2, conv_channels=32), layout="bin"),
        "lxmert": Arch(cfg(T.LxmertConfig, "LxmertForPreTraining", vocab_size=256, hidden_size=64,
                           num_attention_heads=4, intermediate_size=128, l_layers=3, x_layers=2, r_layers=2,
                           visual_feat_dim=16, visual_pos_dim=4, num_qa_labels=3, num_object_labels=5,
                           num_attr_labels=4), model_class="LxmertModel"),
    }


def _archs_plan90() -> dict[str, Arch]:
    """plan90's families (2026-12-07): seq2seq, vision, MoE, multimodal and state-space models the sweep and the
    oracle tests had not built; smaller layers than _archs' (4 decoder layers), each saved fp32 or bf16."""
    import transformers as T

    dec = {"vocab_size": 256, "hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 128}
    llama = {**dec, "intermediate_size": 128, "num_hidden_layers": 4, "num_key_value_heads": 2}
    bart = {"vocab_size": 256, "d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
            "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128,
            "max_position_embeddings": 128}
    t5 = {"vocab_size": 256, "d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 3, "num_decoder_layers": 3,
          "num_heads": 4}
    vis = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
           "image_size": 32, "patch_size": 8}
    txt = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "max_position_embeddings": 64}
    llama_text = T.LlamaConfig(**llama).to_dict()
    mllama_vis = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_global_layers": 1,
                  "attention_heads": 4, "image_size": 32, "patch_size": 8, "max_num_tiles": 4,
                  "intermediate_layers_indices": [0], "vision_output_dim": 128}

    def cfg(cls: Any, arch: str, **kw: Any) -> Callable[[], Any]:
        return lambda: cls(**kw, architectures=[arch])

    return {
        "m2m_100": Arch(cfg(T.M2M100Config, "M2M100ForConditionalGeneration", **bart)),
        "mbart": Arch(cfg(T.MBartConfig, "MBartForConditionalGeneration", **bart), saved="bf16",
                      layout="sharded", other_dtype="fp32"),
        "blenderbot": Arch(cfg(T.BlenderbotConfig, "BlenderbotForConditionalGeneration", **bart)),
        "plbart": Arch(cfg(T.PLBartConfig, "PLBartForConditionalGeneration", **bart), saved="bf16"),
        "umt5": Arch(cfg(T.UMT5Config, "UMT5ForConditionalGeneration", **t5), layout="bin", other_dtype="bf16"),
        "longt5": Arch(cfg(T.LongT5Config, "LongT5ForConditionalGeneration", **t5), saved="bf16"),
        "beit": Arch(cfg(T.BeitConfig, "BeitForImageClassification", **vis), config_dtype=False),
        "convnext": Arch(cfg(T.ConvNextConfig, "ConvNextForImageClassification", hidden_sizes=[16, 32, 64, 128],
                             depths=[1, 1, 2, 1], image_size=32)),
        "siglip2": Arch(cfg(T.Siglip2Config, "Siglip2Model", text_config=txt,
                            vision_config={k: v for k, v in vis.items() if k not in ("image_size", "patch_size")}
                            | {"num_patches": 16, "patch_size": 8})),
        "owlvit": Arch(cfg(T.OwlViTConfig, "OwlViTForObjectDetection", text_config=txt, vision_config=vis)),
        "chinese_clip": Arch(cfg(T.ChineseCLIPConfig, "ChineseCLIPModel", text_config=txt, vision_config=vis)),
        "olmoe": Arch(cfg(T.OlmoeConfig, "OlmoeForCausalLM", **llama, num_experts=4, num_experts_per_tok=2),
                      saved="bf16", layout="sharded", other_dtype="fp32"),
        "ernie4_5_moe": Arch(cfg(T.Ernie4_5_MoeConfig, "Ernie4_5_MoeForCausalLM", **llama, moe_num_experts=4,
                                 moe_k=2, moe_intermediate_size=64, moe_layer_start_index=1), saved="bf16"),
        "hunyuan_moe": Arch(cfg(T.HunYuanMoEV1Config, "HunYuanMoEV1ForCausalLM", **llama, num_experts=4,
                                moe_topk=2, head_dim=16), saved="bf16"),
        "llava_next": Arch(cfg(T.LlavaNextConfig, "LlavaNextForConditionalGeneration",
                               vision_config=T.CLIPVisionConfig(**vis).to_dict(), text_config=llama_text,
                               image_token_index=250, image_grid_pinpoints=[[32, 32]])),
        "llava_onevision": Arch(cfg(T.LlavaOnevisionConfig, "LlavaOnevisionForConditionalGeneration",
                                    vision_config=T.SiglipVisionConfig(**vis).to_dict(),
                                    text_config=T.Qwen2Config(**llama).to_dict(), image_token_index=250,
                                    video_token_index=251, image_grid_pinpoints=[[32, 32]]), saved="bf16"),
        "paligemma": Arch(cfg(T.PaliGemmaConfig, "PaliGemmaForConditionalGeneration",
                              vision_config=T.SiglipVisionConfig(**vis).to_dict(),
                              text_config=T.GemmaConfig(**llama, head_dim=16).to_dict(), image_token_index=250),
                          saved="bf16"),
        "mistral3": Arch(cfg(T.Mistral3Config, "Mistral3ForConditionalGeneration",
                             vision_config=T.PixtralVisionConfig(hidden_size=64, intermediate_size=128,
                                                                 num_hidden_layers=2, num_attention_heads=4,
                                                                 image_size=32, patch_size=8, head_dim=16).to_dict(),
                             text_config=T.MistralConfig(**llama).to_dict(), image_token_index=250), saved="bf16"),
        "aya_vision": Arch(cfg(T.AyaVisionConfig, "AyaVisionForConditionalGeneration",
                               vision_config=T.SiglipVisionConfig(**vis).to_dict(),
                               text_config=T.CohereConfig(**llama).to_dict(), image_token_index=250,
                               downsample_factor=2)),
        "idefics2": Arch(cfg(T.Idefics2Config, "Idefics2ForConditionalGeneration",
                             vision_config={k: v for k, v in vis.items()},
                             text_config=T.MistralConfig(**llama).to_dict(), image_token_id=250,
                             perceiver_config={"hidden_size": 64, "resampler_n_latents": 4, "resampler_depth": 1,
                                               "resampler_n_heads": 2, "resampler_head_dim": 16,
                                               "num_key_value_heads": 1})),
        "qwen3_vl": Arch(cfg(T.Qwen3VLConfig, "Qwen3VLForConditionalGeneration",
                             text_config={**llama, "head_dim": 16, "rope_scaling": {"rope_type": "default",
                                          "mrope_section": [2, 3, 3]}},
                             vision_config={"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4,
                                            "out_hidden_size": 64, "patch_size": 8, "num_position_embeddings": 16,
                                            "deepstack_visual_indexes": [1]}), saved="bf16"),
        "qwen3_vl_moe": Arch(cfg(T.Qwen3VLMoeConfig, "Qwen3VLMoeForConditionalGeneration",
                                 text_config={**llama, "head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2,
                                              "moe_intermediate_size": 64,
                                              "rope_scaling": {"rope_type": "default", "mrope_section": [2, 3, 3]}},
                                 vision_config={"depth": 2, "hidden_size": 64, "intermediate_size": 128,
                                                "num_heads": 4, "out_hidden_size": 64, "patch_size": 8,
                                                "num_position_embeddings": 16, "deepstack_visual_indexes": [1]}),
                             saved="bf16"),
        "glm4v": Arch(cfg(T.Glm4vConfig, "Glm4vForConditionalGeneration",
                          text_config={**llama, "rope_scaling": {"rope_type": "default", "mrope_section": [2, 3, 3]}},
                          vision_config={"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4,
                                         "out_hidden_size": 64, "patch_size": 8, "image_size": 32}), saved="bf16"),
        "kosmos2": Arch(cfg(T.Kosmos2Config, "Kosmos2ForConditionalGeneration",
                            text_config={"vocab_size": 256, "embed_dim": 64, "layers": 2, "attention_heads": 4,
                                         "ffn_dim": 128, "max_position_embeddings": 64},
                            vision_config=vis, latent_query_num=4)),
        "bamba": Arch(cfg(T.BambaConfig, "BambaForCausalLM", **llama, attn_layer_indices=[1], mamba_n_heads=8,
                          mamba_d_head=16, mamba_d_state=16, mamba_n_groups=1, mamba_expand=2), saved="bf16"),
        "falcon_h1": Arch(cfg(T.FalconH1Config, "FalconH1ForCausalLM", **llama, mamba_n_heads=8, mamba_d_head=16,
                              mamba_d_ssm=128, mamba_d_state=16, mamba_n_groups=1, head_dim=16), saved="bf16"),
        "lfm2": Arch(cfg(T.Lfm2Config, "Lfm2ForCausalLM", **{k: v for k, v in llama.items()
                                                               if k != "max_position_embeddings"},
                         layer_types=["conv", "full_attention", "conv", "full_attention"]), saved="bf16"),
        "dbrx": Arch(cfg(T.DbrxConfig, "DbrxForCausalLM", d_model=64, n_heads=4, n_layers=4, max_seq_len=128,
                         vocab_size=256, attn_config={"kv_n_heads": 2, "rope_theta": 10000.0},
                         ffn_config={"ffn_hidden_size": 64, "moe_num_experts": 4, "moe_top_k": 2}), saved="bf16"),
        "chameleon": Arch(cfg(T.ChameleonConfig, "ChameleonForConditionalGeneration", **llama,
                              vocabulary_map={"<image>": 250, "IMGIMGAZ": 200, "IMGIMGBZ": 201},
                              vq_config={"embed_dim": 16, "num_embeddings": 32, "base_channels": 32,
                                         "channel_multiplier": [1, 2], "num_res_blocks": 1, "latent_channels": 16,
                                         "resolution": 32, "attn_resolutions": []}), saved="bf16"),
        "deit": Arch(cfg(T.DeiTConfig, "DeiTForImageClassificationWithTeacher", **vis)),
        "swinv2": Arch(cfg(T.Swinv2Config, "Swinv2ForImageClassification", image_size=32, patch_size=4,
                           embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4)),
        "dinov3": Arch(cfg(T.DINOv3ViTConfig, "DINOv3ViTModel", **vis, num_register_tokens=2)),
        "hiera": Arch(cfg(T.HieraConfig, "HieraForImageClassification", embed_dim=16, image_size=[32, 32],
                          patch_size=[3, 3], patch_stride=[2, 2], patch_padding=[1, 1], depths=[1, 2],
                          num_heads=[1, 2], embed_dim_multiplier=2.0, num_query_pool=1, query_stride=[2, 2],
                          masked_unit_size=[4, 4], masked_unit_attention=[True, False])),
        "dpt": Arch(cfg(T.DPTConfig, "DPTForDepthEstimation", **vis, neck_hidden_sizes=[16, 32],
                        backbone_out_indices=[0, 1], fusion_hidden_size=32, reassemble_factors=[1, 1])),
        "jetmoe": Arch(cfg(T.JetMoeConfig, "JetMoeForCausalLM", vocab_size=256, hidden_size=64, num_hidden_layers=4,
                           num_key_value_heads=2, kv_channels=16, intermediate_size=64, num_local_experts=4,
                           num_experts_per_tok=2, max_position_embeddings=128), saved="bf16"),
        "minimax": Arch(cfg(T.MiniMaxConfig, "MiniMaxForCausalLM", **llama, head_dim=16, num_local_experts=4,
                            num_experts_per_tok=2,
                            layer_types=["linear_attention", "full_attention"] * 2), saved="bf16"),
        "granitemoehybrid": Arch(cfg(T.GraniteMoeHybridConfig, "GraniteMoeHybridForCausalLM", **llama,
                                     num_local_experts=4, num_experts_per_tok=2, shared_intermediate_size=64,
                                     layer_types=["mamba", "attention"] * 2, mamba_n_heads=8, mamba_d_head=16,
                                     mamba_d_state=16, mamba_n_groups=1), saved="bf16"),
        "dots1": Arch(cfg(T.Dots1Config, "Dots1ForCausalLM", **llama, n_routed_experts=4, num_experts_per_tok=2,
                          moe_intermediate_size=64, first_k_dense_replace=1, n_shared_experts=1, head_dim=16),
                      saved="bf16"),
        "flex_olmo": Arch(cfg(T.FlexOlmoConfig, "FlexOlmoForCausalLM", **llama, num_experts=4, pad_token_id=1,
                              num_experts_per_tok=2), saved="bf16"),
        "glm4v_moe": Arch(cfg(T.Glm4vMoeConfig, "Glm4vMoeForConditionalGeneration",
                              text_config={**llama, "n_routed_experts": 4, "num_experts_per_tok": 2,
                                           "moe_intermediate_size": 64, "first_k_dense_replace": 1,
                                           "n_shared_experts": 1, "head_dim": 16,
                                           "rope_scaling": {"rope_type": "default", "mrope_section": [2, 3, 3]}},
                              vision_config={"depth": 2, "hidden_size": 64, "intermediate_size": 128,
                                             "num_heads": 4, "out_hidden_size": 64, "patch_size": 8,
                                             "image_size": 32}), saved="bf16"),
        "qwen2_audio": Arch(cfg(T.Qwen2AudioConfig, "Qwen2AudioForConditionalGeneration",
                                audio_config={"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 4,
                                              "encoder_ffn_dim": 128, "num_mel_bins": 16,
                                              "max_source_positions": 32},
                                text_config=T.Qwen2Config(**llama).to_dict(), audio_token_index=250)),
        "internvl": Arch(cfg(T.InternVLConfig, "InternVLForConditionalGeneration",
                             vision_config={**vis, "image_size": [32, 32], "patch_size": [8, 8]},
                             text_config=T.Qwen2Config(**llama).to_dict(), image_token_id=250), saved="bf16"),
        "vipllava": Arch(cfg(T.VipLlavaConfig, "VipLlavaForConditionalGeneration",
                             vision_config=T.CLIPVisionConfig(**vis).to_dict(), text_config=llama_text,
                             image_token_index=250, vision_feature_layers=[-2, -1])),
        "video_llava": Arch(cfg(T.VideoLlavaConfig, "VideoLlavaForConditionalGeneration",
                                vision_config=T.CLIPVisionConfig(**vis).to_dict(), text_config=llama_text,
                                image_token_index=250, video_token_index=251)),
        "llava_next_video": Arch(cfg(T.LlavaNextVideoConfig, "LlavaNextVideoForConditionalGeneration",
                                     vision_config=T.CLIPVisionConfig(**vis).to_dict(), text_config=llama_text,
                                     image_token_index=250, video_token_index=251,
                                     image_grid_pinpoints=[[32, 32]]), saved="bf16"),
        "got_ocr2": Arch(cfg(T.GotOcr2Config, "GotOcr2ForConditionalGeneration",
                             vision_config={"hidden_size": 32, "output_channels": 64, "num_hidden_layers": 2,
                                            "num_attention_heads": 2, "image_size": 64, "patch_size": 16,
                                            "global_attn_indexes": [1], "mlp_dim": 64},
                             text_config=T.Qwen2Config(**llama).to_dict(), image_token_index=250)),
        "mllama": Arch(cfg(T.MllamaConfig, "MllamaForConditionalGeneration", vision_config=mllama_vis,
                           text_config={**llama, "cross_attention_layers": [1], "rope_scaling": None,
                                        "pad_token_id": 1},
                           image_token_index=250), saved="bf16"),
        "nemotron_h": Arch(cfg(T.NemotronHConfig, "NemotronHForCausalLM", vocab_size=256, hidden_size=64,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=128,
                               hybrid_override_pattern="M*M-", mamba_num_heads=8, mamba_head_dim=16, ssm_state_size=16,
                               n_groups=1, max_position_embeddings=128), saved="bf16"),
        "zamba2": Arch(cfg(T.Zamba2Config, "Zamba2ForCausalLM", vocab_size=256, hidden_size=64, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=4, mamba_d_state=16, mamba_headdim=16,
                           mamba_ngroups=1, intermediate_size=128, layers_block_type=["mamba", "hybrid"] * 2,
                           num_mem_blocks=1, max_position_embeddings=128), saved="bf16"),
        "rwkv": Arch(cfg(T.RwkvConfig, "RwkvForCausalLM", vocab_size=256, hidden_size=64, num_hidden_layers=4,
                         attention_hidden_size=64, intermediate_size=128, context_length=64)),
        "t5gemma": Arch(cfg(T.T5GemmaConfig, "T5GemmaForConditionalGeneration",
                            encoder={**llama, "head_dim": 16}, decoder={**llama, "head_dim": 16}, vocab_size=256),
                        saved="bf16"),
        "bigbird_pegasus": Arch(cfg(T.BigBirdPegasusConfig, "BigBirdPegasusForConditionalGeneration", **bart,
                                    attention_type="original_full")),
        "moonshine": Arch(cfg(T.MoonshineConfig, "MoonshineForConditionalGeneration", vocab_size=256,
                              hidden_size=64, intermediate_size=128, encoder_num_hidden_layers=2,
                              decoder_num_hidden_layers=2, encoder_num_attention_heads=4,
                              decoder_num_attention_heads=4, max_position_embeddings=128)),
        "pop2piano": Arch(cfg(T.Pop2PianoConfig, "Pop2PianoForConditionalGeneration", **t5, composer_vocab_size=4)),
        "cohere2_vision": Arch(cfg(T.Cohere2VisionConfig, "Cohere2VisionForConditionalGeneration",
                                   vision_config=T.SiglipVisionConfig(**vis).to_dict(),
                                   text_config={**llama, "model_type": "cohere2"}, image_token_id=250,
                                   downsample_factor=2), saved="bf16"),
    }


def write_checkpoint(arch: Arch, folder: Path, seed: int = 0) -> Path:
    """Save a seeded tiny model of `arch` into `folder` as its layout and dtype say; returns the folder."""
    import transformers

    config = arch.make()
    torch.manual_seed(seed)
    model = getattr(transformers, config.architectures[0])(config)
    if arch.saved == "bf16":
        model = model.to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    if arch.layout == "bin":
        model.save_pretrained(folder)
        for file in folder.glob("*.safetensors*"):
            file.unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    else:
        model.save_pretrained(folder, max_shard_size="100KB" if arch.layout == "sharded" else "50GB")
    saved = json.loads((folder / "config.json").read_text())
    saved["dtype"] = {"fp32": "float32", "bf16": "bfloat16"}[arch.saved]
    if not arch.config_dtype:
        saved.pop("dtype", None)
        saved.pop("torch_dtype", None)
    (folder / "config.json").write_text(json.dumps(saved))
    return folder


def _from_pretrained_bytes(model: torch.nn.Module) -> int:
    """The size transformers' planner gives the model, counted on the model as from_pretrained builds it (its own
    init contexts: untied, tied copies not counted), not on weightdoctor's: the budgets do not move with a bug."""
    import copy
    import inspect

    from transformers.integrations.accelerate import compute_module_sizes
    from transformers.utils.generic import ContextManagers

    cls = type(model)
    config = copy.deepcopy(model.config)
    # as from_pretrained calls it: transformers 5.25 passes the config too, 5.17's takes none
    with_config = {"config": config} if "config" in inspect.signature(cls.get_init_context).parameters else {}
    with ContextManagers(cls.get_init_context(config.dtype, False, False, False, **with_config)):
        fresh = cls(config)
    return int(compute_module_sizes(fresh)[0][""])


def _budgets(total: int) -> list[tuple[str, list[int], int | None]]:
    return [
        ("1gpu+cpu", [total // 2], 10 * GB),
        ("2gpu+cpu", [total // 3, total // 3], 10 * GB),
        ("3gpu+cpu", [total // 2, total // 4, total // 4], 10 * GB),
        ("4gpu+cpu", [total // 5] * 4, 10 * GB),
        ("2gpu+cpu+disk", [total // 4, total // 4], total // 4),
        ("2gpu+disk", [total // 3, total // 4], None),
        ("4gpu-roomy+cpu", [total // 2] * 4, 10 * GB),
        ("2gpu-all", [total] * 2, 10 * GB),
        ("cpu+disk", [], total // 2),
    ]


def _short(device_map: dict[str, Any] | None) -> str:
    if device_map is None:
        return "-"
    counts: dict[str, int] = {}
    for device in device_map.values():
        counts[str(device)] = counts.get(str(device), 0) + 1
    return f"{len(device_map)} entries " + ",".join(f"{d}:{n}" for d, n in counts.items())


def _cli_map(folder: Path, dtype: str | None, strategy: str, gpus: list[int], cpu: int | None,
             model_class: str | None, no_split: list[str] | None) -> dict[str, Any] | None:
    """The device_map of `weightdoctor plan-devices FOLDER ... --json`, run as a user runs it."""
    command = [sys.executable, "-m", "weightdoctor", "plan-devices", str(folder), "--strategy", strategy, "--json",
               "--disk"]
    for size in gpus:
        command += ["--gpu", str(size)]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    if dtype:
        command += ["--dtype", dtype]
    if model_class:
        command += ["--model-class", model_class]
    for name in no_split or []:
        command += ["--no-split", name]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        return json.loads(done.stdout)["device_map"]
    except (ValueError, KeyError):
        print(done.stderr[-500:], file=sys.stderr)
        return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", help="architectures to run (bert, t5_untied, ...)")
    parser.add_argument("--quick", action="store_true",
                        help="auto and sequential only, two budgets (1gpu+cpu, 2gpu+disk), auto dtype; no CLI, "
                             "--model-class or --no-split cases")
    parser.add_argument("--verbose", action="store_true", help="print the differing entries of each mismatch")
    parser.add_argument("--cli", action="store_true", help="run the CLI check even with --quick")
    parser.add_argument("--load", action="store_true",
                        help="also load each model for real on the budgets without a GPU (CPU + disk, offloaded to a "
                             "temporary folder) and compare the loaded model's hf_device_map")
    args = parser.parse_args()
    quiet_libraries()
    import transformers

    from fixtures.plan_devices import from_pretrained_device_map, load_with_device_map
    from weightdoctor.errors import UsageError
    from weightdoctor.plan_devices import DTYPES, PlanRequest, build_planned_model, open_plan_source, plan_devices

    archs = {**_archs(), **_archs_plan90()}
    archs = only_these(parser, archs, args.only)
    counts = {"equal": 0, "different": 0, "error": 0}
    rows: list[tuple[str, str, str, str]] = []
    started = time.monotonic()

    def compare(name: str, expected: dict[str, Any] | None, got: dict[str, Any] | None) -> None:
        same = got == expected
        counts["equal" if same else "different"] += 1
        verdict = "equal" if same else "DIFFERENT"
        if not same and args.verbose and expected is not None and got is not None:
            keys = list(dict.fromkeys([*expected, *got]))
            verdict += " " + "; ".join(f"{k}: {expected.get(k)} vs {got.get(k)}" for k in keys
                                       if expected.get(k) != got.get(k))[:400]
        rows.append((name, _short(expected), _short(got), verdict))

    with tempfile.TemporaryDirectory() as tmp:
        for arch_name, arch in archs.items():
            try:
                folder = write_checkpoint(arch, Path(tmp) / arch_name)
            except Exception as exc:  # noqa: BLE001 - a sweep reports and goes on
                counts["error"] += 1
                rows.append((arch_name, "-", "-", f"ERROR checkpoint: {type(exc).__name__}: {str(exc)[:120]}"))
                continue
            # (label, --dtype, --model-class, --no-split): auto and one other dtype, then the class and no-split
            variants: list[tuple[str, str | None, str | None, list[str] | None]] = [("auto", None, None, None)]
            if not args.quick:
                variants.append((arch.other_dtype, arch.other_dtype, None, None))
                if arch.model_class:
                    variants.append((f"class={arch.model_class}", None, arch.model_class, None))
                if arch.no_split:
                    variants.append((f"no-split={'+'.join(arch.no_split)}", None, None, arch.no_split))
            cli_done = False
            for label, dtype, model_class, no_split in variants:
                case = f"{arch_name}[{arch.saved},{arch.layout}]/{label}"
                try:
                    with open_plan_source(str(folder)) as checkpoint:
                        planned = build_planned_model(checkpoint, dtype, model_class)
                except Exception as exc:  # noqa: BLE001
                    counts["error"] += 1
                    rows.append((case, "-", "-", f"ERROR plan: {type(exc).__name__}: {exc}"[:200]))
                    continue
                total = _from_pretrained_bytes(planned.model)
                kwargs: dict[str, Any] = {}
                if dtype:
                    kwargs["dtype"] = getattr(torch, DTYPES[dtype][0])
                if model_class:
                    kwargs["model_class"] = getattr(transformers, model_class)
                if no_split:
                    kwargs["no_split"] = no_split
                budgets = _budgets(total)
                if args.quick:
                    budgets = [budgets[0], budgets[5]]
                for strategy in (("auto", "sequential") if args.quick else STRATEGIES):
                    for budget, gpus, cpu in budgets:
                        name = f"{case}/{strategy}/{budget}"
                        memory: dict[int | str, int] = dict(enumerate(gpus))
                        if cpu is not None:
                            memory["cpu"] = cpu
                        request = PlanRequest(gpus=gpus, cpu=cpu, strategy=strategy, disk=True, no_split=no_split,
                                              suggest=False)
                        try:
                            expected = from_pretrained_device_map(folder, strategy, memory, **kwargs)
                        except Exception as oracle_exc:  # noqa: BLE001
                            # transformers' own planner fails (its tied-parameter bookkeeping raises IndexError
                            # on some disk maps): plan-devices must refuse these budgets too, naming the planner.
                            failed = f"{type(oracle_exc).__name__}: {oracle_exc}"
                            try:
                                plan_devices(planned, request)
                                refused = ""
                            except UsageError as exc:
                                refused = str(exc)
                            same = "fails on these budgets" in refused and type(oracle_exc).__name__ in refused
                            counts["equal" if same else "different"] += 1
                            rows.append((name, "fails", "fails" if refused else "a plan",
                                         f"equal (both fail: {failed})"[:90] if same else f"DIFFERENT: {failed}"[:200]))
                            continue
                        try:
                            got = plan_devices(planned, request).device_map
                        except Exception as exc:  # noqa: BLE001
                            counts["error"] += 1
                            rows.append((name, _short(expected), "-", f"ERROR plan: {exc}"[:200]))
                            continue
                        compare(name, expected, got)
                        if args.load and not gpus and not no_split:
                            # no GPU in the budget: this machine can run the whole load, offloading to disk
                            try:
                                loaded = load_with_device_map(folder, strategy, Path(tmp) / f"offload-{len(rows)}",
                                                              max_memory=memory, **kwargs)
                                real = dict(loaded.hf_device_map)
                                del loaded
                            except Exception as exc:  # noqa: BLE001
                                counts["error"] += 1
                                rows.append((name + "/load", _short(expected), "-",
                                             f"ERROR load: {type(exc).__name__}: {exc}"[:200]))
                            else:
                                compare(name + "/load", expected, real)
                        if not cli_done and (args.cli or not args.quick) and strategy == "auto":
                            # once per architecture: the CLI agrees with the oracle on its first case
                            cli_done = True
                            compare(name + "/cli", expected,
                                    _cli_map(folder, dtype, strategy, gpus, cpu, model_class, no_split))
    print_table(("case", "expected", "got", "verdict"), rows, (None, 30, 30, None))
    return summary(counts, len(archs), started)


if __name__ == "__main__":
    sys.exit(main())
