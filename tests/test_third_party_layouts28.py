"""A twenty-eighth round: LoRA files and training checkpoints no earlier round covered, run through the six commands:
diffusers' first LoRA layout (unet.save_attn_procs' attention-processor pairs, `processor.to_q_lora.down.weight`),
kohya / LyCORIS adapters against one another, fairseq2's training checkpoints (checkpoints/step_N/ with the model in
model/pp_00/tp_00/sdp_00.pt) and its LLaMA layout against transformers'.

diffusers is not installed here: its first LoRA layout is reproduced from its own code: LoRAAttnProcessor's
LoRALinearLayer pairs (`down` rank × in, `up` out × rank, started at zero; to_k / to_v of a cross-attention read the
cross_attention_dim), AttnProcsLayers' state dict keyed by the processor's name, saved by save_attn_procs with
torch.save as pytorch_lora_weights.bin under no component's prefix, later by save_lora_weights under `unet.`; what
its loaders do with it, from src/diffusers/utils/state_dict_utils.py (KEYS_TO_ALWAYS_REPLACE drops `.processor.`,
UNET_TO_DIFFUSERS renames `.to_q_lora.down` to `.to_q.lora_A`, `.to_out_lora.up` to `.to_out.0.lora_B`) and
src/diffusers/loaders/peft.py (load_lora_adapter keeps every key where none is under its prefix, and converts keys
whose first holds no `lora_A`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.helpers import one_error_line, run_cli, run_json

_ATTENTIONS = ("down_blocks.0.attentions.0", "mid_block.attentions.0", "up_blocks.1.attentions.0")


def _attn_procs_lora(hidden: int = 32, cross: int = 24, rank: int = 4) -> dict[str, torch.Tensor]:
    """A UNet's LoRAAttnProcessor pairs as AttnProcsLayers' state dict names them (no component prefix)."""
    generator = torch.Generator().manual_seed(28)
    state = {}
    for block in _ATTENTIONS:
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out"):
                width_in = cross if attn == "attn2" and proj in ("to_k", "to_v") else hidden
                name = f"{block}.transformer_blocks.0.{attn}.processor.{proj}_lora"
                state[f"{name}.down.weight"] = torch.randn(rank, width_in, generator=generator) / rank
                state[f"{name}.up.weight"] = torch.randn(hidden, rank, generator=generator) * 0.01
    return state


def _unet(folder: Path, hidden: int = 32, cross: int = 24) -> None:
    """The attention projections of a diffusers UNet2DConditionModel folder (to_out is a ModuleList: to_out.0)."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for block in _ATTENTIONS:
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out.0"):
                width_in = cross if attn == "attn2" and proj in ("to_k", "to_v") else hidden
                state[f"{block}.transformer_blocks.0.{attn}.{proj}.weight"] = torch.randn(
                    hidden, width_in, generator=generator)
            state[f"{block}.transformer_blocks.0.{attn}.to_out.0.bias"] = torch.zeros(hidden)
    folder.mkdir()
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel",
                                                    "_diffusers_version": "0.14.0", "cross_attention_dim": cross}))


def test_a_lora_in_diffusers_first_layout_is_checked_against_the_unet_it_adapts(tmp_path: Path) -> None:
    """save_attn_procs' pytorch_lora_weights.bin against the UNet it was trained on: every key of both read "unknown:
    no known cause: these weights will not load", 48 + 30 errors, though load_lora_weights loads it. Each pair is
    checked, under the name diffusers' loader gives it, against the projection it adapts; the same file saved under
    `unet.` (save_lora_weights) alike."""
    lora = tmp_path / "lora" / "pytorch_lora_weights.bin"
    lora.parent.mkdir()
    state = _attn_procs_lora()
    torch.save(state, lora)
    prefixed = tmp_path / "pytorch_lora_weights.safetensors"
    save_file({f"unet.{name}": value for name, value in state.items()}, str(prefixed))
    unet = tmp_path / "unet"
    _unet(unet)
    for source, prefix in ((lora, ""), (prefixed, "unet.")):
        code, data = run_json("diff-keys", str(source), str(unet))
        assert code == 0 and data["worst_severity"] == "info", data
        details = {issue["name"]: (issue["reason"], issue["detail"]) for issue in data["unexpected"]}
        assert len(details) == 48
        assert details[f"{prefix}mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora.down.weight"] \
            == ("adapter", "LoRA on mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight")
        assert details[f"{prefix}up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight"] \
            == ("adapter", "LoRA on up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0.weight")
        assert {issue["reason"] for issue in data["missing"]} == {"adapter-base"}
        note = next(note for note in data["notes"] if note.startswith("A is a LoRA in diffusers' layout (its first"))
        assert "24 modules of the pipeline's unet (B), 24 of them in B with shapes that fit" in note
        assert "load_lora_weights(adapter)" in note and "PeftModel" not in note
        assert ("under no component's prefix, are the UNet's" in note) == (prefix == "")


