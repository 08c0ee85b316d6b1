"""Sweep of every command under descending memory limits (`ulimit -v` and `ulimit -d`), mem9.

Each command runs on three sources: the tiny fixtures/example model, a 200 MB synthetic safetensors checkpoint and
the same split into shards (benchmarks/synth.py writes both, once, under --data). It first runs without a limit,
then under each limit, set in the child by `resource.setrlimit` (`preexec_fn`), and each limited run must either
give the output of the run without a limit (exit code and stdout, timings masked) with no traceback on stderr,
or be refused in one line that says memory, exit 2, leaving no output file. Anything else is printed as BAD and
the script exits 1.

    python scripts/memory_limit_sweep.py --limit as --mib 2000,900,800,780,760,700,650,600
    python scripts/memory_limit_sweep.py --limit data --mib 600,400,300,250 --sources tiny --commands plan-devices

Each run imports torch (and transformers for plan-devices and --model-class): seconds a run, so a full sweep of
three sources, nine commands and ten limits takes many minutes; --sources and --commands narrow it.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20

# Each command's words; {src} is the source, {out} a path in the run's own empty folder.
COMMANDS: dict[str, list[str]] = {
    "inspect": ["inspect", "{src}", "--json"],
    "inspect --stats": ["inspect", "{src}", "--stats", "--json"],
    "diff-keys": ["diff-keys", "{src}", "{src}", "--json"],
    "diff-keys --values": ["diff-keys", "{src}", "{src}", "--values", "--json"],
    "diff-keys --model-class": ["diff-keys", "{src}", "--model-class", "BertForSequenceClassification", "--json"],
    "plan-devices": ["plan-devices", "{src}", "--gpu", "1GB", "--json"],
    "convert": ["convert", "{src}", "-o", "{out}/out.bin", "--json"],
    "shard": ["shard", "{src}", "-o", "{out}/sharded", "--max", "64MB", "--json"],
    "check-dtype": ["check-dtype", "{src}", "--json"],
}
# --model-class needs a config of that class: only the tiny BERT has one.
TINY_ONLY = {"diff-keys --model-class"}
LIMITS = {"as": resource.RLIMIT_AS, "data": resource.RLIMIT_DATA}
_TIMINGS = re.compile(r'("[a-z_]*seconds[a-z_]*": )[0-9.e+-]+|\b\d+\.\d+ s\b')


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    files: list[str]


def build_sources(data: Path) -> dict[str, Path]:
    """The three sources, the synthetic ones written once under `data` (200 MB of float32, 100 tensors)."""
    sys.path.insert(0, str(REPO))
    from benchmarks.synth import specs_for_size, write_safetensors, write_sharded

    specs = specs_for_size(200 * 10**6, 100)
    single, sharded = data / "synthetic-200mb.safetensors", data / "synthetic-200mb-sharded"
    if not single.exists():
        write_safetensors(single, specs, fill="random")
    if not (sharded / "model.safetensors.index.json").exists():
        write_sharded(sharded, specs, 50 * 10**6, fill="random")
    return {"tiny": REPO / "fixtures" / "example", "200mb": single, "sharded": sharded}


def run(words: list[str], limit: str | None, mib: int | None, timeout: float) -> Run:
    """One run of `weightdoctor WORDS` in a fresh folder, under `limit` (as, data) of `mib` MiB where given."""
    folder = Path(tempfile.mkdtemp(prefix="wd-mem-"))
    try:
        def limited() -> None:
            if limit is not None and mib is not None:
                resource.setrlimit(LIMITS[limit], (mib * MIB, resource.getrlimit(LIMITS[limit])[1]))

        args = [word.format(out=folder, src="{src}") for word in words]
        try:
            done = subprocess.run([sys.executable, "-m", "weightdoctor", *args], capture_output=True, text=True,
                                  cwd=folder, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=timeout,
                                  preexec_fn=limited)
            code, stdout, stderr = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired:
            code, stdout, stderr = -999, "", f"hung past {timeout:.0f} s"
        files = sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))
        return Run(code, _TIMINGS.sub(r"\g<1>0", stdout), stderr, files)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def judge(whole: Run, limited: Run) -> str:
    """"ok" (as without the limit), "refused" (one line, memory, exit 2, no file) or "BAD: why"."""
    lines = [line for line in limited.stderr.splitlines() if line.strip()]
    if "Traceback" in limited.stderr or "Exception ignored" in limited.stderr or "Error in sys" in limited.stderr:
        return "BAD: traceback"
    if limited.code == whole.code and limited.stdout == whole.stdout and limited.files == whole.files:
        return "ok"
    if limited.code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "memory" in lines[0]:
        return "refused" if not limited.files else f"BAD: refused, left {limited.files}"
    if limited.code < 0 and limited.code != -999:
        return f"BAD: killed by signal {-limited.code} (an abort?)"
    return f"BAD: exit {limited.code}, {len(lines)} lines"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", choices=sorted(LIMITS), default="as")
    parser.add_argument("--mib", default="2000,1200,900,800,780,760,740,700,650,600",
                        help="limits to try, MiB, comma-separated (tried in the order given)")
    parser.add_argument("--sources", default="tiny,200mb,sharded")
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "weightdoctor-mem9")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    sources = build_sources(args.data)
    bad = 0
    for source_name in args.sources.split(","):
        for command in args.commands.split(","):
            if command in TINY_ONLY and source_name != "tiny":
                continue
            words = [word.replace("{src}", str(sources[source_name])) for word in COMMANDS[command]]
            whole = run(words, None, None, args.timeout)
            print(f"{source_name:8} {command:24} no limit: exit {whole.code}", flush=True)
            for mib in (int(text) for text in args.mib.split(",")):
                limited = run(words, args.limit, mib, args.timeout)
                verdict = judge(whole, limited)
                if verdict.startswith("BAD"):
                    bad += 1
                    # The whole stderr of each bad run, for its traceback: the failures move with the layout of the
                    # address space (ASLR), so a rerun at the same limit may not show it again.
                    kept = args.data / "bad" / f"{source_name}-{command.replace(' ', '_')}-{args.limit}{mib}.stderr"
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    kept.write_text(limited.stderr)
                shown = limited.stderr.strip().splitlines()[-1][:160] if limited.stderr.strip() else ""
                print(f"{source_name:8} {command:24} {args.limit}={mib:5} MiB: {verdict:10} {shown}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
