"""A twenty-fifth round: left-outs of the twenty-fourth round and of red team 29 / review 65, each checked against
the installed library (peft 0.21.2, transformers 5.25.0).

An adapter's method was shown as its raw peft_type ("VERA", "LN_TUNING") by plan-devices and inspect: it is named
as peft's documentation names it (VeRA, LN Tuning, AdaLoRA; --json keeps the raw value). FourierFT's spectrum was
not checked against the layer it adapts: peft's FourierFTLayer stores n_frequency values (not sized by the layer)
placed at positions drawn from its seed over out × in, and refuses n_frequency above in × out, which is what is
checked now. A numeric quant_method beside plain float weights was "the config quantizes the weights (5)" in
plan-devices and nothing in inspect, and check-dtype called it (and "evil") a quantized checkpoint: transformers skips
it, as all three say now. A model_type transformers does not know
beside an auto_map (Nemotron-NAS's `nemotron-nas`) said only "does not know model_type": the repo's own code is
named and said never to run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import run_cli, run_json
from tests.hostile.test_redteam29 import _tiny_llama
from tests.test_third_party_layouts24 import _adapter, _base


@pytest.mark.parametrize(("method", "raw", "shown"), [
    ("VeRA", "VERA", "VeRA"), ("LN tuning", "LN_TUNING", "LN Tuning"), ("OFT", "OFT", "OFT")])
def test_an_adapters_method_is_shown_by_peft_s_name(tmp_path: Path, method: str, raw: str, shown: str) -> None:
    """plan-devices said "this is a PEFT adapter (VERA)", inspect "VERA ... on q, v": peft's enum value, not the
    method's name in peft's documentation. --json keeps the raw value adapter_config.json holds."""
    folder = _adapter(tmp_path, method)
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == raw
    code, data = run_json("plan-devices", str(folder), "--cpu", "1GB")
    assert code == 0
    assert any(w.startswith(f"this is a PEFT adapter ({shown}): only its own weights") for w in data["warnings"]), \
        data["warnings"]
    text = " ".join(run_cli("inspect", str(folder)).stdout.split())
    assert f"{shown} " in text, text
    assert raw == shown or f"{raw} " not in text, text
    assert run_json("inspect", str(folder))[1]["adapter"]["peft_type"] == raw


def test_an_adapter_shown_in_inspect_names_vera_not_its_enum(tmp_path: Path) -> None:
    """inspect's adapter line began "VERA r=4 on q, v" (peft saves target_modules as a set: in either order)."""
    text = " ".join(run_cli("inspect", str(_adapter(tmp_path, "VeRA"))).stdout.split())
    assert "PEFT adapter VeRA r=4 on " in text and "VERA r=" not in text, text


def _fourierft(tmp_path: Path, n_frequency: int) -> Path:
    import peft
    from peft import get_peft_model

    folder = tmp_path / f"fourierft-{n_frequency}"
    config = peft.FourierFTConfig(n_frequency=n_frequency, target_modules=["q", "v"])
    get_peft_model(_base(tmp_path / "made-for.safetensors", 32), config).save_pretrained(str(folder))
    return folder


def test_a_fourierft_spectrum_longer_than_the_layer_is_an_error(tmp_path: Path) -> None:
    """A FourierFT adapter of n_frequency 300 on a 32-wide model, against a 16-wide one (q 16×16: 256 entries), was
    "info: FourierFT on q.weight", worst severity info: peft refuses it (ValueError: n_frequency above in × out)."""
    from peft import PeftModel

    adapter = _fourierft(tmp_path, 300)
    small = _base(tmp_path / "smaller.safetensors", 16)
    with pytest.raises(ValueError, match="n_frequency` should be less than or equal to the product"):
        PeftModel.from_pretrained(small, str(adapter))
    code, data = run_json("diff-keys", str(adapter), str(tmp_path / "smaller.safetensors"))
    assert code == 1 and data["worst_severity"] == "error"
    details = {e["name"]: e["detail"] for e in data["unexpected"]}
    assert details["base_model.model.q.fourierft_spectrum"] == (
        "FourierFT on q: fourierft_spectrum 300 holds 300 frequencies, more than the 256 entries of q.weight (16×16 "
        "in B) (peft refuses n_frequency above in × out): an adapter for another model size")
    # v is 32×16 in B: 512 entries, which 300 fit; peft builds it (and q fails).
    assert details["base_model.model.v.fourierft_spectrum"] == "FourierFT on v.weight"
    # Against its own size everything fits, and the note says what is and is not checked.
    _base(tmp_path / "same.safetensors", 32)
    code, data = run_json("diff-keys", str(adapter), str(tmp_path / "same.safetensors"))
    note = next(n for n in data["notes"] if n.startswith("A is a PEFT adapter"))
    assert code == 0 and data["worst_severity"] == "info"
    assert "FourierFT's spectrum is n_frequency values placed at positions drawn from its seed over the layer's " \
        "out × in, so only one longer than out × in, which peft refuses, is caught)" in note, note


