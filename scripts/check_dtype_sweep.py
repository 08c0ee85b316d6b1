"""Oracle sweep of `weightdoctor check-dtype` and of the `convert` command it suggests, across architectures.

For tiny seeded models of 41 families (decoder LMs with tied and untied embeddings, MoE, encoders, T5 with its
`_keep_in_fp32_modules`, seq2seq, vision with BatchNorm buffers, audio, multimodal), values are planted in the
weights before saving: 70000 and 65520 (fp16 overflows), -65519.99 (rounds to -65504: clamped within rounding),
-0.0, 3.4e38 (beyond bf16's max; in the sharded forms and cfg-fp16), a matrix scaled into fp16's subnormal range,
one scaled below fp16's smallest subnormal (mass underflow), NaN / ±inf already in the source (an untied bias, or
a matrix), 1e5 in a norm weight, in T5's `wo` and in BatchNorm's `running_var`, 80000 in a tied input embedding.
Each model is saved as

* `st`: `save_pretrained` (one safetensors file); `st-sharded`: `save_pretrained(max_shard_size=...)`;
* `bin`, `bin-sharded`: `torch.save` of the state dict (tied names kept as one storage), one file and split by
  huggingface_hub's `split_torch_state_dict_into_shards` with a v4 index, as transformers 4 wrote them;
* `bf16`: the planted model cast to bfloat16, then saved (a bf16 source checked for fp16 and fp8);
  `bf16-nodtype`: the same with no dtype in `config.json` (dtype="auto" goes by the weights);
* `cfg-fp16`: stored float32, `config.json` saying float16 (from_pretrained(dtype="auto") loads it in fp16);
* `ckpt-ema`: a training checkpoint, other weights under `model`, the planted ones under `ema`, an optimizer and a
  step beside them, checked with `--key ema` (torch's counts and keep_fp32 as above; the suggested convert must
  write the EMA weights, cast or kept in float32, and nothing else).

For each case `weightdoctor check-dtype SRC --json --local --target fp16,bf16,fp8_e4m3,fp8_e5m2,fp32` runs
in-process and is compared with:

* torch: every tensor read with safetensors / torch.load, cast with `.to(dtype)`, compared in float64 (values,
  overflow, clamped, underflow, subnormal, changed, NaN, inf, infs not kept, max relative error), and the verdict by
  the documented rule (unsafe: an overflow, a clamp with more error than rounding, an inf not kept as inf, >= 1% of
  the non-zero finite values flushed; lossy: anything changed); per tensor, per target and summed; tied names cast
  once; integer tensors listed as skipped; each target's memory_bytes;
* the same command on the folder's index (sharded) or its weight file: the same figures; the suggested output of
  an index lies outside the model folder;
* `--fail-on unsafe` / `--fail-on lossy` exit codes against the oracle's verdicts;
* `keep_fp32`: the names its regex matches are exactly the unsafe tensors (a tied name: one per storage), and
  `keep_fp32_memory_bytes` is what those in fp32, the rest at the target, make;
* `local.auto_dtype` against the dtype `from_pretrained(SRC, dtype="auto")` really loads in;
* `from_pretrained(SRC, dtype=torch.float16)`: `kept_fp32_at_load` equals the tensors transformers keeps in fp32
  (`_keep_in_fp32_modules`), and every other tensor gains exactly check-dtype's fp16 overflow in inf/NaN (per name
  where the loader keeps the checkpoint's names, and over the whole model whatever names it gives: fused MoE
  experts, LLaVA's renamed keys); under a float16 config the line "from_pretrained(dtype='auto') ... hits exactly
  this" (or "in k of n", or "does not hit this") against what `from_pretrained(dtype="auto")` gains;
* end to end, for fp16 and bf16: plain `convert --dtype` refuses (exit 2, nothing written) exactly when
  check-dtype says the target is unsafe; the `convert` command check-dtype suggests runs, `kept_fp32` covers every
  unsafe tensor, the output holds no inf/NaN the source lacked, `from_pretrained` loads it with the source's
  loading info, and what it then holds (the target everywhere but `_keep_in_fp32_modules`: the overflow comes
  back) is what the suggestion's own clause says. A safe or lossy target is converted plainly and checked the
  same way.

docs/check-dtype-sweep.md has the figures.

    PYTHONPATH=. .venv/bin/python scripts/check_dtype_sweep.py [--only ARCH ...] [--quick] [--verbose]

Prints one line per case (case / checks made / verdicts fp16 bf16 fp8_e4m3 / result) and the counts; exits 1 on
any difference.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import shlex
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from sweep_common import print_table, quiet_libraries

SEED = 0
TARGETS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp8_e4m3": torch.float8_e4m3fn,
           "fp8_e5m2": torch.float8_e5m2, "fp32": torch.float32}
VERDICTS = ("safe", "lossy", "unsafe")
FORMS = ("st", "st-sharded", "bin", "bin-sharded", "bf16", "bf16-nodtype", "cfg-fp16", "ckpt-ema")
QUICK_FORMS = ("st", "bin", "cfg-fp16", "ckpt-ema")
BEYOND_BF16_FORMS = ("st-sharded", "bin-sharded", "cfg-fp16")  # bf16 unsafe there; lossy in the other fp32 forms
QUICK_ARCHS = ("llama-tied", "t5", "resnet", "qwen2_moe")
NORM = re.compile(r"(norm|ln|layer_norm|LayerNorm)[^.]*\.weight$|\.ln_\w+\.weight$")


class Failure(Exception):
    """A difference between weightdoctor and an oracle."""


def _models() -> dict[str, Callable[[], torch.nn.Module]]:
    """roundtrip_sweep's 37 tiny models, plus BatchNorm vision models and configs that name a dtype."""
    import transformers as T
    from roundtrip_sweep import _models as roundtrip_models

    models = dict(roundtrip_models())
    dec = {"vocab_size": 500, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
           "num_attention_heads": 4, "max_position_embeddings": 128}
    models.update({
        "resnet": lambda: T.ResNetForImageClassification(T.ResNetConfig(
            embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], num_labels=3)),
        "regnet": lambda: T.RegNetForImageClassification(T.RegNetConfig(
            embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8, num_labels=3)),
        "mobilenet_v2": lambda: T.MobileNetV2ForImageClassification(T.MobileNetV2Config(
            depth_multiplier=0.25, image_size=32, num_labels=3)),
        "qwen3_moe": lambda: T.Qwen3MoeForCausalLM(T.Qwen3MoeConfig(
            **dec, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
            head_dim=16)),
    })
    return models


