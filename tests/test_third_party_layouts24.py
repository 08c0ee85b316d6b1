"""A twenty-fourth round: adapter families and diffusion single files as their own save code writes them: PEFT's
VeRA, OFT, BOFT, HRA, LN-tuning and IA3 adapters (peft 0.21's save_pretrained, a folder and its bare
adapter_model.safetensors) against a base of their own size and of another; LyCORIS' GLoRA, diag-OFT (and older
LyCORIS' `oft_diag`), BOFT and full-diff files under kohya's flat names against the single file they adapt, and the
words a kohya or LyCORIS file's reports use for its family.

peft is installed and writes its adapters here. LyCORIS is not: its files are reproduced from LyCORIS 3.x's module
code (lycoris/modules/glora.py: a1 in × r, a2 r × in, b1 out × r, b2 r × in × kernel, a2 and b2 started at zero;
diag_oft.py: oft_blocks blocks × b × b tiling the output features, started at zero, `rescale` out × 1..., ones,
`alpha` the constraint; boft.py: oft_blocks factors × blocks × b × b; full.py: custom_state_dict's `diff` and
`diff_b`), older LyCORIS' `oft_diag` from AUTOMATIC1111's network_oft.py, which reads both names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import run_cli, run_json
from tests.test_third_party_layouts23 import _CONV, _LINEAR, _TEXT, _sd_single_file


def _base(path: Path, hidden: int) -> torch.nn.Module:
    """A small model of the module kinds PEFT adapts (an embedding, a square Linear, a Linear twice as wide out, a
    LayerNorm, a 3×3 Conv2d), each as wide as `hidden` says, seeded, saved as a safetensors file at `path`."""
    torch.manual_seed(0)
    base = torch.nn.ModuleDict({
        "embed": torch.nn.Embedding(32, hidden), "q": torch.nn.Linear(hidden, hidden),
        "v": torch.nn.Linear(hidden, 2 * hidden), "norm": torch.nn.LayerNorm(hidden),
        "conv": torch.nn.Conv2d(hidden // 4, hidden, 3)})
    save_file({name: tensor.contiguous() for name, tensor in base.state_dict().items()}, str(path))
    return base


def _configs() -> dict[str, Any]:
    import peft

    return {
        "VeRA": peft.VeraConfig(r=4, target_modules=["q", "v"], save_projection=True),
        "OFT": peft.OFTConfig(r=0, oft_block_size=4, target_modules=["q", "v", "conv", "embed"]),
        "BOFT": peft.BOFTConfig(boft_block_size=4, target_modules=["q", "v", "conv"]),
        "HRA": peft.HRAConfig(r=4, target_modules=["q", "v", "conv"]),
        "LN tuning": peft.LNTuningConfig(target_modules=["norm"]),
        "IA3": peft.IA3Config(target_modules=["q", "v", "conv"], feedforward_modules=["v", "conv"]),
    }


def _adapter(tmp_path: Path, method: str) -> Path:
    from peft import get_peft_model

    folder = tmp_path / method.replace(" ", "-")
    get_peft_model(_base(tmp_path / "made-for.safetensors", 32), _configs()[method]).save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("bare", [False, True], ids=["folder", "bare-file"])
@pytest.mark.parametrize("method", list(_configs()))
def test_a_peft_adapter_for_another_model_size_is_caught_by_its_shapes(tmp_path: Path, method: str, bare: bool) -> None:
    """A VeRA / OFT / BOFT / HRA / LN-tuning adapter made for a 32-wide model, against a 16-wide one, was "info:
    VeRA on q.weight ... shapes not compared: VeRA tensors are not shaped as the weights they adapt", worst severity
    info, though PeftModel.from_pretrained raises a size mismatch on it: their tensors are sized by the layer's widths
    (one scale per output feature, blocks that tile the input, the norm's copy), which are compared now. A
    feedforward IA3 vector (1 × in) was checked as if it could be either width: 1×32 passed against a 32×16 layer.
    With no module fitting, B's own weights were "unknown: no known cause: these weights will not load"."""
    adapter = _adapter(tmp_path, method)
    source = adapter / "adapter_model.safetensors" if bare else adapter
    _base(tmp_path / "same.safetensors", 32)
    code, data = run_json("diff-keys", str(source), str(tmp_path / "same.safetensors"))
    assert code == 0 and data["worst_severity"] == "info", [e for e in data["unexpected"] if e["severity"] != "info"]
    note = next(n for n in data["notes"] if n.startswith("A is a PEFT adapter"))
    assert " of them in B with shapes that fit;" in note and "not compared" not in note, note
    _base(tmp_path / "smaller.safetensors", 16)
    code, data = run_json("diff-keys", str(source), str(tmp_path / "smaller.safetensors"))
    assert code == 1 and data["worst_severity"] == "error", data["unexpected"]
    errors = [e for e in data["unexpected"] if e["severity"] == "error"]
    assert errors and all(e["detail"].endswith("an adapter for another model size") or "another model size" in
                          e["detail"] for e in errors), errors
    note = next(n for n in data["notes"] if n.startswith("A is a PEFT adapter"))
    assert " 0 of them in B with shapes that fit" in note, note
    # B's own weights stay the base's, which the adapter does not store (they were "unknown: no known cause").
    assert all(e["reason"] == "adapter-base" for e in data["missing"]), data["missing"]
    # The advice is not to load it onto B, which peft refuses, as the note says (and onto its own base it loads).
    assert " not fit B's shapes: it was made for another size of the model, and PeftModel.from_pretrained onto B " \
        "raises a size mismatch: load it onto the base it was made for" in note, note
    from peft import PeftModel

    with pytest.raises(RuntimeError, match="size mismatch"):
        PeftModel.from_pretrained(_base(tmp_path / "smaller-again.safetensors", 16), str(adapter))
    PeftModel.from_pretrained(_base(tmp_path / "same-again.safetensors", 32), str(adapter))


def test_each_misfit_says_which_width_disagrees(tmp_path: Path) -> None:
    """The detail names the width the adapter was made for and the layer's in B."""
    _base(tmp_path / "smaller.safetensors", 16)
    details = {}
    for method in ("VeRA", "OFT", "BOFT", "LN tuning", "IA3"):
        _, data = run_json("diff-keys", str(_adapter(tmp_path, method)), str(tmp_path / "smaller.safetensors"))
        details.update({e["name"]: e["detail"] for e in data["unexpected"]})
    assert details["base_model.model.q.vera_lambda_b"] == (
        "VeRA on q: vera_lambda_b 32 scales 32 output features, q.weight (16×16 in B) writes 16: an adapter for "
        "another model size")
    assert details["base_model.vera_A"].startswith(
        "VeRA's shared projection vera_A (4×32) spans 32 input features, the widest layer it adapts in B has 16")
    assert details["base_model.model.q.oft_R.weight"] == (
        "OFT on q: oft_R.weight 8×6 (8 blocks of 4) rotates 32 input features, q.weight (16×16 in B) reads 16: an "
        "adapter for another model size")
    assert details["base_model.model.v.boft_s"].startswith(
        "BOFT on v: boft_s 64×1 scales 64 output features, v.weight (32×16 in B) writes 32")
    assert details["base_model.model.norm.ln_tuning_layers.weight"].startswith(
        "LN Tuning on norm: ln_tuning_layers.weight 32, norm.weight (16 in B): LN Tuning copies the norm whole")
    assert details["base_model.model.v.ia3_l"] == (
        "1×32 does not fit v.weight (32×16 in B): it scales 32 input features (a feedforward module's), B's layer "
        "reads 16: an adapter for another model size")


def test_fourierft_still_says_its_shapes_are_not_compared(tmp_path: Path) -> None:
    """FourierFT's spectrum (n_frequency values) is not sized by the layer: the note keeps saying so."""
    import peft
    from peft import get_peft_model

    adapter = tmp_path / "fourierft"
    config = peft.FourierFTConfig(n_frequency=16, target_modules=["q", "v"])
    get_peft_model(_base(tmp_path / "base.safetensors", 32), config).save_pretrained(str(adapter))
    _base(tmp_path / "smaller.safetensors", 16)
    code, data = run_json("diff-keys", str(adapter), str(tmp_path / "smaller.safetensors"))
    note = next(n for n in data["notes"] if n.startswith("A is a PEFT adapter"))
    assert code == 0 and "(shapes not compared: FourierFT tensors are not shaped as the weights" in note, note


_LYCORIS_MODULES = ((_CONV, 32, 32, 3), (_LINEAR, 32, 32, 0), (_TEXT, 64, 16, 0))  # name, out, in, kernel


def _save_lycoris(path: Path, tensors: dict[str, torch.Tensor], algo: str) -> Path:
    save_file({name: tensor.half() for name, tensor in tensors.items()}, str(path), metadata={
        "ss_network_module": "lycoris.kohya", "ss_network_dim": "4", "ss_network_alpha": "4",
        "ss_network_args": json.dumps({"algo": algo})})
    return path


def _glora(path: Path, text_in: int = 16) -> Path:
    """LyCORIS GLoRA, rank 4, untrained (a2, b2 at zero), on the 3×3 conv, the Linear and the text encoder's fc1
    (its input `text_in` wide)."""
    torch.manual_seed(5)
    tensors: dict[str, torch.Tensor] = {}
    for module, out, width, kernel in _LYCORIS_MODULES:
        width = text_in if module == _TEXT else width
        point = (1, 1) if kernel else ()
        tensors.update({f"{module}.a1.weight": torch.randn(width, 4, *point), f"{module}.a2.weight":
                        torch.zeros(4, width, *point), f"{module}.b1.weight": torch.randn(out, 4, *point),
                        f"{module}.b2.weight": torch.zeros(4, width, *((kernel, kernel) if kernel else ())),
                        f"{module}.alpha": torch.tensor(4.0)})
    return _save_lycoris(path, tensors, "glora")


def _oft(path: Path, name: str = "oft_blocks", factors: int = 0, text_out: int = 64) -> Path:
    """LyCORIS diag-OFT (or BOFT with `factors`), untrained: 4 blocks tiling each module's output features."""
    tensors: dict[str, torch.Tensor] = {}
    for module, out, _, kernel in _LYCORIS_MODULES:
        out = text_out if module == _TEXT else out
        tensors[f"{module}.{name}"] = torch.zeros(*((factors,) if factors else ()), 4, out // 4, out // 4)
        if name == "oft_blocks":
            tensors[f"{module}.alpha"] = torch.tensor(0.0)
        if factors:
            tensors[f"{module}.rescale"] = torch.ones(out, *((1, 1, 1) if kernel else (1,)))
    return _save_lycoris(path, tensors, "boft" if factors else "diag-oft")


def _full(path: Path) -> Path:
    """LyCORIS full: the trained weight's difference to the base's (`diff`) and the bias's (`diff_b`)."""
    torch.manual_seed(6)
    tensors: dict[str, torch.Tensor] = {}
    for module, out, width, kernel in _LYCORIS_MODULES:
        tensors[f"{module}.diff"] = torch.randn(out, width, *((kernel, kernel) if kernel else ())) * 1e-3
        tensors[f"{module}.diff_b"] = torch.randn(out) * 1e-3
    return _save_lycoris(path, tensors, "full")


@pytest.mark.parametrize(("make", "method", "parts"), [
    (_glora, "GLoRA", "a1 / a2 / b1 / b2"), (_oft, "diag-OFT", "oft_blocks"),
    (lambda path: _oft(path, "oft_diag"), "diag-OFT", "oft_diag"),
    (lambda path: _oft(path, factors=2), "BOFT", "oft_blocks / rescale"), (_full, "full diff", "diff"),
], ids=["glora", "diag-oft", "old-oft-diag", "boft", "full"])
def test_a_lycoris_glora_oft_or_full_file_against_its_single_file_is_named_and_fits(
        tmp_path: Path, make: Any, method: str, parts: str) -> None:
    """A LyCORIS GLoRA (a1 / a2 / b1 / b2), diag-OFT (oft_blocks, or older LyCORIS' oft_diag), BOFT or full (diff /
    diff_b) file against the Stable Diffusion single file it was trained on was "unknown: no known cause: these
    weights will not load" for every key of both, worst severity error, no note."""
    sd = _sd_single_file(tmp_path / "sd.safetensors")
    code, data = run_json("diff-keys", str(make(tmp_path / "adapter.safetensors")), str(sd))
    assert code == 0 and data["worst_severity"] == "info", [e for e in data["unexpected"] if e["severity"] != "info"]
    assert all(e["reason"] == "adapter" for e in data["unexpected"]), data["unexpected"]
    assert all(e["reason"] == "adapter-base" for e in data["missing"]), data["missing"]
    details = {e["name"]: e["detail"] for e in data["unexpected"]}
    target = "model.diffusion_model.input_blocks.1.0.in_layers.2"
    assert any(detail == f"{method} on {target}.weight" for detail in details.values()), details
    note = next(n for n in data["notes"] if n.startswith("A is a LyCORIS adapter"))
    assert note.startswith(f"A is a LyCORIS adapter ({parts} under flat lora_unet_ / lora_te_ names): {method} on "
                           "3 modules of the text encoder, UNet / transformer"), note
    assert "3 of them in B with shapes that fit" in note and "LyCORIS' create_lycoris_from_weights" in note, note


@pytest.mark.parametrize(("make", "words"), [
    (lambda path: _glora(path, text_in=32), "a1 32×4 spans 32 input features, the weight has 16 (64×16 in B)"),
    (lambda path: _oft(path, text_out=128),
     "oft_blocks 4×32×32 (4 blocks of 32) rotates 128 output features, the weight has 64 (64×16 in B)"),
], ids=["glora", "diag-oft"])
def test_a_lycoris_glora_or_oft_for_another_model_size_is_an_error_naming_the_width(
        tmp_path: Path, make: Any, words: str) -> None:
    """Their tensors are sized by the layer's widths; one made for a wider text encoder does not load."""
    sd = _sd_single_file(tmp_path / "sd.safetensors")
    code, data = run_json("diff-keys", str(make(tmp_path / "adapter.safetensors")), str(sd))
    assert code == 1 and data["worst_severity"] == "error"
    errors = [e["detail"] for e in data["unexpected"] if e["severity"] == "error"]
    assert any(detail.startswith("GLoRA on cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1: "
                                 f"{words}") or detail.endswith(f"{words}: an adapter for another model size")
               for detail in errors), errors
    note = next(n for n in data["notes"] if n.startswith("A is a LyCORIS adapter"))
    assert "2 of them in B with shapes that fit" in note, note
    assert note.endswith("; 1 of them does not fit B's shapes: it was made for another model (or another size of it) "
                         "than B"), note


def test_an_untrained_lycoris_glora_or_oft_is_named_as_one_not_a_broken_layer(tmp_path: Path) -> None:
    """inspect --stats called GLoRA's a2 / b2 and OFT's oft_blocks, which LyCORIS starts at zero, "a layer that was
    never initialized or was zeroed; it passes nothing on", and BOFT's rescale (ones) "a constant weight never breaks
    symmetry"."""
    findings = []
    for path in (_glora(tmp_path / "glora.safetensors"), _oft(tmp_path / "boft.safetensors", factors=2)):
        code, data = run_json("inspect", str(path), "--stats")
        assert code == 0
        findings += data["findings"]
    hints = {f["tensor"]: f["hint"] for f in findings if f.get("tensor")}
    assert hints[f"{_LINEAR}.a2.weight"].startswith("a LyCORIS GLoRA factor still at its initialization (LyCORIS "
                                                    "starts a2 and b2 at zero)"), hints
    assert hints[f"{_LINEAR}.oft_blocks"].startswith("a LyCORIS / kohya OFT adapter still at its initialization"), hints
    assert hints[f"{_LINEAR}.rescale"].startswith("a LyCORIS OFT / BOFT adapter's rescale still at its initialization")
    every = " ".join(hints.values())
    assert "never initialized" not in every and "never breaks symmetry" not in every, every


def test_a_kohya_or_lycoris_files_legend_names_its_family_not_peft(tmp_path: Path) -> None:
    """diff-keys' reasons legend said "adapter / PEFT weights (LoRA, prefix tuning): merge them or load through PEFT"
    and "a weight of the base model, which a PEFT adapter does not store: PeftModel.from_pretrained(base, adapter)
    takes it from the base" for a kohya LoRA or a LyCORIS file, which PEFT cannot load."""
    sd = _sd_single_file(tmp_path / "sd.safetensors")
    torch.manual_seed(7)
    kohya = tmp_path / "kohya.safetensors"
    save_file({f"{_LINEAR}.lora_down.weight": torch.randn(4, 32), f"{_LINEAR}.lora_up.weight": torch.randn(32, 4),
               f"{_LINEAR}.alpha": torch.tensor(4.0)}, str(kohya), metadata={"ss_network_module": "networks.lora"})
    for path, family in ((kohya, "a kohya-style LoRA"), (_glora(tmp_path / "glora.safetensors"), "a LyCORIS adapter")):
        result = run_cli("diff-keys", str(path), str(sd))
        said = " ".join(result.stdout.replace("│", " ").split())  # the legend's words, out of its panel
        assert result.exit_code == 0, result.stdout
        assert "load through PEFT" not in said and "PeftModel.from_pretrained" not in said, said
        assert f"adapter {family}'s own weights, which PEFT does not load: load them with the loader the note " \
               "names, or merge them into the base" in said, said
        assert f"adapter-base a weight of the base model, which {family} does not store: the loader the note " \
               "names takes it from the base" in said, said


def test_a_lycoris_file_is_named_as_one_by_plan_devices_and_shard(tmp_path: Path) -> None:
    """plan-devices and shard called a LyCORIS file "a kohya-style LoRA", shard with diffusers' from_single_file /
    load_lora_weights among its loaders (diffusers' LoRA loader reads lora_down / lora_up, not GLoRA's factors)."""
    path = _glora(tmp_path / "glora.safetensors")
    code, data = run_json("plan-devices", str(path), "--gpu", "1GB")
    said = " ".join(data["warnings"])
    assert code == 0 and "this is a LyCORIS adapter (under kohya's flat lora_unet_ / lora_te_ names): only its own " \
        "weights are planned" in said, said
    code, data = run_json("shard", str(path), "--max", "1KB", "-o", str(tmp_path / "shards"))
    assert code == 0
    assert "a LyCORIS adapter (under kohya's flat lora_unet_ / lora_te_ names) is loaded from one file (ComfyUI, " \
        "AUTOMATIC1111 / Forge, LyCORIS' create_lycoris_from_weights): none of them reads an index or these " \
        "shards" in data["plan"]["warnings"], data["plan"]["warnings"]


def _flux(path: Path, img_in: int = 64, chroma: bool = False, prefix: str = "") -> Path:
    """A (tiny) Flux transformer in Black Forest Labs' layout: double and single blocks, img_in reading `img_in`
    channels (64 for dev / schnell, 384 for Fill, 128 for Depth / Canny) and the modulation inputs (time_in,
    vector_in, guidance_in); or lodestones' Chroma, whose distilled_guidance_layer replaces those."""
    torch.manual_seed(8)
    hidden = 32
    tensors = {"img_in.weight": torch.randn(hidden, img_in), "txt_in.weight": torch.randn(hidden, 16),
               "double_blocks.0.img_attn.qkv.weight": torch.randn(3 * hidden, hidden),
               "single_blocks.0.linear1.weight": torch.randn(7 * hidden, hidden),
               "final_layer.linear.weight": torch.randn(64, hidden)}
    if chroma:
        tensors.update({"distilled_guidance_layer.in_proj.weight": torch.randn(hidden, 64),
                        "distilled_guidance_layer.layers.0.in_layer.weight": torch.randn(hidden, hidden),
                        "distilled_guidance_layer.out_proj.weight": torch.randn(hidden, hidden)})
    else:
        tensors.update({"time_in.in_layer.weight": torch.randn(hidden, 256),
                        "vector_in.in_layer.weight": torch.randn(hidden, 24),
                        "guidance_in.in_layer.weight": torch.randn(hidden, 256),
                        "double_blocks.0.img_mod.lin.weight": torch.randn(6 * hidden, hidden)})
    save_file({prefix + name: tensor.half() for name, tensor in tensors.items()}, str(path))
    return path


def _sd3(path: Path, blocks: int, mmdit_x: bool) -> Path:
    """A (tiny) SD3-family MMDiT under ComfyUI's / Stability's `model.diffusion_model.`: `blocks` joint blocks, and
    SD3.5 Medium's MMDiT-X second self-attention (x_block.attn2) in the first two when `mmdit_x`."""
    tensors = {"model.diffusion_model.x_embedder.proj.weight": torch.zeros(8, 4, 2, 2)}
    for i in range(blocks):
        tensors[f"model.diffusion_model.joint_blocks.{i}.x_block.attn.qkv.weight"] = torch.zeros(24, 8)
        tensors[f"model.diffusion_model.joint_blocks.{i}.context_block.attn.qkv.weight"] = torch.zeros(24, 8)
        if mmdit_x and i < 2:
            tensors[f"model.diffusion_model.joint_blocks.{i}.x_block.attn2.qkv.weight"] = torch.zeros(24, 8)
    save_file(tensors, str(path))
    return path


def _sdxl_refiner(path: Path) -> Path:
    """A (tiny) SDXL refiner single file (sgm layout): its UNet, VAE, and one text encoder, OpenCLIP-G, as
    conditioner.embedders.0.model (the base model's embedders.0 is CLIP-L, .1 OpenCLIP-G)."""
    torch.manual_seed(9)
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.randn(32, 4, 3, 3).half(),
               "model.diffusion_model.label_emb.0.0.weight": torch.randn(64, 2560).half(),
               "first_stage_model.encoder.conv_in.weight": torch.randn(8, 3, 3, 3).half(),
               "conditioner.embedders.0.model.transformer.resblocks.0.mlp.c_fc.weight": torch.randn(64, 16).half(),
               "conditioner.embedders.0.model.text_projection": torch.randn(16, 16).half()}, str(path))
    return path


