"""A thirty-second round: what round 31 left, then third-party files no earlier round covered.

open_clip's training checkpoints (epoch_N.pt) against open_clip's own unprefixed weights (open_clip_model.safetensors):
open_clip is not installed; the file is written as its training's main.py saves it (`{"epoch", "name", "state_dict":
the DDP model's state dict, every name `module.`-prefixed, "optimizer", "scaler"}`) and read as its
factory.load_state_dict reads it (`state_dict`, then `{k[7:]: v ...}` when the
first name starts with `module`). Against transformers' CLIPModel the same file needs
convert_clip_original_pytorch_to_hf.py, whose clip.load (openai/CLIP's clip/clip.py: torch.jit.load, else torch.load
as a plain state dict for build_model) reads neither the `state_dict` entry nor the prefix.

Stable Audio Open (stable-audio-tools): not installed; its repo's model.safetensors beside model_config.json
(`"model_type": "diffusion_cond"`, `sample_rate`, `audio_channels`, `sample_size`, `model`), which
stable_audio_tools/models/pretrained.py's get_pretrained_model downloads and models/factory.py's
create_model_from_config builds the model from (its README; Stability-AI/stable-audio-tools' pretrained.py read with
the search tool).

descript-audio-codec (DAC): not installed; weights.pth is written as audiotools' BaseModel.save(path, package=False)
writes it (`{"state_dict": self.state_dict(), "metadata": {"kwargs": the constructor's arguments}}`), the layers named
by nn.Sequential position (dac/model/dac.py: Encoder.block = [WNConv1d, EncoderBlock x4, Snake1d, WNConv1d],
EncoderBlock.block = [ResidualUnit x3, Snake1d, WNConv1d], ResidualUnit.block = [Snake1d, WNConv1d, Snake1d, WNConv1d],
Decoder.model = [WNConv1d, DecoderBlock x4, Snake1d, WNConv1d, Tanh], DecoderBlock.block = [Snake1d,
WNConvTranspose1d, ResidualUnit x3]), every conv under torch's weight_norm (weight_g / weight_v). The tensors are
transformers 5.25's own DacModel's under weight_norm, renamed back by the inverse of transformers'
models/dac/convert_dac_checkpoint.py's MAPPING (read with the search tool: huggingface/transformers), which is what it
converts; B is that DacModel saved by save_pretrained (weight norm folded: one plain weight per conv).

icefall (k2): not installed; epoch-N.pt as icefall/checkpoint.py's save_checkpoint writes it (the test's docstring).

Vocos (gemelo-ai/vocos): not installed; a repo as charactr/vocos-mel-24khz holds it, config.yaml (class_path /
init_args per part) beside pytorch_model.bin, which vocos/pretrained.py's Vocos.from_pretrained downloads by name.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch

from tests.helpers import run_json


def _open_clip_state(seed: int) -> dict[str, torch.Tensor]:
    """A few of open_clip's CLIP names (its own layout, as create_model builds it)."""
    generator = torch.Generator().manual_seed(seed)
    return {"positional_embedding": torch.randn(5, 16, generator=generator), "logit_scale": torch.tensor(4.6052),
            "text_projection": torch.randn(16, 8, generator=generator),
            "visual.conv1.weight": torch.randn(16, 3, 4, 4, generator=generator),
            "visual.proj": torch.randn(16, 8, generator=generator),
            "token_embedding.weight": torch.randn(50, 16, generator=generator), "ln_final.weight": torch.ones(16)}


