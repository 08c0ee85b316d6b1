"""Oracle sweep of `weightdoctor inspect SOURCE --json` (structure, no --stats) against the libraries.

For tiny seeded models of 49 architectures (decoder LMs tied and untied, MoE, encoders, encoder-decoders with
shared embeddings, vision with BatchNorm buffers, speech with weight-norm parametrizations, multimodal), and four
plain torch modules (the files a training script writes: `st-file`, `state-dict`, `ckpt`), each saved several
ways:

* `st`: `save_pretrained` (one safetensors file); `st-sharded`: the same with a small `max_shard_size`;
* `bin`, `bin-sharded`: `torch.save` of the state dict the way transformers 4 wrote `pytorch_model.bin` (tied
  names kept, sharing one storage; sharded by huggingface_hub with a v4 index) -- transformers 5 writes no .bin;
* `fp16`, `bf16`: the model cast, then `save_pretrained`; `fp16-keep32` (models with `_keep_in_fp32_modules`:
  T5, mT5): `from_pretrained(dtype=float16)` saved again, its `wo` layers still float32;
* `bin-views`: that `.bin` with the weights of one module's children (q/k/v) saved as row slices of one fused
  storage, and one weight as a transposed view; `bin-legacy`: that `.bin` in torch's pre-1.6 (non-zip) format;
* `st-file`: `safetensors.torch.save_model(model)`, one file, no config (a tied pair under one of its names);
* `state-dict`: a plain `torch.save(model.state_dict())` file (every tied name, every persistent buffer; no config);
  `ckpt`: the same state dict as a training checkpoint's `model_state_dict`, beside `epoch` and an optimizer's state;
* `st-index`, `bin-index`: the sharded folders' index files given as SOURCE (they come with `st-sharded`,
  `bin-sharded`),

runs `weightdoctor inspect SRC --json` in-process (the Typer app) and compares it with:

* the tensors: names and count against `safe_open(...).keys()` / `torch.load(weights_only=True)` of every weight
  file (per file, and over the shards); each tensor's shape, dtype, parameters, bytes and file;
* storages: `shared_tensors` against the names `torch.load` gives one storage; `num_params`, `total_bytes` and
  the dtype histogram against the elements and `tensor.nbytes` of the tensors with one name per view counted
  once (what inspect documents); `memory` against the same tensors at each dtype;
* `num_params` against `model.num_parameters()` of the model `from_pretrained` loads from the source (for the
  plain state-dict file, of the model saved) plus the elements of the persistent buffers the checkpoint holds
  (inspect counts every stored tensor; it does not know which are buffers), less the parameters save_pretrained
  leaves out on purpose (`_keys_to_ignore_on_save`: Marian's sinusoidal positions, rebuilt at load);
* the module tree: each node's `num_params`, `num_tensors`, `tied_params` against the tensors under its
  name (collapsed `{a..b}` blocks expanded), the top level summing to `num_params`;
* the config: `config` equal to config.json; `config_summary`'s `model_type`, `architectures`, `torch_dtype`
  equal to config.json's, and its `hidden_size`, `num_layers`, `num_heads`, `vocab_size` to what transformers'
  own config class says (`get_text_config()`), or noted where they differ by inspect's definition;
* `files` (paths, roles, sizes on disk), `format`, `sharded`, safetensors `metadata`; a warning naming a weight
  file of the folder that from_pretrained (and inspect) leaves unread;
* the table without --json (`--all`): its tensors / parameters / tensor bytes lines, and every tensor listed.

docs/inspect-sweep.md has the figures.

    PYTHONPATH=. .venv/bin/python scripts/inspect_sweep.py [--only ARCH ...] [--quick] [--verbose]

Prints one line per case (case / tensors / parameters / verdict) and the counts; exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import itertools
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
FORMS = ("st", "st-sharded", "bin", "bin-sharded", "st+bin", "bin-views", "bin-legacy", "fp16", "bf16", "fp16-keep32",
         "st-file", "state-dict", "ckpt")
QUICK_FORMS = ("st", "st-sharded", "bin", "state-dict")
# safetensors' dtype names -> torch's (which inspect uses)
ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
             "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
             "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
FLOATING = {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"}
MEMORY_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "int4": 0.5}


NESTED_KEY = "model_state_dict"  # where the `ckpt` form keeps the state dict


class Difference(Exception):
    """inspect and an oracle disagree."""


def _models() -> dict[str, Callable[[], torch.nn.Module]]:
    """The round-trip sweep's tiny models, and those with buffers or layouts it lacks: name -> builder."""
    import transformers as T
    from roundtrip_sweep import _models as roundtrip_models

    models = {k: v for k, v in roundtrip_models().items() if k != "llama-bf16"}  # bf16 is a form here
    kv = {"vocab_size": 500, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
          "num_attention_heads": 4, "max_position_embeddings": 128, "num_key_value_heads": 2}
    vit = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
           "image_size": 32, "patch_size": 8}
    text = {"vocab_size": 500, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 64}
    models.update({
        "qwen3": lambda: T.Qwen3ForCausalLM(T.Qwen3Config(**kv, head_dim=16)),
        "qwen3-tied": lambda: T.Qwen3ForCausalLM(T.Qwen3Config(**kv, head_dim=16, tie_word_embeddings=True)),
        "qwen3_moe": lambda: T.Qwen3MoeForCausalLM(T.Qwen3MoeConfig(**kv, head_dim=16, num_experts=4,
                                                                    num_experts_per_tok=2, moe_intermediate_size=32,
                                                                    mlp_only_layers=[0])),
        "olmoe": lambda: T.OlmoeForCausalLM(T.OlmoeConfig(**kv, num_experts=4, num_experts_per_tok=2)),
        "stablelm": lambda: T.StableLmForCausalLM(T.StableLmConfig(**kv)),
        "mpt": lambda: T.MptForCausalLM(T.MptConfig(d_model=64, n_heads=4, n_layers=2, vocab_size=500,
                                                    max_seq_len=128)),
        # BatchNorm: running_mean / running_var / num_batches_tracked (an int64 scalar) are persistent buffers
        "resnet": lambda: T.ResNetForImageClassification(T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16],
                                                                        depths=[1, 2], num_labels=5)),
        "convnext": lambda: T.ConvNextForImageClassification(T.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16],
                                                                              depths=[1, 2], image_size=32,
                                                                              num_labels=5)),
        # Swin: relative_position_index, an int64 buffer, is not persistent in transformers 5 (not in the files)
        "swin": lambda: T.SwinForImageClassification(T.SwinConfig(image_size=32, patch_size=4, embed_dim=16,
                                                                  depths=[1, 1], num_heads=[2, 2], window_size=4,
                                                                  num_labels=5)),
        "deit": lambda: T.DeiTForImageClassificationWithTeacher(T.DeiTConfig(**vit, num_labels=5)),
        "siglip": lambda: T.SiglipModel(T.SiglipConfig(text_config=text, vision_config=vit)),
        # plain torch modules (no config, no save_pretrained: the st-file, state-dict and ckpt forms): tensors at the
        # top level, numbered modules at the root, an LSTM's flat names, torch's own weight norm
        "torch-mlp": lambda: torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16),
                                                 torch.nn.Linear(16, 16), torch.nn.BatchNorm1d(16),
                                                 torch.nn.Linear(16, 4)),
        "torch-lstm": lambda: torch.nn.LSTM(8, 16, num_layers=2),
        "torch-transformer": lambda: torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(16, 2, 32),
                                                                 3, enable_nested_tensor=False),
        "torch-weight-norm": lambda: torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(4, 4, 3)),
        # blocks of 2 layers each: the module tree's nested collapse, `encoder.blocks.{0..1}.{0..1}`
        "funnel": lambda: T.FunnelForMaskedLM(T.FunnelConfig(vocab_size=500, block_sizes=[2, 2], d_model=64, n_head=4,
                                                             d_head=16, d_inner=96)),
        "wav2vec2-base": lambda: T.Wav2Vec2Model(T.Wav2Vec2Config(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, conv_dim=(32, 32),
            conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
            feat_extract_norm="layer", do_stable_layer_norm=True)),
    })
    return models


