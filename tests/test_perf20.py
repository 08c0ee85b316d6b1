"""Round 20 of speed work on diff-keys (the DDP path): each shortcut gives exactly what the plain code gave.

- The Chroma-against-Flux check (`_chroma_against_flux`) tests each side's joined names for
  `distilled_guidance_layer.` before it matches each name against its pattern: a 10k-key DDP diff matched all
  20,000 names and found none. Held to the per-name match on names with the word at their start, after a prefix,
  inside, without its dot and nowhere; and the whole diff-keys report (--json and the Rich text) with the plain
  check swapped in, on DDP, Chroma against Flux (both ways) and a prefixed Chroma.

Nothing here is timed: benchmarks/bench_diff_keys.py and docs/bench-diff-keys.md.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from tests.helpers import run_cli
from weightdoctor import diff_keys

_WORDS = ["distilled_guidance_layer.in_proj.weight", "model.diffusion_model.distilled_guidance_layer.out_proj.weight",
          "module.distilled_guidance_layer.in_proj.weight", "distilled_guidance_layer", "xdistilled_guidance_layer.a",
          "guidance_in.in_layer.weight", "time_in.in_layer.weight", "double_blocks.0.img_mod.lin.weight",
          "final_layer.adaLN_modulation.1.weight", "double_blocks.0.img_attn.qkv.weight", "model.layers.0.q.weight",
          "a\ndistilled_guidance_layer.b", "distilled_guidance_layer\n.x", "."]


def _reference(unexpected: Sequence[str], missing: Sequence[str]) -> Any:
    """What matching every name finds: the Chroma side's names, Flux's modulation names and the Chroma side."""
    real = diff_keys._CHROMA_APPROXIMATOR
    chroma_a = [name for name in unexpected if real.match(name)]
    chroma_b = [name for name in missing if real.match(name)]
    if bool(chroma_a) == bool(chroma_b):
        return None
    flux = [name for name in (missing if chroma_a else unexpected) if diff_keys._FLUX_MODULATION.search(name)]
    if not flux:
        return None
    return sorted(chroma_a or chroma_b), sorted(flux), "A" if chroma_a else "B"


def _summary(result: Any) -> Any:
    if result is None:
        return None
    whys, note = result
    chroma = sorted(name for name, why in whys.items() if why[2].startswith("Chroma's"))
    flux = sorted(name for name, why in whys.items() if why[2].startswith("Flux's"))
    return chroma, flux, note[0]


def test_the_substring_test_gives_what_matching_every_name_gives() -> None:
    """Seeded random sides from names with distilled_guidance_layer. at the start, after model.diffusion_model.,
    after module. (DDP's, matched since fixlist26), inside another word, without its dot, across a newline, and
    Flux's modulation."""
    rng = random.Random(20)
    seen_some = seen_none = 0
    for _ in range(3000):
        unexpected = rng.sample(_WORDS, rng.randint(0, 5))
        missing = rng.sample(_WORDS, rng.randint(0, 5))
        expected = _reference(unexpected, missing)
        assert _summary(diff_keys._chroma_against_flux(unexpected, missing)) == expected, (unexpected, missing)
        seen_some += expected is not None
        seen_none += expected is None
    assert seen_some > 100 and seen_none > 100


def test_no_name_is_matched_when_none_holds_the_word(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DDP-like diff (no distilled_guidance_layer. anywhere) matches no name against the pattern; it matched
    every unexpected and missing name before (20,000 on the 10k-key pair)."""
    calls: list[str] = []
    real = diff_keys._CHROMA_APPROXIMATOR

    class Counting:
        def match(self, name: str) -> Any:
            calls.append(name)
            return real.match(name)

    monkeypatch.setattr(diff_keys, "_CHROMA_APPROXIMATOR", Counting())
    names = [f"model.layers.{i}.self_attn.q_proj.weight" for i in range(50)]
    assert diff_keys._chroma_against_flux(["module." + n for n in names], names) is None
    assert calls == []
    # A side that holds the word is still matched name by name (and found).
    result = diff_keys._chroma_against_flux(["distilled_guidance_layer.in_proj.weight"],
                                            ["guidance_in.in_layer.weight"])
    assert result is not None and "A is Chroma (Flux-derived) and B Flux" in result[1]
    assert calls == ["distilled_guidance_layer.in_proj.weight"]


def _save(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    torch.manual_seed(20)
    save_file({name: torch.randn(shape).half() for name, shape in shapes.items()}, str(path))
    return path


_BASE = {**{f"model.layers.{i}.self_attn.{m}.weight": (8, 8) for i in range(3) for m in ("q_proj", "v_proj")},
         "model.embed_tokens.weight": (16, 8), "lm_head.weight": (16, 8)}
_CHROMA = {"distilled_guidance_layer.in_proj.weight": (8, 16),
           "distilled_guidance_layer.layers.0.in_layer.weight": (8, 8),
           "double_blocks.0.img_attn.qkv.weight": (24, 8), "img_in.weight": (8, 64)}
_FLUX = {"guidance_in.in_layer.weight": (8, 16), "time_in.in_layer.weight": (8, 16),
         "double_blocks.0.img_mod.lin.weight": (48, 8), "double_blocks.0.img_attn.qkv.weight": (24, 8),
         "img_in.weight": (8, 64)}


@pytest.mark.parametrize("pair", ["ddp", "ddp-reversed", "chroma-flux", "flux-chroma", "prefixed-chroma-flux",
                                  "shape"])
def test_diff_keys_reports_equal_the_plain_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pair: str) -> None:
    """The whole report, --json and the Rich text at 100 columns, with the plain per-name check swapped in."""
    base = _save(tmp_path / "base.safetensors", _BASE)
    ddp = _save(tmp_path / "ddp.safetensors", {"module." + n: s for n, s in _BASE.items()})
    chroma = _save(tmp_path / "chroma.safetensors", _CHROMA)
    flux = _save(tmp_path / "flux.safetensors", _FLUX)
    prefixed = _save(tmp_path / "prefixed.safetensors", {"model.diffusion_model." + n: s for n, s in _CHROMA.items()})
    shape = _save(tmp_path / "shape.safetensors", {n: ((9, 8) if "q_proj" in n else s) for n, s in _BASE.items()})
    a, b = {"ddp": (ddp, base), "ddp-reversed": (base, ddp), "chroma-flux": (chroma, flux),
            "flux-chroma": (flux, chroma), "prefixed-chroma-flux": (prefixed, flux), "shape": (shape, base)}[pair]
    runner = CliRunner(env={"COLUMNS": "100"})
    fast = [run_cli("diff-keys", a, b, *extra, runner=runner) for extra in ((), ("--json",))]
    real_match = diff_keys._CHROMA_APPROXIMATOR

    def plain(unexpected: Sequence[str], missing: Sequence[str]) -> Any:
        # The pre-shortcut body: every name matched, whatever the joined names hold. Where one side matched, its
        # joined names hold the word, so the rest of the real function runs as it did.
        chroma_a = [name for name in unexpected if real_match.match(name)]
        chroma_b = [name for name in missing if real_match.match(name)]
        if bool(chroma_a) == bool(chroma_b):
            return None
        return original(unexpected, missing)

    original = diff_keys._chroma_against_flux
    monkeypatch.setattr(diff_keys, "_chroma_against_flux", plain)
    slow = [run_cli("diff-keys", a, b, *extra, runner=runner) for extra in ((), ("--json",))]
    for got, want in zip(fast, slow, strict=True):
        assert (got.exit_code, got.stdout, got.stderr) == (want.exit_code, want.stdout, want.stderr)
    assert fast[0].exit_code == 1
    if "chroma" in pair and not pair.startswith("prefixed"):
        assert "Chroma (Flux-derived)" in fast[1].stdout
    if pair == "ddp":
        assert '"module."' in fast[1].stdout or "module." in fast[0].stdout
