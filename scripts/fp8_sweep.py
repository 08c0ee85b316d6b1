"""Oracle sweep of plan-devices over fine-grained FP8 checkpoints (transformers' quant_method "fp8").

For tiny configs of many architectures that ship FP8 checkpoints (or could), each written as an FP8 checkpoint
by `fixtures.plan_devices.fp8_checkpoint`, compares `plan_devices(...).device_map` with the map transformers'
`from_pretrained(device_map=..., max_memory=...)` computes:

* `--dtype fp8` against `from_pretrained_device_map_on_fp8_gpus` (CUDA capability 9.0 mocked: FP8 kept);
* the default (bf16) against `from_pretrained_device_map` (this CPU-only machine: dequantized).

Strategies auto / balanced / balanced_low_0 / sequential, GPU budgets split 2-4 ways with a CPU budget, and
a disk case (no CPU budget). Config variants: modules_to_not_convert, weight_block_size null, activation_scheme
static, tied embeddings.

    PYTHONPATH=. .venv/bin/python scripts/fp8_sweep.py [--only NAME ...] [--quick] [--verbose] [--cli]

Prints one line per case (case / expected / got / verdict) and the counts; exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from sweep_common import print_table, quiet_libraries, summary

GB = 10**9
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def _configs() -> dict[str, Callable[[], Any]]:
    import transformers as T

    common = {"vocab_size": 1000, "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 256}
    moe = {"moe_intermediate_size": 256, "num_experts_per_tok": 2}
    ds = {"n_routed_experts": 4, "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1,
          "num_key_value_heads": 4, "q_lora_rank": 128, "kv_lora_rank": 128, "qk_rope_head_dim": 32,
          "qk_nope_head_dim": 32, "v_head_dim": 64}
    return {
        "llama": lambda: T.LlamaConfig(**common, intermediate_size=512, num_hidden_layers=4),
        "mistral": lambda: T.MistralConfig(**common, intermediate_size=512, num_hidden_layers=4),
        "qwen2": lambda: T.Qwen2Config(**common, intermediate_size=512, num_hidden_layers=4),
        "qwen3": lambda: T.Qwen3Config(**common, intermediate_size=512, num_hidden_layers=4, head_dim=64),
        "qwen3_moe": lambda: T.Qwen3MoeConfig(**common, **moe, intermediate_size=512, num_hidden_layers=4,
                                              head_dim=64, num_experts=4, mlp_only_layers=[0]),
        "qwen2_moe": lambda: T.Qwen2MoeConfig(**common, **moe, intermediate_size=512, num_hidden_layers=4,
                                              num_experts=4, shared_expert_intermediate_size=256),
        "deepseek_v2": lambda: T.DeepseekV2Config(**{**common, **ds, **moe}, intermediate_size=512,
                                                  num_hidden_layers=4, n_shared_experts=1, topk_method="greedy"),
        "deepseek_v3": lambda: T.DeepseekV3Config(**{**common, **ds, **moe}, intermediate_size=512,
                                                  num_hidden_layers=4),
        "mixtral": lambda: T.MixtralConfig(**common, intermediate_size=256, num_hidden_layers=4,
                                           num_local_experts=4, num_experts_per_tok=2),
        "phi3": lambda: T.Phi3Config(**common, intermediate_size=512, num_hidden_layers=4, pad_token_id=0),
        "gemma2": lambda: T.Gemma2Config(**common, intermediate_size=512, num_hidden_layers=4, head_dim=64),
        "gemma3_text": lambda: T.Gemma3TextConfig(**common, intermediate_size=512, num_hidden_layers=4,
                                                  head_dim=64),
        "glm4": lambda: T.Glm4Config(**common, intermediate_size=512, num_hidden_layers=4, head_dim=64,
                                      pad_token_id=0),
        "glm4_moe": lambda: T.Glm4MoeConfig(**common, **moe, intermediate_size=512, num_hidden_layers=4,
                                            head_dim=64, n_routed_experts=4, n_group=1, topk_group=1,
                                            first_k_dense_replace=1),
        "llama4_text": lambda: T.Llama4TextConfig(**common, intermediate_size=256, intermediate_size_mlp=512,
                                                  num_hidden_layers=4, head_dim=64, num_local_experts=4,
                                                  num_experts_per_tok=1, interleave_moe_layer_step=2),
        "olmoe": lambda: T.OlmoeConfig(**common, intermediate_size=256, num_hidden_layers=4, num_experts=4,
                                       num_experts_per_tok=2),
        "granitemoe": lambda: T.GraniteMoeConfig(**common, intermediate_size=256, num_hidden_layers=4,
                                                 num_local_experts=4, num_experts_per_tok=2),
        "minimax": lambda: T.MiniMaxConfig(**common, intermediate_size=256, num_hidden_layers=4, head_dim=64,
                                           num_local_experts=4, num_experts_per_tok=2,
                                           layer_types=["linear_attention", "full_attention"] * 2),
    }


FP8 = {"quant_method": "fp8", "weight_block_size": [128, 128], "activation_scheme": "dynamic"}
# (suffix, quantization_config, config attributes): run on the architectures in VARIANT_ARCHS.
VARIANTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("skip", {**FP8, "modules_to_not_convert": ["lm_head", "model.layers.0.self_attn", "mlp.gate"]}, {}),
    ("noblock", {**FP8, "weight_block_size": None}, {}),
    ("static", {**FP8, "activation_scheme": "static"}, {}),
    ("tied", dict(FP8), {"tie_word_embeddings": True}),
    ("fp16", dict(FP8), {"dtype": "float16"}),  # the config's dtype: the unquantized rest at fp16
    ("fp32", dict(FP8), {"dtype": "float32"}),
    # dequantized on every GPU: --dtype fp8 refused; the default plan equals both oracles' maps.
    ("dequantize", {**FP8, "dequantize": True}, {}),
    # FP8 embedding tables (FP8Embedding), kept in FP8 even where the rest is dequantized
    ("fp8embed", {**FP8, "modules_to_convert": ["embed_tokens"]}, {}),
    ("fp8embed-dequantize", {**FP8, "modules_to_convert": ["embed_tokens"], "dequantize": True}, {}),
]
VARIANT_ARCHS = ("llama", "qwen3_moe", "deepseek_v3", "mixtral")


def _budgets(total: int) -> list[tuple[str, list[int], int | None]]:
    return [
        ("2gpu+cpu", [total // 3, total // 3], 10 * GB),
        ("3gpu+cpu", [total // 2, total // 4, total // 4], 10 * GB),
        ("4gpu+cpu", [total // 5] * 4, 10 * GB),
        ("2gpu+disk", [total // 3, total // 4], None),
        ("2gpu-roomy+cpu", [total * 2 // 3] * 2, 10 * GB),
        ("4gpu-roomy+cpu", [total // 2] * 4, 10 * GB),
        ("3gpu-roomy+disk", [total // 2] * 3, None),
        ("2gpu-all", [total] * 2, 10 * GB),
    ]


def _short(device_map: dict[str, Any] | None) -> str:
    if device_map is None:
        return "-"
    counts: dict[str, int] = {}
    for device in device_map.values():
        counts[str(device)] = counts.get(str(device), 0) + 1
    return f"{len(device_map)} entries " + ",".join(f"{d}:{n}" for d, n in counts.items())


def _cli_map(folder: Path, dtype: str | None, strategy: str, gpus: list[int], cpu: int | None
             ) -> dict[str, Any] | None:
    """The device_map of `weightdoctor plan-devices FOLDER ... --json`, run as a user runs it."""
    import json
    import subprocess

    command = [sys.executable, "-m", "weightdoctor", "plan-devices", str(folder), "--strategy", strategy, "--json"]
    for size in gpus:
        command += ["--gpu", str(size)]
    command += ["--cpu", str(cpu)] if cpu is not None else ["--disk"]
    if dtype:
        command += ["--dtype", dtype]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        return json.loads(done.stdout)["device_map"]
    except (ValueError, KeyError):
        print(done.stderr[-500:], file=sys.stderr)
        return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", help="architectures (and variants: llama-skip) to run")
    parser.add_argument("--quick", action="store_true", help="auto and sequential only, two budgets")
    parser.add_argument("--verbose", action="store_true", help="print the differing entries of each mismatch")
    parser.add_argument("--cli", action="store_true",
                        help="also run the CLI (`plan-devices ... --json`, a subprocess) for the first budget of "
                             "each case, dtype and strategy, and compare its device_map")
    args = parser.parse_args()
    quiet_libraries()

    from fixtures.plan_devices import fp8_checkpoint, from_pretrained_device_map, from_pretrained_device_map_on_fp8_gpus
    from weightdoctor.errors import UsageError
    from weightdoctor.plan_devices import PlanRequest, build_planned_model, open_plan_source, plan_devices

    configs = _configs()
    cases: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [(n, n, dict(FP8), {}) for n in configs]
    cases += [(f"{n}-{s}", n, q, a) for n in VARIANT_ARCHS for s, q, a in VARIANTS]
    if args.only:
        cases = [c for c in cases if c[0] in args.only]
    counts = {"equal": 0, "different": 0, "error": 0}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case, arch, quantization, attrs in cases:
            try:
                config = configs[arch]()
                for key, value in attrs.items():
                    if key != "dtype":
                        setattr(config, key, value)
                folder = fp8_checkpoint(config, Path(tmp) / case, quantization,
                                        getattr(torch, attrs.get("dtype", "bfloat16")))
            except Exception as exc:  # noqa: BLE001 - a sweep reports and goes on
                rows.append((case, "-", "-", "-", f"SKIP checkpoint: {type(exc).__name__}: {str(exc)[:120]}"))
                continue
            for dtype in ("fp8", None):
                dequantize = bool(quantization.get("dequantize"))
                try:
                    with open_plan_source(str(folder)) as checkpoint:
                        planned = build_planned_model(checkpoint, dtype)
                except UsageError as exc:
                    refused = dequantize and dtype == "fp8" and "dequantize: true" in str(exc)
                    counts["equal" if refused else "error"] += 1
                    rows.append((f"{case}/fp8", "UsageError", "UsageError", "",
                                 "equal (refused)" if refused else f"ERROR plan: {exc}"[:200]))
                    continue
                except Exception as exc:  # noqa: BLE001
                    counts["error"] += 1
                    rows.append((case, dtype or "bf16", "-", "-", f"ERROR plan: {type(exc).__name__}: {exc}"[:200]))
                    continue
                total = sum(p.numel() * p.element_size() for p in planned.model.parameters())
                if dequantize and dtype == "fp8":
                    counts["different"] += 1
                    rows.append((f"{case}/fp8", "UsageError", "a plan", "", "DIFFERENT: not refused"))
                    continue
                oracles = [from_pretrained_device_map_on_fp8_gpus if dtype == "fp8" else from_pretrained_device_map]
                if dequantize:  # dequantized on FP8 GPUs as well
                    oracles.append(from_pretrained_device_map_on_fp8_gpus)
                budgets = _budgets(total)[::4] if args.quick else _budgets(total)
                for strategy in (("auto", "sequential") if args.quick else STRATEGIES):
                    for label, gpus, cpu in budgets:
                        memory: dict[int | str, int] = dict(enumerate(gpus))
                        if cpu is not None:
                            memory["cpu"] = cpu
                        for oracle in oracles:
                            name = f"{case}/{dtype or 'bf16'}/{strategy}/{label}"
                            if oracle is not oracles[0]:
                                name += "/on-fp8-gpus"
                            try:
                                expected = oracle(folder, strategy, memory)
                            except Exception as exc:  # noqa: BLE001
                                counts["error"] += 1
                                rows.append((name, "-", "-", "-", f"ERROR oracle: {type(exc).__name__}: {exc}"[:200]))
                                continue
                            try:
                                got = plan_devices(planned, PlanRequest(gpus=gpus, cpu=cpu, strategy=strategy,
                                                                        disk=True)).device_map
                            except Exception as exc:  # noqa: BLE001
                                counts["error"] += 1
                                rows.append((name, _short(expected), "-", "-", f"ERROR plan: {exc}"[:200]))
                                continue
                            same = got == expected
                            counts["equal" if same else "different"] += 1
                            verdict = "equal" if same else "DIFFERENT"
                            if not same and args.verbose:
                                keys = list(dict.fromkeys([*expected, *got]))
                                verdict += " " + "; ".join(f"{k}: {expected.get(k)} vs {got.get(k)}" for k in keys
                                                           if expected.get(k) != got.get(k))[:400]
                            rows.append((name, _short(expected), _short(got), "", verdict))
                        if args.cli and label == budgets[0][0]:
                            got = _cli_map(folder, dtype, strategy, gpus, cpu)
                            same = got == expected
                            counts["equal" if same else "different"] += 1
                            rows.append((name + "/cli", _short(expected), _short(got), "",
                                         "equal" if same else "DIFFERENT"))
    print_table(("case", "expected", "got", "verdict"), [(n, e, g, v) for n, e, g, _, v in rows], (None, 34, 34, None))
    return summary(counts)


if __name__ == "__main__":
    sys.exit(main())
