"""review68: the review of fixlist26 and its left-outs, each checked against the installed peft (0.21):
get_peft_model(...).save_pretrained writes the adapter, PeftModel.from_pretrained says what loads.

- `diff-keys BASE ADAPTER` (the sides swapped) called every key "unknown: these weights will not load", for every
  PEFT method and for kohya / LyCORIS LoRAs, with no word of why: now "swapped-sides", with a note that names what B
  is and gives the command the other way round. Still errors (exit 1): the fit asked about was not checked.
- inspect showed peft's OFT adapter as "OFT r=0" (its config writes r=0 beside oft_block_size) and an AdaLoRA one
  by the r it ignores; C3A, FourierFT, BOFT, Trainable Tokens showed no size at all.
- diff-keys said "trainable tokens" where inspect and plan-devices say "Trainable Tokens" (peft's documentation).
- Found in the review: AdaLoRA on a Conv2d (lora_A saved flat, r × in·kh·kw) was "a linear factor does not fit B's
  3×3 convolution", an error, on an adapter PeftModel.from_pretrained loads; RoAd was "shapes not compared", though
  its vectors are sized by the layer's outputs and peft refuses another size.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import peft_adapter_on_grouped_convs, peft_refuses_grouped_conv, run_cli, run_json


class _Base(torch.nn.Module):
    """An embedding, two Linear layers, a 3×3 convolution, a grouped one (groups=4) and a LayerNorm, `hidden` wide."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(50, hidden)
        self.q = torch.nn.Linear(hidden, hidden)
        self.up = torch.nn.Linear(hidden, 2 * hidden)
        self.conv = torch.nn.Conv2d(hidden, hidden, 3)
        self.grp = torch.nn.Conv2d(hidden, 2 * hidden, 3, groups=4)
        self.norm = torch.nn.LayerNorm(hidden)


def _base(path: Path, hidden: int) -> torch.nn.Module:
    torch.manual_seed(0)
    module = _Base(hidden)
    save_file({name: tensor.contiguous() for name, tensor in module.state_dict().items()}, str(path))
    return module


def _adapter(tmp_path: Path, config: Any, name: str = "adapter") -> Path:
    return peft_adapter_on_grouped_convs(_base(tmp_path / "made-for.safetensors", 32), config, tmp_path / name)


def _loads(adapter: Path, hidden: int) -> bool:
    from peft import PeftModel

    torch.manual_seed(0)
    try:
        PeftModel.from_pretrained(_Base(hidden), str(adapter))
    except (RuntimeError, ValueError, NotImplementedError):  # peft 0.22: OFT on a grouped Conv2d, NotImplementedError
        return False
    return True


def _wide(*args: str) -> Any:
    """`weightdoctor ARGS` on a 400-column terminal: a line read whole, not wrapped."""
    from typer.testing import CliRunner

    from weightdoctor.render import console

    # The console reads COLUMNS once, when first imported (by whichever test came first): in a whole-suite run it
    # kept 80 and a long line wrapped between box borders. Set here, then put back.
    width = console.stdout._width
    console.stdout.width = 400
    try:
        return run_cli(*args, runner=CliRunner(env={"COLUMNS": "400"}))
    finally:
        console.stdout._width = width


def _configs() -> dict[str, Any]:
    import peft

    return {
        "LoRA": peft.LoraConfig(r=4, target_modules=["q", "up", "conv"]),
        "IA3": peft.IA3Config(target_modules=["q", "up"], feedforward_modules=["up"]),
        "OFT": peft.OFTConfig(r=0, oft_block_size=4, target_modules=["q", "conv"]),
        "LN Tuning": peft.LNTuningConfig(target_modules=["norm"]),
        "Trainable Tokens": peft.TrainableTokensConfig(target_modules=["emb"], token_indices=[1, 2]),
        "VeRA": peft.VeraConfig(r=4, target_modules=["q", "up"]),
    }


def _kohya(path: Path) -> Path:
    """A kohya LoRA (lora_down / lora_up / alpha) on one attention projection of a diffusers UNet."""
    module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{module}.lora_down.weight": torch.zeros(2, 8), f"{module}.lora_up.weight": torch.zeros(8, 2),
               f"{module}.alpha": torch.tensor(2.0)}, str(path))
    return path


