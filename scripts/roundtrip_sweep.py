"""Round-trip oracle sweep of `weightdoctor convert` and `weightdoctor shard` across architectures.

For tiny seeded models of many families (decoder-only, MoE, encoders, encoder-decoders with shared
embeddings, vision, audio, LLaVA), each saved

* with `save_pretrained` (safetensors, one file and sharded), and
* as `.bin` the way transformers 4 wrote it (`torch.save` of the state dict, tied names kept as one storage;
  one file and sharded by huggingface_hub's `split_torch_state_dict_into_shards` with a v4 index), also as
  a half model's `fp16` variant (one file and sharded) and as a training checkpoint (`model_state_dict`),

runs the CLI (in-process, `weightdoctor.cli.app`, `--json`) and checks each output against the libraries:

* `from_pretrained(output_loading_info=True)` on the output reports the same missing / unexpected /
  mismatched keys as on `save_pretrained`'s own folder (none, for these models), and every tensor of the
  loaded model equals the original's (bitwise; for a cast, equal to `tensor.to(dtype)` at the dtype loaded);
* every safetensors file opens with `safe_open` and has metadata `format=pt`;
* an index's `weight_map` names every tensor of the shards exactly once, `metadata.total_size` is the sum
  of the shards' tensor bytes; shard names follow `model-0000X-of-0000N.safetensors`; no shard passes
  `--max` unless it holds one storage; the split is the one `split_torch_state_dict_into_shards` makes over
  the same tensors in the source's order; for a save_pretrained source, the weight_map's keys and total_size
  are `save_pretrained`'s own at the same `max_shard_size` (its split, in the modules' order, is only noted);
* every written tensor equals the source's (or its cast); the names left out are the JSON's dropped aliases;
* the input is untouched (sha256 of every file), exit 0, and `--json` is truthful: tensor counts, tensor
  bytes, file sizes, first/last names, oversized flags, cast counts and kept_fp32 match the written files.

docs/roundtrip-sweep.md has the figures.

    PYTHONPATH=. .venv/bin/python scripts/roundtrip_sweep.py [--only NAME ...] [--quick] [--verbose]

Prints one line per case (case / verdict) and the counts; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from sweep_common import print_table, quiet_libraries, unique_nbytes

SEED = 0
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _models() -> dict[str, Callable[[], torch.nn.Module]]:
    """Tiny model builders (seeded by the caller): name -> model."""
    import transformers as T

    dec = {"vocab_size": 500, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
           "num_attention_heads": 4, "max_position_embeddings": 128}
    enc = {"vocab_size": 500, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
           "num_attention_heads": 4, "max_position_embeddings": 128}
    s2s = {"vocab_size": 500, "d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
           "decoder_attention_heads": 4, "encoder_ffn_dim": 96, "decoder_ffn_dim": 96, "max_position_embeddings": 128,
           "pad_token_id": 1, "decoder_start_token_id": 2}
    t5 = {"vocab_size": 500, "d_model": 64, "d_kv": 16, "d_ff": 96, "num_layers": 2, "num_decoder_layers": 2,
          "num_heads": 4}
    vit = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
           "image_size": 32, "patch_size": 8}
    clip_text = {"vocab_size": 500, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "max_position_embeddings": 64}

    def llava() -> torch.nn.Module:
        config = T.LlavaConfig(vision_config=T.CLIPVisionConfig(**vit), text_config=T.LlamaConfig(**dec),
                               image_token_index=499, projector_hidden_act="gelu")
        return T.LlavaForConditionalGeneration(config)

    return {
        "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**dec, num_key_value_heads=2)),
        "llama-bf16": lambda: T.LlamaForCausalLM(T.LlamaConfig(**dec, num_key_value_heads=2)).to(torch.bfloat16),
        "llama-tied": lambda: T.LlamaForCausalLM(T.LlamaConfig(**dec, tie_word_embeddings=True)),
        "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(**dec, num_key_value_heads=2)),
        "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**dec, num_key_value_heads=2)),
        "gemma": lambda: T.GemmaForCausalLM(T.GemmaConfig(**dec, num_key_value_heads=2, head_dim=16)),
        "gemma2": lambda: T.Gemma2ForCausalLM(T.Gemma2Config(**dec, num_key_value_heads=2, head_dim=16)),
        "phi3": lambda: T.Phi3ForCausalLM(T.Phi3Config(**dec, pad_token_id=0)),
        "falcon": lambda: T.FalconForCausalLM(T.FalconConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2,
                                                             num_attention_heads=4)),
        "gpt_neox": lambda: T.GPTNeoXForCausalLM(T.GPTNeoXConfig(**dec)),
        "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=500, n_embd=64, n_layer=2, n_head=4,
                                                       n_positions=128)),
        "opt": lambda: T.OPTForCausalLM(T.OPTConfig(vocab_size=500, hidden_size=64, ffn_dim=96, num_hidden_layers=2,
                                                    num_attention_heads=4, max_position_embeddings=128,
                                                    word_embed_proj_dim=64)),
        "bloom": lambda: T.BloomForCausalLM(T.BloomConfig(vocab_size=500, hidden_size=64, n_layer=2, n_head=4)),
        "gptj": lambda: T.GPTJForCausalLM(T.GPTJConfig(vocab_size=500, n_embd=64, n_layer=2, n_head=4, rotary_dim=8,
                                                       n_positions=128)),
        "phi": lambda: T.PhiForCausalLM(T.PhiConfig(**dec)),
        "mixtral": lambda: T.MixtralForCausalLM(T.MixtralConfig(**dec, num_key_value_heads=2, num_local_experts=4,
                                                                num_experts_per_tok=2)),
        "qwen2_moe": lambda: T.Qwen2MoeForCausalLM(T.Qwen2MoeConfig(**dec, num_key_value_heads=2, num_experts=4,
                                                                    num_experts_per_tok=2, moe_intermediate_size=32,
                                                                    shared_expert_intermediate_size=64)),
        "bert": lambda: T.BertForMaskedLM(T.BertConfig(**enc)),
        "bert-cls": lambda: T.BertForSequenceClassification(T.BertConfig(**enc, num_labels=3)),
        "roberta": lambda: T.RobertaForMaskedLM(T.RobertaConfig(**{**enc, "max_position_embeddings": 130},
                                                                pad_token_id=1)),
        "deberta_v2": lambda: T.DebertaV2ForMaskedLM(T.DebertaV2Config(**enc)),
        "albert": lambda: T.AlbertForMaskedLM(T.AlbertConfig(**enc, embedding_size=32)),
        "distilbert": lambda: T.DistilBertForMaskedLM(T.DistilBertConfig(vocab_size=500, dim=64, hidden_dim=96,
                                                                         n_layers=2, n_heads=4,
                                                                         max_position_embeddings=128)),
        "electra": lambda: T.ElectraForMaskedLM(T.ElectraConfig(**enc, embedding_size=32)),
        "xlm_roberta": lambda: T.XLMRobertaForMaskedLM(T.XLMRobertaConfig(**{**enc, "max_position_embeddings": 130},
                                                                          pad_token_id=1)),
        "mt5": lambda: T.MT5ForConditionalGeneration(T.MT5Config(**t5)),
        "t5": lambda: T.T5ForConditionalGeneration(T.T5Config(**t5)),
        "t5-untied": lambda: T.T5ForConditionalGeneration(T.T5Config(**t5, tie_word_embeddings=False,
                                                                     feed_forward_proj="gated-gelu")),
        "bart": lambda: T.BartForConditionalGeneration(T.BartConfig(**s2s)),
        "mbart": lambda: T.MBartForConditionalGeneration(T.MBartConfig(**s2s)),
        "marian": lambda: T.MarianMTModel(T.MarianConfig(**s2s)),
        "pegasus": lambda: T.PegasusForConditionalGeneration(T.PegasusConfig(**s2s)),
        "whisper": lambda: T.WhisperForConditionalGeneration(T.WhisperConfig(
            vocab_size=500, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=96, decoder_ffn_dim=96, num_mel_bins=16,
            max_source_positions=32, max_target_positions=64, pad_token_id=1, decoder_start_token_id=2)),
        "vit": lambda: T.ViTForImageClassification(T.ViTConfig(**vit, num_labels=5)),
        "clip": lambda: T.CLIPModel(T.CLIPConfig(text_config=clip_text, vision_config=vit, projection_dim=32)),
        "wav2vec2": lambda: T.Wav2Vec2ForCTC(T.Wav2Vec2Config(
            vocab_size=40, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
            conv_dim=(32, 32), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4)),
        "llava": llava,
    }


# ---------------------------------------------------------------- sources


def _sha(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _file_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of one weight file, as the libraries read it."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def build_sources(model: torch.nn.Module, root: Path) -> dict[str, Path]:
    """The model saved four ways: `st`, `st-sharded` (save_pretrained); `bin`, `bin-sharded` (v4 style)."""
    from huggingface_hub import split_torch_state_dict_into_shards

    st = root / "src-st"
    model.save_pretrained(st)
    on_disk = _file_tensors(st / "model.safetensors")
    largest = max(t.nbytes for t in on_disk.values())
    third = sum(t.nbytes for t in on_disk.values()) // 3
    model.save_pretrained(root / "src-st-sharded", max_shard_size=max(largest, third))
    # transformers 4's torch.save(state_dict): the tied names saved too, sharing one storage
    by_ptr: dict[int, str] = {}
    for name, tensor in model.state_dict().items():
        if name in on_disk:
            by_ptr.setdefault(tensor.data_ptr(), name)
    bin_sd = dict(on_disk)
    for name, tensor in model.state_dict().items():
        if name not in bin_sd and tensor.data_ptr() in by_ptr:
            bin_sd[name] = bin_sd[by_ptr[tensor.data_ptr()]]
    for name in ("bin", "bin-sharded"):
        (root / f"src-{name}").mkdir()
        shutil.copy(st / "config.json", root / f"src-{name}" / "config.json")
        if (st / "generation_config.json").exists():
            shutil.copy(st / "generation_config.json", root / f"src-{name}" / "generation_config.json")
    torch.save(bin_sd, root / "src-bin" / "pytorch_model.bin")
    split = split_torch_state_dict_into_shards(bin_sd, filename_pattern="pytorch_model{suffix}.bin",
                                               max_shard_size=max(largest, unique_nbytes(bin_sd) // 3))
    for filename, names in split.filename_to_tensors.items():
        torch.save({n: bin_sd[n] for n in names}, root / "src-bin-sharded" / filename)
    index = {"metadata": {"total_size": split.metadata["total_size"]}, "weight_map": split.tensor_to_filename}
    (root / "src-bin-sharded" / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))
    # transformers 4's save_pretrained(variant="fp16") of a half model: pytorch_model.fp16.bin, and sharded
    # pytorch_model.fp16-00001-of-0000N.bin + pytorch_model.bin.index.fp16.json
    half = {}
    for name, tensor in bin_sd.items():  # tied names stay one storage
        alias = next((n for n in half if bin_sd[n] is tensor), None)
        half[name] = half[alias] if alias else (tensor.half() if tensor.is_floating_point() else tensor)
    config = json.loads((st / "config.json").read_text())
    config["dtype"] = "float16"
    for name in ("bin-fp16", "bin-fp16-sharded"):
        (root / f"src-{name}").mkdir()
        (root / f"src-{name}" / "config.json").write_text(json.dumps(config, indent=2))
    torch.save(half, root / "src-bin-fp16" / "pytorch_model.fp16.bin")
    split = split_torch_state_dict_into_shards(half, filename_pattern="pytorch_model.fp16{suffix}.bin",
                                               max_shard_size=max(largest // 2, unique_nbytes(half) // 3))
    for filename, names in split.filename_to_tensors.items():
        torch.save({n: half[n] for n in names}, root / "src-bin-fp16-sharded" / filename)
    index = {"metadata": {"total_size": split.metadata["total_size"]}, "weight_map": split.tensor_to_filename}
    (root / "src-bin-fp16-sharded" / "pytorch_model.bin.index.fp16.json").write_text(json.dumps(index, indent=2))
    # a DDP-wrapped state dict (every name under `module.`), config beside it
    (root / "src-bin-ddp").mkdir()
    shutil.copy(st / "config.json", root / "src-bin-ddp" / "config.json")
    torch.save({f"module.{k}": v for k, v in bin_sd.items()}, root / "src-bin-ddp" / "pytorch_model.bin")
    # a training checkpoint: the state dict nested beside an optimizer's state, config beside it
    (root / "src-ckpt").mkdir()
    shutil.copy(st / "config.json", root / "src-ckpt" / "config.json")
    torch.save({"epoch": 3, "model_state_dict": bin_sd, "optimizer_state_dict": {"state": {}, "param_groups": []}},
               root / "src-ckpt" / "checkpoint.pt")
    return {"bin-ddp": root / "src-bin-ddp", "ckpt": root / "src-ckpt", "st": st, "st-sharded": root / "src-st-sharded",
            "bin": root / "src-bin",
            "bin-sharded": root / "src-bin-sharded", "bin-fp16": root / "src-bin-fp16",
            "bin-fp16-sharded": root / "src-bin-fp16-sharded"}


# ---------------------------------------------------------------- checks


class Failure(Exception):
    """One check of a case failed."""


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())


def _check_files(out: Path, fmt: str, report: dict[str, Any], source: dict[str, torch.Tensor],
                 max_bytes: int | None = None, oracle_split: dict[str, list[str]] | None = None,
                 variant: str | None = None) -> dict[str, torch.Tensor]:
    """Checks the weight files of folder `out` and the JSON report against them; returns every tensor."""
    from safetensors import safe_open

    files = _weight_files(out)
    if not files:
        raise Failure("no weight file written")
    ext = ".safetensors" if fmt == "safetensors" else ".bin"
    if any(p.suffix != ext for p in files):
        raise Failure(f"weight files of another format: {[p.name for p in files]}")
    per_file: dict[str, dict[str, torch.Tensor]] = {}
    for path in files:
        if fmt == "safetensors":
            with safe_open(path, framework="pt") as handle:
                if (handle.metadata() or {}).get("format") != "pt":
                    raise Failure(f"{path.name}: metadata {handle.metadata()}, not format=pt")
        per_file[path.name] = _file_tensors(path)
    everything: dict[str, torch.Tensor] = {}
    for tensors in per_file.values():
        for key, tensor in tensors.items():
            if key in everything:
                raise Failure(f"{key} in two files")
            everything[key] = tensor
    index_files = sorted(out.glob("*.index*.json"))
    stem = "model" if fmt == "safetensors" else "pytorch_model"
    dotted = f".{variant}" if variant else ""
    if len(files) == 1 and not index_files and files[0].name != f"{stem}{dotted}{ext}":
        raise Failure(f"file named {files[0].name}")
    if len(files) > 1 or index_files:
        if len(index_files) != 1:
            raise Failure(f"{len(files)} weight files, indexes: {[p.name for p in index_files]}")
        index = json.loads(index_files[0].read_text())
        if index_files[0].name != f"{stem}{ext}.index{dotted}.json":
            raise Failure(f"index named {index_files[0].name}")
        pattern = re.compile(rf"{stem}{re.escape(dotted)}-(\d{{5}})-of-(\d{{5}}){re.escape(ext)}")
        for number, path in enumerate(files, 1):
            match = pattern.fullmatch(path.name)
            if not match or int(match[1]) != number or int(match[2]) != len(files):
                raise Failure(f"shard name {path.name}")
        expected_map = {k: name for name, tensors in per_file.items() for k in tensors}
        if index.get("weight_map") != expected_map:
            raise Failure("weight_map does not name each tensor of the shards exactly once")
        total = sum(unique_nbytes(t) for t in per_file.values())
        if index.get("metadata", {}).get("total_size") != total:
            raise Failure(f"index total_size {index.get('metadata', {}).get('total_size')} != {total}")
        if oracle_split is not None and {k: sorted(v) for k, v in oracle_split.items()} != {
                k: sorted(v) for k, v in ((n, list(t)) for n, t in per_file.items())}:
            raise Failure(f"split differs from huggingface_hub's: {len(oracle_split)} vs {len(per_file)} shards")
    if max_bytes:
        for name, tensors in per_file.items():
            size = unique_nbytes(tensors)
            storages = {(t.untyped_storage().data_ptr(), t.nbytes) for t in tensors.values()}  # tied names: one
            if size > max_bytes and len(storages) > 1:
                raise Failure(f"{name}: {size} bytes of tensors > --max {max_bytes} with {len(tensors)} tensors")
    # --json against the files
    plan, write = report["plan"], report["write"]
    if plan["num_tensors"] != len(everything):
        raise Failure(f"json num_tensors {plan['num_tensors']} != {len(everything)} written")
    measured = sum(unique_nbytes(t) for t in per_file.values())
    if plan["total_bytes"] != measured:
        raise Failure(f"json total_bytes {plan['total_bytes']} != {measured} measured")
    written = {f["filename"].rsplit("/", 1)[-1]: f for f in write["files"]}
    if set(written) != set(per_file):
        raise Failure(f"json files {sorted(written)} != {sorted(per_file)}")
    for name, entry in written.items():
        if entry["size_bytes"] != (out / name).stat().st_size or entry["num_tensors"] != len(per_file[name]):
            raise Failure(f"json {name}: {entry} vs {(out / name).stat().st_size} bytes, "
                          f"{len(per_file[name])} tensors")
    if not write["verified"] or write["tensors_verified"] != len(everything):
        raise Failure(f"json verified {write['verified']} tensors_verified {write['tensors_verified']}")
    planned = plan.get("files") or plan.get("shards")
    for entry in planned:
        name = entry["filename"].rsplit("/", 1)[-1]
        size = unique_nbytes(per_file.get(name, {}))
        if entry.get("nbytes", entry.get("size_bytes")) != size or entry["num_tensors"] != len(per_file[name]):
            raise Failure(f"json plan {name}: {entry} vs {size} tensor bytes, {len(per_file[name])} tensors")
        if entry["first"] not in per_file[name] or entry["last"] not in per_file[name]:
            raise Failure(f"json plan {name}: first/last {entry['first']}/{entry['last']} not in the file")
        if "oversized" in entry and entry["oversized"] != bool(max_bytes and size > max_bytes):
            raise Failure(f"json plan {name}: oversized {entry['oversized']} for {size} bytes, --max {max_bytes}")
    index_files = sorted(p.name for p in out.glob("*.index*.json"))
    if (plan["index"] or None) != (index_files[0] if index_files else None):
        raise Failure(f"json index {plan['index']} vs {index_files}")
    # every tensor written equals the source's, bitwise or cast; the dropped names are tied to a kept one
    cast = 0
    # A .bin written from a transformers-5 safetensors also holds the names the model ties and the source does not
    # store (GPT-2's lm_head.weight), as torch.save of the model does: each one more name of a written source tensor's
    # storage (users24). Any other name not in the source is a failure.
    stored = {everything[k].untyped_storage().data_ptr(): k for k in everything if k in source}
    for key, tensor in everything.items():
        if key not in source:
            if fmt == "bin" and tensor.untyped_storage().data_ptr() in stored:
                continue
            raise Failure(f"{key} written, not in the source")
        want = source[key]
        if want.dtype != tensor.dtype:
            cast += 1
            want = want.to(tensor.dtype)
        if want.shape != tensor.shape or not torch.equal(want, tensor):
            raise Failure(f"{key}: written values differ from the source's")
    if sum(plan["cast"].values()) != cast:
        raise Failure(f"json cast {plan['cast']}, {cast} tensors written at another dtype")
    if any(everything[k].dtype != torch.float32 for k in plan["kept_fp32"]):
        raise Failure("a tensor of kept_fp32 is not float32")
    dropped = {d["name"]: d["kept"] for d in plan["dropped_aliases"]}
    if set(source) - set(everything) != set(dropped):
        raise Failure(f"dropped {sorted(set(source) - set(everything))}, json says {sorted(dropped)}")
    for name, kept in dropped.items():
        if kept not in everything or source[name].data_ptr() != source[kept].data_ptr():
            raise Failure(f"{name} dropped for {kept}, which is not its tied name")
    return everything


def _loaded(model_class: type, folder: Path, variant: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    model, info = model_class.from_pretrained(folder, output_loading_info=True, dtype="auto", variant=variant)
    return model, {k: sorted(map(str, v)) for k, v in info.items() if k != "error_msgs"}


def _check_load(model_class: type, out: Path, original: torch.nn.Module, baseline: dict[str, Any],
                cast: torch.dtype | None, saved: set[str], variant: str | None = None,
                via: torch.dtype | None = None, tool_config: bool = True) -> None:
    """`via`: the dtype the source itself holds (a half model's fp16 variant), cast from before `cast`;
    `tool_config`: config.json was copied by the tool (a folder output), so it names the cast dtype."""
    loaded, info = _loaded(model_class, out, variant)
    if info != baseline:
        raise Failure(f"loading info {info} != save_pretrained's {baseline}")
    # what save_pretrained leaves out (Marian's sinusoidal positions) is recomputed on load, not read: skipped
    missing = set(baseline.get("missing_keys", [])) | (set(original.state_dict()) - saved)
    ours = original.state_dict()
    for key, tensor in loaded.state_dict().items():
        if key in missing:
            continue
        want = ours[key]
        if via is not None and want.is_floating_point():
            want = want.to(via)
        if cast is not None and want.is_floating_point():
            want = want.to(cast)
        want = want.to(tensor.dtype)
        if tensor.shape != want.shape or not torch.equal(tensor, want):
            raise Failure(f"{key}: loaded {tensor.dtype} {tuple(tensor.shape)} differs from the original"
                          + (f" cast to {cast}" if cast else ""))
    if cast is not None and tool_config:
        config = json.loads((out / "config.json").read_text())
        if config.get("dtype", config.get("torch_dtype")) != str(cast).removeprefix("torch."):
            raise Failure(f"config.json dtype {config.get('dtype')} after the cast to {cast}")


# ---------------------------------------------------------------- the sweep


def _run(args: list[str]) -> dict[str, Any]:
    from typer.testing import CliRunner

    from weightdoctor.cli import app

    result = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=True)
    if result.exit_code != 0:
        raise Failure(f"exit {result.exit_code}: {(result.stderr or '').strip()[-300:]}"
                      + (f" {type(result.exception).__name__}: {result.exception}" if result.exception
                         and not isinstance(result.exception, SystemExit) else ""))
    try:
        return json.loads(result.stdout)
    except ValueError as exc:
        raise Failure(f"--json output not JSON: {exc}") from exc


def _cases(quick: bool) -> list[tuple[str, Callable[..., None]]]:
    """(case name, function(ctx)) for one architecture."""

    def convert(source: str, target: str, fmt: str, dtype: str | None = None, single: str | None = None,
                extra: tuple[str, ...] = ()):
        def run(ctx: dict[str, Any]) -> None:
            src = ctx["sources"][source]
            out = ctx["root"] / f"out-{ctx['n']}"
            ctx["n"] += 1
            if single:  # a file converts to a file: put it in a folder beside the config, as a user would
                out.mkdir()
                source_file = src / single
                dest = out / ("model.safetensors" if fmt == "safetensors" else "pytorch_model.bin")
                report = _run(["convert", str(source_file), "-o", str(dest), *(["--dtype", dtype] if dtype else [])])
                shutil.copy(src / "config.json", out / "config.json")  # as it was: a file output has no config
            else:
                target_arg = str(src / target) if target else str(src)
                report = _run(["convert", target_arg, "-o", str(out), *(["--to", "bin"] if fmt == "bin" else []),
                               *(["--dtype", dtype] if dtype else []), *extra])
            variant = (dtype or "fp16") if "fp16" in source and dtype != "fp32" else None
            _check_files(out, fmt, report, ctx["tensors"][source], variant=variant)
            _check_load(ctx["class"], out, ctx["model"], ctx["baseline"], DTYPES.get(dtype or variant or ""),
                        set(ctx["tensors"]["bin"]), variant,
                        torch.float16 if "fp16" in source else None, not single)
        return run

    def shard(source: str, size: str, fmt: str = "safetensors", dtype: str | None = None, target: str = "",
              extra: tuple[str, ...] = ()):
        def run(ctx: dict[str, Any]) -> None:
            from huggingface_hub import split_torch_state_dict_into_shards

            from weightdoctor.checkpoint.reader import natural_order
            from weightdoctor.units import parse_size

            src = ctx["sources"][source]
            out = ctx["root"] / f"out-{ctx['n']}"
            ctx["n"] += 1
            max_text = {"small": f"{ctx['largest'] // 2}", "medium": f"{ctx['largest'] * 2}",
                        "third": f"{ctx['total'] // 3}"}.get(size, size)
            report = _run(["shard", str(src / target) if target else str(src), "--max", max_text, "-o", str(out),
                           *(["--format", "bin"] if fmt == "bin" else []), *(["--dtype", dtype] if dtype else []),
                           *extra])
            max_bytes = parse_size(max_text) or None
            # huggingface_hub's split of the tensors written (tied names dropped as the load check verifies), in
            # the source's order: shard after shard, each pickle's tensors as saved, each safetensors file's in
            # natural name order (`layers.2` before `layers.10`; save_pretrained splits in the modules' order,
            # which a safetensors file does not keep: compared apart below)
            written: set[str] = set()
            for path in _weight_files(out):
                written |= set(_file_tensors(path))
            tensors = {}
            for path in _weight_files(src):
                in_file = _file_tensors(path)
                names = sorted(in_file, key=natural_order) if path.suffix == ".safetensors" else list(in_file)
                tensors.update((name, in_file[name]) for name in names)
            if source == "bin-ddp":  # as --strip-prefix module. renames them
                tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
            tensors = {k: v for k, v in tensors.items() if k in written}
            if dtype:  # cast once per storage: tied names stay one storage
                cast: dict[int, torch.Tensor] = {}
                tensors = {k: cast.setdefault(v.data_ptr(), v.to(DTYPES[dtype])) if v.is_floating_point() else v
                           for k, v in tensors.items()}
            stem = "model" if fmt == "safetensors" else "pytorch_model"
            ext = ".safetensors" if fmt == "safetensors" else ".bin"
            variant = (dtype or "fp16") if "fp16" in source and dtype != "fp32" else None
            dotted = f".{variant}" if variant else ""
            oracle = split_torch_state_dict_into_shards(tensors, filename_pattern=stem + dotted + "{suffix}" + ext,
                                                        max_shard_size=max_bytes or 10**15).filename_to_tensors
            _check_files(out, fmt, report, ctx["tensors"][source], max_bytes=max_bytes, oracle_split=oracle,
                         variant=variant)
            if source == "st" and fmt == "safetensors" and not dtype:
                # save_pretrained's own weight_map at the same max_shard_size
                theirs = ctx["root"] / f"sp-{ctx['n']}"
                ctx["model"].save_pretrained(theirs, max_shard_size=max_bytes)
                index = sorted(theirs.glob("*.index.json"))
                ours = sorted(out.glob("*.index.json"))
                if bool(index) != bool(ours):
                    raise Failure(f"save_pretrained wrote index {bool(index)}, weightdoctor {bool(ours)}")
                if index:
                    a, b = json.loads(index[0].read_text()), json.loads(ours[0].read_text())
                    if set(a["weight_map"]) != set(b["weight_map"]):
                        raise Failure("weight_map names other tensors than save_pretrained's")
                    if a["weight_map"] != b["weight_map"]:  # the split follows another order: noted
                        ctx["notes"].append("split differs from save_pretrained's (module order)")
                    if a["metadata"].get("total_size") != b["metadata"].get("total_size"):
                        raise Failure(f"total_size {b['metadata']} != save_pretrained's {a['metadata']}")
            _check_load(ctx["class"], out, ctx["model"], ctx["baseline"], DTYPES.get(dtype or variant or ""),
                        set(ctx["tensors"]["bin"]), variant,
                        torch.float16 if "fp16" in source else None)
        return run

    cases = [
        ("convert-bin-file>st", convert("bin", "", "safetensors", single="pytorch_model.bin")),
        ("convert-bin-dir>st", convert("bin", "", "safetensors")),
        ("convert-binshard-dir>st", convert("bin-sharded", "", "safetensors")),
        ("convert-bin-dir>st-bf16", convert("bin", "", "safetensors", dtype="bf16")),
        ("convert-st-dir>bin", convert("st", "", "bin")),
        ("shard-st-small", shard("st", "small")),
        ("shard-bin-medium", shard("bin", "medium")),
    ]
    if not quick:
        cases += [
            ("convert-binshard-index>st", convert("bin-sharded", "pytorch_model.bin.index.json", "safetensors")),
            ("convert-bin-dir>st-fp16", convert("bin", "", "safetensors", dtype="fp16")),
            ("convert-binshard-dir>st-bf16", convert("bin-sharded", "", "safetensors", dtype="bf16")),
            ("convert-stshard-dir>bin", convert("st-sharded", "", "bin")),
            ("convert-st-file>bin", convert("st", "", "bin", single="model.safetensors")),
            ("convert-stshard-dir>bin-fp16", convert("st-sharded", "", "bin", dtype="fp16")),
            ("shard-st-medium", shard("st", "medium")),
            ("shard-st-third", shard("st", "third")),
            ("shard-st-kib", shard("st", "64KiB")),
            ("shard-stshard-medium", shard("st-sharded", "medium")),
            ("shard-bin-small", shard("bin", "small")),
            ("shard-binshard-third", shard("bin-sharded", "third")),
            ("shard-st-medium-bin", shard("st", "medium", fmt="bin")),
            ("shard-bin-medium-bf16", shard("bin", "medium", dtype="bf16")),
            ("shard-bin-small-bin", shard("bin", "small", fmt="bin")),
            ("shard-binshard-index-medium", shard("bin-sharded", "medium", target="pytorch_model.bin.index.json")),
            ("shard-binshard-single", shard("bin-sharded", "0")),
            ("convert-bin-dir>bin", convert("bin", "", "bin")),
            ("convert-binddp-dir>st-strip", convert("bin-ddp", "", "safetensors", extra=("--strip-prefix", "module."))),
            ("shard-binddp-small-bin-strip", shard("bin-ddp", "small", fmt="bin", extra=("--strip-prefix", "module."))),
            ("convert-ckpt-file>st", convert("ckpt", "", "safetensors", single="checkpoint.pt")),
            ("convert-ckpt-file>bin-bf16", convert("ckpt", "", "bin", dtype="bf16", single="checkpoint.pt")),
            ("convert-bin-dir>bin-bf16", convert("bin", "", "bin", dtype="bf16")),
            ("shard-bin-small-bin-fp16", shard("bin", "small", fmt="bin", dtype="fp16")),
            ("convert-bin-dir>bin-bf16-keep-head", convert("bin", "", "bin", dtype="bf16",
                                                           extra=("--keep-fp32", "lm_head|shared|proj_out"))),
            ("convert-bin-dir>st-bf16-keep-head", convert("bin", "", "safetensors", dtype="bf16",
                                                          extra=("--keep-fp32", "lm_head|shared|proj_out"))),
            ("convert-st-dir>st-fp16", convert("st", "", "safetensors", dtype="fp16")),
            ("convert-stshard-dir>st-fp32", convert("st-sharded", "", "safetensors", dtype="fp32")),
            ("convert-binfp16-dir>st", convert("bin-fp16", "", "safetensors")),
            ("convert-binfp16shard-dir>st", convert("bin-fp16-sharded", "", "safetensors")),
            ("convert-binfp16shard-dir>st-bf16", convert("bin-fp16-sharded", "", "safetensors", dtype="bf16")),
            ("shard-binfp16shard-medium", shard("bin-fp16-sharded", "medium")),
            ("shard-binfp16-small-bin", shard("bin-fp16", "small", fmt="bin")),
            ("convert-binfp16-dir>st-fp32", convert("bin-fp16", "", "safetensors", dtype="fp32")),
            ("shard-binfp16shard-medium-bf16", shard("bin-fp16-sharded", "medium", dtype="bf16")),
            ("convert-bin-dir>st-bf16-keep", convert("bin", "", "safetensors", dtype="bf16",
                                                     extra=("--keep-fp32", "norm|ln|LayerNorm|bias"))),
        ]
    return cases


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", help="architectures (llama, t5, ...) or cases (t5/shard-st-small)")
    parser.add_argument("--quick", action="store_true", help="7 cases per architecture instead of 43")
    parser.add_argument("--verbose", action="store_true", help="print each failure's traceback")
    args = parser.parse_args()
    quiet_libraries()

    counts = {"passed": 0, "failed": 0, "error": 0}
    started = time.perf_counter()
    rows: list[tuple[str, str]] = []
    models = _models()
    wanted = set(args.only or [])
    for arch, build in models.items():
        cases = [(c, f) for c, f in _cases(args.quick)
                 if not wanted or arch in wanted or f"{arch}/{c}" in wanted]
        if not cases:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            try:
                torch.manual_seed(SEED)
                model = build().eval()
                sources = build_sources(model, root)
                _, baseline = _loaded(type(model), sources["st"])
                on_disk = _file_tensors(sources["st"] / "model.safetensors")
            except Exception as exc:  # noqa: BLE001 - a sweep reports and goes on
                counts["error"] += 1
                rows.append((f"{arch}", f"ERROR building: {type(exc).__name__}: {str(exc)[:160]}"))
                continue
            hashes = {name: _sha(path) for name, path in sources.items()}
            tensors = {}
            for source, path in sources.items():
                tensors[source] = {}
                for weights in _weight_files(path):
                    tensors[source].update(_file_tensors(weights))
            tensors["ckpt"] = tensors["bin"]  # the same state dict, nested
            tensors["bin-ddp"] = tensors["bin"]  # the same names once --strip-prefix module. has run
            ctx = {"root": root, "tensors": tensors, "sources": sources, "model": model, "class": type(model),
                   "baseline": baseline,
                   "n": 0, "notes": [], "largest": max(t.nbytes for t in on_disk.values()),
                   "total": sum(t.nbytes for t in on_disk.values())}
            for case, run in cases:
                name = f"{arch}/{case}"
                try:
                    run(ctx)
                    for source, path in sources.items():
                        if _sha(path) != hashes[source]:
                            raise Failure(f"the source {source} changed")
                except Failure as exc:
                    counts["failed"] += 1
                    rows.append((name, f"FAILED {exc}"[:400]))
                    ctx["notes"] = []
                    continue
                except Exception as exc:  # noqa: BLE001
                    counts["error"] += 1
                    rows.append((name, f"ERROR {type(exc).__name__}: {exc}"[:400]))
                    if args.verbose:
                        import traceback

                        traceback.print_exc()
                    continue
                counts["passed"] += 1
                rows.append((name, "ok" + (f" (note: {'; '.join(ctx['notes'])})" if ctx["notes"] else "")))
                ctx["notes"] = []
            passed = sum(1 for r in rows if r[0].startswith(arch + "/") and r[1].startswith("ok"))
            print(f"{arch}: {passed}/{len(cases)}", file=sys.stderr)
    print_table(("case", "verdict"), rows, (None, None))
    total = sum(counts.values())
    print(f"\ncases: {total}  passed: {counts['passed']}  failed: {counts['failed']}  errors: {counts['error']}  "
          f"time: {time.perf_counter() - started:.1f} s")
    return 0 if counts["failed"] == counts["error"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