@pytest.mark.parametrize(("make", "kind"), [
    (lambda path: _flux(path, chroma=True), "an original-layout Chroma (Flux-derived) checkpoint"),
    (lambda path: _flux(path, chroma=True, prefix="model.diffusion_model."),
     "a single-file Chroma (Flux-derived) checkpoint"),
    (lambda path: _flux(path, img_in=384), "an original-layout Flux Fill checkpoint"),
    (lambda path: _flux(path, img_in=128), "an original-layout Flux Depth / Canny checkpoint"),
    (_flux, "an original-layout Flux checkpoint"),
    (lambda path: _sd3(path, 4, mmdit_x=True), "a single-file SD3.5 Medium (MMDiT-X) checkpoint"),
    (lambda path: _sd3(path, 38, mmdit_x=False), "a single-file SD3.5 Large checkpoint"),
    (lambda path: _sd3(path, 24, mmdit_x=False), "a single-file SD3 checkpoint"),
], ids=["chroma", "chroma-comfyui", "flux-fill", "flux-depth", "flux-dev", "sd35-medium", "sd35-large", "sd3-medium"])
def test_sharding_a_diffusion_transformer_single_file_names_its_model(tmp_path: Path, make: Any, kind: str) -> None:
    """shard's "is loaded from one file" warning called lodestones' Chroma (distilled_guidance_layer, no guidance_in)
    "a Flux checkpoint", FLUX.1 Fill (img_in reads 384 channels) and Depth / Canny (128) plain Flux, SD3.5 Medium
    (MMDiT-X: x_block.attn2) and Large (38 joint blocks) "SD3"."""
    path = make(tmp_path / "model.safetensors")
    code, data = run_json("shard", str(path), "--max", "1KB", "-o", str(tmp_path / "shards"))
    assert code == 0
    assert f"{kind} is loaded from one file (ComfyUI, diffusers' from_single_file): none of them reads an index or " \
        "these shards" in data["plan"]["warnings"], data["plan"]["warnings"]


