"""The rename syntax shared by diff-keys and convert."""

from __future__ import annotations

import pytest

from weightdoctor.errors import UsageError
from weightdoctor.renames import add_prefix, apply_renames, parse_rename, python_snippet, strip_prefix


def test_parse_and_apply() -> None:
    rename = parse_rename(r"module\.=")
    assert rename.apply("module.encoder.weight") == "encoder.weight"
    assert parse_rename(r"^=bert.").apply("encoder.x") == "bert.encoder.x"
    assert parse_rename(r"a\=b=c").pattern == "a=b"
    assert rename.as_flag() == "--rename 'module\\.='"


def test_prefix_helpers_and_collisions() -> None:
    mapping = apply_renames(["_orig_mod.a", "_orig_mod.b"], [strip_prefix("_orig_mod."), add_prefix("model.")])
    assert mapping == {"_orig_mod.a": "model.a", "_orig_mod.b": "model.b"}
    with pytest.raises(UsageError, match="both"):
        apply_renames(["module.a", "a"], [strip_prefix("module.")])


def test_bad_specs() -> None:
    for spec in ["noequals", "=x", "(unclosed=x"]:
        with pytest.raises(UsageError):
            parse_rename(spec)


def test_snippet_runs() -> None:
    code = python_snippet([strip_prefix("module."), parse_rename(r"\.gamma$=.weight")])
    namespace: dict = {"state_dict": {"module.ln.gamma": 1, "module.x": 2}}
    exec(code, namespace)
    assert namespace["state_dict"] == {"ln.weight": 1, "x": 2}


@pytest.mark.parametrize("spec", [r"a\==b", r"(?\=x)y=z", r"a\\\==c=d", r"^module\.=", "^=model."])
def test_as_flag_parses_back_to_the_same_rename(spec: str) -> None:
    """A `=` in the regex (typed `\\=`) went back unescaped: `(?=x)y=z` parsed as the regex `(?` (an error)."""
    import shlex

    rename = parse_rename(spec)
    assert parse_rename(shlex.split(rename.as_flag())[1]) == rename
