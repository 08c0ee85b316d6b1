"""The documented `--json` contract of every command holds on varied inputs, not only on fixtures/example.

tests/test_json_schema_docs.py holds README's key tables to one run per command on the example (its parser is
reused here); this file runs the six commands on a single file, a sharded folder, `.bin` / legacy / numpy
pickles, a DDP-prefixed file, a PEFT adapter, a Hub cache repo id, empty, integer and non-finite checkpoints, a
corrupt file, a missing path, a folder without weights, an unsafe pickle and misused options, and checks what a CI
job gates on: (1) each documented key holds the type its table's `type` column names, null only where the docs
say so (for keys inside objects and lists too), and a key whose row lists its values takes one of them, (2) no
undocumented key, (3) the exit code the docs give for the situation, the same across commands, (4) exit 2
leaves stdout empty and says one `error:` line on stderr (docs/exit-codes.md: "nothing on stdout"), (5) stdout
is one strict JSON document (no bare NaN) and the reader's warnings are in `warnings`, on stderr only where
README says so. The tables, types and values are parsed from README.md and docs/commands/*.md, so a later change
of the docs is checked too.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import REPO_ROOT, copy_example, run_cli
from tests.test_json_schema_docs import (
    README,
    REFERENCES,
    SECTIONS,
    _objects_at,
    assert_keys_match,
    documented_paths,
)

EXAMPLE = REPO_ROOT / "fixtures" / "example"
DOCS = REPO_ROOT / "docs" / "commands"
COMMANDS = list(SECTIONS)

# --- the documented types ---------------------------------------------------------------------------------------

Kind = tuple[frozenset[type], bool]  # accepted JSON types, and whether null is documented


def parse_type(text: str) -> Kind | None:
    """The JSON types a `type` cell names (`string or null`, `list[str]`, `int / null`, `{status, message}`).

    None for an empty cell (the meaning column says it) or one this parser does not know (asserted rare below).
    """
    text = text.strip().strip("\\").strip()
    nullable = bool(re.search(r"(\bor\s+`?null`?|/\s*null)\s*$", text))
    text = re.sub(r"(\bor\s+`?null`?|/\s*null)\s*$", "", text).strip()
    if not text:
        return None
    if text.startswith('`"'):  # `"pickle"` \| `"safetensors"`: an enumeration of strings
        return frozenset({str}), nullable
    if text.startswith("`{"):
        return frozenset({dict}), nullable
    head = re.split(r"[\s\[]", text, maxsplit=1)[0]
    kinds = {"string": {str}, "str": {str}, "int": {int}, "bool": {bool}, "float": {float, int},
             "object": {dict}, "list": {list}}.get(head.lower())
    return (frozenset(kinds), nullable) if kinds else None


def _row_paths(heading_line: str, row: str) -> list[tuple[str, ...]]:
    """The key paths of one table row, in the order the row names them (parsed by `documented_paths`)."""
    cells = row.split("|")
    tokens = re.findall(r"`[^`]+`", cells[1])
    found: list[tuple[str, ...]] = []
    seen: set[tuple[str, ...]] = set()
    for count in range(1, len(tokens) + 1):
        one_row = f"{heading_line}\n| key | type |\n| --- | --- |\n| {', '.join(tokens[:count])} | |\n"
        new = documented_paths(heading_line, text=one_row) - seen
        found.extend(new)
        seen |= new
    return found


def documented_types(text: str, heading: str, section_end: str = "\n## ") -> dict[tuple[str, ...], Kind | None]:
    """Key path → the types its row's `type` column names, for each `| key | type | ... |` table under `heading`.

    A row naming several keys gives them one type (`source`, `resolved_path`, `format` | string) or one each
    (`plan.renamed`, `plan.renames` | `int, list of strings`; `a`, `b` | `string / int or null`).
    """
    start = text.index(heading)
    end = text.find(section_end, start + len(heading))
    types: dict[tuple[str, ...], Kind | None] = {}
    in_table = previous_was_row = False
    for line in text[start:end if end != -1 else None].splitlines():
        is_row = line.startswith("|")
        if is_row and not previous_was_row:
            header = [cell.strip() for cell in line.split("|")[1:3]]
            in_table = header == ["key", "type"]
        previous_was_row = is_row
        if not (is_row and in_table and line.startswith("| `")):
            continue
        # `"safe"` \| `"suspicious"`: an escaped bar inside a cell is no column.
        cells = line.replace("\\|", "/").split("|")
        paths = _row_paths(heading, line.replace("\\|", "/"))
        cell = cells[2].strip()
        borrowed = re.search(r"as in `([\w-]+) --json`", cells[3]) if not cell and len(cells) > 3 else None
        if borrowed and borrowed.group(1) in SECTIONS:
            # `plan.dtype`, ... | | as in `convert --json`: the types of that command's table in the same text.
            other = documented_types(*_section_of(text, borrowed.group(1)))
            types.update({path: other.get(path) for path in paths})
            continue
        parts = re.split(r"\s*,\s*|\s+/\s+(?!null)", re.sub(r"\s+or null$", "", cell))
        if len(paths) > 1 and len(parts) == len(paths) and not cell.startswith(("list of `", "`")):
            suffix = " or null" if cell.endswith("or null") else ""
            for path, part in zip(paths, parts, strict=True):
                types[path] = parse_type(part + suffix)
        else:
            for path in paths:
                types[path] = parse_type(cell)
    return types


def documented_values(text: str, heading: str, section_end: str = "\n## ") -> dict[tuple[str, ...], set[str]]:
    """Key path → the values a string key takes, where its row's meaning is a list of them and nothing else
    (`` `checkpoints` or `model-class` ``; a parenthesis after a value is its gloss)."""
    start = text.index(heading)
    end = text.find(section_end, start + len(heading))
    values: dict[tuple[str, ...], set[str]] = {}
    for line in text[start:end if end != -1 else None].splitlines():
        cells = line.replace("\\|", "/").split("|")
        if not line.startswith("| `") or len(cells) < 5 or parse_type(cells[2]) != (frozenset({str}), False):
            continue
        meaning = re.sub(r"\([^()]*\)", "", cells[3].split(";")[-1] if "as given;" in cells[3] else cells[3]).strip()
        meaning = meaning.removeprefix("as given;").strip()
        listed = r'`"?[\w.-]+"?`'
        if not re.fullmatch(rf"{listed}(\s*(,|or|, or)\s*{listed})+", meaning):
            continue
        paths = _row_paths(heading, line)
        for path in paths[-1:]:  # `plan.source`, `plan.output`, `plan.format` | as given; `safetensors` or `bin`
            values[path] = {v.strip('"') for v in re.findall(r"`([^`]+)`", meaning)}
    return values


def _section_of(text: str, command: str) -> tuple[str, str]:
    """(text, heading) of `command`'s section: in `text` (README) if there, else its docs/commands page."""
    if SECTIONS[command] in text:
        return text, SECTIONS[command]
    page = (DOCS / REFERENCES[command]).read_text(encoding="utf-8")
    return page, page.splitlines()[0]


