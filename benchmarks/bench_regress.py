"""Did a day's merges slow the commands? Times HEAD's tree against an older tree, alternating, fresh processes.

`python -m benchmarks.bench_regress --old /tmp/wt-old --data /tmp/data --reps 9`: builds the inputs the other
benchmarks use (sparse 723- and 10,002-key Llama pairs, a 10,000-tensor file, also read whole by inspect --stats
and check-dtype, a sharded folder, a folder beside 1,000 other files, a 10,000-tensor torch zip `.pt`, also
converted, and bench_many_tensors' 100,000-tensor legacy `.bin`) and prints, per command, the median wall and CPU
of each tree, the HEAD/old ratio, and the spread (min-max) of each tree's runs. The two trees run one after the
other within each repetition so that a change in the machine's load hits both alike. Outputs are compared byte for byte.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.bench_diff_keys import write_sparse_safetensors
from benchmarks.synth import llama_specs

HERE = Path(__file__).resolve().parent.parent


def build(data: Path) -> dict[str, Path]:
    import torch
    from safetensors.torch import save_file

    data.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    seventy = llama_specs(num_layers=80, hidden=8192, intermediate=28672, vocab=32000, kv_heads_ratio=8)
    ten_k = llama_specs(num_layers=1111, hidden=1024, intermediate=2816, vocab=32000)
    for label, specs in (("723", seventy), ("10k", ten_k)):
        paths[f"{label}-b"] = b = data / f"{label}-b.safetensors"
        write_sparse_safetensors(b, specs)
        paths[f"{label}-near"] = near = data / f"{label}-near.safetensors"
        write_sparse_safetensors(near, [s for s in specs if s[0] != "lm_head.weight"])
    # 10,000 tiny seeded tensors (bench_many_tensors' write_small naming).
    generator = torch.Generator().manual_seed(0)
    tensors = {f"model.layers.{i // 10}.p{i % 10}.weight": torch.randn(4 << (i % 5), generator=generator)
               for i in range(10_000)}
    paths["many"] = data / "many.safetensors"
    save_file(tensors, str(paths["many"]))
    # A sharded folder: the 723 70B-class keys over 15 sparse shards, with its index and a config.
    sharded = paths["sharded"] = data / "sharded"
    sharded.mkdir(exist_ok=True)
    weight_map: dict[str, str] = {}
    total = 0
    chunks = [seventy[i::15] for i in range(15)]
    for index, chunk in enumerate(chunks, 1):
        name = f"model-{index:05d}-of-00015.safetensors"
        total += write_sparse_safetensors(sharded / name, chunk)
        weight_map.update({n: name for n, _ in chunk})
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (sharded / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    # A model folder beside 1,000 other files (images, text, a few .npy / .pt: the other-format listing's work).
    crowded = paths["crowded"] = data / "crowded"
    crowded.mkdir(exist_ok=True)
    save_file({k: v for k, v in list(tensors.items())[:300]}, str(crowded / "model.safetensors"))
    (crowded / "config.json").write_text(json.dumps({"model_type": "llama"}))
    for index in range(1000):
        suffix = (".png", ".txt", ".json", ".npy", ".pt")[index % 5]
        (crowded / f"other_{index:04d}{suffix}").write_bytes(b"x" * 64)
    # The pickle readers: 10,000 tensors as a torch zip .pt, 100,000 (bench_many_tensors --small) as a legacy .bin.
    paths["zip-pt"] = data / "many.pt"
    if not paths["zip-pt"].exists():
        torch.save(tensors, paths["zip-pt"])
    paths["legacy"] = data / "legacy.bin"
    if not paths["legacy"].exists():
        generator = torch.Generator().manual_seed(0)
        legacy = {}
        for index in range(100_000):
            values = torch.randn(4 << (index % 5), generator=generator)
            legacy[f"model.layers.{index // 10}.p{index % 10}.weight"] = values if index % 3 else values.bfloat16()
        torch.save(legacy, paths["legacy"], _use_new_zipfile_serialization=False)
    paths["scratch"] = data / "convert-out"
    paths["converted"] = data / "converted"  # convert --force writes over its own output there at every run
    paths["converted"].mkdir(exist_ok=True)
    return paths


def commands(p: dict[str, Path]) -> list[tuple[str, list[str]]]:
    return [
        ("diff-keys 10k near --json", ["diff-keys", str(p["10k-near"]), str(p["10k-b"]), "--json"]),
        ("diff-keys 723 near --json", ["diff-keys", str(p["723-near"]), str(p["723-b"]), "--json"]),
        ("inspect 10,000-tensor file --json", ["inspect", str(p["many"]), "--json"]),
        ("inspect sharded folder (15 shards) --json", ["inspect", str(p["sharded"]), "--json"]),
        ("inspect folder beside 1,000 files --json", ["inspect", str(p["crowded"]), "--json"]),
        # HEAD's copy, named whole for both trees: a relative path resolves inside the tree that runs it, and the
        # source line showing that path (padded to the table's width) made the outputs differ at every run.
        ("check-dtype fixtures/example", ["check-dtype", str(HERE / "fixtures" / "example")]),
        ("inspect 10,000-tensor file --stats --json", ["inspect", str(p["many"]), "--stats", "--json"]),
        ("check-dtype 10,000-tensor file --json", ["check-dtype", str(p["many"]), "--json"]),
        ("inspect 10,000-tensor zip .pt --json", ["inspect", str(p["zip-pt"]), "--json"]),
        ("convert 10,000-tensor zip .pt --force --json",
         ["convert", str(p["zip-pt"]), "--force", "--json", "--output", str(p["converted"] / "many.safetensors")]),
        ("inspect 100,000-tensor legacy .bin --json", ["inspect", str(p["legacy"]), "--json"]),
        ("convert 100,000-tensor legacy .bin --dry-run --json",
         ["convert", str(p["legacy"]), "--dry-run", "--json", "--output", str(p["scratch"])]),
    ]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(tree: Path, args: list[str], pycache: Path | None) -> tuple[float, float, bytes, bytes, int]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
    # An installed package runs from .pyc files; with PYTHONDONTWRITEBYTECODE=1 (set on the build machine) every
    # process compiles the whole package from source, which charges a larger module's size to each run.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = str(pycache)  # kept out of the trees
    start, cpu = time.perf_counter(), _children_cpu()
    # cwd=tree: `-m` puts the working directory first on sys.path (every command names its sources whole).
    done = subprocess.run([sys.executable, "-m", "weightdoctor", *args], capture_output=True, env=env, cwd=tree,
                          check=False)
    return time.perf_counter() - start, _children_cpu() - cpu, done.stdout, done.stderr, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="a tree holding the older weightdoctor/ package")
    parser.add_argument("--data", type=Path, required=True, help="where to write the inputs (delete afterwards)")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--only", help="run only the commands whose label contains this")
    parser.add_argument("--no-bytecode", action="store_true", help="compile from source in every process")
    args = parser.parse_args()
    if args.reps < 1:
        parser.error("--reps must be at least 1 (a median needs one run)")
    paths = build(args.data)
    trees = {"head": HERE, "old": args.old.resolve()}
    mode = "from source (no .pyc)" if args.no_bytecode else "from .pyc (cached under --data)"
    print(f"modules run {mode}")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; medians of {args.reps} fresh processes")
    print("| command | HEAD wall | old wall | wall ratio | HEAD CPU | old CPU | CPU ratio | HEAD CPU spread | "
          "old CPU spread | same stdout |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---|")
    for label, cmd in commands(paths):
        if args.only and args.only not in label:
            continue
        times: dict[str, list[tuple[float, float]]] = {"head": [], "old": []}
        outs: dict[str, tuple[bytes, int]] = {}
        for rep in range(args.reps + 1):
            order = ("head", "old") if rep % 2 else ("old", "head")
            for name in order:
                wall, cpu, out, err, code = run_once(trees[name], cmd,
                                                      None if args.no_bytecode else args.data / f"pyc-{name}")
                if rep:  # the first repetition only warms the page cache
                    times[name].append((wall, cpu))
                outs[name] = (out, code)
                if code not in (0, 1):
                    print(f"  {name} {label} exited {code}: {err.decode()[-300:]}", file=sys.stderr)
        hw = statistics.median(t[0] for t in times["head"]) * 1000
        ow = statistics.median(t[0] for t in times["old"]) * 1000
        hc = statistics.median(t[1] for t in times["head"]) * 1000
        oc = statistics.median(t[1] for t in times["old"]) * 1000
        hs = f"{min(t[1] for t in times['head']) * 1000:.0f}–{max(t[1] for t in times['head']) * 1000:.0f} ms"
        os_ = f"{min(t[1] for t in times['old']) * 1000:.0f}–{max(t[1] for t in times['old']) * 1000:.0f} ms"
        same = "yes" if outs["head"] == outs["old"] else "no"
        print(f"| {label} | {hw:.0f} ms | {ow:.0f} ms | {hw / ow:.2f}× | {hc:.0f} ms | {oc:.0f} ms | {hc / oc:.2f}× "
              f"| {hs} | {os_} | {same} |", flush=True)


if __name__ == "__main__":
    main()
