"""`weightdoctor inspect --stats` through the CLI: planted defects found, clean checkpoints quiet."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from fixtures.planted import build_planted
from tests.helpers import run_cli, run_json

# The machine running the suite is shared: on small tensors, extra torch threads only add contention.
pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny BERT trained for 300 seeded AdamW steps, and copies of it with planted defects."""
    return build_planted(tmp_path_factory.mktemp("planted"))


def _codes(data: dict) -> list[tuple[str, str, str | None]]:
    return [(f["severity"], f["code"], f["tensor"]) for f in data["findings"]]


def test_clean_trained_model_has_no_findings(planted: dict[str, Path]) -> None:
    code, data = run_json("inspect", planted["trained"], "--stats", "--fail-on", "warn")
    assert code == 0
    assert data["findings"] == []
    assert data["weights"]["state"] == "trained" and data["weights"]["trained_share"] == 1.0
    matrices = [t for t in data["tensors"] if len(t["shape"]) == 2 and t["num_params"] >= 512]
    assert matrices and all(t["init"]["label"] == "trained" for t in matrices)


def test_untrained_head_on_trained_body(planted: dict[str, Path]) -> None:
    code, data = run_json("inspect", planted["untrained-head"], "--stats", "--fail-on", "warn")
    assert code == 1
    # Its 2-value bias is still exactly zero too: any count of values tells a constant apart. The weight's finding
    # says so (it was an info of its own, "fine if this parameter gets no gradient": a head's bias always gets one).
    assert _codes(data) == [("warn", "untrained-tensor", "classifier.weight")]
    message = data["findings"][0]["message"]
    assert message.endswith("; so does its bias classifier.bias (exactly zeros, as at initialization)"), message
    assert "normal(0, 0.02)" in message and "trained" in message
    head = next(t for t in data["tensors"] if t["name"] == "classifier.weight")
    assert head["init"]["label"] == "normal" and head["init"]["at_init"] is True
    assert head["init"]["note"] == "normal(0, 0.02) = initializer_range"


def test_untrained_head_share_under_filter_is_the_selections(planted: dict[str, Path]) -> None:
    """With --filter only the selection is read: its share is said to be the selection's, not the checkpoint's."""
    _, whole = run_json("inspect", planted["untrained-head"], "--stats")
    _, part = run_json("inspect", planted["untrained-head"], "--stats", "--filter",
                       r"classifier|layer\.0\.attention\.self\.query")
    assert part["weights"]["trained_share"] != whole["weights"]["trained_share"]
    for data, of_what in ((whole, "of the checkpoint's"), (part, "of the selected tensors'")):
        (finding,) = [f for f in data["findings"] if f["code"] == "untrained-tensor"]
        assert f"{data['weights']['trained_share']:.1%} {of_what} matrix parameters have trained" in \
            finding["message"], finding["message"]


def test_nan_values_are_an_error(planted: dict[str, Path]) -> None:
    name = "bert.encoder.layer.1.attention.self.value.weight"
    code, data = run_json("inspect", planted["nan"], "--stats", "--fail-on", "error")
    assert code == 1
    assert _codes(data) == [("error", "nan-inf", name)]
    entry = next(t for t in data["tensors"] if t["name"] == name)
    assert entry["stats"]["nan"] == 5 and entry["stats"]["inf"] == 1
    assert entry["init"]["label"] == "undetermined"
    code, _ = run_json("inspect", planted["nan"], "--stats")
    assert code == 0  # without --fail-on, findings are reported, not failed on


def test_dead_rows(planted: dict[str, Path]) -> None:
    code, data = run_json("inspect", planted["dead-rows"], "--stats", "--fail-on", "error")
    assert code == 0  # dead rows are a warning
    assert _codes(data) == [("warn", "dead-rows", "bert.encoder.layer.0.intermediate.dense.weight")]
    assert "3 of 128 rows are all zero (dead units: 4, 17, 90)" in data["findings"][0]["message"]


