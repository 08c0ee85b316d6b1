"""A thirty-first round: third-party files no earlier round covered, run through the commands that apply.

SuperGradients' training checkpoints (YOLO-NAS and the other models of Deci's Trainer: ckpt_best.pth, ckpt_latest.pth,
ckpt_epoch_N.pth). super-gradients is not installed here: its files are written as its own code saves them
(src/super_gradients/training/sg_trainer/sg_trainer.py, Trainer._save_checkpoint: `{"net", "acc", "epoch",
"metrics", "packages", "optimizer_state_dict", "scaler_state_dict", "ema_net", "processing_params", ...}`, the
weights-only `ckpt_latest_weights_only.pth` as `{"net"}`) and read as its models.get(checkpoint_path=...) reads them
(`load_ema_as_net = "ema_net" in read_ckpt_state_dict(...)`: the EMA whenever the file holds one).

RT-DETR's solver checkpoints (RT-DETR, RT-DETRv2, D-FINE and DEIM, which grew from it). None is installed: the file is
written as lyuwenyu/RT-DETR's rtdetrv2_pytorch/src/solver/_solver.py saves it (BaseSolver.state_dict: `date`,
`last_epoch`, then the state_dict() of each attribute that has one: model, criterion, postprocessor, ema, scaler,
optimizer, lr_scheduler; ModelEMA.state_dict is `dict(module=..., updates=..., warmups=...)`) and read as its
load_tuning_state and tools/export_onnx.py read it (`state["ema"]["module"] if "ema" in state else state["model"]`).

MMEngine checkpoints saved with EMAHook (MMDetection 3, MMPretrain, MMPose 1): mmengine is not installed; the file is
written as Runner.save_checkpoint (`meta`, `state_dict`, `message_hub`, `optimizer`, `param_schedulers`) and
mmengine/hooks/ema_hook.py's before_save_checkpoint write it: `ema_state_dict` is the EMA model's state_dict (`steps`,
then `module.<name>`), then _swap_ema_state_dict swaps each `module.<name>` value with `state_dict[<name>]`.

DiT's train.py checkpoints and those of the repos grown from it (SiT, Latte): none is installed; the file is written as
DiT's train.py saves it (`{"model": model.module.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
"args": args}`, the EMA a deepcopy of the model, args an argparse.Namespace) and read as SiT's download.py find_model
reads it (`if "ema" in checkpoint: checkpoint = checkpoint["ema"]`; Latte's and later DiT's the same).

open_clip's training checkpoints (epoch_N.pt): open_clip is not installed; the file is written as its training's
main.py saves it (`{"epoch", "name", "state_dict": the DDP model's state dict, every name `module.`-prefixed,
"optimizer", "scaler"}`) and read as its factory.load_state_dict reads it (`state_dict`, then `{k[7:]: v ...}` when the
first name starts with `module`).

Stable Audio Open (stable-audio-tools): not installed; its repo's model.safetensors holds the conditioned diffusion
wrapper's names (`model.model.*` the DiT, `pretransform.model.*` the autoencoder, `conditioner.conditioners.*` the T5
and seconds embedders) beside model_config.json (`"model_type": "diffusion_cond"`), and
stable_audio_tools/models/pretrained.py's get_pretrained_model downloads model_config.json and one model.safetensors
(else model.ckpt) and loads it with utils.load_ckpt_state_dict: no index.

rosinality's stylegan2-pytorch: not installed; the file is written as its train.py saves it (`{"g", "d", "g_ema",
"g_optim", "d_optim", "args", "ada_aug_p"}`, g_ema the running average of g, args an argparse.Namespace) and read as its
generate.py reads it (`g_ema.load_state_dict(checkpoint["g_ema"])`).

HiFi-GAN's (jik876/hifi-gan) and BigVGAN's training saves: not installed; written as their train.py saves them, the
generator alone in g_<step> (`{"generator"}`) and the rest in do_<step> (`{"mpd", "msd" (BigVGAN: "mrd"), "optim_g",
"optim_d", "steps", "epoch"}`); their inference.py loads `checkpoint["generator"]` from the g_ file.

suno's Bark checkpoints (text_2.pt ...): the bark package is not installed; the file is written as its training saved it
(nanoGPT's `{"model_args", "model", "iter_num", "best_val_loss", "config"}`, the names under torch.compile's
`_orig_mod.`), as transformers' models/bark/convert_suno_to_hf.py reads it (it strips `_orig_mod.` and renames every key
by its new_layer_name_dict); B is transformers 5.25's own BarkSemanticModel, saved by save_pretrained.
"""

