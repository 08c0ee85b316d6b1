"""diff-keys --model-class against from_pretrained's own loading report, on cases scripts/diff_keys_sweep.py lacks.

Composite models (encoder-decoder, vision / speech encoder-decoder) and their sub-models, architectures the
sweep leaves out (GPT-OSS, Jamba, Mamba2, ModernBERT, Beit, DETR, MobileNetV2, InternVL, ...), checkpoints in
the names older transformers versions wrote (LLaVA's `language_model.model.`, GPT-2's `attn.bias` buffers, T5's
decoder relative bias, Mixtral experts one key each, some of them missing or mixed with the fused layout), and
`--num-labels` on heads whose size is not num_labels (DETR's num_labels + 1, X-vector). Each case saves a tiny
seeded model, loads it for real with `output_loading_info=True`, and compares the three key sets with the CLI's
`--json`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KV = {"vocab_size": 96, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
      "max_position_embeddings": 64, "num_key_value_heads": 2}
ENC = {**{k: v for k, v in KV.items() if k != "num_key_value_heads"}, "type_vocab_size": 2}
VIT = {"image_size": 32, "patch_size": 8, "num_channels": 3, "hidden_size": 32, "num_hidden_layers": 2,
       "num_attention_heads": 4, "intermediate_size": 64}
GPT2 = {"vocab_size": 96, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64}
WAV2VEC2 = {"vocab_size": 32, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 64, "conv_dim": [16, 16], "conv_stride": [4, 4], "conv_kernel": [8, 8],
            "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 4}

Sets = tuple[set[str], set[str], set[tuple[str, tuple[int, ...], tuple[int, ...]]]]


@dataclass
class Case:
    a: Path
    model_class: str
    config: Path | None = None  # None: A's own config
    num_labels: int | None = None


def _save(folder: Path, class_name: str, config: Any) -> Path:
    import transformers

    torch.manual_seed(0)
    getattr(transformers, class_name)(config).save_pretrained(folder)
    return folder


def _write(folder: Path, weights: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """A hand-made checkpoint: `weights` in model.safetensors beside `config` (the layout older versions wrote)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({k: v.detach().clone().contiguous() for k, v in weights.items()}, folder / "model.safetensors",
              metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def _config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


def _bert2bert() -> Any:
    import transformers as T

    config = T.EncoderDecoderConfig.from_encoder_decoder_configs(
        T.BertConfig(**ENC), T.BertConfig(**ENC, is_decoder=True, add_cross_attention=True))
    config.decoder_start_token_id = config.pad_token_id = 0
    return config


def _vit2gpt2(tie: bool = True) -> Any:
    import transformers as T

    config = T.VisionEncoderDecoderConfig.from_encoder_decoder_configs(
        T.ViTConfig(**VIT), T.GPT2Config(**GPT2, is_decoder=True, add_cross_attention=True, tie_word_embeddings=tie))
    config.decoder_start_token_id = config.pad_token_id = 0
    return config


def _wav2vec2bert() -> Any:
    import transformers as T

    config = T.SpeechEncoderDecoderConfig.from_encoder_decoder_configs(
        T.Wav2Vec2Config(**WAV2VEC2), T.BertConfig(**ENC, is_decoder=True, add_cross_attention=True))
    config.decoder_start_token_id = config.pad_token_id = 0
    return config


def _bert2bert_labelled(tmp: Path) -> Path:
    """A bert2bert checkpoint whose two BERT sub-configs say different label counts (3 and 4)."""
    import transformers as T

    config = T.EncoderDecoderConfig.from_encoder_decoder_configs(
        T.BertConfig(**ENC, num_labels=3), T.BertConfig(**ENC, is_decoder=True, add_cross_attention=True, num_labels=4))
    config.decoder_start_token_id = config.pad_token_id = 0
    return _save(tmp / "bert2bert", "EncoderDecoderModel", config)


def _bert_classifier(tmp: Path) -> Path:
    import transformers as T

    return _save(tmp / "bert-cls", "BertForSequenceClassification", T.BertConfig(**ENC, num_labels=2))


def _no_model_type(folder: Path) -> Path:
    """The config.json as older transformers versions wrote it: every value, no `model_type`."""
    config = _config(folder)
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _model_type(folder: Path, model_type: str) -> Path:
    """The config.json with a model type this transformers does not know (remote code's own, an old name)."""
    (folder / "config.json").write_text(json.dumps({**_config(folder), "model_type": model_type}))
    return folder


def _mixtral(tmp: Path) -> Path:
    import transformers as T

    # transformers 5 fuses the experts in memory but saves them one key each (w1 / w2 / w3), as older versions did
    return _save(tmp / "mixtral", "MixtralForCausalLM",
                 T.MixtralConfig(**KV, num_local_experts=4, num_experts_per_tok=2))


def _llava_legacy(tmp: Path) -> Path:
    """LLaVA as transformers 4.4x saved it: `language_model.model.*`, `language_model.lm_head`, `vision_tower.*`."""
    import transformers as T

    config = T.LlavaConfig(text_config={"model_type": "llama", **KV},
                           vision_config={"model_type": "clip_vision_model", **VIT}, image_token_index=95)
    torch.manual_seed(0)
    state = T.LlavaForConditionalGeneration(config).state_dict()

    def legacy(key: str) -> str:
        if key.startswith("model.language_model."):
            return "language_model.model." + key.removeprefix("model.language_model.")
        if key.startswith("lm_head."):
            return "language_model." + key
        return key.removeprefix("model.")

    return _write(tmp / "llava-legacy", {legacy(k): v for k, v in state.items()}, config.to_dict())


def _llava_duplicate_model(tmp: Path) -> Path:
    """LLaVA as transformers 5.10 to 5.23 saved it: `model.language_model.model.*` (transformers' legacy mapping)."""
    import transformers as T

    config = T.LlavaConfig(text_config={"model_type": "llama", **KV},
                           vision_config={"model_type": "clip_vision_model", **VIT}, image_token_index=95)
    torch.manual_seed(0)
    state = T.LlavaForConditionalGeneration(config).state_dict()
    prefix = "model.language_model."
    return _write(tmp / "llava-5.10", {prefix + "model." + k.removeprefix(prefix) if k.startswith(prefix) else k: v
                                       for k, v in state.items()}, config.to_dict())


def _gpt2_legacy_buffers(tmp: Path) -> Path:
    """GPT-2 as the original checkpoints hold it: no `transformer.` prefix, `attn.bias` / `attn.masked_bias`."""
    import transformers as T

    config = T.GPT2Config(**GPT2)
    torch.manual_seed(0)
    state = T.GPT2Model(config).state_dict()
    for layer in range(2):
        state[f"h.{layer}.attn.bias"] = torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64)
        state[f"h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
    return _write(tmp / "gpt2-legacy", state, config.to_dict())


def _gpt_neox_legacy_buffers(tmp: Path) -> Path:
    """Pythia as older versions saved it: each layer's causal mask, `masked_bias` and rotary `inv_freq`."""
    import transformers as T

    config = T.GPTNeoXConfig(**{k: v for k, v in KV.items() if k != "num_key_value_heads"})
    torch.manual_seed(0)
    state = dict(T.GPTNeoXForCausalLM(config).state_dict())
    for layer in range(2):
        state[f"gpt_neox.layers.{layer}.attention.bias"] = torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64).bool()
        state[f"gpt_neox.layers.{layer}.attention.masked_bias"] = torch.tensor(-1e9)
        state[f"gpt_neox.layers.{layer}.attention.rotary_emb.inv_freq"] = torch.ones(4)
    return _write(tmp / "gpt-neox-legacy", state, config.to_dict())