# ---------------------------------------------------------------- sources


def _v4_state_dict(model: torch.nn.Module, on_disk: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What transformers 4 passed to torch.save: save_pretrained's tensors (under the names it writes, which
    transformers 5 may convert, MoE experts unfused) plus the tied names, sharing one storage (as
    roundtrip_sweep.build_sources makes them)."""
    by_ptr: dict[int, str] = {}
    state = model.state_dict()
    for name, tensor in state.items():
        if name in on_disk:
            by_ptr.setdefault(tensor.data_ptr(), name)
    out = dict(on_disk)
    for name, tensor in state.items():
        if name not in out and tensor.data_ptr() in by_ptr:
            out[name] = out[by_ptr[tensor.data_ptr()]]
    return out


def _with_views(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict as a conversion script may save it: the 2-D weights of one module's children with equal
    columns (q/k/v projections, an MLP's gate and up) as row slices of one fused storage, and one more weight as
    a transposed (non-contiguous) view. Tied tensors are left as they are."""
    owners: dict[int, int] = {}
    for tensor in state.values():
        owners[tensor.untyped_storage().data_ptr()] = owners.get(tensor.untyped_storage().data_ptr(), 0) + 1
    groups: dict[tuple[str, int, torch.dtype], list[str]] = {}
    for name, tensor in state.items():
        if (name.endswith(".weight") and tensor.dim() == 2 and tensor.is_floating_point() and name.count(".") >= 2
                and owners[tensor.untyped_storage().data_ptr()] == 1):
            groups.setdefault((name.rsplit(".", 2)[0], tensor.shape[1], tensor.dtype), []).append(name)
    out = dict(state)
    fused = [names for names in groups.values() if len(names) > 1]
    for names in fused:
        whole = torch.cat([state[n] for n in names])
        row = 0
        for name in names:
            out[name] = whole[row:row + state[name].shape[0]]
            row += state[name].shape[0]
    single = [names[0] for names in groups.values() if len(names) == 1]
    if single:
        out[single[0]] = state[single[0]].T.contiguous().T
    return out


