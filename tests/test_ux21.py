"""ux21: what users read at 80 and 120 columns.

diff-keys gave the same `--rename '^=bert.'` in every row of a prefix's groups (two lines a row at 80 columns): the
first row of a run gives it, the rows under it say "same rename". shard's `first → last` lines reached 158
characters and a terminal of 80 broke them inside tensor names: in a terminal each shard's first and last tensor go
on lines of their own (piped, a shard stays one line, for grep); its size column is as wide as its sizes (was 18).
diff-keys --values folded tensor names mid-word (`...intermediate.dense.bi` / `as`): now broken after a dot. A
Hub snapshot's path in inspect's, check-dtype's and diff-keys' header was folded mid-name (`.../snapsho` / `ts/...`):
now broken after a slash.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, run_json, run_subprocess

EXAMPLE = REPO_ROOT / "fixtures" / "example"
PLAIN = {"TERM": "dumb", "NO_COLOR": "1"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def base_and_classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """BertModel's keys (no `bert.`) against BertForSequenceClassification's: six groups take `--rename '^=bert.'`."""
    from fixtures.build import build_bert

    root = tmp_path_factory.mktemp("ux21")
    model = build_bert()
    model.bert.save_pretrained(root / "base")
    model.save_pretrained(root / "classifier")
    return root / "base", root / "classifier"


@pytest.fixture(scope="module")
def training_pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The classifier after one AdamW step, saved as a training script does (`training.pt`), beside the `bert`
    folder it started from, as fixtures.build writes `files/training.pt`."""
    import torch

    from fixtures.build import build_bert

    root = tmp_path_factory.mktemp("ux21-training")
    bert = build_bert()
    bert.save_pretrained(root / "bert")
    optimizer = torch.optim.AdamW(bert.parameters(), lr=1e-3)
    bert(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    optimizer.step()
    torch.save({"model_state_dict": bert.state_dict()}, root / "training.pt")
    return root


def _table(out: str, title: str) -> str:
    start = out.index(title)
    return out[start:out.index("└", start)]


@pytest.mark.parametrize("columns", [80, 120])
def test_diff_keys_says_a_prefix_rename_once_per_run_of_groups(base_and_classifier: tuple[Path, Path],
                                                               columns: int) -> None:
    base, classifier = base_and_classifier
    result = run_subprocess("diff-keys", base, classifier, env={"COLUMNS": str(columns), **PLAIN})
    assert result.returncode == 0, result.stderr
    for title in ("Missing:", "Unexpected:"):
        table = _table(result.stdout, title)
        assert table.count("'^=bert.'") == 1, table
        assert table.count("same rename") == 5, table
    missing = _table(result.stdout, "Missing:")
    # The rows that are not a rename keep their own detail.
    assert "new, initialized at random" in " ".join(missing.replace("│", " ").split()), missing
    # At 80 columns the five groups after the first take a line each, not two.
    rows = [line for line in missing.splitlines() if line.startswith("│")]
    assert len(rows) == (16 if columns == 80 else 8), missing
    # The fix itself is still given whole, once, to copy.
    assert "\n--rename '^=bert.'\n" in result.stdout, result.stdout


def test_diff_keys_all_says_the_rename_once_too(base_and_classifier: tuple[Path, Path]) -> None:
    base, classifier = base_and_classifier
    result = run_subprocess("diff-keys", base, classifier, "--all", env={"COLUMNS": "120", **PLAIN})
    table = _table(result.stdout, "Unexpected:")
    assert table.count("'^=bert.'") == 1 and table.count("same rename") == 38, table


def test_diff_keys_json_still_gives_each_group_its_rename(base_and_classifier: tuple[Path, Path]) -> None:
    base, classifier = base_and_classifier
    code, data = run_json("diff-keys", str(base), str(classifier), "--json")
    assert code == 0
    renames = [item["detail"] for item in data["unexpected"]]
    assert renames and set(renames) == {"--rename '^=bert.'"}, renames


def test_diff_keys_narrow_stacked_rows_say_the_rename_once(base_and_classifier: tuple[Path, Path]) -> None:
    base, classifier = base_and_classifier
    result = run_subprocess("diff-keys", base, classifier, env={"COLUMNS": "50", **PLAIN})
    table = _table(result.stdout, "Unexpected:")
    assert table.count("'^=bert.'") == 1 and table.count("same rename") == 5, table


def _shard_lines(out: str) -> list[str]:
    lines = ANSI.sub("", out).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("shard "))
    return lines[start:lines.index("", start)]


@pytest.mark.parametrize("columns", [80, 120])
def test_shard_in_a_terminal_puts_first_and_last_under_each_shard(tmp_path: Path, columns: int) -> None:
    """FORCE_COLOR makes Rich take the pipe for a terminal."""
    result = run_subprocess("shard", EXAMPLE, "--max", "400KB", "-o", tmp_path / "out",
                            env={"COLUMNS": str(columns), "FORCE_COLOR": "1"})
    assert result.returncode == 0, result.stderr
    lines = _shard_lines(result.stdout)
    assert max(len(line) for line in lines) <= columns, lines
    assert lines[1:4] == ["model-00001-of-00003.safetensors  357.89 KB       16",
                          "  bert.embeddings.LayerNorm.bias",
                          "  → bert.encoder.layer.0.intermediate.dense.bias"], lines
    assert "  → classifier.weight" in lines, lines


