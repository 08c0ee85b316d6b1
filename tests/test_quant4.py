"""Round quant4: torch.ao static-quantized checkpoints under inspect --stats and diff-keys, gpt-fast's CPU packing
named with its own kernel, and a merged LoRA that touched some of a MoE layer's experts under diff-keys --values.

Every quantized file is torch's own: torch.ao.quantization's prepare, one calibration pass and convert (eager mode,
the fbgemm qconfig), saved with torch.save(model.state_dict()) beside the float model it was converted from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.helpers import run_json
from tests.test_quant3 import _write_gpt_fast_int4

# torch.ao.quantization's own deprecation and observer notices, about the API the tests use to write the files.
_TORCH_AO_NOTICES = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def _convert(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """convert's model after prepare and one calibration pass on `example` (eager mode, fbgemm)."""
    model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    prepared = torch.ao.quantization.prepare(model)
    prepared(example)
    return torch.ao.quantization.convert(prepared)


def _conv_pair(folder: Path) -> tuple[Path, Path, nn.Module]:
    """A QuantStub, two Conv2d and a DeQuantStub saved float (`float.pt`) and static-quantized (`static.pt`): the
    quantized Conv2d weights are qint8 per-channel tensors, each layer with its output scale / zero_point, the
    QuantStub's input ones as `0.scale` / `0.zero_point`."""
    torch.manual_seed(0)
    model = nn.Sequential(torch.ao.quantization.QuantStub(), nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3),
                          torch.ao.quantization.DeQuantStub()).eval()
    torch.save(model.state_dict(), folder / "float.pt")
    quantized = _convert(model, torch.randn(2, 3, 8, 8))
    torch.save(quantized.state_dict(), folder / "static.pt")
    return folder / "static.pt", folder / "float.pt", quantized


class _FusedNet(nn.Module):
    """Conv + BatchNorm + ReLU (fuse_modules folds the BatchNorm into the Conv) and a Linear, between the stubs."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8 * 6 * 6, 4)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.fc(self.relu(self.bn(self.conv(self.quant(x)))).flatten(1)))


@_TORCH_AO_NOTICES
def test_inspect_stats_reads_a_static_quantized_weight_dequantized_and_says_so(tmp_path: Path) -> None:
    """Before: the qint8 Conv weights were left out of the statistics table (their dtype is no float): `weights`
    held the scales alone, and `state` said nothing of the weights. Now each is read as torch's .dequantize() gives
    it (its figures are those of the dequantized tensor, measured against torch here), the stored int8 still its
    dtype, with one warning that says which were dequantized; its init is found as the float model's was."""
    path, _, quantized = _conv_pair(tmp_path)
    state = quantized.state_dict()
    for extra in ((), ("--sample", "100")):
        code, data = run_json("inspect", str(path), "--stats", *extra)
        assert code in (0, 1), data
        rows = {row["name"]: row for row in data["tensors"]}
        for name in ("1.weight", "3.weight"):
            assert rows[name]["dtype"] == "int8" and "stats" in rows[name], (extra, rows[name])
            stats, values = rows[name]["stats"], state[name].dequantize()
            if not extra:
                assert stats["count"] == values.numel() and not stats["sampled"], stats
                assert stats["mean"] == pytest.approx(values.mean().item(), abs=1e-6), stats
                assert stats["std"] == pytest.approx(values.std(correction=0).item(), rel=1e-4), stats
                assert stats["abs_max"] == pytest.approx(values.abs().max().item()), stats
                assert rows[name]["init"]["label"] == "kaiming_uniform", rows[name]["init"]
            else:
                assert stats["sampled"] and stats["count"] == 100, stats
        said = [w for w in data["weights"]["warnings"] if "dequantized" in w]
        assert said == ["the statistics of 2 torch.ao quantized tensors (1.weight, 3.weight: qint8 "
                        "per_channel_affine) are of their values dequantized with the scales and zero points "
                        "stored in each tensor (torch's .dequantize(), float32), not of the integers stored"], \
            data["weights"]["warnings"]
        assert "1.weight" not in data["weights"]["skipped"], data["weights"]["skipped"]
    # The inspect warning no longer says their values are read nowhere.
    reader = [w for w in data["warnings"] if "quantized by torch.ao.quantization" in w]
    assert len(reader) == 1 and "inspect --stats reads their values dequantized" in reader[0], reader
    # A per-tensor quint8 tensor too: its figures are the dequantized ones, not the stored 0..255.
    single = tmp_path / "per_tensor.pt"
    weight = torch.quantize_per_tensor(torch.linspace(-1, 1, 64).reshape(8, 8), 0.01, 128, torch.quint8)
    torch.save({"proj.weight": weight}, single)
    code, data = run_json("inspect", str(single), "--stats")
    row = next(row for row in data["tensors"] if row["name"] == "proj.weight")
    assert row["dtype"] == "uint8" and row["stats"]["max"] == pytest.approx(1.0, abs=0.01), row
    assert row["stats"]["min"] == pytest.approx(-1.0, abs=0.01), row
    assert any("(proj.weight: quint8 per_tensor_affine)" in w for w in data["weights"]["warnings"]), data["weights"]


