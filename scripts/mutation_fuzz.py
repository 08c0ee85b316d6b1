"""Seeded mutation fuzzer (red team 28): every command, in-process, on mutants of genuine tiny files of each format.

    PYTHONPATH=. python scripts/mutation_fuzz.py --seconds 600 --formats safetensors,zip --out /tmp/fuzz

Each seed file (safetensors, a sharded index, a zip `.bin`, a legacy torch pickle, a plain `.pkl`, a DCP folder,
`.npz`, a Hub cache snapshot) is written by torch / safetensors / numpy / huggingface_hub's own code. A mutant is the
seed with bytes flipped, set, inserted or deleted, truncated, a header spliced from another seed, a number of a
JSON header or a zip record's length / offset / count field changed, or a zip member's bytes changed with its
CRC-32 fixed. Every command then runs on it (`inspect`, `inspect --stats`, `check-dtype`, `diff-keys A A --values`,
`convert`, `shard --max 1KB`, `plan-devices --gpu 1MB`), and a finding is recorded when:

- the exit code is not 0, 1 or 2, or the command raised (a traceback) or printed "unexpected";
- a command took longer than 10 s, or the process's peak memory grew by more than 200 MB (on the unmutated seed,
  which each format's first mutant is preceded by, 60 s and 600 MB: red team 42);
- the input changed, a file appeared outside the output path (the work folder or TMPDIR), or a failed writer
  left its output (or a `.wdtmp-` / `.wdstage-` file) behind, or a writer that succeeded wrote what does not load;
- `inspect` called a pickle safe that reaches a global outside torch's weights_only allowlist when unpickled
  (found by unpickling with a find_class that records names and returns inert stand-ins: nothing runs).

Findings go to OUT/findings.jsonl with the mutant's bytes (OUT/mutants/), deduplicated by signature; OUT/summary.json
counts mutants, exit codes, the slowest run of each command, and the errors of commands that refused a mutant that
`inspect` read (kept for review, not findings: a writer refuses names a safetensors file cannot hold). A mutant is
the same from run to run for a given --seed, except a DCP folder's (its `.metadata` records the folder's path and
a random save id).

Red team 32 widened it (the older formats' mutants and commands are unchanged unless --structured is given):

    PYTHONPATH=. python scripts/mutation_fuzz.py --formats llama,bert,peft,binindex,ckpt,diffusers --seconds 600
    PYTHONPATH=. python scripts/mutation_fuzz.py --formats all --structured --seconds 600

- seeds of model folders and training checkpoints (`build_model_seeds`): a tiny Llama and BERT saved by
  save_pretrained, a PEFT LoRA adapter of the Llama (its base_model_name_or_path the Llama's folder), the BERT's
  weights as `.bin` shards with pytorch_model.bin.index.json (huggingface_hub's save_torch_state_dict), a
  Lightning-style `.ckpt`, a diffusers-style folder; any file of the folder may be mutated;
- structure-aware mutations (`mutate_structured`, 70% of those mutants): a JSON value of config.json,
  adapter_config.json, an index or a safetensors header retyped (number to string, list, dict, null, bool), written
  as a number out of range or not finite (1e309, NaN, Infinity, 10^400, -0), nested 100,000 deep, a megabyte long,
  given twice, removed or emptied; a pickle's persistent id with its storage key, storage type, element count or
  location changed (or a field dropped or doubled), a GLOBAL renamed to another allowlisted one, two neighbouring
  values swapped;
- more commands on them: `diff-keys A --model-class <the seed's architecture>`, `plan-devices --kv-cache
  --seq-len 1000`, `convert --to bin` and `convert --dtype fp16` (a folder's output a folder; a `.bin` written is
  checked to load with weights_only), `shard --max 1KB` of the folder;
- two more oracles: a --json report holding a size, a count or a number of bytes that is negative, fractional or
  not finite (`impossible_sizes`), and a header `inspect` read (exit 0) that another command says "safetensors
  rejects".

Red team 41 added the formats the reader learned last, structure-aware like red team 32's:

    PYTHONPATH=. python scripts/mutation_fuzz.py --formats gguf,quant,llama2c,int4,reparam,stmeta --seconds 480

- seeds (`build_recent_seeds`): a small GGUF (F32, F16, Q8_0, Q4_K tensors, a chat template), a torch.ao static and
  dynamic quantized state dict, a llama2.c version-1 model file, a gpt-fast int4 checkpoint, weight_norm and
  parametrize'd modules, a safetensors file with long, JSON-like and control-character metadata;
- `mutate_gguf`: a GGUF header's count, string length, value type, array count, dimension, ggml type or tensor
  offset set to a neighbour of its value or a power of two (the header walked as ggml's gguf.md lays it out).

Red team 42 added the readers changed last, and a checked run on each unmutated seed:

    PYTHONPATH=. python scripts/mutation_fuzz.py --formats ggufsplit,ggufq,hqq,fairseq --seconds 480

- seeds (`build_rt42_seeds`): a GGUF split in three parts by gguf-split's layout (any part mutated), a GGUF of every
  block type dequantized here over random block bytes, HQQ's qmodel.pt (hqq 0.1's and 0.2's layer layouts), a
  fairseq checkpoint_last.pt;
- each format's first mutant is preceded by every command on its unmutated seed, held to `FIRST_CALL_S` and
  `FIRST_CALL_MEMORY_MB` and checked as a mutant is; each command's first such run is also run cold, in a new
  process (its imports its own: the model seeds import transformers into this one), held to `FIRST_CALL_S` and
  `COLD_START_MB` (summary.json's `cold_start_s`, `cold_start_mb`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import pickle
import random
import re
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMATS = ("safetensors", "index", "zip", "legacy", "pkl", "dcp", "npz", "hub")
HANG_S = 10
MEMORY_MB = 200
# Red team 42: a command's first run in the process also imports what it needs (plan-devices: transformers and
# accelerate, 12 to 20 s on two busy cores), a cost every user's run pays. Red team 41's test ran plan-devices once
# before the fuzzer, unchecked, to keep it out of a mutant's 10 s; the run that imported was never bounded, and where
# a mutant's run was the first to reach an import, a slow import read as that mutant's hang. Each format's first
# mutant is now preceded by every command on the unmutated seed (which reaches the imports a genuine file does), held
# to these bounds and checked as a mutant is; summary.json's `first_call_s` / `first_call_mb` report them.
FIRST_CALL_S = 60
FIRST_CALL_MEMORY_MB = 600
# The seeds of model folders are written by transformers in this process, so its in-process runs find transformers
# imported already: each command's first seed run is also run cold, `python -m weightdoctor` in a new process, its
# seconds held to FIRST_CALL_S and its peak RSS to this (plan-devices of a tiny safetensors file, transformers and
# accelerate imported: 345 MB on two busy cores).
COLD_START_MB = 1000
UNEXPECTED = re.compile(r"\bunexpected [A-Za-z_][\w.]*: ")  # the line commands/_errors.py prints for a foreign error


class Hang(BaseException):
    """Raised by SIGALRM: a BaseException, so that the command's own error handling does not swallow it."""


# ---------------------------------------------------------------------------------------------------------- seeds
def _state_dict(seed: int) -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    return {"encoder.layer.0.weight": torch.randn(4, 3, generator=generator),
            "encoder.layer.0.bias": torch.zeros(4),
            "head.weight": torch.randn(2, 4, generator=generator).half(),
            "position_ids": torch.arange(6)}


