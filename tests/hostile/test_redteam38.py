"""Red team 38: hostile and broken files that earlier rounds left aside.

What held (measured, not all pinned here): an index whose weight_map names an absolute path or a URL (refused in one
line naming the index: outside its folder, or a URL with the hint that an index names files beside it); a config.json
that is a JSON array, `null` or a string (refused: not a JSON object) or nested 50,000 deep (refused: nested too deeply);
a config.json with a key given twice (read as json.loads and transformers read it: the last wins); a torch.save of
pickle protocol 1 (read), of protocol 0 (zip or legacy: refused in one line saying torch.load refuses it too); a sparse
file of 1 TB apparent size named .safetensors or .bin (refused at its first bytes, nothing read past them); a folder of
3,000 other files beside model.safetensors (read); /proc/self/status (empty to stat: refused as empty) and
/proc/self/mem (refused: cannot read).
The seeded fuzzer (`scripts/mutation_fuzz.py --formats all --structured --seed 38`): see the report.

What did not, each fixed here:
1. Two keys that differ only by Unicode normalisation (`café.weight` NFC beside `cafe\\u0301.weight` NFD), or by a
   no-break space or a soft hyphen, showed as the same name in inspect's table and module tree and in diff-keys'
   tables: load_state_dict tells them apart, the reader could not. A name not in NFC now shows its combining marks as
   escapes (`cafe\\u0301.weight`); the no-break and other non-ASCII spaces, the soft hyphen and the other characters a
   terminal draws as nothing are escaped like the zero-width ones were.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.helpers import run_cli

# --- 1. names that show as another name ---------------------------------------------------------------------------

CAFE_NFC = unicodedata.normalize("NFC", "café.weight")
CAFE_NFD = unicodedata.normalize("NFD", "café.weight")


def _table_names(stdout: str) -> list[str]:
    """The first cell of each row of the report's tables (the text between the first two `│`)."""
    return [line.split("│")[1].strip() for line in stdout.splitlines() if line.count("│") >= 3]


def test_keys_differing_only_by_unicode_form_or_an_invisible_character_show_apart(tmp_path: Path) -> None:
    path = tmp_path / "names.safetensors"
    names = [CAFE_NFC, CAFE_NFD, "c d.weight", "c\u00a0d.weight", "ab.weight", "a\u00adb.weight",
             "e f.weight", "e\u3000f.weight"]
    save_file({name: torch.full((i + 1,), float(i)) for i, name in enumerate(names)}, str(path))
    result = run_cli("inspect", path)
    assert result.exit_code == 0, result.stderr
    shown = [name for name in _table_names(result.stdout) if name.endswith(".weight")]
    assert len(shown) == len(names) and len(set(shown)) == len(names), shown
    assert {"café.weight", "cafe\\u0301.weight", "c d.weight", "c\\xa0d.weight", "ab.weight", "a\\xadb.weight",
            "e\\u3000f.weight"} <= set(shown)
    tree = [line for line in result.stdout.splitlines() if line.startswith(("├──", "└──"))]
    assert any("── café " in line for line in tree) and any("── cafe\\u0301 " in line for line in tree), tree
    # --json keeps each name as it is.
    data = json.loads(run_cli("inspect", path, "--json").stdout)
    assert {t["name"] for t in data["tensors"]} == set(names)


def test_diff_keys_shows_a_key_in_another_unicode_form_as_that_key(tmp_path: Path) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({CAFE_NFD: torch.ones(2), "x.weight": torch.ones(1)}, str(a))
    save_file({CAFE_NFC: torch.ones(2), "x.weight": torch.ones(1)}, str(b))
    result = run_cli("diff-keys", a, b)
    assert result.exit_code in (0, 1), result.stderr
    lines = result.stdout.splitlines()
    missing_at = next(i for i, line in enumerate(lines) if line.startswith("Missing"))
    unexpected_at = next(i for i, line in enumerate(lines) if line.startswith("Unexpected"))
    assert missing_at < unexpected_at
    # B's key is missing from A and A's is unexpected: the two rows must not read as the same name.
    assert _table_names("\n".join(lines[missing_at:unexpected_at])) == ["café.weight"]
    assert _table_names("\n".join(lines[unexpected_at:]))[:1] == ["cafe\\u0301.weight"]
    # The flag is printed as it is (it works copied), said to differ unseen; the snippet is exact Python.
    fix_at = next(i for i, line in enumerate(lines) if line.startswith("suggested fix"))
    assert lines[fix_at + 1] == f"--rename '^{CAFE_NFD[:-7]}\\.={CAFE_NFC[:-6]}'"
    assert lines[fix_at + 2].startswith("its two sides differ in Unicode form")
    snippet_line = next(line for line in lines if "re.sub(" in line)
    assert "'^cafe\\u0301\\\\.'" in snippet_line, snippet_line
    renamed = eval(snippet_line.split("key = ", 1)[1], {"re": __import__("re"), "key": CAFE_NFD})  # noqa: S307
    assert renamed == CAFE_NFC


def test_names_in_nfc_in_any_script_are_shown_as_written(tmp_path: Path) -> None:
    path = tmp_path / "scripts.safetensors"
    # Devanagari keeps combining marks in NFC; Hangul syllables and accented Latin are composed.
    names = [unicodedata.normalize("NFC", n) for n in ("नमस्ते.weight", "한국어.weight", "élève.bias")]
    save_file({name: torch.ones(1) for name in names}, str(path))
    result = run_cli("inspect", path)
    assert result.exit_code == 0, result.stderr
    assert set(names) <= set(_table_names(result.stdout)) and "\\u" not in result.stdout