def test_a_comfyui_all_in_one_chroma_or_sd35_file_names_its_model_and_only_its_loaders(tmp_path: Path) -> None:
    """ComfyUI's all-in-one files (the diffusion model beside text_encoders. and vae.): Chroma's was "a ComfyUI
    single-file Flux checkpoint" loaded by Forge, which is Flux's loader; SD3.5's keeps diffusers'
    StableDiffusion3Pipeline.from_single_file among its loaders."""
    extra = {"text_encoders.t5xxl.transformer.shared.weight": torch.zeros(8, 4), "vae.decoder.conv_in.weight":
             torch.zeros(4, 4, 3, 3)}
    chroma = _flux(tmp_path / "chroma.safetensors", chroma=True, prefix="model.diffusion_model.")
    medium = _sd3(tmp_path / "medium.safetensors", 4, mmdit_x=True)
    for path in (chroma, medium):
        save_file({**load_file(str(path)), **extra}, str(path))
    warnings = {}
    for path in (chroma, medium):
        code, data = run_json("shard", str(path), "--max", "1KB", "-o", str(tmp_path / path.stem))
        assert code == 0
        warnings[path.stem] = " ".join(data["plan"]["warnings"])
    assert "a ComfyUI single-file Chroma (Flux-derived) checkpoint (diffusion model, text encoders and VAE) is " \
        "loaded from one file (ComfyUI's Load Checkpoint node): none" in warnings["chroma"], warnings["chroma"]
    assert "a ComfyUI single-file SD3.5 Medium (MMDiT-X) checkpoint (diffusion model, text encoders and VAE) is " \
        "loaded from one file (ComfyUI's Load Checkpoint node, diffusers' StableDiffusion3Pipeline.from_single_file)" \
        in warnings["medium"], warnings["medium"]