def build_seeds(root: Path) -> dict[str, Path]:
    """One genuine tiny source per format under `root` (a file, or a folder holding the file to mutate)."""
    import numpy as np
    import torch
    from safetensors.torch import save, save_file

    from fixtures.hub_cache import commit_of, write_snapshot

    root.mkdir(parents=True, exist_ok=True)
    state = _state_dict(0)
    seeds: dict[str, Path] = {}
    save_file(state, str(root / "model.safetensors"), metadata={"format": "pt"})
    seeds["safetensors"] = root / "model.safetensors"

    index = root / "sharded"
    index.mkdir()
    names = sorted(state)
    weight_map = {}
    for number, part in enumerate((names[:2], names[2:]), 1):
        shard = f"model-0000{number}-of-00002.safetensors"
        save_file({name: state[name] for name in part}, str(index / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    total = sum(t.numel() * t.element_size() for t in state.values())
    (index / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    seeds["index"] = index / "model.safetensors.index.json"

    torch.save(state, root / "pytorch_model.bin")
    seeds["zip"] = root / "pytorch_model.bin"
    # One storage that every tensor views (at offsets): a legacy save keys storages by address, in sorted order,
    # so with more than one the bytes would change from run to run.
    base = torch.randn(32, generator=torch.Generator().manual_seed(1))
    views = {"encoder.layer.0.weight": base[:12].view(4, 3), "encoder.layer.0.bias": base[12:16],
             "head.weight": base[16:24].view(2, 4), "head.bias": base[24:26]}
    torch.save(views, root / "legacy.pt", _use_new_zipfile_serialization=False)
    _fix_legacy_keys(root / "legacy.pt")
    seeds["legacy"] = root / "legacy.pt"
    with open(root / "model_final.pkl", "wb") as handle:
        pickle.dump({"model": {name: t.float().numpy() for name, t in state.items()}, "__author__": "fuzz"}, handle,
                    protocol=2)
    seeds["pkl"] = root / "model_final.pkl"
    np.savez(root / "weights.npz", **{name: t.numpy() for name, t in state.items()})
    seeds["npz"] = root / "weights.npz"

    import warnings

    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=str(root / "dcp"))
    seeds["dcp"] = root / "dcp"

    cache = root / "hub"
    files = {"config.json": json.dumps({"model_type": "bert", "architectures": ["BertModel"]}).encode(),
             "model.safetensors": save(state, metadata={"format": "pt"})}
    write_snapshot(cache, "fuzz/tiny", commit_of("tiny"), files)
    seeds["hub"] = cache
    return seeds


def _fix_legacy_keys(path: Path) -> None:
    """A legacy save keys its storages by their addresses in memory: each key is given a fixed one of the same
    length, so that the seed (and every mutant of it) is the same from run to run."""
    raw = path.read_bytes()
    starts = _pickle_starts(raw)
    keys = pickle.loads(raw[starts[4]:]) if len(starts) == 5 else []
    for number, key in enumerate(sorted(keys)):
        fixed = str(number).rjust(len(key), "0").encode()
        raw = raw.replace(key.encode(), fixed)
    path.write_bytes(raw)


def mutable_files(fmt: str, source: Path) -> list[Path]:
    """The files of a seed a mutation may touch."""
    if fmt in ("index", "ggufsplit"):
        return sorted(source.parent.iterdir())
    if fmt == "dcp":
        return sorted(p for p in source.iterdir() if p.is_file())
    if fmt == "hub":
        blobs = sorted((source / "models--fuzz--tiny" / "blobs").iterdir())
        return [*blobs, source / "models--fuzz--tiny" / "refs" / "main"]
    if fmt in NEW_FORMATS and source.is_dir():
        return sorted(p for p in source.rglob("*") if p.is_file() and p.suffix != ".md")
    return [source]


# ------------------------------------------------------------------------------------------------------ mutations
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0xFE, 0x00, ord("}"), ord('"'), ord("."), ord("0"), ord("9")]
NUMBERS = ["0", "-1", "1", "7", "65536", "2147483648", "4294967295", "18446744073709551615",
           "9223372036854775807", "-9223372036854775808", "1e308", "99999999999999999999999", "3.5", "[]", "null"]


def _zip_records(raw: bytes) -> list[tuple[int, bytes]]:
    return [(m.start(), m.group()) for m in re.finditer(rb"PK\x01\x02|PK\x03\x04|PK\x05\x06|PK\x06\x06|PK\x06\x07",
                                                        raw)]


def _set_field(data: bytearray, offset: int, size: int, rng: random.Random) -> None:
    if offset + size > len(data):
        return
    limit = (1 << (8 * size)) - 1
    old = int.from_bytes(data[offset:offset + size], "little")
    value = rng.choice([0, 1, limit, limit >> 1, old + 1, max(old - 1, 0), old * 2, old + 64,
                        old ^ (1 << rng.randrange(8 * size)), rng.randrange(limit + 1)]) & limit
    data[offset:offset + size] = value.to_bytes(size, "little")


# record signature -> list of (field offset, size) of its length / offset / count fields
ZIP_FIELDS = {b"PK\x03\x04": [(6, 2), (8, 2), (18, 4), (22, 4), (26, 2), (28, 2)],
              b"PK\x01\x02": [(8, 2), (10, 2), (20, 4), (24, 4), (28, 2), (30, 2), (32, 2), (34, 2), (42, 4)],
              b"PK\x05\x06": [(4, 2), (6, 2), (8, 2), (10, 2), (12, 4), (16, 4), (20, 2)],
              b"PK\x06\x06": [(4, 8), (24, 8), (32, 8), (40, 8), (48, 8)],
              b"PK\x06\x07": [(8, 8), (16, 4)]}


def mutate(data: bytes, rng: random.Random, donors: list[bytes]) -> tuple[bytes, str]:
    """One or a few mutations of `data`; returns the mutant and the names of the mutations applied."""
    out = bytearray(data)
    applied = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.choice(["flip", "set", "insert", "delete", "truncate", "splice", "number", "zipfield",
                           "member", "header_len", "duplicate", "json", "json", "json", "pickle", "pickle",
                           "pickle", "pickle"])
        n = len(out)
        if kind == "flip" and n:
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(n)
                out[i] ^= 1 << rng.randrange(8)
        elif kind == "set" and n:
            out[rng.randrange(n)] = rng.choice(INTERESTING)
        elif kind == "insert":
            i = rng.randrange(n + 1)
            out[i:i] = rng.choice([bytes([rng.randrange(256)]) * rng.randint(1, 64), rng.randbytes(rng.randint(1, 16)),
                                   b"\x00" * rng.choice([1, 8, 4096])])
        elif kind == "delete" and n:
            i = rng.randrange(n)
            del out[i:i + rng.choice([1, 2, 4, 8, 64, 512])]
        elif kind == "truncate" and n:
            del out[rng.choice([rng.randrange(n), rng.randrange(min(n, 200)), max(n - rng.randint(1, 30), 0)]):]
        elif kind == "splice" and donors:
            donor = rng.choice(donors)
            cut = rng.randrange(min(len(donor), 400) + 1)
            where = rng.randrange(min(n, 400) + 1)
            out = bytearray(donor[:cut]) + out[where:] if rng.random() < 0.5 else out[:where] + bytearray(donor[cut:])
        elif kind == "number":
            spans = [m.span() for m in re.finditer(rb"-?\d+(?:\.\d+)?", out[:4096])]
            if spans:
                start, end = rng.choice(spans)
                out[start:end] = rng.choice(NUMBERS).encode()
        elif kind == "zipfield":
            records = _zip_records(bytes(out))
            if records:
                offset, signature = rng.choice(records)
                field, size = rng.choice(ZIP_FIELDS[signature])
                _set_field(out, offset + field, size, rng)
        elif kind == "member":
            out = bytearray(_mutate_member(bytes(out), rng))
        elif kind == "header_len" and n >= 8:
            _set_field(out, 0, 8, rng)
        elif kind == "json":
            changed = _mutate_json(bytes(out), rng)
            if changed is None:
                continue
            out = bytearray(changed)
        elif kind == "pickle":
            changed = _mutate_pickles(bytes(out), rng)
            if changed is None:
                continue
            out = bytearray(changed)
        elif kind == "duplicate" and n:
            i = rng.randrange(n)
            chunk = out[i:i + rng.randint(1, 64)]
            j = rng.randrange(n + 1)
            out[j:j] = chunk
        else:
            continue
        applied.append(kind)
    return bytes(out), "+".join(applied) or "none"


DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "C64", "U64", "I16",
          "F4", "F6_E2M3", "E8M0", "X9", "", "f32", "float32"]


def _json_leaf(rng: random.Random) -> Any:
    return rng.choice([0, -1, 1, 2**31, 2**53 + 1, 2**64, 10**30, -(2**63), 1.5, float("inf"), None, True, "", "x",
                       [], {}, [0], [1, 2**40], [[0]], "\u0000", "../x", "model.safetensors"])


