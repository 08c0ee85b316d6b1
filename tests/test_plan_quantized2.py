"""plan-devices on checkpoints whose quantizer keeps codebook / vector / packed layers: SpQR, VPTQ, AQLM, HIGGS (2 and
3 bits), FP-Quant and fbgemm_fp8, built as tests/test_third_party_layouts27.py and test_third_party_layouts4.py build
them.

Found: each was planned at the floating dtype as "an upper bound" (every quantized Linear as a dense fp16 / bf16
weight), where from_pretrained's planner (`_get_device_map` -> accelerate's `infer_auto_device_map` over
`compute_module_sizes`) sizes the module the quantizer swaps in, which holds the packed tensors the checkpoint stores:
an SpQR, VPTQ or AQLM model several times smaller than planned, so the map put on the CPU what from_pretrained keeps on
the GPUs. FP-Quant's FPQuantLinear (fp_quant/module/linear.py) the other way: while the map is made it holds a
`weight` and a `dqweight` [out, in] in the model's dtype beside its packed `qweight`, and transformers' planner counts
them, more than the "upper bound" said.

The oracle: transformers' own `_get_device_map` run on a meta model in which each quantized Linear is replaced by a
module holding the tensors that layer holds when from_pretrained plans it: transformers' own HiggsLinear (through its
HIGGS quantizer's preprocess_model) and FbgemmFp8Linear; for SpQR, VPTQ, AQLM and FP-Quant, whose packages are not
installed, a module holding the stored tensors of that layer (read from the checkpoint here, not from weightdoctor)
and, for FP-Quant, the `weight`, `dqweight` and global scales FPQuantLinear.__init__ makes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from tests.helpers import run_cli, run_json
from tests.test_third_party_layouts4 import _quantized_llama
from tests.test_third_party_layouts27 import _fbgemm, _fp_quant, _higgs, _spqr, _vptq

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def _meta_model(config: dict[str, Any]) -> torch.nn.Module:
    """The model from_pretrained builds from `config`, on the meta device at the config's dtype."""
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = {k: v for k, v in config.items() if k not in ("quantization_config", "model_type")}
    built = AutoConfig.for_model(config["model_type"], **settings)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(built, dtype=_DTYPES[config["torch_dtype"]])


class _HeldLayer(torch.nn.Module):
    """A stand-in for a quantizer's layer: meta buffers of the given shapes and dtypes (names flattened: only the
    module they lie under counts for the planner)."""

    def __init__(self, tensors: dict[str, tuple[tuple[int, ...], torch.dtype]]):
        super().__init__()
        for name, (shape, dtype) in tensors.items():
            self.register_buffer(name.replace(".", "__"), torch.empty(shape, dtype=dtype, device="meta"))


def _stored_layers(folder: Path) -> dict[str, dict[str, tuple[tuple[int, ...], torch.dtype]]]:
    """{Linear layer: {its stored tensor: (shape, dtype)}} for every layer stored as more than a plain weight."""
    layers: dict[str, dict[str, tuple[tuple[int, ...], torch.dtype]]] = {}
    leaves = ("dense_weights", "row_offsets", "col_vals", "in_perm", "indices", "centroids.weight",
              "res_centroids.weight", "weight_scale", "weight_bias", "perm", "codes", "codebooks", "scales",
              "qweight", "forward_hadamard_matrix", "backward_hadamard_matrix", "weight", "tables", "tables2",
              "input_scale_ub", "qzeros", "g_idx")
    with safe_open(str(folder / "model.safetensors"), "pt") as stored:
        names = list(stored.keys())
        for name in names:
            leaf = next((leaf for leaf in leaves if name.endswith("." + leaf)), None)
            if leaf is None:
                continue
            layer = name[: -len(leaf) - 1]
            if leaf == "weight" and not any(other.startswith(layer + ".") and other != name for other in names):
                continue  # a plain Linear (lm_head), or a norm's / embedding's weight
            tensor = stored.get_tensor(name)
            layers.setdefault(layer, {})[leaf] = (tuple(tensor.shape), tensor.dtype)
    return layers