def test_gpt_fast_cpu_packing_names_its_own_kernel(tmp_path: Path) -> None:
    """Before: the CPU packing's warning said its scales_and_zeros were read by _weight_int4pack_mm, the CUDA
    packing's kernel, which does not take a uint8 [out, in / 2] weight. Now each packing names its own kernel."""
    for device, kernel, other in (("cpu", "_weight_int4pack_mm_for_cpu (CPU) reads",
                                   "_weight_int4pack_mm (CUDA)"),
                                  ("cuda", "_weight_int4pack_mm (CUDA) reads", "_for_cpu (CPU)")):
        path = tmp_path / f"model_int4_{device}.g32.pth"
        _write_gpt_fast_int4(path, device)
        code, data = run_json("inspect", str(path))
        said = [w for w in data["warnings"] if "gpt-fast" in w]
        assert code == 0 and len(said) == 1, data["warnings"]
        assert f"scales_and_zeros, which {kernel} in bfloat16 alone" in said[0], said
        assert other not in said[0], said


def _rows(report: dict) -> dict[str, dict]:
    return {row["name"]: row for row in report["missing"] + report["unexpected"]}


@_TORCH_AO_NOTICES
def test_diff_keys_of_a_static_quantized_conv_model_against_its_float_model_reads_as_quantization(
        tmp_path: Path) -> None:
    """Before: the QuantStub's `0.scale` "likely the model's own parameter", each Conv's `scale` "written by a
    quantizer (GPTQ, AWQ, ...): add that quantizer's quantization_config", every zero_point "unknown" (an error), the
    int8 weights a bare int8→float32 warning and no note. Now every key is `quantization` with what it is, the
    weights an error (a float model's load_state_dict refuses a quantized tensor: measured below), and one note;
    both ways round."""
    static, floats, quantized = _conv_pair(tmp_path)
    float_model = nn.Sequential(nn.Identity(), nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    with pytest.raises(RuntimeError, match="Copying from quantized Tensor to non-quantized Tensor is not allowed"):
        float_model.load_state_dict({k: v for k, v in quantized.state_dict().items()
                                     if k.endswith(("weight", "bias"))})
    for a, b, side in ((static, floats, "A"), (floats, static, "B")):
        code, report = run_json("diff-keys", str(a), str(b))
        assert code == 1 and report["matched"] == 4, report
        rows = _rows(report)
        assert set(rows) == {f"{layer}.{leaf}" for layer in "013" for leaf in ("scale", "zero_point")}, rows
        assert all(row["reason"] == "quantization" and row["severity"] == "warn" for row in rows.values()), rows
        assert {rows[f"0.{leaf}"]["detail"] for leaf in ("scale", "zero_point")} == {
            f"the input scale / zero_point of {side}'s torch.ao.quantization QuantStub (convert's Quantize module, "
            "calibrated by prepare): no float model has it"}, rows
        assert all(rows[f"{layer}.{leaf}"]["detail"].startswith(f"an output scale / zero_point of {side}'s ")
                   for layer in "13" for leaf in ("scale", "zero_point")), rows
        assert not any("GPTQ" in row["detail"] or "own parameter" in row["detail"] for row in rows.values()), rows
        assert {(d["name"], d["severity"]) for d in report["dtype_differences"]} == {
            ("1.weight", "error"), ("3.weight", "error")}, report["dtype_differences"]
        assert report["suggested_renames"] == [], report["suggested_renames"]
        said = [note for note in report["notes"] if "torch.ao.quantization" in note]
        assert len(said) == 1 and said[0].startswith(f"{side} is a torch.ao.quantization quantized model (1.weight, "
                                                     "3.weight: quantized tensors"), report["notes"]
        assert "Copying from quantized Tensor to non-quantized Tensor is not allowed" in said[0], said
        assert "{k: v.dequantize() if v.is_quantized else v for k, v in state_dict.items()}" in said[0], said
        assert "_packed_params" not in said[0], said  # no Linear here


@_TORCH_AO_NOTICES
def test_diff_keys_of_a_fused_and_quantized_model_says_where_its_batchnorm_went(tmp_path: Path) -> None:
    """fuse_modules(conv, bn, relu) before quantizing folds the BatchNorm into the Conv: the float model's bn.* were
    "unknown" (errors); now they are the fused BatchNorm, the Linear's weight and bias the packed tuple, and the
    note names the packed Linear and the quantized Conv weight."""
    torch.manual_seed(0)
    model = _FusedNet().eval()
    torch.save(model.state_dict(), tmp_path / "float.pt")
    fused = torch.ao.quantization.fuse_modules(model, [["conv", "bn", "relu"]])
    torch.save(_convert(fused, torch.randn(2, 3, 8, 8)).state_dict(), tmp_path / "static.pt")
    code, report = run_json("diff-keys", str(tmp_path / "static.pt"), str(tmp_path / "float.pt"))
    rows = _rows(report)
    assert {row["reason"] for row in rows.values()} == {"quantization"}, rows
    batchnorm = {name: row for name, row in rows.items() if name.startswith("bn.")}
    assert len(batchnorm) == 5 and all(
        row["detail"].startswith("a BatchNorm of B's float model that A's torch.ao.quantization quantized model "
                                 "does not have: fuse_modules folded it") for row in batchnorm.values()), batchnorm
    assert rows["fc.weight"]["severity"] == "error", rows["fc.weight"]
    said = [note for note in report["notes"] if "torch.ao.quantization" in note]
    assert len(said) == 1 and said[0].startswith("A is a torch.ao.quantization quantized model (fc: weight and bias "
                                                 "packed in <layer>._packed_params._packed_params; conv.weight: "
                                                 "quantized tensors"), said


@_TORCH_AO_NOTICES
def test_diff_keys_of_a_quant_wrapper_model_says_the_rename_leaves_the_quantization(tmp_path: Path) -> None:
    """QuantWrapper(model) quantizes the model under `module.`: the suggested --rename '^module\\.=' is right for the
    names, but the float model's `4.weight` (the Linear, packed in `module.4`) was "unknown" and nothing said the
    renamed weights are quantized tensors a float model refuses."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.Linear(64, 2)).eval()
    torch.save(model.state_dict(), tmp_path / "float.pt")
    wrapped = torch.ao.quantization.QuantWrapper(model).eval()
    torch.save(_convert(wrapped, torch.randn(2, 3, 8, 8)).state_dict(), tmp_path / "static.pt")
    code, report = run_json("diff-keys", str(tmp_path / "static.pt"), str(tmp_path / "float.pt"))
    rows = _rows(report)
    assert rows["4.weight"]["reason"] == "quantization" and rows["4.bias"]["reason"] == "quantization", rows
    assert not [name for name, row in rows.items() if row["reason"] == "unknown"], rows
    assert [s["flag"] for s in report["suggested_renames"]] == ["--rename '^module\\.='"], report["suggested_renames"]
    said = [note for note in report["notes"] if "torch.ao.quantization" in note]
    assert len(said) == 1 and "its names are QuantWrapper's" in said[0] and "not the quantized values" in said[0], \
        said


def test_a_lora_merged_into_some_experts_names_the_experts_that_changed(tmp_path: Path) -> None:
    """A LoRA on q_proj and on experts 0 and 1 of 4 (gate_proj), merged (W += B@A·scale, as peft's merge_and_unload
    adds it) into a seeded Qwen2-MoE saved per expert: `changed_projections` was null (an expert unchanged beside a
    changed one of its kind read as a training step) and no note said what changed. Now the changed experts are
    named, each its own module, counted as torch counts."""
    import transformers
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    config = transformers.Qwen2MoeConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        shared_expert_intermediate_size=32)
    transformers.Qwen2MoeForCausalLM(config).save_pretrained(tmp_path / "base")
    state = load_file(tmp_path / "base" / "model.safetensors")
    targets = [name for name in state if name.endswith(("self_attn.q_proj.weight", "experts.0.gate_proj.weight",
                                                          "experts.1.gate_proj.weight"))]
    assert len(targets) == 6, sorted(state)  # transformers writes the experts one by one
    generator = torch.Generator().manual_seed(7)
    for name in targets:
        out_features, in_features = state[name].shape
        lora_b, lora_a = torch.randn(out_features, 2, generator=generator), torch.randn(2, in_features,
                                                                                         generator=generator)
        state[name] = state[name] + (lora_b @ lora_a) * 0.5
    (tmp_path / "merged").mkdir()
    save_file(state, tmp_path / "merged" / "model.safetensors")
    (tmp_path / "merged" / "config.json").write_text((tmp_path / "base" / "config.json").read_text())
    code, data = run_json("diff-keys", str(tmp_path / "merged"), str(tmp_path / "base"), "--values")
    assert data["changed_projections"] == {
        "modules": ["mlp.experts.0.gate_proj", "mlp.experts.1.gate_proj", "self_attn.q_proj"], "layers": 2,
        "layers_total": 2, "tensors": 6, "identical": len(data["values"]) - 6, "rounded": 0}, \
        data["changed_projections"]
    assert any(note.startswith("only the adapted projections changed (mlp.experts.0.gate_proj, "
                               "mlp.experts.1.gate_proj, self_attn.q_proj in 2 layers: 6 tensors)")
               for note in data["notes"]), data["notes"]


def _hqq_qmodel(model: nn.Module, layer: Callable[[torch.Tensor, dict], dict]) -> dict[str, dict]:
    """hqq's save_quantized dict `{module name: state dict}`: each Linear's weight quantized 4-bit in groups of 64,
    its entry `layer(W_q, meta)` (the hqq version's layout); every other leaf module's own state dict."""
    weights: dict[str, dict] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            weights[name] = layer(*_hqq_quantize(module.weight.data, 4, 64))
        elif module.state_dict() and not list(module.children()):
            weights[name] = dict(module.state_dict())
    return weights


def _inspected(weights: dict[str, dict], path: Path) -> tuple[dict, set[str]]:
    """`weights` saved at `path` with torch.save and inspected: the JSON and its tensor names, the file read as one
    state dict (no nested key chosen)."""
    torch.save(weights, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] is None, data["nested_key"]
    return data, {row["name"] for row in data["tensors"]}


def _hqq_quantize(weight: torch.Tensor, nbits: int, group_size: int | None) -> tuple[torch.Tensor, dict]:
    """hqq's Quantizer.quantize (hqq/core/quantize.py; hqq is not installed here, so written from its source): axis 0,
    min / max per group, W_q = round(W * scale + zero) packed by BitPack (4-bit: two rows to a uint8), the meta data
    with the inverted scale."""
    shape = weight.shape
    grouped = weight.float().reshape([group_size, -1]) if group_size is not None else weight.float()
    low, high = grouped.min(dim=0, keepdim=True)[0], grouped.max(dim=0, keepdim=True)[0]
    scale = ((2**nbits - 1) / (high - low)).clamp(max=2e4)
    zero = -low * scale
    quantized = torch.round(grouped * scale + zero).clamp(0, 2**nbits - 1).to(torch.uint8)
    if nbits == 4:
        half = len(quantized) // 2
        quantized = (quantized[:half] << 4) | quantized[half:]
    return quantized, {"nbits": nbits, "group_size": group_size, "shape": shape, "scale": 1.0 / scale, "zero": zero,
                       "axis": 0, "packing": {4: "4bit_u8", 8: "8bit_u8"}[nbits]}


def test_hqq_own_qmodel_pt_is_read_as_one_state_dict_of_its_layers(tmp_path: Path) -> None:
    """hqq's save_quantized (hqq/models/base.py) torch.saves {module name: module.state_dict()}, an HQQLinear's being
    {"W_q", "meta", "bias"}: inspect took it for a training checkpoint whose state dict is its first module's
    (`model.embed_tokens`, 2,048 of its values), the quantized layers listed among the other entries, `quantized` null.
    Now every module's tensors are read under `<module>.<name>` (the meta's as transformers' HQQ names them), and it
    is said to be HQQ's, its weights not counted as the bytes W_q packs them in."""
    from fixtures.diff_pairs import tiny_llama

    model = tiny_llama(seed=6, layers=2)
    model.save_pretrained(tmp_path / "float")

    def hqq_0_1_layer(packed: torch.Tensor, meta: dict) -> dict:
        meta.update({"quant_scale": False, "quant_zero": True})  # hqq_base_quant_config's default
        meta["zero_q"], meta["meta_zero"] = _hqq_quantize(meta.pop("zero"), 8, None)
        return {"W_q": packed, "meta": meta, "bias": None}

    weights = _hqq_qmodel(model, hqq_0_1_layer)
    path = tmp_path / "qmodel.pt"
    data, names = _inspected(weights, path)
    assert {"model.embed_tokens.weight", "model.norm.weight", "model.layers.1.self_attn.q_proj.W_q",
            "model.layers.1.self_attn.q_proj.scale", "model.layers.1.self_attn.q_proj.zero_q",
            "model.layers.1.self_attn.q_proj.meta_zero.scale"} <= names, sorted(names)
    stored = sum(t.numel() for state in weights.values() for t in state.values() if isinstance(t, torch.Tensor)) \
        + sum(t.numel() for state in weights.values() if isinstance(state.get("meta"), dict)
              for t in [*state["meta"].values(), *state["meta"]["meta_zero"].values()] if isinstance(t, torch.Tensor))
    assert data["num_params"] == stored, (data["num_params"], stored)
    layers = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert data["quantized"] == {"method": "hqq-like (no quantization_config)", "bits": None,
                                 "packed_tensors": layers, "side_tensors": 4 * layers, "parameters": None}, \
        data["quantized"]
    code, report = run_json("diff-keys", str(path), str(tmp_path / "float"))
    assert {row["reason"] for row in report["unexpected"]} == {"quantization"}, report["unexpected"]