def _without(tmp: Path, saved: Path, *dropped: str) -> Path:
    """A copy of a saved checkpoint without some keys (tied ones a writer left out)."""
    weights = _weights(saved)
    assert set(dropped) <= set(weights)
    return _write(tmp / "dropped", {k: v for k, v in weights.items() if k not in dropped}, _config(saved))


def _state_without(tmp: Path, class_name: str, config: Any, *dropped: str) -> Path:
    """A model's whole state dict (tied copies too, as `torch.save(model.state_dict())` keeps them) less some keys."""
    import transformers

    torch.manual_seed(0)
    state = getattr(transformers, class_name)(config).state_dict()
    assert set(dropped) <= set(state)
    return _write(tmp / "state-dict", {k: v for k, v in state.items() if k not in dropped}, config.to_dict())


def _t5_legacy(tmp: Path) -> Path:
    """T5 with every tied copy and the decoder's cross-attention relative bias older versions saved."""
    import transformers as T

    config = T.T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                        decoder_start_token_id=0)
    torch.manual_seed(0)
    state = dict(T.T5ForConditionalGeneration(config).state_dict())
    state["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = torch.zeros(32, 4)
    return _write(tmp / "t5-legacy", state, config.to_dict())


def _mixtral_edited(tmp: Path, edit: Callable[[dict[str, torch.Tensor], Any], dict[str, torch.Tensor]]) -> Path:
    saved = _mixtral(tmp)
    import transformers as T

    torch.manual_seed(0)
    model = T.MixtralForCausalLM(T.AutoConfig.from_pretrained(saved))
    return _write(tmp / "edited", edit(_weights(saved), model), _config(saved))


def _with_config(tmp: Path, a: Path, **changes: Any) -> Path:
    folder = tmp / "config"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**_config(a), **changes}))
    return folder


