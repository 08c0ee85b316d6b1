"""review18: false refusals in redteam12's user-regex bound and the lead's refusal of repeated options.

Mistakes covered:
- `convert -o out --metadata --output=x` was refused as --output given twice: Click gives --metadata the next token
  whatever it looks like, but the repeated-option check skipped the values of repeatable options, so it read
  `--output=x` as a second --output (diff-keys `--rename '--fail-on=x' --fail-on error` the same).
- `inspect x --filter a --filter b --help` was refused instead of showing the help Click shows before any value.
- `shard x -o a -ob` (-o with its value attached) was not seen as --output given twice: Click kept b without a word.
- `--filter '(encoder|decoder)?\\.?(layer|block)s?\\.?\\d*...'`, optional parts at the end of a pattern, were refused
  as thousands of ways through: re.search stops at the first way, so parts that cannot fail at the end are tried once.
- a .mar whose manifest is encrypted or its deflate stream damaged ended inspect with "unexpected RuntimeError" /
  "unexpected error: Error -3 while decompressing data" instead of saying it is a TorchServe archive.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, run_cli, run_json

EXAMPLE = REPO_ROOT / "fixtures" / "example"


def test_a_repeatable_options_value_that_looks_like_a_one_value_option_is_its_value(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, data = run_json("convert", str(EXAMPLE), "-o", str(out), "--metadata", "--output=x", "--dry-run")
    assert code == 0 and data["plan"]["output"] == str(out), data
    assert data["plan"]["metadata"]["--output"] == "x"
    assert not out.exists()
    code, data = run_json("diff-keys", str(EXAMPLE), str(EXAMPLE), "--rename", "--fail-on=x", "--fail-on", "error")
    assert code == 0 and data["renames_applied"] == ["--rename --fail-on=x"], data


@pytest.mark.parametrize("help_option", ["--help", "-h"])
def test_help_is_shown_whatever_option_is_repeated(help_option: str) -> None:
    result = run_cli("inspect", str(EXAMPLE), "--filter", "a", "--filter", "b", help_option)
    assert result.exit_code == 0 and "Usage:" in result.stdout, result.stderr
    assert "given twice" not in result.stderr


def test_a_short_option_with_its_value_attached_counts_as_given(tmp_path: Path) -> None:
    result = run_cli("shard", str(EXAMPLE), "-o", str(tmp_path / "a"), f"-o{tmp_path / 'b'}", "--dry-run")
    assert result.exit_code == 2 and result.stdout == ""
    assert f"--output is given twice ('{tmp_path / 'a'}', then '{tmp_path / 'b'}')" in result.stderr, result.stderr


@pytest.mark.parametrize("pattern", [
    r"(encoder|decoder)?\.?(layer|block)s?\.?\d*\.?(attn|attention)?\.?(q|k|v)?_?(proj)?",
    "(?:a|b)?(?:c|d)?" * 10,
])
def test_optional_parts_at_the_end_of_a_pattern_are_not_counted_as_ways_through(pattern: str) -> None:
    code, everything = run_json("inspect", str(EXAMPLE), "--all")
    code, data = run_json("inspect", str(EXAMPLE), "--all", "--filter", pattern)
    assert code == 0 and data["filter"] == pattern, data
    expected = [t["name"] for t in everything["tensors"] if re.search(pattern, t["name"])]
    assert expected and [t["name"] for t in data["tensors"]] == expected
    # What the refusal guards against stays fast: the pattern over names of 10,000 characters.
    compiled = re.compile(pattern)
    started = time.monotonic()
    for name in ("encoder.layer." * 700, "ac" * 5000, "layers" * 1700):
        compiled.search(name)
    assert time.monotonic() - started < 1.0


def test_optional_parts_followed_by_text_that_can_fail_are_still_refused() -> None:
    from weightdoctor.errors import UsageError
    from weightdoctor.quantized import refuse_unbounded_regex

    for pattern in ("(?:a|b)?(?:c|d)?" * 10 + "x", "a?" * 28 + "a" * 28, "a?" * 20 + "$"):
        with pytest.raises(UsageError, match="ways on one tensor name"):
            refuse_unbounded_regex("--filter", pattern)
    with pytest.raises(UsageError, match="more than one way"):
        refuse_unbounded_regex("--filter", "x((a+)+b)?")  # at the end, but its own backtracking has no bound


def _mar(path: Path, damage: str) -> Path:
    """A TorchServe archive whose manifest is encrypted (the flag zipfile refuses without a password) or whose
    deflate stream is damaged."""
    import json
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"serializedFile": "w.pt", "pad": "x" * 500}}))
        archive.writestr("w.pt", b"x" * 10)
    data = bytearray(path.read_bytes())
    local = data.find(b"PK\x03\x04")
    if damage == "encrypted":
        data[local + 6] |= 1
        data[data.find(b"PK\x01\x02") + 8] |= 1
    else:
        start = local + 30 + int.from_bytes(data[local + 26:local + 28], "little") \
            + int.from_bytes(data[local + 28:local + 30], "little")
        data[start:start + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("damage", ["encrypted", "deflate"])
def test_a_torchserve_archive_whose_manifest_cannot_be_read_is_still_said_to_be_one(tmp_path: Path, damage: str
                                                                                   ) -> None:
    path = _mar(tmp_path / "model.mar", damage)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and result.stdout == ""
    assert "TorchServe model archive" in result.stderr and "unexpected" not in result.stderr, result.stderr