def _lycoris(path: Path) -> Path:
    """A LyCORIS LoKr on the UNet's 3×3 resnet convolution (8 × 8 × 3 × 3 = (2·4) × (2·4·9))."""
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    save_file({f"{conv}.lokr_w1": torch.ones(2, 2), f"{conv}.lokr_w2_a": torch.ones(4, 4),
               f"{conv}.lokr_w2_b": torch.ones(4, 4 * 9), f"{conv}.alpha": torch.tensor(4.0)}, str(path),
              metadata={"ss_network_module": "lycoris.kohya"})
    return path


def _unet(path: Path) -> Path:
    save_file({"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight": torch.zeros(8, 8),
               "down_blocks.0.resnets.0.conv1.weight": torch.zeros(8, 8, 3, 3),
               "down_blocks.0.resnets.0.norm1.weight": torch.zeros(8)}, str(path))
    return path


def _swapped_pairs(tmp_path: Path) -> dict[str, tuple[Path, Path, str]]:
    """name -> (adapter, base, what the note calls the adapter)."""
    base = tmp_path / "base.safetensors"
    pairs = {method: (_adapter(tmp_path, config, method.replace(" ", "-")), base, "a PEFT adapter")
             for method, config in _configs().items()}
    _base(base, 32)
    unet = _unet(tmp_path / "unet.safetensors")
    pairs["kohya"] = (_kohya(tmp_path / "kohya.safetensors"), unet, "a kohya-style LoRA")
    pairs["LyCORIS"] = (_lycoris(tmp_path / "lokr.safetensors"), unet, "a LyCORIS adapter")
    return pairs


def test_an_adapter_and_its_base_given_the_other_way_round_say_so(tmp_path: Path) -> None:
    """`diff-keys BASE ADAPTER`: every key was "unknown" (no known cause: these weights will not load), errors, for
    every PEFT method and for kohya / LyCORIS LoRAs. Now each is "swapped-sides", the note says B is the adapter and
    gives the command with the sides swapped, and the report keeps its keys and its exit code 1 (the check asked for
    was not made: a CI gate fails, as it did, but on a line that says why)."""
    for name, (adapter, base, what) in _swapped_pairs(tmp_path).items():
        code, right = run_json("diff-keys", str(adapter), str(base))
        assert code == 0 and right["worst_severity"] == "info", (name, right["notes"])
        code, data = run_json("diff-keys", str(base), str(adapter))
        assert code == 1 and data["worst_severity"] == "error", name
        assert set(data) == set(right), name  # the documented --json keys, no more, no fewer
        reasons = {entry["reason"] for entry in data["missing"] + data["unexpected"]}
        assert reasons == {"swapped-sides"}, (name, reasons)
        assert data["suggested_renames"] == [], name
        assert data["notes"][0] == (
            f"B is {what} and A the model it adapts: diff-keys loads A into B, so the sides are given the other way "
            f"round and no key of the adapter was checked against A; to check it, run weightdoctor diff-keys "
            f"{adapter} {base}"), (name, data["notes"])
        result = run_cli("diff-keys", str(base), str(adapter))
        assert result.exit_code == 1
        assert f"\nweightdoctor diff-keys {adapter} {base}\n" in result.stdout, result.stdout
        assert "unknown" not in result.stdout and "swapped-sides" in result.stdout, result.stdout


def test_a_whole_peft_model_against_its_base_is_not_called_swapped(tmp_path: Path) -> None:
    """A whole PEFT-wrapped model (its base weights under base_model.model. and .base_layer.) is no adapter of the
    base: against it the base still gets the wrapper-prefix rename, not "swapped-sides"."""
    import peft

    torch.manual_seed(0)
    wrapped = peft.get_peft_model(_Base(32), peft.LoraConfig(r=4, target_modules=["q", "up"]))
    whole = tmp_path / "whole.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in wrapped.state_dict().items()}, str(whole))
    base = tmp_path / "base.safetensors"
    _base(base, 32)
    for a, b in ((base, whole), (whole, base)):
        code, data = run_json("diff-keys", str(a), str(b))
        reasons = {entry["reason"] for entry in data["missing"] + data["unexpected"]}
        assert "swapped-sides" not in reasons and "wrapper-prefix" in reasons, reasons
        assert not any(note.startswith("B is") for note in data["notes"]), data["notes"]


