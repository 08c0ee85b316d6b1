"""False-alarm sweep of `inspect --stats` on fresh and briefly trained (5 Adam steps, lr 1e-3) tiny models.

Usage: python scripts/health80_sweep.py OUT_DIR [--models bert gpt2 ...] [--reuse] [--sample N]
Regimes: fresh, trained, fresh-fp8 (the fresh checkpoint cast to float8_e4m3fn).
Prints one line per (model, regime): the checkpoint's state, its findings by code, and the matrices read "at init".
A fresh model should be "initialization" with only checkpoint-at-init; a briefly trained one should not be called
"initialization" without saying that a few steps cannot be told from it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch

MODELS = ("bert", "gpt2", "llama", "qwen3", "gemma3", "t5", "vit", "clip", "whisper", "mixtral")


def build(model: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A fresh seeded tiny model and one batch its forward turns into a loss."""
    import transformers as tf

    torch.manual_seed(0)
    ids = torch.randint(3, 100, (4, 12))
    text = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=32)
    causal = {"input_ids": ids, "labels": ids}
    if model == "bert":
        return tf.BertForMaskedLM(tf.BertConfig(**text)), causal
    if model == "gpt2":
        config = tf.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32)
        return tf.GPT2LMHeadModel(config), causal
    if model == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**text, num_key_value_heads=2, tie_word_embeddings=False)), causal
    if model == "qwen3":
        return tf.Qwen3ForCausalLM(tf.Qwen3Config(**text, num_key_value_heads=2, head_dim=8)), causal
    if model == "gemma3":
        config = tf.Gemma3TextConfig(**text, num_key_value_heads=2, head_dim=8, sliding_window=8)
        return tf.Gemma3ForCausalLM(config), causal
    if model == "mixtral":
        config = tf.MixtralConfig(**text, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2)
        return tf.MixtralForCausalLM(config), causal
    if model == "t5":
        config = tf.T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                             decoder_start_token_id=0, pad_token_id=0)
        return tf.T5ForConditionalGeneration(config), causal
    if model == "vit":
        config = tf.ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, num_labels=4)
        return tf.ViTForImageClassification(config), {"pixel_values": torch.randn(4, 3, 16, 16),
                                                      "labels": torch.randint(0, 4, (4,))}
    if model == "clip":
        config = tf.CLIPConfig(
            text_config=dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=16),
            vision_config=dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64), projection_dim=16)
        return tf.CLIPModel(config), {"input_ids": ids[:, :8], "pixel_values": torch.randn(4, 3, 16, 16),
                                      "return_loss": True}
    if model == "whisper":
        config = tf.WhisperConfig(
            vocab_size=100, num_mel_bins=8, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=16,
            max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
        return tf.WhisperForConditionalGeneration(config), {"input_features": torch.randn(4, 8, 32),
                                                            "labels": ids[:, :8]}
    raise ValueError(model)


def brief_training(model: torch.nn.Module, batch: dict[str, Any], steps: int = 5, lr: float = 1e-3) -> None:
    torch.manual_seed(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        output = model(**batch)
        output.loss.backward()
        optimizer.step()


def save(model: str, regime: str, out: Path) -> Path:
    folder = out / f"{model}-{regime}"
    if regime == "fresh-fp8":  # the fresh checkpoint's floating tensors cast to float8_e4m3fn
        import shutil

        from safetensors.torch import load_file, save_file

        fresh = out / f"{model}-fresh"
        if not fresh.exists():
            save(model, "fresh", out)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(fresh / "config.json", folder / "config.json")
        tensors = load_file(fresh / "model.safetensors")
        save_file({k: v.to(torch.float8_e4m3fn) if v.is_floating_point() else v for k, v in tensors.items()},
                  folder / "model.safetensors", metadata={"format": "pt"})
        return folder
    net, batch = build(model)
    if regime == "trained":
        brief_training(net, batch)
    net.save_pretrained(folder)
    return folder


def judge(folder: Path, sample: int | None = None) -> dict[str, Any]:
    extra = ["--sample", str(sample)] if sample else []
    done = subprocess.run([sys.executable, "-m", "weightdoctor", "inspect", str(folder), "--stats", "--json", *extra],
                          capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{folder}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--reuse", action="store_true", help="judge checkpoints already saved under OUT")
    parser.add_argument("--regimes", nargs="+", default=["fresh", "trained", "fresh-fp8"])
    parser.add_argument("--sample", type=int, default=None, help="judge with inspect --sample N")
    args = parser.parse_args()
    from transformers.utils import logging

    logging.set_verbosity_error()
    totals: Counter[str] = Counter()
    for model in args.models:
        for regime in args.regimes:
            folder = args.out / f"{model}-{regime}"
            if not (args.reuse and folder.exists()):
                folder = save(model, regime, args.out)
            report = judge(folder, args.sample)
            codes = Counter(f["code"] for f in report["findings"])
            at_init = sum(1 for t in report["tensors"] if len(t["shape"]) >= 2 and t["init"]["at_init"])
            matrices = sum(1 for t in report["tensors"] if len(t["shape"]) >= 2 and t["init"]["at_init"] is not None)
            weights = report["weights"]
            pooled = weights["pooled_spread"]
            spread = "pooled none" if pooled is None else f"pooled {pooled['tensors']} z={pooled['z']:+.2f}"
            print(f"{model:8} {regime:8} state={weights['state']!s:15} basis={weights.get('state_basis')!s:8} "
                  f"matrices at init {at_init}/{matrices}  {spread}  "
                  + " ".join(f"{c}={n}" for c, n in sorted(codes.items())), flush=True)
            for code, n in codes.items():
                totals[f"{regime}:{code}"] += n
    print("totals: " + ", ".join(f"{k}={v}" for k, v in sorted(totals.items())))


if __name__ == "__main__":
    main()
