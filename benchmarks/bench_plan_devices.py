"""Benchmark: planning a 70B config with weightdoctor vs calling transformers' placement functions directly.

Usage: `PYTHONPATH=. python benchmarks/bench_plan_devices.py [--repeat 7]`

Both sides run in this one process, warm (imports and the first model build done before timing):
- direct: read config.json, build the model on the meta device, call
  `transformers.integrations.accelerate._get_device_map` (what from_pretrained calls) once;
- weightdoctor: `open_plan_source` + `build_planned_model` + `plan_devices` (map, per-device use, ranges,
  why-explanations, verdict, and, when the model does not fit on the GPUs, the re-plans behind the
  "smallest change" suggestions).
A second table compares the planning step alone on an already built meta model.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

CONFIG = Path(__file__).resolve().parent.parent / "fixtures" / "configs" / "llama-2-70b" / "config.json"
GB = 10**9
SCENARIOS = {
    "2x80GB, fits": ([80 * GB, 80 * GB], None),
    "2x24GB + 200GB CPU, offload": ([24 * GB, 24 * GB], 200 * GB),
    "4x24GB + 80GB CPU, balanced_low_0": ([24 * GB] * 4, 80 * GB),
}


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # accelerate warns that GPU 0 is absent on this machine

    from transformers.integrations.accelerate import _get_device_map

    from weightdoctor.meta_model import build_meta_model
    from weightdoctor.plan_devices import PlanRequest, build_planned_model, open_plan_source, plan_devices

    def direct(gpus: list[int], cpu: int | None, strategy: str) -> dict:
        config = json.loads(CONFIG.read_text())
        model = build_meta_model(config, dtype="float16")
        memory: dict[int | str, int] = dict(enumerate(gpus))
        if cpu is not None:
            memory["cpu"] = cpu
        return _get_device_map(model, strategy, memory, None)

    def ours(gpus: list[int], cpu: int | None, strategy: str) -> object:
        with open_plan_source(str(CONFIG)) as checkpoint:
            planned = build_planned_model(checkpoint)
        return plan_devices(planned, PlanRequest(gpus=gpus, cpu=cpu, strategy=strategy, disk=True))

    for gpus, cpu in SCENARIOS.values():  # warm-up: imports, first build
        direct(gpus, cpu, "auto")
        ours(gpus, cpu, "auto")

    print(f"llama-2-70b config, median of {args.repeat} runs, seconds (2-core shared machine: noisy)")
    print()
    print("| scenario | direct: build + _get_device_map | weightdoctor: build + plan | ratio | verdict |")
    print("|---|---:|---:|---:|---|")
    for label, (gpus, cpu) in SCENARIOS.items():
        strategy = "balanced_low_0" if "balanced_low_0" in label else "auto"
        base = median_time(lambda g=gpus, c=cpu, s=strategy: direct(g, c, s), args.repeat)
        mine = median_time(lambda g=gpus, c=cpu, s=strategy: ours(g, c, s), args.repeat)
        verdict = ours(gpus, cpu, strategy).verdict  # type: ignore[attr-defined]
        assert ours(gpus, cpu, strategy).device_map == direct(gpus, cpu, strategy)  # type: ignore[attr-defined]
        print(f"| {label} | {base:.4f} | {mine:.4f} | {mine / base:.2f}x | {verdict} |")

    print()
    print("Planning alone, on one already built meta model:")
    print()
    print("| scenario | direct: _get_device_map | weightdoctor: plan_devices | ratio |")
    print("|---|---:|---:|---:|")
    with open_plan_source(str(CONFIG)) as checkpoint:
        planned = build_planned_model(checkpoint)
    for label, (gpus, cpu) in SCENARIOS.items():
        strategy = "balanced_low_0" if "balanced_low_0" in label else "auto"
        memory: dict[int | str, int] = dict(enumerate(gpus))
        if cpu is not None:
            memory["cpu"] = cpu
        base = median_time(lambda m=memory, s=strategy: _get_device_map(planned.model, s, dict(m), None), args.repeat)
        request = PlanRequest(gpus=gpus, cpu=cpu, strategy=strategy, disk=True)
        # The planned model caches its sizes; cleared so that every run counts them again.
        mine = median_time(lambda r=request: (planned._cache.clear(), plan_devices(planned, r)), args.repeat)
        print(f"| {label} | {base:.4f} | {mine:.4f} | {mine / base:.2f}x |")


if __name__ == "__main__":
    main()
