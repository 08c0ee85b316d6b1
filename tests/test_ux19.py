"""ux19: wording a person reads at a glance, on tiny transformers checkpoints (GPT-2 and Llama trained 5 steps with
their block 1 frozen, the bundled BERT example, a Q4_K_M GGUF, Llama-2-70B's config). What was fixed: the
briefly-trained finding was one sentence of nested clauses ("10 of the 18 vectors the model initializes to exact
ones or zeros (norm scales, biases) have moved off them beside the 19.6% of ... that have trained alone: the
checkpoint has trained; 2 matrices (...) that still fit their initialization have a bias that moved, so got
updates too little to tell one by one"); check-dtype stacked parentheses ("684 subnormal in fp16 (fewer
significant bits) (553.35 KB)", "bf16 (3 tensor(s))"); diff-keys --values named one quantity two ways (‖A−B‖/‖B‖
per tensor, ‖ΔW‖/‖W‖ per layer); plan-devices printed its explanations as 300-character lines a terminal broke
mid-word; the GGUF panel listed architecture and general.architecture (and each size twice) and said "alignment
32" without a unit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from fixtures.gguf_files import tiny_llama_gguf
from fixtures.trained_zoo import BLOCK, fresh_model, train
from tests.helpers import REPO_ROOT, run_subprocess

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _briefly_trained(model_name: str, folder: Path) -> Path:
    """`model_name` (hidden 64, 2 layers) after 5 AdamW steps at lr 1e-3 with its block 1 frozen."""
    model = fresh_model(model_name, 0)
    train(model_name, model, 5, 0, lr=1e-3, trainable=lambda name: not name.startswith(BLOCK[model_name]))
    model.save_pretrained(folder)
    return folder


def _brief_messages(folder: Path) -> list[str]:
    result = run_subprocess("inspect", str(folder), "--stats", "--json")
    assert result.returncode == 0, result.stderr
    return [f["message"] for f in json.loads(result.stdout)["findings"] if f["code"] == "briefly-trained"]


def _nested_parentheses(text: str) -> bool:
    depth = 0
    for char in text:
        depth += (char == "(") - (char == ")")
        if depth > 1:
            return True
    return False


def test_the_briefly_trained_finding_says_its_conclusion_first_in_short_sentences(tmp_path: Path) -> None:
    """GPT-2: the norms and biases moved and a fifth of the matrix parameters trained; two matrices whose bias moved
    are named. Said conclusion first, in sentences of at most 40 words, without nested parentheses."""
    [message] = _brief_messages(_briefly_trained("gpt2", tmp_path / "gpt2"))
    assert message.startswith("the checkpoint has trained: 10 of the 18 norm scales and biases that start at exact "
                              "ones or zeros have moved, and "), message
    assert "still look like their initialization, but their biases moved, so they did get small updates." in message
    # health85: the tied wte (no bias, no block) lost normal_'s marks that block 1's frozen matrices keep
    assert message.endswith("1 matrix (transformer.wte.weight) still looks like its initialization, but its values no "
                            "longer sit on the grid of angles PyTorch's normal_ draws on, where others of this "
                            "checkpoint still do, so it did get small updates"), message
    assert "too little to tell" not in message and "moved off them" not in message
    assert not _nested_parentheses(message)
    assert max(len(sentence.split()) for sentence in message.split(". ")) <= 40, message


def test_the_pooled_briefly_trained_finding_reads_in_sentences(tmp_path: Path) -> None:
    """Llama: six matrices moved only together. Was "6 matrices each alone still fit their initialization beside
    the 22.7% of ..., but pooled, their ... values hold ...: they have trained too, too little to tell one by one;
    the 7 matrices that got no update (untrained-tensor) are not among them"."""
    [message] = _brief_messages(_briefly_trained("llama", tmp_path / "llama"))
    assert message.startswith("6 matrices still look like their initialization one by one, but taken together they "
                              "have trained too: their 28,608 values hold "), message
    assert message.endswith("have clearly trained. The 7 matrices that got no update (untrained-tensor) are not "
                            "counted here"), message
    assert max(len(sentence.split()) for sentence in message.split(". ")) <= 40, message


def test_check_dtype_says_its_recommendation_in_plain_clauses(tmp_path: Path) -> None:
    """The bundled BERT example: no line of the recommendation holds two parentheses in a row or one inside
    another; the size is a clause of its own."""
    result = run_subprocess("check-dtype", "fixtures/example", "--json")
    assert result.returncode == 0, result.stderr
    lines = json.loads(result.stdout)["recommendation"]["lines"]
    assert not [line for line in lines if ") (" in line or _nested_parentheses(line)], lines
    fp16 = next(line for line in lines if line.startswith("fp16 "))
    assert fp16.endswith("of values rounded; 684 become subnormal in fp16, with fewer significant bits; size "
                         "553.35 KB"), fp16
    best = next(line for line in lines if line.startswith("smallest plain cast"))
    assert best == ("smallest plain cast without overflow or mass underflow: bf16; fp16, the same size, has a "
                    "larger max relative error"), best


