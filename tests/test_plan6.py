"""plan6: plan-devices --kv-cache's left-outs, each held to the cache transformers fills (a tiny seeded model, a real
forward or generate on CPU, the bytes of the cache's tensors as the oracle):

- without --seq-len the context length was looked up by hand in max_position_embeddings / n_positions and refused
  otherwise ("the config has no max_position_embeddings or n_positions"), though LlamaConfig keeps 2048 where the key
  is absent and MPT writes `max_seq_len`: it is now read as the config class reads it, and refused in one line
  naming --seq-len where the class keeps no length (BLOOM);
- an encoder-decoder's cross-attention cache (the encoder output's keys and values, per decoder layer) was not
  counted: it is now `cross_attention_bytes`, for Whisper's max_source_positions frames, else as many encoder
  positions as the decoder's tokens;
- Moonshine's decoder was sized with decoder_num_*, though transformers builds it (and caches) with the encoder's
  head counts;
- a sliding-window layer's note said it keeps at most the window: after a prompt longer than the window,
  transformers' DynamicCache still holds the whole prompt's keys and values (its window is a view of them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import json_report, run_cli


def _bytes(layers: Any) -> int:
    """Bytes of the keys and values the cache layers show (numel, not storage)."""
    return sum(t.numel() * t.element_size() for layer in layers for t in (layer.keys, layer.values))


def _storage_bytes(layers: Any) -> int:
    """Bytes of the memory the cache layers' keys and values keep alive (a view keeps its whole base)."""
    storages = {}
    for layer in layers:
        for tensor in (layer.keys, layer.values):
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def _plan(tmp_path: Path, config: dict[str, Any], *extra: str) -> tuple[dict[str, Any], str]:
    (tmp_path / "config.json").write_text(json.dumps(config))
    args = ("plan-devices", tmp_path / "config.json", "--gpu", "8GB", "--kv-cache", "--dtype", "fp32", *extra)
    kv = json_report(*args)["kv_cache"]
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr
    return kv, " ".join(result.stdout.split())


LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 32, "intermediate_size": 48,
         "vocab_size": 100}


def test_without_seq_len_a_llama_config_without_max_position_embeddings_takes_its_class_default(
        tmp_path: Path) -> None:
    """Refused ("the config has no max_position_embeddings or n_positions"); LlamaConfig keeps 2048. The cache
    transformers fills for 2,048 tokens is the figure."""
    import transformers

    kv, text = _plan(tmp_path, LLAMA)
    assert transformers.LlamaConfig(**{k: v for k, v in LLAMA.items() if k != "model_type"}).max_position_embeddings \
        == kv["seq_len"] == 2048
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).eval()
    with torch.no_grad():
        out = model(input_ids=torch.zeros(1, 2048, dtype=torch.long), use_cache=True)
    assert kv["total_bytes"] == _bytes(out.past_key_values.layers) == 2048 * 256, kv
    assert "for batch 1 x 2048 tokens (256 B/token: 2 (keys and values) x 2 layers x 2 KV heads x 8 values a head " \
        "x 4 bytes (float32)" in text, text
    assert "the 2,048 tokens are LlamaConfig's default max_position_embeddings (config.json writes none)" in text


@pytest.mark.parametrize(("config", "length"), [
    ({"model_type": "mpt", "architectures": ["MptForCausalLM"], "n_layers": 2, "n_heads": 4, "d_model": 32,
      "vocab_size": 100, "max_seq_len": 777}, 777),  # MptConfig's own name
    ({"model_type": "mpt", "architectures": ["MptForCausalLM"], "n_layers": 2, "n_heads": 4, "d_model": 32,
      "vocab_size": 100}, 2048),  # MptConfig's default max_seq_len
    ({"model_type": "dbrx", "architectures": ["DbrxForCausalLM"], "n_layers": 2, "n_heads": 4, "d_model": 32,
      "vocab_size": 100, "attn_config": {"kv_n_heads": 2, "rope_theta": 10000.0}, "ffn_config": {"ffn_hidden_size": 32,
      "moe_num_experts": 2, "moe_top_k": 1}, "max_seq_len": 555}, 555),  # attribute_map: max_position_embeddings
])
def test_without_seq_len_the_context_length_is_read_under_the_names_the_class_reads(
        tmp_path: Path, config: dict[str, Any], length: int) -> None:
    """All refused before, naming only max_position_embeddings and n_positions."""
    kv, _text = _plan(tmp_path, config)
    assert kv["seq_len"] == length, kv
    assert kv["total_bytes"] == kv["bytes_per_token"] * length, kv


