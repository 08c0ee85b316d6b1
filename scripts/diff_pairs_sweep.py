"""Oracle sweep of `diff-keys A B` (two checkpoints) and `--values` against torch, over the pairs users diff.

For tiny seeded models of ~18 text architectures, builds the pairs of checkpoints that turn up in real
workflows and holds `weightdoctor diff-keys A B --json` (and `--values`) to what torch itself does:

* base -> head: a base-model save (`AutoModel`) against the classifier fine-tuned from it, and the fine-tuned
  classifier (trained a few steps) against the base;
* trained: a few SGD steps with every block but block 1 frozen, against the model before training;
* fp16 / bf16: `weightdoctor convert --dtype` of a fp32 save, against the fp32 save;
* bin: `torch.save(model.state_dict())` (tied keys stored) against `save_pretrained` (tied keys dropped);
* ddp / compile: the state dict of `nn.DataParallel(model)` (`module.`) and `torch.compile(model)` (`_orig_mod.`);
* vocab / positions: `resize_token_embeddings(+8)`, a config with twice the positions (shape mismatches);
* lora: a PEFT LoRA model's full state dict (unmerged) against `merge_and_unload()`;
* sharded: `save_pretrained(max_shard_size=...)` against a single file.

Oracles, per pair:

* keys: `model_b.load_state_dict(state_dict_a, strict=False)` with `model_b` built from B's config and class:
  its missing / unexpected keys, and the size mismatches of the RuntimeError it raises (then re-run without
  them). diff-keys compares B's *file*, the module has more keys (the tied ones save_pretrained drops): those
  keys are taken out of missing and, when A has them, count as unexpected (by definition; counted as `tied:N`);
* dtypes: the common names whose dtypes differ; `matched`: common names of the same shape;
* the fix: the suggested `--rename` flags re-run through diff-keys (its `matched` must be
  `matched_after_renames`, its sets those of `load_state_dict` of the renamed state dict), and through
  `convert --rename`: the output's keys are the renamed keys, and when diff-keys says nothing is left,
  `load_state_dict(strict=True)` of it (plus the tied weights the file leaves out) succeeds;
* values (`--values`): per common tensor `torch.equal` after float64, max |A-B| and ||A-B||/||B|| in float64
  (max exact, the norm ratio within 1e-9 relative: diff-keys sums 4M-element chunks, torch the whole tensor),
  the ranked layers (top 10), and the workflow: the tensors that changed are those training changed (in memory),
  a fp16 / bf16 cast changes no tensor by more than its unit roundoff (2^-11, 2^-8) in norm, a LoRA merge changes
  exactly the targeted weights, a re-save or a shard split changes nothing.

The CLI itself (`weightdoctor diff-keys A B --json --values`, a subprocess) is run once per architecture (with
--quick: once) and must print what the in-process run prints.

    PYTHONPATH=. .venv/bin/python scripts/diff_pairs_sweep.py [--only ARCH ...] [--quick] [--verbose] [--no-cli]

Prints one line per case (arch/pair, oracle counts, ours, checks, verdict) and the counts; exits 1 on any
difference or error.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import re
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sweep_common import print_table, quiet_libraries

ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "phi3", "gpt_neox", "gptj", "bloom", "opt", "gpt2",
         "mixtral", "bert", "roberta", "distilbert", "albert", "t5", "bart"]
QUICK = ["llama", "gpt2", "bert", "gpt_neox", "mixtral"]  # the last two: the bugs this sweep found
REL_TOL = 1e-9  # ||A-B||/||B||: chunked sums against one sum, in float64
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
# per cast (fp16, bf16): the largest ||A-B||/||B|| torch measured and its bound, for the summary
CAST_WORST: dict[str, tuple[float, float]] = {}


@dataclass
class Pair:
    """Two checkpoint folders, the module B's keys come from, and what the workflow says about values."""

    name: str
    a: Path
    b: Path
    model_b: torch.nn.Module
    changed: set[str] | None = None  # names (B's) whose values the workflow changed; None: not checked
    max_rel: float | None = None  # bound on every tensor's ||A-B||/||B|| (a cast)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- models


