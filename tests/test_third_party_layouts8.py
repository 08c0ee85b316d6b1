"""An eighth round of checkpoints as other tools write them: torchtune's output folders (up to 0.3: one file per
epoch, side by side) and its recipe_state.pt."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import run_cli, run_json

_LLAMA_CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8,
                 "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 32, "intermediate_size": 16}


def _recipe_state(path: Path) -> None:
    """torchtune's recipe_state.pt: what a recipe resumes from (training.SEED_KEY, EPOCHS_KEY, TOTAL_EPOCHS_KEY,
    MAX_STEPS_KEY, OPT_KEY), no model weights."""
    torch.save({"seed": 1234, "epochs_run": 1, "total_epochs": 2, "max_steps_per_epoch": None,
                "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4, 8)}},
                              "param_groups": [{"lr": 3e-4, "params": [0]}]}}, path)


def _torchtune_lora_output(folder: Path, epochs: int = 1) -> None:
    """A LoRA fine-tune's output_dir as FullModelHFCheckpointer (torchtune 0.2 / 0.3) writes it: per epoch N the
    merged model split as the checkpoint it read was (`hf_model_0001_N.pt`, `hf_model_0002_N.pt`: torch.save of
    each part's state dict under Hugging Face names), `adapter_N.pt` (the LoRA under torchtune's names), and the
    same LoRA for PEFT (adapter_model.bin, adapter_config.json); config.json copied from the input; after an epoch
    that is not the last, recipe_state.pt."""
    folder.mkdir()
    torch.manual_seed(0)
    for epoch in range(epochs):
        torch.save({"model.embed_tokens.weight": torch.randn(32, 8),
                    "model.layers.0.self_attn.q_proj.weight": torch.randn(8, 8)}, folder / f"hf_model_0001_{epoch}.pt")
        torch.save({"model.layers.1.self_attn.q_proj.weight": torch.randn(8, 8), "model.norm.weight": torch.ones(8),
                    "lm_head.weight": torch.randn(32, 8)}, folder / f"hf_model_0002_{epoch}.pt")
        torch.save({"layers.0.attn.q_proj.lora_a.weight": torch.randn(4, 8),
                    "layers.0.attn.q_proj.lora_b.weight": torch.randn(8, 4)}, folder / f"adapter_{epoch}.pt")
    torch.save({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(4, 8),
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.randn(8, 4)},
               folder / "adapter_model.bin")
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                            "target_modules": ["q_proj"]}))
    (folder / "config.json").write_text(json.dumps(_LLAMA_CONFIG))
    _recipe_state(folder / "recipe_state.pt")


def _refusal(*args: str) -> str:
    result = run_cli(*args)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return " ".join(result.stderr.split())


def test_a_torchtune_output_folder_names_each_epochs_model_files(tmp_path: Path) -> None:
    """The folder was refused as "several weight files and no index (adapter_0.pt, adapter_model.bin, ...,
    recipe_state.pt); name one", listing the optimizer's file among the weights and not saying which is the model,
    that it is in two parts, or which epoch is the last."""
    folder = tmp_path / "llama-lora-out"
    _torchtune_lora_output(folder, epochs=2)
    for command in (("inspect", str(folder)), ("plan-devices", str(folder), "--gpu", "1GB")):
        message = _refusal(*command)
        assert "a torchtune output folder" in message and "epoch 1: " in message, message
        assert ("hf_model_0001_1.pt, hf_model_0002_1.pt (the model in 2 parts, each some of its tensors, under "
                "Hugging Face names)") in message, message
        assert "adapter_1.pt (LoRA weights under torchtune's names)" in message, message
        assert "adapter_model.bin (the LoRA under PEFT's names" in message and "earlier epochs: 0" in message
        assert "recipe_state.pt" not in message, message  # training state, not one of the weight files
        assert message.endswith("name a file to read it (e.g. llama-lora-out/hf_model_0001_1.pt)"), message

    # What it names reads as the part it is.
    code, data = run_json("inspect", str(folder / "hf_model_0002_1.pt"))
    assert code == 0 and data["num_tensors"] == 3 and data["num_params"] == 8 * 8 + 8 + 32 * 8, data


def test_a_torchtune_folder_of_one_model_file_and_its_recipe_state_reads_the_model(tmp_path: Path) -> None:
    """A full fine-tune's output after its first epoch: hf_model_0001_0.pt beside recipe_state.pt. It was refused
    as "several weight files and no index", though only one of them holds weights; convert now leaves the recipe
    state out as training state."""
    folder = tmp_path / "full-ft"
    folder.mkdir()
    state = {"model.embed_tokens.weight": torch.randn(32, 8), "lm_head.weight": torch.randn(32, 8)}
    torch.save(state, folder / "hf_model_0001_0.pt")
    _recipe_state(folder / "recipe_state.pt")
    (folder / "config.json").write_text(json.dumps(_LLAMA_CONFIG))
    code, data = run_json("inspect", str(folder))
    assert code == 0, data
    assert Path(data["files"][0]["path"]).name == "hf_model_0001_0.pt" and data["num_params"] == 512, data["files"]

    result = run_cli("convert", str(folder), "-o", str(tmp_path / "st"))
    assert result.exit_code == 0, result.stderr
    assert "recipe_state.pt (training state, not part of the model)" in " ".join(result.stderr.split())
    assert sorted(p.name for p in (tmp_path / "st").iterdir()) == ["config.json", "hf_model_0001_0.safetensors"]


def test_torchtune_recipe_state_given_as_the_source_says_what_it_is(tmp_path: Path) -> None:
    """recipe_state.pt was "no state dict found; top-level entries: seed (int: 1234), ...; pick one with --key", as
    if some entry held the weights."""
    path = tmp_path / "recipe_state.pt"
    _recipe_state(path)
    message = _refusal("inspect", str(path))
    assert "no model weights: the file holds torchtune's recipe state (seed, epochs_run, total_epochs, the " \
           "optimizer: its recipe_state.pt)" in message, message
    assert "torchtune: its hf_model_*, meta_model_* or torchtune_model_* files, or the epoch_N/ folder" in message
    assert "pick one with --key" not in message


def _burn_record(path: Path) -> None:
    """What Burn's NamedMpkFileRecorder writes: its BurnRecord (metadata, item) as MessagePack with field names, a
    map of two entries; NamedMpkGzFileRecorder gzips the same bytes."""
    import gzip

    record = (b"\x82\xa8metadata\x84\xa6format\xa3mpk\xa7version\xa60.16.0\xa8settings\xa4Full\xa4name\xa5Model"
              b"\xa4item\x81\xa6linear\x81\xa6weight\x82\xa5param\xc4\x10" + bytes(16) + b"\xa2id\xa5abcde")
    path.write_bytes(gzip.compress(record) if path.name.endswith(".gz") else record)


def test_burn_records_and_gzipped_files_are_named_with_what_reads_them(tmp_path: Path) -> None:
    """A Burn (Rust) model saved with its default recorder (model.mpk) or the gzipped one (model.mpk.gz), and a
    torch.save file gzipped for upload: each was "not a safetensors file nor a PyTorch pickle (zip or legacy)"."""
    for name, said in (("model.mpk", "a Burn (Rust) record saved by NamedMpkFileRecorder (.mpk: named MessagePack"),
                       ("model.mpk.gz", "a Burn (Rust) record saved by NamedMpkGzFileRecorder (.mpk.gz: "
                                        "gzip-compressed named MessagePack)")):
        _burn_record(tmp_path / name)
        for command in ("inspect", "check-dtype"):
            message = _refusal(command, str(tmp_path / name))
            assert f"this is {said}" in message, message
            assert "save it with burn-store's SafetensorsStore" in message, message

    import gzip

    buffer = tmp_path / "raw.pth"
    torch.save({"w": torch.ones(2)}, buffer)
    (tmp_path / "model.pth.gz").write_bytes(gzip.compress(buffer.read_bytes()))
    message = _refusal("inspect", str(tmp_path / "model.pth.gz"))
    assert "this is a gzip-compressed file" in message and f"gunzip -k {tmp_path / 'model.pth.gz'}" in message, message

    # A gzipped tar (an older NeMo .nemo) is still named by its members, not as "a gzip-compressed file".
    import io
    import tarfile

    with tarfile.open(tmp_path / "asr.nemo", "w:gz") as archive:
        config = b"model: {}\n"
        info = tarfile.TarInfo("./model_config.yaml")
        info.size = len(config)
        archive.addfile(info, io.BytesIO(config))
        archive.add(buffer, arcname="./model_weights.ckpt")
    message = _refusal("inspect", str(tmp_path / "asr.nemo"))
    assert "it is a NeMo archive (.nemo), a tar holding model_weights.ckpt: extract it (tar -xf)" in message, message


def test_planning_a_folder_of_another_frameworks_weights_names_them(tmp_path: Path) -> None:
    """A Burn artifact folder (model.mpk beside Burn's own config.json) or a keras-io repo (model.keras beside
    Keras' config.json): plan-devices planned from that config alone and said "nothing to plan: the checkpoint
    holds no tensors and its config.json has no model_type", never naming the weights the folder holds, which
    inspect names."""
    burn = tmp_path / "artifact"
    burn.mkdir()
    _burn_record(burn / "model.mpk")
    (burn / "config.json").write_text(json.dumps({"model": {"d_model": 8, "n_layer": 2}, "num_epochs": 10}))
    message = _refusal("plan-devices", str(burn), "--gpu", "1GB")
    assert "it holds model.mpk, which weightdoctor does not read (not PyTorch)" in message, message
    assert "nothing to plan" not in message

    # A transformers config beside them is still planned from, as the model it describes.
    (burn / "config.json").write_text(json.dumps(_LLAMA_CONFIG))
    result = run_cli("plan-devices", str(burn), "--gpu", "1GB")
    assert result.exit_code == 0, result.stderr
    assert "the folder's weights are model.mpk (not PyTorch)" in " ".join(result.stderr.split())


def test_an_original_stable_diffusion_ckpt_with_its_ema_says_the_unet_is_stored_twice(tmp_path: Path) -> None:
    """CompVis' sd-v1-4-full-ema.ckpt: {"state_dict", "global_step", "epoch"}, the state dict holding the UNet
    under model.diffusion_model.* and LitEma's copy of it as buffers under model_ema.<name without dots>. inspect
    counted both in the parameters and said nothing, though the loaders build one UNet of the two."""
    unet = {"model.diffusion_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3),
            "model.diffusion_model.out.2.weight": torch.randn(4, 8, 3, 3)}
    state = {**unet, "first_stage_model.encoder.conv_in.weight": torch.randn(8, 3, 3, 3),
             "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.randn(32, 8),
             "model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(470000, dtype=torch.int32),
             "model_ema.diffusion_modelinput_blocks00weight": torch.randn(8, 4, 3, 3),
             "model_ema.diffusion_modelout2weight": torch.randn(4, 8, 3, 3)}
    path = tmp_path / "sd-v1-4-full-ema.ckpt"
    torch.save({"state_dict": state, "global_step": 470000, "epoch": 6}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "state_dict", data
    assert data["num_params"] == sum(v.numel() for v in state.values())  # what the file holds, EMA included
    said = [w for w in data["warnings"] if w.startswith("the UNet is stored twice")]
    assert said == ["the UNet is stored twice: model_ema.* holds an EMA copy of 2 tensors of model.diffusion_model.* "
                    "(576 parameters, counted in the total above); the loaders build one UNet: diffusers' "
                    "from_single_file and the original inference configs (use_ema: False) take the non-EMA weights, "
                    "diffusers' conversion script with --extract_ema the EMA ones"], data["warnings"]

    # Without the EMA copy (sd-v1-4.ckpt, what A1111 and CivitAI share), nothing is said.
    torch.save({"state_dict": {k: v for k, v in state.items() if not k.startswith("model_ema")}}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and not any("stored twice" in w for w in data["warnings"]), data["warnings"]


def test_an_original_controlnet_against_diffusers_controlnet_is_a_foreign_layout(tmp_path: Path) -> None:
    """lllyasviel's control_v11p_sd15_canny (control_model.input_blocks / input_hint_block / zero_convs) against
    a diffusers ControlNetModel folder: diff-keys offered renames (`^control_model\\.zero_convs\\.0\\.` →
    `controlnet_down_blocks.`) as the fix, though from_single_file renumbers the blocks."""
    from safetensors.torch import save_file

    original = tmp_path / "control_v11p_sd15_canny.safetensors"
    save_file({"control_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3),
               "control_model.input_hint_block.0.weight": torch.randn(16, 3, 3, 3),
               "control_model.zero_convs.0.0.weight": torch.zeros(8, 8, 1, 1),
               "control_model.middle_block_out.0.weight": torch.zeros(8, 8, 1, 1)}, str(original))
    folder = tmp_path / "controlnet-canny"
    folder.mkdir()
    save_file({"conv_in.weight": torch.randn(8, 4, 3, 3),
               "controlnet_cond_embedding.conv_in.weight": torch.randn(16, 3, 3, 3),
               "controlnet_down_blocks.0.weight": torch.zeros(8, 8, 1, 1),
               "down_blocks.0.resnets.0.conv1.weight": torch.randn(8, 8, 3, 3),
               "controlnet_mid_block.weight": torch.zeros(8, 8, 1, 1)},
              str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel", "in_channels": 4}))

    code, data = run_json("diff-keys", str(original), str(folder))
    assert code == 1, data
    assert data["suggested_renames"] == [], data["suggested_renames"]
    assert any(note.startswith("A is a ControlNet in its original single-file layout") and
               "load A with diffusers' ControlNetModel.from_single_file" in note for note in data["notes"]), data
    reasons = {entry["name"]: entry["reason"] for entry in data["unexpected"]}
    assert reasons["control_model.zero_convs.0.0.weight"] == "foreign-layout", reasons

    code, data = run_json("diff-keys", str(folder), str(original))
    assert any(note.startswith("B is a ControlNet in its original single-file layout") and
               "code written for the original layout needs A converted back" in note for note in data["notes"]), data


def test_keras_3_files_name_how_to_get_their_arrays_out(tmp_path: Path) -> None:
    """Keras 3's model.save("model.keras") (a zip of metadata.json, config.json and model.weights.h5) and
    model.save_weights("model.weights.h5") (HDF5): refused by format, but with no way to their weights, where every
    other format it names (GGUF, NumPy, Flax) says what converts it."""
    import zipfile

    hdf5 = b"\x89HDF\r\n\x1a\n" + bytes(504)
    with zipfile.ZipFile(tmp_path / "model.keras", "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.3.3", "date_saved": "2024-05-01@00:00:00"}))
        archive.writestr("config.json", json.dumps({"module": "keras", "class_name": "Sequential", "config": {}}))
        archive.writestr("model.weights.h5", hdf5)
    (tmp_path / "model.weights.h5").write_bytes(hdf5)

    message = _refusal("inspect", str(tmp_path / "model.keras"))
    assert "model.keras: this is a Keras model archive (.keras);" in message, message
    assert f"keras.saving.load_model({str(tmp_path / 'model.keras')!r}) rebuilds the model in Keras 3" in message
    assert ("safetensors.numpy.save_file({v.path: v.numpy() for v in model.weights}, "
            f"{str(tmp_path / 'model.safetensors')!r})") in message, message

    message = _refusal("convert", str(tmp_path / "model.weights.h5"), "-o", str(tmp_path / "out.safetensors"))
    assert "this is an HDF5 file (Keras / TensorFlow .h5 weights)" in message, message
    assert f"your_model.load_weights({str(tmp_path / 'model.weights.h5')!r}), your_model being the Keras model you " \
        "build" in " ".join(message.split()), message
    assert "from_pretrained(folder, from_tf=True)" in message
    assert not (tmp_path / "out.safetensors").exists()


class _Net(torch.nn.Module):
    """A user's own model class, pickled by name by torch.save(model)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)


def test_a_whole_pickled_model_says_how_whoever_has_the_file_gets_its_state_dict(tmp_path: Path) -> None:
    """torch.save(model), bare or in a dict beside a state dict: refused unread, as it must be, with "save
    model.state_dict() instead", which only the model's owner can do; the one who downloaded the .pt was not told
    how to get from the file to a state dict, as the YOLO and Demucs refusals say it."""
    torch.save(_Net(), tmp_path / "net.pt")
    message = _refusal("inspect", str(tmp_path / "net.pt"))
    assert "nothing was unpickled (this looks like a whole pickled model, torch.save(model)" in message, message
    assert "with the code that defines its classes (tests.test_third_party_layouts8._Net) importable, " \
           f"import torch; obj = torch.load({str(tmp_path / 'net.pt')!r}, weights_only=False); model = obj if " \
           "isinstance(obj, torch.nn.Module) else next(v for v in obj.values() if isinstance(v, torch.nn.Module)); " \
           f"torch.save(model.state_dict(), {str(tmp_path / 'net.state_dict.pt')!r}) rebuilds the model" \
           in message, message

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    torch.save({"epoch": 3, "model": model, "state_dict": model.state_dict()}, tmp_path / "both.pt")
    message = _refusal("convert", str(tmp_path / "both.pt"), "-o", str(tmp_path / "out.safetensors"))
    assert "with the library that defines its classes installed, import torch; obj = torch.load(" in message
    assert not (tmp_path / "out.safetensors").exists()


def test_a_sharded_lightning_fabric_checkpoint_names_fabrics_consolidation(tmp_path: Path) -> None:
    """fabric.save("ckpt", {"model": model, "optimizer": optimizer, "iter": 10}) under FSDPStrategy's default
    state_dict_type="sharded": the modules and optimizers as DCP shards, the other entries in meta.pt. It was named
    a Trainer checkpoint with the Trainer's script (lightning.pytorch.utilities.consolidate_checkpoint), which
    renames "model" to "state_dict" for the Trainer; Fabric's is lightning.fabric.utilities.consolidate_checkpoint."""
    import warnings

    import torch.distributed.checkpoint as dcp

    folder = tmp_path / "step-10.ckpt"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... assuming a single process"
        dcp.save({"model": {"l1.weight": torch.randn(16, 8)}, "optimizer": {"state": {}, "param_groups": []}},
                 checkpoint_id=str(folder), no_dist=True)
    torch.save({"iter": 10, "hparams": {"lr": 3e-4}}, folder / "meta.pt")
    for command in ("inspect", "convert"):
        message = _refusal(command, str(folder), *(["-o", str(tmp_path / "out")] if command == "convert" else []))
        assert "a Lightning Fabric checkpoint saved sharded (fabric.save with FSDPStrategy" in message, message
        assert f"python -m lightning.fabric.utilities.consolidate_checkpoint {folder}" in message, message
        assert "lightning.pytorch" not in message, message

    # The Trainer's own (its meta.pt holds pytorch-lightning_version) keeps the Trainer's script.
    torch.save({"epoch": 0, "global_step": 10, "pytorch-lightning_version": "2.4.0", "loops": {}}, folder / "meta.pt")
    message = _refusal("inspect", str(folder))
    assert f"python -m lightning.pytorch.utilities.consolidate_checkpoint {folder}" in message, message


def test_planning_a_folder_whose_weights_from_pretrained_does_not_look_for_says_so(tmp_path: Path) -> None:
    """A Mistral repo fetched with consolidated.safetensors (Mistral's own names) and params.json but not the HF
    model.safetensors beside config.json, and a torchtune output (hf_model_0001_0.pt beside config.json): the plan
    said "fits", silent that from_pretrained(folder) finds no weights there and raises, which diff-keys says."""
    from safetensors.torch import save_file

    mistral = tmp_path / "Mistral-7B-v0.3"
    mistral.mkdir()
    save_file({"tok_embeddings.weight": torch.randn(32, 8), "layers.0.attention.wq.weight": torch.randn(8, 8),
               "norm.weight": torch.ones(8), "output.weight": torch.randn(32, 8)},
              str(mistral / "consolidated.safetensors"))
    (mistral / "params.json").write_text(json.dumps({"dim": 8, "n_layers": 1, "head_dim": 4, "hidden_dim": 16,
                                                     "n_heads": 2, "n_kv_heads": 2, "vocab_size": 32}))
    (mistral / "config.json").write_text(json.dumps({**_LLAMA_CONFIG, "model_type": "mistral",
                                                     "architectures": ["MistralForCausalLM"]}))
    torchtune = tmp_path / "full-ft"
    torchtune.mkdir()
    torch.save({"model.embed_tokens.weight": torch.randn(32, 8)}, torchtune / "hf_model_0001_0.pt")
    (torchtune / "config.json").write_text(json.dumps(_LLAMA_CONFIG))
    for folder, read in ((mistral, "consolidated.safetensors"), (torchtune, "hf_model_0001_0.pt")):
        code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
        assert code == 0, data
        assert f"from_pretrained(folder) looks for model.safetensors or pytorch_model.bin (or their sharded index) " \
               f"and raises here: the weights read are {read}; planned as the model config.json describes" \
               in " ".join(data["warnings"]), data["warnings"]

    # Where from_pretrained finds its file, nothing is said; nor of an adapter beside its base's config (axolotl,
    # unsloth), which PEFT loads onto the base it names.
    (mistral / "consolidated.safetensors").rename(mistral / "model.safetensors")
    adapter = tmp_path / "lora-out"
    adapter.mkdir()
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(4, 8),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(8, 4)},
              str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"],
                                                             "base_model_name_or_path": "org/llama"}))
    (adapter / "config.json").write_text(json.dumps(_LLAMA_CONFIG))
    # Nor of a dtype variant alone, which the reader's warning already says from_pretrained reads with variant=.
    variant = tmp_path / "fp16-only"
    variant.mkdir()
    save_file({"model.embed_tokens.weight": torch.randn(32, 8).half()}, str(variant / "model.fp16.safetensors"))
    (variant / "config.json").write_text(json.dumps(_LLAMA_CONFIG))
    for folder in (mistral, adapter, variant):
        code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
        assert code == 0 and not any("from_pretrained(folder) looks for" in w for w in data["warnings"]), data


