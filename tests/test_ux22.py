"""ux22: the lines and tables users read: a size refusal names its option, diff-keys --model-class speaks of the
model, and --values ranks the layers changed most by a change that means something."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.plan_devices import save_tiny_model
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded Llama folder (config.json and safetensors), built once."""
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize(("args", "option", "said"), [
    (["plan-devices", "{src}", "--gpu", "24XB"], "--gpu", "cannot parse size '24XB': unknown unit 'XB'"),
    (["plan-devices", "{src}", "--gpu", "24GB", "--cpu", "64Gb"], "--cpu", "size '64Gb' is ambiguous"),
    (["plan-devices", "{src}", "--gpu", "24GB", "--reserve", "lots"], "--reserve", "cannot parse size 'lots'"),
    (["plan-devices", "{src}", "--gpu", "1e-400GB"], "--gpu", "size '1e-400GB' is under one byte"),
    (["shard", "{src}", "-o", "{out}", "--max", "10XB"], "--max", "cannot parse size '10XB': unknown unit 'XB'"),
    (["shard", "{src}", "-o", "{out}", "--max", "1,5GB"], "--max", "a comma is no decimal point here: write 1.5GB"),
])
def test_a_size_refusal_names_the_option_it_was_given_to(llama: Path, tmp_path: Path, args: list[str], option: str,
                                                          said: str) -> None:
    """Was "error: cannot parse size '24XB': ...", which did not say which of --gpu, --cpu, --reserve was wrong."""
    result = run_cli(*[a.format(src=llama, out=tmp_path / "out") for a in args])
    assert result.exit_code == 2 and result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"error: invalid value for '{option}': ") and said in line, line
    assert not (tmp_path / "out").exists()


def test_parse_size_without_an_option_says_the_size_alone() -> None:
    from weightdoctor.errors import UsageError
    from weightdoctor.units import parse_size

    with pytest.raises(UsageError, match=r"^cannot parse size '10XB': unknown unit 'XB'"):
        parse_size("10XB")
    with pytest.raises(UsageError, match=r"^invalid value for '--max': cannot parse size '10XB'"):
        parse_size("10XB", "--max")
    assert parse_size("2GiB", "--gpu") == 2 * 1024**3


@pytest.fixture(scope="module")
def zero_bias_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """B: three layers of seeded weights and `enc.3`, a bias all zeros (as a model initializes it); A: `enc.3` moved by
    1e-6 from its zeros (‖A−B‖/‖B‖ = inf), `enc.1`'s weight changed by half (0.5), `enc.2`'s by 1% (0.01), `enc.0`
    the same."""
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("zero_bias")
    generator = torch.Generator().manual_seed(0)
    weights = {f"enc.{i}.weight": torch.randn(8, 8, generator=generator) for i in range(3)}
    b = {**weights, "enc.3.bias": torch.zeros(8)}
    a = {**b, "enc.3.bias": torch.full((8,), 1e-6), "enc.1.weight": weights["enc.1.weight"] * 1.5,
         "enc.2.weight": weights["enc.2.weight"] * 1.01}
    save_file(a, str(folder / "a.safetensors"))
    save_file(b, str(folder / "b.safetensors"))
    return folder / "a.safetensors", folder / "b.safetensors"


def test_a_change_infinite_only_because_b_is_zero_ranks_after_real_changes(zero_bias_pair: tuple[Path, Path]) -> None:
    """Was: enc.3 (a bias nudged by 1e-6, inf) ranked first among the layers changed most, above a weight changed by
    half, in the JSON and in both tables."""
    import json

    a, b = zero_bias_pair
    result = run_cli("diff-keys", a, b, "--values", "--json")
    assert result.exit_code in (0, 1), result.stderr
    layers = json.loads(result.stdout)["layers_changed_most"]
    assert [layer["layer"] for layer in layers] == ["enc.1", "enc.2", "enc.3", "enc.0"]
    assert layers[0]["rel_change"] == pytest.approx(0.5, rel=1e-6)
    assert layers[1]["rel_change"] == pytest.approx(0.01, rel=1e-5)
    assert layers[2]["rel_change"] == "inf" and layers[2]["max_abs_diff"] == pytest.approx(1e-6, rel=1e-5)
    assert layers[3]["identical"] is True and layers[3]["max_abs_diff"] == 0
    assert layers[0]["max_abs_diff"] > 0.1

    text = run_cli("diff-keys", a, b, "--values").stdout
    tensors = text[text.index("Values:"):text.index("Layers changed most")]
    assert tensors.index("enc.1.weight") < tensors.index("enc.2.weight") < tensors.index("enc.3.bias")
    table = text[text.index("Layers changed most"):]
    assert "max |A−B|" in table
    rows = [line for line in table.splitlines() if "enc." in line]
    assert [row.split()[1] for row in rows] == ["enc.1", "enc.2", "enc.3", "enc.0"]
    assert "inf" in rows[2] and "1e-06" in rows[2]


def test_change_rank_puts_nan_first_and_infinite_changes_after_the_finite_ones() -> None:
    import math

    from weightdoctor.diff_keys import change_rank

    rows = [(0.0, 0.0), (math.inf, 1e-6), (0.5, 0.2), (math.nan, math.nan), (math.inf, 0.3), (0.01, 0.1)]
    ranked = sorted(rows, key=lambda row: change_rank(*row))
    assert math.isnan(ranked[0][0])
    assert ranked[1:] == [(0.5, 0.2), (0.01, 0.1), (math.inf, 0.3), (math.inf, 1e-6), (0.0, 0.0)]