def test_duplicated_rows(planted: dict[str, Path]) -> None:
    code, data = run_json("inspect", planted["dup-rows"], "--stats", "--fail-on", "warn")
    assert code == 1
    assert _codes(data) == [("warn", "duplicate-rows", "bert.encoder.layer.0.attention.self.query.weight")]
    assert data["findings"][0]["message"].startswith("5 rows repeat another row exactly")


@pytest.mark.parametrize("name", ["bert", "gpt2", "roberta", "bert-bin"])
def test_fresh_fixtures_are_only_at_initialization(fx: dict[str, Path], name: str) -> None:
    # The shared fixtures are freshly initialized models: the one thing to say is that they never trained.
    code, data = run_json("inspect", fx[name], "--stats", "--fail-on", "warn")
    assert code == 1
    assert _codes(data) == [("warn", "checkpoint-at-init", None)]
    assert data["weights"]["state"] == "initialization"
    assert data["weights"]["expected_from"] == "transformers"


def test_bare_state_dict_uses_pytorch_defaults(fx: dict[str, Path]) -> None:
    code, data = run_json("inspect", fx["files"] / "gpt2-tied.bin", "--stats")
    assert code == 0
    assert data["weights"]["expected_from"] == "pytorch-defaults"
    assert _codes(data) == [("warn", "checkpoint-at-init", None)]
    ln = next(t for t in data["tensors"] if t["name"] == "transformer.h.0.ln_1.weight")
    assert ln["init"]["label"] == "ones" and ln["init"]["expected"]["label"] == "ones"


def test_table_output(planted: dict[str, Path]) -> None:
    result = run_cli("inspect", planted["untrained-head"], "--stats", "--all")
    assert result.exit_code == 0
    out = result.stdout
    assert "Weights: statistics and initialization" in out
    assert "untrained-tensor" in out and "classifier.weight" in out
    assert "state: trained" in out and "BertForSequenceClassification's own init rules" in out
    assert result.stderr == ""


def test_hist(planted: dict[str, Path]) -> None:
    result = run_cli("inspect", planted["trained"], "--hist", "classifier.weight")
    assert result.exit_code == 0
    assert "classifier.weight 2×64 float32" in result.stdout and "█" in result.stdout
    assert "all 128 values" in result.stdout
    result = run_cli("inspect", planted["trained"], "--hist", "no_such_tensor")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --hist 'no_such_tensor': no tensor has that name or matches it"


def test_sample_is_said(planted: dict[str, Path]) -> None:
    code, data = run_json("inspect", planted["trained"], "--sample", "1000")
    assert code == 0 and data["weights"]["sample"] == 1000
    entry = next(t for t in data["tensors"] if t["name"] == "bert.encoder.layer.0.intermediate.dense.weight")
    assert entry["stats"]["sampled"] is True and entry["stats"]["count"] == 1000
    small = next(t for t in data["tensors"] if t["name"] == "classifier.weight")
    assert small["stats"]["sampled"] is False  # 128 values: all of them were read
    result = run_cli("inspect", planted["trained"], "--sample", "1000")
    assert "sample of 1,000 values per tensor" in result.stdout


