"""A twenty-ninth round: third-party files no earlier round covered, run through the commands that apply:
diffusers' and kohya's text-encoder LoRAs against a CLIPTextModel saved by transformers 5.6 or later (which dropped
its `text_model.` wrapper: conversion_mapping.py's PrefixChange(prefix_to_remove="text_model"); diffusers issue
#13984 for what its loader does then), LyCORIS LoHa / LoKr files with Tucker cores of two ranks against each other.

diffusers is not installed here: its text-encoder LoRA layout (`text_encoder.text_model.encoder.layers.N.self_attn.
q_proj.lora_A.weight`, rank × in, lora_B out × rank) is written out as save_lora_weights names it; kohya's
(`lora_te_text_model_encoder_layers_N_self_attn_q_proj.lora_down.weight`, `alpha`) as sd-scripts' networks/lora.py
names it. LyCORIS is not installed either: its Tucker layout is lycoris/modules/loha.py's and lokr.py's (use_tucker:
hada_t1 / hada_t2 rank × rank × kh × kw, hada_w1_a rank × out ("out_dim, 1-mode"), hada_w1_b rank × in; lokr_t2
rank × rank × kh × kw, lokr_w2_a rank × out / factor, lokr_w2_b rank × in / factor).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.helpers import one_error_line, run_cli, run_json

_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _clip_text_model(folder: Path, hidden: int = 32) -> Path:
    """A tiny CLIPTextModel saved by the installed transformers (5.25: its keys have no `text_model.` prefix)."""
    import transformers

    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(vocab_size=100, hidden_size=hidden, intermediate_size=2 * hidden,
                                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
                                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    transformers.CLIPTextModel(config).save_pretrained(str(folder))
    return folder


def _diffusers_text_lora(path: Path, width: int = 32, rank: int = 4) -> Path:
    generator = torch.Generator().manual_seed(29)
    state = {}
    for layer in range(2):
        for proj in _PROJECTIONS:
            module = f"text_encoder.text_model.encoder.layers.{layer}.self_attn.{proj}"
            state[f"{module}.lora_A.weight"] = torch.randn(rank, width, generator=generator)
            state[f"{module}.lora_B.weight"] = torch.zeros(width, rank)
    save_file(state, str(path))
    return path


def _kohya_text_lora(path: Path, width: int = 32, rank: int = 4) -> Path:
    generator = torch.Generator().manual_seed(29)
    state = {}
    for layer in range(2):
        for proj in _PROJECTIONS:
            module = f"lora_te_text_model_encoder_layers_{layer}_self_attn_{proj}"
            state[f"{module}.lora_down.weight"] = torch.randn(rank, width, generator=generator)
            state[f"{module}.lora_up.weight"] = torch.zeros(width, rank)
            state[f"{module}.alpha"] = torch.tensor(float(rank))
    save_file(state, str(path))
    return path


def test_a_text_encoder_lora_against_a_clip_text_model_saved_without_its_wrapper(tmp_path: Path) -> None:
    """A diffusers text-encoder LoRA against the CLIPTextModel it adapts, saved by transformers 5.25: each pair was
    an error ("targets text_encoder.text_model.encoder..., which B does not have") and the note told to load it with
    peft's PeftModel.from_pretrained, which the file is not for; a kohya one, "unknown: these weights will not load"
    on every key. Each pair is now checked against B's module without the wrapper, and the note names diffusers'
    loader and what it does with such a text encoder."""
    clip = _clip_text_model(tmp_path / "text_encoder")
    from safetensors import safe_open

    with safe_open(str(clip / "model.safetensors"), "pt") as saved:
        assert not any(name.startswith("text_model.") for name in saved.keys())  # noqa: SIM118 (safe_open)
    cases = ((_diffusers_text_lora(tmp_path / "pytorch_lora_weights.safetensors"),
              "text_encoder.text_model.encoder.layers.1.self_attn.v_proj.lora_A.weight",
              "the pipeline's load_lora_weights (its load_lora_into_text_encoder)", 16),
             (_kohya_text_lora(tmp_path / "kohya.safetensors"),
              "lora_te_text_model_encoder_layers_1_self_attn_v_proj.lora_down.weight", "diffusers' load_lora_weights",
              24))
    for lora, key, loader, count in cases:
        code, data = run_json("diff-keys", str(lora), str(clip))
        assert code == 0 and data["worst_severity"] == "info", data
        details = {issue["name"]: (issue["reason"], issue["detail"]) for issue in data["unexpected"]}
        assert len(details) == count and {reason for reason, _ in details.values()} == {"adapter"}
        assert details[key] == ("adapter", "LoRA on encoder.layers.1.self_attn.v_proj.weight")
        assert {issue["reason"] for issue in data["missing"]} == {"adapter-base"}
        note = data["notes"][-1]
        assert "PeftModel" not in note and "8 modules of the" in note
        assert "8 of them in B with shapes that fit" in note
        assert f"{loader} maps them onto such a text encoder only in a diffusers release that knows the flattened " \
            "class: older ones raise IndexError in load_lora_into_text_encoder (diffusers issue #13984)" in note
        assert "B is a CLIPTextModel saved by transformers 5.6 or later" in note


def test_a_text_encoder_lora_for_another_width_against_a_flattened_clip_text_model_is_an_error(
        tmp_path: Path) -> None:
    """The check is a real one: a LoRA made for a 48-wide text encoder against this 32-wide one is an error on the
    pairs whose shapes do not fit, and the wrapper note is not given to a CLIPTextModelWithProjection (which keeps
    `text_model.`)."""
    clip = _clip_text_model(tmp_path / "text_encoder")
    for lora in (_diffusers_text_lora(tmp_path / "wide.safetensors", width=48),
                 _kohya_text_lora(tmp_path / "wide_kohya.safetensors", width=48)):
        code, data = run_json("diff-keys", str(lora), str(clip))
        assert code == 1 and data["worst_severity"] == "error"
        errors = [issue for issue in data["unexpected"] if issue["severity"] == "error"]
        assert len(errors) >= 16 and all("does not fit encoder.layers." in issue["detail"] for issue in errors), errors

    import transformers

    projected = tmp_path / "text_encoder_2"
    config = transformers.CLIPTextConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, max_position_embeddings=16, projection_dim=16,
                                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    transformers.CLIPTextModelWithProjection(config).save_pretrained(str(projected))
    code, data = run_json("diff-keys", str(_diffusers_text_lora(tmp_path / "a.safetensors")), str(projected))
    assert code == 0 and data["worst_severity"] == "info"
    assert data["notes"][-1].endswith("load it with the pipeline's load_lora_weights(adapter), or fuse it (fuse_lora) "
                                      "before comparing whole checkpoints"), data["notes"]


_CONV = "lora_unet_down_blocks_0_resnets_0_conv1"
_LINEAR = "lora_unet_down_blocks_0_attentions_0_proj_in"


def _tucker_loha(path: Path, rank: int, width_out: int = 32) -> Path:
    """LyCORIS LoHa under kohya's names: Tucker-decomposed on a 3×3 conv (16 → width_out), plain on a Linear."""
    generator = torch.Generator().manual_seed(rank)
    state = {}
    for n in (1, 2):
        state[f"{_CONV}.hada_t{n}"] = torch.randn(rank, rank, 3, 3, generator=generator)
        state[f"{_CONV}.hada_w{n}_a"] = torch.randn(rank, width_out, generator=generator)
        state[f"{_CONV}.hada_w{n}_b"] = torch.randn(rank, 16, generator=generator)
        state[f"{_LINEAR}.hada_w{n}_a"] = torch.randn(32, rank, generator=generator)
        state[f"{_LINEAR}.hada_w{n}_b"] = torch.randn(rank, 32, generator=generator)
    state[f"{_CONV}.alpha"], state[f"{_LINEAR}.alpha"] = torch.tensor(float(rank)), torch.tensor(float(rank))
    save_file(state, str(path))
    return path