def _archs() -> dict[str, Any]:
    from diff_keys_sweep import _archs as sweep_archs  # the 48 tiny configs of the --model-class sweep

    return sweep_archs()


def _build(class_name: str, config: Any, seed: int) -> torch.nn.Module:
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(copy.deepcopy(config))
    return model.eval()


def _batch(model: torch.nn.Module, labels_head: bool) -> dict[str, torch.Tensor]:
    vocab = model.config.get_text_config().vocab_size
    ids = torch.randint(3, vocab, (1, 8), generator=torch.Generator().manual_seed(1))
    eos = model.config.get_text_config().eos_token_id
    if isinstance(eos, int) and eos < vocab:  # T5's and BART's classifiers pool at the <eos> token
        ids[0, -1] = eos
    return {"input_ids": ids, "labels": torch.tensor([1]) if labels_head else ids}


def _train(model: torch.nn.Module, labels_head: bool, trainable: Callable[[str], bool], steps: int = 3) -> None:
    """A few SGD steps (no momentum, no decay: a tensor without gradient stays bit-for-bit the same)."""
    for name, p in model.named_parameters():
        p.requires_grad_(trainable(name))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.05)
    model.train()
    batch = _batch(model, labels_head)
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    """The tensors training changed, each storage under its first name (tied copies are saved once, by it)."""
    seen: set[int] = set()
    firsts = set()
    for name, tensor in model.state_dict().items():
        if tensor.untyped_storage().data_ptr() not in seen:
            seen.add(tensor.untyped_storage().data_ptr())
            firsts.add(name)
    return {k for k in before if k in after and k in firsts and not torch.equal(before[k], after[k])}


def _save_bin(state: dict[str, torch.Tensor], config_from: torch.nn.Module, folder: Path) -> Path:
    folder.mkdir(parents=True)
    config_from.config.save_pretrained(folder)
    torch.save({k: v.contiguous() for k, v in state.items()}, folder / "pytorch_model.bin")
    return folder


def _save_safetensors(state: dict[str, torch.Tensor], config_from: torch.nn.Module, folder: Path) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    config_from.config.save_pretrained(folder)
    save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, folder / "model.safetensors",
              metadata={"format": "pt"})
    return folder


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a folder's weight files (safetensors, or .bin when there is none), as torch reads them."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if files:
        return {k: v for f in files for k, v in load_file(f).items()}
    return {k: v for f in sorted(folder.glob("*.bin")) for k, v in torch.load(f, weights_only=True).items()}


# ---------------------------------------------------------------------------------------------- pairs