def build_sources(model: torch.nn.Module, root: Path, forms: tuple[str, ...]) -> dict[str, Path]:
    """The model saved each way of `forms`: form -> the path inspect is given (a folder, or the .pt file)."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import load_file

    if not hasattr(model, "save_pretrained"):  # a plain torch module
        return _plain_sources(model, root, forms)
    sources: dict[str, Path] = {}
    st = root / "st"
    model.save_pretrained(st)
    on_disk = load_file(st / "model.safetensors")
    largest = max(t.nbytes for t in on_disk.values())
    total = sum(t.nbytes for t in on_disk.values())
    if "st" in forms:
        sources["st"] = st
    if "st-sharded" in forms:
        model.save_pretrained(root / "st-sharded", max_shard_size=max(largest, total // 4))
        sources["st-sharded"] = root / "st-sharded"
        sources["st-index"] = root / "st-sharded" / "model.safetensors.index.json"
    v4 = _v4_state_dict(model, on_disk)
    for form in ("bin", "bin-sharded"):
        if form not in forms:
            continue
        folder = root / form
        folder.mkdir()
        shutil.copy(st / "config.json", folder / "config.json")
        if form == "bin":
            torch.save(v4, folder / "pytorch_model.bin")
        else:
            split = split_torch_state_dict_into_shards(v4, filename_pattern="pytorch_model{suffix}.bin",
                                                       max_shard_size=max(largest, unique_nbytes(v4) // 3))
            for filename, names in split.filename_to_tensors.items():
                torch.save({n: v4[n] for n in names}, folder / filename)
            index = {"metadata": {"total_size": split.metadata["total_size"]}, "weight_map": split.tensor_to_filename}
            (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))
            sources["bin-index"] = folder / "pytorch_model.bin.index.json"
        sources[form] = folder
    if "bin-views" in forms or "bin-legacy" in forms:
        for form in ("bin-views", "bin-legacy"):
            if form in forms:
                (root / form).mkdir()
                shutil.copy(st / "config.json", root / form / "config.json")
                sources[form] = root / form
        if "bin-views" in forms:
            torch.save(_with_views(v4), root / "bin-views" / "pytorch_model.bin")
        if "bin-legacy" in forms:  # torch.save's format before torch 1.6 (no zip), old Hub repos have it
            torch.save(v4, root / "bin-legacy" / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    if "st+bin" in forms:  # both formats in one folder, as many Hub repos hold them: from_pretrained reads one
        shutil.copytree(st, root / "st+bin")
        torch.save(v4, root / "st+bin" / "pytorch_model.bin")
        sources["st+bin"] = root / "st+bin"
    for form, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        if form in forms:
            import copy

            copy.deepcopy(model).to(dtype).save_pretrained(root / form)
            sources[form] = root / form
    if "fp16-keep32" in forms and getattr(model, "_keep_in_fp32_modules", None):
        # from_pretrained(dtype=float16) keeps T5's `wo` in float32: a checkpoint of two dtypes
        type(model).from_pretrained(st, dtype=torch.float16).save_pretrained(root / "fp16-keep32")
        sources["fp16-keep32"] = root / "fp16-keep32"
    return {**sources, **_plain_sources(model, root, forms)}


def _plain_sources(model: torch.nn.Module, root: Path, forms: tuple[str, ...]) -> dict[str, Path]:
    """The files a training script writes, no config beside them: `st-file`, `state-dict`, `ckpt`."""
    from safetensors.torch import save_model

    sources: dict[str, Path] = {}
    if "st-file" in forms:  # safetensors' own save_model: a tied pair kept under one of its names
        (root / "st-file").mkdir()
        save_model(model, str(root / "st-file" / "model.safetensors"))
        sources["st-file"] = root / "st-file" / "model.safetensors"
    if "state-dict" in forms:
        (root / "plain").mkdir()
        torch.save(model.state_dict(), root / "plain" / "model.pt")
        sources["state-dict"] = root / "plain" / "model.pt"
    if "ckpt" in forms:  # a training loop's checkpoint: the state dict beside the optimizer's
        (root / "ckpt").mkdir()
        torch.save({"epoch": 3, "model_state_dict": model.state_dict(),
                    "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}},
                   root / "ckpt" / "checkpoint.pt")
        sources["ckpt"] = root / "ckpt" / "checkpoint.pt"
    return sources


# ---------------------------------------------------------------- oracles


# The weight files from_pretrained looks for in a folder, in its order: it reads the first it finds.
FROM_PRETRAINED_ORDER = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                         "pytorch_model.bin.index.json")


def _weight_files(source: Path) -> list[Path]:
    """The weight files a source names: an index's shards, the file itself, or those of a folder that
    from_pretrained reads."""
    if source.is_dir():
        first = next(source / name for name in FROM_PRETRAINED_ORDER if (source / name).is_file())
        return _weight_files(first)
    if source.name.endswith(".index.json"):
        return sorted({source.parent / f for f in json.loads(source.read_text())["weight_map"].values()})
    return [source]


def _folder(source: Path) -> Path:
    return source if source.is_dir() else source.parent


def _read_files(source: Path) -> dict[str, dict[str, Any]]:
    """Per file: name -> (shape, dtype, view key, storage key, numel, nbytes), as safetensors / torch read them."""
    from safetensors import safe_open

    files: dict[str, dict[str, Any]] = {}
    for path in _weight_files(source):
        entries: dict[str, Any] = {}
        if path.suffix == ".safetensors":
            with safe_open(path, "pt") as reader:
                for name in reader.keys():  # noqa: SIM118 - safe_open is not iterable
                    piece = reader.get_slice(name)
                    shape = tuple(piece.get_shape())
                    dtype = ST_DTYPES[piece.get_dtype()]
                    tensor = reader.get_tensor(name)
                    # one safetensors entry is one storage: its own view and storage
                    entries[name] = (shape, dtype, (path.name, name), (path.name, name), tensor.numel(),
                                     tensor.nbytes)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get(NESTED_KEY, state)
            for name, tensor in state.items():
                storage = (path.name, tensor.untyped_storage().data_ptr())
                view = (*storage, tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), str(tensor.dtype))
                entries[name] = (tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."), view, storage,
                                 tensor.numel(), tensor.nbytes)
        files[path.name] = entries
    return files


def _num_parameters(model: torch.nn.Module) -> int:
    """transformers' `num_parameters()`; a plain torch module's parameters (`parameters()` yields a shared one once)."""
    if hasattr(model, "num_parameters"):
        return model.num_parameters()
    return sum(p.numel() for p in model.parameters())


def _persistent_buffers(model: torch.nn.Module) -> dict[str, int]:
    """State-dict names of the model that are buffers, not parameters: name -> elements."""
    parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return {name: t.numel() for name, t in model.state_dict().items() if name not in parameters}


def _expand(name: str) -> list[str]:
    """`h.{0..2}.attn` -> `h.0.attn`, `h.1.attn`, `h.2.attn` (every collapsed range, in order)."""
    parts = re.split(r"\{(\d+)\.\.(\d+)\}", name)
    texts, ranges = parts[0::3], [range(int(a), int(b) + 1) for a, b in zip(parts[1::3], parts[2::3], strict=True)]
    out = []
    for numbers in itertools.product(*ranges):
        out.append(texts[0] + "".join(f"{n}{t}" for n, t in zip(numbers, texts[1:], strict=True)))
    return out


def _check_tree(nodes: list[dict[str, Any]], prefix: str, names: list[str], params: dict[str, int],
                aliases: set[str], path: str = "") -> None:
    """Each node's counts against the tensors under its (expanded) name; children within the first block."""
    for node in nodes:
        blocks: list[str] = []
        if node["name"] == "(top level)" and not prefix:
            under = [n for n in names if "." not in n]
            first_block = ""
        else:
            blocks = [prefix + p for p in _expand(node["name"])]
            under = [n for n in names if any(n.startswith(b + ".") for b in blocks)]
            first_block = blocks[0] + "."
        want = (sum(params[n] for n in under if n not in aliases), len(under),
                sum(params[n] for n in under if n in aliases))
        got = (node["num_params"], node["num_tensors"], node["tied_params"])
        if got != want:
            raise Difference(f"module tree {path + node['name']}: params/tensors/tied {got} != {want} of its names")
        # `blocks.{0..1}.{0..1}` (Funnel's blocks of layers) repeats each of the four layers it names
        if node["repeat"] != (len(blocks) or 1):
            raise Difference(f"module tree {path + node['name']}: repeat {node['repeat']}, {len(blocks)} blocks")
        if node["children"] and first_block:
            _check_tree(node["children"], first_block, names, params, aliases, path + node["name"] + "/")


