"""A twenty-sixth round: widely used Hub and framework layouts run through all six commands: Llama 3 repos (the
transformers files beside `original/consolidated.00.pth` and its params.json), Mistral repos (shards beside
`consolidated.safetensors`), timm Hub folders (config.json with pretrained_cfg, model.safetensors beside
pytorch_model.bin), sentence-transformers folders with root weights, 1_Pooling/ and 2_Dense/, PyTorch Lightning
`.ckpt` files with ModelCheckpoint / EarlyStopping state, and extracted NeMo models (model_config.yaml beside
model_weights.ckpt).

Lightning, timm, sentence-transformers and NeMo are not installed here: their files are reproduced from their save
code (Lightning's _dump_checkpoint keys; timm's push_to_hub config; sentence-transformers' modules.json; NeMo's
SaveRestoreConnector, which writes and reads model_config.yaml and model_weights.ckpt, with torch.save / torch.load,
in the .nemo tar and in a pre-extracted folder, `model_extracted_dir`, alike). Llama and Mistral models are built
by transformers 5.25.0; Meta's names are those of its convert_llama_weights_to_hf.py.

Found: `convert` and `shard` of a Llama 3 repo copied `original/` whole, Meta's consolidated.00.pth (the whole
model again, a pickle, stale once cast or renamed) into a conversion to safetensors, where Mistral's
consolidated.safetensors at the top was left out as another copy of the weights. `convert` and `shard` of an
extracted NeMo model wrote model_weights.safetensors (or shards) that NeMo never reads, without a word. A Mistral
Large repo's own sharded release (consolidated-0000i-of-0000N.safetensors, consolidated.safetensors.index.json) was
named by nothing, and convert named each of its shards, with the same reason, in one line. A Lightning checkpoints
folder (epoch=N-step=M.ckpt beside last.ckpt) was "several weight files and no index; name one", and the project
above it "no weight file" and nothing more. The
zero_to_fp32.py command a DeepSpeed folder's refusal prints ran only from inside that folder. A timm CLIP tower's
open_clip files were weights "under names from_pretrained does not look for", and convert copied open_clip_config.json
without the open_clip weights it goes with. A KerasHub preset (Keras' config.json beside model.weights.h5) said only
that the .h5 is HDF5, and its config.json was "neither an index nor a model config". A split GGUF's first part was
sent to transformers' gguf_file=, which reads that one part alone. One rank of an extracted tensor-parallel NeMo
model (mp_rank_00/model_weights.ckpt) read as if it were the whole model. Meta's original/ converted to safetensors
gave files that Meta's loaders (which read .pth) never read, without a word.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import run_cli

_META_NAMES = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
               "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
               "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
               "mlp.up_proj": "feed_forward.w3", "input_layernorm": "attention_norm",
               "post_attention_layernorm": "ffn_norm"}


def _meta_state(state: dict[str, torch.Tensor], clone: bool = False) -> dict[str, torch.Tensor]:
    """A transformers Llama / Mistral state dict under Meta's names (tok_embeddings, layers.N.attention.wq, ...),
    as Meta's consolidated release holds it; `clone`: each layer tensor its own storage."""
    meta = {"tok_embeddings.weight": state["model.embed_tokens.weight"], "norm.weight": state["model.norm.weight"],
            "output.weight": state["lm_head.weight"]}
    for name, tensor in state.items():
        if name.startswith("model.layers."):
            layer, rest = name.removeprefix("model.layers.").split(".", 1)
            module, kind = rest.rsplit(".", 1)
            meta[f"layers.{layer}.{_META_NAMES[module]}.{kind}"] = tensor.clone() if clone else tensor
    return meta


def _flat(text: str) -> str:
    return " ".join(text.split())