def _mutate_value(value: Any, rng: random.Random, depth: int = 0) -> Any:
    """A random leaf (or a list item, or a dict entry) of `value` replaced, added or removed."""
    if isinstance(value, dict) and value and depth < 6:
        key = rng.choice(sorted(value, key=str))
        choice = rng.random()
        if choice < 0.6:
            value[key] = _mutate_value(value[key], rng, depth + 1)
        elif choice < 0.75:
            del value[key]
        elif choice < 0.9:
            value[key + rng.choice(["", ".x", "\x00", " "])] = _json_leaf(rng) if rng.random() < 0.5 else value[key]
        else:
            value[rng.choice(["dtype", "shape", "data_offsets", "__metadata__", "metadata", "weight_map"])] = \
                _json_leaf(rng)
        return value
    if isinstance(value, list) and value and depth < 6:
        i = rng.randrange(len(value))
        choice = rng.random()
        if choice < 0.6:
            value[i] = _mutate_value(value[i], rng, depth + 1)
        elif choice < 0.8:
            del value[i]
        else:
            value.insert(i, _json_leaf(rng))
        return value
    if isinstance(value, str) and rng.random() < 0.5:
        return rng.choice(DTYPES) if value in DTYPES else value + rng.choice(["x", "/../a", "\u00e9", ".bin"])
    if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.6:
        return rng.choice([value + 1, value - 1, value * 2, 0, -value, value + 4, value - 4, value // 2])
    return _json_leaf(rng)


def _mutate_json(raw: bytes, rng: random.Random) -> bytes | None:
    """A safetensors header (its length fixed) or a JSON file with one value changed; None for other bytes."""
    if len(raw) >= 8:
        length = int.from_bytes(raw[:8], "little")
        if 2 <= length <= len(raw) - 8:
            with contextlib.suppress(ValueError):
                header = json.loads(raw[8:8 + length])
                text = json.dumps(_mutate_value(header, rng), separators=(",", ":")).encode()
                text += b" " * ((-len(text)) % 8) if rng.random() < 0.8 else b""
                return len(text).to_bytes(8, "little") + text + raw[8 + length:]
    with contextlib.suppress(ValueError):
        return json.dumps(_mutate_value(json.loads(raw), rng), indent=2).encode()
    return None


GLOBALS = [b"collections\nOrderedDict", b"torch._utils\n_rebuild_tensor_v2", b"torch._utils\n_rebuild_parameter",
           b"torch._utils\n_rebuild_sparse_tensor", b"torch._utils\n_rebuild_meta_tensor_no_storage",
           b"torch._utils\n_rebuild_wrapper_subclass", b"torch._utils\n_rebuild_qtensor",
           b"torch._utils\n_rebuild_device_tensor_from_numpy", b"torch._utils\n_rebuild_parameter_with_state",
           b"torch._tensor\n_rebuild_from_type_v2", b"torch._utils\n_rebuild_nested_tensor", b"torch\nSize",
           b"torch\nfloat16", b"torch\nbfloat16", b"torch\nHalfStorage", b"torch\nBFloat16Storage",
           b"torch\nQInt8Storage", b"torch\nComplexFloatStorage", b"torch\ndevice", b"builtins\nset",
           b"__builtin__\nset", b"_codecs\nencode", b"numpy.core.multiarray\n_reconstruct", b"numpy\ndtype",
           b"numpy\nndarray", b"torch.nn.parameter\nParameter", b"torch\nfloat8_e4m3fn", b"torch\nuint64",
           b"torch\ntensor", b"argparse\nNamespace", b"copy_reg\n_reconstructor", b"__builtin__\nobject"]
STRINGS = [b"HalfStorage", b"BFloat16Storage", b"FloatStorage", b"LongStorage", b"BoolStorage", b"cpu", b"cuda:0",
           b"meta", b"mps", b"storage", b"module", b"data/0", b"0", b"../0", b"", b"x" * 300, b"state_dict",
           b"model_state_dict", b"encoder.layer.0.weight", b"weight", b"_metadata", b"version"]
SWAPS = [b"\x85\x86\x87t)", b"qh", b"us", b"R b", b"\x88\x89N"]  # opcodes that may stand for one another


def _ops(raw: bytes, start: int) -> list[tuple[Any, Any, int]]:
    import pickletools

    ops = []
    with contextlib.suppress(Exception):
        for op, arg, pos in pickletools.genops(io.BytesIO(raw[start:])):
            ops.append((op, arg, start + pos))
            if len(ops) > 20000:
                break
    return ops


def _pickle_starts(raw: bytes) -> list[int]:
    """Where the pickles of a legacy torch save (or a plain pickle) start: each follows the previous STOP."""
    starts, at = [], 0
    for _ in range(5):
        ops = _ops(raw, at)
        if not ops or ops[-1][0].name != "STOP":
            break
        starts.append(at)
        at = ops[-1][2] + 1
    return starts


def _mutate_one_op(raw: bytes, start: int, rng: random.Random) -> bytes:
    """One opcode of the pickle at `start` changed: an int argument, a string, a global, the opcode itself, or
    removed / doubled."""
    ops = _ops(raw, start)
    if len(ops) < 2:
        return raw
    index = rng.randrange(len(ops) - 1)
    op, arg, pos = ops[index]
    end = ops[index + 1][2]
    code = op.code.encode("latin-1")
    choice = rng.random()
    if op.name in ("BININT1", "BININT2", "BININT") and choice < 0.5:
        width = {"BININT1": 1, "BININT2": 2, "BININT": 4}[op.name]
        limit = (1 << (8 * width)) - 1
        value = rng.choice([0, 1, 2, 3, limit, arg + 1, max(arg - 1, 0), arg * 2, rng.randrange(limit + 1)]) & limit
        new = code + value.to_bytes(width, "little")
    elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "SHORT_BINSTRING", "BINSTRING") and choice < 0.6:
        text = rng.choice(STRINGS + [o[1].encode() if isinstance(o[1], str) else b"" for o in ops
                                     if o[0].name in ("SHORT_BINUNICODE", "BINUNICODE")][:50])
        new = (b"\x8c" + bytes([len(text)]) if len(text) < 256 else b"X" + len(text).to_bytes(4, "little")) + text
    elif op.name == "GLOBAL" and choice < 0.7:
        new = b"c" + rng.choice(GLOBALS) + b"\n"
    elif choice < 0.75:
        group = next((g for g in SWAPS if code in g), None)
        new = (bytes([rng.choice(group)]) if group else code) + raw[pos + 1:end]
    elif choice < 0.85:
        new = b""
    elif choice < 0.92:
        new = raw[pos:end] * 2
    else:
        other = rng.choice(ops[:-1])
        new = raw[pos:end] + raw[other[2]:ops[ops.index(other) + 1][2]]
    return raw[:pos] + new + raw[end:]


def _with_zip_pickle_changed(raw: bytes, rng: random.Random, change: Callable[[bytes], bytes]) -> bytes | None:
    """The zip `raw` rewritten (members stored) with one of its .pkl members, chosen by `rng`, replaced by
    `change(member)`; None when `raw` is no zip this can rewrite (already broken by an earlier mutation) or holds
    no pickle."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            members = [(info, archive.read(info)) for info in archive.infolist()]
    except Exception:  # noqa: BLE001 -- a zip already broken by an earlier mutation
        return None
    pickles = [i for i, (info, _) in enumerate(members) if info.filename.endswith(".pkl")]
    if not pickles:
        return None
    chosen = rng.choice(pickles)
    info, data = members[chosen]
    members[chosen] = (info, change(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for info, data in members:
            archive.writestr(info.filename, data)
    return buffer.getvalue()


def _mutate_pickles(raw: bytes, rng: random.Random) -> bytes | None:
    """A plain pickle, a legacy torch save's pickles, or a zip's .pkl member (the zip rewritten) with one opcode
    changed; None for other bytes."""
    if raw[:2] == b"PK":
        return _with_zip_pickle_changed(raw, rng, lambda data: _changed(lambda: _mutate_one_op(data, 0, rng), data))
    starts = _pickle_starts(raw)
    if not starts:
        return None
    return _changed(lambda: _mutate_one_op(raw, rng.choice(starts), rng), raw)


def _changed(make: Callable[[], bytes], old: bytes) -> bytes:
    """`make()` until it changes `old` (a few tries)."""
    new = old
    for _ in range(8):
        new = make()
        if new != old:
            break
    return new


def _mutate_member(raw: bytes, rng: random.Random) -> bytes:
    """Change a stored zip member's bytes in place (same length) and fix its CRC-32 in both headers."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            infos = [i for i in archive.infolist() if i.compress_type == zipfile.ZIP_STORED and i.file_size]
            if not infos:
                return raw
            info = rng.choice(sorted(infos, key=lambda i: (not i.filename.endswith(".pkl"), i.filename))[:3])
            name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
            start = info.header_offset + 30 + name_len + extra_len
    except Exception:  # noqa: BLE001 -- a zip already broken by an earlier mutation: nothing to do here
        return raw
    out = bytearray(raw)
    body = bytearray(out[start:start + info.file_size])
    if not body:
        return raw
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(body))
        body[i] = rng.choice([body[i] ^ (1 << rng.randrange(8)), rng.randrange(256), *INTERESTING])
    out[start:start + info.file_size] = body
    crc = zlib.crc32(body).to_bytes(4, "little")
    out[info.header_offset + 14:info.header_offset + 18] = crc
    central = raw.find(b"PK\x01\x02")
    while central != -1:
        name_len = struct.unpack_from("<H", out, central + 28)[0]
        if out[central + 46:central + 46 + name_len] == info.filename.encode():
            out[central + 16:central + 20] = crc
            break
        central = raw.find(b"PK\x01\x02", central + 4)
    return bytes(out)


# ------------------------------------------------------------------------------------- red team 32: model seeds
NEW_FORMATS = ("llama", "bert", "peft", "binindex", "ckpt", "diffusers")
# Red team 41: the formats the reader learned last (`build_recent_seeds`).
RECENT_FORMATS = ("gguf", "quant", "llama2c", "int4", "reparam", "stmeta")
# Red team 42: the readers changed last (`build_rt42_seeds`).
RT42_FORMATS = ("ggufsplit", "ggufq", "hqq", "fairseq")
ALL_FORMATS = FORMATS + NEW_FORMATS + RECENT_FORMATS + RT42_FORMATS


def build_model_seeds(root: Path, formats: tuple[str, ...] = NEW_FORMATS) -> dict[str, Path]:
    """Model folders and training checkpoints (red team 32), each written by the library that writes them for real:
    a tiny Llama (`llama`) and BERT (`bert`) by save_pretrained, a PEFT LoRA adapter of the Llama by peft
    (`peft`), the BERT's weights as `.bin` shards with pytorch_model.bin.index.json by huggingface_hub's
    save_torch_state_dict beside its config (`binindex`), a Lightning-style `.ckpt` (torch.save of the dict
    Lightning writes: state_dict, hyper_parameters, callbacks, optimizer_states, ...) (`ckpt`), and a diffusers-style
    folder (its config.json and diffusion_pytorch_model.safetensors as diffusers names them, written here with
    safetensors: diffusers is not installed) (`diffusers`). Each source is a folder, but `ckpt`'s file."""
    import warnings

    import torch
    import transformers
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, Path] = {}
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    llama_config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    llama = transformers.LlamaForCausalLM(llama_config)
    if "llama" in formats or "peft" in formats:
        llama.save_pretrained(root / "llama")
        seeds["llama"] = root / "llama"
    bert_config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=32, max_position_embeddings=32)
    bert = transformers.BertForSequenceClassification(bert_config)
    if "bert" in formats:
        bert.save_pretrained(root / "bert")
        seeds["bert"] = root / "bert"
    if "binindex" in formats:
        from huggingface_hub import save_torch_state_dict

        folder = root / "binindex"
        bert_config.save_pretrained(folder)
        save_torch_state_dict(bert.state_dict(), folder, safe_serialization=False, max_shard_size="20KB")
        seeds["binindex"] = folder
    if "peft" in formats:
        import peft

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            llama.config.name_or_path = str(root / "llama")  # what from_pretrained(path) leaves there
            adapter = peft.get_peft_model(llama, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj",
                                                                                                    "v_proj"]))
            for name, parameter in adapter.named_parameters():
                if "lora_B" in name:  # LoRA starts B at zero: a trained adapter's are not
                    torch.nn.init.normal_(parameter, std=0.02)
            adapter.save_pretrained(root / "peft")
        seeds["peft"] = root / "peft"
    if "ckpt" in formats:
        seeds["ckpt"] = _write_lightning_ckpt(root / "epoch=2-step=120.ckpt")
    if "diffusers" in formats:
        folder = root / "diffusers"
        folder.mkdir()
        generator = torch.Generator().manual_seed(2)
        save_file({"conv_in.weight": torch.randn(8, 4, 3, 3, generator=generator), "conv_in.bias": torch.zeros(8),
                   "time_embedding.linear_1.weight": torch.randn(16, 8, generator=generator),
                   "conv_out.weight": torch.randn(4, 8, 3, 3, generator=generator)},
                  str(folder / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps(
            {"_class_name": "UNet2DModel", "_diffusers_version": "0.31.0", "in_channels": 4, "out_channels": 4,
             "block_out_channels": [8], "layers_per_block": 1, "sample_size": 8}, indent=2))
        seeds["diffusers"] = folder
    return {fmt: path for fmt, path in seeds.items() if fmt in formats}


def _write_lightning_ckpt(path: Path) -> Path:
    """What Lightning's `Trainer.save_checkpoint` writes (Lightning is not installed): torch.save of a dict of the
    module's state_dict under `model.`, the Adam optimizer's state after a step, callbacks' states, loops and
    hyper_parameters."""
    import torch

    torch.manual_seed(3)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    module(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    checkpoint = {
        "epoch": 2, "global_step": 120, "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{name}": tensor for name, tensor in module.state_dict().items()},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 3, "completed": 2}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0}": {
            "monitor": "val_loss", "best_model_score": torch.tensor(0.25), "best_model_path": "/runs/epoch=1.ckpt",
            "current_score": torch.tensor(0.31), "dirpath": "/runs", "best_k_models": {}, "kth_best_model_path": "",
            "kth_value": torch.tensor(float("inf")), "last_model_path": ""},
            "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}": {"wait_count": 0, "stopped_epoch": 0,
                                                                   "best_score": torch.tensor(0.25), "patience": 3}},
        "optimizer_states": [optimizer.state_dict()], "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"hidden": 8, "lr": 1e-3, "optimizer": "adam", "layers": [4, 8, 2]},
    }
    torch.save(checkpoint, path)
    return path