def _tucker_lokr(path: Path, rank: int) -> Path:
    """LyCORIS LoKr on a 3×3 conv (16 → 32 channels): lokr_w1 4×4 ⊗ a Tucker-decomposed w2 (8 out, 4 in × 3×3)."""
    generator = torch.Generator().manual_seed(rank)
    save_file({f"{_CONV}.lokr_w1": torch.randn(4, 4, generator=generator),
               f"{_CONV}.lokr_t2": torch.randn(rank, rank, 3, 3, generator=generator),
               f"{_CONV}.lokr_w2_a": torch.randn(rank, 8, generator=generator),
               f"{_CONV}.lokr_w2_b": torch.randn(rank, 4, generator=generator),
               f"{_CONV}.alpha": torch.tensor(float(rank))}, str(path))
    return path


def test_two_tucker_loha_and_lokr_files_of_another_rank_say_the_ranks(tmp_path: Path) -> None:
    """Two LoHa files trained with use_tucker at dim 4 and 8: the conv's keys read "shape: 4×32 in A, 8×32 in B"
    (the rank read from hada_w1_a's second axis, the conv's width under Tucker) and the cores' "4×4×3×3 in A,
    8×8×3×3 in B", with a note that the files are "not two of one size"; the plain Linear's beside them read
    "LoRA rank 4 in A, 8 in B". Every factor and core now says its rank, and the note counts both modules."""
    code, data = run_json("diff-keys", str(_tucker_loha(tmp_path / "dim4.safetensors", 4)),
                          str(_tucker_loha(tmp_path / "dim8.safetensors", 8)))
    assert code == 1
    details = {issue["name"]: (issue["reason"], issue["detail"]) for issue in data["mismatched"]}
    assert len(details) == 10 and {reason for reason, _ in details.values()} == {"lora-rank"}, details
    assert details[f"{_CONV}.hada_w1_a"] == ("lora-rank", "4×32 in A, 8×32 in B: LoRA rank 4 in A, 8 in B")
    assert details[f"{_CONV}.hada_t2"] == ("lora-rank", "4×4×3×3 in A, 8×8×3×3 in B: LoRA rank 4 in A, 8 in B")
    assert details[f"{_CONV}.hada_w2_b"] == ("lora-rank", "4×16 in A, 8×16 in B: LoRA rank 4 in A, 8 in B")
    assert data["notes"][0].startswith("2 LoRA modules differ in rank only") and len(data["notes"]) == 1, data["notes"]

    code, data = run_json("diff-keys", str(_tucker_lokr(tmp_path / "lokr4.safetensors", 4)),
                          str(_tucker_lokr(tmp_path / "lokr8.safetensors", 8)))
    details = {issue["name"]: (issue["reason"], issue["detail"]) for issue in data["mismatched"]}
    assert details == {
        f"{_CONV}.lokr_t2": ("lora-rank", "4×4×3×3 in A, 8×8×3×3 in B: LoRA rank 4 in A, 8 in B"),
        f"{_CONV}.lokr_w2_a": ("lora-rank", "4×8 in A, 8×8 in B: LoRA rank 4 in A, 8 in B"),
        f"{_CONV}.lokr_w2_b": ("lora-rank", "4×4 in A, 8×4 in B: LoRA rank 4 in A, 8 in B")}
    assert data["notes"][0].startswith("1 LoRA module differs in rank only"), data["notes"]


