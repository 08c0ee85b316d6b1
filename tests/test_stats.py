"""Streamed statistics, --sample reads, expected inits and the JSON merge, below the CLI."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from weightdoctor.checkpoint import open_checkpoint
from weightdoctor.expected_init import expected_inits, from_call, guess_default, matches_expected
from weightdoctor.init_classify import InitResult
from weightdoctor.stats import CHUNK, iter_stats, stats_of_tensor, summarize_values, tensor_stats

# The machine running the suite is shared: on small tensors, extra torch threads only add contention.
pytestmark = pytest.mark.usefixtures("one_torch_thread")



def _reference(t: torch.Tensor) -> dict[str, float]:
    x = t.double().flatten()
    x = x[torch.isfinite(x)]
    centred = x - x.mean()
    m2 = float(centred.square().mean())
    return {"mean": float(x.mean()), "std": math.sqrt(m2), "min": float(x.min()), "max": float(x.max()),
            "kurtosis": float(centred.pow(4).mean()) / m2**2 - 3}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_moments_match_float64_reference(dtype: torch.dtype) -> None:
    t = (torch.randn(300, 77, generator=torch.Generator().manual_seed(1)) * 0.3 + 0.5).to(dtype)
    s = summarize_values(t.flatten(), shape=(300, 77))
    ref = _reference(t)
    assert s.count == 300 * 77 and s.nan == 0 and s.inf == 0
    assert s.mean == pytest.approx(ref["mean"], rel=1e-5)
    assert s.std == pytest.approx(ref["std"], rel=1e-5)
    assert (s.min, s.max) == (ref["min"], ref["max"])
    assert s.abs_max == max(abs(ref["min"]), abs(ref["max"]))
    assert s.kurtosis == pytest.approx(ref["kurtosis"], abs=1e-4)


def test_chunked_reduction_equals_single_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    t = torch.randn(1000, 33, generator=torch.Generator().manual_seed(2)) * 2 + 7
    whole = summarize_values(t.flatten(), shape=(1000, 33))
    monkeypatch.setattr("weightdoctor.stats.CHUNK", 100)  # 3 rows per block
    chunked = summarize_values(t.flatten(), shape=(1000, 33))
    flat_chunked = summarize_values(t.flatten())
    for other in (chunked, flat_chunked):
        assert other.mean == pytest.approx(whole.mean, rel=1e-6)
        assert other.std == pytest.approx(whole.std, rel=1e-6)
        assert other.kurtosis == pytest.approx(whole.kurtosis, abs=1e-5)
        assert (other.min, other.max) == (whole.min, whole.max)
    assert CHUNK == 1 << 24


def test_nan_inf_zeros_and_rows() -> None:
    t = torch.randn(40, 30, generator=torch.Generator().manual_seed(3))
    t[2, 3] = float("nan")
    t[5, :] = float("nan")
    t[7, 1] = float("inf")
    t[8, 2] = float("-inf")
    t[10] = 0.0
    t[20] = 0.0
    t[30] = t[31]
    s = summarize_values(t.flatten(), shape=(40, 30))
    assert (s.nan, s.inf) == (31, 2)
    assert s.zero_rows == 2 and s.zero_row_index == (10, 20)
    assert s.duplicate_rows == 1
    assert s.duplicate_cols == 0  # a NaN row makes every column unequal to every other
    assert s.zero_fraction == pytest.approx(60 / (1200 - 33))
    finite = t[torch.isfinite(t)].double()
    assert s.mean == pytest.approx(float(finite.mean()), rel=1e-6)


def test_duplicate_columns_of_a_conv_kernel() -> None:
    t = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(5))
    t[:, 1] = t[:, 0]  # input channel 1 repeats channel 0: 9 columns of the (16, 72) matrix repeat
    s = summarize_values(t.flatten(), shape=(16, 8, 3, 3))
    assert s.duplicate_cols == 9 and s.duplicate_rows == 0 and s.zero_rows == 0


def test_all_nan_tensor() -> None:
    s = summarize_values(torch.full((10,), float("nan")))
    assert s.nan == 10 and math.isnan(s.mean)


def test_input_tensor_is_not_modified() -> None:
    t = torch.randn(64, 64)
    before = t.clone()
    stats_of_tensor("w", t)
    stats_of_tensor("w", t.bfloat16())
    assert torch.equal(t, before)


def test_sample_reads_a_deterministic_part(tmp_path: Path) -> None:
    big = torch.randn(2000, 500, generator=torch.Generator().manual_seed(4)) * 0.05
    save_file({"w": big, "b": torch.zeros(10)}, tmp_path / "m.safetensors")
    with open_checkpoint(tmp_path / "m.safetensors") as checkpoint:
        info = checkpoint.tensor_info("w")
        first = tensor_stats(checkpoint, info, sample=20_000)
        second = tensor_stats(checkpoint, info, sample=20_000)
        full = tensor_stats(checkpoint, info)
    assert first.stats.sampled and first.stats.count == 20_000
    assert first.stats == second.stats
    assert not full.stats.sampled and full.stats.count == 1_000_000
    assert first.stats.std == pytest.approx(full.stats.std, rel=0.03)
    assert torch.equal(first.sample.values, second.sample.values)
    assert first.sample.rows is not None and first.sample.rows.shape == (64, 500)


def test_sample_reads_pickles_too(fx: dict[str, Path]) -> None:
    with open_checkpoint(fx["files"] / "bert.bin") as checkpoint:
        results = list(iter_stats(checkpoint, [checkpoint.tensor_info("bert.embeddings.word_embeddings.weight")],
                                  sample=1000))
    assert results[0].stats.sampled and results[0].stats.count == 1000


def test_iter_stats_rejects_bad_sample(fx: dict[str, Path]) -> None:
    from weightdoctor.errors import UsageError

    with open_checkpoint(fx["bert"]) as checkpoint, pytest.raises(UsageError, match="--sample"):
        list(iter_stats(checkpoint, checkpoint.tensors, sample=0))


def test_expected_inits_read_the_real_gpt2_rules(fx: dict[str, Path]) -> None:
    with open_checkpoint(fx["gpt2"]) as checkpoint:
        expected = expected_inits(checkpoint.tensors, checkpoint.config)
    assert expected.method == "transformers" and expected.model_class == "GPT2LMHeadModel"
    by = expected.by_name
    # GPT-2 scales its residual projections by 1/√(2·n_layer) (n_layer = 2 here): read from its code.
    assert by["transformer.h.0.attn.c_proj.weight"].params["std"] == pytest.approx(0.02 / math.sqrt(4))
    assert by["transformer.h.0.attn.c_attn.weight"].params["std"] == pytest.approx(0.02)
    assert by["transformer.h.0.ln_1.weight"].label == "ones" and by["transformer.h.0.ln_1.bias"].label == "zeros"
    assert "GPT2LMHeadModel._init_weights" in by["transformer.wte.weight"].source


def test_expected_inits_padding_row(fx: dict[str, Path]) -> None:
    with open_checkpoint(fx["roberta"]) as checkpoint:
        expected = expected_inits(checkpoint.tensors, checkpoint.config)
    word = expected.by_name["roberta.embeddings.word_embeddings.weight"]
    assert word.label == "normal" and word.zero_rows == (1,)  # RoBERTa's pad_token_id is 1


def test_a_padding_row_overwritten_by_a_later_init_is_not_expected_zero(tmp_path: Path) -> None:
    """ModernBERT's nn.Embedding zeroes its padding row, then ModernBertEmbeddings' rule redraws the whole
    matrix with trunc_normal_: the saved row 0 is not zero, and must not be expected so (a dead-rows finding
    on it would be excused as padding). Only a row zeroed after the whole tensor's last init counts."""
    from safetensors.torch import load_file
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    torch.manual_seed(0)
    config = ModernBertConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=2, max_position_embeddings=32, pad_token_id=0, bos_token_id=1,
                              eos_token_id=2, cls_token_id=1, sep_token_id=2)
    ModernBertForMaskedLM(config).save_pretrained(tmp_path)
    name = "model.embeddings.tok_embeddings.weight"
    assert float(load_file(tmp_path / "model.safetensors")[name][0].abs().max()) > 0
    with open_checkpoint(tmp_path) as checkpoint:
        expected = expected_inits(checkpoint.tensors, checkpoint.config)
    assert expected.by_name[name].label == "truncated_normal" and expected.by_name[name].zero_rows == ()


