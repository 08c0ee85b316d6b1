"""Round 14 of the common mistakes users make: what a user copies from an 80-column terminal must run.

Covers, each command copied from the output at 40, 80 and 200 columns (and TERM=dumb) and run as copied:
check-dtype's suggested `convert ... --keep-fp32 '<regex>'`, broken inside the recommendation panel mid-regex (the
copy did not run); diff-keys' note on a training checkpoint, whose `convert` was broken at the width like any
paragraph; check-dtype's "Worst tensors" names cut mid-word while `why` kept 20 cells, and diff-keys' "Unexpected"
detail squeezed to a few cells a line; `inspect --security`, which Click answered with `--verify` (zip CRCs, not
safety); a refused unsafe pickle said what was found and nothing of what to do next; plan-devices without --disk
saying `164.54 KB of nothing (no --disk) OFFLOAD`. Guards: diff-keys' re-check line and the `mkdir -p` hint stay
whole at 40 columns and run as pasted.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import REPO_ROOT, run_cli, run_subprocess
from tests.helpers import save_tiny_bert as _tiny_bert

WIDTHS = ("40", "80", "200")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding 'base' (the tiny Bert), 'my model' (two of its tensors beyond fp16's range, so that
    check-dtype's --keep-fp32 regex is long) and 'train ckpt.pt' (DDP keys under 'model', torch.save'd)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("ux14")
    _tiny_bert(root / "base")
    state = load_file(root / "base" / "model.safetensors")
    torch.save({"model": {"module." + k: v for k, v in state.items()}, "optimizer": {}, "epoch": 3},
               root / "train ckpt.pt")
    state["bert.encoder.layer.0.output.LayerNorm.weight"] *= 1e5
    state["bert.encoder.layer.1.attention.output.dense.weight"] *= 1e6
    (root / "my model").mkdir()
    shutil.copy(root / "base" / "config.json", root / "my model" / "config.json")
    save_file(state, root / "my model" / "model.safetensors", metadata={"format": "pt"})
    return root


def _at(columns: str, *args: str, cwd: Path) -> str:
    """stdout of `weightdoctor ARGS` run in `cwd` on a console `columns` wide."""
    from weightdoctor.render import console

    # The console reads COLUMNS once, when first imported (by whichever test came first): set here, then put back.
    old, width = Path.cwd(), console.stdout._width
    os.chdir(cwd)
    console.stdout.width = int(columns)
    try:
        result = run_cli(*args, runner=CliRunner(env={"COLUMNS": columns, "TERM": "dumb"}))
    finally:
        os.chdir(old)
        console.stdout._width = width
    assert result.exit_code in (0, 1), result.stderr
    return result.stdout


def _copied(stdout: str, start: str) -> str:
    """What a user copies: the one printed line that holds `start`, from `start` to its end."""
    lines = [line for line in stdout.splitlines() if start in line]
    assert len(lines) == 1, stdout
    return lines[0][lines[0].index(start):]


def _run_as_pasted(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`line` run by bash as pasted, `weightdoctor` being this checkout's."""
    program = f"weightdoctor() {{ {shlex.quote(sys.executable)} -m weightdoctor \"$@\"; }}\n{line}"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env, cwd=cwd)


def test_check_dtype_keep_fp32_convert_is_copied_whole_at_any_width(models: Path) -> None:
    """At 80 columns the suggested convert sat inside the recommendation panel, broken mid-regex: the copy was
    `weightdoctor convert 'my model' -o 'my model-fp16' --dtype` and did not run."""
    report = json.loads(_at("200", "check-dtype", "my model", "--target", "fp16", "--json", cwd=models))
    command = report["recommendation"]["commands"]["fp16"]
    assert "--keep-fp32 '^(?:bert" in command
    for columns in WIDTHS:
        out = _at(columns, "check-dtype", "my model", "--target", "fp16,bf16", cwd=models)
        assert _copied(out, "weightdoctor convert ") == command, columns
        assert "keep them in fp32 (the convert command below)" in re.sub(r"[\s│]+", " ", out)

    # Printed by a real process on a dumb 40-column terminal, copied, pasted: it writes what check-dtype meant.
    shown = run_subprocess("check-dtype", "my model", "--target", "fp16", cwd=models,
                           env={"COLUMNS": "40", "TERM": "dumb"})
    pasted = _run_as_pasted(_copied(shown.stdout, "weightdoctor convert "), models)
    assert pasted.returncode == 0, pasted.stderr
    again = json.loads(run_cli("check-dtype", str(models / "my model-fp16"), "--target", "fp16", "--json").stdout)
    assert "nothing to convert" in again["recommendation"]["text"]