def _arch(class_name: str, config: Callable[[], Any], load_as: str, **case: Any) -> Callable[[Path], Case]:
    return lambda tmp: Case(_save(tmp / class_name, class_name, config()), load_as, **case)


def _arch_typed(class_name: str, config: Callable[[], Any], model_type: str, load_as: str,
                **case: Any) -> Callable[[Path], Case]:
    return lambda tmp: Case(_model_type(_save(tmp / class_name, class_name, config()), model_type), load_as, **case)


def _cases() -> dict[str, Callable[[Path], Case]]:
    import transformers as T

    detr = {"use_timm_backbone": False, "use_pretrained_backbone": False, "d_model": 32, "encoder_layers": 1,
            "decoder_layers": 1, "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 32,
            "decoder_ffn_dim": 32, "num_queries": 4, "num_labels": 3,
            "backbone_config": {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16],
                                "depths": [1, 1], "out_features": ["stage2"]}}
    return {
        # a composite's sub-model: two sub-configs are BERT ones, from_pretrained takes the last (`encoder`)
        "bert2bert->BertModel": _arch("EncoderDecoderModel", _bert2bert, "BertModel"),
        "bert2bert->BertLMHeadModel": _arch("EncoderDecoderModel", _bert2bert, "BertLMHeadModel"),
        "bert2bert->Seq2SeqLM": _arch("EncoderDecoderModel", _bert2bert, "AutoModelForSeq2SeqLM"),
        "vit2gpt2->GPT2LMHeadModel": _arch("VisionEncoderDecoderModel", _vit2gpt2, "GPT2LMHeadModel"),
        "vit2gpt2->ViTModel": _arch("VisionEncoderDecoderModel", _vit2gpt2, "ViTModel"),
        "wav2vec2bert->Wav2Vec2Model": _arch("SpeechEncoderDecoderModel", _wav2vec2bert, "Wav2Vec2Model"),
        "bert2bert-labels->BertForSequenceClassification": lambda tmp: Case(
            _bert2bert_labelled(tmp), "BertForSequenceClassification"),
        "bert-cls--config-bert2bert": lambda tmp: Case(_bert_classifier(tmp), "BertForSequenceClassification",
                                                       _bert2bert_labelled(tmp)),
        "bert-cls--config-bert2bert--num-labels": lambda tmp: Case(
            _bert_classifier(tmp), "BertForSequenceClassification", _bert2bert_labelled(tmp), num_labels=6),
        "bert->bert2bert": lambda tmp: Case(_save(tmp / "bert", "BertModel", T.BertConfig(**ENC)),
                                            "EncoderDecoderModel", _save(tmp / "ed", "EncoderDecoderModel",
                                                                         _bert2bert())),
        # architectures the sweep has not
        "gpt_oss:head->base": _arch("GptOssForCausalLM", lambda: T.GptOssConfig(
            **KV, head_dim=8, num_local_experts=4, num_experts_per_tok=2), "GptOssModel"),
        "jamba:base->head": _arch("JambaModel", lambda: T.JambaConfig(
            **KV, num_experts=2, num_experts_per_tok=1, mamba_d_state=4, mamba_d_conv=4, mamba_expand=2,
            attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1),
            "JambaForCausalLM"),
        "mamba2:head->base": _arch("Mamba2ForCausalLM", lambda: T.Mamba2Config(
            vocab_size=96, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, num_heads=4, head_dim=16,
            n_groups=1, conv_kernel=4), "Mamba2Model"),
        "modernbert:mlm->cls": _arch("ModernBertForMaskedLM", lambda: T.ModernBertConfig(
            **{k: v for k, v in ENC.items() if k != "type_vocab_size"}, pad_token_id=0),
            "ModernBertForSequenceClassification", num_labels=3),
        "beit:legacy-names->cls": _arch("BeitModel", lambda: T.BeitConfig(**VIT, use_relative_position_bias=True),
                                        "BeitForImageClassification", num_labels=4),
        "mobilenet_v2:batchnorm->base": _arch("MobileNetV2ForImageClassification", lambda: T.MobileNetV2Config(
            image_size=32, depth_multiplier=0.25), "MobileNetV2Model"),
        "detr:num-labels+1": _arch("DetrForObjectDetection", lambda: T.DetrConfig(**detr),
                                   "DetrForObjectDetection", num_labels=5),
        "wav2vec2:xvector-num-labels": _arch("Wav2Vec2ForAudioFrameClassification", lambda: T.Wav2Vec2Config(
            **WAV2VEC2, num_labels=3), "Wav2Vec2ForXVector", num_labels=5),
        "internvl:head->base": _arch("InternVLForConditionalGeneration", lambda: T.InternVLConfig(
            text_config={"model_type": "qwen2", **KV}, image_token_id=95, downsample_ratio=0.5,
            vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                           "intermediate_size": 64, "image_size": [32, 32], "patch_size": [8, 8]}),
            "InternVLModel"),
        "dinov2:legacy-names->backbone": _arch("Dinov2ForImageClassification", lambda: T.Dinov2Config(**VIT),
                                               "Dinov2Backbone"),
        "zamba2:shared-blocks-tied": _arch("Zamba2ForCausalLM", lambda: T.Zamba2Config(
            **{**KV, "num_hidden_layers": 4}, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2, mamba_headdim=16,
            mamba_ngroups=1, n_mamba_heads=4, num_mem_blocks=1, use_shared_attention_adapter=True, adapter_rank=4,
            layers_block_type=["mamba", "hybrid", "mamba", "hybrid"], attention_head_dim=16), "Zamba2Model"),
        "t5gemma:head->base": _arch("T5GemmaForConditionalGeneration", lambda: T.T5GemmaConfig(
            encoder={"model_type": "t5_gemma_module", **KV, "head_dim": 8},
            decoder={"model_type": "t5_gemma_module", **KV, "head_dim": 8}, vocab_size=96), "T5GemmaModel"),
        "qwen2_audio->Qwen2ForCausalLM": _arch("Qwen2AudioForConditionalGeneration", lambda: T.Qwen2AudioConfig(
            text_config={"model_type": "qwen2", **KV}, audio_token_index=95,
            audio_config={"num_mel_bins": 8, "encoder_layers": 2, "encoder_attention_heads": 4,
                          "encoder_ffn_dim": 64, "d_model": 32, "max_source_positions": 16}), "Qwen2ForCausalLM"),
        "vit2gpt2-untied:lm-head-dropped": lambda tmp: Case(_without(
            tmp, _save(tmp / "ved", "VisionEncoderDecoderModel", _vit2gpt2(tie=False)), "decoder.lm_head.weight"),
            "VisionEncoderDecoderModel"),
        "vit2gpt2-tied:wte-dropped": lambda tmp: Case(_without(
            tmp, _save(tmp / "ved", "VisionEncoderDecoderModel", _vit2gpt2()), "decoder.transformer.wte.weight"),
            "VisionEncoderDecoderModel"),
        "mllama:head->base": _arch("MllamaForConditionalGeneration", lambda: T.MllamaConfig(
            text_config={**KV, "cross_attention_layers": [1], "pad_token_id": 0}, image_token_index=95,
            vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
                           "num_global_layers": 1, "attention_heads": 4, "intermediate_size": 64,
                           "vision_output_dim": 64, "intermediate_layers_indices": [0], "max_num_tiles": 2,
                           "supported_aspect_ratios": [[1, 1], [1, 2]]}), "MllamaModel"),
        "rt_detr:num-labels": _arch("RTDetrForObjectDetection", lambda: T.RTDetrConfig(
            backbone_config={"model_type": "rt_detr_resnet", "embedding_size": 8, "hidden_sizes": [8, 16, 32, 64],
                             "depths": [1, 1, 1, 1], "out_features": ["stage2", "stage3", "stage4"]},
            encoder_hidden_dim=16, encoder_in_channels=[16, 32, 64], d_model=16, encoder_ffn_dim=32,
            decoder_ffn_dim=32, decoder_layers=1, encoder_layers=1, num_queries=4, num_labels=3,
            encoder_attention_heads=2, decoder_attention_heads=2, decoder_in_channels=[16, 16, 16],
            num_feature_levels=3, decoder_n_points=2), "RTDetrForObjectDetection", num_labels=6),
        "musicgen->T5EncoderModel": _arch("MusicgenForConditionalGeneration", lambda: T.MusicgenConfig(
            text_encoder={"model_type": "t5", "vocab_size": 96, "d_model": 32, "d_kv": 8, "d_ff": 64,
                          "num_layers": 2, "num_heads": 4},
            audio_encoder={"model_type": "encodec", "hidden_size": 8, "num_filters": 4, "codebook_size": 16,
                           "upsampling_ratios": [2, 2], "num_residual_layers": 1, "codebook_dim": 8},
            decoder={"vocab_size": 16, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "ffn_dim": 64, "max_position_embeddings": 64, "num_codebooks": 2}), "T5EncoderModel"),
        # keys older transformers versions wrote
        "llava-v5.10-duplicate-model.model->head": lambda tmp: Case(_llava_duplicate_model(tmp),
                                                                    "LlavaForConditionalGeneration"),
        "whisper-proj-out-only": lambda tmp: Case(_state_without(
            tmp, "WhisperForConditionalGeneration", T.WhisperConfig(
                vocab_size=96, num_mel_bins=8, d_model=32, encoder_layers=2, decoder_layers=2,
                encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                max_source_positions=16, max_target_positions=32, pad_token_id=1, decoder_start_token_id=2),
            "model.decoder.embed_tokens.weight"), "WhisperForConditionalGeneration"),
        "gpt_neox-buffers->cls": lambda tmp: Case(_gpt_neox_legacy_buffers(tmp), "GPTNeoXForSequenceClassification"),
        "bert-predictions-bias-only->mlm": lambda tmp: Case(_state_without(
            tmp, "BertForPreTraining", T.BertConfig(**ENC), "cls.predictions.decoder.bias",
            "cls.predictions.decoder.weight"), "BertForMaskedLM"),
        "llava-4.4x->head": lambda tmp: Case(_llava_legacy(tmp), "LlavaForConditionalGeneration"),
        "llava-4.4x->base": lambda tmp: Case(_llava_legacy(tmp), "LlavaModel"),
        "llava-4.4x->LlamaForCausalLM": lambda tmp: Case(_llava_legacy(tmp), "LlamaForCausalLM"),
        "bert-cls-no-model_type->BertModel": lambda tmp: Case(_no_model_type(_bert_classifier(tmp)), "BertModel"),
        "bert-cls-no-model_type--num-labels": lambda tmp: Case(_no_model_type(_bert_classifier(tmp)),
                                                               "BertForSequenceClassification", num_labels=5),
        "gpt2-buffers-no-model_type->lm": lambda tmp: Case(_no_model_type(_gpt2_legacy_buffers(tmp)),
                                                           "GPT2LMHeadModel"),
        "bert--config-3-layers-no-model_type": lambda tmp: Case(
            _save(tmp / "bert", "BertModel", T.BertConfig(**ENC)), "BertModel",
            _no_model_type(_save(tmp / "other", "BertModel", T.BertConfig(**{**ENC, "num_hidden_layers": 3})))),
        # a remote-code model type: read with the class's config, its conversion mapping (per model type) not used
        "llama-custom-model_type->lm": _arch_typed("LlamaForCausalLM", lambda: T.LlamaConfig(**KV), "my_llama",
                                                   "LlamaForCausalLM"),
        "llama-custom-model_type->cls": _arch_typed("LlamaForCausalLM", lambda: T.LlamaConfig(**KV), "my_llama",
                                                    "LlamaForSequenceClassification", num_labels=3),
        "mixtral-custom-model_type->lm": lambda tmp: Case(_model_type(_mixtral(tmp), "my_moe"), "MixtralForCausalLM"),
        "gpt2-buffers->lm": lambda tmp: Case(_gpt2_legacy_buffers(tmp), "GPT2LMHeadModel"),
        "gpt2-buffers->cls": lambda tmp: Case(_gpt2_legacy_buffers(tmp), "GPT2ForSequenceClassification"),
        "t5-legacy->encoder": lambda tmp: Case(_t5_legacy(tmp), "T5EncoderModel"),
        "t5-legacy->cls": lambda tmp: Case(_t5_legacy(tmp), "T5ForSequenceClassification"),
        # Mixtral's per-expert keys, edited
        "mixtral:expert-dropped": lambda tmp: Case(_mixtral_edited(tmp, lambda w, _: {
            k: v for k, v in w.items() if not k.startswith("model.layers.0.block_sparse_moe.experts.3.")}),
            "MixtralForCausalLM"),
        "mixtral:one-layer-fused": lambda tmp: Case(_mixtral_edited(tmp, lambda w, model: {
            **{k: v for k, v in w.items() if not k.startswith("model.layers.0.block_sparse_moe.experts.")},
            **{k: v for k, v in model.state_dict().items() if k.startswith("model.layers.0.mlp.experts.")}}),
            "MixtralForCausalLM"),
        "mixtral:config-8-experts": lambda tmp: Case(_mixtral(tmp), "MixtralForCausalLM",
                                                     _with_config(tmp, tmp / "mixtral", num_local_experts=8)),
        "mixtral:legacy-base->head": lambda tmp: Case(_mixtral_edited(tmp, lambda w, _: {
            k.removeprefix("model."): v for k, v in w.items() if not k.startswith("lm_head.")}),
            "MixtralForCausalLM"),
    }