def test_expected_inits_bare_state_dict_guesses() -> None:
    from weightdoctor.checkpoint import TensorInfo

    infos = [TensorInfo("enc.fc.weight", (64, 256), "float32", ""), TensorInfo("enc.fc.bias", (64,), "float32", ""),
             TensorInfo("enc.norm.weight", (64,), "float32", ""), TensorInfo("enc.norm.bias", (64,), "float32", ""),
             TensorInfo("tok_embeddings.weight", (100, 64), "float32", "")]
    expected = expected_inits(infos, None)
    assert expected.method == "pytorch-defaults"
    by = expected.by_name
    assert by["enc.fc.weight"].label == "kaiming_uniform" and by["enc.fc.weight"].params["bound"] == pytest.approx(
        1 / 16)
    assert by["enc.fc.bias"].label == "uniform" and by["enc.fc.bias"].params["bound"] == pytest.approx(1 / 16)
    assert by["enc.norm.weight"].label == "ones" and by["enc.norm.weight"].confident
    assert by["enc.norm.bias"].label == "zeros"
    assert by["tok_embeddings.weight"].params == {"mean": 0.0, "std": 1.0}
    assert guess_default(TensorInfo("step", (), "float32", ""), {}) is None


def test_unknown_model_type_falls_back_with_a_warning() -> None:
    from weightdoctor.checkpoint import TensorInfo

    expected = expected_inits([TensorInfo("x.weight", (8, 8), "float32", "")], {"model_type": "no-such-model"})
    assert expected.method == "pytorch-defaults" and "could not build the model" in expected.warning


