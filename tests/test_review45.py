"""review45: a review of fixlist22 and redteam26 (narrow consoles, `-o` report-format words, mount points)."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO_ROOT, run_cli
from tests.helpers import run_json as run_cli_json

EXAMPLE = REPO_ROOT / "fixtures" / "example"


# 1. inspect --stats on a console a few columns under the one its columns need.

@pytest.fixture(scope="module")
def example_stats() -> Any:
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.health import analyze_weights

    with open_checkpoint(str(EXAMPLE)) as checkpoint:
        return analyze_weights(checkpoint, [t.name for t in checkpoint.tensors], None, lambda n: None)


def _rendered(report: Any, width: int) -> str:
    from rich.console import Console

    from weightdoctor.render.stats import render_stats

    out = io.StringIO()
    render_stats(report, Console(file=out, width=width, force_terminal=False, no_color=True, emoji=False,
                                 highlight=False), limit=None)
    return out.getvalue()


@pytest.mark.parametrize("width", range(60, 91))
def test_inspect_stats_cuts_no_figure_or_code_at_any_width(example_stats: Any, width: int) -> None:
    """The layout switch counted each name / init column as 8 characters, under the 9 of a number (`-0.000253`):
    at 74 and 75 columns the table was kept and Rich narrowed the mean column with them (`-0.0002…`); at 67 the
    findings' table cut its code (`checkpoint-at-in…`). A row's cells are either whole in the table or told in lines
    of their own (ux20: names whole up to their dots too)."""
    out = _rendered(example_stats, width)
    assert "…" not in out, out
    assert max(map(len, out.splitlines())) <= width
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    words = {word for row in cells for cell in row for word in cell.split()}
    assert "-0.000253" in words, out  # whole, in a table row or a tensor's own lines
    assert "checkpoint-at-init" in words, out


@pytest.mark.parametrize("width", [100, 120, 200])
def test_inspect_stats_keeps_its_tables_at_common_widths(example_stats: Any, width: int) -> None:
    """At 80 columns the name column got 10 cells and names were cut mid-word (ux20): each tensor is told in lines of
    its own there (tests/test_ux20.py)."""
    out = _rendered(example_stats, width)
    headers = [re.sub(r"\s+", " ", line) for line in out.splitlines() if line.startswith("┃")]
    assert any("┃ mean ┃ std ┃ abs max ┃ zeros ┃" in line for line in headers), out
    assert any("┃ severity ┃ code ┃ tensor ┃ what ┃" in line for line in headers), out
    assert "│ -0.000253 │ 0.0199 │  0.0719 │   0.0% │" in out


# 2. `-o table` where ./table is already there.

def test_an_existing_output_named_like_a_format_is_replaced_with_force(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`convert m -o table --force`, where ./table is the output folder of an earlier run (a script run each day),
    was refused as "'table' is an output format": the name is the user's, and --force says to replace it."""
    source = tmp_path / "m"
    shutil.copytree(EXAMPLE, source)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "table").mkdir()
    (tmp_path / "table" / "model.safetensors").write_bytes(b"old")
    result = run_cli("convert", str(source), "-o", "table", "--to", "bin", "--force")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "table").iterdir()) == ["config.json", "pytorch_model.bin"]
    # Without --force, what is said is that the output exists, not that `table` is a format.
    result = run_cli("convert", str(source), "-o", "table", "--to", "bin")
    assert result.exit_code == 2 and "output exists; pass --force" in result.stderr, result.stderr
    # A format word that names nothing there is still refused, before anything is read or written.
    result = run_cli("shard", str(source), "-o", "yaml", "--max", "1MB")
    assert result.exit_code == 2 and "'yaml' is an output format" in " ".join(result.stderr.split())
    assert not (tmp_path / "yaml").exists()


# 3. The Hub's error, whose second line is what is not found.

