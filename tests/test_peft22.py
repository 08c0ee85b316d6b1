"""peft22: what peft 0.22 changed about the adapters diff-keys checks, each checked against the installed peft
(get_peft_model(...).save_pretrained writes the adapter, PeftModel.from_pretrained says what loads).

- PaCA (new in 0.22: paca_delta out × r, paca_indices r input columns) was "a PEFT method not known here (its shapes
  are not compared)" against any base, a wider one too, which PeftModel.from_pretrained refuses.
- BOFT and HRA on a grouped convolution were "an adapter for another model size"; HiRA's tensors were "not known
  here" on any layer, a grouped convolution too. peft refuses all three there (NotImplementedError).
- OFT, BOFT and HRA on a kh × kw convolution (kh != kw) were said to fit with peft 0.21's in × kh × kh width, which
  peft 0.22 (in × kh × kw) refuses with a size mismatch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import run_cli, run_json


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().contiguous() for name, tensor in module.state_dict().items()}


def _loads(model: torch.nn.Module, adapter: Path) -> str:
    """What PeftModel.from_pretrained(model, adapter) does: "loads", or the exception it raises, by type."""
    from peft import PeftModel

    try:
        PeftModel.from_pretrained(model, str(adapter))
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
        return type(exc).__name__
    return "loads"


def _details(data: dict[str, Any], severity: str) -> list[str]:
    return [entry["detail"] for entry in data["unexpected"] if entry["severity"] == severity]


def _llama(hidden: int) -> Any:
    import transformers

    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=32))


def test_a_paca_adapter_is_compared_with_its_base_as_peft_loads_it(tmp_path: Path) -> None:
    """A PaCA adapter of a Llama 32 wide fits it (PeftModel.from_pretrained loads it) and not one 48 wide (size
    mismatch): both were "paca_* tensors of a PEFT method not known here", exit 0."""
    from peft import PacaConfig, get_peft_model

    for hidden in (32, 48):
        _llama(hidden).save_pretrained(tmp_path / f"base{hidden}")
    get_peft_model(_llama(32), PacaConfig(r=4, target_modules=["q_proj", "down_proj"], init_weights=False)) \
        .save_pretrained(str(tmp_path / "paca"))
    assert _loads(_llama(32), tmp_path / "paca") == "loads"
    assert _loads(_llama(48), tmp_path / "paca") == "RuntimeError"  # size mismatch for ...paca_delta

    code, data = run_json("diff-keys", str(tmp_path / "paca"), str(tmp_path / "base32"))
    assert code == 0, data["notes"]
    assert data["notes"][0].startswith("A is a PEFT adapter: PaCA on 2 modules, 2 of them in B with shapes that fit "
                                       "(PaCA's paca_indices, the input columns it trains, are compared by count"), \
        data["notes"]
    assert sorted(set(_details(data, "info"))) == ["PaCA on model.layers.0.mlp.down_proj.weight",
                                                   "PaCA on model.layers.0.self_attn.q_proj.weight"]

    code, data = run_json("diff-keys", str(tmp_path / "paca"), str(tmp_path / "base48"))
    assert code == 1
    assert sorted(_details(data, "error")) == [
        "PaCA on model.layers.0.mlp.down_proj: paca_delta 32×4 writes 32 output features, "
        "model.layers.0.mlp.down_proj.weight (48×96 in B) writes 48: an adapter for another model size",
        "PaCA on model.layers.0.self_attn.q_proj: paca_delta 32×4 writes 32 output features, "
        "model.layers.0.self_attn.q_proj.weight (48×48 in B) writes 48: an adapter for another model size"]
    assert "2 of them do not fit B's shapes: it was made for another size of the model, and " \
        "PeftModel.from_pretrained onto B raises a size mismatch" in data["notes"][0]

    from typer.testing import CliRunner

    wide = run_cli("inspect", str(tmp_path / "paca"), runner=CliRunner(env={"COLUMNS": "300"}))
    assert "PEFT adapter  PaCA r=4 alpha=8 on " in wide.stdout, wide.stdout


class _Layer(torch.nn.Module):
    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.q = layer


@pytest.mark.parametrize(("base", "refusal", "detail"), [
    # r (4) above the layer's in_features: PacaLayer.update_layer raises before anything loads.
    (torch.nn.Linear(3, 16), "ValueError", "PaCA on q: paca_delta 16×4 trains 4 input columns, more than the 3 input "
     "features of q.weight (16×3 in B) (peft refuses r above in_features: ValueError): an adapter for another model "
     "size"),
    # PaCA adapts an nn.Linear only.
    (torch.nn.Conv2d(32, 16, 1), "TypeError", "PaCA on q: paca_delta 16×4 adapts q.weight (16×32×1×1 in B), which is "
     "no Linear layer (peft's PaCA adapts only those: TypeError): an adapter for another model size"),
])
def test_a_paca_adapter_peft_refuses_to_build_is_an_error(tmp_path: Path, base: torch.nn.Module, refusal: str,
                                                          detail: str) -> None:
    from peft import PacaConfig, get_peft_model

    torch.manual_seed(0)
    get_peft_model(_Layer(torch.nn.Linear(32, 16)), PacaConfig(r=4, target_modules=["q"])).save_pretrained(
        str(tmp_path / "paca"))
    save_file(_state(_Layer(base)), str(tmp_path / "base.safetensors"))
    assert _loads(_Layer(base), tmp_path / "paca") == refusal
    code, data = run_json("diff-keys", str(tmp_path / "paca"), str(tmp_path / "base.safetensors"))
    assert code == 1 and detail in _details(data, "error"), data["unexpected"]
    assert f"PeftModel.from_pretrained onto B raises a {refusal}" in data["notes"][0], data["notes"]


def test_paca_indices_pattern_past_in_features_is_an_error(tmp_path: Path) -> None:
    """adapter_config.json's paca_indices_pattern gives a layer its columns; peft refuses one at or above the
    layer's in_features when it builds the layer (ValueError), which a header alone does not show (3 columns fit)."""
    from peft import PacaConfig, get_peft_model

    torch.manual_seed(0)
    get_peft_model(_Layer(torch.nn.Linear(32, 16)), PacaConfig(
        r=4, target_modules=["q"], paca_indices_pattern={"q": [1, 5, 30]})).save_pretrained(str(tmp_path / "paca"))
    for features in (31, 16):
        torch.manual_seed(0)
        save_file(_state(_Layer(torch.nn.Linear(features, 16))), str(tmp_path / f"in{features}.safetensors"))
    assert _loads(_Layer(torch.nn.Linear(31, 16)), tmp_path / "paca") == "loads"
    assert _loads(_Layer(torch.nn.Linear(16, 16)), tmp_path / "paca") == "ValueError"
    code, data = run_json("diff-keys", str(tmp_path / "paca"), str(tmp_path / "in31.safetensors"))
    assert code == 0 and not _details(data, "error"), data["unexpected"]
    code, data = run_json("diff-keys", str(tmp_path / "paca"), str(tmp_path / "in16.safetensors"))
    assert code == 1 and _details(data, "error") == [
        "PaCA on q: adapter_config.json's paca_indices_pattern ('q') gives q input column 30, q.weight (16×16 in B) "
        "reads 16 (peft refuses an index at or above in_features: ValueError): an adapter for another model size"]
    # inspect said "PaCA r=4" of it, alpha not given: the layer q trains 3 columns, scaled by paca_alpha / r.
    from typer.testing import CliRunner

    line = " ".join(run_cli("inspect", str(tmp_path / "paca"), runner=CliRunner(env={"COLUMNS": "300"}))
                    .stdout.replace("│", " ").split())
    assert "PEFT adapter PaCA r=4 (r=3 where paca_indices_pattern names 1 pattern) alpha=8 on q " in line, line
    code, data = run_json("inspect", str(tmp_path / "paca"))
    assert code == 0 and data["adapter"]["paca_alpha"] == 8 and data["adapter"]["paca_columns_pattern"] == {"q": 3}