def test_trunc_normal_default_bounds_expected_as_normal() -> None:
    e = from_call("trunc_normal_", {"mean": 0.0, "std": 0.02, "a": -2.0, "b": 2.0}, (8, 8), "x")
    assert e.label == "normal" and "cut nothing" in e.source
    e = from_call("trunc_normal_", {"mean": 0.0, "std": 0.02, "a": -0.04, "b": 0.04}, (8, 8), "x")
    assert e.label == "truncated_normal"


def test_matches_expected_tolerances() -> None:
    expected = from_call("normal_", {"mean": 0.0, "std": 0.02}, (64, 64), "x")
    assert matches_expected(InitResult("normal", {"mean": 0.0, "std": 0.0203}, family="normal"), expected, 4096)
    assert not matches_expected(InitResult("normal", {"mean": 0.0, "std": 0.03}, family="normal"), expected, 4096)
    assert not matches_expected(InitResult("uniform", {"bound": 0.035}, family="uniform"), expected, 4096)
    assert matches_expected(InitResult("undetermined"), expected, 10) is None


def test_json_merge_adds_stats_init_and_findings(fx: dict[str, Path]) -> None:
    from weightdoctor.health import analyze_weights
    from weightdoctor.render.json import to_jsonable
    from weightdoctor.render.stats import merge_stats_json
    from weightdoctor.structure import inspect_checkpoint

    with open_checkpoint(fx["bert"]) as checkpoint:
        report = inspect_checkpoint(checkpoint)
        weights = analyze_weights(checkpoint)
    data = merge_stats_json(to_jsonable(report), weights, {"classifier.weight"})
    entry = next(t for t in data["tensors"] if t["name"] == "bert.pooler.dense.weight")
    assert set(entry["stats"]) >= {"mean", "std", "min", "max", "zero_fraction", "nan", "inf"}
    assert entry["init"]["label"] == "normal" and entry["init"]["candidates"] == []
    assert entry["init"]["expected"]["label"] == "normal" and entry["init"]["at_init"] is True
    assert "histogram" in next(t for t in data["tensors"] if t["name"] == "classifier.weight")
    assert data["findings"] == [{"severity": "warn", "code": "checkpoint-at-init", "tensor": None,
                                 "message": data["findings"][0]["message"], "hint": data["findings"][0]["hint"]}]
    assert data["weights"]["expected_from"] == "transformers" and data["weights"]["state"] == "initialization"


