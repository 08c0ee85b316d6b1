"""Benchmark `diff-keys` on a checkpoint with every layer renumbered (a pipeline stage saved from 0), old code
against new, interleaved on one machine.

    python -m benchmarks.bench_renumbered --old dbcac8b9                     # 1,000 layers: 10,000 keys
    python -m benchmarks.bench_renumbered --old c59b89cc --layers 200 --same # and check the two reports are equal

A: layers 0 to N-1 of a Llama-like model (10 tensors a layer, sparse safetensors: headers only), B: the same
layers numbered N to 2N-1. Each run is a fresh process that imports weightdoctor (from the tree given) and times
`diff_checkpoints(A, B)` in-process (the import not counted). `--old REV` is checked out in a detached worktree
under bench-data/; old and new runs alternate, --reps each; the medians are printed. `--same` also compares the
two reports (JSON, the sources left out) and fails where they differ.

Measured (renumber2, the shared 2-core development machine, CPU, Python 3.11, other work running beside it):
    --old dbcac8b9 (main before renumber2), 10,000 keys, 5 reps: old 40.84 s (42.29 39.74 40.84 40.50 42.66) with
        6 renames (60 keys matched), new 4.25 s (4.20 4.25 4.73 4.16 4.72) with all 1,000 (10,000 keys).
    --old c59b89cc (the block's renames, before the speed-ups), 3,000 keys, 5 reps, --same: 2.32 s against 0.81 s,
        reports equal; 10,000 keys, 1 rep, --same: 229.08 s against 3.49 s, reports equal.
Measured (diffkeys5: the prefix votes counted by groups, prefix_votes.py; same machine, loaded by other work):
    --old 546c0b8c, 10,000 keys, --same: 5 reps before the lookalike rule 4.89 s against 0.92 s, 3 reps on the
        final tree 5.36 s against 0.96 s, reports equal; 20,000 keys, 3 reps, --same: 36.25 s against 0.96 s,
        reports equal.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.bench_diff_keys import write_sparse_safetensors

ROOT = Path(__file__).resolve().parent.parent
_TAILS = [("input_layernorm.weight", (64,)), ("post_attention_layernorm.weight", (64,)),
          ("self_attn.q_proj.weight", (64, 64)), ("self_attn.k_proj.weight", (16, 64)),
          ("self_attn.v_proj.weight", (16, 64)), ("self_attn.o_proj.weight", (64, 64)),
          ("self_attn.q_norm.weight", (16,)), ("mlp.gate_proj.weight", (128, 64)), ("mlp.up_proj.weight", (128, 64)),
          ("mlp.down_proj.weight", (64, 128))]

# Run in the child: time diff_checkpoints in-process, print the seconds and the report.
_CHILD = """
import json, sys, time
from dataclasses import asdict
from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.diff_keys import diff_checkpoints
with open_checkpoint(sys.argv[1], structure_only=True) as a, open_checkpoint(sys.argv[2], structure_only=True) as b:
    start = time.perf_counter()
    report = diff_checkpoints(a, b)
    seconds = time.perf_counter() - start
data = asdict(report)
data.pop("source_a", None), data.pop("source_b", None)
print(json.dumps({"seconds": seconds, "report": data}, default=str, sort_keys=True))
"""


def write_pair(folder: Path, layers: int) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    a, b = folder / f"stage_from_0_{layers}.safetensors", folder / f"stage_numbered_{layers}.safetensors"
    for path, offset in ((a, 0), (b, layers)):
        write_sparse_safetensors(path, [(f"model.layers.{i + offset}.{tail}", shape)
                                        for i in range(layers) for tail, shape in _TAILS])
    return a, b


def run_once(tree: Path, a: Path, b: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(a), str(b)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the git revision to compare with")
    parser.add_argument("--layers", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--same", action="store_true", help="fail where the two reports differ")
    args = parser.parse_args()
    data = ROOT / "bench-data" / "renumbered"
    a, b = write_pair(data, args.layers)
    old_tree = data / f"tree-{args.old}"
    if not old_tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), args.old], check=True,
                       capture_output=True)
    times: dict[str, list[float]] = {"old": [], "new": []}
    reports: dict[str, object] = {}
    for _ in range(args.reps):
        for label, tree in (("old", old_tree), ("new", ROOT)):
            result = run_once(tree, a, b)
            times[label].append(float(result["seconds"]))  # type: ignore[arg-type]
            reports[label] = result["report"]
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    keys = args.layers * len(_TAILS)
    print(f"{keys:,} keys, every layer renumbered; medians of {args.reps}, interleaved")
    print(f"  old {args.old}: {old:8.2f} s   {' '.join(f'{t:.2f}' for t in times['old'])}")
    print(f"  new:          {new:8.2f} s   {' '.join(f'{t:.2f}' for t in times['new'])}   ({old / new:.1f}x)")
    for label, report in reports.items():
        print(f"  {label}: {len(report['suggested_renames'])} renames, {report['matched_after_renames']} "  # type: ignore[index]
              "keys match after them")
    if args.same:
        same = reports["old"] == reports["new"]
        print(f"  reports equal: {same}")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
