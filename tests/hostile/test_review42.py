"""Review 42: the inert value classes called with arguments no pickler writes.

fractions.Fraction, read as inert, pickles as Fraction(numerator, denominator). A pickle that calls it with a string
("1e10000000", 12 bytes) made torch.load(weights_only=False) compute 10 ** 10,000,000 (8 s measured; a longer
exponent has no bound), and Fraction(Decimal(...)) does the same, while the scan called the file safe.

_codecs.encode (safe: torch's weights_only loader allows it) is how pickle's protocols 0-2 write bytes, always with
"latin1". Called with "punycode" on 8,000 distinct characters (a 23 KB file) it took torch.load 11 s, weights_only
False or True, and weightdoctor's own reader as long, with the verdict safe.
"""

from __future__ import annotations

import _codecs
import decimal
import fractions
import pickle
from pathlib import Path
from typing import Any

import numpy
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


def test_codecs_encode_with_a_codec_other_than_latin1_is_not_safe() -> None:
    for encoding in ("punycode", "idna", "zlib_codec", "utf-8"):
        verdict, text = _verdict_and_text(_Calls(_codecs.encode, "abc", encoding))
        assert verdict == "suspicious", (encoding, text)
        assert f"calls _codecs.encode with encoding '{encoding}'" in text
    verdict, text = _verdict_and_text(_Calls(_codecs.encode, "abc"))
    assert verdict == "suspicious" and "calls _codecs.encode with arguments ('abc',)" in text
    for callee in (bytearray, bytes):  # bytearray(text, encoding) and bytes(text, encoding) run the codec too
        verdict, text = _verdict_and_text(_Calls(callee, "abc", "punycode"))
        assert verdict == "suspicious", text
        assert f"calls builtins.{callee.__name__} with encoding 'punycode'" in text


def test_bytes_and_arrays_pickled_by_protocol_2_stay_safe() -> None:
    rng = numpy.random.default_rng(0)
    for value in (bytes(range(256)), b"", bytearray(b"\x00\xff"), rng.standard_normal(5).astype(numpy.float32),
                  numpy.arange(3)):
        for protocol in (0, 1, 2):
            verdict, text = _verdict_and_text(value, protocol)
            assert verdict == "safe", (protocol, text)


def test_inspect_refuses_punycode_before_running_it(tmp_path: Path) -> None:
    path = tmp_path / "puny.pt"
    torch.save({"w": torch.zeros(2), "note": _Calls(_codecs.encode, "".join(map(chr, range(0x100, 0x200))),
                                                    "punycode")}, path)
    refused = run_cli("inspect", path)
    assert refused.exit_code == 2
    assert "calls _codecs.encode with encoding 'punycode'" in refused.stderr
    assert "nothing was unpickled" in refused.stderr


def test_decimal_called_with_anything_but_one_string_is_not_safe() -> None:
    # Decimal of a 2M-bit int (a 251 KB file) took torch.load 7 s; this one is 1M bits.
    for args, shown in (((1 << 1_000_000) - 1,), "calls decimal.Decimal(<an integer of 1,000,000 bits>,)"), \
                        (("1.5", 2), "calls decimal.Decimal('1.5', 2)"), ((), "calls decimal.Decimal()"):
        verdict, text = _verdict_and_text(_Calls(decimal.Decimal, *args))
        assert verdict == "suspicious", text
        assert shown in text and "pickle writes a Decimal as Decimal(text)" in text


def test_numpy_scalar_without_its_data_is_not_safe(tmp_path: Path) -> None:
    # scalar(dtype("V1000000000")) took torch.load(weights_only=False) 2.2 GB of memory; this one asks for 1 MB.
    from numpy._core.multiarray import scalar

    verdict, text = _verdict_and_text(_Calls(scalar, numpy.dtype("V1000000")))
    assert verdict == "suspicious", text
    assert "calls numpy._core.multiarray.scalar with (<" in text and "without the data" in text
    path = tmp_path / "scalar.pt"
    torch.save({"w": torch.zeros(2), "step": _Calls(scalar, numpy.dtype("V1000000"))}, path)
    refused = run_cli("inspect", path)
    assert refused.exit_code == 2 and "without the data it makes zeros" in refused.stderr


def test_numpy_scalars_as_numpy_pickles_them_stay_safe() -> None:
    for value in (numpy.float32(3.5), numpy.int64(-2), numpy.void(b"ab"), numpy.bool_(True)):
        for protocol in (2, 4):
            verdict, text = _verdict_and_text(value, protocol)
            assert verdict == "safe", (value, protocol, text)