def _doc_tables(command: str) -> list[tuple[str, dict[tuple[str, ...], Kind | None]]]:
    """(doc name, key types) for README's section of `command` and its full reference in docs/commands."""
    tables = [("README.md", documented_types(README, SECTIONS[command]))]
    if command == "inspect":
        tables.append(("README.md (security)", documented_types(README, "### `--json` keys added")))
        text = (DOCS / "inspect-security.md").read_text(encoding="utf-8")
        tables.append(("inspect-security.md", documented_types(text, text.splitlines()[0], "\n# ")))
    else:
        text = (DOCS / REFERENCES[command]).read_text(encoding="utf-8")
        tables.append((REFERENCES[command], documented_types(text, text.splitlines()[0])))
    return tables


def assert_documented_types(command: str, data: dict[str, Any]) -> None:
    problems: list[str] = []
    for doc, types in _doc_tables(command):
        for path, kind in types.items():
            if kind is None:
                continue
            accepted, nullable = kind
            for where, obj in _objects_at(data, path[:-1]):
                if path[-1] not in obj:
                    continue  # absence is assert_keys_match's to judge
                value = obj[path[-1]]
                label = ".".join((*where, path[-1]))
                if value is None:
                    if not nullable:
                        problems.append(f"{doc}: {label} is null; its type is not documented as nullable")
                    continue
                ok = any(isinstance(value, t) and not (t is int and isinstance(value, bool)) for t in accepted)
                # Non-finite numbers are written as the strings "nan" / "inf" (README, diff-keys and --stats).
                ok = ok or (float in accepted and value in ("nan", "inf", "-inf"))
                if not ok:
                    problems.append(f"{doc}: {label} is {type(value).__name__} {value!r:.60}; documented "
                                    f"{sorted(t.__name__ for t in accepted)}")
    for doc_text, heading in _value_sections(command):
        for path, allowed in documented_values(doc_text, heading).items():
            for where, obj in _objects_at(data, path[:-1]):
                if path[-1] in obj and obj[path[-1]] is not None and obj[path[-1]] not in allowed:
                    problems.append(f"{'.'.join((*where, path[-1]))} is {obj[path[-1]]!r}, not one of the documented "
                                    f"{sorted(allowed)}")
    assert not problems, "\n".join(dict.fromkeys(problems))


def _value_sections(command: str) -> list[tuple[str, str]]:
    """(text, heading) of README's section of `command` and of its docs/commands page."""
    name = {"inspect": "inspect-security.md"}.get(command, REFERENCES.get(command))
    page = (DOCS / name).read_text(encoding="utf-8")
    return [(README, SECTIONS[command]), (page, page.splitlines()[0])]


# Objects whose content is the file's or a library's own (a config, safetensors metadata, an adapter's config,
# fitted parameters), documented as such: a null inside them is data, not a key of weightdoctor's.
FREE_FORM = {("config",), ("config_summary",), ("metadata",), ("native_params",), ("adapter",), ("quantized",),
             ("local",), ("plan", "metadata"), ("tensors", "init", "params"), ("tensors", "init", "expected"),
             ("tensors", "init", "candidates"), ("tensors", "init", "evidence")}
_TOKEN = re.compile(r"`([^`]+)`")


def _doc_texts(command: str) -> list[str]:
    """The table rows that document `command`'s JSON: README's section and its docs/commands page(s)."""
    names = {"inspect": ["inspect-stats.md", "inspect-security.md"]}.get(command, [REFERENCES.get(command, "")])
    start = README.index(SECTIONS[command])
    end = README.find("\n## ", start + 1)
    texts = [README[start:end], *((DOCS / name).read_text(encoding="utf-8") for name in names)]
    if command == "shard":  # shard's rows say "as in `convert --json`"
        texts += _doc_texts("convert")
    return [line for text in texts for line in text.splitlines() if line.startswith("| `")]


def documents_null(rows: list[str], leaf: str) -> bool:
    """Whether a row says `leaf` can be null: after a mention of it (`leaf`, `x.leaf`, `.leaf`, or a run of keys
    that ends the run: `first` / `last`), the text up to the next key mentioned says `null`."""
    for row in rows:
        # Split the row at each backticked name; a literal (`null`, `true`, `"nan"`, `{...}`) is no key.
        pieces = _TOKEN.split(row)
        pending = False
        for i in range(1, len(pieces), 2):
            token, before, after = pieces[i], pieces[i - 1], pieces[i + 1]
            if not re.fullmatch(r"[\w.\[\]]+", token) or token in ("null", "true", "false"):
                if pending and token == "null":
                    return True
                continue
            joined = pending and re.fullmatch(r"[\s,/]*(and|or)?[\s,/]*", before) is not None
            pending = token.replace("[]", "").split(".")[-1] == leaf or joined
            if pending and "null" in after:
                return True
    return False


def assert_nulls_documented(command: str, data: dict[str, Any]) -> None:
    """(1) for keys inside objects and lists, whose tables give no type: a null only where a row says so."""
    typed = {path for _, types in _doc_tables(command) for path, kind in types.items() if kind is not None}
    rows = _doc_texts(command)
    problems: set[str] = set()

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if path in FREE_FORM:
            return
        if isinstance(node, list):
            for item in node:
                walk(item, path)
        elif isinstance(node, dict):
            for key, value in node.items():
                # `targets.T`, `device_map`, `dtypes`: a dict keyed by data is documented as `T`.
                child = (*path, key) if any(p[:len(path) + 1] == (*path, key) for p in typed | FREE_FORM) or \
                    not any(p[:len(path) + 1] == (*path, "T") for p in typed) else (*path, "T")
                if value is None and child not in typed and not documents_null(rows, child[-1]):
                    problems.add(".".join(child))
                walk(value, child)

    walk(data, ())
    assert not problems, f"null, but no row of the docs says it can be: {sorted(problems)}"


def documented_keys(command: str) -> set[tuple[str, ...]]:
    """README's key paths for `command`, as tests/test_json_schema_docs.py reads them (with the stats keys)."""
    return documented_paths(SECTIONS[command])


# --- the inputs -------------------------------------------------------------------------------------------------


def _example_tensors() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(EXAMPLE / "model.safetensors"))


