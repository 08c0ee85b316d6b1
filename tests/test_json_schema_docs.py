"""The `--json` keys README.md documents are the keys each command writes: none undocumented, none missing.

A CI job gates on these keys, so a key added or renamed without its README row is a broken contract. The tables are
read from README.md itself; a row naming several keys (`a`, `b`) documents each, and a bare name after a dotted one
(`targets.T.overflow`, `saturated`) is its sibling. `T` stands for any key (a target name) and `x[]` for each item.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.helpers import REPO_ROOT, run_json

EXAMPLE = REPO_ROOT / "fixtures" / "example"
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def documented_paths(heading: str, *, text: str = README, section_end: str = "\n## ") -> set[tuple[str, ...]]:
    """Every key path named in the first column of the `| key |` tables under `heading`, to the next section."""
    start = text.index(heading)
    end = text.find(section_end, start + len(heading))
    paths: set[tuple[str, ...]] = set()
    in_key_table = previous_was_row = False
    for line in text[start:end if end != -1 else None].splitlines():
        is_row = line.startswith("|")
        if is_row and not previous_was_row:  # a table's header row
            in_key_table = line.split("|")[1].strip() == "key"
        previous_was_row = is_row
        if not (is_row and in_key_table and line.startswith("| `")):
            continue
        cells = line.split("|")
        parent: tuple[str, ...] = ()
        for token in re.findall(r"`([^`]+)`", cells[1]):
            path = tuple(token.replace("[]", "").split("."))
            if path[0] == "":  # `.reason` after `tensors[].init.family`
                path = (*parent, *path[1:])
            elif len(path) == 1 and parent:
                path = (*parent, path[0])
            parent = path[:-1]
            paths.add(path)
        # `list of {name, reason}` in the type column documents each item's keys.
        items = re.fullmatch(r"\s*list of `\{([\w, ]+)\}`\s*", cells[2])
        if items and len(paths_in_cell := re.findall(r"`([^`]+)`", cells[1])) == 1:
            key = tuple(paths_in_cell[0].replace("[]", "").split("."))
            paths.update((*key, name.strip()) for name in items.group(1).split(","))
    return paths


def _children(documented: set[tuple[str, ...]], parent: tuple[str, ...]) -> set[str]:
    return {p[len(parent)] for p in documented if len(p) > len(parent) and p[:len(parent)] == parent}


def _objects_at(data: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """The objects found at a documented path (`T` = every key; a list = each of its items)."""
    found: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def walk(node: Any, rest: tuple[str, ...], where: tuple[str, ...]) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, rest, where)
            return
        if not isinstance(node, dict):
            return
        if not rest:
            found.append((where, node))
            return
        keys = list(node) if rest[0] == "T" else [rest[0]] if rest[0] in node else []
        for key in keys:
            walk(node[key], rest[1:], (*where, key))

    walk(data, path, ())
    return found


def assert_keys_match(
    data: dict[str, Any], documented: set[tuple[str, ...]], optional: frozenset[tuple[str, ...]] = frozenset()
) -> None:
    """Every object at a documented parent holds exactly the documented children (`optional` ones may be absent)."""
    parents = {p[:i] for p in documented for i in range(len(p))}
    problems: dict[str, None] = {}  # ordered and without repeats: one line per list of items
    for parent in sorted(parents, key=len):
        named = _children(documented, parent)
        for where, obj in _objects_at(data, parent):
            label = ".".join(where) or "top level"
            undocumented = sorted(set(obj) - named)
            absent = sorted(k for k in named - set(obj) if (*parent, k) not in optional)
            # Under `T` the keys are data (target names), documented as one `T`.
            if named == {"T"}:
                continue
            if undocumented:
                problems[f"{label}: written but not documented: {undocumented}"] = None
            if absent:
                problems[f"{label}: documented but not written: {absent}"] = None
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("schema")
    runs = {
        "inspect": ("inspect", EXAMPLE, "--verify"),
        "diff-keys": ("diff-keys", EXAMPLE, EXAMPLE, "--values"),
        "plan-devices": ("plan-devices", EXAMPLE, "--gpu", "1GB"),
        "convert": ("convert", EXAMPLE, "-o", tmp / "out.safetensors", "--dtype", "fp16"),
        "shard": ("shard", EXAMPLE, "--max", "200KB", "-o", tmp / "shards"),
        "check-dtype": ("check-dtype", EXAMPLE),
    }
    results = {}
    for name, args in runs.items():
        code, data = run_json(*map(str, args))
        assert code in (0, 1), (name, data)
        results[name] = data
    return results


SECTIONS = {
    "inspect": "## `weightdoctor inspect SOURCE`",
    "diff-keys": "## `weightdoctor diff-keys A B`",
    "plan-devices": "## `weightdoctor plan-devices SOURCE`",
    "convert": "## `weightdoctor convert SOURCE -o OUT`",
    "shard": "## `weightdoctor shard SOURCE --max SIZE -o OUTDIR`",
    "check-dtype": "## `weightdoctor check-dtype SOURCE`",
}


@pytest.mark.parametrize("command", list(SECTIONS))
def test_every_key_written_is_documented_and_every_documented_key_written(
    outputs: dict[str, dict[str, Any]], command: str
) -> None:
    documented = documented_paths(SECTIONS[command])
    if command == "inspect":
        # The --stats table documents keys inside `tensors[]` that a run without --stats does not write (checked
        # below); the security table's keys are written on every run, and are checked here.
        stats = documented_paths("### `inspect --stats`", section_end="### `inspect`: the security scan")
        documented = (documented - stats) | {("tensors",)}
    assert len(documented) > 8, documented  # the tables were found
    assert_keys_match(outputs[command], documented)


def test_inspect_stats_keys_are_documented() -> None:
    code, data = run_json("inspect", str(EXAMPLE), "--stats", "--hist", r"\.weight$")
    assert code in (0, 1)
    # `histogram` is written for the --hist tensors only.
    assert_keys_match(data, documented_paths(SECTIONS["inspect"]), optional=frozenset({("tensors", "histogram")}))
    assert any("histogram" in tensor for tensor in data["tensors"])


def test_the_schema_parser_reads_sibling_names_after_a_dotted_one() -> None:
    paths = documented_paths("## `weightdoctor check-dtype SOURCE`")
    assert ("targets", "T", "saturated") in paths and ("targets", "T", "overflow") in paths
    assert ("saturated",) not in paths
    with pytest.raises(AssertionError, match=r"written but not documented: \['extra'\]"):
        assert_keys_match({"a": 1, "extra": 2}, {("a",)})
    with pytest.raises(AssertionError, match=r"documented but not written: \['b'\]"):
        assert_keys_match({"a": {"c": 1}}, {("a", "c"), ("b",)})


REFERENCES = {
    "diff-keys": "diff-keys.md",
    "plan-devices": "plan-devices.md",
    "convert": "convert.md",
    "shard": "shard.md",
    "check-dtype": "check-dtype.md",
}


@pytest.mark.parametrize("command", list(REFERENCES))
def test_the_full_reference_in_docs_commands_agrees_too(outputs: dict[str, dict[str, Any]], command: str) -> None:
    text = (REPO_ROOT / "docs" / "commands" / REFERENCES[command]).read_text(encoding="utf-8")
    documented = documented_paths(text.splitlines()[0], text=text, section_end="\n## ")
    assert len(documented) > 8, documented
    assert_keys_match(outputs[command], documented)


def test_the_stats_and_security_references_agree() -> None:
    code, data = run_json("inspect", str(EXAMPLE), "--stats", "--hist", r"\.weight$", "--verify")
    assert code in (0, 1)
    for name in ("inspect-stats.md", "inspect-security.md"):
        text = (REPO_ROOT / "docs" / "commands" / name).read_text(encoding="utf-8")
        documented = documented_paths(text.splitlines()[0], text=text, section_end="\n# ")
        # These pages document what --stats and the scan add; inspect's own keys are README's.
        documented |= documented_paths(SECTIONS["inspect"])
        assert_keys_match(data, documented, optional=frozenset({("tensors", "histogram")}))