def test_a_model_type_transformers_does_not_know_keeps_its_written_length() -> None:
    """Remote-code configs (ChatGLM's and Qwen's `seq_length`, others' `max_sequence_length`) are read as written."""
    from weightdoctor.plan_devices import context_length

    assert context_length({"model_type": "plan6-own", "seq_length": 333}) == (333, None)
    assert context_length({"model_type": "plan6-own", "max_sequence_length": 444}) == (444, None)


def test_without_seq_len_a_config_class_without_a_context_length_is_refused_in_one_line(tmp_path: Path) -> None:
    """BLOOM (ALiBi) has no length of its own: one line naming --seq-len and what was looked for."""
    config = {"model_type": "bloom", "architectures": ["BloomForCausalLM"], "n_layer": 2, "n_head": 4,
              "hidden_size": 32, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = run_cli("plan-devices", tmp_path / "config.json", "--gpu", "8GB", "--kv-cache", "--json")
    assert result.exit_code == 2 and not result.stdout.strip(), result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "--kv-cache needs --seq-len: config.json writes no context length (max_target_positions, " \
        "max_position_embeddings, n_positions, max_seq_len" in lines[0], lines
    assert "and transformers' BloomConfig keeps none" in lines[0], lines


def _seq2seq(kind: str) -> Any:
    import transformers

    torch.manual_seed(0)
    if kind == "whisper":
        config = transformers.WhisperConfig(
            vocab_size=100, d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=2, encoder_ffn_dim=48, decoder_ffn_dim=48, num_mel_bins=8,
            max_source_positions=16, max_target_positions=32, pad_token_id=1, bos_token_id=2, eos_token_id=3,
            decoder_start_token_id=2, suppress_tokens=None, begin_suppress_tokens=None)
        return config, transformers.WhisperForConditionalGeneration(config).eval()
    if kind == "t5":
        config = transformers.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=3, num_decoder_layers=3, num_heads=4,
                                       vocab_size=100, decoder_start_token_id=0)
        return config, transformers.T5ForConditionalGeneration(config).eval()
    config = transformers.BartConfig(vocab_size=100, d_model=32, encoder_layers=1, decoder_layers=3,
                                     encoder_attention_heads=4, decoder_attention_heads=2, encoder_ffn_dim=48,
                                     decoder_ffn_dim=48, max_position_embeddings=64)
    return config, transformers.BartForConditionalGeneration(config).eval()


@pytest.mark.parametrize("kind", ["whisper", "t5", "bart"])
def test_an_encoder_decoders_cross_attention_cache_is_counted(tmp_path: Path, kind: str) -> None:
    """The cross-attention cache was left out ("adds as much per encoder token"): it is each decoder layer's keys
    and values of the encoder output, which EncoderDecoderCache.cross_attention_cache holds after generate. Whisper's
    encoder outputs max_source_positions frames whatever the audio (16 here); the others as many as the input (the
    estimate takes as many as --seq-len, 12 here)."""
    config, model = _seq2seq(kind)
    config.architectures = [type(model).__name__]
    config.save_pretrained(tmp_path)
    encoder = {"input_features": torch.randn(1, 8, 32)} if kind == "whisper" else \
        {"input_ids": torch.randint(4, 100, (1, 12))}
    with torch.no_grad():
        out = model.generate(**encoder, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                             return_dict_in_generate=True)
    cache = out.past_key_values
    positions = 16 if kind == "whisper" else 12
    assert cache.cross_attention_cache.layers[0].keys.shape[-2] == positions
    kv, text = _plan_folder(tmp_path, "--seq-len", "12")
    assert kv["encoder_seq_len"] == positions, kv
    assert kv["cross_attention_bytes"] == _bytes(cache.cross_attention_cache.layers), kv
    per_position = kv["cross_attention_bytes"] // positions
    assert per_position * positions == kv["cross_attention_bytes"], kv  # the printed factors multiply out
    assert f"B ({per_position} B/encoder position x {positions} positions x batch 1)" in text, text
    said = "Whisper's max_source_positions" if kind == "whisper" else "as many as the decoder's"
    assert said in kv["note"], kv
    # in the fit too
    assert kv["fits_on_gpus"] is True