from __future__ import annotations

import argparse
import json
from collections import OrderedDict
from pathlib import Path

import torch

from tests.helpers import run_cli, run_json


def _super_gradients_state(seed: int) -> OrderedDict[str, torch.Tensor]:
    """A few of YOLO-NAS' names (its stem, a head's classifier), a BatchNorm's counter among them."""
    generator = torch.Generator().manual_seed(seed)
    return OrderedDict({
        "backbone.stem.conv.rbr_dense.conv.weight": torch.randn(8, 3, 3, 3, generator=generator),
        "backbone.stem.conv.rbr_dense.bn.weight": torch.rand(8, generator=generator) + 0.5,
        "backbone.stem.conv.rbr_dense.bn.running_mean": torch.randn(8, generator=generator),
        "backbone.stem.conv.rbr_dense.bn.num_batches_tracked": torch.tensor(120),
        "heads.head1.cls_pred.weight": torch.randn(4, 8, 1, 1, generator=generator),
        "heads.head1.cls_pred.bias": torch.randn(4, generator=generator)})


def _super_gradients_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Trainer._save_checkpoint's state with EMA on: the raw weights under `net`, ModelEMA's copy under `ema_net`."""
    net, ema = _super_gradients_state(0), _super_gradients_state(1)
    torch.save({
        "net": net, "acc": 0.4215, "epoch": 11,
        "metrics": {"tracked_metric_name": "mAP@0.50", "valid": {"mAP@0.50": 0.4215}, "train": {"PPYoloELoss": 1.9}},
        "packages": {"torch": "2.1.0", "super-gradients": "3.7.1"},
        "optimizer_state_dict": {"state": {0: {"momentum_buffer": torch.zeros(8, 3, 3, 3)}},
                                 "param_groups": [{"lr": 0.0002, "params": [0]}]},
        "scaler_state_dict": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                              "_growth_tracker": 0},
        "ema_net": ema,
        "processing_params": {"class_names": ["cat", "dog"], "iou": 0.7, "conf": 0.25},
        "torch_scheduler_state_dict": None}, path)
    return net, ema


def test_a_super_gradients_checkpoint_reads_the_ema_its_models_get_loads(tmp_path: Path) -> None:
    """`net` came first in the key search and was read, silently (`ema_net` one "other entry" among nine): inspect
    counted, and convert wrote, the raw training weights, where SuperGradients' models.get(checkpoint_path=...) loads
    `ema_net` whenever the file holds it."""
    from safetensors.torch import load_file

    path = tmp_path / "ckpt_best.pth"
    net, ema = _super_gradients_checkpoint(path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "ema_net" and data["num_tensors"] == len(ema), data
    assert any("a SuperGradients training checkpoint" in w and "ema_net is read" in w and "--key net" in w
               for w in data["warnings"]), data["warnings"]
    assert any(entry.startswith("net (a state dict of 6 tensors") for entry in data["other_entries"])
    out = tmp_path / "yolo_nas.safetensors"
    result = run_cli("convert", str(path), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    written = load_file(out)
    assert set(written) == set(ema) and all(torch.equal(written[name], ema[name]) for name in ema)
    assert not torch.equal(written["heads.head1.cls_pred.weight"], net["heads.head1.cls_pred.weight"])
    # --key net reads the training weights, and says nothing of the EMA.
    code, data = run_json("inspect", str(path), "--key", "net")
    assert code == 0 and data["nested_key"] == "net" and not any("SuperGradients" in w for w in data["warnings"])
    # diff-keys of the EMA against the weights-only save of the same run: the same names, other values.
    weights_only = tmp_path / "ckpt_latest_weights_only.pth"
    torch.save({"net": net}, weights_only)
    code, data = run_json("diff-keys", str(path), str(weights_only), "--values")
    assert code == 0 and data["matched"] == len(net) and not data["missing"] and not data["unexpected"], data
    assert any("ema_net is read" in w for w in data["warnings"]), data["warnings"]


def test_a_net_beside_an_ema_net_of_another_trainer_keeps_the_key_order(tmp_path: Path) -> None:
    """Without SuperGradients' acc and epoch beside them, `net` and `ema_net` are another trainer's: `net` is read,
    as before, and nothing names SuperGradients."""
    path = tmp_path / "checkpoint.pth"
    torch.save({"net": _super_gradients_state(0), "ema_net": _super_gradients_state(1)}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "net" and not any("SuperGradients" in w for w in data["warnings"])


def _rt_detr_state(offset: float) -> OrderedDict[str, torch.Tensor]:
    """A few of RT-DETR's names (its PResNet stem, a decoder score head)."""
    generator = torch.Generator().manual_seed(7)
    return OrderedDict({
        "backbone.conv1.conv1_1.conv.weight": torch.randn(8, 3, 3, 3, generator=generator) + offset,
        "backbone.conv1.conv1_1.norm.weight": torch.ones(8) + offset,
        "backbone.conv1.conv1_1.norm.running_var": torch.ones(8),
        "decoder.dec_score_head.0.weight": torch.randn(4, 8, generator=generator) + offset,
        "decoder.dec_score_head.0.bias": torch.zeros(4) + offset})