def test_a_tucker_loha_for_another_width_is_not_called_another_rank(tmp_path: Path) -> None:
    """The rank is read only where nothing else differs: a Tucker LoHa of another rank whose conv writes 64 channels,
    not 32, is a shape difference on that conv's `_a` factors, not "another rank"."""
    code, data = run_json("diff-keys", str(_tucker_loha(tmp_path / "dim4.safetensors", 4)),
                          str(_tucker_loha(tmp_path / "wide8.safetensors", 8, width_out=64)))
    details = {issue["name"]: issue["reason"] for issue in data["mismatched"]}
    assert details[f"{_CONV}.hada_w1_a"] == details[f"{_CONV}.hada_w2_a"] == "shape", details
    assert details[f"{_LINEAR}.hada_w1_a"] == "lora-rank"


def test_two_peft_loha_adapters_with_effective_conv2d_of_another_rank_say_the_ranks(tmp_path: Path) -> None:
    """peft's LoHa saves the same Tucker layout (use_effective_conv2d: hada_t1 r × r × 3 × 3, hada_w1_a r × out):
    two adapters of r=4 and r=8 saved by the real peft read the conv's six keys as "shape", now as another rank."""
    import peft

    class ConvAndLinear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(16, 32, 3)
            self.lin = torch.nn.Linear(32, 32)

    folders = []
    for rank in (4, 8):
        torch.manual_seed(0)
        model = peft.get_peft_model(ConvAndLinear(), peft.LoHaConfig(
            r=rank, target_modules=["conv", "lin"], use_effective_conv2d=True, init_weights=False))
        model.save_pretrained(str(tmp_path / f"loha{rank}"))
        folders.append(str(tmp_path / f"loha{rank}"))
    code, data = run_json("diff-keys", *folders)
    assert code == 1
    details = {issue["name"]: (issue["reason"], issue["detail"]) for issue in data["mismatched"]}
    assert details["base_model.model.conv.hada_w1_a"] == (
        "lora-rank", "4×32 in A, 8×32 in B: LoRA rank 4 in A, 8 in B")
    assert details["base_model.model.conv.hada_t1"] == (
        "lora-rank", "4×4×3×3 in A, 8×8×3×3 in B: LoRA rank 4 in A, 8 in B")
    assert len(details) == 10 and {reason for reason, _ in details.values()} == {"lora-rank"}
    assert data["notes"][0].startswith("2 LoRA modules differ in rank only"), data["notes"]


