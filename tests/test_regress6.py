"""regress6: what today's merges (c4750ba..ff99bec) changed that nobody meant to, found by running diff-keys, inspect,
check-dtype and plan-devices of both trees on tiny seeded checkpoints and genuine peft adapters:

- review69's note for a LoRA whose modules B has only under other names (a causal LM's adapter on its backbone) was
  also given for the adapter's own base saved through DDP or torch.compile (`module.` / `_orig_mod.` before every
  key): it said to load the adapter onto 'the model class it was trained on'. B is that model; its keys carry a
  training wrapper's prefix, which the note now names with the convert that strips it.
- ux17's title of the Missing table of an adapter against its base said '(start from their init; adapter-base: from
  the base)' when the only other missing keys were the ones the adapter saves whole (modules_to_save): none of them
  starts from its init.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner, Result

from fixtures.build import build_gpt2
from fixtures.diff_pairs import build_peft_adapter
from tests.helpers import run_cli


def _gpt2_lora_and_wrapped_bases(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    from peft import LoraConfig, get_peft_model

    gpt2 = build_gpt2()
    state_dict = gpt2.state_dict()
    bases = {"module.": tmp_path / "ddp.pt", "_orig_mod.": tmp_path / "compiled.pt"}
    for prefix, path in bases.items():
        torch.save({f"{prefix}{k}": v for k, v in state_dict.items()}, path)
    torch.manual_seed(4)
    adapter = tmp_path / "lora"
    get_peft_model(gpt2, LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True)).save_pretrained(adapter)
    return adapter, bases


def test_a_lora_against_its_base_saved_through_a_wrapper_is_told_to_strip_the_prefix(tmp_path: Path) -> None:
    adapter, bases = _gpt2_lora_and_wrapped_bases(tmp_path)
    for prefix, base in bases.items():
        result = run_cli("diff-keys", adapter, base, "--json")
        assert result.exit_code == 1, result.stderr
        note = json.loads(result.stdout)["notes"][0]
        assert f"2 of them are under the prefix '{prefix}' (e.g. {prefix}transformer.h.0.attn.c_attn)" in note, note
        assert "saved from a training wrapper" in note, note
        assert "--rename '^" in note and "=' -o" in note, note
        assert "the model class it was trained on" not in note, note
        # The command given, run, writes a base the adapter fits.
        stripped = tmp_path / f"stripped{base.stem}.safetensors"
        flag = note.split("--rename ", 1)[1].split(" -o", 1)[0].strip("'")
        assert run_cli("convert", base, "--rename", flag, "-o", stripped).exit_code == 0
        fixed = json.loads(run_cli("diff-keys", adapter, stripped, "--json").stdout)
        assert fixed["worst_severity"] == "info", fixed["notes"]
        assert "2 of them in B with shapes that fit" in fixed["notes"][0]


def _wide(*args: str | Path) -> Result:
    """The text report at a console 400 wide, whatever width the first import of the console kept (review68's way)."""
    from weightdoctor.render import console

    width = console.stdout._width
    console.stdout.width = 400
    try:
        return run_cli(*map(str, args), runner=CliRunner(env={"COLUMNS": "400"}))
    finally:
        console.stdout._width = width


def test_the_missing_title_of_an_adapter_that_saves_modules_whole_says_none_starts_from_init(tmp_path: Path) -> None:
    folders = build_peft_adapter(tmp_path)  # LoRA on q_proj, v_proj, embed_tokens; lm_head saved whole
    result = _wide("diff-keys", folders["adapter"], folders["base"])
    assert result.exit_code == 0, result.stderr
    assert "Missing: in B, not in A (the base supplies them; the adapter, the ones it saves whole)" in result.stdout
    assert "start from their init" not in result.stdout
    # An adapter whose missing keys are its base's alone keeps ux17's title.
    dora = _wide("diff-keys", folders["dora"], folders["base"])
    assert "Missing: in B, not in A (the base supplies them)" in dora.stdout