def test_an_rt_detr_checkpoint_reads_the_ema_its_export_loads(tmp_path: Path) -> None:
    """`model` came first in the key search and was read, silently, the EMA shown as "ema (dict, 3 entries)":
    inspect counted, and convert wrote, the raw training weights, where RT-DETR's export and fine-tuning read
    `ema.module` whenever the file holds `ema`."""
    from safetensors.torch import load_file

    model, ema = _rt_detr_state(0.0), _rt_detr_state(0.5)
    path = tmp_path / "checkpoint0071.pth"
    torch.save({"date": "2024-07-01T10:00:00", "last_epoch": 71, "model": model, "criterion": {},
                "postprocessor": {}, "ema": {"module": ema, "updates": 8000, "warmups": 2000},
                "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                           "_growth_tracker": 0},
                "optimizer": {"state": {0: {"step": torch.tensor(100.0), "exp_avg": torch.zeros(8, 3, 3, 3)}},
                              "param_groups": [{"lr": 0.0001, "params": [0]}]},
                "lr_scheduler": {"milestones": {1000: 1}, "last_epoch": 71}}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "ema.module" and data["num_tensors"] == len(ema), data
    assert any("an RT-DETR / D-FINE / DEIM training checkpoint" in w and "ema.module is read" in w
               and "--key model" in w for w in data["warnings"]), data["warnings"]
    out = tmp_path / "rtdetr.safetensors"
    result = run_cli("convert", str(path), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    written = load_file(out)
    assert set(written) == set(ema) and all(torch.equal(written[name], ema[name]) for name in ema)
    code, data = run_json("inspect", str(path), "--key", "model")
    assert code == 0 and data["nested_key"] == "model" and not any("RT-DETR" in w for w in data["warnings"])
    # A released file of the EMA alone was read right before the fix, and still is, without the training note.
    released = tmp_path / "rtdetrv2_r18vd_120e_coco.pth"
    torch.save({"ema": {"module": ema, "updates": 8000}}, released)
    code, data = run_json("inspect", str(released))
    assert code == 0 and data["nested_key"] == "ema.module" and not any("RT-DETR" in w for w in data["warnings"])
    # A model beside an `ema` of another kind (no last_epoch, no updates) keeps the key order.
    other = tmp_path / "other.pth"
    torch.save({"model": model, "ema": {"module": ema}}, other)
    code, data = run_json("inspect", str(other))
    assert code == 0 and data["nested_key"] == "model" and not any("RT-DETR" in w for w in data["warnings"])


def test_an_mmengine_ema_hook_checkpoint_says_ema_state_dict_holds_the_weights_as_trained(tmp_path: Path) -> None:
    """inspect listed ema_state_dict as "a state dict of 6 tensors: pick it with --key" and convert said "--key
    ema_state_dict writes it instead", nothing else: by its name the EMA, yet EMAHook swapped the averaged weights into
    state_dict (which is read, rightly) and left the weights as trained in ema_state_dict."""
    generator = torch.Generator().manual_seed(3)
    trained = OrderedDict({"backbone.conv1.weight": torch.randn(8, 3, 3, 3, generator=generator),
                           "backbone.bn1.weight": torch.ones(8), "backbone.bn1.num_batches_tracked": torch.tensor(10),
                           "bbox_head.cls_convs.0.weight": torch.randn(4, 8, 1, 1, generator=generator)})
    averaged = OrderedDict({name: tensor + 0.5 if tensor.is_floating_point() else tensor
                            for name, tensor in trained.items()})
    # EMAHook.before_save_checkpoint: the EMA model's state dict, then the swap.
    ema_state: OrderedDict[str, torch.Tensor] = OrderedDict({"steps": torch.tensor(2000)})
    ema_state.update({f"module.{name}": tensor for name, tensor in averaged.items()})
    state = OrderedDict(trained)
    for name in list(ema_state):
        if name.startswith("module."):
            ema_state[name], state[name[7:]] = state[name[7:]], ema_state[name]
    path = tmp_path / "epoch_300.pth"
    torch.save({"meta": {"mmengine_version": "0.10.4", "epoch": 300, "iter": 12000,
                         "dataset_meta": {"classes": ("cat", "dog")}},
                "state_dict": state, "message_hub": {"log_scalars": {}, "runtime_info": {"epoch": 300}},
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": []}]},
                "param_schedulers": [{"last_epoch": 300}], "ema_state_dict": ema_state}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "state_dict", data
    notes = [w for w in data["warnings"] if "an MMEngine checkpoint saved with EMAHook" in w]
    assert len(notes) == 1 and "state_dict is read, the averaged weights" in notes[0] \
        and "ema_state_dict, despite its name, holds the weights as trained" in notes[0], data["warnings"]
    result = run_cli("convert", str(path), "-o", str(tmp_path / "model.safetensors"), "--json")
    assert result.exit_code == 0 and "ema_state_dict, despite its name" in result.stderr, result.stderr
    # What the note says, checked on the file: ema_state_dict's values are the weights as trained.
    saved = torch.load(path, weights_only=True)
    assert torch.equal(saved["ema_state_dict"]["module.backbone.conv1.weight"], trained["backbone.conv1.weight"])
    # An ema_state_dict of other names (not EMAHook's swap) gets no such note.
    other = tmp_path / "other.pth"
    unswapped = {"steps": torch.tensor(1), "module.head.weight": torch.ones(2)}
    torch.save({"meta": {}, "state_dict": dict(trained), "ema_state_dict": unswapped}, other)
    code, data = run_json("inspect", str(other))
    assert code == 0 and not any("EMAHook" in w for w in data["warnings"]), data["warnings"]


def test_a_dit_checkpoint_reads_the_ema_its_sampling_loads(tmp_path: Path) -> None:
    """`model` came first in the key search and was read, silently (`ema` one "other entry"): inspect counted, and
    convert wrote, the raw training weights, where DiT's / SiT's sample.py loads `ema` whenever the file holds it."""
    from safetensors.torch import load_file

    generator = torch.Generator().manual_seed(5)
    model = OrderedDict({"pos_embed": torch.zeros(1, 4, 8),
                         "x_embedder.proj.weight": torch.randn(8, 4, 2, 2, generator=generator),
                         "t_embedder.mlp.0.weight": torch.randn(8, 16, generator=generator),
                         "y_embedder.embedding_table.weight": torch.randn(11, 8, generator=generator),
                         "blocks.0.attn.qkv.weight": torch.randn(24, 8, generator=generator),
                         "final_layer.linear.weight": torch.zeros(16, 8)})
    ema = OrderedDict({name: tensor + 0.25 for name, tensor in model.items()})
    args = argparse.Namespace(model="DiT-XL/2", image_size=256, num_classes=1000, global_batch_size=256, vae="ema")
    path = tmp_path / "0400000.pt"
    torch.save({"model": model, "ema": ema, "opt": {"state": {}, "param_groups": [{"lr": 0.0001, "params": []}]},
                "args": args}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "ema" and data["num_tensors"] == len(ema), data
    assert any("a DiT / SiT / Latte training checkpoint" in w and "ema is read" in w and "--key model" in w
               for w in data["warnings"]), data["warnings"]
    out = tmp_path / "dit.safetensors"
    result = run_cli("convert", str(path), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    written = load_file(out)
    assert set(written) == set(ema) and all(torch.equal(written[name], ema[name]) for name in ema)
    code, data = run_json("inspect", str(path), "--key", "model")
    assert code == 0 and data["nested_key"] == "model" and not any("DiT" in w for w in data["warnings"])
    # Without DiT's `opt`, a {model, ema} (DeiT's, ConvNeXt's tools load model) keeps the key order.
    other = tmp_path / "checkpoint.pth"
    torch.save({"model": model, "ema": ema, "optimizer": {}}, other)
    code, data = run_json("inspect", str(other))
    assert code == 0 and data["nested_key"] == "model" and not any("DiT" in w for w in data["warnings"])


def test_an_open_clip_training_checkpoint_says_open_clips_loader_strips_the_ddp_prefix(tmp_path: Path) -> None:
    """inspect said "strip the prefix first" of open_clip's own epoch_N.pt, which open_clip's create_model(...,
    pretrained=...) reads as it is: its loader strips `module.` itself, as GroundingDINO's does (already said)."""
    generator = torch.Generator().manual_seed(9)
    state = {"positional_embedding": torch.randn(5, 16, generator=generator), "logit_scale": torch.tensor(4.6052),
             "text_projection": torch.randn(16, 8, generator=generator),
             "visual.conv1.weight": torch.randn(16, 3, 4, 4, generator=generator),
             "visual.proj": torch.randn(16, 8, generator=generator),
             "token_embedding.weight": torch.randn(50, 16, generator=generator), "ln_final.weight": torch.ones(16)}
    path = tmp_path / "epoch_32.pt"
    torch.save({"epoch": 32, "name": "2024_05_01-10_00_00-model_ViT-B-32-lr_0.0005-b_256-j_8-p_amp",
                "state_dict": {f"module.{name}": tensor for name, tensor in state.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.0, "params": []}]},
                "scaler": {"scale": 65536.0}}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "state_dict" and data["num_tensors"] == len(state), data
    said = [w for w in data["warnings"] if w.startswith("every tensor name starts with module.")]
    assert len(said) == 1 and "an open_clip training checkpoint (epoch_N.pt): open_clip's own loader strips the " \
        "prefix itself" in said[0] and "GroundingDINO" not in said[0], data["warnings"]
    # A DDP save of another model keeps the plain advice.
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"module.encoder.weight": torch.ones(2, 2), "module.logit_scale": torch.ones(())}}, other)
    code, data = run_json("inspect", str(other))
    assert code == 0 and not any("open_clip" in w for w in data["warnings"]), data["warnings"]


def test_sharding_a_stable_audio_open_model_says_stable_audio_tools_reads_one_file(tmp_path: Path) -> None:
    """shard wrote model-0000i-of-0000N.safetensors and an index for Stable Audio Open's folder without a word, where
    stable-audio-tools loads one model.safetensors (or model.ckpt) and reads no index."""
    from safetensors.torch import save_file

    folder = tmp_path / "stable-audio-open-1.0"
    folder.mkdir()
    generator = torch.Generator().manual_seed(11)
    save_file({"model.model.transformer.project_in.weight": torch.randn(32, 64, generator=generator),
               "model.model.transformer.layers.0.self_attn.to_qkv.weight": torch.randn(96, 32, generator=generator),
               "pretransform.model.encoder.layers.0.weight_v": torch.randn(16, 2, 7, generator=generator),
               "conditioner.conditioners.seconds_start.embedder.embedding.1.weight":
                   torch.randn(64, 257, generator=generator),
               "conditioner.conditioners.prompt.model.shared.weight": torch.randn(100, 32, generator=generator)},
              folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "model_config.json").write_text(json.dumps(
        {"model_type": "diffusion_cond", "sample_rate": 44100, "audio_channels": 2,
         "model": {"pretransform": {"type": "autoencoder"}, "diffusion": {"type": "dit"}}}))
    out = tmp_path / "sharded"
    code, data = run_json("shard", str(folder), "-o", str(out), "--max", "40KB")
    assert code == 0 and len(data["plan"]["shards"]) > 1, data
    assert data["plan"]["index"] == "model.safetensors.index.json", data["plan"]
    said = [w for w in data["warnings"] if w.startswith("a stable-audio-tools model")]
    assert len(said) == 1 and "load one model.safetensors or model.ckpt beside model_config.json" in said[0] \
        and "cannot load these shards" in said[0], data["warnings"]
    assert (out / "model_config.json").is_file() and (out / "model.safetensors.index.json").is_file()
    # One file out (no index) is what stable-audio-tools reads: nothing to say.
    code, data = run_json("shard", str(folder), "-o", str(tmp_path / "whole"), "--max", "10GB")
    assert code == 0 and not any("stable-audio-tools" in w for w in data["warnings"]), data["warnings"]


def test_a_stylegan2_checkpoint_reads_the_averaged_generator_its_generate_py_loads(tmp_path: Path) -> None:
    """`g` came first (no usual key matched, so the first state dict in the file's order) and was read, silently:
    inspect counted, and convert wrote, the raw generator, where generate.py and the models built on it load g_ema."""
    from safetensors.torch import load_file

    generator = torch.Generator().manual_seed(13)

    def synthesis(offset: float) -> dict[str, torch.Tensor]:
        return {"style.1.weight": torch.randn(8, 8, generator=generator) + offset, "style.1.bias": torch.zeros(8),
                "input.input": torch.randn(1, 8, 4, 4, generator=generator) + offset,
                "conv1.conv.weight": torch.randn(1, 8, 8, 3, 3, generator=generator) + offset,
                "conv1.noise.weight": torch.zeros(1), "noises.noise_0": torch.randn(1, 1, 4, 4, generator=generator)}

    raw, averaged = synthesis(0.0), synthesis(0.5)
    discriminator = {"convs.0.0.weight": torch.randn(8, 3, 1, 1, generator=generator),
                     "final_linear.1.weight": torch.randn(1, 8, generator=generator)}
    path = tmp_path / "550000.pt"
    torch.save({"g": raw, "d": discriminator, "g_ema": averaged, "g_optim": {"state": {}, "param_groups": []},
                "d_optim": {"state": {}, "param_groups": []},
                "args": argparse.Namespace(size=256, batch=16, r1=10.0, mixing=0.9), "ada_aug_p": 0.0}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "g_ema" and data["num_tensors"] == len(averaged), data
    assert any("a StyleGAN2 (stylegan2-pytorch) training checkpoint: g_ema is read" in w and "--key g reads" in w
               for w in data["warnings"]), data["warnings"]
    out = tmp_path / "g_ema.safetensors"
    result = run_cli("convert", str(path), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    written = load_file(out)
    assert set(written) == set(averaged) and all(torch.equal(written[n], averaged[n]) for n in averaged)
    code, data = run_json("inspect", str(path), "--key", "g")
    assert code == 0 and data["nested_key"] == "g" and not any("StyleGAN2" in w for w in data["warnings"])
    # A g and g_ema of other names (not one generator's average) keep the key order.
    other = tmp_path / "other.pt"
    torch.save({"g": raw, "d": discriminator, "g_ema": discriminator}, other)
    code, data = run_json("inspect", str(other))
    assert code == 0 and data["nested_key"] == "g" and not any("StyleGAN2" in w for w in data["warnings"])


def test_a_hifigan_discriminator_state_says_the_generator_is_in_the_g_file_beside_it(tmp_path: Path) -> None:
    """inspect of HiFi-GAN's do_<step> read its first state dict, `mpd`, a discriminator, as "the state dict" of "a
    training checkpoint", and nothing said that the generator inference loads is in g_<step> beside it."""
    generator = torch.Generator().manual_seed(17)
    torch.save({"generator": {"conv_pre.weight_g": torch.ones(16, 1, 1),
                              "conv_pre.weight_v": torch.randn(16, 80, 7, generator=generator)}},
               tmp_path / "g_00250000")
    discriminators = tmp_path / "do_00250000"
    torch.save({"mpd": {"discriminators.0.convs.0.weight_v": torch.randn(32, 1, 5, 1, generator=generator)},
                "msd": {"discriminators.0.convs.0.weight": torch.randn(16, 1, 15, generator=generator)},
                "optim_g": {"state": {}, "param_groups": []}, "optim_d": {"state": {}, "param_groups": []},
                "steps": 250000, "epoch": 312}, discriminators)
    code, data = run_json("inspect", str(discriminators))
    assert code == 0 and data["nested_key"] == "mpd", data
    said = [w for w in data["warnings"] if "a HiFi-GAN / BigVGAN training state" in w]
    assert len(said) == 1 and "mpd is read, a discriminator" in said[0] \
        and f"is in {tmp_path / 'g_00250000'}" in said[0], data["warnings"]
    # The g_ file is read as before, without the note; a do_ file alone says where its g_ file would be.
    code, data = run_json("inspect", str(tmp_path / "g_00250000"))
    assert code == 0 and data["nested_key"] == "generator" and not any("HiFi-GAN" in w for w in data["warnings"])
    (tmp_path / "g_00250000").unlink()
    code, data = run_json("inspect", str(discriminators))
    assert any("is in the g_<step> file saved beside it" in w for w in data["warnings"]), data["warnings"]


def test_a_suno_bark_checkpoint_against_transformers_bark_names_the_converter(tmp_path: Path) -> None:
    """diff-keys of suno's text_2.pt against transformers' BarkSemanticModel offered wte, wpe and ln_f renames ("4 of
    18 keys match"), the blocks "unknown", and no word of convert_suno_to_hf.py, which renames every key."""
    from transformers import BarkSemanticConfig, BarkSemanticModel

    torch.manual_seed(0)
    hidden = 16
    config = BarkSemanticConfig(block_size=32, input_vocab_size=64, output_vocab_size=64, num_layers=2, num_heads=2,
                                hidden_size=hidden, bias=False)
    BarkSemanticModel(config).save_pretrained(tmp_path / "bark_semantic")
    shapes = {"transformer.wte.weight": (64, hidden), "transformer.wpe.weight": (32, hidden)}
    for layer in range(2):
        block = f"transformer.h.{layer}."
        shapes.update({block + "ln_1.weight": (hidden,), block + "attn.c_attn.weight": (48, hidden),
                       block + "attn.c_proj.weight": (hidden, hidden), block + "ln_2.weight": (hidden,),
                       block + "mlp.c_fc.weight": (64, hidden), block + "mlp.c_proj.weight": (hidden, 64)})
    shapes.update({"transformer.ln_f.weight": (hidden,), "lm_head.weight": (64, hidden)})
    state = {f"_orig_mod.{name}": torch.randn(shape) for name, shape in shapes.items()}
    path = tmp_path / "text_2.pt"
    model_args = {"block_size": 32, "input_vocab_size": 64, "output_vocab_size": 64, "n_layer": 2, "n_head": 2,
                  "n_embd": hidden, "dropout": 0.0, "bias": False}
    torch.save({"model_args": model_args, "model": state, "iter_num": 1000, "best_val_loss": torch.tensor(2.1),
                "config": {"batch_size": 8}}, path)
    code, data = run_json("diff-keys", str(path), str(tmp_path / "bark_semantic"))
    assert code == 1, data
    notes = [note for note in data["notes"] if note.startswith("A is in suno's own Bark layout")]
    assert len(notes) == 1 and "convert_suno_to_hf.py" in notes[0] and "new_layer_name_dict" in notes[0], data["notes"]
    # nanoGPT's own names against GPT-2 are no Bark conversion.
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_embd=hidden, n_layer=2, n_head=2, vocab_size=64, n_positions=32)).save_pretrained(
        tmp_path / "gpt2")
    code, data = run_json("diff-keys", str(path), str(tmp_path / "gpt2"))
    assert not any("Bark" in note for note in data["notes"]), data["notes"]