CASES = _cases()


def _from_pretrained(case: Case) -> Sets:
    import transformers

    kwargs: dict[str, Any] = {"output_loading_info": True, "ignore_mismatched_sizes": True}
    if case.config is not None:
        # a path, as --config takes it: from_pretrained reads it with the class's own config class
        kwargs["config"] = str(case.config)
    if case.num_labels is not None:
        kwargs["num_labels"] = case.num_labels
    _, info = getattr(transformers, case.model_class).from_pretrained(case.a, **kwargs)
    return (set(info["missing_keys"]), set(info["unexpected_keys"]),
            {(k, tuple(a), tuple(b)) for k, a, b in info["mismatched_keys"]})


def _diff_keys_json(case: Case) -> dict[str, Any]:
    args = ["diff-keys", str(case.a), "--model-class", case.model_class, "--json"]
    if case.config is not None:
        args += ["--config", str(case.config)]
    if case.num_labels is not None:
        args += ["--num-labels", str(case.num_labels)]
    result = run_cli(*args)
    assert result.exit_code in (0, 1), result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", list(CASES))
def test_diff_keys_model_class_equals_from_pretrained(name: str, tmp_path: Path) -> None:
    """The missing / unexpected / mismatched sets of `diff-keys A --model-class X --json` are from_pretrained's."""
    from transformers.utils import logging as hf_logging

    case = CASES[name](tmp_path)
    hf_logging.set_verbosity_error()
    try:
        expected = _from_pretrained(case)
    finally:
        hf_logging.set_verbosity_warning()
    data = _diff_keys_json(case)
    got = ({i["name"] for i in data["missing"]}, {i["name"] for i in data["unexpected"]},
           {(m["name"], tuple(m["shape_a"]), tuple(m["shape_b"])) for m in data["mismatched"]})
    assert got[0] == expected[0], f"missing: transformers only {expected[0] - got[0]}, ours only {got[0] - expected[0]}"
    assert got[1] == expected[1], f"unexpected: transformers only {expected[1] - got[1]}, ours {got[1] - expected[1]}"
    assert got[2] == expected[2]