def test_sharding_an_sdxl_refiner_single_file_names_it_as_one(tmp_path: Path) -> None:
    """The SDXL refiner (one text encoder, OpenCLIP-G, as conditioner.embedders.0.model) was "a single-file Stable
    Diffusion checkpoint", as SD 1.x is called."""
    path = _sdxl_refiner(tmp_path / "sd_xl_refiner_1.0.safetensors")
    code, data = run_json("shard", str(path), "--max", "1KB", "-o", str(tmp_path / "shards"))
    said = " ".join(data["plan"]["warnings"])
    assert code == 0 and "a single-file SDXL refiner checkpoint is loaded from one file" in said, said
    assert "a single-file Stable Diffusion checkpoint" not in said, said


@pytest.mark.parametrize("chroma_side", ["A", "B"])
def test_diff_keys_of_chroma_against_flux_names_both_models(tmp_path: Path, chroma_side: str) -> None:
    """Chroma against Flux (either way round): Flux's modulation and Chroma's distilled_guidance_layer were "unknown:
    no known cause" (the approximator's norms' `scale` a "quantization side tensor"), with no word that the two are
    other models, nor how Chroma loads."""
    chroma, flux = _flux(tmp_path / "chroma.safetensors", chroma=True), _flux(tmp_path / "flux1-dev.safetensors")
    a, b = (chroma, flux) if chroma_side == "A" else (flux, chroma)
    code, data = run_json("diff-keys", str(a), str(b))
    flux_side = "B" if chroma_side == "A" else "A"
    assert code == 1 and data["worst_severity"] == "error"
    entries = {e["name"]: e for e in data["missing"] + data["unexpected"]}
    assert {e["reason"] for e in entries.values()} == {"other-model"}, entries
    assert entries["distilled_guidance_layer.layers.0.in_layer.weight"]["detail"] == (
        f"Chroma's distilled_guidance_layer (in {chroma_side}): Flux has none")
    assert entries["guidance_in.in_layer.weight"]["detail"] == (
        f"Flux's modulation (in {flux_side}), which Chroma replaces with its distilled_guidance_layer")
    assert f"{chroma_side} is Chroma (Flux-derived) and {flux_side} Flux: Chroma keeps Flux's double and single " \
        "blocks" in " ".join(data["notes"]), data["notes"]
    assert "ChromaTransformer2DModel.from_single_file" in " ".join(data["notes"]), data["notes"]


