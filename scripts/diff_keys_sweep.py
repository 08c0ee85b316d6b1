"""Oracle sweep of `diff-keys A --model-class CLASS --config B` against what transformers itself reports.

For tiny seeded models of ~90 architectures (decoder LMs, MoE, encoders, seq2seq, vision, audio, multimodal),
saved with `save_pretrained`, derives checkpoints as they turn up in real life and compares the missing /
unexpected / mismatched key sets of `diff_checkpoint_against_model(...)` with those of
`CLASS.from_pretrained(A, config=B, output_loading_info=True, ignore_mismatched_sizes=True)`:

* a head model into its base class and a base model into each head class;
* DDP's `module.` and torch.compile's `_orig_mod.` before every key (config kept), also on a base into a head;
* num_labels changed (through B's config, and through `--num-labels` / from_pretrained's `num_labels=`);
* the vocabulary resized; tied and untied output embeddings against a config that says the other;
* one key dropped and an extra key added; a bf16 checkpoint; a `.bin` checkpoint.

Once per architecture (with --quick: for the first one) the CLI (`weightdoctor diff-keys A --model-class X
--config B --json`, a subprocess) is run on the first case too, and its sets compared with the Python API's. Where
from_pretrained raises, weightdoctor must refuse too, or say in its report that from_pretrained raises.

    PYTHONPATH=. .venv/bin/python scripts/diff_keys_sweep.py [--only NAME ...] [--quick] [--verbose] [--no-cli]

Prints one line per case (case / class / transformers' counts / ours / verdict) and the counts; exits 1 on any
difference or error.
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
from sweep_common import print_table, quiet_libraries

Sets = tuple[frozenset[str], frozenset[str], frozenset[tuple[str, tuple[int, ...], tuple[int, ...]]]]


@dataclass
class Arch:
    """A tiny architecture: its config, base class, head classes, and which of them are LM / label heads."""

    config: Callable[[], Any]
    base: str
    heads: list[str]
    lm: str | None = None  # the class with an output embedding (tied or not)
    labels: str | None = None  # the class with a num_labels head
    text: bool = True  # has a vocabulary to resize
    # (class saved, class loaded with the saved config): sub-models, other heads, Auto classes
    others: list[tuple[str, str]] = field(default_factory=list)


def _archs() -> dict[str, Arch]:
    import transformers as T

    small = {"vocab_size": 96, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "max_position_embeddings": 64}
    kv = {**small, "num_key_value_heads": 2}
    enc = {**small, "type_vocab_size": 2}
    s2s = {"vocab_size": 96, "d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
           "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
           "max_position_embeddings": 64, "pad_token_id": 1, "decoder_start_token_id": 2}
    t5 = {"vocab_size": 96, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4,
          "decoder_start_token_id": 0}
    vit = {"image_size": 32, "patch_size": 8, "num_channels": 3, "hidden_size": 32, "num_hidden_layers": 2,
           "num_attention_heads": 4, "intermediate_size": 64}
    clip_text = {"vocab_size": 96, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "max_position_embeddings": 64}
    llama_text = {"model_type": "llama", **kv}

    def decoder(cfg: Callable[[], Any], stem: str, **kw: Any) -> Arch:
        return Arch(cfg, f"{stem}Model", [f"{stem}ForCausalLM", f"{stem}ForSequenceClassification"],
                    lm=f"{stem}ForCausalLM", labels=f"{stem}ForSequenceClassification", **kw)

    def encoder(cfg: Callable[[], Any], stem: str) -> Arch:
        return Arch(cfg, f"{stem}Model", [f"{stem}ForSequenceClassification", f"{stem}ForMaskedLM"],
                    lm=f"{stem}ForMaskedLM", labels=f"{stem}ForSequenceClassification")

    archs = {
        "llama": decoder(lambda: T.LlamaConfig(**kv), "Llama"),
        "mistral": decoder(lambda: T.MistralConfig(**kv), "Mistral"),
        "qwen2": decoder(lambda: T.Qwen2Config(**kv), "Qwen2"),
        "qwen3": decoder(lambda: T.Qwen3Config(**kv, head_dim=8), "Qwen3"),
        "gemma": decoder(lambda: T.GemmaConfig(**kv, head_dim=8), "Gemma"),
        "gemma2": decoder(lambda: T.Gemma2Config(**kv, head_dim=8), "Gemma2"),
        "phi": decoder(lambda: T.PhiConfig(**kv), "Phi"),
        "phi3": decoder(lambda: T.Phi3Config(**kv, pad_token_id=0), "Phi3"),
        "falcon": decoder(lambda: T.FalconConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=4), "Falcon"),
        "gpt_neox": decoder(lambda: T.GPTNeoXConfig(**small), "GPTNeoX"),
        "gptj": decoder(lambda: T.GPTJConfig(vocab_size=96, n_embd=32, n_layer=2, n_head=4, rotary_dim=4,
                                             n_positions=64), "GPTJ"),
        "bloom": decoder(lambda: T.BloomConfig(vocab_size=96, hidden_size=32, n_layer=2, n_head=4), "Bloom"),
        "opt": decoder(lambda: T.OPTConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                                           num_attention_heads=4, max_position_embeddings=64,
                                           word_embed_proj_dim=32), "OPT"),
        "mpt": decoder(lambda: T.MptConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=96, max_seq_len=64), "Mpt"),
        "stablelm": decoder(lambda: T.StableLmConfig(**kv), "StableLm"),
        "gpt2": Arch(lambda: T.GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64),
                     "GPT2Model", ["GPT2LMHeadModel", "GPT2ForSequenceClassification"], lm="GPT2LMHeadModel",
                     labels="GPT2ForSequenceClassification"),
        "mixtral": decoder(lambda: T.MixtralConfig(**kv, num_local_experts=4, num_experts_per_tok=2), "Mixtral"),
        "qwen2_moe": decoder(lambda: T.Qwen2MoeConfig(**kv, num_experts=4, num_experts_per_tok=2,
                                                      moe_intermediate_size=32, shared_expert_intermediate_size=32),
                             "Qwen2Moe"),
        "qwen3_moe": decoder(lambda: T.Qwen3MoeConfig(**kv, head_dim=8, num_experts=4, num_experts_per_tok=2,
                                                      moe_intermediate_size=32, mlp_only_layers=[0]), "Qwen3Moe"),
        "deepseek_v3": decoder(lambda: T.DeepseekV3Config(**{**kv, "num_key_value_heads": 4}, n_routed_experts=4,
                                                          num_experts_per_tok=2, moe_intermediate_size=32, n_group=1,
                                                          topk_group=1, first_k_dense_replace=1, q_lora_rank=16,
                                                          kv_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=4,
                                                          v_head_dim=8), "DeepseekV3"),
        "olmoe": Arch(lambda: T.OlmoeConfig(**kv, num_experts=4, num_experts_per_tok=2), "OlmoeModel",
                      ["OlmoeForCausalLM"], lm="OlmoeForCausalLM"),
        "bert": encoder(lambda: T.BertConfig(**enc), "Bert"),
        "roberta": encoder(lambda: T.RobertaConfig(**enc, pad_token_id=1), "Roberta"),
        "deberta_v2": encoder(lambda: T.DebertaV2Config(**enc), "DebertaV2"),
        "electra": encoder(lambda: T.ElectraConfig(**enc, embedding_size=16), "Electra"),
        "albert": encoder(lambda: T.AlbertConfig(**enc, embedding_size=16), "Albert"),
        "funnel": Arch(lambda: T.FunnelConfig(vocab_size=96, block_sizes=[1, 1], d_model=32, n_head=4, d_head=8,
                                              d_inner=64), "FunnelModel",
                       ["FunnelForSequenceClassification", "FunnelForMaskedLM"], lm="FunnelForMaskedLM",
                       labels="FunnelForSequenceClassification"),
        "distilbert": encoder(lambda: T.DistilBertConfig(vocab_size=96, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                                         max_position_embeddings=64), "DistilBert"),
        "xlm_roberta": encoder(lambda: T.XLMRobertaConfig(**enc, pad_token_id=1), "XLMRoberta"),
        "t5": Arch(lambda: T.T5Config(**t5), "T5Model", ["T5ForConditionalGeneration", "T5ForSequenceClassification"],
                   lm="T5ForConditionalGeneration", labels="T5ForSequenceClassification"),
        "mt5": Arch(lambda: T.MT5Config(**t5), "MT5Model", ["MT5ForConditionalGeneration"],
                    lm="MT5ForConditionalGeneration"),
        "bart": Arch(lambda: T.BartConfig(**s2s), "BartModel",
                     ["BartForConditionalGeneration", "BartForSequenceClassification"],
                     lm="BartForConditionalGeneration", labels="BartForSequenceClassification"),
        "marian": Arch(lambda: T.MarianConfig(**s2s), "MarianModel", ["MarianMTModel"], lm="MarianMTModel"),
        "pegasus": Arch(lambda: T.PegasusConfig(**s2s), "PegasusModel", ["PegasusForConditionalGeneration"],
                        lm="PegasusForConditionalGeneration"),
        "whisper": Arch(lambda: T.WhisperConfig(vocab_size=96, num_mel_bins=8, d_model=32, encoder_layers=2,
                                                decoder_layers=2, encoder_attention_heads=4,
                                                decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                                max_source_positions=16, max_target_positions=32, pad_token_id=1,
                                                decoder_start_token_id=2),
                        "WhisperModel", ["WhisperForConditionalGeneration"], lm="WhisperForConditionalGeneration"),
        "vit": Arch(lambda: T.ViTConfig(**vit), "ViTModel", ["ViTForImageClassification"],
                    labels="ViTForImageClassification", text=False),
        "deit": Arch(lambda: T.DeiTConfig(**vit), "DeiTModel",
                     ["DeiTForImageClassification", "DeiTForImageClassificationWithTeacher"],
                     labels="DeiTForImageClassification", text=False),
        "resnet": Arch(lambda: T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]), "ResNetModel",
                       ["ResNetForImageClassification"], labels="ResNetForImageClassification", text=False),
        "swin": Arch(lambda: T.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                          num_heads=[2, 2], window_size=4), "SwinModel",
                     ["SwinForImageClassification"], labels="SwinForImageClassification", text=False),
        "convnext": Arch(lambda: T.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], image_size=32),
                         "ConvNextModel", ["ConvNextForImageClassification"],
                         labels="ConvNextForImageClassification", text=False),
        "clip": Arch(lambda: T.CLIPConfig(text_config=clip_text, vision_config=vit, projection_dim=16),
                     "CLIPModel", ["CLIPForImageClassification"], labels="CLIPForImageClassification", text=False),
        "siglip": Arch(lambda: T.SiglipConfig(text_config=clip_text, vision_config=vit), "SiglipModel",
                       ["SiglipForImageClassification"], labels="SiglipForImageClassification", text=False),
        "wav2vec2": Arch(lambda: T.Wav2Vec2Config(vocab_size=32, hidden_size=32, num_hidden_layers=2,
                                                  num_attention_heads=4, intermediate_size=64, conv_dim=[16, 16],
                                                  conv_stride=[4, 4], conv_kernel=[8, 8], num_conv_pos_embeddings=8,
                                                  num_conv_pos_embedding_groups=4),
                         "Wav2Vec2Model", ["Wav2Vec2ForCTC", "Wav2Vec2ForSequenceClassification"],
                         labels="Wav2Vec2ForSequenceClassification", text=False),
        "llava": Arch(lambda: T.LlavaConfig(text_config=llama_text, vision_config={"model_type": "clip_vision_model",
                                                                                   **vit}, image_token_index=95),
                      "LlavaModel", ["LlavaForConditionalGeneration"], lm="LlavaForConditionalGeneration",
                      text=False),
        "gemma3": Arch(lambda: T.Gemma3Config(text_config={"model_type": "gemma3_text", **kv, "head_dim": 8},
                                              vision_config={"model_type": "siglip_vision_model", **vit},
                                              mm_tokens_per_image=4, image_token_index=95, boi_token_index=93,
                                              eoi_token_index=94),
                       "Gemma3Model", ["Gemma3ForConditionalGeneration"], lm="Gemma3ForConditionalGeneration",
                       text=False),
        "paligemma": Arch(lambda: T.PaliGemmaConfig(text_config={"model_type": "gemma", **kv, "head_dim": 8},
                                                    vision_config={"model_type": "siglip_vision_model", **vit},
                                                    image_token_index=95, projection_dim=32),
                          "PaliGemmaModel", ["PaliGemmaForConditionalGeneration"],
                          lm="PaliGemmaForConditionalGeneration", text=False),
        "mistral3": Arch(lambda: T.Mistral3Config(text_config={"model_type": "mistral", **kv},
                                                  vision_config={"model_type": "pixtral", "image_size": 32,
                                                                 "patch_size": 8, "hidden_size": 32, "head_dim": 8,
                                                                 "num_hidden_layers": 2, "num_attention_heads": 4,
                                                                 "intermediate_size": 64},
                                                  image_token_index=95, spatial_merge_size=2),
                         "Mistral3Model", ["Mistral3ForConditionalGeneration"], lm="Mistral3ForConditionalGeneration",
                         text=False),
        "qwen2_vl": Arch(lambda: T.Qwen2VLConfig(text_config={"model_type": "qwen2_vl_text", **kv,
                                                              "rope_scaling": {"type": "mrope",
                                                                               "mrope_section": [1, 1, 2]}},
                                                 vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 32,
                                                                "num_heads": 4, "patch_size": 4,
                                                                "spatial_merge_size": 2, "temporal_patch_size": 2},
                                                 image_token_id=94, video_token_id=95, vision_start_token_id=93),
                         "Qwen2VLModel", ["Qwen2VLForConditionalGeneration"], lm="Qwen2VLForConditionalGeneration",
                         text=False),
    }
    # oracle10: architectures with loading rules of their own (conversion mappings, fused experts, tied heads)
    moe = {"num_experts_per_tok": 2, "moe_intermediate_size": 32}
    speech = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
              "conv_dim": [16, 16], "conv_stride": [4, 4], "conv_kernel": [8, 8], "num_conv_pos_embeddings": 8,
              "num_conv_pos_embedding_groups": 4, "vocab_size": 32}
    archs.update({
        "llama4_text": Arch(lambda: T.Llama4TextConfig(**kv, intermediate_size_mlp=64, head_dim=8,
                                                       num_local_experts=4, num_experts_per_tok=1,
                                                       interleave_moe_layer_step=2, attention_chunk_size=8),
                            "Llama4TextModel", ["Llama4ForCausalLM"], lm="Llama4ForCausalLM"),
        "gemma3n_text": Arch(lambda: T.Gemma3nTextConfig(**{**kv, "num_hidden_layers": 4}, head_dim=8,
                                                         sliding_window=8, num_kv_shared_layers=2,
                                                         hidden_size_per_layer_input=8, vocab_size_per_layer_input=96,
                                                         laurel_rank=4, altup_num_inputs=2,
                                                         activation_sparsity_pattern=[0.0] * 4,
                                                         layer_types=["sliding_attention", "full_attention"] * 2),
                             "Gemma3nTextModel", ["Gemma3nForCausalLM"], lm="Gemma3nForCausalLM"),
        "qwen3_next": decoder(lambda: T.Qwen3NextConfig(**{**kv, "num_hidden_layers": 4}, head_dim=8, num_experts=4,
                                                        **moe, shared_expert_intermediate_size=32,
                                                        linear_num_value_heads=4, linear_num_key_heads=2,
                                                        linear_key_head_dim=8, linear_value_head_dim=8),
                              "Qwen3Next"),
        "glm4_moe": Arch(lambda: T.Glm4MoeConfig(**kv, head_dim=8, n_routed_experts=4, n_group=1, topk_group=1,
                                                 first_k_dense_replace=1, **moe),
                         "Glm4MoeModel", ["Glm4MoeForCausalLM"], lm="Glm4MoeForCausalLM"),
        "deepseek_v2": decoder(lambda: T.DeepseekV2Config(**{**kv, "num_key_value_heads": 4}, n_routed_experts=4,
                                                          n_shared_experts=1, first_k_dense_replace=1,
                                                          q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=4,
                                                          qk_nope_head_dim=4, v_head_dim=8, topk_method="greedy",
                                                          **moe), "DeepseekV2"),
        "granitemoe": Arch(lambda: T.GraniteMoeConfig(**kv, num_local_experts=4, num_experts_per_tok=2),
                           "GraniteMoeModel", ["GraniteMoeForCausalLM"], lm="GraniteMoeForCausalLM"),
        "cohere": Arch(lambda: T.CohereConfig(**kv), "CohereModel", ["CohereForCausalLM"], lm="CohereForCausalLM"),
        "starcoder2": decoder(lambda: T.Starcoder2Config(**kv), "Starcoder2"),
        "phimoe": decoder(lambda: T.PhimoeConfig(**kv, num_local_experts=4, num_experts_per_tok=2), "Phimoe"),
        "idefics3": Arch(lambda: T.Idefics3Config(text_config={"model_type": "llama", **kv},
                                                  vision_config={**vit, "model_type": "idefics3_vision"},
                                                  image_token_id=95, scale_factor=2),
                         "Idefics3Model", ["Idefics3ForConditionalGeneration"],
                         lm="Idefics3ForConditionalGeneration", text=False),
        "smolvlm": Arch(lambda: T.SmolVLMConfig(text_config={"model_type": "llama", **kv},
                                                vision_config={**vit, "model_type": "smolvlm_vision"},
                                                image_token_id=95, scale_factor=2),
                        "SmolVLMModel", ["SmolVLMForConditionalGeneration"], lm="SmolVLMForConditionalGeneration",
                        text=False),
        "qwen2_5_vl": Arch(lambda: T.Qwen2_5_VLConfig(text_config={"model_type": "qwen2_5_vl_text", **kv,
                                                                   "rope_scaling": {"type": "mrope",
                                                                                    "mrope_section": [1, 1, 2]}},
                                                      vision_config={"depth": 2, "hidden_size": 32,
                                                                     "intermediate_size": 64, "num_heads": 4,
                                                                     "out_hidden_size": 32, "patch_size": 4,
                                                                     "spatial_merge_size": 2, "temporal_patch_size": 2,
                                                                     "window_size": 16, "fullatt_block_indexes": [1]},
                                                      image_token_id=94, video_token_id=95,
                                                      vision_start_token_id=93),
                           "Qwen2_5_VLModel", ["Qwen2_5_VLForConditionalGeneration"],
                           lm="Qwen2_5_VLForConditionalGeneration", text=False),
        "blip2": Arch(lambda: T.Blip2Config(vision_config={**vit}, num_query_tokens=4,
                                            qformer_config={"hidden_size": 32, "num_hidden_layers": 2,
                                                            "num_attention_heads": 4, "intermediate_size": 64,
                                                            "encoder_hidden_size": 32, "vocab_size": 96},
                                            text_config={"model_type": "opt", "vocab_size": 96, "hidden_size": 32,
                                                         "num_hidden_layers": 2, "ffn_dim": 64,
                                                         "num_attention_heads": 4, "word_embed_proj_dim": 32}),
                      "Blip2Model", ["Blip2ForConditionalGeneration"], text=False),
        "pix2struct": Arch(lambda: T.Pix2StructConfig(
            text_config={"vocab_size": 96, "hidden_size": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2,
                         "num_heads": 4},
            vision_config={"hidden_size": 32, "patch_embed_hidden_size": 32, "d_kv": 8, "d_ff": 64,
                           "num_hidden_layers": 2, "num_attention_heads": 4}),
            "Pix2StructForConditionalGeneration", ["Pix2StructForConditionalGeneration"], text=False),
        "dinov2": Arch(lambda: T.Dinov2Config(**vit), "Dinov2Model", ["Dinov2ForImageClassification"],
                       labels="Dinov2ForImageClassification", text=False),
        "yolos": Arch(lambda: T.YolosConfig(**{**vit, "image_size": [32, 32]}, num_detection_tokens=4),
                      "YolosModel", ["YolosForObjectDetection"], text=False),
        "depth_anything": Arch(lambda: T.DepthAnythingConfig(
            backbone_config={"model_type": "dinov2", **vit, "out_features": ["stage1", "stage2"],
                             "reshape_hidden_states": False},
            neck_hidden_sizes=[8, 16], fusion_hidden_size=16, head_hidden_size=8, reassemble_factors=[2, 1]),
            "DepthAnythingForDepthEstimation", ["DepthAnythingForDepthEstimation"], text=False),
        "layoutlmv3": Arch(lambda: T.LayoutLMv3Config(**enc, input_size=32, patch_size=8, coordinate_size=8,
                                                      shape_size=8, max_2d_position_embeddings=64),
                           "LayoutLMv3Model", ["LayoutLMv3ForSequenceClassification",
                                               "LayoutLMv3ForTokenClassification"],
                           labels="LayoutLMv3ForSequenceClassification"),
        "longformer": encoder(lambda: T.LongformerConfig(**enc, attention_window=4, pad_token_id=1), "Longformer"),
        "big_bird": encoder(lambda: T.BigBirdConfig(**enc, attention_type="original_full"), "BigBird"),
        "xlnet": Arch(lambda: T.XLNetConfig(vocab_size=96, d_model=32, n_layer=2, n_head=4, d_inner=64),
                      "XLNetModel", ["XLNetLMHeadModel", "XLNetForSequenceClassification"], lm="XLNetLMHeadModel",
                      labels="XLNetForSequenceClassification"),
        "esm": encoder(lambda: T.EsmConfig(**{k: v for k, v in enc.items() if k != "type_vocab_size"},
                                           pad_token_id=1, mask_token_id=2), "Esm"),
        "encodec": Arch(lambda: T.EncodecConfig(hidden_size=8, num_filters=4, codebook_size=16, codebook_dim=8,
                                                upsampling_ratios=[2, 2], num_residual_layers=1),
                        "EncodecModel", ["EncodecModel"], text=False),
        "speecht5": Arch(lambda: T.SpeechT5Config(vocab_size=96, hidden_size=32, encoder_layers=2, decoder_layers=2,
                                                  encoder_attention_heads=4, decoder_attention_heads=4,
                                                  encoder_ffn_dim=64, decoder_ffn_dim=64, conv_dim=[16, 16],
                                                  conv_stride=[4, 4], conv_kernel=[8, 8], num_mel_bins=8,
                                                  speech_decoder_prenet_units=16, speech_decoder_postnet_units=16,
                                                  speaker_embedding_dim=16, num_conv_pos_embeddings=8,
                                                  num_conv_pos_embedding_groups=4, max_speech_positions=64,
                                                  max_text_positions=64),
                         "SpeechT5Model", ["SpeechT5ForTextToSpeech", "SpeechT5ForSpeechToText"],
                         lm="SpeechT5ForSpeechToText"),
        "hubert": Arch(lambda: T.HubertConfig(**speech), "HubertModel",
                       ["HubertForCTC", "HubertForSequenceClassification"],
                       labels="HubertForSequenceClassification", text=False),
        "wavlm": Arch(lambda: T.WavLMConfig(**speech, num_buckets=16, max_bucket_distance=32), "WavLMModel",
                      ["WavLMForCTC", "WavLMForSequenceClassification"],
                      labels="WavLMForSequenceClassification", text=False),
        "zamba": Arch(lambda: T.ZambaConfig(**{**kv, "num_key_value_heads": 4, "num_hidden_layers": 12},
                                            mamba_d_state=8, n_mamba_heads=2, mamba_expand=2),
                      "ZambaModel", ["ZambaForCausalLM", "ZambaForSequenceClassification"], lm="ZambaForCausalLM",
                      labels="ZambaForSequenceClassification"),
        "recurrent_gemma": Arch(lambda: T.RecurrentGemmaConfig(vocab_size=96, hidden_size=32, intermediate_size=64,
                                                               num_hidden_layers=3, num_attention_heads=4,
                                                               num_key_value_heads=2, lru_width=32,
                                                               attention_window_size=8, conv1d_width=4),
                                "RecurrentGemmaModel", ["RecurrentGemmaForCausalLM"], lm="RecurrentGemmaForCausalLM"),
        "mamba2": Arch(lambda: T.Mamba2Config(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_heads=4,
                                              head_dim=16, state_size=8, n_groups=1, expand=2),
                       "Mamba2Model", ["Mamba2ForCausalLM"], lm="Mamba2ForCausalLM"),
        "llama4": Arch(lambda: T.Llama4Config(
            text_config={**kv, "intermediate_size_mlp": 64, "head_dim": 8, "num_local_experts": 4,
                         "num_experts_per_tok": 1, "interleave_moe_layer_step": 2, "attention_chunk_size": 8},
            vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                           "intermediate_size": 64, "image_size": 32, "patch_size": 8, "vision_output_dim": 32,
                           "projector_input_dim": 32, "projector_output_dim": 32, "pixel_shuffle_ratio": 0.5},
            image_token_index=95, boi_token_index=93, eoi_token_index=94),
            "Llama4ForConditionalGeneration", ["Llama4ForConditionalGeneration"],
            lm="Llama4ForConditionalGeneration", text=False),
        "sam": Arch(lambda: T.SamConfig(
            vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 64,
                           "patch_size": 16, "output_channels": 16, "mlp_dim": 64, "window_size": 2,
                           "global_attn_indexes": [1], "num_pos_feats": 8},
            prompt_encoder_config={"hidden_size": 16, "image_size": 64, "patch_size": 16, "mask_input_channels": 4},
            mask_decoder_config={"hidden_size": 16, "mlp_dim": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                 "iou_head_hidden_dim": 16}),
            "SamModel", ["SamModel"], text=False),
        "mask2former": Arch(lambda: T.Mask2FormerConfig(
            backbone_config={"model_type": "swin", "image_size": 32, "patch_size": 4, "embed_dim": 16,
                             "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "window_size": 4,
                             "out_features": ["stage1", "stage2", "stage3", "stage4"]},
            hidden_dim=32, mask_feature_size=32, feature_size=32, encoder_feedforward_dim=32, dim_feedforward=32,
            decoder_layers=2, encoder_layers=1, num_queries=4, num_labels=3, num_attention_heads=2),
            "Mask2FormerModel", ["Mask2FormerModel"], text=False),
        "bark": Arch(lambda: T.BarkConfig(
            semantic_config={"hidden_size": 32, "num_layers": 1, "num_heads": 4, "input_vocab_size": 96,
                             "output_vocab_size": 96, "block_size": 32},
            coarse_acoustics_config={"hidden_size": 32, "num_layers": 1, "num_heads": 4, "input_vocab_size": 96,
                                     "output_vocab_size": 96, "block_size": 32},
            fine_acoustics_config={"hidden_size": 32, "num_layers": 1, "num_heads": 4, "input_vocab_size": 96,
                                   "output_vocab_size": 96, "block_size": 32, "n_codes_total": 4,
                                   "n_codes_given": 1},
            codec_config={"model_type": "encodec", "hidden_size": 8, "num_filters": 4, "codebook_size": 16,
                          "codebook_dim": 8, "upsampling_ratios": [2, 2], "num_residual_layers": 1}),
            "BarkModel", ["BarkModel"], text=False),
        "seamless_m4t": Arch(lambda: T.SeamlessM4TConfig(
            vocab_size=96, t2u_vocab_size=32, hidden_size=32, encoder_layers=1, decoder_layers=1,
            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
            speech_encoder_layers=1, speech_encoder_attention_heads=4, speech_encoder_intermediate_size=64,
            t2u_encoder_layers=1, t2u_decoder_layers=1, t2u_encoder_attention_heads=4, t2u_decoder_attention_heads=4,
            t2u_encoder_ffn_dim=64, t2u_decoder_ffn_dim=64, feature_projection_input_dim=16,
            unit_hifi_gan_vocab_size=16,
            upsample_initial_channel=16, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4],
            resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], unit_embed_dim=8, lang_embed_dim=8,
            spkr_embed_dim=8, vocoder_num_langs=2, vocoder_num_spkrs=2, max_position_embeddings=64,
            t2u_max_position_embeddings=64, adaptor_kernel_size=2, adaptor_stride=2, num_adapter_layers=1),
            "SeamlessM4TModel", ["SeamlessM4TForTextToText", "SeamlessM4TForSpeechToText"],
            lm="SeamlessM4TForTextToText", text=False),
        "musicgen_lm": Arch(lambda: T.MusicgenDecoderConfig(vocab_size=32, hidden_size=32, num_hidden_layers=2,
                                                            num_attention_heads=4, ffn_dim=64, num_codebooks=2,
                                                            max_position_embeddings=64),
                            "MusicgenModel", ["MusicgenForCausalLM"], text=False),
        "mobilebert": encoder(lambda: T.MobileBertConfig(**{**enc, "hidden_size": 64}, embedding_size=32,
                                                         intra_bottleneck_size=16, true_hidden_size=16,
                                                         num_feedforward_networks=2), "MobileBert"),
        "rembert": encoder(lambda: T.RemBertConfig(**enc, input_embedding_size=16, output_embedding_size=24,
                                                   pad_token_id=0), "RemBert"),
        "led": Arch(lambda: T.LEDConfig(**{k: v for k, v in s2s.items() if k != "max_position_embeddings"},
                                        max_encoder_position_embeddings=64, max_decoder_position_embeddings=64,
                                        attention_window=4),
                    "LEDModel", ["LEDForConditionalGeneration", "LEDForQuestionAnswering"],
                    lm="LEDForConditionalGeneration"),
        "prophetnet": Arch(lambda: T.ProphetNetConfig(vocab_size=96, hidden_size=32, encoder_ffn_dim=64,
                                                      decoder_ffn_dim=64, num_encoder_layers=2,
                                                      num_decoder_layers=2, num_encoder_attention_heads=4,
                                                      num_decoder_attention_heads=4, max_position_embeddings=64,
                                                      ngram=2, num_buckets=8, relative_max_distance=16),
                           "ProphetNetModel", ["ProphetNetForConditionalGeneration"],
                           lm="ProphetNetForConditionalGeneration"),
        "bigbird_pegasus": Arch(lambda: T.BigBirdPegasusConfig(**s2s, attention_type="original_full"),
                                "BigBirdPegasusModel", ["BigBirdPegasusForConditionalGeneration"],
                                lm="BigBirdPegasusForConditionalGeneration"),
        "speech_to_text": Arch(lambda: T.Speech2TextConfig(**{k: v for k, v in s2s.items()
                                                              if k != "max_position_embeddings"},
                                                           max_source_positions=64, max_target_positions=64,
                                                           input_feat_per_channel=8, num_conv_layers=2,
                                                           conv_channels=16),
                               "Speech2TextModel", ["Speech2TextForConditionalGeneration"],
                               lm="Speech2TextForConditionalGeneration"),
        "falcon_mamba": Arch(lambda: T.FalconMambaConfig(vocab_size=96, hidden_size=32, state_size=8,
                                                         num_hidden_layers=2, expand=2, conv_kernel=4),
                             "FalconMambaModel", ["FalconMambaForCausalLM"], lm="FalconMambaForCausalLM"),
        "lxmert": Arch(lambda: T.LxmertConfig(vocab_size=96, hidden_size=32, num_attention_heads=4,
                                              intermediate_size=64, l_layers=1, x_layers=1, r_layers=1,
                                              visual_feat_dim=16, visual_pos_dim=4, num_qa_labels=3,
                                              num_object_labels=5, num_attr_labels=4),
                       "LxmertModel", ["LxmertForPreTraining", "LxmertForQuestionAnswering"],
                       lm="LxmertForPreTraining"),
    })
    others = {
        # classes of another model type: from_pretrained reads A's config with the class's own config class
        "llama": [("LlamaForCausalLM", "Qwen2ForCausalLM"), ("LlamaForCausalLM", "MistralForCausalLM"),
                  ("LlamaForCausalLM", "Qwen3ForCausalLM"), ("LlamaModel", "Phi3Model")],
        "mistral": [("MistralForCausalLM", "LlamaForCausalLM")],
        "mixtral": [("MixtralForCausalLM", "LlamaForCausalLM"), ("MixtralForCausalLM", "MistralForCausalLM")],
        "bert": [("BertForMaskedLM", "RobertaForMaskedLM"),
                 ("BertForPreTraining", "BertForMaskedLM"), ("BertForMaskedLM", "BertForPreTraining"),
                 ("BertForPreTraining", "BertLMHeadModel"), ("BertForTokenClassification", "BertForQuestionAnswering")],
        "electra": [("ElectraForPreTraining", "ElectraForSequenceClassification"),
                    ("ElectraForMaskedLM", "ElectraForPreTraining")],
        "albert": [("AlbertForPreTraining", "AlbertForMaskedLM"), ("AlbertForMaskedLM", "AlbertForPreTraining")],
        "roberta": [("RobertaForMaskedLM", "RobertaForCausalLM"),
                    ("RobertaForSequenceClassification", "BertForSequenceClassification"),
                    ("RobertaForMaskedLM", "XLMRobertaForMaskedLM")],
        "t5": [("T5ForConditionalGeneration", "T5EncoderModel"), ("T5EncoderModel", "T5ForConditionalGeneration"),
               ("T5Model", "T5EncoderModel")],
        "mt5": [("MT5ForConditionalGeneration", "MT5EncoderModel"),
                ("MT5EncoderModel", "MT5ForConditionalGeneration")],
        "bart": [("BartForConditionalGeneration", "BartForCausalLM"),
                 ("BartForCausalLM", "BartForConditionalGeneration"),
                 ("BartForConditionalGeneration", "BartForQuestionAnswering")],
        "marian": [("MarianMTModel", "MarianForCausalLM")],
        "pegasus": [("PegasusForConditionalGeneration", "PegasusForCausalLM")],
        "whisper": [("WhisperForConditionalGeneration", "WhisperForAudioClassification"),
                    ("WhisperForConditionalGeneration", "WhisperForCausalLM")],
        "clip": [("CLIPModel", "CLIPTextModel"), ("CLIPModel", "CLIPVisionModel"),
                 ("CLIPModel", "CLIPTextModelWithProjection"), ("CLIPModel", "CLIPVisionModelWithProjection"),
                 ("CLIPForImageClassification", "CLIPVisionModel")],
        "siglip": [("SiglipModel", "SiglipTextModel"), ("SiglipModel", "SiglipVisionModel")],
        "wav2vec2": [("Wav2Vec2ForPreTraining", "Wav2Vec2ForCTC"), ("Wav2Vec2ForCTC", "Wav2Vec2ForPreTraining"),
                     ("Wav2Vec2ForCTC", "Wav2Vec2ForSequenceClassification")],
        "gpt2": [("GPT2LMHeadModel", "GPT2DoubleHeadsModel"), ("GPT2DoubleHeadsModel", "GPT2LMHeadModel")],
        "vit": [("ViTForImageClassification", "ViTForMaskedImageModeling")],
        "deit": [("DeiTForImageClassificationWithTeacher", "AutoModelForImageClassification"),
                 ("DeiTForImageClassificationWithTeacher", "DeiTForMaskedImageModeling")],
        "funnel": [("FunnelBaseModel", "AutoModel"), ("FunnelModel", "FunnelBaseModel"),
                   ("FunnelForMaskedLM", "FunnelBaseModel")],
        "llava": [("LlavaForConditionalGeneration", "AutoModelForImageTextToText"),
                  ("LlavaForConditionalGeneration", "LlamaForCausalLM"), ("LlavaModel", "LlamaModel")],
        "qwen2_vl": [("Qwen2VLForConditionalGeneration", "AutoModelForImageTextToText")],
        # oracle10: sub-models, other heads and classes of another type of the architectures added above
        "llama4": [("Llama4ForConditionalGeneration", "Llama4ForCausalLM"),
                 ("Llama4ForConditionalGeneration", "Llama4TextModel"),
                 ("Llama4ForConditionalGeneration", "Llama4VisionModel"),
                 ("Llama4ForConditionalGeneration", "AutoModelForCausalLM")],
        "qwen2_5_vl": [("Qwen2_5_VLForConditionalGeneration", "Qwen2ForCausalLM"),
                     ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLTextModel")],
        "idefics3": [("Idefics3ForConditionalGeneration", "LlamaForCausalLM"),
                   ("Idefics3ForConditionalGeneration", "Idefics3VisionTransformer")],
        "smolvlm": [("SmolVLMForConditionalGeneration", "AutoModelForImageTextToText")],
        "blip2": [("Blip2ForConditionalGeneration", "Blip2VisionModel"),
                ("Blip2ForConditionalGeneration", "OPTForCausalLM"),
                ("Blip2ForConditionalGeneration", "Blip2QFormerModel"), ("Blip2Model", "Blip2ForImageTextRetrieval")],
        "pix2struct": [("Pix2StructForConditionalGeneration", "Pix2StructVisionModel"),
                     ("Pix2StructForConditionalGeneration", "Pix2StructTextModel")],
        "sam": [("SamModel", "SamVisionModel")],
        "bark": [("BarkModel", "BarkSemanticModel"), ("BarkModel", "BarkFineModel"), ("BarkModel", "EncodecModel")],
        "seamless_m4t": [("SeamlessM4TModel", "SeamlessM4TForTextToText"),
                       ("SeamlessM4TModel", "SeamlessM4TForTextToSpeech"),
                       ("SeamlessM4TForTextToText", "SeamlessM4TModel"),
                       ("SeamlessM4TModel", "SeamlessM4TForSpeechToSpeech")],
        "speecht5": [("SpeechT5ForTextToSpeech", "SpeechT5ForSpeechToSpeech"),
                   ("SpeechT5ForSpeechToText", "SpeechT5ForTextToSpeech")],
        "hubert": [("HubertForCTC", "Wav2Vec2ForCTC")],
        "wavlm": [("WavLMForCTC", "WavLMForXVector"), ("WavLMForCTC", "WavLMForAudioFrameClassification")],
        "esm": [("EsmForMaskedLM", "EsmForTokenClassification")],
        "longformer": [("LongformerForMaskedLM", "RobertaForMaskedLM")],
        "big_bird": [("BigBirdForMaskedLM", "BigBirdForPreTraining"), ("BigBirdForMaskedLM", "BigBirdForCausalLM")],
        "xlnet": [("XLNetLMHeadModel", "XLNetForQuestionAnswering"),
                ("XLNetLMHeadModel", "XLNetForQuestionAnsweringSimple")],
        "mobilebert": [("MobileBertForMaskedLM", "MobileBertForPreTraining"),
                     ("MobileBertForPreTraining", "MobileBertForMaskedLM")],
        "rembert": [("RemBertForMaskedLM", "RemBertForCausalLM")],
        "prophetnet": [("ProphetNetForConditionalGeneration", "ProphetNetForCausalLM"),
                     ("ProphetNetForConditionalGeneration", "ProphetNetEncoder")],
        "led": [("LEDForConditionalGeneration", "BartForConditionalGeneration")],
        "bigbird_pegasus": [("BigBirdPegasusForConditionalGeneration", "BigBirdPegasusForCausalLM")],
        "lxmert": [("LxmertForPreTraining", "LxmertForQuestionAnswering")],
        "zamba": [("ZambaForCausalLM", "ZambaForSequenceClassification")],
        "recurrent_gemma": [("RecurrentGemmaForCausalLM", "RecurrentGemmaModel")],
        "falcon_mamba": [("FalconMambaForCausalLM", "MambaForCausalLM")],
        "mamba2": [("Mamba2ForCausalLM", "MambaForCausalLM")],
        "glm4_moe": [("Glm4MoeForCausalLM", "Glm4ForCausalLM")],
        "deepseek_v2": [("DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM")],
        "phimoe": [("PhimoeForCausalLM", "MixtralForCausalLM")],
        "starcoder2": [("Starcoder2ForCausalLM", "MistralForCausalLM")],
        "cohere": [("CohereForCausalLM", "Cohere2ForCausalLM")],
        "granitemoe": [("GraniteMoeForCausalLM", "GraniteMoeSharedForCausalLM")],
        "qwen3_next": [("Qwen3NextForCausalLM", "Qwen3MoeForCausalLM")],
        "dinov2": [("Dinov2ForImageClassification", "Dinov2Backbone")],
        "yolos": [("YolosForObjectDetection", "ViTModel")],
        "layoutlmv3": [("LayoutLMv3ForTokenClassification", "LayoutLMv3ForQuestionAnswering")],
        "encodec": [("EncodecModel", "AutoModel")],
        "musicgen_lm": [("MusicgenForCausalLM", "MusicgenModel")],
    }
    for name, arch in archs.items():
        arch.others += others.get(name, [])
        arch.others.append((arch.heads[0], "AutoModel"))
        if arch.lm and name not in ("llava", "qwen2_vl", "gemma3", "paligemma", "mistral3"):
            auto = ("AutoModelForMaskedLM" if arch.lm.endswith("MaskedLM") else "AutoModelForCausalLM"
                    if arch.lm.endswith("CausalLM") or arch.lm == "GPT2LMHeadModel" else "AutoModelForSpeechSeq2Seq"
                    if name == "whisper" else "AutoModelForSeq2SeqLM")
            arch.others.append((arch.base, auto))
        if arch.labels:
            auto = ("AutoModelForImageClassification" if "Image" in arch.labels else
                    "AutoModelForAudioClassification" if name == "wav2vec2" else "AutoModelForSequenceClassification")
            arch.others.append((arch.base, auto))
    return archs


QUICK = ("llama", "gpt2", "bert", "t5", "vit", "mixtral")


def _build(arch: Arch, class_name: str, seed: int = 0, **config_changes: Any) -> torch.nn.Module:
    import transformers

    config = arch.config()
    for key, value in config_changes.items():
        setattr(config, key, value)
        if key == "tie_word_embeddings" and hasattr(config, "get_text_config"):
            setattr(config.get_text_config(), key, value)
    torch.manual_seed(seed)
    return getattr(transformers, class_name)(config).eval()


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(file))
    return weights


def _to_bin(folder: Path, shards: int = 1) -> None:
    """Replace a folder's safetensors files by `pytorch_model.bin` (or `shards` .bin files and their index)."""
    weights = _read_weights(folder)
    for file in [*folder.glob("*.safetensors"), *folder.glob("*.safetensors.index.json")]:
        file.unlink()
    if shards == 1:
        torch.save(weights, folder / "pytorch_model.bin")
        return
    names = sorted(weights)
    weight_map = {}
    for index in range(shards):
        file = f"pytorch_model-{index + 1:05d}-of-{shards:05d}.bin"
        part = names[index::shards]
        torch.save({k: weights[k] for k in part}, folder / file)
        weight_map.update(dict.fromkeys(part, file))
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _write(weights: dict[str, torch.Tensor], config_from: Path, folder: Path) -> Path:
    from fixtures.diff_pairs import save_state_dict_folder

    return save_state_dict_folder(weights, json.loads((config_from / "config.json").read_text()), folder)