def test_composite_sub_model_takes_the_last_matching_sub_config(tmp_path: Path) -> None:
    """BertModel from a bert2bert checkpoint: transformers builds it from the `encoder` sub-config (the last BERT
    one in config.json), so it has no cross-attention; the `decoder` one (first in the file) has."""
    case = CASES["bert2bert->BertModel"](tmp_path)
    missing = {i["name"] for i in _diff_keys_json(case)["missing"]}
    assert "encoder.layer.0.attention.self.query.weight" in missing  # A's keys are all under `encoder.`
    assert not [k for k in missing if "crossattention" in k]


def test_a_failed_expert_merge_is_reported_as_from_pretrained_raising(tmp_path: Path) -> None:
    """Mixtral with one expert's w1 left out: transformers' MergeModulelist gets 3 tensors beside 4 and
    from_pretrained raises; diff-keys says so on the fused key instead of calling it merely missing."""
    import transformers

    a = _without(tmp_path, _mixtral(tmp_path), "model.layers.0.block_sparse_moe.experts.3.w1.weight")
    with pytest.raises(RuntimeError, match="conversion"):
        transformers.MixtralForCausalLM.from_pretrained(a)
    data = _diff_keys_json(Case(a, "MixtralForCausalLM"))
    assert [i["name"] for i in data["missing"]] == ["model.layers.0.mlp.experts.gate_up_proj"]
    assert data["missing"][0]["detail"].startswith("from_pretrained raises")