def test_diff_keys_of_flux_fill_against_flux_dev_names_the_variants(tmp_path: Path) -> None:
    """FLUX.1 Fill's img_in (384 input channels) against dev's (64) was "32×384 in A, 32×64 in B", reason shape,
    nothing more: which model each is, and that each has its own pipeline, is said."""
    code, data = run_json("diff-keys", str(_flux(tmp_path / "fill.safetensors", img_in=384)),
                          str(_flux(tmp_path / "dev.safetensors")))
    assert code == 1
    (row,) = data["mismatched"]
    assert row["name"] == "img_in.weight" and row["detail"] == (
        "32×384 in A, 32×64 in B: img_in reads 384 channels in A (FLUX.1 Fill), 64 in B (FLUX.1 dev / schnell / "
        "Kontext): other FLUX.1 models, each run by its own pipeline (FluxFillPipeline, FluxPipeline)"), row


def test_inspect_counts_the_sdxl_refiners_one_text_encoder(tmp_path: Path) -> None:
    """inspect's tree labelled the refiner's one OpenCLIP-G embedder (conditioner.embedders.0.model) "text
    encoders"; the base model's two (conditioner.embedders) stay "text encoders"."""
    result = run_cli("inspect", str(_sdxl_refiner(tmp_path / "sd_xl_refiner_1.0.safetensors")))
    lines = [line for line in result.stdout.splitlines() if "conditioner.embedders.0.model " in line]
    assert result.exit_code == 0 and lines and lines[0].rstrip().endswith(" text encoder"), result.stdout