def _llama3_repo(folder: Path) -> dict[str, torch.Tensor]:
    """A Llama 3 Hub repo: save_pretrained's files, and original/ as Meta releases it (consolidated.00.pth in
    bfloat16 under Meta's names, params.json, tokenizer.model). Returns the transformers state dict."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    state = model.state_dict()
    meta = _meta_state(state)
    original = folder / "original"
    original.mkdir()
    torch.save({name: tensor.to(torch.bfloat16).clone() for name, tensor in meta.items()},
               original / "consolidated.00.pth")
    (original / "params.json").write_text(json.dumps({"dim": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1,
                                                      "vocab_size": 64, "norm_eps": 1e-5, "rope_theta": 500000.0}))
    (original / "tokenizer.model").write_bytes(b"IQ== 0\n")
    return state


def test_converting_a_llama3_repo_leaves_its_original_release_out(tmp_path: Path) -> None:
    """convert and shard copied original/ whole: the output of a conversion to safetensors held
    original/consolidated.00.pth, the model again as a pickle (16 GB for Llama 3 8B, left as it was by --dtype and
    --rename), with "convert each on its own" as the only word. Mistral's consolidated.safetensors, the same thing
    at the top of its repo, was left out as weights in another format; original/ is now left out, and said so."""
    repo = tmp_path / "llama3"
    state = _llama3_repo(repo)
    for command, extra in (("convert", ()), ("convert", ("--dtype", "bf16")), ("shard", ("--max", "4KB"))):
        out = tmp_path / f"{command}{len(extra)}"
        result = run_cli(command, str(repo), "-o", str(out), *extra)
        assert result.exit_code == 0, result.stderr
        stderr = _flat(result.stderr)
        assert not (out / "original").exists(), sorted(p.name for p in out.iterdir())
        assert ("not copied: original/ (Meta's original format, with params.json: the weights again in another "
                "layout, not converted)") in stderr, stderr
        assert "still PyTorch pickles" not in stderr
        assert (out / "config.json").is_file()
        report = json.loads(run_cli("inspect", str(out), "--json").stdout)
        assert report["num_tensors"] == len(state)

    # The release itself still converts when named, as the warning of a read of the repo says to.
    out = tmp_path / "meta"
    result = run_cli("convert", str(repo / "original"), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["consolidated.00.safetensors", "params.json", "tokenizer.model"]


def test_a_sentence_transformers_module_folder_is_still_copied(tmp_path: Path) -> None:
    """The left-out is of a model's own release (consolidated.* beside params.json) only: 2_Dense/'s weights, a
    module's own, are still copied with the folder they belong to."""
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path / "st"
    BertModel(BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=16), add_pooling_layer=False
              ).save_pretrained(folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 16,
                                                                   "pooling_mode_mean_tokens": True}))
    (folder / "2_Dense").mkdir()
    (folder / "2_Dense" / "config.json").write_text(json.dumps({"in_features": 16, "out_features": 8, "bias": True}))
    save_file({"linear.weight": torch.randn(8, 16), "linear.bias": torch.zeros(8)},
              str(folder / "2_Dense" / "model.safetensors"))
    out = tmp_path / "out"
    result = run_cli("convert", str(folder), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert (out / "2_Dense" / "model.safetensors").is_file() and (out / "1_Pooling" / "config.json").is_file()
    assert "not copied" not in result.stderr


def _extracted_nemo(folder: Path) -> None:
    """An extracted .nemo of an ASR model, as SaveRestoreConnector.save_to writes it before tarring:
    model_config.yaml, model_weights.ckpt (torch.save of model.state_dict()), and an artifact."""
    torch.manual_seed(0)
    folder.mkdir()
    torch.save({"preprocessor.featurizer.window": torch.hann_window(16),
                "encoder.pre_encode.conv.0.weight": torch.randn(8, 1, 3, 3),
                "encoder.pre_encode.conv.0.bias": torch.zeros(8),
                "encoder.layers.0.feed_forward1.linear1.weight": torch.randn(32, 8),
                "decoder.decoder_layers.0.weight": torch.randn(29, 8, 1),
                "decoder.decoder_layers.0.bias": torch.zeros(29)}, folder / "model_weights.ckpt")
    (folder / "model_config.yaml").write_text(
        "target: nemo.collections.asr.models.ctc_bpe_models.EncDecCTCModelBPE\nsample_rate: 16000\n")
    (folder / "1a2b_tokenizer.model").write_bytes(b"\x0a\x04test")


def test_converting_an_extracted_nemo_model_says_nemo_reads_model_weights_ckpt_alone(tmp_path: Path) -> None:
    """convert wrote model_weights.safetensors beside model_config.yaml, and shard model-0000i-of-0000N.safetensors
    with an index: NeMo's restore_from reads model_weights.ckpt (torch.load) and nothing else, so neither output
    restores in NeMo, and nothing said so."""
    folder = tmp_path / "asr"
    _extracted_nemo(folder)
    said = ("an extracted NeMo model (model_config.yaml beside model_weights.ckpt): NeMo's restore_from reads "
            "model_weights.ckpt alone, with torch.load, from a .nemo or its extracted folder, and cannot load ")
    result = run_cli("convert", str(folder), "-o", str(tmp_path / "st"))
    assert result.exit_code == 0, result.stderr
    assert said + "model_weights.safetensors; keep model_weights.ckpt for NeMo" in _flat(result.stderr), result.stderr
    assert (tmp_path / "st" / "model_weights.safetensors").is_file()

    result = run_cli("shard", str(folder), "--max", "1KB", "-o", str(tmp_path / "shards"), "--json")
    assert result.exit_code == 0, result.stderr
    warnings = json.loads(result.stdout)["warnings"]
    assert any(w.startswith(said + "model-00001-of-") for w in warnings), warnings

    result = run_cli("convert", str(folder / "model_weights.ckpt"), "-o", str(tmp_path / "one.safetensors"),
                     "--dry-run")
    assert said + "one.safetensors" in _flat(result.stderr), result.stderr


def test_a_model_weights_ckpt_without_nemo_s_config_is_not_called_nemo(tmp_path: Path) -> None:
    """The name alone is no NeMo model: without model_config.yaml beside it nothing is said of NeMo."""
    folder = tmp_path / "asr"
    _extracted_nemo(folder)
    (folder / "model_config.yaml").unlink()
    result = run_cli("convert", str(folder), "-o", str(tmp_path / "st"))
    assert result.exit_code == 0, result.stderr
    assert "NeMo" not in result.stderr


def _mistral_large_repo(folder: Path, shards: int = 3) -> int:
    """A Mistral Large 2 repo (mistralai/Mistral-Large-Instruct-2407's file list): transformers' shards and index,
    and Mistral's own release sharded beside them, consolidated-0000i-of-0000N.safetensors with
    consolidated.safetensors.index.json, and params.json. Returns the number of tensors of each copy."""
    from safetensors.torch import save_file
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    model = MistralForCausalLM(config)
    model.save_pretrained(folder, max_shard_size="4KB")
    state = model.state_dict()
    meta = _meta_state(state, clone=True)
    names = sorted(meta)
    weight_map: dict[str, str] = {}
    for i in range(shards):
        shard = f"consolidated-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = names[i::shards]
        save_file({name: meta[name].contiguous() for name in part}, str(folder / shard))
        weight_map.update(dict.fromkeys(part, shard))
    (folder / "consolidated.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "params.json").write_text(json.dumps({"dim": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1,
                                                    "vocab_size": 64, "head_dim": 8, "hidden_dim": 32}))
    return len(state)


