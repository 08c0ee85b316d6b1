"""Round 12 of the red team: user regexes the backtracking bound let through, and hostile bytes, addresses and
names against the formats, Hub sources and batched reads added in round 12. Each command must exit 0 with a
truthful report or 2 with one line naming the file or option and what is wrong; never a traceback or a hang."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str | Path, seconds: float = 20) -> subprocess.CompletedProcess[str]:
    """`python -m weightdoctor ARGS` in a fresh interpreter, killed past `seconds`: re.search cannot be interrupted
    in-process, so a pattern that backtracks for hours would hang the test run itself."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "weightdoctor", *map(str, args)], capture_output=True, text=True,
                          timeout=seconds, env=env, check=False)


@pytest.mark.parametrize(("option", "pattern"), [
    ("--filter", "a?" * 28 + "a" * 28 + "x"),
    ("--filter", "(?:a|a)" * 40 + "x"),
    ("--hist", "a{0,9999}a{0,9999}a{0,9999}x"),
])
def test_a_pattern_of_exponentially_many_ways_without_a_repeated_group_is_refused(
        tmp_path: Path, option: str, pattern: str) -> None:
    """`_match_cost` refused only what it could not bound: `a?` 28 times then `a` 28 times (the textbook slow regex)
    or `(a|a)` written out 40 times holds no repeated group, so its bound, 2**28 or 2**40 ways whatever the name,
    passed, and `inspect --filter` over a 60-letter name did not return in 10 s. A constant that large is refused
    in one line naming the option; an ordinary pattern of alternatives and counted repeats still runs."""
    path = tmp_path / "m.safetensors"
    save_file({"a" * 60 + ".weight": torch.zeros(2), "layers.1.q_proj.weight": torch.ones(2)}, path)
    result = _cli("inspect", path, option, pattern, "--json")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {option} ") and "ways on one tensor name" in lines[0], lines[0]
    ordinary = _cli("inspect", path, "--filter", r"layers\.\d{1,3}\.(q|k|v|o)_proj\.(weight|bias)", "--json")
    assert ordinary.returncode == 0 and '"layers.1.q_proj.weight"' in ordinary.stdout, ordinary.stderr
