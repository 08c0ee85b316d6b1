"""Thirdparty40: folders of shards that mix two checkpoints (an old `-of-00002` set beside a new `-of-00003` one, a
stray pytorch_model.bin beside safetensors shards), with or without an index, and a set missing shards without its
index: which set is read and why, the other said to be ignored, never merged; the missing shards named.

The sets are written as transformers' save_pretrained writes them (huggingface_hub's split into
`model-0000i-of-0000N.safetensors` and its model.safetensors.index.json), of the fixtures' tiny seeded BERT.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fixtures.build import build_bert
from tests.helpers import folder_refusals, run_cli, run_json


def _said(text: str) -> str:
    return " ".join(text.replace("│", " ").replace("┃", " ").split())


def _save_shards(folder: Path, max_shard_size: str, index: bool = True) -> list[str]:
    """save_pretrained's safetensors shards of the tiny BERT at `max_shard_size`, with or without the index; their
    names, in order."""
    model = build_bert()
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    shards = sorted(p.name for p in folder.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1, shards
    if not index:
        (folder / "model.safetensors.index.json").unlink()
    return shards


def _two_sets(folder: Path, index: str | None) -> tuple[list[str], list[str]]:
    """An old set of fewer shards beside a new set of more, both of the same model; `index`: 'new', 'old' or None,
    which set's index is kept."""
    old_folder, new_folder = folder.parent / f"{folder.name}-old", folder.parent / f"{folder.name}-new"
    old = _save_shards(old_folder, "60KB")
    new = _save_shards(new_folder, "40KB")
    assert len(old) < len(new) and old[0].rsplit("-of-", 1)[1] != new[0].rsplit("-of-", 1)[1]
    folder.mkdir()
    for source in (old_folder, new_folder):
        for shard in source.glob("model-*.safetensors"):
            shard.rename(folder / shard.name)
    (new_folder / "config.json").rename(folder / "config.json")
    if index is not None:
        (old_folder if index == "old" else new_folder).joinpath("model.safetensors.index.json").rename(
            folder / "model.safetensors.index.json")
    return old, new


def test_an_index_beside_another_sets_shards_reads_its_own_and_names_the_others(tmp_path: Path) -> None:
    old, new = _two_sets(tmp_path / "m", index="new")
    result = run_cli("inspect", str(tmp_path / "m"))
    assert result.exit_code == 0, result.stderr
    said = _said(result.stderr)
    pattern = "model-*-of-" + old[0].rsplit("-of-", 1)[1]
    assert f"{pattern} ignored: the {len(old)} shards of another checkpoint, which the index read does not name" in said
    assert f"model.safetensors.index.json is read, with the {len(new)} shards it names" in said
    assert "never merged" in said
    assert f"{len(new)} weight files" in _said(result.stdout)  # the index's set alone
    # The same set, whichever set the index names: the old one's index reads the old set.
    _two_sets(tmp_path / "o", index="old")
    code, report = run_json("inspect", str(tmp_path / "o"))
    assert code == 0
    assert sorted(f["path"] for f in report["files"] if f["path"].endswith(".safetensors")) == old
    assert any(f"model-*-of-{new[0].rsplit('-of-', 1)[1]} ignored" in w for w in report["warnings"])


def test_two_sets_without_an_index_are_refused_naming_both(tmp_path: Path) -> None:
    old, new = _two_sets(tmp_path / "m", index=None)
    for line in folder_refusals(tmp_path / "m"):
        assert "the shards of 2 different checkpoints and no index" in line, line
        assert f"model-*-of-{new[0].rsplit('-of-', 1)[1]} ({len(new)} of {len(new)} shards)" in line
        assert f"model-*-of-{old[0].rsplit('-of-', 1)[1]} ({len(old)} of {len(old)} shards)" in line
        assert "not merged" in line and "name one shard to read it alone" in line


def test_a_stray_pytorch_model_bin_beside_shards_without_index_says_which_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shards = _save_shards(folder, "40KB", index=False)
    torch.save({k: v.clone() for k, v in build_bert(seed=7).state_dict().items()}, folder / "pytorch_model.bin")
    for command in (("inspect", str(folder)), ("check-dtype", str(folder))):
        result = run_cli(*command)
        assert result.exit_code == 0, result.stderr
        said = _said(result.stderr)
        assert (f"model-*-of-{shards[0].rsplit('-of-', 1)[1]} ignored: the {len(shards)} shards of another "
                "checkpoint, without their index model.safetensors.index.json") in said, said
        assert "pytorch_model.bin is read (as from_pretrained(folder) chooses), and the two are never merged" in said
        # Not also listed as names from_pretrained does not look for.
        assert "does not look for" not in said