def test_plot(planted: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "report.png"
    result = run_cli("inspect", planted["trained"], "--plot", str(target), "--filter", "dense.weight")
    assert result.exit_code == 0, result.stderr
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot written to {target}" in result.stderr
    assert not list(tmp_path.glob(".weightdoctor-*"))
    whole = tmp_path / "whole.svg"
    result = run_cli("inspect", planted["trained"], "--plot", str(whole))
    assert result.exit_code == 0 and "std of each kind of weight across depth" in whole.read_text()


def test_depth_profile(planted: dict[str, Path]) -> None:
    from weightdoctor.checkpoint import open_checkpoint
    from weightdoctor.health import analyze_weights, depth_profile

    with open_checkpoint(planted["fresh"]) as checkpoint:
        profile = depth_profile(analyze_weights(checkpoint))
    points = profile["bert.encoder.layer.{i}.attention.self.query.weight"]
    assert [layer for layer, _ in points] == [0, 1]
    assert all(abs(std / 0.02 - 1) < 0.05 for _, std in points)
    assert not any("embeddings" in kind for kind in profile)


def test_plot_without_matplotlib(planted: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = run_cli("inspect", planted["trained"], "--plot", str(tmp_path / "x.png"))
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --plot needs matplotlib: pip install 'weightdoctor[plot]'"
    assert not (tmp_path / "x.png").exists()


def test_bad_flags(fx: dict[str, Path], tmp_path: Path) -> None:
    result = run_cli("inspect", fx["bert"], "--stats", "--fail-on", "sometimes")
    assert result.exit_code == 2 and "--fail-on 'sometimes': choose one of info, warn, error" in result.stderr
    result = run_cli("inspect", fx["bert"], "--plot", str(tmp_path / "x.txt"))
    assert result.exit_code == 2 and "give a file name ending in .png" in result.stderr


def test_plain_inspect_is_unchanged(fx: dict[str, Path]) -> None:
    code, data = run_json("inspect", fx["bert"])
    assert code == 0 and "findings" not in data and "stats" not in data["tensors"][0]


def _variant(source: Path, target: Path, changes: dict) -> Path:
    """A copy of a model folder with some tensors replaced."""
    import shutil

    from safetensors.torch import load_file, save_file

    target.mkdir()
    shutil.copy(source / "config.json", target / "config.json")
    state = load_file(source / "model.safetensors")
    state.update(changes)
    save_file(state, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_more_defects_on_a_trained_model(planted: dict[str, Path], tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    state = load_file(planted["trained"] / "model.safetensors")
    spiky = state["bert.encoder.layer.1.output.dense.weight"].clone()
    spiky[3, 7] = 1e5  # beyond fp16, and thousands of σ out
    folder = _variant(planted["trained"], tmp_path / "defects", {
        "bert.encoder.layer.0.output.dense.weight": torch.zeros(64, 128),
        "bert.encoder.layer.1.attention.output.dense.weight": torch.full((64, 64), 0.5),
        "bert.encoder.layer.1.output.dense.weight": spiky,
        "bert.encoder.layer.1.output.LayerNorm.weight": torch.ones(64),
    })
    code, data = run_json("inspect", folder, "--stats", "--fail-on", "error")
    assert code == 1
    assert sorted(_codes(data)) == sorted([
        ("error", "all-zero", "bert.encoder.layer.0.output.dense.weight"),
        ("warn", "constant", "bert.encoder.layer.1.attention.output.dense.weight"),
        ("warn", "extreme-outliers", "bert.encoder.layer.1.output.dense.weight"),
        ("warn", "fp16-overflow", "bert.encoder.layer.1.output.dense.weight"),
        ("info", "norm-at-init", "bert.encoder.layer.1.output.LayerNorm.weight"),
    ])
    assert data["findings"][0]["severity"] == "error"
    overflow = next(f for f in data["findings"] if f["code"] == "fp16-overflow")
    assert "check-dtype" in overflow["hint"]


def test_empty_and_non_finite_tensors_have_no_zero_fraction_or_histogram(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"empty.weight": torch.zeros(0, 16), "nan.weight": torch.full((4, 4), float("nan")),
               "w.weight": torch.randn(8, 8)}, str(tmp_path / "m.safetensors"))
    code, data = run_json("inspect", tmp_path / "m.safetensors", "--stats", "--hist", "weight")
    by_name = {t["name"]: t for t in data["tensors"]}
    for name in ("empty.weight", "nan.weight"):
        assert by_name[name]["stats"]["zero_fraction"] == "nan" and by_name[name]["histogram"] is None
    assert set(by_name["w.weight"]["histogram"]) == {"low", "high", "counts", "n"}


def test_an_attention_mask_with_infinities_is_neither_diverged_nor_all_zero(tmp_path: Path) -> None:
    """CLIP's causal `attn_mask`: 0 on and below the diagonal, -inf above. A weight with Inf beside zeros is
    still an error, but never "all zero" (min and max are over the finite values only)."""
    from safetensors.torch import save_file

    mask = torch.full((8, 8), float("-inf")).triu(1)
    broken = torch.zeros(8, 8)
    broken[0, 0] = float("inf")
    path = tmp_path / "clip.safetensors"
    save_file({"text.attn_mask": mask, "text.proj.weight": broken}, str(path))
    code, data = run_json("inspect", path, "--stats")
    found = {(f["code"], f["tensor"]) for f in data["findings"]}
    assert ("mask-inf", "text.attn_mask") in found and ("nan-inf", "text.proj.weight") in found
    assert not {c for c, t in found if t == "text.attn_mask"} - {"mask-inf"}
    assert ("all-zero", "text.proj.weight") not in found


def test_an_untrained_lora_adapter_is_named_as_one(tmp_path: Path) -> None:
    """peft starts lora_B at zero: an adapter saved before training is all-zero there, an error that says
    why (the adapter changes nothing), not "never initialized"; lora_A and ordinary zero layers keep theirs."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    prefix = "base_model.model.encoder.layer.0.attention.self.query"
    save_file({f"{prefix}.lora_A.weight": torch.randn(8, 64) * 0.1, f"{prefix}.lora_B.weight": torch.zeros(64, 8),
               "base_model.model.extra.weight": torch.zeros(8, 8)}, str(tmp_path / "adapter_model.safetensors"))
    _, data = run_json("inspect", tmp_path / "adapter_model.safetensors", "--stats")
    zero = {f["tensor"]: f for f in data["findings"] if f["code"] == "all-zero"}
    assert set(zero) == {f"{prefix}.lora_B.weight", "base_model.model.extra.weight"}
    assert "LoRA adapter still at its initialization" in zero[f"{prefix}.lora_B.weight"]["hint"]
    assert "never initialized" in zero["base_model.model.extra.weight"]["hint"]


def _trained_mlp(folder: Path) -> dict[str, Path]:
    """A plain PyTorch MLP (no config: PyTorch's defaults are the expected init) trained 300 seeded Adam
    steps, a copy with its middle layer put back to its init, and one with a NaN in that layer."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    mlp = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128),
                              torch.nn.ReLU(), torch.nn.Linear(128, 10))
    init = {k: v.clone() for k, v in mlp.state_dict().items()}
    inputs = torch.randn(2048, 32)
    labels = (inputs @ torch.randn(32, 10)).argmax(1)
    optimizer = torch.optim.Adam(mlp.parameters(), 1e-3)
    for _ in range(300):
        batch = torch.randint(0, 2048, (64,))
        loss = torch.nn.functional.cross_entropy(mlp(inputs[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = {k: v.detach().clone() for k, v in mlp.state_dict().items()}
    paths = {name: folder / f"{name}.safetensors" for name in ("trained", "middle-at-init", "nan")}
    save_file(trained, paths["trained"])
    save_file({**trained, "2.weight": init["2.weight"], "2.bias": init["2.bias"]}, paths["middle-at-init"])
    with_nan = trained["2.weight"].clone()
    with_nan[3, 7] = float("nan")
    save_file({**trained, "2.weight": with_nan}, paths["nan"])
    return paths


def test_a_trained_plain_mlp_is_trained_and_a_layer_left_at_init_is_found(tmp_path: Path) -> None:
    """Trained from U(±1/√fan_in), a layer's values widen past that bound and fit a truncated normal: not
    "still at init" (its range cannot come from the guessed init); the layer put back to its init is."""
    paths = _trained_mlp(tmp_path)
    code, data = run_json("inspect", paths["trained"], "--stats", "--fail-on", "warn")
    assert code == 0 and data["findings"] == [], data["findings"]
    assert data["weights"]["state"] == "trained" and data["weights"]["expected_from"] == "pytorch-defaults"
    first = next(t for t in data["tensors"] if t["name"] == "0.weight")
    assert first["init"]["at_init"] is False and first["stats"]["abs_max"] > 1.5 * 32 ** -0.5
    code, data = run_json("inspect", paths["middle-at-init"], "--stats", "--fail-on", "warn")
    assert code == 1 and ("warn", "untrained-tensor", "2.weight") in _codes(data)
    assert not any(f["code"] == "checkpoint-at-init" for f in data["findings"])
    # One NaN takes that layer out of the count; the other two are still trained, not "at init".
    code, data = run_json("inspect", paths["nan"], "--stats")
    assert _codes(data) == [("error", "nan-inf", "2.weight")] and data["weights"]["state"] == "trained"


def test_fp16_overflow_starts_where_float16_rounds_to_inf(tmp_path: Path) -> None:
    """65510 rounds to 65504 in float16 (clamped, as check-dtype says); 65520 rounds to inf."""
    from safetensors.torch import save_file

    assert torch.tensor(65510.0).half().isfinite() and not torch.tensor(65520.0).half().isfinite()
    for value, overflows in ((65510.0, False), (65520.0, True), (-70000.0, True)):
        weight = torch.randn(16, 16) * 0.02
        weight[0, 0] = value
        save_file({"w.weight": weight}, tmp_path / "m.safetensors")
        code, data = run_json("inspect", tmp_path / "m.safetensors", "--stats")
        assert (("warn", "fp16-overflow", "w.weight") in _codes(data)) is overflows, (value, _codes(data))


def test_tied_weights_in_a_pickle_are_analysed_once(tmp_path: Path) -> None:
    """`lm_head.weight` is `embed.weight` (one storage, two names, as GPT-2's .bin holds them): one finding
    for its NaN, not two; both names carry the same statistics."""
    embed = torch.randn(64, 32) * 0.02
    embed[5, 5] = float("nan")
    torch.save({"embed.weight": embed, "lm_head.weight": embed, "proj.weight": torch.randn(32, 32) * 0.02},
               tmp_path / "tied.bin")
    code, data = run_json("inspect", tmp_path / "tied.bin", "--stats")
    assert [f for f in _codes(data) if f[1] == "nan-inf"] == [("error", "nan-inf", "embed.weight")]
    by_name = {t["name"]: t for t in data["tensors"]}
    assert by_name["lm_head.weight"]["stats"] == by_name["embed.weight"]["stats"]
    assert by_name["lm_head.weight"]["stats"]["nan"] == 1


def test_an_all_zero_input_column_is_a_dead_column(tmp_path: Path) -> None:
    """Column j of a Linear weight is input j: all zero, the layer ignores it (the dead unit before it)."""
    paths = _trained_mlp(tmp_path)
    from safetensors.torch import load_file, save_file

    state = load_file(paths["trained"])
    state["2.weight"][:, 3] = 0
    state["2.weight"][:, 70] = 0
    save_file(state, tmp_path / "dead-columns.safetensors")
    code, data = run_json("inspect", tmp_path / "dead-columns.safetensors", "--stats", "--fail-on", "warn")
    assert code == 1 and _codes(data) == [("warn", "dead-columns", "2.weight")]
    assert "2 of 128 columns are all zero" in data["findings"][0]["message"]
    assert next(t for t in data["tensors"] if t["name"] == "2.weight")["stats"]["zero_cols"] == 2


def test_a_buffer_the_model_initializes_to_zeros_is_not_an_all_zero_error(tmp_path: Path) -> None:
    """BART's final_logits_bias is a [1, vocab] buffer that _init_weights zeroes and training never changes: every
    published BART has it all zero. It was an error ("the whole weight matrix is zero"), so --fail-on error
    failed healthy checkpoints."""
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    model = BartForConditionalGeneration(BartConfig(
        vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=32))
    model.save_pretrained(tmp_path / "bart")
    code, data = run_json("inspect", tmp_path / "bart", "--stats", "--fail-on", "error")
    assert code == 0, _codes(data)
    assert not [f for f in data["findings"] if f["tensor"] == "final_logits_bias" and f["severity"] != "info"]


def test_the_fitted_init_and_its_note_read_as_two_things(tmp_path: Path) -> None:
    """The `found` cell held `normal(8.443e-05, 0.02022) normal(0, 0.02) = initializer_range`: without colour the
    fit and the note ran together as if one distribution were followed by another."""
    from tests.helpers import run_subprocess

    out = run_subprocess("inspect", "fixtures/example", "--stats", "--filter", r"layer\.0\.attention\.self\.key\.w",
                         env={"COLUMNS": "200", "NO_COLOR": "1"}).stdout
    assert re.search(r"normal\(-?[\d.e-]+, [\d.]+\); normal\(0, 0\.02\) = initializer_range", out), out
