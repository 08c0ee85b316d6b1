"""Regressions found comparing every command's output at 033b795 and at redteam33's merge (8ed4e8b3), each fixed here.

diff-keys ADAPTER BASE: advice2 (27cd9340) made the note's "load it with PeftModel.from_pretrained(base, adapter)"
the real call, the adapter and B as typed. On screen the note is folded at the terminal's width, and the call, as
long as its two paths, was folded with it: at COLUMNS=100 the newline fell inside B's path literal
(`from_pretrained('/tmp/.../base` / `'), '/tmp/.../adapter')`), a SyntaxError pasted, where 033b795's placeholder
line at least stayed whole. The call is now printed whole on a line of its own below the note, as the commands a
note gives already were (and as inspect prints it).

plan-devices of a 2- or 3-bit HIGGS, 3-bit GPTQ or SpQR checkpoint: quantized plan sizing (dc9c300b, b7b8f186)
sizes their layers at the stored bytes, and its warning named the quantizer alone, "(higgs)", "(gptq)", where
033b795's said "(higgs, 2-bit)", "(gptq, 3-bit)" (as the upper-bound line still does): the bits the config gives are
said again.
"""
from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

from tests.helpers import run_cli, run_subprocess
from tests.test_advice_runs2 import _CHECK_LOADED, _exec_python


def _adapter_and_base(folder: Path) -> tuple[Path, Path]:
    from fixtures.diff_pairs import build_peft_adapter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft: save_embedding_layers set for embed_tokens
        made = build_peft_adapter(folder)
    return made["adapter"], made["base"]


def test_the_peft_call_of_a_diff_keys_note_is_printed_whole_and_loads_pasted(tmp_path: Path) -> None:
    adapter, base = _adapter_and_base(tmp_path / "a folder of runs" / "lora-finetune-of-the-tiny-llama")
    done = run_subprocess("diff-keys", str(adapter), str(base), "--json", cwd=tmp_path)
    assert done.returncode in (0, 1), done.stderr
    note = json.loads(done.stdout)["notes"][0]
    start = note.index("import peft, transformers; ")  # the call with its imports (advice3)
    call = None  # the note goes on past the call: the shortest text from its start that parses as it is it
    for end in range(start + 1, len(note) + 1):
        try:
            parsed = ast.parse(note[start:end]).body
        except SyntaxError:
            continue
        if len(parsed) == 2 and isinstance(parsed[1], ast.Assign) and isinstance(parsed[1].value, ast.Call):
            call = note[start:end]
            break
    assert call is not None and len(call) > 100, note

    shown = run_subprocess("diff-keys", str(adapter), str(base), cwd=tmp_path, env={"COLUMNS": "100"})
    assert shown.returncode == done.returncode, shown.stderr
    lines = shown.stdout.splitlines()
    printed = [line for line in lines if "PeftModel.from_pretrained(" in line and "peft's" not in line]
    assert printed == [call], shown.stdout  # whole, on one line, nothing before it
    assert "load it with the call below, or merge it" in " ".join(shown.stdout.split()), shown.stdout
    assert "from_pretrained(base, adapter)" not in shown.stdout, shown.stdout
    loaded = _exec_python(printed[0] + _CHECK_LOADED.format(
        saved=str(adapter / "adapter_model.safetensors")), tmp_path)
    assert loaded.split()[:3] == ["PeftModel", "True", "True"], loaded


def test_the_stored_sizing_warning_says_the_bits_as_before(tmp_path: Path) -> None:
    from tests.test_plan_quantized2 import _gptq3
    from tests.test_third_party_layouts27 import _higgs

    for folder, how in ((_higgs(tmp_path / "higgs2", bits=2), "higgs, 2-bit"), (_gptq3(tmp_path / "gptq3"),
                                                                                 "gptq, 3-bit")):
        result = run_cli("plan-devices", str(folder), "--gpu", "24GB", "--json")
        assert result.exit_code == 0, result.stderr
        warnings_said = json.loads(result.stdout)["warnings"]
        sized = [line for line in warnings_said if "are sized at the bytes the checkpoint stores" in line]
        assert len(sized) == 1 and sized[0].startswith(
            f"the config quantizes the weights ({how}): the 14 quantized Linear layers of 15 are sized"), warnings_said
