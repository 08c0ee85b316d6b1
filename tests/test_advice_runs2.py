"""Advice weightdoctor prints, second round: the places that still printed placeholders (`PATH`, `prefix`, `B`,
`base`, a repo id as a shell path) or lost what the user gave (B's --revision), each pasted or argument-checked as
the user would run it. Names as typed, repr() for Python, shlex-quoted for shell (see test_advice_runs.py)."""

from __future__ import annotations

import ast
import json
import shlex
import warnings
from pathlib import Path

import pytest
import torch

from tests.helpers import run_subprocess

# A folder or file name a shell and Python both quote: a space, both quotes, a `$` and a letter outside ASCII.
ODD = "run $1 'ä\""


def _calls(text: str, name: str) -> list[ast.Call]:
    """Every call `name(...)` the text prints, parsed as Python reads it (to its closing parenthesis)."""
    found, start = [], 0
    while (at := text.find(name + "(", start)) >= 0:
        depth, quote, end = 0, "", at + len(name)
        while True:
            char = text[end]
            if quote:
                if char == "\\":
                    end += 1
                elif char == quote:
                    quote = ""
            elif char in "'\"":
                quote = char
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    break
            end += 1
        found.append(ast.parse(text[at:end + 1], mode="eval").body)
        start = end
    return found


def _literals(call: ast.Call) -> list[object]:
    """The call's positional arguments as the values Python gives them: each must be a literal (a name such as `PATH`
    or `prefix` is a NameError pasted)."""
    return [ast.literal_eval(argument) for argument in call.args]


# --- 3. the unwrap convert of B: no source said in words, B's --revision carried ---------------------------------


def _ddp_adapter_pair(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    from fixtures.diff_pairs import build_peft_adapter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft: save_embedding_layers set for embed_tokens
        folders = build_peft_adapter(tmp_path / "made")
    return folders["adapter"], load_file(folders["base"] / "model.safetensors")


def test_unwrap_of_b_without_a_source_is_said_in_words(tmp_path: Path) -> None:
    """diff_specs called from Python (no source for B): the note printed `weightdoctor convert B --rename ... -o
    ...`, which the renderer sets on a line of its own as a command; pasted, it read a file named B."""
    from safetensors.torch import load_file

    from weightdoctor.diff_keys import KeySpec, diff_specs
    from weightdoctor.render.diff_keys import _commands_out

    adapter, base = _ddp_adapter_pair(tmp_path)
    specs_a = {name: KeySpec(name, tuple(t.shape), "float32")
               for name, t in load_file(adapter / "adapter_model.safetensors").items()}
    specs_b = {f"module.{name}": KeySpec(f"module.{name}", tuple(t.shape), "float32") for name, t in base.items()}
    report = diff_specs(specs_a, specs_b)
    note = next(note for note in report.notes if "training wrapper" in note)
    assert "convert B's checkpoint with --rename '^module\\.=' and -o naming the file to write" in note, note
    assert "weightdoctor convert B" not in note and " -o ..." not in note, note
    assert _commands_out(note)[1] == [], note  # nothing set on a line of its own as a command to paste


def test_unwrap_of_a_repo_id_b_reads_the_revision_compared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """B a repo id read at --revision-b v2 (its DDP save; main holds other values): the convert printed dropped the
    revision and, pasted, wrote main's weights. It now carries --revision v2 and writes v2's, which the adapter
    fits."""
    from safetensors.torch import load_file, save

    from fixtures.hub_cache import commit_of, write_snapshot

    adapter, base = _ddp_adapter_pair(tmp_path)
    cache = tmp_path / "hub"
    wrapped = {f"module.{name}": tensor for name, tensor in base.items()}
    write_snapshot(cache, "org/ddp-base", commit_of("v2"), {"model.safetensors": save(wrapped)}, refs=("v2",))
    other = {f"module.{name}": torch.zeros_like(tensor) for name, tensor in base.items()}
    write_snapshot(cache, "org/ddp-base", commit_of("main"), {"model.safetensors": save(other)})
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "COLUMNS": "100"}
    monkeypatch.chdir(tmp_path)

    done = run_subprocess("diff-keys", str(adapter), "org/ddp-base", "--revision-b", "v2", cwd=tmp_path, env=env)
    assert done.returncode in (0, 1), done.stderr
    printed = [line for line in done.stdout.splitlines() if line.startswith("weightdoctor convert ")]
    assert len(printed) == 1, done.stdout
    words = shlex.split(printed[0])
    assert words[words.index("--revision") + 1] == "v2", printed
    converted = run_subprocess(*words[1:], cwd=tmp_path, env=env)
    assert converted.returncode == 0, converted.stderr

    written = load_file(tmp_path / "ddp-base.unwrapped" / "model.safetensors")
    assert sorted(written) == sorted(base) and all(torch.equal(written[k], v) for k, v in base.items())
    again = json.loads(run_subprocess("diff-keys", str(adapter), "ddp-base.unwrapped", "--json", cwd=tmp_path,
                                      env=env).stdout)
    assert "of them in B with shapes that fit" in again["notes"][0], again["notes"]