def test_a_hub_error_says_what_the_hub_did_not_find(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub writes "404 Client Error. (Request ID: ...)", a blank line, then "Entry Not Found for url:
    ...": the first line alone was quoted, a request id and no word of the file the Hub lacks."""
    import huggingface_hub
    import torch
    from huggingface_hub.errors import EntryNotFoundError
    from safetensors.torch import save

    from fixtures.hub_cache import commit_of, write_snapshot
    from weightdoctor.checkpoint import hub

    folder = tmp_path / "hub"
    write_snapshot(folder, "org/m", commit_of("review45"), {"model.safetensors": save({"w": torch.zeros(2)})})
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_unreachable", lambda timeout=5.0: None)
    url = "https://huggingface.co/org/m/resolve/main/model.fp16.safetensors"

    def not_there(repo_id: str, filename: str, **kwargs: object) -> str:
        raise EntryNotFoundError(f"404 Client Error. (Request ID: Root=1-6570f3a1-0c5e7d1b2a3f4e5d6c7b8a90)\n\n"
                                 f"Entry Not Found for url: {url}.")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", not_there)
    result = run_cli("inspect", "hf://org/m/model.fp16.safetensors")
    line = " ".join(result.stderr.split())
    assert result.exit_code == 2, line
    assert (f"org/m's cached snapshot has no model.fp16.safetensors, and the Hub could not provide it: 404 Client "
            f"Error. Entry Not Found for url: {url}.") in line, line
    assert "Request ID" not in line


# 4. The 2^53 bytes plan-devices takes, to the byte.

def test_a_device_size_one_byte_past_2_53_is_refused_and_9pb_planned(tmp_path: Path) -> None:
    """`--gpu 9007199254740993` (2^53 + 1) was read as the float 2^53 and planned as 9007199254740992 bytes, the
    inexact reading the refusal is there to prevent; 9PB and 8PiB (2^53 itself) are sizes it holds exactly."""
    from weightdoctor.errors import UsageError
    from weightdoctor.units import refuse_beyond_any_device

    assert refuse_beyond_any_device("--gpu", "9PB") == 9 * 10**15
    assert refuse_beyond_any_device("--gpu", "8PiB") == 2**53
    for text in ("9007199254740993", "9.007199254740993PB", "8.0000000000000001PiB"):
        with pytest.raises(UsageError, match=r"is more memory than any device holds \(over 9 PB, 2\^53 bytes"):
            refuse_beyond_any_device("--gpu", text)
    result = run_cli("plan-devices", str(EXAMPLE), "--gpu", "9007199254740993")
    assert result.exit_code == 2
    assert "--gpu 9007199254740993 is more memory than any device holds" in " ".join(result.stderr.split())
    code, plan = run_cli_json("plan-devices", str(EXAMPLE), "--gpu", "9PB")
    assert code == 0 and plan["devices"][0]["budget_bytes"] == 9 * 10**15, plan["devices"]


# 5. The name limit of the file system written to.

def test_names_too_long_are_measured_against_the_output_file_system(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit was read at `/`: an output on a file system of 143-byte names (eCryptfs) passed planning with a
    207-byte shard name and failed in the write. The output folder's own limit is asked (simulated here)."""
    import os

    from weightdoctor.errors import OutputError
    from weightdoctor.rewrite import refuse_names_too_long

    real = os.pathconf
    out = tmp_path / "enc" / "out"
    (tmp_path / "enc").mkdir()

    def pathconf(path: Any, name: Any) -> int:
        if name == "PC_NAME_MAX" and Path(path) != Path("/") and str(tmp_path / "enc") in str(path):
            return 143
        return real(path, name)

    monkeypatch.setattr(os, "pathconf", pathconf)
    long_name = "m" * 180 + "-00001-of-00002.safetensors"
    with pytest.raises(OutputError, match=r"would be 207 bytes long, past the limit of 143 bytes"):
        refuse_names_too_long(out, [long_name])
    refuse_names_too_long(tmp_path / "elsewhere", [long_name])  # 207 bytes fit in 255


# 6. Mount points listed under the output that are not there.

def test_a_mount_covered_by_another_is_not_said_to_be_inside_the_output(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """/proc/self/mountinfo keeps listing a mount whose folder another mount has since covered (a tmpfs mounted over
    the output's parent): `convert --force` into a folder holding no such path was refused, "out/sub is a mount
    point inside it", though `ls out` showed no sub (measured with unshare -m, bind mount then tmpfs over it)."""
    from weightdoctor.writers import atomic

    out = tmp_path / "out"
    (out / "real").mkdir(parents=True)
    listed = [Path("/"), out / "sub", out / "sub" / "deeper"]
    monkeypatch.setattr(atomic, "_mount_points", lambda: listed)
    assert atomic.mount_inside(out) is None
    assert atomic.removal_blocker(out) is None
    listed.append(out / "real")  # one that is there is still found, and refused
    assert atomic.mount_inside(out) == out / "real"
    assert "out/real is a mount point inside it" in (atomic.removal_blocker(out) or "")