def test_diff_keys_rates_an_open_clip_training_checkpoints_ddp_prefix_a_warning(tmp_path: Path) -> None:
    """diff-keys rated the `module.` of open_clip's own epoch_N.pt against open_clip's unprefixed weights a
    wrapper-prefix error (exit 1), where open_clip's loader strips it itself (inspect said so since round 31)."""
    from safetensors.torch import save_file

    state = _open_clip_state(9)
    path = tmp_path / "epoch_32.pt"
    torch.save({"epoch": 32, "name": "2024_05_01-10_00_00-model_ViT-B-32-lr_0.0005-b_256-j_8-p_amp",
                "state_dict": {f"module.{name}": tensor for name, tensor in state.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.0, "params": []}]},
                "scaler": {"scale": 65536.0}}, path)
    save_file(state, tmp_path / "open_clip_model.safetensors")
    code, data = run_json("diff-keys", str(path), str(tmp_path / "open_clip_model.safetensors"))
    assert data["matched"] == 0 and len(data["missing"]) == len(state) == len(data["unexpected"]), data
    rows = data["missing"] + data["unexpected"]
    assert {(row["reason"], row["severity"]) for row in rows} == {("wrapper-prefix", "warn")}, rows
    assert all("open_clip's loader strips module." in row["detail"] for row in rows), rows
    said = [note for note in data["notes"] if note.startswith("A is an open_clip training checkpoint")]
    assert len(said) == 1 and f"{len(state)} keys differ from B only by module." in said[0] \
        and "factory.load_state_dict strips itself" in said[0] and "--rename '^module\\.='" in said[0], data["notes"]
    assert code == 0 and data["worst_severity"] == "warn", data
    # The rename is still offered, for another loader.
    assert [r["flag"] for r in data["suggested_renames"]] == ["--rename '^module\\.='"], data["suggested_renames"]
    # A DDP save of another model keeps the error: no loader of its own strips the prefix.
    other, plain = tmp_path / "other.pt", tmp_path / "plain.pt"
    torch.save({"state_dict": {"module.encoder.weight": torch.ones(2, 2), "module.logit_scale": torch.ones(())}}, other)
    torch.save({"encoder.weight": torch.ones(2, 2), "logit_scale": torch.ones(())}, plain)
    code, data = run_json("diff-keys", str(other), str(plain))
    assert code == 1 and {row["severity"] for row in data["missing"]} == {"error"}, data
    assert not any("open_clip" in note for note in data["notes"]), data["notes"]