def _mean_std(x: torch.Tensor) -> tuple[float, float]:
    wide = x.double()
    return float(wide.mean()), float(wide.std(unbiased=False))


@pytest.mark.parametrize("case", ["large", "offset", "huge-constant", "huge-column"])
def test_moments_are_float64_accurate(case: str) -> None:
    generator = torch.Generator().manual_seed(5)
    if case == "large":  # > EXACT_KURTOSIS_MAX values: one float32 dot drifted by 2e-4 here
        x = torch.randn(3000, 4096, generator=generator)
    elif case == "offset":  # mean 1000, spread 0.001: a float32 total is off by a tenth of the spread
        x = 1000 + 0.001 * torch.randn(3000, 4000, generator=generator)
    elif case == "huge-constant":  # the float32 sum overflows to inf
        x = torch.full((64, 64), 3e38)
    else:  # squares overflow float32
        x = torch.randn(4096, 256, generator=generator)
        x[:, 0] = 1e30
    s = summarize_values(x.flatten(), shape=tuple(x.shape))
    mean, std = _mean_std(x)
    assert math.isfinite(s.mean) and math.isfinite(s.std)
    assert s.mean == pytest.approx(mean, rel=1e-7, abs=1e-4 * std)
    assert s.std == pytest.approx(std, rel=1e-6, abs=1e-30)


def test_a_dominant_column_does_not_make_duplicate_search_quadratic() -> None:
    """Every row then projects to nearly the same key; rows are grouped by digest, not compared pairwise."""
    x = torch.randn(16384, 64, generator=torch.Generator().manual_seed(6))
    x[:, 0] = 1e6
    x[100] = x[7]
    x[200] = x[7]
    start = time.perf_counter()
    s = summarize_values(x.flatten(), shape=tuple(x.shape))
    assert time.perf_counter() - start < 20  # was 82 s; ~0.1 s now (a bound, not a benchmark)
    assert s.duplicate_rows == 2 and s.duplicate_cols == 0


def test_long_1d_tensors_and_values_near_the_float32_square_limit() -> None:
    ragged = torch.randn(CHUNK + 5, generator=torch.Generator().manual_seed(7))  # no multiple of CHUNK: crashed
    s = summarize_values(ragged)
    assert s.count == CHUNK + 5 and s.std == pytest.approx(float(ragged.double().std(unbiased=False)), rel=1e-6)
    big = summarize_values(torch.full(((1 << 20) + 1,), 2e17))  # 16,384 squares of 2e17 overflow float32
    assert big.std == 0.0 and big.mean == pytest.approx(2e17, rel=1e-7)


def test_lines_equal_but_for_the_sign_of_a_zero_are_duplicates() -> None:
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(8))
    x[2, 1], x[5] = 0.0, x[2]
    x[5, 1] = -0.0  # torch.equal(x[2], x[5]) holds
    assert torch.equal(x[2], x[5])
    assert summarize_values(x.flatten(), shape=(8, 6)).duplicate_rows == 1
