"""Review of perf12, thirdparty15 and redteam16: what their changes must keep (the hf:// query regex against the one
it replaced) and the cases they lost, each failing before its fix."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch

from tests.helpers import run_json

# The regex redteam16 replaced: its `(&name=value)*` group only repeated what `[^/?]*` already takes.
_OLD_QUERY_AT_END = re.compile(r"\?[A-Za-z_][\w.-]*=[^/?]*(?:&[A-Za-z_][\w.-]*=[^/?]*)*\Z")


@pytest.mark.parametrize("seed", range(4))
def test_the_rewritten_query_regex_matches_exactly_where_the_old_one_did(seed: int) -> None:
    """Generated paths over the characters either regex tells apart (`?`, `=`, `&`, `/`, word and other characters,
    a newline): the same match, at the same place, by search, match and fullmatch."""
    from weightdoctor.checkpoint.hub import _QUERY_AT_END

    rng = random.Random(seed)
    alphabet = "?=&/a_Z1.-é \n"
    texts = ["", "model.bin?download=true", "a/b?x=1&y=2", "a?1=2", "a?x=1/b", "?x=&y=?"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 12))) for _ in range(20_000)]
    matched = 0
    for text in texts:
        for how in ("search", "match", "fullmatch"):
            old, new = getattr(_OLD_QUERY_AT_END, how)(text), getattr(_QUERY_AT_END, how)(text)
            assert (old and old.span()) == (new and new.span()), (text, how)
            matched += old is not None
    assert matched > 100  # the generated texts reach the accepting side too


def test_a_core_ml_package_beside_thousands_of_folders_is_still_named(tmp_path: Path) -> None:
    """redteam16 bounded the look into subfolders to the first 1,000 and the exports' usual folders (onnx/, coreml/,
    ...): a Core ML package at the top of the folder (model.mlpackage/), named with 10 folders beside it, went
    unnamed with 1,200 (`class_*` sort before it)."""
    from safetensors.torch import save_file

    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"a.weight": torch.zeros(2, 2)}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    for i in range(1200):
        (folder / f"class_{i:05d}").mkdir()
    package = folder / "model.mlpackage"
    (package / "Data" / "com.apple.CoreML").mkdir(parents=True)
    (package / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"\x08\x04")
    (package / "Manifest.json").write_text("{}")
    code, report = run_json("inspect", str(folder))
    assert code == 0 and [t["name"] for t in report["tensors"]] == ["a.weight"]
    said = [w for w in report["warnings"] if w.startswith("not read")]
    assert said and "model.mlpackage/ (Core ML)" in said[0], report["warnings"]