def _inspect_configs() -> dict[str, tuple[Any, str]]:
    import peft

    return {
        "OFT block": (peft.OFTConfig(r=0, oft_block_size=4, target_modules=["q"]), "OFT (block size 4) on q"),
        "OFT r": (peft.OFTConfig(r=4, oft_block_size=0, target_modules=["q"]), "OFT r=4 on q"),
        "BOFT": (peft.BOFTConfig(boft_block_size=4, boft_n_butterfly_factor=2, target_modules=["q"]),
                 "BOFT (block size 4, butterfly factor 2) on q"),
        "AdaLoRA": (peft.AdaLoraConfig(init_r=12, target_r=8, total_step=10, target_modules=["q"]),
                    "AdaLoRA init_r=12 target_r=8 alpha=8 on q"),
        "C3A": (peft.C3AConfig(block_size=8, target_modules=["q"]), "C3A (block size 8) on q"),
        "FourierFT": (peft.FourierFTConfig(n_frequency=16, target_modules=["q"]), "FourierFT (16 frequencies) on q"),
        "Trainable Tokens": (peft.TrainableTokensConfig(target_modules=["emb"], token_indices=[1, 2, 5]),
                             "Trainable Tokens (3 tokens) on emb"),
        "IA3": (peft.IA3Config(target_modules=["q"], feedforward_modules=[]), "IA3 on q"),
        "LoRA": (peft.LoraConfig(r=4, target_modules=["q"]), "LoRA r=4 alpha=8 on q"),
    }


@pytest.mark.parametrize("method", list(_inspect_configs()))
def test_inspect_shows_what_sizes_the_adapter(tmp_path: Path, method: str) -> None:
    """peft's OFT config writes r=0 beside oft_block_size: inspect said "OFT r=0"; AdaLoRA ignores r (init_r,
    target_r), which inspect showed; C3A, FourierFT, BOFT and Trainable Tokens showed no size. --json's adapter keeps
    its keys (r=0 as the file has it) and adds the sizing fields the config sets."""
    config, shown = _inspect_configs()[method]
    folder = _adapter(tmp_path, config)
    result = _wide("inspect", str(folder))
    assert result.exit_code == 0, result.stderr
    assert f"PEFT adapter {shown}" in " ".join(result.stdout.split()), result.stdout
    assert " r=0" not in result.stdout
    code, data = run_json("inspect", str(folder))
    adapter = data["adapter"]
    saved = json.loads((folder / "adapter_config.json").read_text())
    assert adapter["peft_type"] == saved["peft_type"] and adapter.get("r") == saved.get("r"), adapter
    if method == "OFT block":
        assert adapter["oft_block_size"] == 4 and adapter["r"] == 0, adapter
    if method == "Trainable Tokens":
        assert adapter["token_count"] == 3, adapter


def test_trainable_tokens_is_spelled_as_peft_and_the_other_commands_do(tmp_path: Path) -> None:
    """inspect and plan-devices said "Trainable Tokens" (peft's documentation's page title), diff-keys "trainable
    tokens on emb.weight" and "trainable tokens on 1 module(s)"."""
    import peft

    folder = _adapter(tmp_path, peft.TrainableTokensConfig(target_modules=["emb"], token_indices=[1, 2]))
    base = tmp_path / "base.safetensors"
    _base(base, 32)
    code, data = run_json("diff-keys", str(folder), str(base))
    assert code == 0
    assert [entry["detail"] for entry in data["unexpected"]] == ["Trainable Tokens on emb.weight"], data["unexpected"]
    assert data["notes"][0].startswith("A is a PEFT adapter: Trainable Tokens on 1 module"), data["notes"]
    assert "Trainable Tokens" in " ".join(_wide("inspect", str(folder)).stdout.split())
    text = run_cli("plan-devices", str(folder), "--gpu", "1GiB").stdout + run_cli(
        "plan-devices", str(folder), "--gpu", "1GiB").stderr
    assert "trainable tokens" not in text, text