class _RunsACommand:
    """Pickled as a call of os.system: what the static scan must refuse before anything is unpickled."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.system, ("true",)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every situation a source can be in, built once; name → path (or repo id, for `hub`)."""
    from fixtures.build import write_hub_cache

    tmp = tmp_path_factory.mktemp("inputs")
    tensors = _example_tensors()
    config = (EXAMPLE / "config.json").read_text()
    made: dict[str, Path] = {"single": tmp / "single.safetensors"}
    save_file(tensors, str(made["single"]), metadata={"format": "pt"})

    sharded = tmp / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text(config)
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for filename, part in halves.items():
        save_file({n: tensors[n] for n in part}, str(sharded / filename), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, filename)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    made["sharded"] = sharded

    made["bin"] = tmp / "pytorch_model.bin"
    torch.save(tensors, made["bin"])

    ddp = tmp / "ddp"
    ddp.mkdir()
    (ddp / "config.json").write_text(config)
    save_file({f"module.{n}": t for n, t in tensors.items()}, str(ddp / "model.safetensors"),
              metadata={"format": "pt"})
    made["ddp"] = ddp

    adapter = tmp / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "base_model_name_or_path": "bert-base-uncased", "task_type": "SEQ_CLS", "r": 4,
        "lora_alpha": 8, "target_modules": ["query", "value"]}))
    generator = torch.Generator().manual_seed(0)
    lora = {}
    for layer in range(4):
        for proj in ("query", "value"):
            stem = f"base_model.model.bert.encoder.layer.{layer}.attention.self.{proj}"
            lora[f"{stem}.lora_A.weight"] = torch.randn(4, 64, generator=generator)
            lora[f"{stem}.lora_B.weight"] = torch.zeros(64, 4)
    save_file(lora, str(adapter / "adapter_model.safetensors"))
    made["peft"] = adapter

    cache = tmp / "hub"
    write_hub_cache(cache, "org/tiny-bert", EXAMPLE)
    made["hub"] = Path("org/tiny-bert")
    made["hub_cache"] = cache

    # Both weight formats in one folder: the reader warns that the .bin is ignored (stdout must stay JSON).
    both = copy_example(tmp)
    torch.save(tensors, both / "pytorch_model.bin")
    made["warns"] = both

    # A training checkpoint (the state dict under `model_state_dict`), an fp16 file, values fp16 cannot hold, and
    # tied weights (one storage under two names).
    made["training"] = tmp / "checkpoint.pt"
    torch.save({"model_state_dict": tensors, "epoch": 3, "optimizer_state_dict": {"state": {}, "param_groups": []}},
               made["training"])
    made["half"] = tmp / "half.safetensors"
    save_file({n: t.half() for n, t in tensors.items()}, str(made["half"]))
    made["huge"] = tmp / "huge.safetensors"
    save_file({"big.weight": torch.tensor([1e5, -7e4, 1.0, 1e-9]), "small.bias": torch.zeros(3)}, str(made["huge"]))
    made["underflow"] = tmp / "underflow.safetensors"  # 1 of 11 non-zero values becomes 0 in fp16
    save_file({"a.weight": torch.tensor([1e-9, *range(1, 11)], dtype=torch.float32)}, str(made["underflow"]))
    # A plain `pickle.dump` of numpy arrays (Detectron2's model_final.pkl) and torch's legacy (non-zip) format.
    import pickle

    made["numpy_pickle"] = tmp / "model_final.pkl"
    made["numpy_pickle"].write_bytes(pickle.dumps({"model": {n: t.numpy() for n, t in list(tensors.items())[:6]}},
                                                  protocol=2))
    made["legacy"] = tmp / "legacy.pt"
    torch.save(dict(list(tensors.items())[:6]), made["legacy"], _use_new_zipfile_serialization=False)
    made["tied"] = tmp / "tied.bin"
    shared = torch.randn(8, 4, generator=generator)
    torch.save({"wte.weight": shared, "lm_head.weight": shared, "ln.bias": torch.zeros(4)}, made["tied"])

    # Edges of the values: no tensors at all, integer tensors only, NaN and inf among the values.
    made["empty"] = tmp / "empty.safetensors"
    save_file({}, str(made["empty"]))
    made["ints"] = tmp / "ints.safetensors"
    save_file({"ids.weight": torch.arange(12).reshape(3, 4), "mask": torch.ones(5, dtype=torch.bool)},
              str(made["ints"]))
    made["nonfinite"] = tmp / "nonfinite.safetensors"
    save_file({"a.weight": torch.tensor([[float("nan"), 1.0], [float("inf"), -float("inf")]]),
               "a.bias": torch.zeros(2), "b.weight": torch.full((2, 2), 3.0)}, str(made["nonfinite"]))

    # Input no command may read: a pickle that would run a command, a GGUF file whose tensor count cannot fit it, an
    # index naming a missing shard, a remote URL and a repo id the (offline) cache does not hold.
    made["unsafe"] = tmp / "unsafe.bin"
    torch.save({"w": torch.zeros(2), "run": _RunsACommand()}, made["unsafe"])
    made["gguf"] = tmp / "model.Q4_K_M.gguf"
    made["gguf"].write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (1 << 63).to_bytes(8, "little") + bytes(64))
    gap = tmp / "gap"
    shutil.copytree(sharded, gap)
    (gap / "model-00002-of-00002.safetensors").unlink()
    made["gap"] = gap
    made["url"] = Path("s3://bucket/model.safetensors")
    made["uncached"] = Path("org/never-downloaded")

    corrupt = tmp / "corrupt.safetensors"
    corrupt.write_bytes(made["single"].read_bytes()[:1000])
    made["corrupt"] = corrupt
    made["missing"] = tmp / "no-such-model.safetensors"
    empty = tmp / "no-weights"
    empty.mkdir()
    (empty / "README.md").write_text("nothing here\n")
    made["no_weights"] = empty
    return made


GOOD = ["single", "sharded", "bin", "ddp", "peft", "hub", "warns", "empty", "ints", "nonfinite", "numpy_pickle",
        "legacy"]
BAD = ["corrupt", "missing", "no_weights", "unsafe", "gguf", "gap", "url", "uncached"]


def command_args(command: str, source: str, out: Path) -> list[str]:
    """The run of `command` on `source` (diff-keys loads it into the example; the writers write under `out`)."""
    return {
        "inspect": ["inspect", source],
        "diff-keys": ["diff-keys", source, str(EXAMPLE)],
        "plan-devices": ["plan-devices", source, "--gpu", "1GB"],
        "convert": ["convert", source, "-o", str(out / "converted")],
        "shard": ["shard", source, "--max", "300KB", "-o", str(out / "shards")],
        "check-dtype": ["check-dtype", source],
    }[command]