def test_shard_piped_keeps_each_shard_on_one_line_for_grep(tmp_path: Path) -> None:
    result = run_subprocess("shard", EXAMPLE, "--max", "400KB", "-o", tmp_path / "out",
                            env={"COLUMNS": "80", **PLAIN})
    lines = _shard_lines(result.stdout)
    assert lines[0] == "shard                                  size  tensors  first → last", lines
    assert lines[2] == ("model-00002-of-00003.safetensors  399.87 KB       32  "
                        "bert.encoder.layer.0.intermediate.dense.weight → bert.encoder.layer.2.intermediate.dense.bias"
                        ), lines


def test_shard_in_a_wide_terminal_stays_one_line(tmp_path: Path) -> None:
    result = run_subprocess("shard", EXAMPLE, "--max", "400KB", "-o", tmp_path / "out",
                            env={"COLUMNS": "200", "FORCE_COLOR": "1"})
    lines = _shard_lines(result.stdout)
    assert len(lines) == 4 and lines[3].endswith("  bert.encoder.layer.2.intermediate.dense.weight → classifier.weight")


@pytest.mark.parametrize("columns", [80, 120])
def test_diff_keys_values_breaks_tensor_names_only_after_a_dot(training_pair: Path, columns: int) -> None:
    """A training checkpoint against its model before the step: every tensor changed. At 80 columns Rich folded
    `bert.encoder.layer.0.intermediate.dense.bi` / `as` and `...attention.output.Laye` / `rNorm.bias`."""
    files = training_pair
    result = run_subprocess("diff-keys", files / "training.pt", files / "bert", "--values", "--all",
                            env={"COLUMNS": str(columns), **PLAIN})
    assert result.returncode in (0, 1), result.stderr
    out = result.stdout
    for title, end in (("Values:", "Layers changed most"), ("Layers changed most", None)):
        table = out[out.index(title):out.index(end) if end else None]
        names: list[list[str]] = []
        for line in table.splitlines():
            cells = [cell.strip() for cell in line.split("│")[1:-1]]
            if not cells:
                continue
            if cells[1]:
                names.append([])
            if cells[0]:
                names[-1].append(cells[0])
        assert names, table
        broken = [parts for parts in names if any(not part.endswith(".") for part in parts[:-1])]
        assert not broken, broken
        assert max(len(line.rstrip()) for line in table.splitlines()) <= columns, table
    assert "│ bert.encoder.layer.0.intermediate.dense." in out or columns > 80, out



@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hub cache holding `weightdoctor-tests/tiny-bert`: its snapshot's path is longer than a panel at 80 columns."""
    from fixtures.build import HUB_ORG, build_bert, write_hub_cache

    root = tmp_path_factory.mktemp("ux21-hub")
    build_bert().save_pretrained(root / "bert")
    write_hub_cache(root / "hub", f"{HUB_ORG}/tiny-bert", root / "bert")
    return root / "hub"


def _panel_value_lines(out: str, label: str) -> list[str]:
    """The lines of a header panel's row `label`: its first line and those under it with no label of their own."""
    lines = [line.strip("│").rstrip() for line in out.splitlines() if line.startswith("│")]
    start = next(i for i, line in enumerate(lines) if line.startswith(f" {label} "))
    column = len(lines[start]) - len(lines[start][len(label) + 1:].lstrip())
    values = [lines[start][column:]]
    for line in lines[start + 1:]:
        if line[:column].strip():
            break
        values.append(line[column:])
    return values


@pytest.mark.parametrize("command", [["inspect"], ["check-dtype"], ["diff-keys", "{B}"]])
def test_a_long_path_in_a_header_breaks_after_a_slash(hub_cache: Path, command: list[str]) -> None:
    """Folded by Rich, the snapshot's path broke anywhere: `.../snapsho` / `ts/3c7baf...`."""
    from fixtures.build import HUB_ORG

    repo = f"{HUB_ORG}/tiny-bert"
    snapshot = next((hub_cache / f"models--{HUB_ORG}--tiny-bert" / "snapshots").iterdir())
    args = [arg.replace("{B}", str(snapshot)) for arg in command[1:]]
    result = run_subprocess(command[0], repo, *args,
                            env={"COLUMNS": "80", "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", **PLAIN})
    assert result.returncode in (0, 1), result.stderr
    label = "B" if command[0] == "diff-keys" else "source"
    values = _panel_value_lines(result.stdout, label)
    assert len(values) > 1, result.stdout
    assert all(line.rstrip().endswith("/") for line in values[:-1]), values
    assert snapshot.name in values[-1], values
    assert "".join(line.strip() for line in values).startswith(
        str(snapshot) if command[0] == "diff-keys" else f"{repo} → {snapshot}"), values