def _oracle_model(folder: Path, fp_quant: bool = False) -> torch.nn.Module:
    """The meta model as from_pretrained plans it: each quantized Linear replaced by what its layer holds then."""
    config = json.loads((folder / "config.json").read_text())
    model = _meta_model(config)
    dtype = _DTYPES[config["torch_dtype"]]
    for layer, tensors in _stored_layers(folder).items():
        linear = model.get_submodule(layer)
        held = dict(tensors)
        if fp_quant:
            # FPQuantLinear.__init__: weight and dqweight [out, in] and the two global scales [1], model's dtype
            shape = (linear.out_features, linear.in_features)
            held |= {"weight": (shape, dtype), "dqweight": (shape, dtype), "weight_global_scale": ((1,), dtype),
                     "act_global_scale": ((1,), dtype)}
        parent, _, child = layer.rpartition(".")
        setattr(model.get_submodule(parent), child, _HeldLayer(held))
    return model


def _fbgemm_oracle(folder: Path) -> torch.nn.Module:
    """The meta model with transformers' own FbgemmFp8Linear in place of each quantized Linear (its quantizer's
    preprocess needs fbgemm_gpu's ops; the layer class itself does not)."""
    from transformers.integrations.fbgemm_fp8 import FbgemmFp8Linear

    model = _meta_model(json.loads((folder / "config.json").read_text()))
    for layer in _stored_layers(folder):
        linear = model.get_submodule(layer)
        parent, _, child = layer.rpartition(".")
        with torch.device("meta"):
            setattr(model.get_submodule(parent), child,
                    FbgemmFp8Linear(linear.in_features, linear.out_features, linear.bias is not None))
    return model


def _higgs_oracle(folder: Path) -> torch.nn.Module:
    """The meta model prepared by transformers' own HIGGS quantizer, as from_pretrained prepares it (inside its
    default-dtype context) before it makes the map."""
    return prepared_by_quantizer(json.loads((folder / "config.json").read_text()), _DTYPES)


def prepared_by_quantizer(config: dict[str, Any], dtypes: dict[str, torch.dtype]) -> torch.nn.Module:
    """The meta model of `config` with its pre-quantized layers swapped in by transformers' own quantizer, inside the
    default-dtype context from_pretrained sets (`dtypes` maps the config's torch_dtype names)."""
    from transformers.quantizers.auto import AutoHfQuantizer, AutoQuantizationConfig

    model = _meta_model(config)
    dtype = dtypes[config["torch_dtype"]]
    quantizer = AutoHfQuantizer.from_config(AutoQuantizationConfig.from_dict(config["quantization_config"]),
                                            pre_quantized=True)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        quantizer.preprocess_model(model=model, dtype=dtype, device_map="auto", checkpoint_files=None)
    finally:
        torch.set_default_dtype(default)
    return model


def _sizes(model: torch.nn.Module) -> dict[str, int]:
    from transformers.integrations.accelerate import compute_module_sizes

    return dict(compute_module_sizes(model)[0])


def plan_matches_map(folder: Path, budgets: dict[int | str, int], expected: dict[str, int | str],
                     sizes: dict[str, int]) -> tuple[int, dict[str, Any]]:
    """`plan-devices --json` of `folder` on the two GPUs and the CPU of `budgets`, checked against from_pretrained's
    map `expected` of modules of `sizes` (`sizes[""]` the whole): the bytes planned, the map, each device's bytes.
    Returns the exit code and the report, for what each test asserts besides."""
    code, data = run_json("plan-devices", str(folder), "--gpu", f"{budgets[0]}B", "--gpu", f"{budgets[1]}B",
                          "--cpu", f"{budgets['cpu']}B")
    assert data["weights_bytes"] + data["buffers_bytes"] == sizes[""], (data["weights_bytes"], sizes[""])
    placed = {key: (int(value) if str(value).isdigit() else value) for key, value in data["device_map"].items()}
    assert placed == expected, (placed, expected)
    used = {device["key"]: device["used_bytes"] for device in data["devices"]}
    for key in (0, 1, "cpu"):
        assert used[key] == sum(sizes[module] for module, where in expected.items() if where == key), key
    return code, data


def _from_pretrained_map(model: torch.nn.Module, max_memory: dict[int | str, int]) -> dict[str, int | str]:
    from transformers.integrations.accelerate import _get_device_map

    return dict(_get_device_map(model, "auto", dict(max_memory), None))


def _aqlm(folder: Path) -> Path:
    return _quantized_llama(folder, "aqlm")