@pytest.mark.parametrize("target", ["conv", "grp"])
def test_an_adalora_on_a_convolution_fits_its_base(tmp_path: Path, target: str) -> None:
    """peft's AdaLoRA SVDConv2d saves lora_A flat, r × in·kh·kw (12×288 on a 32-channel 3×3 convolution): it was
    "a linear factor does not fit B's 3×3 convolution", an error, though PeftModel.from_pretrained loads it. On the
    grouped convolution peft 0.21 loads it too, but AdaLoRA's forward cannot reshape its update to the grouped weight,
    and 0.22 refuses it (ValueError): warn."""
    import peft

    folder = _adapter(tmp_path, peft.AdaLoraConfig(init_r=12, target_r=8, total_step=10, target_modules=[target]))
    assert _loads(folder, 32) == (target == "conv" or not peft_refuses_grouped_conv())
    base = tmp_path / "same.safetensors"
    _base(base, 32)
    code, data = run_json("diff-keys", str(folder), str(base))
    lora_a = next(e for e in data["unexpected"] if e["name"].endswith(f"{target}.lora_A"))
    if target == "conv":
        assert code == 0 and data["worst_severity"] == "info", data["unexpected"]
        assert lora_a["detail"] == "LoRA on conv.weight", lora_a
    else:
        assert code == 0 and data["worst_severity"] == "warn", data["unexpected"]
        assert lora_a["severity"] == "warn" and lora_a["detail"] == (
            "LoRA on grp.weight: 12×288 reads all 32 input channels of a convolution of 4 groups (times its "
            "kernel); PeftModel.from_pretrained onto B raises with peft 0.22 and later (ValueError: AdaLoRA does not "
            "support Conv2d layers with groups > 1); peft 0.21 loads it, and 0.21's AdaLoRA cannot run it there (its "
            "update, out × in·kh·kw, is no grouped weight's shape)"), lora_a
    assert "1 of them in B with shapes that fit;" in data["notes"][0], data["notes"]
    assert not _loads(folder, 48)
    wider = tmp_path / "wider.safetensors"
    _base(wider, 48)
    code, data = run_json("diff-keys", str(folder), str(wider))
    assert code == 1 and data["worst_severity"] == "error"
    assert "0 of them in B with shapes that fit" in data["notes"][0], data["notes"]


def test_a_road_adapter_is_compared_with_the_layers_it_adapts(tmp_path: Path) -> None:
    """RoAd (road_theta / road_alpha: out/2 values for its default variant road_1) was "shapes not compared: RoAd
    tensors are not shaped as the weights they adapt" against a 48-wide base PeftModel.from_pretrained refuses. Now
    it fits its own base and is an error on the wider one; without adapter_config.json the variant is not known, and
    the note says so where a variant could fit."""
    import peft

    folder = _adapter(tmp_path, peft.RoadConfig(group_size=8, target_modules=["q", "up"]))
    same, wider = tmp_path / "same.safetensors", tmp_path / "wider.safetensors"
    _base(same, 32)
    _base(wider, 48)
    assert _loads(folder, 32) and not _loads(folder, 48)
    code, data = run_json("diff-keys", str(folder), str(same))
    assert code == 0 and data["worst_severity"] == "info"
    assert "RoAd on 2 modules, 2 of them in B with shapes that fit;" in data["notes"][0], data["notes"]
    code, data = run_json("diff-keys", str(folder), str(wider))
    assert code == 1 and data["worst_severity"] == "error"
    details = {e["name"]: e["detail"] for e in data["unexpected"] if e["severity"] == "error"}
    assert details["base_model.model.q.road_theta"] == (
        "RoAd on q: road_theta 16 holds 16 values, q.weight (48×48 in B) needs 24 (road_1): an adapter for another "
        "model size"), details
    alone = tmp_path / "alone" / "adapter_model.safetensors"
    alone.parent.mkdir()
    shutil.copy(folder / "adapter_model.safetensors", alone)
    code, data = run_json("diff-keys", str(alone), str(same))
    assert code == 0 and "(shapes not compared: RoAd's vectors are out/2, out or 2·out values by its variant, and no " \
        "adapter_config.json beside A says which" in data["notes"][0], data["notes"]


def _merge_configs() -> dict[str, Any]:
    import peft

    return {
        "LoRA grouped": peft.LoraConfig(r=4, target_modules=["grp", "q"]),
        "OFT grouped": peft.OFTConfig(r=0, oft_block_size=4, target_modules=["grp", "q"]),
        "AdaLoRA grouped": peft.AdaLoraConfig(init_r=12, target_r=8, total_step=10, target_modules=["grp"]),
        "IA3 grouped": peft.IA3Config(target_modules=["grp"], feedforward_modules=["grp"]),
        "LoHa grouped": peft.LoHaConfig(r=4, target_modules=["grp"]),
        "LoRA 3×3": peft.LoraConfig(r=4, target_modules=["conv"]),
    }


