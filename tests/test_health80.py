"""health80: inspect --stats's known misjudgements left by review79, on real tiny transformers checkpoints.

Faults: a Llama trained 5 Adam steps (lr 1e-3) read "initialization ... has not been trained"; a float8_e4m3fn copy
of a fresh model at a small init scale read "trained"; a tensor with one NaN said "1 NaN and 0 Inf" twice in its
row; and extreme-outliers could not fire on 626 values or fewer (one spike reaches at most √(n−1) σ < 25).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import run_cli

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _llama(initializer_range: float = 0.02) -> Any:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32,
                                      tie_word_embeddings=False, initializer_range=initializer_range)
    return transformers.LlamaForCausalLM(config)


def _adam_steps(model: Any, steps: int = 5, lr: float = 1e-3) -> None:
    torch.manual_seed(1)
    ids = torch.randint(3, 100, (4, 12))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()


def _stats_json(path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("inspect", str(path), "--stats", "--json", *extra)
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, json.loads(result.stdout)


def _codes(report: dict[str, Any]) -> list[str]:
    return [f["code"] for f in report["findings"]]


def test_five_adam_steps_are_training_not_initialization(tmp_path: Path) -> None:
    """Five Adam steps at lr 1e-3 widen each 0.02 matrix by ~3%, within one matrix's noise (1,024 values: ±2%):
    the checkpoint read "initialization ... this checkpoint has not been trained". Pooled, each value over its
    init's variance, the 24,832 values hold ~5.8% more variance than the inits give, 6 standard deviations: now
    "trained" with an info finding saying so; the fresh model stays "initialization", and its warning no longer
    claims more than the values can tell."""
    fresh = tmp_path / "fresh"
    _llama().save_pretrained(fresh)
    code, report = _stats_json(fresh)
    assert report["weights"]["state"] == "initialization" and _codes(report) == ["checkpoint-at-init"]
    assert report["findings"][0]["message"].endswith("has not been trained (or too little to tell)")
    assert report["weights"]["pooled_spread"]["moved"] is False

    trained = tmp_path / "trained"
    model = _llama()
    _adam_steps(model)
    model.save_pretrained(trained)
    code, report = _stats_json(trained, "--fail-on", "warn")
    assert report["weights"]["state"] == "trained" and _codes(report) == ["briefly-trained"], report["findings"]
    assert code == 0 and report["findings"][0]["severity"] == "info"
    # The oracle: float64 mean square of every matrix over normal(0, 0.02)'s, all of them pooled.
    matrices = [v.double() for v in load_file(trained / "model.safetensors").values() if v.dim() == 2]
    values = sum(m.numel() for m in matrices)
    ratio = sum(float(m.square().sum()) for m in matrices) / (values * 0.02 ** 2)
    pooled = report["weights"]["pooled_spread"]
    assert pooled["values"] == values and pooled["variance_ratio"] == pytest.approx(ratio, rel=1e-9)
    assert pooled["z"] == pytest.approx((ratio - 1) * math.sqrt(values / 2), rel=1e-9) and pooled["z"] > 4
    assert f"{ratio:.1%} of the variance" in report["findings"][0]["message"]
    text = " ".join(run_cli("inspect", str(trained), "--stats").stdout.split())
    assert f"state: trained (0.0% of matrix parameters moved enough to tell alone; pooled, they hold {ratio:.1%}" \
        in text


def test_a_float8_copy_of_a_small_scale_init_is_still_at_initialization(tmp_path: Path) -> None:
    """A fresh Llama at initializer_range 0.005, cast to float8_e4m3fn: its values fall on a few dozen grid points
    (most of them subnormals below 2^-6). Compared with the normal CDF at the grid points themselves, every step
    missed by half its height: "the value distribution fits no init family", every matrix "trained". Now the
    steps are compared at the cells' edges and each matrix fits its init."""
    model = _llama(0.005)
    tensors = {k: v.detach().to(torch.float8_e4m3fn) for k, v in model.state_dict().items()}
    fp8 = {k: v for k, v in tensors.items() if v.dim() == 2}
    assert all(len(v.float().unique()) < 40 for v in fp8.values())  # the oracle: a coarse grid
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(model.config.to_json_string())
    _, report = _stats_json(tmp_path)
    labels = {t["name"]: t["init"] for t in report["tensors"] if t["name"] in fp8}
    assert all(init["at_init"] is True and init["label"] != "trained" for init in labels.values()), labels
    assert report["weights"]["state"] == "initialization" and _codes(report) == ["checkpoint-at-init"]


def test_a_coarse_grid_of_a_few_values_is_undetermined_not_trained() -> None:
    """At a 0.001 scale float8 keeps 5 values (0, ±2^-9, ±2^-8): no family's shape shows in 5 points, and calling
    them "trained" was a guess. Now undetermined, saying why."""
    from weightdoctor.health import _tensor_health
    from weightdoctor.stats import stats_of_tensor

    torch.manual_seed(0)
    weights = (torch.randn(64, 64) * 0.001).to(torch.float8_e4m3fn)
    distinct = len(weights.float().unique())
    item = _tensor_health(stats_of_tensor("w.weight", weights), None, None)
    assert item.init.label == "undetermined" and item.at_init is None
    assert item.init.reason == f"only {distinct} distinct values: too coarse a grid to tell a distribution"