@pytest.mark.parametrize("method", ["VeRA", "IA3"])
def test_an_nn_linear_named_as_gpt2s_conv1d_is_not_taken_for_one(tmp_path: Path, method: str) -> None:
    """OpenCLIP's MLPs are nn.Linear layers named c_fc / c_proj, GPT-2's Conv1D names: read as Conv1D (in × out)
    only, a VeRA or feedforward IA3 adapter on them, against the very base it was made on, was an error."""
    import peft
    from peft import get_peft_model

    torch.manual_seed(10)
    base = torch.nn.ModuleDict({"mlp": torch.nn.ModuleDict({"c_fc": torch.nn.Linear(16, 64),
                                                            "c_proj": torch.nn.Linear(64, 16)})})
    save_file({name: tensor.contiguous() for name, tensor in base.state_dict().items()},
              str(tmp_path / "base.safetensors"))
    config = (peft.VeraConfig(r=4, target_modules=["c_fc", "c_proj"], save_projection=True) if method == "VeRA" else
              peft.IA3Config(target_modules=["c_fc", "c_proj"], feedforward_modules=["c_proj"]))
    get_peft_model(base, config).save_pretrained(str(tmp_path / "adapter"))
    code, data = run_json("diff-keys", str(tmp_path / "adapter"), str(tmp_path / "base.safetensors"))
    assert code == 0 and data["worst_severity"] == "info", [e for e in data["unexpected"] if e["severity"] != "info"]


