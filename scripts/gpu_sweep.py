"""GPU sweep for `weightdoctor plan-devices`: many plans against real `from_pretrained` loads on cuda:0.

Run from the repository root on a machine with a GPU (no network needed):

    PYTHONPATH=. python scripts/gpu_sweep.py [--report FILE]

For small random models of several architectures (GPT-2, Llama, T5, OPT; transformers, seeded), GPU budgets of
a quarter, a half and 80 % of the weights, the `auto` and `sequential` strategies, the checkpoint's dtype and
bf16, and a CPU budget small enough to push the rest to disk (`--models` picks a subset): the plan's
`device_map` must equal the `hf_device_map` of `from_pretrained(device_map=strategy, max_memory=..., dtype=...)`
really loading the model on cuda:0, and every parameter planned on the GPU must be there. One line per case;
exits 1 if any differs, 0 with a message when no CUDA device is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def build_models(root: Path) -> dict[str, tuple[Path, type, int]]:
    """name -> (folder, model class, fp32 weight bytes)."""
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
    return out


def plan(folder: Path, *args: str) -> tuple[int, dict, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "weightdoctor", "plan-devices", str(folder), *args, "--json"],
                          capture_output=True, text=True, env=env, cwd=REPO)
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else {}), proc.stderr.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", type=Path, help="write the report (markdown) here, rewritten after every case")
    parser.add_argument("--models", default="gpt2,llama,t5,opt", help="comma-separated subset to run")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_sweep: no CUDA device is visible; nothing was checked.")
        return 0
    import transformers

    lines = ["# plan-devices GPU sweep", "",
             f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"- device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}, transformers "
             f"{transformers.__version__}", ""]
    failures = 0
    cases = 0
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        chosen = set(args.models.split(","))
        for name, (folder, cls, weight_bytes) in build_models(tmp).items():
            if name not in chosen:
                continue
            for dtype_flag, torch_dtype, scale in (("fp32", torch.float32, 1.0), ("bf16", torch.bfloat16, 0.5)):
                for fraction in (0.25, 0.5, 0.8):
                    for strategy in ("auto", "sequential"):
                        for disk in (False, True):
                            if disk and (fraction != 0.5 or strategy != "auto"):
                                continue
                            cases += 1
                            cap = int(weight_bytes * scale * fraction)
                            cpu = int(weight_bytes * scale * 0.2) if disk else 10**9
                            flags = ["--gpu", str(cap), "--cpu", str(cpu), "--strategy", strategy,
                                     "--dtype", dtype_flag] + (["--disk"] if disk else [])
                            code, planned, err = plan(folder, *flags)
                            label = (f"{name} {dtype_flag} gpu={cap} cpu={cpu}{' disk' if disk else ''} "
                                     f"{strategy}")
                            if not planned:
                                failures += 1
                                lines.append(f"- [ ] {label}: plan-devices exit {code} {err[:200]}")
                                continue
                            offload = tmp / f"offload-{cases}"
                            try:
                                model = cls.from_pretrained(
                                    folder, device_map=strategy, dtype=torch_dtype,
                                    max_memory={0: cap, "cpu": cpu}, offload_folder=str(offload) if disk else None)
                                # A model placed whole on one device has no hf_device_map: read where it is.
                                whole = next(model.parameters()).device
                                real = dict(getattr(model, "hf_device_map", None)
                                            or {"": 0 if whole.type == "cuda" else whole.type})
                                misplaced = [n for n, p in model.named_parameters()
                                             if _device_of(n, planned["device_map"]) == 0 and p.device.type != "cuda"]
                                del model
                                torch.cuda.empty_cache()
                            except Exception as exc:  # the real load refusing is an answer too
                                real, misplaced = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}, []
                            same = real == planned["device_map"] and not misplaced
                            failures += not same
                            devices = sorted({str(v) for v in planned["device_map"].values()})
                            lines.append(f"- [{'x' if same else ' '}] {label}: verdict {planned['verdict']}, "
                                         f"devices {', '.join(devices)}"
                                         + ("" if same else f"; real {json.dumps(real)[:300]}; plan "
                                            f"{json.dumps(planned['device_map'])[:300]}; misplaced {misplaced[:3]}"))
                            print(lines[-1], flush=True)
                            if args.report is not None:  # a run cut short by its time limit keeps what it saw
                                args.report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    lines += ["", f"**{cases - failures} of {cases} cases equal the real load**"]
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
