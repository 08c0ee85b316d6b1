"""Round 21 of speed work (today's merges: redteam31's header bounds, fixlist26's adapter checks): each shortcut gives
exactly what the plain code gave.

- `diff_checkpoints` imported `weightdoctor.structure` on every diff (for `peft_adapter_config`, called only for a
  MiSS, SHiRA or RoAd adapter): a module the headers-only path never imported, 3-7 ms of every fresh diff-keys. It
  is imported when the config is asked for.
- The safetensors header's bound on JSON strings counted the escaped quotes (a two-byte search over the whole text)
  on every header longer than 2.8 MB, where the quotes alone were within the bound; the bound on values and members
  counted the `{` the bound on tensors had just counted. Held here to the plain checks, verdicts and messages, on
  headers under, at and past each bound.

Nothing here is timed: benchmarks/bench_diff_keys.py and docs/bench-diff-keys.md.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from tests.helpers import run_cli
from weightdoctor import diff_keys
from weightdoctor.checkpoint import safetensors_format
from weightdoctor.errors import CorruptCheckpoint
from weightdoctor.jsontext import TooManyEntries, refuse_too_many_entries

ROOT = Path(__file__).resolve().parent.parent


def _plain_verdict(raw: bytes) -> str | None:
    """The three bounds checked before the parse, as 4503706 checked them (every count over the whole text): the
    message of the first refusal, or None."""
    limit = safetensors_format.MAX_TENSORS
    braces = raw.count(b"{") if len(raw) > limit + 2 else 0
    if braces > limit + 2:
        return f"header holds {braces - 1:,} JSON objects"
    strings_limit = safetensors_format._MAX_STRINGS
    if len(raw) > 2 * strings_limit:
        strings = (raw.count(b'"') - raw.count(b'\\"')) // 2
        if strings > strings_limit:
            return f"header holds {strings:,} JSON strings"
    entries_limit = safetensors_format._MAX_HEADER_ENTRIES
    if len(raw) > entries_limit:
        count = 1 + raw.count(b",") + raw.count(b"[") + raw.count(b"{")
        if count > entries_limit:
            return f"header: it holds up to {count:,} JSON values and members"
    return None


def _header(tensors: int, metadata: dict[str, str], dims: int = 1) -> bytes:
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    for i in range(tensors):
        header[f"t{i}"] = {"dtype": "F32", "shape": [1] * dims, "data_offsets": [4 * i, 4 * i + 4]}
    text = json.dumps(header, separators=(",", ":")).encode()
    return text + b" " * (-len(text) % 8)


def _headers() -> dict[str, tuple[bytes, int]]:
    """(raw header, data size) under, at and past each bound; each longer than 2.8 MB but the first."""
    strings = safetensors_format._MAX_STRINGS
    many_quotes = json.dumps(["x"] * (strings + 10))  # escaped inside a value: 2.8 M quotes, none a string
    return {
        "small": (_header(3, {"format": "pt"}), 12),
        "50,000 tensors": (_header(50_000, {"format": "pt"}), 200_000),
        "escaped quotes past the bound": (_header(1, {"format": "pt", "embedded": many_quotes}), 4),
        "strings at the bound": (_header(0, {f"{i:x}": "" for i in range((strings - 1) // 2)}), 0),
        "strings past the bound": (_header(0, {f"{i:x}": "" for i in range((strings + 1) // 2)}), 0),
        "values past the bound": (_header(1, {}, dims=safetensors_format._MAX_HEADER_ENTRIES), 4),
        "values at the bound": (_header(1, {}, dims=safetensors_format._MAX_HEADER_ENTRIES - 8), 4),
        "objects past the bound": (b"{" + b"{}," * 200_003 + b"}", 0),
        "strings and values past the bounds": (b'{"a":[' + b'"",' * 3_000_000 + b"]}", 0),
    }


@pytest.mark.parametrize("name", list(_headers()))
def test_the_header_bounds_give_the_plain_verdicts(name: str) -> None:
    """Each header refused by the same bound, in the same words and figures, or read, as the plain counts said."""
    raw, data_size = _headers()[name]
    expected = _plain_verdict(raw)
    try:
        safetensors_format._parse_header(raw, "x.safetensors", data_size)
    except CorruptCheckpoint as exc:
        got: str | None = str(exc)
    else:
        got = None
    if expected is None:
        assert got is None or "JSON" not in got, got  # read, or refused after the parse (not by these bounds)
    else:
        assert got is not None and got.startswith(expected), (got, expected)
    assert (expected is None) == (name in ("small", "50,000 tensors", "escaped quotes past the bound",
                                           "strings at the bound", "values at the bound"))


class _Counting(bytes):
    """A header that records the patterns counted in it."""

    counted: list[bytes]

    def count(self, sub: Any, *args: Any) -> int:  # type: ignore[override]
        self.counted.append(bytes(sub))
        return super().count(sub, *args)


def test_a_header_within_the_bounds_counts_each_byte_once_and_no_escaped_quotes() -> None:
    """A 3.5 MB header of 50,000 tensors: `{` counted once (it was twice), the escaped quotes not at all (the quotes
    alone are within the bound of strings)."""
    raw = _Counting(_headers()["50,000 tensors"][0])
    raw.counted = []
    metadata, tensors = safetensors_format._parse_header(raw, "x.safetensors", 200_000)
    assert len(tensors) == 50_000 and len(raw) > safetensors_format._MAX_HEADER_ENTRIES and metadata == {"format": "pt"}
    # The bounds' counts, before the parse (the checks after it count ":" in names).
    assert raw.counted[:4] == [b"{", b'"', b",", b"["], raw.counted
    assert raw.counted.count(b"{") == 1 and b'\\"' not in raw.counted, raw.counted


def test_the_entry_bound_given_the_braces_equals_counting_them() -> None:
    """`refuse_too_many_entries` with `curly` given refuses exactly what it refuses counting the `{` itself, in the
    same words, on seeded random texts (str and bytes) around their limits."""
    rng = random.Random(21)
    refused = passed = 0
    for _ in range(2000):
        text = "".join(rng.choice('{}[],"a: ') for _ in range(rng.randint(0, 60)))
        limit = rng.randint(0, 40)
        for value in (text, text.encode()):
            outcomes = []
            for curly in (None, value.count("{" if isinstance(value, str) else b"{")):  # type: ignore[arg-type]
                try:
                    refuse_too_many_entries(value, limit, curly=curly)
                    outcomes.append(None)
                except TooManyEntries as exc:
                    outcomes.append(str(exc))
            assert outcomes[0] == outcomes[1], (value, limit, outcomes)
            refused += outcomes[0] is not None
            passed += outcomes[0] is None
    assert refused > 100 and passed > 100


def _save(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    torch.manual_seed(21)
    save_file({name: torch.randn(shape) for name, shape in shapes.items()}, str(path))
    return path


_BASE = {**{f"model.layers.{i}.{m}.weight": (8, 8) for i in range(2) for m in ("q", "v")}, "lm_head.weight": (16, 8)}


def test_a_diff_imports_no_inspect_module(tmp_path: Path) -> None:
    """A DDP pair, diffed in a fresh interpreter, leaves `weightdoctor.structure` unimported (it was imported on
    every diff, for a MiSS / SHiRA / RoAd adapter's config), and still finds the DDP prefix."""
    base = _save(tmp_path / "base.safetensors", _BASE)
    ddp = _save(tmp_path / "ddp.safetensors", {"module." + n: s for n, s in _BASE.items()})
    code = ("import contextlib, io, sys\n"
            "from weightdoctor.cli import app\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
            f"    app(['diff-keys', {str(ddp)!r}, {str(base)!r}, '--json'])\n"
            "print('weightdoctor.structure' in sys.modules, '\"wrapper-prefix\"' in out.getvalue())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"], done.stdout


class _Mlp(torch.nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.q = torch.nn.Linear(hidden, hidden)
        self.up = torch.nn.Linear(hidden, 2 * hidden)


def test_a_miss_adapter_reads_its_config_as_the_eager_call_did(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A MiSS "mini" adapter (r × mini_r blocks, which only adapter_config.json tells from r × out) against a wider
    base: the report, --json and the Rich text at 100 columns, equals the one made with the config read up front as
    before, and says the blocks fit (the config was read)."""
    import peft

    torch.manual_seed(21)
    made_for = _Mlp(32)
    wider = _Mlp(48)
    save_file({k: v.contiguous() for k, v in wider.state_dict().items()}, str(tmp_path / "wider.safetensors"))
    model = peft.get_peft_model(made_for, peft.MissConfig(r=4, init_weights="mini", mini_r=4,
                                                          target_modules=["q", "up"]))
    model.save_pretrained(str(tmp_path / "adapter"))
    args = (tmp_path / "adapter", tmp_path / "wider.safetensors")
    runner = CliRunner(env={"COLUMNS": "100"})
    lazy = [run_cli("diff-keys", *args, *extra, runner=runner) for extra in ((), ("--json",))]

    from weightdoctor.structure import peft_adapter_config

    original = diff_keys.diff_specs

    def eager(*positional: Any, **named: Any) -> Any:
        # As 4503706 passed it: `lambda: peft_adapter_config(a)`, the checkpoint A (whose source is args[0]).
        asked = named["adapter_config_a"]()
        assert asked == peft_adapter_config_of_a(), asked
        named["adapter_config_a"] = lambda: asked
        return original(*positional, **named)

    def peft_adapter_config_of_a() -> Any:
        from weightdoctor.checkpoint import open_checkpoint

        with open_checkpoint(args[0]) as checkpoint:
            return peft_adapter_config(checkpoint)

    monkeypatch.setattr(diff_keys, "diff_specs", eager)
    plain = [run_cli("diff-keys", *args, *extra, runner=runner) for extra in ((), ("--json",))]
    for got, want in zip(lazy, plain, strict=True):
        assert (got.exit_code, got.stdout, got.stderr) == (want.exit_code, want.stdout, want.stderr)
    data = json.loads(lazy[1].stdout)
    assert lazy[1].exit_code == 0 and data["worst_severity"] == "info"
    assert any("2 of them in B with shapes that fit;" in note for note in data["notes"]), data["notes"]
    assert peft_adapter_config_of_a()["init_weights"] == "mini"