@pytest.mark.parametrize(("stage", "prefix", "kind"), [
    ("C", "", "an original-layout Stable Cascade stage C checkpoint"),
    ("B", "model.diffusion_model.", "a single-file Stable Cascade stage B checkpoint"),
])
def test_sharding_a_stable_cascade_stage_names_it(tmp_path: Path, stage: str, prefix: str, kind: str) -> None:
    """Stable Cascade's stage C (clip_txt_mapper, clip_img_mapper) and stage B (effnet_mapper) files, which ComfyUI
    and diffusers' StableCascadeUNet.from_single_file read whole: bare, shard said nothing of who cannot read its
    shards; under ComfyUI's prefix it was "a single-file diffusion checkpoint"."""
    torch.manual_seed(11)
    tensors = ({"clip_txt_mapper.weight": torch.randn(64, 32), "clip_txt_pooled_mapper.weight": torch.randn(64, 32),
                "clip_img_mapper.weight": torch.randn(64, 32)} if stage == "C" else
               {"effnet_mapper.0.weight": torch.randn(64, 16, 1, 1), "pixels_mapper.0.weight": torch.randn(64, 3, 1, 1),
                "clip_mapper.weight": torch.randn(64, 32)})
    tensors["down_blocks.0.0.channelwise.0.weight"] = torch.randn(64, 64)
    path = tmp_path / f"stage_{stage.lower()}.safetensors"
    save_file({prefix + name: tensor.half() for name, tensor in tensors.items()}, str(path))
    code, data = run_json("shard", str(path), "--max", "1KB", "-o", str(tmp_path / "shards"))
    assert code == 0
    assert f"{kind} is loaded from one file (ComfyUI, diffusers' from_single_file): none of them reads an index or " \
        "these shards" in data["plan"]["warnings"], data["plan"]["warnings"]


