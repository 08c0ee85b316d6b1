"""The lead's fixes of the eighteenth session, each with the input that showed it."""

from __future__ import annotations

import json
from pathlib import Path

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


class _FractionAsPython310Pickles:
    """Pickles as Python 3.10 and older pickle a Fraction: Fraction(str(self))."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import fractions

        return fractions.Fraction, (self.text,)


@pytest.mark.parametrize(("text", "verdict"), [("1/3", "safe"), ("-7", "safe"), ("1e100000", "suspicious"),
                                               ("1/3 ", "suspicious"), ("1" * 20000, "suspicious")])
def test_a_fraction_pickled_by_python_310_is_read_and_other_text_refused(tmp_path: Path, text: str,
                                                                          verdict: str) -> None:
    """review42 let Fraction through only as two ints (what Python 3.11 writes); Lightning hparams saved on Python 3.10
    hold Fraction("n/d") and were refused as suspicious. Text of digits is read; an exponent is still refused."""
    import torch

    path = tmp_path / "hparams.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"ratio": _FractionAsPython310Pickles(text)}},
               path)
    result = run_cli("inspect", str(path), "--json")
    if verdict == "safe":
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["security"]["verdict"] == "safe"
    else:
        assert result.exit_code == 2 and result.stdout == ""
        assert "suspicious" in result.stderr and "fractions.Fraction" in result.stderr, result.stderr
