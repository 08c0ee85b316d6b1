"""review79: inspect --stats's health findings against float64 oracles on real tiny transformers checkpoints.

Faults found: a zeroed norm scale and a matrix blown up 1,000× past its init drew no finding at all, and Whisper's
fixed sinusoidal position table (copied in by transformers' own `copy_`, which the init recorder missed) read as a
normal(0, 0.02) init that "trained", its half-precision copy as "duplicate-columns: symmetry never broken".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import run_cli

transformers = pytest.importorskip("transformers")


def _tiny_llama(folder: Path) -> dict[str, torch.Tensor]:
    """A fresh seeded tiny Llama saved with its config; its tensors."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32,
                                      pad_token_id=0, tie_word_embeddings=False)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return load_file(folder / "model.safetensors")


def _resave(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def _stats_json(folder: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    import json

    result = run_cli("inspect", str(folder), "--stats", "--json", *extra)
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, json.loads(result.stdout)


def _codes(report: dict[str, Any]) -> dict[tuple[str, str | None], dict[str, Any]]:
    return {(f["code"], f["tensor"]): f for f in report["findings"]}


def test_a_zeroed_norm_scale_is_an_all_zero_error(tmp_path: Path) -> None:
    """A Llama RMSNorm weight set to zero (its init is ones) passes nothing on: it was "trained (moved from its
    init)" with no finding, and `--fail-on error` passed. Now `all-zero`, an error; the fresh model's ones are not."""
    folder = tmp_path / "llama"
    tensors = _tiny_llama(folder)
    code, fresh = _stats_json(folder, "--fail-on", "error")
    assert code == 0 and not [f for f in fresh["findings"] if f["code"] == "all-zero"]
    name = "model.layers.0.input_layernorm.weight"
    tensors[name] = torch.zeros_like(tensors[name])
    _resave(folder, tensors)
    code, report = _stats_json(folder, "--fail-on", "error")
    finding = _codes(report)[("all-zero", name)]
    assert code == 1 and finding["severity"] == "error"
    assert "initializes it to ones" in finding["message"]
    entry = next(t for t in report["tensors"] if t["name"] == name)
    assert entry["stats"]["abs_max"] == 0.0 and entry["init"]["expected"]["label"] == "ones"


def test_a_matrix_blown_far_past_its_init_scale_is_exploding_norm(tmp_path: Path) -> None:
    """An MLP weight 3,000× its trained values (abs max ~300, far below fp16's 65504) drew no finding. Now
    `exploding-norm` (warn) with the ratio of its root mean square to its init's, as float64 computes it; the one
    300× its values (a scale training can still reach in position tables) is left alone, as is the fresh model."""
    folder = tmp_path / "llama"
    tensors = _tiny_llama(folder)
    code, fresh = _stats_json(folder, "--fail-on", "warn")
    assert not [f for f in fresh["findings"] if f["code"] == "exploding-norm"]
    blown, scaled = "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight"
    tensors[blown] = tensors[blown] * 3000
    tensors[scaled] = tensors[scaled] * 300
    _resave(folder, tensors)
    code, report = _stats_json(folder, "--fail-on", "warn")
    found = _codes(report)
    finding = found[("exploding-norm", blown)]
    assert code == 1 and finding["severity"] == "warn"
    values = tensors[blown].double()
    ratio = float(values.square().mean().sqrt()) / 0.02  # LlamaConfig's initializer_range
    assert f"{ratio:,.0f}×" in finding["message"], (finding["message"], ratio)
    assert ("exploding-norm", scaled) not in found
    assert not [f for f in report["findings"] if f["code"] == "fp16-overflow"]


def test_one_spike_is_extreme_outliers_not_exploding_norm(tmp_path: Path) -> None:
    """One value of 1e4 in a 64×32 weight makes its root mean square ~11,000× its init's: the spike's finding
    (`extreme-outliers`, ~45σ) stands alone, not a second one saying the whole matrix grew."""
    folder = tmp_path / "llama"
    tensors = _tiny_llama(folder)
    name = "model.layers.0.mlp.up_proj.weight"
    tensors[name] = tensors[name].clone()
    tensors[name][3, 7] = 1e4
    _resave(folder, tensors)
    _, report = _stats_json(folder)
    assert [f["code"] for f in report["findings"] if f["tensor"] == name] == ["extreme-outliers"]


def _tiny_whisper(folder: Path, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=100, num_mel_bins=8, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=16,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    transformers.WhisperForConditionalGeneration(config).to(dtype).save_pretrained(folder)


def test_whispers_sinusoidal_position_table_is_no_init_and_no_unbroken_symmetry(tmp_path: Path) -> None:
    """Whisper's encoder copies sinusoids over its position embedding's normal_ (transformers' `init.copy_`). The
    recorder missed copy_: the expected init was normal(0, 0.02), the table "trained", and in fp16 its slowest
    columns (cos ≈ 1 at every position) repeat exactly: "duplicate-columns ... re-initialize randomly" on a
    healthy fresh model. Now its rule is copy_, not judged, and its repeats no finding."""
    folder = tmp_path / "whisper"
    _tiny_whisper(folder, torch.float16)
    name = "model.encoder.embed_positions.weight"
    table = load_file(folder / "model.safetensors")[name].double()
    repeated = sum(1 for j in range(table.shape[1]) if any(torch.equal(table[:, j], table[:, i]) for i in range(j)))
    assert repeated > 0  # the oracle: the fp16 table does repeat columns
    code, report = _stats_json(folder)
    entry = next(t for t in report["tensors"] if t["name"] == name)
    assert entry["stats"]["duplicate_cols"] == repeated
    assert entry["init"]["expected"]["label"] == "other" and entry["init"]["expected"]["params"]["function"] == "copy_"
    assert entry["init"]["at_init"] is None
    assert not [f for f in report["findings"] if f["tensor"] == name], report["findings"]
    assert [f["code"] for f in report["findings"]] == ["checkpoint-at-init"]


def test_statistics_equal_a_float64_oracle_in_every_dtype(tmp_path: Path) -> None:
    """Every statistic of a faulted tiny Llama in float32, float16, bfloat16 and float8_e4m3fn equals float64
    numpy-style arithmetic on the stored values: counts exactly, extremes exactly, moments to 1e-9 relative (the
    sums are float64 combinations of float32 pieces of ≤16K values: measured error ~1e-10)."""
    folder = tmp_path / "llama"
    tensors = _tiny_llama(folder)
    q = "model.layers.0.self_attn.q_proj.weight"
    tensors[q] = tensors[q].clone()
    tensors[q][3, 5] = math.nan
    tensors[q][0, 0] = math.inf
    up = "model.layers.0.mlp.up_proj.weight"
    tensors[up] = tensors[up].clone()
    tensors[up][[2, 9]] = 0
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn):
        _resave(folder, {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()})
        _, report = _stats_json(folder)
        stored = load_file(folder / "model.safetensors")
        for entry in report["tensors"]:
            values = stored[entry["name"]].float().double().reshape(-1)
            finite = values[torch.isfinite(values)]
            stats = entry["stats"]
            assert stats["count"] == values.numel() and stats["nan"] == int(values.isnan().sum())
            assert stats["inf"] == int(values.isinf().sum())
            assert stats["min"] == float(finite.min()) and stats["max"] == float(finite.max())
            assert stats["zero_fraction"] == pytest.approx(float((finite == 0).double().mean()), rel=1e-12)
            centred = finite - finite.mean()
            std = float(centred.square().mean().sqrt())
            assert stats["mean"] == pytest.approx(float(finite.mean()), rel=1e-9, abs=1e-12)
            if std:
                assert stats["std"] == pytest.approx(std, rel=1e-9)
                kurtosis = float(centred.pow(4).mean()) / std ** 4 - 3
                assert stats["kurtosis"] == pytest.approx(kurtosis, rel=1e-7, abs=1e-9)
            shape = stored[entry["name"]].shape
            if len(shape) == 2:
                matrix = stored[entry["name"]].float().double()
                assert stats["zero_rows"] == int((matrix == 0).all(1).sum())
                assert stats["zero_cols"] == int((matrix == 0).all(0).sum())
        found = _codes(report)
        assert ("nan-inf", q) in found and found[("dead-rows", up)]["message"].startswith("2 of 64 rows")


def test_mambas_computed_a_log_is_neither_dead_nor_duplicated(tmp_path: Path) -> None:
    """A fresh Mamba's A_log is log(1..N) copied into every row (`init.copy_`): every row equal, its first column
    log 1 = 0. Four warnings on a healthy fresh model ("dead-columns ... inputs this layer ignores", "duplicate-rows
    ... symmetry never broken"); now its rule is copy_ and a computed table's zeros and repeats are no finding."""
    torch.manual_seed(0)
    config = transformers.MambaConfig(vocab_size=100, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2,
                                      conv_kernel=4)
    folder = tmp_path / "mamba"
    transformers.MambaForCausalLM(config).save_pretrained(folder)
    name = "backbone.layers.0.mixer.A_log"
    table = load_file(folder / "model.safetensors")[name].double()
    _, report = _stats_json(folder)
    entry = next(t for t in report["tensors"] if t["name"] == name)
    assert entry["stats"]["zero_cols"] == int((table == 0).all(0).sum()) == 1
    assert entry["stats"]["duplicate_rows"] == table.shape[0] - 1
    assert entry["init"]["expected"]["params"]["function"] == "copy_"
    assert [f["code"] for f in report["findings"]] == ["checkpoint-at-init"], report["findings"]