def test_a_mistral_large_repo_names_its_sharded_release_and_reads_the_transformers_shards_once(
        tmp_path: Path) -> None:
    """Mistral's own release sharded beside the transformers shards: the transformers shards are read (counted
    once), and the other set was named by nothing (a single consolidated.safetensors is)."""
    repo = tmp_path / "large"
    count = _mistral_large_repo(repo)
    report = json.loads(run_cli("inspect", str(repo), "--json").stdout)
    assert report["num_tensors"] == count and report["sharded"]
    assert all(f["path"].startswith("model") for f in report["files"] if f["role"] == "weights"), report["files"]
    said = [w for w in report["warnings"] if w.startswith("not read, and not loaded by from_pretrained(folder)")]
    assert said and ("consolidated.safetensors.index.json and its 3 shards (Mistral's own format, sharded, with "
                     "params.json: vLLM's --load-format mistral reads it)") in said[0], report["warnings"]
    # The set it names reads when named, as "name one to read" says.
    native = json.loads(run_cli("inspect", str(repo / "consolidated.safetensors.index.json"), "--json").stdout)
    assert native["num_tensors"] == count and native["sharded"]


def test_converting_a_mistral_large_repo_says_its_release_shards_are_left_out_in_one_entry(tmp_path: Path) -> None:
    """convert named each shard of Mistral's own set with the same reason (51 of them in Mistral Large 2's repo,
    one line of thousands of characters): the set is said once, first to last."""
    repo = tmp_path / "large"
    _mistral_large_repo(repo)
    result = run_cli("convert", str(repo), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.stderr
    stderr = _flat(result.stderr)
    assert ("not copied: consolidated-00001-of-00003.safetensors to consolidated-00003-of-00003.safetensors "
            "(3 shards: weights in another file or format, not converted), consolidated.safetensors.index.json "
            "(weights in another file or format, not converted)") in stderr, stderr
    assert stderr.count("consolidated-00002-of-00003") == 0
    assert not list((tmp_path / "out").glob("consolidated*"))


def test_one_left_out_file_named_like_a_shard_is_still_named_alone(tmp_path: Path) -> None:
    """Shards are said together only as a set: one file of another set (the only one downloaded) keeps its name."""
    from tests.helpers import copy_example

    folder = copy_example(tmp_path)
    torch.save({"w": torch.zeros(2)}, folder / "pytorch_model-00001-of-00002.bin")
    result = run_cli("convert", str(folder), "-o", str(tmp_path / "out"), "--dry-run")
    assert "pytorch_model-00001-of-00002.bin (weights in another file or format, not converted)" in \
        _flat(result.stderr), result.stderr


def _lightning_ckpt(path: Path, epoch: int) -> None:
    """A .ckpt as Lightning 2.x's _dump_checkpoint writes it, with ModelCheckpoint's and EarlyStopping's state (their
    scores are tensors) under callbacks."""
    torch.manual_seed(epoch)
    state = {"model.encoder.weight": torch.randn(4, 8), "model.encoder.bias": torch.zeros(4)}
    torch.save({"epoch": epoch, "global_step": 30 * (epoch + 1), "pytorch-lightning_version": "2.4.0",
                "state_dict": state, "loops": {"fit_loop": {"epoch_progress": {"total": {"completed": epoch}}}},
                "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, "
                              "'every_n_epochs': 1, 'train_time_interval': None}": {
                                  "monitor": "val_loss", "best_model_score": torch.tensor(0.25),
                                  "best_k_models": {"epoch=2-step=90.ckpt": torch.tensor(0.25)}},
                              "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}": {
                                  "wait_count": 1, "best_score": torch.tensor(0.25), "patience": 3}},
                "optimizer_states": [], "lr_schedulers": [], "hparams_name": "kwargs",
                "hyper_parameters": {"lr": 1e-3}}, path)