def model_class_of(source: Path) -> str | None:
    """The class config.json's `architectures` names (the seed's, read before any mutation), for `diff-keys
    --model-class`; None where the seed has none (an adapter's base, a diffusers folder)."""
    config = source / "config.json" if source.is_dir() else source.parent / "config.json"
    if source.is_dir() and (source / "adapter_config.json").is_file():
        base = json.loads((source / "adapter_config.json").read_text()).get("base_model_name_or_path")
        config = Path(base) / "config.json" if base else config
    with contextlib.suppress(OSError, ValueError, TypeError, LookupError, AttributeError):
        return json.loads(config.read_text())["architectures"][0]
    return None


# ------------------------------------------------------------------------------------ red team 41: recent formats
def build_recent_seeds(root: Path, formats: tuple[str, ...] = RECENT_FORMATS) -> dict[str, Path]:
    """The formats the reader learned last (red team 41), each a file written as its own tool writes it: a small
    llama-shaped GGUF with F32, F16, Q8_0 and Q4_K tensors (fixtures/gguf_files.py, after ggml's gguf.md) (`gguf`); a
    torch.ao static-quantized Conv2d and a quantize_dynamic Linear's state dict (`quant`); a llama2.c version-1
    model file (its export.py's header and float32 runs) (`llama2c`); a gpt-fast int4 checkpoint (packed int32
    weights beside bfloat16 scales_and_zeros) (`int4`); a weight_norm-hooked and a parametrize'd module's state dict
    (`reparam`); a safetensors file whose __metadata__ holds long, JSON-looking and control-character values
    (`stmeta`)."""
    import warnings

    import numpy as np
    import torch
    from safetensors.torch import save_file
    from torch import nn

    from fixtures.gguf_files import ARRAY, FLOAT32, STRING, UINT32, Tensor, write_gguf

    root.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, Path] = {}
    generator = torch.Generator().manual_seed(41)
    if "gguf" in formats:
        rng = np.random.default_rng(41)
        tensors = [Tensor("token_embd.weight", [16, 32], "F16", rng.normal(size=(32, 16)).astype(np.float16).tobytes()),
                   Tensor("blk.0.attn_norm.weight", [16], "F32", np.ones(16, dtype=np.float32).tobytes()),
                   Tensor("blk.0.attn_q.weight", [32, 16], "Q8_0"), Tensor("blk.0.ffn_down.weight", [256, 16], "Q4_K"),
                   Tensor("output_norm.weight", [16], "F32", np.ones(16, dtype=np.float32).tobytes())]
        metadata = {"general.architecture": (STRING, "llama"), "general.name": (STRING, "fuzz"),
                    "llama.embedding_length": (UINT32, 16), "llama.block_count": (UINT32, 1),
                    "llama.feed_forward_length": (UINT32, 256), "llama.attention.head_count": (UINT32, 2),
                    "llama.context_length": (UINT32, 64), "llama.rope.freq_base": (FLOAT32, 10000.0),
                    "tokenizer.ggml.model": (STRING, "llama"),
                    "tokenizer.ggml.tokens": (ARRAY, (STRING, [f"t{i}" for i in range(32)])),
                    "tokenizer.chat_template": (STRING, "{% for m in messages %}{{ m.content }}{% endfor %}")}
        seeds["gguf"] = write_gguf(root / "tiny.gguf", metadata, tensors)
    if "quant" in formats:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.manual_seed(41)
            model = nn.Sequential(torch.ao.quantization.QuantStub(), nn.Conv2d(3, 4, 3),
                                  torch.ao.quantization.DeQuantStub()).eval()
            model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
            prepared = torch.ao.quantization.prepare(model)
            prepared(torch.randn(1, 3, 6, 6, generator=generator))
            static = torch.ao.quantization.convert(prepared).state_dict()
            dynamic = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(8, 4)), {nn.Linear},
                                                             dtype=torch.qint8).state_dict()
        torch.save({**{f"conv.{k}": v for k, v in static.items()}, **{f"fc.{k}": v for k, v in dynamic.items()}},
                   root / "quantized.pt")
        seeds["quant"] = root / "quantized.pt"
    if "llama2c" in formats:
        dim, hidden, layers, heads, kv_heads, vocab, seq = 16, 32, 1, 2, 2, 32, 8
        weights = [torch.randn(n, generator=generator) for n in (
            dim, dim, dim, vocab * dim, dim * dim, dim * dim, dim * dim, dim * dim, hidden * dim, dim * hidden,
            hidden * dim)]
        header = struct.pack("I", 0x616B3432) + struct.pack("i", 1) + struct.pack(
            "iiiiiii", dim, hidden, layers, heads, kv_heads, vocab, seq) + struct.pack("B", 1)
        seeds["llama2c"] = root / "model.bin"
        seeds["llama2c"].write_bytes(header + bytes(256 - len(header)) + b"".join(
            w.numpy().astype("float32").tobytes() for w in weights))
    if "int4" in formats:
        state = {"tok_embeddings.weight": torch.randn(16, 128, generator=generator).bfloat16(),
                 "layers.0.attention.wo.weight": torch.randint(-2**31, 2**31 - 1, (16, 1, 32, 4), dtype=torch.int32,
                                                               generator=generator),
                 "layers.0.attention.wo.scales_and_zeros": torch.rand(4, 128, 2, generator=generator).bfloat16(),
                 "norm.weight": torch.ones(128, dtype=torch.bfloat16)}
        torch.save(state, root / "model_int4.g32.pth")
        seeds["int4"] = root / "model_int4.g32.pth"
    if "reparam" in formats:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.manual_seed(41)
            model = nn.Sequential(nn.Conv1d(3, 4, 3), nn.Linear(4, 2))
            nn.utils.weight_norm(model[0])
            nn.utils.parametrizations.weight_norm(model[1])
        torch.save(model.state_dict(), root / "reparametrized.pt")
        seeds["reparam"] = root / "reparametrized.pt"
    if "stmeta" in formats:
        save_file({"w": torch.randn(4, 4, generator=generator)}, str(root / "metadata.safetensors"), metadata={
            "format": "pt", "config": json.dumps({"model_type": "llama", "hidden_size": 16, "layers": [[[1]]] * 50}),
            "quantization_config": json.dumps({"quant_method": "gptq", "bits": 4}), "total_size": "64",
            "\u202ename": "\x1b[31m[bold]x[/bold]\x1b[0m", "long": "A" * 100_000})
        seeds["stmeta"] = root / "metadata.safetensors"
    return {fmt: path for fmt, path in seeds.items() if fmt in formats}


