"""GPU sweep for `weightdoctor plan-devices`: many plans against real `from_pretrained` loads on cuda:0.

Run from the repository root on a machine with a GPU (no network needed):

    PYTHONPATH=. python scripts/gpu_sweep.py [--report FILE] [--models gpt2,t5,...] [--jobs N]

For small random models of several architectures (GPT-2, Llama, T5, OPT; transformers, seeded), GPU budgets of
a quarter, a half and 80 % of the weights, the `auto` and `sequential` strategies, the checkpoint's dtype and
bf16, and a CPU budget small enough to push the rest to disk (`--models` picks a subset): the plan's
`device_map` must equal the `hf_device_map` of `from_pretrained(device_map=strategy, max_memory=..., dtype=...)`
really loading the model on cuda:0, and every parameter planned on the GPU must be there. Two fine-grained FP8
checkpoints (a tiny Llama and Qwen3, `fp8-llama`, `fp8-qwen3`) are planned with `--dtype fp8` and loaded as
shipped, which on a GPU of compute capability 8.9 or above keeps their weights in FP8 (the line names the 1-byte
dtypes the load kept). `--jobs N` runs N cases at once, each in its own process. One line per case;
exits 1 if any differs, 0 with a message when no CUDA device is visible.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def build_models(root: Path) -> dict[str, tuple[Path, type, int]]:
    """name -> (folder, model class, fp32 weight bytes; for the FP8 checkpoints, the bytes stored)."""
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        OPTConfig,
        OPTForCausalLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    specs = {
        "gpt2": (GPT2LMHeadModel, GPT2Config(vocab_size=1000, n_embd=256, n_layer=6, n_head=4, n_positions=128)),
        "llama": (LlamaForCausalLM, LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512,
                                                num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
                                                tie_word_embeddings=False)),
        "t5": (T5ForConditionalGeneration, T5Config(vocab_size=1000, d_model=128, d_ff=256, num_layers=3,
                                                    num_decoder_layers=3, num_heads=4, d_kv=32)),
        "opt": (OPTForCausalLM, OPTConfig(vocab_size=1000, hidden_size=128, ffn_dim=256, num_hidden_layers=6,
                                          num_attention_heads=4, max_position_embeddings=128)),
    }
    out = {}
    for name, (cls, config) in specs.items():
        torch.manual_seed(0)
        model = cls(config).eval()
        folder = root / name
        model.save_pretrained(folder)
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        out[name] = (folder, cls, weight_bytes)
    out.update(build_fp8_models(root))
    return out


def build_fp8_models(root: Path) -> dict[str, tuple[Path, type, int]]:
    """Fine-grained FP8 checkpoints (float8 weights in 128x128 blocks with float32 scales, as DeepSeek-V3 and
    Qwen3-FP8 ship) of a tiny Llama and Qwen3: name -> (folder, model class, bytes the file stores)."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

    from fixtures.plan_devices import fp8_checkpoint

    configs = {
        "fp8-llama": LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=6,
                                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False),
        "fp8-qwen3": Qwen3Config(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=6,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=64),
    }
    out = {}
    for name, config in configs.items():
        folder = fp8_checkpoint(config, root / name)
        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            stored = 0
            for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                piece = f.get_slice(key)
                count = 1
                for size in piece.get_shape():
                    count *= size
                stored += count * (1 if piece.get_dtype().startswith("F8") else 4 if piece.get_dtype() == "F32" else 2)
        out[name] = (folder, AutoModelForCausalLM, stored)
    return out


def plan(folder: Path, *args: str) -> tuple[int, dict, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "weightdoctor", "plan-devices", str(folder), *args, "--json"],
                          capture_output=True, text=True, env=env, cwd=REPO)
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else {}), proc.stderr.strip()


def cases_of(models: dict[str, tuple[Path, type, int]], chosen: list[str]) -> list[dict]:
    """Every case of the chosen models, in their order: dtype x GPU fraction x strategy, plus one disk-offload
    case per dtype. An FP8 checkpoint is planned with `--dtype fp8` and loaded as shipped (a GPU of compute
    capability 8.9 or above keeps its weights in FP8), at the bytes its file stores."""
    import torch

    cases = []
    for name in chosen:
        folder, cls, weight_bytes = models[name]
        dtypes = ((("fp8", None, 1.0),) if name.startswith("fp8-")
                  else (("fp32", torch.float32, 1.0), ("bf16", torch.bfloat16, 0.5)))
        for dtype_flag, torch_dtype, scale in dtypes:
            for fraction in (0.25, 0.5, 0.8):
                for strategy in ("auto", "sequential"):
                    for disk in (False, True):
                        if disk and (fraction != 0.5 or strategy != "auto"):
                            continue
                        cap = int(weight_bytes * scale * fraction)
                        cpu = int(weight_bytes * scale * 0.2) if disk else 10**9
                        cases.append({"name": name, "folder": str(folder), "cls": cls, "dtype_flag": dtype_flag,
                                      "torch_dtype": torch_dtype, "cap": cap, "cpu": cpu, "strategy": strategy,
                                      "disk": disk, "index": len(cases)})
    return cases