class _Conv(torch.nn.Module):
    def __init__(self, groups: int = 1, kernel: tuple[int, int] = (3, 3)) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(32, 64, kernel, groups=groups)


def _built_ungrouped(config: Any, folder: Path) -> Path:
    """The adapter `config` makes for _Conv(groups=4) with its convolution read as one group while peft builds the
    layer, as it makes it for an ungrouped one of 32 input channels (peft refuses to build it on the grouped one)."""
    from peft import get_peft_model

    torch.manual_seed(0)
    model = _Conv(groups=4)
    model.conv.groups = 1
    get_peft_model(model, config).save_pretrained(str(folder))
    return folder


def test_boft_hra_and_hira_on_a_grouped_convolution_say_peft_refuses_them(tmp_path: Path) -> None:
    from peft import BOFTConfig, HiraConfig, HRAConfig

    torch.manual_seed(0)
    save_file(_state(_Conv(groups=4)), str(tmp_path / "grouped.safetensors"))
    save_file(_state(_Conv()), str(tmp_path / "plain.safetensors"))
    configs = {"BOFT": BOFTConfig(boft_block_size=4, target_modules=["conv"]),
               "HRA": HRAConfig(r=4, target_modules=["conv"]), "HiRA": HiraConfig(r=4, target_modules=["conv"])}
    for method, config in configs.items():
        adapter = _built_ungrouped(config, tmp_path / method)
        assert _loads(_Conv(), adapter) == "loads", method
        assert _loads(_Conv(groups=4), adapter) == "NotImplementedError", method
        code, data = run_json("diff-keys", str(adapter), str(tmp_path / "plain.safetensors"))
        assert code == 0 and set(_details(data, "info")) == {f"{method} on conv.weight"}, (method, data["unexpected"])
        assert "with shapes that fit" in data["notes"][0], data["notes"]
        code, data = run_json("diff-keys", str(adapter), str(tmp_path / "grouped.safetensors"))
        errors = _details(data, "error")
        assert code == 1 and len(errors) == 1, (method, data["unexpected"])
        assert errors[0].startswith(f"{method} on conv: ") and "conv.weight (64×8×3×3 in B)" in errors[0]
        assert errors[0].endswith(
            " as one group: an adapter for another model size, or, as a convolution of 4 groups (a checkpoint does "
            "not store groups), one that reads all its channels, and peft refuses "
            f"{method} there: PeftModel.from_pretrained onto B raises either way (NotImplementedError: {method} does "
            "not support Conv2d layers with groups > 1)"), errors
        assert f"(or, where B's convolutions are grouped, it raises a NotImplementedError: peft refuses {method} on " \
            "them)" in data["notes"][0], data["notes"]