def _pairs(arch_name: str, arch: Any, out: Path) -> list[Pair]:
    from transformers.modeling_utils import PreTrainedModel

    config = arch.config()
    main = arch.lm or arch.labels
    assert main is not None
    pairs: list[Pair] = []

    def folder(tag: str) -> Path:
        return out / arch_name / tag

    def saved(model: PreTrainedModel, tag: str, **kw: Any) -> Path:
        model.save_pretrained(folder(tag), **kw)
        return folder(tag)

    lm = _build(main, config, 0)
    ref = saved(lm, "ref")

    # The classifier fine-tuned from a base save, both ways round.
    if arch.labels:
        base = _build(arch.base, config, 0)
        head = _build(arch.labels, config, 1)
        head.base_model.load_state_dict(base.state_dict(), strict=False)  # RoBERTa's has no pooler
        pairs.append(Pair("base->head", saved(base, "base"), saved(head, "head"), head,
                          changed=set(), notes=["values under the base-model prefix"]))
        tuned = copy.deepcopy(head)
        before = _state(tuned)
        _train(tuned, True, lambda n: True)
        base_names = {k for k in base.state_dict()}
        prefix = head.base_model_prefix + "."
        moved = {k[len(prefix):] for k in _changed(before, _state(tuned), tuned) if k.startswith(prefix)}
        pairs.append(Pair("tuned-head->base", saved(tuned, "tuned"), folder("base"), base,
                          changed=moved & base_names))

    # A few steps apart, block 1 trained, the rest frozen.
    trained = copy.deepcopy(lm)
    before = _state(trained)
    block1 = re.compile(r"\.1\.")  # ALBERT shares one block: train its attention instead
    if not any(block1.search(n) for n, _ in trained.named_parameters()):
        block1 = re.compile(r"\.attention\.")
    _train(trained, arch.lm is None, lambda n: bool(block1.search(n)))
    pairs.append(Pair("trained", saved(trained, "trained"), ref, lm,
                      changed=_changed(before, _state(trained), trained)))

    # fp32 against its fp16 / bf16 convert.
    from typer.testing import CliRunner

    from weightdoctor.cli import app

    for dtype, flag in ((torch.float16, "fp16"), (torch.bfloat16, "bf16")):
        done = CliRunner().invoke(app, ["convert", str(ref), "-o", str(folder(flag)), "--dtype", flag])
        assert done.exit_code == 0, done.output
        floating = {k for k, v in read_weights(ref).items() if v.is_floating_point()}
        pairs.append(Pair(flag, folder(flag), ref, lm, max_rel=UNIT_ROUNDOFF[dtype],
                          changed=None if floating else set()))

    # .bin by torch.save (tied keys stored) against save_pretrained's safetensors.
    pairs.append(Pair("bin", _save_bin(lm.state_dict(), lm, folder("bin")), ref, lm, changed=set()))
    # DDP and torch.compile wrappers' state dicts.
    pairs.append(Pair("ddp", _save_bin(torch.nn.DataParallel(lm).state_dict(), lm, folder("ddp")), ref, lm,
                      changed=set()))
    compiled = torch.compile(lm)
    pairs.append(Pair("compile", _save_safetensors(compiled.state_dict(), lm, folder("compile")), ref, lm,
                      changed=set()))

    # Resized vocabulary; more positions (learned position embeddings only).
    if arch.text:
        grown = copy.deepcopy(lm)
        grown.resize_token_embeddings(config.get_text_config().vocab_size + 8)
        pairs.append(Pair("vocab+8", saved(grown, "vocab"), ref, lm, changed=set()))
    text = config.get_text_config()
    for attr in ("max_position_embeddings", "n_positions"):
        if isinstance(getattr(text, attr, None), int):
            longer = copy.deepcopy(config)
            setattr(longer.get_text_config(), attr, 2 * getattr(text, attr))
            stretched = _build(main, longer, 0)
            shapes = {k: tuple(v.shape) for k, v in lm.state_dict().items()}
            if any(shapes.get(k) not in (None, tuple(v.shape)) for k, v in stretched.state_dict().items()):
                pairs.append(Pair("positions*2", saved(stretched, "positions"), ref, lm, changed=None))
            break

    # PEFT LoRA: the full unmerged state dict against the merged model.
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:  # pragma: no cover - peft is installed in this project's venv
        pass
    else:
        torch.manual_seed(2)
        try:
            peft_model = get_peft_model(copy.deepcopy(lm), LoraConfig(r=4, lora_alpha=8, init_lora_weights=False))
        except Exception:  # noqa: BLE001 - no default target modules for this model type: its query / value ones
            names = {n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if isinstance(m, torch.nn.Linear)}
            targets = sorted(names & {"q_proj", "v_proj", "q_lin", "v_lin", "qkv_proj", "query", "value"})
            peft_model = get_peft_model(copy.deepcopy(lm), LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                                      target_modules=targets))
        state = _state(peft_model)
        merged = peft_model.merge_and_unload()
        # merge_and_unload adds B @ A * scale to the weight; the bias is the base layer's
        targets = {k.replace(".base_layer", "").removeprefix("base_model.model.")
                   for k in state if k.endswith(".base_layer.weight")}
        pairs.append(Pair("lora", _save_safetensors(state, lm, folder("lora")),
                          saved(merged, "merged"), merged, changed=targets))

    # Sharded against single file.
    total = sum(v.numel() * v.element_size() for v in lm.state_dict().values())
    shards = saved(lm, "sharded", max_shard_size=max(total // 4, 1024))
    pairs.append(Pair("sharded", shards, ref, lm, changed=set()))
    return pairs


# ---------------------------------------------------------------------------------------------- oracles

_SIZE = re.compile(r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([\d, ]*)\]\) from "
                   r"checkpoint, the shape in current model is torch\.Size\(\[([\d, ]*)\]\)")


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def load_report(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[set[str], set[str], set[Any]]:
    """torch's own answer: missing, unexpected and size-mismatched keys of `model.load_state_dict(state)`."""
    model = copy.deepcopy(model)
    try:
        result = model.load_state_dict(state, strict=False)
        mismatched: set[Any] = set()
    except RuntimeError as exc:
        mismatched = {(m[0], _shape(m[1]), _shape(m[2])) for m in _SIZE.findall(str(exc))}
        assert mismatched, str(exc)[:500]
        names = {m[0] for m in mismatched}
        result = model.load_state_dict({k: v for k, v in state.items() if k not in names}, strict=False)
        return set(result.missing_keys) - names, set(result.unexpected_keys), mismatched
    return set(result.missing_keys), set(result.unexpected_keys), mismatched


def file_report(model: torch.nn.Module, state: dict[str, torch.Tensor], b_keys: set[str]) -> tuple[Any, int]:
    """`load_report` as diff-keys defines it (against B's file): keys the module has and B's file leaves out
    (tied weights) are not missing, and A's copies of them are unexpected. Returns the sets and that count."""
    missing, unexpected, mismatched = load_report(model, state)
    module_only = set(model.state_dict()) - b_keys
    unexpected |= (set(state) & module_only)
    mismatched = {m for m in mismatched if m[0] not in module_only}
    return (missing - module_only, unexpected, mismatched), len(module_only)


def shaped_like(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A module whose state dict is exactly `state` (B's file): torch's load_state_dict against B's file."""
    root = torch.nn.Module()
    for name, tensor in state.items():
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if part not in module._modules:
                module.add_module(part, torch.nn.Module())
            module = module._modules[part]
        module.register_buffer(leaf, tensor.clone())
    return root


def apply_flags(state: dict[str, Any], flags: list[dict[str, Any]]) -> dict[str, Any]:
    """The suggested renames as the docs define them: re.sub, first match, in order."""
    out = {}
    for k, v in state.items():
        for f in flags:
            k = re.sub(f["pattern"], f["replacement"], k, count=1)
        out[k] = v
    return out


def value_oracle(a: torch.Tensor, b: torch.Tensor) -> tuple[bool, float, float]:
    """torch's figures for one pair, whole tensors in float64: (equal, max |A-B|, ||A-B|| / ||B||)."""
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    identical = torch.equal(a64, b64)
    if a64.numel() == 0:
        return identical, 0.0, 0.0
    diff = a64 - b64
    max_abs = float(diff.abs().max())
    ref = float(torch.linalg.vector_norm(b64))
    num = float(torch.linalg.vector_norm(diff))
    rel = 0.0 if num == 0 else (math.inf if ref == 0 else num / ref)
    return identical, max_abs, rel


def layer_of(name: str) -> str:
    """The docs' definition of a layer, written here again (not imported) so that the oracle does not share
    weightdoctor's code: up to the first numeric component, else the module path."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1]) or name


def _num(x: Any) -> float:
    return float(x)  # "inf" / "nan" strings too


# ---------------------------------------------------------------------------------------------- runs


def diff_json(a: Path, b: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    """`weightdoctor diff-keys A B --json [flags]` in process (the same code path as the CLI's fast path)."""
    from weightdoctor.commands._diff_keys_run import run_diff_keys

    renames = [flags[i + 1] for i in range(len(flags)) if flags[i] == "--rename"]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(io.StringIO()):
        code = run_diff_keys(str(a), str(b), renames=renames or None, values="--values" in flags, json_output=True)
    return code, json.loads(buffer.getvalue())


def cli_json(a: Path, b: Path, *flags: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "weightdoctor", "diff-keys", str(a), str(b), "--json", *flags],
                          capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"CLI exit {done.returncode}: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout)


def _sets(report: dict[str, Any]) -> tuple[set[str], set[str], set[Any]]:
    return ({m["name"] for m in report["missing"]}, {u["name"] for u in report["unexpected"]},
            {(m["name"], tuple(m["shape_a"]), tuple(m["shape_b"])) for m in report["mismatched"]})


def _show(sets: tuple[set[str], set[str], set[Any]]) -> str:
    return f"{len(sets[0])}/{len(sets[1])}/{len(sets[2])}"


def _diff(what: str, expected: Any, got: Any) -> str:
    if isinstance(expected, set):
        return f"{what}: oracle-only {sorted(expected - got)[:3]} ours-only {sorted(got - expected)[:3]}"
    if isinstance(expected, tuple) and all(isinstance(x, set) for x in expected):
        return "; ".join(_diff(f"{what} {kind}", e, g)
                         for kind, e, g in zip(("missing", "unexpected", "mismatched"), expected, got, strict=True)
                         if e != g)
    return f"{what}: oracle {str(expected)[:200]} ours {str(got)[:200]}"


def check_pair(pair: Pair, out: Path, cli: bool) -> tuple[str, str, int, list[str]]:
    """Run every oracle on one pair; returns (oracle counts, our counts, number of checks, problems)."""
    problems: list[str] = []
    checks = 0

    def expect(what: str, expected: Any, got: Any) -> None:
        nonlocal checks
        checks += 1
        if expected != got:
            problems.append(_diff(what, expected, got))

    sd_a, sd_b = read_weights(pair.a), read_weights(pair.b)
    b_keys = set(sd_b)
    file_b = shaped_like(sd_b)
    # diff-keys compares B's file: torch against a module shaped like it is the exact oracle; the model built from
    # B's config is the one users load into (tied keys aside, it differs where save_pretrained writes other names
    # than the model holds: then diff-keys must point to --model-class, which says what from_pretrained does)
    oracle = load_report(file_b, sd_a)
    by_model, tied = file_report(pair.model_b, sd_a, b_keys)
    _, report = diff_json(pair.a, pair.b)
    expect("keys", oracle, _sets(report))
    layout = by_model != oracle
    common = set(sd_a) & b_keys
    expect("matched", sum(tuple(sd_a[k].shape) == tuple(sd_b[k].shape) for k in common), report["matched"])
    expect("dtypes", {k for k in common if sd_a[k].dtype != sd_b[k].dtype and sd_a[k].shape == sd_b[k].shape},
           {d["name"] for d in report["dtype_differences"]})

    suggested = report["suggested_renames"]
    flags = [x for s in suggested for x in shlex.split(s["flag"])]
    renamed_sd = apply_flags(sd_a, suggested) if suggested else sd_a
    if suggested:
        _, again = diff_json(pair.a, pair.b, *flags)
        expect("matched after renames", report["matched_after_renames"], again["matched"])
        expect("keys after renames", load_report(file_b, renamed_sd), _sets(again))
        from typer.testing import CliRunner

        from weightdoctor.cli import app

        converted = out / f"{pair.a.name}-renamed"
        done = CliRunner().invoke(app, ["convert", str(pair.a), "-o", str(converted), "--json", *flags])
        expect("convert --rename exit", 0, done.exit_code)
        written = read_weights(converted)
        # convert drops all but one name of a storage (safetensors refuses shared tensors; see its docs): the
        # names it says it dropped must share the storage of the name it kept in A as torch loads it
        dropped = {d["name"]: d["kept"] for d in json.loads(done.stdout)["plan"]["dropped_aliases"]}
        renamed_of = dict(zip(sd_a, renamed_sd, strict=True))
        old_of = {new: old for old, new in renamed_of.items()}
        for name, kept in dropped.items():
            a_name, a_kept = old_of.get(name, name), old_of.get(kept, kept)
            expect(f"convert dropped {name}: an alias of {kept}", True,
                   a_name in sd_a and a_kept in sd_a and sd_a[a_name].untyped_storage().data_ptr()
                   == sd_a[a_kept].untyped_storage().data_ptr() and kept in written)
        expect("convert --rename keys", set(renamed_sd) - set(dropped), set(written))
        if not (again["missing"] or again["unexpected"] or again["mismatched"]):
            model = copy.deepcopy(pair.model_b)
            own = model.state_dict()
            try:
                model.load_state_dict({**{k: own[k] for k in set(own) - set(written)}, **written}, strict=True)
                ok = "loads"
            except RuntimeError as exc:
                ok = str(exc).splitlines()[0][:200]
            expect("strict load after convert --rename", "loads", ok)

    # "A is a PEFT adapter ... it stores no base weights" only when A (as compared) holds none of B's weights
    for name, shown, state in (("", report, sd_a), (" after renames", again if suggested else None, renamed_sd)):
        if shown is not None and any("stores no base weights" in n for n in shown["notes"]):
            expect(f"note{name}: A stores no base weights", 0,
                   sum(k in sd_b and tuple(v.shape) == tuple(sd_b[k].shape) for k, v in state.items()))

    # Keys diff-keys still reports (after its fix) that the model built from B's config would load: there the
    # model holds other names than save_pretrained writes, and diff-keys must say so and point to --model-class
    final = again if suggested else report
    model_final = file_report(pair.model_b, renamed_sd, b_keys)[0]
    left = _sets(final)
    if (left[0] - model_final[0]) or (left[1] - model_final[1]):
        expect("note: from_pretrained renames what load_state_dict leaves", True,
               any("--model-class" in note for note in final["notes"]))

    # --values: under the renames diff-keys itself uses (the loader's prefix, see the docs), else none.
    # A wrapper prefix or PEFT's names: nothing is common until the user adds the suggested fix, as the note says.
    value_flags: list[str] = []
    _, valued = diff_json(pair.a, pair.b, "--values")
    loader = any("values compared as from_pretrained loads" in n for n in valued["notes"])
    if not valued["values"] and suggested:
        expect("note: add the fix to compare values", True,
               any("no values were compared" in n for n in valued["notes"]))
        value_flags = flags
        _, valued = diff_json(pair.a, pair.b, "--values", *value_flags)
        loader = True
    va = renamed_sd if loader else sd_a
    rows = {r["name"]: r for r in valued["values"] or []}
    comparable = {k for k in set(va) & b_keys if tuple(va[k].shape) == tuple(sd_b[k].shape)}
    expect("values names", comparable, set(rows))
    layers: dict[str, list[float]] = {}
    changed: set[str] = set()
    for name in sorted(comparable & set(rows)):
        identical, max_abs, rel = value_oracle(va[name], sd_b[name])
        row = rows[name]
        expect(f"{name} identical", identical, row["identical"])
        expect(f"{name} max_abs_diff", max_abs, _num(row["max_abs_diff"]))
        got_rel = _num(row["rel_change"])
        checks += 1
        if not (got_rel == rel or abs(got_rel - rel) <= REL_TOL * max(abs(rel), 1e-300)):
            problems.append(f"{name} rel_change: oracle {rel!r} ours {got_rel!r}")
        if pair.max_rel is not None:
            CAST_WORST[pair.name] = (max(CAST_WORST.get(pair.name, (0.0, 0.0))[0], rel), pair.max_rel)
            checks += 1
            if rel > pair.max_rel:
                problems.append(f"{name}: cast changed it by {rel:.3g} > {pair.max_rel:.3g}")
        if not identical:
            changed.add(name)
        a64, b64 = va[name].to(torch.float64), sd_b[name].to(torch.float64)
        total = layers.setdefault(layer_of(name), [0.0, 0.0, 1.0])
        total[0] += float(((a64 - b64) ** 2).sum())
        total[1] += float((b64**2).sum())
        total[2] = total[2] if identical else 0.0
    # The workflow's own record (names as the model holds them): tensor by tensor where the file has those
    # names, layer by layer where save_pretrained writes others (Mixtral's experts one tensor each)
    same_names = pair.changed is not None and pair.changed <= b_keys | set(va)
    if pair.changed is not None and same_names:
        expect("changed tensors = workflow's", pair.changed & comparable, changed)
    ranked = sorted(((0.0 if same else (math.inf if r == 0 else math.sqrt(d) / math.sqrt(r)), layer)
                     for layer, (d, r, same) in layers.items()), key=lambda t: (-t[0], t[1]))[:10]
    got_layers = valued["layers_changed_most"] or []
    expect("layers ranked", [layer for _, layer in ranked], [g["layer"] for g in got_layers])
    for (rel, layer), g in zip(ranked, got_layers, strict=False):
        checks += 1
        got = _num(g["rel_change"])
        if not (got == rel or abs(got - rel) <= REL_TOL * max(abs(rel), 1e-300)):
            problems.append(f"layer {layer}: oracle {rel!r} ours {got!r}")
    if pair.changed is not None:
        trained_layers = {layer_of(n) for n in (pair.changed & comparable if same_names else pair.changed)}
        expect("changed layers = trained layers", trained_layers,
               {g["layer"] for g in got_layers if not g["identical"]} if len(layers) <= 10 else trained_layers)

    if cli:
        expect("CLI --json --values = in-process", valued,
               cli_json(pair.a, pair.b, "--values", *value_flags))
    ours = f"{_show(_sets(report))} v{len(rows)} ch{len(changed)}"
    extra = f" model {_show(by_model)}" if layout else (f" tied:{tied}" if tied else "")
    return f"{_show(oracle)}{extra}", ours, checks, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", metavar="ARCH", help=f"architectures among {', '.join(ARCHS)}")
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}, the CLI once")
    parser.add_argument("--verbose", action="store_true", help="print every difference, not the first three")
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI subprocess runs")
    args = parser.parse_args()
    quiet_libraries()
    torch.set_num_threads(1)
    names = args.only or (QUICK if args.quick else ARCHS)
    unknown = [n for n in names if n not in ARCHS]
    if unknown:
        parser.error(f"unknown architecture(s) {unknown}: choose among {ARCHS}")
    archs = _archs()
    rows: list[list[str]] = []
    counts = {"equal": 0, "different": 0, "errors": 0}
    total_checks = 0
    started = time.perf_counter()
    cli_done = False
    with tempfile.TemporaryDirectory() as tmp:
        for arch_name in names:
            try:
                pairs = _pairs(arch_name, archs[arch_name], Path(tmp))
            except Exception as exc:  # noqa: BLE001 - a sweep reports and goes on
                rows.append([f"{arch_name}/*", "-", "-", "-", f"ERROR building: {exc!r}"[:300]])
                counts["errors"] += 1
                if args.verbose:
                    traceback.print_exc()
                continue
            for i, pair in enumerate(pairs):
                run_cli = not args.no_cli and i == 0 and not (args.quick and cli_done)
                cli_done |= run_cli
                case = f"{arch_name}/{pair.name}" + ("/cli" if run_cli else "")
                try:
                    oracle, ours, checks, problems = check_pair(pair, Path(tmp) / arch_name, run_cli)
                except Exception as exc:  # noqa: BLE001
                    rows.append([case, "-", "-", "-", f"ERROR: {exc!r}"[:300]])
                    counts["errors"] += 1
                    if args.verbose:
                        traceback.print_exc()
                    continue
                total_checks += checks
                if problems:
                    counts["different"] += 1
                    shown = problems if args.verbose else problems[:3]
                    verdict = "DIFFERENT: " + "; ".join(shown)
                else:
                    counts["equal"] += 1
                    verdict = "equal"
                rows.append([case, oracle, ours, str(checks), verdict])
    print_table(["case", "torch m/u/mm", "ours m/u/mm values changed", "checks", "verdict"], rows,
                [None, 18, 26, 6, None])
    cases = sum(counts.values())
    print(f"\ncases: {cases}  equal: {counts['equal']}  different: {counts['different']}  errors: {counts['errors']}"
          f"  checks: {total_checks}  time: {time.perf_counter() - started:.1f} s")
    if CAST_WORST:
        print("largest ||A-B||/||B|| of a cast (torch, float64): " + ", ".join(
            f"{name} {worst:.3g} (bound {bound:.3g})" for name, (worst, bound) in sorted(CAST_WORST.items())))
    return 0 if counts["equal"] == cases else 1


if __name__ == "__main__":
    sys.exit(main())