def test_diff_keys_note_convert_is_copied_whole_at_any_width(models: Path) -> None:
    """The training-checkpoint note ends in the convert that writes the state dict alone; printed as a wrapped
    paragraph, at 80 columns its `-o` and `model.safetensors` were on two lines."""
    for columns in WIDTHS:
        out = _at(columns, "diff-keys", "train ckpt.pt", "--model-class", "BertForSequenceClassification",
                  "--config", "base", cwd=models)
        # Two converts are offered: the state dict alone (the note's), and a renamed copy (the suggested fix's, since
        # ux17); each whole on its line.
        assert _copied(out, "weightdoctor convert 'train ckpt.pt' -o model") == (
            "weightdoctor convert 'train ckpt.pt' -o model.safetensors")
        assert _copied(out, "weightdoctor convert 'train ckpt.pt' -o 'train") == (
            r"weightdoctor convert 'train ckpt.pt' -o 'train ckpt-renamed.safetensors' --rename '^module\.='")
        assert "write the state dict on its own first (the command below)" in " ".join(out.split()), columns
        # The suggested fix's re-check, soft-wrapped since round 11, stays whole at every width too.
        assert _copied(out, "with: weightdoctor diff-keys ").removeprefix("with: ") == (
            "weightdoctor diff-keys 'train ckpt.pt' --model-class BertForSequenceClassification --config base "
            r"--rename '^module\.='")

    # A folder's training checkpoint: its convert and the `mv` to the name from_pretrained reads, one line.
    folder = models / "my run"
    folder.mkdir()
    (folder / "config.json").write_text((models / "base" / "config.json").read_text())
    import torch
    from safetensors.torch import load_file

    torch.save({"model": load_file(models / "base" / "model.safetensors"), "epoch": 1}, folder / "checkpoint.pt")
    out = _at("80", "diff-keys", "my run", "--model-class", "BertForSequenceClassification", cwd=models)
    copied = _copied(out, "weightdoctor convert ")
    assert copied.endswith("&& mv 'my run-state-dict/checkpoint.safetensors' 'my run-state-dict/model.safetensors'")
    assert "(the command below, a folder from_pretrained reads)" in " ".join(out.split())
    pasted = _run_as_pasted(copied, models)
    assert pasted.returncode == 0, pasted.stderr
    loads = json.loads(run_cli("diff-keys", str(models / "my run-state-dict"), "--model-class",
                               "BertForSequenceClassification", "--json").stdout)
    assert loads["matched"] == 41 and loads["from_pretrained_reads_a"] is not False


def _column(table: str, index: int) -> list[str]:
    """The cells of one column of a Rich table, line by line (empty ones left out)."""
    cells = [line.split("│")[index].strip() for line in table.splitlines() if line.startswith("│")]
    return [cell for cell in cells if cell]


def test_worst_tensor_names_keep_their_segments_whole_at_80_columns(tmp_path: Path) -> None:
    """A Llama's `model.layers.0.post_attention_layernorm.weight` beyond fp16's range: at 80 columns the name had
    17 cells and was cut mid-word (`post_attention_la` / `yernorm.weight`) while `why` kept 17 for its prose."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file({"model.layers.0.post_attention_layernorm.weight": torch.ones(64) * 1e5,
               "model.layers.0.self_attn.q_proj.weight": torch.randn(64, 64),
               "model.embed_tokens.weight": torch.randn(128, 64)}, str(tmp_path / "llama.safetensors"))
    out = _at("80", "check-dtype", "llama.safetensors", "--target", "fp16", cwd=tmp_path)
    table = out[out.index("Worst tensors for fp16"):out.index("recommendation")]
    assert max(map(len, table.splitlines())) <= 80
    names = _column(table, 1)
    assert names[:3] == ["model.layers.0.", "post_attention_layernorm.", "weight"], names
    report = json.loads(_at("80", "check-dtype", "llama.safetensors", "--target", "fp16", "--json", cwd=tmp_path))
    words = {word for row in report["targets"]["fp16"]["tensors"] for word in row["reason"].split()}
    assert {word for cell in _column(table, 6) for word in cell.split()} <= words  # `why`: words whole too


def test_unexpected_detail_is_not_squeezed_to_its_longest_word_at_80_columns(tmp_path: Path) -> None:
    """Long unexpected names beside a task head: the keys took 39 cells and the detail 7, "not used by B,
    dropped" over four lines. The detail keeps a fair share; the keys still break only after a dot."""
    import torch
    from safetensors.torch import save_file

    b = {"bert.embeddings.word_embeddings.weight": torch.ones(4, 4), "classifier.weight": torch.ones(2, 4)}
    a = {**b, "bert.encoder.layer.0.attention.self.distance_embedding.weight": torch.ones(4, 4),
         "bert.encoder.layer.1.attention.self.relative_position_bias.weight": torch.ones(4, 4),
         "cls.predictions.transform.LayerNorm.weight": torch.ones(4)}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    out = _at("80", "diff-keys", "a.safetensors", "b.safetensors", cwd=tmp_path)
    table = out[out.index("Unexpected"):out.index("reasons")]
    assert max(map(len, table.splitlines())) <= 80
    assert _column(table, 5) == ["not used by B,", "dropped"], table
    keys = _column(table, 1)
    assert all(cell.endswith((".", "weight")) for cell in keys), keys
    assert "self.distance_embedding.weight" in " ".join(keys)


