"""fixlist26: adapter left-outs of the last rounds (thirdparty24 / review64 / thirdparty25), each checked against the
installed peft (0.21.2): get_peft_model(...).save_pretrained writes the adapter, PeftModel.from_pretrained says what
loads.

- IA3 and OFT on a grouped (not depthwise) Conv2d were "does not fit grp.weight ...: an adapter for another model
  size", errors, though peft loads them: both size the convolution's input as all its in_channels, which the weight
  (out × in/groups × kh × kw) holds 1/groups of. A checkpoint does not store groups: such a fit is said to rest on
  the groups the adapter implies, and is not counted as compared. peft 0.22 refuses OFT on any grouped Conv2d
  (depthwise too) when it builds the layer: those adapters, files 0.21 wrote and loaded, are warnings that say so.
- A UniLoRA adapter (one shared vector, `base_model.unilora_theta_d`) was no adapter at all, B's weights "unknown";
  MiSS, C3A, VB-LoRA, RandLoRA and SHiRA were "shapes not compared", though each is sized by the layer it adapts.
- peft_type values peft added since (MISS, C3A, WAVEFT, UNILORA, ...) were shown as the raw enum; diff-keys said
  "LN tuning" where inspect and plan-devices say "LN Tuning".
- A DDP-saved (`module.`) Chroma single file against Flux had no Chroma note.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import peft_adapter_on_grouped_convs, peft_refuses_grouped_conv, run_cli, run_json
from tests.test_perf20 import _CHROMA, _FLUX  # the same Chroma and Flux stand-ins


def _save(module: torch.nn.Module, path: Path) -> torch.nn.Module:
    save_file({name: tensor.contiguous() for name, tensor in module.state_dict().items()}, str(path))
    return module


class _Grouped(torch.nn.Module):
    """A grouped convolution (ResNeXt's: groups=4, neither 1 nor its channels) and a Linear, `hidden` wide."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.grp = torch.nn.Conv2d(hidden, 2 * hidden, 3, groups=4)
        self.q = torch.nn.Linear(hidden, hidden)


def _grouped(path: Path, hidden: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return _save(_Grouped(hidden), path)


def _loads(adapter: Path, base: torch.nn.Module) -> bool:
    from peft import PeftModel

    try:
        PeftModel.from_pretrained(base, str(adapter))
    except (RuntimeError, ValueError, NotImplementedError):  # peft 0.22: OFT on a grouped Conv2d, NotImplementedError
        return False
    return True


def _peft_adapter(tmp_path: Path, base: torch.nn.Module, config: Any, name: str = "adapter") -> Path:
    return peft_adapter_on_grouped_convs(base, config, tmp_path / name)


def _note(data: dict[str, Any]) -> str:
    return next(n for n in data["notes"] if n.startswith("A is a PEFT adapter"))


def _grouped_configs() -> dict[str, Any]:
    import peft

    return {
        "IA3 feedforward": peft.IA3Config(target_modules=["grp", "q"], feedforward_modules=["grp"]),
        "OFT": peft.OFTConfig(r=0, oft_block_size=4, target_modules=["grp", "q"]),
        "OFT r": peft.OFTConfig(r=4, oft_block_size=0, target_modules=["grp", "q"]),
    }


@pytest.mark.parametrize("method", list(_grouped_configs()))
def test_ia3_and_oft_on_a_grouped_conv_are_no_misfit(tmp_path: Path, method: str) -> None:
    """IA3's ia3_l on a feedforward grouped convolution is 1×32×1×1 (all 32 in_channels), OFT's oft_R.weight 72×6
    rotates 32 × 3 × 3 features; grp.weight is 64×8×3×3 (groups=4). diff-keys said "1×32×1×1 does not fit
    grp.weight (64×8×3×3 in B): it scales 32 channels, B's convolution reads 8 and writes 64: an adapter for another
    model size", an error, though PeftModel.from_pretrained loads it. The groups are not in the checkpoint: the fit
    is said to rest on them."""
    folder = _peft_adapter(tmp_path, _grouped(tmp_path / "made-for.safetensors", 32), _grouped_configs()[method])
    oft = method.startswith("OFT")
    # The oracle: peft 0.22 refuses OFT on a grouped convolution (NotImplementedError), which 0.21 loaded.
    assert _loads(folder, _grouped(tmp_path / "same.safetensors", 32)) == (not oft or not peft_refuses_grouped_conv())
    for source in (folder, folder / "adapter_model.safetensors"):
        code, data = run_json("diff-keys", str(source), str(tmp_path / "same.safetensors"))
        assert code == 0 and data["worst_severity"] == ("warn" if oft else "info"), [
            e["detail"] for e in data["unexpected"] + data["missing"] if e["severity"] != "info"]
        grp = next(e for e in data["unexpected"] if e["name"].startswith("base_model.model.grp."))
        assert grp["severity"] == ("warn" if oft else "info"), grp
        grp = grp["detail"]
        assert "fits it as a convolution of 4 groups: a checkpoint does not store groups, so it fits only if B's " \
            "has that many" in grp, grp
        assert ("PeftModel.from_pretrained onto B raises with peft 0.22 and later (NotImplementedError: OFT does not "
                "support Conv2d layers with groups > 1); peft 0.21 loads it" in grp) == oft, grp
        note = _note(data)
        assert "2 modules, 1 of them in B with shapes that fit; 1 more is a convolution it fits only if grouped " \
            "(grp: 4 groups): a checkpoint does not store groups, so its fit is not compared;" in note, note
        assert "does not fit" not in note and "do not fit" not in note, note
        assert all(e["reason"] == "adapter-base" for e in data["missing"]), data["missing"]
    # The text report says the same.
    text = " ".join(run_cli("diff-keys", str(folder), str(tmp_path / "same.safetensors")).stdout.split())
    assert "only if grouped (grp: 4 groups)" in text.replace("│ ", "").replace(" │", ""), text


@pytest.mark.parametrize("method", list(_grouped_configs()))
def test_the_same_adapters_onto_a_base_no_grouping_fits_are_still_errors(tmp_path: Path, method: str) -> None:
    """On a 48-wide base (grp.weight 96×12×3×3) no groups that divide 96 make 12 × g read 32 (or 32 × 9): peft
    refuses it, and diff-keys calls it an adapter for another model size, saying no grouping fits either."""
    folder = _peft_adapter(tmp_path, _grouped(tmp_path / "made-for.safetensors", 32), _grouped_configs()[method])
    assert not _loads(folder, _grouped(tmp_path / "wider.safetensors", 48))
    code, data = run_json("diff-keys", str(folder), str(tmp_path / "wider.safetensors"))
    assert code == 1 and data["worst_severity"] == "error"
    grp = next(e for e in data["unexpected"] if e["name"].startswith("base_model.model.grp."))
    assert grp["severity"] == "error" and "nor as a grouped convolution" in grp["detail"], grp
    assert grp["detail"].endswith("an adapter for another model size"), grp
    assert "only if grouped" not in _note(data)


def test_a_depthwise_oft_still_fits_and_says_what_it_rests_on(tmp_path: Path) -> None:
    """ConvNeXt's depthwise convolution (32×1×3×3, groups=32) is read by the same rule (groups = 32), and peft 0.22
    refuses OFT on it as on any grouped convolution: a warning."""
    import peft

    class Depthwise(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dw = torch.nn.Conv2d(32, 32, 3, groups=32)

    torch.manual_seed(0)
    folder = _peft_adapter(tmp_path, _save(Depthwise(), tmp_path / "made-for.safetensors"),
                           peft.OFTConfig(r=0, oft_block_size=4, target_modules=["dw"]))
    torch.manual_seed(0)
    assert _loads(folder, _save(Depthwise(), tmp_path / "same.safetensors")) == (not peft_refuses_grouped_conv())
    code, data = run_json("diff-keys", str(folder), str(tmp_path / "same.safetensors"))
    assert code == 0 and data["worst_severity"] == "warn"
    assert "(dw: 32 groups)" in _note(data), _note(data)
    assert "raises with peft 0.22 and later (NotImplementedError" in data["unexpected"][0]["detail"], data["unexpected"]


def test_every_peft_type_is_shown_by_its_documented_name() -> None:
    """peft 0.21's PeftType has 45 values; 19 (ADAMSS, UNILORA, WAVEFT, GRALORA, SHADOW, ...) were shown as the raw
    enum. Each has a name now, and none is its enum unless peft writes it so (IA3, OFT, C3A, OSF, ...)."""
    from peft.utils.peft_types import PeftType

    from weightdoctor.structure import peft_method_name

    names = {member.value: peft_method_name(member.value) for member in PeftType}
    written_as_enum = {"IA3", "OFT", "BOFT", "HRA", "C3A", "CPT", "OSF", "BEFT", "PSOFT", "DEFT", "CARTRIDGE"}
    garbled = {raw: shown for raw, shown in names.items() if (shown == raw) != (raw in written_as_enum)}
    assert not garbled, garbled
    assert (names["UNILORA"], names["WAVEFT"], names["MISS"], names["ROAD"], names["GRALORA"], names["SHADOW"]) == (
        "UniLoRA", "WaveFT", "MiSS", "RoAd", "GraLoRA", "ShadowPEFT")
    assert all("_" not in shown for shown in names.values()), names


def test_a_waveft_adapter_is_named_in_inspect_and_plan_devices(tmp_path: Path) -> None:
    """plan-devices said "this is a PEFT adapter (WAVEFT)", inspect "WAVEFT ..."; --json keeps the raw value."""
    import peft

    torch.manual_seed(0)
    folder = _peft_adapter(tmp_path, _save(torch.nn.Sequential(torch.nn.Linear(32, 32)), tmp_path / "b.safetensors"),
                           peft.WaveFTConfig(n_frequency=16, target_modules=["0"]))
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "WAVEFT"
    code, data = run_json("plan-devices", str(folder), "--cpu", "1GB")
    assert code == 0 and any(w.startswith("this is a PEFT adapter (WaveFT)") for w in data["warnings"]), \
        data["warnings"]
    text = " ".join(run_cli("inspect", str(folder)).stdout.split())
    assert "WaveFT" in text and "WAVEFT" not in text, text
    assert run_json("inspect", str(folder))[1]["adapter"]["peft_type"] == "WAVEFT"


def test_diff_keys_says_ln_tuning_as_the_other_commands_do(tmp_path: Path) -> None:
    """inspect and plan-devices say "LN Tuning" (peft's documentation); diff-keys said "LN tuning on norm" and
    "LN tuning copies the norm whole"."""
    import peft

    class Normed(torch.nn.Module):
        def __init__(self, hidden: int) -> None:
            super().__init__()
            self.q = torch.nn.Linear(hidden, hidden)
            self.norm = torch.nn.LayerNorm(hidden)

    torch.manual_seed(0)
    folder = _peft_adapter(tmp_path, _save(Normed(32), tmp_path / "made-for.safetensors"),
                           peft.LNTuningConfig(target_modules=["norm"]))
    torch.manual_seed(0)
    _save(Normed(16), tmp_path / "smaller.safetensors")
    for base in ("made-for", "smaller"):
        result = run_cli("diff-keys", str(folder), str(tmp_path / f"{base}.safetensors"), "--json")
        assert "LN Tuning" in result.stdout and "LN tuning" not in result.stdout, result.stdout
        text = run_cli("diff-keys", str(folder), str(tmp_path / f"{base}.safetensors")).stdout
        assert "LN tuning" not in text, text
    data = json.loads(run_cli("diff-keys", str(folder), str(tmp_path / "smaller.safetensors"), "--json").stdout)
    assert any(e["detail"].startswith("LN Tuning on norm: ") and "LN Tuning copies the norm whole" in e["detail"]
               for e in data["unexpected"]), data["unexpected"]




def _file(path: Path, shapes: dict[str, tuple[int, ...]], prefix: str = "") -> Path:
    torch.manual_seed(26)
    save_file({prefix + name: torch.randn(shape).half() for name, shape in shapes.items()}, str(path))
    return path


@pytest.mark.parametrize("prefixed", ["chroma", "flux"])
def test_a_ddp_saved_chroma_or_flux_gets_the_chroma_note(tmp_path: Path, prefixed: str) -> None:
    """A bare Chroma file against Flux says "A is Chroma (Flux-derived) and B Flux"; the same file saved from DDP
    (`module.` on every key) said nothing of Chroma, called Flux's guidance_in / img_mod "unknown", and offered to
    rename distilled_guidance_layer.in_proj onto time_in.in_layer (one shape) beside the `^module\\.=` rename."""
    chroma = _file(tmp_path / "chroma.safetensors", _CHROMA, "module." if prefixed == "chroma" else "")
    flux = _file(tmp_path / "flux.safetensors", _FLUX, "module." if prefixed == "flux" else "")
    code, data = run_json("diff-keys", str(chroma), str(flux))
    assert code == 1
    assert any(n.startswith("A is Chroma (Flux-derived) and B Flux") for n in data["notes"]), data["notes"]
    by_name = {e["name"].removeprefix("module."): e for e in data["missing"] + data["unexpected"]}
    assert by_name["distilled_guidance_layer.in_proj.weight"]["reason"] == "other-model"
    assert by_name["guidance_in.in_layer.weight"]["reason"] == "other-model"
    assert by_name["time_in.in_layer.weight"]["reason"] == "other-model"
    assert not any("time_in" in s["replacement"] for s in data["suggested_renames"]), data["suggested_renames"]
    # The wrapper prefix itself is still the fix for the blocks both share.
    assert by_name["img_in.weight"]["reason"] == "wrapper-prefix"
    text = run_cli("diff-keys", str(chroma), str(flux)).stdout
    assert "Chroma" in " ".join(text.split()), text


class _Mlp(torch.nn.Module):
    """Two Linear layers, `hidden` wide: q (hidden × hidden) and up (2·hidden × hidden)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.q = torch.nn.Linear(hidden, hidden)
        self.up = torch.nn.Linear(hidden, 2 * hidden)


def _mlp(path: Path, hidden: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return _save(_Mlp(hidden), path)


def _sized_configs() -> dict[str, Any]:
    import peft

    targets = ["q", "up"]
    return {
        "MiSS": peft.MissConfig(r=4, target_modules=targets),
        "MiSS bat": peft.MissConfig(r=4, init_weights="bat", target_modules=targets),
        "C3A": peft.C3AConfig(block_size=8, target_modules=targets),
        "VB-LoRA": peft.VBLoRAConfig(r=4, vector_length=8, num_vectors=16, target_modules=targets),
        "VB-LoRA top-k": peft.VBLoRAConfig(r=4, vector_length=8, num_vectors=16, save_only_topk_weights=True,
                                           target_modules=targets),
        "RandLora": peft.RandLoraConfig(r=4, target_modules=targets),
        "SHiRA": peft.ShiraConfig(r=4, target_modules=targets),
    }


@pytest.mark.parametrize("method", list(_sized_configs()))
def test_newer_peft_methods_are_compared_with_the_layers_they_adapt(tmp_path: Path, method: str) -> None:
    """MiSS (miss_block r × out; "bat": out/r × r × r), C3A (c3a_kernel out/b × in/b × b), VB-LoRA (logits r × in/L
    × vectors and out/L × r × vectors, L the vector bank's; its top-k save too, which was "vblora_* tensors of a
    PEFT method not known here"), RandLoRA (randlora_lambda r × n, randlora_gamma n × min(in, out)) and SHiRA (r ·
    (in + out) values) were "shapes not compared", info, against a 48-wide base PeftModel.from_pretrained refuses
    (size mismatch). Against their own base they fit; against the wider one each is an error."""
    shown = method.split()[0]
    folder = _peft_adapter(tmp_path, _mlp(tmp_path / "made-for.safetensors", 32), _sized_configs()[method])
    assert _loads(folder, _mlp(tmp_path / "same.safetensors", 32))
    code, data = run_json("diff-keys", str(folder), str(tmp_path / "same.safetensors"))
    assert code == 0 and data["worst_severity"] == "info", [
        e["detail"] for e in data["unexpected"] if e["severity"] != "info"]
    note = _note(data)
    assert f"A is a PEFT adapter: {shown} on 2 modules, 2 of them in B with shapes that fit;" in note, note
    assert "not compared" not in note and "not known here" not in note, note
    assert not _loads(folder, _mlp(tmp_path / "wider.safetensors", 48))
    code, data = run_json("diff-keys", str(folder), str(tmp_path / "wider.safetensors"))
    assert code == 1 and data["worst_severity"] == "error", data["unexpected"]
    errors = [e["detail"] for e in data["unexpected"] if e["severity"] == "error"]
    assert errors and all(d.startswith(f"{shown} on ") and d.endswith("an adapter for another model size")
                          for d in errors), errors
    assert "0 of them in B with shapes that fit" in _note(data) and "2 of them do not fit B's shapes" in _note(data)
    assert all(e["reason"] == "adapter-base" for e in data["missing"]), data["missing"]


def test_a_miss_mini_block_fits_any_width_its_mini_r_divides(tmp_path: Path) -> None:
    """MiSS's "mini" init saves r × mini_r (4×4), not sized by the layer: peft loads it onto the 48-wide base too
    (mini_r divides 48 and 96), and diff-keys reads adapter_config.json's init_weights to say it fits."""
    import peft

    folder = _peft_adapter(tmp_path, _mlp(tmp_path / "made-for.safetensors", 32),
                           peft.MissConfig(r=4, init_weights="mini", mini_r=4, target_modules=["q", "up"]))
    assert _loads(folder, _mlp(tmp_path / "wider.safetensors", 48))
    code, data = run_json("diff-keys", str(folder), str(tmp_path / "wider.safetensors"))
    assert code == 0 and data["worst_severity"] == "info"
    assert "2 of them in B with shapes that fit;" in _note(data), _note(data)


@pytest.mark.parametrize(("method", "hidden", "verdict"), [
    ("MiSS", 64, "not compared"), ("MiSS", 48, "error"), ("SHiRA", 64, "not compared"), ("SHiRA", 48, "error")])
def test_without_its_adapter_config_a_miss_or_shira_file_says_what_it_cannot_tell(
        tmp_path: Path, method: str, hidden: int, verdict: str) -> None:
    """A MiSS block 4×32 is r × out (for 32 outputs) or r × mini_r ("mini"); SHiRA's 256 values are r · (in + out)
    for an r only adapter_config.json gives. The file alone, against a 64-wide base, could be either: "shapes not
    compared", with why. Against a 48-wide one no reading fits (32 divides neither 48 nor 96; 256 is no multiple of
    96): still an error, as PeftModel.from_pretrained's size mismatch says."""
    folder = _peft_adapter(tmp_path, _mlp(tmp_path / "made-for.safetensors", 32), _sized_configs()[method])
    assert not _loads(folder, _mlp(tmp_path / "b.safetensors", hidden))
    alone = tmp_path / "alone" / "adapter_model.safetensors"
    alone.parent.mkdir()
    alone.write_bytes((folder / "adapter_model.safetensors").read_bytes())
    code, data = run_json("diff-keys", str(alone), str(tmp_path / "b.safetensors"))
    if verdict == "error":
        assert code == 1 and data["worst_severity"] == "error"
        errors = [e["detail"] for e in data["unexpected"] if e["severity"] == "error"]
        assert errors and all(d.endswith("an adapter for another model size") for d in errors), errors
        return
    assert code == 0 and data["worst_severity"] == "info"
    why = ("MiSS's blocks are r × out or, with its \"mini\" init, r × mini_r, and no adapter_config.json beside A "
           "says which" if method == "MiSS" else
           "SHiRA's values are r · (in + out), and no adapter_config.json beside A gives r")
    assert f"2 of them in B (shapes not compared: {why}, so an adapter for another size" in _note(data), _note(data)
    # Beside its adapter_config.json the same file is an error, as peft says.
    code, data = run_json("diff-keys", str(folder / "adapter_model.safetensors"), str(tmp_path / "b.safetensors"))
    assert code == 1 and data["worst_severity"] == "error"


def test_a_unilora_adapter_is_named_and_its_targets_checked(tmp_path: Path) -> None:
    """UniLoRA saves one vector (`base_model.unilora_theta_d`) and nothing per module: diff-keys found no adapter,
    and every weight of B was "unknown" (an error). peft rebuilds each module's factors from it whatever their
    sizes: it loads onto the 48-wide base too. A base without the target_modules adapter_config.json names is
    refused (target modules not found), and is an error."""
    import peft

    folder = _peft_adapter(tmp_path, _mlp(tmp_path / "made-for.safetensors", 32),
                           peft.UniLoraConfig(r=4, theta_d_length=64, target_modules=["q", "up"]))
    assert _loads(folder, _mlp(tmp_path / "wider.safetensors", 48))
    code, data = run_json("diff-keys", str(folder), str(tmp_path / "wider.safetensors"))
    assert code == 0 and data["worst_severity"] == "info", data["unexpected"]
    assert all(e["reason"] == "adapter-base" for e in data["missing"]), data["missing"]
    note = _note(data)
    assert note.startswith("A is a PEFT adapter: UniLoRA, one shared vector (theta_d, 64 values)"), note
    assert "adapter_config.json's target_modules (q, up) name modules of B" in note, note

    class Other(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.other = torch.nn.Linear(4, 4)

    other = _save(Other(), tmp_path / "other.safetensors")
    assert not _loads(folder, other)
    code, data = run_json("diff-keys", str(folder), str(tmp_path / "other.safetensors"))
    assert code == 1 and data["unexpected"][0]["severity"] == "error", data["unexpected"]
    assert "none of adapter_config.json's target_modules (q, up) is a module of B" in _note(data)
    # The file alone names no module: that is said, not guessed.
    alone = tmp_path / "alone.safetensors"
    alone.write_bytes((folder / "adapter_model.safetensors").read_bytes())
    code, data = run_json("diff-keys", str(alone), str(tmp_path / "wider.safetensors"))
    assert code == 0 and "the file names no module, so which of B's modules it adapts is not compared" in \
        _note(data)
