"""The lead's fixes of the eighteenth session, each with the input that showed it."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli

EXAMPLE = "fixtures/example"


@pytest.mark.parametrize("words", [
    ["--gpu", "24", "GB", "--", EXAMPLE],
    ["--gpu", "24", "GB", EXAMPLE],
    [EXAMPLE, "--gpu", "24", "GB"],
])
def test_a_size_the_shell_split_is_named_wherever_the_model_is_given(words: list[str]) -> None:
    """`--gpu 24 GB -- model`: `GB` took the checkpoint's place and the model was the extra argument, which was said
    as "plan-devices reads one checkpoint, not 2 (a shell glob?)"."""
    result = run_cli("plan-devices", *words)
    assert result.exit_code == 2 and result.stdout == ""
    line = " ".join(result.stderr.split())
    assert "--gpu 24 GB: a size is one word, --gpu 24GB (the shell split it in two)" in line, line
    assert "a shell glob" not in line