def run_case(case: dict) -> tuple[bool, str]:
    """Plan one case with the CLI, load it for real on cuda:0, compare: (equal, report line)."""
    import torch

    folder = Path(case["folder"])
    cap, cpu, strategy, disk = case["cap"], case["cpu"], case["strategy"], case["disk"]
    flags = ["--gpu", str(cap), "--cpu", str(cpu), "--strategy", strategy, "--dtype", case["dtype_flag"]]
    code, planned, err = plan(folder, *flags + (["--disk"] if disk else []))
    label = f"{case['name']} {case['dtype_flag']} gpu={cap} cpu={cpu}{' disk' if disk else ''} {strategy}"
    if not planned:
        return False, f"- [ ] {label}: plan-devices exit {code} {err[:200]}"
    offload = folder.parent / f"offload-{case['index']}"
    try:
        extra = {} if case["torch_dtype"] is None else {"dtype": case["torch_dtype"]}
        model = case["cls"].from_pretrained(folder, device_map=strategy, max_memory={0: cap, "cpu": cpu},
                                            offload_folder=str(offload) if disk else None, **extra)
        # A model placed whole on one device has no hf_device_map: read where it is.
        whole = next(model.parameters()).device
        real = dict(getattr(model, "hf_device_map", None) or {"": 0 if whole.type == "cuda" else whole.type})
        misplaced = [n for n, p in model.named_parameters()
                     if _device_of(n, planned["device_map"]) == 0 and p.device.type != "cuda"]
        kept = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.dtype.itemsize == 1})
        del model
        torch.cuda.empty_cache()
    except Exception as exc:  # the real load refusing is an answer too
        real, misplaced, kept = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}, [], []
    same = real == planned["device_map"] and not misplaced
    devices = sorted({str(v) for v in planned["device_map"].values()})
    line = (f"- [{'x' if same else ' '}] {label}: verdict {planned['verdict']}, devices {', '.join(devices)}"
            + (f", 1-byte weights loaded as {', '.join(kept)}" if kept else "")
            + ("" if same else f"; real {json.dumps(real)[:300]}; plan "
               f"{json.dumps(planned['device_map'])[:300]}; misplaced {misplaced[:3]}"))
    return same, line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", type=Path, help="write the report (markdown) here, rewritten after every case")
    parser.add_argument("--models", default="gpt2,llama,t5,opt,fp8-llama,fp8-qwen3",
                        help="comma-separated subset to run")
    parser.add_argument("--jobs", type=int, default=1, help="cases run at once (each its own process)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_sweep: no CUDA device is visible; nothing was checked.")
        return 0
    import transformers

    lines = ["# plan-devices GPU sweep", "",
             f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"- device: {torch.cuda.get_device_name(0)} (compute capability "
             f"{'.'.join(map(str, torch.cuda.get_device_capability(0)))}); torch {torch.__version__}, transformers "
             f"{transformers.__version__}; {args.jobs} case(s) at once", ""]
    failures = 0
    done = 0
    with tempfile.TemporaryDirectory() as tmp_name:
        cases = cases_of(build_models(Path(tmp_name)), [name for name in args.models.split(",") if name])
        # spawn, not fork: a forked child of a process that has touched CUDA cannot use it.
        context = multiprocessing.get_context("spawn")
        with context.Pool(max(1, args.jobs)) as pool:
            for same, line in pool.imap(run_case, cases):
                done += 1
                failures += not same
                lines.append(line)
                print(line, flush=True)
                if args.report is not None:  # a run cut short by its time limit keeps what it saw
                    args.report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    lines += ["", f"**{done - failures} of {len(cases)} cases equal the real load**"]
    print(lines[-1])
    if args.report is not None:
        args.report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 1 if failures else 0


def _device_of(name: str, device_map: dict) -> object:
    """The device the map gives `name` (its longest listed prefix), None when none is listed."""
    from gpu_check import device_of  # scripts/ is on sys.path when this script runs

    try:
        return device_of(name, device_map)
    except KeyError:
        return None


if __name__ == "__main__":
    sys.exit(main())