# ---------------------------------------------------------------- planting and saving


def plant(model: torch.nn.Module) -> dict[str, str]:
    """Write the edge values into the model in place (tied parameters stay tied); returns tensor -> what."""
    planted: dict[str, str] = {}
    params = [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]
    try:
        tied_input, tied_output = model.get_input_embeddings(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):  # vision models have no embeddings to tie
        tied_input = tied_output = None
    embedding_ids = {id(m.weight) for m in (tied_input, tied_output) if m is not None and hasattr(m, "weight")}
    matrices = [(n, p) for n, p in params if p.dim() >= 2 and p.numel() >= 64 and id(p) not in embedding_ids
                and not n.endswith(".wo.weight")]
    norms = [(n, p) for n, p in params if p.dim() == 1 and NORM.search(n)]
    # NaN in a tied bias (XLM-R's lm_head.bias ≡ lm_head.decoder.bias in a .bin): transformers compares the two
    # names' values to decide whether to tie them, NaN != NaN, and it loads them untied; not planted there.
    names_of: Counter[int] = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    biases = [(n, p) for n, p in params if p.dim() == 1 and n.endswith(".bias") and p.numel() >= 4
              and names_of[id(p)] == 1]
    with torch.no_grad():
        if len(matrices) < 4:
            raise RuntimeError(f"only {len(matrices)} matrices to plant into")
        name, m = matrices[0]
        flat = m.view(-1)
        flat[0], flat[1], flat[2], flat[3] = 70000.0, -65519.99, 65520.0, -0.0
        planted[name] = "70000, -65519.99, 65520, -0.0"
        name, m = matrices[1]
        m.mul_(1e-3)
        planted[name] = "x1e-3 (fp16 subnormal range)"
        name, m = matrices[2]
        m.mul_(3e-6)
        planted[name] = "x3e-6 (below fp16's smallest subnormal)"
        name, m = biases[0] if biases else matrices[3]
        flat = m.view(-1)
        flat[0], flat[1], flat[2], flat[3] = float("nan"), float("inf"), float("-inf"), -0.0
        planted[name] = "NaN, inf, -inf, -0.0 in the source"
        if norms:
            name, m = norms[-1]
            m.view(-1)[0] = 1e5
            planted[name] = "1e5 in a norm"
        for name, p in params:
            if name.endswith(".wo.weight"):  # T5's _keep_in_fp32_modules
                p.view(-1)[0] = 1e5
                planted[name] = "1e5 in a _keep_in_fp32_modules weight"
                break
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.view(-1)[0] = 2e5
                planted[name] = "2e5 in running_var"
                break
        if tied_input is not None and tied_output is not None and getattr(tied_output, "weight", None) is \
                getattr(tied_input, "weight", 0):
            tied_input.weight.view(-1)[5] = 80000.0
            planted["<tied embedding>"] = "80000 in a tied embedding"
    return planted


