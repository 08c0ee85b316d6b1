"""Review of the day's merged diff (033b795..8ed4e8b3): faults found in it, each reproduced on real files.

fairseq2's LLaMA layout was told by `decoder.layers.N.self_attn_layer_norm`, which BART's and Whisper's base models
hold too: diff-keys of their base model against their ForConditionalGeneration (a --rename '^model\\.=' loads it)
called half the keys "fairseq2's layout", errors (exit 1 where it was 0).
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


@pytest.mark.parametrize(("config", "base", "head"), [
    (_bart_config, "BartModel", "BartForConditionalGeneration"),
    (_whisper_config, "WhisperModel", "WhisperForConditionalGeneration"),
])
def test_a_seq2seq_base_model_against_its_head_is_no_fairseq2_layout(tmp_path: Path, config: object, base: str,
                                                                      head: str) -> None:
    import transformers

    torch.manual_seed(0)
    getattr(transformers, base)(config()).save_pretrained(tmp_path / "base")
    torch.manual_seed(0)
    getattr(transformers, head)(config()).save_pretrained(tmp_path / "head")
    for a, b, rename in (("head", "base", "--rename '^model\\.='"), ("base", "head", "--rename '^=model.'")):
        code, report = run_json("diff-keys", tmp_path / a, tmp_path / b)
        # BART's final_logits_bias buffer ("unknown" before today's merges too) is no key of the two layouts.
        rows = [row for row in report["missing"] + report["unexpected"] if row["name"] != "final_logits_bias"]
        assert len(rows) > 80, report
        assert not any("fairseq2" in note for note in report["notes"]), report["notes"]
        assert {row["reason"] for row in rows} == {"base-model-prefix"}, {(r["name"], r["reason"]) for r in rows}
        assert {row["detail"] for row in rows} == {rename}
        assert report["matched_after_renames"] >= len(rows) // 2 - 1  # each prefixed pair (one side may tie one)
        if head.startswith("Whisper"):
            assert code == 0 and report["worst_severity"] == "warn"
