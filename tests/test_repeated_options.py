"""Options given more than once: Click keeps the last value of a one-value option without a word, so
`check-dtype --target fp16 --target bf16` checked bf16 alone and `inspect --filter a --filter b` filtered by b."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, run_cli, run_json

EXAMPLE = REPO_ROOT / "fixtures" / "example"


def test_check_dtype_targets_repeated_are_all_checked() -> None:
    code, data = run_json("check-dtype", str(EXAMPLE), "--target", "fp16", "--target", "bf16")
    assert code == 0 and list(data["targets"]) == ["fp16", "bf16"]
    code, data = run_json("check-dtype", str(EXAMPLE), "--target", "fp16,bf16", "--target", "fp8_e4m3")
    assert list(data["targets"]) == ["fp16", "bf16", "fp8_e4m3"]


@pytest.mark.parametrize("args", [
    ["inspect", str(EXAMPLE), "--filter", "query", "--filter", "key"],
    ["inspect", str(EXAMPLE), "--filter=query", "--filter", "key"],
    ["shard", str(EXAMPLE), "--max", "1MB", "--max", "2MB", "-o", "{tmp}/out"],
    ["plan-devices", str(EXAMPLE), "--dtype", "fp16", "--dtype", "bf16"],
])
def test_a_one_value_option_given_twice_with_different_values_is_refused(args: list[str], tmp_path: Path) -> None:
    result = run_cli(*(arg.format(tmp=tmp_path) for arg in args))
    assert not (tmp_path / "out").exists()
    assert result.exit_code == 2 and result.stdout == ""
    option = next(arg.partition("=")[0] for arg in args if arg.startswith("--"))
    assert f"{option} is given twice" in result.stderr and "give it once" in result.stderr, result.stderr


def test_the_same_value_twice_and_repeatable_options_still_run() -> None:
    code, data = run_json("inspect", str(EXAMPLE), "--filter", "query", "--filter", "query")
    assert code == 0 and data["filter"] == "query"
    result = run_cli("plan-devices", str(EXAMPLE), "--gpu", "1GB", "--gpu", "2GB")
    assert result.exit_code == 0, result.stderr
