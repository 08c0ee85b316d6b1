"""A thirtieth round: third-party files no earlier round covered, run through the commands that apply.

peft 0.21's PSOFT and FRoD adapters against their base and bases of other widths (peft/tuners/psoft/layer.py:
psoft_R sized by the rank alone, refused above min(in_features, out_features); peft/tuners/frod/layer.py and
model.py: frod_lambda_l one value per input feature, frod_lambda_s_values min(int(in² · sparse_rate), in(in-1)), the
projection frod_V.<category> in × in saved once per kind of module); diffusers' first-layout added-KV LoRA against
the same LoRA in its current layout (utils/state_dict_utils.py: UNET_TO_DIFFUSERS has no add_k_proj_lora entry);
timm's CheckpointSaver checkpoint with state_dict_ema; Lightning's WeightAveraging checkpoint (lightning/pytorch/
callbacks/weight_averaging.py, on_save_checkpoint); a ColBERT checkpoint (stanford-futuredata/ColBERT's
colbert/modeling/hf_colbert.py); a sentence-transformers v5 Router's SparseStaticEmbedding module
(sentence_transformers/sparse_encoder/models/SparseStaticEmbedding.py); Mllama, saved by transformers 5.25.
None of diffusers, timm, Lightning, ColBERT or sentence-transformers is installed: their files are written as the
sources named save them; peft and transformers are used themselves.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers import run_json


def _llama(folder: Path, hidden: int = 32) -> Path:
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    transformers.LlamaForCausalLM(config).save_pretrained(str(folder))
    return folder


def _peft_adapter(base: Path, folder: Path, peft_config: object) -> Path:
    import peft
    import transformers

    torch.manual_seed(0)
    model = peft.get_peft_model(transformers.LlamaForCausalLM.from_pretrained(str(base)), peft_config)
    model.save_pretrained(str(folder))
    return folder


def test_a_frod_adapter_is_checked_against_the_width_of_the_layers_it_adapts(tmp_path: Path) -> None:
    """peft 0.21's FRoD adapter read "frod_* tensors of a PEFT method not known here (shapes not compared)", worst
    severity info, against its own base and against a wider one, onto which PeftModel.from_pretrained raises a size
    mismatch (frod_lambda_l 32 against 48). It is named FRoD now, fits its base, and against the wider base its
    per-layer values and its shared projections are errors naming the widths."""
    import peft

    base, wide = _llama(tmp_path / "base"), _llama(tmp_path / "wide", hidden=48)
    frod = _peft_adapter(base, tmp_path / "frod", peft.FrodConfig(target_modules=["q_proj", "v_proj"],
                                                                  task_type="CAUSAL_LM"))
    code, data = run_json("diff-keys", str(frod), str(base))
    assert code == 0 and data["worst_severity"] == "info", data
    assert data["notes"][0].startswith("A is a PEFT adapter: FRoD on 4 modules, 4 of them in B with shapes that fit")
    details = {issue["name"]: issue["detail"] for issue in data["unexpected"]}
    assert details["base_model.model.model.layers.1.self_attn.v_proj.frod_lambda_l"] == (
        "FRoD on model.layers.1.self_attn.v_proj.weight")
    assert details["base_model.frod_V.self_attn_q_proj"] == (
        "saved once for the adapter's modules by FRoD, not a weight of B")
    assert not any("not known here" in detail for detail in details.values()), details

    code, data = run_json("diff-keys", str(frod), str(wide))
    assert code == 1 and data["worst_severity"] == "error"
    assert "FRoD on 4 modules, 0 of them in B with shapes that fit" in data["notes"][0]
    errors = {issue["name"]: issue["detail"] for issue in data["unexpected"] if issue["severity"] == "error"}
    assert errors["base_model.model.model.layers.0.self_attn.v_proj.frod_lambda_l"] == (
        "FRoD on model.layers.0.self_attn.v_proj: frod_lambda_l 32 spans 32 input features, "
        "model.layers.0.self_attn.v_proj.weight (24×48 in B) reads 48: an adapter for another model size")
    # sparse_rate 0.01 (its default): int(32² · 0.01) = 10 values for a 32-wide input, int(48² · 0.01) = 23.
    assert errors["base_model.model.model.layers.0.self_attn.q_proj.frod_lambda_s_values"] == (
        "FRoD on model.layers.0.self_attn.q_proj: frod_lambda_s_values holds 10 values, as many as a 32-wide input "
        "keeps at sparse_rate 0.01; model.layers.0.self_attn.q_proj.weight (48×48 in B) reads 48 (23 values): an "
        "adapter for another model size")
    assert errors["base_model.frod_V.self_attn_v_proj"] == (
        "FRoD's projection for its self_attn_v_proj modules is 32×32, B's model.layers.0.self_attn.v_proj.weight "
        "(24×48) reads 48: an adapter for another model size")
    assert len(errors) == 10  # 4 modules × 2 values, 2 projections; frod_s_indices / frod_s_size are not sized so


def test_a_psoft_adapter_is_named_and_its_rank_checked_against_the_layer(tmp_path: Path) -> None:
    """peft 0.21's PSOFT read "psoft_* tensors of a PEFT method not known here". Its psoft_R is sized by the rank
    alone, so it fits a wider base (PeftModel.from_pretrained loads it); a rank above a layer's smaller side is what
    peft refuses (ValueError "`r` (20) must be less than or equal to min(in_features, out_features) (32, 16)"):
    a rank-20 adapter made on a 48-wide Llama, checked against the 32-wide one, errors on v_proj (16 × 32) only."""
    import peft

    base, wide = _llama(tmp_path / "base"), _llama(tmp_path / "wide", hidden=48)
    psoft = _peft_adapter(base, tmp_path / "psoft", peft.PsoftConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                     task_type="CAUSAL_LM"))
    for other in (base, wide):
        code, data = run_json("diff-keys", str(psoft), str(other))
        assert code == 0 and data["worst_severity"] == "info", data
        assert data["notes"][0].startswith("A is a PEFT adapter: PSOFT on 4 modules, 4 of them in B with shapes "
                                           "that fit"), data["notes"]
        assert {issue["detail"] for issue in data["unexpected"]} == {
            f"PSOFT on model.layers.{layer}.self_attn.{proj}.weight"
            for layer in (0, 1) for proj in ("q_proj", "v_proj")}
    psoft20 = _peft_adapter(wide, tmp_path / "psoft20", peft.PsoftConfig(r=20, target_modules=["q_proj", "v_proj"],
                                                                         task_type="CAUSAL_LM"))
    code, data = run_json("diff-keys", str(psoft20), str(base))
    assert code == 1 and "PSOFT on 4 modules, 2 of them in B with shapes that fit" in data["notes"][0]
    # What peft raises there is a ValueError on the rank, not the size mismatch said of other methods.
    assert "PeftModel.from_pretrained onto B raises a ValueError (its rank is above min(in_features, " \
        "out_features) of a layer)" in data["notes"][0], data["notes"]
    errors = {issue["name"]: issue["detail"] for issue in data["unexpected"] if issue["severity"] == "error"}
    assert set(errors) == {f"base_model.model.model.layers.{layer}.self_attn.v_proj.psoft_R.{part}"
                           for layer in (0, 1) for part in ("weight", "vector_a", "vector_b")}
    assert errors["base_model.model.model.layers.1.self_attn.v_proj.psoft_R.weight"] == (
        "PSOFT on model.layers.1.self_attn.v_proj: psoft_R rank 20 is above min(in, out) of "
        "model.layers.1.self_attn.v_proj.weight (16×32 in B), 16: peft refuses it (ValueError): an adapter for "
        "another model size")


def _added_kv_lora_current(path: Path, added: int = 24, hidden: int = 32, rank: int = 4) -> Path:
    """The LoRA of round 29's `_added_kv_lora` in diffusers' current layout (save_lora_weights' names, peft's
    lora_A / lora_B under `unet.`), seeded alike so its factors are the same tensors."""
    from safetensors.torch import save_file

    from tests.test_third_party_layouts29 import _ADDED_KV_ATTENTIONS

    generator = torch.Generator().manual_seed(2)
    state = {}
    for attention in _ADDED_KV_ATTENTIONS:
        for proj in ("to_q", "add_k_proj", "add_v_proj", "to_k", "to_v", "to_out.0"):
            width_in = added if proj.startswith("add_") else hidden
            state[f"unet.{attention}.{proj}.lora_A.weight"] = torch.randn(rank, width_in, generator=generator) / rank
            state[f"unet.{attention}.{proj}.lora_B.weight"] = torch.zeros(hidden, rank)
    save_file(state, str(path))
    return path


def test_an_added_kv_lora_in_the_first_layout_against_the_same_lora_in_the_current_one(tmp_path: Path) -> None:
    """save_attn_procs' LoRA of an added-KV UNet against the same LoRA in diffusers' current layout: its 16 to_q /
    to_k / to_v / to_out pairs were matched, but its 8 add_k_proj_lora / add_v_proj_lora keys were "unknown" errors
    with no detail and B's 8 add_k_proj.lora_A ... keys "adapter" warnings with none. Each is now matched with the
    other side's pair on the same projection, a warning that diffusers' loaders leave the first layout's out; the
    other way round (B the first layout) alike; pairs for another added width are errors naming both shapes."""
    from tests.test_third_party_layouts29 import _added_kv_lora

    old = _added_kv_lora(tmp_path / "pytorch_lora_weights.bin")
    current = _added_kv_lora_current(tmp_path / "current.safetensors")
    code, data = run_json("diff-keys", str(old), str(current))
    assert code == 0 and data["worst_severity"] == "warn", data
    unexpected = {issue["name"]: (issue["reason"], issue["severity"], issue["detail"]) for issue in data["unexpected"]}
    missing = {issue["name"]: (issue["reason"], issue["severity"], issue["detail"]) for issue in data["missing"]}
    assert unexpected["mid_block.attentions.0.processor.add_k_proj_lora.down.weight"] == (
        "adapter", "warn", "the pair B holds as unet.mid_block.attentions.0.add_k_proj.lora_A.weight "
        "(LoRAAttnAddedKVProcessor's added key / value projection), with the same shape, but diffusers' current "
        "loaders leave it out of A: they do not rename add_k_proj_lora")
    assert missing["unet.down_blocks.1.attentions.0.add_v_proj.lora_B.weight"] == (
        "adapter", "warn", "A holds it as down_blocks.1.attentions.0.processor.add_v_proj_lora.up.weight (diffusers' "
        "first layout), with the same shape, which diffusers' current loaders leave out of A")
    assert not any(reason == "unknown" for reason, _, _ in unexpected.values())
    assert sum(severity == "warn" for _, severity, _ in unexpected.values()) == 8
    assert sum(severity == "warn" for _, severity, _ in missing.values()) == 8
    assert data["notes"][0].endswith(
        "16 of A's keys are B's under those names, with the same shapes; 8 more of A's, LoRAAttnAddedKVProcessor "
        "pairs (add_k_proj_lora / add_v_proj_lora), are B's on the same added key / value projections with the same "
        "shapes, but diffusers' loaders since its PEFT backend leave them out of A (they do not rename them): "
        "loaded, the two differ there"), data["notes"]

    code, data = run_json("diff-keys", str(current), str(old))
    assert code == 0 and data["worst_severity"] == "warn"
    assert {issue["detail"] for issue in data["unexpected"] if "add_k_proj" in issue["name"]} == {
        f"B holds it as {attention}.processor.add_k_proj_lora.{part}.weight (diffusers' first layout), with the "
        "same shape, which diffusers' current loaders leave out of B"
        for attention in ("down_blocks.1.attentions.0", "mid_block.attentions.0") for part in ("down", "up")}

    narrow = _added_kv_lora(tmp_path / "narrow.bin", added=16)
    code, data = run_json("diff-keys", str(narrow), str(current))
    assert code == 1 and data["worst_severity"] == "error"
    errors = {issue["name"]: issue["detail"] for issue in data["unexpected"] if issue["severity"] == "error"}
    assert errors == {f"{attention}.processor.{proj}_lora.down.weight": (
        f"the pair B holds as unet.{attention}.{proj}.lora_A.weight: 4×16 in A, 4×24 in B")
        for attention in ("down_blocks.1.attentions.0", "mid_block.attentions.0") for proj in ("add_k_proj",
                                                                                              "add_v_proj")}


# timm's train.py saves through CheckpointSaver (timm/utils/checkpoint_saver.py, _save): {'epoch', 'arch',
# 'state_dict', 'optimizer', 'version': 2, 'args', 'metric', 'state_dict_ema'} as model_best.pth.tar; its
# load_checkpoint(model, path, use_ema=True) loads state_dict_ema.
def _timm_checkpoint(path: Path) -> Path:
    import argparse

    torch.manual_seed(0)
    state = {"conv1.weight": torch.randn(8, 3, 3, 3), "bn1.weight": torch.ones(8), "bn1.bias": torch.zeros(8),
             "bn1.running_mean": torch.zeros(8), "bn1.running_var": torch.ones(8),
             "bn1.num_batches_tracked": torch.tensor(100), "fc.weight": torch.randn(10, 8), "fc.bias": torch.zeros(10)}
    torch.save({"epoch": 10, "arch": "resnet18", "state_dict": state, "optimizer": {"state": {}, "param_groups": []},
                "version": 2, "args": argparse.Namespace(model="resnet18", lr=0.1), "metric": 71.2,
                "state_dict_ema": {name: tensor + 0.01 if tensor.is_floating_point() else tensor
                                   for name, tensor in state.items()}}, path)
    return path


def test_convert_and_shard_name_the_ema_state_dict_they_leave_out(tmp_path: Path) -> None:
    """A timm checkpoint's state_dict_ema (the EMA weights timm's validate.py --use-ema loads) was the "1 more" of
    "not the checkpoint's other entries (epoch, arch, optimizer, version, args, metric and 1 more)": a second whole
    set of weights dropped without a word. The warning names it and the --key that writes it, which works."""
    from safetensors import safe_open

    checkpoint = _timm_checkpoint(tmp_path / "model_best.pth.tar")
    code, data = run_json("convert", str(checkpoint), "-o", str(tmp_path / "model.safetensors"))
    assert code == 0, data
    # The reader's note of the timm EMA first (thirdparty40), then what convert leaves out.
    assert data["warnings"][0].startswith("model_best.pth.tar: a timm training checkpoint"), data["warnings"]
    assert data["warnings"][1:] == [
        "only the state dict at 'state_dict' is written, not the checkpoint's other entries (epoch, arch, optimizer, "
        "version, args, metric and 1 more); state_dict_ema is another state dict (8 tensors), not written: --key "
        "state_dict_ema writes it instead"]
    code, data = run_json("shard", str(checkpoint), "-o", str(tmp_path / "sharded"), "--max", "1KB")
    assert code == 0 and any("--key state_dict_ema writes it instead" in line for line in data["warnings"]), data
    # The advice run: the EMA weights written, each the EMA's value.
    code, data = run_json("convert", str(checkpoint), "-o", str(tmp_path / "ema.safetensors"), "--key",
                          "state_dict_ema")
    assert code == 0 and "state_dict is another state dict (8 tensors), not written: --key state_dict writes it " \
        "instead" in data["warnings"][0]
    saved = torch.load(checkpoint, weights_only=False)
    with safe_open(str(tmp_path / "ema.safetensors"), "pt") as written:
        assert torch.equal(written.get_tensor("fc.weight"), saved["state_dict_ema"]["fc.weight"])


def _colbert(folder: Path, bert: Path) -> Path:
    """A ColBERT checkpoint as stanford-futuredata/ColBERT saves one (colbert/modeling/hf_colbert.py: HF_ColBERT, a
    BertPreTrainedModel with `linear = nn.Linear(hidden_size, dim, bias=False)` beside its `bert`, written by
    save_pretrained; artifact.metadata its ColBERTConfig), and the BertModel it starts from."""
    import json

    import transformers

    class HF_ColBERT(transformers.BertPreTrainedModel):  # noqa: N801 (ColBERT's own class name, saved in config.json)
        def __init__(self, config: transformers.BertConfig, dim: int = 16) -> None:
            super().__init__(config)
            self.linear = torch.nn.Linear(config.hidden_size, dim, bias=False)
            self.bert = transformers.BertModel(config)
            self.post_init()

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)
    HF_ColBERT(config).save_pretrained(str(folder))
    (folder / "artifact.metadata").write_text(json.dumps({"dim": 16, "similarity": "cosine", "query_maxlen": 32,
                                                          "doc_maxlen": 180, "checkpoint": "bert-base-uncased"}))
    transformers.BertModel(config).save_pretrained(str(bert))
    return folder


def test_a_colbert_checkpoint_against_its_bert_names_its_projection_a_head(tmp_path: Path) -> None:
    """A ColBERT checkpoint against the BertModel it was trained from (either way round) read "unknown" on its
    `linear.weight`, an error with no detail, though BertModel.from_pretrained drops it and HF_ColBERT.from_pretrained
    of the BERT starts it at random, as ColBERT's training does. It is ColBERT's head now; the `bert.` prefix is
    what stands between the two, and the rename suggested maps it."""
    colbert = _colbert(tmp_path / "colbert", tmp_path / "bert")
    code, data = run_json("diff-keys", str(colbert), str(tmp_path / "bert"))
    assert code == 0 and data["worst_severity"] == "warn", data
    assert [(issue["reason"], issue["severity"], issue["detail"]) for issue in data["unexpected"]
            if issue["name"] == "linear.weight"] == [("task-head", "info", "not used by B, dropped")]
    assert {issue["reason"] for issue in data["unexpected"] if issue["name"] != "linear.weight"} == {
        "base-model-prefix"}
    assert data["suggested_renames"][0]["flag"] == "--rename '^bert\\.='"
    code, data = run_json("diff-keys", str(tmp_path / "bert"), str(colbert))
    assert code == 0 and [(issue["reason"], issue["severity"], issue["detail"]) for issue in data["missing"]
                          if issue["name"] == "linear.weight"] == [("task-head", "info", "new, initialized at random")]
    code, data = run_json("diff-keys", str(colbert), str(tmp_path / "bert"), "--rename", "^bert\\.=")
    assert code == 0 and data["matched"] == 39 and data["worst_severity"] == "info"


def _lightning_ema_checkpoint(path: Path) -> Path:
    """A Lightning checkpoint saved with EMAWeightAveraging (lightning/pytorch/callbacks/weight_averaging.py,
    on_save_checkpoint: the trained weights moved to current_model_state, the average's `module.`-stripped weights
    put in state_dict, its n_averaged in averaging_state), the Trainer's other entries beside them."""
    torch.manual_seed(0)
    current = {"model.encoder.weight": torch.randn(16, 8), "model.encoder.bias": torch.zeros(16),
               "model.head.weight": torch.randn(4, 16), "model.head.bias": torch.zeros(4)}
    torch.save({"epoch": 3, "global_step": 300, "pytorch-lightning_version": "2.5.2",
                "state_dict": {name: tensor * 0.9 for name, tensor in current.items()},
                "current_model_state": current, "averaging_state": {"n_averaged": torch.tensor(300)},
                "loops": {"fit_loop": {"state_dict": {}}}, "callbacks": {"EMAWeightAveraging": {
                    "latest_update_step": 300}},
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1, 2, 3]}]}],
                "lr_schedulers": [], "hparams_name": "kwargs", "hyper_parameters": {"lr": 1e-3}}, path)
    return path