def test_a_stray_pytorch_model_bin_beside_an_indexed_set_is_said_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shards = _save_shards(folder, "40KB")
    torch.save(build_bert(seed=7).state_dict(), folder / "pytorch_model.bin")
    code, report = run_json("inspect", str(folder))
    assert code == 0
    assert sorted(f["path"] for f in report["files"] if f["path"].endswith(".safetensors")) == shards
    assert "pytorch_model.bin is ignored: model.safetensors.index.json comes first, as from_pretrained chooses" \
        in report["warnings"]


def test_a_shard_missing_in_the_middle_without_an_index_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shards = _save_shards(folder, "20KB", index=False)
    assert len(shards) >= 4
    (folder / shards[1]).unlink()
    for line in folder_refusals(folder):
        assert (f"folder holds {len(shards) - 1} of the {len(shards)} shards of one checkpoint "
                f"({shards[0]} to {shards[-1]}) and no index: 1 is missing ({shards[1]})") in line, line
        assert "fetch it and the index (model.safetensors.index.json)" in line
    (folder / shards[-1]).unlink()
    for command in (("diff-keys", str(folder), str(folder)), ("convert", str(folder), "-o", str(tmp_path / "o.st")),
                    ("shard", str(folder), "-o", str(tmp_path / "s"), "--max", "1MB"), ("check-dtype", str(folder))):
        result = run_cli(*command)
        assert result.exit_code == 2, (command, result.stdout)
        assert f"2 are missing ({shards[1]}, {shards[-1]})" in _said(result.stderr), (command, result.stderr)
    assert not (tmp_path / "o.st").exists() and not (tmp_path / "s").exists()


def test_a_complete_set_without_its_index_is_still_refused_as_before(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shards = _save_shards(folder, "40KB", index=False)
    for line in folder_refusals(folder):
        assert (f"folder holds the {len(shards)} shards of one checkpoint ({shards[0]} to {shards[-1]}) but not their "
                "index (model.safetensors.index.json") in line, line


def test_the_shards_of_an_unread_index_are_left_to_that_index(tmp_path: Path) -> None:
    """pytorch_model.bin.index.json's shards beside model.safetensors.index.json's: said once, with their index."""
    folder = tmp_path / "m"
    _save_shards(folder, "40KB")
    from fixtures.build import save_bin_folder

    save_bin_folder(build_bert(), folder, max_shard_size="40KB")
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    code, report = run_json("inspect", str(folder))
    assert code == 0
    assert not any("another checkpoint" in w for w in report["warnings"]), report["warnings"]
    assert any(w.startswith("pytorch_model.bin.index.json is ignored") for w in report["warnings"])


# --- Layouts whose folders were refused with "weights are in subfolders: point at one" or "point at that file" alone:
# a diffusers pipeline, Megatron-LM's and NeMo's model-parallel ranks.

def _diffusers_pipeline(folder: Path) -> None:
    """A StableDiffusionPipeline laid out as DiffusionPipeline.save_pretrained writes it: model_index.json naming each
    component's library and class, one subfolder per component, the models' weights in their own subfolders
    (diffusers' models as diffusion_pytorch_model.safetensors, the transformers text encoder as model.safetensors);
    the tokenizer and scheduler hold no weights."""
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    g = torch.Generator().manual_seed(0)
    for sub, name, tensors, config in (
            ("unet", "diffusion_pytorch_model.safetensors", {"conv_in.weight": torch.randn(8, 4, 3, 3, generator=g)},
             {"_class_name": "UNet2DConditionModel", "in_channels": 4}),
            ("vae", "diffusion_pytorch_model.safetensors", {"encoder.conv_in.weight": torch.randn(4, 3, 3, 3,
                                                                                                  generator=g)},
             {"_class_name": "AutoencoderKL", "latent_channels": 4})):
        (folder / sub).mkdir(parents=True)
        save_file(tensors, folder / sub / name)
        (folder / sub / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    CLIPTextModel(CLIPTextConfig(vocab_size=99, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=16)).save_pretrained(
        folder / "text_encoder")
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "vocab.json").write_text("{}")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "PNDMScheduler"}))
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "feature_extractor": [None, None], "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]}))


