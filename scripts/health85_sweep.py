"""Frozen / briefly-trained sweep of `inspect --stats`, judged by the bytes: tiny seeded GPT-2, Llama, T5 and BERT,
fresh, after 5 or 8 AdamW steps and after 300, with nothing, one matrix or one block frozen (requires_grad=False).

Usage: python scripts/health85_sweep.py OUT_DIR [--trees TREE ...] [--reuse]
Each TREE is a weightdoctor source root, run from there (`python -m` puts the working folder first on sys.path) and
put on PYTHONPATH (default: this checkout), so that two versions can be judged on the same checkpoints. The truth
is exact: a matrix is frozen when its saved bytes equal the fresh model's. Per case and tree it prints the state,
the frozen matrices warned (hits) and not (misses), and the false alarms: untrained-tensor on a matrix that moved
(a learned position table apart: its rows past the 12 tokens trained on really got no gradient), any other warning,
checkpoint-at-init on a trained model, a fresh model read otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from health80_sweep import build  # noqa: E402
from health83_frozen_sweep import POSITION_TABLES, train  # noqa: E402

# (model, steps, what is frozen: a module prefix, or None)
CASES: list[tuple[str, int, str | None]] = [
    *[(model, 0, None) for model in ("gpt2", "llama", "t5", "bert")],
    *[(model, 5, None) for model in ("gpt2", "llama", "t5", "bert")],
    ("gpt2", 5, "transformer.h.1.mlp.c_fc."),
    ("gpt2", 5, "transformer.h.0.attn.c_attn."),
    ("llama", 8, "model.layers.1.mlp.up_proj."),
    ("llama", 8, "model.layers.0.self_attn.v_proj."),
    ("t5", 8, "encoder.block.1.layer.1.DenseReluDense.wi."),
    ("t5", 8, "decoder.block.0.layer.0.SelfAttention.q."),
    ("bert", 8, "bert.encoder.layer.1.intermediate.dense."),
    ("bert", 8, "bert.encoder.layer.1."),
    ("llama", 300, None),
    ("bert", 300, None),
    ("t5", 300, None),
    ("t5", 300, "encoder.block.1.layer.1.DenseReluDense.wi."),
    ("llama", 300, "model.layers.1.mlp.up_proj."),
    ("bert", 300, "bert.encoder.layer.1."),
]


def judge(folder: Path, tree: str, unmoved: set[str], steps: int) -> tuple[str, int, int, list[str]]:
    """(state, hits, misses, false alarms) of `inspect --stats` from `tree` on one checkpoint."""
    done = subprocess.run([sys.executable, "-m", "weightdoctor", "inspect", str(folder), "--stats", "--json"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": tree}, cwd=tree)
    report = json.loads(done.stdout)
    state = report["weights"]["state"]
    warned = {f["tensor"] for f in report["findings"] if f["code"] == "untrained-tensor"}
    false = sorted(n for n in warned - unmoved if not n.endswith(POSITION_TABLES))
    false += [f"{f['code']}:{f['tensor']}" for f in report["findings"]
              if f["severity"] != "info" and f["code"] not in ("untrained-tensor", "checkpoint-at-init")]
    if steps and state == "initialization":
        false.append("checkpoint-at-init")
    if not steps:
        if state != "initialization":
            false.append(f"fresh read {state}")
        return state, 0, 0, false
    return state, len(unmoved & warned), len(unmoved - warned), false


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--trees", nargs="+", default=[str(Path(__file__).resolve().parent.parent)])
    parser.add_argument("--reuse", action="store_true", help="judge checkpoints already saved under OUT")
    args = parser.parse_args()
    from safetensors.torch import load_file
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.set_num_threads(1)  # several threads make the training's sums, so the checkpoints, vary from run to run
    totals: dict[str, Counter[str]] = {tree: Counter() for tree in args.trees}
    for model, steps, prefix in CASES:
        folder = args.out / f"{model}-{steps}-{(prefix or 'none').rstrip('.')}"
        net, batch = build(model)
        fresh = {n: v.detach().clone() for n, v in net.state_dict().items()}
        if not (args.reuse and folder.exists()):
            if steps:
                train(net, batch, steps, prefix)
            net.save_pretrained(folder)
        saved = load_file(folder / "model.safetensors")
        unmoved = {n for n, v in saved.items() if v.dim() >= 2 and n in fresh and torch.equal(v, fresh[n])} \
            if steps else set()
        for tree in args.trees:
            state, hits, misses, false = judge(folder, tree, unmoved, steps)
            counts = totals[tree]
            counts["cases"] += 1
            counts["frozen matrices"] += len(unmoved)
            counts["hits"] += hits
            counts["misses"] += misses
            counts["false alarms"] += len(false)
            print(f"{Path(tree).name:14} {folder.name:52} state={state:14} frozen {hits}/{len(unmoved)} warned  "
                  f"false={len(false)} {' '.join(false)[:200]}", flush=True)
    for tree, counts in totals.items():
        print(f"totals {tree}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