@pytest.mark.parametrize("method", list(_merge_configs()))
def test_the_note_says_where_merge_and_unload_raises(tmp_path: Path, method: str) -> None:
    """The note of every PEFT adapter said "or merge it (merge_and_unload) before comparing whole checkpoints"; peft
    0.21 raises there for a LoRA (AdaLoRA's too) or OFT on a grouped convolution ("Merging is not supported for
    _ConvNd layers with groups > 1!", or its update reshaped to a shape the grouped weight is not). IA3's and LoHa's
    merge. The note now names those modules, as merge_and_unload itself says."""
    import peft

    torch.manual_seed(0)
    try:
        model = peft.get_peft_model(_Base(32), _merge_configs()[method])
    except (ValueError, NotImplementedError):  # peft 0.22 builds no OFT or AdaLoRA on a grouped convolution
        assert peft_refuses_grouped_conv() and method in ("OFT grouped", "AdaLoRA grouped"), method
        merges = False
    else:
        try:
            model.merge_and_unload()
        except (RuntimeError, ValueError):
            merges = False
        else:
            merges = True
    assert merges == (method.split()[0] in ("IA3", "LoHa") or method == "LoRA 3×3"), method
    folder = _adapter(tmp_path, _merge_configs()[method])
    base = tmp_path / "base.safetensors"
    _base(base, 32)
    code, data = run_json("diff-keys", str(folder), str(base))
    assert code == 0, data["unexpected"]
    clause = ("; merge_and_unload raises on grp: peft does not merge a LoRA or OFT update into a grouped "
              "convolution")
    assert (clause in data["notes"][0]) == (not merges), data["notes"]


def test_randlora_is_spelled_as_peft_and_inspect_do(tmp_path: Path) -> None:
    """inspect says "RandLora" (peft's documentation: "RandLora: Full-rank parameter-efficient fine-tuning"),
    diff-keys said "RandLoRA on q.weight" and "A is a PEFT adapter: RandLoRA on 2 module(s)"."""
    import peft

    folder = _adapter(tmp_path, peft.RandLoraConfig(r=4, target_modules=["q", "up"]))
    base = tmp_path / "base.safetensors"
    _base(base, 32)
    code, data = run_json("diff-keys", str(folder), str(base))
    assert code == 0
    assert data["notes"][0].startswith("A is a PEFT adapter: RandLora on 2 modules, 2 of them in B"), data["notes"]
    assert {e["detail"] for e in data["unexpected"] if e["name"].startswith("base_model.model.")} == {
        "RandLora on q.weight", "RandLora on up.weight"}, data["unexpected"]
    assert "PEFT adapter RandLora r=4 on" in " ".join(_wide("inspect", str(folder)).stdout.split())


@pytest.mark.parametrize(("config", "shown"), [
    ({"peft_type": "ADAPTION_PROMPT", "adapter_len": 10, "adapter_layers": 2, "target_modules": "self_attn"},
     "Llama-Adapter (adaption prompt, 10 adapter tokens) on self_attn"),
    ({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 20, "task_type": "CAUSAL_LM"},
     "Prompt tuning (20 virtual tokens) (CAUSAL_LM)")])