# LoRAAttnAddedKVProcessor (diffusers' attention_processor.py, its first LoRA processors): to_q_lora, add_k_proj_lora
# and add_v_proj_lora (LoRALinearLayer(cross_attention_dim or hidden_size, hidden_size, rank)), to_k_lora, to_v_lora,
# to_out_lora; saved by save_attn_procs under `<attn>.processor.`. Its UNet's added-KV attention (UnCLIP's,
# DeepFloyd IF's) holds to_q / to_k / to_v / add_k_proj / add_v_proj / to_out.0.
_ADDED_KV_ATTENTIONS = ("down_blocks.1.attentions.0", "mid_block.attentions.0")


def _added_kv_lora(path: Path, added: int = 24, hidden: int = 32, rank: int = 4) -> Path:
    generator = torch.Generator().manual_seed(2)
    state = {}
    for attention in _ADDED_KV_ATTENTIONS:
        for proj in ("to_q", "add_k_proj", "add_v_proj", "to_k", "to_v", "to_out"):
            width_in = added if proj.startswith("add_") else hidden
            name = f"{attention}.processor.{proj}_lora"
            state[f"{name}.down.weight"] = torch.randn(rank, width_in, generator=generator) / rank
            state[f"{name}.up.weight"] = torch.zeros(hidden, rank)
    torch.save(state, path)
    return path


def _added_kv_unet(folder: Path, added: int = 24, hidden: int = 32) -> Path:
    import json

    generator = torch.Generator().manual_seed(0)
    state = {}
    for attention in _ADDED_KV_ATTENTIONS:
        for proj in ("to_q", "to_k", "to_v", "add_k_proj", "add_v_proj", "to_out.0"):
            width_in = added if proj.startswith("add_") else hidden
            state[f"{attention}.{proj}.weight"] = torch.randn(hidden, width_in, generator=generator)
            state[f"{attention}.{proj}.bias"] = torch.zeros(hidden)
    folder.mkdir()
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel",
                                                    "_diffusers_version": "0.14.0"}))
    return folder


def test_an_added_kv_attention_processor_lora_is_checked_against_add_k_proj(tmp_path: Path) -> None:
    """save_attn_procs' pytorch_lora_weights.bin of a UNet with added-KV attention against that UNet: each
    add_k_proj_lora / add_v_proj_lora key read "saved for ...add_k_proj_lora.down.weight, which B does not have", 8
    errors. Each is now the LoRA on B's add_k_proj / add_v_proj, its shape checked, a warning (diffusers' loaders since
    the PEFT backend leave these pairs out), and the note says so."""
    lora = _added_kv_lora(tmp_path / "pytorch_lora_weights.bin")
    code, data = run_json("diff-keys", str(lora), str(_added_kv_unet(tmp_path / "unet")))
    assert code == 0 and data["worst_severity"] == "warn", data
    details = {issue["name"]: (issue["reason"], issue["severity"], issue["detail"]) for issue in data["unexpected"]}
    assert details["mid_block.attentions.0.processor.add_v_proj_lora.up.weight"] == (
        "adapter", "warn", "LoRA on mid_block.attentions.0.add_v_proj.weight (LoRAAttnAddedKVProcessor's added key / "
        "value projection), which diffusers' current loaders leave out: they do not rename add_v_proj_lora")
    assert details["down_blocks.1.attentions.0.processor.to_k_lora.down.weight"] == (
        "adapter", "info", "LoRA on down_blocks.1.attentions.0.to_k.weight")
    assert sum(severity == "warn" for _, severity, _ in details.values()) == 8
    assert {issue["reason"] for issue in data["missing"]} == {"adapter-base"}
    note = data["notes"][-1]
    assert "LoRA (rank 4) on 8 modules of the pipeline's unet (B), 8 of them in B with shapes that fit" in note
    assert ("its LoRAAttnAddedKVProcessor pairs (add_k_proj_lora / add_v_proj_lora) are on 4 added key / value "
            "projections of B's, 4 of them with shapes that fit, but diffusers' loaders since its PEFT backend leave "
            "them out") in note