def _config_folder(model_or_folder: Any, folder: Path, **changes: Any) -> Path:
    """A folder holding only a config.json: the model's (or a folder's) config with `changes` made."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model_or_folder, Path):
        config = json.loads((model_or_folder / "config.json").read_text())
    else:
        config = model_or_folder.config.to_dict()
    for key, value in changes.items():
        config[key] = value
        for sub in ("text_config",):
            if key == "tie_word_embeddings" and isinstance(config.get(sub), dict):
                config[sub][key] = value
        if key == "num_labels":
            config.pop("id2label", None)
            config.pop("label2id", None)
            config["id2label"] = {str(i): f"LABEL_{i}" for i in range(value)}
            config["label2id"] = {f"LABEL_{i}": i for i in range(value)}
        if key == "vocab_size" and isinstance(config.get("text_config"), dict):
            config["text_config"][key] = value
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


_LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "encoder_layers", "decoder_layers", "depth")


def _shift_layers(config: dict[str, Any], delta: int) -> bool:
    """Add `delta` to every layer count of a config (and its sub-configs); False when it has none to change."""
    changed = False
    for key, value in config.items():
        if isinstance(value, dict):
            changed = _shift_layers(value, delta) or changed
        elif key in _LAYER_KEYS and isinstance(value, int) and value + delta >= 1:
            config[key] = value + delta
            changed = True
            if isinstance(config.get("layer_types"), list) and config["layer_types"]:
                types = config["layer_types"]
                config["layer_types"] = types[:value + delta] if delta < 0 else types + types[-1:] * delta
        elif key == "depths" and isinstance(value, list):
            config[key] = [*value[:-1], value[-1] + delta] if value[-1] + delta >= 1 else value
            changed = value[-1] + delta >= 1
    return changed


@dataclass
class Case:
    name: str
    a: Path
    model_class: str
    config: Path | None  # None: A's own config
    num_labels: int | None = None


def _cases(name: str, arch: Arch, out: Path, quick: bool) -> list[Case]:
    """The checkpoints of one architecture and the classes to load them into."""
    out.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    saved: dict[str, Path] = {}

    def save(class_name: str, tag: str = "", dtype: torch.dtype | None = None, bin_file: bool = False,
             **changes: Any) -> Path:
        model = _build(arch, class_name, **changes)
        if dtype is not None:
            model = model.to(dtype)
        folder = out / f"{class_name}{tag}"
        model.save_pretrained(folder)
        if bin_file:  # transformers 5 saves safetensors only: the same keys as a .bin, as older versions wrote it
            _to_bin(folder)
        return folder

    for class_name in [arch.base, *arch.heads]:
        saved[class_name] = save(class_name)
    first = arch.heads[0]
    for head in arch.heads:
        cases.append(Case(f"{name}/head-into-base:{head}", saved[head], arch.base, saved[arch.base]))
        cases.append(Case(f"{name}/base-into-head:{head}", saved[arch.base], head, saved[head]))
    weights = _read_weights(saved[first])
    for prefix, tag in (("module.", "ddp"), ("_orig_mod.", "compile")):
        folder = _write({prefix + k: v for k, v in weights.items()}, saved[first], out / f"{tag}-{first}")
        cases.append(Case(f"{name}/{tag}:{first}", folder, first, saved[first]))
    base_weights = _read_weights(saved[arch.base])
    folder = _write({"module." + k: v for k, v in base_weights.items()}, saved[arch.base], out / "ddp-base")
    cases.append(Case(f"{name}/ddp-base-into-head:{first}", folder, first, saved[first]))
    if quick:
        return cases
    dropped = sorted(weights)[len(weights) // 2]
    changed = {k: v for k, v in weights.items() if k != dropped}
    changed["extra_head.weight"] = torch.zeros(3, 4)
    folder = _write(changed, saved[first], out / "drop-extra")
    cases.append(Case(f"{name}/drop-extra:{first}", folder, first, saved[first]))
    cases.append(Case(f"{name}/bf16:{first}", save(first, "-bf16", dtype=torch.bfloat16), first, saved[first]))
    cases.append(Case(f"{name}/bf16-into-base", save(first, "-bf16", dtype=torch.bfloat16), arch.base,
                      saved[arch.base]))
    cases.append(Case(f"{name}/bin-into-base:{first}", save(first, "-bin", bin_file=True), arch.base,
                      saved[arch.base]))
    cases.append(Case(f"{name}/bin:{first}", save(first, "-bin", bin_file=True), first, saved[first]))
    if arch.labels:
        labels = arch.labels
        three = save(labels, "-3labels", num_labels=3)
        cases.append(Case(f"{name}/num-labels-config:{labels}", three, labels,
                          _config_folder(three, out / "config-5labels", num_labels=5)))
        cases.append(Case(f"{name}/num-labels-flag:{labels}", three, labels, None, num_labels=5))
    if arch.text:
        model = arch.config()
        vocab = getattr(model, "vocab_size", None) or model.get_text_config().vocab_size
        target = arch.lm or first
        cases.append(Case(f"{name}/vocab-grown:{target}", saved[target], target,
                          _config_folder(saved[target], out / "config-vocab", vocab_size=vocab + 16)))
        cases.append(Case(f"{name}/vocab-grown-into-base:{arch.base}", saved[target], arch.base,
                          _config_folder(saved[arch.base], out / "config-vocab-base", vocab_size=vocab + 16)))
    if arch.lm:
        lm = arch.lm
        untied = save(lm, "-untied", tie_word_embeddings=False)
        tied = save(lm, "-tied", tie_word_embeddings=True)
        cases.append(Case(f"{name}/untied-into-untied:{lm}", untied, lm, None))
        cases.append(Case(f"{name}/untied-into-tied:{lm}", untied, lm, tied))
        cases.append(Case(f"{name}/tied-into-untied:{lm}", tied, lm, untied))
        cases.append(Case(f"{name}/tied-into-tied:{lm}", tied, lm, None))
        cases.append(Case(f"{name}/untied-into-base:{lm}", untied, arch.base, saved[arch.base]))
        # the input embedding dropped: tying the other way round (transformers swaps source and target)
        lm_weights = _read_weights(untied)
        head_rows = lm_weights["lm_head.weight"].shape[0] if "lm_head.weight" in lm_weights else None
        embeddings = [k for k, v in lm_weights.items() if "embed" in k and v.ndim == 2 and v.shape[0] == head_rows]
        if embeddings:
            folder = _write({k: v for k, v in lm_weights.items() if k != embeddings[0]}, tied, out / "no-input-emb")
            cases.append(Case(f"{name}/input-embedding-dropped-tied:{lm}", folder, lm, tied))
    # Lightning's `model.` before every key
    folder = _write({"model." + k: v for k, v in weights.items()}, saved[first], out / "lightning")
    cases.append(Case(f"{name}/lightning:{first}", folder, first, saved[first]))
    # the same base weights under both names (with and without the base model prefix)
    model = _build(arch, first)
    prefix = model.base_model_prefix
    both = dict(weights)
    both.update({k.removeprefix(prefix + "."): v for k, v in weights.items() if k.startswith(prefix + ".")})
    if len(both) > len(weights):
        cases.append(Case(f"{name}/prefix-twice:{first}", _write(both, saved[first], out / "prefix-twice"), first,
                          saved[first]))
    # buffers older versions saved (non-persistent now): position_ids, inv_freq, masks
    persistent = model.state_dict()
    stale = {k: b.detach().clone() for k, b in model.named_buffers() if k not in persistent}
    if stale:
        cases.append(Case(f"{name}/stale-buffers:{first}", _write({**weights, **stale}, saved[first],
                                                                  out / "stale"), first, saved[first]))
    # `save_file(model.state_dict())` / `torch.save(model.state_dict())`: every key, tied ones too, fused layouts
    raw = {k: v.detach().clone().contiguous() for k, v in persistent.items()}
    cases.append(Case(f"{name}/raw-state-dict:{first}", _write(raw, saved[first], out / "raw"), first, saved[first]))
    # parameters only (`{n: p for n, p in model.named_parameters()}`): no persistent buffer, no tied duplicate
    params = {k: v.detach().clone().contiguous() for k, v in model.named_parameters()}
    if len(params) < len(raw):
        cases.append(Case(f"{name}/params-only:{first}", _write(params, saved[first], out / "params-only"), first,
                          saved[first]))
    raw_bin = out / "raw-bin"
    raw_bin.mkdir()
    torch.save(persistent, raw_bin / "pytorch_model.bin")
    (raw_bin / "config.json").write_text((saved[first] / "config.json").read_text())
    cases.append(Case(f"{name}/raw-bin-into-base:{first}", raw_bin, arch.base, saved[arch.base]))
    # a `.bin` with entries that are no tensors beside the weights (a version number, optimizer settings)
    odd_bin = out / "non-tensor-bin"
    odd_bin.mkdir()
    torch.save({**weights, "version": 2, "optimizer": {"lr": 0.1}}, odd_bin / "pytorch_model.bin")
    (odd_bin / "config.json").write_text((saved[first] / "config.json").read_text())
    cases.append(Case(f"{name}/non-tensor-entries:{first}", odd_bin, first, saved[first]))
    # weights in a file from_pretrained does not look for (it raises): the report must say so
    odd_name = out / "odd-name"
    odd_name.mkdir()
    torch.save(weights, odd_name / "model.pt")
    (odd_name / "config.json").write_text((saved[first] / "config.json").read_text())
    cases.append(Case(f"{name}/odd-file-name:{first}", odd_name, first, saved[first]))
    # sharded
    sharded = out / "sharded"
    _build(arch, first).save_pretrained(sharded, max_shard_size="20KB")
    cases.append(Case(f"{name}/sharded-into-base:{first}", sharded, arch.base, saved[arch.base]))
    sharded_bin = out / "sharded-bin"
    _build(arch, first).save_pretrained(sharded_bin)
    _to_bin(sharded_bin, shards=3)
    cases.append(Case(f"{name}/sharded-bin:{first}", sharded_bin, first, saved[first]))
    # legacy names: LayerNorm gamma/beta, weight_g/weight_v
    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
              .replace("parametrizations.weight.original0", "weight_g")
              .replace("parametrizations.weight.original1", "weight_v"): v for k, v in weights.items()}
    if set(legacy) != set(weights):
        cases.append(Case(f"{name}/legacy-names:{first}", _write(legacy, saved[first], out / "legacy"), first,
                          saved[first]))
        cases.append(Case(f"{name}/legacy-names-into-base:{first}", out / "legacy", arch.base, saved[arch.base]))
    # another head
    if len(arch.heads) > 1:
        cases.append(Case(f"{name}/cross-head:{arch.heads[1]}", saved[arch.heads[1]], first, saved[first]))
        cases.append(Case(f"{name}/cross-head:{first}", saved[first], arch.heads[1], saved[arch.heads[1]]))
    # a config with more or fewer layers than the checkpoint
    for label, delta in (("more-layers", 1), ("fewer-layers", -1)):
        config = json.loads((saved[first] / "config.json").read_text())
        if _shift_layers(config, delta):
            folder = out / f"config-{label}"
            folder.mkdir()
            (folder / "config.json").write_text(json.dumps(config, indent=2))
            cases.append(Case(f"{name}/{label}:{first}", saved[first], first, folder))
    for source_class, target_class in arch.others:
        if source_class not in saved:
            saved[source_class] = save(source_class)
        cases.append(Case(f"{name}/other:{source_class}->{target_class}", saved[source_class], target_class, None))
    return cases


def _from_pretrained_report(case: Case) -> Sets:
    import transformers
    from transformers import AutoConfig

    cls = getattr(transformers, case.model_class)
    kwargs: dict[str, Any] = {"output_loading_info": True, "ignore_mismatched_sizes": True}
    if case.config is not None:
        kwargs["config"] = AutoConfig.from_pretrained(case.config)
    if case.num_labels is not None:
        kwargs["num_labels"] = case.num_labels
    _, info = cls.from_pretrained(case.a, **kwargs)
    return (frozenset(info["missing_keys"]), frozenset(info["unexpected_keys"]),
            frozenset((k, tuple(a), tuple(b)) for k, a, b in info["mismatched_keys"]))


def _ours(case: Case) -> Sets:
    return _ours_and_raises(case)[0]


def _ours_and_raises(case: Case) -> tuple[Sets, bool]:
    """The three sets of `diff_checkpoint_against_model`, and whether the report says from_pretrained raises."""
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.load_simulation import diff_checkpoint_against_model

    with open_checkpoint(str(case.a)) as checkpoint:
        report = diff_checkpoint_against_model(checkpoint, case.model_class,
                                               config=None if case.config is None else str(case.config),
                                               num_labels=case.num_labels)
    sets = (frozenset(i.name for i in report.missing), frozenset(i.name for i in report.unexpected),
            frozenset((m.name, tuple(m.shape_a), tuple(m.shape_b)) for m in report.mismatched))
    raises = any(i.detail.startswith("from_pretrained raises") for i in [*report.missing, *report.mismatched]) or any(
        "raises here" in note for note in report.notes)
    return sets, raises


def _cli(case: Case) -> Sets | str:
    command = [sys.executable, "-m", "weightdoctor", "diff-keys", str(case.a), "--model-class", case.model_class,
               "--json"]
    if case.config is not None:
        command += ["--config", str(case.config)]
    if case.num_labels is not None:
        command += ["--num-labels", str(case.num_labels)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        data = json.loads(done.stdout)
    except ValueError:
        return f"rc {done.returncode}: {done.stderr.strip()[-300:]}"
    return (frozenset(i["name"] for i in data["missing"]), frozenset(i["name"] for i in data["unexpected"]),
            frozenset((m["name"], tuple(m["shape_a"]), tuple(m["shape_b"])) for m in data["mismatched"]))


def _counts(sets: Sets) -> str:
    return f"m{len(sets[0])}/u{len(sets[1])}/x{len(sets[2])}"


def _difference(expected: Sets, got: Sets) -> str:
    parts = []
    for label, e, g in zip(("missing", "unexpected", "mismatched"), expected, got, strict=True):
        if e != g:
            parts.append(f"{label}: transformers only {sorted(e - g)[:4]}, ours only {sorted(g - e)[:4]}")
    return "; ".join(parts)[:600]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", help="architectures to run (llama, bert, ...)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{', '.join(QUICK)} only, only the head/base/prefix cases, the CLI for the first")
    parser.add_argument("--verbose", action="store_true", help="print the differing keys of each difference")
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI run (a subprocess) per architecture")
    args = parser.parse_args()
    quiet_libraries()

    from weightdoctor.errors import WeightDoctorError

    archs = _archs()
    names = list(args.only) if args.only else (list(QUICK) if args.quick else list(archs))
    unknown = [n for n in names if n not in archs]
    if unknown:
        parser.error(f"unknown architectures {unknown}; known: {', '.join(archs)}")
    counts = {"equal": 0, "different": 0, "error": 0}
    rows: list[tuple[str, str, str, str, str]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            try:
                cases = _cases(name, archs[name], Path(tmp) / name, args.quick)
            except Exception as exc:  # noqa: BLE001 - a sweep reports and goes on
                counts["error"] += 1
                rows.append((name, "-", "-", "-", f"ERROR building: {type(exc).__name__}: {exc}"[:300]))
                continue
            for index, case in enumerate(cases):
                try:
                    expected = _from_pretrained_report(case)
                except Exception as exc:  # noqa: BLE001 - from_pretrained refuses: weightdoctor must too
                    refusal = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:200]
                    try:
                        got, says_raises = _ours_and_raises(case)
                    except WeightDoctorError:
                        counts["equal"] += 1
                        rows.append((case.name, case.model_class, "raises", "refuses", "equal (both refuse)"))
                        continue
                    except Exception as ours_exc:  # noqa: BLE001
                        counts["error"] += 1
                        rows.append((case.name, case.model_class, "raises", "-",
                                     f"ERROR weightdoctor: {type(ours_exc).__name__}: {ours_exc}"[:300]))
                        continue
                    if says_raises:  # a report whose keys say "from_pretrained raises" (a failed WeightConverter)
                        counts["equal"] += 1
                        rows.append((case.name, case.model_class, "raises", _counts(got), "equal (both: raises)"))
                        continue
                    counts["different"] += 1
                    rows.append((case.name, case.model_class, "raises", _counts(got),
                                 f"DIFFERENT: from_pretrained raises {refusal}"))
                    continue
                try:
                    got = _ours(case)
                except Exception as exc:  # noqa: BLE001
                    counts["error"] += 1
                    rows.append((case.name, case.model_class, _counts(expected), "-",
                                 f"ERROR weightdoctor: {type(exc).__name__}: {exc}"[:300]))
                    continue
                same = got == expected
                counts["equal" if same else "different"] += 1
                verdict = "equal" if same else "DIFFERENT"
                if not same and args.verbose:
                    verdict += " " + _difference(expected, got)
                rows.append((case.name, case.model_class, _counts(expected), _counts(got), verdict))
                if index == 0 and not args.no_cli and not (args.quick and name != names[0]):
                    cli = _cli(case)
                    same = cli == got
                    counts["equal" if same else "different"] += 1
                    rows.append((case.name + "/cli", case.model_class, _counts(got),
                                 cli if isinstance(cli, str) else _counts(cli), "equal" if same else "DIFFERENT"))
    print_table(("case", "class", "transformers", "ours", "verdict"), rows, (None, None, 14, 14, None))
    total = sum(counts.values())
    print(f"\ncases: {total}  equal: {counts['equal']}  different: {counts['different']}  errors: {counts['error']}"
          f"  ({time.monotonic() - started:.0f} s)")
    return 0 if counts["different"] == counts["error"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