def test_a_config_without_model_type_is_read_with_the_named_class_config(tmp_path: Path) -> None:
    """A config.json from before transformers 3 has no model_type: `BertModel.from_pretrained` reads it with
    BertConfig all the same; diff-keys refused it ("config.json has no model_type"). It now builds the class named,
    and says so; an Auto class still needs the field, as AutoConfig does."""
    a = _no_model_type(_bert_classifier(tmp_path))
    data = _diff_keys_json(Case(a, "BertModel"))
    assert {i["name"] for i in data["unexpected"]} == {"classifier.weight", "classifier.bias"}
    assert data["missing"] == [] and data["matched"] > 0
    assert any("no model_type" in note and "BertConfig" in note for note in data["notes"]), data["notes"]
    result = run_cli("diff-keys", str(a), "--model-class", "AutoModel")
    assert result.exit_code == 2 and "no model_type" in result.stderr


def test_a_model_type_transformers_does_not_know_is_read_with_the_named_class_config(tmp_path: Path) -> None:
    """A remote-code checkpoint ("my_moe": Mixtral's weights, its own model type) into MixtralForCausalLM:
    from_pretrained reads the config with MixtralConfig and warns, and as no conversion mapping is registered for
    "my_moe" the per-expert keys stay unexpected and the fused ones missing. diff-keys refused it ("this
    transformers does not know model_type 'my_moe'"); it now reports that, with a note."""
    a = _model_type(_mixtral(tmp_path), "my_moe")
    data = _diff_keys_json(Case(a, "MixtralForCausalLM"))
    assert {i["name"] for i in data["missing"]} == {f"model.layers.{n}.mlp.experts.{p}" for n in (0, 1)
                                                    for p in ("gate_up_proj", "down_proj")} | {
        f"model.layers.{n}.mlp.gate.weight" for n in (0, 1)}
    assert "model.layers.0.block_sparse_moe.experts.3.w2.weight" in {i["name"] for i in data["unexpected"]}
    assert any("MixtralConfig" in note and "'my_moe'" in note for note in data["notes"]), data["notes"]
    for model_class in ("AutoModelForCausalLM", "BertModel"):  # Auto needs a known type; nothing of A fits BERT
        result = run_cli("diff-keys", str(a), "--model-class", model_class)
        assert result.exit_code == 2 and "'my_moe'" in result.stderr, result.stderr
