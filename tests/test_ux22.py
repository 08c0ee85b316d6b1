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