def run(args: list[str], hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a repo id is read from the cache built here, never the network
    return run_cli(*args, "--json")


def strict_json(text: str) -> Any:
    """`json.loads` as jq reads it: Python's own parser takes `NaN` and `Infinity`, which are no JSON."""
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} is not JSON (jq refuses it); README writes non-finite numbers as strings")

    return json.loads(text, parse_constant=refuse)


def assert_one_error_line(result: Any, *, naming: str | None = None) -> str:
    """Exit 2 as docs/exit-codes.md gives it: nothing on stdout, one `error:` line on stderr, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.stdout[:300], result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    if naming is not None:
        assert naming in lines[0], lines[0]
    return lines[0]


def assert_json_contract(command: str, result: Any, *, stats: bool = False) -> dict[str, Any]:
    """Exit 0 or 1, stdout exactly one JSON object, keys as README names them, types as the tables give them."""
    assert result.exit_code in (0, 1), (result.exit_code, result.stderr)
    data = strict_json(result.stdout)  # the whole of stdout: one document, nothing before or after it
    assert isinstance(data, dict)
    documented = documented_keys(command)
    # `histogram` is written for --hist tensors only (test_json_schema_docs).
    optional = frozenset({("tensors", "histogram")})
    if command == "inspect" and not stats:
        # The --stats keys inside `tensors[]` are written with --stats only (test_json_schema_docs).
        stats = documented_paths("### `inspect --stats`", section_end="### `inspect`: the security scan")
        documented = (documented - stats) | {("tensors",)}
    assert_keys_match(data, documented, optional)
    assert_documented_types(command, data)
    assert_nulls_documented(command, data)
    return data


# --- (1)-(3) on every healthy input --------------------------------------------------------------------------------


@pytest.mark.parametrize("situation", GOOD)
@pytest.mark.parametrize("command", COMMANDS)
def test_json_keys_types_and_exit_code_on_varied_inputs(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, situation: str
) -> None:
    result = run(command_args(command, str(inputs[situation]), tmp_path), inputs["hub_cache"], monkeypatch)
    if command == "plan-devices" and situation == "empty":
        # README (plan-devices' exit codes): no tensors and no config leave nothing to plan, exit 2.
        assert_one_error_line(result, naming="nothing to plan")
        return
    data = assert_json_contract(command, result)
    # The exit code follows from the JSON: 1 only for findings at or above the default --fail-on.
    if command == "diff-keys":  # default --fail-on error
        assert result.exit_code == (1 if data["worst_severity"] == "error" else 0), data["worst_severity"]
    else:
        assert result.exit_code == 0, result.stderr
    if situation == "warns":
        warning = "pytorch_model.bin is ignored: model.safetensors comes first"
        # (5) the warning is in the JSON's `warnings` (stdout parsed whole above: nothing else is on it); on
        # stderr too only where README says so: convert and shard print theirs, the others with --json do not.
        assert any(warning in w for w in data["warnings"]), data["warnings"]
        assert (warning in result.stderr) == (command in ("convert", "shard")), result.stderr


# --- (1)-(2) with the options that fill the nullable keys ----------------------------------------------------------

VARIANTS = [
    ("inspect", "bin", ["--verify"]),
    ("inspect", "training", []),
    ("inspect", "sharded", ["--filter", r"layer\.0\.", "--all"]),
    ("inspect", "single", ["--stats", "--sample", "256", "--hist", r"classifier\.weight"]),
    ("inspect", "peft", ["--depth", "1"]),
    ("diff-keys", "single", ["--values"]),
    ("diff-keys", "ddp", ["--rename", r"^module\.=", "--values", "--all"]),
    ("diff-keys", "sharded", ["--model-class", "BertForQuestionAnswering"]),
    ("diff-keys", "half", ["--values", "--fail-on", "info"]),
    ("plan-devices", "sharded", ["--cpu", "1GB", "--disk", "--kv-cache", "--batch", "2", "--seq-len", "16"]),
    ("plan-devices", "sharded", ["--training", "--dtype", "bf16", "--strategy", "sequential"]),
    ("plan-devices", "single", ["--local"]),
    ("plan-devices", "single", ["--map", "{map}"]),
    ("plan-devices", "hub", ["--reserve", "100KB", "--output", "{out}/map.json"]),
    ("convert", "sharded", ["--dtype", "fp16", "--keep-fp32", "classifier", "--dry-run"]),
    ("convert", "bin", ["--to", "bin", "--strip-prefix", "bert.", "--metadata", "run=1"]),
    ("convert", "huge", ["--dtype", "fp16", "--allow-overflow"]),
    ("convert", "tied", ["--dtype", "bf16"]),
    ("shard", "bin", ["--single"]),
    ("shard", "sharded", ["--format", "bin", "--dtype", "bf16"]),
    ("shard", "tied", ["--dry-run", "--metadata", "run=2"]),
    ("check-dtype", "half", ["--local"]),
    ("check-dtype", "huge", ["--sample", "64", "--filter", "big"]),
    ("check-dtype", "training", ["--key", "model_state_dict"]),
    *(("inspect", situation, ["--stats"]) for situation in GOOD),
    *(("check-dtype", situation, ["--target", "all"]) for situation in ("bin", "ints", "nonfinite", "half", "peft")),
    *(("diff-keys", situation, ["--model-class", "BertForSequenceClassification", "--config", str(EXAMPLE)])
      for situation in ("ddp", "peft", "bin", "training", "hub")),
    *(("diff-keys", situation, ["--values", "--fail-on", "info"])
      for situation in ("nonfinite", "ints", "empty", "hub")),
    *(("shard", situation, ["--single", "--dtype", "fp16"]) for situation in ("ints", "nonfinite", "tied")),
]


@pytest.mark.parametrize(("command", "situation", "extra"), VARIANTS,
                         ids=[f"{c}-{s}-{' '.join(e)[:30]}" for c, s, e in VARIANTS])
def test_json_keys_and_types_with_the_options_that_fill_them(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, situation: str,
    extra: list[str]
) -> None:
    device_map = tmp_path / "map.json"
    device_map.write_text('{"": 0}')
    extra = [a.format(map=device_map, out=tmp_path) for a in extra]
    args = command_args(command, str(inputs[situation]), tmp_path)
    if command == "convert" and situation in ("huge", "tied", "half"):
        args[-1] += ".safetensors"
    # Options that replace one the plain run gives: B, --gpu, --max.
    drop = {("diff-keys", "--model-class"): [str(EXAMPLE)], ("plan-devices", "--local"): ["--gpu", "1GB"],
            ("shard", "--single"): ["--max", "300KB"]}.get((command, next(iter(extra), "")), [])
    args = [a for a in args if a not in drop]
    result = run([*args, *extra], inputs["hub_cache"], monkeypatch)
    stats = command == "inspect" and "--stats" in extra
    assert_json_contract(command, result, stats=stats)


# --- "as in inspect": the keys README says two commands share hold the same values -------------------------------


@pytest.mark.parametrize("situation", ["single", "sharded", "bin", "ddp", "peft", "hub", "warns", "empty"])
def test_the_keys_commands_share_agree_with_inspect(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, situation: str
) -> None:
    source = str(inputs[situation])
    runs = {command: run(command_args(command, source, tmp_path), inputs["hub_cache"], monkeypatch)
            for command in ("inspect", "check-dtype", "convert", "shard", "diff-keys")}
    data = {command: json.loads(result.stdout) for command, result in runs.items()}
    inspected = data["inspect"]
    # check-dtype: `source`, `resolved_path`, `format` "as in `inspect`".
    assert {k: data["check-dtype"][k] for k in ("source", "resolved_path", "format")} == {
        k: inspected[k] for k in ("source", "resolved_path", "format")}
    # diff-keys' `resolved_a` is where A was read, as inspect's `resolved_path`; `total_a` its keys.
    assert data["diff-keys"]["resolved_a"] == inspected["resolved_path"]
    assert data["diff-keys"]["total_a"] == inspected["num_tensors"]
    # The writers write every tensor but the tied aliases they leave out.
    for writer in ("convert", "shard"):
        plan = data[writer]["plan"]
        assert plan["num_tensors"] + len(plan["dropped_aliases"]) == inspected["num_tensors"], writer
        assert data[writer]["write"]["verified"] is True
    # `repo_id` / `commit` for a repo id only; `sharded` for an index.
    assert (inspected["repo_id"], inspected["revision"]) == (("org/tiny-bert", None) if situation == "hub" else
                                                             (None, None))
    assert (inspected["commit"] is not None) == (situation == "hub")
    assert inspected["sharded"] == (situation == "sharded")


@pytest.mark.parametrize("revision", [None, "main"])
@pytest.mark.parametrize("form", ["repo-id", "cache-folder"])
def test_repo_id_revision_and_commit_say_what_the_docs_say(
    inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, form: str, revision: str | None
) -> None:
    # README: `repo_id` / `revision` are the repo id and the --revision asked for, both null for a local path "a
    # repo's cache folder included"; `commit` the snapshot read for either; diff-keys' `revision_a` / `revision_b`
    # the --revision of a side that is a repo id, else null.
    cache = inputs["hub_cache"]
    source = "org/tiny-bert" if form == "repo-id" else str(cache / "models--org--tiny-bert")
    asked = ["--revision", revision] if revision else []
    snapshot = next((cache / "models--org--tiny-bert" / "snapshots").iterdir())
    inspected = assert_json_contract("inspect", run(["inspect", source, *asked], cache, monkeypatch))
    by_id = form == "repo-id"
    assert (inspected["repo_id"], inspected["revision"]) == (("org/tiny-bert", revision) if by_id else (None, None))
    assert inspected["commit"] == snapshot.name
    assert inspected["resolved_path"] == str(snapshot)
    diffed = assert_json_contract("diff-keys", run(["diff-keys", source, str(EXAMPLE), *asked], cache, monkeypatch))
    assert (diffed["revision_a"], diffed["revision_b"]) == ((revision if by_id else None), None)
    assert diffed["resolved_a"] == str(snapshot)


# --- the invocations the docs show still run, and give the documented JSON ------------------------------------------

# The pages whose examples run on what the repository holds (fixtures/example, fixtures/configs); the other pages'
# examples name checkpoints their sweeps build (`planted`, `lora`, `gpt2-bin`).
SHOWN = ["README.md", "docs/commands/plan-devices.md"]


@pytest.mark.parametrize("doc", SHOWN)
def test_every_invocation_the_docs_show_runs_with_json(
    doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each `$ weightdoctor ...` line of a console example, run in order (README's `convert ... -o /tmp/ddp` makes
    the source of the `diff-keys /tmp/ddp` after it) with `--json`: exit 0 or 1 and the documented keys; /tmp
    paths are moved under tmp_path."""
    import shlex

    monkeypatch.chdir(tmp_path)  # a relative output (`--output mistral_map.json`) lands here, not in the repo
    ran = 0
    for line in (REPO_ROOT / doc).read_text(encoding="utf-8").splitlines():
        if not line.startswith("$ weightdoctor "):
            continue
        words = shlex.split(line[2:])
        words = words[1:next((i for i, w in enumerate(words) if w in (">", "|", ";", "2>")), len(words))]
        args = []
        for word in words:
            if word.startswith("/tmp/"):
                word = str(tmp_path / word[len("/tmp/"):])
            elif not word.startswith("-") and (REPO_ROOT / word).exists():
                word = str(REPO_ROOT / word)
            args.append(word)
        assert Path(args[1]).exists(), line
        assert_json_contract(args[0], run_cli(*args, "--json"), stats="--stats" in args)
        ran += 1
    assert ran >= 2, f"no invocation found in {doc}"