def test_a_lightning_weight_averaging_checkpoint_says_which_weights_it_reads(tmp_path: Path) -> None:
    """Lightning's WeightAveraging callback saves the average in state_dict and the trained weights in
    current_model_state: inspect read state_dict without saying it is the average, and convert (with the round's
    state-dict naming) must not offer averaging_state, the average's one-tensor count, as weights to write."""
    checkpoint = _lightning_ema_checkpoint(tmp_path / "epoch=2-step=300.ckpt")
    code, data = run_json("inspect", str(checkpoint))
    assert code == 0 and data["nested_key"] == "state_dict" and data["num_tensors"] == 4
    assert any("a Lightning checkpoint saved with its WeightAveraging callback (EMAWeightAveraging): state_dict is "
               "read, the averaged weights the callback puts there on save" in line and
               "--key current_model_state reads the weights as trained" in line for line in data["warnings"]), data
    code, data = run_json("convert", str(checkpoint), "-o", str(tmp_path / "ema.safetensors"))
    assert code == 0
    left_out = next(line for line in data["warnings"] if line.startswith("only the state dict at"))
    assert left_out.endswith("current_model_state is another state dict (4 tensors), not written: --key "
                             "current_model_state writes it instead"), left_out
    assert "--key averaging_state" not in left_out
    code, data = run_json("inspect", str(checkpoint), "--key", "current_model_state")
    assert code == 0 and data["num_tensors"] == 4 and data["nested_key"] == "current_model_state"


