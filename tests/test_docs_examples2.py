"""The console examples of docs/commands/*.md and README.md, run as written, print what the docs show.

Each fenced block holding `$ ` lines is replayed: `python -m fixtures.X DIR` names a folder the generators below
have written, `cd DIR` moves there, `python -c CODE` runs CODE, `echo $?` prints the last exit code, and
`weightdoctor ARGS` runs in-process at 100 columns. Its stdout and stderr are compared with the lines the doc
shows (a line of the doc that the run wrote to stderr is compared with stderr, the rest with stdout, so the order
a terminal interleaves them in does not matter). Ignored: `time` figures, trailing padding inside a box (a temp
path is longer than `/tmp/fx`), and float noise below 1e-6 (an optimizer step on an unused bias). A `...` line
(or `│ ... │`) stands for any lines, as the docs abridge.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, run_cli, run_json
from weightdoctor.render import console

WIDTH = 100
PAGES = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "docs" / "commands").glob("*.md")) + ["README.md"]
# Examples whose input needs more than the generators below write in a few seconds: (page, first command) -> why.
SKIPPED = {
    ("docs/commands/inspect-stats.md", "weightdoctor inspect /tmp/planted/untrained-head"):
        "fixtures.planted trains a model for 300 steps (a minute); tests/test_health_cli.py checks its verdicts",
}
# Where a page's examples start when a block has no `cd` of its own: the folder its first block moves to.
START = {"docs/commands/check-dtype.md": "/tmp/dfx", "docs/commands/diff-keys.md": "/tmp/pairs"}


@dataclass
class Example:
    page: str
    line: int
    commands: list[tuple[str, list[str]]] = field(default_factory=list)  # (command, the lines the doc shows)


def examples(page: str) -> Iterator[Example]:
    lines = (REPO_ROOT / page).read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
        example = Example(page, i + 2)
        for text in lines[i + 1:end]:
            if text.startswith("$ "):
                example.commands.append((text[2:], []))
            elif example.commands:
                example.commands[-1][1].append(text)
        if example.commands:
            yield example
        i = end + 1


ALL = [example for page in PAGES for example in examples(page)]


def _skip_reason(example: Example) -> str | None:
    first = next((c for c, _ in example.commands if "weightdoctor" in c), "")
    return next((why for (page, start), why in SKIPPED.items()
                 if page == example.page and first.startswith(start)), None)


@pytest.fixture(scope="module")
def short_root() -> Iterator[Path]:
    """A folder with a short name: a pytest temp path is so long that `source x → /abs/path` wraps at 100 columns
    where the doc's `/tmp/fx/...` does not."""
    root = Path(tempfile.mkdtemp(prefix="wd", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def generated(short_root: Path) -> dict[str, Path]:
    """The folders the docs' `python -m fixtures.X DIR` lines write, written once: doc path -> real path."""
    from fixtures.build import build_all
    from fixtures.diff_pairs import build_pairs
    from fixtures.dtype_fixtures import build_dtype_fixtures
    from fixtures.hostile import build_hostile

    root = short_root
    build_all(root / "fx")
    build_dtype_fixtures(root / "dfx")
    build_pairs(root / "pairs")
    build_hostile(root / "h" / "hostile", root / "h" / "SENTINEL")
    return {"/tmp/fx": root / "fx", "/tmp/dfx": root / "dfx", "/tmp/h": root / "h", "/tmp/pairs": root / "pairs"}


def _normalize(text: str) -> str:
    text = text.rstrip()
    text = re.sub(r"^(time\s+)[0-9.]+ s$", r"\1T s", text)
    text = re.sub(r" +│$", " │", text)
    # The doc was made on a machine whose torch picked AVX512 kernels; another CPU shows AVX2 or DEFAULT.
    text = re.sub(r"(torch kernels: )[A-Z0-9_]+", r"\1<this CPU's>", text)
    return re.sub(r"\b\d\.\d+e-0[789]\b", "~0", text)


def _is_gap(text: str) -> bool:
    return text.strip().strip("│").strip() == "..."


def _matches(shown: list[str], actual: list[str]) -> bool:
    """`shown` equals `actual`, where a `...` line of `shown` stands for any run of lines."""
    chunks: list[list[str]] = [[]]
    for text in shown:
        if _is_gap(text):
            chunks.append([])
        else:
            chunks[-1].append(text)
    if len(chunks) == 1:
        return shown == actual
    at = 0
    for k, chunk in enumerate(chunks):
        if k == 0:
            if actual[:len(chunk)] != chunk:
                return False
            at = len(chunk)
        elif k == len(chunks) - 1:
            return len(actual) - len(chunk) >= at and (not chunk or actual[-len(chunk):] == chunk)
        else:
            found = next((j for j in range(at, len(actual) - len(chunk) + 1)
                          if actual[j:j + len(chunk)] == chunk), None)
            if found is None:
                return False
            at = found + len(chunk)
    return True


class Replay:
    """Runs one example's `$ ` lines in order, as a shell in the doc's folders would."""

    def __init__(self, generated: dict[str, Path], scratch: Path, monkeypatch: pytest.MonkeyPatch, page: str) -> None:
        self.paths = dict(generated)
        self.scratch = scratch
        self.exit_code = 0
        # README's and plan-devices' examples run in the repository root: here, a scratch folder whose `fixtures`
        # links to the repository's, so that an output they write (`--output mistral_map.json`) stays out of it.
        # os.chdir below is undone by monkeypatch.
        (scratch / "fixtures").symlink_to(REPO_ROOT / "fixtures")
        monkeypatch.chdir(self.real(START[page]) if page in START else scratch)

    def real(self, word: str) -> str:
        for shown, real in sorted(self.paths.items(), key=lambda item: -len(item[0])):
            if word == shown or word.startswith(shown + "/"):
                return str(real) + word[len(shown):]
        if word.startswith("/tmp/"):  # an output the example writes (-o /tmp/ddp): a scratch folder of the test
            self.paths[word] = self.scratch / word[len("/tmp/"):]
            return str(self.paths[word])
        return word

    def shown(self, text: str) -> str:
        for shown, real in sorted(self.paths.items(), key=lambda item: -len(str(item[1]))):
            text = text.replace(str(real), shown)
        return text.replace(str(REPO_ROOT), "/work/main")

    def run(self, command: str) -> tuple[list[str], list[str]]:
        """One `$ ` line: what it wrote to stdout and to stderr."""
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)  # `> /dev/null; echo $?` in words
        lexer.whitespace_split = True
        words = list(lexer)
        out: list[str] = []
        err: list[str] = []
        while words:
            cut = next((i for i, w in enumerate(words) if w in ("&&", ";")), len(words))
            step, words = words[:cut], words[cut + 1:]
            o, e = self.step(step)
            out += o
            err += e
        return out, err

    def step(self, words: list[str]) -> tuple[list[str], list[str]]:
        if words[0] == "cd":
            os.chdir(self.real(words[1]))
        elif words[:2] == ["python", "-m"]:
            assert words[3] in self.paths, f"{words}: no generator writes {words[3]} in this test"
        elif words[:2] == ["python", "-c"]:
            exec(words[2], {})  # the doc's own snippet, in the current folder
        elif words == ["echo", "$?"]:
            return [str(self.exit_code)], []
        elif words[0] == "weightdoctor":
            quiet = ">" in words
            args = [self.real(w) for w in words[1:words.index(">") if quiet else len(words)]]
            result = run_cli(*args)
            self.exit_code = result.exit_code
            out = [] if quiet else [self.shown(t) for t in result.stdout.splitlines()]
            return out, [self.shown(t) for t in result.stderr.splitlines()]
        else:
            raise AssertionError(f"the test cannot replay {words}")
        return [], []


@pytest.mark.parametrize("example", ALL, ids=[f"{e.page}:{e.line}" for e in ALL])
def test_the_example_prints_what_the_doc_shows(
    example: Example, generated: dict[str, Path], short_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if why := _skip_reason(example):
        pytest.skip(why)
    monkeypatch.setattr(console.stdout, "width", WIDTH)
    monkeypatch.setattr(console.stderr, "width", WIDTH)
    if any("--local" in command for command, _ in example.commands):
        import torch

        if torch.cuda.is_available():
            pytest.skip("--local shows this machine's GPUs; the doc shows a CPU-only machine")
    if any("fp8" in command for command, _ in example.commands):
        import torch

        # check-dtype says what the installed torch's cast does: the doc shows 2.13's saturating float8 cast
        if torch.tensor([1e5]).to(torch.float8_e4m3fn).float().item() != 448.0:
            pytest.skip("the doc shows torch's saturating float8 cast (torch 2.13); this torch's cast overflows")
    replay = Replay(generated, Path(tempfile.mkdtemp(dir=short_root)), monkeypatch, example.page)
    for command, shown in example.commands:
        out, err = replay.run(command)
        shown = [_normalize(t) for t in shown]
        while shown and not shown[-1]:
            shown.pop()
        out = [_normalize(t) for t in out]
        err = [_normalize(t) for t in err]
        on_stderr = [t for t in shown if t and t in err]
        on_stdout = [t for t in shown if not (t and t in err)]
        while out and not out[-1]:
            out.pop()
        assert on_stderr == err, f"{example.page}:{example.line} `{command}` stderr:\n" + "\n".join(err)
        diff = "\n".join(difflib.unified_diff(on_stdout, out, lineterm="", n=1))
        assert _matches(on_stdout, out), f"{example.page}:{example.line} `{command}`, the doc (-), the run (+):\n{diff}"


def test_every_page_with_commands_has_examples_the_test_runs() -> None:
    """A page renamed, or its examples' fence changed, would leave this test running nothing."""
    ran = {e.page for e in ALL if not _skip_reason(e)}
    assert ran == set(PAGES) - {"docs/commands/inspect-stats.md"}, ran
    assert sum(len(e.commands) for e in ALL) >= 25


def test_a_changed_figure_fails() -> None:
    """The comparison is not so loose that a real difference passes."""
    actual = ["converted a → b", "tensors   73 (1.11 MB)", "time      0.08 s"]
    assert _matches([_normalize(t) for t in ["converted a → b", "tensors   73 (1.11 MB)", "time      9.99 s"]],
                    [_normalize(t) for t in actual])
    assert not _matches(["converted a → b", "tensors   72 (1.11 MB)", "time      T s"], actual)
    assert _matches(["converted a → b", "...", "time      0.08 s"], actual)
    assert not _matches(["converted a → b", "...", "time      0.08 s", "extra"], actual)


# --- keys inside nested objects, which the `| key |` tables list in prose -------------------------------------------


def _listed_in_row(text: str, key: str, between: tuple[str, str] | None = None) -> set[str]:
    """The backquoted names in the meaning of `key`'s row (or `between` two phrases of it) of a `| key |` table."""
    row = next(line for line in text.splitlines() if line.startswith(f"| `{key}`"))
    part = row.split(between[0], 1)[1].split(between[1], 1)[0] if between else row.split("|", 3)[3]
    return set(re.findall(r"`(\w+)`", part))


def test_config_summary_keys_are_the_ones_readme_lists() -> None:
    from weightdoctor.structure import summarize_config

    listed = _listed_in_row((REPO_ROOT / "README.md").read_text(encoding="utf-8"), "config_summary")
    code, data = run_json("inspect", str(REPO_ROOT / "fixtures" / "example"))
    assert code == 0
    assert set(data["config_summary"]) == listed - {"num_classes"}
    timm = summarize_config({"architecture": "resnet18", "num_classes": 10})
    assert timm is not None and set(timm) == listed


@pytest.mark.parametrize("page", ["README.md", "docs/commands/inspect-stats.md"])
def test_init_evidence_keys_are_the_ones_the_docs_list(page: str, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from weightdoctor.init_classify import _DRIFT_WORDS

    listed = _listed_in_row((REPO_ROOT / page).read_text(encoding="utf-8"), "tensors[].init.family",
                            between=("over its limit", "those measured"))
    assert listed == set(_DRIFT_WORDS)
    generator = torch.Generator().manual_seed(0)
    trained = torch.randn(64, 64, generator=generator) * 0.02
    trained[:8] *= 20  # rows far from any init: evidence of training
    heavy = torch.randn(64, 64, generator=generator) ** 3
    save_file({"layer.weight": trained, "other.weight": heavy}, tmp_path / "m.safetensors")
    code, data = run_json("inspect", str(tmp_path / "m.safetensors"), "--stats")
    assert code in (0, 1)
    written = {key for tensor in data["tensors"] if tensor["init"] for key in tensor["init"]["evidence"]}
    assert written and written <= listed, written


def _names_at_top(text: str) -> set[str]:
    """The key names of `{a, b: [{c, d}], e}` (or of a plain `a`, `b` list) at its outer level: a, b, e."""
    inner = text.strip()
    if inner.startswith("{") and inner.endswith("}"):
        inner = inner[1:-1]
    while (cut := re.sub(r"\[?\{[^{}]*\}\]?", "", inner)) != inner:  # nested objects and lists of them
        inner = cut
    return {m.group(1) for m in re.finditer(r"(\w+)(?=\s*(?:,|:|$|`|\s*\())", inner)}


# (page, row key, part of its meaning between two phrases, the command (EXAMPLE = fixtures/example), the JSON path)
OBJECT_ROWS = [
    ("README.md", "verify", ("`{", "}`"), ["inspect", "EXAMPLE", "--verify"], "verify"),
    ("docs/commands/inspect-security.md", "verify", ("`{", "}`"), ["inspect", "EXAMPLE", "--verify"], "verify"),
    ("README.md", "offload", None, ["plan-devices", "EXAMPLE", "--gpu", "1GB"], "offload"),
    ("README.md", "memory", None, ["inspect", "EXAMPLE"], "memory"),
    ("README.md", "recommendation", ("| object |", "(`stored`"), ["check-dtype", "EXAMPLE"], "recommendation"),
    ("docs/commands/check-dtype.md", "recommendation", ("| object |", "(`stored`"), ["check-dtype", "EXAMPLE"],
     "recommendation"),
    ("README.md", "kv_cache", None, ["plan-devices", "EXAMPLE", "--gpu", "1GB", "--kv-cache"], "kv_cache"),
    ("README.md", "training", None, ["plan-devices", "EXAMPLE", "--gpu", "1GB", "--training"], "training"),
    ("README.md", "local", None, ["plan-devices", "EXAMPLE", "--local"], "local"),
    ("docs/commands/check-dtype.md", "local", ("`{", "}`"), ["check-dtype", "EXAMPLE", "--local"], "local"),
    ("README.md", "local", ("`{", "}`"), ["check-dtype", "EXAMPLE", "--local"], "local"),
    ("README.md", "write", ("as in `convert --json` (", ");"), ["shard", "EXAMPLE", "--max", "400KB", "-o", "OUT"],
     "write"),
    ("docs/commands/shard.md", "write", ("as in `convert --json` (", ");"),
     ["shard", "EXAMPLE", "--max", "400KB", "-o", "OUT"], "write"),
]


@pytest.mark.parametrize(("page", "key", "between", "args", "path"), OBJECT_ROWS,
                         ids=[f"{row[0]}:{row[1]}:{row[3][0]}" for row in OBJECT_ROWS])
def test_an_objects_keys_listed_in_its_row_are_the_keys_written(
    page: str, key: str, between: tuple[str, str] | None, args: list[str], path: str, tmp_path: Path
) -> None:
    text = (REPO_ROOT / page).read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith(f"| `{key}` |")
               and (between is None or between[0] in line))
    meaning = row.split("|", 3)[3]
    part = row.split(between[0], 1)[1].split(between[1], 1)[0] if between else meaning
    listed = _names_at_top(part) if between and between[0] == "`{" else set(re.findall(r"`(\w+)`", part))
    real = [str(REPO_ROOT / "fixtures" / "example") if a == "EXAMPLE" else str(tmp_path / "out") if a == "OUT" else a
            for a in args]
    code, data = run_json(*real)
    assert code in (0, 1), data
    assert isinstance(data[path], dict), data[path]
    assert set(data[path]) == listed, (page, key)


def test_names_at_top_skips_nested_objects() -> None:
    assert _names_at_top("{a, b: [{c, d}], e: {f, g}, h}") == {"a", "b", "e", "h"}


@pytest.mark.parametrize("page", ["README.md", "docs/commands/inspect-security.md"])
def test_the_security_json_example_is_what_inspect_writes(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `inspect pytorch_model.bin --verify --json` example: the bundled example written as a `.bin`."""
    import json

    text = (REPO_ROOT / page).read_text(encoding="utf-8")
    start = text.index("```json\n") + len("```json\n")
    shown = json.loads("{" + text[start:text.index("```", start)].strip().rstrip(",") + "}")
    assert run_cli("convert", str(REPO_ROOT / "fixtures" / "example"), "-o", str(tmp_path / "i8"), "--to", "bin",
                   "--json").exit_code == 0
    monkeypatch.chdir(tmp_path / "i8")
    code, data = run_json("inspect", "pytorch_model.bin", "--verify")
    assert code == 0
    assert {key: data[key] for key in shown} == shown
