"""Score `inspect --stats` against real training: tiny models trained under several regimes, truth known.

For every model (BERT classifier, GPT-2, Llama, ViT, T5), regime (fixtures/trained_zoo.py), seed, width and
saved dtype, the checkpoint is inspected with `--stats --json --fail-on warn` and each floating tensor's
verdict is compared with what training really did to it:

- `trained` matrix: not `at_init`, no warn/error finding on it;
- `init` matrix (frozen, never-trained head, re-initialized): `at_init`, and named by an `untrained-tensor`
  finding (or the checkpoint by `checkpoint-at-init`);
- `init` / `trained` vector (biases, norms): no warn/error finding, and not `at_init` when it moved;
- `nonfinite`: a `nan-inf` error.

The exit code with `--fail-on warn` must be 1 exactly when a checkpoint holds a matrix at init or a
non-finite value. One line per (case, tensor group); exit 1 on any wrong verdict.

Usage: `python scripts/health_sweep.py [--quick] [--seeds 0 1 2] [--hidden 32 64] [--models ...]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fixtures.trained_zoo import MODELS, REGIMES, Case, build_cases  # noqa: E402


def _inspect(path: Path) -> tuple[int, dict[str, Any]]:
    from typer.testing import CliRunner

    from weightdoctor.cli import app

    result = CliRunner().invoke(app, ["inspect", str(path), "--stats", "--json", "--fail-on", "warn"],
                                catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)


def judge(case: Case, code: int, data: dict[str, Any]) -> tuple[list[tuple[str, str, str, bool, str]], bool | None]:
    """Per tensor: (name, group, truth, right, verdict text); and whether the exit code is right (None: a
    `faint` matrix was called at init, so the expected code cannot be said)."""
    tensors = {t["name"]: t for t in data["tensors"]}
    findings: dict[str | None, list[dict[str, Any]]] = {}
    for finding in data["findings"]:
        findings.setdefault(finding["tensor"], []).append(finding)
    at_init_state = data["weights"]["state"] == "initialization"
    rows = []
    should_fail = False
    undecidable = False
    for name, truth in sorted(case.truth.items()):
        item = tensors.get(name)
        if item is None:  # tied alias analysed under another name
            continue
        init = item["init"]
        expected = (init.get("expected") or {}).get("label")
        matrix = len(item["shape"]) >= 2 and expected not in ("zeros", "ones", "constant")
        codes = {f["code"]: f["severity"] for f in findings.get(name, [])}
        loud = {c for c, s in codes.items() if s in ("warn", "error")}
        group = ("matrix" if matrix else "vector") + "/" + truth
        few = item["stats"]["count"] < 64  # too few values to tell a distribution: `at_init` may be null
        if truth == "nonfinite":
            right = codes.get("nan-inf") == "error"
            should_fail = True
        elif truth == "diverged":
            right = codes.get("fp16-overflow") == "warn"
            should_fail = True
        elif truth == "init" and matrix:
            named = "untrained-tensor" in loud or at_init_state
            right = (init["at_init"] is True and named or few and init["at_init"] is None) \
                and loud <= {"untrained-tensor"}
            should_fail = should_fail or not few
        elif truth == "init":
            right = not loud and init["at_init"] is not False
        elif truth == "faint":  # either verdict; only no other alarm
            right = loud <= {"untrained-tensor"}
            undecidable = undecidable or init["at_init"] is True
        else:  # trained
            # Strong weight decay leaves a few surviving weights in a sea of near-zeros (T5's ReLU FFNs reach an
            # excess kurtosis of 100-1000): `extreme-outliers` then says what the layer became, rightly.
            allowed = {"extreme-outliers"} if case.regime == "wd" else set()
            right = loud <= allowed and init["at_init"] is not True
            should_fail = should_fail or bool(loud & allowed)
        verdict = f"{init['label']} at_init={init['at_init']}" + (f" [{','.join(sorted(codes))}]" if codes else "")
        rows.append((name, group, truth, right, verdict))
    if undecidable:
        return rows, None
    return rows, code == (1 if should_fail else 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="one seed, one width, fp32 and bf16 (where --seeds, --hidden, --dtypes are not given)")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--hidden", type=int, nargs="+")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=REGIMES)
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--verbose", "-v", action="store_true", help="every wrong tensor, not only the first")
    args = parser.parse_args()
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    args.hidden = args.hidden or ([32] if args.quick else [32, 64])
    args.dtypes = args.dtypes or (["fp32", "bf16"] if args.quick else ["fp32", "fp16", "bf16"])

    import torch
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    torch.set_num_threads(1)
    start = time.perf_counter()
    tensors = Counter[str]()
    groups = Counter[str]()
    exits = Counter[str]()
    faint = Counter[str]()  # verdicts on tensors that moved indistinguishably from their init
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for seed in args.seeds:
                for hidden in args.hidden:
                    for case in build_cases(Path(tmp), model, tuple(args.regimes), seed, hidden, args.steps,
                                            tuple(args.dtypes)):
                        code, data = _inspect(case.path)
                        rows, exit_right = judge(case, code, data)
                        exits[{True: "right", False: "wrong", None: "undecidable"}[exit_right]] += 1
                        by_group: dict[str, list[tuple[str, str, str, bool, str]]] = {}
                        for row in rows:
                            by_group.setdefault(row[1], []).append(row)
                        label = f"{model} s{seed} h{hidden} {case.regime} {case.dtype}"
                        for group, members in sorted(by_group.items()):
                            right = sum(r[3] for r in members)
                            tensors["right"] += right
                            tensors["wrong"] += len(members) - right
                            groups["right" if right == len(members) else "wrong"] += 1
                            verdicts = Counter(r[4].split(" [")[0] for r in members)
                            common = ", ".join(f"{v} ×{n}" for v, n in verdicts.most_common(2))
                            mark = "ok   " if right == len(members) else "WRONG"
                            if group.endswith("/faint"):
                                faint.update(r[4].split(" [")[0].split(" ")[-1] for r in members)
                            print(f"{mark} {label:<28} {group:<18} {right}/{len(members)}  {common}")
                            for row in [r for r in members if not r[3]][: None if args.verbose else 1]:
                                print(f"        {row[0]}: {row[4]}")
                        mark = {True: "ok   ", False: "WRONG", None: "faint"}[exit_right]
                        print(f"{mark} {label:<28} exit code {code} "
                              f"(state {data['weights']['state']}, "
                              f"{data['weights']['trained_share'] or 0:.0%} trained)", flush=True)
    elapsed = time.perf_counter() - start
    print(f"\ngroups: {sum(groups.values())}, right {groups['right']}; tensors: {sum(tensors.values())}, right "
          f"{tensors['right']}; exit codes: {sum(exits.values())}, right {exits['right']}, undecidable "
          f"{exits['undecidable']}; faint tensors (moved, same distribution as their init): "
          f"{dict(sorted(faint.items()))}; {elapsed:.0f} s")
    return 1 if groups["wrong"] or exits["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