# --- (3)-(4) on bad input: the same code and one line, whatever the command ---------------------------------------


@pytest.mark.parametrize("situation", BAD)
@pytest.mark.parametrize("command", COMMANDS)
def test_bad_input_is_exit_2_with_one_line_naming_the_file(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, situation: str
) -> None:
    source = inputs[situation]
    result = run(command_args(command, str(source), tmp_path), inputs["hub_cache"], monkeypatch)
    line = assert_one_error_line(result)
    assert str(source) in line, line
    if situation == "unsafe":  # docs/exit-codes.md: the line starts with the verdict word
        assert line.startswith(f"error: {source}: dangerous: "), line
    assert not (tmp_path / "converted").exists() and not (tmp_path / "shards").exists()


# Misused options, and the option the one line must name. --fail-on and --filter are options of some commands
# only: the others refuse them as unknown, naming them all the same.
@pytest.mark.parametrize("situation", BAD)
def test_a_bad_b_is_said_as_a_bad_a_is(
    inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, situation: str
) -> None:
    # diff-keys reads B with the same reader: the same line (naming B) and exit 2, through Typer and the program.
    from tests.helpers import run_subprocess

    source = str(inputs[situation])
    as_a = assert_one_error_line(run(["diff-keys", source, str(EXAMPLE)], inputs["hub_cache"], monkeypatch))
    as_b = assert_one_error_line(run(["diff-keys", str(EXAMPLE), source], inputs["hub_cache"], monkeypatch))
    assert as_b == as_a
    program = run_subprocess("diff-keys", EXAMPLE, source, "--json",
                             env={"HF_HUB_CACHE": str(inputs["hub_cache"]), "HF_HUB_OFFLINE": "1"})
    assert (program.returncode, program.stdout, program.stderr.strip()) == (2, "", as_b)