def test_an_added_kv_lora_for_another_added_width_is_an_error(tmp_path: Path) -> None:
    """The check is a real one: pairs made for a 16-wide added condition against a UNet whose add_k_proj reads 24
    are errors naming the shapes."""
    lora = _added_kv_lora(tmp_path / "pytorch_lora_weights.bin", added=16)
    code, data = run_json("diff-keys", str(lora), str(_added_kv_unet(tmp_path / "unet")))
    assert code == 1 and data["worst_severity"] == "error"
    details = {issue["name"]: issue["detail"] for issue in data["unexpected"] if issue["severity"] == "error"}
    assert details == {f"{attention}.processor.{proj}_lora.down.weight": (
        f"4×16 does not fit {attention}.{proj}.weight (32×24 in B): an adapter for another model size")
        for attention in _ADDED_KV_ATTENTIONS for proj in ("add_k_proj", "add_v_proj")}
    assert "2 of them with shapes that fit" not in data["notes"][-1] and "0 of them with shapes that fit" in \
        data["notes"][-1]


# fairseq2 is not installed: its older checkpoints are reproduced from an older version of fairseq2's
# src/fairseq2/checkpoint/manager.py (FileCheckpointManager.save_checkpoint: checkpoints/step_N.tmp/ renamed to
# step_N/ on commit, holding model.pt = torch.save({"model": state_dict}) (model.T.pt per tensor-parallel rank T),
# rank_R.pt (the rest of each data-parallel rank's state), metadata.pt and model.yaml (`checkpoint: model.pt`), and
# checkpoints/last_step a link to the latest step), its LLaMA's names those of round 28's fairseq2 checkpoints.
def _fairseq2_single_file_run(output_dir: Path, tensor_parallel: int = 1) -> Path:
    from tests.test_third_party_layouts28 import _fairseq2_llama_state

    state = _fairseq2_llama_state()
    checkpoints = output_dir / "checkpoints"
    for step in (1000, 2000):
        step_dir = checkpoints / f"step_{step}"
        step_dir.mkdir(parents=True)
        for rank in range(tensor_parallel):
            suffix = f".{rank}" if tensor_parallel > 1 else ""
            torch.save({"model": state}, step_dir / f"model{suffix}.pt")
            torch.save({"optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": []}]}, "step_nr": step},
                       step_dir / f"rank_0{suffix}.pt")
            torch.save({"config": {"lr": 1e-4}}, step_dir / f"metadata{suffix}.pt")
        checkpoint = "model.pt" if tensor_parallel == 1 else "model.{shard_idx}.pt"
        (step_dir / "model.yaml").write_text(f"base: checkpoint\ncheckpoint: {checkpoint}\n"
                                             f"name: checkpoint_step_{step}\n")
    (checkpoints / "model.yaml").write_text("model_family: llama\nname: checkpoint\n")
    (checkpoints / "last_step").symlink_to("step_2000", target_is_directory=True)
    return output_dir