def check_case(report: dict[str, Any], source: Path, model: torch.nn.Module | None, loaded: torch.nn.Module | None,
               notes: list[str]) -> tuple[int, int]:
    """Raise Difference where `report` (inspect's --json) and the oracles disagree; (tensors, params) checked."""
    files = _read_files(source)
    everything: dict[str, Any] = {}
    for entries in files.values():
        everything.update(entries)
    # tensors: names, count, per file, shape, dtype, sizes
    rows = {row["name"]: row for row in report["tensors"]}
    if len(report["tensors"]) != len(rows):
        raise Difference("a tensor name listed twice")
    if report["num_tensors"] != sum(len(e) for e in files.values()) or set(rows) != set(everything):
        raise Difference(f"tensors: {report['num_tensors']} listed, {sum(len(e) for e in files.values())} in the "
                         f"files; only inspect: {sorted(set(rows) - set(everything))[:3]}, only the files: "
                         f"{sorted(set(everything) - set(rows))[:3]}")
    for file, entries in files.items():
        for name, (shape, dtype, _, _, numel, nbytes) in entries.items():
            row = rows[name]
            if Path(row["file"]).name != file:
                raise Difference(f"{name}: file {row['file']} != {file}")
            if (tuple(row["shape"]), row["dtype"], row["num_params"], row["nbytes"]) != (shape, dtype, numel, nbytes):
                raise Difference(f"{name}: {row['shape']} {row['dtype']} {row['num_params']} {row['nbytes']} B != "
                                 f"{list(shape)} {dtype} {numel} {nbytes} B")
    nested = NESTED_KEY if source.suffix == ".pt" and NESTED_KEY in torch.load(source, weights_only=True) else None
    if report["nested_key"] != nested:
        raise Difference(f"nested_key {report['nested_key']} != {nested}")
    if nested and sorted(e.split(" ")[0] for e in report["other_entries"]) != ["epoch", "optimizer_state_dict"]:
        raise Difference(f"other_entries {report['other_entries']}")
    # storages: shared groups, tied names counted once (the first name, in inspect's order, counts)
    by_storage: dict[Any, list[str]] = {}
    by_view: dict[Any, list[str]] = {}
    for name in rows:
        by_storage.setdefault(everything[name][3], []).append(name)
        by_view.setdefault(everything[name][2], []).append(name)
    shared = sorted(sorted(g) for g in by_storage.values() if len(g) > 1)
    if sorted(sorted(g) for g in report["shared_tensors"]) != shared:
        raise Difference(f"shared_tensors {report['shared_tensors']} != torch's storages {shared}")
    for name, row in rows.items():
        partners = sorted(n for n in by_storage[everything[name][3]] if n != name)
        if sorted(row["shared_with"]) != partners:
            raise Difference(f"{name}: shared_with {row['shared_with']} != {partners}")
    counted = [group[0] for group in by_view.values()]
    aliases = set(rows) - set(counted)
    params = {name: everything[name][4] for name in rows}
    num_params = sum(params[n] for n in counted)
    total_bytes = sum(everything[n][5] for n in counted)
    if (report["num_params"], report["total_bytes"]) != (num_params, total_bytes):
        raise Difference(f"num_params / total_bytes {report['num_params']} / {report['total_bytes']} != "
                         f"{num_params} / {total_bytes} (one name per view)")
    histogram: dict[str, int] = {}
    for name in counted:
        histogram[everything[name][1]] = histogram.get(everything[name][1], 0) + params[name]
    if report["dtypes"] != histogram:
        raise Difference(f"dtypes {report['dtypes']} != {histogram}")
    floating = sum(params[n] for n in counted if everything[n][1] in FLOATING)
    fixed = sum(everything[n][5] for n in counted if everything[n][1] not in FLOATING)
    memory = {k: int(fixed + floating * size) for k, size in MEMORY_BYTES.items()}
    if report["memory"] != memory:
        raise Difference(f"memory {report['memory']} != {memory}")
    # parameters against the model: num_parameters() plus the persistent buffers the checkpoint holds
    against = loaded if loaded is not None else model
    if against is not None:
        buffers = _persistent_buffers(against)
        stored_buffers = sum(n for name, n in buffers.items() if name in rows)
        # parameters save_pretrained leaves out on purpose (Marian's sinusoidal positions, rebuilt at load)
        ignored = [re.compile(p) for p in getattr(against, "_keys_to_ignore_on_save", None) or []]
        unsaved = sum(p.numel() for name, p in against.named_parameters()
                      if name not in rows and any(r.search(name) for r in ignored))
        counted_by_torch = _num_parameters(against)
        expected = counted_by_torch + stored_buffers - unsaved
        if report["num_params"] != expected:
            in_model = set(against.state_dict())
            raise Difference(f"num_params {report['num_params']} != num_parameters() {counted_by_torch} + "
                             f"{stored_buffers} buffer elements - {unsaved} not saved; names not in the model: "
                             f"{sorted(set(rows) - in_model)[:3]}")
        if stored_buffers:
            notes.append(f"{stored_buffers} buffer elements counted as parameters")
        if unsaved:
            notes.append(f"{unsaved} parameters not saved (_keys_to_ignore_on_save)")
    # the module tree
    tree = report["module_tree"]
    if sum(n["num_params"] for n in tree) != report["num_params"]:
        raise Difference(f"module tree sums to {sum(n['num_params'] for n in tree)}, num_params "
                         f"{report['num_params']}")
    _check_tree(tree, "", list(rows), params, aliases)
    # files, format, sharded
    on_disk = {p.name: p.stat().st_size for p in _weight_files(source)}
    listed = {Path(f["path"]).name: f["size_bytes"] for f in report["files"] if f["role"] == "weights"}
    if listed != on_disk:
        raise Difference(f"weight files {listed} != {on_disk}")
    read = (next(name for name in FROM_PRETRAINED_ORDER if (source / name).is_file()) if source.is_dir()
            else source.name)
    indexes = [read] if read.endswith(".index.json") else []
    if sorted(Path(f["path"]).name for f in report["files"] if f["role"] == "index") != indexes:
        raise Difference(f"index files {report['files']} != {indexes}")
    if report["sharded"] != bool(indexes):
        raise Difference(f"sharded {report['sharded']} with indexes {indexes}")
    import zipfile

    want_format = ("safetensors" if all(p.endswith(".safetensors") for p in on_disk) else "pytorch-zip"
                   if all(zipfile.is_zipfile(p) for p in _weight_files(source)) else "pytorch-legacy")
    if report["format"] != want_format:
        raise Difference(f"format {report['format']} != {want_format}")
    unread = sorted(p.name for p in _folder(source).iterdir() if p.suffix in (".safetensors", ".bin")
                    and p.name not in on_disk) if source.is_dir() else []
    for name in unread:
        if not any(name in w for w in report["warnings"]):
            raise Difference(f"no warning names {name}, which inspect does not read: {report['warnings']}")
    if unread:
        notes.append(f"warns that {', '.join(unread)} is not read")
    if want_format == "safetensors":
        from safetensors import safe_open

        metadata = []
        for path in _weight_files(source):
            with safe_open(path, "pt") as reader:
                metadata.append(reader.metadata())
        if any(m != metadata[0] for m in metadata) or report["metadata"] != metadata[0]:
            raise Difference(f"metadata {report['metadata']} != the files' {metadata}")
    _check_config(report, source, notes)
    return len(rows), num_params


