"""Review 83 of the merges since f074c0af: the faults found, each reproduced through the CLI.

1. A key not in Unicode form NFC showed as its NFC lookalike where NFC changes it by something other than a combining
   mark: the Angstrom sign (U+212B, NFC U+00C5), a CJK compatibility ideograph (U+F900, NFC U+8C48), a Hangul word
   in NFD (conjoining jamo, as macOS writes names). inspect's table held two rows of one name; diff-keys' missing and
   unexpected rows read alike and its fix line (`--rename '^Å\\.=Å.'`) went without the line saying its sides differ
   unseen. Those characters are now escaped like the combining marks were.
2. diff-keys' timm lookalike rule refused a pipeline-parallel save's embedding and final-norm renames.
3. plan-devices counted a BERT-style decoder's cross-attention key / value per token, not per input.
Each test below says what the user saw.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from tests.helpers import run_cli

WIDE = CliRunner(env={"COLUMNS": "200"})  # a Hangul name in escapes fits one row

# (not NFC, its NFC lookalike)
LOOKALIKES = [("\u212b.bias", "\u00c5.bias"), ("\uf900.weight", "\u8c48.weight"),
              (unicodedata.normalize("NFD", "한글.weight"), "한글.weight")]


def _table_names(stdout: str) -> list[str]:
    """The first cell of each row of the report's tables (the text between the first two `│`), wrapped rows joined."""
    return [line.split("│")[1].strip() for line in stdout.splitlines() if line.count("│") >= 3]


def test_inspect_shows_a_key_nfc_changes_without_combining_marks_apart_from_its_lookalike(tmp_path: Path) -> None:
    path = tmp_path / "lookalikes.safetensors"
    names = [name for pair in LOOKALIKES for name in pair]
    assert all(not unicodedata.is_normalized("NFC", odd) and unicodedata.normalize("NFC", odd) == nfc
               for odd, nfc in LOOKALIKES)
    save_file({name: torch.full((i + 1,), float(i)) for i, name in enumerate(names)}, str(path))
    result = run_cli("inspect", path, runner=WIDE)
    assert result.exit_code == 0, result.stderr
    shown = [name for name in _table_names(result.stdout) if name.endswith((".weight", ".bias"))]
    assert len(shown) == len(names) and len(set(shown)) == len(names), shown
    assert {"\\u212b.bias", "\\uf900.weight", "\\u1112\\u1161\\u11ab\\u1100\\u1173\\u11af.weight"} <= set(shown)
    # The NFC names, CJK and Hangul among them, are shown as written.
    assert {nfc for _, nfc in LOOKALIKES} <= set(shown)


def test_diff_keys_says_a_rename_to_an_nfc_lookalike_differs_unseen(tmp_path: Path) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({odd: torch.ones(2) for odd, _ in LOOKALIKES} | {"x.weight": torch.ones(1)}, str(a))
    save_file({nfc: torch.ones(2) for _, nfc in LOOKALIKES} | {"x.weight": torch.ones(1)}, str(b))
    result = run_cli("diff-keys", a, b, runner=WIDE)
    assert result.exit_code in (0, 1), result.stderr
    lines = result.stdout.splitlines()
    unexpected_at = next(i for i, line in enumerate(lines) if line.startswith("Unexpected"))
    missing_at = next(i for i, line in enumerate(lines) if line.startswith("Missing"))
    unexpected = set(_table_names("\n".join(lines[unexpected_at:])))
    missing = set(_table_names("\n".join(lines[missing_at:unexpected_at])))
    assert {nfc for _, nfc in LOOKALIKES} <= missing
    assert not ({nfc for _, nfc in LOOKALIKES} & unexpected), unexpected
    assert "\\uf900.weight" in unexpected and "\\u212b.bias" in unexpected
    fix_at = next(i for i, line in enumerate(lines) if line.startswith("suggested fix"))
    assert lines[fix_at + 2].startswith("its two sides differ in Unicode form"), lines[fix_at:fix_at + 3]