def test_a_hira_adapter_is_compared_with_its_layers(tmp_path: Path) -> None:
    """HiRA's factors are LoRA's shapes (r × in, out × r): against a wider base they do not fit (size mismatch)."""
    from peft import HiraConfig, get_peft_model

    for hidden in (32, 48):
        _llama(hidden).save_pretrained(tmp_path / f"base{hidden}")
    get_peft_model(_llama(32), HiraConfig(r=4, target_modules=["q_proj"])).save_pretrained(str(tmp_path / "hira"))
    assert _loads(_llama(48), tmp_path / "hira") == "RuntimeError"
    code, data = run_json("diff-keys", str(tmp_path / "hira"), str(tmp_path / "base32"))
    assert code == 0 and "HiRA on 1 module, 1 of them in B with shapes that fit" in data["notes"][0], data["notes"]
    code, data = run_json("diff-keys", str(tmp_path / "hira"), str(tmp_path / "base48"))
    assert code == 1 and sorted(_details(data, "error")) == [
        "HiRA on model.layers.0.self_attn.q_proj: hira_A 4×32 (r × in) is not shaped for "
        "model.layers.0.self_attn.q_proj.weight (48×48 in B): an adapter for another model size",
        "HiRA on model.layers.0.self_attn.q_proj: hira_B 32×4 (out × r) is not shaped for "
        "model.layers.0.self_attn.q_proj.weight (48×48 in B): an adapter for another model size"], data["unexpected"]