SUMMARY_ATTRIBUTES = {"hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
                      "num_heads": "num_attention_heads", "vocab_size": "vocab_size"}
# Where config_summary and transformers' config class differ by definition, not by a bug: (model_type, field) ->
# why. Anything else that differs is a difference.
BY_DEFINITION = {
    ("convnext", "num_layers"): "ConvNextConfig maps num_hidden_layers to num_stages; stages are not layers",
    ("funnel", "num_layers"): "FunnelConfig.num_hidden_layers is a property, sum(block_sizes): no key says it",
}


def _check_config(report: dict[str, Any], source: Path, notes: list[str]) -> None:
    config_path = _folder(source) / "config.json"
    if not config_path.is_file():
        if report["config"] is not None or report["config_summary"] is not None:
            raise Difference("a config reported where there is no config.json")
        return
    from transformers import AutoConfig

    config = json.loads(config_path.read_text())
    if report["config"] != config:
        raise Difference("config differs from config.json")
    summary = report["config_summary"]
    want = {"model_type": config.get("model_type"), "architectures": config.get("architectures"),
            "torch_dtype": config.get("torch_dtype", config.get("dtype"))}
    got = {k: summary.get(k) for k in want}
    if got != want:
        raise Difference(f"config_summary {got} != config.json {want}")
    text = AutoConfig.from_pretrained(_folder(source)).get_text_config()
    for key, attribute in SUMMARY_ATTRIBUTES.items():
        theirs = getattr(text, attribute, None)
        if summary.get(key) == theirs:
            continue
        if (config.get("model_type"), key) not in BY_DEFINITION:
            raise Difference(f"config_summary {key} {summary.get(key)} != transformers' {attribute} {theirs}")
        notes.append(f"{key} {summary.get(key)} vs transformers' {attribute} {theirs}, by definition")