def test_a_lora_in_diffusers_first_layout_for_another_unet_says_it_does_not_fit(tmp_path: Path) -> None:
    """The check is a real one: against a UNet of another width each pair is an error naming the shapes."""
    lora = tmp_path / "pytorch_lora_weights.bin"
    torch.save(_attn_procs_lora(), lora)
    narrow = tmp_path / "unet-narrow"
    _unet(narrow, hidden=16)
    code, data = run_json("diff-keys", str(lora), str(narrow))
    assert code == 1 and data["worst_severity"] == "error"
    details = {issue["name"]: issue["detail"] for issue in data["unexpected"]}
    assert details["down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight"] == (
        "4×32 does not fit down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight (16×16 in B): an "
        "adapter for another model size")


def _current_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same pairs as diffusers' save_lora_weights writes them today (peft's names under `unet.`), renamed as its
    state_dict_utils renames them (written out here, not taken from weightdoctor)."""
    renamed = {}
    for name, value in state.items():
        name = name.replace(".processor.", ".")
        for old, new in ((".to_out_lora.down", ".to_out.0.lora_A"), (".to_out_lora.up", ".to_out.0.lora_B"),
                         ("_lora.down", ".lora_A"), ("_lora.up", ".lora_B")):
            if old in name:
                name = name.replace(old, new)
                break
        renamed["unet." + name] = value
    return renamed


def test_a_lora_in_diffusers_first_layout_against_the_same_lora_in_its_current_layout(tmp_path: Path) -> None:
    """The old pytorch_lora_weights.bin against the same pairs saved in diffusers' current layout: with the first
    fix alone it read "A is a PEFT adapter ... none of its modules is in B: it was made for another model" (and, the
    other way round, errors on every key). Each key is paired with the one it is loaded as, either way round, and a
    LoRA of another rank in the current layout is an error on the keys whose shapes differ."""
    state = _attn_procs_lora()
    old, current = tmp_path / "pytorch_lora_weights.bin", tmp_path / "current.safetensors"
    torch.save(state, old)
    save_file(_current_layout(state), str(current))
    name = "mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight"
    new = "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.lora_B.weight"
    for a, b, old_side, new_side in ((old, current, "A", "B"), (current, old, "B", "A")):
        code, data = run_json("diff-keys", str(a), str(b))
        assert code == 0 and data["worst_severity"] == "info", data
        details = {issue["name"]: (issue["reason"], issue["detail"])
                   for issue in data["unexpected"] + data["missing"]}
        assert details[name] == ("renamed", f"diffusers' loaders load it as {new}, which {new_side} holds")
        assert details[new] == ("renamed", f"{old_side} holds it as {name} (diffusers' first layout)")
        assert data["notes"] == [
            f"{old_side} is a LoRA in diffusers' first layout (unet.save_attn_procs' attention-processor pairs, "
            f"`processor.to_q_lora.down`) and {new_side} one in its current layout (`to_q.lora_A`): diffusers' "
            f"loaders rename {old_side}'s keys to {new_side}'s as they load it, and 48 of {old_side}'s keys are "
            f"{new_side}'s under those names, with the same shapes"]
    rank8 = tmp_path / "rank8.safetensors"
    save_file(_current_layout(_attn_procs_lora(rank=8)), str(rank8))
    code, data = run_json("diff-keys", str(old), str(rank8))
    assert code == 1, data
    details = {issue["name"]: (issue["reason"], issue["detail"]) for issue in data["unexpected"]}
    assert details[name] == ("adapter", f"loaded as {new}, which B holds: 32×4 in A, 32×8 in B")
    assert data["notes"][0].endswith("48 of A's keys are B's under those names, 48 of them of other shapes")


def test_plan_devices_names_a_lora_in_diffusers_first_layout_as_one(tmp_path: Path) -> None:
    """plan-devices planned the unprefixed pytorch_lora_weights.bin as a model that "fits on the GPUs", without a
    word of the UNet it is applied to (the same LoRA under `unet.` had the add-on warning)."""
    lora = tmp_path / "pytorch_lora_weights.bin"
    torch.save(_attn_procs_lora(), lora)
    code, data = run_json("plan-devices", str(lora), "--gpu", "8GB")
    assert code == 0, data
    assert any(warning.startswith("this is a LoRA in diffusers' layout: only its own weights are planned")
               for warning in data["warnings"]), data["warnings"]


# kohya / LyCORIS adapters against one another. LyCORIS is not installed: its LoHa is reproduced from LyCORIS 3.x's
# lycoris/modules/loha.py (hada_w1_a out × dim, hada_w1_b dim × in, hada_w2_a / hada_w2_b alike, `alpha` a buffer)
# under kohya's flat names, as its kohya network (ss_network_module "lycoris.kohya") saves it; kohya's LoRA from
# sd-scripts' networks/lora.py (lora_down dim × in, lora_up out × dim started at zero, alpha).
_KOHYA_MODULES = {"lora_unet_down_blocks_0_attentions_0_proj_in": (32, 32),
                  "lora_te_text_model_encoder_layers_0_mlp_fc1": (64, 16)}


def _kohya_file(path: Path, method: str, dim: int) -> None:
    generator = torch.Generator().manual_seed(dim)
    state: dict[str, torch.Tensor] = {}
    for module, (width_out, width_in) in _KOHYA_MODULES.items():
        if method == "loha":
            state[f"{module}.hada_w1_a"] = torch.randn(width_out, dim, generator=generator)
            state[f"{module}.hada_w1_b"] = torch.randn(dim, width_in, generator=generator)
            state[f"{module}.hada_w2_a"] = torch.zeros(width_out, dim)
            state[f"{module}.hada_w2_b"] = torch.randn(dim, width_in, generator=generator)
        else:
            state[f"{module}.lora_down.weight"] = torch.randn(dim, width_in, generator=generator)
            state[f"{module}.lora_up.weight"] = torch.zeros(width_out, dim)
        state[f"{module}.alpha"] = torch.tensor(float(dim))
    save_file(state, str(path), {"ss_network_module": "lycoris.kohya" if method == "loha" else "networks.lora",
                                 "ss_network_dim": str(dim)})


def test_two_loha_files_of_another_dim_differ_in_rank_not_in_architecture(tmp_path: Path) -> None:
    """Two LyCORIS LoHa files of one model at network_dim 4 and 8: each factor was "from_pretrained raises on them
    unless ignore_mismatched_sizes=True (it then initializes them at random)", advice for a model that loads neither
    file. They are LoRA-rank differences, as two kohya LoRAs of another dim already were, and a real change of
    shape (another width) still is not."""
    _kohya_file(tmp_path / "dim4.safetensors", "loha", 4)
    _kohya_file(tmp_path / "dim8.safetensors", "loha", 8)
    code, data = run_json("diff-keys", str(tmp_path / "dim4.safetensors"), str(tmp_path / "dim8.safetensors"))
    assert code == 1, data
    details = {issue["name"]: (issue["reason"], issue["detail"]) for issue in data["mismatched"]}
    assert details["lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a"] == (
        "lora-rank", "32×4 in A, 32×8 in B: LoRA rank 4 in A, 8 in B")
    assert details["lora_te_text_model_encoder_layers_0_mlp_fc1.hada_w2_b"] == (
        "lora-rank", "4×16 in A, 8×16 in B: LoRA rank 4 in A, 8 in B")
    assert any(note.startswith("2 LoRA modules differ in rank only") for note in data["notes"]), data["notes"]
    assert not any("ignore_mismatched_sizes" in note for note in data["notes"]), data["notes"]


def test_a_kohya_lora_against_a_loha_of_the_same_modules_says_both_are_adapters(tmp_path: Path) -> None:
    """A kohya LoRA against a LyCORIS LoHa of the same two modules: A's keys were "unknown: no known cause: these
    weights will not load" and B's "adapter / PEFT weights: merge them or load through PEFT", which loads neither,
    with no note. Each key is named as its method's on its module, and the note says that an adapter is applied to
    its base model, not loaded into another adapter, either way round."""
    lora, loha = tmp_path / "lora.safetensors", tmp_path / "loha.safetensors"
    _kohya_file(lora, "lora", 4)
    _kohya_file(loha, "loha", 4)
    code, data = run_json("diff-keys", str(lora), str(loha))
    assert code == 1, data
    unexpected = {issue["name"]: (issue["reason"], issue["detail"]) for issue in data["unexpected"]}
    missing = {issue["name"]: (issue["reason"], issue["detail"]) for issue in data["missing"]}
    assert unexpected["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"] == (
        "adapter", "A's LoRA on lora_unet_down_blocks_0_attentions_0_proj_in: B adapts it with a LoHa")
    assert missing["lora_te_text_model_encoder_layers_0_mlp_fc1.hada_w1_b"] == (
        "adapter", "B's LoHa on lora_te_text_model_encoder_layers_0_mlp_fc1: A adapts it with a LoRA")
    assert {issue["reason"] for issue in data["unexpected"] + data["missing"]} == {"adapter"}
    assert data["notes"] == [
        "A and B are both adapters in kohya's layout: A a kohya-style LoRA (LoRA on 2 modules), B a LyCORIS adapter "
        "(LoHa on 2 modules), 2 modules adapted by both; an adapter is applied to its base model, not loaded into "
        "another adapter, so no key of either was checked against a model: compare each against its base (diff-keys "
        "with the adapter as A and the model as B), or merge each into the base (sd-scripts' networks/merge_lora.py, "
        "LyCORIS' tools/merge.py) and compare the merged models"]
    code, data = run_json("diff-keys", str(loha), str(lora))
    assert code == 1 and data["notes"][0].startswith("A and B are both adapters in kohya's layout: A a LyCORIS "
                                                     "adapter (LoHa on 2 modules), B a kohya-style LoRA"), data


def _lokr_file(path: Path, factor: int) -> None:
    """A LyCORIS LoKr (lycoris/modules/lokr.py: lokr_w1 factor × factor whole, lokr_w2 split into lokr_w2_a out /
    factor × dim and lokr_w2_b dim × in / factor) under kohya's names."""
    generator = torch.Generator().manual_seed(factor)
    state: dict[str, torch.Tensor] = {}
    for module, (width_out, width_in) in _KOHYA_MODULES.items():
        state[f"{module}.lokr_w1"] = torch.randn(factor, factor, generator=generator)
        state[f"{module}.lokr_w2_a"] = torch.randn(width_out // factor, 4, generator=generator)
        state[f"{module}.lokr_w2_b"] = torch.randn(4, width_in // factor, generator=generator)
        state[f"{module}.alpha"] = torch.tensor(4.0)
    save_file(state, str(path), {"ss_network_module": "lycoris.kohya"})


def test_two_lokr_files_of_another_factor_are_not_told_about_from_pretrained(tmp_path: Path) -> None:
    """Two LoKr files of one model with another factor (4 and 8): "6 key(s) differ in shape: from_pretrained raises
    on them unless ignore_mismatched_sizes=True", a loader of neither. The note says they are adapters in kohya's
    layout of other shapes for the same modules, to compare each against its base."""
    _lokr_file(tmp_path / "f4.safetensors", 4)
    _lokr_file(tmp_path / "f8.safetensors", 8)
    code, data = run_json("diff-keys", str(tmp_path / "f4.safetensors"), str(tmp_path / "f8.safetensors"))
    assert code == 1 and len(data["mismatched"]) == 6, data
    assert data["notes"] == [
        "6 keys differ in shape: A and B are adapters in kohya's layout whose factors for the same modules have "
        "other shapes (another LoKr factor, another method's parts), not two of one size; an adapter is applied to "
        "its base model: compare each against its base (diff-keys with the adapter as A and the model as B)"]


# fairseq2 is not installed: its checkpoints are reproduced from fairseq2's StandardCheckpointManager
# (src/fairseq2/checkpoint/manager.py: <output_dir>/checkpoints/step_N/ with model/pp_PP/tp_TT/sdp_SS.pt, a
# torch.save of the model's state dict with pickle protocol 2, beside trainer/rank_RR.pt, optimizer/pp_PP/tp_TT/
# sdp_SS.pt and data_reader/dp_DD.pt; save_model_only writes model/ alone), its LLaMA's names from
# src/fairseq2/models/llama/hg.py (the key map of export_llama_checkpoint, which also permutes q_proj and k_proj).
_HIDDEN, _INTERMEDIATE, _VOCAB = 32, 64, 96


def _fairseq2_llama_state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    state = {"decoder_frontend.embed.weight": torch.randn(_VOCAB, _HIDDEN, generator=generator)}
    for layer in range(2):
        prefix = f"decoder.layers.{layer}."
        for name, shape in (("self_attn.q_proj", (_HIDDEN, _HIDDEN)), ("self_attn.k_proj", (16, _HIDDEN)),
                            ("self_attn.v_proj", (16, _HIDDEN)), ("self_attn.output_proj", (_HIDDEN, _HIDDEN)),
                            ("ffn.gate_proj", (_INTERMEDIATE, _HIDDEN)), ("ffn.inner_proj", (_INTERMEDIATE, _HIDDEN)),
                            ("ffn.output_proj", (_HIDDEN, _INTERMEDIATE))):
            state[f"{prefix}{name}.weight"] = torch.randn(*shape, generator=generator)
        state[f"{prefix}self_attn_layer_norm.weight"] = torch.ones(_HIDDEN)
        state[f"{prefix}ffn_layer_norm.weight"] = torch.ones(_HIDDEN)
    state["decoder.layer_norm.weight"] = torch.ones(_HIDDEN)
    state["final_proj.weight"] = torch.randn(_VOCAB, _HIDDEN, generator=generator)
    return {name: value.to(torch.bfloat16) for name, value in state.items()}


def _fairseq2_run(output_dir: Path, tensor_parallel: int = 1) -> Path:
    """A fairseq2 run's output folder: step_1000/ (a full save) and step_2000/ (save_model_only)."""
    state = _fairseq2_llama_state()
    for step, full in ((1000, True), (2000, False)):
        step_dir = output_dir / "checkpoints" / f"step_{step}"
        for rank in range(tensor_parallel):
            model = step_dir / "model" / "pp_00" / f"tp_{rank:02d}" / "sdp_00.pt"
            model.parent.mkdir(parents=True)
            torch.save(state, model, pickle_protocol=2)
        if full:
            optimizer = step_dir / "optimizer" / "pp_00" / "tp_00" / "sdp_00.pt"
            optimizer.parent.mkdir(parents=True)
            torch.save({"state": {}, "param_groups": [{"lr": 1e-4, "params": []}]}, optimizer)
            (step_dir / "trainer").mkdir()
            torch.save({"step_nr": step, "seed": 2}, step_dir / "trainer" / "rank_00.pt")
            (step_dir / "data_reader").mkdir()
            torch.save({"position": 12345}, step_dir / "data_reader" / "dp_00.pt")
    return output_dir


def test_a_fairseq2_checkpoint_folder_names_the_models_file(tmp_path: Path) -> None:
    """inspect of a fairseq2 step folder said "weights are in subfolders (data_reader/, trainer/): point at one, e.g.
    step_1000/data_reader", the data reader's position; its model/ folder and the run's folders said only "holds no
    weight file". Each names the model's state dict three folders down, the latest step's for a run, and the file
    it names reads as the model."""
    run = _fairseq2_run(tmp_path / "run")
    step = run / "checkpoints" / "step_1000"
    model_file = step / "model" / "pp_00" / "tp_00" / "sdp_00.pt"
    result = run_cli("inspect", str(step))
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "data_reader" not in line.split("it is a fairseq2 checkpoint")[0], line
    assert line.endswith(f"it is a fairseq2 checkpoint (step_1000/): its trainer/, optimizer/ and data_reader/ hold "
                         f"training state, not the model; the model's state dict is model/pp_00/tp_00/sdp_00.pt "
                         f"(torch.save): point at it, {model_file}"), line
    for inside in (step / "model", step / "model" / "pp_00"):
        line = one_error_line(run_cli("plan-devices", str(inside), "--gpu", "1GB"))
        assert f"it is inside a fairseq2 checkpoint ({step})" in line and line.endswith(str(model_file)), line
    latest = run / "checkpoints" / "step_2000" / "model" / "pp_00" / "tp_00" / "sdp_00.pt"
    for folder, shown in ((run / "checkpoints", "step_2000/"), (run, "checkpoints/step_2000/")):
        line = one_error_line(run_cli("convert", str(folder), "-o", str(tmp_path / "out")))
        assert f"its latest step, {shown}, is a fairseq2 checkpoint" in line and line.endswith(str(latest)), line
    assert not (tmp_path / "out").exists()
    code, data = run_json("inspect", str(model_file))
    assert code == 0 and data["num_tensors"] == 21 and data["dtypes"] == {"bfloat16": 24736}, data
    # The optimizer's file of the same ranks named a Trainer's and torchtune's places for the weights.
    line = one_error_line(run_cli("inspect", str(step / "optimizer" / "pp_00" / "tp_00" / "sdp_00.pt")))
    assert ("fairseq2 saved the model's state dict of the same ranks as model/pp_00/tp_00/sdp_00.pt beside "
            f"optimizer/: point weightdoctor at {model_file}") in line and "torchtune" not in line, line


def test_a_fairseq2_checkpoint_split_over_tensor_parallel_ranks_says_each_file_is_a_part(tmp_path: Path) -> None:
    run = _fairseq2_run(tmp_path / "run", tensor_parallel=2)
    line = one_error_line(run_cli("inspect", str(run / "checkpoints" / "step_1000")))
    assert "the model's state dict is split over 2 files under model/, one per pipeline, tensor and " \
           "sharded-data-parallel rank (pp_PP/tp_TT/sdp_SS.pt), each a part of the model: point at one to read its " \
           f"part, e.g. {run / 'checkpoints' / 'step_1000' / 'model' / 'pp_00' / 'tp_00' / 'sdp_00.pt'}" in line, line


def test_fairseq2_llama_against_transformers_llama_is_a_conversion_not_a_rename(tmp_path: Path) -> None:
    """diff-keys of fairseq2's LLaMA state dict against transformers' LlamaForCausalLM of the same size offered
    `--rename '^final_proj\\.=model.embed_tokens.'` (the output head onto the embedding, one shape) among renames that
    leave q_proj and k_proj as they are, where fairseq2's own export permutes them: renamed alone the model loads and
    computes garbage. Every key is named as the layout it is in, no rename is offered, and the note says what
    converts it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(hidden_size=_HIDDEN, intermediate_size=_INTERMEDIATE, num_attention_heads=2,
                                 num_key_value_heads=1, num_hidden_layers=2, vocab_size=_VOCAB)).save_pretrained(
        tmp_path / "hf")
    model_file = tmp_path / "sdp_00.pt"
    torch.save(_fairseq2_llama_state(), model_file, pickle_protocol=2)
    code, data = run_json("diff-keys", str(model_file), str(tmp_path / "hf"))
    assert code == 1, data
    assert data["suggested_renames"] == [], data["suggested_renames"]
    assert {(issue["reason"], issue["detail"]) for issue in data["unexpected"]} == {
        ("foreign-layout", "fairseq2's layout (in A)")}
    assert {(issue["reason"], issue["detail"]) for issue in data["missing"]} == {
        ("foreign-layout", "transformers' layout (in B)")}
    assert any(note.startswith("A is in fairseq2's LLaMA layout") and "maps final_proj to lm_head and permutes q_proj "
               "and k_proj" in note for note in data["notes"]), data["notes"]