def test_a_lightning_checkpoints_folder_says_each_file_is_a_whole_checkpoint(tmp_path: Path) -> None:
    """lightning_logs/version_0/checkpoints/ (ModelCheckpoint's epoch=N-step=M.ckpt saves beside last.ckpt) was
    "folder holds several weight files and no index (...); name one": nothing said that each is a whole training
    checkpoint of the same model, nor which is the latest. The file it names reads."""
    folder = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    folder.mkdir(parents=True)
    for epoch in (2, 10):
        _lightning_ckpt(folder / f"epoch={epoch}-step={30 * (epoch + 1)}.ckpt", epoch)
    _lightning_ckpt(folder / "last.ckpt", 11)
    (folder.parent / "hparams.yaml").write_text("lr: 0.001\n")
    for command in (("inspect", str(folder)), ("convert", str(folder), "-o", str(tmp_path / "out"))):
        result = run_cli(*command)
        assert result.exit_code == 2 and not result.stdout
        message = _flat(result.stderr)
        assert ("a PyTorch Lightning checkpoints folder (ModelCheckpoint's saves: epoch=2-step=90.ckpt, "
                "epoch=10-step=330.ckpt, last.ckpt): each file is a whole training checkpoint of the model") in message
        assert "last.ckpt is the latest save (save_last); the epoch= / step= files are those its save_top_k kept" \
            in message, message
        assert message.endswith(f"name one to read it (e.g. {folder / 'last.ckpt'})"), message
    report = json.loads(run_cli("inspect", str(folder / "last.ckpt"), "--json").stdout)
    assert report["nested_key"] == "state_dict" and report["num_tensors"] == 2
    assert "callbacks (dict, 2 entries)" in report["other_entries"]

    # Without last.ckpt nothing is called the latest; the highest epoch is the example.
    (folder / "last.ckpt").unlink()
    message = _flat(run_cli("inspect", str(folder)).stderr)
    assert "latest save (save_last)" not in message
    assert message.endswith(f"(e.g. {folder / 'epoch=10-step=330.ckpt'})"), message


