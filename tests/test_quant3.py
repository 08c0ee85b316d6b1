"""Round quant3: gpt-fast's int4 checkpoints counted as the weights they hold, in both of torch's int4 packings.

gpt-fast's quantize.py --mode int4 (WeightOnlyInt4QuantHandler) packs each Linear's weight with
torch.ops.aten._convert_weight_to_int4pack on CUDA (int32 [out / 8, in / (inner_k_tiles * 16), 32, inner_k_tiles / 2])
or _convert_weight_to_int4pack_for_cpu on a CPU (uint8 [out, in / 2]), beside bfloat16 scales_and_zeros
[in / group size, out, 2]. inspect's warning gave the true figure, but `quantized` was null and the module tree and
the memory table counted the packed int32 as one parameter each (an eighth of the weights); the CPU packing was not
recognised at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.helpers import run_cli, run_json
from tests.test_third_party_layouts35 import _static_quantized, _TextClassifier

_DIM, _HIDDEN, _VOCAB, _GROUP = 256, 512, 64, 32
_LAYERS = {"layers.0.attention.wqkv": (3 * _DIM, _DIM), "layers.0.feed_forward.w2": (_DIM, _HIDDEN),
           "output": (_VOCAB, _DIM)}


def _write_gpt_fast_int4(path: Path, device: str) -> int:
    """A gpt-fast model_int4.g32.pth as quantize.py writes it on `device` ("cuda": the int32 layout, its values
    random, as this machine has no CUDA op to make it; "cpu": packed by torch's own _convert_weight_to_int4pack_for_cpu)
    with a bfloat16 embedding and norm. Returns the number of weights the int4 layers hold."""
    generator = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {
        "tok_embeddings.weight": torch.randn(_VOCAB, _DIM, generator=generator).bfloat16(),
        "norm.weight": torch.ones(_DIM, dtype=torch.bfloat16)}
    weights = 0
    for layer, (out_features, in_features) in _LAYERS.items():
        if device == "cpu":
            values = torch.randint(0, 16, (out_features, in_features), dtype=torch.int32, generator=generator)
            state[f"{layer}.weight"] = torch.ops.aten._convert_weight_to_int4pack_for_cpu(values, 8)
        else:
            state[f"{layer}.weight"] = torch.randint(-2**31, 2**31 - 1, (out_features // 8, in_features // 128, 32, 4),
                                                     dtype=torch.int32, generator=generator)
        state[f"{layer}.scales_and_zeros"] = torch.rand(in_features // _GROUP, out_features, 2,
                                                        generator=generator).bfloat16()
        weights += out_features * in_features
    torch.save(state, path)
    return weights


def test_gpt_fast_int4_counts_are_the_weights_in_the_module_tree_and_memory_table(tmp_path: Path) -> None:
    """Before: `quantized` null, the module tree's `output` 2,048 (its int32) plus 1,024 scales, memory at 8x too few
    weights. Now: `quantized` says 4-bit gpt-fast with the weights it holds, the tree and the table count them."""
    for device, dtype, per_value in (("cuda", "int32", 8), ("cpu", "uint8", 2)):
        path = tmp_path / f"model_int4_{device}.g32.pth"
        weights = _write_gpt_fast_int4(path, device)
        if device == "cpu":
            assert torch.load(path)["output.weight"].shape == (_VOCAB, _DIM // 2)
        code, data = run_json("inspect", str(path))
        assert code == 0, data
        floats = _VOCAB * _DIM + _DIM
        assert data["num_params"] == floats + weights // per_value + sum(
            i // _GROUP * o * 2 for o, i in _LAYERS.values()), data["num_params"]  # stored values, as documented
        quantized = data["quantized"]
        assert quantized == {"method": "gpt-fast int4 (no quantization_config)", "bits": 4, "packed_tensors": 3,
                             "side_tensors": 3, "parameters": floats + weights}, (device, quantized)
        tree = {node["name"]: node["num_params"] for node in data["module_tree"]}
        assert tree["output"] == _VOCAB * _DIM and tree["tok_embeddings"] == _VOCAB * _DIM, (device, tree)
        assert data["memory"]["int4"] == (floats + weights) // 2, (device, data["memory"])
        assert data["memory"]["bf16"] == 2 * (floats + weights), (device, data["memory"])
        said = [w for w in data["warnings"] if "gpt-fast" in w]
        assert len(said) == 1 and f"they hold {weights:,} weights where the parameters here count " \
            f"{weights // per_value:,} {dtype}" in said[0], (device, said)
        packer = "_convert_weight_to_int4pack_for_cpu" if device == "cpu" else "_convert_weight_to_int4pack,"
        assert packer in said[0], said


def test_gpt_fast_int4_cpu_packing_keeps_its_scales_and_packed_weights_through_convert(tmp_path: Path) -> None:
    """The CPU packing's scales_and_zeros were cast to fp16 by convert --dtype fp16, as the CUDA one's were before
    round 35 (_weight_int4pack_mm_for_cpu reads them in bfloat16); now they and the uint8 weights stay as stored."""
    from safetensors import safe_open

    path = tmp_path / "model_int4.g32.pth"
    _write_gpt_fast_int4(path, "cpu")
    out = tmp_path / "fp16.safetensors"
    result = run_cli("convert", str(path), "--dtype", "fp16", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    with safe_open(out, "pt") as written:
        dtypes = {name: written.get_slice(name).get_dtype() for name in written.keys()}  # noqa: SIM118
    assert {dtypes[f"{layer}.scales_and_zeros"] for layer in _LAYERS} == {"BF16"}, dtypes
    assert {dtypes[f"{layer}.weight"] for layer in _LAYERS} == {"U8"}, dtypes
    assert dtypes["tok_embeddings.weight"] == "F16", dtypes


def test_a_models_own_uint8_weight_beside_scales_and_zeros_of_another_shape_is_no_gpt_fast_layer(
        tmp_path: Path) -> None:
    """A uint8 weight whose rows are not the layer's out_features is no CPU int4 packing: nothing is said of it."""
    path = tmp_path / "own.pt"
    torch.save({"proj.weight": torch.zeros(32, 128, dtype=torch.uint8),
                "proj.scales_and_zeros": torch.zeros(8, 64, 2)}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["quantized"] is None, data["quantized"]
    assert not any("gpt-fast" in w for w in data["warnings"]), data["warnings"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_diff_keys_of_a_dynamic_quantized_model_against_its_float_model_reads_as_the_quantization(
        tmp_path: Path) -> None:
    """Before: the float model's fc1.weight / bias missing as "unknown" (no cause), fc1.scale "likely the model's own
    parameter", fc1.zero_point "unknown", eight groups of one key and no note. Now: every key `quantization`, the
    weights an error naming the packed tuple, the output scale / zero_point a warning, and one note
    saying to load into the model quantized the same way or dequantize it; both ways round."""
    torch.manual_seed(0)
    model = _TextClassifier()
    quantized = tmp_path / "quantized.pt"
    torch.save(torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8).state_dict(), quantized)
    floats = tmp_path / "float.pt"
    torch.save(model.state_dict(), floats)
    weights = {f"{layer}.{leaf}" for layer in ("fc1", "fc2") for leaf in ("weight", "bias")}
    outputs = {f"{layer}.{leaf}" for layer in ("fc1", "fc2") for leaf in ("scale", "zero_point")}
    for a, b, side, float_kind in ((quantized, floats, "A", "missing"), (floats, quantized, "B", "unexpected")):
        code, report = run_json("diff-keys", str(a), str(b))
        assert code == 1 and report["matched"] == 1, report  # emb.weight
        rows = {row["name"]: row for row in report["missing"] + report["unexpected"]}
        assert set(rows) == weights | outputs, rows
        assert {row["reason"] for row in rows.values()} == {"quantization"}, rows
        float_rows = report[float_kind]
        assert {row["name"] for row in float_rows} == weights, float_rows
        assert all(row["severity"] == "error" and f"{side} keeps it packed in <layer>._packed_params._packed_params"
                   in row["detail"] for row in float_rows), float_rows
        output_rows = [rows[name] for name in outputs]
        assert all(row["severity"] == "warn" and "output scale / zero_point" in row["detail"]
                   and "model's own parameter" not in row["detail"] for row in output_rows), output_rows
        assert {group["reason"] for group in report["groups"]} == {"quantization"}, report["groups"]
        said = [note for note in report["notes"] if "torch.ao.quantization" in note]
        assert len(said) == 1 and said[0].startswith(f"{side} is a torch.ao.quantization quantized model (fc1, fc2"), \
            report["notes"]
        assert "load the state dict into the model quantized the same way" in said[0] \
            and "layer.weight().dequantize()" in said[0], said


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_a_static_quantized_state_dict_is_inspected_as_its_integer_values(tmp_path: Path) -> None:
    """torch pickles a quantized tensor as torch._utils._rebuild_qtensor of its QInt8Storage, the qscheme and its
    scales / zero points, all on torch's weights_only list: inspect refused the whole file (exit 2). Now it lists the
    weight as its int8 values and says what they are; what reads the values (convert, shard, diff-keys --values)
    still refuses them, in one line, as written out or cast they would lose their scales."""
    path = tmp_path / "static.pt"
    quantized = _static_quantized(path)
    state = quantized.state_dict()
    code, data = run_json("inspect", str(path))
    assert code == 0, data
    rows = {row["name"]: row for row in data["tensors"]}
    assert rows["1.weight"]["dtype"] == "int8" and rows["1.weight"]["shape"] == [8, 3, 3, 3], rows["1.weight"]
    assert data["num_params"] == sum(v.numel() for v in state.values()), data["num_params"]
    assert data["dtypes"]["int8"] == 8 * 3 * 3 * 3, data["dtypes"]
    said = [w for w in data["warnings"] if "quantized by torch.ao.quantization" in w]
    assert len(said) == 1 and "1 tensor quantized by torch.ao.quantization (1.weight: qint8 per_channel_affine)" \
        in said[0], data["warnings"]
    assert "{k: v.dequantize() if v.is_quantized else v for k, v in state_dict.items()}" in said[0], said
    for args in (("convert", str(path), "-o", str(tmp_path / "out.safetensors")),
                 ("shard", str(path), "--single", "-o", str(tmp_path / "shards")),
                 ("diff-keys", str(path), str(path), "--values")):
        result = run_cli(*args)
        assert result.exit_code == 2 and "tensor '1.weight' is a qint8 quantized tensor (torch.ao.quantization)" \
            in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    assert not (tmp_path / "out.safetensors").exists() and not (tmp_path / "shards").exists()
    # A quint4x2 tensor packs two values a byte: still refused by inspect, as before.
    packed = tmp_path / "quint4x2.pt"
    torch.save({"w": torch.quantize_per_tensor(torch.randn(4, 4), 0.1, 0, torch.quint4x2)}, packed)
    result = run_cli("inspect", str(packed))
    assert result.exit_code == 2 and "tensor 'w' is a quantized" in result.stderr, result.stderr