# ---------------------------------------------------------------- the sweep


def _inspect(source: Path) -> dict[str, Any]:
    from typer.testing import CliRunner

    from weightdoctor.cli import app

    result = CliRunner().invoke(app, ["inspect", str(source), "--json"], catch_exceptions=True)
    if result.exit_code != 0:
        raise Difference(f"exit {result.exit_code}: {(result.stderr or '').strip()[-300:]}"
                         + (f" {type(result.exception).__name__}: {result.exception}" if result.exception
                            and not isinstance(result.exception, SystemExit) else ""))
    return json.loads(result.stdout)


def _check_text(report: dict[str, Any], source: Path) -> None:
    """The table a person reads says the JSON's counts and lists every tensor (`--all`)."""
    from typer.testing import CliRunner

    from weightdoctor.cli import app

    result = CliRunner().invoke(app, ["inspect", str(source), "--all"], env={"COLUMNS": "400"})
    if result.exit_code != 0:
        raise Difference(f"the table: exit {result.exit_code}")
    text = result.stdout
    for label, value in (("tensors", report["num_tensors"]), ("parameters", report["num_params"]),
                         ("tensor bytes", report["total_bytes"])):
        if not re.search(rf"│ {label} +{value:,}[ │]", text):
            raise Difference(f"the table does not say {label} {value:,}")
    listed = {line.split("│")[1].strip().split(" (≡")[0] for line in text.splitlines()
              if line.startswith("│") and line.count("│") == 5}
    missing = [t["name"] for t in report["tensors"] if t["name"] not in listed]
    if missing:
        raise Difference(f"the table (--all) leaves out {missing[:3]}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", help="architectures (gpt2, t5, ...) or cases (t5/bin; t5/st-sharded runs "
                                                  "t5/st-index too)")
    parser.add_argument("--quick", action="store_true", help=f"forms {', '.join(QUICK_FORMS)} only")
    parser.add_argument("--verbose", action="store_true", help="print each error's traceback")
    args = parser.parse_args()
    quiet_libraries()

    models = _models()
    wanted = set(args.only or [])
    unknown = {w.split("/")[0] for w in wanted} - set(models)
    if unknown:
        parser.error(f"unknown architectures {sorted(unknown)}; known: {', '.join(models)}")
    counts = {"equal": 0, "different": 0, "error": 0}
    rows: list[tuple[str, str, str, str]] = []
    started = time.perf_counter()
    for arch, build in models.items():
        forms = tuple(f for f in (QUICK_FORMS if args.quick else FORMS)
                      if not wanted or arch in wanted or f"{arch}/{f}" in wanted)
        if not forms:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                torch.manual_seed(SEED)
                model = build().eval()
                sources = build_sources(model, Path(tmp), forms)
            except Exception as exc:  # noqa: BLE001 - a sweep reports and goes on
                counts["error"] += 1
                rows.append((arch, "-", "-", f"ERROR building: {type(exc).__name__}: {str(exc)[:200]}"))
                continue
            for form, source in sources.items():
                name, notes = f"{arch}/{form}", []
                try:
                    report = _inspect(source)
                    loaded = (type(model).from_pretrained(_folder(source))
                              if (_folder(source) / "config.json").is_file() else None)
                    tensors, params = check_case(report, source, model, loaded, notes)
                    _check_text(report, source)
                except Difference as exc:
                    counts["different"] += 1
                    rows.append((name, "-", "-", f"DIFFERENT {exc}"[:400]))
                    continue
                except Exception as exc:  # noqa: BLE001
                    counts["error"] += 1
                    rows.append((name, "-", "-", f"ERROR {type(exc).__name__}: {exc}"[:400]))
                    if args.verbose:
                        import traceback

                        traceback.print_exc()
                    continue
                counts["equal"] += 1
                rows.append((name, str(tensors), f"{params:,}", "equal" + (f" (note: {'; '.join(notes)})"
                                                                           if notes else "")))
        print(f"{arch}: done", file=sys.stderr)
    print_table(("case", "tensors", "params", "verdict"), rows, (None, 7, 9, None))
    total = sum(counts.values())
    print(f"\ncases: {total}  equal: {counts['equal']}  different: {counts['different']}  errors: {counts['error']}"
          f"  time: {time.perf_counter() - started:.1f} s")
    return 0 if counts["different"] == counts["error"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