def test_a_fairseq2_checkpoint_in_its_older_layout_names_the_models_file(tmp_path: Path) -> None:
    """fairseq2's older step folder read "folder holds several weight files and no index (metadata.pt, model.pt,
    rank_0.pt); name one", its rank_0.pt "no state dict ...; pick one with --key" (whose entries are the optimizer's
    and the trainer's), the run's folder "holds no weight file". Each now names model.pt, which holds the model."""
    run = _fairseq2_single_file_run(tmp_path / "run")
    step = run / "checkpoints" / "step_1000"
    line = one_error_line(run_cli("inspect", str(step)))
    assert line.endswith("it is a fairseq2 checkpoint (step_1000/) in fairseq2's older layout (FileCheckpointManager's)"
                         ": its metadata.pt and rank_0.pt hold training state or the run's metadata, not the model; "
                         f"the model's state dict is model.pt (torch.save, under its 'model' key): point at it, "
                         f"{step / 'model.pt'}"), line
    for folder, latest in ((run, "checkpoints/step_2000/"), (run / "checkpoints", "step_2000/")):
        line = one_error_line(run_cli("inspect", str(folder)))
        assert f"its latest step, {latest}, is a fairseq2 checkpoint in fairseq2's older layout" in line, line
        assert line.endswith(str(run / "checkpoints" / "step_2000" / "model.pt")), line
    line = one_error_line(run_cli("inspect", str(run / "checkpoints" / "last_step")))
    assert "it is a fairseq2 checkpoint (last_step/)" in line and line.endswith(
        str(run / "checkpoints" / "last_step" / "model.pt")), line
    line = one_error_line(run_cli("inspect", str(step / "rank_0.pt")))
    assert "--key" not in line and ("it is one data-parallel rank's training state (the optimizer's, the trainer's) "
                                    "in a fairseq2 checkpoint (step_1000/, in fairseq2's older layout), not the model: "
                                    "fairseq2 saved the model's state dict beside it as model.pt") in line, line
    line = one_error_line(run_cli("inspect", str(step / "metadata.pt")))
    assert "it is the run's metadata (its configuration) in a fairseq2 checkpoint" in line, line
    # The file named is the model: its 21 tensors under `model`, checked against transformers' layout as fairseq2's.
    code, data = run_json("inspect", str(step / "model.pt"))
    assert code == 0 and data["num_tensors"] == 21 and data["nested_key"] == "model"


def test_a_fairseq2_checkpoint_in_its_older_layout_over_tensor_parallel_ranks(tmp_path: Path) -> None:
    """With two tensor-parallel ranks the step holds model.0.pt and model.1.pt, each a part; rank_0.1.pt names the
    model file of its own rank."""
    run = _fairseq2_single_file_run(tmp_path / "run", tensor_parallel=2)
    step = run / "checkpoints" / "step_1000"
    line = one_error_line(run_cli("inspect", str(step)))
    assert "the model's state dict is split over 2 files (model.0.pt, model.1.pt), one per tensor-parallel rank, " \
        f"each a part of the model: point at one to read its part, e.g. {step / 'model.0.pt'}" in line, line
    line = one_error_line(run_cli("inspect", str(step / "rank_0.1.pt")))
    assert line.endswith("fairseq2 saved the model's state dict beside it as model.1.pt (under its 'model' key): point "
                         f"at it, {step / 'model.1.pt'}; its pickle is safe (static scan: no globals): "
                         f"torch.load({str(step / 'rank_0.1.pt')!r}, weights_only=True) reads it"), line


def test_a_step_folder_that_is_not_fairseq2s_is_not_called_one(tmp_path: Path) -> None:
    """The folder's own files say it: a step_N folder with model.pt beside ema.pt (no rank_R.pt, metadata.pt or
    model.yaml) is left with the plain "name one"."""
    step = tmp_path / "step_5"
    step.mkdir()
    torch.save({"model": {"w": torch.zeros(2, 2)}}, step / "model.pt")
    torch.save({"model": {"w": torch.ones(2, 2)}}, step / "ema.pt")
    line = one_error_line(run_cli("inspect", str(step)))
    assert line.endswith("folder holds several weight files and no index (ema.pt, model.pt); name one"), line


def _llama(folder: Path, layers: int = 2) -> Path:
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    transformers.LlamaForCausalLM(config).save_pretrained(str(folder))
    return folder