def test_several_ckpt_files_of_no_lightning_name_keep_the_plain_refusal(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    _lightning_ckpt(folder / "a.ckpt", 1)
    _lightning_ckpt(folder / "b.ckpt", 2)
    message = _flat(run_cli("inspect", str(folder)).stderr)
    assert "several weight files and no index (a.ckpt, b.ckpt); name one" in message and "Lightning" not in message


def _lightning_deepspeed_save(folder: Path) -> None:
    """A checkpoint as PyTorch Lightning's DeepSpeedStrategy saves it (ZeRO stage 2): a folder named like the .ckpt
    file, holding DeepSpeed's save under the tag `checkpoint` (the model states, its names under Lightning's
    `_forward_module.`, and the optimizer partition), `latest` naming the tag, and the zero_to_fp32.py DeepSpeed
    copies beside it."""
    step = folder / "checkpoint"
    step.mkdir(parents=True)
    torch.manual_seed(0)
    module = {"_forward_module.model.encoder.weight": torch.randn(4, 8).half(),
              "_forward_module.model.encoder.bias": torch.zeros(4).half()}
    torch.save({"module": module, "buffer_names": [], "optimizer": None,
                "param_shapes": [{name: tensor.shape for name, tensor in module.items()}], "global_steps": 10,
                "dp_world_size": 1, "mp_world_size": 1, "ds_version": "0.14.0", "epoch": 0, "global_step": 10,
                "pytorch-lightning_version": "2.4.0", "hyper_parameters": {"lr": 1e-3}},
               step / "mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {"zero_stage": 2, "single_partition_of_fp32_groups": [torch.zeros(36)]},
                "ds_version": "0.14.0"}, step / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (folder / "latest").write_text("checkpoint")
    (folder / "zero_to_fp32.py").write_text("# DeepSpeed's script\n")


def test_zero_to_fp32_is_named_by_its_path_and_a_lightning_deepspeed_save_by_its_converter(tmp_path: Path) -> None:
    """"python zero_to_fp32.py RUN OUTDIR" ran only from inside RUN, where RUN (a path from elsewhere) then named
    nothing: pasted where the user was, python found no zero_to_fp32.py. The script is named by its path now. A
    folder named like a .ckpt file holding DeepSpeed's save is Lightning's DeepSpeed strategy's: its own converter
    is named."""
    import shlex
    import subprocess
    import sys

    run = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "epoch=0-step=10.ckpt"
    _lightning_deepspeed_save(run)
    result = run_cli("inspect", str(run))
    assert result.exit_code == 2 and not result.stdout
    message = _flat(result.stderr)
    command = f"python {run / 'zero_to_fp32.py'} {run} {run}.fp32 --safe_serialization"
    assert command in message, message
    # Pasted from another folder, the script it names is found (run here with a script that prints its argv).
    (run / "zero_to_fp32.py").write_text("import sys; print(sys.argv[1:])\n")
    words = shlex.split(command)
    done = subprocess.run([sys.executable, *words[1:]], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert done.stdout.strip() == str([str(run), f"{run}.fp32", "--safe_serialization"])
    assert ("a folder named like a .ckpt file is how PyTorch Lightning's DeepSpeed strategy saves a checkpoint: "
            "import lightning.pytorch.utilities.deepspeed; "
            "lightning.pytorch.utilities.deepspeed.convert_zero_checkpoint_to_fp32_state_dict("
            f"'{run}', '{run.with_name('epoch=0-step=10.fp32.ckpt')}') writes it as one file, which "
            "load_from_checkpoint reads") in message

    # The checkpoints/ folder above it (no weight file at its top) points at it.
    message = _flat(run_cli("inspect", str(run.parent)).stderr)
    assert ("epoch=0-step=10.ckpt/ is a PyTorch Lightning DeepSpeed checkpoint (a folder per save, named like the "
            f".ckpt file): point at one, e.g. {run}") in message, message

    # A DeepSpeed run folder of another name is not called Lightning's.
    plain = tmp_path / "run"
    _lightning_deepspeed_save(plain)
    message = _flat(run_cli("inspect", str(plain)).stderr)
    assert f"python {plain / 'zero_to_fp32.py'} {plain} {plain}.fp32" in message and "Lightning" not in message


def _timm_clip_tower(folder: Path) -> None:
    """A timm CLIP tower as the Hub keeps it (timm/vit_base_patch16_clip_224.openai): timm's config.json and
    model.safetensors under timm's names, beside open_clip's open_clip_config.json, open_clip_model.safetensors and
    open_clip_pytorch_model.bin under open_clip's."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    folder.mkdir()
    timm = {"cls_token": torch.randn(1, 1, 8), "pos_embed": torch.randn(1, 5, 8),
            "patch_embed.proj.weight": torch.randn(8, 3, 4, 4), "blocks.0.attn.qkv.weight": torch.randn(24, 8),
            "blocks.0.attn.qkv.bias": torch.zeros(24), "norm_pre.weight": torch.ones(8),
            "head.weight": torch.randn(4, 8)}
    save_file(timm, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "architecture": "vit_base_patch16_clip_224", "num_classes": 4, "num_features": 8,
        "pretrained_cfg": {"tag": "openai", "input_size": [3, 8, 8], "mean": [0.48, 0.46, 0.41],
                           "std": [0.27, 0.26, 0.28], "num_classes": 4, "first_conv": "patch_embed.proj",
                           "classifier": "head"}}))
    open_clip = {"visual.class_embedding": torch.randn(8), "visual.positional_embedding": torch.randn(5, 8),
                 "visual.conv1.weight": torch.randn(8, 3, 4, 4), "visual.proj": torch.randn(8, 8),
                 "token_embedding.weight": torch.randn(16, 8), "logit_scale": torch.tensor(4.6)}
    save_file(open_clip, str(folder / "open_clip_model.safetensors"))
    torch.save(open_clip, folder / "open_clip_pytorch_model.bin")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 8}, "preprocess_cfg": {}}))


def test_a_timm_clip_tower_names_open_clips_copy_and_leaves_its_config_out_with_it(tmp_path: Path) -> None:
    """open_clip's files beside timm's were "weight files under names from_pretrained(folder) does not look for";
    converted, the output kept open_clip_config.json without the open_clip weights it goes with, a folder that
    open_clip's loader would take for its own and fail to load. The config now goes with its weights, said so."""
    folder = tmp_path / "vit_clip"
    _timm_clip_tower(folder)
    report = json.loads(run_cli("inspect", str(folder), "--json").stdout)
    assert [f["path"] for f in report["files"] if f["role"] == "weights"] == ["model.safetensors"]
    said = [w for w in report["warnings"] if w.startswith("not read, and not loaded by from_pretrained(folder)")]
    assert said and ("open_clip_model.safetensors, open_clip_pytorch_model.bin (open_clip's copy of the weights, "
                     "under its own names, with open_clip_config.json: open_clip.create_model_from_pretrained reads "
                     "it)") in said[0], report["warnings"]
    assert "names from_pretrained(folder) does not look for" not in said[0]

    for command, extra in (("convert", ()), ("shard", ("--max", "1KB"))):
        out = tmp_path / command
        result = run_cli(command, str(folder), "-o", str(out), *extra)
        assert result.exit_code == 0, result.stderr
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith("model")) == ["config.json"]
        assert ("open_clip_config.json (open_clip's config: its weights, open_clip's own copy, are not converted "
                "here; convert that copy on its own, this config beside it, for open_clip)") in _flat(result.stderr)

    # open_clip's own folder keeps its config: there its weights are the ones converted.
    for name in ("model.safetensors", "config.json", "open_clip_pytorch_model.bin"):
        (folder / name).unlink()
    out = tmp_path / "open_clip"
    result = run_cli("convert", str(folder), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors"]


def _kerashub_preset(folder: Path) -> None:
    """A KerasHub preset as Backbone.save_to_preset writes it (keras/gemma_2b_en's file list): config.json and
    tokenizer.json are Keras' serialization of the backbone and tokenizer (module, class_name, config,
    registered_name), metadata.json, model.weights.h5 (HDF5), assets/."""
    (folder / "assets" / "tokenizer").mkdir(parents=True)
    (folder / "model.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 504)
    (folder / "config.json").write_text(json.dumps({
        "module": "keras_hub.src.models.gemma.gemma_backbone", "class_name": "GemmaBackbone",
        "config": {"name": "gemma_backbone", "vocabulary_size": 256000, "num_layers": 18, "hidden_dim": 2048},
        "registered_name": "keras_hub>GemmaBackbone"}))
    (folder / "tokenizer.json").write_text(json.dumps({
        "module": "keras_hub.src.models.gemma.gemma_tokenizer", "class_name": "GemmaTokenizer", "config": {},
        "registered_name": "keras_hub>GemmaTokenizer"}))
    (folder / "metadata.json").write_text(json.dumps({"keras_version": "3.5.0", "keras_hub_version": "0.15.0",
                                                      "parameter_count": 2506172416}))


def test_a_kerashub_preset_is_named_with_what_builds_it(tmp_path: Path) -> None:
    """A KerasHub preset folder said only that model.weights.h5 is HDF5, and its config.json (given to plan-devices,
    which plans from a config) was "neither an index (weight_map) nor a model config": neither said Keras."""
    folder = tmp_path / "gemma_2b_en"
    _kerashub_preset(folder)
    for command in (("inspect", str(folder)), ("plan-devices", str(folder), "--gpu", "1GB"),
                    ("convert", str(folder), "-o", str(tmp_path / "out"))):
        result = run_cli(*command)
        assert result.exit_code == 2 and not result.stdout
        assert ("the folder is a KerasHub preset (config.json: keras_hub's GemmaBackbone, beside model.weights.h5): "
                f"keras_hub.models.Backbone.from_preset('{folder}') builds and loads it in Keras") \
            in _flat(result.stderr), result.stderr
    for name, built in (("config.json", "GemmaBackbone"), ("tokenizer.json", "GemmaTokenizer")):
        result = run_cli("plan-devices", str(folder / name), "--gpu", "1GB")
        assert result.exit_code == 2
        message = _flat(result.stderr)
        assert f"this is a Keras object's config (keras_hub's {built}, as Keras serializes it), not weights" in message
        assert "neither an index" not in message

    # A transformers model's tokenizer.json is still a tokenizer file.
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    message = _flat(run_cli("inspect", str(folder / "tokenizer.json")).stderr)
    assert "(a tokenizer file)" in message and "Keras" not in message


def test_a_lightning_project_points_at_its_latest_runs_checkpoints(tmp_path: Path) -> None:
    """A Lightning project folder (lightning_logs/version_N/checkpoints/*.ckpt below it) was "folder holds no weight
    file" and nothing more; its lightning_logs/ was "a run's save, whose weights are a folder further down (..., as
    diffusers' training scripts save each step's models)". Both point at the latest run's checkpoints/ now, which
    the Lightning checkpoints folder refusal then explains."""
    project = tmp_path / "project"
    for version in (0, 1):
        folder = project / "lightning_logs" / f"version_{version}" / "checkpoints"
        folder.mkdir(parents=True)
        _lightning_ckpt(folder / "last.ckpt", version)
    (project / "lightning_logs" / "version_2").mkdir()  # a run that saved nothing yet
    latest = project / "lightning_logs" / "version_1" / "checkpoints"
    for source, where in ((project, "its lightning_logs/ holds"), (project / "lightning_logs", "it holds")):
        result = run_cli("inspect", str(source))
        assert result.exit_code == 2
        message = _flat(result.stderr)
        assert (f"{where} PyTorch Lightning's runs (version_0/, version_1/, a logger's version_N/ each), whose "
                "ModelCheckpoint saves are .ckpt files in checkpoints/: point at one, e.g. "
                f"{latest} (the latest run that holds saves)") in message, message
        assert "diffusers" not in message
    # Followed, that advice reads (one .ckpt: the file itself).
    assert run_cli("inspect", str(latest), "--json").exit_code == 0


def _gguf_header() -> bytes:
    import struct

    return b"GGUF" + struct.pack("<IQQ", 3, 0, 0)  # version 3, no tensors, no metadata


def test_a_split_gguf_says_to_merge_it_before_transformers_reads_it(tmp_path: Path) -> None:
    """A split GGUF (llama.cpp's gguf-split: Qwen2.5-72B-Instruct-Q4_K_M-00001-of-00003.gguf, ...) was sent to
    from_pretrained(folder, gguf_file='...-00001-of-00003.gguf'): transformers reads that one file (GGUFReader of
    gguf_file), and the first part holds only its share of the tensors. The merge comes first now."""
    from fixtures.gguf_files import split_gguf

    folder = tmp_path / "Qwen2.5-72B-Instruct-GGUF"
    folder.mkdir()
    stem = "Qwen2.5-72B-Instruct-Q4_K_M"
    split_gguf(folder, stem, {}, [], 3)  # as gguf-split writes the parts (split.no, split.count, ...)
    merge = (f"llama.cpp's llama-gguf-split --merge {folder}/{stem}-00001-of-00003.gguf {folder}/{stem}.gguf joins "
             "them into one file, which transformers reads into PyTorch, dequantized (import transformers; "
             "transformers.AutoModelForCausalLM.from_pretrained("
             f"{str(folder)!r}, gguf_file='{stem}.gguf'))")
    # The folder of the parts alone is read as the set (gguf6), its note saying what transformers needs.
    message = _flat(run_cli("inspect", str(folder)).stderr)
    assert f"{stem}-00001-of-00003.gguf ... {stem}-00003-of-00003.gguf: the 3 parts of a split GGUF (llama.cpp's " \
        "gguf-split), read as one checkpoint" in message, message
    assert merge in message and "gguf_file='" + stem + "-00001" not in message
    result = run_cli("convert", str(folder / f"{stem}-00002-of-00003.gguf"), "-o", str(tmp_path / "out.safetensors"))
    assert result.exit_code == 2 and not (tmp_path / "out.safetensors").exists()
    message = _flat(result.stderr)
    assert "it is part 2 of 3 of a split GGUF" in message and merge in message, message

    # One whole GGUF keeps its plain advice (inspect reads it; convert, which does not take one, says what does).
    (folder / f"{stem}.gguf").write_bytes(_gguf_header())
    message = _flat(run_cli("convert", str(folder / f"{stem}.gguf"), "-o", str(tmp_path / "out.safetensors")).stderr)
    assert f"from_pretrained({str(folder)!r}, gguf_file='{stem}.gguf'), with the gguf package)" in message
    assert "split GGUF" not in message


def test_one_rank_of_an_extracted_tensor_parallel_nemo_model_says_it_is_one(tmp_path: Path) -> None:
    """A .nemo saved with tensor parallelism 2 keeps mp_rank_00/model_weights.ckpt and mp_rank_01/...
    (SaveRestoreConnector's _inject_model_parallel_rank_for_ckpt): one rank read alone looked like the whole model,
    its split weights half their size, and nothing said so, where Megatron-LM's mp_rank_00 says it."""
    folder = tmp_path / "megatron_gpt"
    for rank in (0, 1):
        (folder / f"mp_rank_0{rank}").mkdir(parents=True)
        torch.manual_seed(rank)
        torch.save({"model.embedding.word_embeddings.weight": torch.randn(32, 16),
                    "model.decoder.layers.0.self_attention.linear_qkv.weight": torch.randn(24, 16),
                    "model.decoder.final_layernorm.weight": torch.ones(16)},
                   folder / f"mp_rank_0{rank}" / "model_weights.ckpt")
    (folder / "model_config.yaml").write_text("tensor_model_parallel_size: 2\npipeline_model_parallel_size: 1\n")
    said = ("model_weights.ckpt: an extracted NeMo model: mp_rank_00 is one of 2 model-parallel ranks (mp_rank_00 to "
            "mp_rank_01): the weights tensor parallelism splits are slices here")
    for source in (folder / "mp_rank_00", folder / "mp_rank_00" / "model_weights.ckpt"):
        report = json.loads(run_cli("inspect", str(source), "--json").stdout)
        assert report["num_tensors"] == 3
        assert any(w.startswith(said) and f"--model_extracted_dir {folder}" in w
                   and "megatron_change_num_partitions.py" in w for w in report["warnings"]), report["warnings"]
    result = run_cli("convert", str(folder / "mp_rank_00"), "-o", str(tmp_path / "rank0"))
    assert result.exit_code == 0 and said in _flat(result.stderr), result.stderr

    # One rank alone (no other rank beside it) is the whole model.
    import shutil

    shutil.rmtree(folder / "mp_rank_01")
    report = json.loads(run_cli("inspect", str(folder / "mp_rank_00"), "--json").stdout)
    assert not any("model-parallel ranks" in w for w in report["warnings"]), report["warnings"]


def test_llama_3_1_405b_keeps_its_release_a_level_down_and_it_is_left_out_too(tmp_path: Path) -> None:
    """Llama 3.1 405B's repo keeps its original release one level further down (original/mp16/consolidated.NN.pth
    with params.json): it was neither named by the read nor left out by convert, which copied it whole."""
    repo = tmp_path / "llama405"
    _llama3_repo(repo)
    (repo / "original" / "mp16").mkdir()
    for name in ("consolidated.00.pth", "params.json"):
        (repo / "original" / name).rename(repo / "original" / "mp16" / name)
    report = json.loads(run_cli("inspect", str(repo), "--json").stdout)
    assert any("original/ (Meta's original format, with params.json" in w for w in report["warnings"]), \
        report["warnings"]
    result = run_cli("convert", str(repo), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.stderr
    assert not (tmp_path / "out" / "original").exists()
    assert "not copied: original/ (Meta's original format, with params.json" in _flat(result.stderr)


def test_converting_metas_original_release_says_metas_loaders_read_pth_files(tmp_path: Path) -> None:
    """convert original/ wrote consolidated.00.safetensors beside params.json, shard model-0000i-of-0000N.safetensors:
    Meta's llama code globs the folder's *.pth and convert_llama_weights_to_hf.py torch.loads consolidated.NN.pth, so
    neither output is read by them, and nothing said so."""
    repo = tmp_path / "llama3"
    _llama3_repo(repo)
    said = ("Meta's original format (consolidated.00.pth with params.json): Meta's llama code reads the folder's "
            "*.pth files and transformers' convert_llama_weights_to_hf.py its consolidated.NN.pth, both with "
            "torch.load, not ")
    result = run_cli("convert", str(repo / "original"), "-o", str(tmp_path / "st"))
    assert result.exit_code == 0, result.stderr
    assert (said + "consolidated.00.safetensors; keep the .pth files for them (the transformers files in llama3/ are "
            "the safetensors copy)") in _flat(result.stderr), result.stderr
    result = run_cli("shard", str(repo / "original"), "--max", "8KB", "-o", str(tmp_path / "shards"), "--json")
    assert any(w.startswith(said + "model-00001-of-") for w in json.loads(result.stdout)["warnings"])
    # A .pth output is what they read: nothing to say.
    result = run_cli("convert", str(repo / "original" / "consolidated.00.pth"), "-o", str(tmp_path / "c.pth"),
                     "--dtype", "fp32")
    assert result.exit_code == 0 and "Meta's original format" not in result.stderr, result.stderr