def test_an_unknown_model_class_is_said_alike_by_diff_keys_and_plan_devices(
    inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = {assert_one_error_line(run(args, inputs["hub_cache"], monkeypatch))
             for args in (["diff-keys", str(EXAMPLE), "--model-class", "NoSuchModel"],
                          ["plan-devices", str(EXAMPLE), "--gpu", "1GB", "--model-class", "NoSuchModel"])}
    assert lines == {f"error: {EXAMPLE}: transformers has no model class 'NoSuchModel'"}


MISUSES = {
    "unknown-option": (["--no-such-option"], "--no-such-option"),
    "bad-fail-on": (["--fail-on", "bogus"], "--fail-on"),
    "bad-regex": (["--filter", "("], "--filter"),
    "option-without-value": (["--revision"], "--revision"),
    "key-in-safetensors": (["--key", "nope"], "--key"),
    "unknown-with-debug": (["--debug", "--no-such-option"], "--no-such-option"),
}


@pytest.mark.parametrize("misuse", list(MISUSES))
@pytest.mark.parametrize("command", COMMANDS)
def test_option_misuse_is_exit_2_with_one_line(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, misuse: str
) -> None:
    extra, named = MISUSES[misuse]
    args = command_args(command, str(inputs["single"]), tmp_path)
    if misuse == "option-without-value":  # last on the line: with `--json` after it, Click takes that as its value
        result = run_cli(*args, "--json", *extra)
    else:
        result = run([*args, *extra], inputs["hub_cache"], monkeypatch)
    line = assert_one_error_line(result)
    assert named in line, line
    assert not (tmp_path / "converted").exists() and not (tmp_path / "shards").exists()


# docs/exit-codes.md, code 2: "a bad flag value (a size that does not parse, an unknown dtype, a bad regular
# expression, a `--filter` that matches no tensor name)", for each command that takes such a flag.
BAD_VALUES = [
    ("plan-devices", ["--cpu", "lots"], "lots"), ("shard", ["--max", "12XB"], "12XB"),
    ("plan-devices", ["--reserve", "-1GB"], "-1GB"),
    ("plan-devices", ["--dtype", "fp12"], "fp12"), ("convert", ["--dtype", "fp12"], "fp12"),
    ("shard", ["--dtype", "fp12"], "fp12"), ("check-dtype", ["--target", "fp12"], "fp12"),
    ("convert", ["--keep-fp32", "(", "--dtype", "fp16"], "--keep-fp32"), ("diff-keys", ["--rename", "(=x"], "--rename"),
    ("inspect", ["--filter", "no_such_tensor"], "matches no tensor name"),
    ("check-dtype", ["--filter", "no_such_tensor"], "matches no tensor name"),
]


@pytest.mark.parametrize(("command", "extra", "named"), BAD_VALUES, ids=[f"{c}{e[0]}" for c, e, _ in BAD_VALUES])
def test_a_bad_flag_value_is_exit_2_naming_it(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, extra: list[str],
    named: str
) -> None:
    args = command_args(command, str(inputs["single"]), tmp_path)
    line = assert_one_error_line(run([*args, *extra], inputs["hub_cache"], monkeypatch))
    assert named in line, line
    assert not (tmp_path / "converted").exists() and not (tmp_path / "shards").exists()


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("situation", ["single", "half", "nonfinite", "huge", "underflow", "ints"])
def test_a_cast_is_refused_exactly_when_check_dtype_calls_it_unsafe(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, situation: str, dtype: str
) -> None:
    """docs/commands/convert.md: exit 2 for "a lossy cast without `--allow-overflow`", the cast check-dtype calls
    `unsafe` (values become inf or 0); `lossy` (rounding only) is written. convert and shard agree."""
    source = str(inputs[situation])
    checked = assert_json_contract("check-dtype", run(["check-dtype", source, "--target", dtype], inputs["hub_cache"],
                                                      monkeypatch))
    unsafe = checked["targets"][dtype]["verdict"] == "unsafe"
    for command, out in (("convert", "converted.safetensors"), ("shard", "shards")):
        args = [*command_args(command, source, tmp_path), "--dtype", dtype]
        args[args.index("-o") + 1] = str(tmp_path / out)
        result = run(args, inputs["hub_cache"], monkeypatch)
        if unsafe:
            assert_one_error_line(result, naming="--allow-overflow")
            assert not (tmp_path / out).exists()
        else:
            assert assert_json_contract(command, result)["write"]["verified"] is True
    assert unsafe == (situation in ("huge", "underflow") and dtype == "fp16")


@pytest.mark.parametrize("below", ["out", "sub/out"], ids=["in-a-file", "two-below-a-file"])
@pytest.mark.parametrize("command", ["convert", "shard", "plan-devices"])
def test_an_output_below_a_file_is_said_the_same_by_every_writer(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, below: str
) -> None:
    """`-o notes.txt/out` (a file where a folder should be): plan-devices' --output said "the output folder does not
    exist" of a path that exists (as a file), and under it suggested a `mkdir -p` that fails; convert and shard
    said what is wrong. The same situation, the same line."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine\n")
    output = blocker / below
    args = command_args(command, str(inputs["single"]), tmp_path)
    if command == "plan-devices":
        args += ["--output", str(output)]
    else:
        args[args.index("-o") + 1] = str(output)
    line = assert_one_error_line(run(args, inputs["hub_cache"], monkeypatch))
    assert line == (f"error: {output}: cannot write the output: a part of the output's path is a file, not a folder; "
                    "nothing was left behind")
    assert blocker.read_text() == "mine\n"


@pytest.mark.parametrize("existing", ["device", "file"])
@pytest.mark.parametrize("command", ["convert", "shard", "plan-devices"])
def test_an_output_force_cannot_replace_is_not_told_to_pass_force(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, existing: str
) -> None:
    """`-o /dev/null` (a device) is never replaced, nor is a file by shard's folder: convert and shard said
    "output exists; pass --force to replace it", and with --force refused all the same. plan-devices said what
    holds at once; the line is now the same with --force or without, and offers no --force that cannot help."""
    if existing == "device":
        output = Path("/dev/null")
    else:
        output = tmp_path / "taken.bin"
        output.write_text("mine\n")
    args = command_args(command, str(inputs["single"]), tmp_path)
    if command == "plan-devices":
        args += ["--output", str(output)]
    else:
        args[args.index("-o") + 1] = str(output)
    without = assert_one_error_line(run(args, inputs["hub_cache"], monkeypatch))
    if existing == "file" and command != "shard":
        # A regular file is what --force replaces there (an earlier convert, another file): the advice holds.
        assert "pass --force" in without
        return
    forced = assert_one_error_line(run([*args, "--force"], inputs["hub_cache"], monkeypatch))
    assert without == forced
    assert "--force" not in without
    if existing == "file":
        assert output.read_text() == "mine\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_with_a_config_and_no_weights(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    # plan-devices plans from a config alone (README: "or just a config"); the others need weights: exit 2.
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(EXAMPLE / "config.json", folder / "config.json")
    result = run(command_args(command, str(folder), tmp_path), inputs["hub_cache"], monkeypatch)
    if command == "plan-devices":
        assert assert_json_contract(command, result)["built_from"] == "config"
    else:
        assert_one_error_line(result, naming=f"{folder}: folder holds no weight file")


@pytest.mark.parametrize("command", COMMANDS)
def test_the_program_writes_one_json_document_and_warns_on_stderr_as_documented(
    inputs: dict[str, Path], tmp_path: Path, command: str
) -> None:
    """In a fresh `python -m weightdoctor` (what CI runs; a library that prints on the real stdout would show here,
    not under CliRunner): stdout is the JSON alone, and the reader's warning is where README puts it."""
    from tests.helpers import run_subprocess

    args = command_args(command, str(inputs["warns"]), tmp_path)
    proc = run_subprocess(*args, "--json", env={"HF_HUB_CACHE": str(inputs["hub_cache"]), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    data = strict_json(proc.stdout)
    warning = "pytorch_model.bin is ignored: model.safetensors comes first"
    assert any(warning in w for w in data["warnings"])
    assert (warning in proc.stderr) == (command in ("convert", "shard")), proc.stderr


# --- (3) every --fail-on level: exit 1 exactly when the JSON shows a finding at or above it ---------------------

SEVERITY = {"info": 0, "warn": 1, "error": 2}
VERDICT = {"safe": 0, "lossy": 1, "unsafe": 2}
# README, "`--fail-on`: one flag for every command": the severity each verdict weighs (-1: none).
CHECK_DTYPE_SEVERITY = {"safe": -1, "lossy": 1, "unsafe": 2}
PLAN_SEVERITY = {"fits-on-gpus": -1, "fits-on-cpu": 0, "needs-cpu-offload": 1, "needs-disk-offload": 1,
                 "does-not-fit": 2}


def _expected_exit(command: str, level: str, data: dict[str, Any]) -> int:
    if command == "diff-keys":
        worst = data["worst_severity"]
        return int(worst is not None and SEVERITY[worst] >= SEVERITY[level])
    if command == "check-dtype":
        if level in SEVERITY:
            return int(any(CHECK_DTYPE_SEVERITY[t["verdict"]] >= max(SEVERITY[level], 1)  # none is info
                           for t in data["targets"].values()))
        return int(any(VERDICT[t["verdict"]] >= VERDICT[level] for t in data["targets"].values()))
    if command == "plan-devices":
        if level in SEVERITY:
            return int(PLAN_SEVERITY[data["verdict"]] >= SEVERITY[level]
                       or any(f["severity"] == "error" for f in data["findings"]))
        # README: `offload` is anything not on the GPUs, so a plan on the CPU alone (no --gpu) reaches it.
        bad = {"offload": {"fits-on-cpu", "needs-cpu-offload", "needs-disk-offload", "does-not-fit"},
               "no-fit": {"does-not-fit"}}
        return int(data["verdict"] in bad[level])
    if command in ("convert", "shard"):
        # Every warning weighs `warn`; nothing `error`.
        return int(bool(data["warnings"]) and level in ("info", "warn"))
    # inspect --stats
    return int(any(SEVERITY[f["severity"]] >= SEVERITY[level] for f in data["findings"]))


FAIL_ON = [(command, level) for command in ("diff-keys", "check-dtype", "plan-devices", "inspect", "convert", "shard")
           for level in SEVERITY] + [("check-dtype", v) for v in ("lossy", "unsafe")] + [
    ("plan-devices", v) for v in ("offload", "no-fit")]


@pytest.mark.parametrize("situation", ["single", "ddp", "half", "nonfinite"])
@pytest.mark.parametrize(("command", "level"), FAIL_ON)
def test_fail_on_each_level_exits_1_exactly_when_the_json_reaches_it(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, level: str,
    situation: str
) -> None:
    args = command_args(command, str(inputs[situation]), tmp_path)
    if command == "plan-devices":
        args[args.index("1GB")] = "600KB"  # the example's 1.1 MB: offload to the CPU
        args += ["--cpu", "1GB"]
    result = run([*args, "--fail-on", level], inputs["hub_cache"], monkeypatch)
    data = assert_json_contract(command, result, stats=command == "inspect")  # inspect's --fail-on implies --stats
    assert result.exit_code == _expected_exit(command, level, data), (level, result.stderr)


# The example's 1.1 MB of weights under each budget, and the verdict that gives.
BUDGETS = {"fits-on-gpus": ["--gpu", "2MB"], "fits-on-cpu": ["--cpu", "2MB"],
           "needs-cpu-offload": ["--gpu", "600KB", "--cpu", "2MB"], "needs-disk-offload": ["--gpu", "600KB", "--disk"],
           "does-not-fit": ["--gpu", "100KB", "--cpu", "100KB"]}


@pytest.mark.parametrize("verdict", list(BUDGETS))
@pytest.mark.parametrize("level", ["offload", "no-fit", "info", "warn", "error"])
def test_plan_devices_fail_on_follows_the_verdict_for_every_budget(
    inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, verdict: str, level: str
) -> None:
    result = run(["plan-devices", str(inputs["single"]), *BUDGETS[verdict], "--fail-on", level],
                 inputs["hub_cache"], monkeypatch)
    data = assert_json_contract("plan-devices", result)
    assert data["verdict"] == verdict
    assert result.exit_code == _expected_exit("plan-devices", level, data), (verdict, result.stderr)


@pytest.mark.parametrize("command", ["convert", "shard"])
def test_writers_refuse_a_level_of_another_command(inputs: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    # docs/exit-codes.md: convert and shard take the severities every command takes (exit 1 on a warning at
    # info / warn, tested above), and nothing else: plan-devices' `offload` is usage, exit 2, before anything
    # is written.
    args = command_args(command, str(inputs["single"]), tmp_path)
    line = assert_one_error_line(run([*args, "--fail-on", "offload"], inputs["hub_cache"], monkeypatch))
    assert line == "error: --fail-on 'offload': choose one of info, warn, error"
    assert not any(tmp_path.iterdir())


# --- the parser itself ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_the_type_parser_reads_nearly_every_documented_row(command: str) -> None:
    for doc, types in _doc_tables(command):
        if not types:
            continue
        typed = [p for p, k in types.items() if k is not None]
        assert len(typed) >= 0.8 * len(types), (doc, sorted(p for p, k in types.items() if k is None))


def test_the_type_parser_on_its_forms() -> None:
    assert parse_type("string or null") == (frozenset({str}), True)
    assert parse_type("list of `{name, kept}`") == (frozenset({list}), False)
    assert parse_type("object/null") == (frozenset({dict}), True)
    assert parse_type("int / null") == (frozenset({int}), True)
    assert parse_type('`"safe"` /') == (frozenset({str}), False)
    types = documented_types(README, SECTIONS["convert"])
    assert types[("plan", "renamed")] == (frozenset({int}), False)
    assert types[("plan", "renames")] == (frozenset({list}), False)
    types = documented_types(README, SECTIONS["check-dtype"])
    assert types[("targets", "T", "keep_fp32")] == (frozenset({str}), True)
    assert types[("targets", "T", "keep_fp32_memory_bytes")] == (frozenset({int}), True)
    with pytest.raises(AssertionError, match="is null; its type is not documented as nullable"):
        assert_documented_types("shard", {"dry_run": None})
    with pytest.raises(AssertionError, match=r"dry_run is str"):
        assert_documented_types("shard", {"dry_run": "no"})



# --- (3) the exit-1 findings that are not --fail-on's: JSON on stdout all the same --------------------------------


def _exit_1_rows() -> list[str]:
    """README's row for exit code 1 and docs/exit-codes.md's per-command rows: where a CI job reads what 1 means."""
    readme = next(line for line in README.splitlines() if line.startswith("| 1 |"))
    table = (REPO_ROOT / "docs" / "exit-codes.md").read_text(encoding="utf-8")
    return [readme, *(line for line in table.splitlines() if line.startswith("| `"))]


def test_verify_mismatch_is_exit_1_with_the_mismatch_in_the_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inputs: dict[str, Path]
) -> None:
    # A byte of a tensor changed after torch.save wrote the zip: its member's CRC-32 no longer matches.
    path = tmp_path / "altered.bin"
    torch.save({"w": torch.full((16,), 1.5), "b": torch.zeros(2)}, path)
    raw = bytearray(path.read_bytes())
    at = raw.index(torch.full((16,), 1.5).numpy().tobytes())
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))
    result = run(["inspect", str(path), "--verify"], inputs["hub_cache"], monkeypatch)
    data = assert_json_contract("inspect", result)
    assert result.exit_code == 1
    assert [m["file"] for m in data["verify"]["mismatches"]] == ["altered.bin"], data["verify"]
    # An exit 1 without --fail-on: both exit-code tables must say so.
    assert all("--verify" in row for row in _exit_1_rows() if row.startswith(("| 1 |", "| `inspect`")))


def test_an_invalid_map_is_exit_1_with_its_findings_in_the_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inputs: dict[str, Path]
) -> None:
    device_map = tmp_path / "map.json"
    device_map.write_text('{"bert": 0}')  # leaves the classifier out
    result = run(["plan-devices", str(EXAMPLE), "--gpu", "1GB", "--map", str(device_map)], inputs["hub_cache"],
                 monkeypatch)
    data = assert_json_contract("plan-devices", result)
    assert result.exit_code == 1
    assert data["manual_map"] is True
    assert {f["code"] for f in data["findings"]} == {"not-covered"}, data["findings"]
    assert all("--map" in row for row in _exit_1_rows() if row.startswith(("| 1 |", "| `plan-devices`")))