@pytest.mark.parametrize("method", ["OFT", "BOFT", "HRA"])
def test_peft_0_21_s_width_of_a_kh_by_kw_kernel_is_a_warning(tmp_path: Path, method: str) -> None:
    """peft 0.21 sized an OFT / BOFT / HRA on a 3×5 convolution's input as in × 3 × 3 (kernel_size[0] twice), the
    width the adapter made here on a 3×3 one holds; peft 0.22 sizes it in × 3 × 5 and refuses that one."""
    from peft import BOFTConfig, HRAConfig, OFTConfig, get_peft_model

    config = {"OFT": OFTConfig(oft_block_size=4, target_modules=["conv"]),
              "BOFT": BOFTConfig(boft_block_size=4, target_modules=["conv"]),
              "HRA": HRAConfig(r=4, target_modules=["conv"])}[method]
    torch.manual_seed(0)
    get_peft_model(_Conv(kernel=(3, 3)), config).save_pretrained(str(tmp_path / "square"))
    save_file(_state(_Conv(kernel=(3, 5))), str(tmp_path / "wide.safetensors"))
    assert _loads(_Conv(kernel=(3, 5)), tmp_path / "square") == "RuntimeError"  # size mismatch
    code, data = run_json("diff-keys", str(tmp_path / "square"), str(tmp_path / "wide.safetensors"))
    warned = _details(data, "warn")
    assert code == 0 and len(warned) == 1, data["unexpected"]
    assert warned[0].startswith(f"{method} on conv.weight: ") and warned[0].endswith(
        "reads 32×3×3 input features, as peft 0.21 sized a 3×5 kernel's (kernel_size[0] twice); "
        "PeftModel.from_pretrained onto B raises with peft 0.22 and later, which sizes it in × kh × kw (480: size "
        "mismatch); peft 0.21 loads it"), warned
    assert run_cli("diff-keys", str(tmp_path / "square"), str(tmp_path / "wide.safetensors"),
                   "--fail-on", "warn").exit_code == 1
    # The adapter made on the 3×5 convolution itself fits it.
    torch.manual_seed(0)
    get_peft_model(_Conv(kernel=(3, 5)), config).save_pretrained(str(tmp_path / "own"))
    code, data = run_json("diff-keys", str(tmp_path / "own"), str(tmp_path / "wide.safetensors"))
    assert code == 0 and not _details(data, "warn") and "with shapes that fit" in data["notes"][0], data["notes"]



def test_an_untrained_astra_lora_is_not_called_trained(tmp_path: Path) -> None:
    """peft 0.22's ASTRA init (init_lora_weights="astra") sets both halves from the output activations' covariance
    (lora_B its eigenvectors, lora_A their projection of the base weight): an adapter saved untrained had its lora_A
    "trained" (not kaiming_uniform). Like PiSSA's, its halves are not judged from the adapter alone."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora.astra import preprocess_astra
    from peft.tuners.lora.config import AstraConfig

    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.v = torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.v(self.q(x))

    torch.manual_seed(0)
    model, samples = Two(), torch.randn(512, 64)
    config = LoraConfig(r=4, target_modules=["q", "v"], init_lora_weights="astra", astra_config=AstraConfig())
    preprocess_astra(model, config, run_model=lambda: model(samples))
    get_peft_model(model, config).save_pretrained(str(tmp_path / "astra"))
    code, data = run_json("inspect", str(tmp_path / "astra"), "--stats")
    assert code == 0
    inits = {tensor["name"]: tensor["init"] for tensor in data["tensors"]}
    assert len(inits) == 4 and all(init["label"] == "undetermined" for init in inits.values()), inits
    assert {init["reason"] for init in inits.values()} == {
        "astra (set from the activations and the base model's weights): not judged from the adapter alone"}
    result = run_cli("inspect", str(tmp_path / "astra"), "--stats")
    assert 'adapter_config.json says init_lora_weights="astra": peft sets these LoRA halves from the base model' \
        in " ".join(result.stderr.split()), result.stderr
