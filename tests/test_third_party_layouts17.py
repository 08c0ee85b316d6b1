"""A seventeenth round: leftovers of the sixteenth (coqui XTTS folders: model.pth, dvae.pth, mel_stats.pth, a
config.json of Coqui TTS's own), GroundingDINO's released .pth (its DDP `module.` prefix), and files whose pickles
name globals as newer Pythons / numpy / torch spell them."""

from __future__ import annotations

import argparse
import io
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, run_json

# What Coqui's trainer writes as XTTS-v2's config.json (a few of its keys): the model's name under "model", its
# settings under "model_args" and "audio"; no model_type.
_XTTS_CONFIG = {"output_path": "output", "run_name": "run", "model": "xtts", "num_chars": 255,
                "model_args": {"gpt_batch_size": 1, "gpt_layers": 2, "gpt_n_model_channels": 16, "gpt_n_heads": 2},
                "audio": {"sample_rate": 22050, "output_sample_rate": 24000}, "languages": ["en", "fr"]}


def _xtts_folder(folder: Path) -> Path:
    """coqui/XTTS-v2 as it is downloaded: model.pth ({"config", "model"}, what Xtts.load_checkpoint reads), dvae.pth
    (a bare state dict), mel_stats.pth (a bare tensor of 80 mel-channel norms), speakers_xtts.pth, vocab.json."""
    folder.mkdir()
    torch.manual_seed(0)
    (folder / "config.json").write_text(json.dumps(_XTTS_CONFIG))
    model = {"gpt.text_embedding.weight": torch.randn(32, 16), "gpt.gpt.h.0.attn.c_attn.weight": torch.randn(16, 48),
             "gpt.gpt.h.1.attn.c_attn.weight": torch.randn(16, 48), "gpt.mel_head.weight": torch.randn(10, 16),
             "hifigan_decoder.waveform_decoder.conv_pre.weight": torch.randn(16, 16, 7)}
    torch.save({"config": _XTTS_CONFIG, "model": model}, folder / "model.pth")
    torch.save({"encoder.0.0.weight": torch.randn(16, 80, 3), "codebook.embed": torch.randn(16, 8)},
               folder / "dvae.pth")
    torch.save(torch.rand(80), folder / "mel_stats.pth")
    torch.save({"Ana Florence": {"gpt_cond_latent": torch.randn(1, 32, 16), "speaker_embedding": torch.randn(1, 8, 1)}},
               folder / "speakers_xtts.pth")
    (folder / "vocab.json").write_text(json.dumps({"model": {"vocab": {"a": 0}}}))
    return folder


def test_an_xtts_folder_names_xtts_the_model_file_and_what_reads_the_others(tmp_path: Path) -> None:
    """It was "folder holds several weight files and no index (dvae.pth, mel_stats.pth, ...); name one": not a word
    of XTTS, of which file is the model (model.pth, Xtts.load_checkpoint's) or of what the others are."""
    folder = _xtts_folder(tmp_path / "XTTS-v2")
    result = run_cli("inspect", str(folder))
    line = " ".join(result.stderr.split())
    assert result.exit_code == 2 and result.stdout == "", result.stdout
    assert "a Coqui XTTS model folder" in line and "not a transformers config" in line, line
    assert "model.pth is the model (its `model` entry), which TTS loads with its config: " in line, line
    assert "model.load_checkpoint(config, checkpoint_dir=" in line, line
    assert "dvae.pth is the discrete VAE's state dict" in line and "GPTTrainer's dvae_checkpoint" in line, line
    assert "mel_stats.pth is a bare tensor of per-mel-channel norms" in line and "mel_norm_file" in line, line
    assert "speakers_xtts.pth is the built-in speakers' conditioning latents" in line, line
    assert line.endswith(f"e.g. {folder / 'model.pth'})"), line
    # Another Coqui model's folder (a VITS training run: best_model.pth beside checkpoints) is named as Coqui's too.
    vits = tmp_path / "vits-run"
    vits.mkdir()
    (vits / "config.json").write_text(json.dumps({"model": "vits", "run_name": "ljspeech",
                                                  "audio": {"sample_rate": 22050}}))
    for name in ("best_model.pth", "checkpoint_5000.pth"):
        torch.save({"model": {"enc.weight": torch.ones(4, 4)}, "step": 5000}, vits / name)
    line = " ".join(run_cli("inspect", str(vits)).stderr.split())
    assert "a Coqui TTS model folder" in line and "model 'vits'" in line, line
    assert line.endswith(f"e.g. {vits / 'best_model.pth'})"), line
    # A transformers config beside several files keeps the plain refusal.
    (vits / "config.json").write_text(json.dumps({"model_type": "bert", "model": "vits", "audio": {}}))
    line = " ".join(run_cli("inspect", str(vits)).stderr.split())
    assert "Coqui" not in line and "several weight files and no index" in line, line


