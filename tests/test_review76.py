"""Review of the day's merged diff (033b795..8ed4e8b3): faults found in it, each reproduced on real files.

fairseq2's LLaMA layout was told by `decoder.layers.N.self_attn_layer_norm`, which the base models of OPT, BART,
Whisper (mBART, Marian, M2M100, Pegasus too) hold: diff-keys of the base model against its head model (a
--rename '^model\\.=' loads it) called half the keys "fairseq2's layout", errors (exit 1 where it was 0).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import run_json


def _bart_config() -> object:
    import transformers

    return transformers.BartConfig(vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=2,
                                   encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                   decoder_ffn_dim=64, max_position_embeddings=64)


def _whisper_config() -> object:
    import transformers

    return transformers.WhisperConfig(vocab_size=96, pad_token_id=1, bos_token_id=2, eos_token_id=3,
                                      decoder_start_token_id=2, d_model=32, encoder_layers=2, decoder_layers=2,
                                      encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                      decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=32,
                                      max_target_positions=32)


def _opt_config() -> object:
    import transformers

    return transformers.OPTConfig(vocab_size=96, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                  num_attention_heads=4, word_embed_proj_dim=32, max_position_embeddings=64)


@pytest.mark.parametrize(("config", "base", "head"), [
    (_opt_config, "OPTModel", "OPTForCausalLM"),
    (_bart_config, "BartModel", "BartForConditionalGeneration"),
    (_whisper_config, "WhisperModel", "WhisperForConditionalGeneration"),
])
def test_a_base_model_with_self_attn_layer_norm_against_its_head_is_no_fairseq2_layout(
        tmp_path: Path, config: object, base: str, head: str) -> None:
    import transformers

    torch.manual_seed(0)
    getattr(transformers, base)(config()).save_pretrained(tmp_path / "base")
    torch.manual_seed(0)
    getattr(transformers, head)(config()).save_pretrained(tmp_path / "head")
    for a, b, rename in (("head", "base", "--rename '^model\\.='"), ("base", "head", "--rename '^=model.'")):
        code, report = run_json("diff-keys", tmp_path / a, tmp_path / b)
        # BART's final_logits_bias buffer ("unknown" before today's merges too) is no key of the two layouts.
        rows = [row for row in report["missing"] + report["unexpected"] if row["name"] != "final_logits_bias"]
        assert len(rows) > 60, report
        assert not any("fairseq2" in note for note in report["notes"]), report["notes"]
        assert {row["reason"] for row in rows} == {"base-model-prefix"}, {(r["name"], r["reason"]) for r in rows}
        assert {row["detail"] for row in rows} == {rename}
        assert report["matched_after_renames"] >= len(rows) // 2 - 1  # each prefixed pair (one side may tie one)
        if not head.startswith("Bart"):
            assert code == 0 and report["worst_severity"] == "warn"


def test_a_resized_classifier_is_not_said_to_lack_an_output_layer_it_has_none_of(tmp_path: Path) -> None:
    """BertForSequenceClassification's config ties word embeddings (BertConfig's default) but the class has no output
    layer: the note said "A does not store the output layer the model ties to its embedding, which a strict load
    reports missing", where a strict load_state_dict of A into the resized model raises nothing."""
    import transformers
    from safetensors.torch import load_file

    from tests.helpers import save_tiny_bert

    save_tiny_bert(tmp_path / "base")
    model = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "base")
    model.resize_token_embeddings(model.config.vocab_size + 4)
    model.save_pretrained(tmp_path / "resized")
    _, report = run_json("diff-keys", tmp_path / "resized", tmp_path / "base")
    note = next(note for note in report["notes"] if note.startswith("the vocabulary differs"))
    assert "strict=False" in note
    assert "A does not store the output layer the model ties" not in note, note
    # What the note says of a tying model holds for this one: the resized class loads A strictly, no key missing.
    target = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "base")
    target.resize_token_embeddings(model.config.vocab_size)
    state = load_file(tmp_path / "resized" / "model.safetensors")
    assert not any(target.load_state_dict(state, strict=True))
    assert torch.equal(target.bert.embeddings.word_embeddings.weight, state["bert.embeddings.word_embeddings.weight"])
