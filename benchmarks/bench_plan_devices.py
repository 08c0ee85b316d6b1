"""Benchmark: planning a 70B config with weightdoctor vs calling transformers' placement functions directly.

Usage: `PYTHONPATH=. python benchmarks/bench_plan_devices.py [--repeat 7]`

Everything runs in this one process, warm (imports and a first model build are done before timing), on the
published Llama-2-70B config (fixtures/configs/llama-2-70b):

- direct: read config.json, build the model on the meta device (`build_meta_model`), call
  `transformers.integrations.accelerate._get_device_map` (what from_pretrained calls) with the same budgets.
- weightdoctor: `open_plan_source` + `build_planned_model` + `plan_devices` (map, per-device use, module
  ranges, why-explanations, verdict).

When the model does not fit on the GPUs, weightdoctor also re-plans candidate changes (a lower dtype, more
GPUs) for the "smallest change" line: each is one more call of the same placement function. The second table
times that full default run against the direct calls of `_get_device_map` for exactly the same inputs
(recorded from weightdoctor's run), so both sides answer the same questions.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIG = Path(__file__).resolve().parent.parent / "fixtures" / "configs" / "llama-2-70b" / "config.json"
GB = 10**9
SCENARIOS: dict[str, tuple[list[int], int | None, str]] = {
    "2x80GB auto (fits)": ([80 * GB, 80 * GB], None, "auto"),
    "2x24GB + 200GB CPU auto (offload)": ([24 * GB, 24 * GB], 200 * GB, "auto"),
    "4x24GB + 80GB CPU balanced_low_0 (offload)": ([24 * GB] * 4, 80 * GB, "balanced_low_0"),
}


def median_times(first: Callable[[], object], second: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Medians of `repeat` timings of each, interleaved so that both see the same load on a shared machine."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # accelerate warns that the GPUs are absent on this machine

    from transformers.integrations.accelerate import _get_device_map

    import weightdoctor.plan_devices as wd
    from weightdoctor.meta_model import build_meta_model

    def build() -> Any:
        return build_meta_model(json.loads(CONFIG.read_text()), dtype="float16")

    def memory_of(gpus: list[int], cpu: int | None) -> dict[int | str, int]:
        memory: dict[int | str, int] = dict(enumerate(gpus))
        if cpu is not None:
            memory["cpu"] = cpu
        return memory

    def ours(gpus: list[int], cpu: int | None, strategy: str, suggest: bool) -> Any:
        with wd.open_plan_source(str(CONFIG)) as checkpoint:
            planned = wd.build_planned_model(checkpoint)
        request = wd.PlanRequest(gpus=gpus, cpu=cpu, strategy=strategy, disk=True, suggest=suggest)
        return wd.plan_devices(planned, request)

    def recorded_calls(gpus: list[int], cpu: int | None, strategy: str) -> list[tuple[dict, Any]]:
        """The (max_memory, size override) of every placement call weightdoctor's default run makes."""
        calls: list[tuple[dict, Any]] = []
        original = wd.place

        def spy(planned: Any, max_memory: dict, strategy: str, no_split: list[str], sizer: Any = None) -> Any:
            calls.append((dict(max_memory), sizer))
            return original(planned, max_memory, strategy, no_split, sizer)

        wd.place = spy
        try:
            ours(gpus, cpu, strategy, True)
        finally:
            wd.place = original
        return calls

    for gpus, cpu, strategy in SCENARIOS.values():  # warm-up
        _get_device_map(build(), strategy, memory_of(gpus, cpu), None)
        ours(gpus, cpu, strategy, True)

    print(f"Llama-2-70B config (69.0B parameters, fp16), median of {args.repeat} runs, seconds.")
    print("Machine: 2 shared cores, numbers are noisy.")
    print()
    print("Planning (map, per-device use, ranges, why-lines, verdict) vs build + one `_get_device_map`:")
    print()
    print("| scenario | direct | weightdoctor | ratio | verdict |")
    print("|---|---:|---:|---:|---|")
    for label, (gpus, cpu, strategy) in SCENARIOS.items():
        report = ours(gpus, cpu, strategy, False)
        assert report.device_map == _get_device_map(build(), strategy, memory_of(gpus, cpu), None)
        base, mine = median_times(
            lambda g=gpus, c=cpu, s=strategy: _get_device_map(build(), s, memory_of(g, c), None),
            lambda g=gpus, c=cpu, s=strategy: ours(g, c, s, False),
            args.repeat,
        )
        print(f"| {label} | {base:.4f} | {mine:.4f} | {mine / base:.2f}x | {report.verdict} |")

    print()
    print("Default run with the smallest-change re-plans vs build + the same `_get_device_map` calls:")
    print()
    print("| scenario | placement calls | direct | weightdoctor | ratio | suggestions |")
    print("|---|---:|---:|---:|---:|---|")
    for label, (gpus, cpu, strategy) in SCENARIOS.items():
        calls = recorded_calls(gpus, cpu, strategy)

        def direct_all(s: str = strategy, c: list = calls) -> None:
            model = build()
            for memory, sizer in c:
                _get_device_map(model, s, dict(memory), sizer)

        base, mine = median_times(direct_all, lambda g=gpus, c=cpu, s=strategy: ours(g, c, s, True), args.repeat)
        report = ours(gpus, cpu, strategy, True)
        changes = "; ".join(s.description for s in report.suggestions) or "-"
        print(f"| {label} | {len(calls)} | {base:.4f} | {mine:.4f} | {mine / base:.2f}x | {changes} |")

    print()
    print("Planning alone on one already built meta model (no build on either side; no re-plans):")
    print()
    print("| scenario | direct: `_get_device_map` | weightdoctor: `plan_devices` | ratio |")
    print("|---|---:|---:|---:|")
    with wd.open_plan_source(str(CONFIG)) as checkpoint:
        planned = wd.build_planned_model(checkpoint)
    for label, (gpus, cpu, strategy) in SCENARIOS.items():
        request = wd.PlanRequest(gpus=gpus, cpu=cpu, strategy=strategy, disk=True, suggest=False)

        def plan_once(r: Any = request) -> None:
            planned._cache.clear()  # the planned model caches its sizes: count them again every run
            wd.plan_devices(planned, r)

        base, mine = median_times(
            lambda g=gpus, c=cpu, s=strategy: _get_device_map(planned.model, s, memory_of(g, c), None),
            plan_once, args.repeat,
        )
        print(f"| {label} | {base:.4f} | {mine:.4f} | {mine / base:.2f}x |")


if __name__ == "__main__":
    main()
