"""review71: plan6's context length and cross-attention cache, held to transformers (a tiny seeded model, a real
generate on CPU, the bytes of EncoderDecoderCache.cross_attention_cache as the oracle).

- a VisionEncoderDecoder's cross-attention cache was sized for as many encoder positions as --seq-len ("an encoder's
  length depends on its input"): a ViT encoder outputs its patches and CLS token for its image_size whatever the
  decoder's length (17 for a 32 x 32 image in 8 x 8 patches, DeiT's 18, Donut's Swin its last stage: 32 for 64 x 32
  pixels), and the cache transformers fills holds those;
- LED without --seq-len was refused, "transformers' LEDConfig keeps none", though LEDConfig keeps its decoder's
  length in max_decoder_position_embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.test_plan6 import _plan_folder


def _bytes(layers: Any) -> int:
    """Bytes of the keys and values the cache layers show."""
    return sum(t.numel() * t.element_size() for layer in layers for t in (layer.keys, layer.values))


def _vision_encoder(kind: str) -> Any:
    import transformers

    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 48,
             "image_size": 32, "patch_size": 8}
    if kind == "deit":
        return transformers.DeiTConfig(**small)
    if kind == "donut-swin":
        return transformers.DonutSwinConfig(image_size=[64, 32], patch_size=4, embed_dim=8, depths=[1, 1],
                                            num_heads=[2, 2], window_size=4)
    return transformers.ViTConfig(**small)


@pytest.mark.parametrize(("encoder", "decoder"), [("vit", "gpt2"), ("vit", "trocr"), ("deit", "bert"),
                                                  ("donut-swin", "mbart")])
def test_a_vision_encoder_decoders_cross_attention_cache_is_sized_for_the_positions_its_encoder_outputs(
        tmp_path: Path, encoder: str, decoder: str) -> None:
    """Sized for 12 encoder positions (--seq-len 12, "as many as the decoder's"): ViT's encoder outputs 17 for its
    32 x 32 image whatever the text's length, and the cross-attention cache generate fills holds 17."""
    import transformers

    torch.manual_seed(0)
    if decoder == "gpt2":
        text = transformers.GPT2Config(n_embd=48, n_layer=2, n_head=4, vocab_size=100, n_positions=64)
    elif decoder == "trocr":
        text = transformers.TrOCRConfig(d_model=48, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=64,
                                        vocab_size=100, max_position_embeddings=64)
    elif decoder == "mbart":
        text = transformers.MBartConfig(d_model=48, decoder_layers=2, encoder_layers=2, decoder_attention_heads=4,
                                        encoder_attention_heads=4, decoder_ffn_dim=64, encoder_ffn_dim=64,
                                        vocab_size=100, max_position_embeddings=64)
    else:
        text = transformers.BertConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=64, vocab_size=100, max_position_embeddings=64)
    vision = _vision_encoder(encoder)
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(vision, text)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 0, 1, 2
    config.architectures = ["VisionEncoderDecoderModel"]
    model = transformers.VisionEncoderDecoderModel(config).eval()
    config.save_pretrained(tmp_path)
    size = vision.image_size if isinstance(vision.image_size, list) else [vision.image_size] * 2
    with torch.no_grad():
        out = model.generate(pixel_values=torch.randn(1, 3, *size), max_new_tokens=3, min_new_tokens=3,
                             do_sample=False, return_dict_in_generate=True)
    cross = out.past_key_values.cross_attention_cache.layers
    positions = cross[0].keys.shape[-2]
    assert positions == {"vit": 17, "deit": 18, "donut-swin": 32}[encoder]
    kv, shown = _plan_folder(tmp_path, "--seq-len", "12")
    assert kv["encoder_seq_len"] == positions, kv
    assert kv["cross_attention_bytes"] == _bytes(cross), kv
    per_position = kv["cross_attention_bytes"] // positions
    assert f"B ({per_position} B/encoder position x {positions} positions x batch 1)" in shown, shown
    name = {"vit": "ViTModel", "deit": "DeiTModel", "donut-swin": "DonutSwinModel"}[encoder]
    assert f"{positions} encoder positions, what its {name} outputs for an image of its image_size, " \
        f"{size[0]} x {size[1]} pixels" in kv["note"], kv
    assert "as many as the decoder's" not in kv["note"], kv


def test_a_speech_encoder_decoders_length_is_still_said_to_depend_on_its_input(tmp_path: Path) -> None:
    """An encoder without an image size (wav2vec2's audio) keeps --seq-len's length, and says so."""
    config = {"model_type": "speech-encoder-decoder", "architectures": ["SpeechEncoderDecoderModel"],
              "is_encoder_decoder": True,
              "encoder": {"model_type": "wav2vec2", "hidden_size": 32, "num_hidden_layers": 1,
                          "num_attention_heads": 4, "intermediate_size": 48},
              "decoder": {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                          "intermediate_size": 48, "vocab_size": 100, "is_decoder": True,
                          "add_cross_attention": True}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    kv, _shown = _plan_folder(tmp_path / "config.json", "--seq-len", "12")
    assert kv["encoder_seq_len"] == 12, kv
    assert "as many as the decoder's (an encoder's length depends on its input)" in kv["note"], kv


def test_led_without_seq_len_takes_its_decoders_length_as_ledconfig_reads_it(tmp_path: Path) -> None:
    """Refused, "transformers' LEDConfig keeps none", though LEDConfig keeps its decoder's length in
    max_decoder_position_embeddings (its max_encoder_position_embeddings is the encoder's): the cache transformers
    fills for that many decoder tokens is the figure."""
    import transformers

    torch.manual_seed(0)
    config = transformers.LEDConfig(vocab_size=100, d_model=16, encoder_layers=2, decoder_layers=2,
                                    encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                    decoder_ffn_dim=32, max_encoder_position_embeddings=256,
                                    max_decoder_position_embeddings=48, attention_window=[8, 8])
    config.architectures = ["LEDForConditionalGeneration"]
    config.save_pretrained(tmp_path)
    model = transformers.LEDForConditionalGeneration(config).eval()
    with torch.no_grad():
        out = model(input_ids=torch.randint(4, 100, (1, 48)), decoder_input_ids=torch.randint(4, 100, (1, 48)),
                    use_cache=True)
    kv, shown = _plan_folder(tmp_path)
    assert kv["seq_len"] == 48, kv
    assert kv["total_bytes"] == _bytes(out.past_key_values.self_attention_cache.layers), kv
    assert kv["cross_attention_bytes"] == _bytes(out.past_key_values.cross_attention_cache.layers), kv
    assert "for batch 1 x 48 tokens" in shown, shown