def test_a_nan_is_said_once_in_the_init_table(tmp_path: Path) -> None:
    """A matrix with one NaN: its row read "undetermined (1 NaN and 0 Inf values) 1 NaN, 0 Inf", and the finding
    "1 NaN and 0 Inf value(s) out of 4,096". Now the row says "undetermined (1 NaN)" and the finding
    "1 NaN among 4,096 values": each fact once, and no count of what is not there."""
    from rich.console import Console

    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.health import analyze_weights
    from weightdoctor.render.stats import render_stats

    torch.manual_seed(0)
    weights = torch.randn(64, 64) * 0.02
    weights[3, 5] = math.nan
    save_file({"a.weight": weights, "b.weight": torch.randn(64, 64) * 0.02}, tmp_path / "nan.safetensors")
    with open_checkpoint(tmp_path / "nan.safetensors") as checkpoint:
        report = analyze_weights(checkpoint)
    out = io.StringIO()
    render_stats(report, Console(file=out, width=200, no_color=True, force_terminal=False))
    [row] = [line for line in out.getvalue().splitlines() if "│ a.weight" in line and "undetermined" in line]
    assert "undetermined (1 NaN)" in row and row.count("NaN") == 1 and "Inf" not in row, row
    [finding] = [f for f in report.findings if f.code == "nan-inf"]
    assert finding.message == "1 NaN among 4,096 values"


def _spiked_llama(folder: Path) -> dict[str, torch.Tensor]:
    _llama().save_pretrained(folder)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.0.input_layernorm.weight"][5] = 1e4
    tensors["model.layers.0.self_attn.k_proj.weight"][1, 2] = 3.0
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return tensors


def test_one_spike_in_a_small_tensor_is_extreme_outliers(tmp_path: Path) -> None:
    """A 1e4 among a norm's 32 ones reads 5.6σ, a 3.0 among a 16×32 k_proj's 0.02s 22σ: with the spike inside
    the std, 626 values or fewer never reach 25σ, and neither drew a finding. Against the others' std (or, when
    the others are all equal, their value), each stands beyond 100 of them and is now extreme-outliers, with the
    distance float64 gives."""
    tensors = _spiked_llama(tmp_path)
    _, report = _stats_json(tmp_path)
    found = {f["tensor"]: f["message"] for f in report["findings"] if f["code"] == "extreme-outliers"}
    assert found["model.layers.0.input_layernorm.weight"] == "one value is 1e+04 where the other 31 are all 1"
    values = tensors["model.layers.0.self_attn.k_proj.weight"].double().flatten()
    others = torch.cat([values[:34], values[35:]])  # the spike sits at row 1, column 2 of 32 columns
    sigmas = abs(3.0 - float(others.mean())) / float(others.std(unbiased=False))
    with_spike = (3.0 - float(values.mean())) / float(values.std(unbiased=False))
    assert with_spike < 25 and sigmas > 100  # the oracle: the old rule could not see it, the new one must
    assert found["model.layers.0.self_attn.k_proj.weight"] == (
        f"one value stands {sigmas:,.0f} standard deviations of the other 511 from their mean (abs max 3)")
    assert set(found) == {"model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.k_proj.weight"}


def test_small_tensors_of_fresh_and_briefly_trained_models_have_no_spike(tmp_path: Path) -> None:
    """The small-tensor rule on healthy norms, biases and small matrices: a fresh and a 5-step GPT-2 (biases and
    LayerNorm weights and biases, 32 values each) and Llama (RMSNorm scales, 16×32 projections) draw none."""
    for name in ("gpt2", "llama"):
        for steps in (0, 5):
            torch.manual_seed(0)
            model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
                vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32)) if name == "gpt2" else _llama()
            if steps:
                _adam_steps(model, steps)
            folder = tmp_path / f"{name}-{steps}"
            model.save_pretrained(folder)
            _, report = _stats_json(folder)
            assert "extreme-outliers" not in _codes(report), report["findings"]


def test_an_outlier_dimension_of_a_trained_norm_is_no_spike(tmp_path: Path) -> None:
    """Trained norm scales keep outlier dimensions tens of σ from the others (the whole-std rule lets one 58σ out
    pass at 768 values): a 384-wide LayerNorm scale of 1 ± 0.05 with one dimension at 3.0 (40σ) is no finding;
    at 11.0 (200σ) it is."""
    torch.manual_seed(0)
    scale = 1 + 0.05 * torch.randn(384)
    found = {}
    for spike in (3.0, 11.0):
        scale[7] = spike
        save_file({"encoder.norm.weight": scale, "encoder.proj.weight": 0.02 * torch.randn(64, 64)},
                  tmp_path / "model.safetensors")
        _, report = _stats_json(tmp_path / "model.safetensors")
        found[spike] = [f["message"] for f in report["findings"] if f["code"] == "extreme-outliers"]
    others = torch.cat([scale[:7], scale[8:]]).double()
    sigmas = (11.0 - float(others.mean())) / float(others.std(unbiased=False))
    assert found[3.0] == [] and found[11.0] == [
        f"one value stands {sigmas:,.0f} standard deviations of the other 383 from their mean (abs max 11)"]