def save_form(model: torch.nn.Module, form: str, folder: Path, big: str | None = None) -> Path:
    """Save `model` in one of FORMS under `folder`; in BEYOND_BF16_FORMS, with 3.4e38 (finite in fp32, beyond
    bf16's max) at [4] of the tensor `big`."""
    if form in BEYOND_BF16_FORMS and big is not None:
        model = copy.deepcopy(model)
        with torch.no_grad():
            model.get_parameter(big).view(-1)[4] = 3.4e38
    if form in ("bf16", "bf16-nodtype"):
        model = copy.deepcopy(model).to(torch.bfloat16)  # the planted fp32 model stays as it is for other forms
    if form in ("st", "bf16", "cfg-fp16", "bf16-nodtype"):
        model.save_pretrained(folder)
    elif form == "st-sharded":
        total = sum(t.nbytes for t in model.state_dict().values())
        model.save_pretrained(folder, max_shard_size=max(total // 3, 1024))
    elif form == "bin":
        model.save_pretrained(folder)
        (folder / "model.safetensors").unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    elif form == "bin-sharded":  # as transformers 4 sharded a .bin: huggingface_hub's split, a v4 index
        from huggingface_hub import split_torch_state_dict_into_shards

        model.save_pretrained(folder)
        (folder / "model.safetensors").unlink()
        state = model.state_dict()
        total = sum(t.nbytes for t in state.values())
        split = split_torch_state_dict_into_shards(state, filename_pattern="pytorch_model{suffix}.bin",
                                                   max_shard_size=max(total // 3, 1024))
        for filename, names in split.filename_to_tensors.items():
            torch.save({n: state[n] for n in names}, folder / filename)
        index = {"metadata": {"total_size": split.metadata["total_size"]}, "weight_map": split.tensor_to_filename}
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))
    if form in ("cfg-fp16", "bf16-nodtype"):
        config = json.loads((folder / "config.json").read_text())
        if form == "cfg-fp16":
            config["dtype"] = "float16"
        else:  # no dtype in config.json: dtype="auto" goes by the first floating tensor of the weights
            config.pop("dtype", None)
            config.pop("torch_dtype", None)
            for sub in config.values():
                if isinstance(sub, dict):
                    sub.pop("dtype", None)
                    sub.pop("torch_dtype", None)
        (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's weight files, as the libraries read them (tied .bin names share storage)."""
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(path))
    for path in sorted(folder.glob("*.bin")):
        tensors.update(torch.load(path, weights_only=True))
    return tensors


# ---------------------------------------------------------------- the torch oracle


def oracle_counts(x: torch.Tensor, dtype: torch.dtype) -> dict[str, Any]:
    """What `.to(dtype)` does to `x`, counted in float64 independently of weightdoctor's code."""
    info = torch.finfo(dtype)
    wide = x.to(torch.float64).reshape(-1)
    y = x.reshape(-1).to(dtype).to(torch.float64)
    finite_x = torch.isfinite(wide)
    nonzero = finite_x & (wide != 0)
    finite_y = torch.isfinite(y)
    overflow = int((finite_x & ~finite_y).sum())
    beyond = finite_x & finite_y & (wide.abs() > info.max)
    rel = ((y - wide).abs() / wide.abs())[nonzero & finite_y]
    sat_rel = ((y - wide).abs() / wide.abs())[beyond]
    underflow = int((nonzero & (y == 0)).sum())
    counts = {
        "values": wide.numel(),
        "nan": int(torch.isnan(wide).sum()),
        "inf": int(torch.isinf(wide).sum()),
        "overflow": overflow,
        "saturated": int(beyond.sum()),
        "underflow": underflow,
        "subnormal": int(((y != 0) & (y.abs() < info.smallest_normal)).sum()),
        "changed": int(((y != wide) & ~(torch.isnan(y) & torch.isnan(wide))).sum()),
        "max_rel_error": float(rel.max()) if rel.numel() else 0.0,
    }
    # an inf the cast does not keep as inf (fp8_e4m3fn: ±448; fnuz: NaN) is unsafe too
    inf_lost = int((torch.isinf(wide) & (y != wide)).sum())
    counts["inf_lost"] = inf_lost
    reasons = overflow or inf_lost or (sat_rel.numel() and float(sat_rel.max()) > info.eps) or (
        int(nonzero.sum()) and underflow / int(nonzero.sum()) >= 0.01)
    counts["verdict"] = "unsafe" if reasons else ("lossy" if counts["changed"] else "safe")
    return counts


def unique_storages(tensors: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """First name -> every name of one storage (tied names of a .bin)."""
    groups: dict[tuple[int, int, tuple[int, ...]], list[str]] = {}
    for name, t in tensors.items():
        groups.setdefault((t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)), []).append(name)
    return {names[0]: names for names in groups.values()}


# ---------------------------------------------------------------- running weightdoctor


def run_cli(args: list[str]) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from weightdoctor.cli import app

    result = CliRunner().invoke(app, args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise Failure(f"weightdoctor {args[0]} raised {type(result.exception).__name__}: {result.exception}")
    return result.exit_code, result.stdout, result.stderr or ""


def check_dtype_json(source: Path, *extra: str) -> dict[str, Any]:
    code, out, err = run_cli(["check-dtype", str(source), "--json", *extra])
    if code != 0:
        raise Failure(f"check-dtype exit {code}: {err.strip()[-300:]}")
    return json.loads(out)


# ---------------------------------------------------------------- the comparisons


def compare_counts(report: dict[str, Any], source: dict[str, torch.Tensor], stats: Counter[str]) -> dict[str, Any]:
    """Per tensor and target, check-dtype's figures against torch's; returns the oracle's verdicts."""
    groups = unique_storages(source)
    name_to_first = {n: first for first, names in groups.items() for n in names}
    floating = {first: source[first] for first in groups if source[first].is_floating_point()}
    skipped = {s["name"] for s in report["skipped"]}
    expected_skipped = {first for first in groups if not source[first].is_floating_point()}
    if {name_to_first.get(n, n) for n in skipped} != expected_skipped:
        raise Failure(f"skipped {sorted(skipped)[:4]} != not floating {sorted(expected_skipped)[:4]}")
    if report["tensors_checked"] != len(floating):
        raise Failure(f"tensors_checked {report['tensors_checked']} != {len(floating)} floating storages")
    verdicts: dict[str, dict[str, dict[str, Any]]] = {}
    for target, dtype in TARGETS.items():
        got = report["targets"][target]
        rows = {name_to_first.get(r["name"], r["name"]): r for r in got["tensors"]}
        if set(rows) != set(floating) or len(got["tensors"]) != len(floating):
            raise Failure(f"{target}: tensors reported {len(got['tensors'])} != {len(floating)} storages")
        oracle = {first: oracle_counts(t, dtype) for first, t in floating.items()}
        verdicts[target] = oracle
        for first, want in oracle.items():
            row = rows[first]
            for key, value in want.items():
                if key == "max_rel_error":
                    if not math.isclose(row[key], value, rel_tol=1e-5, abs_tol=1e-9):
                        raise Failure(f"{target} {first}: max_rel_error {row[key]} != torch's {value}")
                elif row[key] != value:
                    raise Failure(f"{target} {first}: {key} {row[key]} != torch's {value}")
            stats["tensor figures"] += 1
        for key in ("values", "overflow", "saturated", "underflow", "subnormal", "changed"):
            total = sum(o[key] for o in oracle.values())
            if got[key] != total:
                raise Failure(f"{target}: total {key} {got[key]} != torch's {total}")
        worst = max((o["verdict"] for o in oracle.values()), key=VERDICTS.index, default="safe")
        unsafe = sum(o["verdict"] == "unsafe" for o in oracle.values())
        if got["verdict"] != worst or got["tensors_unsafe"] != unsafe:
            raise Failure(f"{target}: verdict {got['verdict']} ({got['tensors_unsafe']} unsafe) != "
                          f"{worst} ({unsafe})")
        stats["target verdicts"] += 1
        # what convert --dtype would write: every floating storage at the target's size, the others as stored
        memory = sum(t.numel() * dtype.itemsize if t.is_floating_point() else t.nbytes
                     for t in (source[first] for first in groups))
        if got["memory_bytes"] != memory:
            raise Failure(f"{target}: memory_bytes {got['memory_bytes']} != {memory}")
    return verdicts


def compare_keep_fp32(report: dict[str, Any], source: dict[str, torch.Tensor],
                      verdicts: dict[str, dict[str, dict[str, Any]]], stats: Counter[str]) -> None:
    """The suggested regex matches exactly the unsafe storages; its memory is what convert would write."""
    groups = unique_storages(source)
    for target in ("fp16", "bf16"):
        got = report["targets"][target]
        unsafe = {first for first, o in verdicts[target].items() if o["verdict"] == "unsafe"}
        regex = got["keep_fp32"]
        if not unsafe:
            if regex is not None or target in report["recommendation"]["commands"]:
                raise Failure(f"{target}: keep_fp32 {regex!r} with nothing unsafe")
            continue
        if regex is None or target not in report["recommendation"]["commands"]:
            raise Failure(f"{target}: {len(unsafe)} unsafe tensor(s) but no keep_fp32 / command")
        matched = {n for n in source if re.search(regex, n)}
        matched_storages = {first for first, names in groups.items() if set(names) & matched}
        if matched_storages != unsafe:
            raise Failure(f"{target}: keep_fp32 matches {sorted(matched_storages)} != unsafe {sorted(unsafe)}")
        size = TARGETS[target].itemsize
        memory = sum(t.nbytes if not t.is_floating_point() else t.numel() * (4 if first in matched_storages
                                                                               else size)
                     for first, t in ((f, source[f]) for f in groups))
        if got["keep_fp32_memory_bytes"] != memory:
            raise Failure(f"{target}: keep_fp32_memory_bytes {got['keep_fp32_memory_bytes']} != {memory}")
        stats["keep_fp32 regexes"] += 1


def fail_on_codes(folder: Path, verdicts: dict[str, dict[str, dict[str, Any]]], stats: Counter[str]) -> None:
    worst = max((o["verdict"] for o in verdicts["fp16"].values()), key=VERDICTS.index)
    for level in ("unsafe", "lossy"):
        code, _, err = run_cli(["check-dtype", str(folder), "--target", "fp16", "--fail-on", level, "--json"])
        want = 1 if VERDICTS.index(worst) >= VERDICTS.index(level) else 0
        if code != want:
            raise Failure(f"--fail-on {level}: exit {code}, fp16 is {worst}: want {want} {err.strip()[-200:]}")
        stats["exit codes"] += 1


def compare_entry_points(folder: Path, report: dict[str, Any], stats: Counter[str]) -> None:
    """The index of a sharded form, and a single weight file, give the folder's figures; the suggested convert
    writes beside the model folder, never inside it."""
    entries = sorted(folder.glob("*.index.json")) or sorted(folder.glob("*.safetensors")) or sorted(
        folder.glob("*.bin"))
    for entry in entries[:1]:
        other = check_dtype_json(entry, "--target", ",".join(TARGETS))
        for target in TARGETS:
            ours = {r["name"]: r for r in report["targets"][target]["tensors"]}
            theirs = {r["name"]: r for r in other["targets"][target]["tensors"]}
            if ours != theirs:
                raise Failure(f"check-dtype {entry.name} ({target}) differs from the folder's")
        for command in other["recommendation"]["commands"].values():
            output = Path(shlex.split(command)[4]).resolve()
            if entry.name.endswith(".index.json") and (output == folder or folder in output.parents):
                raise Failure(f"suggested output {output} of {entry.name} is inside the source folder")
        stats["entry points"] += 1


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype most parameters are loaded in (a class's fp32 modules aside)."""
    return Counter(p.dtype for p in model.parameters() if p.is_floating_point()).most_common(1)[0][0]


def new_nonfinite(loaded: torch.nn.Module, source: dict[str, torch.Tensor]) -> dict[str, int]:
    """Tensor -> values finite in the source that the loaded model holds as inf/NaN."""
    out = {}
    for name, t in loaded.state_dict().items():
        src = source.get(name)
        if src is None or not t.is_floating_point() or src.shape != t.shape:
            continue
        gained = int((torch.isfinite(src) & ~torch.isfinite(t.detach())).sum())
        if gained:
            out[name] = gained
    return out


def nonfinite_total(tensors: dict[str, torch.Tensor]) -> int:
    """inf/NaN values over the floating tensors, one storage once (tied names)."""
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    total = 0
    for t in tensors.values():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if t.is_floating_point() and key not in seen:
            seen.add(key)
            total += int((~torch.isfinite(t.detach())).sum())
    return total


def check_total(loaded: torch.nn.Module, source: dict[str, torch.Tensor], report: dict[str, Any], target: str,
                kept: list[str] | None, what: str, stats: Counter[str]) -> None:
    """Over the whole model, whatever names its loader gives the tensors (a fused MoE, LLaVA's renamed keys): the
    inf/NaN loaded are the source's plus check-dtype's overflow at `target` outside the tensors kept in fp32."""
    rows = report["targets"][target]["tensors"]
    expected = nonfinite_total(source) + sum(r["overflow"] for r in rows if r["name"] not in set(kept or ()))
    got = nonfinite_total(loaded.state_dict())
    if got != expected:
        raise Failure(f"{what}: {got} inf/NaN loaded, expected {expected} (the source's {nonfinite_total(source)} "
                      f"plus check-dtype's {target} overflow outside the fp32-kept tensors)")
    stats["whole-model inf/NaN totals"] += 1


def compare_loads(model_class: type, folder: Path, report: dict[str, Any], source: dict[str, torch.Tensor],
                  notes: list[str], stats: Counter[str]) -> set[str]:
    """auto dtype and what from_pretrained(dtype=fp16) keeps in fp32 and overflows; returns the names kept."""
    auto = model_class.from_pretrained(folder, dtype="auto")
    want = str(_model_dtype(auto)).removeprefix("torch.")
    got = (report["local"] or {}).get("auto_dtype", {}).get("dtype")
    if got != want:
        raise Failure(f"auto_dtype {got} != from_pretrained(dtype='auto') {want}")
    stats["auto dtypes"] += 1
    half = model_class.from_pretrained(folder, dtype=torch.float16)
    kept = {n for n, t in half.state_dict().items() if t.dtype == torch.float32}
    rows = {r["name"]: r for r in report["targets"]["fp16"]["tensors"]}
    groups = unique_storages(source)
    name_to_first = {n: first for first, names in groups.items() for n in names}
    gained = new_nonfinite(half, source)
    check_total(half, source, report, "fp16", report["targets"]["fp16"].get("kept_fp32_at_load"),
                "from_pretrained(dtype=fp16)", stats)
    for name, t in half.state_dict().items():
        first = name_to_first.get(name)
        if first is None or not t.is_floating_point():
            continue
        row = rows.get(first) or next((rows[n] for n in groups[first] if n in rows), None)
        if row is None:
            raise Failure(f"{name} loaded, not in check-dtype's fp16 rows")
        expected = 0 if name in kept else row["overflow"]
        if gained.get(name, 0) != expected:
            raise Failure(f"from_pretrained(dtype=fp16) {name} ({t.dtype}): {gained.get(name, 0)} new inf/NaN, "
                          f"check-dtype overflow {row['overflow']}")
        stats["fp16 loads per tensor"] += 1
    # kept_fp32_at_load (given for an unsafe fp16 beside a config) against what from_pretrained kept in fp32
    said = report["targets"]["fp16"].get("kept_fp32_at_load")
    really = sorted(n for n in kept if n in source and source[n].is_floating_point())
    if report["targets"]["fp16"]["verdict"] == "unsafe" and said is None:
        raise Failure("fp16 unsafe beside a config, but no kept_fp32_at_load")
    if said is not None and sorted(said) != really:
        raise Failure(f"kept_fp32_at_load {said} != from_pretrained(dtype=fp16) kept {really}")
    stats["kept fp32 at load"] += 1
    # The recommendation's line for a config whose dtype is the target: "from_pretrained(dtype='auto') loads these
    # weights as float16 and hits exactly this" (or in k of n, or not); measured: what from_pretrained gains.
    declared = [line for line in report["recommendation"]["lines"]
                if line.startswith("config.json says float16: from_pretrained(dtype='auto') loads")]
    unsafe = {r["name"] for r in report["targets"]["fp16"]["tensors"] if r["verdict"] == "unsafe"}
    hidden = sorted(unsafe & set(kept))
    if declared:
        auto_gained = set(new_nonfinite(auto, source))
        check_total(auto, source, report, "fp16", said, "from_pretrained(dtype='auto') under a float16 config",
                    stats)
        overflowing = {n for n in auto.state_dict() if n in name_to_first and n not in kept
                       and rows.get(name_to_first[n], {}).get("overflow")}
        if auto_gained != overflowing:
            raise Failure(f"from_pretrained(dtype='auto') gains inf/NaN in {sorted(auto_gained)}, check-dtype's "
                          f"overflow outside the fp32-kept tensors is in {sorted(overflowing)}")
        wording = ("does not hit this" if hidden and len(hidden) == len(unsafe) else
                   f"hits this in {len(unsafe) - len(hidden)} of the {len(unsafe)}" if hidden else "hits exactly this")
        if wording not in declared[0] or (hidden and not all(n in declared[0] for n in hidden[:3])):
            raise Failure(f"the config line says {declared[0]!r}; measured: {wording}, kept {hidden}")
        stats["config dtype claims"] += 1
    if hidden:
        notes.append(f"unsafe at fp16, kept fp32 by from_pretrained and said so: {', '.join(hidden)}")
    return kept


def end_to_end(model_class: type, folder: Path, root: Path, report: dict[str, Any], source: dict[str, torch.Tensor],
               kept_by_transformers: set[str], stats: Counter[str]) -> None:
    """Plain convert refuses what check-dtype calls unsafe; the suggested command writes a loadable model."""
    _, baseline = model_class.from_pretrained(folder, output_loading_info=True)
    baseline = {k: sorted(map(str, v)) for k, v in baseline.items() if k != "error_msgs"}
    groups = unique_storages(source)
    for target in ("fp16", "bf16"):
        verdict = report["targets"][target]["verdict"]
        plain = root / f"plain-{target}"
        code, _, err = run_cli(["convert", str(folder), "-o", str(plain), "--dtype", target])
        if (code == 2) != (verdict == "unsafe") or code not in (0, 2) or (code == 2 and plain.exists()):
            raise Failure(f"plain convert --dtype {target}: exit {code} for a {verdict} cast {err.strip()[-200:]}")
        stats["plain converts"] += 1
        if verdict == "unsafe":
            words = shlex.split(report["recommendation"]["commands"][target])
            if words[:3] != ["weightdoctor", "convert", str(folder)] or words[3] != "-o":
                raise Failure(f"suggested command {words[:5]}")
            out = root / f"suggested-{target}"
            code, stdout, err = run_cli([*words[1:4], str(out), *words[5:], "--json"])
            if code != 0:
                raise Failure(f"suggested convert exit {code}: {err.strip()[-300:]}")
            kept = set(json.loads(stdout)["plan"]["kept_fp32"])
            unsafe = {f for f, o in ((r["name"], r) for r in report["targets"][target]["tensors"])
                      if o["verdict"] == "unsafe"}
            for first in unsafe:
                names = groups.get(first, [first])
                if not set(names) & kept:
                    raise Failure(f"suggested convert did not keep {first} in fp32 (kept {sorted(kept)[:4]})")
        else:
            out = plain
        written = read_tensors(out)
        for name, t in written.items():
            src = source[name]
            if t.is_floating_point() and int((torch.isfinite(src) & ~torch.isfinite(t)).sum()):
                raise Failure(f"convert --dtype {target} output {name} holds inf/NaN the source lacked")
        loaded, info = model_class.from_pretrained(out, output_loading_info=True, dtype="auto")
        info = {k: sorted(map(str, v)) for k, v in info.items() if k != "error_msgs"}
        if info != baseline:
            raise Failure(f"{target} output loads with {info}, the source with {baseline}")
        # What the suggestion says: from_pretrained loads every tensor at the target, the kept ones included,
        # except its class's _keep_in_fp32_modules.
        gained = new_nonfinite(loaded, source)
        check_total(loaded, source, report, target, report["targets"][target].get("kept_fp32_at_load"),
                    f"from_pretrained of the {target} output", stats)
        # per name where the loader keeps the checkpoint's names: the target's overflow, but in what its class keeps
        kept_here = kept_by_transformers if target == "fp16" else set(
            report["targets"][target].get("kept_fp32_at_load") or ())
        rows = {r["name"]: r for r in report["targets"][target]["tensors"]}
        name_to_first = {n: first for first, names in groups.items() for n in names}
        expected = {n: rows[name_to_first[n]]["overflow"] for n in loaded.state_dict()
                    if n in name_to_first and name_to_first[n] in rows and n not in kept_here
                    and rows[name_to_first[n]]["overflow"]}
        if gained != expected:
            raise Failure(f"from_pretrained of the {target} output gained inf/NaN {gained}, expected {expected}")
        stats["outputs loaded"] += 1


# ---------------------------------------------------------------- the sweep


def run_training_checkpoint(model: torch.nn.Module, root: Path, stats: Counter[str]) -> str:
    """`ckpt-ema`: a training checkpoint holding the untouched weights under `model` and the planted ones under
    `ema`, checked with `--key ema`: the figures are the EMA's, and the suggested convert writes the EMA."""
    torch.manual_seed(SEED + 1)
    plain = type(model)(model.config).eval().state_dict()
    ema = model.state_dict()
    root.mkdir(parents=True)
    path = root / "checkpoint.pt"
    torch.save({"model": plain, "ema": ema, "optimizer": {"state": {}, "param_groups": []}, "step": 7}, path)
    source = dict(torch.load(path, weights_only=True)["ema"])
    report = check_dtype_json(path, "--key", "ema", "--target", ",".join(TARGETS))
    verdicts = compare_counts(report, source, stats)
    compare_keep_fp32(report, source, verdicts, stats)
    groups = unique_storages(source)
    for target in ("fp16", "bf16"):
        if report["targets"][target]["verdict"] != "unsafe":
            continue
        words = shlex.split(report["recommendation"]["commands"][target])
        out = root / f"out-{target}.safetensors"
        words[words.index("-o") + 1] = str(out)
        code, stdout, err = run_cli([*words[1:], "--json"])
        if code != 0:
            raise Failure(f"suggested convert of the training checkpoint: exit {code}: {err.strip()[-300:]}")
        kept = set(json.loads(stdout)["plan"]["kept_fp32"])
        written = read_tensors_file(out)
        for first, names in groups.items():
            name = next((n for n in names if n in written), None)
            if name is None:
                raise Failure(f"{first} of the EMA state dict not written")
            want = source[first]
            if want.is_floating_point():  # --keep-fp32 writes float32 (a bf16 source's kept tensors are up-cast)
                want = want.to(torch.float32 if set(names) & kept else TARGETS[target])
            got = written[name]
            if got.dtype != want.dtype or not torch.equal(torch.nan_to_num(got), torch.nan_to_num(want)):
                raise Failure(f"{name}: the suggested convert wrote other values than the EMA's (another state dict?)")
        stats["training checkpoint outputs"] += 1
    return " ".join(report["targets"][t]["verdict"] for t in ("fp16", "bf16", "fp8_e4m3"))


def read_tensors_file(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def run_case(model: torch.nn.Module, form: str, root: Path, planted: dict[str, str], notes: list[str],
             stats: Counter[str]) -> str:
    if form == "ckpt-ema":
        return run_training_checkpoint(model, root, stats)
    big = next((name for name, what in planted.items() if what.startswith("70000")), None)
    folder = save_form(model, form, root / form, big)
    source = read_tensors(folder)
    report = check_dtype_json(folder, "--local", "--target", ",".join(TARGETS))
    verdicts = compare_counts(report, source, stats)
    compare_keep_fp32(report, source, verdicts, stats)
    fail_on_codes(folder, verdicts, stats)
    compare_entry_points(folder, report, stats)
    kept = compare_loads(type(model), folder, report, source, notes, stats)
    end_to_end(type(model), folder, root / f"{form}-out", report, source, kept, stats)
    return " ".join(report["targets"][t]["verdict"] for t in ("fp16", "bf16", "fp8_e4m3"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", help="architectures (llama, t5, ...) or cases (t5/bin)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{len(QUICK_FORMS)} save forms of {', '.join(QUICK_ARCHS)} instead of {len(FORMS)} "
                        "forms of every architecture")
    parser.add_argument("--verbose", action="store_true", help="print each failure's traceback")
    args = parser.parse_args()
    quiet_libraries()

    counts = {"passed": 0, "failed": 0, "error": 0}
    stats: Counter[str] = Counter()
    started = time.perf_counter()
    rows: list[tuple[str, str, str, str]] = []
    wanted = set(args.only or [])
    forms = QUICK_FORMS if args.quick else FORMS
    for arch, build in _models().items():
        if args.quick and not wanted and arch not in QUICK_ARCHS:
            continue
        cases = [f for f in forms if not wanted or arch in wanted or f"{arch}/{f}" in wanted]
        if not cases:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                torch.manual_seed(SEED)
                model = build().eval()
                planted = plant(model)
            except Exception as exc:  # noqa: BLE001 - a sweep reports and goes on
                counts["error"] += 1
                rows.append((arch, "", "", f"ERROR building: {type(exc).__name__}: {str(exc)[:160]}"))
                continue
            for form in cases:
                name = f"{arch}/{form}"
                notes: list[str] = []
                before = sum(stats.values())
                try:
                    verdicts = run_case(model, form, Path(tmp) / form, planted, notes, stats)
                except Failure as exc:
                    counts["failed"] += 1
                    rows.append((name, "", "", f"FAILED {exc}"[:400]))
                    continue
                except Exception as exc:  # noqa: BLE001
                    counts["error"] += 1
                    rows.append((name, "", "", f"ERROR {type(exc).__name__}: {exc}"[:400]))
                    if args.verbose:
                        import traceback

                        traceback.print_exc()
                    continue
                counts["passed"] += 1
                rows.append((name, str(sum(stats.values()) - before), verdicts,
                             "ok" + (f" (note: {'; '.join(notes)})" if notes else "")))
            passed = sum(1 for r in rows if r[0].startswith(arch + "/") and r[3].startswith("ok"))
            print(f"{arch}: {len(planted)} planted, {passed}/{len(cases)}", file=sys.stderr)
    print_table(("case", "checks", "fp16 bf16 fp8_e4m3", "result"), rows, (None, 6, 20, None))
    total = sum(counts.values())
    print("\nchecks: " + ", ".join(f"{k} {v:,}" for k, v in sorted(stats.items())))
    print(f"cases: {total}  passed: {counts['passed']}  failed: {counts['failed']}  errors: {counts['error']}  "
          f"time: {time.perf_counter() - started:.1f} s")
    return 0 if counts["failed"] == counts["error"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