def _dcp_save(folder: Path, state: dict[str, object]) -> None:
    import warnings

    import torch.distributed.checkpoint as dcp

    folder.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... assuming a single process"
        dcp.save(state, checkpoint_id=str(folder), no_dist=True)


def test_one_file_of_a_distributed_checkpoint_and_a_run_of_step_folders_say_what_they_are(tmp_path: Path) -> None:
    """torchtitan saves checkpoint/step-N/ (__0_0.distcp ... and .metadata). Named alone, __0_0.distcp (several
    torch.save archives back to back) was called "suspicious: ... the archive shows different contents to
    different readers", and .metadata "suspicious: torch.distributed.checkpoint.metadata.Metadata (unknown...)";
    the checkpoint/ folder of steps was said to hold "the model's weights ... (FSDP's sharded state dict):
    accelerate merge-weights", accelerate's merge of its own single-model folder."""
    steps = tmp_path / "checkpoint"
    for step in (2, 10):
        _dcp_save(steps / f"step-{step}", {"model": {"tok_embeddings.weight": torch.randn(32, 8)},
                                           "train_state": {"step": torch.tensor(step)}})
    for name, what in (("__0_0.distcp", "one rank's shard"), (".metadata", "the metadata")):
        for command in ("inspect", "diff-keys"):
            args = (command, str(steps / "step-10" / name)) + ((str(steps / "step-2" / name),)
                                                              if command == "diff-keys" else ())
            message = _refusal(*args)
            assert f"this is {what}" in message and "of a torch.distributed.checkpoint (DCP) folder" in message
            assert "suspicious" not in message, message
            assert (f"dcp_to_torch_save({str(steps / 'step-10')!r}, "
                    f"{str(steps / 'step-10.state_dict.pt')!r})") in message, message

    message = _refusal("inspect", str(steps))
    assert "its subfolders step-2/, step-10/ are torch.distributed.checkpoint (DCP) folders" in message, message
    assert f"dcp_to_torch_save({str(steps / 'step-10')!r}, {str(steps / 'step-10.state_dict.pt')!r})" in message
    assert "accelerate merge-weights" not in message, message