def test_an_open_clip_training_checkpoint_against_transformers_clip_is_told_its_layout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """open_clip's epoch_N.pt against transformers' CLIPModel: the CLIP layout was not seen under DDP's `module.`, so
    the rename search offered ln_final onto the vision tower's pre_layrnorm and visual.ln_pre onto the text tower's
    final norm (what the layout's note warns of), the rest 'unknown', and no word of the converter, whose clip.load
    reads neither the `state_dict` entry nor the prefix: the note now says to write the bare state dict first."""
    from tests.test_third_party_layouts12 import _openai_clip_state, tiny_clip

    tiny_clip(tmp_path / "hf")
    torch.manual_seed(0)
    state = _openai_clip_state()
    torch.save({"epoch": 32, "name": "run", "state_dict": {f"module.{name}": t for name, t in state.items()},
                "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "epoch_32.pt")
    monkeypatch.chdir(tmp_path)
    code, data = run_json("diff-keys", "epoch_32.pt", "hf")
    assert code == 1, data
    flags = [r["flag"] for r in data["suggested_renames"]]
    assert not any("ln_final" in flag or "ln_pre" in flag for flag in flags), flags
    reasons = {row["name"]: (row["reason"], row["severity"]) for row in data["unexpected"] + data["missing"]}
    assert reasons["module.ln_final.weight"] == reasons["vision_model.pre_layrnorm.weight"] == \
        ("foreign-layout", "error"), reasons
    # logit_scale differs by the prefix alone, but open_clip's loader is no loader of B: still an error.
    assert reasons["module.logit_scale"] == ("wrapper-prefix", "error"), reasons
    notes = " ".join(data["notes"])
    assert "A is in OpenAI CLIP's own layout" in notes and "--checkpoint_path epoch_32-bare.pt " \
        "--pytorch_dump_folder_path epoch_32-hf" in notes, notes
    command = "weightdoctor convert epoch_32.pt -o epoch_32-bare.pt --rename '^module\\.='"
    assert command in notes and "A is an open_clip training checkpoint" not in notes, notes
    # The command as the note gives it writes the plain state dict clip.load reads.
    code, _ = run_json(*command.split()[1:5], "--rename", "^module\\.=")
    bare = torch.load(tmp_path / "epoch_32-bare.pt")
    assert code == 0 and sorted(bare) == sorted(state) and torch.equal(bare["visual.proj"], state["visual.proj"])


def _stable_audio_folder(folder: Path, config: dict[str, object]) -> Path:
    from safetensors.torch import save_file

    folder.mkdir()
    generator = torch.Generator().manual_seed(11)
    save_file({"model.model.transformer.project_in.weight": torch.randn(32, 64, generator=generator),
               "model.model.transformer.layers.0.self_attn.to_qkv.weight": torch.randn(96, 32, generator=generator),
               "pretransform.model.encoder.layers.0.weight_v": torch.randn(16, 2, 7, generator=generator),
               "conditioner.conditioners.prompt.model.shared.weight": torch.randn(100, 32, generator=generator)},
              folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "model_config.json").write_text(json.dumps(config))
    return folder


def test_stable_audio_model_config_is_described_by_inspect_and_plan_devices(tmp_path: Path) -> None:
    """inspect said nothing of Stable Audio Open's model_config.json and plan-devices said only "no config.json":
    stable-audio-tools' own config, which its get_pretrained_model / create_model_from_config read."""
    folder = _stable_audio_folder(tmp_path / "stable-audio-open-1.0", {
        "model_type": "diffusion_cond", "sample_size": 2097152, "sample_rate": 44100, "audio_channels": 2,
        "model": {"pretransform": {"type": "autoencoder"}, "diffusion": {"type": "dit"}, "io_channels": 64}})
    code, data = run_json("inspect", str(folder))
    said = [w for w in data["warnings"] if w.startswith("model_config.json beside the weights")]
    assert code == 0 and data["config"] is None and len(said) == 1, data["warnings"]
    assert "stable-audio-tools' own config (model_type 'diffusion_cond', 44,100 Hz, 2 channels, 2,097,152 " \
        "samples a clip)" in said[0] and "create_model_from_config" in said[0], said
    # The file named, not the folder: the config beside it is found all the same.
    code, data = run_json("inspect", str(folder / "model.safetensors"))
    assert code == 0 and any("stable-audio-tools' own config" in w for w in data["warnings"]), data["warnings"]
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    said = [w for w in data["warnings"] if w.startswith("no config.json")]
    assert code == 0 and len(said) == 1 and said[0].startswith(
        "no config.json (model_config.json beside the weights is stable-audio-tools' own config (model_type "
        "'diffusion_cond'"), data["warnings"]
    # Another library's model_config.json (no stable-audio-tools model_type) is not called one.
    other = _stable_audio_folder(tmp_path / "other", {"model_type": "bert", "hidden_size": 32})
    code, data = run_json("inspect", str(other))
    assert code == 0 and not any("stable-audio" in w for w in data["warnings"]), data["warnings"]
    code, data = run_json("plan-devices", str(other), "--gpu", "1GB")
    assert code == 0 and not any("stable-audio" in w for w in data["warnings"]), data["warnings"]


# convert_dac_checkpoint.py's MAPPING, inverted: transformers' DacModel names -> descript-audio-codec's.
_DAC_POSITION = {"snake1": 0, "conv1": 1, "snake2": 2, "conv2": 3}
_DAC_NAMES = (
    (r"^encoder\.conv1\.", lambda m: "encoder.block.0."), (r"^encoder\.snake1\.", lambda m: "encoder.block.5."),
    (r"^encoder\.conv2\.", lambda m: "encoder.block.6."),
    (r"^encoder\.block\.(\d+)\.res_unit(\d)\.(\w+)\.",
     lambda m: f"encoder.block.{int(m[1]) + 1}.block.{int(m[2]) - 1}.block.{_DAC_POSITION[m[3]]}."),
    (r"^encoder\.block\.(\d+)\.snake1\.", lambda m: f"encoder.block.{int(m[1]) + 1}.block.3."),
    (r"^encoder\.block\.(\d+)\.conv1\.", lambda m: f"encoder.block.{int(m[1]) + 1}.block.4."),
    (r"^decoder\.conv1\.", lambda m: "decoder.model.0."), (r"^decoder\.snake1\.", lambda m: "decoder.model.5."),
    (r"^decoder\.conv2\.", lambda m: "decoder.model.6."),
    (r"^decoder\.block\.(\d+)\.res_unit(\d)\.(\w+)\.",
     lambda m: f"decoder.model.{int(m[1]) + 1}.block.{int(m[2]) + 1}.block.{_DAC_POSITION[m[3]]}."),
    (r"^decoder\.block\.(\d+)\.snake1\.", lambda m: f"decoder.model.{int(m[1]) + 1}.block.0."),
    (r"^decoder\.block\.(\d+)\.conv_t1\.", lambda m: f"decoder.model.{int(m[1]) + 1}.block.1."))


def _dac_pair(tmp_path: Path) -> tuple[Path, Path, int]:
    """descript-audio-codec's weights.pth and transformers' DacModel folder of the same tiny model."""
    from torch.nn.utils import weight_norm
    from transformers import DacConfig, DacModel

    config = DacConfig(encoder_hidden_size=2, downsampling_ratios=[2, 2, 2, 2], decoder_hidden_size=16,
                       n_codebooks=2, codebook_size=8, codebook_dim=4, hidden_size=32, upsampling_ratios=[2, 2, 2, 2])
    torch.manual_seed(0)
    model = DacModel(config)
    model.save_pretrained(tmp_path / "dac_hf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's weight_norm is deprecated; DAC's WNConv1d uses it
        convs = [model.encoder.conv1, model.encoder.conv2, model.decoder.conv1, model.decoder.conv2]
        convs += [p for q in model.quantizer.quantizers for p in (q.in_proj, q.out_proj)]
        blocks = [*((b, b.conv1) for b in model.encoder.block), *((b, b.conv_t1) for b in model.decoder.block)]
        for block, first in blocks:
            units = [getattr(block, f"res_unit{i}") for i in (1, 2, 3)]
            convs += [first, *(conv for unit in units for conv in (unit.conv1, unit.conv2))]
        for conv in convs:
            weight_norm(conv)
    state = {}
    for name, tensor in model.state_dict().items():
        for pattern, replacement in _DAC_NAMES:
            name = re.sub(pattern, replacement, name)
        state[name] = tensor.clone()
    kwargs = {"encoder_dim": 2, "encoder_rates": [2, 2, 2, 2], "latent_dim": None, "decoder_dim": 16,
              "decoder_rates": [2, 2, 2, 2], "n_codebooks": 2, "codebook_size": 8, "codebook_dim": 4,
              "quantizer_dropout": False, "sample_rate": 44100}
    torch.save({"state_dict": state, "metadata": {"kwargs": kwargs}}, tmp_path / "weights.pth")
    return tmp_path / "weights.pth", tmp_path / "dac_hf", len(state)


def test_a_dac_weights_pth_against_transformers_dac_model_names_its_converter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """descript-audio-codec's weights.pth against transformers' DacModel: diff-keys offered 6 prefix renames (12 of
    188 keys), the rest 'unknown', no word of convert_dac_checkpoint.py; with --model-class it said to write the
    state dict on its own (convert), which keeps DAC's names and weight norm: nothing more would load."""
    a, b, count = _dac_pair(tmp_path)
    assert any(name.endswith(".block.1.block.0.block.1.weight_v") for name in torch.load(a)["state_dict"])
    monkeypatch.chdir(tmp_path)
    code, data = run_json("diff-keys", "weights.pth", "dac_hf")
    assert code == 1 and data["total_a"] == count and data["matched"] < 10, data
    said = [note for note in data["notes"] if note.startswith("A is in descript-audio-codec's own layout")]
    assert len(said) == 1, data["notes"]
    assert "convert_dac_checkpoint.py" in said[0] and "--checkpoint_path weights.pth --pytorch_dump_folder_path " \
        "weights-hf --model dac_44khz" in said[0] and "folds weight_g / weight_v into weight" in said[0], said
    # The layout's note in --model-class mode too (from_pretrained renames weight_g / weight_v to parametrizations
    # first), and the training checkpoint's note sends to the converter, not to a plain copy of the state dict.
    code, data = run_json("diff-keys", "weights.pth", "--model-class", "DacModel", "--config", "dac_hf")
    assert any(u["name"].endswith("parametrizations.weight.original1") for u in data["unexpected"]), data["unexpected"]
    assert any(note.startswith("A is in descript-audio-codec's own layout") for note in data["notes"]), data["notes"]
    trained = [note for note in data["notes"] if note.startswith("A is a training checkpoint")]
    assert len(trained) == 1 and trained[0].endswith(
        "its keys are in another layout, so writing the state dict on its own would not do: convert it as the note "
        "above says"), trained
    assert "weightdoctor convert" not in trained[0], trained


def test_an_icefall_checkpoint_says_what_model_avg_is_and_that_decode_averages_two_files(tmp_path: Path) -> None:
    """icefall's epoch-N.pt (k2's recipes): model was read, model_avg shown as "a state dict of 5 tensors: pick it
    with --key" like any other, with no word that it is the running average since training started, nor that
    icefall's decode.py / export.py (--use-averaged-model, their default) load neither entry alone.

    Written as icefall/checkpoint.py's save_checkpoint writes it (read with the search tool: k2-fsa/icefall):
    `{"model", "optimizer", "scheduler", "grad_scaler", "sampler", "model_avg" (float32), **params}`, params an
    AttributeDict of the run's settings (batch_idx_train, best_valid_loss, exp_dir a pathlib.Path, ...)."""
    generator = torch.Generator().manual_seed(3)

    def state() -> dict[str, torch.Tensor]:
        return {"encoder.encoder_embed.conv.0.weight": torch.randn(8, 1, 3, 3, generator=generator),
                "encoder.encoders.0.layers.0.self_attn_weights.in_proj.weight": torch.randn(24, 16,
                                                                                           generator=generator),
                "decoder.embedding.weight": torch.randn(50, 16, generator=generator),
                "joiner.output_linear.weight": torch.randn(50, 16, generator=generator)}

    path = tmp_path / "epoch-29.pt"
    torch.save({"model": state(), "optimizer": {"state": {}, "param_groups": [{"lr": 0.045, "params": [0, 1]}]},
                "scheduler": {"base_lrs": [0.045], "epoch": 29, "batch": 120000},
                "grad_scaler": {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                "growth_interval": 2000, "_growth_tracker": 12},
                "sampler": {"epoch": 29, "world_size": 1, "rank": 0, "seed": 42, "shuffle": True},
                "model_avg": state(), "best_train_loss": 0.21, "best_valid_loss": 0.19, "batch_idx_train": 120000,
                "average_period": 200, "exp_dir": Path("zipformer/exp"), "cur_epoch": 29}, path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "model" and data["num_tensors"] == 4, data
    said = [w for w in data["warnings"] if "an icefall (k2) training checkpoint" in w]
    assert len(said) == 1 and "model_avg beside it is the running average since training started" in said[0] \
        and "--use-averaged-model" in said[0] and "average_checkpoints_with_averaged_model" in said[0], said
    # convert writes model and says the same.
    code, data = run_json("convert", str(path), "-o", str(tmp_path / "model.safetensors"))
    assert code == 0 and any("an icefall (k2) training checkpoint" in w for w in data["warnings"]), data["warnings"]
    # A {model, model_avg} pair without icefall's entries is not called icefall's.
    other = tmp_path / "other.pt"
    torch.save({"model": state(), "model_avg": state(), "epoch": 3}, other)
    code, data = run_json("inspect", str(other))
    assert code == 0 and not any("icefall" in w for w in data["warnings"]), data["warnings"]


_VOCOS_CONFIG = """feature_extractor:
  class_path: vocos.feature_extractors.MelSpectrogramFeatures
  init_args:
    sample_rate: 24000
    n_fft: 16
    hop_length: 4
    n_mels: 10
backbone:
  class_path: vocos.models.VocosBackbone
  init_args:
    input_channels: 10
    dim: 16
    intermediate_dim: 48
    num_layers: 2
head:
  class_path: vocos.heads.ISTFTHead
  init_args:
    dim: 16
    n_fft: 16
    hop_length: 4
"""


def _vocos_folder(folder: Path, config: str) -> Path:
    """A Vocos repo as charactr/vocos-mel-24khz holds it: config.yaml (the class_path / init_args of each part) and
    pytorch_model.bin (a plain torch.save of the model's state dict: VocosBackbone's ConvNeXt blocks, ISTFTHead)."""
    generator = torch.Generator().manual_seed(5)
    state = {"feature_extractor.mel_spec.spectrogram.window": torch.hann_window(16),
             "feature_extractor.mel_spec.mel_scale.fb": torch.randn(9, 10, generator=generator),
             "backbone.embed.weight": torch.randn(16, 10, 7, generator=generator),
             "backbone.embed.bias": torch.randn(16, generator=generator)}
    for i in range(2):
        block = f"backbone.convnext.{i}."
        state.update({block + "dwconv.weight": torch.randn(16, 1, 7, generator=generator),
                      block + "pwconv1.weight": torch.randn(48, 16, generator=generator),
                      block + "pwconv2.weight": torch.randn(16, 48, generator=generator),
                      block + "gamma": torch.randn(16, generator=generator)})
    state.update({"head.out.weight": torch.randn(18, 16, generator=generator),
                  "head.out.bias": torch.randn(18, generator=generator), "head.istft.window": torch.hann_window(16)})
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.yaml").write_text(config)
    return folder


def test_converting_or_sharding_a_vocos_folder_says_vocos_reads_pytorch_model_bin_alone(tmp_path: Path) -> None:
    """convert wrote model.safetensors beside config.yaml and shard an index and shards for a Vocos folder, without a
    word: Vocos.from_pretrained (gemelo-ai/vocos vocos/pretrained.py, read with the search tool) downloads
    config.yaml and pytorch_model.bin by those names and reads nothing else."""
    folder = _vocos_folder(tmp_path / "vocos-mel-24khz", _VOCOS_CONFIG)
    code, data = run_json("convert", str(folder), "-o", str(tmp_path / "converted"))
    said = [w for w in data["warnings"] if w.startswith("a Vocos vocoder")]
    assert code == 0 and (tmp_path / "converted" / "model.safetensors").is_file(), data
    assert len(said) == 1 and "Vocos.from_pretrained reads config.yaml and pytorch_model.bin by those names" in \
        said[0] and "cannot load model.safetensors" in said[0] and "convert --to bin" in said[0], data["warnings"]
    # What the warning advises writes what Vocos reads, and says nothing.
    code, data = run_json("convert", str(folder), "-o", str(tmp_path / "as-bin"), "--to", "bin")
    assert code == 0 and (tmp_path / "as-bin" / "pytorch_model.bin").is_file(), data
    assert not any("Vocos" in w for w in data["warnings"]), data["warnings"]
    code, data = run_json("shard", str(folder), "-o", str(tmp_path / "sharded"), "--max", "2KB", "--format", "bin")
    said = [w for w in data["warnings"] if w.startswith("a Vocos vocoder")]
    assert code == 0 and data["plan"]["index"] == "pytorch_model.bin.index.json", data["plan"]
    assert len(said) == 1 and "cannot load these shards" in said[0], data["warnings"]
    code, data = run_json("shard", str(folder), "-o", str(tmp_path / "whole"), "--max", "10GB", "--format", "bin")
    assert code == 0 and not any("Vocos" in w for w in data["warnings"]), data["warnings"]
    # inspect and plan-devices name the config Vocos reads (were silent, and "no config.json").
    code, data = run_json("inspect", str(folder))
    assert code == 0 and any(w.startswith("config.yaml beside the weights is Vocos' own config") for w in
                             data["warnings"]), data["warnings"]
    code, data = run_json("plan-devices", str(folder), "--gpu", "1GB")
    assert code == 0 and any(w.startswith("no config.json (config.yaml beside the weights is Vocos' own config")
                             for w in data["warnings"]), data["warnings"]
    # Another config.yaml beside the same names (no vocos classes) is not called Vocos'.
    other = _vocos_folder(tmp_path / "other", "model:\n  dim: 16\n")
    code, data = run_json("convert", str(other), "-o", str(tmp_path / "other-out"))
    assert code == 0 and not any("Vocos" in w for w in data["warnings"]), data["warnings"]
    code, data = run_json("inspect", str(other))
    assert code == 0 and not any("Vocos" in w for w in data["warnings"]), data["warnings"]