def test_a_diffusers_pipeline_folder_is_named_and_points_at_its_denoiser(tmp_path: Path) -> None:
    """Before: "weights are in subfolders (text_encoder/, unet/, vae/): point at one, e.g. .../text_encoder"."""
    folder = tmp_path / "sd"
    _diffusers_pipeline(folder)
    for line in folder_refusals(folder):
        assert ("a diffusers pipeline (model_index.json: StableDiffusionPipeline): each component is a model of its "
                f"own, with its own config and weights, in text_encoder/, unet/, vae/: point at one, e.g. "
                f"{folder / 'unet'} (the denoising model)") in line, line
    # The folder it points at reads.
    code, report = run_json("inspect", str(folder / "unet"))
    assert code == 0 and [t["name"] for t in report["tensors"]] == ["conv_in.weight"]


def _megatron_save(folder: Path, ranks: list[str]) -> None:
    """Megatron-LM's save_checkpoint under tensor (and pipeline) parallelism: iter_0000100/mp_rank_TT[_PPP]/
    model_optim_rng.pt for each rank, {args, checkpoint_version, iteration, model: {language_model: ...}, rng_state},
    and latest_checkpointed_iteration.txt beside the iteration folders."""
    import argparse

    args = argparse.Namespace(num_layers=1, hidden_size=8, num_attention_heads=2, padded_vocab_size=16,
                              tensor_model_parallel_size=len(ranks), pipeline_model_parallel_size=1)
    g = torch.Generator().manual_seed(0)
    for rank in ranks:
        (folder / "iter_0000100" / rank).mkdir(parents=True)
        language_model = {
            "embedding": {"word_embeddings": {"weight": torch.randn(16 // len(ranks), 8, generator=g)}},
            "encoder": {"layers.0.self_attention.query_key_value.weight": torch.randn(24 // len(ranks), 8,
                                                                                      generator=g),
                        "final_norm.weight": torch.ones(8)}}
        torch.save({"args": args, "checkpoint_version": 3.0, "iteration": 100,
                    "model": {"language_model": language_model}, "rng_state": []},
                   folder / "iter_0000100" / rank / "model_optim_rng.pt")
    (folder / "latest_checkpointed_iteration.txt").write_text("100")


def test_megatron_model_parallel_ranks_are_said_to_be_parts(tmp_path: Path) -> None:
    """Before: the iteration folder was "weights are in subfolders (mp_rank_00/, mp_rank_01/): point at one", the save
    folder "whose weights are in .../mp_rank_00/model_optim_rng.pt: point at that file", neither saying it is a part."""
    folder = tmp_path / "checkpoints"
    _megatron_save(folder, ["mp_rank_00", "mp_rank_01"])
    for line in folder_refusals(folder / "iter_0000100"):
        assert "a Megatron-LM save in 2 model-parallel ranks (mp_rank_00/, mp_rank_01/): each holds its slices" in line
        assert f"point at one, e.g. {folder / 'iter_0000100' / 'mp_rank_00'}, to read that rank" in line
        assert "tools/checkpoint/convert.py" in line
    for line in folder_refusals(folder):
        assert (f"whose weights are in {folder / 'iter_0000100' / 'mp_rank_00' / 'model_optim_rng.pt'} (one of its 2 "
                "model-parallel ranks, mp_rank_00/ to mp_rank_01/") in line, line
    # One rank alone: the folder it lies in reads, and says which part it is.
    code, report = run_json("inspect", str(folder / "iter_0000100" / "mp_rank_00"))
    assert code == 0 and report["num_tensors"] == 3
    assert any("mp_rank_00 is one of 2 model-parallel ranks" in w for w in report["warnings"])


def test_a_single_rank_megatron_save_is_pointed_at_as_before(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    _megatron_save(folder, ["mp_rank_00"])
    for line in folder_refusals(folder):
        assert line.endswith(f"whose weights are in {folder / 'iter_0000100' / 'mp_rank_00' / 'model_optim_rng.pt'}: "
                             "point at that file"), line


def test_a_nemo_archive_of_model_parallel_ranks_says_they_are_parts(tmp_path: Path) -> None:
    """NeMo 1.x's save_to under tensor parallelism: the .nemo tar holds model_config.yaml and one
    mp_rank_NN/model_weights.ckpt per rank. Before: "a tar holding mp_rank_00/model_weights.ckpt,
    mp_rank_01/model_weights.ckpt: extract it (tar -xf) and point at that file"."""
    import io
    import tarfile

    # NeMo's MegatronGPTModel saves each rank's state dict flat (model.language_model.*), as torch.save writes it.
    g = torch.Generator().manual_seed(0)
    ranks = {}
    for rank in ("mp_rank_00", "mp_rank_01"):
        ranks[rank] = tmp_path / f"{rank}.ckpt"
        torch.save({"model.language_model.embedding.word_embeddings.weight": torch.randn(8, 8, generator=g),
                    "model.language_model.encoder.final_layernorm.weight": torch.ones(8)}, ranks[rank])
    archive = tmp_path / "megatron_gpt.nemo"
    with tarfile.open(archive, "w:") as tar:
        config = b"tensor_model_parallel_size: 2\npipeline_model_parallel_size: 1\n"
        info = tarfile.TarInfo("./model_config.yaml")
        info.size = len(config)
        tar.addfile(info, io.BytesIO(config))
        for rank in ("mp_rank_00", "mp_rank_01"):
            tar.add(ranks[rank], arcname=f"./{rank}/model_weights.ckpt")
    for command in (("inspect", str(archive)), ("convert", str(archive), "-o", str(tmp_path / "o.safetensors"))):
        result = run_cli(*command)
        assert result.exit_code == 2, result.stdout
        line = _said(result.stderr)
        assert ("a NeMo archive (.nemo), a tar holding the model in 2 model-parallel ranks "
                "(mp_rank_00/model_weights.ckpt, mp_rank_01/model_weights.ckpt), each with its slices") in line, line
        assert f"megatron_change_num_partitions.py (--model_file {archive}" in line
    assert not (tmp_path / "o.safetensors").exists()
    # Extracted as the message says: the folder names its ranks and NeMo's script, each rank's file reads.
    extracted = tmp_path / "megatron_gpt"
    with tarfile.open(archive) as tar:
        tar.extractall(extracted, filter="data")
    for line in folder_refusals(extracted):
        assert "an extracted NeMo model in 2 model-parallel ranks (mp_rank_00/, mp_rank_01/)" in line, line
        assert "megatron_change_num_partitions.py (--model_extracted_dir" in line
    code, report = run_json("inspect", str(extracted / "mp_rank_00" / "model_weights.ckpt"))
    assert code == 0 and any("an extracted NeMo model: mp_rank_00 is one of 2" in w for w in report["warnings"])


def test_a_timm_checkpoint_with_model_ema_says_what_state_dict_ema_is(tmp_path: Path) -> None:
    """timm's train.py --model-ema: CheckpointSaver._save writes {epoch, arch, optimizer, version, args, state_dict,
    state_dict_ema, metric} (last.pth.tar, checkpoint-N.pth.tar, model_best.pth.tar). Before: state_dict was read and
    state_dict_ema was "a state dict of N tensors: pick it with --key", nothing said of the EMA --use-ema loads."""
    import argparse

    model = build_bert()
    ema = {name: value.clone() * 0.5 for name, value in model.state_dict().items()}
    source = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 9, "arch": "bert_tiny", "optimizer": {"state": {}, "param_groups": []}, "version": 2,
                "args": argparse.Namespace(model="bert_tiny", model_ema=True), "state_dict": model.state_dict(),
                "state_dict_ema": ema, "metric": 71.5}, source)
    code, report = run_json("inspect", str(source))
    assert code == 0 and report["nested_key"] == "state_dict"
    note = next(w for w in report["warnings"] if "timm" in w)
    assert ("a timm training checkpoint (train.py's CheckpointSaver: epoch, arch, state_dict, optimizer, version) "
            "saved with --model-ema: state_dict is read, the raw training weights; state_dict_ema beside it is the "
            "EMA copy") in note, note
    # The --key it names reads the EMA, and no note then.
    code, report = run_json("inspect", str(source), "--key", "state_dict_ema")
    assert code == 0 and report["nested_key"] == "state_dict_ema" and report["num_tensors"] == len(ema)
    assert not any("timm training checkpoint" in w for w in report["warnings"])


def test_a_timm_checkpoint_without_ema_says_nothing_of_one(tmp_path: Path) -> None:
    source = tmp_path / "last.pth.tar"
    torch.save({"epoch": 1, "arch": "bert_tiny", "optimizer": {"state": {}, "param_groups": []}, "version": 2,
                "state_dict": build_bert().state_dict()}, source)
    code, report = run_json("inspect", str(source))
    assert code == 0 and not any("timm" in w for w in report["warnings"])