def test_an_mlx_convolution_against_pytorchs_is_the_same_kernel_with_channels_last(tmp_path: Path) -> None:
    """mlx-examples' whisper conversion writes weights.safetensors with each Conv1d weight as MLX holds it,
    (out, kernel, in), where openai-whisper's .pt has PyTorch's (out, in, kernel). diff-keys said "same name,
    different shape: the architecture differs"."""
    from safetensors.torch import save_file

    mlx = tmp_path / "whisper-tiny-mlx"
    mlx.mkdir()
    conv = torch.randn(8, 80, 3)
    save_file({"encoder.conv1.weight": conv.movedim(1, -1).contiguous().half(), "encoder.conv1.bias": torch.zeros(8),
               "encoder.blocks.0.attn.query.weight": torch.randn(8, 8)}, str(mlx / "weights.safetensors"),
              metadata={"format": "mlx"})
    (mlx / "config.json").write_text(json.dumps({"n_mels": 80, "n_audio_state": 8, "n_audio_layer": 1}))
    torch.save({"dims": {"n_mels": 80, "n_audio_state": 8, "n_audio_layer": 1},
                "model_state_dict": {"encoder.conv1.weight": conv.half(), "encoder.conv1.bias": torch.zeros(8),
                                     "encoder.blocks.0.attn.query.weight": torch.randn(8, 8)}}, tmp_path / "tiny.pt")
    for a, b, last, first in ((mlx, tmp_path / "tiny.pt", "A", "B"), (tmp_path / "tiny.pt", mlx, "B", "A")):
        code, data = run_json("diff-keys", str(a), str(b))
        assert code == 1, data
        [row] = data["mismatched"]
        assert (row["name"], row["reason"], row["severity"]) == ("encoder.conv1.weight", "channels-last", "error")
        assert f"the same kernel, input channels last in {last} (as MLX stores convolutions), second in {first} " \
               f"(PyTorch's order); torch.movedim(w, -1, 1) turns {last}'s into {first}'s" in row["detail"], row
    assert torch.equal(conv.movedim(1, -1).movedim(-1, 1), conv)  # what the detail says, checked