def test_an_mllama_checkpoint_through_the_commands(tmp_path: Path) -> None:
    """Mllama (Llama 3.2 Vision), round 29's gap: its tiny config is transformers' own test values (those of
    test_diff_keys_oracle9's case). transformers 5.25 saves it under the legacy names its hub checkpoints use
    (language_model.model.*, language_model.lm_head, vision_model.*, multi_modal_projector): inspect counts them,
    the text model is checked with MllamaForCausalLM as from_pretrained loads it (the vision parts dropped), and the
    shards written load back into MllamaForConditionalGeneration with no key missing. Nothing was wrong: this
    keeps it so."""
    import transformers

    kv = {"vocab_size": 96, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2}
    config = transformers.MllamaConfig(
        text_config={**kv, "cross_attention_layers": [1], "pad_token_id": 0}, image_token_index=95,
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
                       "num_global_layers": 1, "attention_heads": 4, "intermediate_size": 64,
                       "vision_output_dim": 64, "intermediate_layers_indices": [0], "max_num_tiles": 2,
                       "supported_aspect_ratios": [[1, 1], [1, 2]]})
    torch.manual_seed(0)
    model = transformers.MllamaForConditionalGeneration(config)
    model.save_pretrained(str(tmp_path / "mllama"))
    transformers.MllamaForCausalLM(config.text_config).save_pretrained(str(tmp_path / "text"))
    code, data = run_json("inspect", str(tmp_path / "mllama"))
    assert code == 0 and data["num_tensors"] == 78
    assert data["num_params"] == sum(parameter.numel() for parameter in model.parameters())
    code, data = run_json("diff-keys", str(tmp_path / "mllama"), "--model-class", "MllamaForCausalLM", "--config",
                          str(tmp_path / "text"))
    assert code == 0 and data["matched"] == 25 and data["worst_severity"] == "info", data
    assert {issue["reason"] for issue in data["unexpected"]} == {"unused-part"} and len(data["unexpected"]) == 53
    code, data = run_json("shard", str(tmp_path / "mllama"), "-o", str(tmp_path / "sharded"), "--max", "100KB")
    assert code == 0
    loaded, info = transformers.MllamaForConditionalGeneration.from_pretrained(str(tmp_path / "sharded"),
                                                                               output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_check_dtype_says_how_sentence_transformers_loads_a_sparse_static_embedding(tmp_path: Path) -> None:
    """A sentence-transformers v5 Router's query route (query_0_SparseStaticEmbedding/: config.json {"frozen": true}
    and model.safetensors of one `weight` per vocabulary token; sentence_transformers/sparse_encoder/models/
    SparseStaticEmbedding.py): its load builds the weight as torch.ones, float32, and copies the file's in. check-dtype
    said "config.json sets no torch_dtype/dtype: dtype='auto' goes by the weights", from_pretrained's rule, of a
    float16 file that is up-cast."""
    import json

    from safetensors.torch import save_file

    folder = tmp_path / "query_0_SparseStaticEmbedding"
    folder.mkdir()
    torch.manual_seed(0)
    save_file({"weight": torch.rand(100).half()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"frozen": True}))
    code, data = run_json("check-dtype", str(folder))
    assert code == 0, data
    assert data["config_agreement"] == {
        "status": "not-set", "message": "a sentence-transformers SparseStaticEmbedding config (no dtype field): "
        "SparseStaticEmbedding.load builds its weight in float32 and load_state_dict copies the weights into it: the "
        "float16 weights are up-cast at load"}
    # A transformers config without a dtype is still read as from_pretrained's.
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "frozen": True}))
    code, data = run_json("check-dtype", str(folder))
    assert "dtype='auto' goes by the weights" in data["config_agreement"]["message"]