@pytest.mark.parametrize("typed", ["--security", "--scan", "--safety"])
def test_inspect_security_says_the_scan_runs_by_default(models: Path, typed: str) -> None:
    """`inspect --security` (a flag people expect a scanner to have): Click answered "Possible options: --verify",
    which recomputes zip CRCs and says nothing of whether the pickle runs code."""
    result = run_cli("inspect", str(models / "train ckpt.pt"), typed)
    assert result.exit_code == 2 and result.stdout == ""
    line = " ".join(result.stderr.split())
    assert f"No such option: {typed}; inspect always runs the security scan" in line, line
    assert "see its security line" in line and "--verify checks zip CRCs and hashes, not safety" in line
    assert "Possible options" not in line and len(result.stderr.strip().splitlines()) == 1
    # The line it names is there, in the report and in --json.
    report = run_cli("inspect", str(models / "train ckpt.pt"))
    assert re.search(r"│ security +safe \(static pickle scan", report.stdout), report.stdout
    assert json.loads(run_cli("inspect", str(models / "train ckpt.pt"), "--json").stdout)["security"]["verdict"] \
        == "safe"


def test_a_refused_pickle_says_what_to_do_next_in_one_line(tmp_path: Path) -> None:
    """`evil.pt: dangerous: posix.system ...; nothing was unpickled` said what was found and stopped: a user who
    needs the weights was left to try torch.load, which runs it. A file of an unknown class is told apart."""
    import torch

    from fixtures.hostile import payloads

    sentinel = tmp_path / "SENTINEL"
    torch.save({"w": torch.ones(3), "x": payloads(sentinel)["os-system"][0]}, tmp_path / "evil.pt")
    torch.save({"w": torch.ones(3), "step": torch.optim.SGD}, tmp_path / "odd.pt")  # a class: not a weight
    for args in (("inspect", "evil.pt"), ("diff-keys", "evil.pt", "odd.pt"), ("inspect", "evil.pt", "--json")):
        result = run_cli(*[str(tmp_path / a) if a.endswith(".pt") else a for a in args])
        assert result.exit_code == 2 and result.stdout == "", result.stdout
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        line = " ".join(result.stderr.split())
        assert line.startswith(f"error: {tmp_path / 'evil.pt'}: dangerous: posix.system"), line
        assert line.endswith("; nothing was unpickled: do not torch.load it (unpickling runs what it names); ask "
                             "its source for a .safetensors file (see docs/security.md)"), line
    odd = " ".join(run_cli("inspect", str(tmp_path / "odd.pt")).stderr.split())
    assert "nothing was unpickled: torch.load it only if you trust its source" in odd, odd
    assert (REPO_ROOT / "docs" / "security.md").is_file() and not sentinel.exists()


def test_plan_devices_says_what_is_left_over_without_disk(tmp_path: Path) -> None:
    """GPU and CPU budgets too small and no --disk: the disk line read `164.54 KB of nothing (no --disk) OFFLOAD`,
    an offload planned to a disk of no size. It says what is left over has nowhere to go, and how to allow it."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "torch_dtype": "float16"}))
    out = run_cli("plan-devices", str(config), "--gpu", "100KB", "--cpu", "10KB").stdout
    [disk] = [line for line in out.splitlines() if line.startswith("disk ")]
    assert disk.endswith(" 164.54 KB left over with nowhere to go: disk offload is off (--disk allows it); does not "
                         "fit"), disk
    assert "of nothing" not in out and "OFFLOAD" not in disk
    assert "verdict: does not fit" in out
    allowed = run_cli("plan-devices", str(config), "--gpu", "100KB", "--cpu", "10KB", "--disk").stdout
    [disk] = [line for line in allowed.splitlines() if line.startswith("disk ")]
    assert disk.endswith(" 164.54 KB of unlimited OFFLOAD") and "verdict: needs disk offload" in allowed


def test_the_mkdir_hint_at_40_columns_pastes_whole(models: Path) -> None:
    """convert into a folder that does not exist, on a 40-column dumb terminal: the `mkdir -p` it names, copied
    from the error line, makes that folder and the same convert then writes there."""
    result = run_subprocess("convert", "my model", "-o", "new dir/sub dir/m.safetensors", cwd=models,
                            env={"COLUMNS": "40", "TERM": "dumb"})
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    found = re.search(r"mkdir -p ('[^']*'|[^\s)]+)\)", result.stderr)
    assert found, result.stderr
    assert _run_as_pasted(found.group()[:-1], models).returncode == 0
    assert (models / "new dir" / "sub dir").is_dir()
    assert run_cli("convert", str(models / "my model"), "-o", str(models / "new dir/sub dir/m.safetensors"),
                   "--json").exit_code == 0