def test_a_params_json_or_generation_config_given_as_the_source_says_what_it_is(tmp_path: Path) -> None:
    """Tab-completing to params.json in a Mistral folder (or to generation_config.json) said only "JSON file is
    neither an index (weight_map) nor a model config", where the other side files of a model folder are named."""
    from safetensors.torch import save_file

    folder = tmp_path / "Mistral-7B-v0.3"
    folder.mkdir()
    save_file({"tok_embeddings.weight": torch.randn(32, 8)}, str(folder / "consolidated.safetensors"))
    (folder / "params.json").write_text(json.dumps({"dim": 8, "n_layers": 1, "n_heads": 2, "vocab_size": 32}))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    message = _refusal("inspect", str(folder / "params.json"))
    assert "(params.json, the model's shape for Meta's and Mistral's own code, shipped beside their consolidated " \
           "weights); point at the weights beside it (consolidated.safetensors)" in message, message
    message = _refusal("plan-devices", str(folder / "generation_config.json"), "--gpu", "1GB")
    assert "(a generation config: decoding settings)" in message, message


def test_a_controlnet_saved_with_its_whole_stable_diffusion_model_says_which_part_loads(tmp_path: Path) -> None:
    """ControlNet 1.0's control_sd15_canny.pth holds the SD 1.5 model it was trained on (model.diffusion_model,
    first_stage_model, cond_stage_model) beside control_model.*: 5.7 GB counted as the ControlNet, though every
    loader of it reads control_model.* alone."""
    state = {"model.diffusion_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3),
             "first_stage_model.encoder.conv_in.weight": torch.randn(8, 3, 3, 3),
             "control_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3),
             "control_model.zero_convs.0.0.weight": torch.zeros(8, 8, 1, 1)}
    torch.save(state, tmp_path / "control_sd15_canny.pth")
    code, data = run_json("inspect", str(tmp_path / "control_sd15_canny.pth"))
    assert code == 0 and data["num_params"] == sum(v.numel() for v in state.values()), data
    assert "the file holds a whole Stable Diffusion checkpoint beside its ControlNet: control_model.* is the " \
           "ControlNet (2 tensors, 352 parameters), the rest the model it was trained on; A1111's ControlNet " \
           "extension, ComfyUI and diffusers' ControlNetModel.from_single_file read control_model.* alone" \
           in data["warnings"], data["warnings"]

    # A ControlNet alone (control_v11p_sd15_canny.pth) says nothing of the kind.
    torch.save({k: v for k, v in state.items() if k.startswith("control_model.")}, tmp_path / "control_v11.pth")
    code, data = run_json("inspect", str(tmp_path / "control_v11.pth"))
    assert code == 0 and not any("ControlNet" in w for w in data["warnings"]), data["warnings"]