def test_a_fourierft_spectrum_that_fits_loads_onto_another_size(tmp_path: Path) -> None:
    """Why no more is checked: n_frequency 100 fits both sizes' layers, and peft loads it onto the 16-wide model."""
    from peft import PeftModel

    adapter = _fourierft(tmp_path, 100)
    PeftModel.from_pretrained(_base(tmp_path / "smaller.safetensors", 16), str(adapter))
    code, data = run_json("diff-keys", str(adapter), str(tmp_path / "smaller.safetensors"))
    assert code == 0 and data["worst_severity"] == "info", data["unexpected"]


def test_a_numeric_quant_method_beside_float_weights_is_said_to_be_skipped(tmp_path: Path) -> None:
    """quant_method 5 beside plain float weights: inspect said nothing, plan-devices "the config quantizes the weights
    (5): planned at the floating dtype ... an upper bound"; transformers skips it and loads the float weights."""
    import transformers

    folder = _tiny_llama(tmp_path / "m", quantization_config={"quant_method": 5})
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    assert getattr(model, "hf_quantizer", None) is None and next(model.parameters()).dtype == torch.float32
    said = ("config.json's quantization_config names quant_method 5, which transformers has no quantizer for: "
            "from_pretrained skips it (\"Unknown quantization type\") and loads these plain float weights as they "
            "are stored; read as not quantized")
    for args in (("inspect", str(folder)), ("plan-devices", str(folder), "--gpu", "1GB")):
        code, data = run_json(*args)
        assert code == 0 and said in data["warnings"], (args, data["warnings"])
        assert not [w for w in data["warnings"] if "quantizes the weights" in w], data["warnings"]
    # check-dtype said "quantized checkpoint (quant_method=5): stored float32 beside config float32 is by design"
    # (for "evil" too): the float weights are what loads, and agree with the config's dtype.
    for method in (5, "evil"):
        skipped = _tiny_llama(tmp_path / f"c{method}", quantization_config={"quant_method": method})
        code, data = run_json("check-dtype", str(skipped))
        assert code == 0 and data["config_agreement"] == {
            "status": "agrees", "message": "stored float32, as config.json says"}, data["config_agreement"]


def _nemotron_nas(tmp_path: Path, **extra: Any) -> Path:
    folder = _tiny_llama(tmp_path / "nas")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="nemotron-nas", architectures=["DeciLMForCausalLM"],
                  block_configs=[{"attention": {"n_heads_in_group": 2}, "ffn": {"ffn_mult": 2.0}}] * 2, **extra)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_an_unknown_model_type_with_its_own_code_says_so(tmp_path: Path) -> None:
    """Nemotron-NAS (`nemotron-nas`, auto_map to configuration_decilm / modeling_decilm): plan-devices said only that
    transformers "does not know model_type", as if an upgrade would do; no transformers knows it."""
    import transformers

    auto_map = {"AutoConfig": "configuration_decilm.DeciLMConfig",
                "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM"}
    folder = _nemotron_nas(tmp_path, auto_map=auto_map)
    with pytest.raises(ValueError, match="trust_remote_code"):
        transformers.AutoConfig.from_pretrained(folder)
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0
    assert (f"cannot build the model from config.json (transformers {transformers.__version__} does not know "
            "model_type 'nemotron-nas'; the repo ships its own modelling code (auto_map, loaded with "
            "trust_remote_code), which weightdoctor never runs); planned from the tensors") in data["warnings"]
    # Without an auto_map it is a type this transformers does not know, and says no more.
    plain = _nemotron_nas(tmp_path / "plain")
    warnings = run_json("plan-devices", str(plain), "--gpu", "1GB")[1]["warnings"]
    assert not [w for w in warnings if "trust_remote_code" in w], warnings
