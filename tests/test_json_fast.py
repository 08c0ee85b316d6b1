"""`render.json.dumps` writes exactly what the reference (`json.dumps(to_jsonable(value), indent=2)`) writes,
and `to_jsonable` returns what its plain chain of checks returned.

The fast encoder walks dataclasses directly and lets the C encoder write flat rows; these tests hold its text to
the reference's on generated values (every kind `to_jsonable` handles) and on every command's real `--json`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from weightdoctor.cli import app
from weightdoctor.render import json as render_json


class Colour(enum.Enum):
    RED = "red"
    PAIR = (1, 2)


class Level(enum.IntEnum):
    LOW = 1


class Odd(float, enum.Enum):
    """Enums whose values are non-finite floats: to_jsonable hands them on as they are, and json.dumps writes NaN."""

    NAN = math.nan
    INF = math.inf


class Tag(str):
    """A str subclass: json writes it as a string; the fast encoder leaves it to the reference."""


@dataclass
class Row:
    name: str
    count: int
    share: float
    flag: bool | None


@dataclass
class Nested:
    rows: list[Any]
    extra: Any = None
    _private: str = "hidden"
    skipped: int = field(default=7, metadata={"json": False})


FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, -0.0, 1e300, 5e-324, math.inf, -math.inf, math.nan]))
TEXT = st.one_of(st.text(), st.sampled_from(['"quote"', "back\\slash", "ctl\x01\x1f", "±65504 → inf", "\ud800x",
                                             "😀", "%s %d", ""]))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), FLOATS, TEXT,
                    st.sampled_from([Colour.RED, Colour.PAIR, Level.LOW, Odd.NAN, Odd.INF, Tag("sub"), Path("/a/b c"),
                                     torch.tensor(1.5), torch.tensor(float("nan")), torch.tensor(True)]))
KEYS = st.one_of(TEXT, st.integers(-3, 3), st.booleans(), st.none(), st.sampled_from([Colour.RED, Level.LOW]))


def _values(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.frozensets(st.integers(), max_size=4),
        st.sets(st.text(max_size=3), max_size=4),
        st.dictionaries(KEYS, children, max_size=4),
        st.builds(Row, TEXT, st.integers(), FLOATS, st.one_of(st.none(), st.booleans())),
        st.builds(Nested, st.lists(children, max_size=3), children),
    )


VALUES = st.recursive(SCALARS, _values, max_leaves=30)


def plain_to_jsonable(value: Any) -> Any:
    """`to_jsonable` as it was written first: one chain of checks for every value (the oracle)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: plain_to_jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.name.startswith("_") and f.metadata.get("json", True)
        }
    if isinstance(value, dict):
        return {str(k): plain_to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [plain_to_jsonable(v) for v in items]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if hasattr(value, "item") and callable(value.item):
        return plain_to_jsonable(value.item())
    return value


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_to_jsonable_returns_what_the_plain_checks_return(value: Any) -> None:
    # repr tells True from 1 and 1.0 from 1, and shows the order of keys.
    assert repr(render_json.to_jsonable(value)) == repr(plain_to_jsonable(value))


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_the_fast_encoder_writes_the_reference_text(value: Any) -> None:
    assert render_json.dumps(value) == render_json.dumps_reference(value)


def test_values_json_cannot_write_fail_alike() -> None:
    for value in ({"a": object()}, Row("x", 1, 0.5, None).__class__, [Colour.PAIR, {1, "a"}]):
        with pytest.raises(TypeError):
            render_json.dumps_reference(value)
        with pytest.raises(TypeError):
            render_json.dumps(value)


def test_an_enum_of_nan_is_written_as_the_reference_writes_it() -> None:
    for value in ([Odd.NAN, 1], {"a": Odd.INF}, Odd.NAN):
        assert render_json.dumps(value) == render_json.dumps_reference(value)
    assert "NaN" in render_json.dumps([Odd.NAN])


def test_flat_rows_with_infinities_are_written_as_strings() -> None:
    rows = [Row("a", 1, math.inf, True), Row("b", 2, math.nan, None), Row("c", 3, -0.0, False)]
    text = render_json.dumps({"rows": rows})
    assert text == render_json.dumps_reference({"rows": rows})
    assert '"share": "inf"' in text and '"share": "nan"' in text and '"share": -0.0' in text


@pytest.fixture
def both_encoders(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every text the commands build with the fast encoder (`dumps`, and `print_json`, which writes the same pieces
    a chunk at a time, held to `dumps` in tests/test_memory6.py) also runs the reference; the texts must be equal.
    (diff-keys writes its long lists with row templates of its own, held to the reference in
    tests/test_diff_keys_fast_paths.py.)"""
    fast, sizes = render_json._pieces, []

    def checked(value: Any) -> list[str] | None:
        pieces = fast(value)
        if pieces is None:  # the reference path itself
            return None
        text = render_json.valid_text("".join(pieces))
        assert text == render_json.dumps_reference(value)
        sizes.append(len(text))
        return pieces

    monkeypatch.setattr(render_json, "_pieces", checked)
    return sizes


def test_every_commands_json_is_the_reference_text(fx: dict[str, Path], tmp_path: Path, both_encoders: list[int],
                                                   runner: CliRunner) -> None:
    bert, gpt2 = fx["bert"], fx["gpt2"]
    runs = [
        ["inspect", str(bert), "--json"],
        ["inspect", str(fx["gpt2-bin"]), "--json", "--stats"],
        ["inspect", str(fx["files"] / "training.pt"), "--json"],
        ["check-dtype", str(gpt2), "--json"],
        ["check-dtype", str(bert), "--json", "--target", "bf16,fp8_e4m3"],
        ["plan-devices", str(bert), "--gpu", "1MB", "--cpu", "1GB", "--json"],
        ["convert", str(fx["files"] / "bert.bin"), "-o", str(tmp_path / "c.safetensors"), "--json"],
        ["shard", str(bert), "--max", "100KB", "-o", str(tmp_path / "sharded"), "--json"],
    ]
    for args in runs:
        result = runner.invoke(app, args)
        assert result.exit_code in (0, 1), (args, result.output)
        assert result.stdout.lstrip().startswith("{"), args
    assert len(both_encoders) == len(runs) and min(both_encoders) > 200