def _plan_folder(folder: Path, *extra: str) -> tuple[dict[str, Any], str]:
    args = ("plan-devices", folder, "--gpu", "8GB", "--kv-cache", "--dtype", "fp32", *extra)
    kv = json_report(*args)["kv_cache"]
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr
    return kv, " ".join(result.stdout.split())


@pytest.mark.parametrize(("encoder", "decoder"), [((4, 4), (4, 2)), ((4, 4), (2, 2)), ((2, 2), (4, 4))])
def test_moonshine_decoder_is_sized_with_the_head_counts_transformers_builds_it_with(
        tmp_path: Path, encoder: tuple[int, int], decoder: tuple[int, int]) -> None:
    """MoonshineAttention writes its head counts into the config they share (through the attribute_map, onto
    decoder_num_*), the encoder's layers first: the decoder is built, and caches, with the encoder's counts. With a
    decoder_num_key_value_heads of 2 under 4 encoder heads the estimate was half the cache; with other head counts
    its factors (2 KV heads x 16 values) were not those of the cache (4 x 8)."""
    import transformers

    config = {"model_type": "moonshine", "architectures": ["MoonshineForConditionalGeneration"],
              "encoder_num_hidden_layers": 1, "decoder_num_hidden_layers": 2, "hidden_size": 32,
              "intermediate_size": 64, "vocab_size": 100, "encoder_num_attention_heads": encoder[0],
              "encoder_num_key_value_heads": encoder[1], "decoder_num_attention_heads": decoder[0],
              "decoder_num_key_value_heads": decoder[1]}
    torch.manual_seed(0)
    model = transformers.MoonshineForConditionalGeneration(transformers.AutoConfig.for_model(**config)).eval()
    with torch.no_grad():
        out = model(input_values=torch.zeros(1, 2000), decoder_input_ids=torch.zeros(1, 5, dtype=torch.long),
                    use_cache=True)
    cache = out.past_key_values
    keys = cache.self_attention_cache.layers[0].keys
    kv, text = _plan(tmp_path, config, "--seq-len", "5")
    assert (kv["num_kv_heads"], kv["head_dim"]) == (keys.shape[1], keys.shape[-1]) == (encoder[1], 32 // encoder[0])
    assert kv["total_bytes"] == _bytes(cache.self_attention_cache.layers), kv
    cross = cache.cross_attention_cache.layers
    positions = cross[0].keys.shape[-2]  # the encoder's frames of this input; the estimate takes --seq-len's 5
    assert kv["cross_attention_bytes"] // kv["encoder_seq_len"] == _bytes(cross) // positions, kv
    assert f"x 2 layers x {encoder[1]} KV heads x {32 // encoder[0]} values a head" in text, text
    assert "with the encoder's head counts" in kv["note"], kv


MISTRAL = {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 32, "intermediate_size": 48,
           "vocab_size": 100, "sliding_window": 8, "max_position_embeddings": 64}


def test_a_sliding_window_is_what_the_cache_holds_while_generating_and_its_note_says_the_prompt_stays(
        tmp_path: Path) -> None:
    """After a prefill of 13 tokens, transformers' DynamicSlidingWindowLayer shows window - 1 = 7 tokens, a view of
    the 13-token tensor it keeps alive; after the next token, a view of 7 in a tensor of window = 8 tokens. The
    estimate (8 tokens a layer) is that memory while generating; the note said "keep at most 8 tokens", though right
    after the prompt the memory held is all 13."""
    import transformers

    torch.manual_seed(0)
    model = transformers.MistralForCausalLM(transformers.AutoConfig.for_model(**MISTRAL)).eval()
    ids = torch.randint(0, 100, (1, 13))
    with torch.no_grad():
        prefill = model(input_ids=ids, use_cache=True).past_key_values
        after_prompt = _storage_bytes(prefill.layers)
        shown = _bytes(prefill.layers)
        model(input_ids=ids[:, :1], past_key_values=prefill, use_cache=True)
        generating = _storage_bytes(prefill.layers)
    kv, text = _plan(tmp_path, MISTRAL, "--seq-len", "13")
    assert shown == kv["bytes_per_token"] * 7, (shown, kv)  # window - 1, as the tensors show
    assert kv["total_bytes"] == generating == kv["bytes_per_token"] * 8, (generating, kv)
    assert after_prompt == kv["bytes_per_token"] * 13, (after_prompt, kv)
    assert ("(float32); sliding-window layers keep at most 8 tokens while generating (right after a longer prompt, "
            "transformers' DynamicCache still holds all of it there until the next token)); fits in ") in text, text
