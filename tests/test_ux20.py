"""ux20: wording and layout across the six commands.

"initialised" (diff-keys' "new, initialised at random") stood beside "initialization" (inspect --stats) and
transformers' own "newly initialized": one spelling now. `inspect --stats` at 80 columns gave tensor names 10 cells
and Rich cut them mid-word (`bert.embed` / `dings.Laye` / `rNorm.bias`); at 100 `bert.encoder.laye` /
`r.0.attention.sel`. Counts read "1 weight file(s)", "73 floating tensor(s)", "1 finite value(s) become inf/NaN":
each noun and verb now agrees with its count.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, run_subprocess

EXAMPLE = REPO_ROOT / "fixtures" / "example"
PLAIN = {"TERM": "dumb", "NO_COLOR": "1"}


def _stdout(*args: object, columns: int) -> str:
    result = run_subprocess(*args, env={"COLUMNS": str(columns), **PLAIN})
    assert result.returncode in (0, 1), result.stderr
    return result.stdout


def _string_constants(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_message_spells_initialise_the_british_way() -> None:
    """transformers prints "newly initialized"; inspect --stats says "initialization": every string the package
    prints, and every doc page, says it the same way."""
    said = {str(path.relative_to(REPO_ROOT)): text for path in (REPO_ROOT / "weightdoctor").rglob("*.py")
            for text in _string_constants(path) if re.search("initialis", text, re.IGNORECASE)}
    assert not said, said
    pages = [REPO_ROOT / "README.md", *(REPO_ROOT / "docs").rglob("*.md")]
    assert not [str(page) for page in pages if re.search("initialis", page.read_text(encoding="utf-8"), re.I)]


def test_a_new_task_head_is_initialized_at_random(tmp_path: Path) -> None:
    from fixtures.build import build_bert

    model = build_bert()
    model.bert.save_pretrained(tmp_path / "base")
    model.save_pretrained(tmp_path / "classifier")
    out = " ".join(_stdout("diff-keys", tmp_path / "base", tmp_path / "classifier", columns=200).split())
    assert "new, initialized at random" in out and "initialised" not in out, out


def test_no_message_writes_a_count_with_s_in_brackets() -> None:
    """`(s)` / `(es)` after a count: "1 weight file(s)", "73 floating tensor(s)", "1 CRC mismatch(es)". Click's
    own "Got unexpected extra argument(s)" is quoted in comments only."""
    said = {str(path.relative_to(REPO_ROOT)): text for path in (REPO_ROOT / "weightdoctor").rglob("*.py")
            for text in _string_constants(path) if re.search(r"\w\((?:s|es)\)", text)}
    assert not said, said


@pytest.mark.parametrize("columns", [80, 120])
def test_each_command_counts_in_words_and_fits_the_console(tmp_path: Path, columns: int) -> None:
    outputs = {
        "inspect": _stdout("inspect", EXAMPLE, "--verify", columns=columns),
        "check-dtype": _stdout("check-dtype", EXAMPLE, columns=columns),
        "diff-keys": _stdout("diff-keys", EXAMPLE, EXAMPLE, columns=columns),
        "plan-devices": _stdout("plan-devices", EXAMPLE, "--gpu", "600KB", columns=columns),
        "convert": _stdout("convert", EXAMPLE, "-o", tmp_path / "bin", "--to", "bin", columns=columns),
        "shard": _stdout("shard", EXAMPLE, "--max", "400KB", "-o", tmp_path / "shards", columns=columns),
    }
    for command, out in outputs.items():
        assert not re.search(r"\w\((?:s|es)\)", out), (command, out)
        # plan-devices' lines, diff-keys' command to paste and shard's `first → last` lines stay whole when piped,
        # by design (grep, copy), as does convert's `wrote SOURCE → OUTPUT` (the test's temporary paths are long).
        if command not in ("plan-devices", "diff-keys", "shard"):
            lines = [line for line in out.splitlines() if not line.startswith("wrote ")]
            assert max(len(line.rstrip()) for line in lines) <= columns, (command, out)
    assert "1 weight file, 1.11 MB on disk" in outputs["inspect"], outputs["inspect"]
    assert "73 floating tensors" in outputs["check-dtype"], outputs["check-dtype"]
    assert "in 3 files" in outputs["shard"], outputs["shard"]


def test_one_tensor_is_said_in_the_singular() -> None:
    out = _stdout("check-dtype", EXAMPLE, "--filter", r"^classifier\.weight$", columns=120)
    assert "1 floating tensor matching" in out, out


def _name_cells(out: str) -> list[str]:
    """Each tensor name of the statistics table, its lines joined with a `|` where the table broke it: from the
    table's first column (a row starts where its `mean` cell is filled), or from a tensor's own lines (a record
    starts after a rule and its name ends where `mean ...` begins)."""
    table = out[out.index("Weights: statistics and initialization"):out.index("\nstate:")]
    lines = [line for line in table.splitlines() if line.startswith("│")]
    names: list[list[str]] = []
    if all(line.count("│") == 2 for line in lines):  # a tensor's own lines
        reading = True
        for line in table.splitlines():
            cell = line.strip("│ ")
            if line.startswith("├") or line.startswith("┌"):
                names.append([])
                reading = True
            elif line.startswith("│") and cell.startswith("mean "):
                reading = False
            elif line.startswith("│") and reading:
                names[-1].append(cell)
    else:
        for line in lines:
            cells = [cell.strip() for cell in line.split("│")[1:-1]]
            if cells[1]:
                names.append([])
            if cells[0]:
                names[-1].append(cells[0])
    return ["|".join(parts) for parts in names]


@pytest.mark.parametrize("columns", [80, 100, 120])
def test_inspect_stats_breaks_names_only_after_a_dot(columns: int) -> None:
    out = _stdout("inspect", EXAMPLE, "--stats", "--all", columns=columns)
    from safetensors import safe_open

    with safe_open(str(EXAMPLE / "model.safetensors"), "pt") as f:
        expected = set(f.keys())
    cells = _name_cells(out)
    assert {cell.replace("|", "") for cell in cells} == expected, cells
    broken = [cell for cell in cells if any(not part.endswith(".") for part in cell.split("|")[:-1])]
    assert not broken, broken
    assert max(len(line.rstrip()) for line in out.splitlines()) <= columns


def test_inspect_stats_tells_each_tensor_in_its_own_lines_at_80_columns() -> None:
    out = _stdout("inspect", EXAMPLE, "--stats", "--filter", "position_embeddings", columns=80)
    assert "│ bert.embeddings.position_embeddings.weight" in out, out
    assert "│ mean -0.000253 · std 0.0199 · abs max 0.0719 · zeros 0.0%" in out, out
    assert "│ expected at init normal(0, 0.02)" in out, out


def test_inspect_stats_findings_in_their_own_lines_say_severity_and_code_first() -> None:
    """Narrower than their columns need, the findings are told a finding at a time: severity and code first, the
    tensor's name whole (after its dots), a finding about the whole checkpoint naming none ("(checkpoint)")."""
    out = _stdout("inspect", EXAMPLE, "--stats", "--filter", "position_embeddings", columns=50)
    findings = out[out.index("Findings"):]
    assert "│ warn · checkpoint-at-init" in findings and "(checkpoint)" not in findings, findings


def test_inspect_stats_keeps_its_columns_and_whole_words_at_120_columns() -> None:
    out = _stdout("inspect", EXAMPLE, "--stats", "--filter", r"layer\.0\.attention\.self", columns=120)
    assert "┃ name" in out and "┃      mean ┃" in out, out
    # The prose columns fold no word: `initializer_range` whole, `normal(0, 0.02)` on one line.
    assert "initializer_range" in out and "│ normal(0, 0.02) │" in out, out