def test_a_file_that_holds_no_state_dict_says_whether_its_pickle_is_safe(tmp_path: Path) -> None:
    """XTTS' mel_stats.pth (torch.save of one tensor) was refused with "no state dict ... the file holds a single
    tensor [80] float32" and no word of the security verdict, which is what people who download it ask first."""
    folder = _xtts_folder(tmp_path / "XTTS-v2")
    result = run_cli("inspect", str(folder / "mel_stats.pth"))
    line = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "the file holds a single tensor [80] float32" in line, line
    assert line.endswith("its pickle is safe (static scan: 3 globals torch's weights_only loader allows): "
                         f"torch.load({str(folder / 'mel_stats.pth')!r}, weights_only=True) reads it"), line
    # An inert global (argparse.Namespace) beside an optimizer's state: safe, but torch.load's weights_only refuses.
    path = tmp_path / "optimizer.pt"
    torch.save({"state": {}, "param_groups": [{"lr": 0.1, "params": []}], "args": argparse.Namespace(lr=0.1)}, path)
    line = " ".join(run_cli("inspect", str(path)).stderr.split())
    assert "no model weights: the file holds an optimizer's state dict" in line, line
    assert line.endswith("its pickle is safe (static scan: argparse.Namespace read as inert data, never imported), "
                         f"but torch.load({str(path)!r}, weights_only=True) refuses it for that"), line


def test_plan_devices_calls_coquis_config_coquis_not_a_transformers_one_without_model_type(tmp_path: Path) -> None:
    """plan-devices of model.pth read the config.json beside it as a transformers config that lacks its model_type:
    "config.json (no model_type) does not say which modules must stay whole"."""
    folder = _xtts_folder(tmp_path / "XTTS-v2")
    code, data = run_json("plan-devices", str(folder / "model.pth"), "--gpu", "1GB")
    assert code == 0, data
    said = [w for w in data["warnings"] if "does not say which modules must stay whole" in w]
    assert said and said[0].startswith("config.json (Coqui TTS's own config, model 'xtts', not a transformers one)"), \
        data["warnings"]
    assert not any("no model_type" in w for w in data["warnings"]), data["warnings"]


def _grounding_dino(path: Path) -> dict[str, torch.Tensor]:
    """groundingdino_swint_ogc.pth as IDEA-Research released it: {"model": the state dict of the DDP-wrapped model},
    every name under `module.` (Swin backbone, BERT text encoder, the transformer, feat_map)."""
    torch.manual_seed(0)
    state = {"module.backbone.0.patch_embed.proj.weight": torch.randn(8, 3, 4, 4),
             "module.transformer.encoder.layers.0.self_attn.sampling_offsets.weight": torch.randn(16, 8),
             "module.bert.embeddings.word_embeddings.weight": torch.randn(30, 8),
             "module.feat_map.weight": torch.randn(8, 8), "module.input_proj.0.0.weight": torch.randn(8, 8, 1, 1)}
    torch.save({"model": state}, path)
    return state


def test_a_ddp_prefix_on_every_name_is_said_and_groundingdinos_own_loader_named(tmp_path: Path) -> None:
    """Every name of GroundingDINO's .pth starts `module.` (its training's DistributedDataParallel), which its own
    load_model strips (clean_state_dict) before load_state_dict(strict=False): inspect said nothing of the prefix."""
    path = tmp_path / "groundingdino_swint_ogc.pth"
    _grounding_dino(path)
    code, data = run_json("inspect", str(path))
    assert code == 0 and data["nested_key"] == "model", data
    said = [w for w in data["warnings"] if w.startswith("every tensor name starts with module.")]
    assert len(said) == 1 and "DistributedDataParallel or DataParallel" in said[0], data["warnings"]
    assert "diff-keys --rename '^module\\.='" in said[0], said
    assert "a GroundingDINO checkpoint: its load_model strips the prefix itself (util.utils.clean_state_dict)" \
        in said[0], said
    # torch.compile's prefix is said as such, without GroundingDINO; a file where only some names carry it is not.
    compiled = tmp_path / "ckpt.pt"
    torch.save({"model": {"_orig_mod.h.0.weight": torch.ones(2, 2), "_orig_mod.wte.weight": torch.ones(4, 2)}},
               compiled)
    code, data = run_json("inspect", str(compiled))
    said = [w for w in data["warnings"] if w.startswith("every tensor name starts with _orig_mod.")]
    assert len(said) == 1 and "torch.compile" in said[0] and "GroundingDINO" not in said[0], data["warnings"]
    mixed = tmp_path / "mixed.pt"
    torch.save({"module.a.weight": torch.ones(2), "b.weight": torch.ones(2)}, mixed)
    code, data = run_json("inspect", str(mixed))
    assert code == 0 and not any("every tensor name starts" in w for w in data["warnings"]), data["warnings"]