# ------------------------------------------------------------------------------ red team 42: readers changed last
def build_rt42_seeds(root: Path, formats: tuple[str, ...] = RT42_FORMATS) -> dict[str, Path]:
    """The readers changed last (red team 42), each seed as its tool writes it: a llama-shaped GGUF split in three
    parts by gguf-split's layout (`split.no`, `split.count`, `split.tensors.count` in every part, the metadata in the
    first), the first part the seed (`ggufsplit`: every part may be mutated); a GGUF holding one tensor of each block
    type weightdoctor dequantizes, of random block bytes (fp16 scales NaN or infinite among them) (`ggufq`); HQQ's
    qmodel.pt, {module name: state dict} of hqq 0.1's and 0.2's HQQLinear layouts (`hqq`); a fairseq checkpoint as
    checkpoint_utils.save_state writes it, its state dict beside cfg, optimizer_history and extra_state (`fairseq`)."""
    import numpy as np
    import torch

    from fixtures.gguf_files import INT32, STRING, UINT16, UINT32, Tensor, write_gguf

    root.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, Path] = {}
    rng = np.random.default_rng(42)
    llama = {"general.architecture": (STRING, "llama"), "llama.embedding_length": (UINT32, 32),
             "llama.block_count": (UINT32, 1), "llama.feed_forward_length": (UINT32, 256),
             "llama.attention.head_count": (UINT32, 2), "llama.context_length": (UINT32, 64)}
    if "ggufsplit" in formats:
        folder = root / "split"
        folder.mkdir()
        parts = [[Tensor("token_embd.weight", [32, 8], "F16", rng.normal(size=256).astype(np.float16).tobytes()),
                  Tensor("blk.0.attn_norm.weight", [32], "F32", np.ones(32, dtype=np.float32).tobytes())],
                 [Tensor("blk.0.attn_q.weight", [32, 32], "Q8_0",
                         rng.integers(0, 256, 32 * 34, dtype=np.uint8).tobytes())],
                 [Tensor("blk.0.ffn_down.weight", [256, 32], "Q4_K"),
                  Tensor("output_norm.weight", [32], "F32", np.ones(32, dtype=np.float32).tobytes())]]
        total = sum(len(tensors) for tensors in parts)
        for number, tensors in enumerate(parts):
            split = {"split.no": (UINT16, number), "split.count": (UINT16, len(parts)),
                     "split.tensors.count": (INT32, total)}
            write_gguf(folder / f"tiny-{number + 1:05d}-of-{len(parts):05d}.gguf",
                       {**(llama if number == 0 else {}), **split}, tensors)
        seeds["ggufsplit"] = folder / f"tiny-00001-of-{len(parts):05d}.gguf"
    if "ggufq" in formats:
        # ggml's block types weightdoctor dequantizes: (type id, values a block, bytes a block), from ggml.h / ggml.c.
        blocks = {"Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20), "Q5_0": (6, 32, 22), "Q5_1": (7, 32, 24),
                  "Q8_0": (8, 32, 34), "Q2_K": (10, 256, 84), "Q3_K": (11, 256, 110), "Q4_K": (12, 256, 144),
                  "Q5_K": (13, 256, 176), "Q6_K": (14, 256, 210)}
        tensors = [Tensor(f"blk.0.{kind.lower()}.weight", [256, 2], "F32",
                          rng.integers(0, 256, 512 // block * size, dtype=np.uint8).tobytes(), type_id)
                   for kind, (type_id, block, size) in blocks.items()]
        seeds["ggufq"] = write_gguf(root / "quants.gguf", llama, tensors)
    if "hqq" in formats:
        generator = torch.Generator().manual_seed(42)

        def layer(flat: bool) -> dict[str, Any]:
            meta = {"nbits": 4, "group_size": 64, "shape": torch.Size([64, 16]), "axis": 0, "packing": "4bit_u8",
                    "scale": torch.rand(1, 16, generator=generator), "zero": torch.rand(1, 16, generator=generator)}
            packed = torch.randint(0, 255, (32, 16), dtype=torch.uint8, generator=generator)
            return ({"W_q": packed, **meta, "bias": None, "offload_meta": False} if flat
                    else {"W_q": packed, "meta": meta, "bias": None})

        torch.save({"model.embed_tokens": {"weight": torch.randn(8, 16, generator=generator)},
                    "model.layers.0.self_attn.q_proj": layer(False), "model.layers.0.mlp.up_proj": layer(True),
                    "model.norm": {"weight": torch.ones(16)}}, root / "qmodel.pt")
        seeds["hqq"] = root / "qmodel.pt"
    if "fairseq" in formats:
        generator = torch.Generator().manual_seed(42)
        model = {"encoder.embed_tokens.weight": torch.randn(12, 8, generator=generator),
                 "encoder.layers.0.self_attn.k_proj.weight": torch.randn(8, 8, generator=generator),
                 "encoder.layers.0.fc1.weight": torch.randn(16, 8, generator=generator),
                 "decoder.output_projection.weight": torch.randn(12, 8, generator=generator)}
        torch.save({"args": None, "cfg": {"model": {"_name": "transformer", "encoder_layers": 1},
                                          "task": {"_name": "translation"}},
                    "model": model, "optimizer_history": [{"criterion_name": "CrossEntropyCriterion",
                                                           "optimizer_name": "Adam", "num_updates": 10}],
                    "extra_state": {"epoch": 1, "train_iterator": {"epoch": 1}}, "last_optimizer_state": None},
                   root / "checkpoint_last.pt")
        seeds["fairseq"] = root / "checkpoint_last.pt"
    return {fmt: path for fmt, path in seeds.items() if fmt in formats}


def _gguf_fields(raw: bytes) -> list[tuple[int, int, str]]:
    """The numeric fields of a GGUF header, walked as ggml's gguf.md lays them out: (offset, size, what) of the
    tensor and key-value counts, each string's length, each value's type, each array's element type and count, each
    tensor's dimension count, dimensions, ggml type and offset. Stops where the header stops making sense."""
    fields: list[tuple[int, int, str]] = []
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    if raw[:4] != b"GGUF" or len(raw) < 24:
        return fields
    fields += [(8, 8, "tensor count"), (16, 8, "kv count")]
    tensors, kvs = struct.unpack_from("<QQ", raw, 8)
    at = 24

    def string(what: str) -> None:
        nonlocal at
        fields.append((at, 8, f"{what} length"))
        at += 8 + struct.unpack_from("<Q", raw, at)[0]

    try:
        for _ in range(min(kvs, 10_000)):
            string("key")
            fields.append((at, 4, "value type"))
            kind = struct.unpack_from("<I", raw, at)[0]
            at += 4
            if kind == 9:
                fields += [(at, 4, "array type"), (at + 4, 8, "array count")]
                element, count = struct.unpack_from("<IQ", raw, at)
                at += 12
                for _ in range(count):
                    if element == 8:
                        string("array string")
                    else:
                        at += sizes[element]
            elif kind == 8:
                string("string value")
            else:
                at += sizes[kind]
        for _ in range(min(tensors, 10_000)):
            string("tensor name")
            fields.append((at, 4, "n_dims"))
            dims = struct.unpack_from("<I", raw, at)[0]
            at += 4
            fields += [(at + 8 * i, 8, "dimension") for i in range(dims)]
            at += 8 * dims
            fields += [(at, 4, "ggml type"), (at + 4, 8, "tensor offset")]
            at += 12
    except (struct.error, KeyError):
        pass
    return [field for field in fields if field[0] + field[1] <= len(raw)]


GGUF_VALUES = [0, 1, 2, 3, 7, 8, 9, 12, 13, 30, 31, 39, 40, 255, 1 << 16, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 40,
               (1 << 62), (1 << 63) - 1, 1 << 63, (1 << 64) - 1]


def mutate_gguf(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    """A GGUF header's count, length, type, dimension or offset set to another value: a neighbour of the true one,
    a small type id, a power of two up to 2**64 - 1 (wrapped to the field's size). None for a file not a GGUF."""
    fields = _gguf_fields(data)
    if not fields:
        return None
    offset, size, what = rng.choice(fields)
    old = int.from_bytes(data[offset:offset + size], "little")
    value = rng.choice([*GGUF_VALUES, old + 1, old - 1, old * 2, old + 32, old // 2]) % (1 << (8 * size))
    out = bytearray(data)
    out[offset:offset + size] = value.to_bytes(size, "little")
    return bytes(out), f"gguf {what}@{offset} {old}->{value}"


# ------------------------------------------------------------------------ red team 32: structure-aware mutations
RAW = "\u0000wd-raw\u0000"  # a placeholder in a JSON document, replaced by raw text after json.dumps
RAW_NUMBERS = ["1e309", "-1e309", "NaN", "Infinity", "-Infinity", "-0", "0.5", "2.5", "-1", "-2147483649",
               "4294967296", "18446744073709551616", "1" + "0" * 400, "4.9e-324", "9223372036854775808", "1e-400",
               "1.0", "7.999999999999999", "3e9"]


def _json_paths(value: Any, path: tuple[Any, ...] = (),
                out: list[tuple[Any, ...]] | None = None) -> list[tuple[Any, ...]]:
    """Every path to a value of a parsed JSON document (the root's excluded), up to 5,000."""
    out = [] if out is None else out
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        if len(out) >= 5000:
            break
        out.append((*path, key))
        _json_paths(child, (*path, key), out)
    return out


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


def _retyped(old: Any, rng: random.Random) -> Any:
    """`old` as a value of another JSON type."""
    if isinstance(old, bool) or old is None:
        return rng.choice([0, 1, "true", [old], {"value": old}, "", None if old is not None else False])
    if isinstance(old, (int, float)):
        return rng.choice([str(old), [old], {"value": old}, None, True, False, f"{old}px", [old, old]])
    if isinstance(old, str):
        return rng.choice([len(old), 0, -1, 1.5, [old], {old: old}, None, True, old.encode().hex(), [[old]]])
    if isinstance(old, list):
        return rng.choice([dict(enumerate(old)), json.dumps(old), None, 0, True, old[0] if old else "",
                           [old], {str(i): v for i, v in enumerate(old)}])
    return rng.choice([list(old.values()), list(old), json.dumps(old)[:200], None, 0, "", [old], True])


def _typed_json(document: Any, rng: random.Random) -> tuple[str, str] | None:
    """A JSON document with one value changed by type (a retyped value, a number out of range or not finite, a very
    deep nesting, a very long string, a duplicate key, a key removed); the text and what was done. None when the
    document holds nothing to change."""
    paths = _json_paths(document)
    if not paths:
        return None
    path = rng.choice(paths)
    parent_path, key = path[:-1], path[-1]
    parent = _at(document, parent_path)
    old = parent[key]
    what = rng.choice(["retype", "retype", "number", "number", "deep", "long", "duplicate", "remove", "empty"])
    raw = None
    if what == "retype":
        parent[key] = _retyped(old, rng)
    elif what == "number":
        raw = rng.choice(RAW_NUMBERS)
        parent[key] = RAW
    elif what == "deep":
        depth = rng.choice([200, 5000, 100_000])
        raw = rng.choice(["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth])
        parent[key] = RAW
    elif what == "long":
        text = "x" * rng.choice([4096, 100_000, 1_000_000])
        if isinstance(parent, dict) and rng.random() < 0.4:
            parent[text] = parent.pop(key)
        else:
            parent[key] = text
    elif what == "duplicate" and isinstance(parent, dict):
        other = _retyped(old, rng) if rng.random() < 0.7 else _json_leaf(rng)
        items = [f"{json.dumps(k)}:{json.dumps(v)}" for k, v in parent.items()]
        twin = f"{json.dumps(key)}:{json.dumps(other)}"
        items.insert(rng.choice([0, len(items)]), twin)  # before: the original wins; after: the twin does
        raw = "{" + ",".join(items) + "}"
        if not parent_path:
            return raw, f"duplicate {str(key)[:40]!r}"
        _at(document, parent_path[:-1])[parent_path[-1]] = RAW
    elif what == "remove":
        del parent[key]
    else:
        parent[key] = rng.choice(["", [], {}, 0]) if not isinstance(old, (dict, list)) else type(old)()
    text = json.dumps(document, indent=None if rng.random() < 0.5 else 2)
    if raw is not None:
        text = text.replace(json.dumps(RAW), raw, 1)
    return text, f"{what} {'/'.join(str(p)[:40] for p in path)}"


def _typed_json_bytes(raw: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    """A safetensors header (its length fixed, padded to 8 bytes mostly) or a JSON file, one value changed by type."""
    if len(raw) >= 8:
        length = int.from_bytes(raw[:8], "little")
        if 2 <= length <= len(raw) - 8:
            with contextlib.suppress(ValueError):
                header = json.loads(raw[8:8 + length])
                changed = _typed_json(header, rng)
                if changed is None:
                    return None
                text = changed[0].encode()
                text += b" " * ((-len(text)) % 8) if rng.random() < 0.8 else b""
                return len(text).to_bytes(8, "little") + text + raw[8 + length:], f"header {changed[1]}"
    with contextlib.suppress(ValueError):
        changed = _typed_json(json.loads(raw), rng)
        return None if changed is None else (changed[0].encode(), f"json {changed[1]}")
    return None


STORAGES = [b"torch\nFloatStorage", b"torch\nHalfStorage", b"torch\nBFloat16Storage", b"torch\nDoubleStorage",
            b"torch\nLongStorage", b"torch\nIntStorage", b"torch\nBoolStorage", b"torch\nByteStorage",
            b"torch\nCharStorage", b"torch\nComplexDoubleStorage", b"torch\nQUInt8Storage",
            b"torch\nUntypedStorage", b"torch\nFloat8_e4m3fnStorage", b"torch\nTensor", b"torch\nfloat32"]
LOCATIONS = ["cuda:0", "cuda:7", "cuda", "meta", "mps", "xla:0", "hpu:0", "privateuseone:0", "", "cpu\u0000",
             "cpu:1", "CPU", "cuda:-1", "cuda:99999999999", "npu:0", "lazy"]
KEYS = ["99", "../0", "", "-1", "0/../1", "data/0", "0 ", "x" * 300, "\u00e9", "1e3", ".", "0\u0000"]
COUNTS = [0, 1, 2, 3, 255, 256, 2**16, 2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63, 2**64 + 5, -1, -(2**31)]


def _encode_str(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return b"X" + len(data).to_bytes(4, "little") + data


def _encode_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + value.to_bytes(2, "little")
    if -(2**31) <= value < 2**31:
        return b"J" + value.to_bytes(4, "little", signed=True)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


PUSHES = ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "SHORT_BINSTRING", "BINSTRING", "UNICODE", "STRING",
          "BININT", "BININT1", "BININT2", "INT", "LONG1", "LONG4", "GLOBAL", "STACK_GLOBAL", "BINGET", "LONG_BINGET",
          "GET", "NONE", "NEWTRUE", "NEWFALSE", "BINFLOAT", "EMPTY_TUPLE", "EMPTY_DICT", "EMPTY_LIST")


def _persid_fields(ops: list[tuple[Any, Any, int]], at: int) -> list[int]:
    """The indices (in `ops`) of the values of the tuple a BINPERSID at `at` reads: ('storage', storage type, key,
    location, element count[, view metadata]), the ops between the MARK before it and its TUPLE."""
    end = at - 1
    while end >= 0 and ops[end][0].name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
        end -= 1
    if end < 0 or ops[end][0].name != "TUPLE":
        return []
    start = end - 1
    while start >= 0 and ops[start][0].name != "MARK":
        start -= 1
    return [i for i in range(start + 1, end) if ops[i][0].name in PUSHES]


def _allowlisted_globals() -> list[bytes]:
    names = allowed_globals()
    return [g for g in GLOBALS + STORAGES if g.replace(b"\n", b".").decode() in names]


def _mutate_pickle_structure(raw: bytes, start: int, rng: random.Random) -> tuple[bytes, str]:
    """One structural change of the pickle at `start`: a field of a persistent id (storage key, dtype, element count,
    location) changed, dropped or doubled; a GLOBAL renamed to another allowlisted one; two neighbouring values
    swapped."""
    ops = _ops(raw, start)
    if len(ops) < 3:
        return raw, "pickle too short"
    persids = [i for i, (op, _arg, _pos) in enumerate(ops) if op.name == "BINPERSID"]
    globals_ = [i for i, (op, _arg, _pos) in enumerate(ops) if op.name == "GLOBAL"]
    what = rng.choice(["persid", "persid", "persid", "global", "swap"])
    if what == "persid" and persids:
        fields = _persid_fields(ops, rng.choice(persids))
        if len(fields) >= 5:
            field = rng.choice(["key", "dtype", "count", "location", "drop", "double"])
            index = fields[{"key": 2, "dtype": 1, "count": 4, "location": 3}.get(field, rng.randrange(len(fields)))]
            pos, end = ops[index][2], ops[index + 1][2]
            existing = sorted({ops[f[2]][1] for p in persids if len(f := _persid_fields(ops, p)) >= 5
                               and isinstance(ops[f[2]][1], str)})
            new = {"key": lambda: _encode_str(rng.choice(KEYS + existing)),
                   "dtype": lambda: b"c" + rng.choice(STORAGES) + b"\n",
                   "count": lambda: _encode_int(rng.choice(COUNTS + [ops[index][1] * 2 if isinstance(
                       ops[index][1], int) else 7])),
                   "location": lambda: _encode_str(rng.choice(LOCATIONS)),
                   "drop": lambda: b"",
                   "double": lambda: raw[pos:end] * 2}[field]()
            return raw[:pos] + new + raw[end:], f"persid {field}"
    if what in ("persid", "global") and globals_:
        index = rng.choice(globals_)
        pos, end = ops[index][2], ops[index + 1][2]
        name = rng.choice(_allowlisted_globals())
        dotted = name.replace(b"\n", b".").decode()
        return raw[:pos] + b"c" + name + b"\n" + raw[end:], f"global {dotted}"
    pushes = [i for i, (op, _arg, _pos) in enumerate(ops[:-2]) if op.name in PUSHES and ops[i + 1][0].name in PUSHES]
    if not pushes:
        return raw, "nothing to swap"
    index = rng.choice(pushes)
    a, b, c = ops[index][2], ops[index + 1][2], ops[index + 2][2]
    return raw[:a] + raw[b:c] + raw[a:b] + raw[c:], f"swap {ops[index][0].name}/{ops[index + 1][0].name}"


def _mutate_pickle_bytes(raw: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    """A structural pickle change of a plain pickle, a legacy save's pickles, or a zip's data.pkl (the zip
    rewritten, its members stored); None for other bytes."""
    what = [""]

    def change(data: bytes, start: int) -> bytes:
        new, what[0] = _mutate_pickle_structure(data, start, rng)
        return new

    if raw[:2] == b"PK":
        rewritten = _with_zip_pickle_changed(raw, rng, lambda data: change(data, 0))
        return None if rewritten is None else (rewritten, f"pickle {what[0]}")
    starts = _pickle_starts(raw)
    if not starts:
        return None
    changed = change(raw, rng.choice(starts))
    return None if changed == raw else (changed, f"pickle {what[0]}")


def mutate_structured(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    """A structure-aware mutation of a JSON file, a safetensors header or a pickle (red team 32); None when `data`
    is none of them (or already too broken to parse)."""
    changed = _typed_json_bytes(data, rng)
    if changed is not None:
        return changed
    if data[:4] == b"GGUF":  # red team 41
        return mutate_gguf(data, rng)
    return _mutate_pickle_bytes(data, rng)


# ------------------------------------------------------------------------------------------------------- oracles
def reached_globals(path: Path, container: str) -> set[str] | None:
    """The globals unpickling `path` would import, found without running anything (inert stand-ins)."""
    import torch

    found: set[str] = set()

    class Stand:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __call__(self, *args: Any, **kwargs: Any) -> Stand:
            return Stand()

        def __getattr__(self, name: str) -> Any:
            return Stand()

        def __setstate__(self, state: Any) -> None:
            pass

    class Recording(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            found.add(f"{module}.{name}")
            return Stand

    class Module:
        Unpickler = Recording
        load = pickle.load
        __name__ = "recording"

    try:
        if container == "pickle":
            with open(path, "rb") as handle:
                Recording(handle).load()
        else:
            torch.load(path, weights_only=False, pickle_module=Module, map_location="cpu")  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 -- what was reached before the failure is what counts
        pass
    return found


def allowed_globals() -> set[str]:
    from torch import _weights_only_unpickler as wou

    names = set()
    for key, value in wou._get_allowed_globals().items():
        names.add(key)
        if hasattr(value, "__module__") and hasattr(value, "__qualname__"):
            names.add(f"{value.__module__}.{value.__qualname__}")
    names |= {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
              "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray",
              "numpy.dtype", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"}
    names |= {f"torch.{kind}Storage" for kind in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short",
                                                    "Char", "Byte", "Bool", "ComplexFloat", "ComplexDouble")}
    names |= {"builtins.set", "builtins.frozenset", "builtins.bytearray", "_codecs.encode", "__builtin__.set"}
    # The configuration classes docs/security.md reads as inert data by design (argparse.Namespace, ...): building
    # them runs their own constructors only. A mutant reaching one is not a finding; any other name is.
    from weightdoctor.security import policy

    names |= set(policy.INERT_GLOBALS) | set(policy.RECONSTRUCTION_GLOBALS) | set(policy.OMEGACONF_TYPE_GLOBALS)
    return names


SIZE_KEY = re.compile(r"(^|_)(bytes|params|numel|elements)$|^(num_[a-z_]+|head_dim|total_size)$")


# inspect's copies of config.json (whole and summed up) and of the safetensors metadata, as written
RAW_ECHOES = ("config", "config_summary", "metadata")


def impossible_sizes(report: Any, path: str = "") -> list[str]:
    """A report's byte counts, parameter and element counts, layer and head counts that no checkpoint has: negative,
    fractional or not finite (red team 32: a config's num_key_value_heads of -1 made a KV cache of -8,192 bytes).
    Each as `path = value`."""
    found: list[str] = []
    items = report.items() if isinstance(report, dict) else enumerate(report) if isinstance(report, list) else ()
    for key, value in items:
        where = f"{path}.{key}" if path else str(key)
        if not path and key in RAW_ECHOES:
            continue
        if isinstance(value, (dict, list)):
            found += impossible_sizes(value, where)
        elif isinstance(key, str) and SIZE_KEY.search(key) and isinstance(value, (int, float)) \
                and not isinstance(value, bool) and (value < 0 or value != int(value) if value == value
                                                     and abs(value) != float("inf") else True):
            found.append(f"{re.sub(r'[.][0-9]+(?=[.]|$)', '.N', where)} = {value}")
        if len(found) > 5:
            break
    return found


# ---------------------------------------------------------------------------------------------------------- runner
def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            p = Path(dirpath) / name
            with contextlib.suppress(OSError):
                st = p.lstat()
                out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for dirpath, _dirnames, filenames in sorted(os.walk(folder)):
        for name in sorted(filenames):
            p = Path(dirpath) / name
            h.update(str(p).encode())
            with contextlib.suppress(OSError):
                if not p.is_symlink():
                    h.update(p.read_bytes())
    return h.hexdigest()


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# `python -m weightdoctor ARGS` that says its own peak RSS last on stderr (`cold_start`), at a normal exit and at the
# fast path's os._exit alike. /proc's VmHWM, not ru_maxrss: a child keeps the peak of the fuzzer it was forked from
# across its exec in ru_maxrss (Linux), which read 356 MB for an inspect that peaks at 52.
_COLD_RUN = """
import atexit, os, runpy, sys
def said():
    with open("/proc/self/status") as status:
        peak = next((line.split()[1] for line in status if line.startswith("VmHWM:")), "0")
    sys.stderr.write(f"\\nWD_PEAK_KB {peak}\\n")
    sys.stderr.flush()
atexit.register(said)
real_exit = os._exit
def exiting(code):
    said()
    real_exit(code)
os._exit = exiting
sys.argv = ["weightdoctor", *sys.argv[1:]]
runpy.run_module("weightdoctor", run_name="__main__")
"""


def _signature(kind: str, text: str) -> str:
    text = re.sub(r"/tmp/\S+", "PATH", text)
    text = re.sub(r"0x[0-9a-f]+|\d+", "N", text)
    return f"{kind}: {text[:160]}"


class Fuzzer:
    def __init__(self, out: Path, seeds: dict[str, Path], structured: bool = False, cold: bool = False) -> None:
        from typer.testing import CliRunner

        from weightdoctor.cli import app

        self.app = app
        self.runner = CliRunner()
        self.out = out
        self.seeds = seeds
        # Red team 32: structure-aware mutations and the commands of model folders, always for NEW_FORMATS, for the
        # older formats with --structured only (without it their mutants are those of red team 28).
        self.structured = structured
        self.mutations: Counter[str] = Counter()
        self.model_classes = {fmt: model_class_of(source) for fmt, source in seeds.items()}
        self.model_classes["hub"] = "BertModel"
        self.allowed = allowed_globals()
        self.findings: dict[str, dict[str, Any]] = {}
        self.counts: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()
        self.slowest: dict[str, float] = {}
        # Each command's slowest run, and largest peak growth in MB, on an unmutated seed (imports included).
        self.first_call_s: dict[str, float] = {}
        self.first_call_mb: dict[str, float] = {}
        self.seeds_run: set[str] = set()
        # Each command's cold run (a new process): seconds and peak RSS in MB (`cold_start`); off unless `cold` (the
        # script's runs; tests that fuzz a few mutants in-process skip its minute of new processes).
        self.cold = cold
        self.cold_s: dict[str, float] = {}
        self.cold_mb: dict[str, float] = {}
        (out / "mutants").mkdir(parents=True, exist_ok=True)
        self.log = open(out / "findings.jsonl", "a")  # noqa: SIM115
        self.donors = [p.read_bytes() for fmt, s in seeds.items() for p in mutable_files(fmt, s) if p.is_file()]

    def record(self, kind: str, text: str, fmt: str, mutation: str, command: str, mutant_dir: Path) -> None:
        signature = _signature(kind, text)
        self.outcomes[f"finding:{kind}"] += 1
        if signature in self.findings:
            self.findings[signature]["count"] += 1
            return
        keep = self.out / "mutants" / f"{len(self.findings):04d}-{fmt}"
        shutil.copytree(mutant_dir / "in", keep, symlinks=True, dirs_exist_ok=True)
        entry = {"signature": signature, "kind": kind, "format": fmt, "mutation": mutation, "command": command,
                 "text": text[-3000:], "kept": str(keep), "count": 1}
        self.findings[signature] = entry
        self.log.write(json.dumps(entry) + "\n")
        self.log.flush()
        print(f"FINDING {signature} [{fmt} {mutation} {command}]", flush=True)

    def invoke(self, args: list[str], env: dict[str, str], seconds_allowed: int = HANG_S
               ) -> tuple[int, str, str, BaseException | None, float, float]:
        before = _peak_mb()
        start = time.monotonic()
        signal.alarm(seconds_allowed)
        try:
            result = self.runner.invoke(self.app, args, env=env, catch_exceptions=True)
        except Hang as exc:
            return -1, "", "", exc, time.monotonic() - start, _peak_mb() - before
        finally:
            signal.alarm(0)
        exc = result.exception if not isinstance(result.exception, SystemExit) else None
        return (result.exit_code, result.stdout, result.stderr, exc, time.monotonic() - start,
                _peak_mb() - before)

    def run_mutant(self, fmt: str, rng: random.Random, work: Path, unmutated: bool = False) -> None:
        """Every command on a mutant of `fmt`'s seed (`rng` makes it), each outcome checked. The format's first
        mutant is preceded by a run on the seed itself (`unmutated`, `rng` left untouched), whose commands import
        what they need: its runs are held to `FIRST_CALL_S` and `FIRST_CALL_MEMORY_MB`."""
        if not unmutated and fmt not in self.seeds_run:
            self.run_mutant(fmt, rng, work, unmutated=True)
        if unmutated:
            self.seeds_run.add(fmt)
        seed = self.seeds[fmt]
        if work.exists():
            shutil.rmtree(work)
        (work / "in").mkdir(parents=True)
        (work / "tmp").mkdir()
        if seed.is_dir():
            target_root = work / "in" / seed.name
            shutil.copytree(seed, target_root, symlinks=True)
        else:
            target_root = work / "in" / seed.parent.name
            shutil.copytree(seed.parent, target_root, symlinks=True) if fmt in ("index", "ggufsplit") else None
        if fmt in ("index", "ggufsplit"):
            source = work / "in" / seed.parent.name / seed.name
            victims = mutable_files(fmt, source)
        elif seed.is_dir():
            source = target_root
            victims = mutable_files(fmt, source)
        else:
            source = work / "in" / seed.name
            shutil.copy2(seed, source)
            victims = [source]
        structured = fmt in NEW_FORMATS or fmt in RECENT_FORMATS or fmt in RT42_FORMATS or self.structured
        changed = None
        if unmutated:
            changed, victim = (b"", "unmutated"), None
        elif structured and rng.random() < 0.7:
            victim = rng.choice(victims)
            changed = mutate_structured(victim.read_bytes(), rng)
            self.mutations["structured" if changed else "structured-none"] += 1
        else:
            victim = rng.choice(victims)
        if changed is None:
            changed = mutate(victim.read_bytes(), rng, self.donors)
            self.mutations["bytes"] += 1
        data, mutation = changed
        if victim is not None:
            victim.write_bytes(data)
            mutation = f"{victim.name}:{mutation}"
        env = {"TMPDIR": str(work / "tmp"), "COLUMNS": "120", "HF_HUB_OFFLINE": "1"}
        arg = str(source)
        if fmt == "hub":
            env["HF_HUB_CACHE"] = str(source)
            arg = "fuzz/tiny"
        if not unmutated:
            self.counts[fmt] += 1
        seconds_allowed, memory_allowed = (FIRST_CALL_S, FIRST_CALL_MEMORY_MB) if unmutated else (HANG_S, MEMORY_MB)
        input_digest = _digest(work / "in")
        commands: list[tuple[str, list[str], Path | None]] = [
            ("inspect", ["inspect", arg, "--json"], None),
            ("inspect --stats", ["inspect", arg, "--stats"], None),
            ("check-dtype", ["check-dtype", arg, "--json"], None),
            ("diff-keys --values", ["diff-keys", arg, arg, "--values", "--json"], None),
            ("convert", ["convert", arg, "-o", str(work / "out" / "converted.safetensors")], work / "out"),
            ("shard", ["shard", arg, "-o", str(work / "shards"), "--max", "1KB"], work / "shards"),
            ("plan-devices", ["plan-devices", arg, "--gpu", "1MB", "--json"], None),
        ]
        if structured:
            commands += self.more_commands(fmt, arg, work)
        (work / "out").mkdir()
        tempfile.tempdir = str(work / "tmp")
        cwd = os.getcwd()
        os.chdir(work)
        try:
            safe_said = False
            inspect_code = None
            disagreed = False
            for name, args, output in commands:
                if unmutated and self.cold and name not in self.cold_s:
                    self.cold_start(name, args, env, output, fmt, work)
                tree_before = _tree(work)
                code, stdout, stderr, exc, seconds, grown = self.invoke(args, env, seconds_allowed)
                self.outcomes[f"{name}:{code}"] += 1
                if unmutated:
                    self.first_call_s[name] = max(self.first_call_s.get(name, 0.0), seconds)
                    self.first_call_mb[name] = max(self.first_call_mb.get(name, 0.0), grown)
                else:
                    self.slowest[name] = max(self.slowest.get(name, 0.0), seconds)
                if name == "inspect":
                    inspect_code = code
                elif inspect_code == 0 and code == 2:
                    # Not a finding by itself (a writer verifies values that inspect never reads): kept for review.
                    self.notes[_signature(name, stderr.strip()[-200:])] += 1
                    if "safetensors rejects the file" in stderr and not disagreed:
                        # a header inspect read (exit 0) that the library refuses: two verdicts on one header (said
                        # once a mutant, by what the library said, whichever command read it)
                        disagreed = True
                        said = stderr.split("safetensors rejects the file", 1)[1].strip()
                        self.record("disagree", f"inspect read it; the library: {said[:160]}", fmt, mutation, name,
                                    work)
                text = stderr + stdout[-500:]
                if isinstance(exc, Hang) or seconds > seconds_allowed:
                    said = f" on the unmutated seed, imports included ({seconds_allowed} s allowed)" * unmutated
                    self.record("hang", f"{name} {seconds:.1f}s{said}", fmt, mutation, name, work)
                    continue
                if exc is not None:
                    tb = "".join(traceback.format_exception(exc))
                    self.record("traceback", f"{type(exc).__name__}: {str(exc)[:200]} @ {tb[-600:]}", fmt, mutation,
                                name, work)
                elif code not in (0, 1, 2):
                    self.record("exit", f"{name} exit {code}: {text[-300:]}", fmt, mutation, name, work)
                if UNEXPECTED.search(stderr) or "Traceback" in stderr:
                    line = next((ln for ln in stderr.splitlines() if UNEXPECTED.search(ln) or "Traceback" in ln),
                                stderr)
                    self.record("unexpected", f"{name}: {line}", fmt, mutation, name, work)
                if grown > memory_allowed:
                    said = f" on the unmutated seed, imports included ({memory_allowed} MB allowed)" * unmutated
                    self.record("memory", f"{name} peak grew {grown:.0f} MB{said}", fmt, mutation, name, work)
                self.check_writes(name, code, work, tree_before, output, fmt, mutation)
                if structured and code in (0, 1) and "--json" in args:
                    with contextlib.suppress(ValueError):
                        bad = impossible_sizes(json.loads(stdout))
                        if bad:
                            self.record("bad-number", f"{name}: {bad[0]}", fmt, mutation, name, work)
                if name == "inspect" and code in (0, 1):
                    with contextlib.suppress(ValueError):
                        security = json.loads(stdout).get("security") or {}
                        safe_said = security.get("verdict") == "safe" and security.get("format") == "pickle"
                        if safe_said:
                            self.check_safe(fmt, source, security, mutation, work)
            if _digest(work / "in") != input_digest:
                self.record("input-changed", "the input changed", fmt, mutation, "all", work)
        finally:
            os.chdir(cwd)
            tempfile.tempdir = None

    def cold_start(self, name: str, args: list[str], env: dict[str, str], output: Path | None, fmt: str,
                   work: Path) -> None:
        """Run the command `name` on the unmutated seed in a new process (`python -m weightdoctor`, every import its
        own), its outcome checked as an in-process run's is; its output, if any, removed after."""
        import subprocess

        environment = {**os.environ, **env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        start = time.monotonic()
        try:
            done = subprocess.run([sys.executable, "-c", _COLD_RUN, *args], cwd=work, env=environment, text=True,
                                  capture_output=True, timeout=FIRST_CALL_S, check=False)
            code, stderr = done.returncode, done.stderr
        except subprocess.TimeoutExpired:
            code, stderr = None, ""
        seconds = time.monotonic() - start
        said = re.search(r"\nWD_PEAK_KB (\d+)\n$", stderr)
        peak_mb = int(said[1]) / 1024 if said else 0.0
        stderr = stderr[:said.start()] if said else stderr
        self.cold_s[name], self.cold_mb[name] = seconds, peak_mb
        what = f"{name} run cold (a new process, imports included)"
        if code is None:
            self.record("hang", f"{what}: past {FIRST_CALL_S} s", fmt, "unmutated", name, work)
        elif code not in (0, 1, 2):
            self.record("exit", f"{what} exit {code}: {stderr[-300:]}", fmt, "unmutated", name, work)
        elif UNEXPECTED.search(stderr) or "Traceback" in stderr:
            self.record("unexpected", f"{what}: {stderr.strip()[-300:]}", fmt, "unmutated", name, work)
        if peak_mb > COLD_START_MB:
            self.record("memory", f"{what}: peak RSS {peak_mb:.0f} MB ({COLD_START_MB} MB allowed)", fmt,
                        "unmutated", name, work)
        if output is not None:
            shutil.rmtree(output, ignore_errors=True)
            (work / "out").mkdir(exist_ok=True)

    def more_commands(self, fmt: str, arg: str, work: Path) -> list[tuple[str, list[str], Path | None]]:
        """Red team 32's commands: diff-keys --model-class (the seed's architecture), plan-devices --kv-cache,
        convert --to bin and --dtype fp16 (a folder's output a folder), and shard of a folder."""
        folder = self.seeds[fmt].is_dir() and fmt not in ("hub", "index")
        bin_out = work / "out" / ("converted-bin" if folder else "converted.bin")
        half_out = work / "out" / ("converted-fp16" if folder else "converted-fp16.safetensors")
        commands: list[tuple[str, list[str], Path | None]] = [
            ("plan-devices --kv-cache", ["plan-devices", arg, "--kv-cache", "--seq-len", "1000", "--gpu", "1MB",
                                         "--json"], None),
            ("convert --to bin", ["convert", arg, "-o", str(bin_out), "--to", "bin"], work / "out"),
            ("convert --dtype fp16", ["convert", arg, "-o", str(half_out), "--dtype", "fp16"], work / "out"),
        ]
        if self.model_classes.get(fmt):
            commands.insert(0, ("diff-keys --model-class", ["diff-keys", arg, "--model-class",
                                                            str(self.model_classes[fmt]), "--json"], None))
        return commands

    def check_writes(self, name: str, code: int, work: Path, before: dict[str, tuple[int, int]],
                     output: Path | None, fmt: str, mutation: str) -> None:
        after = _tree(work)
        new = {p for p in after if p not in before or after[p] != before[p]}
        prefix = str(output.relative_to(work)) + "/" if output is not None else None
        stray = sorted(p for p in new if prefix is None or not p.startswith(prefix))
        if stray:
            self.record("stray-write", f"{name} wrote {stray[:5]}", fmt, mutation, name, work)
        if output is None:
            return
        written = sorted(p for p in after if prefix and p.startswith(prefix))
        if code != 0 and written:
            self.record("half-written", f"{name} exit {code} left {written[:5]}", fmt, mutation, name, work)
        leftovers = [p for p in written if ".wdtmp-" in p or ".wdstage-" in p or ".wdold-" in p]
        if leftovers:
            self.record("leftover", f"{name} left {leftovers[:5]}", fmt, mutation, name, work)
        if code == 0:
            from safetensors.torch import load_file

            for p in written:
                if p.endswith((".safetensors", ".bin")):
                    try:
                        if p.endswith(".bin"):
                            import torch

                            torch.load(work / p, weights_only=True, map_location="cpu")
                        else:
                            load_file(str(work / p))
                    except Exception as exc:  # noqa: BLE001
                        self.record("bad-output", f"{name} wrote {p} that does not load: {exc}", fmt, mutation,
                                    name, work)
        shutil.rmtree(work / output.relative_to(work), ignore_errors=True)
        (work / "out").mkdir(exist_ok=True)

    def check_safe(self, fmt: str, source: Path, security: dict[str, Any], mutation: str, work: Path) -> None:
        files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
        container = security.get("container", "")
        for path in files:
            if path.suffix in (".json", ".metadata", ".safetensors", ".distcp"):
                continue
            reached = reached_globals(path, "pickle" if container == "pickle" else "torch")
            if reached is None:
                continue
            bad = sorted(g for g in reached if g not in self.allowed)
            if bad:
                self.record("safe-but-code", f"inspect said safe; unpickling reaches {bad[:5]}", fmt, mutation,
                            "inspect", work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--seed", type=int, default=28)
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help=f"comma-separated, of {', '.join(ALL_FORMATS)}; or all")
    parser.add_argument("--structured", action="store_true",
                        help="structure-aware mutations and red team 32's commands for the older formats too")
    parser.add_argument("--out", type=Path, default=Path("/tmp/redteam28-fuzz"))
    parser.add_argument("--max-mutants", type=int, default=10**9)
    options = parser.parse_args()

    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang()

    signal.signal(signal.SIGALRM, on_alarm)
    options.out.mkdir(parents=True, exist_ok=True)
    formats = list(ALL_FORMATS) if options.formats == "all" else options.formats.split(",")
    unknown = sorted(set(formats) - set(ALL_FORMATS))
    if unknown:
        parser.error(f"unknown formats: {', '.join(unknown)}")
    seed_root = Path(tempfile.mkdtemp(prefix="seeds-", dir=options.out))
    seeds = build_seeds(seed_root)
    seeds |= build_model_seeds(seed_root / "models", tuple(f for f in formats if f in NEW_FORMATS))
    seeds |= build_recent_seeds(seed_root / "recent", tuple(f for f in formats if f in RECENT_FORMATS))
    seeds |= build_rt42_seeds(seed_root / "rt42", tuple(f for f in formats if f in RT42_FORMATS))
    fuzzer = Fuzzer(options.out, seeds, structured=options.structured, cold=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=options.out))
    deadline = time.monotonic() + options.seconds
    n = 0
    while time.monotonic() < deadline and n < options.max_mutants:
        fmt = formats[n % len(formats)]
        mutant_rng = random.Random(f"{options.seed}-{fmt}-{n}")
        try:
            fuzzer.run_mutant(fmt, mutant_rng, work)
        except Hang:
            fuzzer.record("hang", "outside a command", fmt, "?", "?", work)
        except Exception as exc:  # noqa: BLE001 -- the fuzzer's own failure: said, and the next mutant goes on
            print(f"fuzzer error on {fmt} #{n}: {exc!r}", flush=True)
        n += 1
        if n % 50 == 0:
            print(f"{n} mutants {dict(fuzzer.counts)} findings {len(fuzzer.findings)} peak {_peak_mb():.0f} MB",
                  flush=True)
        if n % 500 == 0:
            print(dict(sorted(fuzzer.outcomes.items())), flush=True)
    summary = {"mutants": dict(fuzzer.counts), "mutations": dict(fuzzer.mutations),
               "findings": len(fuzzer.findings),
               "outcomes": dict(sorted(fuzzer.outcomes.items())),
               "signatures": {s: e["count"] for s, e in fuzzer.findings.items()},
               "slowest_s": {name: round(seconds, 2) for name, seconds in fuzzer.slowest.items()},
               "first_call_s": {name: round(seconds, 2) for name, seconds in fuzzer.first_call_s.items()},
               "first_call_mb": {name: round(grown) for name, grown in fuzzer.first_call_mb.items()},
               "cold_start_s": {name: round(seconds, 2) for name, seconds in fuzzer.cold_s.items()},
               "cold_start_mb": {name: round(peak) for name, peak in fuzzer.cold_mb.items()},
               "read_by_inspect_refused_by": dict(fuzzer.notes.most_common())}
    (options.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    sys.exit(main())
