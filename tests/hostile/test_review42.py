"""Review 42: the inert value classes called with arguments no pickler writes.

fractions.Fraction, read as inert, pickles as Fraction(numerator, denominator). A pickle that calls it with a string
("1e10000000", 12 bytes) made torch.load(weights_only=False) compute 10 ** 10,000,000 (8 s measured; a longer
exponent has no bound), and Fraction(Decimal(...)) does the same, while the scan called the file safe.
"""

from __future__ import annotations

import decimal
import fractions
import pickle
from pathlib import Path
from typing import Any

import torch

from tests.helpers import run_cli
from weightdoctor.security import scan_bytes


class _Calls:
    """Pickles as `callee(*args)`: the REDUCE a hostile file writes."""

    def __init__(self, callee: Any, *args: Any) -> None:
        self.callee, self.args = callee, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.callee, self.args)


def _verdict_and_text(value: Any, protocol: int = 2) -> tuple[str, str]:
    report = scan_bytes(pickle.dumps({"lr": value}, protocol=protocol))
    return report.verdict, report.summary()


def test_fraction_from_a_string_with_an_exponent_is_not_safe() -> None:
    for protocol in (0, 2, 4):
        verdict, text = _verdict_and_text(_Calls(fractions.Fraction, "1e10000000"), protocol)
        assert verdict == "suspicious", (protocol, text)
        assert "calls fractions.Fraction('1e10000000',)" in text
        assert "10 ** exponent" in text


def test_fraction_of_a_decimal_is_not_safe() -> None:
    verdict, text = _verdict_and_text(_Calls(fractions.Fraction, decimal.Decimal("1e10000000")))
    assert verdict == "suspicious"
    assert "calls fractions.Fraction(<" in text  # the Decimal is the result of a call: not a literal int


def test_fraction_of_huge_integers_is_not_safe() -> None:
    # Two ints of 4M bits (1 MB of pickle) took Fraction 18 s to reduce; this one is 1M bits.
    verdict, text = _verdict_and_text(_Calls(fractions.Fraction, 1 << 1_000_000, 3))
    assert verdict == "suspicious"
    assert "an integer of 1,000,001 bits" in text


def test_genuine_fractions_and_decimals_stay_safe() -> None:
    for value in (fractions.Fraction(1, 3000), fractions.Fraction(-7), fractions.Fraction(0.1),
                  decimal.Decimal("1e-4")):
        for protocol in (0, 2, 4, 5):
            verdict, text = _verdict_and_text(value, protocol)
            assert verdict == "safe", (value, protocol, text)


def test_inspect_refuses_a_checkpoint_whose_fraction_parses_a_string(tmp_path: Path) -> None:
    hostile, genuine = tmp_path / "hostile.pt", tmp_path / "genuine.pt"
    torch.manual_seed(0)
    weights = torch.randn(3)
    torch.save({"w": weights, "lr": _Calls(fractions.Fraction, "1e10000000")}, hostile)
    torch.save({"w": weights, "lr": fractions.Fraction(1, 3000)}, genuine)
    refused = run_cli("inspect", hostile)
    assert refused.exit_code == 2
    assert "suspicious" in refused.stderr and "fractions.Fraction('1e10000000',)" in refused.stderr
    assert "nothing was unpickled" in refused.stderr
    assert run_cli("inspect", genuine).exit_code == 0