def _legacy_lightning_checkpoint(hyper_parameters: dict[str, object]) -> bytes:
    """A Lightning checkpoint as pytorch_lightning 1.x saves it, in torch's legacy (non-zip) stream, whose pickle has
    no offsets to fix when a global's name is edited: its hyper_parameters an AttributeDict (a dict subclass). The
    stand-in modules are gone once it is written, as they would be where the file is read."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("pytorch_lightning", "pytorch_lightning.utilities", "pytorch_lightning.utilities.parsing"):
            patch.setitem(sys.modules, name, types.ModuleType(name))
        attribute_dict = type("AttributeDict", (dict,), {"__module__": "pytorch_lightning.utilities.parsing"})
        patch.setattr(sys.modules["pytorch_lightning.utilities.parsing"], "AttributeDict", attribute_dict,
                      raising=False)
        buffer = io.BytesIO()
        torch.save({"state_dict": {"layer.weight": torch.ones(2, 2)},
                    "hyper_parameters": attribute_dict(hyper_parameters), "pytorch-lightning_version": "1.9.0",
                    "epoch": 3}, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def test_lightning_packages_attribute_dict_reads_as_inert_as_pytorch_lightnings_does(tmp_path: Path) -> None:
    """The `lightning` package (`import lightning.pytorch as pl`, 1.8 to 2.0) defined its own AttributeDict in
    lightning.pytorch.utilities.parsing: hyper_parameters saved with it name that class, which was unknown (the
    checkpoint refused as suspicious) where pytorch_lightning's spelling of the same class reads as inert data."""
    data = _legacy_lightning_checkpoint({"lr": 0.1, "hidden": 16})
    old, new = b"cpytorch_lightning.utilities.parsing\nAttributeDict\n", b"clightning.pytorch.utilities.parsing\n" \
        b"AttributeDict\n"
    assert data.count(old) == 1
    (tmp_path / "pl.ckpt").write_bytes(data)
    (tmp_path / "lightning.ckpt").write_bytes(data.replace(old, new))
    for name, module in (("pl.ckpt", "pytorch_lightning"), ("lightning.ckpt", "lightning.pytorch")):
        code, report = run_json("inspect", str(tmp_path / name))
        assert code == 0 and report["security"]["verdict"] == "safe", report
        assert f"hyper_parameters ({module}.utilities.parsing.AttributeDict, read as inert data)" \
            in report["other_entries"], report["other_entries"]
        assert report["num_params"] == 4, report


def test_a_lightning_checkpoint_with_one_hyper_parameter_is_read(tmp_path: Path) -> None:
    """An AttributeDict of one entry is filled by SETITEM, not SETITEMS: torch's weights_only loader refuses either on
    the inert stand-in, and only SETITEMS' refusal went to the restricted loader that fills it, so a Lightning
    checkpoint with a single hyper-parameter was refused ("torch's weights_only loader refuses the pickle: Can only
    SETITEM for dict ..."), in either spelling of the class and either format."""
    data = _legacy_lightning_checkpoint({"lr": 0.1})
    (tmp_path / "one.ckpt").write_bytes(data)
    (tmp_path / "one-lightning.ckpt").write_bytes(data.replace(b"cpytorch_lightning.utilities.parsing\nAttributeDict\n",
                                                               b"clightning.pytorch.utilities.parsing\nAttributeDict\n"))
    for name in ("one.ckpt", "one-lightning.ckpt"):
        code, report = run_json("inspect", str(tmp_path / name))
        assert code == 0 and report["num_params"] == 4 and report["nested_key"] == "state_dict", report
        assert any(entry.startswith("hyper_parameters (") and entry.endswith("AttributeDict, read as inert data)")
                   for entry in report["other_entries"]), report["other_entries"]