def test_a_prompt_adapter_is_shown_by_its_tokens(tmp_path: Path, config: dict[str, Any], shown: str) -> None:
    """A prompt-learning adapter has no r either: its size is its tokens (adapter_config.json as peft writes these
    fields; AdaptionPromptConfig needs a Llama model to be made, so the file is written here)."""
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    save_file({"prompt_embeddings": torch.zeros(20, 16)}, str(tmp_path / "adapter_model.safetensors"))
    result = _wide("inspect", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert f"PEFT adapter {shown} — load it" in " ".join(result.stdout.split()), result.stdout


def test_an_adapter_that_saves_modules_whole_does_not_say_it_stores_no_base_weights(tmp_path: Path) -> None:
    """A LoRA with modules_to_save=["norm"] saves the norm's weight and bias whole (peft's save_pretrained writes
    base_model.model.norm.weight): the note said "it stores no base weights" all the same."""
    import peft
    from safetensors import safe_open

    folder = _adapter(tmp_path, peft.LoraConfig(r=4, target_modules=["q", "up"], modules_to_save=["norm"]))
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as saved:
        assert {"base_model.model.norm.weight", "base_model.model.norm.bias"} <= set(saved.keys())
    base = tmp_path / "base.safetensors"
    _base(base, 32)
    code, data = run_json("diff-keys", str(folder), str(base))
    assert code == 0
    assert "; of B's weights it stores only the 2 it saves whole (norm.bias, norm.weight): load it with " \
        "peft's PeftModel.from_pretrained, given " in data["notes"][0], data["notes"]
    assert "stores no base weights" not in data["notes"][0]
    code, data = run_json("diff-keys", str(_adapter(tmp_path, peft.LoraConfig(r=4, target_modules=["q"]), "plain")),
                          str(base))
    assert "2 of them" not in data["notes"][0] and "; it stores no base weights: load it" in data["notes"][0]


def test_a_waveft_adapter_is_named_in_diff_keys_as_inspect_names_it(tmp_path: Path) -> None:
    """inspect and plan-devices say "WaveFT" (fixlist26); diff-keys said "waveft_* tensors ... of a PEFT method not
    known here". Its spectrum (n_frequency values, at most in × out of them, as FourierFT's) is now WaveFT's, and one
    longer than a layer's out × in, which peft refuses, is an error."""
    import peft

    folder = _adapter(tmp_path, peft.WaveFTConfig(n_frequency=64, target_modules=["q", "up"]))
    base, small = tmp_path / "base.safetensors", tmp_path / "small.safetensors"
    _base(base, 32)
    _base(small, 4)
    assert _loads(folder, 32) and not _loads(folder, 4)
    code, data = run_json("diff-keys", str(folder), str(base))
    assert code == 0 and data["worst_severity"] == "info"
    assert {e["detail"] for e in data["unexpected"]} == {"WaveFT on q.weight", "WaveFT on up.weight"}
    assert data["notes"][0].startswith("A is a PEFT adapter: WaveFT on 2 modules, 2 of them in B (shapes not "
                                       "compared: "), data["notes"]
    assert "not known here" not in data["notes"][0]
    code, data = run_json("diff-keys", str(folder), str(small))
    assert code == 1 and data["worst_severity"] == "error"
    assert "waveft_spectrum 64 holds 64 wavelet coefficients, more than the 16 entries of q.weight (4×4 in B) " \
        "(peft refuses n_frequency above in × out)" in " ".join(e["detail"] for e in data["unexpected"]), \
        data["unexpected"]


def test_a_delora_adapter_is_compared_with_the_layers_it_adapts(tmp_path: Path) -> None:
    """DeLoRA (delora_A r × in, delora_B out × r, its buffer delora_w_norm one per input feature) was "delora_*
    tensors ... of a PEFT method not known here (shapes not compared)", info, against a 48-wide base
    PeftModel.from_pretrained refuses (size mismatch); review64 listed it among the methods not known here."""
    import peft

    folder = _adapter(tmp_path, peft.DeloraConfig(r=4, target_modules=["q", "up"]))
    same, wider = tmp_path / "same.safetensors", tmp_path / "wider.safetensors"
    _base(same, 32)
    _base(wider, 48)
    assert _loads(folder, 32) and not _loads(folder, 48)
    code, data = run_json("diff-keys", str(folder), str(same))
    assert code == 0 and data["worst_severity"] == "info", data["unexpected"]
    assert data["notes"][0].startswith("A is a PEFT adapter: DeLoRA on 2 modules, 2 of them in B with shapes that "
                                       "fit;"), data["notes"]
    code, data = run_json("diff-keys", str(folder), str(wider))
    assert code == 1 and data["worst_severity"] == "error"
    details = {e["name"]: e["detail"] for e in data["unexpected"] if e["severity"] == "error"}
    assert details["base_model.model.up.delora_B"] == (
        "DeLoRA on up: delora_B 64×4 writes 64 output features, up.weight (96×48 in B) writes 96: an adapter for "
        "another model size"), details
    assert details["base_model.model.q.delora_w_norm"] == (
        "DeLoRA on q: delora_w_norm 32 reads 32 input features, q.weight (48×48 in B) reads 48: an adapter for "
        "another model size"), details