def _gptq3(folder: Path) -> Path:
    """A 3-bit GPTQ Llama as gptqmodel's QuantLinear saves it (group 32): `qweight` int32 [in x 3 / 32, out],
    `qzeros` int32 [in / 32, out x 3 / 32], fp16 `scales` [in / 32, out], `g_idx` int32 [in]; lm_head dense."""
    from safetensors.torch import save_file

    from tests.test_third_party_layouts27 import CONFIG, _quantized_linears

    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(31)

    def pack(base: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        out_features, in_features = weight.shape
        return {
            "qweight": torch.randint(-2**31, 2**31 - 1, (in_features * 3 // 32, out_features), dtype=torch.int32,
                                     generator=generator),
            "qzeros": torch.randint(-2**31, 2**31 - 1, (in_features // 32, out_features * 3 // 32), dtype=torch.int32,
                                    generator=generator),
            "scales": torch.rand(in_features // 32, out_features, generator=generator).half(),
            "g_idx": torch.arange(in_features, dtype=torch.int32) // 32}

    tensors = _quantized_linears(pack)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(CONFIG | {"quantization_config": {
        "quant_method": "gptq", "bits": 3, "group_size": 32, "desc_act": False, "sym": True}}))
    return folder


def _higgs4(folder: Path) -> Path:  # planned as int4 at the stored bytes (`_size_config_quantization`): a guard
    return _higgs(folder, bits=4)


def _higgs2(folder: Path) -> Path:
    return _higgs(folder, bits=2)


def _higgs3(folder: Path) -> Path:
    return _higgs(folder, bits=3)


LAYOUTS: list[tuple[Callable[[Path], Path], Callable[[Path], torch.nn.Module]]] = [
    (_spqr, _oracle_model), (_vptq, _oracle_model), (_aqlm, _oracle_model),
    (_fp_quant, lambda folder: _oracle_model(folder, fp_quant=True)), (_fbgemm, _fbgemm_oracle),
    (_higgs2, _higgs_oracle), (_higgs3, _higgs_oracle), (_higgs4, _higgs_oracle), (_gptq3, _oracle_model)]


@pytest.mark.parametrize(("make", "oracle"), LAYOUTS, ids=lambda item: getattr(item, "__name__", ""))
def test_quantized_layers_are_planned_as_from_pretrained_sizes_them(tmp_path: Path, make: Any, oracle: Any) -> None:
    """The plan's bytes and device map are those of transformers' `_get_device_map` over the layers the quantizer
    swaps in: budgets set from the oracle's own sizes, two GPUs that each hold about 40% of the model (the dense
    upper bound placed more of it on the CPU), the rest on the CPU."""
    folder = make(tmp_path / make.__name__)
    model = oracle(folder)
    sizes = _sizes(model)
    total = sizes[""]
    dense = sum(p.numel() * p.element_size() for p in _meta_model(
        json.loads((folder / "config.json").read_text())).parameters())
    assert total != dense  # the layout does change what is planned
    budgets: dict[int | str, int] = {0: int(total * 0.4), 1: int(total * 0.4), "cpu": 10 * dense}
    expected = _from_pretrained_map(model, budgets)
    code, data = plan_matches_map(folder, budgets, expected, sizes)
    # HIGGS' and FP-Quant's quantizers refuse the map it makes, which offloads (tested below); the others load it
    refuses = make.__name__.startswith(("_higgs", "_fp_quant"))
    assert "cpu" in expected.values() and code == (1 if refuses else 0), data
    assert [f["code"] for f in data["findings"]] == (["quantizer-refuses-offload"] if refuses else []), data
    said = " ".join(" ".join(data["warnings"]).split())
    assert "upper bound" not in said, said
    assert "sized at the bytes the checkpoint stores for them" in said and "keeps no headroom" in said, said


def test_fp_quant_says_the_placeholders_its_layers_hold_while_the_map_is_made(tmp_path: Path) -> None:
    """FP-Quant's plan counts the weight and dqweight FPQuantLinear holds at bf16 while from_pretrained places it
    (2 x 2 bytes a weight, and its two global scales), and says so."""
    folder = _fp_quant(tmp_path / "fpquant")
    layers = _stored_layers(folder)
    weights = sum(tensors["qweight"][0][0] * tensors["qweight"][0][1] * 2 for tensors in layers.values())
    placeholders = weights * 2 * 2 + len(layers) * 2 * 2
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0
    said = " ".join(" ".join(data["warnings"]).split())
    from weightdoctor.units import format_bytes

    assert (f"FP-Quant's layers also hold a weight and a dqweight at bf16 while from_pretrained makes its map, which "
            f"its planner counts ({format_bytes(placeholders)} beside what the checkpoint stores, planned here as it "
            "places them) and its loader empties as the stored weights load") in said, said


def test_spqr_in_a_dtype_its_quantizer_refuses_is_planned_as_before(tmp_path: Path) -> None:
    """SpQR's quantizer raises on any dtype but float16: a bfloat16 config (and --dtype fp32) is planned as before,
    dense at the floating dtype, an upper bound, without the stored-bytes sizing of a load that cannot happen."""
    folder = _spqr(tmp_path / "spqr")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"torch_dtype": "bfloat16"}))
    parameters = sum(p.numel() for p in _meta_model(config).parameters())
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and data["dtype"] == "bf16" and data["weights_bytes"] == 2 * parameters, data
    assert any(w.startswith("the config quantizes the weights (spqr, 3-bit): planned at the floating dtype")
               and w.endswith("the plan is an upper bound") for w in data["warnings"]), data["warnings"]
    assert not any("sized at the bytes the checkpoint stores" in w for w in data["warnings"]), data["warnings"]
    result = run_cli("plan-devices", str(folder), "--gpu", "1GB", "--dtype", "fp32", "--json")
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["dtype"] == "fp32" and data["weights_bytes"] == 4 * parameters, data


def test_hqq_is_planned_dense_as_from_pretrained_places_it(tmp_path: Path) -> None:
    """transformers' HQQ quantizer keeps every nn.Linear dense until its weights load (prepare_for_hqq_linear only
    tags them; no param_element_size of its own): from_pretrained's map is the dense fp16 model's. It was planned
    as int4 at the stored bytes, with more on the GPUs than from_pretrained puts there."""
    folder = _quantized_llama(tmp_path / "hqq", "hqq")
    model = _meta_model(json.loads((folder / "config.json").read_text()))  # the oracle: the model as it is planned
    sizes = _sizes(model)
    budgets: dict[int | str, int] = {0: int(sizes[""] * 0.3), 1: int(sizes[""] * 0.3), "cpu": 10 * sizes[""]}
    expected = _from_pretrained_map(model, budgets)
    code, data = run_json("plan-devices", str(folder), "--gpu", f"{budgets[0]}B", "--gpu", f"{budgets[1]}B",
                          "--cpu", f"{budgets['cpu']}B")
    assert data["dtype"] == "fp16" and data["weights_bytes"] + data["buffers_bytes"] == sizes[""], data
    placed = {key: (int(value) if str(value).isdigit() else value) for key, value in data["device_map"].items()}
    assert placed == expected, (placed, expected)
    with safe_open(str(folder / "model.safetensors"), "pt") as stored:
        names = list(stored.keys())  # safe_open is no mapping: its names are keys()
        layers = {name.removesuffix(".W_q") for name in names if name.endswith(".W_q")}
        held = sum(stored.get_tensor(name).nbytes for name in names if name.rpartition(".")[0] in layers)
    from weightdoctor.units import format_bytes

    said = " ".join(" ".join(data["warnings"]).split())
    assert ("the config quantizes the weights (hqq, 4-bit): planned at the floating dtype, as transformers' planner "
            "sizes it" in said and f"loaded, its 7 HQQLinear layers hold the {format_bytes(held)} the checkpoint "
            "stores for them, not their dense size planned here" in said), said
    # its quantizer refuses this map, which offloads: an error, no offload offered
    assert code == 1 and data["verdict"] == "does-not-fit", data
    (finding,) = data["findings"]
    assert finding["code"] == "quantizer-refuses-offload" and "transformers' HQQ quantizer refuses" in finding[
        "message"], finding
    assert not [s for s in data["suggestions"] if s["change"] in ("cpu", "disk")], data["suggestions"]


def test_fp_quant_pseudoquantization_and_a_gpu_only_map_are_not_refused(tmp_path: Path) -> None:
    """FP-Quant's quantizer refuses cpu beside other entries only for real quantization; a map on the GPUs alone is
    taken by every one of them."""
    folder = _fp_quant(tmp_path / "fpquant")
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and data["verdict"] == "fits-on-gpus" and data["findings"] == [], data
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"]["pseudoquantization"] = True
    (folder / "config.json").write_text(json.dumps(config))
    code, data = run_json("plan-devices", str(folder), "--gpu", "100KB", "--cpu", "1GB")
    assert "cpu" in data["device_map"].values() and data["findings"] == [] and code == 0, data