def test_check_dtype_names_the_other_stored_dtype_without_nested_parentheses(tmp_path: Path) -> None:
    """A bf16 checkpoint with one fp32 tensor: "mixed storage: config says bfloat16, but float32 (1 tensor(s)) are
    stored otherwise" nested a parenthesis in a parenthesis."""
    from safetensors.torch import save_file

    folder = tmp_path / "mixed"
    folder.mkdir()
    save_file({"a.weight": torch.ones(4, 4, dtype=torch.bfloat16), "b.weight": torch.ones(4, 4)},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "torch_dtype": "bfloat16"}))
    result = run_subprocess("check-dtype", str(folder), "--json")
    assert result.returncode in (0, 1), result.stderr
    said = json.loads(result.stdout)["config_agreement"]
    assert "but 1 tensor is stored as float32; from_pretrained" in json.dumps(said), said


def test_diff_keys_values_names_the_relative_change_one_way(tmp_path: Path) -> None:
    """‖A−B‖/‖B‖ heads both tables (the layers' was ‖ΔW‖/‖W‖) and the --values help says it."""
    a, b = tmp_path / "a", tmp_path / "b"
    fresh_model("gpt2", 0).save_pretrained(a)
    _briefly_trained("gpt2", b)
    result = run_subprocess("diff-keys", str(a), str(b), "--values", env={"COLUMNS": "120"})
    assert result.returncode == 0, result.stderr
    assert "ΔW" not in result.stdout and result.stdout.count("‖A−B‖/‖B‖") == 2, result.stdout
    help_text = " ".join(run_subprocess("diff-keys", "--help", env={"COLUMNS": "200"}).stdout.split())
    assert "max |A−B| and ‖A−B‖/‖B‖ per tensor, and ‖A−B‖/‖B‖ per layer" in help_text
    doc = (REPO_ROOT / "docs" / "commands" / "diff-keys.md").read_text(encoding="utf-8")
    assert "ΔW" not in doc


def test_plan_devices_wraps_its_explanations_at_words_in_an_80_column_terminal() -> None:
    """Llama-2-70B on two 40 GB GPUs: in a terminal (FORCE_COLOR makes Rich take stdout for one) no line passes 80
    columns and the offload sentence goes on under its own start; piped, it stays one line to grep."""
    args = ("plan-devices", "fixtures/configs/llama-2-70b", "--gpu", "40GB", "--gpu", "40GB", "--cpu", "128GB",
            "--dtype", "bf16")
    terminal = run_subprocess(*args, env={"COLUMNS": "80", "FORCE_COLOR": "1"})
    assert terminal.returncode == 0, terminal.stderr
    lines = _ANSI.sub("", terminal.stdout).splitlines()
    assert max(len(line) for line in lines) <= 80, [line for line in lines if len(line) > 80]
    offload = next(i for i, line in enumerate(lines) if line.startswith("offload: "))
    assert lines[offload + 1].startswith("         ") and not lines[offload + 1].startswith("          ")
    # every wrapped line ends on a whole word: the next begins where a space was
    joined = " ".join(line.strip() for line in lines[offload:offload + 5])
    assert "60.42 GB moved to the GPU for every generated token (≥ 2.42 s/token at an assumed 25 GB/s" in joined
    piped = run_subprocess(*args, env={"COLUMNS": "80"})
    [line] = [line for line in piped.stdout.splitlines() if line.startswith("offload: ")]
    assert line.endswith("on that GPU, not counted there in the map"), line


def test_the_gguf_panel_says_each_metadata_entry_once_and_the_alignment_in_bytes(tmp_path: Path) -> None:
    path, _ = tiny_llama_gguf(tmp_path / "tiny.Q4_K_M.gguf")
    result = run_subprocess("inspect", str(path), env={"COLUMNS": "120"})
    assert result.returncode == 0, result.stderr
    rows = [line.strip("│ ").split() for line in result.stdout.splitlines() if line.startswith("│ ")]
    labels = [row[0] for row in rows if row]
    assert "general.architecture" not in labels and "llama.embedding_length" not in labels, labels
    assert "GGUF v3, tensor data aligned to 32 bytes" in result.stdout
    assert "llama (general.architecture)" in result.stdout and "256 (llama.embedding_length)" in result.stdout
    assert labels.count("architecture") == 1 and "general.file_type" in labels
    # --json keeps every metadata entry
    report = json.loads(run_subprocess("inspect", str(path), "--json").stdout)
    assert report["gguf"]["metadata"]["general.architecture"] == "llama"
