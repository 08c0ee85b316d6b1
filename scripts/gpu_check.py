"""GPU check for `weightdoctor plan-devices`: the plan against what really happens on a CUDA machine.

Run from the repository root on a machine with a GPU (no network needed):

    PYTHONPATH=. python scripts/gpu_check.py [--report docs/gpu-check-plan-devices.md]

1. Builds a small random GPT-2 (transformers, seeded) in a temporary folder.
2. Plans it with `weightdoctor plan-devices --gpu CAP --cpu 1GB --json --output map.json`, CAP about half
   the model, so that the plan splits it between cuda:0 and the CPU.
3. Loads it with `from_pretrained(device_map="auto", max_memory=...)` and checks `model.hf_device_map`
   equals the plan, module for module.
4. Loads it with `from_pretrained(device_map=json.load(map.json))` and checks every parameter's real device
   against the plan (GPU-planned parameters on cuda; CPU-offloaded ones live in accelerate's hooks and
   show `meta`), then runs a forward pass with inputs on cuda:0 and compares with the CPU model.
5. Runs `plan-devices --local --json` and checks its reading of the GPU (free memory, bf16 support, dtype).

Exits 0 when every check passes, 1 when one fails, and 0 with a message when there is no CUDA device.
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


def run_plan(*args: str) -> tuple[int, dict, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "weightdoctor", "plan-devices", *args, "--json"],
                          capture_output=True, text=True, env=env, cwd=REPO)
    data = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, data, proc.stderr


def device_of(name: str, device_map: dict) -> object:
    parts = name.split(".")
    for end in range(len(parts), -1, -1):
        key = ".".join(parts[:end])
        if key in device_map:
            return device_map[key]
    raise KeyError(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", type=Path, help="also write the report (markdown) to this file")
    args = parser.parse_args()

    import torch

    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); nothing was checked.")
        return 0

    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        say(f"- [{'x' if ok else ' '}] {what}")
        if not ok:
            failures.append(what)

    say("# plan-devices GPU check")
    say("")
    say(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    say(f"- device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}, transformers "
        f"{transformers.__version__}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=1000, n_embd=256, n_layer=8, n_head=4, n_positions=128)
        folder = tmp / "tiny-gpt2"
        GPT2LMHeadModel(config).eval().save_pretrained(folder)
        model_bytes = sum(p.numel() * p.element_size() for p in GPT2LMHeadModel(config).parameters())
        cap = model_bytes // 2
        say(f"- model: GPT-2, 8 layers x 256, {model_bytes} bytes of fp32 weights; GPU cap {cap} bytes")
        say("")

        map_path = tmp / "map.json"
        code, plan, err = run_plan(str(folder), "--gpu", str(cap), "--cpu", "1GB", "--output", str(map_path))
        check(code == 0 and bool(plan), f"plan-devices ran (exit {code}) {err.strip()[:200]}")
        if not plan:
            return finish(lines, failures, args.report)
        planned = plan["device_map"]
        say(f"- plan: verdict {plan['verdict']}; " + ", ".join(
            f"{d['device']} {d['used_bytes']} of {d['capacity_bytes']}" for d in plan["devices"]))
        check({0, "cpu"} <= set(planned.values()), "the plan splits the model between cuda:0 and cpu")

        auto = GPT2LMHeadModel.from_pretrained(folder, device_map="auto", max_memory={0: cap, "cpu": 10**9})
        check(dict(auto.hf_device_map) == planned,
              "from_pretrained(device_map='auto', max_memory=...).hf_device_map equals the plan, module for module")
        del auto
        torch.cuda.empty_cache()

        loaded = GPT2LMHeadModel.from_pretrained(folder, device_map=json.loads(map_path.read_text()))
        wrong = []
        on_gpu = 0
        for name, param in loaded.named_parameters():
            want = device_of(name, planned)
            if want == 0:
                on_gpu += param.numel() * param.element_size()
                if param.device.type != "cuda":
                    wrong.append(f"{name}: planned cuda:0, is {param.device}")
            elif param.device.type not in ("meta", "cpu"):
                wrong.append(f"{name}: planned {want}, is {param.device}")
        check(not wrong, f"every parameter is where the plan put it ({len(wrong)} misplaced) {wrong[:3]}")
        planned_gpu = next(d["used_bytes"] for d in plan["devices"] if d["device"] == "cuda:0")
        check(on_gpu <= planned_gpu, f"bytes of parameters on cuda:0 ({on_gpu}) within the plan's {planned_gpu}")
        ids = torch.tensor([[1, 2, 3, 4, 5]])
        reference = GPT2LMHeadModel.from_pretrained(folder).eval()
        with torch.no_grad():
            split_logits = loaded(ids.to("cuda:0")).logits.float().cpu()
            cpu_logits = reference(ids).logits
        check(torch.allclose(split_logits, cpu_logits, atol=1e-3, rtol=1e-3),
              f"forward pass split over cuda:0 + cpu matches the CPU model (max diff "
              f"{(split_logits - cpu_logits).abs().max().item():.2e})")
        del loaded
        torch.cuda.empty_cache()

        free_before = torch.cuda.mem_get_info(0)[0]
        code, local, err = run_plan(str(folder), "--local")
        free_after = torch.cuda.mem_get_info(0)[0]
        check(code == 0 and bool(local), f"plan-devices --local ran (exit {code}) {err.strip()[:200]}")
        if local:
            read = local["local"]["gpu_free_bytes"]
            say(f"- --local read: GPUs {local['local']['gpu_names']} free {read}; torch here: {free_before} / "
                f"{free_after}; RAM {local['local']['cpu_available_bytes']}")
            check(len(read) == torch.cuda.device_count(), "--local sees every visible GPU")
            low, high = min(free_before, free_after), max(free_before, free_after)
            check(bool(read) and low * 0.95 <= read[0] <= high * 1.05 + 2**30,
                  "--local's free memory of cuda:0 agrees with torch.cuda.mem_get_info (a separate process)")
            check(local["local"]["bf16_supported"] == torch.cuda.is_bf16_supported(), "--local reads bf16 support")
            expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            check(local["dtype"] == expected, f"--local chooses {expected} on this GPU (chose {local['dtype']})")
            check(local["verdict"] == "fits-on-gpus", "the tiny model fits on the GPU")
    return finish(lines, failures, args.report)


def finish(lines: list[str], failures: list[str], report: Path | None) -> int:
    lines.append("")
    lines.append(f"**{'all checks passed' if not failures else f'{len(failures)} check(s) failed'}**")
    print(lines[-1])
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