def test_a_pipeline_parallel_save_is_still_offered_its_embedding_and_final_norm_renames(tmp_path: Path) -> None:
    """2. The timm lookalike rule (no prefix inside a numbered layer onto a prefix with no number) also refused a
    pipeline-parallel save's stages: GPT-NeoX's `sequential.0.word_embeddings.` and `sequential.5.norm.` are the
    embedding and the final norm, held by no other stage, and were no longer offered as `gpt_neox.embed_in.` /
    `gpt_neox.final_layer_norm.` (2 of 5 keys matched after the renames; 5 of 5 before the rule)."""
    from tests.helpers import run_json

    torch.manual_seed(83)
    a, b = tmp_path / "pipeline.safetensors", tmp_path / "hf.safetensors"
    tensors = {"word_embeddings.weight": torch.randn(50, 8), "dense0": torch.randn(8, 8),
               "dense1": torch.randn(8, 8), "norm.weight": torch.randn(8), "norm.bias": torch.randn(8)}
    save_file({"sequential.0.word_embeddings.weight": tensors["word_embeddings.weight"],
               "sequential.2.attention.dense.weight": tensors["dense0"],
               "sequential.3.attention.dense.weight": tensors["dense1"],
               "sequential.5.norm.weight": tensors["norm.weight"], "sequential.5.norm.bias": tensors["norm.bias"]},
              str(a))
    save_file({"gpt_neox.embed_in.weight": tensors["word_embeddings.weight"],
               "gpt_neox.layers.0.attention.dense.weight": tensors["dense0"],
               "gpt_neox.layers.1.attention.dense.weight": tensors["dense1"],
               "gpt_neox.final_layer_norm.weight": tensors["norm.weight"],
               "gpt_neox.final_layer_norm.bias": tensors["norm.bias"]}, str(b))
    code, data = run_json("diff-keys", str(a), str(b))
    assert code == 1, data
    flags = {row["flag"] for row in data["suggested_renames"]}
    assert {"--rename '^sequential\\.0\\.word_embeddings\\.=gpt_neox.embed_in.'",
            "--rename '^sequential\\.5\\.norm\\.=gpt_neox.final_layer_norm.'"} <= flags, flags
    assert data["matched_after_renames"] == 5, data["matched_after_renames"]
    # The renames, pasted, match every key, each onto its own tensor (--values: nothing changed).
    code, data = run_json("diff-keys", str(a), str(b), "--values", *[part for flag in sorted(flags)
                                                                       for part in ("--rename", flag.split("'")[1])])
    assert data["matched"] == 5 and not data["missing"] + data["unexpected"], data
    assert all(row["identical"] for row in data["values"]), data["values"]


def test_a_bert2bert_encoder_decoders_cross_key_value_are_said_once_per_input(tmp_path: Path) -> None:
    """3. plan-devices said a BERT-style decoder's cross-attention key / value projections (`crossattention.self.key`,
    one module deeper than T5's `EncDecAttention.k` and BART's `encoder_attn.k_proj`) were streamed per generated
    token, though its comment named them and generate() caches their outputs: a bert2bert EncoderDecoderModel's
    per-input bytes were 416,512 where accelerate's hooks load 516,352 once per input (its 3 layers' 6 projections,
    99,840 bytes, short). Measured by the hooks, as test_plan_quantrest2 measures T5 and BART."""
    from tests.helpers import run_json
    from tests.test_plan86 import _bert2bert
    from tests.test_plan_quantrest2 import _bytes_streamed

    folder = _bert2bert(tmp_path / "bert2bert")
    code, whole = run_json("plan-devices", str(folder), "--gpu", "1GB")
    total = whole["weights_bytes"] + whole["buffers_bytes"]
    code, data = run_json("plan-devices", str(folder), "--gpu", f"{int(total * 0.35)}B", "--cpu", "1GB")
    placed = data["device_map"]
    assert placed.get("decoder") == "cpu" or any(name.startswith("decoder.") and where == "cpu"
                                                 for name, where in placed.items()), placed
    three = _bytes_streamed(folder, placed, 3, tmp_path)
    six = _bytes_streamed(folder, placed, 6, tmp_path)
    per_input = three - 3 * ((six - three) // 3)
    assert data["offload"]["per_input_cpu_bytes"] == per_input, (data["offload"], per_input)