def test_a_flux_redux_file_is_named_as_an_add_on_of_flux(tmp_path: Path) -> None:
    """FLUX.1 Redux (flux1-redux-dev.safetensors: redux_up, redux_down) is applied beside a Flux model: plan-devices
    planned its few KB alone with "fits on the GPUs" and nothing said, shard named nothing of who reads it."""
    torch.manual_seed(12)
    path = tmp_path / "flux1-redux-dev.safetensors"
    save_file({"redux_up.weight": torch.randn(96, 16).half(), "redux_up.bias": torch.zeros(96).half(),
               "redux_down.weight": torch.randn(32, 96).half(), "redux_down.bias": torch.zeros(32).half()}, str(path))
    code, data = run_json("plan-devices", str(path), "--gpu", "1GB")
    said = " ".join(data["warnings"])
    assert code == 0 and "this is a FLUX.1 Redux image embedder (redux_up / redux_down): only its own weights are " \
        "planned, not the Stable Diffusion / Flux model it is applied to" in said, said
    code, data = run_json("shard", str(path), "--max", "1KB", "-o", str(tmp_path / "shards"))
    assert code == 0 and "a FLUX.1 Redux image embedder (redux_up / redux_down) is loaded from one file (ComfyUI's " \
        "Load Style Model node): none of them reads an index or these shards" in data["plan"]["warnings"]