def test_a_cartridge_adapter_is_named_as_peft_saves_it(tmp_path: Path) -> None:
    """peft 0.21's CARTRIDGE (a trained KV cache, saved as prompt_embeddings: virtual tokens × layers · 2 · the key
    width) against its base read "prefix tuning's key and value prefixes"; it is named CARTRIDGE now, and against a
    base of another depth it is still an error."""
    import json

    import peft
    import transformers

    base = _llama(tmp_path / "base")
    model = peft.get_peft_model(transformers.LlamaForCausalLM.from_pretrained(str(base)),
                                peft.CartridgeConfig(num_virtual_tokens=6, task_type="CAUSAL_LM"))
    model.save_pretrained(str(tmp_path / "cartridge"))
    assert json.loads((tmp_path / "cartridge" / "adapter_config.json").read_text())["peft_type"] == "CARTRIDGE"
    code, data = run_json("diff-keys", str(tmp_path / "cartridge"), str(base))
    assert code == 0 and data["worst_severity"] == "info"
    assert [issue["detail"] for issue in data["unexpected"]] == [
        "6 virtual tokens, 64 values each: CARTRIDGE's key and value prefixes (its trained KV cache) for B's 2 layers, "
        "16 wide"]
    assert {issue["reason"] for issue in data["missing"]} == {"adapter-base"} and len(data["missing"]) == 21
    assert "PeftModel.from_pretrained" in data["notes"][0]
    code, data = run_json("diff-keys", str(tmp_path / "cartridge"), str(_llama(tmp_path / "deeper", layers=3)))
    assert code == 1 and data["unexpected"][0]["severity"] == "error"
    assert "its 3 layers take no prefix of that width" in data["unexpected"][0]["detail"]


def test_tinylora_lily_and_peanut_adapters_are_checked_against_the_base_width(tmp_path: Path) -> None:
    """peft 0.21's TinyLoRA, Lily and PEANuT adapters against a base of another hidden width read "a PEFT method not
    known here (its shapes are not compared)", worst severity info, though PeftModel.from_pretrained raises a size
    mismatch on them. Their factors sized by the layer (tinylora_A r × in, tinylora_B out × r; lily_A r × in, lily_B
    num_B·r × out; peanut_A r × out, peanut_B out × r) are compared now: info against their own base, with the
    method named, errors naming the widths against the wider one."""
    import peft
    import transformers

    base, wide = _llama(tmp_path / "base"), tmp_path / "wide"
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    transformers.LlamaForCausalLM(config).save_pretrained(str(wide))
    configs = {"TinyLoRA": peft.TinyLoraConfig(r=2, u=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
               "Lily": peft.LilyConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
               "PEANuT": peft.PeanutConfig(r=4, depth=1, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")}
    # v_proj writes 16 features in the base (2 key-value heads of 8), 24 in the wider one (2 of 12).
    misfits = {"TinyLoRA": "tinylora_B 16×2", "Lily": "lily_B 8×16", "PEANuT": "peanut_A 4×16"}
    parts = {"TinyLoRA": "tinylora_A", "Lily": "lily_A", "PEANuT": "peanut_A"}
    for method, peft_config in configs.items():
        torch.manual_seed(0)
        folder = tmp_path / method
        peft.get_peft_model(transformers.LlamaForCausalLM.from_pretrained(str(base)), peft_config).save_pretrained(
            str(folder))
        code, data = run_json("diff-keys", str(folder), str(base))
        assert code == 0 and data["worst_severity"] == "info", (method, data)
        assert data["notes"][0].startswith(f"A is a PEFT adapter: {method} on 4 modules, 4 of them in B with shapes "
                                           "that fit"), data["notes"]
        details = {issue["name"]: issue["detail"] for issue in data["unexpected"]}
        assert details[f"base_model.model.model.layers.0.self_attn.q_proj.{parts[method]}" + (
            "" if method == "TinyLoRA" else ".weight")] == f"{method} on model.layers.0.self_attn.q_proj.weight"
        assert not any("not known here" in detail for detail in details.values()), details
        code, data = run_json("diff-keys", str(folder), str(wide))
        assert code == 1 and data["worst_severity"] == "error", (method, data["notes"])
        assert "0 of them in B with shapes that fit" in data["notes"][0]
        errors = {issue["name"].split(".self_attn.")[1]: issue["detail"] for issue in data["unexpected"]
                  if issue["severity"] == "error" and ".layers.1." in issue["name"]}
        part = misfits[method].split()[0]
        assert errors[f"v_proj.{part}" + ("" if method == "TinyLoRA" else ".weight")] == (
            f"{method} on model.layers.1.self_attn.v_proj: {misfits[method]} spans 16 output features, "
            "model.layers.1.self_attn.v_proj.weight (24×48 in B) writes 24: an adapter for another model size")
        # The parts sized by the rank alone (tinylora_P, lily_router, peanut_encoders / decoders) fit any layer.
        assert not any(name.split(".")[1].startswith(("tinylora_P", "lily_router", "peanut_encoders",
                                                      "peanut_decoders")) for name in errors), errors