# --- the program itself: plain diff-keys runs skip Typer (commands/_fast.py); CI calls the program ----------------


@pytest.mark.parametrize("situation", ["single", "ddp", "missing", "corrupt", "no_weights", "unsafe"])
def test_the_fast_diff_keys_path_keeps_the_contract_of_the_typer_one(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, situation: str
) -> None:
    from tests.helpers import run_subprocess

    args = command_args("diff-keys", str(inputs[situation]), tmp_path)
    typer_run = run(args, inputs["hub_cache"], monkeypatch)
    program = run_subprocess(*args, "--json", env={"HF_HUB_CACHE": str(inputs["hub_cache"]), "HF_HUB_OFFLINE": "1"})
    assert program.returncode == typer_run.exit_code, program.stderr
    assert program.stderr == typer_run.stderr
    if program.returncode == 2:
        assert program.stdout == ""
    else:
        assert strict_json(program.stdout) == strict_json(typer_run.stdout)


def test_the_null_reader_on_its_forms() -> None:
    rows = ["| `devices` | list | `capacity_bytes` (given; null for disk), `budget_bytes` (the cap), `used_bytes` |",
            "| `plan.files` | list of `{filename, first, last}` | each file; `first` / `last` null for no tensor |",
            "| `.at_init` | still matches (`true`/`false`/`null` when it cannot be said) |"]
    assert documents_null(rows, "capacity_bytes") and not documents_null(rows, "budget_bytes")
    assert documents_null(rows, "first") and documents_null(rows, "last") and not documents_null(rows, "filename")
    assert documents_null(rows, "at_init")
    with pytest.raises(AssertionError, match=r"no row of the docs says it can be: \['devices.used_bytes'\]"):
        assert_nulls_documented("plan-devices", {"devices": [{"used_bytes": None, "capacity_bytes": None}]})


def test_the_value_reader_on_its_forms() -> None:
    values = documented_values(README, SECTIONS["plan-devices"])
    assert values[("built_from",)] == {"config", "tensors"}
    assert values[("verdict",)] == {"fits-on-gpus", "fits-on-cpu", "needs-cpu-offload", "needs-disk-offload",
                                    "does-not-fit"}
    assert documented_values(README, SECTIONS["shard"])[("plan", "format")] == {"safetensors", "bin"}
    assert documented_values(README, SECTIONS["diff-keys"])[("mode",)] == {"checkpoints", "model-class"}
    with pytest.raises(AssertionError, match=r"built_from is 'guess', not one of the documented"):
        assert_documented_types("plan-devices", {"built_from": "guess"})


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_and_the_full_reference_give_each_key_one_type(command: str) -> None:
    # A key README calls `int` and docs/commands calls `int or null` leaves a CI job guessing which holds.
    (_, readme), *others = _doc_tables(command)
    for doc, types in others:
        differ = {path: (readme[path], kind) for path, kind in types.items()
                  if kind is not None and readme.get(path) is not None and readme[path] != kind}
        assert not differ, (doc, differ)
