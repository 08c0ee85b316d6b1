"""Frozen-layer sweep of `inspect --stats`: tiny models trained a few to a few hundred AdamW steps, with nothing,
one matrix or one block frozen (requires_grad=False), judged against what training did.

Usage: python scripts/health83_frozen_sweep.py OUT_DIR [--models gpt2 bert llama t5] [--steps 5 8 50 300] [--reuse]
Prints one line per case: the state, the frozen matrices warned (hits) and not (misses), and the warnings on
tensors that did train (false alarms; a learned position table's rows past the 12 tokens trained on are counted
apart, as `wpe`-like, since they really got no gradient). A fresh model should read "initialization".
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from health80_sweep import build  # noqa: E402

# What each case freezes: a module's prefix (one matrix with its bias, or a whole block).
FROZEN = {
    "gpt2": {"mlp": "transformer.h.1.mlp.c_fc.", "attn": "transformer.h.0.attn.c_attn.", "block": "transformer.h.1."},
    "bert": {"mlp": "bert.encoder.layer.1.intermediate.dense.", "attn": "bert.encoder.layer.0.attention.self.query.",
             "block": "bert.encoder.layer.1."},
    "llama": {"mlp": "model.layers.1.mlp.up_proj.", "attn": "model.layers.0.self_attn.v_proj.",
              "block": "model.layers.1."},
    "t5": {"mlp": "encoder.block.1.layer.1.DenseReluDense.wi.", "attn": "decoder.block.0.layer.0.SelfAttention.q.",
           "block": "encoder.block.1."},
}
POSITION_TABLES = ("wpe.weight", "position_embeddings.weight")


def train(net: torch.nn.Module, batch: dict, steps: int, frozen: str | None) -> None:
    torch.manual_seed(1)
    for name, parameter in net.named_parameters():
        if frozen and name.startswith(frozen):
            parameter.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    net.train()
    for _ in range(steps):
        optimizer.zero_grad()
        net(**batch).loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--models", nargs="+", default=list(FROZEN))
    parser.add_argument("--steps", nargs="+", type=int, default=[5, 8, 50, 300])
    parser.add_argument("--reuse", action="store_true", help="judge checkpoints already saved under OUT")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs weightdoctor")
    args = parser.parse_args()
    from transformers.utils import logging

    logging.set_verbosity_error()
    totals: Counter[str] = Counter()
    for model in args.models:
        cases = [(0, None, None)] + [(s, choice, prefix) for s in args.steps
                                     for choice, prefix in [(None, None), *FROZEN[model].items()]]
        for steps, choice, prefix in cases:
            folder = args.out / f"{model}-{steps}-{choice or 'none'}"
            if not (args.reuse and folder.exists()):
                net, batch = build(model)
                if steps:
                    train(net, batch, steps, prefix)
                net.save_pretrained(folder)
            from safetensors import safe_open

            with safe_open(folder / "model.safetensors", "pt") as saved:
                frozen = {n for n in saved.keys()  # noqa: SIM118 (a safe_open handle, no dict)
                          if prefix and n.startswith(prefix) and len(saved.get_slice(n).get_shape()) >= 2}
            done = subprocess.run([args.python, "-m", "weightdoctor", "inspect", str(folder), "--stats", "--json"],
                                  capture_output=True, text=True)
            report = json.loads(done.stdout)
            warned = {f["tensor"] for f in report["findings"] if f["code"] == "untrained-tensor"}
            others = [f"{f['code']}:{f['tensor']}" for f in report["findings"]
                      if f["severity"] != "info" and f["code"] not in ("untrained-tensor", "checkpoint-at-init")]
            state = report["weights"]["state"]
            hits, misses = len(frozen & warned), len(frozen - warned)
            positions = {n for n in warned - frozen if n.endswith(POSITION_TABLES)}
            false = sorted(warned - frozen - positions) + others
            if steps and state == "initialization":
                false.append("checkpoint-at-init")
            if not steps and state != "initialization":
                false.append(f"fresh read {state}")
            regime = "fresh" if not steps else f"{steps}:{choice or 'none'}"
            totals["false alarms"] += len(false)
            totals["frozen matrices"] += len(frozen)
            totals["hits"] += hits
            totals["misses"] += misses
            print(f"{model:6} {regime:11} state={state:14} frozen {hits}/{len(frozen)} warned  "
                  f"position-table={len(positions)}  false={len(false)} {' '.join(false)[:300]}", flush=True)
    print("totals: " + ", ".join(f"{k}={v}" for k, v in totals.items()))


if __name__ == "__main__":
    main()
