"""memory6: many small tensors. `--json` reports were written as one joined text beside the pieces it was joined
from and the bytes stdout encoded it to: check-dtype --json of 40,000 tensors of 64 float32 values raised the peak
resident set by 216 MiB (measured), 99 MiB once the text goes out about 1 MiB at a time. The peak is measured in a
child process, as tests/test_memory5.py does; the text written is held to `write_json_text(dumps(value))`."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import peak_rise_mib
from weightdoctor.render import json as json_render


def test_check_dtype_json_of_many_small_tensors_does_not_hold_the_whole_text(tmp_path: Path) -> None:
    """40,000 float32 tensors of 64 values: 216 MiB before (the pieces, the joined text and its encoded bytes
    alive together), 99 MiB after; the bound leaves more than 40 MiB either side."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(6)
    save_file({f"layer.{i}.weight": torch.randn(64, generator=generator) for i in range(40_000)},
              str(tmp_path / "many.safetensors"))
    rise, stdout = peak_rise_mib("check-dtype", tmp_path / "many.safetensors", "--json")
    report = json.loads(stdout)
    assert report["tensors_checked"] == 40_000
    assert len(report["tensor_dtypes"]) == 40_000 and "layer.39999.weight" in report["tensor_dtypes"]
    assert rise < 157, rise


class _Str(str):
    """A str subclass: `dumps` leaves such values to the reference encoder."""


_VALUES: list[Any] = [
    {"name": "plain", "rows": [{"i": i, "x": i / 7, "s": "±"} for i in range(500)]},
    {"names": ["mod\u00e8l", "e\x9b31m", "bad\udce9byte", "\U0001f600", "x" * 300], "nan": float("nan"),
     "nested": {"a": [1, [2, {"b": None}]], "c": True}},
    {"sub": _Str("kept"), "n": 1},
    [],
    "text",
]


@pytest.mark.parametrize("encoding", ["utf-8", "UTF8", "latin-1", "ascii"])
@pytest.mark.parametrize("value", _VALUES)
def test_print_json_writes_the_text_write_json_text_of_dumps_writes(
        value: Any, encoding: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Written in chunks of a few characters (so that each escape, non-ASCII character and piece falls across
    chunk boundaries), the bytes on stdout are those of the whole text, in each encoding."""

    def written(write: Any) -> bytes:
        buffer = io.BytesIO()
        stream = io.TextIOWrapper(buffer, encoding=encoding, errors="backslashreplace", newline="\n")
        real, sys.stdout = sys.stdout, stream
        try:
            write()
        finally:
            sys.stdout = real
        stream.flush()
        return buffer.getvalue()

    monkeypatch.setattr(json_render, "_CHUNK_CHARS", 7)
    expected = written(lambda: json_render.write_json_text(json_render.dumps(value)))
    assert written(lambda: json_render.print_json(value)) == expected
    assert expected.endswith(b"\n")
